use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// The one error shape of the API: `{"error":{"code","message","details"?}}`, with a stable
/// `code` that maps to one HTTP status.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub code: &'static str,
    pub message: String,
    pub details: Option<serde_json::Value>,
}

impl ApiError {
    pub fn new(code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            code,
            message: message.into(),
            details: None,
        }
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new("internal", message)
    }

    pub fn status(&self) -> StatusCode {
        status_for_code(self.code)
    }
}

pub fn status_for_code(code: &str) -> StatusCode {
    match code {
        "bad_request" | "validation_failed" | "actor_header_required" => StatusCode::BAD_REQUEST,
        "unauthenticated" | "readonly_mode" => StatusCode::UNAUTHORIZED,
        "forbidden" | "token_invalid" | "token_admin_forbidden" | "bootstrap_write_forbidden" => {
            StatusCode::FORBIDDEN
        }
        "not_found" => StatusCode::NOT_FOUND,
        "method_not_allowed" => StatusCode::METHOD_NOT_ALLOWED,
        "conflict" | "weakening_pending" | "git_planted" | "project_missing" => {
            StatusCode::CONFLICT
        }
        "gone" => StatusCode::GONE,
        "dsl_invalid" => StatusCode::UNPROCESSABLE_ENTITY,
        "rate_limited" => StatusCode::TOO_MANY_REQUESTS,
        "provider_unreachable" => StatusCode::BAD_GATEWAY,
        "unavailable" | "storage_failing" => StatusCode::SERVICE_UNAVAILABLE,
        "storage_full" => StatusCode::INSUFFICIENT_STORAGE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let mut error = json!({"code": self.code, "message": self.message});
        if let (Some(details), Some(obj)) = (self.details, error.as_object_mut()) {
            obj.insert("details".into(), details);
        }
        (status, Json(json!({ "error": error }))).into_response()
    }
}

impl From<kaged_store::StoreError> for ApiError {
    fn from(e: kaged_store::StoreError) -> Self {
        tracing::error!(error = %e, "storage error");
        match (e.trouble(), e.path().and_then(|p| p.parent())) {
            (Some(kaged_store::Trouble::Full), Some(dir)) => ApiError::new(
                "storage_full",
                format!(
                    "kaged's data directory {} is full: free space there and retry",
                    dir.display()
                ),
            ),
            _ => ApiError::internal("storage error; see the daemon log"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_map_to_statuses() {
        assert_eq!(status_for_code("unauthenticated"), StatusCode::UNAUTHORIZED);
        assert_eq!(
            status_for_code("dsl_invalid"),
            StatusCode::UNPROCESSABLE_ENTITY
        );
        assert_eq!(
            status_for_code("storage_full"),
            StatusCode::INSUFFICIENT_STORAGE
        );
        assert_eq!(
            status_for_code("anything else"),
            StatusCode::INTERNAL_SERVER_ERROR
        );
    }
}
