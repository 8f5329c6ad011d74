//! The `audit_events` table: appended to, read newest first; the database refuses updates and
//! deletes (triggers of migration 1).

use rusqlite::{Connection, params};

use crate::{AuditEvent, StoredAuditEvent};

pub(super) fn append(conn: &mut Connection, e: &AuditEvent) -> rusqlite::Result<i64> {
    conn.execute(
        "INSERT INTO audit_events (ts_ms, kind, outcome, identity, source, detail)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![
            e.ts_ms,
            e.kind,
            e.outcome,
            e.identity,
            e.source,
            e.detail.to_string()
        ],
    )?;
    Ok(conn.last_insert_rowid())
}

pub(super) fn recent(
    conn: &mut Connection,
    limit: usize,
) -> rusqlite::Result<Vec<StoredAuditEvent>> {
    let mut stmt = conn.prepare(
        "SELECT id, ts_ms, kind, outcome, identity, source, detail
         FROM audit_events ORDER BY id DESC LIMIT ?1",
    )?;
    let rows = stmt.query_map([limit as i64], |r| {
        let detail: String = r.get(6)?;
        Ok(StoredAuditEvent {
            id: r.get(0)?,
            event: AuditEvent {
                ts_ms: r.get(1)?,
                kind: r.get(2)?,
                outcome: r.get(3)?,
                identity: r.get(4)?,
                source: r.get(5)?,
                detail: serde_json::from_str(&detail).unwrap_or(serde_json::Value::String(detail)),
            },
        })
    })?;
    rows.collect()
}
