//! Sessions through the real daemon, each figure next to a baseline measured in the same run:
//! output throughput, bytes on the wire, keystroke echo, and 100 concurrent sessions with a
//! viewer each (daemon RSS and CPU). Baselines: the same command on a raw PTY, the same command
//! in the same cage (`kaged cage run`) on a raw PTY, and Jupyter Server's terminals (terminado),
//! installed into `target/bench-venv` on first use (skipped with the reason if that fails, or
//! when `KAGED_BENCH_NO_JUPYTER=1`). Prints one table; nothing here asserts a time.
//!
//! The memory part (daemon RSS idle, after runs ended, per idle session, under a 150 MB flood
//! with a stalled viewer; the daemon started with `RUST_BACKTRACE=1` as an operator's shell may
//! have it) also runs alone: `KAGED_BENCH_ONLY=memory cargo bench -p kaged --bench sessions`.
//!
//! Run: cargo bench -p kaged --bench sessions

#![allow(clippy::unwrap_used, clippy::expect_used)] // bench code: a panic reports a broken setup

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

/// Output of the throughput workload (raw PTY, cage, kaged).
const FLOOD_BYTES: u64 = 200_000_000;
/// Jupyter's terminals are much slower: a smaller flood keeps the run short.
const JUPYTER_FLOOD_BYTES: u64 = 80_000_000;
/// Each throughput figure is the best of this many runs (a 2-core machine is noisy).
const FLOOD_RUNS: usize = 2;
const ECHO_WARMUP: usize = 200;
const ECHO_SAMPLES: usize = 1500;
const SESSIONS: usize = 100;
/// The daemon caps live sessions at 16 a project and 32 an operator, so 100 sessions are
/// spread over 10 projects and 4 token identities.
const PROJECTS: usize = 10;
const OPERATORS: usize = 4;
const CPU_WINDOW: Duration = Duration::from_secs(10);
/// The memory part: runs started and ended, idle sessions kept, the flood behind a stalled viewer.
const MEMORY_ENDED_RUNS: usize = 50;
const MEMORY_IDLE_SESSIONS: usize = 30;
const MEMORY_FLOOD_BYTES: u64 = 150_000_000;
const READY_PREFIX: &str = "kaged: ready — launch URL: ";

/// Waits until the viewer is attached, then prints `$1` bytes of `x`.
const FLOOD_SH: &str = "sleep 0.5; head -c \"$1\" /dev/zero | tr '\\0' x\n";
/// Echoes every byte at once (raw mode: no line discipline in the way), after a marker.
const ECHO_SH: &str = "stty raw -echo; printf READY; exec cat\n";
const TICK_SH: &str = "while :; do sleep 1; echo tick; done\n";

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

// ---------------------------------------------------------------------------------------------
// Results

#[derive(Clone, Copy)]
struct Flood {
    /// Output bytes received.
    bytes: u64,
    /// From the first chunk of the flood to the end (EOF, exit frame, disconnect).
    secs: f64,
    /// WebSocket bytes on the wire (payloads + frame headers) and the terminal output bytes
    /// they carried, when there is a WebSocket.
    wire: Option<(u64, u64)>,
}

impl Flood {
    fn best(runs: impl IntoIterator<Item = Flood>) -> Option<Flood> {
        runs.into_iter()
            .max_by(|a, b| a.mbps().total_cmp(&b.mbps()))
    }
    fn mbps(&self) -> f64 {
        self.bytes as f64 / self.secs / 1e6
    }
    fn overhead_pct(&self) -> Option<f64> {
        self.wire
            .map(|(wire, out)| (wire as f64 - out as f64) / out as f64 * 100.0)
    }
}

#[derive(Clone, Copy)]
struct Echo {
    p50: f64,
    p99: f64,
}

fn echo_of(mut samples: Vec<Duration>) -> Echo {
    samples.sort();
    let at = |q: f64| {
        let i = ((samples.len() as f64 - 1.0) * q).round() as usize;
        samples[i].as_secs_f64() * 1000.0
    };
    Echo {
        p50: at(0.50),
        p99: at(0.99),
    }
}

#[derive(Default)]
struct Results {
    raw_flood: Option<Flood>,
    cage_flood: Option<Flood>,
    kaged_flood: Option<Flood>,
    jupyter_flood: Option<Flood>,
    raw_echo: Option<Echo>,
    cage_echo: Option<Echo>,
    kaged_echo: Option<Echo>,
    jupyter_echo: Option<Echo>,
    rss_idle_mib: Option<f64>,
    rss_busy_mib: Option<f64>,
    cpu_busy_pct: Option<f64>,
    jupyter_rss_idle_mib: Option<f64>,
    notes: Vec<String>,
}

/// RFC 6455 header of an unmasked (server → client) frame with `len` payload bytes.
fn ws_header(len: usize) -> u64 {
    match len {
        0..=125 => 2,
        126..=65535 => 4,
        _ => 10,
    }
}

