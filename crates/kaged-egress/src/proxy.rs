//! The egress proxy: an HTTP/1.1 forward proxy on a Unix socket that connects only where the
//! cage's allowlist says, and reports every decision.
//!
//! Two request shapes are understood:
//! - `CONNECT host:port`: answered `200 Connection established`, then bytes are spliced both
//!   ways (HTTPS and anything else tunnelled).
//! - Plain HTTP with an absolute-form target (`GET http://host[:port]/path`): sent upstream in
//!   origin form with hop-by-hop and `Proxy-*` headers removed and `Connection: close`, then the
//!   response is spliced back. One request per client connection: whatever the client sends
//!   after the first head goes, unparsed, to the same vetted destination, so a second request
//!   on the connection can never reach anywhere else.
//!
//! Nothing of a request is logged or reported except its method and target.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpStream, UnixListener};
use tokio::task::JoinSet;
use tokio::time::{Instant, timeout, timeout_at};

use crate::allow::{Allowlist, Decision, EntryKind, Host, check_resolved, parse_authority};
use crate::reports::DecisionSender;

/// Largest request head (request line and headers) the proxy reads.
pub const MAX_HEAD_BYTES: usize = 16 * 1024;
/// More headers than this is treated like an oversized head.
const MAX_HEADERS: usize = 100;
/// Open connections one cage may hold at once: each costs the daemon two descriptors, and a
/// cage must not be able to starve the daemon (and every other cage) of them.
pub const MAX_CONNECTIONS: usize = 128;
/// Pause after a failed accept (e.g. out of file descriptors) so the loop does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Time limits of one client connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The whole request head must arrive within this; otherwise the connection is closed.
    pub head_timeout: Duration,
    /// Name resolution and the upstream TCP connect together must finish within this.
    pub connect_timeout: Duration,
    /// A tunnel (or forwarded request) with no bytes either way for this long is closed, so
    /// forgotten connections do not hold the cage's connection slots and the daemon's
    /// descriptors for ever.
    pub idle_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            head_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(5 * 60),
        }
    }
}

/// One egress decision, for the audit log. Carries the target only, never other headers or
/// bodies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EgressDecision {
    /// The request method: `CONNECT`, `GET`, `POST`, ...
    pub method: String,
    /// The destination host: a lower-case name or an IP address (IPv6 without brackets).
    pub host: String,
    pub port: u16,
    pub allowed: bool,
    /// Which entry allowed it (and the addresses it resolved to), or why it was refused.
    pub reason: String,
}

/// Serves the proxy on `listener` until `shutdown` completes, with the default [`Limits`].
/// Every decision goes to `decisions`, which never makes the proxy wait. On shutdown the listener
/// stops accepting and open connections are cut: the cage they served is going away.
pub async fn serve(
    listener: UnixListener,
    allow: Arc<Allowlist>,
    decisions: DecisionSender,
    shutdown: impl Future<Output = ()>,
) {
    serve_with(listener, allow, decisions, Limits::default(), shutdown).await;
}

/// [`serve`] with explicit time limits.
pub async fn serve_with(
    listener: UnixListener,
    allow: Arc<Allowlist>,
    decisions: DecisionSender,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) {
    let context = Arc::new(Context {
        allow,
        decisions,
        limits,
    });
    let mut shutdown = pin!(shutdown);
    let mut connections = JoinSet::new();
    loop {
        // Reap finished connections so the set does not grow over the cage's lifetime.
        while connections.try_join_next().is_some() {}
        tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) if connections.len() >= MAX_CONNECTIONS => {
                    tracing::warn!(limit = MAX_CONNECTIONS, "egress proxy: connection limit reached; refusing");
                    drop(stream);
                }
                Ok((stream, _)) => {
                    let context = Arc::clone(&context);
                    connections.spawn(async move { handle(stream, &context).await });
                }
                Err(error) => {
                    tracing::warn!(%error, "egress proxy: accept failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
            },
        }
    }
    connections.shutdown().await;
}

struct Context {
    allow: Arc<Allowlist>,
    decisions: DecisionSender,
    limits: Limits,
}

impl Context {
    fn report(&self, request: &ProxyRequest, allowed: bool, reason: String) {
        let host = match &request.host {
            Host::Name(name) => name.clone(),
            Host::Ip(ip) => ip.to_string(),
        };
        tracing::debug!(
            method = %request.method,
            destination = %request.target(),
            allowed,
            "egress decision"
        );
        self.decisions.report(EgressDecision {
            method: request.method.clone(),
            host,
            port: request.port,
            allowed,
            reason,
        });
    }
}

