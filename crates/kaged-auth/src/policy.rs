//! Request policy: Host allowlist (DNS rebinding), Origin and CSRF checks, and authentication.
//! The order is fixed and the same for every route and WebSocket upgrade:
//! Host -> Origin -> credentials -> CSRF (cookie credentials on state-changing requests only).

use std::net::{IpAddr, SocketAddr};

use serde::Serialize;

use crate::secret::Secret;
use crate::session::SessionTable;

/// Header a local script or the CLI sends with the per-startup nonce (`kaged auth nonce`).
pub const NONCE_HEADER: &str = "x-kaged-auth-nonce";
/// Header the UI echoes its session's CSRF token in.
pub const CSRF_HEADER: &str = "x-kaged-csrf";
/// Sidecar contract: the authenticated user's stable id (required) and email (optional).
pub const USER_ID_HEADER: &str = "x-kaged-user-id";
pub const USER_EMAIL_HEADER: &str = "x-kaged-user-email";
/// Longest identity value accepted from a sidecar.
const MAX_IDENTITY_LEN: usize = 256;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthMethod {
    /// Browser session cookie from a launch-token exchange.
    Session,
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

/// What a `Bearer` credential needs next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BearerCheck {
    /// It is the bootstrap token.
    Bootstrap(Principal),
    /// Look this SHA-256 up among the active database tokens.
    Lookup { token_hash: String },
}

/// Lowercase hex SHA-256: how database tokens are stored (256-bit random tokens need no KDF).
pub fn hash_token(token: &str) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// How requests are authenticated, beyond the local nonce that always works.
#[derive(Debug, Clone)]
pub enum Mechanism {
    LaunchUrl,
    Sidecar {
        nonce: Secret,
    },
    Insecure,
    /// No credential needed for plain reads; everything else authenticates as usual.
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
    InvalidSession,
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
}

impl Denial {
    pub fn code(&self) -> &'static str {
        match self {
            Denial::HostMissing => "bad_request",
            Denial::MissingCredentials
            | Denial::InvalidSession
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
            | Denial::Csrf => "forbidden",
        }
    }
}

pub fn is_state_changing(method: &str) -> bool {
    !matches!(method, "GET" | "HEAD" | "OPTIONS")
}

/// Hosts the daemon answers to. Every TCP listener's port with the loopback names (an SSH
/// tunnel or a local browser), and each listener's own literal IP (a VPN address, say) with its
/// own port only. Never a DNS name unless configured: anything else is a foreign name resolving
/// to us (DNS rebinding).
#[derive(Debug, Clone)]
pub struct AllowedHosts {
    /// `(name, port)`: lowercase names, IPv6 literals in brackets.
    pairs: Vec<(String, u16)>,
    /// Configured `[daemon] allowed_hosts`: exact `name` or `name:port` authorities (the public
    /// name a sidecar forwards), accepted in Host and in http or https Origins.
    extra: Vec<String>,
}

const LOOPBACK_NAMES: [&str; 3] = ["localhost", "127.0.0.1", "[::1]"];

impl AllowedHosts {
    /// Every TCP listener's port and specific address, plus configured public names.
    pub fn for_listeners(addrs: &[SocketAddr], extra: &[String]) -> Self {
        let mut pairs: Vec<(String, u16)> = Vec::new();
        let mut add = |name: String, port: u16| {
            if !pairs.iter().any(|(n, p)| *n == name && *p == port) {
                pairs.push((name, port));
            }
        };
        for addr in addrs {
            let port = addr.port();
            for name in LOOPBACK_NAMES {
                add(name.to_string(), port);
            }
            let ip = addr.ip();
            if !ip.is_unspecified() {
                add(
                    match ip {
                        IpAddr::V4(v4) => v4.to_string(),
                        IpAddr::V6(v6) => format!("[{v6}]"),
                    },
                    port,
                );
            }
        }
        AllowedHosts {
            pairs,
            extra: extra.iter().map(|h| h.to_ascii_lowercase()).collect(),
        }
    }

    /// `host[:port]` as in a Host header or an Origin's authority.
    pub fn allows_authority(&self, authority: &str) -> bool {
        let authority = authority.to_ascii_lowercase();
        if self.extra.contains(&authority) {
            return true;
        }
        let (name, port) = match authority.rsplit_once(':') {
            // An IPv6 literal without a port ends in ']'.
            Some((n, p)) if !p.ends_with(']') => match p.parse::<u16>() {
                Ok(p) => (n.to_string(), p),
                Err(_) => return false,
            },
            _ => (authority.clone(), 80),
        };
        self.pairs.iter().any(|(n, p)| *n == name && *p == port)
    }

