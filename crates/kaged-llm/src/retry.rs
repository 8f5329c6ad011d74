//! Retries and money, pure: the backoff before the next attempt (exponential, jittered, honouring
//! the provider's `retry-after`) and a call's cost from its usage and the operator's prices.

use std::time::Duration;

pub use kaged_config::Prices;

use crate::types::Usage;

/// How often and how patiently a failed call is tried again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included (1 = no retry).
    pub max_attempts: u32,
    /// The delay before the second attempt; it doubles for each one after.
    pub base: Duration,
    /// No delay is longer (a `retry-after` beyond it is cut to it too).
    pub max: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 4,
            base: Duration::from_millis(500),
            max: Duration::from_secs(60),
        }
    }
}

impl RetryPolicy {
    /// Whether attempt number `attempt` (1 = the first) may still be followed by another.
    pub fn may_retry(&self, attempt: u32) -> bool {
        attempt < self.max_attempts
    }

    /// The wait after failed attempt number `attempt` (1 = the first): "full jitter" over
    /// `base * 2^(attempt-1)` capped at `max` (`jitter` in 0..=1 from the caller picks the point
    /// between half and all of it), but never less than the provider's `retry_after`, and never
    /// more than `max`.
    pub fn delay(&self, attempt: u32, retry_after: Option<Duration>, jitter: f64) -> Duration {
        let exponent = attempt.saturating_sub(1).min(30);
        let ceiling = self.base.saturating_mul(1u32 << exponent).min(self.max);
        let jitter = if jitter.is_finite() {
            jitter.clamp(0.0, 1.0)
        } else {
            1.0
        };
        let backoff = ceiling.mul_f64(0.5 + 0.5 * jitter);
        backoff.max(retry_after.unwrap_or_default()).min(self.max)
    }
}

/// What `usage` cost at `prices` (per million tokens): uncached input, cached input and output.
pub fn cost(usage: &Usage, prices: &Prices) -> f64 {
    let per = |tokens: u64, price: f64| tokens as f64 * price / 1_000_000.0;
    let cached = usage.cached_tokens.min(usage.input_tokens);
    per(usage.input_tokens - cached, prices.input_per_mtok)
        + per(cached, prices.cached_per_mtok)
        + per(usage.output_tokens, prices.output_per_mtok)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_exponentially_with_jitter_and_honour_retry_after() {
        let p = RetryPolicy {
            max_attempts: 5,
            base: Duration::from_secs(1),
            max: Duration::from_secs(10),
        };
        assert_eq!(p.delay(1, None, 1.0), Duration::from_secs(1));
        assert_eq!(p.delay(1, None, 0.0), Duration::from_millis(500));
        assert_eq!(p.delay(3, None, 1.0), Duration::from_secs(4));
        assert_eq!(p.delay(3, None, 0.5), Duration::from_secs(3));
        assert_eq!(p.delay(9, None, 1.0), Duration::from_secs(10));
        assert_eq!(p.delay(40, None, 1.0), Duration::from_secs(10));
        assert_eq!(
            p.delay(1, Some(Duration::from_secs(7)), 0.0),
            Duration::from_secs(7)
        );
        assert_eq!(
            p.delay(1, Some(Duration::from_secs(70)), 0.0),
            Duration::from_secs(10)
        );
        assert_eq!(p.delay(2, None, f64::NAN), Duration::from_secs(2));
        assert!(p.may_retry(4));
        assert!(!p.may_retry(5));
    }

    #[test]
    fn cost_charges_cached_input_at_its_own_price() {
        let prices = Prices {
            input_per_mtok: 3.0,
            output_per_mtok: 15.0,
            cached_per_mtok: 0.3,
        };
        let usage = Usage {
            input_tokens: 1_000_000,
            output_tokens: 100_000,
            cached_tokens: 500_000,
        };
        let c = cost(&usage, &prices);
        assert!((c - (1.5 + 0.15 + 1.5)).abs() < 1e-9, "{c}");
        assert_eq!(cost(&Usage::default(), &prices), 0.0);
    }
}
