//! The start of a run: the decision (project, plan, cage policy, refusals), the limits, the
//! session's row and first transition, the `session.start` record, and the runner's thread.

use std::os::unix::fs::DirBuilderExt;
use std::path::PathBuf;
use std::sync::Arc;

use kaged_cage::{Policy, RunKind, RunPlan};
use kaged_session::state::Event;
use kaged_store::{SessionRecord, StateChange};
use serde_json::{Value, json};

use super::live::{Live, RunInfo};
use super::runner::Runner;
use super::{Sessions, new_id};
use crate::audit::{AuditRecord, now_ms};
use crate::error::{ApiError, ErrorCode};

/// Input messages queued per run before input is refused (the program is not reading).
/// With messages of at most 256 KiB that bounds a run's queued input to 16 MiB.
const INPUT_QUEUE: usize = 64;

/// What the operator asked to start.
pub struct StartRequest {
    pub project: String,
    pub kind: RunKind,
    pub name: Option<String>,
    pub rows: u16,
    pub cols: u16,
    pub actor: String,
    pub source: Option<String>,
}

/// Everything decided before the run is created.
pub(crate) struct Decided {
    pub(crate) root: PathBuf,
    pub(crate) plan: RunPlan,
    pub(crate) policy: Policy,
    /// Why the run is uncaged, when it is.
    pub(crate) uncaged_because: Option<&'static str>,
    pub(crate) allow: Vec<String>,
    /// The variables `local.toml` grants the project (`[projects.NAME] env`), with their
    /// values from the daemon's environment. They reach a cage on bwrap's argument
    /// descriptor, never on a command line.
    pub(crate) granted_env: Vec<(String, String)>,
    /// The project's name, and the host paths `local.toml` grants it.
    pub(crate) project: String,
    pub(crate) granted_paths: Vec<kaged_cage::HostPath>,
    /// Who the cage runs as when the daemon is root (cages never run as UID 0).
    pub(crate) run_as: Option<kaged_cage::RunAs>,
}

/// `local.toml`'s environment grants of `project` that are set in the daemon's environment
/// (one missing is logged: the operator expected it to arrive).
fn granted_env(local: &kaged_config::LocalConfig, project: &str) -> Vec<(String, String)> {
    let Some(grants) = local.projects.get(project) else {
        return Vec::new();
    };
    grants
        .env
        .iter()
        .filter_map(|name| match std::env::var(name) {
            Ok(value) => Some((name.clone(), value)),
            Err(_) => {
                tracing::warn!(project, variable = %name, "local.toml grants this variable to the project, but it is not set in kaged's environment; the run starts without it");
                None
            }
        })
        .collect()
}

fn decide(sessions: &Sessions, req: &StartRequest) -> Result<Decided, ApiError> {
    let settings = &sessions.deps().settings;
    let super::LoadedProject {
        root,
        config,
        had_git,
    } = sessions.deps().projects.for_run(&req.project)?;
    // Outside the registry's lock (they read the directory): a root that is gone, or a .git
    // that appeared since the load, is refused.
    if let Some(refusal) = crate::projects::missing_refusal(&req.project, &root) {
        return Err(refusal);
    }
    if let Some(refusal) = crate::projects::git_refusal(&req.project, &root, had_git) {
        return Err(refusal);
    }
    let project = kaged_dsl::Project::from_resolved(&config)
        .map_err(|e| ApiError::new(ErrorCode::BadRequest, e.to_string()))?;
    let plan = kaged_cage::plan_run(&project, req.kind, req.name.as_deref())
        .map_err(|e| ApiError::new(ErrorCode::BadRequest, e.to_string()))?;
    let policy = kaged_cage::policy_for(&project, &plan.cage_agent)
        .map_err(|e| ApiError::new(ErrorCode::BadRequest, e.to_string()))?;
    let sandbox_off = settings.sandbox_disabled;
    let uncaged_because = match (&policy, sandbox_off) {
        (_, true) => Some("the daemon runs with --no-sandbox ([sandbox] mode = \"disabled\")"),
        (Policy::Disabled, false) => Some("the project sets `cage: disabled`"),
        _ => None,
    };
    if uncaged_because.is_none() {
        // The same check the spawn makes (a usable bwrap is asked once, not at every start).
        let problem = settings
            .sandbox_problem
            .clone()
            .or_else(|| kaged_spawn::usable_bwrap().err().map(|e| e.to_string()));
        if let Some(problem) = problem {
            return Err(ApiError::new(
                ErrorCode::Unavailable,
                format!(
                    "no cage can be built on this host ({problem}), and kaged never runs caged work uncaged; run `kaged doctor` for the fix"
                ),
            ));
        }
    }
    let allow = match &policy {
        Policy::Caged {
            network: kaged_cage::Network::Allow(hosts),
            ..
        } if uncaged_because.is_none() => hosts.clone(),
        _ => Vec::new(),
    };
    let run_as = match uncaged_because {
        Some(_) => None,
        None => kaged_spawn::run_as(&root, &settings.cage_user).map_err(|problem| {
            ApiError::new(
                ErrorCode::Unavailable,
                format!("no cage can start for this project: {problem}"),
            )
        })?,
    };
    Ok(Decided {
        root,
        plan,
        policy,
        uncaged_because,
        allow,
        granted_env: granted_env(&settings.local, &req.project),
        project: req.project.clone(),
        granted_paths: crate::projects::grants_of(&settings.local, &req.project).paths,
        run_as,
    })
}

