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
async fn the_schema_is_printed_and_served_to_signed_in_clients() {
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
    assert_eq!(anonymous.status(), reqwest::StatusCode::UNAUTHORIZED);
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
    let out = plugin(
        &env,
        &[
            "install",
            example("python-notes").to_str().unwrap(),
            "--yes",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let d = Daemon::start_with(&home, &["--bind", "127.0.0.1:0"], &env[1..]).failing_on_panics();

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
}
