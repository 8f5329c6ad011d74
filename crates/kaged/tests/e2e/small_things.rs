//! Small things a new user met (issue 12, items 5 and 11), through the real binary: a run in a
//! project whose directory was deleted is refused at start with the reason and the fix (and
//! `kaged project unload` is that fix); `kaged project list` counts problems in good English; a
//! database file that is not SQLite stops the start naming the file and what to do; the session
//! table ends with a newline.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use crate::common::*;

fn stdout_of(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr_of(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

const PROJECT: &str = "version: 1\nproject: demo\nprimary:\n  command: [sh, -c, \"echo hi\"]\ntasks:\n  hello:\n    command: [sh, -c, \"echo hello\"]\n";

fn project(base: &Path) -> PathBuf {
    let root = base.join("demo");
    std::fs::create_dir_all(root.join(".kaged")).unwrap();
    std::fs::write(root.join(".kaged/project.yaml"), PROJECT).unwrap();
    cage_writable(&root);
    std::fs::canonicalize(root).unwrap()
}

fn load(d: &Daemon, root: &Path) {
    let out = d.cli(&["project", "load", root.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr_of(&out));
}

#[tokio::test]
async fn a_run_in_a_deleted_project_directory_is_refused_at_start_with_the_fix() {
    let tmp = tempfile::tempdir().unwrap();
    let d = Daemon::start(&tmp.path().join("home"));
    let root = project(tmp.path());
    load(&d, &root);
    std::fs::remove_dir_all(&root).unwrap();

    let out = d.cli(&["session", "start", "demo", "--agent", "primary", "--detach"]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout_of(&out));
    assert!(out.stdout.is_empty(), "no session id: {}", stdout_of(&out));
    let err = stderr_of(&out);
    for needle in [
        "409 Conflict project_missing",
        &format!("{}, no longer exists", root.display()),
        "kaged project unload demo",
    ] {
        assert!(err.contains(needle), "{needle:?} in {err}");
    }
    // The same through the API: a stable code and the path; no session was created.
    let r = plain_client()
        .post(format!("{}/api/v1/projects/demo/sessions", d.base))
        .header("x-kaged-auth-nonce", d.nonce())
        .json(&serde_json::json!({"kind": "task", "name": "hello"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "project_missing");
    assert_eq!(body["error"]["details"]["path"], root.to_str().unwrap());
    let sessions = d.api_get("/api/v1/sessions").await;
    assert_eq!(sessions["sessions"].as_array().unwrap().len(), 0);

    // A directory replaced by a file is refused the same way.
    std::fs::write(&root, "not a directory").unwrap();
    let out = d.cli(&["session", "start", "demo", "--terminal", "--detach"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr_of(&out).contains("is no longer a directory"),
        "{}",
        stderr_of(&out)
    );

    // The fix the message names.
    let out = d.cli(&["project", "unload", "demo"]);
    assert!(out.status.success(), "{}", stderr_of(&out));
    assert!(stdout_of(&out).contains("unloaded project demo"));
    let out = d.cli(&["project", "list"]);
    assert!(!stdout_of(&out).contains("demo"), "{}", stdout_of(&out));
    let out = d.cli(&["project", "unload", "demo"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr_of(&out).contains("404"), "{}", stderr_of(&out));
}

#[test]
fn project_list_counts_one_problem_in_the_singular() {
    let tmp = tempfile::tempdir().unwrap();
    let d = Daemon::start(&tmp.path().join("home"));
    let root = project(tmp.path());
    load(&d, &root);
    // One unknown key: one problem.
    std::fs::write(
        root.join(".kaged/project.yaml"),
        PROJECT.replace("project: demo\n", "project: demo\nbogus: 1\n"),
    )
    .unwrap();
    let _ = d.cli(&["project", "reload", "demo"]);
    let deadline = Instant::now() + Duration::from_secs(10);
    let row = loop {
        let out = d.cli(&["project", "list"]);
        let list = stdout_of(&out);
        let row = list
            .lines()
            .find(|l| l.starts_with("demo"))
            .unwrap_or_default()
            .to_string();
        if !row.contains("valid") || Instant::now() > deadline {
            break row;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(row.contains("1 problem "), "{row}");
    assert!(!row.contains("problems"), "{row}");
    // Two problems: plural.
    std::fs::write(
        root.join(".kaged/project.yaml"),
        PROJECT.replace("project: demo\n", "project: demo\nbogus: 1\nmore: 2\n"),
    )
    .unwrap();
    let _ = d.cli(&["project", "reload", "demo"]);
    let out = d.cli(&["project", "list"]);
    assert!(
        stdout_of(&out).contains("2 problems"),
        "{}",
        stdout_of(&out)
    );
}

#[test]
fn a_database_that_is_not_sqlite_stops_the_start_naming_the_file_and_the_fix() {
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("kaged.db");
    let text = "# notes, not a database\n".repeat(40);
    std::fs::write(&db, &text).unwrap();
    let out = kaged_cmd(&[("KAGED_HOME", tmp.path().to_str().unwrap())])
        .args(["start", "--bind", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = stderr_of(&out);
    for needle in [
        &format!("{} is not a usable SQLite database", db.display()),
        "file is not a database",
        "Move it aside",
        "restore it from a backup",
        "[storage] url",
    ] {
        assert!(err.contains(needle), "{needle:?} in {err}");
    }
    assert!(
        !err.contains("READY") && !err.contains("launch URL"),
        "{err}"
    );
    assert_eq!(
        std::fs::read_to_string(&db).unwrap(),
        text,
        "left untouched"
    );
}

#[test]
fn the_session_table_ends_with_a_newline() {
    let tmp = tempfile::tempdir().unwrap();
    let d = Daemon::start_with(
        &tmp.path().join("home"),
        &["--bind", "127.0.0.1:0", "--no-sandbox"],
        &[],
    );
    // Empty: the header alone, as one line.
    let out = d.cli(&["session", "list"]);
    assert!(out.status.success(), "{}", stderr_of(&out));
    let text = stdout_of(&out);
    assert!(
        text.starts_with("ID ") && text.ends_with("BY\n"),
        "{text:?}"
    );
    assert_eq!(text.matches('\n').count(), 1, "{text:?}");

    let root = project(tmp.path());
    load(&d, &root);
    let out = d.cli(&["session", "start", "demo", "--task", "hello", "--detach"]);
    assert!(out.status.success(), "{}", stderr_of(&out));
    let id = stdout_of(&out).trim().to_string();
    let deadline = Instant::now() + Duration::from_secs(20);
    let text = loop {
        let out = d.cli(&["session", "list"]);
        let text = stdout_of(&out);
        if text.contains("exit 0") || Instant::now() > deadline {
            break text;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(text.ends_with('\n'), "{text:?}");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text:?}");
    assert!(
        lines[1].starts_with(&id) && lines[1].contains("exit 0"),
        "{text:?}"
    );
    assert_eq!(text.matches('\n').count(), 2, "{text:?}");
}
