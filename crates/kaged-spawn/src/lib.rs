//! The process edge: start what `kaged-cage` compiled, on a kaged PTY or on the caller's
//! terminal, then observe, signal and reap it.
//!
//! Every start goes through one command line:
//! `setpriv --pdeathsig KILL -- [systemd-run --scope ... --] [prlimit LIMITS --]
//!  [sh -c 'join cgroups; exec [setpriv --reuid U ...] bwrap --args 5'] [ARGV]`.
//! - `setpriv --pdeathsig` kills the run if the thread that started it dies with the daemon;
//!   bwrap's own `--die-with-parent` then takes the whole cage down (its PID namespace dies
//!   with its init).
//! - `prlimit` applies the rlimits `kaged-cage` chose.
//! - Cages never run as UID 0: a root daemon's launcher joins the cgroups (which needs root),
//!   then becomes the identity `kaged_cage::run_as` chose through a second `setpriv` (real
//!   and effective IDs, no supplementary groups, no new privileges, and `--pdeathsig` again:
//!   the kernel clears it when the UID changes). The descriptors survive the switch; nothing
//!   the cage needs is reached by a path the new user could not open.
//! - A caged start gets exactly these descriptors (`fds`): the two seccomp programs (3, 4),
//!   bwrap's arguments (5: nothing of them, the environment included, shows in
//!   `/proc/PID/cmdline`), and every bind source opened without following links (6...).
//!   Every child, caged or not, gets no other descriptor from 3 on.
//!
//! Killing: SIGKILL to the started process (bwrap, the PID namespace's parent) ends the cage;
//! the snapshot of its descendants taken just before is killed too, which also covers an
//! uncaged run whose children left its process group. Every signal goes through a pidfd
//! (`pidfd`), and nothing is signalled once the started process was reaped: until then its
//! PID cannot be reused, so a `/proc` scan by that PID finds only the run's own processes.

mod cgroup;
mod check;
mod facts;
mod fds;
mod helper;
mod identity;
mod memory;
mod pidfd;
mod preflight;
mod sweep;
mod tree;

use std::io::{Read, Seek, Write};
use std::os::fd::OwnedFd;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::{Arc, Mutex};

use nix::unistd::Pid;

pub use cgroup::{Cgroups, limit_facts};
pub use check::cage_check;
pub use facts::{Sources, open_sources};
pub use fds::mark_inherited_cloexec;
pub use helper::HelperCopy;
pub use identity::{describe as describe_identity, effective_uid, run_as};
pub use memory::release_free_memory;
pub use nix::sys::signal::Signal;
pub use preflight::{Check, preflight, sandbox_problem};
pub use sweep::{Swept, sweep};
pub use tree::{descendants, members};

use tree::members_seen;

const BWRAP: &str = "bwrap";

#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    #[error(
        "bubblewrap (bwrap) is not installed, so no cage can be built and nothing runs uncaged; install it (sudo apt-get install bubblewrap), then see `kaged doctor`"
    )]
    NoBwrap,
    #[error(
        "{0} is too old for kaged's cages (it needs --bind-fd and --disable-userns, bubblewrap 0.8.0 or newer); upgrade bubblewrap, then see `kaged doctor`"
    )]
    OldBwrap(String),
    #[error("cannot build the cage: {0}")]
    Cage(String),
    #[error("cannot hand the cage its descriptors: {0}")]
    Descriptors(std::io::Error),
    #[error(
        "cannot set up the cage's cgroups ({0}); run `kaged doctor` to see how limits can be enforced on this host"
    )]
    Cgroup(String),
    #[error("cannot open a PTY: {0}")]
    Pty(String),
    #[error("cannot hold the started process through a pidfd (Linux 5.3 or newer is needed): {0}")]
    Pidfd(std::io::Error),
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
    /// The command (caged: as bwrap runs it, the in-cage helpers first; bwrap reads its
    /// options from `cage`).
    pub argv: Vec<String>,
    /// The descriptors of a caged start (see the module documentation); `Some` exactly when
    /// the run is caged.
    pub cage: Option<CageFds>,
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
    /// Who a caged run becomes once it joined its cgroups (a root daemon's cages).
    pub run_as: Option<kaged_cage::Identity>,
}

/// A caged start's descriptors, in the order bwrap is told (3, 4, ...). Shared, because a
/// [`Spec`] is cloned; each start hands the child its own duplicates.
#[derive(Debug, Clone)]
pub struct CageFds(Arc<Vec<OwnedFd>>);

