//! What the session manager needs from the daemon around it. `crate::state` builds it; the
//! tests build their own (a real store in a temporary directory, a fake project lookup).

use std::path::PathBuf;
use std::sync::Arc;

use kaged_store::Store;
use serde_json::Value;
use tokio::sync::{broadcast, watch};

use crate::audit::AuditLog;
use crate::error::ApiError;

/// The session manager's dependencies.
pub struct Deps {
    pub store: Store,
    pub audit: AuditLog,
    pub settings: RunSettings,
    pub projects: Arc<dyn Projects>,
    /// The identity-mode write gate: who may type into a run (`Policy::check_change`).
    pub policy: Arc<kaged_auth::Policy>,
    /// Flips to `true` when the daemon stops (viewers close, housekeeping ends).
    pub shutdown: watch::Receiver<bool>,
    /// Ids of tokens revoked while the daemon runs: viewers using them close at once.
    pub revoked_tokens: broadcast::Sender<i64>,
    /// `[notify] webhook`: approvals asked for, agents waiting, runs failed.
    pub notifier: crate::notify::Notifier,
    /// Plugins' hooks: agents' sessions starting and waiting.
    pub hooks: crate::plugins::Hooks,
    /// The plugins whose tools model agents call (`None`: none, as in the library's tests).
    pub plugins: Option<crate::plugins::Plugins>,
}

/// The settings runs depend on (from `config.toml`, `local.toml` and the start-up preflight).
#[derive(Debug, Clone)]
pub struct RunSettings {
    /// The data directory (named in storage refusals).
    pub home: PathBuf,
    /// Where transcripts are written (`HOME/transcripts`).
    pub transcripts: PathBuf,
    /// `--no-sandbox` (`[sandbox] mode = "disabled"`): every run is uncaged.
    pub sandbox_disabled: bool,
    /// Why no cage can be built on this host (the preflight's verdict).
    pub sandbox_problem: Option<String>,
    /// The daemon's private copy of kaged bound into cages; `None`: `/proc/self/exe`.
    pub helper: Option<PathBuf>,
    /// `[sandbox] cage_user`: who a root daemon's cage runs as when root owns the project.
    pub cage_user: String,
    /// Every cage's default limits (`[sandbox]`, see `default_limits`).
    pub default_limits: kaged_cage::Limits,
    /// `local.toml`: the environment and host paths granted to projects, the model aliases
    /// and providers.
    pub local: kaged_config::LocalConfig,
    /// Where `local.toml` is (named in a missing alias's fix).
    pub local_path: PathBuf,
    /// `[models]`: model agents' timeouts and attempts.
    pub models: kaged_config::ModelSettings,
    /// `[sessions] transcript_max_mb`, `max_total_mb`, `max_age_days`.
    pub transcript_max_mb: u64,
    pub sessions_max_total_mb: u64,
    pub sessions_max_age_days: u64,
    /// `[sessions] approval_timeout_secs`: past it a pending approval is denied (0: never).
    pub approval_timeout_secs: u64,
    /// Where terminal runs are held so they outlive the daemon (`None`: the daemon holds
    /// them itself, and they end with it; the library's tests, which have no kaged binary).
    pub holders: Option<super::held::HolderSettings>,
    /// `[sessions] on_daemon_stop`: what stopping does to held runs.
    pub on_daemon_stop: kaged_config::OnDaemonStop,
}

/// A loaded project, as a run needs it.
#[derive(Debug, Clone)]
pub struct LoadedProject {
    pub root: PathBuf,
    /// The configuration in force (the last valid resolved one).
    pub config: Value,
    /// Whether it had a (non-empty) `.git` when loaded or last accepted.
    pub had_git: bool,
}

/// The loaded projects, as the session manager sees them (`crate::projects` behind it).
pub trait Projects: Send + Sync {
    /// The project `slug` for a new run, or why none may start in it (not loaded: 404
    /// `not_found`; its root overlaps another loaded project's: 409 `conflict`).
    fn for_run(&self, slug: &str) -> Result<LoadedProject, ApiError>;
    /// The root of the loaded project `slug` (named in the audit of a refused run).
    fn root(&self, slug: &str) -> Option<PathBuf>;
}
