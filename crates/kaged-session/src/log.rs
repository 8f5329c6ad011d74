//! The output of one session, numbered by byte offset.
//!
//! Every byte a session ever printed has an offset: the number of bytes printed before it. A
//! viewer that has seen everything before offset `n` asks for `n` and gets the rest with no gap
//! and no duplicate, however the output was chunked.
//!
//! Memory holds the most recent bytes only. Storage (written by the edge) holds everything.
//!
//! # The persistence contract
//!
//! The log never drops a byte that storage does not hold yet:
//!
//! 1. The reader appends PTY output with [`OutputLog::append`]; it always succeeds.
//! 2. The persister takes [`OutputLog::unpersisted`] (a batch starting at
//!    [`OutputLog::persisted`]), writes it to storage, then calls
//!    [`OutputLog::mark_persisted`] with the end of what it wrote.
//! 3. Only bytes below the persisted mark are evicted, and only down to `capacity`. Bytes not
//!    persisted yet stay in memory even past `capacity`.
//! 4. While [`OutputLog::backpressure`] is true (the unpersisted bytes fill `capacity`), the
//!    reader stops reading the PTY until the persister catches up. The child then blocks on a
//!    full PTY, so memory stays bounded by `capacity` plus one read.
//!
//! So a read that gets [`Read::Gap`] can always be served from storage: everything below
//! [`OutputLog::start`] has been persisted.

use std::collections::VecDeque;

/// The answer to [`OutputLog::read_from`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Read {
    /// Bytes from `start` (the offset asked for). Shorter than asked when the log ends sooner;
    /// empty when the reader is caught up.
    Bytes { start: u64, data: Vec<u8> },
    /// The offset asked for is no longer in memory: read storage from it up to `earliest`,
    /// then read the log from `earliest`.
    Gap { earliest: u64 },
    /// The offset asked for is past the end of the output: the client is confused.
    Ahead,
}

/// A batch of bytes to write to storage, starting at offset `start`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Chunk {
    pub start: u64,
    pub data: Vec<u8>,
}

impl Chunk {
    /// The offset just past this chunk: what to pass to [`OutputLog::mark_persisted`].
    pub fn end(&self) -> u64 {
        self.start + len_u64(self.data.len())
    }
}

/// [`OutputLog::mark_persisted`] was given an offset past the end of the output.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("cannot mark output persisted up to offset {upto}: the output ends at {end}")]
pub struct PersistedAhead {
    pub upto: u64,
    pub end: u64,
}

/// The sequence-numbered output of one session, bounded in memory (see the module docs).
#[derive(Clone, Debug)]
pub struct OutputLog {
    /// The bytes in memory; `bytes[0]` is at offset `start`.
    bytes: VecDeque<u8>,
    start: u64,
    /// Everything below this offset is in storage. `start <= persisted <= end()` always.
    persisted: u64,
    capacity: usize,
}

