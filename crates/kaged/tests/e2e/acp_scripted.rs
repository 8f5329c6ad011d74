//! An agent built with the official `agent-client-protocol` crate (`kaged-acp-scripted`, from
//! `crates/kaged-acp-testing`, a standalone workspace built by `common::acp_testing`; its
//! scripts are JSON, documented in that crate's lib docs) through the real daemon, in a real cage: its binary is copied
//! into the project and runs there on the C library alone; a turn of every update kind with a
//! permission the operator grants, files and a command served in the cage, an abort while a
//! permission waits, and misbehaviours failing the run with the reason.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{Value, json};

use crate::common::acp_testing::acp_testing;
use crate::common::provider::*;
use crate::common::{Daemon, cage_writable};

struct Env {
    daemon: Daemon,
    root: std::path::PathBuf,
    _tmp: tempfile::TempDir,
}

/// A daemon and a project whose primary is `kaged-acp-scripted script.json`, the binary and
/// the script in the project.
async fn env(script: &Value) -> Env {
    env_with(script, &[]).await
}

/// [`env`] with more of the daemon's environment.
async fn env_with(script: &Value, daemon_env: &[(&str, &str)]) -> Env {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("proj");
    std::fs::create_dir_all(root.join(".kaged")).unwrap();
    std::fs::copy(acp_testing().scripted, root.join("kaged-acp-scripted")).unwrap();
    std::fs::write(
        root.join("script.json"),
        serde_json::to_string_pretty(script).unwrap(),
    )
    .unwrap();
    std::fs::write(
        root.join(".kaged/project.yaml"),
        "version: 1\nproject: acpscripted\nprimary:\n  command: [./kaged-acp-scripted, script.json]\n  protocol: acp\n",
    )
    .unwrap();
    cage_writable(&root);
    let daemon = start_daemon(&tmp.path().join("home"), daemon_env);
    load_project_at(&daemon, &root).await;
    Env {
        daemon,
        root,
        _tmp: tmp,
    }
}

