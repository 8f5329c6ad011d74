//! `kaged acp PROJECT [--agent NAME]`: kaged as an ACP agent on its own stdio, so an editor
//! (an ACP client) can use a caged kaged agent. Each ACP session is a kaged session of the
//! agent, driven through the daemon (local, or `KAGED_SERVER` + token) like `session send` /
//! `attach`: a prompt is a message, the session's event log comes back as `session/update`s
//! until its turn ends, an approval it waits for is a `session/request_permission` (the
//! editor's choice becomes the decision; the first decision wins, wherever it is made), and
//! `session/cancel` aborts the turn. The translation is `acp_map.rs`.

use std::io::Write;

use anyhow::anyhow;
use futures_util::StreamExt;
use kaged_config::DeploymentMode;
use kaged_session::agent::Sequenced;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use super::acp_map::{decision, permission_request, stop_reason, updates};
use super::transport::{Target, call, call_answer, target, ws_request};
use crate::Failure;

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// The prompt in flight: its request id, its session, the session's events from `last`.
struct Prompt {
    request: Value,
    session: String,
    last: u64,
    events: Socket,
}

struct Server {
    target: Target,
    project: String,
    agent: String,
    /// Ids of the requests kaged sent the editor, and the approval each one asks about.
    asked: std::collections::HashMap<u64, String>,
    next: u64,
}

fn write(message: &Value) -> Result<(), Failure> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{message}")
        .and_then(|()| out.flush())
        .map_err(|e| Failure::Runtime(anyhow!("cannot write to stdout: {e}")))
}

fn answer(id: &Value, result: Value) -> Result<(), Failure> {
    write(&json!({"jsonrpc": "2.0", "id": id, "result": result}))
}

fn refuse(id: &Value, code: i64, message: &str) -> Result<(), Failure> {
    write(&json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}}))
}

fn failure_text(f: &Failure) -> String {
    match f {
        Failure::Config(m) | Failure::NotRunning(m) => m.clone(),
        Failure::Runtime(e) => e.to_string(),
        Failure::Exit(code) => format!("exit {code}"),
    }
}

/// Serve ACP on stdin/stdout until stdin ends.
pub async fn acp(
    mode: Option<DeploymentMode>,
    project: String,
    agent: Option<String>,
) -> Result<(), Failure> {
    let (tx, mut lines) = tokio::sync::mpsc::channel::<String>(64);
    std::thread::spawn(move || {
        for line in std::io::stdin().lines() {
            let Ok(line) = line else { break };
            if tx.blocking_send(line).is_err() {
                break;
            }
        }
    });
    let mut server = Server {
        target: target(mode)?,
        project,
        agent: agent.unwrap_or_else(|| "primary".into()),
        asked: Default::default(),
        next: 1,
    };
    let mut prompt: Option<Prompt> = None;
    loop {
        tokio::select! {
            line = lines.recv() => {
                let Some(line) = line else { return Ok(()) };
                if line.trim().is_empty() {
                    continue;
                }
                let message: Value = match serde_json::from_str(&line) {
                    Ok(m) => m,
                    Err(e) => {
                        refuse(&Value::Null, -32700, &format!("not JSON: {e}"))?;
                        continue;
                    }
                };
                server.incoming(message, &mut prompt).await?;
            }
            frame = async {
                match prompt.as_mut() {
                    Some(p) => p.events.next().await,
                    None => std::future::pending().await,
                }
            } => {
                let ended = match frame {
                    Some(Ok(Message::Text(t))) => server.record(&t, &mut prompt)?,
                    Some(Ok(_)) => false,
                    // Dropped: follow again from the last record seen.
                    None | Some(Err(_)) => {
                        if let Some(p) = prompt.as_mut() {
                            p.events = server.follow(&p.session, p.last).await?;
                        }
                        false
                    }
                };
                if ended {
                    prompt = None;
                }
            }
        }
    }
}

impl Server {
    async fn follow(&self, session: &str, after: u64) -> Result<Socket, Failure> {
        let request = ws_request(
            &self.target,
            &format!("/api/v1/sessions/{session}/events?after={after}"),
        )?;
        tokio_tungstenite::connect_async(request)
            .await
            .map(|(socket, _)| socket)
            .map_err(|e| Failure::Runtime(anyhow!("cannot follow session {session}: {e}")))
    }

