//! Request policy: Host allowlist (DNS rebinding), Origin and CSRF checks, and authentication.
//! The order is fixed and the same for every route and WebSocket upgrade:
//! Host -> Origin -> credentials -> CSRF (cookie credentials on state-changing requests only).

use crate::denial::Denial;
use crate::hosts::AllowedHosts;
use crate::login::Logins;
use crate::principal::{AuthMethod, Principal, is_reserved_identity};
use crate::secret::Secret;

/// Header a local script or the CLI sends with the per-startup nonce (`kaged auth nonce`).
pub const NONCE_HEADER: &str = "x-kaged-auth-nonce";
/// Header the UI echoes its login's CSRF token in.
pub const CSRF_HEADER: &str = "x-kaged-csrf";
/// Sidecar contract: the authenticated user's stable id (required) and email (optional).
pub const USER_ID_HEADER: &str = "x-kaged-user-id";
pub const USER_EMAIL_HEADER: &str = "x-kaged-user-email";
/// Longest identity value accepted from a sidecar.
const MAX_IDENTITY_LEN: usize = 256;
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

pub fn is_state_changing(method: &str) -> bool {
    !matches!(method, "GET" | "HEAD" | "OPTIONS")
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
    pub login_cookie: Option<&'a str>,
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
        logins: &Logins,
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
        let Some(cookie) = facts.login_cookie else {
            if let Mechanism::InsecureReadonly = self.mechanism {
                // Nor the audit trail: it names people, addresses and token events.
                // Transcripts are what the PTY stream shows: refused alike.
                let streams_or_admin = facts.path.starts_with("/api/v1/events")
                    || (facts.path.starts_with("/api/v1/logins/")
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
        let login = logins.lookup(cookie, now).ok_or(Denial::InvalidLogin)?;
        // Ambient credentials: state changes and WebSocket upgrades must prove they come from
        // our own page (Origin present and ours; CSRF token for non-GET).
        if is_state_changing(facts.method) || facts.websocket_upgrade {
            if facts.origin.is_none() {
                return Err(Denial::OriginRequired);
            }
            if is_state_changing(facts.method)
                && !facts.csrf_header.is_some_and(|h| login.csrf.matches(h))
            {
                return Err(Denial::Csrf);
            }
        }
        Ok(login.principal.clone())
    }
}
fn valid_identity(value: &str) -> bool {
    !value.is_empty()
        && value.len() <= MAX_IDENTITY_LEN
        && !value.chars().any(char::is_control)
        && !is_reserved_identity(value)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn policy() -> Policy {
        Policy {
            allowed: AllowedHosts::for_listeners(&["127.0.0.1:7777".parse().unwrap()], &[]),
            nonce: Secret::new("n".repeat(64)),
            mechanism: Mechanism::LaunchUrl,
            operator: "user:ann".into(),
            bootstrap_token: Some(Secret::new("b".repeat(40))),
            require_token_identity: false,
        }
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
        let who = p.authenticate(&f, &Logins::default(), 0).unwrap();
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
                p.authenticate(&f, &Logins::default(), 0),
                Err(Denial::SidecarIdentityMissing),
                "{bad:?}"
            );
        }
        // Spoofed identity headers without the nonce, or with a wrong one, are refused.
        f.user_id_header = Some("alice");
        f.nonce_header = None;
        assert_eq!(
            p.authenticate(&f, &Logins::default(), 0),
            Err(Denial::MissingCredentials)
        );
        f.nonce_header = Some("x");
        assert_eq!(
            p.authenticate(&f, &Logins::default(), 0),
            Err(Denial::WrongNonce)
        );
        // The local nonce still authenticates the local operator, ignoring identity headers.
        let local = "n".repeat(64);
        f.nonce_header = Some(&local);
        let who = p.authenticate(&f, &Logins::default(), 0).unwrap();
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
        let logins = Logins::default();
        let mut f = get("127.0.0.1:7777");
        f.path = "/api/v1/status";
        assert_eq!(
            p.authenticate(&f, &logins, 0).unwrap().method,
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
                "/api/v1/logins/0123456789abcdef0123456789abcdef/transcript",
                false,
            ),
            (
                "GET",
                "/api/v1/logins/0123456789abcdef0123456789abcdef/pty",
                true,
            ),
        ] {
            let mut f = get("127.0.0.1:7777");
            f.method = method;
            f.path = path;
            f.websocket_upgrade = ws;
            assert_eq!(
                p.authenticate(&f, &logins, 0),
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
            p.authenticate(&f, &logins, 0).unwrap().method,
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
    fn insecure_mode_lets_everyone_in_but_still_checks_host() {
        let p = Policy {
            mechanism: Mechanism::Insecure,
            ..policy()
        };
        let who = p
            .authenticate(&get("127.0.0.1:7777"), &Logins::default(), 0)
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
            .authenticate(&get("127.0.0.1:7777"), &Logins::default(), 0)
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
        let who = p.authenticate(&f, &Logins::default(), 0).unwrap();
        assert_eq!(
            (who.id.as_str(), who.method),
            ("user:ann", AuthMethod::Nonce)
        );
        f.nonce_header = Some("nope");
        assert_eq!(
            p.authenticate(&f, &Logins::default(), 0),
            Err(Denial::WrongNonce)
        );
    }

    #[test]
    fn cookie_logins_need_origin_and_csrf_for_state_changes() {
        let p = policy();
        let mut logins = Logins::default();
        let who = Principal {
            id: "user:ann".into(),
            email: None,
            token_id: None,
            method: AuthMethod::LoginCookie,
        };
        let (cookie, rec) = logins.create([1; 32], [2; 32], who.clone(), 10);
        let mut f = get("127.0.0.1:7777");
        f.login_cookie = Some(cookie.expose());
        assert_eq!(p.authenticate(&f, &logins, 11), Ok(who.clone()));

        f.method = "POST";
        assert_eq!(p.authenticate(&f, &logins, 11), Err(Denial::OriginRequired));
        f.origin = Some("http://127.0.0.1:7777");
        assert_eq!(p.authenticate(&f, &logins, 11), Err(Denial::Csrf));
        f.csrf_header = Some("wrong");
        assert_eq!(p.authenticate(&f, &logins, 11), Err(Denial::Csrf));
        f.csrf_header = Some(rec.csrf.expose());
        assert_eq!(p.authenticate(&f, &logins, 11), Ok(who.clone()));

        let mut ws = get("127.0.0.1:7777");
        ws.login_cookie = Some(cookie.expose());
        ws.websocket_upgrade = true;
        assert_eq!(
            p.authenticate(&ws, &logins, 11),
            Err(Denial::OriginRequired)
        );
        ws.origin = Some("http://127.0.0.1:7777");
        assert_eq!(p.authenticate(&ws, &logins, 11), Ok(who));

        f.login_cookie = Some("forged");
        assert_eq!(p.authenticate(&f, &logins, 11), Err(Denial::InvalidLogin));
    }
}
