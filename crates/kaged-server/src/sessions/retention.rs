//! Transcript retention: the `[sessions]` limits applied to the transcripts on disk (at start,
//! hourly, and on `POST /api/v1/sessions/prune`). Which transcripts go is decided by
//! `kaged_session::retention::plan`; this edge measures, deletes, marks the rows and audits.

use std::time::Duration;

use kaged_session::retention::{Cap, Kept, Limits, plan};
use serde_json::{Value, json};

use super::{RunSettings, Sessions, transcript};
use crate::audit::{AuditRecord, now_ms};
use crate::error::ApiError;

/// How often retention runs while the daemon is up.
pub(crate) const PRUNE_EVERY: Duration = Duration::from_secs(3600);

const MIB: u64 = 1024 * 1024;
const DAY_MS: i64 = 86_400_000;

/// One pass at a time (the hourly one and an operator's may meet).
static PRUNING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The per-transcript cap of new runs (`[sessions] transcript_max_mb`).
pub(crate) fn cap(settings: &RunSettings) -> Cap {
    Cap::of(settings.transcript_max_mb.saturating_mul(MIB))
}

fn limits(s: &RunSettings) -> Limits {
    Limits {
        max_total_bytes: s.sessions_max_total_mb.saturating_mul(MIB),
        max_age_ms: i64::try_from(s.sessions_max_age_days)
            .unwrap_or(i64::MAX)
            .saturating_mul(DAY_MS),
    }
}

/// Record a run's final output length and what its cap dropped, in its row (called by the
/// run's thread once the output ended).
pub(crate) fn record_extent(
    store: &kaged_store::Store,
    id: &str,
    writer: &transcript::Writer,
    handle: &tokio::runtime::Handle,
) {
    let (bytes, dropped) = (writer.written(), writer.dropped());
    if let Some((from, to)) = dropped {
        tracing::info!(session = %id, from, to, "the transcript cap dropped the middle of this run's output");
    }
    if let Err(e) = handle.block_on(store.set_transcript_extent(id.to_string(), bytes, dropped)) {
        tracing::error!(session = %id, error = %e, "cannot record the transcript's extent");
    }
}

/// Apply the limits: every ended session's transcript older than `max_age_days`, then the
/// oldest ended ones while all transcripts exceed `max_total_mb`. Live runs are never
/// touched. Each deletion marks the row and writes a `session.transcript.pruned` record;
/// `dry_run` only reports. Returns the report the API answers with.
pub(crate) async fn prune(
    sessions: &Sessions,
    dry_run: bool,
    actor: &str,
    source: Option<String>,
) -> Result<Value, ApiError> {
    let _one = PRUNING.lock().await;
    let deps = sessions.deps();
    let settings = &deps.settings;
    let limits = limits(settings);
    let rows = deps.store.kept_transcripts().await?;
    let live = sessions.producing();
    let paths: Vec<_> = rows
        .iter()
        .map(|r| sessions.transcript_path(&r.id))
        .collect();
    let sizes = tokio::task::spawn_blocking(move || {
        paths
            .iter()
            .map(|p| transcript::disk_bytes(p))
            .collect::<Vec<_>>()
    })
    .await
    .map_err(|e| ApiError::internal(e.to_string()))?;
    let kept: Vec<Kept> = rows
        .iter()
        .zip(&sizes)
        .map(|(r, bytes)| Kept {
            id: r.id.clone(),
            ended_at_ms: r.ended_at_ms,
            live: live.contains(&r.id),
            bytes: *bytes,
        })
        .collect();
    let total_before: u64 = sizes.iter().sum();
    let now = now_ms();
    let chosen = plan(&kept, limits, now);
    let mut total_after = total_before;
    let mut pruned = Vec::new();
    for p in &chosen {
        let Some(row) = rows.iter().find(|r| r.id == p.id) else {
            continue;
        };
        let entry = json!({
            "session": row.id,
            "project": row.project,
            "bytes": p.bytes,
            "why": p.why.as_str(),
            "ended_at_ms": row.ended_at_ms,
        });
        if dry_run {
            total_after = total_after.saturating_sub(p.bytes);
            pruned.push(entry);
            continue;
        }
        let path = sessions.transcript_path(&row.id);
        let removed = tokio::task::spawn_blocking(move || {
            let output = transcript::pieces(&path).map_or(0, |(p, _)| p.end());
            transcript::remove(&path).map(|()| output)
        })
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?;
        let output_bytes = match removed {
            Ok(n) => row.output_bytes.unwrap_or(0).max(n),
            Err(e) => {
                tracing::error!(session = %row.id, error = %e, "cannot delete a transcript retention chose");
                continue;
            }
        };
        deps.store
            .mark_transcript_pruned(row.id.clone(), now, output_bytes)
            .await?;
        deps.audit
            .record(AuditRecord {
                kind: "session.transcript.pruned",
                success: true,
                identity: Some(actor.to_string()),
                source: source.clone(),
                detail: json!({
                    "session": row.id,
                    "project": row.project,
                    "bytes": p.bytes,
                    "output_bytes": output_bytes,
                    "why": p.why.as_str(),
                    "ended_at_ms": row.ended_at_ms,
                    "max_total_mb": settings.sessions_max_total_mb,
                    "max_age_days": settings.sessions_max_age_days,
                }),
            })
            .await;
        total_after = total_after.saturating_sub(p.bytes);
        pruned.push(entry);
    }
    if !dry_run && !pruned.is_empty() {
        tracing::info!(
            count = pruned.len(),
            freed = total_before - total_after,
            total = total_after,
            "transcript retention pruned the oldest ended sessions' transcripts"
        );
    }
    Ok(json!({
        "dry_run": dry_run,
        "max_total_mb": settings.sessions_max_total_mb,
        "max_age_days": settings.sessions_max_age_days,
        "total_bytes_before": total_before,
        "total_bytes_after": total_after,
        "pruned": pruned,
    }))
}