    /// One record of the prompt's session: its updates, a permission request, or the end of
    /// the turn (then `true`, the prompt answered).
    fn record(&mut self, text: &str, prompt: &mut Option<Prompt>) -> Result<bool, Failure> {
        let Some(p) = prompt.as_mut() else {
            return Ok(false);
        };
        let Ok(record) = serde_json::from_str::<Sequenced>(text) else {
            return Ok(false);
        };
        if record.seq <= p.last {
            return Ok(false);
        }
        p.last = record.seq;
        for update in updates(&record) {
            write(&json!({"jsonrpc": "2.0", "method": "session/update",
                "params": {"sessionId": p.session, "update": update}}))?;
        }
        if let Some((approval, params)) = permission_request(&p.session, &record) {
            let id = self.next;
            self.next += 1;
            self.asked.insert(id, approval);
            write(
                &json!({"jsonrpc": "2.0", "id": id, "method": "session/request_permission", "params": params}),
            )?;
        }
        match stop_reason(&record) {
            Some(reason) => {
                answer(&p.request, json!({"stopReason": reason}))?;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    async fn incoming(
        &mut self,
        message: Value,
        prompt: &mut Option<Prompt>,
    ) -> Result<(), Failure> {
        let id = message.get("id").cloned();
        let params = &message["params"];
        let Some(method) = message["method"].as_str() else {
            // The editor's answer to a permission request.
            if let Some(approval) = id
                .and_then(|i| i.as_u64())
                .and_then(|n| self.asked.remove(&n))
                && let Some(choice) = decision(&message["result"])
            {
                let decided = call_answer(
                    &self.target,
                    reqwest::Method::POST,
                    &format!("/api/v1/approvals/{approval}"),
                    Some(json!({"decision": choice})),
                )
                .await;
                if let Err(e) = decided {
                    eprintln!("kaged acp: {approval}: {}", failure_text(&e));
                }
            }
            return Ok(());
        };
        let Some(id) = id else {
            if method == "session/cancel"
                && let Some(session) = params["sessionId"].as_str()
                && let Err(e) = call(
                    &self.target,
                    reqwest::Method::POST,
                    &format!("/api/v1/sessions/{session}/abort"),
                    None,
                )
                .await
            {
                eprintln!("kaged acp: cannot abort {session}: {}", failure_text(&e));
            }
            return Ok(());
        };
        match method {
            "initialize" => answer(
                &id,
                json!({
                    "protocolVersion": 1,
                    "agentCapabilities": {"loadSession": false,
                        "promptCapabilities": {"image": false, "audio": false, "embeddedContext": false}},
                    "authMethods": [],
                    "agentInfo": {"name": "kaged", "version": env!("CARGO_PKG_VERSION")},
                }),
            ),
            "session/new" => {
                let created = call(
                    &self.target,
                    reqwest::Method::POST,
                    &format!("/api/v1/projects/{}/sessions", self.project),
                    Some(json!({"kind": "agent", "name": self.agent})),
                )
                .await;
                match created {
                    Ok(v) => match v["session"]["id"].as_str() {
                        Some(session) => answer(&id, json!({"sessionId": session})),
                        None => refuse(&id, -32603, "the daemon's answer names no session"),
                    },
                    Err(e) => refuse(&id, -32603, &failure_text(&e)),
                }
            }
            "session/prompt" => {
                if prompt.is_some() {
                    return refuse(&id, -32600, "a prompt is already running in this session");
                }
                let Some(session) = params["sessionId"].as_str().map(str::to_string) else {
                    return refuse(&id, -32602, "session/prompt needs a sessionId");
                };
                let text: Vec<&str> = params["prompt"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|block| block["text"].as_str())
                    .collect();
                let text = text.join("\n\n");
                match self.start_prompt(&session, &text).await {
                    Ok(events) => {
                        *prompt = Some(Prompt {
                            request: id,
                            session,
                            last: events.1,
                            events: events.0,
                        });
                        Ok(())
                    }
                    Err(e) => refuse(&id, -32603, &failure_text(&e)),
                }
            }
            other => refuse(&id, -32601, &format!("method not found: {other}")),
        }
    }

    /// Follow `session` from its log's end, then send it `text`.
    async fn start_prompt(&self, session: &str, text: &str) -> Result<(Socket, u64), Failure> {
        let page = call(
            &self.target,
            reqwest::Method::GET,
            &format!("/api/v1/sessions/{session}/conversation?after=0&limit=1"),
            None,
        )
        .await?;
        let last = page["last_seq"].as_u64().unwrap_or(0);
        let events = self.follow(session, last).await?;
        super::agent::send(&self.target, session, text).await?;
        Ok((events, last))
    }
}
