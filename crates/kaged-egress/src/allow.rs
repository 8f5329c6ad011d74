//! The cage's network allowlist, decided without I/O.
//!
//! An entry is `host[:port]`: an exact DNS name, `*.suffix` (one or more labels in front of the
//! suffix, never the suffix itself), an IPv4 literal, or a bracketed IPv6 literal. Without a port
//! an entry allows 80 and 443 only; `:*` allows every port (plugins' `net:HOST:*`; project
//! files' schema does not offer it). Names compare case-insensitively and a trailing dot is
//! ignored.
//!
//! A name is only half the story: DNS decides where it points. [`check_resolved`] refuses a name
//! whose addresses are not public (so `evil.example` pointing at 127.0.0.1 cannot reach the
//! host's loopback services) unless the entry was an IP literal or exactly `localhost`.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Longest DNS name in text form (RFC 1035), without the trailing dot.
const MAX_NAME_LEN: usize = 253;
const MAX_LABEL_LEN: usize = 63;
/// What an entry without a port allows: plain HTTP and HTTPS.
const WEB_PORTS: [u16; 2] = [80, 443];

/// An entry of `network.allow` that cannot be used, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("network allow entry {entry:?}: {problem}")]
pub struct AllowError {
    /// The entry as written.
    pub entry: String,
    /// What is wrong with it and how to write it instead.
    pub problem: String,
}

/// A destination host: a normalised DNS name (lower case, no trailing dot) or an IP address
/// (IPv4-mapped IPv6 addresses become IPv4).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Host {
    Name(String),
    Ip(IpAddr),
}

impl Host {
    /// Parses a host as it appears in a request target: a name, an IPv4 literal or a bracketed
    /// IPv6 literal. `None` when it is none of these.
    pub fn parse(text: &str) -> Option<Host> {
        match text.strip_prefix('[') {
            Some(rest) => {
                let inner = rest.strip_suffix(']')?;
                inner
                    .parse::<Ipv6Addr>()
                    .ok()
                    .map(|ip| Host::Ip(IpAddr::V6(ip).to_canonical()))
            }
            None => parse_unbracketed_host(text).ok(),
        }
    }
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Name(name) => f.write_str(name),
            Host::Ip(IpAddr::V4(ip)) => write!(f, "{ip}"),
            Host::Ip(IpAddr::V6(ip)) => write!(f, "[{ip}]"),
        }
    }
}

/// Splits an authority (`host:port`, `[v6]:port`, or with `default_port`, a bare host) and
/// parses both halves. `None` when it is malformed.
pub fn parse_authority(authority: &str, default_port: Option<u16>) -> Option<(Host, u16)> {
    let (host, port) = split_host_port(authority).ok()?;
    let port = match port {
        Some(text) => parse_port(text)?,
        None => default_port?,
    };
    Some((Host::parse(host)?, port))
}

/// Which kind of entry let a destination through; it decides which resolved addresses are
/// acceptable (see [`check_resolved`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    /// An IPv4 or IPv6 literal: the operator named the address, private or not.
    IpLiteral,
    /// Exactly `localhost`: may resolve to loopback addresses only.
    Localhost,
    /// Any other name or `*.suffix`: must resolve to public addresses only.
    Hostname,
}

/// The allowlist's answer for one destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Allowed {
        /// The entry that matched, normalised (e.g. `*.github.com:443`).
        entry: String,
        kind: EntryKind,
    },
    Refused {
        /// One sentence naming the destination and the allowlist.
        reason: String,
    },
}

