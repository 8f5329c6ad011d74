//! A conversation survives its daemon: after SIGTERM and after SIGKILL, the restarted daemon
//! shows the session `failed` until a message resumes it, and the model then gets the whole
//! history (every earlier message and reply) from the stored event log.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

use crate::common::Daemon;
use crate::common::provider::*;

/// Send `text` (resuming an ended session) and read its turn from the log's end.
async fn talk(d: &Daemon, id: &str, text: &str, resumed: bool) -> Vec<serde_json::Value> {
    let (_, last) = conversation(d, id, 0).await;
    let mut ws = EventsWs::open(d, id, last).await;
    let v = send_message(d, id, text).await;
    assert_eq!(v["resumed"], resumed, "{v}");
    let turn = ws.until_turn_ended().await;
    assert_eq!(
        turn_end_reasons(&turn),
        ["end_turn"],
        "{}",
        summarize(&turn)
    );
    turn
}

#[tokio::test]
async fn a_conversation_continues_after_sigterm_and_after_sigkill() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("home");
    let root = tmp.path().join("proj");
    let p = Provider::start();
    local_toml(RESPONSES, &p.base_url()).write(&home);
    write_model_project(&root, "restart", "", "");

    let d = start_daemon(&home, &[]);
    load_project_at(&d, &root).await;
    p.push(text_reply(RESPONSES, &["Reply ", "one."]));
    let id = create_agent(&d, "restart", "primary", Some("Message one.")).await;
    let mut ws = EventsWs::open(&d, &id, 0).await;
    let first = ws.until_turn_ended().await;
    assert_eq!(
        turn_end_reasons(&first),
        ["end_turn"],
        "{}",
        summarize(&first)
    );
    let (status, log) = d.stop();
    assert!(status.success(), "{status}: {log}");

    // After SIGTERM.
    let d = start_daemon(&home, &[]);
    let s = session_json(&d, &id).await;
    assert_eq!(s["state"], "failed", "{s}");
    let (before, _) = conversation(&d, &id, 0).await;
    assert_eq!(before, ws.seen, "the log survived the restart");
    p.push(text_reply(RESPONSES, &["Reply ", "two."]));
    talk(&d, &id, "Message two.", true).await;
    wait_state(&d, &id, &["running"]).await;
    let body = &p.wait_requests(2).await[1].body_text;
    let at = |s: &str| {
        body.find(s)
            .unwrap_or_else(|| panic!("{s:?} missing: {body}"))
    };
    assert!(at("Message one.") < at("Reply one.") && at("Reply one.") < at("Message two."));

    // After SIGKILL, in the middle of nothing (the session idles, its cage up).
    d.signal("KILL");
    let _ = d.stop_after_signal();
    let d = start_daemon(&home, &[]).failing_on_panics();
    let s = wait_state(&d, &id, &["failed"]).await;
    assert_eq!(s["conversation"], true, "{s}");
    p.push(text_reply(RESPONSES, &["Reply ", "three."]));
    talk(&d, &id, "Message three.", true).await;
    let body = &p.wait_requests(3).await[2].body_text;
    let at = |s: &str| {
        body.find(s)
            .unwrap_or_else(|| panic!("{s:?} missing: {body}"))
    };
    assert!(at("Message one.") < at("Reply one."));
    assert!(at("Reply one.") < at("Message two."));
    assert!(at("Message two.") < at("Reply two."));
    assert!(at("Reply two.") < at("Message three."));
    // The log is whole: one turn per message, numbered on.
    let (records, last) = conversation(&d, &id, 0).await;
    assert_eq!(records.len() as u64, last);
    let turns: Vec<u64> = of_kind(&records, "turn_started")
        .iter()
        .map(|r| r["event"]["turn"].as_u64().unwrap())
        .collect();
    assert_eq!(turns, [1, 2, 3], "{}", summarize(&records));
    assert_eq!(turn_end_reasons(&records), ["end_turn"; 3]);
}
