//! One-time launch tokens, minted from the per-startup nonce.
//!
//! A token is `hex(expiry_be64 || id[16] || HMAC-SHA256(nonce, "kaged-launch-v1" || expiry ||
//! id)[..16])`. Anyone holding the nonce (the daemon, or `kaged auth open` reading the 0600
//! auth-cookie file) can mint one; the daemon checks the MAC in constant time, the expiry, and
//! that the id was never used before. A new daemon start means a new nonce, so old tokens die.

use std::collections::HashMap;
use std::fmt;

use hmac::digest::KeyInit;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256, Sha512};

use crate::secret::Secret;

/// Default lifetime of a launch token: long enough to switch to the browser, short enough that a
/// URL left in a scrollback is useless soon after.
pub const DEFAULT_LAUNCH_TTL_SECS: u64 = 10 * 60;
/// Tokens claiming a longer life are refused even with a valid MAC.
pub const MAX_LAUNCH_TTL_SECS: u64 = 60 * 60;

const DOMAIN: &[u8] = b"kaged-launch-v1";
const ID_BYTES: usize = 16;
const MAC_BYTES: usize = 16;
const TOKEN_BYTES: usize = 8 + ID_BYTES + MAC_BYTES;

/// The public identity of a token, safe to log (it proves nothing without the MAC).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LaunchTokenId([u8; ID_BYTES]);

impl fmt::Display for LaunchTokenId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(&self.0[..6]))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenRejection {
    #[error("the launch token is malformed")]
    Malformed,
    #[error("the launch token was not issued by this daemon start")]
    BadSignature,
    #[error("the launch token has expired")]
    Expired,
    #[error("the launch token claims a lifetime longer than allowed")]
    TooLongLived,
    #[error("the launch token was already used")]
    Reused,
}

impl TokenRejection {
    /// Stable name for the audit log.
    pub fn reason(self) -> &'static str {
        match self {
            TokenRejection::Malformed => "malformed",
            TokenRejection::BadSignature => "bad_signature",
            TokenRejection::Expired => "expired",
            TokenRejection::TooLongLived => "too_long_lived",
            TokenRejection::Reused => "reused",
        }
    }
}

fn mac(nonce: &Secret, expires_at: u64, id: &[u8; ID_BYTES]) -> Hmac<Sha256> {
    // A block-sized key (SHA-512 of the nonce) makes construction infallible.
    let key = Sha512::digest(nonce.expose().as_bytes());
    let mut m = <Hmac<Sha256> as KeyInit>::new(&key);
    m.update(DOMAIN);
    m.update(&expires_at.to_be_bytes());
    m.update(id);
    m
}

/// Mint a token valid until `expires_at` (Unix seconds).
pub fn mint_launch_token(nonce: &Secret, id: [u8; ID_BYTES], expires_at: u64) -> Secret {
    let tag = mac(nonce, expires_at, &id).finalize().into_bytes();
    let mut raw = Vec::with_capacity(TOKEN_BYTES);
    raw.extend_from_slice(&expires_at.to_be_bytes());
    raw.extend_from_slice(&id);
    raw.extend_from_slice(&tag[..MAC_BYTES]);
    Secret::new(hex::encode(raw))
}

/// Check a token's form, MAC and lifetime. Single use is [`UsedTokens::consume`]'s job.
pub fn verify_launch_token(
    nonce: &Secret,
    token: &str,
    now: u64,
) -> Result<(LaunchTokenId, u64), TokenRejection> {
    let raw = hex::decode(token).map_err(|_| TokenRejection::Malformed)?;
    if raw.len() != TOKEN_BYTES {
        return Err(TokenRejection::Malformed);
    }
    let mut exp = [0u8; 8];
    exp.copy_from_slice(&raw[..8]);
    let expires_at = u64::from_be_bytes(exp);
    let mut id = [0u8; ID_BYTES];
    id.copy_from_slice(&raw[8..8 + ID_BYTES]);
    mac(nonce, expires_at, &id)
        .verify_truncated_left(&raw[8 + ID_BYTES..])
        .map_err(|_| TokenRejection::BadSignature)?;
    if now >= expires_at {
        return Err(TokenRejection::Expired);
    }
    if expires_at - now > MAX_LAUNCH_TTL_SECS {
        return Err(TokenRejection::TooLongLived);
    }
    Ok((LaunchTokenId(id), expires_at))
}

/// Ids of tokens already exchanged, kept until they would have expired anyway.
#[derive(Debug, Default)]
pub struct UsedTokens {
    used: HashMap<LaunchTokenId, u64>,
}

impl UsedTokens {
    pub fn consume(
        &mut self,
        id: LaunchTokenId,
        expires_at: u64,
        now: u64,
    ) -> Result<(), TokenRejection> {
        self.used.retain(|_, exp| *exp > now);
        if self.used.contains_key(&id) {
            return Err(TokenRejection::Reused);
        }
        self.used.insert(id, expires_at);
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.used.len()
    }

    pub fn is_empty(&self) -> bool {
        self.used.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nonce(b: u8) -> Secret {
        Secret::from_random([b; 32])
    }

    #[test]
    fn minted_token_verifies_until_expiry() {
        let t = mint_launch_token(&nonce(1), [9; 16], 1_000);
        assert_eq!(t.expose().len(), TOKEN_BYTES * 2);
        let (id, exp) = verify_launch_token(&nonce(1), t.expose(), 999).unwrap();
        assert_eq!(exp, 1_000);
        assert_eq!(id.to_string(), "090909090909");
        assert_eq!(
            verify_launch_token(&nonce(1), t.expose(), 1_000),
            Err(TokenRejection::Expired)
        );
    }

    #[test]
    fn token_from_another_nonce_is_rejected() {
        let t = mint_launch_token(&nonce(1), [9; 16], 1_000);
        assert_eq!(
            verify_launch_token(&nonce(2), t.expose(), 10),
            Err(TokenRejection::BadSignature)
        );
    }

    #[test]
    fn tampered_expiry_breaks_the_mac() {
        let t = mint_launch_token(&nonce(1), [9; 16], 1_000);
        let mut raw = hex::decode(t.expose()).unwrap();
        raw[7] ^= 0xff;
        assert_eq!(
            verify_launch_token(&nonce(1), &hex::encode(raw), 10),
            Err(TokenRejection::BadSignature)
        );
    }

    #[test]
    fn malformed_tokens_are_rejected() {
        for bad in ["", "zz", "abcd", &"a".repeat(TOKEN_BYTES * 2 + 2)] {
            assert_eq!(
                verify_launch_token(&nonce(1), bad, 0),
                Err(TokenRejection::Malformed),
                "{bad}"
            );
        }
    }

    #[test]
    fn overlong_lifetime_is_refused() {
        let t = mint_launch_token(&nonce(1), [9; 16], 10 + MAX_LAUNCH_TTL_SECS + 1);
        assert_eq!(
            verify_launch_token(&nonce(1), t.expose(), 10),
            Err(TokenRejection::TooLongLived)
        );
    }

    #[test]
    fn tokens_are_single_use_and_forgotten_after_expiry() {
        let mut used = UsedTokens::default();
        let id = LaunchTokenId([1; 16]);
        used.consume(id, 100, 10).unwrap();
        assert_eq!(used.consume(id, 100, 20), Err(TokenRejection::Reused));
        used.consume(LaunchTokenId([2; 16]), 300, 200).unwrap();
        assert_eq!(used.len(), 1, "the expired id is pruned");
    }
}
