//! The runtime directory: the auth cookie (the per-startup nonce) and the discovery file the CLI
//! uses to find the running daemon. Both exist only while the daemon runs.

use std::fs::{self, DirBuilder, OpenOptions, Permissions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

pub const AUTH_COOKIE_FILE: &str = "auth-cookie";
pub const DISCOVERY_FILE: &str = "daemon.json";
/// Held (exclusively) by the running daemon for its whole life: the liveness test that PID
/// reuse cannot fool, and the guard that keeps two daemons out of one runtime directory.
pub const LOCK_FILE: &str = "daemon.lock";
/// A 0600 page redirecting to a launch URL, so `kaged auth open` never puts a token in argv.
pub const LAUNCH_PAGE_FILE: &str = "launch.html";

/// What `kaged status` and `kaged auth open` need to reach the daemon.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Discovery {
    pub pid: u32,
    pub url: String,
    pub version: String,
    pub started_at_ms: i64,
}

/// Create (or verify) a private directory: owned by us, mode 0700. An existing directory owned
/// by someone else is refused: in /tmp that would be another user's trap.
pub fn ensure_private_dir(dir: &Path, uid: u32) -> Result<()> {
    // A parent others may write to (without the sticky bit) could swap the directory after our
    // checks; the XDG spec requires $XDG_RUNTIME_DIR to be the user's own.
    if let Some(parent) = dir.parent()
        && let Ok(meta) = fs::metadata(parent)
        && meta.mode() & 0o022 != 0
        && meta.mode() & 0o1000 == 0
    {
        bail!(
            "{} is writable by other users, so {} cannot be kept private; point XDG_RUNTIME_DIR (or KAGED_HOME) at a directory only you can write",
            parent.display(),
            dir.display()
        );
    }
    ensure_data_dir(dir)?;
    let meta =
        fs::symlink_metadata(dir).with_context(|| format!("cannot inspect {}", dir.display()))?;
    if !meta.is_dir() {
        bail!(
            "{} exists but is not a directory (a symlink?); remove it and retry",
            dir.display()
        );
    }
    if meta.uid() != uid {
        bail!(
            "{} is owned by UID {}, not by this user (UID {uid}); remove it or set XDG_RUNTIME_DIR",
            dir.display(),
            meta.uid()
        );
    }
    if meta.mode() & 0o777 != 0o700 {
        fs::set_permissions(dir, Permissions::from_mode(0o700))
            .with_context(|| format!("cannot make {} private (0700)", dir.display()))?;
    }
    Ok(())
}

/// The directory of a Unix socket: created 0700 if missing; an existing one must already be
/// private and ours (it is never re-permissioned: it might be the operator's home).
pub fn ensure_socket_dir(dir: &Path, uid: u32) -> Result<()> {
    if !dir.exists() {
        return ensure_private_dir(dir, uid);
    }
    let meta = fs::metadata(dir).with_context(|| format!("cannot inspect {}", dir.display()))?;
    if meta.uid() != uid || meta.mode() & 0o077 != 0 {
        bail!(
            "the socket directory {} must be owned by this user with mode 0700 (it is UID {}, mode {:o}); use a dedicated directory such as $XDG_RUNTIME_DIR/kaged",
            dir.display(),
            meta.uid(),
            meta.mode() & 0o777
        );
    }
    Ok(())
}

/// Create the data directory private (0700) if it does not exist; an existing directory the
/// operator chose is left as it is.
pub fn ensure_data_dir(dir: &Path) -> Result<()> {
    if !dir.exists() {
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
    }
    Ok(())
}

/// Take the runtime directory's lock for the daemon's lifetime. `Ok(None)`: another daemon holds it.
pub fn lock_runtime(dir: &Path) -> Result<Option<fs::File>> {
    let path = dir.join(LOCK_FILE);
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => Ok(Some(file)),
        Err(fs::TryLockError::WouldBlock) => Ok(None),
        Err(fs::TryLockError::Error(e)) => {
            Err(e).with_context(|| format!("cannot lock {}", path.display()))
        }
    }
}

/// Whether a daemon holds the runtime directory's lock right now.
pub fn daemon_alive(dir: &Path) -> std::io::Result<bool> {
    let file = match fs::File::open(dir.join(LOCK_FILE)) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    };
    match file.try_lock_shared() {
        Ok(()) => Ok(false),
        Err(fs::TryLockError::WouldBlock) => Ok(true),
        Err(fs::TryLockError::Error(e)) => Err(e),
    }
}

