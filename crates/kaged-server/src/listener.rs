//! The listeners kaged serves on: TCP addresses and Unix sockets, each carrying its identity
//! into every request it accepts (for the trusted-proxy rule and the Host check).

use std::io;
use std::net::SocketAddr;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::PathBuf;

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, Extension, Request};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tower::ServiceExt;

use crate::connection::{Conn, ConnectionLimits, Tracked, Waiting};

/// Which listener a request arrived on.
#[derive(Debug, Clone)]
pub struct ListenerInfo {
    /// As written in `[daemon] listen`: `127.0.0.1:7777` or `unix:///path`.
    pub label: String,
    pub unix: bool,
    /// `[auth.proxy] trusted_proxy_listeners` names this listener.
    pub trusted_proxy: bool,
}

/// The caller's address (TCP peer) or socket, for the audit log.
#[derive(Debug, Clone)]
pub struct Peer(pub Option<String>);

pub enum Socket {
    Tcp(TcpListener),
    Unix {
        listener: UnixListener,
        path: PathBuf,
    },
}

pub struct BoundListener {
    pub socket: Socket,
    pub info: ListenerInfo,
}

#[derive(Debug, thiserror::Error)]
pub enum BindError {
    #[error("{path}: {reason}")]
    Unix { path: PathBuf, reason: String },
    #[error("cannot listen on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Bind a Unix socket 0600 at `path` (its directory must already be private). A stale socket
/// (nobody answers) is removed; a live one, or any other kind of file, is refused.
pub async fn bind_unix(path: PathBuf) -> Result<(UnixListener, PathBuf), BindError> {
    match std::fs::symlink_metadata(&path) {
        Ok(meta) if meta.file_type().is_socket() => {
            if tokio::net::UnixStream::connect(&path).await.is_ok() {
                return Err(BindError::Unix {
                    path,
                    reason: "another process is listening on this socket; stop it or choose another path".into(),
                });
            }
            std::fs::remove_file(&path).map_err(|source| BindError::Io {
                path: path.clone(),
                source,
            })?;
        }
        Ok(_) => {
            return Err(BindError::Unix {
                path,
                reason: "exists and is not a socket; refusing to replace it".into(),
            });
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(source) => return Err(BindError::Io { path, source }),
    }
    let listener = UnixListener::bind(&path).map_err(|source| BindError::Io {
        path: path.clone(),
        source,
    })?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).map_err(|source| {
        BindError::Io {
            path: path.clone(),
            source,
        }
    })?;
    Ok((listener, path))
}

/// Serve `app` on every listener until `shutdown` turns true, then let in-flight requests
/// finish. Unix sockets are removed afterwards. `limits` bound what idle and slow connections
/// may hold (see `crate::connection`); the cap on waiting connections spans all listeners.
pub async fn serve_all(
    listeners: Vec<BoundListener>,
    app: Router,
    shutdown: watch::Receiver<bool>,
    limits: ConnectionLimits,
) -> io::Result<()> {
    let waiting = Waiting::new(limits.max_waiting);
    let mut tasks = Vec::new();
    let mut sockets = Vec::new();
    for BoundListener { socket, info } in listeners {
        if let Socket::Unix { path, .. } = &socket {
            sockets.push(path.clone());
        }
        let app = app.clone().layer(Extension(info));
        tasks.push(tokio::spawn(accept_loop(
            socket,
            app,
            shutdown.clone(),
            waiting.clone(),
            limits,
        )));
    }
    let mut result = Ok(());
    for task in tasks {
        if let Err(e) = task.await {
            result = Err(io::Error::other(e));
        }
    }
    for path in sockets {
        let _ = std::fs::remove_file(path);
    }
    result
}

enum Accepted {
    Tcp(TcpStream, SocketAddr),
    Unix(UnixStream),
}

async fn accept(socket: &Socket) -> io::Result<Accepted> {
    match socket {
        Socket::Tcp(l) => l.accept().await.map(|(s, a)| Accepted::Tcp(s, a)),
        Socket::Unix { listener, .. } => listener.accept().await.map(|(s, _)| Accepted::Unix(s)),
    }
}

/// Errors of one connection that came and went before it was accepted.
fn connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

async fn accept_loop(
    socket: Socket,
    app: Router,
    mut shutdown: watch::Receiver<bool>,
    waiting: Arc<Waiting>,
    limits: ConnectionLimits,
) {
    let mut connections = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            accepted = accept(&socket) => accepted,
            _ = shutdown.wait_for(|s| *s) => break,
            Some(_) = connections.join_next() => continue,
        };
        let (io, peer) = match accepted {
            Ok(Accepted::Tcp(s, a)) => (Io::Tcp(s), Some(a)),
            Ok(Accepted::Unix(s)) => (Io::Unix(s), None),
            Err(e) if connection_error(&e) => continue,
            Err(e) => {
                // Most likely out of descriptors (EMFILE): free the one held longest by a
                // connection doing nothing, and let the backlog wait a moment.
                tracing::warn!(error = %e, "cannot accept a connection");
                waiting.evict_oldest();
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        // Queued at accept, in accept order: the cap closes the connection that waited longest.
        let conn = Conn::accept(&waiting);
        connections.spawn(serve_connection(
            io,
            peer,
            app.clone(),
            conn,
            limits,
            shutdown.clone(),
        ));
    }
    drop(socket);
    while connections.join_next().await.is_some() {}
}

/// One connection: HTTP/1.1 with upgrades (WebSockets), closed when it waits too long.
async fn serve_connection(
    io: Io,
    peer: Option<SocketAddr>,
    app: Router,
    conn: Arc<Conn>,
    limits: ConnectionLimits,
    mut shutdown: watch::Receiver<bool>,
) {
    let service = {
        let conn = conn.clone();
        hyper::service::service_fn(move |mut request: Request<Incoming>| {
            let in_flight = conn.request();
            if let Some(peer) = peer {
                request.extensions_mut().insert(ConnectInfo(peer));
            }
            let app = app.clone();
            async move {
                let response = app.oneshot(request.map(Body::new)).await;
                response.map(|r| {
                    r.map(|body| Tracked {
                        body,
                        _in_flight: in_flight,
                    })
                })
            }
        })
    };
    // hyper's own header timer is off: it would use one value for the first head and every
    // idle wait; `Conn::expired` keeps the two apart.
    let served = hyper::server::conn::http1::Builder::new()
        .header_read_timeout(None)
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades();
    tokio::pin!(served);
    let mut stopping = false;
    loop {
        tokio::select! {
            result = served.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(error = %e, ?peer, "connection ended with an error");
                }
                return;
            }
            why = conn.expired(&limits) => {
                // Dropping the connection closes the socket; nothing was in flight.
                tracing::debug!(?why, ?peer, "closing a waiting connection");
                return;
            }
            _ = shutdown.wait_for(|s| *s), if !stopping => {
                served.as_mut().graceful_shutdown();
                stopping = true;
            }
        }
    }
}

/// A TCP or Unix stream, so one connection type serves both listeners.
enum Io {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl AsyncRead for Io {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            Io::Unix(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Io {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Io::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            Io::Unix(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Io::Tcp(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Io::Unix(s) => Pin::new(s).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Io::Tcp(s) => s.is_write_vectored(),
            Io::Unix(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Tcp(s) => Pin::new(s).poll_flush(cx),
            Io::Unix(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            Io::Unix(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}
