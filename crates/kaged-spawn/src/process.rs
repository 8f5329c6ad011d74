//! Starting a prepared command and ending it: on a kaged PTY (`spawn_pty`: [`Terminal`],
//! [`Killer`], [`Waiter`]) or on the caller's terminal (`run_foreground`, with wall time and
//! the pids watchdog), every signal through a pidfd.

use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::process::Child;
use std::sync::{Arc, Mutex};

use nix::unistd::Pid;

use crate::*;

/// How often a pids watchdog counts a run's processes (a host without cgroups). Short, so a
/// fork flood is caught early; a count is one scan of `/proc`.
pub const WATCHDOG_POLL: std::time::Duration = std::time::Duration::from_millis(20);

/// Held while a PTY is opened and while any run is spawned (see `spawn_pty`).
pub(crate) static SPAWN_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Run in the foreground on the caller's terminal (`kaged cage run`); returns how it ended.
/// Past `wall_time`, or with more than `max_processes` processes (the watchdog of a host
/// without cgroups; bwrap's own two not counted), the run is killed (reported as SIGKILL).
pub fn run_foreground(
    spec: &Spec,
    wall_time: Option<std::time::Duration>,
    max_processes: Option<u64>,
) -> Result<Exit, SpawnError> {
    let mut prepared = prepare(spec)?;
    let start_error = |program: &str, source| SpawnError::Start {
        program: program.to_string(),
        source,
    };
    fds::place(&mut prepared.command, std::mem::take(&mut prepared.fds));
    let spawned = {
        let _spawning = SPAWN_LOCK.lock().unwrap_or_else(|p| p.into_inner());
        prepared.command.spawn()
    };
    let child = spawned.map_err(|e| start_error(&prepared.program, e))?;
    let (killer, mut waiter) = hold(child, prepared.caged)?;
    let deadline = wall_time.map(|w| std::time::Instant::now() + w);
    let exit = loop {
        if let Some(exit) = waiter
            .try_wait()
            .map_err(|e| start_error(&prepared.program, e))?
        {
            break exit;
        }
        let too_many = || max_processes.is_some_and(|max| killer.process_count() as u64 > max);
        if deadline.is_some_and(|d| std::time::Instant::now() >= d) || too_many() {
            killer.kill();
        }
        std::thread::sleep(WATCHDOG_POLL);
    };
    Ok(exit)
}

/// The started process, shared by a run's [`Killer`]s and its [`Waiter`].
#[derive(Debug)]
struct Started {
    pid: u32,
    /// Opened while the child was unreaped, so it names exactly that process.
    pidfd: OwnedFd,
    /// Set when the child is reaped, under this lock. While it is false the PID, and the
    /// process group and session of that number, are still the run's: killers hold the lock
    /// for as long as they scan and signal by that number.
    reaped: Mutex<bool>,
}

impl Started {
    fn reaped(&self) -> std::sync::MutexGuard<'_, bool> {
        self.reaped.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The killer and waiter of a just-spawned (so still unreaped) `child`.
pub(crate) fn hold(mut child: Child, caged: bool) -> Result<(Killer, Waiter), SpawnError> {
    let pid = child.id();
    let pidfd = match pidfd::open(pid) {
        Ok(fd) => fd,
        Err(e) => {
            // Without a pidfd the run could not be killed safely: it does not run at all.
            let _ = child.kill();
            let _ = child.wait();
            return Err(SpawnError::Pidfd(e));
        }
    };
    let started = Arc::new(Started {
        pid,
        pidfd,
        reaped: Mutex::new(false),
    });
    Ok((
        Killer {
            started: started.clone(),
            caged,
        },
        Waiter { child, started },
    ))
}

/// Signals and kills a started run from any thread; once the run was reaped it signals
/// nothing (see the module documentation).
#[derive(Debug, Clone)]
pub struct Killer {
    started: Arc<Started>,
    caged: bool,
}

impl Killer {
    pub fn pid(&self) -> u32 {
        self.started.pid
    }

    /// Send `signal` to every process of the run (the started process last, so a cage's
    /// init does not take the others down before they had a chance to handle it). Returns
    /// how many processes it reached.
    pub fn signal_all(&self, signal: Signal) -> usize {
        let reaped = self.started.reaped();
        if *reaped {
            return 0;
        }
        let members = send_confirmed(&members_seen(self.started.pid), signal);
        members + usize::from(pidfd::send(&self.started.pidfd, signal).is_ok())
    }

