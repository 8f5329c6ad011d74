//! One plugin's supervision: a task that owns its `Supervisor`, starts the plugin in its cage
//! when told to, speaks the protocol with it (`initialize` → `initialized`, `health` every
//! `health_interval_sec`, the plugin's own requests answered, `shutdown` at the end), turns
//! whatever goes wrong into the supervisor's events, and carries out its actions.
//!
//! ```text
//! task plugin-NAME (supervise) <-- Command (start, stop, finish)
//!  |-- task: stdout lines, bounded --> Incoming
//!  |-- task: stderr --> kaged's log (a bounded number of lines)
//!  `-- thread: wait (reap) --> Incoming::Exited
//! ```

mod stage;

pub(super) use stage::unreadable_by_the_daemon;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kaged_plugin::wire::{
    self, HealthResult, HealthStatus, InitializeParams, ToolCallParams, method,
};
use kaged_plugin::{Action, Calls, Event, Manifest, Message, RestartPolicy, Supervisor, Timeouts};
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

use super::{Command, PluginDeps, View, lock};
use crate::audit::AuditRecord;
use crate::sessions::egress::EgressDir;

/// Lines of a plugin's stderr copied to kaged's log per run, at most.
const STDERR_LINES: usize = 200;

/// A plugin to supervise.
pub(crate) struct Plugin {
    pub name: String,
    pub dir: PathBuf,
    pub manifest: Arc<Manifest>,
    pub deps: PluginDeps,
    pub view: Arc<Mutex<View>>,
    /// Where `plugin.state` events go.
    pub events: tokio::sync::broadcast::Sender<Value>,
}

/// What a running plugin's readers report.
enum Incoming {
    Line(Result<Message, String>),
    Exited(String),
}

/// A started plugin process.
struct Running {
    to: tokio::net::unix::pipe::Sender,
    killer: kaged_spawn::Killer,
    calls: Calls,
    /// Model agents waiting for its tools' answers, by request id.
    tool_calls: std::collections::HashMap<i64, ToolReply>,
    /// Its cgroups (removed, with anything left in them, when the run is dropped).
    _cgroups: kaged_spawn::Cgroups,
    /// Its egress proxy, when it declared network destinations.
    _egress: Option<(kaged_egress::RunningProxy, EgressDir)>,
    /// The files its cage binds (a root daemon's copy is removed with the run).
    _files: stage::CageFiles,
}

/// Where a tool call's answer goes.
type ToolReply = tokio::sync::oneshot::Sender<Result<wire::ToolCallResult, String>>;

/// The restart policy; debug builds obey `KAGED_TEST_PLUGIN_BACKOFF_MS` (the first backoff,
/// and a tenth of a second's stability) so tests see a plugin disabled in seconds.
fn policy() -> RestartPolicy {
    #[cfg(debug_assertions)]
    if let Some(ms) = std::env::var("KAGED_TEST_PLUGIN_BACKOFF_MS")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        return RestartPolicy {
            first_backoff: Duration::from_millis(ms),
            max_backoff: Duration::from_millis(ms * 4),
            ..RestartPolicy::default()
        };
    }
    RestartPolicy::default()
}

/// Call timeouts; debug builds obey `KAGED_TEST_PLUGIN_INIT_TIMEOUT_MS` and
/// `KAGED_TEST_PLUGIN_CALL_TIMEOUT_MS`.
fn timeouts() -> Timeouts {
    #[allow(unused_mut)]
    let mut t = Timeouts::default();
    #[cfg(debug_assertions)]
    {
        let ms = |name: &str| {
            std::env::var(name)
                .ok()
                .and_then(|v| v.parse().ok())
                .map(Duration::from_millis)
        };
        if let Some(d) = ms("KAGED_TEST_PLUGIN_INIT_TIMEOUT_MS") {
            t.initialize = d;
        }
        if let Some(d) = ms("KAGED_TEST_PLUGIN_CALL_TIMEOUT_MS") {
            t.tool_call = d;
        }
    }
    t
}

