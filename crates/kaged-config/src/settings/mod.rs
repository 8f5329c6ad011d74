//! `config.toml`: parsing with positions, precedence (flags > `KAGED_*` environment > file >
//! defaults) and validation that reports every problem with file, key, line and a fix.
//!
//! A key is defined in exactly one place: its row in [`KEYS`] (`keys.rs`) names its section,
//! key, `KAGED_*` variable, expected form and meaning, and carries its parser (from
//! `value.rs`), its default, the field of [`Settings`] it fills and how the default file shows
//! it. Adding a key is one row in `KEYS` plus one field in `Settings` (`types.rs`); reading the
//! file and the environment, "did you mean" hints, provenance (`Settings::sources`) and the
//! default `config.toml` follow from the row.
//!
//! - `types.rs`: [`Settings`] and the value types the rest of kaged reads.
//! - `keys.rs`: [`KEYS`]. `field.rs`: what a row carries (parser, default, field, rendering).
//! - `value.rs`: the parsers, one per kind of value; a value of the wrong kind is an error.
//! - `sources.rs`: the flag, the environment and the file, each value with its location.
//! - `notify.rs`: the `[notify]` URLs and how a webhook is shown (never whole).
//! - `cross.rs`: rules across keys. `render.rs`: the default `config.toml`.

mod cross;
mod field;
mod keys;
mod notify;
mod postgres;
mod render;
mod sources;
#[cfg(test)]
mod tests;
mod types;
mod value;

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

pub use keys::{KEYS, KeySpec};
pub use notify::{NotifySettings, redacted_url};
pub use postgres::{
    DEFAULT_POSTGRES_PORT, PostgresHost, PostgresTls, PostgresUrl, STORAGE_PASSWORD_ENV,
};
pub use render::render_default_config;
pub use types::{
    AuditSink, AuthMechanism, AuthMode, CageLimits, ConfigSecret, FlagOverrides, Listener,
    LogLevel, ModelSettings, OnDaemonStop, OperationalSink, SandboxMode, Settings, Source,
    StorageUrl,
};

use crate::error::{ConfigError, ConfigErrors, Location};
use crate::mode::{DeploymentMode, ModeDecision};
use value::Raw;

/// Values found so far, checked and stored as they are offered, highest precedence first.
pub(crate) struct Resolution {
    settings: Settings,
    /// Where a value that a higher-precedence source overrides is stored: it is still checked,
    /// and its problems reported, but it is not used.
    shadowed: Settings,
    errors: Vec<ConfigError>,
}

impl Resolution {
    /// Check `raw` as a value of `spec` and store it, unless a source offered earlier (higher
    /// precedence) already set the key.
    fn offer(&mut self, spec: &KeySpec, raw: Raw, source: Source, location: Location) {
        let path = spec.path();
        let target = if self.settings.sources.contains_key(&path) {
            &mut self.shadowed
        } else {
            &mut self.settings
        };
        match spec.value.set(spec, raw, target) {
            Ok(()) => {
                target.sources.insert(path, source);
            }
            Err(p) => self.errors.push(ConfigError {
                location,
                key: path,
                problem: p.problem,
                hint: p.hint,
            }),
        }
    }
}

/// Settings before any key is set: every field is overwritten, by a value or the key's default,
/// before `resolve` returns them.
fn unset(decision: &ModeDecision, config_file: &Path) -> Settings {
    Settings {
        mode: decision.mode,
        config_file: config_file.to_path_buf(),
        bind: SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)),
        listeners: Vec::new(),
        home: PathBuf::new(),
        allowed_hosts: Vec::new(),
        header_timeout_secs: 0,
        idle_timeout_secs: 0,
        max_waiting_connections: 0,
        trusted_actor_header: None,
        trusted_proxy_listeners: Vec::new(),
        auth_mode: AuthMode::Secure,
        auth: AuthMechanism::LaunchUrl,
        auth_token: None,
        trust_private_network: false,
        require_token_identity: false,
        storage_url: StorageUrl::Sqlite(PathBuf::new()),
        sandbox_mode: SandboxMode::Enabled,
        default_seccomp: String::new(),
        cage_user: String::new(),
        cage_limits: CageLimits {
            pids: None,
            memory_mb: None,
            wall_time_secs: None,
        },
        log_operational: OperationalSink::Stderr,
        log_audit: AuditSink::File(PathBuf::new()),
        log_level: LogLevel::Info,
        models: ModelSettings {
            request_timeout_secs: 0,
            stall_timeout_secs: 0,
            max_attempts: 0,
        },
        plugins_dir: PathBuf::new(),
        plugins_enabled: Vec::new(),
        ui_serve: false,
        sessions_max_total_mb: 0,
        sessions_max_age_days: 0,
        transcript_max_mb: 0,
        approval_timeout_secs: 0,
        on_daemon_stop: OnDaemonStop::Keep,
        notify: NotifySettings {
            webhook: None,
            public_url: None,
        },
        sources: BTreeMap::new(),
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
    let mut resolution = Resolution {
        settings: unset(decision, config_file),
        shadowed: unset(decision, config_file),
        errors: Vec::new(),
    };
    // Highest precedence first: the first value offered for a key wins.
    sources::read_flags(flags, &mut resolution);
    sources::read_env(env, flags, &mut resolution);
    if let Some(text) = file_text {
        sources::read_file(config_file, text, &mut resolution);
    }
    let Resolution {
        mut settings,
        mut errors,
        ..
    } = resolution;
    if !errors.is_empty() {
        errors.sort_by_key(|e| match &e.location {
            Location::Flag { .. } => (0, 0),
            Location::Env { .. } => (1, 0),
            Location::File { line, .. } => (2, *line),
        });
        return Err(ConfigErrors(errors));
    }
    // In `KEYS` order, so a default derived from another key (`[daemon] home`) sees its value.
    for spec in KEYS {
        let path = spec.path();
        if !settings.sources.contains_key(&path) {
            spec.value.set_default(decision, &mut settings);
            settings.sources.insert(path, Source::Default);
        }
    }

    // The PostgreSQL password from the environment wins over one in the URL.
    if let StorageUrl::Postgres(url) = &mut settings.storage_url
        && let Some(password) = env.get(STORAGE_PASSWORD_ENV).filter(|p| !p.is_empty())
    {
        url.password = Some(ConfigSecret::new(password.clone()));
    }

    let explicit =
        |s: &Settings, key: &str| s.sources.get(key).is_some_and(|s| *s != Source::Default);
    let listen_set = explicit(&settings, "daemon.listen");
    let bind_and_listen = listen_set && explicit(&settings, "daemon.bind");
    // `--bind` wins over `[daemon] listen`; without either, `bind` is the one listener.
    if flags.bind.is_some() || !listen_set {
        settings.listeners = vec![Listener::Tcp(settings.bind)];
    }
    settings.auth = match (flags.insecure, settings.auth_mode, decision.mode) {
        _ if flags.insecure_readonly => AuthMechanism::InsecureReadonly,
        (true, _, _) => AuthMechanism::Insecure,
        (false, AuthMode::Sidecar, _) | (false, AuthMode::Secure, DeploymentMode::System) => {
            AuthMechanism::Sidecar
        }
        (false, AuthMode::Secure, DeploymentMode::User) => AuthMechanism::LaunchUrl,
    };
    if flags.no_sandbox {
        settings.sandbox_mode = SandboxMode::Disabled;
    }
    let cross = cross::cross_checks(&settings, config_file, flags, bind_and_listen);
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
