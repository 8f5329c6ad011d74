//! Transcript files: the files themselves are `kaged_holder::transcript` (written by the run,
//! read by offset, measured, removed); here they are streamed as an answer body.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, Seek, SeekFrom};
use std::path::Path;

pub(crate) use kaged_holder::transcript::{Writer, disk_bytes, pieces, read, remove};

/// A transcript range as an answer body.
pub(crate) struct Streamed {
    pub body: axum::body::Body,
    /// The kept bytes the body carries.
    pub length: u64,
    /// The offsets of the range the cap dropped (the body leaves them out).
    pub dropped: Option<(u64, u64)>,
}

/// Output `[start, end)` as a streamed body of the kept bytes. The files are opened before
/// the answer starts, so a segment the run deletes meanwhile still streams.
pub(crate) fn stream(head: &Path, start: u64, end: u64) -> io::Result<Streamed> {
    let (pieces, files) = pieces(head)?;
    let mut queue = VecDeque::new();
    let mut length = 0;
    for r in pieces.reads(start, end) {
        let mut f = File::open(&files[r.index])?;
        f.seek(SeekFrom::Start(r.within))?;
        length += r.len;
        queue.push_back((tokio::fs::File::from_std(f), r.len));
    }
    let dropped = pieces
        .dropped()
        .filter(|(from, to)| *from < end && start < *to);
    let body = futures_util::stream::unfold(queue, |mut queue| async move {
        use tokio::io::AsyncReadExt;
        loop {
            let (file, remaining) = queue.front_mut()?;
            if *remaining == 0 {
                queue.pop_front();
                continue;
            }
            let want = usize::try_from(*remaining)
                .unwrap_or(usize::MAX)
                .min(STREAM_CHUNK);
            let mut buf = vec![0u8; want];
            return match file.read(&mut buf).await {
                Ok(0) => {
                    queue.clear();
                    Some((
                        Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "the transcript is shorter than when the answer began",
                        )),
                        queue,
                    ))
                }
                Ok(n) => {
                    buf.truncate(n);
                    *remaining -= n as u64;
                    Some((Ok(axum::body::Bytes::from(buf)), queue))
                }
                Err(e) => {
                    queue.clear();
                    Some((Err(e), queue))
                }
            };
        }
    });
    Ok(Streamed {
        body: axum::body::Body::from_stream(body),
        length,
        dropped,
    })
}

/// Bytes read at once while streaming a transcript.
const STREAM_CHUNK: usize = 64 * 1024;
