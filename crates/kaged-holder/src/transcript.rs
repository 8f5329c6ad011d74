//! Transcript files: written capped (`kaged_session::retention::Cap`), read by output offset,
//! measured and removed. Written by a run holder, read by the daemon (which also streams
//! them: kaged-server's `sessions/transcript.rs`).
//!
//! Layout, for session `ID` in the transcripts directory:
//! - `ID.out`: the output from offset 0. Uncapped (and for runs of earlier versions) it is
//!   the whole output; capped it holds the first `Cap::head` bytes.
//! - `ID.tail/OFFSET`: present once the output outgrew the head: segments of the newest
//!   bytes, each named by the output offset of its first byte (20 digits). The oldest are
//!   deleted as new ones fill, so the output between the head and the first segment is what
//!   the cap dropped. Every kept byte keeps its offset.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use kaged_session::retention::{Cap, Pieces};

/// The directory of the tail segments of the transcript whose head is `head`.
pub fn tail_dir(head: &Path) -> PathBuf {
    head.with_extension("tail")
}

fn segment_name(start: u64) -> String {
    format!("{start:020}")
}

/// Writes one run's transcript, capped.
pub struct Writer {
    head: File,
    head_path: PathBuf,
    cap: Cap,
    /// The output's length so far.
    written: u64,
    /// Kept tail segments, oldest first: (output offset, length).
    segments: VecDeque<(u64, u64)>,
    current: Option<File>,
}

/// A new file at `path` to append to, 0600 (refused when it exists: never a link followed).
pub fn create_private(path: &Path) -> io::Result<File> {
    std::fs::OpenOptions::new()
        .append(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
}

impl Writer {
    /// A new, empty transcript at `head` (0600; refused when it exists).
    pub fn create(head: &Path, cap: Cap) -> io::Result<Writer> {
        let file = create_private(head)?;
        Ok(Writer {
            head: file,
            head_path: head.to_path_buf(),
            cap,
            written: 0,
            segments: VecDeque::new(),
            current: None,
        })
    }

    /// The transcript at `head` that the daemon created empty (0600) before the run: a
    /// non-empty one is refused, so no byte is ever numbered twice.
    pub fn open_empty(head: &Path, cap: Cap) -> io::Result<Writer> {
        let file = std::fs::OpenOptions::new().append(true).open(head)?;
        if file.metadata()?.len() != 0 || tail_dir(head).exists() {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("the transcript {} is not empty", head.display()),
            ));
        }
        Ok(Writer {
            head: file,
            head_path: head.to_path_buf(),
            cap,
            written: 0,
            segments: VecDeque::new(),
            current: None,
        })
    }

    /// Append output: into the head while it has room, then into the newest segment;
    /// segments the tail no longer has room for are deleted, oldest first.
    pub fn write_all(&mut self, mut chunk: &[u8]) -> io::Result<()> {
        if self.written < self.cap.head {
            let n = usize::try_from(self.cap.head - self.written)
                .unwrap_or(usize::MAX)
                .min(chunk.len());
            self.head.write_all(&chunk[..n])?;
            self.written += n as u64;
            chunk = &chunk[n..];
        }
        while !chunk.is_empty() {
            let room = match (self.segments.back(), &self.current) {
                (Some(&(_, len)), Some(_)) if len < self.cap.segment => self.cap.segment - len,
                _ => {
                    self.open_segment()?;
                    self.cap.segment
                }
            };
            let n = usize::try_from(room).unwrap_or(usize::MAX).min(chunk.len());
            if let Some(f) = self.current.as_mut() {
                f.write_all(&chunk[..n])?;
            }
            if let Some(last) = self.segments.back_mut() {
                last.1 += n as u64;
            }
            self.written += n as u64;
            chunk = &chunk[n..];
            self.evict();
        }
        Ok(())
    }

    fn open_segment(&mut self) -> io::Result<()> {
        let dir = tail_dir(&self.head_path);
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)?;
        let file = create_private(&dir.join(segment_name(self.written)))?;
        self.current = Some(file);
        self.segments.push_back((self.written, 0));
        Ok(())
    }

    fn evict(&mut self) {
        let lens: Vec<u64> = self.segments.iter().map(|(_, l)| *l).collect();
        let dir = tail_dir(&self.head_path);
        for _ in 0..self.cap.evict(&lens) {
            if let Some((start, _)) = self.segments.pop_front() {
                // A reader that has it open keeps reading; a later one skips to the next.
                let _ = std::fs::remove_file(dir.join(segment_name(start)));
            }
        }
    }

    /// The output range the cap dropped so far.
    pub fn dropped(&self) -> Option<(u64, u64)> {
        self.segments
            .front()
            .filter(|(start, _)| *start > self.cap.head)
            .map(|(start, _)| (self.cap.head, *start))
    }

    /// The output's length so far.
    pub fn written(&self) -> u64 {
        self.written
    }
}

