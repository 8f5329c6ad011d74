//! Notifications and `[notify]`: a webhook kaged must not use is refused at start naming the
//! file, key and line; a webhook's token never shows in status, the written config or the log;
//! a model agent's call under `approval: ask` sends exactly one notification to a real webhook
//! receiver, with its title and link and without the call's arguments or any credential.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::common::provider::*;
use crate::common::*;

#[test]
fn a_plain_http_webhook_to_a_public_name_stops_the_start_naming_file_key_and_line() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().to_str().unwrap();
    let cfg = tmp.path().join("config.toml");
    std::fs::write(
        &cfg,
        "[daemon]\nbind = \"127.0.0.1:0\"\n\n[notify]\nwebhook = \"http://example.com/x?auth=tk-s3cr3t\"\n",
    )
    .unwrap();
    let out = kaged_cmd(&[("KAGED_HOME", home)])
        .arg("start")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "{}:5:1: notify.webhook: \"http://example.com/…\" is plain http to the host name \"example.com\"",
            cfg.display()
        )),
        "{err}"
    );
    assert!(
        err.contains(
            "fix: use \"https://example.com/…\", or http:// with the receiver's private IP"
        ),
        "{err}"
    );
    assert!(!err.contains("s3cr3t"), "{err}");

    // The same from the variable, named as such.
    std::fs::write(&cfg, "[daemon]\nbind = \"127.0.0.1:0\"\n").unwrap();
    let out = kaged_cmd(&[
        ("KAGED_HOME", home),
        ("KAGED_NOTIFY_WEBHOOK", "ftp://127.0.0.1/s3cr3t"),
        ("KAGED_NOTIFY_PUBLIC_URL", "https://kaged.example/console"),
    ])
    .arg("start")
    .output()
    .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("environment variable KAGED_NOTIFY_WEBHOOK: notify.webhook: \"ftp://127.0.0.1/…\": the scheme \"ftp\" is not https or http"),
        "{err}"
    );
    assert!(
        err.contains("environment variable KAGED_NOTIFY_PUBLIC_URL: notify.public_url: \"https://kaged.example/console\" has a path, query or fragment"),
        "{err}"
    );
    assert!(!err.contains("s3cr3t"), "{err}");
}

#[tokio::test]
async fn a_webhook_token_shows_nowhere() {
    let tmp = tempfile::tempdir().unwrap();
    // No config file: the first launch writes one, from the defaults.
    let d = Daemon::start_with(
        tmp.path(),
        &["--bind", "127.0.0.1:0"],
        &[
            (
                "KAGED_NOTIFY_WEBHOOK",
                "https://ann:pw-s3cr3t@ntfy.example/kaged-topic?auth=tk-s3cr3t",
            ),
            ("KAGED_SESSIONS_APPROVAL_TIMEOUT_SECS", "600"),
        ],
    );
    let status = d.api_get("/api/v1/status").await;
    let text = status.to_string();
    assert_eq!(
        status["sources"]["notify.webhook"],
        serde_json::json!({"from": "env", "var": "KAGED_NOTIFY_WEBHOOK"})
    );
    assert_eq!(
        status["sources"]["sessions.approval_timeout_secs"]["var"],
        "KAGED_SESSIONS_APPROVAL_TIMEOUT_SECS"
    );
    let out = d.cli(&["status"]);
    assert!(out.status.success());
    let shown = String::from_utf8_lossy(&out.stdout).into_owned();
    let json = d.cli(&["status", "--json"]);
    let shown_json = String::from_utf8_lossy(&json.stdout).into_owned();
    assert!(shown_json.contains("notify.webhook"), "{shown_json}");
    let written = std::fs::read_to_string(tmp.path().join("config.toml")).unwrap();
    assert!(
        written.contains("# webhook = \"https://ntfy.sh/YOUR-TOPIC\""),
        "{written}"
    );
    let (_, log) = d.stop();
    for (what, s) in [
        ("GET /api/v1/status", &text),
        ("kaged status", &shown),
        ("kaged status --json", &shown_json),
        ("config.toml", &written),
        ("the log", &log),
    ] {
        assert!(!s.contains("s3cr3t"), "{what}: {s}");
        assert!(!s.contains("kaged-topic"), "{what}: {s}");
    }
}

// ---- one notification per approval ---------------------------------------------------------

/// One request the webhook receiver got: its head (request line and headers) and its body.
#[derive(Debug, Clone)]
struct Hit {
    head: String,
    body: String,
}

impl Hit {
    fn header(&self, name: &str) -> Option<String> {
        self.head.lines().skip(1).find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_string())
        })
    }

    fn whole(&self) -> String {
        format!("{}\r\n\r\n{}", self.head, self.body)
    }
}

/// A webhook receiver on a loopback port, on a thread of its own: records every request and
/// answers 200.
struct Receiver {
    port: u16,
    hits: Arc<Mutex<Vec<Hit>>>,
}

