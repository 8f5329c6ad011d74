//! One database per test, of either kind, with what the cases need beyond the `Backend` trait:
//! reopening it, opening it at an old schema version, and running raw SQL on a connection of
//! its own (to prove the database itself refuses what the API never does).
//!
//! PostgreSQL: `KAGED_TEST_POSTGRES_URL` names an admin URL of a private cluster (see
//! `scripts/postgres serve`); each test creates a fresh database there and drops it at the end.
//! Without the variable the PostgreSQL half says why it skipped and passes, unless
//! `KAGED_TEST_POSTGRES_REQUIRED=1` (then it fails).

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

use kaged_config::{PostgresHost, PostgresUrl, StorageUrl};
use kaged_store::{Backend, LATEST_SCHEMA, PostgresBackend, SqliteBackend, StoreError};

#[allow(clippy::large_enum_variant)] // one per test: size does not matter
pub enum Db {
    Sqlite {
        _dir: tempfile::TempDir,
        path: PathBuf,
    },
    Postgres {
        admin: PostgresUrl,
        url: PostgresUrl,
    },
}

static NEXT: AtomicUsize = AtomicUsize::new(0);

/// The `postgres` client's settings for `url` (test connections: no application name).
pub fn pg_config(url: &PostgresUrl) -> postgres::Config {
    let mut c = postgres::Config::new();
    c.user(&url.user).dbname(&url.database).port(url.port);
    match &url.host {
        PostgresHost::Tcp(h) => c.host(h),
        PostgresHost::Socket(d) => c.host_path(d),
    };
    if let Some(p) = &url.password {
        c.password(p.expose());
    }
    c
}

pub fn pg_client(url: &PostgresUrl) -> postgres::Client {
    pg_config(url)
        .connect(postgres::NoTls)
        .unwrap_or_else(|e| panic!("cannot connect to {url}: {e}"))
}

impl Db {
    pub fn sqlite() -> Db {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kaged.db");
        Db::Sqlite { _dir: dir, path }
    }

    /// A fresh database in the test cluster; `None` (the test passes) without one.
    pub fn postgres(test: &str) -> Option<Db> {
        Db::postgres_created_with(test, "")
    }

    /// [`Db::postgres`], created with `options` after `CREATE DATABASE NAME` (a collation).
    pub fn postgres_created_with(test: &str, options: &str) -> Option<Db> {
        let Some(text) = std::env::var("KAGED_TEST_POSTGRES_URL")
            .ok()
            .filter(|t| !t.is_empty())
        else {
            if std::env::var("KAGED_TEST_POSTGRES_REQUIRED").as_deref() == Ok("1") {
                panic!(
                    "KAGED_TEST_POSTGRES_REQUIRED=1 but KAGED_TEST_POSTGRES_URL is not set; \
                     start a cluster with `scripts/postgres serve DIR` and export the URL it prints"
                );
            }
            eprintln!(
                "{test}: skipped on PostgreSQL: KAGED_TEST_POSTGRES_URL is not set \
                 (scripts/postgres serve DIR prints one; scripts/test sets it)"
            );
            return None;
        };
        let admin = PostgresUrl::parse(&text)
            .unwrap_or_else(|e| panic!("KAGED_TEST_POSTGRES_URL={text}: {e}"));
        let name = format!(
            "kaged_t{}_{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed),
            &test[..test.len().min(30)]
        );
        pg_client(&admin)
            .batch_execute(&format!("CREATE DATABASE \"{name}\" {options}"))
            .unwrap_or_else(|e| panic!("cannot create database {name} at {admin}: {e}"));
        let mut url = admin.clone();
        url.database = name;
        Some(Db::Postgres { admin, url })
    }

    pub fn is_postgres(&self) -> bool {
        matches!(self, Db::Postgres { .. })
    }

    pub fn storage_url(&self) -> StorageUrl {
        match self {
            Db::Sqlite { path, .. } => StorageUrl::Sqlite(path.clone()),
            Db::Postgres { url, .. } => StorageUrl::Postgres(url.clone()),
        }
    }

    pub fn try_open(&self) -> Result<Box<dyn Backend>, StoreError> {
        self.try_open_at(LATEST_SCHEMA)
    }

