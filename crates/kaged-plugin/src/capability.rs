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
mod tests {
    use super::*;

    fn error(text: &str) -> CapabilityError {
        parse(text).unwrap_err()
    }

    fn grant(path: &str, writable: bool) -> HostPath {
        HostPath {
            host: path.into(),
            at: path.into(),
            writable,
            on_path: false,
        }
    }

    #[test]
    fn every_known_form_parses_and_prints_back() {
        for text in [
            "read:fs:/srv/data",
            "write:fs:/var/lib/notes",
            "exec:/usr/bin/git",
            "net:[]",
            "net:*",
            "net:api.example.org:443",
            "net:db.example.org:*",
            "net:10.0.0.5:5432",
            "net:[2001:db8::1]:8443",
            "net:[::1]:*",
            "kaged:storage:read",
            "kaged:storage:write",
        ] {
            assert_eq!(parse(text).unwrap().to_string(), text);
        }
        assert_eq!(
            parse("net:API.Example.org:443").unwrap(),
            Capability::Net("api.example.org:443".into()),
            "hosts are normalised as the egress proxy compares them"
        );
    }

    #[test]
    fn unknown_capabilities_are_named_with_the_known_forms() {
        for text in [
            "fs:read:/x",
            "read:/x",
            "kaged:storage:admin",
            "net",
            "",
            "exec",
        ] {
            let e = error(text);
            assert_eq!(e.capability, text);
            assert_eq!(e.problem, "is not a capability kaged knows", "{text}");
            assert!(e.hint.contains("read:fs:/ABSOLUTE/PATH"), "{e:?}");
            assert!(e.hint.contains("kaged:storage:write"), "{e:?}");
        }
        assert_eq!(
            error("sudo").to_string(),
            "capability \"sudo\": is not a capability kaged knows"
        );
    }

    #[test]
    fn paths_must_be_absolute_normal_and_outside_the_cage_s_own() {
        let problem = |text: &str| error(text).problem;
        assert_eq!(
            problem("read:fs:data"),
            "`data` is relative; capabilities name absolute paths"
        );
        assert_eq!(
            problem("write:fs:./out"),
            "`./out` is relative; capabilities name absolute paths"
        );
        assert_eq!(
            problem("exec:bin/tool"),
            "`bin/tool` is relative; capabilities name absolute paths"
        );
        assert_eq!(problem("read:fs:"), "names no path");
        assert_eq!(
            problem("read:fs:/srv/../etc"),
            "`/srv/../etc` climbs with `..`"
        );
        assert_eq!(problem("read:fs:/"), "grants the whole filesystem");
        assert_eq!(problem("write:fs://"), "grants the whole filesystem");
        let e = error("read:fs:/srv//data/");
        assert_eq!(e.problem, "`/srv//data/` is not in normal form");
        assert_eq!(e.hint, "write read:fs:/srv/data");
        assert_eq!(error("write:fs:/srv/./x").hint, "write write:fs:/srv/x");
        assert_eq!(problem("exec:/usr/bin/"), "names a directory, not a binary");
        for reserved in [
            "read:fs:/proc",
            "read:fs:/proc/1/environ",
            "write:fs:/dev/sda",
            "read:fs:/sys",
            "read:fs:/workspace",
            "write:fs:/workspace/x",
            "read:fs:/home/kaged/.ssh",
            "exec:/run/kaged/kaged",
        ] {
            assert!(
                error(reserved)
                    .problem
                    .contains("which the cage makes itself"),
                "{reserved}"
            );
        }
        // Only whole components are reserved.
        assert!(parse("read:fs:/procfiles").is_ok());
        assert!(parse("read:fs:/home/kagedx").is_ok());
    }

    #[test]
    fn network_destinations_need_a_host_and_a_port_in_range() {
        let problem = |text: &str| error(text).problem;
        assert_eq!(problem("net:example.org"), "names no port");
        assert_eq!(problem("net:[::1]"), "names no port");
        assert_eq!(
            problem("net:[::1:443"),
            "the IPv6 address has no closing `]`"
        );
        assert_eq!(
            problem("net:::1:443"),
            "an IPv6 address must be written in brackets"
        );
        for port in ["0", "65536", "-1", "http", ""] {
            assert_eq!(
                problem(&format!("net:example.org:{port}")),
                format!("port `{port}` is not a number from 1 to 65535")
            );
        }
        assert!(parse("net:example.org:1").is_ok());
        assert!(parse("net:example.org:65535").is_ok());
        assert_eq!(problem("net::443"), "names no host");
        assert_eq!(problem("net:*:443"), "names no host");
        assert!(problem("net:exa mple.org:443").contains("not a valid host name"));
        assert!(problem("net:[zz::1]:443").contains("not a valid bracketed IPv6 address"));
        assert_eq!(
            problem("net:https://example.org:443"),
            "names a URL, not a host and port"
        );
    }

