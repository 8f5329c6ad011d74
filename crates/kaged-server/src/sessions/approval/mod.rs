//! Approvals: a tool call that waits for the operator's decision (`approval: ask` in the
//! project file). The record is durable (storage), so a pending approval outlives the daemon;
//! the first decision wins (storage decides it atomically); every decision, whoever made it
//! (an operator, the timeout, an abort or a kill), is recorded here once: in storage, in the
//! session's event log (`approval_decided`), in the audit log, and on the operator stream.
//!
//! - `mod.rs`: [`Approvals`]: request, wait, decide, cancel.
//! - `http.rs`: `GET /api/v1/approvals`, `GET/POST /api/v1/approvals/{id}`.

mod http;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kaged_session::agent::AgentEvent;
use kaged_store::{ApprovalDecision, ApprovalFilter, ApprovalRecord, Decided, Store};
use serde_json::{Value, json};
use tokio::sync::{Notify, broadcast};

use super::agent_log::AgentLog;
use super::lock;
use crate::audit::{AuditLog, AuditRecord, now_ms};
use crate::notify::{Notification, Notifier};

pub use http::{decide, get, list};

/// Who decided when no operator did.
pub const KAGED: &str = "kaged";

/// An operator's decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Choice {
    Approve,
    ApproveSession,
    Deny,
}

impl Choice {
    pub fn parse(text: &str) -> Option<Choice> {
        match text {
            "approve" => Some(Choice::Approve),
            "approve_session" => Some(Choice::ApproveSession),
            "deny" => Some(Choice::Deny),
            _ => None,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Choice::Approve => "approve",
            Choice::ApproveSession => "approve_session",
            Choice::Deny => "deny",
        }
    }

    fn state(self) -> &'static str {
        match self {
            Choice::Approve | Choice::ApproveSession => "approved",
            Choice::Deny => "denied",
        }
    }
}

/// A change published on the operator stream (`/api/v1/events`).
#[derive(Debug, Clone)]
pub struct ApprovalEvent {
    /// `approval.requested` or `approval.decided`.
    pub kind: &'static str,
    pub approval: ApprovalRecord,
}

impl ApprovalEvent {
    pub fn to_json(&self) -> Value {
        json!({"type": self.kind, "approval": self.approval})
    }
}

/// What the tool call asking for a decision is.
pub struct Request<'a> {
    pub session: &'a str,
    pub project: &'a str,
    pub owner: &'a str,
    pub agent: &'a str,
    pub tool: &'a str,
    pub call_id: &'a str,
    pub parent_call_id: Option<&'a str>,
    pub arguments: &'a Value,
}

/// Why an approval could not be stored or decided.
#[derive(Debug, thiserror::Error)]
pub enum ApprovalError {
    #[error("cannot store the approval: {0}")]
    Store(#[from] kaged_store::StoreError),
    #[error("cannot record the approval in the session's log: {0}")]
    Log(String),
    #[error("no randomness for an approval id: {0}")]
    Random(String),
    #[error("the approval {0} is no longer stored")]
    Gone(String),
}

/// The approvals service, shared by the agent loops and the routes.
#[derive(Clone)]
pub struct Approvals {
    shared: Arc<Shared>,
}

struct Shared {
    store: Store,
    audit: AuditLog,
    log: AgentLog,
    events: broadcast::Sender<ApprovalEvent>,
    /// Wakes the loop waiting for an approval (by id) when it is decided.
    waiting: Mutex<HashMap<String, Arc<Notify>>>,
    /// `[sessions] approval_timeout_secs`; `None`: wait for ever.
    timeout: Option<Duration>,
    notifier: Notifier,
}

fn new_id() -> Result<String, ApprovalError> {
    let mut bytes = [0u8; 8];
    getrandom::fill(&mut bytes).map_err(|e| ApprovalError::Random(e.to_string()))?;
    Ok(format!("apr_{}", hex::encode(bytes)))
}

impl Approvals {
    pub fn new(
        store: Store,
        audit: AuditLog,
        log: AgentLog,
        timeout_secs: u64,
        notifier: Notifier,
    ) -> Approvals {
        Approvals {
            shared: Arc::new(Shared {
                store,
                audit,
                log,
                notifier,
                events: broadcast::channel(256).0,
                waiting: Mutex::new(HashMap::new()),
                timeout: (timeout_secs > 0).then(|| Duration::from_secs(timeout_secs)),
            }),
        }
    }

    /// The operator stream's approval changes.
    pub fn subscribe(&self) -> broadcast::Receiver<ApprovalEvent> {
        self.shared.events.subscribe()
    }

    pub fn store(&self) -> &Store {
        &self.shared.store
    }

    /// Whether `agent`'s calls of `tool` in `session` were approved for the rest of it.
    pub async fn granted(
        &self,
        session: &str,
        agent: &str,
        tool: &str,
    ) -> Result<bool, ApprovalError> {
        Ok(self
            .shared
            .store
            .granted_for_session(session.into(), agent.into(), tool.into())
            .await?)
    }

