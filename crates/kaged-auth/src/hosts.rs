//! The Host and Origin allowlist: which authorities this daemon answers to (DNS rebinding).

use std::net::{IpAddr, SocketAddr};

/// Hosts the daemon answers to. Every TCP listener's port with the loopback names (an SSH
/// tunnel or a local browser), and each listener's own literal IP (a VPN address, say) with its
/// own port only. Never a DNS name unless configured: anything else is a foreign name resolving
/// to us (DNS rebinding).
#[derive(Debug, Clone)]
pub struct AllowedHosts {
    /// `(name, port)`: lowercase names, IPv6 literals in brackets.
    pairs: Vec<(String, u16)>,
    /// Configured `[daemon] allowed_hosts`: exact `name` or `name:port` authorities (the public
    /// name a sidecar forwards), accepted in Host and in http or https Origins.
    extra: Vec<String>,
}

const LOOPBACK_NAMES: [&str; 3] = ["localhost", "127.0.0.1", "[::1]"];

impl AllowedHosts {
    /// Every TCP listener's port and specific address, plus configured public names.
    pub fn for_listeners(addrs: &[SocketAddr], extra: &[String]) -> Self {
        let mut pairs: Vec<(String, u16)> = Vec::new();
        let mut add = |name: String, port: u16| {
            if !pairs.iter().any(|(n, p)| *n == name && *p == port) {
                pairs.push((name, port));
            }
        };
        for addr in addrs {
            let port = addr.port();
            for name in LOOPBACK_NAMES {
                add(name.to_string(), port);
            }
            let ip = addr.ip();
            if !ip.is_unspecified() {
                add(
                    match ip {
                        IpAddr::V4(v4) => v4.to_string(),
                        IpAddr::V6(v6) => format!("[{v6}]"),
                    },
                    port,
                );
            }
        }
        AllowedHosts {
            pairs,
            extra: extra.iter().map(|h| h.to_ascii_lowercase()).collect(),
        }
    }

    /// `host[:port]` as in a Host header or an Origin's authority.
    pub fn allows_authority(&self, authority: &str) -> bool {
        let authority = authority.to_ascii_lowercase();
        if self.extra.contains(&authority) {
            return true;
        }
        let (name, port) = match authority.rsplit_once(':') {
            // An IPv6 literal without a port ends in ']'.
            Some((n, p)) if !p.ends_with(']') => match p.parse::<u16>() {
                Ok(p) => (n.to_string(), p),
                Err(_) => return false,
            },
            _ => (authority.clone(), 80),
        };
        self.pairs.iter().any(|(n, p)| *n == name && *p == port)
    }

    pub(crate) fn allows_origin(&self, origin: &str) -> bool {
        let origin = origin.to_ascii_lowercase();
        if let Some(authority) = origin.strip_prefix("https://") {
            return self.extra.iter().any(|e| *e == authority);
        }
        origin
            .strip_prefix("http://")
            .is_some_and(|authority| !authority.contains('/') && self.allows_authority(authority))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn several_listeners_share_one_allowlist() {
        let a = AllowedHosts::for_listeners(
            &[
                "127.0.0.1:7001".parse().unwrap(),
                "100.64.0.2:7002".parse().unwrap(),
            ],
            &[],
        );
        assert!(a.allows_authority("localhost:7001"));
        assert!(a.allows_authority("100.64.0.2:7002"));
        assert!(!a.allows_authority("localhost:7003"));
    }

    #[test]
    fn bound_vpn_address_is_allowed_as_host_with_its_port_only() {
        let hosts = |addrs: &[&str], extra: &[&str]| {
            let addrs: Vec<SocketAddr> = addrs.iter().map(|a| a.parse().unwrap()).collect();
            let extra: Vec<String> = extra.iter().map(|e| e.to_string()).collect();
            AllowedHosts::for_listeners(&addrs, &extra)
        };
        let vpn = hosts(&["100.64.7.7:7777"], &[]);
        let vpn6 = hosts(&["[fd7a:115c:a1e0::7]:7777"], &[]);
        let two = hosts(&["127.0.0.1:7001", "100.64.7.7:7002"], &[]);
        let named = hosts(&["100.64.7.7:7777"], &["kaged.tailnet.example:7777"]);
        let wildcard = hosts(&["0.0.0.0:7777"], &[]);
        let other_loopback = hosts(&["127.0.0.2:7777"], &[]);
        let cases: &[(&AllowedHosts, &str, bool)] = &[
            (&vpn, "100.64.7.7:7777", true),
            (&vpn, "100.64.7.7:7778", false),
            (&vpn, "100.64.7.7", false),
            (&vpn, "100.64.7.8:7777", false),
            (&vpn, "0100.64.7.7:7777", false),
            // A DNS name that resolves to the VPN address: only when configured.
            (&vpn, "kaged.tailnet.example:7777", false),
            (&vpn, "100.64.7.7.nip.io:7777", false),
            (&named, "kaged.tailnet.example:7777", true),
            (&named, "KAGED.tailnet.example:7777", true),
            (&named, "kaged.tailnet.example:7778", false),
            // Loopback names still reach it (an SSH tunnel forwarding the port).
            (&vpn, "localhost:7777", true),
            (&vpn, "127.0.0.1:7777", true),
            (&vpn6, "[fd7a:115c:a1e0::7]:7777", true),
            (&vpn6, "[FD7A:115C:A1E0::7]:7777", true),
            (&vpn6, "[fd7a:115c:a1e0::8]:7777", false),
            (&vpn6, "[fd7a:115c:a1e0::7]", false),
            // Each listener's own address goes with its own port; loopback names with every port.
            (&two, "100.64.7.7:7002", true),
            (&two, "100.64.7.7:7001", false),
            (&two, "localhost:7001", true),
            (&two, "localhost:7002", true),
            (&two, "localhost:7003", false),
            (&wildcard, "0.0.0.0:7777", false),
            (&wildcard, "127.0.0.1:7777", true),
            // The launch URL of a bind to another loopback address names that address.
            (&other_loopback, "127.0.0.2:7777", true),
        ];
        for (allowed, host, want) in cases {
            assert_eq!(
                allowed.allows_authority(host),
                *want,
                "{host} for {allowed:?}"
            );
        }
        // The UI's Origin on the VPN address passes; the same address on https does not.
        assert!(vpn.allows_origin("http://100.64.7.7:7777"));
        assert!(!vpn.allows_origin("https://100.64.7.7:7777"));
        assert!(!vpn.allows_origin("http://100.64.7.7:7778"));
    }
}
