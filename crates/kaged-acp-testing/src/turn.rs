//! Running a list of steps: one `session/prompt` turn (or the wire steps before the
//! `initialize` and `session/new` answers), with `session/cancel` observed between steps,
//! during sleeps and while an unknown method waits for its answer.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use agent_client_protocol::v1::ConnectionTo;
use agent_client_protocol::v1::schema::{
    ContentBlock, ContentChunk, CreateTerminalRequest, PermissionOption, PermissionOptionKind,
    Plan, PlanEntry, ReadTextFileRequest, ReleaseTerminalRequest, RequestPermissionOutcome,
    RequestPermissionRequest, SessionId, SessionNotification, SessionUpdate, StopReason, Terminal,
    TerminalOutputRequest, ToolCall, ToolCallContent, ToolCallUpdate, ToolCallUpdateFields, Usage,
    UsageUpdate, WaitForTerminalExitRequest, WriteTextFileRequest,
};
use agent_client_protocol::{Client, UntypedMessage};
use tokio::sync::watch;

use crate::script::{PermissionStep, PlanItem, Step, TerminalStep, ToolCallStep, ToolUpdateStep};
use crate::wire;

/// How a list of steps ended.
pub enum Flow {
    /// All steps ran.
    Done,
    /// A `stop` step, or a cancel.
    Stop(StopReason),
    /// A `fail` step: answer the request with this error message.
    Fail(String),
    /// An `exit` step was queued: never answer.
    Exited,
}

type Result<T> = std::result::Result<T, agent_client_protocol::Error>;

/// One run of steps for a session (or before one exists, `session` is `None`).
pub struct Turn {
    /// The connection to the client.
    cx: ConnectionTo<Client>,
    /// The session the updates are for.
    session: Option<SessionId>,
    /// Set to `true` by `session/cancel`.
    cancel: watch::Receiver<bool>,
    /// The text blocks of the prompt, for `echo_prompt`.
    prompt_text: String,
    /// The session was taken up by `session/load` (for `say_session`).
    loaded: bool,
    /// The usage for the turn's answer, set by `turn_usage`.
    usage: std::sync::Mutex<Option<Usage>>,
}

/// Writes one line to stderr, where the tests and the daemon's log see it.
pub fn note(text: &str) {
    eprintln!("kaged-acp-scripted: {text}");
}

/// The error as the agent says it: `MESSAGE (CODE)`.
fn describe(e: &agent_client_protocol::Error) -> String {
    format!("{} ({})", e.message, i32::from(e.code))
}

/// The option id of a kind: its wire name (`allow_once`, …).
fn kind_name(kind: PermissionOptionKind) -> String {
    serde_json::to_value(kind)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_else(|| "other".to_string())
}

/// Splits `text` into `pieces` parts of about equal length, on character boundaries.
fn split(text: &str, pieces: usize) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    let pieces = pieces.clamp(1, chars.len().max(1));
    let size = chars.len().div_ceil(pieces).max(1);
    let parts: Vec<String> = chars.chunks(size).map(|c| c.iter().collect()).collect();
    if parts.is_empty() {
        vec![String::new()]
    } else {
        parts
    }
}

impl Turn {
    /// A turn for `session` (none before a session exists) that a cancel ends.
    pub fn new(
        cx: ConnectionTo<Client>,
        session: Option<SessionId>,
        cancel: watch::Receiver<bool>,
        prompt_text: String,
    ) -> Self {
        Self {
            cx,
            session,
            cancel,
            prompt_text,
            loaded: false,
            usage: std::sync::Mutex::new(None),
        }
    }

    /// Marks the session as taken up by `session/load`.
    pub fn loaded(mut self, loaded: bool) -> Self {
        self.loaded = loaded;
        self
    }

    /// The usage a `turn_usage` step set.
    pub fn usage(&self) -> Option<Usage> {
        self.usage.lock().ok().and_then(|u| u.clone())
    }

    fn cancelled(&self) -> bool {
        *self.cancel.borrow()
    }

    async fn until_cancelled(&self) {
        let mut rx = self.cancel.clone();
        if rx.wait_for(|c| *c).await.is_err() {
            std::future::pending::<()>().await;
        }
    }

    fn update(&self, update: SessionUpdate) -> Result<()> {
        match &self.session {
            Some(id) => self
                .cx
                .send_notification(SessionNotification::new(id.clone(), update)),
            None => Ok(()),
        }
    }

    /// Says `text` as one agent message chunk (or notes it on stderr before a session exists).
    fn say(&self, text: &str) -> Result<()> {
        note(text);
        self.update(SessionUpdate::AgentMessageChunk(ContentChunk::new(
            ContentBlock::from(text),
        )))
    }

    fn session_id(&self) -> SessionId {
        self.session.clone().unwrap_or_else(|| SessionId::from(""))
    }

