//! The agent loop of one conversation, a task as long as its run: wait for operator messages,
//! run a turn (model call, tool calls, model call, …) until the model stops, `max_steps` or
//! `max_output_tokens`, an abort or the run's end. Every turn ends with exactly one
//! `turn_ended` record. The conversation given to the model is rebuilt from the log at each
//! call (`kaged_session::agent::history`), so a resumed session continues with its history.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use kaged_llm::{Client, Message, Request, StopReason, Timeouts, ToolSpec};
use kaged_session::agent::{self, AgentEvent, EndReason};
use kaged_tools::ToolExecutor;
use tokio::sync::watch;

use super::model::{self, Failed};
use super::{Control, Setup};
use crate::sessions::{RunSettings, Sessions};

/// What the loop works with.
pub(crate) struct Conversation {
    pub sessions: Sessions,
    pub id: String,
    pub root: PathBuf,
    pub setup: Setup,
    pub control: Arc<Control>,
}

/// One turn in progress (what the model call and the tools record through).
pub(crate) struct Turn<'a> {
    conversation: &'a Conversation,
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
        self.conversation.record(events).await
    }
}

impl Conversation {
    async fn record(&self, events: Vec<AgentEvent>) -> Result<(), String> {
        let events: Vec<AgentEvent> = events.into_iter().flat_map(AgentEvent::bounded).collect();
        if events.is_empty() {
            return Ok(());
        }
        self.sessions
            .agent_log()
            .append(&self.id, None, events)
            .await
            .map(|_| ())
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
        let mut turns = match self.close_open_turn().await {
            Ok(n) => n,
            Err(e) => {
                tracing::error!(session = %self.id, error = %e, "cannot read the conversation");
                return;
            }
        };
        loop {
            if !self.control.has_queued() {
                tokio::select! {
                    _ = self.control.wake.notified() => {}
                    _ = ended.wait_for(|e| *e) => return,
                }
                continue;
            }
            turns += 1;
            let mut abort = self.control.abort.subscribe();
            abort.mark_unchanged();
            self.control.in_turn.store(true, Ordering::SeqCst);
            let reason = tokio::select! {
                reason = self.turn(turns, &client, &executor) => reason,
                _ = abort.changed() => EndReason::Aborted,
                _ = ended.wait_for(|e| *e) => EndReason::Aborted,
            };
            let _ = self.record(vec![AgentEvent::TurnEnded { reason }]).await;
            self.control.in_turn.store(false, Ordering::SeqCst);
            if *ended.borrow() {
                return;
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

    /// The number of turns so far; a turn an earlier run left open (kaged stopped during it)
    /// is closed first, saying so.
    async fn close_open_turn(&self) -> Result<u64, String> {
        let records = self
            .sessions
            .agent_log()
            .read_all(&self.id)
            .await
            .map_err(|e| e.to_string())?;
        let mut turns = 0;
        let mut open = false;
        for r in records.iter().filter(|r| r.parent_call_id.is_none()) {
            match r.event {
                AgentEvent::TurnStarted { turn } => {
                    turns = turn;
                    open = true;
                }
                AgentEvent::TurnEnded { .. } => open = false,
                _ => {}
            }
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
        Ok(turns)
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

    /// One turn; records an `error` when one ends it (the caller records `turn_ended`).
    async fn turn(&self, number: u64, client: &Client, executor: &ToolExecutor) -> EndReason {
        match self.steps(number, client, executor).await {
            Ok(reason) => reason,
            Err(Failed { code, message }) => {
                let _ = self
                    .record(vec![AgentEvent::Error {
                        code: code.into(),
                        message,
                    }])
                    .await;
                EndReason::Error
            }
        }
    }

    async fn steps(
        &self,
        number: u64,
        client: &Client,
        executor: &ToolExecutor,
    ) -> Result<EndReason, Failed> {
        let storage = |message: String| Failed {
            code: "storage",
            message,
        };
        self.take_messages().await.map_err(storage)?;
        self.record(vec![AgentEvent::TurnStarted { turn: number }])
            .await
            .map_err(storage)?;
        let setup = &self.setup;
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
        let tools = tool_specs(&setup.tools);
        let turn = Turn { conversation: self };
        let mut steps = 0u64;
        loop {
            if setup.max_steps.is_some_and(|max| steps >= max) {
                return Ok(EndReason::MaxSteps);
            }
            steps += 1;
            // Steering: what the operator sent meanwhile joins before this call.
            self.take_messages().await.map_err(storage)?;
            let records = self
                .sessions
                .agent_log()
                .read_all(&self.id)
                .await
                .map_err(|e| storage(e.to_string()))?;
            let request = Request {
                system: system.clone(),
                messages: conversation_of(&agent::history(&records)),
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
            self.run_tools(executor, answer.tool_calls).await?;
            if answer.stop == StopReason::MaxTokens {
                return Ok(EndReason::MaxOutputTokens);
            }
        }
    }

    /// Record the calls, run them at once in the cage, record each result as it comes.
    async fn run_tools(
        &self,
        executor: &ToolExecutor,
        calls: Vec<kaged_llm::ToolCall>,
    ) -> Result<(), Failed> {
        let storage = |message: String| Failed {
            code: "storage",
            message,
        };
        let mut started = Vec::new();
        let mut events = Vec::new();
        for call in calls {
            let arguments = serde_json::from_str(&call.arguments)
                .unwrap_or(serde_json::Value::String(call.arguments.clone()));
            events.push(AgentEvent::ToolCall {
                call_id: call.id.clone(),
                name: call.name.clone(),
                arguments: arguments.clone(),
            });
            let pending = if self.setup.tools.contains(&call.name) {
                executor
                    .start(&call.name, arguments)
                    .map_err(|e| e.to_string())
            } else {
                let offered: Vec<&str> = self.setup.tools.iter().map(String::as_str).collect();
                Err(format!(
                    "unknown tool `{}`; the tools are: {}",
                    call.name,
                    offered.join(", ")
                ))
            };
            started.push((call.id, pending));
        }
        self.record(events).await.map_err(storage)?;
        let mut gone = None;
        for (call_id, pending) in started {
            let (ok, content) = match pending {
                Ok(p) => match p.outcome().await {
                    Ok(outcome) => (outcome.is_ok(), outcome.text().to_string()),
                    Err(e) => {
                        gone = Some(e.to_string());
                        (false, e.to_string())
                    }
                },
                Err(message) => (false, message),
            };
            self.record(vec![AgentEvent::tool_result(call_id, ok, &content)])
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
}
