//! Where a plugin's cage takes its files from. bwrap opens the plugin's directory as the user
//! the cage runs as, so that user must reach it:
//!
//! - A daemon that is not root runs cages as itself, from the installed directory, which it
//!   must be able to read (it installed it, or it was handed to it).
//! - A root daemon runs cages as another user (`[sandbox] cage_user`, or the directory's
//!   owner), who usually cannot enter the plugins directory: it sits beside state holding
//!   secrets and is 0700, and so is each plugin's tree. Rather than opening any of that up,
//!   each run gets a copy of the plugin owned by root, readable by the cage's group and
//!   writable by no one else (directories 0750, files 0640 or 0750), made below the daemon's
//!   private helper directory (0711: others may pass, not list, and a name is random) and
//!   removed when the run ends. A daemon killed outright leaves it to the next start's sweep
//!   of its helper directory.
//!
//! Either way, the files are first checked from the cage user's side (a thread of this
//! process taking that identity), so an unreachable plugin fails with the path, the user and
//! the fix instead of bwrap's `Can't find source path /proc/self/fd/N: Permission denied`.

use std::fs::{self, OpenOptions, Permissions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use kaged_cage::{Because, Identity, RunAs};

/// A plugin's tree of more entries than this is not copied (`kaged plugin install` refuses
/// such a plugin too).
const MAX_ENTRIES: usize = 10_000;

/// Modes of the copy: the cage's group reads, nobody but root writes.
const DIR_MODE: u32 = 0o750;
const FILE_MODE: u32 = 0o640;
const PROGRAM_MODE: u32 = 0o750;

/// The plugin's files as its cage binds them; a staged copy is removed when this is dropped.
pub(super) struct CageFiles {
    root: PathBuf,
    /// What to remove at the end: the copy, and the private directory made for it when the
    /// daemon has no helper directory.
    staged: Vec<PathBuf>,
}

impl CageFiles {
    /// The directory the cage binds as its workspace.
    pub(super) fn root(&self) -> &Path {
        &self.root
    }
}

impl Drop for CageFiles {
    fn drop(&mut self) {
        for dir in &self.staged {
            let _ = fs::remove_dir_all(dir);
        }
    }
}

/// The files the cage of plugin `name` (installed at `dir`) binds, when it runs as `run_as`
/// (`None`: as the daemon's own user). `helper` is the daemon's helper copy, whose directory
/// holds a root daemon's copies.
pub(super) fn for_cage(
    name: &str,
    dir: &Path,
    run_as: Option<&RunAs>,
    helper: Option<&Path>,
) -> Result<CageFiles, String> {
    let Some(run_as) = run_as else {
        reachable(dir, None).map_err(|why| unreadable_by_the_daemon(name, dir, &why))?;
        return Ok(CageFiles {
            root: dir.to_path_buf(),
            staged: Vec::new(),
        });
    };
    let mut files = CageFiles {
        root: PathBuf::new(),
        staged: Vec::new(),
    };
    let parent = match helper.and_then(Path::parent) {
        Some(parent) => parent.to_path_buf(),
        None => {
            let private = kaged_spawn::private_dir("kaged-plugin")
                .and_then(|d| fs::set_permissions(&d, Permissions::from_mode(0o711)).map(|()| d))
                .map_err(|e| format!("cannot make a directory for the plugin's copy: {e}"))?;
            files.staged.push(private.clone());
            private
        }
    };
    let mut random = [0u8; 8];
    getrandom::fill(&mut random).map_err(|e| format!("no randomness for a name: {e}"))?;
    let root = parent.join(format!("plugin-{name}-{}", hex::encode(random)));
    // Root's alone while it is filled.
    fs::DirBuilder::new()
        .mode(0o700)
        .create(&root)
        .map_err(|e| format!("cannot make the plugin's copy {}: {e}", root.display()))?;
    files.staged.push(root.clone());
    files.root = root;
    copy_tree(dir, &files.root, run_as.identity.gid)?;
    // Opened to the cage's group only now that the copy is complete.
    publish(&files.root, run_as.identity.gid)
        .map_err(|e| format!("cannot open {} to the cage: {e}", files.root.display()))?;
    reachable(&files.root, Some(run_as.identity))
        .map_err(|why| unreachable_by_the_cage(name, &files.root, run_as, &why))?;
    Ok(files)
}

fn publish(path: &Path, gid: u32) -> io::Result<()> {
    std::os::unix::fs::lchown(path, Some(0), Some(gid))?;
    fs::set_permissions(path, Permissions::from_mode(DIR_MODE))
}

/// Copy `from`'s directories and regular files into the empty directory `to`, owned by root
/// and group `gid`. A link or a special file is refused by name (as `kaged plugin install`
/// refuses them); nothing is followed.
fn copy_tree(from: &Path, to: &Path, gid: u32) -> Result<(), String> {
    let mut pending = vec![PathBuf::new()];
    let mut count = 0usize;
    while let Some(rel) = pending.pop() {
        let dir = from.join(&rel);
        let list = fs::read_dir(&dir).map_err(|e| format!("cannot read {}: {e}", dir.display()))?;
        for entry in list {
            let entry = entry.map_err(|e| format!("cannot read {}: {e}", dir.display()))?;
            count += 1;
            if count > MAX_ENTRIES {
                return Err(format!(
                    "{} holds more than {MAX_ENTRIES} files and directories; a plugin's directory holds the plugin, not its build tree or data",
                    from.display()
                ));
            }
            let rel = rel.join(entry.file_name());
            let (source, target) = (from.join(&rel), to.join(&rel));
            let meta = fs::symlink_metadata(&source)
                .map_err(|e| format!("cannot read {}: {e}", source.display()))?;
            let copied = if meta.is_dir() {
                pending.push(rel);
                fs::create_dir(&target).and_then(|()| publish(&target, gid))
            } else if meta.is_file() {
                copy_file(&source, &target, gid)
            } else {
                return Err(format!(
                    "{} is not a regular file or directory (a link or a special file): a plugin's directory holds only those; replace it with what it points to, or remove it",
                    source.display()
                ));
            };
            copied.map_err(|e| {
                format!(
                    "cannot copy {} to {}: {e}",
                    source.display(),
                    target.display()
                )
            })?;
        }
    }
    Ok(())
}

/// One regular file, opened without following a link and checked once open.
fn copy_file(from: &Path, to: &Path, gid: u32) -> io::Result<()> {
    let flags = rustix::fs::OFlags::NOFOLLOW | rustix::fs::OFlags::NONBLOCK;
    let mut source = OpenOptions::new()
        .read(true)
        .custom_flags(flags.bits() as i32)
        .open(from)?;
    let meta = source.metadata()?;
    if !meta.is_file() {
        return Err(io::Error::other("it is no longer a regular file"));
    }
    let mode = if meta.mode() & 0o111 != 0 {
        PROGRAM_MODE
    } else {
        FILE_MODE
    };
    let mut target = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(to)?;
    io::copy(&mut source, &mut target)?;
    std::os::unix::fs::fchown(&target, Some(0), Some(gid))?;
    target.set_permissions(Permissions::from_mode(mode))
}

/// Whether `root` can be listed and its manifest read by `identity` (`None`: this process as
/// it is), asked of the kernel by a thread that takes that identity (and no supplementary
/// groups, as the cage) for the question: ACLs and every directory above count, as they will
/// for bwrap. The error says what was refused.
fn reachable(root: &Path, identity: Option<Identity>) -> Result<(), String> {
    let root = root.to_path_buf();
    let ask = move || -> Result<(), String> {
        if let Some(id) = identity {
            use rustix::process::{Gid, Uid};
            // This thread only (the raw calls, not the C library's process-wide ones); the
            // thread ends after the question.
            rustix::thread::set_thread_groups(&[])
                .and_then(|()| {
                    rustix::thread::set_thread_res_gid(
                        Gid::from_raw(id.gid),
                        Gid::from_raw(id.gid),
                        Gid::from_raw(id.gid),
                    )
                })
                .and_then(|()| {
                    rustix::thread::set_thread_res_uid(
                        Uid::from_raw(id.uid),
                        Uid::from_raw(id.uid),
                        Uid::from_raw(id.uid),
                    )
                })
                .map_err(|e| format!("cannot take the cage's identity to check: {e}"))?;
        }
        fs::read_dir(&root).map_err(|e| format!("cannot list {}: {e}", root.display()))?;
        let manifest = root.join(kaged_plugin::MANIFEST_FILE);
        fs::File::open(&manifest)
            .map_err(|e| format!("cannot read {}: {e}", manifest.display()))?;
        Ok(())
    };
    std::thread::Builder::new()
        .name("kaged-plugin-reach".into())
        .spawn(ask)
        .map_err(|e| format!("cannot check: {e}"))?
        .join()
        .unwrap_or_else(|_| Err("the check failed".into()))
}

/// The first directory from `/` down to `path` whose permission bits keep `id` out (search
/// on the way, read and search at the end), in words: `/srv/kaged is 0700, owned by uid 0`.
fn blocking_dir(path: &Path, id: Identity) -> Option<String> {
    let mut at = PathBuf::new();
    let components: Vec<_> = path.components().collect();
    for (i, part) in components.iter().enumerate() {
        at.push(part);
        let meta = fs::metadata(&at).ok()?;
        let bits = if meta.uid() == id.uid {
            meta.mode() >> 6
        } else if meta.gid() == id.gid {
            meta.mode() >> 3
        } else {
            meta.mode()
        } & 0o7;
        let needed = if i + 1 == components.len() { 0o5 } else { 0o1 };
        if bits & needed != needed {
            return Some(format!(
                "{} is {:04o}, owned by uid {} gid {}",
                at.display(),
                meta.mode() & 0o7777,
                meta.uid(),
                meta.gid()
            ));
        }
    }
    None
}

fn unreachable_by_the_cage(name: &str, root: &Path, run_as: &RunAs, why: &str) -> String {
    let who = kaged_spawn::describe_identity(run_as.identity);
    let role = match run_as.because {
        Because::CageUser => "[sandbox] cage_user",
        Because::ProjectOwner => "the owner of the plugin's directory",
    };
    let detail = blocking_dir(root, run_as.identity).unwrap_or_else(|| why.to_string());
    format!(
        "the plugin `{name}` cannot start: its cage runs as {who} ({role}), who cannot reach its files at {}: {detail}; fix: give kaged a TMPDIR every user may pass through (such as /tmp), where it keeps the copies its cages bind",
        root.display()
    )
}

/// Why the plugin `name` cannot run when kaged's own user (its cage's) cannot read `dir`,
/// with the fix.
pub(crate) fn unreadable_by_the_daemon(name: &str, dir: &Path, why: &str) -> String {
    let me = rustix::process::geteuid().as_raw();
    let user = kaged_spawn::describe_identity(Identity {
        uid: me,
        gid: rustix::process::getegid().as_raw(),
    });
    format!(
        "the plugin `{name}` cannot start: its cage runs as kaged's own user, {user}, who cannot read its files at {}: {why}; fix: give the directory to that user (chown -R {me} {}) or install the plugin again as that user (kaged plugin install PATH)",
        dir.display(),
        dir.display()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(path: &Path) -> u32 {
        fs::symlink_metadata(path).unwrap().mode() & 0o7777
    }

    fn plugin(root: &Path) -> PathBuf {
        let src = root.join("src");
        fs::create_dir_all(src.join("lib")).unwrap();
        fs::write(src.join(kaged_plugin::MANIFEST_FILE), "name: x\n").unwrap();
        fs::write(src.join("run"), "#!/bin/sh\n").unwrap();
        fs::set_permissions(src.join("run"), Permissions::from_mode(0o4777)).unwrap();
        fs::write(src.join("lib/data"), "d").unwrap();
        fs::set_permissions(src.join("lib/data"), Permissions::from_mode(0o666)).unwrap();
        src
    }

    #[test]
    fn a_daemon_that_is_not_switching_uses_the_installed_directory() {
        let tmp = tempfile::tempdir().unwrap();
        let src = plugin(tmp.path());
        let files = for_cage("x", &src, None, None).ok().unwrap();
        assert_eq!(files.root(), src);
        drop(files);
        assert!(src.exists(), "the installed directory is never removed");
        let missing = for_cage("x", &tmp.path().join("gone"), None, None)
            .err()
            .unwrap();
        assert!(
            missing.starts_with(
                "the plugin `x` cannot start: its cage runs as kaged's own user, uid "
            ),
            "{missing}"
        );
        assert!(missing.contains("gone"), "{missing}");
        assert!(missing.contains("fix: "), "{missing}");
    }

    /// As root (as CI runs): the copy is root's, readable by the cage's group only, and gone
    /// with the run.
    #[test]
    fn a_root_daemon_s_cage_gets_a_copy_it_can_read_and_not_change() {
        if rustix::process::geteuid().as_raw() != 0 {
            eprintln!("skipped: needs root");
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        let src = plugin(tmp.path());
        // The installed tree, out of the cage user's reach.
        fs::set_permissions(tmp.path(), Permissions::from_mode(0o700)).unwrap();
        let helper_dir = tmp.path().join("helper");
        fs::create_dir(&helper_dir).unwrap();
        let run_as = RunAs {
            identity: Identity {
                uid: 65534,
                gid: 65534,
            },
            because: Because::CageUser,
            workspace_writable: false,
        };
        // The helper's directory below a 0700 one: the check says who, where, and the fix.
        let refused = for_cage("x", &src, Some(&run_as), Some(&helper_dir.join("kaged")))
            .err()
            .unwrap();
        assert!(refused.contains("its cage runs as uid 65534"), "{refused}");
        assert!(
            refused.contains(&format!(
                "{} is 0700, owned by uid 0 gid 0",
                tmp.path().display()
            )),
            "{refused}"
        );
        assert!(refused.contains("fix: give kaged a TMPDIR"), "{refused}");
        assert_eq!(
            fs::read_dir(&helper_dir).unwrap().count(),
            0,
            "the refused copy is removed"
        );

        // Without a helper copy: a private directory others may pass through.
        let files = for_cage("x", &src, Some(&run_as), None).ok().unwrap();
        let root = files.root().to_path_buf();
        let parent = root.parent().unwrap().to_path_buf();
        assert_eq!(mode(&parent), 0o711);
        assert_eq!(mode(&root), 0o750);
        assert_eq!(mode(&root.join("lib")), 0o750);
        assert_eq!(mode(&root.join("run")), 0o750);
        assert_eq!(mode(&root.join("lib/data")), 0o640);
        for rel in ["", "lib", "run", "lib/data"] {
            let meta = fs::metadata(root.join(rel)).unwrap();
            assert_eq!((meta.uid(), meta.gid()), (0, 65534), "{rel}");
        }
        assert_eq!(fs::read_to_string(root.join("lib/data")).unwrap(), "d");
        let status = fs::read_to_string("/proc/self/status").unwrap();
        assert!(
            status.lines().any(|l| l.starts_with("Uid:\t0\t0\t0")),
            "only the checking thread took the cage's identity: {status}"
        );
        drop(files);
        assert!(!root.exists() && !parent.exists(), "removed with the run");

        // A link is refused by name.
        std::os::unix::fs::symlink("/etc/shadow", src.join("lib/secret")).unwrap();
        let refused = for_cage("x", &src, Some(&run_as), None).err().unwrap();
        assert!(
            refused.contains(&format!(
                "{} is not a regular file",
                src.join("lib/secret").display()
            )),
            "{refused}"
        );
    }
}
