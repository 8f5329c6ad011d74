//! Sessions through the real daemon: real PTYs in real bubblewrap cages, watched through the
//! PTY WebSocket (`kaged_session::frame`) and the events WebSocket, driven over HTTP and the
//! `kaged session` CLI. The frames are decoded here by hand, from the documented wire format.
//!
//! Every wait below is a guard against a hang (it fails with what was seen), never a timing
//! assertion: latency is measured in benches only.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::*;
use futures_util::{SinkExt, StreamExt};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::{Message, client::IntoClientRequest};

/// The longest any one thing (a frame, a state change, a process ending) may take before the
/// test gives up and reports what it saw: generous, since on two cores shared with builds the
/// 1000x1000-screen flood test missed 15 s (a liveness bound, not a speed check).
const PATIENCE: Duration = Duration::from_secs(45);

/// `seq 1 N` for the flood tasks.
const FLOOD_LINES: u32 = 500_000; // ~3.9 MB on the PTY
const MEDIUM_LINES: u32 = 100_000; // ~0.7 MB
const BIG_LINES: u32 = 1_500_000; // ~12.4 MB: more than a stalled socket's buffers take

fn project_yaml(marker: &str) -> String {
    format!(
        r#"version: 1
project: demo
primary:
  command: [sh]
tasks:
  hello: {{ command: [sh, -c, "echo hello from kaged"] }}
  flood: {{ command: [seq, "1", "{FLOOD_LINES}"] }}
  medium: {{ command: [seq, "1", "{MEDIUM_LINES}"] }}
  big: {{ command: [seq, "1", "{BIG_LINES}"] }}
  yes: {{ command: [yes, "{marker}"] }}
  ticker: {{ command: [sh, -c, "i=0; while :; do i=$((i+1)); echo {marker} $i; done"] }}
  steady: {{ command: [sh, -c, "i=0; while :; do i=$((i+1)); echo {marker} $i; sleep 0.1; done"] }}
  brief: {{ command: [sh, -c, "echo {marker} brief; sleep 2; exit 7"] }}
terminals:
  shell: [bash]
"#
    )
}

/// A daemon with the `demo` project loaded. `marker` is unique to the test: it appears in the
/// command line of the processes it starts, so they can be found in /proc.
struct Env {
    tmp: tempfile::TempDir,
    marker: String,
}

impl Env {
    fn home(&self) -> PathBuf {
        self.tmp.path().join("home")
    }
}

async fn setup(tag: &str) -> (Env, Daemon) {
    let (env, d) = setup_with(tag, &[]).await;
    (env, d.failing_on_panics())
}

/// [`setup`] with more variables in the daemon's environment; panics are the caller's to check.
async fn setup_with(tag: &str, extra_env: &[(&str, &str)]) -> (Env, Daemon) {
    let tmp = tempfile::tempdir().unwrap();
    let marker = format!("kaged-sessions-{tag}-{}", std::process::id());
    let project = tmp.path().join("demo");
    std::fs::create_dir_all(project.join(".kaged")).unwrap();
    std::fs::write(project.join(".kaged/project.yaml"), project_yaml(&marker)).unwrap();
    let env = Env { tmp, marker };
    let d = Daemon::start_with(&env.home(), &["--bind", "127.0.0.1:0"], extra_env);
    load_project(&d, &project).await;
    (env, d)
}

async fn load_project(d: &Daemon, project: &Path) {
    let (status, body) = d
        .call(
            Method::POST,
            "/api/v1/projects/load",
            Some(json!({"path": project})),
        )
        .await;
    assert!(status.is_success(), "load: {status} {body}");
}

// ---------------------------------------------------------------------------------------------
// HTTP

/// Start a session; returns its id.
async fn start(d: &Daemon, kind: &str, name: Option<&str>) -> String {
    start_sized(d, kind, name, 24, 80).await
}

