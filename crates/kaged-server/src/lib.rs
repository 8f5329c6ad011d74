//! kaged's HTTP edge: the router, its middleware, the handlers, and the daemon's background
//! upkeep.
//!
//! [`serve_all`] accepts on every listener (`listener`, with the connection limits of
//! `connection`) and hands each request to [`router`]. Every request then passes, outermost
//! first: security headers (so refusals carry them too), `X-Kaged-Warning` headers, the request
//! log, the transport checks (Host allowlist, Origin, Sec-Fetch-Site); protected routes then
//! authenticate (`middleware::authenticate`: bearer token, nonce header, sidecar identity or
//! login cookie, CSRF, all decided by `kaged-auth`) and the handler receives the
//! [`kaged_auth::Principal`], never a credential.
//!
//! Handlers: `api` (status, whoami, audit, logout), `launch` (launch token → login cookie),
//! `tokens`, `projects` (and its file watcher), `sessions` (runs: start, list, kill, transcript,
//! PTY WebSocket), `events` (the event stream), `ui` (the bundled console). Shared pieces:
//! `error` (the one JSON error shape and its [`ErrorCode`]s), `audit` (the audit sink), `storage`
//! (held state changes, refusals while storage fails), `state` (what handlers share).
//!
//! [`router`] only builds routes; the daemon starts the upkeep tasks itself with
//! [`spawn_background`], so the router can be exercised in-process without them.

mod api;
mod audit;
mod connection;
mod error;
mod events;
mod launch;
mod lines;
mod listener;
mod middleware;
pub mod notify;
pub mod plugins;
mod projects;
#[cfg(test)]
mod router_tests;
mod sessions;
mod state;
mod storage;
#[cfg(test)]
mod test_state;
mod tokens;
mod ui;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};

pub use audit::{AuditLog, AuditRecord, now_ms, rfc3339_utc};
pub use connection::{ConnectionLimits, HEADER_TIMEOUT, IDLE_TIMEOUT, MAX_WAITING_CONNECTIONS};
pub use error::{ApiError, ErrorCode};
pub use listener::{BindError, BoundListener, ListenerInfo, Socket, bind_unix, serve_all};
pub use projects::{
    UnreadableProject, grants_of, project_files, read_project_file, read_project_texts,
    restore_registered as restore_projects,
};
pub use sessions::{HolderSettings, default_limits, egress_dir, holder_dir, run_name};
pub use state::{
    DaemonInfo, SandboxState, ServerState, reattach_runs, stop_plugins, stop_sessions,
};

/// Request bodies are small JSON documents; anything larger is refused before a handler runs.
const MAX_BODY_BYTES: usize = 64 * 1024;

/// The daemon's upkeep for as long as it runs: re-check projects whose files change, session
/// housekeeping (runs an earlier daemon left, transcript retention, forgetting ended runs) and
/// the retry of state changes held while storage failed. Call once, inside the Tokio runtime.
pub fn spawn_background(state: &std::sync::Arc<ServerState>) {
    tokio::spawn(projects::watch(state.clone()));
    tokio::spawn(sessions::housekeeping(state.runs.clone()));
    state.plugins.start_all();
    tokio::spawn(storage::recover(state.clone()));
}

/// Every route and its middleware. Starts nothing: see [`spawn_background`].
pub fn router(state: std::sync::Arc<ServerState>) -> Router {
    let protected = Router::new()
        .route("/", get(ui::index))
        .route("/api/v1/status", get(api::status))
        .route("/api/v1/whoami", get(api::whoami))
        .route("/api/v1/local", get(api::local))
        .route("/api/v1/audit", get(api::audit))
        .route("/api/v1/daemon/stop", post(api::stop))
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
        .route("/api/v1/plugins", get(plugins::http::list))
        .route("/api/v1/plugins/{name}/enable", post(plugins::http::enable))
        .route(
            "/api/v1/plugins/{name}/disable",
            post(plugins::http::disable),
        )
        .route("/api/v1/approvals", get(sessions::approval::list))
        .route(
            "/api/v1/approvals/{id}",
            get(sessions::approval::get).post(sessions::approval::decide),
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
        .route("/api/v1/sessions/{id}/events", get(sessions::agent_events))
        .route("/api/v1/sessions/{id}/messages", post(sessions::messages))
        .route("/api/v1/sessions/{id}/abort", post(sessions::abort))
        .route(
            "/api/v1/sessions/{id}/conversation",
            get(sessions::conversation),
        )
        .fallback(api::not_found)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            middleware::authenticate,
        ));
    Router::new()
        .route("/healthz", get(api::healthz))
        .route("/readyz", get(api::readyz))
        .route("/api/v1/dsl/schema", get(api::dsl_schema))
        // Public like the project file's: editors fetch it to check manifests as they are typed.
        .route("/api/v1/plugins/schema", get(api::plugin_schema))
        .route("/launch", get(launch::launch))
        .route("/assets/{file}", get(ui::asset))
        .route("/assets/vendor/{file}", get(ui::vendor_asset))
        .route("/sw.js", get(ui::service_worker))
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
