//! A model agent's session as data: the events of its log ([`AgentEvent`], numbered as
//! [`Sequenced`] records), their size bounds, and the conversation rebuilt from them
//! ([`history`]) so a conversation continues after a daemon restart.
//!
//! The wire form (JSON, tagged by `type`) is documented in `docs/agent-protocol.md`; a test
//! keeps every event type named there.

use serde::{Deserialize, Serialize};

/// Largest `text` of a `text_delta` and `chunk` of a `tool_output`, in bytes: a longer one is
/// split into several events ([`AgentEvent::bounded`]).
pub const MAX_CHUNK_BYTES: usize = 16 * 1024;
/// Largest `content` of a `tool_result` (and `text` of a `message_completed` or
/// `user_message`), in bytes: a longer one is stored cut, with `truncated: true` for a result.
pub const MAX_CONTENT_BYTES: usize = 256 * 1024;

/// Who wrote a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    User,
    Assistant,
}

/// Why a turn ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EndReason {
    /// The model stopped of its own accord.
    EndTurn,
    /// The agent's `max_steps` model calls were used up.
    MaxSteps,
    /// The agent's `max_output_tokens` were used up.
    MaxOutputTokens,
    /// The operator aborted the turn.
    Aborted,
    /// An error ended it (an `error` event says which).
    Error,
}

/// One event of a model agent's session.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum AgentEvent {
    /// A message from the operator (queued for the next model call when a turn runs).
    UserMessage { text: String },
    /// A turn began (`turn` counts from 1 over the whole session).
    TurnStarted { turn: u64 },
    /// The model began a message.
    MessageStarted { role: Role },
    /// Text of the message in progress, as it arrives.
    TextDelta { text: String },
    /// The message is complete: its whole text.
    MessageCompleted { text: String },
    /// The model called a tool. `arguments` is the parsed JSON; arguments that were not JSON
    /// are kept as a JSON string of what the model sent.
    ToolCall {
        call_id: String,
        name: String,
        arguments: serde_json::Value,
    },
    /// Output of a tool still running (e.g. `shell.bash`), as it comes.
    ToolOutput { call_id: String, chunk: String },
    /// The tool finished; `content` is what the model is given back.
    ToolResult {
        call_id: String,
        ok: bool,
        content: String,
        truncated: bool,
    },
    /// Tokens of one model call (and its cost when the operator gave prices).
    Usage {
        input_tokens: u64,
        output_tokens: u64,
        cached_tokens: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cost: Option<f64>,
    },
    /// The turn ended, and why.
    TurnEnded { reason: EndReason },
    /// Something went wrong (`code` is stable, `message` for people).
    Error { code: String, message: String },
    /// The tool call `call_id` waits for the operator's decision (the approval `approval_id`;
    /// the turn is paused until it is decided).
    ApprovalRequested {
        approval_id: String,
        call_id: String,
        tool: String,
        arguments: serde_json::Value,
    },
    /// The approval was decided: `state` `approved`, `denied` or `cancelled`; `decided_by` who
    /// (or `kaged`, with `reason`, when no one did).
    ApprovalDecided {
        approval_id: String,
        call_id: String,
        state: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        decision: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        message: Option<String>,
        decided_by: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// Reasoning the agent shares while it works (an ACP agent's thought chunks), as it comes.
    ThoughtDelta { text: String },
    /// The agent's plan: its entries as it sent them (each with `content`, `status`,
    /// `priority`); a new plan replaces the last one.
    Plan { entries: serde_json::Value },
    /// An ACP agent's own session id (`loaded`: an earlier one it took up again), so a later
    /// run can ask the agent to load it; `mode`: the session mode kaged selected, if any.
    AcpSession {
        session_id: String,
        loaded: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        mode: Option<String>,
    },
}

impl AgentEvent {
    /// Every event type's wire name, in declaration order.
    pub const KINDS: [&'static str; 16] = [
        "user_message",
        "turn_started",
        "message_started",
        "text_delta",
        "message_completed",
        "tool_call",
        "tool_output",
        "tool_result",
        "usage",
        "turn_ended",
        "error",
        "approval_requested",
        "approval_decided",
        "thought_delta",
        "plan",
        "acp_session",
    ];