/// Supervise `plugin` until told to finish.
pub(crate) async fn supervise(plugin: Plugin, mut commands: mpsc::UnboundedReceiver<Command>) {
    let epoch = Instant::now();
    let now = || epoch.elapsed();
    let mut sup = Supervisor::new(policy());
    let timeouts = timeouts();
    let health_every = Duration::from_secs(plugin.manifest.health_interval_sec);
    let (tx, mut rx) = mpsc::channel::<(u64, Incoming)>(64);
    // Each run's readers tag what they send with the run's number: a late line or exit of
    // an earlier run is dropped.
    let mut generation = 0u64;
    let mut running: Option<Running> = None;
    let mut wake_at: Option<Duration> = None;
    // Tool calls that came while the plugin (re)started: (params, reply, deadline).
    let mut waiting: Vec<(ToolCallParams, ToolReply, Duration)> = Vec::new();
    let mut health_at: Option<Duration> = None;
    let mut actions: Vec<Action> = Vec::new();
    loop {
        for action in std::mem::take(&mut actions) {
            match action {
                Action::Spawn => {
                    generation += 1;
                    match start(&plugin, generation, tx.clone()) {
                        Ok(mut run) => {
                            let params = InitializeParams {
                                kaged_api: kaged_plugin::SUPPORTED_API,
                                config: json!({}),
                                system_config: plugin
                                    .deps
                                    .system_config
                                    .get(&plugin.name)
                                    .map_or_else(|| json!({}), |s| s.values.clone()),
                            };
                            let call = run.calls.call(
                                method::INITIALIZE,
                                serde_json::to_value(params).unwrap_or_default(),
                                now(),
                                timeouts.initialize,
                            );
                            let pid = run.killer.pid();
                            if send(&mut run, &call).await.is_err() {
                                actions.extend(sup.handle(
                                    Event::Broken("cannot write to the plugin".into()),
                                    now(),
                                ));
                            }
                            lock(&plugin.view).pid = Some(pid);
                            running = Some(run);
                        }
                        Err(why) => {
                            audit(&plugin, "plugin.failed", false, json!({"reason": why})).await;
                            // Not `Exited`: nothing ran, and the reason says why on its own.
                            actions.extend(sup.handle(Event::Broken(why), now()));
                        }
                    }
                }
                Action::Kill => {
                    if let Some(run) = running.take() {
                        run.killer.kill();
                    }
                    lock(&plugin.view).pid = None;
                    health_at = None;
                }
                Action::Shutdown => {
                    if let Some(run) = running.take() {
                        shutdown(&plugin, run, &mut rx, generation).await;
                    }
                    lock(&plugin.view).pid = None;
                    health_at = None;
                }
                Action::WakeAt(at) => wake_at = Some(at),
            }
        }
        publish(&plugin, &sup);
        let deadline = [
            wake_at,
            health_at,
            running.as_ref().and_then(|r| r.calls.next_deadline()),
            waiting.iter().map(|w| w.2).min(),
        ]
        .into_iter()
        .flatten()
        .min();
        let sleep = async {
            match deadline {
                Some(at) => tokio::time::sleep(at.saturating_sub(now())).await,
                None => std::future::pending().await,
            }
        };
        let before = sup.status().state;
        tokio::select! {
            command = commands.recv() => match command {
                Some(Command::Start) => actions.extend(sup.handle(Event::Start, now())),
                Some(Command::Stop(why)) => actions.extend(sup.handle(Event::Stop(why), now())),
                Some(Command::Call { params, reply }) => {
                    let state = sup.state();
                    match running.as_mut() {
                        Some(run) if matches!(state, kaged_plugin::State::Running | kaged_plugin::State::Unhealthy) => {
                            if !call_tool(run, params, reply, now(), timeouts.tool_call).await {
                                actions.extend(sup.handle(
                                    Event::Broken("cannot write to the plugin".into()),
                                    now(),
                                ));
                            }
                        }
                        // (Re)starting: the call waits for it, within the call's own timeout.
                        _ if matches!(state, kaged_plugin::State::Starting | kaged_plugin::State::BackingOff) => {
                            waiting.push((params, reply, now() + timeouts.tool_call));
                        }
                        _ => {
                            let why = sup.status().reason.clone().unwrap_or_default();
                            let _ = reply.send(Err(format!(
                                "the plugin `{}` is {state}{}",
                                plugin.name,
                                if why.is_empty() { String::new() } else { format!(": {why}") }
                            )));
                        }
                    }
                }
                Some(Command::Notify(message)) => {
                    let up = matches!(
                        sup.state(),
                        kaged_plugin::State::Running | kaged_plugin::State::Unhealthy
                    );
                    if let (true, Some(run)) = (up, running.as_mut()) {
                        let _ = send(run, &message).await;
                    }
                }
                // Every command before it has been carried out (the loop runs the actions
                // they led to before it reads the next command).
                Some(Command::Done(done)) => {
                    let _ = done.send(());
                }
                Some(Command::Finish) | None => {
                    // Its Shutdown action is carried out here: the task ends with it.
                    let _ = sup.handle(Event::Stop("kaged stopped".into()), now());
                    if let Some(run) = running.take() {
                        shutdown(&plugin, run, &mut rx, generation).await;
                    }
                    publish(&plugin, &sup);
                    return;
                }
            },
            Some((from, incoming)) = rx.recv() => {
                if from != generation || running.is_none() {
                    continue;
                }
                match incoming {
                    Incoming::Exited(how) => {
                        running = None;
                        lock(&plugin.view).pid = None;
                        health_at = None;
                        audit(&plugin, "plugin.failed", false, json!({"reason": format!("exited: {how}")})).await;
                        actions.extend(sup.handle(Event::Exited(how), now()));
                    }
                    Incoming::Line(Err(why)) => {
                        audit(&plugin, "plugin.failed", false, json!({"reason": why})).await;
                        actions.extend(sup.handle(Event::Broken(why), now()));
                    }
                    Incoming::Line(Ok(message)) => {
                        if let Some(run) = running.as_mut() {
                            let event = handle(&plugin, run, message).await;
                            if let Some(event) = event {
                                if let Event::Broken(why) = &event {
                                    audit(&plugin, "plugin.failed", false, json!({"reason": why})).await;
                                }
                                let initialized = event == Event::Initialized;
                                actions.extend(sup.handle(event, now()));
                                if initialized {
                                    for (params, reply, _) in std::mem::take(&mut waiting) {
                                        if !call_tool(run, params, reply, now(), timeouts.tool_call).await {
                                            actions.extend(sup.handle(
                                                Event::Broken("cannot write to the plugin".into()),
                                                now(),
                                            ));
                                        }
                                    }
                                    health_at = Some(now() + health_every);
                                    audit(&plugin, "plugin.started", true, json!({"version": plugin.manifest.version.to_string()})).await;
                                }
                            }
                        }
                    }
                }
            },
            () = sleep => {
                let at = now();
                if wake_at.is_some_and(|w| w <= at) {
                    wake_at = None;
                    actions.extend(sup.handle(Event::Tick, at));
                }
                if let Some(run) = running.as_mut() {
                    for (id, waiting) in run.calls.expire(at) {
                        if let (wire::Id::Number(n), method::TOOLS_CALL) = (&id, waiting.method.as_str())
                            && let Some(reply) = run.tool_calls.remove(n)
                        {
                            let _ = reply.send(Err(format!(
                                "the plugin `{}` did not answer within {} s (it is restarted)",
                                plugin.name,
                                timeouts.tool_call.as_secs_f64()
                            )));
                        }
                        let secs = |d: Duration| d.as_millis() as f64 / 1000.0;
                        let event = match waiting.method.as_str() {
                            method::HEALTH => Event::HealthFailed(format!(
                                "no answer to `health` within {} s", secs(timeouts.health)
                            )),
                            other => Event::Broken(format!(
                                "no answer to `{other}` within {} s",
                                secs(if other == method::INITIALIZE { timeouts.initialize } else { timeouts.tool_call })
                            )),
                        };
                        if let Event::Broken(why) = &event {
                            audit(&plugin, "plugin.failed", false, json!({"reason": why})).await;
                        }
                        actions.extend(sup.handle(event, at));
                    }
                }
                if health_at.is_some_and(|h| h <= at) {
                    health_at = Some(at + health_every);
                    if let Some(run) = running.as_mut() {
                        let call = run.calls.call(method::HEALTH, json!({}), at, timeouts.health);
                        if send(run, &call).await.is_err() {
                            actions.extend(sup.handle(
                                Event::HealthFailed("cannot write to the plugin".into()),
                                at,
                            ));
                        }
                    }
                }
            }
        }
        let after = sup.status().state;
        // Calls waiting for a restart: given up at their deadline, or when none is coming.
        let at = now();
        let gone = !matches!(
            after,
            kaged_plugin::State::Starting
                | kaged_plugin::State::BackingOff
                | kaged_plugin::State::Running
                | kaged_plugin::State::Unhealthy
        );
        for (_, reply, deadline) in waiting.extract_if(.., |w| gone || w.2 <= at) {
            let why = sup.status().reason.clone().unwrap_or_default();
            let _ = reply.send(Err(if deadline <= at {
                format!(
                    "the plugin `{}` did not come back within {} s: {why}",
                    plugin.name,
                    timeouts.tool_call.as_secs_f64()
                )
            } else {
                format!("the plugin `{}` is {after}: {why}", plugin.name)
            }));
        }
        if before != after && after == kaged_plugin::State::Disabled {
            audit(
                &plugin,
                "plugin.disabled",
                false,
                json!({"reason": sup.status().reason}),
            )
            .await;
        }
    }
}

