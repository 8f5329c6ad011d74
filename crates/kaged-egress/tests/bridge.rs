//! The in-cage bridge over real sockets: TCP client → bridge → Unix-socket proxy → loopback
//! server, and the command runner around it.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

mod common;

use std::net::SocketAddr;
use std::path::PathBuf;

use common::{pong_server, read_all, read_head, start_proxy};
use kaged_egress::{BridgeError, PROXY_ENV_VARS, bridge, run_bridge_then};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

fn strings(words: &[&str]) -> Vec<String> {
    words.iter().map(|word| word.to_string()).collect()
}

fn loopback_any_port() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

#[tokio::test]
async fn bridge_carries_tcp_clients_through_the_proxy() {
    let (server, seen) = pong_server().await;
    let mut proxy = start_proxy(&[format!("127.0.0.1:{}", server.port())]);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let bridge_addr = listener.local_addr().unwrap();
    let bridge_task = tokio::spawn(bridge(listener, proxy.socket.clone()));

    let mut client = TcpStream::connect(bridge_addr).await.unwrap();
    let request = format!("CONNECT 127.0.0.1:{} HTTP/1.1\r\n\r\n", server.port());
    client.write_all(request.as_bytes()).await.unwrap();
    assert_eq!(
        read_head(&mut client).await,
        "HTTP/1.1 200 Connection established\r\n\r\n"
    );
    client.write_all(b"ping").await.unwrap();
    assert_eq!(read_all(&mut client).await, "pong:ping");
    assert_eq!(seen.await.unwrap(), b"ping");
    assert!(proxy.next_decision().await.allowed);

    // A refused destination is refused through the bridge too.
    let mut client = TcpStream::connect(bridge_addr).await.unwrap();
    client
        .write_all(b"CONNECT 127.0.0.1:9 HTTP/1.1\r\n\r\n")
        .await
        .unwrap();
    assert!(
        read_all(&mut client)
            .await
            .starts_with("HTTP/1.1 403 Forbidden\r\n")
    );
    bridge_task.abort();
}

#[tokio::test]
async fn bridge_answers_502_when_the_proxy_is_unreachable() {
    let dir = tempfile::tempdir().unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let bridge_addr = listener.local_addr().unwrap();
    let bridge_task = tokio::spawn(bridge(listener, dir.path().join("missing.sock")));
    let mut client = TcpStream::connect(bridge_addr).await.unwrap();
    client
        .write_all(b"CONNECT 127.0.0.1:9 HTTP/1.1\r\n\r\n")
        .await
        .unwrap();
    let response = read_all(&mut client).await;
    assert!(
        response.starts_with("HTTP/1.1 502 Bad Gateway\r\n"),
        "{response}"
    );
    assert!(response.contains("missing.sock"), "{response}");
    bridge_task.abort();
}

#[test]
fn the_command_exit_code_is_returned() {
    let code = run_bridge_then(
        loopback_any_port(),
        PathBuf::from("/nonexistent.sock"),
        &strings(&["sh", "-c", "exit 7"]),
    );
    assert_eq!(code.unwrap(), 7);
}

#[test]
fn a_command_killed_by_a_signal_returns_128_plus_the_signal() {
    let code = run_bridge_then(
        loopback_any_port(),
        PathBuf::from("/nonexistent.sock"),
        &strings(&["sh", "-c", "kill -KILL $$"]),
    );
    assert_eq!(code.unwrap(), 128 + 9);
}

#[test]
fn the_command_sees_the_proxy_variables() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("env");
    let script = format!(
        "for name in {}; do printenv \"$name\"; done > '{}'; printenv NO_PROXY no_proxy >> '{}'; true",
        PROXY_ENV_VARS.join(" "),
        out.display(),
        out.display()
    );
    let code = run_bridge_then(
        loopback_any_port(),
        PathBuf::from("/nonexistent.sock"),
        &strings(&["sh", "-c", &script]),
    );
    assert_eq!(code.unwrap(), 0);
    let values = std::fs::read_to_string(&out).unwrap();
    let values: Vec<&str> = values.lines().collect();
    assert_eq!(values.len(), PROXY_ENV_VARS.len(), "{values:?}");
    let port: u16 = values[0]
        .strip_prefix("http://127.0.0.1:")
        .unwrap_or_else(|| panic!("{values:?}"))
        .parse()
        .unwrap();
    assert_ne!(port, 0);
    assert!(values.iter().all(|value| *value == values[0]), "{values:?}");
}

/// The whole in-cage path: the command connects to the bridge through $HTTPS_PROXY (bash's
/// /dev/tcp), which reaches the proxy, which reaches the loopback server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_command_reaches_an_allowed_server_through_the_bridge() {
    let (server, seen) = pong_server().await;
    let mut proxy = start_proxy(&[format!("127.0.0.1:{}", server.port())]);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("response");
    let script = format!(
        r#"port=${{HTTPS_PROXY##*:}}
exec 3<>/dev/tcp/127.0.0.1/$port || exit 3
printf 'CONNECT 127.0.0.1:{server_port} HTTP/1.1\r\n\r\nping' >&3
timeout 5 cat <&3 > '{out}'"#,
        server_port = server.port(),
        out = out.display()
    );
    let socket = proxy.socket.clone();
    let code = tokio::task::spawn_blocking(move || {
        run_bridge_then(
            loopback_any_port(),
            socket,
            &strings(&["bash", "-c", &script]),
        )
    })
    .await
    .unwrap();
    assert_eq!(code.unwrap(), 0);
    assert_eq!(
        std::fs::read_to_string(&out).unwrap(),
        "HTTP/1.1 200 Connection established\r\n\r\npong:ping"
    );
    assert_eq!(seen.await.unwrap(), b"ping");
    assert!(proxy.next_decision().await.allowed);
}

#[test]
fn nothing_runs_when_the_listen_address_is_taken() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("ran");
    let result = run_bridge_then(
        addr,
        PathBuf::from("/nonexistent.sock"),
        &strings(&["touch", &marker.display().to_string()]),
    );
    match result {
        Err(BridgeError::Listen { addr: failed, .. }) => assert_eq!(failed, addr),
        other => panic!("{other:?}"),
    }
    assert!(!marker.exists(), "the command ran without its bridge");
}

#[test]
fn a_missing_program_is_a_spawn_error() {
    let result = run_bridge_then(
        loopback_any_port(),
        PathBuf::from("/nonexistent.sock"),
        &strings(&["/nonexistent/kaged-test-program"]),
    );
    assert!(
        matches!(result, Err(BridgeError::Spawn { .. })),
        "{result:?}"
    );
}