    /// The wire name of this event (its `type`).
    pub fn kind(&self) -> &'static str {
        let index = match self {
            AgentEvent::UserMessage { .. } => 0,
            AgentEvent::TurnStarted { .. } => 1,
            AgentEvent::MessageStarted { .. } => 2,
            AgentEvent::TextDelta { .. } => 3,
            AgentEvent::MessageCompleted { .. } => 4,
            AgentEvent::ToolCall { .. } => 5,
            AgentEvent::ToolOutput { .. } => 6,
            AgentEvent::ToolResult { .. } => 7,
            AgentEvent::Usage { .. } => 8,
            AgentEvent::TurnEnded { .. } => 9,
            AgentEvent::Error { .. } => 10,
            AgentEvent::ApprovalRequested { .. } => 11,
            AgentEvent::ApprovalDecided { .. } => 12,
            AgentEvent::ThoughtDelta { .. } => 13,
            AgentEvent::Plan { .. } => 14,
            AgentEvent::AcpSession { .. } => 15,
        };
        Self::KINDS[index]
    }

    /// A tool result with `content` cut to [`MAX_CONTENT_BYTES`] (on a character boundary),
    /// `truncated` saying whether it was.
    pub fn tool_result(call_id: impl Into<String>, ok: bool, content: &str) -> AgentEvent {
        let (content, cut) = cut(content, MAX_CONTENT_BYTES);
        AgentEvent::ToolResult {
            call_id: call_id.into(),
            ok,
            content: content.to_string(),
            truncated: cut,
        }
    }

    /// This event within the size bounds: a long `text_delta` or `tool_output` becomes several
    /// events of at most [`MAX_CHUNK_BYTES`]; a long tool result, message or error is cut to
    /// [`MAX_CONTENT_BYTES`] (a tool result then says `truncated: true`). Everything else is
    /// returned as it is.
    pub fn bounded(self) -> Vec<AgentEvent> {
        match self {
            AgentEvent::TextDelta { text } if text.len() > MAX_CHUNK_BYTES => {
                split(&text, MAX_CHUNK_BYTES)
                    .into_iter()
                    .map(|text| AgentEvent::TextDelta { text })
                    .collect()
            }
            AgentEvent::ThoughtDelta { text } if text.len() > MAX_CHUNK_BYTES => {
                split(&text, MAX_CHUNK_BYTES)
                    .into_iter()
                    .map(|text| AgentEvent::ThoughtDelta { text })
                    .collect()
            }
            AgentEvent::ToolOutput { call_id, chunk } if chunk.len() > MAX_CHUNK_BYTES => {
                split(&chunk, MAX_CHUNK_BYTES)
                    .into_iter()
                    .map(|chunk| AgentEvent::ToolOutput {
                        call_id: call_id.clone(),
                        chunk,
                    })
                    .collect()
            }
            AgentEvent::ToolResult {
                call_id,
                ok,
                content,
                truncated,
            } => {
                let (kept, cut_now) = cut(&content, MAX_CONTENT_BYTES);
                vec![AgentEvent::ToolResult {
                    call_id,
                    ok,
                    content: kept.to_string(),
                    truncated: truncated || cut_now,
                }]
            }
            AgentEvent::MessageCompleted { text } => vec![AgentEvent::MessageCompleted {
                text: cut(&text, MAX_CONTENT_BYTES).0.to_string(),
            }],
            AgentEvent::UserMessage { text } => vec![AgentEvent::UserMessage {
                text: cut(&text, MAX_CONTENT_BYTES).0.to_string(),
            }],
            AgentEvent::Error { code, message } => vec![AgentEvent::Error {
                code,
                message: cut(&message, MAX_CONTENT_BYTES).0.to_string(),
            }],
            other => vec![other],
        }
    }
}

/// The longest prefix of `text` of at most `max` bytes ending on a character boundary, and
/// whether anything was cut.
fn cut(text: &str, max: usize) -> (&str, bool) {
    if text.len() <= max {
        return (text, false);
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    (&text[..end], true)
}

/// `text` in pieces of at most `max` bytes (`max` ≥ 4), each ending on a character boundary.
fn split(text: &str, max: usize) -> Vec<String> {
    let mut pieces = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        let (piece, _) = cut(rest, max.max(4));
        pieces.push(piece.to_string());
        rest = &rest[piece.len()..];
    }
    pieces
}

/// One numbered record of a session's event log. `seq` counts from 1 per session with no gap;
/// `at_ms` is when it was appended; `parent_call_id` is set on the events of a subagent, which
/// nest under its parent's tool call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sequenced {
    pub seq: u64,
    pub at_ms: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_call_id: Option<String>,
    pub event: AgentEvent,
}