/// Start a session on a PTY of `rows`×`cols`; returns its id.
async fn start_sized(d: &Daemon, kind: &str, name: Option<&str>, rows: u16, cols: u16) -> String {
    let (status, body) = d
        .call(
            Method::POST,
            "/api/v1/projects/demo/sessions",
            Some(json!({"kind": kind, "name": name, "rows": rows, "cols": cols})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let id = body["session"]["id"].as_str().unwrap().to_string();
    assert!(
        id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()),
        "{body}"
    );
    id
}

/// `GET /api/v1/sessions/{id}`: `{"session": ..., "transitions": [...]}`.
async fn get_session(d: &Daemon, id: &str) -> Value {
    let (status, body) = d
        .call(Method::GET, &format!("/api/v1/sessions/{id}"), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

/// Poll the session until `ready` holds for it; returns the whole document.
async fn wait_session(d: &Daemon, id: &str, what: &str, ready: impl Fn(&Value) -> bool) -> Value {
    wait_session_within(d, id, what, PATIENCE, ready).await
}

/// [`wait_session`] with more patience than the usual (a loaded machine may take long).
async fn wait_session_within(
    d: &Daemon,
    id: &str,
    what: &str,
    patience: Duration,
    ready: impl Fn(&Value) -> bool,
) -> Value {
    let start = Instant::now();
    loop {
        let v = get_session(d, id).await;
        if ready(&v["session"]) {
            return v;
        }
        assert!(
            start.elapsed() < patience,
            "{what} never happened to session {id}: {v}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The run's end is recorded: the stored row is final (its end time is set with its state,
/// exit code and reason in one transaction).
fn ended(s: &Value) -> bool {
    s["ended_at_ms"].is_i64()
}

/// The whole transcript, checking the range header against the body.
async fn transcript(d: &Daemon, id: &str) -> Vec<u8> {
    let r = plain_client()
        .get(format!("{}/api/v1/sessions/{id}/transcript", d.base))
        .header("x-kaged-auth-nonce", d.nonce())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let range = r
        .headers()
        .get("x-kaged-transcript-range")
        .expect("x-kaged-transcript-range header")
        .to_str()
        .unwrap()
        .to_string();
    let bytes = r.bytes().await.unwrap().to_vec();
    let n = bytes.len();
    assert_eq!(
        range,
        format!("0-{n}/{n}"),
        "range header of the whole transcript"
    );
    bytes
}

async fn whoami(d: &Daemon) -> String {
    let (_, who) = d.call(Method::GET, "/api/v1/whoami", None).await;
    who["id"].as_str().unwrap().to_string()
}

// ---------------------------------------------------------------------------------------------
// WebSockets

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Where and how to connect, detached from the `Daemon` so tasks can own it.
#[derive(Clone)]
struct Conn {
    base: String,
    nonce: String,
}

impl Conn {
    fn of(d: &Daemon) -> Conn {
        Conn {
            base: d.base.clone(),
            nonce: d.nonce(),
        }
    }

    /// A WebSocket as a non-browser client opens it: nonce header, no Origin.
    async fn ws(&self, path: &str) -> Result<Ws, tokio_tungstenite::tungstenite::Error> {
        let url = format!("{}{path}", self.base.replace("http://", "ws://"));
        let mut request = url.as_str().into_client_request().unwrap();
        request
            .headers_mut()
            .insert("x-kaged-auth-nonce", self.nonce.parse().unwrap());
        tokio_tungstenite::connect_async(request)
            .await
            .map(|(ws, _)| ws)
    }
}

#[derive(Debug)]
enum Frame {
    Output {
        offset: u64,
        data: Vec<u8>,
    },
    Snapshot {
        offset: u64,
        data: Vec<u8>,
    },
    Text(Value),
    /// A close frame (its code), or the end of the stream without one (`None`).
    Closed(Option<u16>),
    /// The connection failed (e.g. the daemon was killed).
    Broken(String),
}

/// One frame from `ws`, skipping pings and pongs.
async fn next_frame(ws: &mut Ws) -> Frame {
    loop {
        let m = tokio::time::timeout(PATIENCE, ws.next())
            .await
            .unwrap_or_else(|_| panic!("no frame from the server within {PATIENCE:?}"));
        return match m {
            None => Frame::Closed(None),
            Some(Err(e)) => Frame::Broken(e.to_string()),
            Some(Ok(Message::Binary(b))) => {
                assert!(b.len() >= 9, "binary frame shorter than its header: {b:?}");
                let offset = u64::from_be_bytes(b[1..9].try_into().unwrap());
                let data = b[9..].to_vec();
                match b[0] {
                    0x01 => Frame::Output { offset, data },
                    0x02 => Frame::Snapshot { offset, data },
                    k => panic!("unknown binary frame kind 0x{k:02x}"),
                }
            }
            Some(Ok(Message::Text(t))) => Frame::Text(
                serde_json::from_str(&t).unwrap_or_else(|e| panic!("text frame {t:?}: {e}")),
            ),
            Some(Ok(Message::Close(f))) => Frame::Closed(f.map(|f| u16::from(f.code))),
            Some(Ok(_)) => continue,
        };
    }
}

/// What a viewer received from its resume offset on.
#[derive(Debug, Default)]
struct Seen {
    start: u64,
    bytes: Vec<u8>,
    texts: Vec<Value>,
    /// The close code, when the server closed the connection.
    close: Option<u16>,
    /// The connection ended (closed or broken).
    finished: bool,
    broken: Option<String>,
}

impl Seen {
    fn end(&self) -> u64 {
        self.start + self.bytes.len() as u64
    }

    fn exit_code(&self) -> Option<i64> {
        self.texts
            .iter()
            .find(|t| t["type"] == "exit")
            .map(|t| t["code"].as_i64().unwrap())
    }

    fn states(&self) -> Vec<Value> {
        self.texts
            .iter()
            .filter(|t| t["type"] == "state")
            .cloned()
            .collect()
    }
}

/// A viewer on a session's PTY WebSocket.
struct Viewer {
    ws: Ws,
    hello: Value,
}

impl Viewer {
    /// Connect, read `hello`, send `resume`.
    async fn open(conn: &Conn, id: &str, resume: Option<u64>) -> Viewer {
        let ws = conn
            .ws(&format!("/api/v1/sessions/{id}/pty"))
            .await
            .unwrap_or_else(|e| panic!("attach to {id}: {e}"));
        let mut v = Viewer {
            ws,
            hello: Value::Null,
        };
        match next_frame(&mut v.ws).await {
            Frame::Text(t) if t["type"] == "hello" => v.hello = t,
            other => panic!("expected hello first, got {other:?}"),
        }
        assert_eq!(v.hello["session"], id, "{}", v.hello);
        v.text(json!({"type": "resume", "offset": resume})).await;
        v
    }

    async fn text(&mut self, v: Value) {
        self.ws
            .send(Message::Text(v.to_string().into()))
            .await
            .unwrap();
    }

    async fn input(&mut self, bytes: &[u8]) {
        self.ws
            .send(Message::Binary(bytes.to_vec().into()))
            .await
            .unwrap();
    }

    /// Read output from offset `from` (where the viewer resumed, or where its last read
    /// ended) until the connection ends or `enough` holds. Every output frame must start
    /// exactly where the previous one ended: no gap, no overlap. No snapshot is expected (the
    /// viewers here always resume at an offset).
    async fn read(&mut self, from: u64, enough: impl Fn(&Seen) -> bool) -> Seen {
        let mut seen = Seen {
            start: from,
            ..Seen::default()
        };
        loop {
            match next_frame(&mut self.ws).await {
                Frame::Output { offset, data } => {
                    assert_eq!(
                        offset,
                        seen.end(),
                        "an output frame of {} bytes starts at {offset}, but the stream so far ends at {}: a gap or a duplicate",
                        data.len(),
                        seen.end()
                    );
                    assert!(!data.is_empty(), "empty output frame at {offset}");
                    seen.bytes.extend_from_slice(&data);
                }
                Frame::Snapshot { offset, data } => panic!(
                    "unexpected snapshot ({} bytes at {offset}) after resuming at an offset",
                    data.len()
                ),
                Frame::Text(t) => {
                    assert_ne!(t["type"], "error", "the server refused something: {t}");
                    seen.texts.push(t);
                }
                Frame::Closed(code) => {
                    seen.close = code;
                    seen.finished = true;
                    return seen;
                }
                Frame::Broken(e) => {
                    seen.broken = Some(e);
                    seen.finished = true;
                    return seen;
                }
            }
            if enough(&seen) {
                return seen;
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Bytes and processes

/// What `seq 1 n` prints through a PTY (which turns `\n` into `\r\n`).
fn seq_output(n: u32) -> Vec<u8> {
    let mut out = Vec::new();
    for i in 1..=n {
        write!(out, "{i}\r\n").unwrap();
    }
    out
}

fn sha256(bytes: &[u8]) -> String {
    let mut child = Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run sha256sum");
    child.stdin.take().unwrap().write_all(bytes).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Equal byte strings, or a failure that says where they part (not megabytes of dump).
fn assert_same(got: &[u8], want: &[u8], what: &str) {
    if got == want {
        return;
    }
    let at = got
        .iter()
        .zip(want)
        .position(|(a, b)| a != b)
        .unwrap_or(got.len().min(want.len()));
    let around = |b: &[u8]| {
        String::from_utf8_lossy(&b[at.saturating_sub(40)..(at + 40).min(b.len())]).to_string()
    };
    panic!(
        "{what}: {} bytes vs {} expected, first difference at byte {at}:\n got:  {:?}\n want: {:?}",
        got.len(),
        want.len(),
        around(got),
        around(want)
    );
}

/// PIDs of processes whose command line contains `marker` (what `pgrep -f` would find).
fn processes_with(marker: &str) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(Result::ok)
        .filter_map(|e| {
            let pid: u32 = e.file_name().to_str()?.parse().ok()?;
            let cmdline = std::fs::read(e.path().join("cmdline")).ok()?;
            contains(&cmdline, marker.as_bytes()).then_some(pid)
        })
        .collect()
}

/// Wait until no process with `marker` in its command line is left.
async fn wait_gone(marker: &str, what: &str) {
    let start = Instant::now();
    loop {
        let left = processes_with(marker);
        if left.is_empty() {
            return;
        }
        assert!(
            start.elapsed() < PATIENCE,
            "{what}: processes still running: {:?}",
            left.iter()
                .map(|p| format!(
                    "{p}: {}",
                    String::from_utf8_lossy(
                        &std::fs::read(format!("/proc/{p}/cmdline")).unwrap_or_default()
                    )
                    .replace('\0', " ")
                ))
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// Tests

#[tokio::test]
async fn a_flood_read_across_a_reconnect_has_no_gap_and_no_duplicate() {
    let (_env, d) = setup("flood").await;
    let conn = Conn::of(&d);
    let id = start(&d, "task", Some("flood")).await;

    // The first viewer reads a part of the stream, then drops off mid-flood.
    let mut first = Viewer::open(&conn, &id, Some(0)).await;
    let part = first.read(0, |s| s.bytes.len() >= 1 << 20).await;
    assert!(
        !part.finished,
        "the stream ended before 1 MiB: {part:?}",
        part = (part.bytes.len(), &part.texts, part.close)
    );
    drop(first);
    let k = part.end();

    // The second resumes exactly there and reads to the end.
    let mut second = Viewer::open(&conn, &id, Some(k)).await;
    let end = second.hello["end"].as_u64().unwrap();
    assert!(
        end >= k,
        "the first viewer was sent {k} bytes, but the reconnection says the output ends at {end} and refuses `resume` {k} as resume_ahead"
    );
    let rest = second.read(k, |_| false).await;
    assert_eq!(rest.close, Some(1000), "normal close: {:?}", rest.texts);
    assert_eq!(rest.exit_code(), Some(0), "{:?}", rest.texts);
    assert_eq!(
        rest.states().last().unwrap()["state"],
        "exited",
        "{:?}",
        rest.texts
    );

    let mut received = part.bytes;
    received.extend_from_slice(&rest.bytes);
    let expected = seq_output(FLOOD_LINES);
    let stored = transcript(&d, &id).await;
    assert_same(
        &received,
        &stored,
        "the two viewers' bytes vs the transcript",
    );
    assert_same(&stored, &expected, "the transcript vs `seq` through a PTY");
    assert_eq!(sha256(&received), sha256(&expected));

    let s = &get_session(&d, &id).await["session"];
    assert_eq!(s["state"], "exited", "{s}");
    assert_eq!(s["exit_code"], 0, "{s}");
    assert_eq!(s["output_bytes"], expected.len() as u64, "{s}");
    assert_eq!(s["caged"], true, "{s}");
}

#[tokio::test]
async fn many_viewers_receive_identical_streams() {
    let (_env, d) = setup("viewers").await;
    let conn = Conn::of(&d);
    let id = start(&d, "task", Some("medium")).await;
    let viewers: Vec<_> = (0..8)
        .map(|_| {
            let (conn, id) = (conn.clone(), id.clone());
            tokio::spawn(async move {
                let mut v = Viewer::open(&conn, &id, Some(0)).await;
                v.read(0, |_| false).await
            })
        })
        .collect();
    let expected = seq_output(MEDIUM_LINES);
    for (i, v) in futures_util::future::join_all(viewers)
        .await
        .into_iter()
        .enumerate()
    {
        let seen = v.unwrap();
        assert_eq!(seen.close, Some(1000), "viewer {i}: {:?}", seen.texts);
        assert_eq!(seen.exit_code(), Some(0), "viewer {i}: {:?}", seen.texts);
        assert_same(&seen.bytes, &expected, &format!("viewer {i}"));
    }
    assert_same(&transcript(&d, &id).await, &expected, "transcript");
}

#[tokio::test]
async fn a_stalled_viewer_stalls_neither_the_run_nor_other_viewers() {
    let (_env, d) = setup("stalled").await;
    let conn = Conn::of(&d);
    let id = start(&d, "task", Some("big")).await;
    // Asks for everything, then never reads: its socket buffers fill after a few MB.
    let stalled = Viewer::open(&conn, &id, Some(0)).await;

    let mut reader = Viewer::open(&conn, &id, Some(0)).await;
    let seen = reader.read(0, |_| false).await;
    assert_eq!(seen.close, Some(1000), "{:?}", seen.texts);
    assert_eq!(seen.exit_code(), Some(0), "{:?}", seen.texts);
    let expected = seq_output(BIG_LINES);
    assert_same(&seen.bytes, &expected, "the reading viewer");

    let s = &get_session(&d, &id).await["session"];
    assert_eq!(s["state"], "exited", "{s}");
    assert_eq!(s["output_bytes"], expected.len() as u64, "{s}");
    assert_same(&transcript(&d, &id).await, &expected, "transcript");
    drop(stalled);
}

#[tokio::test]
async fn kill_during_output_ends_every_process_and_keeps_the_transcript() {
    let (env, d) = setup("kill").await;
    let conn = Conn::of(&d);
    let operator = whoami(&d).await;
    let id = start(&d, "task", Some("yes")).await;
    let mut v = Viewer::open(&conn, &id, Some(0)).await;
    let early = v.read(0, |s| s.bytes.len() >= 64 * 1024).await;
    assert!(
        !early.finished,
        "`yes` stopped by itself: {:?}",
        early.texts
    );
    assert!(
        !processes_with(&env.marker).is_empty(),
        "the run's processes are not visible by their marker"
    );

    let (status, body) = d
        .call(Method::POST, &format!("/api/v1/sessions/{id}/kill"), None)
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["session"], id.as_str(), "{body}");

    // The viewer gets the rest of the output, the state, and a normal close.
    let rest = v.read(early.end(), |_| false).await;
    assert_eq!(rest.close, Some(1000), "{:?}", rest.texts);
    assert_eq!(rest.exit_code(), None, "a killed run has no exit frame");
    let last = rest.states().last().cloned().unwrap();
    assert_eq!(last["state"], "killed", "{:?}", rest.texts);
    assert_eq!(last["by"], operator.as_str(), "{:?}", rest.texts);

    let v = wait_session(&d, &id, "the end", ended).await;
    let s = &v["session"];
    assert_eq!(s["state"], "killed", "{v}");
    assert_eq!(s["reason"], operator.as_str(), "{v}");
    let states: Vec<&str> = v["transitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["state"].as_str().unwrap())
        .collect();
    assert_eq!(
        states,
        ["queued", "starting", "running", "stopping", "killed"],
        "{v}"
    );

    // The transcript is kept, and is what the viewer saw: lines of `yes`.
    let mut received = early.bytes;
    received.extend_from_slice(&rest.bytes);
    let stored = transcript(&d, &id).await;
    assert_same(&received, &stored, "the viewer's bytes vs the transcript");
    assert_eq!(s["output_bytes"], stored.len() as u64, "{s}");
    let line = format!("{}\r\n", env.marker);
    let whole = stored.len() - stored.len() % line.len();
    assert!(
        stored[..whole]
            .chunks(line.len())
            .all(|c| c == line.as_bytes()),
        "the transcript is not `yes` output"
    );
    assert!(line.as_bytes().starts_with(&stored[whole..]));

    wait_gone(&env.marker, "after the kill").await;

    // An ended run cannot be killed again.
    let (status, body) = d
        .call(Method::POST, &format!("/api/v1/sessions/{id}/kill"), None)
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
}

/// Lines (`\r\n`-ended) in what a viewer saw.
fn lines_in(seen: &Seen) -> usize {
    seen.bytes.windows(2).filter(|w| w == b"\r\n").count()
}

/// The output is `MARKER 1`, `MARKER 2`, ... each once, in order, up to its last whole line.
fn numbered_in_order(bytes: &[u8], marker: &str) -> usize {
    let text = String::from_utf8_lossy(bytes);
    let whole = &text[..text.rfind("\r\n").map_or(0, |at| at + 2)];
    let mut n = 0;
    for (i, line) in whole.split_terminator("\r\n").enumerate() {
        assert_eq!(line, format!("{marker} {}", i + 1), "line {}", i + 1);
        n = i + 1;
    }
    n
}

const KEEP: [(&str, &str); 1] = [("KAGED_SESSIONS_ON_DAEMON_STOP", "keep")];

/// A run outlives its daemon, stopped (SIGTERM) or killed (SIGKILL): it goes on in its
/// holder, the next start takes it up before it is ready, and a viewer resuming from its last
/// offset gets every line once, in order, with no gap, from the same processes; the stored
/// transcript is the same bytes.
#[tokio::test]
async fn a_run_outlives_its_daemon_and_the_next_start_takes_it_up() {
    for signal in ["TERM", "KILL"] {
        let (env, d) = setup_with(&format!("outlive-{signal}"), &KEEP).await;
        let d = d.failing_on_panics().keeping_runs();
        let id = start(&d, "task", Some("steady")).await;
        let mut v = Viewer::open(&Conn::of(&d), &id, Some(0)).await;
        let mut seen = v.read(0, |s| lines_in(s) >= 5).await;
        let mut pids = processes_with(&env.marker);
        pids.sort_unstable();
        assert!(!pids.is_empty(), "{signal}: the run's processes");

        d.signal(signal);
        // What was already on its way still counts as received.
        let after = v.read(seen.end(), |_| false).await;
        seen.bytes.extend_from_slice(&after.bytes);
        drop(v);
        let (status, log) = d.stop_after_signal();
        if signal == "TERM" {
            assert!(status.success(), "{status}: {log}");
        }
        // No daemon now: the run goes on, and so does its transcript.
        tokio::time::sleep(Duration::from_millis(600)).await;
        let mut now = processes_with(&env.marker);
        now.sort_unstable();
        assert_eq!(now, pids, "{signal}: the same processes, still running");

        let d =
            Daemon::start_with(&env.home(), &["--bind", "127.0.0.1:0"], &KEEP).failing_on_panics();
        let s = &get_session(&d, &id).await["session"];
        assert_eq!(
            s["state"], "running",
            "{signal}: taken up before ready: {s}"
        );
        let mut v = Viewer::open(&Conn::of(&d), &id, Some(seen.end())).await;
        let target = lines_in(&seen) + 10;
        let more = v.read(seen.end(), |s| lines_in(s) >= 10).await;
        seen.bytes.extend_from_slice(&more.bytes);
        assert!(lines_in(&seen) >= target, "{signal}: the stream went on");
        let lines = numbered_in_order(&seen.bytes, &env.marker);
        assert!(lines >= target - 1, "{signal}: {lines} lines");
        let mut now = processes_with(&env.marker);
        now.sort_unstable();
        assert_eq!(now, pids, "{signal}: still the same processes");

        let (status, body) = d
            .call(Method::POST, &format!("/api/v1/sessions/{id}/kill"), None)
            .await;
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
        let v = wait_session(&d, &id, "being killed", ended).await;
        assert_eq!(v["session"]["state"], "killed", "{v}");
        wait_gone(&env.marker, "after the kill").await;
        let stored = transcript(&d, &id).await;
        assert!(stored.len() >= seen.bytes.len(), "{signal}");
        assert_same(
            &stored[..seen.bytes.len()],
            &seen.bytes,
            "the transcript vs what the viewers received",
        );
        numbered_in_order(&stored, &env.marker);
        let kinds: Vec<String> = d.api_get("/api/v1/audit?limit=200").await["events"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["detail"]["session"] == id.as_str())
            .map(|e| e["kind"].as_str().unwrap().to_string())
            .collect();
        assert!(
            kinds.contains(&"session.reattached".to_string()),
            "{kinds:?}"
        );
        assert_eq!(
            kinds.contains(&"session.detached".to_string()),
            signal == "TERM",
            "{signal}: {kinds:?}"
        );
    }
}

/// A run whose cage has a network allowlist outlives its daemon too, stopped (SIGTERM) or
/// killed (SIGKILL): its egress directory (bound in its cage) is kept while no daemon runs, the next start serves the same allowlist
/// there again, with its audit (`cage.egress`), and the same process reaches the allowed
/// server through it while a destination off the list is still refused. When the run ends, the
/// directory goes.
#[tokio::test]
async fn an_allowlisted_run_outlives_its_daemon_and_its_proxy_is_served_again() {
    for signal in ["TERM", "KILL"] {
        let tmp = tempfile::tempdir().unwrap();
        let marker = format!("kaged-sessions-egress-keep-{signal}-{}", std::process::id());
        let (allowed, refused) = (loopback_http(), loopback_http());
        let project = tmp.path().join("netted");
        std::fs::create_dir_all(project.join(".kaged")).unwrap();
        // Each line of input: one request to each server through the cage's proxy.
        std::fs::write(
            project.join("probe.py"),
            format!(
                r#"import sys, urllib.request as u
print('probe ready', flush=True)
for line in sys.stdin:
    n = line.strip()
    for p in ({allowed}, {refused}):
        try:
            u.urlopen(f'http://127.0.0.1:{{p}}/', timeout=10).read()
            print('ok', p, n, flush=True)
        except Exception as e:
            print('no', p, n, type(e).__name__, flush=True)
"#
            ),
        )
        .unwrap();
        std::fs::write(
            project.join(".kaged/project.yaml"),
            format!(
                "version: 1\nproject: netted\nprimary:\n  command: [python3, probe.py, {marker}]\n  cage:\n    network:\n      allow: [\"127.0.0.1:{allowed}\"]\n"
            ),
        )
        .unwrap();
        let home = tmp.path().join("home");
        // A temporary directory of its own (where the run's egress directory is made), shared
        // below with another daemon only.
        let tmpdir = tmp.path().join("tmp");
        std::fs::create_dir(&tmpdir).unwrap();
        std::fs::set_permissions(&tmpdir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let daemon_env = [KEEP[0], ("TMPDIR", tmpdir.to_str().unwrap())];
        let d = Daemon::start_with(&home, &["--bind", "127.0.0.1:0"], &daemon_env)
            .failing_on_panics()
            .keeping_runs();
        load_project(&d, &project).await;
        let (status, body) = d
            .call(
                Method::POST,
                "/api/v1/projects/netted/sessions",
                Some(json!({"kind": "agent", "name": "primary"})),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        let id = body["session"]["id"].as_str().unwrap().to_string();
        let probed = |round: &'static str| {
            move |s: &Seen| {
                contains(&s.bytes, format!("ok {allowed} {round}").as_bytes())
                    && contains(&s.bytes, format!(" {refused} {round}").as_bytes())
            }
        };
        let mut v = Viewer::open(&Conn::of(&d), &id, Some(0)).await;
        let mut seen = v.read(0, |s| contains(&s.bytes, b"probe ready")).await;
        v.input(b"before\n").await;
        let more = v.read(seen.end(), probed("before")).await;
        seen.bytes.extend_from_slice(&more.bytes);
        let text = String::from_utf8_lossy(&seen.bytes).to_string();
        assert!(probed("before")(&seen), "{text}");
        assert!(text.contains(&format!("no {refused} before")), "{text}");
        let mut pids = processes_with(&marker);
        pids.sort_unstable();
        assert!(!pids.is_empty(), "the run's processes");
        let held = home.join(format!("run/holders/{}.sock", &id[..16]));
        let egress_dir = kaged_holder::Client::connect(&held, Some(Duration::from_secs(5)))
            .unwrap()
            .info()
            .unwrap()
            .egress_dir
            .clone()
            .map(PathBuf::from)
            .expect("the holder reports the run's egress directory");
        assert!(egress_dir.is_dir(), "{}", egress_dir.display());
        drop(v);

        d.signal(signal);
        let (status, log) = d.stop_after_signal();
        if signal == "TERM" {
            assert!(status.success(), "{status}: {log}");
        }
        tokio::time::sleep(Duration::from_millis(600)).await;
        let mut now = processes_with(&marker);
        now.sort_unstable();
        assert_eq!(
            now, pids,
            "the same processes, still running without a daemon"
        );
        assert!(
            egress_dir.is_dir(),
            "{signal}: the run's egress directory (bound in its cage) went with the daemon"
        );
        // Another daemon starting meanwhile (its sweep of what dead daemons left) leaves it:
        // the run's holder holds it.
        let (status, log) = Daemon::start_with(
            &tmp.path().join("other-home"),
            &["--bind", "127.0.0.1:0"],
            &daemon_env,
        )
        .stop();
        assert!(status.success(), "{log}");
        assert!(
            egress_dir.is_dir(),
            "{signal}: another daemon's start swept a kept run's egress directory: {log}"
        );
        // A stopping daemon stops the proxy; a killed one leaves its socket, stale, for the next
        // start to replace.
        assert_eq!(
            egress_dir.join("egress.sock").exists(),
            signal == "KILL",
            "{signal}"
        );

        let d =
            Daemon::start_with(&home, &["--bind", "127.0.0.1:0"], &daemon_env).failing_on_panics();
        let s = &get_session(&d, &id).await["session"];
        assert_eq!(
            s["state"],
            "running",
            "taken up, not ended: {s}\n{}",
            d.stderr_text()
        );
        let mut v = Viewer::open(&Conn::of(&d), &id, Some(seen.end())).await;
        v.input(b"after\n").await;
        let after = v.read(seen.end(), probed("after")).await;
        let text = String::from_utf8_lossy(&after.bytes).to_string();
        assert!(
            text.contains(&format!("ok {allowed} after")),
            "the allowed server is not reached after the restart: {text}"
        );
        assert!(
            text.contains(&format!("no {refused} after")),
            "a destination off the list is not refused after the restart: {text}"
        );
        let s = &get_session(&d, &id).await["session"];
        assert_eq!(s["state"], "running", "{s}");
        let mut now = processes_with(&marker);
        now.sort_unstable();
        assert_eq!(now, pids, "still the same processes");

        // The audit: let go with its proxy stopped, taken up with it served again, and the
        // decisions of the proxy served again recorded as before (a refusal before and after).
        let audit = d.api_get("/api/v1/audit?limit=500").await;
        let ours: Vec<&Value> = audit["events"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["detail"]["session"] == id.as_str())
            .collect();
        let one = |kind: &str| {
            ours.iter()
                .find(|e| e["kind"] == kind)
                .unwrap_or_else(|| panic!("no {kind} in {ours:?}"))
        };
        if signal == "TERM" {
            assert_eq!(
                one("session.detached")["detail"]["egress"],
                "stopped until the next start",
                "{ours:?}"
            );
        }
        assert_eq!(
            one("session.reattached")["detail"]["egress"],
            "resumed",
            "{ours:?}"
        );
        let refusals = ours
            .iter()
            .filter(|e| {
                e["kind"] == "cage.egress"
                    && e["detail"]["port"] == refused
                    && e["detail"]["decision"] == "refused"
            })
            .count();
        // One per proxy (a killed daemon may not have written its own).
        assert!(
            refusals == 2 || (signal == "KILL" && refusals == 1),
            "{signal}: {refusals}: {ours:?}"
        );

        let (status, body) = d
            .call(Method::POST, &format!("/api/v1/sessions/{id}/kill"), None)
            .await;
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
        let v = wait_session(&d, &id, "being killed", ended).await;
        assert_eq!(v["session"]["state"], "killed", "{v}");
        assert_ne!(
            v["session"]["reason"].as_str().unwrap_or_default(),
            "kaged: the run's network allowlist proxy could not be served again after kaged restarted",
            "{v}"
        );
        wait_gone(&marker, "after the kill").await;
        let gone = Instant::now();
        while egress_dir.exists() {
            assert!(
                gone.elapsed() < PATIENCE,
                "the egress directory outlived its run: {}",
                egress_dir.display()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// A run that ends while no daemon runs is recorded at the next start with its real exit code
/// and end time, and its transcript's extent.
#[tokio::test]
async fn a_run_that_ended_while_kaged_was_away_is_recorded_with_its_exit() {
    let (env, d) = setup_with("away", &KEEP).await;
    let d = d.failing_on_panics().keeping_runs();
    let id = start(&d, "task", Some("brief")).await;
    wait_session(&d, &id, "running", |s| s["state"] == "running").await;
    let (status, log) = d.stop();
    assert!(status.success(), "{log}");
    wait_gone(&env.marker, "the brief task's end").await;
    // Its holder leaves once the run ended (nobody is attached to take the end).
    let socket_gone = Instant::now();
    while std::fs::read_dir(env.home().join("run/holders"))
        .map(|d| d.flatten().count() > 0)
        .unwrap_or(false)
    {
        assert!(socket_gone.elapsed() < PATIENCE, "the holder stays");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let restarted_at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let d = Daemon::start_with(&env.home(), &["--bind", "127.0.0.1:0"], &KEEP).failing_on_panics();
    let v = wait_session(&d, &id, "its end recorded", ended).await;
    let s = &v["session"];
    let stored = transcript(&d, &id).await;
    assert_eq!(
        String::from_utf8_lossy(&stored),
        format!("{} brief\r\n", env.marker),
        "{v}"
    );
    assert_eq!(s["state"], "exited", "{v}");
    assert_eq!(s["exit_code"], 7, "{v}");
    assert!(s["ended_at_ms"].as_i64().unwrap() < restarted_at, "{v}");
    assert_eq!(s["output_bytes"].as_u64(), Some(stored.len() as u64), "{v}");
}

/// `on_daemon_stop = "kill"` ends the runs with the daemon as before holders; so does `kaged
/// stop --kill-runs` under `keep`, while a plain `kaged stop` keeps them.
#[tokio::test]
async fn kill_on_stop_and_kaged_stop_kill_runs_end_the_runs() {
    let (env, d) = setup("stopkill").await; // the harness's default: kill
    let id = start(&d, "task", Some("steady")).await;
    wait_session(&d, &id, "running", |s| s["state"] == "running").await;
    let (status, log) = d.stop();
    assert!(status.success(), "{log}");
    wait_gone(&env.marker, "on_daemon_stop = kill").await;

    let d = Daemon::start_with(&env.home(), &["--bind", "127.0.0.1:0"], &KEEP).keeping_runs();
    let v = get_session(&d, &id).await;
    assert_eq!(v["session"]["state"], "killed", "{v}");
    let kept = start(&d, "task", Some("steady")).await;
    wait_session(&d, &kept, "running", |s| s["state"] == "running").await;
    let out = d.cli(&["stop"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (status, _) = d.stop_after_signal();
    assert!(status.success());
    assert!(
        !processes_with(&env.marker).is_empty(),
        "kaged stop keeps the run"
    );

    let d = Daemon::start_with(&env.home(), &["--bind", "127.0.0.1:0"], &KEEP);
    assert_eq!(get_session(&d, &kept).await["session"]["state"], "running");
    let out = d.cli(&["stop", "--kill-runs"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_gone(&env.marker, "kaged stop --kill-runs").await;
    let (status, _) = d.stop_after_signal();
    assert!(status.success());
    let d = Daemon::start_with(&env.home(), &["--bind", "127.0.0.1:0"], &KEEP);
    let v = get_session(&d, &kept).await;
    assert_eq!(v["session"]["state"], "killed", "{v}");
    assert_eq!(v["session"]["reason"], "kaged: daemon stopping", "{v}");
}

#[tokio::test]
async fn a_terminal_takes_input_and_resizes() {
    let (_env, d) = setup("terminal").await;
    let conn = Conn::of(&d);
    let id = start(&d, "terminal", None).await;
    let mut v = Viewer::open(&conn, &id, Some(0)).await;
    v.text(json!({"type": "resize", "rows": 40, "cols": 120}))
        .await;
    v.input(b"stty size\n").await;
    let seen = v.read(0, |s| contains(&s.bytes, b"40 120")).await;
    assert!(
        contains(&seen.bytes, b"40 120"),
        "no `40 120` in {:?}",
        String::from_utf8_lossy(&seen.bytes)
    );
    let s = &get_session(&d, &id).await["session"];
    assert_eq!(
        (s["rows"].as_u64(), s["cols"].as_u64()),
        (Some(40), Some(120)),
        "{s}"
    );

    v.input(b"exit 3\n").await;
    let rest = v.read(seen.end(), |_| false).await;
    assert_eq!(rest.close, Some(1000), "{:?}", rest.texts);
    assert_eq!(rest.exit_code(), Some(3), "{:?}", rest.texts);
    let v = wait_session(&d, &id, "the end", ended).await;
    assert_eq!(v["session"]["state"], "exited", "{v}");
    assert_eq!(v["session"]["exit_code"], 3, "{v}");
}

/// Events from an events socket until `done` holds for one; the `hello` is checked and skipped.
async fn read_events(ws: &mut Ws, done: impl Fn(&Value) -> bool) -> Vec<Value> {
    let mut events = Vec::new();
    loop {
        match next_frame(ws).await {
            Frame::Text(t) if t["type"] == "hello" => {
                assert!(events.is_empty(), "hello after events: {t}");
                assert!(t["identity"].is_string(), "{t}");
            }
            Frame::Text(t) => {
                let stop = done(&t);
                events.push(t);
                if stop {
                    return events;
                }
            }
            other => panic!("unexpected on the events socket: {other:?}; so far: {events:?}"),
        }
    }
}

fn ended_event(id: &str) -> impl Fn(&Value) -> bool + '_ {
    move |e: &Value| e["session"] == id && e["type"] == "run.ended"
}

/// The (type, state) of one session's events, and a check that all cursors increase.
fn summary(events: &[Value], id: &str) -> Vec<(String, String)> {
    let cursors: Vec<i64> = events
        .iter()
        .map(|e| e["cursor"].as_i64().unwrap())
        .collect();
    assert!(
        cursors.windows(2).all(|w| w[0] < w[1]),
        "cursors do not increase: {cursors:?}"
    );
    events
        .iter()
        .filter(|e| e["session"] == id)
        .map(|e| {
            (
                e["type"].as_str().unwrap().to_string(),
                e["state"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn life_of_a_task() -> Vec<(String, String)> {
    [
        ("session.created", "queued"),
        ("session.state", "starting"),
        ("run.started", "running"),
        ("run.ended", "exited"),
    ]
    .iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect()
}

#[tokio::test]
async fn events_replay_since_a_cursor_and_then_stream() {
    let (_env, d) = setup("events").await;
    let conn = Conn::of(&d);
    let first = start(&d, "task", Some("hello")).await;
    wait_session(&d, &first, "the end", ended).await;

    let mut ws = conn.ws("/api/v1/events?since=0").await.unwrap();
    let replay = read_events(&mut ws, ended_event(&first)).await;
    assert_eq!(summary(&replay, &first), life_of_a_task(), "{replay:?}");
    assert_eq!(replay[3]["detail"]["code"], 0, "{replay:?}");
    let last = replay.last().unwrap()["cursor"].as_i64().unwrap();
    drop(ws);

    // Away for a while: what happened meanwhile is replayed, nothing older.
    let second = start(&d, "task", Some("hello")).await;
    wait_session(&d, &second, "the end", ended).await;
    let mut ws = conn
        .ws(&format!("/api/v1/events?since={last}"))
        .await
        .unwrap();
    let missed = read_events(&mut ws, ended_event(&second)).await;
    assert!(
        missed
            .iter()
            .all(|e| e["cursor"].as_i64().unwrap() > last && e["session"] == second.as_str()),
        "since={last} replayed older events: {missed:?}"
    );
    assert_eq!(summary(&missed, &second), life_of_a_task(), "{missed:?}");

    // Then live: a new run streams on the same socket, continuing the cursors.
    let last = missed.last().unwrap()["cursor"].as_i64().unwrap();
    let third = start(&d, "task", Some("hello")).await;
    let live = read_events(&mut ws, ended_event(&third)).await;
    assert!(
        live[0]["cursor"].as_i64().unwrap() > last,
        "{live:?} after {last}"
    );
    assert_eq!(summary(&live, &third), life_of_a_task(), "{live:?}");
}

/// Runs started at once change state from many threads at once (handlers, run threads): a
/// client following the live stream still receives every change exactly once, in cursor
/// order, the same list a replay from storage gives. (Events published out of id order were
/// lost to it: the stream skips ids at or below its cursor.)
#[tokio::test]
async fn concurrent_runs_lose_no_event_on_the_live_stream() {
    const RUNS: usize = 12;
    let (_env, d) = setup("events-concurrent").await;
    let conn = Conn::of(&d);
    let mut ws = conn.ws("/api/v1/events").await.unwrap();
    match next_frame(&mut ws).await {
        Frame::Text(t) if t["type"] == "hello" => {}
        other => panic!("expected the hello, got {other:?}"),
    }
    let starts = (0..RUNS).map(|_| {
        let d = &d;
        async move { start(d, "task", Some("hello")).await }
    });
    let ids = futures_util::future::join_all(starts).await;
    for id in &ids {
        wait_session(&d, id, "the end", ended).await;
    }
    // Every run ended (storage says so): the live stream has it all, or never will.
    let mut live = Vec::new();
    let deadline = Instant::now() + PATIENCE;
    while ids.iter().any(|id| !live.iter().any(ended_event(id))) {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => live.push(serde_json::from_str::<Value>(&t).unwrap()),
            Ok(Some(Ok(_))) => {}
            Ok(other) => panic!("the events socket ended: {other:?}; so far {live:?}"),
            Err(_) => break,
        }
    }
    let mut replay_ws = conn.ws("/api/v1/events?since=0").await.unwrap();
    let ends = std::cell::Cell::new(0);
    let replay = read_events(&mut replay_ws, |e| {
        if e["type"] == "run.ended" && ids.iter().any(|id| e["session"] == id.as_str()) {
            ends.set(ends.get() + 1);
        }
        ends.get() == RUNS
    })
    .await;
    let cursors = |events: &[Value]| -> Vec<i64> {
        events
            .iter()
            .filter(|e| ids.iter().any(|id| e["session"] == id.as_str()))
            .map(|e| e["cursor"].as_i64().unwrap())
            .collect()
    };
    assert_eq!(
        cursors(&live),
        cursors(&replay),
        "the live stream (left) lost or reordered events the replay (right) has"
    );
    for id in &ids {
        assert_eq!(summary(&live, id), life_of_a_task(), "{live:?}");
    }
}

/// Run the CLI against `d` with `input` on its stdin; gives up after `PATIENCE`.
fn cli_with_stdin(d: &Daemon, args: &[&str], input: &[u8]) -> std::process::Output {
    let pairs: Vec<(&str, &str)> = d
        .env
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let mut child = kaged_cmd(&pairs)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input).unwrap();
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(PATIENCE) {
        Ok(out) => out.unwrap(),
        Err(_) => {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
            panic!(
                "`kaged {}` did not finish within {PATIENCE:?}",
                args.join(" ")
            );
        }
    }
}

#[tokio::test]
async fn the_session_cli_starts_lists_reads_and_attaches() {
    let (_env, d) = setup("cli").await;
    let out = d.cli(&["session", "start", "demo", "--task", "hello", "--detach"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let id = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert!(
        id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()),
        "{id:?}"
    );
    wait_session(&d, &id, "the end", ended).await;

    let out = d.cli(&["session", "transcript", &id]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout, b"hello from kaged\r\n");
    assert_same(
        &out.stdout,
        &transcript(&d, &id).await,
        "CLI vs HTTP transcript",
    );

    let out = d.cli(&["session", "list"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let list = String::from_utf8(out.stdout).unwrap();
    let row = list
        .lines()
        .find(|l| l.starts_with(&id))
        .unwrap_or_else(|| panic!("{id} not listed:\n{list}"));
    assert!(
        row.contains("demo")
            && row.contains("task")
            && row.contains("hello")
            && row.contains("exit 0"),
        "{row}"
    );

    // Attach with piped stdin: the shell's exit status becomes the CLI's.
    let out = d.cli(&["session", "start", "demo", "--terminal", "--detach"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let tid = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let out = cli_with_stdin(
        &d,
        &["session", "attach", &tid],
        b"echo attached-$((3+4)); exit 7\n",
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(7),
        "stdout: {stdout}\nstderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("attached-7"), "{stdout}");
    let s = &wait_session(&d, &tid, "the end", ended).await["session"];
    assert_eq!(s["exit_code"], 7, "{s}");

    // A malformed id is refused by the CLI itself.
    let out = d.cli(&["session", "attach", "nope"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not a session id"));
}

fn assert_error(status: StatusCode, body: &Value, want: StatusCode, code: &str) {
    assert_eq!(status, want, "{body}");
    assert_eq!(body["error"]["code"], code, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{body}"
    );
}

#[tokio::test]
async fn errors_have_the_json_shape_and_the_right_code() {
    let (_env, d) = setup("errors").await;
    let conn = Conn::of(&d);
    let create = |slug: &str, body: Value| {
        let path = format!("/api/v1/projects/{slug}/sessions");
        let d = &d;
        async move { d.call(Method::POST, &path, Some(body)).await }
    };

    let (s, b) = create("nope", json!({"kind": "task", "name": "hello"})).await;
    assert_error(s, &b, StatusCode::NOT_FOUND, "not_found");
    let (s, b) = create("demo", json!({"kind": "bogus"})).await;
    assert_error(s, &b, StatusCode::BAD_REQUEST, "bad_request");
    let (s, b) = create("demo", json!({"kind": "task"})).await;
    assert_error(s, &b, StatusCode::BAD_REQUEST, "bad_request");
    let (s, b) = create("demo", json!({"kind": "task", "name": "ghost"})).await;
    assert_error(s, &b, StatusCode::BAD_REQUEST, "bad_request");
    let (s, b) = create("demo", json!({"kind": "terminal", "rows": 0})).await;
    assert_error(s, &b, StatusCode::BAD_REQUEST, "bad_request");
    let (s, b) = create("demo", json!({"kind": "terminal", "color": "red"})).await;
    assert_error(s, &b, StatusCode::BAD_REQUEST, "bad_request");

    let unknown = "0123456789abcdef0123456789abcdef";
    for id in ["zzz", "../../etc/passwd", unknown] {
        let id = id.replace('/', "%2F");
        for (method, path) in [
            (Method::GET, format!("/api/v1/sessions/{id}")),
            (Method::GET, format!("/api/v1/sessions/{id}/transcript")),
            (Method::POST, format!("/api/v1/sessions/{id}/kill")),
        ] {
            let (s, b) = d.call(method, &path, None).await;
            assert_error(s, &b, StatusCode::NOT_FOUND, "not_found");
        }
        match conn.ws(&format!("/api/v1/sessions/{id}/pty")).await {
            Err(tokio_tungstenite::tungstenite::Error::Http(r)) => {
                assert_eq!(r.status(), StatusCode::NOT_FOUND)
            }
            other => panic!(
                "attach to {id}: expected a 404, got {:?}",
                other.map(|_| ())
            ),
        }
    }

    // Ended sessions: no second kill, no transcript range backwards, no resume past the end.
    let id = start(&d, "task", Some("hello")).await;
    wait_session(&d, &id, "the end", ended).await;
    let (s, b) = d
        .call(Method::POST, &format!("/api/v1/sessions/{id}/kill"), None)
        .await;
    assert_error(s, &b, StatusCode::CONFLICT, "conflict");
    let (s, b) = d
        .call(
            Method::GET,
            &format!("/api/v1/sessions/{id}/transcript?start=5&end=2"),
            None,
        )
        .await;
    assert_error(s, &b, StatusCode::BAD_REQUEST, "bad_request");
    let mut v = Viewer::open(&conn, &id, Some(1 << 40)).await;
    match next_frame(&mut v.ws).await {
        Frame::Text(t) => assert_eq!(t["code"], "resume_ahead", "{t}"),
        other => panic!("expected a resume_ahead error, got {other:?}"),
    }
    assert!(matches!(
        next_frame(&mut v.ws).await,
        Frame::Closed(Some(1008))
    ));
}

/// Runs the daemon as `nobody` through setpriv when the suite runs as root (as CI does), else
/// as the current user: the whole caged flow must work without privilege.
#[tokio::test]
async fn a_caged_terminal_works_for_an_unprivileged_operator() {
    const NOBODY: u32 = 65534;
    let as_root = std::fs::metadata("/proc/self").unwrap().uid() == 0;
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let uid = if as_root {
        NOBODY
    } else {
        std::fs::metadata("/proc/self").unwrap().uid()
    };
    // The test binary may sit under a directory `nobody` cannot traverse.
    let bin = root.join("bin/kaged");
    std::fs::create_dir_all(bin.parent().unwrap()).unwrap();
    std::fs::copy(kaged_bin(), &bin).unwrap();
    let home = root.join("home");
    std::fs::create_dir_all(&home).unwrap();
    let project = root.join("project");
    std::fs::create_dir_all(project.join(".kaged")).unwrap();
    std::fs::write(
        project.join(".kaged/project.yaml"),
        project_yaml("kaged-sessions-nobody"),
    )
    .unwrap();
    let run = |cmd: &str, args: &[&str]| {
        assert!(
            Command::new(cmd).args(args).status().unwrap().success(),
            "{cmd} {args:?}"
        );
    };
    run(
        "chmod",
        &["0755", root.to_str().unwrap(), bin.to_str().unwrap()],
    );
    if as_root {
        run(
            "chown",
            &["-R", &format!("{NOBODY}:{NOBODY}"), root.to_str().unwrap()],
        );
    }
    let env: Vec<(String, String)> = vec![
        ("KAGED_HOME".into(), home.to_str().unwrap().into()),
        ("HOME".into(), home.to_str().unwrap().into()),
    ];
    let mut cmd = if as_root {
        let mut c = Command::new("setpriv");
        c.args([
            &format!("--reuid={NOBODY}"),
            &format!("--regid={NOBODY}"),
            "--clear-groups",
            "--",
        ]);
        c.arg(&bin);
        c
    } else {
        Command::new(&bin)
    };
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(env.iter().map(|(k, v)| (k, v)))
        .args(["start", "--bind", "127.0.0.1:0"]);
    let d = Daemon::spawn(cmd, &home, &home.join("run"), env).failing_on_panics();
    load_project(&d, &project).await;
    let operator = whoami(&d).await;
    if as_root {
        assert_eq!(operator, "user:nobody");
    }

    let id = start(&d, "terminal", None).await;
    let mut v = Viewer::open(&Conn::of(&d), &id, Some(0)).await;
    v.input(b"echo \"uid=$(id -u) caged=$KAGED_CAGE pwd=$(pwd)\"; exit 5\n")
        .await;
    let seen = v.read(0, |_| false).await;
    let text = String::from_utf8_lossy(&seen.bytes);
    assert!(
        text.contains(&format!("uid={uid} caged=1 pwd=/workspace")),
        "{text}"
    );
    assert_eq!(seen.exit_code(), Some(5), "{:?} {text}", seen.texts);

    let v = wait_session(&d, &id, "the end", ended).await;
    let s = &v["session"];
    assert_eq!(
        (s["state"].as_str(), s["exit_code"].as_i64()),
        (Some("exited"), Some(5)),
        "{v}"
    );
    assert_eq!(s["caged"], true, "{v}");
    assert_eq!(s["created_by"], operator.as_str(), "{v}");
    let file = home.join(format!("transcripts/{id}.out"));
    assert_eq!(std::fs::metadata(&file).unwrap().uid(), uid);
    assert_eq!(mode_of(&file), 0o600);
    assert_same(
        &std::fs::read(&file).unwrap(),
        &transcript(&d, &id).await,
        "transcript file vs HTTP",
    );
    let (status, log) = d.stop();
    assert!(status.success(), "{log}");
}

/// While a run ends, `GET /api/v1/sessions/{id}` must not contradict itself: a session it
/// reports as ended has its end recorded (exit code, end time, final transition). Polled
/// without pause over several short runs, to land in the moment the run ends.
#[tokio::test]
async fn a_session_reported_ended_has_its_end_recorded() {
    let (_env, d) = setup("consistent").await;
    for _ in 0..20 {
        let id = start(&d, "task", Some("hello")).await;
        let start = Instant::now();
        loop {
            let v = get_session(&d, &id).await;
            let s = &v["session"];
            if s["state"] == "exited" {
                let last = v["transitions"].as_array().unwrap().last().unwrap();
                assert!(
                    s["exit_code"] == 0 && s["ended_at_ms"].is_i64() && last["state"] == "exited",
                    "the session says exited, but its exit code, end time or final transition is missing: {v}"
                );
                break;
            }
            assert!(start.elapsed() < PATIENCE, "never ended: {v}");
        }
    }
}

/// An interactive POSIX `sh` (dash on Debian) in a cage must report the exit status it is
/// given, like bash does.
#[tokio::test]
async fn an_interactive_sh_in_a_cage_exits_with_its_status() {
    let (_env, d) = setup("dash").await;
    // The primary agent's command is `[sh]`: an interactive shell on the PTY.
    let id = start(&d, "agent", Some("primary")).await;
    let mut v = Viewer::open(&Conn::of(&d), &id, Some(0)).await;
    v.input(b"echo sum=$((3+4)); exit 3\n").await;
    let seen = v.read(0, |_| false).await;
    let text = String::from_utf8_lossy(&seen.bytes).to_string();
    assert!(text.contains("sum=7"), "{text}");
    assert_eq!(seen.exit_code(), Some(3), "output: {text:?}");
}

/// A viewer resumes at the offset it has received up to; the server must never refuse that
/// offset as ahead of the output. The viewer here reconnects after every frame while the run
/// floods, on a large screen that makes the daemon's screen model slow: that widens the moment
/// in which a frame may carry bytes the daemon has not counted in its end offset yet.
#[tokio::test]
async fn resuming_where_a_viewer_stopped_is_never_refused() {
    let (_env, d) = setup("resume").await;
    let conn = Conn::of(&d);
    let id = start_sized(&d, "task", Some("flood"), 1000, 1000).await;
    let mut received = Vec::new();
    for reconnect in 0..100 {
        let k = received.len() as u64;
        let mut v = Viewer::open(&conn, &id, Some(k)).await;
        let end = v.hello["end"].as_u64().unwrap();
        assert!(
            end >= k,
            "reconnect {reconnect}: this viewer was sent {k} bytes, but a new connection says the output ends at {end} and refuses `resume` {k} as resume_ahead"
        );
        let seen = v.read(k, |s| !s.bytes.is_empty()).await;
        received.extend_from_slice(&seen.bytes);
        if seen.finished {
            break;
        }
    }
    let (status, body) = d
        .call(Method::POST, &format!("/api/v1/sessions/{id}/kill"), None)
        .await;
    assert!(
        status == StatusCode::ACCEPTED || status == StatusCode::CONFLICT,
        "{status} {body}"
    );
    // The run drains what the flood left in the PTY through the 1000x1000 screen model before
    // it ends: slow on a loaded machine (a liveness bound, not a speed check).
    wait_session_within(&d, &id, "the end", Duration::from_secs(90), ended).await;
    let stored = transcript(&d, &id).await;
    assert!(stored.len() >= received.len());
    assert_same(
        &stored[..received.len()],
        &received,
        "the transcript vs what the viewer was sent",
    );
    let expected = seq_output(FLOOD_LINES);
    assert_same(
        &received,
        &expected[..received.len()],
        "what the viewer was sent vs `seq`",
    );
}

/// On a shared box a user token controls its own runs only: another user may watch a run but
/// neither type into it nor end it; the local operator may do both.
#[tokio::test]
async fn only_the_owner_or_the_local_operator_controls_a_run() {
    let (_env, d) = setup("owner").await;
    let token_for = |actor: &str| {
        let out = d.cli(&["tokens", "create", "--actor", actor]);
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    };
    let (alice, bob) = (token_for("alice"), token_for("bob"));
    let as_user = |token: &str, method: Method, path: &str| {
        plain_client()
            .request(method, format!("{}{path}", d.base))
            .header("authorization", format!("Bearer {token}"))
    };
    let created = as_user(&alice, Method::POST, "/api/v1/projects/demo/sessions")
        .json(&json!({"kind": "terminal"}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), StatusCode::CREATED);
    let body: Value = created.json().await.unwrap();
    let id = body["session"]["id"].as_str().unwrap().to_string();
    assert_eq!(body["session"]["created_by"], "alice", "{body}");
    // Bob can read it, but not end it.
    let seen = as_user(&bob, Method::GET, &format!("/api/v1/sessions/{id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(seen.status(), StatusCode::OK);
    let refused = as_user(&bob, Method::POST, &format!("/api/v1/sessions/{id}/kill"))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["code"], "forbidden", "{body}");
    assert!(get_session(&d, &id).await["session"]["state"] != "killed");
    // The local operator can.
    let (status, _) = d
        .call(Method::POST, &format!("/api/v1/sessions/{id}/kill"), None)
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    wait_session(&d, &id, "killed", |s| s["state"] == "killed").await;
}

/// A loopback HTTP server answering every request with 200 `ok` (bounded, test-owned).
fn loopback_http() -> u16 {
    use std::io::Read;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for mut s in listener.incoming().take(4).flatten() {
            let mut buf = [0u8; 4096];
            let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
            let _ = s.read(&mut buf);
            let _ =
                s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok");
        }
    });
    port
}

/// The audit trail of runs: every start (caged or not, and why not), end, kill and egress
/// decision of the daemon's proxy.
#[tokio::test]
async fn runs_are_audited_start_end_kill_and_each_egress_decision() {
    let tmp = tempfile::tempdir().unwrap();
    let (allowed, refused) = (loopback_http(), loopback_http());
    let project = tmp.path().join("audited");
    std::fs::create_dir_all(project.join(".kaged")).unwrap();
    let probe = format!(
        "import urllib.request as u\\nfor p in ({allowed}, {refused}):\\n    try: u.urlopen(f'http://127.0.0.1:{{p}}/', timeout=10).read(); print('ok', p)\\n    except Exception as e: print('no', p, e)"
    );
    std::fs::write(
        project.join(".kaged/project.yaml"),
        format!(
            "version: 1\nproject: audited\nprimary:\n  command: [python3, -c, \"{probe}\"]\n  cage:\n    network:\n      allow: [\"127.0.0.1:{allowed}\"]\n  subagents:\n    free:\n      command: [sleep, \"60\"]\n      cage: disabled\n"
        ),
    )
    .unwrap();
    let d = Daemon::start(&tmp.path().join("home")).failing_on_panics();
    load_project(&d, &project).await;
    let start_agent = |name: &'static str| {
        let d = &d;
        async move {
            let (status, body) = d
                .call(
                    Method::POST,
                    "/api/v1/projects/audited/sessions",
                    Some(json!({"kind": "agent", "name": name})),
                )
                .await;
            assert_eq!(status, StatusCode::CREATED, "{body}");
            body["session"]["id"].as_str().unwrap().to_string()
        }
    };
    let caged = start_agent("primary").await;
    let done = wait_session(&d, &caged, "exited", |s| s["ended_at_ms"].is_number()).await;
    assert_eq!(done["session"]["exit_code"], 0, "{done}");
    let out = String::from_utf8(transcript(&d, &caged).await).unwrap();
    assert!(out.contains(&format!("ok {allowed}")), "{out}");
    assert!(out.contains(&format!("no {refused}")), "{out}");
    let free = start_agent("free").await;
    let (status, _) = d
        .call(Method::POST, &format!("/api/v1/sessions/{free}/kill"), None)
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    wait_session(&d, &free, "killed", |s| s["ended_at_ms"].is_number()).await;

    let audit = d.api_get("/api/v1/audit?limit=200").await;
    let events = audit["events"].as_array().unwrap();
    let find = |kind: &str, pred: &dyn Fn(&Value) -> bool| {
        events
            .iter()
            .find(|e| e["kind"] == kind && pred(&e["detail"]))
            .unwrap_or_else(|| panic!("no {kind} event matching in {audit}"))
            .clone()
    };
    let started = find("session.start", &|d| d["session"] == caged.as_str());
    assert_eq!(started["detail"]["caged"], true);
    assert_eq!(
        started["detail"]["network"]["allow"][0],
        format!("127.0.0.1:{allowed}")
    );
    let uncaged = find("session.start", &|d| d["session"] == free.as_str());
    assert_eq!(uncaged["detail"]["caged"], false);
    assert!(
        uncaged["detail"]["uncaged_because"]
            .as_str()
            .unwrap()
            .contains("cage: disabled")
    );
    let yes = find("cage.egress", &|d| d["port"] == allowed);
    assert_eq!(yes["outcome"], "success");
    assert_eq!(yes["detail"]["decision"], "allowed");
    let no = find("cage.egress", &|d| d["port"] == refused);
    assert_eq!(no["outcome"], "failure");
    assert_eq!(no["detail"]["session"], caged.as_str());
    let ended = find("session.end", &|d| d["session"] == caged.as_str());
    assert_eq!(ended["detail"]["exit_code"], 0);
    assert_eq!(ended["detail"]["state"], "exited");
    let killed = find("session.kill", &|d| d["session"] == free.as_str());
    assert_eq!(killed["identity"], whoami(&d).await.as_str());
    let free_end = find("session.end", &|d| d["session"] == free.as_str());
    assert_eq!(free_end["detail"]["state"], "killed");
}

/// The `session.end` records of session `id` in the audit trail.
async fn end_records(d: &Daemon, id: &str) -> Vec<Value> {
    let audit = d.api_get("/api/v1/audit?limit=1000").await;
    audit["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "session.end" && e["detail"]["session"] == id)
        .cloned()
        .collect()
}

/// A kill racing the run's start (queued, cage being built, just spawned) or its exit: whichever
/// ends the run, its end is audited once, with the final state, and before the API reports the
/// run ended (the trail is read the moment the session reads ended, without waiting).
#[tokio::test]
async fn a_killed_run_is_audited_once_before_it_reads_ended() {
    let (_env, d) = setup("killrace").await;
    let mut ids = Vec::new();
    for delay_ms in [0u64, 0, 0, 1, 2, 5, 10, 20, 50, 200] {
        // The primary agent is an interactive `sh` in a cage: it never ends on its own.
        let id = start(&d, "agent", None).await;
        tokio::time::sleep(Duration::from_millis(delay_ms)).await;
        let (status, body) = d
            .call(Method::POST, &format!("/api/v1/sessions/{id}/kill"), None)
            .await;
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
        let v = wait_session(&d, &id, "the kill", ended).await;
        assert_eq!(v["session"]["state"], "killed", "{v}");
        let ends = end_records(&d, &id).await;
        assert_eq!(
            ends.len(),
            1,
            "killed after {delay_ms} ms: the session reads ended, so exactly one session.end: {ends:?}"
        );
        assert_eq!(ends[0]["detail"]["state"], "killed", "{ends:?}");
        ids.push(id);
    }
    // The runner reaps the killed processes after the end was recorded: no second record.
    tokio::time::sleep(Duration::from_secs(1)).await;
    for id in &ids {
        let ends = end_records(&d, id).await;
        assert_eq!(ends.len(), 1, "{id}: {ends:?}");
    }
}

/// Output that pauses longer than the screen model's quiet time (30 ms), then a viewer that
/// attaches without an offset (a snapshot): the screen follower, a thread outside the runtime
/// that waits with a timer, must live through it, and the snapshot shows the screen.
#[tokio::test]
async fn the_screen_model_survives_output_that_pauses() {
    let (_env, d) = setup("screen").await;
    let conn = Conn::of(&d);
    let id = start(&d, "terminal", None).await;
    let mut v = Viewer::open(&conn, &id, Some(0)).await;
    v.input(b"echo paused-$((6*7))\n").await;
    let seen = v.read(0, |s| contains(&s.bytes, b"paused-42")).await;
    assert!(contains(&seen.bytes, b"paused-42"), "{seen:?}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut late = Viewer::open(&conn, &id, None).await;
    match next_frame(&mut late.ws).await {
        Frame::Snapshot { data, .. } => assert!(
            contains(&data, b"paused-42"),
            "{:?}",
            String::from_utf8_lossy(&data)
        ),
        other => panic!("expected a snapshot, got {other:?}"),
    }
    v.input(b"exit\n").await;
    wait_session(&d, &id, "the end", ended).await;
    let (_, log) = d.stop();
    assert!(
        !log.contains("panicked"),
        "a thread of kaged panicked:\n{log}"
    );
}

/// The line kaged logs for a panic in a thread of session `id`, once it is there.
async fn panic_logged(d: &Daemon, id: &str, role: &str) -> String {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let log = d.stderr_text();
        if let Some(line) = log.lines().find(|l| {
            l.contains("ERROR")
                && l.contains("a thread of the run panicked")
                && l.contains(&format!("session={id}"))
                && l.contains(&format!("injected by KAGED_TEST_PANIC={role}"))
        }) {
            return line.to_string();
        }
        assert!(
            Instant::now() < deadline,
            "no error line for the panic of {role} in {id}:\n{log}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A panic in any thread of a run (injected: `KAGED_TEST_PANIC`, read by debug builds only)
/// reaches the log as an error with the session id and the panic's message. The runner's
/// panic (in the pump, mid-output) ends the run: its processes are killed and the session is
/// `failed` with the reason, its end audited; the others leave the run going, logged.
#[tokio::test]
async fn a_panic_in_a_run_thread_is_logged_with_its_session_and_never_leaves_a_run_unended() {
    let (env, d) = setup_with("panic-runner", &[("KAGED_TEST_PANIC", "runner")]).await;
    let id = start(&d, "task", Some("ticker")).await;
    let s = wait_session(&d, &id, "the end", ended).await;
    assert_eq!(s["session"]["state"], "failed", "{s}");
    let reason = s["session"]["reason"].as_str().unwrap();
    assert!(
        reason.contains("panicked") && reason.contains("KAGED_TEST_PANIC"),
        "{s}"
    );
    panic_logged(&d, &id, "runner").await;
    wait_gone(&env.marker, "the ticker of a run whose thread panicked").await;
    assert_eq!(end_records(&d, &id).await.len(), 1, "one session.end");
    drop(d);

    let (_env, d) = setup_with("panic-writer", &[("KAGED_TEST_PANIC", "writer")]).await;
    let conn = Conn::of(&d);
    let id = start(&d, "terminal", None).await;
    let mut v = Viewer::open(&conn, &id, Some(0)).await;
    v.input(b"echo typed\n").await;
    panic_logged(&d, &id, "writer").await;
    drop(v);
    let (status, body) = d
        .call(Method::POST, &format!("/api/v1/sessions/{id}/kill"), None)
        .await;
    assert!(status.is_success(), "{status} {body}");
    wait_session(&d, &id, "the end", ended).await;
    drop(d);

    let (_env, d) = setup_with("panic-screen", &[("KAGED_TEST_PANIC", "screen")]).await;
    let id = start(&d, "task", Some("hello")).await;
    panic_logged(&d, &id, "screen").await;
    let s = wait_session(&d, &id, "the end", ended).await;
    assert_eq!(s["session"]["state"], "exited", "{s}");
}

/// The daemon's resident memory in KiB (VmRSS of /proc/PID/status).
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// A cage hammering its proxy with refused CONNECTs (to 100 distinct destinations, as fast as
/// it can for a few seconds) leaves a bounded audit trail: the first destinations in full,
/// then summaries whose totals are the true count (what the proxy could not report is counted
/// and reported too), and the daemon's memory does not grow with the flood.
#[tokio::test]
async fn an_egress_flood_is_aggregated_into_a_bounded_audit_trail() {
    const SECONDS: u32 = 4;
    const DISTINCT: u32 = 100;
    let tmp = tempfile::tempdir().unwrap();
    let project = tmp.path().join("flooding");
    std::fs::create_dir_all(project.join(".kaged")).unwrap();
    std::fs::write(
        project.join("flood.py"),
        format!(
            r#"import socket, time
end = time.monotonic() + {SECONDS}
n = 0
while time.monotonic() < end:
    s = socket.create_connection(("127.0.0.1", 3128))
    s.sendall(f"CONNECT blocked{{n % {DISTINCT}}}.example:443 HTTP/1.1\r\n\r\n".encode())
    data = b""
    while True:
        c = s.recv(4096)
        if not c:
            break
        data += c
    s.close()
    if not data.startswith(b"HTTP/1.1 403"):
        print("unexpected", data[:80])
        break
    n += 1
print("made", n, flush=True)
"#
        ),
    )
    .unwrap();
    std::fs::write(
        project.join(".kaged/project.yaml"),
        "version: 1\nproject: flooding\nprimary:\n  command: [python3, flood.py]\n  cage:\n    network:\n      allow: [\"127.0.0.1:1\"]\n",
    )
    .unwrap();
    let home = tmp.path().join("home");
    let d = Daemon::start(&home).failing_on_panics();
    load_project(&d, &project).await;
    let pid = d.child.id();
    let rss_before = rss_kib(pid);
    let (status, body) = d
        .call(
            Method::POST,
            "/api/v1/projects/flooding/sessions",
            Some(json!({"kind": "agent"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let id = body["session"]["id"].as_str().unwrap().to_string();
    let done = wait_session(&d, &id, "exited", |s| s["ended_at_ms"].is_number()).await;
    let out = String::from_utf8(transcript(&d, &id).await).unwrap();
    assert_eq!(done["session"]["exit_code"], 0, "{done} {out}");
    let made: u64 = out
        .split_whitespace()
        .skip_while(|w| *w != "made")
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no count in {out:?}"));
    // The trail may still be catching up with the flood (it does today): wait until it stops
    // growing, so what is counted is all of it.
    let log = home.join("audit.log");
    let mut size = 0;
    let settle = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = std::fs::metadata(&log).unwrap().len();
        if now == size || settle.elapsed() > Duration::from_secs(120) {
            break;
        }
        size = now;
    }
    let rss_after = rss_kib(pid);
    let text = std::fs::read_to_string(&log).unwrap();
    let rows: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|e| e["detail"]["session"] == id.as_str())
        .collect();
    let egress: Vec<&Value> = rows.iter().filter(|e| e["kind"] == "cage.egress").collect();
    let summaries: Vec<&Value> = rows
        .iter()
        .filter(|e| e["kind"] == "cage.egress.summary")
        .collect();
    let bytes: usize = text
        .lines()
        .filter(|l| l.contains(&id))
        .map(|l| l.len() + 1)
        .sum();
    eprintln!(
        "egress flood: {made} CONNECTs made; {} audit rows for the run ({} cage.egress, {} summaries), {bytes} bytes; daemon VmRSS {rss_before} KiB -> {rss_after} KiB",
        rows.len(),
        egress.len(),
        summaries.len()
    );
    assert!(
        made > 1000,
        "the flood was too slow to test anything: {made}"
    );
    // The first 20 distinct destinations in full, a summary every minute and one at the end;
    // start, limits and end around them.
    assert!(egress.len() <= 20, "{} cage.egress rows", egress.len());
    assert!(
        !summaries.is_empty() && summaries.len() <= 3,
        "{} summaries",
        summaries.len()
    );
    assert!(rows.len() <= 20 + 3 + 3, "{} rows", rows.len());
    let last = summaries.last().unwrap()["detail"].clone();
    assert_eq!(last["final"], true, "{last}");
    let refused = last["totals"]["refused"].as_u64().unwrap();
    let dropped = last["totals"]["dropped"].as_u64().unwrap();
    assert_eq!(last["totals"]["allowed"], 0, "{last}");
    assert!(
        refused <= made && refused + dropped >= made,
        "made {made}, summary {last}"
    );
    // Top destinations in full, the rest counted: 100 distinct ones in all.
    let listed = last["destinations"].as_array().unwrap();
    assert!(!listed.is_empty() && listed.len() <= 10, "{last}");
    let listed_count: u64 = listed.iter().map(|d| d["count"].as_u64().unwrap()).sum();
    assert_eq!(
        listed_count + last["others"]["count"].as_u64().unwrap(),
        refused,
        "{last}"
    );
    assert_eq!(
        listed.len() as u64 + last["others"]["destinations"].as_u64().unwrap(),
        u64::from(DISTINCT),
        "{last}"
    );
    assert!(
        rss_after < rss_before + 64 * 1024,
        "daemon VmRSS grew from {rss_before} KiB to {rss_after} KiB"
    );
}

/// Holders of runs the daemon does not know (its database wiped while they ran) are reported
/// by `kaged status` and `kaged doctor`, and left running: never killed, never taken up.
#[tokio::test]
async fn holders_of_unknown_runs_are_reported_and_left_alone() {
    let (env, d) = setup_with("unknown", &KEEP).await;
    let d = d.failing_on_panics().keeping_runs();
    let id = start(&d, "task", Some("steady")).await;
    wait_session(&d, &id, "running", |s| s["state"] == "running").await;
    d.signal("KILL");
    let _ = d.stop_after_signal();
    for file in ["kaged.db", "kaged.db-wal", "kaged.db-shm"] {
        let _ = std::fs::remove_file(env.home().join(file));
    }
    let d = Daemon::start_with(&env.home(), &["--bind", "127.0.0.1:0"], &KEEP).keeping_runs();
    let out = d.cli(&["status"]);
    let status = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{status}");
    assert!(
        status.contains("0 in run holders") && status.contains("1 other holder(s) below"),
        "{status}"
    );
    assert!(
        status.contains(&format!(
            "HOLDER    of a run this kaged does not know: session {id}"
        )),
        "{status}"
    );
    let doctor = d.cli(&["doctor"]);
    assert!(
        String::from_utf8_lossy(&doctor.stdout).contains("ok    run holders: 1 in "),
        "{}",
        String::from_utf8_lossy(&doctor.stdout)
    );
    let (code, _) = d.stop();
    assert!(code.success());
    assert!(!processes_with(&env.marker).is_empty(), "left running");
    let doctor = kaged_cmd(&[("KAGED_HOME", env.home().to_str().unwrap())])
        .arg("doctor")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&doctor.stdout);
    assert!(
        text.contains("warn  run holders: 1 in ")
            && text.contains(&format!("session {id} (pid "))
            && text.contains("`kaged start` takes them up"),
        "{text}"
    );
    kill_holders(&env.home().join("run"));
    wait_gone(&env.marker, "after the test's own kill").await;
}

/// Looks for run holders' sockets from where it runs: in the holders' directory given (where
/// it is on the host), then every socket it can see; tries to connect to each. Prints
/// `REACHED PATH` for a connection made, and `probe done` at the end.
const HOLDER_PROBE: &str = r#"
import os, socket, stat, sys
def attempt(path):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(2)
    try:
        s.connect(path)
        print("REACHED", path, flush=True)
    except OSError as e:
        print("refused", path, e.errno, flush=True)
    finally:
        s.close()
holders = sys.argv[1]
try:
    names = os.listdir(holders)
    print("listed", holders, names, flush=True)
    for name in names:
        attempt(os.path.join(holders, name))
except OSError as e:
    print("absent", holders, e.errno, flush=True)
for root, dirs, files in os.walk("/"):
    if root == "/":
        dirs[:] = [d for d in dirs if d not in ("proc", "sys", "dev")]
    for name in files:
        path = os.path.join(root, name)
        try:
            if stat.S_ISSOCK(os.lstat(path).st_mode):
                attempt(path)
        except OSError:
            pass
print("probe done", flush=True)
"#;

/// A run cannot reach its holder's socket (or any holder's) from inside its cage: the
/// holders' directory is not in a cage's view, and no socket the cage can see is one. The
/// same probe run on the host reaches them, so it would tell.
#[tokio::test]
async fn a_caged_run_cannot_reach_any_run_holders_socket() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("home");
    let d = Daemon::start_with(&home, &["--bind", "127.0.0.1:0"], &[]).failing_on_panics();
    let holders = d.runtime_dir().join("holders");
    let project = tmp.path().join("probe");
    std::fs::create_dir_all(project.join(".kaged")).unwrap();
    std::fs::write(project.join("probe.py"), HOLDER_PROBE).unwrap();
    std::fs::write(
        project.join(".kaged/project.yaml"),
        format!(
            "version: 1\nproject: demo\nprimary:\n  command: [sh]\ntasks:\n  probe: {{ command: [python3, probe.py, \"{}\"] }}\n  idle: {{ command: [sleep, \"60\"] }}\n",
            holders.display()
        ),
    )
    .unwrap();
    cage_writable(&project);
    load_project(&d, &project).await;
    // Another run's holder is there too while the probe looks.
    let idle = start(&d, "task", Some("idle")).await;
    let id = start(&d, "task", Some("probe")).await;
    let s = wait_session_within(&d, &id, "the probe's end", Duration::from_secs(120), ended).await;
    let out = String::from_utf8_lossy(&transcript(&d, &id).await).into_owned();
    assert!(out.contains("probe done"), "{s}\n{out}");
    assert!(!out.contains("REACHED"), "{out}");
    assert!(
        out.contains(&format!("absent {}", holders.display())),
        "{out}"
    );

    // The control: on the host, the same probe reaches the idle run's holder.
    let host = std::process::Command::new("python3")
        .args(["-c", HOLDER_PROBE, holders.to_str().unwrap()])
        .output()
        .unwrap();
    let host = String::from_utf8_lossy(&host.stdout);
    let sockets = std::fs::read_dir(&holders).unwrap().count();
    assert!(sockets >= 1, "the idle run's holder socket");
    assert!(
        host.lines()
            .any(|l| l.starts_with(&format!("REACHED {}", holders.display()))),
        "{host}"
    );
    let (status, body) = d
        .call(Method::POST, &format!("/api/v1/sessions/{idle}/kill"), None)
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
}

/// After an upgrade to a kaged that speaks no protocol version a kept run's holder does (a
/// debug knob plays it): the run goes on, status names the holder as incompatible with the
/// versions it speaks, and a kill still ends it (the frozen frames), recorded as killed.
#[tokio::test]
async fn a_holder_this_kaged_cannot_speak_to_is_reported_and_can_still_be_killed() {
    let (env, d) = setup_with("incompatible", &KEEP).await;
    let d = d.failing_on_panics().keeping_runs();
    let id = start(&d, "task", Some("steady")).await;
    let mut v = Viewer::open(&Conn::of(&d), &id, Some(0)).await;
    v.read(0, |s| lines_in(s) >= 3).await;
    drop(v);
    let (status, log) = d.stop();
    assert!(status.success(), "{status}: {log}");
    assert!(!processes_with(&env.marker).is_empty(), "the run goes on");

    let mut newer = KEEP.to_vec();
    newer.push(("KAGED_TEST_CLIENT_PROTOCOL", "2"));
    let d = Daemon::start_with(&env.home(), &["--bind", "127.0.0.1:0"], &newer).failing_on_panics();
    let s = get_session(&d, &id).await;
    assert_eq!(s["session"]["state"], "running", "{s}");
    let status = d.api_get("/api/v1/status").await;
    let incompatible = &status["holders"]["incompatible"];
    assert_eq!(
        incompatible[0]["versions"],
        serde_json::json!([1]),
        "{status}"
    );
    let (code, body) = d
        .call(Method::POST, &format!("/api/v1/sessions/{id}/kill"), None)
        .await;
    assert_eq!(code, StatusCode::ACCEPTED, "{body}");
    let v = wait_session(&d, &id, "killed", ended).await;
    assert_eq!(v["session"]["state"], "killed", "{v}");
    wait_gone(&env.marker, "after the kill").await;
    let events = d.api_get("/api/v1/audit?limit=200").await;
    assert!(
        events["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["kind"] == "session.reattached"
                && e["detail"]["followed"] == false
                && e["detail"]["holder_versions"] == serde_json::json!([1])),
        "{events}"
    );
}
