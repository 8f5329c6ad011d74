//! kaged's storage boundary.
//!
//! Callers hold a [`Store`] and call its async methods; the database behind it is a [`Backend`].
//! Only SQLite exists today. A PostgreSQL backend implements the same trait and is chosen by URL
//! in [`Store::open`]; no caller changes.

mod health;
mod held;
mod migrations;
mod sqlite;

use std::path::PathBuf;
use std::sync::Arc;

use serde::Serialize;

pub use health::{Failure, Health, Trouble};
pub use held::MAX_HELD;
pub use migrations::LATEST_SCHEMA;
pub use sqlite::SqliteBackend;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database {path}: {source}")]
    Sqlite {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error(
        "database {path} has schema version {found}, written by a newer kaged (this kaged knows up to {supported}); \
         upgrade kaged, or point [storage] url at another file"
    )]
    NewerSchema {
        path: PathBuf,
        found: u32,
        supported: u32,
    },
    #[error("cannot prepare {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("storage worker stopped: {0}")]
    Worker(String),
    /// The file at the storage path is not SQLite (or is damaged beyond opening). kaged does not
    /// touch it: the operator decides.
    #[error(
        "{path} is not a usable SQLite database ({reason}); kaged left its contents untouched. \
         Move it aside (with any {path}-wal and {path}-shm next to it) to start with an empty database, \
         or restore it from a backup, or point [storage] url at another file"
    )]
    NotADatabase { path: PathBuf, reason: String },
    /// Earlier state changes wait to be stored (storage failed); this one waits behind them.
    #[error(
        "storage is failing: the state change of session {session} is held with {held} other(s) and stored when storage recovers"
    )]
    Held { session: String, held: usize },
}

pub type Result<T> = std::result::Result<T, StoreError>;

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

/// What a database does for kaged. Methods block; [`Store`] runs them off the async runtime.
pub trait Backend: Send + Sync + 'static {
    fn describe(&self) -> String;
    fn schema_version(&self) -> Result<u32>;
    /// A cheap round trip proving the database answers (readiness).
    fn ping(&self) -> Result<()>;
    fn append_audit(&self, event: &AuditEvent) -> Result<i64>;
    /// Newest first.
    fn recent_audit(&self, limit: usize) -> Result<Vec<StoredAuditEvent>>;
    /// Record a start; returns the new run and the previous run if it never recorded a stop.
    fn begin_run(
        &self,
        pid: u32,
        version: &str,
        mode: &str,
        now_ms: i64,
    ) -> Result<(DaemonRun, Option<DaemonRun>)>;
    fn end_run(&self, id: i64, now_ms: i64) -> Result<()>;
    fn create_token(
        &self,
        token_hash: &str,
        actor: &str,
        name: Option<&str>,
        now_ms: i64,
    ) -> Result<TokenRecord>;
    fn list_tokens(&self) -> Result<Vec<TokenRecord>>;
    /// `None` when no active token has this id (unknown or already revoked).
    fn revoke_token(&self, id: i64, now_ms: i64) -> Result<Option<TokenRecord>>;
    /// The active token with this hash; marks it used (at most once an hour, to spare writes).
    fn find_active_token(&self, token_hash: &str, now_ms: i64) -> Result<Option<TokenRecord>>;
    /// Register a project; a new root for a slug forgets what was accepted for the old one.
    fn put_project(&self, slug: &str, root: &str, now_ms: i64) -> Result<()>;
    /// Record the configuration in force and whether the project had a `.git`; `false` when no
    /// such project is registered.
    fn set_project_accepted(
        &self,
        slug: &str,
        config: &serde_json::Value,
        had_git: bool,
    ) -> Result<bool>;
    /// `false` when no such project was registered.
    fn remove_project(&self, slug: &str) -> Result<bool>;
    fn list_projects(&self) -> Result<Vec<ProjectRecord>>;
    /// Insert a new session (its first transition included).
    fn create_session(&self, s: &SessionRecord, first: &StateChange) -> Result<Transition>;
    fn change_state(&self, change: &StateChange) -> Result<Transition>;
    /// Newest first; all projects when `project` is `None`.
    fn list_sessions(&self, project: Option<&str>, limit: usize) -> Result<Vec<SessionRecord>>;
    fn get_session(&self, id: &str) -> Result<Option<SessionRecord>>;
    /// Transitions with an id above `after`, oldest first (`session` narrows to one session).
    fn transitions_after(
        &self,
        after: i64,
        session: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Transition>>;
    /// Sessions not in a final state (left behind by a daemon that stopped).
    fn live_sessions(&self) -> Result<Vec<SessionRecord>>;
    /// Sessions whose transcript is still kept (live ones included), oldest end first.
    fn kept_transcripts(&self) -> Result<Vec<SessionRecord>>;
    /// Record that a session's transcript was deleted (`output_bytes` long).
    fn mark_transcript_pruned(&self, id: &str, at_ms: i64, output_bytes: u64) -> Result<bool>;
    /// Record a transcript's final length and what its cap dropped.
    fn set_transcript_extent(
        &self,
        id: &str,
        output_bytes: u64,
        dropped: Option<(u64, u64)>,
    ) -> Result<()>;
    /// Flush and release the database (SQLite: checkpoint the WAL).
    fn close(&self) -> Result<()>;
    /// A write that changes nothing, proving the database takes writes (storage recovery).
    fn probe_write(&self) -> Result<()>;
}

#[derive(Clone)]
pub struct Store {
    backend: Arc<dyn Backend>,
    /// Whether storage takes writes (see [`Health`]); shared by every clone.
    health: Health,
    /// State changes that could not be stored yet, oldest first (see `held.rs`).
    held: held::Held,
}

impl Store {
    /// Open the database named by `[storage] url`, running migrations.
    pub fn open(url: &kaged_config::StorageUrl) -> Result<Store> {
        let backend: Arc<dyn Backend> = match url {
            kaged_config::StorageUrl::Sqlite(path) => Arc::new(SqliteBackend::open(path)?),
        };
        Ok(Store {
            backend,
            health: Health::default(),
            held: held::Held::default(),
        })
    }

    pub fn describe(&self) -> String {
        self.backend.describe()
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

    pub async fn close(&self) -> Result<()> {
        self.run(|b| b.close()).await
    }
}
