//! A test ACP client written with the client side of `agent-client-protocol`: it spawns
//! `kaged-acp-scripted` on pipes, records every line both ways and every session update, and
//! serves permission requests (a chosen option), files (under one root only) and terminals
//! (the command run to completion at `terminal/create`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use agent_client_protocol::schema::ProtocolVersion;
use agent_client_protocol::v1::ConnectionTo;
use agent_client_protocol::v1::schema::*;
use agent_client_protocol::{Agent, Client, Error, Lines};
use futures_util::StreamExt;
use kaged_acp_testing::Script;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

/// What the client does with a permission request: select this option id, answer
/// `cancelled` when `None`, or an error for `Some("!error")`.
#[derive(Clone)]
pub struct Answers {
    pub permission: Option<&'static str>,
}

/// Everything seen during one run.
#[derive(Default)]
pub struct Recorded {
    /// `A->C LINE` (agent to client) and `C->A LINE`, in order.
    pub wire: Vec<String>,
    /// Session updates, in order.
    pub updates: Vec<SessionUpdate>,
    /// Permission requests received.
    pub permissions: Vec<RequestPermissionRequest>,
    /// The agent's stderr.
    pub stderr: String,
    /// The agent's exit status (`None`: still running after the client closed its stdin).
    pub status: Option<ExitStatus>,
}

impl Recorded {
    /// The agent message chunks, joined.
    pub fn said(&self) -> String {
        self.updates
            .iter()
            .filter_map(|u| match u {
                SessionUpdate::AgentMessageChunk(c) => match &c.content {
                    ContentBlock::Text(t) => Some(t.text.as_str()),
                    _ => None,
                },
                _ => None,
            })
            .collect()
    }

    /// The agent's lines on the wire.
    pub fn agent_lines(&self) -> Vec<&str> {
        self.wire
            .iter()
            .filter_map(|l| l.strip_prefix("A->C "))
            .collect()
    }

    /// The client's lines on the wire.
    pub fn client_lines(&self) -> Vec<&str> {
        self.wire
            .iter()
            .filter_map(|l| l.strip_prefix("C->A "))
            .collect()
    }
}

#[derive(Default)]
struct Shared {
    rec: Recorded,
    terminals: HashMap<String, (String, Option<i32>)>,
}

type State = Arc<Mutex<Shared>>;

fn lock(state: &State) -> std::sync::MutexGuard<'_, Shared> {
    state.lock().unwrap_or_else(|e| e.into_inner())
}

pub fn binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_kaged-acp-scripted"))
}

/// `initialize` then `session/new`; the session id.
pub async fn start(cx: &ConnectionTo<Agent>, cwd: &Path) -> Result<SessionId, Error> {
    cx.send_request(
        InitializeRequest::new(ProtocolVersion::V1).client_capabilities(
            ClientCapabilities::new()
                .fs(FileSystemCapabilities::new()
                    .read_text_file(true)
                    .write_text_file(true))
                .terminal(true),
        ),
    )
    .block_task()
    .await?;
    let session = cx
        .send_request(NewSessionRequest::new(cwd.to_path_buf()))
        .block_task()
        .await?;
    Ok(session.session_id)
}

/// One `session/prompt` with text.
pub async fn prompt(
    cx: &ConnectionTo<Agent>,
    session: &SessionId,
    text: &str,
) -> Result<PromptResponse, Error> {
    cx.send_request(PromptRequest::new(
        session.clone(),
        vec![ContentBlock::from(text)],
    ))
    .block_task()
    .await
}

