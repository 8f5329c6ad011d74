//! The `audit_events` table: appended to (ids in commit order: writers take turns, see
//! `schema::in_turn`), read newest first; the database refuses updates, deletes and
//! truncation (triggers of migration 1).

use super::schema::{AUDIT_WRITERS, in_turn};
use postgres::{Client, Error};

use crate::{AuditEvent, StoredAuditEvent};

pub(super) fn append(c: &mut Client, e: &AuditEvent) -> Result<i64, Error> {
    let mut tx = c.transaction()?;
    in_turn(&mut tx, AUDIT_WRITERS)?;
    let id: i64 = tx
        .query_one(
            "INSERT INTO audit_events (ts_ms, kind, outcome, identity, source, detail)
             VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
            &[
                &e.ts_ms,
                &e.kind,
                &e.outcome,
                &e.identity,
                &e.source,
                &e.detail.to_string(),
            ],
        )?
        .try_get(0)?;
    tx.commit()?;
    Ok(id)
}

pub(super) fn recent(c: &mut Client, limit: usize) -> Result<Vec<StoredAuditEvent>, Error> {
    let rows = c.query(
        "SELECT id, ts_ms, kind, outcome, identity, source, detail
         FROM audit_events ORDER BY id DESC LIMIT $1",
        &[&(i64::try_from(limit).unwrap_or(i64::MAX))],
    )?;
    rows.iter()
        .map(|r| {
            let detail: String = r.try_get(6)?;
            Ok(StoredAuditEvent {
                id: r.try_get(0)?,
                event: AuditEvent {
                    ts_ms: r.try_get(1)?,
                    kind: r.try_get(2)?,
                    outcome: r.try_get(3)?,
                    identity: r.try_get(4)?,
                    source: r.try_get(5)?,
                    detail: serde_json::from_str(&detail)
                        .unwrap_or(serde_json::Value::String(detail)),
                },
            })
        })
        .collect()
}
