//! Fuzz targets for the PTY wire frames (`frame`): client control text, server text and server
//! binary frames. Each starts from the seed corpus in `fuzz/corpus/<target>/` and mutates it
//! (see `kaged-fuzz`); the proptest cases generate well-formed frames. Bounded by default; see
//! ARCHITECTURE.md (Testing) for longer runs.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

use std::path::PathBuf;

use kaged_fuzz::{Target, fuzz, prop, try_fuzz};
use kaged_session::frame::{HEADER_LEN, MAX_SIZE, MIN_SIZE};
use kaged_session::{
    ClientControl, FrameError, ServerBinary, ServerText, StateKind, decode_server_binary,
    encode_output, encode_snapshot, parse_client_text, parse_server_text,
};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;

fn corpus(name: &str) -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/fuzz/corpus")).join(name)
}

const JSON_TOKENS: &[&str] = &[
    "{",
    "}",
    "[",
    "]",
    ":",
    ",",
    "\"",
    "null",
    "true",
    "false",
    "-1",
    "0",
    "1000",
    "1001",
    "65536",
    "18446744073709551616",
    "1e3",
    "2.5",
    "\"type\"",
    "\"resize\"",
    "\"resume\"",
    "\"ping\"",
    "\"rows\"",
    "\"cols\"",
    "\"offset\"",
    "\"id\"",
    "\"hello\"",
    "\"state\"",
    "\"exit\"",
    "\"pong\"",
    "\"error\"",
    "\"code\"",
    "\"message\"",
    "\"running\"",
    "\\u0000",
    "\\ud800",
    "\\\"",
];

/// The frame's text as a WebSocket delivers it: valid UTF-8 (invalid bytes become U+FFFD).
fn text(input: &[u8]) -> String {
    String::from_utf8_lossy(input).into_owned()
}

/// A refused frame's error must itself travel to the client intact.
fn error_frame_round_trips(err: &FrameError) -> Result<(), String> {
    if err.code() != "bad_control" {
        return Err(format!("{err:?} has code {}", err.code()));
    }
    let frame = ServerText::error(err);
    match parse_server_text(&frame.to_json()) {
        Ok(back) if back == frame => Ok(()),
        other => Err(format!("error frame {frame:?} came back as {other:?}")),
    }
}

type ClientParser = fn(&str) -> Result<ClientControl, FrameError>;
type BinaryDecoder = fn(&[u8]) -> Result<ServerBinary<'_>, FrameError>;

fn check_client(input: &[u8]) -> Result<String, String> {
    check_client_with(parse_client_text, input)
}

fn check_client_with(parse: ClientParser, input: &[u8]) -> Result<String, String> {
    let text = text(input);
    match parse(&text) {
        Ok(control) => {
            if let ClientControl::Resize { rows, cols } = control
                && !(MIN_SIZE..=MAX_SIZE).contains(&rows) | !(MIN_SIZE..=MAX_SIZE).contains(&cols)
            {
                return Err(format!("accepted a resize to {rows}x{cols}"));
            }
            let json: serde_json::Value = serde_json::from_str(&text)
                .map_err(|e| format!("accepted text that is not JSON ({e})"))?;
            let kind = json.get("type").and_then(|t| t.as_str()).unwrap_or("");
            let back = parse(&control.to_json());
            if back.as_ref() != Ok(&control) {
                return Err(format!("{control:?} re-parses as {back:?}"));
            }
            Ok(format!("ok {kind}"))
        }
        Err(err) => {
            if matches!(err, FrameError::NotJson(_))
                == serde_json::from_str::<serde_json::Value>(&text).is_ok()
            {
                return Err(format!(
                    "{err:?} disagrees with serde_json on whether it is JSON"
                ));
            }
            error_frame_round_trips(&err)?;
            Ok(label(&err))
        }
    }
}

fn check_server(input: &[u8]) -> Result<String, String> {
    let text = text(input);
    match parse_server_text(&text) {
        Ok(frame) => {
            let back = parse_server_text(&frame.to_json());
            if back.as_ref() != Ok(&frame) {
                return Err(format!("{frame:?} re-parses as {back:?}"));
            }
            let json: serde_json::Value = serde_json::from_str(&frame.to_json()).unwrap();
            Ok(format!("ok {}", json["type"]))
        }
        Err(err) => {
            error_frame_round_trips(&err)?;
            Ok(label(&err))
        }
    }
}

