//! The resolved settings and the value types of their keys, as the rest of kaged sees them.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Serialize;

use super::notify::NotifySettings;
use super::postgres::PostgresUrl;
use crate::mode::DeploymentMode;

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

/// `[sessions] on_daemon_stop`: what a stopping daemon does with its terminal runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OnDaemonStop {
    /// They go on in their holders; the next start takes them up again.
    Keep,
    /// They are ended (SIGHUP and SIGTERM, SIGKILL after 3 s), as before run holders.
    Kill,
}

impl OnDaemonStop {
    pub fn as_str(self) -> &'static str {
        match self {
            OnDaemonStop::Keep => "keep",
            OnDaemonStop::Kill => "kill",
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

/// A parsed `[storage] url`: a SQLite file, or a PostgreSQL database (`postgres.rs`). Shown
/// and serialized without a password.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase", tag = "kind", content = "path")]
pub enum StorageUrl {
    Sqlite(PathBuf),
    Postgres(PostgresUrl),
}

impl fmt::Display for StorageUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StorageUrl::Sqlite(p) => write!(f, "sqlite://{}", p.display()),
            StorageUrl::Postgres(u) => u.fmt(f),
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
    /// `[models]`: how model agents call their providers.
    pub models: ModelSettings,
    pub plugins_dir: PathBuf,
    pub plugins_enabled: Vec<String>,
    pub ui_serve: bool,
    /// `[sessions]` retention: `max_total_mb`, `max_age_days` and `transcript_max_mb`.
    pub sessions_max_total_mb: u64,
    pub sessions_max_age_days: u64,
    pub transcript_max_mb: u64,
    /// `[sessions] approval_timeout_secs`: seconds a pending approval waits before it is
    /// denied; 0: it waits until decided.
    pub approval_timeout_secs: u64,
    /// `[sessions] on_daemon_stop`: keep (the default) or kill terminal runs when kaged stops.
    pub on_daemon_stop: OnDaemonStop,
    /// `[notify]`: the webhook (secret: never shown whole) and the console's public address.
    pub notify: NotifySettings,
    /// `section.key` -> where its value came from.
    pub sources: BTreeMap<String, Source>,
}

/// `[models]`: the timeouts and retries of model agents' provider calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ModelSettings {
    pub request_timeout_secs: u64,
    pub stall_timeout_secs: u64,
    pub max_attempts: u64,
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

/// `[sessions] max_total_mb`: 2 GiB of transcripts in all, a small share of a laptop's disk
/// that still holds weeks of ordinary agent and terminal sessions.
pub const DEFAULT_MAX_TOTAL_MB: u64 = 2048;
/// `[sessions] max_age_days`: a month of history.
pub const DEFAULT_MAX_AGE_DAYS: u64 = 30;
/// `[sessions] transcript_max_mb`: one runaway session (a build log in a loop) cannot take
/// more than 64 MiB, yet a long ordinary session keeps all of its output.
pub const DEFAULT_TRANSCRIPT_MAX_MB: u64 = 64;