    /// End the run now: nothing of it survives. Returns how many processes were signalled
    /// one by one (the process group of an uncaged run is killed as a whole besides).
    pub fn kill(&self) -> usize {
        let reaped = self.started.reaped();
        if *reaped {
            return 0;
        }
        let rest = members_seen(self.started.pid);
        let started = usize::from(pidfd::send(&self.started.pidfd, Signal::SIGKILL).is_ok());
        if !self.caged {
            // The run leads its own session and process group (the PTY made it so); unreaped,
            // the group of that number is still the run's.
            let _ =
                nix::sys::signal::killpg(Pid::from_raw(self.started.pid as i32), Signal::SIGKILL);
        }
        started + send_confirmed(&rest, Signal::SIGKILL)
    }

    /// How many processes the command has now: for a cage, bwrap's own two (the outer
    /// process and the namespace's init) are not counted, so this compares with a pids limit.
    /// None once it was reaped.
    pub fn process_count(&self) -> usize {
        let reaped = self.started.reaped();
        if *reaped {
            return 0;
        }
        let all = 1 + descendants(self.started.pid).len();
        if self.caged {
            all.saturating_sub(2)
        } else {
            all
        }
    }
}

/// Send `signal` to each `(pid, start)` a scan saw, through a pidfd confirmed to be that
/// process; how many it reached.
fn send_confirmed(seen: &[(u32, u64)], signal: Signal) -> usize {
    seen.iter()
        .filter_map(|&(pid, start)| pidfd::open_confirmed(pid, start))
        .filter(|fd| pidfd::send(fd, signal).is_ok())
        .count()
}

/// Reaps a started run (blocking).
pub struct Waiter {
    child: Child,
    started: Arc<Started>,
}

impl Waiter {
    /// The started process's pidfd: readable once it ended (for a poll loop; then
    /// [`Waiter::try_wait`] reaps it).
    pub fn pidfd(&self) -> std::os::fd::BorrowedFd<'_> {
        std::os::fd::AsFd::as_fd(&self.started.pidfd)
    }

    pub fn pid(&self) -> u32 {
        self.started.pid
    }

    pub fn wait(mut self) -> Exit {
        use rustix::process::{WaitId, WaitIdOptions, waitid};
        // Wait for the exit without reaping, so that the reap itself is quick and done under
        // the lock killers hold.
        loop {
            match waitid(
                WaitId::PidFd(std::os::fd::AsFd::as_fd(&self.started.pidfd)),
                WaitIdOptions::EXITED | WaitIdOptions::NOWAIT,
            ) {
                Err(rustix::io::Errno::INTR) => continue,
                Ok(_) => break,
                // Should not happen; polling still never blocks a killer for long.
                Err(_) => loop {
                    match self.try_wait() {
                        Ok(Some(exit)) => return exit,
                        Ok(None) => std::thread::sleep(std::time::Duration::from_millis(50)),
                        Err(_) => return Exit::Code(1),
                    }
                },
            }
        }
        let mut reaped = self.started.reaped();
        let exit = match self.child.wait() {
            Ok(status) => Exit::of(status),
            // Only if it was already reaped, which nothing else here does.
            Err(_) => Exit::Code(1),
        };
        *reaped = true;
        exit
    }

    /// Reap the run if it has ended (never blocks).
    pub fn try_wait(&mut self) -> std::io::Result<Option<Exit>> {
        let mut reaped = self.started.reaped();
        let status = self.child.try_wait()?;
        *reaped |= status.is_some();
        Ok(status.map(Exit::of))
    }
}

/// The daemon's side of a run's terminal.
#[derive(Clone)]
pub struct Terminal {
    pty: Arc<pty_process::blocking::Pty>,
}

impl Terminal {
    /// Read output (blocking); `Ok(0)` or an error once every process of the run closed it.
    pub fn read(&self, buf: &mut [u8]) -> std::io::Result<usize> {
        (&*self.pty).read(buf)
    }

    /// Write input (blocking while the program does not read).
    pub fn write_all(&self, data: &[u8]) -> std::io::Result<()> {
        (&*self.pty).write_all(data)
    }

