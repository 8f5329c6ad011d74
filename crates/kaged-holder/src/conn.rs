//! One client connection of a holder: non-blocking reads into a frame decoder, queued writes
//! the poll loop flushes, and where its output stream stands. Never blocks the holder.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;

use kaged_session::holder::{Decoder, Step, ToClient, ToHolder};

/// Bytes read from a client at once.
const READ_BYTES: usize = 64 * 1024;
/// A client that lets more than this queue up unread is dropped.
const MAX_QUEUED: usize = 4 << 20;

pub(crate) struct Conn {
    stream: UnixStream,
    decoder: Decoder,
    out: Vec<u8>,
    sent: usize,
    /// Got its Hello (accepted or refused).
    pub greeted: bool,
    /// The version agreed, `None` before Hello or when refused (then only the frozen frames).
    pub version: Option<u32>,
    /// Streaming from here (the next offset to send), when attached.
    pub cursor: Option<u64>,
    pub eof_sent: bool,
    pub exit_sent: bool,
    pub acked: bool,
    pub closed: bool,
}

/// What reading a connection gave.
pub(crate) enum Got {
    Frame(ToHolder),
    /// A frame that was not understood: answered with an Error, the connection goes on
    /// (or not, when `fatal`).
    Bad {
        code: String,
        message: String,
        fatal: bool,
    },
}

impl Conn {
    pub fn new(stream: UnixStream) -> std::io::Result<Conn> {
        stream.set_nonblocking(true)?;
        Ok(Conn {
            stream,
            decoder: Decoder::new(),
            out: Vec::new(),
            sent: 0,
            greeted: false,
            version: None,
            cursor: None,
            eof_sent: false,
            exit_sent: false,
            acked: false,
            closed: false,
        })
    }

    pub fn fd(&self) -> std::os::fd::BorrowedFd<'_> {
        std::os::fd::AsFd::as_fd(&self.stream)
    }

    /// Queue a frame.
    pub fn send(&mut self, frame: &ToClient) {
        if self.closed {
            return;
        }
        self.out.extend_from_slice(&frame.encode());
        if self.out.len() - self.sent > MAX_QUEUED {
            self.closed = true;
        }
    }

    /// Whether frames are queued.
    pub fn wants_write(&self) -> bool {
        !self.closed && self.sent < self.out.len()
    }

    /// Whether nothing is queued (so the next Output may be made).
    pub fn idle(&self) -> bool {
        self.sent >= self.out.len()
    }

    /// Write what the socket takes now.
    pub fn flush(&mut self) {
        while self.wants_write() {
            match self.stream.write(&self.out[self.sent..]) {
                Ok(0) => self.closed = true,
                Ok(n) => self.sent += n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => self.closed = true,
            }
        }
        if self.sent >= self.out.len() {
            self.out.clear();
            self.sent = 0;
        }
    }

    /// Read what is there and return the frames it completed.
    pub fn read(&mut self) -> Vec<Got> {
        let mut buf = vec![0u8; READ_BYTES];
        match self.stream.read(&mut buf) {
            Ok(0) => self.closed = true,
            Ok(n) => self.decoder.push(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted
                ) => {}
            Err(_) => self.closed = true,
        }
        let mut got = Vec::new();
        loop {
            match self.decoder.next_to_holder() {
                Step::Incomplete => break,
                Step::Frame(f) => got.push(Got::Frame(f)),
                Step::Error(e) => {
                    let fatal = e.is_fatal();
                    got.push(Got::Bad {
                        code: e.code().into(),
                        message: e.to_string(),
                        fatal,
                    });
                    if fatal {
                        break;
                    }
                }
            }
        }
        got
    }
}
