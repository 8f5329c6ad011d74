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
pub(super) const INPUT_QUEUE: usize = 64;

/// What the operator asked to start.
pub struct StartRequest {
    pub project: String,
    pub kind: RunKind,
    pub name: Option<String>,
    pub rows: u16,
    pub cols: u16,
    pub actor: String,
    pub source: Option<String>,
    /// A model agent's first message.
    pub message: Option<String>,
    /// An ended conversation to run again (same id, its history kept).
    pub resume: Option<SessionRecord>,
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
    /// A model agent's conversation: what its loop runs with.
    pub(crate) conversation: Option<super::conversation::Setup>,
    /// An ACP agent's conversation.
    pub(crate) acp: Option<super::acp::AcpSetup>,
    /// The project as it was when the run started (a conversation's subagents are built from it).
    pub(crate) model: kaged_dsl::Project,
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
    let conversation = match req.kind {
        RunKind::Agent => super::conversation::Setup::of(
            &project,
            req.name.as_deref().unwrap_or(kaged_dsl::model::PRIMARY),
        ),
        _ => None,
    };
    let acp = match (req.kind, &conversation) {
        (RunKind::Agent, None) => super::acp::AcpSetup::of(
            &project,
            req.name.as_deref().unwrap_or(kaged_dsl::model::PRIMARY),
        ),
        _ => None,
    };
    if conversation.is_none() && acp.is_none() && req.message.is_some() {
        return Err(ApiError::new(
            ErrorCode::BadRequest,
            "\"message\" is for model agents (with `model:`) and ACP agents (`protocol: acp`); this run has a terminal: type into it over /pty",
        ));
    }
    let mut plan = match &conversation {
        Some(setup) => RunPlan {
            name: setup.agent.clone(),
            command: setup.command(kaged_cage::HELPER),
            cwd: PathBuf::new(),
            cage_agent: setup.agent.clone(),
            timeout_secs: None,
        },
        None => kaged_cage::plan_run(&project, req.kind, req.name.as_deref())
            .map_err(|e| ApiError::new(ErrorCode::BadRequest, e.to_string()))?,
    };
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
    // Uncaged, the executor (or the ACP shim) is this very binary on the host.
    let kaged_here = match uncaged_because {
        None => kaged_cage::HELPER.to_string(),
        Some(_) => settings
            .helper
            .clone()
            .or_else(|| std::env::current_exe().ok())
            .unwrap_or_else(|| PathBuf::from("/proc/self/exe"))
            .to_string_lossy()
            .into_owned(),
    };
    if let (Some(setup), Some(_)) = (&conversation, uncaged_because) {
        plan.command = setup.command(&kaged_here);
    }
    if acp.is_some() {
        plan.command = super::acp::AcpSetup::command(&kaged_here, &plan.command);
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
    let mut granted_env = granted_env(&settings.local, &req.project);
    if conversation.is_some() {
        // A provider's key stays in the daemon, even when local.toml grants its variable.
        let keys: Vec<&String> = settings
            .local
            .providers
            .values()
            .filter_map(|p| p.api_key_env.as_ref())
            .collect();
        granted_env.retain(|(name, _)| {
            let key = keys.contains(&name);
            if key {
                tracing::warn!(project = %req.project, variable = %name, "local.toml grants a provider's key variable to the project; a model agent's cage never gets it");
            }
            !key
        });
    }
    Ok(Decided {
        root,
        plan,
        policy,
        uncaged_because,
        allow,
        granted_env,
        conversation,
        acp,
        model: project,
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
    let conversation = decided.conversation.is_some() || decided.acp.is_some();
    if req.resume.is_some() && !conversation {
        return Err(ApiError::new(
            ErrorCode::Conflict,
            format!(
                "agent {} is no longer a model agent or an ACP agent in the project file; start a new session",
                decided.plan.name
            ),
        ));
    }
    let id = match &req.resume {
        Some(record) => record.id.clone(),
        None => new_id()?,
    };
    let transcript_path = sessions.transcript_path(&id);
    // A conversation's output is its event log: it has no transcript file.
    let transcript = match conversation {
        true => None,
        false => Some(create_transcript(sessions, &transcript_path)?),
    };
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
        created_by: req
            .resume
            .as_ref()
            .map_or_else(|| req.actor.clone(), |r| r.created_by.clone()),
        created_at_ms: req.resume.as_ref().map_or_else(now_ms, |r| r.created_at_ms),
        ended_at_ms: None,
        conversation,
        ..Default::default()
    };
    let (input_tx, input_rx) = std::sync::mpsc::sync_channel(INPUT_QUEUE);
    let live = Arc::new(Live::new(
        RunInfo {
            id: id.clone(),
            project: req.project.clone(),
            kind: req.kind,
            name: decided.plan.name.clone(),
            created_by: record.created_by.clone(),
            transcript: transcript_path,
        },
        req.rows,
        req.cols,
        input_tx,
    ));
    let resumed = req.resume.is_some();
    if let Some(earlier) = &req.resume {
        // The state machine's rule: only an ended run resumes.
        let kind: Result<kaged_session::state::StateKind, _> = earlier.state.parse();
        if !kind.is_ok_and(|k| k.is_terminal()) {
            return Err(ApiError::new(
                ErrorCode::Conflict,
                format!(
                    "session {id} is {}; it takes messages as it is",
                    earlier.state
                ),
            ));
        }
    }
    let first = StateChange {
        session_id: id.clone(),
        state: "queued".into(),
        at_ms: now_ms(),
        actor: req.actor.clone(),
        detail: json!({"project": req.project, "kind": req.kind.as_str(), "name": record.name, "conversation": record.conversation, "resumed": resumed}),
        exit_code: None,
        reason: None,
        ended: false,
    };
    let control = conversation.then(|| {
        let control = Arc::new(super::conversation::Control::default());
        if let Some(text) = req.message.clone() {
            control.send(text);
        }
        control
    });
    // In memory before the event is out: a client reacting to it finds the run.
    sessions.insert(live.clone(), control.clone());
    let store = deps.store.clone();
    let stored = record.clone();
    let written = if resumed {
        sessions
            .store_and_publish(async move { store.change_state(first).await })
            .await
    } else {
        sessions
            .store_and_publish(async move { store.create_session(stored, first).await })
            .await
    };
    if let Err(e) = written {
        sessions.remove(&id);
        return Err(crate::storage::start_failed(
            &deps.store,
            &deps.settings.home,
            e,
        ));
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
                "conversation": record.conversation,
                "resumed": resumed,
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
    if req.kind == kaged_cage::RunKind::Agent {
        deps.hooks.session_started(&id, &req.project, &record.name);
    }
    let handle = tokio::runtime::Handle::current();
    let decided_setup = decided.conversation.clone();
    let decided_acp = decided.acp.clone();
    let runner = Runner::new(sessions.clone(), live.clone(), decided, handle.clone());
    let (sessions, live) = (sessions.clone(), live.clone());
    let spawned = match (decided_setup, decided_acp, control, transcript) {
        (Some(setup), _, Some(control), _) => super::panics::spawn(
            "run",
            &id,
            move || runner.run_conversation(setup, control),
            move |message| crashed(&sessions, &live, &handle, message),
        ),
        (None, Some(setup), Some(control), _) => super::panics::spawn(
            "run",
            &id,
            move || runner.run_acp(setup, control),
            move |message| crashed(&sessions, &live, &handle, message),
        ),
        (None, None, None, Some(transcript)) => {
            let holders = sessions.deps().settings.holders.clone();
            super::panics::spawn(
                "run",
                &id,
                move || match holders {
                    // The holder writes the transcript (its head is created already).
                    Some(holders) => {
                        drop(transcript);
                        runner.run_held(&holders, input_rx, req.rows, req.cols)
                    }
                    None => runner.run(transcript, input_rx, req.rows, req.cols),
                },
                move |message| crashed(&sessions, &live, &handle, message),
            )
        }
        _ => {
            return Err(ApiError::internal(
                "a run without its transcript or its conversation (a bug)",
            ));
        }
    };
    spawned.map_err(|e| ApiError::internal(format!("cannot start the run's thread: {e}")))?;
    Ok(record)
}

/// A new run's transcript file (0600, in its 0700 directory).
fn create_transcript(
    sessions: &Sessions,
    path: &std::path::Path,
) -> Result<super::transcript::Writer, ApiError> {
    let deps = sessions.deps();
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
    super::transcript::Writer::create(path, super::retention::cap(&deps.settings))
        .map_err(|e| ApiError::internal(format!("cannot create {}: {e}", path.display())))
}

/// After the runner panicked: end whatever of the run still lives and mark it failed (unless it
/// already has an end).
fn crashed(sessions: &Sessions, live: &Live, handle: &tokio::runtime::Handle, message: &str) {
    if let Some(control) = live.take_control() {
        control.kill("kaged: the run's thread panicked");
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
