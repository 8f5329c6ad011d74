//! anthropic-messages: `message_start` (input usage) → `content_block_start` (text or
//! `tool_use`) → `content_block_delta` (`text_delta`, `input_json_delta`) → `content_block_stop`
//! → `message_delta` (stop reason, output usage) → `message_stop`; `ping` and unknown events are
//! ignored, `error` ends the answer with the provider's error.

use serde_json::Value;

use super::calls::ToolCalls;
use super::{object, provider_error, str_at, u64_at};
use crate::error::{LlmError, protocol};
use crate::sse::SseEvent;
use crate::types::{Event, StopReason, Usage};

#[derive(Debug, Default)]
pub struct State {
    pub(super) finished: bool,
    usage: Usage,
    stop: Option<StopReason>,
    /// Tool calls by content block number.
    calls: ToolCalls,
}

impl State {
    pub(super) fn feed(&mut self, sse: &SseEvent) -> Result<Vec<Event>, LlmError> {
        let v = object(sse)?;
        let kind = str_at(&v, "/type")
            .or(sse.event.as_deref())
            .unwrap_or_default()
            .to_string();
        let mut out = Vec::new();
        match kind.as_str() {
            "message_start" => {
                let u = v.pointer("/message/usage").cloned().unwrap_or_default();
                self.add_usage(&u);
            }
            "content_block_start" => {
                let block = v.get("content_block").cloned().unwrap_or_default();
                if str_at(&block, "/type") == Some("tool_use") {
                    let number = u64_at(&v, "/index");
                    let (Some(id), Some(name)) = (str_at(&block, "/id"), str_at(&block, "/name"))
                    else {
                        return Err(protocol("a tool_use block without id or name", &sse.data));
                    };
                    self.calls.start(number, |_| id.to_string(), name, &mut out);
                    if let Some(input) = block
                        .get("input")
                        .filter(|i| i.as_object().is_some_and(|o| !o.is_empty()))
                    {
                        self.calls.fragment(number, &input.to_string(), &mut out);
                    }
                } else if let Some(text) = str_at(&block, "/text").filter(|t| !t.is_empty()) {
                    out.push(Event::Text(text.to_string()));
                }
            }
            "content_block_delta" => {
                let number = u64_at(&v, "/index");
                match str_at(&v, "/delta/type") {
                    Some("text_delta") => {
                        if let Some(text) = str_at(&v, "/delta/text").filter(|t| !t.is_empty()) {
                            out.push(Event::Text(text.to_string()));
                        }
                    }
                    Some("input_json_delta") => {
                        let fragment = str_at(&v, "/delta/partial_json").unwrap_or_default();
                        if !self.calls.fragment(number, fragment, &mut out) {
                            return Err(protocol(
                                "input_json_delta for a block that is not a tool_use",
                                &sse.data,
                            ));
                        }
                    }
                    _ => {} // thinking, signatures, citations: not relayed
                }
            }
            "content_block_stop" => {
                let number = u64_at(&v, "/index");
                self.calls.end(number, None, &mut out);
                self.calls.forget(number);
            }
            "message_delta" => {
                if let Some(reason) = str_at(&v, "/delta/stop_reason") {
                    self.stop = Some(match reason {
                        "end_turn" => StopReason::EndTurn,
                        "tool_use" => StopReason::ToolUse,
                        "max_tokens" => StopReason::MaxTokens,
                        other => StopReason::Other(other.to_string()),
                    });
                }
                if let Some(u) = v.get("usage") {
                    self.add_usage(u);
                }
            }
            "message_stop" => {
                out.push(Event::Usage(self.usage));
                let stop = self
                    .stop
                    .take()
                    .unwrap_or_else(|| StopReason::Other("unknown".into()));
                out.push(Event::Finished(stop));
                self.finished = true;
            }
            "error" => {
                return Err(provider_error(v.get("error").unwrap_or(&Value::Null)));
            }
            _ => {} // ping and events added later
        }
        Ok(out)
    }

    /// Anthropic reports input as uncached + cache writes + cache reads; a later count of a
    /// field replaces the earlier one (message_delta's counts are cumulative).
    fn add_usage(&mut self, u: &Value) {
        let field = |name: &str| u.get(name).and_then(Value::as_u64);
        if let Some(input) = field("input_tokens") {
            let written = field("cache_creation_input_tokens").unwrap_or(0);
            let read = field("cache_read_input_tokens").unwrap_or(0);
            self.usage.input_tokens = input + written + read;
            self.usage.cached_tokens = read;
        }
        if let Some(output) = field("output_tokens") {
            self.usage.output_tokens = output;
        }
    }
}
