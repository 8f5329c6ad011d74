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
    if !dir.exists() {
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
    }
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

pub fn read_discovery(runtime_dir: &Path) -> Option<Discovery> {
    let text = fs::read_to_string(runtime_dir.join(DISCOVERY_FILE)).ok()?;
    serde_json::from_str(&text).ok()
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
    fn directory_owned_by_another_uid_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let uid = crate::host::current_uid();
        let err = ensure_private_dir(tmp.path(), uid.wrapping_add(1)).unwrap_err();
        assert!(err.to_string().contains("is owned by UID"), "{err}");
    }
}
