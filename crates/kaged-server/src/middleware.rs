//! The layers every request passes (security and warning headers, the request log, the
//! Host/Origin transport check) and `authenticate`, which turns credentials into a `Principal`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use kaged_auth::{
    AuthMethod, BearerCheck, CSRF_HEADER, Denial, LOGIN_COOKIE, Mechanism, NONCE_HEADER, Principal,
    RequestFacts, Secret, USER_EMAIL_HEADER, USER_ID_HEADER,
};

use serde_json::json;

use crate::audit::{AuditRecord, now_ms};
use crate::error::{ApiError, ErrorCode};
use crate::listener::{ListenerInfo, Peer};
use crate::state::{ServerState, lock};
use crate::ui;

const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'; \
                   object-src 'none'";

/// Headers every response carries, errors included.
pub async fn security_headers(request: Request, next: Next) -> Response {
    let path = request.uri().path();
    // The console's files, its service worker included: revalidated on every use.
    let is_asset = path.starts_with("/assets/") || path == "/sw.js";
    let mut response = next.run(request).await;
    let h = response.headers_mut();
    let set = |h: &mut HeaderMap, name: &'static str, value: &'static str| {
        h.insert(name, HeaderValue::from_static(value));
    };
    set(h, "content-security-policy", CSP);
    set(h, "x-frame-options", "DENY");
    set(h, "x-content-type-options", "nosniff");
    // The launch URL carries a token: never let it leave in a Referer.
    set(h, "referrer-policy", "no-referrer");
    set(h, "cross-origin-opener-policy", "same-origin");
    set(h, "cross-origin-resource-policy", "same-origin");
    set(
        h,
        "cache-control",
        if is_asset { "no-cache" } else { "no-store" },
    );
    response
}

/// Apply `[auth.proxy]` on the listener it is configured for: the header becomes the actor
/// (overriding any token identity); a change without it is refused with 400
/// `actor_header_required`, never credited to whoever the caller claims to be.
fn trusted_actor(
    state: &ServerState,
    request: &Request,
    principal: Principal,
) -> Result<Principal, ApiError> {
    let Some(listener) = listener_of(request).filter(|l| l.trusted_proxy) else {
        return Ok(principal);
    };
    let Some(name) = state.info.settings.trusted_actor_header.as_deref() else {
        return Ok(principal);
    };
    let actor = request
        .headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|a| {
            !a.is_empty()
                && a.len() <= 256
                && !a.chars().any(char::is_control)
                && !kaged_auth::is_reserved_identity(a)
        });
    match actor {
        Some(actor) => Ok(Principal {
            id: actor.to_string(),
            email: None,
            token_id: None,
            method: AuthMethod::TrustedProxy,
        }),
        None if kaged_auth::is_state_changing(request.method().as_str()) => Err(ApiError::new(
            ErrorCode::ActorHeaderRequired,
            format!(
                "the {name} header is required on the trusted-proxy listener {} but was missing or empty",
                listener.label
            ),
        )),
        None => Ok(Principal {
            method: AuthMethod::TrustedProxy,
            ..principal
        }),
    }
}

/// `X-Kaged-Warning` on every response while the daemon runs insecure or unsandboxed.
pub async fn warning_headers(
    State(state): State<Arc<ServerState>>,
    request: Request,
    next: Next,
) -> Response {
    let mut response = next.run(request).await;
    for warning in &state.info.warning_headers {
        response
            .headers_mut()
            .append("x-kaged-warning", HeaderValue::from_static(warning));
    }
    response
}

/// One line per request: method, path (never the query, which may hold a launch token), status.
pub async fn log_request(mut request: Request, next: Next) -> Response {
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    let peer = peer(&request);
    request.extensions_mut().insert(Peer(peer.clone()));
    let start = Instant::now();
    let response = next.run(request).await;
    let status = response.status().as_u16();
    let elapsed_ms = start.elapsed().as_secs_f64() * 1000.0;
    if status >= 400 {
        tracing::info!(%method, %path, status, elapsed_ms, peer, "request refused or failed");
    } else {
        tracing::debug!(%method, %path, status, elapsed_ms, peer, "request");
    }
    response
}

