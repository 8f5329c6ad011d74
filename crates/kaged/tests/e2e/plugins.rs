//! Plugins (issue 18) through the real daemon: real plugin processes in real cages, a
//! well-behaved one stopped and started by the operator, hostile ones each ending in a clear
//! state and reason while the daemon keeps serving, and one that tries what it did not
//! declare (the same probe with the capabilities declared reaches both, so it would tell).
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

use std::path::Path;
use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::common::provider::*;
use crate::common::*;

/// A plugin whose behaviour is its first argument: `good`, `crash_at_start`, `silent` (never
/// answers initialize), `flood` (2 MiB without a newline), `garbage` (a line not JSON),
/// `wrong_id`, `crash_on_health`, `probe PATH PORT` (reads PATH and connects to PORT at
/// initialize; answers with an error naming what it reached, if anything), `hooks DIR`
/// (appends each hook notification to `DIR/hooks.jsonl`), `settings DIR` (writes the
/// `system_config` it was given at initialize to `DIR/settings.json`).
const PLUGIN: &str = r#"
import json, os, socket, sys, time
mode = sys.argv[1]
def send(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()
if mode == "crash_at_start":
    sys.exit(3)
if mode == "flood":
    sys.stdout.write("x" * (2 * 1024 * 1024))
    sys.stdout.flush()
    time.sleep(60)
if mode == "garbage":
    sys.stdout.write("this is not json\n")
    sys.stdout.flush()
    time.sleep(60)
def probe():
    reached = []
    try:
        with open(sys.argv[2]) as f:
            reached.append("REACHED read " + f.read().strip())
    except OSError as e:
        print("read refused:", e, file=sys.stderr)
    try:
        s = socket.create_connection(("127.0.0.1", int(sys.argv[3])), timeout=2)
        s.close()
        reached.append("REACHED net")
    except OSError as e:
        print("connect refused:", e, file=sys.stderr)
    return reached
for line in sys.stdin:
    msg = json.loads(line)
    method, id = msg.get("method"), msg.get("id")
    if method == "initialize":
        if mode == "silent":
            continue
        if mode == "wrong_id":
            send({"jsonrpc": "2.0", "id": 999, "result": {}})
            continue
        if mode == "settings":
            with open(os.path.join(sys.argv[2], "settings.json"), "w") as f:
                json.dump(msg["params"]["system_config"], f)
        if mode == "probe":
            reached = probe()
            if reached:
                send({"jsonrpc": "2.0", "id": id, "error": {"code": -32603, "message": "; ".join(reached)}})
                continue
        send({"jsonrpc": "2.0", "id": id, "result": {}})
    elif method == "health":
        if mode == "crash_on_health":
            os._exit(5)
        send({"jsonrpc": "2.0", "id": id, "result": {"status": "ok"}})
    elif method and method.startswith("hooks/") and mode == "hooks":
        with open(os.path.join(sys.argv[2], "hooks.jsonl"), "a") as f:
            f.write(json.dumps(msg) + "\n")
    elif method == "shutdown":
        send({"jsonrpc": "2.0", "id": id, "result": {}})
        sys.exit(0)
"#;

/// Install plugin `name` in `dir` running `PLUGIN` with `args`, declaring `capabilities`.
pub(crate) fn install(dir: &Path, name: &str, args: &[&str], capabilities: &[&str]) {
    let root = dir.join(name);
    std::fs::create_dir_all(&root).unwrap();
    std::fs::write(root.join("plugin.py"), PLUGIN).unwrap();
    let command: Vec<String> = ["python3", "plugin.py"]
        .iter()
        .chain(args)
        .map(|a| format!("{a:?}"))
        .collect();
    let capabilities: Vec<String> = capabilities.iter().map(|c| format!("{c:?}")).collect();
    std::fs::write(
        root.join("kaged-plugin.yaml"),
        format!(
            "name: {name}\nversion: 0.1.0\nkaged_api: 1\ndescription: a test plugin\ncommand: [{}]\ncapabilities: [{}]\nhealth_interval_sec: 5\nshutdown_timeout_sec: 2\n",
            command.join(", "),
            capabilities.join(", ")
        ),
    )
    .unwrap();
}

/// Install a plugin `name` in `dir` whose manifest does not validate (a version that is not
/// one, an API kaged does not speak, no command).
pub(crate) fn install_invalid(dir: &Path, name: &str) {
    std::fs::create_dir_all(dir.join(name)).unwrap();
    std::fs::write(
        dir.join(name).join("kaged-plugin.yaml"),
        format!("name: {name}\nversion: one\nkaged_api: 2\n"),
    )
    .unwrap();
}

pub(crate) fn plugin<'a>(list: &'a Value, name: &str) -> &'a Value {
    list["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == name)
        .unwrap_or_else(|| panic!("no plugin {name}: {list}"))
}

