//! Model agents through the real daemon: the loopback provider test server
//! (`kaged_llm::testing`) on a runtime thread of its own, replies written for each driver (text,
//! tool calls with split arguments), `local.toml` / `config.toml [models]` writers, a project with
//! a model agent, and clients for the agent routes (create with a message, send, abort, the
//! conversation route) and the events WebSocket. Shared by the `agents`, CLI and console tests.
//!
//! Typical use:
//! ```ignore
//! let env = ModelEnv::start(COMPLETIONS, ModelEnv::PRIMARY, &[]).await;
//! env.provider.push(text_reply(COMPLETIONS, &["Hel", "lo"]));
//! let id = env.create("hi").await;
//! let mut ws = EventsWs::open(&env.daemon, &id, 0).await;
//! let records = ws.until_turn_ended().await;
//! ```

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
pub use kaged_llm::testing::{Part, ProviderServer, RecordedRequest, Reply};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::{Message, client::IntoClientRequest};

use super::{Daemon, cage_writable};

/// The drivers, as `local.toml` names them.
pub const COMPLETIONS: &str = "openai-completions";
pub const ANTHROPIC: &str = "anthropic-messages";
pub const RESPONSES: &str = "openai-responses";
pub const DRIVERS: [&str; 3] = [COMPLETIONS, ANTHROPIC, RESPONSES];

/// The variable `api_key_env` names, and the key the daemon's environment holds. Tests assert
/// it never shows up anywhere but the provider's auth header.
pub const KEY_ENV: &str = "KAGED_TEST_PROVIDER_KEY";
pub const KEY: &str = "sk-e2e-7f3a9c1d5b2e8f4a6c0d";

/// The system prompt written to `prompts/primary.md` by [`write_model_project`].
pub const SYSTEM_PROMPT: &str = "You are the e2e test agent. Answer briefly.";

/// How long a test waits for one thing before it reports what it saw.
pub const AGENT_PATIENCE: Duration = Duration::from_secs(20);

// ---------------------------------------------------------------------------------------------
// The provider

