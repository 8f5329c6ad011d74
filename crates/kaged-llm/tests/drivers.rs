//! Each driver against the loopback provider test server replaying its fixtures: what kaged sends
//! (path, auth header, system prompt, history with tool calls and results, tools, stream flag;
//! the key nowhere else) and the events it yields; errors mid-stream, cut connections, stalls
//! and 429s.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

use std::time::Duration;

use kaged_auth::Secret;
use kaged_llm::testing::{ProviderServer, RecordedRequest, Reply};
use kaged_llm::{
    Client, Driver, Endpoint, Event, LlmError, Message, Request, StopReason, Timeouts, ToolCall,
    ToolSpec, Usage,
};
use serde_json::{Value, json};

const KEY: &str = "sk-kaged-test-0123456789abcdef";

const DRIVERS: [(Driver, &str); 3] = [
    (Driver::AnthropicMessages, "anthropic"),
    (Driver::OpenaiResponses, "openai-responses"),
    (Driver::OpenaiCompletions, "openai-completions"),
];

fn tool(name: &str) -> ToolSpec {
    ToolSpec {
        name: name.into(),
        description: format!("the {name} tool"),
        parameters: json!({"type": "object", "properties": {}}),
    }
}

fn request() -> Request {
    Request {
        system: Some("SYSTEM-PROMPT: be brief".into()),
        messages: vec![
            Message::User {
                text: "USER-ONE".into(),
            },
            Message::Assistant {
                text: "ASSISTANT-ONE".into(),
                tool_calls: vec![ToolCall {
                    id: "call_prev".into(),
                    name: "file.read".into(),
                    arguments: r#"{"path":"README.md"}"#.into(),
                }],
            },
            Message::ToolResult {
                call_id: "call_prev".into(),
                content: "TOOL-RESULT-ONE".into(),
                is_error: false,
            },
        ],
        tools: ["file.read", "search.glob", "shell.bash", "status"]
            .into_iter()
            .map(tool)
            .collect(),
        max_output_tokens: Some(1000),
    }
}

async fn server_with(reply: Reply) -> ProviderServer {
    let server = ProviderServer::start().await.unwrap();
    server.push(reply);
    server
}

fn endpoint(driver: Driver, server: &ProviderServer) -> Endpoint {
    Endpoint {
        driver,
        base_url: server.base_url(),
        api_key: Some(Secret::new(KEY.into())),
        model: "test-model".into(),
    }
}

fn client(stall: Duration) -> Client {
    Client::new(Timeouts {
        stall,
        ..Timeouts::default()
    })
    .unwrap()
}

/// Every event up to the end, then the error if there was one.
async fn collect(
    client: &Client,
    endpoint: &Endpoint,
) -> Result<(Vec<Event>, Option<LlmError>), LlmError> {
    let mut stream = client.stream(endpoint, &request()).await?;
    let mut events = Vec::new();
    while let Some(item) = stream.next().await {
        match item {
            Ok(e) => events.push(e),
            Err(e) => {
                assert!(stream.next().await.is_none(), "events after an error");
                return Ok((events, Some(e)));
            }
        }
    }
    assert!(stream.next().await.is_none());
    Ok((events, None))
}

