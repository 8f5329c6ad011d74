//! The process edge: start what `kaged-cage` compiled, on a kaged PTY, on pipes (a caged
//! `kaged tool-exec`: `spawn_piped`) or on the caller's terminal, then observe, signal and
//! reap it.
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
mod holder;
mod identity;
mod launch;
mod memory;
mod pidfd;
mod piped;
mod preflight;
mod process;
mod sweep;
mod tree;

use std::os::fd::OwnedFd;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;

pub use cgroup::{Cgroups, limit_facts};
pub use check::cage_check;
pub use facts::{ReadBeneathError, Sources, open_sources, read_beneath};
pub use fds::{inherited, mark_inherited_cloexec};
pub use helper::HelperCopy;
pub use holder::{
    HOLDER_READY_TIMEOUT, HolderLaunch, HolderStarted, holder_scope_prefix, spawn_holder,
};
pub use identity::{describe as describe_identity, effective_uid, run_as};
pub use launch::{CageRequest, CagedRun, Prepared, caged, prepare};
pub use memory::release_free_memory;
pub use nix::sys::signal::Signal;
pub use piped::{PipedRun, spawn_piped};
pub use preflight::{Check, preflight, sandbox_problem};
pub use process::{Killer, PtyRun, Terminal, WATCHDOG_POLL, Waiter, run_foreground, spawn_pty};
pub use sweep::{Swept, hold_egress_dir, sweep};
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
    /// A run holder's cage descriptors: `count` of them from `first` on, inherited from the
    /// daemon (see [`inherited`]).
    pub fn from_inherited(first: i32, count: u32) -> std::io::Result<CageFds> {
        let fds = (0..count)
            .map(|i| inherited(first + i as i32))
            .collect::<std::io::Result<Vec<_>>>()?;
        Ok(CageFds(Arc::new(fds)))
    }

    /// How many descriptors a caged start gets.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

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
}
