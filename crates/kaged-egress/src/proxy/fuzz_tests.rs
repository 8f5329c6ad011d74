//! Fuzz target for the proxy's request head parser ([`parse_head`]), which reads bytes a cage
//! sends. Starts from the seed corpus in `fuzz/corpus/proxy_head/` (real curl, apt, pip and
//! TLS-after-CONNECT heads) and mutates it; proptest builds well-formed requests. Bounded by
//! default; see ARCHITECTURE.md (Testing) for longer runs.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

use std::net::IpAddr;
use std::path::PathBuf;

use kaged_fuzz::{Target, fuzz, prop, try_fuzz};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;

use super::*;

type HeadParser = fn(&[u8]) -> Result<Option<(usize, ProxyRequest)>, BadRequest>;

fn corpus() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/fuzz/corpus/proxy_head"
    ))
}

const TOKENS: &[&str] = &[
    "\r\n",
    "\r\n\r\n",
    "\n",
    " ",
    ":",
    "://",
    "http://",
    "https://",
    "HTTP/1.1",
    "HTTP/1.0",
    "CONNECT ",
    "GET ",
    "POST ",
    "[::1]",
    "[::ffff:127.0.0.1]",
    "127.0.0.1",
    "localhost",
    ":443",
    ":0",
    ":65536",
    "@",
    "#",
    "?",
    "/",
    "%",
    "Host: ",
    "Connection: ",
    "Proxy-Authorization: ",
    "Keep-Alive",
    "close",
    ", ",
    "Upgrade",
    "TE",
    "\t",
    "..",
    "xn--",
];

/// Hop-by-hop header names a forwarded head must never carry (besides its own
/// `Connection: close`).
fn hop_by_hop(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    matches!(
        name.as_str(),
        "keep-alive" | "te" | "upgrade" | "proxy-connection"
    ) || name.starts_with("proxy-")
}

fn check(input: &[u8]) -> Result<String, String> {
    check_with(parse_head, input)
}

fn check_with(parse: HeadParser, input: &[u8]) -> Result<String, String> {
    match parse(input) {
        Ok(Some((len, request))) => {
            if len > MAX_HEAD_BYTES || len > input.len() {
                return Err(format!(
                    "accepted a {len}-byte head (limit {MAX_HEAD_BYTES}, input {})",
                    input.len()
                ));
            }
            let head = &input[..len];
            if !head.ends_with(b"\n") {
                return Err(format!("the head ends mid-line at {len}"));
            }
            // What follows the head (body, TLS) must not change how the head reads.
            let alone = parse(head);
            if alone != Ok(Some((len, request.clone()))) {
                return Err(format!("the head alone parses as {alone:?}"));
            }
            // read_head parses each time bytes arrive: any shorter prefix must wait.
            for cut in [len - 1, len / 2, len / 3, 1] {
                let prefix = parse(&head[..cut]);
                if prefix != Ok(None) {
                    return Err(format!("the first {cut} of {len} bytes give {prefix:?}"));
                }
            }
            check_target(&request)?;
            match &request.action {
                Action::Tunnel if request.method == "CONNECT" => Ok("ok connect".into()),
                Action::Tunnel => Err(format!("{} tunnels", request.method)),
                Action::Forward { .. } if request.method == "CONNECT" => {
                    Err("CONNECT forwarded".into())
                }
                Action::Forward { head: forwarded } => check_forwarded(&request, forwarded),
            }
        }
        Ok(None) if input.len() > MAX_HEAD_BYTES => Err(format!(
            "still waiting after {} bytes (limit {MAX_HEAD_BYTES})",
            input.len()
        )),
        Ok(None) => Ok("wait".into()),
        Err(BadRequest::TooLarge) => {
            let lines = input.iter().filter(|b| **b == b'\n').count();
            if input.len() <= MAX_HEAD_BYTES && lines <= MAX_HEADERS {
                return Err(format!(
                    "{} bytes in {lines} lines called too large",
                    input.len()
                ));
            }
            Ok("too large".into())
        }
        Err(BadRequest::Malformed(why)) => {
            if why.is_empty() || why.contains(['\r', '\n']) {
                return Err(format!("the reason {why:?} cannot be shown on one line"));
            }
            let words: Vec<&str> = why
                .split_whitespace()
                .take_while(|w| w.chars().all(|c| c.is_ascii_alphabetic()))
                .take(4)
                .collect();
            Ok(format!("malformed {}", words.join(" ")))
        }
    }
}

