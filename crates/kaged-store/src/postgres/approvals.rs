//! The `approvals` table: tool calls waiting for the operator's decision. A decision is an
//! update from `pending` only (a trigger refuses any other), so the first one wins: a racing
//! second update waits for the first to commit, then finds the row no longer pending.

use postgres::{Client, Error, GenericClient, Row};

use crate::{ApprovalDecision, ApprovalFilter, ApprovalRecord, Decided};

const COLUMNS: &str = "id, session_id, project, agent, tool, call_id, parent_call_id, arguments, \
     owner, state, decision, message, decided_by, reason, requested_at_ms, decided_at_ms";

fn record(r: &Row) -> Result<ApprovalRecord, Error> {
    let arguments: String = r.try_get(7)?;
    Ok(ApprovalRecord {
        id: r.try_get(0)?,
        session_id: r.try_get(1)?,
        project: r.try_get(2)?,
        agent: r.try_get(3)?,
        tool: r.try_get(4)?,
        call_id: r.try_get(5)?,
        parent_call_id: r.try_get(6)?,
        arguments: serde_json::from_str(&arguments).unwrap_or(serde_json::Value::String(arguments)),
        owner: r.try_get(8)?,
        state: r.try_get(9)?,
        decision: r.try_get(10)?,
        message: r.try_get(11)?,
        decided_by: r.try_get(12)?,
        reason: r.try_get(13)?,
        requested_at_ms: r.try_get(14)?,
        decided_at_ms: r.try_get(15)?,
    })
}

pub(super) fn create(c: &mut Client, a: &ApprovalRecord) -> Result<(), Error> {
    c.execute(
        &format!(
            "INSERT INTO approvals ({COLUMNS})
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)"
        ),
        &[
            &a.id,
            &a.session_id,
            &a.project,
            &a.agent,
            &a.tool,
            &a.call_id,
            &a.parent_call_id,
            &a.arguments.to_string(),
            &a.owner,
            &a.state,
            &a.decision,
            &a.message,
            &a.decided_by,
            &a.reason,
            &a.requested_at_ms,
            &a.decided_at_ms,
        ],
    )
    .map(|_| ())
}

fn get_in(c: &mut impl GenericClient, id: &str) -> Result<Option<ApprovalRecord>, Error> {
    c.query_opt(
        &format!("SELECT {COLUMNS} FROM approvals WHERE id = $1"),
        &[&id],
    )?
    .map(|r| record(&r))
    .transpose()
}

pub(super) fn get(c: &mut Client, id: &str) -> Result<Option<ApprovalRecord>, Error> {
    get_in(c, id)
}

pub(super) fn decide(c: &mut Client, id: &str, d: &ApprovalDecision) -> Result<Decided, Error> {
    let mut tx = c.transaction()?;
    let changed = tx.execute(
        "UPDATE approvals SET state = $2, decision = $3, message = $4, decided_by = $5,
             reason = $6, decided_at_ms = $7
         WHERE id = $1 AND state = 'pending'",
        &[
            &id,
            &d.state,
            &d.decision,
            &d.message,
            &d.decided_by,
            &d.reason,
            &d.at_ms,
        ],
    )?;
    let now = get_in(&mut tx, id)?;
    tx.commit()?;
    Ok(match now {
        None => Decided::Unknown,
        Some(a) if changed == 1 => Decided::Now(a),
        Some(a) => Decided::Already(a),
    })
}

pub(super) fn list(c: &mut Client, f: &ApprovalFilter) -> Result<Vec<ApprovalRecord>, Error> {
    c.query(
        &format!(
            "SELECT {COLUMNS} FROM approvals
             WHERE ($1::text IS NULL OR state = $1) AND ($2::text IS NULL OR project = $2)
               AND ($3::text IS NULL OR session_id = $3)
             ORDER BY requested_at_ms DESC, row_order DESC LIMIT $4"
        ),
        &[
            &f.state,
            &f.project,
            &f.session,
            &i64::try_from(f.limit).unwrap_or(i64::MAX),
        ],
    )?
    .iter()
    .map(record)
    .collect()
}

pub(super) fn granted_for_session(
    c: &mut Client,
    session: &str,
    agent: &str,
    tool: &str,
) -> Result<bool, Error> {
    c.query_one(
        "SELECT EXISTS (SELECT 1 FROM approvals WHERE session_id = $1 AND agent = $2
             AND tool = $3 AND decision = 'approve_session')",
        &[&session, &agent, &tool],
    )?
    .try_get(0)
}
