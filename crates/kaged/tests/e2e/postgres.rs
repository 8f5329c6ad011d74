//! The daemon on PostgreSQL (`[storage] url = "postgres://…"` through `KAGED_STORAGE_URL`):
//! it starts on a fresh database of the test cluster, `kaged status` shows the URL without the
//! password, a task's session, transitions and audit records land in PostgreSQL, and a second
//! daemon on the same database is refused naming the first. Then failure: PostgreSQL stopped
//! mid-run (a private cluster of the test's own, not the shared one): `/readyz` 503, writes
//! 503 `storage_failing`, the running task keeps going and its output reaches the transcript
//! file; PostgreSQL started again: ready again by itself, nothing acknowledged lost.
//! And `kaged storage copy|backup` through the CLI: SQLite → PostgreSQL → SQLite, a non-empty
//! target refused, a backup taken while a daemon runs and writes.
//!
//! Needs `KAGED_TEST_POSTGRES_URL` (an admin URL; `scripts/test` runs a private cluster with
//! `scripts/postgres serve` and sets it): without it these tests say so loudly and pass, unless
//! `KAGED_TEST_POSTGRES_REQUIRED=1`.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::common::*;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const PATIENCE: Duration = Duration::from_secs(20);
const SECRET: &str = "e2e-pg-secret-never-shown";

const PROJECT: &str = r#"version: 1
project: pg
primary:
  command: [sh]
tasks:
  hello: { command: [sh, -c, "echo hello from postgres"] }
  outage: { command: [sh, -c, "echo before-the-outage; while [ ! -e go ]; do sleep 0.1; done; echo after-the-outage; exit 0"] }
"#;

/// The admin URL of the test cluster, or `None` (said loudly) when there is none.
fn admin_url(test: &str) -> Option<String> {
    match std::env::var("KAGED_TEST_POSTGRES_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            assert_ne!(
                std::env::var("KAGED_TEST_POSTGRES_REQUIRED").as_deref(),
                Ok("1"),
                "KAGED_TEST_POSTGRES_REQUIRED=1 but KAGED_TEST_POSTGRES_URL is not set"
            );
            eprintln!(
                "\n\n*** SKIPPED postgres::{test}: KAGED_TEST_POSTGRES_URL is not set \
                 (scripts/postgres serve DIR prints one; scripts/test sets it) ***\n"
            );
            None
        }
    }
}

static NEXT: AtomicUsize = AtomicUsize::new(0);

/// A fresh database in the cluster of `admin`; its URL.
fn fresh_database(admin: &str, what: &str) -> String {
    let name = format!(
        "kaged_e2e_{}_{}_{what}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    psql(admin, &format!("CREATE DATABASE \"{name}\""));
    let (base, _) = admin.rsplit_once('/').unwrap();
    format!("{base}/{name}")
}

fn project_dir(tmp: &Path) -> PathBuf {
    let project = tmp.join("pg");
    std::fs::create_dir_all(project.join(".kaged")).unwrap();
    std::fs::write(project.join(".kaged/project.yaml"), PROJECT).unwrap();
    project
}

fn start_on(home: &Path, url: &str) -> Daemon {
    Daemon::start_with(
        home,
        &["--bind", "127.0.0.1:0"],
        &[
            ("KAGED_STORAGE_URL", url),
            ("KAGED_STORAGE_PASSWORD", SECRET),
        ],
    )
    .failing_on_panics()
}

async fn load(d: &Daemon, project: &Path) {
    let (status, body) = d
        .call(
            Method::POST,
            "/api/v1/projects/load",
            Some(json!({"path": project})),
        )
        .await;
    assert!(status.is_success(), "load: {status} {body}");
}