    /// Store a pending approval for the call, record `approval_requested` in the session's
    /// log, audit and publish it. Returns the stored record.
    pub async fn request(&self, r: Request<'_>) -> Result<ApprovalRecord, ApprovalError> {
        let record = ApprovalRecord {
            id: new_id()?,
            session_id: r.session.into(),
            project: r.project.into(),
            agent: r.agent.into(),
            tool: r.tool.into(),
            call_id: r.call_id.into(),
            parent_call_id: r.parent_call_id.map(str::to_string),
            arguments: r.arguments.clone(),
            owner: r.owner.into(),
            state: "pending".into(),
            decision: None,
            message: None,
            decided_by: None,
            reason: None,
            requested_at_ms: now_ms(),
            decided_at_ms: None,
        };
        self.shared.store.create_approval(record.clone()).await?;
        self.shared
            .log
            .append(
                r.session,
                r.parent_call_id,
                vec![AgentEvent::ApprovalRequested {
                    approval_id: record.id.clone(),
                    call_id: record.call_id.clone(),
                    tool: record.tool.clone(),
                    arguments: record.arguments.clone(),
                }],
            )
            .await
            .map_err(|e| ApprovalError::Log(e.to_string()))?;
        self.shared
            .audit
            .record(AuditRecord {
                kind: "approval.requested",
                success: true,
                identity: Some(record.owner.clone()),
                source: None,
                detail: json!({"approval": record.id, "session": record.session_id,
                    "project": record.project, "agent": record.agent, "tool": record.tool}),
            })
            .await;
        let _ = self.shared.events.send(ApprovalEvent {
            kind: "approval.requested",
            approval: record.clone(),
        });
        self.shared.notifier.send(Notification::approval_requested(
            &record.project,
            &record.agent,
            &record.tool,
            &record.session_id,
            &record.id,
        ));
        Ok(record)
    }

    /// Wait for the decision of the approval `id` (stored, so one made while kaged was down
    /// counts); past `approval_timeout_secs` from its request, kaged denies it, saying so.
    pub async fn wait(&self, id: &str) -> Result<ApprovalRecord, ApprovalError> {
        // Registered before the first look, so a decision in between still wakes us.
        let wake = lock(&self.shared.waiting)
            .entry(id.to_string())
            .or_default()
            .clone();
        // Unregistered however the wait ends (an aborted turn drops it midway).
        let _registered = Registered {
            waiting: &self.shared.waiting,
            id,
        };
        self.wait_registered(id, &wake).await
    }

    async fn wait_registered(
        &self,
        id: &str,
        wake: &Notify,
    ) -> Result<ApprovalRecord, ApprovalError> {
        loop {
            let Some(record) = self.shared.store.get_approval(id.into()).await? else {
                return Err(gone(id));
            };
            if record.state != "pending" {
                return Ok(record);
            }
            let Some(left) = self.time_left(&record) else {
                wake.notified().await;
                continue;
            };
            if left.is_zero() {
                return match self.expire(id).await? {
                    Decided::Now(r) | Decided::Already(r) => Ok(r),
                    Decided::Unknown => Err(gone(id)),
                };
            }
            let _ = tokio::time::timeout(left, wake.notified()).await;
        }
    }

    /// How long `record` may still wait (`approval_timeout_secs` from its request); `None`
    /// without a timeout.
    fn time_left(&self, record: &ApprovalRecord) -> Option<Duration> {
        let timeout = self.shared.timeout?;
        let deadline_ms = record
            .requested_at_ms
            .saturating_add(i64::try_from(timeout.as_millis()).unwrap_or(i64::MAX));
        let left = u64::try_from(deadline_ms.saturating_sub(now_ms())).unwrap_or(0);
        Some(Duration::from_millis(left))
    }

    /// Deny `id` for want of a decision in time, saying so.
    async fn expire(&self, id: &str) -> Result<Decided, ApprovalError> {
        let seconds = self.shared.timeout.map_or(0, |t| t.as_secs());
        let reason = format!("no decision within {seconds} s (approval_timeout_secs)");
        let deny = Some(Choice::Deny);
        self.settle(
            id,
            Choice::Deny.state(),
            deny,
            None,
            KAGED,
            Some(reason),
            None,
        )
        .await
    }

    /// Deny, saying so, the pending approvals past their deadline. A running loop's own wait
    /// does this on time; these are the ones of conversations that are not running (kaged
    /// was stopped), so the inbox never offers one that has run out. Returns how many.
    pub async fn expire_overdue(&self) -> Result<usize, ApprovalError> {
        if self.shared.timeout.is_none() {
            return Ok(0);
        }
        let pending = self.pending(None).await?;
        let mut expired = 0;
        for a in pending {
            if self.time_left(&a).is_some_and(|left| left.is_zero())
                && matches!(self.expire(&a.id).await?, Decided::Now(_))
            {
                expired += 1;
            }
        }
        Ok(expired)
    }

