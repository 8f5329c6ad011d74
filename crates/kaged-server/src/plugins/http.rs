//! The plugins' routes: every plugin's report, and the operator enabling or disabling one.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Extension, Path as UrlPath, State};
use kaged_auth::Principal;
use serde_json::{Value, json};

use super::PluginError;
use crate::error::{ApiError, ErrorCode};
use crate::state::ServerState;

impl From<PluginError> for ApiError {
    fn from(e: PluginError) -> ApiError {
        let code = match e {
            PluginError::Unknown(..) => ErrorCode::NotFound,
            PluginError::Invalid(..) => ErrorCode::Conflict,
            PluginError::Save(..) => return ApiError::internal(e.to_string()),
        };
        ApiError::new(code, e.to_string())
    }
}

/// `GET /api/v1/plugins`
pub async fn list(State(state): State<Arc<ServerState>>) -> Json<Value> {
    Json(state.plugins.list())
}

/// `POST /api/v1/plugins/{name}/enable`
pub async fn enable(
    State(state): State<Arc<ServerState>>,
    Extension(principal): Extension<Principal>,
    UrlPath(name): UrlPath<String>,
) -> Result<Json<Value>, ApiError> {
    let plugin = state.plugins.enable(&name, &principal.id).await?;
    Ok(Json(json!({ "plugin": plugin })))
}

/// `POST /api/v1/plugins/{name}/disable`
pub async fn disable(
    State(state): State<Arc<ServerState>>,
    Extension(principal): Extension<Principal>,
    UrlPath(name): UrlPath<String>,
) -> Result<Json<Value>, ApiError> {
    let plugin = state.plugins.disable(&name, &principal.id).await?;
    Ok(Json(json!({ "plugin": plugin })))
}