fn wire_len(m: &Message) -> u64 {
    let len = match m {
        Message::Text(t) => t.len(),
        Message::Binary(b) | Message::Ping(b) | Message::Pong(b) => b.len(),
        Message::Close(c) => c.as_ref().map_or(0, |c| 2 + c.reason.len()),
        Message::Frame(f) => f.payload().len(),
    };
    len as u64 + ws_header(len)
}

// ---------------------------------------------------------------------------------------------
// Paths and files

/// `target/` (the bench runs as target/release/deps/sessions-HASH).
fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("own path");
    exe.ancestors()
        .nth(3)
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("target"))
}

fn kaged_bin() -> PathBuf {
    match option_env!("CARGO_BIN_EXE_kaged") {
        Some(p) => PathBuf::from(p),
        None => target_dir().join("release/kaged"),
    }
}

fn write_project(root: &Path, name: &str) {
    std::fs::create_dir_all(root.join(".kaged")).unwrap();
    let yaml = format!(
        "version: 1\nproject: {name}\nprimary:\n  command: [sh]\nterminals:\n  shell: [sh, echo.sh]\ntasks:\n  flood: {{ command: [sh, flood.sh, \"{FLOOD_BYTES}\"] }}\n  flood150: {{ command: [sh, flood.sh, \"{MEMORY_FLOOD_BYTES}\"] }}\n  tick: {{ command: [sh, tick.sh] }}\n  short: {{ command: [seq, \"1\", \"100000\"] }}\n  idle: {{ command: [sleep, \"3600\"] }}\n"
    );
    std::fs::write(root.join(".kaged/project.yaml"), yaml).unwrap();
    std::fs::write(root.join("flood.sh"), FLOOD_SH).unwrap();
    std::fs::write(root.join("echo.sh"), ECHO_SH).unwrap();
    std::fs::write(root.join("tick.sh"), TICK_SH).unwrap();
}

fn proc_status_kib(pid: u32, key: &str) -> Option<f64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = text.lines().find(|l| l.starts_with(key))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn rss_mib(pid: u32) -> Option<f64> {
    proc_status_kib(pid, "VmRSS:").map(|k| k / 1024.0)
}

