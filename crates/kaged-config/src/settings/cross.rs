//! Rules that involve more than one key, checked on the resolved settings.

use std::path::Path;

use super::keys::KEYS;
use super::types::{FlagOverrides, Settings, Source};
use crate::error::{ConfigError, Location};

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
pub(crate) fn cross_checks(
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
