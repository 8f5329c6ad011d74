//! Several listeners: TCP and Unix sockets (0600, stale ones cleaned safely), the
//! trusted-proxy actor header honoured only on its listener, and `--insecure-readonly`.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

use std::io::{Read, Write};
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::UnixStream;
use std::path::Path;

use crate::common::*;
use reqwest::StatusCode;

/// One HTTP/1.1 request over a Unix socket; returns the status and the body.
fn unix_request(
    socket: &Path,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, String) {
    let mut s = UnixStream::connect(socket).unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: kaged.invalid\r\nConnection: close\r\nContent-Length: 0\r\n"
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let status = out.split(' ').nth(1).unwrap().parse().unwrap();
    let body = out.split("\r\n\r\n").nth(1).unwrap_or_default().to_string();
    (status, body)
}

fn write_config(home: &Path, text: &str) {
    std::fs::create_dir_all(home).unwrap();
    std::fs::write(home.join("config.toml"), text).unwrap();
}

#[tokio::test]
async fn tcp_and_unix_listeners_serve_the_same_daemon() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("home");
    let sock = tmp.path().join("sock/kaged.sock");
    let port = free_port();
    write_config(
        &home,
        &format!(
            "[daemon]\nlisten = [\"127.0.0.1:{port}\", \"unix://{}\"]\n",
            sock.display()
        ),
    );
    let d = Daemon::start_with(&home, &[], &[]);
    assert_eq!(d.port(), port);
    let meta = std::fs::metadata(&sock).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(mode_of(&sock), 0o600);
    assert_eq!(mode_of(sock.parent().unwrap()), 0o700);

    let nonce = d.nonce();
    let (status, body) = unix_request(
        &sock,
        "GET",
        "/api/v1/status",
        &[("X-Kaged-Auth-Nonce", &nonce)],
    );
    assert_eq!(status, 200, "{body}");
    let status_doc: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        status_doc["listeners"],
        serde_json::json!([
            format!("127.0.0.1:{port}"),
            format!("unix://{}", sock.display())
        ])
    );
    // The socket's mode is the boundary, not the Host header; credentials still apply.
    let (status, _) = unix_request(&sock, "GET", "/api/v1/status", &[]);
    assert_eq!(status, 401);
    // A cross-origin browser request through a proxy onto the socket is still refused.
    let (status, _) = unix_request(
        &sock,
        "GET",
        "/api/v1/status",
        &[
            ("X-Kaged-Auth-Nonce", &nonce),
            ("Origin", "http://evil.example"),
        ],
    );
    assert_eq!(status, 403);
    let r = plain_client()
        .get(format!("{}/api/v1/status", d.base))
        .header("x-kaged-auth-nonce", &nonce)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);

    let (status, _) = d.stop();
    assert!(status.success());
    assert!(!sock.exists(), "socket removed at shutdown");
}

#[test]
fn stale_sockets_are_replaced_and_live_ones_or_files_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("home");
    let dir = tmp.path().join("sock");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    let sock = dir.join("kaged.sock");
    let config = format!(
        "[daemon]\nlisten = [\"127.0.0.1:0\", \"unix://{}\"]\n",
        sock.display()
    );
    write_config(&home, &config);
    let start = || {
        kaged_cmd(&[("KAGED_HOME", home.to_str().unwrap())])
            .arg("start")
            .output()
            .unwrap()
    };

    // Live: someone is listening.
    let live = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    let out = start();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("another process is listening"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    drop(live);
    // Stale: the file of a dead listener is cleaned and the daemon starts.
    assert!(sock.exists());
    let d = Daemon::start_with(&home, &[], &[]);
    let (status, _) = unix_request(&sock, "GET", "/healthz", &[]);
    assert_eq!(status, 200);
    drop(d.stop());
    // Not a socket: never replaced.
    std::fs::write(&sock, "precious").unwrap();
    let out = start();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not a socket"));
    assert_eq!(std::fs::read_to_string(&sock).unwrap(), "precious");
}

