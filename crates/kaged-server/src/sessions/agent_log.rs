//! The live event log of model-agent sessions: one numbered log per session, stored before
//! it is published, that a subscriber follows from any sequence number and receives every
//! later record from exactly once, in order (docs/agent-protocol.md).
//!
//! Writing: [`AgentLog::append`] numbers a batch, stores it (`Store::append_events`, all or
//! none) and only then publishes it, all under the session's `order` lock, so publication
//! order is `seq` order (the reasoning of `Sessions::store_and_publish`: a follower skips what
//! is at or below its cursor, so a record published after a higher one would be lost). The
//! append runs as a task of its own: a caller that goes away cannot leave records stored but
//! unpublished, or the numbering behind the store.
//!
//! Reading: publication is a `watch` of the last stored `seq` plus a bounded in-memory tail of
//! the newest records. A [`Subscription`] pulls, like a PTY viewer: from the tail when it
//! still holds the record after its cursor, else a page from the store. A subscriber that fell
//! behind (or started far back) therefore reads from storage and never loses or repeats a
//! record; nothing is queued per subscriber, and a stalled one costs the run nothing. Memory
//! is bounded per session ([`TAIL_RECORDS`], [`TAIL_BYTES`]).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};

use kaged_session::agent::{AgentEvent, Sequenced};
use kaged_store::{SessionEvent, Store, StoreError};
use tokio::sync::watch;

use super::lock;
use crate::audit::now_ms;

/// Newest records kept in memory per session.
pub const TAIL_RECORDS: usize = 512;
/// At most this many bytes of event JSON kept in memory per session (the newest record is kept
/// whatever its size).
pub const TAIL_BYTES: usize = 256 * 1024;
/// A log nobody appended to for this long gives its memory back ([`AgentLog::sweep`]).
pub const IDLE_MS: i64 = 10 * 60 * 1000;
/// Records read from storage at a time by a subscriber that is behind the tail.
const PAGE: usize = 256;

/// Why the log could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot encode an event: {0}")]
    Encode(#[source] serde_json::Error),
    /// A stored record that does not read as an event (a newer kaged wrote it?).
    #[error("event {seq} of session {session} cannot be read: {source}")]
    Decode {
        session: String,
        seq: u64,
        #[source]
        source: serde_json::Error,
    },
    /// The log misses a record a subscriber expected: never happens while the store keeps
    /// its guarantees.
    #[error("event {expected} of session {session} is missing from the log")]
    Gap { session: String, expected: u64 },
    /// A subscription asked to start past the log's end.
    #[error("after {after} is past the last event ({last})")]
    Ahead { after: u64, last: u64 },
    #[error("the log's writer stopped: {0}")]
    Worker(String),
}

/// Every model-agent session's event log: a cheap handle (clones share everything).
#[derive(Clone)]
pub struct AgentLog {
    shared: Arc<Shared>,
}

struct Shared {
    store: Store,
    logs: Mutex<HashMap<String, Arc<SessionLog>>>,
}

/// One session's log in memory.
struct SessionLog {
    id: String,
    /// The last stored `seq`, `None` until read from storage (and after a failed append, so
    /// the next one reads it again). Held from numbering a batch to its publication.
    order: tokio::sync::Mutex<Option<u64>>,
    /// The newest records (lock taken alone, never across an await).
    tail: Mutex<Tail>,
    /// The last published `seq`: subscribers wake on it.
    last: watch::Sender<u64>,
    /// When it was last appended to or subscribed (for [`AgentLog::sweep`]).
    used_ms: AtomicI64,
}

#[derive(Default)]
struct Tail {
    records: VecDeque<(Arc<Sequenced>, usize)>,
    bytes: usize,
}

impl Tail {
    fn push(&mut self, record: Arc<Sequenced>, size: usize) {
        self.records.push_back((record, size));
        self.bytes += size;
        while self.records.len() > TAIL_RECORDS
            || (self.bytes > TAIL_BYTES && self.records.len() > 1)
        {
            if let Some((_, n)) = self.records.pop_front() {
                self.bytes -= n;
            }
        }
    }

    /// The records after `cursor` up to `last` (at most `PAGE`), when the tail still holds the
    /// one right after `cursor`; `None` sends the reader to storage.
    fn after(&self, cursor: u64, last: u64) -> Option<Vec<Arc<Sequenced>>> {
        let first = self.records.front()?.0.seq;
        if first > cursor + 1 {
            return None;
        }
        let skip = usize::try_from(cursor + 1 - first).ok()?;
        let page: Vec<_> = self
            .records
            .iter()
            .skip(skip)
            .take_while(|(r, _)| r.seq <= last)
            .take(PAGE)
            .map(|(r, _)| r.clone())
            .collect();
        (!page.is_empty()).then_some(page)
    }
}

