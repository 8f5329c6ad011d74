//! Request building, pure: an [`Endpoint`] and a [`Request`] → the URL, headers and JSON body each
//! driver sends. The key goes only into the one auth header, marked sensitive by the edge.

use kaged_auth::Secret;
use kaged_config::Driver;
use serde_json::{Map, Value, json};

use crate::types::{DEFAULT_MAX_OUTPUT_TOKENS, Endpoint, Message, Request};

/// The `anthropic-version` header kaged speaks.
pub const ANTHROPIC_VERSION: &str = "2023-06-01";

/// How the key is sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Auth {
    /// `x-api-key: KEY` (anthropic-messages).
    XApiKey(Secret),
    /// `authorization: Bearer KEY` (the OpenAI drivers).
    Bearer(Secret),
}

/// One HTTP request, ready to send. `Debug` never shows the key.
#[derive(Debug, Clone, PartialEq)]
pub struct WireRequest {
    pub url: String,
    /// Every header but the key's.
    pub headers: Vec<(&'static str, String)>,
    pub auth: Option<Auth>,
    pub body: Value,
}

/// A tool's name as providers accept it (`^[a-zA-Z0-9_-]{1,64}$`): `.` becomes `__`, any other
/// character outside the set `_`, cut at 64. Answers map it back ([`crate::decode::Decoder`]).
pub fn wire_tool_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for c in name.chars() {
        match c {
            '.' => out.push_str("__"),
            c if c.is_ascii_alphanumeric() || c == '_' || c == '-' => out.push(c),
            _ => out.push('_'),
        }
    }
    out.truncate(64);
    out
}

/// `{base}/v1/{path}`; a base already ending in `/v1` is not doubled.
fn url(base: &str, path: &str) -> String {
    let base = base.trim_end_matches('/');
    let base = base.strip_suffix("/v1").unwrap_or(base);
    format!("{base}/v1/{path}")
}

/// The request `endpoint`'s driver sends for `request`.
pub fn build(endpoint: &Endpoint, request: &Request) -> WireRequest {
    let mut headers = vec![
        ("content-type", "application/json".to_string()),
        ("accept", "text/event-stream".to_string()),
    ];
    let key = endpoint.api_key.clone();
    match endpoint.driver {
        Driver::AnthropicMessages => {
            headers.push(("anthropic-version", ANTHROPIC_VERSION.to_string()));
            WireRequest {
                url: url(&endpoint.base_url, "messages"),
                headers,
                auth: key.map(Auth::XApiKey),
                body: anthropic(&endpoint.model, request),
            }
        }
        Driver::OpenaiResponses => WireRequest {
            url: url(&endpoint.base_url, "responses"),
            headers,
            auth: key.map(Auth::Bearer),
            body: responses(&endpoint.model, request),
        },
        Driver::OpenaiCompletions => WireRequest {
            url: url(&endpoint.base_url, "chat/completions"),
            headers,
            auth: key.map(Auth::Bearer),
            body: completions(&endpoint.model, request),
        },
    }
}

/// A call's arguments as the JSON object Anthropic wants back; `{}` when they are not one.
fn arguments_object(arguments: &str) -> Value {
    match serde_json::from_str::<Value>(arguments) {
        Ok(v @ Value::Object(_)) => v,
        _ => json!({}),
    }
}

fn anthropic(model: &str, request: &Request) -> Value {
    // Roles must alternate: consecutive user-side blocks (tool results, then text) merge.
    let mut messages: Vec<(&str, Vec<Value>)> = Vec::new();
    for message in &request.messages {
        let (role, blocks) = match message {
            Message::User { text } => ("user", text_block(text)),
            Message::Assistant { text, tool_calls } => {
                let mut blocks = text_block(text);
                blocks.extend(tool_calls.iter().map(|c| {
                    json!({"type": "tool_use", "id": c.id, "name": wire_tool_name(&c.name),
                           "input": arguments_object(&c.arguments)})
                }));
                ("assistant", blocks)
            }
            Message::ToolResult {
                call_id,
                content,
                is_error,
            } => {
                let mut block =
                    json!({"type": "tool_result", "tool_use_id": call_id, "content": content});
                if *is_error {
                    block["is_error"] = Value::Bool(true);
                }
                ("user", vec![block])
            }
        };
        if blocks.is_empty() {
            continue;
        }
        match messages.last_mut() {
            Some((last, existing)) if *last == role => existing.extend(blocks),
            _ => messages.push((role, blocks)),
        }
    }
    let mut body = Map::new();
    body.insert("model".into(), json!(model));
    body.insert(
        "max_tokens".into(),
        json!(
            request
                .max_output_tokens
                .unwrap_or(DEFAULT_MAX_OUTPUT_TOKENS)
        ),
    );
    if let Some(system) = &request.system {
        body.insert("system".into(), json!(system));
    }
    body.insert(
        "messages".into(),
        Value::Array(
            messages
                .into_iter()
                .map(|(role, content)| json!({"role": role, "content": content}))
                .collect(),
        ),
    );
    if !request.tools.is_empty() {
        body.insert(
            "tools".into(),
            request
                .tools
                .iter()
                .map(|t| json!({"name": wire_tool_name(&t.name), "description": t.description, "input_schema": t.parameters}))
                .collect(),
        );
    }
    body.insert("stream".into(), Value::Bool(true));
    Value::Object(body)
}