/// A request head the proxy understood.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ProxyRequest {
    method: String,
    host: Host,
    port: u16,
    action: Action,
}

impl ProxyRequest {
    fn target(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Action {
    /// CONNECT: answer 200, then splice.
    Tunnel,
    /// Plain HTTP: send this head (origin form, cleaned) upstream, then splice.
    Forward { head: Vec<u8> },
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum BadRequest {
    /// Over [`MAX_HEAD_BYTES`] or [`MAX_HEADERS`]: 431.
    TooLarge,
    /// Not a request this proxy serves: 400 with this explanation.
    Malformed(String),
}

#[derive(Debug, Clone, Copy)]
enum Status {
    BadRequest,
    Forbidden,
    HeadTooLarge,
    BadGateway,
}

impl Status {
    fn line(self) -> &'static str {
        match self {
            Status::BadRequest => "400 Bad Request",
            Status::Forbidden => "403 Forbidden",
            Status::HeadTooLarge => "431 Request Header Fields Too Large",
            Status::BadGateway => "502 Bad Gateway",
        }
    }
}

async fn handle<C>(mut client: C, context: &Context)
where
    C: AsyncRead + AsyncWrite + Unpin,
{
    let (request, buffered, head_len) =
        match timeout(context.limits.head_timeout, read_head(&mut client)).await {
            // Slow or silent clients and clients that hang up get no answer.
            Err(_) | Ok(Err(HeadError::Closed)) => return,
            Ok(Err(HeadError::Bad(BadRequest::TooLarge))) => {
                let body = format!("kaged: request head larger than {MAX_HEAD_BYTES} bytes\n");
                return reply(&mut client, Status::HeadTooLarge, &body).await;
            }
            Ok(Err(HeadError::Bad(BadRequest::Malformed(why)))) => {
                return reply(&mut client, Status::BadRequest, &format!("kaged: {why}\n")).await;
            }
            Ok(Ok(read)) => read,
        };
    // Bytes that arrived behind the head: a request body or the start of a TLS handshake.
    let early = &buffered[head_len..];

    let (entry, kind) = match context.allow.allows(&request.host, request.port) {
        Decision::Refused { reason } => {
            context.report(&request, false, reason.clone());
            return reply(
                &mut client,
                Status::Forbidden,
                &format!("kaged: {reason}\n"),
            )
            .await;
        }
        Decision::Allowed { entry, kind } => (entry, kind),
    };
    let deadline = Instant::now() + context.limits.connect_timeout;
    let addrs = match vetted_addresses(&request, kind, deadline).await {
        Ok(addrs) => addrs,
        Err(refusal) => {
            context.report(&request, false, refusal.reason);
            return reply(&mut client, refusal.status, &refusal.body).await;
        }
    };
    let shown: Vec<String> = addrs.iter().map(|addr| addr.ip().to_string()).collect();
    context.report(
        &request,
        true,
        format!("allowed by entry `{entry}` ({})", shown.join(", ")),
    );

    let mut upstream = match timeout_at(deadline, TcpStream::connect(&addrs[..])).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(error)) => {
            let body = format!("kaged: cannot connect to {}: {error}\n", request.target());
            return reply(&mut client, Status::BadGateway, &body).await;
        }
        Err(_elapsed) => {
            let body = format!(
                "kaged: cannot connect to {}: timed out after {} s\n",
                request.target(),
                context.limits.connect_timeout.as_secs_f32()
            );
            return reply(&mut client, Status::BadGateway, &body).await;
        }
    };
    let _ = upstream.set_nodelay(true);

    let started = match &request.action {
        Action::Tunnel => {
            match client
                .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
                .await
            {
                Ok(()) => upstream.write_all(early).await,
                Err(error) => Err(error),
            }
        }
        Action::Forward { head } => {
            let mut first = head.clone();
            first.extend_from_slice(early);
            upstream.write_all(&first).await
        }
    };
    if let Err(error) = started {
        tracing::debug!(destination = %request.target(), %error, "egress: connection ended early");
        return;
    }
    match splice(&mut client, &mut upstream, context.limits.idle_timeout).await {
        Ok(()) => {}
        Err(error) if error.kind() == std::io::ErrorKind::TimedOut => {
            tracing::debug!(destination = %request.target(), "egress: idle connection closed");
        }
        Err(error) => {
            tracing::debug!(destination = %request.target(), %error, "egress: connection ended with an error");
        }
    }
}

