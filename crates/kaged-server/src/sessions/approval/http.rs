//! The approvals' routes: the inbox across sessions, one approval, and a decision.

use axum::Json;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Extension, Path as UrlPath, Query, State};
use kaged_auth::Principal;
use kaged_store::{ApprovalFilter, ApprovalRecord, Decided};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{ApprovalError, Choice};
use crate::error::{ApiError, ErrorCode};
use crate::listener::Peer;
use crate::sessions::Sessions;

const DEFAULT_LIMIT: usize = 200;
const MAX_LIMIT: usize = 1000;
/// Longest message with a deny, in characters.
const MAX_MESSAGE_CHARS: usize = 4096;
const STATES: [&str; 4] = ["pending", "approved", "denied", "cancelled"];

impl From<ApprovalError> for ApiError {
    fn from(e: ApprovalError) -> ApiError {
        ApiError::internal(e.to_string())
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    #[serde(default)]
    state: Option<String>,
    #[serde(default)]
    project: Option<String>,
    #[serde(default)]
    session: Option<String>,
    #[serde(default)]
    limit: Option<usize>,
}

/// `GET /api/v1/approvals[?state=pending][&project=SLUG][&session=ID][&limit=N]`: newest first.
pub async fn list(
    State(sessions): State<Sessions>,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(q) = query.map_err(|e| {
        ApiError::new(
            ErrorCode::BadRequest,
            format!(
                "{}; expected ?state=pending|approved|denied|cancelled&project=SLUG&session=ID&limit=N",
                e.body_text()
            ),
        )
    })?;
    if let Some(state) = q.state.as_deref()
        && !STATES.contains(&state)
    {
        return Err(ApiError::new(
            ErrorCode::BadRequest,
            format!(
                "no approval state `{state}`; use one of {}",
                STATES.join(", ")
            ),
        ));
    }
    let approvals = sessions
        .approvals()
        .store()
        .list_approvals(ApprovalFilter {
            state: q.state,
            project: q.project,
            session: q.session,
            limit: q.limit.unwrap_or(DEFAULT_LIMIT).clamp(1, MAX_LIMIT),
        })
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?;
    Ok(Json(json!({ "approvals": approvals })))
}

async fn find(sessions: &Sessions, id: &str) -> Result<ApprovalRecord, ApiError> {
    sessions
        .approvals()
        .store()
        .get_approval(id.to_string())
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?
        .ok_or_else(|| {
            ApiError::new(
                ErrorCode::NotFound,
                format!("no approval `{id}`; `kaged approvals list` shows the pending ones"),
            )
        })
}

/// `GET /api/v1/approvals/{id}`.
pub async fn get(
    State(sessions): State<Sessions>,
    UrlPath(id): UrlPath<String>,
) -> Result<Json<ApprovalRecord>, ApiError> {
    find(&sessions, &id).await.map(Json)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecideRequest {
    decision: String,
    #[serde(default)]
    message: Option<String>,
}

/// `POST /api/v1/approvals/{id}` `{"decision": "approve"|"approve_session"|"deny",
/// "message"?}`: the first decision wins; a later one is `409 conflict`. A decision about a
/// conversation that is not running (kaged restarted meanwhile) resumes it, and its paused
/// turn goes on from that call.
pub async fn decide(
    State(sessions): State<Sessions>,
    Extension(principal): Extension<Principal>,
    Extension(peer): Extension<Peer>,
    UrlPath(id): UrlPath<String>,
    body: Result<Json<DecideRequest>, JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    let expected = "expected {\"decision\": \"approve\"|\"approve_session\"|\"deny\", \"message\": \"...\" (deny only)}";
    let Json(body) = body.map_err(|e| {
        ApiError::new(
            ErrorCode::BadRequest,
            format!("{}; {expected}", e.body_text()),
        )
    })?;
    let choice = Choice::parse(&body.decision).ok_or_else(|| {
        ApiError::new(
            ErrorCode::BadRequest,
            format!("no decision `{}`; {expected}", body.decision),
        )
    })?;
    let message = body.message.filter(|m| !m.trim().is_empty());
    if let Some(m) = &message {
        if choice != Choice::Deny {
            return Err(ApiError::new(
                ErrorCode::BadRequest,
                "a message goes with a deny only (the model receives it as the tool's result)",
            ));
        }
        let chars = m.chars().count();
        if chars > MAX_MESSAGE_CHARS {
            return Err(ApiError::new(
                ErrorCode::BadRequest,
                format!("the message is {chars} characters; at most {MAX_MESSAGE_CHARS} are taken"),
            ));
        }
    }
    let record = find(&sessions, &id).await?;
    if !crate::sessions::may_control(&principal, &record.owner) {
        return Err(ApiError::new(
            ErrorCode::Forbidden,
            format!(
                "approval {id} is for a run of {}; only they (or the local operator) may decide it",
                record.owner
            ),
        ));
    }
    let decided = sessions
        .approvals()
        .decide(&id, choice, message, &principal.id, peer.0.clone())
        .await?;
    let record = match decided {
        Decided::Now(record) => record,
        Decided::Already(earlier) => return Err(already(&earlier)),
        Decided::Unknown => {
            return Err(ApiError::new(
                ErrorCode::NotFound,
                format!("no approval `{id}`"),
            ));
        }
    };
    let resumed = resume_if_stopped(&sessions, &principal, &peer, &record).await;
    let mut out = json!(record);
    if let Some(map) = out.as_object_mut() {
        map.insert("resumed".into(), json!(matches!(resumed, Ok(true))));
        if let Err(e) = &resumed {
            map.insert("resume_error".into(), json!(e.message));
        }
    }
    Ok(Json(out))
}

/// The 409 of a late decision: who decided first, and how.
fn already(earlier: &ApprovalRecord) -> ApiError {
    let how = match (earlier.state.as_str(), earlier.decision.as_deref()) {
        ("approved", Some("approve_session")) => "approved for the session".to_string(),
        (state, _) => state.to_string(),
    };
    let by = earlier.decided_by.as_deref().unwrap_or("someone");
    let why = earlier
        .reason
        .as_deref()
        .map(|r| format!(" ({r})"))
        .unwrap_or_default();
    ApiError::new(
        ErrorCode::Conflict,
        format!(
            "approval {} was already decided: {how} by {by}{why}",
            earlier.id
        ),
    )
}

/// Resume the conversation of `record` when it is not running (its loop then takes the
/// decision from storage, a subagent's turn too); `Ok(false)` when it runs (its loop was
/// woken) or is no conversation.
async fn resume_if_stopped(
    sessions: &Sessions,
    principal: &Principal,
    peer: &Peer,
    record: &ApprovalRecord,
) -> Result<bool, ApiError> {
    let id = &record.session_id;
    if sessions
        .get(id)
        .is_some_and(|live| !live.state().is_terminal())
    {
        return Ok(false);
    }
    let session = crate::sessions::http::find(sessions, id).await?;
    if !session.conversation {
        return Ok(false);
    }
    crate::sessions::conversation::resume(sessions, principal, peer, session, None).await?;
    Ok(true)
}
