//! Projects registered with the daemon: load, list, get, reload, unload, and a watcher that
//! re-validates a project when its files change. An invalid edit never replaces the last valid
//! configuration: the project keeps running on it and shows the new problems.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Extension, Path as UrlPath, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use kaged_auth::Principal;
use kaged_dsl::{Checked, Diagnostic, diagnostics_json, load_project};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::audit::{AuditRecord, now_ms};
use crate::error::ApiError;
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
/// [`MAX_PROJECT_FILE_BYTES`]. `Ok(None)` when it does not exist.
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
                "not_found"
            } else {
                "bad_request"
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
        code: "dsl_invalid",
        message: format!(
            "the project file has {n} problem{}; run `kaged dsl validate {}` for details",
            if n == 1 { "" } else { "s" },
            root.display()
        ),
        details: Some(json!({ "diagnostics": diagnostics_json(diagnostics, &files) })),
    }
}

fn view(p: &ProjectState) -> Value {
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
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoadRequest {
    path: String,
}

pub async fn list(State(state): State<Arc<ServerState>>) -> Json<Value> {
    let projects: Vec<Value> = lock(&state.projects)
        .values()
        .map(|p| {
            json!({
                "slug": p.slug,
                "root": p.root,
                "valid": p.diagnostics.is_empty(),
                "problems": p.diagnostics.len(),
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
            "bad_request",
            format!(
                "{}; send JSON {{\"path\": \"/ABSOLUTE/PROJECT/DIR\"}}",
                e.body_text()
            ),
        )
    })?;
    let path = PathBuf::from(&body.path);
    if !path.is_absolute() {
        return Err(ApiError::new(
            "bad_request",
            format!(
                "{:?} is not an absolute path; give the project directory's absolute path",
                body.path
            ),
        ));
    }
    let root = std::fs::canonicalize(&path)
        .map_err(|e| ApiError::new("not_found", format!("{}: {e}", path.display())))?;
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
    };
    let body = view(&project);
    {
        // Check and insert under one lock, so two loads cannot both claim the slug.
        let mut projects = lock(&state.projects);
        if let Some(existing) = projects.get(&slug)
            && existing.root != root
        {
            return Err(ApiError::new(
                "conflict",
                format!(
                    "a project named `{slug}` is already loaded from {}; unload it first",
                    existing.root.display()
                ),
            ));
        }
        projects.insert(slug.clone(), project);
    }
    if let Err(e) = state
        .store
        .put_project(slug.clone(), root.display().to_string(), now)
        .await
    {
        lock(&state.projects).remove(&slug);
        return Err(e.into());
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
            "not_found",
            format!("no project `{slug}` is loaded; see `kaged project list`"),
        )
    })
}

pub async fn get(
    State(state): State<Arc<ServerState>>,
    UrlPath(slug): UrlPath<String>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(json!({ "project": view(&find(&state, &slug)?) })))
}

/// Re-read a project's files. Valid: the new configuration replaces the old. Invalid: the old
/// one stays in force and the problems are recorded (and returned as `dsl_invalid`).
async fn recheck(
    state: &ServerState,
    slug: &str,
    actor: Option<String>,
) -> Result<ProjectState, ApiError> {
    let current = find(state, slug)?;
    let now = now_ms();
    let (checked, stamp) = match read_async(current.root.clone()).await {
        Ok(read) => read,
        Err(e) => {
            let mut updated = current.clone();
            updated.stamp = stamp(&current.root);
            updated.checked_at_ms = now;
            updated.diagnostics = vec![state_problem(&e.message)];
            lock(&state.projects).insert(slug.to_string(), updated);
            return Err(e);
        }
    };
    let renamed = checked.slug().is_some_and(|s| s != slug);
    let mut updated = current.clone();
    updated.stamp = stamp;
    updated.checked_at_ms = now;
    let result = match (checked.resolved(), renamed) {
        (Some(config), false) => {
            updated.config = config;
            updated.diagnostics.clear();
            Ok(updated.clone())
        }
        (Some(_), true) => {
            updated.diagnostics = vec![state_problem(&format!(
                "the file now names another project than `{slug}`"
            ))];
            Err(ApiError::new(
                "conflict",
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
    lock(&state.projects).insert(slug.to_string(), updated.clone());
    let record = AuditRecord {
        kind: "project.reloaded",
        success: result.is_ok(),
        identity: actor,
        source: None,
        detail: json!({"project": slug, "problems": updated.diagnostics.len()}),
    };
    match &record.identity {
        Some(_) => state.audit.record(record).await,
        // The watcher's re-checks follow the files, which a run in the project can rewrite
        // at will: limited per project.
        None => state.audit.record_limited(slug, record).await,
    }
    result
}

pub async fn reload(
    State(state): State<Arc<ServerState>>,
    Extension(principal): Extension<Principal>,
    UrlPath(slug): UrlPath<String>,
) -> Result<Json<Value>, ApiError> {
    let p = recheck(&state, &slug, Some(principal.id)).await?;
    Ok(Json(json!({ "project": view(&p) })))
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

/// Restore the registered projects, then re-check any whose files change, until shutdown.
pub async fn watch(state: Arc<ServerState>) {
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
                let root = PathBuf::from(&r.root);
                let (config, diagnostics, stamp) = match read_async(root.clone()).await {
                    Ok((checked, stamp)) => (checked.resolved(), checked.diagnostics, stamp),
                    Err(e) => {
                        tracing::warn!(project = %r.slug, error = %e.message, "a registered project cannot be read");
                        (None, vec![state_problem(&e.message)], (None, None))
                    }
                };
                let valid = config.is_some();
                lock(&state.projects).insert(
                    r.slug.clone(),
                    ProjectState {
                        slug: r.slug.clone(),
                        root,
                        config: config.unwrap_or(Value::Null),
                        diagnostics,
                        loaded_at_ms: r.loaded_at_ms,
                        checked_at_ms: now_ms(),
                        stamp,
                    },
                );
                tracing::info!(project = %r.slug, valid, "project restored");
            }
        }
        Err(e) => tracing::error!(error = %e, "cannot list registered projects"),
    }
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
            match recheck(&state, &slug, None).await {
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

/// The registry the server state holds.
pub type Registry = BTreeMap<String, ProjectState>;
