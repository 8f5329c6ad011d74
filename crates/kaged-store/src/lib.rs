//! kaged's storage boundary.
//!
//! Callers hold a [`Store`] and call its async methods; the database behind it is a [`Backend`]:
//! SQLite or PostgreSQL, chosen by URL in [`Store::open`]; no caller changes. One conformance
//! suite (`tests/conformance/`) runs the same tests against both.
//!
//! - `backend.rs`: the [`Backend`] trait, with what every method must guarantee;
//! - `records.rs`: the rows it takes and returns; `error.rs`: [`StoreError`];
//! - `sqlite/`: [`SqliteBackend`], one file per table group; `migrations.rs`: its schema;
//! - `postgres/`: [`PostgresBackend`] (a bounded connection pool, TLS by rustls, the daemon's
//!   advisory lock), one file per table group; `postgres/migrations.rs`: the same schema;
//! - `plugin_storage.rs`: plugins' key-value storage: its quota, shared by both engines;
//! - `copy.rs`: `kaged storage copy` (every table into an empty database of either engine);
//!   `backup.rs`: `kaged storage backup` (a consistent snapshot of a SQLite database);
//! - `health.rs` and `held.rs`: whether storage takes writes, and the state changes held
//!   until it does again;
//! - here: [`Store`], the async, cloneable handle every caller uses.

mod backend;
mod backup;
mod copy;
mod error;
mod health;
mod held;
mod migrations;
mod plugin_storage;
mod postgres;
mod records;
mod sqlite;

use std::sync::Arc;

pub use self::postgres::{POOL_SIZE, PostgresBackend};
pub use backend::{Backend, this_daemon};
pub use backup::{Backup, backup_sqlite};
pub use copy::{CopyError, Counts, copy, table_names};
pub use error::{Result, StoreError};
pub use health::{Failure, Health, Trouble};
pub use held::MAX_HELD;
pub use migrations::LATEST_SCHEMA;
pub use plugin_storage::{PLUGIN_STORAGE_MAX_BYTES, PLUGIN_STORAGE_MAX_KEYS, PluginQuota};
pub use records::{
    ApprovalDecision, ApprovalFilter, ApprovalRecord, AuditEvent, DaemonRun, Decided,
    ProjectRecord, SessionEvent, SessionRecord, StateChange, StoredAuditEvent, TokenRecord,
    Transition,
};
pub use sqlite::SqliteBackend;

/// The handle every caller holds: runs [`Backend`] calls off the async runtime, keeps
/// [`Health`] up to date from their outcomes, and holds state changes storage refused.
#[derive(Clone)]
pub struct Store {
    backend: Arc<dyn Backend>,
    /// Whether storage takes writes (see [`Health`]); shared by every clone.
    health: Health,
    /// State changes that could not be stored yet, oldest first (see `held.rs`).
    held: held::Held,
}

impl Store {
    /// Open the database named by `[storage] url`, running migrations. PostgreSQL is opened
    /// on a thread of its own (its client must not start on an async thread), so this may be
    /// called from anywhere; it blocks until the database answered (5 s connect timeout).
    pub fn open(url: &kaged_config::StorageUrl) -> Result<Store> {
        let backend: Arc<dyn Backend> = match url {
            kaged_config::StorageUrl::Sqlite(path) => Arc::new(SqliteBackend::open(path)?),
            kaged_config::StorageUrl::Postgres(pg) => Arc::new(
                std::thread::scope(|s| s.spawn(|| PostgresBackend::open(pg)).join())
                    .map_err(|_| StoreError::Worker("opening PostgreSQL panicked".into()))??,
            ),
        };
        Ok(Store::with_backend(backend))
    }

