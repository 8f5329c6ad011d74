//! A small openai-completions provider for the bench: plain HTTP/1.1 on loopback (keep-alive,
//! chunked), each answer `tokens` deltas `pace` apart, each delta its own chunk written with
//! TCP_NODELAY. A token's text is a unique marker (`t<answer>_<n> `); the instant just before
//! its write is kept, so a client that sees the marker knows how long it took.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What each answer streams.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Shape {
    pub(crate) tokens: usize,
    pub(crate) pace: Duration,
}

#[derive(Default)]
pub(crate) struct Shared {
    shape: Mutex<Option<Shape>>,
    answers: AtomicU64,
    /// Marker → when it left; only while `stamping`.
    sent: Mutex<HashMap<String, Instant>>,
    stamping: std::sync::atomic::AtomicBool,
    pub(crate) tokens_sent: AtomicU64,
}

#[derive(Clone)]
pub(crate) struct StreamProvider {
    pub(crate) port: u16,
    pub(crate) shared: Arc<Shared>,
}

impl StreamProvider {
    /// Listen on 127.0.0.1 on `runtime` (its own, so the bench's client work never delays a write).
    pub(crate) fn start(runtime: &tokio::runtime::Runtime) -> StreamProvider {
        let listener = runtime.block_on(TcpListener::bind("127.0.0.1:0")).unwrap();
        let port = listener.local_addr().unwrap().port();
        let shared = Arc::new(Shared::default());
        let s = Arc::clone(&shared);
        runtime.spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                let _ = conn.set_nodelay(true);
                tokio::spawn(serve(conn, Arc::clone(&s)));
            }
        });
        StreamProvider { port, shared }
    }

    pub(crate) fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub(crate) fn set_shape(&self, shape: Shape, stamping: bool) {
        *self.shared.shape.lock().unwrap() = Some(shape);
        self.shared.stamping.store(stamping, Ordering::SeqCst);
    }

    /// When the token with `marker` left, if it was stamped.
    pub(crate) fn sent_at(&self, marker: &str) -> Option<Instant> {
        self.shared.sent.lock().unwrap().get(marker).copied()
    }
}

/// Requests on one connection, one after the other.
async fn serve(mut conn: TcpStream, shared: Arc<Shared>) {
    let mut buf = Vec::new();
    loop {
        // The head.
        let head_end = loop {
            if let Some(i) = find(&buf, b"\r\n\r\n") {
                break i + 4;
            }
            let mut chunk = [0u8; 16 * 1024];
            match conn.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        while buf.len() < head_end + length {
            let mut chunk = [0u8; 64 * 1024];
            match conn.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        buf.drain(..head_end + length);
        if answer(&mut conn, &shared).await.is_err() {
            return;
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

async fn chunk(conn: &mut TcpStream, data: &str) -> std::io::Result<()> {
    conn.write_all(format!("{:x}\r\n{data}\r\n", data.len()).as_bytes())
        .await
}

fn delta(content: &serde_json::Value, finish: serde_json::Value) -> String {
    let v = serde_json::json!({"id": "b", "object": "chat.completion.chunk", "created": 1, "model": "bench",
        "choices": [{"index": 0, "delta": content, "finish_reason": finish}]});
    format!("data: {v}\n\n")
}

async fn answer(conn: &mut TcpStream, shared: &Shared) -> std::io::Result<()> {
    let shape = shared.shape.lock().unwrap().unwrap_or(Shape {
        tokens: 3,
        pace: Duration::ZERO,
    });
    let n = shared.answers.fetch_add(1, Ordering::SeqCst);
    let stamping = shared.stamping.load(Ordering::SeqCst);
    conn.write_all(
        b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n",
    )
    .await?;
    chunk(
        conn,
        &delta(
            &serde_json::json!({"role": "assistant", "content": ""}),
            serde_json::Value::Null,
        ),
    )
    .await?;
    let mut next = Instant::now();
    for i in 0..shape.tokens {
        if !shape.pace.is_zero() {
            next += shape.pace;
            tokio::time::sleep_until(next.into()).await;
        }
        let marker = format!("t{n}_{i}");
        let data = delta(
            &serde_json::json!({ "content": format!("{marker} ") }),
            serde_json::Value::Null,
        );
        if stamping {
            shared.sent.lock().unwrap().insert(marker, Instant::now());
        }
        chunk(conn, &data).await?;
        shared.tokens_sent.fetch_add(1, Ordering::Relaxed);
    }
    let end = delta(&serde_json::json!({}), serde_json::json!("stop"));
    let usage = serde_json::json!({"id": "b", "object": "chat.completion.chunk", "created": 1, "model": "bench",
        "choices": [], "usage": {"prompt_tokens": 10, "completion_tokens": shape.tokens, "total_tokens": 10 + shape.tokens}});
    chunk(conn, &format!("{end}data: {usage}\n\ndata: [DONE]\n\n")).await?;
    conn.write_all(b"0\r\n\r\n").await
}