/// Who is on the other end: the TCP peer address, or the Unix socket it came through.
pub(crate) fn peer(request: &Request) -> Option<String> {
    request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.to_string())
        .or_else(|| {
            request
                .extensions()
                .get::<ListenerInfo>()
                .map(|l| l.label.clone())
        })
}

fn listener_of(request: &Request) -> Option<&ListenerInfo> {
    request.extensions().get::<ListenerInfo>()
}

fn header(headers: &HeaderMap, name: impl header::AsHeaderName) -> Option<&str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// The first of Host, Origin and Sec-Fetch-Site that is repeated or not valid text.
fn malformed_header(headers: &HeaderMap) -> Option<&'static str> {
    ["host", "origin", "sec-fetch-site"]
        .into_iter()
        .find(|name| {
            let mut values = headers.get_all(*name).iter();
            match (values.next(), values.next()) {
                (Some(v), None) => v.to_str().is_err(),
                (Some(_), Some(_)) => true,
                (None, _) => false,
            }
        })
}

fn login_cookies(headers: &HeaderMap) -> Vec<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .filter(|(name, _)| *name == LOGIN_COOKIE)
        .map(|(_, value)| value)
        .collect()
}

fn facts<'a>(request: &'a Request, login_cookie: Option<&'a str>) -> RequestFacts<'a> {
    let h = request.headers();
    RequestFacts {
        method: request.method().as_str(),
        path: request.uri().path(),
        unix_listener: listener_of(request).is_some_and(|l| l.unix),
        host: header(h, header::HOST),
        origin: header(h, header::ORIGIN),
        sec_fetch_site: header(h, "sec-fetch-site"),
        login_cookie,
        nonce_header: header(h, NONCE_HEADER),
        authorization: header(h, header::AUTHORIZATION),
        user_id_header: header(h, USER_ID_HEADER),
        user_email_header: header(h, USER_EMAIL_HEADER),
        csrf_header: header(h, CSRF_HEADER),
        websocket_upgrade: header(h, header::UPGRADE)
            .is_some_and(|u| u.eq_ignore_ascii_case("websocket")),
        malformed_header: malformed_header(h),
    }
}

/// A refusal in the form the caller can use: JSON under `/api/`, a short page elsewhere.
pub(crate) fn refuse(path: &str, denial: &Denial) -> Response {
    let error = ApiError::from(denial);
    if path.starts_with("/api/") {
        error.into_response()
    } else {
        let message = match denial {
            Denial::MissingCredentials => "You are not signed in.".to_string(),
            Denial::InvalidLogin => {
                "Your session has ended: you signed out, it expired, or kaged restarted."
                    .to_string()
            }
            other => other.to_string(),
        };
        let sign_in = error.code == ErrorCode::Unauthenticated;
        ui::problem_page(error.status(), &message, sign_in)
    }
}

/// Host allowlist, Origin and Sec-Fetch-Site: for every route, authenticated or not.
pub async fn check_transport(
    State(state): State<Arc<ServerState>>,
    request: Request,
    next: Next,
) -> Response {
    if let Err(denial) = state.policy.check_transport(&facts(&request, None)) {
        return refuse(request.uri().path(), &denial);
    }
    next.run(request).await
}

/// The login cookie a request was authenticated with (absent for nonce-header callers).
#[derive(Clone)]
pub struct CurrentLogin(pub Secret);

