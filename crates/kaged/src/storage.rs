//! `kaged storage copy|backup`: moving kaged's database between SQLite and PostgreSQL, and
//! snapshots of a SQLite database (PostgreSQL: the `pg_dump` command to run instead). The work
//! is `kaged_store::copy` and `kaged_store::backup_sqlite`; this is the command line around it.

use std::path::{Path, PathBuf};

use anyhow::anyhow;
use kaged_config::{DeploymentMode, FlagOverrides, PostgresUrl, STORAGE_PASSWORD_ENV, StorageUrl};

use crate::cli::StorageCommand;
use crate::{Failure, config_for_start, host};

pub async fn run(command: StorageCommand, mode: Option<DeploymentMode>) -> Result<(), Failure> {
    match command {
        StorageCommand::Copy { from, to } => copy(&from, &to).await,
        StorageCommand::Backup { file, url } => backup(file, url.as_deref(), mode).await,
    }
}

/// A database URL as `[storage] url` takes it; a PostgreSQL password from the URL or, when it
/// has none, from `KAGED_STORAGE_PASSWORD`.
fn parse_url(flag: &str, text: &str) -> Result<StorageUrl, Failure> {
    if let Some(path) = text.strip_prefix("sqlite://") {
        let path = Path::new(path);
        if !path.is_absolute() {
            return Err(Failure::Config(format!(
                "{flag} {text:?} does not name an absolute SQLite file; use three slashes: \
                 sqlite:///ABSOLUTE/PATH/kaged.db"
            )));
        }
        return Ok(StorageUrl::Sqlite(path.to_path_buf()));
    }
    if text.starts_with("postgres://") || text.starts_with("postgresql://") {
        let mut url =
            PostgresUrl::parse(text).map_err(|e| Failure::Config(format!("{flag}: {e}")))?;
        if url.password.is_none()
            && let Some(p) = std::env::var(STORAGE_PASSWORD_ENV)
                .ok()
                .filter(|p| !p.is_empty())
        {
            url.password = Some(kaged_config::ConfigSecret::new(p));
        }
        return Ok(StorageUrl::Postgres(url));
    }
    Err(Failure::Config(format!(
        "{flag} {text:?} is not a database URL; use sqlite:///ABSOLUTE/PATH/kaged.db or \
         postgres://USER@HOST:5432/DATABASE"
    )))
}

async fn copy(from: &str, to: &str) -> Result<(), Failure> {
    let from = parse_url("--from", from)?;
    let to = parse_url("--to", to)?;
    let (f, t) = (from.clone(), to.clone());
    // The PostgreSQL client must not run on an async thread: a thread of its own.
    let copied = tokio::task::spawn_blocking(move || {
        std::thread::spawn(move || {
            kaged_store::copy(&f, &t, &mut |line| eprintln!("kaged: {line}"))
        })
        .join()
    })
    .await
    .map_err(|e| anyhow!("the copy stopped: {e}"))?
    .map_err(|_| anyhow!("the copy panicked"))?;
    match copied {
        Ok(counts) => {
            println!("copied {from} to {to}; rows per table, counted in {to}:");
            for (table, n) in counts {
                println!("  {table:<20} {n}");
            }
            Ok(())
        }
        Err(e @ (kaged_store::CopyError::NotEmpty { .. } | kaged_store::CopyError::Same(_))) => {
            Err(Failure::Config(e.to_string()))
        }
        Err(e) => Err(Failure::Runtime(anyhow!("storage copy failed: {e}"))),
    }
}

async fn backup(
    file: PathBuf,
    url: Option<&str>,
    mode: Option<DeploymentMode>,
) -> Result<(), Failure> {
    let url = match url {
        Some(text) => parse_url("--url", text)?,
        None => {
            let facts = host::gather();
            let (_, settings, _) = config_for_start(&facts, mode, None, FlagOverrides::default())?;
            settings.storage_url
        }
    };
    match url {
        StorageUrl::Sqlite(db) => {
            let shown = StorageUrl::Sqlite(db.clone());
            let done = tokio::task::spawn_blocking(move || kaged_store::backup_sqlite(&db, &file))
                .await
                .map_err(|e| anyhow!("the backup stopped: {e}"))?
                .map_err(|e| anyhow!("storage backup failed: {e}"))?;
            println!(
                "backed up {shown} to {} ({} bytes, schema {}); restore: stop kaged, put it in \
                 place of the database file (remove any -wal and -shm files beside it), start kaged",
                done.file.display(),
                done.bytes,
                done.schema
            );
            Ok(())
        }
        StorageUrl::Postgres(pg) => {
            println!("{}", pg_dump_command(&pg, &file));
            eprintln!(
                "kaged: kaged's database is PostgreSQL ({pg}): `kaged storage backup` snapshots \
                 SQLite only; back it up with the pg_dump command above (consistent while the \
                 daemon runs; restore into an empty database with pg_restore --no-owner \
                 --dbname=URL FILE)"
            );
            Err(Failure::Exit(2))
        }
    }
}

/// The `pg_dump` command that backs up `url` into `file`, for a shell (its password from
/// `KAGED_STORAGE_PASSWORD`, never written out).
fn pg_dump_command(url: &PostgresUrl, file: &Path) -> String {
    let password = if url.password.is_some() {
        format!("PGPASSWORD=\"${STORAGE_PASSWORD_ENV}\" ")
    } else {
        String::new()
    };
    format!(
        "{password}pg_dump --format=custom --file={} --dbname={}",
        quote(&file.display().to_string()),
        quote(&url.to_string())
    )
}

/// Single-quoted for a POSIX shell.
fn quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_pg_dump_command_names_the_database_and_never_the_password() {
        let mut url = PostgresUrl::parse("postgres://kaged:s3cret@db.example:5433/kaged").unwrap();
        let cmd = pg_dump_command(&url, Path::new("/backups/it's.dump"));
        assert_eq!(
            cmd,
            "PGPASSWORD=\"$KAGED_STORAGE_PASSWORD\" pg_dump --format=custom \
             --file='/backups/it'\\''s.dump' \
             --dbname='postgres://kaged@db.example:5433/kaged?sslmode=verify-full'"
        );
        url.password = None;
        assert!(pg_dump_command(&url, Path::new("/b")).starts_with("pg_dump "));
    }
}
