//! The agent loop of one conversation, a task as long as its run: wait for operator messages,
//! run a turn (model call, tool calls, model call, …) until the model stops, `max_steps` or
//! `max_output_tokens`, an abort or the run's end. Every turn ends with exactly one
//! `turn_ended` record (a turn paused on approvals when its run ends stays open, and goes on
//! when the conversation next runs). The conversation given to the model is rebuilt from the log at each
//! call (`kaged_session::agent::history`), so a resumed session continues with its history.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use kaged_llm::{Client, Message, Request, StopReason, Timeouts, ToolSpec};
use kaged_session::agent::{self, AgentEvent, EndReason};
use kaged_tools::ToolExecutor;
use tokio::sync::watch;

use super::model::{self, Failed};
use super::subagent::{self, CageBase};
use super::{Control, Setup};
use crate::notify::Notification;
use crate::sessions::{RunSettings, Sessions};

mod calls;
mod paused;

use calls::Call;

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
    /// Numbers the subagent cages of this run (names their cgroups; from a random start).
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
                self.sessions.deps().hooks.session_idle(&self.id);
            }
        }
    }

    fn timeouts(&self) -> Timeouts {
        let models = &self.sessions.deps().settings.models;
        Timeouts {
            request: std::time::Duration::from_secs(models.request_timeout_secs),
            stall: std::time::Duration::from_secs(models.stall_timeout_secs),
            ..Timeouts::default()
        }
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
        tools.extend(self.plugin_tool_specs(scope));
        if scope.depth < MAX_DEPTH {
            tools.extend(subagent::specs(&self.base.project, setup));
        }
        let turn = Turn {
            conversation: self,
            parent: scope.parent,
        };
        if !paused.is_empty() && !self.finish_calls(scope, client, paused).await? {
            return Ok(EndReason::Aborted);
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
            if !self.run_tools(scope, client, answer.tool_calls).await? {
                return Ok(EndReason::Aborted);
            }
            if answer.stop == StopReason::MaxTokens {
                return Ok(EndReason::MaxOutputTokens);
            }
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
        paused: Vec<calls::Call>,
    ) -> (Option<EndReason>, bool, String) {
        let task = match kaged_tools::arguments_of(&arguments) {
            Ok(args) => match args.get("task").and_then(|t| t.as_str()) {
                Some(task) if !task.trim().is_empty() => task.to_string(),
                _ => {
                    return (
                        None,
                        false,
                        "give the subagent a task: {\"task\": \"...\"}".into(),
                    );
                }
            },
            Err(e) => return (None, false, e),
        };
        let n = self.subagents.fetch_add(1, Ordering::Relaxed) + 1;
        let cage = match subagent::start(&self.sessions, &self.base, &setup, n).await {
            Ok(c) => c,
            Err(e) => {
                return (
                    None,
                    false,
                    format!("the subagent `{}` cannot start: {e}", setup.agent),
                );
            }
        };
        // A paused turn goes on: its task is in the log already.
        if paused.is_empty()
            && let Err(e) = self
                .record_in(Some(call_id), vec![AgentEvent::UserMessage { text: task }])
                .await
        {
            return (None, false, e);
        }
        let sub = Scope {
            parent: Some(call_id),
            setup: &setup,
            executor: &cage.executor,
            depth: scope.depth + 1,
        };
        let reason = self.turn(sub, 1, client, paused).await;
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
            EndReason::EndTurn => (Some(reason), true, answer),
            other => (
                Some(reason),
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

impl Conversation {
    /// The plugins `scope`'s agent may call tools of (its `plugins:`).
    fn agent_plugins(&self, scope: Scope<'_>) -> Vec<String> {
        self.base
            .project
            .agent(&scope.setup.agent)
            .map(|a| a.plugins.clone())
            .unwrap_or_default()
    }

    /// Whether `name` is a tool of one of `scope`'s agent's plugins.
    fn is_plugin_tool(&self, scope: Scope<'_>, name: &str) -> bool {
        self.sessions
            .deps()
            .plugins
            .as_ref()
            .is_some_and(|p| p.has_tool(&self.agent_plugins(scope), name))
    }

    /// `scope`'s agent as a caller of its plugins' tools.
    fn plugin_caller(&self, scope: Scope<'_>) -> crate::plugins::Caller {
        let agent = self.base.project.agent(&scope.setup.agent);
        crate::plugins::Caller {
            project: self.base.slug.clone(),
            session_id: self.id.clone(),
            agent: scope.setup.agent.clone(),
            plugins: agent.map(|a| a.plugins.clone()).unwrap_or_default(),
            plugin_config: agent.map(|a| a.plugin_config.clone()).unwrap_or_default(),
        }
    }

    /// The tools of the agent's plugins that are installed and enabled, offered to the model
    /// as `PLUGIN.TOOL`.
    fn plugin_tool_specs(&self, scope: Scope<'_>) -> Vec<ToolSpec> {
        let Some(plugins) = &self.sessions.deps().plugins else {
            return Vec::new();
        };
        plugins
            .tools_of(&self.agent_plugins(scope))
            .into_iter()
            .map(|(name, description, parameters)| ToolSpec {
                name,
                description,
                parameters,
            })
            .collect()
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
#[path = "turn_tests.rs"]
mod tests;
