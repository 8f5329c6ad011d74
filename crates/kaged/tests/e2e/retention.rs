//! Transcript retention through the real daemon: `[sessions]` limits set by environment,
//! pruning of the oldest ended sessions' transcripts (rows marked, audited, live runs
//! untouched) by `kaged session prune` and at start, the per-transcript cap on a flood (head
//! and newest bytes at their offsets, the dropped range in the row, the header and the PTY
//! channel), and a 100+ MB transcript download that streams (the daemon's RSS stays low).
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::common::*;
use futures_util::{SinkExt, StreamExt};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::{Message, client::IntoClientRequest};

const PATIENCE: Duration = Duration::from_secs(60);
/// `seq 1 60000` on a PTY: about 409 KB (CRLF line ends).
const SMALL_LINES: u32 = 60_000;
/// `seq 1 1000000` on a PTY: about 7.9 MB.
const FLOOD_LINES: u32 = 1_000_000;
/// The large download: 120 MB of zeros through the PTY.
const LARGE_BYTES: u64 = 120_000_000;
const MIB: u64 = 1024 * 1024;

fn project_yaml(marker: &str) -> String {
    format!(
        r#"version: 1
project: demo
primary:
  command: [sh]
tasks:
  small: {{ command: [seq, "1", "{SMALL_LINES}"] }}
  flood: {{ command: [seq, "1", "{FLOOD_LINES}"] }}
  large: {{ command: [head, -c, "{LARGE_BYTES}", /dev/zero] }}
  live: {{ command: [sh, -c, "seq 1 {SMALL_LINES}; exec sleep 600 # {marker}"] }}
"#
    )
}

struct Env {
    tmp: tempfile::TempDir,
}

impl Env {
    fn new(tag: &str) -> Env {
        let tmp = tempfile::tempdir().unwrap();
        let marker = format!("kaged-retention-{tag}-{}", std::process::id());
        let project = tmp.path().join("demo");
        std::fs::create_dir_all(project.join(".kaged")).unwrap();
        std::fs::write(project.join(".kaged/project.yaml"), project_yaml(&marker)).unwrap();
        Env { tmp }
    }

    fn home(&self) -> PathBuf {
        self.tmp.path().join("home")
    }

    fn transcripts(&self) -> PathBuf {
        self.home().join("transcripts")
    }

    async fn daemon(&self, env: &[(&str, &str)]) -> Daemon {
        let d = Daemon::start_with(&self.home(), &["--bind", "127.0.0.1:0"], env);
        let (status, body) = d
            .call(
                Method::POST,
                "/api/v1/projects/load",
                Some(json!({"path": self.tmp.path().join("demo")})),
            )
            .await;
        assert!(status.is_success(), "load: {status} {body}");
        d
    }
}

