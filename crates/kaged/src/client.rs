//! Commands that talk to the running daemon: `status`, `auth nonce`, `auth open`.

use std::time::Duration;

use anyhow::{Context, anyhow};
use kaged_auth::{NONCE_HEADER, Secret};
use kaged_config::{DeploymentMode, ModeDecision, decide_mode};
use serde_json::Value;

use crate::cli::{ProjectCommand, TokensCommand};
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

pub(crate) struct Daemon {
    discovery: Discovery,
    nonce: Secret,
}

/// Where a client command goes, and with which credential.
pub(crate) enum Target {
    Local(Daemon),
    /// `KAGED_SERVER`, with `KAGED_AUTH_TOKEN` as bearer token if set.
    Remote {
        url: String,
        token: Option<Secret>,
    },
}

impl Target {
    fn url(&self) -> &str {
        match self {
            Target::Local(d) => &d.discovery.url,
            Target::Remote { url, .. } => url,
        }
    }

    fn authorize(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match self {
            Target::Local(d) => request.header(NONCE_HEADER, d.nonce.expose()),
            Target::Remote { token: Some(t), .. } => {
                request.header("authorization", format!("Bearer {}", t.expose()))
            }
            Target::Remote { token: None, .. } => request,
        }
    }
}

fn env_flag(name: &str) -> bool {
    std::env::var(name)
        .map(|v| matches!(v.trim().to_ascii_lowercase().as_str(), "1" | "true" | "yes"))
        .unwrap_or(false)
}

