//! The run holder's socket protocol, decided without I/O (docs/holder-protocol.md): frames
//! `[type u8][len u32 BE][payload]`, an incremental [`Decoder`], the messages each way, the
//! version handshake ([`negotiate`]), what a holder is started with ([`HolderSpec`]) and what
//! it leaves when its run ended ([`StatusFile`]).
//!
//! Frozen forever, so any daemon can list and kill any holder: the frame layout, `Hello`
//! (0x00, both ways), `Signal` (0x20), `Kill` (0x21), `Detach` (0x22), `Done` (0x05) and
//! `Error` (0x7f). Every other frame belongs to a protocol version; fields are only added,
//! and unknown fields are ignored.

use serde::{Deserialize, Serialize};

use crate::retention::Cap;

/// The protocol version this build speaks best.
pub const PROTOCOL: u32 = 1;
/// The versions this build speaks (it will be `[PROTOCOL - 1, PROTOCOL]`).
pub const SUPPORTED: &[u32] = &[PROTOCOL];
/// Bytes before a frame's payload: type and length.
pub const HEADER: usize = 5;
/// The largest payload accepted (and sent).
pub const MAX_PAYLOAD: usize = 1 << 20;
/// The most output bytes one Output frame carries (the payload adds an 8-byte offset).
pub const MAX_OUTPUT: usize = MAX_PAYLOAD - 8;

/// Frame types. Those marked frozen never change meaning.
pub mod kind {
    /// Frozen: the first frame each way.
    pub const HELLO: u8 = 0x00;
    pub const OUTPUT: u8 = 0x01;
    pub const EOF: u8 = 0x02;
    pub const LIMIT: u8 = 0x03;
    pub const EXIT: u8 = 0x04;
    /// Frozen: the answer to Signal and Kill.
    pub const DONE: u8 = 0x05;
    pub const ATTACH: u8 = 0x10;
    pub const INPUT: u8 = 0x11;
    pub const RESIZE: u8 = 0x12;
    /// The client's note for a later client (a run on pipes: how far its protocol was handled).
    pub const NOTE: u8 = 0x13;
    /// Frozen.
    pub const SIGNAL: u8 = 0x20;
    /// Frozen.
    pub const KILL: u8 = 0x21;
    /// Frozen.
    pub const DETACH: u8 = 0x22;
    pub const ACK_EXIT: u8 = 0x23;
    /// Frozen.
    pub const ERROR: u8 = 0x7f;
}

/// Stable codes of Error frames.
pub mod error_code {
    /// The frame type is unknown (to this version).
    pub const UNKNOWN_TYPE: &str = "unknown_type";
    /// The payload does not parse.
    pub const BAD_FRAME: &str = "bad_frame";
    /// The frame is valid but not now (before Hello, Hello twice, ...).
    pub const OUT_OF_ORDER: &str = "out_of_order";
    /// The holder could not do what was asked.
    pub const FAILED: &str = "failed";
    /// Input refused: the pending buffer is full or the terminal closed.
    pub const INPUT_REFUSED: &str = "input_refused";
}

/// A frame that cannot be taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HolderFrameError {
    /// Fatal: the stream cannot be resynchronised, the connection ends.
    #[error("frame of {len} bytes is over the limit of {MAX_PAYLOAD}")]
    TooLarge { len: u64 },
    #[error("unknown frame type 0x{0:02x}")]
    UnknownType(u8),
    #[error("bad frame 0x{kind:02x}: {message}")]
    Bad { kind: u8, message: String },
}

impl HolderFrameError {
    /// Whether the connection must end (the next frame boundary is unknown).
    pub fn is_fatal(&self) -> bool {
        matches!(self, HolderFrameError::TooLarge { .. })
    }

    /// The stable code for an Error frame.
    pub fn code(&self) -> &'static str {
        match self {
            HolderFrameError::UnknownType(_) => error_code::UNKNOWN_TYPE,
            _ => error_code::BAD_FRAME,
        }
    }
}

/// What a decoder has next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step<T> {
    /// More bytes are needed.
    Incomplete,
    Frame(T),
    /// A frame was consumed but not understood (or, when fatal, the stream is broken).
    Error(HolderFrameError),
}

/// One frame, not yet interpreted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawFrame {
    pub kind: u8,
    pub payload: Vec<u8>,
}

/// A whole frame at the start of a buffer: `(kind, payload, bytes used)`.
pub type Split<'a> = (u8, &'a [u8], usize);

