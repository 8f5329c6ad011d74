//! Sessions, decided without I/O: what the edge needs to supervise a process on a PTY and
//! stream it to viewers, tested on data.
//!
//! - [`log`]: the output, numbered by byte offset, bounded in memory, never losing a byte
//!   storage does not hold yet.
//! - [`screen`]: the terminal state, for a snapshot a new viewer can draw at once.
//! - [`state`]: the run state machine (queued → starting → running → exited, …).
//! - [`frame`]: the PTY WebSocket wire protocol.
//! - [`holder`]: the run holder's socket protocol (docs/holder-protocol.md), its spec and
//!   status file.
//! - [`agent`]: a model agent's event log (docs/agent-protocol.md) and the conversation
//!   rebuilt from it.
//! - [`limits`]: how many sessions may be live per project and per operator.
//! - [`throttle`]: token buckets for audit records a run or a client can cause repeatedly.
//! - [`retention`]: which transcripts to prune, and how one transcript is capped.

pub mod agent;
pub mod frame;
pub mod holder;
pub mod limits;
pub mod log;
pub mod retention;
pub mod screen;
pub mod state;
pub mod throttle;

pub use frame::{
    ClientControl, FrameError, ServerBinary, ServerText, decode_server_binary, encode_output,
    encode_snapshot, parse_client_text, parse_server_text,
};
pub use limits::{LimitExceeded, Limits, Resource};
pub use log::{Chunk, OutputLog, PersistedAhead, Read};
pub use screen::Screen;
pub use state::{Event, InvalidTransition, State, StateKind, UnknownState, apply};
pub use throttle::{Throttle, Verdict};
