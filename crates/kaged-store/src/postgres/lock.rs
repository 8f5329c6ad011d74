//! The daemon's claim on its database: a session-level advisory lock taken by a connection of
//! its own, held for the backend's life. A second claimant is refused with who holds it, read
//! from `pg_locks` and `pg_stat_activity` (every kaged connection's `application_name` is
//! `kaged pid N on HOST`).

use std::sync::MutexGuard;
use std::time::Duration;

use postgres::Client;

use super::PostgresBackend;
use super::schema::{DAEMON_LOCK, LOCK_SPACE};
use crate::{Result, StoreError};

impl PostgresBackend {
    fn lock_conn(&self) -> MutexGuard<'_, Option<Client>> {
        self.lock.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Take the advisory lock unless this backend holds it on a live connection.
    pub(super) fn claim(&self) -> Result<()> {
        let mut held = self.lock_conn();
        if held.as_ref().is_some_and(|c| !c.is_closed()) {
            return Ok(());
        }
        if let Some(lost) = held.take() {
            drop(lost);
        }
        let mut client = self.pool.connect().map_err(|e| self.err(e))?;
        let got: bool = client
            .query_one(
                "SELECT pg_try_advisory_lock($1, $2)",
                &[&LOCK_SPACE, &DAEMON_LOCK],
            )
            .and_then(|r| r.try_get(0))
            .map_err(|e| self.err(e))?;
        if got {
            *held = Some(client);
            return Ok(());
        }
        let holder = holder(&mut client).map_err(|e| self.err(e))?;
        Err(StoreError::InUse {
            place: self.place.clone(),
            holder,
        })
    }

    /// With the lock claimed: check its connection still lives, and claim it again if it was
    /// lost (the server restarted, say). Refused if another daemon took it meanwhile.
    pub(super) fn check_lock(&self) -> Result<()> {
        let alive = {
            let mut held = self.lock_conn();
            match held.as_mut() {
                None => return Ok(()),
                Some(c) => c.is_valid(Duration::from_secs(5)).is_ok(),
            }
        };
        if alive {
            return Ok(());
        }
        tracing::warn!(database = %self.place, "the connection holding kaged's database lock was lost; taking it again");
        if let Some(lost) = self.lock_conn().take() {
            drop(lost);
        }
        self.claim()
    }
}

/// Who holds the lock, as well as PostgreSQL tells it.
fn holder(c: &mut Client) -> std::result::Result<String, postgres::Error> {
    let row = c.query_opt(
        "SELECT a.application_name, a.pid, COALESCE(host(a.client_addr), 'a Unix socket'),
                to_char(a.backend_start AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')
         FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
         WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2
           AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
           AND l.classid::bigint = $1 AND l.objid::bigint = $2
         LIMIT 1",
        &[&i64::from(LOCK_SPACE), &i64::from(DAEMON_LOCK)],
    )?;
    let Some(row) = row else {
        return Ok("a holder that just left; try again".into());
    };
    let app: Option<String> = row.try_get(0)?;
    let pid: i32 = row.try_get(1)?;
    let from: Option<String> = row.try_get(2)?;
    let since: Option<String> = row.try_get(3)?;
    let who = app
        .filter(|a| !a.is_empty())
        .unwrap_or_else(|| "a client without a name".into());
    Ok(format!(
        "{who}, PostgreSQL backend pid {pid} connected from {} since {}",
        from.unwrap_or_else(|| "somewhere PostgreSQL does not show".into()),
        since.unwrap_or_else(|| "a time PostgreSQL does not show".into())
    ))
}
