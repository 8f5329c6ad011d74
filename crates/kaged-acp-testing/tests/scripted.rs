//! `kaged-acp-scripted` against a client written with the same crate, over pipes: updates in
//! order, permission round trips, files and terminals served by the client, cancel, and the wire
//! effect of each misbehaviour.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

mod client;

use std::time::{Duration, Instant};

use agent_client_protocol::v1::schema::{CancelNotification, ContentBlock, PromptRequest};
use agent_client_protocol::v1::schema::{
    PermissionOptionKind, SessionUpdate, StopReason, ToolCallStatus, ToolKind,
};
use client::{Answers, Recorded, prompt, run, start};
use kaged_acp_testing::{Script, Step};

const ALLOW: Answers = Answers {
    permission: Some("allow_once"),
};

/// Runs `script` with one prompt per entry of `prompts`; the stop reasons (or errors).
async fn turns(
    script: Script,
    answers: Answers,
    prompts: &[&str],
) -> (tempfile::TempDir, Vec<Result<StopReason, String>>, Recorded) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    let texts: Vec<String> = prompts.iter().map(|p| p.to_string()).collect();
    let cwd = root.clone();
    let (result, rec) = run(&script, &root, answers, async move |cx| {
        let session = start(&cx, &cwd).await?;
        let mut stops = Vec::new();
        for text in &texts {
            stops.push(
                prompt(&cx, &session, text)
                    .await
                    .map(|r| r.stop_reason)
                    .map_err(|e| format!("{} ({})", e.message, i32::from(e.code))),
            );
        }
        Ok(stops)
    })
    .await;
    (dir, result.unwrap(), rec)
}

fn kinds(rec: &Recorded) -> Vec<&'static str> {
    rec.updates
        .iter()
        .map(|u| match u {
            SessionUpdate::AgentMessageChunk(_) => "message",
            SessionUpdate::AgentThoughtChunk(_) => "thought",
            SessionUpdate::ToolCall(_) => "tool_call",
            SessionUpdate::ToolCallUpdate(_) => "tool_call_update",
            SessionUpdate::Plan(_) => "plan",
            SessionUpdate::UsageUpdate(_) => "usage",
            _ => "other",
        })
        .collect()
}

#[tokio::test]
async fn updates_arrive_in_script_order_and_the_turn_ends_with_the_scripted_reason() {
    let script = Script::new()
        .prompt([
            Step::say_in("Hello, world", 3),
            Step::think("pondering"),
            Step::Plan(vec![kaged_acp_testing::PlanItem::Text("write".into())]),
            Step::tool_call("call_1", "Write a.txt", ToolKind::Edit),
            Step::tool_update("call_1", ToolCallStatus::Completed, Some("done")),
            Step::usage(1200, 200_000),
            Step::turn_usage(100, 20),
            Step::Stop(StopReason::MaxTokens),
            Step::say("never"),
        ])
        .prompt([Step::EchoPrompt]);
    let (_dir, stops, rec) = turns(script, ALLOW, &["first", "second prompt"]).await;
    assert_eq!(
        stops,
        vec![Ok(StopReason::MaxTokens), Ok(StopReason::EndTurn)]
    );
    assert_eq!(
        kinds(&rec),
        [
            "message",
            "message",
            "message",
            "thought",
            "plan",
            "tool_call",
            "tool_call_update",
            "usage",
            "message"
        ]
    );
    assert_eq!(rec.said(), "Hello, worldsecond prompt");
    let SessionUpdate::ToolCall(call) = &rec.updates[5] else {
        panic!("{:?}", rec.updates[5]);
    };
    assert_eq!(
        (call.tool_call_id.0.as_ref(), call.kind),
        ("call_1", ToolKind::Edit)
    );
    let SessionUpdate::UsageUpdate(usage) = &rec.updates[7] else {
        panic!("{:?}", rec.updates[7]);
    };
    assert_eq!((usage.used, usage.size), (1200, 200_000));
    let answer = rec
        .agent_lines()
        .into_iter()
        .find(|l| l.contains("max_tokens"))
        .unwrap();
    let answer: serde_json::Value = serde_json::from_str(answer).unwrap();
    assert_eq!(
        answer["result"]["usage"],
        serde_json::json!({"totalTokens": 120, "inputTokens": 100, "outputTokens": 20})
    );
    assert_eq!(rec.status.and_then(|s| s.code()), Some(0), "{}", rec.stderr);
}

