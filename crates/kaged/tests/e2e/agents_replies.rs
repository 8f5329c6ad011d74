//! The replies `common::provider` writes for the agents tests, read back by kaged-llm's own
//! client from the provider test server: for each driver, the text deltas, the tool calls with
//! their arguments joined from the fragments, the usage and the stop reason a test means. A
//! wrong reply would make an agents test pass or fail for the wrong reason.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

use std::time::Duration;

use kaged_llm::{Client, Driver, Endpoint, Event, Message, Request, StopReason, Timeouts};
use serde_json::json;

use crate::common::provider::*;

async fn decode(driver: &str, p: &Provider, reply: Reply) -> Vec<Event> {
    p.push(reply);
    let endpoint = Endpoint {
        driver: match driver {
            ANTHROPIC => Driver::AnthropicMessages,
            RESPONSES => Driver::OpenaiResponses,
            _ => Driver::OpenaiCompletions,
        },
        base_url: p.base_url(),
        api_key: None,
        model: "m".into(),
    };
    let client = Client::new(Timeouts {
        connect: Duration::from_secs(5),
        request: Duration::from_secs(10),
        stall: Duration::from_secs(10),
    })
    .unwrap();
    let request = Request {
        system: None,
        messages: vec![Message::User { text: "hi".into() }],
        tools: Vec::new(),
        max_output_tokens: None,
    };
    let mut stream = client.stream(&endpoint, &request).await.unwrap();
    let mut events = Vec::new();
    while let Some(e) = stream.next().await {
        events.push(e.unwrap_or_else(|e| panic!("{driver}: {e} after {events:?}")));
    }
    events
}

fn texts(events: &[Event]) -> Vec<&str> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Text(t) => Some(t.as_str()),
            _ => None,
        })
        .collect()
}

/// The calls: (id, name on the wire, arguments joined).
fn calls(events: &[Event]) -> Vec<(String, String, String)> {
    let mut out: Vec<(String, String, String)> = Vec::new();
    let mut by_index = std::collections::HashMap::new();
    for e in events {
        match e {
            Event::ToolCallStarted { index, id, name } => {
                by_index.insert(*index, out.len());
                out.push((id.clone(), name.clone(), String::new()));
            }
            Event::ToolCallArguments { index, fragment } => {
                out[by_index[index]].2.push_str(fragment);
            }
            _ => {}
        }
    }
    out
}

fn stop(events: &[Event]) -> StopReason {
    match events.last() {
        Some(Event::Finished(s)) => s.clone(),
        other => panic!("the answer did not finish last: {other:?} in {events:?}"),
    }
}

#[tokio::test]
async fn the_replies_written_for_the_tests_decode_as_meant() {
    let p = Provider::start();
    for driver in DRIVERS {
        let e = decode(driver, &p, text_reply(driver, &["Hel", "lo."])).await;
        assert_eq!(texts(&e), ["Hel", "lo."], "{driver}");
        assert_eq!(stop(&e), StopReason::EndTurn, "{driver}");
        assert!(
            e.iter()
                .any(|e| matches!(e, Event::Usage(u) if u.output_tokens == 2)),
            "{driver}: {e:?}"
        );

        let with_calls = tool_reply(
            driver,
            &[
                Call::split("c1", "file.read", &["{\"pa", "th\": \"a\"}"]),
                Call::new("c2", "shell.bash", &json!({"command": "env"})),
                Call::split("c3", "agent.helper", &["{not json"]),
            ],
        );
        let e = decode(driver, &p, with_calls).await;
        assert_eq!(
            calls(&e),
            [
                ("c1".into(), "file__read".into(), "{\"path\": \"a\"}".into()),
                (
                    "c2".into(),
                    "shell__bash".into(),
                    "{\"command\":\"env\"}".into()
                ),
                ("c3".into(), "agent__helper".into(), "{not json".into()),
            ],
            "{driver}"
        );
        assert_eq!(stop(&e), StopReason::ToolUse, "{driver}");

        let e = decode(
            driver,
            &p,
            reply(driver, &["a", "b"], &[], Stop::MaxTokens, 5, 1),
        )
        .await;
        assert_eq!(texts(&e), ["a", "b"], "{driver}");
        assert_eq!(stop(&e), StopReason::MaxTokens, "{driver}");
    }
}