/// `KAGED_SERVER` (remote) or the local daemon of this mode.
pub(crate) fn target(mode_flag: Option<DeploymentMode>) -> Result<Target, Failure> {
    let Some(url) = std::env::var("KAGED_SERVER")
        .ok()
        .filter(|u| !u.trim().is_empty())
    else {
        let decision = locate(mode_flag)?;
        return find_daemon(&decision).map(Target::Local);
    };
    let url = url.trim().trim_end_matches('/').to_string();
    let token = std::env::var("KAGED_AUTH_TOKEN")
        .ok()
        .filter(|t| !t.trim().is_empty())
        .map(|t| Secret::new(t.trim().to_string()));
    if token.is_some() {
        kaged_auth::check_bearer_target(&url, env_flag("KAGED_TRUST_PRIVATE_NETWORK"))
            .map_err(|e| Failure::Config(format!("KAGED_SERVER={url}: {e}")))?;
    }
    Ok(Target::Remote { url, token })
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

pub(crate) async fn call(
    target: &Target,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> Result<Value, Failure> {
    let url = format!("{}{path}", target.url());
    let mut request = target.authorize(http()?.request(method, &url));
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request
        .send()
        .await
        .map_err(|e| Failure::Runtime(anyhow!("kaged does not answer at {}: {e}", target.url())))?;
    let status = response.status();
    if status.is_redirection() {
        // Credentials never follow a redirect, to this origin or any other.
        return Err(Failure::Runtime(anyhow!(
            "{url} answered with a redirect ({status}); kaged clients do not follow redirects with credentials: point KAGED_SERVER at the daemon itself"
        )));
    }
    let body: Value = response
        .json()
        .await
        .with_context(|| format!("{url} did not return JSON ({status})"))
        .map_err(Failure::Runtime)?;
    if !status.is_success() {
        let message = body["error"]["message"].as_str().unwrap_or("unknown error");
        let code = body["error"]["code"].as_str().unwrap_or("?");
        let mut text = format!("{url}: {status} {code}: {message}");
        // Project-file problems come with their positions: show them like `kaged dsl validate`.
        for d in body["error"]["details"]["diagnostics"]
            .as_array()
            .into_iter()
            .flatten()
        {
            text.push_str(&format!(
                "\n{}:{}:{}: {}: {}\n  fix: {}",
                d["file"].as_str().unwrap_or("?"),
                d["line"],
                d["column"],
                d["path"].as_str().unwrap_or(""),
                d["problem"].as_str().unwrap_or(""),
                d["hint"].as_str().unwrap_or("")
            ));
        }
        return Err(Failure::Runtime(anyhow!(text)));
    }
    Ok(body)
}

/// `GET path` for raw bytes (a transcript); errors as [`call`] reports them.
pub(crate) async fn call_bytes(target: &Target, path: &str) -> Result<Vec<u8>, Failure> {
    let url = format!("{}{path}", target.url());
    let response = target
        .authorize(http_streaming()?.get(&url))
        .send()
        .await
        .map_err(|e| Failure::Runtime(anyhow!("kaged does not answer at {}: {e}", target.url())))?;
    if !response.status().is_success() {
        let status = response.status();
        let body: Value = response.json().await.unwrap_or_default();
        return Err(Failure::Runtime(anyhow!(
            "{url}: {status} {}: {}",
            body["error"]["code"].as_str().unwrap_or("?"),
            body["error"]["message"].as_str().unwrap_or("unknown error")
        )));
    }
    let bytes = response
        .bytes()
        .await
        .map_err(|e| Failure::Runtime(anyhow!("{url}: {e}")))?;
    Ok(bytes.to_vec())
}

/// Like [`http`] without the overall timeout (transcripts can be large).
fn http_streaming() -> Result<reqwest::Client, Failure> {
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| Failure::Runtime(anyhow!("cannot build an HTTP client: {e}")))
}

/// A WebSocket handshake request for `path`, with the target's credential.
pub(crate) fn ws_request(
    target: &Target,
    path: &str,
) -> Result<tokio_tungstenite::tungstenite::handshake::client::Request, Failure> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let base = target.url();
    let ws_base = if let Some(rest) = base.strip_prefix("https://") {
        format!("wss://{rest}")
    } else if let Some(rest) = base.strip_prefix("http://") {
        format!("ws://{rest}")
    } else {
        return Err(Failure::Config(format!("{base} is not an http(s) URL")));
    };
    let mut request = format!("{ws_base}{path}")
        .into_client_request()
        .map_err(|e| Failure::Config(format!("{ws_base}{path}: {e}")))?;
    let credential = match target {
        Target::Local(d) => Some((NONCE_HEADER, d.nonce.expose().to_string())),
        Target::Remote { token: Some(t), .. } => {
            Some(("authorization", format!("Bearer {}", t.expose())))
        }
        Target::Remote { token: None, .. } => None,
    };
    if let Some((name, value)) = credential {
        let value = value
            .parse()
            .map_err(|_| Failure::Config("the credential is not a valid header value".into()))?;
        request.headers_mut().insert(name, value);
    }
    Ok(request)
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
    let url = launch_url(&daemon.discovery.url, &daemon.nonce, ttl).map_err(Failure::Runtime)?;
    // Prove the daemon answers, and signs browsers in with launch URLs, before handing out a
    // URL that would not work.
    let status = call(
        &Target::Local(daemon),
        reqwest::Method::GET,
        "/api/v1/status",
        None,
    )
    .await?;
    if status["auth"] != "launch_url" {
        return Err(Failure::Runtime(anyhow!(
            "this kaged does not use launch URLs (auth: {}); sign in through its sidecar's public URL instead",
            status["auth"].as_str().unwrap_or("?")
        )));
    }
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

fn millis_to_text(v: &Value) -> String {
    v.as_i64()
        .map(kaged_server::rfc3339_utc)
        .unwrap_or_else(|| "-".into())
}

pub async fn tokens(
    mode_flag: Option<DeploymentMode>,
    command: TokensCommand,
) -> Result<(), Failure> {
    let target = target(mode_flag)?;
    match command {
        TokensCommand::Create { actor, name } => {
            let body = serde_json::json!({"actor": actor, "name": name});
            let v = call(&target, reqwest::Method::POST, "/api/v1/tokens", Some(body)).await?;
            let t = &v["token"];
            let label = t["name"]
                .as_str()
                .map(|n| format!(" (name {n})"))
                .unwrap_or_default();
            eprintln!(
                "kaged: created token {} for actor {}{label}. Copy it now: kaged keeps only its hash and cannot show it again.",
                t["id"],
                t["actor"].as_str().unwrap_or("?")
            );
            println!("{}", v["plaintext"].as_str().unwrap_or_default());
        }
        TokensCommand::List { json } => {
            let v = call(&target, reqwest::Method::GET, "/api/v1/tokens", None).await?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&v["tokens"]).unwrap_or_default()
                );
                return Ok(());
            }
            println!(
                "{:<5} {:<20} {:<20} {:<24} {:<24} REVOKED",
                "ID", "ACTOR", "NAME", "CREATED", "LAST USED"
            );
            for t in v["tokens"].as_array().into_iter().flatten() {
                println!(
                    "{:<5} {:<20} {:<20} {:<24} {:<24} {}",
                    t["id"],
                    t["actor"].as_str().unwrap_or("?"),
                    t["name"].as_str().unwrap_or("-"),
                    millis_to_text(&t["created_at_ms"]),
                    millis_to_text(&t["last_used_at_ms"]),
                    millis_to_text(&t["revoked_at_ms"]),
                );
            }
        }
        TokensCommand::Revoke { id } => {
            let v = call(
                &target,
                reqwest::Method::POST,
                &format!("/api/v1/tokens/{id}/revoke"),
                None,
            )
            .await?;
            println!(
                "revoked token {id} (actor {})",
                v["token"]["actor"].as_str().unwrap_or("?")
            );
        }
    }
    Ok(())
}

