//! The daemon's shared state (`ServerState`, the axum router's state) and what it hands the
//! session manager (`sessions::Deps`, built here: nothing under `sessions/` names this type).

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::extract::FromRef;

use kaged_auth::{Logins, Policy, UsedTokens};
use kaged_config::{ModeDecision, Settings};
use kaged_store::Store;

use crate::audit::AuditLog;
use crate::error::{ApiError, ErrorCode};
use crate::sessions::{Deps, LoadedProject, Projects, RunSettings, Sessions};

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
    /// Shared with the session manager (the write gate of the PTY channel).
    pub policy: Arc<Policy>,
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
    /// Shared with the session manager through [`LoadedProjects`].
    pub(crate) projects: Arc<Mutex<crate::projects::Registry>>,
    pub runs: Sessions,
    /// The plugins in `[plugins] dir`, each supervised in its own cage.
    pub plugins: crate::plugins::Plugins,
    /// Notified when the local operator asked the daemon to stop (`kaged stop`).
    pub stop_requested: tokio::sync::Notify,
    /// Whether that stop is to end the runs held for the next daemon too (`--kill-runs`).
    pub(crate) kill_runs: std::sync::atomic::AtomicBool,
}

impl ServerState {
    pub fn new(
        policy: Policy,
        info: DaemonInfo,
        store: Store,
        audit: AuditLog,
        shutdown: tokio::sync::watch::Receiver<bool>,
    ) -> Self {
        let policy = Arc::new(policy);
        let projects: Arc<Mutex<crate::projects::Registry>> = Default::default();
        let revoked_tokens = tokio::sync::broadcast::channel(64).0;
        let (plugins, hooks) = crate::plugins::Plugins::new(
            info.settings.plugins_dir.clone(),
            info.settings.plugins_enabled.clone(),
            plugin_deps(&info, &store, &audit),
        );
        let runs = Sessions::new(Deps {
            hooks,
            plugins: Some(plugins.clone()),
            store: store.clone(),
            audit: audit.clone(),
            settings: run_settings(&info),
            projects: Arc::new(LoadedProjects(projects.clone())),
            policy: policy.clone(),
            shutdown: shutdown.clone(),
            revoked_tokens: revoked_tokens.clone(),
            notifier: crate::notify::Notifier::new(&info.settings, &info.url),
        });
        ServerState {
            plugins,
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
            revoked_tokens,
            projects,
            runs,
            stop_requested: tokio::sync::Notify::new(),
            kill_runs: std::sync::atomic::AtomicBool::new(false),
        }
    }
}

impl ServerState {
    /// Whether the stop asked for ends the held runs too (`kaged stop --kill-runs`).
    pub fn kill_runs_requested(&self) -> bool {
        self.kill_runs.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// The axum handlers of `sessions/` take the session manager as their state.
impl FromRef<Arc<ServerState>> for Sessions {
    fn from_ref(state: &Arc<ServerState>) -> Sessions {
        state.runs.clone()
    }
}

/// What runs need of the daemon's settings and the start-up preflight.
fn run_settings(info: &DaemonInfo) -> RunSettings {
    let settings = &info.settings;
    RunSettings {
        home: settings.home.clone(),
        transcripts: settings.home.join("transcripts"),
        sandbox_disabled: settings.sandbox_mode == kaged_config::SandboxMode::Disabled,
        sandbox_problem: info.sandbox.problem.clone(),
        helper: info.sandbox.helper.clone(),
        cage_user: settings.cage_user.clone(),
        default_limits: crate::sessions::default_limits(settings),
        local: info.local.clone(),
        local_path: info.local_path.clone(),
        models: settings.models,
        transcript_max_mb: settings.transcript_max_mb,
        sessions_max_total_mb: settings.sessions_max_total_mb,
        sessions_max_age_days: settings.sessions_max_age_days,
        approval_timeout_secs: settings.approval_timeout_secs,
        holders: Some(crate::sessions::HolderSettings {
            // The daemon's own executable, even once an upgrade replaced it on disk.
            exe: PathBuf::from("/proc/self/exe"),
            dir: crate::sessions::holder_dir(&info.decision.paths.runtime_dir),
        }),
        on_daemon_stop: settings.on_daemon_stop,
    }
}

/// The project registry as the session manager looks projects up.
struct LoadedProjects(Arc<Mutex<crate::projects::Registry>>);

impl Projects for LoadedProjects {
    fn for_run(&self, slug: &str) -> Result<LoadedProject, ApiError> {
        let projects = lock(&self.0);
        let p = projects.get(slug).ok_or_else(|| {
            ApiError::new(
                ErrorCode::NotFound,
                format!(
                    "no project `{slug}` is loaded; `kaged project list` shows the loaded ones"
                ),
            )
        })?;
        if let Some(refusal) = crate::projects::overlap_refusal(&projects, p) {
            return Err(refusal);
        }
        Ok(LoadedProject {
            root: p.root.clone(),
            config: p.config.clone(),
            had_git: p.had_git,
        })
    }

    fn root(&self, slug: &str) -> Option<PathBuf> {
        lock(&self.0).get(slug).map(|p| p.root.clone())
    }
}

/// The daemon is stopping: let go of the runs it keeps (`[sessions] on_daemon_stop`, unless
/// `kill_runs`), end every other live run and wait for their ends to be recorded. Returns how
/// many runs go on without it.
pub async fn stop_sessions(state: &Arc<ServerState>, kill_runs: bool) -> usize {
    state.runs.stop_all(kill_runs).await
}

/// The daemon is stopping: every plugin gets `shutdown` (killed after its
/// `shutdown_timeout_sec`).
pub async fn stop_plugins(state: &Arc<ServerState>) {
    state.plugins.stop_all().await;
}

/// What the plugin host needs of the daemon's settings and the start-up preflight.
fn plugin_deps(info: &DaemonInfo, store: &Store, audit: &AuditLog) -> crate::plugins::PluginDeps {
    let settings = &info.settings;
    let no_cage = if settings.sandbox_mode == kaged_config::SandboxMode::Disabled {
        Some("cages are disabled ([sandbox] mode = \"disabled\")".to_string())
    } else {
        info.sandbox
            .problem
            .clone()
            .map(|p| format!("no cage can be built on this host: {p}"))
    };
    crate::plugins::PluginDeps {
        audit: audit.clone(),
        store: store.clone(),
        helper: info.sandbox.helper.clone(),
        cage_user: settings.cage_user.clone(),
        default_limits: crate::sessions::default_limits(settings),
        no_cage,
        system_config: info.local.plugins.clone(),
        local_path: info.local_path.clone(),
    }
}

/// Take up the runs an earlier daemon left to their holders (before "ready"); how many.
pub async fn reattach_runs(state: &Arc<ServerState>) -> usize {
    match state.runs.deps().settings.holders.clone() {
        Some(holders) => state.runs.reattach(&holders).await,
        None => 0,
    }
}

/// Lock a mutex whose data stays consistent even if a holder panicked (every critical section
/// here is a single map operation).
pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
