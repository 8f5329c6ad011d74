//! The proxy over real sockets: a Unix socket in a temporary directory for the client side,
//! loopback servers started here for the destinations.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

mod common;

use std::time::Duration;

use common::{
    PATIENCE, closed_port, http_server, pong_server, read_all, read_head, start_proxy,
    start_proxy_with,
};
use kaged_egress::{EgressDecision, Limits, MAX_HEAD_BYTES};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UnixStream};

#[tokio::test]
async fn connect_to_an_allowed_loopback_port_tunnels_both_ways() {
    let (server, seen) = pong_server().await;
    let mut proxy = start_proxy(&[format!("127.0.0.1:{}", server.port())]);
    let mut client = UnixStream::connect(&proxy.socket).await.unwrap();

    // The first tunnelled bytes ride along with the head, as eager TLS clients send them.
    let request = format!(
        "CONNECT 127.0.0.1:{0} HTTP/1.1\r\nHost: 127.0.0.1:{0}\r\n\r\nping",
        server.port()
    );
    client.write_all(request.as_bytes()).await.unwrap();
    let head = read_head(&mut client).await;
    assert_eq!(head, "HTTP/1.1 200 Connection established\r\n\r\n");
    assert_eq!(read_all(&mut client).await, "pong:ping");
    assert_eq!(seen.await.unwrap(), b"ping");

    assert_eq!(
        proxy.next_decision().await,
        EgressDecision {
            method: "CONNECT".into(),
            host: "127.0.0.1".into(),
            port: server.port(),
            allowed: true,
            reason: format!("allowed by entry `127.0.0.1:{}` (127.0.0.1)", server.port()),
        }
    );
}

#[tokio::test]
async fn connect_to_an_unlisted_port_is_forbidden_and_reported() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let mut proxy = start_proxy(&[format!("127.0.0.1:{}", port + 1), "pypi.org".into()]);
    let mut client = UnixStream::connect(&proxy.socket).await.unwrap();

    let request = format!("CONNECT 127.0.0.1:{port} HTTP/1.1\r\n\r\n");
    client.write_all(request.as_bytes()).await.unwrap();
    let response = read_all(&mut client).await;
    let expected_body = format!(
        "kaged: egress to 127.0.0.1:{port} is not in this cage's network allowlist \
         (allow: 127.0.0.1:{}, pypi.org)\n",
        port + 1
    );
    assert!(
        response.starts_with("HTTP/1.1 403 Forbidden\r\n"),
        "{response}"
    );
    assert!(response.contains("\r\nConnection: close\r\n"), "{response}");
    assert!(
        response.ends_with(&format!("\r\n\r\n{expected_body}")),
        "{response}"
    );

    let decision = proxy.next_decision().await;
    assert!(!decision.allowed);
    assert_eq!(
        (
            decision.method.as_str(),
            decision.host.as_str(),
            decision.port
        ),
        ("CONNECT", "127.0.0.1", port)
    );
    assert_eq!(format!("kaged: {}\n", decision.reason), expected_body);
    // The destination never saw a connection.
    let accepted = tokio::time::timeout(Duration::from_millis(300), listener.accept()).await;
    assert!(
        accepted.is_err(),
        "the proxy connected to a refused destination"
    );
}

#[tokio::test]
async fn plain_http_is_forwarded_in_origin_form_without_proxy_headers() {
    let (server, seen) = http_server("hello from upstream").await;
    let mut proxy = start_proxy(&[format!("127.0.0.1:{}", server.port())]);
    let mut client = UnixStream::connect(&proxy.socket).await.unwrap();

    let request = format!(
        "POST http://127.0.0.1:{port}/submit?x=1 HTTP/1.1\r\n\
         Host: 127.0.0.1:{port}\r\n\
         Proxy-Authorization: Basic c2VjcmV0\r\n\
         Proxy-Connection: keep-alive\r\n\
         Connection: keep-alive, X-Hop\r\n\
         X-Hop: drop me\r\n\
         User-Agent: kaged-test\r\n\
         Content-Length: 4\r\n\r\nbody",
        port = server.port()
    );
    client.write_all(request.as_bytes()).await.unwrap();
    let response = read_all(&mut client).await;
    assert!(response.starts_with("HTTP/1.1 200 OK\r\n"), "{response}");
    assert!(
        response.ends_with("\r\n\r\nhello from upstream"),
        "{response}"
    );

    let seen = seen.await.unwrap();
    assert_eq!(
        seen,
        format!(
            "POST /submit?x=1 HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nUser-Agent: kaged-test\r\n\
             Content-Length: 4\r\nConnection: close\r\n\r\nbody",
            server.port()
        )
    );
    let lower = seen.to_ascii_lowercase();
    assert!(
        !lower.contains("proxy-") && !lower.contains("x-hop"),
        "{seen}"
    );

    let decision = proxy.next_decision().await;
    assert!(decision.allowed, "{decision:?}");
    assert_eq!(decision.method, "POST");
}

