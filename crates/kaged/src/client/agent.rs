//! A model agent's session (a conversation) from a terminal: `send` (one message),
//! `attach_conversation` (its event log over the events WebSocket, rendered as text as it
//! streams, stdin lines sent as messages; reconnects from the last `seq` on a dropped socket)
//! and `print_transcript` (the stored records, paged, as text or JSON lines).
//! The rendering itself is `conversation.rs`.

use std::io::{IsTerminal, Write};
use std::time::Duration;

use anyhow::anyhow;
use futures_util::StreamExt;
use kaged_config::DeploymentMode;
use kaged_session::agent::Sequenced;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use super::conversation::{DEFAULT_WIDTH, Live, Transcript};
use super::transport::{Target, call, ws_request};
use crate::Failure;

/// Records per page of `GET …/conversation`.
const PAGE: u64 = 1000;
/// How long a dropped events socket is retried before giving up.
const RECONNECT_FOR: Duration = Duration::from_secs(30);
/// After stdin ends, how long `attach` waits for the log to catch up before detaching.
const CATCH_UP_FOR: Duration = Duration::from_secs(5);

/// The session's JSON (`GET /api/v1/sessions/{id}`'s `session`).
pub(crate) async fn session(target: &Target, id: &str) -> Result<Value, Failure> {
    let v = call(
        target,
        reqwest::Method::GET,
        &format!("/api/v1/sessions/{id}"),
        None,
    )
    .await?;
    Ok(v["session"].clone())
}

/// Whether a session's JSON is a model agent's conversation (older daemons: never).
pub(crate) fn is_conversation(session: &Value) -> bool {
    session["conversation"].as_bool().unwrap_or(false)
}

/// `POST /api/v1/sessions/{id}/messages`; a short line on stderr when it resumed the session.
pub(crate) async fn send(target: &Target, id: &str, text: &str) -> Result<(), Failure> {
    if text.trim().is_empty() {
        return Err(Failure::Config(
            "nothing to send: the message is empty".into(),
        ));
    }
    let v = call(
        target,
        reqwest::Method::POST,
        &format!("/api/v1/sessions/{id}/messages"),
        Some(json!({"text": text})),
    )
    .await?;
    if v["resumed"].as_bool() == Some(true) {
        eprintln!("kaged: session {id} had ended; resumed it");
    }
    Ok(())
}

/// The terminal's width, if stdout is one.
fn width() -> usize {
    use std::os::fd::AsFd;
    rustix::termios::tcgetwinsize(std::io::stdout().as_fd())
        .ok()
        .filter(|ws| ws.ws_col > 0)
        .map_or(DEFAULT_WIDTH, |ws| usize::from(ws.ws_col))
}

/// One page of the stored records after `after`, and the log's last seq.
async fn page(
    target: &Target,
    id: &str,
    after: u64,
    limit: u64,
) -> Result<(Vec<Value>, u64), Failure> {
    let v = call(
        target,
        reqwest::Method::GET,
        &format!("/api/v1/sessions/{id}/conversation?after={after}&limit={limit}"),
        None,
    )
    .await?;
    let events = v["events"].as_array().cloned().unwrap_or_default();
    Ok((events, v["last_seq"].as_u64().unwrap_or(0)))
}

/// A record of the wire as the renderer's type; `None` for a type this client does not know
/// (newer daemons may add some: they are skipped).
fn parse(record: &Value) -> Option<Sequenced> {
    serde_json::from_value(record.clone()).ok()
}

fn write_out(out: &mut impl Write, text: &str) -> Result<(), Failure> {
    if text.is_empty() {
        return Ok(());
    }
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .map_err(|e| Failure::Runtime(anyhow!("cannot write to stdout: {e}")))
}

/// `kaged session transcript ID` of a conversation: every stored record, page by page, as
/// plain text or (`json`) as JSON lines.
pub(crate) async fn print_transcript(target: &Target, id: &str, json: bool) -> Result<(), Failure> {
    let mut out = std::io::stdout().lock();
    let mut render = Transcript::new();
    let mut after = 0;
    loop {
        let (events, last_seq) = page(target, id, after, PAGE).await?;
        for record in &events {
            let text = if json {
                format!("{record}\n")
            } else {
                parse(record).map(|r| render.push(&r)).unwrap_or_default()
            };
            write_out(&mut out, &text)?;
            after = after.max(record["seq"].as_u64().unwrap_or(after));
        }
        if events.is_empty() || after >= last_seq {
            break;
        }
    }
    if !json {
        write_out(&mut out, &render.finish())?;
    }
    Ok(())
}

/// How one connection to the events socket ended.
enum Ended {
    /// The socket dropped (or the server asked for a reconnect): connect again from `last`.
    Dropped(String),
    /// Stdin ended and the log caught up: detach.
    Detached,
}

/// What `attach` keeps across connections.
struct Attach<'a> {
    /// Found again before each reconnect: a restarted local daemon has a new address and nonce.
    target: Target,
    mode: Option<DeploymentMode>,
    id: &'a str,
    /// The last seq handled: a reconnect asks for what follows it.
    last: u64,
    render: Live,
    /// Stdin's lines; `None` once it ended.
    lines: tokio::sync::mpsc::Receiver<String>,
    stdin_open: bool,
    /// Once stdin ended: the seq to reach before detaching, and until when to wait for it.
    catch_up: Option<(u64, tokio::time::Instant)>,
}

