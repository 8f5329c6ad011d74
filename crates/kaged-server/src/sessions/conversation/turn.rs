//! The agent loop of one conversation, a task as long as its run: wait for operator messages,
//! run a turn (model call, tool calls, model call, …) until the model stops, `max_steps` or
//! `max_output_tokens`, an abort or the run's end. Every turn ends with exactly one
//! `turn_ended` record (a turn paused on approvals when its run ends stays open, and goes on
//! when the conversation next runs). The conversation given to the model is rebuilt from the log at each
//! call (`kaged_session::agent::history`), so a resumed session continues with its history.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use kaged_dsl::Approval;
use kaged_llm::{Client, Message, Request, StopReason, Timeouts, ToolSpec};
use kaged_session::agent::{self, AgentEvent, EndReason};
use kaged_tools::ToolExecutor;
use tokio::sync::watch;

use super::model::{self, Failed};
use super::subagent::{self, CageBase};
use super::{Control, Setup};
use crate::notify::Notification;
use crate::sessions::{RunSettings, Sessions};

/// What the loop works with.
pub(crate) struct Conversation {
    pub sessions: Sessions,
    pub id: String,
    pub root: PathBuf,
    pub setup: Setup,
    pub control: Arc<Control>,
    /// Who started the session (who may decide its approvals on a shared box).
    pub owner: String,
    /// What subagents' cages are built from.
    pub base: CageBase,
    /// Subagent cages started so far (names their cgroups).
    pub subagents: AtomicU64,
    /// The log as far as the conversations given to models need it: read from storage once
    /// when the run starts, then kept in step with every append, so a model call does not
    /// read the whole log again. A message's deltas go once it is completed (see `remember`).
    pub log: std::sync::Mutex<Vec<agent::Sequenced>>,
}

/// Keep `record` in `log`, dropping what `agent::history` never needs: a completed message's
/// deltas (they are contiguous just before it: its scope streams alone) and tool output.
fn remember(log: &mut Vec<agent::Sequenced>, record: agent::Sequenced) {
    match &record.event {
        AgentEvent::ToolOutput { .. } => return,
        AgentEvent::MessageCompleted { .. } => {
            while log.last().is_some_and(|last| {
                matches!(last.event, AgentEvent::TextDelta { .. })
                    && last.parent_call_id == record.parent_call_id
            }) {
                log.pop();
            }
        }
        _ => {}
    }
    log.push(record);
}

/// Subagents of subagents, at most this deep.
const MAX_DEPTH: usize = 4;

/// The result of a call that ran when its run ended: it is not run a second time.
const INTERRUPTED: &str =
    "cut short: the run ended (kaged stopped) while this call ran; it was not run again";

/// A tool call of a turn on its way to its result.
pub(crate) struct Call {
    id: String,
    name: String,
    arguments: serde_json::Value,
    /// The approval it waits for (or was given).
    approval: Option<String>,
    /// It was under way when an earlier run ended: it is not run again.
    interrupted: bool,
}

/// How a call is carried out.
enum Handler {
    /// A built-in tool, in the agent's cage.
    Tool(String),
    /// A subagent, in a cage of its own.
    Subagent(Setup),
    /// Nothing: the model is told why.
    Unknown(String),
}

fn approval_failed(e: crate::sessions::approval::ApprovalError) -> Failed {
    Failed {
        code: "approval",
        message: e.to_string(),
    }
}

/// Who a loop runs for: the session's agent (`parent` `None`) or a subagent called by the
/// parent's tool call `parent`.
#[derive(Clone, Copy)]
struct Scope<'a> {
    parent: Option<&'a str>,
    setup: &'a Setup,
    executor: &'a ToolExecutor,
    depth: usize,
}

/// One model call's view of its turn (what it records through).
pub(crate) struct Turn<'a> {
    conversation: &'a Conversation,
    parent: Option<&'a str>,
}

