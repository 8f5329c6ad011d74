//! The agent's stdio transport: newline-delimited lines in from stdin, out to stdout. Steps that
//! must act on the raw wire (a line written as is, an exit) travel through the crate's own
//! outgoing queue as marker notifications, so they take effect in order with every line sent
//! before them; the writer recognises a marker and acts instead of writing it.

use std::pin::Pin;

use agent_client_protocol::{Lines, UntypedMessage};
use futures_util::{Sink, Stream};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

/// Method of the marker that writes its `line` as is.
const RAW: &str = "_kaged_scripted/raw";
/// Method of the marker that exits the process with its `code`.
const EXIT: &str = "_kaged_scripted/exit";

/// The marker notification for a line written as is.
pub fn raw_marker(line: &str) -> Result<UntypedMessage, agent_client_protocol::Error> {
    UntypedMessage::new(RAW, json!({ "line": line }))
}

/// The marker notification for an exit with `code`.
pub fn exit_marker(code: i32) -> Result<UntypedMessage, agent_client_protocol::Error> {
    UntypedMessage::new(EXIT, json!({ "code": code }))
}

/// What the writer does with one outgoing line.
enum Action {
    Write(String),
    Exit(i32),
}

fn action(line: String) -> Action {
    if !line.contains("\"_kaged_scripted/") {
        return Action::Write(line);
    }
    let Ok(value) = serde_json::from_str::<Value>(&line) else {
        return Action::Write(line);
    };
    let params = &value["params"];
    match value["method"].as_str() {
        Some(RAW) => Action::Write(params["line"].as_str().unwrap_or_default().to_string()),
        Some(EXIT) => {
            let code = params["code"].as_i64().unwrap_or(1);
            Action::Exit(i32::try_from(code).unwrap_or(1))
        }
        _ => Action::Write(line),
    }
}

type OutSink = Pin<Box<dyn Sink<String, Error = std::io::Error> + Send>>;
type InStream = Pin<Box<dyn Stream<Item = std::io::Result<String>> + Send>>;

/// The transport over this process's stdin and stdout.
pub fn stdio() -> Lines<OutSink, InStream> {
    let outgoing: OutSink = Box::pin(futures_util::sink::unfold(
        tokio::io::stdout(),
        async |mut out, line: String| {
            match action(line) {
                Action::Write(text) => {
                    out.write_all(text.as_bytes()).await?;
                    out.write_all(b"\n").await?;
                    out.flush().await?;
                }
                Action::Exit(code) => {
                    out.flush().await?;
                    eprintln!("kaged-acp-scripted: exit {code} (scripted)");
                    std::process::exit(code);
                }
            }
            Ok::<_, std::io::Error>(out)
        },
    ));
    let incoming: InStream = Box::pin(futures_util::stream::unfold(
        BufReader::new(tokio::io::stdin()).lines(),
        async |mut lines| match lines.next_line().await {
            Ok(Some(line)) => Some((Ok(line), lines)),
            Ok(None) => None,
            Err(e) => Some((Err(e), lines)),
        },
    ));
    Lines::new(outgoing, incoming)
}
