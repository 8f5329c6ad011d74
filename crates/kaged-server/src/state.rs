use std::sync::Mutex;
use std::time::Instant;

use kaged_auth::{Logins, Policy, UsedTokens};
use kaged_config::{ModeDecision, Settings};
use kaged_store::Store;

use crate::audit::AuditLog;

/// Facts about this daemon start that `GET /api/v1/status` reports.
/// Not `Serialize` on purpose: `GET /api/v1/status` picks its fields one by one.
#[derive(Debug, Clone)]
pub struct DaemonInfo {
    pub version: String,
    pub pid: u32,
    pub started_at_ms: i64,
    pub url: String,
    pub decision: ModeDecision,
    pub settings: Settings,
    pub warnings: Vec<String>,
    /// Values of the `X-Kaged-Warning` headers every response carries (`insecure`, `no-sandbox`).
    pub warning_headers: Vec<&'static str>,
    /// The operator-local configuration (local.toml); its secrets never serialize.
    pub local_path: std::path::PathBuf,
    pub local: kaged_config::LocalConfig,
    /// What the startup preflight found about cages on this host.
    pub sandbox: SandboxState,
}

/// The startup preflight's verdict on cages (empty when the sandbox is disabled).
#[derive(Debug, Clone, Default)]
pub struct SandboxState {
    /// Why no cage can be built here; caged work is refused while it is `Some`.
    pub problem: Option<String>,
    /// How limits are enforced on this host.
    pub limits: Option<String>,
    /// The daemon's private copy of kaged, bound into cages as their helper (it survives the
    /// binary being replaced on disk); `None`: `/proc/self/exe`.
    pub helper: Option<std::path::PathBuf>,
}

/// Failed launch attempts allowed per window before `/launch` answers 429.
pub(crate) const LAUNCH_FAILURES_PER_WINDOW: usize = 20;
pub(crate) const LAUNCH_WINDOW_MS: i64 = 60_000;

pub struct ServerState {
    pub policy: Policy,
    pub info: DaemonInfo,
    pub store: Store,
    pub audit: AuditLog,
    pub(crate) logins: Mutex<Logins>,
    pub(crate) used_tokens: Mutex<UsedTokens>,
    pub(crate) launch_failures: Mutex<Vec<i64>>,
    /// Sidecar identities already attributed in the audit log this run.
    pub(crate) seen_identities: Mutex<std::collections::HashSet<String>>,
    pub(crate) started: Instant,
    /// Flips to `true` when the daemon stops, so long-lived connections close cleanly.
    pub(crate) shutdown: tokio::sync::watch::Receiver<bool>,
    /// Ids of tokens revoked while the daemon runs, so open sockets using them close at once.
    pub(crate) revoked_tokens: tokio::sync::broadcast::Sender<i64>,
    pub(crate) projects: Mutex<crate::projects::Registry>,
    pub runs: crate::sessions::Sessions,
}

impl ServerState {
    pub fn new(
        policy: Policy,
        info: DaemonInfo,
        store: Store,
        audit: AuditLog,
        shutdown: tokio::sync::watch::Receiver<bool>,
    ) -> Self {
        let info_transcripts = info.settings.home.join("transcripts");
        ServerState {
            policy,
            info,
            store,
            audit,
            logins: Mutex::new(Logins::default()),
            used_tokens: Mutex::new(UsedTokens::default()),
            launch_failures: Mutex::new(Vec::new()),
            seen_identities: Mutex::new(Default::default()),
            started: Instant::now(),
            shutdown,
            revoked_tokens: tokio::sync::broadcast::channel(64).0,
            projects: Mutex::new(Default::default()),
            runs: crate::sessions::Sessions::new(info_transcripts),
        }
    }
}

/// Lock a mutex whose data stays consistent even if a holder panicked (every critical section
/// here is a single map operation).
pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
