//! `kaged start`: resolve the configuration, open storage, listen, authenticate, serve, and shut
//! down cleanly on SIGTERM/SIGINT.

use std::fs::File;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use kaged_auth::{
    AllowedHosts, DEFAULT_LAUNCH_TTL_SECS, Mechanism, Policy, Secret, mint_launch_token,
};
use kaged_config::{
    AuthMechanism, DeploymentMode, FlagOverrides, Listener, ModeDecision, Settings,
};
use kaged_server::{
    AuditLog, AuditRecord, BoundListener, DaemonInfo, ListenerInfo, ServerState, Socket, now_ms,
};
use kaged_store::Store;
use serde_json::json;
use tokio::net::TcpListener;

use crate::cli::StartArgs;
use crate::runtime::{self, AUTH_COOKIE_FILE, DISCOVERY_FILE, Discovery};
use crate::{Failure, config_for_start, host};

/// Lifetime of the token in the ready line when stderr goes to the systemd journal.
const JOURNAL_LAUNCH_TTL_SECS: u64 = 60;

/// How long in-flight requests get to finish after a stop signal.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

pub fn random_bytes<const N: usize>() -> Result<[u8; N]> {
    let mut b = [0u8; N];
    getrandom::fill(&mut b).map_err(|e| anyhow!("the OS random number generator failed: {e}"))?;
    Ok(b)
}

