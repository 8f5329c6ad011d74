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

/// What a TCP listener exposes, once [`check_listener`] let it through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exposure {
    /// Loopback: nothing leaves the host.
    Loopback,
    /// One literal non-public address (a VPN, a LAN) over plain HTTP: sign-in secrets and all
    /// traffic cross that network unencrypted, so it belongs on an encrypted overlay
    /// (WireGuard, Tailscale). The daemon says so once at start.
    PlainHttpPrivate,
}

/// How a listener's callers authenticate, as far as the plain-HTTP guardrail cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListenerAuth {
    /// Launch URL and login cookie ([`crate::Mechanism::LaunchUrl`]).
    pub launch_url: bool,
    /// `--insecure`: nobody is authenticated.
    pub insecure: bool,
    /// `--insecure-readonly`: reads need nothing.
    pub insecure_readonly: bool,
    /// `[auth] token` is set, so bearer tokens are accepted.
    pub bearer_token: bool,
    /// `[auth] trust_private_network`: the operator asserts the network is private.
    pub trust_private_network: bool,
}

const LISTENER_FIX: &str =
    "put kaged behind a TLS-terminating reverse proxy, or bind 127.0.0.1 and use an SSH tunnel";

/// Why a TCP listener is refused at start (a configuration problem: exit 2).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ListenerRefusal {
    #[error(
        "refusing --insecure on {0}: with no authentication at all, only a loopback address (127.0.0.1) is allowed"
    )]
    InsecureNotLoopback(SocketAddr),
    #[error(
        "refusing to listen on {addr} (all interfaces) over plain HTTP; bind one private address (e.g. a VPN IP such as 100.64.0.2:{port}) or 127.0.0.1, or {LISTENER_FIX}",
        port = .0.port(), addr = .0
    )]
    AllInterfaces(SocketAddr),
    #[error(
        "refusing to listen on {addr}: {ip} is a public address and kaged does not terminate TLS; {LISTENER_FIX}",
        ip = .0.ip(), addr = .0
    )]
    Public(SocketAddr),
    #[error(
        "refusing to listen on {0} without a bearer token: set [auth] token (or KAGED_AUTH_TOKEN) and [auth] trust_private_network = true (or KAGED_TRUST_PRIVATE_NETWORK=1) to assert this network is private, or {LISTENER_FIX}"
    )]
    NoToken(SocketAddr),
    #[error(
        "refusing to listen on {0}: a bearer token would travel over plain HTTP; set [auth] trust_private_network = true (or KAGED_TRUST_PRIVATE_NETWORK=1) if this network is private (VPN), or {LISTENER_FIX}"
    )]
    TokenWithoutTrust(SocketAddr),
}

