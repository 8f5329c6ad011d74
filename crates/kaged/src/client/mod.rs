//! Commands that talk to the running daemon: finding it (`discovery.rs`), calling it
//! (`transport.rs`), and the commands themselves: `status`, `auth nonce`/`auth open`
//! (`auth.rs`), `tokens`, `project` (`projects.rs`), `approvals`. `kaged session` lives in
//! `session.rs`; for a model agent's session (a conversation) it uses `agent.rs` (send,
//! attach, transcript) and `conversation.rs` (the records rendered as text).

mod acp;
mod acp_map;
pub(crate) mod agent;
mod approvals;
mod auth;
mod conversation;
mod discovery;
mod projects;
mod status;
mod stop;
mod tokens;
mod transport;

pub use acp::acp;
pub use approvals::approvals;
pub use auth::{nonce, open};
pub(crate) use discovery::holders_everywhere;
pub use projects::project;
pub use status::status;
pub use stop::stop;
pub use tokens::tokens;
pub(crate) use transport::{Target, call, call_stream, target, ws_request};
