//! Per-user mode as an ordinary, unprivileged user: CI runs as root, which would hide failures
//! (permissions, runtime-directory fallback, mode detection). When the suite runs as root, the
//! daemon and CLI run as `nobody` through setpriv; otherwise as the current user.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::*;

const NOBODY: u32 = 65534;

struct Operator {
    uid: u32,
    bin: PathBuf,
    home: PathBuf,
    /// Set only when not root: a developer's own /tmp/kaged-UID may hold their real daemon.
    xdg_runtime: Option<PathBuf>,
}

fn current_uid() -> u32 {
    std::fs::metadata("/proc/self").unwrap().uid()
}

fn sh(cmd: &str, args: &[&str]) {
    let ok = Command::new(cmd).args(args).status().unwrap().success();
    assert!(ok, "{cmd} {args:?} failed");
}

impl Operator {
    fn new(root: &Path) -> Operator {
        let as_root = current_uid() == 0;
        let uid = if as_root { NOBODY } else { current_uid() };
        let home = root.join("home");
        std::fs::create_dir_all(&home).unwrap();
        // The test binary may sit under a directory `nobody` cannot traverse.
        let bin = root.join("bin/kaged");
        std::fs::create_dir_all(bin.parent().unwrap()).unwrap();
        std::fs::copy(kaged_bin(), &bin).unwrap();
        sh(
            "chmod",
            &["0755", root.to_str().unwrap(), bin.to_str().unwrap()],
        );
        let xdg_runtime = if as_root {
            sh(
                "chown",
                &["-R", &format!("{NOBODY}:{NOBODY}"), root.to_str().unwrap()],
            );
            None
        } else {
            Some(root.join("xdg-runtime"))
        };
        Operator {
            uid,
            bin,
            home,
            xdg_runtime,
        }
    }

    fn runtime_dir(&self) -> PathBuf {
        match &self.xdg_runtime {
            Some(dir) => dir.join("kaged"),
            None => PathBuf::from(format!("/tmp/kaged-{}", self.uid)),
        }
    }

    fn env(&self, extra: &[(&str, &str)]) -> Vec<(String, String)> {
        let mut env = vec![("HOME".to_string(), self.home.to_str().unwrap().to_string())];
        if let Some(dir) = &self.xdg_runtime {
            env.push(("XDG_RUNTIME_DIR".into(), dir.to_str().unwrap().into()));
        }
        env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        env
    }

    fn command(&self, args: &[&str], env: &[(String, String)]) -> Command {
        let mut cmd = if current_uid() == 0 {
            let mut c = Command::new("setpriv");
            c.args([
                &format!("--reuid={}", self.uid),
                &format!("--regid={}", self.uid),
                "--clear-groups",
                "--",
            ]);
            c.arg(&self.bin);
            c
        } else {
            Command::new(&self.bin)
        };
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default());
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.args(args);
        cmd
    }

    fn run(&self, args: &[&str], extra: &[(&str, &str)]) -> std::process::Output {
        self.command(args, &self.env(extra)).output().unwrap()
    }
}

