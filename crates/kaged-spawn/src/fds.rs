//! Descriptors for children: exactly the intended ones, at the numbers bwrap is told.
//!
//! This is the one place in kaged that needs `unsafe`: placing descriptors happens between
//! fork and exec (`pre_exec`), where only async-signal-safe calls are allowed. The closure
//! below allocates nothing and calls only `fcntl`, `dup2` and `close_range`.
#![allow(unsafe_code)]

use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;

/// `close_range(2)` flag: mark close-on-exec instead of closing (Linux 5.11).
const CLOSE_RANGE_CLOEXEC: libc::c_uint = 1 << 2;
/// Where the fallback (kernels without `close_range` flags) stops looking.
const FALLBACK_MAX_FD: RawFd = 65_536;

/// Mark every descriptor from `first` on close-on-exec. Async-signal-safe.
fn cloexec_from(first: RawFd) {
    let Ok(first) = libc::c_uint::try_from(first) else {
        return;
    };
    // SAFETY: close_range with CLOSE_RANGE_CLOEXEC only sets a flag on descriptors; it closes
    // nothing, so no owner of any descriptor is invalidated.
    let r = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            first,
            libc::c_uint::MAX,
            CLOSE_RANGE_CLOEXEC,
        )
    };
    if r != 0 {
        for fd in first as RawFd..FALLBACK_MAX_FD {
            // SAFETY: as above; F_SETFD on a closed descriptor fails with EBADF, harmlessly.
            unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
        }
    }
}

/// At start: no descriptor this process inherited (from a shell, a service manager, a test
/// harness) reaches anything it starts. kaged's own descriptors are close-on-exec already.
pub fn mark_inherited_cloexec() {
    cloexec_from(3);
}

/// Take ownership of descriptor `fd`, which this process inherited open (a run holder's spec,
/// readiness pipe and cage descriptors). Call it at the start of `main`, before anything
/// else could own that number; a closed number is an error.
pub fn inherited(fd: RawFd) -> std::io::Result<OwnedFd> {
    if fd < 3 {
        return Err(std::io::Error::other(format!(
            "descriptor {fd} is standard I/O, not an inherited one"
        )));
    }
    // SAFETY: F_GETFD only reads the flags; it fails with EBADF on a closed number.
    if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the number is open (checked above) and, at the start of main, owned by nothing
    // else in this process; from now on only the returned OwnedFd closes it.
    let owned = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    // Nothing this process starts gets it unless placed there on purpose.
    // SAFETY: sets the close-on-exec flag only.
    unsafe { libc::fcntl(owned.as_raw_fd(), libc::F_SETFD, libc::FD_CLOEXEC) };
    Ok(owned)
}

