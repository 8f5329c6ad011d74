//! The `sessions` and `session_transitions` tables: a row per run, and every state change of
//! it (their ids are the event stream's cursor, so writers of transitions take turns and ids
//! are committed in order: `schema::in_turn`), written together; and what retention records
//! about a run's transcript.

use super::schema::{TRANSITION_WRITERS, in_turn};
use postgres::types::ToSql;
use postgres::{Client, Error, Row, Transaction};

use crate::{SessionRecord, StateChange, Transition};

const SESSION_COLUMNS: &str = "id, project, kind, name, command, caged, state, exit_code, reason, \
     created_by, created_at_ms, ended_at_ms, transcript_pruned_at_ms, output_bytes, dropped_from, \
     dropped_to, conversation";

fn session(r: &Row) -> Result<SessionRecord, Error> {
    let command: String = r.try_get(4)?;
    let from: Option<i64> = r.try_get(14)?;
    let to: Option<i64> = r.try_get(15)?;
    Ok(SessionRecord {
        id: r.try_get(0)?,
        project: r.try_get(1)?,
        kind: r.try_get(2)?,
        name: r.try_get(3)?,
        command: serde_json::from_str(&command).unwrap_or_default(),
        caged: r.try_get(5)?,
        state: r.try_get(6)?,
        exit_code: r.try_get(7)?,
        reason: r.try_get(8)?,
        created_by: r.try_get(9)?,
        created_at_ms: r.try_get(10)?,
        ended_at_ms: r.try_get(11)?,
        transcript_pruned_at_ms: r.try_get(12)?,
        output_bytes: r.try_get::<_, Option<i64>>(13)?.map(as_u64),
        dropped: from.zip(to).map(|(f, t)| (as_u64(f), as_u64(t))),
        conversation: r.try_get(16)?,
    })
}

