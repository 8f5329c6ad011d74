//! Copying a plugin's directory into `[plugins] dir`: regular files and directories only
//! (a symbolic link or a special file anywhere is refused, naming it), directories 0700, files
//! keeping their permission bits without group/other write, setuid or setgid; copied into a
//! hidden directory beside the target and renamed into place, so an installed version is
//! replaced only by a complete copy (an atomic exchange), never by half of one.

use std::fs::{self, OpenOptions, Permissions};
use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::anyhow;
use rustix::fs::{CWD, OFlags, RenameFlags, renameat_with};

use crate::Failure;

/// A plugin directory of more entries than this is refused (a plugin is a program, not a
/// data set).
const MAX_ENTRIES: usize = 10_000;

/// Permission bits a copied file keeps: no group/other write, no setuid, setgid or sticky.
const FILE_MODE_MASK: u32 = 0o755;

/// Directories of an installed plugin.
const DIR_MODE: u32 = 0o700;

/// One thing to copy, relative to the plugin's directory.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Entry {
    Dir(PathBuf),
    File(PathBuf),
}

/// What a non-regular file is, in words.
fn special(file_type: fs::FileType) -> Option<&'static str> {
    use std::os::unix::fs::FileTypeExt;
    if file_type.is_symlink() {
        Some("a symbolic link")
    } else if file_type.is_fifo() {
        Some("a FIFO")
    } else if file_type.is_socket() {
        Some("a socket")
    } else if file_type.is_char_device() {
        Some("a character device")
    } else if file_type.is_block_device() {
        Some("a block device")
    } else {
        None
    }
}

/// Every entry under `src` (parents before what they hold), or the refusal naming every
/// symbolic link and special file in it.
pub(super) fn scan(src: &Path) -> Result<Vec<Entry>, Failure> {
    let root = fs::symlink_metadata(src)
        .map_err(|e| Failure::Config(format!("cannot read {}: {e}", src.display())))?;
    if let Some(what) = special(root.file_type()) {
        return Err(Failure::Config(format!(
            "{} is {what}: name the plugin's directory itself",
            src.display()
        )));
    }
    let mut entries = Vec::new();
    let mut refused = Vec::new();
    let mut pending = vec![PathBuf::new()];
    while let Some(rel) = pending.pop() {
        let dir = src.join(&rel);
        let mut names: Vec<_> = fs::read_dir(&dir)
            .and_then(|list| list.map(|e| e.map(|e| e.file_name())).collect())
            .map_err(|e| Failure::Config(format!("cannot read {}: {e}", dir.display())))?;
        names.sort();
        for name in names {
            let rel = rel.join(&name);
            let path = src.join(&rel);
            let meta = fs::symlink_metadata(&path)
                .map_err(|e| Failure::Config(format!("cannot read {}: {e}", path.display())))?;
            if let Some(what) = special(meta.file_type()) {
                refused.push(format!("  {} is {what}", path.display()));
            } else if meta.is_dir() {
                entries.push(Entry::Dir(rel.clone()));
                pending.push(rel);
            } else {
                entries.push(Entry::File(rel));
            }
            if entries.len() > MAX_ENTRIES {
                return Err(Failure::Config(format!(
                    "{} holds more than {MAX_ENTRIES} files and directories; a plugin's directory holds the plugin, not its build tree or data",
                    src.display()
                )));
            }
        }
    }
    if !refused.is_empty() {
        return Err(Failure::Config(format!(
            "not installing {}: plugins are copied as regular files and directories only, and it holds:\n{}\nreplace each link with what it points to, and remove special files",
            src.display(),
            refused.join("\n")
        )));
    }
    Ok(entries)
}

/// Copies one regular file: opened without following a link and checked to be a regular
/// file once open (it may have been swapped since the scan); created new with its mode bits.
fn copy_file(from: &Path, to: &Path) -> io::Result<()> {
    let flags = OFlags::NOFOLLOW | OFlags::NONBLOCK;
    let mut source = OpenOptions::new()
        .read(true)
        .custom_flags(flags.bits() as i32)
        .open(from)?;
    let meta = source.metadata()?;
    if !meta.is_file() {
        return Err(io::Error::other(format!(
            "{} is no longer a regular file",
            from.display()
        )));
    }
    let mode = meta.mode() & FILE_MODE_MASK;
    let mut dest = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(to)?;
    io::copy(&mut source, &mut dest)?;
    // The umask may have taken bits away: the mode is the source's, exactly.
    dest.set_permissions(Permissions::from_mode(mode))?;
    dest.sync_all()
}

