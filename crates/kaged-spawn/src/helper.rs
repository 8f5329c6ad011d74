//! The daemon's own copy of the kaged binary, bound into every cage as its helper (the in-cage
//! check, terminal and egress bridge).
//!
//! Why a copy: bwrap 0.8 turns a bound descriptor back into a path (`/proc/self/fd/N` read as
//! a link) and binds that path. Once the binary is replaced on disk (an upgrade), the running
//! daemon's `/proc/self/exe` names `… (deleted)`, which cannot be bound, and every new run
//! would fail until a restart. So at start the daemon copies itself (read through
//! `/proc/self/exe`, which reaches the running file even once deleted) into a directory of its
//! own, checks the copy byte for byte against the running binary and that it runs, and binds
//! that copy for as long as it lives. The copy is removed when the daemon stops; a daemon
//! killed outright leaves it to the next start's [`crate::sweep`] (the directory is named
//! after the daemon's PID: `kaged-helper-PID-RANDOM`).

use std::io::Read;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The prefix of every helper directory (`kaged-helper-PID-RANDOM` under the temporary
/// directory).
pub(crate) const PREFIX: &str = "kaged-helper-";

/// A verified private copy of the running kaged, removed (with its directory) when dropped.
#[derive(Debug)]
pub struct HelperCopy {
    dir: PathBuf,
    file: PathBuf,
    /// Left on disk when dropped (see [`HelperCopy::leave`]).
    left: bool,
}

impl HelperCopy {
    /// Copy the running binary. `for_other_users`: the cages run as other users (a root
    /// daemon), who must be able to resolve the copy's path (bwrap binds it as the cage's
    /// user): the directory is then 0711 (others may pass, not list) and the file 0755;
    /// otherwise both are this user's alone.
    pub fn create(for_other_users: bool) -> Result<HelperCopy, String> {
        let dir = crate::private_dir(&format!("{PREFIX}{}", std::process::id()))
            .map_err(|e| format!("cannot make a private directory: {e}"))?;
        let copy = HelperCopy {
            file: dir.join("kaged"),
            dir,
            left: false,
        };
        copy.fill(for_other_users)?;
        Ok(copy)
    }

    fn fill(&self, for_other_users: bool) -> Result<(), String> {
        let running = Path::new("/proc/self/exe");
        let mut source = std::fs::File::open(running)
            .map_err(|e| format!("cannot read the running binary: {e}"))?;
        let mut target = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(if for_other_users { 0o755 } else { 0o700 })
            .open(&self.file)
            .map_err(|e| format!("cannot create {}: {e}", self.file.display()))?;
        std::io::copy(&mut source, &mut target)
            .and_then(|_| target.sync_all())
            .map_err(|e| format!("cannot copy the running binary: {e}"))?;
        drop(target);
        same_bytes(running, &self.file)?;
        // A temporary directory mounted noexec would give a copy no cage could run.
        let ran = std::process::Command::new(&self.file)
            .arg("version")
            .env_clear()
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .map_err(|e| format!("the copy at {} does not run: {e}", self.file.display()))?;
        if !ran.success() {
            return Err(format!(
                "the copy at {} does not run ({ran})",
                self.file.display()
            ));
        }
        if for_other_users {
            std::fs::set_permissions(&self.dir, std::fs::Permissions::from_mode(0o711))
                .map_err(|e| format!("cannot open {} to the cages: {e}", self.dir.display()))?;
        }
        Ok(())
    }

    /// The copy, to bind as the helper.
    pub fn path(&self) -> &Path {
        &self.file
    }
}

impl HelperCopy {
    /// Leave the copy on disk: runs that outlive this daemon may still be building cages that
    /// bind it. The next start's sweep removes the copies of daemons that are gone.
    pub fn leave(mut self) {
        self.left = true;
    }
}

impl Drop for HelperCopy {
    fn drop(&mut self) {
        if !self.left {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// The two files hold the same bytes (length first, then every chunk).
fn same_bytes(a: &Path, b: &Path) -> Result<(), String> {
    let open =
        |p: &Path| std::fs::File::open(p).map_err(|e| format!("cannot read {}: {e}", p.display()));
    let (mut fa, mut fb) = (open(a)?, open(b)?);
    let len = |f: &std::fs::File, p: &Path| {
        f.metadata()
            .map(|m| m.len())
            .map_err(|e| format!("cannot read {}: {e}", p.display()))
    };
    let (la, lb) = (len(&fa, a)?, len(&fb, b)?);
    if la != lb {
        return Err(format!(
            "the copy of kaged has {lb} bytes, the running binary {la}"
        ));
    }
    let (mut ba, mut bb) = (vec![0u8; 1 << 16], vec![0u8; 1 << 16]);
    loop {
        let n =
            read_full(&mut fa, &mut ba).map_err(|e| format!("cannot read {}: {e}", a.display()))?;
        let m =
            read_full(&mut fb, &mut bb).map_err(|e| format!("cannot read {}: {e}", b.display()))?;
        if n != m || ba[..n] != bb[..m] {
            return Err("the copy of kaged differs from the running binary".into());
        }
        if n == 0 {
            return Ok(());
        }
    }
}

/// Read until `buf` is full or the file ends; how many bytes were read.
fn read_full(f: &mut std::fs::File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match f.read(&mut buf[filled..])? {
            0 => break,
            n => filled += n,
        }
    }
    Ok(filled)
}

/// Whether `name` is a helper directory of the kaged process `pid` (`kaged-helper-PID-HEX`).
pub(crate) fn owner_pid(name: &str) -> Option<u32> {
    let (pid, random) = name.strip_prefix(PREFIX)?.split_once('-')?;
    if random.is_empty() || !random.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    pid.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_carry_the_daemons_pid() {
        assert_eq!(owner_pid("kaged-helper-42-00ff"), Some(42));
        assert_eq!(owner_pid("kaged-helper-42-"), None);
        assert_eq!(owner_pid("kaged-helper-x-00ff"), None);
        assert_eq!(owner_pid("kaged-helper-42-../x"), None);
        assert_eq!(owner_pid("kaged-egress-00ff"), None);
    }

    #[test]
    fn the_files_compared_must_be_identical() {
        let tmp = tempfile::tempdir().unwrap();
        let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
        std::fs::write(&a, vec![7u8; 200_000]).unwrap();
        std::fs::write(&b, vec![7u8; 200_000]).unwrap();
        assert!(same_bytes(&a, &b).is_ok());
        let mut other = vec![7u8; 200_000];
        other[150_000] = 8;
        std::fs::write(&b, other).unwrap();
        assert!(same_bytes(&a, &b).is_err());
        std::fs::write(&b, vec![7u8; 10]).unwrap();
        assert!(same_bytes(&a, &b).unwrap_err().contains("10 bytes"));
    }
}
