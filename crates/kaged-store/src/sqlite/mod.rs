//! The SQLite backend: one database file in WAL mode, one connection behind a mutex (the
//! daemon is the only writer and its statements are short).
//!
//! `schema.rs` opens the file and migrates it; each other file holds the statements of one
//! group of tables (`audit.rs`, `runs.rs`, `tokens.rs`, `projects.rs`, `sessions.rs`, `events.rs`,
//! `approvals.rs`, `plugin_storage.rs`). Those
//! speak `rusqlite` only; the [`Backend`] impl here maps their errors to [`StoreError`], once.

mod approvals;
mod audit;
mod copy;
mod events;
mod lock;
mod plugin_storage;
mod projects;
mod runs;
mod schema;
mod sessions;
mod tokens;

#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use rusqlite::Connection;

use crate::{
    ApprovalDecision, ApprovalFilter, ApprovalRecord, AuditEvent, Backend, DaemonRun, Decided,
    ProjectRecord, Result, SessionEvent, SessionRecord, StateChange, StoreError, StoredAuditEvent,
    TokenRecord, Transition,
};

/// SQLite in WAL mode, one connection guarded by a mutex.
pub struct SqliteBackend {
    path: PathBuf,
    conn: Mutex<Connection>,
    /// The daemon's claim on the file (`lock.rs`), once taken.
    lock: lock::Claim,
}

impl SqliteBackend {
    fn conn(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock leaves the connection usable (SQLite rolls back).
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn err(&self, e: rusqlite::Error) -> StoreError {
        sql(&self.path, e)
    }

    /// Run `f` on the connection (held for the whole call), naming the file in its error.
    fn with<T>(&self, f: impl FnOnce(&mut Connection) -> rusqlite::Result<T>) -> Result<T> {
        f(&mut self.conn()).map_err(|e| self.err(e))
    }
}

fn sql(path: &Path, source: rusqlite::Error) -> StoreError {
    StoreError::Sqlite {
        path: path.to_path_buf(),
        source,
    }
}

impl Backend for SqliteBackend {
    fn describe(&self) -> String {
        format!("sqlite://{}", self.path.display())
    }

    fn schema_version(&self) -> Result<u32> {
        self.with(|c| schema::version(c))
    }

    fn ping(&self) -> Result<()> {
        self.with(runs::ping)
    }

    fn append_audit(&self, event: &AuditEvent) -> Result<i64> {
        self.with(|c| audit::append(c, event))
    }

    fn recent_audit(&self, limit: usize) -> Result<Vec<StoredAuditEvent>> {
        self.with(|c| audit::recent(c, limit))
    }

    fn begin_run(
        &self,
        pid: u32,
        version: &str,
        mode: &str,
        now_ms: i64,
    ) -> Result<(DaemonRun, Option<DaemonRun>)> {
        self.with(|c| runs::begin(c, pid, version, mode, now_ms))
    }

    fn end_run(&self, id: i64, now_ms: i64) -> Result<()> {
        self.with(|c| runs::end(c, id, now_ms))
    }

    fn create_token(
        &self,
        token_hash: &str,
        actor: &str,
        name: Option<&str>,
        now_ms: i64,
    ) -> Result<TokenRecord> {
        self.with(|c| tokens::create(c, token_hash, actor, name, now_ms))
    }

    fn list_tokens(&self) -> Result<Vec<TokenRecord>> {
        self.with(tokens::list)
    }

    fn revoke_token(&self, id: i64, now_ms: i64) -> Result<Option<TokenRecord>> {
        self.with(|c| tokens::revoke(c, id, now_ms))
    }

    fn find_active_token(&self, token_hash: &str, now_ms: i64) -> Result<Option<TokenRecord>> {
        self.with(|c| tokens::find_active(c, token_hash, now_ms))
    }

    fn put_project(&self, slug: &str, root: &str, now_ms: i64) -> Result<()> {
        self.with(|c| projects::put(c, slug, root, now_ms))
    }

    fn set_project_accepted(
        &self,
        slug: &str,
        config: &serde_json::Value,
        had_git: bool,
    ) -> Result<bool> {
        self.with(|c| projects::set_accepted(c, slug, config, had_git))
    }