/// The target the audit log shows reads back as the destination connected to.
fn check_target(request: &ProxyRequest) -> Result<(), String> {
    let target = request.target();
    let back = parse_authority(&target, None);
    if back != Some((request.host.clone(), request.port)) {
        return Err(format!("target {target} reads back as {back:?}"));
    }
    if request.port == 0 {
        return Err(format!("port 0 in {target}"));
    }
    match &request.host {
        Host::Name(name)
            if name.is_empty()
                || name.ends_with('.')
                || name.chars().any(|c| c.is_ascii_uppercase())
                || name.parse::<IpAddr>().is_ok() =>
        {
            Err(format!("host name {name:?} is not normalised"))
        }
        _ => Ok(()),
    }
}

/// The head sent upstream is one well-formed origin-form request to the vetted host.
fn check_forwarded(request: &ProxyRequest, forwarded: &[u8]) -> Result<String, String> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS + 2];
    let mut parsed = httparse::Request::new(&mut headers);
    let len = match parsed.parse(forwarded) {
        Ok(httparse::Status::Complete(len)) => len,
        other => return Err(format!("forwarded head {forwarded:?} parses as {other:?}")),
    };
    if len != forwarded.len() {
        return Err(format!(
            "forwarded head {forwarded:?} has bytes after its end"
        ));
    }
    if parsed.method != Some(request.method.as_str()) {
        return Err(format!("forwarded method {:?}", parsed.method));
    }
    if !parsed.path.is_some_and(|p| p.starts_with('/')) {
        return Err(format!("forwarded path {:?}", parsed.path));
    }
    let hosts: Vec<&[u8]> = parsed
        .headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("host"))
        .map(|h| h.value)
        .collect();
    let [host] = hosts[..] else {
        return Err(format!("forwarded Host headers {hosts:?}"));
    };
    let host = std::str::from_utf8(host).map_err(|e| e.to_string())?;
    if parse_authority(host, Some(80)) != Some((request.host.clone(), request.port)) {
        return Err(format!("forwarded Host {host:?} for {}", request.target()));
    }
    let Some((last, rest)) = parsed.headers.split_last() else {
        return Err("no headers forwarded".into());
    };
    if !(last.name == "Connection" && last.value == b"close") {
        return Err(format!("last forwarded header is {}", last.name));
    }
    if let Some(h) = rest
        .iter()
        .find(|h| hop_by_hop(h.name) || h.name.eq_ignore_ascii_case("connection"))
    {
        return Err(format!("hop-by-hop header {} forwarded", h.name));
    }
    Ok(format!("ok forward {}", rest.len().min(3)))
}

#[test]
fn fuzz_proxy_head() {
    let report = fuzz(
        &Target {
            name: "proxy_head",
            corpus: corpus(),
            dictionary: TOKENS,
            iterations: 12_000,
            max_len: MAX_HEAD_BYTES + 512,
        },
        check,
    );
    assert!(report.behaviours >= 10, "{report:?}");
}

/// The check can fail: a parser that forgets the size limit or forwards hop-by-hop headers
/// is caught.
#[test]
fn the_fuzz_check_catches_broken_parsers() {
    fn no_limit(input: &[u8]) -> Result<Option<(usize, ProxyRequest)>, BadRequest> {
        // Waits forever instead of refusing an oversized partial head.
        match parse_head(input) {
            Err(BadRequest::TooLarge) => Ok(None),
            other => other,
        }
    }
    fn leaky(input: &[u8]) -> Result<Option<(usize, ProxyRequest)>, BadRequest> {
        // Forwards the client's head as it came.
        let mut parsed = parse_head(input)?;
        if let Some((len, ProxyRequest { action, .. })) = &mut parsed
            && let Action::Forward { head } = action
        {
            *head = input[..*len].to_vec();
        }
        Ok(parsed)
    }
    for (broken, what) in [(no_limit as HeadParser, "no limit"), (leaky, "leaky")] {
        let target = Target {
            name: "proxy_head",
            corpus: corpus(),
            dictionary: TOKENS,
            iterations: 30_000,
            max_len: MAX_HEAD_BYTES + 512,
        };
        let found = try_fuzz(&target, |input| check_with(broken, input));
        assert!(found.is_err(), "{what} went unnoticed");
    }
}