impl OutputLog {
    /// An empty log that keeps at least the most recent `capacity` bytes (at least 1).
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        Self {
            // Grows on demand: most sessions print far less than their capacity.
            bytes: VecDeque::new(),
            start: 0,
            persisted: 0,
            capacity,
        }
    }

    /// An empty log whose output so far (`offset` bytes) is all in storage: a run a restarted
    /// daemon reattaches to, continuing at its holder's `written`.
    pub fn starting_at(offset: u64, capacity: usize) -> Self {
        let mut log = Self::new(capacity);
        log.start = offset;
        log.persisted = offset;
        log
    }

    /// Continue at `offset`, past the end: the bytes in between are a range storage dropped
    /// (a transcript cap), which nobody will read from memory. Only once everything in memory
    /// is persisted; otherwise, or for an offset before the end, nothing changes and `false`
    /// is returned.
    pub fn skip_to(&mut self, offset: u64) -> bool {
        if offset < self.end() || self.persisted < self.end() {
            return false;
        }
        self.bytes.clear();
        self.start = offset;
        self.persisted = offset;
        true
    }

    /// Appends output and returns the new end offset. Never drops unpersisted bytes; check
    /// [`Self::backpressure`] afterwards.
    pub fn append(&mut self, data: &[u8]) -> u64 {
        self.bytes.extend(data);
        self.evict();
        self.end()
    }

    /// The offset just past the last byte printed (the total output length).
    pub fn end(&self) -> u64 {
        self.start + len_u64(self.bytes.len())
    }

    /// The earliest offset still in memory.
    pub fn start(&self) -> u64 {
        self.start
    }

    /// Everything below this offset has been persisted.
    pub fn persisted(&self) -> u64 {
        self.persisted
    }

    /// How many bytes are in memory.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Whether memory holds no bytes (nothing printed yet, or all evicted).
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// The number of recent bytes kept in memory once persisted.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// How many bytes storage does not hold yet.
    pub fn unpersisted_len(&self) -> u64 {
        self.end() - self.persisted
    }

    /// True while the bytes not yet persisted fill the capacity: the reader must stop reading
    /// the PTY until [`Self::mark_persisted`] catches up, or memory would grow without bound.
    pub fn backpressure(&self) -> bool {
        self.unpersisted_len() >= len_u64(self.capacity)
    }

    /// Reads up to `max_len` bytes from `offset` (see [`Read`]).
    pub fn read_from(&self, offset: u64, max_len: usize) -> Read {
        if offset > self.end() {
            return Read::Ahead;
        }
        if offset < self.start {
            return Read::Gap {
                earliest: self.start,
            };
        }
        Read::Bytes {
            start: offset,
            data: self.copy_from(offset, max_len),
        }
    }

    /// The next batch to persist: up to `max_len` bytes from [`Self::persisted`], or `None` when
    /// storage is up to date.
    pub fn unpersisted(&self, max_len: usize) -> Option<Chunk> {
        if self.persisted == self.end() || max_len == 0 {
            return None;
        }
        Some(Chunk {
            start: self.persisted,
            data: self.copy_from(self.persisted, max_len),
        })
    }

    /// Records that storage holds everything below `upto`, which lets those bytes be evicted.
    /// The mark only moves forward: an offset at or below it is accepted and changes nothing,
    /// so a retried batch is harmless.
    pub fn mark_persisted(&mut self, upto: u64) -> Result<(), PersistedAhead> {
        let end = self.end();
        if upto > end {
            return Err(PersistedAhead { upto, end });
        }
        if upto > self.persisted {
            self.persisted = upto;
            self.evict();
        }
        Ok(())
    }

    /// Copies up to `max_len` bytes from `offset`, which must lie in `start..=end()`.
    fn copy_from(&self, offset: u64, max_len: usize) -> Vec<u8> {
        let skip = to_usize(offset - self.start);
        let len = max_len.min(self.bytes.len() - skip);
        let (front, back) = self.bytes.as_slices();
        let mut data = Vec::with_capacity(len);
        if skip < front.len() {
            let from_front = len.min(front.len() - skip);
            data.extend_from_slice(&front[skip..skip + from_front]);
            data.extend_from_slice(&back[..len - from_front]);
        } else {
            let skip = skip - front.len();
            data.extend_from_slice(&back[skip..skip + len]);
        }
        data
    }

    /// Forgets every persisted byte and returns the memory that held them (a run that ended:
    /// its readers find the bytes in storage). Unpersisted bytes stay; offsets do not change.
    pub fn release_persisted(&mut self) {
        let drop = to_usize(self.persisted - self.start);
        self.bytes.drain(..drop);
        self.start += len_u64(drop);
        self.bytes.shrink_to_fit();
    }

    /// Drops the oldest persisted bytes while memory holds more than `capacity`.
    fn evict(&mut self) {
        let over = self.bytes.len().saturating_sub(self.capacity);
        let persisted_in_memory = to_usize(self.persisted - self.start);
        let drop = over.min(persisted_in_memory);
        if drop > 0 {
            self.bytes.drain(..drop);
            self.start += len_u64(drop);
        }
    }
}

/// Lossless: `usize` is at most 64 bits on every target Rust supports.
fn len_u64(len: usize) -> u64 {
    len as u64
}

