//! Cases of the schema, the audit trail, tokens, daemon runs, projects, sessions and their
//! transitions, and transcript retention.

use kaged_store::{LATEST_SCHEMA, SessionRecord, StateChange, StoreError};

use crate::fixtures::{audit, change};
use crate::harness::Db;

pub fn a_new_database_gets_the_latest_schema(db: &Db) {
    let b = db.open();
    assert_eq!(b.schema_version().unwrap(), LATEST_SCHEMA);
    assert_eq!(db.raw_schema_version(), LATEST_SCHEMA);
    b.ping().unwrap();
    assert!(b.recent_audit(10).unwrap().is_empty());
    let shown = b.describe();
    assert!(
        shown.starts_with(if db.is_postgres() {
            "postgres://"
        } else {
            "sqlite:///"
        }),
        "{shown}"
    );
}

pub fn an_old_database_is_upgraded_and_keeps_its_rows(db: &Db) {
    {
        let old = db.open_at(1);
        assert_eq!(old.schema_version().unwrap(), 1);
        old.append_audit(&audit("auth.login")).unwrap();
        let err = old.begin_run(1, "x", "user", 1).unwrap_err();
        assert!(err.trouble().is_none(), "no daemon_runs in v1: {err:?}");
    }
    let b = db.open();
    assert_eq!(b.schema_version().unwrap(), LATEST_SCHEMA);
    let rows = b.recent_audit(10).unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].event, audit("auth.login"));
    // Opening again applies nothing twice.
    drop(b);
    let b = db.open();
    assert_eq!(b.recent_audit(10).unwrap().len(), 1);
    assert_eq!(db.raw_schema_version(), LATEST_SCHEMA);
}

pub fn a_newer_database_is_refused_and_left_untouched(db: &Db) {
    drop(db.open());
    db.set_schema_version(LATEST_SCHEMA + 5);
    let err = db.try_open().err().unwrap();
    assert!(
        matches!(err, StoreError::NewerSchema { found, .. } if found == LATEST_SCHEMA + 5),
        "{err:?}"
    );
    assert!(err.trouble().is_none());
    let msg = err.to_string();
    assert!(msg.contains("written by a newer kaged"), "{msg}");
    assert!(msg.contains("upgrade kaged"), "{msg}");
    assert_eq!(db.raw_schema_version(), LATEST_SCHEMA + 5);
}

pub fn audit_records_read_newest_first_and_the_database_refuses_changing_them(db: &Db) {
    let b = db.open();
    let first = b.append_audit(&audit("a")).unwrap();
    let second = b.append_audit(&audit("b")).unwrap();
    assert!(second > first);
    let kinds: Vec<String> = b
        .recent_audit(10)
        .unwrap()
        .into_iter()
        .map(|r| r.event.kind)
        .collect();
    assert_eq!(kinds, ["b", "a"]);
    assert_eq!(b.recent_audit(1).unwrap()[0].id, second);
    for sql in [
        "UPDATE audit_events SET kind = 'x'",
        "DELETE FROM audit_events",
    ] {
        let err = db.exec(sql).unwrap_err();
        assert!(err.contains("append-only"), "{sql}: {err}");
    }
    assert_eq!(b.recent_audit(10).unwrap().len(), 2);
}

pub fn tokens_are_stored_by_hash_found_until_revoked_and_revoked_once(db: &Db) {
    let b = db.open();
    let hash = "a".repeat(64);
    let t = b.create_token(&hash, "alice", Some("laptop"), 10).unwrap();
    assert_eq!(
        (t.actor.as_str(), t.name.as_deref()),
        ("alice", Some("laptop"))
    );
    let found = b.find_active_token(&hash, 20).unwrap().unwrap();
    assert_eq!(found.id, t.id);
    assert_eq!(b.list_tokens().unwrap()[0].last_used_at_ms, Some(20));
    // Within the hour: not written again.
    b.find_active_token(&hash, 30).unwrap().unwrap();
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
    // The schema refuses what the API must never store, as errors of the request.
    for refused in [
        b.create_token("short", "alice", None, 1),
        b.create_token(&"c".repeat(64), "Bootstrap", None, 1),
        b.create_token(&"d".repeat(64), " ", None, 1),
        b.create_token(&"e".repeat(64), "bob", Some(" "), 1),
        b.create_token(&hash, "bob", None, 1),
    ] {
        let err = refused.unwrap_err();
        assert!(err.trouble().is_none(), "{err:?}");
    }
    assert_eq!(b.list_tokens().unwrap().len(), 1);
}

pub fn an_unclean_previous_run_is_reported(db: &Db) {
    let b = db.open();
    b.probe_write().unwrap();
    let (first, prev) = b.begin_run(10, "0.1.0", "user", 100).unwrap();
    assert!(prev.is_none());
    let (second, prev) = b.begin_run(11, "0.1.0", "user", 200).unwrap();
    assert_eq!(prev.map(|r| r.id), Some(first.id), "first never stopped");
    assert_eq!(second.pid, 11);
    b.end_run(second.id, 300).unwrap();
    let (_, prev) = b.begin_run(12, "0.1.0", "user", 400).unwrap();
    assert!(prev.is_none(), "second stopped cleanly");
    b.probe_write().unwrap();
    b.close().unwrap();
    b.ping().unwrap();
}

