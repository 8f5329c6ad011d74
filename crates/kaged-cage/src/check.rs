//! What `kaged cage-check` (the first process inside every cage) verifies before the command
//! runs, decided without I/O.
//!
//! bwrap binds each source from a descriptor, so *what* is bound is exactly what kaged opened;
//! but it resolves each *destination* by path, and those paths run through the project, which
//! other live cages can write. A destination swapped for a symbolic link at the right moment
//! makes a bind (or its read-only remount) land elsewhere. The check sees the cage as it was
//! built: every destination must hold the object kaged opened (same device and inode, not a
//! link), read-only where it should be, and a masked `.git` must be an empty read-only tmpfs.
//! Anything else ends the run before the command starts.

use std::fmt;
use std::str::FromStr;

use crate::FileId;

/// One destination to verify, written on the helper's command line as `--expect SPEC`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expect {
    /// `bind:rw|ro:DEV:INO:PATH`: PATH shows the opened object; `ro` also means read-only.
    Bind {
        path: String,
        id: FileId,
        writable: bool,
    },
    /// `mask:PATH`: PATH is an empty, read-only tmpfs.
    Mask { path: String },
}

impl fmt::Display for Expect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Expect::Bind { path, id, writable } => write!(
                f,
                "bind:{}:{}:{}:{path}",
                if *writable { "rw" } else { "ro" },
                id.dev,
                id.ino
            ),
            Expect::Mask { path } => write!(f, "mask:{path}"),
        }
    }
}

impl FromStr for Expect {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || format!("malformed --expect {s:?}");
        if let Some(path) = s.strip_prefix("mask:") {
            return absolute(path)
                .then(|| Expect::Mask { path: path.into() })
                .ok_or_else(bad);
        }
        let rest = s.strip_prefix("bind:").ok_or_else(bad)?;
        let mut parts = rest.splitn(4, ':');
        let writable = match parts.next() {
            Some("rw") => true,
            Some("ro") => false,
            _ => return Err(bad()),
        };
        let mut number = || parts.next().and_then(|n| n.parse::<u64>().ok());
        let (Some(dev), Some(ino)) = (number(), number()) else {
            return Err(bad());
        };
        let path = parts.next().filter(|p| absolute(p)).ok_or_else(bad)?;
        Ok(Expect::Bind {
            path: path.into(),
            id: FileId { dev, ino },
            writable,
        })
    }
}

fn absolute(path: &str) -> bool {
    path.starts_with('/')
}

/// What the helper saw at a destination (`lstat`, `statvfs`, `statfs`, and for a directory
/// whether it has entries), without following a final symbolic link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observed {
    pub id: FileId,
    pub is_symlink: bool,
    pub read_only: bool,
    pub is_tmpfs: bool,
    pub is_empty_dir: bool,
}

impl Expect {
    pub fn path(&self) -> &str {
        match self {
            Expect::Bind { path, .. } | Expect::Mask { path } => path,
        }
    }

    /// `Ok` when `seen` (`None`: nothing there) is what was intended.
    pub fn judge(&self, seen: Option<&Observed>) -> Result<(), String> {
        let path = self.path();
        let changed = |what: &str| {
            Err(format!(
                "{path} {what}: the project changed while the cage was being built (another run may be tampering with it); nothing was run"
            ))
        };
        let Some(seen) = seen else {
            return changed("is missing");
        };
        if seen.is_symlink {
            return changed("is a symbolic link");
        }
        match self {
            Expect::Bind { id, writable, .. } => {
                if seen.id != *id {
                    return changed("is not what kaged opened");
                }
                if !*writable && !seen.read_only {
                    return changed("is writable although it must be read-only");
                }
            }
            Expect::Mask { .. } => {
                if !(seen.is_tmpfs && seen.read_only && seen.is_empty_dir) {
                    return changed("is not masked (an empty read-only directory)");
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: FileId = FileId {
        dev: 64769,
        ino: 42,
    };

    fn seen(id: FileId) -> Observed {
        Observed {
            id,
            is_symlink: false,
            read_only: true,
            is_tmpfs: false,
            is_empty_dir: false,
        }
    }

    #[test]
    fn specs_round_trip_and_bad_ones_are_refused() {
        for e in [
            Expect::Bind {
                path: "/workspace/a:b dir".into(),
                id: ID,
                writable: true,
            },
            Expect::Bind {
                path: "/workspace/.git".into(),
                id: ID,
                writable: false,
            },
            Expect::Mask {
                path: "/workspace/.git".into(),
            },
        ] {
            assert_eq!(e.to_string().parse::<Expect>().unwrap(), e);
        }
        for bad in [
            "",
            "bind:rx:1:2:/w",
            "bind:rw:1:/w",
            "bind:rw:x:2:/w",
            "bind:rw:1:2:relative",
            "mask:relative",
            "other:/w",
        ] {
            assert!(bad.parse::<Expect>().is_err(), "{bad}");
        }
    }

    #[test]
    fn only_the_intended_object_passes() {
        let ro = Expect::Bind {
            path: "/workspace/.git".into(),
            id: ID,
            writable: false,
        };
        assert!(ro.judge(Some(&seen(ID))).is_ok());
        // The bind landed elsewhere: the path shows the project's own (writable) directory.
        let mut writable = seen(ID);
        writable.read_only = false;
        assert!(ro.judge(Some(&writable)).unwrap_err().contains("writable"));
        let other = seen(FileId { dev: 1, ino: 2 });
        assert!(ro.judge(Some(&other)).unwrap_err().contains("not what"));
        let mut link = seen(ID);
        link.is_symlink = true;
        assert!(ro.judge(Some(&link)).unwrap_err().contains("symbolic link"));
        assert!(ro.judge(None).unwrap_err().contains("missing"));
        // A writable grant only needs to be the object opened.
        let rw = Expect::Bind {
            path: "/workspace/out".into(),
            id: ID,
            writable: true,
        };
        assert!(rw.judge(Some(&writable)).is_ok());

        let mask = Expect::Mask {
            path: "/workspace/.git".into(),
        };
        let masked = Observed {
            id: FileId { dev: 9, ino: 1 },
            is_symlink: false,
            read_only: true,
            is_tmpfs: true,
            is_empty_dir: true,
        };
        assert!(mask.judge(Some(&masked)).is_ok());
        for broken in [
            Observed {
                read_only: false,
                ..masked.clone()
            },
            Observed {
                is_tmpfs: false,
                ..masked.clone()
            },
            Observed {
                is_empty_dir: false,
                ..masked.clone()
            },
        ] {
            assert!(mask.judge(Some(&broken)).is_err(), "{broken:?}");
        }
    }
}
