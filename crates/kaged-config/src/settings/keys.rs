//! `KEYS`, the one list of `config.toml` keys. A row names its section, key, `KAGED_*`
//! variable, expected form and meaning, and carries its parser, its default, the field of
//! [`Settings`] it fills and how the default file shows it. Reading the file and the
//! environment, "did you mean" hints, provenance and the default `config.toml` all come from
//! here; the README's configuration table lists the same rows.

use std::fmt;
use std::net::SocketAddr;

use super::field::{Field, Kind, Shown, Typed};
use super::render::toml_string;
use super::types::{
    AuditSink, AuthMode, CageLimits, DEFAULT_MAX_AGE_DAYS, DEFAULT_MAX_TOTAL_MB,
    DEFAULT_TRANSCRIPT_MAX_MB, LogLevel, OnDaemonStop, OperationalSink, SandboxMode, StorageUrl,
};
use super::{notify, value};

#[derive(Clone, Copy)]
pub struct KeySpec {
    pub section: &'static str,
    pub key: &'static str,
    /// The `KAGED_*` variable that overrides the file.
    pub env: &'static str,
    /// What a valid value looks like, used in error hints.
    pub expected: &'static str,
    pub doc: &'static str,
    /// Parser, default, field and rendering of the value.
    pub(crate) value: &'static dyn Field,
}

impl KeySpec {
    pub fn path(&self) -> String {
        format!("{}.{}", self.section, self.key)
    }
}

impl fmt::Debug for KeySpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeySpec")
            .field("section", &self.section)
            .field("key", &self.key)
            .field("env", &self.env)
            .field("expected", &self.expected)
            .field("doc", &self.doc)
            .finish_non_exhaustive()
    }
}

