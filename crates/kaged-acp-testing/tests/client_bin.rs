//! `kaged-acp-client` against `kaged-acp-scripted`: the report of a session with two prompts and
//! an approved permission, a cancelled permission, an agent that exits mid-turn (non-zero, with
//! the reason), and bad arguments.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

use std::io::Write;
use std::process::{Command, Output, Stdio};

use serde_json::{Value, json};

/// Runs the client with `--permission permission` against the scripted agent with `script`,
/// the prompts `lines` on its stdin.
fn run(script: &Value, permission: &str, lines: &str) -> Output {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("script.json");
    std::fs::write(&path, script.to_string()).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_kaged-acp-client"))
        .args(["--permission", permission, "--"])
        .arg(env!("CARGO_BIN_EXE_kaged-acp-scripted"))
        .arg(&path)
        .current_dir(dir.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(lines.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

fn report(output: &Output) -> Value {
    assert!(
        output.status.success(),
        "{}: {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

fn said(prompt: &Value) -> String {
    prompt["updates"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|u| u["sessionUpdate"] == "agent_message_chunk")
        .filter_map(|u| u["content"]["text"].as_str())
        .collect()
}

#[test]
fn a_session_of_two_prompts_is_reported_with_its_updates_and_permissions() {
    let script = json!({"prompts": [[
        {"say": "Hello.", "chunks": 2},
        {"tool_call": {"id": "t1", "title": "Run tests", "kind": "execute"}},
        {"permission": {"tool_call_id": "t1"}, "if_allowed": [{"say": " Allowed."}]},
        {"stop": "max_tokens"}
    ]]});
    let report = report(&run(&script, "allow_once", "First.\nSecond.\n"));
    assert_eq!(report["initialize"]["protocolVersion"], 1, "{report}");
    assert_eq!(report["session"], "scripted-1", "{report}");
    let prompts = report["prompts"].as_array().unwrap();
    assert_eq!(prompts.len(), 2, "{report}");
    assert_eq!(prompts[0]["stop_reason"], "max_tokens", "{report}");
    assert_eq!(
        said(&prompts[0]),
        "Hello.permission t1: allow_once Allowed.",
        "{report}"
    );
    let asked = prompts[0]["permissions"].as_array().unwrap();
    assert_eq!(asked.len(), 1, "{report}");
    assert_eq!(asked[0]["sessionId"], "scripted-1", "{report}");
    assert_eq!(asked[0]["toolCall"]["toolCallId"], "t1", "{report}");
    // Past the end of the script: the turn ends at once.
    assert_eq!(prompts[1]["stop_reason"], "end_turn", "{report}");
    assert_eq!(prompts[1]["updates"], json!([]), "{report}");
    assert_eq!(prompts[1]["permissions"], json!([]), "{report}");
}

#[test]
fn cancel_answers_a_permission_request_cancelled() {
    let script = json!({"prompts": [[
        {"permission": {"tool_call_id": "t1"}, "if_allowed": [{"say": "never"}]}
    ]]});
    let report = report(&run(&script, "cancel", "Go.\n"));
    let prompt = &report["prompts"][0];
    assert_eq!(prompt["stop_reason"], "cancelled", "{report}");
    assert_eq!(said(prompt), "permission t1: cancelled", "{report}");
}

#[test]
fn an_agent_exiting_mid_turn_fails_the_client_with_the_reason() {
    let script = json!({"prompts": [[{"say": "before"}, {"exit": 3}]]});
    let output = run(&script, "allow_once", "Go.\n");
    assert!(!output.status.success(), "{}", output.status);
    assert!(output.stdout.is_empty(), "no report");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("kaged-acp-client: "), "{stderr}");
}

#[test]
fn bad_arguments_exit_2_with_the_usage() {
    for args in [&["--", "true"][..], &["--permission", "x"], &["--bogus"]] {
        let output = Command::new(env!("CARGO_BIN_EXE_kaged-acp-client"))
            .args(args)
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains("usage: kaged-acp-client"),
            "{args:?}: {stderr}"
        );
    }
}