fn check_binary(input: &[u8]) -> Result<String, String> {
    check_binary_with(decode_server_binary, input)
}

fn check_binary_with(decode: BinaryDecoder, input: &[u8]) -> Result<String, String> {
    match decode(input) {
        Ok(frame) => {
            let encoded = match frame {
                ServerBinary::Output { offset, data } => encode_output(offset, data),
                ServerBinary::Snapshot { offset, data } => encode_snapshot(offset, data),
            };
            if encoded != input {
                return Err(format!("{frame:?} encodes back to {encoded:?}"));
            }
            Ok(format!("ok {}", input[0]))
        }
        Err(FrameError::TooShort { len }) if len == input.len() && len < HEADER_LEN => {
            Ok("short".into())
        }
        Err(FrameError::UnknownKind(kind))
            if input.len() >= HEADER_LEN && kind == input[0] && !matches!(kind, 1 | 2) =>
        {
            Ok("unknown kind".into())
        }
        Err(err) => Err(format!("refused with the wrong reason: {err:?}")),
    }
}

/// The error's variant and the start of its message (serde's kind of complaint), so inputs
/// that reach a new kind of refusal join the pool.
fn label(err: &FrameError) -> String {
    let message = err.to_string();
    let words: Vec<&str> = message
        .split_whitespace()
        .take_while(|w| w.chars().all(|c| c.is_ascii_alphabetic() || c == ':'))
        .take(6)
        .collect();
    format!("err {}: {}", variant(err), words.join(" "))
}

fn variant(err: &FrameError) -> &'static str {
    match err {
        FrameError::TooShort { .. } => "too short",
        FrameError::UnknownKind(_) => "unknown kind",
        FrameError::NotJson(_) => "not json",
        FrameError::MissingType => "missing type",
        FrameError::UnknownType(..) => "unknown type",
        FrameError::BadSize { .. } => "bad size",
        FrameError::BadFields { .. } => "bad fields",
    }
}

#[test]
fn fuzz_pty_client_text() {
    let report = fuzz(
        &Target {
            name: "pty_client_text",
            corpus: corpus("pty_client_text"),
            dictionary: JSON_TOKENS,
            iterations: 40_000,
            max_len: 512,
        },
        check_client,
    );
    assert!(report.behaviours >= 5, "{report:?}");
}

#[test]
fn fuzz_pty_server_text() {
    let report = fuzz(
        &Target {
            name: "pty_server_text",
            corpus: corpus("pty_server_text"),
            dictionary: JSON_TOKENS,
            iterations: 40_000,
            max_len: 512,
        },
        check_server,
    );
    assert!(report.behaviours >= 5, "{report:?}");
}

#[test]
fn fuzz_pty_binary() {
    let report = fuzz(
        &Target {
            name: "pty_binary",
            corpus: corpus("pty_binary"),
            dictionary: &["\x01", "\x02", "\x1b[", "\r\n"],
            iterations: 100_000,
            max_len: 256,
        },
        check_binary,
    );
    assert!(report.behaviours >= 4, "{report:?}");
}

/// The checks can fail: run against deliberately broken parsers, the fuzzer catches each.
#[test]
fn the_fuzz_checks_catch_broken_parsers() {
    fn lax_kind(frame: &[u8]) -> Result<ServerBinary<'_>, FrameError> {
        // Treats every unknown kind as output: an encoder would never produce such bytes.
        let mut fixed = frame.to_vec();
        if let Some(kind) = fixed.first_mut() {
            *kind = if *kind == 2 { 2 } else { 1 };
        }
        match decode_server_binary(&fixed)? {
            ServerBinary::Output { offset, .. } => Ok(ServerBinary::Output {
                offset,
                data: &frame[HEADER_LEN..],
            }),
            ServerBinary::Snapshot { offset, .. } => Ok(ServerBinary::Snapshot {
                offset,
                data: &frame[HEADER_LEN..],
            }),
        }
    }
    fn lax_sizes(text: &str) -> Result<ClientControl, FrameError> {
        // Skips the 1..=1000 check, as serde alone would.
        serde_json::from_str(text).map_err(|e| FrameError::NotJson(e.to_string()))
    }
    let found = |name: &str, check: fn(&[u8]) -> Result<String, String>| {
        let target = Target {
            name,
            corpus: corpus(name),
            dictionary: JSON_TOKENS,
            iterations: 20_000,
            max_len: 256,
        };
        let message = try_fuzz(&target, check).expect_err("the broken parser went unnoticed");
        assert!(message.contains("breaks a property"), "{message}");
    };
    found("pty_binary", |input| check_binary_with(lax_kind, input));
    found("pty_client_text", |input| {
        check_client_with(lax_sizes, input)
    });
}

