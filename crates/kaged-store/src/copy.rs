//! `kaged storage copy`: every table of one database into another, empty one, of either
//! engine (SQLite → PostgreSQL to move a team to its server, and back), rows exactly as stored.
//!
//! How it stays safe and exact:
//! - Both databases are opened as a daemon opens them ([`crate::Store::open_for_daemon`]):
//!   claimed first, so a daemon running on either refuses the copy (stop it first) and none can
//!   start while it runs; then migrated to this kaged's schema, so both have the same tables.
//! - The target must be empty: every table is counted first, and any row refuses the copy
//!   naming the tables that hold some ([`CopyError::NotEmpty`]), untouched.
//! - Rows are read in their stored order and written with their own ids (PostgreSQL:
//!   `OVERRIDING SYSTEM VALUE`), the whole copy in one transaction of the target: all or
//!   nothing. Only `INSERT`s run, which the append-only and decided-once triggers allow (they
//!   refuse `UPDATE`, `DELETE` and `TRUNCATE` only), so no trigger is ever disabled.
//! - Id counters continue where the source's stood: PostgreSQL's identity sequences and
//!   SQLite's `sqlite_sequence` are set to the source's counter or the highest copied id,
//!   whichever is higher, so a copied database never reuses an id.
//! - Afterwards every table is counted again in the target and compared with the rows read.
//!
//! Engine-specific reading and writing: `sqlite/copy.rs`, `postgres/copy.rs`.

use kaged_config::StorageUrl;

use crate::{PostgresBackend, SqliteBackend, StoreError};

/// One value of a row, as both engines store it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cell {
    Null,
    Int(i64),
    Text(String),
    Bool(bool),
}

/// A column's type: how each engine reads and writes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// `INTEGER` in SQLite, `BIGINT` in PostgreSQL.
    Int,
    /// `INTEGER` in both (PostgreSQL's 32-bit one).
    Int32,
    Text,
    /// `INTEGER` 0/1 in SQLite, `BOOLEAN` in PostgreSQL.
    Bool,
}

/// A column: its name in each engine (they differ only for the row order of `sessions` and
/// `approvals`: SQLite's `rowid`, PostgreSQL's `row_order` identity).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Column {
    pub sqlite: &'static str,
    pub postgres: &'static str,
    pub kind: Kind,
}

const fn col(name: &'static str, kind: Kind) -> Column {
    Column {
        sqlite: name,
        postgres: name,
        kind,
    }
}

const ROW_ORDER: Column = Column {
    sqlite: "rowid",
    postgres: "row_order",
    kind: Kind::Int,
};

/// A table, as the copy reads and writes it.
#[derive(Debug)]
pub(crate) struct Table {
    pub name: &'static str,
    pub columns: &'static [Column],
    /// The columns (by index) that order its rows.
    pub order: &'static [usize],
    /// The column (by index) with an id counter: SQLite `AUTOINCREMENT` (`sqlite_sequence`) or
    /// a plain rowid; PostgreSQL an identity column.
    pub counter: Option<usize>,
    /// Whether SQLite keeps that counter in `sqlite_sequence` (`AUTOINCREMENT`).
    pub autoincrement: bool,
}

impl Table {
    pub(crate) fn names(&self, postgres: bool) -> Vec<&'static str> {
        self.columns
            .iter()
            .map(|c| if postgres { c.postgres } else { c.sqlite })
            .collect()
    }

    pub(crate) fn order_by(&self, postgres: bool) -> String {
        let names = self.names(postgres);
        self.order
            .iter()
            .map(|&i| names[i])
            .collect::<Vec<_>>()
            .join(", ")
    }
}

use Kind::{Bool, Int, Int32, Text};

