//! A run's egress proxy: the allowlist served on a socket of the run's own, and its decisions
//! aggregated into the audit trail (`cage.egress`, `cage.egress.summary`).

use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use super::Sessions;
use super::live::Live;
use crate::audit::AuditRecord;

/// How long the end of a run waits for its last egress records (the final summary).
const EGRESS_AUDIT_GRACE: Duration = Duration::from_secs(10);

/// A run's egress proxy (stopped when dropped), its decisions aggregated into the audit trail.
pub(crate) struct EgressRun {
    pub(crate) proxy: kaged_egress::RunningProxy,
    audit: tokio::task::JoinHandle<()>,
    /// Declared after `proxy`: dropped after it removed the socket.
    _dir: EgressDir,
}

/// A run's (or a plugin's) egress directory, holding only the proxy's socket; the cage gets
/// the directory. Removed (once empty) when dropped, unless kept.
pub(crate) struct EgressDir(Option<PathBuf>);

impl EgressDir {
    /// A new private directory. Not below the runtime directory: bwrap resolves a bound
    /// descriptor's path as the cage's user, who may be another than the daemon's and could
    /// not enter it.
    pub(crate) fn create() -> Result<EgressDir, String> {
        kaged_spawn::private_dir("kaged-egress")
            .map(|dir| EgressDir(Some(dir)))
            .map_err(|e| format!("cannot create the egress directory: {e}"))
    }

    /// Where the proxy's socket goes.
    pub(crate) fn socket(&self) -> PathBuf {
        self.0.as_deref().unwrap_or(Path::new("")).join(SOCKET)
    }

    /// Leave the directory: the run goes on without this daemon, and its cage's bind mount
    /// is that very directory, so the next daemon serves the proxy in it again.
    fn keep(mut self) {
        self.0 = None;
    }
}

impl Drop for EgressDir {
    fn drop(&mut self) {
        if let Some(dir) = self.0.take() {
            let _ = std::fs::remove_dir(dir);
        }
    }
}

/// The proxy's socket in a run's egress directory (the cage sees the directory at
/// `/run/kaged/egress`).
const SOCKET: &str = "egress.sock";

impl EgressRun {
    pub(crate) fn start(
        sessions: &Sessions,
        live: &Arc<Live>,
        allow: &[String],
        handle: &tokio::runtime::Handle,
    ) -> Result<EgressRun, String> {
        let dir = EgressDir::create()?;
        let socket = dir.socket();
        Self::serve(sessions, live, &socket, allow, handle, dir)
    }

    /// Serve a run's proxy again, for a run an earlier daemon let go of (or lost by a crash):
    /// in the directory its cage has bound (`dir`, from its holder), with the allowlist it
    /// started with. The directory must still be what the earlier daemon made: a real 0700
    /// directory of this daemon's user, or under a root daemon of the cage's user (that of
    /// the run's process, `run_pid`); a stale socket in it is replaced, anything else there is left alone and
    /// refused. Removed with the proxy when the run ends.
    pub(crate) fn resume(
        sessions: &Sessions,
        live: &Arc<Live>,
        dir: &Path,
        allow: &[String],
        run_pid: u32,
        handle: &tokio::runtime::Handle,
    ) -> Result<EgressRun, String> {
        if allow.is_empty() {
            return Err("its holder does not say which allowlist the run started with (a holder of an older kaged)".into());
        }
        let euid = rustix::process::geteuid().as_raw();
        let cage_uid = if euid == 0 {
            process_uid(run_pid)
        } else {
            None
        };
        let owner = kept_dir_owner(dir, euid, cage_uid)?;
        let socket = dir.join(SOCKET);
        match std::fs::symlink_metadata(&socket) {
            Ok(meta) if meta.file_type().is_socket() => {
                std::fs::remove_file(&socket).map_err(|e| {
                    format!("cannot remove the stale socket {}: {e}", socket.display())
                })?;
            }
            Ok(_) => {
                return Err(format!("{} is not a socket; left alone", socket.display()));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(format!("cannot look at {}: {e}", socket.display())),
        }
        let run = Self::serve(
            sessions,
            live,
            &socket,
            allow,
            handle,
            EgressDir(Some(dir.to_path_buf())),
        )?;
        // The cage connects as its own user, as when the run started (kaged_spawn::caged).
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::lchown(&socket, Some(uid), Some(gid))
                .map_err(|e| format!("cannot hand {} to the cage's user: {e}", socket.display()))?;
        }
        Ok(run)
    }