    pub fn try_open_at(&self, version: u32) -> Result<Box<dyn Backend>, StoreError> {
        Ok(match self {
            Db::Sqlite { path, .. } if version == LATEST_SCHEMA => {
                Box::new(SqliteBackend::open(path)?)
            }
            Db::Sqlite { path, .. } => Box::new(SqliteBackend::open_at_version(path, version)?),
            Db::Postgres { url, .. } => Box::new(PostgresBackend::open_at_version(url, version)?),
        })
    }

    /// Opened as the daemon opens it: claimed first, then migrated.
    pub fn try_open_for_daemon(&self) -> Result<Box<dyn Backend>, StoreError> {
        Ok(match self {
            Db::Sqlite { path, .. } => Box::new(SqliteBackend::open_for_daemon(path)?),
            Db::Postgres { url, .. } => Box::new(PostgresBackend::open_for_daemon(url)?),
        })
    }

    pub fn open_for_daemon(&self) -> Box<dyn Backend> {
        self.try_open_for_daemon().unwrap()
    }

    pub fn open(&self) -> Box<dyn Backend> {
        self.try_open().unwrap()
    }

    pub fn open_at(&self, version: u32) -> Box<dyn Backend> {
        self.try_open_at(version).unwrap()
    }

    /// Run one statement on a connection of its own, as the database's owner would.
    pub fn exec(&self, sql: &str) -> Result<(), String> {
        match self {
            Db::Sqlite { path, .. } => rusqlite::Connection::open(path)
                .and_then(|c| c.execute_batch(sql))
                .map_err(|e| e.to_string()),
            Db::Postgres { url, .. } => pg_client(url).batch_execute(sql).map_err(|e| {
                e.as_db_error()
                    .map_or_else(|| e.to_string(), |d| d.message().to_string())
            }),
        }
    }

    /// The first column of every row `sql` returns, as text, read on a connection of its own.
    pub fn query_text(&self, sql: &str) -> Vec<String> {
        match self {
            Db::Sqlite { path, .. } => {
                let c = rusqlite::Connection::open(path).unwrap();
                let mut stmt = c.prepare(sql).unwrap();
                stmt.query_map([], |r| r.get(0))
                    .unwrap()
                    .collect::<rusqlite::Result<_>>()
                    .unwrap()
            }
            Db::Postgres { url, .. } => pg_client(url)
                .query(sql, &[])
                .unwrap()
                .iter()
                .map(|r| r.get(0))
                .collect(),
        }
    }

    /// Mark the database as written by a kaged `version` knows nothing of.
    pub fn set_schema_version(&self, version: u32) {
        let sql = match self {
            Db::Sqlite { .. } => format!("PRAGMA user_version = {version}"),
            Db::Postgres { .. } => format!(
                "INSERT INTO schema_migrations (version, applied_at_ms) VALUES ({version}, 0)"
            ),
        };
        self.exec(&sql).unwrap();
    }

    /// The schema version as the database records it, read without kaged.
    pub fn raw_schema_version(&self) -> u32 {
        match self {
            Db::Sqlite { path, .. } => rusqlite::Connection::open(path)
                .unwrap()
                .pragma_query_value(None, "user_version", |r| r.get(0))
                .unwrap(),
            Db::Postgres { url, .. } => {
                let v: i32 = pg_client(url)
                    .query_one("SELECT max(version) FROM schema_migrations", &[])
                    .unwrap()
                    .get(0);
                v as u32
            }
        }
    }

    /// Kill every connection to the database but ours (PostgreSQL only): a server restart,
    /// as kaged's connections see it (`57P01 terminating connection due to administrator
    /// command`).
    pub fn kill_connections(&self) -> usize {
        let Db::Postgres { admin, url } = self else {
            panic!("PostgreSQL only")
        };
        let killed: i64 = pg_client(admin)
            .query_one(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
                 WHERE datname = $1 AND pid <> pg_backend_pid()",
                &[&url.database],
            )
            .unwrap()
            .get(0);
        killed as usize
    }
}

impl Drop for Db {
    fn drop(&mut self) {
        if let Db::Postgres { admin, url } = self
            && let Ok(mut c) = pg_config(admin).connect(postgres::NoTls)
        {
            let _ = c.batch_execute(&format!(
                "DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)",
                url.database
            ));
        }
    }
}
