//! `kaged acp PROJECT`: kaged as an ACP agent on stdio, against the real daemon, driven by a
//! test client writing JSON-RPC lines by hand (every field checked) and by a client written with
//! the official `agent-client-protocol` crate (kaged's answers parse as the crate's types): a
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

use crate::common::kaged_cmd;
use crate::common::provider::*;

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

/// The same from a client written with the official `agent-client-protocol` crate (its typed
/// requests, its parsing of kaged's answers and updates): a prompt whose approval the client
/// grants runs the command in the cage and ends `end_turn`.
#[tokio::test(flavor = "multi_thread")]
async fn kaged_acp_speaks_the_protocol_as_the_official_crate_reads_it() {
    use agent_client_protocol::schema::ProtocolVersion;
    use agent_client_protocol::v1::schema::*;
    use agent_client_protocol::{Client, Error, Lines};
    use futures_util::StreamExt;
    use std::sync::{Arc, Mutex};
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

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
    let env_vars: Vec<(&str, &str)> = d.env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let mut child = tokio::process::Command::from(kaged_cmd(&env_vars))
        .args(["acp", &env.slug])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let stdin = child.stdin.take().unwrap();
    let stdout = child.stdout.take().unwrap();
    let incoming = futures_util::stream::unfold(BufReader::new(stdout).lines(), {
        async |mut lines| match lines.next_line().await {
            Ok(Some(line)) => Some((Ok(line), lines)),
            Ok(None) => None,
            Err(e) => Some((Err(e), lines)),
        }
    });
    let outgoing = futures_util::sink::unfold(stdin, move |mut stdin, line: String| async move {
        stdin.write_all(format!("{line}\n").as_bytes()).await?;
        stdin.flush().await?;
        Ok::<_, std::io::Error>(stdin)
    });
    let transport = Lines::new(Box::pin(outgoing), Box::pin(incoming));
    let updates: Arc<Mutex<Vec<SessionUpdate>>> = Arc::default();
    let asked: Arc<Mutex<Vec<RequestPermissionRequest>>> = Arc::default();
    let (seen, permissions) = (updates.clone(), asked.clone());
    let outcome = Client
        .v1()
        .name("kaged-e2e-client")
        .on_receive_notification(
            async move |n: SessionNotification, _cx| {
                seen.lock().unwrap().push(n.update);
                Ok(())
            },
            agent_client_protocol::on_receive_notification!(),
        )
        .on_receive_request(
            async move |req: RequestPermissionRequest, responder, _cx| {
                permissions.lock().unwrap().push(req);
                responder.respond(RequestPermissionResponse::new(
                    RequestPermissionOutcome::Selected(SelectedPermissionOutcome::new("approve")),
                ))
            },
            agent_client_protocol::on_receive_request!(),
        )
        .connect_with(transport, async |cx| {
            let init = cx
                .send_request(InitializeRequest::new(ProtocolVersion::V1))
                .block_task()
                .await?;
            assert_eq!(init.protocol_version, ProtocolVersion::V1);
            let session = cx
                .send_request(NewSessionRequest::new(std::path::PathBuf::from("/x")))
                .block_task()
                .await?;
            let done = cx
                .send_request(PromptRequest::new(
                    session.session_id.clone(),
                    vec![ContentBlock::from("Make the file.")],
                ))
                .block_task()
                .await?;
            Ok::<_, Error>(done.stop_reason)
        })
        .await;
    assert_eq!(outcome.unwrap(), StopReason::EndTurn);
    let asked = asked.lock().unwrap();
    assert_eq!(asked.len(), 1);
    assert_eq!(asked[0].tool_call.fields.kind, Some(ToolKind::Execute));
    let said: String = updates
        .lock()
        .unwrap()
        .iter()
        .filter_map(|u| match u {
            SessionUpdate::AgentMessageChunk(c) => match &c.content {
                ContentBlock::Text(t) => Some(t.text.clone()),
                _ => None,
            },
            _ => None,
        })
        .collect();
    assert_eq!(said, "Made it.");
    assert_eq!(
        std::fs::read_to_string(env.project.join("crate.txt")).unwrap(),
        "from-crate\n"
    );
}
