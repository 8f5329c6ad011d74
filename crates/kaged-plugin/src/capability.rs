//! A plugin's capabilities: what it declared, parsed, and compiled into the cage it runs in.
//!
//! A plugin gets exactly what it declared and nothing else: its own directory read-only as its
//! working directory, each `read:fs:` path read-only, each `write:fs:` path read-write, each
//! `exec:` binary read-only, the network it named (none by default), and storage permissions
//! the host enforces itself.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;

use kaged_cage::{CAGE_HOME, HostPath, Limits, Network, Policy, WORKSPACE, Workspace};

/// Every form a capability can take, for error messages and the manifest's documentation.
pub const KNOWN_FORMS: &[&str] = &[
    "read:fs:/ABSOLUTE/PATH",
    "write:fs:/ABSOLUTE/PATH",
    "exec:/ABSOLUTE/BINARY",
    "net:[]",
    "net:*",
    "net:HOST:PORT",
    "net:HOST:*",
    "kaged:storage:read",
    "kaged:storage:write",
];

/// Host paths a plugin can never be granted: the cage makes its own there (the kernel's
/// interfaces, the plugin's directory, the cage's home and kaged's helpers).
const RESERVED: &[&str] = &["/proc", "/dev", "/sys", WORKSPACE, CAGE_HOME, "/run/kaged"];

/// One declared capability.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Capability {
    /// `read:fs:PATH`: the host path, read-only, at the same path in the cage.
    ReadFs(PathBuf),
    /// `write:fs:PATH`: the host path, read-write, at the same path in the cage.
    WriteFs(PathBuf),
    /// `exec:/abs/binary`: the binary, read-only, at the same path in the cage.
    Exec(PathBuf),
    /// `net:[]`: no network at all (the default when no `net:` is declared).
    NetNone,
    /// `net:*`: the host's network, unfiltered.
    NetAny,
    /// `net:HOST:PORT` or `net:HOST:*`: one destination through kaged's egress proxy, as a
    /// normalised allowlist entry (`api.example.org:443`, `[::1]:*`).
    Net(String),
    /// `kaged:storage:read`: `storage/get` and `storage/list` on the plugin's own keys.
    StorageRead,
    /// `kaged:storage:write`: `storage/set` and `storage/delete` on the plugin's own keys.
    StorageWrite,
}

impl fmt::Display for Capability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Capability::ReadFs(path) => write!(f, "read:fs:{}", path.display()),
            Capability::WriteFs(path) => write!(f, "write:fs:{}", path.display()),
            Capability::Exec(path) => write!(f, "exec:{}", path.display()),
            Capability::NetNone => f.write_str("net:[]"),
            Capability::NetAny => f.write_str("net:*"),
            Capability::Net(entry) => write!(f, "net:{entry}"),
            Capability::StorageRead => f.write_str("kaged:storage:read"),
            Capability::StorageWrite => f.write_str("kaged:storage:write"),
        }
    }
}

impl Capability {
    /// What it allows, in words, for the operator who confirms an install.
    pub fn describe(&self) -> String {
        match self {
            Capability::ReadFs(path) => format!("read {} on this machine", path.display()),
            Capability::WriteFs(path) => {
                format!("read and change {} on this machine", path.display())
            }
            Capability::Exec(path) => format!("run {}", path.display()),
            Capability::NetNone => "no network".into(),
            Capability::NetAny => "use this machine's network without restriction".into(),
            Capability::Net(entry) => match entry.strip_suffix(":*") {
                Some(host) => format!("connect to {host} on any port"),
                None => format!("connect to {entry}"),
            },
            Capability::StorageRead => "read its own kaged storage".into(),
            Capability::StorageWrite => "change its own kaged storage".into(),
        }
    }

    fn is_net(&self) -> bool {
        matches!(
            self,
            Capability::NetNone | Capability::NetAny | Capability::Net(_)
        )
    }
}

/// A capability that cannot be granted: which, what is wrong, and how to write it instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("capability {capability:?}: {problem}")]
pub struct CapabilityError {
    /// The capability as written.
    pub capability: String,
    /// What is wrong with it.
    pub problem: String,
    /// How to fix it.
    pub hint: String,
}

