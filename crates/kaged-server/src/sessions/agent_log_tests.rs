//! Tests of the live event log on a real SQLite store: numbering, store-then-publish, and
//! subscribers at any `after` receiving every later record exactly once while writers race.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::Duration;

use kaged_session::agent::{AgentEvent, MAX_CHUNK_BYTES};
use kaged_store::{SessionRecord, StateChange, Store};

use super::*;

/// A store in `dir` with the sessions `ids` stored.
pub(crate) async fn store_with(dir: &Path, ids: &[&str]) -> Store {
    let store = Store::open(&kaged_config::StorageUrl::Sqlite(dir.join("k.db"))).unwrap();
    for id in ids {
        let record = SessionRecord {
            id: id.to_string(),
            project: "demo".into(),
            kind: "agent".into(),
            name: "primary".into(),
            state: "running".into(),
            created_by: "ann".into(),
            created_at_ms: 1,
            ..Default::default()
        };
        let first = StateChange {
            session_id: id.to_string(),
            state: "running".into(),
            at_ms: 1,
            actor: "ann".into(),
            detail: serde_json::json!({}),
            exit_code: None,
            reason: None,
            ended: false,
        };
        store.create_session(record, first).await.unwrap();
    }
    store
}

fn delta(n: u64) -> AgentEvent {
    AgentEvent::TextDelta {
        text: format!("t{n}"),
    }
}

