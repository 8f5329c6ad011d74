//! Decoder tests: every fixture decodes the same in one piece, byte by byte and in random
//! splits; the corner cases each driver's decoder must get right.

use super::*;
use crate::sse::SseParser;
use crate::types::{StopReason, Usage};

const DRIVERS: [(Driver, &str); 3] = [
    (Driver::AnthropicMessages, "anthropic"),
    (Driver::OpenaiResponses, "openai-responses"),
    (Driver::OpenaiCompletions, "openai-completions"),
];

/// A fixture's body as the provider sends it (head and directives dropped).
fn body(dir: &str, name: &str) -> Vec<u8> {
    let path = format!(
        "{}/tests/fixtures/{dir}/{name}.sse",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(&path).unwrap();
    let (_, body) = text.split_once("\n\n").unwrap();
    body.split_inclusive('\n')
        .filter(|l| !l.starts_with("#!"))
        .collect::<String>()
        .into_bytes()
}

fn tools() -> Vec<ToolSpec> {
    ["file.read", "search.glob", "shell.bash", "status"]
        .into_iter()
        .map(|name| ToolSpec {
            name: name.into(),
            description: String::new(),
            parameters: serde_json::json!({"type": "object"}),
        })
        .collect()
}

/// Events (and the first error, as text) from feeding `pieces` in order.
fn run(driver: Driver, pieces: &[&[u8]]) -> (Vec<Event>, Option<String>, bool) {
    let mut parser = SseParser::new();
    let mut decoder = Decoder::new(driver, &tools());
    let mut out = Vec::new();
    let mut feed = |sse: Vec<SseEvent>, out: &mut Vec<Event>| -> Result<(), LlmError> {
        for e in &sse {
            out.extend(decoder.feed(e)?);
        }
        Ok(())
    };
    for piece in pieces {
        if let Err(e) = parser.push(piece).and_then(|s| feed(s, &mut out)) {
            return (out, Some(e.to_string()), false);
        }
    }
    if let Err(e) = parser.finish().and_then(|s| feed(s, &mut out)) {
        return (out, Some(e.to_string()), false);
    }
    let finished = decoder.finished();
    (out, None, finished)
}

#[test]
fn every_fixture_decodes_the_same_in_any_chunking() {
    let mut seed = 0x9e37_79b9_u64;
    for (driver, dir) in DRIVERS {
        for name in [
            "text",
            "tool_split",
            "parallel",
            "error_mid",
            "cut",
            "stall",
        ] {
            let bytes = body(dir, name);
            let whole = run(driver, &[&bytes]);
            assert!(!whole.0.is_empty(), "{dir}/{name} yields nothing");
            let singles: Vec<&[u8]> = bytes.chunks(1).collect();
            assert_eq!(run(driver, &singles), whole, "{dir}/{name} byte by byte");
            for _ in 0..20 {
                let mut pieces = Vec::new();
                let mut at = 0;
                while at < bytes.len() {
                    seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
                    let end = (at + 1 + (seed >> 33) as usize % 40).min(bytes.len());
                    pieces.push(&bytes[at..end]);
                    at = end;
                }
                assert_eq!(run(driver, &pieces), whole, "{dir}/{name} in random splits");
            }
            let finished = matches!(whole.0.last(), Some(Event::Finished(_)));
            assert_eq!(finished, whole.2, "{dir}/{name}");
            assert_eq!(
                finished,
                ["text", "tool_split", "parallel"].contains(&name),
                "{dir}/{name}: {whole:?}"
            );
        }
    }
}

#[test]
fn text_streams_give_text_usage_and_end_turn() {
    for (driver, dir) in DRIVERS {
        let (events, error, _) = run(driver, &[&body(dir, "text")]);
        assert_eq!(error, None);
        assert_eq!(
            events,
            vec![
                Event::Text("Tide pools".into()),
                Event::Text(" are small.".into()),
                Event::Usage(Usage {
                    input_tokens: 52,
                    output_tokens: 7,
                    cached_tokens: 10
                }),
                Event::Finished(StopReason::EndTurn),
            ],
            "{dir}"
        );
    }
}

#[test]
fn errors_mid_stream_are_provider_errors_after_the_text_before_them() {
    for (driver, dir) in DRIVERS {
        let (events, error, _) = run(driver, &[&body(dir, "error_mid")]);
        assert_eq!(events, vec![Event::Text("Tide".into())], "{dir}");
        let error = error.unwrap();
        assert!(error.starts_with("the provider reported"), "{dir}: {error}");
    }
}

#[test]
fn responses_error_events_and_incomplete_answers() {
    let stream = b"event: error\ndata: {\"type\":\"error\",\"code\":\"rate_limit_exceeded\",\"message\":\"slow\",\"param\":null}\n\n";
    let err = decode_all(Driver::OpenaiResponses, &[], stream).unwrap_err();
    assert_eq!(
        err,
        LlmError::Provider {
            kind: "rate_limit_exceeded".into(),
            message: "slow".into()
        }
    );
    assert!(err.is_retryable());
    let stream = b"data: {\"type\":\"response.incomplete\",\"response\":{\"status\":\"incomplete\",\"incomplete_details\":{\"reason\":\"max_output_tokens\"},\"usage\":{\"input_tokens\":3,\"output_tokens\":9}}}\n\n";
    let events = decode_all(Driver::OpenaiResponses, &[], stream).unwrap();
    assert_eq!(events.last(), Some(&Event::Finished(StopReason::MaxTokens)));
}

#[test]
fn completions_pieces_without_an_index_and_finish_reasons() {
    let stream = concat!(
        "data: {\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"id\":\"a\",\"function\":{\"name\":\"x\",\"arguments\":\"{\\\"q\\\"\"}}]}}]}\n\n",
        "data: {\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"function\":{\"arguments\":\":1}\"}}]}}]}\n\n",
        "data: {\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"id\":\"b\",\"function\":{\"name\":\"y\",\"arguments\":\"{}\"}}]}}]}\n\n",
        "data: {\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"length\"}]}\n\n",
        "data: [DONE]\n\n"
    );
    let events = decode_all(Driver::OpenaiCompletions, &[], stream.as_bytes()).unwrap();
    assert_eq!(
        events,
        vec![
            Event::ToolCallStarted {
                index: 0,
                id: "a".into(),
                name: "x".into()
            },
            Event::ToolCallArguments {
                index: 0,
                fragment: "{\"q\"".into()
            },
            Event::ToolCallArguments {
                index: 0,
                fragment: ":1}".into()
            },
            Event::ToolCallStarted {
                index: 1,
                id: "b".into(),
                name: "y".into()
            },
            Event::ToolCallArguments {
                index: 1,
                fragment: "{}".into()
            },
            Event::Finished(StopReason::MaxTokens),
        ]
    );
}

#[test]
fn malformed_json_is_a_protocol_error_quoting_the_line_shortened() {
    for (driver, _) in DRIVERS {
        let long = format!("data: {{\"type\": {}\n\n", "x".repeat(5000));
        match decode_all(driver, &[], long.as_bytes()) {
            Err(LlmError::Protocol(m)) => {
                assert!(m.contains("not JSON") && m.len() < 600, "{m}");
            }
            other => panic!("{driver}: {other:?}"),
        }
    }
    let err = decode_all(Driver::AnthropicMessages, &[], b"data: [1, 2]\n\n").unwrap_err();
    assert!(matches!(err, LlmError::Protocol(_)), "{err:?}");
}