impl Turn<'_> {
    pub(crate) fn settings(&self) -> &RunSettings {
        &self.conversation.sessions.deps().settings
    }

    pub(crate) fn session(&self) -> &str {
        &self.conversation.id
    }

    /// Append `events` (stored, then published); a failure is the turn's end.
    pub(crate) async fn record(&self, events: Vec<AgentEvent>) -> Result<(), String> {
        self.conversation.record_in(self.parent, events).await
    }
}

fn storage(message: String) -> Failed {
    Failed {
        code: "storage",
        message,
    }
}

impl Conversation {
    async fn record(&self, events: Vec<AgentEvent>) -> Result<(), String> {
        self.record_in(None, events).await
    }

    async fn record_in(&self, parent: Option<&str>, events: Vec<AgentEvent>) -> Result<(), String> {
        let events: Vec<AgentEvent> = events.into_iter().flat_map(AgentEvent::bounded).collect();
        if events.is_empty() {
            return Ok(());
        }
        self.sessions
            .agent_log()
            .append(&self.id, parent, events)
            .await
            .map(|records| {
                let mut log = crate::sessions::lock(&self.log);
                for record in records {
                    remember(&mut log, (*record).clone());
                }
            })
            .map_err(|e| {
                tracing::error!(session = %self.id, error = %e, "cannot record the conversation's events");
                format!("cannot record the conversation: {e}")
            })
    }

    /// The loop: until `ended` flips (the run is over).
    pub(crate) async fn run(self, executor: ToolExecutor, mut ended: watch::Receiver<bool>) {
        let client = match Client::new(self.timeouts()) {
            Ok(c) => c,
            Err(e) => {
                let _ = self
                    .record(vec![AgentEvent::Error {
                        code: "provider".into(),
                        message: e.to_string(),
                    }])
                    .await;
                return;
            }
        };
        let (mut turns, mut paused) = match self.close_open_turn().await {
            Ok(found) => found,
            Err(e) => {
                tracing::error!(session = %self.id, error = %e, "cannot read the conversation");
                return;
            }
        };
        let scope = Scope {
            parent: None,
            setup: &self.setup,
            executor: &executor,
            depth: 0,
        };
        loop {
            if paused.is_none() && !self.control.has_queued() {
                tokio::select! {
                    _ = self.control.wake.notified() => {}
                    _ = ended.wait_for(|e| *e) => return,
                }
                continue;
            }
            // A turn kaged stopped in while it waited for approvals goes on (same number).
            let resumed = paused.take();
            if resumed.is_none() {
                turns += 1;
            }
            let mut abort = self.control.abort.subscribe();
            abort.mark_unchanged();
            self.control.in_turn.store(true, Ordering::SeqCst);
            let reason = tokio::select! {
                reason = self.turn(scope, turns, &client, resumed.unwrap_or_default()) => reason,
                _ = abort.changed() => EndReason::Aborted,
                _ = ended.wait_for(|e| *e) => EndReason::Aborted,
            };
            if *ended.borrow() {
                // The run ended. A turn paused on approvals stays open (a kill cancelled
                // them first; a daemon stop keeps them): deciding one takes it up again.
                if !self.waits_for_approvals().await {
                    let _ = self.record(vec![AgentEvent::TurnEnded { reason }]).await;
                }
                return;
            }
            if reason == EndReason::Aborted
                && let Err(e) = self
                    .sessions
                    .approvals()
                    .cancel_pending(&self.id, "the turn was aborted")
                    .await
            {
                tracing::error!(session = %self.id, error = %e, "cannot cancel the aborted turn's approvals");
            }
            let _ = self.record(vec![AgentEvent::TurnEnded { reason }]).await;
            self.control.in_turn.store(false, Ordering::SeqCst);
            if reason != EndReason::Aborted && !self.control.has_queued() {
                // The agent waits for the operator (an abort was the operator's own doing).
                self.sessions
                    .deps()
                    .notifier
                    .send(Notification::session_waiting(
                        &self.base.slug,
                        &self.setup.agent,
                        &self.id,
                    ));
            }
        }
    }

