//! Why a run may not start in a project: roots that overlap another loaded project, a `.git`
//! that appeared since load, a root that is gone; each refusal names the way out.

use std::path::{Path, PathBuf};

use kaged_cage::{HostGrants, HostPath};
use serde_json::json;

use crate::audit::AuditRecord;
use crate::error::{ApiError, ErrorCode};
use crate::state::ServerState;

use super::*;

/// Whether `root/.git` holds anything. An empty directory is what the cage's mask of an absent
/// `.git` leaves behind on the host, so it does not count; anything unreadable does.
pub fn git_present(root: &Path) -> bool {
    let git = root.join(".git");
    match std::fs::symlink_metadata(&git) {
        Err(e) => e.kind() != std::io::ErrorKind::NotFound,
        Ok(m) if m.file_type().is_dir() => std::fs::read_dir(&git)
            .map(|mut entries| entries.next().is_some())
            .unwrap_or(true),
        Ok(_) => true,
    }
}

/// What `local.toml` grants the project from the host, for the weakening comparison.
pub(super) fn host_grants(state: &ServerState, slug: &str) -> HostGrants {
    grants_of(&state.info.local, slug)
}

/// What `local` (`local.toml`) grants the project `slug` from the host: environment variable
/// names and host paths (the daemon's sessions and `kaged cage run` read the same).
pub fn grants_of(local: &kaged_config::LocalConfig, slug: &str) -> HostGrants {
    let Some(g) = local.projects.get(slug) else {
        return HostGrants::default();
    };
    HostGrants {
        env: g.env.clone(),
        paths: g
            .paths
            .iter()
            .map(|p| HostPath {
                host: p.host.clone(),
                at: p.at.clone(),
                writable: p.mode == "rw",
                on_path: p.on_path,
            })
            .collect(),
    }
}

/// Loaded projects whose roots overlap `root` (one inside the other, or the same), other than
/// `slug` itself.
pub fn overlapping<'a>(projects: &'a Registry, slug: &str, root: &Path) -> Vec<&'a ProjectState> {
    projects
        .values()
        .filter(|p| p.slug != slug && (p.root.starts_with(root) || root.starts_with(&p.root)))
        .collect()
}

/// Why `slug` at `root` and `other` cannot both be loaded, with the fix. A cage sees its whole
/// project read-write, so the outer project's runs could rewrite the inner one's `.kaged`.
pub(super) fn overlap_message(slug: &str, root: &Path, other: &ProjectState) -> String {
    let how = if other.root == root {
        "is the same directory as".to_string()
    } else if root.starts_with(&other.root) {
        "lies inside".to_string()
    } else {
        "contains".to_string()
    };
    format!(
        "project `{slug}` ({}) {how} the loaded project `{}` ({}): nested projects are refused, since the outer project's runs could rewrite the inner one's .kaged files; unload one of them (`kaged project list`, then DELETE /api/v1/projects/SLUG or Unload in the console) and keep the other",
        root.display(),
        other.slug,
        other.root.display()
    )
}

/// Why a run of `p` may not start now: its root overlaps another loaded project's.
pub fn overlap_refusal(projects: &Registry, p: &ProjectState) -> Option<ApiError> {
    overlapping(projects, &p.slug, &p.root)
        .first()
        .map(|other| {
            ApiError::new(
                ErrorCode::Conflict,
                overlap_message(&p.slug, &p.root, other),
            )
        })
}

/// Why a run of `slug` may not start now: a `.git` appeared since it was loaded or accepted.
pub fn git_refusal(slug: &str, root: &Path, had_git: bool) -> Option<ApiError> {
    if had_git || !git_present(root) {
        return None;
    }
    let git = root.join(".git");
    Some(ApiError {
        code: ErrorCode::GitPlanted,
        message: format!(
            "{} appeared since project `{slug}` was loaded, and a run may have planted it: git on the host runs what its config names (core.fsmonitor, hooks). Check {}/config (core.fsmonitor, core.hooksPath) and {}/hooks, or remove it; then accept it with `kaged project reload {slug} --accept`",
            git.display(),
            git.display(),
            git.display()
        ),
        details: Some(json!({"path": git})),
    })
}

/// A project whose directory is gone (deleted, moved away, replaced by a file) starts no run:
/// refused with the reason and the fix, instead of reaching bwrap (`Can't find source path`).
/// Other trouble reading it (permissions) is left to the cage's own checks, which name it.
pub fn missing_refusal(slug: &str, root: &Path) -> Option<ApiError> {
    let problem = match std::fs::metadata(root) {
        Ok(m) if m.is_dir() => return None,
        Ok(_) => "is no longer a directory",
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory
            ) =>
        {
            "no longer exists"
        }
        Err(_) => return None,
    };
    Some(ApiError {
        code: ErrorCode::ProjectMissing,
        message: format!(
            "the directory of project `{slug}`, {}, {problem}, so no run can start in it; put it back, or unload the project with `kaged project unload {slug}`",
            root.display()
        ),
        details: Some(json!({"path": root})),
    })
}

/// Audit a run refused because of a planted `.git`.
pub async fn audit_git_refusal(
    audit: &crate::audit::AuditLog,
    slug: &str,
    root: Option<PathBuf>,
    actor: &str,
    source: Option<String>,
) {
    audit
        .record(AuditRecord {
            kind: "project.git_planted",
            success: false,
            identity: Some(actor.to_string()),
            source,
            detail: json!({"project": slug, "path": root.map(|r| r.join(".git"))}),
        })
        .await;
}