    /// [`Store::open`] for the daemon: the database is claimed for this daemon's life before
    /// anything in it is read or changed (see [`Backend::lock_for_daemon`]), so a second
    /// daemon on the same database is refused with [`StoreError::InUse`] naming the first,
    /// before its migrations could touch it.
    pub fn open_for_daemon(url: &kaged_config::StorageUrl) -> Result<Store> {
        let backend: Arc<dyn Backend> = match url {
            kaged_config::StorageUrl::Sqlite(path) => {
                Arc::new(SqliteBackend::open_for_daemon(path)?)
            }
            kaged_config::StorageUrl::Postgres(pg) => Arc::new(
                std::thread::scope(|s| s.spawn(|| PostgresBackend::open_for_daemon(pg)).join())
                    .map_err(|_| StoreError::Worker("opening PostgreSQL panicked".into()))??,
            ),
        };
        Ok(Store::with_backend(backend))
    }

    /// A store over a backend opened by the caller.
    pub fn with_backend(backend: Arc<dyn Backend>) -> Store {
        Store {
            backend,
            health: Health::default(),
            held: held::Held::default(),
        }
    }

    /// Claim the database for this daemon for the store's life (see
    /// [`Backend::lock_for_daemon`]): [`StoreError::InUse`] names the daemon holding it.
    pub async fn lock_for_daemon(&self) -> Result<()> {
        self.run(|b| b.lock_for_daemon()).await
    }

    pub fn describe(&self) -> String {
        self.backend.describe()
    }

    /// Whether the database is PostgreSQL (for wording: a server, not a data directory).
    pub fn is_postgres(&self) -> bool {
        self.backend.describe().starts_with("postgres")
    }

    /// Whether storage takes writes, and since when it does not.
    pub fn health(&self) -> &Health {
        &self.health
    }

