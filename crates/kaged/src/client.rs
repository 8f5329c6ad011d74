//! Commands that talk to the running daemon: `status`, `auth nonce`, `auth open`.

use std::time::Duration;

use anyhow::{Context, anyhow};
use kaged_auth::{NONCE_HEADER, Secret};
use kaged_config::{DeploymentMode, ModeDecision, decide_mode};
use serde_json::Value;

use crate::daemon::launch_url;
use crate::runtime::{self, DISCOVERY_FILE, Discovery};
use crate::{Failure, host};

fn locate(mode_flag: Option<DeploymentMode>) -> Result<ModeDecision, Failure> {
    decide_mode(&host::gather(), mode_flag).map_err(|e| Failure::Config(e.to_string()))
}

fn not_running(decision: &ModeDecision) -> Failure {
    Failure::NotRunning(format!(
        "no kaged daemon is running: {} does not exist\n  (looked in the {} runtime directory because {}; start one with `kaged start`)",
        decision.paths.runtime_dir.join(DISCOVERY_FILE).display(),
        decision.mode.describe(),
        decision.reason
    ))
}

struct Daemon {
    discovery: Discovery,
    nonce: Secret,
}

fn permission_hint(decision: &ModeDecision, e: &std::io::Error) -> Failure {
    let hint = match decision.mode {
        DeploymentMode::System => " (run it as the kaged user: `sudo -u kaged kaged status`)",
        DeploymentMode::User => " (run it as the user who started kaged)",
    };
    Failure::Runtime(anyhow!(
        "cannot read the runtime directory {}: {e}{hint}",
        decision.paths.runtime_dir.display()
    ))
}

fn find_daemon(decision: &ModeDecision) -> Result<Daemon, Failure> {
    let dir = &decision.paths.runtime_dir;
    let discovery = runtime::read_discovery(dir)
        .map_err(|e| permission_hint(decision, &e))?
        .ok_or_else(|| not_running(decision))?;
    if !runtime::daemon_alive(dir).map_err(|e| permission_hint(decision, &e))? {
        return Err(Failure::NotRunning(format!(
            "no kaged daemon is running: {} names pid {}, which no longer holds {} (the file is stale and is replaced at the next `kaged start`)",
            dir.join(DISCOVERY_FILE).display(),
            discovery.pid,
            dir.join(runtime::LOCK_FILE).display()
        )));
    }
    let nonce = Secret::new(runtime::read_nonce(dir).map_err(Failure::Runtime)?);
    Ok(Daemon { discovery, nonce })
}

fn http() -> Result<reqwest::Client, Failure> {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| Failure::Runtime(anyhow!("cannot build an HTTP client: {e}")))
}

async fn get_json(d: &Daemon, path: &str) -> Result<Value, Failure> {
    let url = format!("{}{path}", d.discovery.url);
    let response = http()?
        .get(&url)
        .header(NONCE_HEADER, d.nonce.expose())
        .send()
        .await
        .map_err(|e| {
            Failure::Runtime(anyhow!(
                "kaged (pid {}) does not answer at {}: {e}",
                d.discovery.pid,
                d.discovery.url
            ))
        })?;
    let status = response.status();
    let body: Value = response
        .json()
        .await
        .with_context(|| format!("{url} did not return JSON"))
        .map_err(Failure::Runtime)?;
    if !status.is_success() {
        let message = body["error"]["message"].as_str().unwrap_or("unknown error");
        return Err(Failure::Runtime(anyhow!("{url}: {status}: {message}")));
    }
    Ok(body)
}

fn duration(secs: u64) -> String {
    match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m {:02}s", s / 60, s % 60),
        s if s < 86_400 => format!("{}h {:02}m", s / 3600, s % 3600 / 60),
        s => format!("{}d {:02}h", s / 86_400, s % 86_400 / 3600),
    }
}

pub async fn status(mode_flag: Option<DeploymentMode>, as_json: bool) -> Result<(), Failure> {
    let decision = locate(mode_flag)?;
    let daemon = find_daemon(&decision)?;
    let s = get_json(&daemon, "/api/v1/status").await?;
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
        ("bind", text(&s["bind"])),
        (
            "auth",
            match s["auth"].as_str() {
                Some("launch_url") => "launch URL + session cookie".to_string(),
                Some("sidecar") => "sidecar header contract".to_string(),
                Some("insecure") => "NONE (--insecure)".to_string(),
                _ => text(&s["auth"]),
            },
        ),
        ("sandbox", text(&s["sandbox_mode"])),
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
        ("audit", text(&s["paths"]["audit_log"])),
    ];
    for (label, value) in rows {
        println!("  {label:<9} {value}");
    }
    if let Some(warnings) = s["warnings"].as_array() {
        for w in warnings {
            println!("  WARNING   {}", text(w));
        }
    }
    Ok(())
}

pub fn nonce(mode_flag: Option<DeploymentMode>) -> Result<(), Failure> {
    let decision = locate(mode_flag)?;
    let daemon = find_daemon(&decision)?;
    println!("{}", daemon.nonce.expose());
    Ok(())
}

pub async fn open(
    mode_flag: Option<DeploymentMode>,
    no_browser: bool,
    ttl: u64,
) -> Result<(), Failure> {
    let decision = locate(mode_flag)?;
    let daemon = find_daemon(&decision)?;
    // Prove the daemon answers before handing out a URL that would not work.
    get_json(&daemon, "/api/v1/whoami").await?;
    let url = launch_url(&daemon.discovery.url, &daemon.nonce, ttl).map_err(Failure::Runtime)?;
    println!("{url}");
    if no_browser {
        return Ok(());
    }
    // The browser gets a 0600 file that redirects, never the token on its command line (which
    // every local user can read in /proc).
    let page = format!(
        "<!doctype html><meta charset=\"utf-8\"><meta http-equiv=\"refresh\" content=\"0;url={url}\">\
         <title>kaged</title><p><a href=\"{url}\">Open kaged</a></p>\n"
    );
    let page_path = runtime::write_private_file(
        &decision.paths.runtime_dir,
        runtime::LAUNCH_PAGE_FILE,
        &page,
    )
    .map_err(Failure::Runtime)?;
    match open_browser(&page_path.display().to_string()) {
        Ok(opener) => eprintln!(
            "kaged: opened the launch URL with {opener} (valid once, for {})",
            duration(ttl)
        ),
        Err(why) => {
            eprintln!("kaged: could not open a browser ({why}); open the URL above yourself")
        }
    }
    Ok(())
}

fn open_browser(target: &str) -> Result<&'static str, String> {
    let graphical = ["DISPLAY", "WAYLAND_DISPLAY"]
        .iter()
        .any(|v| std::env::var_os(v).is_some_and(|x| !x.is_empty()));
    if !graphical && cfg!(target_os = "linux") {
        return Err("no graphical session: DISPLAY and WAYLAND_DISPLAY are unset".into());
    }
    let opener = if cfg!(target_os = "macos") {
        "open"
    } else {
        "xdg-open"
    };
    std::process::Command::new(opener)
        .arg(target)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .map(|_| opener)
        .map_err(|e| format!("{opener}: {e}"))
}
