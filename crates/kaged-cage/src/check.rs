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
//!
//! A bind can also *land elsewhere*: bwrap turns a source descriptor back into a path (and its
//! own check compares only the destination), so a swap at the right moment can mount the wrong
//! source at a place the link pointed to, such as the cage's `/home`, while the destination
//! itself looks right again a moment later. So the check also reads the cage's whole mount
//! table: every mount point must be one kaged made (once), one bwrap makes for `/proc` and
//! `/dev`, or one the host itself has below a system directory. A stray mount anywhere ends
//! the run.

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

/// Why the in-cage check refuses to run the command.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckError {
    #[error("malformed --expect {0:?}")]
    MalformedExpect(String),
    #[error("unreadable mountinfo line {0:?}")]
    UnreadableMountinfo(String),
    /// A destination or the mount table is not what kaged built.
    #[error(
        "{path} {what}: the project changed while the cage was being built (another run may be tampering with it); nothing was run"
    )]
    Changed { path: String, what: String },
}

fn changed(path: &str, what: impl Into<String>) -> CheckError {
    CheckError::Changed {
        path: path.into(),
        what: what.into(),
    }
}

impl FromStr for Expect {
    type Err = CheckError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || CheckError::MalformedExpect(s.into());
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
    pub fn judge(&self, seen: Option<&Observed>) -> Result<(), CheckError> {
        let path = self.path();
        let changed = |what: &str| Err(changed(path, what));
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

/// Mount points bwrap makes itself below `/proc` and `/dev` (each at most once).
const BWRAP_OWN: &[&str] = &[
    "/proc/sys",
    "/proc/sysrq-trigger",
    "/proc/irq",
    "/proc/bus",
    "/dev/null",
    "/dev/zero",
    "/dev/full",
    "/dev/random",
    "/dev/urandom",
    "/dev/tty",
    "/dev/console",
    "/dev/pts",
    "/dev/shm",
    "/dev/mqueue",
];

/// Undo mountinfo's octal escapes (`\040` for a space, and so on).
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|d| bytes[i] == b'\\' && d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match octal {
            Some(d) => {
                out.push((d[0] - b'0') * 64 + (d[1] - b'0') * 8 + (d[2] - b'0'));
                i += 4;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The mount points of a `/proc/PID/mountinfo` text, in order.
pub fn mount_points(mountinfo: &str) -> Result<Vec<String>, CheckError> {
    mountinfo
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            line.split(' ')
                .nth(4)
                .map(unescape)
                .ok_or_else(|| CheckError::UnreadableMountinfo(line.into()))
        })
        .collect()
}

/// Judge a cage's mount points: `made` are the points kaged's cage has (each exactly once),
/// `host_below_system` the host's own mounts below system directories (as the cage sees them).
pub fn judge_mounts(
    points: &[String],
    made: &[String],
    host_below_system: &[String],
) -> Result<(), CheckError> {
    let count = |p: &str| points.iter().filter(|x| x.as_str() == p).count();
    for p in made {
        match count(p) {
            1 => {}
            0 => {
                return Err(changed(p, "is not mounted"));
            }
            n => {
                return Err(changed(p, format!("holds {n} mounts")));
            }
        }
    }
    for p in points {
        let known = p == "/"
            || made.contains(p)
            || (BWRAP_OWN.contains(&p.as_str()) && count(p) == 1)
            || host_below_system.contains(p);
        if !known {
            return Err(changed(p, "is a mount kaged did not make"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const CAGE: &str = r"65 42 0:40 /newroot / rw,nosuid,nodev,relatime - tmpfs tmpfs rw
66 65 254:0 /usr /usr ro,nosuid,nodev,relatime - ext4 /dev/vda rw
72 65 0:41 / /proc rw,nosuid,nodev,noexec,relatime - proc proc rw
73 72 0:41 /irq /proc/irq ro,nosuid,nodev,noexec,relatime - proc proc rw
75 65 0:42 / /dev rw,nosuid,nodev,relatime - tmpfs tmpfs rw,mode=755
76 75 0:6 /null /dev/null rw,nosuid,relatime - devtmpfs devtmpfs rw
84 65 0:45 / /home rw,nosuid,nodev,relatime - tmpfs tmpfs rw,mode=755
86 65 254:0 /src/p /workspace rw,nosuid,nodev,relatime - ext4 /dev/vda rw
87 86 254:0 /src/p/my\040out /workspace/my\040out rw,nosuid,nodev,relatime - ext4 /dev/vda rw
";

    fn made() -> Vec<String> {
        [
            "/usr",
            "/proc",
            "/dev",
            "/home",
            "/workspace",
            "/workspace/my out",
        ]
        .map(String::from)
        .to_vec()
    }

    #[test]
    fn the_mount_table_of_a_cage_is_judged_whole() {
        let points = mount_points(CAGE).unwrap();
        assert_eq!(points[8], "/workspace/my out");
        assert!(judge_mounts(&points, &made(), &[]).is_ok());
        // A bind that landed on the cage's /home (through a swapped link).
        let landed = format!("{CAGE}90 84 254:0 /home/ann /home rw - ext4 /dev/vda rw\n");
        let err = judge_mounts(&mount_points(&landed).unwrap(), &made(), &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("/home holds 2 mounts"), "{err}");
        // ... or anywhere else.
        let stray = format!("{CAGE}90 66 254:0 /home/ann /usr/lib rw - ext4 /dev/vda rw\n");
        let err = judge_mounts(&mount_points(&stray).unwrap(), &made(), &[])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("/usr/lib is a mount kaged did not make"),
            "{err}"
        );
        // Unless the host has that mount itself.
        assert!(
            judge_mounts(
                &mount_points(&stray).unwrap(),
                &made(),
                &["/usr/lib".into()]
            )
            .is_ok()
        );
        // A grant that never got its mount.
        let mut more = made();
        more.push("/workspace/data".into());
        let err = judge_mounts(&points, &more, &[]).unwrap_err().to_string();
        assert!(err.contains("/workspace/data is not mounted"), "{err}");
        assert!(mount_points("1 2 3").is_err());
    }

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
        assert!(
            ro.judge(Some(&writable))
                .unwrap_err()
                .to_string()
                .contains("writable")
        );
        let other = seen(FileId { dev: 1, ino: 2 });
        assert!(
            ro.judge(Some(&other))
                .unwrap_err()
                .to_string()
                .contains("not what")
        );
        let mut link = seen(ID);
        link.is_symlink = true;
        assert!(
            ro.judge(Some(&link))
                .unwrap_err()
                .to_string()
                .contains("symbolic link")
        );
        assert!(ro.judge(None).unwrap_err().to_string().contains("missing"));
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