/// The URL browsers should use for a listener: loopback stands in for "all interfaces".
pub fn base_url(addr: SocketAddr) -> String {
    let ip = match addr.ip() {
        IpAddr::V4(v4) if v4.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(v6) if v6.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    match ip {
        IpAddr::V4(v4) => format!("http://{v4}:{}", addr.port()),
        IpAddr::V6(v6) => format!("http://[{v6}]:{}", addr.port()),
    }
}

pub fn launch_url(base: &str, nonce: &Secret, ttl_secs: u64) -> Result<String> {
    let expires_at = (now_ms() / 1000) as u64 + ttl_secs;
    let token = mint_launch_token(nonce, random_bytes::<16>()?, expires_at);
    Ok(format!("{base}/launch?token={}", token.expose()))
}

/// Removes the runtime files when the daemon stops, however `run` returns.
struct RuntimeFiles(Vec<PathBuf>);

impl Drop for RuntimeFiles {
    fn drop(&mut self) {
        for p in &self.0 {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// SIGTERM and SIGINT handlers, installed before readiness is announced so a stop request that
/// arrives right after "ready" is still a graceful one.
struct StopSignals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl StopSignals {
    fn install() -> Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(StopSignals {
            term: signal(SignalKind::terminate()).context("cannot handle SIGTERM")?,
            int: signal(SignalKind::interrupt()).context("cannot handle SIGINT")?,
        })
    }

    async fn wait(&mut self) -> &'static str {
        tokio::select! {
            _ = self.term.recv() => "SIGTERM",
            _ = self.int.recv() => "SIGINT",
        }
    }
}

fn notify_systemd(state: sd_notify::NotifyState<'_>) {
    if std::env::var_os("NOTIFY_SOCKET").is_some()
        && let Err(e) = sd_notify::notify(false, &[state])
    {
        tracing::warn!(error = %e, "cannot notify systemd");
    }
}

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
    let mechanism = match settings.auth {
        AuthMechanism::LaunchUrl => Mechanism::LaunchUrl,
        AuthMechanism::Insecure => Mechanism::Insecure,
        AuthMechanism::InsecureReadonly => Mechanism::InsecureReadonly,
        AuthMechanism::Sidecar => Mechanism::Sidecar {
            nonce: sidecar_nonce(std::env::var(SIDECAR_NONCE_VAR).ok()).map_err(|e| {
                // Most often: someone trying kaged as root, where system-wide is the default.
                let hint = if decision.rule == kaged_config::ModeRule::SystemUser {
                    format!(
                        "\n  ({}, so system-wide mode with sidecar sign-in was chosen; to run your own daemon with a launch URL instead: kaged start --mode user)",
                        decision.reason
                    )
                } else {
                    String::new()
                };
                Failure::Config(format!("{e}{hint}"))
            })?,
        },
    };
    // An unsafe listener is a configuration problem: refused (exit 2) before anything is written.
    let plain_http =
        check_listeners(&settings, &mechanism).map_err(|e| Failure::Config(e.to_string()))?;
    crate::logging::init(&settings.log_operational, settings.log_level)
        .map_err(Failure::Runtime)?;
    for warning in &local.warnings {
        eprintln!("kaged: warning: {warning}");
    }
    serve(
        decision,
        settings,
        (local_path, local),
        mechanism,
        first_launch_text,
        facts.uid,
        &plain_http,
    )
    .await
    .map_err(Failure::Runtime)
}

/// The environment variable holding the secret the sidecar sends as `X-Kaged-Auth-Nonce`.
pub const SIDECAR_NONCE_VAR: &str = "KAGED_AUTH_SIDECAR_NONCE";
const MIN_SIDECAR_NONCE_LEN: usize = 32;

/// Sidecar mode refuses to start without a strong shared nonce.
fn sidecar_nonce(value: Option<String>) -> Result<Secret, String> {
    let how = format!(
        "generate one with `openssl rand -hex 32`, put `{SIDECAR_NONCE_VAR}=<value>` in the daemon's environment (e.g. /etc/kaged/env, mode 0600) and configure the sidecar to send the same value as X-Kaged-Auth-Nonce"
    );
    let value = value.map(|v| v.trim().to_string()).unwrap_or_default();
    if value.is_empty() {
        return Err(format!(
            "sidecar authentication is on ([auth] mode, or the system-wide default) but {SIDECAR_NONCE_VAR} is not set; {how}"
        ));
    }
    let distinct: std::collections::BTreeSet<char> = value.chars().collect();
    if value.len() < MIN_SIDECAR_NONCE_LEN || distinct.len() < 8 {
        return Err(format!(
            "{SIDECAR_NONCE_VAR} is too weak (at least {MIN_SIDECAR_NONCE_LEN} random characters are needed); {how}"
        ));
    }
    Ok(Secret::new(value))
}

async fn serve(
    decision: ModeDecision,
    settings: Settings,
    (local_path, local_config): (std::path::PathBuf, kaged_config::LocalConfig),
    mechanism: Mechanism,
    first_launch_text: Option<String>,
    uid: u32,
    plain_http: &[SocketAddr],
) -> Result<()> {
    tracing::info!(
        mode = decision.mode.describe(),
        reason = %decision.reason,
        config = %settings.config_file.display(),
        data = %settings.home.display(),
        "deployment mode chosen"
    );
    if let Some(text) = first_launch_text {
        write_first_config(&settings, &text)?;
    }
    let open_files = raise_open_file_limit();
    let limits = connection_limits(&settings, open_files);

    let mut signals = StopSignals::install()?;
    let runtime_dir = &decision.paths.runtime_dir;
    if decision.paths.runtime_dir_is_fallback {
        tracing::warn!(
            runtime = %runtime_dir.display(),
            "XDG_RUNTIME_DIR is not set; using a private fallback directory"
        );
    }
    runtime::ensure_private_dir(runtime_dir, uid)?;
    let Some(runtime_lock) = runtime::lock_runtime(runtime_dir)? else {
        let at = runtime::read_discovery(runtime_dir)
            .ok()
            .flatten()
            .map(|d| format!(" (pid {}) at {}", d.pid, d.url))
            .unwrap_or_default();
        return Err(anyhow!(
            "kaged is already running{at}; see `kaged status`, or stop it first"
        ));
    };
    runtime::ensure_data_dir(&settings.home)?;
    let lock_path = settings.home.join("kaged.lock");
    let home_lock = File::create(&lock_path)
        .with_context(|| format!("cannot create {}", lock_path.display()))?;
    match home_lock.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            return Err(anyhow!(
                "another kaged is already using {} (lock {} is held); stop it or set another [daemon] home",
                settings.home.display(),
                lock_path.display()
            ));
        }
        Err(std::fs::TryLockError::Error(e)) => {
            return Err(e).with_context(|| format!("cannot lock {}", lock_path.display()));
        }
    }

    let store = Store::open(&settings.storage_url)?;
    tracing::info!(database = %store.describe(), schema = store.schema_version().await?, "storage ready");
    sweep_leftovers(&store, runtime_dir).await;

    let listeners = bind_listeners(&settings, uid).await?;
    let tcp_addrs: Vec<SocketAddr> = listeners
        .iter()
        .filter_map(|l| match &l.socket {
            Socket::Tcp(t) => t.local_addr().ok(),
            Socket::Unix { .. } => None,
        })
        .collect();
    let Some(local) = tcp_addrs.first().copied() else {
        return Err(anyhow!(
            "kaged needs at least one TCP listener for the browser and the CLI; add one such as \"127.0.0.1:7777\" to [daemon] listen"
        ));
    };
    let base = base_url(local);
    if !plain_http.is_empty() {
        // Once, at start: the per-user guide's VPN bind is fine only on an encrypted overlay.
        let listeners: Vec<String> = plain_http.iter().map(ToString::to_string).collect();
        tracing::warn!(
            "plain HTTP on {}: launch URLs, session cookies and all traffic cross that network unencrypted; this address belongs on an encrypted overlay (WireGuard, Tailscale), not a LAN or the internet",
            listeners.join(", ")
        );
    }

    let nonce = Secret::from_random(random_bytes()?);
    let cookie_path = runtime::write_private_file(runtime_dir, AUTH_COOKIE_FILE, nonce.expose())?;
    let mut cleanup = RuntimeFiles(vec![
        cookie_path,
        runtime_dir.join(runtime::LAUNCH_PAGE_FILE),
    ]);

    let audit_path = match &settings.log_audit {
        kaged_config::AuditSink::File(p) => p.clone(),
    };
    let audit = AuditLog::open(&audit_path, store.clone())
        .with_context(|| format!("cannot open the audit log {}", audit_path.display()))?;
    let started_at_ms = now_ms();
    let pid = std::process::id();
    let version = env!("CARGO_PKG_VERSION").to_string();
    let (run, unclean) = store
        .begin_run(
            pid,
            version.clone(),
            decision.mode.to_string(),
            started_at_ms,
        )
        .await?;
    if let Some(prev) = unclean {
        tracing::warn!(
            previous_pid = prev.pid,
            "the previous kaged (pid {}) did not shut down cleanly",
            prev.pid
        );
    }
    let operator = format!("user:{}", host::user_name(uid));
    audit
        .record(AuditRecord {
            kind: "daemon.start",
            success: true,
            identity: Some(operator.clone()),
            source: None,
            detail: json!({"pid": pid, "version": version, "mode": decision.mode, "bind": local.to_string()}),
        })
        .await;

    let discovery = Discovery {
        pid,
        url: base.clone(),
        version: version.clone(),
        started_at_ms,
    };
    cleanup.0.push(runtime::write_private_file(
        runtime_dir,
        DISCOVERY_FILE,
        &serde_json::to_string(&discovery)?,
    )?);

    let mut warnings = Vec::new();
    let mut warning_headers = Vec::new();
    if let Mechanism::InsecureReadonly = mechanism {
        tracing::warn!(
            "--insecure-readonly: anyone who can reach {base} may read without credentials"
        );
        warnings.push(
            "insecure-readonly: reads need no authentication (--insecure-readonly)".to_string(),
        );
        warning_headers.push("insecure-readonly");
    }
    if let Mechanism::Insecure = mechanism {
        tracing::warn!(
            "--insecure: NO AUTHENTICATION; anyone who can reach {base} controls this kaged"
        );
        warnings.push("insecure: authentication is off (--insecure)".to_string());
        warning_headers.push("insecure");
    }
    let mut sandbox = kaged_server::SandboxState::default();
    // Removed once the daemon stopped (after its runs ended).
    let mut helper_copy = None;
    if settings.sandbox_mode == kaged_config::SandboxMode::Disabled {
        tracing::warn!("the sandbox is disabled: work will run uncaged as this user");
        warnings.push("no-sandbox: work runs without a sandbox".to_string());
        warning_headers.push("no-sandbox");
    } else {
        // The preflight of `kaged doctor`: caged work is refused (never run uncaged) when a
        // cage cannot be built here.
        let checks = tokio::task::spawn_blocking(kaged_spawn::preflight)
            .await
            .unwrap_or_default();
        for check in &checks {
            match &check.outcome {
                Ok(detail) => tracing::info!(check = check.name, "{detail}"),
                Err(problem) => tracing::warn!(
                    check = check.name,
                    fix = check.fix.as_deref().unwrap_or(""),
                    "{problem}"
                ),
            }
        }
        sandbox.problem = kaged_spawn::sandbox_problem(&checks);
        sandbox.limits = checks
            .iter()
            .find(|c| c.name == "limits")
            .map(|c| match &c.outcome {
                Ok(d) | Err(d) => d.clone(),
            });
        if sandbox.problem.is_none() {
            // Cages bind this copy, not the binary on disk: an upgrade that replaces the file
            // leaves running daemons able to start runs.
            let root = kaged_spawn::effective_uid() == 0;
            match tokio::task::spawn_blocking(move || kaged_spawn::HelperCopy::create(root)).await {
                Ok(Ok(copy)) => {
                    tracing::info!(path = %copy.path().display(), "cages bind a private copy of this binary");
                    sandbox.helper = Some(copy.path().to_path_buf());
                    helper_copy = Some(copy);
                }
                Ok(Err(e)) => tracing::warn!(
                    error = %e,
                    "cannot keep a private copy of this binary; cages bind it from /proc/self/exe, so replacing it on disk stops new runs until kaged restarts"
                ),
                Err(e) => tracing::warn!(error = %e, "cannot keep a private copy of this binary"),
            }
        }
        if let Some(problem) = &sandbox.problem {
            eprintln!(
                "kaged: warning: no cage can be built on this host ({problem}); caged work will be refused until it is fixed: run `kaged doctor`"
            );
            warnings.push(format!(
                "sandbox-unavailable: {problem}; caged work is refused (kaged doctor)"
            ));
        }
    }
    if let Mechanism::Sidecar { .. } = mechanism {
        tracing::info!(
            allowed_hosts = ?settings.allowed_hosts,
            "sidecar authentication: requests must carry X-Kaged-Auth-Nonce and X-Kaged-User-Id from the sidecar"
        );
    }
    let launch_enabled = matches!(mechanism, Mechanism::LaunchUrl);
    let policy = Policy {
        allowed: AllowedHosts::for_listeners(&tcp_addrs, &settings.allowed_hosts),
        nonce: nonce.clone(),
        mechanism,
        operator,
        bootstrap_token: settings
            .auth_token
            .as_ref()
            .map(|t| Secret::new(t.expose().to_string())),
        require_token_identity: settings.require_token_identity,
    };
    let info = DaemonInfo {
        version,
        pid,
        started_at_ms,
        url: base.clone(),
        decision: decision.clone(),
        settings: settings.clone(),
        warnings,
        warning_headers,
        local_path,
        local: local_config,
        sandbox,
    };
    let (shutdown_tx, shutdown_rx) = tokio::sync::watch::channel(false);
    let shutdown_rx_serve = shutdown_rx.clone();
    let state = std::sync::Arc::new(ServerState::new(
        policy,
        info,
        store.clone(),
        audit.clone(),
        shutdown_rx,
    ));
    // Before ready: a client that finds the daemon finds its projects too.
    kaged_server::restore_projects(&state).await;
    kaged_server::spawn_background(&state);
    let app = kaged_server::router(state.clone());

    let server = tokio::spawn(kaged_server::serve_all(
        listeners,
        app,
        shutdown_rx_serve,
        limits,
    ));

    tracing::info!(url = %base, pid, "listening");
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
            launch_url(&base, &nonce, printed_ttl)?
        );
    } else {
        eprintln!(
            "kaged: ready — listening on {base} (sign-in through the sidecar; no launch URL)"
        );
    }
    notify_systemd(sd_notify::NotifyState::Ready);

    let signal = signals.wait().await;
    tracing::info!(signal, "stopping: finishing in-flight requests");
    notify_systemd(sd_notify::NotifyState::Stopping);
    let _ = shutdown_tx.send(true);
    // Runs end first (their viewers are told), then the connections drain.
    kaged_server::stop_sessions(&state).await;
    let mut server = server;
    match tokio::time::timeout(DRAIN_TIMEOUT, &mut server).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(e))) => tracing::error!(error = %e, "server error during shutdown"),
        Ok(Err(e)) => tracing::error!(error = %e, "server task failed"),
        Err(_) => {
            tracing::warn!(
                "requests still running after {}s; stopping anyway",
                DRAIN_TIMEOUT.as_secs()
            );
            server.abort();
        }
    }

    audit
        .record(AuditRecord {
            kind: "daemon.stop",
            success: true,
            identity: None,
            source: None,
            detail: json!({"pid": pid, "signal": signal}),
        })
        .await;
    store.end_run(run.id, now_ms()).await?;
    store.close().await?;
    drop(cleanup);
    drop(helper_copy);
    drop(home_lock);
    drop(runtime_lock);
    tracing::info!("stopped");
    Ok(())
}

