//! The PTY WebSocket wire protocol: how a browser (xterm.js) or the CLI attaches to a session.
//!
//! # Offsets
//!
//! A session's output is one byte stream. The offset of a byte is the number of bytes the
//! session printed before it (a `u64`). A viewer that has written everything below offset `n`
//! to its terminal resumes at `n` and receives every later byte exactly once.
//!
//! # Server → client
//!
//! **Binary frames** carry terminal bytes:
//!
//! | bytes | meaning |
//! |---|---|
//! | 0 | kind: `0x01` output, `0x02` snapshot |
//! | 1..9 | offset, `u64` big-endian |
//! | 9.. | data |
//!
//! - *output* (`0x01`): `data` is the output starting at `offset`. The next output frame starts
//!   at `offset + data.len()`.
//! - *snapshot* (`0x02`): `data` redraws the terminal as it stood when the output reached
//!   `offset` (the log end at that moment): it resets the terminal, repaints the screen with its
//!   colours, puts the cursor back and restores the modes. The output that follows starts at
//!   `offset`.
//!
//! **Text frames** are JSON objects with a `"type"`:
//!
//! - `{"type":"hello","session":"…","state":"running","rows":24,"cols":80,"start":0,"end":1234}`:
//!   the first frame. `start` is the earliest offset still available (memory or storage),
//!   `end` the current end of the output, `rows`×`cols` the PTY size.
//! - `{"type":"state","state":"exited","code":0}`: the run changed state. `code` (exit status,
//!   128 + signal when a signal ended it) comes with `exited`, `by` (who aborted) with
//!   `stopping` and `killed`, `reason` with `failed`; absent fields are omitted.
//! - `{"type":"exit","code":0}`: the process ended with this code; no more output follows.
//! - `{"type":"pong","id":7}`: the answer to a ping, with its id.
//! - `{"type":"error","code":"bad_control","message":"…"}`: a request was refused. `code` is
//!   stable (see [`error_code`]), `message` is for people.
//!
//! State names: `queued`, `starting`, `running`, `stopping`, `exited`, `failed`, `killed`.
//!
//! # Client → server
//!
//! **Binary frames** are raw input bytes, written to the PTY as they are (keystrokes, pastes).
//!
//! **Text frames** are JSON objects with a `"type"` (unknown fields are ignored):
//!
//! - `{"type":"resume","offset":N}`: send output from offset `N` (the next byte wanted). With
//!   `"offset":null` or no `offset`, send a snapshot, then live output. An offset older than
//!   `start` is answered with a snapshot too; an offset past `end` with an error
//!   (`resume_ahead`).
//! - `{"type":"resize","rows":R,"cols":C}`: resize the PTY; each of `R`, `C` in 1..=1000.
//! - `{"type":"ping","id":N}`: answered with `pong` and the same `id` (a `u64`).
//!
//! # A session
//!
//! 1. The server sends `hello`, then waits.
//! 2. The client sends `resume` (with its last offset when it reconnects, else `null`) and,
//!    if its terminal's size differs, `resize`.
//! 3. The server streams a snapshot and/or output frames, then live output, `state` changes
//!    and finally `exit` when the process ends. Input and control frames may flow at any time.
//!
//! A malformed control frame is answered with `error` and the connection stays open.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::state::{State, StateKind};

/// Kind byte of an output frame.
pub const KIND_OUTPUT: u8 = 0x01;
/// Kind byte of a snapshot frame.
pub const KIND_SNAPSHOT: u8 = 0x02;
/// Length of the kind byte plus the offset.
pub const HEADER_LEN: usize = 9;
/// The smallest and largest PTY dimension a client may ask for.
pub const MIN_SIZE: u16 = 1;
pub const MAX_SIZE: u16 = 1000;

/// The stable codes of `error` frames.
pub mod error_code {
    /// A control frame was not valid JSON, had an unknown type or bad fields.
    pub const BAD_CONTROL: &str = "bad_control";
    /// `resume` asked for an offset past the end of the output.
    pub const RESUME_AHEAD: &str = "resume_ahead";
}

/// A terminal-bytes frame from the server, decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServerBinary<'a> {
    /// Output starting at `offset`.
    Output { offset: u64, data: &'a [u8] },
    /// A redraw of the terminal as of `offset`; output continues from `offset`.
    Snapshot { offset: u64, data: &'a [u8] },
}

/// A control frame from the client.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum ClientControl {
    Resize {
        rows: u16,
        cols: u16,
    },
    /// `None`: send a snapshot, then live output.
    Resume {
        #[serde(default)]
        offset: Option<u64>,
    },
    Ping {
        id: u64,
    },
}

