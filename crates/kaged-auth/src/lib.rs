//! Who is calling, decided without I/O.
//!
//! The server hands this crate the facts of a request (method, Host, Origin, cookie, headers) and
//! gets back a [`Principal`] or a typed [`Denial`]. Randomness comes from the caller as bytes so
//! every rule is testable on data. Secrets are [`Secret`]s: redacted when printed, compared in
//! constant time.
//!
//! A *login* is a browser's sign-in (a launch-token exchange → the `kaged_session` cookie, held
//! in [`Logins`]); "session" elsewhere in kaged means a run's durable record, never a login.

mod bearer;
mod denial;
mod hosts;
mod launch;
mod login;
mod network;
mod policy;
mod principal;
mod secret;

pub use bearer::{BearerCheck, hash_token};
pub use denial::Denial;
pub use hosts::AllowedHosts;
pub use launch::{
    DEFAULT_LAUNCH_TTL_SECS, LaunchTokenId, MAX_LAUNCH_TTL_SECS, TokenRejection, UsedTokens,
    mint_launch_token, verify_launch_token,
};
pub use login::{LOGIN_COOKIE, LOGIN_TTL_SECS, Login, Logins};
pub use network::{
    Exposure, ListenerAuth, ListenerRefusal, check_bearer_target, check_listener, is_non_public,
};
pub use policy::{
    CSRF_HEADER, Mechanism, NONCE_HEADER, Policy, RequestFacts, USER_EMAIL_HEADER, USER_ID_HEADER,
    is_state_changing,
};
pub use principal::{AuthMethod, Principal, is_reserved_identity};
pub use secret::{NONCE_BYTES, Secret};
