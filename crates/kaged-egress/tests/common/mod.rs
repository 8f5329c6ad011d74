//! Shared fixtures: the proxy on a Unix socket in a temporary directory, and loopback servers
//! started by the test. Nothing leaves the machine.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use kaged_egress::{Allowlist, Decisions, EgressDecision, Limits, decision_channel, serve_with};
use tempfile::TempDir;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Long enough for any loopback exchange; short enough that a hang fails the test quickly.
pub const PATIENCE: Duration = Duration::from_secs(5);

pub struct Proxy {
    pub socket: PathBuf,
    pub decisions: Decisions,
    pub stop: Option<oneshot::Sender<()>>,
    pub task: JoinHandle<()>,
    _dir: TempDir,
}

impl Proxy {
    pub async fn next_decision(&mut self) -> EgressDecision {
        tokio::time::timeout(PATIENCE, self.decisions.recv())
            .await
            .expect("no decision reported")
            .expect("decision channel closed")
    }

    /// Asserts that no decision is waiting.
    pub fn no_decision(&mut self) {
        assert!(self.decisions.try_recv().is_none(), "unexpected decision");
    }
}

pub fn start_proxy(entries: &[String]) -> Proxy {
    start_proxy_with(entries, Limits::default())
}

pub fn start_proxy_with(entries: &[String], limits: Limits) -> Proxy {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("egress.sock");
    let listener = UnixListener::bind(&socket).unwrap();
    let allow = Arc::new(Allowlist::parse(entries).unwrap());
    let (decisions_tx, decisions) = decision_channel(64);
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(serve_with(
        listener,
        allow,
        decisions_tx,
        limits,
        async move {
            let _ = stopped.await;
        },
    ));
    Proxy {
        socket,
        decisions,
        stop: Some(stop),
        task,
        _dir: dir,
    }
}

/// A loopback server for one connection: reads 4 bytes, answers `pong:` and those bytes.
pub async fn pong_server() -> (SocketAddr, JoinHandle<Vec<u8>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let mut ping = [0u8; 4];
        stream.read_exact(&mut ping).await.unwrap();
        stream.write_all(b"pong:").await.unwrap();
        stream.write_all(&ping).await.unwrap();
        stream.shutdown().await.unwrap();
        ping.to_vec()
    });
    (addr, task)
}

/// A loopback HTTP server for one request: returns what it received (head and
/// Content-Length body) and answers 200 with `body`.
pub async fn http_server(body: &'static str) -> (SocketAddr, JoinHandle<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let mut received = read_head(&mut stream).await;
        let length = received
            .lines()
            .find_map(|line| {
                let (name, value) = line.split_once(':')?;
                name.eq_ignore_ascii_case("content-length")
                    .then(|| value.trim().parse::<usize>().unwrap())
            })
            .unwrap_or(0);
        let mut content = vec![0u8; length];
        stream.read_exact(&mut content).await.unwrap();
        received.push_str(&String::from_utf8(content).unwrap());
        let response = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(response.as_bytes()).await.unwrap();
        stream.shutdown().await.unwrap();
        received
    });
    (addr, task)
}

/// A loopback port with nothing listening on it.
pub async fn closed_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap().port()
}

/// Reads up to and including the blank line that ends a head, one byte at a time so nothing
/// after it is consumed.
pub async fn read_head<S: AsyncRead + Unpin>(stream: &mut S) -> String {
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let byte = tokio::time::timeout(PATIENCE, stream.read_u8())
            .await
            .expect("head timed out")
            .unwrap_or_else(|error| {
                panic!(
                    "head cut short ({error}): {:?}",
                    String::from_utf8_lossy(&head)
                )
            });
        head.push(byte);
    }
    String::from_utf8(head).unwrap()
}

pub async fn read_all<S: AsyncRead + Unpin>(stream: &mut S) -> String {
    let mut all = Vec::new();
    tokio::time::timeout(PATIENCE, stream.read_to_end(&mut all))
        .await
        .expect("read timed out")
        .unwrap();
    String::from_utf8(all).unwrap()
}
