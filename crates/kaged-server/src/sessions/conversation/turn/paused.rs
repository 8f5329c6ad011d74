//! A turn kaged stopped in: at the next run of the conversation, a turn left paused on
//! approvals goes on from its calls; any other open turn is closed, saying so.

use kaged_session::agent::{AgentEvent, EndReason};

use super::calls::Call;
use super::{Conversation, remember};

impl Conversation {
    /// The number of turns so far, and the calls of a turn an earlier run left paused on
    /// approvals (kaged stopped while they waited): that turn goes on from them. Any other
    /// turn an earlier run left open is closed first, saying so; approvals nothing waits for
    /// any more (a subagent's, whose cage is gone) are cancelled.
    pub(super) async fn close_open_turn(&self) -> Result<(u64, Option<Vec<Call>>), String> {
        let records = self
            .sessions
            .agent_log()
            .read_all(&self.id)
            .await
            .map_err(|e| e.to_string())?;
        let mut turns = 0;
        let mut open = false;
        let mut calls: Vec<Call> = Vec::new();
        let mut done = std::collections::HashSet::new();
        for r in records.iter().filter(|r| r.parent_call_id.is_none()) {
            match &r.event {
                AgentEvent::TurnStarted { turn } => {
                    turns = *turn;
                    open = true;
                    calls.clear();
                    done.clear();
                }
                AgentEvent::TurnEnded { .. } => open = false,
                AgentEvent::ToolCall {
                    call_id,
                    name,
                    arguments,
                } => calls.push(Call {
                    id: call_id.clone(),
                    name: name.clone(),
                    arguments: arguments.clone(),
                    approval: None,
                    interrupted: true,
                }),
                AgentEvent::ApprovalRequested {
                    approval_id,
                    call_id,
                    ..
                } => {
                    if let Some(call) = calls.iter_mut().find(|c| &c.id == call_id) {
                        call.approval = Some(approval_id.clone());
                    }
                }
                AgentEvent::ToolResult { call_id, .. } => {
                    done.insert(call_id.clone());
                }
                _ => {}
            }
        }
        {
            let mut log = crate::sessions::lock(&self.log);
            for record in records {
                remember(&mut log, record);
            }
        }
        calls.retain(|c| !done.contains(&c.id));
        let paused = if open && calls.iter().any(|c| c.approval.is_some()) {
            for call in &mut calls {
                call.interrupted = !self.still_to_run(call).await?;
            }
            Some(calls)
        } else {
            None
        };
        self.cancel_stale_approvals(paused.as_deref()).await?;
        if paused.is_some() {
            return Ok((turns, paused));
        }
        if open {
            self.record(vec![
                AgentEvent::Error {
                    code: "daemon".into(),
                    message: "the turn was cut short: its run ended (kaged stopped or the session was killed)".into(),
                },
                AgentEvent::TurnEnded {
                    reason: EndReason::Error,
                },
            ])
            .await?;
        }
        Ok((turns, None))
    }

    /// Whether a call of a paused turn is to be carried out now: its approval is pending, was
    /// refused (the model is told), or was granted after the run that asked ended. One granted
    /// while that run lived may have started already: it is not run twice.
    pub(super) async fn still_to_run(&self, call: &Call) -> Result<bool, String> {
        let Some(id) = &call.approval else {
            return Ok(false);
        };
        let store = &self.sessions.deps().store;
        let Some(record) = store
            .get_approval(id.clone())
            .await
            .map_err(|e| e.to_string())?
        else {
            return Ok(false);
        };
        if record.state != "approved" {
            return Ok(true);
        }
        let transitions = store
            .transitions_after(0, Some(self.id.clone()), 10_000)
            .await
            .map_err(|e| e.to_string())?;
        let run_end = transitions.iter().find(|t| {
            t.at_ms >= record.requested_at_ms
                && matches!(t.state.as_str(), "exited" | "failed" | "killed")
        });
        Ok(match (run_end, record.decided_at_ms) {
            (Some(end), Some(decided)) => decided > end.at_ms,
            _ => false,
        })
    }

    /// Cancel this session's pending approvals that no call of `paused` waits for.
    pub(super) async fn cancel_stale_approvals(
        &self,
        paused: Option<&[Call]>,
    ) -> Result<(), String> {
        let approvals = self.sessions.approvals();
        let pending = approvals
            .store()
            .list_approvals(kaged_store::ApprovalFilter {
                state: Some("pending".into()),
                session: Some(self.id.clone()),
                limit: 10_000,
                ..Default::default()
            })
            .await
            .map_err(|e| e.to_string())?;
        let waited: std::collections::HashSet<&str> = paused
            .unwrap_or_default()
            .iter()
            .filter(|c| !c.interrupted)
            .filter_map(|c| c.approval.as_deref())
            .collect();
        for stale in pending.iter().filter(|a| !waited.contains(a.id.as_str())) {
            approvals
                .cancel(
                    &stale.id,
                    "the run that asked ended (kaged stopped during a subagent's turn)",
                )
                .await
                .map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    /// Whether a call of this session's turn waits for a decision.
    pub(super) async fn waits_for_approvals(&self) -> bool {
        let pending = self
            .sessions
            .approvals()
            .store()
            .list_approvals(kaged_store::ApprovalFilter {
                state: Some("pending".into()),
                session: Some(self.id.clone()),
                limit: 1000,
                ..Default::default()
            })
            .await;
        pending.is_ok_and(|p| p.iter().any(|a| a.parent_call_id.is_none()))
    }
}
