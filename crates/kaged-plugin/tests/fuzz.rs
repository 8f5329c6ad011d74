//! Fuzz targets for what plugins hand kaged: the manifest ([`load_manifest`]) and the lines a
//! plugin writes ([`Message::parse`]). Each starts from its seed corpus in `fuzz/corpus/` and
//! mutates it (see `kaged-fuzz`). Bounded by default; see ARCHITECTURE.md (Testing) for longer
//! runs.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

use std::path::PathBuf;

use kaged_dsl::MAX_DIAGNOSTICS;
use kaged_fuzz::{Target, fuzz, try_fuzz};
use kaged_plugin::wire::{MAX_LINE_BYTES, code};
use kaged_plugin::{Message, WireError, load_manifest};

const MANIFEST_TOKENS: &[&str] = &[
    ":",
    ": ",
    "- ",
    "\n",
    "\n  ",
    "\n    ",
    "[",
    "]",
    "{",
    "}",
    ",",
    "#",
    "&a ",
    "*a",
    "!!str ",
    "|",
    "'",
    "\"",
    "---\n",
    "~",
    "null",
    "true",
    "0x1F",
    "1e3",
    "\t",
    "\r\n",
    "\u{feff}",
    "name: ",
    "version: ",
    "\"1.0.0\"",
    "0.1.0-rc.1+b",
    "kaged_api: ",
    "description: ",
    "author: ",
    "license: ",
    "MIT",
    " OR ",
    " AND ",
    " WITH ",
    "(",
    ")",
    "homepage: ",
    "https://",
    "command: ",
    "env:",
    "FOO: ",
    "capabilities:",
    "read:fs:/",
    "write:fs:/",
    "exec:/",
    "net:[]",
    "net:*",
    "net:",
    ":443",
    ":*",
    "[::1]",
    "kaged:storage:read",
    "kaged:storage:write",
    "methods: ",
    "notifications: ",
    "hooks: ",
    "on_session_start",
    "on_session_idle",
    "tools:",
    "input_schema: ",
    "type: object",
    "config_schema: ",
    "system_config_schema: ",
    "shutdown_timeout_sec: ",
    "health_interval_sec: ",
    "/..",
    "/./",
    "//",
    "9223372036854775808",
    "-1",
    "é",
    "ghp_abcdefghijklmnop",
];

const LINE_TOKENS: &[&str] = &[
    "{",
    "}",
    "[",
    "]",
    ",",
    ":",
    "\"",
    "\\",
    "\\u0000",
    "\\ud800",
    "null",
    "true",
    "1e400",
    "-0",
    "1.5",
    "9223372036854775808",
    "\"jsonrpc\":\"2.0\"",
    "\"jsonrpc\":\"1.0\"",
    "\"id\":",
    "\"method\":",
    "\"params\":",
    "\"result\":",
    "\"error\":",
    "\"code\":",
    "\"message\":",
    "\"data\":",
    "\"initialize\"",
    "\"storage/get\"",
    "\n",
    " ",
];

fn corpus(target: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target)
}

/// A 1-based line and column (in characters) that point into `text` or just past its end.
fn within(text: &str, line: usize, column: usize) -> Result<(), String> {
    let lines: Vec<&str> = text.split('\n').collect();
    let Some(at) = line.checked_sub(1).and_then(|i| lines.get(i)) else {
        return Err(format!("line {line} of a {}-line text", lines.len()));
    };
    let width = at.chars().count();
    if column == 0 || column > width + 1 {
        return Err(format!(
            "column {column} of line {line} ({width} characters)"
        ));
    }
    Ok(())
}

/// Diagnostics inside the text, in order, each stating a problem; a valid manifest's tree, as
/// JSON (which is YAML), loads as the same manifest.
fn check_manifest(input: &[u8]) -> Result<String, String> {
    let text = String::from_utf8_lossy(input);
    let manifest = match load_manifest(&text) {
        Ok(manifest) => manifest,
        Err(e) => {
            let diagnostics = &e.diagnostics;
            if diagnostics.is_empty() || diagnostics.len() > MAX_DIAGNOSTICS + 1 {
                return Err(format!("{} diagnostics", diagnostics.len()));
            }
            let mut previous = (0, 0);
            for d in diagnostics {
                if d.pos.source != 0 {
                    return Err(format!("{d}: source {}", d.pos.source));
                }
                within(&text, d.pos.line, d.pos.column).map_err(|e| format!("{d}: {e}"))?;
                let at = (d.pos.line, d.pos.column);
                if at < previous {
                    return Err(format!("{d} comes after {previous:?}"));
                }
                previous = at;
                if d.problem.is_empty() {
                    return Err(format!("{d}: no problem stated"));
                }
            }
            let first: Vec<&str> = diagnostics[0]
                .problem
                .split_whitespace()
                .take_while(|w| w.chars().all(|c| c.is_ascii_alphabetic()))
                .take(4)
                .collect();
            return Ok(format!(
                "invalid {} {}",
                diagnostics.len().min(4),
                first.join(" ")
            ));
        }
    };
    let (tree, _) = kaged_dsl::parse(0, &text).map_err(|d| format!("valid, yet {d}"))?;
    let json = serde_json::to_string_pretty(&kaged_dsl::to_json(&tree)).unwrap();
    match load_manifest(&json) {
        Ok(again) if again == manifest => Ok("valid".into()),
        other => Err(format!("{json} reads back as {other:?}")),
    }
}