fn state_kind() -> impl Strategy<Value = StateKind> {
    prop::sample::select(StateKind::ALL.to_vec())
}

fn server_text() -> impl Strategy<Value = ServerText> {
    prop_oneof![
        (
            any::<String>(),
            state_kind(),
            any::<u16>(),
            any::<u16>(),
            any::<u64>(),
            any::<u64>()
        )
            .prop_map(
                |(session, state, rows, cols, start, end)| ServerText::Hello {
                    session,
                    state,
                    rows,
                    cols,
                    start,
                    end
                }
            ),
        (
            state_kind(),
            any::<Option<i32>>(),
            any::<Option<String>>(),
            any::<Option<String>>()
        )
            .prop_map(|(state, code, by, reason)| ServerText::State {
                state,
                code,
                by,
                reason
            }),
        any::<u64>().prop_map(|id| ServerText::Pong { id }),
        (any::<String>(), any::<String>())
            .prop_map(|(code, message)| ServerText::Error { code, message }),
        any::<i32>().prop_map(|code| ServerText::Exit { code }),
    ]
}

#[test]
fn proptest_client_controls_round_trip() {
    let strategy = (
        any::<u16>(),
        any::<u16>(),
        any::<Option<u64>>(),
        any::<u64>(),
        0..3u8,
    );
    prop(
        "pty_client_controls",
        512,
        &strategy,
        |(rows, cols, offset, id, pick)| {
            let control = match pick {
                0 => ClientControl::Resize { rows, cols },
                1 => ClientControl::Resume { offset },
                _ => ClientControl::Ping { id },
            };
            let parsed = parse_client_text(&control.to_json());
            let in_range = |n: u16| (MIN_SIZE..=MAX_SIZE).contains(&n);
            match &control {
                ClientControl::Resize { rows, cols } if !in_range(*rows) || !in_range(*cols) => {
                    let field = if in_range(*rows) { "cols" } else { "rows" };
                    prop_assert!(
                        matches!(&parsed, Err(FrameError::BadSize { field: f, .. }) if *f == field),
                        "{control:?}: {parsed:?}"
                    );
                }
                _ => prop_assert_eq!(parsed, Ok(control.clone())),
            }
            check_client(control.to_json().as_bytes()).map_err(TestCaseError::fail)?;
            Ok(())
        },
    );
}

#[test]
fn proptest_server_texts_round_trip() {
    prop("pty_server_texts", 512, &server_text(), |frame| {
        prop_assert_eq!(parse_server_text(&frame.to_json()), Ok(frame.clone()));
        check_server(frame.to_json().as_bytes()).map_err(TestCaseError::fail)?;
        Ok(())
    });
}

#[test]
fn proptest_binary_frames_round_trip() {
    let strategy = (
        any::<u64>(),
        prop::collection::vec(any::<u8>(), 0..300),
        any::<bool>(),
    );
    prop(
        "pty_binary_frames",
        512,
        &strategy,
        |(offset, data, snapshot)| {
            let (frame, want) = if snapshot {
                (
                    encode_snapshot(offset, &data),
                    ServerBinary::Snapshot {
                        offset,
                        data: &data,
                    },
                )
            } else {
                (
                    encode_output(offset, &data),
                    ServerBinary::Output {
                        offset,
                        data: &data,
                    },
                )
            };
            prop_assert_eq!(decode_server_binary(&frame), Ok(want));
            check_binary(&frame).map_err(TestCaseError::fail)?;
            Ok(())
        },
    );
}

