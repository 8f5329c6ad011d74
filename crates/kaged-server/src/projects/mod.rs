//! Projects registered with the daemon: load, list, get, reload, unload, and a watcher that
//! re-validates a project when its files change. An invalid edit never replaces the last valid
//! configuration: the project keeps running on it and shows the new problems.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Extension, Path as UrlPath, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use kaged_auth::Principal;
use kaged_cage::{Weakening, weakenings};
use kaged_dsl::{Diagnostic, Project, diagnostics_json};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::audit::{AuditRecord, now_ms};
use crate::error::{ApiError, ErrorCode};
use crate::listener::Peer;
use crate::state::{ServerState, lock};

mod files;
mod refusals;
mod watch;

pub use files::*;
pub use refusals::*;
pub use watch::*;

/// How often the watcher looks at project files.
const WATCH_EVERY: Duration = Duration::from_secs(2);

/// Modification times of `project.yaml` and `project.local.yaml`: the watcher's change test.
pub(super) type Stamp = (Option<SystemTime>, Option<SystemTime>);

#[derive(Debug, Clone)]
pub struct ProjectState {
    pub slug: String,
    pub root: PathBuf,
    /// The last valid resolved configuration.
    pub config: Value,
    /// Problems of the files as they are now (empty when they are valid).
    pub diagnostics: Vec<Diagnostic>,
    pub loaded_at_ms: i64,
    pub checked_at_ms: i64,
    stamp: Stamp,
    /// A valid edit that loosens a cage, held until the operator accepts it; `config` stays in
    /// force meanwhile.
    pub pending: Option<Pending>,
    /// Whether the project had a (non-empty) `.git` when it was loaded or last accepted: one
    /// appearing later may have been planted by a run (hooks, `core.fsmonitor`).
    pub had_git: bool,
}

/// A weakening edit waiting for the operator.
#[derive(Debug, Clone)]
pub struct Pending {
    pub config: Value,
    pub weakenings: Vec<Weakening>,
    pub detected_at_ms: i64,
}

fn weakenings_json(w: &[Weakening]) -> Value {
    w.iter()
        .map(|w| json!({"subject": w.subject, "change": w.change, "text": w.to_string()}))
        .collect()
}

fn pending_json(p: &ProjectState) -> Value {
    match &p.pending {
        None => Value::Null,
        Some(pending) => json!({
            "weakenings": weakenings_json(&pending.weakenings),
            "detected_at_ms": pending.detected_at_ms,
            "config": pending.config,
        }),
    }
}

fn overlaps_json(projects: &Registry, p: &ProjectState) -> Value {
    overlapping(projects, &p.slug, &p.root)
        .iter()
        .map(|o| json!({"slug": o.slug, "root": o.root}))
        .collect()
}

fn view(p: &ProjectState, projects: &Registry) -> Value {
    let names = file_names(&p.root);
    let files = [names[0].as_str(), names[1].as_str()];
    json!({
        "slug": p.slug,
        "root": p.root,
        "valid": p.diagnostics.is_empty(),
        "config": p.config,
        "diagnostics": diagnostics_json(&p.diagnostics, &files),
        "loaded_at_ms": p.loaded_at_ms,
        "checked_at_ms": p.checked_at_ms,
        "pending_weakening": pending_json(p),
        "overlaps": overlaps_json(projects, p),
        "git_recorded": p.had_git,
    })
}