#[tokio::test]
async fn trusted_actor_header_counts_only_on_its_listener() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("home");
    let sock = tmp.path().join("sock/proxy.sock");
    let port = free_port();
    write_config(
        &home,
        &format!(
            "[daemon]\nlisten = [\"127.0.0.1:{port}\", \"unix://{s}\"]\n\
             [auth.proxy]\ntrusted_actor_header = \"X-Kaged-Actor\"\ntrusted_proxy_listeners = [\"unix://{s}\"]\n",
            s = sock.display()
        ),
    );
    let d = Daemon::start_with(&home, &[], &[]);
    let nonce = d.nonce();
    let auth = ("X-Kaged-Auth-Nonce", nonce.as_str());

    // On the trusted socket: the header is the actor.
    let (status, body) = unix_request(
        &sock,
        "GET",
        "/api/v1/whoami",
        &[auth, ("X-Kaged-Actor", "carol")],
    );
    assert_eq!(status, 200);
    let who: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (who["id"].as_str(), who["method"].as_str()),
        (Some("carol"), Some("trusted_proxy"))
    );
    // A change without it is refused, not credited to anyone.
    let (status, body) = unix_request(&sock, "POST", "/api/v1/auth/logout", &[auth]);
    assert_eq!(status, 400);
    assert!(body.contains("actor_header_required"), "{body}");
    let (status, _) = unix_request(
        &sock,
        "POST",
        "/api/v1/auth/logout",
        &[auth, ("X-Kaged-Actor", "carol")],
    );
    assert_eq!(status, 204);
    // Reads without it pass.
    let (status, _) = unix_request(&sock, "GET", "/api/v1/status", &[auth]);
    assert_eq!(status, 200);
    // The proxy never administers tokens.
    let (status, body) = unix_request(
        &sock,
        "GET",
        "/api/v1/tokens",
        &[auth, ("X-Kaged-Actor", "carol")],
    );
    assert_eq!(status, 403, "{body}");

    // On the TCP listener the same header means nothing.
    let who: serde_json::Value = plain_client()
        .get(format!("{}/api/v1/whoami", d.base))
        .header("x-kaged-auth-nonce", &nonce)
        .header("x-kaged-actor", "carol")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(who["method"], "nonce");
    assert_ne!(who["id"], "carol");
}

#[tokio::test]
async fn insecure_readonly_serves_plain_reads_only() {
    let tmp = tempfile::tempdir().unwrap();
    let d = Daemon::start_with(
        tmp.path(),
        &["--bind", "127.0.0.1:0", "--insecure-readonly"],
        &[],
    );
    let client = plain_client();
    let r = client
        .get(format!("{}/api/v1/status", d.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["x-kaged-warning"], "insecure-readonly");
    for (method, path) in [
        (reqwest::Method::POST, "/api/v1/auth/logout"),
        (reqwest::Method::GET, "/api/v1/tokens"),
        (reqwest::Method::POST, "/api/v1/tokens"),
        (reqwest::Method::GET, "/api/v1/audit"),
    ] {
        let r = client
            .request(method.clone(), format!("{}{path}", d.base))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{method} {path}");
        let body: serde_json::Value = r.json().await.unwrap();
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("--insecure-readonly")
        );
    }
    // A real WebSocket upgrade to the event stream is refused before any socket exists.
    let ws_url = format!("{}/api/v1/events", d.base.replace("http://", "ws://"));
    match tokio_tungstenite::connect_async(ws_url.as_str()).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => {
            assert_eq!(r.status(), StatusCode::UNAUTHORIZED)
        }
        other => panic!(
            "expected a refused upgrade, got {:?}",
            other.map(|(_, r)| r.status())
        ),
    }
    // Credentials still work for everything else.
    let r = client
        .post(format!("{}/api/v1/auth/logout", d.base))
        .header("x-kaged-auth-nonce", d.nonce())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    drop(d.stop());

    let out = kaged_cmd(&[
        ("KAGED_HOME", tmp.path().to_str().unwrap()),
        (
            "KAGED_AUTH_TOKEN",
            "0123456789abcdef0123456789abcdef0123456789abcdef",
        ),
        ("KAGED_REQUIRE_TOKEN_IDENTITY", "1"),
    ])
    .args(["start", "--bind", "127.0.0.1:0", "--insecure-readonly"])
    .output()
    .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("cannot be combined with --insecure-readonly")
    );
}