/// The frame at the start of `buf`, `Ok(None)` when incomplete.
pub fn split(buf: &[u8]) -> Result<Option<Split<'_>>, HolderFrameError> {
    if buf.len() < HEADER {
        return Ok(None);
    }
    let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]);
    if len as usize > MAX_PAYLOAD {
        return Err(HolderFrameError::TooLarge { len: len.into() });
    }
    let end = HEADER + len as usize;
    if buf.len() < end {
        return Ok(None);
    }
    Ok(Some((buf[0], &buf[HEADER..end], end)))
}

/// Frames out of a byte stream read in arbitrary pieces.
#[derive(Debug, Default)]
pub struct Decoder {
    buf: Vec<u8>,
    start: usize,
    broken: Option<HolderFrameError>,
}

impl Decoder {
    pub fn new() -> Decoder {
        Decoder::default()
    }

    /// Bytes as read from the socket.
    pub fn push(&mut self, bytes: &[u8]) {
        if self.start > 0 && self.start * 2 >= self.buf.len() {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes held that are not a whole frame yet.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.start
    }

    /// The next whole frame. After a fatal error every call returns it again.
    pub fn next_raw(&mut self) -> Step<RawFrame> {
        if let Some(e) = &self.broken {
            return Step::Error(e.clone());
        }
        match split(&self.buf[self.start..]) {
            Ok(None) => Step::Incomplete,
            Ok(Some((kind, payload, used))) => {
                let frame = RawFrame {
                    kind,
                    payload: payload.to_vec(),
                };
                self.start += used;
                Step::Frame(frame)
            }
            Err(e) => {
                self.broken = Some(e.clone());
                Step::Error(e)
            }
        }
    }

    /// The next frame a holder receives.
    pub fn next_to_holder(&mut self) -> Step<ToHolder> {
        match self.next_raw() {
            Step::Frame(raw) => match ToHolder::parse(raw.kind, &raw.payload) {
                Ok(f) => Step::Frame(f),
                Err(e) => Step::Error(e),
            },
            Step::Incomplete => Step::Incomplete,
            Step::Error(e) => Step::Error(e),
        }
    }

    /// The next frame a client receives.
    pub fn next_to_client(&mut self) -> Step<ToClient> {
        match self.next_raw() {
            Step::Frame(raw) => match ToClient::parse(raw.kind, &raw.payload) {
                Ok(f) => Step::Frame(f),
                Err(e) => Step::Error(e),
            },
            Step::Incomplete => Step::Incomplete,
            Step::Error(e) => Step::Error(e),
        }
    }
}

/// `[kind][len][payload]`. A payload over [`MAX_PAYLOAD`] is the caller's bug; it is cut.
pub fn encode(kind: u8, payload: &[u8]) -> Vec<u8> {
    let payload = &payload[..payload.len().min(MAX_PAYLOAD)];
    let mut out = Vec::with_capacity(HEADER + payload.len());
    out.push(kind);
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(payload);
    out
}

fn json<T: Serialize>(kind: u8, value: &T) -> Vec<u8> {
    // Serialising these plain structs cannot fail; an empty object is the harmless fallback.
    encode(
        kind,
        &serde_json::to_vec(value).unwrap_or_else(|_| b"{}".to_vec()),
    )
}

fn parse_json<T: for<'de> Deserialize<'de>>(
    kind: u8,
    payload: &[u8],
) -> Result<T, HolderFrameError> {
    serde_json::from_slice(payload).map_err(|e| HolderFrameError::Bad {
        kind,
        message: e.to_string(),
    })
}

fn empty(kind: u8, payload: &[u8]) -> Result<(), HolderFrameError> {
    if payload.is_empty() {
        Ok(())
    } else {
        Err(HolderFrameError::Bad {
            kind,
            message: format!("expected no payload, got {} bytes", payload.len()),
        })
    }
}

/// A signal a client may send to every process of the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SignalName {
    HUP,
    TERM,
    INT,
    CONT,
}

/// The client's Hello.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientHello {
    /// Every protocol version the client speaks.
    pub versions: Vec<u32>,
    /// Who it is, for logs (`kaged 0.1.0`).
    #[serde(default)]
    pub client: String,
}

/// Frames a holder receives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToHolder {
    Hello(ClientHello),
    /// Stream output from this offset (a new Attach replaces the old one).
    Attach {
        from: u64,
    },
    Input(Vec<u8>),
    Resize {
        rows: u16,
        cols: u16,
    },
    Signal {
        sig: SignalName,
    },
    /// Kill the run now; `by` is recorded as `killed_by`.
    Kill {
        by: String,
    },
    /// Stop streaming; the run goes on.
    Detach,
    /// The end is stored: the holder may exit.
    AckExit,
    /// Keep this text (at most [`MAX_NOTE`] bytes) for the next client, which gets it in the
    /// Hello answer (`note`): what a client must know to take the run up where it left it.
    /// The holder never reads it.
    Note(String),
}

