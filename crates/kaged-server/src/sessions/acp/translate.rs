//! ACP's `session/update` notifications and `session/prompt` results as the session's event
//! log records (the same kinds as a model agent's, docs/agent-protocol.md). Pure: data in,
//! events out; the open message and the tool calls seen are its only state.

use std::collections::HashMap;

use kaged_session::agent::{AgentEvent, EndReason, Role};
use serde_json::Value;

/// What a tool call was announced as (permission requests name the call only).
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Announced {
    pub kind: String,
    pub title: String,
    pub raw_input: Value,
}

/// Turns one agent's updates into events.
#[derive(Debug, Default)]
pub(crate) struct Translator {
    /// The assistant message being streamed, if any.
    open: Option<String>,
    calls: HashMap<String, Announced>,
}

/// The text of an ACP content block (`{"type":"text","text":…}`), or a short note for others.
fn text_of(content: &Value) -> String {
    match content["type"].as_str() {
        Some("text") => content["text"].as_str().unwrap_or_default().to_string(),
        Some(other) => format!("[{other}]"),
        None => String::new(),
    }
}

/// The text of a tool call's `content` list (content blocks, diffs, terminals).
fn tool_content(content: &Value) -> String {
    let mut out = Vec::new();
    for item in content.as_array().into_iter().flatten() {
        match item["type"].as_str() {
            Some("content") => out.push(text_of(&item["content"])),
            Some("diff") => out.push(format!(
                "[diff of {}]",
                item["path"].as_str().unwrap_or("a file")
            )),
            Some("terminal") => out.push(format!(
                "[terminal {}]",
                item["terminalId"].as_str().unwrap_or("?")
            )),
            _ => {}
        }
    }
    out.join("\n")
}

impl Translator {
    /// The tool call `id` as it was announced (kind `other` when it never was).
    pub(crate) fn announced(&self, id: &str) -> Announced {
        self.calls.get(id).cloned().unwrap_or_else(|| Announced {
            kind: "other".into(),
            ..Announced::default()
        })
    }

    /// The message being streamed, completed (before anything else is recorded).
    pub(crate) fn close(&mut self) -> Vec<AgentEvent> {
        match self.open.take() {
            Some(text) => vec![AgentEvent::MessageCompleted { text }],
            None => Vec::new(),
        }
    }