    fn allows_origin(&self, origin: &str) -> bool {
        let origin = origin.to_ascii_lowercase();
        if let Some(authority) = origin.strip_prefix("https://") {
            return self.extra.iter().any(|e| *e == authority);
        }
        origin
            .strip_prefix("http://")
            .is_some_and(|authority| !authority.contains('/') && self.allows_authority(authority))
    }
}

/// The facts of a request that authentication looks at.
#[derive(Debug, Clone, Default)]
pub struct RequestFacts<'a> {
    pub method: &'a str,
    pub path: &'a str,
    /// Arrived on a Unix socket: its file mode is the boundary, and browsers cannot reach it
    /// directly, so the Host allowlist (a DNS-rebinding defence) does not apply.
    pub unix_listener: bool,
    pub host: Option<&'a str>,
    pub origin: Option<&'a str>,
    pub sec_fetch_site: Option<&'a str>,
    pub session_cookie: Option<&'a str>,
    pub nonce_header: Option<&'a str>,
    pub authorization: Option<&'a str>,
    pub user_id_header: Option<&'a str>,
    pub user_email_header: Option<&'a str>,
    pub csrf_header: Option<&'a str>,
    pub websocket_upgrade: bool,
    /// A security-relevant header (Host, Origin, Sec-Fetch-Site) that was repeated or not
    /// valid text: such a request is refused rather than read as if the header were absent.
    pub malformed_header: Option<&'a str>,
}

pub struct Policy {
    pub allowed: AllowedHosts,
    /// The per-startup nonce: mints launch tokens and authenticates the local CLI.
    pub nonce: Secret,
    pub mechanism: Mechanism,
    /// `user:<name>` of the OS user running the daemon: the operator in per-user mode.
    pub operator: String,
    /// `[auth] token`: the bootstrap bearer token.
    pub bootstrap_token: Option<Secret>,
    /// `[auth] require_token_identity`: changes need a user token, not the bootstrap token.
    pub require_token_identity: bool,
}

impl Policy {
    /// Checks every request gets, authenticated route or not.
    pub fn check_transport(&self, facts: &RequestFacts<'_>) -> Result<(), Denial> {
        if let Some(name) = facts.malformed_header {
            return Err(Denial::MalformedHeader(name.to_string()));
        }
        if !facts.unix_listener {
            let host = facts.host.ok_or(Denial::HostMissing)?;
            if !self.allowed.allows_authority(host) {
                return Err(Denial::HostNotAllowed(host.to_string()));
            }
        }
        if let Some(origin) = facts.origin
            && !self.allowed.allows_origin(origin)
        {
            return Err(Denial::OriginNotAllowed(origin.to_string()));
        }
        if let Some(site) = facts.sec_fetch_site
            && site == "cross-site"
        {
            return Err(Denial::CrossSite(site.to_string()));
        }
        Ok(())
    }