/// The longest note a holder keeps.
pub const MAX_NOTE: usize = 64 * 1024;

#[derive(Serialize, Deserialize)]
struct AttachBody {
    from: u64,
}
#[derive(Serialize, Deserialize)]
struct ResizeBody {
    rows: u16,
    cols: u16,
}
#[derive(Serialize, Deserialize)]
struct SignalBody {
    sig: SignalName,
}
#[derive(Serialize, Deserialize)]
struct ByBody {
    by: String,
}
#[derive(Serialize, Deserialize)]
struct DoneBody {
    n: u64,
}
#[derive(Serialize, Deserialize)]
struct ErrorBody {
    code: String,
    message: String,
}

impl ToHolder {
    pub fn encode(&self) -> Vec<u8> {
        match self {
            ToHolder::Hello(h) => json(kind::HELLO, h),
            ToHolder::Attach { from } => json(kind::ATTACH, &AttachBody { from: *from }),
            ToHolder::Input(bytes) => encode(kind::INPUT, bytes),
            ToHolder::Resize { rows, cols } => json(
                kind::RESIZE,
                &ResizeBody {
                    rows: *rows,
                    cols: *cols,
                },
            ),
            ToHolder::Signal { sig } => json(kind::SIGNAL, &SignalBody { sig: *sig }),
            ToHolder::Kill { by } => json(kind::KILL, &ByBody { by: by.clone() }),
            ToHolder::Detach => encode(kind::DETACH, &[]),
            ToHolder::AckExit => encode(kind::ACK_EXIT, &[]),
            ToHolder::Note(text) => encode(kind::NOTE, text.as_bytes()),
        }
    }

    pub fn parse(kind: u8, payload: &[u8]) -> Result<ToHolder, HolderFrameError> {
        Ok(match kind {
            kind::HELLO => ToHolder::Hello(parse_json(kind, payload)?),
            kind::ATTACH => ToHolder::Attach {
                from: parse_json::<AttachBody>(kind, payload)?.from,
            },
            kind::INPUT => ToHolder::Input(payload.to_vec()),
            kind::RESIZE => {
                let r: ResizeBody = parse_json(kind, payload)?;
                if r.rows == 0 || r.cols == 0 {
                    return Err(HolderFrameError::Bad {
                        kind,
                        message: "rows and cols must be at least 1".into(),
                    });
                }
                ToHolder::Resize {
                    rows: r.rows,
                    cols: r.cols,
                }
            }
            kind::SIGNAL => ToHolder::Signal {
                sig: parse_json::<SignalBody>(kind, payload)?.sig,
            },
            kind::KILL => ToHolder::Kill {
                by: parse_json::<ByBody>(kind, payload)?.by,
            },
            kind::DETACH => {
                empty(kind, payload)?;
                ToHolder::Detach
            }
            kind::ACK_EXIT => {
                empty(kind, payload)?;
                ToHolder::AckExit
            }
            kind::NOTE if payload.len() > MAX_NOTE => {
                return Err(HolderFrameError::Bad {
                    kind,
                    message: format!("a note is at most {MAX_NOTE} bytes, not {}", payload.len()),
                });
            }
            kind::NOTE => ToHolder::Note(String::from_utf8(payload.to_vec()).map_err(|_| {
                HolderFrameError::Bad {
                    kind,
                    message: "a note is UTF-8 text".into(),
                }
            })?),
            other => return Err(HolderFrameError::UnknownType(other)),
        })
    }
}

/// Where a held run is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HeldState {
    Running,
    /// A kill was started (by a client or a limit); the run has not been reaped yet.
    Stopping,
    /// Reaped; the status file is written.
    Ended,
    /// A state a newer holder knows.
    #[serde(other)]
    Unknown,
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitStatus {
    /// The shell convention: the code, or 128 + the signal.
    pub code: i32,
    /// The signal that ended it, if one did.
    #[serde(default)]
    pub signal: Option<i32>,
}