    /// Whether a call of this session's turn waits for a decision.
    async fn waits_for_approvals(&self) -> bool {
        let pending = self
            .sessions
            .approvals()
            .store()
            .list_approvals(kaged_store::ApprovalFilter {
                state: Some("pending".into()),
                session: Some(self.id.clone()),
                limit: 1000,
                ..Default::default()
            })
            .await;
        pending.is_ok_and(|p| p.iter().any(|a| a.parent_call_id.is_none()))
    }

    fn timeouts(&self) -> Timeouts {
        let models = &self.sessions.deps().settings.models;
        Timeouts {
            request: std::time::Duration::from_secs(models.request_timeout_secs),
            stall: std::time::Duration::from_secs(models.stall_timeout_secs),
            ..Timeouts::default()
        }
    }

    /// The number of turns so far, and the calls of a turn an earlier run left paused on
    /// approvals (kaged stopped while they waited): that turn goes on from them. Any other
    /// turn an earlier run left open is closed first, saying so; approvals nothing waits for
    /// any more (a subagent's, whose cage is gone) are cancelled.
    async fn close_open_turn(&self) -> Result<(u64, Option<Vec<Call>>), String> {
        let records = self
            .sessions
            .agent_log()
            .read_all(&self.id)
            .await
            .map_err(|e| e.to_string())?;
        let mut turns = 0;
        let mut open = false;
        let mut calls: Vec<Call> = Vec::new();
        let mut done = std::collections::HashSet::new();
        for r in records.iter().filter(|r| r.parent_call_id.is_none()) {
            match &r.event {
                AgentEvent::TurnStarted { turn } => {
                    turns = *turn;
                    open = true;
                    calls.clear();
                    done.clear();
                }
                AgentEvent::TurnEnded { .. } => open = false,
                AgentEvent::ToolCall {
                    call_id,
                    name,
                    arguments,
                } => calls.push(Call {
                    id: call_id.clone(),
                    name: name.clone(),
                    arguments: arguments.clone(),
                    approval: None,
                    interrupted: true,
                }),
                AgentEvent::ApprovalRequested {
                    approval_id,
                    call_id,
                    ..
                } => {
                    if let Some(call) = calls.iter_mut().find(|c| &c.id == call_id) {
                        call.approval = Some(approval_id.clone());
                    }
                }
                AgentEvent::ToolResult { call_id, .. } => {
                    done.insert(call_id.clone());
                }
                _ => {}
            }
        }
        {
            let mut log = crate::sessions::lock(&self.log);
            for record in records {
                remember(&mut log, record);
            }
        }
        calls.retain(|c| !done.contains(&c.id));
        let paused = if open && calls.iter().any(|c| c.approval.is_some()) {
            for call in &mut calls {
                call.interrupted = !self.still_to_run(call).await?;
            }
            Some(calls)
        } else {
            None
        };
        self.cancel_stale_approvals(paused.as_deref()).await?;
        if paused.is_some() {
            return Ok((turns, paused));
        }
        if open {
            self.record(vec![
                AgentEvent::Error {
                    code: "daemon".into(),
                    message: "the turn was cut short: its run ended (kaged stopped or the session was killed)".into(),
                },
                AgentEvent::TurnEnded {
                    reason: EndReason::Error,
                },
            ])
            .await?;
        }
        Ok((turns, None))
    }

    /// Whether a call of a paused turn is to be carried out now: its approval is pending, was
    /// refused (the model is told), or was granted after the run that asked ended. One granted
    /// while that run lived may have started already: it is not run twice.
    async fn still_to_run(&self, call: &Call) -> Result<bool, String> {
        let Some(id) = &call.approval else {
            return Ok(false);
        };
        let store = &self.sessions.deps().store;
        let Some(record) = store
            .get_approval(id.clone())
            .await
            .map_err(|e| e.to_string())?
        else {
            return Ok(false);
        };
        if record.state != "approved" {
            return Ok(true);
        }
        let transitions = store
            .transitions_after(0, Some(self.id.clone()), 10_000)
            .await
            .map_err(|e| e.to_string())?;
        let run_end = transitions.iter().find(|t| {
            t.at_ms >= record.requested_at_ms
                && matches!(t.state.as_str(), "exited" | "failed" | "killed")
        });
        Ok(match (run_end, record.decided_at_ms) {
            (Some(end), Some(decided)) => decided > end.at_ms,
            _ => false,
        })
    }

