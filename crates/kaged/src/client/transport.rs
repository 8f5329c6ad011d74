//! Talking to a daemon: where a command goes and with which credential ([`Target`]), JSON
//! calls, streamed downloads and WebSocket handshakes. Credentials never follow a redirect.

use std::time::Duration;

use anyhow::{Context, anyhow};
use kaged_auth::{NONCE_HEADER, Secret};
use kaged_config::DeploymentMode;
use serde_json::Value;

use super::discovery::{Daemon, find_daemon};
use crate::Failure;

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

fn http() -> Result<reqwest::Client, Failure> {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| Failure::Runtime(anyhow!("cannot build an HTTP client: {e}")))
}

/// A JSON call: the body of a success, or the error the daemon answered as a failure whose
/// text names the URL, the status, the error code and its message.
pub(crate) async fn call(
    target: &Target,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> Result<Value, Failure> {
    let (status, body) = call_answer(target, method, path, body).await?;
    if !status.is_success() {
        let url = format!("{}{path}", target.url());
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

/// A JSON call whose error answers the caller handles itself: the status and the body
/// (`null` for 204), whatever the status. Only a daemon that cannot be reached, a redirect or
/// a body that is not JSON fail.
pub(crate) async fn call_answer(
    target: &Target,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> Result<(reqwest::StatusCode, Value), Failure> {
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
        return Ok((status, Value::Null));
    }
    let body: Value = response
        .json()
        .await
        .with_context(|| format!("{url} did not return JSON ({status})"))
        .map_err(Failure::Runtime)?;
    Ok((status, body))
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
