//! kaged's HTTP edge.
//!
//! Every request passes, in order: security headers (outermost, so errors get them too) ->
//! transport checks (Host allowlist, Origin, Sec-Fetch-Site) -> for protected routes,
//! authentication and CSRF (decided by `kaged-auth`) -> the handler, which receives the
//! [`kaged_auth::Principal`] and never reads credentials itself.
//!
//! Modules follow that path: `middleware` (checks), `launch` (launch-token exchange),
//! `api` (JSON handlers), `ui` (bundled page and the signed-out page), `error` (the one JSON
//! error shape), `audit` (the audit sink), `state` (what handlers share).

mod api;
mod audit;
mod connection;
mod error;
mod events;
mod launch;
mod listener;
mod middleware;
mod projects;
mod sessions;
mod state;
mod storage;
mod tokens;
mod ui;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};

pub use audit::{AuditLog, AuditRecord, now_ms, rfc3339_utc};
pub use connection::{ConnectionLimits, HEADER_TIMEOUT, IDLE_TIMEOUT, MAX_WAITING_CONNECTIONS};
pub use error::ApiError;
pub use listener::{BindError, BoundListener, ListenerInfo, Socket, bind_unix, serve_all};
pub use projects::{
    UnreadableProject, grants_of, project_files, read_project_file, read_project_texts,
    restore_registered as restore_projects,
};
pub use sessions::{default_limits, egress_dir, run_name};
pub use state::{DaemonInfo, SandboxState, ServerState, stop_sessions};

/// Request bodies are small JSON documents; anything larger is refused before a handler runs.
const MAX_BODY_BYTES: usize = 64 * 1024;

pub fn router(state: std::sync::Arc<ServerState>) -> Router {
    tokio::spawn(projects::watch(state.clone()));
    tokio::spawn(sessions::housekeeping(state.runs.clone()));
    tokio::spawn(storage::recover(state.clone()));
    let protected = Router::new()
        .route("/", get(ui::index))
        .route("/api/v1/status", get(api::status))
        .route("/api/v1/whoami", get(api::whoami))
        .route("/api/v1/local", get(api::local))
        .route("/api/v1/audit", get(api::audit))
        .route("/api/v1/auth/logout", post(api::logout))
        .route("/api/v1/events", get(events::events))
        .route("/api/v1/tokens", get(tokens::list).post(tokens::create))
        .route("/api/v1/tokens/{id}/revoke", post(tokens::revoke))
        .route("/api/v1/projects", get(projects::list))
        .route("/api/v1/projects/load", post(projects::load))
        .route(
            "/api/v1/projects/{slug}",
            get(projects::get).delete(projects::unload),
        )
        .route("/api/v1/projects/{slug}/reload", post(projects::reload))
        .route(
            "/api/v1/projects/{slug}/sessions",
            get(sessions::list_project).post(sessions::create),
        )
        .route("/api/v1/sessions", get(sessions::list))
        .route("/api/v1/sessions/prune", post(sessions::prune))
        .route("/api/v1/sessions/{id}", get(sessions::get))
        .route("/api/v1/sessions/{id}/kill", post(sessions::kill))
        .route(
            "/api/v1/sessions/{id}/transcript",
            get(sessions::transcript),
        )
        .route("/api/v1/sessions/{id}/pty", get(sessions::attach))
        .fallback(api::not_found)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            middleware::authenticate,
        ));
    Router::new()
        .route("/healthz", get(api::healthz))
        .route("/readyz", get(api::readyz))
        .route("/api/v1/dsl/schema", get(api::dsl_schema))
        .route("/launch", get(launch::launch))
        .route("/assets/{file}", get(ui::asset))
        .route("/assets/vendor/{file}", get(ui::vendor_asset))
        .merge(protected)
        .method_not_allowed_fallback(api::method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            middleware::check_transport,
        ))
        .layer(axum::middleware::from_fn(middleware::log_request))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            middleware::warning_headers,
        ))
        .layer(axum::middleware::from_fn(middleware::security_headers))
        .with_state(state)
}