    #[test]
    fn hosts_are_judged_and_normalised_as_the_egress_proxy_does() {
        let hosts = [
            "example.org",
            "API.Example.ORG.",
            "a_b.example.org",
            "localhost",
            "*.github.com",
            "*.com",
            "*.",
            "a.*.com",
            "exa mple.org",
            "-bad.example.org",
            "bad-.example.org",
            &format!("{}.org", "a".repeat(64)),
            &format!("{}.org", "a".repeat(63)),
            &format!("{}.org", ["a"; 126].join(".")),
            &format!("{}.org", ["a"; 125].join(".")),
            "127.1",
            "2130706433",
            "10.0.0.5",
            "0.0.0.0",
            "224.0.0.1",
            "255.255.255.255",
            "[::1]",
            "[::]",
            "[ff02::1]",
            "[::ffff:10.0.0.1]",
            "[2001:DB8::1]",
            "[zz::1]",
            "ümlaut.example",
            "xn--mlaut-jva.example",
        ];
        for host in hosts {
            for port in ["443", "*", "0443"] {
                let ours = parse(&format!("net:{host}:{port}"));
                let theirs = kaged_egress::Allowlist::parse(&[format!("{host}:{port}")]);
                match (&ours, &theirs) {
                    (Ok(Capability::Net(entry)), Ok(list)) => {
                        assert_eq!(*entry, list.describe(), "{host}:{port}")
                    }
                    (Err(_), Err(_)) => {}
                    _ => panic!("{host}:{port}: ours {ours:?}, the proxy's {theirs:?}"),
                }
            }
        }
    }

    #[test]
    fn duplicates_and_no_network_beside_a_destination_conflict() {
        let errors = parse_all(&["net:[]", "net:example.org:443", "net:*", "net:[]"]).unwrap_err();
        let found: Vec<(usize, &str)> = errors
            .iter()
            .map(|(i, e)| (*i, e.problem.as_str()))
            .collect();
        assert_eq!(
            found,
            vec![
                (1, "conflicts with `net:[]`: net:[] means no network at all"),
                (2, "conflicts with `net:[]`: net:[] means no network at all"),
                (3, "is declared twice"),
            ]
        );
        let errors = parse_all(&["net:example.org:443", "net:[]"]).unwrap_err();
        assert_eq!(
            errors[0],
            (
                1,
                refuse(
                    "net:[]",
                    "conflicts with `net:example.org:443`: net:[] means no network at all",
                    "keep either net:[] or the net: destinations"
                )
            )
        );
        // Every bad item is reported, not only the first.
        let errors = parse_all(&["read:fs:x", "kaged:storage:read", "bogus"]).unwrap_err();
        assert_eq!(
            errors.iter().map(|(i, _)| *i).collect::<Vec<_>>(),
            vec![0, 2]
        );
    }

    #[test]
    fn nothing_declared_is_a_closed_cage_around_the_plugin_directory_alone() {
        let cage = parse_all(&[]).unwrap().cage();
        assert_eq!(
            cage,
            PluginCage {
                policy: Policy::Caged {
                    network: Network::None,
                    mounts: Vec::new(),
                    seccomp: "default".into(),
                    limits: Limits::default(),
                    workspace: Workspace::ReadOnly,
                },
                grants: Vec::new(),
                storage: Storage::default(),
            }
        );
        assert_eq!(parse_all(&["net:[]"]).unwrap().cage(), cage);
    }

    #[test]
    fn the_compiled_cage_holds_exactly_the_declared_binds_network_and_storage() {
        let caps = parse_all(&[
            "write:fs:/srv/notes/out",
            "read:fs:/srv/notes",
            "exec:/opt/tools/rg",
            "read:fs:/etc/ssl/certs",
            "net:api.example.org:443",
            "net:[::1]:*",
            "kaged:storage:read",
        ])
        .unwrap();
        let cage = caps.cage();
        assert_eq!(
            cage.policy,
            Policy::Caged {
                network: Network::Allow(vec!["api.example.org:443".into(), "[::1]:*".into()]),
                mounts: Vec::new(),
                seccomp: "default".into(),
                limits: Limits::default(),
                workspace: Workspace::ReadOnly,
            }
        );
        assert_eq!(
            cage.grants,
            vec![
                grant("/srv/notes", false),
                grant("/etc/ssl/certs", false),
                grant("/opt/tools/rg", false),
                grant("/srv/notes/out", true),
            ],
            "parents before children; nothing undeclared"
        );
        assert_eq!(
            cage.storage,
            Storage {
                read: true,
                write: false
            }
        );
        for g in &cage.grants {
            assert_eq!(
                kaged_cage::grant_destination(&g.at).as_deref(),
                Some(g.at.as_str())
            );
        }
        // The allowlist entries are ones the egress proxy accepts, and only those hosts pass.
        let Network::Allow(entries) = caps.network() else {
            panic!("allowlist")
        };
        let list = kaged_egress::Allowlist::parse(&entries).unwrap();
        let host = |h: &str| kaged_egress::Host::parse(h).unwrap();
        assert!(list.allows(&host("api.example.org"), 443).is_allowed());
        assert!(!list.allows(&host("api.example.org"), 80).is_allowed());
        assert!(list.allows(&host("[::1]"), 6379).is_allowed());
        assert!(!list.allows(&host("example.org"), 443).is_allowed());
    }