/// Create a session and start its run. Returns the new session's record.
pub async fn start(sessions: &Sessions, req: StartRequest) -> Result<SessionRecord, ApiError> {
    let deps = sessions.deps();
    let decided = match decide(sessions, &req) {
        Err(e) if e.code == ErrorCode::GitPlanted => {
            crate::projects::audit_git_refusal(
                &deps.audit,
                &req.project,
                deps.projects.root(&req.project),
                &req.actor,
                req.source.clone(),
            )
            .await;
            return Err(e);
        }
        decided => decided?,
    };
    {
        let running = sessions.running();
        let in_project = running
            .iter()
            .filter(|l| l.info().project == req.project)
            .count();
        let for_operator = running
            .iter()
            .filter(|l| l.info().created_by == req.actor)
            .count();
        if let Err(e) = sessions.limits().check(in_project, for_operator) {
            return Err(ApiError {
                code: ErrorCode::RateLimited,
                message: format!("{e}; end a run first (kaged session kill ID)"),
                details: Some(
                    json!({"resource": e.resource.as_str(), "limit": e.limit, "current": e.current}),
                ),
            });
        }
    }
    let id = new_id()?;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&deps.settings.transcripts)
        .map_err(|e| {
            ApiError::internal(format!(
                "cannot create {}: {e}",
                deps.settings.transcripts.display()
            ))
        })?;
    let transcript_path = sessions.transcript_path(&id);
    let transcript =
        super::transcript::Writer::create(&transcript_path, super::retention::cap(&deps.settings))
            .map_err(|e| {
                ApiError::internal(format!("cannot create {}: {e}", transcript_path.display()))
            })?;
    let caged = decided.uncaged_because.is_none();
    let record = SessionRecord {
        id: id.clone(),
        project: req.project.clone(),
        kind: req.kind.as_str().into(),
        name: decided.plan.name.clone(),
        command: decided.plan.command.clone(),
        caged,
        state: "queued".into(),
        exit_code: None,
        reason: None,
        created_by: req.actor.clone(),
        created_at_ms: now_ms(),
        ended_at_ms: None,
        ..Default::default()
    };
    let (input_tx, input_rx) = std::sync::mpsc::sync_channel(INPUT_QUEUE);
    let live = Arc::new(Live::new(
        RunInfo {
            id: id.clone(),
            project: req.project.clone(),
            kind: req.kind,
            name: decided.plan.name.clone(),
            created_by: req.actor.clone(),
            transcript: transcript_path,
        },
        req.rows,
        req.cols,
        input_tx,
    ));
    let first = StateChange {
        session_id: id.clone(),
        state: "queued".into(),
        at_ms: record.created_at_ms,
        actor: req.actor.clone(),
        detail: json!({"project": req.project, "kind": req.kind.as_str(), "name": record.name}),
        exit_code: None,
        reason: None,
        ended: false,
    };
    // In memory before the event is out: a client reacting to it finds the run.
    sessions.insert(live.clone());
    let store = deps.store.clone();
    let stored = record.clone();
    if let Err(e) = sessions
        .store_and_publish(async move { store.create_session(stored, first).await })
        .await
    {
        sessions.remove(&id);
        return Err(crate::storage::start_failed(&deps.settings.home, e));
    }
    deps.audit
        .record(AuditRecord {
            kind: "session.start",
            success: true,
            identity: Some(req.actor.clone()),
            source: req.source.clone(),
            detail: json!({
                "session": id,
                "project": req.project,
                "kind": req.kind.as_str(),
                "name": record.name,
                "command": record.command,
                "caged": caged,
                "uncaged_because": decided.uncaged_because,
                "network": network_summary(&decided.policy, caged),
                "unenforced": if caged { kaged_cage::unenforced(&decided.policy, !decided.allow.is_empty()) } else { Vec::new() },
                "run_as": decided.run_as.map(|r| json!({
                    "uid": r.identity.uid,
                    "gid": r.identity.gid,
                    "because": r.because.as_str(),
                    "workspace_writable": r.workspace_writable,
                })),
            }),
        })
        .await;
    let handle = tokio::runtime::Handle::current();
    let runner = Runner::new(sessions.clone(), live.clone(), decided, handle.clone());
    let (sessions, live) = (sessions.clone(), live.clone());
    super::panics::spawn(
        "run",
        &id,
        move || runner.run(transcript, input_rx, req.rows, req.cols),
        move |message| crashed(&sessions, &live, &handle, message),
    )
    .map_err(|e| ApiError::internal(format!("cannot start the run's thread: {e}")))?;
    Ok(record)
}

/// After the runner panicked: end whatever of the run still lives and mark it failed (unless it
/// already has an end).
fn crashed(sessions: &Sessions, live: &Live, handle: &tokio::runtime::Handle, message: &str) {
    if let Some(killer) = live.take_killer() {
        killer.kill();
    }
    let reason = format!("kaged: the run's thread panicked ({message}); see kaged's log");
    handle.block_on(sessions.transition(live, Event::Crashed { reason }, "kaged"));
}

fn network_summary(policy: &Policy, caged: bool) -> Value {
    match policy {
        _ if !caged => json!("host (uncaged)"),
        Policy::Caged { network, .. } => match network {
            kaged_cage::Network::None => json!("none"),
            kaged_cage::Network::Host => json!("host"),
            kaged_cage::Network::Allow(h) => json!({"allow": h}),
        },
        Policy::Disabled => json!("host (uncaged)"),
    }
}
