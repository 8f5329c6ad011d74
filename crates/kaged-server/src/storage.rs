//! Storage trouble, as the daemon reports and handles it.
//!
//! `kaged_store::Store` keeps the facts: whether the last write failed and why
//! ([`kaged_store::Health`]: disk full vs other failures, since when), and the state changes it
//! could not store yet, oldest first. This module turns them into behaviour:
//!
//! - [`recover`] (a background task) stores the held state changes every [`RETRY_EVERY`], in
//!   order, publishing each on the event stream once stored; with none held it probes with a
//!   write that changes nothing, so health clears as soon as writes work again. While storage
//!   is healthy it pings the database at the same pace, so an idle daemon notices a database
//!   that went away (a stopped PostgreSQL) and `/readyz` fails without waiting for a request. On recovery it
//!   writes one `audit.lost` record for the audit records that could not be written.
//! - [`refuse_new_work`]: starts are refused while storage fails (507 `storage_full` naming the
//!   data directory, or the PostgreSQL database, and the fix; or 503 `storage_failing`).
//! - [`readiness`], [`report`] and [`warning`] feed `/readyz`, `GET /api/v1/status` (and so
//!   `kaged status`) and the console's warning banner.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use kaged_store::{Store, StoreError, Trouble};
use serde_json::{Value, json};

use crate::audit::rfc3339_utc;
use crate::error::{ApiError, ErrorCode};
use crate::state::ServerState;

/// How often held state changes are retried (and storage probed while it fails).
pub const RETRY_EVERY: Duration = Duration::from_secs(2);

/// The message of a refusal: what is wrong, where, and the fix. SQLite speaks of the data
/// directory and its disk; PostgreSQL of the database server (its URL, never a password).
fn refusal(store: &Store, data_dir: &Path, trouble: Trouble, detail: &str) -> ApiError {
    let home = data_dir.display();
    let (code, message, details) = match (trouble, store.is_postgres()) {
        (Trouble::Full, false) => (
            ErrorCode::StorageFull,
            format!(
                "kaged's data directory {home} is full ({detail}): nothing new starts until \
                 space is freed there; free space (e.g. old transcripts in {home}/transcripts) \
                 and kaged resumes by itself within seconds, no restart needed"
            ),
            json!({"data_dir": data_dir}),
        ),
        (Trouble::Failing, false) => (
            ErrorCode::StorageFailing,
            format!(
                "kaged cannot write to its database in {home} ({detail}): nothing new starts \
                 until storage recovers; see the daemon log and `kaged status`"
            ),
            json!({"data_dir": data_dir}),
        ),
        (Trouble::Full, true) => (
            ErrorCode::StorageFull,
            format!(
                "kaged's PostgreSQL database {} has no space left ({detail}): nothing new \
                 starts until the database server has space again; kaged resumes by itself \
                 within seconds, no restart needed",
                store.describe()
            ),
            json!({"database": store.describe()}),
        ),
        (Trouble::Failing, true) => (
            ErrorCode::StorageFailing,
            format!(
                "kaged cannot reach or write its PostgreSQL database {} ({detail}): nothing new \
                 starts until the database answers again; kaged retries every {} s and \
                 resumes by itself, no restart needed; see `kaged status` and the daemon log",
                store.describe(),
                RETRY_EVERY.as_secs()
            ),
            json!({"database": store.describe()}),
        ),
    };
    let mut e = ApiError::new(code, message);
    e.details = Some(details);
    e
}

/// Refuse work that would need storage (a session start) while storage is failing.
pub(crate) fn refuse_new_work(store: &Store, data_dir: &Path) -> Result<(), ApiError> {
    match store.health().failure() {
        None => Ok(()),
        Some(f) => Err(refusal(store, data_dir, f.trouble, &f.last_error)),
    }
}

/// The error of a session start whose row could not be stored.
pub(crate) fn start_failed(store: &Store, data_dir: &Path, e: StoreError) -> ApiError {
    match e.trouble() {
        Some(trouble) => refusal(store, data_dir, trouble, &e.to_string()),
        None => ApiError::internal(format!("cannot store the session: {e}")),
    }
}

/// A read for a request failed: storage trouble is 503 `storage_failing` (or 507 when full),
/// anything else an internal error with its text.
pub(crate) fn read_failed(e: StoreError) -> ApiError {
    match e.trouble() {
        Some(_) => ApiError::from(e),
        None => ApiError::internal(e.to_string()),
    }
}

/// A state change of a live run could not be stored now (`transition`'s failure branch). The
/// store held it (stored by [`recover`] in order) unless the error is not storage trouble.
pub(crate) fn change_not_stored(session: &str, e: &StoreError) {
    match e {
        StoreError::Held { .. } => {
            tracing::warn!(session, error = %e, "state change held behind earlier ones")
        }
        e if e.trouble().is_some() => tracing::error!(
            session,
            error = %e,
            "cannot store a state change; held in memory and stored when storage recovers"
        ),
        e => tracing::error!(session, error = %e, "cannot store a state change"),
    }
}