/// Every frame in `input`, decoded once whole and once fed byte by byte: both agree, every
/// frame understood re-encodes to one that decodes to the same value, and decoding ends.
fn check_holder(input: &[u8]) -> Result<String, String> {
    use kaged_session::holder::{Decoder, Step};
    fn run<T>(input: &[u8], by_byte: bool, next: fn(&mut Decoder) -> Step<T>) -> Vec<Step<T>> {
        let mut d = Decoder::new();
        let mut out = Vec::new();
        let drain = |d: &mut Decoder, out: &mut Vec<Step<T>>| loop {
            match next(d) {
                Step::Incomplete => break,
                Step::Error(e) if e.is_fatal() => {
                    out.push(Step::Error(e));
                    break;
                }
                s => out.push(s),
            }
        };
        if by_byte {
            for b in input {
                d.push(&[*b]);
                if matches!(out.last(), Some(Step::Error(e)) if e.is_fatal()) {
                    break;
                }
                drain(&mut d, &mut out);
            }
        } else {
            d.push(input);
            drain(&mut d, &mut out);
        }
        out
    }
    let mut labels = Vec::new();
    let whole = run(input, false, Decoder::next_to_holder);
    if whole != run(input, true, Decoder::next_to_holder) {
        return Err("to-holder: whole and byte-by-byte decoding differ".into());
    }
    for step in &whole {
        match step {
            Step::Frame(f) => {
                let mut d = Decoder::new();
                d.push(&f.encode());
                if d.next_to_holder() != Step::Frame(f.clone()) {
                    return Err(format!("{f:?} does not round-trip"));
                }
                labels.push(format!("h:{:?}", std::mem::discriminant(f)));
            }
            Step::Error(e) => labels.push(format!("h:{}", e.code())),
            Step::Incomplete => return Err("Incomplete pushed".into()),
        }
    }
    let whole = run(input, false, Decoder::next_to_client);
    if whole != run(input, true, Decoder::next_to_client) {
        return Err("to-client: whole and byte-by-byte decoding differ".into());
    }
    for step in &whole {
        if let Step::Frame(f) = step {
            let mut d = Decoder::new();
            d.push(&f.encode());
            if d.next_to_client() != Step::Frame(f.clone()) {
                return Err(format!("{f:?} does not round-trip"));
            }
            labels.push(format!("c:{:?}", std::mem::discriminant(f)));
        }
    }
    labels.sort();
    labels.dedup();
    Ok(labels.join(","))
}

#[test]
fn fuzz_holder_frame() {
    let report = fuzz(
        &Target {
            name: "holder_frame",
            corpus: corpus("holder_frame"),
            dictionary: &[
                "\x00\x00\x00\x00",
                "\x00\x00\x00\x10",
                "\x10",
                "\x11",
                "\x21",
                "\x7f",
                "{\"from\":",
                "{\"by\":\"",
                "{\"versions\":[",
                "{\"refused\":",
                "\"state\":\"",
                "}",
            ],
            iterations: 40_000,
            max_len: 512,
        },
        check_holder,
    );
    assert!(report.behaviours >= 8, "{report:?}");
}

#[test]
fn proptest_holder_outputs_and_inputs_round_trip_in_any_split() {
    use kaged_session::holder::{Decoder, Step, ToClient, ToHolder};
    let strategy = (
        any::<u64>(),
        prop::collection::vec(any::<u8>(), 0..300),
        1..64usize,
    );
    prop("holder_frames", 256, &strategy, |(offset, bytes, piece)| {
        let out = ToClient::Output {
            offset,
            bytes: bytes.clone(),
        };
        let mut d = Decoder::new();
        let encoded = out.encode();
        let mut got = Vec::new();
        for chunk in encoded.chunks(piece) {
            d.push(chunk);
            while let Step::Frame(f) = d.next_to_client() {
                got.push(f);
            }
        }
        prop_assert_eq!(got, vec![out]);
        let input = ToHolder::Input(bytes);
        let mut d = Decoder::new();
        d.push(&input.encode());
        prop_assert_eq!(d.next_to_holder(), Step::Frame(input));
        check_holder(&encoded).map_err(TestCaseError::fail)?;
        Ok(())
    });
}
