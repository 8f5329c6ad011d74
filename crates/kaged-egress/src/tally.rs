//! Egress decisions aggregated per run, so a cage that hammers its proxy cannot flood the audit
//! trail: the first [`FULL_RECORDS`] distinct destinations are reported one record each, every
//! later decision is only counted, and counts go out as a [`Summary`] at intervals and at the
//! end. Pure: time comes in as an argument.

use std::collections::HashMap;
use std::fmt;
use std::time::{Duration, Instant};

use crate::EgressDecision;

/// Distinct destinations (decision, method, host, port) that get a record of their own.
pub const FULL_RECORDS: usize = 20;
/// Destinations a summary lists by name (the busiest); the rest are "and M others".
pub const SUMMARY_TOP: usize = 10;
/// Distinct destinations counted one by one. A cage inventing names could otherwise grow the
/// map without end; beyond this they are counted together as untracked.
pub const TRACKED: usize = 4096;
/// A summary at most this often while decisions go unreported.
pub const SUMMARY_EVERY: Duration = Duration::from_secs(60);

/// What a decision is counted under.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Destination {
    pub allowed: bool,
    pub method: String,
    pub host: String,
    pub port: u16,
}

impl Destination {
    fn of(d: &EgressDecision) -> Destination {
        Destination {
            allowed: d.allowed,
            method: d.method.clone(),
            host: d.host.clone(),
            port: d.port,
        }
    }
}

impl fmt::Display for Destination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verdict = if self.allowed { "allowed" } else { "refused" };
        // IPv6 literals are kept without brackets in decisions; put them back for display.
        if self.host.contains(':') {
            write!(f, "{verdict} {} [{}]:{}", self.method, self.host, self.port)
        } else {
            write!(f, "{verdict} {} {}:{}", self.method, self.host, self.port)
        }
    }
}

/// Decisions counted over the whole run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    pub allowed: u64,
    pub refused: u64,
    /// Decisions the proxy made but could not report (its queue was full); enforced all the
    /// same, only not counted by destination.
    pub dropped: u64,
}

/// The destinations not listed by name.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Others {
    /// Distinct destinations, as far as they were told apart (see `untracked`).
    pub destinations: u64,
    /// Decisions for them, `untracked` included.
    pub count: u64,
    /// Decisions for destinations beyond [`TRACKED`] distinct ones, not told apart.
    pub untracked: u64,
}

/// The counts so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// The last summary of the run.
    pub is_final: bool,
    pub totals: Totals,
    /// The busiest destinations, at most [`SUMMARY_TOP`], busiest first.
    pub destinations: Vec<(Destination, u64)>,
    pub others: Others,
    /// Decisions (and drops) since the previous summary.
    pub since_last: u64,
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let t = &self.totals;
        write!(
            f,
            "{}: {} allowed, {} refused",
            if self.is_final {
                "final summary"
            } else {
                "summary"
            },
            t.allowed,
            t.refused
        )?;
        if t.dropped > 0 {
            write!(f, ", {} not counted (report queue full)", t.dropped)?;
        }
        for (i, (destination, count)) in self.destinations.iter().enumerate() {
            let sep = if i == 0 { "; " } else { ", " };
            write!(f, "{sep}{destination} ×{count}")?;
        }
        let o = &self.others;
        if o.count > 0 {
            write!(f, "; and {} others ×{}", o.destinations, o.count)?;
            if o.untracked > 0 {
                write!(f, " ({} to destinations not told apart)", o.untracked)?;
            }
        }
        Ok(())
    }
}

/// The aggregate of one run's egress decisions.
#[derive(Debug)]
pub struct Tally {
    counts: HashMap<Destination, u64>,
    /// Decisions for destinations met after [`TRACKED`] distinct ones.
    untracked: u64,
    totals: Totals,
    full_records: usize,
    /// Decisions or drops since the last summary that no record carried.
    unreported: u64,
    since_last: u64,
    last_summary: Instant,
}

impl Tally {
    pub fn new(now: Instant) -> Tally {
        Tally {
            counts: HashMap::new(),
            untracked: 0,
            totals: Totals::default(),
            full_records: 0,
            unreported: 0,
            since_last: 0,
            last_summary: now,
        }
    }

