//! Stopping: the SIGTERM/SIGINT handlers (installed in step 4, before anything readiness
//! depends on), systemd notifications, and the drain of step 13.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use kaged_server::ServerState;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// How long in-flight requests get to finish after a stop signal.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// SIGTERM and SIGINT handlers, installed before readiness is announced so a stop request that
/// arrives right after "ready" is still a graceful one.
pub(super) struct StopSignals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl StopSignals {
    pub(super) fn install() -> Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(StopSignals {
            term: signal(SignalKind::terminate()).context("cannot handle SIGTERM")?,
            int: signal(SignalKind::interrupt()).context("cannot handle SIGINT")?,
        })
    }

    /// The name of the first stop signal to arrive.
    pub(super) async fn wait(&mut self) -> &'static str {
        tokio::select! {
            _ = self.term.recv() => "SIGTERM",
            _ = self.int.recv() => "SIGINT",
        }
    }
}

/// Tell systemd (`READY=1`, `STOPPING=1`) when it started us with a notify socket.
pub(super) fn notify_systemd(state: sd_notify::NotifyState<'_>) {
    if std::env::var_os("NOTIFY_SOCKET").is_some()
        && let Err(e) = sd_notify::notify(false, &[state])
    {
        tracing::warn!(error = %e, "cannot notify systemd");
    }
}

/// After a stop signal: stop accepting, let go of the runs kept in holders and end the others
/// (their viewers are told), then let the connections drain for at most [`DRAIN_TIMEOUT`].
/// Returns how many runs go on without the daemon.
pub(super) async fn drain(
    signal: &str,
    kill_runs: bool,
    state: &Arc<ServerState>,
    shutdown: &watch::Sender<bool>,
    mut server: JoinHandle<std::io::Result<()>>,
) -> usize {
    tracing::info!(signal, "stopping: finishing in-flight requests");
    notify_systemd(sd_notify::NotifyState::Stopping);
    let _ = shutdown.send(true);
    // Runs end first (their viewers are told), then the connections drain.
    let kept = kaged_server::stop_sessions(state, kill_runs).await;
    kaged_server::stop_plugins(state).await;
    if kept > 0 {
        tracing::info!(
            runs = kept,
            "runs go on in their holders; the next start takes them up"
        );
    }
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
    kept
}
