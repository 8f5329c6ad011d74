//! `kaged storage copy` on PostgreSQL (see `crate::copy`): rows read in order, written with
//! their own ids (`OVERRIDING SYSTEM VALUE` for identity columns), and each identity's
//! sequence set past the source's counter and every copied id.

use std::collections::HashMap;

use postgres::types::ToSql;
use postgres::{Statement, Transaction};

use super::PostgresBackend;
use crate::copy::{Cell, CopyError, Fill, Kind, Sink, Table};
use crate::{Result, StoreError};

fn err(place: &str, source: postgres::Error) -> StoreError {
    StoreError::Postgres {
        place: place.to_string(),
        source,
    }
}

impl PostgresBackend {
    pub(crate) fn copy_rows(
        &self,
        table: &Table,
        each: &mut dyn FnMut(&[Cell]) -> Result<()>,
    ) -> Result<u64> {
        use postgres::fallible_iterator::FallibleIterator;
        let mut conn = self.pool.get(&self.place)?;
        let sql = format!(
            "SELECT {} FROM {} ORDER BY {}",
            table.names(true).join(", "),
            table.name,
            table.order_by(true)
        );
        let mut rows = conn
            .query_raw(sql.as_str(), std::iter::empty::<i64>())
            .map_err(|e| self.err(e))?;
        let mut n = 0;
        while let Some(row) = rows.next().map_err(|e| self.err(e))? {
            let cells = table
                .columns
                .iter()
                .enumerate()
                .map(|(i, c)| cell(&row, i, c.kind))
                .collect::<std::result::Result<Vec<_>, _>>()
                .map_err(|e| self.err(e))?;
            each(&cells)?;
            n += 1;
        }
        Ok(n)
    }

    /// The last value handed out by `table`'s identity sequence; `None` when it has none or
    /// none was handed out yet.
    pub(crate) fn copy_counter(&self, table: &Table) -> Result<Option<i64>> {
        let Some(col) = table.counter.map(|i| table.columns[i].postgres) else {
            return Ok(None);
        };
        self.with(|c| {
            c.query_one(
                "SELECT pg_sequence_last_value(pg_get_serial_sequence($1, $2)::regclass)",
                &[&table.name, &col],
            )?
            .try_get(0)
        })
    }

    pub(crate) fn copy_import(&self, fill: &mut Fill<'_>) -> std::result::Result<(), CopyError> {
        let mut conn = self.pool.get(&self.place)?;
        let tx = conn.transaction().map_err(|e| self.err(e))?;
        let mut sink = PostgresSink {
            place: &self.place,
            tx,
            inserts: HashMap::new(),
        };
        fill(&mut sink)?;
        sink.tx.commit().map_err(|e| self.err(e))?;
        Ok(())
    }
}

fn cell(row: &postgres::Row, i: usize, kind: Kind) -> std::result::Result<Cell, postgres::Error> {
    Ok(match kind {
        Kind::Int => row
            .try_get::<_, Option<i64>>(i)?
            .map_or(Cell::Null, Cell::Int),
        Kind::Int32 => row
            .try_get::<_, Option<i32>>(i)?
            .map_or(Cell::Null, |n| Cell::Int(i64::from(n))),
        Kind::Text => row
            .try_get::<_, Option<String>>(i)?
            .map_or(Cell::Null, Cell::Text),
        Kind::Bool => row
            .try_get::<_, Option<bool>>(i)?
            .map_or(Cell::Null, Cell::Bool),
    })
}

/// A value typed as its column is (a NULL too: PostgreSQL checks a parameter's type).
fn param(cell: &Cell, kind: Kind) -> std::result::Result<Box<dyn ToSql + Sync>, String> {
    Ok(match (cell, kind) {
        (Cell::Null, Kind::Int) => Box::new(None::<i64>),
        (Cell::Null, Kind::Int32) => Box::new(None::<i32>),
        (Cell::Null, Kind::Text) => Box::new(None::<String>),
        (Cell::Null, Kind::Bool) => Box::new(None::<bool>),
        (Cell::Int(n), Kind::Int) => Box::new(*n),
        (Cell::Int(n), Kind::Int32) => Box::new(
            i32::try_from(*n).map_err(|_| format!("{n} does not fit a 32-bit integer column"))?,
        ),
        (Cell::Text(t), Kind::Text) => Box::new(t.clone()),
        (Cell::Bool(b), Kind::Bool) => Box::new(*b),
        (c, k) => return Err(format!("{c:?} does not fit a {k:?} column")),
    })
}

struct PostgresSink<'a> {
    place: &'a str,
    tx: Transaction<'a>,
    /// The prepared `INSERT` of each table.
    inserts: HashMap<&'static str, Statement>,
}

impl Sink for PostgresSink<'_> {
    fn insert(&mut self, table: &Table, row: &[Cell]) -> Result<()> {
        let stmt = match self.inserts.get(table.name) {
            Some(s) => s.clone(),
            None => {
                let names = table.names(true);
                let marks: Vec<String> = (1..=names.len()).map(|i| format!("${i}")).collect();
                let overriding = if table.counter.is_some() {
                    " OVERRIDING SYSTEM VALUE"
                } else {
                    ""
                };
                let sql = format!(
                    "INSERT INTO {} ({}){overriding} VALUES ({})",
                    table.name,
                    names.join(", "),
                    marks.join(", ")
                );
                let s = self.tx.prepare(&sql).map_err(|e| err(self.place, e))?;
                self.inserts.insert(table.name, s.clone());
                s
            }
        };
        let params = row
            .iter()
            .zip(table.columns)
            .map(|(c, col)| param(c, col.kind))
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|reason| StoreError::Setup {
                place: self.place.to_string(),
                reason: format!("{}: {reason}", table.name),
            })?;
        let refs: Vec<&(dyn ToSql + Sync)> = params.iter().map(|p| p.as_ref()).collect();
        self.tx
            .execute(&stmt, &refs)
            .map(|_| ())
            .map_err(|e| err(self.place, e))
    }

    fn count(&mut self, table: &Table) -> Result<u64> {
        let n: i64 = self
            .tx
            .query_one(&format!("SELECT count(*) FROM {}", table.name), &[])
            .and_then(|r| r.try_get(0))
            .map_err(|e| err(self.place, e))?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    fn set_counter(&mut self, table: &Table, source: Option<i64>) -> Result<()> {
        let Some(col) = table.counter.map(|i| table.columns[i].postgres) else {
            return Ok(());
        };
        let max: Option<i64> = self
            .tx
            .query_one(&format!("SELECT max({col}) FROM {}", table.name), &[])
            .and_then(|r| r.try_get(0))
            .map_err(|e| err(self.place, e))?;
        let next = source.unwrap_or(0).max(max.unwrap_or(0));
        if next == 0 {
            return Ok(());
        }
        self.tx
            .query_one(
                "SELECT setval(pg_get_serial_sequence($1, $2), $3, true)",
                &[&table.name, &col, &next],
            )
            .map(|_| ())
            .map_err(|e| err(self.place, e))
    }
}
