//! Bearer tokens: the bootstrap token or a hash to look up, and the gates on what a token may
//! do (token administration, changes under `require_token_identity`).

use crate::denial::Denial;
use crate::policy::{Policy, is_state_changing};
use crate::principal::{AuthMethod, Principal};

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

    /// Who may mint, list and revoke tokens: the local operator (nonce or launch-URL login)
    /// and the bootstrap token. Never a user token, a sidecar identity or an insecure caller.
    pub fn may_administer_tokens(&self, principal: &Principal) -> Result<(), Denial> {
        match principal.method {
            AuthMethod::Nonce | AuthMethod::LoginCookie | AuthMethod::BootstrapToken => Ok(()),
            // A proxy asserts identity, never token administration.
            _ => Err(Denial::TokenAdminForbidden),
        }
    }

    /// Who may stop the daemon (`kaged stop`): the local operator's CLI only (the nonce proves
    /// it can read the daemon's runtime directory). Never a browser, a token or a proxy.
    pub fn may_stop_daemon(&self, principal: &Principal) -> Result<(), Denial> {
        match principal.method {
            AuthMethod::Nonce => Ok(()),
            _ => Err(Denial::DaemonStopForbidden),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::tests::policy;

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
            AuthMethod::LoginCookie,
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
        assert_eq!(p.may_stop_daemon(&who(AuthMethod::Nonce)), Ok(()));
        for no in [
            AuthMethod::LoginCookie,
            AuthMethod::BootstrapToken,
            AuthMethod::IdentityToken,
            AuthMethod::Sidecar,
            AuthMethod::Insecure,
        ] {
            assert_eq!(
                p.may_stop_daemon(&who(no)),
                Err(Denial::DaemonStopForbidden)
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
}
