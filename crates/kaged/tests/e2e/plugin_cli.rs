//! `kaged plugin schema`, `validate` and `install` through the binary, and the schema route.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};

use crate::common::*;

fn example(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples/plugins")
        .join(name)
}

fn plugin(env: &[(&str, &str)], args: &[&str]) -> Output {
    kaged_cmd(env)
        .arg("plugin")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn manifests_are_validated_with_positions() {
    for name in ["python-notes", "rust-hello"] {
        let out = plugin(&[], &["validate", example(name).to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(0), "{name}: {}", text(&out.stdout));
        assert!(text(&out.stderr).contains("is valid: plugin "), "{name}");
    }
    let out = plugin(
        &[],
        &[
            "validate",
            example("python-notes")
                .join("kaged-plugin.yaml")
                .to_str()
                .unwrap(),
        ],
    );
    assert_eq!(out.status.code(), Some(0));
    assert!(
        text(&out.stderr).contains("plugin notes 0.1.0: 2 tools, 2 capabilities declared"),
        "{}",
        text(&out.stderr)
    );

    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("kaged-plugin.yaml");
    std::fs::write(
        &file,
        "name: Notes\nversion: 0.1.0\nkaged_api: 2\ndescription: d\ncommand: [x]\ncapabilities: [\"net:example.org\"]\n",
    )
    .unwrap();
    let out = plugin(&[], &["validate", tmp.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let stdout = text(&out.stdout);
    let shown = file.display();
    assert!(stdout.contains(&format!("{shown}:1:7: name: ")), "{stdout}");
    assert!(
        stdout.contains(&format!("{shown}:3:12: kaged_api: ")),
        "{stdout}"
    );
    assert!(stdout.contains(&format!("{shown}:6:")), "{stdout}");
    assert!(stdout.contains("  fix: "), "{stdout}");
    assert!(
        text(&out.stderr).contains("3 problems found"),
        "{}",
        text(&out.stderr)
    );

    let out = plugin(
        &[],
        &["validate", file.to_str().unwrap(), "--format", "json"],
    );
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["valid"], false);
    assert_eq!(v["diagnostics"][0]["line"], 1);
    assert_eq!(v["diagnostics"][0]["path"], "name");

    let out = plugin(
        &[],
        &["validate", tmp.path().join("nowhere").to_str().unwrap()],
    );
    assert_eq!(out.status.code(), Some(2));
}

#[tokio::test]
async fn the_schema_is_printed_and_served_like_the_project_file_s() {
    let out = plugin(&[], &["schema"]);
    assert!(out.status.success());
    let printed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(printed, kaged_plugin::json_schema());
    assert_eq!(printed["$id"], "https://kaged.dev/schema/plugin-v1.json");

    let tmp = tempfile::tempdir().unwrap();
    let d = Daemon::start(tmp.path());
    assert_eq!(d.api_get("/api/v1/plugins/schema").await, printed);
    let anonymous = plain_client()
        .get(format!("{}/api/v1/plugins/schema", d.base))
        .send()
        .await
        .unwrap();
    // Public, as `/api/v1/dsl/schema` is: an editor checks manifests without signing in.
    assert_eq!(anonymous.status(), reqwest::StatusCode::OK);
    assert_eq!(
        anonymous.json::<serde_json::Value>().await.unwrap(),
        printed
    );
}

/// A copy of the Python example in `dir`, with modes to be tightened on install.
fn source_plugin(dir: &Path) -> PathBuf {
    let src = dir.join("src");
    std::fs::create_dir_all(src.join("data")).unwrap();
    for file in ["kaged-plugin.yaml", "plugin.py"] {
        std::fs::copy(example("python-notes").join(file), src.join(file)).unwrap();
    }
    std::fs::set_permissions(src.join("plugin.py"), PermissionsExt::from_mode(0o777)).unwrap();
    std::fs::write(src.join("data/words.txt"), "hello\n").unwrap();
    std::fs::set_permissions(src.join("data/words.txt"), PermissionsExt::from_mode(0o664)).unwrap();
    std::fs::set_permissions(src.join("data"), PermissionsExt::from_mode(0o777)).unwrap();
    src
}

#[test]
fn install_copies_the_plugin_after_consent_with_safe_modes() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("home");
    let env = [("KAGED_HOME", home.to_str().unwrap())];
    let src = source_plugin(tmp.path());
    let src_arg = src.to_str().unwrap();
    let installed = home.join("plugins/notes");

    // No terminal to ask on and no --yes: refused, nothing copied.
    let out = plugin(&env, &["install", src_arg]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("--yes"), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("read its own kaged storage"));
    assert!(!installed.exists());

    let out = plugin(&env, &["install", src_arg, "--yes"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout.starts_with("plugin notes 0.1.0: Keeps short notes"),
        "{stdout}"
    );
    assert!(
        stdout.contains(
            "it may:\n  - read its own kaged storage\n  - change its own kaged storage\n"
        ),
        "{stdout}"
    );
    assert!(
        stdout.contains("tools for model agents: notes.add, notes.list"),
        "{stdout}"
    );
    assert!(
        stdout.ends_with("next: kaged plugin enable notes\n"),
        "{stdout}"
    );
    assert_eq!(mode_of(&home.join("plugins")) & 0o7777, 0o700);
    assert_eq!(mode_of(&installed) & 0o7777, 0o700);
    assert_eq!(mode_of(&installed.join("data")) & 0o7777, 0o700);
    assert_eq!(mode_of(&installed.join("plugin.py")) & 0o7777, 0o755);
    assert_eq!(
        mode_of(&installed.join("kaged-plugin.yaml")) & 0o7777,
        0o644
    );
    assert_eq!(mode_of(&installed.join("data/words.txt")) & 0o7777, 0o644);
    assert_eq!(
        std::fs::read(installed.join("plugin.py")).unwrap(),
        std::fs::read(example("python-notes").join("plugin.py")).unwrap()
    );

    // An upgrade says what it gains.
    let manifest = src.join("kaged-plugin.yaml");
    let upgraded = std::fs::read_to_string(&manifest)
        .unwrap()
        .replace("version: 0.1.0", "version: 0.2.0")
        .replace(
            "capabilities: [\"kaged:storage:read\", \"kaged:storage:write\"]",
            "capabilities: [\"kaged:storage:read\", \"kaged:storage:write\", \"net:api.example.org:443\"]",
        );
    std::fs::write(&manifest, upgraded).unwrap();
    let out = plugin(&env, &["install", src_arg, "--yes"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains(&format!(
            "replaces the installed notes 0.1.0 ({})\nnew since 0.1.0, it may also:\n  - connect to api.example.org:443\n",
            installed.display()
        )),
        "{stdout}"
    );
    assert!(
        std::fs::read_to_string(installed.join("kaged-plugin.yaml"))
            .unwrap()
            .contains("version: 0.2.0")
    );

    // A symbolic link anywhere is refused by name; the installed version stays.
    std::os::unix::fs::symlink("/etc/shadow", src.join("data/secret")).unwrap();
    let out = plugin(&env, &["install", src_arg, "--yes"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "{} is a symbolic link",
            src.join("data/secret").display()
        )),
        "{stderr}"
    );
    assert!(!installed.join("data/secret").exists());
    let names: Vec<_> = std::fs::read_dir(home.join("plugins"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        names,
        ["notes"],
        "nothing else is left in the plugins directory"
    );

    // An invalid plugin is not installed at all.
    std::fs::remove_file(src.join("data/secret")).unwrap();
    std::fs::write(&manifest, "name: notes\n").unwrap();
    let out = plugin(&env, &["install", src_arg, "--yes"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stdout).contains("kaged-plugin.yaml:1:1: "));
}

#[test]
fn daemon_commands_check_names_first_and_need_a_daemon() {
    let tmp = tempfile::tempdir().unwrap();
    let env = [("KAGED_HOME", tmp.path().to_str().unwrap())];
    let out = plugin(&env, &["enable", "../tokens"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("is not a plugin name"));
    let out = plugin(&env, &["list"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
}

/// Root installing into a plugins directory the system daemon's user owns hands the copy to
/// that user, so the daemon can read what it runs.
#[test]
fn root_installing_for_another_user_s_daemon_hands_it_the_copy() {
    use std::os::unix::fs::MetadataExt;
    if !running_as_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("home");
    let plugins = home.join("plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    std::os::unix::fs::chown(&plugins, Some(CAGE_UID), Some(CAGE_UID)).unwrap();
    let src = source_plugin(tmp.path());
    let out = plugin(
        &[("KAGED_HOME", home.to_str().unwrap())],
        &["install", src.to_str().unwrap(), "--yes"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    for rel in ["", "plugin.py", "data", "data/words.txt"] {
        let meta = std::fs::symlink_metadata(plugins.join("notes").join(rel)).unwrap();
        assert_eq!((meta.uid(), meta.gid()), (CAGE_UID, CAGE_UID), "{rel}");
    }
}

/// Installed with the CLI, then listed, enabled and disabled through it against the real
/// daemon and host: the example plugin really runs.
#[tokio::test]
async fn an_installed_plugin_is_listed_enabled_and_disabled_through_the_cli() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("home");
    let dir = tmp.path().join("plugins");
    let env = [
        ("KAGED_HOME", home.to_str().unwrap()),
        ("KAGED_PLUGINS_DIR", dir.to_str().unwrap()),
    ];
    // Installed while the daemon runs: listed and enabled without a restart.
    let d = Daemon::start_with(&home, &["--bind", "127.0.0.1:0"], &env[1..]).failing_on_panics();
    let out = plugin(
        &env,
        &[
            "install",
            example("python-notes").to_str().unwrap(),
            "--yes",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));

    let listed = text(&d.cli(&["plugin", "list"]).stdout);
    let lines: Vec<&str> = listed.lines().collect();
    assert!(lines[0].starts_with("NAME   VERSION  STATE"), "{listed}");
    assert!(lines[1].starts_with("notes  0.1.0    stopped"), "{listed}");

    let out = d.cli(&["plugin", "enable", "notes"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let line = text(&out.stdout);
    assert!(
        line == "notes: starting\n" || line == "notes: running\n",
        "{line}\n{}",
        d.stderr_text()
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let out = d.cli(&["plugin", "list", "--json"]);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        if v["plugins"][0]["state"] == "running" {
            assert_eq!(v["dir"], dir.to_str().unwrap(), "{v}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{v}\n{}",
            d.stderr_text()
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert!(text(&d.cli(&["plugin", "list"]).stdout).contains("notes  0.1.0    running  0"));

    let out = d.cli(&["plugin", "disable", "notes"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).starts_with("notes: stopped ("),
        "{}",
        text(&out.stdout)
    );
    let out = d.cli(&["plugin", "enable", "nosuch"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("404"), "{}", text(&out.stderr));

    // Upgraded while stopped: the next enable runs the new version.
    let src = source_plugin(tmp.path());
    let manifest = src.join("kaged-plugin.yaml");
    let upgraded = std::fs::read_to_string(&manifest)
        .unwrap()
        .replace("version: 0.1.0", "version: 0.2.0");
    std::fs::write(&manifest, upgraded).unwrap();
    let out = plugin(&env, &["install", src.to_str().unwrap(), "--yes"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let out = d.cli(&["plugin", "enable", "notes"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let listed = text(&d.cli(&["plugin", "list"]).stdout);
    assert!(listed.contains("notes  0.2.0"), "{listed}");
}

/// A plugin that, at `initialize`, tries to change its own installed files from inside its
/// cage (append, overwrite, chmod, create, rename, remove) and answers with an error naming
/// each attempt that worked, or with success when all were refused; then behaves.
const SELF_WRITING: &str = r##"
import json, os, sys
def send(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()
def attempts():
    worked = []
    tries = [
        ("append to plugin.py", lambda: open("plugin.py", "a").write("# changed\n")),
        ("overwrite the manifest", lambda: open("kaged-plugin.yaml", "w").write("x")),
        ("chmod plugin.py", lambda: os.chmod("plugin.py", 0o777)),
        ("chmod its directory", lambda: os.chmod(".", 0o777)),
        ("create a file", lambda: open("planted", "w").write("x")),
        ("make a directory", lambda: os.mkdir("planted-dir")),
        ("rename plugin.py", lambda: os.rename("plugin.py", "moved.py")),
        ("remove the manifest", lambda: os.unlink("kaged-plugin.yaml")),
    ]
    for what, act in tries:
        try:
            act()
            worked.append(what)
        except OSError as e:
            print(what, "refused:", e, file=sys.stderr)
    return worked
for line in sys.stdin:
    msg = json.loads(line)
    method, id = msg.get("method"), msg.get("id")
    if method == "initialize":
        worked = attempts()
        if worked:
            send({"jsonrpc": "2.0", "id": id, "error": {"code": -32603, "message": "CHANGED ITS FILES: " + "; ".join(worked)}})
        else:
            send({"jsonrpc": "2.0", "id": id, "result": {}})
    elif method == "health":
        send({"jsonrpc": "2.0", "id": id, "result": {"status": "ok"}})
    elif method == "shutdown":
        send({"jsonrpc": "2.0", "id": id, "result": {}})
        sys.exit(0)
"##;

/// The source directory of the `selfwrite` plugin ([`SELF_WRITING`]) in `dir`.
pub(crate) fn self_writing_plugin(dir: &Path) -> PathBuf {
    let src = dir.join("selfwrite-src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("plugin.py"), SELF_WRITING).unwrap();
    std::fs::write(
        src.join("kaged-plugin.yaml"),
        "name: selfwrite\nversion: 0.1.0\nkaged_api: 1\ndescription: tries to change its own files\ncommand: [python3, plugin.py]\ncapabilities: []\nshutdown_timeout_sec: 2\n",
    )
    .unwrap();
    src
}

/// Every file and directory below `dir` with its mode and contents, to compare before and
/// after a plugin ran.
pub(crate) fn tree_of(dir: &Path) -> Vec<(PathBuf, u32, Vec<u8>)> {
    let mut out = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(at) = pending.pop() {
        let meta = std::fs::symlink_metadata(&at).unwrap();
        let bytes = if meta.is_dir() {
            for entry in std::fs::read_dir(&at).unwrap() {
                pending.push(entry.unwrap().path());
            }
            Vec::new()
        } else {
            std::fs::read(&at).unwrap()
        };
        out.push((
            at.strip_prefix(dir).unwrap().to_path_buf(),
            mode_of(&at),
            bytes,
        ));
    }
    out.sort();
    out
}

/// The process below the plugin's reported `pid` that runs its `marker` (e.g. `plugin.py`):
/// `(pid, uid, whether its mount namespace is another than this test's)`.
pub(crate) fn plugin_process(pid: u64, marker: &str) -> (u32, u32, bool) {
    let ours = std::fs::read_link("/proc/self/ns/mnt").unwrap();
    let found = std::iter::once(pid as u32)
        .chain(kaged_spawn::descendants(pid as u32))
        .find(|p| {
            let cmdline = std::fs::read(format!("/proc/{p}/cmdline")).unwrap_or_default();
            let program = cmdline.split(|b| *b == 0).next().unwrap_or_default();
            let launcher = [&b"bwrap"[..], b"setpriv", b"sh"]
                .iter()
                .any(|l| program.rsplit(|b| *b == b'/').next() == Some(*l));
            !launcher
                && cmdline
                    .windows(marker.len())
                    .any(|w| w == marker.as_bytes())
        })
        .unwrap_or_else(|| panic!("no process runs {marker} below {pid}"));
    let status = std::fs::read_to_string(format!("/proc/{found}/status")).unwrap();
    let uid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().next())
        .unwrap()
        .parse()
        .unwrap();
    let theirs = std::fs::read_link(format!("/proc/{found}/ns/mnt")).unwrap();
    (found, uid, theirs != ours)
}

/// Root installs with the CLI, a root daemon runs the plugin in its cage as the cage user
/// (from a copy that user can read), and the plugin cannot change its own installed files
/// however it tries; the installed tree stays root's and closed.
#[tokio::test]
async fn a_root_installed_plugin_runs_as_the_cage_user_and_cannot_change_its_files() {
    use std::os::unix::fs::MetadataExt;
    if !running_as_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("home");
    let dir = tmp.path().join("plugins");
    let env = [
        ("KAGED_HOME", home.to_str().unwrap()),
        ("KAGED_PLUGINS_DIR", dir.to_str().unwrap()),
    ];
    let src = self_writing_plugin(tmp.path());
    let out = plugin(&env, &["install", src.to_str().unwrap(), "--yes"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let installed = dir.join("selfwrite");
    let before = tree_of(&installed);
    let d = Daemon::start_with(
        &home,
        &["--bind", "127.0.0.1:0"],
        &[env[1], ("KAGED_PLUGINS_ENABLED", "selfwrite")],
    )
    .failing_on_panics();
    let report = running(&d).await;
    let (_, uid, caged) = plugin_process(report["pid"].as_u64().unwrap(), "plugin.py");
    assert_eq!(uid, CAGE_UID, "the cage runs as the cage user");
    assert!(caged, "the plugin runs in a mount namespace of its own");
    assert_eq!(
        tree_of(&installed),
        before,
        "the installed files are unchanged"
    );
    let meta = std::fs::metadata(&installed).unwrap();
    assert_eq!((meta.uid(), meta.mode() & 0o7777), (0, 0o700));
    assert_eq!(
        mode_of(&dir) & 0o7777,
        0o700,
        "the plugins directory stays closed"
    );
    // What the plugin said of each attempt reaches kaged's log (a moment later).
    let said = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !d.stderr_text().contains("remove the manifest refused") {
        assert!(std::time::Instant::now() < said, "{}", d.stderr_text());
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let log = d.stderr_text();
    for attempt in [
        "append to plugin.py",
        "create a file",
        "chmod its directory",
    ] {
        assert!(log.contains(&format!("{attempt} refused")), "{log}");
    }

    let out = d.cli(&["plugin", "disable", "selfwrite"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let gone = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let pid = report["pid"].as_u64().unwrap();
    while Path::new(&format!("/proc/{pid}")).exists() {
        assert!(std::time::Instant::now() < gone, "{pid} still runs");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    // The run's copy went with it.
    let helper = log
        .lines()
        .find_map(|l| {
            l.split("cages bind a private copy of this binary path=")
                .nth(1)
        })
        .map(|p| PathBuf::from(p.trim()))
        .unwrap();
    let left: Vec<_> = std::fs::read_dir(helper.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left, ["kaged"], "{left:?}");
}

/// The source of the `fetch` plugin, declaring `net:127.0.0.1:ALLOWED`: at `initialize` it
/// fetches `http://127.0.0.1:PORT/` from both servers (through its proxy, as Python honours
/// `HTTP_PROXY`) and starts only when it reached the allowed one and not the other.
pub(crate) fn fetching_plugin(dir: &Path, allowed: u16, refused: u16) -> PathBuf {
    let src = dir.join("fetch-src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(
        src.join("plugin.py"),
        r#"import json, sys, urllib.request as u
def get(port):
    try:
        u.urlopen(f"http://127.0.0.1:{port}/", timeout=5).read()
        return True
    except Exception as e:
        print("fetch", port, "failed:", type(e).__name__, e, file=sys.stderr)
        return False
def send(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()
for line in sys.stdin:
    msg = json.loads(line)
    method, id = msg.get("method"), msg.get("id")
    if method == "initialize":
        reached = [get(sys.argv[1]), get(sys.argv[2])]
        if reached == [True, False]:
            send({"jsonrpc": "2.0", "id": id, "result": {}})
        else:
            send({"jsonrpc": "2.0", "id": id, "error": {"code": -32603, "message": f"reached (allowed, refused): {reached}"}})
    elif method == "health":
        send({"jsonrpc": "2.0", "id": id, "result": {"status": "ok"}})
    elif method == "shutdown":
        send({"jsonrpc": "2.0", "id": id, "result": {}})
        sys.exit(0)
"#,
    )
    .unwrap();
    std::fs::write(
        src.join("kaged-plugin.yaml"),
        format!("name: fetch\nversion: 0.1.0\nkaged_api: 1\ndescription: fetches\ncommand: [python3, plugin.py, \"{allowed}\", \"{refused}\"]\ncapabilities: [\"net:127.0.0.1:{allowed}\"]\nshutdown_timeout_sec: 2\n"),
    )
    .unwrap();
    src
}

/// The daemon's only plugin once `running` (`kaged plugin list --json`, as root); a failure
/// on the way fails the test with its reason.
async fn running(d: &Daemon) -> serde_json::Value {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let v: serde_json::Value =
            serde_json::from_slice(&d.cli(&["plugin", "list", "--json"]).stdout).unwrap();
        let p = v["plugins"][0].clone();
        if p["state"] == "running" {
            return p;
        }
        assert!(
            std::time::Instant::now() < deadline && p["last_error"].is_null(),
            "{p}\n{}",
            d.stderr_text()
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

/// Under a root daemon, a root-installed plugin declaring one destination runs as the cage
/// user and reaches that destination through its egress proxy (the proxy's socket handed to
/// that user), and not another.
#[tokio::test]
async fn a_root_installed_plugin_reaches_only_the_destination_it_declared() {
    if !running_as_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (allowed, refused) = (
        crate::ordinary_user::loopback_http_server(),
        crate::ordinary_user::loopback_http_server(),
    );
    let src = fetching_plugin(tmp.path(), allowed, refused);
    let home = tmp.path().join("home");
    let dir = tmp.path().join("plugins");
    let out = plugin(
        &[
            ("KAGED_HOME", home.to_str().unwrap()),
            ("KAGED_PLUGINS_DIR", dir.to_str().unwrap()),
        ],
        &["install", src.to_str().unwrap(), "--yes"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let d = Daemon::start_with(
        &home,
        &["--bind", "127.0.0.1:0"],
        &[
            ("KAGED_PLUGINS_DIR", dir.to_str().unwrap()),
            ("KAGED_PLUGINS_ENABLED", "fetch"),
        ],
    )
    .failing_on_panics();
    let report = running(&d).await;
    // Running: it reached the allowed server and not the other (see `fetching_plugin`).
    let (_, uid, caged) = plugin_process(report["pid"].as_u64().unwrap(), "plugin.py");
    assert_eq!((uid, caged), (CAGE_UID, true));
}