/// Copies both ways until both sides are done, or until no byte has moved either way for
/// `idle` (then `TimedOut`).
async fn splice<A, B>(a: &mut A, b: &mut B, idle: Duration) -> std::io::Result<()>
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let started = Instant::now();
    // Milliseconds since `started` of the last byte read on either side.
    let last = AtomicU64::new(0);
    let mut a = Active {
        inner: a,
        started,
        last: &last,
    };
    let mut b = Active {
        inner: b,
        started,
        last: &last,
    };
    let copy = tokio::io::copy_bidirectional(&mut a, &mut b);
    let watch = async {
        loop {
            let since = Duration::from_millis(last.load(Ordering::Relaxed));
            let deadline = started + since + idle;
            if Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep_until(deadline).await;
        }
    };
    tokio::select! {
        copied = copy => copied.map(drop),
        () = watch => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("no bytes either way for {} s", idle.as_secs_f32()),
        )),
    }
}

/// A stream that notes when it last delivered bytes.
struct Active<'a, S> {
    inner: &'a mut S,
    started: Instant,
    last: &'a AtomicU64,
}

impl<S: AsyncRead + Unpin> AsyncRead for Active<'_, S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut *self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            let ms = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
            self.last.store(ms, Ordering::Relaxed);
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Active<'_, S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut *self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut *self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut *self.inner).poll_shutdown(cx)
    }
}

/// Why a vetted destination still cannot be reached, as the client and the audit log see it.
struct Refusal {
    status: Status,
    body: String,
    reason: String,
}

/// The addresses the proxy may connect to: the literal itself, or what the name resolved to if
/// every address passes [`check_resolved`]. Resolved once, so what was vetted is what is used.
async fn vetted_addresses(
    request: &ProxyRequest,
    kind: EntryKind,
    deadline: Instant,
) -> Result<Vec<SocketAddr>, Refusal> {
    let target = request.target();
    let ips: Vec<IpAddr> = match &request.host {
        Host::Ip(ip) => vec![*ip],
        Host::Name(name) => {
            let lookup = tokio::net::lookup_host((name.as_str(), request.port));
            let resolved = match timeout_at(deadline, lookup).await {
                Ok(Ok(addrs)) => Ok(addrs.map(|addr| addr.ip()).collect()),
                Ok(Err(error)) => Err(error.to_string()),
                Err(_elapsed) => Err("timed out".to_owned()),
            };
            match resolved {
                Ok(ips) => ips,
                Err(why) => {
                    return Err(Refusal {
                        status: Status::BadGateway,
                        body: format!("kaged: cannot resolve {name}: {why}\n"),
                        reason: format!(
                            "egress to {target} not made: cannot resolve {name}: {why}"
                        ),
                    });
                }
            }
        }
    };
    match check_resolved(kind, &ips) {
        Ok(()) => Ok(ips
            .into_iter()
            .map(|ip| SocketAddr::new(ip, request.port))
            .collect()),
        Err(why) => {
            let reason = format!("egress to {target} refused: {} {why}", request.host);
            Err(Refusal {
                status: Status::Forbidden,
                body: format!("kaged: {reason}\n"),
                reason,
            })
        }
    }
}

enum HeadError {
    Closed,
    Bad(BadRequest),
}

impl From<std::io::Error> for HeadError {
    fn from(_: std::io::Error) -> Self {
        HeadError::Closed
    }
}

/// Reads until a complete request head has arrived. Returns the request, everything read, and
/// the length of the head within it.
async fn read_head<C: AsyncRead + Unpin>(
    client: &mut C,
) -> Result<(ProxyRequest, Vec<u8>, usize), HeadError> {
    let mut buffered = Vec::with_capacity(4096);
    let mut chunk = [0u8; 4096];
    loop {
        let read = client.read(&mut chunk).await?;
        if read == 0 {
            return Err(HeadError::Closed);
        }
        buffered.extend_from_slice(&chunk[..read]);
        if let Some((len, request)) = parse_head(&buffered).map_err(HeadError::Bad)? {
            return Ok((request, buffered, len));
        }
    }
}