    /// An operator's decision (the caller checked they may make it); one past the deadline
    /// finds the approval denied by kaged instead.
    pub async fn decide(
        &self,
        id: &str,
        choice: Choice,
        message: Option<String>,
        by: &str,
        source: Option<String>,
    ) -> Result<Decided, ApprovalError> {
        if let Some(record) = self.shared.store.get_approval(id.into()).await?
            && record.state == "pending"
            && self.time_left(&record).is_some_and(|left| left.is_zero())
        {
            self.expire(id).await?;
        }
        self.settle(id, choice.state(), Some(choice), message, by, None, source)
            .await
    }

    /// Cancel the approval `id` if it is still pending, saying why.
    pub async fn cancel(&self, id: &str, reason: &str) -> Result<(), ApprovalError> {
        self.settle(
            id,
            "cancelled",
            None,
            None,
            KAGED,
            Some(reason.into()),
            None,
        )
        .await
        .map(|_| ())
    }

    /// The pending approvals of `session` (of every session: `None`), newest first.
    pub async fn pending(
        &self,
        session: Option<&str>,
    ) -> Result<Vec<ApprovalRecord>, ApprovalError> {
        Ok(self
            .shared
            .store
            .list_approvals(ApprovalFilter {
                state: Some("pending".into()),
                session: session.map(str::to_string),
                limit: 10_000,
                ..Default::default()
            })
            .await?)
    }

    /// Cancel every pending approval of `session` (an abort, a kill), saying why.
    pub async fn cancel_pending(&self, session: &str, reason: &str) -> Result<(), ApprovalError> {
        self.cancel_pending_except(session, &Default::default(), reason)
            .await
    }

    /// Cancel the pending approvals of `session` but those in `kept`, saying why.
    pub async fn cancel_pending_except(
        &self,
        session: &str,
        kept: &std::collections::HashSet<String>,
        reason: &str,
    ) -> Result<(), ApprovalError> {
        for a in self.pending(Some(session)).await? {
            if !kept.contains(&a.id) {
                self.cancel(&a.id, reason).await?;
            }
        }
        Ok(())
    }

    /// Decide `id` if it is still pending; when this decision is the first, record it in the
    /// session's log, audit it, publish it and wake the loop waiting for it.
    #[allow(clippy::too_many_arguments)]
    async fn settle(
        &self,
        id: &str,
        state: &str,
        choice: Option<Choice>,
        message: Option<String>,
        by: &str,
        reason: Option<String>,
        source: Option<String>,
    ) -> Result<Decided, ApprovalError> {
        let decision = ApprovalDecision {
            state: state.into(),
            decision: choice.map(|c| c.as_str().to_string()),
            message,
            decided_by: by.into(),
            reason,
            at_ms: now_ms(),
        };
        let outcome = self
            .shared
            .store
            .decide_approval(id.into(), decision)
            .await?;
        let Decided::Now(record) = &outcome else {
            return Ok(outcome);
        };
        let logged = self
            .shared
            .log
            .append(
                &record.session_id,
                record.parent_call_id.as_deref(),
                vec![AgentEvent::ApprovalDecided {
                    approval_id: record.id.clone(),
                    call_id: record.call_id.clone(),
                    state: record.state.clone(),
                    decision: record.decision.clone(),
                    message: record.message.clone(),
                    decided_by: by.into(),
                    reason: record.reason.clone(),
                }],
            )
            .await;
        if let Err(e) = logged {
            // The decision stands (storage has it); only the log's line is missing.
            tracing::error!(approval = %record.id, error = %e, "cannot record the decision in the session's log");
        }
        self.shared
            .audit
            .record(AuditRecord {
                kind: "approval.decided",
                success: true,
                identity: Some(by.into()),
                source,
                detail: json!({"approval": record.id, "session": record.session_id,
                    "project": record.project, "tool": record.tool, "state": record.state,
                    "decision": record.decision, "reason": record.reason}),
            })
            .await;
        let _ = self.shared.events.send(ApprovalEvent {
            kind: "approval.decided",
            approval: record.clone(),
        });
        if let Some(wake) = lock(&self.shared.waiting).get(id) {
            wake.notify_one();
        }
        Ok(outcome)
    }
}

struct Registered<'a> {
    waiting: &'a Mutex<HashMap<String, Arc<Notify>>>,
    id: &'a str,
}

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        lock(self.waiting).remove(self.id);
    }
}

fn gone(id: &str) -> ApprovalError {
    ApprovalError::Gone(id.to_string())
}

/// What the model is told for a call that was not approved.
pub fn refusal(record: &ApprovalRecord) -> String {
    match (record.state.as_str(), record.decided_by.as_deref()) {
        ("denied", Some(KAGED)) | ("cancelled", _) => format!(
            "denied: {}",
            record.reason.as_deref().unwrap_or("no decision")
        ),
        _ => match record.message.as_deref().filter(|m| !m.trim().is_empty()) {
            Some(m) => format!("denied by the operator: {m}"),
            None => "denied by the operator".to_string(),
        },
    }
}