/// Send a `tools/call` whose answer goes to `reply`; whether it could be written.
async fn call_tool(
    run: &mut Running,
    params: ToolCallParams,
    reply: ToolReply,
    now: Duration,
    timeout: Duration,
) -> bool {
    let call = run.calls.call(
        method::TOOLS_CALL,
        serde_json::to_value(params).unwrap_or_default(),
        now,
        timeout,
    );
    if let Message::Request {
        id: wire::Id::Number(n),
        ..
    } = &call
    {
        run.tool_calls.insert(*n, reply);
    }
    send(run, &call).await.is_ok()
}

/// One message from the plugin: the supervisor's event it makes, if any.
async fn handle(plugin: &Plugin, run: &mut Running, message: Message) -> Option<Event> {
    match message {
        Message::Response { id, outcome } => match run.calls.answer(id.as_ref(), outcome) {
            Err(e) => Some(Event::Broken(format!("the plugin broke the protocol: {e}"))),
            Ok((waiting, outcome)) => match (waiting.method.as_str(), outcome) {
                (method::TOOLS_CALL, outcome) => {
                    let reply = match &id {
                        Some(wire::Id::Number(n)) => run.tool_calls.remove(n),
                        _ => None,
                    };
                    let answer = match outcome {
                        Ok(result) => serde_json::from_value::<wire::ToolCallResult>(result)
                            .map_err(|e| format!("the plugin's answer does not read: {e}")),
                        Err(e) => Err(format!("the plugin answered with an error: {e}")),
                    };
                    if let Some(reply) = reply {
                        let _ = reply.send(answer);
                    }
                    None
                }
                (method::INITIALIZE, Ok(_)) => {
                    let note = Message::notification(method::INITIALIZED, json!({}));
                    if send(run, &note).await.is_err() {
                        return Some(Event::Broken("cannot write to the plugin".into()));
                    }
                    Some(Event::Initialized)
                }
                (method::INITIALIZE, Err(e)) => Some(Event::Broken(format!(
                    "the plugin refused `initialize`: {e}"
                ))),
                (method::HEALTH, Ok(result)) => {
                    match serde_json::from_value::<HealthResult>(result) {
                        Ok(HealthResult {
                            status: HealthStatus::Ok,
                            ..
                        }) => Some(Event::HealthOk),
                        Ok(HealthResult { message, .. }) => Some(Event::HealthFailed(
                            message.unwrap_or_else(|| "the plugin says it is unhealthy".into()),
                        )),
                        Err(e) => Some(Event::HealthFailed(format!(
                            "its answer to `health` does not read: {e}"
                        ))),
                    }
                }
                (method::HEALTH, Err(e)) => Some(Event::HealthFailed(e.to_string())),
                _ => None,
            },
        },
        Message::Request { id, method, params } => {
            let outcome = match wire::storage_request(
                &method,
                params.as_ref(),
                plugin.manifest.capabilities.cage().storage,
            ) {
                Err(refused) => Err(refused),
                Ok(op) => storage(plugin, op).await,
            };
            let answer = Message::Response {
                id: Some(id),
                outcome,
            };
            if send(run, &answer).await.is_err() {
                return Some(Event::Broken("cannot write to the plugin".into()));
            }
            None
        }
        Message::Notification { method, .. } => {
            tracing::debug!(plugin = %plugin.name, %method, "a plugin's notification ignored");
            None
        }
    }
}

