use std::fs;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use rusqlite::{Connection, OptionalExtension, params};

use crate::migrations::{LATEST_SCHEMA, MIGRATIONS};
use crate::{
    AuditEvent, Backend, DaemonRun, ProjectRecord, Result, SessionRecord, StateChange, StoreError,
    StoredAuditEvent, TokenRecord, Transition,
};

const TOKEN_COLUMNS: &str = "id, actor, name, created_at_ms, last_used_at_ms, revoked_at_ms";
/// Refresh `last_used_at_ms` at most this often.
const LAST_USED_GRANULARITY_MS: i64 = 3_600_000;

const SESSION_COLUMNS: &str = "id, project, kind, name, command, caged, state, exit_code, reason, \
     created_by, created_at_ms, ended_at_ms, transcript_pruned_at_ms, output_bytes, dropped_from, \
     dropped_to";

fn session_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<SessionRecord> {
    let command: String = r.get(4)?;
    Ok(SessionRecord {
        id: r.get(0)?,
        project: r.get(1)?,
        kind: r.get(2)?,
        name: r.get(3)?,
        command: serde_json::from_str(&command).unwrap_or_default(),
        caged: r.get(5)?,
        state: r.get(6)?,
        exit_code: r.get(7)?,
        reason: r.get(8)?,
        created_by: r.get(9)?,
        created_at_ms: r.get(10)?,
        ended_at_ms: r.get(11)?,
        transcript_pruned_at_ms: r.get(12)?,
        output_bytes: r.get::<_, Option<i64>>(13)?.map(as_u64),
        dropped: match (r.get::<_, Option<i64>>(14)?, r.get::<_, Option<i64>>(15)?) {
            (Some(from), Some(to)) => Some((as_u64(from), as_u64(to))),
            _ => None,
        },
    })
}

