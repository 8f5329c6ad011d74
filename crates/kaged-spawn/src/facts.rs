//! The host facts the cage compiler needs, gathered so that a cage cannot plant them.
//!
//! The project is writable inside its cage, and other cages of the same project may be running:
//! any path below the project root can become a symbolic link at any moment. So every source
//! of a bind is opened here, component by component without following links (`O_PATH |
//! O_NOFOLLOW`), and handed to bwrap as a descriptor: what gets bound is exactly the object
//! checked, whatever happens to the path afterwards. A link on the way refuses the run.

use std::os::fd::OwnedFd;
use std::path::{Component, Path, PathBuf};

use kaged_cage::{FileId, Host, HostBind, HostPath, Lookup, Opened, Policy, SYSTEM_DIRS, Source};
use nix::fcntl::{OFlag, open, openat};
use nix::sys::stat::{Mode, SFlag, fstat};

/// The opened sources of a cage: facts for the compiler, descriptors for bwrap (same order).
pub struct Sources {
    pub host: Host,
    pub fds: Vec<OwnedFd>,
}

fn id_and_kind(fd: &OwnedFd, what: &Path) -> Result<(FileId, SFlag), String> {
    let st = fstat(fd).map_err(|e| format!("{}: {e}", what.display()))?;
    Ok((
        FileId {
            dev: st.st_dev,
            ino: st.st_ino,
        },
        SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT,
    ))
}

/// Open `relative` below the directory `root` without following any link; `Ok(None)` when a
/// component does not exist.
fn open_beneath(
    root: &OwnedFd,
    root_path: &Path,
    relative: &Path,
) -> Result<Option<OwnedFd>, String> {
    let flags = OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let mut at_path = root_path.to_path_buf();
    let mut current: Option<OwnedFd> = None;
    let components: Vec<Component> = relative.components().collect();
    if components.is_empty() {
        return Err(format!(
            "{} is not a path below the project",
            relative.display()
        ));
    }
    for (i, c) in components.iter().enumerate() {
        let Component::Normal(name) = c else {
            return Err(format!(
                "{} is not a plain relative path",
                relative.display()
            ));
        };
        at_path.push(name);
        let dir = current.as_ref().unwrap_or(root);
        let fd = match openat(dir, *name, flags, Mode::empty()) {
            Ok(fd) => fd,
            Err(nix::errno::Errno::ENOENT) => return Ok(None),
            Err(e) => return Err(format!("{}: {e}", at_path.display())),
        };
        let (_, kind) = id_and_kind(&fd, &at_path)?;
        if kind == SFlag::S_IFLNK {
            return Err(format!(
                "{} is a symbolic link; kaged never binds through links inside a project (a cage could have planted it): replace it with a real directory or file",
                at_path.display()
            ));
        }
        if i + 1 < components.len() && kind != SFlag::S_IFDIR {
            return Err(format!("{} is not a directory", at_path.display()));
        }
        current = Some(fd);
    }
    Ok(current)
}

/// An absent `.git` is masked inside the cage by an empty read-only directory, whose mount
/// point bwrap creates in the project, as the cage's user. A cage switched away from root
/// cannot create it in a project root owns, so root makes it here (empty, root's, as bwrap
/// running as root always did), without following a link planted in its place.
pub fn make_git_mount_point(root: &Path) -> Result<(), String> {
    let root_fd = open(
        root,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| format!("cannot open the project {}: {e}", root.display()))?;
    if fstat(&root_fd)
        .map_err(|e| format!("{}: {e}", root.display()))?
        .st_uid
        != 0
    {
        return Ok(());
    }
    match nix::sys::stat::mkdirat(&root_fd, ".git", Mode::from_bits_truncate(0o755)) {
        Ok(()) | Err(nix::errno::Errno::EEXIST) => Ok(()),
        Err(e) => Err(format!(
            "cannot create {}: {e}",
            root.join(".git").display()
        )),
    }
}

/// Why a file of a project could not be read by [`read_beneath`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReadBeneathError {
    #[error("{0} does not exist")]
    Missing(PathBuf),
    #[error("{path} is larger than {max} bytes")]
    TooLarge { path: PathBuf, max: u64 },
    #[error("{0}")]
    Refused(String),
}