/// A control frame from the server.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum ServerText {
    Hello {
        session: String,
        state: StateKind,
        rows: u16,
        cols: u16,
        start: u64,
        end: u64,
    },
    State {
        state: StateKind,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        code: Option<i32>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        by: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    Pong {
        id: u64,
    },
    Error {
        code: String,
        message: String,
    },
    Exit {
        code: i32,
    },
}

/// A frame that could not be decoded; the `Display` text is meant for the sender.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("binary frame of {len} bytes is shorter than its {HEADER_LEN}-byte header")]
    TooShort { len: usize },
    #[error("unknown binary frame kind 0x{0:02x} (expected 0x01 output or 0x02 snapshot)")]
    UnknownKind(u8),
    #[error("control frame is not JSON: {0}")]
    NotJson(String),
    #[error("control frame must be a JSON object with a string \"type\"")]
    MissingType,
    #[error("unknown control type `{0}` (expected {1})")]
    UnknownType(String, &'static str),
    #[error("{field} must be an integer from {MIN_SIZE} to {MAX_SIZE}, got {value}")]
    BadSize { field: &'static str, value: String },
    #[error("bad `{kind}` frame: {message}")]
    BadFields { kind: String, message: String },
}

impl FrameError {
    /// The stable code to send back in an `error` frame.
    pub fn code(&self) -> &'static str {
        error_code::BAD_CONTROL
    }
}

/// An output frame: `data` starts at `offset`.
pub fn encode_output(offset: u64, data: &[u8]) -> Vec<u8> {
    encode(KIND_OUTPUT, offset, data)
}

/// A snapshot frame: `data` redraws the terminal as of the log end `offset`.
pub fn encode_snapshot(offset: u64, data: &[u8]) -> Vec<u8> {
    encode(KIND_SNAPSHOT, offset, data)
}

fn encode(kind: u8, offset: u64, data: &[u8]) -> Vec<u8> {
    let mut frame = Vec::with_capacity(HEADER_LEN + data.len());
    frame.push(kind);
    frame.extend_from_slice(&offset.to_be_bytes());
    frame.extend_from_slice(data);
    frame
}

/// Decodes a binary frame from the server (used by the CLI client and tests).
pub fn decode_server_binary(frame: &[u8]) -> Result<ServerBinary<'_>, FrameError> {
    let (Some(&kind), Some(offset), Some(data)) = (
        frame.first(),
        frame.get(1..HEADER_LEN),
        frame.get(HEADER_LEN..),
    ) else {
        return Err(FrameError::TooShort { len: frame.len() });
    };
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(offset);
    let offset = u64::from_be_bytes(bytes);
    match kind {
        KIND_OUTPUT => Ok(ServerBinary::Output { offset, data }),
        KIND_SNAPSHOT => Ok(ServerBinary::Snapshot { offset, data }),
        other => Err(FrameError::UnknownKind(other)),
    }
}

const CLIENT_TYPES: &str = "resize, resume or ping";
const SERVER_TYPES: &str = "hello, state, pong, error or exit";

/// Parses a text frame from the client, checking sizes against 1..=1000.
pub fn parse_client_text(text: &str) -> Result<ClientControl, FrameError> {
    let (kind, value) = typed_object(text, &["resize", "resume", "ping"], CLIENT_TYPES)?;
    if kind == "resize" {
        for field in ["rows", "cols"] {
            check_size(field, value.get(field))?;
        }
    }
    serde_json::from_value(value).map_err(|err| FrameError::BadFields {
        kind,
        message: err.to_string(),
    })
}

/// Parses a text frame from the server (used by the CLI client and tests).
pub fn parse_server_text(text: &str) -> Result<ServerText, FrameError> {
    let (kind, value) = typed_object(
        text,
        &["hello", "state", "pong", "error", "exit"],
        SERVER_TYPES,
    )?;
    serde_json::from_value(value).map_err(|err| FrameError::BadFields {
        kind,
        message: err.to_string(),
    })
}

/// The JSON object in `text` and its `type`, which must be one of `known`.
fn typed_object(
    text: &str,
    known: &[&str],
    expected: &'static str,
) -> Result<(String, Value), FrameError> {
    let value: Value =
        serde_json::from_str(text).map_err(|err| FrameError::NotJson(err.to_string()))?;
    let Some(kind) = value.get("type").and_then(Value::as_str) else {
        return Err(FrameError::MissingType);
    };
    if !known.contains(&kind) {
        return Err(FrameError::UnknownType(kind.to_owned(), expected));
    }
    Ok((kind.to_owned(), value))
}