/// A plugin's storage request (its capability checked), carried out on its own keys.
async fn storage(plugin: &Plugin, op: wire::StorageOp) -> Result<Value, wire::RpcError> {
    let store = &plugin.deps.store;
    let name = plugin.name.clone();
    let done = match op {
        wire::StorageOp::Get { key } => store
            .plugin_storage_get(name, key)
            .await
            .map(|v| v.unwrap_or(Value::Null)),
        wire::StorageOp::Set { key, value } => store
            .plugin_storage_set(name, key, value)
            .await
            .map(|()| Value::Null),
        wire::StorageOp::Delete { key } => store
            .plugin_storage_delete(name, key)
            .await
            .map(|_| Value::Null),
        wire::StorageOp::List { prefix } if prefix.chars().any(char::is_control) => {
            return Err(wire::RpcError::new(
                wire::code::INVALID_PARAMS,
                "storage/list: a prefix has no control characters",
            ));
        }
        wire::StorageOp::List { prefix } => store
            .plugin_storage_list(name, prefix)
            .await
            .map(|keys| json!(keys)),
    };
    done.map_err(|e| match e {
        kaged_store::StoreError::QuotaExceeded { .. } => {
            wire::RpcError::new(wire::code::STORAGE_LIMIT, e.to_string())
        }
        other => {
            tracing::error!(plugin = %plugin.name, error = %other, "a plugin's storage request failed");
            wire::RpcError::new(wire::code::INTERNAL_ERROR, "kaged's storage failed; try again later")
        }
    })
}

