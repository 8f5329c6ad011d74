//! ACP agents (`protocol: acp`) through the real daemon, in a real cage: a scripted agent
//! (`acp/agent.py`, JSON-RPC on stdio) streams a turn, asks permissions that become kaged
//! approvals (or the project's policy answers), has files written and read and a command run by
//! the in-cage shim (inside the cage's view: a write outside it is refused), and misbehaves on
//! demand: each breach ends the turn and the run with the reason in the log, the daemon stays
//! up, and what was recorded before is kept.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{Value, json};

use crate::common::provider::*;
use crate::common::{Daemon, cage_writable};

const AGENT: &str = include_str!("acp/agent.py");

struct AcpEnv {
    daemon: Daemon,
    home: std::path::PathBuf,
    root: std::path::PathBuf,
    _tmp: tempfile::TempDir,
}

/// A daemon and a project whose primary is the scripted ACP agent running `script`;
/// `extra` are more lines of `primary`.
async fn acp_env(script: Value, extra: &str) -> AcpEnv {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("home");
    let root = tmp.path().join("proj");
    std::fs::create_dir_all(root.join(".kaged")).unwrap();
    std::fs::write(root.join("agent.py"), AGENT).unwrap();
    std::fs::write(root.join("script.json"), script.to_string()).unwrap();
    std::fs::write(
        root.join(".kaged/project.yaml"),
        format!(
            "version: 1\nproject: acp\nprimary:\n  command: [python3, agent.py, script.json]\n  protocol: acp\n{extra}"
        ),
    )
    .unwrap();
    cage_writable(&root);
    let daemon = start_daemon(&home, &[]);
    load_project_at(&daemon, &root).await;
    AcpEnv {
        daemon,
        home,
        root,
        _tmp: tmp,
    }
}

impl AcpEnv {
    async fn start(&self, message: &str) -> String {
        create_agent(&self.daemon, "acp", "primary", Some(message)).await
    }

