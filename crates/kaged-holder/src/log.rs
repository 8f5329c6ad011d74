//! A holder's own log, `RUNTIME/holders/RUNNAME.log` next to its socket: why it could not
//! start, what it could not write, which peers it refused. Capped at [`LOG_MAX`] bytes, so a
//! peer knocking again and again cannot fill the disk.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// The most a holder's log grows to; later lines are dropped.
pub const LOG_MAX: u64 = 64 * 1024;

/// The log of the holder listening on `socket`.
pub fn path(socket: &Path) -> PathBuf {
    socket.with_extension("log")
}

/// Append one line (with the time, ms since the epoch) while the log is under the cap.
pub fn append(socket: &Path, line: &str) {
    let path = path(socket);
    if std::fs::metadata(&path).is_ok_and(|m| m.len() >= LOG_MAX) {
        return;
    }
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .open(&path)
    {
        let _ = writeln!(f, "{} {line}", crate::serve::now_ms());
    }
}