#[tokio::test]
async fn per_user_mode_works_unprivileged_with_xdg_defaults_and_runtime_fallback() {
    let tmp = tempfile::tempdir().unwrap();
    let op = Operator::new(tmp.path());
    // Only this test uses the shared /tmp/kaged-UID fallback: start it clean.
    if op.xdg_runtime.is_none() {
        let _ = std::fs::remove_dir_all(op.runtime_dir());
    }

    // Rule 5: nothing points anywhere, so per-user by default.
    let out = op.run(&["status"], &[]);
    assert_eq!(out.status.code(), Some(3));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("no system-wide indicator (UID {})", op.uid)),
        "{err}"
    );
    assert!(
        err.contains(&op.runtime_dir().join("daemon.json").display().to_string()),
        "{err}"
    );

    let env = op.env(&[]);
    let d = Daemon::spawn(
        op.command(&["start", "--bind", "127.0.0.1:0"], &env),
        &op.home.join(".local/share/kaged"),
        &op.runtime_dir(),
        env.clone(),
    );
    // XDG defaults under the user's HOME, and a private runtime directory they own.
    let config = op.home.join(".config/kaged/config.toml");
    assert!(config.is_file(), "first launch wrote {}", config.display());
    assert_eq!(std::fs::metadata(&config).unwrap().uid(), op.uid);
    let db = op.home.join(".local/share/kaged/kaged.db");
    assert_eq!(std::fs::metadata(&db).unwrap().uid(), op.uid);
    assert_eq!(mode_of(&db), 0o600);
    let runtime = op.runtime_dir();
    assert_eq!(mode_of(&runtime), 0o700);
    assert_eq!(std::fs::metadata(&runtime).unwrap().uid(), op.uid);
    let cookie = runtime.join("auth-cookie");
    assert_eq!(mode_of(&cookie), 0o600);
    assert_eq!(std::fs::metadata(&cookie).unwrap().uid(), op.uid);

    // The launch URL signs a browser in, and the operator is the unprivileged user.
    let client = browser_like_client();
    let r = client.get(&d.launch_url).send().await.unwrap();
    assert_eq!(r.status(), reqwest::StatusCode::SEE_OTHER);
    let who: serde_json::Value = json_of(client.get(format!("{}/api/v1/whoami", d.base))).await;
    let expected_name = if current_uid() == 0 {
        "user:nobody".to_string()
    } else {
        who["id"].as_str().unwrap().to_string()
    };
    assert_eq!(who["id"], expected_name.as_str());

    // The CLI, as the same user, finds and talks to it.
    let out = op.command(&["status"], &env).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("per-user (no system-wide indicator"),
        "{text}"
    );
    let out = op
        .command(&["auth", "open", "--no-browser"], &env)
        .output()
        .unwrap();
    assert!(out.status.success());
    let url = String::from_utf8(out.stdout).unwrap();
    let r = plain_client().get(url.trim()).send().await.unwrap();
    assert_eq!(r.status(), reqwest::StatusCode::SEE_OTHER);

    let (status, log) = d.stop();
    assert!(status.success(), "{log}");
    assert!(!cookie.exists());

    // Rule 4: the data directory now exists, and that is the reason given.
    let out = op.run(&["status"], &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "per-user data directory {} exists",
            op.home.join(".local/share/kaged").display()
        )),
        "{err}"
    );
    // Rule 4 through XDG_DATA_HOME.
    let xdg_data = tmp.path().join("xdg-data");
    std::fs::create_dir_all(xdg_data.join("kaged")).unwrap();
    let out = op.run(
        &["status"],
        &[("XDG_DATA_HOME", xdg_data.to_str().unwrap())],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "per-user data directory {}/kaged exists",
            xdg_data.display()
        )),
        "{err}"
    );
}

