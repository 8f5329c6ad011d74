//! Commands that talk to the running daemon: finding it (`discovery.rs`), calling it
//! (`transport.rs`), and the commands themselves: `status`, `auth nonce`/`auth open`
//! (`auth.rs`), `tokens`, `project` (`projects.rs`). `kaged session` lives in `session.rs`.

mod auth;
mod discovery;
mod projects;
mod status;
mod tokens;
mod transport;

pub use auth::{nonce, open};
pub use projects::project;
pub use status::status;
pub use tokens::tokens;
pub(crate) use transport::{Target, call, call_stream, target, ws_request};