impl Decision {
    pub fn is_allowed(&self) -> bool {
        matches!(self, Decision::Allowed { .. })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Pattern {
    Exact(String),
    /// `*.suffix`, stored without the `*.`.
    Subdomains(String),
    Ip(IpAddr),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ports {
    Web,
    One(u16),
    Any,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    pattern: Pattern,
    ports: Ports,
}

impl Entry {
    fn matches(&self, host: &Host, port: u16) -> bool {
        let port_ok = match self.ports {
            Ports::Web => WEB_PORTS.contains(&port),
            Ports::One(allowed) => allowed == port,
            Ports::Any => true,
        };
        let host_ok = match (&self.pattern, host) {
            (Pattern::Exact(name), Host::Name(wanted)) => name == wanted,
            (Pattern::Subdomains(suffix), Host::Name(wanted)) => wanted
                .strip_suffix(suffix.as_str())
                .and_then(|front| front.strip_suffix('.'))
                .is_some_and(|labels| !labels.is_empty()),
            (Pattern::Ip(ip), Host::Ip(wanted)) => *ip == wanted.to_canonical(),
            _ => false,
        };
        port_ok && host_ok
    }

    fn kind(&self) -> EntryKind {
        match &self.pattern {
            Pattern::Ip(_) => EntryKind::IpLiteral,
            Pattern::Exact(name) if name == "localhost" => EntryKind::Localhost,
            Pattern::Exact(_) | Pattern::Subdomains(_) => EntryKind::Hostname,
        }
    }
}

impl fmt::Display for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.pattern {
            Pattern::Exact(name) => f.write_str(name)?,
            Pattern::Subdomains(suffix) => write!(f, "*.{suffix}")?,
            Pattern::Ip(ip) => write!(f, "{}", Host::Ip(*ip))?,
        }
        match self.ports {
            Ports::Web => Ok(()),
            Ports::One(port) => write!(f, ":{port}"),
            Ports::Any => f.write_str(":*"),
        }
    }
}

/// A parsed `network.allow` list. An empty list refuses everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Allowlist {
    entries: Vec<Entry>,
}

