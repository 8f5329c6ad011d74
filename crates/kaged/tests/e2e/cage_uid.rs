//! Cages never run as UID 0: a kaged running as root (as CI runs the suite) starts each cage as
//! the project root's owner, or as `[sandbox] cage_user` when root owns the project. Real
//! bubblewrap, the real binary; as an ordinary user these tests have nothing to show and say so.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use crate::common::*;
use reqwest::{Method, StatusCode};
use serde_json::json;

const PROJECT: &str = "\
version: 1
project: uidtest
primary:
  command: [sh, -c, \"touch /workspace/by-session; sleep 300\"]
";

/// A project under `parent`, owned by root, that anyone may write (so that the cage user can
/// create files in it: what matters is who they belong to).
fn project(parent: &Path) -> PathBuf {
    let p = parent.join("project");
    std::fs::create_dir_all(p.join(".kaged")).unwrap();
    std::fs::create_dir_all(p.join(".git")).unwrap();
    std::fs::write(p.join(".kaged/project.yaml"), PROJECT).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o777)).unwrap();
    p
}

fn cage_run(project: &Path, env: &[(&str, &str)], script: &str) -> Output {
    kaged_cmd(env)
        .args(["cage", "run", project.to_str().unwrap(), "--"])
        .args(["sh", "-c", script])
        .output()
        .unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "status {:?}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn owner(path: &Path) -> (u32, u32) {
    let m = std::fs::metadata(path).unwrap();
    (m.uid(), m.gid())
}

fn skip_unless_root() -> bool {
    if running_as_root() {
        return false;
    }
    eprintln!("skipped: only a kaged running as root switches its cages to another user");
    true
}

#[test]
fn a_root_owned_project_runs_as_the_cage_user_never_root() {
    if skip_unless_root() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let p = project(tmp.path());
    assert!(
        std::fs::read_to_string("/etc/shadow").is_ok(),
        "the host's /etc/shadow is readable by root here"
    );

    // Root's secrets stay root's: the system directories are bound in, but not as root.
    let out = cage_run(&p, &[], "cat /etc/shadow");
    assert!(
        !out.status.success(),
        "/etc/shadow was readable inside the cage: {}",
        text(&out)
    );
    let out = cage_run(&p, &[], "touch /workspace/made && id -u");
    assert!(out.status.success(), "{}", text(&out));
    let inside: u32 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    assert_ne!(inside, 0, "{}", text(&out));
    // What the cage made belongs, on the host, to the cage user: `nobody` by default.
    assert_eq!(
        owner(&p.join("made")),
        (CAGE_UID, CAGE_UID),
        "{}",
        text(&out)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("the cage runs as uid 65534 (nobody)")
            && stderr.contains("[sandbox] cage_user"),
        "{stderr}"
    );

    // The cage user is configurable, by name or number (here one with no passwd entry).
    let out = cage_run(
        &p,
        &[("KAGED_SANDBOX_CAGE_USER", "4242")],
        "touch /workspace/made-by-4242",
    );
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(owner(&p.join("made-by-4242")), (4242, 4242));

    // Never root, however it is named: a configuration error with the fix, nothing runs.
    for root in ["root", "0"] {
        let out = cage_run(
            &p,
            &[("KAGED_SANDBOX_CAGE_USER", root)],
            "touch /workspace/as-root",
        );
        assert_eq!(out.status.code(), Some(2), "{}", text(&out));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("KAGED_SANDBOX_CAGE_USER") && stderr.contains("never run as UID 0"),
            "{stderr}"
        );
        assert!(!p.join("as-root").exists());
    }
    // A cage user that does not exist refuses the run with the fix.
    let out = cage_run(
        &p,
        &[("KAGED_SANDBOX_CAGE_USER", "kaged-no-such-user")],
        "touch /workspace/as-nobody-known",
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("useradd --system"),
        "{}",
        text(&out)
    );
    assert!(!p.join("as-nobody-known").exists());
}

