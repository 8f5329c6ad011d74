//! Transcript retention, decided on data: which ended sessions' transcripts to prune given
//! their sizes, ages and the limits ([`plan`]); how one transcript is capped ([`Cap`]); and
//! how a capped transcript's pieces map output offsets ([`Pieces`]).
//!
//! A capped transcript keeps its head (the first [`Cap::head`] bytes) and a tail of the
//! newest bytes in segments of [`Cap::segment`] bytes, each named by the output offset it
//! starts at. When the segments outgrow [`Cap::tail`] the oldest go. So every kept byte keeps
//! its offset (what viewers resume from), and what was dropped is one range between the head
//! and the first kept segment.

use serde::{Deserialize, Serialize};

/// `[sessions]` limits, in bytes and milliseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    pub max_total_bytes: u64,
    pub max_age_ms: i64,
}

/// A session whose transcript is kept.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Kept {
    pub id: String,
    /// `None` while the run goes on.
    pub ended_at_ms: Option<i64>,
    /// Still running in this daemon (its transcript is being written).
    pub live: bool,
    /// The transcript's size on disk.
    pub bytes: u64,
}

/// Why a transcript is pruned.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Why {
    /// Ended longer ago than `max_age_days`.
    Age,
    /// Transcripts in all were over `max_total_mb`; this was among the oldest.
    Size,
}

impl Why {
    pub fn as_str(self) -> &'static str {
        match self {
            Why::Age => "age",
            Why::Size => "size",
        }
    }
}

/// One transcript to delete.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Prune {
    pub id: String,
    pub bytes: u64,
    pub why: Why,
}

/// The transcripts to prune, oldest end first: every ended one older than the age limit,
/// then the oldest ended ones until what stays (live ones included) fits the size limit.
/// Live runs (and rows without an end) are never pruned, whatever the limits; when they
/// alone exceed the size limit everything ended goes and the total stays above it.
pub fn plan(kept: &[Kept], limits: Limits, now_ms: i64) -> Vec<Prune> {
    let mut ended: Vec<(&Kept, i64)> = kept
        .iter()
        .filter(|k| !k.live)
        .filter_map(|k| k.ended_at_ms.map(|t| (k, t)))
        .collect();
    ended.sort_by(|(a, ta), (b, tb)| ta.cmp(tb).then_with(|| a.id.cmp(&b.id)));
    let mut total: u64 = kept.iter().map(|k| k.bytes).sum();
    let mut out = Vec::new();
    for (k, ended_at) in ended {
        let why = if now_ms.saturating_sub(ended_at) > limits.max_age_ms {
            Why::Age
        } else if total > limits.max_total_bytes && k.bytes > 0 {
            Why::Size
        } else {
            continue;
        };
        total = total.saturating_sub(k.bytes);
        out.push(Prune {
            id: k.id.clone(),
            bytes: k.bytes,
            why,
        });
    }
    out
}

/// How one transcript is capped: at most `head + tail` bytes on disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cap {
    /// The first bytes of the output, always kept.
    pub head: u64,
    /// The newest bytes kept (in segments), at most.
    pub tail: u64,
    /// The size of one tail segment (a quarter of the tail): at least `tail - segment` of the
    /// newest bytes are kept.
    pub segment: u64,
}

impl Cap {
    /// The cap of `max` bytes: the first quarter for the head, the rest for the newest bytes.
    pub fn of(max: u64) -> Cap {
        let max = max.max(4);
        let head = max / 4;
        let tail = max - head;
        Cap {
            head,
            tail,
            segment: (tail / 4).max(1),
        }
    }

    /// How many of the oldest tail segments (lengths, oldest first) to delete so the rest fit
    /// the tail. The newest segment always stays.
    pub fn evict(&self, segments: &[u64]) -> usize {
        let mut total: u64 = segments.iter().sum();
        let mut n = 0;
        while n + 1 < segments.len() && total > self.tail {
            total -= segments[n];
            n += 1;
        }
        n
    }
}

/// The pieces of a transcript on disk as `(output offset, length)`, in offset order: the
/// head file, then the tail segments.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Pieces(pub Vec<(u64, u64)>);

/// One read from one piece: `len` bytes at `within` in piece `index`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PieceRead {
    pub index: usize,
    pub within: u64,
    pub len: u64,
    /// The output offset of the first byte read.
    pub at: u64,
}

impl Pieces {
    /// The end of the output (the length it had), as far as the pieces tell.
    pub fn end(&self) -> u64 {
        self.0.iter().map(|(s, l)| s + l).max().unwrap_or(0)
    }

    /// The bytes kept.
    pub fn kept(&self) -> u64 {
        self.0.iter().map(|(_, l)| l).sum()
    }

    /// The first range of offsets no piece holds (the cap dropped it), if any.
    pub fn dropped(&self) -> Option<(u64, u64)> {
        let mut at = 0;
        for &(start, len) in &self.0 {
            if start > at {
                return Some((at, start));
            }
            at = at.max(start + len);
        }
        None
    }

