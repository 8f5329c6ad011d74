//! Lines from processes kaged does not trust (plugins, ACP agents, tool executors): every
//! line is bounded, so a peer writing without a newline costs a bounded buffer, never the
//! daemon's memory.

use std::io::{BufRead, Read};

use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt};

/// One read from a peer's line protocol.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Line {
    /// A line without its newline, and how many bytes it took (newline included).
    Text(Vec<u8>, usize),
    /// A line longer than the bound: the peer broke the protocol.
    TooLong,
    /// The output ended (or cannot be read).
    End,
}

/// The next line of `reader`, at most `max` bytes.
pub(crate) async fn next_line<R: AsyncBufRead + Unpin>(reader: &mut R, max: usize) -> Line {
    let mut line = Vec::new();
    match reader
        .take(max as u64 + 1)
        .read_until(b'\n', &mut line)
        .await
    {
        Ok(0) | Err(_) => Line::End,
        Ok(_) if line.len() > max => Line::TooLong,
        Ok(n) => {
            if line.last() == Some(&b'\n') {
                line.pop();
            }
            Line::Text(line, n)
        }
    }
}

/// Longest stderr line kept for the log, in bytes; the rest of it is read and dropped.
const STDERR_LINE_BYTES: usize = 4096;

/// Hand the first `limit` lines of `stderr` (each cut to a few KiB) to `log`, then read it
/// to its end: a full pipe never stops the process. Blocking: run it on a thread of its own.
pub(crate) fn log_lines(stderr: impl std::io::Read, limit: usize, mut log: impl FnMut(&str)) {
    let mut reader = std::io::BufReader::new(stderr);
    let mut logged = 0;
    loop {
        let mut line = Vec::new();
        let Ok(n) = (&mut reader)
            .take(STDERR_LINE_BYTES as u64)
            .read_until(b'\n', &mut line)
        else {
            return;
        };
        if n == 0 {
            return;
        }
        let complete = line.last() == Some(&b'\n');
        if logged < limit {
            logged += 1;
            let text = String::from_utf8_lossy(line.strip_suffix(b"\n").unwrap_or(&line));
            log(&text);
        }
        // The rest of an overlong line is dropped without being held.
        if !complete && skip_to_newline(&mut reader).is_err() {
            return;
        }
    }
}

fn skip_to_newline(reader: &mut impl BufRead) -> std::io::Result<()> {
    loop {
        let buf = reader.fill_buf()?;
        if buf.is_empty() {
            return Ok(());
        }
        match buf.iter().position(|b| *b == b'\n') {
            Some(i) => {
                reader.consume(i + 1);
                return Ok(());
            }
            None => {
                let n = buf.len();
                reader.consume(n);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[tokio::test]
    async fn lines_are_bounded_and_counted() {
        let input = b"{\"a\":1}\n\nxxxxxxxxxx\nlast".to_vec();
        let mut reader = tokio::io::BufReader::new(&input[..]);
        assert_eq!(
            next_line(&mut reader, 8).await,
            Line::Text(b"{\"a\":1}".to_vec(), 8)
        );
        assert_eq!(next_line(&mut reader, 8).await, Line::Text(Vec::new(), 1));
        assert_eq!(next_line(&mut reader, 8).await, Line::TooLong);
    }

    #[tokio::test]
    async fn the_last_line_needs_no_newline() {
        let mut reader = tokio::io::BufReader::new(&b"last"[..]);
        assert_eq!(
            next_line(&mut reader, 8).await,
            Line::Text(b"last".to_vec(), 4)
        );
        assert_eq!(next_line(&mut reader, 8).await, Line::End);
    }

    #[test]
    fn stderr_is_logged_bounded_and_read_to_its_end() {
        let mut input = b"first\n".to_vec();
        input.extend(std::iter::repeat_n(b'x', 1 << 20));
        input.extend(b"\nthird\nfourth\n");
        let mut seen = Vec::new();
        let mut cursor = std::io::Cursor::new(input);
        log_lines(&mut cursor, 3, |l| seen.push(l.to_string()));
        assert_eq!(seen.len(), 3);
        assert_eq!(seen[0], "first");
        assert_eq!(seen[1].len(), STDERR_LINE_BYTES, "an overlong line is cut");
        assert_eq!(seen[2], "third");
        assert_eq!(
            cursor.position() as usize,
            cursor.get_ref().len(),
            "read to its end"
        );
    }
}