    /// Counts a decision; `true` when it is to be reported in full (the first of one of the
    /// first [`FULL_RECORDS`] distinct destinations).
    pub fn observe(&mut self, d: &EgressDecision) -> bool {
        if d.allowed {
            self.totals.allowed += 1;
        } else {
            self.totals.refused += 1;
        }
        self.since_last += 1;
        let key = Destination::of(d);
        let full = if let Some(count) = self.counts.get_mut(&key) {
            *count += 1;
            false
        } else if self.counts.len() < TRACKED {
            self.counts.insert(key, 1);
            let full = self.full_records < FULL_RECORDS;
            self.full_records += usize::from(full);
            full
        } else {
            self.untracked += 1;
            false
        };
        if !full {
            self.unreported += 1;
        }
        full
    }

    /// Counts decisions the proxy could not report.
    pub fn dropped(&mut self, n: u64) {
        self.totals.dropped += n;
        self.since_last += n;
        self.unreported += n;
    }

    /// A periodic summary, when one is due: [`SUMMARY_EVERY`] has passed since the last and
    /// something since then went unreported.
    pub fn due(&mut self, now: Instant) -> Option<Summary> {
        if self.unreported == 0 || now.saturating_duration_since(self.last_summary) < SUMMARY_EVERY
        {
            return None;
        }
        self.last_summary = now;
        Some(self.summary(false))
    }

    /// The summary at the end of the run; none when there was nothing at all, or when every
    /// decision was reported in full and no summary came before (it would say nothing new).
    pub fn finish(mut self) -> Option<Summary> {
        // No summary so far leaves `since_last` at the total.
        if self.unreported == 0 && self.since_last == self.total() {
            return None;
        }
        Some(self.summary(true))
    }

    fn total(&self) -> u64 {
        self.totals.allowed + self.totals.refused + self.totals.dropped
    }