    /// What to read for output `[start, end)`: the kept bytes in order, skipping what was
    /// dropped.
    pub fn reads(&self, start: u64, end: u64) -> Vec<PieceRead> {
        let mut out = Vec::new();
        for (index, &(p_start, p_len)) in self.0.iter().enumerate() {
            let from = start.max(p_start);
            let to = end.min(p_start + p_len);
            if from < to {
                out.push(PieceRead {
                    index,
                    within: from - p_start,
                    len: to - from,
                    at: from,
                });
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 86_400_000;

    fn kept(id: &str, ended: Option<i64>, live: bool, bytes: u64) -> Kept {
        Kept {
            id: id.into(),
            ended_at_ms: ended,
            live,
            bytes,
        }
    }

    fn ids(p: &[Prune]) -> Vec<(&str, Why)> {
        p.iter().map(|p| (p.id.as_str(), p.why)).collect()
    }

    #[test]
    fn plan_prunes_by_age_then_oldest_first_by_size_and_never_live_runs() {
        let limits = Limits {
            max_total_bytes: 100,
            max_age_ms: 30 * DAY,
        };
        let now = 100 * DAY;
        type Case<'a> = (&'a str, Vec<Kept>, Vec<(&'a str, Why)>);
        let cases: Vec<Case> = vec![
            ("nothing kept", vec![], vec![]),
            (
                "under both limits",
                vec![
                    kept("a", Some(now - DAY), false, 40),
                    kept("b", Some(now), false, 60),
                ],
                vec![],
            ),
            (
                "too old, however small",
                vec![
                    kept("a", Some(now - 31 * DAY), false, 1),
                    kept("b", Some(now), false, 1),
                ],
                vec![("a", Why::Age)],
            ),
            (
                "exactly at the age limit stays",
                vec![kept("a", Some(now - 30 * DAY), false, 1)],
                vec![],
            ),
            (
                "over the size: oldest end first until it fits",
                vec![
                    kept("new", Some(now - 1), false, 50),
                    kept("old", Some(now - 3), false, 50),
                    kept("mid", Some(now - 2), false, 50),
                ],
                vec![("old", Why::Size)],
            ),
            (
                "over the size by a lot: several go, in order",
                vec![
                    kept("c", Some(now - 1), false, 60),
                    kept("a", Some(now - 3), false, 60),
                    kept("b", Some(now - 2), false, 60),
                ],
                vec![("a", Why::Size), ("b", Why::Size)],
            ),
            (
                "live runs count towards the total but are never pruned",
                vec![
                    kept("live", None, true, 90),
                    kept("ended", Some(now - 1), false, 20),
                ],
                vec![("ended", Why::Size)],
            ),
            (
                "a live run alone over the limit: nothing to prune",
                vec![kept("live", None, true, 500)],
                vec![],
            ),
            (
                "a row with an end that is still live in memory is not pruned",
                vec![kept("draining", Some(now - 40 * DAY), true, 500)],
                vec![],
            ),
            (
                "a row without an end (an earlier daemon's, unmarked) is never pruned",
                vec![kept("open", None, false, 500)],
                vec![],
            ),
            (
                "age first, which may bring the total under the limit",
                vec![
                    kept("ancient", Some(now - 60 * DAY), false, 80),
                    kept("recent", Some(now - 1), false, 80),
                ],
                vec![("ancient", Why::Age)],
            ),
            (
                "empty transcripts are not pruned for size",
                vec![
                    kept("empty", Some(now - 5), false, 0),
                    kept("big", Some(now - 4), false, 150),
                ],
                vec![("big", Why::Size)],
            ),
            (
                "same end: by id, so the plan is stable",
                vec![
                    kept("b", Some(now - 1), false, 70),
                    kept("a", Some(now - 1), false, 70),
                ],
                vec![("a", Why::Size)],
            ),
        ];
        for (name, input, want) in cases {
            assert_eq!(ids(&plan(&input, limits, now)), want, "{name}");
        }
    }

    #[test]
    fn the_cap_splits_a_quarter_head_and_keeps_the_newest_segments() {
        let cap = Cap::of(1024);
        assert_eq!(
            cap,
            Cap {
                head: 256,
                tail: 768,
                segment: 192
            }
        );
        assert_eq!(cap.head + cap.tail, 1024);
        let cases: &[(&[u64], usize)] = &[
            (&[], 0),
            (&[192], 0),
            (&[192, 192, 192, 192], 0),
            (&[192, 192, 192, 192, 1], 1),
            (&[192, 192, 192, 192, 192, 192], 2),
            // One huge segment (never written so, but) stays: it holds the newest bytes.
            (&[5000], 0),
        ];
        for (segments, want) in cases {
            assert_eq!(cap.evict(segments), *want, "{segments:?}");
        }
        // Tiny caps still make progress.
        let tiny = Cap::of(0);
        assert!(tiny.segment >= 1 && tiny.head >= 1);
    }

    #[test]
    fn pieces_map_offsets_and_skip_what_was_dropped() {
        let whole = Pieces(vec![(0, 100)]);
        assert_eq!(whole.end(), 100);
        assert_eq!(whole.dropped(), None);
        let capped = Pieces(vec![(0, 10), (50, 20), (70, 5)]);
        assert_eq!((capped.end(), capped.kept()), (75, 35));
        assert_eq!(capped.dropped(), Some((10, 50)));
        let r = |s, e| {
            capped
                .reads(s, e)
                .iter()
                .map(|r| (r.index, r.within, r.len, r.at))
                .collect::<Vec<_>>()
        };
        assert_eq!(r(0, 75), vec![(0, 0, 10, 0), (1, 0, 20, 50), (2, 0, 5, 70)]);
        assert_eq!(r(5, 60), vec![(0, 5, 5, 5), (1, 0, 10, 50)]);
        // A start inside the dropped range begins at the first kept byte after it.
        assert_eq!(r(20, 75), vec![(1, 0, 20, 50), (2, 0, 5, 70)]);
        assert_eq!(r(20, 40), vec![]);
        assert_eq!(r(72, 200), vec![(2, 2, 3, 72)]);
        assert_eq!(Pieces::default().end(), 0);
    }
}
