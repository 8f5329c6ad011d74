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
