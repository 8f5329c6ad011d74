//! `config.toml`: parsing with positions, precedence (flags > `KAGED_*` environment > file >
//! defaults) and validation that reports every problem with file, key, line and a fix.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Serialize;
use toml::de::{DeTable, DeValue};

use crate::error::{ConfigError, ConfigErrors, Location, line_column};
use crate::keys::{self, KEYS, KeySpec};
use crate::mode::{DeploymentMode, ModeDecision};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    /// The mode's default: launch URLs per-user, the sidecar contract system-wide.
    Secure,
    /// Trust requests carrying `X-Kaged-Auth-Nonce` = `KAGED_AUTH_SIDECAR_NONCE`.
    Sidecar,
}

/// How browsers and remote callers authenticate, after mode defaults and flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthMechanism {
    /// Per-startup nonce, one-time launch URLs, session cookie.
    LaunchUrl,
    /// An authenticating reverse proxy injects the header contract.
    Sidecar,
    /// `--insecure`: no authentication at all.
    Insecure,
    /// `--insecure-readonly`: unauthenticated GETs; changes, the event stream and token
    /// administration still need credentials.
    InsecureReadonly,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SandboxMode {
    Enabled,
    Disabled,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

impl LogLevel {
    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Error => "error",
            LogLevel::Warn => "warn",
            LogLevel::Info => "info",
            LogLevel::Debug => "debug",
            LogLevel::Trace => "trace",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase", tag = "kind", content = "path")]
pub enum OperationalSink {
    Stderr,
    File(PathBuf),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase", tag = "kind", content = "path")]
pub enum AuditSink {
    File(PathBuf),
}

/// A parsed `[storage] url`. Only SQLite exists today; a `postgres://` variant slots in here.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase", tag = "kind", content = "path")]
pub enum StorageUrl {
    Sqlite(PathBuf),
}

impl fmt::Display for StorageUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StorageUrl::Sqlite(p) => write!(f, "sqlite://{}", p.display()),
        }
    }
}

/// A secret from the configuration: redacted in `Debug`, never serialized.
#[derive(Clone, PartialEq, Eq)]
pub struct ConfigSecret(String);

impl ConfigSecret {
    pub fn new(text: String) -> Self {
        ConfigSecret(text)
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ConfigSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ConfigSecret(<redacted>)")
    }
}

/// One listener: a TCP address or a Unix socket (`unix:///abs/path`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Listener {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

impl fmt::Display for Listener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Listener::Tcp(a) => write!(f, "{a}"),
            Listener::Unix(p) => write!(f, "unix://{}", p.display()),
        }
    }
}

impl Serialize for Listener {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

fn parse_listener(text: &str) -> Option<Listener> {
    if let Some(path) = text.strip_prefix("unix://") {
        return absolute(path).map(Listener::Unix);
    }
    text.parse::<SocketAddr>().ok().map(Listener::Tcp)
}

/// Where a setting's value came from; shown by `kaged status` so "why is it this?" has an answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase", tag = "from")]
pub enum Source {
    Default,
    File { line: usize },
    Env { var: String },
    Flag { flag: String },
}

/// Command-line flags that override configuration.
#[derive(Debug, Clone, Default)]
pub struct FlagOverrides {
    pub bind: Option<String>,
    /// `--insecure`: no authentication (development only).
    pub insecure: bool,
    /// `--no-sandbox`: run work uncaged (daemon-level opt-out).
    pub no_sandbox: bool,
    /// `--insecure-readonly`: unauthenticated GETs only.
    pub insecure_readonly: bool,
}

/// The resolved configuration the daemon runs with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Settings {
    pub mode: DeploymentMode,
    pub config_file: PathBuf,
    pub bind: SocketAddr,
    /// Every listener kaged serves: `--bind`, else `[daemon] listen`, else `[daemon] bind`.
    pub listeners: Vec<Listener>,
    pub home: PathBuf,
    pub allowed_hosts: Vec<String>,
    /// `[daemon] header_timeout`, `idle_timeout` (seconds) and `max_waiting_connections`.
    pub header_timeout_secs: u64,
    pub idle_timeout_secs: u64,
    pub max_waiting_connections: u64,
    /// `[auth.proxy] trusted_actor_header` and the listeners it is honoured on.
    pub trusted_actor_header: Option<String>,
    pub trusted_proxy_listeners: Vec<Listener>,
    pub auth_mode: AuthMode,
    /// What actually authenticates requests (mode default, `[auth] mode`, `--insecure`).
    pub auth: AuthMechanism,
    #[serde(skip)]
    pub auth_token: Option<ConfigSecret>,
    pub trust_private_network: bool,
    pub require_token_identity: bool,
    pub storage_url: StorageUrl,
    pub sandbox_mode: SandboxMode,
    pub default_seccomp: String,
    /// `[sandbox] cage_user`: a user name or numeric UID, never root (checked here); who it
    /// is on this host is resolved where cages start.
    pub cage_user: String,
    /// `[sandbox] pids`, `memory_mb` and `wall_time_secs`: what a cage gets where its project
    /// sets no limit of its own (`None`: the key is 0, no default).
    pub cage_limits: CageLimits,
    pub log_operational: OperationalSink,
    pub log_audit: AuditSink,
    pub log_level: LogLevel,
    pub plugins_dir: PathBuf,
    pub plugins_enabled: Vec<String>,
    pub ui_serve: bool,
    /// `[sessions]` retention: `max_total_mb`, `max_age_days` and `transcript_max_mb`.
    pub sessions_max_total_mb: u64,
    pub sessions_max_age_days: u64,
    pub transcript_max_mb: u64,
    /// `section.key` -> where its value came from.
    pub sources: BTreeMap<String, Source>,
}

/// Default limits of every cage (`[sandbox]`); a project's `limits:` overrides them per key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct CageLimits {
    pub pids: Option<u64>,
    pub memory_mb: Option<u64>,
    pub wall_time_secs: Option<u64>,
}

impl CageLimits {
    /// 1024 processes: far above what a build or an agent needs (a parallel cargo or make
    /// build, node with its threads), far below what exhausts a host (pid_max is often 32768).
    pub const DEFAULT_PIDS: u64 = 1024;
    /// 4 GiB: room for a compiler, a language server and an agent at once.
    pub const DEFAULT_MEMORY_MB: u64 = 4096;
    /// None: terminals and agents are interactive and run for hours; a default wall time
    /// would end an operator's work under their hands. Tasks bound themselves (`timeout`).
    pub const DEFAULT_WALL_TIME_SECS: u64 = 0;
}

