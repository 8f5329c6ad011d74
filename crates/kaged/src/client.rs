//! Commands that talk to the running daemon: `status`, `auth nonce`, `auth open`.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, anyhow};
use kaged_auth::{NONCE_HEADER, Secret};
use kaged_config::{DeploymentMode, ModeDecision, client_candidates};
use serde_json::Value;

use crate::cli::{ProjectCommand, TokensCommand};
use crate::daemon::launch_url;
use crate::runtime::{self, DISCOVERY_FILE, Discovery};
use crate::{Failure, host};

/// Where the client looks (`kaged_config::client_candidates`), each place probed.
fn locate(mode_flag: Option<DeploymentMode>) -> Result<Vec<(ModeDecision, Probe)>, Failure> {
    let candidates = client_candidates(&host::gather(), mode_flag)
        .map_err(|e| Failure::Config(e.to_string()))?;
    Ok(candidates
        .into_iter()
        .map(|c| {
            let probe = probe(&c.paths.runtime_dir);
            (c, probe)
        })
        .collect())
}

/// What one runtime directory says about a daemon.
#[derive(Debug)]
enum Probe {
    /// `daemon.json` names it and it holds `daemon.lock`.
    Running(Discovery),
    /// No (readable) discovery file.
    Absent,
    /// A discovery file whose daemon no longer holds the lock.
    Stale(Discovery),
    /// The directory or its files cannot be read (another user's daemon).
    Unreadable(std::io::Error),
}

fn probe(dir: &Path) -> Probe {
    match runtime::read_discovery(dir) {
        Err(e) => Probe::Unreadable(e),
        Ok(None) => Probe::Absent,
        Ok(Some(discovery)) => match runtime::daemon_alive(dir) {
            Err(e) => Probe::Unreadable(e),
            Ok(true) => Probe::Running(discovery),
            Ok(false) => Probe::Stale(discovery),
        },
    }
}

/// The one running daemon among the probed places. None running: exit 3, naming every place
/// and why it was looked at. Two running (one per mode) and no `--mode`: exit 2, naming both
/// and the flag that chooses. A place that cannot be read counts only when it is the mode the
/// client chose itself (the other may well be another user's daemon).
fn choose(probed: Vec<(ModeDecision, Probe)>) -> Result<(ModeDecision, Discovery), Failure> {
    let running: Vec<String> = probed
        .iter()
        .filter_map(|(c, p)| match p {
            Probe::Running(d) => Some(format!(
                "  --mode {}: the {} daemon (pid {}, {}), runtime directory {}",
                c.mode,
                c.mode.describe(),
                d.pid,
                d.url,
                c.paths.runtime_dir.display()
            )),
            _ => None,
        })
        .collect();
    if running.len() > 1 {
        return Err(Failure::Config(format!(
            "{} kaged daemons are running here, one per mode; choose one with --mode:\n{}\n  e.g. `kaged --mode user status`",
            running.len(),
            running.join("\n")
        )));
    }
    if running.is_empty() {
        if let Some((c, Probe::Unreadable(e))) = probed.first() {
            return Err(permission_hint(c, e));
        }
        return Err(not_running(&probed));
    }
    probed
        .into_iter()
        .find_map(|(c, p)| match p {
            Probe::Running(d) => Some((c, d)),
            _ => None,
        })
        .ok_or_else(|| Failure::NotRunning("no kaged daemon is running".into()))
}

