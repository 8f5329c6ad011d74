//! `kaged acp PROJECT`: kaged as an ACP agent on stdio, against the real daemon, driven by a
//! test client writing JSON-RPC lines by hand (every field checked) and by `kaged-acp-client`, a
//! client written with the official `agent-client-protocol` crate (kaged's answers parse as the
//! crate's types): a
//! prompt streams the session's turn back as `session/update`s, kaged's approval arrives as
//! `session/request_permission` and the client's choice decides it, and `session/cancel` aborts
//! the turn.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

use std::io::{BufRead, Write};
use std::process::{Child, ChildStdin, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use crate::common::acp_testing::acp_testing;
use crate::common::provider::*;
use crate::common::{kaged_bin, kaged_cmd};

struct Client {
    child: Child,
    stdin: ChildStdin,
    lines: mpsc::Receiver<Value>,
}

impl Client {
    fn start(d: &crate::common::Daemon, project: &str) -> Client {
        let env: Vec<(&str, &str)> = d
            .env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let mut child = kaged_cmd(&env)
            .args(["acp", project])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let v: Value = serde_json::from_str(&line).expect("kaged acp writes JSON lines");
                if tx.send(v).is_err() {
                    break;
                }
            }
        });
        Client {
            child,
            stdin,
            lines,
        }
    }

    fn send(&mut self, message: Value) {
        writeln!(self.stdin, "{message}").unwrap();
        self.stdin.flush().unwrap();
    }

    /// Messages until one satisfies `done` (returned last), within 30 s.
    fn until(&self, done: impl Fn(&Value) -> bool) -> Vec<Value> {
        let mut seen = Vec::new();
        loop {
            let message = self
                .lines
                .recv_timeout(Duration::from_secs(30))
                .unwrap_or_else(|_| panic!("nothing more from kaged acp; so far: {seen:#?}"));
            let last = done(&message);
            seen.push(message);
            if last {
                return seen;
            }
        }
    }

    fn call(&mut self, id: u64, method: &str, params: Value) -> Value {
        self.send(json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}));
        self.until(|m| m["id"] == id && m.get("method").is_none())
            .pop()
            .unwrap()
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn updates<'a>(messages: &'a [Value], kind: &str) -> Vec<&'a Value> {
    messages
        .iter()
        .filter(|m| {
            m["method"] == "session/update" && m["params"]["update"]["sessionUpdate"] == kind
        })
        .map(|m| &m["params"]["update"])
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn an_editor_drives_a_caged_kaged_agent_and_answers_its_approvals() {
    let env = ModelEnv::start_spec(EnvSpec {
        primary_extra: "  tools: { shell.bash: { approval: ask } }\n",
        ..EnvSpec::default()
    })
    .await;
    let (d, p) = (&env.daemon, &env.provider);
    let mut client = tokio::task::block_in_place(|| Client::start(d, &env.slug));
    let init = tokio::task::block_in_place(|| {
        client.call(
            1,
            "initialize",
            json!({"protocolVersion": 1, "clientCapabilities": {}}),
        )
    });
    assert_eq!(init["result"]["protocolVersion"], 1, "{init}");
    assert_eq!(init["result"]["agentInfo"]["name"], "kaged");
    let new = tokio::task::block_in_place(|| {
        client.call(
            2,
            "session/new",
            json!({"cwd": "/somewhere", "mcpServers": []}),
        )
    });
    let session = new["result"]["sessionId"].as_str().unwrap().to_string();
    assert_eq!(session_json(d, &session).await["conversation"], true);

    p.push(tool_reply(
        COMPLETIONS,
        &[Call::new(
            "call_make",
            "shell.bash",
            &json!({"command": "echo via-acp > acp.txt; echo made"}),
        )],
    ));
    p.push(text_reply(COMPLETIONS, &["All ", "done."]));
    client.send(
        json!({"jsonrpc": "2.0", "id": 3, "method": "session/prompt",
        "params": {"sessionId": session, "prompt": [{"type": "text", "text": "Make the file."}]}}),
    );
    let before = tokio::task::block_in_place(|| {
        client.until(|m| m["method"] == "session/request_permission")
    });
    let ask = before.last().unwrap().clone();
    assert_eq!(ask["params"]["toolCall"]["kind"], "execute", "{ask}");
    assert_eq!(
        ask["params"]["toolCall"]["rawInput"]["command"],
        "echo via-acp > acp.txt; echo made"
    );
    assert!(
        !env.project.join("acp.txt").exists(),
        "nothing runs before the editor answers"
    );
    let call = updates(&before, "tool_call");
    assert_eq!(call[0]["toolCallId"], "call_make", "{before:#?}");
    client.send(json!({"jsonrpc": "2.0", "id": ask["id"],
        "result": {"outcome": {"outcome": "selected", "optionId": "approve"}}}));
    let rest = tokio::task::block_in_place(|| client.until(|m| m["id"] == 3));
    assert_eq!(
        rest.last().unwrap()["result"]["stopReason"],
        "end_turn",
        "{rest:#?}"
    );
    let results = updates(&rest, "tool_call_update");
    assert!(
        results.iter().any(|u| u["status"] == "completed"
            && u["content"][0]["content"]["text"]
                .as_str()
                .unwrap()
                .contains("made")),
        "{rest:#?}"
    );
    let said: String = updates(&rest, "agent_message_chunk")
        .iter()
        .map(|u| u["content"]["text"].as_str().unwrap())
        .collect();
    assert_eq!(said, "All done.");
    assert_eq!(
        std::fs::read_to_string(env.project.join("acp.txt")).unwrap(),
        "via-acp\n"
    );
    let (_, v) = d
        .call(
            Method::GET,
            &format!("/api/v1/approvals?session={session}"),
            None,
        )
        .await;
    assert_eq!(v["approvals"][0]["state"], "approved", "{v}");

    // A cancel while the next approval waits: the turn ends `cancelled`, the approval too.
    p.push(tool_reply(
        COMPLETIONS,
        &[Call::new(
            "call_more",
            "shell.bash",
            &json!({"command": "echo more > more.txt"}),
        )],
    ));
    client.send(
        json!({"jsonrpc": "2.0", "id": 4, "method": "session/prompt",
        "params": {"sessionId": session, "prompt": [{"type": "text", "text": "One more."}]}}),
    );
    tokio::task::block_in_place(|| client.until(|m| m["method"] == "session/request_permission"));
    client.send(
        json!({"jsonrpc": "2.0", "method": "session/cancel", "params": {"sessionId": session}}),
    );
    let end = tokio::task::block_in_place(|| client.until(|m| m["id"] == 4));
    assert_eq!(
        end.last().unwrap()["result"]["stopReason"],
        "cancelled",
        "{end:#?}"
    );
    assert!(!env.project.join("more.txt").exists());
    let (_, v) = d
        .call(
            Method::GET,
            &format!("/api/v1/approvals?session={session}&state=cancelled"),
            None,
        )
        .await;
    assert_eq!(v["approvals"].as_array().unwrap().len(), 1, "{v}");
    // An unknown method is refused, the server goes on.
    let unknown = tokio::task::block_in_place(|| client.call(5, "session/fork", json!({})));
    assert_eq!(unknown["error"]["code"], -32601, "{unknown}");
}

