//! The driver-neutral conversation kaged sends (`Request`, `Message`, `ToolSpec`) and the events a
//! model's streamed answer becomes (`Event`, `Usage`, `StopReason`), plus where it goes
//! (`Endpoint`) and how long kaged waits (`Timeouts`).

use std::collections::BTreeMap;
use std::time::Duration;

use kaged_auth::Secret;
use kaged_config::{Driver, Route};

/// Where a request goes: driver, base URL (`https://api.anthropic.com`; the driver appends
/// `/v1/...`, and a base that already ends in `/v1` is not doubled), key and model.
/// `Debug` shows the key as `Secret(<redacted>)`.
#[derive(Debug, Clone, PartialEq)]
pub struct Endpoint {
    pub driver: Driver,
    pub base_url: String,
    pub api_key: Option<Secret>,
    pub model: String,
}

/// A route's `api_key_env` names a variable that is not set (or is empty).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "provider `{provider}`: the environment variable {var} (its api_key_env in local.toml) is not set in the daemon's environment"
)]
pub struct MissingKey {
    pub provider: String,
    pub var: String,
}

impl Endpoint {
    /// The endpoint of a resolved alias route, its key read from `env` (the daemon's
    /// environment, passed in) by `api_key_env`, else the inline `api_key`; no key at all
    /// when neither is configured (a local server).
    pub fn from_route(route: &Route, env: &BTreeMap<String, String>) -> Result<Self, MissingKey> {
        let api_key = match (&route.provider.api_key_env, &route.provider.api_key) {
            (Some(var), _) => match env.get(var).filter(|v| !v.is_empty()) {
                Some(value) => Some(Secret::new(value.clone())),
                None => {
                    return Err(MissingKey {
                        provider: route.provider_name.clone(),
                        var: var.clone(),
                    });
                }
            },
            (None, Some(inline)) => Some(Secret::new(inline.expose().to_string())),
            (None, None) => None,
        };
        Ok(Endpoint {
            driver: route.driver,
            base_url: route.base_url.clone(),
            api_key,
            model: route.model.clone(),
        })
    }
}

/// One model call: the system prompt, the conversation so far, the tools on offer.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Request {
    pub system: Option<String>,
    pub messages: Vec<Message>,
    pub tools: Vec<ToolSpec>,
    /// The answer's token limit; anthropic-messages requires one and gets
    /// [`DEFAULT_MAX_OUTPUT_TOKENS`] when this is `None`.
    pub max_output_tokens: Option<u32>,
}

/// anthropic-messages' `max_tokens` when the request gives none.
pub const DEFAULT_MAX_OUTPUT_TOKENS: u32 = 4096;

/// One turn of the conversation.
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    User {
        text: String,
    },
    /// What the model said: its text and the tool calls it made (in order).
    Assistant {
        text: String,
        tool_calls: Vec<ToolCall>,
    },
    /// The result of one tool call, matched by the call's id.
    ToolResult {
        call_id: String,
        content: String,
        is_error: bool,
    },
}

/// A tool the model may call; `parameters` is its JSON Schema (an object schema).
#[derive(Debug, Clone, PartialEq)]
pub struct ToolSpec {
    pub name: String,
    pub description: String,
    pub parameters: serde_json::Value,
}

/// A tool call the model made: `arguments` is the JSON text as received (the concatenated
/// fragments), not necessarily valid JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolCall {
    pub id: String,
    pub name: String,
    pub arguments: String,
}

/// What a streamed answer yields, in order. Tool calls are numbered `index` 0, 1, … in the order
/// they start in this answer; their argument fragments concatenate to the call's arguments (a
/// call whose provider sent none gets one fragment `{}`). `Usage` comes at most once, before
/// `Finished`, which is always last.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    Text(String),
    ToolCallStarted {
        index: usize,
        id: String,
        name: String,
    },
    ToolCallArguments {
        index: usize,
        fragment: String,
    },
    Usage(Usage),
    Finished(StopReason),
}

/// Tokens of one model call. `input_tokens` counts every prompt token, cached ones included;
/// `cached_tokens` is the part read from the provider's prompt cache.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cached_tokens: u64,
}

/// Why the model stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StopReason {
    /// It finished its answer.
    EndTurn,
    /// It wants the tool calls it made run.
    ToolUse,
    /// It hit the output token limit.
    MaxTokens,
    /// Anything else, as the provider named it (`stop_sequence`, `refusal`, `content_filter`, …).
    Other(String),
}

/// How long kaged waits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// For the TCP (and TLS) connection.
    pub connect: Duration,
    /// From sending the request until the response headers.
    pub request: Duration,
    /// Between two SSE lines of the answer (events, data, or keep-alive comments).
    pub stall: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(10),
            request: Duration::from_secs(120),
            stall: Duration::from_secs(60),
        }
    }
}