/// Every table of the schema ([`crate::LATEST_SCHEMA`]), parents before children.
pub(crate) const TABLES: &[Table] = &[
    Table {
        name: "daemon_runs",
        columns: &[
            col("id", Int),
            col("pid", Int),
            col("version", Text),
            col("mode", Text),
            col("started_at_ms", Int),
            col("stopped_at_ms", Int),
        ],
        order: &[0],
        counter: Some(0),
        autoincrement: true,
    },
    Table {
        name: "audit_events",
        columns: &[
            col("id", Int),
            col("ts_ms", Int),
            col("kind", Text),
            col("outcome", Text),
            col("identity", Text),
            col("source", Text),
            col("detail", Text),
        ],
        order: &[0],
        counter: Some(0),
        autoincrement: true,
    },
    Table {
        name: "api_tokens",
        columns: &[
            col("id", Int),
            col("token_hash", Text),
            col("actor", Text),
            col("name", Text),
            col("created_at_ms", Int),
            col("last_used_at_ms", Int),
            col("revoked_at_ms", Int),
        ],
        order: &[0],
        counter: Some(0),
        autoincrement: true,
    },
    Table {
        name: "projects",
        columns: &[
            col("slug", Text),
            col("root", Text),
            col("loaded_at_ms", Int),
            col("accepted_config", Text),
            col("had_git", Bool),
        ],
        order: &[0],
        counter: None,
        autoincrement: false,
    },
    Table {
        name: "sessions",
        columns: &[
            ROW_ORDER,
            col("id", Text),
            col("project", Text),
            col("kind", Text),
            col("name", Text),
            col("command", Text),
            col("caged", Bool),
            col("state", Text),
            col("exit_code", Int32),
            col("reason", Text),
            col("created_by", Text),
            col("created_at_ms", Int),
            col("ended_at_ms", Int),
            col("transcript_pruned_at_ms", Int),
            col("output_bytes", Int),
            col("dropped_from", Int),
            col("dropped_to", Int),
            col("conversation", Bool),
        ],
        order: &[0],
        counter: Some(0),
        autoincrement: false,
    },
    Table {
        name: "session_transitions",
        columns: &[
            col("id", Int),
            col("session_id", Text),
            col("state", Text),
            col("at_ms", Int),
            col("actor", Text),
            col("detail", Text),
        ],
        order: &[0],
        counter: Some(0),
        autoincrement: true,
    },
    Table {
        name: "session_events",
        columns: &[
            col("session_id", Text),
            col("seq", Int),
            col("at_ms", Int),
            col("kind", Text),
            col("parent_call_id", Text),
            col("body", Text),
        ],
        order: &[0, 1],
        counter: None,
        autoincrement: false,
    },
    Table {
        name: "approvals",
        columns: &[
            ROW_ORDER,
            col("id", Text),
            col("session_id", Text),
            col("project", Text),
            col("agent", Text),
            col("tool", Text),
            col("call_id", Text),
            col("parent_call_id", Text),
            col("arguments", Text),
            col("owner", Text),
            col("state", Text),
            col("decision", Text),
            col("message", Text),
            col("decided_by", Text),
            col("reason", Text),
            col("requested_at_ms", Int),
            col("decided_at_ms", Int),
        ],
        order: &[0],
        counter: Some(0),
        autoincrement: false,
    },
    Table {
        name: "plugin_storage",
        columns: &[
            col("plugin", Text),
            col("key", Text),
            col("value", Text),
            col("updated_at_ms", Int),
        ],
        order: &[0, 1],
        counter: None,
        autoincrement: false,
    },
];

/// The names of every table the copy moves, in its order.
pub fn table_names() -> Vec<&'static str> {
    TABLES.iter().map(|t| t.name).collect()
}

/// Why a copy did not happen (or did not finish: then the target is left as it was).
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("--from and --to name the same database ({0}); give two different databases")]
    Same(String),
    #[error(
        "{target} is not empty ({found}); kaged storage copy fills an empty database only: \
         point --to at a new database (createdb -O ROLE NAME, or a new SQLite file)"
    )]
    NotEmpty { target: String, found: String },
    #[error(
        "after the copy, {table} holds {found} row(s) in {target} but {read} were read from the \
         source; the copy was rolled back"
    )]
    Mismatch {
        target: String,
        table: &'static str,
        read: u64,
        found: u64,
    },
}

/// An opened database, as the copy reads or writes it.
pub(crate) enum Opened {
    Sqlite(SqliteBackend),
    Postgres(Box<PostgresBackend>),
}

