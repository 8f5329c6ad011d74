//! Hooks: what happens in sessions, told to the plugins that declared the hook
//! (`hooks/on_session_start`, `hooks/on_session_idle` notifications). The session manager
//! holds a [`Hooks`] handle and never waits on a plugin: events go through an unbounded
//! queue (one per session start or idle agent) to the host, which sends each to the running
//! plugins that asked for it and drops it for the others.

use kaged_plugin::Hook;
use kaged_plugin::wire::{SessionIdleParams, SessionStartParams};
use serde_json::Value;
use tokio::sync::mpsc;

/// One hook's event.
#[derive(Debug)]
pub(crate) struct HookEvent {
    pub hook: Hook,
    pub params: Value,
}

/// Where sessions say what happened (none: nobody listens, as in the library's tests).
#[derive(Clone, Default)]
pub struct Hooks {
    tx: Option<mpsc::UnboundedSender<HookEvent>>,
}

impl Hooks {
    /// A handle and the host's end of it.
    pub(crate) fn channel() -> (Hooks, mpsc::UnboundedReceiver<HookEvent>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (Hooks { tx: Some(tx) }, rx)
    }

    fn send(&self, hook: Hook, params: impl serde::Serialize) {
        if let (Some(tx), Ok(params)) = (&self.tx, serde_json::to_value(params)) {
            let _ = tx.send(HookEvent { hook, params });
        }
    }

    /// An agent's session started.
    pub(crate) fn session_started(&self, session: &str, project: &str, agent: &str) {
        self.send(
            Hook::OnSessionStart,
            SessionStartParams {
                session_id: session.into(),
                project: project.into(),
                agent: agent.into(),
            },
        );
    }

    /// An agent finished its turn and waits for the operator.
    pub(crate) fn session_idle(&self, session: &str) {
        self.send(
            Hook::OnSessionIdle,
            SessionIdleParams {
                session_id: session.into(),
            },
        );
    }
}