/// A value before it is checked against its key, from whichever source supplied it.
enum Raw {
    Str(String),
    Bool(bool),
    Int(i64),
    List(Vec<String>),
    /// Any other TOML type, by name, for the error message.
    Other(&'static str),
}

/// A checked value of one key.
enum Value {
    Bind(SocketAddr),
    Path(PathBuf),
    Auth(AuthMode),
    Storage(StorageUrl),
    Sandbox(SandboxMode),
    Name(String),
    Operational(OperationalSink),
    Audit(AuditSink),
    Level(LogLevel),
    Names(Vec<String>),
    Hosts(Vec<String>),
    Bool(bool),
    Secret(ConfigSecret),
    Listeners(Vec<Listener>),
    Header(String),
    Number(u64),
}

struct Problem {
    problem: String,
    hint: String,
}

fn wrong(spec: &KeySpec, got: impl fmt::Display) -> Problem {
    Problem {
        problem: format!("{got} is not valid here"),
        hint: format!("use {}", spec.expected),
    }
}

fn check(spec: &KeySpec, raw: Raw) -> Result<Value, Problem> {
    let text = match raw {
        Raw::Str(s) => s,
        Raw::Bool(b) if BOOL_KEYS.contains(&spec.path().as_str()) => return Ok(Value::Bool(b)),
        Raw::List(items) if spec.key == "enabled" => return check_names(spec, items),
        Raw::List(items) if spec.key == "allowed_hosts" => return check_hosts(spec, items),
        Raw::List(items) if spec.key == "listen" || spec.key == "trusted_proxy_listeners" => {
            return check_listeners(spec, items);
        }
        Raw::Int(n) if NUMBER_KEYS.iter().any(|(k, _, _)| *k == spec.path()) => {
            return check_number(spec, n);
        }
        Raw::Int(n) => return Err(wrong(spec, format!("the number {n}"))),
        Raw::Bool(b) => return Err(wrong(spec, format!("the boolean {b}"))),
        Raw::List(_) => return Err(wrong(spec, "an array")),
        Raw::Other(t) => return Err(wrong(spec, format!("a {t}"))),
    };
    let shown = format!("{text:?}");
    let bad = || wrong(spec, &shown);
    match spec.path().as_str() {
        "daemon.bind" => text.parse::<SocketAddr>().map(Value::Bind).map_err(|_| {
            Problem {
                problem: format!("{shown} is not an IP address with a port"),
                hint: format!(
                    "use {}; to reach kaged from other devices bind a VPN address such as \"100.64.0.2:7777\"",
                    spec.expected
                ),
            }
        }),
        "daemon.home" | "plugins.dir" => absolute(&text).map(Value::Path).ok_or_else(bad),
        "auth.mode" => match text.as_str() {
            "secure" => Ok(Value::Auth(AuthMode::Secure)),
            "sidecar" => Ok(Value::Auth(AuthMode::Sidecar)),
            _ => Err(bad()),
        },
        "storage.url" => storage_url(&text).map(Value::Storage),
        "auth.proxy.trusted_actor_header" => {
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
                Ok(Value::Header(name.to_ascii_lowercase()))
            } else {
                Err(Problem {
                    problem: format!("{shown} is not usable as the actor header"),
                    hint: format!(
                        "use {}: letters, digits and '-', and not a header kaged already gives a meaning",
                        spec.expected
                    ),
                })
            }
        }
        "auth.token" => {
            let distinct: std::collections::BTreeSet<char> = text.chars().collect();
            if text.trim().len() >= 32 && distinct.len() >= 8 {
                Ok(Value::Secret(ConfigSecret(text.trim().to_string())))
            } else {
                // Never echo the rejected secret.
                Err(Problem {
                    problem: "the token is too weak (fewer than 32 characters or too few distinct ones)".into(),
                    hint: format!("use {}", spec.expected),
                })
            }
        }
        "sandbox.mode" => match text.as_str() {
            "enabled" => Ok(Value::Sandbox(SandboxMode::Enabled)),
            "disabled" => Ok(Value::Sandbox(SandboxMode::Disabled)),
            _ => Err(bad()),
        },
        "sandbox.default_seccomp" => match text.as_str() {
            "default" => Ok(Value::Name(text)),
            _ => Err(bad()),
        },
        "sandbox.cage_user" => check_cage_user(spec, &text).map(Value::Name),
        "logging.operational" => match text.as_str() {
            "stderr" => Ok(Value::Operational(OperationalSink::Stderr)),
            _ => file_sink(&text)
                .map(|p| Value::Operational(OperationalSink::File(p)))
                .ok_or_else(bad),
        },
        "logging.audit" => file_sink(&text)
            .map(|p| Value::Audit(AuditSink::File(p)))
            .ok_or_else(bad),
        "logging.level" => match text.as_str() {
            "error" => Ok(Value::Level(LogLevel::Error)),
            "warn" => Ok(Value::Level(LogLevel::Warn)),
            "info" => Ok(Value::Level(LogLevel::Info)),
            "debug" => Ok(Value::Level(LogLevel::Debug)),
            "trace" => Ok(Value::Level(LogLevel::Trace)),
            _ => Err(bad()),
        },
        _ => Err(bad()),
    }
}

/// Keys whose values are whole numbers, with their bounds (0 means "none" where allowed).
const NUMBER_KEYS: &[(&str, i64, i64)] = &[
    ("daemon.header_timeout", 1, 3600),
    ("daemon.idle_timeout", 1, 86_400),
    ("daemon.max_waiting_connections", 1, 1_000_000),
    ("sandbox.pids", 0, 100_000),
    ("sandbox.memory_mb", 0, 1_048_576),
    ("sandbox.wall_time_secs", 0, 604_800),
    ("sessions.max_total_mb", 1, 16_777_216),
    ("sessions.max_age_days", 1, 36_500),
    ("sessions.transcript_max_mb", 1, 1_048_576),
];

fn check_number(spec: &KeySpec, n: i64) -> Result<Value, Problem> {
    let (min, max) = NUMBER_KEYS
        .iter()
        .find(|(k, _, _)| *k == spec.path())
        .map_or((1, 0), |(_, min, max)| (*min, *max));
    match u64::try_from(n) {
        Ok(v) if (min..=max).contains(&n) => Ok(Value::Number(v)),
        _ => Err(Problem {
            problem: format!("{n} is out of range"),
            hint: format!("use {}", spec.expected),
        }),
    }
}

/// Keys whose values are booleans.
const BOOL_KEYS: &[&str] = &[
    "ui.serve",
    "auth.trust_private_network",
    "auth.require_token_identity",
];

/// Environment variables carry lists and booleans as text.
fn raw_from_env(spec: &KeySpec, text: &str) -> Raw {
    if BOOL_KEYS.contains(&spec.path().as_str()) {
        return match text.trim().to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" => Raw::Bool(true),
            "false" | "0" | "no" => Raw::Bool(false),
            _ => Raw::Str(text.to_string()),
        };
    }
    if NUMBER_KEYS.iter().any(|(k, _, _)| *k == spec.path()) {
        return match text.trim().parse::<i64>() {
            Ok(n) => Raw::Int(n),
            Err(_) => Raw::Str(text.to_string()),
        };
    }
    match spec.path().as_str() {
        "plugins.enabled"
        | "daemon.allowed_hosts"
        | "daemon.listen"
        | "auth.proxy.trusted_proxy_listeners" => Raw::List(
            text.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect(),
        ),
        _ => Raw::Str(text.to_string()),
    }
}

fn check_names(spec: &KeySpec, items: Vec<String>) -> Result<Value, Problem> {
    match items.iter().find(|n| {
        n.is_empty()
            || !n
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    }) {
        Some(badname) => Err(Problem {
            problem: format!("{badname:?} is not a plugin name"),
            hint: format!(
                "use {}; names are letters, digits, '-' and '_'",
                spec.expected
            ),
        }),
        None => Ok(Value::Names(items)),
    }
}

