//! Starting a run: plan it, cage it, spawn it on a PTY, pump its output, reap it.

use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kaged_cage::{Launch, Policy, RunKind, RunPlan};
use kaged_config::SandboxMode;
use kaged_session::log::OutputLog;
use kaged_session::state::{Event, State, StateKind};
use kaged_store::{SessionRecord, StateChange};
use serde_json::{Value, json};
use tokio::sync::watch;

use super::{Input, LOG_CAPACITY, Live, Output, ScreenAt, new_id, transition};
use crate::audit::{AuditRecord, now_ms};
use crate::error::ApiError;
use crate::state::{ServerState, lock};

/// Bytes read from the PTY at once.
const READ_CHUNK: usize = 64 * 1024;
/// Input messages queued per run before input is refused (the program is not reading).
/// With messages of at most 256 KiB that bounds a run's queued input to 16 MiB.
const INPUT_QUEUE: usize = 64;
/// After SIGTERM/SIGHUP, how long a run has before SIGKILL.
pub(crate) const KILL_GRACE: Duration = Duration::from_secs(3);

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
struct Decided {
    root: PathBuf,
    plan: RunPlan,
    policy: Policy,
    /// Why the run is uncaged, when it is.
    uncaged_because: Option<&'static str>,
    allow: Vec<String>,
    /// The variables `local.toml` grants the project (`[projects.NAME] env`), with their
    /// values from the daemon's environment. They reach a cage on bwrap's argument
    /// descriptor, never on a command line.
    granted_env: Vec<(String, String)>,
    /// The project's name, and the host paths `local.toml` grants it.
    project: String,
    granted_paths: Vec<kaged_cage::HostPath>,
    /// Who the cage runs as when the daemon is root (cages never run as UID 0).
    run_as: Option<kaged_cage::RunAs>,
}

