//! Signalling processes through pidfds: a pidfd names one process for its whole life, so a
//! signal sent through it can never reach another process that got the same PID later.

use std::os::fd::OwnedFd;
use std::path::Path;

use nix::sys::signal::Signal;
use rustix::process::{Pid, PidfdFlags};

/// A pidfd for `pid`. Exactly the intended process only when the caller knows `pid` cannot
/// have been reused (an unreaped child of ours); otherwise see [`open_confirmed`].
pub(crate) fn open(pid: u32) -> std::io::Result<OwnedFd> {
    let pid = i32::try_from(pid)
        .ok()
        .and_then(Pid::from_raw)
        .ok_or_else(|| std::io::Error::from_raw_os_error(libc::ESRCH))?;
    Ok(rustix::process::pidfd_open(pid, PidfdFlags::empty())?)
}

/// A pidfd for the process that had `pid` and started at `start` (clock ticks after boot,
/// field 22 of `/proc/PID/stat`) when a scan saw it, or `None` when it is gone. The start time
/// is read again after the pidfd is open: when it still matches, the PID was not reused in
/// between, so the pidfd is that process (if it died since, signals through it do nothing).
pub(crate) fn open_confirmed(pid: u32, start: u64) -> Option<OwnedFd> {
    let fd = open(pid).ok()?;
    let now = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    (crate::tree::start_time(&now) == Some(start)).then_some(fd)
}

/// A pidfd for `pid` while it is a member of the cgroup `dir`, or `None`. Membership is read
/// after the pidfd is open: a process in the group then holds `pid`, so the pidfd is it (or,
/// had it died in between, names nothing that signals could reach).
pub(crate) fn open_in_cgroup(pid: u32, dir: &Path) -> Option<OwnedFd> {
    let fd = open(pid).ok()?;
    let procs = std::fs::read_to_string(dir.join("cgroup.procs")).ok()?;
    procs
        .lines()
        .any(|l| l.trim().parse() == Ok(pid))
        .then_some(fd)
}

/// Send `signal` through `pidfd`; an ended process is `Err` (ESRCH), never another one.
pub(crate) fn send(pidfd: &OwnedFd, signal: Signal) -> std::io::Result<()> {
    let signal = rustix::process::Signal::from_named_raw(signal as i32)
        .ok_or_else(|| std::io::Error::from_raw_os_error(libc::EINVAL))?;
    Ok(rustix::process::pidfd_send_signal(pidfd, signal)?)
}

/// SIGKILL every process in the cgroup `dir` (each confirmed a member after its pidfd was
/// opened); how many were signalled.
pub(crate) fn kill_cgroup(dir: &Path) -> usize {
    let procs = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
    procs
        .lines()
        .filter_map(|l| l.trim().parse::<u32>().ok())
        .filter_map(|pid| open_in_cgroup(pid, dir))
        .filter(|fd| send(fd, Signal::SIGKILL).is_ok())
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn start_of(pid: u32) -> u64 {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        crate::tree::start_time(&stat).unwrap()
    }

    #[test]
    fn a_pidfd_outlives_its_process_and_then_signals_nothing() {
        let mut child = std::process::Command::new("sleep")
            .arg("300")
            .spawn()
            .unwrap();
        let fd = open(child.id()).unwrap();
        send(&fd, Signal::SIGKILL).unwrap();
        child.wait().unwrap();
        let e = send(&fd, Signal::SIGKILL).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ESRCH), "{e}");
    }

    #[test]
    fn a_process_is_confirmed_only_with_its_own_start_time() {
        let mut child = std::process::Command::new("sleep")
            .arg("300")
            .spawn()
            .unwrap();
        let pid = child.id();
        let start = start_of(pid);
        // Another start time stands for a process that held the PID before.
        assert!(open_confirmed(pid, start.wrapping_add(1)).is_none());
        let fd = open_confirmed(pid, start).unwrap();
        send(&fd, Signal::SIGKILL).unwrap();
        child.wait().unwrap();
        assert!(open_confirmed(pid, start).is_none(), "reaped: gone");
    }
}
