//! Storage health: whether the last write reached the database, and why not.
//!
//! Every [`crate::Store`] operation that fails for a reason of the storage itself (the disk is
//! full, an I/O error, a read-only or unopenable file) marks the store failing; a write that
//! succeeds marks it healthy again. Callers read it to report trouble (readiness, status) and
//! to refuse new work while it lasts. A failure of the request itself (a constraint, a bad
//! query) says nothing about storage and changes nothing.

use std::sync::{Arc, Mutex};

use serde::Serialize;

use crate::StoreError;

/// What kind of storage trouble an error is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Trouble {
    /// No space left (SQLITE_FULL, ENOSPC, EDQUOT): freeing space fixes it.
    Full,
    /// Any other failure of the storage (I/O error, read-only, cannot open, corrupt).
    Failing,
}

const ENOSPC: i32 = 28;
const EDQUOT: i32 = 122;

impl StoreError {
    /// Whether this error is storage trouble, and which; `None` for errors of the request.
    pub fn trouble(&self) -> Option<Trouble> {
        match self {
            StoreError::Sqlite { source, .. } => sqlite_trouble(source),
            StoreError::Io { source, .. } => Some(io_trouble(source)),
            StoreError::Postgres { source, .. } => crate::postgres::trouble(source),
            StoreError::Worker(_) | StoreError::Busy { .. } => Some(Trouble::Failing),
            // Held behind earlier changes: no new observation of the storage. A file that is
            // not a database is refused at open, before there is a store to report on.
            StoreError::NewerSchema { .. }
            | StoreError::NotADatabase { .. }
            | StoreError::InUse { .. }
            | StoreError::Setup { .. }
            | StoreError::NotKaged { .. }
            | StoreError::Held { .. }
            | StoreError::OutOfOrder { .. }
            | StoreError::QuotaExceeded { .. } => None,
        }
    }

    /// The SQLite file this error is about, when it names one.
    pub fn path(&self) -> Option<&std::path::Path> {
        match self {
            StoreError::Sqlite { path, .. }
            | StoreError::Io { path, .. }
            | StoreError::NotADatabase { path, .. } => Some(path),
            _ => None,
        }
    }
}

fn io_trouble(e: &std::io::Error) -> Trouble {
    match e.raw_os_error() {
        Some(ENOSPC | EDQUOT) => Trouble::Full,
        _ => Trouble::Failing,
    }
}

fn sqlite_trouble(e: &rusqlite::Error) -> Option<Trouble> {
    use rusqlite::ErrorCode::*;
    match e {
        rusqlite::Error::SqliteFailure(f, _) => match f.code {
            DiskFull => Some(Trouble::Full),
            SystemIoFailure
            | CannotOpen
            | ReadOnly
            | DatabaseCorrupt
            | NotADatabase
            | FileLockingProtocolFailed
            | DatabaseBusy
            | DatabaseLocked
            | OutOfMemory => Some(Trouble::Failing),
            _ => None,
        },
        _ => None,
    }
}

/// The storage's state as reported (`GET /api/v1/status`, `/readyz`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Failure {
    pub trouble: Trouble,
    /// When the current run of failures began (Unix ms).
    pub since_ms: i64,
    /// The latest failure (Unix ms) and its error.
    pub last_ms: i64,
    pub last_error: String,
    /// Failed operations since `since_ms`.
    pub failures: u64,
}

/// Shared by every clone of a [`crate::Store`].
#[derive(Debug, Clone, Default)]
pub struct Health {
    failing: Arc<Mutex<Option<Failure>>>,
}

impl Health {
    /// `None` while storage is healthy.
    pub fn failure(&self) -> Option<Failure> {
        self.lock().clone()
    }

    pub fn is_ok(&self) -> bool {
        self.lock().is_none()
    }

    /// Record the outcome of an operation; `write` tells whether a success proves the
    /// storage takes writes again (reads succeed on a full disk). Returns `true` when this
    /// outcome changed the state (healthy ↔ failing), for the caller to log once.
    pub fn observe(&self, outcome: Result<(), &StoreError>, write: bool, now_ms: i64) -> bool {
        let mut failing = self.lock();
        match outcome {
            Ok(()) if write => failing.take().is_some(),
            Ok(()) => false,
            Err(e) => match e.trouble() {
                None => false,
                Some(trouble) => match failing.as_mut() {
                    Some(f) => {
                        // A full disk stays the headline while it lasts: it names the fix.
                        if trouble == Trouble::Full || f.trouble != Trouble::Full {
                            f.trouble = trouble;
                        }
                        f.last_ms = now_ms;
                        f.last_error = e.to_string();
                        f.failures += 1;
                        false
                    }
                    None => {
                        *failing = Some(Failure {
                            trouble,
                            since_ms: now_ms,
                            last_ms: now_ms,
                            last_error: e.to_string(),
                            failures: 1,
                        });
                        true
                    }
                },
            },
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Failure>> {
        self.failing.lock().unwrap_or_else(|p| p.into_inner())
    }
}

pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn sqlite(code: i32) -> StoreError {
        StoreError::Sqlite {
            path: PathBuf::from("/data/kaged.db"),
            source: rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(code), None),
        }
    }

    #[test]
    fn errors_are_classified() {
        assert_eq!(
            sqlite(rusqlite::ffi::SQLITE_FULL).trouble(),
            Some(Trouble::Full)
        );
        assert_eq!(
            sqlite(rusqlite::ffi::SQLITE_IOERR_WRITE).trouble(),
            Some(Trouble::Failing)
        );
        assert_eq!(sqlite(rusqlite::ffi::SQLITE_CONSTRAINT).trouble(), None);
        let io = StoreError::Io {
            path: PathBuf::from("/data"),
            source: std::io::Error::from_raw_os_error(ENOSPC),
        };
        assert_eq!(io.trouble(), Some(Trouble::Full));
    }

    #[test]
    fn a_failure_marks_failing_until_a_write_succeeds() {
        let h = Health::default();
        assert!(h.is_ok());
        let full = sqlite(rusqlite::ffi::SQLITE_FULL);
        assert!(h.observe(Err(&full), true, 10));
        assert!(!h.observe(Err(&sqlite(rusqlite::ffi::SQLITE_IOERR)), true, 20));
        let f = h.failure().unwrap();
        assert_eq!(
            (f.trouble, f.since_ms, f.last_ms, f.failures),
            (Trouble::Full, 10, 20, 2)
        );
        // A request's own error and a read say nothing.
        assert!(!h.observe(Err(&sqlite(rusqlite::ffi::SQLITE_CONSTRAINT)), true, 30));
        assert!(!h.observe(Ok(()), false, 30));
        assert!(!h.is_ok());
        assert!(h.observe(Ok(()), true, 40));
        assert!(h.is_ok());
    }
}
