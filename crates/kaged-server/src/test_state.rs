//! The crate's in-process test daemon: a launch-URL `ServerState` over a temporary directory, as
//! `kaged start` builds one for the operator `user:ann`, minus listeners and background tasks.

#![allow(clippy::unwrap_used)] // test code: a panic is a failure report

use std::net::SocketAddr;
use std::sync::Arc;

use kaged_auth::{AllowedHosts, Mechanism, Policy, Secret};
use kaged_config::{DeploymentMode, Facts, FlagOverrides, decide_mode, resolve};
use kaged_store::Store;

use crate::audit::{AuditLog, now_ms};
use crate::state::{DaemonInfo, ServerState};

/// The daemon's nonce (the local operator's credential).
pub(crate) fn nonce() -> Secret {
    Secret::new("n".repeat(64))
}

pub(crate) struct TestState {
    pub state: Arc<ServerState>,
    pub store: Store,
    /// Held so `shutdown` stays open while the test runs.
    pub _stop: tokio::sync::watch::Sender<bool>,
    pub shutdown: tokio::sync::watch::Receiver<bool>,
    pub _home: tempfile::TempDir,
}

/// A per-user daemon's state whose Host allowlist and URL name `addr`.
pub(crate) fn test_state(addr: SocketAddr) -> TestState {
    let home = tempfile::tempdir().unwrap();
    let facts = Facts {
        uid: 1000,
        user_name: Some("ann".into()),
        env: [(
            "KAGED_HOME".to_string(),
            home.path().to_str().unwrap().to_string(),
        )]
        .into(),
        existing_dirs: Default::default(),
    };
    let decision = decide_mode(&facts, Some(DeploymentMode::User)).unwrap();
    let settings = resolve(
        &decision,
        &home.path().join("config.toml"),
        None,
        &Default::default(),
        &FlagOverrides::default(),
    )
    .unwrap();
    std::fs::create_dir_all(&settings.home).unwrap();
    let store = Store::open(&settings.storage_url).unwrap();
    let audit = AuditLog::open(&home.path().join("audit.jsonl"), store.clone()).unwrap();
    let policy = Policy {
        allowed: AllowedHosts::for_listeners(&[addr], &[]),
        nonce: nonce(),
        mechanism: Mechanism::LaunchUrl,
        operator: "user:ann".into(),
        bootstrap_token: None,
        require_token_identity: false,
    };
    let info = DaemonInfo {
        version: "test".into(),
        pid: std::process::id(),
        started_at_ms: now_ms(),
        url: format!("http://{addr}"),
        decision,
        settings,
        warnings: Vec::new(),
        warning_headers: Vec::new(),
        local_path: home.path().join("local.toml"),
        local: Default::default(),
        sandbox: Default::default(),
    };
    let (stop, shutdown) = tokio::sync::watch::channel(false);
    let state = Arc::new(ServerState::new(
        policy,
        info,
        store.clone(),
        audit,
        shutdown.clone(),
    ));
    TestState {
        state,
        store,
        _stop: stop,
        shutdown,
        _home: home,
    }
}