fn as_u64(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

fn as_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn limit(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn insert_transition(tx: &mut Transaction<'_>, c: &StateChange) -> Result<Transition, Error> {
    let id: i64 = tx
        .query_one(
            "INSERT INTO session_transitions (session_id, state, at_ms, actor, detail)
             VALUES ($1, $2, $3, $4, $5) RETURNING id",
            &[
                &c.session_id,
                &c.state,
                &c.at_ms,
                &c.actor,
                &c.detail.to_string(),
            ],
        )?
        .try_get(0)?;
    Ok(Transition {
        id,
        session_id: c.session_id.clone(),
        state: c.state.clone(),
        at_ms: c.at_ms,
        actor: c.actor.clone(),
        detail: c.detail.clone(),
    })
}

/// `SELECT` every column of the sessions matching `rest` (a `WHERE`/`ORDER BY` tail).
fn select(
    c: &mut Client,
    rest: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<Vec<SessionRecord>, Error> {
    c.query(
        &format!("SELECT {SESSION_COLUMNS} FROM sessions {rest}"),
        params,
    )?
    .iter()
    .map(session)
    .collect()
}

/// A transaction whose transitions are committed in id order (see the module's doc).
fn ordered(c: &mut Client) -> Result<Transaction<'_>, Error> {
    let mut tx = c.transaction()?;
    in_turn(&mut tx, TRANSITION_WRITERS)?;
    Ok(tx)
}

pub(super) fn create(
    c: &mut Client,
    s: &SessionRecord,
    first: &StateChange,
) -> Result<Transition, Error> {
    let mut tx = ordered(c)?;
    tx.execute(
        "INSERT INTO sessions (id, project, kind, name, command, caged, state, exit_code, reason,
                               created_by, created_at_ms, ended_at_ms, conversation)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
        &[
            &s.id,
            &s.project,
            &s.kind,
            &s.name,
            &serde_json::to_string(&s.command).unwrap_or_default(),
            &s.caged,
            &s.state,
            &s.exit_code,
            &s.reason,
            &s.created_by,
            &s.created_at_ms,
            &s.ended_at_ms,
            &s.conversation,
        ],
    )?;
    let t = insert_transition(&mut tx, first)?;
    tx.commit()?;
    Ok(t)
}

pub(super) fn change_state(c: &mut Client, ch: &StateChange) -> Result<Transition, Error> {
    let mut tx = ordered(c)?;
    // Back to `queued` is a conversation resumed: its earlier end is no longer its end.
    tx.execute(
        "UPDATE sessions SET state = $2,
                exit_code = CASE WHEN $2 = 'queued' THEN NULL ELSE COALESCE($3, exit_code) END,
                reason = CASE WHEN $2 = 'queued' THEN NULL ELSE COALESCE($4, reason) END,
                ended_at_ms = CASE WHEN $5 THEN $6 WHEN $2 = 'queued' THEN NULL ELSE ended_at_ms END
         WHERE id = $1",
        &[
            &ch.session_id,
            &ch.state,
            &ch.exit_code,
            &ch.reason,
            &ch.ended,
            &ch.at_ms,
        ],
    )?;
    let t = insert_transition(&mut tx, ch)?;
    tx.commit()?;
    Ok(t)
}

pub(super) fn list(
    c: &mut Client,
    project: Option<&str>,
    n: usize,
) -> Result<Vec<SessionRecord>, Error> {
    select(
        c,
        "WHERE ($1::text IS NULL OR project = $1)
         ORDER BY created_at_ms DESC, row_order DESC LIMIT $2",
        &[&project, &limit(n)],
    )
}

pub(super) fn get(c: &mut Client, id: &str) -> Result<Option<SessionRecord>, Error> {
    Ok(select(c, "WHERE id = $1", &[&id])?.into_iter().next())
}

pub(super) fn transitions_after(
    c: &mut Client,
    after: i64,
    session: Option<&str>,
    n: usize,
) -> Result<Vec<Transition>, Error> {
    c.query(
        "SELECT id, session_id, state, at_ms, actor, detail FROM session_transitions
         WHERE id > $1 AND ($2::text IS NULL OR session_id = $2)
         ORDER BY id LIMIT $3",
        &[&after, &session, &limit(n)],
    )?
    .iter()
    .map(|r| {
        let detail: String = r.try_get(5)?;
        Ok(Transition {
            id: r.try_get(0)?,
            session_id: r.try_get(1)?,
            state: r.try_get(2)?,
            at_ms: r.try_get(3)?,
            actor: r.try_get(4)?,
            detail: serde_json::from_str(&detail).unwrap_or_default(),
        })
    })
    .collect()
}

pub(super) fn live(c: &mut Client) -> Result<Vec<SessionRecord>, Error> {
    select(
        c,
        "WHERE state NOT IN ('exited', 'failed', 'killed') ORDER BY created_at_ms, row_order",
        &[],
    )
}

pub(super) fn kept_transcripts(c: &mut Client) -> Result<Vec<SessionRecord>, Error> {
    select(
        c,
        "WHERE transcript_pruned_at_ms IS NULL
         ORDER BY ended_at_ms IS NULL, ended_at_ms, created_at_ms, id COLLATE \"C\"",
        &[],
    )
}

pub(super) fn mark_transcript_pruned(
    c: &mut Client,
    id: &str,
    at_ms: i64,
    output_bytes: u64,
) -> Result<bool, Error> {
    c.execute(
        "UPDATE sessions SET transcript_pruned_at_ms = $2,
                output_bytes = GREATEST(COALESCE(output_bytes, 0), $3)
         WHERE id = $1 AND transcript_pruned_at_ms IS NULL",
        &[&id, &at_ms, &as_i64(output_bytes)],
    )
    .map(|n| n == 1)
}

pub(super) fn set_transcript_extent(
    c: &mut Client,
    id: &str,
    output_bytes: u64,
    dropped: Option<(u64, u64)>,
) -> Result<(), Error> {
    c.execute(
        "UPDATE sessions SET output_bytes = $2, dropped_from = $3, dropped_to = $4 WHERE id = $1",
        &[
            &id,
            &as_i64(output_bytes),
            &dropped.map(|d| as_i64(d.0)),
            &dropped.map(|d| as_i64(d.1)),
        ],
    )
    .map(|_| ())
}
