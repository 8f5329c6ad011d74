//! The sessions' JSON and transcript routes.

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Extension, Path as UrlPath, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use kaged_auth::Principal;
use kaged_cage::RunKind;
use kaged_store::SessionRecord;
use serde::Deserialize;
use serde_json::{Value, json};

use super::start::{StartRequest, start};
use super::stop::abort;
use super::{Sessions, valid_id};
use crate::audit::AuditRecord;
use crate::error::{ApiError, ErrorCode};
use crate::listener::Peer;

const DEFAULT_LIST_LIMIT: usize = 100;
const MAX_LIST_LIMIT: usize = 1000;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateRequest {
    /// `agent`, `terminal` or `task`.
    kind: String,
    /// The agent or task (agents default to `primary`).
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    rows: Option<u16>,
    #[serde(default)]
    cols: Option<u16>,
    /// A model agent's first message.
    #[serde(default)]
    message: Option<String>,
}

/// The output's length: from memory for a run held there, from the row once recorded, else
/// from the transcript's pieces (a run of an earlier version, or one a crash interrupted).
fn transcript_len(sessions: &Sessions, record: &SessionRecord) -> u64 {
    match (sessions.get(&record.id), record.output_bytes) {
        (Some(live), _) => live.end(),
        (None, Some(n)) => n,
        (None, None) => super::transcript::pieces(&sessions.transcript_path(&record.id))
            .map_or(0, |(p, _)| p.end()),
    }
}

fn view(sessions: &Sessions, record: &SessionRecord) -> Value {
    let mut v = serde_json::to_value(record).unwrap_or_default();
    if let Some(obj) = v.as_object_mut() {
        obj.insert(
            "output_bytes".into(),
            json!(transcript_len(sessions, record)),
        );
        obj.insert(
            "transcript_pruned".into(),
            json!(record.transcript_pruned_at_ms.is_some()),
        );
        if let Some(live) = sessions.get(&record.id) {
            // Still being written: what the cap dropped so far is on disk, not yet in the row.
            if let Ok((pieces, _)) = super::transcript::pieces(live.transcript()) {
                obj.insert("dropped".into(), json!(pieces.dropped()));
            }
            let (rows, cols) = live.size();
            let row_lags = crate::storage::holding(&sessions.deps().store);
            obj.insert("rows".into(), json!(rows));
            obj.insert("cols".into(), json!(cols));
            // Memory is fresher than the row for a run that is still going; an end is reported
            // from the row only, with its exit code, reason and time.
            let state = live.state();
            if !state.is_terminal() {
                obj.insert("state".into(), json!(state.as_str()));
            } else if row_lags {
                // Ended, but the end may be held (storage failing): memory has it.
                crate::storage::unstored_end(obj, &state);
            }
        }
    }
    v
}

fn bad_size(v: Option<u16>, default: u16, field: &str) -> Result<u16, ApiError> {
    match v {
        None => Ok(default),
        Some(n) if (1..=1000).contains(&n) => Ok(n),
        Some(n) => Err(ApiError::new(
            ErrorCode::BadRequest,
            format!("{field} must be from 1 to 1000, got {n}"),
        )),
    }
}

/// `POST /api/v1/projects/{slug}/sessions`
pub async fn create(
    State(sessions): State<Sessions>,
    Extension(principal): Extension<Principal>,
    Extension(peer): Extension<Peer>,
    UrlPath(slug): UrlPath<String>,
    body: Result<Json<CreateRequest>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(body) = body.map_err(|e| {
        ApiError::new(
            ErrorCode::BadRequest,
            format!(
                "{}; expected {{\"kind\": \"agent\"|\"terminal\"|\"task\", \"name\": \"...\", \"rows\": 24, \"cols\": 80, \"message\": \"...\"}}",
                e.body_text()
            ),
        )
    })?;
    let kind = RunKind::parse(&body.kind).ok_or_else(|| {
        ApiError::new(
            ErrorCode::BadRequest,
            format!("kind {:?} is not one of agent, terminal, task", body.kind),
        )
    })?;
    if kind == RunKind::Task && body.name.is_none() {
        return Err(ApiError::new(
            ErrorCode::BadRequest,
            "a task run needs \"name\": the task to run",
        ));
    }
    if let Some(text) = &body.message {
        super::conversation::check_message(text)?;
    }
    let rows = bad_size(body.rows, 24, "rows")?;
    let cols = bad_size(body.cols, 80, "cols")?;
    let deps = sessions.deps();
    crate::storage::refuse_new_work(&deps.store, &deps.settings.home)?;
    let record = start(
        &sessions,
        StartRequest {
            project: slug,
            kind,
            name: body.name,
            rows,
            cols,
            actor: principal.id.clone(),
            source: peer.0.clone(),
            message: body.message,
            resume: None,
        },
    )
    .await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({ "session": view(&sessions, &record) })),
    )
        .into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    #[serde(default)]
    project: Option<String>,
    #[serde(default)]
    limit: Option<usize>,
}