/// Only called on distances within the in-memory bytes, which fit a `usize`.
fn to_usize(distance: u64) -> usize {
    usize::try_from(distance).unwrap_or(usize::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_log_can_start_at_an_offset_and_skip_a_dropped_range() {
        let mut log = OutputLog::starting_at(1000, 16);
        assert_eq!(
            (log.start(), log.end(), log.persisted()),
            (1000, 1000, 1000)
        );
        assert_eq!(log.append(b"abc"), 1003);
        // Not persisted yet: no skipping over bytes storage does not hold.
        assert!(!log.skip_to(2000));
        log.mark_persisted(1003).unwrap();
        assert!(!log.skip_to(1002), "a skip backwards");
        assert!(log.skip_to(2000));
        assert_eq!(
            (log.start(), log.end(), log.persisted()),
            (2000, 2000, 2000)
        );
        assert_eq!(log.append(b"d"), 2001);
    }

    /// Persists every pending byte into `storage`, as the edge's persister does.
    fn persist_all(log: &mut OutputLog, storage: &mut Vec<u8>, batch: usize) {
        while let Some(chunk) = log.unpersisted(batch) {
            assert_eq!(chunk.start, storage.len() as u64, "batches are contiguous");
            storage.extend_from_slice(&chunk.data);
            log.mark_persisted(chunk.end()).unwrap();
        }
    }

    /// Reads everything from `offset` the way the edge serves a viewer: storage for a gap,
    /// then memory.
    fn read_all(log: &OutputLog, storage: &[u8], mut offset: u64, batch: usize) -> Vec<u8> {
        let mut out = Vec::new();
        loop {
            match log.read_from(offset, batch) {
                Read::Bytes { start, data } => {
                    assert_eq!(start, offset);
                    if data.is_empty() {
                        return out;
                    }
                    offset += data.len() as u64;
                    out.extend_from_slice(&data);
                }
                Read::Gap { earliest } => {
                    assert!(earliest > offset);
                    out.extend_from_slice(&storage[offset as usize..earliest as usize]);
                    offset = earliest;
                }
                Read::Ahead => panic!("offset {offset} ahead of {}", log.end()),
            }
        }
    }

    #[test]
    fn offsets_count_bytes_since_the_start() {
        let mut log = OutputLog::new(64);
        assert_eq!((log.start(), log.end()), (0, 0));
        assert_eq!(log.append(b"hello"), 5);
        assert_eq!(log.append(b""), 5);
        assert_eq!(log.append(b"x"), 6);
        assert_eq!(log.end(), 6);
        assert_eq!(log.len(), 6);
    }

    #[test]
    fn reads_bytes_from_an_offset_and_caps_them() {
        let mut log = OutputLog::new(64);
        log.append(b"hello world");
        assert_eq!(
            log.read_from(6, 100),
            Read::Bytes {
                start: 6,
                data: b"world".to_vec()
            }
        );
        assert_eq!(
            log.read_from(0, 4),
            Read::Bytes {
                start: 0,
                data: b"hell".to_vec()
            }
        );
        assert_eq!(
            log.read_from(11, 10),
            Read::Bytes {
                start: 11,
                data: Vec::new()
            },
            "a caught-up reader gets nothing"
        );
        assert_eq!(
            log.read_from(3, 0),
            Read::Bytes {
                start: 3,
                data: Vec::new()
            }
        );
        assert_eq!(log.read_from(12, 10), Read::Ahead);
    }

    #[test]
    fn unpersisted_bytes_are_never_evicted() {
        let mut log = OutputLog::new(4);
        log.append(b"abcdefgh");
        assert_eq!(log.start(), 0, "nothing persisted, nothing dropped");
        assert_eq!(log.len(), 8);
        assert!(log.backpressure());
        assert_eq!(
            log.read_from(0, 100),
            Read::Bytes {
                start: 0,
                data: b"abcdefgh".to_vec()
            }
        );
    }

    #[test]
    fn persisting_evicts_down_to_capacity() {
        let mut log = OutputLog::new(4);
        log.append(b"abcdefgh");
        log.mark_persisted(3).unwrap();
        assert_eq!(log.start(), 3, "only persisted bytes go");
        assert_eq!(log.len(), 5);
        log.mark_persisted(8).unwrap();
        assert_eq!(log.start(), 4, "the most recent capacity bytes stay");
        assert_eq!(log.read_from(2, 10), Read::Gap { earliest: 4 });
        assert_eq!(
            log.read_from(4, 10),
            Read::Bytes {
                start: 4,
                data: b"efgh".to_vec()
            }
        );
        log.append(b"ij");
        assert_eq!(log.start(), 6, "persisted bytes make room for new ones");
        log.append(b"klmn");
        assert_eq!(
            (log.start(), log.len()),
            (8, 6),
            "past the persisted bytes, unpersisted ones stay over capacity"
        );
        log.mark_persisted(14).unwrap();
        assert_eq!((log.start(), log.end()), (10, 14));
    }

    #[test]
    fn backpressure_follows_the_unpersisted_bytes() {
        let mut log = OutputLog::new(4);
        log.append(b"abc");
        assert!(!log.backpressure());
        log.append(b"d");
        assert!(log.backpressure(), "capacity full of unpersisted bytes");
        assert_eq!(log.unpersisted_len(), 4);
        log.mark_persisted(2).unwrap();
        assert!(!log.backpressure());
        assert_eq!(log.unpersisted_len(), 2);
    }

    #[test]
    fn unpersisted_batches_start_at_the_mark() {
        let mut log = OutputLog::new(16);
        assert_eq!(log.unpersisted(8), None);
        log.append(b"abcdef");
        let chunk = log.unpersisted(4).unwrap();
        assert_eq!(
            chunk,
            Chunk {
                start: 0,
                data: b"abcd".to_vec()
            }
        );
        log.mark_persisted(chunk.end()).unwrap();
        assert_eq!(
            log.unpersisted(4),
            Some(Chunk {
                start: 4,
                data: b"ef".to_vec()
            })
        );
        assert_eq!(log.unpersisted(0), None);
        log.mark_persisted(6).unwrap();
        assert_eq!(log.unpersisted(4), None);
    }

    #[test]
    fn the_persisted_mark_only_moves_forward_and_not_past_the_end() {
        let mut log = OutputLog::new(16);
        log.append(b"abcdef");
        log.mark_persisted(5).unwrap();
        log.mark_persisted(2).unwrap();
        assert_eq!(log.persisted(), 5, "a stale mark changes nothing");
        assert_eq!(
            log.mark_persisted(7),
            Err(PersistedAhead { upto: 7, end: 6 })
        );
        assert_eq!(log.persisted(), 5);
        assert_eq!(
            PersistedAhead { upto: 7, end: 6 }.to_string(),
            "cannot mark output persisted up to offset 7: the output ends at 6"
        );
    }

    #[test]
    fn zero_capacity_is_raised_to_one() {
        let mut log = OutputLog::new(0);
        assert_eq!(log.capacity(), 1);
        log.append(b"ab");
        log.mark_persisted(2).unwrap();
        assert_eq!((log.start(), log.len()), (1, 1));
    }

    /// Many small appends wrap the ring; every resume point yields exactly the stream's tail.
    #[test]
    fn resuming_anywhere_yields_no_gap_and_no_duplicate() {
        let mut stream = Vec::new();
        let mut storage = Vec::new();
        let mut log = OutputLog::new(37);
        for i in 0..500u32 {
            // Keystroke echoes mixed with bursts.
            let len = if i % 7 == 0 { 23 } else { 1 };
            let chunk: Vec<u8> = (0..len).map(|j| (i * 31 + j) as u8).collect();
            stream.extend_from_slice(&chunk);
            log.append(&chunk);
            if i % 5 == 0 {
                persist_all(&mut log, &mut storage, 9);
            }
            assert!(log.start() <= log.persisted() && log.persisted() <= log.end());
            assert!(log.len() <= 37 || log.start() == log.persisted());
        }
        assert_eq!(log.end(), stream.len() as u64);
        persist_all(&mut log, &mut storage, 9);
        assert_eq!(storage, stream, "storage holds every byte exactly once");
        assert!(log.start() > 0, "the test must exercise eviction");
        for offset in 0..=stream.len() {
            let got = read_all(&log, &storage, offset as u64, 5);
            assert_eq!(got, &stream[offset..], "resume from {offset}");
        }
    }

    /// Reads straddling the ring's wrap point copy both halves in order.
    #[test]
    fn reads_across_the_ring_wrap() {
        let mut log = OutputLog::new(8);
        let mut stream = Vec::new();
        for round in 0..20u8 {
            let chunk = [round, round.wrapping_add(100), round.wrapping_add(200)];
            stream.extend_from_slice(&chunk);
            log.append(&chunk);
            log.mark_persisted(log.end()).unwrap();
            let start = log.start();
            for offset in start..=log.end() {
                for max in 0..10 {
                    let Read::Bytes { data, .. } = log.read_from(offset, max) else {
                        panic!("offset {offset} is in memory");
                    };
                    let from = offset as usize;
                    let to = (from + max).min(stream.len());
                    assert_eq!(data, &stream[from..to], "offset {offset} max {max}");
                }
            }
        }
    }

    #[test]
    fn releasing_keeps_offsets_and_unpersisted_bytes() {
        let mut log = OutputLog::new(8);
        log.append(b"0123456789");
        log.mark_persisted(6).unwrap();
        log.release_persisted();
        assert_eq!((log.start(), log.end(), log.persisted()), (6, 10, 6));
        assert_eq!(
            log.read_from(6, 10),
            Read::Bytes {
                start: 6,
                data: b"6789".to_vec()
            }
        );
        assert!(
            !matches!(log.read_from(5, 10), Read::Bytes { .. }),
            "persisted bytes are gone"
        );
        log.mark_persisted(10).unwrap();
        log.release_persisted();
        assert!(log.is_empty());
        assert_eq!(log.end(), 10);
        assert_eq!(log.append(b"ab"), 12);
    }
}
