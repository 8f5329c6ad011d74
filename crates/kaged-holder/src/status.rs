//! The status file a holder leaves when its run ended (`transcripts/ID.status`): written
//! atomically (a temporary file, fsync, rename; 0600) before the Exit frame, so a daemon that
//! was down when the run ended records the real end at its next start.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use kaged_session::holder::StatusFile;

/// Write `status` at `path`, replacing any earlier one in one step.
pub fn write(path: &Path, status: &StatusFile) -> std::io::Result<()> {
    let bytes = serde_json::to_vec(status).map_err(std::io::Error::other)?;
    let mut tmp_name = path.as_os_str().to_owned();
    tmp_name.push(".tmp");
    let tmp = Path::new(&tmp_name);
    let _ = std::fs::remove_file(tmp);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(tmp)?;
    file.write_all(&bytes)?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(tmp, path)?;
    if let Some(dir) = path.parent() {
        // The rename itself, durable.
        let _ = std::fs::File::open(dir).and_then(|d| d.sync_all());
    }
    Ok(())
}

/// The status file at `path`, `None` when there is none.
pub fn read(path: &Path) -> std::io::Result<Option<StatusFile>> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}
