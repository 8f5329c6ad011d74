//! Held runs this daemon does not follow: one whose holder speaks no protocol version this
//! daemon does (kept in memory, killable, its end recorded when its holder exits), and one
//! whose holder is gone while kaged was away (recorded from its status file).

use std::path::PathBuf;
use std::sync::Arc;

use kaged_session::state::State;
use kaged_store::StateChange;
use serde_json::json;

use super::Sessions;
use super::held::{Followed, HeldControl, UNFOLLOWED_POLL, settle, status_path};
use super::live::RunControl;
use crate::audit::AuditRecord;

impl Sessions {
    /// A run whose holder speaks no protocol version this daemon does: held in memory with
    /// the frozen frames only (so `kaged session kill` ends it), its output not followed,
    /// and its end recorded from its status file once its socket is gone.
    pub(super) async fn keep_unfollowed(
        &self,
        row: kaged_store::SessionRecord,
        socket: PathBuf,
        versions: Vec<u32>,
    ) {
        let Some(kind) = kaged_cage::RunKind::parse(&row.kind) else {
            return;
        };
        // Its pid is in the Hello it did not give.
        let live = self.live_of(&row, kind, State::Running { pid: 0 }, (24, 80), None);
        let control = Arc::new(HeldControl::new(socket.clone(), 0, false));
        live.set_control(Some(RunControl::Held(control.clone())));
        self.insert(live.clone(), None);
        self.deps()
            .audit
            .record(AuditRecord {
                kind: "session.reattached",
                success: false,
                identity: Some(row.created_by.clone()),
                source: None,
                detail: json!({"session": row.id, "project": row.project,
                    "followed": false, "holder_versions": versions,
                    "reason": "its holder speaks no protocol version this kaged does"}),
            })
            .await;
        let (sessions, handle) = (self.clone(), tokio::runtime::Handle::current());
        let spawned = super::panics::spawn(
            "run",
            &row.id,
            move || {
                // Polled, not followed: a socket nobody listens on any more means the end.
                while std::os::unix::net::UnixStream::connect(&socket).is_ok() {
                    std::thread::sleep(UNFOLLOWED_POLL);
                }
                settle(
                    &sessions,
                    &live,
                    &handle,
                    Followed::Lost("its holder ended".into()),
                    &control,
                );
            },
            |_| {},
        );
        if let Err(e) = spawned {
            tracing::error!(session = %row.id, error = %e, "cannot watch a run this kaged cannot follow");
        }
    }

    /// A run whose holder is gone: its status file (when it left one) says how it ended.
    pub(super) async fn ended_while_away(&self, row: &kaged_store::SessionRecord) {
        let path = status_path(self, &row.id);
        let Ok(Some(status)) = kaged_holder::status::read(&path) else {
            return;
        };
        let (state, exit_code) = match (&status.killed_by, &status.exit) {
            (Some(_), _) => ("killed", status.exit.as_ref().map(|e| e.code)),
            (None, Some(exit)) => ("exited", Some(exit.code)),
            (None, None) => ("failed", None),
        };
        let reason = status.killed_by.clone().or(status.error.clone());
        let store = &self.deps().store;
        if let Err(e) = store
            .set_transcript_extent(row.id.clone(), status.output_bytes, status.dropped)
            .await
        {
            tracing::error!(session = %row.id, error = %e, "cannot record the transcript's extent");
        }
        let change = StateChange {
            session_id: row.id.clone(),
            state: state.into(),
            at_ms: i64::try_from(status.ended_at_ms).unwrap_or(i64::MAX),
            actor: "kaged".into(),
            detail: json!({"project": row.project, "kind": row.kind, "name": row.name,
                "exit_code": exit_code, "signal": status.exit.as_ref().and_then(|e| e.signal),
                "reason": reason, "recorded_after_restart": true}),
            exit_code,
            reason: reason.clone(),
            ended: true,
        };
        let writer = store.clone();
        if let Err(e) = self
            .store_and_publish(async move { writer.change_state(change).await })
            .await
        {
            tracing::error!(session = %row.id, error = %e, "cannot record how a run ended while kaged was away");
            return;
        }
        self.deps()
            .audit
            .record(AuditRecord {
                kind: "session.end",
                success: state == "exited" && exit_code == Some(0),
                identity: Some(row.created_by.clone()),
                source: None,
                detail: json!({"session": row.id, "project": row.project, "state": state,
                    "exit_code": exit_code, "signal": status.exit.as_ref().and_then(|e| e.signal),
                    "output_bytes": status.output_bytes, "reason": reason,
                    "ended_at_ms": status.ended_at_ms, "recorded_after_restart": true}),
            })
            .await;
        let _ = std::fs::remove_file(&path);
        tracing::info!(session = %row.id, state, "recorded how a run ended while kaged was away");
    }
}
