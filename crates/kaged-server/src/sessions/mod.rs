//! The session manager: runs of command agents, terminals and tasks, each on a PTY of its own
//! inside its project's cage.
//!
//! - State: every change goes through `kaged_session::state::apply` in
//!   [`Sessions::transition`], is stored (row and transition in one transaction) and is
//!   published on the event stream; the transition id is the stream's cursor, and changes are
//!   published in id order (`Sessions::store_and_publish`).
//! - Output: one thread per run reads the PTY, writes each chunk to the run's transcript file
//!   (0600) *before* anyone sees it, then appends it to the in-memory log and wakes the
//!   viewers (`runner.rs`). So what a viewer acknowledged is on disk even if kaged is killed.
//! - Viewers pull from the log (or the transcript file for older bytes) at their own pace: a
//!   slow or stalled viewer costs nothing and never slows the run.
//! - Input and resizes go through a bounded queue to a writer thread, so a program that does
//!   not read its input never blocks a WebSocket handler.
//!
//! Files: `manager.rs` (the `Sessions` manager and transitions), `deps.rs` (what it needs from
//! the daemon), `live.rs` (one run in memory; the lock order), `start.rs` (the start
//! decision), `runner.rs` (the run's threads and tasks), `screen.rs` (the screen follower),
//! `egress.rs` (a run's egress proxy and its audit), `stop.rs` (kill, wall time, pids
//! watchdog), `transcript.rs` (the files), `retention.rs`, `http.rs` and `pty.rs` (routes),
//! `panics.rs` (the run threads' panic handling), `agent_log.rs` (a model agent's event log:
//! stored, then published; followed from any `seq`), `agent_ws.rs` (its WebSocket),
//! `conversation/` (model agents: the cage's tool executor, the agent loop, their routes) and
//! `approval/` (tool calls waiting for the operator's decision, and their routes).

mod acp;
mod agent_log;
mod agent_ws;
pub(crate) mod approval;
pub(crate) mod conversation;
mod deps;
pub(crate) mod egress;
mod held;
mod held_away;
mod held_pipes;
pub use held::{HolderSettings, holder_dir};
pub(crate) use held_pipes::HeldLink;
pub(crate) mod http;
mod live;
mod manager;
mod panics;
mod pty;
mod retention;
pub(crate) mod runner;
mod screen;
pub(crate) mod start;
mod stop;
mod transcript;

#[cfg(test)]
mod agent_ws_tests;
#[cfg(test)]
mod tests;

use std::sync::Mutex;

use serde_json::{Value, json};

pub use agent_ws::events as agent_events;
pub use approval::Approvals;
pub use conversation::{abort, conversation, messages};
pub use deps::{Deps, LoadedProject, Projects, RunSettings};
pub use http::{create, get, kill, list, list_project, prune, transcript};
pub use live::Live;
pub use manager::Sessions;
pub use pty::attach;

use crate::audit::now_ms;
use crate::error::ApiError;
use kaged_store::Transition;

/// A change of state as published on the event stream.
#[derive(Debug, Clone)]
pub struct RunEvent {
    pub transition: Transition,
}

impl RunEvent {
    /// The JSON an events client receives. `run.started`/`run.ended` mark the edges the UI
    /// cares about; every change is also a `session.state`.
    pub fn to_json(&self) -> Value {
        let t = &self.transition;
        let kind = match t.state.as_str() {
            "queued" => "session.created",
            "running" => "run.started",
            "exited" | "failed" | "killed" => "run.ended",
            _ => "session.state",
        };
        json!({
            "type": kind,
            "cursor": t.id,
            "session": t.session_id,
            "state": t.state,
            "at_ms": t.at_ms,
            "actor": t.actor,
            "detail": t.detail,
        })
    }
}

/// Input for a run's writer thread.
pub(crate) enum Input {
    Bytes(Vec<u8>),
    Resize(u16, u16),
}

/// Lock a mutex whose data stays consistent even if a holder panicked (every critical section
/// here leaves its data whole).
pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A new session id: 16 random bytes, hex.
fn new_id() -> Result<String, ApiError> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes)
        .map_err(|e| ApiError::internal(format!("no randomness for a session id: {e}")))?;
    Ok(hex::encode(bytes))
}

/// Whether `principal` may type into, resize or kill a run `created_by` someone. On a shared
/// box (sidecar, user tokens, trusted proxy) people control their own runs only; the local
/// operator (nonce, launch-URL session), the bootstrap token and `--insecure` control all.
pub(crate) fn may_control(principal: &kaged_auth::Principal, created_by: &str) -> bool {
    use kaged_auth::AuthMethod::*;
    match principal.method {
        Sidecar | IdentityToken | TrustedProxy => principal.id == created_by,
        LoginCookie | Nonce | Insecure | BootstrapToken => true,
        InsecureReadonly => false,
    }
}

/// The name of a session's run: its cgroups (`kaged-NAME`) and its egress socket
/// (`NAME.sock`) are named after it, so the daemon's start can sweep what a killed one left.
pub fn run_name(id: &str) -> &str {
    id.get(..16).unwrap_or(id)
}

/// Every cage's default limits, from `[sandbox] pids`, `memory_mb` and `wall_time_secs`.
pub fn default_limits(settings: &kaged_config::Settings) -> kaged_cage::Limits {
    let l = settings.cage_limits;
    kaged_cage::Limits {
        memory_mb: l.memory_mb,
        cpu_percent: None,
        pids: l.pids,
        wall_time_secs: l.wall_time_secs,
    }
}

/// Where the egress proxy sockets of runs live.
pub fn egress_dir(runtime_dir: &std::path::Path) -> std::path::PathBuf {
    runtime_dir.join("egress")
}

/// Ids are ours (hex); anything else in a URL is refused before it reaches a path.
pub(crate) fn valid_id(id: &str) -> bool {
    id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Background upkeep: mark what an earlier daemon left unfinished, apply transcript
/// retention (now and hourly), forget long-ended runs, and look at the run holders (for
/// status reports) every minute.
pub async fn housekeeping(sessions: Sessions) {
    sessions.recover().await;
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(60));
    let mut prune = tokio::time::interval(retention::PRUNE_EVERY);
    let mut shutdown = sessions.deps().shutdown.clone();
    loop {
        tokio::select! {
            _ = tick.tick() => {
                sessions.sweep(now_ms());
                sessions.look_for_holders().await;
                if let Err(e) = sessions.approvals().expire_overdue().await {
                    tracing::error!(error = %e, "cannot deny the approvals past their deadline");
                }
            }
            // The first tick is at once: retention runs at start.
            _ = prune.tick() => {
                if let Err(e) = retention::prune(&sessions, false, "kaged", None).await {
                    tracing::error!(error = %e.message, "transcript retention failed");
                }
            }
            _ = shutdown.changed() => return,
        }
    }
}
