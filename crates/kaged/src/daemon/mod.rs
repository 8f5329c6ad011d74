//! `kaged start`: the daemon's life, from the settings to a clean stop.
//!
//! The start-up steps, in this order and for these reasons:
//!
//! 1. **Settings** ([`run`]): host facts, the mode and why, the configuration, the sign-in
//!    mechanism (`sign_in.rs`), the plain-HTTP guardrail of every TCP listener
//!    (`listeners.rs`). Any problem exits 2 *before anything is written*: no half-configured
//!    daemon, no stray files.
//! 2. **Logging**, then `local.toml`'s warnings on stderr.
//! 3. **Preparation** ([`serve`] from here on): the mode logged; on a first per-user launch the
//!    default `config.toml` (`runtime_files.rs`); the descriptor limit raised and the
//!    connection limits fitted under it (`limits.rs`).
//! 4. **Stop signals** installed (`stop.rs`): before anything a client could see, so even an
//!    early stop is graceful.
//! 5. **Locks** (`locks.rs`): the runtime directory (0700, ours) and `daemon.lock`, the data
//!    directory and `kaged.lock`, held to the end. Before storage: a second daemon must never
//!    reach the database or sweep what a live daemon owns.
//! 6. **Storage**: claimed for this daemon (`Store::open_for_daemon`: a second daemon on the
//!    same database, SQLite or PostgreSQL, exits 1 naming the first), opened and migrated (a
//!    newer schema or a file that is not SQLite refuses the start untouched), then sweep what a daemon killed outright left: it needs storage (the
//!    unfinished sessions) and both locks (nothing swept belongs to a live daemon).
//! 7. **Listeners** bound (`listeners.rs`): before any runtime file, so "address already in
//!    use" leaves nothing behind and `daemon.json` names an address that is bound.
//! 8. **Runtime files and the run record**: a new nonce in `auth-cookie`; the audit log opened,
//!    the run recorded and audited as `daemon.start` (`run_record.rs`); then `daemon.json`.
//! 9. **Warnings and the sandbox** (`sandbox.rs`): the no-authentication warnings, the
//!    preflight, the private helper copy cages bind.
//! 10. **Server state**: policy, daemon info; **projects restored before ready**, so a client
//!     that finds the daemon finds its projects too.
//! 11. **Serve** ([`start_serving`]): the router is built (the one place) and every listener
//!     served.
//! 12. **Ready**: `kaged: ready — …` on stderr, `READY=1` to systemd. Last, so "ready" means
//!     every step above is done.
//! 13. **Graceful shutdown** on SIGTERM/SIGINT (`stop.rs`): `STOPPING=1`, stop accepting, end
//!     the runs, drain requests (10 s at most); audit `daemon.stop` and record it; checkpoint
//!     the WAL; remove the runtime files, then the helper copy; release the locks.

mod limits;
mod listeners;
mod locks;
mod run_record;
mod runtime_files;
mod sandbox;
mod sign_in;
mod stop;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Result;
use kaged_auth::{DEFAULT_LAUNCH_TTL_SECS, Mechanism, Secret};
use kaged_config::{DeploymentMode, FlagOverrides, LocalConfig, ModeDecision, Settings};
use kaged_server::{BoundListener, ConnectionLimits, DaemonInfo, ServerState};
use kaged_store::Store;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use sign_in::{launch_url, random_bytes};

use crate::cli::StartArgs;
use crate::{Failure, config_for_start, host};
use locks::Locks;
use run_record::RunRecord;
use runtime_files::RuntimeFiles;
use stop::{StopSignals, notify_systemd};

/// Lifetime of the token in the ready line when stderr goes to the systemd journal.
const JOURNAL_LAUNCH_TTL_SECS: u64 = 60;

/// What step 1 resolved, for [`serve`].
struct Start {
    decision: ModeDecision,
    settings: Settings,
    local_path: PathBuf,
    local: LocalConfig,
    mechanism: Mechanism,
    /// The default `config.toml` to write on a first per-user launch.
    first_launch_text: Option<String>,
    uid: u32,
    /// TCP listeners that expose plain HTTP beyond this host (warned about once bound).
    plain_http: Vec<SocketAddr>,
}