/// What kaged sent: the path, the auth header, the key nowhere else, the conversation.
fn check_sent(driver: Driver, sent: &RecordedRequest) {
    assert_eq!(sent.method, "POST");
    let (path, auth_header, auth_value) = match driver {
        Driver::AnthropicMessages => ("/v1/messages", "x-api-key", KEY.to_string()),
        Driver::OpenaiResponses => ("/v1/responses", "authorization", format!("Bearer {KEY}")),
        Driver::OpenaiCompletions => (
            "/v1/chat/completions",
            "authorization",
            format!("Bearer {KEY}"),
        ),
    };
    assert_eq!(sent.path, path);
    assert_eq!(sent.header(auth_header), Some(auth_value.as_str()));
    let elsewhere: Vec<&(String, String)> = sent
        .headers
        .iter()
        .filter(|(n, v)| n != auth_header && v.contains(KEY))
        .collect();
    assert!(elsewhere.is_empty(), "{elsewhere:?}");
    assert!(!sent.body_text.contains(KEY));
    assert_eq!(sent.header("content-type"), Some("application/json"));
    let body = &sent.body;
    assert_eq!(body["stream"], Value::Bool(true));
    assert_eq!(body["model"], "test-model");
    let text = body.to_string();
    for needle in [
        "USER-ONE",
        "ASSISTANT-ONE",
        "TOOL-RESULT-ONE",
        "call_prev",
        "file__read",
    ] {
        assert!(text.contains(needle), "{needle} missing from {text}");
    }
    match driver {
        Driver::AnthropicMessages => {
            assert_eq!(sent.header("anthropic-version"), Some("2023-06-01"));
            assert_eq!(body["system"], "SYSTEM-PROMPT: be brief");
            assert_eq!(body["max_tokens"], 1000);
            assert_eq!(body["messages"][2]["content"][0]["type"], "tool_result");
            assert_eq!(
                body["messages"][2]["content"][0]["tool_use_id"],
                "call_prev"
            );
            assert_eq!(body["tools"].as_array().map(Vec::len), Some(4));
        }
        Driver::OpenaiResponses => {
            assert_eq!(body["instructions"], "SYSTEM-PROMPT: be brief");
            assert_eq!(body["input"][2]["type"], "function_call");
            assert_eq!(body["input"][3]["type"], "function_call_output");
            assert_eq!(body["input"][3]["output"], "TOOL-RESULT-ONE");
            assert_eq!(body["tools"][0]["name"], "file__read");
        }
        Driver::OpenaiCompletions => {
            assert_eq!(body["messages"][0]["role"], "system");
            assert_eq!(body["messages"][0]["content"], "SYSTEM-PROMPT: be brief");
            assert_eq!(body["messages"][3]["role"], "tool");
            assert_eq!(body["messages"][3]["tool_call_id"], "call_prev");
            assert_eq!(body["stream_options"]["include_usage"], true);
            assert_eq!(body["tools"][0]["function"]["name"], "file__read");
        }
    }
}

fn started(index: usize, id: &str, name: &str) -> Event {
    Event::ToolCallStarted {
        index,
        id: id.into(),
        name: name.into(),
    }
}

fn args(index: usize, fragment: &str) -> Event {
    Event::ToolCallArguments {
        index,
        fragment: fragment.into(),
    }
}

fn usage(input_tokens: u64, output_tokens: u64, cached_tokens: u64) -> Event {
    Event::Usage(Usage {
        input_tokens,
        output_tokens,
        cached_tokens,
    })
}

