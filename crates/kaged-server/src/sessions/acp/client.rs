//! kaged as an ACP agent's client: `initialize`, `session/new`, a `session/prompt` per turn
//! (the operator's queued messages), `session/cancel` on abort; the agent's `session/update`s
//! recorded in order, its permission requests turned into kaged approvals, and anything the
//! protocol does not allow (a line that is not JSON-RPC, an answer to a request kaged never
//! made, silence at `initialize`) ending the run with the reason. Lines are bounded; a flood of
//! updates is held back by the bounded queue between the reader and the recorder (the agent
//! then waits on its own output), never by memory.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use kaged_dsl::Tool;
use kaged_session::agent::{AgentEvent, EndReason};
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;
use tokio::net::unix::pipe;
use tokio::sync::{Mutex, mpsc, oneshot, watch};

use super::note::AcpNote;
use super::permission::{Asked, Permission};
use super::translate::{Translator, mode_to_select};
use crate::audit::AuditRecord;
use crate::sessions::conversation::Control;
use crate::sessions::{HeldLink, Sessions};

/// How long an agent may take to answer `initialize` and `session/new`.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a cancelled prompt may take to end before kaged ends the turn itself.
const CANCEL_GRACE: Duration = Duration::from_secs(10);
/// The longest line kaged reads from an agent.
const MAX_LINE: usize = 8 * 1024 * 1024;
/// Messages read ahead of the recorder.
const QUEUE: usize = 256;
/// Why the recorder stopped (set once, when it has): the agent's output ended, or it broke
/// the protocol.
type Stopped = watch::Receiver<Option<String>>;

/// Wait until the recorder stopped; why.
async fn reason(stopped: &mut Stopped) -> String {
    match stopped.wait_for(Option::is_some).await {
        Ok(why) => why.clone().unwrap_or_default(),
        Err(_) => "kaged's ACP reader stopped".into(),
    }
}

/// Why a request has no answer when the run ended first (the reader then says why).
const RUN_ENDED: &str = "the run ended";

/// `why`, or when it is only that the run ended, the reader's reason (the shim could not
/// start the agent, the agent exited, or it broke the protocol) once it has read to the end.
async fn explained(why: String, stopped: &mut Stopped) -> String {
    if why != RUN_ENDED {
        return why;
    }
    tokio::time::timeout(Duration::from_secs(2), reason(stopped))
        .await
        .unwrap_or(why)
}
/// The protocol version kaged speaks.
const PROTOCOL_VERSION: u64 = 1;

/// One ACP agent's conversation.
pub(crate) struct AcpClient {
    pub sessions: Sessions,
    pub id: String,
    pub slug: String,
    pub owner: String,
    /// The agent's name in the project file, and its `tools:` settings (the policy of its
    /// permission requests, by `acp.KIND`).
    pub name: String,
    pub tools: BTreeMap<String, Tool>,
    /// The project's `mode:` for the agent's ACP session.
    pub mode: Option<String>,
    pub control: Arc<Control>,
    /// The project as the agent sees it (the `cwd` of its ACP session).
    pub cwd: PathBuf,
}

/// What the reader hands on.
enum Incoming {
    /// A message, and the output offset just past its line.
    Message(Value, u64),
    /// A line that is not a JSON object, or too long.
    Bad(String),
}

/// The requests kaged made and waits for.
type Pending = std::sync::Mutex<HashMap<u64, oneshot::Sender<Result<Value, Value>>>>;

/// The wire towards the agent.
pub(super) struct Rpc {
    to: Mutex<pipe::Sender>,
    pub(super) next: AtomicU64,
    pending: Pending,
}

impl Rpc {
    async fn send(&self, message: &Value) -> Result<(), String> {
        let mut line = serde_json::to_vec(message).map_err(|e| e.to_string())?;
        line.push(b'\n');
        let mut to = self.to.lock().await;
        to.write_all(&line)
            .await
            .map_err(|e| format!("cannot write to the agent: {e}"))
    }

    async fn call(
        &self,
        method: &str,
        params: Value,
    ) -> Result<oneshot::Receiver<Result<Value, Value>>, String> {
        let (id, rx) = self.reserve();
        self.send_call(id, method, params).await?;
        Ok(rx)
    }

    /// The next request id, its answer awaited.
    fn reserve(&self) -> (u64, oneshot::Receiver<Result<Value, Value>>) {
        let id = self.next.fetch_add(1, Ordering::SeqCst);
        let (tx, rx) = oneshot::channel();
        crate::sessions::lock(&self.pending).insert(id, tx);
        (id, rx)
    }

