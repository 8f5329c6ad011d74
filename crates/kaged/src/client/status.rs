//! `kaged status`: the running daemon's status document, as a table or as JSON.

use kaged_config::DeploymentMode;
use serde_json::Value;

use super::transport::{call, target};
use crate::Failure;

/// A duration for people: `42s`, `3m 07s`, `2h 05m`, `1d 03h`.
pub(super) fn duration(secs: u64) -> String {
    match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m {:02}s", s / 60, s % 60),
        s if s < 86_400 => format!("{}h {:02}m", s / 3600, s % 3600 / 60),
        s => format!("{}d {:02}h", s / 86_400, s % 86_400 / 3600),
    }
}

pub async fn status(mode_flag: Option<DeploymentMode>, as_json: bool) -> Result<(), Failure> {
    let target = target(mode_flag)?;
    let s = call(&target, reqwest::Method::GET, "/api/v1/status", None).await?;
    if as_json {
        println!("{}", serde_json::to_string_pretty(&s).unwrap_or_default());
        return Ok(());
    }
    let text = |v: &Value| match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    };
    println!(
        "kaged {} is running (pid {}, up {})",
        text(&s["version"]),
        text(&s["pid"]),
        duration(s["uptime_secs"].as_u64().unwrap_or(0))
    );
    let mode = match s["mode"].as_str() {
        Some("system") => "system-wide",
        Some("user") => "per-user",
        _ => "unknown",
    };
    let rows = [
        ("mode", format!("{mode} ({})", text(&s["mode_reason"]))),
        ("url", text(&s["url"])),
        (
            "bind",
            s["listeners"]
                .as_array()
                .map(|l| l.iter().map(text).collect::<Vec<_>>().join(", "))
                .unwrap_or_else(|| text(&s["bind"])),
        ),
        (
            "auth",
            match s["auth"].as_str() {
                Some("launch_url") => "launch URL + session cookie".to_string(),
                Some("sidecar") => "sidecar header contract".to_string(),
                Some("insecure") => "NONE (--insecure)".to_string(),
                _ => text(&s["auth"]),
            },
        ),
        (
            "sandbox",
            match (s["sandbox"]["problem"].as_str(), s["sandbox_mode"].as_str()) {
                (Some(problem), _) => format!("UNAVAILABLE: {problem} (kaged doctor)"),
                (None, Some("enabled")) => format!(
                    "enabled; {}",
                    s["sandbox"]["limits"].as_str().unwrap_or("limits unknown")
                ),
                _ => text(&s["sandbox_mode"]),
            },
        ),
        ("config", text(&s["paths"]["config_file"])),
        ("data", text(&s["paths"]["data_dir"])),
        ("runtime", text(&s["paths"]["runtime_dir"])),
        (
            "database",
            format!(
                "{} (schema {})",
                text(&s["storage"]["url"]),
                text(&s["storage"]["schema_version"])
            ),
        ),
        ("storage", storage_health(&s["storage"]["health"])),
        ("audit", text(&s["paths"]["audit_log"])),
        (
            "approvals",
            match s["approvals"]["pending"].as_u64() {
                Some(0) => "none pending".to_string(),
                Some(n) => format!("{n} pending (kaged approvals list)"),
                None => "unknown".to_string(),
            },
        ),
        ("runs", held_runs(&s["holders"])),
    ];
    for (label, value) in rows {
        println!("  {label:<9} {value}");
    }
    for h in s["holders"]["unknown"].as_array().into_iter().flatten() {
        println!(
            "  HOLDER    of a run this kaged does not know: session {} (pid {}, holder pid {}, {}); left running: end it with `kill {}`",
            text(&h["session"]),
            text(&h["pid"]),
            text(&h["holder_pid"]),
            text(&h["holder"]),
            text(&h["holder_pid"]),
        );
    }
    for h in s["holders"]["incompatible"]
        .as_array()
        .into_iter()
        .flatten()
    {
        println!(
            "  HOLDER    at {} speaks protocol versions {} this kaged does not: {}",
            text(&h["socket"]),
            text(&h["versions"]),
            text(&h["refused"]),
        );
    }
    if let Some(warnings) = s["warnings"].as_array() {
        for w in warnings {
            println!("  WARNING   {}", text(w));
        }
    }
    Ok(())
}

/// `kaged status`'s line about run holders: how many runs this daemon follows in one.
fn held_runs(h: &Value) -> String {
    match h["followed"].as_u64() {
        None => "not in run holders (they end with kaged)".into(),
        Some(n) => {
            let unknown = h["unknown"].as_array().map_or(0, Vec::len);
            let odd = h["incompatible"].as_array().map_or(0, Vec::len);
            let mut line = format!("{n} in run holders (they outlive kaged)");
            if unknown + odd > 0 {
                line.push_str(&format!("; {} other holder(s) below", unknown + odd));
            }
            line
        }
    }
}

/// `kaged status`'s storage line: `ok`, or what fails since when and what waits.
fn storage_health(h: &Value) -> String {
    let held = h["held_changes"].as_u64().unwrap_or(0);
    let lost = h["lost_audit_records"].as_u64().unwrap_or(0);
    match h["state"].as_str() {
        Some("failing") => {
            let what = if h["full"].as_bool() == Some(true) {
                "disk full"
            } else {
                "write errors"
            };
            format!(
                "FAILING since {} ({what}: {}); {held} state change(s) held, {lost} audit record(s) lost; new sessions refused",
                h["since"].as_str().unwrap_or("?"),
                h["last_error"].as_str().unwrap_or("?"),
            )
        }
        Some("ok") if held > 0 || lost > 0 => {
            format!("ok ({held} held state change(s) being stored)")
        }
        Some(other) => other.to_string(),
        None => "-".into(),
    }
}