    /// Cancel this session's pending approvals that no call of `paused` waits for.
    async fn cancel_stale_approvals(&self, paused: Option<&[Call]>) -> Result<(), String> {
        let approvals = self.sessions.approvals();
        let pending = approvals
            .store()
            .list_approvals(kaged_store::ApprovalFilter {
                state: Some("pending".into()),
                session: Some(self.id.clone()),
                limit: 10_000,
                ..Default::default()
            })
            .await
            .map_err(|e| e.to_string())?;
        let waited: std::collections::HashSet<&str> = paused
            .unwrap_or_default()
            .iter()
            .filter(|c| !c.interrupted)
            .filter_map(|c| c.approval.as_deref())
            .collect();
        for stale in pending.iter().filter(|a| !waited.contains(a.id.as_str())) {
            approvals
                .cancel(
                    &stale.id,
                    "the run that asked ended (kaged stopped during a subagent's turn)",
                )
                .await
                .map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    /// Record the operator's queued messages.
    async fn take_messages(&self) -> Result<(), String> {
        let events = self
            .control
            .take()
            .into_iter()
            .map(|text| AgentEvent::UserMessage { text })
            .collect();
        self.record(events).await
    }

    /// One turn of `scope`; records an `error` when one ends it (the caller records
    /// `turn_ended`).
    async fn turn(
        &self,
        scope: Scope<'_>,
        number: u64,
        client: &Client,
        paused: Vec<Call>,
    ) -> EndReason {
        match self.steps(scope, number, client, paused).await {
            Ok(reason) => reason,
            Err(Failed { code, message }) => {
                let _ = self
                    .record_in(
                        scope.parent,
                        vec![AgentEvent::Error {
                            code: code.into(),
                            message,
                        }],
                    )
                    .await;
                EndReason::Error
            }
        }
    }

    /// The conversation of the session's agent (`parent` `None`) or of the subagent run by
    /// the call `parent`, as recorded so far.
    fn history_of(&self, parent: Option<&str>) -> Vec<agent::Message> {
        let log = crate::sessions::lock(&self.log);
        match parent {
            None => agent::history(log.iter()),
            Some(parent) => {
                let own: Vec<agent::Sequenced> = log
                    .iter()
                    .filter(|r| r.parent_call_id.as_deref() == Some(parent))
                    .map(|r| agent::Sequenced {
                        parent_call_id: None,
                        ..r.clone()
                    })
                    .collect();
                agent::history(&own)
            }
        }
    }

    /// The model calls and tool calls of a turn; a paused turn taken up again starts with
    /// the calls it paused on (`paused`).
    async fn steps(
        &self,
        scope: Scope<'_>,
        number: u64,
        client: &Client,
        paused: Vec<Call>,
    ) -> Result<EndReason, Failed> {
        let top = scope.parent.is_none();
        if paused.is_empty() {
            if top {
                self.take_messages().await.map_err(storage)?;
            }
            self.record_in(scope.parent, vec![AgentEvent::TurnStarted { turn: number }])
                .await
                .map_err(storage)?;
        }
        let setup = scope.setup;
        let system = match &setup.system_prompt {
            Some(path) => Some(
                super::read_prompt(&self.root, path).map_err(|message| Failed {
                    code: "prompt",
                    message,
                })?,
            ),
            None => None,
        };
        let endpoints = model::endpoints(&self.sessions.deps().settings, &setup.model)?;
        let mut tools = tool_specs(&setup.tools);
        if scope.depth < MAX_DEPTH {
            tools.extend(subagent::specs(&self.base.project, setup));
        }
        let turn = Turn {
            conversation: self,
            parent: scope.parent,
        };
        if !paused.is_empty() {
            self.finish_calls(scope, client, paused).await?;
        }
        let mut steps = 0u64;
        loop {
            if setup.max_steps.is_some_and(|max| steps >= max) {
                return Ok(EndReason::MaxSteps);
            }
            steps += 1;
            if top {
                // Steering: what the operator sent meanwhile joins before this call.
                self.take_messages().await.map_err(storage)?;
            }
            let request = Request {
                system: system.clone(),
                messages: conversation_of(&self.history_of(scope.parent)),
                tools: tools.clone(),
                max_output_tokens: setup
                    .max_output_tokens
                    .map(|n| u32::try_from(n).unwrap_or(u32::MAX)),
            };
            let answer = model::call(&turn, client, &endpoints, &request).await?;
            if answer.tool_calls.is_empty() {
                return Ok(match answer.stop {
                    StopReason::MaxTokens => EndReason::MaxOutputTokens,
                    _ => EndReason::EndTurn,
                });
            }
            self.run_tools(scope, client, answer.tool_calls).await?;
            if answer.stop == StopReason::MaxTokens {
                return Ok(EndReason::MaxOutputTokens);
            }
        }
    }

    /// Record the calls, ask for the approvals they need, and carry them out
    /// ([`Self::finish_calls`]).
    async fn run_tools(
        &self,
        scope: Scope<'_>,
        client: &Client,
        calls: Vec<kaged_llm::ToolCall>,
    ) -> Result<(), Failed> {
        let mut planned = Vec::new();
        let mut events = Vec::new();
        for call in calls {
            let arguments = serde_json::from_str(&call.arguments)
                .unwrap_or(serde_json::Value::String(call.arguments.clone()));
            events.push(AgentEvent::ToolCall {
                call_id: call.id.clone(),
                name: call.name.clone(),
                arguments: arguments.clone(),
            });
            planned.push(Call {
                id: call.id,
                name: call.name,
                arguments,
                approval: None,
                interrupted: false,
            });
        }
        self.record_in(scope.parent, events)
            .await
            .map_err(storage)?;
        for call in &mut planned {
            if matches!(self.handler(scope, &call.name), Handler::Unknown(_))
                || !self.needs_approval(scope, &call.name).await?
            {
                continue;
            }
            let record = self
                .sessions
                .approvals()
                .request(crate::sessions::approval::Request {
                    session: &self.id,
                    project: &self.base.slug,
                    owner: &self.owner,
                    agent: &scope.setup.agent,
                    tool: &call.name,
                    call_id: &call.id,
                    parent_call_id: scope.parent,
                    arguments: &call.arguments,
                })
                .await
                .map_err(approval_failed)?;
            call.approval = Some(record.id);
        }
        self.finish_calls(scope, client, planned).await
    }

    /// How `scope`'s agent carries out a call of `name`.
    fn handler(&self, scope: Scope<'_>, name: &str) -> Handler {
        let agent = self.base.project.agent(&scope.setup.agent);
        let sub = name
            .strip_prefix(subagent::PREFIX)
            .filter(|_| scope.depth < MAX_DEPTH)
            .filter(|sub| {
                agent.is_some_and(|a| {
                    a.subagents.contains_key(*sub) && a.approval_of(name) != Approval::Deny
                })
            })
            .and_then(|sub| Setup::of(&self.base.project, sub));
        match sub {
            Some(setup) => Handler::Subagent(setup),
            None if scope.setup.tools.contains(name) => Handler::Tool(name.to_string()),
            None if agent.is_some_and(|a| a.approval_of(name) == Approval::Deny) => {
                Handler::Unknown(format!(
                    "`{name}` is not allowed for this agent (the project file says `approval: deny` or `enabled: false`); the tools are: {}",
                    tool_names(&self.base.project, scope)
                ))
            }
            None => Handler::Unknown(format!(
                "unknown tool `{name}`; the tools are: {}",
                tool_names(&self.base.project, scope)
            )),
        }
    }

    /// Whether a call of `name` by `scope`'s agent waits for the operator: `approval: ask`,
    /// unless it was approved for the rest of this session.
    async fn needs_approval(&self, scope: Scope<'_>, name: &str) -> Result<bool, Failed> {
        let level = self
            .base
            .project
            .agent(&scope.setup.agent)
            .map_or(Approval::Allow, |a| a.approval_of(name));
        if level != Approval::Ask {
            return Ok(false);
        }
        let granted = self
            .sessions
            .approvals()
            .granted(&self.id, &scope.setup.agent, name)
            .await
            .map_err(approval_failed)?;
        Ok(!granted)
    }

    /// Start at once, in the cage, the built-in calls that need no decision; then, in order,
    /// wait for each decision needed, run subagents, and record each result.
    async fn finish_calls(
        &self,
        scope: Scope<'_>,
        client: &Client,
        calls: Vec<Call>,
    ) -> Result<(), Failed> {
        enum Ready {
            Tool(Result<kaged_tools::PendingCall, String>),
            Subagent(Setup, serde_json::Value),
            Done(String),
        }
        enum Started {
            Ready(Ready),
            Waiting(String, Handler, serde_json::Value),
        }
        let start = |name: &str, arguments| {
            scope
                .executor
                .start(name, arguments)
                .map_err(|e| e.to_string())
        };
        let mut started = Vec::new();
        for call in calls {
            let job = match (
                call.interrupted,
                self.handler(scope, &call.name),
                call.approval,
            ) {
                (true, _, _) => Started::Ready(Ready::Done(INTERRUPTED.to_string())),
                (false, Handler::Unknown(message), _) => Started::Ready(Ready::Done(message)),
                (false, handler, Some(id)) => Started::Waiting(id, handler, call.arguments),
                (false, Handler::Tool(name), None) => {
                    Started::Ready(Ready::Tool(start(&name, call.arguments)))
                }
                (false, Handler::Subagent(setup), None) => {
                    Started::Ready(Ready::Subagent(setup, call.arguments))
                }
            };
            started.push((call.id, job));
        }
        let mut gone = None;
        for (call_id, job) in started {
            let job = match job {
                Started::Waiting(id, handler, arguments) => {
                    let record = self
                        .sessions
                        .approvals()
                        .wait(&id)
                        .await
                        .map_err(approval_failed)?;
                    match handler {
                        _ if record.state != "approved" => {
                            Ready::Done(crate::sessions::approval::refusal(&record))
                        }
                        Handler::Tool(name) => Ready::Tool(start(&name, arguments)),
                        Handler::Subagent(setup) => Ready::Subagent(setup, arguments),
                        Handler::Unknown(message) => Ready::Done(message),
                    }
                }
                Started::Ready(ready) => ready,
            };
            let (ok, content, cut) = match job {
                Ready::Tool(Ok(p)) => match p.outcome().await {
                    Ok(kaged_tools::ToolOutcome::Ok { output, truncated }) => {
                        (true, output, truncated)
                    }
                    Ok(outcome) => (false, outcome.text().to_string(), false),
                    Err(e) => {
                        gone = Some(e.to_string());
                        (false, e.to_string(), false)
                    }
                },
                Ready::Tool(Err(message)) | Ready::Done(message) => (false, message, false),
                Ready::Subagent(setup, arguments) => {
                    let (ok, content) =
                        Box::pin(self.run_subagent(scope, client, &call_id, setup, arguments))
                            .await;
                    (ok, content, false)
                }
            };
            // The tool's own cut (marked in its text) or the log's bound.
            let result = match AgentEvent::tool_result(call_id, ok, &content) {
                AgentEvent::ToolResult {
                    call_id,
                    ok,
                    content,
                    truncated,
                } => AgentEvent::ToolResult {
                    call_id,
                    ok,
                    content,
                    truncated: truncated || cut,
                },
                other => other,
            };
            self.record_in(scope.parent, vec![result])
                .await
                .map_err(storage)?;
        }
        match gone {
            Some(message) => Err(Failed {
                code: "executor",
                message,
            }),
            None => Ok(()),
        }
    }

    /// A subagent's whole run for the parent's call `call_id`: its answer, and whether it
    /// finished well.
    async fn run_subagent(
        &self,
        scope: Scope<'_>,
        client: &Client,
        call_id: &str,
        setup: Setup,
        arguments: serde_json::Value,
    ) -> (bool, String) {
        let task = match kaged_tools::arguments_of(&arguments) {
            Ok(args) => match args.get("task").and_then(|t| t.as_str()) {
                Some(task) if !task.trim().is_empty() => task.to_string(),
                _ => {
                    return (
                        false,
                        "give the subagent a task: {\"task\": \"...\"}".into(),
                    );
                }
            },
            Err(e) => return (false, e),
        };
        let n = self.subagents.fetch_add(1, Ordering::Relaxed) + 1;
        let cage = match subagent::start(&self.sessions, &self.base, &setup, n).await {
            Ok(c) => c,
            Err(e) => {
                return (
                    false,
                    format!("the subagent `{}` cannot start: {e}", setup.agent),
                );
            }
        };
        if let Err(e) = self
            .record_in(Some(call_id), vec![AgentEvent::UserMessage { text: task }])
            .await
        {
            return (false, e);
        }
        let sub = Scope {
            parent: Some(call_id),
            setup: &setup,
            executor: &cage.executor,
            depth: scope.depth + 1,
        };
        let reason = self.turn(sub, 1, client, Vec::new()).await;
        let _ = self
            .record_in(Some(call_id), vec![AgentEvent::TurnEnded { reason }])
            .await;
        drop(cage);
        let answer = self
            .history_of(Some(call_id))
            .into_iter()
            .rev()
            .find_map(|m| match m {
                agent::Message::Assistant { text } => Some(text),
                _ => None,
            })
            .unwrap_or_default();
        match reason {
            EndReason::EndTurn => (true, answer),
            other => (
                false,
                format!(
                    "the subagent `{}` stopped ({}) before it finished{}",
                    setup.agent,
                    serde_json::to_value(other)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_string))
                        .unwrap_or_default(),
                    if answer.is_empty() {
                        String::new()
                    } else {
                        format!("; its last message: {answer}")
                    }
                ),
            ),
        }
    }
}

