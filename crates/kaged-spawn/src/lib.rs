//! The process edge: start what `kaged-cage` compiled, on a kaged PTY or on the caller's
//! terminal, then observe, signal and reap it.
//!
//! Every start goes through one command line:
//! `setpriv --pdeathsig KILL -- [systemd-run --scope ... --] [prlimit LIMITS --]
//!  [sh -c 'join cgroups; exec bwrap "$@" 3< FILTER'] ARGV`.
//! - `setpriv --pdeathsig` kills the run if the thread that started it dies with the daemon;
//!   bwrap's own `--die-with-parent` then takes the whole cage down (its PID namespace dies
//!   with its init).
//! - `prlimit` applies the rlimits `kaged-cage` chose.
//! - The shell opens the seccomp program on the descriptor bwrap reads it from: std cannot hand
//!   a child an extra descriptor without unsafe code.
//!
//! Killing: SIGKILL to the started process (bwrap, the PID namespace's parent) ends the cage;
//! the snapshot of its descendants taken just before is killed too, which also covers an
//! uncaged run whose children left its process group.

mod cgroup;
mod facts;
mod preflight;
mod tree;

use std::io::{Read, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::Arc;

use nix::unistd::Pid;

pub use cgroup::{Cgroups, limit_facts};
pub use facts::host_facts;
pub use nix::sys::signal::Signal;
pub use preflight::{Check, preflight, sandbox_problem};
pub use tree::{descendants, members};

const BWRAP: &str = "bwrap";

#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    #[error(
        "bubblewrap (bwrap) is not installed, so no cage can be built and nothing runs uncaged; install it (sudo apt-get install bubblewrap), then see `kaged doctor`"
    )]
    NoBwrap,
    #[error("cannot write the seccomp program: {0}")]
    Seccomp(std::io::Error),
    #[error(
        "cannot set up the cage's cgroups ({0}); run `kaged doctor` to see how limits can be enforced on this host"
    )]
    Cgroup(String),
    #[error("cannot open a PTY: {0}")]
    Pty(String),
    #[error("cannot start `{program}`: {source}")]
    Start {
        program: String,
        #[source]
        source: std::io::Error,
    },
}

/// What to start.
#[derive(Debug, Clone)]
pub struct Spec {
    /// Caged: bwrap's arguments (from `kaged_cage::compile`). Uncaged: the command itself.
    pub argv: Vec<String>,
    /// The compiled seccomp program; `Some` exactly when the run is caged.
    pub seccomp_bpf: Option<Vec<u8>>,
    /// Put in front of everything else but `setpriv` (`systemd-run --user --scope ... --`).
    pub prefix: Vec<String>,
    /// `prlimit` options (`--as=...`); empty for none.
    pub rlimits: Vec<String>,
    /// `cgroup.procs` files the launcher joins before it becomes the cage.
    pub cgroup_procs: Vec<PathBuf>,
    /// Working directory of an uncaged run (a caged one gets `--chdir`).
    pub cwd: Option<PathBuf>,
    /// Environment of an uncaged run, which starts from an empty one (a caged run's comes from
    /// bwrap's `--setenv`). The daemon's own environment never leaks into a run.
    pub env: Vec<(String, String)>,
}

impl Spec {
    /// An uncaged run (`cage: disabled`, `--no-sandbox`): `argv` in `cwd`, with `granted`
    /// plus the daemon user's PATH, HOME, USER, LANG and SHELL, and nothing else of the
    /// daemon's environment (its tokens included).
    pub fn uncaged(argv: Vec<String>, cwd: PathBuf, granted: &[(String, String)]) -> Spec {
        let mut env = granted.to_vec();
        for k in ["PATH", "HOME", "USER", "LANG", "SHELL"] {
            if let Ok(v) = std::env::var(k) {
                env.push((k.into(), v));
            }
        }
        Spec {
            argv,
            seccomp_bpf: None,
            prefix: Vec::new(),
            rlimits: Vec::new(),
            cgroup_procs: Vec::new(),
            cwd: Some(cwd),
            env,
        }
    }

    pub fn is_caged(&self) -> bool {
        self.seccomp_bpf.is_some()
    }
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Code(i32),
    Signal(i32),
}

impl Exit {
    /// The shell convention: the code, or 128 + the signal.
    pub fn code(self) -> i32 {
        match self {
            Exit::Code(c) => c,
            Exit::Signal(s) => 128 + s,
        }
    }

    pub fn signal(self) -> Option<i32> {
        match self {
            Exit::Signal(s) => Some(s),
            Exit::Code(_) => None,
        }
    }

