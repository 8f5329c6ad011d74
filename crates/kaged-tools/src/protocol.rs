//! The executor's protocol: JSON lines on its stdin and stdout.
//!
//! In (one line each): a call `{"id": N, "tool": "file.read", "arguments": {...}}` (the
//! arguments may also be a string holding JSON, as model APIs deliver them), or a cancel
//! `{"cancel": N}`. Out: exactly one line per call, in the order calls finish:
//! `{"id": N, "ok": true, "output": "...", "truncated": false}` or
//! `{"id": N, "ok": false, "error": "..."}`; a line that is not a call gets an error line,
//! with its `id` when one could be read. EOF on stdin ends the executor: every call still
//! running is cancelled (its shell killed) and answered so.
//!
//! The side that reads the executor's output must treat it as the cage's: a process in the
//! cage can write to it too. So lines are bounded ([`read_line`]) and only ids the reader is
//! waiting for count.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::io::{AsyncBufRead, AsyncBufReadExt};

/// The longest line either side accepts (a `file.write` of a large file is one line).
pub const MAX_LINE: usize = 32 << 20;

/// A call, as sent to the executor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Call {
    pub id: u64,
    pub tool: String,
    #[serde(default)]
    pub arguments: Value,
}

/// A cancel, as sent to the executor: the call ends at once (its shell killed) and is
/// answered with an error.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cancel {
    pub cancel: u64,
}

/// A line the executor reads.
#[derive(Debug, Clone, PartialEq)]
pub enum Incoming {
    Call(Call),
    Cancel(u64),
}

/// Read one line sent to the executor; a line that is no call or cancel is the error reply
/// to send (with its id when the line had one).
pub fn parse_incoming(line: &[u8]) -> Result<Incoming, Reply> {
    let value: Value = serde_json::from_slice(line)
        .map_err(|e| Reply::error(None, format!("the line is not JSON: {e}")))?;
    if value.get("cancel").is_some() {
        return serde_json::from_value::<Cancel>(value)
            .map(|c| Incoming::Cancel(c.cancel))
            .map_err(|e| {
                Reply::error(None, format!("not a cancel: {e}; send {{\"cancel\": ID}}"))
            });
    }
    let id = value.get("id").and_then(Value::as_u64);
    serde_json::from_value::<Call>(value)
        .map(Incoming::Call)
        .map_err(|e| {
            Reply::error(
                id,
                format!(
                    "not a call: {e}; send {{\"id\": N, \"tool\": NAME, \"arguments\": {{...}}}}"
                ),
            )
        })
}

/// What a call gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToolOutcome {
    /// The tool ran: its output (a shell's includes its exit code), and whether some was
    /// cut (the cut is marked in the text).
    Ok { output: String, truncated: bool },
    /// The tool could not do what was asked: why, and how to fix it where there is a fix.
    Err { error: String },
}

impl ToolOutcome {
    /// The text to give the model either way.
    pub fn text(&self) -> &str {
        match self {
            ToolOutcome::Ok { output, .. } => output,
            ToolOutcome::Err { error } => error,
        }
    }

    pub fn is_ok(&self) -> bool {
        matches!(self, ToolOutcome::Ok { .. })
    }
}

/// A line the executor writes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reply {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<u64>,
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub truncated: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Reply {
    pub fn new(id: Option<u64>, outcome: ToolOutcome) -> Reply {
        match outcome {
            ToolOutcome::Ok { output, truncated } => Reply {
                id,
                ok: true,
                output: Some(output),
                truncated: Some(truncated),
                error: None,
            },
            ToolOutcome::Err { error } => Reply::error(id, error),
        }
    }

    pub fn error(id: Option<u64>, error: String) -> Reply {
        Reply {
            id,
            ok: false,
            output: None,
            truncated: None,
            error: Some(error),
        }
    }

    pub fn outcome(self) -> ToolOutcome {
        if self.ok {
            ToolOutcome::Ok {
                output: self.output.unwrap_or_default(),
                truncated: self.truncated.unwrap_or(false),
            }
        } else {
            ToolOutcome::Err {
                error: self
                    .error
                    .unwrap_or_else(|| "the tool failed without saying why".into()),
            }
        }
    }

    /// The reply as one line (with its newline).
    pub fn line(&self) -> String {
        let mut text = serde_json::to_string(self).unwrap_or_else(|e| {
            format!("{{\"ok\":false,\"error\":\"cannot encode the reply: {e}\"}}")
        });
        text.push('\n');
        text
    }
}