/// Every key, in the order of the default `config.toml`. A key whose default derives from
/// another (`storage.url` from `daemon.home`) comes after it.
pub const KEYS: &[KeySpec] = &[
    KeySpec {
        section: "daemon",
        key: "bind",
        env: "KAGED_BIND",
        expected: "an IP address and port such as \"127.0.0.1:7777\"",
        doc: "Address the HTTP server listens on (flag --bind).",
        value: &Typed {
            kind: Kind::Text,
            parse: value::socket_address,
            default: |_, _| SocketAddr::from(([127, 0, 0, 1], 7777)),
            field: |s| &mut s.bind,
            show: |s| Shown::text(&s.bind.to_string()),
        },
    },
    KeySpec {
        section: "daemon",
        key: "listen",
        env: "KAGED_LISTEN",
        expected: "a list of listeners such as [\"127.0.0.1:7777\", \"unix:///run/kaged/proxy.sock\"] (comma-separated in the variable)",
        doc: "Several listeners (TCP addresses and unix:// sockets) instead of bind; --bind still wins.",
        value: &Typed {
            kind: Kind::List,
            parse: value::listen,
            default: |_, _| Vec::new(),
            field: |s| &mut s.listeners,
            show: |_| Shown::Example("[\"127.0.0.1:7777\", \"unix:///PATH/kaged.sock\"]"),
        },
    },
    KeySpec {
        section: "daemon",
        key: "home",
        env: "KAGED_HOME",
        expected: "an absolute directory path",
        doc: "State directory: database, audit log, plugins.",
        value: &Typed {
            kind: Kind::Text,
            parse: value::absolute_path,
            default: |decision, _| decision.paths.data_dir.clone(),
            field: |s| &mut s.home,
            show: |s| Shown::text(&s.home.display().to_string()),
        },
    },
    KeySpec {
        section: "daemon",
        key: "allowed_hosts",
        env: "KAGED_ALLOWED_HOSTS",
        expected: "a list of host names with optional ports such as [\"kaged.example.com\"] (comma-separated in the variable)",
        doc: "Extra Host names (and Origins) kaged answers to, e.g. the public name behind a sidecar.",
        value: &Typed {
            kind: Kind::List,
            parse: value::host_names,
            default: |_, _| Vec::new(),
            field: |s| &mut s.allowed_hosts,
            show: |_| Shown::plain("[]"),
        },
    },
    KeySpec {
        section: "daemon",
        key: "header_timeout",
        env: "KAGED_HEADER_TIMEOUT",
        expected: "a whole number of seconds from 1 to 3600, such as 10",
        doc: "Seconds a client gets, from connecting, to send a complete request head; slower connections are closed.",
        value: &Typed {
            kind: Kind::Number,
            parse: |spec, raw| value::number(spec, raw, 1, 3600),
            default: |_, _| 10,
            field: |s| &mut s.header_timeout_secs,
            show: |s| Shown::plain(s.header_timeout_secs),
        },
    },
    KeySpec {
        section: "daemon",
        key: "idle_timeout",
        env: "KAGED_IDLE_TIMEOUT",
        expected: "a whole number of seconds from 1 to 86400, such as 60",
        doc: "Seconds a kept-alive connection may wait for its next request (never counted while a request, a long response or a WebSocket runs).",
        value: &Typed {
            kind: Kind::Number,
            parse: |spec, raw| value::number(spec, raw, 1, 86_400),
            default: |_, _| 60,
            field: |s| &mut s.idle_timeout_secs,
            show: |s| Shown::plain(s.idle_timeout_secs),
        },
    },
    KeySpec {
        section: "daemon",
        key: "max_waiting_connections",
        env: "KAGED_MAX_WAITING_CONNECTIONS",
        expected: "a whole number from 1 to 1000000, such as 512",
        doc: "Connections with no request in flight (head not yet sent, or idle) held at once; beyond it the longest-waiting one is closed.",
        value: &Typed {
            kind: Kind::Number,
            parse: |spec, raw| value::number(spec, raw, 1, 1_000_000),
            default: |_, _| 512,
            field: |s| &mut s.max_waiting_connections,
            show: |s| Shown::plain(s.max_waiting_connections),
        },
    },
    KeySpec {
        section: "auth",
        key: "mode",
        env: "KAGED_AUTH_MODE",
        expected: "\"secure\" or \"sidecar\"",
        doc: "\"secure\": the mode's default (per-user: launch URL + cookie; system-wide: sidecar). \"sidecar\": trust the sidecar header contract.",
        value: &Typed {
            kind: Kind::Text,
            parse: value::auth_mode,
            default: |_, _| AuthMode::Secure,
            field: |s| &mut s.auth_mode,
            show: |_| Shown::text("secure"),
        },
    },
    KeySpec {
        section: "auth",
        key: "token",
        env: "KAGED_AUTH_TOKEN",
        expected: "at least 32 random characters, e.g. from `openssl rand -hex 32`",
        doc: "Bootstrap bearer token for scripts and remote CLIs; administers user tokens.",
        value: &Typed {
            kind: Kind::Text,
            parse: value::token,
            default: |_, _| None,
            field: |s| &mut s.auth_token,
            show: |_| Shown::Example("\"\""),
        },
    },
    KeySpec {
        section: "auth",
        key: "trust_private_network",
        env: "KAGED_TRUST_PRIVATE_NETWORK",
        expected: "true or false",
        doc: "Assert the network is private (VPN): lets a bearer token travel over plain HTTP to a non-loopback listener.",
        value: &Typed {
            kind: Kind::Bool,
            parse: value::boolean,
            default: |_, _| false,
            field: |s| &mut s.trust_private_network,
            show: |_| Shown::plain(false),
        },
    },
    KeySpec {
        section: "auth",
        key: "require_token_identity",
        env: "KAGED_REQUIRE_TOKEN_IDENTITY",
        expected: "true or false",
        doc: "Changes need a user token (kaged tokens create); the bootstrap token only reads and administers tokens.",
        value: &Typed {
            kind: Kind::Bool,
            parse: value::boolean,
            default: |_, _| false,
            field: |s| &mut s.require_token_identity,
            show: |_| Shown::plain(false),
        },
    },
    KeySpec {
        section: "auth.proxy",
        key: "trusted_actor_header",
        env: "KAGED_TRUSTED_ACTOR_HEADER",
        expected: "an HTTP header name such as \"X-Kaged-Actor\"",
        doc: "Header a trusted reverse proxy sets to the acting user, honoured only on trusted_proxy_listeners.",
        value: &Typed {
            kind: Kind::Text,
            parse: value::actor_header,
            default: |_, _| None,
            field: |s| &mut s.trusted_actor_header,
            show: |_| Shown::Example("\"X-Kaged-Actor\""),
        },
    },
    KeySpec {
        section: "auth.proxy",
        key: "trusted_proxy_listeners",
        env: "KAGED_TRUSTED_PROXY_LISTENERS",
        expected: "a list of entries of [daemon] listen, such as [\"unix:///run/kaged/proxy.sock\"] (comma-separated in the variable)",
        doc: "Listeners on which trusted_actor_header is honoured.",
        value: &Typed {
            kind: Kind::List,
            parse: value::proxy_listeners,
            default: |_, _| Vec::new(),
            field: |s| &mut s.trusted_proxy_listeners,
            show: |_| Shown::Example("[\"unix:///PATH/proxy.sock\"]"),
        },
    },
    KeySpec {
        section: "storage",
        key: "url",
        env: "KAGED_STORAGE_URL",
        expected: "\"sqlite:///ABSOLUTE/PATH/kaged.db\" or \"postgres://USER@HOST:5432/DATABASE\"",
        doc: "Database URL: SQLite, or PostgreSQL (password from KAGED_STORAGE_PASSWORD or the URL; a Unix socket with ?host=/run/postgresql; TLS verified by default off this host: sslmode=verify-full|disable, sslrootcert=PATH).",
        value: &Typed {
            kind: Kind::Text,
            parse: value::storage_url,
            default: |_, s| StorageUrl::Sqlite(s.home.join("kaged.db")),
            field: |s| &mut s.storage_url,
            show: |s| Shown::text(&s.storage_url.to_string()),
        },
    },
    KeySpec {
        section: "sandbox",
        key: "mode",
        env: "KAGED_SANDBOX_MODE",
        expected: "\"enabled\" or \"disabled\"",
        doc: "Whether work runs in bubblewrap cages.",
        value: &Typed {
            kind: Kind::Text,
            parse: value::sandbox_mode,
            default: |_, _| SandboxMode::Enabled,
            field: |s| &mut s.sandbox_mode,
            show: |s| {
                Shown::text(match s.sandbox_mode {
                    SandboxMode::Enabled => "enabled",
                    SandboxMode::Disabled => "disabled",
                })
            },
        },
    },
    KeySpec {
        section: "sandbox",
        key: "default_seccomp",
        env: "KAGED_SANDBOX_DEFAULT_SECCOMP",
        expected: "\"default\"",
        doc: "Seccomp profile for cages that name none.",
        value: &Typed {
            kind: Kind::Text,
            parse: value::seccomp_profile,
            default: |_, _| "default".into(),
            field: |s| &mut s.default_seccomp,
            show: |s| Shown::text(&s.default_seccomp),
        },
    },
    KeySpec {
        section: "sandbox",
        key: "cage_user",
        env: "KAGED_SANDBOX_CAGE_USER",
        expected: "an unprivileged user name or numeric UID as a string, such as \"nobody\" or \"65534\" (never root or 0)",
        doc: "Who cages run as when the daemon is root and the project root is owned by root (a project owned by someone else runs as its owner).",
        value: &Typed {
            kind: Kind::Text,
            parse: value::cage_user,
            default: |_, _| "nobody".into(),
            field: |s| &mut s.cage_user,
            show: |s| Shown::text(&s.cage_user),
        },
    },
    KeySpec {
        section: "sandbox",
        key: "pids",
        env: "KAGED_SANDBOX_PIDS",
        expected: "a whole number of processes from 0 to 100000, such as 1024 (0: no default limit)",
        doc: "Process (task) limit of every cage whose project sets no limits.pids; 0 for none. Without a cgroup a watchdog enforces it by killing the run.",
        value: &Typed {
            kind: Kind::Number,
            parse: |spec, raw| value::limit(spec, raw, 100_000),
            default: |_, _| value::no_limit_if_zero(CageLimits::DEFAULT_PIDS),
            field: |s| &mut s.cage_limits.pids,
            show: |s| Shown::plain(s.cage_limits.pids.unwrap_or(0)),
        },
    },
    KeySpec {
        section: "sandbox",
        key: "memory_mb",
        env: "KAGED_SANDBOX_MEMORY_MB",
        expected: "a whole number of MiB from 0 to 1048576, such as 4096 (0: no default limit)",
        doc: "Memory limit (MiB) of every cage whose project sets no limits.memory_mb; 0 for none. Enforced only where a cgroup or systemd scope can hold it.",
        value: &Typed {
            kind: Kind::Number,
            parse: |spec, raw| value::limit(spec, raw, 1_048_576),
            default: |_, _| value::no_limit_if_zero(CageLimits::DEFAULT_MEMORY_MB),
            field: |s| &mut s.cage_limits.memory_mb,
            show: |s| Shown::plain(s.cage_limits.memory_mb.unwrap_or(0)),
        },
    },
    KeySpec {
        section: "sandbox",
        key: "wall_time_secs",
        env: "KAGED_SANDBOX_WALL_TIME_SECS",
        expected: "a whole number of seconds from 0 to 604800, such as 0 (0: no default limit)",
        doc: "Wall-clock limit (seconds) of every cage whose project sets no limits.wall_time_secs, terminals and agents included; 0 (the default) for none.",
        value: &Typed {
            kind: Kind::Number,
            parse: |spec, raw| value::limit(spec, raw, 604_800),
            default: |_, _| value::no_limit_if_zero(CageLimits::DEFAULT_WALL_TIME_SECS),
            field: |s| &mut s.cage_limits.wall_time_secs,
            show: |s| Shown::plain(s.cage_limits.wall_time_secs.unwrap_or(0)),
        },
    },
    KeySpec {
        section: "logging",
        key: "operational",
        env: "KAGED_LOG_OPERATIONAL",
        expected: "\"stderr\" or \"file:/ABSOLUTE/PATH\"",
        doc: "Where the operational log goes.",
        value: &Typed {
            kind: Kind::Text,
            parse: value::operational_sink,
            default: |_, _| OperationalSink::Stderr,
            field: |s| &mut s.log_operational,
            show: |s| match &s.log_operational {
                OperationalSink::Stderr => Shown::text("stderr"),
                OperationalSink::File(p) => Shown::text(&format!("file:{}", p.display())),
            },
        },
    },
    KeySpec {
        section: "logging",
        key: "audit",
        env: "KAGED_LOG_AUDIT",
        expected: "\"file:/ABSOLUTE/PATH\"",
        doc: "Append-only JSON-lines audit log (also kept in the audit_events table).",
        value: &Typed {
            kind: Kind::Text,
            parse: value::audit_sink,
            default: |_, s| AuditSink::File(s.home.join("audit.log")),
            field: |s| &mut s.log_audit,
            show: |s| {
                let AuditSink::File(p) = &s.log_audit;
                Shown::text(&format!("file:{}", p.display()))
            },
        },
    },
    KeySpec {
        section: "logging",
        key: "level",
        env: "KAGED_LOG_LEVEL",
        expected: "one of \"error\", \"warn\", \"info\", \"debug\", \"trace\"",
        doc: "Operational log level.",
        value: &Typed {
            kind: Kind::Text,
            parse: value::log_level,
            default: |_, _| LogLevel::Info,
            field: |s| &mut s.log_level,
            show: |s| Shown::text(s.log_level.as_str()),
        },
    },
    KeySpec {
        section: "models",
        key: "request_timeout_secs",
        env: "KAGED_MODELS_REQUEST_TIMEOUT_SECS",
        expected: "a whole number of seconds from 1 to 3600, such as 120",
        doc: "How long a model agent waits for a provider's answer to begin (its response headers) before the attempt fails and is retried.",
        value: &Typed {
            kind: Kind::Number,
            parse: |spec, raw| value::number(spec, raw, 1, 3600),
            default: |_, _| 120,
            field: |s| &mut s.models.request_timeout_secs,
            show: |s| Shown::plain(s.models.request_timeout_secs),
        },
    },
    KeySpec {
        section: "models",
        key: "stall_timeout_secs",
        env: "KAGED_MODELS_STALL_TIMEOUT_SECS",
        expected: "a whole number of seconds from 1 to 3600, such as 60",
        doc: "How long a provider's stream may stay silent (no event, no keep-alive) before the model call fails as stalled.",
        value: &Typed {
            kind: Kind::Number,
            parse: |spec, raw| value::number(spec, raw, 1, 3600),
            default: |_, _| 60,
            field: |s| &mut s.models.stall_timeout_secs,
            show: |s| Shown::plain(s.models.stall_timeout_secs),
        },
    },
    KeySpec {
        section: "models",
        key: "max_attempts",
        env: "KAGED_MODELS_MAX_ATTEMPTS",
        expected: "a whole number from 1 to 10, such as 4 (1: no retry)",
        doc: "Attempts of one model call on one provider (rate limits, overload, server errors, timeouts; with backoff and jitter, honouring retry-after) before the alias's next provider is tried.",
        value: &Typed {
            kind: Kind::Number,
            parse: |spec, raw| value::number(spec, raw, 1, 10),
            default: |_, _| 4,
            field: |s| &mut s.models.max_attempts,
            show: |s| Shown::plain(s.models.max_attempts),
        },
    },
    KeySpec {
        section: "plugins",
        key: "dir",
        env: "KAGED_PLUGINS_DIR",
        expected: "an absolute directory path",
        doc: "Where plugins are installed.",
        value: &Typed {
            kind: Kind::Text,
            parse: value::absolute_path,
            default: |_, s| s.home.join("plugins"),
            field: |s| &mut s.plugins_dir,
            show: |s| Shown::text(&s.plugins_dir.display().to_string()),
        },
    },
    KeySpec {
        section: "plugins",
        key: "enabled",
        env: "KAGED_PLUGINS_ENABLED",
        expected: "a list of plugin names such as [\"git\"] (comma-separated in the variable)",
        doc: "Plugins to start.",
        value: &Typed {
            kind: Kind::List,
            parse: value::plugin_names,
            default: |_, _| Vec::new(),
            field: |s| &mut s.plugins_enabled,
            show: |s| {
                let names: Vec<String> = s.plugins_enabled.iter().map(|p| toml_string(p)).collect();
                Shown::Value(format!("[{}]", names.join(", ")))
            },
        },
    },
    KeySpec {
        section: "sessions",
        key: "max_total_mb",
        env: "KAGED_SESSIONS_MAX_TOTAL_MB",
        expected: "a whole number of MiB from 1 to 16777216, such as 2048",
        doc: "Transcripts kept on disk in all, in MiB; past it the oldest ended sessions' transcripts are pruned (live sessions never).",
        value: &Typed {
            kind: Kind::Number,
            parse: |spec, raw| value::number(spec, raw, 1, 16_777_216),
            default: |_, _| DEFAULT_MAX_TOTAL_MB,
            field: |s| &mut s.sessions_max_total_mb,
            show: |s| Shown::plain(s.sessions_max_total_mb),
        },
    },
    KeySpec {
        section: "sessions",
        key: "max_age_days",
        env: "KAGED_SESSIONS_MAX_AGE_DAYS",
        expected: "a whole number of days from 1 to 36500, such as 30",
        doc: "Days an ended session's transcript is kept; older ones are pruned (the session row stays and says so).",
        value: &Typed {
            kind: Kind::Number,
            parse: |spec, raw| value::number(spec, raw, 1, 36_500),
            default: |_, _| DEFAULT_MAX_AGE_DAYS,
            field: |s| &mut s.sessions_max_age_days,
            show: |s| Shown::plain(s.sessions_max_age_days),
        },
    },
    KeySpec {
        section: "sessions",
        key: "transcript_max_mb",
        env: "KAGED_SESSIONS_TRANSCRIPT_MAX_MB",
        expected: "a whole number of MiB from 1 to 1048576, such as 64",
        doc: "Largest transcript of one session, in MiB: its first quarter and its newest bytes are kept, the middle of a longer output is dropped (offsets stay those of the output).",
        value: &Typed {
            kind: Kind::Number,
            parse: |spec, raw| value::number(spec, raw, 1, 1_048_576),
            default: |_, _| DEFAULT_TRANSCRIPT_MAX_MB,
            field: |s| &mut s.transcript_max_mb,
            show: |s| Shown::plain(s.transcript_max_mb),
        },
    },
    KeySpec {
        section: "sessions",
        key: "approval_timeout_secs",
        env: "KAGED_SESSIONS_APPROVAL_TIMEOUT_SECS",
        expected: "a whole number of seconds from 0 to 604800, such as 600 (0: never)",
        doc: "Seconds a tool call waiting for approval waits; then it is denied and the model is told why. 0 (the default): it waits until someone decides.",
        value: &Typed {
            kind: Kind::Number,
            parse: |spec, raw| value::number(spec, raw, 0, 604_800),
            default: |_, _| 0,
            field: |s| &mut s.approval_timeout_secs,
            show: |s| Shown::plain(s.approval_timeout_secs),
        },
    },
    KeySpec {
        section: "sessions",
        key: "on_daemon_stop",
        env: "KAGED_SESSIONS_ON_DAEMON_STOP",
        expected: "one of \"keep\", \"kill\"",
        doc: "What stopping kaged does to running terminals, command agents and tasks: keep (the default) leaves them running in their run holders and the next start takes them up again; kill ends them. `kaged stop --kill-runs` kills them either way. Model and ACP agents always end and resume on the next message.",
        value: &Typed {
            kind: Kind::Text,
            parse: value::on_daemon_stop,
            default: |_, _| OnDaemonStop::Keep,
            field: |s| &mut s.on_daemon_stop,
            show: |s| Shown::text(s.on_daemon_stop.as_str()),
        },
    },
    KeySpec {
        section: "notify",
        key: "webhook",
        env: "KAGED_NOTIFY_WEBHOOK",
        expected: "an https URL such as \"https://ntfy.sh/YOUR-TOPIC\" (http only to localhost or a private IP)",
        doc: "ntfy-compatible URL that gets a POST when an approval is requested, an agent waits, or a run fails; a token in it is never shown or logged.",
        value: &Typed {
            kind: Kind::Text,
            parse: notify::webhook,
            default: |_, _| None,
            field: |s| &mut s.notify.webhook,
            // Never the value: it may hold a token.
            show: |_| Shown::Example("\"https://ntfy.sh/YOUR-TOPIC\""),
        },
    },
    KeySpec {
        section: "notify",
        key: "public_url",
        env: "KAGED_NOTIFY_PUBLIC_URL",
        expected: "an http(s) address without a path, such as \"https://kaged.example.com\"",
        doc: "Where operators open kaged, for the notifications' links; default: http:// and the first TCP listener.",
        value: &Typed {
            kind: Kind::Text,
            parse: notify::public_url,
            default: |_, _| None,
            field: |s| &mut s.notify.public_url,
            show: |s| match &s.notify.public_url {
                Some(url) => Shown::text(url),
                None => Shown::Example("\"https://kaged.example.com\""),
            },
        },
    },
    KeySpec {
        section: "ui",
        key: "serve",
        env: "KAGED_UI_SERVE",
        expected: "true or false",
        doc: "Serve the bundled web UI at /.",
        value: &Typed {
            kind: Kind::Bool,
            parse: value::boolean,
            default: |_, _| true,
            field: |s| &mut s.ui_serve,
            show: |s| Shown::plain(s.ui_serve),
        },
    },
];

pub(crate) fn sections() -> Vec<&'static str> {
    let mut s: Vec<&str> = KEYS.iter().map(|k| k.section).collect();
    s.sort_unstable();
    s.dedup();
    s
}

pub(crate) fn find(section: &str, key: &str) -> Option<&'static KeySpec> {
    KEYS.iter().find(|k| k.section == section && k.key == key)
}

pub(crate) fn keys_of(section: &str) -> Vec<&'static str> {
    KEYS.iter()
        .filter(|k| k.section == section)
        .map(|k| k.key)
        .collect()
}