    fn remove_project(&self, slug: &str) -> Result<bool> {
        self.with(|c| projects::remove(c, slug))
    }

    fn list_projects(&self) -> Result<Vec<ProjectRecord>> {
        self.with(projects::list)
    }

    fn create_session(&self, s: &SessionRecord, first: &StateChange) -> Result<Transition> {
        self.with(|c| sessions::create(c, s, first))
    }

    fn change_state(&self, change: &StateChange) -> Result<Transition> {
        self.with(|c| sessions::change_state(c, change))
    }

    fn list_sessions(&self, project: Option<&str>, limit: usize) -> Result<Vec<SessionRecord>> {
        self.with(|c| sessions::list(c, project, limit))
    }

    fn get_session(&self, id: &str) -> Result<Option<SessionRecord>> {
        self.with(|c| sessions::get(c, id))
    }

    fn transitions_after(
        &self,
        after: i64,
        session: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Transition>> {
        self.with(|c| sessions::transitions_after(c, after, session, limit))
    }

    fn live_sessions(&self) -> Result<Vec<SessionRecord>> {
        self.with(sessions::live)
    }

    fn kept_transcripts(&self) -> Result<Vec<SessionRecord>> {
        self.with(sessions::kept_transcripts)
    }

    fn mark_transcript_pruned(&self, id: &str, at_ms: i64, output_bytes: u64) -> Result<bool> {
        self.with(|c| sessions::mark_transcript_pruned(c, id, at_ms, output_bytes))
    }

    fn set_transcript_extent(
        &self,
        id: &str,
        output_bytes: u64,
        dropped: Option<(u64, u64)>,
    ) -> Result<()> {
        self.with(|c| sessions::set_transcript_extent(c, id, output_bytes, dropped))
    }

    fn append_events(&self, session: &str, events: &[SessionEvent]) -> Result<()> {
        if events.is_empty() {
            return Ok(());
        }
        self.with(|c| events::append(c, session, events))?
    }

    fn events_after(&self, session: &str, after: u64, limit: usize) -> Result<Vec<SessionEvent>> {
        self.with(|c| events::after(c, session, after, limit))
    }

    fn last_event_seq(&self, session: &str) -> Result<u64> {
        self.with(|c| events::last_seq(c, session))
    }

    fn create_approval(&self, approval: &ApprovalRecord) -> Result<()> {
        self.with(|c| approvals::create(c, approval))
    }

    fn decide_approval(&self, id: &str, decision: &ApprovalDecision) -> Result<Decided> {
        self.with(|c| approvals::decide(c, id, decision))
    }

    fn get_approval(&self, id: &str) -> Result<Option<ApprovalRecord>> {
        self.with(|c| approvals::get(c, id))
    }

    fn list_approvals(&self, filter: &ApprovalFilter) -> Result<Vec<ApprovalRecord>> {
        self.with(|c| approvals::list(c, filter))
    }

    fn granted_for_session(&self, session: &str, agent: &str, tool: &str) -> Result<bool> {
        self.with(|c| approvals::granted_for_session(c, session, agent, tool))
    }

    fn plugin_storage_get(&self, plugin: &str, key: &str) -> Result<Option<serde_json::Value>> {
        self.with(|c| plugin_storage::get(c, plugin, key))
    }

    fn plugin_storage_set(
        &self,
        plugin: &str,
        key: &str,
        value: &serde_json::Value,
        now_ms: i64,
    ) -> Result<()> {
        self.with(|c| plugin_storage::set(c, plugin, key, value, now_ms))?
    }

    fn plugin_storage_delete(&self, plugin: &str, key: &str) -> Result<bool> {
        self.with(|c| plugin_storage::delete(c, plugin, key))
    }

    fn plugin_storage_list(&self, plugin: &str, prefix: &str) -> Result<Vec<String>> {
        self.with(|c| plugin_storage::list(c, plugin, prefix))
    }

    fn close(&self) -> Result<()> {
        self.with(|c| schema::checkpoint(c))
    }

    fn probe_write(&self) -> Result<()> {
        self.with(runs::probe_write)
    }

    fn lock_for_daemon(&self) -> Result<()> {
        self.claim()
    }
}