    async fn send_call(&self, id: u64, method: &str, params: Value) -> Result<(), String> {
        self.send(&json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}))
            .await
    }

    async fn notify(&self, method: &str, params: Value) -> Result<(), String> {
        self.send(&json!({"jsonrpc": "2.0", "method": method, "params": params}))
            .await
    }

    pub(super) async fn answer(&self, id: Value, outcome: Result<Value, (i64, String)>) {
        let message = match outcome {
            Ok(result) => json!({"jsonrpc": "2.0", "id": id, "result": result}),
            Err((code, message)) => {
                json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}})
            }
        };
        if let Err(e) = self.send(&message).await {
            tracing::warn!(error = %e, "cannot answer the ACP agent");
        }
    }
}

/// Read the agent's lines into `tx` until its output ends; `at` is the output offset of the
/// first byte read.
async fn read_lines(from: pipe::Receiver, tx: mpsc::Sender<Incoming>, mut at: u64) {
    use crate::lines::{Line, next_line};
    let mut reader = tokio::io::BufReader::new(from);
    loop {
        let incoming = match next_line(&mut reader, MAX_LINE).await {
            Line::End => return,
            Line::TooLong => {
                at += MAX_LINE as u64 + 1;
                Incoming::Bad(format!("a line longer than {MAX_LINE} bytes"))
            }
            Line::Text(line, n) => {
                at += n as u64;
                let text = String::from_utf8_lossy(&line);
                let text = text.trim();
                if text.is_empty() {
                    continue;
                }
                match serde_json::from_str::<Value>(text) {
                    Ok(v) if v.is_object() => Incoming::Message(v, at),
                    _ => Incoming::Bad(format!("`{}`", text.chars().take(200).collect::<String>())),
                }
            }
        };
        if tx.send(incoming).await.is_err() {
            return;
        }
    }
}

/// What the recorder and the turns share.
pub(super) struct Shared {
    pub(super) client: AcpClient,
    pub(super) rpc: Rpc,
    pub(super) translator: std::sync::Mutex<Translator>,
    /// The agent's ACP session, once it has one.
    pub(super) session: std::sync::Mutex<Option<String>>,
    /// While the agent replays an earlier session (`session/load`): its updates are history
    /// kaged recorded already, not recorded again.
    pub(super) loading: std::sync::atomic::AtomicBool,
    /// Why the in-cage shim could not start the agent, when it could not.
    pub(super) cannot_start: std::sync::Mutex<Option<String>>,
    /// The run's holder, when it is in one: notes for the next daemon go there.
    pub(super) link: Option<HeldLink>,
    /// The output offset up to which every message was handled.
    pub(super) handled: AtomicU64,
    /// The `session/prompt` not answered yet.
    pub(super) prompt_id: std::sync::Mutex<Option<u64>>,
    /// Permission requests waiting for the operator.
    pub(super) asked: std::sync::Mutex<Vec<Asked>>,
}

impl Shared {
    async fn record(&self, events: Vec<AgentEvent>) {
        if events.is_empty() {
            return;
        }
        if let Err(e) = self
            .client
            .sessions
            .agent_log()
            .append(&self.client.id, None, events)
            .await
        {
            tracing::error!(session = %self.client.id, error = %e, "cannot record the ACP agent's events");
        }
    }

    /// Handle what the agent sends until its output ends or it breaks the protocol; why.
    async fn dispatch(self: Arc<Self>, mut rx: mpsc::Receiver<Incoming>) -> String {
        while let Some(incoming) = rx.recv().await {
            let message = match incoming {
                Incoming::Bad(what) => {
                    return format!("the agent wrote a line that is not JSON-RPC: {what}");
                }
                Incoming::Message(m, end) => (m, end),
            };
            let (message, end) = message;
            let method = message["method"].as_str().map(str::to_string);
            match (method, message.get("id").cloned()) {
                (Some(method), Some(id)) => self.request(&method, id, &message["params"]).await,
                (Some(method), None) => self.notification(&method, &message["params"]).await,
                (None, Some(id)) => {
                    let waiting = id
                        .as_u64()
                        .and_then(|n| crate::sessions::lock(&self.rpc.pending).remove(&n));
                    let Some(waiting) = waiting else {
                        return format!("the agent answered a request kaged never made (id {id})");
                    };
                    {
                        let mut prompt = crate::sessions::lock(&self.prompt_id);
                        if prompt.is_some() && *prompt == id.as_u64() {
                            *prompt = None;
                        }
                    }
                    let outcome = match message.get("error") {
                        Some(error) => Err(error.clone()),
                        None => Ok(message["result"].clone()),
                    };
                    let _ = waiting.send(outcome);
                }
                (None, None) => {
                    return "the agent wrote a JSON object that is neither a request, a response nor a notification".into();
                }
            }
            self.handled.store(end, Ordering::SeqCst);
            self.note();
        }
        match crate::sessions::lock(&self.cannot_start).take() {
            Some(why) => format!(
                "the agent could not be started in its cage: {why} (is the program installed, and is its directory in the cage's view?)"
            ),
            None => "the agent's output ended (it exited)".into(),
        }
    }

