//! Model agents through the real daemon (issue 14): conversations against the provider test
//! server (`common::provider`), watched on the events WebSocket and the conversation route.
//! This file: a text reply through each driver (what kaged sends, what it records, where the
//! key never goes), configuration mistakes (alias missing, prompt file gone), the limits of a
//! turn (`max_steps`, `max_output_tokens`), abort and steering. Tools, provider failures,
//! restarts and the real model are in the `agents_*` modules.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::common::provider::*;

const PRICES: &str = "price_input_per_mtok = 1.0\nprice_output_per_mtok = 2.0\n";

/// The fixtures' text, whole (`text.sse` of every driver).
const FIXTURE_TEXT: &str = "Tide pools are small.";

/// The auth header a driver sends the key in, and its value.
fn auth_of(driver: &str, r: &RecordedRequest) -> Option<String> {
    match driver {
        ANTHROPIC => r.header("x-api-key").map(str::to_string),
        _ => r
            .header("authorization")
            .map(|v| v.trim_start_matches("Bearer ").to_string()),
    }
}

fn path_of(driver: &str) -> &'static str {
    match driver {
        ANTHROPIC => "/v1/messages",
        RESPONSES => "/v1/responses",
        _ => "/v1/chat/completions",
    }
}

/// The system prompt where each driver puts it.
fn system_of(driver: &str, body: &Value) -> Option<String> {
    let v = match driver {
        ANTHROPIC => body["system"].clone(),
        RESPONSES => body["instructions"].clone(),
        _ => body["messages"][0]
            .as_object()
            .filter(|m| m["role"] == "system")
            .map(|m| m["content"].clone())
            .unwrap_or_default(),
    };
    v.as_str().map(str::to_string)
}

/// Event types with each run of `text_delta`s folded into one `text_delta+`.
fn folded(records: &[Value]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for k in kinds(records) {
        if k == "text_delta" && out.last().is_some_and(|l| l == "text_delta+") {
            continue;
        }
        out.push(if k == "text_delta" {
            "text_delta+".into()
        } else {
            k.into()
        });
    }
    out
}

/// The key appears nowhere in `text`.
fn assert_no_key(text: &str, what: &str) {
    assert!(!text.contains(KEY), "the provider key leaked into {what}");
}

