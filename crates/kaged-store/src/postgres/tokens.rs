//! The `api_tokens` table: bearer tokens by SHA-256 hash (the schema checks its length), never
//! their plaintext.

use postgres::{Client, Error, Row};

use crate::TokenRecord;

const TOKEN_COLUMNS: &str = "id, actor, name, created_at_ms, last_used_at_ms, revoked_at_ms";
/// Refresh `last_used_at_ms` at most this often.
const LAST_USED_GRANULARITY_MS: i64 = 3_600_000;

fn token(r: &Row) -> Result<TokenRecord, Error> {
    Ok(TokenRecord {
        id: r.try_get(0)?,
        actor: r.try_get(1)?,
        name: r.try_get(2)?,
        created_at_ms: r.try_get(3)?,
        last_used_at_ms: r.try_get(4)?,
        revoked_at_ms: r.try_get(5)?,
    })
}

pub(super) fn create(
    c: &mut Client,
    token_hash: &str,
    actor: &str,
    name: Option<&str>,
    now_ms: i64,
) -> Result<TokenRecord, Error> {
    let row = c.query_one(
        &format!(
            "INSERT INTO api_tokens (token_hash, actor, name, created_at_ms)
             VALUES ($1, $2, $3, $4) RETURNING {TOKEN_COLUMNS}"
        ),
        &[&token_hash, &actor, &name, &now_ms],
    )?;
    token(&row)
}

pub(super) fn list(c: &mut Client) -> Result<Vec<TokenRecord>, Error> {
    c.query(
        &format!("SELECT {TOKEN_COLUMNS} FROM api_tokens ORDER BY id"),
        &[],
    )?
    .iter()
    .map(token)
    .collect()
}

pub(super) fn revoke(c: &mut Client, id: i64, now_ms: i64) -> Result<Option<TokenRecord>, Error> {
    c.query_opt(
        &format!(
            "UPDATE api_tokens SET revoked_at_ms = $2 WHERE id = $1 AND revoked_at_ms IS NULL
             RETURNING {TOKEN_COLUMNS}"
        ),
        &[&id, &now_ms],
    )?
    .map(|r| token(&r))
    .transpose()
}

pub(super) fn find_active(
    c: &mut Client,
    token_hash: &str,
    now_ms: i64,
) -> Result<Option<TokenRecord>, Error> {
    let found = c
        .query_opt(
            &format!(
                "SELECT {TOKEN_COLUMNS} FROM api_tokens WHERE token_hash = $1 AND revoked_at_ms IS NULL"
            ),
            &[&token_hash],
        )?
        .map(|r| token(&r))
        .transpose()?;
    if let Some(t) = &found
        && t.last_used_at_ms
            .is_none_or(|used| now_ms - used >= LAST_USED_GRANULARITY_MS)
    {
        // Best effort: a failed bookkeeping write must not fail the authentication.
        let _ = c.execute(
            "UPDATE api_tokens SET last_used_at_ms = $2 WHERE id = $1",
            &[&t.id, &now_ms],
        );
    }
    Ok(found)
}
