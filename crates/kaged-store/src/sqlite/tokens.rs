//! The `api_tokens` table: bearer tokens by SHA-256 hash (the schema checks its length), never
//! their plaintext.

use rusqlite::{Connection, OptionalExtension, params};

use crate::TokenRecord;

const TOKEN_COLUMNS: &str = "id, actor, name, created_at_ms, last_used_at_ms, revoked_at_ms";
/// Refresh `last_used_at_ms` at most this often.
const LAST_USED_GRANULARITY_MS: i64 = 3_600_000;

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

pub(super) fn create(
    conn: &mut Connection,
    token_hash: &str,
    actor: &str,
    name: Option<&str>,
    now_ms: i64,
) -> rusqlite::Result<TokenRecord> {
    conn.execute(
        "INSERT INTO api_tokens (token_hash, actor, name, created_at_ms) VALUES (?1, ?2, ?3, ?4)",
        params![token_hash, actor, name, now_ms],
    )?;
    let id = conn.last_insert_rowid();
    conn.query_row(
        &format!("SELECT {TOKEN_COLUMNS} FROM api_tokens WHERE id = ?1"),
        [id],
        token_row,
    )
}

pub(super) fn list(conn: &mut Connection) -> rusqlite::Result<Vec<TokenRecord>> {
    let mut stmt = conn.prepare(&format!(
        "SELECT {TOKEN_COLUMNS} FROM api_tokens ORDER BY id"
    ))?;
    let rows = stmt.query_map([], token_row)?;
    rows.collect()
}

pub(super) fn revoke(
    conn: &mut Connection,
    id: i64,
    now_ms: i64,
) -> rusqlite::Result<Option<TokenRecord>> {
    let changed = conn.execute(
        "UPDATE api_tokens SET revoked_at_ms = ?2 WHERE id = ?1 AND revoked_at_ms IS NULL",
        params![id, now_ms],
    )?;
    if changed == 0 {
        return Ok(None);
    }
    conn.query_row(
        &format!("SELECT {TOKEN_COLUMNS} FROM api_tokens WHERE id = ?1"),
        [id],
        token_row,
    )
    .optional()
}

pub(super) fn find_active(
    conn: &mut Connection,
    token_hash: &str,
    now_ms: i64,
) -> rusqlite::Result<Option<TokenRecord>> {
    let found = conn
        .query_row(
            &format!(
                "SELECT {TOKEN_COLUMNS} FROM api_tokens WHERE token_hash = ?1 AND revoked_at_ms IS NULL"
            ),
            [token_hash],
            token_row,
        )
        .optional()?;
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
