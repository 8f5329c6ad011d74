//! System-wide shapes: a real authenticating sidecar (nginx with basic auth, standing in for
//! oauth2-proxy) injecting the header contract, `--insecure`, `--no-sandbox`, and system-wide
//! mode with its paths redirected under a temporary root.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::common::*;
use futures_util::StreamExt;
use reqwest::StatusCode;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

const SIDECAR_NONCE: &str = "5f1c0d9e8b7a69584736251403f2e1d0c9b8a7968574635241302f1e0d9c8b7a";

fn nginx_bin() -> PathBuf {
    ["/usr/sbin/nginx", "/usr/bin/nginx"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .expect("nginx is not installed: run ./scripts/test (installs it as root) or `sudo apt-get install nginx`")
}

/// nginx on loopback in front of kaged: basic auth is the "identity provider"; the proxy strips
/// client copies of the contract headers and injects its own, as oauth2-proxy would.
struct Sidecar {
    child: Child,
    port: u16,
}

impl Sidecar {
    fn start(dir: &Path, kaged_port: u16, port: u16) -> Sidecar {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(
            dir.join("htpasswd"),
            "alice:{PLAIN}wonderland\nbob:{PLAIN}builder\n",
        )
        .unwrap();
        let d = dir.display();
        let conf = format!(
            r#"daemon off;
master_process off;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 64; }}
http {{
  access_log off;
  client_body_temp_path {d}/body;
  proxy_temp_path {d}/proxy;
  fastcgi_temp_path {d}/fastcgi;
  uwsgi_temp_path {d}/uwsgi;
  scgi_temp_path {d}/scgi;
  map $http_upgrade $connection_upgrade {{ default upgrade; '' close; }}
  server {{
    listen 127.0.0.1:{port};
    auth_basic "kaged";
    auth_basic_user_file {d}/htpasswd;
    location / {{
      proxy_pass http://127.0.0.1:{kaged_port};
      proxy_http_version 1.1;
      proxy_set_header Host $http_host;
      proxy_set_header Upgrade $http_upgrade;
      proxy_set_header Connection $connection_upgrade;
      proxy_set_header Authorization "";
      proxy_set_header X-Kaged-Auth-Nonce "{SIDECAR_NONCE}";
      proxy_set_header X-Kaged-User-Id $remote_user;
      proxy_set_header X-Kaged-User-Email $remote_user@example.test;
    }}
  }}
}}
"#
        );
        std::fs::write(dir.join("nginx.conf"), conf).unwrap();
        let mut child = Command::new(nginx_bin())
            .args([
                "-p",
                &d.to_string(),
                "-c",
                &format!("{d}/nginx.conf"),
                "-e",
                &format!("{d}/error.log"),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // Wait until it accepts connections.
        for _ in 0..200 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Sidecar { child, port };
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!(
            "nginx did not start: {}",
            std::fs::read_to_string(dir.join("error.log")).unwrap_or_default()
        );
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A kaged in sidecar mode, and nginx in front of it. kaged must know the proxy's public
/// authority (its Host and Origin), so both ports are chosen first.
fn sidecar_pair(root: &Path, extra_args: &[&str]) -> (Daemon, Sidecar) {
    let kaged_port = free_port();
    let proxy_port = free_port();
    let bind = format!("127.0.0.1:{kaged_port}");
    let allowed = format!("127.0.0.1:{proxy_port}");
    let mut args = vec!["--bind", bind.as_str()];
    args.extend_from_slice(extra_args);
    let d = Daemon::start_with(
        &root.join("home"),
        &args,
        &[
            ("KAGED_AUTH_MODE", "sidecar"),
            ("KAGED_AUTH_SIDECAR_NONCE", SIDECAR_NONCE),
            ("KAGED_ALLOWED_HOSTS", &allowed),
        ],
    );
    let proxy = Sidecar::start(&root.join("nginx"), kaged_port, proxy_port);
    (d, proxy)
}

#[tokio::test]
async fn requests_through_the_sidecar_carry_its_identity_and_bypasses_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let (d, proxy) = sidecar_pair(tmp.path(), &[]);
    assert!(
        d.stderr_text()
            .contains("kaged: ready — listening on http://127.0.0.1:"),
        "{}",
        d.stderr_text()
    );
    assert!(
        !d.stderr_text().contains("token="),
        "no launch token is minted or printed"
    );
    let client = plain_client();

    // Through the proxy, signed in as alice: the daemon sees alice, with her email.
    let who: serde_json::Value = json_of(
        client
            .get(proxy.url("/api/v1/whoami"))
            .basic_auth("alice", Some("wonderland")),
    )
    .await;
    assert_eq!(who["id"], "alice");
    assert_eq!(who["email"], "alice@example.test");
    assert_eq!(who["method"], "sidecar");

    // Client-supplied copies of the contract headers are replaced by the proxy's.
    let who: serde_json::Value = json_of(
        client
            .get(proxy.url("/api/v1/whoami"))
            .basic_auth("alice", Some("wonderland"))
            .header("x-kaged-user-id", "mallory")
            .header("x-kaged-auth-nonce", "0".repeat(64)),
    )
    .await;
    assert_eq!(who["id"], "alice");

    // The UI is served through the proxy, and a same-origin state change passes.
    let r = client
        .get(proxy.url("/"))
        .basic_auth("bob", Some("builder"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let r = client
        .post(proxy.url("/api/v1/auth/logout"))
        .basic_auth("bob", Some("builder"))
        .header("origin", format!("http://127.0.0.1:{}", proxy.port))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    // A cross-origin one through the proxy does not.
    let r = client
        .post(proxy.url("/api/v1/auth/logout"))
        .basic_auth("bob", Some("builder"))
        .header("origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);

    // A sidecar identity never administers tokens.
    let r = client
        .get(proxy.url("/api/v1/tokens"))
        .basic_auth("alice", Some("wonderland"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "token_admin_forbidden");

    // The proxy itself refuses strangers.
    let r = client
        .get(proxy.url("/api/v1/whoami"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);

    // Straight to kaged, bypassing the proxy: spoofed identity without or with a wrong nonce.
    let direct = format!("{}/api/v1/whoami", d.base);
    for nonce in [
        None,
        Some("0".repeat(64)),
        Some(SIDECAR_NONCE[..32].to_string()),
    ] {
        let mut req = client.get(&direct).header("x-kaged-user-id", "alice");
        if let Some(n) = &nonce {
            req = req.header("x-kaged-auth-nonce", n);
        }
        let r = req.send().await.unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{nonce:?}");
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(body["error"]["code"], "unauthenticated");
    }
    // The right nonce without an identity is still not a user.
    let r = client
        .get(&direct)
        .header("x-kaged-auth-nonce", SIDECAR_NONCE)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let body: serde_json::Value = r.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("X-Kaged-User-Id")
    );

    // Launch URLs are off in sidecar mode.
    let r = client
        .get(format!("{}/launch?token=x", d.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);

    // The local CLI still works (per-startup nonce), and says how auth works.
    let out = d.cli(&["status"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("auth      sidecar header contract"));
    // ... and does not hand out launch URLs that could not work.
    let out = d.cli(&["auth", "open", "--no-browser"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("does not use launch URLs"));
    assert!(out.stdout.is_empty());

    // Identities are attributed in the audit log, once each, with their email.
    let audit = d.api_get("/api/v1/audit").await;
    let logins: Vec<(&str, &str)> = audit["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "auth.login" && e["outcome"] == "success")
        .map(|e| {
            (
                e["identity"].as_str().unwrap(),
                e["detail"]["email"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(logins.len(), 2, "{logins:?}");
    assert!(logins.contains(&("alice", "alice@example.test")));
    assert!(logins.contains(&("bob", "bob@example.test")));
    let failed = audit["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "auth.failed")
        .count();
    assert!(
        failed >= 3,
        "wrong nonces and the identity-less request are audited"
    );
}

#[tokio::test]
async fn websockets_work_through_the_sidecar_and_not_around_it() {
    let tmp = tempfile::tempdir().unwrap();
    let (d, proxy) = sidecar_pair(tmp.path(), &[]);

    let mut request = format!("ws://127.0.0.1:{}/api/v1/events", proxy.port)
        .into_client_request()
        .unwrap();
    request.headers_mut().insert(
        "authorization",
        "Basic YWxpY2U6d29uZGVybGFuZA==".parse().unwrap(),
    );
    let (mut ws, response) = tokio_tungstenite::connect_async(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
    let hello = tokio::time::timeout(Duration::from_secs(10), ws.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let hello: serde_json::Value = serde_json::from_str(hello.to_text().unwrap()).unwrap();
    assert_eq!(hello["type"], "hello");
    assert_eq!(hello["identity"], "alice");
    assert_eq!(hello["method"], "sidecar");

    // Around the proxy, the upgrade is refused before any WebSocket exists.
    let mut request = format!("{}/api/v1/events", d.base.replace("http://", "ws://"))
        .into_client_request()
        .unwrap();
    request
        .headers_mut()
        .insert("x-kaged-user-id", "alice".parse().unwrap());
    let err = tokio_tungstenite::connect_async(request).await.unwrap_err();
    match err {
        tokio_tungstenite::tungstenite::Error::Http(r) => {
            assert_eq!(r.status(), StatusCode::UNAUTHORIZED)
        }
        other => panic!("expected an HTTP refusal, got {other}"),
    }

    // The daemon stopping closes the socket with "going away".
    let (status, _) = d.stop();
    assert!(status.success());
    let close = tokio::time::timeout(Duration::from_secs(10), ws.next())
        .await
        .unwrap();
    match close {
        Some(Ok(tokio_tungstenite::tungstenite::Message::Close(Some(frame)))) => {
            assert_eq!(u16::from(frame.code), 1001)
        }
        other => panic!("expected a close frame, got {other:?}"),
    }
}

#[test]
fn sidecar_mode_refuses_to_start_without_a_strong_nonce() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().to_str().unwrap();
    for (nonce, needle) in [
        (None, "KAGED_AUTH_SIDECAR_NONCE is not set"),
        (Some("changeme"), "too weak"),
    ] {
        let mut env = vec![("KAGED_HOME", home), ("KAGED_AUTH_MODE", "sidecar")];
        if let Some(n) = nonce {
            env.push(("KAGED_AUTH_SIDECAR_NONCE", n));
        }
        let out = kaged_cmd(&env)
            .args(["start", "--bind", "127.0.0.1:0"])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(needle) && err.contains("openssl rand -hex 32"),
            "{err}"
        );
        assert!(
            !err.contains("changeme"),
            "the rejected value is not echoed"
        );
    }
}

#[tokio::test]
async fn system_wide_mode_under_a_temporary_root_defaults_to_sidecar() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("var-lib-kaged");
    let d = Daemon::start_with(
        &root,
        &["--mode", "system", "--bind", "127.0.0.1:0"],
        &[("KAGED_AUTH_SIDECAR_NONCE", SIDECAR_NONCE)],
    );
    assert!(
        d.stderr_text().contains("mode=\"system-wide\""),
        "{}",
        d.stderr_text()
    );
    assert!(!d.launch_url.contains("token="));
    let s = d.api_get("/api/v1/status").await;
    assert_eq!(s["mode"], "system");
    assert_eq!(s["auth"], "sidecar");
    assert_eq!(s["paths"]["data_dir"], root.to_str().unwrap());
    assert_eq!(
        s["paths"]["audit_log"],
        root.join("audit.log").to_str().unwrap()
    );
    // System-wide mode does not write a config file for the operator.
    assert!(!root.join("config.toml").exists());
    let out = d.cli(&["--mode", "system", "status"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("system-wide (--mode=system was given)"));
}

#[tokio::test]
async fn insecure_and_no_sandbox_are_loud_on_every_response() {
    let tmp = tempfile::tempdir().unwrap();
    let d = Daemon::start_with(
        tmp.path(),
        &["--bind", "127.0.0.1:0", "--insecure", "--no-sandbox"],
        &[],
    );
    assert!(
        d.stderr_text().contains("NO AUTHENTICATION"),
        "{}",
        d.stderr_text()
    );
    let client = plain_client();
    for path in ["/healthz", "/api/v1/status", "/api/v1/nope", "/"] {
        let r = client
            .get(format!("{}{path}", d.base))
            .send()
            .await
            .unwrap();
        let warnings: Vec<&str> = r
            .headers()
            .get_all("x-kaged-warning")
            .iter()
            .map(|v| v.to_str().unwrap())
            .collect();
        assert_eq!(warnings, vec!["insecure", "no-sandbox"], "{path}");
    }
    // No credentials needed, but DNS rebinding is still refused.
    let who: serde_json::Value = json_of(client.get(format!("{}/api/v1/whoami", d.base))).await;
    assert_eq!(who["method"], "insecure");
    let r = client
        .get(format!("{}/api/v1/status", d.base))
        .header("host", "evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let out = d.cli(&["status"]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(text.contains("auth      NONE (--insecure)"), "{text}");
    assert!(text.contains("WARNING   insecure"), "{text}");
    assert!(text.contains("WARNING   no-sandbox"), "{text}");

    // Without the flags, no warning header.
    drop(d.stop());
    let d = Daemon::start(tmp.path());
    let r = client
        .get(format!("{}/healthz", d.base))
        .send()
        .await
        .unwrap();
    assert!(r.headers().get("x-kaged-warning").is_none());
}

#[test]
fn the_readme_start_command_works_for_root_and_root_without_it_is_told_why() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().to_str().unwrap();
    let is_root = std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m))
        .unwrap()
        == 0;
    if is_root {
        // Detection picks system-wide (sidecar) for root: the refusal says how to get a launch URL.
        let out = kaged_cmd(&[("HOME", home)])
            .args(["start", "--bind", "127.0.0.1:0"])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("running as UID 0 (root)") && err.contains("kaged start --mode user"),
            "{err}"
        );
    }
    // `kaged start --mode user`, as in the README, prints a launch URL for anyone.
    let mut cmd = kaged_cmd(&[("HOME", home)]);
    cmd.args(["start", "--mode", "user", "--bind", "127.0.0.1:0"]);
    let d = Daemon::spawn(
        cmd,
        &tmp.path().join(".local/share/kaged"),
        &PathBuf::from(format!(
            "/tmp/kaged-{}",
            if is_root { 0 } else { std::process::id() }
        )),
        vec![("HOME".into(), home.into())],
    );
    assert!(d.launch_url.contains("/launch?token="), "{}", d.launch_url);
    assert!(tmp.path().join(".config/kaged/config.toml").is_file());
    let (status, _) = d.stop();
    assert!(status.success());
}
