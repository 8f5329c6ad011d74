//! The session manager: runs of command agents, terminals and tasks, each on a PTY of its own
//! inside its project's cage.
//!
//! - State: every change goes through `kaged_session::state::apply`, is stored (row and
//!   transition in one transaction) and is published on the event stream; the transition id is
//!   the stream's cursor, and changes are published in id order (`Sessions::store_and_publish`).
//! - Output: one thread per run reads the PTY, writes each chunk to the run's transcript file
//!   (0600) *before* anyone sees it, then appends it to the in-memory log and the screen model
//!   and wakes the viewers. So what a viewer acknowledged is on disk even if kaged is killed.
//! - Viewers pull from the log (or the transcript file for older bytes) at their own pace: a
//!   slow or stalled viewer costs nothing and never slows the run.
//! - Input and resizes go through a bounded queue to a writer thread, so a program that does
//!   not read its input never blocks a WebSocket handler.

mod http;
mod panics;
mod pty;
mod retention;
mod run;
mod transcript;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use kaged_cage::RunKind;
use kaged_session::log::OutputLog;
use kaged_session::screen::Screen;
use kaged_session::state::{Event, State, StateKind, apply};
use kaged_store::{StateChange, Store, Transition};
use serde_json::{Value, json};
use tokio::sync::{broadcast, watch};

pub use http::{create, get, kill, list, list_project, prune, transcript};
pub use pty::attach;

use crate::audit::{AuditRecord, now_ms};
use crate::error::ApiError;
use crate::state::{ServerState, lock};

/// Output kept in memory per run; older output is read from the transcript file.
const LOG_CAPACITY: usize = 256 * 1024;
/// Ended runs stay in memory this long (their final screen for late viewers).
const KEEP_ENDED_MS: i64 = 10 * 60 * 1000;

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

/// What viewers share with the run's threads.
pub(crate) struct Output {
    pub log: OutputLog,
}

/// The screen model and the offset it has processed up to (a consistent snapshot point).
pub(crate) struct ScreenAt {
    pub screen: Screen,
    pub offset: u64,
    /// An ended run's final screen, as snapshot bytes: the terminal model (about 100 KiB for
    /// 24x80) is dropped then, since nothing changes it any more.
    pub frozen: Option<Vec<u8>>,
}

impl ScreenAt {
    pub fn new(rows: u16, cols: u16) -> ScreenAt {
        ScreenAt {
            screen: Screen::new(rows, cols),
            offset: 0,
            frozen: None,
        }
    }

    /// The screen as a viewer gets it first.
    pub fn snapshot(&self) -> Vec<u8> {
        match &self.frozen {
            Some(bytes) => bytes.clone(),
            None => self.screen.snapshot(),
        }
    }
}

/// A run the daemon holds in memory (running, or ended a short while ago).
pub struct Live {
    pub id: String,
    pub project: String,
    pub kind: RunKind,
    pub name: String,
    pub created_by: String,
    pub transcript: PathBuf,
    pub(crate) state: Mutex<State>,
    /// Taken by every change of `state` (see [`transition`]).
    pub(crate) changing: tokio::sync::Mutex<()>,
    pub(crate) output: Mutex<Output>,
    pub(crate) screen: Mutex<ScreenAt>,
    pub(crate) size: Mutex<(u16, u16)>,
    /// The end offset of the output, bumped after every chunk: viewers wait on it.
    pub(crate) end: watch::Sender<u64>,
    /// The state's name, for viewers to notice changes.
    pub(crate) state_kind: watch::Sender<StateKind>,
    pub(crate) input: Mutex<Option<std::sync::mpsc::SyncSender<Input>>>,
    pub(crate) killer: Mutex<Option<kaged_spawn::Killer>>,
    pub(crate) ended_at_ms: Mutex<Option<i64>>,
    /// Viewers attached now (capped, see `pty.rs`).
    pub(crate) viewers: std::sync::atomic::AtomicUsize,
}

impl Live {
    pub fn state(&self) -> State {
        lock(&self.state).clone()
    }

    pub fn size(&self) -> (u16, u16) {
        *lock(&self.size)
    }

