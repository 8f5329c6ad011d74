//! The audit sink (`AuditLog`): every record goes to the JSON-lines audit file and the
//! append-only `audit_events` table; repeatable records are throttled and counted.

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
/// Kinds named one by one in an `audit.lost` record; beyond, counted under `(other)`.
const LOST_KINDS: usize = 32;

/// Audit records that could not be written (storage failing), reported in one `audit.lost`
/// record once writes work again. Only counts are kept, never the records.
#[derive(Default)]
struct Lost {
    /// Records that missed the file, the table, or both.
    count: u64,
    file: u64,
    table: u64,
    kinds: std::collections::BTreeMap<String, u64>,
    first_ms: i64,
    last_ms: i64,
}

/// The audit trail: an append-only JSON-lines file (0600) and the `audit_events` table.
#[derive(Clone)]
pub struct AuditLog {
    path: PathBuf,
    file: Arc<Mutex<File>>,
    store: Store,
    throttle: Arc<Mutex<Throttle<(&'static str, String)>>>,
    lost: Arc<Mutex<Lost>>,
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
            lost: Arc::new(Mutex::new(Lost::default())),
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
        if lock(&self.lost).count > 0 && self.store.health().is_ok() {
            self.report_lost().await;
        }
        self.write(r).await;
    }

    /// Audit records lost since the last `audit.lost` record.
    pub fn lost_count(&self) -> u64 {
        lock(&self.lost).count
    }

    /// Write one `audit.lost` record for the records that could not be written (called once
    /// storage takes writes again); nothing when none was lost. If it fails too, the counts
    /// are kept for the next try.
    pub async fn report_lost(&self) {
        let lost = std::mem::take(&mut *lock(&self.lost));
        if lost.count == 0 {
            return;
        }
        let ok = self
            .write(AuditRecord {
                kind: "audit.lost",
                success: false,
                identity: None,
                source: None,
                detail: json!({
                    "count": lost.count,
                    "file": lost.file,
                    "table": lost.table,
                    "kinds": lost.kinds,
                    "first_ms": lost.first_ms,
                    "last_ms": lost.last_ms,
                    "reason": "storage was failing (see the daemon log); these records were not written",
                }),
            })
            .await;
        if !ok {
            // The failed write counted itself; fold the earlier counts back in.
            let mut now = lock(&self.lost);
            now.count += lost.count;
            now.file += lost.file;
            now.table += lost.table;
            if lost.first_ms != 0 {
                now.first_ms = lost.first_ms;
            }
            for (kind, n) in lost.kinds {
                note_kind(&mut now.kinds, &kind, n);
            }
        }
    }

    fn note_lost(&self, kind: &str, file: bool, table: bool, at_ms: i64) {
        let mut lost = lock(&self.lost);
        lost.count += 1;
        lost.file += u64::from(file);
        lost.table += u64::from(table);
        if lost.first_ms == 0 {
            lost.first_ms = at_ms;
        }
        lost.last_ms = at_ms;
        note_kind(&mut lost.kinds, kind, 1);
    }

    /// `true` when the record reached both the file and the table.
    async fn write(&self, r: AuditRecord) -> bool {
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
        let (kind, ts_ms) = (event.kind.clone(), event.ts_ms);
        let file_lost = {
            let mut f = lock(&self.file);
            // One write per line: no other record's bytes between a line and its newline.
            match f
                .write_all(format!("{line}\n").as_bytes())
                .and_then(|()| f.flush())
            {
                Ok(()) => false,
                Err(e) => {
                    tracing::error!(path = %self.path.display(), error = %e, "cannot write the audit log file");
                    true
                }
            }
        };
        let table_lost = match self.store.append_audit(event).await {
            Ok(_) => false,
            Err(e) => {
                tracing::error!(error = %e, "cannot write the audit_events table");
                true
            }
        };
        if file_lost || table_lost {
            self.note_lost(&kind, file_lost, table_lost, ts_ms);
        }
        !(file_lost || table_lost)
    }
}

fn note_kind(kinds: &mut std::collections::BTreeMap<String, u64>, kind: &str, n: u64) {
    let key = if kinds.contains_key(kind) || kinds.len() < LOST_KINDS {
        kind
    } else {
        "(other)"
    };
    *kinds.entry(key.to_string()).or_default() += n;
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