/// The target's side of the copy, inside its one transaction.
pub(crate) trait Sink {
    /// Insert one row with its own ids.
    fn insert(&mut self, table: &Table, row: &[Cell]) -> Result<(), StoreError>;
    /// Rows of `table`, as this transaction sees them.
    fn count(&mut self, table: &Table) -> Result<u64, StoreError>;
    /// Set `table`'s id counter past the source's counter and every copied id.
    fn set_counter(&mut self, table: &Table, source: Option<i64>) -> Result<(), StoreError>;
}

/// What runs inside the target's transaction; committed when it returns `Ok`.
pub(crate) type Fill<'a> = dyn FnMut(&mut dyn Sink) -> Result<(), CopyError> + 'a;

impl Opened {
    fn open(url: &StorageUrl) -> Result<Opened, StoreError> {
        Ok(match url {
            StorageUrl::Sqlite(path) => Opened::Sqlite(SqliteBackend::open_for_daemon(path)?),
            StorageUrl::Postgres(pg) => {
                Opened::Postgres(Box::new(PostgresBackend::open_for_daemon(pg)?))
            }
        })
    }

    fn describe(&self) -> String {
        use crate::Backend;
        match self {
            Opened::Sqlite(b) => b.describe(),
            Opened::Postgres(b) => b.describe(),
        }
    }

    /// Call `each` with every row of `table`, in order; returns how many.
    fn each_row(
        &self,
        table: &Table,
        each: &mut dyn FnMut(&[Cell]) -> Result<(), StoreError>,
    ) -> Result<u64, StoreError> {
        match self {
            Opened::Sqlite(b) => b.copy_rows(table, each),
            Opened::Postgres(b) => b.copy_rows(table, each),
        }
    }

    /// The id counter of `table` (the last id handed out, deleted rows included), if any.
    fn counter(&self, table: &Table) -> Result<Option<i64>, StoreError> {
        match self {
            Opened::Sqlite(b) => b.copy_counter(table),
            Opened::Postgres(b) => b.copy_counter(table),
        }
    }

    /// Run `fill` in one transaction of this database: committed when it returns `Ok`,
    /// rolled back otherwise.
    fn import(&self, fill: &mut Fill<'_>) -> Result<(), CopyError> {
        match self {
            Opened::Sqlite(b) => b.copy_import(fill),
            Opened::Postgres(b) => b.copy_import(fill),
        }
    }
}

/// Rows per table after a copy, in [`table_names`] order.
pub type Counts = Vec<(&'static str, u64)>;

/// Copy every table of `from` into the empty database `to` (see the module's doc). `progress`
/// is told what happens, one line at a time (the CLI prints it on stderr). Returns the rows
/// of each table as counted in the target after its copy, inside the transaction (a count
/// that differs from the rows read rolls the whole copy back).
pub fn copy(
    from: &StorageUrl,
    to: &StorageUrl,
    progress: &mut dyn FnMut(String),
) -> Result<Counts, CopyError> {
    if from == to {
        return Err(CopyError::Same(from.to_string()));
    }
    progress(format!("opening {from} (the source)"));
    let source = Opened::open(from)?;
    progress(format!("opening {to} (the target)"));
    let target = Opened::open(to)?;
    let place = target.describe();
    let mut counts = Vec::new();
    target.import(&mut |sink| {
        // Inside the transaction: nothing can fill the target between this check and the copy.
        let mut found = Vec::new();
        for table in TABLES {
            let n = sink.count(table)?;
            if n > 0 {
                found.push(format!("{}: {n} row(s)", table.name));
            }
        }
        if !found.is_empty() {
            return Err(CopyError::NotEmpty {
                target: place.clone(),
                found: found.join(", "),
            });
        }
        for table in TABLES {
            progress(format!("copying {}", table.name));
            let read = source.each_row(table, &mut |row| sink.insert(table, row))?;
            sink.set_counter(table, source.counter(table)?)?;
            let found = sink.count(table)?;
            if found != read {
                return Err(CopyError::Mismatch {
                    target: place.clone(),
                    table: table.name,
                    read,
                    found,
                });
            }
            progress(format!("copied {read} row(s) of {}", table.name));
            counts.push((table.name, found));
        }
        Ok(())
    })?;
    Ok(counts)
}
