//! `kaged session ...`: start, list, attach to, read and kill sessions from a terminal.

use std::io::Write;
use std::os::fd::AsFd;

use anyhow::anyhow;
use futures_util::{SinkExt, StreamExt};
use kaged_config::DeploymentMode;
use kaged_session::frame::{ServerBinary, ServerText, decode_server_binary};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use crate::Failure;
use crate::cli::{JsonOutput, SessionCommand};
use crate::client::{Target, agent, call, call_stream, target, ws_request};

/// Ctrl-]: detach (the run goes on), as telnet taught.
const DETACH_KEY: u8 = 0x1d;

fn check_id(id: &str) -> Result<&str, Failure> {
    if id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(id)
    } else {
        Err(Failure::Config(format!(
            "{id:?} is not a session id (32 hex digits; `kaged session list` shows them)"
        )))
    }
}

pub async fn run(mode: Option<DeploymentMode>, command: SessionCommand) -> Result<(), Failure> {
    let target = target(mode)?;
    match command {
        SessionCommand::Start {
            project,
            agent,
            message,
            task,
            terminal,
            detach,
        } => {
            if message.is_some() && agent.is_none() {
                return Err(Failure::Config(
                    "--message is for an agent: --agent NAME --message TEXT".into(),
                ));
            }
            let (kind, name) = match (agent, task, terminal) {
                (Some(a), None, false) => ("agent", Some(a)),
                (None, Some(t), false) => ("task", Some(t)),
                (None, None, true) => ("terminal", None),
                _ => {
                    return Err(Failure::Config(
                        "say what to start: --agent NAME, --task NAME or --terminal".into(),
                    ));
                }
            };
            let (rows, cols) = terminal_size().unwrap_or((24, 80));
            let mut body = json!({"kind": kind, "name": name, "rows": rows, "cols": cols});
            if let Some(message) = message {
                body["message"] = json!(message);
            }
            let v = call(
                &target,
                reqwest::Method::POST,
                &format!("/api/v1/projects/{project}/sessions"),
                Some(body),
            )
            .await?;
            let id = v["session"]["id"].as_str().unwrap_or_default().to_string();
            if agent::is_conversation(&v["session"]) {
                if detach {
                    println!("{id}");
                    return Ok(());
                }
                eprintln!("{id}");
                return agent::attach_conversation(target, mode, &id, 0).await;
            }
            println!("{id}");
            if detach {
                return Ok(());
            }
            attach(&target, &id).await
        }
        SessionCommand::List {
            project,
            output: JsonOutput { json },
        } => {
            let path = match &project {
                Some(p) => format!("/api/v1/projects/{p}/sessions"),
                None => "/api/v1/sessions".into(),
            };
            let v = call(&target, reqwest::Method::GET, &path, None).await?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&v["sessions"]).unwrap_or_default()
                );
                return Ok(());
            }
            println!(
                "{:<32}  {:<16} {:<8} {:<12} {:<8} {:>10}  BY",
                "ID", "PROJECT", "KIND", "NAME", "STATE", "OUTPUT"
            );
            for s in v["sessions"].as_array().into_iter().flatten() {
                println!(
                    "{:<32}  {:<16} {:<8} {:<12} {:<8} {:>10}  {}",
                    text(s, "id"),
                    text(s, "project"),
                    kind_of(s),
                    text(s, "name"),
                    state_of(s),
                    s["output_bytes"].as_u64().unwrap_or(0),
                    text(s, "created_by"),
                );
            }
            Ok(())
        }
        SessionCommand::Show {
            id,
            output: JsonOutput { json },
        } => {
            let s = agent::session(&target, check_id(&id)?).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&s).unwrap_or_default());
                return Ok(());
            }
            show(&s);
            Ok(())
        }
        SessionCommand::Attach { id, after } => {
            let id = check_id(&id)?;
            if agent::is_conversation(&agent::session(&target, id).await?) {
                agent::attach_conversation(target, mode, id, after).await
            } else {
                attach(&target, id).await
            }
        }
        SessionCommand::Send { id, text } => {
            let text = if text == "-" {
                let mut buf = String::new();
                std::io::Read::read_to_string(&mut std::io::stdin(), &mut buf)
                    .map_err(|e| Failure::Runtime(anyhow!("cannot read stdin: {e}")))?;
                buf.trim_end_matches(['\n', '\r']).to_string()
            } else {
                text
            };
            agent::send(&target, check_id(&id)?, &text).await
        }
        SessionCommand::Abort { id } => {
            let v = call(
                &target,
                reqwest::Method::POST,
                &format!("/api/v1/sessions/{}/abort", check_id(&id)?),
                None,
            )
            .await?;
            if v["aborted"].as_bool() == Some(true) {
                println!("{id}: turn aborted");
            } else {
                println!("{id}: no turn was running");
            }
            Ok(())
        }
        SessionCommand::Transcript { id, json } => {
            let id = check_id(&id)?;
            let s = agent::session(&target, id).await?;
            if agent::is_conversation(&s) {
                return agent::print_transcript(&target, id, json).await;
            }
            if json {
                return Err(Failure::Config(format!(
                    "session {id} is a {}, not a conversation: its transcript is raw output (drop --json)",
                    text(&s, "kind")
                )));
            }
            let mut out = std::io::stdout().lock();
            let headers = call_stream(
                &target,
                &format!("/api/v1/sessions/{id}/transcript"),
                &mut out,
            )
            .await?;
            if let Some(range) = headers
                .get("x-kaged-transcript-dropped")
                .and_then(|v| v.to_str().ok())
            {
                eprintln!(
                    "kaged: output offsets {range} were dropped by the transcript cap ([sessions] transcript_max_mb); the first and the newest bytes are here"
                );
            }
            Ok(())
        }
        SessionCommand::Prune {
            dry_run,
            output: JsonOutput { json },
        } => {
            let path = if dry_run {
                "/api/v1/sessions/prune?dry_run=true"
            } else {
                "/api/v1/sessions/prune"
            };
            let v = call(&target, reqwest::Method::POST, path, None).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
                return Ok(());
            }
            let pruned = v["pruned"].as_array().cloned().unwrap_or_default();
            let verb = if dry_run { "would prune" } else { "pruned" };
            for p in &pruned {
                println!(
                    "{verb} {}  {:<16} {:>12} bytes  ({})",
                    text(p, "session"),
                    text(p, "project"),
                    p["bytes"].as_u64().unwrap_or(0),
                    text(p, "why"),
                );
            }
            println!(
                "{} transcript{} {verb}; transcripts {} bytes, {} after (limits: {} MiB, {} days)",
                pruned.len(),
                if pruned.len() == 1 { "" } else { "s" },
                v["total_bytes_before"].as_u64().unwrap_or(0),
                v["total_bytes_after"].as_u64().unwrap_or(0),
                v["max_total_mb"].as_u64().unwrap_or(0),
                v["max_age_days"].as_u64().unwrap_or(0),
            );
            Ok(())
        }
        SessionCommand::Kill { id } => {
            let v = call(
                &target,
                reqwest::Method::POST,
                &format!("/api/v1/sessions/{}/kill", check_id(&id)?),
                None,
            )
            .await?;
            println!("{}: {}", text(&v, "session"), text(&v, "state"));
            Ok(())
        }
    }
}

