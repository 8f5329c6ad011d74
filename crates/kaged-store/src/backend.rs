//! The [`Backend`] trait: what a database must do for kaged, and guarantee while doing it.

use crate::{
    ApprovalDecision, ApprovalFilter, ApprovalRecord, AuditEvent, DaemonRun, Decided,
    ProjectRecord, Result, SessionEvent, SessionRecord, StateChange, StoredAuditEvent, TokenRecord,
    Transition,
};

/// What a database does for kaged. Methods block; [`crate::Store`] runs them off the async
/// runtime, one call per blocking task, from any thread (hence `Send + Sync`).
///
/// Guarantees every implementation keeps (SQLite and PostgreSQL; `tests/conformance/` checks
/// both against the same tests):
///
/// - **Opening.** The constructor creates a missing database with owner-only access (SQLite;
///   a PostgreSQL database is created by its operator, kaged creates its tables), applies
///   the migrations the database lacks in order (each one and its version bump together, or
///   neither), and refuses a database whose schema is newer than [`crate::LATEST_SCHEMA`]
///   ([`crate::StoreError::NewerSchema`]) or that is not a database of its kind
///   ([`crate::StoreError::NotADatabase`]; PostgreSQL: one holding tables but no kaged schema,
///   [`crate::StoreError::NotKaged`]) *before changing anything in it*. A daemon opens with
///   [`crate::Store::open_for_daemon`], which claims the database first
///   ([`Backend::lock_for_daemon`]).
/// - **Atomicity.** A method that writes several rows writes all or none of them.
/// - **Durability.** A write that returned `Ok` survives a crash of the daemon (SQLite's WAL
///   with `synchronous = NORMAL` may lose it only to a power loss, never corrupt it;
///   PostgreSQL: committed).
/// - **Errors.** Storage trouble (disk full, I/O error, read-only, database unreachable) comes
///   back as an error whose [`crate::StoreError::trouble`] says so; [`crate::Store`] reports
///   it as failing storage and holds state changes. An error of the request itself (a
///   constraint, an unknown row) must *not* look like storage trouble. "Not found" is never
///   an error: it is `None` or `false`. PostgreSQL: no answer (refused, lost, timed out),
///   SQLSTATE classes 08, 28, 53 (53100: full), 57, 58, XX, and 25006 (read-only) and 3D000
///   are trouble; a connection that failed so is dropped and the next call opens another.
/// - **Secrets.** Bearer tokens are stored and looked up by their SHA-256 hash only; nothing
///   here ever sees a plaintext token.
/// - **Order.** Ids of audit records and of session transitions increase in the order the rows
///   were written (committed) and are never reused: the event stream uses transition ids as
///   its cursor, so a reader must never see id N+1 before N is visible (PostgreSQL: their
///   writers take turns).
///   A session's event log (`session_events`) is numbered by its writer, from 1 with no gap;
///   the backend refuses a batch that does not continue it exactly.
/// - **Plugins' storage.** Each plugin's keys are its own: every statement names the plugin,
///   so no key or prefix reaches another plugin's rows; a quota per plugin is enforced in the
///   write's own transaction (see [`Backend::plugin_storage_set`]).
pub trait Backend: Send + Sync + 'static {
    /// Where the data lives, for logs and `kaged status` (`sqlite:///path`,
    /// `postgres://USER@HOST:PORT/DB`); never a password.
    fn describe(&self) -> String;
    /// The schema version in force (the number of migrations applied).
    fn schema_version(&self) -> Result<u32>;
    /// A cheap round trip proving the database answers (readiness). Reads only. PostgreSQL:
    /// also checks the connection holding the daemon's claim, and claims again if it was lost.
    fn ping(&self) -> Result<()>;
    /// Append one audit record; returns its id. The audit trail is append-only: the database
    /// itself must refuse updates and deletes of stored records (triggers in SQLite), not only
    /// this API.
    fn append_audit(&self, event: &AuditEvent) -> Result<i64>;
    /// The newest `limit` audit records, newest first. `detail` that is not JSON comes back as
    /// a JSON string, never an error.
    fn recent_audit(&self, limit: usize) -> Result<Vec<StoredAuditEvent>>;
    /// Record a daemon start; returns the new run and the previous run if it never recorded a
    /// stop (the daemon crashed or was killed). Reading the previous run and inserting the new
    /// one is one transaction.
    fn begin_run(
        &self,
        pid: u32,
        version: &str,
        mode: &str,
        now_ms: i64,
    ) -> Result<(DaemonRun, Option<DaemonRun>)>;
    /// Record the clean stop of the run `id` (a no-op for an unknown id).
    fn end_run(&self, id: i64, now_ms: i64) -> Result<()>;
    /// Store a new token by its hash. The database refuses (as an error of the request) a hash
    /// that is not 64 characters, a hash already stored, an empty actor or the actor
    /// `bootstrap` (any case), and an empty name.
    fn create_token(
        &self,
        token_hash: &str,
        actor: &str,
        name: Option<&str>,
        now_ms: i64,
    ) -> Result<TokenRecord>;
    /// Every token, revoked ones included, oldest first.
    fn list_tokens(&self) -> Result<Vec<TokenRecord>>;
    /// Revoke an active token; returns it as revoked. `None` when no active token has this id
    /// (unknown or already revoked): a token is revoked once, at its first revocation's time.
    fn revoke_token(&self, id: i64, now_ms: i64) -> Result<Option<TokenRecord>>;
    /// The active (not revoked) token with this hash. Marks it used at most once an hour, to
    /// spare writes; a failure of that bookkeeping write never fails the lookup.
    fn find_active_token(&self, token_hash: &str, now_ms: i64) -> Result<Option<TokenRecord>>;
    /// Register a project (or register it again). A new root for a slug forgets what was
    /// accepted for the old one (`accepted_config`, `had_git`); the same root keeps it.
    fn put_project(&self, slug: &str, root: &str, now_ms: i64) -> Result<()>;
    /// Record the configuration in force and whether the project had a `.git`; `false` when no
    /// such project is registered.
    fn set_project_accepted(
        &self,
        slug: &str,
        config: &serde_json::Value,
        had_git: bool,
    ) -> Result<bool>;
    /// Forget a project (its sessions stay); `false` when no such project was registered.
    fn remove_project(&self, slug: &str) -> Result<bool>;
    /// Every registered project, by slug. An accepted configuration that no longer reads as
    /// JSON comes back as `None` (the files are then judged as at a first load).
    fn list_projects(&self) -> Result<Vec<ProjectRecord>>;
    /// Insert a new session and its first transition, in one transaction; returns the
    /// transition (with its id).
    fn create_session(&self, s: &SessionRecord, first: &StateChange) -> Result<Transition>;
    /// Apply a state change to the session row (state; exit code and reason when given; the
    /// end time when `ended`) and append its transition, in one transaction; returns the
    /// transition. Changes are stored in the order of the calls.
    fn change_state(&self, change: &StateChange) -> Result<Transition>;
    /// At most `limit` sessions, newest first; all projects when `project` is `None`.
    fn list_sessions(&self, project: Option<&str>, limit: usize) -> Result<Vec<SessionRecord>>;
    /// One session; `None` when unknown.
    fn get_session(&self, id: &str) -> Result<Option<SessionRecord>>;
    /// At most `limit` transitions with an id above `after`, in id order (`session` narrows to
    /// one session). This is the event stream's replay: it must see every transition whose
    /// write returned before the call.
    fn transitions_after(
        &self,
        after: i64,
        session: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Transition>>;
    /// Sessions not in a final state (`exited`, `failed`, `killed`): left behind by a daemon
    /// that stopped, oldest first.
    fn live_sessions(&self) -> Result<Vec<SessionRecord>>;
    /// Sessions whose transcript is still kept (live ones included): ended ones by end time,
    /// oldest first, then the live ones.
    fn kept_transcripts(&self) -> Result<Vec<SessionRecord>>;
    /// Record that a session's transcript was deleted (`output_bytes` long, never lowering a
    /// length already recorded); `false` when it was already marked or the session is unknown.
    fn mark_transcript_pruned(&self, id: &str, at_ms: i64, output_bytes: u64) -> Result<bool>;
    /// Record a transcript's final length and the range its cap dropped (`None`: nothing).
    fn set_transcript_extent(
        &self,
        id: &str,
        output_bytes: u64,
        dropped: Option<(u64, u64)>,
    ) -> Result<()>;
    /// Append a batch of events to the log of `session` (an existing session), in one
    /// transaction: all or none. The batch must continue the log exactly: its first `seq` is
    /// the stored last plus one (1 for an empty log) and each next one adds one; otherwise
    /// nothing is written and the error is [`crate::StoreError::OutOfOrder`] (an error of the
    /// request, not storage trouble), so two writers racing on one log cannot interleave or
    /// overwrite. A `body` that is not JSON, or an unknown session, is refused as an error of
    /// the request too. An empty batch writes nothing and succeeds. Rows are never updated.
    fn append_events(&self, session: &str, events: &[SessionEvent]) -> Result<()>;
    /// At most `limit` events of `session` with `seq > after`, in `seq` order, bodies exactly
    /// as appended. This is a log's replay: it must see every event whose append returned
    /// before the call. An unknown session has no events (an empty list, not an error).
    fn events_after(&self, session: &str, after: u64, limit: usize) -> Result<Vec<SessionEvent>>;
    /// The last `seq` of `session`'s log; 0 when it has none (or the session is unknown).
    fn last_event_seq(&self, session: &str) -> Result<u64>;
    /// Store a new approval (normally `pending`). An unknown session or arguments that are
    /// not JSON are refused as errors of the request.
    fn create_approval(&self, approval: &ApprovalRecord) -> Result<()>;
    /// Decide the approval `id` if it is still pending, atomically: of two racing decisions
    /// exactly one is [`Decided::Now`], the other [`Decided::Already`] with the winner's
    /// record. A decided approval is never changed again (the database refuses it too).
    fn decide_approval(&self, id: &str, decision: &ApprovalDecision) -> Result<Decided>;
    /// One approval; `None` when unknown.
    fn get_approval(&self, id: &str) -> Result<Option<ApprovalRecord>>;
    /// Approvals matching `filter`, newest first, at most `filter.limit`.
    fn list_approvals(&self, filter: &ApprovalFilter) -> Result<Vec<ApprovalRecord>>;
    /// Whether `agent`'s calls of `tool` in `session` were approved for the rest of it.
    fn granted_for_session(&self, session: &str, agent: &str, tool: &str) -> Result<bool>;
    /// The value `plugin` stored under `key`, as stored; `None` when it has none. Plugins'
    /// storage (`plugin_storage`) is one namespace per plugin: every method reads or changes
    /// the rows of the plugin it names, never another's, whatever the key or prefix holds.
    /// Keys compare and sort as their UTF-8 bytes in both engines. The caller checks keys and
    /// values against the wire limits; a key holding NUL is refused by PostgreSQL as an error
    /// of the request (the caller allows no control characters).
    fn plugin_storage_get(&self, plugin: &str, key: &str) -> Result<Option<serde_json::Value>>;
    /// Store `value` (as compact JSON) under `plugin`'s `key`, replacing any value there, in
    /// one transaction that first counts what the plugin holds: a write after which the plugin
    /// would hold more than [`crate::PLUGIN_STORAGE_MAX_KEYS`] keys or more than
    /// [`crate::PLUGIN_STORAGE_MAX_BYTES`] bytes of values is refused with
    /// [`crate::StoreError::QuotaExceeded`] (an error of the request) and writes nothing.
    /// Replacing a key counts its new value instead of its old one. Two racing writes cannot
    /// both fit one quota (SQLite: the write lock is taken before counting; PostgreSQL: the
    /// writers take turns).
    fn plugin_storage_set(
        &self,
        plugin: &str,
        key: &str,
        value: &serde_json::Value,
        now_ms: i64,
    ) -> Result<()>;
    /// Delete `plugin`'s `key`; whether it existed.
    fn plugin_storage_delete(&self, plugin: &str, key: &str) -> Result<bool>;
    /// `plugin`'s keys that start with `prefix` (every key for `""`), in byte order. The
    /// prefix is matched literally (a substring comparison, never `LIKE`: `%` and `_` are
    /// characters like any other).
    fn plugin_storage_list(&self, plugin: &str, prefix: &str) -> Result<Vec<String>>;
    /// Flush and release what the database holds at a clean stop (SQLite: checkpoint the WAL
    /// into the main file). Other calls may still follow and must work.
    fn close(&self) -> Result<()>;
    /// A real write that changes nothing, proving the database takes writes again (storage
    /// recovery). It must fail while writes fail, and never adds or changes a row.
    fn probe_write(&self) -> Result<()>;
    /// Claim the database for this daemon for as long as this backend lives, so that two
    /// daemons never share one database by accident. Claiming again from the same backend is a
    /// no-op; a claim while another backend (another daemon, or another backend in this
    /// process) holds it fails with [`crate::StoreError::InUse`] naming the holder
    /// (`kaged pid N on HOST`). PostgreSQL: a session-level advisory lock held by a connection
    /// of its own (retaken by [`Backend::ping`] if that connection was lost). SQLite: an
    /// exclusive `flock` on `PATH.lock` beside the file (SQLite's own locks are per
    /// transaction, not per daemon), which holds the holder's name.
    fn lock_for_daemon(&self) -> Result<()>;
}

/// Who claims a database (see [`Backend::lock_for_daemon`]), also PostgreSQL's
/// `application_name` for every connection: `kaged pid N on HOST`.
pub fn this_daemon() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "an unnamed host".into());
    format!("kaged pid {} on {host}", std::process::id())
}
