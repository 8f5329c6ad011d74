//! An incremental, pure Server-Sent Events parser: bytes in any chunking → events. Lines end in
//! LF, CRLF or CR (a CR at the end of one chunk and an LF at the start of the next are one line
//! end); `data:` lines accumulate (joined by LF), `event:` names the event, `:` starts a comment,
//! a blank line dispatches. Bounded: a line or an event beyond the limits is a protocol error.

use crate::error::{LlmError, protocol};

/// One dispatched event: its `event:` name (when given) and its data lines joined by LF.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    pub event: Option<String>,
    pub data: String,
}

/// The longest line kept while waiting for its end.
pub const MAX_LINE: usize = 8 << 20;
/// The most data one event may gather.
pub const MAX_EVENT: usize = 16 << 20;

/// The parser's state between chunks.
#[derive(Debug, Default)]
pub struct SseParser {
    line: Vec<u8>,
    /// The previous chunk ended in CR: an LF first in this one belongs to that line end.
    after_cr: bool,
    /// No line seen yet (a byte-order mark may open the stream).
    started: bool,
    event: Option<String>,
    data: String,
    has_data: bool,
}

impl SseParser {
    pub fn new() -> Self {
        SseParser::default()
    }

    /// Feed the next bytes; every event they complete, in order.
    pub fn push(&mut self, bytes: &[u8]) -> Result<Vec<SseEvent>, LlmError> {
        let mut out = Vec::new();
        let mut rest = bytes;
        if self.after_cr {
            self.after_cr = false;
            if let Some(stripped) = rest.strip_prefix(b"\n") {
                rest = stripped;
            }
        }
        while let Some(end) = rest.iter().position(|b| *b == b'\n' || *b == b'\r') {
            self.extend_line(&rest[..end])?;
            let cr = rest[end] == b'\r';
            rest = &rest[end + 1..];
            if cr {
                match rest.first() {
                    Some(b'\n') => rest = &rest[1..],
                    Some(_) => {}
                    None => self.after_cr = true,
                }
            }
            let line = std::mem::take(&mut self.line);
            self.line_done(&line, &mut out)?;
        }
        self.extend_line(rest)?;
        Ok(out)
    }

    /// The stream ended. An unterminated last line was cut short and is dropped; complete
    /// data lines not yet followed by a blank line still make an event (`data: [DONE]\n`
    /// at the very end counts).
    pub fn finish(&mut self) -> Result<Vec<SseEvent>, LlmError> {
        let mut out = Vec::new();
        self.line.clear();
        self.after_cr = false;
        self.line_done(b"", &mut out)?;
        Ok(out)
    }

    fn extend_line(&mut self, bytes: &[u8]) -> Result<(), LlmError> {
        if self.line.len() + bytes.len() > MAX_LINE {
            let head = String::from_utf8_lossy(&self.line[..self.line.len().min(200)]).into_owned();
            return Err(protocol("a line longer than 8 MiB", &head));
        }
        self.line.extend_from_slice(bytes);
        Ok(())
    }

    fn line_done(&mut self, raw: &[u8], out: &mut Vec<SseEvent>) -> Result<(), LlmError> {
        let mut raw = raw;
        if !self.started {
            self.started = true;
            raw = raw.strip_prefix("\u{feff}".as_bytes()).unwrap_or(raw);
        }
        let line = std::str::from_utf8(raw)
            .map_err(|_| protocol("a line that is not UTF-8", &String::from_utf8_lossy(raw)))?;
        if line.is_empty() {
            if self.has_data {
                let mut data = std::mem::take(&mut self.data);
                data.pop(); // the LF after the last data line
                out.push(SseEvent {
                    event: self.event.take(),
                    data,
                });
            }
            self.event = None;
            self.has_data = false;
            return Ok(());
        }
        if line.starts_with(':') {
            return Ok(()); // a comment (keep-alive)
        }
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line, ""),
        };
        match field {
            "event" => self.event = Some(value.to_string()),
            "data" => {
                if self.data.len() + value.len() + 1 > MAX_EVENT {
                    return Err(protocol("an event with more than 16 MiB of data", line));
                }
                self.data.push_str(value);
                self.data.push('\n');
                self.has_data = true;
            }
            _ => {} // id, retry and unknown fields mean nothing here
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STREAM: &str = "\u{feff}: hello\r\nevent: first\ndata: one\ndata:two\r\n\r\nid: 7\nretry: 10\ndata: {\"a\": \"é\"}\r\rdata\n\nevent: ignored-without-data\n\nevent: last\ndata: end\n";

    fn expected() -> Vec<SseEvent> {
        let e = |event: Option<&str>, data: &str| SseEvent {
            event: event.map(str::to_string),
            data: data.to_string(),
        };
        vec![
            e(Some("first"), "one\ntwo"),
            e(None, "{\"a\": \"é\"}"),
            e(None, ""),
            e(Some("last"), "end"),
        ]
    }

    fn parse_in(pieces: &[&[u8]]) -> Vec<SseEvent> {
        let mut p = SseParser::new();
        let mut out = Vec::new();
        for piece in pieces {
            out.extend(p.push(piece).unwrap());
        }
        out.extend(p.finish().unwrap());
        out
    }

    #[test]
    fn a_stream_parses_the_same_in_one_piece_byte_by_byte_and_in_random_splits() {
        let bytes = STREAM.as_bytes();
        assert_eq!(parse_in(&[bytes]), expected());
        let singles: Vec<&[u8]> = bytes.chunks(1).collect();
        assert_eq!(parse_in(&singles), expected());
        let mut seed = 0x2545_f491_u64;
        for _ in 0..500 {
            let mut pieces = Vec::new();
            let mut at = 0;
            while at < bytes.len() {
                seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
                let n = 1 + (seed >> 33) as usize % 9;
                let end = (at + n).min(bytes.len());
                pieces.push(&bytes[at..end]);
                at = end;
            }
            assert_eq!(parse_in(&pieces), expected(), "{pieces:?}");
        }
    }

    #[test]
    fn a_cr_at_a_chunk_end_and_lf_at_the_next_start_are_one_line_end() {
        assert_eq!(
            parse_in(&[b"data: a\r", b"\n\r", b"\ndata: b\r", b"\r"]),
            vec![
                SseEvent {
                    event: None,
                    data: "a".into()
                },
                SseEvent {
                    event: None,
                    data: "b".into()
                },
            ]
        );
    }

    #[test]
    fn a_line_cut_short_at_the_end_is_dropped() {
        assert_eq!(
            parse_in(&[b"data: a\n\ndata: {\"trunc"]),
            vec![SseEvent {
                event: None,
                data: "a".into()
            }]
        );
    }

    #[test]
    fn bad_bytes_and_huge_lines_are_protocol_errors() {
        let mut p = SseParser::new();
        assert!(matches!(
            p.push(b"data: \xff\xfe\n"),
            Err(LlmError::Protocol(_))
        ));
        let mut p = SseParser::new();
        let big = vec![b'a'; MAX_LINE + 1];
        match p.push(&big) {
            Err(LlmError::Protocol(m)) => assert!(m.len() < 400, "{m}"),
            other => panic!("{other:?}"),
        }
    }
}
