//! `GET /launch?token=`: exchange a one-time launch token for a login cookie.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use kaged_auth::{
    AuthMethod, LOGIN_COOKIE, LOGIN_TTL_SECS, Mechanism, Principal, TokenRejection,
    verify_launch_token,
};
use serde_json::json;

use crate::audit::{AuditRecord, now_ms};
use crate::middleware::peer;
use crate::state::{LAUNCH_FAILURES_PER_WINDOW, LAUNCH_WINDOW_MS, ServerState, lock};
use crate::ui;

fn random() -> Result<[u8; 32], getrandom::Error> {
    let mut b = [0u8; 32];
    getrandom::fill(&mut b)?;
    Ok(b)
}

/// The single `token` parameter; anything else (none, several, other keys) is malformed.
fn token_param(query: Option<&str>) -> Option<&str> {
    let mut tokens = query?
        .split('&')
        .filter_map(|pair| pair.strip_prefix("token="));
    match (tokens.next(), tokens.next()) {
        (Some(t), None) if !t.is_empty() => Some(t),
        _ => None,
    }
}

pub async fn launch(State(state): State<Arc<ServerState>>, request: Request) -> Response {
    if !matches!(state.policy.mechanism, Mechanism::LaunchUrl) {
        return ui::problem_page(
            StatusCode::NOT_FOUND,
            "Launch URLs are off: this kaged authenticates through its sidecar (or not at all).",
            false,
        );
    }
    let source = peer(&request);
    let now_ms = now_ms();
    let now = (now_ms / 1000) as u64;
    // The token is checked before any rate limit, so a flood of bad tokens from another local
    // user can never lock the operator's valid launch URL out.
    let verdict = match token_param(request.uri().query()) {
        None => Err(TokenRejection::Malformed),
        Some(token) => verify_launch_token(&state.policy.nonce, token, now)
            .and_then(|(id, exp)| lock(&state.used_tokens).consume(id, exp, now).map(|()| id)),
    };
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
                false,
            );
        }
    };
    let principal = Principal {
        id: state.policy.operator.clone(),
        email: None,
        token_id: None,
        method: AuthMethod::LoginCookie,
    };
    let (cookie, _) = lock(&state.logins).create(cookie_bytes, csrf_bytes, principal.clone(), now);
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
        "{LOGIN_COOKIE}={}; HttpOnly; SameSite=Strict; Path=/; Max-Age={LOGIN_TTL_SECS}",
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
            false,
        ),
    }
}

async fn refused(
    state: &ServerState,
    rejection: TokenRejection,
    source: Option<String>,
    now_ms: i64,
) -> Response {
    let limited = {
        let mut failures = lock(&state.launch_failures);
        failures.retain(|t| now_ms - t < LAUNCH_WINDOW_MS);
        failures.push(now_ms);
        failures.len() > LAUNCH_FAILURES_PER_WINDOW
    };
    state
        .audit
        .record(AuditRecord {
            kind: "auth.login",
            success: false,
            identity: None,
            source,
            detail: json!({
                "method": "launch_token",
                "reason": rejection.reason(),
                "rate_limited": limited,
            }),
        })
        .await;
    tracing::info!(reason = rejection.reason(), limited, "launch token refused");
    if limited {
        return ui::problem_page(
            StatusCode::TOO_MANY_REQUESTS,
            "Too many failed sign-in attempts in the last minute. A valid launch URL still works.",
            true,
        );
    }
    let why = match rejection {
        TokenRejection::Reused => "This launch URL was already used (each works once).",
        TokenRejection::Expired => "This launch URL has expired.",
        TokenRejection::BadSignature => {
            "This launch URL is not from the running daemon (it may be from before a restart)."
        }
        TokenRejection::Malformed | TokenRejection::TooLongLived => "This launch URL is not valid.",
    };
    ui::problem_page(StatusCode::UNAUTHORIZED, why, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exactly_one_token_parameter_is_accepted() {
        assert_eq!(token_param(Some("token=abc")), Some("abc"));
        assert_eq!(token_param(Some("x=1&token=abc")), Some("abc"));
        assert_eq!(token_param(Some("token=a&token=b")), None);
        assert_eq!(token_param(Some("token=")), None);
        assert_eq!(token_param(None), None);
    }
}