fn make_dir(path: &Path) -> io::Result<()> {
    fs::create_dir(path)?;
    fs::set_permissions(path, Permissions::from_mode(DIR_MODE))
}

/// When root installs into a plugins directory another user owns (the system daemon's, as
/// `kaged`), the copy becomes that user's, so the daemon can read what it runs.
fn follow_owner(plugins_dir: &Path, staged: &Path, entries: &[Entry]) -> io::Result<()> {
    let owner = fs::metadata(plugins_dir)?;
    if !rustix::process::geteuid().is_root() || owner.uid() == 0 {
        return Ok(());
    }
    let (uid, gid) = (Some(owner.uid()), Some(owner.gid()));
    std::os::unix::fs::lchown(staged, uid, gid)?;
    for entry in entries {
        let (Entry::Dir(rel) | Entry::File(rel)) = entry;
        std::os::unix::fs::lchown(staged.join(rel), uid, gid)?;
    }
    Ok(())
}

/// A fresh hidden name beside the target, for the copy in progress.
fn staging_name(name: &str) -> Result<String, Failure> {
    let mut random = [0u8; 8];
    getrandom::fill(&mut random).map_err(|e| anyhow!("no randomness for a temporary name: {e}"))?;
    Ok(format!(".{name}.install-{}", hex::encode(random)))
}

