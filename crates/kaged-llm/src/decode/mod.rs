//! Pure decoders: one driver's SSE events → [`Event`]s. Each keeps the state a stream needs (the
//! provider's block or item numbers → kaged's tool-call indexes, usage, the stop reason) and says
//! when the answer is complete; anything after that is ignored.

mod anthropic;
mod calls;
mod completions;
mod responses;

use std::collections::BTreeMap;

use kaged_config::Driver;
use serde_json::Value;

use crate::build::wire_tool_name;
use crate::error::{LlmError, protocol};
use crate::sse::SseEvent;
use crate::types::{Event, ToolSpec};

/// The decoder of one answer.
#[derive(Debug)]
pub struct Decoder {
    state: DriverState,
    /// Tool names as sent on the wire → kaged's names (see [`crate::build::wire_tool_name`]).
    names: BTreeMap<String, String>,
}

#[derive(Debug)]
enum DriverState {
    Anthropic(anthropic::State),
    Responses(responses::State),
    Completions(completions::State),
}

impl Decoder {
    /// A decoder for `driver`'s answer to a request offering `tools`.
    pub fn new(driver: Driver, tools: &[ToolSpec]) -> Self {
        let state = match driver {
            Driver::AnthropicMessages => DriverState::Anthropic(Default::default()),
            Driver::OpenaiResponses => DriverState::Responses(Default::default()),
            Driver::OpenaiCompletions => DriverState::Completions(Default::default()),
        };
        let names = tools
            .iter()
            .map(|t| (wire_tool_name(&t.name), t.name.clone()))
            .collect();
        Decoder { state, names }
    }

    /// The events one SSE event yields (none once finished).
    pub fn feed(&mut self, sse: &SseEvent) -> Result<Vec<Event>, LlmError> {
        if self.finished() {
            return Ok(Vec::new());
        }
        let mut events = match &mut self.state {
            DriverState::Anthropic(s) => s.feed(sse),
            DriverState::Responses(s) => s.feed(sse),
            DriverState::Completions(s) => s.feed(sse),
        }?;
        for event in &mut events {
            if let Event::ToolCallStarted { name, .. } = event
                && let Some(original) = self.names.get(name.as_str())
            {
                name.clone_from(original);
            }
        }
        Ok(events)
    }

    /// Whether `Finished` was yielded.
    pub fn finished(&self) -> bool {
        match &self.state {
            DriverState::Anthropic(s) => s.finished,
            DriverState::Responses(s) => s.finished,
            DriverState::Completions(s) => s.finished,
        }
    }
}

/// Decode the whole of `stream` (SSE text) for `driver`: every event, or the first error.
/// For tests and tools; the client decodes incrementally.
pub fn decode_all(
    driver: Driver,
    tools: &[ToolSpec],
    stream: &[u8],
) -> Result<Vec<Event>, LlmError> {
    let mut parser = crate::sse::SseParser::new();
    let mut decoder = Decoder::new(driver, tools);
    let mut out = Vec::new();
    let mut sse = parser.push(stream)?;
    sse.extend(parser.finish()?);
    for event in &sse {
        out.extend(decoder.feed(event)?);
    }
    Ok(out)
}

/// An event's data as a JSON object.
fn object(sse: &SseEvent) -> Result<Value, LlmError> {
    match serde_json::from_str::<Value>(&sse.data) {
        Ok(v @ Value::Object(_)) => Ok(v),
        Ok(_) => Err(protocol(
            "an event whose data is not a JSON object",
            &sse.data,
        )),
        Err(e) => Err(protocol(
            &format!("an event whose data is not JSON ({e})"),
            &sse.data,
        )),
    }
}

fn str_at<'a>(v: &'a Value, pointer: &str) -> Option<&'a str> {
    v.pointer(pointer).and_then(Value::as_str)
}

fn u64_at(v: &Value, pointer: &str) -> u64 {
    v.pointer(pointer).and_then(Value::as_u64).unwrap_or(0)
}

/// A provider's error object (`{"type"|"code": …, "message": …}`) as [`LlmError::Provider`].
fn provider_error(error: &Value) -> LlmError {
    let kind = ["code", "type"]
        .iter()
        .find_map(|k| match error.get(*k) {
            Some(Value::String(s)) => Some(s.clone()),
            Some(Value::Number(n)) => Some(n.to_string()),
            _ => None,
        })
        .unwrap_or_else(|| "error".to_string());
    let message = error
        .get("message")
        .and_then(Value::as_str)
        .map(|m| crate::error::shorten(m, 2000))
        .unwrap_or_else(|| crate::error::shorten(&error.to_string(), 500));
    LlmError::Provider { kind, message }
}

#[cfg(test)]
#[path = "tests.rs"]
mod tests;
