//! Tests of the approvals table on real database files: the first decision wins, a decided
//! approval never changes, the listing's filters and order, and grants for a session.

use super::SqliteBackend;
use super::events_tests::session;
use crate::{ApprovalDecision, ApprovalFilter, ApprovalRecord, Backend, Decided};

fn pending(id: &str, session: &str, tool: &str, at: i64) -> ApprovalRecord {
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

fn decision(state: &str, decision: &str, by: &str) -> ApprovalDecision {
    ApprovalDecision {
        state: state.into(),
        decision: Some(decision.into()),
        message: (decision == "deny").then(|| "use make clean".into()),
        decided_by: by.into(),
        reason: None,
        at_ms: 500,
    }
}

#[test]
fn the_first_decision_wins_and_is_kept_across_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("k.db");
    {
        let db = SqliteBackend::open(&path).unwrap();
        session(&db, "s1");
        db.create_approval(&pending("apr_1", "s1", "shell.bash", 10))
            .unwrap();
        let Decided::Now(first) = db
            .decide_approval("apr_1", &decision("denied", "deny", "user:ann"))
            .unwrap()
        else {
            panic!("the first decision must win")
        };
        assert_eq!(first.state, "denied");
        assert_eq!(first.message.as_deref(), Some("use make clean"));
        assert_eq!(first.decided_at_ms, Some(500));
        let Decided::Already(kept) = db
            .decide_approval("apr_1", &decision("approved", "approve", "bob"))
            .unwrap()
        else {
            panic!("a second decision must lose")
        };
        assert_eq!(kept, first);
        assert_eq!(
            db.decide_approval("apr_nope", &decision("approved", "approve", "bob"))
                .unwrap(),
            Decided::Unknown
        );
    }
    let db = SqliteBackend::open(&path).unwrap();
    let again = db.get_approval("apr_1").unwrap().unwrap();
    assert_eq!(again.decided_by.as_deref(), Some("user:ann"));
    assert_eq!(
        again.arguments,
        serde_json::json!({"command": "rm -rf build"})
    );
}

#[test]
fn the_database_refuses_to_change_a_decided_approval_and_unknown_sessions() {
    let dir = tempfile::tempdir().unwrap();
    let db = SqliteBackend::open(&dir.path().join("k.db")).unwrap();
    session(&db, "s1");
    db.create_approval(&pending("apr_1", "s1", "shell.bash", 10))
        .unwrap();
    db.decide_approval("apr_1", &decision("approved", "approve", "ann"))
        .unwrap();
    let conn = db.conn();
    let err = conn
        .execute(
            "UPDATE approvals SET state = 'pending' WHERE id = 'apr_1'",
            [],
        )
        .unwrap_err();
    assert!(err.to_string().contains("decided once"), "{err}");
    drop(conn);
    let orphan = db.create_approval(&pending("apr_2", "no-such-session", "shell.bash", 10));
    assert!(orphan.is_err(), "an approval needs its session");
    assert!(orphan.unwrap_err().trouble().is_none());
}

#[test]
fn listing_filters_newest_first_and_grants_are_per_session_agent_and_tool() {
    let dir = tempfile::tempdir().unwrap();
    let db = SqliteBackend::open(&dir.path().join("k.db")).unwrap();
    session(&db, "s1");
    session(&db, "s2");
    db.create_approval(&pending("apr_a", "s1", "shell.bash", 10))
        .unwrap();
    db.create_approval(&pending("apr_b", "s1", "file.write", 20))
        .unwrap();
    db.create_approval(&pending("apr_c", "s2", "shell.bash", 30))
        .unwrap();
    db.decide_approval("apr_a", &decision("approved", "approve_session", "ann"))
        .unwrap();
    let ids = |f: ApprovalFilter| -> Vec<String> {
        db.list_approvals(&f)
            .unwrap()
            .into_iter()
            .map(|a| a.id)
            .collect()
    };
    let all = ApprovalFilter {
        limit: 10,
        ..Default::default()
    };
    assert_eq!(ids(all.clone()), ["apr_c", "apr_b", "apr_a"]);
    let pending_only = ApprovalFilter {
        state: Some("pending".into()),
        ..all.clone()
    };
    assert_eq!(ids(pending_only), ["apr_c", "apr_b"]);
    let of_s1 = ApprovalFilter {
        session: Some("s1".into()),
        limit: 1,
        ..all.clone()
    };
    assert_eq!(ids(of_s1), ["apr_b"]);
    let other_project = ApprovalFilter {
        project: Some("other".into()),
        ..all
    };
    assert!(ids(other_project).is_empty());
    assert!(
        db.granted_for_session("s1", "primary", "shell.bash")
            .unwrap()
    );
    assert!(
        !db.granted_for_session("s1", "primary", "file.write")
            .unwrap()
    );
    assert!(
        !db.granted_for_session("s2", "primary", "shell.bash")
            .unwrap()
    );
    assert!(
        !db.granted_for_session("s1", "helper", "shell.bash")
            .unwrap()
    );
}