    fn summary(&mut self, is_final: bool) -> Summary {
        let mut ranked: Vec<(&Destination, u64)> =
            self.counts.iter().map(|(d, c)| (d, *c)).collect();
        ranked.sort_unstable_by(|(da, ca), (db, cb)| cb.cmp(ca).then_with(|| da.cmp(db)));
        let rest = ranked.get(SUMMARY_TOP..).unwrap_or_default();
        let others = Others {
            destinations: rest.len() as u64,
            count: rest.iter().map(|(_, c)| c).sum::<u64>() + self.untracked,
            untracked: self.untracked,
        };
        let destinations = ranked
            .iter()
            .take(SUMMARY_TOP)
            .map(|(d, c)| ((*d).clone(), *c))
            .collect();
        let since_last = self.since_last;
        self.since_last = 0;
        self.unreported = 0;
        Summary {
            is_final,
            totals: self.totals,
            destinations,
            others,
            since_last,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decision(allowed: bool, host: &str, port: u16) -> EgressDecision {
        EgressDecision {
            method: "CONNECT".into(),
            host: host.into(),
            port,
            allowed,
            reason: "why".into(),
        }
    }

    #[test]
    fn the_first_distinct_destinations_are_reported_in_full_then_only_counted() {
        let t0 = Instant::now();
        let mut tally = Tally::new(t0);
        let mut full = 0;
        for round in 0..3 {
            for i in 0..(FULL_RECORDS as u16 + 5) {
                let reported = tally.observe(&decision(false, "a.example", i));
                assert_eq!(reported, round == 0 && usize::from(i) < FULL_RECORDS, "{i}");
                full += usize::from(reported);
            }
        }
        assert_eq!(full, FULL_RECORDS);
        // The same host and port allowed is another destination, but past the first N.
        assert!(!tally.observe(&decision(true, "a.example", 0)));
        let end = tally.finish().unwrap();
        assert!(end.is_final);
        assert_eq!(
            end.totals,
            Totals {
                allowed: 1,
                refused: 3 * (FULL_RECORDS as u64 + 5),
                dropped: 0
            }
        );
        assert_eq!(end.destinations.len(), SUMMARY_TOP);
        assert!(end.destinations.iter().all(|(_, c)| *c == 3));
        let listed: u64 = end.destinations.iter().map(|(_, c)| c).sum();
        assert_eq!(
            listed + end.others.count,
            end.totals.allowed + end.totals.refused
        );
        assert_eq!(
            end.destinations.len() as u64 + end.others.destinations,
            FULL_RECORDS as u64 + 5 + 1
        );
    }

    #[test]
    fn the_busiest_destinations_come_first() {
        let mut tally = Tally::new(Instant::now());
        for (host, n) in [("quiet", 1), ("busy", 50), ("middle", 7)] {
            for _ in 0..n {
                tally.observe(&decision(false, host, 443));
            }
        }
        let end = tally.finish().unwrap();
        let order: Vec<(&str, u64)> = end
            .destinations
            .iter()
            .map(|(d, c)| (d.host.as_str(), *c))
            .collect();
        assert_eq!(order, [("busy", 50), ("middle", 7), ("quiet", 1)]);
        assert_eq!(end.others, Others::default());
        assert_eq!(
            end.to_string(),
            "final summary: 0 allowed, 58 refused; refused CONNECT busy:443 ×50, \
             refused CONNECT middle:443 ×7, refused CONNECT quiet:443 ×1"
        );
    }

    #[test]
    fn summaries_come_at_intervals_only_when_something_went_unreported() {
        let t0 = Instant::now();
        let mut tally = Tally::new(t0);
        tally.observe(&decision(true, "a", 1));
        // Reported in full: nothing to summarise, ever.
        assert_eq!(tally.due(t0 + SUMMARY_EVERY * 2), None);
        tally.observe(&decision(true, "a", 1));
        assert_eq!(tally.due(t0 + SUMMARY_EVERY / 2), None, "too early");
        let first = tally.due(t0 + SUMMARY_EVERY * 2).unwrap();
        assert!(!first.is_final);
        assert_eq!(first.since_last, 2);
        assert_eq!(tally.due(t0 + SUMMARY_EVERY * 4), None, "nothing new");
        tally.dropped(3);
        assert_eq!(
            tally.due(t0 + SUMMARY_EVERY * 2),
            None,
            "too soon after the last"
        );
        let second = tally.due(t0 + SUMMARY_EVERY * 3).unwrap();
        assert_eq!(second.totals.dropped, 3);
        assert_eq!(second.since_last, 3);
        // Nothing since: the final summary still gives the totals (a summary came before).
        let end = tally.finish().unwrap();
        assert_eq!(end.since_last, 0);
        assert_eq!(end.totals.allowed, 2);
        assert!(end.to_string().contains("3 not counted"), "{end}");
    }

    #[test]
    fn no_final_summary_when_every_decision_was_reported_in_full_or_there_were_none() {
        let t0 = Instant::now();
        assert_eq!(Tally::new(t0).finish(), None);
        let mut tally = Tally::new(t0);
        tally.observe(&decision(true, "a", 1));
        tally.observe(&decision(false, "b", 1));
        assert_eq!(tally.finish(), None);
        let mut tally = Tally::new(t0);
        tally.dropped(1);
        assert_eq!(tally.finish().unwrap().totals.dropped, 1);
    }

    #[test]
    fn invented_names_beyond_the_tracked_ones_are_counted_together() {
        let mut tally = Tally::new(Instant::now());
        let n = TRACKED + 100;
        for i in 0..n {
            tally.observe(&decision(false, &format!("h{i}.example"), 443));
        }
        assert_eq!(tally.counts.len(), TRACKED);
        let end = tally.finish().unwrap();
        assert_eq!(end.totals.refused, n as u64);
        assert_eq!(end.others.untracked, 100);
        assert_eq!(end.others.destinations, (TRACKED - SUMMARY_TOP) as u64);
        assert_eq!(end.others.count, (n - SUMMARY_TOP) as u64);
        assert_eq!(end.destinations.len(), SUMMARY_TOP);
    }

    #[test]
    fn ipv6_destinations_are_bracketed_for_display() {
        let d = Destination::of(&decision(false, "::1", 443));
        assert_eq!(d.to_string(), "refused CONNECT [::1]:443");
    }
}
