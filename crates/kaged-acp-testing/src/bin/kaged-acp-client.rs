//! `kaged-acp-client --permission OPTION_ID|cancel -- COMMAND ARGS…`: an ACP client for kaged's
//! tests, written with the client side of the official `agent-client-protocol` crate. It spawns
//! COMMAND (an ACP agent, e.g. `kaged acp PROJECT`) on pipes (its stderr passed through), sends
//! `initialize`, then `session/new` (cwd: the current directory), then one `session/prompt` per
//! line of its own stdin, answers every permission request with OPTION_ID (or `cancelled`), and
//! prints one JSON report on stdout:
//!
//! ```json
//! {"initialize": InitializeResponse, "session": "ID",
//!  "prompts": [{"stop_reason": "end_turn", "updates": [SessionUpdate, …],
//!               "permissions": [RequestPermissionRequest, …]}, …]}
//! ```
//!
//! It offers no file system and no terminal. Exit status 2: bad arguments; 1: the agent could
//! not be run or broke the protocol (the reason on stderr, no report).

use std::process::{ExitCode, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use agent_client_protocol::schema::ProtocolVersion;
use agent_client_protocol::v1::ConnectionTo;
use agent_client_protocol::v1::schema::{
    ClientCapabilities, ContentBlock, InitializeRequest, NewSessionRequest, PromptRequest,
    RequestPermissionOutcome, RequestPermissionRequest, RequestPermissionResponse,
    SelectedPermissionOutcome, SessionNotification,
};
use agent_client_protocol::{Agent, Client, Error, Lines};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

const USAGE: &str = "usage: kaged-acp-client --permission OPTION_ID|cancel -- COMMAND ARGS…";

/// The updates and permission requests of the running prompt.
#[derive(Default)]
struct Seen {
    updates: Vec<Value>,
    permissions: Vec<Value>,
}

type Shared = Arc<Mutex<Seen>>;

fn lock(shared: &Shared) -> std::sync::MutexGuard<'_, Seen> {
    shared.lock().unwrap_or_else(|e| e.into_inner())
}

/// The permission answer (`None`: cancelled) and the agent's command line.
fn parse_args(args: &[String]) -> Result<(Option<String>, Vec<String>), String> {
    let mut permission = None;
    let mut rest = args.iter();
    while let Some(arg) = rest.next() {
        match arg.as_str() {
            "--permission" => {
                permission = Some(rest.next().ok_or("--permission needs a value")?.clone());
            }
            "--" => break,
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    let command: Vec<String> = rest.cloned().collect();
    let permission = permission.ok_or("--permission is required")?;
    if command.is_empty() {
        return Err("no agent command after --".to_string());
    }
    Ok(((permission != "cancel").then_some(permission), command))
}

fn to_json<T: serde::Serialize>(value: &T) -> Result<Value, Error> {
    serde_json::to_value(value).map_err(|e| Error::new(-32603, e.to_string()))
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (permission, command) = match parse_args(&args) {
        Ok(parsed) => parsed,
        Err(e) => {
            eprintln!("kaged-acp-client: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match run(permission, &command).await {
        Ok(report) => {
            println!("{report}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("kaged-acp-client: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(permission: Option<String>, command: &[String]) -> Result<Value, String> {
    let cwd = std::env::current_dir().map_err(|e| format!("no current directory: {e}"))?;
    let (program, args) = command.split_first().ok_or("no agent command")?;
    let mut child = tokio::process::Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
        return Err("the agent's pipes are missing".to_string());
    };

    let incoming = futures_util::stream::unfold(BufReader::new(stdout).lines(), {
        async |mut lines| match lines.next_line().await {
            Ok(Some(line)) => Some((Ok(line), lines)),
            Ok(None) => None,
            Err(e) => Some((Err(e), lines)),
        }
    });
    let outgoing = futures_util::sink::unfold(stdin, async |mut stdin, line: String| {
        stdin.write_all(format!("{line}\n").as_bytes()).await?;
        stdin.flush().await?;
        Ok::<_, std::io::Error>(stdin)
    });
    let transport = Lines::new(Box::pin(outgoing), Box::pin(incoming));

    let seen: Shared = Arc::default();
    let (on_update, on_permission) = (seen.clone(), seen.clone());
    let result = Client
        .v1()
        .name("kaged-acp-client")
        .on_receive_notification(
            async move |n: SessionNotification, _cx| {
                let update = to_json(&n.update)?;
                lock(&on_update).updates.push(update);
                Ok(())
            },
            agent_client_protocol::on_receive_notification!(),
        )
        .on_receive_request(
            async move |req: RequestPermissionRequest, responder, _cx| {
                let request = to_json(&req)?;
                lock(&on_permission).permissions.push(request);
                let outcome = match &permission {
                    Some(id) => RequestPermissionOutcome::Selected(SelectedPermissionOutcome::new(
                        id.clone(),
                    )),
                    None => RequestPermissionOutcome::Cancelled,
                };
                responder.respond(RequestPermissionResponse::new(outcome))
            },
            agent_client_protocol::on_receive_request!(),
        )
        .connect_with(transport, async |cx| session(&cx, cwd, &seen).await)
        .await
        .map_err(|e| format!("the agent broke the protocol: {e}"));

    // The connection is over and the agent's stdin closed: give it a moment to end.
    let _ = tokio::time::timeout(Duration::from_secs(5), child.wait()).await;
    result
}

/// `initialize`, `session/new`, then a prompt per stdin line; the report.
async fn session(
    cx: &ConnectionTo<Agent>,
    cwd: std::path::PathBuf,
    seen: &Shared,
) -> Result<Value, Error> {
    let initialize = cx
        .send_request(
            InitializeRequest::new(ProtocolVersion::V1)
                .client_capabilities(ClientCapabilities::new()),
        )
        .block_task()
        .await?;
    let session = cx
        .send_request(NewSessionRequest::new(cwd))
        .block_task()
        .await?;
    let mut prompts = Vec::new();
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    while let Some(line) = lines
        .next_line()
        .await
        .map_err(|e| Error::new(-32603, format!("cannot read stdin: {e}")))?
    {
        *lock(seen) = Seen::default();
        let answer = cx
            .send_request(PromptRequest::new(
                session.session_id.clone(),
                vec![ContentBlock::from(line)],
            ))
            .block_task()
            .await?;
        let Seen {
            updates,
            permissions,
        } = std::mem::take(&mut *lock(seen));
        prompts.push(json!({
            "stop_reason": to_json(&answer.stop_reason)?,
            "updates": updates,
            "permissions": permissions,
        }));
    }
    Ok(json!({
        "initialize": to_json(&initialize)?,
        "session": to_json(&session.session_id)?,
        "prompts": prompts,
    }))
}