impl Allowlist {
    /// Parses every entry; the first bad one is the error.
    pub fn parse(entries: &[String]) -> Result<Allowlist, AllowError> {
        let entries = entries
            .iter()
            .map(|text| {
                parse_entry(text).map_err(|problem| AllowError {
                    entry: text.clone(),
                    problem,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Allowlist { entries })
    }

    /// Whether `host:port` matches an entry. The first matching entry wins.
    pub fn allows(&self, host: &Host, port: u16) -> Decision {
        match self.entries.iter().find(|entry| entry.matches(host, port)) {
            Some(entry) => Decision::Allowed {
                entry: entry.to_string(),
                kind: entry.kind(),
            },
            None => Decision::Refused {
                reason: format!(
                    "egress to {host}:{port} is not in this cage's network allowlist (allow: {})",
                    self.describe()
                ),
            },
        }
    }

    /// The entries, normalised, comma-separated (`nothing` when empty): for refusal messages.
    pub fn describe(&self) -> String {
        if self.entries.is_empty() {
            return "nothing".to_owned();
        }
        self.entries
            .iter()
            .map(Entry::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Why a name's DNS answer may not be connected to, phrased to follow the name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResolveRefusal {
    #[error("resolves to no address")]
    NoAddress,
    #[error(
        "resolves to {0}, which is not a loopback address; `localhost` may only reach loopback"
    )]
    NotLoopback(IpAddr),
    #[error(
        "resolves to non-public address {0}; only IP-literal entries and `localhost` may reach loopback, private, link-local or other non-public addresses"
    )]
    NotPublic(IpAddr),
}

/// The DNS-rebinding rule: given what an allowed name resolved to, may the proxy connect?
/// IP-literal entries accept their address as is; `localhost` must resolve to loopback only;
/// every other name must resolve to public addresses only (one non-public answer refuses all,
/// so a mixed answer cannot be raced).
pub fn check_resolved(kind: EntryKind, addrs: &[IpAddr]) -> Result<(), ResolveRefusal> {
    if addrs.is_empty() {
        return Err(ResolveRefusal::NoAddress);
    }
    match kind {
        EntryKind::IpLiteral => Ok(()),
        EntryKind::Localhost => match addrs.iter().find(|ip| !ip.to_canonical().is_loopback()) {
            Some(ip) => Err(ResolveRefusal::NotLoopback(*ip)),
            None => Ok(()),
        },
        EntryKind::Hostname => match addrs.iter().find(|ip| is_restricted(**ip)) {
            Some(ip) => Err(ResolveRefusal::NotPublic(*ip)),
            None => Ok(()),
        },
    }
}

/// Non-public in kaged-auth's sense (loopback, RFC 1918, CGNAT, link-local, ULA, IPv4-mapped
/// forms), plus what is never a public unicast destination: unspecified (connecting to it
/// reaches the local host), multicast, broadcast and reserved, and IPv6 forms that embed a
/// non-public IPv4 address (NAT64, 6to4, IPv4-compatible).
fn is_restricted(ip: IpAddr) -> bool {
    if kaged_auth::is_non_public(ip) {
        return true;
    }
    match ip.to_canonical() {
        IpAddr::V4(v4) => restricted_v4(v4),
        IpAddr::V6(v6) => {
            let segments = v6.segments();
            let embedded = match segments {
                // 64:ff9b::/96, the well-known NAT64 prefix.
                [0x64, 0xff9b, 0, 0, 0, 0, _, _] => Some(low_v4(v6)),
                // ::/96, deprecated IPv4-compatible addresses (:: and ::1 are handled above).
                [0, 0, 0, 0, 0, 0, _, _] => Some(low_v4(v6)),
                // 2002::/16, 6to4: the IPv4 address follows the prefix.
                [0x2002, high, low, ..] => {
                    Some(Ipv4Addr::from((u32::from(high) << 16) | u32::from(low)))
                }
                _ => None,
            };
            v6.is_unspecified()
                || v6.is_multicast()
                || embedded.is_some_and(|v4| {
                    kaged_auth::is_non_public(IpAddr::V4(v4)) || restricted_v4(v4)
                })
        }
    }
}

fn restricted_v4(ip: Ipv4Addr) -> bool {
    let first = ip.octets()[0];
    // 0.0.0.0/8 is "this network"; 224.0.0.0/4 multicast, 240.0.0.0/4 reserved and broadcast.
    first == 0 || first >= 224
}

fn low_v4(ip: Ipv6Addr) -> Ipv4Addr {
    let [.., a, b, c, d] = ip.octets();
    Ipv4Addr::new(a, b, c, d)
}

fn parse_entry(text: &str) -> Result<Entry, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("is empty".to_owned());
    }
    if text == "*" || text.starts_with("*:") {
        return Err(
            "`*` would allow every destination; to give this cage the host's network, \
                    write `network: host` instead"
                .to_owned(),
        );
    }
    if text.contains("://") || text.contains('/') {
        return Err(
            "write `host[:port]` (e.g. `pypi.org` or `*.github.com:443`), not a URL".to_owned(),
        );
    }
    let (host, port) = split_host_port(text).map_err(str::to_owned)?;
    let ports = match port {
        None => Ports::Web,
        Some("*") => Ports::Any,
        Some(port) => Ports::One(
            parse_port(port)
                .ok_or_else(|| format!("port `{port}` is not a number from 1 to 65535"))?,
        ),
    };
    let pattern = if let Some(inner) = host.strip_prefix('[') {
        let ip = inner
            .strip_suffix(']')
            .and_then(|inner| inner.parse::<Ipv6Addr>().ok())
            .ok_or_else(|| format!("`{host}` is not a valid bracketed IPv6 address"))?;
        ip_pattern(IpAddr::V6(ip))?
    } else if let Some(suffix) = host.strip_prefix("*.") {
        let suffix = parse_name(suffix).map_err(|problem| format!("after `*.`: {problem}"))?;
        if !suffix.contains('.') {
            return Err(format!(
                "`*.{suffix}` covers a whole top-level domain; name a domain under it, e.g. \
                 `*.example.{suffix}`"
            ));
        }
        Pattern::Subdomains(suffix)
    } else if host.contains('*') {
        return Err(
            "a wildcard must be a leading `*.` before a domain, e.g. `*.github.com`".to_owned(),
        );
    } else {
        match parse_unbracketed_host(host)? {
            Host::Ip(ip) => ip_pattern(ip)?,
            Host::Name(name) => Pattern::Exact(name),
        }
    };
    Ok(Entry { pattern, ports })
}

