//! The plugin host: each enabled plugin in `[plugins] dir` runs as a process of its own in
//! a cage compiled from its declared capabilities (`kaged_plugin::Capabilities::cage`),
//! speaking line-delimited JSON-RPC on its stdio, supervised by `kaged_plugin::Supervisor`
//! (restarts with backoff, disabled after repeated failures). A plugin is outside kaged's
//! trust boundary: every call has a timeout, a line is bounded, anything off-protocol ends
//! its run, and nothing it does reaches a request path.
//!
//! - `mod.rs`: [`Plugins`], the plugins found in the directory, which are enabled (the
//!   configuration's `[plugins] enabled`, then the operator's `enable`/`disable`, kept in
//!   `DIR/.state.json`), their reports.
//! - `run.rs`: one plugin's supervision task: spawn, the protocol, health, shutdown.
//! - `http.rs`: `GET /api/v1/plugins`, `POST /api/v1/plugins/{name}/enable|disable`.

mod hooks;
pub(crate) mod http;
mod run;

pub use hooks::Hooks;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use kaged_plugin::{Manifest, Status};
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::audit::{AuditLog, AuditRecord};

/// What the plugin host needs of the daemon.
#[derive(Clone)]
pub struct PluginDeps {
    pub audit: AuditLog,
    /// Where plugins' key-value storage is kept.
    pub store: kaged_store::Store,
    /// The daemon's private copy of kaged bound into cages; `None`: `/proc/self/exe`.
    pub helper: Option<PathBuf>,
    /// `[sandbox] cage_user`.
    pub cage_user: String,
    /// Every cage's default limits.
    pub default_limits: kaged_cage::Limits,
    /// Why no plugin can run (no cage can be built, or cages are disabled): plugins never run
    /// uncaged.
    pub no_cage: Option<String>,
    /// `local.toml [plugins."NAME"]`: each plugin's operator-local settings.
    pub system_config: BTreeMap<String, kaged_config::PluginSettings>,
    /// Where they are set (`local.toml`), for messages.
    pub local_path: PathBuf,
}

/// The plugins of one daemon: cheap to clone.
#[derive(Clone)]
pub struct Plugins {
    inner: Arc<Inner>,
}

struct Inner {
    dir: PathBuf,
    /// `[plugins] enabled`.
    configured: Vec<String>,
    deps: PluginDeps,
    entries: Mutex<BTreeMap<String, Entry>>,
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    /// The sessions' hook events, taken by the dispatcher at start.
    hook_events: Mutex<Option<mpsc::UnboundedReceiver<hooks::HookEvent>>>,
    /// `plugin.state` events for the operator's event stream.
    events: tokio::sync::broadcast::Sender<Value>,
}

/// One plugin directory.
struct Entry {
    dir: PathBuf,
    manifest: Option<Arc<Manifest>>,
    /// Why its manifest is refused (the first problem, and how many there are).
    invalid: Option<String>,
    enabled: bool,
    view: Arc<Mutex<View>>,
    commands: Option<mpsc::UnboundedSender<Command>>,
}

/// A plugin's state as reported.
#[derive(Debug, Clone)]
pub(crate) struct View {
    pub status: Status,
    pub pid: Option<u32>,
    /// The pid the last `plugin.state` event said.
    pub published_pid: Option<u32>,
}

/// What the operator or the daemon asks of a plugin's task.
#[derive(Debug)]
pub(crate) enum Command {
    Start,
    Stop(String),
    /// Send this notification if the plugin is running (a hook).
    Notify(kaged_plugin::Message),
    /// Call one of its tools for a model agent; the answer (or why none) on `reply`.
    Call {
        /// The tool's name within the plugin, its arguments and who calls.
        params: kaged_plugin::wire::ToolCallParams,
        reply: tokio::sync::oneshot::Sender<Result<kaged_plugin::wire::ToolCallResult, String>>,
    },
    /// Stop and end the task (the daemon stops).
    Finish,
    /// Answered once every command before it has taken effect (a stop: the plugin has ended).
    Done(tokio::sync::oneshot::Sender<()>),
}

