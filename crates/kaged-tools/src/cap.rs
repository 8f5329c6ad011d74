//! Bounded output: a command's stream keeps its head and its tail ([`HeadTail`]); a listing
//! keeps its first entries ([`cap_lines`]). Whatever is cut is said in the text itself, so
//! the model knows it saw only part.

use std::collections::VecDeque;

/// How much of a command's output is kept: this many bytes from its start and as many from
/// its end (64 KiB in all).
pub const KEEP_EACH_END: usize = 32 * 1024;

/// Collects a stream of bytes of any length in bounded memory: the first `head` bytes and
/// the last `tail` bytes, and how many were seen.
#[derive(Debug)]
pub struct HeadTail {
    head_max: usize,
    tail_max: usize,
    head: Vec<u8>,
    tail: VecDeque<u8>,
    seen: u64,
}

impl HeadTail {
    pub fn new(head: usize, tail: usize) -> HeadTail {
        HeadTail {
            head_max: head,
            tail_max: tail,
            head: Vec::new(),
            tail: VecDeque::new(),
            seen: 0,
        }
    }

    pub fn push(&mut self, mut bytes: &[u8]) {
        self.seen += bytes.len() as u64;
        let room = self.head_max - self.head.len();
        let to_head = room.min(bytes.len());
        self.head.extend_from_slice(&bytes[..to_head]);
        bytes = &bytes[to_head..];
        if bytes.len() >= self.tail_max {
            self.tail.clear();
            self.tail
                .extend(bytes[bytes.len() - self.tail_max..].iter().copied());
            return;
        }
        let overflow = (self.tail.len() + bytes.len()).saturating_sub(self.tail_max);
        self.tail.drain(..overflow);
        self.tail.extend(bytes.iter().copied());
    }

    /// Bytes seen in all.
    #[cfg(test)]
    pub fn seen(&self) -> u64 {
        self.seen
    }

    /// What the tail holds as text, from the first whole character on (invalid UTF-8
    /// replaced), and whether anything before it was cut. For a collector with no head
    /// (`HeadTail::new(0, n)`): the last `n` bytes of a stream, read as often as wanted.
    pub fn tail_text(&self) -> (String, bool) {
        let cut = self.seen > (self.head.len() + self.tail.len()) as u64;
        let mut bytes: Vec<u8> = self.tail.iter().copied().collect();
        if cut {
            // A character cut at its start is dropped whole (UTF-8 continuation bytes).
            let start = bytes
                .iter()
                .take(3)
                .take_while(|b| **b & 0xC0 == 0x80)
                .count();
            bytes.drain(..start);
        }
        let head = String::from_utf8_lossy(&self.head);
        (head.into_owned() + &String::from_utf8_lossy(&bytes), cut)
    }

    /// The text (invalid UTF-8 replaced), and whether anything was cut. A cut is marked
    /// where it is, with how many bytes are missing.
    pub fn finish(self) -> (String, bool) {
        let kept = (self.head.len() + self.tail.len()) as u64;
        let head = String::from_utf8_lossy(&self.head).into_owned();
        let tail: Vec<u8> = self.tail.into_iter().collect();
        let tail = String::from_utf8_lossy(&tail);
        if kept == self.seen {
            return (head + &tail, false);
        }
        let cut = self.seen - kept;
        let mut text = head;
        if !text.ends_with('\n') {
            text.push('\n');
        }
        text.push_str(&format!(
            "[... {cut} bytes of output cut here: only the first and last {} KiB are kept ...]\n",
            self.head_max / 1024
        ));
        text.push_str(&tail);
        (text, true)
    }
}

/// At most `max` lines of `lines`, then a line saying how many more there were and `hint`.
pub fn cap_lines(lines: Vec<String>, max: usize, hint: &str) -> (String, bool) {
    let total = lines.len();
    let mut text = lines.into_iter().take(max).collect::<Vec<_>>().join("\n");
    if total > max {
        text.push_str(&format!(
            "\n[... {} more not shown: {hint} ...]",
            total - max
        ));
    }
    (text, total > max)
}

/// `line` cut to `max` characters (on a character boundary), marked when cut.
pub fn cap_line(line: &str, max: usize) -> String {
    match line.char_indices().nth(max) {
        Some((at, _)) => format!("{}[... line cut]", &line[..at]),
        None => line.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_output_is_kept_whole() {
        let mut c = HeadTail::new(8, 8);
        c.push(b"hello ");
        c.push(b"world");
        assert_eq!(c.finish(), ("hello world".to_string(), false));
        let mut c = HeadTail::new(8, 8);
        c.push(&[b'x'; 16]);
        assert_eq!(c.finish(), ("x".repeat(16), false));
    }

    #[test]
    fn long_output_keeps_head_and_tail_and_says_what_was_cut() {
        let mut c = HeadTail::new(4, 4);
        for chunk in [b"abc".as_slice(), b"defgh", b"ijklmnop", b"qr", b"st"] {
            c.push(chunk);
        }
        assert_eq!(c.seen(), 20);
        let (text, cut) = c.finish();
        assert!(cut);
        assert!(text.starts_with("abcd\n[... 12 bytes"), "{text}");
        assert!(text.ends_with("qrst"), "{text}");
    }

    #[test]
    fn one_huge_chunk_is_bounded() {
        let mut c = HeadTail::new(1024, 1024);
        let mut big = vec![b'a'; 10 << 20];
        big.extend_from_slice(b"THE END");
        c.push(&big);
        let (text, cut) = c.finish();
        assert!(cut);
        assert!(text.len() < 3000, "{}", text.len());
        assert!(text.ends_with("THE END"));
    }

    #[test]
    fn a_cut_through_a_character_does_not_panic() {
        let mut c = HeadTail::new(1, 1);
        c.push("ééé".as_bytes());
        let (text, cut) = c.finish();
        assert!(cut);
        assert!(text.contains('\u{FFFD}'), "{text}");
    }

    #[test]
    fn a_tail_alone_keeps_the_last_bytes_from_a_whole_character() {
        let mut c = HeadTail::new(0, 4);
        c.push(b"ab");
        assert_eq!(c.tail_text(), ("ab".to_string(), false));
        c.push("é".as_bytes());
        assert_eq!(c.tail_text(), ("abé".to_string(), false));
        c.push(b"z");
        assert_eq!(c.tail_text(), ("béz".to_string(), true));
        c.push(b"w");
        assert_eq!(c.tail_text(), ("ézw".to_string(), true));
        // The last 4 bytes start inside 'é': it is dropped, not garbled.
        c.push(b"v");
        assert_eq!(c.tail_text(), ("zwv".to_string(), true));
    }

    #[test]
    fn listings_and_lines_are_capped() {
        let lines: Vec<String> = (0..5).map(|i| i.to_string()).collect();
        assert_eq!(
            cap_lines(lines.clone(), 5, "h"),
            ("0\n1\n2\n3\n4".into(), false)
        );
        let (text, cut) = cap_lines(lines, 2, "narrow it");
        assert!(cut);
        assert_eq!(text, "0\n1\n[... 3 more not shown: narrow it ...]");
        assert_eq!(cap_line("abcdef", 3), "abc[... line cut]");
        assert_eq!(cap_line("éé", 2), "éé");
    }
}
