//! The per-user guide's "Option A": `kaged start --bind 100.x.y.z:7777` on a Tailscale or
//! WireGuard address, signed in with the launch URL and its cookie. The test makes a network
//! namespace with 100.64.7.7 on its loopback device, runs the daemon, `kaged auth open` and an
//! HTTP client inside it, and follows the whole launch flow. Public addresses and wildcards stay
//! refused (exit 2, nothing written).
//!
//! Needs root (or CAP_SYS_ADMIN) and `ip` (iproute2, installed by scripts/test). As root the test
//! must run; otherwise it is skipped with a loud message.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use crate::common::*;

const VPN_IP: &str = "100.64.7.7";
const PORT: u16 = 7777;

/// A network namespace of this test, deleted however the test ends.
struct Netns {
    name: String,
}

impl Netns {
    /// `None` (skip) only when namespaces cannot be made and this is neither root nor CI.
    fn create(tag: &str) -> Option<Netns> {
        let name = format!("kaged-test-{}-{tag}", std::process::id());
        // The guard exists only once the namespace does; from then on Drop deletes it.
        let made = ip(&["netns", "add", &name]).and_then(|()| {
            let ns = Netns { name: name.clone() };
            ip(&["-n", &ns.name, "link", "set", "lo", "up"])?;
            ip(&[
                "-n",
                &ns.name,
                "addr",
                "add",
                &format!("{VPN_IP}/32"),
                "dev",
                "lo",
            ])?;
            Ok(ns)
        });
        match made {
            Ok(ns) => Some(ns),
            Err(why) if is_root() || std::env::var_os("CI").is_some() => {
                panic!("cannot create the network namespace {name}: {why}")
            }
            Err(why) => {
                eprintln!(
                    "\n*** SKIPPED vpn_bind: cannot create a network namespace ({why}); run as root (scripts/test does in CI) ***\n"
                );
                None
            }
        }
    }