/// The content of the regular file `relative` below the project at `root`, opened component
/// by component without following any link (a cage can write the project: a link it planted
/// would make the daemon read, and hand its model, a file of the host). At most `max` bytes.
pub fn read_beneath(root: &Path, relative: &Path, max: u64) -> Result<Vec<u8>, ReadBeneathError> {
    use std::io::Read;
    let path = root.join(relative);
    let refused = |e: String| ReadBeneathError::Refused(e);
    let root_fd = open(
        root,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| refused(format!("cannot open the project {}: {e}", root.display())))?;
    let parent = relative.parent().filter(|p| !p.as_os_str().is_empty());
    let dir = match parent {
        Some(p) => match open_beneath(&root_fd, root, p).map_err(refused)? {
            Some(fd) => fd,
            None => return Err(ReadBeneathError::Missing(path)),
        },
        None => root_fd,
    };
    let Some(name) = relative.file_name() else {
        return Err(refused(format!("{} names no file", relative.display())));
    };
    // O_NONBLOCK: a FIFO planted there must not hang the daemon.
    let fd = match openat(
        &dir,
        name,
        OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC,
        Mode::empty(),
    ) {
        Ok(fd) => fd,
        Err(nix::errno::Errno::ENOENT) => return Err(ReadBeneathError::Missing(path)),
        Err(nix::errno::Errno::ELOOP) => {
            return Err(refused(format!(
                "{} is a symbolic link; kaged never reads through links inside a project (a cage could have planted it): replace it with a real file",
                path.display()
            )));
        }
        Err(e) => return Err(refused(format!("{}: {e}", path.display()))),
    };
    let (_, kind) = id_and_kind(&fd, &path).map_err(refused)?;
    if kind != SFlag::S_IFREG {
        return Err(refused(format!("{} is not a regular file", path.display())));
    }
    let mut content = Vec::new();
    std::fs::File::from(fd)
        .take(max + 1)
        .read_to_end(&mut content)
        .map_err(|e| refused(format!("{}: {e}", path.display())))?;
    if content.len() as u64 > max {
        return Err(ReadBeneathError::TooLarge { path, max });
    }
    Ok(content)
}

/// Open every source of `policy`'s cage over the project at `root` (canonical), with the
/// kaged executable at `helper` (`/proc/self/exe` pins the running binary) and the run's
/// egress proxy socket at `egress`, if it has one.
pub fn open_sources(
    root: &Path,
    helper: &Path,
    policy: &Policy,
    egress: Option<&Path>,
) -> Result<Sources, String> {
    let root_fd = open(
        root,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| format!("cannot open the project {}: {e}", root.display()))?;
    let mut opened = Vec::new();
    let mut fds = Vec::new();
    for (source, required) in kaged_cage::sources(policy, egress.is_some()) {
        let (fd, what) = match &source {
            Source::Root => (
                Some(root_fd.try_clone().map_err(|e| e.to_string())?),
                root.to_path_buf(),
            ),
            Source::Helper => (
                Some(
                    open(helper, OFlag::O_PATH | OFlag::O_CLOEXEC, Mode::empty()).map_err(|e| {
                        format!("cannot open kaged itself ({}): {e}", helper.display())
                    })?,
                ),
                helper.to_path_buf(),
            ),
            Source::Project(relative) => {
                (open_beneath(&root_fd, root, relative)?, root.join(relative))
            }
            // The daemon made it, in a directory of the run's own that only the daemon can write.
            Source::Egress => match egress.and_then(Path::parent) {
                Some(dir) => (
                    Some(
                        open(
                            dir,
                            OFlag::O_PATH
                                | OFlag::O_DIRECTORY
                                | OFlag::O_NOFOLLOW
                                | OFlag::O_CLOEXEC,
                            Mode::empty(),
                        )
                        .map_err(|e| {
                            format!("cannot open the egress directory {}: {e}", dir.display())
                        })?,
                    ),
                    dir.to_path_buf(),
                ),
                None => (None, PathBuf::new()),
            },
        };
        let Some(fd) = fd else {
            if required {
                return Err(format!(
                    "{} does not exist; the cage grants it (filesystem): create it, or remove the grant",
                    what.display()
                ));
            }
            continue;
        };
        let (id, _) = id_and_kind(&fd, &what)?;
        opened.push(Opened { source, id });
        fds.push(fd);
    }
    let system_dirs: Vec<String> = SYSTEM_DIRS
        .iter()
        .filter(|d| Path::new(d).exists())
        .map(|d| d.to_string())
        .collect();
    let below: Vec<(String, PathBuf)> = system_dirs
        .iter()
        .filter_map(|d| Some((d.clone(), std::fs::canonicalize(d).ok()?)))
        .collect();
    Ok(Sources {
        host: Host {
            system_submounts: submounts(&below),
            system_dirs,
            opened,
            binds: Vec::new(),
        },
        fds,
    })
}

