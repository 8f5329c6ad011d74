//! openai-responses: `response.output_item.added` (a `function_call` item starts a tool call),
//! `response.output_text.delta`, `response.function_call_arguments.delta`,
//! `response.output_item.done`, then `response.completed` (usage; tool use when calls were
//! made) or `response.incomplete` (the limit hit); `response.failed` and `error` end the answer
//! with the provider's error. Other events (created, in_progress, …) are ignored.

use super::calls::ToolCalls;
use super::{object, provider_error, str_at, u64_at};
use crate::error::{LlmError, protocol};
use crate::sse::SseEvent;
use crate::types::{Event, StopReason, Usage};

#[derive(Debug, Default)]
pub struct State {
    pub(super) finished: bool,
    /// Tool calls by output item number.
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
            "response.output_item.added" => {
                let item = v.get("item").cloned().unwrap_or_default();
                if str_at(&item, "/type") == Some("function_call") {
                    let id = str_at(&item, "/call_id").or(str_at(&item, "/id"));
                    let (Some(id), Some(name)) = (id, str_at(&item, "/name")) else {
                        return Err(protocol(
                            "a function_call item without call_id or name",
                            &sse.data,
                        ));
                    };
                    let number = u64_at(&v, "/output_index");
                    self.calls.start(number, |_| id.to_string(), name, &mut out);
                    let arguments = str_at(&item, "/arguments").unwrap_or_default();
                    self.calls.fragment(number, arguments, &mut out);
                }
            }
            "response.output_text.delta" | "response.refusal.delta" => {
                if let Some(text) = str_at(&v, "/delta").filter(|t| !t.is_empty()) {
                    out.push(Event::Text(text.to_string()));
                }
            }
            "response.function_call_arguments.delta" => {
                let fragment = str_at(&v, "/delta").unwrap_or_default();
                if !self
                    .calls
                    .fragment(u64_at(&v, "/output_index"), fragment, &mut out)
                {
                    return Err(protocol(
                        "arguments for an output item that is not a function_call",
                        &sse.data,
                    ));
                }
            }
            "response.output_item.done" => {
                // Without deltas, the finished item carries the whole arguments.
                self.calls.end(
                    u64_at(&v, "/output_index"),
                    str_at(&v, "/item/arguments"),
                    &mut out,
                );
            }
            "response.completed" | "response.incomplete" => {
                let response = v.get("response").cloned().unwrap_or_default();
                if let Some(u) = response.get("usage").filter(|u| u.is_object()) {
                    out.push(Event::Usage(Usage {
                        input_tokens: u64_at(u, "/input_tokens"),
                        output_tokens: u64_at(u, "/output_tokens"),
                        cached_tokens: u64_at(u, "/input_tokens_details/cached_tokens"),
                    }));
                }
                let stop = if kind == "response.incomplete" {
                    match str_at(&response, "/incomplete_details/reason") {
                        Some("max_output_tokens") => StopReason::MaxTokens,
                        Some(other) => StopReason::Other(other.to_string()),
                        None => StopReason::Other("incomplete".into()),
                    }
                } else if self.calls.started() > 0 {
                    StopReason::ToolUse
                } else {
                    StopReason::EndTurn
                };
                out.push(Event::Finished(stop));
                self.finished = true;
            }
            "response.failed" => {
                let error = v.pointer("/response/error").cloned().unwrap_or_default();
                return Err(provider_error(&error));
            }
            "error" => {
                let error = v.get("error").filter(|e| e.is_object()).unwrap_or(&v);
                return Err(provider_error(error));
            }
            _ => {}
        }
        Ok(out)
    }
}
