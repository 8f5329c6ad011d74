//! A proxy serving one cage for as long as it runs: bound, served, stopped on drop.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::sync::mpsc::UnboundedReceiver;
use tokio::sync::watch;

use crate::{AllowError, Allowlist, EgressDecision, serve};

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Allowlist(#[from] AllowError),
    #[error("cannot bind the egress socket {path}: {source}")]
    Bind {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The proxy of one cage. Dropping it stops the proxy (open connections are cut) and removes
/// the socket.
#[derive(Debug)]
pub struct RunningProxy {
    socket: PathBuf,
    stop: watch::Sender<bool>,
}

impl RunningProxy {
    /// Serve `allow` on a new Unix socket at `socket` (its directory must be private to the
    /// daemon's user). Call within a tokio runtime. Decisions arrive on the receiver.
    pub fn start(
        socket: &Path,
        allow: &[String],
    ) -> Result<(RunningProxy, UnboundedReceiver<EgressDecision>), StartError> {
        let allowlist = Allowlist::parse(allow)?;
        let _ = std::fs::remove_file(socket);
        let listener =
            tokio::net::UnixListener::bind(socket).map_err(|source| StartError::Bind {
                path: socket.to_path_buf(),
                source,
            })?;
        let (stop, mut stopped) = watch::channel(false);
        let (decisions_tx, decisions) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(serve(
            listener,
            Arc::new(allowlist),
            decisions_tx,
            async move {
                let _ = stopped.wait_for(|s| *s).await;
            },
        ));
        Ok((
            RunningProxy {
                socket: socket.to_path_buf(),
                stop,
            },
            decisions,
        ))
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }
}

impl Drop for RunningProxy {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        let _ = std::fs::remove_file(&self.socket);
    }
}