fn refuse(text: &str, problem: impl Into<String>, hint: impl Into<String>) -> CapabilityError {
    CapabilityError {
        capability: text.to_string(),
        problem: problem.into(),
        hint: hint.into(),
    }
}

/// Parses one capability.
pub fn parse(text: &str) -> Result<Capability, CapabilityError> {
    match text {
        "kaged:storage:read" => return Ok(Capability::StorageRead),
        "kaged:storage:write" => return Ok(Capability::StorageWrite),
        "net:[]" => return Ok(Capability::NetNone),
        "net:*" => return Ok(Capability::NetAny),
        _ => {}
    }
    if let Some(path) = text.strip_prefix("read:fs:") {
        return absolute_path(text, path, "read:fs").map(Capability::ReadFs);
    }
    if let Some(path) = text.strip_prefix("write:fs:") {
        return absolute_path(text, path, "write:fs").map(Capability::WriteFs);
    }
    if let Some(path) = text.strip_prefix("exec:") {
        if path.ends_with('/') && path.len() > 1 {
            return Err(refuse(
                text,
                "names a directory, not a binary",
                "name the program itself, e.g. exec:/usr/bin/git",
            ));
        }
        return absolute_path(text, path, "exec").map(Capability::Exec);
    }
    if let Some(destination) = text.strip_prefix("net:") {
        return net(text, destination).map(Capability::Net);
    }
    Err(refuse(
        text,
        "is not a capability kaged knows",
        format!("use one of: {}", KNOWN_FORMS.join(", ")),
    ))
}

/// An absolute, normalised path that is not the root and not one the cage makes itself.
fn absolute_path(text: &str, path: &str, form: &str) -> Result<PathBuf, CapabilityError> {
    if path.is_empty() {
        return Err(refuse(
            text,
            "names no path",
            format!("write {form}:/absolute/path"),
        ));
    }
    if !path.starts_with('/') {
        return Err(refuse(
            text,
            format!("`{path}` is relative; capabilities name absolute paths"),
            format!("write the absolute path, e.g. {form}:/srv/data"),
        ));
    }
    if path.contains('\0') {
        return Err(refuse(text, "the path contains a NUL byte", "remove it"));
    }
    let segments: Vec<&str> = path.split('/').skip(1).collect();
    if segments.contains(&"..") {
        return Err(refuse(
            text,
            format!("`{path}` climbs with `..`"),
            "write the path it means without `..`",
        ));
    }
    let plain: Vec<&str> = segments
        .iter()
        .copied()
        .filter(|s| !s.is_empty() && *s != ".")
        .collect();
    if plain.is_empty() {
        return Err(refuse(
            text,
            "grants the whole filesystem",
            "name the directories the plugin needs",
        ));
    }
    let normalized = format!("/{}", plain.join("/"));
    if normalized != path {
        return Err(refuse(
            text,
            format!("`{path}` is not in normal form"),
            format!("write {form}:{normalized}"),
        ));
    }
    if let Some(reserved) = RESERVED.iter().find(|r| {
        normalized == **r
            || normalized
                .strip_prefix(**r)
                .is_some_and(|rest| rest.starts_with('/'))
    }) {
        return Err(refuse(
            text,
            format!("`{path}` lies in {reserved}, which the cage makes itself"),
            format!("a plugin cannot be granted {}", RESERVED.join(", ")),
        ));
    }
    Ok(PathBuf::from(normalized))
}

