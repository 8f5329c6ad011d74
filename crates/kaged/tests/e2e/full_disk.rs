//! A full data directory: kaged's home is a small tmpfs the test fills to ENOSPC while a task
//! runs. The task's end cannot be stored: it is held, the daemon reports the trouble
//! (`/readyz` 503, `kaged status`, `GET /api/v1/status`), refuses new starts with 507
//! `storage_full` naming the directory, and stores the held end (exited 0) as soon as space
//! is freed, without a restart. Needs root (to mount); CI runs the suite as root.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::*;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const PATIENCE: Duration = Duration::from_secs(15);

const PROJECT: &str = r#"version: 1
project: full
primary:
  command: [sh]
tasks:
  late: { command: [sh, -c, "echo before-the-fill; sleep 4; echo after-the-fill; exit 0"] }
  hello: { command: [sh, -c, "echo hello from a full disk"] }
"#;

/// A tmpfs mounted for the test, unmounted (lazily, whatever holds it) when dropped.
struct Mount(PathBuf);

impl Mount {
    fn new(dir: &Path, size: &str) -> Mount {
        std::fs::create_dir_all(dir).unwrap();
        let status = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(dir)
            .status()
            .expect("run mount");
        assert!(status.success(), "mount tmpfs on {}", dir.display());
        Mount(dir.to_path_buf())
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

async fn start_task(d: &Daemon, name: &str) -> (StatusCode, Value) {
    d.call(
        Method::POST,
        "/api/v1/projects/full/sessions",
        Some(json!({"kind": "task", "name": name})),
    )
    .await
}

async fn readyz(d: &Daemon) -> (StatusCode, Value) {
    let r = plain_client()
        .get(format!("{}/readyz", d.base))
        .send()
        .await
        .unwrap();
    let status = r.status();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// Poll `what` until it returns `Some`, at most `PATIENCE`.
async fn wait_for<T, F, Fut>(what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let start = Instant::now();
    loop {
        match probe().await {
            Ok(v) => return v,
            Err(last) => assert!(
                start.elapsed() < PATIENCE,
                "{what} did not happen within {PATIENCE:?}; last seen: {last}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The stored row, read from the database file itself (not through the daemon).
fn stored_row(db: &Path, id: &str) -> (String, Option<i64>, Option<i64>) {
    let conn =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap();
    conn.query_row(
        "SELECT state, exit_code, ended_at_ms FROM sessions WHERE id = ?1",
        [id],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
    )
    .unwrap()
}

/// Write until the file system says ENOSPC.
fn fill(path: &Path) {
    let mut f = std::fs::File::create(path).unwrap();
    let chunk = vec![0x5au8; 64 * 1024];
    loop {
        if let Err(e) = f.write_all(&chunk).and_then(|()| f.sync_all()) {
            assert_eq!(e.raw_os_error(), Some(libc_enospc()), "filling: {e}");
            break;
        }
    }
    // Smaller pieces take what the big ones left.
    let mut small = [0x5au8; 512];
    loop {
        if let Err(e) = f.write_all(&small).and_then(|()| f.sync_all()) {
            assert_eq!(e.raw_os_error(), Some(libc_enospc()), "filling: {e}");
            break;
        }
        small[0] = small[0].wrapping_add(1);
    }
}

fn libc_enospc() -> i32 {
    28 // ENOSPC on Linux
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_data_directory_holds_state_changes_refuses_work_and_recovers_without_restart() {
    if !running_as_root() {
        eprintln!(
            "\n\n*** SKIPPED full_disk: mounting a tmpfs needs root (CI runs the suite as root) ***\n"
        );
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let project = tmp.path().join("full");
    std::fs::create_dir_all(project.join(".kaged")).unwrap();
    std::fs::write(project.join(".kaged/project.yaml"), PROJECT).unwrap();
    let home = tmp.path().join("home");
    // Declared before the daemon: dropped (unmounted) after it stopped.
    let _mount = Mount::new(&home, "4m");
    let d = Daemon::start(&home);
    let (status, body) = d
        .call(
            Method::POST,
            "/api/v1/projects/load",
            Some(json!({"path": project})),
        )
        .await;
    assert!(status.is_success(), "load: {status} {body}");
    let (status, body) = readyz(&d).await;
    assert_eq!(status, StatusCode::OK, "{body}");

    // A task that ends after the disk is full.
    let (status, body) = start_task(&d, "late").await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let late = body["session"]["id"].as_str().unwrap().to_string();
    wait_for("the late task running", || async {
        let (_, v) = d
            .call(Method::GET, &format!("/api/v1/sessions/{late}"), None)
            .await;
        let out = v["session"]["output_bytes"].as_u64().unwrap_or(0);
        if v["session"]["state"] == "running" && out > 0 {
            Ok(())
        } else {
            Err(v.to_string())
        }
    })
    .await;

    let filler = home.join("filler");
    fill(&filler);

    // A new start is refused with 507 storage_full, naming the data directory.
    let (status, body) = start_task(&d, "hello").await;
    assert_eq!(
        status,
        StatusCode::INSUFFICIENT_STORAGE,
        "a start on a full disk: {body}"
    );
    assert_eq!(body["error"]["code"], "storage_full", "{body}");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(home.to_str().unwrap()) && message.contains("free"),
        "the refusal names the data directory and the fix: {message}"
    );

    // The task ends while the disk is full: the API shows the end from memory.
    let v = wait_for("the late task's end shown while full", || async {
        let (_, v) = d
            .call(Method::GET, &format!("/api/v1/sessions/{late}"), None)
            .await;
        if v["session"]["state"] == "exited" {
            Ok(v)
        } else {
            Err(v.to_string())
        }
    })
    .await;
    assert_eq!(v["session"]["exit_code"], 0, "{v}");
    // Its end is not stored yet: the row still says running.
    let (row_state, _, _) = stored_row(&home.join("kaged.db"), &late);
    assert_eq!(
        row_state, "running",
        "the row cannot have been written: {v}"
    );

    // Storage trouble is reported: readiness, status API, `kaged status`.
    let (status, body) = readyz(&d).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["error"]["code"], "storage_full", "{body}");
    let s = d.api_get("/api/v1/status").await;
    assert_eq!(s["storage"]["health"]["state"], "failing", "{s}");
    assert_eq!(s["storage"]["health"]["full"], true, "{s}");
    assert!(
        s["storage"]["health"]["held_changes"].as_u64().unwrap_or(0) >= 1,
        "{s}"
    );
    assert!(
        s["warnings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|w| w.as_str().unwrap_or_default().starts_with("storage")),
        "the console banner's warnings name the storage trouble: {s}"
    );
    let out = d.cli(&["status"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "kaged status: {out:?}");
    assert!(
        text.contains("FAILING") && text.contains("full"),
        "kaged status reports the storage trouble:\n{text}"
    );

    // Space comes back: the held end is stored, without a restart, within a few seconds.
    std::fs::remove_file(&filler).unwrap();
    let v = wait_for("the held end stored", || async {
        let (_, v) = d
            .call(Method::GET, &format!("/api/v1/sessions/{late}"), None)
            .await;
        if v["session"]["ended_at_ms"].is_i64() && v["session"]["pending_store"].is_null() {
            Ok(v)
        } else {
            Err(v.to_string())
        }
    })
    .await;
    assert_eq!(v["session"]["state"], "exited", "{v}");
    assert_eq!(v["session"]["exit_code"], 0, "{v}");
    let states: Vec<&str> = v["transitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["state"].as_str().unwrap())
        .collect();
    assert_eq!(
        states.last(),
        Some(&"exited"),
        "the stored transitions end with the exit, in order: {v}"
    );
    let (row_state, exit_code, ended_at) = stored_row(&home.join("kaged.db"), &late);
    assert_eq!(
        (row_state.as_str(), exit_code),
        ("exited", Some(0)),
        "the stored row"
    );
    assert!(ended_at.is_some());

    let (status, body) = wait_for("readiness back", || async {
        let r = readyz(&d).await;
        if r.0 == StatusCode::OK {
            Ok(r)
        } else {
            Err(format!("{} {}", r.0, r.1))
        }
    })
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let s = d.api_get("/api/v1/status").await;
    assert_eq!(s["storage"]["health"]["state"], "ok", "{s}");

    // The audit records lost while full are accounted for in one audit.lost record.
    let (_, audit) = d.call(Method::GET, "/api/v1/audit?limit=50", None).await;
    let lost = audit["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["kind"] == "audit.lost")
        .unwrap_or_else(|| panic!("no audit.lost record: {audit}"));
    assert!(lost["detail"]["count"].as_u64().unwrap_or(0) >= 1, "{lost}");

    // The transcript: what was written before the fill is on disk; the rest was kept in
    // memory and the transcript route still answers.
    let r = plain_client()
        .get(format!("{}/api/v1/sessions/{late}/transcript", d.base))
        .header("x-kaged-auth-nonce", d.nonce())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let text = String::from_utf8_lossy(&r.bytes().await.unwrap()).to_string();
    assert!(text.contains("before-the-fill"), "{text:?}");

    // A new start works again and its end is stored.
    let (status, body) = start_task(&d, "hello").await;
    assert_eq!(
        status,
        StatusCode::CREATED,
        "a start after recovery: {body}"
    );
    let hello = body["session"]["id"].as_str().unwrap().to_string();
    let v = wait_for("the new task's end stored", || async {
        let (_, v) = d
            .call(Method::GET, &format!("/api/v1/sessions/{hello}"), None)
            .await;
        if v["session"]["ended_at_ms"].is_i64() {
            Ok(v)
        } else {
            Err(v.to_string())
        }
    })
    .await;
    assert_eq!(v["session"]["exit_code"], 0, "{v}");

    let (status, log) = d.stop();
    assert!(status.success(), "kaged stop: {status}\n{log}");
}
