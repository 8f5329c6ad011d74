//! What a connection may cost while it does nothing: the time a client gets to send a request
//! head, the time a kept-alive connection may sit between requests, and how many connections
//! may wait at once (no request in flight: a head not yet complete, or idle after a response).
//!
//! A connection is *waiting* from its accept until a request head has been read, and again
//! from the end of each response until the next head. While a request is in flight (the
//! handler runs, or its response body is still being sent) no timer runs, so long responses
//! are never cut; after a WebSocket upgrade the connection belongs to its handler and is no
//! longer tracked here.
//!
//! Beyond the cap the connection that has waited longest is closed. A real client sends its
//! head right after connecting, so it is young when the cap bites; half-sent requests age and
//! go first. Refusing the newest instead would let anyone who fills the cap lock every other
//! client out until the header timeout.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::state::lock;

/// Time from accept to a complete first request head.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Time from the end of a response to the next complete request head.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Connections with no request in flight, across all listeners.
pub const MAX_WAITING_CONNECTIONS: usize = 512;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    pub header_timeout: Duration,
    pub idle_timeout: Duration,
    /// At least 1.
    pub max_waiting: usize,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits {
            header_timeout: HEADER_TIMEOUT,
            idle_timeout: IDLE_TIMEOUT,
            max_waiting: MAX_WAITING_CONNECTIONS,
        }
    }
}

/// Why a waiting connection was closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Expired {
    /// No complete first request head within the header timeout.
    Header,
    /// No next request within the idle timeout.
    Idle,
    /// Closed to make room: it had waited longest when the cap was exceeded.
    Evicted,
}

/// The waiting connections, oldest first.
pub(crate) struct Waiting {
    max: usize,
    queue: Mutex<Queue>,
}

#[derive(Default)]
struct Queue {
    next: u64,
    conns: BTreeMap<u64, Weak<Conn>>,
}

impl Waiting {
    pub(crate) fn new(max: usize) -> Arc<Waiting> {
        Arc::new(Waiting {
            max: max.max(1),
            queue: Mutex::default(),
        })
    }

    /// Queue `conn` as the newest; returns its slot and whoever must make room.
    fn enter(&self, conn: Weak<Conn>) -> (u64, Vec<Weak<Conn>>) {
        let mut q = lock(&self.queue);
        let slot = q.next;
        q.next += 1;
        q.conns.insert(slot, conn);
        let mut evict = Vec::new();
        while q.conns.len() > self.max {
            if let Some((_, c)) = q.conns.pop_first() {
                evict.push(c);
            }
        }
        (slot, evict)
    }

    fn leave(&self, slot: u64) {
        lock(&self.queue).conns.remove(&slot);
    }

    /// Close the connection that has waited longest (when the process is out of descriptors).
    pub(crate) fn evict_oldest(&self) {
        let oldest = lock(&self.queue).conns.pop_first();
        if let Some(conn) = oldest.and_then(|(_, c)| c.upgrade()) {
            conn.evict();
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        lock(&self.queue).conns.len()
    }
}

/// One accepted connection, shared by its service (which marks requests) and its watchdog.
pub(crate) struct Conn {
    waiting: Arc<Waiting>,
    state: Mutex<State>,
    wake: Notify,
}

struct State {
    in_flight: usize,
    /// A request was served: the next wait is the idle one.
    served: bool,
    /// When the current wait began.
    since: Instant,
    slot: Option<u64>,
    evicted: bool,
}

impl Conn {
    /// A connection just accepted: it waits for its first request head.
    pub(crate) fn accept(waiting: &Arc<Waiting>) -> Arc<Conn> {
        let conn = Arc::new(Conn {
            waiting: waiting.clone(),
            state: Mutex::new(State {
                in_flight: 0,
                served: false,
                since: Instant::now(),
                slot: None,
                evicted: false,
            }),
            wake: Notify::new(),
        });
        conn.start_waiting();
        conn
    }

    fn start_waiting(self: &Arc<Self>) {
        let evict = {
            let mut s = lock(&self.state);
            // A request may have begun since the caller looked.
            if s.in_flight > 0 {
                return;
            }
            if let Some(old) = s.slot.take() {
                self.waiting.leave(old);
            }
            let (slot, evict) = self.waiting.enter(Arc::downgrade(self));
            s.slot = Some(slot);
            s.since = Instant::now();
            evict
        };
        self.wake.notify_one();
        // Outside this connection's lock: two connections evicting each other must not deadlock.
        for conn in evict.iter().filter_map(Weak::upgrade) {
            conn.evict();
        }
    }

