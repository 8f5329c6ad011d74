//! kaged's configuration, decided without doing I/O.
//!
//! The edge (the `kaged` binary) gathers *facts*: the environment, the UID, whether a directory
//! exists, the text of `config.toml`. Everything here is a pure function of those facts, so every
//! rule (mode detection, path layout, precedence, validation) is unit-tested on data.

mod error;
mod keys;
mod local;
mod mode;
mod settings;

pub use error::{ConfigError, ConfigErrors, Location};
pub use keys::{KEYS, KeySpec, closest};
pub use local::{LocalConfig, PathGrant, ProjectGrants, Provider, local_config_path, parse_local};
pub use mode::{DeploymentMode, Facts, ModeDecision, ModeRule, Paths, decide_mode};
pub use settings::{
    AuditSink, AuthMechanism, AuthMode, CageLimits, ConfigSecret, FlagOverrides, Listener,
    LogLevel, OperationalSink, SandboxMode, Settings, Source, StorageUrl, render_default_config,
    resolve,
};
