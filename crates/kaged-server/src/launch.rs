//! `GET /launch?token=`: exchange a one-time launch token for a session cookie.

use std::sync::Arc;

use axum::extract::{Query, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use kaged_auth::{
    AuthMethod, Principal, SESSION_COOKIE, SESSION_TTL_SECS, TokenRejection, verify_launch_token,
};
use serde::Deserialize;
use serde_json::json;

use crate::audit::{AuditRecord, now_ms};
use crate::middleware::peer;
use crate::state::{LAUNCH_FAILURES_PER_WINDOW, LAUNCH_WINDOW_MS, ServerState, lock};
use crate::ui;

#[derive(Deserialize)]
pub struct LaunchQuery {
    token: Option<String>,
}

fn random() -> Result<[u8; 32], getrandom::Error> {
    let mut b = [0u8; 32];
    getrandom::fill(&mut b)?;
    Ok(b)
}

pub async fn launch(
    State(state): State<Arc<ServerState>>,
    Query(query): Query<LaunchQuery>,
    request: Request,
) -> Response {
    let source = peer(&request);
    let now_ms = now_ms();
    {
        let mut failures = lock(&state.launch_failures);
        failures.retain(|t| now_ms - t < LAUNCH_WINDOW_MS);
        if failures.len() >= LAUNCH_FAILURES_PER_WINDOW {
            return ui::problem_page(
                StatusCode::TOO_MANY_REQUESTS,
                "Too many failed sign-in attempts. Wait a minute before trying a new launch URL.",
            );
        }
    }
    let Some(token) = query.token.filter(|t| !t.is_empty()) else {
        return ui::problem_page(StatusCode::BAD_REQUEST, "This launch URL has no token.");
    };
    let now = (now_ms / 1000) as u64;
    let verdict = verify_launch_token(&state.policy.nonce, &token, now)
        .and_then(|(id, exp)| lock(&state.used_tokens).consume(id, exp, now).map(|()| id));
    let token_id = match verdict {
        Ok(id) => id,
        Err(rejection) => return refused(&state, rejection, source, now_ms).await,
    };
    let (cookie_bytes, csrf_bytes) = match (random(), random()) {
        (Ok(a), Ok(b)) => (a, b),
        _ => {
            tracing::error!("the OS random number generator failed");
            return ui::problem_page(
                StatusCode::INTERNAL_SERVER_ERROR,
                "kaged could not create a session (no randomness).",
            );
        }
    };
    let principal = Principal {
        id: state.policy.operator.clone(),
        method: AuthMethod::Session,
    };
    let (cookie, _) =
        lock(&state.sessions).create(cookie_bytes, csrf_bytes, principal.clone(), now);
    state
        .audit
        .record(AuditRecord {
            kind: "auth.login",
            success: true,
            identity: Some(principal.id.clone()),
            source,
            detail: json!({"method": "launch_token", "launch_token_id": token_id.to_string()}),
        })
        .await;
    tracing::info!(identity = %principal.id, launch_token_id = %token_id, "operator signed in with a launch token");
    let set_cookie = format!(
        "{SESSION_COOKIE}={}; HttpOnly; SameSite=Strict; Path=/; Max-Age={SESSION_TTL_SECS}",
        cookie.expose()
    );
    let mut response = (StatusCode::SEE_OTHER, [(header::LOCATION, "/")]).into_response();
    match HeaderValue::from_str(&set_cookie) {
        Ok(v) => {
            response.headers_mut().insert(header::SET_COOKIE, v);
            response
        }
        Err(_) => ui::problem_page(
            StatusCode::INTERNAL_SERVER_ERROR,
            "kaged could not set the session cookie.",
        ),
    }
}

async fn refused(
    state: &ServerState,
    rejection: TokenRejection,
    source: Option<String>,
    now_ms: i64,
) -> Response {
    lock(&state.launch_failures).push(now_ms);
    state
        .audit
        .record(AuditRecord {
            kind: "auth.login",
            success: false,
            identity: None,
            source,
            detail: json!({"method": "launch_token", "reason": rejection.reason()}),
        })
        .await;
    tracing::info!(reason = rejection.reason(), "launch token refused");
    let why = match rejection {
        TokenRejection::Reused => "This launch URL was already used (each works once).",
        TokenRejection::Expired => "This launch URL has expired.",
        TokenRejection::BadSignature => {
            "This launch URL is not from the running daemon (it may be from before a restart)."
        }
        TokenRejection::Malformed | TokenRejection::TooLongLived => "This launch URL is not valid.",
    };
    ui::problem_page(StatusCode::UNAUTHORIZED, why)
}
