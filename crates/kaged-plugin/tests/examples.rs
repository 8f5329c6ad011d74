//! The example plugins under `examples/plugins/`, run as real processes: their manifests
//! validate, and each is driven over its stdio by a small client speaking the wire protocol
//! through this crate's own types (`Message`, the typed params and results, `storage_request`
//! answering the plugin's storage calls from an in-memory map). Each run goes initialize →
//! initialized → health → tools/call → shutdown, and the process must exit 0 within the
//! manifest's `shutdown_timeout_sec`.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{Receiver, channel};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use kaged_plugin::wire::{
    HealthResult, HealthStatus, InitializeParams, SessionStartParams, ToolCallParams,
    ToolCallResult, code, method,
};
use kaged_plugin::{
    MANIFEST_FILE, Manifest, Message, RpcError, Storage, StorageOp, load_manifest, storage_request,
};
use serde_json::{Value as Json, json};

/// How long the test waits for any one line from a plugin.
const LINE_TIMEOUT: Duration = Duration::from_secs(20);

fn example(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples/plugins")
        .join(name)
}

fn manifest(name: &str) -> Manifest {
    let path = example(name).join(MANIFEST_FILE);
    let text = std::fs::read_to_string(&path).unwrap();
    load_manifest(&text).unwrap_or_else(|e| panic!("{}:\n{e}", path.display()))
}

/// A running plugin and the kaged side of its pipes.
struct Plugin {
    child: Child,
    stdin: ChildStdin,
    lines: Receiver<String>,
    stderr: Arc<Mutex<String>>,
    storage: Storage,
    /// The plugin's storage, as kaged would keep it.
    stored: BTreeMap<String, Json>,
    next_id: i64,
}

