//! Who a caller is once authenticated: the [`Principal`] every handler receives and how it was
//! established ([`AuthMethod`]). A leaf: it depends on nothing else in this crate.

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthMethod {
    /// The browser's login cookie from a launch-token exchange. On the wire `"session"`, the
    /// name it had before "session" came to mean a run's record.
    #[serde(rename = "session")]
    LoginCookie,
    /// The per-startup nonce presented in `X-Kaged-Auth-Nonce` (the local CLI, scripts).
    Nonce,
    /// An authenticating reverse proxy vouched with the sidecar nonce and identity headers.
    Sidecar,
    /// `--insecure`: nobody was authenticated.
    Insecure,
    /// The bootstrap bearer token (`[auth] token`): administers tokens.
    BootstrapToken,
    /// A database-backed bearer token minted by `kaged tokens create`; the actor is its owner.
    IdentityToken,
    /// Arrived on a trusted-proxy listener: the actor is the proxy's header.
    TrustedProxy,
    /// `--insecure-readonly`: an unauthenticated reader.
    InsecureReadonly,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Principal {
    /// `user:<name>` of the local operator, the sidecar's user id, or `insecure`.
    pub id: String,
    pub email: Option<String>,
    /// The database token that authenticated the caller, if one did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_id: Option<i64>,
    pub method: AuthMethod,
}

/// Names kaged gives its own principals. An identity from outside (sidecar, proxy header, token
/// actor) may not take one, or the audit log could credit the operator or the bootstrap token.
pub fn is_reserved_identity(value: &str) -> bool {
    let v = value.trim().to_ascii_lowercase();
    ["bootstrap", "insecure", "anonymous"].contains(&v.as_str()) || v.starts_with("user:")
}
