//! The one JSON error shape of the API and its closed set of codes.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use kaged_auth::Denial;
use serde::{Deserialize, Serialize};
use serde_json::json;

/// Every `error.code` the API sends. Each knows its wire string and its HTTP status, so a new
/// code cannot be sent without a status, nor a typo go out as a silent 500.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    BadRequest,
    ValidationFailed,
    ActorHeaderRequired,
    Unauthenticated,
    ReadonlyMode,
    Forbidden,
    TokenInvalid,
    TokenAdminForbidden,
    BootstrapWriteForbidden,
    NotFound,
    MethodNotAllowed,
    Conflict,
    WeakeningPending,
    GitPlanted,
    ProjectMissing,
    Gone,
    DslInvalid,
    RateLimited,
    ProviderUnreachable,
    Unavailable,
    StorageFailing,
    StorageFull,
    Internal,
}

impl ErrorCode {
    /// Every code, for tests and documentation.
    pub const ALL: [ErrorCode; 23] = [
        ErrorCode::BadRequest,
        ErrorCode::ValidationFailed,
        ErrorCode::ActorHeaderRequired,
        ErrorCode::Unauthenticated,
        ErrorCode::ReadonlyMode,
        ErrorCode::Forbidden,
        ErrorCode::TokenInvalid,
        ErrorCode::TokenAdminForbidden,
        ErrorCode::BootstrapWriteForbidden,
        ErrorCode::NotFound,
        ErrorCode::MethodNotAllowed,
        ErrorCode::Conflict,
        ErrorCode::WeakeningPending,
        ErrorCode::GitPlanted,
        ErrorCode::ProjectMissing,
        ErrorCode::Gone,
        ErrorCode::DslInvalid,
        ErrorCode::RateLimited,
        ErrorCode::ProviderUnreachable,
        ErrorCode::Unavailable,
        ErrorCode::StorageFailing,
        ErrorCode::StorageFull,
        ErrorCode::Internal,
    ];

    /// The stable string clients match on (the same as the serde form).
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::ValidationFailed => "validation_failed",
            ErrorCode::ActorHeaderRequired => "actor_header_required",
            ErrorCode::Unauthenticated => "unauthenticated",
            ErrorCode::ReadonlyMode => "readonly_mode",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::TokenInvalid => "token_invalid",
            ErrorCode::TokenAdminForbidden => "token_admin_forbidden",
            ErrorCode::BootstrapWriteForbidden => "bootstrap_write_forbidden",
            ErrorCode::NotFound => "not_found",
            ErrorCode::MethodNotAllowed => "method_not_allowed",
            ErrorCode::Conflict => "conflict",
            ErrorCode::WeakeningPending => "weakening_pending",
            ErrorCode::GitPlanted => "git_planted",
            ErrorCode::ProjectMissing => "project_missing",
            ErrorCode::Gone => "gone",
            ErrorCode::DslInvalid => "dsl_invalid",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::ProviderUnreachable => "provider_unreachable",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::StorageFailing => "storage_failing",
            ErrorCode::StorageFull => "storage_full",
            ErrorCode::Internal => "internal",
        }
    }

    pub fn status(self) -> StatusCode {
        match self {
            ErrorCode::BadRequest
            | ErrorCode::ValidationFailed
            | ErrorCode::ActorHeaderRequired => StatusCode::BAD_REQUEST,
            ErrorCode::Unauthenticated | ErrorCode::ReadonlyMode => StatusCode::UNAUTHORIZED,
            ErrorCode::Forbidden
            | ErrorCode::TokenInvalid
            | ErrorCode::TokenAdminForbidden
            | ErrorCode::BootstrapWriteForbidden => StatusCode::FORBIDDEN,
            ErrorCode::NotFound => StatusCode::NOT_FOUND,
            ErrorCode::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ErrorCode::Conflict
            | ErrorCode::WeakeningPending
            | ErrorCode::GitPlanted
            | ErrorCode::ProjectMissing => StatusCode::CONFLICT,
            ErrorCode::Gone => StatusCode::GONE,
            ErrorCode::DslInvalid => StatusCode::UNPROCESSABLE_ENTITY,
            ErrorCode::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::ProviderUnreachable => StatusCode::BAD_GATEWAY,
            ErrorCode::Unavailable | ErrorCode::StorageFailing => StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::StorageFull => StatusCode::INSUFFICIENT_STORAGE,
            ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<&Denial> for ErrorCode {
    /// `kaged-auth` names each refusal's code as text (it knows nothing of HTTP); this match
    /// is exhaustive, so a new `Denial` must be given a code here, and a test keeps the two
    /// spellings equal.
    fn from(denial: &Denial) -> Self {
        match denial {
            Denial::HostMissing => ErrorCode::BadRequest,
            Denial::MissingCredentials
            | Denial::InvalidLogin
            | Denial::WrongNonce
            | Denial::SidecarIdentityMissing
            | Denial::MalformedAuthorization => ErrorCode::Unauthenticated,
            Denial::ReadonlyMode => ErrorCode::ReadonlyMode,
            Denial::TokenInvalid => ErrorCode::TokenInvalid,
            Denial::TokenAdminForbidden => ErrorCode::TokenAdminForbidden,
            Denial::BootstrapWriteForbidden => ErrorCode::BootstrapWriteForbidden,
            Denial::HostNotAllowed(_)
            | Denial::MalformedHeader(_)
            | Denial::OriginNotAllowed(_)
            | Denial::CrossSite(_)
            | Denial::OriginRequired
            | Denial::Csrf
            | Denial::DaemonStopForbidden => ErrorCode::Forbidden,
        }
    }
}

/// The one error shape of the API: `{"error":{"code","message","details"?}}`, with a stable
/// `code` that maps to one HTTP status.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
    pub details: Option<serde_json::Value>,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError {
            code,
            message: message.into(),
            details: None,
        }
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Internal, message)
    }

    pub fn status(&self) -> StatusCode {
        self.code.status()
    }
}

