//! The `daemon_runs` table: a row per daemon start, closed at a clean stop, so the next start
//! notices a crash. Its rows also serve the readiness ping and the recovery probe.

use rusqlite::{Connection, OptionalExtension, params};

use crate::DaemonRun;

pub(super) fn begin(
    conn: &mut Connection,
    pid: u32,
    version: &str,
    mode: &str,
    now_ms: i64,
) -> rusqlite::Result<(DaemonRun, Option<DaemonRun>)> {
    let tx = conn.transaction()?;
    let previous = tx
        .query_row(
            "SELECT id, pid, version, mode, started_at_ms, stopped_at_ms
             FROM daemon_runs ORDER BY id DESC LIMIT 1",
            [],
            |r| {
                Ok(DaemonRun {
                    id: r.get(0)?,
                    pid: r.get(1)?,
                    version: r.get(2)?,
                    mode: r.get(3)?,
                    started_at_ms: r.get(4)?,
                    stopped_at_ms: r.get(5)?,
                })
            },
        )
        .optional()?
        .filter(|run| run.stopped_at_ms.is_none());
    tx.execute(
        "INSERT INTO daemon_runs (pid, version, mode, started_at_ms) VALUES (?1, ?2, ?3, ?4)",
        params![pid, version, mode, now_ms],
    )?;
    let run = DaemonRun {
        id: tx.last_insert_rowid(),
        pid,
        version: version.to_string(),
        mode: mode.to_string(),
        started_at_ms: now_ms,
        stopped_at_ms: None,
    };
    tx.commit()?;
    Ok((run, previous))
}

pub(super) fn end(conn: &mut Connection, id: i64, now_ms: i64) -> rusqlite::Result<()> {
    conn.execute(
        "UPDATE daemon_runs SET stopped_at_ms = ?2 WHERE id = ?1",
        params![id, now_ms],
    )
    .map(|_| ())
}

/// A cheap read proving the database answers.
pub(super) fn ping(conn: &mut Connection) -> rusqlite::Result<()> {
    conn.query_row("SELECT count(*) FROM daemon_runs", [], |r| {
        r.get::<_, i64>(0)
    })
    .map(|_| ())
}

pub(super) fn probe_write(conn: &mut Connection) -> rusqlite::Result<()> {
    // Rewrites the newest run's row as it is: a real write (a WAL frame), no change.
    conn.execute(
        "UPDATE daemon_runs SET pid = pid WHERE id = (SELECT max(id) FROM daemon_runs)",
        [],
    )
    .map(|_| ())
}
