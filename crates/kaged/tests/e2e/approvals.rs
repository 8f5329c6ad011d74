//! Approvals through the real daemon and the provider test server: a model agent asks for
//! `shell.bash` under `approval: ask`; the approval shows in the API, in `kaged approvals list`,
//! on the operator's event stream and in the session's log; approving (from the CLI) runs the
//! command in the cage, denying gives the model the operator's message, approving for the
//! session lets the next call run unasked; two deciders at once get one 200 and one 409; a
//! pending approval survives a daemon restart; `approval: deny` hides the tool from the model;
//! `approval_timeout_secs` denies what no one answered; an abort or a kill cancels what is
//! pending; on a shared box another user cannot decide someone else's approval.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

use std::process::Output;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::{Message, client::IntoClientRequest};

use crate::common::provider::*;
use crate::common::{Daemon, kaged_cmd, plain_client};

/// `primary`'s tools when `shell.bash` needs an approval.
const ASK: &str = "  tools: { shell.bash: { approval: ask } }\n";

/// A provider, a daemon (with `config` as its `config.toml`, if any) and the project `agents`
/// whose `primary` has `primary_extra`.
async fn setup(primary_extra: &str, config: Option<&str>) -> ModelEnv {
    ModelEnv::start_spec(EnvSpec {
        primary_extra,
        config,
        fail_on_panics: true,
        ..EnvSpec::default()
    })
    .await
}

/// A reply asking for one `shell.bash` of `command`.
fn bash(call_id: &str, command: &str) -> Reply {
    tool_reply(
        COMPLETIONS,
        &[Call::new(
            call_id,
            "shell.bash",
            &json!({ "command": command }),
        )],
    )
}

/// `GET path` with the nonce; the body (asserting 200).
async fn get(d: &Daemon, path: &str) -> Value {
    let (status, v) = d.call(Method::GET, path, None).await;
    assert_eq!(status, StatusCode::OK, "GET {path}: {v}");
    v
}

/// The id of the one approval `session` waits for, once it does.
async fn pending_id(d: &Daemon, session: &str) -> String {
    wait_pending(d, session, 1).await[0]["id"]
        .as_str()
        .unwrap()
        .to_string()
}

/// `GET /api/v1/approvals/{id}`.
async fn approval(d: &Daemon, id: &str) -> Value {
    get(d, &format!("/api/v1/approvals/{id}")).await
}

/// `POST /api/v1/approvals/{id}` with the nonce.
async fn decide(d: &Daemon, id: &str, body: Value) -> (StatusCode, Value) {
    d.call(Method::POST, &format!("/api/v1/approvals/{id}"), Some(body))
        .await
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).to_string()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).to_string()
}

/// What kaged sent the model as the result of `call_id` (the Chat Completions `tool` message),
/// in the request that carries it.
fn sent_result(requests: &[RecordedRequest], call_id: &str) -> String {
    requests
        .iter()
        .flat_map(|r| r.body["messages"].as_array().cloned().unwrap_or_default())
        .find(|m| m["role"] == "tool" && m["tool_call_id"] == call_id)
        .and_then(|m| m["content"].as_str().map(String::from))
        .unwrap_or_else(|| panic!("no request carries the result of {call_id}"))
}

/// The conversation through the end of a turn after an approval's decision.
async fn finished_turn(d: &Daemon, id: &str) -> Vec<Value> {
    wait_conversation(d, id, |r| {
        is_turn_ended(r) && r.get("parent_call_id").is_none()
    })
    .await
}

/// The operator's event stream (`GET /api/v1/events`), with the nonce.
pub(crate) struct OperatorWs {
    ws: AgentWs,
    seen: Vec<Value>,
}

impl OperatorWs {
    pub(crate) async fn open(d: &Daemon) -> OperatorWs {
        let url = format!("{}/api/v1/events", d.base.replacen("http://", "ws://", 1));
        let mut request = url.as_str().into_client_request().unwrap();
        request
            .headers_mut()
            .insert("x-kaged-auth-nonce", d.nonce().parse().unwrap());
        let (ws, _) = tokio_tungstenite::connect_async(request).await.unwrap();
        let mut ws = OperatorWs {
            ws,
            seen: Vec::new(),
        };
        let hello = ws.until(|e| e["type"] == "hello").await;
        assert!(hello["identity"].is_string(), "{hello}");
        ws
    }

    /// The first event satisfying `done`.
    pub(crate) async fn until(&mut self, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = tokio::time::Instant::now() + AGENT_PATIENCE;
        loop {
            let frame = tokio::time::timeout_at(deadline, self.ws.next())
                .await
                .unwrap_or_else(|_| panic!("not on the events stream; saw {:?}", self.seen));
            match frame {
                Some(Ok(Message::Text(t))) => {
                    let v: Value = serde_json::from_str(&t).unwrap();
                    self.seen.push(v.clone());
                    if done(&v) {
                        return v;
                    }
                }
                Some(Ok(_)) => {}
                other => panic!("the events stream ended: {other:?}; saw {:?}", self.seen),
            }
        }
    }
}

