//! The `daemon_runs` table: a row per daemon start, closed at a clean stop, so the next start
//! notices a crash. Its rows also serve the readiness ping and the recovery probe.

use super::schema::{RUN_WRITERS, in_turn};
use postgres::{Client, Error, Row};

use crate::DaemonRun;

fn run(r: &Row) -> Result<DaemonRun, Error> {
    Ok(DaemonRun {
        id: r.try_get(0)?,
        pid: u32::try_from(r.try_get::<_, i64>(1)?).unwrap_or(0),
        version: r.try_get(2)?,
        mode: r.try_get(3)?,
        started_at_ms: r.try_get(4)?,
        stopped_at_ms: r.try_get(5)?,
    })
}

pub(super) fn begin(
    c: &mut Client,
    pid: u32,
    version: &str,
    mode: &str,
    now_ms: i64,
) -> Result<(DaemonRun, Option<DaemonRun>), Error> {
    let mut tx = c.transaction()?;
    in_turn(&mut tx, RUN_WRITERS)?;
    let previous = tx
        .query_opt(
            "SELECT id, pid, version, mode, started_at_ms, stopped_at_ms
             FROM daemon_runs ORDER BY id DESC LIMIT 1",
            &[],
        )?
        .map(|r| run(&r))
        .transpose()?
        .filter(|r| r.stopped_at_ms.is_none());
    let id: i64 = tx
        .query_one(
            "INSERT INTO daemon_runs (pid, version, mode, started_at_ms)
             VALUES ($1, $2, $3, $4) RETURNING id",
            &[&i64::from(pid), &version, &mode, &now_ms],
        )?
        .try_get(0)?;
    tx.commit()?;
    Ok((
        DaemonRun {
            id,
            pid,
            version: version.to_string(),
            mode: mode.to_string(),
            started_at_ms: now_ms,
            stopped_at_ms: None,
        },
        previous,
    ))
}

pub(super) fn end(c: &mut Client, id: i64, now_ms: i64) -> Result<(), Error> {
    c.execute(
        "UPDATE daemon_runs SET stopped_at_ms = $2 WHERE id = $1",
        &[&id, &now_ms],
    )
    .map(|_| ())
}

/// A cheap read proving the database answers.
pub(super) fn ping(c: &mut Client) -> Result<(), Error> {
    c.query_one("SELECT count(*) FROM daemon_runs", &[])
        .map(|_| ())
}

pub(super) fn probe_write(c: &mut Client) -> Result<(), Error> {
    // Rewrites the newest run's row as it is: refused while the database takes no writes.
    c.execute(
        "UPDATE daemon_runs SET pid = pid WHERE id = (SELECT max(id) FROM daemon_runs)",
        &[],
    )
    .map(|_| ())
}