    /// Who the caller is, after [`Policy::check_transport`] passed.
    pub fn authenticate(
        &self,
        facts: &RequestFacts<'_>,
        sessions: &SessionTable,
        now: u64,
    ) -> Result<Principal, Denial> {
        if let Mechanism::Insecure = self.mechanism {
            return Ok(Principal {
                id: "insecure".into(),
                email: None,
                token_id: None,
                method: AuthMethod::Insecure,
            });
        }
        if let Some(nonce) = facts.nonce_header {
            // Headers a browser never adds by itself: no CSRF exposure.
            if let Mechanism::Sidecar { nonce: sidecar } = &self.mechanism
                && sidecar.matches(nonce)
            {
                let id = facts
                    .user_id_header
                    .map(str::trim)
                    .filter(|id| valid_identity(id))
                    .ok_or(Denial::SidecarIdentityMissing)?;
                return Ok(Principal {
                    id: id.to_string(),
                    email: facts
                        .user_email_header
                        .map(str::trim)
                        .filter(|e| valid_identity(e) && e.contains('@'))
                        .map(String::from),
                    token_id: None,
                    method: AuthMethod::Sidecar,
                });
            }
            return if self.nonce.matches(nonce) {
                Ok(Principal {
                    id: self.operator.clone(),
                    email: None,
                    token_id: None,
                    method: AuthMethod::Nonce,
                })
            } else {
                Err(Denial::WrongNonce)
            };
        }
        let Some(cookie) = facts.session_cookie else {
            if let Mechanism::InsecureReadonly = self.mechanism {
                // Nor the audit trail: it names people, addresses and token events.
                // Transcripts are what the PTY stream shows: refused alike.
                let streams_or_admin = facts.path.starts_with("/api/v1/events")
                    || (facts.path.starts_with("/api/v1/sessions/")
                        && facts.path.ends_with("/transcript"))
                    || facts.path.starts_with("/api/v1/audit")
                    || facts.path == "/api/v1/tokens"
                    || facts.path.starts_with("/api/v1/tokens/");
                return if facts.method == "GET" && !facts.websocket_upgrade && !streams_or_admin {
                    Ok(Principal {
                        id: "anonymous".into(),
                        email: None,
                        token_id: None,
                        method: AuthMethod::InsecureReadonly,
                    })
                } else {
                    Err(Denial::ReadonlyMode)
                };
            }
            return Err(Denial::MissingCredentials);
        };
        let session = sessions.lookup(cookie, now).ok_or(Denial::InvalidSession)?;
        // Ambient credentials: state changes and WebSocket upgrades must prove they come from
        // our own page (Origin present and ours; CSRF token for non-GET).
        if is_state_changing(facts.method) || facts.websocket_upgrade {
            if facts.origin.is_none() {
                return Err(Denial::OriginRequired);
            }
            if is_state_changing(facts.method)
                && !facts.csrf_header.is_some_and(|h| session.csrf.matches(h))
            {
                return Err(Denial::Csrf);
            }
        }
        Ok(session.principal.clone())
    }
}

/// The token of `Bearer <token>`. RFC 9110 (11.1, 11.4): the scheme is case-insensitive and
/// one or more SP separate it from the credentials. The token's characters are not held to
/// token68: a configured bootstrap token may hold any character, and a miss is refused anyway.
fn bearer_credentials(authorization: &str) -> Option<&str> {
    let (scheme, rest) = authorization.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    Some(rest.trim()).filter(|t| !t.is_empty())
}

impl Policy {
    /// First step for an `Authorization` header (the caller resolves `Lookup` in storage, and a
    /// miss is [`Denial::TokenInvalid`]; a storage error is an internal error, never a pass).
    pub fn check_bearer(&self, authorization: &str) -> Result<BearerCheck, Denial> {
        let token = bearer_credentials(authorization).ok_or(Denial::MalformedAuthorization)?;
        if let Some(bootstrap) = &self.bootstrap_token
            && bootstrap.matches(token)
        {
            return Ok(BearerCheck::Bootstrap(Principal {
                id: "bootstrap".into(),
                email: None,
                token_id: None,
                method: AuthMethod::BootstrapToken,
            }));
        }
        Ok(BearerCheck::Lookup {
            token_hash: hash_token(token),
        })
    }

    /// Who may mint, list and revoke tokens: the local operator (nonce or launch-URL session)
    /// and the bootstrap token. Never a user token, a sidecar identity or an insecure caller.
    pub fn may_administer_tokens(&self, principal: &Principal) -> Result<(), Denial> {
        match principal.method {
            AuthMethod::Nonce | AuthMethod::Session | AuthMethod::BootstrapToken => Ok(()),
            // A proxy asserts identity, never token administration.
            _ => Err(Denial::TokenAdminForbidden),
        }
    }

    /// Changes outside token administration, under `require_token_identity`.
    pub fn check_change(
        &self,
        principal: &Principal,
        method: &str,
        path: &str,
    ) -> Result<(), Denial> {
        let token_admin = path == "/api/v1/tokens" || path.starts_with("/api/v1/tokens/");
        if self.require_token_identity
            && principal.method == AuthMethod::BootstrapToken
            && is_state_changing(method)
            && !token_admin
        {
            return Err(Denial::BootstrapWriteForbidden);
        }
        Ok(())
    }
}

fn valid_identity(value: &str) -> bool {
    !value.is_empty()
        && value.len() <= MAX_IDENTITY_LEN
        && !value.chars().any(char::is_control)
        && !is_reserved_identity(value)
}

