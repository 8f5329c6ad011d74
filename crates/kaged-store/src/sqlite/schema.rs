//! Opening a database file and bringing its schema up to date (`PRAGMA user_version` counts
//! the migrations applied), refusing a newer schema or a file that is not SQLite untouched.

use std::fs;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::Path;
use std::sync::Mutex;

use rusqlite::Connection;

use super::{SqliteBackend, sql};
use crate::migrations::{LATEST_SCHEMA, MIGRATIONS};
use crate::{Result, StoreError};

impl SqliteBackend {
    /// Open (or create) the database at `path` and apply the migrations it lacks.
    pub fn open(path: &Path) -> Result<Self> {
        Self::open_with(path, false)
    }

    /// [`SqliteBackend::open`] for a daemon: claims the file first (see
    /// [`crate::Backend::lock_for_daemon`]), so a second daemon is refused before anything of
    /// the database is read or changed.
    pub fn open_for_daemon(path: &Path) -> Result<Self> {
        Self::open_with(path, true)
    }

    fn open_with(path: &Path, claim: bool) -> Result<Self> {
        let io = |source| StoreError::Io {
            path: path.to_path_buf(),
            source,
        };
        if let Some(dir) = path.parent()
            && !dir.exists()
        {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(io)?;
        }
        let claimed = claim.then(|| super::lock::claim_file(path)).transpose()?;
        let conn = Connection::open(path).map_err(|e| opening(path, e))?;
        // The database holds the audit trail: owner only, whether we created it or not.
        let mode = fs::metadata(path).map_err(io)?.permissions().mode();
        if mode & 0o077 != 0 {
            fs::set_permissions(path, fs::Permissions::from_mode(0o600)).map_err(io)?;
        }
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(|e| opening(path, e))?;
        // Refuse a newer schema before changing anything (journal mode included).
        let found = version(&conn).map_err(|e| opening(path, e))?;
        if found > LATEST_SCHEMA {
            return Err(newer_schema(path, found));
        }
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(|e| opening(path, e))?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(|e| opening(path, e))?;
        conn.pragma_update(None, "foreign_keys", "ON")
            .map_err(|e| opening(path, e))?;
        // 512 KiB of page cache (SQLite's default is 2 MiB): kaged's queries are small and the
        // file stays in the OS page cache anyway; the daemon's own memory stays small.
        conn.pragma_update(None, "cache_size", -512)
            .map_err(|e| opening(path, e))?;
        let backend = SqliteBackend {
            path: path.to_path_buf(),
            conn: Mutex::new(conn),
            lock: Mutex::new(claimed),
        };
        backend.migrate(LATEST_SCHEMA)?;
        Ok(backend)
    }

    /// Bring the schema up to `target` (the latest in production; lower in tests that build an
    /// old database). Each migration and its version bump are one transaction.
    pub fn migrate(&self, target: u32) -> Result<()> {
        let mut conn = self.conn();
        let found = version(&conn).map_err(|e| self.err(e))?;
        if found > LATEST_SCHEMA {
            return Err(newer_schema(&self.path, found));
        }
        for (index, sql_text) in MIGRATIONS.iter().enumerate().take(target as usize) {
            let version = index as u32 + 1;
            if version <= found {
                continue;
            }
            let tx = conn.transaction().map_err(|e| self.err(e))?;
            tx.execute_batch(sql_text).map_err(|e| self.err(e))?;
            tx.pragma_update(None, "user_version", version)
                .map_err(|e| self.err(e))?;
            tx.commit().map_err(|e| self.err(e))?;
        }
        Ok(())
    }

    /// Open without migrating further than `version` (tests build old databases this way).
    pub fn open_at_version(path: &Path, version: u32) -> Result<Self> {
        let conn = Connection::open(path).map_err(|e| sql(path, e))?;
        let backend = SqliteBackend {
            path: path.to_path_buf(),
            conn: Mutex::new(conn),
            lock: Default::default(),
        };
        backend.migrate(version)?;
        Ok(backend)
    }
}

/// The schema version of the database: how many migrations it has.
pub(super) fn version(conn: &Connection) -> rusqlite::Result<u32> {
    conn.pragma_query_value(None, "user_version", |r| r.get(0))
}

/// Write the WAL back into the database file and truncate it (a clean stop).
pub(super) fn checkpoint(conn: &Connection) -> rusqlite::Result<()> {
    conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);")
}

fn newer_schema(path: &Path, found: u32) -> StoreError {
    StoreError::NewerSchema {
        place: path.display().to_string(),
        found,
        supported: LATEST_SCHEMA,
    }
}

/// An error while opening: a file that is not SQLite (or is damaged) gets its own error, naming
/// the file and what to do; anything else is reported as it is.
fn opening(path: &Path, source: rusqlite::Error) -> StoreError {
    match source.sqlite_error_code() {
        Some(rusqlite::ErrorCode::NotADatabase | rusqlite::ErrorCode::DatabaseCorrupt) => {
            StoreError::NotADatabase {
                path: path.to_path_buf(),
                reason: source.to_string(),
            }
        }
        _ => sql(path, source),
    }
}