    /// The pending approvals of `session`, once there are `n`.
    async fn pending(&self, session: &str, n: usize) -> Vec<Value> {
        let start = Instant::now();
        loop {
            let (_, v) = self
                .daemon
                .call(
                    Method::GET,
                    &format!("/api/v1/approvals?state=pending&session={session}"),
                    None,
                )
                .await;
            let list = v["approvals"].as_array().cloned().unwrap_or_default();
            if list.len() >= n {
                return list;
            }
            if start.elapsed() > Duration::from_secs(20) {
                let (records, _) = conversation(&self.daemon, session, 0).await;
                panic!("no approval:\n{}", summarize(&records));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn decide(&self, approval: &Value, decision: &str) {
        let (status, body) = self
            .daemon
            .call(
                Method::POST,
                &format!("/api/v1/approvals/{}", approval["id"].as_str().unwrap()),
                Some(json!({ "decision": decision })),
            )
            .await;
        assert!(status.is_success(), "{body}");
    }

    /// The session once its run failed (within 60 s).
    async fn failed(&self, session: &str) -> Value {
        let start = Instant::now();
        loop {
            let s = session_json(&self.daemon, session).await;
            if s["state"] == "failed" {
                return s;
            }
            assert!(start.elapsed() < Duration::from_secs(60), "{s}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The records up to the end of the turn `n` (1-based).
    async fn turn(&self, session: &str, n: usize) -> Vec<Value> {
        wait_conversation(&self.daemon, session, |r| kind(r) == "turn_ended").await;
        let start = Instant::now();
        loop {
            let (records, _) = conversation(&self.daemon, session, 0).await;
            if records.iter().filter(|r| kind(r) == "turn_ended").count() >= n {
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

/// The text the agent said in `records` (its completed messages, joined).
fn said(records: &[Value]) -> String {
    records
        .iter()
        .filter(|r| kind(r) == "message_completed")
        .map(|r| r["event"]["text"].as_str().unwrap().to_string())
        .collect::<Vec<_>>()
        .join("|")
}

fn reason_of(records: &[Value]) -> String {
    records
        .iter()
        .rev()
        .find(|r| kind(r) == "turn_ended")
        .map(|r| r["event"]["reason"].as_str().unwrap().to_string())
        .unwrap_or_default()
}

/// One turn of everything an agent does: chunks, a thought, a plan, a tool call whose
/// permission the operator grants, a write in the project and one outside the cage's view, a
/// read, a command on a terminal, the call's result and usage, recorded in order; the shim's
/// work is audited.
#[tokio::test]
async fn an_acp_agents_turn_is_recorded_and_its_approved_write_lands_in_the_project() {
    let outside = format!("/etc/kaged-acp-escape-{}", std::process::id());
    let script = json!({"prompts": [[
        {"say": "Let me write the file.", "chunks": 3},
        {"think": "the project is at /workspace"},
        {"plan": [{"content": "write out.txt", "status": "in_progress", "priority": "high"}]},
        {"tool_call": {"id": "t1", "title": "Write out.txt", "kind": "edit", "input": {"path": "/workspace/out.txt"}}},
        {"permission": "t1"},
        {"if": "allowed", "then": [
            {"write": {"path": "/workspace/out.txt", "content": "written by the agent\n"}},
            {"write": {"path": outside, "content": "escaped\n"}},
            {"read": "/workspace/out.txt"},
            {"run": ["sh", "-c", "pwd; cat out.txt"]},
            {"done": "t1", "text": "wrote out.txt"}
        ]}
    ]]});
    let env = acp_env(script, "").await;
    let id = env.start("Write out.txt, please.").await;
    let pending = env.pending(&id, 1).await;
    assert_eq!(pending[0]["tool"], "acp.edit", "{pending:?}");
    assert_eq!(pending[0]["arguments"]["title"], "Write out.txt");
    assert!(
        !env.root.join("out.txt").exists(),
        "nothing written before the decision"
    );
    env.decide(&pending[0], "approve").await;
    let records = env.turn(&id, 1).await;
    let all = summarize(&records);
    let kinds = kinds(&records);
    let order = [
        "user_message",
        "turn_started",
        "message_started",
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
    for k in kinds.iter() {
        if at < order.len() && *k == order[at] {
            at += 1;
        }
    }
    assert_eq!(at, order.len(), "in order: {all}");
    assert!(
        kinds.iter().filter(|k| **k == "text_delta").count() >= 3,
        "{all}"
    );
    let text = said(&records);
    assert!(text.contains("permission: allowed (once)"), "{all}");
    assert!(text.contains("wrote /workspace/out.txt"), "{all}");
    assert!(
        text.contains(&format!("write failed: cannot write {outside}")),
        "{all}"
    );
    assert!(text.contains("read: written by the agent"), "{all}");
    assert!(
        text.contains("ran: /workspace\nwritten by the agent"),
        "{all}"
    );
    assert_eq!(reason_of(&records), "end_turn");
    assert_eq!(
        std::fs::read_to_string(env.root.join("out.txt")).unwrap(),
        "written by the agent\n"
    );
    assert!(!std::path::Path::new(&outside).exists(), "{all}");
    let audit = env.daemon.api_get("/api/v1/audit?limit=1000").await;
    let served: Vec<&Value> = audit["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "acp.served" && e["detail"]["session"] == id.as_str())
        .collect();
    assert!(
        served
            .iter()
            .any(|e| e["detail"]["path"] == outside.as_str() && e["outcome"] == "failure"),
        "{audit}"
    );
    assert!(
        served
            .iter()
            .any(|e| e["detail"]["method"] == "fs/write_text_file" && e["outcome"] == "success"),
        "{audit}"
    );
}

/// A denied permission reaches the agent as its reject option; nothing is written.
#[tokio::test]
async fn a_denied_permission_is_the_agents_reject_option() {
    let script = json!({"prompts": [[
        {"tool_call": {"id": "t1", "title": "Delete src", "kind": "delete"}},
        {"permission": "t1"},
        {"if": "allowed", "then": [{"write": {"path": "/workspace/gone.txt", "content": "x"}}]}
    ]]});
    let env = acp_env(script, "").await;
    let id = env.start("Clean up.").await;
    let pending = env.pending(&id, 1).await;
    assert_eq!(pending[0]["tool"], "acp.delete");
    env.decide(&pending[0], "deny").await;
    let records = env.turn(&id, 1).await;
    assert!(
        said(&records).contains("permission: rejected (no)"),
        "{}",
        summarize(&records)
    );
    assert!(!env.root.join("gone.txt").exists());
}

/// The project file answers by kind: `allow` and `deny` without asking anyone; approving for
/// the session answers that kind's next request of the session.
#[tokio::test]
async fn the_project_policy_and_a_session_grant_answer_without_asking() {
    let script = json!({"prompts": [
        [
            {"tool_call": {"id": "t1", "kind": "read"}}, {"permission": "t1"},
            {"tool_call": {"id": "t2", "kind": "delete"}}, {"permission": "t2"}
        ],
        [
            {"tool_call": {"id": "t3", "kind": "execute"}}, {"permission": "t3"},
            {"tool_call": {"id": "t4", "kind": "execute"}}, {"permission": "t4"}
        ]
    ]});
    let policy =
        "  tools:\n    acp.read: { approval: allow }\n    acp.delete: { approval: deny }\n";
    let env = acp_env(script, policy).await;
    let id = env.start("Look around.").await;
    let records = env.turn(&id, 1).await;
    let text = said(&records);
    assert!(
        text.contains("permission: allowed (once)|permission: rejected (no)"),
        "{}",
        summarize(&records)
    );
    let (_, v) = env
        .daemon
        .call(Method::GET, "/api/v1/approvals", None)
        .await;
    assert_eq!(v["approvals"], json!([]), "nobody was asked");
    send_message(&env.daemon, &id, "Now run things.").await;
    let pending = env.pending(&id, 1).await;
    assert_eq!(pending[0]["tool"], "acp.execute");
    env.decide(&pending[0], "approve_session").await;
    let records = env.turn(&id, 2).await;
    let text = said(&records);
    assert!(
        text.ends_with("permission: allowed (always)|permission: allowed (once)"),
        "{}",
        summarize(&records)
    );
    let (_, v) = env
        .daemon
        .call(
            Method::GET,
            &format!("/api/v1/approvals?session={id}"),
            None,
        )
        .await;
    assert_eq!(v["approvals"].as_array().unwrap().len(), 1, "asked once");
}

/// An abort while a permission waits: the approval is cancelled, the agent gets `cancelled`
/// and `session/cancel`, and the turn ends `aborted`; the next message starts a new turn.
#[tokio::test]
async fn an_abort_cancels_the_waiting_permission_and_the_prompt() {
    let script = json!({"prompts": [
        [{"tool_call": {"id": "t1", "kind": "execute"}}, {"permission": "t1"}, {"wait_cancel": true}],
        [{"say": "fresh turn"}]
    ]});
    let env = acp_env(script, "").await;
    let id = env.start("Run the tests.").await;
    let pending = env.pending(&id, 1).await;
    abort(&env.daemon, &id).await;
    let records = env.turn(&id, 1).await;
    let all = summarize(&records);
    assert_eq!(reason_of(&records), "aborted", "{all}");
    assert!(said(&records).contains("permission: cancelled"), "{all}");
    let (_, record) = env
        .daemon
        .call(
            Method::GET,
            &format!("/api/v1/approvals/{}", pending[0]["id"].as_str().unwrap()),
            None,
        )
        .await;
    assert_eq!(record["state"], "cancelled", "{record}");
    send_message(&env.daemon, &id, "Again.").await;
    let records = env.turn(&id, 2).await;
    assert!(
        said(&records).ends_with("fresh turn"),
        "{}",
        summarize(&records)
    );
    assert_eq!(reason_of(&records), "end_turn");
}

/// A request kaged does not serve gets "method not found" and an `error` record; the turn goes
/// on. A flood of updates is recorded whole.
#[tokio::test]
async fn an_unknown_method_is_refused_and_a_flood_is_recorded_whole() {
    let script = json!({"prompts": [[
        {"call": "x/unheard_of"},
        {"flood": 3000},
        {"say": "still here"}
    ]]});
    let env = acp_env(script, "").await;
    let id = env.start("Go.").await;
    let records = env.turn(&id, 1).await;
    let all = said(&records);
    assert!(
        all.contains("asked x/unheard_of: {\"code\": -32601"),
        "{all}"
    );
    assert!(all.ends_with("still here"), "{}", summarize(&records));
    assert!(
        records.iter().any(|r| kind(r) == "error"
            && r["event"]["message"]
                .as_str()
                .unwrap()
                .contains("`x/unheard_of`, which kaged does not serve")),
        "{}",
        summarize(&records)
    );
    let deltas = records.iter().filter(|r| kind(r) == "text_delta").count();
    assert!(deltas >= 3000, "{deltas} deltas");
    assert_eq!(reason_of(&records), "end_turn");
}

/// Each breach of the protocol ends the turn with the reason (the records before it kept),
/// fails the run saying so, and leaves the daemon up.
#[tokio::test]
async fn a_misbehaving_agent_fails_its_run_with_the_reason() {
    let cases: [(&str, Value, &str); 4] = [
        (
            "malformed",
            json!({"prompts": [[{"say": "before"}, {"raw": "{this is not json"}]]}),
            "not JSON-RPC: `{this is not json`",
        ),
        (
            "unknown id",
            json!({"prompts": [[{"say": "before"}, {"answer_unknown": true}]]}),
            "answered a request kaged never made (id 987654)",
        ),
        (
            "exit mid-turn",
            json!({"prompts": [[{"say": "before"}, {"exit": 3}]]}),
            "output ended (it exited)",
        ),
        (
            "version",
            json!({"initialize": "version2"}),
            "the agent speaks ACP version 2; kaged speaks version 1",
        ),
    ];
    for (what, script, reason) in cases {
        let env = acp_env(script, "").await;
        let id = env.start("Go.").await;
        let session = wait_state(&env.daemon, &id, &["failed", "exited", "killed"]).await;
        let (records, _) = conversation(&env.daemon, &id, 0).await;
        let all = summarize(&records);
        assert!(
            records.iter().any(|r| kind(r) == "error"
                && r["event"]["code"] == "acp"
                && r["event"]["message"].as_str().unwrap().contains(reason)),
            "{what}: {all}\n{session}\n{}",
            env.daemon.stderr.lock().unwrap().join("\n")
        );
        if what != "version" {
            assert_eq!(said(&records), "before", "{what}: kept: {all}");
            assert_eq!(reason_of(&records), "error", "{what}: {all}");
        }
        if what != "exit mid-turn" {
            assert_eq!(session["state"], "failed", "{what}: {session}");
            assert!(
                session["reason"].as_str().unwrap().contains(reason),
                "{what}: {session}"
            );
        }
        let (status, _) = env.daemon.call(Method::GET, "/healthz", None).await;
        assert!(status.is_success(), "{what}: the daemon is up");
    }
}

/// An agent program missing from the cage fails the run with the shim's reason (not just
/// "the output ended").
#[tokio::test]
async fn an_agent_missing_from_its_cage_is_named_in_the_reason() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("proj");
    std::fs::create_dir_all(root.join(".kaged")).unwrap();
    std::fs::write(
        root.join(".kaged/project.yaml"),
        "version: 1\nproject: acp\nprimary:\n  command: [no-such-acp-agent, --acp]\n  protocol: acp\n",
    )
    .unwrap();
    cage_writable(&root);
    let daemon = start_daemon(&tmp.path().join("home"), &[]);
    load_project_at(&daemon, &root).await;
    let id = create_agent(&daemon, "acp", "primary", Some("Hello?")).await;
    let session = wait_state(&daemon, &id, &["failed", "exited"]).await;
    let (records, _) = conversation(&daemon, &id, 0).await;
    let want = "could not be started in its cage: cannot run no-such-acp-agent";
    assert!(
        records
            .iter()
            .any(|r| kind(r) == "error" && r["event"]["message"].as_str().unwrap().contains(want)),
        "{}\n{session}",
        summarize(&records)
    );
    assert_eq!(session["state"], "failed", "{session}");
    assert!(
        session["reason"].as_str().unwrap().contains(want),
        "{session}"
    );
}

/// An agent that never answers `initialize` is given up after 30 s, saying so.
#[tokio::test]
async fn an_agent_silent_at_initialize_is_given_up() {
    let env = acp_env(json!({"initialize": "never"}), "").await;
    let id = env.start("Hello?").await;
    let session = env.failed(&id).await;
    assert!(
        session["reason"]
            .as_str()
            .unwrap()
            .contains("did not answer `initialize` within 30 s"),
        "{session}"
    );
}

/// After kaged restarts, a message resumes the session with a new agent process: one that can
/// load sessions takes up its own (its replay is not recorded twice); one that cannot starts a
/// new one.
#[tokio::test]
async fn after_a_restart_an_agent_takes_up_its_own_session_when_it_can() {
    for can_load in [true, false] {
        let script = json!({"load": can_load, "prompts": [[{"session": true}]]});
        let mut env = acp_env(script, "").await;
        let id = env.start("One.").await;
        let records = env.turn(&id, 1).await;
        assert_eq!(said(&records), "session s-1 new", "{}", summarize(&records));
        let (status, log) = env.daemon.stop();
        assert!(status.success(), "{log}");
        env.daemon = start_daemon(&env.home, &[]);
        send_message(&env.daemon, &id, "Two.").await;
        let records = env.turn(&id, 2).await;
        let all = summarize(&records);
        let want = if can_load {
            "session s-1 loaded"
        } else {
            "session s-1 new"
        };
        assert!(said(&records).ends_with(want), "{can_load}: {all}");
        assert!(
            !all.contains("REPLAYED"),
            "the replay is not recorded again: {all}"
        );
        let sessions: Vec<(String, bool)> = records
            .iter()
            .filter(|r| kind(r) == "acp_session")
            .map(|r| {
                (
                    r["event"]["session_id"].as_str().unwrap().to_string(),
                    r["event"]["loaded"].as_bool().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            sessions,
            [("s-1".to_string(), false), ("s-1".to_string(), can_load)],
            "{all}"
        );
    }
}

/// An agent that offers session modes is switched to the project's `mode:`, else to its own
/// `default` (an adapter that starts in a mode that never asks does ask); a mode it does not
/// offer fails the run with the ones it does.
#[tokio::test]
async fn the_session_mode_is_the_projects_else_the_agents_default() {
    let modes = json!({"current": "auto", "available": ["auto", "default", "plan"]});
    for (extra, want) in [("", "default"), ("  mode: plan\n", "plan")] {
        let script = json!({"modes": modes, "prompts": [[{"mode": true}]]});
        let env = acp_env(script, extra).await;
        let id = env.start("Which mode?").await;
        let records = env.turn(&id, 1).await;
        let all = summarize(&records);
        assert_eq!(said(&records), format!("mode {want}"), "{all}");
        let started: Vec<&Value> = records
            .iter()
            .filter(|r| kind(r) == "acp_session")
            .collect();
        assert_eq!(started.len(), 1, "{all}");
        assert_eq!(started[0]["event"]["mode"], want, "{all}");
    }
    let script = json!({"modes": modes, "prompts": [[{"mode": true}]]});
    let env = acp_env(script, "  mode: yolo\n").await;
    let id = env.start("Which mode?").await;
    let session = env.failed(&id).await;
    let reason = session["reason"].as_str().unwrap();
    assert!(
        reason.contains("no session mode `yolo`") && reason.contains("auto, default, plan"),
        "{session}"
    );
}