fn not_running(probed: &[(ModeDecision, Probe)]) -> Failure {
    let lines: Vec<String> = probed
        .iter()
        .map(|(c, p)| {
            let dir = &c.paths.runtime_dir;
            let state = match p {
                Probe::Running(d) => format!("{} names pid {}", dir.display(), d.pid),
                Probe::Absent => format!("{} does not exist", dir.join(DISCOVERY_FILE).display()),
                Probe::Stale(d) => format!(
                    "{} names pid {}, which no longer holds {} (the file is stale and is replaced at the next `kaged start`)",
                    dir.join(DISCOVERY_FILE).display(),
                    d.pid,
                    dir.join(runtime::LOCK_FILE).display()
                ),
                Probe::Unreadable(e) => format!(
                    "cannot read {}: {e}{}",
                    dir.display(),
                    mode_hint(c.mode)
                ),
            };
            format!(
                "  {state}\n    (looked in the {} runtime directory because {})",
                c.mode.describe(),
                c.reason
            )
        })
        .collect();
    Failure::NotRunning(format!(
        "no kaged daemon is running:\n{}\n  start one with `kaged start`",
        lines.join("\n")
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
        return find_daemon(mode_flag).map(|(_, daemon)| Target::Local(daemon));
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

fn mode_hint(mode: DeploymentMode) -> &'static str {
    match mode {
        DeploymentMode::System => " (run it as the kaged user: `sudo -u kaged kaged status`)",
        DeploymentMode::User => " (run it as the user who started kaged)",
    }
}

fn permission_hint(decision: &ModeDecision, e: &std::io::Error) -> Failure {
    Failure::Runtime(anyhow!(
        "cannot read the runtime directory {}: {e}{}",
        decision.paths.runtime_dir.display(),
        mode_hint(decision.mode)
    ))
}

/// The running local daemon (see [`choose`]), with the runtime directory it was found in.
fn find_daemon(mode_flag: Option<DeploymentMode>) -> Result<(ModeDecision, Daemon), Failure> {
    let (decision, discovery) = choose(locate(mode_flag)?)?;
    let nonce =
        Secret::new(runtime::read_nonce(&decision.paths.runtime_dir).map_err(Failure::Runtime)?);
    Ok((decision, Daemon { discovery, nonce }))
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
    if status == reqwest::StatusCode::NO_CONTENT {
        return Ok(Value::Null);
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

/// `GET path` for raw bytes (a transcript), written to `out` as they arrive (never held
/// whole); errors as [`call`] reports them. Returns the response's headers.
pub(crate) async fn call_stream(
    target: &Target,
    path: &str,
    out: &mut dyn std::io::Write,
) -> Result<reqwest::header::HeaderMap, Failure> {
    let url = format!("{}{path}", target.url());
    let mut response = target
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
    let headers = response.headers().clone();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| Failure::Runtime(anyhow!("{url}: {e}")))?
    {
        out.write_all(&chunk)
            .map_err(|e| Failure::Runtime(e.into()))?;
    }
    out.flush().map_err(|e| Failure::Runtime(e.into()))?;
    Ok(headers)
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
    let (_, daemon) = find_daemon(mode_flag)?;
    println!("{}", daemon.nonce.expose());
    Ok(())
}

pub async fn open(
    mode_flag: Option<DeploymentMode>,
    no_browser: bool,
    ttl: u64,
) -> Result<(), Failure> {
    let (decision, daemon) = find_daemon(mode_flag)?;
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
                    match p["problems"].as_u64() {
                        Some(1) => "1 problem".to_string(),
                        Some(n) => format!("{n} problems"),
                        None => "invalid".to_string(),
                    }
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
        ProjectCommand::Unload { project } => {
            let slug = project_slug(&target, &project).await?;
            call(
                &target,
                reqwest::Method::DELETE,
                &format!("/api/v1/projects/{slug}"),
                None,
            )
            .await?;
            println!("unloaded project {slug} (its directory and past sessions are kept)");
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

#[cfg(test)]
mod tests {
    use super::*;
    use kaged_config::Facts;

    fn candidates() -> Vec<ModeDecision> {
        let facts = Facts {
            uid: 0,
            user_name: Some("root".into()),
            env: [("HOME", "/root"), ("XDG_RUNTIME_DIR", "/run/user/0")]
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            existing_dirs: Default::default(),
        };
        client_candidates(&facts, None).unwrap()
    }

    fn running(pid: u32) -> Probe {
        Probe::Running(Discovery {
            pid,
            url: format!("http://127.0.0.1:{pid}"),
            version: "0".into(),
            started_at_ms: 0,
        })
    }

    fn probed(probes: [Probe; 2]) -> Vec<(ModeDecision, Probe)> {
        candidates().into_iter().zip(probes).collect()
    }

    #[test]
    fn the_one_running_daemon_is_used_whichever_mode() {
        let (c, d) = choose(probed([Probe::Absent, running(7)])).ok().unwrap();
        assert_eq!((c.mode, d.pid), (DeploymentMode::User, 7));
        let (c, d) = choose(probed([running(8), Probe::Absent])).ok().unwrap();
        assert_eq!((c.mode, d.pid), (DeploymentMode::System, 8));
        // Another user's unreadable directory does not hide this one's daemon.
        let denied = || Probe::Unreadable(std::io::ErrorKind::PermissionDenied.into());
        let (c, _) = choose(probed([denied(), running(9)])).ok().unwrap();
        assert_eq!(c.mode, DeploymentMode::User);
    }

    #[test]
    fn two_running_daemons_are_a_usage_problem_naming_both() {
        match choose(probed([running(8), running(7)])) {
            Err(Failure::Config(m)) => {
                assert!(
                    m.contains("--mode system: the system-wide daemon (pid 8"),
                    "{m}"
                );
                assert!(m.contains("--mode user: the per-user daemon (pid 7"), "{m}");
                assert!(
                    m.contains("/run/kaged") && m.contains("/run/user/0/kaged"),
                    "{m}"
                );
            }
            _ => panic!("expected a usage error"),
        }
    }

    #[test]
    fn none_running_names_every_place_and_why() {
        match choose(probed([Probe::Absent, Probe::Absent])) {
            Err(Failure::NotRunning(m)) => {
                assert!(m.contains("/run/kaged/daemon.json does not exist"), "{m}");
                assert!(
                    m.contains("/run/user/0/kaged/daemon.json does not exist"),
                    "{m}"
                );
                assert!(m.contains("because running as UID 0 (root)"), "{m}");
            }
            _ => panic!("expected not running"),
        }
        // The chosen mode's directory unreadable: the permission problem, as before.
        let denied = Probe::Unreadable(std::io::ErrorKind::PermissionDenied.into());
        assert!(matches!(
            choose(probed([denied, Probe::Absent])),
            Err(Failure::Runtime(_))
        ));
    }
}