/// The same from a client written with the official `agent-client-protocol` crate
/// (`kaged-acp-client` from the standalone `crates/kaged-acp-testing`: its typed requests, its
/// parsing of kaged's answers and updates): a prompt whose approval the client grants runs the
/// command in the cage and ends `end_turn`.
#[tokio::test(flavor = "multi_thread")]
async fn kaged_acp_speaks_the_protocol_as_the_official_crate_reads_it() {
    let client = tokio::task::block_in_place(acp_testing).client;
    let env = ModelEnv::start_spec(EnvSpec {
        primary_extra: "  tools: { shell.bash: { approval: ask } }\n",
        ..EnvSpec::default()
    })
    .await;
    let (d, p) = (&env.daemon, &env.provider);
    p.push(tool_reply(
        COMPLETIONS,
        &[Call::new(
            "call_crate",
            "shell.bash",
            &json!({"command": "echo from-crate > crate.txt; echo made"}),
        )],
    ));
    p.push(text_reply(COMPLETIONS, &["Made ", "it."]));
    // The client runs `kaged acp` with its own environment: the daemon's, as `kaged_cmd` sets it.
    let env_vars: Vec<(&str, &str)> = d
        .env
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let template = kaged_cmd(&env_vars);
    let mut cmd = std::process::Command::new(&client);
    cmd.env_clear();
    for (k, v) in template.get_envs() {
        if let Some(v) = v {
            cmd.env(k, v);
        }
    }
    let mut child = cmd
        .arg("--permission")
        .arg("approve")
        .arg("--")
        .arg(kaged_bin())
        .args(["acp", &env.slug])
        .current_dir(&env.project)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"Make the file.\n")
        .unwrap();
    let output = tokio::task::block_in_place(|| child.wait_with_output()).unwrap();
    assert!(
        output.status.success(),
        "kaged-acp-client: {}",
        output.status
    );
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["initialize"]["protocolVersion"], 1, "{report}");
    assert_eq!(
        report["initialize"]["agentInfo"]["name"], "kaged",
        "{report}"
    );
    assert!(report["session"].as_str().is_some(), "{report}");
    let prompts = report["prompts"].as_array().unwrap();
    assert_eq!(prompts.len(), 1, "{report}");
    assert_eq!(prompts[0]["stop_reason"], "end_turn", "{report}");
    let asked = prompts[0]["permissions"].as_array().unwrap();
    assert_eq!(asked.len(), 1, "{report}");
    assert_eq!(asked[0]["toolCall"]["kind"], "execute", "{report}");
    let said: String = prompts[0]["updates"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|u| u["sessionUpdate"] == "agent_message_chunk" && u["content"]["type"] == "text")
        .filter_map(|u| u["content"]["text"].as_str())
        .collect();
    assert_eq!(said, "Made it.", "{report}");
    assert_eq!(
        std::fs::read_to_string(env.project.join("crate.txt")).unwrap(),
        "from-crate\n"
    );
}