fn check_size(field: &'static str, value: Option<&Value>) -> Result<(), FrameError> {
    let in_range = value
        .and_then(Value::as_u64)
        .is_some_and(|n| (u64::from(MIN_SIZE)..=u64::from(MAX_SIZE)).contains(&n));
    if in_range {
        return Ok(());
    }
    let value = value.map_or_else(|| "nothing".to_owned(), Value::to_string);
    Err(FrameError::BadSize { field, value })
}

impl ClientControl {
    /// The JSON text frame (used by the CLI client).
    pub fn to_json(&self) -> String {
        // Serializing plain fields into a string cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }
}

impl ServerText {
    /// The `state` frame describing `state`.
    pub fn state(state: &State) -> Self {
        let (mut code, mut by, mut reason) = (None, None, None);
        match state {
            State::Exited { code: c, .. } => code = Some(*c),
            State::Stopping { by: b, .. } | State::Killed { by: b } => by = Some(b.clone()),
            State::Failed { reason: r } => reason = Some(r.clone()),
            State::Queued | State::Starting | State::Running { .. } => {}
        }
        Self::State {
            state: state.kind(),
            code,
            by,
            reason,
        }
    }

    /// The `error` frame for a refused control frame.
    pub fn error(err: &FrameError) -> Self {
        Self::Error {
            code: err.code().to_owned(),
            message: err.to_string(),
        }
    }

    /// The JSON text frame.
    pub fn to_json(&self) -> String {
        // Serializing plain fields into a string cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn value(text: &str) -> Value {
        serde_json::from_str(text).unwrap()
    }

    #[test]
    fn binary_frames_have_kind_offset_then_data() {
        let frame = encode_output(0x0102_0304_0506_0708, b"hi");
        assert_eq!(frame, [1, 1, 2, 3, 4, 5, 6, 7, 8, b'h', b'i']);
        let frame = encode_snapshot(5, b"");
        assert_eq!(frame, [2, 0, 0, 0, 0, 0, 0, 0, 5]);
    }

    #[test]
    fn binary_frames_round_trip() {
        for offset in [0, 1, 255, 1 << 40, u64::MAX] {
            for data in [&b""[..], b"x", b"\x1b[31mred\x1b[m"] {
                assert_eq!(
                    decode_server_binary(&encode_output(offset, data)),
                    Ok(ServerBinary::Output { offset, data })
                );
                assert_eq!(
                    decode_server_binary(&encode_snapshot(offset, data)),
                    Ok(ServerBinary::Snapshot { offset, data })
                );
            }
        }
    }

    #[test]
    fn bad_binary_frames_are_refused() {
        assert_eq!(
            decode_server_binary(&[1, 0, 0]),
            Err(FrameError::TooShort { len: 3 })
        );
        assert_eq!(
            decode_server_binary(&[]),
            Err(FrameError::TooShort { len: 0 })
        );
        assert_eq!(
            decode_server_binary(&[3, 0, 0, 0, 0, 0, 0, 0, 0]),
            Err(FrameError::UnknownKind(3))
        );
        assert_eq!(
            FrameError::UnknownKind(3).to_string(),
            "unknown binary frame kind 0x03 (expected 0x01 output or 0x02 snapshot)"
        );
    }