/// Write `contents` to `dir/name` with mode 0600, atomically (temp file + rename), so a reader
/// never sees a partial secret and the secret is never world-readable, even briefly.
pub fn write_private_file(dir: &Path, name: &str, contents: &str) -> Result<PathBuf> {
    let path = dir.join(name);
    let tmp = dir.join(format!(".{name}.{}", std::process::id()));
    let _ = fs::remove_file(&tmp);
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("cannot create {}", tmp.display()))?;
    f.write_all(contents.as_bytes())
        .and_then(|()| f.sync_all())
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    fs::rename(&tmp, &path)
        .with_context(|| format!("cannot move {} into place", path.display()))?;
    Ok(path)
}

pub fn read_nonce(runtime_dir: &Path) -> Result<String> {
    let path = runtime_dir.join(AUTH_COOKIE_FILE);
    let text = fs::read_to_string(&path).with_context(|| {
        format!(
            "no running daemon found: cannot read {} (start one with `kaged start`)",
            path.display()
        )
    })?;
    Ok(text.trim().to_string())
}

/// The discovery file: `Ok(None)` when absent, an error when unreadable (e.g. permissions).
pub fn read_discovery(runtime_dir: &Path) -> std::io::Result<Option<Discovery>> {
    match fs::read_to_string(runtime_dir.join(DISCOVERY_FILE)) {
        Ok(text) => Ok(serde_json::from_str(&text).ok()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_files_and_dirs_have_owner_only_modes() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("run/kaged");
        let uid = crate::host::current_uid();
        ensure_private_dir(&dir, uid).unwrap();
        assert_eq!(fs::metadata(&dir).unwrap().mode() & 0o777, 0o700);
        let p = write_private_file(&dir, "secret", "abc").unwrap();
        assert_eq!(fs::metadata(&p).unwrap().mode() & 0o777, 0o600);
        assert_eq!(fs::read_to_string(&p).unwrap(), "abc");
        // Loosened permissions are tightened again.
        fs::set_permissions(&dir, Permissions::from_mode(0o755)).unwrap();
        ensure_private_dir(&dir, uid).unwrap();
        assert_eq!(fs::metadata(&dir).unwrap().mode() & 0o777, 0o700);
    }

    #[test]
    fn runtime_lock_is_exclusive_and_observable() {
        let tmp = tempfile::tempdir().unwrap();
        assert!(!daemon_alive(tmp.path()).unwrap());
        let held = lock_runtime(tmp.path()).unwrap().unwrap();
        assert!(daemon_alive(tmp.path()).unwrap());
        assert!(lock_runtime(tmp.path()).unwrap().is_none());
        drop(held);
        assert!(!daemon_alive(tmp.path()).unwrap());
    }

    #[test]
    fn a_dir_under_a_world_writable_non_sticky_parent_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let parent = tmp.path().join("open");
        fs::create_dir(&parent).unwrap();
        fs::set_permissions(&parent, Permissions::from_mode(0o777)).unwrap();
        let uid = crate::host::current_uid();
        let err = ensure_private_dir(&parent.join("kaged"), uid).unwrap_err();
        assert!(err.to_string().contains("writable by other users"), "{err}");
        fs::set_permissions(&parent, Permissions::from_mode(0o1777)).unwrap();
        ensure_private_dir(&parent.join("kaged"), uid).unwrap();
    }

    #[test]
    fn an_existing_open_socket_directory_is_refused_not_chmodded() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("open");
        fs::create_dir(&dir).unwrap();
        fs::set_permissions(&dir, Permissions::from_mode(0o755)).unwrap();
        let uid = crate::host::current_uid();
        let err = ensure_socket_dir(&dir, uid).unwrap_err();
        assert!(err.to_string().contains("mode 0700"), "{err}");
        assert_eq!(
            fs::metadata(&dir).unwrap().mode() & 0o777,
            0o755,
            "left as it was"
        );
        ensure_socket_dir(&tmp.path().join("new"), uid).unwrap();
        assert_eq!(
            fs::metadata(tmp.path().join("new")).unwrap().mode() & 0o777,
            0o700
        );
    }

    #[test]
    fn directory_owned_by_another_uid_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let uid = crate::host::current_uid();
        let err = ensure_private_dir(tmp.path(), uid.wrapping_add(1)).unwrap_err();
        assert!(err.to_string().contains("is owned by UID"), "{err}");
    }
}
