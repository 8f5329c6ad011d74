//! Tests of the SQLite backend's own machinery on real files in temporary directories: WAL,
//! file modes, files that are not SQLite, the daemon's lock file. What every backend must do is
//! checked against SQLite and PostgreSQL alike by `tests/conformance/`.

use std::fs;
use std::os::unix::fs::PermissionsExt;

use rusqlite::Connection;

use super::SqliteBackend;
use crate::migrations::LATEST_SCHEMA;
use crate::{Backend, StoreError};

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
fn the_daemon_lock_file_is_owner_only_and_names_its_holder() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kaged.db");
    let b = SqliteBackend::open(&path).unwrap();
    b.lock_for_daemon().unwrap();
    let lock = dir.path().join("kaged.db.lock");
    assert_eq!(
        fs::metadata(&lock).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert_eq!(fs::read_to_string(&lock).unwrap(), crate::this_daemon());
}