impl Receiver {
    fn start() -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let hits = Arc::new(Mutex::new(Vec::new()));
        let seen = hits.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                if let Some(hit) = read_request(&mut stream) {
                    seen.lock().unwrap().push(hit);
                }
                let _ = stream.write_all(
                    b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                );
            }
        });
        Receiver { port, hits }
    }

    fn hits(&self) -> Vec<Hit> {
        self.hits.lock().unwrap().clone()
    }

    async fn wait_for(&self, n: usize) -> Vec<Hit> {
        let start = Instant::now();
        while self.hits().len() < n {
            assert!(
                start.elapsed() < AGENT_PATIENCE,
                "the webhook got {} requests, not {n}: {:?}",
                self.hits().len(),
                self.hits()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.hits()
    }
}

fn read_request(stream: &mut TcpStream) -> Option<Hit> {
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let mut data = Vec::new();
    let mut buf = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = data.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        let n = stream.read(&mut buf).ok()?;
        if n == 0 {
            return None;
        }
        data.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8_lossy(&data[..head_end]).into_owned();
    let length: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .unwrap_or(0);
    let mut body = data[head_end + 4..].to_vec();
    while body.len() < length {
        let n = stream.read(&mut buf).ok()?;
        if n == 0 {
            break;
        }
        body.extend_from_slice(&buf[..n]);
    }
    Some(Hit {
        head,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

/// The pending approvals of the daemon.
async fn pending(d: &Daemon) -> Vec<Value> {
    let (status, v) = d
        .call(Method::GET, "/api/v1/approvals?state=pending", None)
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    v["approvals"].as_array().unwrap().clone()
}

async fn wait_pending(d: &Daemon, n: usize) -> Vec<Value> {
    let start = Instant::now();
    loop {
        let p = pending(d).await;
        if p.len() >= n {
            return p;
        }
        assert!(start.elapsed() < AGENT_PATIENCE, "pending approvals: {p:?}");
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
}

/// A model agent whose `shell.bash` asks: two calls, two approvals, two notifications (each
/// with its title and link), and nothing in them of the call's arguments, the provider key,
/// the launch token, the nonce or the bootstrap token.
#[tokio::test]
async fn one_notification_per_approval_without_secrets() {
    const ARG: &str = "arg-s3cr3t-5521";
    const BOOTSTRAP: &str = "bootstrap-9f8e7d6c5b4a39281706f5e4d3c2b1a0";
    let receiver = Receiver::start();
    let config = format!(
        "[notify]\nwebhook = \"http://127.0.0.1:{}/kaged-topic\"\npublic_url = \"https://kaged.example/\"\n",
        receiver.port
    );
    let env = ModelEnv::start_spec(EnvSpec {
        primary_extra: "  tools:\n    shell.bash:\n      approval: ask\n",
        config: Some(&config),
        env: &[("KAGED_AUTH_TOKEN", BOOTSTRAP)],
        ..EnvSpec::default()
    })
    .await;
    let (d, provider) = (&env.daemon, &env.provider);

    provider.push(tool_reply(
        COMPLETIONS,
        &[Call::new(
            "call_1",
            "shell.bash",
            &json!({ "command": format!("echo {ARG}-one") }),
        )],
    ));
    provider.push(tool_reply(
        COMPLETIONS,
        &[Call::new(
            "call_2",
            "shell.bash",
            &json!({ "command": format!("echo {ARG}-two") }),
        )],
    ));
    provider.push(text_reply(COMPLETIONS, &["Done."]));
    let id = create_agent(d, "agents", "primary", Some("Run it.")).await;

    let mut approval_ids = Vec::new();
    for n in 1..=2 {
        let p = wait_pending(d, 1).await;
        assert_eq!(p.len(), 1, "{p:?}");
        let approval = &p[0];
        let apr = approval["id"].as_str().unwrap().to_string();
        assert_eq!(approval["tool"], "shell.bash");
        assert_eq!(approval["session_id"], id.as_str());
        // Its notification arrives (once) while it waits.
        let hits = receiver.wait_for(n).await;
        let hit = &hits[n - 1];
        assert!(
            hit.head.starts_with("POST /kaged-topic HTTP/1.1"),
            "{}",
            hit.head
        );
        assert_eq!(
            hit.header("x-kaged-event").as_deref(),
            Some("approval.requested")
        );
        assert_eq!(
            hit.header("title").as_deref(),
            Some("Approval needed: shell.bash in agents")
        );
        assert_eq!(
            hit.header("click"),
            Some(format!("https://kaged.example/#/approvals/{apr}"))
        );
        assert!(
            hit.body.contains(&format!("kaged approvals approve {apr}")),
            "{}",
            hit.body
        );
        let (status, v) = d
            .call(
                Method::POST,
                &format!("/api/v1/approvals/{apr}"),
                Some(json!({"decision": "approve"})),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{v}");
        approval_ids.push(apr);
    }
    let turn = wait_conversation(d, &id, is_turn_ended).await;
    assert_eq!(
        turn_end_reasons(&turn),
        ["end_turn"],
        "{}",
        summarize(&turn)
    );
    // One per approval, no more.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let hits = receiver.hits();
    let approvals: Vec<&Hit> = hits
        .iter()
        .filter(|h| h.header("x-kaged-event").as_deref() == Some("approval.requested"))
        .collect();
    assert_eq!(approvals.len(), 2, "{hits:?}");
    for (hit, apr) in approvals.iter().zip(&approval_ids) {
        assert!(hit.header("click").unwrap().ends_with(apr.as_str()));
    }
    // The agent then waits for the operator: one notification says so, linking the session.
    let waiting: Vec<&Hit> = hits
        .iter()
        .filter(|h| h.header("x-kaged-event").as_deref() == Some("session.waiting"))
        .collect();
    assert_eq!(waiting.len(), 1, "{hits:?}");
    assert_eq!(
        waiting[0].header("click"),
        Some(format!("https://kaged.example/#/sessions/{id}"))
    );
    assert_eq!(hits.len(), 3, "{hits:?}");
    let launch_token = token_of(&d.launch_url);
    let nonce = d.nonce();
    for hit in &hits {
        let whole = hit.whole();
        for (what, secret) in [
            ("the command's arguments", ARG),
            ("the provider key", KEY),
            ("the launch token", launch_token.as_str()),
            ("the nonce", nonce.trim()),
            ("the bootstrap token", BOOTSTRAP),
        ] {
            assert!(!whole.contains(secret), "{what} in a notification: {whole}");
        }
        assert!(!whole.contains("echo"), "{whole}");
    }
}
