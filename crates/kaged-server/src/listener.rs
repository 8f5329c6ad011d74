//! The listeners kaged serves on: TCP addresses and Unix sockets, each carrying its identity
//! into every request it accepts (for the trusted-proxy rule and the Host check).

use std::io;
use std::net::SocketAddr;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::PathBuf;

use axum::Router;
use axum::extract::Extension;
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::watch;

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
/// finish. Unix sockets are removed afterwards.
pub async fn serve_all(
    listeners: Vec<BoundListener>,
    app: Router,
    shutdown: watch::Receiver<bool>,
) -> io::Result<()> {
    let mut tasks = Vec::new();
    let mut sockets = Vec::new();
    for BoundListener { socket, info } in listeners {
        let app = app.clone().layer(Extension(info));
        let mut stop = shutdown.clone();
        let signal = async move {
            let _ = stop.wait_for(|s| *s).await;
        };
        tasks.push(match socket {
            Socket::Tcp(l) => tokio::spawn(async move {
                axum::serve(l, app.into_make_service_with_connect_info::<SocketAddr>())
                    .with_graceful_shutdown(signal)
                    .await
            }),
            Socket::Unix { listener, path } => {
                sockets.push(path);
                tokio::spawn(async move {
                    axum::serve(listener, app.into_make_service())
                        .with_graceful_shutdown(signal)
                        .await
                })
            }
        });
    }
    let mut result = Ok(());
    for task in tasks {
        match task.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => result = Err(e),
            Err(e) => result = Err(io::Error::other(e)),
        }
    }
    for path in sockets {
        let _ = std::fs::remove_file(path);
    }
    result
}
