//! Which addresses are private enough for plain HTTP, for the daemon's listeners and for the
//! client's bearer-token targets. Literal IPs only: a host name could resolve anywhere.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// Loopback, RFC 1918, CGNAT (100.64/10), link-local, or IPv6 ULA (fc00::/7). IPv4-mapped IPv6
/// addresses are judged by the IPv4 address inside.
pub fn is_non_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => non_public_v4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => non_public_v4(v4),
            None => non_public_v6(v6),
        },
    }
}

fn non_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || (a == 100 && (64..128).contains(&b))
}

fn non_public_v6(ip: Ipv6Addr) -> bool {
    let first = ip.segments()[0];
    ip.is_loopback() || (first & 0xfe00) == 0xfc00 || (first & 0xffc0) == 0xfe80
}

fn is_loopback(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map_or(v6.is_loopback(), |v4| v4.is_loopback()),
        IpAddr::V4(v4) => v4.is_loopback(),
    }
}

/// Startup guardrail for a plain-HTTP TCP listener. Loopback is always fine. Anything else needs
/// a bearer token and the operator's private-network opt-in, and must be one literal
/// non-public address (never all interfaces).
pub fn check_listener(
    addr: SocketAddr,
    has_token: bool,
    trust_private: bool,
) -> Result<(), String> {
    let ip = addr.ip();
    if is_loopback(ip) {
        return Ok(());
    }
    let fix =
        "put kaged behind a TLS-terminating reverse proxy, or bind 127.0.0.1 and use an SSH tunnel";
    if ip.is_unspecified() {
        return Err(format!(
            "refusing to listen on {addr} (all interfaces) over plain HTTP; bind one private address (e.g. a VPN IP such as 100.64.0.2:{}) or 127.0.0.1, or {fix}",
            addr.port()
        ));
    }
    if !is_non_public(ip) {
        return Err(format!(
            "refusing to listen on {addr}: {ip} is a public address and kaged does not terminate TLS; {fix}"
        ));
    }
    match (has_token, trust_private) {
        (true, true) => Ok(()),
        (false, _) => Err(format!(
            "refusing to listen on {addr} without a bearer token: set [auth] token (or KAGED_AUTH_TOKEN) and [auth] trust_private_network = true (or KAGED_TRUST_PRIVATE_NETWORK=1) to assert this network is private, or {fix}"
        )),
        (true, false) => Err(format!(
            "refusing to listen on {addr}: a bearer token would travel over plain HTTP; set [auth] trust_private_network = true (or KAGED_TRUST_PRIVATE_NETWORK=1) if this network is private (VPN), or {fix}"
        )),
    }
}

