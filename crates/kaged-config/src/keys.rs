//! The one list of configuration keys: their section, environment variable and meaning.
//! The README's configuration table and the parser's "did you mean" hints come from here.

#[derive(Debug, Clone, Copy)]
pub struct KeySpec {
    pub section: &'static str,
    pub key: &'static str,
    /// The `KAGED_*` variable that overrides the file.
    pub env: &'static str,
    /// What a valid value looks like, used in error hints.
    pub expected: &'static str,
    pub doc: &'static str,
}

impl KeySpec {
    pub fn path(&self) -> String {
        format!("{}.{}", self.section, self.key)
    }
}

pub const KEYS: &[KeySpec] = &[
    KeySpec {
        section: "daemon",
        key: "bind",
        env: "KAGED_BIND",
        expected: "an IP address and port such as \"127.0.0.1:7777\"",
        doc: "Address the HTTP server listens on (flag --bind).",
    },
    KeySpec {
        section: "daemon",
        key: "listen",
        env: "KAGED_LISTEN",
        expected: "a list of listeners such as [\"127.0.0.1:7777\", \"unix:///run/kaged/proxy.sock\"] (comma-separated in the variable)",
        doc: "Several listeners (TCP addresses and unix:// sockets) instead of bind; --bind still wins.",
    },
    KeySpec {
        section: "daemon",
        key: "home",
        env: "KAGED_HOME",
        expected: "an absolute directory path",
        doc: "State directory: database, audit log, plugins.",
    },
    KeySpec {
        section: "daemon",
        key: "allowed_hosts",
        env: "KAGED_ALLOWED_HOSTS",
        expected: "a list of host names with optional ports such as [\"kaged.example.com\"] (comma-separated in the variable)",
        doc: "Extra Host names (and Origins) kaged answers to, e.g. the public name behind a sidecar.",
    },
    KeySpec {
        section: "daemon",
        key: "header_timeout",
        env: "KAGED_HEADER_TIMEOUT",
        expected: "a whole number of seconds from 1 to 3600, such as 10",
        doc: "Seconds a client gets, from connecting, to send a complete request head; slower connections are closed.",
    },
    KeySpec {
        section: "daemon",
        key: "idle_timeout",
        env: "KAGED_IDLE_TIMEOUT",
        expected: "a whole number of seconds from 1 to 86400, such as 60",
        doc: "Seconds a kept-alive connection may wait for its next request (never counted while a request, a long response or a WebSocket runs).",
    },
    KeySpec {
        section: "daemon",
        key: "max_waiting_connections",
        env: "KAGED_MAX_WAITING_CONNECTIONS",
        expected: "a whole number from 1 to 1000000, such as 512",
        doc: "Connections with no request in flight (head not yet sent, or idle) held at once; beyond it the longest-waiting one is closed.",
    },
    KeySpec {
        section: "auth",
        key: "mode",
        env: "KAGED_AUTH_MODE",
        expected: "\"secure\" or \"sidecar\"",
        doc: "\"secure\": the mode's default (per-user: launch URL + cookie; system-wide: sidecar). \"sidecar\": trust the sidecar header contract.",
    },
    KeySpec {
        section: "auth",
        key: "token",
        env: "KAGED_AUTH_TOKEN",
        expected: "at least 32 random characters, e.g. from `openssl rand -hex 32`",
        doc: "Bootstrap bearer token for scripts and remote CLIs; administers user tokens.",
    },
    KeySpec {
        section: "auth",
        key: "trust_private_network",
        env: "KAGED_TRUST_PRIVATE_NETWORK",
        expected: "true or false",
        doc: "Assert the network is private (VPN): lets a bearer token travel over plain HTTP to a non-loopback listener.",
    },
    KeySpec {
        section: "auth",
        key: "require_token_identity",
        env: "KAGED_REQUIRE_TOKEN_IDENTITY",
        expected: "true or false",
        doc: "Changes need a user token (kaged tokens create); the bootstrap token only reads and administers tokens.",
    },
    KeySpec {
        section: "auth.proxy",
        key: "trusted_actor_header",
        env: "KAGED_TRUSTED_ACTOR_HEADER",
        expected: "an HTTP header name such as \"X-Kaged-Actor\"",
        doc: "Header a trusted reverse proxy sets to the acting user, honoured only on trusted_proxy_listeners.",
    },
    KeySpec {
        section: "auth.proxy",
        key: "trusted_proxy_listeners",
        env: "KAGED_TRUSTED_PROXY_LISTENERS",
        expected: "a list of entries of [daemon] listen, such as [\"unix:///run/kaged/proxy.sock\"] (comma-separated in the variable)",
        doc: "Listeners on which trusted_actor_header is honoured.",
    },
    KeySpec {
        section: "storage",
        key: "url",
        env: "KAGED_STORAGE_URL",
        expected: "\"sqlite:///ABSOLUTE/PATH/kaged.db\"",
        doc: "Database URL.",
    },
    KeySpec {
        section: "sandbox",
        key: "mode",
        env: "KAGED_SANDBOX_MODE",
        expected: "\"enabled\" or \"disabled\"",
        doc: "Whether work runs in bubblewrap cages.",
    },
    KeySpec {
        section: "sandbox",
        key: "default_seccomp",
        env: "KAGED_SANDBOX_DEFAULT_SECCOMP",
        expected: "\"default\"",
        doc: "Seccomp profile for cages that name none.",
    },
    KeySpec {
        section: "sandbox",
        key: "cage_user",
        env: "KAGED_SANDBOX_CAGE_USER",
        expected: "an unprivileged user name or numeric UID as a string, such as \"nobody\" or \"65534\" (never root or 0)",
        doc: "Who cages run as when the daemon is root and the project root is owned by root (a project owned by someone else runs as its owner).",
    },
    KeySpec {
        section: "sandbox",
        key: "pids",
        env: "KAGED_SANDBOX_PIDS",
        expected: "a whole number of processes from 0 to 100000, such as 1024 (0: no default limit)",
        doc: "Process (task) limit of every cage whose project sets no limits.pids; 0 for none. Without a cgroup a watchdog enforces it by killing the run.",
    },
    KeySpec {
        section: "sandbox",
        key: "memory_mb",
        env: "KAGED_SANDBOX_MEMORY_MB",
        expected: "a whole number of MiB from 0 to 1048576, such as 4096 (0: no default limit)",
        doc: "Memory limit (MiB) of every cage whose project sets no limits.memory_mb; 0 for none. Enforced only where a cgroup or systemd scope can hold it.",
    },
    KeySpec {
        section: "sandbox",
        key: "wall_time_secs",
        env: "KAGED_SANDBOX_WALL_TIME_SECS",
        expected: "a whole number of seconds from 0 to 604800, such as 0 (0: no default limit)",
        doc: "Wall-clock limit (seconds) of every cage whose project sets no limits.wall_time_secs, terminals and agents included; 0 (the default) for none.",
    },
    KeySpec {
        section: "logging",
        key: "operational",
        env: "KAGED_LOG_OPERATIONAL",
        expected: "\"stderr\" or \"file:/ABSOLUTE/PATH\"",
        doc: "Where the operational log goes.",
    },
    KeySpec {
        section: "logging",
        key: "audit",
        env: "KAGED_LOG_AUDIT",
        expected: "\"file:/ABSOLUTE/PATH\"",
        doc: "Append-only JSON-lines audit log (also kept in the audit_events table).",
    },
    KeySpec {
        section: "logging",
        key: "level",
        env: "KAGED_LOG_LEVEL",
        expected: "one of \"error\", \"warn\", \"info\", \"debug\", \"trace\"",
        doc: "Operational log level.",
    },
    KeySpec {
        section: "plugins",
        key: "dir",
        env: "KAGED_PLUGINS_DIR",
        expected: "an absolute directory path",
        doc: "Where plugins are installed.",
    },
    KeySpec {
        section: "plugins",
        key: "enabled",
        env: "KAGED_PLUGINS_ENABLED",
        expected: "a list of plugin names such as [\"git\"] (comma-separated in the variable)",
        doc: "Plugins to start.",
    },
    KeySpec {
        section: "sessions",
        key: "max_total_mb",
        env: "KAGED_SESSIONS_MAX_TOTAL_MB",
        expected: "a whole number of MiB from 1 to 16777216, such as 2048",
        doc: "Transcripts kept on disk in all, in MiB; past it the oldest ended sessions' transcripts are pruned (live sessions never).",
    },
    KeySpec {
        section: "sessions",
        key: "max_age_days",
        env: "KAGED_SESSIONS_MAX_AGE_DAYS",
        expected: "a whole number of days from 1 to 36500, such as 30",
        doc: "Days an ended session's transcript is kept; older ones are pruned (the session row stays and says so).",
    },
    KeySpec {
        section: "sessions",
        key: "transcript_max_mb",
        env: "KAGED_SESSIONS_TRANSCRIPT_MAX_MB",
        expected: "a whole number of MiB from 1 to 1048576, such as 64",
        doc: "Largest transcript of one session, in MiB: its first quarter and its newest bytes are kept, the middle of a longer output is dropped (offsets stay those of the output).",
    },
    KeySpec {
        section: "ui",
        key: "serve",
        env: "KAGED_UI_SERVE",
        expected: "true or false",
        doc: "Serve the bundled web UI at /.",
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

/// The closest candidate within two edits, for "did you mean" hints.
pub fn closest<'a>(word: &str, candidates: &[&'a str]) -> Option<&'a str> {
    candidates
        .iter()
        .map(|c| (edit_distance(word, c), *c))
        .filter(|(d, _)| *d <= 2)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur.push((prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_has_a_distinct_kaged_variable() {
        let mut vars: Vec<_> = KEYS.iter().map(|k| k.env).collect();
        assert!(vars.iter().all(|v| v.starts_with("KAGED_")));
        vars.sort();
        vars.dedup();
        assert_eq!(vars.len(), KEYS.len());
    }

    #[test]
    fn closest_suggests_near_misses_only() {
        assert_eq!(closest("bnd", &["bind", "home"]), Some("bind"));
        assert_eq!(closest("colour", &["bind", "home"]), None);
    }
}
