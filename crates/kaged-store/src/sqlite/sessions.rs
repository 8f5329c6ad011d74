//! The `sessions` and `session_transitions` tables: a row per run, and every state change of
//! it (their ids are the event stream's cursor), written together; and what retention records
//! about a run's transcript.

use rusqlite::{Connection, OptionalExtension, params};

use crate::{SessionRecord, StateChange, Transition};

const SESSION_COLUMNS: &str = "id, project, kind, name, command, caged, state, exit_code, reason, \
     created_by, created_at_ms, ended_at_ms, transcript_pruned_at_ms, output_bytes, dropped_from, \
     dropped_to, conversation";

fn session_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<SessionRecord> {
    let command: String = r.get(4)?;
    Ok(SessionRecord {
        id: r.get(0)?,
        project: r.get(1)?,
        kind: r.get(2)?,
        name: r.get(3)?,
        command: serde_json::from_str(&command).unwrap_or_default(),
        caged: r.get(5)?,
        state: r.get(6)?,
        exit_code: r.get(7)?,
        reason: r.get(8)?,
        created_by: r.get(9)?,
        created_at_ms: r.get(10)?,
        ended_at_ms: r.get(11)?,
        transcript_pruned_at_ms: r.get(12)?,
        output_bytes: r.get::<_, Option<i64>>(13)?.map(as_u64),
        dropped: match (r.get::<_, Option<i64>>(14)?, r.get::<_, Option<i64>>(15)?) {
            (Some(from), Some(to)) => Some((as_u64(from), as_u64(to))),
            _ => None,
        },
        conversation: r.get(16)?,
    })
}

fn as_u64(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

fn as_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn insert_transition(
    tx: &rusqlite::Transaction<'_>,
    c: &StateChange,
) -> rusqlite::Result<Transition> {
    tx.execute(
        "INSERT INTO session_transitions (session_id, state, at_ms, actor, detail)
         VALUES (?1, ?2, ?3, ?4, ?5)",
        params![
            c.session_id,
            c.state,
            c.at_ms,
            c.actor,
            c.detail.to_string()
        ],
    )?;
    Ok(Transition {
        id: tx.last_insert_rowid(),
        session_id: c.session_id.clone(),
        state: c.state.clone(),
        at_ms: c.at_ms,
        actor: c.actor.clone(),
        detail: c.detail.clone(),
    })
}

/// `SELECT` every column of the sessions matching `rest` (a `WHERE`/`ORDER BY` tail).
fn select_sessions(
    conn: &Connection,
    rest: &str,
    params: impl rusqlite::Params,
) -> rusqlite::Result<Vec<SessionRecord>> {
    let mut stmt = conn.prepare(&format!("SELECT {SESSION_COLUMNS} FROM sessions {rest}"))?;
    let rows = stmt.query_map(params, session_row)?;
    rows.collect()
}

pub(super) fn create(
    conn: &mut Connection,
    s: &SessionRecord,
    first: &StateChange,
) -> rusqlite::Result<Transition> {
    let tx = conn.transaction()?;
    tx.execute(
        "INSERT INTO sessions (id, project, kind, name, command, caged, state, exit_code, reason,
                               created_by, created_at_ms, ended_at_ms, conversation)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
        params![
            s.id,
            s.project,
            s.kind,
            s.name,
            serde_json::to_string(&s.command).unwrap_or_default(),
            s.caged,
            s.state,
            s.exit_code,
            s.reason,
            s.created_by,
            s.created_at_ms,
            s.ended_at_ms,
            s.conversation
        ],
    )?;
    let t = insert_transition(&tx, first)?;
    tx.commit()?;
    Ok(t)
}

