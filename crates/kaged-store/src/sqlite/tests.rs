//! Tests of the SQLite backend on real database files in temporary directories.

use std::fs;
use std::os::unix::fs::PermissionsExt;

use rusqlite::Connection;

use super::SqliteBackend;
use crate::migrations::LATEST_SCHEMA;
use crate::{AuditEvent, Backend, SessionRecord, StateChange, StoreError};

fn event(kind: &str) -> AuditEvent {
    AuditEvent {
        ts_ms: 1,
        kind: kind.into(),
        outcome: "success".into(),
        identity: Some("user:ann".into()),
        source: Some("127.0.0.1:5000".into()),
        detail: serde_json::json!({"k": "v"}),
    }
}

#[test]
fn what_was_accepted_for_a_project_survives_until_its_root_changes() {
    let dir = tempfile::tempdir().unwrap();
    let b = SqliteBackend::open(&dir.path().join("kaged.db")).unwrap();
    b.put_project("demo", "/p/demo", 1).unwrap();
    assert_eq!(b.list_projects().unwrap()[0].accepted_config, None);
    let config = serde_json::json!({"project": "demo", "primary": {"cage": "disabled"}});
    assert!(b.set_project_accepted("demo", &config, true).unwrap());
    assert!(!b.set_project_accepted("other", &config, true).unwrap());
    // Registered again from the same root (local.toml, at every start): kept.
    b.put_project("demo", "/p/demo", 2).unwrap();
    let r = &b.list_projects().unwrap()[0];
    assert_eq!(
        (r.accepted_config.as_ref(), r.had_git),
        (Some(&config), Some(true))
    );
    // From another root: forgotten.
    b.put_project("demo", "/q/demo", 3).unwrap();
    let r = &b.list_projects().unwrap()[0];
    assert_eq!((r.accepted_config.as_ref(), r.had_git), (None, None));
}

#[test]
fn fresh_database_gets_the_latest_schema_in_wal_mode_with_owner_only_mode() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sub/kaged.db");
    let b = SqliteBackend::open(&path).unwrap();
    assert_eq!(b.schema_version().unwrap(), LATEST_SCHEMA);
    let mode: String = b
        .conn()
        .pragma_query_value(None, "journal_mode", |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    let perms = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(perms, 0o600);
    let dir_perms = fs::metadata(path.parent().unwrap())
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(dir_perms, 0o700);
}

#[test]
fn existing_database_is_upgraded_and_keeps_its_rows() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kaged.db");
    {
        let old = SqliteBackend::open_at_version(&path, 1).unwrap();
        assert_eq!(old.schema_version().unwrap(), 1);
        old.append_audit(&event("auth.login")).unwrap();
        assert!(
            old.begin_run(1, "x", "user", 1).is_err(),
            "no daemon_runs in v1"
        );
    }
    let b = SqliteBackend::open(&path).unwrap();
    assert_eq!(b.schema_version().unwrap(), LATEST_SCHEMA);
    let rows = b.recent_audit(10).unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].event, event("auth.login"));
    // Opening again applies nothing twice.
    drop(b);
    let b = SqliteBackend::open(&path).unwrap();
    assert_eq!(b.recent_audit(10).unwrap().len(), 1);
}

#[test]
fn newer_database_is_refused_and_left_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kaged.db");
    {
        let c = Connection::open(&path).unwrap();
        c.pragma_update(None, "user_version", LATEST_SCHEMA + 5)
            .unwrap();
    }
    let err = SqliteBackend::open(&path).err().unwrap();
    assert!(matches!(err, StoreError::NewerSchema { found, .. } if found == LATEST_SCHEMA + 5));
    assert!(err.to_string().contains("newer kaged"), "{err}");
    let c = Connection::open(&path).unwrap();
    let v: u32 = c
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap();
    assert_eq!(v, LATEST_SCHEMA + 5);
}

#[test]
fn a_file_that_is_not_sqlite_is_named_with_what_to_do_and_left_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kaged.db");
    let text = "not a database, just notes the operator keeps here\n".repeat(20);
    fs::write(&path, &text).unwrap();
    let err = SqliteBackend::open(&path).err().unwrap();
    assert!(matches!(err, StoreError::NotADatabase { .. }), "{err:?}");
    let msg = err.to_string();
    for needle in [
        path.to_str().unwrap(),
        "file is not a database",
        "Move it aside",
        "restore it from a backup",
    ] {
        assert!(msg.contains(needle), "{needle:?} in {msg}");
    }
    assert_eq!(fs::read_to_string(&path).unwrap(), text);
}

#[test]
fn an_existing_loose_database_file_is_made_owner_only() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kaged.db");
    Connection::open(&path).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
    SqliteBackend::open(&path).unwrap();
    assert_eq!(
        fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );
}

#[test]
fn audit_events_are_append_only() {
    let dir = tempfile::tempdir().unwrap();
    let b = SqliteBackend::open(&dir.path().join("kaged.db")).unwrap();
    b.append_audit(&event("a")).unwrap();
    let c = b.conn();
    assert!(c.execute("UPDATE audit_events SET kind = 'x'", []).is_err());
    assert!(c.execute("DELETE FROM audit_events", []).is_err());
}

