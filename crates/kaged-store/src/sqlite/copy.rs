//! `kaged storage copy` on SQLite (see `crate::copy`): rows read in order with their rowids,
//! written with them, and `sqlite_sequence` (the `AUTOINCREMENT` counters) carried over.

use rusqlite::types::{Value, ValueRef};
use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior};

use super::SqliteBackend;
use crate::Result;
use crate::copy::{Cell, CopyError, Fill, Kind, Sink, Table};

impl SqliteBackend {
    pub(crate) fn copy_rows(
        &self,
        table: &Table,
        each: &mut dyn FnMut(&[Cell]) -> Result<()>,
    ) -> Result<u64> {
        let conn = self.conn();
        let sql = format!(
            "SELECT {} FROM {} ORDER BY {}",
            table.names(false).join(", "),
            table.name,
            table.order_by(false)
        );
        let mut stmt = conn.prepare(&sql).map_err(|e| self.err(e))?;
        let mut rows = stmt.query([]).map_err(|e| self.err(e))?;
        let mut n = 0;
        while let Some(row) = rows.next().map_err(|e| self.err(e))? {
            let cells = table
                .columns
                .iter()
                .enumerate()
                .map(|(i, c)| cell(row.get_ref(i)?, i, c.sqlite, c.kind))
                .collect::<rusqlite::Result<Vec<_>>>()
                .map_err(|e| self.err(e))?;
            each(&cells)?;
            n += 1;
        }
        Ok(n)
    }

    /// The `AUTOINCREMENT` counter of `table` (`sqlite_sequence`); `None` for other tables.
    pub(crate) fn copy_counter(&self, table: &Table) -> Result<Option<i64>> {
        if !table.autoincrement {
            return Ok(None);
        }
        self.with(|c| {
            c.query_row(
                "SELECT seq FROM sqlite_sequence WHERE name = ?1",
                [table.name],
                |r| r.get(0),
            )
            .optional()
        })
    }

    pub(crate) fn copy_import(&self, fill: &mut Fill<'_>) -> std::result::Result<(), CopyError> {
        let mut conn = self.conn();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| self.err(e))?;
        let mut sink = SqliteSink {
            backend: self,
            tx: &tx,
        };
        fill(&mut sink)?;
        tx.commit().map_err(|e| self.err(e))?;
        Ok(())
    }
}

/// One value as the copy carries it; SQLite's dynamic types are held to the column's.
fn cell(v: ValueRef<'_>, i: usize, name: &str, kind: Kind) -> rusqlite::Result<Cell> {
    Ok(match (v, kind) {
        (ValueRef::Null, _) => Cell::Null,
        (ValueRef::Integer(n), Kind::Bool) => Cell::Bool(n != 0),
        (ValueRef::Integer(n), Kind::Int | Kind::Int32) => Cell::Int(n),
        (ValueRef::Text(t), Kind::Text) => Cell::Text(
            std::str::from_utf8(t)
                .map_err(rusqlite::Error::Utf8Error)?
                .to_string(),
        ),
        (other, _) => {
            return Err(rusqlite::Error::InvalidColumnType(
                i,
                name.to_string(),
                other.data_type(),
            ));
        }
    })
}

struct SqliteSink<'a> {
    backend: &'a SqliteBackend,
    tx: &'a Transaction<'a>,
}

impl SqliteSink<'_> {
    fn with<T>(&self, f: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> Result<T> {
        f(self.tx).map_err(|e| self.backend.err(e))
    }
}

impl Sink for SqliteSink<'_> {
    fn insert(&mut self, table: &Table, row: &[Cell]) -> Result<()> {
        let names = table.names(false);
        let marks: Vec<String> = (1..=names.len()).map(|i| format!("?{i}")).collect();
        let sql = format!(
            "INSERT INTO {} ({}) VALUES ({})",
            table.name,
            names.join(", "),
            marks.join(", ")
        );
        let values = row.iter().map(|c| match c {
            Cell::Null => Value::Null,
            Cell::Int(n) => Value::Integer(*n),
            Cell::Bool(b) => Value::Integer(i64::from(*b)),
            Cell::Text(t) => Value::Text(t.clone()),
        });
        self.with(|c| {
            c.prepare_cached(&sql)?
                .execute(rusqlite::params_from_iter(values))
                .map(|_| ())
        })
    }

    fn count(&mut self, table: &Table) -> Result<u64> {
        let n: i64 = self.with(|c| {
            c.query_row(&format!("SELECT count(*) FROM {}", table.name), [], |r| {
                r.get(0)
            })
        })?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    fn set_counter(&mut self, table: &Table, source: Option<i64>) -> Result<()> {
        // A rowid table without AUTOINCREMENT continues from its highest rowid by itself.
        if !table.autoincrement {
            return Ok(());
        }
        let Some(col) = table.counter.map(|i| table.columns[i].sqlite) else {
            return Ok(());
        };
        self.with(|c| {
            let max: Option<i64> =
                c.query_row(&format!("SELECT max({col}) FROM {}", table.name), [], |r| {
                    r.get(0)
                })?;
            let next = source.unwrap_or(0).max(max.unwrap_or(0));
            if next == 0 {
                return Ok(());
            }
            let changed = c.execute(
                "UPDATE sqlite_sequence SET seq = ?2 WHERE name = ?1",
                rusqlite::params![table.name, next],
            )?;
            if changed == 0 {
                c.execute(
                    "INSERT INTO sqlite_sequence (name, seq) VALUES (?1, ?2)",
                    rusqlite::params![table.name, next],
                )?;
            }
            Ok(())
        })
    }
}
