//! `LlmError`: why a model call failed, whether trying again may help, and the shortening that
//! keeps a provider's bad line readable in an error.

use std::time::Duration;

/// Why a model call failed. No variant ever holds the provider key.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LlmError {
    /// The provider answered with a non-2xx status before streaming.
    #[error("the provider answered HTTP {status}: {message}")]
    Http {
        status: u16,
        message: String,
        /// From `retry-after` (seconds) or `retry-after-ms`.
        retry_after: Option<Duration>,
    },
    /// No response headers within [`crate::Timeouts::request`].
    #[error("the provider did not answer within the request timeout")]
    Timeout,
    /// The stream went quiet for longer than [`crate::Timeouts::stall`].
    #[error("the provider's stream stalled (nothing received within the stall timeout)")]
    Stalled,
    /// The stream broke the protocol: malformed SSE or JSON (the offending line, shortened).
    #[error("the provider's stream is malformed: {0}")]
    Protocol(String),
    /// The provider reported an error in the stream (`error` event, `response.failed`, …).
    #[error("the provider reported {kind}: {message}")]
    Provider { kind: String, message: String },
    /// The connection could not be made (DNS, TCP, TLS).
    #[error("cannot reach the provider: {0}")]
    Connect(String),
    /// The connection closed before the answer finished.
    #[error("the connection to the provider closed before the answer finished: {0}")]
    Cut(String),
    /// The request could not be built or the HTTP client could not start.
    #[error("cannot send the request: {0}")]
    Request(String),
}

impl LlmError {
    /// Whether trying the same request again (after [`crate::RetryPolicy::delay`]) may succeed:
    /// 408, 409, 429 and 5xx answers, the provider saying it is overloaded, rate limited or had
    /// a server error, connection failures and request timeouts. A stall or a cut stream is not
    /// (part of the answer was already delivered; the caller decides).
    pub fn is_retryable(&self) -> bool {
        match self {
            LlmError::Http { status, .. } => {
                matches!(status, 408 | 409 | 429) || (500..600).contains(status)
            }
            LlmError::Provider { kind, .. } => {
                if let Ok(code) = kind.parse::<u16>() {
                    return code == 429 || (500..600).contains(&code);
                }
                let kind = kind.to_ascii_lowercase();
                [
                    "overloaded",
                    "rate_limit",
                    "server_error",
                    "api_error",
                    "unavailable",
                ]
                .iter()
                .any(|k| kind.contains(k))
            }
            LlmError::Connect(_) | LlmError::Timeout => true,
            LlmError::Stalled | LlmError::Protocol(_) | LlmError::Cut(_) | LlmError::Request(_) => {
                false
            }
        }
    }

    /// The provider's `retry-after`, when it gave one.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            LlmError::Http { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

/// At most `max` characters of `text` (on a character boundary), marked when cut.
pub(crate) fn shorten(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((at, _)) => format!("{}… ({} bytes)", &text[..at], text.len()),
        None => text.to_string(),
    }
}

/// A protocol error quoting the offending line.
pub(crate) fn protocol(problem: &str, line: &str) -> LlmError {
    LlmError::Protocol(format!("{problem}: {:?}", shorten(line, 200)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retryable_errors_are_the_transient_ones() {
        let http = |status| LlmError::Http {
            status,
            message: String::new(),
            retry_after: None,
        };
        assert!(http(429).is_retryable());
        assert!(http(503).is_retryable());
        assert!(http(529).is_retryable());
        assert!(!http(400).is_retryable());
        assert!(!http(401).is_retryable());
        let provider = |kind: &str| LlmError::Provider {
            kind: kind.into(),
            message: String::new(),
        };
        assert!(provider("overloaded_error").is_retryable());
        assert!(!provider("invalid_request_error").is_retryable());
        assert!(provider("502").is_retryable());
        assert!(!provider("400").is_retryable());
        assert!(LlmError::Connect("refused".into()).is_retryable());
        assert!(!LlmError::Stalled.is_retryable());
        assert!(!LlmError::Protocol("x".into()).is_retryable());
    }

    #[test]
    fn long_lines_are_shortened_on_a_character_boundary() {
        assert_eq!(shorten("abc", 5), "abc");
        let long = "é".repeat(300);
        let short = shorten(&long, 200);
        assert!(short.starts_with(&"é".repeat(200)));
        assert!(short.ends_with("… (600 bytes)"), "{short}");
    }
}
