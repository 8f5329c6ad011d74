//! Browser sessions created by a launch-token exchange. Kept in memory only, so a daemon restart
//! (which also rotates the nonce) invalidates every cookie.

use std::collections::HashMap;

use sha2::{Digest, Sha256};

use crate::policy::Principal;
use crate::secret::{NONCE_BYTES, Secret};

pub const SESSION_COOKIE: &str = "kaged_session";
/// Cookie lifetime: persistent across browser restarts, bounded by the daemon's lifetime anyway.
pub const SESSION_TTL_SECS: u64 = 30 * 24 * 3600;
/// Oldest sessions are dropped beyond this, so a flood of logins cannot grow memory.
const MAX_SESSIONS: usize = 1024;

#[derive(Debug, Clone)]
pub struct SessionRecord {
    pub principal: Principal,
    /// Sent back by the UI in the `X-Kaged-CSRF` header on state-changing requests.
    pub csrf: Secret,
    pub created_at: u64,
    pub expires_at: u64,
}

/// Sessions keyed by the SHA-256 of the cookie value: lookup by hash means the comparison never
/// touches the secret byte by byte, and the table never holds a usable cookie.
#[derive(Debug, Default)]
pub struct SessionTable {
    sessions: HashMap<[u8; 32], SessionRecord>,
}

fn key(cookie_value: &str) -> [u8; 32] {
    Sha256::digest(cookie_value.as_bytes()).into()
}

impl SessionTable {
    /// Create a session; returns the cookie value to set.
    pub fn create(
        &mut self,
        cookie_bytes: [u8; NONCE_BYTES],
        csrf_bytes: [u8; NONCE_BYTES],
        principal: Principal,
        now: u64,
    ) -> (Secret, SessionRecord) {
        self.sessions.retain(|_, s| s.expires_at > now);
        if self.sessions.len() >= MAX_SESSIONS
            && let Some(oldest) = self
                .sessions
                .iter()
                .min_by_key(|(_, s)| s.created_at)
                .map(|(k, _)| *k)
        {
            self.sessions.remove(&oldest);
        }
        let cookie = Secret::from_random(cookie_bytes);
        let record = SessionRecord {
            principal,
            csrf: Secret::from_random(csrf_bytes),
            created_at: now,
            expires_at: now + SESSION_TTL_SECS,
        };
        self.sessions.insert(key(cookie.expose()), record.clone());
        (cookie, record)
    }

    pub fn lookup(&self, cookie_value: &str, now: u64) -> Option<&SessionRecord> {
        self.sessions
            .get(&key(cookie_value))
            .filter(|s| s.expires_at > now)
    }

    pub fn revoke(&mut self, cookie_value: &str) -> bool {
        self.sessions.remove(&key(cookie_value)).is_some()
    }

    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::AuthMethod;

    fn ann() -> Principal {
        Principal {
            id: "user:ann".into(),
            email: None,
            token_id: None,
            method: AuthMethod::Session,
        }
    }

    #[test]
    fn created_session_is_found_until_it_expires_or_is_revoked() {
        let mut t = SessionTable::default();
        let (cookie, rec) = t.create([1; 32], [2; 32], ann(), 100);
        assert_eq!(rec.expires_at, 100 + SESSION_TTL_SECS);
        assert!(t.lookup(cookie.expose(), 101).is_some());
        assert!(t.lookup(cookie.expose(), 100 + SESSION_TTL_SECS).is_none());
        assert!(t.lookup("forged", 101).is_none());
        assert!(t.revoke(cookie.expose()));
        assert!(t.lookup(cookie.expose(), 101).is_none());
    }

    #[test]
    fn table_is_bounded() {
        let mut t = SessionTable::default();
        let mut first = None;
        for i in 0..(MAX_SESSIONS + 5) {
            let mut b = [0u8; 32];
            b[..8].copy_from_slice(&(i as u64).to_be_bytes());
            let (c, _) = t.create(b, [0; 32], ann(), 10 + i as u64);
            first.get_or_insert(c);
        }
        assert_eq!(t.len(), MAX_SESSIONS);
        assert!(
            t.lookup(first.unwrap().expose(), 20).is_none(),
            "oldest evicted"
        );
    }
}