/// The host's mount points below each `(cage path, canonical host path)`, where a cage sees
/// them (bwrap binds directories recursively, after following a link such as `/bin` →
/// `/usr/bin`).
pub fn submounts(dirs: &[(String, PathBuf)]) -> Vec<String> {
    let Ok(points) = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| e.to_string())
        .and_then(|text| kaged_cage::mount_points(&text).map_err(|e| e.to_string()))
    else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (dir, real) in dirs {
        for point in &points {
            if let Ok(rest) = Path::new(point).strip_prefix(real)
                && !rest.as_os_str().is_empty()
            {
                out.push(Path::new(dir).join(rest).display().to_string());
            }
        }
    }
    out
}

/// Resolve what `local.toml` grants the project at `root` (canonical) from the host: each
/// host path with its links followed (the cage sees the object, not a link it could not
/// follow), outside the project (which cages write: its paths are granted in project.yaml,
/// by descriptor), with its identity for the in-cage check; parents before what lies below.
pub fn resolve_grants(root: &Path, grants: &[HostPath]) -> Result<Vec<HostBind>, String> {
    let mut out: Vec<HostBind> = Vec::new();
    for g in grants {
        let dest = kaged_cage::grant_destination(&g.at).ok_or_else(|| {
            format!(
                "local.toml grants {} at {:?}, which is not a place in a cage",
                g.host.display(),
                g.at
            )
        })?;
        let host = std::fs::canonicalize(&g.host).map_err(|e| {
            format!(
                "local.toml grants {} to this project, but it cannot be resolved ({e}): create it, or remove the grant",
                g.host.display()
            )
        })?;
        if host.to_str().is_none() {
            return Err(format!(
                "local.toml grants {}, whose path is not UTF-8; grant a directory with a plain name",
                host.display()
            ));
        }
        if host.starts_with(root) {
            return Err(format!(
                "local.toml grants {}, which is inside the project (cages can change it); grant it in project.yaml's filesystem list instead",
                g.host.display()
            ));
        }
        if out.iter().any(|b| b.dest == dest) {
            return Err(format!(
                "local.toml grants two host paths at {dest}; keep one"
            ));
        }
        let meta = std::fs::metadata(&host).map_err(|e| format!("{}: {e}", host.display()))?;
        use std::os::unix::fs::MetadataExt;
        out.push(HostBind {
            host,
            dest,
            writable: g.writable,
            on_path: g.on_path,
            id: FileId {
                dev: meta.dev(),
                ino: meta.ino(),
            },
        });
    }
    // bwrap makes each mount point inside what is already mounted: shallower first.
    out.sort_by_key(|b| Path::new(&b.dest).components().count());
    Ok(out)
}

/// The host as `kaged_cage::resolve_program` asks about it.
pub struct RealFs;

impl kaged_cage::HostFs for RealFs {
    fn lookup(&self, path: &Path) -> Lookup {
        use std::os::unix::fs::PermissionsExt;
        match std::fs::symlink_metadata(path) {
            Err(_) => Lookup::Missing,
            Ok(m) if m.file_type().is_symlink() => std::fs::read_link(path)
                .map(Lookup::Link)
                .unwrap_or(Lookup::Missing),
            Ok(m) if m.is_file() && m.permissions().mode() & 0o111 != 0 => Lookup::Executable,
            Ok(_) => Lookup::NotExecutable,
        }
    }

