//! The one error type of the storage boundary, and what each variant tells the operator.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database {path}: {source}")]
    Sqlite {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error("database {place}: {}", with_causes(source))]
    Postgres {
        /// The URL without its password.
        place: String,
        #[source]
        source: postgres::Error,
    },
    #[error(
        "database {place} has schema version {found}, written by a newer kaged (this kaged knows up to {supported}); \
         upgrade kaged, or point [storage] url at another database"
    )]
    NewerSchema {
        /// The file, or the URL without its password.
        place: String,
        found: u32,
        supported: u32,
    },
    /// Every pooled connection stayed busy (or the database did not answer) for too long.
    #[error("database {place}: no connection became free within {waited_secs} s")]
    Busy { place: String, waited_secs: u64 },
    /// What the URL asks for cannot be set up (a TLS root certificate that cannot be read).
    #[error("database {place}: {reason}")]
    Setup { place: String, reason: String },
    /// Another kaged holds the database (see [`crate::Backend::lock_for_daemon`]).
    #[error(
        "database {place} is in use by another kaged ({holder}); stop that daemon first, or point [storage] url at another database"
    )]
    InUse { place: String, holder: String },
    /// A PostgreSQL database that holds tables but no kaged schema. kaged does not touch it.
    #[error(
        "database {place} holds tables that are not kaged's ({tables}); kaged left it untouched. \
         Give kaged a database of its own (createdb -O ROLE kaged) and point [storage] url at it"
    )]
    NotKaged { place: String, tables: String },
    #[error("cannot prepare {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("storage worker stopped: {0}")]
    Worker(String),
    /// The file at the storage path is not SQLite (or is damaged beyond opening). kaged does not
    /// touch it: the operator decides.
    #[error(
        "{path} is not a usable SQLite database ({reason}); kaged left its contents untouched. \
         Move it aside (with any {path}-wal and {path}-shm next to it) to start with an empty database, \
         or restore it from a backup, or point [storage] url at another file"
    )]
    NotADatabase { path: PathBuf, reason: String },
    /// Earlier state changes wait to be stored (storage failed); this one waits behind them.
    #[error(
        "storage is failing: the state change of session {session} is held with {held} other(s) and stored when storage recovers"
    )]
    Held { session: String, held: usize },
    /// Events appended out of order: a session's log is numbered from 1 with no gap.
    #[error(
        "event {seq} of session {session} is out of order: the log's next number is {expected}"
    )]
    OutOfOrder {
        session: String,
        seq: u64,
        expected: u64,
    },
    /// A plugin's storage write refused: the plugin would hold more than its quota. Nothing
    /// was written; deleting keys makes room.
    #[error(
        "plugin {plugin}'s storage is full: a plugin keeps {limit}; nothing was written (delete keys it no longer needs)"
    )]
    QuotaExceeded {
        plugin: String,
        limit: crate::PluginQuota,
    },
}

pub type Result<T> = std::result::Result<T, StoreError>;

/// An error with the causes its own text leaves out (`error performing TLS handshake: invalid
/// peer certificate: UnknownIssuer`), each once.
fn with_causes(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let more = c.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        cause = c.source();
    }
    text
}