/// Steps 1 and 2, then [`serve`].
pub async fn run(args: StartArgs, mode_flag: Option<DeploymentMode>) -> Result<(), Failure> {
    let facts = host::gather();
    let flags = FlagOverrides {
        bind: args.bind.clone(),
        insecure: args.insecure,
        insecure_readonly: args.insecure_readonly,
        no_sandbox: args.no_sandbox,
    };
    let (decision, settings, first_launch_text) =
        config_for_start(&facts, mode_flag, args.config.as_deref(), flags)?;
    let local_path = kaged_config::local_config_path(&facts.env, &settings.config_file);
    let local = crate::read_local(&facts, &settings)?;
    let mechanism = sign_in::mechanism(&settings, &decision)?;
    // An unsafe listener is a configuration problem: refused (exit 2) before anything is written.
    let plain_http = listeners::check_listeners(&settings, &mechanism)
        .map_err(|e| Failure::Config(e.to_string()))?;
    crate::logging::init(&settings.log_operational, settings.log_level)
        .map_err(Failure::Runtime)?;
    for warning in &local.warnings {
        eprintln!("kaged: warning: {warning}");
    }
    let start = Start {
        decision,
        settings,
        local_path,
        local,
        mechanism,
        first_launch_text,
        uid: facts.uid,
        plain_http,
    };
    serve(start).await.map_err(Failure::Runtime)
}

/// Steps 3 to 13.
async fn serve(start: Start) -> Result<()> {
    let Start {
        decision,
        settings,
        local_path,
        local,
        mechanism,
        first_launch_text,
        uid,
        plain_http,
    } = start;
    log_mode(&decision, &settings);
    if let Some(text) = first_launch_text {
        runtime_files::write_first_config(&settings, &text)?;
    }
    let limits = limits::connection_limits(&settings, limits::raise_open_file_limit());

    let mut signals = StopSignals::install()?;
    let runtime_dir = &decision.paths.runtime_dir;
    let locks = Locks::take(&decision, &settings.home, uid)?;

    let store = open_storage(&settings, runtime_dir).await?;

    let listening = listeners::listen(&settings, uid, &plain_http).await?;
    let base = listening.base.clone();

    let nonce = Secret::from_random(random_bytes()?);
    let mut files = RuntimeFiles::write_auth_cookie(runtime_dir, &nonce)?;
    let record = RunRecord::begin(&settings, &store, &decision, uid, listening.local).await?;
    files.write_discovery(runtime_dir, &record.discovery(&base))?;

    let mut warnings = sandbox::auth_warnings(&mechanism, &base);
    // Removed once the daemon stopped (after its runs ended).
    let (sandbox, helper_copy) = sandbox::prepare(&settings, &mut warnings).await;

    let launch_enabled = matches!(mechanism, Mechanism::LaunchUrl);
    let policy = sign_in::policy(
        &settings,
        mechanism,
        &nonce,
        &listening.tcp_addrs,
        record.operator.clone(),
    );
    let info = DaemonInfo {
        version: record.version.clone(),
        pid: record.pid,
        started_at_ms: record.started_at_ms,
        url: base.clone(),
        decision: decision.clone(),
        settings: settings.clone(),
        warnings: warnings.texts,
        warning_headers: warnings.headers,
        local_path,
        local,
        sandbox,
    };
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let state = Arc::new(ServerState::new(
        policy,
        info,
        store.clone(),
        record.audit.clone(),
        shutdown_rx.clone(),
    ));
    // Before ready: a client that finds the daemon finds its projects too, and the runs
    // its holders kept while no daemon ran.
    kaged_server::restore_projects(&state).await;
    let taken = kaged_server::reattach_runs(&state).await;
    if taken > 0 {
        tracing::info!(runs = taken, "took up the runs their holders kept");
    }
    let server = start_serving(&state, listening.listeners, shutdown_rx, limits);

    tracing::info!(url = %base, pid = record.pid, "listening");
    announce_ready(&base, &nonce, launch_enabled)?;

    let (signal, kill_runs) = tokio::select! {
        signal = signals.wait() => (signal, false),
        _ = state.stop_requested.notified() => match state.kill_runs_requested() {
            true => ("kaged stop --kill-runs", true),
            false => ("kaged stop", false),
        },
    };
    let kept = stop::drain(signal, kill_runs, &state, &shutdown_tx, server).await;
    record.end(&store, signal).await?;
    store.close().await?;
    drop(files);
    // Runs kept in holders may still be building cages that bind it (the next start sweeps it).
    match helper_copy {
        Some(copy) if kept > 0 => copy.leave(),
        other => drop(other),
    }
    drop(locks);
    tracing::info!("stopped");
    Ok(())
}