/// The view of a project as the registry holds it now.
fn current_view(state: &ServerState, p: &ProjectState) -> Value {
    view(p, &lock(&state.projects))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoadRequest {
    path: String,
}

pub async fn list(State(state): State<Arc<ServerState>>) -> Json<Value> {
    let registry = lock(&state.projects);
    let projects: Vec<Value> = registry
        .values()
        .map(|p| {
            json!({
                "slug": p.slug,
                "root": p.root,
                "valid": p.diagnostics.is_empty(),
                "problems": p.diagnostics.len(),
                "pending_weakening": pending_json(p),
                "overlaps": overlaps_json(&registry, p),
            })
        })
        .collect();
    Json(json!({ "projects": projects }))
}

pub async fn load(
    State(state): State<Arc<ServerState>>,
    Extension(principal): Extension<Principal>,
    Extension(peer): Extension<Peer>,
    body: Result<Json<LoadRequest>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(body) = body.map_err(|e| {
        ApiError::new(
            ErrorCode::BadRequest,
            format!(
                "{}; send JSON {{\"path\": \"/ABSOLUTE/PROJECT/DIR\"}}",
                e.body_text()
            ),
        )
    })?;
    let path = PathBuf::from(&body.path);
    if !path.is_absolute() {
        return Err(ApiError::new(
            ErrorCode::BadRequest,
            format!(
                "{:?} is not an absolute path; give the project directory's absolute path",
                body.path
            ),
        ));
    }
    let root = std::fs::canonicalize(&path)
        .map_err(|e| ApiError::new(ErrorCode::NotFound, format!("{}: {e}", path.display())))?;
    let (checked, stamp) = read_async(root.clone()).await?;
    let (Some(slug), Some(config)) = (checked.slug(), checked.resolved()) else {
        return Err(invalid(&root, &checked.diagnostics));
    };
    let now = now_ms();
    let project = ProjectState {
        slug: slug.clone(),
        root: root.clone(),
        config,
        diagnostics: Vec::new(),
        loaded_at_ms: now,
        checked_at_ms: now,
        stamp,
        pending: None,
        had_git: git_present(&root),
    };
    let body = {
        // Check and insert under one lock, so two loads cannot both claim the slug or nest.
        let mut projects = lock(&state.projects);
        let reloading = match projects.get(&slug) {
            Some(existing) if existing.root != root => {
                return Err(ApiError::new(
                    ErrorCode::Conflict,
                    format!(
                        "a project named `{slug}` is already loaded from {}; unload it first",
                        existing.root.display()
                    ),
                ));
            }
            Some(_) => true,
            None => false,
        };
        if !reloading {
            if let Some(other) = overlapping(&projects, &slug, &root).first() {
                return Err(ApiError::new(
                    ErrorCode::Conflict,
                    overlap_message(&slug, &root, other),
                ));
            }
            let body = view(&project, &projects);
            projects.insert(slug.clone(), project);
            Some(body)
        } else {
            None
        }
    };
    let Some(body) = body else {
        // Loaded already: a reload, so a weakening edit still waits and the recorded .git stays.
        let (p, _) = recheck(&state, &slug, Some(principal.id), false).await?;
        return Ok((
            StatusCode::OK,
            Json(json!({ "project": current_view(&state, &p) })),
        )
            .into_response());
    };
    if let Err(e) = state
        .store
        .put_project(slug.clone(), root.display().to_string(), now)
        .await
    {
        lock(&state.projects).remove(&slug);
        return Err(e.into());
    }
    let loaded = lock(&state.projects).get(&slug).cloned();
    if let Some(p) = loaded {
        remember(&state, &p).await;
    }
    state
        .audit
        .record(AuditRecord {
            kind: "project.loaded",
            success: true,
            identity: Some(principal.id),
            source: peer.0,
            detail: json!({"project": slug, "root": root}),
        })
        .await;
    Ok((StatusCode::CREATED, Json(json!({ "project": body }))).into_response())
}

fn find(state: &ServerState, slug: &str) -> Result<ProjectState, ApiError> {
    lock(&state.projects).get(slug).cloned().ok_or_else(|| {
        ApiError::new(
            ErrorCode::NotFound,
            format!("no project `{slug}` is loaded; see `kaged project list`"),
        )
    })
}

pub async fn get(
    State(state): State<Arc<ServerState>>,
    UrlPath(slug): UrlPath<String>,
) -> Result<Json<Value>, ApiError> {
    let p = find(&state, &slug)?;
    Ok(Json(json!({ "project": current_view(&state, &p) })))
}

fn pending_error(slug: &str, w: &[Weakening]) -> ApiError {
    let list: Vec<String> = w.iter().map(ToString::to_string).collect();
    ApiError {
        code: ErrorCode::WeakeningPending,
        message: format!(
            "the project files of `{slug}` now loosen its cages ({}); the previous configuration stays in force until the operator accepts: review .kaged/project.yaml, then run `kaged project reload {slug} --accept` (or Accept in the console)",
            list.join("; ")
        ),
        details: Some(json!({"weakenings": weakenings_json(w)})),
    }
}

/// Store the configuration in force and the recorded `.git`, so a restart judges the files
/// against what the operator last had in force (a run may have edited them meanwhile).
async fn remember(state: &ServerState, p: &ProjectState) {
    if p.config.is_null() {
        return;
    }
    if let Err(e) = state
        .store
        .set_project_accepted(p.slug.clone(), p.config.clone(), p.had_git)
        .await
    {
        tracing::error!(project = %p.slug, error = %e, "cannot store the project's configuration in force; a restart will re-read its files as at a first load");
    }
}

/// Re-read a project's files. Valid and no looser: the new configuration replaces the old.
/// Valid but looser: held as pending (the old one stays in force) unless `accept`. Invalid: the
/// old one stays in force and the problems are recorded (and returned as `dsl_invalid`).
/// `accept` also re-records whether the project has a `.git`.
async fn recheck(
    state: &ServerState,
    slug: &str,
    actor: Option<String>,
    accept: bool,
) -> Result<(ProjectState, Vec<Weakening>), ApiError> {
    let current = find(state, slug)?;
    let now = now_ms();
    // Only a slot still holding this project is updated: an unload meanwhile wins.
    let store = |updated: &ProjectState| {
        if let Some(slot) = lock(&state.projects)
            .get_mut(slug)
            .filter(|p| p.root == updated.root)
        {
            *slot = updated.clone();
        }
    };
    let (checked, stamp) = match read_async(current.root.clone()).await {
        Ok(read) => read,
        Err(e) => {
            let mut updated = current.clone();
            updated.stamp = stamp(&current.root);
            updated.checked_at_ms = now;
            updated.diagnostics = vec![state_problem(&e.message)];
            updated.pending = None;
            store(&updated);
            return Err(e);
        }
    };
    let renamed = checked.slug().is_some_and(|s| s != slug);
    let mut updated = current.clone();
    updated.stamp = stamp;
    updated.checked_at_ms = now;
    // What the files now say is pending only while they say it.
    updated.pending = None;
    let mut newly_pending = None;
    let mut accepted = Vec::new();
    let result = match (checked.resolved(), renamed) {
        (Some(config), false) => {
            let grants = host_grants(state, slug);
            // `Null` in force (files that never validated) is no configuration; a new one that
            // does not fit the model is never applied unjudged.
            let weaker = match Project::from_resolved(&config) {
                Ok(new) => {
                    let old = Project::from_resolved(&current.config).ok();
                    weakenings(old.as_ref(), &new, &grants, &grants)
                }
                Err(e) => vec![Weakening {
                    subject: "project".into(),
                    change: e.to_string(),
                }],
            };
            updated.diagnostics.clear();
            if weaker.is_empty() || accept {
                updated.config = config;
                if accept {
                    updated.had_git = git_present(&updated.root);
                }
                accepted = weaker;
                Ok(updated.clone())
            } else {
                let error = pending_error(slug, &weaker);
                // Audited once per distinct edit, not at every look.
                if current.pending.as_ref().map(|p| &p.config) != Some(&config) {
                    newly_pending = Some(weaker.clone());
                }
                updated.pending = Some(Pending {
                    config,
                    weakenings: weaker,
                    detected_at_ms: current
                        .pending
                        .as_ref()
                        .filter(|_| newly_pending.is_none())
                        .map_or(now, |p| p.detected_at_ms),
                });
                Err(error)
            }
        }
        (Some(_), true) => {
            updated.diagnostics = vec![state_problem(&format!(
                "the file now names another project than `{slug}`"
            ))];
            Err(ApiError::new(
                ErrorCode::Conflict,
                format!(
                    "the file now names another project; unload `{slug}` and load the directory again"
                ),
            ))
        }
        (None, _) => {
            updated.diagnostics = checked.diagnostics.clone();
            Err(invalid(&updated.root, &checked.diagnostics))
        }
    };
    store(&updated);
    if result.is_ok() {
        remember(state, &updated).await;
    }
    let record = AuditRecord {
        kind: "project.reloaded",
        success: result.is_ok(),
        identity: actor.clone(),
        source: None,
        detail: json!({"project": slug, "problems": updated.diagnostics.len()}),
    };
    match &record.identity {
        Some(_) => state.audit.record(record).await,
        // The watcher's re-checks follow the files, which a run in the project can rewrite
        // at will: limited per project.
        None => state.audit.record_limited(slug, record).await,
    }
    if let Some(w) = newly_pending {
        tracing::warn!(project = %slug, weakenings = %w.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "), "a project edit loosens its cages; held until the operator accepts it");
        state
            .audit
            .record(AuditRecord {
                kind: "project.weakening_pending",
                success: true,
                identity: actor.clone(),
                source: None,
                detail: json!({"project": slug, "root": updated.root, "weakenings": weakenings_json(&w)}),
            })
            .await;
    }
    if accept && result.is_ok() {
        state
            .audit
            .record(AuditRecord {
                kind: "project.weakening_accepted",
                success: true,
                identity: actor,
                source: None,
                detail: json!({
                    "project": slug,
                    "root": updated.root,
                    "weakenings": weakenings_json(&accepted),
                    "git": updated.had_git,
                }),
            })
            .await;
    }
    result.map(|p| (p, accepted))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ReloadRequest {
    /// Apply a change that loosens a cage, and re-record the project's `.git`.
    #[serde(default)]
    accept: bool,
}

pub async fn reload(
    State(state): State<Arc<ServerState>>,
    Extension(principal): Extension<Principal>,
    UrlPath(slug): UrlPath<String>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    // The body is optional: an empty one is a plain reload.
    let request: ReloadRequest = if body.iter().all(u8::is_ascii_whitespace) {
        ReloadRequest::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| {
            ApiError::new(
                ErrorCode::BadRequest,
                format!("{e}; send no body, or JSON {{\"accept\": true}}"),
            )
        })?
    };
    let (p, accepted) = recheck(&state, &slug, Some(principal.id), request.accept).await?;
    Ok(Json(json!({
        "project": current_view(&state, &p),
        "accepted": weakenings_json(&accepted),
    })))
}

pub async fn unload(
    State(state): State<Arc<ServerState>>,
    Extension(principal): Extension<Principal>,
    Extension(peer): Extension<Peer>,
    UrlPath(slug): UrlPath<String>,
) -> Result<StatusCode, ApiError> {
    find(&state, &slug)?;
    state.store.remove_project(slug.clone()).await?;
    lock(&state.projects).remove(&slug);
    state
        .audit
        .record(AuditRecord {
            kind: "project.unloaded",
            success: true,
            identity: Some(principal.id),
            source: peer.0,
            detail: json!({"project": slug}),
        })
        .await;
    Ok(StatusCode::NO_CONTENT)
}

/// The registry the server state holds.
pub type Registry = BTreeMap<String, ProjectState>;

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // test code: a panic is a failure report
    use std::path::Path;

    use super::*;

    fn project(slug: &str, root: &str) -> ProjectState {
        ProjectState {
            slug: slug.into(),
            root: root.into(),
            config: Value::Null,
            diagnostics: Vec::new(),
            loaded_at_ms: 0,
            checked_at_ms: 0,
            stamp: (None, None),
            pending: None,
            had_git: false,
        }
    }

    #[test]
    fn roots_overlap_when_one_holds_the_other_not_when_they_share_a_prefix() {
        let mut registry = Registry::new();
        registry.insert("mono".into(), project("mono", "/src/mono"));
        registry.insert("other".into(), project("other", "/src/monorepo"));
        let slugs = |slug: &str, root: &str| -> Vec<String> {
            overlapping(&registry, slug, Path::new(root))
                .iter()
                .map(|p| p.slug.clone())
                .collect()
        };
        assert_eq!(slugs("pkg", "/src/mono/packages/pkg"), ["mono"]);
        assert_eq!(slugs("all", "/src"), ["mono", "other"]);
        assert_eq!(slugs("same", "/src/mono"), ["mono"]);
        assert!(slugs("mono", "/src/mono").is_empty(), "not with itself");
        assert!(
            slugs("mon", "/src/mon").is_empty(),
            "a shared prefix is no overlap"
        );
        let m = overlap_message("pkg", Path::new("/src/mono/pkg"), &registry["mono"]);
        assert!(
            m.contains("`pkg` (/src/mono/pkg) lies inside the loaded project `mono`"),
            "{m}"
        );
        assert!(m.contains("unload one of them"), "{m}");
    }

    #[test]
    fn only_a_non_empty_git_counts() {
        let root = std::env::temp_dir().join(format!("kaged-git-present-{}", std::process::id()));
        std::fs::create_dir_all(&root).unwrap();
        assert!(!git_present(&root));
        std::fs::create_dir(root.join(".git")).unwrap();
        assert!(!git_present(&root), "the cage mask's empty directory");
        assert!(git_refusal("p", &root, false).is_none());
        std::fs::write(root.join(".git/config"), "[core]\n").unwrap();
        assert!(git_present(&root));
        let e = git_refusal("p", &root, false).unwrap();
        assert_eq!(e.code, ErrorCode::GitPlanted);
        assert!(
            e.message.contains("kaged project reload p --accept"),
            "{}",
            e.message
        );
        assert!(git_refusal("p", &root, true).is_none(), "recorded at load");
        std::fs::remove_dir_all(root.join(".git")).unwrap();
        // A worktree's or submodule's .git is a file.
        std::fs::write(root.join(".git"), "gitdir: /elsewhere\n").unwrap();
        assert!(git_present(&root));
        std::fs::remove_dir_all(&root).unwrap();
    }
}