    /// Runs `steps` in order.
    pub fn run<'a>(
        &'a self,
        steps: &'a [Step],
    ) -> Pin<Box<dyn Future<Output = Result<Flow>> + Send + 'a>> {
        Box::pin(async move {
            for step in steps {
                if self.cancelled() {
                    return Ok(Flow::Stop(StopReason::Cancelled));
                }
                match self.step(step).await? {
                    Flow::Done => {}
                    other => return Ok(other),
                }
            }
            Ok(if self.cancelled() {
                Flow::Stop(StopReason::Cancelled)
            } else {
                Flow::Done
            })
        })
    }

    async fn step(&self, step: &Step) -> Result<Flow> {
        match step {
            Step::Say { text, pieces } => {
                for piece in split(text, *pieces) {
                    self.update(SessionUpdate::AgentMessageChunk(ContentChunk::new(
                        ContentBlock::from(piece),
                    )))?;
                }
            }
            Step::UserChunk(text) => self.update(SessionUpdate::UserMessageChunk(
                ContentChunk::new(ContentBlock::from(text.as_str())),
            ))?,
            Step::SaySession => {
                let id = self.session_id();
                let how = if self.loaded { "loaded" } else { "new" };
                self.say(&format!("session {} {how}", id.0))?;
            }
            Step::Think(text) => self.update(SessionUpdate::AgentThoughtChunk(
                ContentChunk::new(ContentBlock::from(text.as_str())),
            ))?,
            Step::Plan(items) => self.plan(items)?,
            Step::ToolCall(call) => self.tool_call(call)?,
            Step::ToolUpdate(update) => self.tool_update(update)?,
            Step::Permission {
                request,
                if_allowed,
                if_rejected,
            } => return self.permission(request, if_allowed, if_rejected).await,
            Step::WriteFile(w) => {
                let request =
                    WriteTextFileRequest::new(self.session_id(), w.path.clone(), &w.content);
                let path = w.path.display();
                match self.cx.send_request(request).block_task().await {
                    Ok(_) => self.say(&format!("wrote {path}"))?,
                    Err(e) => self.say(&format!("write_file {path} failed: {}", describe(&e)))?,
                }
            }
            Step::ReadFile(r) => {
                let request = ReadTextFileRequest::new(self.session_id(), r.path.clone())
                    .line(r.line)
                    .limit(r.limit);
                match self.cx.send_request(request).block_task().await {
                    Ok(answer) => self.say(&answer.content)?,
                    Err(e) => self.say(&format!(
                        "read_file {} failed: {}",
                        r.path.display(),
                        describe(&e)
                    ))?,
                }
            }
            Step::Terminal(t) => {
                if let Err(e) = self.terminal(t).await {
                    self.say(&format!("terminal {} failed: {}", t.command, describe(&e)))?;
                }
            }
            Step::Usage(u) => {
                let mut usage = UsageUpdate::new(u.used, u.size);
                if let Some(cost) = &u.cost {
                    usage = usage.cost(agent_client_protocol::v1::schema::Cost::new(
                        cost.amount,
                        cost.currency.clone(),
                    ));
                }
                self.update(SessionUpdate::UsageUpdate(usage))?;
            }
            Step::TurnUsage(u) => {
                let usage = Usage::new(
                    u.input_tokens + u.output_tokens,
                    u.input_tokens,
                    u.output_tokens,
                )
                .cached_read_tokens(u.cached_read_tokens);
                if let Ok(mut slot) = self.usage.lock() {
                    *slot = Some(usage);
                }
            }
            Step::EchoPrompt => self.update(SessionUpdate::AgentMessageChunk(
                ContentChunk::new(ContentBlock::from(self.prompt_text.as_str())),
            ))?,
            Step::Stop(reason) => return Ok(Flow::Stop(*reason)),
            Step::Fail(message) => return Ok(Flow::Fail(message.clone())),
            Step::Raw(line) => self.cx.send_notification(wire::raw_marker(line)?)?,
            Step::CallUnknownMethod(method) => self.unknown_method(method).await?,
            Step::RespondUnknownId(id) => {
                let line = format!(r#"{{"jsonrpc":"2.0","id":{id},"result":{{}}}}"#);
                self.cx.send_notification(wire::raw_marker(&line)?)?;
            }
            Step::Flood(n) => {
                for _ in 0..*n {
                    self.update(SessionUpdate::AgentMessageChunk(ContentChunk::new(
                        ContentBlock::from("."),
                    )))?;
                }
            }
            Step::Exit(code) => {
                self.cx.send_notification(wire::exit_marker(*code)?)?;
                return Ok(Flow::Exited);
            }
            Step::SleepMs(ms) => {
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_millis(*ms)) => {}
                    () = self.until_cancelled() => {}
                }
            }
        }
        Ok(Flow::Done)
    }

    fn plan(&self, items: &[PlanItem]) -> Result<()> {
        let entries = items
            .iter()
            .map(|item| match item {
                PlanItem::Text(content) => PlanEntry::new(
                    content.as_str(),
                    agent_client_protocol::v1::schema::PlanEntryPriority::Medium,
                    agent_client_protocol::v1::schema::PlanEntryStatus::Pending,
                ),
                PlanItem::Full {
                    content,
                    priority,
                    status,
                } => PlanEntry::new(content.as_str(), priority.clone(), status.clone()),
            })
            .collect();
        self.update(SessionUpdate::Plan(Plan::new(entries)))
    }

    fn tool_call(&self, call: &ToolCallStep) -> Result<()> {
        let mut tool = ToolCall::new(call.id.clone(), call.title.clone())
            .kind(call.kind)
            .status(call.status)
            .raw_input(call.raw_input.clone());
        if !call.locations.is_empty() {
            tool = tool.locations(
                call.locations
                    .iter()
                    .map(|p| agent_client_protocol::v1::schema::ToolCallLocation::new(p.clone()))
                    .collect(),
            );
        }
        self.update(SessionUpdate::ToolCall(tool))
    }

    fn tool_update(&self, update: &ToolUpdateStep) -> Result<()> {
        let mut fields = ToolCallUpdateFields::new()
            .status(update.status)
            .raw_output(update.raw_output.clone());
        if let Some(text) = &update.text {
            fields = fields.content(vec![ToolCallContent::from(text.as_str())]);
        }
        self.update(SessionUpdate::ToolCallUpdate(ToolCallUpdate::new(
            update.id.clone(),
            fields,
        )))
    }

    async fn permission(
        &self,
        request: &PermissionStep,
        if_allowed: &[Step],
        if_rejected: &[Step],
    ) -> Result<Flow> {
        let options = request
            .options
            .iter()
            .map(|kind| {
                let id = kind_name(*kind);
                PermissionOption::new(id.clone(), id, *kind)
            })
            .collect();
        let fields = ToolCallUpdateFields::new()
            .title(request.title.clone())
            .kind(request.kind)
            .raw_input(request.raw_input.clone());
        let tool_call = ToolCallUpdate::new(request.tool_call_id.clone(), fields);
        let answer = self
            .cx
            .send_request(RequestPermissionRequest::new(
                self.session_id(),
                tool_call,
                options,
            ))
            .block_task()
            .await;
        let answer = match answer {
            Ok(answer) => answer,
            Err(e) => {
                let line = format!(
                    "permission {} failed: {}",
                    request.tool_call_id,
                    describe(&e)
                );
                self.say(&line)?;
                return self.run(if_rejected).await;
            }
        };
        let chosen = match &answer.outcome {
            RequestPermissionOutcome::Selected(selected) => selected.option_id.0.to_string(),
            _ => "cancelled".to_string(),
        };
        let line = format!("permission {}: {chosen}", request.tool_call_id);
        note(&line);
        if !request.quiet {
            self.update(SessionUpdate::AgentMessageChunk(ContentChunk::new(
                ContentBlock::from(line),
            )))?;
        }
        if chosen == "cancelled" {
            return Ok(Flow::Stop(StopReason::Cancelled));
        }
        if chosen.starts_with("allow_") {
            self.run(if_allowed).await
        } else {
            self.run(if_rejected).await
        }
    }

    async fn terminal(&self, t: &TerminalStep) -> Result<()> {
        let request = CreateTerminalRequest::new(self.session_id(), t.command.as_str())
            .args(t.args.clone())
            .cwd(t.cwd.clone())
            .output_byte_limit(t.output_byte_limit);
        let created = self.cx.send_request(request).block_task().await?;
        let id = created.terminal_id;
        if let Some(call) = &t.tool_call_id {
            let fields = ToolCallUpdateFields::new()
                .content(vec![ToolCallContent::Terminal(Terminal::new(id.clone()))]);
            self.update(SessionUpdate::ToolCallUpdate(ToolCallUpdate::new(
                call.clone(),
                fields,
            )))?;
        }
        let sid = self.session_id();
        let exit = self
            .cx
            .send_request(WaitForTerminalExitRequest::new(sid.clone(), id.clone()))
            .block_task()
            .await?;
        let output = self
            .cx
            .send_request(TerminalOutputRequest::new(sid.clone(), id.clone()))
            .block_task()
            .await?;
        self.cx
            .send_request(ReleaseTerminalRequest::new(sid, id))
            .block_task()
            .await?;
        self.say(&output.output)?;
        let status = exit.exit_status;
        let mut line = match (status.exit_code, &status.signal) {
            (Some(code), _) => format!("terminal exit: {code}"),
            (None, Some(signal)) => format!("terminal exit: signal {signal}"),
            (None, None) => "terminal exit: unknown".to_string(),
        };
        if output.truncated {
            line.push_str(" (truncated)");
        }
        self.say(&line)
    }

    async fn unknown_method(&self, method: &str) -> Result<()> {
        let request = UntypedMessage::new(method, serde_json::json!({}))?;
        let answer = tokio::select! {
            answer = self.cx.send_request(request).block_task() => answer,
            () = self.until_cancelled() => return Ok(()),
        };
        match answer {
            Ok(value) => self.say(&format!("{method} answered: {value}")),
            Err(e) => self.say(&format!("{method} failed: {}", describe(&e))),
        }
    }
}