fn ip_pattern(ip: IpAddr) -> Result<Pattern, String> {
    let ip = ip.to_canonical();
    let unusable = match ip {
        IpAddr::V4(v4) => v4.is_unspecified() || v4.is_multicast() || v4.is_broadcast(),
        IpAddr::V6(v6) => v6.is_unspecified() || v6.is_multicast(),
    };
    if unusable {
        return Err(format!("`{}` is not a destination address", Host::Ip(ip)));
    }
    Ok(Pattern::Ip(ip))
}

/// Splits `host[:port]` or `[v6][:port]` without judging either half.
fn split_host_port(text: &str) -> Result<(&str, Option<&str>), &'static str> {
    if text.starts_with('[') {
        let close = text
            .find(']')
            .ok_or("an IPv6 address needs its closing `]`")?;
        let (host, rest) = text.split_at(close + 1);
        return match rest {
            "" => Ok((host, None)),
            _ => match rest.strip_prefix(':') {
                Some(port) => Ok((host, Some(port))),
                None => Err("only `:port` may follow a bracketed IPv6 address"),
            },
        };
    }
    match text.matches(':').count() {
        0 => Ok((text, None)),
        1 => Ok(text
            .split_once(':')
            .map_or((text, None), |(host, port)| (host, Some(port)))),
        _ => Err("write an IPv6 address in brackets, e.g. `[::1]:443`"),
    }
}

fn parse_port(text: &str) -> Option<u16> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse::<u16>().ok().filter(|port| *port != 0)
}

fn parse_unbracketed_host(text: &str) -> Result<Host, String> {
    if let Ok(ip) = text.parse::<Ipv4Addr>() {
        return Ok(Host::Ip(IpAddr::V4(ip)));
    }
    if text.parse::<Ipv6Addr>().is_ok() {
        return Err("write an IPv6 address in brackets, e.g. `[::1]:443`".to_owned());
    }
    parse_name(text).map(Host::Name)
}

