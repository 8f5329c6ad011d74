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
//!
//! The daemon is started by the end-to-end tests' harness (`tests/e2e/common/`); the parts live
//! in the modules below, one concern each.

#![allow(clippy::unwrap_used, clippy::expect_used)] // bench code: a panic reports a broken setup

use std::io::{Read, Write};
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

/// Waits until the viewer is attached, then prints `$1` bytes of `x`.
const FLOOD_SH: &str = "sleep 0.5; head -c \"$1\" /dev/zero | tr '\\0' x\n";
/// Echoes every byte at once (raw mode: no line discipline in the way), after a marker.
const ECHO_SH: &str = "stty raw -echo; printf READY; exec cat\n";
const TICK_SH: &str = "while :; do sleep 1; echo tick; done\n";

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

// The end-to-end tests' harness: one daemon launcher for tests and benches.
#[path = "../../tests/e2e/common/mod.rs"]
mod common;
mod daemon;
mod jupyter;
mod measure;
mod memory;
mod raw_pty;
mod report;

use daemon::*;
use jupyter::*;
use measure::*;
use memory::*;
use raw_pty::*;
use report::*;

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

fn main() {
    let bin = common::kaged_bin();
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