/// Client rule: may a bearer token be sent to `url`? https always; plain http only to loopback,
/// or with the trust opt-in to a literal non-public IP.
pub fn check_bearer_target(url: &str, trust_private: bool) -> Result<(), String> {
    let (scheme, rest) = url.split_once("://").ok_or_else(|| {
        format!("{url:?} is not a URL (expected http://HOST:PORT or https://HOST)")
    })?;
    let authority = rest.split('/').next().unwrap_or_default();
    if authority.is_empty() {
        return Err(format!("{url:?} has no host"));
    }
    if authority.contains('@') {
        // `http://127.0.0.1:7777@evil.example` goes to evil.example: never judge by the prefix.
        return Err(format!(
            "{url:?} contains user information (an '@' before the host); give the daemon's URL as scheme://host:port"
        ));
    }
    match scheme {
        "https" => return Ok(()),
        "http" => {}
        other => {
            return Err(format!(
                "{url:?}: scheme must be http or https, not {other:?}"
            ));
        }
    }
    let host = match authority.rsplit_once(':') {
        Some((h, p)) if !p.ends_with(']') => h,
        _ => authority,
    };
    let literal = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<IpAddr>()
        .ok();
    let fix = "use https (a TLS-terminating proxy) or an SSH tunnel to 127.0.0.1";
    match literal {
        _ if host.eq_ignore_ascii_case("localhost") => Ok(()),
        Some(ip) if is_loopback(ip) => Ok(()),
        Some(ip) if trust_private && is_non_public(ip) && !ip.is_unspecified() => Ok(()),
        Some(ip) if trust_private => Err(format!(
            "refusing to send the bearer token over plain HTTP to {ip}: it is not a private address; {fix}"
        )),
        Some(_) => Err(format!(
            "refusing to send the bearer token over plain HTTP to {url}; set KAGED_TRUST_PRIVATE_NETWORK=1 if it is a private (VPN) address, or {fix}"
        )),
        None => Err(format!(
            "refusing to send the bearer token over plain HTTP to the host name {host:?}: only literal private IPs qualify; {fix}"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn classifies_ipv4_and_ipv6_including_mapped_addresses() {
        for private in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "100.64.0.1",
            "100.127.255.254",
            "169.254.10.10",
            "::1",
            "fd12:3456::1",
            "fc00::1",
            "fe80::1",
            "::ffff:10.0.0.1",
            "::ffff:127.0.0.1",
            "::ffff:100.64.0.9",
        ] {
            assert!(is_non_public(ip(private)), "{private}");
        }
        for public in [
            "8.8.8.8",
            "172.32.0.1",
            "100.128.0.1",
            "100.63.255.255",
            "192.169.0.1",
            "2001:db8::1",
            "2606:4700::1111",
            "::ffff:8.8.8.8",
            "fec0::1",
        ] {
            assert!(!is_non_public(ip(public)), "{public}");
        }
    }

    #[test]
    fn listener_guardrails() {
        let a = |s: &str| s.parse::<SocketAddr>().unwrap();
        assert!(check_listener(a("127.0.0.1:7777"), false, false).is_ok());
        assert!(check_listener(a("[::1]:7777"), false, false).is_ok());
        assert!(check_listener(a("[::ffff:127.0.0.1]:7777"), false, false).is_ok());
        assert!(check_listener(a("100.64.0.2:7777"), true, true).is_ok());
        let e = check_listener(a("100.64.0.2:7777"), false, true).unwrap_err();
        assert!(e.contains("without a bearer token"), "{e}");
        let e = check_listener(a("100.64.0.2:7777"), true, false).unwrap_err();
        assert!(e.contains("trust_private_network"), "{e}");
        let e = check_listener(a("0.0.0.0:7777"), true, true).unwrap_err();
        assert!(e.contains("all interfaces"), "{e}");
        let e = check_listener(a("[::]:7777"), true, true).unwrap_err();
        assert!(e.contains("all interfaces"), "{e}");
        let e = check_listener(a("8.8.8.8:7777"), true, true).unwrap_err();
        assert!(e.contains("public address") && e.contains("TLS"), "{e}");
        let e = check_listener(a("[::ffff:8.8.8.8]:7777"), true, true).unwrap_err();
        assert!(e.contains("public address"), "{e}");
    }

    #[test]
    fn bearer_targets() {
        for ok in [
            "https://kaged.example.com",
            "http://127.0.0.1:7777",
            "http://localhost:7777",
            "http://[::1]:7777/x",
        ] {
            assert!(check_bearer_target(ok, false).is_ok(), "{ok}");
        }
        assert!(check_bearer_target("http://100.64.0.2:7777", true).is_ok());
        assert!(check_bearer_target("http://[fd00::2]:7777", true).is_ok());
        for (bad, trust, needle) in [
            (
                "http://100.64.0.2:7777",
                false,
                "KAGED_TRUST_PRIVATE_NETWORK",
            ),
            ("http://8.8.8.8:7777", true, "not a private address"),
            ("http://kaged.lan:7777", true, "host name"),
            ("http://0.0.0.0:7777", true, "not a private address"),
            ("ftp://127.0.0.1", false, "scheme"),
            ("127.0.0.1:7777", false, "not a URL"),
            ("http://", false, "no host"),
            ("http://127.0.0.1:7777@192.0.2.2", false, "user information"),
            ("https://127.0.0.1@evil.example", false, "user information"),
        ] {
            let e = check_bearer_target(bad, trust).unwrap_err();
            assert!(e.contains(needle), "{bad}: {e}");
        }
    }
}
