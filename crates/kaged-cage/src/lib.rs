//! Cages, decided without I/O: an agent's cage policy (from the typed project model of
//! `kaged-dsl`), the project root and the operator's grants become a bubblewrap command line.
//! The edge runs it.
//!
//! Defaults ("sandbox by default, escalate by intent"): system directories read-only, the
//! project read-write at `/workspace` with `.git` and `.kaged` read-only, a private home and
//! `/tmp`, fresh `/proc` and `/dev`, new user/PID/IPC/UTS namespaces, no network unless asked,
//! `--die-with-parent`, `--new-session` (no TIOCSTI into the caller's terminal), and an
//! environment cleared down to an allowlist.

mod check;
mod compile;
mod identity;
mod limits;
mod policy;
mod program;
mod run;
mod seccomp;
mod weaken;

pub use check::{CheckError, Expect, Observed, judge_mounts, mount_points};
pub use compile::{
    ARGS_FD, CageArgs, EGRESS_DIR, EGRESS_LISTEN, FIRST_SOURCE_FD, FileId, HELPER, Host, HostBind,
    Launch, Opened, SECCOMP_ENOSYS_FD, SECCOMP_FD, Source, cage_path, compile, grant_destination,
    sources, unenforced,
};
pub use identity::{Because, Identity, IdentityError, IdentityFacts, RunAs, run_as};
pub use limits::{CPU_PERIOD_US, CgroupValues, LimitFacts, LimitPlan, plan_limits};
pub use policy::{Limits, Mount, Network, Policy, Workspace, policy_for};
pub use program::{HostFs, Lookup, ProgramError, View, resolve_program};
pub use run::{PlanError, RunKind, RunPlan, plan_run};
pub use seccomp::{SeccompError, SeccompPrograms, profile_bpf};
pub use weaken::{HostGrants, HostPath, Weakening, policy_weakenings, weakenings};

/// Where the project appears inside every cage.
pub const WORKSPACE: &str = "/workspace";

/// The private home inside every cage.
pub const CAGE_HOME: &str = "/home/kaged";
/// The cage's `PATH` after the directories granted `on_path`.
pub const DEFAULT_PATH: &[&str] = &[
    "/usr/local/bin",
    "/usr/bin",
    "/bin",
    "/usr/local/sbin",
    "/usr/sbin",
    "/sbin",
];
/// System directories bound read-only when they exist on the host.
pub const SYSTEM_DIRS: &[&str] = &[
    "/usr",
    "/bin",
    "/sbin",
    "/lib",
    "/lib32",
    "/lib64",
    "/etc",
    "/opt/kaged",
];

/// Why no cage policy or command line could be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CageError {
    #[error("no agent named `{0}` in this project (agents: {1})")]
    UnknownAgent(String, String),
    #[error("the cage policy of `{agent}` is malformed at {field}")]
    Malformed { agent: String, field: String },
    #[error("the command is empty")]
    EmptyCommand,
    #[error("kaged did not open {0} for the cage (a bug: report it)")]
    MissingSource(String),
}
