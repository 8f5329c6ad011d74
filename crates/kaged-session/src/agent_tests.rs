//! Tests of the agent events: wire form, bounds, and the conversation rebuilt from a log.

use serde_json::json;

use super::*;

fn rec(seq: u64, event: AgentEvent) -> Sequenced {
    Sequenced {
        seq,
        at_ms: 1000 + seq as i64,
        parent_call_id: None,
        event,
    }
}

fn every_variant() -> Vec<AgentEvent> {
    vec![
        AgentEvent::UserMessage { text: "hi".into() },
        AgentEvent::TurnStarted { turn: 1 },
        AgentEvent::MessageStarted {
            role: Role::Assistant,
        },
        AgentEvent::TextDelta { text: "he".into() },
        AgentEvent::MessageCompleted {
            text: "hello".into(),
        },
        AgentEvent::ToolCall {
            call_id: "c1".into(),
            name: "file.read".into(),
            arguments: json!({"path": "a.txt"}),
        },
        AgentEvent::ToolOutput {
            call_id: "c1".into(),
            chunk: "out".into(),
        },
        AgentEvent::tool_result("c1", true, "done"),
        AgentEvent::Usage {
            input_tokens: 10,
            output_tokens: 5,
            cached_tokens: 2,
            cost: Some(0.25),
        },
        AgentEvent::TurnEnded {
            reason: EndReason::MaxOutputTokens,
        },
        AgentEvent::Error {
            code: "provider".into(),
            message: "overloaded".into(),
        },
        AgentEvent::ApprovalRequested {
            approval_id: "apr_1".into(),
            call_id: "c1".into(),
            tool: "shell.bash".into(),
            arguments: json!({"command": "ls"}),
        },
        AgentEvent::ApprovalDecided {
            approval_id: "apr_1".into(),
            call_id: "c1".into(),
            state: "denied".into(),
            decision: Some("deny".into()),
            message: Some("not now".into()),
            decided_by: "user:ann".into(),
            reason: None,
        },
        AgentEvent::ThoughtDelta { text: "hmm".into() },
        AgentEvent::Plan {
            entries: json!([{"content": "read", "status": "pending", "priority": "high"}]),
        },
        AgentEvent::AcpSession {
            session_id: "sess-1".into(),
            loaded: false,
            mode: Some("default".into()),
        },
    ]
}

#[test]
fn every_event_is_tagged_by_its_kind_and_reads_back() {
    let all = every_variant();
    assert_eq!(all.len(), AgentEvent::KINDS.len());
    for (event, kind) in all.into_iter().zip(AgentEvent::KINDS) {
        assert_eq!(event.kind(), kind);
        let v = serde_json::to_value(&event).unwrap();
        assert_eq!(v["type"], kind, "{v}");
        let back: AgentEvent = serde_json::from_value(v).unwrap();
        assert_eq!(back, event);
    }
}

#[test]
fn the_wire_form_is_the_documented_one() {
    let r = Sequenced {
        seq: 7,
        at_ms: 42,
        parent_call_id: Some("c9".into()),
        event: AgentEvent::TurnEnded {
            reason: EndReason::EndTurn,
        },
    };
    assert_eq!(
        serde_json::to_value(&r).unwrap(),
        json!({"seq": 7, "at_ms": 42, "parent_call_id": "c9",
               "event": {"type": "turn_ended", "reason": "end_turn"}})
    );
    let top = rec(
        1,
        AgentEvent::Usage {
            input_tokens: 1,
            output_tokens: 2,
            cached_tokens: 0,
            cost: None,
        },
    );
    assert_eq!(
        serde_json::to_value(&top).unwrap(),
        json!({"seq": 1, "at_ms": 1001, "event": {"type": "usage", "input_tokens": 1,
               "output_tokens": 2, "cached_tokens": 0}}),
        "no parent and no cost: the keys are left out"
    );
    for reason in [
        "end_turn",
        "max_steps",
        "max_output_tokens",
        "aborted",
        "error",
    ] {
        let e: AgentEvent =
            serde_json::from_value(json!({"type": "turn_ended", "reason": reason})).unwrap();
        assert_eq!(serde_json::to_value(&e).unwrap()["reason"], reason);
    }
    assert!(serde_json::from_value::<AgentEvent>(json!({"type": "nope"})).is_err());
}

#[test]
fn the_protocol_document_names_every_event_type() {
    let doc = include_str!("../../../docs/agent-protocol.md");
    for kind in AgentEvent::KINDS {
        assert!(
            doc.contains(&format!("`{kind}`")),
            "docs/agent-protocol.md does not document `{kind}`"
        );
    }
    for reason in ["end_turn", "max_steps", "max_output_tokens", "aborted"] {
        assert!(doc.contains(reason), "{reason} missing from the doc");
    }
}

