//! The `plugin_storage` table: each plugin's keys and values. Every statement filters by the
//! plugin; a prefix is compared as a substring (never `LIKE`, so `%` and `_` are literal). The
//! key column collates as bytes (`"C"`), so the listing's order is SQLite's.

use postgres::{Client, Error};

use super::schema::{PLUGIN_STORAGE_WRITERS, in_turn};
use crate::StoreError;
use crate::plugin_storage::{Holding, read_back, stored};

pub(super) fn get(
    c: &mut Client,
    plugin: &str,
    key: &str,
) -> Result<Option<serde_json::Value>, Error> {
    c.query_opt(
        "SELECT value FROM plugin_storage WHERE plugin = $1 AND key = $2",
        &[&plugin, &key],
    )?
    .map(|r| r.try_get::<_, String>(0).map(read_back))
    .transpose()
}

/// Upsert one key within the plugin's quota, in one transaction: the outer error is the
/// database's, the inner one the quota's (an error of the request; nothing written).
pub(super) fn set(
    c: &mut Client,
    plugin: &str,
    key: &str,
    value: &serde_json::Value,
    now_ms: i64,
) -> Result<Result<(), StoreError>, Error> {
    let value = stored(value);
    let mut tx = c.transaction()?;
    // Writers of plugin storage take turns, so two racing writes cannot both fit a quota
    // counted before either committed (writes are small and rare: one turn for all plugins).
    in_turn(&mut tx, PLUGIN_STORAGE_WRITERS)?;
    let row = tx.query_one(
        "SELECT count(*), COALESCE(sum(octet_length(value)), 0)::bigint FROM plugin_storage
         WHERE plugin = $1 AND key <> $2",
        &[&plugin, &key],
    )?;
    let (keys, bytes): (i64, i64) = (row.try_get(0)?, row.try_get(1)?);
    let held = Holding {
        keys: u64::try_from(keys).unwrap_or(0),
        bytes: u64::try_from(bytes).unwrap_or(0),
    };
    if let Some(limit) = held.exceeded_by(value.len()) {
        return Ok(Err(StoreError::QuotaExceeded {
            plugin: plugin.to_string(),
            limit,
        }));
    }
    tx.execute(
        "INSERT INTO plugin_storage (plugin, key, value, updated_at_ms) VALUES ($1, $2, $3, $4)
         ON CONFLICT (plugin, key) DO UPDATE
         SET value = EXCLUDED.value, updated_at_ms = EXCLUDED.updated_at_ms",
        &[&plugin, &key, &value, &now_ms],
    )?;
    tx.commit()?;
    Ok(Ok(()))
}

pub(super) fn delete(c: &mut Client, plugin: &str, key: &str) -> Result<bool, Error> {
    c.execute(
        "DELETE FROM plugin_storage WHERE plugin = $1 AND key = $2",
        &[&plugin, &key],
    )
    .map(|n| n > 0)
}

pub(super) fn list(c: &mut Client, plugin: &str, prefix: &str) -> Result<Vec<String>, Error> {
    c.query(
        "SELECT key FROM plugin_storage
         WHERE plugin = $1 AND left(key, char_length($2)) = $2 ORDER BY key",
        &[&plugin, &prefix],
    )?
    .iter()
    .map(|r| r.try_get(0))
    .collect()
}