async fn send(run: &mut Running, message: &Message) -> std::io::Result<()> {
    let mut line = message.to_line();
    line.push('\n');
    run.to.write_all(line.as_bytes()).await
}

/// `shutdown`, then its end within `shutdown_timeout_sec`, else a kill.
async fn shutdown(
    plugin: &Plugin,
    mut run: Running,
    rx: &mut mpsc::Receiver<(u64, Incoming)>,
    generation: u64,
) {
    let grace = Duration::from_secs(plugin.manifest.shutdown_timeout_sec);
    let call = run
        .calls
        .call(method::SHUTDOWN, json!({}), Duration::ZERO, grace);
    let _ = send(&mut run, &call).await;
    let ended = tokio::time::timeout(grace, async {
        while let Some((from, incoming)) = rx.recv().await {
            if from == generation && matches!(incoming, Incoming::Exited(_)) {
                return;
            }
        }
    })
    .await;
    if ended.is_err() {
        tracing::warn!(plugin = %plugin.name, "the plugin did not end within its shutdown_timeout_sec; killed");
        run.killer.kill();
    }
}

/// Show the supervisor's status in the plugin's report; a change is a `plugin.state` event.
fn publish(plugin: &Plugin, sup: &Supervisor) {
    let mut view = lock(&plugin.view);
    let status = sup.status();
    let changed = view.status.state != status.state
        || view.status.reason != status.reason
        || view.status.restarts != status.restarts
        || view.status.last_error != status.last_error
        || view.published_pid != view.pid;
    if !changed {
        return;
    }
    view.status = status.clone();
    view.published_pid = view.pid;
    // No one listening is not a failure.
    let _ = plugin.events.send(json!({
        "type": "plugin.state",
        "plugin": plugin.name,
        "state": status.state.as_str(),
        "reason": status.reason,
        "restarts": status.restarts,
        "last_error": status.last_error,
        "pid": view.pid,
    }));
}

