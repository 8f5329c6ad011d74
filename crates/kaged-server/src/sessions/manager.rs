//! `Sessions`: the session manager. It holds the live runs, the stream of their state changes
//! and what runs depend on ([`Deps`]); every change of a run's state goes through
//! [`Sessions::transition`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use kaged_session::state::{Event, State, apply};
use kaged_store::{StateChange, Store, Transition};
use serde_json::{Value, json};
use tokio::sync::broadcast;

use super::agent_log::AgentLog;
use super::conversation::Control;
use super::deps::Deps;
use super::live::Live;
use super::{RunEvent, lock};
use crate::audit::{AuditRecord, now_ms};

/// Ended runs stay in memory this long (their final screen for late viewers).
const KEEP_ENDED_MS: i64 = 10 * 60 * 1000;

/// The session manager: a cheap handle (clones share everything).
#[derive(Clone)]
pub struct Sessions {
    shared: Arc<Shared>,
}

struct Shared {
    deps: Deps,
    live: Mutex<HashMap<String, Arc<Live>>>,
    events: broadcast::Sender<RunEvent>,
    /// Held from a state change's write to its publication (see [`Sessions::store_and_publish`]).
    order: Arc<tokio::sync::Mutex<()>>,
    limits: kaged_session::limits::Limits,
    /// Runs created before this instant belong to an earlier daemon.
    started_at_ms: i64,
    /// The event logs of model-agent sessions (`agent_log.rs`).
    agent_log: AgentLog,
    /// The controls of conversations held in memory (by session id).
    conversations: Mutex<HashMap<String, Arc<Control>>>,
    /// Tool calls waiting for the operator's decision.
    approvals: super::Approvals,
    /// The last look into the holders' directory and when (`Sessions::holders_report`),
    /// refreshed by housekeeping, so a status request asks no holder itself.
    pub(super) holders_seen: Mutex<Option<(std::time::Instant, Vec<kaged_holder::Found>)>>,
}

impl Sessions {
    pub fn new(deps: Deps) -> Sessions {
        let agent_log = AgentLog::new(deps.store.clone());
        let approvals = super::Approvals::new(
            deps.store.clone(),
            deps.audit.clone(),
            agent_log.clone(),
            deps.settings.approval_timeout_secs,
            deps.notifier.clone(),
        );
        Sessions {
            shared: Arc::new(Shared {
                live: Mutex::new(HashMap::new()),
                events: broadcast::channel(1024).0,
                order: Arc::new(tokio::sync::Mutex::new(())),
                limits: Default::default(),
                started_at_ms: now_ms(),
                agent_log,
                conversations: Mutex::new(HashMap::new()),
                approvals,
                holders_seen: Mutex::new(None),
                deps,
            }),
        }
    }

    pub(super) fn shared_holders_seen(
        &self,
    ) -> &Mutex<Option<(std::time::Instant, Vec<kaged_holder::Found>)>> {
        &self.shared.holders_seen
    }

    pub(crate) fn deps(&self) -> &Deps {
        &self.shared.deps
    }

    /// Runs created before this instant belong to an earlier daemon.
    pub(crate) fn started_at_ms(&self) -> i64 {
        self.shared.started_at_ms
    }

    /// The event logs of model-agent sessions: append (stored, then published) and follow.
    pub fn agent_log(&self) -> &AgentLog {
        &self.shared.agent_log
    }

    /// Tool calls waiting for the operator's decision.
    pub fn approvals(&self) -> &super::Approvals {
        &self.shared.approvals
    }

    pub(crate) fn limits(&self) -> &kaged_session::limits::Limits {
        &self.shared.limits
    }

    /// Where the transcript of session `id` starts (its head file; see `transcript.rs`).
    pub(crate) fn transcript_path(&self, id: &str) -> std::path::PathBuf {
        self.deps().settings.transcripts.join(format!("{id}.out"))
    }

    pub fn subscribe(&self) -> broadcast::Receiver<RunEvent> {
        self.shared.events.subscribe()
    }

    pub fn get(&self, id: &str) -> Option<Arc<Live>> {
        lock(&self.shared.live).get(id).cloned()
    }

    /// Hold `live` in memory (before its first event is out: a client reacting to it finds
    /// the run), with its controls when it is a conversation.
    pub(crate) fn insert(&self, live: Arc<Live>, conversation: Option<Arc<Control>>) {
        let id = live.id().to_string();
        let mut conversations = lock(&self.shared.conversations);
        match conversation {
            Some(c) => conversations.insert(id.clone(), c),
            None => conversations.remove(&id),
        };
        drop(conversations);
        lock(&self.shared.live).insert(id, live);
    }

    pub(crate) fn remove(&self, id: &str) {
        lock(&self.shared.live).remove(id);
        lock(&self.shared.conversations).remove(id);
    }