impl Plugin {
    fn spawn(program: &Path, args: &[String], dir: &Path, manifest: &Manifest) -> Plugin {
        let mut child = Command::new(program)
            .args(args)
            .current_dir(dir)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", program.display()));
        let stdin = child.stdin.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut stderr_pipe = child.stderr.take().unwrap();
        let (tx, lines) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let sink = stderr.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stderr_pipe.read(&mut buf) {
                if n == 0 {
                    return;
                }
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        Plugin {
            child,
            stdin,
            lines,
            stderr,
            storage: manifest.capabilities.cage().storage,
            stored: BTreeMap::new(),
            next_id: 0,
        }
    }

    fn write(&mut self, message: &Message) {
        writeln!(self.stdin, "{}", message.to_line()).unwrap();
        self.stdin.flush().unwrap();
    }

    fn read(&mut self) -> Message {
        let line = self.lines.recv_timeout(LINE_TIMEOUT).unwrap_or_else(|e| {
            panic!(
                "no line from the plugin ({e}); its stderr:\n{}",
                self.stderr.lock().unwrap()
            )
        });
        Message::parse(line.as_bytes()).unwrap_or_else(|e| {
            panic!("the plugin wrote a line that is not the protocol: {e}: {line}")
        })
    }

    fn notify(&mut self, method: &str, params: impl serde::Serialize) {
        self.write(&Message::notification(method, params));
    }

    /// One call to the plugin, answering its storage requests meanwhile as kaged does.
    fn call(&mut self, method: &str, params: impl serde::Serialize) -> Result<Json, RpcError> {
        self.next_id += 1;
        let id = self.next_id;
        self.write(&Message::request(id, method, params));
        loop {
            match self.read() {
                Message::Response {
                    id: Some(kaged_plugin::Id::Number(n)),
                    outcome,
                } if n == id => return outcome,
                Message::Request { id, method, params } => {
                    let outcome = self.storage(&method, params.as_ref());
                    self.write(&Message::Response {
                        id: Some(id),
                        outcome,
                    });
                }
                other => panic!("unexpected while waiting for the answer to {method}: {other:?}"),
            }
        }
    }

    /// A storage request, decided by `storage_request` and served from the in-memory map.
    fn storage(&mut self, method: &str, params: Option<&Json>) -> Result<Json, RpcError> {
        Ok(match storage_request(method, params, self.storage)? {
            StorageOp::Get { key } => self.stored.get(&key).cloned().unwrap_or(Json::Null),
            StorageOp::Set { key, value } => {
                self.stored.insert(key, value);
                Json::Null
            }
            StorageOp::Delete { key } => {
                self.stored.remove(&key);
                Json::Null
            }
            StorageOp::List { prefix } => json!(
                self.stored
                    .keys()
                    .filter(|k| k.starts_with(&prefix))
                    .collect::<Vec<_>>()
            ),
        })
    }

    fn tool(&mut self, name: &str, arguments: Json) -> Result<ToolCallResult, RpcError> {
        let params = ToolCallParams {
            name: name.into(),
            arguments,
            context: Default::default(),
        };
        self.call(method::TOOLS_CALL, params)
            .map(|v| serde_json::from_value(v).unwrap())
    }

    fn initialize(&mut self) {
        let params = InitializeParams {
            kaged_api: kaged_plugin::SUPPORTED_API,
            config: json!({}),
            system_config: json!({}),
        };
        let answer = self.call(method::INITIALIZE, params).unwrap();
        assert!(answer.is_object(), "{answer}");
        self.notify(method::INITIALIZED, json!({}));
        let health: HealthResult =
            serde_json::from_value(self.call(method::HEALTH, json!({})).unwrap()).unwrap();
        assert_eq!(health.status, HealthStatus::Ok);
    }

    /// `shutdown`, answered, then the process exits 0 within `shutdown_timeout_sec`.
    fn shut_down(mut self, manifest: &Manifest) -> String {
        self.call(method::SHUTDOWN, json!({})).unwrap();
        let deadline = Instant::now() + Duration::from_secs(manifest.shutdown_timeout_sec);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert!(status.success(), "the plugin exited with {status}");
                break;
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                panic!(
                    "the plugin did not exit within {} s of shutdown",
                    manifest.shutdown_timeout_sec
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // The stderr thread ends with the pipe.
        std::thread::sleep(Duration::from_millis(50));
        self.stderr.lock().unwrap().clone()
    }
}

fn error_code(outcome: Result<impl std::fmt::Debug, RpcError>) -> i64 {
    outcome.expect_err("an error answer").code
}

#[test]
fn both_example_manifests_validate() {
    let notes = manifest("python-notes");
    assert_eq!(notes.name, "notes");
    assert_eq!(
        notes.capabilities.cage().storage,
        Storage {
            read: true,
            write: true
        }
    );
    let tools: Vec<String> = notes
        .tools
        .iter()
        .map(|t| notes.agent_tool_name(t))
        .collect();
    assert_eq!(tools, ["notes.add", "notes.list"]);
    assert_eq!(notes.hooks, [kaged_plugin::Hook::OnSessionStart]);

    let hello = manifest("rust-hello");
    assert_eq!(hello.name, "hello");
    assert!(hello.capabilities.list().is_empty());
    assert_eq!(hello.tools[0].name, "greet");
    assert_eq!(hello.command, ["./rust-hello"]);
}

#[test]
fn the_python_plugin_keeps_notes_in_kaged_storage() {
    let manifest = manifest("python-notes");
    let dir = example("python-notes");
    let (program, args) = manifest.command.split_first().unwrap();
    let mut plugin = Plugin::spawn(Path::new(program), args, &dir, &manifest);

    // Nothing is served before `initialize`.
    assert_eq!(
        error_code(plugin.call(method::HEALTH, json!({}))),
        code::NOT_INITIALIZED
    );
    plugin.initialize();
    plugin.notify(
        method::HOOK_ON_SESSION_START,
        SessionStartParams {
            session_id: "ses_1".into(),
            project: "demo".into(),
            agent: "primary".into(),
        },
    );

    assert_eq!(
        plugin.tool("list", json!({})).unwrap().content,
        "no notes yet"
    );
    let added = plugin.tool("add", json!({"text": "buy milk"})).unwrap();
    assert!(!added.is_error);
    plugin.tool("add", json!({"text": "call Ada"})).unwrap();
    // Stored through `storage/set`, under the plugin's own keys.
    let values: Vec<&Json> = plugin.stored.values().collect();
    assert_eq!(
        values,
        [&json!({"text": "buy milk"}), &json!({"text": "call Ada"})]
    );
    assert!(plugin.stored.keys().all(|k| k.starts_with("note/")));
    // And read back through `storage/list` and `storage/get`.
    assert_eq!(
        plugin.tool("list", json!({})).unwrap().content,
        "- buy milk\n- call Ada"
    );

    assert_eq!(
        error_code(plugin.tool("delete", json!({}))),
        code::UNKNOWN_TOOL
    );
    assert_eq!(
        error_code(plugin.tool("add", json!({"text": 3}))),
        code::INVALID_PARAMS
    );
    assert_eq!(
        error_code(plugin.call("notes/other", json!({}))),
        code::METHOD_NOT_FOUND
    );

    let stderr = plugin.shut_down(&manifest);
    assert!(
        stderr.contains("session ses_1 started: agent primary in project demo"),
        "{stderr}"
    );
}

#[test]
fn the_python_plugin_refuses_another_api_version() {
    let manifest = manifest("python-notes");
    let (program, args) = manifest.command.split_first().unwrap();
    let mut plugin = Plugin::spawn(
        Path::new(program),
        args,
        &example("python-notes"),
        &manifest,
    );
    let outcome = plugin.call(
        method::INITIALIZE,
        json!({"kaged_api": 2, "config": {}, "system_config": {}}),
    );
    assert_eq!(error_code(outcome), code::UNSUPPORTED_API);
    plugin.shut_down(&manifest);
}

/// Builds `examples/plugins/rust-hello` (once per process; a no-op when up to date) into
/// `<this test's target dir>/plugin-examples`, from the lock file.
fn rust_hello() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let exe = std::env::current_exe().unwrap();
            // <target>/<profile>/deps/examples-HASH
            let target = exe.ancestors().nth(3).unwrap().join("plugin-examples");
            let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
            let out = Command::new(cargo)
                .arg("build")
                .arg("--manifest-path")
                .arg(example("rust-hello").join("Cargo.toml"))
                .args(["--locked", "--quiet", "--target-dir"])
                .arg(&target)
                .env_remove("CARGO_TARGET_DIR")
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "building rust-hello failed:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
            target.join("debug/rust-hello")
        })
        .clone()
}

