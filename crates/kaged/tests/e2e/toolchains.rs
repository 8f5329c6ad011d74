//! Toolchains in cages: a program that lives in the operator's home is refused before the cage
//! starts, with where it is and the `local.toml` grant that makes it visible; with that grant
//! (pasted as printed) it runs, through `kaged cage run` and as a session's task. And the
//! Claude Code recipe for real: the pinned npm package (`common/npm.rs`), run in print mode in a
//! cage against a loopback Anthropic-compatible stream through kaged's egress proxy.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::common::anthropic::AnthropicStream;
use crate::common::npm::{claude_code, scratch};
use crate::common::*;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

fn mkdirs(path: &Path) {
    std::fs::create_dir_all(path).unwrap();
}

/// A project `slug` at `dir/project` with the given agent and tasks YAML.
fn project(dir: &Path, yaml: &str) -> PathBuf {
    let p = dir.join("project");
    mkdirs(&p.join(".kaged"));
    std::fs::write(p.join(".kaged/project.yaml"), yaml).unwrap();
    cage_writable(&p);
    p
}

/// `PATH` with `first` in front (the operator's PATH, where the toolchain is found).
fn path_with(first: &Path) -> String {
    format!(
        "{}:{}",
        first.display(),
        std::env::var("PATH").unwrap_or_default()
    )
}

fn cage_run(project: &Path, config_dir: &Path, env: &[(&str, &str)], command: &[&str]) -> Output {
    let mut all = vec![("KAGED_CONFIG_DIR", config_dir.to_str().unwrap())];
    all.extend_from_slice(env);
    let mut c = Command::new("timeout");
    c.arg("120").arg(kaged_bin()).env_clear();
    for var in ["PATH", "LANG", "TZ"] {
        if let Some(v) = std::env::var_os(var) {
            c.env(var, v);
        }
    }
    for (k, v) in all {
        c.env(k, v);
    }
    c.args(["cage", "run", project.to_str().unwrap(), "--"])
        .args(command)
        .current_dir("/")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The `local.toml` lines a refusal prints: from `[projects.` to the closing `]`.
fn grant_of(message: &str) -> String {
    let start = message
        .find("[projects.")
        .unwrap_or_else(|| panic!("no grant in {message}"));
    let rest = &message[start..];
    let end = rest
        .find("\n]")
        .unwrap_or_else(|| panic!("no end in {rest}"));
    format!("{}\n]\n", &rest[..end])
}

const FAKE_CARGO: &str = "#!/bin/sh\necho \"fake cargo ran: $*\"\n";

/// A "home" with `.cargo/bin/fakecargo`, and a project whose `lint` task runs it.
fn toolchain_home(dir: &Path) -> (PathBuf, PathBuf) {
    let bin = dir.join("home/.cargo/bin");
    mkdirs(&bin);
    let program = bin.join("fakecargo");
    std::fs::write(&program, FAKE_CARGO).unwrap();
    std::fs::set_permissions(&program, std::fs::Permissions::from_mode(0o755)).unwrap();
    for d in [dir.join("home"), dir.join("home/.cargo"), bin.clone()] {
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let project = project(
        dir,
        "version: 1\nproject: toolchains\nprimary:\n  command: [sh]\ntasks:\n  lint:\n    command: [fakecargo, clippy, --all-targets]\n",
    );
    (bin, project)
}

#[test]
fn a_program_in_the_operators_home_is_refused_with_its_grant_and_runs_once_granted() {
    let dir = scratch("toolchains-cage");
    let (bin, project) = toolchain_home(dir.path());
    let config = dir.path().join("config");
    mkdirs(&config);
    let operator_path = path_with(&bin);
    let env = [("PATH", operator_path.as_str())];

    let refused = cage_run(&project, &config, &env, &["fakecargo", "clippy"]);
    let stderr = text(&refused.stderr);
    assert_eq!(refused.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("cannot run \"fakecargo\""), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "it is at {}/fakecargo on kaged's PATH",
            bin.display()
        )),
        "{stderr}"
    );
    let grant = grant_of(&stderr);
    assert_eq!(
        grant,
        format!(
            "[projects.toolchains]\npaths = [\n  {{ host = \"{}\", on_path = true }},\n]\n",
            bin.display()
        )
    );
    assert!(
        !text(&refused.stdout).contains("fake cargo ran"),
        "nothing ran"
    );

    // Not on kaged's PATH either: said so, no grant to suggest.
    let nowhere = cage_run(&project, &config, &[], &["fakecargo"]);
    let stderr = text(&nowhere.stderr);
    assert_eq!(nowhere.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("neither in the cage") && !stderr.contains("[projects."),
        "{stderr}"
    );

    // The grant as printed: the program runs, its directory read-only and first on PATH.
    std::fs::write(config.join("local.toml"), &grant).unwrap();
    let ran = cage_run(
        &project,
        &config,
        &env,
        &[
            "sh",
            "-c",
            "fakecargo clippy; echo \"PATH=$PATH\"; touch \"$(command -v fakecargo)\" && echo WROTE",
        ],
    );
    let (stdout, stderr) = (text(&ran.stdout), text(&ran.stderr));
    assert!(
        stdout.contains("fake cargo ran: clippy"),
        "{stdout}{stderr}"
    );
    assert!(
        stdout.contains(&format!("PATH={}:/usr/local/bin:", bin.display())),
        "{stdout}"
    );
    assert!(
        !stdout.contains("WROTE"),
        "the grant is read-only: {stdout}"
    );
    let direct = cage_run(&project, &config, &env, &["fakecargo", "clippy"]);
    assert!(direct.status.success(), "{}", text(&direct.stderr));
    assert!(text(&direct.stdout).contains("fake cargo ran: clippy"));

    // Below the cage's home instead (home:/...): there too, and on PATH there.
    std::fs::write(
        config.join("local.toml"),
        format!(
            "[projects.toolchains]\npaths = [{{ host = \"{}\", at = \"home:/.cargo/bin\", on_path = true }}]\n",
            bin.display()
        ),
    )
    .unwrap();
    let home = cage_run(
        &project,
        &config,
        &env,
        &["sh", "-c", "command -v fakecargo; fakecargo x"],
    );
    let stdout = text(&home.stdout);
    assert!(
        stdout.contains("/home/kaged/.cargo/bin/fakecargo\nfake cargo ran: x"),
        "{stdout}{}",
        text(&home.stderr)
    );
}

