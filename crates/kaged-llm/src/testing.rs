//! A loopback provider test server (feature `testing`): it replays recorded SSE replies
//! (fixtures under `crates/kaged-llm/tests/fixtures/`) in the order they were queued and records
//! every request it got (method, path, headers, body), for this crate's tests and the agent
//! loop's.
//!
//! A fixture is a status line, headers, a blank line and the body, as on the wire, plus
//! directive lines in the body that are not sent:
//!
//! ```text
//! status 200
//! content-type: text/event-stream
//!
//! event: message_start
//! data: {...}
//!
//! #!pause 20      wait 20 ms before the rest (each part is its own write)
//! #!chunk         send what came before as one write, the rest as another
//! #!stall         send nothing more and keep the connection open (an hour)
//! #!cut           break the connection (no proper end of the chunked body)
//! ```

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::Response;
use serde_json::Value;

/// Where this crate's fixtures live.
pub fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// One piece of a reply's body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Part {
    Bytes(Vec<u8>),
    Pause(Duration),
    /// Keep the connection open and send nothing more.
    Stall,
    /// Break the connection.
    Cut,
}

/// A reply the server gives to one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub parts: Vec<Part>,
}

impl Reply {
    /// Parse a fixture's text (see the module doc).
    pub fn parse(text: &str) -> Result<Reply, String> {
        let (head, body) = text
            .split_once("\n\n")
            .ok_or("a fixture needs a head, a blank line and a body")?;
        let mut lines = head.lines();
        let status = lines
            .next()
            .and_then(|l| l.strip_prefix("status "))
            .and_then(|s| s.trim().parse::<u16>().ok())
            .ok_or("a fixture starts with `status NNN`")?;
        let mut headers = Vec::new();
        for line in lines {
            let (name, value) = line
                .split_once(':')
                .ok_or_else(|| format!("not a header: {line:?}"))?;
            headers.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
        }
        let mut parts = Vec::new();
        let mut bytes = Vec::new();
        let flush = |bytes: &mut Vec<u8>, parts: &mut Vec<Part>| {
            if !bytes.is_empty() {
                parts.push(Part::Bytes(std::mem::take(bytes)));
            }
        };
        for line in body.split_inclusive('\n') {
            let Some(directive) = line.strip_prefix("#!") else {
                bytes.extend_from_slice(line.as_bytes());
                continue;
            };
            flush(&mut bytes, &mut parts);
            let directive = directive.trim();
            match directive.split_once(' ').unwrap_or((directive, "")) {
                ("chunk", _) => {}
                ("stall", _) => parts.push(Part::Stall),
                ("cut", _) => parts.push(Part::Cut),
                ("pause", ms) => parts.push(Part::Pause(Duration::from_millis(
                    ms.trim()
                        .parse()
                        .map_err(|_| format!("#!pause needs milliseconds: {line:?}"))?,
                ))),
                _ => return Err(format!("unknown directive {line:?}")),
            }
        }
        flush(&mut bytes, &mut parts);
        Ok(Reply {
            status,
            headers,
            parts,
        })
    }

    /// The fixture `name` from [`fixtures_dir`].
    pub fn fixture(name: &str) -> Result<Reply, String> {
        let path = fixtures_dir().join(name);
        let text = std::fs::read_to_string(&path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        Reply::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// The same reply with every byte part cut into writes of at most `size` bytes (each its
    /// own chunk on the wire, a short pause between them so they arrive apart).
    pub fn split_every(mut self, size: usize) -> Reply {
        let size = size.max(1);
        self.parts = self
            .parts
            .into_iter()
            .flat_map(|part| match part {
                Part::Bytes(b) => b
                    .chunks(size)
                    .flat_map(|c| {
                        [
                            Part::Bytes(c.to_vec()),
                            Part::Pause(Duration::from_millis(1)),
                        ]
                    })
                    .collect(),
                other => vec![other],
            })
            .collect();
        self
    }

    /// All the body's bytes, directives dropped (what a provider that never stalls would send).
    pub fn body_bytes(&self) -> Vec<u8> {
        self.parts
            .iter()
            .filter_map(|p| match p {
                Part::Bytes(b) => Some(b.as_slice()),
                _ => None,
            })
            .flatten()
            .copied()
            .collect()
    }
}

/// One request the server got.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordedRequest {
    pub method: String,
    pub path: String,
    /// Names in lower case, in arrival order.
    pub headers: Vec<(String, String)>,
    pub body_text: String,
    /// The body as JSON (`Null` when it is not JSON).
    pub body: Value,
}

impl RecordedRequest {
    /// The first value of header `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Debug, Default)]
struct Shared {
    replies: Mutex<VecDeque<Reply>>,
    requests: Mutex<Vec<RecordedRequest>>,
}

/// The running server; stops when dropped.
#[derive(Debug)]
pub struct ProviderServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl ProviderServer {
    /// Listen on 127.0.0.1 (a free port).
    pub async fn start() -> io::Result<ProviderServer> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared::default());
        let app = axum::Router::new()
            .fallback(handle)
            .with_state(shared.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(ProviderServer { addr, shared, task })
    }

    /// `http://127.0.0.1:PORT`, the base URL of an endpoint.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Queue a reply for the next request (a request with none queued gets a 500).
    pub fn push(&self, reply: Reply) {
        lock(&self.shared.replies).push_back(reply);
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        lock(&self.shared.requests).clone()
    }
}

impl Drop for ProviderServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

async fn handle(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let body_text = String::from_utf8_lossy(&body).into_owned();
    lock(&shared.requests).push(RecordedRequest {
        method: method.to_string(),
        path: uri.path().to_string(),
        headers: headers
            .iter()
            .map(|(n, v)| {
                (
                    n.as_str().to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
        body: serde_json::from_str(&body_text).unwrap_or(Value::Null),
        body_text,
    });
    let reply = lock(&shared.replies).pop_front();
    let Some(reply) = reply else {
        let mut response = Response::new(Body::from(
            r#"{"error":{"type":"test_server","message":"no reply queued"}}"#,
        ));
        *response.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
        return response;
    };
    let stream = futures_util::stream::unfold(reply.parts.into_iter(), |mut parts| async move {
        loop {
            match parts.next()? {
                Part::Bytes(b) => return Some((Ok(Bytes::from(b)), parts)),
                Part::Pause(d) => tokio::time::sleep(d).await,
                Part::Stall => tokio::time::sleep(Duration::from_secs(3600)).await,
                Part::Cut => {
                    // Let what came before reach the client first: hyper flushes lazily.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    return Some((Err(io::Error::other("cut by the fixture")), parts));
                }
            }
        }
    });
    let mut response = Response::new(Body::from_stream(stream));
    *response.status_mut() = StatusCode::from_u16(reply.status).unwrap_or(StatusCode::OK);
    for (name, value) in &reply.headers {
        if let (Ok(n), Ok(v)) = (
            axum::http::HeaderName::from_bytes(name.as_bytes()),
            axum::http::HeaderValue::from_str(value),
        ) {
            response.headers_mut().append(n, v);
        }
    }
    response
}