/// Read `count` records from `sub`, failing after a generous time.
async fn take(sub: &mut Subscription, count: usize) -> Vec<u64> {
    let mut seqs = Vec::new();
    for _ in 0..count {
        let r = tokio::time::timeout(Duration::from_secs(20), sub.next())
            .await
            .expect("a record in time")
            .unwrap();
        seqs.push(r.seq);
    }
    seqs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_are_numbered_stored_then_published_and_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_with(dir.path(), &["s"]).await;
    let log = AgentLog::new(store.clone());
    let mut sub = log.subscribe("s", 0).await.unwrap();
    let first = log
        .append("s", None, vec![delta(1), delta(2)])
        .await
        .unwrap();
    assert_eq!(first.iter().map(|r| r.seq).collect::<Vec<_>>(), [1, 2]);
    // A long chunk becomes several records; a subagent's carry its parent call.
    let long = AgentEvent::ToolOutput {
        call_id: "c".into(),
        chunk: "x".repeat(MAX_CHUNK_BYTES + 1),
    };
    let nested = log.append("s", Some("call-1"), vec![long]).await.unwrap();
    assert_eq!(nested.iter().map(|r| r.seq).collect::<Vec<_>>(), [3, 4]);
    assert!(
        nested
            .iter()
            .all(|r| r.parent_call_id.as_deref() == Some("call-1"))
    );
    assert!(log.append("s", None, vec![]).await.unwrap().is_empty());

    // Everything published was stored first, and comes back the same from storage.
    assert_eq!(take(&mut sub, 4).await, [1, 2, 3, 4]);
    let stored = log.read_all("s").await.unwrap();
    assert_eq!(stored.len(), 4);
    assert_eq!(stored[2], *nested[0]);
    assert_eq!(store.last_event_seq("s".into()).await.unwrap(), 4);

    // A second log over the same store (a restarted daemon) continues the numbering.
    let again = AgentLog::new(store.clone());
    let r = again.append("s", None, vec![delta(5)]).await.unwrap();
    assert_eq!(r[0].seq, 5);
    // The first log learns of the other writer, refuses, and then continues after it.
    assert!(log.append("s", None, vec![delta(6)]).await.is_err());
    let r = log.append("s", None, vec![delta(6)]).await.unwrap();
    assert_eq!(r[0].seq, 6);

    // An unknown session stores nothing and publishes nothing.
    assert!(log.append("ghost", None, vec![delta(1)]).await.is_err());
    assert_eq!(log.last_seq("ghost").await.unwrap(), 0);
    // Past the end: refused.
    assert!(matches!(
        log.subscribe("s", 7).await,
        Err(LogError::Ahead { after: 7, last: 6 })
    ));
    assert_eq!(
        log.subscribe("s", 6).await.unwrap().cursor(),
        6,
        "at the end"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_far_behind_reads_storage_then_the_tail_without_gap_or_repeat() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_with(dir.path(), &["s"]).await;
    let log = AgentLog::new(store);
    // A subscriber that stops reading while more than the tail holds is appended.
    let mut stalled = log.subscribe("s", 0).await.unwrap();
    assert_eq!(take(&mut stalled, 0).await, Vec::<u64>::new());
    let total = (TAIL_RECORDS * 2 + 37) as u64;
    for chunk in (1..=total).collect::<Vec<_>>().chunks(50) {
        log.append("s", None, chunk.iter().map(|n| delta(*n)).collect())
            .await
            .unwrap();
    }
    let seqs = take(&mut stalled, total as usize).await;
    assert_eq!(seqs, (1..=total).collect::<Vec<_>>());
    // Started in the middle, in the stored part.
    let mut mid = log.subscribe("s", 100).await.unwrap();
    assert_eq!(
        take(&mut mid, (total - 100) as usize).await,
        (101..=total).collect::<Vec<_>>()
    );
    // After release, memory is empty and everything comes from storage.
    log.release("s");
    assert!(
        lock(&log.shared.logs)["s"]
            .tail
            .lock()
            .unwrap()
            .records
            .is_empty()
    );
    drop((stalled, mid));
    // Idle and followed by nobody: the housekeeping sweep forgets it (not before).
    log.sweep(now_ms());
    assert!(lock(&log.shared.logs).contains_key("s"));
    log.sweep(now_ms() + IDLE_MS);
    assert!(!lock(&log.shared.logs).contains_key("s"));
    let mut late = log.subscribe("s", total - 3).await.unwrap();
    assert_eq!(take(&mut late, 3).await, [total - 2, total - 1, total]);
    log.append("s", None, vec![delta(0)]).await.unwrap();
    assert_eq!(take(&mut late, 1).await, [total + 1]);
    // Nothing more is yielded: it waits.
    assert!(
        tokio::time::timeout(Duration::from_millis(100), late.next())
            .await
            .is_err()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_and_subscribers_at_random_points_see_each_record_once_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_with(dir.path(), &["a", "b"]).await;
    let log = AgentLog::new(store);
    // A small deterministic generator (no dependency): subscribers join at varied points.
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut random = move |below: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % below.max(1)
    };
    const WRITERS: u64 = 4;
    const BATCHES: u64 = 40;
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let log = log.clone();
        writers.push(tokio::spawn(async move {
            for b in 0..BATCHES {
                let session = if (w + b).is_multiple_of(3) { "b" } else { "a" };
                let n = 1 + (w * 7 + b) % 5;
                let events = (0..n).map(|i| delta(w * 1000 + b * 10 + i)).collect();
                log.append(session, None, events).await.unwrap();
                if b.is_multiple_of(8) {
                    tokio::task::yield_now().await;
                }
            }
        }));
    }
    let mut readers = Vec::new();
    for r in 0..24u64 {
        let session = if r.is_multiple_of(4) { "b" } else { "a" };
        // Join at a random point of what is stored so far.
        let last = log.last_seq(session).await.unwrap();
        let after = random(last + 1);
        let mut sub = log.subscribe(session, after).await.unwrap();
        let slow = r.is_multiple_of(5);
        readers.push(tokio::spawn(async move {
            let mut seen = Vec::new();
            // Read until told where the log ends (writers done), then up to there.
            loop {
                let record = tokio::time::timeout(Duration::from_secs(1), sub.next()).await;
                match record {
                    Ok(record) => seen.push(record.unwrap().seq),
                    Err(_) => break,
                }
                if slow && seen.len().is_multiple_of(64) {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
            (session, after, seen)
        }));
        tokio::time::sleep(Duration::from_millis(random(5))).await;
    }
    for w in writers {
        w.await.unwrap();
    }
    let last_a = log.last_seq("a").await.unwrap();
    let last_b = log.last_seq("b").await.unwrap();
    assert!(last_a > 0 && last_b > 0);
    let total: u64 = (0..WRITERS)
        .flat_map(|w| (0..BATCHES).map(move |b| 1 + (w * 7 + b) % 5))
        .sum();
    assert_eq!(last_a + last_b, total, "every event numbered once");
    for reader in readers {
        let (session, after, seen) = reader.await.unwrap();
        let last = if session == "a" { last_a } else { last_b };
        assert_eq!(
            seen,
            (after + 1..=last).collect::<Vec<_>>(),
            "subscriber of {session} after {after}"
        );
    }
    // And the stored logs hold exactly those numbers, each once.
    for (session, last) in [("a", last_a), ("b", last_b)] {
        let stored: Vec<u64> = log
            .read_all(session)
            .await
            .unwrap()
            .iter()
            .map(|r| r.seq)
            .collect();
        assert_eq!(stored, (1..=last).collect::<Vec<_>>());
    }
}