#[test]
fn a_header_without_listeners_is_a_config_error() {
    let tmp = tempfile::tempdir().unwrap();
    write_config(
        tmp.path(),
        "[auth.proxy]\ntrusted_actor_header = \"X-Kaged-Actor\"\n",
    );
    let out = kaged_cmd(&[("KAGED_HOME", tmp.path().to_str().unwrap())])
        .args(["start", "--bind", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("config.toml:2:1: auth.proxy.trusted_actor_header:")
            && err.contains("honoured nowhere"),
        "{err}"
    );
}

#[tokio::test]
async fn trusted_proxy_on_one_of_two_tcp_listeners_with_env_overrides() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("home");
    let (direct, proxied) = (free_port(), free_port());
    let bootstrap = "0123456789abcdef0123456789abcdef0123456789abcdef";
    // The file names a header and a listener; the environment overrides both.
    write_config(
        &home,
        &format!(
            "[daemon]\nlisten = [\"127.0.0.1:{direct}\", \"127.0.0.1:{proxied}\"]\n\
             [auth.proxy]\ntrusted_actor_header = \"X-From-File\"\ntrusted_proxy_listeners = [\"127.0.0.1:{direct}\"]\n"
        ),
    );
    let trusted = format!("127.0.0.1:{proxied}");
    let d = Daemon::start_with(
        &home,
        &[],
        &[
            ("KAGED_TRUSTED_ACTOR_HEADER", "X-Kaged-Actor"),
            ("KAGED_TRUSTED_PROXY_LISTENERS", &trusted),
            ("KAGED_AUTH_TOKEN", bootstrap),
        ],
    );
    let out = d.cli(&["tokens", "create", "--actor", "alice"]);
    let user = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let client = plain_client();
    let whoami = |port: u16| format!("http://127.0.0.1:{port}/api/v1/whoami");

    // On the trusted listener the header overrides even a user token's identity.
    let who = json_of(
        client
            .get(whoami(proxied))
            .bearer_auth(&user)
            .header("x-kaged-actor", "carol"),
    )
    .await;
    assert_eq!(
        (who["id"].as_str(), who["method"].as_str()),
        (Some("carol"), Some("trusted_proxy"))
    );
    // The file's header name no longer counts there.
    let who = json_of(
        client
            .get(whoami(proxied))
            .bearer_auth(&user)
            .header("x-from-file", "dave"),
    )
    .await;
    assert_eq!(who["id"], "alice");
    // A wrong credential stays wrong, header or not.
    let r = client
        .get(whoami(proxied))
        .bearer_auth("kaged_nope")
        .header("x-kaged-actor", "carol")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    // Reserved names cannot be asserted.
    let r = client
        .post(format!("http://127.0.0.1:{proxied}/api/v1/auth/logout"))
        .bearer_auth(&user)
        .header("x-kaged-actor", "bootstrap")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    // On the other TCP listener (the file's choice, overridden) the header is ignored.
    let who = json_of(
        client
            .get(whoami(direct))
            .bearer_auth(&user)
            .header("x-kaged-actor", "carol"),
    )
    .await;
    assert_eq!(
        (who["id"].as_str(), who["method"].as_str()),
        (Some("alice"), Some("identity_token"))
    );
}

/// The start of a request whose head never ends: what a slow (or hostile) client leaves open.
const HALF_SENT: &[u8] = b"GET / HTTP/1.1\r\nHost: 127.0.0.1";

/// `kaged start` on a random loopback port under `prlimit --nofile=SOFT:HARD`, so a test can
/// show what happens when the daemon starts with few descriptors.
fn start_with_nofile(home: &Path, nofile: &str, env: &[(&str, &str)]) -> Daemon {
    let mut all = vec![("KAGED_HOME", home.to_str().unwrap())];
    all.extend_from_slice(env);
    let plain = kaged_cmd(&all);
    let mut cmd = std::process::Command::new("prlimit");
    cmd.env_clear();
    for (k, v) in plain.get_envs() {
        if let Some(v) = v {
            cmd.env(k, v);
        }
    }
    cmd.arg(format!("--nofile={nofile}"))
        .arg("--")
        .arg(kaged_bin())
        .args(["start", "--bind", "127.0.0.1:0"]);
    let owned = all
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Daemon::spawn(cmd, home, &home.join("run"), owned)
}

/// Open `n` connections (in order) that each send `HALF_SENT` and nothing more.
async fn half_sent(port: u16, n: usize) -> Vec<tokio::net::TcpStream> {
    use tokio::io::AsyncWriteExt;
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let connect = tokio::net::TcpStream::connect(("127.0.0.1", port));
        let mut s = tokio::time::timeout(std::time::Duration::from_secs(10), connect)
            .await
            .unwrap_or_else(|_| panic!("connection {i} was not even queued"))
            .unwrap();
        s.write_all(HALF_SENT).await.unwrap();
        out.push(s);
    }
    out
}

/// Has the daemon closed this connection (EOF or reset) within `limit`?
async fn closed_within(s: &mut tokio::net::TcpStream, limit: std::time::Duration) -> bool {
    use tokio::io::AsyncReadExt;
    let mut buf = [0u8; 512];
    loop {
        match tokio::time::timeout(limit, s.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            // A 408 or similar before the close is fine too; keep reading to the close.
            Ok(Ok(_)) => continue,
        }
    }
}