/// `name` or `name:port`, as a browser puts it in Host: letters, digits, '-', '.', or a
/// bracketed IPv6 literal; no scheme, path or wildcard.
fn check_hosts(spec: &KeySpec, items: Vec<String>) -> Result<Value, Problem> {
    let valid = |h: &str| {
        let h = h.to_ascii_lowercase();
        let (name, port) = match h.rsplit_once(':') {
            Some((n, p)) if !p.ends_with(']') => (n.to_string(), Some(p.to_string())),
            _ => (h.clone(), None),
        };
        let port_ok = port.is_none_or(|p| p.parse::<u16>().is_ok_and(|p| p > 0));
        let name_ok = if let Some(inner) = name.strip_prefix('[').and_then(|n| n.strip_suffix(']'))
        {
            inner.parse::<std::net::Ipv6Addr>().is_ok()
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
        None => Ok(Value::Hosts(
            items.into_iter().map(|h| h.to_ascii_lowercase()).collect(),
        )),
    }
}

fn check_listeners(spec: &KeySpec, items: Vec<String>) -> Result<Value, Problem> {
    let mut out = Vec::new();
    for item in &items {
        match parse_listener(item.trim()) {
            Some(Listener::Tcp(a))
                if spec.key == "trusted_proxy_listeners" && a.ip().is_unspecified() =>
            {
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
    if out.is_empty() && spec.key == "listen" {
        return Err(Problem {
            problem: "the list is empty".into(),
            hint: format!(
                "use {}, or remove the key to use [daemon] bind",
                spec.expected
            ),
        });
    }
    Ok(Value::Listeners(out))
}

/// A login name (letters, digits, '.', '_', '-'; not starting with '-') or a numeric UID,
/// never root: cages never run as UID 0.
fn check_cage_user(spec: &KeySpec, text: &str) -> Result<String, Problem> {
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

fn absolute(text: &str) -> Option<PathBuf> {
    let p = PathBuf::from(text);
    p.is_absolute().then_some(p)
}

fn file_sink(text: &str) -> Option<PathBuf> {
    text.strip_prefix("file:").and_then(absolute)
}

fn storage_url(text: &str) -> Result<StorageUrl, Problem> {
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
        return Err(Problem {
            problem: "the PostgreSQL backend is not part of this kaged build".into(),
            hint: "use \"sqlite:///ABSOLUTE/PATH/kaged.db\" (the default) until PostgreSQL support lands".into(),
        });
    }
    Err(Problem {
        problem: format!("{text:?} is not a supported database URL"),
        hint: "use \"sqlite:///ABSOLUTE/PATH/kaged.db\"".into(),
    })
}

fn toml_type(v: &DeValue<'_>) -> &'static str {
    match v {
        DeValue::String(_) => "string",
        DeValue::Integer(_) => "integer",
        DeValue::Float(_) => "float",
        DeValue::Boolean(_) => "boolean",
        DeValue::Datetime(_) => "datetime",
        DeValue::Array(_) => "array",
        DeValue::Table(_) => "table",
    }
}

fn raw_from_toml(v: &DeValue<'_>) -> Raw {
    match v {
        DeValue::String(s) => Raw::Str(s.to_string()),
        DeValue::Boolean(b) => Raw::Bool(*b),
        DeValue::Integer(i) => match i64::from_str_radix(i.as_str(), i.radix()) {
            Ok(n) => Raw::Int(n),
            Err(_) => Raw::Other("integer too large"),
        },
        DeValue::Array(items) => {
            let mut out = Vec::new();
            for item in items {
                match item.get_ref() {
                    DeValue::String(s) => out.push(s.to_string()),
                    other => {
                        return Raw::Other(if toml_type(other) == "string" {
                            "array"
                        } else {
                            "array of non-strings"
                        });
                    }
                }
            }
            Raw::List(out)
        }
        other => Raw::Other(toml_type(other)),
    }
}

/// Everything explicitly set so far, highest precedence first wins (`entry().or_insert`).
type Explicit = BTreeMap<String, (Value, Source)>;

fn read_file(path: &Path, text: &str, out: &mut Explicit, errors: &mut Vec<ConfigError>) {
    let at = |offset: usize| {
        let (line, column) = line_column(text, offset);
        Location::File {
            path: path.to_path_buf(),
            line,
            column,
        }
    };
    let root = match DeTable::parse(text) {
        Ok(t) => t,
        Err(e) => {
            let offset = e.span().map(|s| s.start).unwrap_or(0);
            errors.push(ConfigError {
                location: at(offset),
                key: String::new(),
                problem: format!("TOML syntax error: {}", e.message().trim()),
                hint: "fix the syntax at this position (strings need double quotes)".into(),
            });
            return;
        }
    };
    let sections = keys::sections();
    // Top-level tables, then nested ones such as [auth.proxy], in file order.
    let mut tables: Vec<(String, &DeTable<'_>)> = Vec::new();
    for (name, value) in root.get_ref().iter() {
        let section = name.get_ref().as_ref();
        let DeValue::Table(table) = value.get_ref() else {
            errors.push(ConfigError {
                location: at(name.span().start),
                key: section.to_string(),
                problem: format!("top-level key {section:?} must be a [section]"),
                hint: format!("known sections: {}", sections.join(", ")),
            });
            continue;
        };
        if !sections.contains(&section) {
            let hint = match keys::closest(section, &sections) {
                Some(s) => format!(
                    "did you mean [{s}]? known sections: {}",
                    sections.join(", ")
                ),
                None => format!("remove it; known sections: {}", sections.join(", ")),
            };
            errors.push(ConfigError {
                location: at(name.span().start),
                key: section.to_string(),
                problem: format!("unknown section [{section}]"),
                hint,
            });
            continue;
        }
        tables.push((section.to_string(), table));
    }
    let mut index = 0;
    while index < tables.len() {
        let (section, table) = (tables[index].0.clone(), tables[index].1);
        index += 1;
        for (k, v) in table.iter() {
            let key = k.get_ref().as_ref();
            let location = at(k.span().start);
            let nested = format!("{section}.{key}");
            if let DeValue::Table(sub) = v.get_ref()
                && sections.contains(&nested.as_str())
            {
                tables.push((nested, sub));
                continue;
            }
            let Some(spec) = keys::find(&section, key) else {
                let known = keys::keys_of(&section);
                let hint = match keys::closest(key, &known) {
                    Some(s) => format!(
                        "did you mean `{s}`? keys of [{section}]: {}",
                        known.join(", ")
                    ),
                    None => format!("remove it; keys of [{section}]: {}", known.join(", ")),
                };
                errors.push(ConfigError {
                    location,
                    key: nested,
                    problem: format!("unknown key `{key}` in [{section}]"),
                    hint,
                });
                continue;
            };
            let line = match &location {
                Location::File { line, .. } => *line,
                _ => 0,
            };
            match check(spec, raw_from_toml(v.get_ref())) {
                Ok(value) => {
                    out.entry(spec.path())
                        .or_insert((value, Source::File { line }));
                }
                Err(p) => errors.push(ConfigError {
                    location,
                    key: spec.path(),
                    problem: p.problem,
                    hint: p.hint,
                }),
            }
        }
    }
}

/// Resolve the settings from defaults, the file text (if the file exists), the environment and
/// flags. Returns every problem found, not just the first.
pub fn resolve(
    decision: &ModeDecision,
    config_file: &Path,
    file_text: Option<&str>,
    env: &BTreeMap<String, String>,
    flags: &FlagOverrides,
) -> Result<Settings, ConfigErrors> {
    let mut explicit = Explicit::new();
    let mut errors = Vec::new();

    // Highest precedence first: the first value recorded for a key wins.
    let bind_spec = keys::find("daemon", "bind");
    if let (Some(bind), Some(spec)) = (&flags.bind, bind_spec) {
        match check(spec, Raw::Str(bind.clone())) {
            Ok(v) => {
                explicit.insert(
                    spec.path(),
                    (
                        v,
                        Source::Flag {
                            flag: "--bind".into(),
                        },
                    ),
                );
            }
            Err(p) => errors.push(ConfigError {
                location: Location::Flag {
                    flag: "--bind".into(),
                },
                key: spec.path(),
                problem: p.problem,
                hint: p.hint,
            }),
        }
    }
    for spec in KEYS {
        let Some(text) = env.get(spec.env).filter(|v| !v.is_empty()) else {
            continue;
        };
        // A flag for the same key shadows the variable, valid or not.
        if spec.key == "bind" && flags.bind.is_some() {
            continue;
        }
        match check(spec, raw_from_env(spec, text)) {
            Ok(v) => {
                explicit.insert(
                    spec.path(),
                    (
                        v,
                        Source::Env {
                            var: spec.env.into(),
                        },
                    ),
                );
            }
            Err(p) => errors.push(ConfigError {
                location: Location::Env {
                    var: spec.env.into(),
                },
                key: spec.path(),
                problem: p.problem,
                hint: p.hint,
            }),
        }
    }
    if let Some(text) = file_text {
        read_file(config_file, text, &mut explicit, &mut errors);
    }
    if !errors.is_empty() {
        errors.sort_by_key(|e| match &e.location {
            Location::Flag { .. } => (0, 0),
            Location::Env { .. } => (1, 0),
            Location::File { line, .. } => (2, *line),
        });
        return Err(ConfigErrors(errors));
    }

    let bind_explicit = explicit.contains_key("daemon.bind");
    let mut sources = BTreeMap::new();
    let mut take = |key: &str| -> Option<Value> {
        let (value, source) = match explicit.remove(key) {
            Some((v, s)) => (Some(v), s),
            None => (None, Source::Default),
        };
        sources.insert(key.to_string(), source);
        value
    };

    let bind = match take("daemon.bind") {
        Some(Value::Bind(b)) => b,
        _ => default_bind(),
    };
    let listen = match take("daemon.listen") {
        Some(Value::Listeners(l)) => Some(l),
        _ => None,
    };
    let trusted_actor_header = match take("auth.proxy.trusted_actor_header") {
        Some(Value::Header(h)) => Some(h),
        _ => None,
    };
    let trusted_proxy_listeners = match take("auth.proxy.trusted_proxy_listeners") {
        Some(Value::Listeners(l)) => l,
        _ => Vec::new(),
    };
    let home = match take("daemon.home") {
        Some(Value::Path(p)) => p,
        _ => decision.paths.data_dir.clone(),
    };
    let auth_mode = match take("auth.mode") {
        Some(Value::Auth(a)) => a,
        _ => AuthMode::Secure,
    };
    let auth = match (flags.insecure, auth_mode, decision.mode) {
        _ if flags.insecure_readonly => AuthMechanism::InsecureReadonly,
        (true, _, _) => AuthMechanism::Insecure,
        (false, AuthMode::Sidecar, _) | (false, AuthMode::Secure, DeploymentMode::System) => {
            AuthMechanism::Sidecar
        }
        (false, AuthMode::Secure, DeploymentMode::User) => AuthMechanism::LaunchUrl,
    };
    let mut sandbox_mode = match take("sandbox.mode") {
        Some(Value::Sandbox(s)) => s,
        _ => SandboxMode::Enabled,
    };
    if flags.no_sandbox {
        sandbox_mode = SandboxMode::Disabled;
    }
    let mut settings = Settings {
        mode: decision.mode,
        config_file: config_file.to_path_buf(),
        bind,
        listeners: match (&flags.bind, &listen) {
            (None, Some(l)) => l.clone(),
            _ => vec![Listener::Tcp(bind)],
        },
        trusted_actor_header,
        trusted_proxy_listeners,
        allowed_hosts: match take("daemon.allowed_hosts") {
            Some(Value::Hosts(h)) => h,
            _ => Vec::new(),
        },
        header_timeout_secs: number(take("daemon.header_timeout"), 10),
        idle_timeout_secs: number(take("daemon.idle_timeout"), 60),
        max_waiting_connections: number(take("daemon.max_waiting_connections"), 512),
        auth_mode,
        auth,
        auth_token: match take("auth.token") {
            Some(Value::Secret(t)) => Some(t),
            _ => None,
        },
        trust_private_network: matches!(
            take("auth.trust_private_network"),
            Some(Value::Bool(true))
        ),
        require_token_identity: matches!(
            take("auth.require_token_identity"),
            Some(Value::Bool(true))
        ),
        storage_url: match take("storage.url") {
            Some(Value::Storage(s)) => s,
            _ => StorageUrl::Sqlite(home.join("kaged.db")),
        },
        sandbox_mode,
        default_seccomp: match take("sandbox.default_seccomp") {
            Some(Value::Name(n)) => n,
            _ => "default".into(),
        },
        cage_user: match take("sandbox.cage_user") {
            Some(Value::Name(n)) => n,
            _ => "nobody".into(),
        },
        cage_limits: CageLimits {
            pids: nonzero(number(take("sandbox.pids"), CageLimits::DEFAULT_PIDS)),
            memory_mb: nonzero(number(
                take("sandbox.memory_mb"),
                CageLimits::DEFAULT_MEMORY_MB,
            )),
            wall_time_secs: nonzero(number(
                take("sandbox.wall_time_secs"),
                CageLimits::DEFAULT_WALL_TIME_SECS,
            )),
        },
        log_operational: match take("logging.operational") {
            Some(Value::Operational(o)) => o,
            _ => OperationalSink::Stderr,
        },
        log_audit: match take("logging.audit") {
            Some(Value::Audit(a)) => a,
            _ => AuditSink::File(home.join("audit.log")),
        },
        log_level: match take("logging.level") {
            Some(Value::Level(l)) => l,
            _ => LogLevel::Info,
        },
        plugins_dir: match take("plugins.dir") {
            Some(Value::Path(p)) => p,
            _ => home.join("plugins"),
        },
        plugins_enabled: match take("plugins.enabled") {
            Some(Value::Names(n)) => n,
            _ => Vec::new(),
        },
        ui_serve: match take("ui.serve") {
            Some(Value::Bool(b)) => b,
            _ => true,
        },
        sessions_max_total_mb: number(take("sessions.max_total_mb"), DEFAULT_MAX_TOTAL_MB),
        sessions_max_age_days: number(take("sessions.max_age_days"), DEFAULT_MAX_AGE_DAYS),
        transcript_max_mb: number(
            take("sessions.transcript_max_mb"),
            DEFAULT_TRANSCRIPT_MAX_MB,
        ),
        home,
        sources,
    };
    let cross = cross_checks(
        &settings,
        config_file,
        flags,
        listen.is_some() && bind_explicit,
    );
    if !cross.is_empty() {
        return Err(ConfigErrors(cross));
    }
    if flags.no_sandbox {
        settings.sources.insert(
            "sandbox.mode".into(),
            Source::Flag {
                flag: "--no-sandbox".into(),
            },
        );
    }
    Ok(settings)
}

/// `[sessions] max_total_mb`: 2 GiB of transcripts in all, a small share of a laptop's disk
/// that still holds weeks of ordinary agent and terminal sessions.
pub const DEFAULT_MAX_TOTAL_MB: u64 = 2048;
/// `[sessions] max_age_days`: a month of history.
pub const DEFAULT_MAX_AGE_DAYS: u64 = 30;
/// `[sessions] transcript_max_mb`: one runaway session (a build log in a loop) cannot take
/// more than 64 MiB, yet a long ordinary session keeps all of its output.
pub const DEFAULT_TRANSCRIPT_MAX_MB: u64 = 64;

fn number(value: Option<Value>, default: u64) -> u64 {
    match value {
        Some(Value::Number(n)) => n,
        _ => default,
    }
}

fn nonzero(n: u64) -> Option<u64> {
    (n != 0).then_some(n)
}

/// Where a resolved key's value came from, as an error location.
fn location_of(settings: &Settings, config_file: &Path, key: &str) -> Location {
    match settings.sources.get(key) {
        Some(Source::File { line }) => Location::File {
            path: config_file.to_path_buf(),
            line: *line,
            column: 1,
        },
        Some(Source::Flag { flag }) => Location::Flag { flag: flag.clone() },
        _ => Location::Env {
            var: KEYS
                .iter()
                .find(|k| k.path() == key)
                .map(|k| k.env.to_string())
                .unwrap_or_default(),
        },
    }
}

/// Rules that involve more than one key.
fn cross_checks(
    s: &Settings,
    config_file: &Path,
    flags: &FlagOverrides,
    bind_and_listen: bool,
) -> Vec<ConfigError> {
    let mut errors = Vec::new();
    let mut fail = |key: &str, location: Location, problem: &str, hint: &str| {
        errors.push(ConfigError {
            location,
            key: key.into(),
            problem: problem.into(),
            hint: hint.into(),
        })
    };
    if flags.insecure && flags.insecure_readonly {
        fail(
            "",
            Location::Flag {
                flag: "--insecure-readonly".into(),
            },
            "--insecure and --insecure-readonly exclude each other",
            "keep one of them",
        );
    }
    if flags.bind.is_none() && bind_and_listen {
        fail(
            "daemon.listen",
            location_of(s, config_file, "daemon.listen"),
            "both [daemon] bind and [daemon] listen are set",
            "keep listen (it may hold several listeners) and remove bind, or the other way round",
        );
    }
    if s.require_token_identity && s.auth_token.is_none() {
        fail(
            "auth.require_token_identity",
            location_of(s, config_file, "auth.require_token_identity"),
            "require_token_identity needs a bootstrap token to administer user tokens",
            "set [auth] token (or KAGED_AUTH_TOKEN) to `openssl rand -hex 32` output",
        );
    }
    if s.require_token_identity && flags.insecure_readonly {
        fail(
            "auth.require_token_identity",
            Location::Flag {
                flag: "--insecure-readonly".into(),
            },
            "require_token_identity cannot be combined with --insecure-readonly",
            "drop --insecure-readonly, or set require_token_identity = false",
        );
    }
    match (
        &s.trusted_actor_header,
        s.trusted_proxy_listeners.is_empty(),
    ) {
        (Some(_), true) => fail(
            "auth.proxy.trusted_actor_header",
            location_of(s, config_file, "auth.proxy.trusted_actor_header"),
            "trusted_actor_header is set but trusted_proxy_listeners is empty, so it would be honoured nowhere",
            "list the listener only the proxy reaches, e.g. trusted_proxy_listeners = [\"unix:///run/kaged/proxy.sock\"]",
        ),
        (None, false) => fail(
            "auth.proxy.trusted_proxy_listeners",
            location_of(s, config_file, "auth.proxy.trusted_proxy_listeners"),
            "trusted_proxy_listeners is set but trusted_actor_header is not",
            "set trusted_actor_header (e.g. \"X-Kaged-Actor\"), or remove trusted_proxy_listeners",
        ),
        _ => {}
    }
    for l in &s.trusted_proxy_listeners {
        if !s.listeners.contains(l) {
            let listening: Vec<String> = s.listeners.iter().map(ToString::to_string).collect();
            fail(
                "auth.proxy.trusted_proxy_listeners",
                location_of(s, config_file, "auth.proxy.trusted_proxy_listeners"),
                &format!(
                    "{l} is not one of the daemon's listeners ({})",
                    listening.join(", ")
                ),
                "use an exact entry of [daemon] listen",
            );
        }
    }
    errors
}

fn default_bind() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 7777))
}

/// `s` as a TOML basic string. (Rust's `{:?}` is not one: it writes `\u{1}` and `\'`.)
fn toml_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The `config.toml` written on first per-user launch: every key, with its default and meaning.
pub fn render_default_config(s: &Settings) -> String {
    let sink = |p: &Path| toml_string(&format!("file:{}", p.display()));
    let operational = match &s.log_operational {
        OperationalSink::Stderr => toml_string("stderr"),
        OperationalSink::File(p) => sink(p),
    };
    let AuditSink::File(audit) = &s.log_audit;
    let plugins: Vec<String> = s.plugins_enabled.iter().map(|p| toml_string(p)).collect();
    let doc = |section: &str, key: &str| {
        KEYS.iter()
            .find(|k| k.section == section && k.key == key)
            .map(|k| format!("# {} (env {})", k.doc, k.env))
            .unwrap_or_default()
    };
    format!(
        "# kaged configuration ({mode} mode), written on first launch.\n\
         # Precedence: command-line flags > KAGED_* environment > this file > defaults.\n\n\
         [daemon]\n{}\nbind = {}\n{}\n# listen = [\"127.0.0.1:7777\", \"unix:///PATH/kaged.sock\"]\n{}\nhome = {}\n{}\nallowed_hosts = []\n{}\nheader_timeout = {}\n{}\nidle_timeout = {}\n{}\nmax_waiting_connections = {}\n\n\
         [auth]\n{}\nmode = \"secure\"\n{}\n# token = \"\"\n{}\ntrust_private_network = false\n{}\nrequire_token_identity = false\n\n\
         # [auth.proxy]\n{}\n# trusted_actor_header = \"X-Kaged-Actor\"\n{}\n# trusted_proxy_listeners = [\"unix:///PATH/proxy.sock\"]\n\n\
         [storage]\n{}\nurl = {}\n\n\
         [sandbox]\n{}\nmode = {}\n{}\ndefault_seccomp = {}\n{}\ncage_user = {}\n{}\npids = {}\n{}\nmemory_mb = {}\n{}\nwall_time_secs = {}\n\n\
         [logging]\n{}\noperational = {}\n{}\naudit = {}\n{}\nlevel = {}\n\n\
         [plugins]\n{}\ndir = {}\n{}\nenabled = [{}]\n\n\
         [sessions]\n{}\nmax_total_mb = {}\n{}\nmax_age_days = {}\n{}\ntranscript_max_mb = {}\n\n\
         [ui]\n{}\nserve = {}\n",
        doc("daemon", "bind"),
        toml_string(&s.bind.to_string()),
        doc("daemon", "listen"),
        doc("daemon", "home"),
        toml_string(&s.home.display().to_string()),
        doc("daemon", "allowed_hosts"),
        doc("daemon", "header_timeout"),
        s.header_timeout_secs,
        doc("daemon", "idle_timeout"),
        s.idle_timeout_secs,
        doc("daemon", "max_waiting_connections"),
        s.max_waiting_connections,
        doc("auth", "mode"),
        doc("auth", "token"),
        doc("auth", "trust_private_network"),
        doc("auth", "require_token_identity"),
        doc("auth.proxy", "trusted_actor_header"),
        doc("auth.proxy", "trusted_proxy_listeners"),
        doc("storage", "url"),
        toml_string(&s.storage_url.to_string()),
        doc("sandbox", "mode"),
        toml_string(match s.sandbox_mode {
            SandboxMode::Enabled => "enabled",
            SandboxMode::Disabled => "disabled",
        }),
        doc("sandbox", "default_seccomp"),
        toml_string(&s.default_seccomp),
        doc("sandbox", "cage_user"),
        toml_string(&s.cage_user),
        doc("sandbox", "pids"),
        s.cage_limits.pids.unwrap_or(0),
        doc("sandbox", "memory_mb"),
        s.cage_limits.memory_mb.unwrap_or(0),
        doc("sandbox", "wall_time_secs"),
        s.cage_limits.wall_time_secs.unwrap_or(0),
        doc("logging", "operational"),
        operational,
        doc("logging", "audit"),
        sink(audit),
        doc("logging", "level"),
        toml_string(s.log_level.as_str()),
        doc("plugins", "dir"),
        toml_string(&s.plugins_dir.display().to_string()),
        doc("plugins", "enabled"),
        plugins.join(", "),
        doc("sessions", "max_total_mb"),
        s.sessions_max_total_mb,
        doc("sessions", "max_age_days"),
        s.sessions_max_age_days,
        doc("sessions", "transcript_max_mb"),
        s.transcript_max_mb,
        doc("ui", "serve"),
        s.ui_serve,
        mode = s.mode.describe(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mode::{Facts, decide_mode};

    fn decision() -> ModeDecision {
        let facts = Facts {
            uid: 1000,
            user_name: Some("ann".into()),
            env: [("HOME".to_string(), "/home/ann".to_string())].into(),
            existing_dirs: Default::default(),
        };
        decide_mode(&facts, None).unwrap()
    }

    fn cfg() -> PathBuf {
        PathBuf::from("/home/ann/.config/kaged/config.toml")
    }

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn resolve_text(text: &str) -> Result<Settings, ConfigErrors> {
        resolve(
            &decision(),
            &cfg(),
            Some(text),
            &BTreeMap::new(),
            &FlagOverrides::default(),
        )
    }

    fn only_error(text: &str) -> ConfigError {
        let errs = resolve_text(text).unwrap_err().0;
        assert_eq!(errs.len(), 1, "{errs:?}");
        errs.into_iter().next().unwrap()
    }

    #[test]
    fn rendered_strings_are_toml_strings() {
        // Found by the config_toml fuzz target: `{:?}` wrote `"/\u{1}"`, which TOML refuses.
        for text in [
            "/\u{1}",
            "a\"b\\c",
            "tab\tnew\nline\r",
            "\u{1b}[31m\u{7f}\u{85}",
            "é 🙂 'q'",
        ] {
            let parsed: toml::Table =
                toml::from_str(&format!("k = {}", toml_string(text))).unwrap();
            assert_eq!(parsed["k"].as_str(), Some(text), "{text:?}");
        }
    }

    #[test]
    fn defaults_follow_the_mode_paths() {
        let s = resolve(
            &decision(),
            &cfg(),
            None,
            &BTreeMap::new(),
            &FlagOverrides::default(),
        )
        .unwrap();
        assert_eq!(s.bind.to_string(), "127.0.0.1:7777");
        assert_eq!(s.home, PathBuf::from("/home/ann/.local/share/kaged"));
        assert_eq!(
            s.storage_url.to_string(),
            "sqlite:///home/ann/.local/share/kaged/kaged.db"
        );
        assert_eq!(
            s.log_audit,
            AuditSink::File("/home/ann/.local/share/kaged/audit.log".into())
        );
        assert_eq!(s.sources["daemon.bind"], Source::Default);
    }

    #[test]
    fn the_seed_per_user_example_parses() {
        let text = r#"
[daemon]
bind = "127.0.0.1:7777"
home = "/home/operator/.local/share/kaged"
[auth]
mode = "secure" # cookie-nonce auth
[storage]
url = "sqlite:///home/operator/.local/share/kaged/kaged.db"
[sandbox]
mode = "enabled"
default_seccomp = "default"
[logging]
operational = "stderr"
audit = "file:/home/operator/.local/share/kaged/audit.log"
level = "info"
[plugins]
dir = "/home/operator/.local/share/kaged/plugins"
enabled = []
[ui]
serve = true
"#;
        let s = resolve_text(text).unwrap();
        assert_eq!(s.home, PathBuf::from("/home/operator/.local/share/kaged"));
        assert_eq!(s.sources["daemon.bind"], Source::File { line: 3 });
    }

    #[test]
    fn home_moves_the_derived_defaults() {
        let s = resolve_text("[daemon]\nhome = \"/srv/k\"\n").unwrap();
        assert_eq!(s.storage_url, StorageUrl::Sqlite("/srv/k/kaged.db".into()));
        assert_eq!(s.plugins_dir, PathBuf::from("/srv/k/plugins"));
    }

    #[test]
    fn precedence_is_flag_then_env_then_file_then_default() {
        let text = "[daemon]\nbind = \"127.0.0.1:1001\"\n[logging]\nlevel = \"warn\"\n";
        let e = env(&[
            ("KAGED_BIND", "127.0.0.1:1002"),
            ("KAGED_LOG_LEVEL", "debug"),
        ]);
        let flags = FlagOverrides {
            bind: Some("127.0.0.1:1003".into()),
            ..Default::default()
        };
        let s = resolve(&decision(), &cfg(), Some(text), &e, &flags).unwrap();
        assert_eq!(s.bind.port(), 1003);
        assert_eq!(
            s.sources["daemon.bind"],
            Source::Flag {
                flag: "--bind".into()
            }
        );
        assert_eq!(s.log_level, LogLevel::Debug);
        assert_eq!(
            s.sources["logging.level"],
            Source::Env {
                var: "KAGED_LOG_LEVEL".into()
            }
        );

        let s = resolve(
            &decision(),
            &cfg(),
            Some(text),
            &e,
            &FlagOverrides::default(),
        )
        .unwrap();
        assert_eq!(s.bind.port(), 1002);
        let s = resolve(
            &decision(),
            &cfg(),
            Some(text),
            &BTreeMap::new(),
            &FlagOverrides::default(),
        )
        .unwrap();
        assert_eq!(s.bind.port(), 1001);
        assert_eq!(s.log_level, LogLevel::Warn);
        assert_eq!(s.sources["logging.level"], Source::File { line: 4 });
    }

    #[test]
    fn auth_mechanism_follows_mode_setting_and_insecure_flag() {
        let user = decision();
        let mut system = decision();
        system.mode = DeploymentMode::System;
        let none = BTreeMap::new();
        let r = |d: &ModeDecision, text: &str, insecure: bool| {
            let flags = FlagOverrides {
                insecure,
                ..Default::default()
            };
            resolve(d, &cfg(), Some(text), &none, &flags).unwrap().auth
        };
        assert_eq!(r(&user, "", false), AuthMechanism::LaunchUrl);
        assert_eq!(r(&system, "", false), AuthMechanism::Sidecar);
        assert_eq!(
            r(&system, "[auth]\nmode = \"secure\"", false),
            AuthMechanism::Sidecar
        );
        assert_eq!(
            r(&user, "[auth]\nmode = \"sidecar\"", false),
            AuthMechanism::Sidecar
        );
        assert_eq!(
            r(&user, "[auth]\nmode = \"sidecar\"", true),
            AuthMechanism::Insecure
        );
    }

    #[test]
    fn no_sandbox_flag_disables_the_sandbox_and_says_so() {
        let flags = FlagOverrides {
            no_sandbox: true,
            ..Default::default()
        };
        let s = resolve(
            &decision(),
            &cfg(),
            Some("[sandbox]\nmode = \"enabled\""),
            &BTreeMap::new(),
            &flags,
        )
        .unwrap();
        assert_eq!(s.sandbox_mode, SandboxMode::Disabled);
        assert_eq!(
            s.sources["sandbox.mode"],
            Source::Flag {
                flag: "--no-sandbox".into()
            }
        );
    }

    #[test]
    fn allowed_hosts_accept_names_and_ports_only() {
        let s = resolve_text(
            "[daemon]\nallowed_hosts = [\"Kaged.Example.com\", \"10.0.0.2:8443\", \"[::1]:7\"]",
        )
        .unwrap();
        assert_eq!(
            s.allowed_hosts,
            vec!["kaged.example.com", "10.0.0.2:8443", "[::1]:7"]
        );
        for bad in [
            "https://kaged.example.com",
            "*.example.com",
            "a/b",
            "host:0",
            "host:x",
            "",
        ] {
            let e = only_error(&format!("[daemon]\nallowed_hosts = [{bad:?}]"));
            assert_eq!(e.key, "daemon.allowed_hosts", "{bad}");
        }
        let e = env(&[("KAGED_ALLOWED_HOSTS", "a.example, b.example:444")]);
        let s = resolve(&decision(), &cfg(), None, &e, &FlagOverrides::default()).unwrap();
        assert_eq!(s.allowed_hosts, vec!["a.example", "b.example:444"]);
    }

    #[test]
    fn bearer_settings_parse_and_identity_mode_needs_a_token() {
        let token = "0123456789abcdef".repeat(3);
        let s = resolve_text(&format!(
            "[auth]\ntoken = \"{token}\"\ntrust_private_network = true\nrequire_token_identity = true\n"
        ))
        .unwrap();
        assert_eq!(
            s.auth_token.as_ref().map(ConfigSecret::expose),
            Some(token.as_str())
        );
        assert!(s.trust_private_network && s.require_token_identity);
        assert!(
            !format!("{s:?}").contains(&token),
            "Debug redacts the token"
        );
        assert!(
            !serde_json::to_string(&s).unwrap().contains(&token),
            "never serialized"
        );

        let e = only_error("[auth]\ntoken = \"change-me\"\n");
        assert!(
            e.problem.contains("too weak") && !e.to_string().contains("change-me"),
            "{e}"
        );
        let e = only_error("[auth]\nrequire_token_identity = true\n");
        assert_eq!(e.key, "auth.require_token_identity");
        assert!(matches!(e.location, Location::File { line: 2, .. }));

        let env_vars = env(&[
            ("KAGED_TRUST_PRIVATE_NETWORK", "1"),
            ("KAGED_AUTH_TOKEN", &token),
        ]);
        let s = resolve(
            &decision(),
            &cfg(),
            None,
            &env_vars,
            &FlagOverrides::default(),
        )
        .unwrap();
        assert!(s.trust_private_network);
        assert!(s.auth_token.is_some());
    }

    #[test]
    fn listeners_and_trusted_proxy_rules() {
        let s = resolve_text(
            "[daemon]\nlisten = [\"127.0.0.1:7001\", \"unix:///run/k/proxy.sock\"]\n\
             [auth.proxy]\ntrusted_actor_header = \"X-Kaged-Actor\"\n\
             trusted_proxy_listeners = [\"unix:///run/k/proxy.sock\"]\n",
        )
        .unwrap();
        assert_eq!(s.listeners.len(), 2);
        assert_eq!(s.listeners[1].to_string(), "unix:///run/k/proxy.sock");
        assert_eq!(s.trusted_actor_header.as_deref(), Some("x-kaged-actor"));
        assert_eq!(
            s.sources["auth.proxy.trusted_actor_header"],
            Source::File { line: 4 }
        );

        // --bind is the one-listener shortcut and wins.
        let flags = FlagOverrides {
            bind: Some("127.0.0.1:9".into()),
            ..Default::default()
        };
        let s = resolve(
            &decision(),
            &cfg(),
            Some("[daemon]\nlisten = [\"127.0.0.1:7001\"]"),
            &BTreeMap::new(),
            &flags,
        )
        .unwrap();
        assert_eq!(
            s.listeners,
            vec![Listener::Tcp("127.0.0.1:9".parse().unwrap())]
        );

        let cases = [
            (
                "[daemon]\nlisten = [\"nowhere\"]",
                "daemon.listen",
                "not a listener",
            ),
            ("[daemon]\nlisten = []", "daemon.listen", "empty"),
            (
                "[daemon]\nlisten = [\"unix://relative.sock\"]",
                "daemon.listen",
                "not a listener",
            ),
            (
                "[daemon]\nbind = \"127.0.0.1:1\"\nlisten = [\"127.0.0.1:2\"]",
                "daemon.listen",
                "both",
            ),
            (
                "[auth.proxy]\ntrusted_actor_header = \"X-A\"",
                "auth.proxy.trusted_actor_header",
                "honoured nowhere",
            ),
            (
                "[auth.proxy]\ntrusted_proxy_listeners = [\"127.0.0.1:7777\"]",
                "auth.proxy.trusted_proxy_listeners",
                "trusted_actor_header is not",
            ),
            (
                "[auth.proxy]\ntrusted_actor_header = \"X-A\"\ntrusted_proxy_listeners = [\"0.0.0.0:7777\"]",
                "auth.proxy.trusted_proxy_listeners",
                "wildcard",
            ),
            (
                "[auth.proxy]\ntrusted_actor_header = \"X-A\"\ntrusted_proxy_listeners = [\"127.0.0.1:1\"]",
                "auth.proxy.trusted_proxy_listeners",
                "not one of the daemon's listeners",
            ),
            (
                "[auth.proxy]\ntrusted_actor_header = \"Authorization\"\ntrusted_proxy_listeners = [\"127.0.0.1:7777\"]",
                "auth.proxy.trusted_actor_header",
                "not usable",
            ),
            (
                "[auth.proxy]\nactor = \"x\"",
                "auth.proxy.actor",
                "unknown key",
            ),
        ];
        for (text, key, needle) in cases {
            let errs = resolve_text(text).unwrap_err().0;
            assert!(
                errs.iter()
                    .any(|e| e.key == key && e.to_string().contains(needle)),
                "{text}: {errs:?}"
            );
        }
        let flags = FlagOverrides {
            insecure: true,
            insecure_readonly: true,
            ..Default::default()
        };
        assert!(resolve(&decision(), &cfg(), None, &BTreeMap::new(), &flags).is_err());
        let flags = FlagOverrides {
            insecure_readonly: true,
            ..Default::default()
        };
        let s = resolve(&decision(), &cfg(), None, &BTreeMap::new(), &flags).unwrap();
        assert_eq!(s.auth, AuthMechanism::InsecureReadonly);
    }

    #[test]
    fn an_empty_variable_never_turns_a_file_setting_off() {
        let text = "[daemon]\nlisten = [\"127.0.0.1:7777\"]\n[auth.proxy]\ntrusted_actor_header = \"X-A\"\ntrusted_proxy_listeners = [\"127.0.0.1:7777\"]\n";
        let e = env(&[
            ("KAGED_TRUSTED_ACTOR_HEADER", ""),
            ("KAGED_TRUSTED_PROXY_LISTENERS", ""),
        ]);
        let s = resolve(
            &decision(),
            &cfg(),
            Some(text),
            &e,
            &FlagOverrides::default(),
        )
        .unwrap();
        assert_eq!(s.trusted_actor_header.as_deref(), Some("x-a"));
        assert_eq!(s.trusted_proxy_listeners.len(), 1);
    }

    #[test]
    fn syntax_error_names_file_line_and_column() {
        let e = only_error("[daemon]\nbind = 127.0.0.1:7777\n");
        let Location::File { path, line, .. } = &e.location else {
            panic!("{e:?}")
        };
        assert_eq!(path, &cfg());
        assert_eq!(*line, 2);
        assert!(e.problem.starts_with("TOML syntax error"), "{e}");
    }

    #[test]
    fn unknown_section_and_key_suggest_the_right_name() {
        let errs = resolve_text("[deamon]\nbind = \"127.0.0.1:1\"\n[daemon]\nbnd = \"x\"\n")
            .unwrap_err()
            .0;
        assert_eq!(errs.len(), 2);
        assert_eq!(errs[0].key, "deamon");
        assert!(
            errs[0].hint.contains("did you mean [daemon]"),
            "{}",
            errs[0]
        );
        assert_eq!(errs[1].key, "daemon.bnd");
        assert!(errs[1].hint.contains("did you mean `bind`"), "{}", errs[1]);
        assert!(matches!(
            errs[1].location,
            Location::File {
                line: 4,
                column: 1,
                ..
            }
        ));
        let shown = errs[1].to_string();
        assert!(
            shown.starts_with("/home/ann/.config/kaged/config.toml:4:1: daemon.bnd: unknown key"),
            "{shown}"
        );
    }

    #[test]
    fn top_level_key_outside_a_section_is_rejected() {
        let e = only_error("bind = \"127.0.0.1:7777\"\n");
        assert!(e.problem.contains("must be a [section]"), "{e}");
    }

    #[test]
    fn every_key_rejects_a_bad_value_with_its_expected_form() {
        let cases = [
            (
                "[daemon]\nbind = \"localhost\"",
                "daemon.bind",
                "not an IP address with a port",
            ),
            ("[daemon]\nbind = 7777", "daemon.bind", "the number 7777"),
            (
                "[daemon]\nhome = \"relative/dir\"",
                "daemon.home",
                "absolute",
            ),
            ("[auth]\nmode = \"open\"", "auth.mode", "\"secure\""),
            (
                "[storage]\nurl = \"sqlite://kaged.db\"",
                "storage.url",
                "three slashes",
            ),
            (
                "[storage]\nurl = \"postgres://db/kaged\"",
                "storage.url",
                "PostgreSQL",
            ),
            (
                "[storage]\nurl = \"mysql://db\"",
                "storage.url",
                "not a supported database URL",
            ),
            (
                "[sandbox]\nmode = \"off\"",
                "sandbox.mode",
                "\"enabled\" or \"disabled\"",
            ),
            (
                "[sandbox]\ndefault_seccomp = \"none\"",
                "sandbox.default_seccomp",
                "\"default\"",
            ),
            (
                "[sandbox]\ncage_user = \"root\"",
                "sandbox.cage_user",
                "useradd",
            ),
            (
                "[sandbox]\ncage_user = \"0\"",
                "sandbox.cage_user",
                "never root",
            ),
            (
                "[sandbox]\ncage_user = \"a b\"",
                "sandbox.cage_user",
                "\"nobody\"",
            ),
            (
                "[sandbox]\ncage_user = 65534",
                "sandbox.cage_user",
                "the number 65534 is not valid here",
            ),
            (
                "[logging]\noperational = \"syslog\"",
                "logging.operational",
                "file:/ABSOLUTE/PATH",
            ),
            (
                "[logging]\naudit = \"stderr\"",
                "logging.audit",
                "file:/ABSOLUTE/PATH",
            ),
            (
                "[logging]\naudit = \"file:audit.log\"",
                "logging.audit",
                "file:/ABSOLUTE/PATH",
            ),
            ("[logging]\nlevel = \"loud\"", "logging.level", "\"trace\""),
            ("[plugins]\ndir = \"plugins\"", "plugins.dir", "absolute"),
            (
                "[plugins]\nenabled = \"git\"",
                "plugins.enabled",
                "list of plugin names",
            ),
            (
                "[plugins]\nenabled = [\"a b\"]",
                "plugins.enabled",
                "letters, digits",
            ),
            (
                "[plugins]\nenabled = [1]",
                "plugins.enabled",
                "list of plugin names",
            ),
            ("[ui]\nserve = \"yes\"", "ui.serve", "true or false"),
            (
                "[daemon]\nheader_timeout = 0",
                "daemon.header_timeout",
                "0 is out of range",
            ),
            (
                "[daemon]\nidle_timeout = \"60s\"",
                "daemon.idle_timeout",
                "whole number of seconds",
            ),
            (
                "[daemon]\nmax_waiting_connections = 1.5",
                "daemon.max_waiting_connections",
                "whole number",
            ),
        ];
        for (text, key, needle) in cases {
            let e = only_error(text);
            assert_eq!(e.key, key, "{text}");
            assert!(
                matches!(e.location, Location::File { line: 2, .. }),
                "{text}: {e:?}"
            );
            let shown = e.to_string();
            assert!(shown.contains(needle), "{text}: {shown}");
            assert!(shown.contains("fix:"), "{text}: {shown}");
        }
    }

    #[test]
    fn cage_limits_default_to_pids_and_memory_and_can_be_changed_or_turned_off() {
        let s = resolve_text("").unwrap();
        assert_eq!(
            s.cage_limits,
            CageLimits {
                pids: Some(1024),
                memory_mb: Some(4096),
                wall_time_secs: None,
            }
        );
        assert_eq!(s.sources["sandbox.pids"], Source::Default);
        let s = resolve(
            &decision(),
            &cfg(),
            Some("[sandbox]\npids = 0\nmemory_mb = 512\nwall_time_secs = 3600\n"),
            &env(&[("KAGED_SANDBOX_PIDS", "64")]),
            &FlagOverrides::default(),
        )
        .unwrap();
        assert_eq!(
            s.cage_limits,
            CageLimits {
                pids: Some(64),
                memory_mb: Some(512),
                wall_time_secs: Some(3600),
            }
        );
        let s = resolve_text("[sandbox]\npids = 0\nmemory_mb = 0\n").unwrap();
        assert_eq!((s.cage_limits.pids, s.cage_limits.memory_mb), (None, None));
        let e = only_error("[sandbox]\npids = 100001");
        assert_eq!(e.key, "sandbox.pids");
        assert!(
            matches!(e.location, Location::File { line: 2, .. }),
            "{e:?}"
        );
        assert!(e.to_string().contains("out of range"), "{e}");
        let e = only_error("[sandbox]\nmemory_mb = \"4G\"");
        assert_eq!(e.key, "sandbox.memory_mb");
        assert!(e.to_string().contains("whole number of MiB"), "{e}");
        let errs = resolve(
            &decision(),
            &cfg(),
            None,
            &env(&[("KAGED_SANDBOX_WALL_TIME_SECS", "-1")]),
            &FlagOverrides::default(),
        )
        .unwrap_err();
        assert!(
            matches!(&errs.0[0].location, Location::Env { var } if var == "KAGED_SANDBOX_WALL_TIME_SECS"),
            "{errs:?}"
        );
        let text = render_default_config(&resolve_text("").unwrap());
        assert!(
            text.contains("pids = 1024\n")
                && text.contains("memory_mb = 4096\n")
                && text.contains("wall_time_secs = 0\n")
                && text.contains("KAGED_SANDBOX_PIDS"),
            "{text}"
        );
    }

    #[test]
    fn connection_limits_come_from_the_file_or_the_environment() {
        let s = resolve_text("").unwrap();
        assert_eq!(
            (
                s.header_timeout_secs,
                s.idle_timeout_secs,
                s.max_waiting_connections
            ),
            (10, 60, 512)
        );
        let s = resolve(
            &decision(),
            &cfg(),
            Some("[daemon]\nheader_timeout = 5\nidle_timeout = 0x1e\nmax_waiting_connections = 1_000\n"),
            &env(&[("KAGED_HEADER_TIMEOUT", " 2 ")]),
            &FlagOverrides::default(),
        )
        .unwrap();
        assert_eq!(
            (
                s.header_timeout_secs,
                s.idle_timeout_secs,
                s.max_waiting_connections
            ),
            (2, 30, 1000)
        );
        let errs = resolve(
            &decision(),
            &cfg(),
            None,
            &env(&[("KAGED_MAX_WAITING_CONNECTIONS", "lots")]),
            &FlagOverrides::default(),
        )
        .unwrap_err();
        assert!(
            errs.to_string().contains("KAGED_MAX_WAITING_CONNECTIONS"),
            "{errs}"
        );
    }

    #[test]
    fn retention_limits_have_laptop_defaults_and_are_checked() {
        let s = resolve_text("").unwrap();
        assert_eq!(
            (
                s.sessions_max_total_mb,
                s.sessions_max_age_days,
                s.transcript_max_mb
            ),
            (2048, 30, 64)
        );
        let s = resolve(
            &decision(),
            &cfg(),
            Some("[sessions]\nmax_total_mb = 100\nmax_age_days = 7\ntranscript_max_mb = 8\n"),
            &env(&[("KAGED_SESSIONS_MAX_AGE_DAYS", "3")]),
            &FlagOverrides::default(),
        )
        .unwrap();
        assert_eq!(
            (
                s.sessions_max_total_mb,
                s.sessions_max_age_days,
                s.transcript_max_mb
            ),
            (100, 3, 8)
        );
        let e = only_error("[sessions]\nmax_total_mb = 0\n");
        assert_eq!(e.key, "sessions.max_total_mb");
        assert!(e.to_string().contains("out of range"), "{e}");
        assert!(e.to_string().contains(":2"), "{e}");
        let e = only_error("[sessions]\ntranscript_max_mb = \"64M\"\n");
        assert_eq!(e.key, "sessions.transcript_max_mb");
        let e = only_error("[sessions]\nmax_age_day = 3\n");
        assert!(e.to_string().contains("max_age_days"), "{e}");
    }

    #[test]
    fn the_cage_user_defaults_to_nobody_and_is_never_root() {
        assert_eq!(resolve_text("").unwrap().cage_user, "nobody");
        let s = resolve_text("[sandbox]\ncage_user = \"kaged-cage\"").unwrap();
        assert_eq!(s.cage_user, "kaged-cage");
        assert_eq!(
            resolve_text("[sandbox]\ncage_user = \"1001\"")
                .unwrap()
                .cage_user,
            "1001"
        );
        let flags = FlagOverrides::default();
        for root in ["0", "root", "000"] {
            let errs = resolve(
                &decision(),
                &cfg(),
                None,
                &env(&[("KAGED_SANDBOX_CAGE_USER", root)]),
                &flags,
            )
            .unwrap_err()
            .0;
            assert_eq!(errs.len(), 1, "{root}: {errs:?}");
            assert!(
                matches!(&errs[0].location, Location::Env { var } if var == "KAGED_SANDBOX_CAGE_USER"),
                "{errs:?}"
            );
            assert!(errs[0].problem.contains("never run as UID 0"), "{errs:?}");
        }
    }

    #[test]
    fn all_problems_are_reported_at_once() {
        let errs =
            resolve_text("[daemon]\nbind = \"x\"\nhome = \"y\"\n[ui]\nserve = 3\n").unwrap_err();
        assert_eq!(errs.0.len(), 3);
        assert!(
            errs.to_string()
                .starts_with("invalid configuration (3 problems):")
        );
    }

    #[test]
    fn bad_environment_and_flag_values_name_their_source() {
        let e = env(&[("KAGED_UI_SERVE", "maybe"), ("KAGED_BIND", "nowhere")]);
        let flags = FlagOverrides {
            bind: Some("also-nowhere".into()),
            ..Default::default()
        };
        let errs = resolve(&decision(), &cfg(), None, &e, &flags)
            .unwrap_err()
            .0;
        assert_eq!(
            errs[0].location,
            Location::Flag {
                flag: "--bind".into()
            }
        );
        assert_eq!(
            errs[1].location,
            Location::Env {
                var: "KAGED_UI_SERVE".into()
            }
        );
        assert!(
            errs[1]
                .to_string()
                .starts_with("environment variable KAGED_UI_SERVE: ui.serve:")
        );
        // KAGED_BIND is shadowed by the flag, so it is neither used nor reported.
        assert_eq!(errs.len(), 2);
    }

    #[test]
    fn env_lists_and_booleans_parse() {
        let e = env(&[
            ("KAGED_PLUGINS_ENABLED", "git, issues"),
            ("KAGED_UI_SERVE", "false"),
        ]);
        let s = resolve(&decision(), &cfg(), None, &e, &FlagOverrides::default()).unwrap();
        assert_eq!(s.plugins_enabled, vec!["git", "issues"]);
        assert!(!s.ui_serve);
    }

    #[test]
    fn rendered_default_config_round_trips() {
        let s = resolve(
            &decision(),
            &cfg(),
            None,
            &BTreeMap::new(),
            &FlagOverrides::default(),
        )
        .unwrap();
        let text = render_default_config(&s);
        assert!(text.contains("bind = \"127.0.0.1:7777\""), "{text}");
        let again = resolve_text(&text).unwrap();
        assert_eq!(again.bind, s.bind);
        assert_eq!(again.storage_url, s.storage_url);
        assert_eq!(again.log_audit, s.log_audit);
        assert_eq!(again.plugins_dir, s.plugins_dir);
        // Every key is written out, except the secret token, which stays commented.
        for (key, src) in &again.sources {
            if [
                "auth.token",
                "daemon.listen",
                "auth.proxy.trusted_actor_header",
                "auth.proxy.trusted_proxy_listeners",
            ]
            .contains(&key.as_str())
            {
                assert_eq!(src, &Source::Default);
            } else {
                assert!(matches!(src, Source::File { .. }), "{key}: {src:?}");
            }
        }
    }
}