fn log_mode(decision: &ModeDecision, settings: &Settings) {
    tracing::info!(
        mode = decision.mode.describe(),
        reason = %decision.reason,
        config = %settings.config_file.display(),
        data = %settings.home.display(),
        "deployment mode chosen"
    );
}

/// Step 6: claim the database for this daemon (a second daemon on it is refused, exit 1,
/// naming the first), open and migrate it, then sweep what an earlier daemon left.
async fn open_storage(settings: &Settings, runtime_dir: &Path) -> Result<Store> {
    let store = Store::open_for_daemon(&settings.storage_url)?;
    tracing::info!(database = %store.describe(), schema = store.schema_version().await?, "storage ready");
    sweep_leftovers(&store, runtime_dir).await;
    Ok(store)
}

/// Sweep what an earlier kaged killed outright left (run cgroups, egress sockets, old seccomp
/// directories). Runs only with both locks held and before any run starts, so nothing swept
/// belongs to a live daemon of this runtime and data directory.
async fn sweep_leftovers(store: &Store, runtime_dir: &Path) {
    // Runs whose holders still answer go on: their groups are theirs (taken up before ready).
    let holders = kaged_server::holder_dir(runtime_dir);
    let held: Vec<String> = tokio::task::spawn_blocking(move || {
        kaged_holder::discover(&holders)
            .into_iter()
            .filter_map(|found| {
                found
                    .socket
                    .file_stem()
                    .and_then(|s| s.to_str())
                    .map(str::to_string)
            })
            .collect()
    })
    .await
    .unwrap_or_default();
    let runs: Vec<String> = match store.live_sessions().await {
        Ok(sessions) => sessions
            .iter()
            .map(|s| kaged_server::run_name(&s.id).to_string())
            .filter(|name| !held.contains(name))
            .collect(),
        Err(e) => {
            // Their cgroups are kept (they may not be ours); the rest is still swept.
            tracing::error!(error = %e, "cannot list unfinished sessions to sweep their cgroups");
            Vec::new()
        }
    };
    let egress = kaged_server::egress_dir(runtime_dir);
    let swept = tokio::task::spawn_blocking(move || {
        let runs: Vec<&str> = runs.iter().map(String::as_str).collect();
        kaged_spawn::sweep(&runs, &egress)
    })
    .await
    .unwrap_or_default();
    if !swept.is_empty() {
        tracing::info!("swept what an earlier kaged left: {swept}");
    }
}

/// Step 11: build the router (here and nowhere else) and serve it on every listener until
/// `shutdown` turns true.
fn start_serving(
    state: &Arc<ServerState>,
    listeners: Vec<BoundListener>,
    shutdown: watch::Receiver<bool>,
    limits: ConnectionLimits,
) -> JoinHandle<std::io::Result<()>> {
    kaged_server::spawn_background(state);
    let app = kaged_server::router(state.clone());
    tokio::spawn(kaged_server::serve_all(listeners, app, shutdown, limits))
}

/// Step 12: the ready line on stderr, then `READY=1`.
fn announce_ready(base: &str, nonce: &Secret, launch_enabled: bool) -> Result<()> {
    // Under systemd the line lands in the journal, which others may read: make that token
    // short-lived (the service's operator uses `kaged auth open` anyway).
    let printed_ttl = if std::env::var_os("JOURNAL_STREAM").is_some() {
        JOURNAL_LAUNCH_TTL_SECS
    } else {
        DEFAULT_LAUNCH_TTL_SECS
    };
    if launch_enabled {
        eprintln!(
            "kaged: ready — launch URL: {}",
            launch_url(base, nonce, printed_ttl)?
        );
    } else {
        eprintln!(
            "kaged: ready — listening on {base} (sign-in through the sidecar; no launch URL)"
        );
    }
    notify_systemd(sd_notify::NotifyState::Ready);
    Ok(())
}
