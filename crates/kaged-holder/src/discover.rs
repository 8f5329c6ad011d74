//! Which holders live in a directory: every `*.sock` is asked Hello (on threads, each with
//! a short timeout). A socket nobody listens on any more (connection refused) is removed;
//! one that does not answer in time is left alone and not reported.

use std::path::{Path, PathBuf};
use std::time::Duration;

use kaged_session::holder::HolderHello;

/// How long a holder may take to answer Hello during discovery.
pub const HELLO_TIMEOUT: Duration = Duration::from_secs(1);

/// A holder that answered: its socket and its Hello (accepted, or refused with the versions
/// it speaks: an incompatible holder is still alive and can still be killed).
#[derive(Debug, Clone)]
pub struct Found {
    pub socket: PathBuf,
    pub hello: HolderHello,
}

/// Every holder answering in `dir` (none when the directory does not exist), by socket name.
pub fn discover(dir: &Path) -> Vec<Found> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let sockets: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "sock"))
        .collect();
    let asks: Vec<_> = sockets
        .into_iter()
        .map(|socket| {
            std::thread::spawn(
                move || match crate::Client::connect(&socket, Some(HELLO_TIMEOUT)) {
                    Ok(client) => Some(Found {
                        hello: client.hello().clone(),
                        socket,
                    }),
                    Err(e) => {
                        if e.kind() == std::io::ErrorKind::ConnectionRefused {
                            let _ = std::fs::remove_file(&socket);
                        }
                        None
                    }
                },
            )
        })
        .collect();
    let mut found: Vec<Found> = asks
        .into_iter()
        .filter_map(|t| t.join().ok().flatten())
        .collect();
    found.sort_by(|a, b| a.socket.cmp(&b.socket));
    found
}