/// Poll `GET /api/v1/plugins` until `done` holds for plugin `name`; the plugin's report.
pub(crate) async fn wait_plugin(
    d: &Daemon,
    name: &str,
    what: &str,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let start = Instant::now();
    loop {
        let list = d.api_get("/api/v1/plugins").await;
        let p = plugin(&list, name).clone();
        if done(&p) {
            return p;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "{name}: {what}: {p}\n{}",
            d.stderr_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn alive(pid: &Value) -> bool {
    pid.as_u64()
        .is_some_and(|p| Path::new(&format!("/proc/{p}")).exists())
}

pub(crate) fn start_with_plugins(
    home: &Path,
    dir: &Path,
    enabled: &str,
    extra: &[(&str, &str)],
) -> Daemon {
    let mut env = vec![
        ("KAGED_PLUGINS_DIR", dir.to_str().unwrap()),
        ("KAGED_PLUGINS_ENABLED", enabled),
    ];
    env.extend_from_slice(extra);
    Daemon::start_with(home, &["--bind", "127.0.0.1:0"], &env).failing_on_panics()
}

#[tokio::test]
async fn a_well_behaved_plugin_runs_caged_and_the_operator_stops_and_starts_it() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("plugins");
    install(&dir, "good", &["good"], &[]);
    install(&dir, "idle", &["good"], &[]);
    let d = start_with_plugins(&tmp.path().join("home"), &dir, "good", &[]);
    let p = wait_plugin(&d, "good", "running", |p| p["state"] == "running").await;
    assert_eq!(p["version"], "0.1.0", "{p}");
    assert!(alive(&p["pid"]), "{p}");
    // Not enabled: installed, never started.
    let idle = plugin(&d.api_get("/api/v1/plugins").await, "idle").clone();
    assert_eq!(
        (idle["state"].as_str(), idle["enabled"].as_bool()),
        (Some("stopped"), Some(false)),
        "{idle}"
    );
    // Its health is asked every 5 s and answered: still running, no restart.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let p = wait_plugin(&d, "good", "still running", |p| p["state"] == "running").await;
    assert_eq!(p["restarts"], 0, "{p}");

    let mut events = crate::approvals::OperatorWs::open(&d).await;
    let (status, body) = d
        .call(Method::POST, "/api/v1/plugins/good/disable", None)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // The operator's event stream says so as it happens.
    let event = events
        .until(|e| e["type"] == "plugin.state" && e["plugin"] == "good" && e["state"] == "stopped")
        .await;
    assert_eq!(event["reason"], "disabled by the operator", "{event}");
    assert!(event["pid"].is_null(), "{event}");
    // The answer is the state the disable led to: the plugin has already ended.
    let stopped = &body["plugin"];
    assert_eq!(
        (stopped["state"].as_str(), stopped["enabled"].as_bool()),
        (Some("stopped"), Some(false)),
        "{body}"
    );
    assert_eq!(stopped["reason"], "disabled by the operator", "{stopped}");
    assert!(stopped["pid"].is_null(), "{stopped}");
    assert!(!alive(&p["pid"]), "the process ended: {p}");
    let (status, body) = d
        .call(Method::POST, "/api/v1/plugins/nosuch/enable", None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(body["error"]["code"], "not_found", "{body}");

    // The choice outlives the daemon.
    let (status, log) = d.stop();
    assert!(status.success(), "{log}");
    let d = start_with_plugins(&tmp.path().join("home"), &dir, "good", &[]);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let p = plugin(&d.api_get("/api/v1/plugins").await, "good").clone();
    assert_eq!(p["state"], "stopped", "disabled stays disabled: {p}");
    let (status, body) = d
        .call(Method::POST, "/api/v1/plugins/good/enable", None)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let started = &body["plugin"];
    assert!(
        started["enabled"] == true
            && (started["state"] == "starting" || started["state"] == "running"),
        "{body}"
    );
    let p = wait_plugin(&d, "good", "running again", |p| p["state"] == "running").await;
    let pid = p["pid"].clone();
    // A daemon stop asks it to shut down; it exits.
    let (status, log) = d.stop();
    assert!(status.success(), "{log}");
    assert!(!alive(&pid), "{pid}");
    let kinds: Vec<String> = std::fs::read_to_string(tmp.path().join("home/audit.log"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|e| e["kind"].as_str().map(str::to_string))
        .collect();
    for kind in ["plugin.started", "plugin.disabled", "plugin.enabled"] {
        assert!(kinds.iter().any(|k| k == kind), "{kind} in {kinds:?}");
    }
}

#[tokio::test]
async fn hostile_plugins_end_in_a_clear_state_and_the_daemon_keeps_serving() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("plugins");
    let cases = [
        ("crashes", "crash_at_start", "exited: exit code 3"),
        ("silent", "silent", "no answer to `initialize`"),
        ("floods", "flood", "longer than 1048576 bytes"),
        ("garbage", "garbage", "not JSON"),
        ("wrongid", "wrong_id", "the answer has id 999"),
    ];
    for (name, mode, _) in cases {
        install(&dir, name, &[mode], &[]);
    }
    install(&dir, "dies", &["crash_on_health"], &[]);
    install_invalid(&dir, "badmanifest");
    let names: Vec<&str> = cases.iter().map(|(n, _, _)| *n).collect();
    let enabled = format!("{},dies,badmanifest", names.join(","));
    let d = start_with_plugins(
        &tmp.path().join("home"),
        &dir,
        &enabled,
        &[
            ("KAGED_TEST_PLUGIN_BACKOFF_MS", "100"),
            ("KAGED_TEST_PLUGIN_INIT_TIMEOUT_MS", "1500"),
        ],
    );
    for (name, _, why) in cases {
        let p = wait_plugin(&d, name, "disabled", |p| p["state"] == "disabled").await;
        let reason = p["reason"].as_str().unwrap_or_default();
        assert!(
            reason.starts_with("disabled after 5 failures") && reason.contains(why),
            "{name}: {p}"
        );
        assert!(
            p["last_error"].as_str().unwrap().contains(why),
            "{name}: {p}"
        );
        assert!(p["pid"].is_null(), "{name}: {p}");
        // The daemon answers while they fail.
        let (status, _) = d.call(Method::GET, "/api/v1/status", None).await;
        assert_eq!(status, StatusCode::OK);
    }
    // Crashing at its first health call (after 5 s): restarted with backoff.
    let p = wait_plugin(&d, "dies", "restarted", |p| {
        p["restarts"].as_u64() >= Some(1)
    })
    .await;
    assert!(
        p["last_error"]
            .as_str()
            .unwrap_or_default()
            .contains("exited: exit code 5"),
        "{p}"
    );
    let bad = plugin(&d.api_get("/api/v1/plugins").await, "badmanifest").clone();
    assert_eq!(bad["state"], "invalid", "{bad}");
    let reason = bad["reason"].as_str().unwrap();
    assert!(reason.contains("kaged-plugin.yaml:"), "{bad}");
    let (status, body) = d
        .call(Method::POST, "/api/v1/plugins/badmanifest/enable", None)
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    let r = reqwest::get(format!("{}/readyz", d.base)).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let status = d.api_get("/api/v1/status").await;
    assert_eq!(status["plugins"]["states"]["disabled"], 5, "{status}");
    // The audit trail says each failure and why each was disabled.
    let audit: Vec<Value> = std::fs::read_to_string(tmp.path().join("home/audit.log"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    for (name, _, why) in cases {
        let of = |kind: &str| {
            audit
                .iter()
                .filter(|e| e["kind"] == kind && e["detail"]["plugin"] == name)
                .count()
        };
        assert!(of("plugin.failed") >= 5, "{name}: {audit:?}");
        let disabled = audit
            .iter()
            .find(|e| e["kind"] == "plugin.disabled" && e["detail"]["plugin"] == name)
            .unwrap_or_else(|| panic!("{name} disabled in {audit:?}"));
        assert_eq!(disabled["outcome"], "failure", "{disabled}");
        assert!(
            disabled["detail"]["reason"]
                .as_str()
                .unwrap_or_default()
                .contains(why),
            "{disabled}"
        );
    }
}

#[tokio::test]
async fn a_plugin_reads_and_connects_only_where_it_declared() {
    let tmp = tempfile::tempdir().unwrap();
    let secret_dir = tmp.path().join("secret");
    std::fs::create_dir_all(&secret_dir).unwrap();
    let secret = secret_dir.join("token.txt");
    std::fs::write(&secret, "s3cret-on-the-host\n").unwrap();
    cage_writable(&secret_dir);
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port().to_string();
    let dir = tmp.path().join("plugins");
    let args = ["probe", secret.to_str().unwrap(), &port];
    install(&dir, "undeclared", &args, &[]);
    let read = format!("read:fs:{}", secret_dir.display());
    install(&dir, "declared", &args, &[&read, "net:*"]);
    let d = start_with_plugins(
        &tmp.path().join("home"),
        &dir,
        "undeclared,declared",
        &[("KAGED_TEST_PLUGIN_BACKOFF_MS", "100")],
    );
    // Nothing reached: it answered initialize and runs.
    let p = wait_plugin(&d, "undeclared", "running", |p| p["state"] == "running").await;
    assert!(p["last_error"].is_null(), "{p}");
    // The control: declared, the same probe reaches both (and says so, failing its start).
    let p = wait_plugin(&d, "declared", "a failure", |p| !p["last_error"].is_null()).await;
    let why = p["last_error"].as_str().unwrap();
    assert!(
        why.contains("REACHED read s3cret-on-the-host") && why.contains("REACHED net"),
        "{p}"
    );
    let list = d.api_get("/api/v1/plugins").await;
    let caps = &plugin(&list, "declared")["capabilities"];
    assert_eq!(caps[0], read.as_str(), "{caps}");
    drop(listener);
}

/// A plugin that declared both hooks hears an agent's session start and its agent wait after
/// its turn; one that declared none hears nothing.
#[tokio::test]
async fn plugins_hear_the_hooks_they_declared() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let deaf = tmp.path().join("deaf");
    for d in [&out, &deaf] {
        std::fs::create_dir_all(d).unwrap();
        cage_writable(d);
    }
    let dir = tmp.path().join("plugins");
    let write = format!("write:fs:{}", out.display());
    install(
        &dir,
        "listener",
        &["hooks", out.to_str().unwrap()],
        &[&write],
    );
    let manifest = dir.join("listener/kaged-plugin.yaml");
    let text = std::fs::read_to_string(&manifest).unwrap();
    std::fs::write(
        &manifest,
        format!("{text}hooks: [on_session_start, on_session_idle]\n"),
    )
    .unwrap();
    let write = format!("write:fs:{}", deaf.display());
    install(&dir, "deaf", &["hooks", deaf.to_str().unwrap()], &[&write]);
    // An ACP agent that answers one prompt.
    let root = tmp.path().join("proj");
    std::fs::create_dir_all(root.join(".kaged")).unwrap();
    std::fs::copy(
        crate::common::acp_testing::acp_testing().scripted,
        root.join("kaged-acp-scripted"),
    )
    .unwrap();
    std::fs::write(
        root.join("script.json"),
        r#"{"prompts": [[{"say": "Hello."}]]}"#,
    )
    .unwrap();
    std::fs::write(
        root.join(".kaged/project.yaml"),
        "version: 1\nproject: hooked\nprimary:\n  command: [./kaged-acp-scripted, script.json]\n  protocol: acp\n",
    )
    .unwrap();
    cage_writable(&root);
    let d = start_with_plugins(&tmp.path().join("home"), &dir, "listener,deaf", &[]);
    for name in ["listener", "deaf"] {
        wait_plugin(&d, name, "running", |p| p["state"] == "running").await;
    }
    crate::common::provider::load_project_at(&d, &root).await;
    let id = crate::common::provider::create_agent(&d, "hooked", "primary", Some("Hi.")).await;
    let start = Instant::now();
    let heard = loop {
        let text = std::fs::read_to_string(out.join("hooks.jsonl")).unwrap_or_default();
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        if lines.len() >= 2 {
            break lines;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "{text}\n{}",
            d.stderr_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(heard[0]["method"], "hooks/on_session_start", "{heard:?}");
    assert_eq!(heard[0]["params"]["session_id"], id.as_str());
    assert_eq!(heard[0]["params"]["project"], "hooked");
    assert_eq!(heard[0]["params"]["agent"], "primary");
    assert_eq!(heard[1]["method"], "hooks/on_session_idle", "{heard:?}");
    assert_eq!(heard[1]["params"]["session_id"], id.as_str());
    assert!(
        !deaf.join("hooks.jsonl").exists(),
        "no hook it did not declare"
    );
}

/// A plugin offering two tools: `add` keeps a note in kaged's storage (`storage/set`, then
/// `storage/list`) and says how many it has; `hang` never answers.
const NOTES: &str = r#"
import json, os, sys
def send(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()
def ask(id, method, params):
    send({"jsonrpc": "2.0", "id": id, "method": method, "params": params})
    while True:
        msg = json.loads(sys.stdin.readline())
        if msg.get("id") == id and "method" not in msg:
            if "error" in msg:
                raise RuntimeError(msg["error"]["message"])
            return msg.get("result")
n = 0
for line in sys.stdin:
    msg = json.loads(line)
    method, id = msg.get("method"), msg.get("id")
    if method == "initialize":
        send({"jsonrpc": "2.0", "id": id, "result": {}})
    elif method == "health":
        send({"jsonrpc": "2.0", "id": id, "result": {"status": "ok"}})
    elif method == "tools/call":
        if msg["params"]["name"] == "hang":
            continue
        if msg["params"]["name"] == "boom":
            os._exit(7)
        if msg["params"]["name"] == "whoami":
            send({"jsonrpc": "2.0", "id": id, "result": {"content": json.dumps(msg["params"]["context"], sort_keys=True)}})
            continue
        n += 1
        text = msg["params"]["arguments"]["text"]
        ask("set%d" % n, "storage/set", {"key": "note/" + text, "value": text})
        keys = ask("list%d" % n, "storage/list", {"prefix": "note/"})
        send({"jsonrpc": "2.0", "id": id, "result": {"content": "stored %d notes" % len(keys), "is_error": False}})
    elif method == "shutdown":
        send({"jsonrpc": "2.0", "id": id, "result": {}})
        sys.exit(0)
"#;

/// A model agent with `plugins: [notes]` gets the plugin's tools as `notes.add` and
/// `notes.hang`; a call runs in the plugin (which keeps its note in kaged's storage); a call
/// the plugin never answers ends in an error for the model after the timeout, and the plugin
/// is restarted with its notes kept; a plugin tool without a `tools:` setting asks the operator.
#[tokio::test]
async fn a_model_agent_calls_a_plugins_tools_and_the_plugin_keeps_notes_in_kaged() {
    let plugins = tempfile::tempdir().unwrap();
    let root = plugins.path().join("notes");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::write(root.join("plugin.py"), NOTES).unwrap();
    std::fs::write(
        root.join("kaged-plugin.yaml"),
        "name: notes\nversion: 1.0.0\nkaged_api: 1\ndescription: keeps notes\ncommand: [python3, plugin.py]\ncapabilities: [\"kaged:storage:read\", \"kaged:storage:write\"]\ntools:\n  - name: add\n    description: Keep a note.\n    input_schema: {type: object, properties: {text: {type: string}}, required: [text]}\n  - name: hang\n    description: Never answers.\n    input_schema: {type: object}\n  - name: asks\n    description: Needs the operator.\n    input_schema: {type: object}\n  - name: whoami\n    description: Says who calls.\n    input_schema: {type: object}\nconfig_schema: {type: object, properties: {max_notes: {type: integer}}, additionalProperties: false}\n",
    )
    .unwrap();
    cage_writable(&root);
    let dir = plugins.path().to_str().unwrap().to_string();
    let env = ModelEnv::start_full(
        COMPLETIONS,
        "  plugins: [notes]\n  plugin_config:\n    notes: { max_notes: 5 }\n  tools:\n    notes.add: { approval: allow }\n    notes.hang: { approval: allow }\n    notes.whoami: { approval: allow }\n",
        "",
        &[],
        &[
            ("KAGED_PLUGINS_DIR", &dir),
            ("KAGED_PLUGINS_ENABLED", "notes"),
            ("KAGED_TEST_PLUGIN_CALL_TIMEOUT_MS", "1500"),
            ("KAGED_TEST_PLUGIN_BACKOFF_MS", "100"),
        ],
    )
    .await;
    let d = &env.daemon;
    let p = &env.provider;
    wait_plugin(d, "notes", "running", |p| p["state"] == "running").await;
    p.push(tool_reply(
        COMPLETIONS,
        &[
            Call::new("c_add", "notes.add", &serde_json::json!({"text": "milk"})),
            Call::new("c_who", "notes.whoami", &serde_json::json!({})),
        ],
    ));
    p.push(text_reply(COMPLETIONS, &["Noted."]));
    let id = create_agent(d, &env.slug, "primary", Some("Remember milk.")).await;
    let records = wait_conversation(d, &id, is_turn_ended).await;
    let result = records
        .iter()
        .find(|r| kind(r) == "tool_result" && r["event"]["call_id"] == "c_add")
        .unwrap_or_else(|| panic!("{}", summarize(&records)));
    assert_eq!(result["event"]["ok"], true, "{result}");
    assert_eq!(result["event"]["content"], "stored 1 notes", "{result}");
    // Each call says who calls, with the agent's committed settings for the plugin.
    let who = records
        .iter()
        .find(|r| kind(r) == "tool_result" && r["event"]["call_id"] == "c_who")
        .unwrap_or_else(|| panic!("{}", summarize(&records)));
    let context: Value = serde_json::from_str(who["event"]["content"].as_str().unwrap()).unwrap();
    assert_eq!(
        context,
        serde_json::json!({"agent": "primary", "config": {"max_notes": 5}, "project": env.slug, "session_id": id}),
        "{who}"
    );
    // The tools reached the model as the plugin declared them.
    let offered = p.requests()[0].body["tools"].to_string();
    assert!(
        offered.contains("notes__add") && offered.contains("Keep a note."),
        "{offered}"
    );

    // A call it never answers: an error for the model, and the plugin restarted; the next
    // call reaches the restarted plugin, and the notes are still kaged's.
    p.push(tool_reply(
        COMPLETIONS,
        &[Call::new("c_hang", "notes.hang", &serde_json::json!({}))],
    ));
    p.push(tool_reply(
        COMPLETIONS,
        &[Call::new(
            "c_add2",
            "notes.add",
            &serde_json::json!({"text": "eggs"}),
        )],
    ));
    p.push(tool_reply(
        COMPLETIONS,
        &[Call::new("c_asks", "notes.asks", &serde_json::json!({}))],
    ));
    p.push(text_reply(COMPLETIONS, &["Done."]));
    send_message(d, &id, "Try the others.").await;
    let hung = wait_conversation(d, &id, |r| {
        kind(r) == "tool_result" && r["event"]["call_id"] == "c_hang"
    })
    .await;
    let hung = hung
        .iter()
        .find(|r| kind(r) == "tool_result" && r["event"]["call_id"] == "c_hang")
        .unwrap();
    assert_eq!(hung["event"]["ok"], false, "{hung}");
    assert!(
        hung["event"]["content"]
            .as_str()
            .unwrap()
            .contains("did not answer within 1.5 s"),
        "{hung}"
    );
    let records = wait_conversation(d, &id, |r| {
        kind(r) == "tool_result" && r["event"]["call_id"] == "c_add2"
    })
    .await;
    let second = records
        .iter()
        .find(|r| kind(r) == "tool_result" && r["event"]["call_id"] == "c_add2")
        .unwrap();
    assert_eq!(second["event"]["content"], "stored 2 notes", "{second}");
    let plugin_now = wait_plugin(d, "notes", "restarted", |p| {
        p["restarts"].as_u64() >= Some(1)
    })
    .await;
    assert!(
        plugin_now["last_error"]
            .as_str()
            .unwrap_or_default()
            .contains("no answer to `tools/call`"),
        "{plugin_now}"
    );
    // No `tools:` setting for `notes.asks`: the operator is asked.
    let pending = wait_pending(d, &id, 1).await;
    assert_eq!(pending[0]["tool"], "notes.asks", "{pending:?}");
}

/// The operator's `local.toml [plugins."NAME"]` reaches the plugin that declared a
/// `system_config_schema` and matches it; settings that do not match, or that a plugin never
/// asked for, keep it from starting with a reason naming the file, line and setting, never
/// the value (they are secrets).
#[tokio::test]
async fn operator_settings_reach_only_plugins_whose_schema_they_match() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    cage_writable(&out);
    let dir = tmp.path().join("plugins");
    let write = format!("write:fs:{}", out.display());
    let schema = "system_config_schema:\n  type: object\n  properties:\n    token: {type: string, minLength: 8}\n    port: {type: integer}\n  required: [token]\n  additionalProperties: false\n";
    for name in ["keyed", "mistyped"] {
        install(&dir, name, &["settings", out.to_str().unwrap()], &[&write]);
        let manifest = dir.join(name).join("kaged-plugin.yaml");
        let text = std::fs::read_to_string(&manifest).unwrap();
        std::fs::write(&manifest, format!("{text}{schema}")).unwrap();
    }
    install(&dir, "unasked", &["good"], &[]);
    let config = tmp.path().join("config");
    std::fs::create_dir_all(&config).unwrap();
    std::fs::write(
        config.join("local.toml"),
        "[plugins.keyed]\ntoken = \"s3cret-token-1\"\nport = 8080\n\n[plugins.mistyped]\ntoken = \"s3cret-token-2\"\nport = \"s3cret-port\"\n\n[plugins.unasked]\ntoken = \"s3cret-token-3\"\n",
    )
    .unwrap();
    let d = start_with_plugins(
        &tmp.path().join("home"),
        &dir,
        "keyed,mistyped,unasked",
        &[("KAGED_CONFIG_DIR", config.to_str().unwrap())],
    );
    wait_plugin(&d, "keyed", "running", |p| p["state"] == "running").await;
    let given: Value =
        serde_json::from_slice(&std::fs::read(out.join("settings.json")).unwrap()).unwrap();
    assert_eq!(
        given,
        serde_json::json!({"token": "s3cret-token-1", "port": 8080})
    );

    let list = d.api_get("/api/v1/plugins").await;
    let mistyped = plugin(&list, "mistyped");
    assert_eq!(mistyped["state"], "invalid", "{mistyped}");
    let reason = mistyped["reason"].as_str().unwrap();
    let local = config.join("local.toml");
    assert!(
        reason.starts_with(&format!("{}:5: plugins.mistyped: ", local.display()))
            && reason.contains("at /port: the value is not of type \"integer\""),
        "{reason}"
    );
    let unasked = plugin(&list, "unasked");
    assert_eq!(unasked["state"], "invalid", "{unasked}");
    assert!(
        unasked["reason"]
            .as_str()
            .unwrap()
            .contains(":9: plugins.unasked: the plugin declares no system_config_schema"),
        "{unasked}"
    );
    // Enabling it again is refused with the same reason.
    let (status, body) = d
        .call(Method::POST, "/api/v1/plugins/mistyped/enable", None)
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    // The values are the plugin's alone: not in any answer, nor in the daemon's log.
    let local_view = d.api_get("/api/v1/local").await.to_string();
    assert!(
        local_view.contains("\"token\""),
        "the keys are shown: {local_view}"
    );
    let seen = format!("{list}{local_view}{}", d.stderr_text());
    assert!(!seen.contains("s3cret"), "{seen}");
    let (_, log) = d.stop();
    assert!(!log.contains("s3cret"), "{log}");
}

/// A plugin that dies in the middle of a tool call: the model reads why, the plugin is
/// restarted, and the next call reaches the new process.
#[tokio::test]
async fn a_plugin_crashing_mid_call_fails_only_that_call() {
    let plugins = tempfile::tempdir().unwrap();
    let root = plugins.path().join("notes");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::write(root.join("plugin.py"), NOTES).unwrap();
    std::fs::write(
        root.join("kaged-plugin.yaml"),
        "name: notes\nversion: 1.0.0\nkaged_api: 1\ndescription: keeps notes\ncommand: [python3, plugin.py]\ncapabilities: [\"kaged:storage:read\", \"kaged:storage:write\"]\ntools:\n  - name: add\n    description: Keep a note.\n    input_schema: {type: object, properties: {text: {type: string}}, required: [text]}\n  - name: boom\n    description: Dies.\n    input_schema: {type: object}\n",
    )
    .unwrap();
    let dir = plugins.path().to_str().unwrap().to_string();
    let env = ModelEnv::start_full(
        COMPLETIONS,
        "  plugins: [notes]\n  tools:\n    notes.add: { approval: allow }\n    notes.boom: { approval: allow }\n",
        "",
        &[],
        &[
            ("KAGED_PLUGINS_DIR", &dir),
            ("KAGED_PLUGINS_ENABLED", "notes"),
            ("KAGED_TEST_PLUGIN_BACKOFF_MS", "100"),
        ],
    )
    .await;
    let d = &env.daemon;
    let p = &env.provider;
    let first = wait_plugin(d, "notes", "running", |p| p["state"] == "running").await;
    p.push(tool_reply(
        COMPLETIONS,
        &[Call::new("c_boom", "notes.boom", &serde_json::json!({}))],
    ));
    p.push(tool_reply(
        COMPLETIONS,
        &[Call::new(
            "c_add",
            "notes.add",
            &serde_json::json!({"text": "milk"}),
        )],
    ));
    p.push(text_reply(COMPLETIONS, &["Done."]));
    let id = create_agent(d, &env.slug, "primary", Some("Try it.")).await;
    let records = wait_conversation(d, &id, is_turn_ended).await;
    let result = |call: &str| {
        records
            .iter()
            .find(|r| kind(r) == "tool_result" && r["event"]["call_id"] == call)
            .unwrap_or_else(|| panic!("{}", summarize(&records)))
            .clone()
    };
    let boom = result("c_boom");
    assert_eq!(boom["event"]["ok"], false, "{boom}");
    assert!(
        boom["event"]["content"]
            .as_str()
            .unwrap()
            .contains("the plugin `notes` stopped before it answered"),
        "{boom}"
    );
    let add = result("c_add");
    assert_eq!(add["event"]["content"], "stored 1 notes", "{add}");
    let now = wait_plugin(d, "notes", "restarted", |p| {
        p["state"] == "running" && p["restarts"].as_u64() >= Some(1)
    })
    .await;
    assert_ne!(now["pid"], first["pid"], "a new process: {now}");
    assert!(
        now["last_error"]
            .as_str()
            .unwrap_or_default()
            .contains("exit code 7"),
        "{now}"
    );
}
