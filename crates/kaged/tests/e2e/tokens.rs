//! Bearer tokens and remote access: the CLI against the real daemon, the decision matrix of
//! credentials x routes x methods, client-side transport rules, and startup guardrails.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

use crate::common::*;
use reqwest::{Method, StatusCode};

const BOOTSTRAP: &str = "b00757a9f1e2d3c4b5a69788796a5b4c3d2e1f00112233445566778899aabbcc";

fn start_with_tokens(home: &std::path::Path, identity: bool) -> Daemon {
    Daemon::start_with(
        home,
        &["--bind", "127.0.0.1:0"],
        &[
            ("KAGED_AUTH_TOKEN", BOOTSTRAP),
            (
                "KAGED_REQUIRE_TOKEN_IDENTITY",
                if identity { "true" } else { "false" },
            ),
        ],
    )
}

fn create_token(d: &Daemon, actor: &str, name: Option<&str>) -> String {
    let mut args = vec!["tokens", "create", "--actor", actor];
    if let Some(n) = name {
        args.extend(["--name", n]);
    }
    let out = d.cli(&args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("for actor {actor}")) && err.contains("cannot show it again"),
        "{err}"
    );
    let token = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert!(
        token.starts_with("kaged_") && token.len() == 6 + 64,
        "{token}"
    );
    token
}

