//! The rows kaged stores, as every backend hands them in and out.

use serde::Serialize;

/// One audit record: who did what, from where, and how it ended.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AuditEvent {
    pub ts_ms: i64,
    /// Dotted event name, e.g. `auth.login`.
    pub kind: String,
    /// `success` or `failure`.
    pub outcome: String,
    pub identity: Option<String>,
    /// Peer address of the request, if any.
    pub source: Option<String>,
    pub detail: serde_json::Value,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StoredAuditEvent {
    pub id: i64,
    #[serde(flatten)]
    pub event: AuditEvent,
}

/// A daemon start as recorded in storage.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DaemonRun {
    pub id: i64,
    pub pid: u32,
    pub version: String,
    pub mode: String,
    pub started_at_ms: i64,
    pub stopped_at_ms: Option<i64>,
}

/// A bearer token as stored: never its plaintext or hash.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TokenRecord {
    pub id: i64,
    pub actor: String,
    pub name: Option<String>,
    pub created_at_ms: i64,
    pub last_used_at_ms: Option<i64>,
    pub revoked_at_ms: Option<i64>,
}

/// A project registered with the daemon.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProjectRecord {
    pub slug: String,
    pub root: String,
    pub loaded_at_ms: i64,
    /// The resolved configuration last in force (loaded, or accepted by the operator).
    pub accepted_config: Option<serde_json::Value>,
    /// Whether the project had a `.git` when it was loaded or last accepted.
    pub had_git: Option<bool>,
}

/// A session (one run of an agent, a terminal or a task) as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Default)]
pub struct SessionRecord {
    pub id: String,
    pub project: String,
    /// `agent`, `terminal` or `task`.
    pub kind: String,
    /// The agent's or task's name (`terminal` for a terminal).
    pub name: String,
    /// The command as started (inside the cage when caged).
    pub command: Vec<String>,
    pub caged: bool,
    pub state: String,
    pub exit_code: Option<i32>,
    /// Why it failed, or who killed it.
    pub reason: Option<String>,
    pub created_by: String,
    pub created_at_ms: i64,
    pub ended_at_ms: Option<i64>,
    /// When retention deleted the transcript (the row stays); `None` while it is kept.
    pub transcript_pruned_at_ms: Option<i64>,
    /// The output's length, recorded when the run ended or its transcript was pruned.
    pub output_bytes: Option<u64>,
    /// Output offsets `[from, to)` the per-transcript cap dropped from the middle.
    pub dropped: Option<(u64, u64)>,
    /// A model agent's conversation (no terminal: its output is its event log).
    pub conversation: bool,
}

/// One state change of a session. Its `id` orders all transitions of all sessions, so it
/// is the cursor of the event stream.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Transition {
    pub id: i64,
    pub session_id: String,
    pub state: String,
    pub at_ms: i64,
    pub actor: String,
    pub detail: serde_json::Value,
}

/// A state change to record: the session row takes the new state (and the exit code,
/// reason and end time when given) and a transition row is appended, in one transaction.
#[derive(Debug, Clone)]
pub struct StateChange {
    pub session_id: String,
    pub state: String,
    pub at_ms: i64,
    pub actor: String,
    pub detail: serde_json::Value,
    pub exit_code: Option<i32>,
    pub reason: Option<String>,
    pub ended: bool,
}

/// One record of a session's event log (a model agent's events, see
/// `kaged_session::agent`), as stored. The store does not read `body`: it keeps the JSON text
/// it was given and hands it back as it was.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SessionEvent {
    /// From 1 per session, with no gap.
    pub seq: u64,
    pub at_ms: i64,
    /// The event's type (`text_delta`, `tool_call`, …).
    pub kind: String,
    /// Set on a subagent's events: the parent's tool call they nest under.
    pub parent_call_id: Option<String>,
    /// The event as JSON text (a JSON value; the database refuses anything else).
    pub body: String,
}

/// A tool call that waits for (or was given) the operator's decision.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ApprovalRecord {
    pub id: String,
    pub session_id: String,
    pub project: String,
    pub agent: String,
    pub tool: String,
    pub call_id: String,
    pub parent_call_id: Option<String>,
    pub arguments: serde_json::Value,
    /// The session's `created_by`: who may decide on a shared box.
    pub owner: String,
    /// `pending`, `approved`, `denied` or `cancelled`.
    pub state: String,
    /// `approve`, `approve_session` or `deny`; `None` while pending and when cancelled.
    pub decision: Option<String>,
    /// A deny's message (what the model receives).
    pub message: Option<String>,
    /// Who decided: a principal, or `kaged` (with `reason`).
    pub decided_by: Option<String>,
    pub reason: Option<String>,
    pub requested_at_ms: i64,
    pub decided_at_ms: Option<i64>,
}

/// A decision about a pending approval.
#[derive(Debug, Clone, PartialEq)]
pub struct ApprovalDecision {
    /// `approved`, `denied` or `cancelled`.
    pub state: String,
    pub decision: Option<String>,
    pub message: Option<String>,
    pub decided_by: String,
    pub reason: Option<String>,
    pub at_ms: i64,
}

/// What came of deciding an approval.
#[derive(Debug, Clone, PartialEq)]
pub enum Decided {
    /// This decision was the first: the record as it now is.
    Now(ApprovalRecord),
    /// Another decision came first: the record as that one left it.
    Already(ApprovalRecord),
    /// No such approval.
    Unknown,
}

/// Which approvals to list (newest first).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ApprovalFilter {
    pub state: Option<String>,
    pub project: Option<String>,
    pub session: Option<String>,
    pub limit: usize,
}