/// Raise the soft limit on open files to the hard one, so slow or idle clients run into the
/// connection limits rather than the descriptor limit. Returns the soft limit in force.
fn raise_open_file_limit() -> Option<u64> {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let before = getrlimit(Resource::Nofile);
    let raised = Rlimit {
        current: before.maximum,
        maximum: before.maximum,
    };
    if before.current == before.maximum {
        tracing::info!(limit = ?before.current, "open file limit (already the hard limit)");
        return before.current;
    }
    match setrlimit(Resource::Nofile, raised) {
        Ok(()) => {
            tracing::info!(from = ?before.current, to = ?before.maximum, "open file limit raised to the hard limit");
            before.maximum
        }
        Err(e) => {
            tracing::warn!(limit = ?before.current, error = %e, "open file limit: cannot raise it to the hard limit");
            before.current
        }
    }
}

/// The connection limits of `[daemon]`. The cap on waiting connections stays below half the
/// descriptor limit, so idle clients can never take every descriptor.
fn connection_limits(
    settings: &Settings,
    open_files: Option<u64>,
) -> kaged_server::ConnectionLimits {
    let asked = settings.max_waiting_connections;
    let max_waiting = match open_files {
        Some(n) if asked > n / 2 => {
            let capped = (n / 2).max(1);
            tracing::warn!(
                asked,
                capped,
                open_files = n,
                "max_waiting_connections is above half the open file limit; using half"
            );
            capped
        }
        _ => asked,
    };
    let limits = kaged_server::ConnectionLimits {
        header_timeout: Duration::from_secs(settings.header_timeout_secs),
        idle_timeout: Duration::from_secs(settings.idle_timeout_secs),
        max_waiting: usize::try_from(max_waiting).unwrap_or(usize::MAX),
    };
    tracing::info!(
        header_timeout_secs = settings.header_timeout_secs,
        idle_timeout_secs = settings.idle_timeout_secs,
        max_waiting_connections = limits.max_waiting,
        "connection limits"
    );
    limits
}

