//! Cases of a session's event log: order checks, atomic batches, replay pages, a version-7
//! database upgraded with its sessions kept, resumed conversations, and racing writers.

use std::sync::Arc;

use kaged_store::{Backend, LATEST_SCHEMA, SessionRecord, StateChange, Store, StoreError};

use crate::fixtures::{batch, ev, session};
use crate::harness::Db;

pub fn events_are_appended_in_order_only_and_read_back_as_written(db: &Db) {
    let b = db.open();
    session(b.as_ref(), "s1");
    session(b.as_ref(), "s2");
    assert_eq!(b.last_event_seq("s1").unwrap(), 0);
    b.append_events("s1", &batch(1..=3)).unwrap();
    b.append_events("s1", &[]).unwrap();
    b.append_events("s1", &batch(4..=5)).unwrap();
    // Another session's log has its own numbers.
    b.append_events("s2", &batch(1..=1)).unwrap();
    assert_eq!(b.last_event_seq("s1").unwrap(), 5);
    assert_eq!(b.last_event_seq("s2").unwrap(), 1);
    assert_eq!(b.last_event_seq("nope").unwrap(), 0);

    // A gap, a repeat, a batch out of order inside: refused whole, as an error of the request.
    for bad in [
        batch(7..=8),
        batch(5..=6),
        vec![ev(6), ev(8)],
        vec![ev(6), ev(6)],
    ] {
        let err = b.append_events("s1", &bad).unwrap_err();
        assert!(matches!(err, StoreError::OutOfOrder { .. }), "{err:?}");
        assert!(err.trouble().is_none());
        assert_eq!(b.last_event_seq("s1").unwrap(), 5, "nothing written");
    }
    // Not JSON, or an unknown session: refused, nothing of the batch written.
    let mut broken = batch(6..=7);
    broken[1].body = "not json".into();
    let err = b.append_events("s1", &broken).unwrap_err();
    assert!(err.trouble().is_none(), "{err:?}");
    assert_eq!(b.last_event_seq("s1").unwrap(), 5, "atomic");
    let err = b.append_events("ghost", &batch(1..=1)).unwrap_err();
    assert!(err.trouble().is_none(), "{err:?}");

    let all = b.events_after("s1", 0, 100).unwrap();
    assert_eq!(all, batch(1..=5), "bodies exactly as appended");
    assert_eq!(b.events_after("s1", 2, 2).unwrap(), batch(3..=4));
    assert!(b.events_after("s1", 5, 10).unwrap().is_empty());
    assert!(b.events_after("nope", 0, 10).unwrap().is_empty());
}

pub fn a_version_7_database_gains_the_event_log_and_keeps_its_sessions(db: &Db) {
    {
        let old = db.open_at(7);
        assert_eq!(old.schema_version().unwrap(), 7);
    }
    // A row as version 7 wrote it (no `conversation` column yet).
    db.exec(
        "INSERT INTO sessions (id, project, kind, name, command, caged, state, created_by, created_at_ms)
         VALUES ('old', 'demo', 'agent', 'primary', '[]', TRUE, 'exited', 'ann', 1)",
    )
    .unwrap();
    assert!(
        db.exec("SELECT 1 FROM session_events").is_err(),
        "no session_events before migration 8"
    );
    let b = db.open();
    assert_eq!(LATEST_SCHEMA, 11);
    assert_eq!(b.schema_version().unwrap(), 11);
    let kept = b.get_session("old").unwrap().unwrap();
    assert!(
        !kept.conversation,
        "a session from before is no conversation"
    );
    assert_eq!(kept.state, "exited");
    assert!(kept.caged);
    b.append_events("old", &batch(1..=2)).unwrap();
    drop(b);
    let b = db.open();
    assert_eq!(b.events_after("old", 0, 10).unwrap(), batch(1..=2));
}

pub fn a_resumed_conversation_loses_its_earlier_end(db: &Db) {
    let b = db.open();
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
    b.create_session(&record, &change("queued", false, None, None))
        .unwrap();
    b.change_state(&change("failed", true, Some(1), Some("kaged stopped")))
        .unwrap();
    let ended = b.get_session("c").unwrap().unwrap();
    assert!(ended.conversation);
    assert_eq!((ended.ended_at_ms, ended.exit_code), (Some(5), Some(1)));
    // A change without an exit code or reason keeps the ones stored.
    b.change_state(&change("failed", false, None, None))
        .unwrap();
    let same = b.get_session("c").unwrap().unwrap();
    assert_eq!(
        (same.exit_code, same.reason.as_deref()),
        (Some(1), Some("kaged stopped"))
    );
    b.change_state(&change("queued", false, None, None))
        .unwrap();
    let resumed = b.get_session("c").unwrap().unwrap();
    assert_eq!(resumed.state, "queued");
    assert_eq!(
        (resumed.ended_at_ms, resumed.exit_code, resumed.reason),
        (None, None, None)
    );
}

pub fn the_store_appends_and_replays_through_its_async_handle(db: &Db) {
    session(db.open().as_ref(), "s");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        // Opened (and, at the end, dropped) on the async runtime's thread.
        let store = Store::open_for_daemon(&db.storage_url()).unwrap();
        store.lock_for_daemon().await.unwrap();
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
        assert_eq!(store.schema_version().await.unwrap(), LATEST_SCHEMA);
        store.close().await.unwrap();
        store.ping().await.unwrap();
    });
}

/// Two writers append the same numbers to one log at once: one batch is stored whole, the
/// other refused as out of order (never a mix, never a database error).
pub fn racing_writers_of_one_log_never_interleave(db: &Db) {
    let b: Arc<dyn Backend> = Arc::from(db.open());
    session(b.as_ref(), "s");
    for round in 0..5u64 {
        let start = round * 20 + 1;
        let results: Vec<Result<(), StoreError>> = std::thread::scope(|s| {
            let writers: Vec<_> = (0..2)
                .map(|_| {
                    let b = Arc::clone(&b);
                    s.spawn(move || b.append_events("s", &batch(start..=start + 19)))
                })
                .collect();
            writers.into_iter().map(|w| w.join().unwrap()).collect()
        });
        let stored = results.iter().filter(|r| r.is_ok()).count();
        assert_eq!(stored, 1, "round {round}: {results:?}");
        for r in results.iter().filter_map(|r| r.as_ref().err()) {
            assert!(matches!(r, StoreError::OutOfOrder { .. }), "{r:?}");
        }
    }
    assert_eq!(b.events_after("s", 0, 1000).unwrap(), batch(1..=100));
}