/// `/readyz`'s refusal while storage is failing (503 with the reason), `None` when ready.
pub(crate) fn readiness(state: &ServerState) -> Option<Value> {
    let f = state.store.health().failure()?;
    let e = refusal(
        &state.store,
        &state.info.settings.home,
        f.trouble,
        &f.last_error,
    );
    Some(json!({
        "status": "unavailable",
        "error": {"code": e.code, "message": e.message, "details": report(state)},
    }))
}

/// `storage.health` in `GET /api/v1/status`.
pub(crate) fn report(state: &ServerState) -> Value {
    let (held, dropped) = state.store.held_changes();
    let lost = state.audit.lost_count();
    match state.store.health().failure() {
        None => json!({
            "state": "ok",
            "held_changes": held,
            "dropped_changes": dropped,
            "lost_audit_records": lost,
        }),
        Some(f) => json!({
            "state": "failing",
            "full": f.trouble == Trouble::Full,
            "trouble": f.trouble,
            "since_ms": f.since_ms,
            "since": rfc3339_utc(f.since_ms),
            "last_error": f.last_error,
            "failures": f.failures,
            "held_changes": held,
            "dropped_changes": dropped,
            "lost_audit_records": lost,
            "data_dir": state.info.settings.home,
            "database": state.store.describe(),
        }),
    }
}

/// The warning the console's banner and `kaged status` show while storage is failing.
pub(crate) fn warning(state: &ServerState) -> Option<String> {
    let f = state.store.health().failure()?;
    let home = state.info.settings.home.display();
    let (held, _) = state.store.held_changes();
    let postgres = state.store.is_postgres();
    let what = match (f.trouble, postgres) {
        (Trouble::Full, false) => format!("the data directory {home} is full"),
        (Trouble::Failing, false) => format!("cannot write to the database in {home}"),
        (Trouble::Full, true) => format!(
            "the PostgreSQL database {} has no space left",
            state.store.describe()
        ),
        (Trouble::Failing, true) => format!(
            "cannot reach or write the PostgreSQL database {}",
            state.store.describe()
        ),
    };
    Some(format!(
        "storage: {what} since {} ({}); new sessions are refused and {held} state change(s) \
         wait to be stored; {}",
        rfc3339_utc(f.since_ms),
        f.last_error,
        match (f.trouble, postgres) {
            (Trouble::Full, false) => "free space there: kaged resumes by itself",
            (Trouble::Full, true) | (Trouble::Failing, true) =>
                "kaged resumes by itself once the database takes writes again",
            (Trouble::Failing, false) => "see the daemon log",
        }
    ))
}

/// Whether the store holds state changes it could not write (rows may lag memory). While it
/// does not, an end is reported from the row only, so a client never sees an end without its
/// exit code, end time and final transition.
pub(crate) fn holding(store: &Store) -> bool {
    store.held_changes().0 > 0
}

/// What is reported of an ended run whose end is held (storage failing): the row still shows
/// an earlier state, memory has the end; `pending_store` says so.
pub(crate) fn unstored_end(
    obj: &mut serde_json::Map<String, Value>,
    end: &kaged_session::state::State,
) {
    let row_ended = obj.get("ended_at_ms").is_some_and(|v| !v.is_null());
    if row_ended {
        return;
    }
    obj.insert("state".into(), json!(end.as_str()));
    if let Ok(Value::Object(fields)) = serde_json::to_value(end) {
        if let Some(code) = fields.get("code") {
            obj.insert("exit_code".into(), code.clone());
        }
        if let Some(reason) = fields.get("reason").or_else(|| fields.get("by")) {
            obj.insert("reason".into(), reason.clone());
        }
    }
    obj.insert("pending_store".into(), json!(true));
}

/// Retry held state changes in order and probe storage while it fails; on recovery, account
/// for lost audit records. Runs until the daemon stops.
pub async fn recover(state: Arc<ServerState>) {
    let mut tick = tokio::time::interval(RETRY_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut shutdown = state.shutdown.clone();
    loop {
        tokio::select! {
            _ = tick.tick() => retry(&state).await,
            _ = shutdown.changed() => {
                // One last try: the stop is about to record the daemon's end.
                retry(&state).await;
                return;
            }
        }
    }
}

async fn retry(state: &ServerState) {
    let (held, _) = state.store.held_changes();
    if held == 0 && state.store.health().is_ok() {
        // An idle daemon learns of a database gone away (a stopped PostgreSQL, a lost file)
        // here, not at the next request: the failed read marks storage failing, `/readyz`
        // says 503, and the probe below clears it once the database takes writes again.
        match state.store.ping().await {
            // Health may have come back through another write since the last tick.
            Ok(()) => state.audit.report_lost().await,
            Err(e) => tracing::warn!(error = %e, "storage does not answer"),
        }
        return;
    }
    if held > 0 {
        let (stored, failed) = state.runs.flush_held(&state.store).await;
        if stored > 0 {
            tracing::info!(stored, "held state changes stored, in order");
        }
        if failed {
            return;
        }
    } else if !state.store.health().is_ok() && state.store.probe_write().await.is_err() {
        return;
    }
    if state.store.health().is_ok() {
        state.audit.report_lost().await;
    }
}