    /// The events of one `session/update`'s `update`. Kinds kaged does not record (commands,
    /// modes, the echo of the operator's own message) give none.
    pub(crate) fn update(&mut self, update: &Value) -> Vec<AgentEvent> {
        let kind = update["sessionUpdate"].as_str().unwrap_or_default();
        if kind == "agent_message_chunk" {
            let text = text_of(&update["content"]);
            let mut out = Vec::new();
            let open = self.open.get_or_insert_with(|| {
                out.push(AgentEvent::MessageStarted {
                    role: Role::Assistant,
                });
                String::new()
            });
            open.push_str(&text);
            if !text.is_empty() {
                out.push(AgentEvent::TextDelta { text });
            }
            return out;
        }
        let mut out = self.close();
        match kind {
            "agent_thought_chunk" => {
                let text = text_of(&update["content"]);
                if !text.is_empty() {
                    out.push(AgentEvent::ThoughtDelta { text });
                }
            }
            "plan" => out.push(AgentEvent::Plan {
                entries: update["entries"].clone(),
            }),
            "tool_call" => {
                let id = update["toolCallId"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                let announced = Announced {
                    kind: update["kind"].as_str().unwrap_or("other").to_string(),
                    title: update["title"].as_str().unwrap_or_default().to_string(),
                    raw_input: update["rawInput"].clone(),
                };
                out.push(AgentEvent::ToolCall {
                    call_id: id.clone(),
                    name: tool_name(&announced.kind),
                    arguments: serde_json::json!({
                        "title": announced.title,
                        "input": announced.raw_input,
                        "locations": update["locations"],
                    }),
                });
                self.calls.insert(id, announced);
                out.extend(self.progress(update));
            }
            "tool_call_update" => out.extend(self.progress(update)),
            _ => {}
        }
        out
    }

    /// A tool call's status change: its output while it runs, its result when it ends.
    fn progress(&mut self, update: &Value) -> Vec<AgentEvent> {
        let id = update["toolCallId"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let text = tool_content(&update["content"]);
        match update["status"].as_str() {
            Some(status @ ("completed" | "failed")) => {
                let text = if text.is_empty() {
                    update["rawOutput"]
                        .as_object()
                        .map(|_| update["rawOutput"].to_string())
                        .unwrap_or_default()
                } else {
                    text
                };
                vec![AgentEvent::tool_result(id, status == "completed", &text)]
            }
            _ if !text.is_empty() => vec![AgentEvent::ToolOutput {
                call_id: id,
                chunk: text,
            }],
            _ => Vec::new(),
        }
    }

    /// The end of a prompt: the open message completed, its usage, and why the turn ended.
    /// A refusal ends it with an `error` saying so.
    pub(crate) fn finished(&mut self, result: &Value) -> (Vec<AgentEvent>, EndReason) {
        let mut out = self.close();
        let usage = &result["usage"];
        if usage.is_object() {
            let n = |key: &str| usage[key].as_u64().unwrap_or(0);
            out.push(AgentEvent::Usage {
                input_tokens: n("inputTokens"),
                output_tokens: n("outputTokens"),
                cached_tokens: n("cachedReadTokens"),
                cost: None,
            });
        }
        let reason = match result["stopReason"].as_str() {
            Some("end_turn") => EndReason::EndTurn,
            Some("max_tokens") => EndReason::MaxOutputTokens,
            Some("max_turn_requests") => EndReason::MaxSteps,
            Some("cancelled") => EndReason::Aborted,
            Some("refusal") => {
                out.push(AgentEvent::Error {
                    code: "refusal".into(),
                    message: "the agent refused to go on with this prompt".into(),
                });
                EndReason::Error
            }
            other => {
                out.push(AgentEvent::Error {
                    code: "acp".into(),
                    message: format!(
                        "the agent ended the prompt with an unknown stop reason {}",
                        other.map_or_else(|| "(none)".to_string(), |r| format!("`{r}`"))
                    ),
                });
                EndReason::Error
            }
        };
        (out, reason)
    }
}

/// The tool name an ACP tool kind is recorded and judged under: `acp.edit`, `acp.execute`, …
/// (the project file's `tools:` settings name them so).
pub(crate) fn tool_name(kind: &str) -> String {
    let kind: String = kind
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '-')
        .take(32)
        .collect();
    format!("acp.{}", if kind.is_empty() { "other" } else { &kind })
}

/// The session mode kaged selects, from the `modes` of an agent's answer to `session/new` or
/// `session/load` (`{currentModeId, availableModes: [{id, name}]}`): the project's `wanted`
/// mode, else the agent's `default` when it offers one (Claude's adapter starts in `auto`,
/// which never asks for permission). `Ok(None)`: the agent's mode stays as it is; the `bool`:
/// whether the agent is in another mode now (kaged must switch it).
pub(crate) fn mode_to_select(
    wanted: Option<&str>,
    modes: &Value,
) -> Result<Option<(String, bool)>, String> {
    let offered: Vec<&str> = modes["availableModes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| m["id"].as_str())
        .collect();
    let current = modes["currentModeId"].as_str();
    let pick = match wanted {
        Some(w) if offered.contains(&w) => w,
        Some(w) if offered.is_empty() => {
            return Err(format!(
                "the project asks for the session mode `{w}` (`mode:`), but the agent offers no session modes; remove `mode:`"
            ));
        }
        Some(w) => {
            return Err(format!(
                "the agent offers no session mode `{w}` (`mode:` in the project file); it offers: {}",
                offered.join(", ")
            ));
        }
        None if offered.contains(&"default") => "default",
        None => return Ok(None),
    };
    Ok(Some((pick.to_string(), current != Some(pick))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn kinds(events: &[AgentEvent]) -> Vec<&'static str> {
        events.iter().map(AgentEvent::kind).collect()
    }

    #[test]
    fn chunks_stream_one_message_that_anything_else_completes() {
        let mut t = Translator::default();
        let chunk = |text: &str| json!({"sessionUpdate": "agent_message_chunk", "content": {"type": "text", "text": text}});
        assert_eq!(
            kinds(&t.update(&chunk("Hel"))),
            ["message_started", "text_delta"]
        );
        assert_eq!(kinds(&t.update(&chunk("lo"))), ["text_delta"]);
        let thought = t.update(&json!({"sessionUpdate": "agent_thought_chunk", "content": {"type": "text", "text": "hm"}}));
        assert_eq!(kinds(&thought), ["message_completed", "thought_delta"]);
        assert_eq!(
            thought[0],
            AgentEvent::MessageCompleted {
                text: "Hello".into()
            }
        );
        assert!(t.close().is_empty(), "nothing open any more");
        // Kinds kaged does not record give nothing, and an image chunk is noted.
        assert!(
            t.update(
                &json!({"sessionUpdate": "available_commands_update", "availableCommands": []})
            )
            .is_empty()
        );
        let image = t.update(&json!({"sessionUpdate": "agent_message_chunk", "content": {"type": "image", "data": "…"}}));
        assert_eq!(
            image[1],
            AgentEvent::TextDelta {
                text: "[image]".into()
            }
        );
    }

    #[test]
    fn a_tool_call_and_its_updates_become_call_output_and_result() {
        let mut t = Translator::default();
        let call = t.update(&json!({"sessionUpdate": "tool_call", "toolCallId": "c1", "title": "Write a.txt", "kind": "edit", "rawInput": {"path": "/workspace/a.txt"}}));
        assert_eq!(kinds(&call), ["tool_call"]);
        let AgentEvent::ToolCall {
            name, arguments, ..
        } = &call[0]
        else {
            panic!()
        };
        assert_eq!(name, "acp.edit");
        assert_eq!(arguments["input"]["path"], "/workspace/a.txt");
        assert_eq!(t.announced("c1").title, "Write a.txt");
        assert_eq!(t.announced("nope").kind, "other");
        let running = t.update(&json!({"sessionUpdate": "tool_call_update", "toolCallId": "c1", "status": "in_progress", "content": [{"type": "content", "content": {"type": "text", "text": "half"}}]}));
        assert_eq!(kinds(&running), ["tool_output"]);
        let done = t.update(&json!({"sessionUpdate": "tool_call_update", "toolCallId": "c1", "status": "failed", "content": [{"type": "diff", "path": "/workspace/a.txt"}]}));
        assert_eq!(
            done,
            [AgentEvent::tool_result(
                "c1",
                false,
                "[diff of /workspace/a.txt]"
            )]
        );
        assert_eq!(tool_name("../weird kind"), "acp.weirdkind");
        assert_eq!(tool_name(""), "acp.other");
    }

    #[test]
    fn stop_reasons_and_usage_end_the_turn() {
        let mut t = Translator::default();
        t.update(&json!({"sessionUpdate": "agent_message_chunk", "content": {"type": "text", "text": "bye"}}));
        let (events, reason) = t.finished(&json!({"stopReason": "end_turn", "usage": {"inputTokens": 10, "outputTokens": 5, "totalTokens": 15}}));
        assert_eq!(reason, EndReason::EndTurn);
        assert_eq!(kinds(&events), ["message_completed", "usage"]);
        for (stop, want) in [
            ("max_tokens", EndReason::MaxOutputTokens),
            ("max_turn_requests", EndReason::MaxSteps),
            ("cancelled", EndReason::Aborted),
        ] {
            assert_eq!(t.finished(&json!({"stopReason": stop})).1, want);
        }
        let (events, reason) = t.finished(&json!({"stopReason": "refusal"}));
        assert_eq!((kinds(&events), reason), (vec!["error"], EndReason::Error));
        let (events, reason) = t.finished(&json!({}));
        assert_eq!(reason, EndReason::Error);
        assert!(
            matches!(&events[0], AgentEvent::Error { message, .. } if message.contains("(none)"))
        );
    }

    #[test]
    fn the_mode_is_the_projects_else_the_agents_default() {
        let modes = json!({"currentModeId": "auto", "availableModes": [{"id": "auto"}, {"id": "default"}, {"id": "plan"}]});
        assert_eq!(
            mode_to_select(None, &modes),
            Ok(Some(("default".into(), true)))
        );
        assert_eq!(
            mode_to_select(Some("auto"), &modes),
            Ok(Some(("auto".into(), false)))
        );
        assert_eq!(
            mode_to_select(Some("plan"), &modes),
            Ok(Some(("plan".into(), true)))
        );
        let unknown = mode_to_select(Some("yolo"), &modes).unwrap_err();
        assert!(
            unknown.contains("`yolo`") && unknown.contains("auto, default, plan"),
            "{unknown}"
        );
        // An agent without modes: nothing to select, unless the project asks for one.
        assert_eq!(mode_to_select(None, &Value::Null), Ok(None));
        assert_eq!(
            mode_to_select(
                None,
                &json!({"currentModeId": "ask", "availableModes": [{"id": "ask"}]})
            ),
            Ok(None)
        );
        assert!(
            mode_to_select(Some("default"), &Value::Null)
                .unwrap_err()
                .contains("offers no session modes")
        );
    }
}