/// A line read with [`read_line`].
#[derive(Debug, PartialEq, Eq)]
pub enum Line {
    /// Without its newline.
    Text(Vec<u8>),
    /// Longer than allowed; it was read to its end and dropped.
    TooLong,
}

/// The next line of at most `max` bytes, `None` at the end of the stream. A longer line is
/// consumed without being kept.
pub async fn read_line<R: AsyncBufRead + Unpin>(
    reader: &mut R,
    max: usize,
) -> std::io::Result<Option<Line>> {
    let mut line = Vec::new();
    let mut too_long = false;
    loop {
        let buf = reader.fill_buf().await?;
        if buf.is_empty() {
            return Ok(match (line.is_empty() && !too_long, too_long) {
                (true, _) => None,
                (false, true) => Some(Line::TooLong),
                (false, false) => Some(Line::Text(line)),
            });
        }
        let (chunk, done) = match buf.iter().position(|b| *b == b'\n') {
            Some(at) => (&buf[..at], at + 1),
            None => (buf, buf.len()),
        };
        let ended = done > chunk.len();
        if !too_long {
            if line.len() + chunk.len() > max {
                too_long = true;
                line = Vec::new();
            } else {
                line.extend_from_slice(chunk);
            }
        }
        reader.consume(done);
        if ended {
            return Ok(Some(if too_long {
                Line::TooLong
            } else {
                Line::Text(line)
            }));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn calls_cancels_and_bad_lines_are_told_apart() {
        assert_eq!(
            parse_incoming(br#"{"id": 3, "tool": "file.read", "arguments": {"path": "x"}}"#),
            Ok(Incoming::Call(Call {
                id: 3,
                tool: "file.read".into(),
                arguments: json!({"path": "x"})
            }))
        );
        assert_eq!(parse_incoming(br#"{"cancel": 3}"#), Ok(Incoming::Cancel(3)));
        let e = parse_incoming(b"hello").unwrap_err();
        assert_eq!(e.id, None);
        assert!(e.error.unwrap().contains("not JSON"));
        let e = parse_incoming(br#"{"id": 4, "tol": "x"}"#).unwrap_err();
        assert_eq!(e.id, Some(4));
        assert!(e.error.unwrap().contains("not a call"));
    }

    #[test]
    fn replies_have_the_documented_shape() {
        let ok = Reply::new(
            Some(1),
            ToolOutcome::Ok {
                output: "hi".into(),
                truncated: false,
            },
        );
        assert_eq!(
            serde_json::to_value(&ok).unwrap(),
            json!({"id": 1, "ok": true, "output": "hi", "truncated": false})
        );
        let err = Reply::error(Some(2), "no".into());
        assert_eq!(
            serde_json::to_value(&err).unwrap(),
            json!({"id": 2, "ok": false, "error": "no"})
        );
        assert!(ok.line().ends_with("}\n"));
        let back: Reply = serde_json::from_str(ok.line().trim_end()).unwrap();
        assert_eq!(back.outcome().text(), "hi");
        assert!(!err.outcome().is_ok());
    }

    #[tokio::test]
    async fn lines_are_bounded() {
        let input = b"short\nthis one is far too long\nlast".to_vec();
        let mut reader = tokio::io::BufReader::with_capacity(4, &input[..]);
        let mut lines = Vec::new();
        while let Some(line) = read_line(&mut reader, 10).await.unwrap() {
            lines.push(line);
        }
        assert_eq!(
            lines,
            vec![
                Line::Text(b"short".to_vec()),
                Line::TooLong,
                Line::Text(b"last".to_vec())
            ]
        );
    }
}
