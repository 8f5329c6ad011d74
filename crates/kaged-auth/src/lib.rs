//! Who is calling, decided without I/O.
//!
//! The server hands this crate the facts of a request (method, Host, Origin, cookie, headers) and
//! gets back a [`Principal`] or a typed [`Denial`]. Randomness comes from the caller as bytes so
//! every rule is testable on data. Secrets are [`Secret`]s: redacted when printed, compared in
//! constant time.

mod launch;
mod network;
mod policy;
mod secret;
mod session;

pub use launch::{
    DEFAULT_LAUNCH_TTL_SECS, LaunchTokenId, MAX_LAUNCH_TTL_SECS, TokenRejection, UsedTokens,
    mint_launch_token, verify_launch_token,
};
pub use network::{
    Exposure, ListenerAuth, ListenerRefusal, check_bearer_target, check_listener, is_non_public,
};
pub use policy::{
    AllowedHosts, AuthMethod, BearerCheck, CSRF_HEADER, Denial, Mechanism, NONCE_HEADER, Policy,
    Principal, RequestFacts, USER_EMAIL_HEADER, USER_ID_HEADER, hash_token, is_reserved_identity,
    is_state_changing,
};
pub use secret::{NONCE_BYTES, Secret};
pub use session::{SESSION_COOKIE, SESSION_TTL_SECS, SessionRecord, SessionTable};
