//! State changes that could not be stored yet: held in memory, oldest first, and stored in
//! that order once storage takes writes again (`Store::flush_held`). While any is held, new
//! changes queue behind it, so a session's row never takes an older state over a newer one.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use crate::{StateChange, StoreError};

/// At most this many changes wait; beyond, a change is dropped and counted. Starts are refused
/// while storage fails, so only runs already going add changes (a handful each).
pub const MAX_HELD: usize = 4096;

#[derive(Default)]
struct Queue {
    changes: VecDeque<StateChange>,
    dropped: u64,
}

#[derive(Clone, Default)]
pub(crate) struct Held {
    queue: Arc<Mutex<Queue>>,
    /// One flush at a time: two would store the same change twice.
    pub(crate) flushing: Arc<tokio::sync::Mutex<()>>,
}

impl Held {
    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Hold `change` when others wait already; `None` when it may be stored now.
    pub(crate) fn hold_if_waiting(&self, change: &StateChange) -> Option<StoreError> {
        let mut q = self.lock();
        if q.changes.is_empty() {
            return None;
        }
        let held = q.changes.len();
        push(&mut q, change.clone());
        Some(StoreError::Held {
            session: change.session_id.clone(),
            held,
        })
    }

    pub(crate) fn hold(&self, change: StateChange) {
        push(&mut self.lock(), change);
    }

    pub(crate) fn front(&self) -> Option<StateChange> {
        self.lock().changes.front().cloned()
    }

    pub(crate) fn pop_front(&self) {
        self.lock().changes.pop_front();
    }

    pub(crate) fn count_dropped(&self) {
        self.lock().dropped += 1;
    }

    pub(crate) fn counts(&self) -> (usize, u64) {
        let q = self.lock();
        (q.changes.len(), q.dropped)
    }
}

fn push(q: &mut Queue, change: StateChange) {
    if q.changes.len() >= MAX_HELD {
        q.dropped += 1;
        tracing::error!(
            session = %change.session_id,
            state = %change.state,
            "{MAX_HELD} state changes wait for storage already; this one is dropped"
        );
        return;
    }
    q.changes.push_back(change);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(session: &str, state: &str) -> StateChange {
        StateChange {
            session_id: session.into(),
            state: state.into(),
            at_ms: 0,
            actor: "t".into(),
            detail: serde_json::Value::Null,
            exit_code: None,
            reason: None,
            ended: false,
        }
    }

    #[test]
    fn once_one_change_is_held_the_next_ones_queue_behind_it_in_order() {
        let h = Held::default();
        assert!(h.hold_if_waiting(&change("a", "running")).is_none());
        h.hold(change("a", "running"));
        let e = h.hold_if_waiting(&change("a", "exited"));
        assert!(matches!(e, Some(StoreError::Held { held: 1, .. })));
        assert!(h.hold_if_waiting(&change("b", "exited")).is_some());
        let mut order = Vec::new();
        while let Some(c) = h.front() {
            order.push(format!("{}:{}", c.session_id, c.state));
            h.pop_front();
        }
        assert_eq!(order, ["a:running", "a:exited", "b:exited"]);
        assert_eq!(h.counts(), (0, 0));
    }

    #[test]
    fn beyond_the_bound_changes_are_dropped_and_counted() {
        let h = Held::default();
        for _ in 0..MAX_HELD + 3 {
            h.hold(change("a", "running"));
        }
        assert_eq!(h.counts(), (MAX_HELD, 3));
    }
}