async fn audit(plugin: &Plugin, kind: &'static str, success: bool, mut detail: Value) {
    detail["plugin"] = json!(plugin.name);
    plugin
        .deps
        .audit
        .record(AuditRecord {
            kind,
            success,
            identity: None,
            source: None,
            detail,
        })
        .await;
}

/// Start the plugin in its cage, its readers reporting to `tx` as run `generation`.
fn start(
    plugin: &Plugin,
    generation: u64,
    tx: mpsc::Sender<(u64, Incoming)>,
) -> Result<Running, String> {
    let deps = &plugin.deps;
    if let Some(why) = &deps.no_cage {
        return Err(format!("plugins run only in cages, and {why}"));
    }
    let cage = plugin.manifest.capabilities.cage();
    let egress = match &cage.policy {
        kaged_cage::Policy::Caged {
            network: kaged_cage::Network::Allow(allow),
            ..
        } => Some(start_egress(plugin, allow)?),
        _ => None,
    };
    let run_as = kaged_spawn::run_as(&plugin.dir, &deps.cage_user)?;
    let files = stage::for_cage(
        &plugin.name,
        &plugin.dir,
        run_as.as_ref(),
        deps.helper.as_deref(),
    )?;
    let run_as = run_as.map(|r| r.identity);
    let mut env = vec![("TERM".to_string(), "dumb".to_string())];
    env.extend(plugin.manifest.env.iter().cloned());
    let name = run_name(&plugin.name, generation);
    let run = kaged_spawn::caged(&kaged_spawn::CageRequest {
        root: files.root(),
        helper: deps
            .helper
            .as_deref()
            .unwrap_or(std::path::Path::new("/proc/self/exe")),
        policy: &cage.policy,
        default_limits: &deps.default_limits,
        launch: kaged_cage::Launch {
            cwd: std::path::Path::new("."),
            command: &plugin.manifest.command,
            env: &env,
            own_terminal: false,
            egress: egress.as_ref().map(|(p, _)| p.socket()),
        },
        name: &name,
        run_as,
        project: &plugin.name,
        grants: &cage.grants,
    })
    .map_err(|e| e.to_string())?;
    let piped = kaged_spawn::spawn_piped(&run.spec).map_err(|e| e.to_string())?;
    let kaged_spawn::PipedRun {
        stdin,
        stdout,
        stderr,
        killer,
        waiter,
    } = piped;
    let to = tokio::net::unix::pipe::Sender::from_owned_fd(std::os::fd::OwnedFd::from(stdin))
        .map_err(|e| e.to_string())?;
    let from = tokio::net::unix::pipe::Receiver::from_owned_fd(std::os::fd::OwnedFd::from(stdout))
        .map_err(|e| e.to_string())?;
    tokio::spawn(read_lines(from, tx.clone(), generation));
    let name = plugin.name.clone();
    let _ = std::thread::Builder::new()
        .name(format!(
            "kaged-plug-{}",
            plugin.name.chars().take(4).collect::<String>()
        ))
        .spawn(move || log_stderr(&name, stderr));
    let _ = std::thread::Builder::new()
        .name("kaged-plugin-wait".into())
        .spawn(move || {
            let exit = waiter.wait();
            let how = match exit.signal() {
                Some(sig) => format!("killed by signal {sig}"),
                None => format!("exit code {}", exit.code()),
            };
            let _ = tx.blocking_send((generation, Incoming::Exited(how)));
        });
    Ok(Running {
        to,
        killer,
        calls: Calls::new(),
        tool_calls: Default::default(),
        _cgroups: run.cgroups,
        _egress: egress,
        _files: files,
    })
}