impl SessionLog {
    /// The last stored `seq`, read from storage when not known; the caller holds `order`.
    async fn load(&self, known: &mut Option<u64>, store: &Store) -> Result<u64, LogError> {
        if let Some(last) = *known {
            return Ok(last);
        }
        let last = store.last_event_seq(self.id.clone()).await?;
        *known = Some(last);
        // Never lower what subscribers were told (a reload finds at least as much).
        self.last.send_if_modified(|v| {
            let grew = last > *v;
            *v = (*v).max(last);
            grew
        });
        Ok(last)
    }
}

impl AgentLog {
    pub fn new(store: Store) -> AgentLog {
        AgentLog {
            shared: Arc::new(Shared {
                store,
                logs: Mutex::new(HashMap::new()),
            }),
        }
    }

    fn log(&self, session: &str) -> Arc<SessionLog> {
        let log = lock(&self.shared.logs)
            .entry(session.to_string())
            .or_insert_with(|| {
                Arc::new(SessionLog {
                    id: session.to_string(),
                    order: tokio::sync::Mutex::new(None),
                    tail: Mutex::new(Tail::default()),
                    last: watch::channel(0).0,
                    used_ms: AtomicI64::new(0),
                })
            })
            .clone();
        log.used_ms.store(now_ms(), Ordering::Relaxed);
        log
    }

    /// Append `events` to the log of `session` (a stored session): each is first brought
    /// within the size bounds (`AgentEvent::bounded`: a long chunk becomes several events, a
    /// long result is cut and marked), numbered after the last stored record, stamped with the
    /// time, marked with `parent_call_id` (a subagent's events), stored in one write, and then
    /// published. Returns the records as stored. On an error nothing was stored or published.
    pub async fn append(
        &self,
        session: &str,
        parent_call_id: Option<&str>,
        events: Vec<AgentEvent>,
    ) -> Result<Vec<Arc<Sequenced>>, LogError> {
        let log = self.log(session);
        let store = self.shared.store.clone();
        let parent = parent_call_id.map(str::to_string);
        tokio::spawn(async move {
            let mut order = log.order.lock().await;
            let last = log.load(&mut order, &store).await?;
            let at_ms = now_ms();
            let mut records = Vec::new();
            let mut rows = Vec::new();
            for (event, n) in events.into_iter().flat_map(AgentEvent::bounded).zip(1u64..) {
                let body = serde_json::to_string(&event).map_err(LogError::Encode)?;
                let record = Sequenced {
                    seq: last + n,
                    at_ms,
                    parent_call_id: parent.clone(),
                    event,
                };
                rows.push(SessionEvent {
                    seq: record.seq,
                    at_ms,
                    kind: record.event.kind().to_string(),
                    parent_call_id: parent.clone(),
                    body,
                });
                records.push(Arc::new(record));
            }
            let Some(new_last) = records.last().map(|r| r.seq) else {
                return Ok(records);
            };
            let sizes: Vec<usize> = rows.iter().map(|r| r.body.len() + 64).collect();
            if let Err(e) = store.append_events(log.id.clone(), rows).await {
                // Read the last number again next time (another writer, or a write whose
                // outcome is unknown).
                *order = None;
                return Err(e.into());
            }
            *order = Some(new_last);
            {
                let mut tail = lock(&log.tail);
                for (record, size) in records.iter().zip(sizes) {
                    tail.push(record.clone(), size);
                }
            }
            log.last.send_replace(new_last);
            Ok(records)
        })
        .await
        .map_err(|e| LogError::Worker(e.to_string()))?
    }

    /// Follow the log of `session` from after `after`: the subscription yields every record
    /// with `seq > after`, each once, in order, stored ones first, then new ones as they are
    /// appended. Refused ([`LogError::Ahead`]) when `after` is past the last stored record.
    pub async fn subscribe(&self, session: &str, after: u64) -> Result<Subscription, LogError> {
        let log = self.log(session);
        let last = {
            let mut order = log.order.lock().await;
            log.load(&mut order, &self.shared.store).await?
        };
        if after > last {
            return Err(LogError::Ahead { after, last });
        }
        Ok(Subscription {
            store: self.shared.store.clone(),
            last: log.last.subscribe(),
            log,
            cursor: after,
            ready: VecDeque::new(),
        })
    }

    /// The last `seq` of `session`'s log (0 when empty).
    pub async fn last_seq(&self, session: &str) -> Result<u64, LogError> {
        let log = self.log(session);
        let mut order = log.order.lock().await;
        log.load(&mut order, &self.shared.store).await
    }

