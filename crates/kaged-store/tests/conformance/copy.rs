//! `kaged storage copy`: SQLite → PostgreSQL → SQLite leaves every table's rows identical
//! (ids, row order and id counters included), a copied PostgreSQL database continues its ids
//! past the copied ones, and a target that holds rows is refused untouched, naming them.
//! Without `KAGED_TEST_POSTGRES_URL` the middle database is SQLite (said on stderr).

use kaged_config::StorageUrl;
use kaged_store::{Backend, CopyError, SqliteBackend, table_names};
use rusqlite::types::Value;

use crate::fixtures::{audit, batch, change, decision, pending, session};
use crate::harness::Db;

/// A database with rows in every table, ids with gaps and an ended, a revoked, a decided one.
fn fill(b: &dyn Backend) {
    let (run, _) = b.begin_run(10, "0.1.0", "user", 1).unwrap();
    b.end_run(run.id, 2).unwrap();
    b.begin_run(11, "0.1.0", "user", 3).unwrap();
    for i in 0..5 {
        b.append_audit(&audit(&format!("kind.{i}"))).unwrap();
    }
    let t = b
        .create_token(&"a".repeat(64), "ann", Some("ci"), 5)
        .unwrap();
    b.create_token(&"b".repeat(64), "bob", None, 6).unwrap();
    b.revoke_token(t.id, 7).unwrap();
    b.put_project("demo", "/srv/demo", 8).unwrap();
    b.put_project("other", "/srv/other", 9).unwrap();
    b.set_project_accepted("demo", &serde_json::json!({"version": 1}), true)
        .unwrap();
    for id in ["s_b", "s_a", "s_c"] {
        session(b, id);
    }
    b.change_state(&change("s_a", "running", 20, false))
        .unwrap();
    b.change_state(&change("s_a", "exited", 30, true)).unwrap();
    b.set_transcript_extent("s_a", 4096, Some((10, 20)))
        .unwrap();
    b.mark_transcript_pruned("s_a", 40, 4096).unwrap();
    b.append_events("s_b", &batch(1..=7)).unwrap();
    b.create_approval(&pending("apr_2", "s_b", "shell.bash", 50))
        .unwrap();
    b.create_approval(&pending("apr_1", "s_b", "file.write", 51))
        .unwrap();
    b.decide_approval("apr_2", &decision("denied", "deny", "user:ann"))
        .unwrap();
    b.plugin_storage_set("memo", "notes/b", &serde_json::json!({"n": [1, "é"]}), 60)
        .unwrap();
    b.plugin_storage_set("memo", "notes/%a", &serde_json::json!(null), 61)
        .unwrap();
    b.plugin_storage_set("other", "notes/b", &serde_json::json!("other's"), 62)
        .unwrap();
}

/// Every row of every table as SQLite stores it (rowids included where there are some), the
/// `AUTOINCREMENT` counters and the schema version.
fn dump(path: &std::path::Path) -> Vec<(String, Vec<Vec<Value>>)> {
    let c = rusqlite::Connection::open(path).unwrap();
    let mut out = Vec::new();
    let mut read = |name: String, sql: &str| {
        let mut stmt = c.prepare(sql).unwrap();
        let n = stmt.column_count();
        let rows = stmt
            .query_map([], |r| (0..n).map(|i| r.get::<_, Value>(i)).collect())
            .unwrap()
            .collect::<rusqlite::Result<Vec<Vec<Value>>>>()
            .unwrap();
        out.push((name, rows));
    };
    for table in table_names() {
        let sql = match table {
            "session_events" => format!("SELECT * FROM {table} ORDER BY session_id, seq"),
            "projects" => format!("SELECT * FROM {table} ORDER BY slug"),
            "plugin_storage" => format!("SELECT * FROM {table} ORDER BY plugin, key"),
            _ => format!("SELECT rowid, * FROM {table} ORDER BY rowid"),
        };
        read(table.to_string(), &sql);
    }
    read(
        "sqlite_sequence".into(),
        "SELECT name, seq FROM sqlite_sequence ORDER BY name",
    );
    read("user_version".into(), "PRAGMA user_version");
    out
}

fn sqlite_url(db: &Db) -> StorageUrl {
    db.storage_url()
}

fn progress() -> impl FnMut(String) {
    |line| eprintln!("copy: {line}")
}