/// The pieces of the transcript at `head` and their files (none when it was removed).
pub fn pieces(head: &Path) -> io::Result<(Pieces, Vec<PathBuf>)> {
    let mut pieces = Vec::new();
    let mut files = Vec::new();
    match std::fs::metadata(head) {
        Ok(m) => {
            pieces.push((0, m.len()));
            files.push(head.to_path_buf());
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok((Pieces::default(), files)),
        Err(e) => return Err(e),
    }
    let dir = tail_dir(head);
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok((Pieces(pieces), files)),
        Err(e) => return Err(e),
    };
    let mut segments = Vec::new();
    for entry in entries {
        let entry = entry?;
        let Some(start) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u64>().ok())
        else {
            continue;
        };
        match entry.metadata() {
            Ok(m) => segments.push((start, m.len(), entry.path())),
            // Deleted since the listing: dropped.
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    segments.sort_by_key(|(start, _, _)| *start);
    for (start, len, path) in segments {
        pieces.push((start, len));
        files.push(path);
    }
    Ok((Pieces(pieces), files))
}

/// Kept output from `start` (or the first kept offset after it) up to `end`: at most `max`
/// bytes, returned with the offset they start at. Empty when nothing is kept in the range.
pub fn read(head: &Path, start: u64, end: u64, max: usize) -> io::Result<(u64, Vec<u8>)> {
    // A segment deleted between the listing and the read: list again (once is enough for a
    // reader that is not absurdly slow; a second miss is reported).
    for attempt in 0..2 {
        match read_once(head, start, end, max) {
            Err(e) if e.kind() == io::ErrorKind::NotFound && attempt == 0 => continue,
            other => return other,
        }
    }
    Ok((start, Vec::new()))
}

fn read_once(head: &Path, start: u64, end: u64, max: usize) -> io::Result<(u64, Vec<u8>)> {
    let (pieces, files) = pieces(head)?;
    let Some(first) = pieces.reads(start, end).first().copied() else {
        return Ok((start, Vec::new()));
    };
    let at = first.at;
    let upto = end.min(at.saturating_add(max as u64));
    let mut out = Vec::new();
    for r in pieces.reads(at, upto) {
        // Only contiguous bytes: a frame never spans a dropped range.
        if r.at != at + out.len() as u64 {
            break;
        }
        let mut f = File::open(&files[r.index])?;
        f.seek(SeekFrom::Start(r.within))?;
        f.take(r.len).read_to_end(&mut out)?;
    }
    Ok((at, out))
}

/// Bytes the transcript at `head` takes on disk (0 when it is gone).
pub fn disk_bytes(head: &Path) -> u64 {
    pieces(head).map_or(0, |(p, _)| p.kept())
}

/// Delete the transcript at `head`, its tail included.
pub fn remove(head: &Path) -> io::Result<()> {
    match std::fs::remove_dir_all(tail_dir(head)) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    match std::fs::remove_file(head) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flood(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i % 251) as u8).collect()
    }

    #[test]
    fn a_capped_transcript_keeps_head_and_newest_bytes_at_their_offsets() {
        let dir = tempfile::tempdir().unwrap();
        let head = dir.path().join("s.out");
        let cap = Cap::of(1000); // head 250, tail 750, segments of 187
        let mut w = Writer::create(&head, cap).unwrap();
        let data = flood(10_000);
        for chunk in data.chunks(333) {
            w.write_all(chunk).unwrap();
        }
        assert_eq!(w.written(), 10_000);
        let (p, _) = pieces(&head).unwrap();
        assert_eq!(p.end(), 10_000);
        assert!(p.kept() <= 1000, "{} bytes kept", p.kept());
        assert!(p.kept() >= 250 + 750 - 187, "{} bytes kept", p.kept());
        let dropped = p.dropped().unwrap();
        assert_eq!(Some(dropped), w.dropped());
        assert_eq!(dropped.0, 250);
        // The head reads as written.
        let (at, bytes) = read(&head, 0, 10_000, 100_000).unwrap();
        assert_eq!((at, bytes.as_slice()), (0, &data[..250]));
        // A read inside the dropped range starts at the first kept byte after it, and every
        // kept byte is the output's byte at that offset.
        let (at, bytes) = read(&head, 300, 10_000, 100_000).unwrap();
        assert_eq!(at, dropped.1);
        assert_eq!(bytes.as_slice(), &data[at as usize..]);
        assert_eq!(disk_bytes(&head), p.kept());
        remove(&head).unwrap();
        assert!(!head.exists() && !tail_dir(&head).exists());
        assert_eq!(disk_bytes(&head), 0);
        assert_eq!(read(&head, 0, 10, 10).unwrap(), (0, Vec::new()));
    }

    #[test]
    fn an_output_under_the_head_is_one_plain_file() {
        let dir = tempfile::tempdir().unwrap();
        let head = dir.path().join("s.out");
        let mut w = Writer::create(&head, Cap::of(1 << 20)).unwrap();
        w.write_all(b"hello world").unwrap();
        assert_eq!(std::fs::read(&head).unwrap(), b"hello world");
        assert!(!tail_dir(&head).exists());
        assert_eq!(w.dropped(), None);
        assert_eq!(read(&head, 6, 11, 64).unwrap(), (6, b"world".to_vec()));
    }
}