    /// The controls of the conversation `id` held in memory.
    pub(crate) fn conversation_control(&self, id: &str) -> Option<Arc<Control>> {
        lock(&self.shared.conversations).get(id).cloned()
    }

    /// Live (not ended) runs, for limits and shutdown.
    pub(crate) fn running(&self) -> Vec<Arc<Live>> {
        lock(&self.shared.live)
            .values()
            .filter(|l| !l.state().is_terminal())
            .cloned()
            .collect()
    }

    /// Ids of the runs that may still write their transcript (retention leaves them alone).
    pub(crate) fn producing(&self) -> std::collections::HashSet<String> {
        lock(&self.shared.live)
            .values()
            .filter(|l| l.producing())
            .map(|l| l.id().to_string())
            .collect()
    }

    /// Forget runs that ended long enough ago (their transcript stays on disk), and the memory
    /// of idle agent event logs.
    pub(crate) fn sweep(&self, now: i64) {
        let mut live = lock(&self.shared.live);
        live.retain(|_, l| l.ended_at_ms().is_none_or(|t| now - t < KEEP_ENDED_MS));
        lock(&self.shared.conversations).retain(|id, _| live.contains_key(id));
        drop(live);
        self.shared.agent_log.sweep(now);
    }

    /// Store the changes held while storage failed and publish them, under the same order as
    /// every other change (`crate::storage`), so they too go out in id order. Returns how many
    /// were stored and whether one still failed.
    pub(crate) async fn flush_held(&self, store: &Store) -> (usize, bool) {
        let _order = self.shared.order.lock().await;
        let (stored, failed) = store.flush_held().await;
        let count = stored.len();
        for t in stored {
            let _ = self.shared.events.send(RunEvent { transition: t });
        }
        (count, failed.is_some())
    }

    /// Store a state change with `write` and publish what was stored. Every transition goes
    /// through here. The store numbers transitions in the order it writes them; the events
    /// stream follows the broadcast from a cursor and skips ids at or below it, so an event
    /// published after a higher id would be lost to it for good. Holding one lock from the
    /// write to the send makes publication order equal id order. The write and the send run
    /// as a task of their own: a caller that goes away (a client hanging up on a kill) cannot
    /// leave a change stored but unpublished.
    pub(crate) async fn store_and_publish<F>(&self, write: F) -> kaged_store::Result<Transition>
    where
        F: std::future::Future<Output = kaged_store::Result<Transition>> + Send + 'static,
    {
        let order = self.shared.order.clone();
        let events = self.shared.events.clone();
        tokio::spawn(async move {
            let _order = order.lock_owned().await;
            let t = write.await?;
            let _ = events.send(RunEvent {
                transition: t.clone(),
            });
            Ok(t)
        })
        .await
        .map_err(|e| kaged_store::StoreError::Worker(e.to_string()))?
    }

