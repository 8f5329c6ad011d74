//! Tests of the approvals service on a real SQLite store: the loop waiting for a decision is
//! woken by it, racing decisions have one winner, the deadline denies and says so, and every
//! decision lands once in the session's log.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use kaged_session::agent::AgentEvent;
use serde_json::json;

use super::*;
use crate::sessions::agent_log::tests::store_with;

async fn service(dir: &std::path::Path, timeout_secs: u64) -> Approvals {
    let store = store_with(dir, &["s"]).await;
    let audit = AuditLog::open(&dir.join("audit.log"), store.clone()).unwrap();
    Approvals::new(
        store.clone(),
        audit,
        AgentLog::new(store),
        timeout_secs,
        crate::notify::Notifier::disabled(),
    )
}

async fn ask(approvals: &Approvals, call: &str) -> ApprovalRecord {
    let arguments = json!({"command": "make deploy"});
    approvals
        .request(Request {
            session: "s",
            project: "demo",
            owner: "ann",
            agent: "primary",
            tool: "shell.bash",
            call_id: call,
            parent_call_id: None,
            arguments: &arguments,
        })
        .await
        .unwrap()
}

/// The decisions recorded in the session's log.
async fn decided_in_log(approvals: &Approvals) -> Vec<(String, String)> {
    approvals
        .shared
        .log
        .read_all("s")
        .await
        .unwrap()
        .into_iter()
        .filter_map(|r| match r.event {
            AgentEvent::ApprovalDecided {
                approval_id, state, ..
            } => Some((approval_id, state)),
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_loop_wakes_at_the_decision_and_racing_decisions_have_one_winner() {
    let dir = tempfile::tempdir().unwrap();
    let approvals = service(dir.path(), 0).await;
    let mut stream = approvals.subscribe();
    let a = ask(&approvals, "c1").await;
    let requested = stream.recv().await.unwrap();
    assert_eq!(requested.to_json()["type"], "approval.requested");
    let waiter = {
        let approvals = approvals.clone();
        let id = a.id.clone();
        tokio::spawn(async move { approvals.wait(&id).await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!waiter.is_finished(), "nothing decided yet");
    let (one, two) = tokio::join!(
        approvals.decide(&a.id, Choice::Approve, None, "ann", None),
        approvals.decide(&a.id, Choice::Deny, Some("no".into()), "bob", None),
    );
    let outcomes = [one.unwrap(), two.unwrap()];
    let winners: Vec<&ApprovalRecord> = outcomes
        .iter()
        .filter_map(|o| match o {
            Decided::Now(r) => Some(r),
            _ => None,
        })
        .collect();
    assert_eq!(winners.len(), 1, "{outcomes:?}");
    let loser = outcomes
        .iter()
        .find_map(|o| match o {
            Decided::Already(r) => Some(r),
            _ => None,
        })
        .expect("the other decision loses");
    assert_eq!(loser, winners[0], "the loser sees the winner's record");
    let woken = tokio::time::timeout(Duration::from_secs(10), waiter)
        .await
        .expect("the waiter wakes")
        .unwrap()
        .unwrap();
    assert_eq!(&woken, winners[0]);
    let decided = stream.recv().await.unwrap();
    assert_eq!(decided.kind, "approval.decided");
    assert_eq!(decided_in_log(&approvals).await.len(), 1, "recorded once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_deadline_kaged_denies_and_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let approvals = service(dir.path(), 1).await;
    let a = ask(&approvals, "c1").await;
    let record = tokio::time::timeout(Duration::from_secs(10), approvals.wait(&a.id))
        .await
        .expect("the deadline ends the wait")
        .unwrap();
    assert_eq!(record.state, "denied");
    assert_eq!(record.decided_by.as_deref(), Some(KAGED));
    assert_eq!(
        refusal(&record),
        "denied: no decision within 1 s (approval_timeout_secs)"
    );
    let late = approvals
        .decide(&a.id, Choice::Approve, None, "ann", None)
        .await
        .unwrap();
    assert!(matches!(late, Decided::Already(_)), "{late:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_a_session_settles_only_its_pending_approvals() {
    let dir = tempfile::tempdir().unwrap();
    let approvals = service(dir.path(), 0).await;
    let first = ask(&approvals, "c1").await;
    let second = ask(&approvals, "c2").await;
    approvals
        .decide(&first.id, Choice::Deny, Some("not now".into()), "ann", None)
        .await
        .unwrap();
    approvals
        .cancel_pending("s", "the session was killed")
        .await
        .unwrap();
    let store = approvals.store();
    let first = store.get_approval(first.id).await.unwrap().unwrap();
    let second = store.get_approval(second.id).await.unwrap().unwrap();
    assert_eq!(refusal(&first), "denied by the operator: not now");
    assert_eq!(second.state, "cancelled");
    assert_eq!(refusal(&second), "denied: the session was killed");
    assert_eq!(
        decided_in_log(&approvals).await,
        [
            (first.id.clone(), "denied".to_string()),
            (second.id.clone(), "cancelled".to_string())
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approval_nobody_waits_for_runs_out_too() {
    let dir = tempfile::tempdir().unwrap();
    let approvals = service(dir.path(), 1).await;
    let swept = ask(&approvals, "c1").await;
    let late = ask(&approvals, "c2").await;
    assert_eq!(approvals.expire_overdue().await.unwrap(), 0, "not yet");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(approvals.expire_overdue().await.unwrap(), 2);
    let store = approvals.store();
    let swept = store.get_approval(swept.id).await.unwrap().unwrap();
    assert_eq!(
        refusal(&swept),
        "denied: no decision within 1 s (approval_timeout_secs)"
    );
    // An operator's decision after the deadline finds it decided.
    let again = approvals
        .decide(&late.id, Choice::Approve, None, "ann", None)
        .await
        .unwrap();
    assert!(
        matches!(&again, Decided::Already(r) if r.decided_by.as_deref() == Some(KAGED)),
        "{again:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_decision_past_the_deadline_of_an_unswept_approval_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let approvals = service(dir.path(), 1).await;
    let a = ask(&approvals, "c1").await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let outcome = approvals
        .decide(&a.id, Choice::Approve, None, "ann", None)
        .await
        .unwrap();
    let Decided::Already(record) = outcome else {
        panic!("{outcome:?}")
    };
    assert_eq!(record.state, "denied");
    assert_eq!(record.decided_by.as_deref(), Some(KAGED));
}
