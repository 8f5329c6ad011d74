//! The `projects` table: slug → root, with the configuration last in force and whether the
//! project had a `.git` then.

use rusqlite::{Connection, params};

use crate::ProjectRecord;

pub(super) fn put(
    conn: &mut Connection,
    slug: &str,
    root: &str,
    now_ms: i64,
) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT INTO projects (slug, root, loaded_at_ms) VALUES (?1, ?2, ?3)
         ON CONFLICT (slug) DO UPDATE SET
            accepted_config = CASE WHEN root = excluded.root THEN accepted_config END,
            had_git = CASE WHEN root = excluded.root THEN had_git END,
            root = excluded.root,
            loaded_at_ms = excluded.loaded_at_ms",
        params![slug, root, now_ms],
    )
    .map(|_| ())
}

pub(super) fn set_accepted(
    conn: &mut Connection,
    slug: &str,
    config: &serde_json::Value,
    had_git: bool,
) -> rusqlite::Result<bool> {
    conn.execute(
        "UPDATE projects SET accepted_config = ?2, had_git = ?3 WHERE slug = ?1",
        params![slug, config.to_string(), had_git],
    )
    .map(|n| n > 0)
}

pub(super) fn remove(conn: &mut Connection, slug: &str) -> rusqlite::Result<bool> {
    conn.execute("DELETE FROM projects WHERE slug = ?1", [slug])
        .map(|n| n > 0)
}

pub(super) fn list(conn: &mut Connection) -> rusqlite::Result<Vec<ProjectRecord>> {
    let mut stmt = conn.prepare(
        "SELECT slug, root, loaded_at_ms, accepted_config, had_git FROM projects ORDER BY slug",
    )?;
    let rows = stmt.query_map([], |r| {
        let accepted: Option<String> = r.get(3)?;
        Ok(ProjectRecord {
            slug: r.get(0)?,
            root: r.get(1)?,
            loaded_at_ms: r.get(2)?,
            // Unreadable text counts as nothing accepted: the files are then read as at a
            // first load.
            accepted_config: accepted.and_then(|t| serde_json::from_str(&t).ok()),
            had_git: r.get(4)?,
        })
    })?;
    rows.collect()
}
