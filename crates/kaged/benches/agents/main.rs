//! Model agents through the real daemon, against a streaming provider of the bench's own
//! (`stream.rs`, openai-completions on loopback, each token stamped as it leaves):
//!
//! 1. relay delay: one conversation, one viewer on the events WebSocket; for each token, the
//!    time from its write at the provider to its `text_delta` at the viewer: p50, p99, max
//!    (targets p50 ≤ 1 ms, p99 ≤ 5 ms);
//! 2. 50 conversations streaming at once, a viewer each: the daemon's CPU time (utime + stime
//!    from /proc/PID/stat) per 1000 tokens relayed to viewers, and its peak RSS (VmHWM, target
//!    ≤ 100 MiB).
//!
//! Prints the figures; asserts nothing about time. Takes about a minute.
//! Run: cargo bench -p kaged --bench agents
//!
//! The daemon is started by the end-to-end tests' harness (`tests/e2e/common/`).

#![allow(clippy::unwrap_used, clippy::expect_used)] // bench code: a panic reports a broken setup

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

#[path = "../../tests/e2e/common/mod.rs"]
mod common;
mod stream;

use common::provider::{LocalToml, start_daemon, write_model_project};
use stream::{Shape, StreamProvider};

/// Relay delay: tokens of the one measured answer, and their pace.
const LATENCY_TOKENS: usize = 2000;
const LATENCY_PACE: Duration = Duration::from_millis(2);
const LATENCY_WARMUP: usize = 100;
/// The crowd: sessions, tokens each, pace. The daemon caps live sessions at 16 a project and
/// 32 an operator: 4 projects, 2 operators.
const SESSIONS: usize = 50;
const PROJECTS: usize = 4;
const OPERATORS: usize = 2;
const CROWD_TOKENS: usize = 600;
const CROWD_PACE: Duration = Duration::from_millis(5);

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

struct Client {
    base: String,
    nonce: String,
    http: reqwest::Client,
}

impl Client {
    async fn post(&self, path: &str, body: Value, auth: Option<&str>) -> Value {
        let mut r = self.http.post(format!("{}{path}", self.base)).json(&body);
        r = match auth {
            Some(bearer) => r.header("authorization", format!("Bearer {bearer}")),
            None => r.header("x-kaged-auth-nonce", &self.nonce),
        };
        let r = r.send().await.unwrap();
        let status = r.status();
        let v: Value = r.json().await.unwrap_or(Value::Null);
        assert!(status.is_success(), "POST {path}: {status} {v}");
        v
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

    async fn wait_running(&self, id: &str) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.state(id).await != "running" {
            assert!(Instant::now() < deadline, "session {id} never ran");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn viewer(&self, id: &str) -> Ws {
        let url = format!(
            "{}/api/v1/sessions/{id}/events?after=0",
            self.base.replacen("http://", "ws://", 1)
        );
        let mut request = url.as_str().into_client_request().unwrap();
        request
            .headers_mut()
            .insert("x-kaged-auth-nonce", self.nonce.parse().unwrap());
        tokio_tungstenite::connect_async(request).await.unwrap().0
    }
}

/// Read records until a `turn_ended`; calls `on_text(text, when)` for each `text_delta`.
async fn read_turn(ws: &mut Ws, mut on_text: impl FnMut(&str, Instant)) {
    loop {
        let m = tokio::time::timeout(Duration::from_secs(60), ws.next())
            .await
            .expect("no event for 60 s");
        let Some(Ok(Message::Text(t))) = m else {
            match m {
                Some(Ok(_)) => continue,
                other => panic!("the events socket ended: {other:?}"),
            }
        };
        let now = Instant::now();
        let v: Value = serde_json::from_str(&t).unwrap();
        match v["event"]["type"].as_str() {
            Some("text_delta") => on_text(v["event"]["text"].as_str().unwrap_or(""), now),
            Some("turn_ended") => return,
            Some("error") => panic!("the turn failed: {v}"),
            _ => {}
        }
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1000.0)
}

fn proc_status_kib(pid: u32, key: &str) -> Option<f64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = text.lines().find(|l| l.starts_with(key))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// utime + stime of `pid` in seconds.
fn cpu_secs(pid: u32) -> f64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = text
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    let hz: f64 = std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0);
    ticks as f64 / hz
}

fn verdict(ok: bool) -> &'static str {
    if ok { "ok" } else { "OVER TARGET" }
}

fn main() {
    if std::process::Command::new("bwrap")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("bubblewrap is not installed; kaged cannot start an agent's cage");
        return;
    }
    let provider_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let provider = StreamProvider::start(&provider_rt);
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("home");
    LocalToml::new()
        .alias("fast", &["bench:model"])
        .provider("bench", "openai-completions", &provider.base_url())
        .write(&home);
    let roots: Vec<_> = (0..PROJECTS)
        .map(|i| {
            let root = tmp.path().join(format!("agents{i}"));
            write_model_project(&root, &format!("agents{i}"), "", "");
            root
        })
        .collect();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(run(&home, &roots, provider));
    provider_rt.shutdown_background();
}