impl CageFds {
    fn duplicates(&self) -> Result<Vec<OwnedFd>, SpawnError> {
        self.0
            .iter()
            .map(|fd| fd.try_clone().map_err(SpawnError::Descriptors))
            .collect()
    }
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
            cage: None,
            prefix: Vec::new(),
            rlimits: Vec::new(),
            cgroup_procs: Vec::new(),
            cwd: Some(cwd),
            env,
            run_as: None,
        }
    }

    pub fn is_caged(&self) -> bool {
        self.cage.is_some()
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

/// Whether a `bwrap --version` line names 0.8.0 or newer (`--bind-fd`, `--disable-userns`).
pub(crate) fn bwrap_is_recent(version: &str) -> bool {
    let numbers: Vec<u32> = version
        .rsplit(' ')
        .next()
        .unwrap_or("")
        .split('.')
        .map_while(|n| n.parse().ok())
        .collect();
    numbers.first().copied().unwrap_or(0) > 0 || numbers.get(1).copied().unwrap_or(0) >= 8
}

/// The installed bwrap, if it can build kaged's cages.
/// Once found usable, bwrap is not asked again (each start used to run `bwrap --version`
/// twice); a missing or old one is asked again, so installing it needs no restart.
pub fn usable_bwrap() -> Result<String, SpawnError> {
    static USABLE: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    if let Some(version) = USABLE.get() {
        return Ok(version.clone());
    }
    let version = bwrap_version().ok_or(SpawnError::NoBwrap)?;
    if bwrap_is_recent(&version) {
        Ok(USABLE.get_or_init(|| version).clone())
    } else {
        Err(SpawnError::OldBwrap(version))
    }
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

/// A command ready to start, and the descriptors its child gets.
pub struct Prepared {
    pub command: Command,
    program: String,
    caged: bool,
    fds: Vec<OwnedFd>,
}

/// Build the one command line described in the module documentation.
pub fn prepare(spec: &Spec) -> Result<Prepared, SpawnError> {
    let mut c = Command::new("setpriv");
    c.args(["--pdeathsig", "KILL", "--"]);
    c.args(&spec.prefix);
    if !spec.rlimits.is_empty() {
        c.arg("prlimit").args(&spec.rlimits).arg("--");
    }
    let fds = match &spec.cage {
        Some(cage) => {
            usable_bwrap()?;
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
            let become_user = match spec.run_as {
                Some(id) => format!(
                    "setpriv --reuid={} --regid={} --clear-groups --no-new-privs --pdeathsig KILL -- ",
                    id.uid, id.gid
                ),
                None => String::new(),
            };
            c.args(["/bin/sh", "-c"])
                .arg(format!(
                    "for p in $KAGED_CGROUP_PROCS; do echo $$ > \"$p\" || exit 125; done; exec {become_user}{BWRAP} --args {} -- \"$@\"",
                    kaged_cage::ARGS_FD
                ))
                .arg("kaged-cage")
                .args(&spec.argv);
            // bwrap starts from --clearenv; only the launcher reads these.
            c.env_clear()
                .env("PATH", "/usr/local/bin:/usr/bin:/bin")
                .env("KAGED_CGROUP_PROCS", procs.join(" "));
            if !spec.prefix.is_empty() {
                // `systemd-run --user` finds the user's service manager through these.
                for k in ["XDG_RUNTIME_DIR", "DBUS_SESSION_BUS_ADDRESS"] {
                    if let Some(v) = std::env::var_os(k) {
                        c.env(k, v);
                    }
                }
            }
            cage.duplicates()?
        }
        None => {
            c.args(&spec.argv);
            c.env_clear().envs(spec.env.iter().map(|(k, v)| (k, v)));
            if let Some(cwd) = &spec.cwd {
                c.current_dir(cwd);
            }
            Vec::new()
        }
    };
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
        fds,
    })
}

/// A caged run ready to start: what to start, its cgroups (kept until it ended) and how its
/// limits are enforced on this host.
pub struct CagedRun {
    pub spec: Spec,
    pub cgroups: Cgroups,
    pub limits: kaged_cage::LimitPlan,
}

/// Everything a caged start needs from its caller.
pub struct CageRequest<'a> {
    /// The project root (canonical).
    pub root: &'a Path,
    /// The kaged executable bound in for the helpers: a daemon's [`HelperCopy`] (which survives
    /// an upgrade on disk), or `/proc/self/exe` for a short-lived command.
    pub helper: &'a Path,
    /// A `Policy::Caged`.
    pub policy: &'a kaged_cage::Policy,
    /// The daemon's default limits (`[sandbox]`), for every key the policy leaves unset.
    pub default_limits: &'a kaged_cage::Limits,
    pub launch: kaged_cage::Launch<'a>,
    /// Names the run's cgroups.
    pub name: &'a str,
    /// Who the cage runs as ([`run_as`]); `None` only when this process is not root.
    pub run_as: Option<kaged_cage::Identity>,
    /// The project's name (for the `local.toml` lines a refusal suggests).
    pub project: &'a str,
    /// What `local.toml` grants the project from the host (paths; see `resolve_grants`).
    pub grants: &'a [kaged_cage::HostPath],
}

/// An anonymous in-memory file holding `bytes`, read from its start.
fn memory_file(name: &str, bytes: &[u8]) -> Result<OwnedFd, SpawnError> {
    let fd = nix::sys::memfd::memfd_create(name, nix::sys::memfd::MFdFlags::MFD_CLOEXEC)
        .map_err(|e| SpawnError::Descriptors(e.into()))?;
    let mut file = std::fs::File::from(fd);
    file.write_all(bytes).map_err(SpawnError::Descriptors)?;
    file.rewind().map_err(SpawnError::Descriptors)?;
    Ok(file.into())
}