fn expected(driver: Driver, name: &str) -> Vec<Event> {
    let ids = match driver {
        Driver::AnthropicMessages => [
            "toolu_01ReadMain",
            "toolu_01Glob",
            "toolu_02Bash",
            "toolu_03Noargs",
        ],
        _ => ["call_read1", "call_glob", "call_bash", "call_status"],
    };
    match name {
        "text" => vec![
            Event::Text("Tide pools".into()),
            Event::Text(" are small.".into()),
            usage(52, 7, 10),
            Event::Finished(StopReason::EndTurn),
        ],
        "tool_split" => vec![
            Event::Text("I'll read it.".into()),
            started(0, ids[0], "file.read"),
            args(0, r#"{"path": "src/ma"#),
            args(0, r#"in.rs", "off"#),
            args(0, r#"set": 1}"#),
            usage(120, 31, 0),
            Event::Finished(StopReason::ToolUse),
        ],
        "parallel" => {
            let glob = [
                started(0, ids[1], "search.glob"),
                args(0, r#"{"pattern""#),
                args(0, r#": "**/*.toml"}"#),
            ];
            let bash = [
                started(1, ids[2], "shell.bash"),
                args(1, r#"{"command": "cargo"#),
                args(1, r#" --version"}"#),
            ];
            let mut out = match driver {
                // Anthropic's blocks come one after the other; the OpenAI drivers interleave.
                Driver::AnthropicMessages => [glob, bash].concat(),
                _ => vec![
                    glob[0].clone(),
                    bash[0].clone(),
                    glob[1].clone(),
                    bash[1].clone(),
                    glob[2].clone(),
                    bash[2].clone(),
                ],
            };
            out.extend([
                started(2, ids[3], "status"),
                args(2, "{}"),
                usage(200, 64, 0),
                Event::Finished(StopReason::ToolUse),
            ]);
            out
        }
        _ => unreachable!(),
    }
}

#[tokio::test]
async fn each_driver_sends_the_conversation_and_yields_the_fixtures_events() {
    let client = client(Duration::from_secs(10));
    for (driver, dir) in DRIVERS {
        for name in ["text", "tool_split", "parallel"] {
            for split in [None, Some(7)] {
                let mut reply = Reply::fixture(&format!("{dir}/{name}.sse")).unwrap();
                if let Some(size) = split {
                    reply = reply.split_every(size);
                }
                let server = server_with(reply).await;
                let (events, error) = collect(&client, &endpoint(driver, &server)).await.unwrap();
                assert_eq!(error, None, "{dir}/{name}");
                assert_eq!(
                    events,
                    expected(driver, name),
                    "{dir}/{name} split {split:?}"
                );
                let sent = server.requests();
                assert_eq!(sent.len(), 1);
                check_sent(driver, &sent[0]);
            }
        }
    }
}

#[tokio::test]
async fn an_error_event_mid_stream_ends_the_answer_with_the_providers_error() {
    let client = client(Duration::from_secs(10));
    for (driver, dir) in DRIVERS {
        let server = server_with(Reply::fixture(&format!("{dir}/error_mid.sse")).unwrap()).await;
        let (events, error) = collect(&client, &endpoint(driver, &server)).await.unwrap();
        assert_eq!(events, vec![Event::Text("Tide".into())], "{dir}");
        let (kind, retryable) = match driver {
            Driver::AnthropicMessages => ("overloaded_error", true),
            Driver::OpenaiResponses => ("server_error", true),
            Driver::OpenaiCompletions => ("502", true),
        };
        match error {
            Some(e @ LlmError::Provider { .. }) => {
                assert!(
                    matches!(&e, LlmError::Provider { kind: k, .. } if k == kind),
                    "{dir}: {e:?}"
                );
                assert_eq!(e.is_retryable(), retryable);
            }
            other => panic!("{dir}: {other:?}"),
        }
    }
}

#[tokio::test]
async fn a_cut_connection_before_the_end_is_an_error_after_the_events_so_far() {
    let client = client(Duration::from_secs(10));
    for (driver, dir) in DRIVERS {
        let server = server_with(Reply::fixture(&format!("{dir}/cut.sse")).unwrap()).await;
        let (events, error) = collect(&client, &endpoint(driver, &server)).await.unwrap();
        let id = match driver {
            Driver::AnthropicMessages => "toolu_01Cut",
            _ => "call_cut",
        };
        assert_eq!(
            events,
            vec![
                Event::Text("Tide pools".into()),
                started(0, id, "file.read"),
                args(0, r#"{"pa"#),
            ],
            "{dir}"
        );
        assert!(matches!(error, Some(LlmError::Cut(_))), "{dir}: {error:?}");
        // A body that simply ends before the last event is cut too.
        let mut reply = Reply::fixture(&format!("{dir}/text.sse")).unwrap();
        let body = reply.body_bytes();
        let cut_at = body.len() * 2 / 3;
        reply.parts = vec![kaged_llm::testing::Part::Bytes(body[..cut_at].to_vec())];
        let server = server_with(reply).await;
        let (_, error) = collect(&client, &endpoint(driver, &server)).await.unwrap();
        assert!(matches!(error, Some(LlmError::Cut(_))), "{dir}: {error:?}");
    }
}

#[tokio::test]
async fn a_stalled_stream_fails_after_the_stall_timeout() {
    let client = client(Duration::from_millis(400));
    for (driver, dir) in DRIVERS {
        let server = server_with(Reply::fixture(&format!("{dir}/stall.sse")).unwrap()).await;
        let started_at = std::time::Instant::now();
        let (events, error) = collect(&client, &endpoint(driver, &server)).await.unwrap();
        let waited = started_at.elapsed();
        assert_eq!(events, vec![Event::Text("Tide".into())], "{dir}");
        assert_eq!(error, Some(LlmError::Stalled), "{dir}");
        assert!(!LlmError::Stalled.is_retryable());
        assert!(
            waited >= Duration::from_millis(400) && waited < Duration::from_secs(5),
            "{dir}: {waited:?}"
        );
    }
}

#[tokio::test]
async fn a_429_gives_the_providers_message_and_retry_after() {
    let client = client(Duration::from_secs(10));
    for (driver, dir) in DRIVERS {
        let server = server_with(Reply::fixture(&format!("{dir}/rate_limited.sse")).unwrap()).await;
        let error = match collect(&client, &endpoint(driver, &server)).await {
            Err(e) => e,
            Ok(other) => panic!("{dir}: {other:?}"),
        };
        let seconds = match driver {
            Driver::AnthropicMessages => 7,
            Driver::OpenaiResponses => 3,
            Driver::OpenaiCompletions => 2,
        };
        match &error {
            LlmError::Http {
                status: 429,
                message,
                retry_after,
            } => {
                assert_eq!(*retry_after, Some(Duration::from_secs(seconds)), "{dir}");
                assert!(
                    message.to_ascii_lowercase().contains("rate limit"),
                    "{dir}: {message}"
                );
            }
            other => panic!("{dir}: {other:?}"),
        }
        assert!(error.is_retryable());
        assert_eq!(error.retry_after(), Some(Duration::from_secs(seconds)));
        check_sent(driver, &server.requests()[0]);
    }
}

#[tokio::test]
async fn the_key_never_shows_in_errors_or_debug_output() {
    let server = ProviderServer::start().await.unwrap();
    server.push(
        Reply::parse(&format!(
            "status 401\ncontent-type: application/json\n\n{{\"error\":{{\"message\":\"Incorrect API key provided: {KEY}\"}}}}\n"
        ))
        .unwrap(),
    );
    let endpoint = endpoint(Driver::OpenaiCompletions, &server);
    let error = client(Duration::from_secs(5))
        .stream(&endpoint, &request())
        .await
        .unwrap_err();
    let shown = format!("{error} {error:?} {endpoint:?}");
    assert!(!shown.contains(KEY), "{shown}");
    assert!(shown.contains("<redacted>"), "{shown}");
    assert!(!error.is_retryable());
}

#[tokio::test]
async fn unreachable_providers_and_slow_headers_are_connect_and_timeout_errors() {
    // A port nobody listens on: bind one, then free it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let endpoint = Endpoint {
        driver: Driver::OpenaiCompletions,
        base_url: format!("http://127.0.0.1:{port}"),
        api_key: None,
        model: "m".into(),
    };
    let error = client(Duration::from_secs(1))
        .stream(&endpoint, &request())
        .await
        .unwrap_err();
    assert!(matches!(error, LlmError::Connect(_)), "{error:?}");
    assert!(error.is_retryable());
    // A listener that accepts and never answers: the request timeout fires.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = silent.local_addr().unwrap();
    let _keep = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            held.push(socket);
        }
    });
    let endpoint = Endpoint {
        base_url: format!("http://{addr}"),
        ..endpoint
    };
    let client = Client::new(Timeouts {
        request: Duration::from_millis(300),
        ..Timeouts::default()
    })
    .unwrap();
    assert_eq!(
        client.stream(&endpoint, &request()).await.unwrap_err(),
        LlmError::Timeout
    );
}

#[tokio::test]
async fn a_retry_after_a_429_gets_the_answer() {
    let server = ProviderServer::start().await.unwrap();
    server.push(Reply::fixture("openai-completions/rate_limited.sse").unwrap());
    server.push(Reply::fixture("openai-completions/text.sse").unwrap());
    let policy = kaged_llm::RetryPolicy {
        max_attempts: 3,
        base: Duration::from_millis(10),
        max: Duration::from_millis(50),
    };
    let client = client(Duration::from_secs(10));
    let endpoint = endpoint(Driver::OpenaiCompletions, &server);
    let mut attempt = 1;
    let events = loop {
        match collect(&client, &endpoint).await {
            Ok((events, None)) => break events,
            Err(e) if e.is_retryable() && policy.may_retry(attempt) => {
                let wait = policy.delay(attempt, e.retry_after(), 0.5);
                // retry-after (2 s) is honoured up to the policy's maximum.
                assert_eq!(wait, Duration::from_millis(50));
                tokio::time::sleep(wait).await;
                attempt += 1;
            }
            other => panic!("{other:?}"),
        }
    };
    assert_eq!(attempt, 2);
    assert_eq!(events, expected(Driver::OpenaiCompletions, "text"));
    let sent = server.requests();
    assert_eq!(sent.len(), 2);
    assert_eq!(sent[0].body, sent[1].body);
}