fn host() -> impl Strategy<Value = (String, Host)> {
    prop_oneof![
        "[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?(\\.[a-z0-9]{1,8}){0,3}".prop_filter_map(
            "names that are IP literals",
            |name| {
                let host = Host::parse(&name)?;
                matches!(host, Host::Name(_)).then_some((name, host))
            }
        ),
        any::<std::net::Ipv4Addr>().prop_map(|ip| (ip.to_string(), Host::Ip(IpAddr::V4(ip)))),
        any::<std::net::Ipv6Addr>()
            .prop_map(|ip| (format!("[{ip}]"), Host::Ip(IpAddr::V6(ip).to_canonical()))),
    ]
}

fn header() -> impl Strategy<Value = (String, String)> {
    (
        prop_oneof![
            Just("Host".to_owned()),
            Just("Connection".to_owned()),
            Just("Keep-Alive".to_owned()),
            Just("Proxy-Authorization".to_owned()),
            Just("TE".to_owned()),
            Just("Upgrade".to_owned()),
            "X-[A-Za-z]{1,8}",
            Just("User-Agent".to_owned()),
        ],
        "[ -~]{0,20}".prop_map(|v| v.trim().to_owned()),
    )
}

#[test]
fn proptest_well_formed_requests_parse_to_their_destination() {
    let strategy = (
        host(),
        1..=u16::MAX,
        any::<bool>(),
        "(/[a-z0-9._~%-]{0,8}){0,3}(\\?[a-z=&]{0,8})?",
        prop::collection::vec(header(), 0..8),
        "GET|POST|HEAD|PUT|DELETE|OPTIONS",
    );
    prop(
        "proxy_head_requests",
        384,
        &strategy,
        |((text, host), port, connect, path, headers, method)| {
            let mut head = if connect {
                format!("CONNECT {text}:{port} HTTP/1.1\r\n")
            } else {
                format!("{method} http://{text}:{port}{path} HTTP/1.1\r\n")
            };
            for (name, value) in &headers {
                head.push_str(&format!("{name}: {value}\r\n"));
            }
            head.push_str("\r\n");
            let parsed = parse_head(head.as_bytes());
            let Ok(Some((len, request))) = parsed else {
                return Err(TestCaseError::fail(format!("{head:?}: {parsed:?}")));
            };
            prop_assert_eq!(len, head.len());
            prop_assert_eq!(&request.host, &host);
            prop_assert_eq!(request.port, port);
            if let Action::Forward { head: forwarded } = &request.action {
                // Headers not named by Connection and not hop-by-hop pass, in order.
                let named: Vec<String> = headers
                    .iter()
                    .filter(|(n, _)| n.eq_ignore_ascii_case("connection"))
                    .flat_map(|(_, v)| v.split(',').map(|t| t.trim().to_ascii_lowercase()))
                    .collect();
                let kept: String = headers
                    .iter()
                    .filter(|(n, _)| {
                        let lower = n.to_ascii_lowercase();
                        !hop_by_hop(n)
                            && !matches!(lower.as_str(), "host" | "connection")
                            && !named.contains(&lower)
                    })
                    .map(|(n, v)| format!("{n}: {v}\r\n"))
                    .collect();
                let forwarded = String::from_utf8(forwarded.clone()).unwrap();
                let path = if path.starts_with('/') {
                    path
                } else {
                    format!("/{path}")
                };
                prop_assert!(
                    forwarded.starts_with(&format!("{method} {path} HTTP/1.1\r\nHost: ")),
                    "{}",
                    forwarded
                );
                prop_assert!(
                    forwarded.ends_with(&format!("{kept}Connection: close\r\n\r\n")),
                    "{}",
                    forwarded
                );
            }
            check(head.as_bytes()).map_err(TestCaseError::fail)?;
            Ok(())
        },
    );
}
