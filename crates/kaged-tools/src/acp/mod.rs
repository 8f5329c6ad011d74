//! `kaged acp-shim -- AGENT ARGV…`: runs inside an ACP agent's cage, between the daemon (on
//! the shim's stdin and stdout) and the agent (on pipes; its stderr inherited).
//!
//! - Lines from the daemon go to the agent unchanged; lines from the agent go to the daemon
//!   unchanged, except requests for the client methods of [`SERVED_METHODS`]: the shim
//!   carries those out itself, here in the cage (`fs.rs`, `terminal.rs`), answers the agent,
//!   and sends the daemon one `_kaged/served` notification per request (what was asked and
//!   whether it worked; never file contents or output).
//! - A line longer than [`MAX_LINE`] is passed on unchanged without being held whole (the
//!   daemon judges it); so is a line that is not JSON.
//! - When the agent exits, the shim passes on the rest of its output, kills every terminal
//!   and exits with the agent's exit code (128 + the signal when a signal ended it).

mod fs;
pub mod jsonrpc;
mod terminal;

use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::sync::Mutex;
use tokio::task::JoinSet;

use jsonrpc::{Audit, Failure, Request};
pub use jsonrpc::{SERVED_METHODS, SERVED_NOTICE};
use terminal::Terminals;

/// The longest line the shim holds whole (and parses); longer ones are streamed through.
pub const MAX_LINE: usize = 8 << 20;
/// Served requests in progress at once (a `terminal/wait_for_exit` does not count): beyond
/// that the agent's output waits, so memory stays bounded however fast it asks.
const IN_FLIGHT: usize = 16;
/// How long the agent's output is still passed on once it exited.
const DRAIN: Duration = Duration::from_secs(2);

/// One line read, bounded.
#[derive(Debug, PartialEq)]
enum Piece {
    /// A whole line, without its newline.
    Line(Vec<u8>),
    /// The first [`MAX_LINE`] bytes of a longer line; the rest is still to be read.
    Start(Vec<u8>),
    End,
}

async fn next_piece<R: AsyncBufRead + Unpin>(reader: &mut R, max: usize) -> std::io::Result<Piece> {
    let mut line = Vec::new();
    loop {
        let buf = reader.fill_buf().await?;
        if buf.is_empty() {
            return Ok(if line.is_empty() {
                Piece::End
            } else {
                Piece::Line(line)
            });
        }
        let room = max - line.len();
        match buf.iter().take(room + 1).position(|b| *b == b'\n') {
            Some(at) => {
                line.extend_from_slice(&buf[..at]);
                reader.consume(at + 1);
                return Ok(Piece::Line(line));
            }
            None if buf.len() > room => {
                line.extend_from_slice(&buf[..room]);
                reader.consume(room);
                return Ok(Piece::Start(line));
            }
            None => {
                let n = buf.len();
                line.extend_from_slice(buf);
                reader.consume(n);
            }
        }
    }
}

/// Copies the rest of a line (through its newline; one is added at the end of the stream).
async fn copy_rest_of_line<R, W>(reader: &mut R, writer: &mut W) -> std::io::Result<()>
where
    R: AsyncBufRead + Unpin,
    W: AsyncWrite + Unpin,
{
    loop {
        let buf = reader.fill_buf().await?;
        if buf.is_empty() {
            return writer.write_all(b"\n").await;
        }
        match buf.iter().position(|b| *b == b'\n') {
            Some(at) => {
                writer.write_all(&buf[..=at]).await?;
                reader.consume(at + 1);
                return Ok(());
            }
            None => {
                let n = buf.len();
                writer.write_all(buf).await?;
                reader.consume(n);
            }
        }
    }
}

async fn write_line<W: AsyncWrite + Unpin>(writer: &mut W, line: &[u8]) -> std::io::Result<()> {
    writer.write_all(line).await?;
    writer.write_all(b"\n").await?;
    writer.flush().await
}

/// One side's writer, shared by the relay and the served requests (a line at a time).
type Shared<W> = Arc<Mutex<W>>;
/// The agent's stdin: `None` once the daemon's input ended (closing it).
type AgentInput = Shared<Option<tokio::process::ChildStdin>>;

/// Run the agent `argv` and relay between it and the daemon (`input`, `output`); the
/// agent's exit code (128 + signal when a signal ended it). An error: the agent could not
/// be started.
pub async fn run_shim<R, W>(argv: &[String], input: R, output: W) -> std::io::Result<i32>
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let Some((program, args)) = argv.split_first() else {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "no agent command given: kaged acp-shim -- AGENT [ARGS…]",
        ));
    };
    let spawned = tokio::process::Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn();
    let mut agent = match spawned {
        Ok(agent) => agent,
        Err(e) => {
            let reason = format!("cannot run {program}: {e}");
            // The daemon gives this as the run's reason (not just "the output ended").
            let notice = serde_json::json!({"jsonrpc": "2.0", "method": jsonrpc::CANNOT_START_NOTICE, "params": {"reason": reason}});
            let mut output = output;
            let _ = write_line(&mut output, notice.to_string().as_bytes()).await;
            return Err(std::io::Error::new(e.kind(), reason));
        }
    };
    let agent_in: AgentInput = Arc::new(Mutex::new(agent.stdin.take()));
    let agent_out = agent.stdout.take();
    let upstream: Shared<W> = Arc::new(Mutex::new(output));
    let terminals = Arc::new(Terminals::default());
    let down = tokio::spawn(relay_down(input, agent_in.clone()));
    let mut up = tokio::spawn(relay_up(
        agent_out,
        upstream.clone(),
        agent_in,
        terminals.clone(),
    ));
    let status = agent.wait().await;
    // What the agent wrote before it exited still goes up; requests still being served for
    // it are dropped with it.
    if tokio::time::timeout(DRAIN, &mut up).await.is_err() {
        up.abort();
    }
    down.abort();
    terminals.kill_all();
    let _ = upstream.lock().await.flush().await;
    let status = status?;
    use std::os::unix::process::ExitStatusExt;
    Ok(status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(1))
}