pub(super) fn change_state(conn: &mut Connection, c: &StateChange) -> rusqlite::Result<Transition> {
    let tx = conn.transaction()?;
    // Back to `queued` is a conversation resumed: its earlier end is no longer its end.
    tx.execute(
        "UPDATE sessions SET state = ?2,
                exit_code = CASE WHEN ?2 = 'queued' THEN NULL ELSE COALESCE(?3, exit_code) END,
                reason = CASE WHEN ?2 = 'queued' THEN NULL ELSE COALESCE(?4, reason) END,
                ended_at_ms = CASE WHEN ?5 THEN ?6 WHEN ?2 = 'queued' THEN NULL ELSE ended_at_ms END
         WHERE id = ?1",
        params![
            c.session_id,
            c.state,
            c.exit_code,
            c.reason,
            c.ended,
            c.at_ms
        ],
    )?;
    let t = insert_transition(&tx, c)?;
    tx.commit()?;
    Ok(t)
}

pub(super) fn list(
    conn: &mut Connection,
    project: Option<&str>,
    limit: usize,
) -> rusqlite::Result<Vec<SessionRecord>> {
    select_sessions(
        conn,
        "WHERE (?1 IS NULL OR project = ?1)
         ORDER BY created_at_ms DESC, rowid DESC LIMIT ?2",
        params![project, limit as i64],
    )
}

pub(super) fn get(conn: &mut Connection, id: &str) -> rusqlite::Result<Option<SessionRecord>> {
    conn.query_row(
        &format!("SELECT {SESSION_COLUMNS} FROM sessions WHERE id = ?1"),
        [id],
        session_row,
    )
    .optional()
}

pub(super) fn transitions_after(
    conn: &mut Connection,
    after: i64,
    session: Option<&str>,
    limit: usize,
) -> rusqlite::Result<Vec<Transition>> {
    let mut stmt = conn.prepare(
        "SELECT id, session_id, state, at_ms, actor, detail FROM session_transitions
         WHERE id > ?1 AND (?2 IS NULL OR session_id = ?2)
         ORDER BY id LIMIT ?3",
    )?;
    let rows = stmt.query_map(params![after, session, limit as i64], |r| {
        let detail: String = r.get(5)?;
        Ok(Transition {
            id: r.get(0)?,
            session_id: r.get(1)?,
            state: r.get(2)?,
            at_ms: r.get(3)?,
            actor: r.get(4)?,
            detail: serde_json::from_str(&detail).unwrap_or_default(),
        })
    })?;
    rows.collect()
}

pub(super) fn live(conn: &mut Connection) -> rusqlite::Result<Vec<SessionRecord>> {
    select_sessions(
        conn,
        "WHERE state NOT IN ('exited', 'failed', 'killed') ORDER BY created_at_ms",
        [],
    )
}

pub(super) fn kept_transcripts(conn: &mut Connection) -> rusqlite::Result<Vec<SessionRecord>> {
    select_sessions(
        conn,
        "WHERE transcript_pruned_at_ms IS NULL
         ORDER BY ended_at_ms IS NULL, ended_at_ms, created_at_ms, id",
        [],
    )
}

pub(super) fn mark_transcript_pruned(
    conn: &mut Connection,
    id: &str,
    at_ms: i64,
    output_bytes: u64,
) -> rusqlite::Result<bool> {
    conn.execute(
        "UPDATE sessions SET transcript_pruned_at_ms = ?2,
                output_bytes = MAX(COALESCE(output_bytes, 0), ?3)
         WHERE id = ?1 AND transcript_pruned_at_ms IS NULL",
        params![id, at_ms, as_i64(output_bytes)],
    )
    .map(|n| n == 1)
}

pub(super) fn set_transcript_extent(
    conn: &mut Connection,
    id: &str,
    output_bytes: u64,
    dropped: Option<(u64, u64)>,
) -> rusqlite::Result<()> {
    conn.execute(
        "UPDATE sessions SET output_bytes = ?2, dropped_from = ?3, dropped_to = ?4
         WHERE id = ?1",
        params![
            id,
            as_i64(output_bytes),
            dropped.map(|d| as_i64(d.0)),
            dropped.map(|d| as_i64(d.1))
        ],
    )
    .map(|_| ())
}