/// `HOST:PORT` or `HOST:*` (IPv6 in brackets) → a normalised egress allowlist entry, judged
/// by the same parser the egress proxy uses.
fn net(text: &str, destination: &str) -> Result<String, CapabilityError> {
    let forms =
        "write net:HOST:PORT, net:HOST:* (IPv6 in brackets: net:[::1]:443), net:* or net:[]";
    if destination.contains('/') {
        return Err(refuse(
            text,
            "names a URL, not a host and port",
            "write net:HOST:PORT, e.g. net:api.example.org:443",
        ));
    }
    let (host, port) = if destination.starts_with('[') {
        match destination.split_once(']') {
            Some((inside, rest)) => match rest.strip_prefix(':') {
                Some(port) => (&destination[..inside.len() + 1], port),
                None => return Err(refuse(text, "names no port", forms)),
            },
            None => return Err(refuse(text, "the IPv6 address has no closing `]`", forms)),
        }
    } else {
        match destination.rsplit_once(':') {
            Some((host, _)) if host.contains(':') => {
                return Err(refuse(
                    text,
                    "an IPv6 address must be written in brackets",
                    forms,
                ));
            }
            Some((host, port)) => (host, port),
            None => return Err(refuse(text, "names no port", forms)),
        }
    };
    if host.is_empty() || host == "*" {
        return Err(refuse(
            text,
            "names no host",
            "name the host (net:api.example.org:443), or write net:* for the open network",
        ));
    }
    let port = match port {
        "*" => "*".to_string(),
        digits
            if !digits.is_empty()
                && digits.bytes().all(|b| b.is_ascii_digit())
                && digits.parse::<u16>().is_ok_and(|p| p >= 1) =>
        {
            digits.trim_start_matches('0').to_string()
        }
        other => {
            return Err(refuse(
                text,
                format!("port `{other}` is not a number from 1 to 65535"),
                forms,
            ));
        }
    };
    let host = normal_host(host).map_err(|problem| refuse(text, problem, forms))?;
    Ok(format!("{host}:{port}"))
}

/// Longest DNS name, and label, in text form (RFC 1035).
const MAX_NAME_LEN: usize = 253;
const MAX_LABEL_LEN: usize = 63;

/// A destination host in the form kaged's egress allowlist compares (the tests hold the two to
/// agreement; the proxy crate does I/O, so this pure crate cannot call it): a lower-case DNS
/// name without a trailing dot, `*.` before a domain of two labels or more, an IPv4 literal, or
/// a bracketed IPv6 literal (an IPv4-mapped one written as IPv4). Never an address that is no
/// destination (unspecified, multicast, broadcast).
fn normal_host(host: &str) -> Result<String, String> {
    let ip = |ip: IpAddr| {
        let ip = ip.to_canonical();
        let unusable = match ip {
            IpAddr::V4(v4) => v4.is_unspecified() || v4.is_multicast() || v4.is_broadcast(),
            IpAddr::V6(v6) => v6.is_unspecified() || v6.is_multicast(),
        };
        match ip {
            _ if unusable => Err(format!("`{host}` is not a destination address")),
            IpAddr::V4(v4) => Ok(v4.to_string()),
            IpAddr::V6(v6) => Ok(format!("[{v6}]")),
        }
    };
    if let Some(inner) = host.strip_prefix('[') {
        return match inner.strip_suffix(']').map(str::parse::<Ipv6Addr>) {
            Some(Ok(v6)) => ip(IpAddr::V6(v6)),
            _ => Err(format!("`{host}` is not a valid bracketed IPv6 address")),
        };
    }
    if let Ok(v4) = host.parse::<Ipv4Addr>() {
        return ip(IpAddr::V4(v4));
    }
    let (wildcard, name) = match host.strip_prefix("*.") {
        Some(suffix) => (true, suffix),
        None => (false, host),
    };
    let name = name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase();
    let label_ok = |label: &str| {
        !label.is_empty()
            && label.len() <= MAX_LABEL_LEN
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
    };
    if name.is_empty() || name.len() > MAX_NAME_LEN || !name.split('.').all(label_ok) {
        return Err(format!(
            "`{host}` is not a valid host name (letters, digits, `-` and `_` in dot-separated labels of at most {MAX_LABEL_LEN} characters; a wildcard only as a leading `*.`)"
        ));
    }
    if name
        .rsplit('.')
        .next()
        .is_some_and(|last| last.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err(format!(
            "`{host}` looks like a numeric address; write IPv4 addresses as four dotted decimals"
        ));
    }
    if wildcard && !name.contains('.') {
        return Err(format!(
            "`{host}` covers a whole top-level domain; name a domain under it"
        ));
    }
    Ok(if wildcard { format!("*.{name}") } else { name })
}

