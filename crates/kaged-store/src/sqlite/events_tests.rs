//! Tests of the event log table on real database files: order checks, atomic batches, replay
//! pages, and a version-7 database upgraded with its sessions kept.

use super::SqliteBackend;
use crate::migrations::LATEST_SCHEMA;
use crate::{Backend, SessionEvent, SessionRecord, StateChange, Store, StoreError};

pub(super) fn session(db: &SqliteBackend, id: &str) {
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
    let first = StateChange {
        session_id: id.into(),
        state: "queued".into(),
        at_ms: 1,
        actor: "ann".into(),
        detail: serde_json::json!({}),
        exit_code: None,
        reason: None,
        ended: false,
    };
    db.create_session(&record, &first).unwrap();
}

fn ev(seq: u64) -> SessionEvent {
    SessionEvent {
        seq,
        at_ms: 100 + seq as i64,
        kind: "text_delta".into(),
        parent_call_id: seq.is_multiple_of(3).then(|| format!("call-{seq}")),
        body: format!(r#"{{"type":"text_delta","text":"t{seq} é"}}"#),
    }
}

fn batch(range: std::ops::RangeInclusive<u64>) -> Vec<SessionEvent> {
    range.map(ev).collect()
}

#[test]
fn events_are_appended_in_order_only_and_read_back_as_written() {
    let dir = tempfile::tempdir().unwrap();
    let db = SqliteBackend::open(&dir.path().join("k.db")).unwrap();
    session(&db, "s1");
    session(&db, "s2");
    assert_eq!(db.last_event_seq("s1").unwrap(), 0);
    db.append_events("s1", &batch(1..=3)).unwrap();
    db.append_events("s1", &[]).unwrap();
    db.append_events("s1", &batch(4..=5)).unwrap();
    // Another session's log has its own numbers.
    db.append_events("s2", &batch(1..=1)).unwrap();
    assert_eq!(db.last_event_seq("s1").unwrap(), 5);
    assert_eq!(db.last_event_seq("s2").unwrap(), 1);
    assert_eq!(db.last_event_seq("nope").unwrap(), 0);

    // A gap, a repeat, a batch out of order inside: refused whole, as an error of the request.
    for bad in [
        batch(7..=8),
        batch(5..=6),
        vec![ev(6), ev(8)],
        vec![ev(6), ev(6)],
    ] {
        let err = db.append_events("s1", &bad).unwrap_err();
        assert!(matches!(err, StoreError::OutOfOrder { .. }), "{err:?}");
        assert!(err.trouble().is_none());
        assert_eq!(db.last_event_seq("s1").unwrap(), 5, "nothing written");
    }
    // Not JSON, or an unknown session: refused, nothing of the batch written.
    let mut broken = batch(6..=7);
    broken[1].body = "not json".into();
    let err = db.append_events("s1", &broken).unwrap_err();
    assert!(err.trouble().is_none(), "{err:?}");
    assert_eq!(db.last_event_seq("s1").unwrap(), 5, "atomic");
    assert!(db.append_events("ghost", &batch(1..=1)).is_err());

    let all = db.events_after("s1", 0, 100).unwrap();
    assert_eq!(all, batch(1..=5));
    assert_eq!(db.events_after("s1", 2, 2).unwrap(), batch(3..=4));
    assert!(db.events_after("s1", 5, 10).unwrap().is_empty());
    assert!(db.events_after("nope", 0, 10).unwrap().is_empty());
}

#[test]
fn a_version_7_database_gains_the_event_log_and_keeps_its_sessions() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("k.db");
    {
        let old = SqliteBackend::open_at_version(&path, 7).unwrap();
        assert_eq!(old.schema_version().unwrap(), 7);
    }
    {
        // A row as version 7 wrote it (no `conversation` column yet).
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute(
            "INSERT INTO sessions (id, project, kind, name, command, caged, state, created_by, created_at_ms)
             VALUES ('old', 'demo', 'agent', 'primary', '[]', 1, 'exited', 'ann', 1)",
            [],
        )
        .unwrap();
        assert!(
            conn.execute("SELECT 1 FROM session_events", []).is_err(),
            "no session_events before migration 8"
        );
    }
    let db = SqliteBackend::open(&path).unwrap();
    assert_eq!(LATEST_SCHEMA, 10);
    assert_eq!(db.schema_version().unwrap(), 10);
    let kept = db.get_session("old").unwrap().unwrap();
    assert!(
        !kept.conversation,
        "a session from before is no conversation"
    );
    assert_eq!(kept.state, "exited");
    db.append_events("old", &batch(1..=2)).unwrap();
    drop(db);
    let db = SqliteBackend::open(&path).unwrap();
    assert_eq!(db.events_after("old", 0, 10).unwrap(), batch(1..=2));
}

#[test]
fn a_resumed_conversation_loses_its_earlier_end() {
    let dir = tempfile::tempdir().unwrap();
    let db = SqliteBackend::open(&dir.path().join("k.db")).unwrap();
    let record = SessionRecord {
        id: "c".into(),
        project: "demo".into(),
        kind: "agent".into(),
        name: "primary".into(),
        state: "queued".into(),
        created_by: "ann".into(),
        created_at_ms: 1,
        conversation: true,
        ..Default::default()
    };
    let change =
        |state: &str, ended: bool, exit_code: Option<i32>, reason: Option<&str>| StateChange {
            session_id: "c".into(),
            state: state.into(),
            at_ms: 5,
            actor: "ann".into(),
            detail: serde_json::json!({}),
            exit_code,
            reason: reason.map(str::to_string),
            ended,
        };
    db.create_session(&record, &change("queued", false, None, None))
        .unwrap();
    db.change_state(&change("failed", true, Some(1), Some("kaged stopped")))
        .unwrap();
    let ended = db.get_session("c").unwrap().unwrap();
    assert!(ended.conversation);
    assert_eq!((ended.ended_at_ms, ended.exit_code), (Some(5), Some(1)));
    db.change_state(&change("queued", false, None, None))
        .unwrap();
    let resumed = db.get_session("c").unwrap().unwrap();
    assert_eq!(resumed.state, "queued");
    assert_eq!(
        (resumed.ended_at_ms, resumed.exit_code, resumed.reason),
        (None, None, None)
    );
}

#[tokio::test]
async fn the_store_appends_and_replays_through_its_async_handle() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("k.db");
    session(&SqliteBackend::open(&path).unwrap(), "s");
    let store = Store::open(&kaged_config::StorageUrl::Sqlite(path)).unwrap();
    store.append_events("s".into(), batch(1..=4)).await.unwrap();
    let err = store
        .append_events("s".into(), batch(4..=4))
        .await
        .unwrap_err();
    assert!(matches!(
        err,
        StoreError::OutOfOrder {
            seq: 4,
            expected: 5,
            ..
        }
    ));
    assert!(
        store.health().failure().is_none(),
        "a refusal is not trouble"
    );
    assert_eq!(store.last_event_seq("s".into()).await.unwrap(), 4);
    assert_eq!(
        store.events_after("s".into(), 1, 2).await.unwrap(),
        batch(2..=3)
    );
}