#[test]
fn tokens_are_stored_by_hash_found_until_revoked_and_revoked_once() {
    let dir = tempfile::tempdir().unwrap();
    let b = SqliteBackend::open(&dir.path().join("kaged.db")).unwrap();
    let hash = "a".repeat(64);
    let t = b.create_token(&hash, "alice", Some("laptop"), 10).unwrap();
    assert_eq!(
        (t.actor.as_str(), t.name.as_deref()),
        ("alice", Some("laptop"))
    );
    let found = b.find_active_token(&hash, 20).unwrap().unwrap();
    assert_eq!(found.id, t.id);
    assert_eq!(b.list_tokens().unwrap()[0].last_used_at_ms, Some(20));
    assert!(b.find_active_token(&"b".repeat(64), 20).unwrap().is_none());
    assert!(b.revoke_token(t.id, 30).unwrap().is_some());
    assert!(
        b.revoke_token(t.id, 40).unwrap().is_none(),
        "already revoked"
    );
    assert!(b.revoke_token(999, 40).unwrap().is_none(), "unknown");
    assert!(b.find_active_token(&hash, 50).unwrap().is_none());
    assert_eq!(b.list_tokens().unwrap()[0].revoked_at_ms, Some(30));
    // The schema refuses what the API must never store.
    assert!(b.create_token("short", "alice", None, 1).is_err());
    assert!(
        b.create_token(&"c".repeat(64), "Bootstrap", None, 1)
            .is_err()
    );
    assert!(b.create_token(&"d".repeat(64), " ", None, 1).is_err());
    assert!(
        b.create_token(&hash, "bob", None, 1).is_err(),
        "hashes are unique"
    );
}

#[test]
fn unclean_previous_run_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let b = SqliteBackend::open(&dir.path().join("kaged.db")).unwrap();
    let (first, prev) = b.begin_run(10, "0.1.0", "user", 100).unwrap();
    assert!(prev.is_none());
    let (second, prev) = b.begin_run(11, "0.1.0", "user", 200).unwrap();
    assert_eq!(prev.map(|r| r.id), Some(first.id), "first never stopped");
    b.end_run(second.id, 300).unwrap();
    let (_, prev) = b.begin_run(12, "0.1.0", "user", 400).unwrap();
    assert!(prev.is_none(), "second stopped cleanly");
}

#[test]
fn sessions_keep_every_transition_and_live_ones_are_found() {
    let dir = tempfile::tempdir().unwrap();
    let db = SqliteBackend::open(&dir.path().join("k.db")).unwrap();
    let change = |state: &str, at: i64, ended: bool| StateChange {
        session_id: "s1".into(),
        state: state.into(),
        at_ms: at,
        actor: "ann".into(),
        detail: serde_json::json!({"n": at}),
        exit_code: ended.then_some(0),
        reason: None,
        ended,
    };
    let session = SessionRecord {
        id: "s1".into(),
        project: "demo".into(),
        kind: "terminal".into(),
        name: "terminal".into(),
        command: vec!["bash".into(), "-l".into()],
        caged: true,
        state: "queued".into(),
        exit_code: None,
        reason: None,
        created_by: "ann".into(),
        created_at_ms: 1,
        ended_at_ms: None,
        ..Default::default()
    };
    let first = db
        .create_session(&session, &change("queued", 1, false))
        .unwrap();
    let running = db.change_state(&change("running", 2, false)).unwrap();
    assert!(running.id > first.id);
    assert_eq!(db.live_sessions().unwrap().len(), 1);
    db.change_state(&change("exited", 3, true)).unwrap();
    assert!(db.live_sessions().unwrap().is_empty());
    let got = db.get_session("s1").unwrap().unwrap();
    assert_eq!(
        (got.state.as_str(), got.exit_code, got.ended_at_ms),
        ("exited", Some(0), Some(3))
    );
    assert_eq!(got.command, session.command);
    let all = db.transitions_after(0, Some("s1"), 10).unwrap();
    assert_eq!(
        all.iter().map(|t| t.state.as_str()).collect::<Vec<_>>(),
        ["queued", "running", "exited"]
    );
    assert_eq!(db.transitions_after(first.id, None, 10).unwrap().len(), 2);
    assert_eq!(db.list_sessions(Some("other"), 10).unwrap().len(), 0);
    assert_eq!(db.list_sessions(None, 10).unwrap().len(), 1);
    assert!(db.get_session("nope").unwrap().is_none());
}

#[test]
fn pruned_transcripts_are_recorded_on_the_row_once() {
    let dir = tempfile::tempdir().unwrap();
    let db = SqliteBackend::open(&dir.path().join("kaged.db")).unwrap();
    for (id, created, ended) in [("a", 1, Some(5)), ("b", 2, Some(3)), ("c", 3, None)] {
        let record = SessionRecord {
            id: id.into(),
            project: "demo".into(),
            kind: "task".into(),
            name: "t".into(),
            state: if ended.is_some() { "exited" } else { "running" }.into(),
            created_by: "ann".into(),
            created_at_ms: created,
            ended_at_ms: ended,
            ..Default::default()
        };
        let first = StateChange {
            session_id: id.into(),
            state: record.state.clone(),
            at_ms: created,
            actor: "ann".into(),
            detail: serde_json::json!({}),
            exit_code: None,
            reason: None,
            ended: ended.is_some(),
        };
        db.create_session(&record, &first).unwrap();
    }
    let kept: Vec<String> = db
        .kept_transcripts()
        .unwrap()
        .into_iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(kept, ["b", "a", "c"], "oldest end first, live last");
    db.set_transcript_extent("a", 5000, Some((100, 4000)))
        .unwrap();
    assert!(db.mark_transcript_pruned("a", 9, 10).unwrap());
    assert!(
        !db.mark_transcript_pruned("a", 10, 10).unwrap(),
        "pruned once"
    );
    let a = db.get_session("a").unwrap().unwrap();
    assert_eq!(
        (a.transcript_pruned_at_ms, a.output_bytes, a.dropped),
        (Some(9), Some(5000), Some((100, 4000)))
    );
    let kept: Vec<String> = db
        .kept_transcripts()
        .unwrap()
        .into_iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(kept, ["b", "c"]);
}
