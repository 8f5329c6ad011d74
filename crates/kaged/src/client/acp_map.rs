//! `kaged acp`'s translation, pure: a kaged session's event records as the ACP
//! `session/update`s an editor shows, a turn's end as a stop reason, and a pending approval as
//! a permission request (and the option chosen back as a decision).

use kaged_session::agent::{AgentEvent, EndReason, Sequenced};
use serde_json::{Value, json};

/// The option ids kaged offers in a permission request.
pub(crate) const ALLOW_ONCE: &str = "approve";
pub(crate) const ALLOW_ALWAYS: &str = "approve_session";
pub(crate) const REJECT: &str = "deny";

/// ACP's tool kind for one of kaged's tool names.
pub(crate) fn tool_kind(name: &str) -> &'static str {
    match name {
        "shell.bash" => "execute",
        "file.read" => "read",
        "file.write" | "edit.text" => "edit",
        "search.grep" | "search.glob" => "search",
        n if n.starts_with("agent.") => "think",
        n if n.starts_with("acp.") => match &n[4..] {
            "read" => "read",
            "edit" => "edit",
            "delete" => "delete",
            "move" => "move",
            "search" => "search",
            "execute" => "execute",
            "think" => "think",
            "fetch" => "fetch",
            _ => "other",
        },
        _ => "other",
    }
}

fn text(text: &str) -> Value {
    json!({"type": "text", "text": text})
}

/// The `update`s of one record, for the session's own turn (a subagent's work shows only as
/// its parent's call; its approvals come as permission requests).
pub(crate) fn updates(record: &Sequenced) -> Vec<Value> {
    if record.parent_call_id.is_some() {
        return Vec::new();
    }
    match &record.event {
        AgentEvent::TextDelta { text: t } => {
            vec![json!({"sessionUpdate": "agent_message_chunk", "content": text(t)})]
        }
        AgentEvent::ThoughtDelta { text: t } => {
            vec![json!({"sessionUpdate": "agent_thought_chunk", "content": text(t)})]
        }
        AgentEvent::Plan { entries } => vec![json!({"sessionUpdate": "plan", "entries": entries})],
        AgentEvent::ToolCall {
            call_id,
            name,
            arguments,
        } => vec![json!({
            "sessionUpdate": "tool_call", "toolCallId": call_id, "title": name,
            "kind": tool_kind(name), "status": "pending", "rawInput": arguments,
        })],
        AgentEvent::ToolOutput { call_id, chunk } => vec![json!({
            "sessionUpdate": "tool_call_update", "toolCallId": call_id, "status": "in_progress",
            "content": [{"type": "content", "content": text(chunk)}],
        })],
        AgentEvent::ToolResult {
            call_id,
            ok,
            content,
            ..
        } => vec![json!({
            "sessionUpdate": "tool_call_update", "toolCallId": call_id,
            "status": if *ok { "completed" } else { "failed" },
            "content": [{"type": "content", "content": text(content)}],
        })],
        AgentEvent::Error { code, message } => vec![json!({
            "sessionUpdate": "agent_message_chunk",
            "content": text(&format!("\n[kaged: {code}: {message}]\n")),
        })],
        _ => Vec::new(),
    }
}

/// The stop reason of the session's own turn that `record` ends, if it ends one.
pub(crate) fn stop_reason(record: &Sequenced) -> Option<&'static str> {
    match (&record.event, &record.parent_call_id) {
        (AgentEvent::TurnEnded { reason }, None) => Some(match reason {
            EndReason::EndTurn | EndReason::Error => "end_turn",
            EndReason::MaxSteps => "max_turn_requests",
            EndReason::MaxOutputTokens => "max_tokens",
            EndReason::Aborted => "cancelled",
        }),
        _ => None,
    }
}