#[test]
fn cages_work_for_an_unprivileged_user() {
    let tmp = tempfile::tempdir().unwrap();
    let op = Operator::new(tmp.path());
    let project = op.home.join("project");
    std::fs::create_dir_all(project.join(".kaged")).unwrap();
    std::fs::create_dir_all(project.join(".git")).unwrap();
    std::fs::write(
        project.join(".kaged/project.yaml"),
        "version: 1\nproject: mine\nprimary:\n  command: [sh]\n",
    )
    .unwrap();
    if current_uid() == 0 {
        sh(
            "chown",
            &[
                "-R",
                &format!("{NOBODY}:{NOBODY}"),
                op.home.to_str().unwrap(),
            ],
        );
    }
    let project_arg = project.to_str().unwrap();
    let run = |script: &str| op.run(&["cage", "run", project_arg, "--", "sh", "-c", script], &[]);
    let out = run("id -u; echo ok > /workspace/made.txt");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        std::fs::read_to_string(project.join("made.txt"))
            .unwrap()
            .trim(),
        "ok"
    );
    assert_eq!(
        std::fs::metadata(project.join("made.txt")).unwrap().uid(),
        op.uid,
        "files belong to the operator"
    );
    assert!(!run("echo x > /workspace/.git/HEAD").status.success());
    let out = op.run(&["doctor"], &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

/// A model agent as the unprivileged operator's own daemon: its `shell.bash` under
/// `approval: ask` waits, the operator approves it with the CLI as themselves, and the command
/// runs in the agent's cage as them, writing into their project.
#[tokio::test]
async fn an_unprivileged_operator_approves_a_model_agents_call_that_runs_in_its_cage() {
    use crate::common::provider::*;
    use serde_json::json;
    let tmp = tempfile::tempdir().unwrap();
    let op = Operator::new(tmp.path());
    let provider = Provider::start();
    local_toml(COMPLETIONS, &provider.base_url()).write(&op.home.join(".config/kaged"));
    let project = op.home.join("project");
    write_model_project(
        &project,
        "mine",
        "  tools: { shell.bash: { approval: ask } }\n",
        "",
    );
    if current_uid() == 0 {
        sh(
            "chown",
            &[
                "-R",
                &format!("{NOBODY}:{NOBODY}"),
                op.home.to_str().unwrap(),
            ],
        );
    }
    let env = op.env(&[(KEY_ENV, KEY)]);
    let d = Daemon::spawn(
        op.command(&["start", "--bind", "127.0.0.1:0"], &env),
        &op.home.join(".local/share/kaged"),
        &op.runtime_dir(),
        env.clone(),
    );
    load_project_at(&d, &project).await;
    provider.push(tool_reply(
        COMPLETIONS,
        &[Call::new(
            "call_who",
            "shell.bash",
            &json!({"command": "id -u > who.txt; echo written"}),
        )],
    ));
    provider.push(text_reply(COMPLETIONS, &["Done."]));
    let id = create_agent(&d, "mine", "primary", Some("Who are you?")).await;
    let mut pending = Vec::new();
    for _ in 0..200 {
        let v = d.api_get("/api/v1/approvals?state=pending").await;
        pending = v["approvals"].as_array().unwrap().clone();
        if !pending.is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(pending.len(), 1, "{pending:?}");
    assert!(
        !project.join("who.txt").exists(),
        "nothing runs before the decision"
    );
    let apr = pending[0]["id"].as_str().unwrap();
    let out = op
        .command(&["approvals", "approve", apr], &env)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let records = wait_conversation(&d, &id, |r| kind(r) == "turn_ended").await;
    let decided = records
        .iter()
        .find(|r| kind(r) == "approval_decided")
        .unwrap_or_else(|| panic!("{}", summarize(&records)));
    let operator = if current_uid() == 0 {
        "user:nobody".to_string()
    } else {
        d.api_get("/api/v1/whoami").await["id"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(decided["event"]["decided_by"], operator.as_str());
    let who = project.join("who.txt");
    assert_eq!(
        std::fs::read_to_string(&who).unwrap().trim(),
        op.uid.to_string(),
        "{}",
        summarize(&records)
    );
    assert_eq!(std::fs::metadata(&who).unwrap().uid(), op.uid);
    let (status, log) = d.stop();
    assert!(status.success(), "{log}");
}

/// As an unprivileged operator: a task outlives its daemon (SIGTERM) and a swap of the kaged
/// binary on disk (the holder keeps running the binary it started with, and says another
/// version: `KAGED_TEST_HOLDER_VERSION`, read by debug builds); the next daemon, from the new
/// binary, takes the run up, and its output continues in order with nothing lost.
#[tokio::test]
async fn an_unprivileged_operators_task_outlives_a_restart_and_a_binary_swap() {
    use reqwest::Method;
    use serde_json::json;
    let tmp = tempfile::tempdir().unwrap();
    let op = Operator::new(tmp.path());
    let marker = format!("kaged-held-nobody-{}", std::process::id());
    let project = op.home.join("project");
    std::fs::create_dir_all(project.join(".kaged")).unwrap();
    std::fs::write(
        project.join(".kaged/project.yaml"),
        format!("version: 1\nproject: mine\nprimary:\n  command: [sh]\ntasks:\n  steady: {{ command: [sh, -c, \"i=0; while :; do i=$((i+1)); echo {marker} $i; sleep 0.1; done\"] }}\n"),
    )
    .unwrap();
    if current_uid() == 0 {
        sh(
            "chown",
            &[
                "-R",
                &format!("{NOBODY}:{NOBODY}"),
                op.home.to_str().unwrap(),
            ],
        );
    }
    // A runtime directory of its own (the other tests as `nobody` share /tmp/kaged-65534).
    let xdg = tmp.path().join("xdg");
    std::fs::create_dir_all(&xdg).unwrap();
    sh("chmod", &["0700", xdg.to_str().unwrap()]);
    if current_uid() == 0 {
        sh(
            "chown",
            &[&format!("{NOBODY}:{NOBODY}"), xdg.to_str().unwrap()],
        );
    }
    let start = |extra: &[(&str, &str)]| {
        let mut extra = extra.to_vec();
        extra.push(("XDG_RUNTIME_DIR", xdg.to_str().unwrap()));
        let env = op.env(&extra);
        Daemon::spawn(
            op.command(&["start", "--bind", "127.0.0.1:0"], &env),
            &op.home.join(".local/share/kaged"),
            &xdg.join("kaged"),
            env.clone(),
        )
    };
    let d = start(&[("KAGED_TEST_HOLDER_VERSION", "kaged-before-the-swap")]).keeping_runs();
    crate::common::provider::load_project_at(&d, &project).await;
    let (status, body) = d
        .call(
            Method::POST,
            "/api/v1/projects/mine/sessions",
            Some(json!({"kind": "task", "name": "steady"})),
        )
        .await;
    assert!(status.is_success(), "{body}");
    let id = body["session"]["id"].as_str().unwrap().to_string();
    let lines_of = |text: &str| text.matches("\r\n").count();
    let path = format!("/api/v1/sessions/{id}/transcript");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while lines_of(&transcript_text(&d, &path).await) < 3 {
        assert!(
            std::time::Instant::now() < deadline,
            "the task printed nothing"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let (status, log) = d.stop();
    assert!(status.success(), "{log}");
    // The binary replaced on disk (a new file at the same path), as an upgrade does.
    let swapped = op.bin.with_extension("new");
    std::fs::copy(&op.bin, &swapped).unwrap();
    std::fs::rename(&swapped, &op.bin).unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;

    let d = start(&[]);
    let session = d.api_get(&format!("/api/v1/sessions/{id}")).await;
    assert_eq!(session["session"]["state"], "running", "{session}");
    let before = lines_of(&transcript_text(&d, &path).await);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while lines_of(&transcript_text(&d, &path).await) < before + 5 {
        assert!(std::time::Instant::now() < deadline, "the task stopped");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let text = transcript_text(&d, &path).await;
    let whole = &text[..text.rfind("\r\n").unwrap() + 2];
    for (i, line) in whole.split_terminator("\r\n").enumerate() {
        assert_eq!(line, format!("{marker} {}", i + 1), "line {}", i + 1);
    }
    let audit = d.api_get("/api/v1/audit?limit=100").await;
    let taken = audit["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["kind"] == "session.reattached" && e["detail"]["session"] == id.as_str())
        .unwrap_or_else(|| panic!("{audit}"))
        .clone();
    assert_eq!(
        taken["detail"]["holder"], "kaged-before-the-swap",
        "{taken}"
    );
    let holder = taken["detail"]["holder_pid"].as_u64().unwrap();
    let exe = std::fs::read_link(format!("/proc/{holder}/exe")).unwrap();
    assert!(
        exe.to_string_lossy().ends_with("(deleted)"),
        "the holder runs the binary it started with: {}",
        exe.display()
    );
    let status = std::fs::read_to_string(format!("/proc/{holder}/status")).unwrap();
    assert!(
        status
            .lines()
            .any(|l| l.starts_with("Uid:") && l.contains(&op.uid.to_string())),
        "{status}"
    );
    let (code, body) = d
        .call(Method::POST, &format!("/api/v1/sessions/{id}/kill"), None)
        .await;
    assert!(code.is_success(), "{body}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let s = d.api_get(&format!("/api/v1/sessions/{id}")).await;
        if s["session"]["state"] == "killed" {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{s}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// A session's transcript as text (fetched with the nonce).
async fn transcript_text(d: &Daemon, path: &str) -> String {
    let (_, body) = d.call(reqwest::Method::GET, path, None).await;
    body.as_str().unwrap_or_default().to_string()
}

/// PIDs of processes whose command line contains `marker`, in order.
fn processes_with(marker: &str) -> Vec<u32> {
    let mut pids: Vec<u32> = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let pid: u32 = e.file_name().to_str()?.parse().ok()?;
            let cmdline = std::fs::read(e.path().join("cmdline")).ok()?;
            cmdline
                .windows(marker.len())
                .any(|w| w == marker.as_bytes())
                .then_some(pid)
        })
        .collect();
    pids.sort_unstable();
    pids
}

/// A loopback HTTP server answering each request with 200 `ok` (bounded, test-owned).
pub(crate) fn loopback_http_server() -> u16 {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for mut s in listener.incoming().take(500).flatten() {
            let mut buf = [0u8; 4096];
            let _ = s.set_read_timeout(Some(std::time::Duration::from_secs(5)));
            let _ = s.read(&mut buf);
            let _ =
                s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok");
        }
    });
    port
}

/// As an unprivileged operator: a command agent whose cage has a network allowlist outlives a restart
/// of its daemon (SIGTERM): the next daemon serves its proxy again in the same directory, and
/// the same agent reaches the allowed server again, while another destination stays refused.
#[tokio::test]
async fn an_unprivileged_operators_allowlisted_agent_outlives_a_restart() {
    use reqwest::Method;
    use serde_json::json;
    let tmp = tempfile::tempdir().unwrap();
    let op = Operator::new(tmp.path());
    let marker = format!("kaged-egress-nobody-{}", std::process::id());
    let (allowed, refused) = (loopback_http_server(), loopback_http_server());
    let project = op.home.join("project");
    std::fs::create_dir_all(project.join(".kaged")).unwrap();
    // Every 0.2 s, one request to each server through the cage's proxy, numbered.
    std::fs::write(
        project.join("probe.py"),
        format!(
            r#"import sys, time, urllib.request as u
n = 0
while True:
    n += 1
    for p in ({allowed}, {refused}):
        try:
            u.urlopen(f'http://127.0.0.1:{{p}}/', timeout=5).read()
            print('ok', p, n, flush=True)
        except Exception as e:
            print('no', p, n, type(e).__name__, flush=True)
    time.sleep(0.2)
"#
        ),
    )
    .unwrap();
    std::fs::write(
        project.join(".kaged/project.yaml"),
        format!("version: 1\nproject: mine\nprimary:\n  command: [python3, probe.py, {marker}]\n  cage:\n    network:\n      allow: [\"127.0.0.1:{allowed}\"]\n"),
    )
    .unwrap();
    let xdg = tmp.path().join("xdg");
    std::fs::create_dir_all(&xdg).unwrap();
    sh("chmod", &["0700", xdg.to_str().unwrap()]);
    // A temporary directory of its own, where the run's egress directory is made.
    let tmpdir = tmp.path().join("tmp");
    std::fs::create_dir_all(&tmpdir).unwrap();
    if current_uid() == 0 {
        for dir in [&op.home, &xdg, &tmpdir] {
            sh(
                "chown",
                &["-R", &format!("{NOBODY}:{NOBODY}"), dir.to_str().unwrap()],
            );
        }
    }
    let start = || {
        let env = op.env(&[
            ("XDG_RUNTIME_DIR", xdg.to_str().unwrap()),
            ("TMPDIR", tmpdir.to_str().unwrap()),
            ("KAGED_SESSIONS_ON_DAEMON_STOP", "keep"),
        ]);
        Daemon::spawn(
            op.command(&["start", "--bind", "127.0.0.1:0"], &env),
            &op.home.join(".local/share/kaged"),
            &xdg.join("kaged"),
            env.clone(),
        )
    };
    let d = start().keeping_runs();
    crate::common::provider::load_project_at(&d, &project).await;
    let (status, body) = d
        .call(
            Method::POST,
            "/api/v1/projects/mine/sessions",
            Some(json!({"kind": "agent", "name": "primary"})),
        )
        .await;
    assert!(status.is_success(), "{body}");
    let id = body["session"]["id"].as_str().unwrap().to_string();
    let path = format!("/api/v1/sessions/{id}/transcript");
    let reached = |text: &str| text.contains(&format!("ok {allowed} "));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let mut text = transcript_text(&d, &path).await;
    while !(reached(&text) && text.contains(&format!("no {refused} "))) {
        assert!(std::time::Instant::now() < deadline, "{text}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        text = transcript_text(&d, &path).await;
    }
    let pids = processes_with(&marker);
    assert!(!pids.is_empty(), "the run's processes");
    let (status, log) = d.stop();
    assert!(status.success(), "{log}");
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;

    let d = start();
    let session = d.api_get(&format!("/api/v1/sessions/{id}")).await;
    assert_eq!(
        session["session"]["state"],
        "running",
        "{session}\n{}",
        d.stderr_text()
    );
    let restarted_at = transcript_text(&d, &path).await.len();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let mut text = transcript_text(&d, &path).await;
    while !(reached(&text[restarted_at..])
        && text[restarted_at..].contains(&format!("no {refused} ")))
    {
        assert!(
            std::time::Instant::now() < deadline,
            "not reached after the restart: {}",
            &text[restarted_at..]
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        text = transcript_text(&d, &path).await;
    }
    assert!(
        !text[restarted_at..].contains(&format!("ok {refused} ")),
        "{text}"
    );
    assert_eq!(processes_with(&marker), pids, "the same processes");
    let audit = d.api_get("/api/v1/audit?limit=200").await;
    let taken = audit["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["kind"] == "session.reattached" && e["detail"]["session"] == id.as_str())
        .unwrap_or_else(|| panic!("{audit}"))
        .clone();
    assert_eq!(taken["detail"]["egress"], "resumed", "{taken}");
    let (code, body) = d
        .call(Method::POST, &format!("/api/v1/sessions/{id}/kill"), None)
        .await;
    assert!(code.is_success(), "{body}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let s = d.api_get(&format!("/api/v1/sessions/{id}")).await;
        if s["session"]["state"] == "killed" {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{s}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

#[test]
fn an_ordinary_user_installs_a_plugin_into_their_own_data_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let op = Operator::new(tmp.path());
    let src = tmp.path().join("notes-src");
    std::fs::create_dir_all(&src).unwrap();
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/plugins/python-notes");
    for file in ["kaged-plugin.yaml", "plugin.py"] {
        std::fs::copy(example.join(file), src.join(file)).unwrap();
    }
    if current_uid() == 0 {
        sh(
            "chown",
            &["-R", &format!("{NOBODY}:{NOBODY}"), src.to_str().unwrap()],
        );
    }
    let out = op.run(&["plugin", "install", src.to_str().unwrap(), "--yes"], &[]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // `installed notes version 0.1.0 in DIR/notes`
    let line = stdout
        .lines()
        .find(|l| l.starts_with("installed notes"))
        .unwrap();
    let installed = PathBuf::from(line.rsplit(" in ").next().unwrap());
    assert!(installed.starts_with(&op.home), "{}", installed.display());
    assert!(
        installed.ends_with("plugins/notes"),
        "{}",
        installed.display()
    );
    for rel in ["", "plugin.py", "kaged-plugin.yaml"] {
        let meta = std::fs::metadata(installed.join(rel)).unwrap();
        assert_eq!(meta.uid(), op.uid, "{rel}");
    }
    assert_eq!(mode_of(&installed) & 0o7777, 0o700);
}

/// An ordinary user's own daemon (`start --mode user`, their HOME) runs the plugins they
/// installed with the CLI as themselves, each in a cage of its own (another mount namespace),
/// the example reaching `running` and a hostile one unable to change its installed files
/// (which are the user's: only the cage keeps them unchanged); `disable` ends the process. A
/// plugin whose files the user cannot read fails naming the path, the user and the fix.
#[tokio::test]
async fn an_ordinary_users_plugins_installed_with_the_cli_run_in_their_cages() {
    use crate::plugin_cli::{plugin_process, self_writing_plugin, tree_of};
    use std::time::{Duration, Instant};
    let tmp = tempfile::tempdir().unwrap();
    let op = Operator::new(tmp.path());
    // Copies the user can read (the checkout may sit where they cannot).
    let notes = tmp.path().join("notes-src");
    std::fs::create_dir_all(&notes).unwrap();
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/plugins/python-notes");
    for file in ["kaged-plugin.yaml", "plugin.py"] {
        std::fs::copy(example.join(file), notes.join(file)).unwrap();
    }
    let selfwrite = self_writing_plugin(tmp.path());
    let xdg = tmp.path().join("xdg");
    std::fs::create_dir_all(&xdg).unwrap();
    sh("chmod", &["0700", xdg.to_str().unwrap()]);
    if current_uid() == 0 {
        for dir in [&notes, &selfwrite, &xdg] {
            sh(
                "chown",
                &["-R", &format!("{NOBODY}:{NOBODY}"), dir.to_str().unwrap()],
            );
        }
    }
    let env = op.env(&[("XDG_RUNTIME_DIR", xdg.to_str().unwrap())]);
    let kaged = |args: &[&str]| {
        let out = op.command(args, &env).output().unwrap();
        assert!(
            out.status.success(),
            "kaged {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    for src in [&notes, &selfwrite] {
        kaged(&["plugin", "install", src.to_str().unwrap(), "--yes"]);
    }
    let plugins = op.home.join(".local/share/kaged/plugins");
    let before = tree_of(&plugins.join("selfwrite"));

    let d = Daemon::spawn(
        op.command(&["start", "--mode", "user", "--bind", "127.0.0.1:0"], &env),
        &op.home.join(".local/share/kaged"),
        &xdg.join("kaged"),
        env.clone(),
    )
    .failing_on_panics();
    let report = |name: &str| -> serde_json::Value {
        let v: serde_json::Value =
            serde_json::from_str(&kaged(&["plugin", "list", "--json"])).unwrap();
        assert_eq!(v["dir"], plugins.to_str().unwrap(), "{v}");
        v["plugins"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .unwrap_or_else(|| panic!("{v}"))
            .clone()
    };
    let wait = async |name: &str, done: &dyn Fn(&serde_json::Value) -> bool| {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let p = report(name);
            if done(&p) {
                return p;
            }
            assert!(Instant::now() < deadline, "{p}\n{}", d.stderr_text());
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    for name in ["notes", "selfwrite"] {
        let said = kaged(&["plugin", "enable", name]);
        assert!(
            said == format!("{name}: starting\n") || said == format!("{name}: running\n"),
            "{said}"
        );
    }
    let mut pids = Vec::new();
    for name in ["notes", "selfwrite"] {
        let p = wait(name, &|p| {
            p["state"] == "running" || !p["last_error"].is_null()
        })
        .await;
        assert_eq!(p["state"], "running", "{p}\n{}", d.stderr_text());
        let pid = p["pid"].as_u64().unwrap();
        let (_, uid, caged) = plugin_process(pid, "plugin.py");
        assert_eq!(uid, op.uid, "{name} runs as the operator");
        assert!(caged, "{name} runs in a mount namespace of its own");
        pids.push(pid);
    }
    assert_eq!(
        tree_of(&plugins.join("selfwrite")),
        before,
        "the plugin could not change its installed files"
    );
    let said = Instant::now() + Duration::from_secs(10);
    while !d.stderr_text().contains("remove the manifest refused") {
        assert!(Instant::now() < said, "{}", d.stderr_text());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(d.stderr_text().contains("create a file refused"));

    let said = kaged(&["plugin", "disable", "notes"]);
    assert!(said.starts_with("notes: stopped ("), "{said}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while Path::new(&format!("/proc/{}", pids[0])).exists() {
        assert!(Instant::now() < deadline, "the plugin's process still runs");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let p = report("notes");
    assert_eq!(
        (p["state"].as_str(), p["pid"].as_u64()),
        (Some("stopped"), None),
        "{p}"
    );

    // Files the user cannot read: enabling is refused with the path, the user and the fix
    // (enable reads the plugin's directory again, as kaged's user, who is its cage's).
    let installed = plugins.join("notes");
    sh("chmod", &["0000", installed.to_str().unwrap()]);
    let out = op
        .command(&["plugin", "enable", "notes"], &env)
        .output()
        .unwrap();
    sh("chmod", &["0700", installed.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let why = String::from_utf8_lossy(&out.stderr);
    assert!(
        why.contains(&format!(
            "the plugin `notes` cannot start: its cage runs as kaged's own user, uid {}",
            op.uid
        )) && why.contains(&format!(
            "cannot read {}/kaged-plugin.yaml",
            installed.display()
        )),
        "{why}"
    );
    assert!(why.contains("Permission denied"), "{why}");
    assert!(
        why.contains(&format!(
            "fix: give the directory to that user (chown -R {}",
            op.uid
        )),
        "{why}"
    );
    assert_eq!(report("notes")["state"], "invalid");
    kaged(&["plugin", "disable", "notes"]);
    kaged(&["plugin", "disable", "selfwrite"]);
    let (status, log) = d.stop();
    assert!(status.success(), "{log}");
}

/// As an ordinary user: a plugin declaring one destination (`net:127.0.0.1:PORT`) reaches it
/// through its egress proxy, and not another; the proxy's decisions are audited.
#[tokio::test]
async fn an_ordinary_users_plugin_reaches_only_the_destination_it_declared() {
    use std::time::{Duration, Instant};
    let tmp = tempfile::tempdir().unwrap();
    let op = Operator::new(tmp.path());
    let (allowed, refused) = (loopback_http_server(), loopback_http_server());
    let src = crate::plugin_cli::fetching_plugin(tmp.path(), allowed, refused);
    let xdg = tmp.path().join("xdg");
    std::fs::create_dir_all(&xdg).unwrap();
    sh("chmod", &["0700", xdg.to_str().unwrap()]);
    if current_uid() == 0 {
        for dir in [&src, &xdg] {
            sh(
                "chown",
                &["-R", &format!("{NOBODY}:{NOBODY}"), dir.to_str().unwrap()],
            );
        }
    }
    let env = op.env(&[
        ("XDG_RUNTIME_DIR", xdg.to_str().unwrap()),
        ("KAGED_PLUGINS_ENABLED", "fetch"),
    ]);
    let out = op
        .command(&["plugin", "install", src.to_str().unwrap(), "--yes"], &env)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(&format!("connect to 127.0.0.1:{allowed}")),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let d = Daemon::spawn(
        op.command(&["start", "--mode", "user", "--bind", "127.0.0.1:0"], &env),
        &op.home.join(".local/share/kaged"),
        &xdg.join("kaged"),
        env.clone(),
    )
    .failing_on_panics();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = op
            .command(&["plugin", "list", "--json"], &env)
            .output()
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let p = &v["plugins"][0];
        if p["state"] == "running" {
            break;
        }
        assert!(
            Instant::now() < deadline && p["last_error"].is_null(),
            "{p}\n{}",
            d.stderr_text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Each decision of its proxy is audited (a moment later).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let audit = d.api_get("/api/v1/audit?limit=100").await;
        let decisions: Vec<(String, String)> = audit["events"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["kind"] == "plugin.egress")
            .map(|e| {
                let decision = e["detail"]["decision"].as_str().unwrap_or_default();
                (e["detail"]["port"].to_string(), decision.to_string())
            })
            .collect();
        if decisions.contains(&(allowed.to_string(), "allowed".into()))
            && decisions.contains(&(refused.to_string(), "refused".into()))
        {
            break;
        }
        assert!(Instant::now() < deadline, "{decisions:?}\n{audit}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (status, log) = d.stop();
    assert!(status.success(), "{log}");
}