/// Anthropic refuses empty text blocks.
fn text_block(text: &str) -> Vec<Value> {
    if text.is_empty() {
        Vec::new()
    } else {
        vec![json!({"type": "text", "text": text})]
    }
}

fn responses(model: &str, request: &Request) -> Value {
    let mut input = Vec::new();
    for message in &request.messages {
        match message {
            Message::User { text } => {
                input.push(json!({"type": "message", "role": "user", "content": text}));
            }
            Message::Assistant { text, tool_calls } => {
                if !text.is_empty() {
                    input.push(json!({"type": "message", "role": "assistant", "content": text}));
                }
                input.extend(tool_calls.iter().map(|c| {
                    json!({"type": "function_call", "call_id": c.id, "name": wire_tool_name(&c.name),
                           "arguments": c.arguments})
                }));
            }
            Message::ToolResult {
                call_id, content, ..
            } => input.push(
                json!({"type": "function_call_output", "call_id": call_id, "output": content}),
            ),
        }
    }
    let mut body = Map::new();
    body.insert("model".into(), json!(model));
    if let Some(system) = &request.system {
        body.insert("instructions".into(), json!(system));
    }
    body.insert("input".into(), Value::Array(input));
    if !request.tools.is_empty() {
        body.insert(
            "tools".into(),
            request
                .tools
                .iter()
                .map(|t| {
                    json!({"type": "function", "name": wire_tool_name(&t.name), "description": t.description,
                           "parameters": t.parameters})
                })
                .collect(),
        );
    }
    if let Some(max) = request.max_output_tokens {
        body.insert("max_output_tokens".into(), json!(max));
    }
    // kaged sends the whole history each time; nothing needs keeping at the provider.
    body.insert("store".into(), Value::Bool(false));
    body.insert("stream".into(), Value::Bool(true));
    Value::Object(body)
}

fn completions(model: &str, request: &Request) -> Value {
    let mut messages = Vec::new();
    if let Some(system) = &request.system {
        messages.push(json!({"role": "system", "content": system}));
    }
    for message in &request.messages {
        match message {
            Message::User { text } => messages.push(json!({"role": "user", "content": text})),
            Message::Assistant { text, tool_calls } => {
                if tool_calls.is_empty() {
                    if !text.is_empty() {
                        messages.push(json!({"role": "assistant", "content": text}));
                    }
                    continue;
                }
                let calls: Vec<Value> = tool_calls
                    .iter()
                    .map(|c| {
                        json!({"id": c.id, "type": "function",
                               "function": {"name": wire_tool_name(&c.name), "arguments": c.arguments}})
                    })
                    .collect();
                let content = if text.is_empty() {
                    Value::Null
                } else {
                    json!(text)
                };
                messages
                    .push(json!({"role": "assistant", "content": content, "tool_calls": calls}));
            }
            Message::ToolResult {
                call_id, content, ..
            } => {
                messages.push(json!({"role": "tool", "tool_call_id": call_id, "content": content}))
            }
        }
    }
    let mut body = Map::new();
    body.insert("model".into(), json!(model));
    body.insert("messages".into(), Value::Array(messages));
    if !request.tools.is_empty() {
        body.insert(
            "tools".into(),
            request
                .tools
                .iter()
                .map(|t| {
                    json!({"type": "function", "function": {"name": wire_tool_name(&t.name),
                           "description": t.description, "parameters": t.parameters}})
                })
                .collect(),
        );
    }
    if let Some(max) = request.max_output_tokens {
        body.insert("max_tokens".into(), json!(max));
    }
    body.insert("stream".into(), Value::Bool(true));
    body.insert("stream_options".into(), json!({"include_usage": true}));
    Value::Object(body)
}

#[cfg(test)]
#[path = "build_tests.rs"]
mod tests;
