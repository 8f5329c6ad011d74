//! Storage trouble, as the daemon reports and handles it.
//!
//! `kaged_store::Store` keeps the facts: whether the last write failed and why
//! ([`kaged_store::Health`]: disk full vs other failures, since when), and the state changes it
//! could not store yet, oldest first. This module turns them into behaviour:
//!
//! - [`recover`] (a background task) stores the held state changes every [`RETRY_EVERY`], in
//!   order, publishing each on the event stream once stored; with none held it probes with a
//!   write that changes nothing, so health clears as soon as writes work again. On recovery it
//!   writes one `audit.lost` record for the audit records that could not be written.
//! - [`refuse_new_work`]: starts are refused while storage fails (507 `storage_full` naming the
//!   data directory and the fix, or 503 `storage_failing`).
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

/// The message of a refusal: what is wrong, where, and the fix.
fn refusal(data_dir: &Path, trouble: Trouble, detail: &str) -> ApiError {
    let home = data_dir.display();
    let (code, message) = match trouble {
        Trouble::Full => (
            ErrorCode::StorageFull,
            format!(
                "kaged's data directory {home} is full ({detail}): nothing new starts until \
                 space is freed there; free space (e.g. old transcripts in {home}/transcripts) \
                 and kaged resumes by itself within seconds, no restart needed"
            ),
        ),
        Trouble::Failing => (
            ErrorCode::StorageFailing,
            format!(
                "kaged cannot write to its database in {home} ({detail}): nothing new starts \
                 until storage recovers; see the daemon log and `kaged status`"
            ),
        ),
    };
    let mut e = ApiError::new(code, message);
    e.details = Some(json!({"data_dir": data_dir}));
    e
}

/// Refuse work that would need storage (a session start) while storage is failing.
pub(crate) fn refuse_new_work(store: &Store, data_dir: &Path) -> Result<(), ApiError> {
    match store.health().failure() {
        None => Ok(()),
        Some(f) => Err(refusal(data_dir, f.trouble, &f.last_error)),
    }
}

/// The error of a session start whose row could not be stored.
pub(crate) fn start_failed(data_dir: &Path, e: StoreError) -> ApiError {
    match e.trouble() {
        Some(trouble) => refusal(data_dir, trouble, &e.to_string()),
        None => ApiError::internal(format!("cannot store the session: {e}")),
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
    let e = refusal(&state.info.settings.home, f.trouble, &f.last_error);
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
        }),
    }
}

/// The warning the console's banner and `kaged status` show while storage is failing.
pub(crate) fn warning(state: &ServerState) -> Option<String> {
    let f = state.store.health().failure()?;
    let home = state.info.settings.home.display();
    let (held, _) = state.store.held_changes();
    let what = match f.trouble {
        Trouble::Full => format!("the data directory {home} is full"),
        Trouble::Failing => format!("cannot write to the database in {home}"),
    };
    Some(format!(
        "storage: {what} since {} ({}); new sessions are refused and {held} state change(s) \
         wait to be stored; {}",
        rfc3339_utc(f.since_ms),
        f.last_error,
        match f.trouble {
            Trouble::Full => "free space there: kaged resumes by itself",
            Trouble::Failing => "see the daemon log",
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