/// Startup guardrail for a plain-HTTP TCP listener. Loopback is always fine (`--insecure` gets
/// nothing else). Otherwise the address must be one literal non-public IP (never all
/// interfaces, never public), and then:
/// - launch-URL sign-in without a bearer token is accepted (the per-user guide's VPN bind);
/// - a bearer token needs the operator's private-network opt-in, whatever the sign-in;
/// - `--insecure-readonly` without a token sends no secret, so the address rule is enough;
/// - anything else (sidecar sign-in) needs a bearer token and the opt-in.
pub fn check_listener(addr: SocketAddr, auth: ListenerAuth) -> Result<Exposure, ListenerRefusal> {
    let ip = addr.ip();
    if auth.insecure && !is_loopback(ip) {
        return Err(ListenerRefusal::InsecureNotLoopback(addr));
    }
    if is_loopback(ip) {
        return Ok(Exposure::Loopback);
    }
    if ip.is_unspecified() || ip.to_canonical().is_unspecified() {
        return Err(ListenerRefusal::AllInterfaces(addr));
    }
    if !is_non_public(ip) {
        return Err(ListenerRefusal::Public(addr));
    }
    match (auth.bearer_token, auth.trust_private_network) {
        (true, true) => Ok(Exposure::PlainHttpPrivate),
        (true, false) => Err(ListenerRefusal::TokenWithoutTrust(addr)),
        (false, _) if auth.launch_url || auth.insecure_readonly => Ok(Exposure::PlainHttpPrivate),
        (false, _) => Err(ListenerRefusal::NoToken(addr)),
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

    const LAUNCH: ListenerAuth = ListenerAuth {
        launch_url: true,
        insecure: false,
        insecure_readonly: false,
        bearer_token: false,
        trust_private_network: false,
    };
    const SIDECAR: ListenerAuth = ListenerAuth {
        launch_url: false,
        ..LAUNCH
    };
    const TOKEN: ListenerAuth = ListenerAuth {
        bearer_token: true,
        ..LAUNCH
    };
    const TOKEN_TRUSTED: ListenerAuth = ListenerAuth {
        trust_private_network: true,
        ..TOKEN
    };
    const SIDECAR_TOKEN_TRUSTED: ListenerAuth = ListenerAuth {
        launch_url: false,
        ..TOKEN_TRUSTED
    };
    const INSECURE: ListenerAuth = ListenerAuth {
        launch_url: false,
        insecure: true,
        ..TOKEN_TRUSTED
    };
    const READONLY: ListenerAuth = ListenerAuth {
        launch_url: false,
        insecure_readonly: true,
        ..LAUNCH
    };
    const READONLY_TOKEN: ListenerAuth = ListenerAuth {
        bearer_token: true,
        ..READONLY
    };

    #[test]
    fn launch_url_sign_in_accepts_every_literal_private_address() {
        use Exposure::*;
        for (addr, exposure) in [
            ("127.0.0.1:7777", Loopback),
            ("127.0.0.2:7777", Loopback),
            ("[::1]:7777", Loopback),
            ("[::ffff:127.0.0.1]:7777", Loopback),
            // The guide's Option A: a Tailscale (CGNAT) or WireGuard address.
            ("100.64.7.7:7777", PlainHttpPrivate),
            ("100.127.255.254:7777", PlainHttpPrivate),
            ("10.8.0.2:7777", PlainHttpPrivate),
            ("172.16.0.2:7777", PlainHttpPrivate),
            ("192.168.1.20:7777", PlainHttpPrivate),
            ("169.254.10.10:7777", PlainHttpPrivate),
            ("[fd7a:115c:a1e0::1]:7777", PlainHttpPrivate),
            ("[fe80::1%2]:7777", PlainHttpPrivate),
            ("[::ffff:100.64.0.9]:7777", PlainHttpPrivate),
        ] {
            let a: SocketAddr = addr.parse().unwrap();
            assert_eq!(check_listener(a, LAUNCH), Ok(exposure), "{addr}");
        }
    }

    #[test]
    fn listener_guardrails() {
        use ListenerRefusal::*;
        type Case = (
            &'static str,
            ListenerAuth,
            Result<Exposure, fn(SocketAddr) -> ListenerRefusal>,
        );
        let private = Ok(Exposure::PlainHttpPrivate);
        let cases: &[Case] = &[
            // Public addresses and wildcards: refused whatever the sign-in or the opt-ins.
            ("8.8.8.8:7777", LAUNCH, Err(Public)),
            ("8.8.8.8:7777", TOKEN_TRUSTED, Err(Public)),
            ("100.128.0.1:7777", LAUNCH, Err(Public)),
            ("[2606:4700::1111]:7777", LAUNCH, Err(Public)),
            ("[::ffff:8.8.8.8]:7777", TOKEN_TRUSTED, Err(Public)),
            ("[fec0::1]:7777", LAUNCH, Err(Public)),
            ("0.0.0.0:7777", LAUNCH, Err(AllInterfaces)),
            ("0.0.0.0:7777", TOKEN_TRUSTED, Err(AllInterfaces)),
            ("[::]:7777", LAUNCH, Err(AllInterfaces)),
            ("[::ffff:0.0.0.0]:7777", READONLY, Err(AllInterfaces)),
            // Bearer-token rules as before: a token needs the private-network opt-in.
            ("100.64.0.2:7777", TOKEN, Err(TokenWithoutTrust)),
            ("100.64.0.2:7777", TOKEN_TRUSTED, private),
            ("[fd00::7]:7777", TOKEN, Err(TokenWithoutTrust)),
            // Sidecar sign-in off loopback: a token and the opt-in, as before.
            ("100.64.0.2:7777", SIDECAR, Err(NoToken)),
            ("100.64.0.2:7777", SIDECAR_TOKEN_TRUSTED, private),
            // --insecure: loopback only, whatever else is set.
            ("127.0.0.1:7777", INSECURE, Ok(Exposure::Loopback)),
            ("100.64.0.9:7777", INSECURE, Err(InsecureNotLoopback)),
            // --insecure-readonly: no secret without a token; with one, the usual rule.
            ("100.64.0.9:7777", READONLY, private),
            ("100.64.0.9:7777", READONLY_TOKEN, Err(TokenWithoutTrust)),
            ("8.8.8.8:7777", READONLY, Err(Public)),
        ];
        for (addr, auth, want) in cases {
            let a: SocketAddr = addr.parse().unwrap();
            let want = want.map_err(|refusal| refusal(a));
            assert_eq!(check_listener(a, *auth), want, "{addr} {auth:?}");
        }
    }

    #[test]
    fn listener_refusals_name_the_address_and_the_fix() {
        let a = |s: &str| s.parse::<SocketAddr>().unwrap();
        for (addr, auth, needle) in [
            ("0.0.0.0:7777", LAUNCH, "all interfaces"),
            ("8.8.8.8:7777", LAUNCH, "8.8.8.8 is a public address"),
            ("10.0.0.7:7777", SIDECAR, "without a bearer token"),
            ("10.0.0.7:7777", TOKEN, "trust_private_network"),
        ] {
            let e = check_listener(a(addr), auth).unwrap_err().to_string();
            assert!(e.contains(needle) && e.contains(addr), "{addr}: {e}");
            assert!(e.contains("TLS") && e.contains("SSH tunnel"), "{addr}: {e}");
        }
        let e = check_listener(a("100.64.0.9:0"), INSECURE).unwrap_err();
        assert!(
            e.to_string()
                .contains("refusing --insecure on 100.64.0.9:0")
        );
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
