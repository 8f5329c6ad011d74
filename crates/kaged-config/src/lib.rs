//! kaged's configuration, decided without doing I/O.
//!
//! The edge (the `kaged` binary) gathers *facts*: the environment, the UID, whether a directory
//! exists, the text of `config.toml`. Everything here is a pure function of those facts, so every
//! rule (mode detection, path layout, precedence, validation) is unit-tested on data.

mod error;
mod local;
mod mode;
mod providers;
mod settings;
mod suggest;

pub use error::{ConfigError, ConfigErrors, Location};
pub use local::{
    LocalConfig, PathGrant, PluginSettings, ProjectGrants, Provider, local_config_path, parse_local,
};
pub use mode::{
    DeploymentMode, Facts, ModeDecision, ModeRule, Paths, client_candidates, decide_mode,
};
pub use providers::{
    AliasTarget, Driver, MissingAlias, Prices, Route, UnknownDriver, check_base_url, resolve_alias,
};
pub use settings::{
    AuditSink, AuthMechanism, AuthMode, CageLimits, ConfigSecret, DEFAULT_POSTGRES_PORT,
    FlagOverrides, KEYS, KeySpec, Listener, LogLevel, ModelSettings, NotifySettings, OnDaemonStop,
    OperationalSink, PostgresHost, PostgresTls, PostgresUrl, STORAGE_PASSWORD_ENV, SandboxMode,
    Settings, Source, StorageUrl, redacted_url, render_default_config, resolve,
};
pub use suggest::closest;