impl From<&Denial> for ApiError {
    fn from(denial: &Denial) -> Self {
        ApiError::new(ErrorCode::from(denial), denial.to_string())
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
                ErrorCode::StorageFull,
                format!(
                    "kaged's data directory {} is full: free space there and retry",
                    dir.display()
                ),
            ),
            (Some(kaged_store::Trouble::Full), None) => ApiError::new(
                ErrorCode::StorageFull,
                format!("kaged's database has no space left ({e}): free space there and retry"),
            ),
            // Unreachable or failing (a stopped PostgreSQL): 503, and the request may be
            // retried once `/readyz` says ready again.
            (Some(kaged_store::Trouble::Failing), _) => ApiError::new(
                ErrorCode::StorageFailing,
                format!(
                    "kaged cannot use its database ({e}); kaged retries by itself: retry once \
                     `/readyz` is ready again (see `kaged status`)"
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
    fn every_code_has_one_unique_wire_string_that_serde_agrees_with() {
        let mut seen = std::collections::HashSet::new();
        for code in ErrorCode::ALL {
            assert!(seen.insert(code.as_str()), "{code:?} repeats a wire string");
            assert_eq!(
                serde_json::to_value(code).unwrap(),
                serde_json::Value::from(code.as_str()),
                "{code:?}"
            );
            assert_eq!(code.to_string(), code.as_str());
            let back: ErrorCode =
                serde_json::from_value(serde_json::Value::from(code.as_str())).unwrap();
            assert_eq!(back, code, "{} does not read back", code.as_str());
        }
        assert_eq!(seen.len(), ErrorCode::ALL.len());
    }

    /// The table `status_for_code` matched strings against before codes were typed.
    #[test]
    fn statuses_match_the_old_string_table() {
        let old = |code: &str| match code {
            "bad_request" | "validation_failed" | "actor_header_required" => {
                StatusCode::BAD_REQUEST
            }
            "unauthenticated" | "readonly_mode" => StatusCode::UNAUTHORIZED,
            "forbidden"
            | "token_invalid"
            | "token_admin_forbidden"
            | "bootstrap_write_forbidden" => StatusCode::FORBIDDEN,
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
        };
        for code in ErrorCode::ALL {
            assert_eq!(code.status(), old(code.as_str()), "{code:?}");
        }
    }

    #[test]
    fn denials_keep_the_code_kaged_auth_names() {
        let denials = [
            Denial::HostNotAllowed("h".into()),
            Denial::HostMissing,
            Denial::MalformedHeader("origin".into()),
            Denial::OriginNotAllowed("o".into()),
            Denial::CrossSite("cross-site".into()),
            Denial::OriginRequired,
            Denial::MissingCredentials,
            Denial::InvalidLogin,
            Denial::WrongNonce,
            Denial::SidecarIdentityMissing,
            Denial::MalformedAuthorization,
            Denial::ReadonlyMode,
            Denial::TokenInvalid,
            Denial::TokenAdminForbidden,
            Denial::BootstrapWriteForbidden,
            Denial::Csrf,
            Denial::DaemonStopForbidden,
        ];
        for denial in &denials {
            assert_eq!(
                ErrorCode::from(denial).as_str(),
                denial.code(),
                "{denial:?}"
            );
        }
    }

    #[tokio::test]
    async fn the_response_carries_the_wire_string_and_the_status() {
        let response = ApiError::new(ErrorCode::GitPlanted, "x").into_response();
        assert_eq!(response.status(), StatusCode::CONFLICT);
        let body = axum::body::to_bytes(response.into_body(), 4096)
            .await
            .unwrap();
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            body,
            json!({"error": {"code": "git_planted", "message": "x"}})
        );
    }
}