async fn list_of(
    sessions: &Sessions,
    project: Option<String>,
    limit: Option<usize>,
) -> Result<Json<Value>, ApiError> {
    let limit = limit.unwrap_or(DEFAULT_LIST_LIMIT).clamp(1, MAX_LIST_LIMIT);
    let records = sessions
        .deps()
        .store
        .list_sessions(project, limit)
        .await
        .map_err(crate::storage::read_failed)?;
    let sessions: Vec<Value> = records.iter().map(|r| view(sessions, r)).collect();
    Ok(Json(json!({ "sessions": sessions })))
}

/// `GET /api/v1/sessions?project=&limit=`
pub async fn list(
    State(sessions): State<Sessions>,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::new(ErrorCode::BadRequest, e.body_text()))?;
    list_of(&sessions, q.project, q.limit).await
}

/// `GET /api/v1/projects/{slug}/sessions`
pub async fn list_project(
    State(sessions): State<Sessions>,
    UrlPath(slug): UrlPath<String>,
) -> Result<Json<Value>, ApiError> {
    list_of(&sessions, Some(slug), None).await
}

pub(crate) async fn find(sessions: &Sessions, id: &str) -> Result<SessionRecord, ApiError> {
    let not_found = || {
        ApiError::new(
            ErrorCode::NotFound,
            format!("no session `{id}`; `kaged session list` shows them"),
        )
    };
    if !valid_id(id) {
        return Err(not_found());
    }
    sessions
        .deps()
        .store
        .get_session(id.to_string())
        .await
        .map_err(crate::storage::read_failed)?
        .ok_or_else(not_found)
}

/// `GET /api/v1/sessions/{id}`: the session and every state change it went through.
pub async fn get(
    State(sessions): State<Sessions>,
    UrlPath(id): UrlPath<String>,
) -> Result<Json<Value>, ApiError> {
    let record = find(&sessions, &id).await?;
    let transitions = sessions
        .deps()
        .store
        .transitions_after(0, Some(id), 10_000)
        .await
        .map_err(crate::storage::read_failed)?;
    Ok(Json(json!({
        "session": view(&sessions, &record),
        "transitions": transitions,
    })))
}

/// `POST /api/v1/sessions/{id}/kill`: signal now, SIGKILL after the grace period.
pub async fn kill(
    State(sessions): State<Sessions>,
    Extension(principal): Extension<Principal>,
    Extension(peer): Extension<Peer>,
    UrlPath(id): UrlPath<String>,
) -> Result<Response, ApiError> {
    let record = find(&sessions, &id).await?;
    if !super::may_control(&principal, &record.created_by) {
        return Err(ApiError::new(
            ErrorCode::Forbidden,
            format!(
                "session {id} belongs to {}; only they (or the local operator) may end it",
                record.created_by
            ),
        ));
    }
    let Some(live) = sessions.get(&id).filter(|l| !l.state().is_terminal()) else {
        return Err(ApiError::new(
            ErrorCode::Conflict,
            format!("session {id} has already ended ({})", record.state),
        ));
    };
    // Repeated kills of a run that is stopping are limited like any repeatable record.
    sessions
        .deps()
        .audit
        .record_limited(
            &id,
            AuditRecord {
                kind: "session.kill",
                success: true,
                identity: Some(principal.id.clone()),
                source: peer.0.clone(),
                detail: json!({"session": id, "project": record.project}),
            },
        )
        .await;
    // Approvals die with the run they belong to (before it ends: its loop then closes the
    // turn instead of leaving it paused).
    if let Err(e) = sessions
        .approvals()
        .cancel_pending(&id, "the session was killed")
        .await
    {
        tracing::error!(session = %id, error = %e, "cannot cancel the killed session's approvals");
    }
    // The kill is recorded (stopping, or killed when nothing was spawned yet) before the
    // answer; the grace period runs on.
    sessions
        .transition(
            &live,
            kaged_session::state::Event::Kill {
                actor: principal.id.clone(),
            },
            &principal.id,
        )
        .await;
    let (sessions2, live2, by) = (sessions.clone(), live.clone(), principal.id.clone());
    tokio::spawn(async move { abort(&sessions2, &live2, &by).await });
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({"session": id, "state": live.state().as_str()})),
    )
        .into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RangeQuery {
    #[serde(default)]
    start: Option<u64>,
    #[serde(default)]
    end: Option<u64>,
}