fn permission_script() -> Script {
    Script::new().prompt([
        Step::tool_call("call_1", "Run ls", ToolKind::Execute),
        Step::permission("call_1", [Step::say(" -> ran")], [Step::say(" -> skipped")]),
        Step::say(" -> after"),
    ])
}

#[tokio::test]
async fn a_permission_round_trip_branches_on_the_selected_option() {
    let (_dir, stops, rec) = turns(permission_script(), ALLOW, &["go"]).await;
    assert_eq!(stops, vec![Ok(StopReason::EndTurn)]);
    assert_eq!(rec.said(), "permission call_1: allow_once -> ran -> after");
    let options: Vec<(String, PermissionOptionKind)> = rec.permissions[0]
        .options
        .iter()
        .map(|o| (o.option_id.0.to_string(), o.kind))
        .collect();
    assert_eq!(
        options,
        [
            ("allow_once".to_string(), PermissionOptionKind::AllowOnce),
            (
                "allow_always".to_string(),
                PermissionOptionKind::AllowAlways
            ),
            ("reject_once".to_string(), PermissionOptionKind::RejectOnce),
        ]
    );
    assert_eq!(
        rec.permissions[0].tool_call.tool_call_id.0.as_ref(),
        "call_1"
    );

    let reject = Answers {
        permission: Some("reject_once"),
    };
    let (_dir, _, rec) = turns(permission_script(), reject, &["go"]).await;
    assert_eq!(
        rec.said(),
        "permission call_1: reject_once -> skipped -> after"
    );
    assert!(rec.stderr.contains("permission call_1: reject_once"));

    let cancel = Answers { permission: None };
    let (_dir, stops, rec) = turns(permission_script(), cancel, &["go"]).await;
    assert_eq!(stops, vec![Ok(StopReason::Cancelled)]);
    assert_eq!(rec.said(), "permission call_1: cancelled");

    let error = Answers {
        permission: Some("!error"),
    };
    let (_dir, stops, rec) = turns(permission_script(), error, &["go"]).await;
    assert_eq!(stops, vec![Ok(StopReason::EndTurn)]);
    assert_eq!(
        rec.said(),
        "permission call_1 failed: no approvals here (-32603) -> skipped -> after"
    );
}

#[tokio::test]
async fn files_are_written_and_read_through_the_client_and_its_refusals_are_said() {
    let dir = tempfile::tempdir().unwrap();
    let inside = dir.path().join("hello.txt");
    let script = Script::new().prompt([
        Step::write_file(&inside, "hi there\n"),
        Step::read_file(&inside),
        Step::write_file("/etc/kaged-acp-testing-refused", "x"),
        Step::read_file(dir.path().join("missing.txt")),
    ]);
    let root = dir.path().to_path_buf();
    let (result, rec) = run(&script, &root, ALLOW, async |cx| {
        let session = start(&cx, &root).await?;
        prompt(&cx, &session, "write").await
    })
    .await;
    assert_eq!(result.unwrap().stop_reason, StopReason::EndTurn);
    assert_eq!(std::fs::read_to_string(&inside).unwrap(), "hi there\n");
    assert!(!std::path::Path::new("/etc/kaged-acp-testing-refused").exists());
    assert_eq!(
        rec.said(),
        format!(
            "wrote {}hi there\nwrite_file /etc/kaged-acp-testing-refused failed: cannot write \
             /etc/kaged-acp-testing-refused: outside the view (-32603)read_file {} failed: No \
             such file or directory (os error 2) (-32603)",
            inside.display(),
            dir.path().join("missing.txt").display()
        )
    );
    let methods: Vec<String> = rec
        .agent_lines()
        .iter()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v["method"].as_str().map(str::to_string))
        .filter(|m| m.starts_with("fs/"))
        .collect();
    assert_eq!(
        methods,
        [
            "fs/write_text_file",
            "fs/read_text_file",
            "fs/write_text_file",
            "fs/read_text_file"
        ]
    );
}