/// Daemon → agent, line by line, unchanged. The end of the daemon's input closes the
/// agent's stdin.
async fn relay_down<R: AsyncRead + Unpin>(input: R, agent_in: AgentInput) {
    let mut input = BufReader::new(input);
    loop {
        let piece = next_piece(&mut input, MAX_LINE).await;
        let mut writer = agent_in.lock().await;
        let Some(agent) = writer.as_mut() else { return };
        let sent = match piece {
            Ok(Piece::Line(line)) => write_line(agent, &line).await,
            Ok(Piece::Start(start)) => {
                async {
                    agent.write_all(&start).await?;
                    copy_rest_of_line(&mut input, agent).await?;
                    agent.flush().await
                }
                .await
            }
            Ok(Piece::End) | Err(_) => {
                *writer = None;
                return;
            }
        };
        if sent.is_err() {
            return;
        }
    }
}

/// Agent → daemon, line by line, unchanged, except the requests the shim serves (each as a
/// task of its own). Returns at the end of the agent's output, after every request being
/// served was answered.
async fn relay_up<W: AsyncWrite + Unpin + Send + 'static>(
    agent_out: Option<tokio::process::ChildStdout>,
    upstream: Shared<W>,
    agent_in: AgentInput,
    terminals: Arc<Terminals>,
) {
    let Some(agent_out) = agent_out else { return };
    let mut reader = BufReader::new(agent_out);
    let mut serving = JoinSet::new();
    let slots = Arc::new(tokio::sync::Semaphore::new(IN_FLIGHT));
    loop {
        // Collect finished tasks as we go.
        while serving.try_join_next().is_some() {}
        match next_piece(&mut reader, MAX_LINE).await {
            Ok(Piece::Line(line)) => match jsonrpc::served_request(&line) {
                Some(request) => {
                    let slot = if request.method == "terminal/wait_for_exit" {
                        None
                    } else {
                        match slots.clone().acquire_owned().await {
                            Ok(slot) => Some(slot),
                            Err(_) => break,
                        }
                    };
                    let served = serve_one(
                        request,
                        terminals.clone(),
                        agent_in.clone(),
                        upstream.clone(),
                    );
                    serving.spawn(async move {
                        served.await;
                        drop(slot);
                    });
                }
                None => {
                    let mut up = upstream.lock().await;
                    if write_line(&mut *up, &line).await.is_err() {
                        break;
                    }
                }
            },
            Ok(Piece::Start(start)) => {
                let mut up = upstream.lock().await;
                let sent = async {
                    up.write_all(&start).await?;
                    copy_rest_of_line(&mut reader, &mut *up).await?;
                    up.flush().await
                }
                .await;
                if sent.is_err() {
                    break;
                }
            }
            Ok(Piece::End) | Err(_) => break,
        }
    }
    while serving.join_next().await.is_some() {}
}

/// Carries out one request, answers the agent, tells the daemon.
async fn serve_one<W: AsyncWrite + Unpin>(
    request: Request,
    terminals: Arc<Terminals>,
    agent_in: AgentInput,
    upstream: Shared<W>,
) {
    let (result, audit) = handle(&request, &terminals).await;
    if let Some(agent) = agent_in.lock().await.as_mut() {
        let _ = write_line(agent, &jsonrpc::response(&request.id, &result)).await;
    }
    let notice = jsonrpc::served_notice(&request.method, &audit, &result);
    let _ = write_line(&mut *upstream.lock().await, &notice).await;
}

/// The result of one served request, and its audit.
async fn handle(request: &Request, terminals: &Terminals) -> (Result<Value, Failure>, Audit) {
    let params = request.params.clone();
    if request.method.starts_with("fs/") {
        let mut audit = fs::audit_of(&params);
        let write = request.method == "fs/write_text_file";
        let done = tokio::task::spawn_blocking(move || {
            let result = if write {
                fs::write(&params, &mut audit)
            } else {
                fs::read(&params, &mut audit)
            };
            (result, audit)
        })
        .await;
        return done.unwrap_or_else(|e| {
            (
                Err(Failure::internal(format!("the request failed: {e}"))),
                Audit::default(),
            )
        });
    }
    let mut audit = terminal::audit_of(&params);
    let result = match request.method.as_str() {
        "terminal/create" => terminals.create(&params),
        "terminal/output" => terminals.output(&params, &mut audit),
        "terminal/wait_for_exit" => terminals.wait_for_exit(&params).await,
        "terminal/kill" => terminals.kill(&params),
        "terminal/release" => terminals.release(&params),
        other => Err(Failure::invalid(format!("{other} is not served here"))),
    };
    if let Ok(created) = &result
        && let Some(id) = created.get("terminalId")
    {
        audit = audit.with("terminalId", id.clone());
    }
    (result, audit)
}

#[cfg(test)]
mod tests;
