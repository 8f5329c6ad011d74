//! The listeners: the plain-HTTP guardrail checked with the settings (step 1, exit 2 before
//! anything is written), and every listener bound once storage is open (step 7).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use anyhow::{Result, anyhow};
use kaged_auth::Mechanism;
use kaged_config::{Listener, Settings};
use kaged_server::{BoundListener, ListenerInfo, Socket};
use tokio::net::TcpListener;

use crate::runtime;

/// The URL browsers should use for a listener: loopback stands in for "all interfaces".
pub fn base_url(addr: SocketAddr) -> String {
    let ip = match addr.ip() {
        IpAddr::V4(v4) if v4.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(v6) if v6.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    match ip {
        IpAddr::V4(v4) => format!("http://{v4}:{}", addr.port()),
        IpAddr::V6(v6) => format!("http://[{v6}]:{}", addr.port()),
    }
}

/// The plain-HTTP exposure guardrail of every TCP listener (`kaged_auth::check_listener`:
/// loopback always; anything else one literal non-public address, with launch-URL sign-in, or
/// with a bearer token and the private-network opt-in, or under tokenless
/// `--insecure-readonly`). Returns the listeners that expose plain HTTP beyond this host.
pub(super) fn check_listeners(
    settings: &Settings,
    mechanism: &Mechanism,
) -> Result<Vec<SocketAddr>, kaged_auth::ListenerRefusal> {
    let auth = kaged_auth::ListenerAuth {
        launch_url: matches!(mechanism, Mechanism::LaunchUrl),
        insecure: matches!(mechanism, Mechanism::Insecure),
        insecure_readonly: matches!(mechanism, Mechanism::InsecureReadonly),
        bearer_token: settings.auth_token.is_some(),
        trust_private_network: settings.trust_private_network,
    };
    let mut plain_http = Vec::new();
    for spec in &settings.listeners {
        if let Listener::Tcp(addr) = spec
            && kaged_auth::check_listener(*addr, auth)? == kaged_auth::Exposure::PlainHttpPrivate
        {
            plain_http.push(*addr);
        }
    }
    Ok(plain_http)
}

/// The bound listeners and what the daemon tells the world about them.
pub(super) struct Listening {
    pub(super) listeners: Vec<BoundListener>,
    /// Every bound TCP address: the Host allowlist is made from them.
    pub(super) tcp_addrs: Vec<SocketAddr>,
    /// The first TCP listener: the one the ready line, `daemon.json` and the audit name.
    pub(super) local: SocketAddr,
    /// [`base_url`] of `local`.
    pub(super) base: String,
}

/// Bind every configured listener, insist on a TCP one, and warn once about plain HTTP beyond
/// this host (`plain_http`, from [`check_listeners`]).
pub(super) async fn listen(
    settings: &Settings,
    uid: u32,
    plain_http: &[SocketAddr],
) -> Result<Listening> {
    let listeners = bind_listeners(settings, uid).await?;
    let tcp_addrs: Vec<SocketAddr> = listeners
        .iter()
        .filter_map(|l| match &l.socket {
            Socket::Tcp(t) => t.local_addr().ok(),
            Socket::Unix { .. } => None,
        })
        .collect();
    let Some(local) = tcp_addrs.first().copied() else {
        return Err(anyhow!(
            "kaged needs at least one TCP listener for the browser and the CLI; add one such as \"127.0.0.1:7777\" to [daemon] listen"
        ));
    };
    if !plain_http.is_empty() {
        // Once, at start: the per-user guide's VPN bind is fine only on an encrypted overlay.
        let listeners: Vec<String> = plain_http.iter().map(ToString::to_string).collect();
        tracing::warn!(
            "plain HTTP on {}: launch URLs, session cookies and all traffic cross that network unencrypted; this address belongs on an encrypted overlay (WireGuard, Tailscale), not a LAN or the internet",
            listeners.join(", ")
        );
    }
    Ok(Listening {
        listeners,
        tcp_addrs,
        local,
        base: base_url(local),
    })
}

/// Bind every configured listener (checked by [`check_listeners`] before). Unix sockets go in a
/// private directory with mode 0600.
async fn bind_listeners(settings: &Settings, uid: u32) -> Result<Vec<BoundListener>> {
    let mut bound = Vec::new();
    for spec in &settings.listeners {
        let info = ListenerInfo {
            label: spec.to_string(),
            unix: matches!(spec, Listener::Unix(_)),
            trusted_proxy: settings.trusted_proxy_listeners.contains(spec),
        };
        let socket = match spec {
            Listener::Tcp(addr) => {
                Socket::Tcp(TcpListener::bind(addr).await.map_err(|e| {
                    if e.kind() == std::io::ErrorKind::AddrInUse {
                        anyhow!(
                            "cannot listen on {addr}: address already in use; pick another with `kaged start --bind {}` or set [daemon] bind in {}",
                            SocketAddr::new(addr.ip(), addr.port().wrapping_add(1).max(1024)),
                            settings.config_file.display()
                        )
                    } else {
                        anyhow!("cannot listen on {addr}: {e}")
                    }
                })?)
            }
            Listener::Unix(path) => {
                if let Some(dir) = path.parent() {
                    runtime::ensure_socket_dir(dir, uid)?;
                }
                let (listener, path) = kaged_server::bind_unix(path.clone()).await?;
                Socket::Unix { listener, path }
            }
        };
        bound.push(BoundListener { socket, info });
    }
    Ok(bound)
}