/// Parses the request head at the start of `buffered`: `Ok(None)` while it is incomplete.
fn parse_head(buffered: &[u8]) -> Result<Option<(usize, ProxyRequest)>, BadRequest> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut headers);
    let head_len = match parsed.parse(buffered) {
        Ok(httparse::Status::Complete(len)) if len <= MAX_HEAD_BYTES => len,
        Ok(httparse::Status::Complete(_)) | Err(httparse::Error::TooManyHeaders) => {
            return Err(BadRequest::TooLarge);
        }
        Ok(httparse::Status::Partial) if buffered.len() > MAX_HEAD_BYTES => {
            return Err(BadRequest::TooLarge);
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(error) => {
            return Err(BadRequest::Malformed(format!(
                "malformed request ({error})"
            )));
        }
    };
    let (Some(method), Some(target), Some(minor)) = (parsed.method, parsed.path, parsed.version)
    else {
        return Err(BadRequest::Malformed("malformed request".to_owned()));
    };
    let request = if method == "CONNECT" {
        let (host, port) = parse_authority(target, None).ok_or_else(|| {
            BadRequest::Malformed(format!("CONNECT needs host:port, not {target:?}"))
        })?;
        ProxyRequest {
            method: method.to_owned(),
            host,
            port,
            action: Action::Tunnel,
        }
    } else {
        forward_request(method, target, minor, parsed.headers)?
    };
    Ok(Some((head_len, request)))
}