    /// Output `[at, min(end, at + max))` from memory, or `None` when memory no longer holds
    /// `at` (the transcript file always does: it is written first).
    pub(crate) fn read_memory(&self, at: u64, end: u64, max: usize) -> Option<Vec<u8>> {
        let max = max.min(usize::try_from(end.saturating_sub(at)).unwrap_or(max));
        match lock(&self.output).log.read_from(at, max) {
            kaged_session::log::Read::Bytes { data, .. } => Some(data),
            _ => None,
        }
    }

    /// Queue input or a resize; `false` when the run takes no more (ended, or the queue is
    /// full because the program stopped reading).
    pub(crate) fn send_input(&self, input: Input) -> bool {
        lock(&self.input)
            .as_ref()
            .is_some_and(|tx| tx.try_send(input).is_ok())
    }
}

/// Live runs and the stream of their state changes.
pub struct Sessions {
    pub(crate) live: Mutex<HashMap<String, Arc<Live>>>,
    pub(crate) events: broadcast::Sender<RunEvent>,
    /// Held from a state change's write to its publication (see [`Sessions::store_and_publish`]).
    order: Arc<tokio::sync::Mutex<()>>,
    pub(crate) limits: kaged_session::limits::Limits,
    pub(crate) transcripts: PathBuf,
    /// Runs created before this instant belong to an earlier daemon.
    pub(crate) started_at_ms: i64,
}

impl Sessions {
    pub fn new(transcripts: PathBuf) -> Sessions {
        Sessions {
            live: Mutex::new(HashMap::new()),
            events: broadcast::channel(1024).0,
            order: Arc::new(tokio::sync::Mutex::new(())),
            limits: Default::default(),
            transcripts,
            started_at_ms: now_ms(),
        }
    }

    /// Where the transcript of session `id` starts (its head file; see `transcript.rs`).
    pub(crate) fn transcript_path(&self, id: &str) -> PathBuf {
        self.transcripts.join(format!("{id}.out"))
    }

    pub fn subscribe(&self) -> broadcast::Receiver<RunEvent> {
        self.events.subscribe()
    }

    /// Store a state change with `write` and publish what was stored. Every transition goes
    /// through here. The store numbers transitions in the order it writes them; the events
    /// stream follows the broadcast from a cursor and skips ids at or below it, so an event
    /// published after a higher id would be lost to it for good. Holding one lock from the
    /// write to the send makes publication order equal id order. The write and the send run
    /// as a task of their own: a caller that goes away (a client hanging up on a kill) cannot
    /// leave a change stored but unpublished.
    /// Store the changes held while storage failed and publish them, under the same order as
    /// every other change (`crate::storage`), so they too go out in id order. Returns how many
    /// were stored and whether one still failed.
    pub(crate) async fn flush_held(&self, store: &kaged_store::Store) -> (usize, bool) {
        let _order = self.order.lock().await;
        let (stored, failed) = store.flush_held().await;
        let count = stored.len();
        for t in stored {
            let _ = self.events.send(RunEvent { transition: t });
        }
        (count, failed.is_some())
    }

    pub(crate) async fn store_and_publish<F>(&self, write: F) -> kaged_store::Result<Transition>
    where
        F: std::future::Future<Output = kaged_store::Result<Transition>> + Send + 'static,
    {
        let order = self.order.clone();
        let events = self.events.clone();
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

    pub fn get(&self, id: &str) -> Option<Arc<Live>> {
        lock(&self.live).get(id).cloned()
    }

    /// Live (not ended) runs, for limits and shutdown.
    pub(crate) fn running(&self) -> Vec<Arc<Live>> {
        lock(&self.live)
            .values()
            .filter(|l| !l.state().is_terminal())
            .cloned()
            .collect()
    }

    /// Forget runs that ended long enough ago (their transcript stays on disk).
    pub(crate) fn sweep(&self, now: i64) {
        lock(&self.live)
            .retain(|_, l| lock(&l.ended_at_ms).is_none_or(|t| now - t < KEEP_ENDED_MS));
    }

    /// Mark runs an earlier daemon left unfinished as failed: the raw PTY backend cannot
    /// outlive its daemon, and their transcript is kept.
    pub async fn recover(&self, store: &Store) {
        let stale = match store.live_sessions().await {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "cannot list unfinished sessions");
                return;
            }
        };
        for record in stale
            .into_iter()
            .filter(|r| r.created_at_ms < self.started_at_ms)
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
}

