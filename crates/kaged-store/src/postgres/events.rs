//! The `session_events` table: each session's event log, numbered from 1 with no gap. A batch
//! is appended in one transaction holding the session's row lock (so two writers of one log
//! take turns) after checking it continues the log exactly.

use postgres::{Client, Error, GenericClient};

use crate::{SessionEvent, StoreError};

fn as_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// The last number of `session`'s log, 0 when it is empty.
pub(super) fn last_seq(c: &mut impl GenericClient, session: &str) -> Result<u64, Error> {
    let last: i64 = c
        .query_one(
            "SELECT COALESCE(MAX(seq), 0) FROM session_events WHERE session_id = $1",
            &[&session],
        )?
        .try_get(0)?;
    Ok(u64::try_from(last).unwrap_or(0))
}

/// Why a batch cannot be appended, or `Ok` with the transaction done. The outer error is the
/// database's, the inner one the order check's (an error of the request).
pub(super) fn append(
    c: &mut Client,
    session: &str,
    events: &[SessionEvent],
) -> Result<Result<(), StoreError>, Error> {
    let mut tx = c.transaction()?;
    // Writers of one log take turns; an unknown session is refused by the insert's foreign key.
    tx.execute(
        "SELECT 1 FROM sessions WHERE id = $1 FOR UPDATE",
        &[&session],
    )?;
    let first = last_seq(&mut tx, session)? + 1;
    for (expected, e) in (first..).zip(events) {
        if e.seq != expected {
            return Ok(Err(StoreError::OutOfOrder {
                session: session.to_string(),
                seq: e.seq,
                expected,
            }));
        }
    }
    let insert = tx.prepare(
        "INSERT INTO session_events (session_id, seq, at_ms, kind, parent_call_id, body)
         VALUES ($1, $2, $3, $4, $5, $6)",
    )?;
    for e in events {
        tx.execute(
            &insert,
            &[
                &session,
                &as_i64(e.seq),
                &e.at_ms,
                &e.kind,
                &e.parent_call_id,
                &e.body,
            ],
        )?;
    }
    tx.commit()?;
    Ok(Ok(()))
}

pub(super) fn after(
    c: &mut Client,
    session: &str,
    after: u64,
    limit: usize,
) -> Result<Vec<SessionEvent>, Error> {
    c.query(
        "SELECT seq, at_ms, kind, parent_call_id, body FROM session_events
         WHERE session_id = $1 AND seq > $2 ORDER BY seq LIMIT $3",
        &[
            &session,
            &as_i64(after),
            &i64::try_from(limit).unwrap_or(i64::MAX),
        ],
    )?
    .iter()
    .map(|r| {
        Ok(SessionEvent {
            seq: u64::try_from(r.try_get::<_, i64>(0)?).unwrap_or(0),
            at_ms: r.try_get(1)?,
            kind: r.try_get(2)?,
            parent_call_id: r.try_get(3)?,
            body: r.try_get(4)?,
        })
    })
    .collect()
}
