//! openai-completions: chunks with `choices[0].delta.content` and `delta.tool_calls[i]` (id and
//! name in a call's first piece, argument fragments after; a server that repeats the id in
//! every piece is fine), `finish_reason`, a last chunk with `usage` (asked for with
//! `stream_options.include_usage`), then `data: [DONE]`. A chunk with an `error` object ends the
//! answer with the provider's error.

use serde_json::Value;

use super::calls::ToolCalls;
use super::{object, provider_error, str_at};
use crate::error::{LlmError, protocol};
use crate::sse::SseEvent;
use crate::types::{Event, StopReason, Usage};

#[derive(Debug, Default)]
pub struct State {
    pub(super) finished: bool,
    usage: Option<Usage>,
    stop: Option<StopReason>,
    /// Tool calls by the provider's tool-call index.
    calls: ToolCalls,
    /// The provider's index of the last call that grew (for pieces without an index).
    last: Option<u64>,
}

impl State {
    pub(super) fn feed(&mut self, sse: &SseEvent) -> Result<Vec<Event>, LlmError> {
        let mut out = Vec::new();
        if sse.data.trim() == "[DONE]" {
            self.close(&mut out);
            if let Some(u) = self.usage.take() {
                out.push(Event::Usage(u));
            }
            let stop = self
                .stop
                .take()
                .unwrap_or_else(|| StopReason::Other("unknown".into()));
            out.push(Event::Finished(stop));
            self.finished = true;
            return Ok(out);
        }
        let v = object(sse)?;
        if let Some(error) = v.get("error").filter(|e| !e.is_null()) {
            return Err(provider_error(error));
        }
        if sse.event.as_deref() == Some("error") {
            return Err(provider_error(&v));
        }
        if let Some(u) = v.get("usage").filter(|u| u.is_object()) {
            let n = |p: &str| u.pointer(p).and_then(Value::as_u64).unwrap_or(0);
            self.usage = Some(Usage {
                input_tokens: n("/prompt_tokens"),
                output_tokens: n("/completion_tokens"),
                cached_tokens: n("/prompt_tokens_details/cached_tokens"),
            });
        }
        let choices = v.get("choices").and_then(Value::as_array);
        for choice in choices.into_iter().flatten() {
            if choice.get("index").and_then(Value::as_u64).unwrap_or(0) != 0 {
                continue; // kaged asks for one choice
            }
            if let Some(text) = str_at(choice, "/delta/content").filter(|t| !t.is_empty()) {
                out.push(Event::Text(text.to_string()));
            }
            let pieces = choice
                .pointer("/delta/tool_calls")
                .and_then(Value::as_array);
            for piece in pieces.into_iter().flatten() {
                self.piece(piece, &sse.data, &mut out)?;
            }
            if let Some(reason) = str_at(choice, "/finish_reason") {
                self.stop = Some(match reason {
                    "stop" => StopReason::EndTurn,
                    "tool_calls" | "function_call" => StopReason::ToolUse,
                    "length" => StopReason::MaxTokens,
                    other => StopReason::Other(other.to_string()),
                });
                self.close(&mut out);
            }
        }
        Ok(out)
    }

    fn piece(&mut self, piece: &Value, data: &str, out: &mut Vec<Event>) -> Result<(), LlmError> {
        let id = str_at(piece, "/id").filter(|s| !s.is_empty());
        let number = match piece.get("index").and_then(Value::as_u64) {
            Some(n) => n,
            // No index: a piece with a new id starts a call, others extend the last one.
            None => match (id, self.last) {
                (None, Some(last)) => last,
                _ => self.calls.highest_number().map_or(0, |k| k + 1),
            },
        };
        self.last = Some(number);
        if !self.calls.is_known(number) {
            let Some(name) = str_at(piece, "/function/name").filter(|s| !s.is_empty()) else {
                return Err(protocol(
                    "a tool call's first piece without a function name",
                    data,
                ));
            };
            let id = |index| id.map_or_else(|| format!("call_{index}"), str::to_string);
            self.calls.start(number, id, name, out);
        }
        let fragment = str_at(piece, "/function/arguments").unwrap_or_default();
        self.calls.fragment(number, fragment, out);
        Ok(())
    }

    /// Calls that got no argument fragments get `{}` once the choice finishes.
    fn close(&mut self, out: &mut Vec<Event>) {
        self.calls.end_all(out);
    }
}
