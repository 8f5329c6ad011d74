//! Start-up step 3: the descriptor limit raised as far as allowed, and the connection limits
//! of `[daemon]` fitted under it.

use std::time::Duration;

use kaged_config::Settings;

/// Raise the soft limit on open files to the hard one, so slow or idle clients run into the
/// connection limits rather than the descriptor limit. Returns the soft limit in force.
pub(super) fn raise_open_file_limit() -> Option<u64> {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let before = getrlimit(Resource::Nofile);
    let raised = Rlimit {
        current: before.maximum,
        maximum: before.maximum,
    };
    if before.current == before.maximum {
        tracing::info!(limit = ?before.current, "open file limit (already the hard limit)");
        return before.current;
    }
    match setrlimit(Resource::Nofile, raised) {
        Ok(()) => {
            tracing::info!(from = ?before.current, to = ?before.maximum, "open file limit raised to the hard limit");
            before.maximum
        }
        Err(e) => {
            tracing::warn!(limit = ?before.current, error = %e, "open file limit: cannot raise it to the hard limit");
            before.current
        }
    }
}

/// The connection limits of `[daemon]`. The cap on waiting connections stays below half the
/// descriptor limit, so idle clients can never take every descriptor.
pub(super) fn connection_limits(
    settings: &Settings,
    open_files: Option<u64>,
) -> kaged_server::ConnectionLimits {
    let asked = settings.max_waiting_connections;
    let max_waiting = match open_files {
        Some(n) if asked > n / 2 => {
            let capped = (n / 2).max(1);
            tracing::warn!(
                asked,
                capped,
                open_files = n,
                "max_waiting_connections is above half the open file limit; using half"
            );
            capped
        }
        _ => asked,
    };
    let limits = kaged_server::ConnectionLimits {
        header_timeout: Duration::from_secs(settings.header_timeout_secs),
        idle_timeout: Duration::from_secs(settings.idle_timeout_secs),
        max_waiting: usize::try_from(max_waiting).unwrap_or(usize::MAX),
    };
    tracing::info!(
        header_timeout_secs = settings.header_timeout_secs,
        idle_timeout_secs = settings.idle_timeout_secs,
        max_waiting_connections = limits.max_waiting,
        "connection limits"
    );
    limits
}
