//! Why a request was refused: [`Denial`], with the stable API error code of each reason.

/// Why a request was refused. `code()` is the stable API error code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Denial {
    #[error("Host header {0:?} is not one this daemon answers to (possible DNS rebinding)")]
    HostNotAllowed(String),
    #[error("the request has no Host header")]
    HostMissing,
    #[error("the {0} header is repeated or not valid text")]
    MalformedHeader(String),
    #[error("cross-origin request refused (Origin {0:?})")]
    OriginNotAllowed(String),
    #[error("cross-site request refused (Sec-Fetch-Site: {0})")]
    CrossSite(String),
    #[error("this request must carry an Origin header from the kaged UI")]
    OriginRequired,
    #[error("not signed in: run `kaged auth open` for a fresh launch URL")]
    MissingCredentials,
    #[error(
        "the session is not valid (expired, signed out, or from an earlier daemon start): run `kaged auth open`"
    )]
    InvalidLogin,
    #[error("the X-Kaged-Auth-Nonce header does not match this daemon's nonce")]
    WrongNonce,
    #[error(
        "the sidecar did not send a valid X-Kaged-User-Id header (required, at most 256 printable characters)"
    )]
    SidecarIdentityMissing,
    #[error("the Authorization header must be `Bearer <token>`")]
    MalformedAuthorization,
    #[error(
        "changes, the event stream and token administration require authentication; kaged is in --insecure-readonly mode"
    )]
    ReadonlyMode,
    #[error("the bearer token is not valid (unknown or revoked)")]
    TokenInvalid,
    #[error(
        "token administration needs the bootstrap token or the local operator (kaged tokens … on the daemon's host)"
    )]
    TokenAdminForbidden,
    #[error(
        "the bootstrap token cannot make changes while require_token_identity is on; use a user token from `kaged tokens create`"
    )]
    BootstrapWriteForbidden,
    #[error("missing or wrong X-Kaged-CSRF header on a state-changing request")]
    Csrf,
    #[error(
        "only the local operator can stop the daemon: run `kaged stop` on the daemon's host, as its user"
    )]
    DaemonStopForbidden,
}

impl Denial {
    pub fn code(&self) -> &'static str {
        match self {
            Denial::HostMissing => "bad_request",
            Denial::MissingCredentials
            | Denial::InvalidLogin
            | Denial::WrongNonce
            | Denial::SidecarIdentityMissing
            | Denial::MalformedAuthorization => "unauthenticated",
            Denial::ReadonlyMode => "readonly_mode",
            Denial::TokenInvalid => "token_invalid",
            Denial::TokenAdminForbidden => "token_admin_forbidden",
            Denial::BootstrapWriteForbidden => "bootstrap_write_forbidden",
            Denial::HostNotAllowed(_)
            | Denial::MalformedHeader(_)
            | Denial::OriginNotAllowed(_)
            | Denial::CrossSite(_)
            | Denial::OriginRequired
            | Denial::Csrf
            | Denial::DaemonStopForbidden => "forbidden",
        }
    }
}