#[tokio::test]
async fn a_terminal_is_created_awaited_read_and_released_and_its_output_said() {
    let mut step = Step::terminal("echo", &["from", "terminal"]);
    if let Step::Terminal(t) = &mut step {
        t.tool_call_id = Some("call_9".to_string());
    }
    let script = Script::new().prompt([
        Step::tool_call("call_9", "echo", ToolKind::Execute),
        step,
        Step::terminal("/nonexistent/program", &[]),
    ]);
    let (_dir, stops, rec) = turns(script, ALLOW, &["run"]).await;
    assert_eq!(stops, vec![Ok(StopReason::EndTurn)]);
    assert_eq!(
        rec.said(),
        "from terminal\nterminal exit: 0terminal /nonexistent/program failed: No such file or \
         directory (os error 2) (-32603)"
    );
    let methods: Vec<String> = rec
        .agent_lines()
        .iter()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v["method"].as_str().map(str::to_string))
        .filter(|m| m.starts_with("terminal/"))
        .collect();
    assert_eq!(
        methods,
        [
            "terminal/create",
            "terminal/wait_for_exit",
            "terminal/output",
            "terminal/release",
            "terminal/create"
        ]
    );
    assert!(
        rec.agent_lines()
            .iter()
            .any(|l| l.contains(r#"{"type":"terminal","terminalId":"term-1"}"#)),
        "the terminal is embedded in call_9"
    );
}

#[tokio::test]
async fn cancel_ends_a_running_prompt_with_cancelled() {
    let script = Script::new().prompt([
        Step::say("started"),
        Step::SleepMs(20_000),
        Step::say("never"),
    ]);
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    let began = Instant::now();
    let (result, rec) = run(&script, &root, ALLOW, async |cx| {
        let session = start(&cx, &root).await?;
        let pending = cx.send_request(PromptRequest::new(
            session.clone(),
            vec![ContentBlock::from("go")],
        ));
        tokio::time::sleep(Duration::from_millis(300)).await;
        cx.send_notification(CancelNotification::new(session))?;
        pending.block_task().await
    })
    .await;
    assert_eq!(result.unwrap().stop_reason, StopReason::Cancelled);
    assert!(began.elapsed() < Duration::from_secs(10));
    assert_eq!(rec.said(), "started");
    assert!(
        rec.stderr.contains("session/cancel scripted-1"),
        "{}",
        rec.stderr
    );
}

#[tokio::test]
async fn a_session_is_loaded_with_its_replay_when_the_script_offers_it() {
    use agent_client_protocol::schema::ProtocolVersion;
    use agent_client_protocol::v1::schema::{InitializeRequest, LoadSessionRequest, SessionId};
    let replay = vec![
        Step::UserChunk("REPLAYED question".to_string()),
        Step::say("REPLAYED answer"),
    ];
    for offered in [true, false] {
        let mut script = Script::new().prompt([Step::SaySession]);
        script.load_session = offered.then(|| replay.clone());
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_path_buf();
        let (result, rec) = run(&script, &root, ALLOW, async |cx| {
            let init = cx
                .send_request(InitializeRequest::new(ProtocolVersion::V1))
                .block_task()
                .await?;
            let load = cx
                .send_request(LoadSessionRequest::new("earlier-7", root.clone()))
                .block_task()
                .await;
            let stop = prompt(&cx, &SessionId::from("earlier-7"), "again").await?;
            Ok((
                init.agent_capabilities.load_session,
                load.map_err(|e| i32::from(e.code)),
                stop,
            ))
        })
        .await;
        let (advertised, load, stop) = result.unwrap();
        assert_eq!(advertised, offered);
        assert_eq!(stop.stop_reason, StopReason::EndTurn);
        if offered {
            assert!(load.is_ok());
            assert!(matches!(
                &rec.updates[0],
                SessionUpdate::UserMessageChunk(_)
            ));
            assert_eq!(rec.said(), "REPLAYED answersession earlier-7 loaded");
        } else {
            assert_eq!(load.err(), Some(-32601));
            assert_eq!(rec.said(), "session earlier-7 new");
        }
    }
}

/// The index of the first agent line containing `needle`.
fn position(rec: &Recorded, needle: &str) -> usize {
    rec.agent_lines()
        .iter()
        .position(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("{needle} not on the wire: {:#?}", rec.wire))
}

#[tokio::test]
async fn a_raw_line_goes_out_as_is_in_its_place() {
    let script = Script::new().prompt([
        Step::say("before"),
        Step::Raw("this is {not json".to_string()),
        Step::say("after"),
    ]);
    let (_dir, stops, rec) = turns(script, ALLOW, &["go"]).await;
    let raw = rec
        .agent_lines()
        .iter()
        .position(|l| *l == "this is {not json")
        .unwrap_or_else(|| panic!("{:#?}", rec.wire));
    assert!(position(&rec, "\"before\"") < raw);
    assert!(raw < position(&rec, "\"after\""));
    assert!(!rec.wire.iter().any(|l| l.contains("_kaged_scripted")));
    // The crate's client answers the line with a parse error (id null) and goes on.
    assert_eq!(stops, vec![Ok(StopReason::EndTurn)]);
    assert!(
        rec.client_lines().iter().any(|l| l.contains(r#""id":null"#)
            && l.contains("-32700")
            && l.contains("this is {not json")),
        "{:#?}",
        rec.wire
    );
}

#[tokio::test]
async fn an_unknown_method_is_called_and_its_error_said() {
    let script = Script::new().prompt([Step::CallUnknownMethod("x/y".to_string())]);
    let (_dir, stops, rec) = turns(script, ALLOW, &["go"]).await;
    assert_eq!(stops, vec![Ok(StopReason::EndTurn)]);
    let request = position(&rec, "\"method\":\"x/y\"");
    let sent: serde_json::Value = serde_json::from_str(rec.agent_lines()[request]).unwrap();
    assert!(sent["id"].is_string() || sent["id"].is_number());
    let answered = rec.client_lines().iter().any(|l| {
        let v: serde_json::Value = serde_json::from_str(l).unwrap();
        v["id"] == sent["id"] && v["error"]["code"] == -32601
    });
    assert!(answered, "{:#?}", rec.wire);
    assert_eq!(rec.said(), "x/y failed: Method not found (-32601)");
}

#[tokio::test]
async fn a_response_to_an_unknown_id_goes_out() {
    let script = Script::new().prompt([Step::RespondUnknownId(999), Step::say("after")]);
    let (_dir, stops, rec) = turns(script, ALLOW, &["go"]).await;
    let stray = rec
        .agent_lines()
        .iter()
        .position(|l| *l == r#"{"jsonrpc":"2.0","id":999,"result":{}}"#)
        .unwrap_or_else(|| panic!("{:#?}", rec.wire));
    assert!(stray < position(&rec, "\"after\""));
    // The crate's client drops a response it never asked for and goes on.
    assert_eq!(stops, vec![Ok(StopReason::EndTurn)]);
}

#[tokio::test]
async fn a_flood_sends_every_chunk() {
    let script = Script::new().prompt([Step::Flood(2000)]);
    let (_dir, stops, rec) = turns(script, ALLOW, &["go"]).await;
    assert_eq!(stops, vec![Ok(StopReason::EndTurn)]);
    assert_eq!(rec.said(), ".".repeat(2000));
}

#[tokio::test]
async fn exit_mid_turn_flushes_what_came_before_and_exits_with_the_code() {
    let script = Script::new().prompt([Step::say("partial"), Step::Exit(3), Step::say("never")]);
    let (_dir, stops, rec) = turns(script, ALLOW, &["go"]).await;
    assert_eq!(stops.len(), 1);
    assert!(stops[0].is_err(), "{stops:?}");
    assert_eq!(rec.said(), "partial");
    assert_eq!(rec.status.and_then(|s| s.code()), Some(3));
    assert!(!rec.wire.iter().any(|l| l.contains("never")));
}

#[tokio::test]
async fn never_initialize_leaves_initialize_unanswered() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    let script = Script::new().never_initialize();
    let (result, rec) = run(&script, &root, ALLOW, async |cx| {
        let answer = tokio::time::timeout(Duration::from_millis(1500), start(&cx, &root)).await;
        Ok(answer.is_err())
    })
    .await;
    assert!(result.unwrap(), "initialize timed out");
    assert_eq!(rec.agent_lines().len(), 0, "{:#?}", rec.wire);
    assert!(
        rec.stderr.contains("never answering initialize"),
        "{}",
        rec.stderr
    );
}

#[tokio::test]
async fn a_slow_initialize_and_a_failing_prompt() {
    let script = Script::new()
        .on_initialize([Step::SleepMs(400)])
        .prompt([Step::say("x"), Step::Fail("scripted failure".to_string())]);
    let began = Instant::now();
    let (_dir, stops, rec) = turns(script, ALLOW, &["go"]).await;
    assert!(began.elapsed() >= Duration::from_millis(400));
    assert_eq!(stops, vec![Err("scripted failure (-32603)".to_string())]);
    assert_eq!(rec.said(), "x");
}

#[test]
fn scripts_round_trip_through_json_and_bad_ones_are_refused() {
    let mut script = permission_script()
        .prompt([Step::Flood(3), Step::Raw("{".to_string()), Step::Exit(4)])
        .on_new_session([Step::SleepMs(5)]);
    script.load_session = Some(vec![Step::UserChunk("q".to_string()), Step::SaySession]);
    assert!(script.to_json().contains(r#""say_session": true"#));
    assert_eq!(Script::parse(&script.to_json()).unwrap(), script);

    let text = r#"{"prompts": [[
        {"say": "hi", "chunks": 2},
        {"permission": {"tool_call_id": "c", "options": ["allow_once", "reject_always"]},
         "if_allowed": [{"write_file": {"path": "/p/a", "content": "x"}}]},
        {"tool_call": {"id": "c", "title": "t", "kind": "execute", "raw_input": {"cmd": "ls"}}},
        {"stop": "refusal"}
    ]]}"#;
    let parsed = Script::parse(text).unwrap();
    assert_eq!(parsed.prompts[0][0], Step::say_in("hi", 2));
    assert_eq!(parsed.prompts[0][3], Step::Stop(StopReason::Refusal));

    for (bad, why) in [
        (r#"{"prompts": [[{"sya": "x"}]]}"#, "unknown field `sya`"),
        (
            r#"{"prompts": [[{"say": "x", "think": "y"}]]}"#,
            "more than one action",
        ),
        (
            r#"{"prompts": [[{"chunks": 2}]]}"#,
            "`chunks` goes with `say`",
        ),
        (
            r#"{"initialize": [{"say": "x"}]}"#,
            "before a session exists",
        ),
        (
            r#"{"prompts": [[{"stop": "bored"}]]}"#,
            "unknown variant `bored`",
        ),
    ] {
        let err = Script::parse(bad).unwrap_err();
        assert!(err.contains(why), "{bad}: {err}");
    }
}

#[test]
fn a_bad_script_exits_with_status_2_before_speaking() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.json");
    std::fs::write(&path, r#"{"prompts": [[{"sya": "x"}]]}"#).unwrap();
    let out = std::process::Command::new(client::binary())
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown field `sya`"));
    let out = std::process::Command::new(client::binary())
        .env("KAGED_ACP_SCRIPT", &path)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(2),
        "the script from the environment"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown field `sya`"));
    let out = std::process::Command::new(client::binary())
        .env_remove("KAGED_ACP_SCRIPT")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("usage: kaged-acp-scripted"));
}

#[test]
fn the_binary_is_found_and_needs_only_the_c_library() {
    let found = kaged_acp_testing::scripted_agent_binary().unwrap();
    assert_eq!(found, client::binary());
    let ldd = std::process::Command::new("ldd")
        .arg(&found)
        .output()
        .unwrap();
    let libs = String::from_utf8_lossy(&ldd.stdout);
    for line in libs.lines() {
        let name = line.split_whitespace().next().unwrap_or_default();
        assert!(
            ["linux-vdso.so.1", "libc.so.6", "libm.so.6", "libgcc_s.so.1"].contains(&name)
                || name.contains("ld-linux"),
            "{libs}"
        );
    }
}
