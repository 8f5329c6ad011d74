//! The bounded queue between the proxy and whoever audits its decisions. The proxy never waits
//! on it: when it is full a decision is enforced all the same and only counted as dropped.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use crate::EgressDecision;
use crate::tally::{Summary, Tally};

/// Decisions queued per proxy before further ones are dropped (and counted).
pub const DECISION_QUEUE: usize = 1024;

/// The proxy's end: [`DecisionSender::report`] never blocks.
#[derive(Debug, Clone)]
pub struct DecisionSender {
    tx: mpsc::Sender<EgressDecision>,
    dropped: Arc<AtomicU64>,
}

/// The auditor's end.
#[derive(Debug)]
pub struct Decisions {
    rx: mpsc::Receiver<EgressDecision>,
    dropped: Arc<AtomicU64>,
}

/// A queue of `capacity` decisions (at least one).
pub fn decision_channel(capacity: usize) -> (DecisionSender, Decisions) {
    let (tx, rx) = mpsc::channel(capacity.max(1));
    let dropped = Arc::new(AtomicU64::new(0));
    (
        DecisionSender {
            tx,
            dropped: Arc::clone(&dropped),
        },
        Decisions { rx, dropped },
    )
}

impl DecisionSender {
    pub fn report(&self, decision: EgressDecision) {
        match self.tx.try_send(decision) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
            // The auditor is gone (the daemon is shutting down); the decision still held.
            Err(mpsc::error::TrySendError::Closed(_)) => {}
        }
    }
}

impl Decisions {
    /// The next decision; `None` once every sender is gone and the queue is empty.
    pub async fn recv(&mut self) -> Option<EgressDecision> {
        self.rx.recv().await
    }

    pub fn try_recv(&mut self) -> Option<EgressDecision> {
        self.rx.try_recv().ok()
    }

    /// Decisions dropped since the last call.
    pub fn take_dropped(&self) -> u64 {
        self.dropped.swap(0, Ordering::Relaxed)
    }
}

/// What [`aggregate`] passes on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Report {
    /// A decision to record in full (one of the first distinct destinations).
    Decision(EgressDecision),
    /// Counts: at intervals while decisions go unrecorded, and once at the end.
    Summary(Summary),
}

/// How often [`aggregate`] looks whether a summary is due.
const CHECK_EVERY: Duration = Duration::from_secs(1);

/// Aggregates `decisions` with a [`Tally`] until the queue closes (the proxy has stopped),
/// handing each [`Report`] to `emit`: the first distinct destinations in full, summaries at
/// intervals, the final summary last.
pub async fn aggregate<F, Fut>(mut decisions: Decisions, mut emit: F)
where
    F: FnMut(Report) -> Fut,
    Fut: Future<Output = ()>,
{
    let mut tally = Tally::new(Instant::now());
    let mut check = tokio::time::interval(CHECK_EVERY);
    check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            next = decisions.recv() => match next {
                Some(decision) => {
                    if tally.observe(&decision) {
                        emit(Report::Decision(decision)).await;
                    }
                }
                None => break,
            },
            _ = check.tick() => {
                tally.dropped(decisions.take_dropped());
                if let Some(summary) = tally.due(Instant::now()) {
                    emit(Report::Summary(summary)).await;
                }
            }
        }
    }
    tally.dropped(decisions.take_dropped());
    if let Some(summary) = tally.finish() {
        emit(Report::Summary(summary)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decision(port: u16) -> EgressDecision {
        EgressDecision {
            method: "CONNECT".into(),
            host: "a".into(),
            port,
            allowed: false,
            reason: String::new(),
        }
    }

    #[tokio::test]
    async fn a_full_queue_counts_instead_of_waiting() {
        let (tx, mut rx) = decision_channel(2);
        for port in 0..5 {
            tx.report(decision(port));
        }
        assert_eq!(rx.take_dropped(), 3);
        assert_eq!(rx.take_dropped(), 0);
        assert_eq!(rx.recv().await.map(|d| d.port), Some(0));
        assert_eq!(rx.recv().await.map(|d| d.port), Some(1));
        drop(tx);
        assert_eq!(rx.recv().await, None);
    }

    #[tokio::test]
    async fn aggregate_passes_on_the_first_in_full_and_ends_with_the_totals() {
        let (tx, rx) = decision_channel(4);
        let seen = std::sync::Mutex::new(Vec::new());
        let feeding = async {
            for i in 0..200u16 {
                tx.report(EgressDecision {
                    method: "CONNECT".into(),
                    host: format!("h{}", i % 30),
                    port: 443,
                    allowed: false,
                    reason: String::new(),
                });
                tokio::task::yield_now().await;
            }
            drop(tx);
        };
        let collecting = aggregate(rx, |report| {
            seen.lock().unwrap().push(report);
            std::future::ready(())
        });
        tokio::join!(feeding, collecting);
        let seen = seen.into_inner().unwrap();
        let full = seen
            .iter()
            .filter(|r| matches!(r, Report::Decision(_)))
            .count();
        assert!(full <= crate::tally::FULL_RECORDS, "{full}");
        let Some(Report::Summary(end)) = seen.last() else {
            panic!("no final summary: {seen:?}");
        };
        assert!(end.is_final);
        assert_eq!(end.totals.refused + end.totals.dropped, 200, "{end:?}");
    }
}
