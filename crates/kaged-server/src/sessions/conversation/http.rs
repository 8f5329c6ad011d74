//! A conversation's routes: an operator message (which resumes an ended conversation), the
//! abort of the turn in flight, and the stored records (docs/agent-protocol.md).

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Extension, Path as UrlPath, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use kaged_auth::Principal;
use kaged_session::agent::MAX_CONTENT_BYTES;
use kaged_store::SessionRecord;
use serde::Deserialize;
use serde_json::json;

use crate::error::{ApiError, ErrorCode};
use crate::listener::Peer;
use crate::sessions::Sessions;
use crate::sessions::http::find;
use crate::sessions::start::{StartRequest, start};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MessageRequest {
    text: String,
}

/// The record of `id` when it is a conversation `principal` may drive.
async fn conversation_of(
    sessions: &Sessions,
    principal: &Principal,
    id: &str,
) -> Result<SessionRecord, ApiError> {
    let record = find(sessions, id).await?;
    if !record.conversation {
        let how = if record.kind == "terminal" || record.kind == "task" {
            format!("a {}", record.kind)
        } else {
            "a command agent's session".to_string()
        };
        return Err(ApiError::new(
            ErrorCode::Conflict,
            format!(
                "session {id} is {how}, not a model agent's conversation; type into it over /api/v1/sessions/{id}/pty"
            ),
        ));
    }
    if !crate::sessions::may_control(principal, &record.created_by) {
        return Err(ApiError::new(
            ErrorCode::Forbidden,
            format!(
                "session {id} belongs to {}; only they (or the local operator) may drive it",
                record.created_by
            ),
        ));
    }
    Ok(record)
}

/// Check an operator message: not empty, not over the size of a recorded message.
pub(crate) fn check_message(text: &str) -> Result<(), ApiError> {
    if text.trim().is_empty() {
        return Err(ApiError::new(
            ErrorCode::BadRequest,
            "the message is empty; send {\"text\": \"...\"}",
        ));
    }
    if text.len() > MAX_CONTENT_BYTES {
        return Err(ApiError::new(
            ErrorCode::BadRequest,
            format!(
                "the message is {} bytes; at most {MAX_CONTENT_BYTES} are taken (put long material in a project file and name it)",
                text.len()
            ),
        ));
    }
    Ok(())
}

/// `POST /api/v1/sessions/{id}/messages` `{"text": "..."}`: queued for the conversation (taken
/// at once when idle, at the next model call during a turn); an ended conversation resumes.
pub async fn messages(
    State(sessions): State<Sessions>,
    Extension(principal): Extension<Principal>,
    Extension(peer): Extension<Peer>,
    UrlPath(id): UrlPath<String>,
    body: Result<Json<MessageRequest>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(body) = body.map_err(|e| {
        ApiError::new(
            ErrorCode::BadRequest,
            format!("{}; expected {{\"text\": \"...\"}}", e.body_text()),
        )
    })?;
    check_message(&body.text)?;
    let record = conversation_of(&sessions, &principal, &id).await?;
    if let Some(live) = sessions.get(&id).filter(|l| !l.state().is_terminal())
        && let Some(control) = sessions.conversation_control(live.id())
    {
        let queued = control.send(body.text).ok_or_else(|| {
            ApiError::new(
                ErrorCode::RateLimited,
                format!(
                    "{} messages are already waiting for session {id}; wait for the turn or abort it",
                    super::MAX_QUEUED
                ),
            )
        })?;
        return Ok((
            StatusCode::ACCEPTED,
            Json(json!({"session": id, "queued": queued, "resumed": false})),
        )
            .into_response());
    }
    resume(&sessions, &principal, &peer, record, Some(body.text)).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({"session": id, "queued": 1, "resumed": true})),
    )
        .into_response())
}

/// Resume the ended conversation `record` in a new cage (its loop takes the history, and a
/// turn paused on approvals, from the log), with `message` queued.
pub(crate) async fn resume(
    sessions: &Sessions,
    principal: &Principal,
    peer: &Peer,
    record: SessionRecord,
    message: Option<String>,
) -> Result<(), ApiError> {
    let deps = sessions.deps();
    crate::storage::refuse_new_work(&deps.store, &deps.settings.home)?;
    start(
        sessions,
        StartRequest {
            project: record.project.clone(),
            kind: kaged_cage::RunKind::Agent,
            name: Some(record.name.clone()),
            rows: 24,
            cols: 80,
            actor: principal.id.clone(),
            source: peer.0.clone(),
            message,
            resume: Some(record),
        },
    )
    .await
    .map(|_| ())
}

/// `POST /api/v1/sessions/{id}/abort`: end the turn in flight; the session stays.
pub async fn abort(
    State(sessions): State<Sessions>,
    Extension(principal): Extension<Principal>,
    UrlPath(id): UrlPath<String>,
) -> Result<Response, ApiError> {
    conversation_of(&sessions, &principal, &id).await?;
    let aborted = sessions
        .get(&id)
        .filter(|l| !l.state().is_terminal())
        .and_then(|l| sessions.conversation_control(l.id()))
        .is_some_and(|c| c.abort());
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({"session": id, "aborted": aborted})),
    )
        .into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Page {
    #[serde(default)]
    after: u64,
    #[serde(default)]
    limit: Option<usize>,
}

/// `GET /api/v1/sessions/{id}/conversation?after=SEQ&limit=N`: stored records after `after`.
pub async fn conversation(
    State(sessions): State<Sessions>,
    UrlPath(id): UrlPath<String>,
    query: Result<Query<Page>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let Query(page) = query.map_err(|e| {
        ApiError::new(
            ErrorCode::BadRequest,
            format!("{}; expected ?after=SEQ&limit=N", e.body_text()),
        )
    })?;
    let record = find(&sessions, &id).await?;
    if !record.conversation {
        return Ok(Json(json!({"events": [], "last_seq": 0})));
    }
    let limit = page.limit.unwrap_or(1000).clamp(1, 10_000);
    let log = sessions.agent_log();
    let last = log
        .last_seq(&id)
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let events = log
        .page(&id, page.after, limit)
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?;
    Ok(Json(json!({"events": events, "last_seq": last})))
}