    fn of(status: std::process::ExitStatus) -> Exit {
        match (status.code(), status.signal()) {
            (Some(c), _) => Exit::Code(c),
            (None, Some(s)) => Exit::Signal(s),
            (None, None) => Exit::Code(1),
        }
    }
}

/// The bwrap version line, or `None` when bwrap cannot run.
pub fn bwrap_version() -> Option<String> {
    let out = Command::new(BWRAP).arg("--version").output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// A new directory only this user can enter (0700), under the temporary directory, with a
/// random name starting with `prefix`. The caller removes it.
pub fn private_dir(prefix: &str) -> std::io::Result<PathBuf> {
    use std::os::unix::fs::DirBuilderExt;
    let mut random = [0u8; 8];
    getrandom::fill(&mut random).map_err(|e| std::io::Error::other(e.to_string()))?;
    let dir = std::env::temp_dir().join(format!("{prefix}-{}", hex::encode(random)));
    std::fs::DirBuilder::new().mode(0o700).create(&dir)?;
    Ok(dir)
}

/// The seccomp program in a private file (0600 in a fresh 0700 directory), removed on drop.
#[derive(Debug)]
pub struct SeccompFile {
    dir: PathBuf,
    path: PathBuf,
}

impl SeccompFile {
    pub fn write(bpf: &[u8]) -> std::io::Result<SeccompFile> {
        use std::os::unix::fs::OpenOptionsExt;
        let dir = private_dir("kaged-seccomp")?;
        let file = SeccompFile {
            path: dir.join("filter.bpf"),
            dir,
        };
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&file.path)?
            .write_all(bpf)?;
        Ok(file)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for SeccompFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A command ready to start, and the private files it needs until it has started.
pub struct Prepared {
    pub command: Command,
    program: String,
    caged: bool,
    seccomp: Option<SeccompFile>,
}

/// Build the one command line described in the module documentation.
pub fn prepare(spec: &Spec) -> Result<Prepared, SpawnError> {
    let mut c = Command::new("setpriv");
    c.args(["--pdeathsig", "KILL", "--"]);
    c.args(&spec.prefix);
    if !spec.rlimits.is_empty() {
        c.arg("prlimit").args(&spec.rlimits).arg("--");
    }
    let seccomp = match &spec.seccomp_bpf {
        Some(bpf) => {
            if bwrap_version().is_none() {
                return Err(SpawnError::NoBwrap);
            }
            let file = SeccompFile::write(bpf).map_err(SpawnError::Seccomp)?;
            // Joining the cgroups happens here, before bwrap: everything the cage forks is
            // born inside them. A path with whitespace would split, so none is accepted.
            let procs: Vec<String> = spec
                .cgroup_procs
                .iter()
                .map(|p| p.display().to_string())
                .collect();
            if procs.iter().any(|p| p.contains(char::is_whitespace)) {
                return Err(SpawnError::Cgroup(format!(
                    "a cgroup path holds whitespace: {}",
                    procs.join(" ")
                )));
            }
            c.args(["/bin/sh", "-c"])
                .arg(format!(
                    "for p in $KAGED_CGROUP_PROCS; do echo $$ > \"$p\" || exit 125; done; exec {BWRAP} \"$@\" {}< \"$0\"",
                    kaged_cage::SECCOMP_FD
                ))
                .arg(file.path());
            Some(file)
        }
        None => None,
    };
    c.args(&spec.argv);
    if spec.seccomp_bpf.is_none() {
        c.env_clear().envs(spec.env.iter().map(|(k, v)| (k, v)));
        if let Some(cwd) = &spec.cwd {
            c.current_dir(cwd);
        }
    } else {
        // bwrap starts from --clearenv; only the launcher reads these.
        c.env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .env(
                "KAGED_CGROUP_PROCS",
                spec.cgroup_procs
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(" "),
            );
        if !spec.prefix.is_empty() {
            // `systemd-run --user` finds the user's service manager through these.
            for k in ["XDG_RUNTIME_DIR", "DBUS_SESSION_BUS_ADDRESS"] {
                if let Some(v) = std::env::var_os(k) {
                    c.env(k, v);
                }
            }
        }
    }
    Ok(Prepared {
        command: c,
        // What an operator would look for when the start fails (the first program is
        // always setpriv; a caged argv starts with bwrap's options, not a program).
        program: format!(
            "setpriv (util-linux) running {}",
            if spec.is_caged() {
                "bwrap"
            } else {
                spec.argv.first().map_or("", String::as_str)
            }
        ),
        caged: spec.is_caged(),
        seccomp,
    })
}

/// A caged run ready to start: what to start, its cgroups (kept until it ended) and how its
/// limits are enforced on this host.
pub struct CagedRun {
    pub spec: Spec,
    pub cgroups: Cgroups,
    pub limits: kaged_cage::LimitPlan,
}

/// The one way from a compiled cage (bwrap `argv`, seccomp program, limits) to a [`Spec`]:
/// limits are planned against this host and their cgroups made (named after `name`).
pub fn caged(
    argv: Vec<String>,
    seccomp_bpf: Vec<u8>,
    limits: &kaged_cage::Limits,
    name: &str,
) -> Result<CagedRun, SpawnError> {
    let plan = kaged_cage::plan_limits(limits, &limit_facts());
    let cgroups = if plan.cgroup.is_empty() {
        Cgroups::default()
    } else {
        Cgroups::create(name, &plan.cgroup).map_err(|e| SpawnError::Cgroup(e.to_string()))?
    };
    Ok(CagedRun {
        spec: Spec {
            argv,
            seccomp_bpf: Some(seccomp_bpf),
            prefix: plan.prefix.clone(),
            rlimits: plan.rlimits.clone(),
            cgroup_procs: cgroups.procs_files(),
            cwd: None,
            env: Vec::new(),
        },
        cgroups,
        limits: plan,
    })
}

/// Held while a PTY is opened and while any run is spawned (see `spawn_pty`).
static SPAWN_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());

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
    let spawned = {
        let _spawning = SPAWN_LOCK.lock().unwrap_or_else(|p| p.into_inner());
        prepared.command.spawn()
    };
    let mut child = spawned.map_err(|e| start_error(&prepared.program, e))?;
    let killer = Killer {
        pid: child.id(),
        caged: prepared.caged,
    };
    let deadline = wall_time.map(|w| std::time::Instant::now() + w);
    let status = loop {
        if let Some(status) = child
            .try_wait()
            .map_err(|e| start_error(&prepared.program, e))?
        {
            break status;
        }
        let too_many = || max_processes.is_some_and(|max| killer.process_count() as u64 > max);
        if deadline.is_some_and(|d| std::time::Instant::now() >= d) || too_many() {
            killer.kill();
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    drop(prepared.seccomp.take());
    Ok(Exit::of(status))
}

/// Signals and kills a started run from any thread.
#[derive(Debug, Clone)]
pub struct Killer {
    pid: u32,
    caged: bool,
}

impl Killer {
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Send `signal` to every process of the run (the started process last, so a cage's
    /// init does not take the others down before they had a chance to handle it).
    pub fn signal_all(&self, signal: Signal) {
        for pid in members(self.pid) {
            let _ = nix::sys::signal::kill(Pid::from_raw(pid as i32), signal);
        }
        let _ = nix::sys::signal::kill(Pid::from_raw(self.pid as i32), signal);
    }

    /// End the run now: nothing of it survives.
    pub fn kill(&self) {
        let rest = members(self.pid);
        let _ = nix::sys::signal::kill(Pid::from_raw(self.pid as i32), Signal::SIGKILL);
        if !self.caged {
            // The run leads its own session and process group (the PTY made it so).
            let _ = nix::sys::signal::killpg(Pid::from_raw(self.pid as i32), Signal::SIGKILL);
        }
        for pid in rest {
            let _ = nix::sys::signal::kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
        }
    }

    /// How many processes the command has now: for a cage, bwrap's own two (the outer
    /// process and the namespace's init) are not counted, so this compares with a pids limit.
    pub fn process_count(&self) -> usize {
        let all = 1 + descendants(self.pid).len();
        if self.caged {
            all.saturating_sub(2)
        } else {
            all
        }
    }
}

/// Reaps a started run (blocking). Keeps the run's private files until it has ended.
pub struct Waiter {
    child: Child,
    _seccomp: Option<SeccompFile>,
}

impl Waiter {
    pub fn wait(mut self) -> Exit {
        match self.child.wait() {
            Ok(status) => Exit::of(status),
            // Only if it was already reaped, which nothing else here does.
            Err(_) => Exit::Code(1),
        }
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
        seccomp,
    } = prepared;
    let child = pty_process::blocking::Command::from(command)
        .spawn(pts)
        .map_err(|e| SpawnError::Start {
            program,
            source: std::io::Error::other(e.to_string()),
        })?;
    Ok(PtyRun {
        terminal: Terminal { pty: Arc::new(pty) },
        killer: Killer {
            pid: child.id(),
            caged,
        },
        waiter: Waiter {
            child,
            _seccomp: seccomp,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uncaged(cmd: &[&str]) -> Spec {
        Spec {
            argv: cmd.iter().map(|s| s.to_string()).collect(),
            seccomp_bpf: None,
            prefix: Vec::new(),
            rlimits: Vec::new(),
            cgroup_procs: Vec::new(),
            cwd: Some(std::env::temp_dir()),
            env: vec![("PATH".into(), "/usr/bin:/bin".into())],
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
