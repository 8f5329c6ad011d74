//! Replies written for the agents tests, one shape for every driver: text deltas, tool calls
//! with arguments in the fragments they arrive in, the stop reason and usage; error statuses
//! and raw SSE for malformed streams. `agents_replies` checks they decode as meant.

use std::time::Duration;

use serde_json::{Value, json};

use super::{ANTHROPIC, RESPONSES};
use super::{Part, Reply, wire_name};

/// One tool call of a reply: its id, its (dotted) name and its arguments in the fragments they
/// arrive in.
#[derive(Debug, Clone)]
pub struct Call {
    pub id: String,
    pub name: String,
    pub fragments: Vec<String>,
}

impl Call {
    /// `arguments` sent whole in one fragment.
    pub fn new(id: &str, name: &str, arguments: &Value) -> Call {
        Call {
            id: id.into(),
            name: name.into(),
            fragments: vec![arguments.to_string()],
        }
    }

    /// The arguments as given, cut into fragments (they need not be JSON).
    pub fn split(id: &str, name: &str, fragments: &[&str]) -> Call {
        Call {
            id: id.into(),
            name: name.into(),
            fragments: fragments.iter().map(|f| f.to_string()).collect(),
        }
    }
}

/// How a reply stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    EndTurn,
    ToolUse,
    MaxTokens,
}

/// A streamed reply of `driver`: `text` deltas, then `calls`, then the stop and usage
/// (`input_tokens` 10, `output_tokens` `output`). Each SSE event is its own write, `pause_ms`
/// apart (0: no pause).
pub fn reply(
    driver: &str,
    text: &[&str],
    calls: &[Call],
    stop: Stop,
    output: u64,
    pause_ms: u64,
) -> Reply {
    let events = match driver {
        ANTHROPIC => anthropic_events(text, calls, stop, output),
        RESPONSES => responses_events(text, calls, stop, output),
        _ => completions_events(text, calls, stop, output),
    };
    let mut parts = Vec::new();
    for e in events {
        parts.push(Part::Bytes(e.into_bytes()));
        if pause_ms > 0 {
            parts.push(Part::Pause(Duration::from_millis(pause_ms)));
        }
    }
    Reply {
        status: 200,
        headers: vec![("content-type".into(), "text/event-stream".into())],
        parts,
    }
}

/// A text answer that ends the turn.
pub fn text_reply(driver: &str, text: &[&str]) -> Reply {
    reply(driver, text, &[], Stop::EndTurn, text.len() as u64, 0)
}

/// A reply that calls tools (and says nothing).
pub fn tool_reply(driver: &str, calls: &[Call]) -> Reply {
    reply(driver, &[], calls, Stop::ToolUse, 5, 0)
}