/// One item of a conversation, as a provider is given it back (the loop maps it to the
/// provider's own message shapes; consecutive assistant items form one assistant message).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Message {
    User {
        text: String,
    },
    Assistant {
        text: String,
    },
    ToolCall {
        call_id: String,
        name: String,
        arguments: serde_json::Value,
    },
    ToolResult {
        call_id: String,
        ok: bool,
        content: String,
    },
}

/// What [`history`] gives a tool call whose result was never recorded (the daemon stopped or
/// the turn was aborted while it ran): providers require a result for every call.
pub const NO_RESULT: &str = "no result: the turn ended before the tool finished";

/// The conversation recorded in `events` (a session's log, in seq order): the operator's
/// messages, the assistant's text, tool calls and their results, in order. Events of
/// subagents (`parent_call_id` set) are not part of it. An assistant message cut short (no
/// `message_completed`) keeps the text its deltas brought; a tool call left without a result
/// gets a failed one saying so ([`NO_RESULT`]) when its turn ends; an operator message
/// recorded while tool calls waited for their results follows those results (providers
/// want every result right after its call).
pub fn history<'a>(events: impl IntoIterator<Item = &'a Sequenced>) -> Vec<Message> {
    let mut out = Vec::new();
    // Text of the assistant message in progress (from its deltas), if one is open.
    let mut open: Option<String> = None;
    // Calls of the current turn still waiting for their result, in call order.
    let mut waiting: Vec<String> = Vec::new();
    // Operator messages that arrived while calls waited: they follow the results.
    let mut deferred: Vec<Message> = Vec::new();
    for record in events {
        if record.parent_call_id.is_some() {
            continue;
        }
        match &record.event {
            AgentEvent::UserMessage { text } => {
                close_message(&mut out, &mut open);
                let message = Message::User { text: text.clone() };
                if waiting.is_empty() {
                    out.push(message);
                } else {
                    deferred.push(message);
                }
            }
            AgentEvent::TurnStarted { .. } | AgentEvent::TurnEnded { .. } => {
                close_message(&mut out, &mut open);
                close_calls(&mut out, &mut waiting);
                out.append(&mut deferred);
            }
            AgentEvent::MessageStarted { role } => {
                close_message(&mut out, &mut open);
                if *role == Role::Assistant {
                    open = Some(String::new());
                }
            }
            AgentEvent::TextDelta { text } => {
                if let Some(acc) = open.as_mut() {
                    acc.push_str(text);
                }
            }
            AgentEvent::MessageCompleted { text } => {
                if open.take().is_some() && !text.is_empty() {
                    out.push(Message::Assistant { text: text.clone() });
                }
            }
            AgentEvent::ToolCall {
                call_id,
                name,
                arguments,
            } => {
                close_message(&mut out, &mut open);
                waiting.push(call_id.clone());
                out.push(Message::ToolCall {
                    call_id: call_id.clone(),
                    name: name.clone(),
                    arguments: arguments.clone(),
                });
            }
            AgentEvent::ToolResult {
                call_id,
                ok,
                content,
                ..
            } => {
                if let Some(i) = waiting.iter().position(|c| c == call_id) {
                    waiting.remove(i);
                    out.push(Message::ToolResult {
                        call_id: call_id.clone(),
                        ok: *ok,
                        content: content.clone(),
                    });
                    if waiting.is_empty() {
                        out.append(&mut deferred);
                    }
                }
            }
            AgentEvent::ToolOutput { .. }
            | AgentEvent::Usage { .. }
            | AgentEvent::Error { .. }
            | AgentEvent::ApprovalRequested { .. }
            | AgentEvent::ApprovalDecided { .. }
            | AgentEvent::ThoughtDelta { .. }
            | AgentEvent::Plan { .. }
            | AgentEvent::AcpSession { .. } => {}
        }
    }
    close_message(&mut out, &mut open);
    close_calls(&mut out, &mut waiting);
    out.append(&mut deferred);
    out
}

fn close_message(out: &mut Vec<Message>, open: &mut Option<String>) {
    if let Some(text) = open.take()
        && !text.is_empty()
    {
        out.push(Message::Assistant { text });
    }
}

fn close_calls(out: &mut Vec<Message>, waiting: &mut Vec<String>) {
    for call_id in waiting.drain(..) {
        out.push(Message::ToolResult {
            call_id,
            ok: false,
            content: NO_RESULT.into(),
        });
    }
}

#[cfg(test)]
#[path = "agent_tests.rs"]
mod tests;