fn as_u64(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

fn as_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn insert_transition(
    tx: &rusqlite::Transaction<'_>,
    c: &StateChange,
) -> rusqlite::Result<Transition> {
    tx.execute(
        "INSERT INTO session_transitions (session_id, state, at_ms, actor, detail)
         VALUES (?1, ?2, ?3, ?4, ?5)",
        params![
            c.session_id,
            c.state,
            c.at_ms,
            c.actor,
            c.detail.to_string()
        ],
    )?;
    Ok(Transition {
        id: tx.last_insert_rowid(),
        session_id: c.session_id.clone(),
        state: c.state.clone(),
        at_ms: c.at_ms,
        actor: c.actor.clone(),
        detail: c.detail.clone(),
    })
}

fn token_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<TokenRecord> {
    Ok(TokenRecord {
        id: r.get(0)?,
        actor: r.get(1)?,
        name: r.get(2)?,
        created_at_ms: r.get(3)?,
        last_used_at_ms: r.get(4)?,
        revoked_at_ms: r.get(5)?,
    })
}

/// SQLite in WAL mode, one connection guarded by a mutex: the daemon is the only writer and
/// its statements are short.
pub struct SqliteBackend {
    path: PathBuf,
    conn: Mutex<Connection>,
}

impl SqliteBackend {
    pub fn open(path: &Path) -> Result<Self> {
        let io = |source| StoreError::Io {
            path: path.to_path_buf(),
            source,
        };
        if let Some(dir) = path.parent()
            && !dir.exists()
        {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(io)?;
        }
        let conn = Connection::open(path).map_err(|e| opening(path, e))?;
        // The database holds the audit trail: owner only, whether we created it or not.
        let mode = fs::metadata(path).map_err(io)?.permissions().mode();
        if mode & 0o077 != 0 {
            fs::set_permissions(path, fs::Permissions::from_mode(0o600)).map_err(io)?;
        }
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(|e| opening(path, e))?;
        // Refuse a newer schema before changing anything (journal mode included).
        let found: u32 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .map_err(|e| opening(path, e))?;
        if found > LATEST_SCHEMA {
            return Err(StoreError::NewerSchema {
                path: path.to_path_buf(),
                found,
                supported: LATEST_SCHEMA,
            });
        }
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(|e| opening(path, e))?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(|e| opening(path, e))?;
        conn.pragma_update(None, "foreign_keys", "ON")
            .map_err(|e| opening(path, e))?;
        // 512 KiB of page cache (SQLite's default is 2 MiB): kaged's queries are small and the
        // file stays in the OS page cache anyway; the daemon's own memory stays small.
        conn.pragma_update(None, "cache_size", -512)
            .map_err(|e| opening(path, e))?;
        let backend = SqliteBackend {
            path: path.to_path_buf(),
            conn: Mutex::new(conn),
        };
        backend.migrate(LATEST_SCHEMA)?;
        Ok(backend)
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock leaves the connection usable (SQLite rolls back).
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn err(&self, e: rusqlite::Error) -> StoreError {
        sql(&self.path, e)
    }

    /// Bring the schema up to `target` (the latest in production; lower in tests that build an
    /// old database).
    pub fn migrate(&self, target: u32) -> Result<()> {
        let mut conn = self.conn();
        let found: u32 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .map_err(|e| self.err(e))?;
        if found > LATEST_SCHEMA {
            return Err(StoreError::NewerSchema {
                path: self.path.clone(),
                found,
                supported: LATEST_SCHEMA,
            });
        }
        for (index, sql_text) in MIGRATIONS.iter().enumerate().take(target as usize) {
            let version = index as u32 + 1;
            if version <= found {
                continue;
            }
            let tx = conn.transaction().map_err(|e| self.err(e))?;
            tx.execute_batch(sql_text).map_err(|e| self.err(e))?;
            tx.pragma_update(None, "user_version", version)
                .map_err(|e| self.err(e))?;
            tx.commit().map_err(|e| self.err(e))?;
        }
        Ok(())
    }

    /// Open without migrating (tests build old databases this way).
    pub fn open_at_version(path: &Path, version: u32) -> Result<Self> {
        let conn = Connection::open(path).map_err(|e| sql(path, e))?;
        let backend = SqliteBackend {
            path: path.to_path_buf(),
            conn: Mutex::new(conn),
        };
        backend.migrate(version)?;
        Ok(backend)
    }
}

/// An error while opening: a file that is not SQLite (or is damaged) gets its own error, naming
/// the file and what to do; anything else is reported as it is.
fn opening(path: &Path, source: rusqlite::Error) -> StoreError {
    match source.sqlite_error_code() {
        Some(rusqlite::ErrorCode::NotADatabase | rusqlite::ErrorCode::DatabaseCorrupt) => {
            StoreError::NotADatabase {
                path: path.to_path_buf(),
                reason: source.to_string(),
            }
        }
        _ => sql(path, source),
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
        self.conn()
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .map_err(|e| self.err(e))
    }

    fn ping(&self) -> Result<()> {
        self.conn()
            .query_row("SELECT count(*) FROM daemon_runs", [], |r| {
                r.get::<_, i64>(0)
            })
            .map(|_| ())
            .map_err(|e| self.err(e))
    }

    fn append_audit(&self, e: &AuditEvent) -> Result<i64> {
        let conn = self.conn();
        conn.execute(
            "INSERT INTO audit_events (ts_ms, kind, outcome, identity, source, detail)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                e.ts_ms,
                e.kind,
                e.outcome,
                e.identity,
                e.source,
                e.detail.to_string()
            ],
        )
        .map_err(|e| self.err(e))?;
        Ok(conn.last_insert_rowid())
    }

    fn recent_audit(&self, limit: usize) -> Result<Vec<StoredAuditEvent>> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare(
                "SELECT id, ts_ms, kind, outcome, identity, source, detail
                 FROM audit_events ORDER BY id DESC LIMIT ?1",
            )
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([limit as i64], |r| {
                let detail: String = r.get(6)?;
                Ok(StoredAuditEvent {
                    id: r.get(0)?,
                    event: AuditEvent {
                        ts_ms: r.get(1)?,
                        kind: r.get(2)?,
                        outcome: r.get(3)?,
                        identity: r.get(4)?,
                        source: r.get(5)?,
                        detail: serde_json::from_str(&detail)
                            .unwrap_or(serde_json::Value::String(detail)),
                    },
                })
            })
            .map_err(|e| self.err(e))?;
        rows.collect::<rusqlite::Result<Vec<_>>>()
            .map_err(|e| self.err(e))
    }

    fn begin_run(
        &self,
        pid: u32,
        version: &str,
        mode: &str,
        now_ms: i64,
    ) -> Result<(DaemonRun, Option<DaemonRun>)> {
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(|e| self.err(e))?;
        let previous = tx
            .query_row(
                "SELECT id, pid, version, mode, started_at_ms, stopped_at_ms
                 FROM daemon_runs ORDER BY id DESC LIMIT 1",
                [],
                |r| {
                    Ok(DaemonRun {
                        id: r.get(0)?,
                        pid: r.get(1)?,
                        version: r.get(2)?,
                        mode: r.get(3)?,
                        started_at_ms: r.get(4)?,
                        stopped_at_ms: r.get(5)?,
                    })
                },
            )
            .optional()
            .map_err(|e| self.err(e))?
            .filter(|run| run.stopped_at_ms.is_none());
        tx.execute(
            "INSERT INTO daemon_runs (pid, version, mode, started_at_ms) VALUES (?1, ?2, ?3, ?4)",
            params![pid, version, mode, now_ms],
        )
        .map_err(|e| self.err(e))?;
        let run = DaemonRun {
            id: tx.last_insert_rowid(),
            pid,
            version: version.to_string(),
            mode: mode.to_string(),
            started_at_ms: now_ms,
            stopped_at_ms: None,
        };
        tx.commit().map_err(|e| self.err(e))?;
        Ok((run, previous))
    }

    fn end_run(&self, id: i64, now_ms: i64) -> Result<()> {
        self.conn()
            .execute(
                "UPDATE daemon_runs SET stopped_at_ms = ?2 WHERE id = ?1",
                params![id, now_ms],
            )
            .map(|_| ())
            .map_err(|e| self.err(e))
    }

    fn create_token(
        &self,
        token_hash: &str,
        actor: &str,
        name: Option<&str>,
        now_ms: i64,
    ) -> Result<TokenRecord> {
        let conn = self.conn();
        conn.execute(
            "INSERT INTO api_tokens (token_hash, actor, name, created_at_ms) VALUES (?1, ?2, ?3, ?4)",
            params![token_hash, actor, name, now_ms],
        )
        .map_err(|e| self.err(e))?;
        let id = conn.last_insert_rowid();
        conn.query_row(
            &format!("SELECT {TOKEN_COLUMNS} FROM api_tokens WHERE id = ?1"),
            [id],
            token_row,
        )
        .map_err(|e| self.err(e))
    }

    fn list_tokens(&self) -> Result<Vec<TokenRecord>> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare(&format!(
                "SELECT {TOKEN_COLUMNS} FROM api_tokens ORDER BY id"
            ))
            .map_err(|e| self.err(e))?;
        let rows = stmt.query_map([], token_row).map_err(|e| self.err(e))?;
        rows.collect::<rusqlite::Result<Vec<_>>>()
            .map_err(|e| self.err(e))
    }

    fn revoke_token(&self, id: i64, now_ms: i64) -> Result<Option<TokenRecord>> {
        let conn = self.conn();
        let changed = conn
            .execute(
                "UPDATE api_tokens SET revoked_at_ms = ?2 WHERE id = ?1 AND revoked_at_ms IS NULL",
                params![id, now_ms],
            )
            .map_err(|e| self.err(e))?;
        if changed == 0 {
            return Ok(None);
        }
        conn.query_row(
            &format!("SELECT {TOKEN_COLUMNS} FROM api_tokens WHERE id = ?1"),
            [id],
            token_row,
        )
        .optional()
        .map_err(|e| self.err(e))
    }

    fn find_active_token(&self, token_hash: &str, now_ms: i64) -> Result<Option<TokenRecord>> {
        let conn = self.conn();
        let found = conn
            .query_row(
                &format!(
                    "SELECT {TOKEN_COLUMNS} FROM api_tokens WHERE token_hash = ?1 AND revoked_at_ms IS NULL"
                ),
                [token_hash],
                token_row,
            )
            .optional()
            .map_err(|e| self.err(e))?;
        if let Some(t) = &found
            && t.last_used_at_ms
                .is_none_or(|used| now_ms - used >= LAST_USED_GRANULARITY_MS)
        {
            // Best effort: a failed bookkeeping write must not fail the authentication.
            let _ = conn.execute(
                "UPDATE api_tokens SET last_used_at_ms = ?2 WHERE id = ?1",
                params![t.id, now_ms],
            );
        }
        Ok(found)
    }

    fn put_project(&self, slug: &str, root: &str, now_ms: i64) -> Result<()> {
        self.conn()
            .execute(
                "INSERT INTO projects (slug, root, loaded_at_ms) VALUES (?1, ?2, ?3)
                 ON CONFLICT (slug) DO UPDATE SET
                    accepted_config = CASE WHEN root = excluded.root THEN accepted_config END,
                    had_git = CASE WHEN root = excluded.root THEN had_git END,
                    root = excluded.root,
                    loaded_at_ms = excluded.loaded_at_ms",
                params![slug, root, now_ms],
            )
            .map(|_| ())
            .map_err(|e| self.err(e))
    }

    fn set_project_accepted(
        &self,
        slug: &str,
        config: &serde_json::Value,
        had_git: bool,
    ) -> Result<bool> {
        self.conn()
            .execute(
                "UPDATE projects SET accepted_config = ?2, had_git = ?3 WHERE slug = ?1",
                params![slug, config.to_string(), had_git],
            )
            .map(|n| n > 0)
            .map_err(|e| self.err(e))
    }

    fn remove_project(&self, slug: &str) -> Result<bool> {
        self.conn()
            .execute("DELETE FROM projects WHERE slug = ?1", [slug])
            .map(|n| n > 0)
            .map_err(|e| self.err(e))
    }

    fn list_projects(&self) -> Result<Vec<ProjectRecord>> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare(
                "SELECT slug, root, loaded_at_ms, accepted_config, had_git FROM projects ORDER BY slug",
            )
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([], |r| {
                let accepted: Option<String> = r.get(3)?;
                Ok(ProjectRecord {
                    slug: r.get(0)?,
                    root: r.get(1)?,
                    loaded_at_ms: r.get(2)?,
                    // Unreadable text counts as nothing accepted: the files are then read as
                    // at a first load.
                    accepted_config: accepted.and_then(|t| serde_json::from_str(&t).ok()),
                    had_git: r.get(4)?,
                })
            })
            .map_err(|e| self.err(e))?;
        rows.collect::<rusqlite::Result<Vec<_>>>()
            .map_err(|e| self.err(e))
    }

    fn create_session(&self, s: &SessionRecord, first: &StateChange) -> Result<Transition> {
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(|e| self.err(e))?;
        tx.execute(
            "INSERT INTO sessions (id, project, kind, name, command, caged, state, exit_code, reason,
                                   created_by, created_at_ms, ended_at_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
            params![
                s.id,
                s.project,
                s.kind,
                s.name,
                serde_json::to_string(&s.command).unwrap_or_default(),
                s.caged,
                s.state,
                s.exit_code,
                s.reason,
                s.created_by,
                s.created_at_ms,
                s.ended_at_ms
            ],
        )
        .map_err(|e| self.err(e))?;
        let t = insert_transition(&tx, first).map_err(|e| self.err(e))?;
        tx.commit().map_err(|e| self.err(e))?;
        Ok(t)
    }

    fn change_state(&self, c: &StateChange) -> Result<Transition> {
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(|e| self.err(e))?;
        tx.execute(
            "UPDATE sessions SET state = ?2,
                    exit_code = COALESCE(?3, exit_code),
                    reason = COALESCE(?4, reason),
                    ended_at_ms = CASE WHEN ?5 THEN ?6 ELSE ended_at_ms END
             WHERE id = ?1",
            params![
                c.session_id,
                c.state,
                c.exit_code,
                c.reason,
                c.ended,
                c.at_ms
            ],
        )
        .map_err(|e| self.err(e))?;
        let t = insert_transition(&tx, c).map_err(|e| self.err(e))?;
        tx.commit().map_err(|e| self.err(e))?;
        Ok(t)
    }

    fn list_sessions(&self, project: Option<&str>, limit: usize) -> Result<Vec<SessionRecord>> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare(&format!(
                "SELECT {SESSION_COLUMNS} FROM sessions
                 WHERE (?1 IS NULL OR project = ?1)
                 ORDER BY created_at_ms DESC, rowid DESC LIMIT ?2"
            ))
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map(params![project, limit as i64], session_row)
            .map_err(|e| self.err(e))?;
        rows.collect::<rusqlite::Result<Vec<_>>>()
            .map_err(|e| self.err(e))
    }

    fn get_session(&self, id: &str) -> Result<Option<SessionRecord>> {
        self.conn()
            .query_row(
                &format!("SELECT {SESSION_COLUMNS} FROM sessions WHERE id = ?1"),
                [id],
                session_row,
            )
            .optional()
            .map_err(|e| self.err(e))
    }

    fn transitions_after(
        &self,
        after: i64,
        session: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Transition>> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare(
                "SELECT id, session_id, state, at_ms, actor, detail FROM session_transitions
                 WHERE id > ?1 AND (?2 IS NULL OR session_id = ?2)
                 ORDER BY id LIMIT ?3",
            )
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map(params![after, session, limit as i64], |r| {
                let detail: String = r.get(5)?;
                Ok(Transition {
                    id: r.get(0)?,
                    session_id: r.get(1)?,
                    state: r.get(2)?,
                    at_ms: r.get(3)?,
                    actor: r.get(4)?,
                    detail: serde_json::from_str(&detail).unwrap_or_default(),
                })
            })
            .map_err(|e| self.err(e))?;
        rows.collect::<rusqlite::Result<Vec<_>>>()
            .map_err(|e| self.err(e))
    }

    fn live_sessions(&self) -> Result<Vec<SessionRecord>> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare(&format!(
                "SELECT {SESSION_COLUMNS} FROM sessions
                 WHERE state NOT IN ('exited', 'failed', 'killed') ORDER BY created_at_ms"
            ))
            .map_err(|e| self.err(e))?;
        let rows = stmt.query_map([], session_row).map_err(|e| self.err(e))?;
        rows.collect::<rusqlite::Result<Vec<_>>>()
            .map_err(|e| self.err(e))
    }

    fn kept_transcripts(&self) -> Result<Vec<SessionRecord>> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare(&format!(
                "SELECT {SESSION_COLUMNS} FROM sessions WHERE transcript_pruned_at_ms IS NULL
                 ORDER BY ended_at_ms IS NULL, ended_at_ms, created_at_ms, id"
            ))
            .map_err(|e| self.err(e))?;
        let rows = stmt.query_map([], session_row).map_err(|e| self.err(e))?;
        rows.collect::<rusqlite::Result<Vec<_>>>()
            .map_err(|e| self.err(e))
    }

    fn mark_transcript_pruned(&self, id: &str, at_ms: i64, output_bytes: u64) -> Result<bool> {
        self.conn()
            .execute(
                "UPDATE sessions SET transcript_pruned_at_ms = ?2,
                        output_bytes = MAX(COALESCE(output_bytes, 0), ?3)
                 WHERE id = ?1 AND transcript_pruned_at_ms IS NULL",
                params![id, at_ms, as_i64(output_bytes)],
            )
            .map(|n| n == 1)
            .map_err(|e| self.err(e))
    }

    fn set_transcript_extent(
        &self,
        id: &str,
        output_bytes: u64,
        dropped: Option<(u64, u64)>,
    ) -> Result<()> {
        self.conn()
            .execute(
                "UPDATE sessions SET output_bytes = ?2, dropped_from = ?3, dropped_to = ?4
                 WHERE id = ?1",
                params![
                    id,
                    as_i64(output_bytes),
                    dropped.map(|d| as_i64(d.0)),
                    dropped.map(|d| as_i64(d.1))
                ],
            )
            .map(|_| ())
            .map_err(|e| self.err(e))
    }

    fn close(&self) -> Result<()> {
        self.conn()
            .execute_batch("PRAGMA wal_checkpoint(TRUNCATE);")
            .map_err(|e| self.err(e))
    }

    fn probe_write(&self) -> Result<()> {
        // Rewrites the newest run's row as it is: a real write (a WAL frame), no change.
        self.conn()
            .execute(
                "UPDATE daemon_runs SET pid = pid WHERE id = (SELECT max(id) FROM daemon_runs)",
                [],
            )
            .map(|_| ())
            .map_err(|e| self.err(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(kind: &str) -> AuditEvent {
        AuditEvent {
            ts_ms: 1,
            kind: kind.into(),
            outcome: "success".into(),
            identity: Some("user:ann".into()),
            source: Some("127.0.0.1:5000".into()),
            detail: serde_json::json!({"k": "v"}),
        }
    }

    #[test]
    fn what_was_accepted_for_a_project_survives_until_its_root_changes() {
        let dir = tempfile::tempdir().unwrap();
        let b = SqliteBackend::open(&dir.path().join("kaged.db")).unwrap();
        b.put_project("demo", "/p/demo", 1).unwrap();
        assert_eq!(b.list_projects().unwrap()[0].accepted_config, None);
        let config = serde_json::json!({"project": "demo", "primary": {"cage": "disabled"}});
        assert!(b.set_project_accepted("demo", &config, true).unwrap());
        assert!(!b.set_project_accepted("other", &config, true).unwrap());
        // Registered again from the same root (local.toml, at every start): kept.
        b.put_project("demo", "/p/demo", 2).unwrap();
        let r = &b.list_projects().unwrap()[0];
        assert_eq!(
            (r.accepted_config.as_ref(), r.had_git),
            (Some(&config), Some(true))
        );
        // From another root: forgotten.
        b.put_project("demo", "/q/demo", 3).unwrap();
        let r = &b.list_projects().unwrap()[0];
        assert_eq!((r.accepted_config.as_ref(), r.had_git), (None, None));
    }

    #[test]
    fn fresh_database_gets_the_latest_schema_in_wal_mode_with_owner_only_mode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/kaged.db");
        let b = SqliteBackend::open(&path).unwrap();
        assert_eq!(b.schema_version().unwrap(), LATEST_SCHEMA);
        let mode: String = b
            .conn()
            .pragma_query_value(None, "journal_mode", |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        let perms = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(perms, 0o600);
        let dir_perms = fs::metadata(path.parent().unwrap())
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(dir_perms, 0o700);
    }

    #[test]
    fn existing_database_is_upgraded_and_keeps_its_rows() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kaged.db");
        {
            let old = SqliteBackend::open_at_version(&path, 1).unwrap();
            assert_eq!(old.schema_version().unwrap(), 1);
            old.append_audit(&event("auth.login")).unwrap();
            assert!(
                old.begin_run(1, "x", "user", 1).is_err(),
                "no daemon_runs in v1"
            );
        }
        let b = SqliteBackend::open(&path).unwrap();
        assert_eq!(b.schema_version().unwrap(), LATEST_SCHEMA);
        let rows = b.recent_audit(10).unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].event, event("auth.login"));
        // Opening again applies nothing twice.
        drop(b);
        let b = SqliteBackend::open(&path).unwrap();
        assert_eq!(b.recent_audit(10).unwrap().len(), 1);
    }

    #[test]
    fn newer_database_is_refused_and_left_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kaged.db");
        {
            let c = Connection::open(&path).unwrap();
            c.pragma_update(None, "user_version", LATEST_SCHEMA + 5)
                .unwrap();
        }
        let err = SqliteBackend::open(&path).err().unwrap();
        assert!(matches!(err, StoreError::NewerSchema { found, .. } if found == LATEST_SCHEMA + 5));
        assert!(err.to_string().contains("newer kaged"), "{err}");
        let c = Connection::open(&path).unwrap();
        let v: u32 = c
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(v, LATEST_SCHEMA + 5);
    }

    #[test]
    fn a_file_that_is_not_sqlite_is_named_with_what_to_do_and_left_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kaged.db");
        let text = "not a database, just notes the operator keeps here\n".repeat(20);
        fs::write(&path, &text).unwrap();
        let err = SqliteBackend::open(&path).err().unwrap();
        assert!(matches!(err, StoreError::NotADatabase { .. }), "{err:?}");
        let msg = err.to_string();
        for needle in [
            path.to_str().unwrap(),
            "file is not a database",
            "Move it aside",
            "restore it from a backup",
        ] {
            assert!(msg.contains(needle), "{needle:?} in {msg}");
        }
        assert_eq!(fs::read_to_string(&path).unwrap(), text);
    }

    #[test]
    fn an_existing_loose_database_file_is_made_owner_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kaged.db");
        Connection::open(&path).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        SqliteBackend::open(&path).unwrap();
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }

    #[test]
    fn audit_events_are_append_only() {
        let dir = tempfile::tempdir().unwrap();
        let b = SqliteBackend::open(&dir.path().join("kaged.db")).unwrap();
        b.append_audit(&event("a")).unwrap();
        let c = b.conn();
        assert!(c.execute("UPDATE audit_events SET kind = 'x'", []).is_err());
        assert!(c.execute("DELETE FROM audit_events", []).is_err());
    }

    #[test]
    fn tokens_are_stored_by_hash_found_until_revoked_and_revoked_once() {
        let dir = tempfile::tempdir().unwrap();
        let b = SqliteBackend::open(&dir.path().join("kaged.db")).unwrap();
        let hash = "a".repeat(64);
        let t = b.create_token(&hash, "alice", Some("laptop"), 10).unwrap();
        assert_eq!(
            (t.actor.as_str(), t.name.as_deref()),
            ("alice", Some("laptop"))
        );
        let found = b.find_active_token(&hash, 20).unwrap().unwrap();
        assert_eq!(found.id, t.id);
        assert_eq!(b.list_tokens().unwrap()[0].last_used_at_ms, Some(20));
        assert!(b.find_active_token(&"b".repeat(64), 20).unwrap().is_none());
        assert!(b.revoke_token(t.id, 30).unwrap().is_some());
        assert!(
            b.revoke_token(t.id, 40).unwrap().is_none(),
            "already revoked"
        );
        assert!(b.revoke_token(999, 40).unwrap().is_none(), "unknown");
        assert!(b.find_active_token(&hash, 50).unwrap().is_none());
        assert_eq!(b.list_tokens().unwrap()[0].revoked_at_ms, Some(30));
        // The schema refuses what the API must never store.
        assert!(b.create_token("short", "alice", None, 1).is_err());
        assert!(
            b.create_token(&"c".repeat(64), "Bootstrap", None, 1)
                .is_err()
        );
        assert!(b.create_token(&"d".repeat(64), " ", None, 1).is_err());
        assert!(
            b.create_token(&hash, "bob", None, 1).is_err(),
            "hashes are unique"
        );
    }

    #[test]
    fn unclean_previous_run_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let b = SqliteBackend::open(&dir.path().join("kaged.db")).unwrap();
        let (first, prev) = b.begin_run(10, "0.1.0", "user", 100).unwrap();
        assert!(prev.is_none());
        let (second, prev) = b.begin_run(11, "0.1.0", "user", 200).unwrap();
        assert_eq!(prev.map(|r| r.id), Some(first.id), "first never stopped");
        b.end_run(second.id, 300).unwrap();
        let (_, prev) = b.begin_run(12, "0.1.0", "user", 400).unwrap();
        assert!(prev.is_none(), "second stopped cleanly");
    }

    #[test]
    fn sessions_keep_every_transition_and_live_ones_are_found() {
        let dir = tempfile::tempdir().unwrap();
        let db = SqliteBackend::open(&dir.path().join("k.db")).unwrap();
        let change = |state: &str, at: i64, ended: bool| StateChange {
            session_id: "s1".into(),
            state: state.into(),
            at_ms: at,
            actor: "ann".into(),
            detail: serde_json::json!({"n": at}),
            exit_code: ended.then_some(0),
            reason: None,
            ended,
        };
        let session = SessionRecord {
            id: "s1".into(),
            project: "demo".into(),
            kind: "terminal".into(),
            name: "terminal".into(),
            command: vec!["bash".into(), "-l".into()],
            caged: true,
            state: "queued".into(),
            exit_code: None,
            reason: None,
            created_by: "ann".into(),
            created_at_ms: 1,
            ended_at_ms: None,
            ..Default::default()
        };
        let first = db
            .create_session(&session, &change("queued", 1, false))
            .unwrap();
        let running = db.change_state(&change("running", 2, false)).unwrap();
        assert!(running.id > first.id);
        assert_eq!(db.live_sessions().unwrap().len(), 1);
        db.change_state(&change("exited", 3, true)).unwrap();
        assert!(db.live_sessions().unwrap().is_empty());
        let got = db.get_session("s1").unwrap().unwrap();
        assert_eq!(
            (got.state.as_str(), got.exit_code, got.ended_at_ms),
            ("exited", Some(0), Some(3))
        );
        assert_eq!(got.command, session.command);
        let all = db.transitions_after(0, Some("s1"), 10).unwrap();
        assert_eq!(
            all.iter().map(|t| t.state.as_str()).collect::<Vec<_>>(),
            ["queued", "running", "exited"]
        );
        assert_eq!(db.transitions_after(first.id, None, 10).unwrap().len(), 2);
        assert_eq!(db.list_sessions(Some("other"), 10).unwrap().len(), 0);
        assert_eq!(db.list_sessions(None, 10).unwrap().len(), 1);
        assert!(db.get_session("nope").unwrap().is_none());
    }

    #[test]
    fn pruned_transcripts_are_recorded_on_the_row_once() {
        let dir = tempfile::tempdir().unwrap();
        let db = SqliteBackend::open(&dir.path().join("kaged.db")).unwrap();
        for (id, created, ended) in [("a", 1, Some(5)), ("b", 2, Some(3)), ("c", 3, None)] {
            let record = SessionRecord {
                id: id.into(),
                project: "demo".into(),
                kind: "task".into(),
                name: "t".into(),
                state: if ended.is_some() { "exited" } else { "running" }.into(),
                created_by: "ann".into(),
                created_at_ms: created,
                ended_at_ms: ended,
                ..Default::default()
            };
            let first = StateChange {
                session_id: id.into(),
                state: record.state.clone(),
                at_ms: created,
                actor: "ann".into(),
                detail: serde_json::json!({}),
                exit_code: None,
                reason: None,
                ended: ended.is_some(),
            };
            db.create_session(&record, &first).unwrap();
        }
        let kept: Vec<String> = db
            .kept_transcripts()
            .unwrap()
            .into_iter()
            .map(|r| r.id)
            .collect();
        assert_eq!(kept, ["b", "a", "c"], "oldest end first, live last");
        db.set_transcript_extent("a", 5000, Some((100, 4000)))
            .unwrap();
        assert!(db.mark_transcript_pruned("a", 9, 10).unwrap());
        assert!(
            !db.mark_transcript_pruned("a", 10, 10).unwrap(),
            "pruned once"
        );
        let a = db.get_session("a").unwrap().unwrap();
        assert_eq!(
            (a.transcript_pruned_at_ms, a.output_bytes, a.dropped),
            (Some(9), Some(5000), Some((100, 4000)))
        );
        let kept: Vec<String> = db
            .kept_transcripts()
            .unwrap()
            .into_iter()
            .map(|r| r.id)
            .collect();
        assert_eq!(kept, ["b", "c"]);
    }
}