pub async fn project(
    mode_flag: Option<DeploymentMode>,
    command: ProjectCommand,
) -> Result<(), Failure> {
    let target = target(mode_flag)?;
    match command {
        ProjectCommand::Load { path } => {
            let absolute = std::path::absolute(&path)
                .map_err(|e| Failure::Config(format!("{}: {e}", path.display())))?;
            let body = serde_json::json!({"path": absolute});
            let v = call(
                &target,
                reqwest::Method::POST,
                "/api/v1/projects/load",
                Some(body),
            )
            .await?;
            println!(
                "loaded project {} from {}",
                v["project"]["slug"].as_str().unwrap_or("?"),
                v["project"]["root"].as_str().unwrap_or("?")
            );
        }
        ProjectCommand::List { json } => {
            let v = call(&target, reqwest::Method::GET, "/api/v1/projects", None).await?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&v["projects"]).unwrap_or_default()
                );
                return Ok(());
            }
            println!("{:<24} {:<18} ROOT", "PROJECT", "STATE");
            let mut notes = Vec::new();
            for p in v["projects"].as_array().into_iter().flatten() {
                let slug = p["slug"].as_str().unwrap_or("?");
                let mut state = if p["valid"] == true {
                    "valid".to_string()
                } else {
                    format!("{} problems", p["problems"])
                };
                if let Some(w) = p["pending_weakening"]["weakenings"].as_array() {
                    state = "weakening pending".into();
                    let list: Vec<&str> = w.iter().filter_map(|w| w["text"].as_str()).collect();
                    notes.push(format!(
                        "{slug}: an edit loosens its cages ({}); the previous configuration stays in force until `kaged project reload {slug} --accept`",
                        list.join("; ")
                    ));
                }
                for o in p["overlaps"].as_array().into_iter().flatten() {
                    state = "overlaps".into();
                    notes.push(format!(
                        "{slug}: overlaps the loaded project {} ({}); its runs are refused until one of them is unloaded",
                        o["slug"].as_str().unwrap_or("?"),
                        o["root"].as_str().unwrap_or("?")
                    ));
                }
                println!(
                    "{:<24} {:<18} {}",
                    slug,
                    state,
                    p["root"].as_str().unwrap_or("?")
                );
            }
            for note in notes {
                eprintln!("kaged: {note}");
            }
        }
        ProjectCommand::Reload { project, accept } => {
            let slug = project_slug(&target, &project).await?;
            let v = call(
                &target,
                reqwest::Method::POST,
                &format!("/api/v1/projects/{slug}/reload"),
                Some(serde_json::json!({"accept": accept})),
            )
            .await?;
            println!("reloaded project {slug}");
            if accept {
                for w in v["accepted"].as_array().into_iter().flatten() {
                    println!("accepted: {}", w["text"].as_str().unwrap_or("?"));
                }
                if v["project"]["git_recorded"] == true {
                    println!("recorded: the project has a .git");
                }
            }
        }
    }
    Ok(())
}

/// A project named by slug, or by its directory (anything with a `/`, or an existing
/// directory): the slug of the loaded project at that root.
async fn project_slug(target: &Target, project: &str) -> Result<String, Failure> {
    let path = std::path::Path::new(project);
    if !project.contains('/') && !path.is_dir() {
        return Ok(project.to_string());
    }
    let root = std::fs::canonicalize(path)
        .map_err(|e| Failure::Config(format!("{}: {e}", path.display())))?;
    let v = call(target, reqwest::Method::GET, "/api/v1/projects", None).await?;
    v["projects"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["root"].as_str() == Some(&root.display().to_string()))
        .and_then(|p| p["slug"].as_str())
        .map(String::from)
        .ok_or_else(|| {
            Failure::Config(format!(
                "no loaded project has its root at {}; see `kaged project list`",
                root.display()
            ))
        })
}