/// A name for one run of the plugin's cgroups: 16 hex digits (as run names are), of its
/// name, this daemon and the run, so a run never meets an earlier one's leftovers.
fn run_name(plugin: &str, generation: u64) -> String {
    use sha2::Digest;
    let started = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let digest = sha2::Sha256::digest(
        format!(
            "plugin:{plugin}:{}:{generation}:{started}",
            std::process::id()
        )
        .as_bytes(),
    );
    digest.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

/// The plugin's egress proxy for the destinations it declared, in a private directory; its
/// decisions audited as `plugin.egress`.
fn start_egress(
    plugin: &Plugin,
    allow: &[String],
) -> Result<(kaged_egress::RunningProxy, EgressDir), String> {
    let dir = EgressDir::create()?;
    let socket = dir.socket();
    let (proxy, decisions) =
        kaged_egress::RunningProxy::start(&socket, allow).map_err(|e| e.to_string())?;
    let audit_log = plugin.deps.audit.clone();
    let name = plugin.name.clone();
    tokio::spawn(kaged_egress::aggregate(decisions, move |report| {
        let (audit_log, name) = (audit_log.clone(), name.clone());
        async move {
            if let kaged_egress::Report::Decision(d) = report {
                audit_log
                    .record(AuditRecord {
                        kind: "plugin.egress",
                        success: d.allowed,
                        identity: None,
                        source: None,
                        detail: json!({"plugin": name, "method": d.method, "host": d.host,
                            "port": d.port, "decision": if d.allowed { "allowed" } else { "refused" },
                            "reason": d.reason}),
                    })
                    .await;
            }
        }
    }));
    Ok((proxy, dir))
}

/// Read the plugin's lines (each at most `MAX_LINE_BYTES`) into `tx` until its output ends.
async fn read_lines(
    from: tokio::net::unix::pipe::Receiver,
    tx: mpsc::Sender<(u64, Incoming)>,
    generation: u64,
) {
    use crate::lines::{Line, next_line};
    let mut reader = tokio::io::BufReader::new(from);
    loop {
        let parsed = match next_line(&mut reader, wire::MAX_LINE_BYTES).await {
            Line::End => return,
            Line::TooLong => Err(format!(
                "the plugin wrote a line longer than {} bytes",
                wire::MAX_LINE_BYTES
            )),
            Line::Text(text, _) => {
                if text.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                Message::parse(&text).map_err(|e| {
                    let shown: String = String::from_utf8_lossy(&text).chars().take(200).collect();
                    format!("the plugin broke the protocol: {e}: `{shown}`")
                })
            }
        };
        let broken = parsed.is_err();
        if tx.send((generation, Incoming::Line(parsed))).await.is_err() || broken {
            return;
        }
    }
}

/// Copy a plugin's stderr to kaged's log, a bounded number of lines; read to the end so a
/// full pipe never stops it.
fn log_stderr(name: &str, stderr: std::process::ChildStderr) {
    crate::lines::log_lines(stderr, STDERR_LINES, |line| {
        tracing::info!(plugin = %name, line = %line.chars().take(1000).collect::<String>(), "plugin stderr");
    });
}