#[test]
fn a_round_trip_through_postgresql_leaves_every_row_identical() {
    let first = Db::sqlite();
    fill(first.open().as_ref());
    let middle = Db::postgres("copy_round_trip").unwrap_or_else(Db::sqlite);
    let last = Db::sqlite();

    let there =
        kaged_store::copy(&sqlite_url(&first), &middle.storage_url(), &mut progress()).unwrap();
    let back =
        kaged_store::copy(&middle.storage_url(), &sqlite_url(&last), &mut progress()).unwrap();
    assert_eq!(there, back, "the same rows per table both ways");
    let expected = [
        ("daemon_runs", 2),
        ("audit_events", 5),
        ("api_tokens", 2),
        ("projects", 2),
        ("sessions", 3),
        ("session_transitions", 5),
        ("session_events", 7),
        ("approvals", 2),
        ("plugin_storage", 3),
    ];
    assert_eq!(there, expected);
    let (Db::Sqlite { path: a, .. }, Db::Sqlite { path: c, .. }) = (&first, &last) else {
        unreachable!()
    };
    assert_eq!(dump(a), dump(c));

    // The copy continues where the source stood: new ids come after the copied ones, and a
    // new session sorts after the copied ones (its row order too).
    let b = middle.open();
    assert_eq!(b.append_audit(&audit("after.copy")).unwrap(), 6);
    session(b.as_ref(), "s_new");
    let newest: Vec<String> = b
        .list_sessions(None, 10)
        .unwrap()
        .into_iter()
        .map(|s| s.id)
        .collect();
    assert_eq!(newest[0], "s_new", "{newest:?}");
    assert_eq!(b.recent_audit(1).unwrap()[0].event.kind, "after.copy");
    assert_eq!(
        b.plugin_storage_list("memo", "notes/").unwrap(),
        ["notes/%a", "notes/b"]
    );
    assert_eq!(
        b.plugin_storage_get("other", "notes/b").unwrap(),
        Some(serde_json::json!("other's"))
    );
    let again = SqliteBackend::open(c).unwrap();
    assert_eq!(again.append_audit(&audit("after.copy")).unwrap(), 6);
}

#[test]
fn a_target_holding_rows_is_refused_untouched_naming_them() {
    let source = Db::sqlite();
    fill(source.open().as_ref());
    let target = Db::postgres("copy_not_empty").unwrap_or_else(Db::sqlite);
    {
        let b = target.open();
        b.append_audit(&audit("already.here")).unwrap();
        b.put_project("mine", "/srv/mine", 1).unwrap();
    }
    let e = kaged_store::copy(
        &source.storage_url(),
        &target.storage_url(),
        &mut progress(),
    )
    .unwrap_err();
    assert!(matches!(e, CopyError::NotEmpty { .. }), "{e}");
    let text = e.to_string();
    assert!(
        text.contains("audit_events: 1 row(s)") && text.contains("projects: 1 row(s)"),
        "{text}"
    );
    assert!(
        !text.contains("sessions:"),
        "only tables holding rows: {text}"
    );
    let b = target.open();
    assert_eq!(b.recent_audit(10).unwrap().len(), 1, "left untouched");
    assert_eq!(b.list_sessions(None, 10).unwrap().len(), 0);

    let same = kaged_store::copy(
        &source.storage_url(),
        &source.storage_url(),
        &mut progress(),
    )
    .unwrap_err();
    assert!(matches!(same, CopyError::Same(_)), "{same}");
}

#[test]
fn a_database_a_daemon_holds_is_refused_naming_it() {
    let source = Db::sqlite();
    let held = source.open_for_daemon();
    fill(held.as_ref());
    let target = Db::sqlite();
    let e = kaged_store::copy(
        &source.storage_url(),
        &target.storage_url(),
        &mut progress(),
    )
    .unwrap_err();
    assert!(
        e.to_string().contains("in use by another kaged (kaged pid"),
        "{e}"
    );
}

#[test]
fn the_copy_moves_every_table_of_the_schema() {
    let mut copied: Vec<&str> = table_names();
    copied.sort_unstable();
    let sqlite = Db::sqlite();
    sqlite.open();
    let tables = sqlite.query_text(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name <> 'sqlite_sequence'
         ORDER BY name",
    );
    assert_eq!(tables, copied, "SQLite's tables");
    if let Some(pg) = Db::postgres("copy_every_table") {
        pg.open();
        let tables = pg.query_text(
            "SELECT tablename::text FROM pg_tables WHERE schemaname = current_schema()
             AND tablename <> 'schema_migrations' ORDER BY tablename COLLATE \"C\"",
        );
        assert_eq!(tables, copied, "PostgreSQL's tables");
    }
}