pub fn what_was_accepted_for_a_project_survives_until_its_root_changes(db: &Db) {
    let b = db.open();
    b.put_project("demo", "/p/demo", 1).unwrap();
    b.put_project("B-upper", "/p/b", 1).unwrap();
    assert_eq!(b.list_projects().unwrap()[1].accepted_config, None);
    let config = serde_json::json!({"project": "demo", "primary": {"cage": "disabled"}});
    assert!(b.set_project_accepted("demo", &config, true).unwrap());
    assert!(!b.set_project_accepted("other", &config, true).unwrap());
    // Registered again from the same root (local.toml, at every start): kept.
    b.put_project("demo", "/p/demo", 2).unwrap();
    let all = b.list_projects().unwrap();
    let slugs: Vec<&str> = all.iter().map(|p| p.slug.as_str()).collect();
    assert_eq!(slugs, ["B-upper", "demo"], "by slug, bytewise");
    let r = &all[1];
    assert_eq!(
        (r.accepted_config.as_ref(), r.had_git, r.loaded_at_ms),
        (Some(&config), Some(true), 2)
    );
    // From another root: forgotten.
    b.put_project("demo", "/q/demo", 3).unwrap();
    let r = &b.list_projects().unwrap()[1];
    assert_eq!((r.accepted_config.as_ref(), r.had_git), (None, None));
    // Two projects cannot share a root.
    assert!(
        b.put_project("dup", "/q/demo", 4)
            .unwrap_err()
            .trouble()
            .is_none()
    );
    assert!(b.remove_project("demo").unwrap());
    assert!(!b.remove_project("demo").unwrap());
    assert_eq!(b.list_projects().unwrap().len(), 1);
}

pub fn sessions_keep_every_transition_and_live_ones_are_found(db: &Db) {
    let b = db.open();
    let session = SessionRecord {
        id: "s1".into(),
        project: "demo".into(),
        kind: "terminal".into(),
        name: "terminal".into(),
        command: vec!["bash".into(), "-l".into()],
        caged: true,
        state: "queued".into(),
        created_by: "ann".into(),
        created_at_ms: 1,
        ..Default::default()
    };
    let first = b
        .create_session(&session, &change("s1", "queued", 1, false))
        .unwrap();
    assert!(
        b.create_session(&session, &change("s1", "queued", 1, false))
            .unwrap_err()
            .trouble()
            .is_none(),
        "ids are unique"
    );
    let running = b.change_state(&change("s1", "running", 2, false)).unwrap();
    assert!(running.id > first.id);
    assert_eq!(b.live_sessions().unwrap().len(), 1);
    b.change_state(&StateChange {
        exit_code: Some(3),
        reason: Some("exit 3".into()),
        ..change("s1", "exited", 3, true)
    })
    .unwrap();
    assert!(b.live_sessions().unwrap().is_empty());
    let got = b.get_session("s1").unwrap().unwrap();
    assert_eq!(
        (got.state.as_str(), got.exit_code, got.ended_at_ms),
        ("exited", Some(3), Some(3))
    );
    assert_eq!(got.reason.as_deref(), Some("exit 3"));
    assert_eq!(got.command, session.command);
    assert!(got.caged && !got.conversation);
    let all = b.transitions_after(0, Some("s1"), 10).unwrap();
    assert_eq!(
        all.iter().map(|t| t.state.as_str()).collect::<Vec<_>>(),
        ["queued", "running", "exited"]
    );
    assert_eq!(all[1].detail, serde_json::json!({"n": 2}));
    assert_eq!(b.transitions_after(first.id, None, 10).unwrap().len(), 2);
    assert_eq!(b.transitions_after(first.id, None, 1).unwrap().len(), 1);
    assert_eq!(b.list_sessions(Some("other"), 10).unwrap().len(), 0);
    assert_eq!(b.list_sessions(None, 10).unwrap().len(), 1);
    assert!(b.get_session("nope").unwrap().is_none());
    // Newest first; the later-created wins a tie of creation times.
    for id in ["s2", "s3"] {
        let s = SessionRecord {
            id: id.into(),
            ..session.clone()
        };
        b.create_session(&s, &change(id, "queued", 1, false))
            .unwrap();
    }
    let ids: Vec<String> = b
        .list_sessions(Some("demo"), 2)
        .unwrap()
        .into_iter()
        .map(|s| s.id)
        .collect();
    assert_eq!(ids, ["s3", "s2"]);
}

pub fn pruned_transcripts_are_recorded_on_the_row_once(db: &Db) {
    let b = db.open();
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
            exit_code: None,
            ..change(id, &record.state, created, ended.is_some())
        };
        b.create_session(&record, &first).unwrap();
    }
    let kept = |b: &dyn kaged_store::Backend| -> Vec<String> {
        b.kept_transcripts()
            .unwrap()
            .into_iter()
            .map(|r| r.id)
            .collect()
    };
    assert_eq!(
        kept(b.as_ref()),
        ["b", "a", "c"],
        "oldest end first, live last"
    );
    b.set_transcript_extent("a", 5000, Some((100, 4000)))
        .unwrap();
    assert!(b.mark_transcript_pruned("a", 9, 10).unwrap());
    assert!(
        !b.mark_transcript_pruned("a", 10, 10).unwrap(),
        "pruned once"
    );
    assert!(!b.mark_transcript_pruned("nope", 10, 10).unwrap());
    let a = b.get_session("a").unwrap().unwrap();
    assert_eq!(
        (a.transcript_pruned_at_ms, a.output_bytes, a.dropped),
        (Some(9), Some(5000), Some((100, 4000)))
    );
    assert_eq!(kept(b.as_ref()), ["b", "c"]);
    // A larger length at pruning time wins; no dropped range reads as none.
    b.set_transcript_extent("b", 10, None).unwrap();
    assert!(b.mark_transcript_pruned("b", 11, 20).unwrap());
    let got = b.get_session("b").unwrap().unwrap();
    assert_eq!((got.output_bytes, got.dropped), (Some(20), None));
}