    /// `ip netns exec NS PROGRAM` with a clean environment plus `env`.
    fn command(&self, program: &Path, env: &[(&str, &str)]) -> Command {
        let mut cmd = Command::new("ip");
        cmd.env_clear();
        for var in ["PATH", "LANG", "TZ"] {
            if let Some(v) = std::env::var_os(var) {
                cmd.env(var, v);
            }
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.args(["netns", "exec", &self.name]).arg(program);
        cmd
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if let Err(why) = ip(&["netns", "del", &self.name]) {
            eprintln!("vpn_bind: could not delete {}: {why}", self.name);
        }
    }
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("cannot run ip (iproute2): {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1).map(|e| e == "0"))
        .unwrap_or(false)
}

fn python() -> String {
    std::env::var("KAGED_TEST_PYTHON").unwrap_or_else(|_| "python3".into())
}

/// One HTTP/1.1 request made from inside the namespace, with exactly the headers given (Host
/// included), no redirect followed. The request travels on stdin, not the command line.
const CLIENT: &str = r#"
import http.client, json, sys
req = json.load(sys.stdin)
c = http.client.HTTPConnection(req["ip"], req["port"], timeout=10)
c.putrequest(req["method"], req["path"], skip_host=True, skip_accept_encoding=True)
for k, v in req["headers"]:
    c.putheader(k, v)
c.endheaders()
r = c.getresponse()
print(json.dumps({"status": r.status, "headers": r.getheaders(),
                  "body": r.read().decode("utf-8", "replace")}))
"#;

struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

fn request(ns: &Netns, path: &str, headers: &[(&str, &str)]) -> Reply {
    let mut child = ns
        .command(Path::new(&python()), &[])
        .args(["-c", CLIENT])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run python3 in the namespace");
    let req = serde_json::json!({
        "ip": VPN_IP, "port": PORT, "method": "GET", "path": path, "headers": headers,
    });
    child
        .stdin
        .take()
        .unwrap()
        .write_all(req.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "HTTP client failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    Reply {
        status: v["status"].as_u64().unwrap() as u16,
        headers: v["headers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| {
                (
                    h[0].as_str().unwrap().to_string(),
                    h[1].as_str().unwrap().to_string(),
                )
            })
            .collect(),
        body: v["body"].as_str().unwrap().to_string(),
    }
}

/// Follow a launch URL as a browser would: its path on the VPN address, Host as in the URL.
/// Returns the session cookie (`name=value`).
fn follow_launch_url(ns: &Netns, url: &str, host: &str) -> String {
    let path = url
        .strip_prefix(&format!("http://{host}"))
        .unwrap_or_else(|| panic!("launch URL {url} does not name {host}"));
    let r = request(ns, path, &[("Host", host)]);
    assert_eq!(r.status, 303, "{}", r.body);
    assert_eq!(r.header("location"), Some("/"));
    let set_cookie = r.header("set-cookie").expect("a session cookie");
    let cookie = set_cookie.split(';').next().unwrap().trim().to_string();
    assert!(cookie.starts_with("kaged_session="), "{set_cookie}");
    cookie
}

fn whoami(ns: &Netns, host: &str, cookie: Option<&str>) -> Reply {
    let mut headers = vec![("Host", host)];
    if let Some(c) = cookie {
        headers.push(("Cookie", c));
    }
    request(ns, "/api/v1/whoami", &headers)
}

#[test]
fn launch_url_sign_in_on_a_vpn_address() {
    let Some(ns) = Netns::create("ok") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("home");
    let home_str = home.to_str().unwrap().to_string();
    let env = [("KAGED_HOME", home_str.as_str())];
    let bind = format!("{VPN_IP}:{PORT}");
    let host = bind.clone();

    let mut start = ns.command(&kaged_bin(), &env);
    start.args(["--mode", "user", "start", "--bind", &bind]);
    let daemon = Daemon::spawn(
        start,
        &home,
        &home.join("run"),
        vec![("KAGED_HOME".into(), home_str.clone())],
    );
    assert!(
        daemon
            .launch_url
            .starts_with(&format!("http://{host}/launch?token=")),
        "the launch URL names the VPN address: {}",
        daemon.launch_url
    );

    // The printed launch URL signs the browser in; the cookie then authenticates.
    let cookie = follow_launch_url(&ns, &daemon.launch_url, &host);
    let me = whoami(&ns, &host, Some(&cookie));
    assert_eq!(me.status, 200, "{}", me.body);
    let doc: serde_json::Value = serde_json::from_str(&me.body).unwrap();
    assert_eq!(doc["method"], "session", "{doc}");
    // The launch token was single use, and without the cookie nobody is signed in.
    let again = daemon
        .launch_url
        .strip_prefix(&format!("http://{host}"))
        .unwrap();
    assert_eq!(request(&ns, again, &[("Host", &host)]).status, 401);
    let anon = whoami(&ns, &host, None);
    assert_eq!(anon.status, 401, "{}", anon.body);

    // Any other Host (a rebinding name, the address on another port) is refused, cookie or not.
    for foreign in [
        format!("kaged.tailnet.example:{PORT}"),
        format!("{VPN_IP}:{}", PORT + 1),
        VPN_IP.to_string(),
        format!("100.64.7.8:{PORT}"),
    ] {
        let r = whoami(&ns, &foreign, Some(&cookie));
        assert_eq!(r.status, 403, "Host {foreign}: {}", r.body);
        assert!(r.body.contains("Host header"), "Host {foreign}: {}", r.body);
    }

    // `kaged auth open` (inside the namespace: it checks that the daemon answers) prints a
    // launch URL with the same address, and it works too.
    let out: Output = ns
        .command(&kaged_bin(), &env)
        .args(["--mode", "user", "auth", "open", "--no-browser"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "auth open: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let url = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert!(
        url.starts_with(&format!("http://{host}/launch?token=")),
        "{url}"
    );
    let second = follow_launch_url(&ns, &url, &host);
    assert_ne!(second, cookie);
    assert_eq!(whoami(&ns, &host, Some(&second)).status, 200);

    // One warning that this is plain HTTP meant for an encrypted overlay, not one per request.
    let (status, log) = daemon.stop();
    assert!(status.success(), "{log}");
    let warnings: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("encrypted overlay"))
        .collect();
    assert_eq!(warnings.len(), 1, "{log}");
    assert!(
        warnings[0].contains("plain HTTP") && warnings[0].contains(&bind),
        "{}",
        warnings[0]
    );
    assert!(
        !log.contains(daemon_token(&url)),
        "the token never reaches the log"
    );
}

fn daemon_token(url: &str) -> &str {
    url.split("token=").nth(1).unwrap()
}

#[test]
fn public_addresses_and_wildcards_stay_refused() {
    let Some(ns) = Netns::create("refused") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    for (i, (bind, needle)) in [
        (format!("8.8.8.8:{PORT}"), "public address"),
        (format!("0.0.0.0:{PORT}"), "all interfaces"),
        (format!("[::]:{PORT}"), "all interfaces"),
        (format!("[2606:4700::1111]:{PORT}"), "public address"),
    ]
    .into_iter()
    .enumerate()
    {
        let home = tmp.path().join(format!("home-{i}"));
        let env = [("KAGED_HOME", home.to_str().unwrap())];
        let mut child = ns
            .command(&kaged_bin(), &env)
            .args(["--mode", "user", "start", "--bind", &bind])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let status = wait_timeout(&mut child, Duration::from_secs(20));
        let mut err = String::new();
        std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
        assert_eq!(status.code(), Some(2), "{bind}: {err}");
        assert!(
            err.contains(needle) && err.contains(&bind) && err.contains("TLS"),
            "{bind}: {err}"
        );
        assert!(
            !home.join("kaged.db").exists() && !home.join("config.toml").exists(),
            "{bind}: a refused start writes nothing"
        );
    }
}
