//! What kaged's ACP client leaves in the holder of an agent's run so that the next daemon can
//! go on from there ([`AcpNote`], docs/holder-protocol.md "Runs on pipes"), and whether this
//! daemon is letting go of the run.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use kaged_dsl::Tool;
use kaged_session::agent::AgentEvent;

use super::client::{AcpClient, Shared};
use super::permission::Asked;
use crate::sessions::conversation::Control;
use crate::sessions::{HeldLink, Sessions};

/// What a daemon leaves in the holder of an ACP agent's run (as JSON, after each message it
/// handled) so that the next daemon can go on: who the client is, and where the protocol
/// stands. Kept in the holder's memory only: it never outlives the run.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(crate) struct AcpNote {
    pub v: u32,
    pub slug: String,
    pub owner: String,
    pub name: String,
    pub tools: BTreeMap<String, Tool>,
    pub mode: Option<String>,
    pub cwd: PathBuf,
    /// The agent's ACP session, once it has one.
    pub session: Option<String>,
    /// The output offset up to which every message was handled.
    pub handled: u64,
    /// The next request id kaged uses.
    pub next_id: u64,
    /// The `session/prompt` the agent has not answered yet.
    pub prompt: Option<u64>,
    /// Permission requests waiting for the operator.
    pub asked: Vec<Asked>,
}

impl AcpClient {
    /// The number of turns so far, whether the last is open, and the agent's last ACP
    /// session.
    pub(super) async fn history(&self) -> (u64, bool, Option<String>) {
        let records = self
            .sessions
            .agent_log()
            .read_all(&self.id)
            .await
            .unwrap_or_default();
        let mut turns = 0;
        let mut open = false;
        let mut earlier = None;
        for r in records.iter().filter(|r| r.parent_call_id.is_none()) {
            match &r.event {
                AgentEvent::TurnStarted { turn } => {
                    turns = *turn;
                    open = true;
                }
                AgentEvent::TurnEnded { .. } => open = false,
                AgentEvent::AcpSession { session_id, .. } => earlier = Some(session_id.clone()),
                _ => {}
            }
        }
        (turns, open, earlier)
    }

    /// The client of an agent's run taken up again, as the earlier daemon's `note` says.
    pub(crate) fn from_note(
        sessions: Sessions,
        row: &kaged_store::SessionRecord,
        control: Arc<Control>,
        note: &AcpNote,
    ) -> AcpClient {
        AcpClient {
            sessions,
            id: row.id.clone(),
            slug: note.slug.clone(),
            owner: note.owner.clone(),
            name: note.name.clone(),
            tools: note.tools.clone(),
            mode: note.mode.clone(),
            control,
            cwd: note.cwd.clone(),
        }
    }
}

impl Shared {
    /// Leave the protocol's state in the holder (a run in one), for the next daemon.
    pub(super) fn note(&self) {
        let Some(link) = &self.link else { return };
        let c = &self.client;
        let note = AcpNote {
            v: 1,
            slug: c.slug.clone(),
            owner: c.owner.clone(),
            name: c.name.clone(),
            tools: c.tools.clone(),
            mode: c.mode.clone(),
            cwd: c.cwd.clone(),
            session: crate::sessions::lock(&self.session).clone(),
            handled: self.handled.load(Ordering::SeqCst),
            next_id: self.rpc.next.load(Ordering::SeqCst),
            prompt: *crate::sessions::lock(&self.prompt_id),
            asked: crate::sessions::lock(&self.asked).clone(),
        };
        match serde_json::to_string(&note) {
            Ok(text) if text.len() <= kaged_session::holder::MAX_NOTE => link.note(text),
            Ok(text) => {
                tracing::warn!(session = %c.id, bytes = text.len(), "the ACP agent's note is too long for its holder; a restart of kaged would end this run");
            }
            Err(e) => {
                tracing::error!(session = %c.id, error = %e, "cannot write the ACP agent's note")
            }
        }
    }

    /// Whether this daemon is letting go of the run (it goes on for the next daemon): then
    /// nothing about its end is recorded here.
    pub(super) fn letting_go(&self) -> bool {
        self.link.as_ref().is_some_and(HeldLink::letting_go)
    }
}