/// Every tool `scope`'s agent may call, for an unknown tool's message.
fn tool_names(project: &kaged_dsl::Project, scope: Scope<'_>) -> String {
    let mut names: Vec<String> = scope.setup.tools.iter().cloned().collect();
    if scope.depth < MAX_DEPTH {
        names.extend(
            subagent::specs(project, scope.setup)
                .into_iter()
                .map(|s| s.name),
        );
    }
    names.join(", ")
}

/// The tools offered to the model.
fn tool_specs(enabled: &std::collections::BTreeSet<String>) -> Vec<ToolSpec> {
    kaged_tools::specs()
        .into_iter()
        .filter(|s| enabled.contains(s.name))
        .map(|s| ToolSpec {
            name: s.name.to_string(),
            description: s.description.to_string(),
            parameters: s.parameters,
        })
        .collect()
}

/// The log's conversation as a provider request's messages: an assistant's text and the tool
/// calls after it form one assistant message.
fn conversation_of(history: &[agent::Message]) -> Vec<Message> {
    let mut out: Vec<Message> = Vec::new();
    for item in history {
        match item {
            agent::Message::User { text } => out.push(Message::User { text: text.clone() }),
            agent::Message::Assistant { text } => out.push(Message::Assistant {
                text: text.clone(),
                tool_calls: Vec::new(),
            }),
            agent::Message::ToolCall {
                call_id,
                name,
                arguments,
            } => {
                let call = kaged_llm::ToolCall {
                    id: call_id.clone(),
                    name: name.clone(),
                    arguments: match arguments {
                        serde_json::Value::String(raw) => raw.clone(),
                        other => other.to_string(),
                    },
                };
                match out.last_mut() {
                    Some(Message::Assistant { tool_calls, .. }) => tool_calls.push(call),
                    _ => out.push(Message::Assistant {
                        text: String::new(),
                        tool_calls: vec![call],
                    }),
                }
            }
            agent::Message::ToolResult {
                call_id,
                ok,
                content,
            } => out.push(Message::ToolResult {
                call_id: call_id.clone(),
                content: content.clone(),
                is_error: !ok,
            }),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn text_and_the_calls_after_it_are_one_assistant_message() {
        let history = vec![
            agent::Message::User { text: "hi".into() },
            agent::Message::Assistant {
                text: "let me look".into(),
            },
            agent::Message::ToolCall {
                call_id: "c1".into(),
                name: "file.read".into(),
                arguments: json!({"path": "a"}),
            },
            agent::Message::ToolCall {
                call_id: "c2".into(),
                name: "file.read".into(),
                arguments: json!("{not json"),
            },
            agent::Message::ToolResult {
                call_id: "c1".into(),
                ok: true,
                content: "A".into(),
            },
            agent::Message::ToolResult {
                call_id: "c2".into(),
                ok: false,
                content: "bad".into(),
            },
            agent::Message::ToolCall {
                call_id: "c3".into(),
                name: "shell.bash".into(),
                arguments: json!({}),
            },
        ];
        let got = conversation_of(&history);
        assert_eq!(got.len(), 5, "{got:?}");
        let Message::Assistant { text, tool_calls } = &got[1] else {
            panic!("{got:?}")
        };
        assert_eq!(text, "let me look");
        assert_eq!(tool_calls.len(), 2);
        assert_eq!(tool_calls[0].arguments, r#"{"path":"a"}"#);
        assert_eq!(
            tool_calls[1].arguments, "{not json",
            "sent back as the model wrote it"
        );
        assert!(matches!(
            &got[3],
            Message::ToolResult { is_error: true, .. }
        ));
        let Message::Assistant { text, tool_calls } = &got[4] else {
            panic!("{got:?}")
        };
        assert!(text.is_empty() && tool_calls[0].id == "c3");
    }

    #[test]
    fn the_remembered_log_gives_the_same_history_without_completed_deltas() {
        let rec = |seq: u64, parent: Option<&str>, event: AgentEvent| agent::Sequenced {
            seq,
            at_ms: 0,
            parent_call_id: parent.map(str::to_string),
            event,
        };
        let delta = |t: &str| AgentEvent::TextDelta { text: t.into() };
        let started = AgentEvent::MessageStarted {
            role: agent::Role::Assistant,
        };
        let full = vec![
            rec(1, None, AgentEvent::UserMessage { text: "hi".into() }),
            rec(2, None, AgentEvent::TurnStarted { turn: 1 }),
            rec(3, None, started.clone()),
            rec(4, None, delta("Hel")),
            rec(5, None, delta("lo")),
            rec(
                6,
                None,
                AgentEvent::MessageCompleted {
                    text: "Hello".into(),
                },
            ),
            rec(
                7,
                None,
                AgentEvent::ToolCall {
                    call_id: "c".into(),
                    name: "agent.helper".into(),
                    arguments: json!({"task": "t"}),
                },
            ),
            rec(8, Some("c"), started.clone()),
            rec(9, Some("c"), delta("sub")),
            rec(
                10,
                Some("c"),
                AgentEvent::MessageCompleted { text: "sub".into() },
            ),
            rec(
                11,
                None,
                AgentEvent::ToolOutput {
                    call_id: "c".into(),
                    chunk: "x".into(),
                },
            ),
            rec(12, None, AgentEvent::tool_result("c", true, "sub")),
            // Cut short: its deltas are all there is of it.
            rec(13, None, started),
            rec(14, None, delta("par")),
            rec(15, None, delta("tial")),
        ];
        let mut kept = Vec::new();
        for r in full.clone() {
            remember(&mut kept, r);
        }
        assert_eq!(agent::history(&kept), agent::history(&full));
        let seqs: Vec<u64> = kept.iter().map(|r| r.seq).collect();
        assert_eq!(seqs, [1, 2, 3, 6, 7, 8, 10, 12, 13, 14, 15]);
        let last = agent::history(&kept).pop();
        assert_eq!(
            last,
            Some(agent::Message::Assistant {
                text: "partial".into()
            })
        );
    }
}
