//! The in-cage end of egress: a TCP listener on the cage's own loopback whose every connection
//! is forwarded, byte for byte, to the proxy's Unix socket bind-mounted into the cage. Programs
//! find it through the usual proxy environment variables.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream, UnixStream};

/// Set to the bridge's URL (`http://127.0.0.1:PORT`) for the command.
pub const PROXY_ENV_VARS: [&str; 6] = [
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "http_proxy",
    "https_proxy",
    "ALL_PROXY",
    "all_proxy",
];
/// Removed from the command's environment: an exemption would only mean a direct connection,
/// which the cage has no network for.
pub const NO_PROXY_ENV_VARS: [&str; 2] = ["NO_PROXY", "no_proxy"];

/// Pause after a failed accept (e.g. out of file descriptors) so the loop does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Why [`run_bridge_then`] could not run the command to completion.
#[derive(Debug, thiserror::Error)]
pub enum BridgeError {
    #[error("no command to run")]
    NoCommand,
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot start the egress bridge: {0}")]
    Runtime(std::io::Error),
    #[error("cannot run {program:?}: {source}")]
    Spawn {
        program: String,
        source: std::io::Error,
    },
    #[error("lost track of {program:?}: {source}")]
    Wait {
        program: String,
        source: std::io::Error,
    },
}

/// Accepts on `listener` forever, forwarding each connection to a new connection to the Unix
/// socket at `socket`. A connection whose proxy cannot be reached gets a 502 naming the socket.
pub async fn bridge(listener: TcpListener, socket: PathBuf) {
    let socket: Arc<Path> = Arc::from(socket);
    loop {
        match listener.accept().await {
            Ok((client, _)) => {
                let socket = Arc::clone(&socket);
                tokio::spawn(async move { forward(client, &socket).await });
            }
            Err(error) => {
                tracing::warn!(%error, "egress bridge: accept failed");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
            }
        }
    }
}

async fn forward(mut client: TcpStream, socket: &Path) {
    let _ = client.set_nodelay(true);
    let mut proxy = match UnixStream::connect(socket).await {
        Ok(proxy) => proxy,
        Err(error) => {
            tracing::warn!(socket = %socket.display(), %error, "egress bridge: proxy unreachable");
            let body = format!(
                "kaged: the egress proxy at {} is unreachable: {error}\n",
                socket.display()
            );
            let response = format!(
                "HTTP/1.1 502 Bad Gateway\r\nContent-Type: text/plain; charset=utf-8\r\n\
                 Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = client.write_all(response.as_bytes()).await;
            let _ = client.shutdown().await;
            return;
        }
    };
    if let Err(error) = tokio::io::copy_bidirectional(&mut client, &mut proxy).await {
        tracing::debug!(%error, "egress bridge: connection ended with an error");
    }
}

/// Binds `listen`, starts the bridge to `socket` on a background thread, then runs `command`
/// (stdio inherited) with the proxy variables pointing at the bridge, and returns its exit code
/// (128 + signal number if a signal killed it). Nothing runs unless the bind succeeded.
///
/// The bridge thread is never joined: the caller is expected to exit with the returned code.
/// Signals sent to this process are not forwarded to the command.
pub fn run_bridge_then(
    listen: SocketAddr,
    socket: PathBuf,
    command: &[String],
) -> Result<i32, BridgeError> {
    let (program, args) = command.split_first().ok_or(BridgeError::NoCommand)?;
    let listen_error = |source| BridgeError::Listen {
        addr: listen,
        source,
    };
    let listener = std::net::TcpListener::bind(listen).map_err(listen_error)?;
    listener.set_nonblocking(true).map_err(listen_error)?;
    let bound = listener.local_addr().map_err(listen_error)?;

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(BridgeError::Runtime)?;
    // Registering the socket with tokio needs the runtime's context.
    let listener = {
        let _context = runtime.enter();
        TcpListener::from_std(listener).map_err(listen_error)?
    };
    std::thread::Builder::new()
        .name("kaged-egress-bridge".to_owned())
        .spawn(move || runtime.block_on(bridge(listener, socket)))
        .map_err(BridgeError::Runtime)?;

    let status = proxied_command(program, args, &proxy_url(bound))
        .spawn()
        .map_err(|source| BridgeError::Spawn {
            program: program.clone(),
            source,
        })?
        .wait()
        .map_err(|source| BridgeError::Wait {
            program: program.clone(),
            source,
        })?;
    Ok(exit_code(status))
}

/// The URL programs use to reach the bridge. A wildcard bind is reached through loopback.
fn proxy_url(bound: SocketAddr) -> String {
    let ip = match bound.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    format!("http://{}", SocketAddr::new(ip, bound.port()))
}

fn proxied_command(program: &str, args: &[String], proxy_url: &str) -> Command {
    let mut command = Command::new(program);
    command.args(args);
    for name in PROXY_ENV_VARS {
        command.env(name, proxy_url);
    }
    for name in NO_PROXY_ENV_VARS {
        command.env_remove(name);
    }
    command
}

fn exit_code(status: ExitStatus) -> i32 {
    status
        .code()
        .or_else(|| status.signal().map(|signal| 128 + signal))
        .unwrap_or(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsStr;

    #[test]
    fn command_gets_proxy_variables_and_loses_no_proxy() {
        let command = proxied_command("env", &["-0".to_owned()], "http://127.0.0.1:3128");
        let envs: Vec<(&OsStr, Option<&OsStr>)> = command.get_envs().collect();
        for name in PROXY_ENV_VARS {
            assert!(
                envs.contains(&(OsStr::new(name), Some(OsStr::new("http://127.0.0.1:3128")))),
                "{name}: {envs:?}"
            );
        }
        for name in NO_PROXY_ENV_VARS {
            assert!(envs.contains(&(OsStr::new(name), None)), "{name}: {envs:?}");
        }
        assert_eq!(command.get_program(), "env");
        assert_eq!(command.get_args().collect::<Vec<_>>(), ["-0"]);
    }

    #[test]
    fn proxy_url_uses_loopback_for_wildcard_binds() {
        let url = |addr: &str| proxy_url(addr.parse().unwrap());
        assert_eq!(url("127.0.0.1:3128"), "http://127.0.0.1:3128");
        assert_eq!(url("0.0.0.0:3128"), "http://127.0.0.1:3128");
        assert_eq!(url("[::1]:3128"), "http://[::1]:3128");
        assert_eq!(url("[::]:3128"), "http://[::1]:3128");
    }

    #[test]
    fn exit_codes_and_signals() {
        assert_eq!(exit_code(ExitStatus::from_raw(0)), 0);
        assert_eq!(exit_code(ExitStatus::from_raw(7 << 8)), 7);
        assert_eq!(exit_code(ExitStatus::from_raw(9)), 137);
        assert_eq!(exit_code(ExitStatus::from_raw(15)), 143);
    }

    #[test]
    fn empty_command_is_refused() {
        let result = run_bridge_then(
            "127.0.0.1:0".parse().unwrap(),
            PathBuf::from("/nonexistent"),
            &[],
        );
        assert!(matches!(result, Err(BridgeError::NoCommand)), "{result:?}");
    }
}
