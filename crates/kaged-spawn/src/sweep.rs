//! What a kaged killed outright leaves behind, swept when the next daemon starts: run
//! cgroups, egress proxy sockets, the seccomp directories older kaged wrote, and the copies of
//! kaged ([`crate::HelperCopy`]) of daemons that are gone.
//!
//! Cgroups are shared by every kaged in the same cgroup (other daemons, `kaged cage run`), so
//! only provably dead ones go: those of runs the caller's storage left unfinished, and those
//! named after a kaged process that is gone. Another daemon's groups are left alone.

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

/// What [`sweep`] removed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Swept {
    pub cgroups: usize,
    /// Processes killed in those cgroups first.
    pub killed: usize,
    pub sockets: usize,
    pub seccomp_dirs: usize,
    /// Private copies of kaged ([`crate::HelperCopy`]) of daemons that are gone.
    pub helper_copies: usize,
}

impl Swept {
    pub fn is_empty(&self) -> bool {
        *self == Swept::default()
    }
}

impl std::fmt::Display for Swept {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let plural =
            |n: usize, one: &str, many: &str| format!("{n} {}", if n == 1 { one } else { many });
        write!(
            f,
            "{} ({}), {}, {}, {}",
            plural(self.cgroups, "cgroup", "cgroups"),
            plural(self.killed, "process killed", "processes killed"),
            plural(self.sockets, "egress socket", "egress sockets"),
            plural(
                self.seccomp_dirs,
                "seccomp directory",
                "seccomp directories"
            ),
            plural(self.helper_copies, "helper copy", "helper copies"),
        )
    }
}

/// What to do with a group in one of kaged's cgroup roots.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Keep,
    /// Remove it if it is empty (a limit probe never holds a process).
    RemoveEmpty,
    /// Kill what is left in it, then remove it.
    KillAndRemove,
}

/// Decide about the group `name`, given the names of runs left unfinished (`runs`, as given to
/// `CageRequest::name`) and which PIDs are alive. Names are those `Cgroups::create` and the
/// probe make: `kaged-RUN`, `kaged-run-PID` (`kaged cage run`), `kaged-probe-PID`.
fn judge(name: &str, runs: &[&str], alive: impl Fn(u32) -> bool) -> Verdict {
    let dead = |pid: &str| pid.parse::<u32>().is_ok_and(|pid| !alive(pid));
    if let Some(pid) = name.strip_prefix("kaged-probe-") {
        return if dead(pid) {
            Verdict::RemoveEmpty
        } else {
            Verdict::Keep
        };
    }
    if let Some(pid) = name.strip_prefix("kaged-run-")
        && pid.bytes().all(|b| b.is_ascii_digit())
    {
        // Its `kaged cage run` is gone, so whatever is left in it is an orphaned cage.
        return if dead(pid) {
            Verdict::KillAndRemove
        } else {
            Verdict::Keep
        };
    }
    match name.strip_prefix("kaged-") {
        Some(run) if !run.is_empty() && runs.contains(&run) => Verdict::KillAndRemove,
        _ => Verdict::Keep,
    }
}

