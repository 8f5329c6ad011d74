use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kaged_session::{Throttle, Verdict};
use kaged_store::{AuditEvent, Store};
use serde_json::json;

use crate::state::lock;

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// An event about to be recorded.
pub struct AuditRecord {
    pub kind: &'static str,
    pub success: bool,
    pub identity: Option<String>,
    pub source: Option<String>,
    pub detail: serde_json::Value,
}

/// Records of one kind and key passing at once before [`AuditLog::record_limited`] holds
/// them back, and then one per [`LIMITED_EVERY`].
const LIMITED_BURST: u32 = 10;
const LIMITED_EVERY: Duration = Duration::from_secs(6);
/// Kinds and keys throttled one by one; beyond, they share one bucket.
const LIMITED_KEYS: usize = 1024;

/// The audit trail: an append-only JSON-lines file (0600) and the `audit_events` table.
#[derive(Clone)]
pub struct AuditLog {
    path: PathBuf,
    file: Arc<Mutex<File>>,
    store: Store,
    throttle: Arc<Mutex<Throttle<(&'static str, String)>>>,
}

impl AuditLog {
    pub fn open(path: &Path, store: Store) -> std::io::Result<Self> {
        if let Some(dir) = path.parent()
            && !dir.exists()
        {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)?;
        }
        let file = OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o600)
            .open(path)?;
        Ok(AuditLog {
            path: path.to_path_buf(),
            file: Arc::new(Mutex::new(file)),
            store,
            throttle: Arc::new(Mutex::new(Throttle::new(
                LIMITED_BURST,
                LIMITED_EVERY,
                LIMITED_KEYS,
            ))),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Record an event that something outside the operator's hands can repeat at will (a run
    /// rewriting its project file, a client failing to authenticate, repeated kills), at most
    /// a burst and then one per interval per `kind` and `key`. What is held back is counted in
    /// an `audit.suppressed` record: before the next one that passes, or once the key is quiet.
    pub async fn record_limited(&self, key: &str, r: AuditRecord) {
        let verdict = lock(&self.throttle).check(&(r.kind, key.to_owned()), Instant::now());
        match verdict {
            Verdict::Suppress => {
                tracing::debug!(kind = r.kind, key, "audit record held back (rate limit)");
            }
            Verdict::Record { suppressed } => {
                if suppressed > 0 {
                    self.suppressed(r.kind, Some(key), suppressed).await;
                }
                self.record(r).await;
            }
        }
    }

    async fn suppressed(&self, kind: &str, key: Option<&str>, count: u64) {
        self.write(AuditRecord {
            kind: "audit.suppressed",
            success: true,
            identity: None,
            source: None,
            detail: json!({"kind": kind, "key": key, "count": count}),
        })
        .await;
    }

    /// Record an event in both places. A failure is logged loudly but does not fail the caller:
    /// refusing logins because the disk is full would lock the operator out of their own daemon.
    pub async fn record(&self, r: AuditRecord) {
        // Any record reports what quiet throttled keys still held back.
        let held = lock(&self.throttle).quiet(Instant::now());
        for (key, count) in held {
            let (kind, key) = match &key {
                Some((kind, key)) => (*kind, Some(key.as_str())),
                None => ("(several)", None),
            };
            self.suppressed(kind, key, count).await;
        }
        self.write(r).await;
    }

    async fn write(&self, r: AuditRecord) {
        let event = AuditEvent {
            ts_ms: now_ms(),
            kind: r.kind.to_string(),
            outcome: if r.success { "success" } else { "failure" }.to_string(),
            identity: r.identity,
            source: r.source,
            detail: r.detail,
        };
        let line = json!({
            "time": rfc3339_utc(event.ts_ms),
            "ts_ms": event.ts_ms,
            "kind": event.kind,
            "outcome": event.outcome,
            "identity": event.identity,
            "source": event.source,
            "detail": event.detail,
        });
        {
            let mut f = lock(&self.file);
            if let Err(e) = writeln!(f, "{line}").and_then(|()| f.flush()) {
                tracing::error!(path = %self.path.display(), error = %e, "cannot write the audit log file");
            }
        }
        if let Err(e) = self.store.append_audit(event).await {
            tracing::error!(error = %e, "cannot write the audit_events table");
        }
    }
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ` for a Unix time in milliseconds (proleptic Gregorian, UTC).
pub fn rfc3339_utc(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let millis = ms.rem_euclid(1000);
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        sod / 3600,
        sod % 3600 / 60,
        sod % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_utc_timestamps() {
        assert_eq!(rfc3339_utc(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_utc(951_782_400_123), "2000-02-29T00:00:00.123Z");
        assert_eq!(rfc3339_utc(1_795_435_200_000), "2026-11-23T12:00:00.000Z");
    }
}