    async fn notification(&self, method: &str, params: &Value) {
        match method {
            "session/update" if self.loading.load(Ordering::SeqCst) => {}
            "session/update" => {
                let events = crate::sessions::lock(&self.translator).update(&params["update"]);
                self.record(events).await;
            }
            kaged_tools::acp::jsonrpc::SERVED_NOTICE => self.audit_served(params).await,
            kaged_tools::acp::jsonrpc::CANNOT_START_NOTICE => {
                *crate::sessions::lock(&self.cannot_start) =
                    Some(params["reason"].as_str().unwrap_or("unknown").to_string());
            }
            other => {
                tracing::debug!(session = %self.client.id, method = other, "ACP notification ignored")
            }
        }
    }

    async fn request(self: &Arc<Self>, method: &str, id: Value, params: &Value) {
        if method == "session/request_permission" {
            match self.permission(id.clone(), params).await {
                Permission::Now(outcome) => {
                    self.rpc.answer(id, Ok(json!({"outcome": outcome}))).await;
                }
                Permission::Ask(asked) => {
                    // Noted with this message: a next daemon waits for it too.
                    crate::sessions::lock(&self.asked).push(asked.clone());
                    self.clone().wait_for_decision(asked);
                }
            }
            return;
        }
        self.record(vec![AgentEvent::Error {
            code: "acp".into(),
            message: format!("the agent asked for `{method}`, which kaged does not serve"),
        }])
        .await;
        self.rpc
            .answer(id, Err((-32601, format!("method not found: {method}"))))
            .await;
    }

    /// The `_kaged/served` notice of the in-cage shim: an fs or terminal request it carried out.
    async fn audit_served(&self, params: &Value) {
        let c = &self.client;
        c.sessions
            .deps()
            .audit
            .record_limited(
                &c.id,
                AuditRecord {
                    kind: "acp.served",
                    success: params["ok"].as_bool().unwrap_or(false),
                    identity: Some(c.owner.clone()),
                    source: None,
                    detail: json!({"session": c.id, "project": c.slug, "agent": c.name,
                        "method": params["method"], "path": params["path"],
                        "command": params["command"], "error": params["error"]}),
                },
            )
            .await;
    }
}