/// utime + stime of `pid` in clock ticks.
fn cpu_ticks(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = text.rsplit_once(')')?.1.split_whitespace().collect();
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

fn clock_ticks_per_sec() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

// ---------------------------------------------------------------------------------------------
// Raw PTY baselines

struct RawPty {
    pty: pty_process::blocking::Pty,
    child: Child,
}

fn spawn_on_pty(argv: &[String], cwd: &Path) -> RawPty {
    let (pty, pts) = pty_process::blocking::open().expect("open a PTY");
    pty.resize(pty_process::Size::new(24, 80)).unwrap();
    let child = pty_process::blocking::Command::new(&argv[0])
        .args(&argv[1..])
        .current_dir(cwd)
        .env("TERM", "xterm-256color")
        .spawn(pts)
        .expect("spawn on the PTY");
    RawPty { pty, child }
}

/// Read a command's whole output from a PTY as fast as the kernel gives it.
fn flood_raw(argv: &[String], cwd: &Path) -> Flood {
    let mut run = spawn_on_pty(argv, cwd);
    let mut buf = vec![0u8; 64 * 1024];
    let (mut first, mut last, mut bytes) = (None, Instant::now(), 0u64);
    loop {
        let n = match run.pty.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if first.is_none() && buf[..n].windows(4).any(|w| w == b"xxxx") {
            first = Some(Instant::now());
        }
        if first.is_some() {
            bytes += n as u64;
            last = Instant::now();
        }
    }
    let _ = run.child.wait();
    Flood {
        bytes,
        secs: last
            .duration_since(first.unwrap_or(last))
            .as_secs_f64()
            .max(1e-9),
        wire: None,
    }
}

fn echo_raw(argv: &[String], cwd: &Path) -> Vec<Duration> {
    let mut run = spawn_on_pty(argv, cwd);
    let mut buf = vec![0u8; 4096];
    let mut seen = Vec::new();
    while !seen.windows(5).any(|w| w == b"READY") {
        let n = run.pty.read(&mut buf).expect("read the PTY");
        assert!(n > 0, "echo program ended early");
        seen.extend_from_slice(&buf[..n]);
    }
    let mut samples = Vec::with_capacity(ECHO_SAMPLES);
    for i in 0..ECHO_WARMUP + ECHO_SAMPLES {
        let b = b'a' + (i % 26) as u8;
        let t = Instant::now();
        run.pty.write_all(&[b]).unwrap();
        loop {
            let n = run.pty.read(&mut buf).expect("read the PTY");
            if buf[..n].contains(&b) {
                break;
            }
        }
        if i >= ECHO_WARMUP {
            samples.push(t.elapsed());
        }
    }
    let _ = run.child.kill();
    let _ = run.child.wait();
    samples
}

// ---------------------------------------------------------------------------------------------
// WebSockets

async fn ws_connect(url: &str, headers: &[(&'static str, String)]) -> Ws {
    let mut request = url.into_client_request().unwrap();
    for (k, v) in headers {
        request.headers_mut().insert(*k, v.parse().unwrap());
    }
    let config = WebSocketConfig::default()
        .max_message_size(Some(256 << 20))
        .max_frame_size(Some(256 << 20));
    let (ws, _) = tokio_tungstenite::connect_async_with_config(request, Some(config), true)
        .await
        .unwrap_or_else(|e| panic!("connect {url}: {e}"));
    ws
}

/// Output data of a kaged binary frame (kind, offset, data), if it is output or a snapshot.
fn kaged_output(m: &Message) -> Option<&[u8]> {
    match m {
        Message::Binary(b) if b.len() >= 9 && matches!(b[0], 1 | 2) => Some(&b[9..]),
        _ => None,
    }
}

fn is_kaged_exit(m: &Message) -> bool {
    match m {
        Message::Text(t) => serde_json::from_str::<Value>(t).is_ok_and(|v| v["type"] == "exit"),
        Message::Close(_) => true,
        _ => false,
    }
}

// ---------------------------------------------------------------------------------------------
// The daemon

struct Daemon {
    child: Child,
    base: String,
    ws_base: String,
    nonce: String,
    http: reqwest::Client,
    stderr: Arc<Mutex<Vec<String>>>,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(10) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Daemon {
    fn start(home: &Path) -> Daemon {
        Daemon::start_with(home, &[])
    }

    fn start_with(home: &Path, env: &[(&str, &str)]) -> Daemon {
        let mut cmd = Command::new(kaged_bin());
        cmd.env_clear();
        for var in ["PATH", "LANG", "TZ"] {
            if let Some(v) = std::env::var_os(var) {
                cmd.env(var, v);
            }
        }
        cmd.envs(env.iter().copied());
        let mut child = cmd
            .env("KAGED_HOME", home)
            .args(["start", "--bind", "127.0.0.1:0"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", kaged_bin().display()));
        let pipe = child.stderr.take().unwrap();
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let lines = stderr.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                if let Some(url) = line.strip_prefix(READY_PREFIX) {
                    let _ = tx.send(url.to_string());
                }
                lines.lock().unwrap().push(line);
            }
        });
        let Ok(url) = rx.recv_timeout(Duration::from_secs(30)) else {
            let _ = child.kill();
            panic!(
                "kaged did not become ready:\n{}",
                stderr.lock().unwrap().join("\n")
            );
        };
        let base = url.split("/launch").next().unwrap().to_string();
        let nonce = std::fs::read_to_string(home.join("run/auth-cookie")).unwrap();
        Daemon {
            child,
            ws_base: base.replacen("http://", "ws://", 1),
            base,
            nonce,
            http: reqwest::Client::new(),
            stderr,
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn nonce_header(&self) -> (&'static str, String) {
        ("x-kaged-auth-nonce", self.nonce.clone())
    }

    async fn post(&self, path: &str, body: Value, auth: &(&'static str, String)) -> Value {
        let r = self
            .http
            .post(format!("{}{path}", self.base))
            .header(auth.0, &auth.1)
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = r.status();
        let v: Value = r.json().await.unwrap_or(Value::Null);
        assert!(status.is_success(), "POST {path}: {status} {v}");
        v
    }

    async fn create(&self, project: &str, body: Value, auth: &(&'static str, String)) -> String {
        let v = self
            .post(&format!("/api/v1/projects/{project}/sessions"), body, auth)
            .await;
        v["session"]["id"].as_str().unwrap().to_string()
    }

    async fn state(&self, id: &str) -> String {
        let v: Value = self
            .http
            .get(format!("{}/api/v1/sessions/{id}", self.base))
            .header("x-kaged-auth-nonce", &self.nonce)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        v["session"]["state"].as_str().unwrap_or("?").to_string()
    }

    async fn wait_ended(&self, id: &str) {
        let deadline = Instant::now() + Duration::from_secs(120);
        while !matches!(
            self.state(id).await.as_str(),
            "exited" | "failed" | "killed"
        ) {
            assert!(Instant::now() < deadline, "session {id} never ended");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn kill(&self, id: &str) {
        let _ = self
            .http
            .post(format!("{}/api/v1/sessions/{id}/kill", self.base))
            .header("x-kaged-auth-nonce", &self.nonce)
            .send()
            .await;
    }

    /// A viewer from offset 0.
    async fn viewer(&self, id: &str) -> Ws {
        let mut ws = ws_connect(
            &format!("{}/api/v1/sessions/{id}/pty", self.ws_base),
            &[self.nonce_header()],
        )
        .await;
        ws.send(Message::Text(
            json!({"type": "resume", "offset": 0}).to_string().into(),
        ))
        .await
        .unwrap();
        ws
    }

    async fn flood(&self, project: &str) -> Flood {
        let id = self
            .create(
                project,
                json!({"kind": "task", "name": "flood"}),
                &self.nonce_header(),
            )
            .await;
        let mut ws = self.viewer(&id).await;
        let (mut first, mut last, mut bytes, mut all, mut wire) =
            (None, Instant::now(), 0u64, 0u64, 0u64);
        while let Some(Ok(m)) = ws.next().await {
            wire += wire_len(&m);
            if let Some(data) = kaged_output(&m) {
                all += data.len() as u64;
                if first.is_none() && data.windows(4).any(|w| w == b"xxxx") {
                    first = Some(Instant::now());
                }
                if first.is_some() {
                    bytes += data.len() as u64;
                }
            } else if is_kaged_exit(&m) {
                last = Instant::now();
                break;
            }
        }
        let secs = last
            .duration_since(first.unwrap_or(last))
            .as_secs_f64()
            .max(1e-9);
        // Every frame of the connection (hello, state, exit too) against all output bytes.
        Flood {
            bytes,
            secs,
            wire: Some((wire, all)),
        }
    }

    async fn echo(&self, project: &str) -> Vec<Duration> {
        let id = self
            .create(project, json!({"kind": "terminal"}), &self.nonce_header())
            .await;
        let mut ws = self.viewer(&id).await;
        let mut seen = Vec::new();
        while !seen.windows(5).any(|w| w == b"READY") {
            let m = ws.next().await.expect("viewer open").unwrap();
            assert!(!is_kaged_exit(&m), "the echo terminal ended early");
            if let Some(d) = kaged_output(&m) {
                seen.extend_from_slice(d);
            }
        }
        let mut samples = Vec::with_capacity(ECHO_SAMPLES);
        for i in 0..ECHO_WARMUP + ECHO_SAMPLES {
            let b = b'a' + (i % 26) as u8;
            let t = Instant::now();
            ws.send(Message::Binary(vec![b].into())).await.unwrap();
            loop {
                let m = ws.next().await.expect("viewer open").unwrap();
                if kaged_output(&m).is_some_and(|d| d.contains(&b)) {
                    break;
                }
                assert!(!is_kaged_exit(&m), "the echo terminal ended early");
            }
            if i >= ECHO_WARMUP {
                samples.push(t.elapsed());
            }
        }
        self.kill(&id).await;
        samples
    }

    /// 100 ticking sessions with one viewer each: daemon RSS and CPU.
    async fn many(&self, r: &mut Results) {
        let mut tokens = Vec::new();
        for i in 0..OPERATORS {
            let v = self
                .post(
                    "/api/v1/tokens",
                    json!({"actor": format!("bench-{i}"), "name": "sessions bench"}),
                    &self.nonce_header(),
                )
                .await;
            tokens.push((
                "authorization",
                format!("Bearer {}", v["plaintext"].as_str().unwrap()),
            ));
        }
        let mut ids = Vec::new();
        for s in 0..SESSIONS {
            let id = self
                .create(
                    &format!("bench{}", s % PROJECTS),
                    json!({"kind": "task", "name": "tick"}),
                    &tokens[s % OPERATORS],
                )
                .await;
            ids.push(id);
        }
        let received = Arc::new(AtomicU64::new(0));
        let attached = Arc::new(AtomicU64::new(0));
        let mut viewers = Vec::new();
        for id in &ids {
            let mut ws = self.viewer(id).await;
            let (received, attached) = (received.clone(), attached.clone());
            viewers.push(tokio::spawn(async move {
                attached.fetch_add(1, Ordering::Relaxed);
                while let Some(Ok(m)) = ws.next().await {
                    if let Some(d) = kaged_output(&m) {
                        received.fetch_add(d.len() as u64, Ordering::Relaxed);
                    } else if is_kaged_exit(&m) {
                        break;
                    }
                }
            }));
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        let threads = proc_status_kib(self.pid(), "Threads:").unwrap_or(0.0);
        r.rss_busy_mib = rss_mib(self.pid());
        let hz = clock_ticks_per_sec();
        let (t0, c0, b0) = (
            Instant::now(),
            cpu_ticks(self.pid()).unwrap_or(0),
            received.load(Ordering::Relaxed),
        );
        tokio::time::sleep(CPU_WINDOW).await;
        let (c1, b1) = (
            cpu_ticks(self.pid()).unwrap_or(0),
            received.load(Ordering::Relaxed),
        );
        let secs = t0.elapsed().as_secs_f64();
        r.cpu_busy_pct = Some((c1 - c0) as f64 / hz / secs * 100.0);
        // RSS again at the end of the window (the larger of the two is reported).
        if let (Some(a), Some(b)) = (r.rss_busy_mib, rss_mib(self.pid())) {
            r.rss_busy_mib = Some(a.max(b));
        }
        r.notes.push(format!(
            "100 sessions: {} viewers attached, {:.0} output bytes/s delivered to them, daemon threads {threads:.0}",
            attached.load(Ordering::Relaxed),
            (b1 - b0) as f64 / secs
        ));
        for id in &ids {
            self.kill(id).await;
        }
        let _ = tokio::time::timeout(Duration::from_secs(15), async {
            for v in viewers {
                let _ = v.await;
            }
        })
        .await;
    }
}

// ---------------------------------------------------------------------------------------------
// Jupyter Server terminals (terminado)

struct Jupyter {
    child: Child,
    base: String,
    token: String,
    http: reqwest::Client,
}

impl Drop for Jupyter {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(5) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `target/bench-venv` with jupyter_server and terminado, installed when missing.
fn jupyter_venv() -> Result<PathBuf, String> {
    let venv = target_dir().join("bench-venv");
    let server = venv.join("bin/jupyter-server");
    let ready = || {
        Command::new(venv.join("bin/python"))
            .args(["-c", "import jupyter_server, terminado"])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if server.exists() && ready() {
        return Ok(server);
    }
    eprintln!(
        "installing jupyter_server and terminado into {} ...",
        venv.display()
    );
    let run = |cmd: &mut Command| -> Result<(), String> {
        let out = cmd.output().map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(())
        } else {
            let err = String::from_utf8_lossy(&out.stderr);
            Err(err.lines().rev().take(3).collect::<Vec<_>>().join(" | "))
        }
    };
    run(Command::new("python3").args(["-m", "venv"]).arg(&venv))
        .map_err(|e| format!("python3 -m venv failed: {e}"))?;
    run(Command::new(venv.join("bin/pip")).args([
        "install",
        "-q",
        "--disable-pip-version-check",
        "jupyter_server",
        "terminado",
    ]))
    .map_err(|e| format!("pip install failed: {e}"))?;
    if ready() {
        Ok(server)
    } else {
        Err("jupyter_server or terminado does not import after installation".into())
    }
}

impl Jupyter {
    async fn start(server: &Path, dir: &Path, root: &Path) -> Result<Jupyter, String> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| e.to_string())?
            .port();
        let mut token = [0u8; 16];
        getrandom::fill(&mut token).map_err(|e| e.to_string())?;
        let token = hex::encode(token);
        let config = dir.join("jupyter_server_config.json");
        std::fs::write(
            &config,
            json!({"ServerApp": {"terminado_settings": {"shell_command": ["/bin/sh"]}}})
                .to_string(),
        )
        .map_err(|e| e.to_string())?;
        let log = std::fs::File::create(dir.join("jupyter.log")).map_err(|e| e.to_string())?;
        let child = Command::new(server)
            .arg(format!("--config={}", config.display()))
            .args(["--no-browser", "--ip=127.0.0.1", "--allow-root"])
            .arg(format!("--port={port}"))
            .arg(format!("--ServerApp.token={token}"))
            .arg(format!("--ServerApp.root_dir={}", root.display()))
            .env("JUPYTER_CONFIG_DIR", dir.join("config"))
            .env("JUPYTER_DATA_DIR", dir.join("data"))
            .env("JUPYTER_RUNTIME_DIR", dir.join("runtime"))
            .env("SHELL", "/bin/sh")
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log)
            .spawn()
            .map_err(|e| format!("cannot start jupyter server: {e}"))?;
        let j = Jupyter {
            child,
            base: format!("127.0.0.1:{port}"),
            token,
            http: reqwest::Client::new(),
        };
        let start = Instant::now();
        loop {
            let ok = j
                .http
                .get(format!("http://{}/api/status", j.base))
                .header("authorization", format!("token {}", j.token))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if ok {
                return Ok(j);
            }
            if start.elapsed() > Duration::from_secs(40) {
                let log = std::fs::read_to_string(dir.join("jupyter.log")).unwrap_or_default();
                return Err(format!(
                    "jupyter server not ready after 40 s: {}",
                    log.lines().rev().take(3).collect::<Vec<_>>().join(" | ")
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn terminal(&self) -> Result<Ws, String> {
        let r = self
            .http
            .post(format!("http://{}/api/terminals", self.base))
            .header("authorization", format!("token {}", self.token))
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let v: Value = r.json().await.map_err(|e| e.to_string())?;
        let name = v["name"]
            .as_str()
            .ok_or_else(|| format!("POST /api/terminals answered {v}"))?;
        Ok(ws_connect(
            &format!("ws://{}/terminals/websocket/{name}", self.base),
            &[("authorization", format!("token {}", self.token))],
        )
        .await)
    }

    async fn send(ws: &mut Ws, text: &str) {
        ws.send(Message::Text(json!(["stdin", text]).to_string().into()))
            .await
            .unwrap();
    }

    async fn flood(&self, root: &Path) -> Result<Flood, String> {
        let mut ws = self.terminal().await?;
        let cmd = format!(
            "exec sh {} {JUPYTER_FLOOD_BYTES}\r",
            root.join("flood.sh").display()
        );
        Self::send(&mut ws, &cmd).await;
        let (mut first, mut last, mut bytes, mut wire) = (None, Instant::now(), 0u64, 0u64);
        while let Some(Ok(m)) = ws.next().await {
            let Message::Text(t) = &m else {
                if matches!(m, Message::Close(_)) {
                    last = Instant::now();
                    break;
                }
                continue;
            };
            let v: Value = serde_json::from_str(t).unwrap_or(Value::Null);
            match v[0].as_str() {
                Some("stdout") => {
                    let data = v[1].as_str().unwrap_or_default();
                    if first.is_none() && data.contains("xxxx") {
                        first = Some(Instant::now());
                    }
                    if first.is_some() {
                        bytes += data.len() as u64;
                        wire += wire_len(&m);
                    }
                }
                Some("disconnect") => {
                    last = Instant::now();
                    break;
                }
                _ => {}
            }
        }
        if bytes == 0 {
            return Err("the jupyter terminal printed no flood".into());
        }
        Ok(Flood {
            bytes,
            secs: last
                .duration_since(first.unwrap_or(last))
                .as_secs_f64()
                .max(1e-9),
            wire: Some((wire, bytes)),
        })
    }

    async fn echo(&self, root: &Path) -> Result<Vec<Duration>, String> {
        let mut ws = self.terminal().await?;
        Self::send(
            &mut ws,
            &format!("exec sh {}\r", root.join("echo.sh").display()),
        )
        .await;
        let stdout = |m: &Message| -> Option<String> {
            let Message::Text(t) = m else { return None };
            let v: Value = serde_json::from_str(t).ok()?;
            (v[0] == "stdout").then(|| v[1].as_str().unwrap_or_default().to_string())
        };
        let mut seen = String::new();
        while !seen.contains("READY") {
            let m = ws
                .next()
                .await
                .ok_or("terminal closed")?
                .map_err(|e| e.to_string())?;
            if let Some(d) = stdout(&m) {
                seen.push_str(&d);
            }
        }
        let mut samples = Vec::with_capacity(ECHO_SAMPLES);
        for i in 0..ECHO_WARMUP + ECHO_SAMPLES {
            let c = char::from(b'a' + (i % 26) as u8);
            let t = Instant::now();
            Self::send(&mut ws, &c.to_string()).await;
            loop {
                let m = ws
                    .next()
                    .await
                    .ok_or("terminal closed")?
                    .map_err(|e| e.to_string())?;
                if stdout(&m).is_some_and(|d| d.contains(c)) {
                    break;
                }
            }
            if i >= ECHO_WARMUP {
                samples.push(t.elapsed());
            }
        }
        Ok(samples)
    }
}

async fn jupyter_part(tmp: &Path, root: &Path, r: &mut Results) -> Result<(), String> {
    if std::env::var_os("KAGED_BENCH_NO_JUPYTER").is_some() {
        return Err("KAGED_BENCH_NO_JUPYTER is set".into());
    }
    let server = tokio::task::spawn_blocking(jupyter_venv)
        .await
        .map_err(|e| e.to_string())??;
    let dir = tmp.join("jupyter");
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let j = Jupyter::start(&server, &dir, root).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    r.jupyter_rss_idle_mib = rss_mib(j.child.id());
    r.jupyter_flood = Some(j.flood(root).await?);
    r.jupyter_echo = Some(echo_of(j.echo(root).await?));
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The table

fn fmt(v: Option<f64>, digits: usize) -> String {
    v.map_or("-".into(), |v| format!("{v:.digits$}"))
}

fn verdict(v: Option<f64>, pass: impl Fn(f64) -> bool) -> &'static str {
    match v {
        Some(v) if pass(v) => "pass",
        Some(_) => "FAIL",
        None => "-",
    }
}

fn print_table(r: &Results) {
    let mbps = |f: Option<Flood>| f.map(|f| f.mbps());
    let ratio = match (mbps(r.kaged_flood), mbps(r.raw_flood)) {
        (Some(k), Some(raw)) => Some(k / raw * 100.0),
        _ => None,
    };
    let overhead = r.kaged_flood.and_then(|f| f.overhead_pct());
    let p = |e: Option<Echo>, f: fn(&Echo) -> f64| e.as_ref().map(f);
    let echo_ratio = |f: fn(&Echo) -> f64| match (p(r.kaged_echo, f), p(r.raw_echo, f)) {
        (Some(k), Some(raw)) => Some(k / raw),
        _ => None,
    };
    let rows: Vec<[String; 8]> = vec![
        [
            "output throughput (MB/s)".into(),
            fmt(mbps(r.raw_flood), 0),
            fmt(mbps(r.cage_flood), 0),
            fmt(mbps(r.kaged_flood), 0),
            fmt(mbps(r.jupyter_flood), 0),
            ratio.map_or("-".into(), |v| format!("{v:.0}% of raw")),
            ">= 95% of raw".into(),
            verdict(ratio, |v| v >= 95.0).into(),
        ],
        [
            "wire overhead (%)".into(),
            "-".into(),
            "-".into(),
            fmt(overhead, 3),
            fmt(r.jupyter_flood.and_then(|f| f.overhead_pct()), 1),
            "-".into(),
            "<= 2%".into(),
            verdict(overhead, |v| v <= 2.0).into(),
        ],
        [
            "echo p50 (ms)".into(),
            fmt(p(r.raw_echo, |e| e.p50), 3),
            fmt(p(r.cage_echo, |e| e.p50), 3),
            fmt(p(r.kaged_echo, |e| e.p50), 3),
            fmt(p(r.jupyter_echo, |e| e.p50), 3),
            echo_ratio(|e| e.p50).map_or("-".into(), |v| format!("{v:.1}x raw")),
            "<= 0.5 ms".into(),
            verdict(p(r.kaged_echo, |e| e.p50), |v| v <= 0.5).into(),
        ],
        [
            "echo p99 (ms)".into(),
            fmt(p(r.raw_echo, |e| e.p99), 3),
            fmt(p(r.cage_echo, |e| e.p99), 3),
            fmt(p(r.kaged_echo, |e| e.p99), 3),
            fmt(p(r.jupyter_echo, |e| e.p99), 3),
            echo_ratio(|e| e.p99).map_or("-".into(), |v| format!("{v:.1}x raw")),
            "<= 1.5 ms".into(),
            verdict(p(r.kaged_echo, |e| e.p99), |v| v <= 1.5).into(),
        ],
        [
            "daemon RSS idle (MiB)".into(),
            "-".into(),
            "-".into(),
            fmt(r.rss_idle_mib, 1),
            fmt(r.jupyter_rss_idle_mib, 1),
            "-".into(),
            "< 20 MiB".into(),
            verdict(r.rss_idle_mib, |v| v < 20.0).into(),
        ],
        [
            format!("daemon RSS, {SESSIONS} sessions+viewers (MiB)"),
            "-".into(),
            "-".into(),
            fmt(r.rss_busy_mib, 1),
            "-".into(),
            "-".into(),
            "< 150 MiB".into(),
            verdict(r.rss_busy_mib, |v| v < 150.0).into(),
        ],
        [
            format!(
                "daemon CPU, {SESSIONS} sessions, {}s (% of a core)",
                CPU_WINDOW.as_secs()
            ),
            "-".into(),
            "-".into(),
            fmt(r.cpu_busy_pct, 1),
            "-".into(),
            "-".into(),
            "(report)".into(),
            "-".into(),
        ],
    ];
    let header = [
        "metric", "raw PTY", "raw+cage", "kaged", "jupyter", "ratio", "target", "result",
    ];
    let mut widths = header.map(str::len);
    for row in &rows {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let text: Vec<String> = cells
            .iter()
            .zip(widths)
            .enumerate()
            .map(|(i, (c, w))| {
                if i == 0 {
                    format!("{c:<w$}")
                } else {
                    format!("{c:>w$}")
                }
            })
            .collect();
        println!("{}", text.join("  "));
    };
    println!();
    line(header.to_vec());
    for row in &rows {
        line(row.iter().map(String::as_str).collect());
    }
    println!();
    if let (Some(k), Some(raw)) = (r.kaged_flood, r.raw_flood) {
        println!(
            "flood: {} bytes (best of {FLOOD_RUNS}); raw {:.2} s, kaged {:.2} s{}",
            k.bytes,
            raw.secs,
            k.secs,
            r.cage_flood
                .map_or(String::new(), |c| format!(", raw+cage {:.2} s", c.secs))
        );
    }
    if let Some(j) = r.jupyter_flood {
        println!("jupyter flood: {} bytes in {:.2} s", j.bytes, j.secs);
    }
    for n in &r.notes {
        println!("{n}");
    }
}

// ---------------------------------------------------------------------------------------------

// ---------------------------------------------------------------------------------------------
// Memory

/// Daemon RSS idle, after runs ended, per idle session, and during and after a flood that a
/// stalled viewer does not read; printed as its own table (targets from issue 12).
async fn memory_part(home: &Path, roots: &[PathBuf]) {
    let d = Daemon::start_with(home, &[("RUST_BACKTRACE", "1")]);
    for root in roots {
        d.post(
            "/api/v1/projects/load",
            json!({"path": root.display().to_string()}),
            &d.nonce_header(),
        )
        .await;
    }
    let settle = || tokio::time::sleep(Duration::from_millis(1500));
    settle().await;
    let idle = rss_mib(d.pid());
    eprintln!("memory: {MEMORY_ENDED_RUNS} short runs ...");
    for batch in 0..MEMORY_ENDED_RUNS / PROJECTS {
        let mut ids = Vec::new();
        for p in 0..PROJECTS {
            let body = json!({"kind": "task", "name": "short"});
            ids.push(
                d.create(&format!("bench{p}"), body, &d.nonce_header())
                    .await,
            );
        }
        for id in &ids {
            d.wait_ended(id).await;
        }
        let _ = batch;
    }
    settle().await;
    let ended = rss_mib(d.pid());
    eprintln!("memory: {MEMORY_IDLE_SESSIONS} idle sessions ...");
    let mut idle_ids = Vec::new();
    for s in 0..MEMORY_IDLE_SESSIONS {
        let body = json!({"kind": "task", "name": "idle"});
        idle_ids.push(
            d.create(&format!("bench{}", s % PROJECTS), body, &d.nonce_header())
                .await,
        );
    }
    settle().await;
    let with_idle = rss_mib(d.pid());
    for id in &idle_ids {
        d.kill(id).await;
    }
    for id in &idle_ids {
        d.wait_ended(id).await;
    }
    eprintln!("memory: a {MEMORY_FLOOD_BYTES}-byte flood with a stalled viewer ...");
    let id = d
        .create(
            "bench0",
            json!({"kind": "task", "name": "flood150"}),
            &d.nonce_header(),
        )
        .await;
    // Attached and never read again: its socket's buffers fill, then it stalls.
    let stalled = d.viewer(&id).await;
    let mut peak = 0.0f64;
    let started = Instant::now();
    loop {
        peak = peak.max(rss_mib(d.pid()).unwrap_or(0.0));
        if matches!(d.state(&id).await.as_str(), "exited" | "failed" | "killed") {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "the flood never ended"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let flood_secs = started.elapsed().as_secs_f64();
    settle().await;
    let after_flood_stalled = rss_mib(d.pid());
    drop(stalled);
    settle().await;
    let after_flood = rss_mib(d.pid());
    let panics = d
        .stderr
        .lock()
        .unwrap()
        .iter()
        .filter(|l| l.contains("panicked"))
        .count();
    let per_idle = match (with_idle, ended) {
        (Some(w), Some(e)) => Some((w - e) / MEMORY_IDLE_SESSIONS as f64),
        _ => None,
    };
    println!();
    println!("memory (daemon with RUST_BACKTRACE=1)          RSS MiB  target");
    println!(
        "idle, projects loaded                          {:>7}  <= 20",
        fmt(idle, 1)
    );
    println!(
        "after {MEMORY_ENDED_RUNS} runs ended                            {:>7}  <= 20",
        fmt(ended, 1)
    );
    println!(
        "with {MEMORY_IDLE_SESSIONS} idle sessions                          {:>7}  ({} per session, <= 0.5)",
        fmt(with_idle, 1),
        fmt(per_idle, 3)
    );
    println!(
        "150 MB flood, stalled viewer: peak             {:>7}  (report; flood {flood_secs:.1} s)",
        fmt(Some(peak), 1)
    );
    println!(
        "  after the flood, viewer still attached       {:>7}",
        fmt(after_flood_stalled, 1)
    );
    println!(
        "  after the viewer left                        {:>7}  <= 20",
        fmt(after_flood, 1)
    );
    println!("panics in the daemon's log: {panics}");
}

fn main() {
    let bin = kaged_bin();
    if !bin.exists() {
        eprintln!(
            "{} is missing; build it with `cargo build --release -p kaged`",
            bin.display()
        );
        return;
    }
    if Command::new("bwrap").arg("--version").output().is_err() {
        eprintln!("bubblewrap is not installed; kaged cannot start caged sessions");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("home");
    let roots: Vec<PathBuf> = (0..PROJECTS)
        .map(|i| {
            let root = tmp.path().join(format!("bench{i}"));
            write_project(&root, &format!("bench{i}"));
            root
        })
        .collect();
    if std::env::var("KAGED_BENCH_ONLY").is_ok_and(|p| p == "memory") {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(memory_part(&home, &roots));
        return;
    }
    let root = &roots[0];
    let mut r = Results::default();
    let bytes = FLOOD_BYTES.to_string();
    let sh = |args: &[&str]| -> Vec<String> { args.iter().map(|s| s.to_string()).collect() };
    let caged = |args: &[&str]| -> Vec<String> {
        let mut v = vec![
            bin.display().to_string(),
            "cage".into(),
            "run".into(),
            root.display().to_string(),
            "--".into(),
        ];
        v.extend(args.iter().map(|s| s.to_string()));
        v
    };

    eprintln!("raw PTY and raw PTY + cage baselines ...");
    r.raw_flood =
        Flood::best((0..FLOOD_RUNS).map(|_| flood_raw(&sh(&["sh", "flood.sh", &bytes]), root)));
    r.cage_flood =
        Flood::best((0..FLOOD_RUNS).map(|_| flood_raw(&caged(&["sh", "flood.sh", &bytes]), root)));
    r.raw_echo = Some(echo_of(echo_raw(&sh(&["sh", "echo.sh"]), root)));
    r.cage_echo = Some(echo_of(echo_raw(&caged(&["sh", "echo.sh"]), root)));

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        eprintln!("starting kaged ...");
        let d = Daemon::start(&home);
        for root in &roots {
            d.post(
                "/api/v1/projects/load",
                json!({"path": root.display().to_string()}),
                &d.nonce_header(),
            )
            .await;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        r.rss_idle_mib = rss_mib(d.pid());
        eprintln!("{SESSIONS} sessions with a viewer each ...");
        d.many(&mut r).await;
        eprintln!("kaged throughput and echo ...");
        let mut floods = Vec::new();
        for _ in 0..FLOOD_RUNS {
            floods.push(d.flood("bench0").await);
        }
        r.kaged_flood = Flood::best(floods);
        r.kaged_echo = Some(echo_of(d.echo("bench0").await));
        r.notes.push(format!(
            "daemon RSS after all kaged tests: {} MiB",
            fmt(rss_mib(d.pid()), 1)
        ));
        let errors: Vec<String> = d
            .stderr
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains("ERROR"))
            .take(3)
            .cloned()
            .collect();
        for e in errors {
            r.notes.push(format!("daemon error: {e}"));
        }
        drop(d);
        memory_part(&tmp.path().join("home-memory"), &roots).await;
        eprintln!("jupyter server terminals ...");
        if let Err(why) = jupyter_part(tmp.path(), root, &mut r).await {
            r.notes.push(format!("jupyter skipped: {why}"));
        }
    });
    print_table(&r);
}
