//! The `approvals` table: tool calls waiting for the operator's decision. A decision is an
//! update from `pending` only (a trigger refuses any other), so the first one wins.

use rusqlite::{Connection, OptionalExtension, Row, params};

use crate::{ApprovalDecision, ApprovalFilter, ApprovalRecord, Decided};

const COLUMNS: &str = "id, session_id, project, agent, tool, call_id, parent_call_id, arguments, \
     owner, state, decision, message, decided_by, reason, requested_at_ms, decided_at_ms";

fn record(r: &Row<'_>) -> rusqlite::Result<ApprovalRecord> {
    let arguments: String = r.get(7)?;
    Ok(ApprovalRecord {
        id: r.get(0)?,
        session_id: r.get(1)?,
        project: r.get(2)?,
        agent: r.get(3)?,
        tool: r.get(4)?,
        call_id: r.get(5)?,
        parent_call_id: r.get(6)?,
        // The column is checked to be JSON; text that still is not reads as a JSON string.
        arguments: serde_json::from_str(&arguments).unwrap_or(serde_json::Value::String(arguments)),
        owner: r.get(8)?,
        state: r.get(9)?,
        decision: r.get(10)?,
        message: r.get(11)?,
        decided_by: r.get(12)?,
        reason: r.get(13)?,
        requested_at_ms: r.get(14)?,
        decided_at_ms: r.get(15)?,
    })
}

pub(super) fn create(conn: &Connection, a: &ApprovalRecord) -> rusqlite::Result<()> {
    conn.execute(
        &format!("INSERT INTO approvals ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)"),
        params![
            a.id,
            a.session_id,
            a.project,
            a.agent,
            a.tool,
            a.call_id,
            a.parent_call_id,
            a.arguments.to_string(),
            a.owner,
            a.state,
            a.decision,
            a.message,
            a.decided_by,
            a.reason,
            a.requested_at_ms,
            a.decided_at_ms,
        ],
    )
    .map(|_| ())
}

pub(super) fn get(conn: &Connection, id: &str) -> rusqlite::Result<Option<ApprovalRecord>> {
    conn.query_row(
        &format!("SELECT {COLUMNS} FROM approvals WHERE id = ?1"),
        [id],
        record,
    )
    .optional()
}

pub(super) fn decide(
    conn: &mut Connection,
    id: &str,
    d: &ApprovalDecision,
) -> rusqlite::Result<Decided> {
    let tx = conn.transaction()?;
    let changed = tx.execute(
        "UPDATE approvals SET state = ?2, decision = ?3, message = ?4, decided_by = ?5,
             reason = ?6, decided_at_ms = ?7
         WHERE id = ?1 AND state = 'pending'",
        params![
            id,
            d.state,
            d.decision,
            d.message,
            d.decided_by,
            d.reason,
            d.at_ms
        ],
    )?;
    let now = get(&tx, id)?;
    tx.commit()?;
    Ok(match now {
        None => Decided::Unknown,
        Some(a) if changed == 1 => Decided::Now(a),
        Some(a) => Decided::Already(a),
    })
}

pub(super) fn list(
    conn: &Connection,
    filter: &ApprovalFilter,
) -> rusqlite::Result<Vec<ApprovalRecord>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM approvals
         WHERE (?1 IS NULL OR state = ?1) AND (?2 IS NULL OR project = ?2)
           AND (?3 IS NULL OR session_id = ?3)
         ORDER BY requested_at_ms DESC, rowid DESC LIMIT ?4"
    ))?;
    let rows = stmt.query_map(
        params![
            filter.state,
            filter.project,
            filter.session,
            i64::try_from(filter.limit).unwrap_or(i64::MAX)
        ],
        record,
    )?;
    rows.collect()
}

pub(super) fn granted_for_session(
    conn: &Connection,
    session: &str,
    agent: &str,
    tool: &str,
) -> rusqlite::Result<bool> {
    conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM approvals WHERE session_id = ?1 AND agent = ?2
             AND tool = ?3 AND decision = 'approve_session')",
        params![session, agent, tool],
        |r| r.get(0),
    )
}