fn text<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key].as_str().unwrap_or("-")
}

/// The KIND column: `model` for a model agent's session (a conversation).
fn kind_of(s: &Value) -> &str {
    if agent::is_conversation(s) {
        "model"
    } else {
        text(s, "kind")
    }
}

/// `kaged session show`: one field a line.
fn show(s: &Value) {
    let kind = if agent::is_conversation(s) {
        format!("{} (a model agent's conversation)", text(s, "kind"))
    } else {
        text(s, "kind").to_string()
    };
    let command: Vec<&str> = s["command"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    let rows = [
        ("id", text(s, "id").to_string()),
        ("project", text(s, "project").to_string()),
        ("kind", kind),
        ("name", text(s, "name").to_string()),
        ("state", state_of(s)),
        ("reason", text(s, "reason").to_string()),
        (
            "caged",
            s["caged"].as_bool().map_or("-".into(), |c| c.to_string()),
        ),
        ("command", command.join(" ")),
        ("created by", text(s, "created_by").to_string()),
        (
            "output",
            format!("{} bytes", s["output_bytes"].as_u64().unwrap_or(0)),
        ),
    ];
    for (key, value) in rows {
        println!("{:<11} {value}", format!("{key}:"));
    }
}

fn state_of(s: &Value) -> String {
    match (s["state"].as_str(), s["exit_code"].as_i64()) {
        (Some("exited"), Some(code)) => format!("exit {code}"),
        (Some(state), _) => state.to_string(),
        _ => "?".into(),
    }
}

fn terminal_size() -> Option<(u16, u16)> {
    let stdout = std::io::stdout();
    let ws = rustix::termios::tcgetwinsize(stdout.as_fd()).ok()?;
    (ws.ws_row > 0 && ws.ws_col > 0).then_some((ws.ws_row, ws.ws_col))
}

/// Puts the caller's terminal in raw mode while it lives, and back as it was after.
struct RawMode {
    saved: rustix::termios::Termios,
}

impl RawMode {
    fn enter() -> Option<RawMode> {
        let stdin = std::io::stdin();
        let saved = rustix::termios::tcgetattr(stdin.as_fd()).ok()?;
        let mut raw = saved.clone();
        raw.make_raw();
        rustix::termios::tcsetattr(stdin.as_fd(), rustix::termios::OptionalActions::Now, &raw)
            .ok()?;
        Some(RawMode { saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let stdin = std::io::stdin();
        let _ = rustix::termios::tcsetattr(
            stdin.as_fd(),
            rustix::termios::OptionalActions::Now,
            &self.saved,
        );
    }
}

/// Attach this terminal to a session until it ends (exit with its code) or the operator
/// detaches (exit 0).
async fn attach(target: &Target, id: &str) -> Result<(), Failure> {
    let request = ws_request(target, &format!("/api/v1/sessions/{id}/pty"))?;
    let (socket, _) = tokio_tungstenite::connect_async(request)
        .await
        .map_err(|e| Failure::Runtime(anyhow!("cannot attach to session {id}: {e}")))?;
    let (mut sink, mut stream) = socket.split();
    let interactive = rustix::termios::isatty(std::io::stdin().as_fd());
    let raw = if interactive { RawMode::enter() } else { None };
    let resume = json!({"type": "resume", "offset": null}).to_string();
    sink.send(Message::Text(resume.into()))
        .await
        .map_err(|e| Failure::Runtime(e.into()))?;
    if let Some((rows, cols)) = terminal_size() {
        let resize = json!({"type": "resize", "rows": rows, "cols": cols}).to_string();
        let _ = sink.send(Message::Text(resize.into())).await;
    }
    // Stdin is read on a thread of its own (blocking reads), forwarded as input frames.
    let (input_tx, mut input) = tokio::sync::mpsc::channel::<Vec<u8>>(64);
    std::thread::spawn(move || {
        use std::io::Read;
        let mut buf = [0u8; 4096];
        let mut stdin = std::io::stdin().lock();
        while let Ok(n) = stdin.read(&mut buf) {
            if n == 0 || input_tx.blocking_send(buf[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    let mut winch =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::window_change()).ok();
    let mut out = std::io::stdout();
    let mut exit_code: Option<i32> = None;
    let mut stdin_open = true;
    loop {
        tokio::select! {
            frame = stream.next() => match frame {
                None => break,
                Some(Err(e)) => {
                    drop(raw);
                    return Err(Failure::Runtime(anyhow!("the session's connection failed: {e}")));
                }
                Some(Ok(Message::Binary(b))) => match decode_server_binary(&b) {
                    Ok(ServerBinary::Output { data, .. } | ServerBinary::Snapshot { data, .. }) => {
                        let _ = out.write_all(data).and_then(|()| out.flush());
                    }
                    Err(_) => {}
                },
                Some(Ok(Message::Text(t))) => match serde_json::from_str::<ServerText>(&t) {
                    Ok(ServerText::Exit { code }) => exit_code = Some(code),
                    Ok(ServerText::Error { code, message }) if interactive => {
                        let _ = write!(out, "\r\n[kaged: {code}: {message}]\r\n");
                    }
                    _ => {}
                },
                Some(Ok(Message::Close(frame))) => {
                    if let Some(f) = frame.filter(|f| f.code != tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode::Normal) {
                        let _ = write!(out, "\r\n[kaged: {}]\r\n", f.reason);
                    }
                    break;
                }
                Some(Ok(_)) => {}
            },
            bytes = input.recv(), if stdin_open => match bytes {
                None => stdin_open = false,
                Some(bytes) => {
                    if interactive && bytes.contains(&DETACH_KEY) {
                        drop(raw);
                        eprintln!("\r\n[kaged: detached; `kaged session attach {id}` to come back]");
                        return Ok(());
                    }
                    if sink.send(Message::Binary(bytes.into())).await.is_err() {
                        break;
                    }
                }
            },
            _ = async { match winch.as_mut() { Some(w) => { w.recv().await; } None => std::future::pending().await } } => {
                if let Some((rows, cols)) = terminal_size() {
                    let resize = json!({"type": "resize", "rows": rows, "cols": cols}).to_string();
                    let _ = sink.send(Message::Text(resize.into())).await;
                }
            }
        }
    }
    drop(raw);
    match exit_code {
        Some(0) | None => Ok(()),
        Some(code) => Err(Failure::Exit(u8::try_from(code).unwrap_or(1))),
    }
}