/// One daemon, one project per driver (alias `a-DRIVER` → provider `p-DRIVER`): a first
/// message and a second, each answered by the driver's recorded text stream.
#[tokio::test]
async fn a_text_reply_streams_through_each_driver_and_the_key_stays_in_the_daemon() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("home");
    let providers: Vec<Provider> = DRIVERS.iter().map(|_| Provider::start()).collect();
    let mut local = LocalToml::new();
    for (i, driver) in DRIVERS.iter().enumerate() {
        local = local
            .alias(&format!("a{i}"), &[&format!("p{i}:model-{i}")])
            .provider_with(&format!("p{i}"), driver, &providers[i].base_url(), PRICES);
    }
    local.write(&home);
    let d = start_daemon(&home, &[]).failing_on_panics();
    for i in 0..DRIVERS.len() {
        let root = tmp.path().join(format!("proj{i}"));
        write_model_project_on(&root, &format!("drv{i}"), &format!("a{i}"), "", "");
        load_project_at(&d, &root).await;
    }

    for (i, driver) in DRIVERS.iter().enumerate() {
        let provider = &providers[i];
        provider.push_fixture(driver, "text");
        provider.push_fixture(driver, "text");
        let id = create_agent(
            &d,
            &format!("drv{i}"),
            "primary",
            Some("What are tide pools?"),
        )
        .await;
        let mut ws = EventsWs::open(&d, &id, 0).await;
        let first = ws.until_turn_ended().await;
        assert_eq!(
            folded(&first),
            [
                "user_message",
                "turn_started",
                "message_started",
                "text_delta+",
                "message_completed",
                "usage",
                "turn_ended"
            ],
            "{driver}:\n{}",
            summarize(&first)
        );
        assert!(of_kind(&first, "text_delta").len() >= 2, "{driver}");
        assert_eq!(streamed_text(&first), FIXTURE_TEXT, "{driver}");
        let completed = of_kind(&first, "message_completed")[0];
        assert_eq!(completed["event"]["text"], FIXTURE_TEXT, "{driver}");
        assert_eq!(first[0]["event"]["text"], "What are tide pools?");
        assert_eq!(first[1]["event"]["turn"], 1);
        assert_eq!(turn_end_reasons(&first), ["end_turn"], "{driver}");
        let usage = &of_kind(&first, "usage")[0]["event"];
        assert!(
            usage["output_tokens"].as_u64().unwrap() > 0,
            "{driver}: {usage}"
        );
        assert!(
            usage["input_tokens"].as_u64().unwrap() > 0,
            "{driver}: {usage}"
        );
        assert!(
            usage["cost"].as_f64().is_some_and(|c| c > 0.0),
            "{driver}: prices are set, so a cost: {usage}"
        );

        // What the provider got: the path, the key in the auth header, the stream flag, the
        // system prompt from the project's file and the operator's message.
        let requests = provider.wait_requests(1).await;
        let r = &requests[0];
        assert_eq!(r.method, "POST", "{driver}");
        assert_eq!(r.path, path_of(driver), "{driver}");
        assert_eq!(
            auth_of(driver, r).as_deref(),
            Some(KEY),
            "{driver}: {:?}",
            r.headers
        );
        assert_eq!(r.body["stream"], true, "{driver}: {}", r.body_text);
        assert_eq!(r.body["model"], format!("model-{i}"), "{driver}");
        assert_eq!(
            system_of(driver, &r.body).as_deref().map(str::trim),
            Some(SYSTEM_PROMPT),
            "{driver}: {}",
            r.body_text
        );
        assert!(r.body_text.contains("What are tide pools?"), "{driver}");

        // A second message: the request carries the whole history.
        let sent = send_message(&d, &id, "And sea stars?").await;
        assert_eq!(sent["session"], id.as_str(), "{sent}");
        assert_eq!(sent["resumed"], false, "{sent}");
        let second = ws.until_turn_ended().await;
        assert_eq!(turn_end_reasons(&second), ["end_turn"], "{driver}");
        assert_eq!(second[0]["event"]["text"], "And sea stars?");
        assert_eq!(second[1]["event"]["turn"], 2);
        let requests = provider.wait_requests(2).await;
        let body = &requests[1].body_text;
        let at = |needle: &str| {
            body.find(needle)
                .unwrap_or_else(|| panic!("{driver}: {needle:?} missing from {body}"))
        };
        assert!(
            at("What are tide pools?") < at(FIXTURE_TEXT),
            "{driver}: {body}"
        );
        assert!(at(FIXTURE_TEXT) < at("And sea stars?"), "{driver}: {body}");
        assert_eq!(
            system_of(driver, &requests[1].body)
                .as_deref()
                .map(str::trim),
            Some(SYSTEM_PROMPT)
        );

        // The conversation route holds exactly what the socket sent.
        let (stored, last) = conversation(&d, &id, 0).await;
        assert_eq!(stored, ws.seen, "{driver}");
        assert_eq!(last, ws.last);
        let (tail, _) = conversation(&d, &id, last - 2).await;
        assert_eq!(tail, ws.seen[ws.seen.len() - 2..], "{driver}: after=");

        // Nowhere but the auth header: events, the route, the session, the daemon's log.
        let session = session_json(&d, &id).await;
        assert_eq!(session["conversation"], true);
        assert_eq!(session["state"], "running", "{session}");
        assert_no_key(&serde_json::to_string(&ws.seen).unwrap(), "the events");
        assert_no_key(&session.to_string(), "the session JSON");
        let (_, list) = d.call(Method::GET, "/api/v1/sessions", None).await;
        assert_no_key(&list.to_string(), "the session list");
        for r in &provider.requests() {
            assert_no_key(&r.body_text, "a request body");
        }
    }
    let audit = std::fs::read_to_string(home.join("audit.log")).unwrap_or_default();
    assert!(!audit.is_empty(), "no audit log at {}", home.display());
    assert_no_key(&audit, "the audit log");
    let (_, local_json) = d.call(Method::GET, "/api/v1/local", None).await;
    assert_no_key(&local_json.to_string(), "GET /api/v1/local");
    let (status, log) = d.stop();
    assert!(status.success(), "{status}: {log}");
    assert_no_key(&log, "the daemon's log");
}

