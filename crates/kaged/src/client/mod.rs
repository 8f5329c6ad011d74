//! Commands that talk to the running daemon: finding it (`discovery.rs`), calling it
//! (`transport.rs`), and the commands themselves: `status`, `auth nonce`/`auth open`
//! (`auth.rs`), `tokens`, `project` (`projects.rs`), `approvals`, `plugin list|enable|disable`
//! (`plugins.rs`). `kaged session` lives in `session.rs`; for a model agent's session (a conversation) it uses `agent.rs` (send,
//! attach, transcript) and `conversation.rs` (the records rendered as text).

mod acp;
mod acp_map;
pub(crate) mod agent;
mod approvals;
mod auth;
mod conversation;
mod discovery;
mod plugins;
mod projects;
mod status;
mod stop;
mod tokens;
mod transport;

pub use acp::acp;
pub use approvals::approvals;
pub use auth::{nonce, open};
pub(crate) use discovery::holders_everywhere;
pub use plugins::{plugin_switch, plugins_list};
pub use projects::project;
pub use status::status;
pub use stop::stop;
pub use tokens::tokens;
pub(crate) use transport::{Target, call, call_stream, target, ws_request};

/// Rows as a table, each column as wide as its widest cell and two spaces apart (the last
/// column unpadded); ends with a newline.
pub(crate) fn aligned<R: AsRef<[String]>>(rows: &[R]) -> String {
    let mut widths: Vec<usize> = Vec::new();
    for row in rows {
        for (i, cell) in row.as_ref().iter().enumerate() {
            let width = cell.chars().count();
            match widths.get_mut(i) {
                Some(w) => *w = (*w).max(width),
                None => widths.push(width),
            }
        }
    }
    let mut out = String::new();
    for row in rows {
        let row = row.as_ref();
        let mut line = String::new();
        for (i, (cell, w)) in row.iter().zip(&widths).enumerate() {
            if i + 1 == row.len() {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<w$}  "));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}
