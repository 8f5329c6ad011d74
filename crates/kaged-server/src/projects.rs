//! Projects registered with the daemon: load, list, get, reload, unload, and a watcher that
//! re-validates a project when its files change. An invalid edit never replaces the last valid
//! configuration: the project keeps running on it and shows the new problems.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Extension, Path as UrlPath, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use kaged_auth::Principal;
use kaged_cage::{HostGrants, HostPath, Weakening, weakenings};
use kaged_dsl::{Checked, Diagnostic, Project, diagnostics_json, load_project};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::audit::{AuditRecord, now_ms};
use crate::error::{ApiError, ErrorCode};
use crate::listener::Peer;
use crate::state::{ServerState, lock};

/// How often the watcher looks at project files.
const WATCH_EVERY: Duration = Duration::from_secs(2);

/// Modification times of `project.yaml` and `project.local.yaml`: the watcher's change test.
type Stamp = (Option<SystemTime>, Option<SystemTime>);

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
fn host_grants(state: &ServerState, slug: &str) -> HostGrants {
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
fn overlap_message(slug: &str, root: &Path, other: &ProjectState) -> String {
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

/// `(project.yaml, project.local.yaml)` of a project directory, or of its project.yaml given
/// directly.
pub fn project_files(path: &Path) -> (PathBuf, PathBuf) {
    let base = if path.is_dir() {
        path.join(".kaged/project.yaml")
    } else {
        path.to_path_buf()
    };
    let local = base.with_file_name("project.local.yaml");
    (base, local)
}

/// Why a project's files could not be read.
#[derive(Debug)]
pub struct UnreadableProject {
    /// `project.yaml` does not exist (as opposed to being unreadable).
    pub missing: bool,
    pub message: String,
}

/// Read `project.yaml` and, when present, `project.local.yaml` (regular files only, capped).
/// The one reader behind the daemon, `kaged dsl validate` and `kaged cage run`.
pub fn read_project_texts(
    base: &Path,
    local: &Path,
) -> Result<(String, Option<String>), UnreadableProject> {
    let unreadable = |path: &Path, e: std::io::Error| UnreadableProject {
        missing: false,
        message: format!("cannot read {}: {e}", path.display()),
    };
    let base_text = read_project_file(base)
        .map_err(|e| unreadable(base, e))?
        .ok_or_else(|| UnreadableProject {
            missing: true,
            message: format!(
                "{} does not exist; a project keeps its file at PROJECT/.kaged/project.yaml",
                base.display()
            ),
        })?;
    let local_text = read_project_file(local).map_err(|e| unreadable(local, e))?;
    Ok((base_text, local_text))
}

fn file_names(root: &Path) -> [String; 2] {
    let (base, local) = project_files(root);
    [base.display().to_string(), local.display().to_string()]
}

fn stamp(root: &Path) -> Stamp {
    let (base, local) = project_files(root);
    let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    (modified(&base), modified(&local))
}

/// Largest project file kaged reads (they are a few KiB).
pub const MAX_PROJECT_FILE_BYTES: u64 = 1024 * 1024;

/// Read a project file: a regular file (not a symlink, FIFO or device), at most
/// `MAX_PROJECT_FILE_BYTES`. `Ok(None)` when it does not exist.
pub fn read_project_file(path: &Path) -> std::io::Result<Option<String>> {
    use std::io::Read;
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    if !meta.file_type().is_file() {
        return Err(std::io::Error::other(
            "not a regular file (symlinks, FIFOs and devices are refused)",
        ));
    }
    if meta.len() > MAX_PROJECT_FILE_BYTES {
        return Err(std::io::Error::other(format!(
            "larger than {} KiB",
            MAX_PROJECT_FILE_BYTES / 1024
        )));
    }
    let mut text = String::new();
    std::fs::File::open(path)?
        .take(MAX_PROJECT_FILE_BYTES + 1)
        .read_to_string(&mut text)?;
    Ok(Some(text))
}

/// Read and check a project's files (blocking; the files are small).
fn read(root: &Path) -> Result<(Checked, Stamp), ApiError> {
    let (base, local) = project_files(root);
    let stamp = stamp(root);
    let (base_text, local_text) = read_project_texts(&base, &local).map_err(|e| {
        ApiError::new(
            if e.missing {
                ErrorCode::NotFound
            } else {
                ErrorCode::BadRequest
            },
            e.message,
        )
    })?;
    Ok((load_project(&base_text, local_text.as_deref()), stamp))
}

/// A read failure or rename as the project's one diagnostic, so its state never claims to be
/// valid.
fn state_problem(message: &str) -> Diagnostic {
    Diagnostic {
        pos: kaged_dsl::Pos {
            source: kaged_dsl::BASE,
            line: 1,
            column: 1,
        },
        path: String::new(),
        problem: message.to_string(),
        hint: "restore the file, or unload the project".into(),
    }
}

async fn read_async(root: PathBuf) -> Result<(Checked, Stamp), ApiError> {
    tokio::task::spawn_blocking(move || read(&root))
        .await
        .map_err(|e| ApiError::internal(format!("project check failed: {e}")))?
}

fn invalid(root: &Path, diagnostics: &[Diagnostic]) -> ApiError {
    let names = file_names(root);
    let files = [names[0].as_str(), names[1].as_str()];
    let n = diagnostics.len();
    ApiError {
        code: ErrorCode::DslInvalid,
        message: format!(
            "the project file has {n} problem{}; run `kaged dsl validate {}` for details",
            if n == 1 { "" } else { "s" },
            root.display()
        ),
        details: Some(json!({ "diagnostics": diagnostics_json(diagnostics, &files) })),
    }
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

/// Restore the registered projects. The daemon does this before it says it is ready, so a
/// client that sees it ready finds every project it had (and its refusals) in place.
pub async fn restore_registered(state: &ServerState) {
    // Projects the operator lists in local.toml are registered too (the file is the operator's).
    for (slug, grants) in &state.info.local.projects {
        let Some(path) = &grants.path else { continue };
        let root = std::fs::canonicalize(path).unwrap_or_else(|_| path.clone());
        if let Err(e) = state
            .store
            .put_project(slug.clone(), root.display().to_string(), now_ms())
            .await
        {
            tracing::error!(project = %slug, error = %e, "cannot register a project from local.toml");
        }
    }
    match state.store.list_projects().await {
        Ok(records) => {
            for r in records {
                restore(state, r).await;
            }
            report_overlaps(state).await;
        }
        Err(e) => tracing::error!(error = %e, "cannot list registered projects"),
    }
}

/// Re-check any project whose files change, until shutdown.
pub async fn watch(state: Arc<ServerState>) {
    let mut shutdown = state.shutdown.clone();
    let mut tick = tokio::time::interval(WATCH_EVERY);
    loop {
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = tick.tick() => {}
        }
        // Stat outside the lock: a slow filesystem must not stall the API.
        let known: Vec<(String, PathBuf, Stamp)> = lock(&state.projects)
            .values()
            .map(|p| (p.slug.clone(), p.root.clone(), p.stamp))
            .collect();
        let changed: Vec<String> = known
            .into_iter()
            .filter(|(_, root, old)| stamp(root) != *old)
            .map(|(slug, _, _)| slug)
            .collect();
        for slug in changed {
            match recheck(&state, &slug, None, false).await {
                Ok(_) => {
                    tracing::info!(project = %slug, "project file changed; new configuration in force")
                }
                Err(e) => {
                    tracing::warn!(project = %slug, error = %e.message, "project file changed but is not valid; the last valid configuration stays in force")
                }
            }
        }
    }
}

/// Put a registered project back in the registry. What was last in force stays in force and the
/// files are judged against it like an edit (a looser one waits for the operator); a row from
/// before kaged stored it is read as at a first load.
async fn restore(state: &ServerState, r: kaged_store::ProjectRecord) {
    let root = PathBuf::from(&r.root);
    let had_git = r.had_git.unwrap_or_else(|| git_present(&root));
    let mut project = ProjectState {
        slug: r.slug.clone(),
        root: root.clone(),
        config: Value::Null,
        diagnostics: Vec::new(),
        loaded_at_ms: r.loaded_at_ms,
        checked_at_ms: now_ms(),
        stamp: (None, None),
        pending: None,
        had_git,
    };
    if let Some(config) = r.accepted_config {
        project.config = config;
        lock(&state.projects).insert(r.slug.clone(), project);
        let outcome = recheck(state, &r.slug, None, false).await;
        let valid = outcome.is_ok();
        if let Err(e) = outcome {
            tracing::warn!(project = %r.slug, error = %e.message, "project restored; its files are not applied as they are");
        }
        tracing::info!(project = %r.slug, valid, "project restored");
        return;
    }
    match read_async(root.clone()).await {
        Ok((checked, stamp)) => {
            project.config = checked.resolved().unwrap_or(Value::Null);
            project.diagnostics = checked.diagnostics;
            project.stamp = stamp;
        }
        Err(e) => {
            tracing::warn!(project = %r.slug, error = %e.message, "a registered project cannot be read");
            project.diagnostics = vec![state_problem(&e.message)];
        }
    }
    let valid = !project.config.is_null();
    lock(&state.projects).insert(r.slug.clone(), project.clone());
    remember(state, &project).await;
    tracing::info!(project = %r.slug, valid, "project restored");
}

/// Overlapping roots already in the registry at start (an older kaged, or local.toml): neither
/// is dropped; both stay listed with what they overlap, runs of either are refused until one is
/// unloaded, and each pair is logged and audited.
async fn report_overlaps(state: &ServerState) {
    let pairs: Vec<(String, String)> = {
        let projects = lock(&state.projects);
        projects
            .values()
            .flat_map(|p| {
                overlapping(&projects, &p.slug, &p.root)
                    .into_iter()
                    .filter(|o| p.slug < o.slug)
                    .map(|o| (p.slug.clone(), overlap_message(&p.slug, &p.root, o)))
                    .collect::<Vec<_>>()
            })
            .collect()
    };
    for (slug, message) in pairs {
        tracing::error!(project = %slug, "overlapping project roots: {message}");
        state
            .audit
            .record(AuditRecord {
                kind: "project.overlap",
                success: false,
                identity: None,
                source: None,
                detail: json!({"project": slug, "problem": message}),
            })
            .await;
    }
}

/// The registry the server state holds.
pub type Registry = BTreeMap<String, ProjectState>;

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // test code: a panic is a failure report
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
