//! Value parsers: one function per kind of key value, turning what a source supplied (`Raw`)
//! into the typed value of the key's field, or a problem with the key's expected form.

use std::collections::BTreeSet;
use std::fmt;
use std::net::{Ipv6Addr, SocketAddr};
use std::path::PathBuf;

use super::keys::KeySpec;
use super::types::{
    AuditSink, AuthMode, ConfigSecret, Listener, LogLevel, OnDaemonStop, OperationalSink,
    SandboxMode, StorageUrl,
};

/// A value before it is checked against its key, from whichever source supplied it.
#[derive(Debug)]
pub(crate) enum Raw {
    Str(String),
    Bool(bool),
    Int(i64),
    List(Vec<String>),
    /// Any other TOML type, by name, for the error message.
    Other(&'static str),
}

/// What is wrong with one value, and how to fix it; the caller adds where and which key.
#[derive(Debug)]
pub(crate) struct Problem {
    pub problem: String,
    pub hint: String,
}

fn wrong(spec: &KeySpec, got: impl fmt::Display) -> Problem {
    Problem {
        problem: format!("{got} is not valid here"),
        hint: format!("use {}", spec.expected),
    }
}

/// A value of the wrong kind for `spec` (a number where text belongs, say), named by its kind.
fn wrong_kind(spec: &KeySpec, raw: Raw) -> Problem {
    match raw {
        Raw::Str(s) => wrong(spec, format!("{s:?}")),
        Raw::Int(n) => wrong(spec, format!("the number {n}")),
        Raw::Bool(b) => wrong(spec, format!("the boolean {b}")),
        Raw::List(_) => wrong(spec, "an array"),
        Raw::Other(t) => wrong(spec, format!("a {t}")),
    }
}

/// A text value; anything else is a problem naming what it was.
pub(crate) fn text(spec: &KeySpec, raw: Raw) -> Result<String, Problem> {
    match raw {
        Raw::Str(s) => Ok(s),
        other => Err(wrong_kind(spec, other)),
    }
}

/// A text value that one of `choices` (its text, its value) must match exactly.
fn one_of<T: Copy>(spec: &KeySpec, raw: Raw, choices: &[(&str, T)]) -> Result<T, Problem> {
    let text = text(spec, raw)?;
    choices
        .iter()
        .find(|(name, _)| *name == text)
        .map(|(_, value)| *value)
        .ok_or_else(|| wrong(spec, format!("{text:?}")))
}

fn list(spec: &KeySpec, raw: Raw) -> Result<Vec<String>, Problem> {
    match raw {
        Raw::List(items) => Ok(items),
        other => Err(wrong_kind(spec, other)),
    }
}

pub(crate) fn boolean(spec: &KeySpec, raw: Raw) -> Result<bool, Problem> {
    match raw {
        Raw::Bool(b) => Ok(b),
        other => Err(wrong_kind(spec, other)),
    }
}

/// A whole number from `min` to `max`.
pub(crate) fn number(spec: &KeySpec, raw: Raw, min: i64, max: i64) -> Result<u64, Problem> {
    let n = match raw {
        Raw::Int(n) => n,
        other => return Err(wrong_kind(spec, other)),
    };
    match u64::try_from(n) {
        Ok(v) if (min..=max).contains(&n) => Ok(v),
        _ => Err(Problem {
            problem: format!("{n} is out of range"),
            hint: format!("use {}", spec.expected),
        }),
    }
}

/// A limit where 0 means "none".
pub(crate) fn limit(spec: &KeySpec, raw: Raw, max: i64) -> Result<Option<u64>, Problem> {
    number(spec, raw, 0, max).map(no_limit_if_zero)
}

pub(crate) fn no_limit_if_zero(n: u64) -> Option<u64> {
    (n != 0).then_some(n)
}

pub(crate) fn socket_address(spec: &KeySpec, raw: Raw) -> Result<SocketAddr, Problem> {
    let text = text(spec, raw)?;
    text.parse::<SocketAddr>().map_err(|_| Problem {
        problem: format!("{text:?} is not an IP address with a port"),
        hint: format!(
            "use {}; to reach kaged from other devices bind a VPN address such as \"100.64.0.2:7777\"",
            spec.expected
        ),
    })
}

pub(crate) fn absolute_path(spec: &KeySpec, raw: Raw) -> Result<PathBuf, Problem> {
    let text = text(spec, raw)?;
    absolute(&text).ok_or_else(|| wrong(spec, format!("{text:?}")))
}

pub(crate) fn auth_mode(spec: &KeySpec, raw: Raw) -> Result<AuthMode, Problem> {
    one_of(
        spec,
        raw,
        &[("secure", AuthMode::Secure), ("sidecar", AuthMode::Sidecar)],
    )
}

pub(crate) fn sandbox_mode(spec: &KeySpec, raw: Raw) -> Result<SandboxMode, Problem> {
    one_of(
        spec,
        raw,
        &[
            ("enabled", SandboxMode::Enabled),
            ("disabled", SandboxMode::Disabled),
        ],
    )
}

pub(crate) fn log_level(spec: &KeySpec, raw: Raw) -> Result<LogLevel, Problem> {
    one_of(
        spec,
        raw,
        &[
            ("error", LogLevel::Error),
            ("warn", LogLevel::Warn),
            ("info", LogLevel::Info),
            ("debug", LogLevel::Debug),
            ("trace", LogLevel::Trace),
        ],
    )
}

pub(crate) fn on_daemon_stop(spec: &KeySpec, raw: Raw) -> Result<OnDaemonStop, Problem> {
    one_of(
        spec,
        raw,
        &[("keep", OnDaemonStop::Keep), ("kill", OnDaemonStop::Kill)],
    )
}

/// The only seccomp profile there is today.
pub(crate) fn seccomp_profile(spec: &KeySpec, raw: Raw) -> Result<String, Problem> {
    one_of(spec, raw, &[("default", "default")]).map(String::from)
}

pub(crate) fn storage_url(spec: &KeySpec, raw: Raw) -> Result<StorageUrl, Problem> {
    let text = text(spec, raw)?;
    if let Some(rest) = text.strip_prefix("sqlite://") {
        return absolute(rest)
            .map(StorageUrl::Sqlite)
            .ok_or_else(|| Problem {
                problem: format!("{text:?} does not name an absolute SQLite file"),
                hint:
                    "use three slashes and an absolute path: \"sqlite:///ABSOLUTE/PATH/kaged.db\""
                        .into(),
            });
    }
    if text.starts_with("postgres://") || text.starts_with("postgresql://") {
        return super::postgres::parse(&text).map(StorageUrl::Postgres);
    }
    Err(Problem {
        problem: format!("{text:?} is not a supported database URL"),
        hint: "use \"sqlite:///ABSOLUTE/PATH/kaged.db\" or \"postgres://USER@HOST:5432/DATABASE\""
            .into(),
    })
}

/// A header name a trusted proxy may set, lower-cased; never one kaged already reads.
pub(crate) fn actor_header(spec: &KeySpec, raw: Raw) -> Result<Option<String>, Problem> {
    let text = text(spec, raw)?;
    let name = text.trim();
    let valid = !name.is_empty()
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        && ![
            "authorization",
            "cookie",
            "host",
            "origin",
            "x-kaged-auth-nonce",
            "x-kaged-user-id",
            "x-kaged-user-email",
        ]
        .contains(&name.to_ascii_lowercase().as_str());
    if valid {
        Ok(Some(name.to_ascii_lowercase()))
    } else {
        Err(Problem {
            problem: format!("{text:?} is not usable as the actor header"),
            hint: format!(
                "use {}: letters, digits and '-', and not a header kaged already gives a meaning",
                spec.expected
            ),
        })
    }
}

pub(crate) fn token(spec: &KeySpec, raw: Raw) -> Result<Option<ConfigSecret>, Problem> {
    let text = text(spec, raw)?;
    let distinct: BTreeSet<char> = text.chars().collect();
    if text.trim().len() >= 32 && distinct.len() >= 8 {
        Ok(Some(ConfigSecret::new(text.trim().to_string())))
    } else {
        // Never echo the rejected secret.
        Err(Problem {
            problem: "the token is too weak (fewer than 32 characters or too few distinct ones)"
                .into(),
            hint: format!("use {}", spec.expected),
        })
    }
}

/// A login name (letters, digits, '.', '_', '-'; not starting with '-') or a numeric UID,
/// never root: cages never run as UID 0.
pub(crate) fn cage_user(spec: &KeySpec, raw: Raw) -> Result<String, Problem> {
    let text = text(spec, raw)?;
    let name = text.trim();
    let numeric = !name.is_empty() && name.chars().all(|c| c.is_ascii_digit());
    if (numeric && name.parse::<u32>().is_ok_and(|uid| uid == 0)) || name == "root" {
        return Err(Problem {
            problem: format!("{text:?} is root, and cages never run as UID 0"),
            hint: format!(
                "use {}, or a dedicated user (sudo useradd --system --no-create-home kaged-cage)",
                spec.expected
            ),
        });
    }
    let valid = if numeric {
        name.parse::<u32>().is_ok_and(|uid| uid != u32::MAX)
    } else {
        name.len() <= 32
            && !name.starts_with('-')
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
            && !name.is_empty()
    };
    if valid {
        Ok(name.to_string())
    } else {
        Err(Problem {
            problem: format!("{text:?} is not a user name or UID"),
            hint: format!("use {}", spec.expected),
        })
    }
}

pub(crate) fn operational_sink(spec: &KeySpec, raw: Raw) -> Result<OperationalSink, Problem> {
    let text = text(spec, raw)?;
    if text == "stderr" {
        return Ok(OperationalSink::Stderr);
    }
    file_sink(&text)
        .map(OperationalSink::File)
        .ok_or_else(|| wrong(spec, format!("{text:?}")))
}

pub(crate) fn audit_sink(spec: &KeySpec, raw: Raw) -> Result<AuditSink, Problem> {
    let text = text(spec, raw)?;
    file_sink(&text)
        .map(AuditSink::File)
        .ok_or_else(|| wrong(spec, format!("{text:?}")))
}

pub(crate) fn plugin_names(spec: &KeySpec, raw: Raw) -> Result<Vec<String>, Problem> {
    let items = list(spec, raw)?;
    match items.iter().find(|n| {
        n.is_empty()
            || !n
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    }) {
        Some(bad) => Err(Problem {
            problem: format!("{bad:?} is not a plugin name"),
            hint: format!(
                "use {}; names are letters, digits, '-' and '_'",
                spec.expected
            ),
        }),
        None => Ok(items),
    }
}

/// `name` or `name:port`, as a browser puts it in Host: letters, digits, '-', '.', or a
/// bracketed IPv6 literal; no scheme, path or wildcard.
pub(crate) fn host_names(spec: &KeySpec, raw: Raw) -> Result<Vec<String>, Problem> {
    let items = list(spec, raw)?;
    let valid = |h: &str| {
        let h = h.to_ascii_lowercase();
        let (name, port) = match h.rsplit_once(':') {
            Some((n, p)) if !p.ends_with(']') => (n.to_string(), Some(p.to_string())),
            _ => (h.clone(), None),
        };
        let port_ok = port.is_none_or(|p| p.parse::<u16>().is_ok_and(|p| p > 0));
        let name_ok = if let Some(inner) = name.strip_prefix('[').and_then(|n| n.strip_suffix(']'))
        {
            inner.parse::<Ipv6Addr>().is_ok()
        } else {
            !name.is_empty()
                && name.split('.').all(|l| {
                    !l.is_empty() && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                })
        };
        port_ok && name_ok
    };
    match items.iter().find(|h| !valid(h)) {
        Some(bad) => Err(Problem {
            problem: format!("{bad:?} is not a host name with an optional port"),
            hint: format!(
                "use {}; no scheme (https://), path or wildcard",
                spec.expected
            ),
        }),
        None => Ok(items.into_iter().map(|h| h.to_ascii_lowercase()).collect()),
    }
}

/// `[daemon] listen`: at least one listener.
pub(crate) fn listen(spec: &KeySpec, raw: Raw) -> Result<Vec<Listener>, Problem> {
    let out = listeners(spec, raw, false)?;
    if out.is_empty() {
        return Err(Problem {
            problem: "the list is empty".into(),
            hint: format!(
                "use {}, or remove the key to use [daemon] bind",
                spec.expected
            ),
        });
    }
    Ok(out)
}

/// `[auth.proxy] trusted_proxy_listeners`: never a wildcard address.
pub(crate) fn proxy_listeners(spec: &KeySpec, raw: Raw) -> Result<Vec<Listener>, Problem> {
    listeners(spec, raw, true)
}

fn listeners(spec: &KeySpec, raw: Raw, exact: bool) -> Result<Vec<Listener>, Problem> {
    let mut out = Vec::new();
    for item in &list(spec, raw)? {
        match parse_listener(item.trim()) {
            Some(Listener::Tcp(a)) if exact && a.ip().is_unspecified() => {
                return Err(Problem {
                    problem: format!("{item:?} is a wildcard address; a connection never arrives on it"),
                    hint: "name the exact listener from [daemon] listen, ideally a unix:// socket only the proxy can reach".into(),
                });
            }
            Some(l) => out.push(l),
            None => {
                return Err(Problem {
                    problem: format!("{item:?} is not a listener"),
                    hint: format!("use {}", spec.expected),
                });
            }
        }
    }
    Ok(out)
}

fn parse_listener(text: &str) -> Option<Listener> {
    if let Some(path) = text.strip_prefix("unix://") {
        return absolute(path).map(Listener::Unix);
    }
    text.parse::<SocketAddr>().ok().map(Listener::Tcp)
}

fn absolute(text: &str) -> Option<PathBuf> {
    let p = PathBuf::from(text);
    p.is_absolute().then_some(p)
}

fn file_sink(text: &str) -> Option<PathBuf> {
    text.strip_prefix("file:").and_then(absolute)
}
