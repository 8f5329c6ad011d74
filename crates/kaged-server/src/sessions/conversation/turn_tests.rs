//! Tests of the loop's pure parts: the conversation given to the model, and the log kept in memory.

use super::*;
use serde_json::json;

#[test]
fn text_and_the_calls_after_it_are_one_assistant_message() {
    let history = vec![
        agent::Message::User { text: "hi".into() },
        agent::Message::Assistant {
            text: "let me look".into(),
        },
        agent::Message::ToolCall {
            call_id: "c1".into(),
            name: "file.read".into(),
            arguments: json!({"path": "a"}),
        },
        agent::Message::ToolCall {
            call_id: "c2".into(),
            name: "file.read".into(),
            arguments: json!("{not json"),
        },
        agent::Message::ToolResult {
            call_id: "c1".into(),
            ok: true,
            content: "A".into(),
        },
        agent::Message::ToolResult {
            call_id: "c2".into(),
            ok: false,
            content: "bad".into(),
        },
        agent::Message::ToolCall {
            call_id: "c3".into(),
            name: "shell.bash".into(),
            arguments: json!({}),
        },
    ];
    let got = conversation_of(&history);
    assert_eq!(got.len(), 5, "{got:?}");
    let Message::Assistant { text, tool_calls } = &got[1] else {
        panic!("{got:?}")
    };
    assert_eq!(text, "let me look");
    assert_eq!(tool_calls.len(), 2);
    assert_eq!(tool_calls[0].arguments, r#"{"path":"a"}"#);
    assert_eq!(
        tool_calls[1].arguments, "{not json",
        "sent back as the model wrote it"
    );
    assert!(matches!(
        &got[3],
        Message::ToolResult { is_error: true, .. }
    ));
    let Message::Assistant { text, tool_calls } = &got[4] else {
        panic!("{got:?}")
    };
    assert!(text.is_empty() && tool_calls[0].id == "c3");
}

#[test]
fn the_remembered_log_gives_the_same_history_without_completed_deltas() {
    let rec = |seq: u64, parent: Option<&str>, event: AgentEvent| agent::Sequenced {
        seq,
        at_ms: 0,
        parent_call_id: parent.map(str::to_string),
        event,
    };
    let delta = |t: &str| AgentEvent::TextDelta { text: t.into() };
    let started = AgentEvent::MessageStarted {
        role: agent::Role::Assistant,
    };
    let full = vec![
        rec(1, None, AgentEvent::UserMessage { text: "hi".into() }),
        rec(2, None, AgentEvent::TurnStarted { turn: 1 }),
        rec(3, None, started.clone()),
        rec(4, None, delta("Hel")),
        rec(5, None, delta("lo")),
        rec(
            6,
            None,
            AgentEvent::MessageCompleted {
                text: "Hello".into(),
            },
        ),
        rec(
            7,
            None,
            AgentEvent::ToolCall {
                call_id: "c".into(),
                name: "agent.helper".into(),
                arguments: json!({"task": "t"}),
            },
        ),
        rec(8, Some("c"), started.clone()),
        rec(9, Some("c"), delta("sub")),
        rec(
            10,
            Some("c"),
            AgentEvent::MessageCompleted { text: "sub".into() },
        ),
        rec(
            11,
            None,
            AgentEvent::ToolOutput {
                call_id: "c".into(),
                chunk: "x".into(),
            },
        ),
        rec(12, None, AgentEvent::tool_result("c", true, "sub")),
        // Cut short: its deltas are all there is of it.
        rec(13, None, started),
        rec(14, None, delta("par")),
        rec(15, None, delta("tial")),
    ];
    let mut kept = Vec::new();
    for r in full.clone() {
        remember(&mut kept, r);
    }
    assert_eq!(agent::history(&kept), agent::history(&full));
    let seqs: Vec<u64> = kept.iter().map(|r| r.seq).collect();
    assert_eq!(seqs, [1, 2, 3, 6, 7, 8, 10, 12, 13, 14, 15]);
    let last = agent::history(&kept).pop();
    assert_eq!(
        last,
        Some(agent::Message::Assistant {
            text: "partial".into()
        })
    );
}
