//! The daemon's claim on a SQLite file: an exclusive `flock` on `PATH.lock` beside it, held for
//! the backend's life, the file holding the holder's name for the next claimant to read.
//! (SQLite's own locks are POSIX record locks on the database file, per transaction; `flock`
//! locks are separate from them on Linux, and on a file of their own no close of ours can drop
//! SQLite's.)

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use super::SqliteBackend;
use crate::{Result, StoreError};

impl SqliteBackend {
    pub(super) fn claim(&self) -> Result<()> {
        let mut held = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        if held.is_none() {
            *held = Some(claim_file(&self.path)?);
        }
        Ok(())
    }
}

/// Take the lock of the database at `db`, or say who holds it.
pub(super) fn claim_file(db: &Path) -> Result<File> {
    let mut name = db.as_os_str().to_owned();
    name.push(".lock");
    let path = PathBuf::from(name);
    let io = |source| StoreError::Io {
        path: path.clone(),
        source,
    };
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&path)
        .map_err(io)?;
    match file.try_lock() {
        Ok(()) => {}
        Err(fs::TryLockError::WouldBlock) => {
            let holder = fs::read_to_string(&path).unwrap_or_default();
            return Err(StoreError::InUse {
                place: db.display().to_string(),
                holder: match holder.trim() {
                    "" => format!("a process holding {}", path.display()),
                    h => h.to_string(),
                },
            });
        }
        Err(fs::TryLockError::Error(e)) => return Err(io(e)),
    }
    file.set_len(0).map_err(io)?;
    file.write_all(crate::this_daemon().as_bytes())
        .map_err(io)?;
    Ok(file)
}

/// The lock file of a backend: none until claimed.
pub(super) type Claim = std::sync::Mutex<Option<File>>;