#[tokio::test]
async fn tokens_are_created_listed_used_and_revoked_through_the_cli() {
    let tmp = tempfile::tempdir().unwrap();
    let d = start_with_tokens(tmp.path(), false);
    let token = create_token(&d, "alice", Some("laptop"));

    let out = d.cli(&["tokens", "list"]);
    let list = String::from_utf8(out.stdout).unwrap();
    assert!(
        list.lines().nth(1).unwrap().contains("alice") && list.contains("laptop"),
        "{list}"
    );
    assert!(!list.contains(&token));

    let who: serde_json::Value = plain_client()
        .get(format!("{}/api/v1/whoami", d.base))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(who["id"], "alice");
    assert_eq!(who["method"], "identity_token");
    // The scheme is case-insensitive and may be followed by several spaces (RFC 9110).
    for authorization in [format!("bearer {token}"), format!("BEARER   {token}")] {
        let r = plain_client()
            .get(format!("{}/api/v1/whoami", d.base))
            .header("authorization", &authorization)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{}", &authorization[..9]);
    }

    let out = d.cli(&["tokens", "revoke", "1"]);
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "revoked token 1 (actor alice)"
    );
    // Rejected at once.
    let r = plain_client()
        .get(format!("{}/api/v1/whoami", d.base))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    // Revoking again, or an unknown id, is a clear 404.
    let out = d.cli(&["tokens", "revoke", "1"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no active token with id 1"));
    let out = d.cli(&["tokens", "revoke", "0"]);
    assert_eq!(out.status.code(), Some(2), "usage error");
    for reserved in ["Bootstrap", "user:root", "anonymous"] {
        let out = d.cli(&["tokens", "create", "--actor", reserved]);
        assert_eq!(out.status.code(), Some(1), "{reserved}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("reserved"),
            "{reserved}"
        );
    }

    // Lifecycle in the audit trail, attributed; the plaintext nowhere at rest.
    let audit = d.api_get("/api/v1/audit").await;
    let kinds: Vec<&str> = audit["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert!(
        kinds.contains(&"token.created") && kinds.contains(&"token.revoked"),
        "{kinds:?}"
    );
    let (status, log) = d.stop();
    assert!(status.success());
    assert!(!log.contains(&token));
    for file in ["audit.log", "kaged.db"] {
        let bytes = std::fs::read(tmp.path().join(file)).unwrap();
        assert!(
            !String::from_utf8_lossy(&bytes).contains(&token),
            "{file} holds the plaintext"
        );
    }
}

#[tokio::test]
async fn decision_matrix_of_credentials_routes_and_methods() {
    let tmp = tempfile::tempdir().unwrap();
    let d = start_with_tokens(tmp.path(), true);
    let user = create_token(&d, "alice", None);
    let revoked = create_token(&d, "mallory", None);
    assert!(d.cli(&["tokens", "revoke", "2"]).status.success());
    let nonce = d.nonce();

    enum Cred<'a> {
        None,
        Header(&'static str, String),
        Bearer(&'a str),
    }
    let creds: Vec<(&str, Cred)> = vec![
        ("none", Cred::None),
        (
            "malformed",
            Cred::Header("authorization", format!("Token {BOOTSTRAP}")),
        ),
        (
            "wrong bearer",
            Cred::Bearer("kaged_0000000000000000000000000000000000000000000000000000000000000000"),
        ),
        ("bootstrap", Cred::Bearer(BOOTSTRAP)),
        ("user token", Cred::Bearer(&user)),
        ("revoked token", Cred::Bearer(&revoked)),
        (
            "local nonce",
            Cred::Header("x-kaged-auth-nonce", nonce.clone()),
        ),
        (
            "wrong nonce",
            Cred::Header("x-kaged-auth-nonce", "0".repeat(64)),
        ),
    ];
    let routes = [
        (Method::GET, "/api/v1/status"),
        (Method::POST, "/api/v1/auth/logout"),
        (Method::GET, "/api/v1/tokens"),
        (Method::POST, "/api/v1/tokens"),
    ];
    // Expected (status, code) per credential, in route order.
    let u = (401, "unauthenticated");
    let inv = (403, "token_invalid");
    let admin = (403, "token_admin_forbidden");
    let expected: Vec<[(u16, &str); 4]> = vec![
        [u, u, u, u],
        [u, u, u, u],
        [inv, inv, inv, inv],
        [
            (200, ""),
            (403, "bootstrap_write_forbidden"),
            (200, ""),
            (201, ""),
        ],
        [(200, ""), (204, ""), admin, admin],
        [inv, inv, inv, inv],
        [(200, ""), (204, ""), (200, ""), (201, "")],
        [u, u, u, u],
    ];
    let client = plain_client();
    for ((label, cred), want) in creds.iter().zip(expected) {
        for ((method, path), (status, code)) in routes.iter().zip(want) {
            let mut req = client.request(method.clone(), format!("{}{path}", d.base));
            if *method == Method::POST && *path == "/api/v1/tokens" {
                req = req.json(&serde_json::json!({"actor": "carol"}));
            }
            req = match cred {
                Cred::None => req,
                Cred::Header(name, value) => req.header(*name, value),
                Cred::Bearer(t) => req.bearer_auth(t),
            };
            let r = req.send().await.unwrap();
            assert_eq!(r.status().as_u16(), status, "{label} {method} {path}");
            if !code.is_empty() {
                let body: serde_json::Value = r.json().await.unwrap();
                assert_eq!(body["error"]["code"], code, "{label} {method} {path}");
            }
        }
    }
    // Without identity mode the bootstrap token may make changes.
    drop(d.stop());
    let d = start_with_tokens(tmp.path(), false);
    let r = client
        .post(format!("{}/api/v1/auth/logout", d.base))
        .bearer_auth(BOOTSTRAP)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    // A sidecar identity or a user token never administers tokens, even without identity mode.
    let r = client
        .get(format!("{}/api/v1/tokens", d.base))
        .bearer_auth(&user)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
}

#[test]
fn remote_cli_uses_kaged_server_and_refuses_unsafe_targets() {
    let tmp = tempfile::tempdir().unwrap();
    let d = start_with_tokens(tmp.path(), false);
    let user = create_token(&d, "alice", None);
    let nowhere = tmp.path().join("elsewhere");
    let home = nowhere.to_str().unwrap();
    let remote = |server: &str, token: &str, extra: &[(&str, &str)], args: &[&str]| {
        let mut env = vec![
            ("KAGED_HOME", home),
            ("KAGED_SERVER", server),
            ("KAGED_AUTH_TOKEN", token),
        ];
        env.extend_from_slice(extra);
        kaged_cmd(&env).args(args).output().unwrap()
    };
    // A remote status, with no local daemon, through the user token.
    let out = remote(&d.base, &user, &[], &["status"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains(&format!("url       {}", d.base)));
    // Token admin remotely: the bootstrap token may, the user token may not.
    let out = remote(&d.base, BOOTSTRAP, &[], &["tokens", "list"]);
    assert!(out.status.success());
    let out = remote(&d.base, &user, &[], &["tokens", "list"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("403"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Plain HTTP to non-loopback targets is refused before anything is sent.
    for (server, extra, needle) in [
        (
            "http://100.64.0.2:7777",
            &[][..],
            "KAGED_TRUST_PRIVATE_NETWORK",
        ),
        (
            "http://8.8.8.8:7777",
            &[("KAGED_TRUST_PRIVATE_NETWORK", "1")][..],
            "not a private address",
        ),
        (
            "http://kaged.lan:7777",
            &[("KAGED_TRUST_PRIVATE_NETWORK", "1")][..],
            "host name",
        ),
    ] {
        let out = remote(server, &user, extra, &["status"]);
        assert_eq!(out.status.code(), Some(2), "{server}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains(needle),
            "{server}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // A URL with user information is refused: its real host is after the '@'.
    let out = remote("http://127.0.0.1:7777@192.0.2.2", &user, &[], &["status"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("user information"));
    // A redirect is never followed with the token: the place it points to sees nothing.
    let trap = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let trap_port = trap.local_addr().unwrap().port();
    trap.set_nonblocking(true).unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        use std::io::{Read, Write};
        let (mut s, _) = listener.accept().unwrap();
        let mut buf = [0u8; 4096];
        let _ = s.read(&mut buf);
        let reply = format!(
            "HTTP/1.1 302 Found\r\nLocation: http://127.0.0.1:{trap_port}/steal\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
        s.write_all(reply.as_bytes()).unwrap();
    });
    let out = remote(&format!("http://127.0.0.1:{port}"), &user, &[], &["status"]);
    server.join().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("do not follow redirects"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::thread::sleep(std::time::Duration::from_millis(200));
    assert!(trap.accept().is_err(), "the redirect target was contacted");
}

/// Sidecar sign-in (the bearer-token rules apply to it unchanged off loopback).
const SIDECAR: &[(&str, &str)] = &[
    ("KAGED_AUTH_MODE", "sidecar"),
    (
        "KAGED_AUTH_SIDECAR_NONCE",
        "0123456789abcdef0123456789abcdef0123456789abcdef",
    ),
];

/// Refused listeners are configuration problems: exit 2, with the reason and the fix. (Launch-URL
/// sign-in on a private address is accepted: tests/vpn_bind.rs.)
#[test]
fn unsafe_listeners_are_refused_at_startup_with_the_reason() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().to_str().unwrap();
    type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a str);
    let cases: [Case; 9] = [
        (
            "10.0.0.7:0",
            &[("KAGED_AUTH_TOKEN", BOOTSTRAP)],
            "trust_private_network",
        ),
        ("[fd00::7]:0", SIDECAR, "without a bearer token"),
        (
            "[2001:db8::1]:0",
            &[
                ("KAGED_AUTH_TOKEN", BOOTSTRAP),
                ("KAGED_TRUST_PRIVATE_NETWORK", "1"),
            ],
            "public address",
        ),
        (
            "[::ffff:8.8.8.8]:0",
            &[
                ("KAGED_AUTH_TOKEN", BOOTSTRAP),
                ("KAGED_TRUST_PRIVATE_NETWORK", "1"),
            ],
            "public address",
        ),
        ("100.64.0.2:0", SIDECAR, "without a bearer token"),
        (
            "100.64.0.2:0",
            &[("KAGED_AUTH_TOKEN", BOOTSTRAP)],
            "trust_private_network",
        ),
        (
            "8.8.8.8:0",
            &[
                ("KAGED_AUTH_TOKEN", BOOTSTRAP),
                ("KAGED_TRUST_PRIVATE_NETWORK", "1"),
            ],
            "public address",
        ),
        (
            "0.0.0.0:0",
            &[
                ("KAGED_AUTH_TOKEN", BOOTSTRAP),
                ("KAGED_TRUST_PRIVATE_NETWORK", "1"),
            ],
            "all interfaces",
        ),
        (
            "[::]:0",
            &[
                ("KAGED_AUTH_TOKEN", BOOTSTRAP),
                ("KAGED_TRUST_PRIVATE_NETWORK", "1"),
            ],
            "all interfaces",
        ),
    ];
    for (bind, extra, needle) in cases {
        let mut env = vec![("KAGED_HOME", home)];
        env.extend_from_slice(extra);
        let out = kaged_cmd(&env)
            .args(["start", "--bind", bind])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{bind}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(needle) && (err.contains("TLS") || err.contains("tunnel")),
            "{bind}: {err}"
        );
        assert!(!err.contains(BOOTSTRAP), "the token is never echoed");
    }
    // Identity mode without a bootstrap token is a configuration error.
    let out = kaged_cmd(&[("KAGED_HOME", home), ("KAGED_REQUIRE_TOKEN_IDENTITY", "1")])
        .args(["start", "--bind", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("needs a bootstrap token"));
}

#[test]
fn insecure_modes_are_refused_on_unsafe_listeners() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().to_str().unwrap();
    // --insecure ignores every credential, so it stays on loopback whatever else is set.
    let out = kaged_cmd(&[
        ("KAGED_HOME", home),
        ("KAGED_AUTH_TOKEN", BOOTSTRAP),
        ("KAGED_TRUST_PRIVATE_NETWORK", "1"),
    ])
    .args(["start", "--insecure", "--bind", "100.64.0.9:0"])
    .output()
    .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("refusing --insecure on 100.64.0.9:0"));
    // --insecure-readonly with a token still needs the private-network opt-in.
    let out = kaged_cmd(&[("KAGED_HOME", home), ("KAGED_AUTH_TOKEN", BOOTSTRAP)])
        .args(["start", "--insecure-readonly", "--bind", "100.64.0.9:0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("trust_private_network"));
}

#[tokio::test]
async fn revoking_a_token_closes_its_open_event_socket() {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::{Message, client::IntoClientRequest};
    let tmp = tempfile::tempdir().unwrap();
    let d = start_with_tokens(tmp.path(), false);
    let token = create_token(&d, "alice", None);
    let url = format!("{}/api/v1/events", d.base.replace("http://", "ws://"));
    let mut request = url.as_str().into_client_request().unwrap();
    request
        .headers_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    let hello = ws.next().await.unwrap().unwrap();
    assert!(hello.to_text().unwrap().contains("\"identity\":\"alice\""));
    assert!(d.cli(&["tokens", "revoke", "1"]).status.success());
    let next = tokio::time::timeout(std::time::Duration::from_secs(5), ws.next())
        .await
        .unwrap();
    match next {
        Some(Ok(Message::Close(Some(frame)))) => assert_eq!(u16::from(frame.code), 1008),
        other => panic!("expected a policy close, got {other:?}"),
    }
}

#[tokio::test]
async fn a_storage_failure_during_token_lookup_is_a_500_never_a_pass_or_a_403() {
    let tmp = tempfile::tempdir().unwrap();
    let d = start_with_tokens(tmp.path(), false);
    let token = create_token(&d, "alice", None);
    // Break the table behind the daemon's back (WAL lets a second connection in).
    let db = rusqlite::Connection::open(tmp.path().join("kaged.db")).unwrap();
    db.execute_batch("DROP TABLE api_tokens;").unwrap();
    drop(db);
    let r = plain_client()
        .get(format!("{}/api/v1/whoami", d.base))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::INTERNAL_SERVER_ERROR);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "internal");
    assert!(
        !body.to_string().contains("api_tokens"),
        "no internals in the response: {body}"
    );
    // The bootstrap token does not need the table and keeps working.
    let r = plain_client()
        .get(format!("{}/api/v1/status", d.base))
        .bearer_auth(BOOTSTRAP)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
}