async fn start_task(d: &Daemon, task: &str) -> String {
    let (status, body) = d
        .call(
            Method::POST,
            "/api/v1/projects/demo/sessions",
            Some(json!({"kind": "task", "name": task})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    body["session"]["id"].as_str().unwrap().to_string()
}

async fn session(d: &Daemon, id: &str) -> Value {
    let (status, body) = d
        .call(Method::GET, &format!("/api/v1/sessions/{id}"), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["session"].clone()
}

async fn wait_for(d: &Daemon, id: &str, what: &str, ready: impl Fn(&Value) -> bool) -> Value {
    let start = Instant::now();
    loop {
        let s = session(d, id).await;
        if ready(&s) {
            return s;
        }
        assert!(
            start.elapsed() < PATIENCE,
            "{what} never happened: {s}\n{}",
            d.stderr_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn run_to_end(d: &Daemon, task: &str) -> Value {
    let id = start_task(d, task).await;
    let s = wait_for(d, &id, "the end", |s| s["ended_at_ms"].is_i64()).await;
    assert_eq!(s["state"], "exited", "{s}");
    s
}

fn transcript_files(dir: &Path, id: &str) -> bool {
    dir.join(format!("{id}.out")).exists() || dir.join(format!("{id}.tail")).exists()
}

async fn pruned_records(d: &Daemon) -> Vec<Value> {
    let (status, body) = d.call(Method::GET, "/api/v1/audit?limit=1000", None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "session.transcript.pruned")
        .cloned()
        .collect()
}

/// Several ended sessions over a 1 MiB limit: `--dry-run` lists the oldest without deleting;
/// `kaged session prune` deletes the oldest ended transcripts first until the rest fits, marks
/// their rows, audits each, and leaves the live run (the oldest of all) alone. A restart
/// prunes what the limit no longer allows on its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pruning_removes_the_oldest_ended_transcripts_first_and_never_a_live_one() {
    let env = Env::new("prune");
    let limits = [("KAGED_SESSIONS_MAX_TOTAL_MB", "1")];
    let d = env.daemon(&limits).await;
    let dir = env.transcripts();

    let live = start_task(&d, "live").await;
    wait_for(&d, &live, "the live run's output", |s| {
        s["output_bytes"].as_u64().unwrap_or(0) >= 300_000
    })
    .await;
    let mut ended = Vec::new();
    for _ in 0..4 {
        let s = run_to_end(&d, "small").await;
        assert!(s["output_bytes"].as_u64().unwrap() > 300_000, "{s}");
        ended.push(s["id"].as_str().unwrap().to_string());
    }

    // Dry run: the oldest ended ones are listed, nothing is deleted or marked.
    let out = d.cli(&["session", "prune", "--dry-run", "--json"]);
    assert!(out.status.success(), "{out:?}");
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let listed: Vec<&str> = report["pruned"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["session"].as_str().unwrap())
        .collect();
    assert!(
        !listed.is_empty(),
        "over the limit, yet nothing listed: {report}"
    );
    assert_eq!(
        listed,
        ended[..listed.len()],
        "the oldest ended first: {report}"
    );
    assert!(!listed.contains(&live.as_str()), "{report}");
    assert!(
        report["total_bytes_after"].as_u64().unwrap() <= MIB,
        "{report}"
    );
    for id in &ended {
        assert!(transcript_files(&dir, id), "dry run deleted {id}");
        assert_eq!(session(&d, id).await["transcript_pruned"], false);
    }
    assert!(pruned_records(&d).await.is_empty());
    let human = d.cli(&["session", "prune", "--dry-run"]);
    let text = String::from_utf8_lossy(&human.stdout);
    assert!(
        text.contains("would prune") && text.contains(listed[0]),
        "{text}"
    );

    // The real thing.
    let out = d.cli(&["session", "prune", "--json"]);
    assert!(out.status.success(), "{out:?}");
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let pruned: Vec<String> = report["pruned"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["session"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(pruned, listed, "{report}");
    assert!(pruned.len() < ended.len(), "the newest stays: {report}");
    for id in &ended {
        let s = session(&d, id).await;
        let gone = pruned.contains(id);
        assert_eq!(transcript_files(&dir, id), !gone, "{id}: {s}");
        assert_eq!(s["transcript_pruned"], gone, "{s}");
        assert_eq!(s["transcript_pruned_at_ms"].is_i64(), gone, "{s}");
        // The row still knows how long the output was.
        assert!(s["output_bytes"].as_u64().unwrap() > 300_000, "{s}");
        if gone {
            let (status, body) = d
                .call(
                    Method::GET,
                    &format!("/api/v1/sessions/{id}/transcript"),
                    None,
                )
                .await;
            assert_eq!(status, StatusCode::GONE, "{body}");
            assert_eq!(body["error"]["code"], "gone", "{body}");
        }
    }
    let records = pruned_records(&d).await;
    for id in &pruned {
        let r = records
            .iter()
            .find(|r| r["detail"]["session"] == id.as_str())
            .unwrap_or_else(|| panic!("no audit record for {id}: {records:?}"));
        assert_eq!(r["detail"]["why"], "size", "{r}");
        assert!(r["detail"]["bytes"].as_u64().unwrap() > 300_000, "{r}");
    }
    let l = session(&d, &live).await;
    assert_eq!(l["state"], "running", "{l}");
    assert_eq!(l["transcript_pruned"], false, "{l}");
    assert!(transcript_files(&dir, &live));

    // A second pass has nothing left to do; the operator's pass is refused to nobody local.
    let again = d.cli(&["session", "prune", "--json"]);
    let again: Value = serde_json::from_slice(&again.stdout).unwrap();
    assert_eq!(again["pruned"], json!([]), "{again}");

    // Two more ended runs put the total over again; a restart prunes at start.
    let mut newer = Vec::new();
    for _ in 0..2 {
        newer.push(
            run_to_end(&d, "small").await["id"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    let (status, _) = d.stop();
    assert!(status.success());
    let d = env.daemon(&limits).await;
    let oldest_kept = ended[pruned.len()].clone();
    let s = wait_for(&d, &oldest_kept, "pruning at start", |s| {
        s["transcript_pruned"] == true
    })
    .await;
    assert!(!transcript_files(&dir, &oldest_kept), "{s}");
    let newest = newer.last().unwrap();
    assert_eq!(session(&d, newest).await["transcript_pruned"], false);
    let record = pruned_records(&d)
        .await
        .into_iter()
        .find(|r| r["detail"]["session"] == oldest_kept.as_str())
        .expect("an audit record of the pruning at start");
    assert_eq!(record["identity"], "kaged", "{record}");
}

/// A flood past `transcript_max_mb`: the head and the newest bytes are kept at their offsets,
/// the middle is dropped and reported (row, download header, PTY frame offsets), and the disk
/// holds no more than the cap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_transcript_cap_keeps_the_head_and_the_newest_bytes_of_a_flood() {
    let env = Env::new("cap");
    let d = env
        .daemon(&[("KAGED_SESSIONS_TRANSCRIPT_MAX_MB", "1")])
        .await;
    let s = run_to_end(&d, "flood").await;
    let id = s["id"].as_str().unwrap();
    let total = s["output_bytes"].as_u64().unwrap();
    assert!(total > 7_000_000, "{s}");
    let dropped = s["dropped"].as_array().expect("a dropped range in the row");
    let (from, to) = (dropped[0].as_u64().unwrap(), dropped[1].as_u64().unwrap());
    assert_eq!(from, MIB / 4, "{s}");
    assert!(to > from && total - to >= MIB / 2, "{s}");

    let on_disk: u64 = walk(&env.transcripts());
    assert!(on_disk <= MIB, "{on_disk} bytes of transcripts on disk");

    let r = plain_client()
        .get(format!("{}/api/v1/sessions/{id}/transcript", d.base))
        .header("x-kaged-auth-nonce", d.nonce())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        r.headers()["x-kaged-transcript-dropped"].to_str().unwrap(),
        format!("{from}-{to}")
    );
    let body = r.bytes().await.unwrap();
    assert_eq!(body.len() as u64, from + (total - to));
    let expected = seq_output(FLOOD_LINES);
    assert_eq!(expected.len() as u64, total);
    assert!(
        body[..from as usize] == expected[..from as usize],
        "the head"
    );
    assert!(body[from as usize..] == expected[to as usize..], "the tail");

    // The CLI writes the same bytes and says what was dropped.
    let out = d.cli(&["session", "transcript", id]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(out.stdout, body.to_vec());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(&format!("{from}-{to}")),
        "{out:?}"
    );

    // A viewer resuming inside the dropped range gets the first kept byte after it, at its
    // own offset.
    let url = format!(
        "{}/api/v1/sessions/{id}/pty",
        d.base.replace("http://", "ws://")
    );
    let mut request = url.as_str().into_client_request().unwrap();
    request
        .headers_mut()
        .insert("x-kaged-auth-nonce", d.nonce().parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    let hello = ws.next().await.unwrap().unwrap();
    assert!(hello.to_text().unwrap().contains("hello"), "{hello:?}");
    ws.send(Message::Text(
        json!({"type": "resume", "offset": from + 1000})
            .to_string()
            .into(),
    ))
    .await
    .unwrap();
    let frame = loop {
        match tokio::time::timeout(PATIENCE, ws.next()).await.unwrap() {
            Some(Ok(Message::Binary(b))) => break b,
            Some(Ok(Message::Text(_) | Message::Ping(_) | Message::Pong(_))) => continue,
            other => panic!("expected an output frame, got {other:?}"),
        }
    };
    assert_eq!(frame[0], 0x01);
    let offset = u64::from_be_bytes(frame[1..9].try_into().unwrap());
    assert_eq!(offset, to, "the frame starts at the first kept offset");
    assert!(frame[9..] == expected[to as usize..to as usize + frame.len() - 9]);
}

/// A 120 MB transcript downloads whole (one request, `Content-Length` set), read slowly, and
/// the daemon's memory stays far below the transcript's size.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_transcript_download_streams() {
    let env = Env::new("large");
    let d = env
        .daemon(&[("KAGED_SESSIONS_TRANSCRIPT_MAX_MB", "1024")])
        .await;
    let s = run_to_end(&d, "large").await;
    let id = s["id"].as_str().unwrap();
    let total = s["output_bytes"].as_u64().unwrap();
    assert_eq!(total, LARGE_BYTES, "{s}");
    let pid = d.child.id();
    let before = rss_kib(pid);
    let mut r = plain_client()
        .get(format!("{}/api/v1/sessions/{id}/transcript", d.base))
        .header("x-kaged-auth-nonce", d.nonce())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK, "{:?}", r.headers());
    assert_eq!(r.content_length(), Some(LARGE_BYTES));
    let mut got = 0u64;
    let mut peak = before;
    let mut chunks = 0u64;
    while let Some(chunk) = r.chunk().await.unwrap() {
        assert!(chunk.iter().all(|b| *b == 0));
        got += chunk.len() as u64;
        chunks += 1;
        if chunks.is_multiple_of(64) {
            peak = peak.max(rss_kib(pid));
            // A slow reader: the daemon must not run ahead into memory.
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    assert_eq!(got, LARGE_BYTES);
    let grew_mib = peak.saturating_sub(before) / 1024;
    eprintln!(
        "daemon RSS: {} MiB before, {} MiB peak while downloading {} MB",
        before / 1024,
        peak / 1024,
        LARGE_BYTES / 1_000_000
    );
    assert!(
        grew_mib < 40,
        "the daemon grew by {grew_mib} MiB while streaming a {} MB transcript",
        LARGE_BYTES / 1_000_000
    );
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// What `seq 1 n` prints on a PTY.
fn seq_output(n: u32) -> Vec<u8> {
    let mut out = Vec::new();
    for i in 1..=n {
        out.extend_from_slice(format!("{i}\r\n").as_bytes());
    }
    out
}

/// Bytes in the files under `dir`.
fn walk(dir: &Path) -> u64 {
    let mut total = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let meta = entry.metadata().unwrap();
        total += if meta.is_dir() {
            walk(&entry.path())
        } else {
            meta.len()
        };
    }
    total
}