    /// Write what the terminal takes now (the master may be non-blocking: see
    /// [`Terminal::set_nonblocking`]).
    pub fn write(&self, data: &[u8]) -> std::io::Result<usize> {
        (&*self.pty).write(data)
    }

    /// Make reads and writes return `WouldBlock` instead of waiting (for a poll loop).
    pub fn set_nonblocking(&self) -> std::io::Result<()> {
        let fd = std::os::fd::AsFd::as_fd(&*self.pty);
        let flags = rustix::fs::fcntl_getfl(fd)?;
        rustix::fs::fcntl_setfl(fd, flags | rustix::fs::OFlags::NONBLOCK)?;
        Ok(())
    }

    /// The master's descriptor, to poll.
    pub fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        std::os::fd::AsFd::as_fd(&*self.pty)
    }

    pub fn resize(&self, rows: u16, cols: u16) -> std::io::Result<()> {
        self.pty
            .resize(pty_process::Size::new(rows, cols))
            .map_err(std::io::Error::other)
    }
}

/// A run started on a PTY of its own.
pub struct PtyRun {
    pub terminal: Terminal,
    pub killer: Killer,
    pub waiter: Waiter,
}

/// Start `spec` on a new PTY of `rows` x `cols`. Call it from a thread that lives as long as
/// the run (see `setpriv --pdeathsig` above).
pub fn spawn_pty(spec: &Spec, rows: u16, cols: u16) -> Result<PtyRun, SpawnError> {
    let prepared = prepare(spec)?;
    // pty-process opens the master and only then marks it close-on-exec: a run spawned by
    // another thread in between would carry this run's terminal into its cage. Opening and
    // spawning are therefore serialized.
    let _spawning = SPAWN_LOCK.lock().unwrap_or_else(|p| p.into_inner());
    let (pty, pts) = pty_process::blocking::open().map_err(|e| SpawnError::Pty(e.to_string()))?;
    pty.resize(pty_process::Size::new(rows, cols))
        .map_err(|e| SpawnError::Pty(e.to_string()))?;
    let Prepared {
        command,
        program,
        caged,
        fds,
    } = prepared;
    let child = fds::place_pty(pty_process::blocking::Command::from(command), fds)
        .spawn(pts)
        .map_err(|e| SpawnError::Start {
            program,
            source: std::io::Error::other(e.to_string()),
        })?;
    let (killer, waiter) = hold(child, caged)?;
    Ok(PtyRun {
        terminal: Terminal { pty: Arc::new(pty) },
        killer,
        waiter,
    })
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn uncaged(cmd: &[&str]) -> Spec {
        Spec {
            argv: cmd.iter().map(|s| s.to_string()).collect(),
            cage: None,
            prefix: Vec::new(),
            rlimits: Vec::new(),
            cgroup_procs: Vec::new(),
            cwd: Some(std::env::temp_dir()),
            env: vec![("PATH".into(), "/usr/bin:/bin".into())],
            run_as: None,
        }
    }

    fn read_all(t: &Terminal) -> Vec<u8> {
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        while let Ok(n) = t.read(&mut buf) {
            if n == 0 {
                break;
            }
            out.extend_from_slice(&buf[..n]);
        }
        out
    }

    #[test]
    fn a_pty_run_has_a_terminal_of_the_asked_size_and_an_empty_environment() {
        let run = spawn_pty(
            &uncaged(&["sh", "-c", "stty size; test -t 0 && echo tty; env | sort"]),
            33,
            101,
        )
        .unwrap();
        let out = String::from_utf8(read_all(&run.terminal)).unwrap();
        assert_eq!(run.waiter.wait(), Exit::Code(0));
        assert!(out.contains("33 101"), "{out}");
        assert!(out.contains("tty"), "{out}");
        assert!(
            !out.contains("CARGO"),
            "the daemon's environment leaked: {out}"
        );
    }

    #[test]
    fn exit_codes_and_signals_are_reported() {
        let run = spawn_pty(&uncaged(&["sh", "-c", "exit 7"]), 24, 80).unwrap();
        read_all(&run.terminal);
        assert_eq!(run.waiter.wait(), Exit::Code(7));
        let run = spawn_pty(&uncaged(&["sh", "-c", "kill -TERM $$"]), 24, 80).unwrap();
        read_all(&run.terminal);
        // setpriv execs the shell, so the signal is the run's own.
        assert_eq!(run.waiter.wait().code(), 128 + 15);
    }

    #[test]
    fn kill_leaves_nothing_behind() {
        let run = spawn_pty(
            &uncaged(&["sh", "-c", "sleep 300 & sleep 300 & echo started; wait"]),
            24,
            80,
        )
        .unwrap();
        let mut buf = [0u8; 64];
        let n = run.terminal.read(&mut buf).unwrap();
        assert!(String::from_utf8_lossy(&buf[..n]).contains("started"));
        let killer = run.killer.clone();
        let before = descendants(killer.pid());
        assert!(before.len() >= 2, "{before:?}");
        killer.kill();
        assert_eq!(run.waiter.wait(), Exit::Signal(9));
        std::thread::sleep(std::time::Duration::from_millis(100));
        for pid in before {
            assert!(
                !Path::new(&format!("/proc/{pid}")).exists()
                    || std::fs::read_to_string(format!("/proc/{pid}/stat"))
                        .is_ok_and(|s| s.contains(") Z ")),
                "process {pid} survived"
            );
        }
    }

    fn alive(pid: u32) -> bool {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .is_ok_and(|s| !s.contains(") Z ") && !s.contains(") X "))
    }

    #[test]
    fn a_live_run_is_killed_through_its_pidfds() {
        let run = spawn_pty(
            &uncaged(&["sh", "-c", "sleep 300 & echo started; wait"]),
            24,
            80,
        )
        .unwrap();
        let mut buf = [0u8; 64];
        let n = run.terminal.read(&mut buf).unwrap();
        assert!(String::from_utf8_lossy(&buf[..n]).contains("started"));
        // Signal 0 reaches every process and harms none: the shell and its sleep.
        assert_eq!(run.killer.signal_all(Signal::SIGCONT), 2);
        assert_eq!(run.killer.process_count(), 2);
        assert_eq!(run.killer.kill(), 2);
        assert_eq!(run.waiter.wait(), Exit::Signal(9));
    }

    #[test]
    fn a_reaped_run_signals_nothing_even_where_its_pid_lives_on() {
        let run = spawn_pty(&uncaged(&["true"]), 24, 80).unwrap();
        read_all(&run.terminal);
        let killer = run.killer.clone();
        assert_eq!(run.waiter.wait(), Exit::Code(0));
        // Its own pidfd now names a reaped process.
        let e = pidfd::send(&killer.started.pidfd, Signal::SIGKILL).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ESRCH));
        assert_eq!(killer.kill(), 0);
        assert_eq!(killer.signal_all(Signal::SIGTERM), 0);
        assert_eq!(killer.process_count(), 0);

        // PID reuse cannot be forced, so the old killer is pointed at the PID of a live
        // session leader with a child, as if that process had been given the reaped PID.
        let mut other = Command::new("setsid")
            .args(["sh", "-c", "sleep 300 & wait"])
            .spawn()
            .unwrap();
        let other_pid = other.id();
        std::thread::sleep(std::time::Duration::from_millis(200));
        let children = descendants(other_pid);
        assert_eq!(children.len(), 1, "{children:?}");
        let reused = Killer {
            started: Arc::new(Started {
                pid: other_pid,
                pidfd: killer.started.pidfd.try_clone().unwrap(),
                reaped: Mutex::new(true),
            }),
            caged: false,
        };
        assert_eq!(reused.kill(), 0);
        assert_eq!(reused.signal_all(Signal::SIGKILL), 0);
        std::thread::sleep(std::time::Duration::from_millis(100));
        let survived = alive(other_pid) && alive(children[0]);
        let _ = other.kill();
        let _ = Command::new("kill").arg(children[0].to_string()).status();
        let _ = other.wait();
        assert!(survived, "a process that reused the PID was signalled");
    }

    #[test]
    fn input_and_resize_reach_the_program() {
        let run = spawn_pty(
            &uncaged(&["sh", "-c", "read line; echo got:$line; stty size"]),
            24,
            80,
        )
        .unwrap();
        run.terminal.resize(40, 120).unwrap();
        run.terminal.write_all(b"hello\n").unwrap();
        let out = String::from_utf8(read_all(&run.terminal)).unwrap();
        assert!(out.contains("got:hello"), "{out}");
        assert!(out.contains("40 120"), "{out}");
        run.waiter.wait();
    }
}