    /// bwrap's options for a plugin cage, with every source and grant "opened" (fake ids).
    fn bwrap_options(cage: &PluginCage, egress: bool) -> Vec<String> {
        use kaged_cage::{FileId, Host, HostBind, Launch, Opened, compile, sources};
        let id = FileId { dev: 1, ino: 2 };
        let host = Host {
            system_dirs: vec!["/usr".into(), "/etc".into()],
            opened: sources(&cage.policy, egress)
                .into_iter()
                .map(|(source, _)| Opened { source, id })
                .collect(),
            system_submounts: Vec::new(),
            binds: cage
                .grants
                .iter()
                .map(|g| HostBind {
                    host: g.host.clone(),
                    dest: g.at.clone(),
                    writable: g.writable,
                    on_path: g.on_path,
                    id,
                })
                .collect(),
        };
        let command = vec!["python3".to_string(), "plugin.py".to_string()];
        let socket = std::path::Path::new("/run/kaged-test/egress.sock");
        compile(
            &cage.policy,
            &host,
            &Launch {
                cwd: std::path::Path::new(""),
                command: &command,
                env: &[],
                own_terminal: false,
                egress: egress.then_some(socket),
            },
        )
        .unwrap()
        .options
    }

    /// Every mount option with its destination: `(option, destination)`.
    fn mounts(options: &[String]) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let mut i = 0;
        while i < options.len() {
            let takes_two = matches!(
                options[i].as_str(),
                "--bind" | "--ro-bind" | "--bind-fd" | "--ro-bind-fd"
            );
            let takes_one = matches!(
                options[i].as_str(),
                "--tmpfs" | "--dir" | "--proc" | "--dev"
            );
            if takes_two {
                out.push((options[i].clone(), options[i + 2].clone()));
                i += 3;
            } else if takes_one {
                out.push((options[i].clone(), options[i + 1].clone()));
                i += 2;
            } else {
                i += 1;
            }
        }
        out
    }

    #[test]
    fn the_bwrap_command_line_binds_exactly_what_was_declared() {
        let pair = |o: &str, d: &str| (o.to_string(), d.to_string());
        let cage_only = [
            pair("--ro-bind", "/usr"),
            pair("--ro-bind", "/etc"),
            pair("--proc", "/proc"),
            pair("--dev", "/dev"),
            pair("--tmpfs", "/tmp"),
            pair("--tmpfs", "/home"),
            pair("--dir", "/home/kaged"),
            pair("--tmpfs", "/run"),
            pair("--ro-bind-fd", "/workspace"),
        ];
        // Nothing declared: the cage's own mounts, the plugin's directory read-only, the
        // helper, no network.
        let closed = bwrap_options(&parse_all(&[]).unwrap().cage(), false);
        let mut expected = cage_only.to_vec();
        expected.push(pair("--ro-bind-fd", "/run/kaged/kaged"));
        assert_eq!(mounts(&closed), expected);
        assert!(closed.contains(&"--unshare-net".to_string()));
        assert!(
            !closed.iter().any(|o| o == "--bind" || o == "--bind-fd"),
            "nothing writable: {closed:?}"
        );

        let cage = parse_all(&[
            "read:fs:/srv/notes",
            "write:fs:/srv/notes/out",
            "exec:/opt/tools/rg",
            "net:api.example.org:443",
        ])
        .unwrap()
        .cage();
        let options = bwrap_options(&cage, true);
        let mut expected = cage_only.to_vec();
        expected.extend([
            pair("--ro-bind", "/srv/notes"),
            pair("--ro-bind", "/opt/tools/rg"),
            pair("--bind", "/srv/notes/out"),
            pair("--ro-bind-fd", "/run/kaged/kaged"),
            pair("--ro-bind-fd", "/run/kaged/egress"),
        ]);
        assert_eq!(mounts(&options), expected);
        assert!(
            options.contains(&"--unshare-net".to_string()),
            "the allowlist goes through the proxy"
        );

        let open = bwrap_options(&parse_all(&["net:*"]).unwrap().cage(), false);
        assert!(
            !open.contains(&"--unshare-net".to_string()),
            "net:* is the host's network"
        );
    }

    #[test]
    fn a_path_read_and_written_is_bound_once_writable_and_net_star_is_the_open_network() {
        let cage = parse_all(&[
            "read:fs:/data",
            "write:fs:/data",
            "exec:/data",
            "net:*",
            "net:example.org:443",
            "kaged:storage:write",
        ])
        .unwrap()
        .cage();
        assert_eq!(cage.grants, vec![grant("/data", true)]);
        let Policy::Caged { network, .. } = &cage.policy else {
            panic!("caged")
        };
        assert_eq!(*network, Network::Host);
        assert_eq!(
            cage.storage,
            Storage {
                read: false,
                write: true
            }
        );
    }
}
