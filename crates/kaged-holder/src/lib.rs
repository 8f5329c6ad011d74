//! The run holder (`kaged run-holder`): one process per held run that owns the run's terminal
//! (or, for a run on pipes such as an ACP agent, its stdin, stdout and stderr), transcript, cgroups and limits, and serves it to the daemon over a private socket
//! (docs/holder-protocol.md), so the run outlives a daemon restart or upgrade.
//!
//! - [`mod@serve`]: the holder itself, one thread and one poll loop, no async runtime.
//! - [`client`]: the daemon's blocking side of a holder's socket.
//! - [`mod@discover`]: which holders answer in a directory (dead sockets are removed).
//! - [`mod@launch`]: starting a holder process and reading its readiness line; [`run_holder`],
//!   the `kaged run-holder` entry point.
//! - [`transcript`]: the transcript files (written here, read by the daemon too).
//! - [`peer`]: who may connect (same UID, same user and PID namespaces).
//! - [`status`]: the status file a run leaves when it ended; [`log`]: the holder's own log.

pub mod client;
mod conn;
pub mod discover;
mod io;
pub mod launch;
pub mod log;
pub mod peer;
pub mod serve;
pub mod status;
pub mod transcript;

pub use client::{Client, Sender};
pub use discover::{Found, discover};
pub use launch::{Launched, Launcher, Started, launch, run_holder};
pub use serve::{MAX_CLIENTS, ServeError, serve};

use kaged_session::holder::HolderSpec;

/// The start a holder makes for its spec (what `kaged_spawn::caged` or `Spec::uncaged` gave
/// the daemon), with the cage's descriptors it inherited.
pub fn run_spec(spec: &HolderSpec, cage: Option<kaged_spawn::CageFds>) -> kaged_spawn::Spec {
    kaged_spawn::Spec {
        argv: spec.argv.clone(),
        cage,
        prefix: spec.prefix.clone(),
        rlimits: spec.rlimits.clone(),
        cgroup_procs: spec.cgroup_procs.iter().map(Into::into).collect(),
        cwd: spec.cwd.as_ref().map(Into::into),
        env: spec.env.clone(),
        run_as: spec.run_as.map(|r| kaged_cage::Identity {
            uid: r.uid,
            gid: r.gid,
        }),
    }
}

/// Copy what the daemon's start (`kaged_spawn::caged` or `Spec::uncaged`) decided into a
/// holder's spec: the inverse of [`run_spec`]. The cage's descriptors themselves are handed
/// over by [`launch()`].
pub fn fill_from(spec: &mut HolderSpec, run: &kaged_spawn::Spec) {
    spec.argv = run.argv.clone();
    spec.prefix = run.prefix.clone();
    spec.rlimits = run.rlimits.clone();
    spec.cgroup_procs = run
        .cgroup_procs
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    spec.cwd = run.cwd.as_ref().map(|p| p.display().to_string());
    spec.env = run.env.clone();
    spec.run_as = run.run_as.map(|id| kaged_session::holder::RunAs {
        uid: id.uid,
        gid: id.gid,
    });
    spec.cage_fd_count = run.cage.as_ref().map_or(0, |c| c.len() as u32);
}

/// What this build calls itself to a holder (`kaged X.Y.Z`).
pub fn client_name() -> String {
    format!("kaged {}", env!("CARGO_PKG_VERSION"))
}