/// Runs the agent with `script`, serving files under `root`, and `main` as the client's
/// foreground; returns `main`'s result and what was recorded.
pub async fn run<R>(
    script: &Script,
    root: &Path,
    answers: Answers,
    main: impl AsyncFnOnce(ConnectionTo<Agent>) -> Result<R, Error>,
) -> (Result<R, Error>, Recorded) {
    let script_path = root.join("script.json");
    script.write_to(&script_path).unwrap();
    let mut child = tokio::process::Command::new(binary())
        .arg(&script_path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let stdin = child.stdin.take().unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let state: State = Arc::default();

    let tap = state.clone();
    let incoming = futures_util::stream::unfold(BufReader::new(stdout).lines(), {
        async |mut lines| match lines.next_line().await {
            Ok(Some(line)) => Some((Ok(line), lines)),
            Ok(None) => None,
            Err(e) => Some((Err(e), lines)),
        }
    })
    .inspect(move |line| {
        if let Ok(line) = line {
            lock(&tap).rec.wire.push(format!("A->C {line}"));
        }
    });
    let tap = state.clone();
    let outgoing = futures_util::sink::unfold(stdin, move |mut stdin, line: String| {
        lock(&tap).rec.wire.push(format!("C->A {line}"));
        async move {
            stdin.write_all(format!("{line}\n").as_bytes()).await?;
            stdin.flush().await?;
            Ok::<_, std::io::Error>(stdin)
        }
    });
    let transport = Lines::new(Box::pin(outgoing), Box::pin(incoming));

    let (s1, s2, s3, s4, s5, s6) = (
        state.clone(),
        state.clone(),
        state.clone(),
        state.clone(),
        state.clone(),
        state.clone(),
    );
    let (root_w, root_r) = (root.to_path_buf(), root.to_path_buf());
    let result = Client
        .v1()
        .name("kaged-acp-testing-client")
        .on_receive_notification(
            async move |n: SessionNotification, _cx| {
                lock(&s1).rec.updates.push(n.update);
                Ok(())
            },
            agent_client_protocol::on_receive_notification!(),
        )
        .on_receive_request(
            async move |req: RequestPermissionRequest, responder, _cx| {
                lock(&s2).rec.permissions.push(req);
                if answers.permission == Some("!error") {
                    return responder.respond_with_error(Error::new(-32603, "no approvals here"));
                }
                let outcome = match answers.permission {
                    Some(id) => {
                        RequestPermissionOutcome::Selected(SelectedPermissionOutcome::new(id))
                    }
                    None => RequestPermissionOutcome::Cancelled,
                };
                responder.respond(RequestPermissionResponse::new(outcome))
            },
            agent_client_protocol::on_receive_request!(),
        )
        .on_receive_request(
            async move |req: WriteTextFileRequest, responder, _cx| {
                if !req.path.starts_with(&root_w) {
                    return responder.respond_with_error(Error::new(
                        -32603,
                        format!("cannot write {}: outside the view", req.path.display()),
                    ));
                }
                match std::fs::write(&req.path, &req.content) {
                    Ok(()) => responder.respond(WriteTextFileResponse::new()),
                    Err(e) => responder.respond_with_error(Error::new(-32603, e.to_string())),
                }
            },
            agent_client_protocol::on_receive_request!(),
        )
        .on_receive_request(
            async move |req: ReadTextFileRequest, responder, _cx| {
                if !req.path.starts_with(&root_r) {
                    return responder.respond_with_error(Error::new(-32603, "outside the view"));
                }
                match std::fs::read_to_string(&req.path) {
                    Ok(s) => responder.respond(ReadTextFileResponse::new(s)),
                    Err(e) => responder.respond_with_error(Error::new(-32603, e.to_string())),
                }
            },
            agent_client_protocol::on_receive_request!(),
        )
        .on_receive_request(
            async move |req: CreateTerminalRequest, responder, _cx| {
                let out = std::process::Command::new(&req.command)
                    .args(&req.args)
                    .output();
                let (text, code) = match out {
                    Ok(o) => (
                        String::from_utf8_lossy(&o.stdout).into_owned(),
                        o.status.code(),
                    ),
                    Err(e) => {
                        return responder.respond_with_error(Error::new(-32603, e.to_string()));
                    }
                };
                let mut shared = lock(&s3);
                let id = format!("term-{}", shared.terminals.len() + 1);
                shared.terminals.insert(id.clone(), (text, code));
                responder.respond(CreateTerminalResponse::new(id))
            },
            agent_client_protocol::on_receive_request!(),
        )
        .on_receive_request(
            async move |req: WaitForTerminalExitRequest, responder, _cx| {
                let code = lock(&s4)
                    .terminals
                    .get(req.terminal_id.0.as_ref())
                    .and_then(|t| t.1);
                let status = TerminalExitStatus::new().exit_code(code.map(|c| c as u32));
                responder.respond(WaitForTerminalExitResponse::new(status))
            },
            agent_client_protocol::on_receive_request!(),
        )
        .on_receive_request(
            async move |req: TerminalOutputRequest, responder, _cx| {
                let text = lock(&s5)
                    .terminals
                    .get(req.terminal_id.0.as_ref())
                    .map(|t| t.0.clone())
                    .unwrap_or_default();
                responder.respond(TerminalOutputResponse::new(text, false))
            },
            agent_client_protocol::on_receive_request!(),
        )
        .on_receive_request(
            async move |req: ReleaseTerminalRequest, responder, _cx| {
                lock(&s6).terminals.remove(req.terminal_id.0.as_ref());
                responder.respond(ReleaseTerminalResponse::new())
            },
            agent_client_protocol::on_receive_request!(),
        )
        .connect_with(transport, main)
        .await;

    // The connection is over: the agent's stdin is closed; it should end.
    let status = tokio::time::timeout(Duration::from_secs(5), child.wait())
        .await
        .ok()
        .and_then(Result::ok);
    let mut err = String::new();
    if status.is_some() {
        let _ = stderr.read_to_string(&mut err).await;
    }
    let mut shared = lock(&state);
    let mut rec = std::mem::take(&mut shared.rec);
    rec.stderr = err;
    rec.status = status;
    (result, rec)
}