    fn canonical(&self, path: &Path) -> Option<PathBuf> {
        std::fs::canonicalize(path).ok()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn read_beneath_reads_files_and_refuses_links_and_what_is_not_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("prompts")).unwrap();
        std::fs::write(root.join("prompts/p.md"), "be brief").unwrap();
        std::fs::write(dir.path().join("secret"), "key").unwrap();
        let read = |rel: &str, max| read_beneath(root, Path::new(rel), max);
        assert_eq!(read("prompts/p.md", 100).unwrap(), b"be brief");
        assert!(matches!(
            read("prompts/p.md", 3),
            Err(ReadBeneathError::TooLarge { .. })
        ));
        assert!(matches!(
            read("prompts/gone.md", 100),
            Err(ReadBeneathError::Missing(_))
        ));
        assert!(matches!(
            read("nodir/p.md", 100),
            Err(ReadBeneathError::Missing(_))
        ));
        std::os::unix::fs::symlink(root.join("secret"), root.join("prompts/link.md")).unwrap();
        let e = read("prompts/link.md", 100).unwrap_err().to_string();
        assert!(e.contains("symbolic link"), "{e}");
        std::os::unix::fs::symlink(root.join("prompts"), root.join("linkdir")).unwrap();
        let e = read("linkdir/p.md", 100).unwrap_err().to_string();
        assert!(e.contains("symbolic link"), "{e}");
        let e = read("prompts", 100).unwrap_err().to_string();
        assert!(e.contains("not a regular file"), "{e}");
        nix::unistd::mkfifo(&root.join("fifo"), Mode::from_bits_truncate(0o600)).unwrap();
        let e = read("fifo", 100).unwrap_err().to_string();
        assert!(e.contains("not a regular file"), "{e}");
    }

    use super::*;

    fn opened(root: &Path, policy: &Policy) -> Result<Vec<Source>, String> {
        open_sources(root, Path::new("/proc/self/exe"), policy, None)
            .map(|s| s.host.opened.into_iter().map(|o| o.source).collect())
    }

    #[test]
    fn planted_links_refuse_the_run_and_absent_optional_sources_are_left_out() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        std::fs::create_dir(root.join(".kaged")).unwrap();
        std::fs::write(root.join(".git"), "gitdir: /elsewhere\n").unwrap();
        let all = opened(root, &Policy::default_cage()).unwrap();
        assert_eq!(
            all,
            [
                Source::Root,
                Source::Helper,
                Source::Project(".git".into()),
                Source::Project(".kaged".into())
            ]
        );
        std::fs::remove_file(root.join(".git")).unwrap();
        let without_git = opened(root, &Policy::default_cage()).unwrap();
        assert!(!without_git.contains(&Source::Project(".git".into())));
        std::os::unix::fs::symlink("/etc", root.join(".git")).unwrap();
        let err = opened(root, &Policy::default_cage()).unwrap_err();
        assert!(err.contains("symbolic link"), "{err}");
        std::fs::remove_file(root.join(".git")).unwrap();
        std::fs::create_dir(root.join("real")).unwrap();
        std::os::unix::fs::symlink("/etc", root.join("real/data")).unwrap();
        let granted = |relative: &str| Policy::Caged {
            network: kaged_cage::Network::None,
            mounts: vec![kaged_cage::Mount {
                relative: relative.into(),
                writable: true,
            }],
            seccomp: "default".into(),
            limits: Default::default(),
            workspace: Default::default(),
        };
        assert!(
            opened(root, &granted("real/data/x"))
                .unwrap_err()
                .contains("real/data")
        );
        let missing = opened(root, &granted("real/nothing")).unwrap_err();
        assert!(missing.contains("does not exist"), "{missing}");
        std::fs::write(root.join("real/file"), "").unwrap();
        assert!(
            opened(root, &granted("real/file/x"))
                .unwrap_err()
                .contains("not a directory")
        );
    }

    #[test]
    fn ids_are_those_of_the_opened_objects() {
        use std::os::unix::fs::MetadataExt;
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir(tmp.path().join(".git")).unwrap();
        let s = open_sources(
            tmp.path(),
            Path::new("/proc/self/exe"),
            &Policy::default_cage(),
            None,
        )
        .unwrap();
        let meta = std::fs::metadata(tmp.path().join(".git")).unwrap();
        let git = s
            .host
            .opened
            .iter()
            .find(|o| o.source == Source::Project(".git".into()))
            .unwrap();
        assert_eq!(
            git.id,
            FileId {
                dev: meta.dev(),
                ino: meta.ino()
            }
        );
        assert_eq!(s.fds.len(), s.host.opened.len());
    }
}