    fn serve(
        sessions: &Sessions,
        live: &Arc<Live>,
        socket: &Path,
        allow: &[String],
        handle: &tokio::runtime::Handle,
        dir: EgressDir,
    ) -> Result<EgressRun, String> {
        let (proxy, decisions) = {
            let _guard = handle.enter();
            kaged_egress::RunningProxy::start(socket, allow).map_err(|e| e.to_string())?
        };
        let audit = handle.spawn(audit_egress(sessions.clone(), live.clone(), decisions));
        Ok(EgressRun {
            proxy,
            audit,
            _dir: dir,
        })
    }

    /// Stop the proxy and wait for its final summary, so it is recorded before the run's end.
    pub(crate) fn stop(self, handle: &tokio::runtime::Handle) {
        let EgressRun { proxy, audit, _dir } = self;
        drop(proxy);
        drop(_dir);
        // The timer is made inside the runtime: outside, tokio has no clock to give it.
        let _ = handle.block_on(async { tokio::time::timeout(EGRESS_AUDIT_GRACE, audit).await });
    }

    /// The daemon lets go of the run (it stops and keeps it): the proxy stops (until the
    /// next daemon serves it again, the cage's connections are refused) and its summary is
    /// recorded, but the directory stays: the cage's bind mount is that directory.
    pub(crate) async fn let_go(self) {
        let EgressRun { proxy, audit, _dir } = self;
        drop(proxy);
        _dir.keep();
        let _ = tokio::time::timeout(EGRESS_AUDIT_GRACE, audit).await;
    }
}

/// The real UID of process `pid` (a run's cage: never root when kaged is).
fn process_uid(pid: u32) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Whether `dir` is still a run's egress directory as kaged made it (not followed if a
/// link): a directory named `kaged-egress-HEX`, mode 0700, owned by this daemon's user
/// (`euid`) or, under a root daemon, by the cage's user. The owner to hand the new socket
/// to when it is not the daemon's user.
fn kept_dir_owner(
    dir: &Path,
    euid: u32,
    cage_uid: Option<u32>,
) -> Result<Option<(u32, u32)>, String> {
    use std::os::unix::fs::MetadataExt;
    let named = dir.is_absolute()
        && dir
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_prefix("kaged-egress-"))
            .is_some_and(|hex| !hex.is_empty() && hex.bytes().all(|b| b.is_ascii_hexdigit()));
    if !named {
        return Err(format!("{} is not a run's egress directory", dir.display()));
    }
    let meta = std::fs::symlink_metadata(dir)
        .map_err(|e| format!("its egress directory {} is gone: {e}", dir.display()))?;
    if !meta.file_type().is_dir() {
        return Err(format!("{} is no longer a directory", dir.display()));
    }
    if meta.mode() & 0o7777 != 0o700 {
        return Err(format!(
            "{} has mode {:o}, not 0700",
            dir.display(),
            meta.mode() & 0o7777
        ));
    }
    match meta.uid() {
        uid if uid == euid => Ok(None),
        uid if euid == 0 && uid != 0 && Some(uid) == cage_uid => Ok(Some((uid, meta.gid()))),
        uid => Err(format!(
            "{} belongs to uid {uid}, neither kaged's user nor the cage's",
            dir.display()
        )),
    }
}