/// The answer to a request, or why there is none: a JSON-RPC error, the time ran out, the
/// agent broke the protocol or exited (`stopped` is the recorder's end), or the run ended.
async fn answer_of(
    rx: oneshot::Receiver<Result<Value, Value>>,
    method: &str,
    timeout: Option<Duration>,
    stopped: &mut Stopped,
    ended: &mut watch::Receiver<bool>,
) -> Result<Value, String> {
    let limit = async {
        match timeout {
            Some(t) => tokio::time::sleep(t).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        answer = rx => match answer {
            Ok(Ok(result)) => Ok(result),
            Ok(Err(error)) => Err(format!("the agent answered `{method}` with an error: {error}")),
            Err(_) => Err(format!("the agent never answered `{method}`")),
        },
        _ = limit => Err(format!(
            "the agent did not answer `{method}` within {} s",
            timeout.map_or(0, |t| t.as_secs())
        )),
        why = reason(stopped) => Err(why),
        _ = ended.wait_for(|e| *e) => Err(RUN_ENDED.into()),
    }
}

impl AcpClient {
    /// The conversation: until the run ends or the agent breaks the protocol. A run in a
    /// holder comes with its `link`; one taken up again with the earlier daemon's note
    /// (`resume`), from which it goes on: same session, its open turn and the permission
    /// requests still waiting.
    pub(crate) async fn run(
        self,
        from: pipe::Receiver,
        to: pipe::Sender,
        mut ended: watch::Receiver<bool>,
        link: Option<HeldLink>,
        resume: Option<AcpNote>,
    ) {
        let (turns, earlier) = match &resume {
            Some(_) => (self.history().await.0, None),
            None => self.close_open_turn().await,
        };
        let read_from = link.as_ref().map_or(0, |l| l.from);
        let shared = Arc::new(Shared {
            client: self,
            rpc: Rpc {
                to: Mutex::new(to),
                next: AtomicU64::new(resume.as_ref().map_or(0, |n| n.next_id)),
                pending: Default::default(),
            },
            translator: Default::default(),
            session: std::sync::Mutex::new(resume.as_ref().and_then(|n| n.session.clone())),
            loading: Default::default(),
            cannot_start: Default::default(),
            link,
            handled: AtomicU64::new(read_from),
            prompt_id: Default::default(),
            asked: Default::default(),
        });
        // An open turn's answer, registered before anything is read.
        let open_turn = resume.as_ref().and_then(|n| n.prompt).map(|id| {
            let (tx, rx) = oneshot::channel();
            crate::sessions::lock(&shared.rpc.pending).insert(id, tx);
            *crate::sessions::lock(&shared.prompt_id) = Some(id);
            rx
        });
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(read_lines(from, tx, read_from));
        let (why_tx, mut stopped) = watch::channel(None);
        let recorder = shared.clone();
        tokio::spawn(async move {
            let why = recorder.dispatch(rx).await;
            let _ = why_tx.send(Some(why));
        });
        match resume {
            Some(note) => {
                for asked in note.asked {
                    crate::sessions::lock(&shared.asked).push(asked.clone());
                    shared.clone().wait_for_decision(asked);
                }
                shared.note();
            }
            None => {
                if let Err(why) = shared.start(earlier, &mut stopped, &mut ended).await {
                    if !shared.killed() && !shared.letting_go() {
                        let why = explained(why, &mut stopped).await;
                        shared.fail(&why, None).await;
                    }
                    return;
                }
            }
        }
        shared
            .turns(turns, open_turn, &mut stopped, &mut ended)
            .await;
    }

    /// The number of turns so far and the agent's last ACP session; a turn an earlier run
    /// left open is closed (its agent is gone), and approvals nothing waits for any more
    /// cancelled.
    async fn close_open_turn(&self) -> (u64, Option<String>) {
        let (turns, open, earlier) = self.history().await;
        let _ = self
            .sessions
            .approvals()
            .cancel_pending(
                &self.id,
                "the agent's run ended; it asks again if it still needs to",
            )
            .await;
        if open {
            let _ = self
                .sessions
                .agent_log()
                .append(
                    &self.id,
                    None,
                    vec![
                        AgentEvent::Error {
                            code: "daemon".into(),
                            message: "the turn was cut short: the agent's run ended (kaged stopped or the session was killed)".into(),
                        },
                        AgentEvent::TurnEnded {
                            reason: EndReason::Error,
                        },
                    ],
                )
                .await;
        }
        (turns, earlier)
    }
}

impl Shared {
    /// `initialize`, then `session/load` of the `earlier` session when the agent can load
    /// sessions (its replay is not recorded again), else `session/new`; the session is
    /// recorded (`acp_session`).
    async fn start(
        &self,
        earlier: Option<String>,
        stopped: &mut Stopped,
        ended: &mut watch::Receiver<bool>,
    ) -> Result<(), String> {
        let init = self
            .rpc
            .call(
                "initialize",
                json!({
                    "protocolVersion": PROTOCOL_VERSION,
                    "clientCapabilities": {"fs": {"readTextFile": true, "writeTextFile": true}, "terminal": true},
                    "clientInfo": {"name": "kaged", "version": env!("CARGO_PKG_VERSION")},
                }),
            )
            .await?;
        let answer = answer_of(init, "initialize", Some(START_TIMEOUT), stopped, ended).await?;
        let version = answer["protocolVersion"].as_u64();
        if version != Some(PROTOCOL_VERSION) {
            return Err(format!(
                "the agent speaks ACP version {}; kaged speaks version {PROTOCOL_VERSION}",
                version.map_or_else(|| "(none given)".to_string(), |v| v.to_string())
            ));
        }
        let can_load = answer["agentCapabilities"]["loadSession"].as_bool() == Some(true);
        if let Some(earlier) = earlier.filter(|_| can_load) {
            self.loading.store(true, Ordering::SeqCst);
            let load = self
                .rpc
                .call(
                    "session/load",
                    json!({"sessionId": earlier, "cwd": self.client.cwd, "mcpServers": []}),
                )
                .await?;
            let loaded = answer_of(load, "session/load", Some(START_TIMEOUT), stopped, ended).await;
            self.loading.store(false, Ordering::SeqCst);
            match loaded {
                Ok(answer) => return self.begin(&earlier, true, &answer, stopped, ended).await,
                Err(why) if *ended.borrow() || stopped.borrow().is_some() => return Err(why),
                Err(why) => {
                    self.record(vec![AgentEvent::Error {
                        code: "acp".into(),
                        message: format!("{why}; a new ACP session starts (the agent does not remember the earlier turns)"),
                    }])
                    .await;
                }
            }
        }
        let new = self
            .rpc
            .call(
                "session/new",
                json!({"cwd": self.client.cwd, "mcpServers": []}),
            )
            .await?;
        let answer = answer_of(new, "session/new", Some(START_TIMEOUT), stopped, ended).await?;
        let session = answer["sessionId"]
            .as_str()
            .ok_or("the agent's answer to `session/new` has no `sessionId`")?;
        self.begin(session, false, &answer, stopped, ended).await
    }

    /// The agent's session starts: its mode selected (`session/set_mode` when it is in
    /// another), then recorded.
    async fn begin(
        &self,
        session: &str,
        loaded: bool,
        answer: &Value,
        stopped: &mut Stopped,
        ended: &mut watch::Receiver<bool>,
    ) -> Result<(), String> {
        let mode = mode_to_select(self.client.mode.as_deref(), &answer["modes"])?;
        if let Some((mode, true)) = &mode {
            let set = self
                .rpc
                .call(
                    "session/set_mode",
                    json!({"sessionId": session, "modeId": mode}),
                )
                .await?;
            answer_of(set, "session/set_mode", Some(START_TIMEOUT), stopped, ended)
                .await
                .map_err(|why| format!("cannot select the session mode `{mode}`: {why}"))?;
        }
        *crate::sessions::lock(&self.session) = Some(session.to_string());
        self.record(vec![AgentEvent::AcpSession {
            session_id: session.to_string(),
            loaded,
            mode: mode.map(|(m, _)| m),
        }])
        .await;
        Ok(())
    }

    /// Turns, one per batch of queued operator messages, until the run ends.
    async fn turns(
        &self,
        mut turns: u64,
        mut open_turn: Option<oneshot::Receiver<Result<Value, Value>>>,
        stopped: &mut Stopped,
        ended: &mut watch::Receiver<bool>,
    ) {
        let control = self.client.control.clone();
        let session = crate::sessions::lock(&self.session)
            .clone()
            .unwrap_or_default();
        loop {
            let outcome = match open_turn.take() {
                // A turn the earlier daemon started: its answer ends it.
                Some(rx) => {
                    control.in_turn.store(true, Ordering::SeqCst);
                    self.answer_to_prompt(rx, json!(session), stopped, ended)
                        .await
                }
                None => match self.next_turn(&mut turns, &session, stopped, ended).await {
                    Some(outcome) => outcome,
                    None => return,
                },
            };
            control.in_turn.store(false, Ordering::SeqCst);
            if !self.turn_ended(outcome, stopped).await {
                return;
            }
        }
    }

    /// The next turn, once operator messages are queued: its prompt's outcome; `None` when
    /// the run ended first.
    async fn next_turn(
        &self,
        turns: &mut u64,
        session: &str,
        stopped: &mut Stopped,
        ended: &mut watch::Receiver<bool>,
    ) -> Option<Result<Value, String>> {
        let control = self.client.control.clone();
        loop {
            if !control.has_queued() {
                tokio::select! {
                    _ = control.wake.notified() => continue,
                    _ = ended.wait_for(|e| *e) => return None,
                    // Idle, the agent exited or broke the protocol: the run's end says how.
                    _ = reason(stopped) => return None,
                }
            }
            let messages = control.take();
            *turns += 1;
            let mut events: Vec<AgentEvent> = messages
                .iter()
                .map(|text| AgentEvent::UserMessage { text: text.clone() })
                .collect();
            events.push(AgentEvent::TurnStarted { turn: *turns });
            self.record(events).await;
            let prompt: Vec<Value> = messages
                .iter()
                .map(|text| json!({"type": "text", "text": text}))
                .collect();
            control.in_turn.store(true, Ordering::SeqCst);
            return Some(
                self.prompt(
                    json!({"sessionId": session, "prompt": prompt}),
                    stopped,
                    ended,
                )
                .await,
            );
        }
    }

    /// Record how a turn ended; whether the conversation goes on.
    async fn turn_ended(&self, outcome: Result<Value, String>, stopped: &mut Stopped) -> bool {
        let control = &self.client.control;
        match outcome {
            Ok(result) => {
                let (events, reason) = crate::sessions::lock(&self.translator).finished(&result);
                let mut events = events;
                events.push(AgentEvent::TurnEnded { reason });
                self.record(events).await;
                if reason != EndReason::Aborted && !control.has_queued() {
                    let c = &self.client;
                    c.sessions
                        .deps()
                        .notifier
                        .send(crate::notify::Notification::session_waiting(
                            &c.slug, &c.name, &c.id,
                        ));
                    c.sessions.deps().hooks.session_idle(&c.id);
                }
                true
            }
            Err(_) if self.letting_go() => false,
            Err(why) => {
                if self.killed() {
                    let mut events = crate::sessions::lock(&self.translator).close();
                    events.push(AgentEvent::TurnEnded {
                        reason: EndReason::Aborted,
                    });
                    self.record(events).await;
                } else {
                    let why = explained(why, stopped).await;
                    self.fail(&why, Some(EndReason::Error)).await;
                }
                false
            }
        }
    }

    /// One `session/prompt`: its result, with an abort sent on as `session/cancel` (and the
    /// turn's approvals cancelled); the turn ends without the agent if it does not stop.
    async fn prompt(
        &self,
        params: Value,
        stopped: &mut Stopped,
        ended: &mut watch::Receiver<bool>,
    ) -> Result<Value, String> {
        let session = params["sessionId"].clone();
        // Noted before it is sent: a next daemon knows which answer ends the turn.
        let (id, rx) = self.rpc.reserve();
        *crate::sessions::lock(&self.prompt_id) = Some(id);
        self.note();
        self.rpc.send_call(id, "session/prompt", params).await?;
        self.answer_to_prompt(rx, session, stopped, ended).await
    }

    /// The answer to the `session/prompt` `rx` waits for, with an abort sent on as
    /// `session/cancel` (the turn's approvals cancelled).
    async fn answer_to_prompt(
        &self,
        rx: oneshot::Receiver<Result<Value, Value>>,
        session: Value,
        stopped: &mut Stopped,
        ended: &mut watch::Receiver<bool>,
    ) -> Result<Value, String> {
        let mut abort = self.client.control.abort.subscribe();
        abort.mark_unchanged();
        let answer = answer_of(rx, "session/prompt", None, stopped, ended);
        tokio::pin!(answer);
        tokio::select! {
            result = &mut answer => return result,
            _ = abort.changed() => {}
        }
        let c = &self.client;
        let _ = c
            .sessions
            .approvals()
            .cancel_pending(&c.id, "the turn was aborted")
            .await;
        self.rpc
            .notify("session/cancel", json!({"sessionId": session}))
            .await?;
        match tokio::time::timeout(CANCEL_GRACE, answer).await {
            Ok(result) => result,
            Err(_) => Ok(json!({"stopReason": "cancelled"})),
        }
    }

    /// Whether the operator ended the session (its turn then ends `aborted`, not in error).
    fn killed(&self) -> bool {
        let c = &self.client;
        c.sessions.get(&c.id).is_some_and(|live| {
            matches!(
                live.state(),
                kaged_session::state::State::Stopping { .. }
                    | kaged_session::state::State::Killed { .. }
            )
        })
    }

    /// The agent broke the protocol (or never started): say why in the log (closing the turn
    /// when one is open), fail the run with the reason, and end the agent.
    async fn fail(&self, why: &str, open_turn: Option<EndReason>) {
        if self.letting_go() {
            return;
        }
        let mut events = crate::sessions::lock(&self.translator).close();
        events.push(AgentEvent::Error {
            code: "acp".into(),
            message: why.to_string(),
        });
        if let Some(reason) = open_turn {
            events.push(AgentEvent::TurnEnded { reason });
        }
        self.record(events).await;
        let c = &self.client;
        tracing::warn!(session = %c.id, reason = %why, "the ACP agent's run ends");
        if let Some(live) = c.sessions.get(&c.id) {
            c.sessions
                .transition(
                    &live,
                    kaged_session::state::Event::Crashed {
                        reason: format!("the ACP agent: {why}"),
                    },
                    "kaged",
                )
                .await;
            if let Some(control) = live.control() {
                control.kill("kaged: the ACP agent broke the protocol");
            }
        }
    }
}