impl Env {
    async fn pending(&self, session: &str) -> Value {
        let start = Instant::now();
        loop {
            let path = format!("/api/v1/approvals?state=pending&session={session}");
            let (_, v) = self.daemon.call(Method::GET, &path, None).await;
            if let Some(first) = v["approvals"].as_array().and_then(|a| a.first()) {
                return first.clone();
            }
            if start.elapsed() > Duration::from_secs(20) {
                let (records, _) = conversation(&self.daemon, session, 0).await;
                panic!(
                    "no approval:\n{}\n{}",
                    summarize(&records),
                    self.daemon.stderr_text()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The records once `n` turns have ended.
    async fn turns(&self, session: &str, n: usize) -> Vec<Value> {
        let start = Instant::now();
        loop {
            let (records, _) = conversation(&self.daemon, session, 0).await;
            if records.iter().filter(|r| is_turn_ended(r)).count() >= n {
                return records;
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "{}",
                summarize(&records)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn said(records: &[Value]) -> String {
    of_kind(records, "message_completed")
        .iter()
        .map(|r| r["event"]["text"].as_str().unwrap().to_string())
        .collect::<Vec<_>>()
        .join("|")
}

/// Every update kind, in order, around a permission the operator grants; the write inside the
/// project lands, the one outside the cage's view is refused, the read and the command run in
/// the cage, and the turn's usage is recorded.
#[tokio::test]
async fn the_official_crates_agent_runs_a_whole_turn_in_a_cage() {
    let outside = format!("/etc/kaged-acp-scripted-{}", std::process::id());
    let script = json!({"prompts": [[
        {"say": "Writing the file.", "chunks": 3},
        {"think": "the project is /workspace"},
        {"plan": ["write out.txt"]},
        {"tool_call": {"id": "t1", "title": "Write out.txt", "kind": "edit"}},
        {
            "permission": {"tool_call_id": "t1", "title": "Write out.txt", "kind": "edit"},
            "if_allowed": [
                {"write_file": {"path": "/workspace/out.txt", "content": "from the crate's agent\n"}},
                {"write_file": {"path": outside, "content": "escaped\n"}},
                {"read_file": {"path": "/workspace/out.txt"}},
                {"terminal": {"command": "sh", "args": ["-c", "pwd; cat out.txt"]}},
                {"tool_update": {"id": "t1", "status": "completed", "text": "wrote out.txt"}}
            ],
            "if_rejected": [{"say": "not allowed"}]
        },
        {"turn_usage": {"input_tokens": 120, "output_tokens": 30}}
    ]]});
    let env = env(&script).await;
    let id = create_agent(&env.daemon, "acpscripted", "primary", Some("Write it.")).await;
    let approval = env.pending(&id).await;
    assert_eq!(approval["tool"], "acp.edit", "{approval}");
    assert!(
        !env.root.join("out.txt").exists(),
        "nothing before the decision"
    );
    let path = format!("/api/v1/approvals/{}", approval["id"].as_str().unwrap());
    let (status, body) = env
        .daemon
        .call(Method::POST, &path, Some(json!({"decision": "approve"})))
        .await;
    assert!(status.is_success(), "{body}");
    let records = env.turns(&id, 1).await;
    let all = summarize(&records);
    let order = [
        "user_message",
        "turn_started",
        "text_delta",
        "message_completed",
        "thought_delta",
        "plan",
        "tool_call",
        "approval_requested",
        "approval_decided",
        "tool_result",
        "usage",
        "turn_ended",
    ];
    let mut at = 0;
    for k in kinds(&records) {
        if at < order.len() && k == order[at] {
            at += 1;
        }
    }
    assert_eq!(at, order.len(), "in order: {all}");
    let text = said(&records);
    for part in [
        "Writing the file.",
        "permission t1: allow_once",
        "wrote /workspace/out.txt",
        &format!("write_file {outside} failed: cannot write {outside}"),
        "from the crate's agent\n",
        "/workspace\nfrom the crate's agent\n",
        "terminal exit: 0",
    ] {
        assert!(text.contains(part), "{part:?} in {text:?}: {all}");
    }
    assert_eq!(
        std::fs::read_to_string(env.root.join("out.txt")).unwrap(),
        "from the crate's agent\n"
    );
    assert!(!std::path::Path::new(&outside).exists());
    let usage = of_kind(&records, "usage");
    assert_eq!(usage[0]["event"]["input_tokens"], 120, "{all}");
    assert_eq!(turn_end_reasons(&records), ["end_turn"], "{all}");
}

/// An abort while a permission waits: the agent gets `cancelled` and `session/cancel`, ends
/// its turn `cancelled` (recorded `aborted`), and answers the next message.
#[tokio::test]
async fn an_abort_reaches_the_official_crates_agent_as_cancel() {
    let script = json!({"prompts": [
        [
            {"tool_call": {"id": "t1", "title": "Run tests", "kind": "execute"}},
            {"permission": {"tool_call_id": "t1"}, "if_allowed": [{"sleep_ms": 20_000}]},
            {"say": "never"}
        ],
        [{"echo_prompt": true}]
    ]});
    let env = env(&script).await;
    let id = create_agent(&env.daemon, "acpscripted", "primary", Some("Test.")).await;
    env.pending(&id).await;
    abort(&env.daemon, &id).await;
    let records = env.turns(&id, 1).await;
    let all = summarize(&records);
    assert_eq!(turn_end_reasons(&records), ["aborted"], "{all}");
    assert_eq!(said(&records), "permission t1: cancelled", "{all}");
    send_message(&env.daemon, &id, "Again, please.").await;
    let records = env.turns(&id, 2).await;
    assert!(
        said(&records).ends_with("Again, please."),
        "{}",
        summarize(&records)
    );
}

/// Malformed JSON and a response to an unknown id from the crate's agent fail the run with the
/// reason; an exit mid-turn ends the turn with "output ended (it exited)"; the records before
/// each are kept and the daemon stays up.
#[tokio::test]
async fn the_official_crates_agent_misbehaving_fails_its_run_with_the_reason() {
    let cases = [
        (json!({"raw": "{this is not json"}), "not JSON-RPC"),
        (
            json!({"respond_unknown_id": 424242}),
            "answered a request kaged never made (id 424242)",
        ),
        (json!({"exit": 3}), "output ended (it exited)"),
    ];
    for (step, reason) in cases {
        let exits = step.get("exit").is_some();
        let what = step.to_string();
        let script = json!({"prompts": [[{"say": "before"}, step, {"sleep_ms": 5_000}]]});
        let env = env(&script).await;
        let id = create_agent(&env.daemon, "acpscripted", "primary", Some("Go.")).await;
        let session = wait_state(&env.daemon, &id, &["failed", "exited", "killed"]).await;
        let (records, _) = conversation(&env.daemon, &id, 0).await;
        let all = format!("{session}\n{}", summarize(&records));
        assert_eq!(said(&records), "before", "{what}: {all}");
        assert!(
            of_kind(&records, "error")
                .iter()
                .any(|r| r["event"]["message"].as_str().unwrap().contains(reason)),
            "{what}: {all}"
        );
        assert_eq!(turn_end_reasons(&records), ["error"], "{what}: {all}");
        if !exits {
            assert_eq!(session["state"], "failed", "{what}: {all}");
            assert!(
                session["reason"].as_str().unwrap().contains(reason),
                "{what}: {all}"
            );
        }
        let (status, _) = env.daemon.call(Method::GET, "/healthz", None).await;
        assert!(status.is_success(), "{what}: the daemon is up");
    }
}

const KEEP: [(&str, &str); 1] = [("KAGED_SESSIONS_ON_DAEMON_STOP", "keep")];

/// The records once `n` turns have ended, from daemon `d`.
async fn turns_of(d: &Daemon, session: &str, n: usize) -> Vec<Value> {
    let start = Instant::now();
    loop {
        let (records, _) = conversation(d, session, 0).await;
        if records.iter().filter(|r| is_turn_ended(r)).count() >= n {
            return records;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "{}",
            summarize(&records)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// How many of the agent's completed messages say exactly `text`.
fn times_said(records: &[Value], text: &str) -> usize {
    of_kind(records, "message_completed")
        .iter()
        .filter(|r| r["event"]["text"] == text)
        .count()
}

/// An ACP agent's run outlives kaged: a restart while a permission waits keeps the agent and
/// its pending approval (decided after the restart, answered to the same agent), and what the
/// agent says while kaged is away (the end of its turn included) is recorded once when the
/// next kaged takes it up. The next message is the agent's second prompt: the same process,
/// which remembers.
#[tokio::test]
async fn an_agent_outlives_restarts_of_kaged_and_goes_on_where_it_was() {
    let script = json!({"prompts": [
        [
            {"say": "Working."},
            {"tool_call": {"id": "t1", "title": "Write out.txt", "kind": "edit"}},
            {
                "permission": {"tool_call_id": "t1", "title": "Write out.txt", "kind": "edit"},
                "if_allowed": [
                    {"write_file": {"path": "/workspace/out.txt", "content": "after the restart\n"}},
                    {"sleep_ms": 2500},
                    {"say": "Said while kaged was away."}
                ],
                "if_rejected": [{"say": "not allowed"}]
            }
        ],
        [{"say": "Second turn, same agent."}]
    ]});
    let Env { daemon, root, _tmp } = env_with(&script, &KEEP).await;
    let d = daemon.failing_on_panics().keeping_runs();
    let home = _tmp.path().join("home");
    let id = create_agent(&d, "acpscripted", "primary", Some("Write it.")).await;
    let asked = wait_pending(&d, &id, 1).await;
    let approval = asked[0]["id"].as_str().unwrap().to_string();
    let (status, log) = d.stop();
    assert!(status.success(), "{status}: {log}");

    // Taken up by the next kaged: the same run, its approval still waiting.
    let d = start_daemon(&home, &KEEP)
        .failing_on_panics()
        .keeping_runs();
    let s = session_json(&d, &id).await;
    assert_eq!(s["state"], "running", "{s}");
    let pending = wait_pending(&d, &id, 1).await;
    assert_eq!(pending[0]["id"], approval.as_str(), "the same approval");
    let (status, body) = d
        .call(
            Method::POST,
            &format!("/api/v1/approvals/{approval}"),
            Some(json!({"decision": "approve"})),
        )
        .await;
    assert!(status.is_success(), "{body}");
    // The agent got the decision: it writes, then sleeps; kaged goes away meanwhile.
    let written = root.join("out.txt");
    let start = Instant::now();
    while !written.exists() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the approved write"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (status, log) = d.stop();
    assert!(status.success(), "{status}: {log}");
    // The agent ends its turn while no kaged is there.
    tokio::time::sleep(Duration::from_millis(3500)).await;

    let d = start_daemon(&home, &KEEP).failing_on_panics();
    let records = turns_of(&d, &id, 1).await;
    let all = summarize(&records);
    assert_eq!(times_said(&records, "Working."), 1, "{all}");
    assert_eq!(
        times_said(&records, "Said while kaged was away."),
        1,
        "{all}"
    );
    assert_eq!(of_kind(&records, "approval_requested").len(), 1, "{all}");
    assert_eq!(of_kind(&records, "acp_session").len(), 1, "{all}");
    assert_eq!(turn_end_reasons(&records), ["end_turn"], "{all}");
    assert_eq!(
        std::fs::read_to_string(&written).unwrap(),
        "after the restart\n"
    );

    send_message(&d, &id, "And now?").await;
    let records = turns_of(&d, &id, 2).await;
    let all = summarize(&records);
    assert_eq!(
        times_said(&records, "Second turn, same agent."),
        1,
        "the agent's second prompt: {all}"
    );
    assert_eq!(times_said(&records, "Working."), 1, "{all}");
    let reattached: Vec<Value> = d.api_get("/api/v1/audit?limit=500").await["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "session.reattached" && e["detail"]["session"] == id.as_str())
        .cloned()
        .collect();
    assert_eq!(reattached.len(), 2, "{reattached:?}");
    assert!(
        reattached.iter().all(|e| e["outcome"] == "success"),
        "{reattached:?}"
    );
    // Both took up the same process.
    assert_eq!(
        reattached[0]["detail"]["pid"],
        reattached[1]["detail"]["pid"]
    );
}
