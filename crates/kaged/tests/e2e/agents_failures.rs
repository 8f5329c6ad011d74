//! Providers failing under a model agent, through the real daemon: a 429 with `retry-after`
//! (retried, recorded once), a stalled stream (`[models] stall_timeout_secs = 1`), a cut
//! connection, an error event mid-stream, a malformed SSE line, and an alias's fallback list
//! (the first provider answers 500, the second answers). Each failure is an `error` event and a
//! `turn_ended` `error`; what streamed before it is kept; the session takes the next message.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

use std::time::Instant;

use serde_json::{Value, json};

use crate::common::provider::*;

/// Short limits: one retry, a stall noticed after a second.
const MODELS: &[(&str, u64)] = &[
    ("max_attempts", 2),
    ("stall_timeout_secs", 1),
    ("request_timeout_secs", 15),
];

/// Send `text` and read the turn it starts.
async fn turn(env: &ModelEnv, ws: &mut EventsWs, id: &str, text: &str) -> Vec<Value> {
    send_message(&env.daemon, id, text).await;
    ws.until_turn_ended().await
}

/// The turn failed with one `error` event of `code`, which never holds the key.
fn assert_failed(records: &[Value], code: &str, what: &str) -> String {
    let all = summarize(records);
    assert_eq!(turn_end_reasons(records), ["error"], "{what}:\n{all}");
    let errors = of_kind(records, "error");
    assert_eq!(errors.len(), 1, "{what}:\n{all}");
    assert_eq!(errors[0]["event"]["code"], code, "{what}:\n{all}");
    let message = errors[0]["event"]["message"].as_str().unwrap().to_string();
    assert!(
        !message.is_empty() && !message.contains(KEY),
        "{what}: {message}"
    );
    let e = records.iter().position(|r| kind(r) == "error").unwrap();
    let t = records.iter().position(is_turn_ended).unwrap();
    assert!(
        e < t,
        "{what}: the error comes before the turn's end:\n{all}"
    );
    message
}