// ---------------------------------------------------------------------------------------------
// The same through the daemon: a session's task.

/// Start the `lint` task and wait for its end; the session document.
async fn lint(d: &Daemon) -> Value {
    let (status, body) = d
        .call(
            Method::POST,
            "/api/v1/projects/toolchains/sessions",
            Some(json!({"kind": "task", "name": "lint", "rows": 24, "cols": 80})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let id = body["session"]["id"].as_str().unwrap().to_string();
    let start = Instant::now();
    loop {
        let (_, v) = d
            .call(Method::GET, &format!("/api/v1/sessions/{id}"), None)
            .await;
        if v["session"]["ended_at_ms"].is_i64() {
            return v;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "never ended: {v}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn transcript(d: &Daemon, id: &str) -> String {
    let r = plain_client()
        .get(format!("{}/api/v1/sessions/{id}/transcript", d.base))
        .header("x-kaged-auth-nonce", d.nonce())
        .send()
        .await
        .unwrap();
    r.text().await.unwrap()
}

fn start_daemon(home: &Path, config: &Path, operator_path: &str) -> Daemon {
    Daemon::start_with(
        home,
        &["--bind", "127.0.0.1:0"],
        &[
            ("KAGED_CONFIG_DIR", config.to_str().unwrap()),
            ("PATH", operator_path),
        ],
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn a_task_in_the_operators_home_fails_with_the_grant_and_runs_with_it() {
    let dir = scratch("toolchains-task");
    let (bin, project) = toolchain_home(dir.path());
    let config = dir.path().join("config");
    mkdirs(&config);
    let operator_path = path_with(&bin);
    let home = dir.path().join("kaged");

    let d = start_daemon(&home, &config, &operator_path);
    let (status, body) = d
        .call(
            Method::POST,
            "/api/v1/projects/load",
            Some(json!({"path": project})),
        )
        .await;
    assert!(status.is_success(), "load: {status} {body}");
    let failed = lint(&d).await;
    let shown = failed.to_string();
    assert_eq!(failed["session"]["state"], "failed", "{shown}");
    let reason = failed["session"]["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("cannot run \"fakecargo\""), "{shown}");
    let grant = grant_of(reason);
    assert!(
        grant.contains(&format!(
            "{{ host = \"{}\", on_path = true }}",
            bin.display()
        )),
        "{grant}"
    );
    drop(d);

    // local.toml is read at start: the grant as printed, then a restart.
    std::fs::write(config.join("local.toml"), &grant).unwrap();
    let d = start_daemon(&home, &config, &operator_path);
    let ran = lint(&d).await;
    assert_eq!(ran["session"]["exit_code"], 0, "{ran}");
    let id = ran["session"]["id"].as_str().unwrap();
    let out = transcript(&d, id).await;
    assert!(
        out.contains("fake cargo ran: clippy --all-targets"),
        "{out:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Claude Code, for real.

#[test]
fn claude_code_runs_in_a_cage_against_a_loopback_stream_through_the_egress_proxy() {
    let Some(claude) = claude_code() else {
        return;
    };
    let bin_dir = claude.bin_dir();
    let dir = scratch("toolchains-claude");
    let reply = format!("kaged-cage-reply-{}", std::process::id());
    let mut stream = AnthropicStream::start(dir.path(), &reply, None);
    let project = project(
        dir.path(),
        &format!(
            "version: 1\nproject: claude-recipe\nprimary:\n  command: [claude]\n  cage:\n    network:\n      allow: [\"127.0.0.1:{}\"]\n",
            stream.port
        ),
    );
    let config = dir.path().join("config");
    mkdirs(&config);
    let operator_path = path_with(&bin_dir);
    let base_url = format!("http://127.0.0.1:{}", stream.port);
    let key = "sk-ant-kaged-test-key";
    let env = [
        ("PATH", operator_path.as_str()),
        ("ANTHROPIC_BASE_URL", base_url.as_str()),
        ("ANTHROPIC_API_KEY", key),
        ("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1"),
    ];

    // Installed under the home, not seen by the cage: the refusal says what to grant.
    let refused = cage_run(&project, &config, &env, &["claude", "-p", "hi"]);
    let stderr = text(&refused.stderr);
    assert_eq!(refused.status.code(), Some(2), "{stderr}");
    let grant = grant_of(&stderr);
    // `.bin/claude` is a link into the package: its directory is granted too.
    assert!(
        grant.contains(&format!(
            "{{ host = \"{}\", on_path = true }}",
            bin_dir.display()
        )) && grant.contains("@anthropic-ai/claude-code"),
        "{grant}"
    );

    // The recipe: that grant, and the credentials by environment grant (values from kaged's
    // own environment, never in a file).
    std::fs::write(
        config.join("local.toml"),
        format!(
            "{grant}env = [\"ANTHROPIC_BASE_URL\", \"ANTHROPIC_API_KEY\", \"CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC\"]\n"
        ),
    )
    .unwrap();
    let ran = cage_run(&project, &config, &env, &["claude", "-p", "hi"]);
    let (stdout, stderr) = (text(&ran.stdout), text(&ran.stderr));
    assert!(ran.status.success(), "claude failed: {stdout}{stderr}");
    assert!(stdout.contains(&reply), "no reply: {stdout}{stderr}");
    assert!(
        stderr.contains(&format!("egress allowed: POST 127.0.0.1:{}", stream.port)),
        "not through the proxy: {stderr}"
    );
    let requests = stream.requests();
    assert!(
        requests
            .iter()
            .any(|r| r.contains("POST /v1/messages") && r.contains(&format!("key={key}"))),
        "the stream saw no request with the granted key: {requests:#?}"
    );
}
