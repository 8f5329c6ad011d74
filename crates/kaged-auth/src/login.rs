//! Logins: a browser's sign-in, created by a launch-token exchange and carried by a cookie. Kept
//! in memory only, so a daemon restart (which also rotates the nonce) signs every browser out.

use std::collections::HashMap;

use sha2::{Digest, Sha256};

use crate::principal::Principal;
use crate::secret::{NONCE_BYTES, Secret};

/// The login cookie's name. It predates the word "login" and is part of the published contract.
pub const LOGIN_COOKIE: &str = "kaged_session";
/// Cookie lifetime: persistent across browser restarts, bounded by the daemon's lifetime anyway.
pub const LOGIN_TTL_SECS: u64 = 30 * 24 * 3600;
/// Oldest logins are dropped beyond this, so a flood of logins cannot grow memory.
const MAX_LOGINS: usize = 1024;

/// One signed-in browser: who it is and the CSRF token its page must echo.
#[derive(Debug, Clone)]
pub struct Login {
    pub principal: Principal,
    /// Sent back by the UI in the `X-Kaged-CSRF` header on state-changing requests.
    pub csrf: Secret,
    pub created_at: u64,
    pub expires_at: u64,
}

/// Logins keyed by the SHA-256 of the cookie value: lookup by hash means the comparison never
/// touches the secret byte by byte, and the table never holds a usable cookie.
#[derive(Debug, Default)]
pub struct Logins {
    logins: HashMap<[u8; 32], Login>,
}

fn key(cookie_value: &str) -> [u8; 32] {
    Sha256::digest(cookie_value.as_bytes()).into()
}

impl Logins {
    /// Create a login; returns the cookie value to set.
    pub fn create(
        &mut self,
        cookie_bytes: [u8; NONCE_BYTES],
        csrf_bytes: [u8; NONCE_BYTES],
        principal: Principal,
        now: u64,
    ) -> (Secret, Login) {
        self.logins.retain(|_, s| s.expires_at > now);
        if self.logins.len() >= MAX_LOGINS
            && let Some(oldest) = self
                .logins
                .iter()
                .min_by_key(|(_, s)| s.created_at)
                .map(|(k, _)| *k)
        {
            self.logins.remove(&oldest);
        }
        let cookie = Secret::from_random(cookie_bytes);
        let record = Login {
            principal,
            csrf: Secret::from_random(csrf_bytes),
            created_at: now,
            expires_at: now + LOGIN_TTL_SECS,
        };
        self.logins.insert(key(cookie.expose()), record.clone());
        (cookie, record)
    }

    pub fn lookup(&self, cookie_value: &str, now: u64) -> Option<&Login> {
        self.logins
            .get(&key(cookie_value))
            .filter(|s| s.expires_at > now)
    }

    pub fn revoke(&mut self, cookie_value: &str) -> bool {
        self.logins.remove(&key(cookie_value)).is_some()
    }

    pub fn len(&self) -> usize {
        self.logins.len()
    }

    pub fn is_empty(&self) -> bool {
        self.logins.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::principal::AuthMethod;

    fn ann() -> Principal {
        Principal {
            id: "user:ann".into(),
            email: None,
            token_id: None,
            method: AuthMethod::LoginCookie,
        }
    }

    #[test]
    fn created_login_is_found_until_it_expires_or_is_revoked() {
        let mut t = Logins::default();
        let (cookie, rec) = t.create([1; 32], [2; 32], ann(), 100);
        assert_eq!(rec.expires_at, 100 + LOGIN_TTL_SECS);
        assert!(t.lookup(cookie.expose(), 101).is_some());
        assert!(t.lookup(cookie.expose(), 100 + LOGIN_TTL_SECS).is_none());
        assert!(t.lookup("forged", 101).is_none());
        assert!(t.revoke(cookie.expose()));
        assert!(t.lookup(cookie.expose(), 101).is_none());
    }

    #[test]
    fn table_is_bounded() {
        let mut t = Logins::default();
        let mut first = None;
        for i in 0..(MAX_LOGINS + 5) {
            let mut b = [0u8; 32];
            b[..8].copy_from_slice(&(i as u64).to_be_bytes());
            let (c, _) = t.create(b, [0; 32], ann(), 10 + i as u64);
            first.get_or_insert(c);
        }
        assert_eq!(t.len(), MAX_LOGINS);
        assert!(
            t.lookup(first.unwrap().expose(), 20).is_none(),
            "oldest evicted"
        );
    }
}
