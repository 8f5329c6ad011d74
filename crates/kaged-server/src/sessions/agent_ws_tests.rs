//! The agent event WebSocket through the real router and accept loop on a loopback port: a
//! real client (tokio-tungstenite), the real middleware, a real SQLite store.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use kaged_session::agent::{AgentEvent, Sequenced};
use kaged_store::{SessionRecord, StateChange};
use tokio_tungstenite::tungstenite::{Error as WsError, Message, client::IntoClientRequest};

use crate::listener::{BoundListener, ListenerInfo, Socket};
use crate::state::ServerState;
use crate::test_state::{TestState, nonce, test_state};

const SESSION: &str = "0123456789abcdef0123456789abcdef";

struct Daemon {
    state: Arc<ServerState>,
    addr: std::net::SocketAddr,
    /// Keeps the temporary directory and the accept loop alive.
    _test: TestState,
}

/// The whole HTTP stack (`router` + `serve_all`) on a loopback port, with one agent session.
async fn daemon() -> Daemon {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let test = test_state(addr);
    let (state, store) = (test.state.clone(), test.store.clone());
    let record = SessionRecord {
        id: SESSION.into(),
        project: "demo".into(),
        kind: "agent".into(),
        name: "primary".into(),
        state: "running".into(),
        created_by: "user:ann".into(),
        created_at_ms: 1,
        ..Default::default()
    };
    let first = StateChange {
        session_id: SESSION.into(),
        state: "running".into(),
        at_ms: 1,
        actor: "user:ann".into(),
        detail: serde_json::json!({}),
        exit_code: None,
        reason: None,
        ended: false,
    };
    store.create_session(record, first).await.unwrap();
    let bound = BoundListener {
        socket: Socket::Tcp(listener),
        info: ListenerInfo {
            label: addr.to_string(),
            unix: false,
            trusted_proxy: false,
        },
    };
    let app = crate::router(state.clone());
    tokio::spawn(crate::serve_all(
        vec![bound],
        app,
        test.shutdown.clone(),
        Default::default(),
    ));
    Daemon {
        state,
        addr,
        _test: test,
    }
}

type Client =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

impl Daemon {
    async fn connect(
        &self,
        session: &str,
        query: &str,
        with_nonce: bool,
    ) -> Result<Client, WsError> {
        let url = format!("ws://{}/api/v1/sessions/{session}/events{query}", self.addr);
        let mut request = url.into_client_request().unwrap();
        if with_nonce {
            request
                .headers_mut()
                .insert(kaged_auth::NONCE_HEADER, nonce().expose().parse().unwrap());
        }
        tokio_tungstenite::connect_async(request)
            .await
            .map(|(ws, _)| ws)
    }

    async fn append(&self, events: Vec<AgentEvent>) -> u64 {
        let records = self
            .state
            .runs
            .agent_log()
            .append(SESSION, None, events)
            .await
            .unwrap();
        records.last().map_or(0, |r| r.seq)
    }
}

fn delta(n: u64) -> AgentEvent {
    AgentEvent::TextDelta {
        text: format!("t{n}"),
    }
}

/// The next text frame as a record (pings are skipped); `None` at a close.
async fn next_record(ws: &mut Client) -> Option<Sequenced> {
    loop {
        let message = tokio::time::timeout(Duration::from_secs(20), ws.next())
            .await
            .expect("a frame in time")?
            .ok()?;
        match message {
            Message::Text(t) => return Some(serde_json::from_str(&t).unwrap()),
            Message::Close(_) => return None,
            _ => {}
        }
    }
}

fn refused_status(result: Result<Client, WsError>) -> (u16, serde_json::Value) {
    match result {
        Err(WsError::Http(response)) => {
            let body = response.body().clone().unwrap_or_default();
            (
                response.status().as_u16(),
                serde_json::from_slice(&body).unwrap_or_default(),
            )
        }
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("the upgrade was accepted"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_route_is_authenticated_and_refuses_unknown_sessions_and_bad_cursors() {
    let d = daemon().await;
    // Behind the authentication middleware: no credential, no upgrade.
    let (status, body) = refused_status(d.connect(SESSION, "", false).await);
    assert_eq!(status, 401, "{body}");
    // Unknown session: 404 in the JSON error shape.
    let unknown = "ffffffffffffffffffffffffffffffff";
    let (status, body) = refused_status(d.connect(unknown, "", true).await);
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("not_found"))
    );
    let (status, _) = refused_status(d.connect("../etc", "", true).await);
    assert!(status == 404 || status == 400, "{status}");
    let (status, body) = refused_status(d.connect(SESSION, "?after=abc", true).await);
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("bad_request"))
    );
    // Past the end of the log: closed with 1008 and the reason.
    let mut ws = d.connect(SESSION, "?after=5", true).await.unwrap();
    let close = tokio::time::timeout(Duration::from_secs(10), ws.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let Message::Close(Some(frame)) = close else {
        panic!("{close:?}")
    };
    assert_eq!(u16::from(frame.code), 1008);
    assert!(
        frame.reason.contains("past the last event"),
        "{}",
        frame.reason
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_reconnecting_with_after_misses_nothing_and_sees_nothing_twice() {
    let d = daemon().await;
    let first = d.append((1..=10).map(delta).collect()).await;
    assert_eq!(first, 10);
    let mut ws = d.connect(SESSION, "", true).await.unwrap();
    let mut seen = Vec::new();
    for _ in 0..4 {
        seen.push(next_record(&mut ws).await.unwrap());
    }
    assert_eq!(seen[0].event, delta(1));
    // The client goes away mid-stream while a writer keeps appending.
    drop(ws);
    let writer = {
        let log = d.state.runs.agent_log().clone();
        tokio::spawn(async move {
            for b in 0..40u64 {
                let events = (0..3).map(|i| delta(100 + b * 3 + i)).collect();
                log.append(SESSION, None, events).await.unwrap();
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
    };
    let resume = seen.last().unwrap().seq;
    let mut ws = d
        .connect(SESSION, &format!("?after={resume}"), true)
        .await
        .unwrap();
    let last_expected = 10 + 40 * 3;
    while seen.last().unwrap().seq < last_expected {
        seen.push(next_record(&mut ws).await.expect("the stream goes on"));
    }
    writer.await.unwrap();
    let seqs: Vec<u64> = seen.iter().map(|r| r.seq).collect();
    assert_eq!(seqs, (1..=last_expected).collect::<Vec<_>>());
    // The stored records are what the client received.
    let stored = d.state.runs.agent_log().read_all(SESSION).await.unwrap();
    assert_eq!(stored, seen);
    // Live: a new append reaches the connected client.
    d.append(vec![AgentEvent::TurnEnded {
        reason: kaged_session::agent::EndReason::EndTurn,
    }])
    .await;
    let next = next_record(&mut ws).await.unwrap();
    assert_eq!(next.seq, last_expected + 1);
    // A client that stops reading never holds up the writer.
    let _stalled = d.connect(SESSION, "", true).await.unwrap();
    let started = std::time::Instant::now();
    for b in 0..50u64 {
        let text = "y".repeat(8 * 1024);
        d.append(vec![AgentEvent::TextDelta { text }, delta(b)])
            .await;
    }
    assert!(started.elapsed() < Duration::from_secs(20));
}