/// A reply with status `status`, JSON body `body` and extra headers (e.g. `retry-after`).
pub fn status_reply(status: u16, headers: &[(&str, &str)], body: &Value) -> Reply {
    let mut all = vec![("content-type".to_string(), "application/json".to_string())];
    all.extend(headers.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    Reply {
        status,
        headers: all,
        parts: vec![Part::Bytes(body.to_string().into_bytes())],
    }
}

/// An SSE reply made of `body` as is (for malformed streams).
pub fn raw_sse(body: &str) -> Reply {
    Reply {
        status: 200,
        headers: vec![("content-type".into(), "text/event-stream".into())],
        parts: vec![Part::Bytes(body.as_bytes().to_vec())],
    }
}

fn sse(event: Option<&str>, data: &Value) -> String {
    match event {
        Some(e) => format!("event: {e}\ndata: {data}\n\n"),
        None => format!("data: {data}\n\n"),
    }
}

fn completions_events(text: &[&str], calls: &[Call], stop: Stop, output: u64) -> Vec<String> {
    let chunk = |delta: Value, finish: Value| {
        sse(
            None,
            &json!({"id": "chatcmpl-e2e", "object": "chat.completion.chunk", "created": 1,
                    "model": "e2e", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}),
        )
    };
    let mut out = vec![chunk(
        json!({"role": "assistant", "content": ""}),
        Value::Null,
    )];
    for t in text {
        out.push(chunk(json!({ "content": t }), Value::Null));
    }
    for (i, c) in calls.iter().enumerate() {
        out.push(chunk(
            json!({"tool_calls": [{"index": i, "id": c.id, "type": "function",
                   "function": {"name": wire_name(&c.name), "arguments": ""}}]}),
            Value::Null,
        ));
        for f in &c.fragments {
            out.push(chunk(
                json!({"tool_calls": [{"index": i, "function": {"arguments": f}}]}),
                Value::Null,
            ));
        }
    }
    let finish = match stop {
        Stop::EndTurn => "stop",
        Stop::ToolUse => "tool_calls",
        Stop::MaxTokens => "length",
    };
    out.push(chunk(json!({}), json!(finish)));
    out.push(sse(
        None,
        &json!({"id": "chatcmpl-e2e", "object": "chat.completion.chunk", "created": 1, "model": "e2e",
                "choices": [], "usage": {"prompt_tokens": 10, "completion_tokens": output,
                "total_tokens": 10 + output, "prompt_tokens_details": {"cached_tokens": 0}}}),
    ));
    out.push("data: [DONE]\n\n".into());
    out
}

fn anthropic_events(text: &[&str], calls: &[Call], stop: Stop, output: u64) -> Vec<String> {
    let mut out = vec![sse(
        Some("message_start"),
        &json!({"type": "message_start", "message": {"id": "msg_e2e", "type": "message",
                "role": "assistant", "model": "e2e", "content": [], "stop_reason": null,
                "stop_sequence": null, "usage": {"input_tokens": 10, "output_tokens": 1}}}),
    )];
    let mut index = 0;
    if !text.is_empty() {
        out.push(sse(
            Some("content_block_start"),
            &json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
        ));
        for t in text {
            out.push(sse(
                Some("content_block_delta"),
                &json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": t}}),
            ));
        }
        out.push(sse(
            Some("content_block_stop"),
            &json!({"type": "content_block_stop", "index": 0}),
        ));
        index = 1;
    }
    for c in calls {
        out.push(sse(
            Some("content_block_start"),
            &json!({"type": "content_block_start", "index": index, "content_block":
                    {"type": "tool_use", "id": c.id, "name": wire_name(&c.name), "input": {}}}),
        ));
        for f in &c.fragments {
            out.push(sse(
                Some("content_block_delta"),
                &json!({"type": "content_block_delta", "index": index,
                        "delta": {"type": "input_json_delta", "partial_json": f}}),
            ));
        }
        out.push(sse(
            Some("content_block_stop"),
            &json!({"type": "content_block_stop", "index": index}),
        ));
        index += 1;
    }
    let reason = match stop {
        Stop::EndTurn => "end_turn",
        Stop::ToolUse => "tool_use",
        Stop::MaxTokens => "max_tokens",
    };
    out.push(sse(
        Some("message_delta"),
        &json!({"type": "message_delta", "delta": {"stop_reason": reason, "stop_sequence": null},
                "usage": {"output_tokens": output}}),
    ));
    out.push(sse(Some("message_stop"), &json!({"type": "message_stop"})));
    out
}

fn responses_events(text: &[&str], calls: &[Call], stop: Stop, output: u64) -> Vec<String> {
    let ev = |kind: &str, mut body: Value| {
        body["type"] = json!(kind);
        sse(Some(kind), &body)
    };
    let mut out = vec![ev(
        "response.created",
        json!({"response": {"id": "resp_e2e", "object": "response", "status": "in_progress",
               "model": "e2e", "output": []}}),
    )];
    let mut index = 0;
    if !text.is_empty() {
        out.push(ev(
            "response.output_item.added",
            json!({"output_index": 0, "item": {"id": "msg_e2e", "type": "message",
                   "status": "in_progress", "role": "assistant", "content": []}}),
        ));
        for t in text {
            out.push(ev(
                "response.output_text.delta",
                json!({"item_id": "msg_e2e", "output_index": 0, "content_index": 0, "delta": t}),
            ));
        }
        let whole: String = text.concat();
        out.push(ev(
            "response.output_item.done",
            json!({"output_index": 0, "item": {"id": "msg_e2e", "type": "message", "status": "completed",
                   "role": "assistant", "content": [{"type": "output_text", "text": whole, "annotations": []}]}}),
        ));
        index = 1;
    }
    for c in calls {
        let item = format!("fc_{index}");
        out.push(ev(
            "response.output_item.added",
            json!({"output_index": index, "item": {"id": item, "type": "function_call",
                   "status": "in_progress", "call_id": c.id, "name": wire_name(&c.name), "arguments": ""}}),
        ));
        for f in &c.fragments {
            out.push(ev(
                "response.function_call_arguments.delta",
                json!({"item_id": item, "output_index": index, "delta": f}),
            ));
        }
        out.push(ev(
            "response.output_item.done",
            json!({"output_index": index, "item": {"id": item, "type": "function_call",
                   "status": "completed", "call_id": c.id, "name": wire_name(&c.name),
                   "arguments": c.fragments.concat()}}),
        ));
        index += 1;
    }
    let usage = json!({"input_tokens": 10, "input_tokens_details": {"cached_tokens": 0},
                       "output_tokens": output, "total_tokens": 10 + output});
    out.push(match stop {
        Stop::MaxTokens => ev(
            "response.incomplete",
            json!({"response": {"id": "resp_e2e", "status": "incomplete",
                   "incomplete_details": {"reason": "max_output_tokens"}, "usage": usage}}),
        ),
        _ => ev(
            "response.completed",
            json!({"response": {"id": "resp_e2e", "status": "completed", "usage": usage}}),
        ),
    });
    out
}