    fn evict(&self) {
        let mut s = lock(&self.state);
        // A head read since the cap was exceeded: the connection is working, let it be.
        if s.in_flight == 0 {
            s.evicted = true;
            s.slot = None;
            drop(s);
            self.wake.notify_one();
        }
    }

    /// A request head was read; the returned guard marks the end of its response.
    pub(crate) fn request(self: &Arc<Self>) -> InFlight {
        let mut s = lock(&self.state);
        s.in_flight += 1;
        s.evicted = false;
        if let Some(slot) = s.slot.take() {
            self.waiting.leave(slot);
        }
        InFlight(self.clone())
    }

    fn finished(self: &Arc<Self>) {
        {
            let mut s = lock(&self.state);
            s.in_flight = s.in_flight.saturating_sub(1);
            if s.in_flight > 0 {
                return;
            }
            s.served = true;
        }
        self.start_waiting();
    }

    /// Resolves when the connection has waited too long or was evicted; never while a request
    /// is in flight.
    pub(crate) async fn expired(&self, limits: &ConnectionLimits) -> Expired {
        loop {
            let deadline = {
                let s = lock(&self.state);
                if s.in_flight > 0 {
                    None
                } else if s.evicted {
                    return Expired::Evicted;
                } else if s.served {
                    Some((s.since + limits.idle_timeout, Expired::Idle))
                } else {
                    Some((s.since + limits.header_timeout, Expired::Header))
                }
            };
            match deadline {
                Some((at, why)) if at <= Instant::now() => return why,
                Some((at, _)) => {
                    tokio::select! {
                        _ = self.wake.notified() => {}
                        _ = tokio::time::sleep_until(at) => {}
                    }
                }
                None => self.wake.notified().await,
            }
        }
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        let slot = self.state.get_mut().map(|s| s.slot).unwrap_or_default();
        if let Some(slot) = slot {
            self.waiting.leave(slot);
        }
    }
}

/// Held by a request from its head until its response body is dropped (sent or abandoned).
pub(crate) struct InFlight(Arc<Conn>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.finished();
    }
}

/// A response body that keeps its request in flight until hyper is done with it.
pub(crate) struct Tracked {
    pub(crate) body: Body,
    pub(crate) _in_flight: InFlight,
}

impl http_body::Body for Tracked {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn limits() -> ConnectionLimits {
        ConnectionLimits {
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_waiting: 2,
        }
    }

    async fn expired_now(conn: &Conn) -> Option<Expired> {
        tokio::time::timeout(Duration::from_millis(1), conn.expired(&limits()))
            .await
            .ok()
    }

    #[tokio::test(start_paused = true)]
    async fn the_header_then_the_idle_timeout_apply_and_never_while_in_flight() {
        let waiting = Waiting::new(8);
        let conn = Conn::accept(&waiting);
        tokio::time::advance(Duration::from_secs(9)).await;
        assert_eq!(expired_now(&conn).await, None);
        let request = conn.request();
        assert_eq!(
            waiting.len(),
            0,
            "a connection with a request in flight is not waiting"
        );
        tokio::time::advance(Duration::from_secs(3600)).await;
        assert_eq!(expired_now(&conn).await, None, "in flight: no timeout");
        drop(request);
        assert_eq!(waiting.len(), 1);
        tokio::time::advance(Duration::from_secs(59)).await;
        assert_eq!(expired_now(&conn).await, None);
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(expired_now(&conn).await, Some(Expired::Idle));

        let fresh = Conn::accept(&waiting);
        tokio::time::advance(Duration::from_secs(11)).await;
        assert_eq!(expired_now(&fresh).await, Some(Expired::Header));
    }

    #[tokio::test(start_paused = true)]
    async fn beyond_the_cap_the_longest_waiting_goes_and_busy_ones_are_spared() {
        let waiting = Waiting::new(2);
        let a = Conn::accept(&waiting);
        let b = Conn::accept(&waiting);
        let busy = b.request();
        let c = Conn::accept(&waiting);
        assert_eq!(expired_now(&a).await, None, "two waiting: a and c");
        let d = Conn::accept(&waiting);
        assert_eq!(expired_now(&a).await, Some(Expired::Evicted));
        assert_eq!(expired_now(&b).await, None);
        assert_eq!(expired_now(&c).await, None);
        // b finishes its response: it waits again, as the newest, and c has waited longest.
        drop(busy);
        assert_eq!(expired_now(&c).await, Some(Expired::Evicted));
        assert_eq!(expired_now(&d).await, None);
        assert_eq!(expired_now(&b).await, None);
        // A closed connection leaves the queue.
        drop((a, c, d));
        assert_eq!(waiting.len(), 1);
    }
}