/// The route's refusals have the JSON error shape.
#[tokio::test]
async fn the_message_route_refuses_what_it_cannot_take() {
    let env = ModelEnv::start_full(COMPLETIONS, "", "terminals:\n  shell: [sh]\n", &[], &[]).await;
    let d = &env.daemon;
    let code = |v: &Value| v["error"]["code"].as_str().unwrap_or("?").to_string();
    let post =
        |path: String, body: Value| async move { d.call(Method::POST, &path, Some(body)).await };

    let (s, v) = post(
        "/api/v1/sessions/0123456789abcdef0123456789abcdef/messages".into(),
        json!({"text": "hi"}),
    )
    .await;
    assert_eq!(
        (s, code(&v).as_str()),
        (StatusCode::NOT_FOUND, "not_found"),
        "{v}"
    );

    env.provider.push(text_reply(COMPLETIONS, &["ok"]));
    let id = env.create("hello").await;
    let mut ws = EventsWs::open(d, &id, 0).await;
    ws.until_turn_ended().await;
    for bad in [
        json!({}),
        json!({"text": ""}),
        json!({"text": "x".repeat(256 * 1024 + 1)}),
    ] {
        let (s, v) = post(format!("/api/v1/sessions/{id}/messages"), bad).await;
        assert_eq!(
            (s, code(&v).as_str()),
            (StatusCode::BAD_REQUEST, "bad_request"),
            "{v}"
        );
    }
    // A terminal is no conversation.
    let (s, v) = d
        .call(
            Method::POST,
            &format!("/api/v1/projects/{}/sessions", env.slug),
            Some(json!({"kind": "terminal", "name": "shell"})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(v["session"]["conversation"], false, "{v}");
    let term = v["session"]["id"].as_str().unwrap().to_string();
    let (s, v) = post(
        format!("/api/v1/sessions/{term}/messages"),
        json!({"text": "ls"}),
    )
    .await;
    assert_eq!(
        (s, code(&v).as_str()),
        (StatusCode::CONFLICT, "conflict"),
        "{v}"
    );
    let (s, v) = post(format!("/api/v1/sessions/{term}/abort"), json!({})).await;
    assert_eq!(
        (s, code(&v).as_str()),
        (StatusCode::CONFLICT, "conflict"),
        "{v}"
    );
    let (records, last) = conversation(d, &term, 0).await;
    assert!(records.is_empty() && last == 0, "{records:?}");
    // Abort with no turn running.
    let v = abort(d, &id).await;
    assert_eq!(v["aborted"], false, "{v}");
}

/// `max_steps: 2`: a model that keeps calling tools is stopped after two model calls;
/// `max_output_tokens: 5`: an answer cut at the limit ends the turn with that reason (and the
/// limit is sent to the provider). Same session, one after the other.
#[tokio::test]
async fn a_turn_ends_at_max_steps_and_at_max_output_tokens() {
    let env = ModelEnv::start(COMPLETIONS, "  max_steps: 2\n  max_output_tokens: 5\n", &[]).await;
    let d = &env.daemon;
    let p = &env.provider;
    // Two replies only: a third call would get a 500 and end the turn `error`, not `max_steps`.
    for i in 0..2 {
        p.push(tool_reply(
            COMPLETIONS,
            &[Call::new(
                &format!("call_{i}"),
                "shell.bash",
                &json!({"command": "echo again"}),
            )],
        ));
    }
    let id = env.create("Loop forever.").await;
    let mut ws = EventsWs::open(d, &id, 0).await;
    let turn = ws.until_turn_ended().await;
    assert_eq!(
        turn_end_reasons(&turn),
        ["max_steps"],
        "{}",
        summarize(&turn)
    );
    // Give a third call the time to show up if the limit did not hold.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(p.requests().len(), 2, "model calls past max_steps");
    assert_eq!(p.requests()[0].body["max_tokens"], 5);

    p.push(reply(
        COMPLETIONS,
        &["one ", "two ", "three"],
        &[],
        Stop::MaxTokens,
        5,
        0,
    ));
    send_message(d, &id, "Talk long.").await;
    let long = ws.until_turn_ended().await;
    assert_eq!(
        turn_end_reasons(&long),
        ["max_output_tokens"],
        "{}",
        summarize(&long)
    );
    assert_eq!(streamed_text(&long), "one two three");
}

/// Abort during a slow stream ends the turn `aborted` at once; the session takes the next
/// message. Steering: a message sent during a turn is taken at the next model call.
#[tokio::test]
async fn abort_ends_a_slow_turn_at_once_and_a_message_sent_during_a_turn_steers_it() {
    let env = ModelEnv::start(ANTHROPIC, "", &[]).await;
    let d = &env.daemon;
    let p = &env.provider;
    let words: Vec<String> = (0..100).map(|i| format!("w{i} ")).collect();
    let words: Vec<&str> = words.iter().map(String::as_str).collect();
    // 100 deltas 200 ms apart: 20 s if nothing stops it.
    p.push(reply(ANTHROPIC, &words, &[], Stop::EndTurn, 100, 200));
    let id = env.create("Talk slowly.").await;
    let mut ws = EventsWs::open(d, &id, 0).await;
    ws.until(|r| kind(r) == "text_delta").await;
    let at = std::time::Instant::now();
    let v = abort(d, &id).await;
    assert_eq!(v["aborted"], true, "{v}");
    let rest = ws.until_turn_ended().await;
    assert!(
        at.elapsed().as_millis() < 2000,
        "abort took {:?}",
        at.elapsed()
    );
    assert_eq!(
        turn_end_reasons(&rest),
        ["aborted"],
        "{}",
        summarize(&ws.seen)
    );
    assert!(of_kind(&ws.seen, "text_delta").len() < 50);
    let session = session_json(d, &id).await;
    assert_eq!(session["state"], "running", "{session}");

    // The next message works, and its request holds what streamed before the abort.
    p.push(text_reply(ANTHROPIC, &["Fine."]));
    send_message(d, &id, "Quick now.").await;
    let next = ws.until_turn_ended().await;
    assert_eq!(
        turn_end_reasons(&next),
        ["end_turn"],
        "{}",
        summarize(&next)
    );
    let requests = p.wait_requests(2).await;
    assert!(
        requests[1].body_text.contains("w0 "),
        "{}",
        requests[1].body_text
    );

    // Steering: the first call of the turn streams a tool call slowly; a message sent then is
    // taken at the second call of the same turn.
    p.push(reply(
        ANTHROPIC,
        &[],
        &[Call::new(
            "toolu_s",
            "shell.bash",
            &json!({"command": "echo steer"}),
        )],
        Stop::ToolUse,
        5,
        150,
    ));
    p.push(text_reply(ANTHROPIC, &["Turning left."]));
    send_message(d, &id, "Go straight.").await;
    ws.until(|r| kind(r) == "turn_started").await;
    // The turn's first model call is on its way (its reply streams for about a second).
    p.wait_requests(3).await;
    let queued = send_message(d, &id, "Actually, turn left.").await;
    assert!(queued["queued"].as_u64().unwrap() >= 1, "{queued}");
    assert_eq!(queued["resumed"], false, "{queued}");
    let steered = ws.until_turn_ended().await;
    let all = summarize(&steered);
    assert_eq!(turn_end_reasons(&steered), ["end_turn"], "{all}");
    assert!(
        of_kind(&steered, "turn_started").is_empty(),
        "one turn:\n{all}"
    );
    let requests = p.wait_requests(4).await;
    assert!(!requests[2].body_text.contains("Actually, turn left."));
    assert!(
        requests[3].body_text.contains("Actually, turn left."),
        "the second call of the turn lacks the message: {}",
        requests[3].body_text
    );
    let taken = steered
        .iter()
        .position(|r| kind(r) == "user_message" && r["event"]["text"] == "Actually, turn left.")
        .unwrap_or_else(|| panic!("{all}"));
    let result = steered
        .iter()
        .position(|r| kind(r) == "tool_result")
        .unwrap();
    assert!(
        result < taken,
        "taken at the next model call, after the tool:\n{all}"
    );
}

/// Configuration mistakes: an alias missing from local.toml (the error names the line to add)
/// and a prompt file that disappeared. Each is a clear error; the daemon stays up; the session
/// works again once fixed.
#[tokio::test]
async fn a_missing_alias_and_a_vanished_prompt_are_clear_errors() {
    let env = ModelEnv::start(COMPLETIONS, "", &[]).await;
    let d = &env.daemon;
    let p = &env.provider;

    // The prompt file is gone.
    std::fs::remove_file(env.project.join("prompts/primary.md")).unwrap();
    let id = env.create("Hello?").await;
    let mut ws = EventsWs::open(d, &id, 0).await;
    let failed = ws.until_turn_ended().await;
    let all = summarize(&failed);
    assert_eq!(turn_end_reasons(&failed), ["error"], "{all}");
    let error = &of_kind(&failed, "error")[0]["event"];
    assert_eq!(error["code"], "prompt", "{all}");
    assert!(
        error["message"].as_str().unwrap().contains("primary.md"),
        "{error}"
    );
    assert!(p.requests().is_empty(), "no model call without a prompt");
    assert_eq!(
        failed[0]["event"]["text"], "Hello?",
        "the message is kept: {all}"
    );
    // Back: the next turn reads it again.
    std::fs::write(
        env.project.join("prompts/primary.md"),
        "Prompt, restored.\n",
    )
    .unwrap();
    crate::common::cage_writable(&env.project);
    p.push(text_reply(COMPLETIONS, &["Hi."]));
    send_message(d, &id, "Again?").await;
    let ok = ws.until_turn_ended().await;
    assert_eq!(turn_end_reasons(&ok), ["end_turn"], "{}", summarize(&ok));
    let r = &p.wait_requests(1).await[0];
    assert!(r.body_text.contains("Prompt, restored.") && r.body_text.contains("Hello?"));

    // An alias local.toml lacks.
    let root = env.tmp.path().join("noalias");
    write_model_project_on(&root, "noalias", "nosuch", "", "");
    load_project_at(d, &root).await;
    let (status, v) = d
        .call(
            Method::POST,
            "/api/v1/projects/noalias/sessions",
            Some(json!({"kind": "agent", "message": "Hi"})),
        )
        .await;
    // The session starts; its turn fails with the line to add.
    assert_eq!(status, StatusCode::CREATED, "{v}");
    let id = v["session"]["id"].as_str().unwrap().to_string();
    let records = wait_conversation(d, &id, |r| kind(r) == "error").await;
    let error = &of_kind(&records, "error")[0]["event"];
    assert_eq!(error["code"], "alias", "{}", summarize(&records));
    assert!(
        error["message"].as_str().unwrap().contains("nosuch = \""),
        "{error}"
    );
    let (status, _) = d.call(Method::GET, "/api/v1/whoami", None).await;
    assert_eq!(status, StatusCode::OK, "the daemon is up");
}

/// Attack: the project is writable from the cage, so an agent can turn its own prompt file
/// into a link to a host file only the daemon can read (here a stand-in for the operator's
/// key). The daemon reads prompts without following links: the turn fails with `prompt`, and
/// the provider (hence the agent) never gets the file's content. Without `read_beneath` the
/// secret would be the next system prompt.
#[tokio::test]
async fn a_prompt_turned_into_a_link_to_a_host_secret_is_not_followed() {
    let env = ModelEnv::start(COMPLETIONS, "", &[]).await;
    let d = &env.daemon;
    let p = &env.provider;
    let secret = env.tmp.path().join("operator-secret");
    std::fs::write(&secret, "HOST-SECRET-7f3a\n").unwrap();
    let prompt = env.project.join("prompts/primary.md");
    std::fs::remove_file(&prompt).unwrap();
    std::os::unix::fs::symlink(&secret, &prompt).unwrap();
    let id = env.create("Hello?").await;
    let mut ws = EventsWs::open(d, &id, 0).await;
    let turn = ws.until_turn_ended().await;
    let all = summarize(&turn);
    assert_eq!(turn_end_reasons(&turn), ["error"], "{all}");
    let error = &of_kind(&turn, "error")[0]["event"];
    assert_eq!(error["code"], "prompt", "{all}");
    assert!(
        error["message"].as_str().unwrap().contains("symbolic link"),
        "{error}"
    );
    assert!(
        p.requests().is_empty(),
        "no model call with a linked prompt"
    );
    assert!(!all.contains("HOST-SECRET"), "{all}");
}
