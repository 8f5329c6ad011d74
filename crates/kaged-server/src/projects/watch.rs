//! Projects across time: restored from storage at start, re-read by the watcher when their
//! files change, overlaps reported.

use std::path::PathBuf;
use std::sync::Arc;

use serde_json::{Value, json};

use crate::audit::{AuditRecord, now_ms};
use crate::state::{ServerState, lock};

use super::*;

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
pub(super) async fn restore(state: &ServerState, r: kaged_store::ProjectRecord) {
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
pub(super) async fn report_overlaps(state: &ServerState) {
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