/// Copies the scanned `entries` of `src` into `plugins_dir/name`, replacing an installed
/// version atomically once the copy is complete. Returns whether one was replaced.
pub(super) fn install_tree(
    src: &Path,
    entries: &[Entry],
    plugins_dir: &Path,
    name: &str,
) -> Result<bool, Failure> {
    let in_dir = |what: &str, e: io::Error| {
        Failure::Runtime(anyhow!("{what} {}: {e}", plugins_dir.display()))
    };
    match fs::metadata(plugins_dir) {
        Ok(meta) if meta.is_dir() => {}
        Ok(_) => {
            return Err(Failure::Config(format!(
                "the plugins directory {} ([plugins] dir) is not a directory",
                plugins_dir.display()
            )));
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            fs::create_dir_all(plugins_dir)
                .and_then(|()| fs::set_permissions(plugins_dir, Permissions::from_mode(DIR_MODE)))
                .map_err(|e| in_dir("cannot create the plugins directory", e))?;
        }
        Err(e) => return Err(in_dir("cannot read the plugins directory", e)),
    }
    let target = plugins_dir.join(name);
    let existing = match fs::symlink_metadata(&target) {
        Ok(meta) if meta.is_dir() => true,
        Ok(_) => {
            return Err(Failure::Config(format!(
                "{} exists and is not a plugin's directory; remove it first",
                target.display()
            )));
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => false,
        Err(e) => return Err(in_dir("cannot read", e)),
    };
    let staged = plugins_dir.join(staging_name(name)?);
    make_dir(&staged).map_err(|e| in_dir("cannot create a directory in", e))?;
    let copied = entries
        .iter()
        .try_for_each(|entry| match entry {
            Entry::Dir(rel) => make_dir(&staged.join(rel))
                .map_err(|e| anyhow!("cannot create {}: {e}", staged.join(rel).display())),
            Entry::File(rel) => copy_file(&src.join(rel), &staged.join(rel)).map_err(|e| {
                anyhow!(
                    "cannot copy {} to {}: {e}",
                    src.join(rel).display(),
                    staged.join(rel).display()
                )
            }),
        })
        .and_then(|()| {
            follow_owner(plugins_dir, &staged, entries)
                .map_err(|e| anyhow!("cannot hand the copy to the plugins directory's owner: {e}"))
        })
        .and_then(|()| {
            let flags = if existing {
                RenameFlags::EXCHANGE
            } else {
                RenameFlags::NOREPLACE
            };
            renameat_with(CWD, &staged, CWD, &target, flags).map_err(|e| {
                anyhow!(
                    "cannot move the copy into place at {}: {}",
                    target.display(),
                    io::Error::from(e)
                )
            })
        });
    // After an exchange the staging name holds the old version; after a failure, the partial
    // copy. Either goes.
    let cleaned = fs::remove_dir_all(&staged);
    copied.map_err(Failure::Runtime)?;
    if let Err(e) = cleaned.or_else(|e| match e.kind() {
        io::ErrorKind::NotFound => Ok(()),
        _ => Err(e),
    }) {
        eprintln!(
            "kaged: warning: the previous version is left at {}: {e}",
            staged.display()
        );
    }
    Ok(existing)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(path: &Path) -> u32 {
        fs::symlink_metadata(path).unwrap().mode() & 0o7777
    }

    fn message(failure: Failure) -> String {
        match failure {
            Failure::Config(m) => m,
            Failure::Runtime(e) => format!("{e:#}"),
            _ => "other".into(),
        }
    }

    fn plugin(root: &Path) -> PathBuf {
        let src = root.join("src");
        fs::create_dir_all(src.join("lib/deep")).unwrap();
        fs::write(src.join("kaged-plugin.yaml"), "name: x\n").unwrap();
        fs::write(src.join("run"), "#!/bin/sh\n").unwrap();
        fs::set_permissions(src.join("run"), Permissions::from_mode(0o4777)).unwrap();
        fs::write(src.join("lib/deep/data"), "d").unwrap();
        fs::set_permissions(src.join("lib/deep/data"), Permissions::from_mode(0o664)).unwrap();
        src
    }

    #[test]
    fn a_tree_is_copied_with_safe_modes_and_replaced_whole() {
        let tmp = tempfile::tempdir().unwrap();
        let src = plugin(tmp.path());
        let plugins = tmp.path().join("state/plugins");
        let entries = scan(&src).ok().unwrap();
        assert!(entries.contains(&Entry::File("lib/deep/data".into())));
        assert!(!install_tree(&src, &entries, &plugins, "x").ok().unwrap());
        let target = plugins.join("x");
        assert_eq!(mode(&plugins), 0o700);
        assert_eq!(mode(&target), 0o700);
        assert_eq!(mode(&target.join("lib/deep")), 0o700);
        assert_eq!(mode(&target.join("run")), 0o755);
        assert_eq!(mode(&target.join("lib/deep/data")), 0o644);
        assert_eq!(
            fs::read_to_string(target.join("lib/deep/data")).unwrap(),
            "d"
        );

        // A second install replaces the first, whole: nothing of the old is left.
        fs::write(target.join("stale"), "old").unwrap();
        fs::write(src.join("lib/deep/data"), "new").unwrap();
        assert!(install_tree(&src, &entries, &plugins, "x").ok().unwrap());
        assert!(!target.join("stale").exists());
        assert_eq!(
            fs::read_to_string(target.join("lib/deep/data")).unwrap(),
            "new"
        );
        let names: Vec<_> = fs::read_dir(&plugins)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["x"], "no staging directory is left behind");
    }

    #[test]
    fn a_failed_copy_leaves_the_installed_version_alone() {
        let tmp = tempfile::tempdir().unwrap();
        let src = plugin(tmp.path());
        let plugins = tmp.path().join("plugins");
        let entries = scan(&src).ok().unwrap();
        install_tree(&src, &entries, &plugins, "x").ok().unwrap();
        // A file that vanished after the scan: the copy fails half way.
        fs::remove_file(src.join("lib/deep/data")).unwrap();
        fs::write(src.join("run"), "changed").unwrap();
        let failure = message(install_tree(&src, &entries, &plugins, "x").err().unwrap());
        assert!(failure.contains("lib/deep/data"), "{failure}");
        assert_eq!(
            fs::read_to_string(plugins.join("x/run")).unwrap(),
            "#!/bin/sh\n"
        );
        assert_eq!(fs::read_dir(&plugins).unwrap().count(), 1);
    }

    #[test]
    fn links_and_special_files_are_refused_by_name() {
        let tmp = tempfile::tempdir().unwrap();
        let src = plugin(tmp.path());
        std::os::unix::fs::symlink("/etc/passwd", src.join("lib/passwd")).unwrap();
        rustix::fs::mknodat(
            CWD,
            src.join("pipe"),
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
        let refused = message(scan(&src).err().unwrap());
        assert!(
            refused.contains(&format!(
                "{} is a symbolic link",
                src.join("lib/passwd").display()
            )),
            "{refused}"
        );
        assert!(
            refused.contains(&format!("{} is a FIFO", src.join("pipe").display())),
            "{refused}"
        );
        let link = tmp.path().join("link");
        std::os::unix::fs::symlink(&src, &link).unwrap();
        assert!(message(scan(&link).err().unwrap()).contains("is a symbolic link"));
    }
}