async fn run(home: &Path, roots: &[std::path::PathBuf], provider: StreamProvider) {
    eprintln!("starting kaged ...");
    let d = start_daemon(home, &[]);
    let pid = d.child.id();
    let c = Arc::new(Client {
        base: d.base.clone(),
        nonce: d.nonce(),
        http: reqwest::Client::new(),
    });
    for root in roots {
        c.post("/api/v1/projects/load", json!({ "path": root }), None)
            .await;
    }

    // 1. Relay delay.
    eprintln!("relay delay: {LATENCY_TOKENS} tokens {LATENCY_PACE:?} apart ...");
    let v = c
        .post(
            "/api/v1/projects/agents0/sessions",
            json!({"kind": "agent", "name": "primary"}),
            None,
        )
        .await;
    let id = v["session"]["id"].as_str().unwrap().to_string();
    c.wait_running(&id).await;
    let mut ws = c.viewer(&id).await;
    // A warm-up answer first (connections, the first model call).
    provider.set_shape(
        Shape {
            tokens: 20,
            pace: Duration::ZERO,
        },
        false,
    );
    c.post(
        &format!("/api/v1/sessions/{id}/messages"),
        json!({"text": "warm up"}),
        None,
    )
    .await;
    read_turn(&mut ws, |_, _| {}).await;
    provider.set_shape(
        Shape {
            tokens: LATENCY_TOKENS,
            pace: LATENCY_PACE,
        },
        true,
    );
    c.post(
        &format!("/api/v1/sessions/{id}/messages"),
        json!({"text": "stream"}),
        None,
    )
    .await;
    let mut delays = Vec::new();
    read_turn(&mut ws, |text, at| {
        for marker in text.split_whitespace() {
            if let Some(sent) = provider.sent_at(marker) {
                delays.push((marker.to_string(), at.saturating_duration_since(sent)));
            }
        }
    })
    .await;
    let mut sorted: Vec<Duration> = delays
        .iter()
        .filter(|(m, _)| {
            m.rsplit('_')
                .next()
                .and_then(|n| n.parse::<usize>().ok())
                .is_some_and(|n| n >= LATENCY_WARMUP)
        })
        .map(|(_, d)| *d)
        .collect();
    sorted.sort();
    let received = delays.len();

    // 2. The crowd.
    eprintln!("{SESSIONS} conversations with a viewer each ...");
    let mut tokens = Vec::new();
    for i in 0..OPERATORS {
        let v = c
            .post(
                "/api/v1/tokens",
                json!({"actor": format!("bench-{i}"), "name": "agents bench"}),
                None,
            )
            .await;
        tokens.push(v["plaintext"].as_str().unwrap().to_string());
    }
    let mut ids = Vec::new();
    for s in 0..SESSIONS {
        let v = c
            .post(
                &format!("/api/v1/projects/agents{}/sessions", s % PROJECTS),
                json!({"kind": "agent", "name": "primary"}),
                Some(&tokens[s % OPERATORS]),
            )
            .await;
        ids.push(v["session"]["id"].as_str().unwrap().to_string());
    }
    for id in &ids {
        c.wait_running(id).await;
    }
    let mut viewers = Vec::new();
    for id in &ids {
        viewers.push(c.viewer(id).await);
    }
    provider.set_shape(
        Shape {
            tokens: CROWD_TOKENS,
            pace: CROWD_PACE,
        },
        false,
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let cpu_before = cpu_secs(pid);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for (id, mut ws) in ids.iter().cloned().zip(viewers) {
        let c = Arc::clone(&c);
        tasks.push(tokio::spawn(async move {
            c.post(
                &format!("/api/v1/sessions/{id}/messages"),
                json!({"text": "stream"}),
                None,
            )
            .await;
            let mut n = 0usize;
            read_turn(&mut ws, |text, _| n += text.split_whitespace().count()).await;
            n
        }));
    }
    let mut relayed = 0usize;
    for t in tasks {
        relayed += t.await.unwrap();
    }
    let wall = started.elapsed();
    let cpu = cpu_secs(pid) - cpu_before;
    let hwm = proc_status_kib(pid, "VmHWM:").unwrap_or(0.0) / 1024.0;
    let rss = proc_status_kib(pid, "VmRSS:").unwrap_or(0.0) / 1024.0;
    for id in &ids {
        let _ = c
            .post(&format!("/api/v1/sessions/{id}/kill"), json!({}), None)
            .await;
    }
    let (_, log) = d.stop();
    let errors: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("ERROR"))
        .take(3)
        .collect();

    let p50 = percentile(&sorted, 0.50);
    let p99 = percentile(&sorted, 0.99);
    let per_k = cpu / (relayed as f64 / 1000.0);
    println!();
    println!(
        "kaged agents bench ({} build)",
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        }
    );
    println!(
        "relay delay, provider write → events WebSocket client ({} tokens measured of {received} received):",
        sorted.len()
    );
    println!(
        "  p50  {:>10}   target ≤ 1 ms   {}",
        ms(p50),
        verdict(p50 <= Duration::from_millis(1))
    );
    println!(
        "  p99  {:>10}   target ≤ 5 ms   {}",
        ms(p99),
        verdict(p99 <= Duration::from_millis(5))
    );
    println!("  max  {:>10}", ms(*sorted.last().unwrap()));
    println!(
        "{SESSIONS} conversations streaming at once, a viewer each ({CROWD_TOKENS} tokens each, {CROWD_PACE:?} apart):"
    );
    println!(
        "  tokens relayed to viewers   {relayed} of {} sent, in {:.1} s",
        SESSIONS * CROWD_TOKENS,
        wall.as_secs_f64()
    );
    println!(
        "  daemon CPU                  {cpu:.2} s = {:.1} ms per 1000 relayed tokens",
        per_k * 1000.0
    );
    println!(
        "  daemon RSS peak (VmHWM)     {hwm:.1} MiB   target ≤ 100 MiB   {}",
        verdict(hwm <= 100.0)
    );
    println!("  daemon RSS at the end       {rss:.1} MiB");
    for e in errors {
        println!("  daemon error: {e}");
    }
}