#[tokio::test]
async fn provider_failures_end_the_turn_clearly_and_the_session_goes_on() {
    let env = ModelEnv::start(COMPLETIONS, "", MODELS).await;
    let d = &env.daemon;
    let p = &env.provider;

    // 429 with retry-after, then the answer: retried after the wait, recorded once.
    p.push(status_reply(
        429,
        &[("retry-after", "1")],
        &json!({"error": {"message": "Rate limit exceeded", "code": 429}}),
    ));
    p.push(fixture(COMPLETIONS, "text"));
    let started = Instant::now();
    let id = env.create("First question.").await;
    let mut ws = EventsWs::open(d, &id, 0).await;
    let first = ws.until_turn_ended().await;
    let all = summarize(&first);
    assert_eq!(turn_end_reasons(&first), ["end_turn"], "{all}");
    assert!(
        started.elapsed().as_millis() >= 900,
        "retry-after not honoured"
    );
    for once in [
        "user_message",
        "turn_started",
        "message_started",
        "message_completed",
        "usage",
    ] {
        assert_eq!(of_kind(&first, once).len(), 1, "{once}:\n{all}");
    }
    assert!(of_kind(&first, "error").is_empty(), "{all}");
    let requests = p.wait_requests(2).await;
    assert_eq!(
        requests[0].body, requests[1].body,
        "the retry is the same request"
    );

    // A stalled stream: noticed after a second; the text before it is kept.
    p.push(fixture(COMPLETIONS, "stall"));
    let started = Instant::now();
    let stalled = turn(&env, &mut ws, &id, "Stall now.").await;
    assert_failed(&stalled, "provider", "stall");
    assert!(
        started.elapsed().as_secs() < 12,
        "the stall took {:?}",
        started.elapsed()
    );
    assert!(
        streamed_text(&stalled).contains("Tide"),
        "{}",
        summarize(&stalled)
    );

    // A cut connection.
    p.push(fixture(COMPLETIONS, "cut"));
    let cut = turn(&env, &mut ws, &id, "Cut now.").await;
    assert_failed(&cut, "provider", "cut");
    assert!(
        streamed_text(&cut).contains("Tide pools"),
        "{}",
        summarize(&cut)
    );

    // An error event mid-stream: the provider's message is passed on.
    p.push(fixture(COMPLETIONS, "error_mid"));
    let mid = turn(&env, &mut ws, &id, "Fail mid-way.").await;
    let message = assert_failed(&mid, "provider", "error mid-stream");
    // The provider's words, or, when the loop retried it, the test server's 500 after it.
    assert!(
        message.contains("Upstream provider returned an error")
            || message.contains("no reply queued"),
        "{message}"
    );
    assert!(streamed_text(&mid).contains("Tide"), "{}", summarize(&mid));

    // A malformed SSE line.
    p.push(raw_sse(
        "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Half\"},\"finish_reason\":null}]}\n\ndata: {this is not json\n\n",
    ));
    let malformed = turn(&env, &mut ws, &id, "Speak garbage.").await;
    assert_failed(&malformed, "provider", "malformed SSE");
    assert!(
        streamed_text(&malformed).contains("Half"),
        "{}",
        summarize(&malformed)
    );

    // The session still works, and the model gets the whole conversation.
    let before = p.requests().len();
    p.push(text_reply(COMPLETIONS, &["Back ", "again."]));
    let fine = turn(&env, &mut ws, &id, "Are you well?").await;
    assert_eq!(
        turn_end_reasons(&fine),
        ["end_turn"],
        "{}",
        summarize(&fine)
    );
    let requests = p.requests();
    let last = &requests.last().unwrap().body_text;
    assert!(requests.len() > before);
    for said in [
        "First question.",
        "Stall now.",
        "Cut now.",
        "Fail mid-way.",
        "Speak garbage.",
        "Are you well?",
    ] {
        assert!(
            last.contains(said),
            "{said:?} missing from the history: {last}"
        );
    }
    let (stored, _) = conversation(d, &id, 0).await;
    assert_eq!(stored, ws.seen, "the log holds exactly what was sent");
    let session = session_json(d, &id).await;
    assert_eq!(session["state"], "running", "{session}");
    assert!(!d.stderr_text().contains(KEY));
}

/// `fast = ["down:m1", "up:m2"]`: the first provider answers 500 to every attempt, the second
/// answers; the turn ends well, with no error event.
#[tokio::test]
async fn an_alias_falls_back_to_its_next_provider() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("home");
    let down = Provider::start(); // nothing queued: every request gets a 500
    let up = Provider::start();
    LocalToml::new()
        .alias("fast", &["down:m1", "up:m2"])
        .provider("down", ANTHROPIC, &down.base_url())
        .provider("up", COMPLETIONS, &up.base_url())
        .write(&home);
    write_models_config(&home, MODELS);
    let root = tmp.path().join("proj");
    write_model_project(&root, "fallback", "", "");
    let d = start_daemon(&home, &[]).failing_on_panics();
    load_project_at(&d, &root).await;
    up.push(text_reply(COMPLETIONS, &["From ", "the second."]));
    let id = create_agent(&d, "fallback", "primary", Some("Anyone there?")).await;
    let mut ws = EventsWs::open(&d, &id, 0).await;
    let records = ws.until_turn_ended().await;
    let all = summarize(&records);
    assert_eq!(turn_end_reasons(&records), ["end_turn"], "{all}");
    assert_eq!(streamed_text(&records), "From the second.", "{all}");
    assert!(of_kind(&records, "error").is_empty(), "{all}");
    let tried = down.requests();
    assert!(
        !tried.is_empty() && tried.len() <= 2,
        "{} attempts at the first",
        tried.len()
    );
    assert_eq!(tried[0].body["model"], "m1");
    assert_eq!(up.requests().len(), 1);
    assert_eq!(up.requests()[0].body["model"], "m2");
}
