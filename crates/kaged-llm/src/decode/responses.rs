//! openai-responses: `response.output_item.added` (a `function_call` item starts a tool call),
//! `response.output_text.delta`, `response.function_call_arguments.delta`,
//! `response.output_item.done`, then `response.completed` (usage; tool use when calls were
//! made) or `response.incomplete` (the limit hit); `response.failed` and `error` end the answer
//! with the provider's error. Other events (created, in_progress, …) are ignored.

use std::collections::BTreeMap;

use super::{object, provider_error, str_at, u64_at};
use crate::error::{LlmError, protocol};
use crate::sse::SseEvent;
use crate::types::{Event, StopReason, Usage};

#[derive(Debug)]
struct Call {
    index: usize,
    fragments: bool,
}

#[derive(Debug, Default)]
pub struct State {
    pub(super) finished: bool,
    /// Output item number → tool call.
    calls: BTreeMap<u64, Call>,
    count: usize,
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
                    let index = self.count;
                    self.count += 1;
                    out.push(Event::ToolCallStarted {
                        index,
                        id: id.to_string(),
                        name: name.to_string(),
                    });
                    let arguments = str_at(&item, "/arguments").unwrap_or_default();
                    if !arguments.is_empty() {
                        out.push(Event::ToolCallArguments {
                            index,
                            fragment: arguments.to_string(),
                        });
                    }
                    self.calls.insert(
                        u64_at(&v, "/output_index"),
                        Call {
                            index,
                            fragments: !arguments.is_empty(),
                        },
                    );
                }
            }
            "response.output_text.delta" | "response.refusal.delta" => {
                if let Some(text) = str_at(&v, "/delta").filter(|t| !t.is_empty()) {
                    out.push(Event::Text(text.to_string()));
                }
            }
            "response.function_call_arguments.delta" => {
                let Some(call) = self.calls.get_mut(&u64_at(&v, "/output_index")) else {
                    return Err(protocol(
                        "arguments for an output item that is not a function_call",
                        &sse.data,
                    ));
                };
                let fragment = str_at(&v, "/delta").unwrap_or_default();
                if !fragment.is_empty() {
                    call.fragments = true;
                    out.push(Event::ToolCallArguments {
                        index: call.index,
                        fragment: fragment.to_string(),
                    });
                }
            }
            "response.output_item.done" => {
                if let Some(call) = self.calls.get_mut(&u64_at(&v, "/output_index"))
                    && !call.fragments
                {
                    // No deltas came: the finished item carries the whole arguments.
                    let arguments = str_at(&v, "/item/arguments")
                        .filter(|a| !a.is_empty())
                        .unwrap_or("{}");
                    call.fragments = true;
                    out.push(Event::ToolCallArguments {
                        index: call.index,
                        fragment: arguments.to_string(),
                    });
                }
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
                } else if self.count > 0 {
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