#[test]
fn the_rust_plugin_greets() {
    let manifest = manifest("rust-hello");
    let mut plugin = Plugin::spawn(&rust_hello(), &[], &example("rust-hello"), &manifest);
    assert_eq!(
        error_code(plugin.tool("greet", json!({"name": "Ada"}))),
        code::NOT_INITIALIZED
    );
    plugin.initialize();
    let greeting = plugin.tool("greet", json!({"name": "Ada"})).unwrap();
    assert_eq!(
        greeting,
        ToolCallResult {
            content: "Hello, Ada!".into(),
            is_error: false
        }
    );
    assert_eq!(
        error_code(plugin.tool("greet", json!({}))),
        code::INVALID_PARAMS
    );
    assert_eq!(
        error_code(plugin.tool("wave", json!({}))),
        code::UNKNOWN_TOOL
    );
    assert_eq!(
        error_code(plugin.call("hello/other", json!({}))),
        code::METHOD_NOT_FOUND
    );
    let stderr = plugin.shut_down(&manifest);
    assert!(stderr.contains("hello: stopped"), "{stderr}");
}

#[test]
fn the_rust_plugin_refuses_another_api_version() {
    let manifest = manifest("rust-hello");
    let mut plugin = Plugin::spawn(&rust_hello(), &[], &example("rust-hello"), &manifest);
    let outcome = plugin.call(
        method::INITIALIZE,
        json!({"kaged_api": 2, "config": {}, "system_config": {}}),
    );
    assert_eq!(error_code(outcome), code::UNSUPPORTED_API);
    plugin.shut_down(&manifest);
}
