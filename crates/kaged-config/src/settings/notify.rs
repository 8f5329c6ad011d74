//! `[notify]`: the webhook notifications go to and the address their links open.
//!
//! The webhook URL may hold a secret (an ntfy access token in the query, a password before the
//! host), so it is only ever shown as [`redacted_url`] shows it: in `Debug`, in serialized
//! settings and in the configuration's own error messages. It is parsed with the same URL
//! parser the HTTP client uses, so the host checked here is the host a notification goes to.

use std::fmt;

use serde::{Serialize, Serializer};
use url::{Host, Url};

use super::keys::KeySpec;
use super::value::{Problem, Raw, text};

/// `[notify]` as the daemon reads it.
#[derive(Clone, PartialEq, Eq, Serialize)]
pub struct NotifySettings {
    /// `[notify] webhook`: https, or http to loopback or a literal private IP. Secret as a whole:
    /// serialized and debug-printed as [`redacted_url`].
    #[serde(serialize_with = "serialize_redacted")]
    pub webhook: Option<String>,
    /// `[notify] public_url`: `scheme://host[:port]`, no trailing slash; links append
    /// `/#/approvals/ID` or `/#/sessions/ID`.
    pub public_url: Option<String>,
}

impl fmt::Debug for NotifySettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NotifySettings")
            .field("webhook", &self.webhook.as_deref().map(redacted_url))
            .field("public_url", &self.public_url)
            .finish()
    }
}

fn serialize_redacted<S: Serializer>(webhook: &Option<String>, s: S) -> Result<S::Ok, S::Error> {
    webhook.as_deref().map(redacted_url).serialize(s)
}

/// A URL as logs and messages may show it: `scheme://host[:port]/…`, never the user, password,
/// path or query (any of which may be a token). Text that is no URL shows as `<not a URL>`.
pub fn redacted_url(url: &str) -> String {
    match Url::parse(url.trim()) {
        Ok(u) => match u.host_str() {
            Some(host) => match u.port() {
                Some(port) => format!("{}://{host}:{port}/…", u.scheme()),
                None => format!("{}://{host}/…", u.scheme()),
            },
            None => format!("{}:…", u.scheme()),
        },
        Err(_) => "<not a URL>".into(),
    }
}

const WEBHOOK_FIX: &str = "use https://HOST/TOPIC, or http:// only to localhost, 127.0.0.1 or a private IP such as \"http://192.168.1.10/kaged\"";

/// `[notify] webhook`. A user and password before the host are allowed (the client sends them
/// as basic authentication), as is a token in the query: both stay secret.
pub(crate) fn webhook(spec: &KeySpec, raw: Raw) -> Result<Option<String>, Problem> {
    let text = text(spec, raw)?;
    let text = text.trim();
    let shown = redacted_url(text);
    let problem = |problem: String, hint: &str| Problem {
        problem,
        hint: hint.to_string(),
    };
    // The value itself is never echoed: it may be a token.
    let url = Url::parse(text).map_err(|_| {
        problem(
            "the value is not an absolute URL".into(),
            &format!("use {}", spec.expected),
        )
    })?;
    match url.scheme() {
        "https" | "http" => {}
        other => {
            return Err(problem(
                format!("{shown:?}: the scheme {other:?} is not https or http"),
                WEBHOOK_FIX,
            ));
        }
    }
    let host = match url.host() {
        Some(Host::Domain("")) | None => {
            return Err(problem(format!("{shown:?} has no host"), WEBHOOK_FIX));
        }
        Some(host) => host,
    };
    if url.scheme() == "https" {
        return Ok(Some(text.to_string()));
    }
    match host {
        Host::Domain("localhost") => Ok(Some(text.to_string())),
        Host::Ipv4(ip) if private(ip.into()) => Ok(Some(text.to_string())),
        Host::Ipv6(ip) if private(ip.into()) => Ok(Some(text.to_string())),
        Host::Domain(name) => Err(problem(
            format!(
                "{shown:?} is plain http to the host name {name:?}: the notification and any token in the URL would travel unencrypted; only localhost and literal private IPs may use http"
            ),
            &format!("use \"https://{name}/…\", or http:// with the receiver's private IP"),
        )),
        Host::Ipv4(_) | Host::Ipv6(_) => Err(problem(
            format!(
                "{shown:?} is plain http to a public address: the notification and any token in the URL would cross the internet unencrypted"
            ),
            WEBHOOK_FIX,
        )),
    }
}

/// Loopback, RFC 1918, 100.64/10 (carrier-grade NAT, VPNs such as Tailscale), fc00::/7 and
/// link-local: the addresses a provider's `base_url` may reach over plain http too.
fn private(ip: std::net::IpAddr) -> bool {
    kaged_auth::is_non_public(ip) && !ip.is_unspecified()
}

/// `[notify] public_url`: an http(s) origin, stored as `scheme://host[:port]`.
pub(crate) fn public_url(spec: &KeySpec, raw: Raw) -> Result<Option<String>, Problem> {
    let text = text(spec, raw)?;
    let wrong = |problem: String| Problem {
        problem,
        hint: format!(
            "use {}; links add /#/approvals/ID or /#/sessions/ID",
            spec.expected
        ),
    };
    let url =
        Url::parse(text.trim()).map_err(|_| wrong(format!("{text:?} is not an absolute URL")))?;
    if !matches!(url.scheme(), "https" | "http") {
        return Err(wrong(format!("{text:?}: the scheme is not https or http")));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(wrong(format!("{text:?} has no host")));
    }
    if !url.username().is_empty() || url.password().is_some() {
        // Never echo it: the part before the host may be a password.
        return Err(wrong(format!(
            "{:?} has a user or password before the host",
            redacted_url(&text)
        )));
    }
    if url.path() != "/" || url.query().is_some() || url.fragment().is_some() {
        return Err(wrong(format!("{text:?} has a path, query or fragment")));
    }
    Ok(Some(url.origin().ascii_serialization()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redaction_keeps_scheme_host_and_port_only() {
        for (url, shown) in [
            ("https://ntfy.sh/topic?auth=SECRET", "https://ntfy.sh/…"),
            (
                "https://user:SECRET@ntfy.example:8443/t",
                "https://ntfy.example:8443/…",
            ),
            ("http://127.0.0.1:9/SECRET", "http://127.0.0.1:9/…"),
            ("http://[::1]/x", "http://[::1]/…"),
            ("SECRET", "<not a URL>"),
            ("mailto:SECRET@x", "mailto:…"),
        ] {
            assert_eq!(redacted_url(url), shown, "{url}");
            assert!(!redacted_url(url).contains("SECRET"));
        }
    }

    #[test]
    fn debug_and_json_never_show_the_webhook_whole() {
        let n = NotifySettings {
            webhook: Some("https://u:PASS@ntfy.example/topic?auth=TOKEN".into()),
            public_url: Some("https://kaged.example".into()),
        };
        for shown in [
            format!("{n:?}"),
            serde_json::to_string(&n).unwrap_or_default(),
        ] {
            assert!(shown.contains("https://ntfy.example/…"), "{shown}");
            assert!(
                !shown.contains("PASS") && !shown.contains("TOKEN"),
                "{shown}"
            );
            assert!(!shown.contains("topic"), "{shown}");
        }
    }
}
