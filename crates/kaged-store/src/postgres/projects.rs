//! The `projects` table: slug → root, with the configuration last in force and whether the
//! project had a `.git` then.

use postgres::{Client, Error};

use crate::ProjectRecord;

pub(super) fn put(c: &mut Client, slug: &str, root: &str, now_ms: i64) -> Result<(), Error> {
    c.execute(
        "INSERT INTO projects AS p (slug, root, loaded_at_ms) VALUES ($1, $2, $3)
         ON CONFLICT (slug) DO UPDATE SET
            accepted_config = CASE WHEN p.root = excluded.root THEN p.accepted_config END,
            had_git = CASE WHEN p.root = excluded.root THEN p.had_git END,
            root = excluded.root,
            loaded_at_ms = excluded.loaded_at_ms",
        &[&slug, &root, &now_ms],
    )
    .map(|_| ())
}

pub(super) fn set_accepted(
    c: &mut Client,
    slug: &str,
    config: &serde_json::Value,
    had_git: bool,
) -> Result<bool, Error> {
    c.execute(
        "UPDATE projects SET accepted_config = $2, had_git = $3 WHERE slug = $1",
        &[&slug, &config.to_string(), &had_git],
    )
    .map(|n| n > 0)
}

pub(super) fn remove(c: &mut Client, slug: &str) -> Result<bool, Error> {
    c.execute("DELETE FROM projects WHERE slug = $1", &[&slug])
        .map(|n| n > 0)
}

pub(super) fn list(c: &mut Client) -> Result<Vec<ProjectRecord>, Error> {
    c.query(
        "SELECT slug, root, loaded_at_ms, accepted_config, had_git FROM projects
         ORDER BY slug COLLATE \"C\"",
        &[],
    )?
    .iter()
    .map(|r| {
        let accepted: Option<String> = r.try_get(3)?;
        Ok(ProjectRecord {
            slug: r.try_get(0)?,
            root: r.try_get(1)?,
            loaded_at_ms: r.try_get(2)?,
            // Unreadable text counts as nothing accepted (as in SQLite).
            accepted_config: accepted.and_then(|t| serde_json::from_str(&t).ok()),
            had_git: r.try_get(4)?,
        })
    })
    .collect()
}