async fn start_task(d: &Daemon, name: &str) -> (StatusCode, Value) {
    d.call(
        Method::POST,
        "/api/v1/projects/pg/sessions",
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

/// Poll `probe` until it returns `Ok`, at most `PATIENCE`.
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

async fn wait_ended(d: &Daemon, id: &str) -> Value {
    wait_for("the session's end stored", || async {
        let (_, v) = d
            .call(Method::GET, &format!("/api/v1/sessions/{id}"), None)
            .await;
        if v["session"]["ended_at_ms"].is_i64() && v["session"]["pending_store"].is_null() {
            Ok(v)
        } else {
            Err(v.to_string())
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_on_postgresql_stores_its_sessions_there_and_a_second_is_refused() {
    let Some(admin) = admin_url("a_daemon_on_postgresql_stores_its_sessions_there") else {
        return;
    };
    let url = fresh_database(&admin, "daemon");
    let tmp = tempfile::tempdir().unwrap();
    let project = project_dir(tmp.path());
    let home = tmp.path().join("home");
    let d = start_on(&home, &url);

    // `kaged status`: the URL, never the password.
    let out = d.cli(&["status"]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "kaged status: {out:?}");
    assert!(text.contains(&url), "status names {url}:\n{text}");
    let s = d.api_get("/api/v1/status").await;
    assert_eq!(s["storage"]["url"], url.as_str(), "{s}");
    assert_eq!(s["storage"]["health"]["state"], "ok", "{s}");
    assert!(!s.to_string().contains(SECRET) && !text.contains(SECRET));

    // A task runs; its session, transitions and audit records are in PostgreSQL.
    load(&d, &project).await;
    let (status, body) = start_task(&d, "hello").await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let id = body["session"]["id"].as_str().unwrap().to_string();
    let v = wait_ended(&d, &id).await;
    assert_eq!(v["session"]["exit_code"], 0, "{v}");
    assert_eq!(
        psql(
            &url,
            &format!("SELECT state || ' ' || exit_code FROM sessions WHERE id = '{id}'")
        ),
        "exited 0"
    );
    let states = psql(
        &url,
        &format!(
            "SELECT string_agg(state, ',' ORDER BY id) FROM session_transitions \
             WHERE session_id = '{id}'"
        ),
    );
    assert!(
        states.starts_with("queued,") && states.ends_with(",exited"),
        "{states}"
    );
    let audited = psql(
        &url,
        "SELECT string_agg(DISTINCT kind, ',') FROM audit_events \
         WHERE kind IN ('daemon.start', 'session.start', 'session.end', 'project.load')",
    );
    for kind in ["daemon.start", "session.start", "session.end"] {
        assert!(audited.contains(kind), "{kind} in PostgreSQL: {audited}");
    }
    assert_eq!(
        psql(&url, "SELECT count(*) FROM projects WHERE slug = 'pg'"),
        "1"
    );
    let transcript = std::fs::read_to_string(home.join(format!("transcripts/{id}.out"))).unwrap();
    assert!(transcript.contains("hello from postgres"), "{transcript:?}");

    // A second daemon on the same database: refused (exit 1), naming the first.
    let other = tmp.path().join("other");
    let out = kaged_cmd(&[
        ("KAGED_HOME", other.to_str().unwrap()),
        ("KAGED_STORAGE_URL", url.as_str()),
    ])
    .args(["start", "--bind", "127.0.0.1:0"])
    .output()
    .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!(
            "in use by another kaged (kaged pid {} on",
            d.child.id()
        )),
        "the refusal names the first daemon: {err}"
    );
    assert!(!err.contains(SECRET));

    let (status, log) = d.stop();
    assert!(status.success(), "{log}");
    assert!(!log.contains(SECRET), "the password is never logged");
}

/// A private cluster of the test's own (so stopping it stops nobody else's), stopped and
/// removed when dropped.
struct Cluster {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    admin: String,
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/postgres")
}

impl Cluster {
    fn start() -> Cluster {
        let tmp = tempfile::Builder::new()
            .prefix("kaged-pg-")
            .tempdir_in("/tmp")
            .unwrap();
        // The server runs as the `postgres` user when we are root: it must reach DIR.
        std::fs::set_permissions(
            tmp.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
        let dir = tmp.path().join("cluster");
        let admin = Self::serve(&dir);
        Cluster {
            _tmp: tmp,
            dir,
            admin,
        }
    }

    fn serve(dir: &Path) -> String {
        let out = Command::new(script())
            .arg("serve")
            .arg(dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "scripts/postgres serve: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    fn stop(&self) {
        let out = Command::new(script())
            .arg("stop")
            .arg(&self.dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "scripts/postgres stop: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = Command::new(script()).arg("stop").arg(&self.dir).output();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgresql_stopped_mid_run_fails_readiness_and_writes_then_recovers_by_itself() {
    if admin_url("postgresql_stopped_mid_run").is_none() {
        return;
    }
    let cluster = Cluster::start();
    let url = fresh_database(&cluster.admin, "outage");
    let tmp = tempfile::tempdir().unwrap();
    let project = project_dir(tmp.path());
    let home = tmp.path().join("home");
    let d = start_on(&home, &url);
    load(&d, &project).await;
    let (status, body) = start_task(&d, "outage").await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let id = body["session"]["id"].as_str().unwrap().to_string();
    let file = home.join(format!("transcripts/{id}.out"));
    wait_for("the task running with output", || async {
        let (_, v) = d
            .call(Method::GET, &format!("/api/v1/sessions/{id}"), None)
            .await;
        let out = v["session"]["output_bytes"].as_u64().unwrap_or(0);
        if v["session"]["state"] == "running" && out > 0 {
            Ok(())
        } else {
            Err(v.to_string())
        }
    })
    .await;
    let acknowledged = psql(&url, "SELECT count(*) FROM audit_events");

    cluster.stop();
    // An idle daemon notices by itself: /readyz 503 with the reason.
    let (_, body) = wait_for("readiness failing", || async {
        let r = readyz(&d).await;
        if r.0 == StatusCode::SERVICE_UNAVAILABLE {
            Ok(r)
        } else {
            Err(format!("{} {}", r.0, r.1))
        }
    })
    .await;
    assert_eq!(body["error"]["code"], "storage_failing", "{body}");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("PostgreSQL")
            && message.contains(&url)
            && !message.contains("data directory"),
        "the reason names the PostgreSQL database: {message}"
    );
    // Writes fail with a clear 503: a session start, a token.
    let (status, body) = start_task(&d, "hello").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["error"]["code"], "storage_failing", "{body}");
    let (status, body) = d
        .call(
            Method::POST,
            "/api/v1/tokens",
            Some(json!({"actor": "ci", "name": "x"})),
        )
        .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["error"]["code"], "storage_failing", "{body}");
    // `kaged status` still answers, and says why.
    let out = d.cli(&["status"]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "kaged status during the outage: {out:?}"
    );
    assert!(
        text.contains("FAILING") && text.contains("PostgreSQL"),
        "{text}"
    );

    // The task keeps running; its output still reaches the transcript file, and it ends.
    std::fs::write(project.join("go"), "").unwrap();
    wait_for("output after the outage in the transcript file", || async {
        let text = std::fs::read_to_string(&file).unwrap_or_default();
        if text.contains("after-the-outage") {
            Ok(())
        } else {
            Err(format!("{text:?}"))
        }
    })
    .await;
    // Reads of storage fail as clearly as writes.
    let (status, body) = d
        .call(Method::GET, &format!("/api/v1/sessions/{id}"), None)
        .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["error"]["code"], "storage_failing", "{body}");

    // PostgreSQL comes back: ready again by itself, the held end stored, nothing lost.
    let admin = Cluster::serve(&cluster.dir);
    assert_eq!(admin, cluster.admin, "the cluster keeps its port");
    wait_for("readiness back", || async {
        let r = readyz(&d).await;
        if r.0 == StatusCode::OK {
            Ok(())
        } else {
            Err(format!("{} {}", r.0, r.1))
        }
    })
    .await;
    let v = wait_ended(&d, &id).await;
    assert_eq!(v["session"]["exit_code"], 0, "{v}");
    assert_eq!(
        psql(
            &url,
            &format!("SELECT state || ' ' || exit_code FROM sessions WHERE id = '{id}'")
        ),
        "exited 0"
    );
    let states = psql(
        &url,
        &format!(
            "SELECT string_agg(state, ',' ORDER BY id) FROM session_transitions \
             WHERE session_id = '{id}'"
        ),
    );
    assert!(
        states.starts_with("queued,") && states.contains(",running") && states.ends_with(",exited"),
        "every transition stored, in order: {states}"
    );
    let now: u64 = psql(&url, "SELECT count(*) FROM audit_events")
        .parse()
        .unwrap();
    assert!(
        now >= acknowledged.parse::<u64>().unwrap(),
        "audit records kept"
    );
    let (status, body) = start_task(&d, "hello").await;
    assert_eq!(
        status,
        StatusCode::CREATED,
        "a start after recovery: {body}"
    );
    let hello = body["session"]["id"].as_str().unwrap().to_string();
    assert_eq!(wait_ended(&d, &hello).await["session"]["exit_code"], 0);
    let s = d.api_get("/api/v1/status").await;
    assert_eq!(s["storage"]["health"]["state"], "ok", "{s}");

    let (status, log) = d.stop();
    assert!(status.success(), "{log}");
}

fn kaged(args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String, String) {
    let out = kaged_cmd(env).args(args).output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storage_copy_moves_a_daemons_database_to_postgresql_and_back() {
    let Some(admin) = admin_url("storage_copy_moves_a_daemons_database") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let project = project_dir(tmp.path());
    let home = tmp.path().join("home");
    let d = Daemon::start(&home);
    load(&d, &project).await;
    let (_, body) = start_task(&d, "hello").await;
    let id = body["session"]["id"].as_str().unwrap().to_string();
    wait_ended(&d, &id).await;

    // While the daemon runs, its database is refused as a source, naming it.
    let db = home.join("kaged.db");
    let sqlite = format!("sqlite://{}", db.display());
    let pg = fresh_database(&admin, "copy");
    let (code, _, err) = kaged(&["storage", "copy", "--from", &sqlite, "--to", &pg], &[]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("in use by another kaged"), "{err}");
    let (status, log) = d.stop();
    assert!(status.success(), "{log}");

    let (code, out, err) = kaged(&["storage", "copy", "--from", &sqlite, "--to", &pg], &[]);
    assert_eq!(code, Some(0), "{err}");
    assert!(
        err.contains("kaged: copying audit_events"),
        "progress on stderr: {err}"
    );
    assert!(out.contains("  sessions             1"), "{out}");
    assert_eq!(
        psql(
            &pg,
            &format!("SELECT state FROM sessions WHERE id = '{id}'")
        ),
        "exited"
    );
    // A target holding rows is refused (exit 2), naming them.
    let (code, _, err) = kaged(&["storage", "copy", "--from", &sqlite, "--to", &pg], &[]);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("is not empty (") && err.contains("sessions: 1 row(s)"),
        "{err}"
    );

    // And back to SQLite.
    let back = tmp.path().join("back.db");
    let back_url = format!("sqlite://{}", back.display());
    let (code, back_out, err) = kaged(&["storage", "copy", "--from", &pg, "--to", &back_url], &[]);
    assert_eq!(code, Some(0), "{err}");
    let counts = |text: &str| -> Vec<String> {
        text.lines()
            .filter(|l| l.starts_with("  "))
            .map(String::from)
            .collect()
    };
    assert_eq!(counts(&out).len(), 9, "every table: {out}");
    assert_eq!(counts(&out), counts(&back_out), "the same rows both ways");
    let row = |db: &Path| -> (String, i64) {
        rusqlite::Connection::open(db)
            .unwrap()
            .query_row(
                "SELECT state, exit_code FROM sessions WHERE id = ?1",
                [&id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap()
    };
    assert_eq!(row(&back), row(&db));

    // The copy serves a daemon: the session is there.
    let home2 = tmp.path().join("home2");
    let d2 = start_on(&home2, &pg);
    let (_, v) = d2
        .call(Method::GET, &format!("/api/v1/sessions/{id}"), None)
        .await;
    assert_eq!(v["session"]["state"], "exited", "{v}");
    let (status, log) = d2.stop();
    assert!(status.success(), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storage_backup_snapshots_sqlite_while_the_daemon_writes() {
    let tmp = tempfile::tempdir().unwrap();
    let project = project_dir(tmp.path());
    let home = tmp.path().join("home");
    let d = Daemon::start(&home);
    load(&d, &project).await;
    // Writes while the backup runs: sessions started one after the other.
    let writer = {
        let base = d.base.clone();
        let nonce = d.nonce();
        tokio::spawn(async move {
            for _ in 0..10 {
                let r = plain_client()
                    .post(format!("{base}/api/v1/projects/pg/sessions"))
                    .header("x-kaged-auth-nonce", &nonce)
                    .json(&json!({"kind": "task", "name": "hello"}))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), StatusCode::CREATED);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    let file = tmp.path().join("snapshot.db");
    let env = [("KAGED_HOME", home.to_str().unwrap())];
    let (code, out, err) = kaged(&["storage", "backup", file.to_str().unwrap()], &env);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(
        out.contains("backed up sqlite://") && out.contains("schema"),
        "{out}"
    );
    writer.await.unwrap();
    assert_eq!(mode_of(&file) & 0o777, 0o600);
    let c = rusqlite::Connection::open(&file).unwrap();
    let check: String = c
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok");
    let projects: i64 = c
        .query_row("SELECT count(*) FROM projects WHERE slug = 'pg'", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(projects, 1, "the snapshot holds what was stored before it");
    // Never overwritten.
    let (code, _, err) = kaged(&["storage", "backup", file.to_str().unwrap()], &env);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("already exists"), "{err}");

    // PostgreSQL: the pg_dump command to use instead, exit 2.
    let (code, out, err) = kaged(
        &[
            "storage",
            "backup",
            "/tmp/x.dump",
            "--url",
            "postgres://kaged@db.example:5432/kaged",
        ],
        &[("KAGED_STORAGE_PASSWORD", SECRET)],
    );
    assert_eq!(code, Some(2), "{err}");
    assert_eq!(
        out.trim(),
        "PGPASSWORD=\"$KAGED_STORAGE_PASSWORD\" pg_dump --format=custom --file='/tmp/x.dump' \
         --dbname='postgres://kaged@db.example:5432/kaged?sslmode=verify-full'"
    );
    assert!(!out.contains(SECRET) && !err.contains(SECRET));
    let (status, log) = d.stop();
    assert!(status.success(), "{log}");
}
