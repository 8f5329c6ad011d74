//! The `session_events` table: each session's event log, numbered from 1 with no gap. A batch
//! is appended in one transaction after checking it continues the log exactly.

use rusqlite::{Connection, params};

use crate::{SessionEvent, StoreError};

fn as_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// The last number of `session`'s log, 0 when it is empty.
pub(super) fn last_seq(conn: &Connection, session: &str) -> rusqlite::Result<u64> {
    let last: i64 = conn.query_row(
        "SELECT COALESCE(MAX(seq), 0) FROM session_events WHERE session_id = ?1",
        [session],
        |r| r.get(0),
    )?;
    Ok(u64::try_from(last).unwrap_or(0))
}

/// Why a batch cannot be appended, or `Ok` with the transaction done. The outer error is the
/// order check's (an error of the request), the inner one the database's.
pub(super) fn append(
    conn: &mut Connection,
    session: &str,
    events: &[SessionEvent],
) -> rusqlite::Result<Result<(), StoreError>> {
    let tx = conn.transaction()?;
    let first = last_seq(&tx, session)? + 1;
    for (expected, e) in (first..).zip(events) {
        if e.seq != expected {
            return Ok(Err(StoreError::OutOfOrder {
                session: session.to_string(),
                seq: e.seq,
                expected,
            }));
        }
    }
    {
        let mut insert = tx.prepare_cached(
            "INSERT INTO session_events (session_id, seq, at_ms, kind, parent_call_id, body)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?;
        for e in events {
            insert.execute(params![
                session,
                as_i64(e.seq),
                e.at_ms,
                e.kind,
                e.parent_call_id,
                e.body
            ])?;
        }
    }
    tx.commit()?;
    Ok(Ok(()))
}

pub(super) fn after(
    conn: &Connection,
    session: &str,
    after: u64,
    limit: usize,
) -> rusqlite::Result<Vec<SessionEvent>> {
    let mut stmt = conn.prepare_cached(
        "SELECT seq, at_ms, kind, parent_call_id, body FROM session_events
         WHERE session_id = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3",
    )?;
    let rows = stmt.query_map(
        params![
            session,
            as_i64(after),
            i64::try_from(limit).unwrap_or(i64::MAX)
        ],
        |r| {
            Ok(SessionEvent {
                seq: u64::try_from(r.get::<_, i64>(0)?).unwrap_or(0),
                at_ms: r.get(1)?,
                kind: r.get(2)?,
                parent_call_id: r.get(3)?,
                body: r.get(4)?,
            })
        },
    )?;
    rows.collect()
}