/// A DNS name, lower-cased and without its trailing dot. The last label may not be all digits:
/// resolvers read `127.1` or `2130706433` as IPv4 addresses, which would slip past the literal
/// rules.
fn parse_name(text: &str) -> Result<String, String> {
    let name = text.strip_suffix('.').unwrap_or(text).to_ascii_lowercase();
    let invalid = || {
        format!(
            "`{text}` is not a valid host name (letters, digits, `-` and `_` in dot-separated \
             labels of at most {MAX_LABEL_LEN} characters; international names in their `xn--` form)"
        )
    };
    if name.is_empty() || name.len() > MAX_NAME_LEN {
        return Err(invalid());
    }
    for label in name.split('.') {
        let valid = !label.is_empty()
            && label.len() <= MAX_LABEL_LEN
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
        if !valid {
            return Err(invalid());
        }
    }
    let last = name.rsplit('.').next().unwrap_or_default();
    if last.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "`{text}` looks like a numeric address; write IPv4 addresses as four dotted decimals"
        ));
    }
    Ok(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(entries: &[&str]) -> Allowlist {
        let entries: Vec<String> = entries.iter().map(|e| e.to_string()).collect();
        Allowlist::parse(&entries).unwrap()
    }

    fn parse_error(entry: &str) -> AllowError {
        Allowlist::parse(&[entry.to_owned()]).unwrap_err()
    }

    fn allowed(list: &Allowlist, host: &str, port: u16) -> bool {
        let host = Host::parse(host).unwrap_or_else(|| panic!("bad host {host}"));
        list.allows(&host, port).is_allowed()
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn exact_name_matches_itself_only() {
        let l = list(&["pypi.org"]);
        assert!(allowed(&l, "pypi.org", 443));
        assert!(allowed(&l, "pypi.org", 80));
        assert!(!allowed(&l, "files.pypi.org", 443));
        assert!(!allowed(&l, "pypi.org.evil.com", 443));
        assert!(!allowed(&l, "xpypi.org", 443));
    }

    #[test]
    fn no_port_means_80_and_443_only() {
        let l = list(&["pypi.org"]);
        assert!(!allowed(&l, "pypi.org", 22));
        assert!(!allowed(&l, "pypi.org", 8080));
    }

    #[test]
    fn explicit_port_allows_that_port_only() {
        let l = list(&["*.github.com:443", "127.0.0.1:8080"]);
        assert!(allowed(&l, "api.github.com", 443));
        assert!(!allowed(&l, "api.github.com", 80));
        assert!(allowed(&l, "127.0.0.1", 8080));
        assert!(!allowed(&l, "127.0.0.1", 8081));
        assert!(!allowed(&l, "127.0.0.1", 443));
    }

    #[test]
    fn star_port_allows_every_port_of_that_host_only() {
        let l = list(&["db.example.org:*", "[::1]:*"]);
        assert!(allowed(&l, "db.example.org", 1));
        assert!(allowed(&l, "db.example.org", 5432));
        assert!(allowed(&l, "db.example.org", 65535));
        assert!(!allowed(&l, "other.example.org", 443));
        assert!(allowed(&l, "[::1]", 8080));
        assert!(!allowed(&l, "127.0.0.1", 8080));
        assert_eq!(l.describe(), "db.example.org:*, [::1]:*");
        assert!(parse_error("*:*").problem.contains("network: host"));
    }

    #[test]
    fn wildcard_needs_at_least_one_more_label() {
        let l = list(&["*.github.com"]);
        assert!(allowed(&l, "api.github.com", 443));
        assert!(allowed(&l, "a.b.github.com", 443));
        assert!(!allowed(&l, "github.com", 443));
        assert!(!allowed(&l, "evilgithub.com", 443));
        assert!(!allowed(&l, "github.com.evil.net", 443));
    }

    #[test]
    fn names_are_case_insensitive_and_ignore_a_trailing_dot() {
        let l = list(&["PyPI.Org.", "*.GitHub.com"]);
        assert!(allowed(&l, "pypi.org", 443));
        assert!(allowed(&l, "PYPI.ORG.", 443));
        assert!(allowed(&l, "API.GITHUB.COM.", 443));
        assert_eq!(l.describe(), "pypi.org, *.github.com");
    }

    #[test]
    fn ip_literals_match_addresses_not_names() {
        let l = list(&["127.0.0.1:8080", "[::1]:443", "[::FFFF:10.0.0.1]"]);
        assert!(allowed(&l, "127.0.0.1", 8080));
        assert!(allowed(&l, "[::1]", 443));
        assert!(allowed(&l, "[0:0:0:0:0:0:0:1]", 443));
        // IPv4-mapped forms are the same address as the IPv4 one, both ways.
        assert!(allowed(&l, "[::ffff:127.0.0.1]", 8080));
        assert!(allowed(&l, "10.0.0.1", 80));
        assert!(!allowed(&l, "localhost", 8080));
        assert!(!allowed(&l, "127.0.0.2", 8080));
        assert_eq!(l.describe(), "127.0.0.1:8080, [::1]:443, 10.0.0.1");
    }

    #[test]
    fn names_never_match_ip_hosts_and_wildcards_never_match_ips() {
        let l = list(&["*.example.com", "example.com"]);
        assert!(!allowed(&l, "10.0.0.1", 443));
        assert!(!allowed(&l, "[::1]", 443));
    }

    #[test]
    fn entry_kinds() {
        let l = list(&[
            "localhost:3000",
            "LOCALHOST.:3001",
            "example.com",
            "*.example.org",
            "10.1.2.3",
        ]);
        let kind = |host: &str, port| match l.allows(&Host::parse(host).unwrap(), port) {
            Decision::Allowed { kind, .. } => kind,
            refused => panic!("{refused:?}"),
        };
        assert_eq!(kind("localhost", 3000), EntryKind::Localhost);
        assert_eq!(kind("localhost", 3001), EntryKind::Localhost);
        assert_eq!(kind("example.com", 443), EntryKind::Hostname);
        assert_eq!(kind("a.example.org", 443), EntryKind::Hostname);
        assert_eq!(kind("10.1.2.3", 80), EntryKind::IpLiteral);
    }

    #[test]
    fn allowed_names_the_matching_entry() {
        let l = list(&["pypi.org:8443", "*.github.com:443"]);
        assert_eq!(
            l.allows(&Host::parse("api.github.com").unwrap(), 443),
            Decision::Allowed {
                entry: "*.github.com:443".to_owned(),
                kind: EntryKind::Hostname
            }
        );
    }

    #[test]
    fn refusal_names_destination_and_allowlist() {
        let l = list(&["pypi.org", "[::1]:8080"]);
        let Decision::Refused { reason } = l.allows(&Host::parse("[::1]").unwrap(), 22) else {
            panic!("allowed");
        };
        assert_eq!(
            reason,
            "egress to [::1]:22 is not in this cage's network allowlist (allow: pypi.org, [::1]:8080)"
        );
        let Decision::Refused { reason } =
            Allowlist::default().allows(&Host::parse("a.b").unwrap(), 443)
        else {
            panic!("allowed");
        };
        assert!(reason.ends_with("(allow: nothing)"), "{reason}");
    }

    #[test]
    fn star_alone_is_refused_with_a_pointer_to_network_host() {
        for entry in ["*", "*:443", " * "] {
            let error = parse_error(entry);
            assert_eq!(error.entry, entry);
            assert!(error.problem.contains("network: host"), "{error}");
        }
    }

    #[test]
    fn bad_entries_are_refused_naming_the_entry() {
        let cases = [
            ("", "is empty"),
            ("*.com", "top-level domain"),
            ("*.", "after `*.`"),
            ("a.*.com", "leading `*.`"),
            ("*github.com", "leading `*.`"),
            ("**.github.com", "leading `*.`"),
            ("::1", "brackets"),
            ("::1:443", "brackets"),
            ("[::1", "closing `]`"),
            ("[::1]x", "only `:port`"),
            ("[1.2.3.4]:80", "bracketed IPv6"),
            ("pypi.org:0", "port `0`"),
            ("pypi.org:65536", "port `65536`"),
            ("pypi.org:+80", "port `+80`"),
            ("pypi.org:", "port ``"),
            ("https://pypi.org", "not a URL"),
            ("pypi.org/simple", "not a URL"),
            ("pyp i.org", "not a valid host name"),
            ("-a.org", "not a valid host name"),
            ("a..org", "not a valid host name"),
            ("bücher.de", "xn--"),
            ("127.1", "numeric address"),
            ("2130706433", "numeric address"),
            ("0.0.0.0", "not a destination"),
            ("[::]:80", "not a destination"),
            ("255.255.255.255", "not a destination"),
            ("224.0.0.1", "not a destination"),
            ("[ff02::1]", "not a destination"),
        ];
        for (entry, expected) in cases {
            let error = parse_error(entry);
            assert_eq!(error.entry, entry);
            assert!(error.problem.contains(expected), "{entry:?}: {error}");
            assert!(error.to_string().contains(&format!("{entry:?}")), "{error}");
        }
    }

    #[test]
    fn the_first_bad_entry_is_reported() {
        let entries = vec!["pypi.org".to_owned(), "*".to_owned(), "::1".to_owned()];
        assert_eq!(Allowlist::parse(&entries).unwrap_err().entry, "*");
    }

    #[test]
    fn long_names_and_labels() {
        let label63 = "a".repeat(63);
        assert!(Allowlist::parse(&[format!("{label63}.com")]).is_ok());
        assert!(Allowlist::parse(&[format!("{}.com", "a".repeat(64))]).is_err());
        let long = [label63.as_str(); 4].join(".");
        assert_eq!(long.len(), 255);
        assert!(Allowlist::parse(&[long]).is_err());
    }

    #[test]
    fn empty_list_refuses_everything() {
        let l = Allowlist::parse(&[]).unwrap();
        assert!(!allowed(&l, "pypi.org", 443));
        assert!(!allowed(&l, "127.0.0.1", 80));
    }

    #[test]
    fn request_hosts_and_authorities() {
        assert_eq!(
            Host::parse("Example.COM."),
            Some(Host::Name("example.com".into()))
        );
        assert_eq!(
            Host::parse("[::ffff:1.2.3.4]"),
            Some(Host::Ip(ip("1.2.3.4")))
        );
        assert_eq!(Host::parse("::1"), None);
        assert_eq!(Host::parse("[::1"), None);
        assert_eq!(Host::parse("a b"), None);
        assert_eq!(Host::parse(""), None);
        assert_eq!(
            parse_authority("example.com:8443", None),
            Some((Host::Name("example.com".into()), 8443))
        );
        assert_eq!(
            parse_authority("[::1]:443", None),
            Some((Host::Ip(ip("::1")), 443))
        );
        assert_eq!(parse_authority("example.com", None), None);
        assert_eq!(
            parse_authority("example.com", Some(80)),
            Some((Host::Name("example.com".into()), 80))
        );
        assert_eq!(parse_authority("example.com:0", Some(80)), None);
        assert_eq!(parse_authority("example.com:http", Some(80)), None);
        assert_eq!(parse_authority("::1:443", None), None);
        assert_eq!(Host::Ip(ip("::1")).to_string(), "[::1]");
        assert_eq!(Host::Ip(ip("10.0.0.1")).to_string(), "10.0.0.1");
    }

    #[test]
    fn hostname_entries_must_resolve_to_public_addresses() {
        let public = [ip("140.82.112.3"), ip("2606:4700::1111")];
        assert_eq!(check_resolved(EntryKind::Hostname, &public), Ok(()));
        let non_public = [
            "127.0.0.1",
            "127.8.9.10",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "0.1.2.3",
            "224.0.0.1",
            "255.255.255.255",
            "::1",
            "::",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "::ffff:169.254.169.254",
            "64:ff9b::7f00:1",
            "64:ff9b::a9fe:a9fe",
            "2002:7f00:1::1",
            "2002:c0a8:101::1",
            "::127.0.0.1",
        ];
        for addr in non_public {
            let error = check_resolved(EntryKind::Hostname, &[ip(addr)])
                .unwrap_err()
                .to_string();
            assert!(error.contains("non-public"), "{addr}: {error}");
        }
        assert_eq!(
            check_resolved(EntryKind::Hostname, &[ip("10.0.0.1")])
                .unwrap_err()
                .to_string(),
            "resolves to non-public address 10.0.0.1; only IP-literal entries and `localhost` may reach loopback, private, link-local or other non-public addresses"
        );
        // A single non-public answer among public ones refuses the lot.
        let mixed = [ip("140.82.112.3"), ip("127.0.0.1")];
        assert!(check_resolved(EntryKind::Hostname, &mixed).is_err());
        // Public addresses embedded in IPv6 transition forms stay public.
        for addr in ["64:ff9b::8c52:7003", "2002:8c52:7003::1"] {
            assert_eq!(
                check_resolved(EntryKind::Hostname, &[ip(addr)]),
                Ok(()),
                "{addr}"
            );
        }
    }

    #[test]
    fn localhost_may_resolve_to_loopback_only() {
        let loopback = [ip("127.0.0.1"), ip("::1"), ip("::ffff:127.0.0.1")];
        assert_eq!(check_resolved(EntryKind::Localhost, &loopback), Ok(()));
        for addr in ["10.0.0.1", "140.82.112.3", "fe80::1"] {
            let error = check_resolved(EntryKind::Localhost, &[ip("127.0.0.1"), ip(addr)])
                .unwrap_err()
                .to_string();
            assert!(error.contains("not a loopback"), "{addr}: {error}");
        }
    }

    #[test]
    fn ip_literal_entries_accept_their_address() {
        for addr in ["127.0.0.1", "10.0.0.1", "::1", "140.82.112.3"] {
            assert_eq!(check_resolved(EntryKind::IpLiteral, &[ip(addr)]), Ok(()));
        }
    }

    #[test]
    fn no_address_is_refused() {
        for kind in [
            EntryKind::IpLiteral,
            EntryKind::Localhost,
            EntryKind::Hostname,
        ] {
            assert!(check_resolved(kind, &[]).is_err());
        }
    }
}