    /// At most `limit` stored records of `session` after `after`, in order.
    pub async fn page(
        &self,
        session: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<Sequenced>, LogError> {
        self.shared
            .store
            .events_after(session.to_string(), after, limit)
            .await?
            .into_iter()
            .map(|row| decode(session, row))
            .collect()
    }

    /// Every stored record of `session` (for `kaged_session::agent::history` when a
    /// conversation continues), read from storage a page at a time.
    pub async fn read_all(&self, session: &str) -> Result<Vec<Sequenced>, LogError> {
        let mut out = Vec::new();
        loop {
            let after = out.last().map_or(0, |r: &Sequenced| r.seq);
            let page = self
                .shared
                .store
                .events_after(session.to_string(), after, PAGE)
                .await?;
            let full = page.len() == PAGE;
            for row in page {
                out.push(decode(session, row)?);
            }
            if !full {
                return Ok(out);
            }
        }
    }

    /// Give back the memory of logs unused for [`IDLE_MS`] (from the session manager's
    /// housekeeping): their tails are emptied, and those nobody follows are forgotten.
    pub fn sweep(&self, now: i64) {
        let idle: Vec<String> = lock(&self.shared.logs)
            .values()
            .filter(|l| now - l.used_ms.load(Ordering::Relaxed) >= IDLE_MS)
            .map(|l| l.id.clone())
            .collect();
        for id in idle {
            self.release(&id);
        }
    }

    /// Drop a session's records from memory (its run ended); a later append or subscription
    /// reads what it needs from storage. Subscribers still following it keep working.
    pub fn release(&self, session: &str) {
        let mut logs = lock(&self.shared.logs);
        if let Some(log) = logs.get(session) {
            *lock(&log.tail) = Tail::default();
            // Only the map holds it: nobody follows or writes it, forget it whole.
            if Arc::strong_count(log) == 1 {
                logs.remove(session);
            }
        }
    }
}

fn decode(session: &str, row: SessionEvent) -> Result<Sequenced, LogError> {
    let event = serde_json::from_str(&row.body).map_err(|source| LogError::Decode {
        session: session.to_string(),
        seq: row.seq,
        source,
    })?;
    Ok(Sequenced {
        seq: row.seq,
        at_ms: row.at_ms,
        parent_call_id: row.parent_call_id,
        event,
    })
}

/// A follower of one session's log (see [`AgentLog::subscribe`]).
pub struct Subscription {
    store: Store,
    log: Arc<SessionLog>,
    last: watch::Receiver<u64>,
    /// The `seq` of the last record yielded (or the `after` it started from).
    cursor: u64,
    ready: VecDeque<Arc<Sequenced>>,
}

impl Subscription {
    /// The `seq` of the last record yielded: a client resumes with it.
    pub fn cursor(&self) -> u64 {
        self.cursor
    }

    /// The next record, waiting for one to be appended when the subscriber is caught up.
    /// Cancel-safe: dropping the future loses nothing (for `select!`).
    pub async fn next(&mut self) -> Result<Arc<Sequenced>, LogError> {
        loop {
            if let Some(record) = self.ready.pop_front() {
                self.cursor = record.seq;
                return Ok(record);
            }
            let last = *self.last.borrow_and_update();
            if self.cursor < last {
                self.fill(last).await?;
                continue;
            }
            if self.last.changed().await.is_err() {
                // The sender lives as long as `self.log`: cannot happen; wait forever.
                std::future::pending::<()>().await;
            }
        }
    }

    /// Fetch the records after the cursor (up to `last`): from the tail, else from storage.
    /// Changes `self` only once everything awaited has arrived (cancel safety).
    async fn fill(&mut self, last: u64) -> Result<(), LogError> {
        let from_tail = lock(&self.log.tail).after(self.cursor, last);
        let page = match from_tail {
            Some(page) => page,
            None => {
                let rows = self
                    .store
                    .events_after(self.log.id.clone(), self.cursor, PAGE)
                    .await?;
                rows.into_iter()
                    .map(|row| decode(&self.log.id, row).map(Arc::new))
                    .collect::<Result<Vec<_>, _>>()?
            }
        };
        let mut expected = self.cursor + 1;
        for record in &page {
            if record.seq != expected {
                break;
            }
            expected += 1;
        }
        if expected == self.cursor + 1 {
            return Err(LogError::Gap {
                session: self.log.id.clone(),
                expected,
            });
        }
        self.ready.extend(
            page.into_iter()
                .take(usize::try_from(expected - self.cursor - 1).unwrap_or(0)),
        );
        Ok(())
    }
}

#[cfg(test)]
#[path = "agent_log_tests.rs"]
pub(crate) mod tests;