    /// Mark runs an earlier daemon left unfinished as failed (their transcript is kept):
    /// those not taken up again from their holders ([`Sessions::reattach`]).
    pub async fn recover(&self) {
        let store = &self.deps().store;
        let stale = match store.live_sessions().await {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "cannot list unfinished sessions");
                return;
            }
        };
        for record in stale
            .into_iter()
            .filter(|r| r.created_at_ms < self.shared.started_at_ms && self.get(&r.id).is_none())
        {
            let reason = match record.state.as_str() {
                "queued" => kaged_session::state::DAEMON_LOST_QUEUED_REASON,
                _ => kaged_session::state::DAEMON_LOST_REASON,
            };
            let change = StateChange {
                session_id: record.id.clone(),
                state: "failed".into(),
                at_ms: now_ms(),
                actor: "kaged".into(),
                detail: json!({"project": record.project, "kind": record.kind, "name": record.name, "reason": reason}),
                exit_code: None,
                reason: Some(reason.into()),
                ended: true,
            };
            let store = store.clone();
            match self
                .store_and_publish(async move { store.change_state(change).await })
                .await
            {
                Ok(_) => {
                    tracing::warn!(session = %record.id, "a session of the previous kaged run was left unfinished; marked failed, transcript kept");
                }
                Err(e) => {
                    tracing::error!(session = %record.id, error = %e, "cannot mark a stale session")
                }
            }
        }
    }

    /// Apply `event` to a live run, store the change and publish it. Returns the new state,
    /// or `None` when the event does not apply (e.g. a kill racing the exit).
    ///
    /// The run's end is audited here, by whichever change ends it (exit, kill, failed spawn),
    /// so exactly once, and before memory, the row or the event stream show it: a client that
    /// sees the run ended finds its `session.end` record.
    pub(crate) async fn transition(&self, live: &Live, event: Event, actor: &str) -> Option<State> {
        // Held from the decision to its publication: changes of one run never interleave.
        let _changing = live.begin_change().await;
        let exit = match &event {
            Event::Exit { code, signal } => Some((*code, *signal)),
            _ => None,
        };
        let current = live.state();
        let next = match apply(&current, event) {
            // A repeated kill changes nothing, so nothing is stored or published.
            Ok(next) if next == current => return Some(next),
            Ok(next) => next,
            Err(e) => {
                tracing::debug!(session = %live.id(), error = %e, "state change ignored");
                return None;
            }
        };
        if next.is_terminal() {
            self.audit_end(live, &next, exit).await;
        }
        if let State::Failed { reason } = &next {
            let info = live.info();
            self.deps()
                .notifier
                .send(crate::notify::Notification::run_failed(
                    &info.project,
                    &info.id,
                    reason,
                ));
        }
        live.set_state(next.clone(), now_ms());
        let (exit_code, reason) = match &next {
            State::Exited { code, .. } => (Some(*code), None),
            State::Failed { reason } => (None, Some(reason.clone())),
            State::Killed { by } | State::Stopping { by, .. } => (None, Some(by.clone())),
            _ => (None, None),
        };
        let info = live.info();
        let mut detail = json!({
            "project": info.project,
            "kind": info.kind.as_str(),
            "name": info.name,
        });
        if let (Some(obj), Ok(Value::Object(fields))) =
            (detail.as_object_mut(), serde_json::to_value(&next))
        {
            for (k, v) in fields {
                if k != "state" && !v.is_null() {
                    obj.insert(k, v);
                }
            }
        }
        let change = StateChange {
            session_id: info.id.clone(),
            state: next.as_str().into(),
            at_ms: now_ms(),
            actor: actor.into(),
            detail,
            exit_code,
            reason,
            ended: next.is_terminal(),
        };
        let store = self.deps().store.clone();
        match self
            .store_and_publish(async move { store.change_state(change).await })
            .await
        {
            Ok(_) => {}
            // Held by the store and stored in order when storage recovers (`crate::storage`).
            Err(e) => crate::storage::change_not_stored(&info.id, &e),
        }
        Some(next)
    }

    /// The `session.end` record of a run that reached `end`; `exit` is the process's status
    /// when an exit ended it.
    async fn audit_end(&self, live: &Live, end: &State, exit: Option<(i32, Option<i32>)>) {
        let (reason, by) = match end {
            State::Failed { reason } => (Some(reason.as_str()), None),
            State::Killed { by } => (None, Some(by.as_str())),
            _ => (None, None),
        };
        let info = live.info();
        self.deps()
            .audit
            .record(AuditRecord {
                kind: "session.end",
                success: !matches!(end, State::Failed { .. }),
                identity: Some(info.created_by.clone()),
                source: None,
                detail: json!({
                    "session": info.id,
                    "project": info.project,
                    "state": end.as_str(),
                    "exit_code": exit.map(|(code, _)| code),
                    "signal": exit.and_then(|(_, signal)| signal),
                    "output_bytes": live.end(),
                    "reason": reason,
                    "by": by,
                }),
            })
            .await;
    }

    /// The daemon is stopping: with `on_daemon_stop = "keep"` (and not `kill_runs`), let go of
    /// the runs in holders (they go on; the next start takes them up; an egress proxy is
    /// stopped, its directory kept, and served again by the next start); end every other live
    /// run and wait until their ends are recorded, at most the kill's grace plus a moment.
    /// Returns how many runs it let go of.
    pub async fn stop_all(&self, kill_runs: bool) -> usize {
        let keep =
            !kill_runs && self.deps().settings.on_daemon_stop == kaged_config::OnDaemonStop::Keep;
        let mut kept = 0;
        let mut waits = Vec::new();
        for live in self.running() {
            if keep && let Some(super::live::RunControl::Held(held)) = live.control() {
                held.detach(&live);
                let sessions = self.clone();
                // In parallel: each waits for its proxy's last audit records.
                waits.push(tokio::spawn(async move {
                    held.let_go_egress().await;
                    let egress = held.proxied.then_some("stopped until the next start");
                    sessions
                        .deps()
                        .audit
                        .record(AuditRecord {
                            kind: "session.detached",
                            success: true,
                            identity: Some(live.info().created_by.clone()),
                            source: None,
                            detail: json!({"session": live.id(), "project": live.info().project,
                                "pid": held.pid, "egress": egress}),
                        })
                        .await;
                }));
                kept += 1;
                continue;
            }
            let sessions = self.clone();
            waits.push(tokio::spawn(async move {
                super::stop::abort(&sessions, &live, "kaged: daemon stopping").await;
                // The run's thread records the exit; give it a moment to land.
                super::stop::wait_ended(&live, std::time::Duration::from_secs(2)).await;
            }));
        }
        for w in waits {
            let _ = w.await;
        }
        kept
    }
}
