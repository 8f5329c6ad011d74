//! JSON handlers. Each receives an authenticated `Principal` from the middleware where needed.

use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Extension, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use kaged_auth::Principal;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::audit::{AuditRecord, now_ms};
use crate::error::{ApiError, ErrorCode};
use crate::listener::Peer;
use crate::middleware::CurrentLogin;
use crate::state::{ServerState, lock};

/// Liveness: the process answers. Reveals nothing.
pub async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// The JSON Schema of project files: public, like the format it describes.
pub async fn dsl_schema() -> Json<Value> {
    Json(kaged_dsl::json_schema())
}

/// The JSON Schema of plugin manifests (`kaged-plugin.yaml`), for signed-in clients.
pub async fn plugin_schema() -> Json<Value> {
    Json(kaged_plugin::json_schema())
}

/// Readiness: storage is open, migrated, answering and taking writes (503 with the reason
/// while writes fail, e.g. a full disk).
pub async fn readyz(State(state): State<Arc<ServerState>>) -> Response {
    if let Some(reason) = crate::storage::readiness(&state) {
        return (StatusCode::SERVICE_UNAVAILABLE, Json(reason)).into_response();
    }
    match state.store.ping().await {
        Ok(()) => Json(json!({"status": "ready"})).into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "readiness check failed");
            // Storage trouble marked the store failing: the same reason as the next call's.
            match crate::storage::readiness(&state) {
                Some(reason) => (StatusCode::SERVICE_UNAVAILABLE, Json(reason)).into_response(),
                None => {
                    ApiError::new(ErrorCode::Unavailable, "storage is not ready").into_response()
                }
            }
        }
    }
}

pub async fn status(State(state): State<Arc<ServerState>>) -> Result<Json<Value>, ApiError> {
    let info = &state.info;
    let s = &info.settings;
    // While the database does not answer (a stopped PostgreSQL) the status still answers,
    // with `storage.health` saying why; what only the database knows is null.
    let schema = state.store.schema_version().await.ok();
    let mut warnings = info.warnings.clone();
    warnings.extend(crate::storage::warning(&state));
    let pending = state
        .runs
        .approvals()
        .pending(None)
        .await
        .ok()
        .map(|p| p.len());
    Ok(Json(json!({
        "version": info.version,
        "pid": info.pid,
        "started_at_ms": info.started_at_ms,
        "uptime_secs": state.started.elapsed().as_secs(),
        "mode": info.decision.mode,
        "mode_reason": info.decision.reason,
        "mode_rule": info.decision.rule,
        "paths": {
            "config_file": s.config_file,
            "data_dir": s.home,
            "runtime_dir": info.decision.paths.runtime_dir,
            "runtime_dir_is_fallback": info.decision.paths.runtime_dir_is_fallback,
            "audit_log": state.audit.path(),
        },
        "bind": s.bind.to_string(),
        "listeners": s.listeners,
        "url": info.url,
        "auth_mode": s.auth_mode,
        "auth": s.auth,
        "sandbox_mode": s.sandbox_mode,
        "sandbox": {
            "mode": s.sandbox_mode,
            "available": info.sandbox.problem.is_none(),
            "problem": info.sandbox.problem,
            "limits": info.sandbox.limits,
        },
        "storage": {
            "url": state.store.describe(),
            "schema_version": schema,
            "health": crate::storage::report(&state),
        },
        "logging": {"operational": s.log_operational, "level": s.log_level},
        "ui_serve": s.ui_serve,
        "approvals": {"pending": pending},
        "holders": state.runs.holders_report().await,
        "plugins": state.plugins.summary(),
        "warnings": warnings,
        "sources": s.sources,
    })))
}

/// The operator-local configuration: aliases, providers (by variable name; an inline key is
/// only ever reported as present), the projects registry and host grants.
pub async fn local(State(state): State<Arc<ServerState>>) -> Json<Value> {
    Json(json!({
        "path": state.info.local_path,
        "local": state.info.local,
    }))
}

pub async fn whoami(
    State(state): State<Arc<ServerState>>,
    Extension(principal): Extension<Principal>,
    login: Option<Extension<CurrentLogin>>,
) -> Json<Value> {
    let now = (now_ms() / 1000) as u64;
    let csrf = login.and_then(|Extension(CurrentLogin(cookie))| {
        lock(&state.logins)
            .lookup(cookie.expose(), now)
            .map(|login| login.csrf.expose().to_string())
    });
    Json(json!({
        "id": principal.id,
        "email": principal.email,
        "method": principal.method,
        "csrf_token": csrf,
    }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    limit: Option<usize>,
}

pub async fn audit(
    State(state): State<Arc<ServerState>>,
    query: Result<Query<AuditQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(q) = query.map_err(|e| {
        ApiError::new(
            ErrorCode::BadRequest,
            format!(
                "bad query string: {}; use ?limit=N with N from 1 to 1000",
                e.body_text()
            ),
        )
    })?;
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    let events = state.store.recent_audit(limit).await?;
    Ok(Json(json!({ "events": events })))
}

pub async fn logout(
    State(state): State<Arc<ServerState>>,
    Extension(principal): Extension<Principal>,
    login: Option<Extension<CurrentLogin>>,
    Extension(peer): Extension<Peer>,
) -> Response {
    let revoked = login
        .map(|Extension(CurrentLogin(cookie))| lock(&state.logins).revoke(cookie.expose()))
        .unwrap_or(false);
    state
        .audit
        .record(AuditRecord {
            kind: "auth.logout",
            success: revoked,
            identity: Some(principal.id),
            source: peer.0.clone(),
            detail: json!({"method": principal.method}),
        })
        .await;
    let expire = format!(
        "{}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0",
        kaged_auth::LOGIN_COOKIE
    );
    (StatusCode::NO_CONTENT, [(header::SET_COOKIE, expire)]).into_response()
}

pub async fn not_found() -> ApiError {
    ApiError::new(ErrorCode::NotFound, "no such route")
}

pub async fn method_not_allowed() -> ApiError {
    ApiError::new(
        ErrorCode::MethodNotAllowed,
        "this route does not accept that method",
    )
}

/// `POST /api/v1/daemon/stop` (`kaged stop`): the local operator asks the daemon to stop as a
/// stop signal would. Answered before the stop begins; the CLI waits for the process to end.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct StopRequest {
    /// End the runs the daemon would keep for the next start (`on_daemon_stop = "keep"`).
    #[serde(default)]
    kill_runs: bool,
}

pub async fn stop(
    State(state): State<Arc<ServerState>>,
    Extension(principal): Extension<Principal>,
    Extension(peer): Extension<Peer>,
    body: Option<Json<StopRequest>>,
) -> Result<Response, ApiError> {
    let kill_runs = body.map(|Json(b)| b.kill_runs).unwrap_or_default();
    let allowed = state.policy.may_stop_daemon(&principal);
    state
        .audit
        .record(AuditRecord {
            kind: "daemon.stop.requested",
            success: allowed.is_ok(),
            identity: Some(principal.id.clone()),
            source: peer.0.clone(),
            detail: json!({"pid": state.info.pid, "kill_runs": kill_runs}),
        })
        .await;
    allowed.map_err(|d| ApiError::from(&d))?;
    if kill_runs {
        state
            .kill_runs
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }
    // `notify_one` keeps the request if the daemon is not waiting yet.
    state.stop_requested.notify_one();
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({"stopping": true, "pid": state.info.pid, "kill_runs": kill_runs})),
    )
        .into_response())
}