/// The `session/request_permission` params for an `approval_requested` record.
pub(crate) fn permission_request(session: &str, record: &Sequenced) -> Option<(String, Value)> {
    let AgentEvent::ApprovalRequested {
        approval_id,
        call_id,
        tool,
        arguments,
    } = &record.event
    else {
        return None;
    };
    Some((
        approval_id.clone(),
        json!({
            "sessionId": session,
            "toolCall": {"toolCallId": call_id, "title": tool, "kind": tool_kind(tool), "rawInput": arguments},
            "options": [
                {"optionId": ALLOW_ONCE, "name": "Allow once", "kind": "allow_once"},
                {"optionId": ALLOW_ALWAYS, "name": "Allow for this session", "kind": "allow_always"},
                {"optionId": REJECT, "name": "Reject", "kind": "reject_once"},
            ],
        }),
    ))
}

/// The decision for the client's answer to a permission request (`None`: cancelled, or an
/// option kaged did not offer).
pub(crate) fn decision(answer: &Value) -> Option<&'static str> {
    let outcome = &answer["outcome"];
    if outcome["outcome"].as_str() != Some("selected") {
        return None;
    }
    match outcome["optionId"].as_str()? {
        ALLOW_ONCE => Some("approve"),
        ALLOW_ALWAYS => Some("approve_session"),
        REJECT => Some("deny"),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn rec(parent: Option<&str>, event: AgentEvent) -> Sequenced {
        Sequenced {
            seq: 1,
            at_ms: 0,
            parent_call_id: parent.map(str::to_string),
            event,
        }
    }

    #[test]
    fn records_become_updates_and_a_turns_end_a_stop_reason() {
        let delta = rec(None, AgentEvent::TextDelta { text: "hi".into() });
        assert_eq!(updates(&delta)[0]["content"]["text"], "hi");
        let nested = rec(Some("c"), AgentEvent::TextDelta { text: "sub".into() });
        assert!(updates(&nested).is_empty());
        let call = rec(
            None,
            AgentEvent::ToolCall {
                call_id: "c1".into(),
                name: "shell.bash".into(),
                arguments: json!({"command": "ls"}),
            },
        );
        let u = &updates(&call)[0];
        assert_eq!(
            (u["kind"].as_str(), u["toolCallId"].as_str()),
            (Some("execute"), Some("c1"))
        );
        let result = rec(None, AgentEvent::tool_result("c1", false, "no"));
        assert_eq!(updates(&result)[0]["status"], "failed");
        for (reason, stop) in [
            (EndReason::EndTurn, "end_turn"),
            (EndReason::Aborted, "cancelled"),
            (EndReason::MaxSteps, "max_turn_requests"),
            (EndReason::MaxOutputTokens, "max_tokens"),
        ] {
            assert_eq!(
                stop_reason(&rec(None, AgentEvent::TurnEnded { reason })),
                Some(stop)
            );
        }
        let sub_end = rec(
            Some("c"),
            AgentEvent::TurnEnded {
                reason: EndReason::EndTurn,
            },
        );
        assert_eq!(
            stop_reason(&sub_end),
            None,
            "a subagent's turn is not the session's"
        );
        assert_eq!(tool_kind("acp.delete"), "delete");
        assert_eq!(tool_kind("agent.helper"), "think");
    }

    #[test]
    fn an_approval_is_a_permission_request_and_the_choice_a_decision() {
        let asked = rec(
            Some("parent"),
            AgentEvent::ApprovalRequested {
                approval_id: "apr_1".into(),
                call_id: "c1".into(),
                tool: "file.write".into(),
                arguments: json!({"path": "a"}),
            },
        );
        let (id, params) = permission_request("s1", &asked).unwrap();
        assert_eq!(id, "apr_1");
        assert_eq!(params["toolCall"]["kind"], "edit");
        assert_eq!(params["options"].as_array().unwrap().len(), 3);
        let chose = |option: &str| json!({"outcome": {"outcome": "selected", "optionId": option}});
        assert_eq!(decision(&chose(ALLOW_ONCE)), Some("approve"));
        assert_eq!(decision(&chose(ALLOW_ALWAYS)), Some("approve_session"));
        assert_eq!(decision(&chose(REJECT)), Some("deny"));
        assert_eq!(decision(&chose("made-up")), None);
        assert_eq!(
            decision(&json!({"outcome": {"outcome": "cancelled"}})),
            None
        );
    }
}
