//! `Secret`: a string that never prints (redacted `Debug`/`Display`) and compares in constant
//! time; built from random bytes the caller draws (nonces, login cookies, CSRF tokens).

use std::fmt;

use subtle::ConstantTimeEq;

/// Bytes of OS randomness behind every nonce, login cookie and CSRF token (256 bits).
pub const NONCE_BYTES: usize = 32;

/// A secret string (nonce, token, cookie value). `Debug` and `Display` never show it; the only
/// way to the text is [`Secret::expose`], which makes every leak a visible call.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// A hex secret from caller-supplied random bytes.
    pub fn from_random(bytes: [u8; NONCE_BYTES]) -> Self {
        Secret(hex::encode(bytes))
    }

    pub fn new(text: String) -> Self {
        Secret(text)
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Constant-time comparison (length is not secret; contents are).
    pub fn matches(&self, candidate: &str) -> bool {
        self.0.as_bytes().ct_eq(candidate.as_bytes()).into()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_print() {
        let s = Secret::from_random([7; NONCE_BYTES]);
        assert_eq!(s.expose().len(), 64);
        assert!(!format!("{s:?} {s}").contains("0707"));
    }

    #[test]
    fn matching_is_exact() {
        let s = Secret::new("abc".into());
        assert!(s.matches("abc"));
        assert!(!s.matches("abd"));
        assert!(!s.matches("ab"));
        assert!(!s.matches(""));
    }
}