/// The `pre_exec` closure that puts `fds` at 3, 4, ... in the child, marks every other
/// descriptor from 3 on close-on-exec (so only these, and stdio, cross the exec), and gives
/// the child an empty signal mask (a run holder blocks TERM, INT and HUP for its signalfd;
/// its run must not inherit that, or it could not be stopped gracefully).
fn placer(fds: Vec<OwnedFd>) -> impl FnMut() -> std::io::Result<()> + Send + Sync + 'static {
    let raw: Vec<RawFd> = fds.iter().map(AsRawFd::as_raw_fd).collect();
    // Allocated here, in the parent: the child only writes into it.
    let mut moved: Vec<RawFd> = vec![-1; raw.len()];
    move || {
        let _keep_open_until_exec = &fds;
        // SAFETY: sigemptyset writes only into `empty`; sigprocmask (async-signal-safe) only
        // changes this thread's mask, in a child that is about to exec.
        unsafe {
            let mut empty = std::mem::MaybeUninit::<libc::sigset_t>::uninit();
            libc::sigemptyset(empty.as_mut_ptr());
            if libc::sigprocmask(libc::SIG_SETMASK, empty.as_ptr(), std::ptr::null_mut()) != 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
        let above = 3 + RawFd::try_from(raw.len())
            .map_err(|_| std::io::Error::other("too many descriptors"))?;
        // First move every source above the target range, so no dup2 below overwrites a
        // source that is still to be placed.
        for (i, fd) in raw.iter().enumerate() {
            // SAFETY: F_DUPFD_CLOEXEC makes a new descriptor; nothing is closed.
            let new = unsafe { libc::fcntl(*fd, libc::F_DUPFD_CLOEXEC, above) };
            if new < 0 {
                return Err(std::io::Error::last_os_error());
            }
            moved[i] = new;
        }
        for (i, fd) in moved.iter().enumerate() {
            let target = 3 + i as RawFd;
            // SAFETY: the target numbers belong to nobody in the child once the sources were
            // moved above them; dup2 clears close-on-exec on the copy, which is the point.
            if unsafe { libc::dup2(*fd, target) } < 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
        cloexec_from(above);
        Ok(())
    }
}

/// Give a `std` command exactly `fds` (at 3, 4, ...).
pub fn place(command: &mut std::process::Command, fds: Vec<OwnedFd>) {
    // SAFETY: the closure is async-signal-safe (see `placer`).
    unsafe {
        command.pre_exec(placer(fds));
    }
}

/// Give a PTY command exactly `fds` (at 3, 4, ...). pty-process runs this after it made the
/// child a session leader with the terminal, whose descriptor it refers to by number.
pub fn place_pty(
    command: pty_process::blocking::Command,
    fds: Vec<OwnedFd>,
) -> pty_process::blocking::Command {
    // SAFETY: the closure is async-signal-safe (see `placer`).
    unsafe { command.pre_exec(placer(fds)) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Seek, Write};
    use std::os::fd::FromRawFd;

    #[test]
    fn a_child_gets_exactly_the_placed_descriptors() {
        // Something this process holds that is not close-on-exec: it must not cross.
        // Far above what the child's own descriptors may be, whatever other tests hold.
        let file = tempfile::tempfile().unwrap();
        let leaked_fd = nix::fcntl::fcntl(&file, nix::fcntl::FcntlArg::F_DUPFD(200)).unwrap();
        // SAFETY: F_DUPFD returned a new open descriptor that nothing else owns.
        let leaked = unsafe { OwnedFd::from_raw_fd(leaked_fd) };
        let mut a = tempfile::tempfile().unwrap();
        a.write_all(b"first").unwrap();
        a.rewind().unwrap();
        let mut b = tempfile::tempfile().unwrap();
        b.write_all(b"second").unwrap();
        b.rewind().unwrap();
        let mut c = std::process::Command::new("sh");
        c.args(["-c", "cat <&3; echo; cat <&4; echo; ls /proc/self/fd"]);
        place(&mut c, vec![a.into(), b.into()]);
        let out = c.output().unwrap();
        let text = String::from_utf8(out.stdout).unwrap();
        let mut lines = text.lines();
        assert_eq!(lines.next(), Some("first"));
        assert_eq!(lines.next(), Some("second"));
        let fds: Vec<RawFd> = lines.filter_map(|l| l.parse().ok()).collect();
        // 0-2, the two placed, and ls's own directory descriptor.
        assert!(!fds.contains(&leaked_fd), "{fds:?}");
        assert!(fds.iter().all(|fd| *fd <= 5), "{fds:?}");
        drop(leaked);
    }

    #[test]
    fn a_child_starts_with_an_empty_signal_mask() {
        let blocked = std::thread::spawn(|| {
            let mut mask = nix::sys::signal::SigSet::empty();
            mask.add(nix::sys::signal::Signal::SIGTERM);
            mask.thread_block().unwrap();
            let mut c = std::process::Command::new("grep");
            c.args(["^SigBlk", "/proc/self/status"]);
            place(&mut c, Vec::new());
            String::from_utf8(c.output().unwrap().stdout).unwrap()
        })
        .join()
        .unwrap();
        assert_eq!(blocked.trim(), "SigBlk:\t0000000000000000");
    }
}