/// The full path: the approval is everywhere while pending and nothing ran; `kaged approvals
/// approve` runs the command in the cage and the model gets its output; the record, the
/// stream, the log and the transcript say who decided; a second decision is refused.
#[tokio::test]
async fn an_approved_call_shows_everywhere_then_runs_in_the_cage() {
    let env = setup(ASK, None).await;
    let (d, p) = (&env.daemon, &env.provider);
    let mut events = OperatorWs::open(d).await;
    p.push(bash(
        "call_make",
        "echo approved > made.txt; echo ran-$((40+2))",
    ));
    p.push(text_reply(COMPLETIONS, &["Made ", "it."]));
    let id = env.create("Make the file.").await;

    let pending = wait_pending(d, &id, 1).await;
    assert_eq!(pending.len(), 1, "{pending:?}");
    let a = &pending[0];
    let apr = a["id"].as_str().unwrap().to_string();
    assert!(
        apr.starts_with("apr_")
            && apr.len() == 20
            && apr[4..].bytes().all(|b| b.is_ascii_hexdigit()),
        "{a}"
    );
    assert_eq!(a["session_id"], id.as_str(), "{a}");
    assert_eq!(a["project"], "agents", "{a}");
    assert_eq!(a["agent"], "primary", "{a}");
    assert_eq!(a["tool"], "shell.bash", "{a}");
    assert_eq!(a["call_id"], "call_make", "{a}");
    assert_eq!(a["parent_call_id"], Value::Null, "{a}");
    assert_eq!(
        a["arguments"],
        json!({"command": "echo approved > made.txt; echo ran-$((40+2))"}),
        "{a}"
    );
    assert_eq!(a["state"], "pending", "{a}");
    for k in [
        "decision",
        "message",
        "decided_by",
        "reason",
        "decided_at_ms",
    ] {
        assert_eq!(a[k], Value::Null, "{k}: {a}");
    }
    assert!(a["requested_at_ms"].as_i64().unwrap() > 0, "{a}");
    let (status, v) = d
        .call(Method::GET, "/api/v1/approvals?state=maybe", None)
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{v}");
    assert_eq!(v["error"]["code"], "bad_request", "{v}");
    // Paused: nothing ran, the model was not asked again.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!env.project.join("made.txt").exists(), "it ran unapproved");
    assert_eq!(p.requests().len(), 1);

    // The CLI: the API's array as-is, and a table row.
    let out = d.cli(&["approvals", "list", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let listed: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(listed, json!(pending), "{}", stdout(&out));
    let out = d.cli(&["approvals", "list"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let table = stdout(&out);
    let row = table
        .lines()
        .find(|l| l.starts_with(&apr))
        .unwrap_or_else(|| panic!("{table}"));
    for cell in [
        "agents",
        "primary",
        "shell.bash",
        "echo approved > made.txt",
        "pending",
    ] {
        assert!(row.contains(cell), "{cell}: {table}");
    }
    let out = d.cli(&["approvals", "list", "--project", "agents"]);
    assert!(
        stdout(&out).lines().any(|l| l.starts_with(&apr)),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );

    // The operator's stream and the session's log.
    let requested = events
        .until(|e| e["type"] == "approval.requested" && e["approval"]["id"] == apr.as_str())
        .await;
    assert_eq!(requested["approval"]["tool"], "shell.bash", "{requested}");
    assert_eq!(requested["approval"]["state"], "pending", "{requested}");
    let records = wait_conversation(d, &id, |r| kind(r) == "approval_requested").await;
    let at = |k: &str| records.iter().position(|r| kind(r) == k).unwrap();
    assert_eq!(
        at("approval_requested"),
        at("tool_call") + 1,
        "{}",
        summarize(&records)
    );
    let asked = &records[at("approval_requested")]["event"];
    assert_eq!(asked["approval_id"], apr.as_str(), "{asked}");
    assert_eq!(asked["call_id"], "call_make", "{asked}");
    assert_eq!(asked["tool"], "shell.bash", "{asked}");
    assert_eq!(asked["arguments"], a["arguments"], "{asked}");

    // `kaged session attach` shows the waiting call and the commands that decide it.
    let out = d.cli(&["session", "attach", &id]);
    assert!(out.status.success(), "{}", stderr(&out));
    let shown = stdout(&out);
    assert!(
        shown.contains(&format!(
            "⏸ waiting for approval {apr}: shell.bash echo approved > made.txt; echo ran-$((40+2))\n  kaged approvals approve {apr}  |  kaged approvals deny {apr} --message TEXT\n"
        )),
        "{shown}"
    );

    // An unknown id: the daemon's message, exit 1; not an id at all: a usage error.
    let out = d.cli(&["approvals", "approve", "apr_0000000000000000"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stdout(&out).is_empty(), "{}", stdout(&out));
    assert!(
        stderr(&out).contains("apr_0000000000000000"),
        "{}",
        stderr(&out)
    );
    let out = d.cli(&["approvals", "deny", "../sessions"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));

    // Approve from the CLI: the command runs in the cage, the model gets its output.
    let out = d.cli(&["approvals", "approve", &apr]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        format!("approved {apr} (shell.bash in agents)\n")
    );
    let records = finished_turn(d, &id).await;
    let all = summarize(&records);
    assert_eq!(turn_end_reasons(&records), ["end_turn"], "{all}");
    let decided = of_kind(&records, "approval_decided");
    assert_eq!(decided.len(), 1, "{all}");
    let decided = &decided[0]["event"];
    assert_eq!(decided["approval_id"], apr.as_str(), "{decided}");
    assert_eq!(decided["state"], "approved", "{decided}");
    assert_eq!(decided["decision"], "approve", "{decided}");
    assert!(decided["decided_by"].is_string(), "{decided}");
    let result = of_kind(&records, "tool_result")[0]["event"].clone();
    assert_eq!(result["call_id"], "call_make", "{all}");
    assert_eq!(result["ok"], true, "{result}");
    assert!(
        result["content"].as_str().unwrap().contains("ran-42"),
        "{result}"
    );
    assert!(
        at("approval_requested")
            < records
                .iter()
                .position(|r| kind(r) == "approval_decided")
                .unwrap()
            && records
                .iter()
                .position(|r| kind(r) == "approval_decided")
                .unwrap()
                < records
                    .iter()
                    .position(|r| kind(r) == "tool_result")
                    .unwrap(),
        "{all}"
    );
    assert_eq!(
        std::fs::read_to_string(env.project.join("made.txt")).unwrap(),
        "approved\n",
        "the command did not run in the project"
    );
    let requests = p.wait_requests(2).await;
    assert!(sent_result(&requests, "call_make").contains("ran-42"));

    // The record and the stream say who decided; nothing is pending any more.
    let record = approval(d, &apr).await;
    assert_eq!(record["state"], "approved", "{record}");
    assert_eq!(record["decision"], "approve", "{record}");
    assert_eq!(record["decided_by"], decided["decided_by"], "{record}");
    assert!(record["decided_at_ms"].as_i64().unwrap() >= a["requested_at_ms"].as_i64().unwrap());
    let done = events
        .until(|e| e["type"] == "approval.decided" && e["approval"]["id"] == apr.as_str())
        .await;
    assert_eq!(done["approval"]["state"], "approved", "{done}");
    assert!(wait_pending_none(d, &id).await);
    let out = d.cli(&["approvals", "list"]);
    assert_eq!(stdout(&out).trim(), "no pending approvals");
    let out = d.cli(&["approvals", "list", "--all"]);
    assert!(
        stdout(&out)
            .lines()
            .any(|l| l.starts_with(&apr) && l.ends_with("approved")),
        "{}",
        stdout(&out)
    );

    // A second decision: refused, saying it was decided.
    let out = d.cli(&["approvals", "deny", &apr, "--message", "too late"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let said = stderr(&out);
    assert!(
        said.starts_with(&format!("kaged: {apr} was already decided: approved")),
        "{said}"
    );
    assert_eq!(said.matches("already decided").count(), 1, "{said}");
    assert_eq!(said.lines().count(), 1, "{said}");
    assert_eq!(approval(d, &apr).await["state"], "approved");

    // The terminal's views of the conversation.
    let out = d.cli(&["session", "transcript", &id]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains(&format!("waiting for approval {apr}: shell.bash ")),
        "{text}"
    );
    assert!(
        text.contains(&format!("approval: approved {apr} by ")),
        "{text}"
    );
}

/// Whether the session has no pending approval (polled briefly for the record to settle).
async fn wait_pending_none(d: &Daemon, session: &str) -> bool {
    for _ in 0..50 {
        let v = get(
            d,
            &format!("/api/v1/approvals?state=pending&session={session}"),
        )
        .await;
        if v["approvals"].as_array().unwrap().is_empty() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

/// Denied with a message from the CLI: nothing runs, and the model's next request carries the
/// message as the tool's result.
#[tokio::test]
async fn a_denied_call_does_not_run_and_the_model_gets_the_message() {
    let env = setup(ASK, None).await;
    let (d, p) = (&env.daemon, &env.provider);
    p.push(bash("call_rm", "echo ran > ran.txt"));
    p.push(text_reply(COMPLETIONS, &["Understood."]));
    let id = env.create("Clean up.").await;
    let apr = pending_id(d, &id).await;
    let out = d.cli(&[
        "approvals",
        "deny",
        &apr,
        "--message",
        "use make clean instead",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        format!("denied {apr} (shell.bash in agents)\n")
    );
    let records = finished_turn(d, &id).await;
    let all = summarize(&records);
    let result = &of_kind(&records, "tool_result")[0]["event"];
    assert_eq!(result["ok"], false, "{all}");
    assert_eq!(
        result["content"], "denied by the operator: use make clean instead",
        "{all}"
    );
    let decided = &of_kind(&records, "approval_decided")[0]["event"];
    assert_eq!(decided["state"], "denied", "{decided}");
    assert_eq!(decided["message"], "use make clean instead", "{decided}");
    let requests = p.wait_requests(2).await;
    assert_eq!(
        sent_result(&requests, "call_rm"),
        "denied by the operator: use make clean instead"
    );
    assert!(
        !env.project.join("ran.txt").exists(),
        "a denied command ran"
    );
    let record = approval(d, &apr).await;
    assert_eq!(
        (&record["state"], &record["decision"], &record["message"]),
        (
            &json!("denied"),
            &json!("deny"),
            &json!("use make clean instead")
        ),
        "{record}"
    );
    // A message goes with a deny only.
    p.push(bash("call_two", "true"));
    p.push(text_reply(COMPLETIONS, &["ok"]));
    send_message(d, &id, "Again.").await;
    let second = pending_id(d, &id).await;
    let (status, v) = decide(d, &second, json!({"decision": "approve", "message": "x"})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{v}");
    assert_eq!(v["error"]["code"], "bad_request", "{v}");
    let (status, v) = decide(d, &second, json!({"decision": "maybe"})).await;
    assert!(status.is_client_error(), "{status} {v}");
    assert_eq!(approval(d, &second).await["state"], "pending");
}

/// Approved for the session: the agent's next `shell.bash` runs without a new approval.
#[tokio::test]
async fn approve_for_the_session_lets_the_next_call_run_unasked() {
    let env = setup(
        "  tools: { shell.bash: { approval: ask }, file.write: { approval: ask } }\n",
        None,
    )
    .await;
    let (d, p) = (&env.daemon, &env.provider);
    p.push(bash("call_one", "echo one > one.txt"));
    p.push(bash("call_two", "echo two > two.txt"));
    p.push(text_reply(COMPLETIONS, &["Both."]));
    let id = env.create("Write two files.").await;
    let apr = pending_id(d, &id).await;
    let out = d.cli(&["approvals", "approve", &apr, "--session"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        format!("approved {apr} for this session (shell.bash in agents)\n")
    );
    let records = finished_turn(d, &id).await;
    let all = summarize(&records);
    assert_eq!(turn_end_reasons(&records), ["end_turn"], "{all}");
    assert_eq!(of_kind(&records, "approval_requested").len(), 1, "{all}");
    assert_eq!(of_kind(&records, "tool_result").len(), 2, "{all}");
    for r in of_kind(&records, "tool_result") {
        assert_eq!(r["event"]["ok"], true, "{all}");
    }
    assert!(env.project.join("one.txt").exists() && env.project.join("two.txt").exists());
    let v = get(d, &format!("/api/v1/approvals?session={id}")).await;
    let list = v["approvals"].as_array().unwrap();
    assert_eq!(list.len(), 1, "{v}");
    assert_eq!(list[0]["decision"], "approve_session", "{v}");

    // And in the next turn too.
    p.push(bash("call_three", "echo three > three.txt"));
    p.push(text_reply(COMPLETIONS, &["Three."]));
    let (_, last) = conversation(d, &id, 0).await;
    let mut ws = EventsWs::open(d, &id, last).await;
    send_message(d, &id, "One more.").await;
    let turn = ws.until_turn_ended().await;
    assert!(
        of_kind(&turn, "approval_requested").is_empty(),
        "{}",
        summarize(&turn)
    );
    assert!(env.project.join("three.txt").exists());

    // Only that tool: a file.write still asks.
    p.push(tool_reply(
        COMPLETIONS,
        &[Call::new(
            "call_write",
            "file.write",
            &json!({"path": "w.txt", "content": "w"}),
        )],
    ));
    send_message(d, &id, "Write.").await;
    let asked = wait_pending(d, &id, 1).await;
    assert_eq!(asked[0]["tool"], "file.write", "{asked:?}");
    assert!(!env.project.join("w.txt").exists());
}

/// Two clients decide at once: one gets 200, the other 409 `conflict`, and the record (and what
/// happened) is the winner's.
#[tokio::test]
async fn two_deciders_at_once_one_wins_the_other_gets_409() {
    let env = setup(ASK, None).await;
    let (d, p) = (&env.daemon, &env.provider);
    p.push(bash("call_race", "echo raced > raced.txt"));
    p.push(text_reply(COMPLETIONS, &["Done."]));
    let id = env.create("Race.").await;
    let apr = pending_id(d, &id).await;
    let (a, b) = tokio::join!(
        decide(d, &apr, json!({"decision": "approve"})),
        decide(d, &apr, json!({"decision": "deny", "message": "no"})),
    );
    let statuses = [a.0, b.0];
    assert!(
        statuses.contains(&StatusCode::OK) && statuses.contains(&StatusCode::CONFLICT),
        "{a:?} {b:?}"
    );
    let (winner, loser) = if a.0 == StatusCode::OK {
        (a, b)
    } else {
        (b, a)
    };
    assert_eq!(loser.1["error"]["code"], "conflict", "{}", loser.1);
    assert!(
        loser.1["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty())
    );
    let won = winner.1.get("approval").unwrap_or(&winner.1).clone();
    // The loser is told who decided first, and how.
    let told = loser.1["error"]["message"].as_str().unwrap();
    let how = if won["decision"] == "approve" {
        "approved"
    } else {
        "denied"
    };
    assert!(
        told.contains(how) && told.contains(won["decided_by"].as_str().unwrap()),
        "{told} vs {won}"
    );
    let record = approval(d, &apr).await;
    assert_eq!(record["decision"], won["decision"], "{record} vs {won}");
    assert_eq!(record["state"], won["state"], "{record} vs {won}");
    let records = finished_turn(d, &id).await;
    assert_eq!(
        of_kind(&records, "approval_decided").len(),
        1,
        "{}",
        summarize(&records)
    );
    let ran = env.project.join("raced.txt").exists();
    assert_eq!(ran, record["decision"] == "approve", "{record}");
}

/// A daemon stopped while an approval waits: the restarted daemon still lists it, and
/// approving it resumes the conversation and runs the command.
#[tokio::test]
async fn a_pending_approval_survives_a_restart_and_can_still_be_approved() {
    let env = setup(ASK, None).await;
    let ModelEnv {
        daemon,
        provider: p,
        home,
        project,
        tmp: _tmp,
        ..
    } = env;
    p.push(bash(
        "call_later",
        "echo later > later.txt; echo resumed-ok",
    ));
    let id = create_agent(&daemon, "agents", "primary", Some("Do it later.")).await;
    let apr = wait_pending(&daemon, &id, 1).await[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let (status, log) = daemon.stop();
    assert!(status.success(), "{status}: {log}");

    let d = start_daemon(&home, &[]).failing_on_panics();
    let pending = wait_pending(&d, &id, 1).await;
    assert_eq!(pending[0]["id"], apr.as_str(), "{pending:?}");
    assert_eq!(pending[0]["state"], "pending");
    assert!(!project.join("later.txt").exists());
    p.push(text_reply(COMPLETIONS, &["Done ", "later."]));
    let out = d.cli(&["approvals", "approve", &apr]);
    assert!(out.status.success(), "{}", stderr(&out));
    let records = wait_conversation(&d, &id, |r| {
        kind(r) == "tool_result" && r["event"]["call_id"] == "call_later"
    })
    .await;
    let result = &of_kind(&records, "tool_result")[0]["event"];
    assert_eq!(result["ok"], true, "{}", summarize(&records));
    assert!(
        result["content"].as_str().unwrap().contains("resumed-ok"),
        "{result}"
    );
    assert_eq!(
        std::fs::read_to_string(project.join("later.txt")).unwrap(),
        "later\n"
    );
    let requests = p.wait_requests(2).await;
    assert!(sent_result(&requests, "call_later").contains("resumed-ok"));
    let records = finished_turn(&d, &id).await;
    assert!(
        streamed_text(&records).contains("Done later."),
        "{}",
        summarize(&records)
    );
}

/// `approval: deny`: the tool is not offered to the model at all.
#[tokio::test]
async fn a_denied_tool_is_not_offered_to_the_model() {
    let env = setup("  tools: { shell.bash: { approval: deny } }\n", None).await;
    env.provider.push(text_reply(COMPLETIONS, &["Hi."]));
    env.create("Hello.").await;
    let requests = env.provider.wait_requests(1).await;
    let offered: Vec<&str> = requests[0].body["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["function"]["name"].as_str().unwrap())
        .collect();
    assert!(!offered.contains(&"shell__bash"), "{offered:?}");
    assert!(offered.contains(&"file__read"), "{offered:?}");

    // A model that calls it anyway gets a failure; nothing runs, nothing is asked.
    let result = call_denied_tool(&env).await;
    assert_eq!(result["ok"], false, "{result}");
}

/// A model calls `shell.bash` (by its wire name, as models do) though the project denies it:
/// the failed result, with nothing run and nothing asked.
async fn call_denied_tool(env: &ModelEnv) -> Value {
    let d = &env.daemon;
    env.provider.push(bash("call_no", "echo ran > ran.txt"));
    env.provider.push(text_reply(COMPLETIONS, &["Ok."]));
    let id = env.create("Try it.").await;
    let records = finished_turn(d, &id).await;
    let all = summarize(&records);
    assert!(of_kind(&records, "approval_requested").is_empty(), "{all}");
    assert!(!env.project.join("ran.txt").exists(), "{all}");
    of_kind(&records, "tool_result")[0]["event"].clone()
}

/// The model that calls a denied tool is told it is not allowed (not that it is unknown).
/// (The model calls it by its wire name, `shell__bash`; kaged records and judges the
/// dotted name.)
#[tokio::test]
async fn a_call_of_a_denied_tool_is_told_it_is_not_allowed() {
    let env = setup("  tools: { shell.bash: { approval: deny } }\n", None).await;
    let result = call_denied_tool(&env).await;
    assert_eq!(result["ok"], false, "{result}");
    assert!(
        result["content"].as_str().unwrap().contains("not allowed"),
        "{result}"
    );
}

/// `[sessions] approval_timeout_secs = 2`: an approval no one answers is denied by `kaged`,
/// saying why, and the model receives that.
#[tokio::test]
async fn an_unanswered_approval_is_denied_after_the_timeout() {
    let env = setup(ASK, Some("[sessions]\napproval_timeout_secs = 2\n")).await;
    let (d, p) = (&env.daemon, &env.provider);
    p.push(bash("call_slow", "echo ran > ran.txt"));
    p.push(text_reply(COMPLETIONS, &["Fine."]));
    let started = Instant::now();
    let id = env.create("Wait for it.").await;
    let apr = pending_id(d, &id).await;
    let records = wait_conversation(d, &id, |r| kind(r) == "approval_decided").await;
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "decided too soon"
    );
    let decided = &of_kind(&records, "approval_decided")[0]["event"];
    assert_eq!(decided["decided_by"], "kaged", "{decided}");
    assert_eq!(decided["state"], "denied", "{decided}");
    let reason = "no decision within 2 s (approval_timeout_secs)";
    assert_eq!(decided["reason"], reason, "{decided}");
    let record = approval(d, &apr).await;
    assert_eq!(
        (
            &record["state"],
            &record["decision"],
            &record["decided_by"],
            &record["reason"]
        ),
        (
            &json!("denied"),
            &json!("deny"),
            &json!("kaged"),
            &json!(reason)
        ),
        "{record}"
    );
    let requests = p.wait_requests(2).await;
    assert_eq!(
        sent_result(&requests, "call_slow"),
        format!("denied: {reason}")
    );
    assert!(!env.project.join("ran.txt").exists());
}

/// On a shared box (user tokens) only the run's owner or the local operator decides: another
/// user gets 403 from the API and from the CLI; the owner's decision is audited as theirs.
#[tokio::test]
async fn another_user_cannot_decide_someone_elses_approval() {
    let env = setup(ASK, None).await;
    let (d, p) = (&env.daemon, &env.provider);
    let token_for = |actor: &str| {
        let out = d.cli(&["tokens", "create", "--actor", actor]);
        assert!(out.status.success(), "{}", stderr(&out));
        stdout(&out).trim().to_string()
    };
    let (alice, bob) = (token_for("alice"), token_for("bob"));
    let as_user = |token: &str, method: Method, path: &str| {
        plain_client()
            .request(method, format!("{}{path}", d.base))
            .header("authorization", format!("Bearer {token}"))
    };
    p.push(bash("call_alice", "echo alice > alice.txt"));
    p.push(text_reply(COMPLETIONS, &["Done."]));
    let created = as_user(&alice, Method::POST, "/api/v1/projects/agents/sessions")
        .json(&json!({"kind": "agent", "name": "primary", "message": "Go."}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), StatusCode::CREATED);
    let body: Value = created.json().await.unwrap();
    let id = body["session"]["id"].as_str().unwrap().to_string();
    let pending = wait_pending(d, &id, 1).await;
    let apr = pending[0]["id"].as_str().unwrap().to_string();
    assert_eq!(pending[0]["owner"], "alice", "{pending:?}");

    // Bob: refused by the API and by the CLI (with the daemon's message).
    let refused = as_user(&bob, Method::POST, &format!("/api/v1/approvals/{apr}"))
        .json(&json!({"decision": "approve"}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["code"], "forbidden", "{body}");
    let message = body["error"]["message"].as_str().unwrap().to_string();
    let out = kaged_cmd(&[("KAGED_SERVER", &d.base), ("KAGED_AUTH_TOKEN", &bob)])
        .args(["approvals", "deny", &apr])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_eq!(stderr(&out).trim(), format!("kaged: {message}"));
    assert_eq!(approval(d, &apr).await["state"], "pending");
    assert!(!env.project.join("alice.txt").exists());

    // Alice may, from a remote CLI.
    let out = kaged_cmd(&[("KAGED_SERVER", &d.base), ("KAGED_AUTH_TOKEN", &alice)])
        .args(["approvals", "approve", &apr])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let record = approval(d, &apr).await;
    assert_eq!(record["decided_by"], "alice", "{record}");
    let audit = d.api_get("/api/v1/audit?limit=1000").await;
    let of = |kind: &str| -> Vec<Value> {
        audit["events"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["kind"] == kind && e["detail"]["approval"] == apr.as_str())
            .cloned()
            .collect()
    };
    let asked = of("approval.requested");
    assert_eq!(asked.len(), 1, "{audit}");
    assert_eq!(asked[0]["detail"]["tool"], "shell.bash", "{audit}");
    let decided = of("approval.decided");
    assert_eq!(decided.len(), 1, "bob's refusal is no decision: {audit}");
    assert_eq!(decided[0]["identity"], "alice", "{audit}");
    assert_eq!(decided[0]["detail"]["decision"], "approve", "{audit}");
    finished_turn(d, &id).await;
    assert!(env.project.join("alice.txt").exists());
}

/// An abort of the turn cancels its pending approval: decided by `kaged`, saying why; nothing
/// runs; a later decision is told it was cancelled.
#[tokio::test]
async fn an_abort_cancels_the_pending_approval() {
    let env = setup(ASK, None).await;
    let (d, p) = (&env.daemon, &env.provider);
    p.push(bash("call_a", "echo a > a.txt"));
    let id = env.create("First.").await;
    let apr = pending_id(d, &id).await;
    abort(d, &id).await;
    let records = wait_conversation(d, &id, is_turn_ended).await;
    let all = summarize(&records);
    assert_eq!(turn_end_reasons(&records), ["aborted"], "{all}");
    let decided = &of_kind(&records, "approval_decided")[0]["event"];
    assert_eq!(decided["state"], "cancelled", "{all}");
    assert_eq!(decided["decided_by"], "kaged", "{all}");
    assert_eq!(decided["reason"], "the turn was aborted", "{all}");
    let record = approval(d, &apr).await;
    assert_eq!(
        (&record["state"], &record["decided_by"], &record["reason"]),
        (
            &json!("cancelled"),
            &json!("kaged"),
            &json!("the turn was aborted")
        ),
        "{record}"
    );
    let out = d.cli(&["approvals", "approve", &apr]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(
        stderr(&out).starts_with(&format!("kaged: {apr} was already decided: cancelled")),
        "{}",
        stderr(&out)
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!env.project.join("a.txt").exists());
    assert_eq!(p.requests().len(), 1, "the model was asked again");
}

/// A kill of the session cancels its pending approval, and the killed session makes no
/// further model call.
/// (An abort does the same: see the test above.)
#[tokio::test]
async fn a_kill_cancels_the_pending_approval_and_asks_the_model_nothing_more() {
    let env = setup(ASK, None).await;
    let (d, p) = (&env.daemon, &env.provider);
    p.push(bash("call_b", "echo b > b.txt"));
    let id = env.create("Go.").await;
    let apr = pending_id(d, &id).await;
    let (status, v) = d
        .call(Method::POST, &format!("/api/v1/sessions/{id}/kill"), None)
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{v}");
    let start = Instant::now();
    let record = loop {
        let record = approval(d, &apr).await;
        if record["state"] != "pending" {
            break record;
        }
        assert!(start.elapsed() < AGENT_PATIENCE, "still pending: {record}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(
        (&record["state"], &record["decided_by"], &record["reason"]),
        (
            &json!("cancelled"),
            &json!("kaged"),
            &json!("the session was killed")
        ),
        "{record}"
    );
    wait_state(d, &id, &["killed", "failed"]).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!env.project.join("b.txt").exists());
    assert_eq!(
        p.requests().len(),
        1,
        "the killed session asked the model again:\n{}",
        summarize(&conversation(d, &id, 0).await.0)
    );
}

/// Approvals inside a subagent: the parent's call of `agent.helper` (under `ask`) waits first;
/// then the helper's own `shell.bash` (under `ask` in its tools) waits with the parent's call
/// id and the helper's name; approving both runs the command and the parent gets the answer.
#[tokio::test]
async fn a_subagents_calls_wait_for_approval_under_the_parents_call() {
    let agents = "  tools: { agent.helper: { approval: ask } }\n  subagents:\n    helper:\n      model: fast\n      system_prompt: project:/prompts/helper.md\n      tools: { shell.bash: { approval: ask } }\n";
    let env = setup(agents, None).await;
    std::fs::write(
        env.project.join("prompts/helper.md"),
        "You are the helper.\n",
    )
    .unwrap();
    crate::common::cage_writable(&env.project);
    let (d, p) = (&env.daemon, &env.provider);
    p.push(tool_reply(
        COMPLETIONS,
        &[Call::new(
            "call_sub",
            "agent.helper",
            &json!({"task": "Make the file."}),
        )],
    ));
    p.push(bash("call_inner", "echo inner > inner.txt; echo inner-ok"));
    p.push(text_reply(COMPLETIONS, &["Helper made it."]));
    p.push(text_reply(COMPLETIONS, &["The helper made it."]));
    let id = env.create("Delegate.").await;

    let outer = wait_pending(d, &id, 1).await[0].clone();
    assert_eq!(outer["tool"], "agent.helper", "{outer}");
    assert_eq!(outer["agent"], "primary", "{outer}");
    assert_eq!(outer["arguments"]["task"], "Make the file.", "{outer}");
    assert_eq!(p.requests().len(), 1, "the helper ran unapproved");
    let out = d.cli(&["approvals", "list"]);
    assert!(
        stdout(&out)
            .lines()
            .any(|l| l.contains("agent.helper") && l.contains("Make the file.")),
        "{}",
        stdout(&out)
    );
    let out = d.cli(&["approvals", "approve", outer["id"].as_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));

    let inner = loop {
        let list = wait_pending(d, &id, 1).await;
        if list[0]["id"] != outer["id"] {
            break list[0].clone();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(inner["tool"], "shell.bash", "{inner}");
    assert_eq!(inner["agent"], "helper", "{inner}");
    assert_eq!(inner["parent_call_id"], "call_sub", "{inner}");
    assert_eq!(inner["call_id"], "call_inner", "{inner}");
    assert!(!env.project.join("inner.txt").exists());
    let records = wait_conversation(d, &id, |r| {
        kind(r) == "approval_requested" && r["event"]["call_id"] == "call_inner"
    })
    .await;
    let asked = records
        .iter()
        .find(|r| kind(r) == "approval_requested" && r["event"]["call_id"] == "call_inner")
        .unwrap();
    assert_eq!(asked["parent_call_id"], "call_sub", "{asked}");

    let out = d.cli(&["approvals", "approve", inner["id"].as_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        format!(
            "approved {} (shell.bash in agents)\n",
            inner["id"].as_str().unwrap()
        )
    );
    let records = finished_turn(d, &id).await;
    let all = summarize(&records);
    assert_eq!(
        turn_end_reasons(&records).last().map(String::as_str),
        Some("end_turn"),
        "{all}"
    );
    assert_eq!(
        std::fs::read_to_string(env.project.join("inner.txt")).unwrap(),
        "inner\n"
    );
    let requests = p.wait_requests(4).await;
    assert!(sent_result(&requests, "call_inner").contains("inner-ok"));
    assert!(sent_result(&requests, "call_sub").contains("Helper made it."));
}

/// An approval for the session is stored: after a daemon restart, the resumed session's next
/// call of the same tool runs without asking.
#[tokio::test]
async fn approve_for_the_session_holds_after_a_restart() {
    let env = setup(ASK, None).await;
    let ModelEnv {
        daemon,
        provider: p,
        home,
        project,
        tmp: _tmp,
        ..
    } = env;
    p.push(bash("call_one", "echo one > one.txt"));
    p.push(text_reply(COMPLETIONS, &["One."]));
    let id = create_agent(&daemon, "agents", "primary", Some("One.")).await;
    let apr = wait_pending(&daemon, &id, 1).await[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let (status, v) = decide(&daemon, &apr, json!({"decision": "approve_session"})).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    finished_turn(&daemon, &id).await;
    assert!(project.join("one.txt").exists());
    let (status, log) = daemon.stop();
    assert!(status.success(), "{status}: {log}");

    let d = start_daemon(&home, &[]).failing_on_panics();
    p.push(bash("call_two", "echo two > two.txt"));
    p.push(text_reply(COMPLETIONS, &["Two."]));
    let (_, last) = conversation(&d, &id, 0).await;
    let v = send_message(&d, &id, "Two.").await;
    assert_eq!(v["resumed"], true, "{v}");
    let records = wait_conversation(&d, &id, |r| {
        is_turn_ended(r) && r["seq"].as_u64().unwrap() > last
    })
    .await;
    let all = summarize(&records);
    assert_eq!(
        of_kind(&records, "approval_requested").len(),
        1,
        "asked again:\n{all}"
    );
    assert!(project.join("two.txt").exists(), "{all}");
}

/// Two calls needing approval in one reply: both wait at once; one approved, one denied; only
/// the approved one runs, and the model gets both results, in the order it asked.
#[tokio::test]
async fn two_waiting_calls_of_one_reply_are_decided_each_on_its_own() {
    let env = setup(ASK, None).await;
    let (d, p) = (&env.daemon, &env.provider);
    p.push(tool_reply(
        COMPLETIONS,
        &[
            Call::new(
                "call_x",
                "shell.bash",
                &json!({"command": "echo x > x.txt"}),
            ),
            Call::new(
                "call_y",
                "shell.bash",
                &json!({"command": "echo y > y.txt"}),
            ),
        ],
    ));
    p.push(text_reply(COMPLETIONS, &["Half."]));
    let id = env.create("Both.").await;
    let pending = wait_pending(d, &id, 2).await;
    let of_call = |call: &str| {
        pending
            .iter()
            .find(|a| a["call_id"] == call)
            .unwrap_or_else(|| panic!("{call}: {pending:?}"))["id"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let (x, y) = (of_call("call_x"), of_call("call_y"));
    let out = d.cli(&["approvals", "list"]);
    let mut rows: Vec<String> = stdout(&out)
        .lines()
        .skip(1)
        .map(|l| l[..20].to_string())
        .collect();
    rows.sort();
    let mut both = vec![x.clone(), y.clone()];
    both.sort();
    assert_eq!(rows, both, "{}", stdout(&out));
    let out = d.cli(&["approvals", "deny", &y, "--message", "not y"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = d.cli(&["approvals", "approve", &x]);
    assert!(out.status.success(), "{}", stderr(&out));
    let records = finished_turn(d, &id).await;
    let all = summarize(&records);
    assert_eq!(turn_end_reasons(&records), ["end_turn"], "{all}");
    assert!(env.project.join("x.txt").exists(), "{all}");
    assert!(!env.project.join("y.txt").exists(), "{all}");
    let requests = p.wait_requests(2).await;
    assert_eq!(
        sent_result(&requests, "call_y"),
        "denied by the operator: not y"
    );
    let order: Vec<&str> = requests[1].body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["role"] == "tool")
        .map(|m| m["tool_call_id"].as_str().unwrap())
        .collect();
    assert_eq!(order, ["call_x", "call_y"], "{all}");
}

/// A subagent's call waiting when kaged stops: after the restart it is still pending, and
/// approving it runs the command, the subagent answers, and the parent's turn goes on.
/// (The parent's turn and the subagent's are both taken up again from their calls.)
#[tokio::test]
async fn a_subagents_pending_approval_survives_a_restart() {
    let agents = "  subagents:\n    helper:\n      model: fast\n      system_prompt: project:/prompts/helper.md\n      tools: { shell.bash: { approval: ask } }\n";
    let env = setup(agents, None).await;
    std::fs::write(
        env.project.join("prompts/helper.md"),
        "You are the helper.\n",
    )
    .unwrap();
    crate::common::cage_writable(&env.project);
    let ModelEnv {
        daemon,
        provider: p,
        home,
        project,
        tmp: _tmp,
        ..
    } = env;
    p.push(tool_reply(
        COMPLETIONS,
        &[Call::new(
            "call_sub",
            "agent.helper",
            &json!({"task": "Make it."}),
        )],
    ));
    p.push(bash("call_inner", "echo inner > inner.txt; echo inner-ok"));
    let id = create_agent(&daemon, "agents", "primary", Some("Delegate.")).await;
    let apr = wait_pending(&daemon, &id, 1).await[0].clone();
    assert_eq!(apr["parent_call_id"], "call_sub", "{apr}");
    let apr = apr["id"].as_str().unwrap().to_string();
    let (status, log) = daemon.stop();
    assert!(status.success(), "{status}: {log}");

    let d = start_daemon(&home, &[]).failing_on_panics();
    assert_eq!(wait_pending(&d, &id, 1).await[0]["id"], apr.as_str());
    p.push(text_reply(COMPLETIONS, &["Helper made it."]));
    p.push(text_reply(COMPLETIONS, &["The helper made it."]));
    let out = d.cli(&["approvals", "approve", &apr]);
    assert!(out.status.success(), "{}", stderr(&out));
    let records = wait_conversation(&d, &id, |r| {
        kind(r) == "tool_result" && r["event"]["call_id"] == "call_sub"
    })
    .await;
    let all = summarize(&records);
    assert_eq!(
        std::fs::read_to_string(project.join("inner.txt")).unwrap_or_default(),
        "inner\n",
        "{all}"
    );
    let requests = p.wait_requests(4).await;
    assert!(
        sent_result(&requests, "call_inner").contains("inner-ok"),
        "{all}"
    );
    assert!(
        sent_result(&requests, "call_sub").contains("Helper made it."),
        "{all}"
    );
    assert_eq!(
        turn_end_reasons(&records).last().map(String::as_str),
        Some("end_turn"),
        "{all}"
    );
}