    /// A read: its failure is storage trouble, its success proves nothing about writes.
    async fn run<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&dyn Backend) -> Result<T> + Send + 'static,
    {
        self.call(f, false).await
    }

    /// A write: its success marks storage healthy again.
    async fn write<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&dyn Backend) -> Result<T> + Send + 'static,
    {
        self.call(f, true).await
    }

    async fn call<T, F>(&self, f: F, write: bool) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&dyn Backend) -> Result<T> + Send + 'static,
    {
        let backend = Arc::clone(&self.backend);
        let result = tokio::task::spawn_blocking(move || f(backend.as_ref()))
            .await
            .map_err(|e| StoreError::Worker(e.to_string()))
            .and_then(|r| r);
        let changed = self
            .health
            .observe(result.as_ref().map(|_| ()), write, health::now_ms());
        if changed {
            match self.health.failure() {
                Some(f) => {
                    tracing::error!(trouble = ?f.trouble, error = %f.last_error, "storage is failing")
                }
                None => tracing::info!("storage takes writes again"),
            }
        }
        result
    }

    pub async fn schema_version(&self) -> Result<u32> {
        self.run(|b| b.schema_version()).await
    }

    pub async fn ping(&self) -> Result<()> {
        self.run(|b| b.ping()).await
    }

    pub async fn append_audit(&self, event: AuditEvent) -> Result<i64> {
        self.write(move |b| b.append_audit(&event)).await
    }

    pub async fn recent_audit(&self, limit: usize) -> Result<Vec<StoredAuditEvent>> {
        self.run(move |b| b.recent_audit(limit)).await
    }

    pub async fn begin_run(
        &self,
        pid: u32,
        version: String,
        mode: String,
        now_ms: i64,
    ) -> Result<(DaemonRun, Option<DaemonRun>)> {
        self.write(move |b| b.begin_run(pid, &version, &mode, now_ms))
            .await
    }

    pub async fn end_run(&self, id: i64, now_ms: i64) -> Result<()> {
        self.write(move |b| b.end_run(id, now_ms)).await
    }

    pub async fn create_token(
        &self,
        token_hash: String,
        actor: String,
        name: Option<String>,
        now_ms: i64,
    ) -> Result<TokenRecord> {
        self.write(move |b| b.create_token(&token_hash, &actor, name.as_deref(), now_ms))
            .await
    }

    pub async fn list_tokens(&self) -> Result<Vec<TokenRecord>> {
        self.run(|b| b.list_tokens()).await
    }

    pub async fn revoke_token(&self, id: i64, now_ms: i64) -> Result<Option<TokenRecord>> {
        self.write(move |b| b.revoke_token(id, now_ms)).await
    }

    pub async fn find_active_token(
        &self,
        token_hash: String,
        now_ms: i64,
    ) -> Result<Option<TokenRecord>> {
        self.write(move |b| b.find_active_token(&token_hash, now_ms))
            .await
    }

    pub async fn put_project(&self, slug: String, root: String, now_ms: i64) -> Result<()> {
        self.write(move |b| b.put_project(&slug, &root, now_ms))
            .await
    }

    pub async fn set_project_accepted(
        &self,
        slug: String,
        config: serde_json::Value,
        had_git: bool,
    ) -> Result<bool> {
        self.write(move |b| b.set_project_accepted(&slug, &config, had_git))
            .await
    }

    pub async fn remove_project(&self, slug: String) -> Result<bool> {
        self.write(move |b| b.remove_project(&slug)).await
    }

    pub async fn list_projects(&self) -> Result<Vec<ProjectRecord>> {
        self.run(|b| b.list_projects()).await
    }

    pub async fn create_session(
        &self,
        session: SessionRecord,
        first: StateChange,
    ) -> Result<Transition> {
        self.write(move |b| b.create_session(&session, &first))
            .await
    }

    /// Store a state change. While earlier changes are held (see [`Store::flush_held`]), this
    /// one is held behind them ([`StoreError::Held`]); when storage fails for this one, it is
    /// held and the failure returned. Either way it is stored later, in order, unless more
    /// than [`MAX_HELD`] wait (then it is dropped, counted, and logged).
    pub async fn change_state(&self, change: StateChange) -> Result<Transition> {
        if let Some(held) = self.held.hold_if_waiting(&change) {
            return Err(held);
        }
        let c = change.clone();
        let result = self.write(move |b| b.change_state(&c)).await;
        if let Err(e) = &result
            && e.trouble().is_some()
        {
            self.held.hold(change);
        }
        result
    }

    /// Store the held state changes, oldest first, until one fails; returns the transitions
    /// stored (for the caller to publish) and the failure that stopped it, if any.
    pub async fn flush_held(&self) -> (Vec<Transition>, Option<StoreError>) {
        let _flushing = self.held.flushing.lock().await;
        let mut stored = Vec::new();
        while let Some(change) = self.held.front() {
            match self.write(move |b| b.change_state(&change)).await {
                Ok(t) => {
                    self.held.pop_front();
                    stored.push(t);
                }
                Err(e) if e.trouble().is_some() => return (stored, Some(e)),
                Err(e) => {
                    // Not storage trouble (the session row is gone?): it will never store.
                    tracing::error!(error = %e, "a held state change cannot be stored; dropped");
                    self.held.pop_front();
                    self.held.count_dropped();
                }
            }
        }
        (stored, None)
    }

    /// How many state changes wait to be stored, and how many were dropped over the bound.
    pub fn held_changes(&self) -> (usize, u64) {
        self.held.counts()
    }

    /// A write that changes nothing: succeeds once storage takes writes again.
    pub async fn probe_write(&self) -> Result<()> {
        self.write(|b| b.probe_write()).await
    }

    pub async fn list_sessions(
        &self,
        project: Option<String>,
        limit: usize,
    ) -> Result<Vec<SessionRecord>> {
        self.run(move |b| b.list_sessions(project.as_deref(), limit))
            .await
    }

    pub async fn get_session(&self, id: String) -> Result<Option<SessionRecord>> {
        self.run(move |b| b.get_session(&id)).await
    }

    pub async fn transitions_after(
        &self,
        after: i64,
        session: Option<String>,
        limit: usize,
    ) -> Result<Vec<Transition>> {
        self.run(move |b| b.transitions_after(after, session.as_deref(), limit))
            .await
    }

    pub async fn live_sessions(&self) -> Result<Vec<SessionRecord>> {
        self.run(|b| b.live_sessions()).await
    }

    pub async fn kept_transcripts(&self) -> Result<Vec<SessionRecord>> {
        self.run(|b| b.kept_transcripts()).await
    }

    pub async fn mark_transcript_pruned(
        &self,
        id: String,
        at_ms: i64,
        output_bytes: u64,
    ) -> Result<bool> {
        self.run(move |b| b.mark_transcript_pruned(&id, at_ms, output_bytes))
            .await
    }

    pub async fn set_transcript_extent(
        &self,
        id: String,
        output_bytes: u64,
        dropped: Option<(u64, u64)>,
    ) -> Result<()> {
        self.run(move |b| b.set_transcript_extent(&id, output_bytes, dropped))
            .await
    }

    /// Append events to the log of `session`, all or none (see [`Backend::append_events`]:
    /// the batch must continue the log exactly). A write: it updates [`Health`] like any
    /// other, but nothing is held when storage fails: the caller learns the events were not
    /// stored (and must not publish them).
    pub async fn append_events(&self, session: String, events: Vec<SessionEvent>) -> Result<()> {
        self.write(move |b| b.append_events(&session, &events))
            .await
    }

    /// At most `limit` events of `session` after `after`, in order.
    pub async fn events_after(
        &self,
        session: String,
        after: u64,
        limit: usize,
    ) -> Result<Vec<SessionEvent>> {
        self.run(move |b| b.events_after(&session, after, limit))
            .await
    }

    /// The last `seq` of `session`'s event log, 0 when empty.
    pub async fn last_event_seq(&self, session: String) -> Result<u64> {
        self.run(move |b| b.last_event_seq(&session)).await
    }

    /// Store a new approval. A write.
    pub async fn create_approval(&self, approval: ApprovalRecord) -> Result<()> {
        self.write(move |b| b.create_approval(&approval)).await
    }

    /// Decide a pending approval; the first decision wins (see [`Backend::decide_approval`]).
    pub async fn decide_approval(&self, id: String, decision: ApprovalDecision) -> Result<Decided> {
        self.write(move |b| b.decide_approval(&id, &decision)).await
    }

    pub async fn get_approval(&self, id: String) -> Result<Option<ApprovalRecord>> {
        self.run(move |b| b.get_approval(&id)).await
    }

    pub async fn list_approvals(&self, filter: ApprovalFilter) -> Result<Vec<ApprovalRecord>> {
        self.run(move |b| b.list_approvals(&filter)).await
    }

    pub async fn granted_for_session(
        &self,
        session: String,
        agent: String,
        tool: String,
    ) -> Result<bool> {
        self.run(move |b| b.granted_for_session(&session, &agent, &tool))
            .await
    }

    /// The value `plugin` stored under `key`; `None` when it has none.
    pub async fn plugin_storage_get(
        &self,
        plugin: String,
        key: String,
    ) -> Result<Option<serde_json::Value>> {
        self.run(move |b| b.plugin_storage_get(&plugin, &key)).await
    }

    /// Store `value` under `plugin`'s `key` (replacing any), stamped now; refused with
    /// [`StoreError::QuotaExceeded`] past the plugin's quota (see
    /// [`Backend::plugin_storage_set`]). A write.
    pub async fn plugin_storage_set(
        &self,
        plugin: String,
        key: String,
        value: serde_json::Value,
    ) -> Result<()> {
        let now_ms = health::now_ms();
        self.write(move |b| b.plugin_storage_set(&plugin, &key, &value, now_ms))
            .await
    }

    /// Delete `plugin`'s `key`; whether it existed. A write.
    pub async fn plugin_storage_delete(&self, plugin: String, key: String) -> Result<bool> {
        self.write(move |b| b.plugin_storage_delete(&plugin, &key))
            .await
    }

    /// `plugin`'s keys starting with `prefix` (all of them for `""`), in byte order.
    pub async fn plugin_storage_list(&self, plugin: String, prefix: String) -> Result<Vec<String>> {
        self.run(move |b| b.plugin_storage_list(&plugin, &prefix))
            .await
    }

    pub async fn close(&self) -> Result<()> {
        self.run(|b| b.close()).await
    }
}
