//! A token bucket per key, for audit records something outside the operator's hands can cause
//! over and over (a run rewriting its project file, a client failing to authenticate, kill
//! requests): a burst passes, then one per interval; what is held back is counted and handed
//! back with the next record that passes, or once the key has gone quiet. Pure: time comes in
//! as an argument.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, Instant};

/// Whether a record goes through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Record it; `suppressed` were held back before it (say so first).
    Record { suppressed: u64 },
    /// Hold it back (it is counted).
    Suppress,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: u32,
    /// When the tokens were last topped up.
    at: Instant,
    suppressed: u64,
}

/// Token buckets keyed by `K`, at most `max_keys` of them; keys beyond share one bucket.
#[derive(Debug)]
pub struct Throttle<K> {
    burst: u32,
    every: Duration,
    max_keys: usize,
    buckets: HashMap<K, Bucket>,
    overflow: Option<Bucket>,
}

impl<K: Eq + Hash + Clone> Throttle<K> {
    /// `burst` records at once (at least one), then one per `every`.
    pub fn new(burst: u32, every: Duration, max_keys: usize) -> Self {
        Throttle {
            burst: burst.max(1),
            every,
            max_keys,
            buckets: HashMap::new(),
            overflow: None,
        }
    }

    pub fn check(&mut self, key: &K, now: Instant) -> Verdict {
        let (burst, every) = (self.burst, self.every);
        let fresh = Bucket {
            tokens: burst,
            at: now,
            suppressed: 0,
        };
        let bucket = if let Some(bucket) = self.buckets.get_mut(key) {
            bucket
        } else if self.buckets.len() < self.max_keys {
            self.buckets.entry(key.clone()).or_insert(fresh)
        } else {
            self.overflow.get_or_insert(fresh)
        };
        refill(bucket, burst, every, now);
        if bucket.tokens == 0 {
            bucket.suppressed += 1;
            return Verdict::Suppress;
        }
        bucket.tokens -= 1;
        Verdict::Record {
            suppressed: std::mem::take(&mut bucket.suppressed),
        }
    }

    /// Forgets keys whose bucket has filled up again (quiet for `burst × every`), so memory
    /// follows what is active; returns those that still had records held back (`None`: the
    /// shared bucket of keys beyond `max_keys`).
    pub fn quiet(&mut self, now: Instant) -> Vec<(Option<K>, u64)> {
        let (burst, every) = (self.burst, self.every);
        let mut held = Vec::new();
        self.buckets.retain(|key, bucket| {
            refill(bucket, burst, every, now);
            if bucket.tokens < burst {
                return true;
            }
            if bucket.suppressed > 0 {
                held.push((Some(key.clone()), bucket.suppressed));
            }
            false
        });
        if let Some(bucket) = &mut self.overflow {
            refill(bucket, burst, every, now);
            if bucket.tokens == burst {
                if bucket.suppressed > 0 {
                    held.push((None, bucket.suppressed));
                }
                self.overflow = None;
            }
        }
        held
    }

    /// Keys held now.
    pub fn len(&self) -> usize {
        self.buckets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }
}

fn refill(bucket: &mut Bucket, burst: u32, every: Duration, now: Instant) {
    if bucket.tokens >= burst {
        bucket.at = now;
        return;
    }
    let elapsed = now.saturating_duration_since(bucket.at);
    let earned = if every.is_zero() {
        u128::from(burst)
    } else {
        elapsed.as_nanos() / every.as_nanos()
    };
    if earned == 0 {
        return;
    }
    let earned = u32::try_from(earned).unwrap_or(u32::MAX);
    bucket.tokens = bucket.tokens.saturating_add(earned).min(burst);
    bucket.at = if bucket.tokens == burst {
        now
    } else {
        bucket.at + every * earned
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    const EVERY: Duration = Duration::from_secs(6);

    #[test]
    fn a_burst_passes_then_one_per_interval_with_the_count_held_back() {
        let t0 = Instant::now();
        let mut t = Throttle::new(3, EVERY, 10);
        for _ in 0..3 {
            assert_eq!(t.check(&"a", t0), Verdict::Record { suppressed: 0 });
        }
        for _ in 0..5 {
            assert_eq!(t.check(&"a", t0 + EVERY / 2), Verdict::Suppress);
        }
        // Another key has its own bucket.
        assert_eq!(t.check(&"b", t0), Verdict::Record { suppressed: 0 });
        assert_eq!(t.check(&"a", t0 + EVERY), Verdict::Record { suppressed: 5 });
        assert_eq!(t.check(&"a", t0 + EVERY), Verdict::Suppress);
        assert_eq!(
            t.check(&"a", t0 + EVERY * 2),
            Verdict::Record { suppressed: 1 }
        );
    }

    #[test]
    fn a_flood_passes_about_burst_plus_one_per_interval() {
        let t0 = Instant::now();
        let mut t = Throttle::new(10, EVERY, 10);
        let mut passed = 0u64;
        let mut held = 0u64;
        // 100 a second for ten minutes.
        for i in 0..60_000u32 {
            match t.check(&"k", t0 + Duration::from_millis(u64::from(i) * 10)) {
                Verdict::Record { suppressed } => {
                    passed += 1;
                    held += suppressed;
                }
                Verdict::Suppress => {}
            }
        }
        assert_eq!(passed, 10 + 600 / 6 - 1, "{passed}");
        let left: u64 = t
            .quiet(t0 + Duration::from_secs(3600))
            .iter()
            .map(|(_, n)| n)
            .sum();
        assert_eq!(passed + held + left, 60_000);
        assert!(t.is_empty());
    }

    #[test]
    fn quiet_keys_are_forgotten_and_their_held_back_counts_returned() {
        let t0 = Instant::now();
        let mut t = Throttle::new(1, EVERY, 10);
        t.check(&"a", t0);
        t.check(&"a", t0);
        t.check(&"b", t0);
        assert_eq!(t.quiet(t0 + EVERY / 2), vec![]);
        assert_eq!(t.len(), 2);
        let mut held = t.quiet(t0 + EVERY);
        held.sort();
        assert_eq!(held, vec![(Some("a"), 1)]);
        assert!(t.is_empty());
    }

    #[test]
    fn keys_beyond_the_limit_share_one_bucket() {
        let t0 = Instant::now();
        let mut t = Throttle::new(2, EVERY, 2);
        t.check(&0, t0);
        t.check(&1, t0);
        assert_eq!(t.check(&2, t0), Verdict::Record { suppressed: 0 });
        assert_eq!(t.check(&3, t0), Verdict::Record { suppressed: 0 });
        assert_eq!(t.check(&4, t0), Verdict::Suppress);
        assert_eq!(t.len(), 2);
        assert_eq!(t.quiet(t0 + EVERY * 2), vec![(None, 1)]);
    }
}