/// `GET /api/v1/sessions/{id}/transcript?start=&end=`: the output `[start, end)` as kept,
/// streamed from the files (never buffered), with its `Content-Length`. The range asked for is
/// in `X-Kaged-Transcript-Range: start-end/total`; when the per-transcript cap dropped part of
/// it, `X-Kaged-Transcript-Dropped: from-to` says which offsets the body leaves out.
pub async fn transcript(
    State(sessions): State<Sessions>,
    UrlPath(id): UrlPath<String>,
    query: Result<Query<RangeQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::new(ErrorCode::BadRequest, e.body_text()))?;
    let record = find(&sessions, &id).await?;
    if let Some(at) = record.transcript_pruned_at_ms {
        return Err(ApiError {
            code: ErrorCode::Gone,
            message: format!(
                "the transcript of session {id} was pruned by retention ([sessions] max_total_mb, max_age_days); the session's record stays"
            ),
            details: Some(json!({"transcript_pruned_at_ms": at})),
        });
    }
    let total = transcript_len(&sessions, &record);
    let start = q.start.unwrap_or(0);
    let end = q.end.unwrap_or(total).min(total);
    if start > end {
        return Err(ApiError::new(
            ErrorCode::BadRequest,
            format!("start {start} is past end {end} (the transcript has {total} bytes)"),
        ));
    }
    let path = sessions.transcript_path(&id);
    let super::transcript::Streamed {
        body,
        length,
        dropped,
    } = tokio::task::spawn_blocking(move || super::transcript::stream(&path, start, end))
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?
        .map_err(|e| ApiError::internal(format!("cannot read the transcript: {e}")))?;
    let mut response = Response::new(body);
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    if let Ok(v) = HeaderValue::from_str(&format!("{start}-{end}/{total}")) {
        headers.insert("x-kaged-transcript-range", v);
    }
    if let Some((from, to)) = dropped
        && let Ok(v) = HeaderValue::from_str(&format!("{from}-{to}"))
    {
        headers.insert("x-kaged-transcript-dropped", v);
    }
    Ok(response)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PruneQuery {
    #[serde(default)]
    dry_run: bool,
}

/// `POST /api/v1/sessions/prune[?dry_run=true]`: apply retention now (the local operator or
/// the bootstrap token only). With `dry_run`, list what would go and delete nothing.
pub async fn prune(
    State(sessions): State<Sessions>,
    Extension(principal): Extension<Principal>,
    Extension(peer): Extension<Peer>,
    query: Result<Query<PruneQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::new(ErrorCode::BadRequest, e.body_text()))?;
    use kaged_auth::AuthMethod::*;
    if !matches!(principal.method, Nonce | LoginCookie | BootstrapToken) {
        return Err(ApiError::new(
            ErrorCode::Forbidden,
            "pruning transcripts needs the local operator (kaged session prune on the daemon's host) or the bootstrap token",
        ));
    }
    let report =
        super::retention::prune(&sessions, q.dry_run, &principal.id, peer.0.clone()).await?;
    Ok(Json(report))
}
