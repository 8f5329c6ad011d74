//! `kaged storage backup FILE` for SQLite: a consistent snapshot of the database while the
//! daemon runs and writes. `VACUUM INTO` reads the database in one read transaction (in WAL
//! mode it never blocks the daemon's writes, nor they it) and writes a compact copy of exactly
//! that state into FILE, made beforehand, empty, with owner-only access (0600: the database
//! holds the audit trail and token hashes). PostgreSQL has its own tool: `pg_dump`.

use std::fs;
use std::io::ErrorKind;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use rusqlite::{Connection, OpenFlags};

use crate::{Result, StoreError};

/// What a backup wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backup {
    pub file: PathBuf,
    pub bytes: u64,
    /// The schema version of the snapshot.
    pub schema: u32,
}

/// Snapshot the SQLite database at `db` into `file`, which must not exist yet (it is never
/// overwritten). A failed backup removes what it wrote.
pub fn backup_sqlite(db: &Path, file: &Path) -> Result<Backup> {
    let io = |path: &Path, source: std::io::Error| StoreError::Io {
        path: path.to_path_buf(),
        source,
    };
    let sql = |path: &Path, source: rusqlite::Error| StoreError::Sqlite {
        path: path.to_path_buf(),
        source,
    };
    if !db.is_file() {
        return Err(io(
            db,
            std::io::Error::new(ErrorKind::NotFound, "no database file there"),
        ));
    }
    // Opened for reading and writing (WAL readers need the shared-memory file) but never
    // created: a wrong path is an error, not a new empty database.
    let conn = Connection::open_with_flags(
        db,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| sql(db, e))?;
    conn.busy_timeout(std::time::Duration::from_secs(10))
        .map_err(|e| sql(db, e))?;
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(file)
        .map_err(|e| match e.kind() {
            ErrorKind::AlreadyExists => io(
                file,
                std::io::Error::new(
                    ErrorKind::AlreadyExists,
                    "it already exists; a backup never overwrites a file: remove it or name another",
                ),
            ),
            _ => io(file, e),
        })?;
    let written = (|| {
        let target = file
            .to_str()
            .ok_or_else(|| rusqlite::Error::InvalidPath(file.to_path_buf()))?;
        conn.execute("VACUUM INTO ?1", [target])?;
        let copy = Connection::open_with_flags(file, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
        let check: String = copy.query_row("PRAGMA quick_check", [], |r| r.get(0))?;
        if check != "ok" {
            return Err(rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CORRUPT),
                Some(format!("the snapshot fails its check: {check}")),
            ));
        }
        copy.query_row("PRAGMA user_version", [], |r| r.get::<_, u32>(0))
    })();
    let schema = match written {
        Ok(v) => v,
        Err(e) => {
            let _ = fs::remove_file(file);
            return Err(sql(db, e));
        }
    };
    let bytes = fs::metadata(file).map_err(|e| io(file, e))?.len();
    Ok(Backup {
        file: file.to_path_buf(),
        bytes,
        schema,
    })
}
