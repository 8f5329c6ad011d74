//! The `plugin_storage` table: each plugin's keys and values. Every statement filters by the
//! plugin; a prefix is compared as a substring (never `LIKE`, so `%` and `_` are literal).

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use crate::StoreError;
use crate::plugin_storage::{Holding, read_back, stored};

pub(super) fn get(
    conn: &Connection,
    plugin: &str,
    key: &str,
) -> rusqlite::Result<Option<serde_json::Value>> {
    conn.query_row(
        "SELECT value FROM plugin_storage WHERE plugin = ?1 AND key = ?2",
        params![plugin, key],
        |r| r.get::<_, String>(0),
    )
    .optional()
    .map(|v| v.map(read_back))
}

/// Upsert one key within the plugin's quota, in one transaction: the outer error is the
/// database's, the inner one the quota's (an error of the request; nothing written).
pub(super) fn set(
    conn: &mut Connection,
    plugin: &str,
    key: &str,
    value: &serde_json::Value,
    now_ms: i64,
) -> rusqlite::Result<Result<(), StoreError>> {
    let value = stored(value);
    // Immediate: the quota is counted under the write lock, so nothing changes in between.
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let (keys, bytes): (i64, i64) = tx.query_row(
        "SELECT count(*), COALESCE(sum(octet_length(value)), 0) FROM plugin_storage
         WHERE plugin = ?1 AND key <> ?2",
        params![plugin, key],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
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
        "INSERT INTO plugin_storage (plugin, key, value, updated_at_ms) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (plugin, key) DO UPDATE
         SET value = excluded.value, updated_at_ms = excluded.updated_at_ms",
        params![plugin, key, value, now_ms],
    )?;
    tx.commit()?;
    Ok(Ok(()))
}

pub(super) fn delete(conn: &Connection, plugin: &str, key: &str) -> rusqlite::Result<bool> {
    conn.execute(
        "DELETE FROM plugin_storage WHERE plugin = ?1 AND key = ?2",
        params![plugin, key],
    )
    .map(|n| n > 0)
}

pub(super) fn list(conn: &Connection, plugin: &str, prefix: &str) -> rusqlite::Result<Vec<String>> {
    // BINARY collation (the default): keys compare and sort as their UTF-8 bytes.
    let mut stmt = conn.prepare_cached(
        "SELECT key FROM plugin_storage
         WHERE plugin = ?1 AND substr(key, 1, length(?2)) = ?2 ORDER BY key",
    )?;
    let rows = stmt.query_map(params![plugin, prefix], |r| r.get(0))?;
    rows.collect()
}