/// Authentication and CSRF for protected routes; hands the handler a `Principal`.
pub async fn authenticate(
    State(state): State<Arc<ServerState>>,
    mut request: Request,
    next: Next,
) -> Response {
    let now_ms = now_ms();
    let now = (now_ms / 1000) as u64;
    let bearer = match state.policy.mechanism {
        Mechanism::Insecure => None,
        _ => header(request.headers(), header::AUTHORIZATION).map(String::from),
    };
    let decision = if let Some(authorization) = bearer {
        match state.policy.check_bearer(&authorization) {
            Err(denial) => Err(denial),
            Ok(BearerCheck::Bootstrap(principal)) => Ok((principal, None)),
            Ok(BearerCheck::Lookup { token_hash }) => {
                match state.store.find_active_token(token_hash, now_ms).await {
                    Ok(Some(token)) => Ok((
                        Principal {
                            id: token.actor,
                            email: None,
                            token_id: Some(token.id),
                            method: AuthMethod::IdentityToken,
                        },
                        None,
                    )),
                    Ok(None) => Err(Denial::TokenInvalid),
                    // A storage failure is an internal error: never a pass, never a 403.
                    Err(e) => return ApiError::from(e).into_response(),
                }
            }
        }
    } else {
        let cookies = login_cookies(request.headers());
        let logins = lock(&state.logins);
        // Another local app may have planted a cookie of the same name: any valid one counts.
        let mut result = state
            .policy
            .authenticate(&facts(&request, None), &logins, now)
            .map(|p| (p, None));
        for cookie in &cookies {
            result = state
                .policy
                .authenticate(&facts(&request, Some(cookie)), &logins, now)
                // Only a principal that came from this cookie carries it as its login.
                .map(|p| {
                    let login = (p.method == AuthMethod::LoginCookie)
                        .then(|| CurrentLogin(Secret::new(cookie.to_string())));
                    (p, login)
                });
            if result.is_ok() {
                break;
            }
        }
        result
    };
    // On a trusted-proxy listener the proxy's header names the actor; elsewhere it means nothing.
    let decision = match decision {
        Ok((principal, login)) => match trusted_actor(&state, &request, principal) {
            Ok(principal) => Ok((principal, login)),
            Err(error) => return error.into_response(),
        },
        Err(denial) => Err(denial),
    };
    let decision = decision.and_then(|(principal, login)| {
        state
            .policy
            .check_change(&principal, request.method().as_str(), request.uri().path())
            .map(|()| (principal, login))
    });
    match decision {
        Ok((principal, login)) => {
            if principal.method == AuthMethod::Sidecar
                && lock(&state.seen_identities).insert(principal.id.clone())
            {
                // First request of this identity since the daemon started: attribute it.
                state
                    .audit
                    .record(AuditRecord {
                        kind: "auth.login",
                        success: true,
                        identity: Some(principal.id.clone()),
                        source: peer(&request),
                        detail: json!({"method": "sidecar", "email": principal.email}),
                    })
                    .await;
            }
            request.extensions_mut().insert(principal);
            if let Some(login) = login {
                request.extensions_mut().insert(login);
            }
            next.run(request).await
        }
        Err(denial) => {
            // A credential was presented and was wrong: a failed login, audited. (No
            // credential at all is just a signed-out browser, and is not.)
            let method = match denial {
                Denial::WrongNonce => Some("nonce"),
                Denial::SidecarIdentityMissing => Some("sidecar"),
                Denial::TokenInvalid | Denial::MalformedAuthorization => Some("bearer"),
                Denial::InvalidLogin => Some("session_cookie"),
                _ => None,
            };
            if let Some(method) = method {
                // Limited per peer address (not port: each connection has its own), so a
                // process hammering the daemon cannot flood the trail; others stay visible.
                let source = peer(&request);
                let key = source
                    .as_deref()
                    .map(|s| s.rsplit_once(':').map_or(s, |(address, _)| address))
                    .unwrap_or("-")
                    .to_owned();
                state
                    .audit
                    .record_limited(
                        &key,
                        AuditRecord {
                            kind: "auth.failed",
                            success: false,
                            identity: None,
                            source,
                            detail: json!({"method": method, "path": request.uri().path()}),
                        },
                    )
                    .await;
            }
            refuse(request.uri().path(), &denial)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_or_binary_security_headers_are_malformed() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("127.0.0.1:1"));
        assert_eq!(malformed_header(&h), None);
        h.append(header::HOST, HeaderValue::from_static("evil.example"));
        assert_eq!(malformed_header(&h), Some("host"));
        let mut h = HeaderMap::new();
        h.insert(
            header::ORIGIN,
            HeaderValue::from_bytes(b"http://\xff").unwrap(),
        );
        assert_eq!(malformed_header(&h), Some("origin"));
    }

    #[test]
    fn login_cookie_is_found_among_others() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; kaged_session=abc; kaged_session_x=2"),
        );
        h.append(
            header::COOKIE,
            HeaderValue::from_static("kaged_session=def"),
        );
        assert_eq!(login_cookies(&h), vec!["abc", "def"]);
    }
}