/// Audit a run's egress: the first distinct destinations one `cage.egress` record each, then
/// `cage.egress.summary` records (every minute while there is something new, and at the end)
/// with the counts, so a cage hammering its proxy cannot flood the trail.
async fn audit_egress(sessions: Sessions, live: Arc<Live>, decisions: kaged_egress::Decisions) {
    let audit = &sessions.deps().audit;
    let info = live.info();
    kaged_egress::aggregate(decisions, |report| async move {
        let (kind, success, detail) = match report {
            kaged_egress::Report::Decision(d) => (
                "cage.egress",
                d.allowed,
                json!({
                    "session": info.id,
                    "project": info.project,
                    "method": d.method,
                    "host": d.host,
                    "port": d.port,
                    "decision": if d.allowed { "allowed" } else { "refused" },
                    "reason": d.reason,
                }),
            ),
            kaged_egress::Report::Summary(s) => (
                "cage.egress.summary",
                s.totals.refused == 0,
                json!({
                    "session": info.id,
                    "project": info.project,
                    "final": s.is_final,
                    "totals": {
                        "allowed": s.totals.allowed,
                        "refused": s.totals.refused,
                        "dropped": s.totals.dropped,
                    },
                    "since_last": s.since_last,
                    "destinations": s.destinations.iter().map(|(d, count)| json!({
                        "decision": if d.allowed { "allowed" } else { "refused" },
                        "method": d.method,
                        "host": d.host,
                        "port": d.port,
                        "count": count,
                    })).collect::<Vec<_>>(),
                    "others": {
                        "destinations": s.others.destinations,
                        "count": s.others.count,
                        "untracked": s.others.untracked,
                    },
                }),
            ),
        };
        audit
            .record(AuditRecord {
                kind,
                success,
                identity: Some(info.created_by.clone()),
                source: None,
                detail,
            })
            .await;
    })
    .await;
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    use super::*;

    fn egress_dir(root: &Path, mode: u32) -> PathBuf {
        let dir = root.join("kaged-egress-00112233aabbccdd");
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(mode)).unwrap();
        dir
    }

    #[test]
    fn a_kept_egress_directory_is_served_again_only_as_kaged_made_it() {
        let root = tempfile::tempdir().unwrap();
        let dir = egress_dir(root.path(), 0o700);
        let me = std::fs::metadata(&dir).unwrap().uid();
        assert_eq!(kept_dir_owner(&dir, me, None), Ok(None));
        // Under a root daemon, the cage's user owns it: the socket is handed to that user.
        if me == 0 {
            std::os::unix::fs::chown(&dir, Some(65534), Some(65534)).unwrap();
            assert_eq!(
                kept_dir_owner(&dir, 0, Some(65534)),
                Ok(Some((65534, 65534)))
            );
            assert!(
                kept_dir_owner(&dir, 0, Some(1234)).is_err(),
                "not the cage's"
            );
            assert!(kept_dir_owner(&dir, 0, None).is_err(), "no cage user known");
            std::os::unix::fs::chown(&dir, Some(0), Some(0)).unwrap();
        } else {
            assert_eq!(
                kept_dir_owner(&dir, 0, Some(me)),
                Ok(Some((me, std::fs::metadata(&dir).unwrap().gid())))
            );
            assert!(kept_dir_owner(&dir, 0, None).is_err(), "no cage user known");
        }
        assert!(
            kept_dir_owner(&dir, me + 1, Some(me + 2)).is_err(),
            "another user's"
        );

        let other = root.path().join("kaged-egress-ffff");
        std::os::unix::fs::symlink(&dir, &other).unwrap();
        let refused = kept_dir_owner(&other, me, None).unwrap_err();
        assert!(refused.contains("no longer a directory"), "{refused}");

        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let refused = kept_dir_owner(&dir, me, None).unwrap_err();
        assert!(refused.contains("mode 755"), "{refused}");

        let misnamed = root.path().join("elsewhere");
        std::fs::create_dir(&misnamed).unwrap();
        assert!(kept_dir_owner(&misnamed, me, None).is_err());
        assert!(
            kept_dir_owner(Path::new("kaged-egress-00"), me, None).is_err(),
            "relative"
        );
        let gone = kept_dir_owner(&root.path().join("kaged-egress-0123"), me, None).unwrap_err();
        assert!(gone.contains("is gone"), "{gone}");
    }

    #[test]
    fn the_uid_of_a_process_is_read_from_proc() {
        let me = std::fs::metadata("/proc/self").unwrap().uid();
        assert_eq!(process_uid(std::process::id()), Some(me));
        assert_eq!(process_uid(u32::MAX), None);
    }
}