/// Whether `name` is a run's egress directory (`private_dir("kaged-egress")`).
fn is_egress_dir_name(name: &str) -> bool {
    name.strip_prefix("kaged-egress-")
        .is_some_and(|rest| !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// Hold a run's egress directory for as long as the returned descriptor is open (a run
/// holder holds its run's, so a daemon's stop, which stops the proxy, does not make it a
/// leftover for [`sweep`]): a shared `flock` on the directory, never followed if a link.
pub fn hold_egress_dir(dir: &Path) -> std::io::Result<rustix::fd::OwnedFd> {
    use rustix::fs::{FlockOperation, Mode, OFlags};
    let fd = rustix::fs::open(
        dir,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    rustix::fs::flock(&fd, FlockOperation::NonBlockingLockShared)?;
    Ok(fd)
}

/// Whether a run holder holds `dir` ([`hold_egress_dir`]).
fn egress_dir_held(dir: &Path) -> bool {
    use rustix::fs::{FlockOperation, Mode, OFlags};
    let Ok(fd) = rustix::fs::open(
        dir,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    ) else {
        return false;
    };
    rustix::fs::flock(&fd, FlockOperation::NonBlockingLockExclusive)
        == Err(rustix::io::Errno::WOULDBLOCK)
}

/// Whether `name` is a seccomp directory of an older kaged (`private_dir("kaged-seccomp")`).
fn is_seccomp_dir_name(name: &str) -> bool {
    name.strip_prefix("kaged-seccomp-")
        .is_some_and(|rest| !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// Sweep the leftovers of the runs `runs` (those its storage says were left unfinished),
/// the egress sockets in `egress_dir` (older kaged), runs' egress directories under the
/// temporary directory whose proxy is gone and whose run's holder is gone too (see
/// [`hold_egress_dir`]), and this user's old seccomp directories there. Call it only while no
/// other daemon can use `egress_dir` (the runtime directory's lock held) and before any run
/// starts.
pub fn sweep(runs: &[&str], egress_dir: &Path) -> Swept {
    let mut swept = Swept::default();
    let alive = |pid: u32| Path::new(&format!("/proc/{pid}")).exists();
    for root in crate::cgroup::roots() {
        let Ok(entries) = std::fs::read_dir(&root) else {
            continue;
        };
        for entry in entries.flatten() {
            let Some(name) = entry.file_name().to_str().map(str::to_string) else {
                continue;
            };
            let dir = entry.path();
            match judge(&name, runs, alive) {
                Verdict::Keep => {}
                Verdict::RemoveEmpty => {
                    swept.cgroups += usize::from(std::fs::remove_dir(&dir).is_ok())
                }
                Verdict::KillAndRemove => {
                    // A killed process leaves its group a moment later.
                    for _ in 0..40 {
                        swept.killed += crate::pidfd::kill_cgroup(&dir);
                        if std::fs::remove_dir(&dir).is_ok() {
                            swept.cgroups += 1;
                            break;
                        }
                        std::thread::sleep(std::time::Duration::from_millis(50));
                    }
                }
            }
        }
    }
    if let Ok(entries) = std::fs::read_dir(egress_dir) {
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_socket())
                && entry.file_name().to_string_lossy().ends_with(".sock")
                && std::fs::remove_file(entry.path()).is_ok()
            {
                swept.sockets += 1;
            }
        }
    }
    let uid = rustix::process::geteuid().as_raw();
    if let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) {
        for entry in entries.flatten() {
            let path = entry.path();
            // Not followed: a link or someone else's directory is not ours to remove.
            let name = entry.file_name().to_string_lossy().into_owned();
            let Ok(meta) = std::fs::symlink_metadata(&path) else {
                continue;
            };
            // A daemon's copy of kaged whose daemon is gone (a live one is still bound).
            if crate::helper::owner_pid(&name).is_some_and(|pid| !alive(pid))
                && meta.is_dir()
                && meta.uid() == uid
                && std::fs::remove_dir_all(&path).is_ok()
            {
                swept.helper_copies += 1;
            }
            if is_seccomp_dir_name(&name)
                && meta.is_dir()
                && meta.uid() == uid
                && std::fs::remove_dir_all(&path).is_ok()
            {
                swept.seccomp_dirs += 1;
            }
            // A run's egress directory (its owner is the cage's user when kaged is root) whose
            // socket nobody listens on any more: a live proxy (another daemon's, a running
            // `kaged cage run`) answers the connection and is kept, and so is the directory of
            // a run a stopped daemon left to its holder (the cage has it bound; the next start
            // of that daemon serves its proxy there again).
            if is_egress_dir_name(&name)
                && meta.is_dir()
                && (meta.uid() == uid || uid == 0)
                && std::os::unix::net::UnixStream::connect(path.join("egress.sock")).is_err()
                && !egress_dir_held(&path)
                && std::fs::remove_dir_all(&path).is_ok()
            {
                swept.sockets += 1;
            }
        }
    }
    swept
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_groups_provably_left_by_a_dead_kaged_are_swept() {
        let alive = |pid: u32| pid == 10;
        let runs = ["0123456789abcdef"];
        let cases = [
            ("kaged-0123456789abcdef", Verdict::KillAndRemove),
            // Another daemon's run, maybe still going.
            ("kaged-fedcba9876543210", Verdict::Keep),
            ("kaged-run-11", Verdict::KillAndRemove),
            ("kaged-run-10", Verdict::Keep),
            ("kaged-run-x1", Verdict::Keep),
            ("kaged-probe-11", Verdict::RemoveEmpty),
            ("kaged-probe-10", Verdict::Keep),
            ("kaged-probe-", Verdict::Keep),
            ("kaged-", Verdict::Keep),
            ("system.slice", Verdict::Keep),
            ("kagedx-0123456789abcdef", Verdict::Keep),
        ];
        for (name, verdict) in cases {
            assert_eq!(judge(name, &runs, alive), verdict, "{name}");
        }
    }

    #[test]
    fn a_held_egress_directory_is_seen_held_until_let_go() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("kaged-egress-00112233aabbccdd");
        std::fs::create_dir(&dir).unwrap();
        assert!(!egress_dir_held(&dir));
        let held = hold_egress_dir(&dir).unwrap();
        assert!(egress_dir_held(&dir));
        // Another holder's shared hold is fine; a link is never followed.
        let again = hold_egress_dir(&dir).unwrap();
        drop(held);
        assert!(egress_dir_held(&dir));
        drop(again);
        assert!(!egress_dir_held(&dir));
        let link = root.path().join("kaged-egress-ff");
        std::os::unix::fs::symlink(&dir, &link).unwrap();
        assert!(hold_egress_dir(&link).is_err());
    }

    #[test]
    fn seccomp_directories_are_recognized_by_name() {
        assert!(is_seccomp_dir_name("kaged-seccomp-00ff12ab34cd56ef"));
        assert!(!is_seccomp_dir_name("kaged-seccomp-"));
        assert!(!is_seccomp_dir_name("kaged-seccomp-../x"));
        assert!(!is_seccomp_dir_name("kaged-egress-00ff"));
        assert!(is_egress_dir_name("kaged-egress-00ff"));
        assert!(!is_egress_dir_name("kaged-egress-../x"));
    }

    #[test]
    fn the_report_counts_what_went() {
        let swept = Swept {
            cgroups: 2,
            killed: 1,
            sockets: 1,
            seccomp_dirs: 3,
            helper_copies: 1,
        };
        assert_eq!(
            swept.to_string(),
            "2 cgroups (1 process killed), 1 egress socket, 3 seccomp directories, 1 helper copy"
        );
        assert!(Swept::default().is_empty() && !swept.is_empty());
    }
}
