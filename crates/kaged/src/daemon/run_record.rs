//! Start-up step 8 and the end of step 13: the audit log opened, this run recorded in
//! `daemon_runs` and audited (`daemon.start`, `daemon.stop`); a previous run that never
//! recorded its stop is reported.

use std::net::SocketAddr;

use anyhow::{Context, Result};
use kaged_config::{ModeDecision, Settings};
use kaged_server::{AuditLog, AuditRecord, now_ms};
use kaged_store::{DaemonRun, Store};
use serde_json::json;

use crate::host;
use crate::runtime::Discovery;

/// This daemon's run: what it recorded at start, to close the record at stop.
pub(super) struct RunRecord {
    pub(super) audit: AuditLog,
    run: DaemonRun,
    pub(super) pid: u32,
    pub(super) version: String,
    pub(super) started_at_ms: i64,
    /// `user:NAME` of the daemon's user: the local operator's identity.
    pub(super) operator: String,
}

impl RunRecord {
    /// Open the audit log (`[log] audit` and the `audit_events` table), record the start, and
    /// audit it with the address the daemon listens on (`local`).
    pub(super) async fn begin(
        settings: &Settings,
        store: &Store,
        decision: &ModeDecision,
        uid: u32,
        local: SocketAddr,
    ) -> Result<RunRecord> {
        let audit_path = match &settings.log_audit {
            kaged_config::AuditSink::File(p) => p.clone(),
        };
        let audit = AuditLog::open(&audit_path, store.clone())
            .with_context(|| format!("cannot open the audit log {}", audit_path.display()))?;
        let started_at_ms = now_ms();
        let pid = std::process::id();
        let version = env!("CARGO_PKG_VERSION").to_string();
        let (run, unclean) = store
            .begin_run(
                pid,
                version.clone(),
                decision.mode.to_string(),
                started_at_ms,
            )
            .await?;
        if let Some(prev) = unclean {
            tracing::warn!(
                previous_pid = prev.pid,
                "the previous kaged (pid {}) did not shut down cleanly",
                prev.pid
            );
        }
        let operator = format!("user:{}", host::user_name(uid));
        audit
            .record(AuditRecord {
                kind: "daemon.start",
                success: true,
                identity: Some(operator.clone()),
                source: None,
                detail: json!({"pid": pid, "version": version, "mode": decision.mode, "bind": local.to_string()}),
            })
            .await;
        Ok(RunRecord {
            audit,
            run,
            pid,
            version,
            started_at_ms,
            operator,
        })
    }

    /// What `daemon.json` says about this daemon, reachable at `url`.
    pub(super) fn discovery(&self, url: &str) -> Discovery {
        Discovery {
            pid: self.pid,
            url: url.to_string(),
            version: self.version.clone(),
            started_at_ms: self.started_at_ms,
        }
    }

    /// Audit the stop (`signal` asked for it) and record it: the next start finds a clean stop.
    pub(super) async fn end(&self, store: &Store, signal: &str) -> Result<()> {
        self.audit
            .record(AuditRecord {
                kind: "daemon.stop",
                success: true,
                identity: None,
                source: None,
                detail: json!({"pid": self.pid, "signal": signal}),
            })
            .await;
        store.end_run(self.run.id, now_ms()).await?;
        Ok(())
    }
}