/// Sweep what an earlier kaged killed outright left (run cgroups, egress sockets, old seccomp
/// directories). Runs only with both locks held and before any run starts, so nothing swept
/// belongs to a live daemon of this runtime and data directory.
async fn sweep_leftovers(store: &Store, runtime_dir: &std::path::Path) {
    let runs: Vec<String> = match store.live_sessions().await {
        Ok(sessions) => sessions
            .iter()
            .map(|s| kaged_server::run_name(&s.id).to_string())
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

/// The plain-HTTP exposure guardrail of every TCP listener (`kaged_auth::check_listener`:
/// loopback always; anything else one literal non-public address, with launch-URL sign-in, or
/// with a bearer token and the private-network opt-in, or under tokenless
/// `--insecure-readonly`). Returns the listeners that expose plain HTTP beyond this host.
fn check_listeners(
    settings: &Settings,
    mechanism: &Mechanism,
) -> Result<Vec<SocketAddr>, kaged_auth::ListenerRefusal> {
    let auth = kaged_auth::ListenerAuth {
        launch_url: matches!(mechanism, Mechanism::LaunchUrl),
        insecure: matches!(mechanism, Mechanism::Insecure),
        insecure_readonly: matches!(mechanism, Mechanism::InsecureReadonly),
        bearer_token: settings.auth_token.is_some(),
        trust_private_network: settings.trust_private_network,
    };
    let mut plain_http = Vec::new();
    for spec in &settings.listeners {
        if let Listener::Tcp(addr) = spec
            && kaged_auth::check_listener(*addr, auth)? == kaged_auth::Exposure::PlainHttpPrivate
        {
            plain_http.push(*addr);
        }
    }
    Ok(plain_http)
}

/// Bind every configured listener (checked by [`check_listeners`] before). Unix sockets go in a
/// private directory with mode 0600.
async fn bind_listeners(settings: &Settings, uid: u32) -> Result<Vec<BoundListener>> {
    let mut bound = Vec::new();
    for spec in &settings.listeners {
        let info = ListenerInfo {
            label: spec.to_string(),
            unix: matches!(spec, Listener::Unix(_)),
            trusted_proxy: settings.trusted_proxy_listeners.contains(spec),
        };
        let socket = match spec {
            Listener::Tcp(addr) => {
                Socket::Tcp(TcpListener::bind(addr).await.map_err(|e| {
                    if e.kind() == std::io::ErrorKind::AddrInUse {
                        anyhow!(
                            "cannot listen on {addr}: address already in use; pick another with `kaged start --bind {}` or set [daemon] bind in {}",
                            SocketAddr::new(addr.ip(), addr.port().wrapping_add(1).max(1024)),
                            settings.config_file.display()
                        )
                    } else {
                        anyhow!("cannot listen on {addr}: {e}")
                    }
                })?)
            }
            Listener::Unix(path) => {
                if let Some(dir) = path.parent() {
                    runtime::ensure_socket_dir(dir, uid)?;
                }
                let (listener, path) = kaged_server::bind_unix(path.clone()).await?;
                Socket::Unix { listener, path }
            }
        };
        bound.push(BoundListener { socket, info });
    }
    Ok(bound)
}

fn write_first_config(settings: &Settings, text: &str) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    let path = &settings.config_file;
    if let Some(dir) = path.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
    }
    // create_new: never overwrite a file the operator wrote in the meantime.
    let mut file = match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("cannot write {}", path.display())),
    };
    file.write_all(text.as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))?;
    tracing::info!(path = %path.display(), "first launch: wrote the default configuration");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sidecar_nonce_must_be_present_and_strong() {
        let e = sidecar_nonce(None).unwrap_err();
        assert!(
            e.contains("is not set") && e.contains("openssl rand -hex 32"),
            "{e}"
        );
        let e = sidecar_nonce(Some("short".into())).unwrap_err();
        assert!(e.contains("too weak"), "{e}");
        let e = sidecar_nonce(Some("a".repeat(64))).unwrap_err();
        assert!(e.contains("too weak"), "{e}");
        let ok = sidecar_nonce(Some(format!(" {} ", "0123456789abcdef".repeat(4)))).unwrap();
        assert_eq!(ok.expose().len(), 64);
    }
}
