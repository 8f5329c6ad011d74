//! Rows the cases store: audit records, sessions, state changes, events and approvals.

use kaged_store::{
    ApprovalDecision, ApprovalRecord, AuditEvent, Backend, SessionEvent, SessionRecord, StateChange,
};

pub fn audit(kind: &str) -> AuditEvent {
    AuditEvent {
        ts_ms: 1,
        kind: kind.into(),
        outcome: "success".into(),
        identity: Some("user:ann".into()),
        source: Some("127.0.0.1:5000".into()),
        detail: serde_json::json!({"k": "v", "é": [1, 2]}),
    }
}

pub fn change(id: &str, state: &str, at: i64, ended: bool) -> StateChange {
    StateChange {
        session_id: id.into(),
        state: state.into(),
        at_ms: at,
        actor: "ann".into(),
        detail: serde_json::json!({"n": at}),
        exit_code: ended.then_some(0),
        reason: None,
        ended,
    }
}

/// A queued agent session `id`, stored.
pub fn session(db: &dyn Backend, id: &str) {
    let record = SessionRecord {
        id: id.into(),
        project: "demo".into(),
        kind: "agent".into(),
        name: "primary".into(),
        state: "queued".into(),
        created_by: "ann".into(),
        created_at_ms: 1,
        ..Default::default()
    };
    db.create_session(&record, &change(id, "queued", 1, false))
        .unwrap();
}

pub fn ev(seq: u64) -> SessionEvent {
    SessionEvent {
        seq,
        at_ms: 100 + seq as i64,
        kind: "text_delta".into(),
        parent_call_id: seq.is_multiple_of(3).then(|| format!("call-{seq}")),
        // Kept exactly as written: spacing, key order, escapes.
        body: format!(r#"{{"type":"text_delta",  "text":"t{seq} é \u00e9"}}"#),
    }
}

pub fn batch(range: std::ops::RangeInclusive<u64>) -> Vec<SessionEvent> {
    range.map(ev).collect()
}

pub fn pending(id: &str, session: &str, tool: &str, at: i64) -> ApprovalRecord {
    ApprovalRecord {
        id: id.into(),
        session_id: session.into(),
        project: "demo".into(),
        agent: "primary".into(),
        tool: tool.into(),
        call_id: format!("call-{id}"),
        parent_call_id: None,
        arguments: serde_json::json!({"command": "rm -rf build"}),
        owner: "ann".into(),
        state: "pending".into(),
        decision: None,
        message: None,
        decided_by: None,
        reason: None,
        requested_at_ms: at,
        decided_at_ms: None,
    }
}

pub fn decision(state: &str, decision: &str, by: &str) -> ApprovalDecision {
    ApprovalDecision {
        state: state.into(),
        decision: Some(decision.into()),
        message: (decision == "deny").then(|| "use make clean".into()),
        decided_by: by.into(),
        reason: None,
        at_ms: 500,
    }
}