/// Apply `event` to a live run, store the change and publish it. Returns the new state, or
/// `None` when the event does not apply (e.g. a kill racing the exit).
///
/// The run's end is audited here, by whichever change ends it (exit, kill, failed spawn), so
/// exactly once, and before memory, the row or the event stream show it: a client that sees
/// the run ended finds its `session.end` record.
pub(crate) async fn transition(
    state: &ServerState,
    live: &Live,
    event: Event,
    actor: &str,
) -> Option<State> {
    // Held from the decision to its publication: changes of one run never interleave.
    let _changing = live.changing.lock().await;
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
            tracing::debug!(session = %live.id, error = %e, "state change ignored");
            return None;
        }
    };
    if next.is_terminal() {
        audit_end(state, live, &next, exit).await;
    }
    *lock(&live.state) = next.clone();
    live.state_kind.send_replace(next.kind());
    let ended = next.is_terminal();
    if ended {
        *lock(&live.ended_at_ms) = Some(now_ms());
        *lock(&live.input) = None;
        // An ended run stays in memory for late viewers (KEEP_ENDED_MS), but its output is
        // in the transcript: keeping up to LOG_CAPACITY (and the buffer's slack) per ended
        // run held ~660 KiB each. Its screen is kept as a snapshot only (caught up first; the
        // end is copied out of its watch before `catch_up` takes the output lock).
        let end = *live.end.borrow();
        run::catch_up(live, end);
        {
            let mut screen = lock(&live.screen);
            screen.frozen = Some(screen.screen.snapshot());
            screen.screen = Screen::new(1, 1);
        }
        lock(&live.output).log.release_persisted();
        kaged_spawn::release_free_memory();
    }
    let (exit_code, reason) = match &next {
        State::Exited { code, .. } => (Some(*code), None),
        State::Failed { reason } => (None, Some(reason.clone())),
        State::Killed { by } | State::Stopping { by, .. } => (None, Some(by.clone())),
        _ => (None, None),
    };
    let mut detail = json!({
        "project": live.project,
        "kind": live.kind.as_str(),
        "name": live.name,
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
        session_id: live.id.clone(),
        state: next.as_str().into(),
        at_ms: now_ms(),
        actor: actor.into(),
        detail,
        exit_code,
        reason,
        ended,
    };
    let store = state.store.clone();
    match state
        .runs
        .store_and_publish(async move { store.change_state(change).await })
        .await
    {
        Ok(_) => {}
        // Held by the store and stored in order when storage recovers (`crate::storage`).
        Err(e) => crate::storage::change_not_stored(&live.id, &e),
    }
    Some(next)
}

/// The `session.end` record of a run that reached `end`; `exit` is the process's status when
/// an exit ended it.
async fn audit_end(
    state: &ServerState,
    live: &Live,
    end: &State,
    exit: Option<(i32, Option<i32>)>,
) {
    let (reason, by) = match end {
        State::Failed { reason } => (Some(reason.as_str()), None),
        State::Killed { by } => (None, Some(by.as_str())),
        _ => (None, None),
    };
    let output_bytes = *live.end.borrow();
    state
        .audit
        .record(AuditRecord {
            kind: "session.end",
            success: !matches!(end, State::Failed { .. }),
            identity: Some(live.created_by.clone()),
            source: None,
            detail: json!({
                "session": live.id,
                "project": live.project,
                "state": end.as_str(),
                "exit_code": exit.map(|(code, _)| code),
                "signal": exit.and_then(|(_, signal)| signal),
                "output_bytes": output_bytes,
                "reason": reason,
                "by": by,
            }),
        })
        .await;
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
/// retention (now and hourly), and forget long-ended runs.
pub async fn housekeeping(state: Arc<crate::state::ServerState>) {
    state.runs.recover(&state.store).await;
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(60));
    let mut prune = tokio::time::interval(retention::PRUNE_EVERY);
    let mut shutdown = state.shutdown.clone();
    loop {
        tokio::select! {
            _ = tick.tick() => state.runs.sweep(now_ms()),
            // The first tick is at once: retention runs at start.
            _ = prune.tick() => {
                if let Err(e) = retention::prune(&state, false, "kaged", None).await {
                    tracing::error!(error = %e.message, "transcript retention failed");
                }
            }
            _ = shutdown.changed() => return,
        }
    }
}