/// `kaged session attach ID` of a conversation: the log from after `after`, rendered as it
/// streams; each stdin line is sent as a message; stdin's end detaches (once what is
/// recorded so far has been shown). The run goes on either way.
pub(crate) async fn attach_conversation(
    target: Target,
    mode: Option<DeploymentMode>,
    id: &str,
    after: u64,
) -> Result<(), Failure> {
    let (tx, lines) = tokio::sync::mpsc::channel::<String>(64);
    std::thread::spawn(move || {
        for line in std::io::stdin().lines() {
            let Ok(line) = line else { break };
            if tx.blocking_send(line).is_err() {
                break;
            }
        }
    });
    if std::io::stdin().is_terminal() {
        eprintln!(
            "[kaged: attached to {id}; type a message and Enter to send it; Ctrl-D detaches, the run goes on]"
        );
    }
    let color = std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let mut state = Attach {
        target,
        mode,
        id,
        last: after,
        render: Live::new(width(), color),
        lines,
        stdin_open: true,
        catch_up: None,
    };
    let mut first = true;
    let mut dropped_at: Option<tokio::time::Instant> = None;
    let mut delay = Duration::from_millis(100);
    loop {
        if !first && let Ok(found) = super::transport::target(state.mode) {
            state.target = found;
        }
        let request = ws_request(
            &state.target,
            &format!("/api/v1/sessions/{id}/events?after={}", state.last),
        )?;
        let socket = match tokio_tungstenite::connect_async(request).await {
            Ok((socket, _)) => socket,
            Err(e) if first => {
                return Err(Failure::Runtime(anyhow!(
                    "cannot attach to session {id}: {e}"
                )));
            }
            Err(e) => {
                let since = *dropped_at.get_or_insert_with(tokio::time::Instant::now);
                if since.elapsed() > RECONNECT_FOR {
                    finish(&mut state)?;
                    return Err(Failure::Runtime(anyhow!(
                        "lost session {id}'s events and cannot reconnect: {e}; `kaged session attach {id} --after {}` resumes",
                        state.last
                    )));
                }
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(2));
                continue;
            }
        };
        first = false;
        let (since, from) = (tokio::time::Instant::now(), state.last);
        let ended = follow(&mut state, socket).await?;
        // A connection that brought records or lasted resets the reconnect budget; one closed
        // at once again and again does not.
        if state.last > from || since.elapsed() > Duration::from_secs(5) {
            dropped_at = None;
            delay = Duration::from_millis(100);
        } else {
            dropped_at.get_or_insert(since);
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(2));
        }
        match ended {
            Ended::Detached => {
                finish(&mut state)?;
                return Ok(());
            }
            Ended::Dropped(why) => {
                tracing::debug!(
                    "events socket of {id} dropped ({why}); reconnecting after {}",
                    state.last
                );
            }
        }
    }
}

fn finish(state: &mut Attach<'_>) -> Result<(), Failure> {
    let text = state.render.finish();
    write_out(&mut std::io::stdout().lock(), &text)
}

/// Read one connection until it drops, or stdin ends and the log caught up.
async fn follow(
    state: &mut Attach<'_>,
    socket: tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
) -> Result<Ended, Failure> {
    let (_sink, mut stream) = socket.split();
    loop {
        if let Some((target_seq, _)) = state.catch_up
            && state.last >= target_seq
        {
            return Ok(Ended::Detached);
        }
        let deadline = state.catch_up.map(|(_, until)| until);
        tokio::select! {
            frame = stream.next() => match frame {
                None => return Ok(Ended::Dropped("closed".into())),
                Some(Err(e)) => return Ok(Ended::Dropped(e.to_string())),
                Some(Ok(Message::Text(t))) => {
                    let Ok(record) = serde_json::from_str::<Value>(&t) else { continue };
                    let Some(seq) = record["seq"].as_u64() else { continue };
                    if seq <= state.last {
                        continue; // already shown (a reconnect never repeats a record)
                    }
                    state.last = seq;
                    if let Some(r) = parse(&record) {
                        let text = state.render.push(&r);
                        write_out(&mut std::io::stdout().lock(), &text)?;
                    }
                }
                Some(Ok(Message::Close(frame))) => {
                    let (code, reason) = frame
                        .map(|f| (f.code, f.reason.to_string()))
                        .unwrap_or((CloseCode::Normal, String::new()));
                    if code == CloseCode::Policy {
                        finish(state)?;
                        return Err(Failure::Runtime(anyhow!("session {}'s events: {reason}", state.id)));
                    }
                    return Ok(Ended::Dropped(format!("{code}: {reason}")));
                }
                Some(Ok(_)) => {}
            },
            line = state.lines.recv(), if state.stdin_open => match line {
                Some(line) => {
                    if !line.trim().is_empty()
                        && let Err(e) = send(&state.target, state.id, &line).await
                    {
                        eprintln!("kaged: not sent: {}", failure_text(&e));
                    }
                }
                None => {
                    state.stdin_open = false;
                    // Show what is recorded now, then detach.
                    let (_, last_seq) = page(&state.target, state.id, state.last, 1).await?;
                    state.catch_up = Some((last_seq, tokio::time::Instant::now() + CATCH_UP_FOR));
                }
            },
            _ = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d).await,
                    None => std::future::pending().await,
                }
            } => return Ok(Ended::Detached),
        }
    }
}

fn failure_text(f: &Failure) -> String {
    match f {
        Failure::Config(m) | Failure::NotRunning(m) => m.clone(),
        Failure::Runtime(e) => e.to_string(),
        Failure::Exit(code) => format!("exit {code}"),
    }
}