/// Names kaged gives its own principals. An identity from outside (sidecar, proxy header, token
/// actor) may not take one, or the audit log could credit the operator or the bootstrap token.
pub fn is_reserved_identity(value: &str) -> bool {
    let v = value.trim().to_ascii_lowercase();
    ["bootstrap", "insecure", "anonymous"].contains(&v.as_str()) || v.starts_with("user:")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Policy {
        Policy {
            allowed: AllowedHosts::for_listeners(&["127.0.0.1:7777".parse().unwrap()], &[]),
            nonce: Secret::new("n".repeat(64)),
            mechanism: Mechanism::LaunchUrl,
            operator: "user:ann".into(),
            bootstrap_token: Some(Secret::new("b".repeat(40))),
            require_token_identity: false,
        }
    }

    #[test]
    fn bearer_tokens_split_into_bootstrap_and_lookup() {
        let p = policy();
        let boot = format!("Bearer {}", "b".repeat(40));
        match p.check_bearer(&boot).unwrap() {
            BearerCheck::Bootstrap(who) => assert_eq!(who.method, AuthMethod::BootstrapToken),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            p.check_bearer("Bearer secret").unwrap(),
            BearerCheck::Lookup {
                token_hash: "2bb80d537b1da3e38bd30361aa855686bde0eacd7162fef6a25fe97bf527a25b"
                    .into()
            }
        );
        // The scheme is case-insensitive and any run of spaces may follow it (RFC 9110).
        for same in [
            "Bearer secret",
            "bearer secret",
            "BEARER secret",
            "bEaReR secret",
            "Bearer   secret",
            "bearer  secret ",
        ] {
            assert_eq!(
                p.check_bearer(same).unwrap(),
                p.check_bearer("Bearer secret").unwrap(),
                "{same}"
            );
        }
        for bad in [
            "secret",
            "Bearer",
            "Bearer ",
            "Bearer    ",
            "Bearersecret",
            "Bearer\tsecret",
            "Basic abc",
            "Bearerx secret",
            " Bearer secret",
        ] {
            assert_eq!(
                p.check_bearer(bad),
                Err(Denial::MalformedAuthorization),
                "{bad}"
            );
        }
        assert_eq!(Denial::MalformedAuthorization.code(), "unauthenticated");
        assert_eq!(Denial::TokenInvalid.code(), "token_invalid");
    }

    #[test]
    fn token_admin_and_identity_mode_gates() {
        let mut p = policy();
        let who = |method| Principal {
            id: "x".into(),
            email: None,
            token_id: None,
            method,
        };
        for ok in [
            AuthMethod::Nonce,
            AuthMethod::Session,
            AuthMethod::BootstrapToken,
        ] {
            assert_eq!(p.may_administer_tokens(&who(ok)), Ok(()));
        }
        for no in [
            AuthMethod::IdentityToken,
            AuthMethod::Sidecar,
            AuthMethod::Insecure,
        ] {
            assert_eq!(
                p.may_administer_tokens(&who(no)),
                Err(Denial::TokenAdminForbidden)
            );
        }
        let boot = who(AuthMethod::BootstrapToken);
        assert_eq!(p.check_change(&boot, "POST", "/api/v1/auth/logout"), Ok(()));
        p.require_token_identity = true;
        assert_eq!(
            p.check_change(&boot, "POST", "/api/v1/auth/logout"),
            Err(Denial::BootstrapWriteForbidden)
        );
        assert_eq!(p.check_change(&boot, "GET", "/api/v1/status"), Ok(()));
        assert_eq!(p.check_change(&boot, "POST", "/api/v1/tokens"), Ok(()));
        assert_eq!(
            p.check_change(
                &who(AuthMethod::IdentityToken),
                "POST",
                "/api/v1/auth/logout"
            ),
            Ok(())
        );
    }

    fn sidecar_policy() -> Policy {
        Policy {
            allowed: AllowedHosts::for_listeners(
                &["127.0.0.1:7777".parse().unwrap()],
                &["kaged.example.com".into()],
            ),
            mechanism: Mechanism::Sidecar {
                nonce: Secret::new("s".repeat(64)),
            },
            ..policy()
        }
    }

    #[test]
    fn sidecar_nonce_with_user_id_authenticates_that_user() {
        let p = sidecar_policy();
        let s = "s".repeat(64);
        let mut f = get("kaged.example.com");
        f.nonce_header = Some(&s);
        f.user_id_header = Some("alice");
        f.user_email_header = Some("alice@example.com");
        let who = p.authenticate(&f, &SessionTable::default(), 0).unwrap();
        assert_eq!(who.id, "alice");
        assert_eq!(who.email.as_deref(), Some("alice@example.com"));
        assert_eq!(who.method, AuthMethod::Sidecar);
        // The identity is required; a blank, control-character or reserved id is no identity.
        for bad in [
            None,
            Some(""),
            Some("  "),
            Some("a\u{7}b"),
            Some("bootstrap"),
            Some("user:root"),
        ] {
            f.user_id_header = bad;
            assert_eq!(
                p.authenticate(&f, &SessionTable::default(), 0),
                Err(Denial::SidecarIdentityMissing),
                "{bad:?}"
            );
        }
        // Spoofed identity headers without the nonce, or with a wrong one, are refused.
        f.user_id_header = Some("alice");
        f.nonce_header = None;
        assert_eq!(
            p.authenticate(&f, &SessionTable::default(), 0),
            Err(Denial::MissingCredentials)
        );
        f.nonce_header = Some("x");
        assert_eq!(
            p.authenticate(&f, &SessionTable::default(), 0),
            Err(Denial::WrongNonce)
        );
        // The local nonce still authenticates the local operator, ignoring identity headers.
        let local = "n".repeat(64);
        f.nonce_header = Some(&local);
        let who = p.authenticate(&f, &SessionTable::default(), 0).unwrap();
        assert_eq!(
            (who.id.as_str(), who.method),
            ("user:ann", AuthMethod::Nonce)
        );
    }

    #[test]
    fn configured_public_names_are_allowed_as_host_and_https_origin() {
        let p = sidecar_policy();
        let mut f = get("kaged.example.com");
        f.origin = Some("https://kaged.example.com");
        assert_eq!(p.check_transport(&f), Ok(()));
        f.origin = Some("https://evil.example.com");
        assert!(p.check_transport(&f).is_err());
        assert!(p.check_transport(&get("kaged.example.com:8080")).is_err());
        // https is never assumed for the loopback names.
        let mut f = get("127.0.0.1:7777");
        f.origin = Some("https://127.0.0.1:7777");
        assert!(p.check_transport(&f).is_err());
    }

    #[test]
    fn insecure_readonly_allows_plain_reads_only() {
        let p = Policy {
            mechanism: Mechanism::InsecureReadonly,
            ..policy()
        };
        let sessions = SessionTable::default();
        let mut f = get("127.0.0.1:7777");
        f.path = "/api/v1/status";
        assert_eq!(
            p.authenticate(&f, &sessions, 0).unwrap().method,
            AuthMethod::InsecureReadonly
        );
        for (method, path, ws) in [
            ("POST", "/api/v1/auth/logout", false),
            ("HEAD", "/api/v1/status", false),
            ("GET", "/api/v1/tokens", false),
            ("GET", "/api/v1/audit", false),
            ("GET", "/api/v1/events", true),
            (
                "GET",
                "/api/v1/sessions/0123456789abcdef0123456789abcdef/transcript",
                false,
            ),
            (
                "GET",
                "/api/v1/sessions/0123456789abcdef0123456789abcdef/pty",
                true,
            ),
        ] {
            let mut f = get("127.0.0.1:7777");
            f.method = method;
            f.path = path;
            f.websocket_upgrade = ws;
            assert_eq!(
                p.authenticate(&f, &sessions, 0),
                Err(Denial::ReadonlyMode),
                "{method} {path}"
            );
        }
        // A real credential still works as usual.
        let n = "n".repeat(64);
        let mut f = get("127.0.0.1:7777");
        f.method = "POST";
        f.nonce_header = Some(&n);
        assert_eq!(
            p.authenticate(&f, &sessions, 0).unwrap().method,
            AuthMethod::Nonce
        );
    }

    #[test]
    fn unix_listeners_skip_the_host_check_but_not_the_origin_check() {
        let p = policy();
        let mut f = get("anything.example");
        f.unix_listener = true;
        assert_eq!(p.check_transport(&f), Ok(()));
        f.origin = Some("http://evil.example");
        assert!(p.check_transport(&f).is_err());
    }

    #[test]
    fn several_listeners_share_one_allowlist() {
        let a = AllowedHosts::for_listeners(
            &[
                "127.0.0.1:7001".parse().unwrap(),
                "100.64.0.2:7002".parse().unwrap(),
            ],
            &[],
        );
        assert!(a.allows_authority("localhost:7001"));
        assert!(a.allows_authority("100.64.0.2:7002"));
        assert!(!a.allows_authority("localhost:7003"));
    }

    #[test]
    fn insecure_mode_lets_everyone_in_but_still_checks_host() {
        let p = Policy {
            mechanism: Mechanism::Insecure,
            ..policy()
        };
        let who = p
            .authenticate(&get("127.0.0.1:7777"), &SessionTable::default(), 0)
            .unwrap();
        assert_eq!(who.method, AuthMethod::Insecure);
        assert!(p.check_transport(&get("evil.example:7777")).is_err());
    }

    fn get(host: &str) -> RequestFacts<'_> {
        RequestFacts {
            method: "GET",
            host: Some(host),
            ..Default::default()
        }
    }

    #[test]
    fn host_allowlist_accepts_loopback_names_on_our_port_only() {
        let p = policy();
        for ok in [
            "127.0.0.1:7777",
            "localhost:7777",
            "LOCALHOST:7777",
            "[::1]:7777",
        ] {
            assert_eq!(p.check_transport(&get(ok)), Ok(()), "{ok}");
        }
        for bad in [
            "evil.example:7777",
            "127.0.0.1:7778",
            "localhost",
            "127.0.0.1.nip.io:7777",
            "sub.localhost:7777",
            "127.0.0.1:x",
            "[::1]",
        ] {
            assert_eq!(
                p.check_transport(&get(bad)),
                Err(Denial::HostNotAllowed(bad.into())),
                "{bad}"
            );
        }
        let mut f = get("x");
        f.host = None;
        assert_eq!(p.check_transport(&f), Err(Denial::HostMissing));
        let mut f = get("127.0.0.1:7777");
        f.malformed_header = Some("origin");
        assert_eq!(
            p.check_transport(&f),
            Err(Denial::MalformedHeader("origin".into()))
        );
    }

    #[test]
    fn bound_vpn_address_is_allowed_as_host_with_its_port_only() {
        let hosts = |addrs: &[&str], extra: &[&str]| {
            let addrs: Vec<SocketAddr> = addrs.iter().map(|a| a.parse().unwrap()).collect();
            let extra: Vec<String> = extra.iter().map(|e| e.to_string()).collect();
            AllowedHosts::for_listeners(&addrs, &extra)
        };
        let vpn = hosts(&["100.64.7.7:7777"], &[]);
        let vpn6 = hosts(&["[fd7a:115c:a1e0::7]:7777"], &[]);
        let two = hosts(&["127.0.0.1:7001", "100.64.7.7:7002"], &[]);
        let named = hosts(&["100.64.7.7:7777"], &["kaged.tailnet.example:7777"]);
        let wildcard = hosts(&["0.0.0.0:7777"], &[]);
        let other_loopback = hosts(&["127.0.0.2:7777"], &[]);
        let cases: &[(&AllowedHosts, &str, bool)] = &[
            (&vpn, "100.64.7.7:7777", true),
            (&vpn, "100.64.7.7:7778", false),
            (&vpn, "100.64.7.7", false),
            (&vpn, "100.64.7.8:7777", false),
            (&vpn, "0100.64.7.7:7777", false),
            // A DNS name that resolves to the VPN address: only when configured.
            (&vpn, "kaged.tailnet.example:7777", false),
            (&vpn, "100.64.7.7.nip.io:7777", false),
            (&named, "kaged.tailnet.example:7777", true),
            (&named, "KAGED.tailnet.example:7777", true),
            (&named, "kaged.tailnet.example:7778", false),
            // Loopback names still reach it (an SSH tunnel forwarding the port).
            (&vpn, "localhost:7777", true),
            (&vpn, "127.0.0.1:7777", true),
            (&vpn6, "[fd7a:115c:a1e0::7]:7777", true),
            (&vpn6, "[FD7A:115C:A1E0::7]:7777", true),
            (&vpn6, "[fd7a:115c:a1e0::8]:7777", false),
            (&vpn6, "[fd7a:115c:a1e0::7]", false),
            // Each listener's own address goes with its own port; loopback names with every port.
            (&two, "100.64.7.7:7002", true),
            (&two, "100.64.7.7:7001", false),
            (&two, "localhost:7001", true),
            (&two, "localhost:7002", true),
            (&two, "localhost:7003", false),
            (&wildcard, "0.0.0.0:7777", false),
            (&wildcard, "127.0.0.1:7777", true),
            // The launch URL of a bind to another loopback address names that address.
            (&other_loopback, "127.0.0.2:7777", true),
        ];
        for (allowed, host, want) in cases {
            assert_eq!(
                allowed.allows_authority(host),
                *want,
                "{host} for {allowed:?}"
            );
        }
        // The UI's Origin on the VPN address passes; the same address on https does not.
        assert!(vpn.allows_origin("http://100.64.7.7:7777"));
        assert!(!vpn.allows_origin("https://100.64.7.7:7777"));
        assert!(!vpn.allows_origin("http://100.64.7.7:7778"));
    }

    #[test]
    fn foreign_null_and_malformed_origins_are_refused() {
        let p = policy();
        for bad in [
            "http://evil.example",
            "null",
            "https://127.0.0.1:7777",
            "http://127.0.0.1:7777/path",
            "http://localhost:9999",
        ] {
            let mut f = get("127.0.0.1:7777");
            f.origin = Some(bad);
            assert_eq!(
                p.check_transport(&f),
                Err(Denial::OriginNotAllowed(bad.into())),
                "{bad}"
            );
        }
        let mut f = get("127.0.0.1:7777");
        f.origin = Some("http://localhost:7777");
        assert_eq!(p.check_transport(&f), Ok(()));
        f.sec_fetch_site = Some("cross-site");
        assert_eq!(p.check_transport(&f).unwrap_err().code(), "forbidden");
    }

    #[test]
    fn no_credentials_is_unauthenticated() {
        let p = policy();
        let e = p
            .authenticate(&get("127.0.0.1:7777"), &SessionTable::default(), 0)
            .unwrap_err();
        assert_eq!(
            (e.clone(), e.code()),
            (Denial::MissingCredentials, "unauthenticated")
        );
    }

    #[test]
    fn nonce_header_authenticates_the_operator_in_constant_time() {
        let p = policy();
        let n = "n".repeat(64);
        let mut f = get("127.0.0.1:7777");
        f.nonce_header = Some(&n);
        let who = p.authenticate(&f, &SessionTable::default(), 0).unwrap();
        assert_eq!(
            (who.id.as_str(), who.method),
            ("user:ann", AuthMethod::Nonce)
        );
        f.nonce_header = Some("nope");
        assert_eq!(
            p.authenticate(&f, &SessionTable::default(), 0),
            Err(Denial::WrongNonce)
        );
    }

    #[test]
    fn cookie_sessions_need_origin_and_csrf_for_state_changes() {
        let p = policy();
        let mut sessions = SessionTable::default();
        let who = Principal {
            id: "user:ann".into(),
            email: None,
            token_id: None,
            method: AuthMethod::Session,
        };
        let (cookie, rec) = sessions.create([1; 32], [2; 32], who.clone(), 10);
        let mut f = get("127.0.0.1:7777");
        f.session_cookie = Some(cookie.expose());
        assert_eq!(p.authenticate(&f, &sessions, 11), Ok(who.clone()));

        f.method = "POST";
        assert_eq!(
            p.authenticate(&f, &sessions, 11),
            Err(Denial::OriginRequired)
        );
        f.origin = Some("http://127.0.0.1:7777");
        assert_eq!(p.authenticate(&f, &sessions, 11), Err(Denial::Csrf));
        f.csrf_header = Some("wrong");
        assert_eq!(p.authenticate(&f, &sessions, 11), Err(Denial::Csrf));
        f.csrf_header = Some(rec.csrf.expose());
        assert_eq!(p.authenticate(&f, &sessions, 11), Ok(who.clone()));

        let mut ws = get("127.0.0.1:7777");
        ws.session_cookie = Some(cookie.expose());
        ws.websocket_upgrade = true;
        assert_eq!(
            p.authenticate(&ws, &sessions, 11),
            Err(Denial::OriginRequired)
        );
        ws.origin = Some("http://127.0.0.1:7777");
        assert_eq!(p.authenticate(&ws, &sessions, 11), Ok(who));

        f.session_cookie = Some("forged");
        assert_eq!(
            p.authenticate(&f, &sessions, 11),
            Err(Denial::InvalidSession)
        );
    }
}
