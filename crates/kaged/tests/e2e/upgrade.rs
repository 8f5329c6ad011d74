//! Upgrades: the kaged binary is replaced on disk while a daemon runs. New caged runs must
//! still start (the daemon binds its own verified copy of itself, not the path on disk), and
//! the copy is gone once the daemon stops.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::*;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const PROJECT: &str = r#"version: 1
project: upgraded
primary:
  command: [sh]
tasks:
  hello: { command: [sh, -c, "echo hello from the cage"] }
"#;

/// Start the `hello` task and wait for its end: `(session, transcript)`.
async fn hello(d: &Daemon) -> (Value, String) {
    let (status, body) = d
        .call(
            Method::POST,
            "/api/v1/projects/upgraded/sessions",
            Some(json!({"kind": "task", "name": "hello", "rows": 24, "cols": 80})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let id = body["session"]["id"].as_str().unwrap().to_string();
    let started = Instant::now();
    let session = loop {
        let (_, v) = d
            .call(Method::GET, &format!("/api/v1/sessions/{id}"), None)
            .await;
        if v["session"]["ended_at_ms"].is_i64() {
            break v["session"].clone();
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the run never ended: {v}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let text = plain_client()
        .get(format!("{}/api/v1/sessions/{id}/transcript", d.base))
        .header("x-kaged-auth-nonce", d.nonce())
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    (session, text)
}

fn assert_ran(session: &Value, transcript: &str, what: &str) {
    assert!(
        session["state"] == "exited"
            && session["exit_code"] == 0
            && transcript.contains("hello from the cage"),
        "{what}: the caged run failed: {session} transcript {transcript:?}"
    );
}

/// The helper copies (`kaged-helper-*`) in `tmpdir`.
fn helper_copies(tmpdir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(tmpdir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("kaged-helper-"))
        })
        .collect()
}

#[tokio::test]
async fn caged_runs_still_start_after_the_binary_is_replaced_on_disk() {
    let tmp = tempfile::tempdir().unwrap();
    // A cage's user (nobody, when the suite is root) walks to the project through here.
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let bin = tmp.path().join("bin/kaged");
    std::fs::create_dir_all(bin.parent().unwrap()).unwrap();
    std::fs::copy(kaged_bin(), &bin).unwrap();
    let tmpdir = tmp.path().join("tmp");
    std::fs::create_dir_all(&tmpdir).unwrap();
    std::fs::set_permissions(&tmpdir, std::fs::Permissions::from_mode(0o1777)).unwrap();
    let project = tmp.path().join("project");
    std::fs::create_dir_all(project.join(".kaged")).unwrap();
    std::fs::write(project.join(".kaged/project.yaml"), PROJECT).unwrap();
    cage_writable(&project);
    let home = tmp.path().join("home");

    let env: Vec<(String, String)> = vec![
        ("KAGED_HOME".into(), home.to_str().unwrap().into()),
        ("TMPDIR".into(), tmpdir.to_str().unwrap().into()),
    ];
    let mut cmd = Command::new(&bin);
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .envs(env.iter().map(|(k, v)| (k, v)))
        .args(["start", "--bind", "127.0.0.1:0"])
        .stdin(Stdio::null());
    let d = Daemon::spawn(cmd, &home, &home.join("run"), env);
    let (status, body) = d
        .call(
            Method::POST,
            "/api/v1/projects/load",
            Some(json!({"path": project})),
        )
        .await;
    assert!(status.is_success(), "load: {status} {body}");
    let (session, transcript) = hello(&d).await;
    assert_ran(&session, &transcript, "before the upgrade");

    // The upgrade, part one: the binary is deleted.
    std::fs::remove_file(&bin).unwrap();
    let (session, transcript) = hello(&d).await;
    assert_ran(&session, &transcript, "with the binary deleted");

    // Part two: a new binary is renamed into its place (as a package manager does), one
    // that is not this kaged at all.
    let next = tmp.path().join("bin/kaged.new");
    std::fs::write(
        &next,
        "#!/bin/sh\necho 'not the running kaged' >&2\nexit 3\n",
    )
    .unwrap();
    std::fs::set_permissions(&next, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::rename(&next, &bin).unwrap();
    let (session, transcript) = hello(&d).await;
    assert_ran(&session, &transcript, "with another binary in its place");

    let copies = helper_copies(&tmpdir);
    assert_eq!(copies.len(), 1, "{copies:?}");
    let (status, stderr) = d.stop();
    assert!(status.success(), "{stderr}");
    let copies = helper_copies(&tmpdir);
    assert!(copies.is_empty(), "the daemon left its copy: {copies:?}");
}