/// A model agent calling its plugins' tools: who it is, and what the project file gives them.
#[derive(Debug, Clone)]
pub struct Caller {
    pub project: String,
    pub session_id: String,
    pub agent: String,
    /// The agent's `plugins:`.
    pub plugins: Vec<String>,
    /// The agent's `plugin_config:`.
    pub plugin_config: BTreeMap<String, Value>,
}

/// The operator's choices, over the configuration's.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
struct Choices {
    #[serde(default)]
    enabled: Vec<String>,
    #[serde(default)]
    disabled: Vec<String>,
}

/// Why enabling or disabling a plugin did not happen.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    #[error("no plugin `{0}` is installed in {1}")]
    Unknown(String, String),
    #[error("the plugin `{0}` cannot run: {1}")]
    Invalid(String, String),
    #[error("cannot record the choice in {0}: {1}")]
    Save(String, std::io::Error),
}

const STATE_FILE: &str = ".state.json";

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Plugins {
    /// The plugins in `dir` (read now), none started yet, and the sessions' handle for
    /// hooks.
    pub fn new(dir: PathBuf, configured: Vec<String>, deps: PluginDeps) -> (Plugins, Hooks) {
        let (hooks, hook_events) = Hooks::channel();
        let plugins = Plugins {
            inner: Arc::new(Inner {
                dir,
                configured,
                deps,
                entries: Mutex::new(BTreeMap::new()),
                tasks: Mutex::new(Vec::new()),
                hook_events: Mutex::new(Some(hook_events)),
                events: tokio::sync::broadcast::channel(256).0,
            }),
        };
        plugins.scan();
        (plugins, hooks)
    }

    /// Deliver the sessions' hook events to the running plugins that declared each hook.
    async fn dispatch_hooks(self, mut events: mpsc::UnboundedReceiver<hooks::HookEvent>) {
        while let Some(event) = events.recv().await {
            let names: Vec<String> = lock(&self.inner.entries)
                .iter()
                .filter(|(_, e)| {
                    e.manifest
                        .as_ref()
                        .is_some_and(|m| m.hooks.contains(&event.hook))
                })
                .map(|(n, _)| n.clone())
                .collect();
            for name in names {
                let message =
                    kaged_plugin::Message::notification(event.hook.method(), event.params.clone());
                if let Some(tx) = lock(&self.inner.entries)
                    .get(&name)
                    .and_then(|e| e.commands.as_ref())
                {
                    let _ = tx.send(Command::Notify(message));
                }
            }
        }
    }

    fn choices(&self) -> Choices {
        std::fs::read(self.inner.dir.join(STATE_FILE))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    fn save_choices(&self, choices: &Choices) -> Result<(), PluginError> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let path = self.inner.dir.join(STATE_FILE);
        let fail = |e| PluginError::Save(path.display().to_string(), e);
        let temp = self
            .inner
            .dir
            .join(format!("{STATE_FILE}.{}", std::process::id()));
        let text = serde_json::to_vec_pretty(choices).unwrap_or_default();
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&temp)
            .map_err(fail)?;
        file.write_all(&text).map_err(fail)?;
        file.sync_all().map_err(fail)?;
        std::fs::rename(&temp, &path).map_err(fail)
    }

    /// Read every plugin directory: `DIR/NAME/kaged-plugin.yaml`, its name the directory's.
    fn scan(&self) {
        let choices = self.choices();
        let entries: BTreeMap<String, Entry> = self
            .installed()
            .into_iter()
            .map(|name| {
                let entry = self.read_entry(&name, &choices);
                (name, entry)
            })
            .collect();
        for name in self.inner.deps.system_config.keys() {
            if !entries.contains_key(name) {
                tracing::warn!(plugin = %name, file = %self.inner.deps.local_path.display(), "local.toml sets [plugins.\"{name}\"], but no such plugin is installed");
            }
        }
        *lock(&self.inner.entries) = entries;
    }

    /// The names of the plugin directories in `DIR` now.
    fn installed(&self) -> Vec<String> {
        let Ok(read) = std::fs::read_dir(&self.inner.dir) else {
            return Vec::new();
        };
        read.filter_map(|e| e.ok())
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .filter_map(|e| e.file_name().to_str().map(str::to_string))
            .filter(|name| !name.starts_with('.'))
            .collect()
    }

    /// `DIR/NAME` as it is on disk now, not started.
    fn read_entry(&self, name: &str, choices: &Choices) -> Entry {
        let dir = self.inner.dir.join(name);
        let (manifest, invalid) = match load(&dir, name) {
            (Some(m), None) => match self.settings_problem(&m) {
                Some(why) => (None, Some(why)),
                None => (Some(m), None),
            },
            loaded => loaded,
        };
        let enabled = !choices.disabled.iter().any(|n| n == name)
            && (choices.enabled.iter().any(|n| n == name)
                || self.inner.configured.iter().any(|n| n == name));
        let reason = match (&invalid, enabled) {
            (Some(why), _) => why.clone(),
            (None, true) => "not started".into(),
            (None, false) => "not enabled".into(),
        };
        Entry {
            dir,
            manifest: manifest.map(Arc::new),
            invalid,
            enabled,
            view: Arc::new(Mutex::new(View {
                status: stopped(reason),
                pid: None,
                published_pid: None,
            })),
            commands: None,
        }
    }

    /// Take in plugins installed since the directory was read (listed as not started).
    fn discover(&self) {
        let names = self.installed();
        if names
            .iter()
            .all(|n| lock(&self.inner.entries).contains_key(n))
        {
            return;
        }
        let choices = self.choices();
        for name in names {
            if !lock(&self.inner.entries).contains_key(&name) {
                let entry = self.read_entry(&name, &choices);
                lock(&self.inner.entries).entry(name).or_insert(entry);
            }
        }
    }

    /// Read `DIR/NAME` again unless its plugin runs: one installed, upgraded or mended since
    /// the directory was read is taken as it is now (its old task, stopped, is let go).
    fn reread(&self, name: &str) {
        if !kaged_plugin::is_plugin_name(name) || !self.inner.dir.join(name).is_dir() {
            return;
        }
        let choices = self.choices();
        let fresh = self.read_entry(name, &choices);
        let mut entries = lock(&self.inner.entries);
        if let Some(old) = entries.get(name) {
            let state = lock(&old.view).status.state;
            if !matches!(
                state,
                kaged_plugin::State::Stopped | kaged_plugin::State::Disabled
            ) {
                return;
            }
            if let Some(tx) = &old.commands {
                let _ = tx.send(Command::Finish);
            }
        }
        entries.insert(name.to_string(), fresh);
    }

    /// Why the operator's `local.toml [plugins."NAME"]` does not suit the plugin's
    /// `system_config_schema` (values never named: they are often secrets).
    fn settings_problem(&self, m: &Manifest) -> Option<String> {
        use kaged_plugin::settings::{Refusal, describe, settings_for};
        let local = self.inner.deps.local_path.display();
        let given = self.inner.deps.system_config.get(&m.name);
        let name = &m.name;
        let at = match given {
            Some(s) => format!("{local}:{}: plugins.{name}", s.line),
            None => format!("{local}: plugins.{name} (not set)"),
        };
        match settings_for(m.system_config_schema.as_ref(), given.map(|s| &s.values)) {
            Ok(_) => None,
            Err(Refusal::NotAsked) => Some(format!(
                "{at}: the plugin declares no system_config_schema, so it is given no settings; remove [plugins.\"{name}\"] from {local}"
            )),
            Err(Refusal::Mismatch(problems)) => Some(format!(
                "{at}: the plugin's settings do not match its system_config_schema: {}; fix [plugins.\"{name}\"] in {local} and restart kaged",
                describe(&problems)
            )),
        }
    }

    /// Start every enabled plugin's supervision (at daemon start). Plugins named in
    /// `[plugins] enabled` but not installed are said in the log.
    pub fn start_all(&self) {
        if let Some(events) = lock(&self.inner.hook_events).take() {
            tokio::spawn(self.clone().dispatch_hooks(events));
        }
        let names: Vec<String> = lock(&self.inner.entries)
            .iter()
            .filter(|(_, e)| e.enabled && e.manifest.is_some())
            .map(|(n, _)| n.clone())
            .collect();
        for missing in self
            .inner
            .configured
            .iter()
            .filter(|n| !lock(&self.inner.entries).contains_key(*n))
        {
            tracing::warn!(plugin = %missing, dir = %self.inner.dir.display(), "[plugins] enabled names a plugin that is not installed");
        }
        for name in names {
            self.command(&name, Command::Start);
        }
    }

    /// Send `command` to the plugin's task, starting the task first if it has none.
    fn command(&self, name: &str, command: Command) {
        let mut entries = lock(&self.inner.entries);
        let Some(entry) = entries.get_mut(name) else {
            return;
        };
        let Some(manifest) = entry.manifest.clone() else {
            return;
        };
        if entry.commands.as_ref().is_none_or(|c| c.is_closed()) {
            if matches!(
                command,
                Command::Finish
                    | Command::Stop(_)
                    | Command::Notify(_)
                    | Command::Call { .. }
                    | Command::Done(_)
            ) {
                return;
            }
            let (tx, rx) = mpsc::unbounded_channel();
            let plugin = run::Plugin {
                name: name.to_string(),
                dir: entry.dir.clone(),
                manifest,
                deps: self.inner.deps.clone(),
                view: entry.view.clone(),
                events: self.inner.events.clone(),
            };
            let task = tokio::spawn(run::supervise(plugin, rx));
            lock(&self.inner.tasks).push(task);
            entry.commands = Some(tx);
        }
        if let Some(tx) = &entry.commands {
            let _ = tx.send(command);
        }
    }

    /// Enable `name` (kept across restarts) and start it; its report once it is starting.
    pub async fn enable(&self, name: &str, actor: &str) -> Result<Value, PluginError> {
        self.choose(name, true)?;
        self.command(name, Command::Start);
        self.settled(name).await;
        self.audit("plugin.enabled", name, actor).await;
        Ok(self.report(name).unwrap_or(Value::Null))
    }

    /// Disable `name` (kept across restarts) and stop it; its report once it has ended.
    pub async fn disable(&self, name: &str, actor: &str) -> Result<Value, PluginError> {
        self.choose(name, false)?;
        self.command(name, Command::Stop("disabled by the operator".into()));
        self.settled(name).await;
        self.audit("plugin.disabled", name, actor).await;
        Ok(self.report(name).unwrap_or(Value::Null))
    }

    /// Wait until the plugin's task has carried out the commands sent so far (a stop waits
    /// for the plugin's `shutdown_timeout_sec`, then it is killed), so an answer shows the
    /// state they led to.
    async fn settled(&self, name: &str) {
        let (done, answered) = tokio::sync::oneshot::channel();
        let bound = lock(&self.inner.entries)
            .get(name)
            .and_then(|e| e.manifest.as_ref())
            .map_or(0, |m| m.shutdown_timeout_sec);
        self.command(name, Command::Done(done));
        let _ = tokio::time::timeout(std::time::Duration::from_secs(bound + 5), answered).await;
    }

    /// Record the operator's choice, then (once it is kept) take it.
    fn choose(&self, name: &str, enable: bool) -> Result<(), PluginError> {
        if enable {
            self.reread(name);
        }
        {
            let entries = lock(&self.inner.entries);
            let entry = entries.get(name).ok_or_else(|| {
                PluginError::Unknown(name.into(), self.inner.dir.display().to_string())
            })?;
            if let (Some(why), true) = (&entry.invalid, enable) {
                return Err(PluginError::Invalid(name.into(), why.clone()));
            }
        }
        let mut choices = self.choices();
        choices.enabled.retain(|n| n != name);
        choices.disabled.retain(|n| n != name);
        if enable {
            choices.enabled.push(name.into());
        } else {
            choices.disabled.push(name.into());
        }
        self.save_choices(&choices)?;
        if let Some(entry) = lock(&self.inner.entries).get_mut(name) {
            entry.enabled = enable;
        }
        Ok(())
    }

    async fn audit(&self, kind: &'static str, name: &str, actor: &str) {
        self.inner
            .deps
            .audit
            .record(AuditRecord {
                kind,
                success: true,
                identity: Some(actor.to_string()),
                source: None,
                detail: json!({"plugin": name}),
            })
            .await;
    }

    /// The tools of `plugins` (an agent's `plugins:`) that are installed, valid and enabled:
    /// `(PLUGIN.TOOL, description, input_schema)`.
    pub fn tools_of(&self, plugins: &[String]) -> Vec<(String, String, Value)> {
        let entries = lock(&self.inner.entries);
        plugins
            .iter()
            .filter_map(|name| entries.get(name).filter(|e| e.enabled))
            .filter_map(|e| e.manifest.as_deref())
            .flat_map(|m| {
                m.tools.iter().map(move |t| {
                    (
                        m.agent_tool_name(t),
                        t.description.clone(),
                        t.input_schema.clone(),
                    )
                })
            })
            .collect()
    }

    /// Call `PLUGIN.TOOL` (`name`) of one of the caller's plugins: the plugin's answer, or
    /// why there is none (not one of its tools, settings that do not match its
    /// `config_schema`, not running, no answer in time).
    pub async fn call_tool(
        &self,
        caller: &Caller,
        name: &str,
        arguments: Value,
    ) -> Result<kaged_plugin::wire::ToolCallResult, String> {
        let Some((manifest, tool, commands)) = self.find_tool(&caller.plugins, name) else {
            return Err(format!("`{name}` is not a tool of this agent's plugins"));
        };
        let plugin = manifest.name.clone();
        let config = committed_settings(&manifest, caller)?;
        let params = kaged_plugin::wire::ToolCallParams {
            name: tool,
            arguments,
            context: kaged_plugin::wire::CallContext {
                project: caller.project.clone(),
                session_id: caller.session_id.clone(),
                agent: caller.agent.clone(),
                config,
            },
        };
        let (reply, answer) = tokio::sync::oneshot::channel();
        let sent = commands.is_some_and(|tx| tx.send(Command::Call { params, reply }).is_ok());
        if !sent {
            return Err(format!("the plugin `{plugin}` is not running"));
        }
        answer
            .await
            .unwrap_or_else(|_| Err(format!("the plugin `{plugin}` stopped before it answered")))
    }

    /// Whether `name` is a tool (`PLUGIN.TOOL`) that one of `plugins` declares in its
    /// manifest, running or not (a call of a stopped plugin's tool says it is not running).
    pub fn has_tool(&self, plugins: &[String], name: &str) -> bool {
        self.find_tool(plugins, name).is_some()
    }

    /// The plugin among `plugins` whose manifest declares `name` (`PLUGIN.TOOL`): its
    /// manifest, the tool's own name, and its task's queue when it has one.
    fn find_tool(
        &self,
        plugins: &[String],
        name: &str,
    ) -> Option<(
        Arc<Manifest>,
        String,
        Option<mpsc::UnboundedSender<Command>>,
    )> {
        let entries = lock(&self.inner.entries);
        plugins.iter().find_map(|p| {
            let entry = entries.get(p)?;
            let manifest = entry.manifest.clone()?;
            let tool = manifest
                .tools
                .iter()
                .find(|t| manifest.agent_tool_name(t) == name)?
                .name
                .clone();
            Some((manifest, tool, entry.commands.clone()))
        })
    }

    /// `plugin.state` events: a plugin's state, reason, restarts, last error or process
    /// changed (`{"type": "plugin.state", "plugin": NAME, "state", "reason", "restarts",
    /// "last_error", "pid"}`), live only.
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<Value> {
        self.inner.events.subscribe()
    }

    /// Every plugin's report (`GET /api/v1/plugins`, `kaged plugin list`), plugins installed
    /// since the last look included.
    pub fn list(&self) -> Value {
        self.discover();
        let entries = lock(&self.inner.entries);
        let plugins: Vec<Value> = entries.iter().map(|(name, e)| report(name, e)).collect();
        json!({"dir": self.inner.dir, "plugins": plugins})
    }

    /// One plugin's report.
    pub fn report(&self, name: &str) -> Option<Value> {
        lock(&self.inner.entries).get(name).map(|e| report(name, e))
    }

    /// How many plugins are in each state (`kaged status`).
    pub fn summary(&self) -> Value {
        let mut counts: BTreeMap<String, u64> = BTreeMap::new();
        for (_, e) in lock(&self.inner.entries).iter() {
            *counts.entry(state_of(e)).or_default() += 1;
        }
        json!({"dir": self.inner.dir, "states": counts})
    }

    /// The daemon stops: every plugin gets `shutdown` (and is killed after its
    /// `shutdown_timeout_sec`); returns once all have ended.
    pub async fn stop_all(&self) {
        let names: Vec<String> = lock(&self.inner.entries).keys().cloned().collect();
        for name in names {
            self.command(&name, Command::Finish);
        }
        let tasks: Vec<_> = lock(&self.inner.tasks).drain(..).collect();
        for task in tasks {
            let _ = task.await;
        }
    }
}