/// A line that parses prints back as one line that parses the same; a refused one is refused
/// with a JSON-RPC error code.
fn check_line(input: &[u8]) -> Result<String, String> {
    match Message::parse(input) {
        Ok(message) => {
            let line = message.to_line();
            if line.contains('\n') {
                return Err(format!("{line:?} spans lines"));
            }
            match Message::parse(line.as_bytes()) {
                Ok(again) if again == message => {}
                other => return Err(format!("{line} reads back as {other:?}")),
            }
            Ok(match message {
                Message::Request { .. } => "request".into(),
                Message::Notification { .. } => "notification".into(),
                Message::Response { outcome: Ok(_), .. } => "result".into(),
                Message::Response {
                    outcome: Err(_), ..
                } => "error".into(),
            })
        }
        Err(e) => {
            if ![code::PARSE_ERROR, code::INVALID_REQUEST].contains(&e.code()) {
                return Err(format!("{e}: code {}", e.code()));
            }
            if input.len() > MAX_LINE_BYTES && e != WireError::TooLong {
                return Err(format!("a line of {} bytes: {e}", input.len()));
            }
            Ok(match e {
                WireError::TooLong => "too long".into(),
                WireError::NotJson(_) => "not json".into(),
                WireError::Invalid(why) => {
                    let words: Vec<&str> = why
                        .split_whitespace()
                        .take_while(|w| w.chars().all(|c| c.is_ascii_alphabetic()))
                        .take(3)
                        .collect();
                    format!("invalid {}", words.join(" "))
                }
            })
        }
    }
}

fn manifest_target() -> Target<'static> {
    Target {
        name: "plugin_manifest",
        corpus: corpus("plugin_manifest"),
        dictionary: MANIFEST_TOKENS,
        iterations: 2_500,
        max_len: 8192,
    }
}

#[test]
fn fuzz_plugin_manifest() {
    let report = fuzz(&manifest_target(), check_manifest);
    assert!(report.behaviours >= 10, "{report:?}");
}

#[test]
fn fuzz_plugin_line() {
    let report = fuzz(
        &Target {
            name: "plugin_line",
            corpus: corpus("plugin_line"),
            dictionary: LINE_TOKENS,
            iterations: 10_000,
            max_len: 4096,
        },
        check_line,
    );
    assert!(report.behaviours >= 8, "{report:?}");
}

/// The checks can fail: a planted off-by-one line, or a message that prints back differently,
/// is caught.
#[test]
fn the_fuzz_checks_catch_broken_positions_and_round_trips() {
    let found = try_fuzz(&manifest_target(), |input| {
        let text = String::from_utf8_lossy(input);
        match load_manifest(&text) {
            Ok(_) => Ok(String::new()),
            Err(e) => {
                for d in &e.diagnostics {
                    within(&text, d.pos.line + 1, d.pos.column)?;
                }
                Ok(String::new())
            }
        }
    });
    assert!(found.is_err(), "an off-by-one line went unnoticed");
    let found = try_fuzz(
        &Target {
            name: "plugin_line",
            corpus: corpus("plugin_line"),
            dictionary: LINE_TOKENS,
            iterations: 2_000,
            max_len: 4096,
        },
        |input| match Message::parse(input) {
            Ok(Message::Request { id, method, .. }) => {
                // A planted bug: params dropped on the way back.
                let again = Message::Request {
                    id,
                    method,
                    params: None,
                };
                check_line(again.to_line().as_bytes())?;
                (again == Message::parse(input).unwrap())
                    .then(String::new)
                    .ok_or_else(|| "params lost".to_string())
            }
            _ => Ok(String::new()),
        },
    );
    assert!(found.is_err(), "a lossy round trip went unnoticed");
}