    #[test]
    fn client_controls_parse() {
        let cases = [
            (
                r#"{"type":"resize","rows":24,"cols":80}"#,
                ClientControl::Resize { rows: 24, cols: 80 },
            ),
            (
                r#"{"type":"resize","rows":1,"cols":1000,"extra":true}"#,
                ClientControl::Resize {
                    rows: 1,
                    cols: 1000,
                },
            ),
            (
                r#"{"type":"resume","offset":1234}"#,
                ClientControl::Resume { offset: Some(1234) },
            ),
            (
                r#"{"type":"resume","offset":null}"#,
                ClientControl::Resume { offset: None },
            ),
            (
                r#"{"type":"resume"}"#,
                ClientControl::Resume { offset: None },
            ),
            (r#"{"type":"ping","id":7}"#, ClientControl::Ping { id: 7 }),
        ];
        for (text, want) in cases {
            assert_eq!(parse_client_text(text), Ok(want.clone()), "{text}");
            assert_eq!(parse_client_text(&want.to_json()), Ok(want), "{text}");
        }
    }

    #[test]
    fn client_controls_serialize_as_documented() {
        assert_eq!(
            value(&ClientControl::Resize { rows: 2, cols: 3 }.to_json()),
            json!({"type": "resize", "rows": 2, "cols": 3})
        );
        assert_eq!(
            value(&ClientControl::Resume { offset: None }.to_json()),
            json!({"type": "resume", "offset": null})
        );
    }

    #[test]
    fn bad_sizes_name_the_field_and_the_range() {
        let cases = [
            (r#"{"type":"resize","rows":0,"cols":80}"#, "rows", "0"),
            (r#"{"type":"resize","rows":24,"cols":1001}"#, "cols", "1001"),
            (
                r#"{"type":"resize","rows":70000,"cols":80}"#,
                "rows",
                "70000",
            ),
            (r#"{"type":"resize","rows":-1,"cols":80}"#, "rows", "-1"),
            (r#"{"type":"resize","rows":2.5,"cols":80}"#, "rows", "2.5"),
            (
                r#"{"type":"resize","rows":"24","cols":80}"#,
                "rows",
                "\"24\"",
            ),
            (r#"{"type":"resize","rows":24}"#, "cols", "nothing"),
        ];
        for (text, field, value) in cases {
            let err = parse_client_text(text).unwrap_err();
            assert_eq!(
                err,
                FrameError::BadSize {
                    field,
                    value: value.into()
                },
                "{text}"
            );
        }
        assert_eq!(
            parse_client_text(r#"{"type":"resize","rows":0,"cols":80}"#)
                .unwrap_err()
                .to_string(),
            "rows must be an integer from 1 to 1000, got 0"
        );
    }

    #[test]
    fn bad_client_controls_say_what_is_wrong() {
        let cases = [
            ("not json", "control frame is not JSON: "),
            (
                "[1]",
                "control frame must be a JSON object with a string \"type\"",
            ),
            (r#"{"rows":1}"#, "control frame must be a JSON object"),
            (r#"{"type":5}"#, "control frame must be a JSON object"),
            (
                r#"{"type":"hello"}"#,
                "unknown control type `hello` (expected resize, resume or ping)",
            ),
            (r#"{"type":"ping"}"#, "bad `ping` frame: missing field `id`"),
            (
                r#"{"type":"resume","offset":-3}"#,
                "bad `resume` frame: invalid value",
            ),
        ];
        for (text, prefix) in cases {
            let err = parse_client_text(text).unwrap_err();
            assert!(
                err.to_string().starts_with(prefix),
                "{text}: {err} does not start with {prefix}"
            );
            assert_eq!(err.code(), "bad_control");
        }
    }

    #[test]
    fn server_texts_serialize_as_documented() {
        let cases = [
            (
                ServerText::Hello {
                    session: "s1".into(),
                    state: StateKind::Running,
                    rows: 24,
                    cols: 80,
                    start: 10,
                    end: 99,
                },
                json!({"type":"hello","session":"s1","state":"running","rows":24,"cols":80,
                       "start":10,"end":99}),
            ),
            (
                ServerText::state(&State::Exited {
                    code: 137,
                    signal: Some(9),
                }),
                json!({"type":"state","state":"exited","code":137}),
            ),
            (
                ServerText::state(&State::Stopping {
                    pid: 3,
                    by: "alice".into(),
                }),
                json!({"type":"state","state":"stopping","by":"alice"}),
            ),
            (
                ServerText::state(&State::Killed { by: "bob".into() }),
                json!({"type":"state","state":"killed","by":"bob"}),
            ),
            (
                ServerText::state(&State::Failed {
                    reason: "no bwrap".into(),
                }),
                json!({"type":"state","state":"failed","reason":"no bwrap"}),
            ),
            (
                ServerText::state(&State::Running { pid: 3 }),
                json!({"type":"state","state":"running"}),
            ),
            (ServerText::Pong { id: 7 }, json!({"type":"pong","id":7})),
            (
                ServerText::error(&FrameError::MissingType),
                json!({"type":"error","code":"bad_control",
                       "message":"control frame must be a JSON object with a string \"type\""}),
            ),
            (
                ServerText::Exit { code: 0 },
                json!({"type":"exit","code":0}),
            ),
        ];
        for (frame, want) in cases {
            let text = frame.to_json();
            assert_eq!(value(&text), want);
            assert_eq!(parse_server_text(&text), Ok(frame));
        }
    }

    #[test]
    fn bad_server_texts_are_refused() {
        assert_eq!(
            parse_server_text(r#"{"type":"resize"}"#),
            Err(FrameError::UnknownType(
                "resize".into(),
                "hello, state, pong, error or exit"
            ))
        );
        assert!(matches!(
            parse_server_text(r#"{"type":"state","state":"sleeping"}"#),
            Err(FrameError::BadFields { .. })
        ));
    }
}