#[tokio::test]
async fn localhost_entry_reaches_loopback() {
    let (server, seen) = pong_server().await;
    let mut proxy = start_proxy(&[format!("localhost:{}", server.port())]);
    let mut client = UnixStream::connect(&proxy.socket).await.unwrap();

    let request = format!("CONNECT LocalHost.:{} HTTP/1.1\r\n\r\n", server.port());
    client.write_all(request.as_bytes()).await.unwrap();
    assert_eq!(
        read_head(&mut client).await,
        "HTTP/1.1 200 Connection established\r\n\r\n"
    );
    client.write_all(b"ping").await.unwrap();
    assert_eq!(read_all(&mut client).await, "pong:ping");
    assert_eq!(seen.await.unwrap(), b"ping");

    let decision = proxy.next_decision().await;
    assert!(decision.allowed, "{decision:?}");
    assert_eq!(decision.host, "localhost");
    assert!(
        decision
            .reason
            .starts_with(&format!("allowed by entry `localhost:{}`", server.port())),
        "{decision:?}"
    );
}

#[tokio::test]
async fn a_loopback_address_is_not_reachable_through_a_name_entry() {
    // `localhost` is allowed by name on one port; the same port by IP needs its own entry.
    let (server, _seen) = pong_server().await;
    let mut proxy = start_proxy(&[format!("localhost:{}", server.port())]);
    let mut client = UnixStream::connect(&proxy.socket).await.unwrap();
    let request = format!("CONNECT 127.0.0.1:{} HTTP/1.1\r\n\r\n", server.port());
    client.write_all(request.as_bytes()).await.unwrap();
    let response = read_all(&mut client).await;
    assert!(
        response.starts_with("HTTP/1.1 403 Forbidden\r\n"),
        "{response}"
    );
    assert!(!proxy.next_decision().await.allowed);
}

#[tokio::test]
async fn oversized_head_gets_431() {
    let mut proxy = start_proxy(&["127.0.0.1".into()]);
    let mut client = UnixStream::connect(&proxy.socket).await.unwrap();
    let request = format!(
        "GET http://127.0.0.1/ HTTP/1.1\r\nX-Filler: {}\r\n\r\n",
        "a".repeat(MAX_HEAD_BYTES)
    );
    client.write_all(request.as_bytes()).await.unwrap();
    let response = read_all(&mut client).await;
    assert!(
        response.starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\n"),
        "{response}"
    );
    assert!(response.contains("\r\nConnection: close\r\n"), "{response}");
    proxy.no_decision();
}

#[tokio::test]
async fn a_head_just_under_the_limit_is_served() {
    let (server, _seen) = http_server("ok").await;
    let mut proxy = start_proxy(&[format!("127.0.0.1:{}", server.port())]);
    let mut client = UnixStream::connect(&proxy.socket).await.unwrap();
    let start = format!(
        "GET http://127.0.0.1:{}/ HTTP/1.1\r\nX-Filler: ",
        server.port()
    );
    let filler = MAX_HEAD_BYTES - start.len() - "\r\n\r\n".len();
    let request = format!("{start}{}\r\n\r\n", "a".repeat(filler));
    assert_eq!(request.len(), MAX_HEAD_BYTES);
    client.write_all(request.as_bytes()).await.unwrap();
    let response = read_all(&mut client).await;
    assert!(response.starts_with("HTTP/1.1 200 OK\r\n"), "{response}");
    assert!(proxy.next_decision().await.allowed);
}

#[tokio::test]
async fn malformed_requests_get_400() {
    let mut proxy = start_proxy(&["127.0.0.1".into()]);
    for request in [
        "\x16\x03\x01 this is not http\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
        "GET https://127.0.0.1/ HTTP/1.1\r\n\r\n",
        "CONNECT 127.0.0.1 HTTP/1.1\r\n\r\n",
    ] {
        let mut client = UnixStream::connect(&proxy.socket).await.unwrap();
        client.write_all(request.as_bytes()).await.unwrap();
        let response = read_all(&mut client).await;
        assert!(
            response.starts_with("HTTP/1.1 400 Bad Request\r\n"),
            "{request:?}: {response}"
        );
        assert!(response.contains("\r\n\r\nkaged: "), "{response}");
    }
    proxy.no_decision();
}