/// Parses a declared list: every bad item with its index, duplicates and conflicts included.
pub fn parse_all(items: &[&str]) -> Result<Capabilities, Vec<(usize, CapabilityError)>> {
    let mut list: Vec<Capability> = Vec::new();
    let mut errors = Vec::new();
    for (i, text) in items.iter().enumerate() {
        match parse(text) {
            Ok(capability) => {
                if list.contains(&capability) {
                    errors.push((i, refuse(text, "is declared twice", "keep one")));
                    continue;
                }
                let none = Capability::NetNone;
                let clash = match &capability {
                    Capability::NetNone => list.iter().find(|c| c.is_net()),
                    c if c.is_net() => list.iter().find(|c| **c == none),
                    _ => None,
                };
                if let Some(other) = clash {
                    errors.push((
                        i,
                        refuse(
                            text,
                            format!("conflicts with `{other}`: net:[] means no network at all"),
                            "keep either net:[] or the net: destinations",
                        ),
                    ));
                    continue;
                }
                list.push(capability);
            }
            Err(e) => errors.push((i, e)),
        }
    }
    if errors.is_empty() {
        Ok(Capabilities { list })
    } else {
        Err(errors)
    }
}

/// A plugin's declared capabilities, valid together, in declaration order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Capabilities {
    list: Vec<Capability>,
}

/// What a plugin may do with its own key-value storage; the host checks each request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Storage {
    /// `storage/get` and `storage/list`.
    pub read: bool,
    /// `storage/set` and `storage/delete`.
    pub write: bool,
}

/// What a plugin's capabilities compile to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginCage {
    /// The cage: the plugin's directory read-only at [`WORKSPACE`] (its working directory),
    /// the declared network, no project mounts, the default seccomp profile and limits.
    pub policy: Policy,
    /// The declared host paths, each at its own path in the cage, parents before what lies
    /// below them: the edge resolves them into [`kaged_cage::HostBind`]s as it does the
    /// operator's `local.toml` grants.
    pub grants: Vec<HostPath>,
    /// Storage permissions, enforced by the host rather than the cage.
    pub storage: Storage,
}

impl Capabilities {
    /// The capabilities, in declaration order.
    pub fn list(&self) -> &[Capability] {
        &self.list
    }

    /// What these grant beyond `old` (an installed version's): what an upgrade must have the
    /// operator confirm. Dropping `net:[]` counts only through the destinations that replace it.
    pub fn gained(&self, old: &Capabilities) -> Vec<&Capability> {
        self.list
            .iter()
            .filter(|c| **c != Capability::NetNone && !old.list.contains(c))
            .collect()
    }

    /// The network the plugin declared: none unless a `net:` says otherwise.
    pub fn network(&self) -> Network {
        if self.list.contains(&Capability::NetAny) {
            return Network::Host;
        }
        let entries: Vec<String> = self
            .list
            .iter()
            .filter_map(|c| match c {
                Capability::Net(entry) => Some(entry.clone()),
                _ => None,
            })
            .collect();
        if entries.is_empty() {
            Network::None
        } else {
            Network::Allow(entries)
        }
    }

    /// The plugin's cage: exactly what was declared, nothing more.
    pub fn cage(&self) -> PluginCage {
        // Path → writable; a path both read and written (or executed) is bound once, writable.
        let mut paths: BTreeMap<PathBuf, bool> = BTreeMap::new();
        let mut storage = Storage::default();
        for capability in &self.list {
            match capability {
                Capability::ReadFs(path) | Capability::Exec(path) => {
                    paths.entry(path.clone()).or_insert(false);
                }
                Capability::WriteFs(path) => {
                    paths.insert(path.clone(), true);
                }
                Capability::StorageRead => storage.read = true,
                Capability::StorageWrite => storage.write = true,
                Capability::NetNone | Capability::NetAny | Capability::Net(_) => {}
            }
        }
        let mut grants: Vec<HostPath> = paths
            .into_iter()
            .map(|(path, writable)| HostPath {
                at: path.display().to_string(),
                host: path,
                writable,
                on_path: false,
            })
            .collect();
        // Binds apply in order: a parent must come before what is bound below it.
        grants.sort_by_key(|g| g.host.components().count());
        PluginCage {
            policy: Policy::Caged {
                network: self.network(),
                mounts: Vec::new(),
                seccomp: "default".into(),
                limits: Limits::default(),
                workspace: Workspace::ReadOnly,
            },
            grants,
            storage,
        }
    }
}

#[cfg(test)]
mod tests;