/// The holder's answer to a Hello it accepts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HolderInfo {
    /// The protocol version chosen.
    pub version: u32,
    /// Who holds the run (`kaged 0.1.0`).
    pub holder: String,
    pub id: String,
    pub run_name: String,
    pub holder_pid: u32,
    /// The started process (setpriv, then bwrap).
    pub pid: u32,
    pub started_at_ms: u64,
    /// Output bytes written to the transcript so far.
    pub written: u64,
    #[serde(default)]
    pub dropped: Option<(u64, u64)>,
    pub rows: u16,
    pub cols: u16,
    pub state: HeldState,
    #[serde(default)]
    pub egress_dir: Option<String>,
    /// The allowlist the run's egress proxy served when the run started (the spec's), so a
    /// daemon taking the run up serves the same one again. Empty from holders before it.
    #[serde(default)]
    pub egress_allow: Vec<String>,
    #[serde(default)]
    pub exit: Option<ExitStatus>,
    /// `"pty"` or `"pipes"` (absent from holders older than runs on pipes: `"pty"`).
    #[serde(default = "pty")]
    pub kind: String,
    /// The last client's note ([`ToHolder::Note`]), if it left one.
    #[serde(default)]
    pub note: Option<String>,
}

fn pty() -> String {
    "pty".into()
}

/// The holder's Hello: accepted, or refused with the versions it speaks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HolderHello {
    Accepted(Box<HolderInfo>),
    Refused { refused: String, versions: Vec<u32> },
}

#[derive(Serialize, Deserialize)]
struct RefusedBody {
    refused: String,
    versions: Vec<u32>,
}

/// Frames a client receives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToClient {
    Hello(HolderHello),
    /// Output starting at `offset`, always on disk already.
    Output {
        offset: u64,
        bytes: Vec<u8>,
    },
    /// The terminal closed; `written` is the output's length.
    Eof {
        written: u64,
        dropped: Option<(u64, u64)>,
    },
    /// The holder started a limit kill.
    Limit {
        by: String,
    },
    /// The run was reaped; the status file is already written.
    Exit(StatusFile),
    /// A Signal or Kill reached `n` processes.
    Done {
        n: u64,
    },
    Error {
        code: String,
        message: String,
    },
}

#[derive(Serialize, Deserialize)]
struct EofBody {
    written: u64,
    #[serde(default)]
    dropped: Option<(u64, u64)>,
}

impl ToClient {
    pub fn encode(&self) -> Vec<u8> {
        match self {
            ToClient::Hello(HolderHello::Accepted(info)) => json(kind::HELLO, info),
            ToClient::Hello(HolderHello::Refused { refused, versions }) => json(
                kind::HELLO,
                &RefusedBody {
                    refused: refused.clone(),
                    versions: versions.clone(),
                },
            ),
            ToClient::Output { offset, bytes } => {
                let bytes = &bytes[..bytes.len().min(MAX_OUTPUT)];
                let mut payload = Vec::with_capacity(8 + bytes.len());
                payload.extend_from_slice(&offset.to_be_bytes());
                payload.extend_from_slice(bytes);
                encode(kind::OUTPUT, &payload)
            }
            ToClient::Eof { written, dropped } => json(
                kind::EOF,
                &EofBody {
                    written: *written,
                    dropped: *dropped,
                },
            ),
            ToClient::Limit { by } => json(kind::LIMIT, &ByBody { by: by.clone() }),
            ToClient::Exit(status) => json(kind::EXIT, status),
            ToClient::Done { n } => json(kind::DONE, &DoneBody { n: *n }),
            ToClient::Error { code, message } => json(
                kind::ERROR,
                &ErrorBody {
                    code: code.clone(),
                    message: message.clone(),
                },
            ),
        }
    }

    pub fn parse(kind: u8, payload: &[u8]) -> Result<ToClient, HolderFrameError> {
        Ok(match kind {
            kind::HELLO => {
                let value: serde_json::Value = parse_json(kind, payload)?;
                if value.get("refused").is_some() {
                    let r: RefusedBody = parse_json(kind, payload)?;
                    ToClient::Hello(HolderHello::Refused {
                        refused: r.refused,
                        versions: r.versions,
                    })
                } else {
                    ToClient::Hello(HolderHello::Accepted(Box::new(parse_json(kind, payload)?)))
                }
            }
            kind::OUTPUT => {
                let Some((offset, bytes)) = payload.split_first_chunk::<8>() else {
                    return Err(HolderFrameError::Bad {
                        kind,
                        message: format!("{} bytes is shorter than the offset", payload.len()),
                    });
                };
                ToClient::Output {
                    offset: u64::from_be_bytes(*offset),
                    bytes: bytes.to_vec(),
                }
            }
            kind::EOF => {
                let e: EofBody = parse_json(kind, payload)?;
                ToClient::Eof {
                    written: e.written,
                    dropped: e.dropped,
                }
            }
            kind::LIMIT => ToClient::Limit {
                by: parse_json::<ByBody>(kind, payload)?.by,
            },
            kind::EXIT => ToClient::Exit(parse_json(kind, payload)?),
            kind::DONE => ToClient::Done {
                n: parse_json::<DoneBody>(kind, payload)?.n,
            },
            kind::ERROR => {
                let e: ErrorBody = parse_json(kind, payload)?;
                ToClient::Error {
                    code: e.code,
                    message: e.message,
                }
            }
            other => return Err(HolderFrameError::UnknownType(other)),
        })
    }
}

