//! A turn kaged stopped in: at the next run of the conversation, a turn left paused on
//! approvals (its own calls', or a subagent's inside one of its calls) goes on from its calls;
//! any other open turn is closed, saying so.

use std::collections::HashSet;

use kaged_session::agent::{AgentEvent, EndReason, Sequenced};

use super::calls::Call;
use super::subagent::PREFIX;
use super::{Conversation, remember};

/// The last turn of one scope (the session's agent: `parent` `None`; a subagent: its parent's
/// call) in `records`: its number, whether it is still open, and its calls without a result.
fn last_turn(records: &[Sequenced], parent: Option<&str>) -> (u64, bool, Vec<Call>) {
    let mut turns = 0;
    let mut open = false;
    let mut calls: Vec<Call> = Vec::new();
    let mut done = HashSet::new();
    for r in records
        .iter()
        .filter(|r| r.parent_call_id.as_deref() == parent)
    {
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
                subagent: None,
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
    calls.retain(|c| !done.contains(&c.id));
    (turns, open, calls)
}

/// Every approval the calls of a paused turn wait for, nested ones too.
fn waited(calls: &[Call], out: &mut HashSet<String>) {
    for call in calls.iter().filter(|c| !c.interrupted) {
        out.extend(call.approval.clone());
        if let Some(sub) = &call.subagent {
            waited(sub, out);
        }
    }
}

impl Conversation {
    /// The number of turns so far, and the calls of a turn an earlier run left paused on
    /// approvals (kaged stopped while they waited): that turn goes on from them. Any other
    /// turn an earlier run left open is closed first, saying so; approvals nothing waits for
    /// any more are cancelled.
    pub(super) async fn close_open_turn(&self) -> Result<(u64, Option<Vec<Call>>), String> {
        let records = self
            .sessions
            .agent_log()
            .read_all(&self.id)
            .await
            .map_err(|e| e.to_string())?;
        let (turns, open, mut calls) = last_turn(&records, None);
        let paused = open && self.mark_paused(&records, &mut calls).await?;
        {
            let mut log = crate::sessions::lock(&self.log);
            for record in records {
                remember(&mut log, record);
            }
        }
        let paused = paused.then_some(calls);
        let mut kept = HashSet::new();
        waited(paused.as_deref().unwrap_or_default(), &mut kept);
        self.cancel_stale_approvals(&kept).await?;
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

    /// Mark which of an open turn's `calls` are to be carried out again (the rest are
    /// `interrupted`): those with an approval still to apply, and subagent calls whose own
    /// turn is paused so (their calls in `subagent`). Whether any is.
    async fn mark_paused(&self, records: &[Sequenced], calls: &mut [Call]) -> Result<bool, String> {
        let mut paused = false;
        for call in calls.iter_mut() {
            if call.approval.is_some() {
                paused = true;
                call.interrupted = !self.still_to_run(call).await?;
                continue;
            }
            if !call.name.starts_with(PREFIX) {
                continue;
            }
            let (_, open, mut inner) = last_turn(records, Some(&call.id));
            if open && Box::pin(self.mark_paused(records, &mut inner)).await? {
                paused = true;
                call.interrupted = false;
                call.subagent = Some(inner);
            }
        }
        Ok(paused)
    }

    /// Whether a call of a paused turn is to be carried out now: its approval is pending, was
    /// refused (the model is told), or was granted after the run that asked ended. One granted
    /// while that run lived may have started already: it is not run twice.
    async fn still_to_run(&self, call: &Call) -> Result<bool, String> {
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

    /// Cancel this session's pending approvals no paused call waits for (`kept`).
    async fn cancel_stale_approvals(&self, kept: &HashSet<String>) -> Result<(), String> {
        self.sessions
            .approvals()
            .cancel_pending_except(
                &self.id,
                kept,
                "the run that asked ended before it could wait again",
            )
            .await
            .map_err(|e| e.to_string())
    }

    /// Whether a call of this session's turn (or of a subagent's in it) waits for a decision.
    pub(super) async fn waits_for_approvals(&self) -> bool {
        let pending = self.sessions.approvals().pending(Some(&self.id)).await;
        pending.is_ok_and(|p| !p.is_empty())
    }
}