/// A plain-HTTP proxy request: the absolute-form target split into destination and origin-form
/// path, and the head rewritten for the origin server.
fn forward_request(
    method: &str,
    target: &str,
    minor: u8,
    headers: &[httparse::Header<'_>],
) -> Result<ProxyRequest, BadRequest> {
    let malformed = |why: &str| BadRequest::Malformed(why.to_owned());
    let scheme_end = target.find("://").unwrap_or(0);
    let (scheme, rest) = target.split_at(scheme_end);
    if !scheme.eq_ignore_ascii_case("http") {
        return Err(if scheme.eq_ignore_ascii_case("https") {
            malformed("https:// targets go through CONNECT")
        } else if target.starts_with('/') {
            malformed("this is a proxy: the request target must be an absolute http:// URL")
        } else {
            malformed("the request target must be an absolute http:// URL")
        });
    }
    let rest = &rest["://".len()..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    if authority.contains('@') {
        return Err(malformed("user information in the URL is not accepted"));
    }
    let (host, port) = parse_authority(authority, Some(80))
        .ok_or_else(|| BadRequest::Malformed(format!("bad host in {target:?}")))?;
    let path = path.split('#').next().unwrap_or_default();
    let path = match path.chars().next() {
        Some('/') => path.to_owned(),
        _ => format!("/{path}"),
    };

    // Headers the client meant for this hop (RFC 9110 §7.6.1), including any it lists in
    // Connection. Host is rewritten from the target, as RFC 9112 §3.2.2 asks of a proxy.
    let mut named_by_connection = Vec::new();
    for header in headers
        .iter()
        .filter(|header| header.name.eq_ignore_ascii_case("connection"))
    {
        for token in String::from_utf8_lossy(header.value).split(',') {
            named_by_connection.push(token.trim().to_ascii_lowercase());
        }
    }
    let is_hop_by_hop = |name: &str| {
        let name = name.to_ascii_lowercase();
        matches!(
            name.as_str(),
            "host" | "connection" | "keep-alive" | "te" | "upgrade"
        ) || name.starts_with("proxy-")
            || named_by_connection.contains(&name)
    };
    let host_header = if port == 80 {
        host.to_string()
    } else {
        format!("{host}:{port}")
    };
    let mut head =
        format!("{method} {path} HTTP/1.{minor}\r\nHost: {host_header}\r\n").into_bytes();
    for header in headers.iter().filter(|header| !is_hop_by_hop(header.name)) {
        head.extend_from_slice(header.name.as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(header.value);
        head.extend_from_slice(b"\r\n");
    }
    head.extend_from_slice(b"Connection: close\r\n\r\n");
    Ok(ProxyRequest {
        method: method.to_owned(),
        host,
        port,
        action: Action::Forward { head },
    })
}

/// Answers with a short text body and closes. Write errors are ignored: the client is gone.
async fn reply<C: AsyncWrite + Unpin>(client: &mut C, status: Status, body: &str) {
    let response = format!(
        "HTTP/1.1 {}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        status.line(),
        body.len()
    );
    let _ = client.write_all(response.as_bytes()).await;
    let _ = client.shutdown().await;
}

#[cfg(test)]
mod fuzz_tests;

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(head: &str) -> Result<Option<(usize, ProxyRequest)>, BadRequest> {
        parse_head(head.as_bytes())
    }

    fn forwarded(head: &str) -> (ProxyRequest, String) {
        let (_, request) = parse(head).unwrap().unwrap();
        let Action::Forward { head } = &request.action else {
            panic!("not forwarded: {request:?}");
        };
        let head = String::from_utf8(head.clone()).unwrap();
        (request, head)
    }

    #[test]
    fn connect_target_is_an_authority() {
        let head = "CONNECT API.github.com:443 HTTP/1.1\r\nHost: api.github.com:443\r\n\r\nTLS";
        let (len, request) = parse(head).unwrap().unwrap();
        assert_eq!(len, head.len() - 3);
        assert_eq!(request.host, Host::Name("api.github.com".into()));
        assert_eq!(request.port, 443);
        assert_eq!(request.action, Action::Tunnel);
        let (_, v6) = parse("CONNECT [::1]:8443 HTTP/1.1\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(v6.target(), "[::1]:8443");
    }

    #[test]
    fn connect_without_port_or_with_garbage_is_malformed() {
        for target in [
            "github.com",
            "github.com:x",
            "::1:443",
            "http://github.com/",
        ] {
            let head = format!("CONNECT {target} HTTP/1.1\r\n\r\n");
            assert!(
                matches!(parse(&head), Err(BadRequest::Malformed(_))),
                "{target}"
            );
        }
    }

    #[test]
    fn incomplete_heads_wait_for_more() {
        assert_eq!(parse("CONNECT a.b:443 HTTP/1.1\r\n"), Ok(None));
        assert_eq!(parse("GET http://a.b/ HT"), Ok(None));
    }

    #[test]
    fn oversized_heads_are_too_large() {
        let partial = format!(
            "GET http://a.b/ HTTP/1.1\r\nX: {}",
            "a".repeat(MAX_HEAD_BYTES)
        );
        assert_eq!(parse(&partial), Err(BadRequest::TooLarge));
        let complete = format!("{partial}\r\n\r\n");
        assert_eq!(parse(&complete), Err(BadRequest::TooLarge));
        let many: String = (0..=MAX_HEADERS).map(|i| format!("X-{i}: 1\r\n")).collect();
        let many = format!("GET http://a.b/ HTTP/1.1\r\n{many}\r\n");
        assert_eq!(parse(&many), Err(BadRequest::TooLarge));
    }

    #[test]
    fn garbage_and_origin_form_are_malformed() {
        for head in [
            "hello there\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a.b\r\n\r\n",
            "GET https://a.b/ HTTP/1.1\r\n\r\n",
            "GET ftp://a.b/ HTTP/1.1\r\n\r\n",
            "GET http://user@a.b/ HTTP/1.1\r\n\r\n",
            "GET http:///x HTTP/1.1\r\n\r\n",
            "GET http://a.b:0/ HTTP/1.1\r\n\r\n",
            "GET http://a b/ HTTP/1.1\r\n\r\n",
        ] {
            assert!(
                matches!(parse(head), Err(BadRequest::Malformed(_))),
                "{head:?}: {:?}",
                parse(head)
            );
        }
    }

    #[test]
    fn absolute_form_becomes_origin_form_without_hop_by_hop_headers() {
        let (request, head) = forwarded(
            "POST HTTP://Example.com:8080/a/b?c=d#frag HTTP/1.1\r\n\
             Host: somewhere.else\r\n\
             Proxy-Authorization: Basic c2VjcmV0\r\n\
             Proxy-Connection: keep-alive\r\n\
             Connection: keep-alive, X-Hop\r\n\
             Keep-Alive: timeout=5\r\n\
             X-Hop: 1\r\n\
             Content-Length: 3\r\n\
             User-Agent: test\r\n\r\n",
        );
        assert_eq!(request.method, "POST");
        assert_eq!(request.target(), "example.com:8080");
        assert_eq!(
            head,
            "POST /a/b?c=d HTTP/1.1\r\nHost: example.com:8080\r\nContent-Length: 3\r\n\
             User-Agent: test\r\nConnection: close\r\n\r\n"
        );
    }

    #[test]
    fn default_port_and_empty_path() {
        let (request, head) = forwarded("GET http://example.com HTTP/1.0\r\n\r\n");
        assert_eq!(request.port, 80);
        assert_eq!(
            head,
            "GET / HTTP/1.0\r\nHost: example.com\r\nConnection: close\r\n\r\n"
        );
        let (_, head) = forwarded("GET http://example.com?q HTTP/1.1\r\n\r\n");
        assert!(head.starts_with("GET /?q HTTP/1.1\r\n"), "{head}");
        let (request, _) = forwarded("GET http://[::1]:81/ HTTP/1.1\r\n\r\n");
        assert_eq!(request.host, Host::Ip("::1".parse().unwrap()));
    }
}