/// Is this connection still open right now (nothing to read, no EOF)?
fn still_open(s: &tokio::net::TcpStream) -> bool {
    let mut buf = [0u8; 16];
    matches!(s.try_read(&mut buf), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
}

#[tokio::test]
async fn half_sent_requests_neither_starve_others_nor_stay_open() {
    use std::time::Duration;
    let tmp = tempfile::tempdir().unwrap();
    // 256 descriptors to start with: more half-sent requests than that held every one of them.
    let d = start_with_nofile(
        tmp.path(),
        "256:4096",
        &[
            ("KAGED_HEADER_TIMEOUT", "2"),
            ("KAGED_MAX_WAITING_CONNECTIONS", "100"),
        ],
    );
    let mut slow = half_sent(d.port(), 600).await;

    // (a) A legitimate request is still answered while they are held.
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(15))
        .build()
        .unwrap();
    let r = client
        .get(format!("{}/api/v1/whoami", d.base))
        .header("x-kaged-auth-nonce", d.nonce())
        .send()
        .await
        .expect("a legitimate request is answered while 600 half-sent ones are held");
    assert_eq!(r.status(), StatusCode::OK);

    // (b) Every half-sent request is closed: the oldest beyond the cap at once, the rest after
    // the 2 s header timeout (the bound below is generous; only the outcome is asserted).
    for (i, s) in slow.iter_mut().enumerate() {
        assert!(
            closed_within(s, Duration::from_secs(20)).await,
            "half-sent connection {i} is still open"
        );
    }
    // The soft limit was raised to the hard one at start.
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", d.child.id())).unwrap();
    let open_files = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap()
        .split_whitespace()
        .skip(3)
        .take(2)
        .collect::<Vec<_>>();
    assert_eq!(open_files, ["4096", "4096"], "{limits}");

    let (status, log) = d.stop();
    assert!(status.success(), "{log}");
    assert!(log.contains("open file limit"), "{log}");
}

#[tokio::test]
async fn beyond_the_cap_the_longest_waiting_connections_are_closed_first() {
    use std::time::Duration;
    let tmp = tempfile::tempdir().unwrap();
    // A header timeout far longer than the test: only the cap can close anything here.
    let d = Daemon::start_with(
        tmp.path(),
        &["--bind", "127.0.0.1:0"],
        &[
            ("KAGED_HEADER_TIMEOUT", "300"),
            ("KAGED_MAX_WAITING_CONNECTIONS", "16"),
        ],
    );
    let mut slow = half_sent(d.port(), 48).await;
    for (i, s) in slow[..32].iter_mut().enumerate() {
        assert!(
            closed_within(s, Duration::from_secs(20)).await,
            "connection {i}, among the 32 oldest, is still open"
        );
    }
    for (i, s) in slow[32..].iter().enumerate() {
        assert!(
            still_open(s),
            "connection {}, among the 16 newest, was closed",
            32 + i
        );
    }
    // A client that sends its request at once gets through (it evicts the oldest waiting one).
    let r = plain_client()
        .get(format!("{}/healthz", d.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(closed_within(&mut slow[32], Duration::from_secs(20)).await);
}

#[tokio::test]
async fn idle_connections_close_but_websockets_and_their_requests_stay() {
    use futures_util::{SinkExt, StreamExt};
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_tungstenite::tungstenite::{Message, client::IntoClientRequest};
    let tmp = tempfile::tempdir().unwrap();
    let d = Daemon::start_with(
        tmp.path(),
        &["--bind", "127.0.0.1:0"],
        &[("KAGED_HEADER_TIMEOUT", "2"), ("KAGED_IDLE_TIMEOUT", "1")],
    );

    // A kept-alive connection that answered one request, then sits idle.
    let mut idle = tokio::net::TcpStream::connect(("127.0.0.1", d.port()))
        .await
        .unwrap();
    let head = format!(
        "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:{}\r\n\r\n",
        d.port()
    );
    idle.write_all(head.as_bytes()).await.unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    while !String::from_utf8_lossy(&got).contains("{\"status\":\"ok\"}") {
        let n = tokio::time::timeout(Duration::from_secs(10), idle.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(
            n > 0,
            "closed before the answer: {}",
            String::from_utf8_lossy(&got)
        );
        got.extend_from_slice(&buf[..n]);
    }
    assert!(String::from_utf8_lossy(&got).starts_with("HTTP/1.1 200"));

    // An events WebSocket: upgraded, it is no longer an idle HTTP connection.
    let url = format!("{}/api/v1/events", d.base.replace("http://", "ws://"));
    let mut request = url.as_str().into_client_request().unwrap();
    request
        .headers_mut()
        .insert("x-kaged-auth-nonce", d.nonce().parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    ws.next().await.unwrap().unwrap();

    assert!(
        closed_within(&mut idle, Duration::from_secs(20)).await,
        "an idle kept-alive connection stays open"
    );
    // Well past both timeouts, the WebSocket still answers.
    tokio::time::sleep(Duration::from_secs(4)).await;
    ws.send(Message::Ping(b"still there?".to_vec().into()))
        .await
        .unwrap();
    let pong = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Pong(p))) => return Some(p),
                Some(Ok(_)) => continue,
                _ => return None,
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(pong.as_deref(), Some(&b"still there?"[..]));
}