/// A provider test server on its own runtime thread, so it answers while the test blocks.
pub struct Provider {
    server: Option<ProviderServer>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Provider {
    pub fn start() -> Provider {
        // Built on a plain thread: the caller may be inside a runtime, where `block_on` panics.
        let (runtime, server) = std::thread::spawn(|| {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .unwrap();
            let server = runtime.block_on(ProviderServer::start()).unwrap();
            (runtime, server)
        })
        .join()
        .unwrap();
        Provider {
            server: Some(server),
            runtime: Some(runtime),
        }
    }

    fn server(&self) -> &ProviderServer {
        self.server.as_ref().unwrap()
    }

    /// `http://127.0.0.1:PORT`.
    pub fn base_url(&self) -> String {
        self.server().base_url()
    }

    pub fn port(&self) -> u16 {
        self.base_url().rsplit(':').next().unwrap().parse().unwrap()
    }

    /// Queue the reply to the next request (none queued: a 500).
    pub fn push(&self, reply: Reply) {
        self.server().push(reply);
    }

    /// Queue `crates/kaged-llm/tests/fixtures/DIR/NAME.sse` of `driver` (`text`, `tool_split`,
    /// `parallel`, `error_mid`, `cut`, `rate_limited`, `stall`).
    pub fn push_fixture(&self, driver: &str, name: &str) {
        self.push(fixture(driver, name));
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.server().requests()
    }

    /// Wait until at least `n` requests arrived; all of them.
    pub async fn wait_requests(&self, n: usize) -> Vec<RecordedRequest> {
        let start = Instant::now();
        loop {
            let got = self.requests();
            if got.len() >= n {
                return got;
            }
            assert!(
                start.elapsed() < AGENT_PATIENCE,
                "the provider got {} requests, not {n}: {:?}",
                got.len(),
                got.iter().map(|r| &r.body_text).collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Provider {
    fn drop(&mut self) {
        drop(self.server.take());
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

/// The fixture directory of a driver.
pub fn fixture_dir(driver: &str) -> &'static str {
    match driver {
        ANTHROPIC => "anthropic",
        RESPONSES => "openai-responses",
        _ => "openai-completions",
    }
}

pub fn fixture(driver: &str, name: &str) -> Reply {
    Reply::fixture(&format!("{}/{name}.sse", fixture_dir(driver))).unwrap()
}

/// A tool's name on the wire (`file.read` → `file__read`).
pub fn wire_name(name: &str) -> String {
    name.replace('.', "__")
}

// ---------------------------------------------------------------------------------------------
// Replies written for a test (`provider/replies.rs`)

mod replies;
#[allow(unused_imports)] // the benches, which share this file, use none of them
pub use replies::{Call, Stop, raw_sse, reply, status_reply, text_reply, tool_reply};

// ---------------------------------------------------------------------------------------------
// Configuration and projects

/// `local.toml`, built line by line.
#[derive(Debug, Default, Clone)]
pub struct LocalToml {
    aliases: Vec<(String, Vec<String>)>,
    providers: Vec<String>,
}

impl LocalToml {
    pub fn new() -> LocalToml {
        LocalToml::default()
    }

    /// `NAME = "t"` or, with several targets, a fallback list.
    pub fn alias(mut self, name: &str, targets: &[&str]) -> LocalToml {
        self.aliases
            .push((name.into(), targets.iter().map(|t| t.to_string()).collect()));
        self
    }

    /// `[providers.NAME]` with `driver`, `base_url` and `api_key_env = KEY_ENV`.
    pub fn provider(self, name: &str, driver: &str, base_url: &str) -> LocalToml {
        self.provider_with(name, driver, base_url, "")
    }

    /// [`LocalToml::provider`] with more lines (e.g. prices) in its table.
    pub fn provider_with(
        mut self,
        name: &str,
        driver: &str,
        base_url: &str,
        extra: &str,
    ) -> LocalToml {
        self.providers.push(format!(
            "[providers.{name}]\ndriver = \"{driver}\"\nbase_url = \"{base_url}\"\napi_key_env = \"{KEY_ENV}\"\n{extra}"
        ));
        self
    }

    pub fn render(&self) -> String {
        let mut s = String::from("[aliases]\n");
        for (name, targets) in &self.aliases {
            if targets.len() == 1 {
                s.push_str(&format!("{name} = \"{}\"\n", targets[0]));
            } else {
                let list: Vec<String> = targets.iter().map(|t| format!("\"{t}\"")).collect();
                s.push_str(&format!("{name} = [{}]\n", list.join(", ")));
            }
        }
        for p in &self.providers {
            s.push('\n');
            s.push_str(p);
        }
        s
    }

    /// Write `DIR/local.toml` (with `KAGED_HOME`, DIR is the home).
    pub fn write(&self, config_dir: &Path) {
        std::fs::create_dir_all(config_dir).unwrap();
        std::fs::write(config_dir.join("local.toml"), self.render()).unwrap();
    }
}

/// The usual `local.toml`: alias `fast` → `local:e2e-model`, provider `local` of `driver` at
/// `base_url`.
pub fn local_toml(driver: &str, base_url: &str) -> LocalToml {
    LocalToml::new()
        .alias("fast", &["local:e2e-model"])
        .provider("local", driver, base_url)
}

/// Write `DIR/config.toml` with a `[models]` table of `keys` (e.g. `("stall_timeout_secs", 1)`);
/// before the daemon's first start, so it keeps this file.
pub fn write_models_config(config_dir: &Path, keys: &[(&str, u64)]) {
    std::fs::create_dir_all(config_dir).unwrap();
    let mut s = String::from("[models]\n");
    for (k, v) in keys {
        s.push_str(&format!("{k} = {v}\n"));
    }
    std::fs::write(config_dir.join("config.toml"), s).unwrap();
}

/// Write a project `slug` at `root`: `primary` is a model agent on alias `fast` with the system
/// prompt at `project:/prompts/primary.md` ([`SYSTEM_PROMPT`]); `primary_extra` are more lines
/// of `primary` (indented by two spaces, e.g. `"  max_steps: 2\n"`), `rest` more top-level YAML.
/// The tree is made writable to the cage's user.
pub fn write_model_project(root: &Path, slug: &str, primary_extra: &str, rest: &str) {
    write_model_project_on(root, slug, "fast", primary_extra, rest);
}

/// [`write_model_project`] with `primary` on model alias `alias`.
pub fn write_model_project_on(
    root: &Path,
    slug: &str,
    alias: &str,
    primary_extra: &str,
    rest: &str,
) {
    std::fs::create_dir_all(root.join(".kaged")).unwrap();
    std::fs::create_dir_all(root.join("prompts")).unwrap();
    let yaml = format!(
        "version: 1\nproject: {slug}\nprimary:\n  model: {alias}\n  system_prompt: project:/prompts/primary.md\n{primary_extra}{rest}"
    );
    std::fs::write(root.join(".kaged/project.yaml"), yaml).unwrap();
    std::fs::write(
        root.join("prompts/primary.md"),
        format!("{SYSTEM_PROMPT}\n"),
    )
    .unwrap();
    cage_writable(root);
}

/// `POST /api/v1/projects/load`.
pub async fn load_project_at(d: &Daemon, root: &Path) {
    let (status, body) = d
        .call(
            Method::POST,
            "/api/v1/projects/load",
            Some(json!({ "path": root })),
        )
        .await;
    assert!(
        status.is_success(),
        "load {}: {status} {body}",
        root.display()
    );
}

/// What [`ModelEnv::start_spec`] sets up; `EnvSpec::default()` is the usual setup.
pub struct EnvSpec<'a> {
    pub driver: &'a str,
    /// Project `slug` (default `agents`).
    pub slug: &'a str,
    /// More lines of `primary` and more top-level YAML (see [`write_model_project`]).
    pub primary_extra: &'a str,
    pub rest: &'a str,
    /// `config.toml [models]` keys, or the whole `config.toml` (not both).
    pub models: &'a [(&'a str, u64)],
    pub config: Option<&'a str>,
    /// `local.toml` from the provider's base URL (default: [`local_toml`] of `driver`).
    pub local: Option<fn(&str) -> LocalToml>,
    /// More daemon environment.
    pub env: &'a [(&'a str, &'a str)],
    /// The daemon's panics fail the test.
    pub fail_on_panics: bool,
}

impl Default for EnvSpec<'_> {
    fn default() -> Self {
        EnvSpec {
            driver: COMPLETIONS,
            slug: "agents",
            primary_extra: "",
            rest: "",
            models: &[],
            config: None,
            local: None,
            env: &[],
            fail_on_panics: false,
        }
    }
}

/// A provider, a daemon holding the key, and a loaded project with a model agent: the usual
/// setup. Fields are public to reach past it.
pub struct ModelEnv {
    pub daemon: Daemon,
    pub provider: Provider,
    pub home: PathBuf,
    pub project: PathBuf,
    pub slug: String,
    pub driver: String,
    /// Last: dropped after the daemon.
    pub tmp: tempfile::TempDir,
}

impl ModelEnv {
    /// `primary_extra`: see [`write_model_project`]; `models`: `config.toml [models]` keys
    /// (`max_attempts` 1 and short timeouts keep failure tests fast).
    pub async fn start(driver: &str, primary_extra: &str, models: &[(&str, u64)]) -> ModelEnv {
        Self::start_full(driver, primary_extra, "", models, &[]).await
    }

    /// Everything: more top-level project YAML (`rest`) and more daemon environment.
    pub async fn start_full(
        driver: &str,
        primary_extra: &str,
        rest: &str,
        models: &[(&str, u64)],
        env: &[(&str, &str)],
    ) -> ModelEnv {
        Self::start_spec(EnvSpec {
            driver,
            primary_extra,
            rest,
            models,
            env,
            ..EnvSpec::default()
        })
        .await
    }

    /// The setup `spec` describes (the provider is started first: `spec.local` gets its URL).
    pub async fn start_spec(spec: EnvSpec<'_>) -> ModelEnv {
        let tmp = tempfile::tempdir().unwrap();
        let home = tmp.path().join("home");
        let project = tmp.path().join("proj");
        let provider = Provider::start();
        match spec.local {
            Some(local) => local(&provider.base_url()),
            None => local_toml(spec.driver, &provider.base_url()),
        }
        .write(&home);
        assert!(
            spec.models.is_empty() || spec.config.is_none(),
            "give [models] in `config`"
        );
        if let Some(text) = spec.config {
            std::fs::create_dir_all(&home).unwrap();
            std::fs::write(home.join("config.toml"), text).unwrap();
        } else if !spec.models.is_empty() {
            write_models_config(&home, spec.models);
        }
        write_model_project(&project, spec.slug, spec.primary_extra, spec.rest);
        let mut daemon = start_daemon(&home, spec.env);
        if spec.fail_on_panics {
            daemon = daemon.failing_on_panics();
        }
        load_project_at(&daemon, &project).await;
        ModelEnv {
            daemon,
            provider,
            home,
            project,
            slug: spec.slug.into(),
            driver: spec.driver.into(),
            tmp,
        }
    }

    /// Start a conversation with `primary` and a first message; its id.
    pub async fn create(&self, message: &str) -> String {
        create_agent(&self.daemon, &self.slug, "primary", Some(message)).await
    }
}

/// A daemon on `home` (`KAGED_HOME`) with [`KEY`] in its environment as [`KEY_ENV`].
pub fn start_daemon(home: &Path, env: &[(&str, &str)]) -> Daemon {
    let mut all: Vec<(&str, &str)> = vec![(KEY_ENV, KEY)];
    all.extend_from_slice(env);
    Daemon::start_with(home, &["--bind", "127.0.0.1:0"], &all)
}

// ---------------------------------------------------------------------------------------------
// The agent routes

/// `POST /api/v1/projects/{slug}/sessions` `{"kind":"agent","name":…,"message":…}` → 201; the id.
pub async fn create_agent(d: &Daemon, slug: &str, name: &str, message: Option<&str>) -> String {
    let mut body = json!({"kind": "agent", "name": name});
    if let Some(m) = message {
        body["message"] = json!(m);
    }
    let (status, v) = d
        .call(
            Method::POST,
            &format!("/api/v1/projects/{slug}/sessions"),
            Some(body),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "create agent session: {v}");
    assert_eq!(v["session"]["conversation"], true, "{v}");
    v["session"]["id"].as_str().unwrap().to_string()
}

/// `POST /api/v1/sessions/{id}/messages` → 202; the answer (`queued`, `resumed`).
pub async fn send_message(d: &Daemon, id: &str, text: &str) -> Value {
    let (status, v) = d
        .call(
            Method::POST,
            &format!("/api/v1/sessions/{id}/messages"),
            Some(json!({ "text": text })),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "send message: {v}");
    v
}

/// `POST /api/v1/sessions/{id}/abort` → 202; the answer (`aborted`).
pub async fn abort(d: &Daemon, id: &str) -> Value {
    let (status, v) = d
        .call(Method::POST, &format!("/api/v1/sessions/{id}/abort"), None)
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "abort: {v}");
    v
}

/// `GET /api/v1/sessions/{id}/conversation?after=AFTER&limit=10000`: the records and `last_seq`.
pub async fn conversation(d: &Daemon, id: &str, after: u64) -> (Vec<Value>, u64) {
    let (status, v) = d
        .call(
            Method::GET,
            &format!("/api/v1/sessions/{id}/conversation?after={after}&limit=10000"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "conversation: {v}");
    (
        v["events"].as_array().unwrap().clone(),
        v["last_seq"].as_u64().unwrap(),
    )
}

/// `GET /api/v1/sessions/{id}`'s `session`.
pub async fn session_json(d: &Daemon, id: &str) -> Value {
    let (status, v) = d
        .call(Method::GET, &format!("/api/v1/sessions/{id}"), None)
        .await;
    assert_eq!(status, StatusCode::OK, "session: {v}");
    v["session"].clone()
}

/// Poll the session until its state is one of `states`; the session.
pub async fn wait_state(d: &Daemon, id: &str, states: &[&str]) -> Value {
    let start = Instant::now();
    loop {
        let s = session_json(d, id).await;
        if states.iter().any(|w| s["state"] == *w) {
            return s;
        }
        assert!(
            start.elapsed() < AGENT_PATIENCE,
            "session {id} never reached {states:?}: {s}"
        );
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
}

/// Poll the conversation route until a record satisfies `done`; every record.
pub async fn wait_conversation(d: &Daemon, id: &str, done: impl Fn(&Value) -> bool) -> Vec<Value> {
    let start = Instant::now();
    loop {
        let (records, _) = conversation(d, id, 0).await;
        if records.iter().any(&done) {
            return records;
        }
        assert!(
            start.elapsed() < AGENT_PATIENCE,
            "the conversation of {id} never got there: {}",
            summarize(&records)
        );
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
}

/// The session's pending approvals (`GET /api/v1/approvals?state=pending&session=…`), waited
/// for until there are `n`.
pub async fn wait_pending(d: &Daemon, session: &str, n: usize) -> Vec<Value> {
    wait_pending_within(d, session, n, AGENT_PATIENCE).await
}

/// [`wait_pending`], waiting at most `limit`.
pub async fn wait_pending_within(
    d: &Daemon,
    session: &str,
    n: usize,
    limit: Duration,
) -> Vec<Value> {
    let start = Instant::now();
    loop {
        let path = format!("/api/v1/approvals?state=pending&session={session}");
        let (status, v) = d.call(Method::GET, &path, None).await;
        assert_eq!(status, StatusCode::OK, "GET {path}: {v}");
        let list = v["approvals"].as_array().unwrap().clone();
        if list.len() >= n {
            return list;
        }
        assert!(
            start.elapsed() < limit,
            "no pending approval of {session}: {v}; conversation:\n{}",
            summarize(&conversation(d, session, 0).await.0)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The `cage.egress` decisions of `session` in the audit trail (`detail`: method, host, port,
/// decision).
pub async fn egress_decisions(d: &Daemon, session: &str) -> Vec<Value> {
    let audit = d.api_get("/api/v1/audit?limit=1000").await;
    audit["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "cage.egress" && e["detail"]["session"] == session)
        .map(|e| e["detail"].clone())
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Records

/// A record's event type.
pub fn kind(record: &Value) -> &str {
    record["event"]["type"].as_str().unwrap_or("?")
}

/// The event types, in order.
pub fn kinds(records: &[Value]) -> Vec<&str> {
    records.iter().map(kind).collect()
}

/// The records of type `t`.
pub fn of_kind<'a>(records: &'a [Value], t: &str) -> Vec<&'a Value> {
    records.iter().filter(|r| kind(r) == t).collect()
}

/// A `turn_ended` record (any reason).
pub fn is_turn_ended(record: &Value) -> bool {
    kind(record) == "turn_ended"
}

/// The reasons of the `turn_ended` records, in order.
pub fn turn_end_reasons(records: &[Value]) -> Vec<String> {
    of_kind(records, "turn_ended")
        .iter()
        .map(|r| r["event"]["reason"].as_str().unwrap_or("?").to_string())
        .collect()
}

/// The joined text of the `text_delta` records.
pub fn streamed_text(records: &[Value]) -> String {
    of_kind(records, "text_delta")
        .iter()
        .map(|r| r["event"]["text"].as_str().unwrap_or(""))
        .collect()
}

/// One line per record, for failure messages.
pub fn summarize(records: &[Value]) -> String {
    records
        .iter()
        .map(|r| {
            let mut e = r["event"].clone();
            if let Some(c) = e
                .get_mut("content")
                .filter(|c| c.as_str().is_some_and(|s| s.len() > 200))
            {
                *c = json!(format!("{}…", &c.as_str().unwrap()[..200]));
            }
            format!("{} {}", r["seq"], e)
        })
        .collect::<Vec<_>>()
        .join("\n")
}

// ---------------------------------------------------------------------------------------------
// The events WebSocket

pub type AgentWs =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A client of `GET /api/v1/sessions/{id}/events?after=SEQ`; it checks `seq` goes up by one.
pub struct EventsWs {
    pub ws: AgentWs,
    /// The `seq` of the last record received.
    pub last: u64,
    /// Every record received.
    pub seen: Vec<Value>,
}

impl EventsWs {
    /// Connect with the daemon's nonce (as a local script), from `after`.
    pub async fn open(d: &Daemon, id: &str, after: u64) -> EventsWs {
        let url = format!(
            "{}/api/v1/sessions/{id}/events?after={after}",
            d.base.replacen("http://", "ws://", 1)
        );
        let mut request = url.as_str().into_client_request().unwrap();
        request
            .headers_mut()
            .insert("x-kaged-auth-nonce", d.nonce().parse().unwrap());
        let (ws, _) = tokio_tungstenite::connect_async(request)
            .await
            .unwrap_or_else(|e| panic!("events WebSocket of {id}: {e}"));
        EventsWs {
            ws,
            last: after,
            seen: Vec::new(),
        }
    }

    /// The next record (`None` when the socket closed or broke).
    pub async fn next(&mut self) -> Option<Value> {
        loop {
            let m = tokio::time::timeout(AGENT_PATIENCE, self.ws.next())
                .await
                .unwrap_or_else(|_| {
                    panic!(
                        "no event within {AGENT_PATIENCE:?}; so far:\n{}",
                        summarize(&self.seen)
                    )
                });
            match m {
                Some(Ok(Message::Text(t))) => {
                    let v: Value = serde_json::from_str(&t)
                        .unwrap_or_else(|e| panic!("event frame {t:?}: {e}"));
                    let seq = v["seq"].as_u64().unwrap();
                    assert_eq!(seq, self.last + 1, "a gap or a repeat: {v}");
                    self.last = seq;
                    self.seen.push(v.clone());
                    return Some(v);
                }
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return None,
                Some(Ok(_)) => continue,
            }
        }
    }

    /// Read until a record satisfies `done`; the records read by this call.
    pub async fn until(&mut self, done: impl Fn(&Value) -> bool) -> Vec<Value> {
        let mut got = Vec::new();
        loop {
            let Some(v) = self.next().await else {
                panic!(
                    "the events socket ended before the wait was over; so far:\n{}",
                    summarize(&self.seen)
                );
            };
            let stop = done(&v);
            got.push(v);
            if stop {
                return got;
            }
        }
    }

    /// Read through the next `turn_ended`.
    pub async fn until_turn_ended(&mut self) -> Vec<Value> {
        self.until(is_turn_ended).await
    }
}