#[test]
fn a_project_owned_by_a_user_runs_as_its_owner() {
    if skip_unless_root() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let p = project(tmp.path());
    // An ordinary owner (no passwd entry: the directory's group is the cage's group).
    std::process::Command::new("chown")
        .args(["-R", "4243:4244"])
        .arg(&p)
        .status()
        .unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = cage_run(&p, &[], "cat /etc/shadow");
    assert!(!out.status.success(), "{}", text(&out));
    let out = cage_run(&p, &[], "touch /workspace/mine");
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(owner(&p.join("mine")), (4243, 4244));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("the cage runs as uid 4243, gid 4244, the owner of"),
        "{}",
        text(&out)
    );
    // The test helper does the same for the cage user: its projects run as their owner.
    let q = tmp.path().join("helped");
    std::fs::create_dir_all(q.join(".kaged")).unwrap();
    std::fs::write(q.join(".kaged/project.yaml"), PROJECT).unwrap();
    cage_writable(&q);
    let out = cage_run(&q, &[], "touch /workspace/helped");
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(owner(&q.join("helped")), (CAGE_UID, CAGE_UID));
}

/// A session of the daemon on a root-owned project: its cage runs as the cage user (said in
/// the audit trail), and the kill path still ends every process of a run that is not root's.
#[tokio::test]
async fn a_root_daemons_session_runs_as_the_cage_user_and_is_still_killed() {
    if skip_unless_root() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let p = project(tmp.path());
    let d = Daemon::start(&tmp.path().join("home"));
    let (status, body) = d
        .call(
            Method::POST,
            "/api/v1/projects/load",
            Some(json!({"path": p})),
        )
        .await;
    assert!(status.is_success(), "{body}");
    let (status, body) = d
        .call(
            Method::POST,
            "/api/v1/projects/uidtest/sessions",
            Some(json!({"kind": "agent", "name": "primary"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let id = body["session"]["id"].as_str().unwrap().to_string();
    let made = p.join("by-session");
    let start = Instant::now();
    while !made.exists() {
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "the run never wrote its file"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(owner(&made), (CAGE_UID, CAGE_UID));
    let (_, session) = d
        .call(Method::GET, &format!("/api/v1/sessions/{id}"), None)
        .await;
    let pid = session["session"]["pid"]
        .as_u64()
        .or_else(|| {
            session["transitions"]
                .as_array()?
                .iter()
                .find_map(|t| t["detail"]["pid"].as_u64())
        })
        .unwrap();
    // Every process of the run (bwrap's two and the command) belongs to the cage user.
    // The project's whole `sh -c` script: unique to this test (another test's `sleep 300` may
    // run in the same process tree now that the suite is one binary).
    let marker = "touch /workspace/by-session; sleep 300";
    let run_pids: Vec<u32> = std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains(marker))
        })
        .collect();
    assert!(!run_pids.is_empty());
    for pid in run_pids.iter().copied().chain([pid as u32]) {
        let uid = std::fs::read_to_string(format!("/proc/{pid}/status"))
            .unwrap()
            .lines()
            .find_map(|l| {
                l.strip_prefix("Uid:")
                    .map(|u| u.split_whitespace().collect::<Vec<_>>().join(" "))
            })
            .unwrap();
        assert_eq!(uid, "65534 65534 65534 65534", "process {pid}");
    }
    let (status, _) = d
        .call(Method::POST, &format!("/api/v1/sessions/{id}/kill"), None)
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let start = Instant::now();
    loop {
        let (_, s) = d
            .call(Method::GET, &format!("/api/v1/sessions/{id}"), None)
            .await;
        if s["session"]["ended_at_ms"].is_number() {
            assert_eq!(s["session"]["state"], "killed", "{s}");
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "never ended: {s}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for pid in run_pids {
        let gone = |pid: u32| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .map_or(true, |s| s.contains(") Z "))
        };
        let start = Instant::now();
        while !gone(pid) {
            assert!(
                start.elapsed() < Duration::from_secs(5),
                "process {pid} survived the kill"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    let audit = d.api_get("/api/v1/audit?limit=200").await;
    let started = audit["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["kind"] == "session.start" && e["detail"]["session"] == id.as_str())
        .unwrap_or_else(|| panic!("no session.start in {audit}"))
        .clone();
    assert_eq!(
        started["detail"]["run_as"],
        json!({"uid": CAGE_UID, "gid": CAGE_UID, "because": "cage_user", "workspace_writable": true}),
        "{started}"
    );
}