/// The caller's committed settings for `manifest`'s plugin, checked against its
/// `config_schema`.
fn committed_settings(manifest: &Manifest, caller: &Caller) -> Result<Value, String> {
    use kaged_plugin::settings::{Refusal, describe, settings_for};
    let name = &manifest.name;
    let at = format!("the project file's `{}.plugin_config.{name}`", caller.agent);
    settings_for(
        manifest.config_schema.as_ref(),
        caller.plugin_config.get(name),
    )
    .map_err(|refusal| match refusal {
        Refusal::NotAsked => format!(
            "{at} gives settings, but the plugin `{name}` declares no config_schema; remove them"
        ),
        Refusal::Mismatch(problems) => format!(
            "{at} does not match the plugin's config_schema: {}; fix it in .kaged/project.yaml",
            describe(&problems)
        ),
    })
}

fn stopped(reason: String) -> Status {
    Status {
        state: kaged_plugin::State::Stopped,
        reason: Some(reason),
        restarts: 0,
        last_error: None,
        retry_at: None,
    }
}

fn state_of(e: &Entry) -> String {
    if e.invalid.is_some() {
        return "invalid".into();
    }
    lock(&e.view).status.state.as_str().into()
}

fn report(name: &str, e: &Entry) -> Value {
    let view = lock(&e.view).clone();
    let m = e.manifest.as_deref();
    json!({
        "name": name,
        "version": m.map(|m| m.version.to_string()),
        "description": m.map(|m| m.description.clone()),
        "enabled": e.enabled,
        "state": state_of(e),
        "reason": e.invalid.clone().or(view.status.reason),
        "restarts": view.status.restarts,
        "last_error": view.status.last_error,
        "pid": view.pid,
        "capabilities": m.map(|m| m.capabilities.list().iter().map(|c| c.to_string()).collect::<Vec<_>>()).unwrap_or_default(),
        "capabilities_described": m.map(|m| m.capabilities.list().iter().map(|c| json!({"capability": c.to_string(), "means": c.describe()})).collect::<Vec<_>>()).unwrap_or_default(),
        "tools": m.map(|m| m.tools.iter().map(|t| m.agent_tool_name(t)).collect::<Vec<_>>()).unwrap_or_default(),
    })
}

/// A plugin directory's manifest, or why it is refused.
fn load(dir: &Path, name: &str) -> (Option<Manifest>, Option<String>) {
    let path = dir.join(kaged_plugin::MANIFEST_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            let why = format!("cannot read {}: {e}", path.display());
            return (None, Some(run::unreadable_by_the_daemon(name, dir, &why)));
        }
        Err(e) => return (None, Some(format!("cannot read {}: {e}", path.display()))),
    };
    match kaged_plugin::load_manifest(&text) {
        Ok(m) if m.name != name => {
            let why = format!(
                "{} names the plugin `{}`, but it is installed as `{name}` (the directory's name must be the plugin's)",
                path.display(),
                m.name
            );
            (None, Some(why))
        }
        Ok(m) => (Some(m), None),
        Err(e) => {
            let first = e.to_string();
            let first = first.lines().next().unwrap_or_default().to_string();
            let more = e.diagnostics.len().saturating_sub(1);
            let why = match more {
                0 => format!("{}: {first}", path.display()),
                n => format!(
                    "{}: {first} (and {n} more: `kaged plugin validate {}`)",
                    path.display(),
                    dir.display()
                ),
            };
            (None, Some(why))
        }
    }
}
