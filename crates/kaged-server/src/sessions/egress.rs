//! A run's egress proxy: the allowlist served on a socket of the run's own, and its decisions
//! aggregated into the audit trail (`cage.egress`, `cage.egress.summary`).

use std::path::PathBuf;
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
    _dir: RemoveDir,
}

/// The run's egress directory, removed (once empty) when dropped.
struct RemoveDir(PathBuf);

impl Drop for RemoveDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.0);
    }
}

impl EgressRun {
    pub(crate) fn start(
        sessions: &Sessions,
        live: &Arc<Live>,
        allow: &[String],
        handle: &tokio::runtime::Handle,
    ) -> Result<EgressRun, String> {
        // A private directory of the run's own holding only its socket; the cage gets the
        // directory. Not below the runtime directory: bwrap resolves a bound descriptor's path
        // as the cage's user, who may be another than the daemon's and could not enter it.
        let dir = kaged_spawn::private_dir("kaged-egress")
            .map_err(|e| format!("cannot create the egress directory: {e}"))?;
        let dir = RemoveDir(dir);
        let socket = dir.0.join("egress.sock");
        let (proxy, decisions) = {
            let _guard = handle.enter();
            kaged_egress::RunningProxy::start(&socket, allow).map_err(|e| e.to_string())?
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
