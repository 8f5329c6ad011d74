//! The operational log: stderr or a file, at the configured level. Secrets never reach it: they
//! are `Secret`s (redacted when formatted) and request logs carry paths, never queries.

use std::fs::OpenOptions;
use std::os::unix::fs::OpenOptionsExt;
use std::sync::Mutex;

use anyhow::{Context, Result};
use kaged_config::{LogLevel, OperationalSink};
use tracing_subscriber::EnvFilter;

pub fn init(sink: &OperationalSink, level: LogLevel) -> Result<()> {
    let lvl = level.as_str();
    // Our crates at the chosen level; dependencies only when they warn.
    let filter = EnvFilter::new(format!(
        "warn,kaged={lvl},kaged_server={lvl},kaged_store={lvl},kaged_auth={lvl},kaged_config={lvl}"
    ));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false);
    match sink {
        OperationalSink::Stderr => builder
            .with_writer(std::io::stderr)
            .with_ansi(false)
            .try_init(),
        OperationalSink::File(path) => {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("cannot create log directory {}", dir.display()))?;
            }
            let file = OpenOptions::new()
                .append(true)
                .create(true)
                .mode(0o600)
                .open(path)
                .with_context(|| format!("cannot open operational log {}", path.display()))?;
            builder
                .with_writer(Mutex::new(file))
                .with_ansi(false)
                .try_init()
        }
    }
    .map_err(|e| anyhow::anyhow!("cannot start logging: {e}"))
}
