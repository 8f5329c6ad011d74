//! A proxy serving one cage for as long as it runs: bound, served, stopped on drop.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::sync::watch;

use crate::{AllowError, Allowlist, DECISION_QUEUE, Decisions, decision_channel, serve};

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
    /// daemon's user). Call within a tokio runtime. Decisions arrive on [`Decisions`]; the
    /// queue closes once the proxy has stopped (after this is dropped) and every open
    /// connection has ended.
    pub fn start(socket: &Path, allow: &[String]) -> Result<(RunningProxy, Decisions), StartError> {
        let allowlist = Allowlist::parse(allow)?;
        let _ = std::fs::remove_file(socket);
        let listener =
            tokio::net::UnixListener::bind(socket).map_err(|source| StartError::Bind {
                path: socket.to_path_buf(),
                source,
            })?;
        let (stop, mut stopped) = watch::channel(false);
        let (decisions_tx, decisions) = decision_channel(DECISION_QUEUE);
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