#[tokio::test]
async fn a_client_without_a_complete_head_is_cut_off() {
    let limits = Limits {
        head_timeout: Duration::from_millis(200),
        ..Limits::default()
    };
    let mut proxy = start_proxy_with(&["127.0.0.1".into()], limits);
    let mut client = UnixStream::connect(&proxy.socket).await.unwrap();
    client
        .write_all(b"CONNECT 127.0.0.1:443 HTTP/1.1\r\n")
        .await
        .unwrap();
    let mut rest = Vec::new();
    let read = tokio::time::timeout(PATIENCE, client.read_to_end(&mut rest)).await;
    assert!(matches!(read, Ok(Ok(0))), "{read:?} {rest:?}");
    proxy.no_decision();
}

#[tokio::test]
async fn an_unreachable_destination_gets_502_with_the_reason() {
    let port = closed_port().await;
    let mut proxy = start_proxy(&[format!("127.0.0.1:{port}")]);
    let mut client = UnixStream::connect(&proxy.socket).await.unwrap();
    let request = format!("CONNECT 127.0.0.1:{port} HTTP/1.1\r\n\r\n");
    client.write_all(request.as_bytes()).await.unwrap();
    let response = read_all(&mut client).await;
    assert!(
        response.starts_with("HTTP/1.1 502 Bad Gateway\r\n"),
        "{response}"
    );
    assert!(
        response.contains(&format!("kaged: cannot connect to 127.0.0.1:{port}: ")),
        "{response}"
    );
    assert!(
        response.to_ascii_lowercase().contains("refused"),
        "{response}"
    );
    // The allowlist allowed it; the decision says so even though the connection failed.
    assert!(proxy.next_decision().await.allowed);
}

#[tokio::test]
async fn shutdown_stops_accepting_and_cuts_open_tunnels() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let mut proxy = start_proxy(&[format!("127.0.0.1:{port}")]);
    let mut client = UnixStream::connect(&proxy.socket).await.unwrap();
    let request = format!("CONNECT 127.0.0.1:{port} HTTP/1.1\r\n\r\n");
    client.write_all(request.as_bytes()).await.unwrap();
    let (_upstream, _) = listener.accept().await.unwrap();
    assert_eq!(
        read_head(&mut client).await,
        "HTTP/1.1 200 Connection established\r\n\r\n"
    );

    proxy.stop.take().unwrap().send(()).unwrap();
    tokio::time::timeout(PATIENCE, &mut proxy.task)
        .await
        .expect("serve did not return after shutdown")
        .unwrap();
    // The tunnel is closed although the upstream side is still open.
    assert_eq!(read_all(&mut client).await, "");
    assert!(UnixStream::connect(&proxy.socket).await.is_err());
}

#[tokio::test]
async fn a_tunnel_idle_both_ways_is_closed_and_one_in_use_is_not() {
    const IDLE: Duration = Duration::from_millis(300);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let limits = Limits {
        idle_timeout: IDLE,
        ..Limits::default()
    };
    let mut proxy = start_proxy_with(&[format!("127.0.0.1:{port}")], limits);
    // Upstream echoes each byte and otherwise stays open and silent.
    tokio::spawn(async move {
        let (mut upstream, _) = listener.accept().await.unwrap();
        let mut byte = [0u8; 1];
        while upstream.read_exact(&mut byte).await.is_ok() {
            upstream.write_all(&byte).await.unwrap();
        }
    });
    let mut client = UnixStream::connect(&proxy.socket).await.unwrap();
    let request = format!("CONNECT 127.0.0.1:{port} HTTP/1.1\r\n\r\n");
    client.write_all(request.as_bytes()).await.unwrap();
    assert_eq!(
        read_head(&mut client).await,
        "HTTP/1.1 200 Connection established\r\n\r\n"
    );
    assert!(proxy.next_decision().await.allowed);

    // Bytes moving keep it open well past the idle limit.
    let busy = std::time::Instant::now();
    let mut quiet = busy;
    while busy.elapsed() < IDLE * 3 {
        tokio::time::sleep(IDLE / 4).await;
        client.write_all(b"x").await.unwrap();
        let echoed = tokio::time::timeout(PATIENCE, client.read_u8()).await;
        assert!(matches!(echoed, Ok(Ok(b'x'))), "{echoed:?}");
        quiet = std::time::Instant::now();
    }
    // Silence both ways: closed after about the limit, though upstream is still open.
    assert_eq!(read_all(&mut client).await, "");
    assert!(
        quiet.elapsed() >= IDLE - Duration::from_millis(50),
        "{:?}",
        quiet.elapsed()
    );
}