/// `local.toml`'s environment grants of `project` that are set in the daemon's environment
/// (one missing is logged: the operator expected it to arrive).
fn granted_env(state: &ServerState, project: &str) -> Vec<(String, String)> {
    let Some(grants) = state.info.local.projects.get(project) else {
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

fn decide(state: &ServerState, req: &StartRequest) -> Result<Decided, ApiError> {
    let (root, config, had_git) = {
        let projects = lock(&state.projects);
        let p = projects.get(&req.project).ok_or_else(|| {
            ApiError::new(
                "not_found",
                format!(
                    "no project `{}` is loaded; `kaged project list` shows the loaded ones",
                    req.project
                ),
            )
        })?;
        if let Some(refusal) = crate::projects::overlap_refusal(&projects, p) {
            return Err(refusal);
        }
        (p.root.clone(), p.config.clone(), p.had_git)
    };
    // Outside the lock (they read the directory): a root that is gone, or a .git that appeared
    // since the load, is refused.
    if let Some(refusal) = crate::projects::missing_refusal(&req.project, &root) {
        return Err(refusal);
    }
    if let Some(refusal) = crate::projects::git_refusal(&req.project, &root, had_git) {
        return Err(refusal);
    }
    let project = kaged_dsl::Project::from_resolved(&config)
        .map_err(|e| ApiError::new("bad_request", e.to_string()))?;
    let plan = kaged_cage::plan_run(&project, req.kind, req.name.as_deref())
        .map_err(|e| ApiError::new("bad_request", e.to_string()))?;
    let policy = kaged_cage::policy_for(&project, &plan.cage_agent)
        .map_err(|e| ApiError::new("bad_request", e.to_string()))?;
    let sandbox_off = state.info.settings.sandbox_mode == SandboxMode::Disabled;
    let uncaged_because = match (&policy, sandbox_off) {
        (_, true) => Some("the daemon runs with --no-sandbox ([sandbox] mode = \"disabled\")"),
        (Policy::Disabled, false) => Some("the project sets `cage: disabled`"),
        _ => None,
    };
    if uncaged_because.is_none() {
        // The same check the spawn makes (a usable bwrap is asked once, not at every start).
        let problem = state
            .info
            .sandbox
            .problem
            .clone()
            .or_else(|| kaged_spawn::usable_bwrap().err().map(|e| e.to_string()));
        if let Some(problem) = problem {
            return Err(ApiError::new(
                "unavailable",
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
        None => kaged_spawn::run_as(&root, &state.info.settings.cage_user).map_err(|problem| {
            ApiError::new(
                "unavailable",
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
        granted_env: granted_env(state, &req.project),
        project: req.project.clone(),
        granted_paths: crate::projects::grants_of(&state.info.local, &req.project).paths,
        run_as,
    })
}

/// Create a session and start its run. Returns the new session's record.
pub async fn start(state: &Arc<ServerState>, req: StartRequest) -> Result<SessionRecord, ApiError> {
    let decided = match decide(state, &req) {
        Err(e) if e.code == "git_planted" => {
            crate::projects::audit_git_refusal(state, &req.project, &req.actor, req.source.clone())
                .await;
            return Err(e);
        }
        decided => decided?,
    };
    let sessions = &state.runs;
    {
        let running = sessions.running();
        let in_project = running.iter().filter(|l| l.project == req.project).count();
        let for_operator = running.iter().filter(|l| l.created_by == req.actor).count();
        if let Err(e) = sessions.limits.check(in_project, for_operator) {
            return Err(ApiError {
                code: "rate_limited",
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
        .create(&sessions.transcripts)
        .map_err(|e| {
            ApiError::internal(format!(
                "cannot create {}: {e}",
                sessions.transcripts.display()
            ))
        })?;
    let transcript_path = sessions.transcript_path(&id);
    let transcript =
        super::transcript::Writer::create(&transcript_path, super::retention::cap(state)).map_err(
            |e| ApiError::internal(format!("cannot create {}: {e}", transcript_path.display())),
        )?;
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
    let live = Arc::new(Live {
        id: id.clone(),
        project: req.project.clone(),
        kind: req.kind,
        name: decided.plan.name.clone(),
        created_by: req.actor.clone(),
        transcript: transcript_path,
        state: Mutex::new(State::Queued),
        changing: tokio::sync::Mutex::new(()),
        output: Mutex::new(Output {
            log: OutputLog::new(LOG_CAPACITY),
        }),
        screen: Mutex::new(ScreenAt::new(req.rows, req.cols)),
        size: Mutex::new((req.rows, req.cols)),
        end: watch::channel(0).0,
        state_kind: watch::channel(StateKind::Queued).0,
        input: Mutex::new(Some(input_tx)),
        killer: Mutex::new(None),
        ended_at_ms: Mutex::new(None),
        viewers: std::sync::atomic::AtomicUsize::new(0),
    });
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
    lock(&sessions.live).insert(id.clone(), live.clone());
    let store = state.store.clone();
    let stored = record.clone();
    if let Err(e) = sessions
        .store_and_publish(async move { store.create_session(stored, first).await })
        .await
    {
        lock(&sessions.live).remove(&id);
        return Err(crate::storage::start_failed(state, e));
    }
    state
        .audit
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
    let runner = Runner {
        state: state.clone(),
        live: live.clone(),
        decided,
        rows: req.rows,
        cols: req.cols,
        handle: handle.clone(),
    };
    let (state, live) = (state.clone(), live.clone());
    super::panics::spawn(
        "run",
        &id,
        move || runner.run(transcript, input_rx),
        move |message| crashed(&state, &live, &handle, message),
    )
    .map_err(|e| ApiError::internal(format!("cannot start the run's thread: {e}")))?;
    Ok(record)
}

/// After the runner panicked: end whatever of the run still lives and mark it failed (unless it
/// already has an end).
fn crashed(
    state: &Arc<ServerState>,
    live: &Arc<Live>,
    handle: &tokio::runtime::Handle,
    message: &str,
) {
    if let Some(killer) = lock(&live.killer).take() {
        killer.kill();
    }
    let reason = format!("kaged: the run's thread panicked ({message}); see kaged's log");
    handle.block_on(transition(state, live, Event::Crashed { reason }, "kaged"));
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

/// A run ready to spawn, and what must live as long as it.
struct Prepared {
    spec: kaged_spawn::Spec,
    cgroups: kaged_spawn::Cgroups,
    limits: Option<kaged_cage::LimitPlan>,
}

struct Runner {
    state: Arc<ServerState>,
    live: Arc<Live>,
    decided: Decided,
    rows: u16,
    cols: u16,
    handle: tokio::runtime::Handle,
}

impl Runner {
    fn transition(&self, event: Event, actor: &str) -> Option<State> {
        self.handle
            .block_on(transition(&self.state, &self.live, event, actor))
    }

    fn audit(&self, kind: &'static str, success: bool, detail: Value) {
        self.handle.block_on(self.state.audit.record(AuditRecord {
            kind,
            success,
            identity: Some(self.live.created_by.clone()),
            source: None,
            detail,
        }));
    }

    /// The whole life of the run, on its own thread (which lives as long as the run: the
    /// spawned process dies with it, see `kaged_spawn`).
    fn run(
        self,
        mut transcript: super::transcript::Writer,
        input: std::sync::mpsc::Receiver<Input>,
    ) {
        if self.transition(Event::Start, "kaged").is_none() {
            return; // Killed while queued.
        }
        let egress = match self.start_egress() {
            Ok(e) => e,
            Err(reason) => return self.fail(reason),
        };
        let prepared = match self.spec(egress.as_ref().map(|e| e.proxy.socket())) {
            Ok(s) => s,
            Err(reason) => return self.fail(reason),
        };
        if let Some(plan) = &prepared.limits
            && !(plan.enforced.is_empty() && plan.unenforced.is_empty())
        {
            self.audit(
                "cage.limits",
                plan.unenforced.is_empty(),
                json!({"session": self.live.id, "enforced": plan.enforced, "unenforced": plan.unenforced}),
            );
        }
        // Killed while the cage was being prepared: nothing of the command may start.
        if self.live.state().kind() != StateKind::Starting {
            return;
        }
        let run = match kaged_spawn::spawn_pty(&prepared.spec, self.rows, self.cols) {
            Ok(r) => r,
            Err(e) => return self.fail(e.to_string()),
        };
        let kaged_spawn::PtyRun {
            terminal,
            killer,
            waiter,
        } = run;
        *lock(&self.live.killer) = Some(killer.clone());
        let pid = killer.pid();
        // A kill that raced the spawn finds the killer now.
        match self.transition(Event::Spawned { pid }, "kaged") {
            Some(_) => {}
            None => {
                killer.kill();
            }
        }
        self.start_wall_clock(prepared.limits.as_ref().and_then(|l| l.wall_time_secs));
        if let Some(pids) = prepared.limits.as_ref().and_then(|l| l.watchdog_pids) {
            self.start_pids_watchdog(&killer, pids);
        }
        let writer_terminal = terminal.clone();
        let live = self.live.clone();
        let _ = super::panics::spawn(
            "in",
            &self.live.id,
            move || write_input(&writer_terminal, &live, input),
            |_| {},
        );
        let pump_done = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let screen = self.start_screen(pump_done.clone());
        self.pump(&terminal, &mut transcript);
        super::retention::record_extent(&self.state, &self.live.id, &transcript, &self.handle);
        pump_done.store(true, std::sync::atomic::Ordering::SeqCst);
        self.live.end.send_modify(|_| {});
        let exit = waiter.wait();
        if let Some(screen) = screen {
            let _ = screen.join();
        }
        if let Some(egress) = egress {
            egress.stop(&self.handle);
        }
        drop(prepared.cgroups);
        *lock(&self.live.killer) = None;
        let event = match exit.signal() {
            Some(sig) => Event::exit_signal(sig),
            None => Event::exit_code(exit.code()),
        };
        // Audited by the transition (or by the kill that ended the run first).
        self.transition(event, "kaged");
    }

    fn fail(&self, reason: String) {
        tracing::warn!(session = %self.live.id, %reason, "run could not start");
        // Audited by the transition (or by the kill that ended the run first).
        self.transition(Event::SpawnFailed { reason }, "kaged");
    }

    fn spec(&self, egress_socket: Option<&Path>) -> Result<Prepared, String> {
        let d = &self.decided;
        let mut env = vec![
            ("TERM".to_string(), "xterm-256color".to_string()),
            ("COLORTERM".to_string(), "truecolor".to_string()),
        ];
        env.push(("KAGED_SESSION".into(), self.live.id.clone()));
        env.extend(d.granted_env.iter().cloned());
        if d.uncaged_because.is_some() {
            return Ok(Prepared {
                spec: kaged_spawn::Spec::uncaged(
                    d.plan.command.clone(),
                    d.root.join(&d.plan.cwd),
                    &env,
                ),
                cgroups: Default::default(),
                limits: None,
            });
        }
        let run = kaged_spawn::caged(&kaged_spawn::CageRequest {
            root: &d.root,
            helper: self
                .state
                .info
                .sandbox
                .helper
                .as_deref()
                .unwrap_or(Path::new("/proc/self/exe")),
            policy: &d.policy,
            default_limits: &super::default_limits(&self.state.info.settings),
            launch: Launch {
                cwd: &d.plan.cwd,
                command: &d.plan.command,
                env: &env,
                own_terminal: true,
                egress: egress_socket,
            },
            name: super::run_name(&self.live.id),
            run_as: d.run_as.map(|r| r.identity),
            project: &d.project,
            grants: &d.granted_paths,
        })
        .map_err(|e| e.to_string())?;
        Ok(Prepared {
            spec: run.spec,
            cgroups: run.cgroups,
            limits: Some(run.limits),
        })
    }

    /// Read the PTY until the run closes it: transcript first, then memory, then viewers.
    fn pump(&self, terminal: &kaged_spawn::Terminal, transcript: &mut super::transcript::Writer) {
        let mut buf = vec![0u8; READ_CHUNK];
        let mut transcript_ok = true; // Reported once.
        loop {
            let n = match terminal.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            let chunk = &buf[..n];
            if transcript_ok && let Err(e) = transcript.write_all(chunk) {
                transcript_ok = false;
                tracing::error!(session = %self.live.id, error = %e, "cannot write the transcript; output is kept in memory only from now on");
            }
            // `end` is published under the log's lock: a viewer never reads bytes from the
            // log that lie past the end it may resume from.
            let mut out = lock(&self.live.output);
            let end = out.log.append(chunk);
            // Marked even after a transcript failure (already logged): memory must stay
            // bounded, so such bytes are lost to late readers rather than held forever.
            let _ = out.log.mark_persisted(end);
            self.live.end.send_replace(end);
            drop(out);
            super::panics::inject("runner");
        }
    }

    /// The screen model follows the output on a thread of its own, in large batches: the
    /// terminal parser is slower than a PTY, and the run must never wait for it. It may lag
    /// behind during a flood (then it reads the transcript); a snapshot is always of a
    /// consistent point (`ScreenAt.offset`), and viewers stream from there.
    fn start_screen(
        &self,
        pump_done: Arc<std::sync::atomic::AtomicBool>,
    ) -> Option<std::thread::JoinHandle<()>> {
        let live = self.live.clone();
        let handle = self.handle.clone();
        super::panics::spawn(
            "scr",
            &self.live.id,
            move || follow_screen(&live, &handle, &pump_done),
            |_| {},
        )
        .ok()
    }

    /// `cage_limit`: the cage's wall time as planned (its project's, or the default).
    fn start_wall_clock(&self, cage_limit: Option<u64>) {
        let secs = match (cage_limit, self.decided.plan.timeout_secs) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let Some(secs) = secs else { return };
        let state = self.state.clone();
        let live = self.live.clone();
        // Ends with the run, so an ended run is not held in memory for the rest of its limit.
        self.handle.spawn(async move {
            if !wait_ended(&live, Duration::from_secs(secs)).await {
                let by = format!("kaged: wall-time limit of {secs}s");
                abort(&state, &live, &by).await;
            }
        });
    }

    /// Without a cgroup, count the cage's processes and end the run past the limit: on a
    /// thread of its own (a scan of `/proc` blocks), every [`kaged_spawn::WATCHDOG_POLL`], and
    /// with SIGKILL at once (no grace: a fork flood would go on growing through it). Killing
    /// bwrap ends the cage's PID namespace, so processes that left the tree die too.
    fn start_pids_watchdog(&self, killer: &kaged_spawn::Killer, pids: u64) {
        let state = self.state.clone();
        let live = self.live.clone();
        let watched = killer.clone();
        let handle = self.handle.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("kaged-pid-{}", &self.live.id[..8]))
            .spawn(move || {
                let killer = watched;
                while !live.state().is_terminal() {
                    let count = killer.process_count() as u64;
                    if count > pids {
                        killer.kill();
                        let by = format!("kaged: pids limit of {pids} exceeded ({count} processes)");
                        tracing::warn!(session = %live.id, count, limit = pids, "pids limit exceeded: the run is killed");
                        handle.block_on(async {
                            let _ = transition(&state, &live, Event::Kill { actor: by.clone() }, &by).await;
                        });
                        // Whatever a scan may have missed dies with the cage's namespace; kill
                        // again in case bwrap was between forks.
                        killer.kill();
                        return;
                    }
                    std::thread::sleep(kaged_spawn::WATCHDOG_POLL);
                }
            });
        if let Err(e) = spawned {
            tracing::error!(session = %self.live.id, error = %e, "cannot start the pids watchdog; the run is killed");
            killer.kill();
        }
    }

    fn start_egress(&self) -> Result<Option<EgressRun>, String> {
        if self.decided.allow.is_empty() {
            return Ok(None);
        }
        EgressRun::start(&self.state, &self.live, &self.decided.allow, &self.handle).map(Some)
    }
}

/// Signal a run, then kill it after the grace period. `by` is recorded as who ended it.
pub(crate) async fn abort(state: &Arc<ServerState>, live: &Arc<Live>, by: &str) {
    let _ = transition(state, live, Event::Kill { actor: by.into() }, by).await;
    // Not spawned yet: the kill lands on the queued or starting state, and the runner kills
    // whatever it spawns once it finds the state moved on.
    let Some(killer) = lock(&live.killer).clone() else {
        return;
    };
    killer.signal_all(kaged_spawn::Signal::SIGHUP);
    killer.signal_all(kaged_spawn::Signal::SIGTERM);
    if !wait_ended(live, KILL_GRACE).await {
        killer.kill();
    }
}

/// Wait at most `limit` for the run to reach a final state; whether it did.
pub(crate) async fn wait_ended(live: &Live, limit: Duration) -> bool {
    let mut changes = live.state_kind.subscribe();
    tokio::time::timeout(limit, async {
        while !changes.borrow_and_update().is_terminal() {
            if changes.changed().await.is_err() {
                break;
            }
        }
    })
    .await
    .is_ok()
}

/// Largest batch the screen model takes at once.
const SCREEN_BATCH: usize = 256 * 1024;

/// Output quiet for this long lets the screen model catch up.
const SCREEN_QUIET: Duration = Duration::from_millis(30);
/// Behind by more than this, the model starts afresh from the last [`SCREEN_TAIL`] bytes
/// rather than parse a whole flood nobody saw (what was on screen before is long gone).
const SCREEN_MAX_LAG: u64 = 8 * 1024 * 1024;
const SCREEN_TAIL: u64 = 1024 * 1024;

/// Bring the screen model up to `upto` (bounded by the skip rule above).
pub(crate) fn catch_up(live: &Live, upto: u64) {
    let mut screen = lock(&live.screen);
    if screen.frozen.is_some() {
        return; // The run ended: its final screen is kept as it was.
    }
    if upto.saturating_sub(screen.offset) > SCREEN_MAX_LAG {
        let (rows, cols) = *lock(&live.size);
        screen.screen = kaged_session::screen::Screen::new(rows, cols);
        screen.offset = upto - SCREEN_TAIL;
    }
    while screen.offset < upto {
        let at = screen.offset;
        let batch = match live.read_memory(at, upto, SCREEN_BATCH) {
            Some(b) => b,
            // Fell out of memory: the transcript has it (from the first kept offset on,
            // when the cap dropped what is at `at`).
            None => match super::transcript::read(&live.transcript, at, upto, SCREEN_BATCH) {
                Ok((from, b)) => {
                    screen.offset = from;
                    b
                }
                Err(_) => return,
            },
        };
        if batch.is_empty() {
            return;
        }
        let at = screen.offset;
        screen.screen.process(&batch);
        screen.offset = at + batch.len() as u64;
    }
}

/// The screen model follows the output lazily: when it goes quiet, and at the end. The
/// terminal parser is slower than a PTY, so during a flood it waits (a new viewer's snapshot
/// catches it up first, see `pty.rs`), and it never takes CPU from the run.
fn follow_screen(
    live: &Live,
    handle: &tokio::runtime::Handle,
    pump_done: &std::sync::atomic::AtomicBool,
) {
    super::panics::inject("screen");
    let _ = rustix::process::setpriority_process(Some(rustix::thread::gettid()), 19);
    let mut ends = live.end.subscribe();
    loop {
        if pump_done.load(std::sync::atomic::Ordering::SeqCst) {
            // Read first: a `borrow()` kept across `catch_up` holds the watch's read lock while
            // it waits for the log's lock, and the pump, holding the log's lock, waits for the
            // watch's write lock (a deadlock that froze runs mid-output).
            let upto = *ends.borrow();
            catch_up(live, upto);
            return;
        }
        // The timer is made inside the runtime: this thread is not one of its workers, and
        // outside it tokio has no clock to give (it panics).
        let quiet =
            handle.block_on(async { tokio::time::timeout(SCREEN_QUIET, ends.changed()).await });
        match quiet {
            Ok(Ok(())) => continue,
            Ok(Err(_)) => return,
            Err(_) => {
                // Quiet: catch up, then sleep until there is more.
                let upto = *ends.borrow_and_update();
                catch_up(live, upto);
                // The pump's last wake-up may have been marked seen just above: then its
                // `pump_done` is already set, and waiting would hang the run's end (it joins us).
                if pump_done.load(std::sync::atomic::Ordering::SeqCst) {
                    continue;
                }
                if handle.block_on(ends.changed()).is_err() {
                    return;
                }
            }
        }
    }
}

fn write_input(
    terminal: &kaged_spawn::Terminal,
    live: &Live,
    input: std::sync::mpsc::Receiver<Input>,
) {
    for message in input {
        super::panics::inject("writer");
        let result = match message {
            Input::Bytes(bytes) => terminal.write_all(&bytes),
            Input::Resize(rows, cols) => {
                *lock(&live.size) = (rows, cols);
                lock(&live.screen).screen.resize(rows, cols);
                terminal.resize(rows, cols)
            }
        };
        if result.is_err() {
            break;
        }
    }
}

/// How long the end of a run waits for its last egress records (the final summary).
const EGRESS_AUDIT_GRACE: Duration = Duration::from_secs(10);

/// A run's egress proxy (stopped when dropped), its decisions aggregated into the audit trail.
struct EgressRun {
    proxy: kaged_egress::RunningProxy,
    audit: tokio::task::JoinHandle<()>,
    /// Declared after `proxy`: dropped after it removed the socket.
    _dir: RemoveDir,
}

/// The run's egress directory, removed (once empty) when dropped.
struct RemoveDir(PathBuf);

impl Drop for RemoveDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.0);
    }
}

impl EgressRun {
    fn start(
        state: &Arc<ServerState>,
        live: &Arc<Live>,
        allow: &[String],
        handle: &tokio::runtime::Handle,
    ) -> Result<EgressRun, String> {
        // A private directory of the run's own holding only its socket; the cage gets the
        // directory. Not below the runtime directory: bwrap resolves a bound descriptor's path
        // as the cage's user, who may be another than the daemon's and could not enter it.
        let dir = kaged_spawn::private_dir("kaged-egress")
            .map_err(|e| format!("cannot create the egress directory: {e}"))?;
        let dir = RemoveDir(dir);
        let socket = dir.0.join("egress.sock");
        let (proxy, decisions) = {
            let _guard = handle.enter();
            kaged_egress::RunningProxy::start(&socket, allow).map_err(|e| e.to_string())?
        };
        let audit = handle.spawn(audit_egress(state.clone(), live.clone(), decisions));
        Ok(EgressRun {
            proxy,
            audit,
            _dir: dir,
        })
    }

    /// Stop the proxy and wait for its final summary, so it is recorded before the run's end.
    fn stop(self, handle: &tokio::runtime::Handle) {
        let EgressRun { proxy, audit, _dir } = self;
        drop(proxy);
        drop(_dir);
        // The timer is made inside the runtime: outside, tokio has no clock to give it.
        let _ = handle.block_on(async { tokio::time::timeout(EGRESS_AUDIT_GRACE, audit).await });
    }
}

/// Audit a run's egress: the first distinct destinations one `cage.egress` record each, then
/// `cage.egress.summary` records (every minute while there is something new, and at the end)
/// with the counts, so a cage hammering its proxy cannot flood the trail.
async fn audit_egress(
    state: Arc<ServerState>,
    live: Arc<Live>,
    decisions: kaged_egress::Decisions,
) {
    let state = &state;
    let live = &live;
    kaged_egress::aggregate(decisions, |report| async move {
        let (kind, success, detail) = match report {
            kaged_egress::Report::Decision(d) => (
                "cage.egress",
                d.allowed,
                json!({
                    "session": live.id,
                    "project": live.project,
                    "method": d.method,
                    "host": d.host,
                    "port": d.port,
                    "decision": if d.allowed { "allowed" } else { "refused" },
                    "reason": d.reason,
                }),
            ),
            kaged_egress::Report::Summary(s) => (
                "cage.egress.summary",
                s.totals.refused == 0,
                json!({
                    "session": live.id,
                    "project": live.project,
                    "final": s.is_final,
                    "totals": {
                        "allowed": s.totals.allowed,
                        "refused": s.totals.refused,
                        "dropped": s.totals.dropped,
                    },
                    "since_last": s.since_last,
                    "destinations": s.destinations.iter().map(|(d, count)| json!({
                        "decision": if d.allowed { "allowed" } else { "refused" },
                        "method": d.method,
                        "host": d.host,
                        "port": d.port,
                        "count": count,
                    })).collect::<Vec<_>>(),
                    "others": {
                        "destinations": s.others.destinations,
                        "count": s.others.count,
                        "untracked": s.others.untracked,
                    },
                }),
            ),
        };
        state
            .audit
            .record(AuditRecord {
                kind,
                success,
                identity: Some(live.created_by.clone()),
                source: None,
                detail,
            })
            .await;
    })
    .await;
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::time::Instant;

    use super::*;
    use crate::sessions::Live;

    fn live() -> Live {
        Live {
            id: "0".repeat(32),
            project: "p".into(),
            kind: kaged_cage::RunKind::Terminal,
            name: "shell".into(),
            created_by: "tester".into(),
            // Never read: the output stays in memory.
            transcript: PathBuf::from("/nonexistent/kaged-test.out"),
            state: Mutex::new(State::Running { pid: 1 }),
            changing: tokio::sync::Mutex::new(()),
            output: Mutex::new(Output {
                log: OutputLog::new(LOG_CAPACITY),
            }),
            screen: Mutex::new(ScreenAt::new(24, 80)),
            size: Mutex::new((24, 80)),
            end: watch::channel(0).0,
            state_kind: watch::channel(StateKind::Running).0,
            input: Mutex::new(None),
            killer: Mutex::new(None),
            ended_at_ms: Mutex::new(None),
            viewers: AtomicUsize::new(0),
        }
    }

    /// What `pump` does with a chunk.
    fn publish(live: &Live, chunk: &[u8]) {
        let mut out = lock(&live.output);
        let end = out.log.append(chunk);
        out.log.mark_persisted(end).unwrap();
        live.end.send_replace(end);
    }

    /// Output in bursts, each starting while the follower catches up with the one before: the
    /// pump (log lock, then the `end` watch) and the follower (the `end` watch, then the log)
    /// once deadlocked here, the run frozen mid-output with its program blocked on the PTY.
    #[test]
    fn the_screen_follower_never_blocks_the_pump() {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let live = Arc::new(live());
        // Room for a whole burst: the follower then takes several batches from memory.
        lock(&live.output).log = OutputLog::new(4 * SCREEN_BATCH);
        let done = Arc::new(AtomicBool::new(false));
        let follower = {
            let (live, handle, done) = (live.clone(), runtime.handle().clone(), done.clone());
            std::thread::spawn(move || follow_screen(&live, &handle, &done))
        };
        let pump = {
            let live = live.clone();
            std::thread::spawn(move || {
                let line = b"0123456789 the quick brown fox jumps over the lazy dog\r\n";
                for _ in 0..10 {
                    for _ in 0..12_000 {
                        publish(&live, line);
                    }
                    std::thread::sleep(SCREEN_QUIET + Duration::from_millis(2));
                }
            })
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !pump.is_finished() {
            assert!(
                Instant::now() < deadline,
                "the pump is stuck (deadlocked with the screen follower)"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        done.store(true, Ordering::SeqCst);
        live.end.send_modify(|_| {});
        assert!(follower.join().is_ok(), "the screen follower panicked");
    }

    /// The follower runs on a thread outside the runtime: output that pauses longer than
    /// SCREEN_QUIET must bring the model up to date on its own, and the thread must live on.
    #[test]
    fn the_screen_model_follows_output_that_pauses() {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let live = Arc::new(live());
        let done = Arc::new(AtomicBool::new(false));
        let follower = {
            let (live, handle, done) = (live.clone(), runtime.handle().clone(), done.clone());
            std::thread::spawn(move || follow_screen(&live, &handle, &done))
        };
        publish(&live, b"hello");
        let deadline = Instant::now() + Duration::from_secs(5);
        while lock(&live.screen).offset < 5 {
            assert!(
                !follower.is_finished(),
                "the screen follower stopped while the run was going"
            );
            assert!(
                Instant::now() < deadline,
                "the screen model never caught up"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        publish(&live, b" world");
        done.store(true, Ordering::SeqCst);
        live.end.send_modify(|_| {});
        assert!(follower.join().is_ok(), "the screen follower panicked");
        let screen = lock(&live.screen);
        assert_eq!(screen.offset, 11);
        assert!(screen.screen.contents().contains("hello world"));
    }
}
