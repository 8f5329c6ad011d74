//! `/api/v1/tokens`: mint, list and revoke database-backed bearer tokens. The plaintext is
//! returned once at creation; only its SHA-256 is stored; every change is audited.

use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Extension, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use kaged_auth::{Principal, hash_token};
use serde::Deserialize;
use serde_json::json;

use crate::audit::{AuditRecord, now_ms};
use crate::error::{ApiError, ErrorCode};
use crate::listener::Peer;
use crate::state::ServerState;

const MAX_LABEL_LEN: usize = 128;
/// Prefix of every minted token, so a leaked one is recognisable in a secret scanner.
pub const TOKEN_PREFIX: &str = "kaged_";

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateToken {
    actor: String,
    name: Option<String>,
}

fn admin(state: &ServerState, principal: &Principal) -> Result<(), ApiError> {
    state
        .policy
        .may_administer_tokens(principal)
        .map_err(|d| ApiError::from(&d))
}

fn label(field: &str, value: &str) -> Result<String, ApiError> {
    let v = value.trim();
    if v.is_empty() || v.len() > MAX_LABEL_LEN || v.chars().any(char::is_control) {
        return Err(ApiError::new(
            ErrorCode::ValidationFailed,
            format!("{field} must be 1 to {MAX_LABEL_LEN} printable characters"),
        ));
    }
    Ok(v.to_string())
}

pub async fn create(
    State(state): State<Arc<ServerState>>,
    Extension(principal): Extension<Principal>,
    Extension(peer): Extension<Peer>,
    body: Result<Json<CreateToken>, JsonRejection>,
) -> Result<Response, ApiError> {
    admin(&state, &principal)?;
    let Json(body) = body.map_err(|e| {
        ApiError::new(
            ErrorCode::BadRequest,
            format!(
                "{}; send JSON {{\"actor\": NAME, \"name\": LABEL}}",
                e.body_text()
            ),
        )
    })?;
    let actor = label("actor", &body.actor)?;
    if kaged_auth::is_reserved_identity(&actor) {
        return Err(ApiError::new(
            ErrorCode::ValidationFailed,
            format!(
                "the actor {actor:?} is reserved (bootstrap, insecure, anonymous and user:* name kaged's own principals)"
            ),
        ));
    }
    let name = body.name.as_deref().map(|n| label("name", n)).transpose()?;
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|_| ApiError::internal("no randomness for a token"))?;
    let plaintext = format!("{TOKEN_PREFIX}{}", hex::encode(bytes));
    let token = state
        .store
        .create_token(
            hash_token(&plaintext),
            actor.clone(),
            name.clone(),
            now_ms(),
        )
        .await?;
    state
        .audit
        .record(AuditRecord {
            kind: "token.created",
            success: true,
            identity: Some(principal.id.clone()),
            source: peer.0.clone(),
            detail: json!({"token_id": token.id, "target_actor": actor, "name": name}),
        })
        .await;
    Ok((
        StatusCode::CREATED,
        Json(json!({"token": token, "plaintext": plaintext})),
    )
        .into_response())
}

pub async fn list(
    State(state): State<Arc<ServerState>>,
    Extension(principal): Extension<Principal>,
) -> Result<Json<serde_json::Value>, ApiError> {
    admin(&state, &principal)?;
    let tokens = state.store.list_tokens().await?;
    Ok(Json(json!({ "tokens": tokens })))
}

pub async fn revoke(
    State(state): State<Arc<ServerState>>,
    Extension(principal): Extension<Principal>,
    Extension(peer): Extension<Peer>,
    id: Result<Path<i64>, axum::extract::rejection::PathRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    admin(&state, &principal)?;
    let Path(id) = id.map_err(|_| {
        ApiError::new(
            ErrorCode::BadRequest,
            "the token id must be a positive integer",
        )
    })?;
    let Some(token) = state.store.revoke_token(id, now_ms()).await? else {
        return Err(ApiError::new(
            ErrorCode::NotFound,
            format!(
                "no active token with id {id} (unknown or already revoked); see `kaged tokens list`"
            ),
        ));
    };
    // Nobody may be listening; that is fine.
    let _ = state.revoked_tokens.send(token.id);
    state
        .audit
        .record(AuditRecord {
            kind: "token.revoked",
            success: true,
            identity: Some(principal.id.clone()),
            source: peer.0.clone(),
            detail: json!({"token_id": token.id, "target_actor": token.actor, "name": token.name}),
        })
        .await;
    Ok(Json(json!({ "token": token })))
}