/// End every live run (the daemon is stopping; a raw PTY cannot outlive it) and wait until
/// their ends are recorded, at most `grace` plus the kill.
pub async fn stop_all(state: &Arc<crate::state::ServerState>) {
    let running = state.runs.running();
    let mut waits = Vec::new();
    for live in running {
        let state = state.clone();
        waits.push(tokio::spawn(async move {
            run::abort(&state, &live, "kaged: daemon stopping").await;
            // The run's thread records the exit; give it a moment to land.
            run::wait_ended(&live, std::time::Duration::from_secs(2)).await;
        }));
    }
    for w in waits {
        let _ = w.await;
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use kaged_store::SessionRecord;

    fn record(id: &str) -> SessionRecord {
        SessionRecord {
            id: id.into(),
            project: "p".into(),
            kind: "task".into(),
            name: "t".into(),
            command: vec!["true".into()],
            caged: true,
            state: "queued".into(),
            exit_code: None,
            reason: None,
            created_by: "tester".into(),
            created_at_ms: 0,
            ended_at_ms: None,
            transcript_pruned_at_ms: None,
            output_bytes: None,
            dropped: None,
        }
    }

    fn change(id: &str, state: &str) -> StateChange {
        StateChange {
            session_id: id.into(),
            state: state.into(),
            at_ms: 0,
            actor: "tester".into(),
            detail: json!({}),
            exit_code: None,
            reason: None,
            ended: false,
        }
    }

    /// Many runs changing state at once (session creations and transitions, each from a task
    /// of its own on a multi-threaded runtime, as run threads and handlers do): a subscriber
    /// of the stream sees every stored id exactly once, in increasing order. The events
    /// WebSocket relies on it: it skips ids at or below its cursor.
    #[test]
    fn concurrent_publishers_publish_in_id_order() {
        const PUBLISHERS: usize = 16;
        const CHANGES: usize = 40;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(4)
            .enable_all()
            .build()
            .unwrap();
        let tmp = tempfile::tempdir().unwrap();
        let store =
            Store::open(&kaged_config::StorageUrl::Sqlite(tmp.path().join("k.db"))).unwrap();
        let sessions = Arc::new(Sessions::new(tmp.path().join("transcripts")));
        let mut events = sessions.subscribe();
        let stored: Vec<i64> = runtime.block_on(async {
            let mut tasks = Vec::new();
            for p in 0..PUBLISHERS {
                let (store, sessions) = (store.clone(), sessions.clone());
                tasks.push(tokio::spawn(async move {
                    let id = format!("{p:032x}");
                    let mut ids = Vec::new();
                    let (s, r, first) = (store.clone(), record(&id), change(&id, "queued"));
                    let t = sessions
                        .store_and_publish(async move { s.create_session(r, first).await })
                        .await
                        .unwrap();
                    ids.push(t.id);
                    for n in 0..CHANGES {
                        let (s, c) = (store.clone(), change(&id, &format!("step-{n}")));
                        let t = sessions
                            .store_and_publish(async move { s.change_state(c).await })
                            .await
                            .unwrap();
                        ids.push(t.id);
                    }
                    ids
                }));
            }
            let mut all = Vec::new();
            for t in tasks {
                all.extend(t.await.unwrap());
            }
            all.sort_unstable();
            all
        });
        assert_eq!(stored.len(), PUBLISHERS * (CHANGES + 1));
        let mut seen = Vec::new();
        while let Ok(e) = events.try_recv() {
            seen.push(e.transition.id);
        }
        let out_of_order: Vec<(i64, i64)> = seen
            .windows(2)
            .filter(|w| w[0] >= w[1])
            .map(|w| (w[0], w[1]))
            .collect();
        assert!(
            out_of_order.is_empty(),
            "{} events published after a higher id (a cursor-following client loses each): {:?}",
            out_of_order.len(),
            &out_of_order[..out_of_order.len().min(10)]
        );
        assert_eq!(seen, stored, "every stored id published exactly once");
    }
}
