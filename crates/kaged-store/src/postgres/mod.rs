//! The PostgreSQL backend: a bounded pool of blocking `postgres` connections (`pool.rs`; TLS
//! by rustls in `tls.rs`), the
//! schema by numbered migrations in `schema_migrations` (`schema.rs`, `migrations.rs`), the
//! daemon's advisory lock (`lock.rs`), and one file per table group like `sqlite/` (`audit.rs`,
//! `runs.rs`, `tokens.rs`, `projects.rs`, `sessions.rs`, `events.rs`, `approvals.rs`,
//! `plugin_storage.rs`). Those
//! speak `postgres` only; the [`Backend`] impl here maps their errors to [`StoreError`], once,
//! and [`trouble`] says which of them are storage trouble.
//!
//! The `postgres` client runs a small Tokio runtime of its own per connection, which must not
//! be entered or dropped on an async thread: [`crate::Store`] calls backends from blocking
//! threads, opens this one on a thread of its own, and the backend drops its connections on a
//! thread of its own.

mod approvals;
mod audit;
mod copy;
mod events;
mod lock;
mod migrations;
mod plugin_storage;
mod pool;
mod projects;
mod runs;
mod schema;
mod sessions;
mod tls;
mod tokens;

use std::sync::Mutex;

use kaged_config::PostgresUrl;
use postgres::Client;

use crate::health::Trouble;
use crate::{
    ApprovalDecision, ApprovalFilter, ApprovalRecord, AuditEvent, Backend, DaemonRun, Decided,
    ProjectRecord, Result, SessionEvent, SessionRecord, StateChange, StoreError, StoredAuditEvent,
    TokenRecord, Transition,
};

pub(crate) use migrations::MIGRATIONS;

/// At most this many connections at once (the daemon's storage calls are short; more wait).
pub const POOL_SIZE: usize = 8;

/// PostgreSQL through a bounded pool of connections.
pub struct PostgresBackend {
    /// The URL without its password: for messages, logs and `kaged status`.
    place: String,
    pool: pool::Pool,
    /// The connection holding the daemon's advisory lock, once claimed.
    lock: Mutex<Option<Client>>,
}

impl PostgresBackend {
    fn err(&self, source: postgres::Error) -> StoreError {
        StoreError::Postgres {
            place: self.place.clone(),
            source,
        }
    }

    /// Run `f` on a pooled connection, naming the database in its error. A connection that
    /// failed (closed, lost) is dropped, and the next call opens a new one.
    fn with<T>(
        &self,
        f: impl FnOnce(&mut Client) -> std::result::Result<T, postgres::Error>,
    ) -> Result<T> {
        let mut conn = self.pool.get(&self.place)?;
        let result = f(&mut conn);
        if let Err(e) = &result
            && trouble(e).is_some()
        {
            conn.discard();
        }
        result.map_err(|e| self.err(e))
    }

    /// The URL this backend was opened with (no password).
    pub fn url(&self) -> &str {
        &self.place
    }
}

impl Drop for PostgresBackend {
    fn drop(&mut self) {
        // The clients' runtimes must not be dropped on an async thread.
        let idle = self.pool.take_idle();
        let lock = self.lock.get_mut().map(Option::take).unwrap_or(None);
        let _ = std::thread::spawn(move || {
            drop(idle);
            drop(lock);
        })
        .join();
    }
}

/// Whether a PostgreSQL error is storage trouble: the server unreachable or gone (no SQLSTATE:
/// connection refused, lost, timed out), shutting down (57P01..57P03), out of resources
/// (class 53; 53100 is a full disk), refusing writes (25006 read-only, a standby), failing
/// (classes 58 and XX), or refusing us (class 28, 3D000: the role or database is gone). An
/// error of the request (a constraint, a trigger's refusal, bad JSON) is not.
pub(crate) fn trouble(e: &postgres::Error) -> Option<Trouble> {
    let Some(code) = e.code() else {
        // No answer from the server about the request: the connection is the trouble.
        return Some(Trouble::Failing);
    };
    let code = code.code();
    match code {
        "53100" => Some(Trouble::Full),
        "25006" | "3D000" | "57014" => Some(Trouble::Failing),
        _ if ["08", "53", "57", "58", "XX", "28"]
            .iter()
            .any(|class| code.starts_with(class)) =>
        {
            Some(Trouble::Failing)
        }
        _ => None,
    }
}

impl Backend for PostgresBackend {
    fn describe(&self) -> String {
        self.place.clone()
    }

    fn schema_version(&self) -> Result<u32> {
        self.with(schema::version)
    }

    fn ping(&self) -> Result<()> {
        self.with(runs::ping)?;
        self.check_lock()
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
        // Nothing to flush (every write committed); the idle connections are closed, and the
        // next call opens what it needs.
        drop(self.pool.take_idle());
        Ok(())
    }

    fn probe_write(&self) -> Result<()> {
        self.with(runs::probe_write)
    }

    fn lock_for_daemon(&self) -> Result<()> {
        self.claim()
    }
}

/// The URL's connection settings for the `postgres` client.
pub(crate) fn client_config(url: &PostgresUrl) -> postgres::Config {
    let mut c = postgres::Config::new();
    c.user(&url.user)
        .dbname(&url.database)
        .port(url.port)
        .application_name(&crate::backend::this_daemon())
        .connect_timeout(std::time::Duration::from_secs(5))
        .keepalives_idle(std::time::Duration::from_secs(30))
        // A server that stops answering fails the call within 30 s instead of hanging it for
        // TCP's 15 minutes; a statement stuck a minute (a lock held elsewhere) fails too.
        .tcp_user_timeout(std::time::Duration::from_secs(30))
        .options("-c statement_timeout=60000")
        .ssl_mode(match url.tls {
            kaged_config::PostgresTls::Disable => postgres::config::SslMode::Disable,
            // Required; the connector (`tls.rs`) verifies the certificate and the name.
            kaged_config::PostgresTls::Verify { .. } => postgres::config::SslMode::Require,
        });
    match &url.host {
        kaged_config::PostgresHost::Tcp(h) => c.host(h),
        kaged_config::PostgresHost::Socket(dir) => c.host_path(dir),
    };
    if let Some(p) = &url.password {
        c.password(p.expose());
    }
    c
}