#[test]
fn long_chunks_are_split_on_character_boundaries_and_long_results_cut() {
    // 3-byte characters never divide MAX_CHUNK_BYTES evenly.
    let text = "€".repeat(MAX_CHUNK_BYTES);
    let parts = AgentEvent::TextDelta { text: text.clone() }.bounded();
    assert!(parts.len() > 1);
    let mut joined = String::new();
    for p in &parts {
        let AgentEvent::TextDelta { text } = p else {
            panic!("{p:?}")
        };
        assert!(text.len() <= MAX_CHUNK_BYTES && !text.is_empty());
        joined.push_str(text);
    }
    assert_eq!(joined, text);
    let out = AgentEvent::ToolOutput {
        call_id: "c".into(),
        chunk: "x".repeat(MAX_CHUNK_BYTES * 2 + 1),
    }
    .bounded();
    assert_eq!(out.len(), 3);
    let small = AgentEvent::TextDelta { text: "ok".into() };
    assert_eq!(small.clone().bounded(), vec![small]);

    let big = "é".repeat(MAX_CONTENT_BYTES);
    let AgentEvent::ToolResult {
        content, truncated, ..
    } = AgentEvent::tool_result("c", true, &big)
    else {
        panic!()
    };
    assert!(truncated && content.len() <= MAX_CONTENT_BYTES && big.starts_with(&content));
    let AgentEvent::ToolResult { truncated, .. } = AgentEvent::tool_result("c", true, "small")
    else {
        panic!()
    };
    assert!(!truncated);
    // Through `bounded` too, and an already-truncated result stays marked.
    let bounded = AgentEvent::ToolResult {
        call_id: "c".into(),
        ok: false,
        content: "short".into(),
        truncated: true,
    }
    .bounded();
    assert!(matches!(
        &bounded[..],
        [AgentEvent::ToolResult {
            truncated: true,
            ..
        }]
    ));
}

#[test]
fn history_rebuilds_the_conversation_in_order() {
    use AgentEvent::*;
    let events = [
        UserMessage {
            text: "list files".into(),
        },
        TurnStarted { turn: 1 },
        MessageStarted {
            role: Role::Assistant,
        },
        TextDelta {
            text: "Let me ".into(),
        },
        TextDelta {
            text: "look.".into(),
        },
        MessageCompleted {
            text: "Let me look.".into(),
        },
        ToolCall {
            call_id: "a".into(),
            name: "search.glob".into(),
            arguments: json!({"pattern": "*"}),
        },
        ToolCall {
            call_id: "b".into(),
            name: "file.read".into(),
            arguments: json!({"path": "x"}),
        },
        ToolOutput {
            call_id: "a".into(),
            chunk: "x\n".into(),
        },
        // Results may come in any order.
        AgentEvent::tool_result("b", false, "no such file"),
        AgentEvent::tool_result("a", true, "x"),
        Usage {
            input_tokens: 1,
            output_tokens: 1,
            cached_tokens: 0,
            cost: None,
        },
        MessageStarted {
            role: Role::Assistant,
        },
        MessageCompleted {
            text: "One file: x.".into(),
        },
        TurnEnded {
            reason: EndReason::EndTurn,
        },
        UserMessage {
            text: "thanks".into(),
        },
    ];
    let records: Vec<Sequenced> = events
        .into_iter()
        .enumerate()
        .map(|(i, e)| rec(i as u64 + 1, e))
        .collect();
    let got = history(&records);
    assert_eq!(
        got,
        vec![
            Message::User {
                text: "list files".into()
            },
            Message::Assistant {
                text: "Let me look.".into()
            },
            Message::ToolCall {
                call_id: "a".into(),
                name: "search.glob".into(),
                arguments: json!({"pattern": "*"})
            },
            Message::ToolCall {
                call_id: "b".into(),
                name: "file.read".into(),
                arguments: json!({"path": "x"})
            },
            Message::ToolResult {
                call_id: "b".into(),
                ok: false,
                content: "no such file".into()
            },
            Message::ToolResult {
                call_id: "a".into(),
                ok: true,
                content: "x".into()
            },
            Message::Assistant {
                text: "One file: x.".into()
            },
            Message::User {
                text: "thanks".into()
            },
        ]
    );
}

#[test]
fn history_keeps_cut_short_text_answers_orphan_calls_and_skips_subagents() {
    use AgentEvent::*;
    let mut records = vec![
        rec(1, UserMessage { text: "go".into() }),
        rec(2, TurnStarted { turn: 1 }),
        rec(
            3,
            ToolCall {
                call_id: "sub".into(),
                name: "agent.helper".into(),
                arguments: json!("not json {"),
            },
        ),
    ];
    // The subagent's own conversation nests under the call and stays out of the parent's.
    for (seq, event) in [
        (
            4,
            UserMessage {
                text: "inner".into(),
            },
        ),
        (
            5,
            MessageStarted {
                role: Role::Assistant,
            },
        ),
        (
            6,
            MessageCompleted {
                text: "inner answer".into(),
            },
        ),
    ] {
        records.push(Sequenced {
            parent_call_id: Some("sub".into()),
            ..rec(seq, event)
        });
    }
    records.extend([
        // The daemon stopped here: no result, no turn end.
        rec(
            7,
            MessageStarted {
                role: Role::Assistant,
            },
        ),
        rec(
            8,
            TextDelta {
                text: "partial".into(),
            },
        ),
        rec(
            9,
            UserMessage {
                text: "again".into(),
            },
        ),
        rec(10, TurnStarted { turn: 2 }),
    ]);
    let got = history(&records);
    assert_eq!(
        got,
        vec![
            Message::User { text: "go".into() },
            Message::ToolCall {
                call_id: "sub".into(),
                name: "agent.helper".into(),
                arguments: json!("not json {")
            },
            Message::Assistant {
                text: "partial".into()
            },
            Message::ToolResult {
                call_id: "sub".into(),
                ok: false,
                content: NO_RESULT.into()
            },
            Message::User {
                text: "again".into()
            },
        ]
    );
    // A result for a call never made (or given twice) adds nothing.
    let stray = [rec(1, AgentEvent::tool_result("zzz", true, "x"))];
    assert!(history(&stray).is_empty());
}
