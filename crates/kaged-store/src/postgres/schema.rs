//! Opening a PostgreSQL database and bringing its schema up to date. `schema_migrations` holds
//! one row per migration applied (the version is the highest); each migration and its row are
//! one transaction, taken under a transaction advisory lock so two daemons starting at once
//! cannot apply one twice. A database newer than this build, or one that holds tables but no
//! kaged schema, is refused before anything in it changes.

use std::sync::Mutex;

use kaged_config::PostgresUrl;
use postgres::Client;

use super::tls::Tls;
use super::{MIGRATIONS, POOL_SIZE, PostgresBackend, client_config, pool::Pool};
use crate::migrations::LATEST_SCHEMA;
use crate::{Result, StoreError};

/// The advisory lock keys of kaged (`'kage'`), and which lock: the daemon's (held for its
/// life), then the transaction locks of the migrations and of the writers whose ids must be
/// committed in order (see [`in_turn`]).
pub(super) const LOCK_SPACE: i32 = 0x6b61_6765;
pub(super) const DAEMON_LOCK: i32 = 1;
const MIGRATION_LOCK: i32 = 2;
pub(super) const AUDIT_WRITERS: i32 = 3;
pub(super) const TRANSITION_WRITERS: i32 = 4;
pub(super) const RUN_WRITERS: i32 = 5;
/// Writers of `plugin_storage`: a quota counted and kept in one turn.
pub(super) const PLUGIN_STORAGE_WRITERS: i32 = 6;

/// Make the writers of one table take turns until `tx` ends: ids come from a sequence when a
/// row is inserted, so two concurrent transactions could commit ids out of order (a reader
/// that saw id N+1 would never see N). Readers are not blocked. An advisory lock, not `LOCK
/// TABLE`, so a role without UPDATE or DELETE on the audit table can still append to it.
pub(super) fn in_turn(
    tx: &mut postgres::Transaction<'_>,
    writers: i32,
) -> std::result::Result<(), postgres::Error> {
    tx.execute(
        "SELECT pg_advisory_xact_lock($1, $2)",
        &[&LOCK_SPACE, &writers],
    )
    .map(|_| ())
}

impl PostgresBackend {
    /// Connect to the database at `url` (it must exist; kaged creates its tables) and apply the
    /// migrations it lacks. Blocks: call it off the async runtime (as [`crate::Store::open`]
    /// does).
    pub fn open(url: &PostgresUrl) -> Result<Self> {
        Self::open_at_version(url, LATEST_SCHEMA)
    }

    /// [`PostgresBackend::open`] for a daemon: claims the database first (see
    /// [`crate::Backend::lock_for_daemon`]), so a second daemon is refused before anything of
    /// the database is read or changed.
    pub fn open_for_daemon(url: &PostgresUrl) -> Result<Self> {
        let backend = Self::unmigrated(url)?;
        backend.claim()?;
        backend.migrate(LATEST_SCHEMA)?;
        Ok(backend)
    }

    /// Open without migrating further than `version` (tests build old databases this way).
    pub fn open_at_version(url: &PostgresUrl, version: u32) -> Result<Self> {
        let backend = Self::unmigrated(url)?;
        backend.migrate(version)?;
        Ok(backend)
    }

    fn unmigrated(url: &PostgresUrl) -> Result<Self> {
        let tls = Tls::new(&url.tls).map_err(|reason| StoreError::Setup {
            place: url.to_string(),
            reason,
        })?;
        Ok(PostgresBackend {
            place: url.to_string(),
            pool: Pool::new(client_config(url), tls, POOL_SIZE),
            lock: Mutex::new(None),
        })
    }

    /// Bring the schema up to `target`; refuses a newer or a foreign database untouched.
    pub fn migrate(&self, target: u32) -> Result<()> {
        let found = self.with(version)?;
        if found > LATEST_SCHEMA {
            return Err(StoreError::NewerSchema {
                place: self.place.clone(),
                found,
                supported: LATEST_SCHEMA,
            });
        }
        if found == 0 {
            let tables = self.with(foreign_tables)?;
            if !tables.is_empty() {
                return Err(StoreError::NotKaged {
                    place: self.place.clone(),
                    tables,
                });
            }
        }
        for (index, sql) in MIGRATIONS.iter().enumerate().take(target as usize) {
            let version = index as u32 + 1;
            if version <= found {
                continue;
            }
            self.with(|c| apply(c, version, sql))?;
        }
        Ok(())
    }
}

/// Apply migration `version` unless another process did meanwhile.
fn apply(c: &mut Client, version: u32, sql: &str) -> std::result::Result<(), postgres::Error> {
    let mut tx = c.transaction()?;
    tx.execute(
        "SELECT pg_advisory_xact_lock($1, $2)",
        &[&LOCK_SPACE, &MIGRATION_LOCK],
    )?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
            version       INTEGER PRIMARY KEY,
            applied_at_ms BIGINT  NOT NULL
         )",
    )?;
    if version_in(&mut tx)? >= version {
        return tx.commit();
    }
    tx.batch_execute(sql)?;
    tx.execute(
        "INSERT INTO schema_migrations (version, applied_at_ms)
         VALUES ($1, (extract(epoch FROM clock_timestamp()) * 1000)::bigint)",
        &[&(version as i32)],
    )?;
    tx.commit()
}

/// The schema version: the highest migration applied, 0 for a database without kaged's tables.
pub(super) fn version(c: &mut Client) -> std::result::Result<u32, postgres::Error> {
    version_in(c)
}

fn version_in(c: &mut impl postgres::GenericClient) -> std::result::Result<u32, postgres::Error> {
    let exists: bool = c
        .query_one("SELECT to_regclass('schema_migrations') IS NOT NULL", &[])?
        .try_get(0)?;
    if !exists {
        return Ok(0);
    }
    let v: i32 = c
        .query_one(
            "SELECT COALESCE(MAX(version), 0) FROM schema_migrations",
            &[],
        )?
        .try_get(0)?;
    Ok(u32::try_from(v).unwrap_or(0))
}

/// Up to five tables of the schema kaged would use, when it has no `schema_migrations`.
fn foreign_tables(c: &mut Client) -> std::result::Result<String, postgres::Error> {
    c.query_one(
        "SELECT COALESCE(string_agg(tablename, ', '), '') FROM (
             SELECT tablename FROM pg_tables WHERE schemaname = current_schema()
             ORDER BY tablename LIMIT 5) t",
        &[],
    )?
    .try_get(0)
}
