//! A kaged plugin in Rust: one tool, `greet`.
//!
//! The wire protocol (docs/plugins.md): JSON-RPC 2.0, one message per line, on stdin and
//! stdout. kaged calls `initialize`, `health`, `tools/call` and `shutdown`, and notifies
//! `initialized`. Logs go to stderr: stdout carries protocol lines only.

use std::io::{BufRead, Write};

use serde_json::{Value, json};

/// The kaged plugin API this plugin speaks.
const API: i64 = 1;

// Error codes (kaged-plugin's wire.rs).
const PARSE_ERROR: i64 = -32700;
const METHOD_NOT_FOUND: i64 = -32601;
const INVALID_PARAMS: i64 = -32602;
const NOT_INITIALIZED: i64 = -32002;
const UNSUPPORTED_API: i64 = -32003;
const UNKNOWN_TOOL: i64 = -32005;

/// A JSON-RPC error: its code and message.
struct RpcError(i64, String);

fn send(out: &mut impl Write, mut message: Value) -> std::io::Result<()> {
    message["jsonrpc"] = json!("2.0");
    writeln!(out, "{message}")?;
    out.flush()
}

/// What `greet` answers.
fn greet(arguments: &Value) -> Result<Value, RpcError> {
    match arguments["name"].as_str().map(str::trim) {
        Some(name) if !name.is_empty() => {
            Ok(json!({"content": format!("Hello, {name}!"), "is_error": false}))
        }
        _ => Err(RpcError(
            INVALID_PARAMS,
            "greet needs a non-empty `name`".into(),
        )),
    }
}

/// The answer to one request from kaged.
fn answer(method: &str, params: &Value, initialized: &mut bool) -> Result<Value, RpcError> {
    match method {
        "initialize" => {
            let offered = &params["kaged_api"];
            if offered.as_i64() != Some(API) {
                return Err(RpcError(
                    UNSUPPORTED_API,
                    format!("this plugin speaks kaged API {API}, not {offered}"),
                ));
            }
            *initialized = true;
            Ok(json!({"name": "hello", "version": env!("CARGO_PKG_VERSION")}))
        }
        "shutdown" => Ok(Value::Null),
        _ if !*initialized => Err(RpcError(
            NOT_INITIALIZED,
            format!("{method} before initialize"),
        )),
        "health" => Ok(json!({"status": "ok"})),
        "tools/call" => match params["name"].as_str() {
            Some("greet") => greet(&params["arguments"]),
            Some(other) => Err(RpcError(
                UNKNOWN_TOOL,
                format!("hello offers no tool `{other}` (it offers greet)"),
            )),
            None => Err(RpcError(INVALID_PARAMS, "tools/call needs a `name`".into())),
        },
        other => Err(RpcError(
            METHOD_NOT_FOUND,
            format!("hello serves no method `{other}`"),
        )),
    }
}

fn main() -> std::io::Result<()> {
    let stdin = std::io::stdin();
    let mut out = std::io::stdout().lock();
    let mut initialized = false;
    for line in stdin.lock().lines() {
        let message: Value = match serde_json::from_str(&line?) {
            Ok(message) => message,
            Err(e) => {
                let error = json!({"code": PARSE_ERROR, "message": format!("not JSON: {e}")});
                send(&mut out, json!({"id": null, "error": error}))?;
                continue;
            }
        };
        let Some(method) = message["method"].as_str() else {
            continue; // an answer nobody waits for
        };
        let Some(id) = message.get("id") else {
            // Notifications: `initialized` and anything else are taken silently.
            if method == "initialized" {
                eprintln!("hello: initialized");
            }
            continue;
        };
        let params = message.get("params").cloned().unwrap_or_else(|| json!({}));
        let reply = match answer(method, &params, &mut initialized) {
            Ok(result) => json!({"id": id, "result": result}),
            Err(RpcError(code, text)) => {
                json!({"id": id, "error": {"code": code, "message": text}})
            }
        };
        send(&mut out, reply)?;
        if method == "shutdown" {
            eprintln!("hello: stopped");
            return Ok(());
        }
    }
    Ok(())
}