/// The one way from a cage policy to a [`Spec`]: the sources opened without following
/// links, bwrap's arguments compiled and put in memory, the seccomp programs built, limits
/// planned against this host and their cgroups made (named after `request.name`).
pub fn caged(request: &CageRequest<'_>) -> Result<CagedRun, SpawnError> {
    let kaged_cage::Policy::Caged {
        seccomp, limits, ..
    } = request.policy
    else {
        return Err(SpawnError::Cage("the cage is disabled".into()));
    };
    usable_bwrap()?;
    if request.run_as.is_none() && effective_uid() == 0 {
        return Err(SpawnError::Cage(
            "cages never run as root, and no other user was chosen for this one (a bug: report it)"
                .into(),
        ));
    }
    if let (Some(id), Some(socket)) = (request.run_as, request.launch.egress) {
        // The cage connects to its proxy as its own user: the socket and its run's own
        // directory become that user's (both stay out of reach by path, below the daemon's
        // private directory; the cage gets the directory by descriptor, read-only).
        for path in [socket, socket.parent().unwrap_or(socket)] {
            std::os::unix::fs::chown(path, Some(id.uid), Some(id.gid)).map_err(|e| {
                SpawnError::Cage(format!(
                    "cannot hand {} to the cage's user: {e}",
                    path.display()
                ))
            })?;
        }
    }
    if request.run_as.is_some() {
        facts::make_git_mount_point(request.root).map_err(SpawnError::Cage)?;
    }
    let mut sources = open_sources(
        request.root,
        request.helper,
        request.policy,
        request.launch.egress,
    )
    .map_err(SpawnError::Cage)?;
    let binds = facts::resolve_grants(request.root, request.grants).map_err(SpawnError::Cage)?;
    sources.host.system_submounts.extend(facts::submounts(
        &binds
            .iter()
            .map(|b| (b.dest.clone(), b.host.clone()))
            .collect::<Vec<_>>(),
    ));
    sources.host.binds = binds;
    // The program as the cage will see it: one that is only on kaged's PATH is refused here,
    // with the grant that makes it visible, rather than dying with 127 inside.
    if let Some(program) = request.launch.command.first() {
        let operator_path: Vec<PathBuf> = std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).collect())
            .unwrap_or_default();
        kaged_cage::resolve_program(
            program,
            &kaged_cage::cage_path(&sources.host),
            &kaged_cage::View::of(&sources.host, request.root),
            &facts::RealFs,
            &operator_path,
            request.project,
        )
        .map_err(|e| SpawnError::Cage(e.to_string()))?;
    }
    let args = kaged_cage::compile(request.policy, &sources.host, &request.launch)
        .map_err(|e| SpawnError::Cage(e.to_string()))?;
    let programs = kaged_cage::profile_bpf(seccomp).map_err(|e| SpawnError::Cage(e.to_string()))?;
    let mut nul_separated = Vec::new();
    for arg in &args.options {
        nul_separated.extend_from_slice(arg.as_bytes());
        nul_separated.push(0);
    }
    let mut fds = vec![
        memory_file("kaged-seccomp", &programs.eperm)?,
        memory_file("kaged-seccomp-enosys", &programs.enosys)?,
        memory_file("kaged-bwrap-args", &nul_separated)?,
    ];
    fds.extend(sources.fds);
    let plan = kaged_cage::plan_limits(limits, request.default_limits, &limit_facts());
    let cgroups = if plan.cgroup.is_empty() {
        Cgroups::default()
    } else {
        Cgroups::create(request.name, &plan.cgroup)
            .map_err(|e| SpawnError::Cgroup(e.to_string()))?
    };
    Ok(CagedRun {
        spec: Spec {
            argv: args.command,
            cage: Some(CageFds(Arc::new(fds))),
            prefix: plan.prefix.clone(),
            rlimits: plan.rlimits.clone(),
            cgroup_procs: cgroups.procs_files(),
            cwd: None,
            env: Vec::new(),
            run_as: request.run_as,
        },
        cgroups,
        limits: plan,
    })
}

/// How often a pids watchdog counts a run's processes (a host without cgroups). Short, so a
/// fork flood is caught early; a count is one scan of `/proc`.
pub const WATCHDOG_POLL: std::time::Duration = std::time::Duration::from_millis(20);

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
fn hold(mut child: Child, caged: bool) -> Result<(Killer, Waiter), SpawnError> {
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

    /// Reap the run if it has ended.
    fn try_wait(&mut self) -> std::io::Result<Option<Exit>> {
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
    use super::*;

    #[test]
    fn bwrap_versions_are_judged() {
        assert!(bwrap_is_recent("bubblewrap 0.8.0"));
        assert!(bwrap_is_recent("bubblewrap 0.11.1"));
        assert!(bwrap_is_recent("bubblewrap 1.0"));
        assert!(!bwrap_is_recent("bubblewrap 0.6.1"));
        assert!(!bwrap_is_recent("bubblewrap"));
    }

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