/// The version to speak with a client offering `offered`, when this side speaks
/// `supported`: the highest both know, or the refusal to send (with `supported`).
pub fn negotiate(offered: &[u32], supported: &[u32]) -> Result<u32, HolderHello> {
    offered
        .iter()
        .filter(|v| supported.contains(v))
        .max()
        .copied()
        .ok_or_else(|| HolderHello::Refused {
            refused: format!(
                "no common protocol version: the client speaks {offered:?}, this holder {supported:?}"
            ),
            versions: supported.to_vec(),
        })
}

/// What a holder is started with (JSON on a descriptor). No kaged-cage types: the holder
/// only needs what `kaged_spawn::Spec` carries, plus where its files go and its limits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HolderSpec {
    /// This format's version (1).
    pub v: u32,
    pub id: String,
    /// `run_name(id)`: names the socket, the cgroups and the egress directory.
    pub run_name: String,
    /// `"pty"` (a terminal) or `"pipes"` (stdin and stdout; output is the run's stdout).
    pub kind: String,
    /// For a run on pipes: where its stderr goes (the first [`STDERR_KEPT`] bytes; the rest
    /// is read and dropped).
    #[serde(default)]
    pub stderr_path: Option<String>,
    /// The socket to bind (its directory exists, 0700).
    pub socket: String,
    /// The transcript's head file (created empty by the daemon, or by the holder when absent).
    pub transcript_head: String,
    pub cap: Cap,
    /// Where the status file is written when the run ends.
    pub status_path: String,
    pub argv: Vec<String>,
    #[serde(default)]
    pub prefix: Vec<String>,
    #[serde(default)]
    pub rlimits: Vec<String>,
    #[serde(default)]
    pub cgroup_procs: Vec<String>,
    /// Cgroup directories the holder removes after the reap.
    #[serde(default)]
    pub cgroup_dirs: Vec<String>,
    #[serde(default)]
    pub cwd: Option<String>,
    #[serde(default)]
    pub env: Vec<(String, String)>,
    #[serde(default)]
    pub run_as: Option<RunAs>,
    /// Cage descriptors the holder inherited right after the spec and readiness ones; 0 for
    /// an uncaged run.
    #[serde(default)]
    pub cage_fd_count: u32,
    pub rows: u16,
    pub cols: u16,
    /// Wall-clock end (ms since the epoch): HUP and TERM, then KILL after `kill_grace_ms`.
    #[serde(default)]
    pub deadline_ms: Option<u64>,
    /// The wall-time limit behind `deadline_ms`, for the `killed_by` it gives
    /// (`kaged: wall-time limit of Ns`).
    #[serde(default)]
    pub wall_time_secs: Option<u64>,
    /// Kill the run once it has more processes than this (hosts without cgroups).
    #[serde(default)]
    pub watchdog_pids: Option<u64>,
    pub kill_grace_ms: u64,
    #[serde(default)]
    pub egress_dir: Option<String>,
    /// The network allowlist the daemon's proxy in `egress_dir` serves (reported back in
    /// Hello: a later daemon serves it again there).
    #[serde(default)]
    pub egress_allow: Vec<String>,
    #[serde(default)]
    pub daemon_version: String,
}

/// How much of a piped run's stderr its holder keeps.
pub const STDERR_KEPT: u64 = 256 * 1024;

/// Who a caged run becomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunAs {
    pub uid: u32,
    pub gid: u32,
}

/// What a holder leaves when its run ended (`transcripts/ID.status`), written before Exit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusFile {
    pub v: u32,
    pub id: String,
    /// None when the run never started (see `error`).
    #[serde(default)]
    pub exit: Option<ExitStatus>,
    /// Who killed it (a client's Kill, a limit, SIGTERM to the holder).
    #[serde(default)]
    pub killed_by: Option<String>,
    pub started_at_ms: u64,
    pub ended_at_ms: u64,
    pub output_bytes: u64,
    #[serde(default)]
    pub dropped: Option<(u64, u64)>,
    pub holder_version: String,
    #[serde(default)]
    pub error: Option<String>,
}

#[cfg(test)]
#[path = "holder_tests.rs"]
mod tests;
