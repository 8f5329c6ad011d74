//! `[storage] url = "postgres://…"`: the PostgreSQL URL read into a [`PostgresUrl`], and shown
//! without its password.
//!
//! Accepted: `postgres://` or `postgresql://`, `USER[:PASSWORD]@HOST[:PORT]/DATABASE` (IPv6 in
//! brackets), a Unix socket's directory as the host (`?host=/run/postgresql`, or the path
//! percent-encoded in the host's place), and the query parameters `host`, `port`, `sslmode`
//! and `sslrootcert`.
//!
//! TLS ([`PostgresTls`]): kaged either does not encrypt (`sslmode=disable`) or encrypts and
//! verifies the server's certificate chain and name (`require`, `verify-ca` and `verify-full`
//! all mean that here), against the system's roots or the PEM file `sslrootcert=PATH`. It never
//! falls back from one to the other (`allow` and `prefer` are refused). Without `sslmode`, a
//! Unix socket or loopback address is not encrypted and any other host is verified TLS; TLS
//! over a Unix socket is refused (PostgreSQL offers none there).
//! The password comes from the URL or from `KAGED_STORAGE_PASSWORD` (which wins, see
//! [`STORAGE_PASSWORD_ENV`]); it is never shown, logged or serialized.

use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;

use serde::Serialize;

use super::types::ConfigSecret;
use super::value::Problem;

/// The variable that carries the PostgreSQL password. It wins over a password in the URL, so
/// `config.toml` can name the database while the secret stays in the service's environment
/// (or a systemd credential exported as this variable).
pub const STORAGE_PASSWORD_ENV: &str = "KAGED_STORAGE_PASSWORD";

/// The default PostgreSQL port.
pub const DEFAULT_POSTGRES_PORT: u16 = 5432;

/// Where the PostgreSQL server listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PostgresHost {
    /// A host name or IP address, reached over TCP.
    Tcp(String),
    /// The directory of the server's Unix socket (`.s.PGSQL.PORT` inside it).
    Socket(PathBuf),
}

/// Whether the connection is encrypted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PostgresTls {
    /// Not encrypted (a Unix socket, loopback, or `sslmode=disable`).
    Disable,
    /// TLS, the server's certificate chain and host name verified against `root_cert` (a PEM
    /// file) or, without one, the system's trusted roots.
    Verify { root_cert: Option<PathBuf> },
}

/// A parsed `postgres://` storage URL. `Display` (what `kaged status` and the logs show) never
/// includes the password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostgresUrl {
    pub user: String,
    /// From the URL, or from [`STORAGE_PASSWORD_ENV`] (which wins); `None`: the server must
    /// not ask for one (peer or trust authentication).
    pub password: Option<ConfigSecret>,
    pub host: PostgresHost,
    pub port: u16,
    pub database: String,
    pub tls: PostgresTls,
}

impl PostgresUrl {
    /// Read a `postgres://` or `postgresql://` URL; the error says what is wrong and the fix.
    pub fn parse(text: &str) -> Result<PostgresUrl, String> {
        parse(text).map_err(|p| format!("{}; {}", p.problem, p.hint))
    }

    /// Whether the server is reached without leaving this host (a Unix socket or loopback).
    pub fn is_local(&self) -> bool {
        match &self.host {
            PostgresHost::Socket(_) => true,
            PostgresHost::Tcp(h) => is_loopback(h),
        }
    }
}

fn is_loopback(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

impl fmt::Display for PostgresUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let user = encode(&self.user);
        let db = encode(&self.database);
        match &self.host {
            PostgresHost::Tcp(h) => {
                let host = if h.contains(':') {
                    format!("[{h}]")
                } else {
                    h.clone()
                };
                write!(f, "postgres://{user}@{host}:{}/{db}", self.port)?;
                match &self.tls {
                    PostgresTls::Disable if self.is_local() => Ok(()),
                    PostgresTls::Disable => f.write_str("?sslmode=disable"),
                    PostgresTls::Verify { root_cert: None } => f.write_str("?sslmode=verify-full"),
                    PostgresTls::Verify {
                        root_cert: Some(path),
                    } => write!(f, "?sslmode=verify-full&sslrootcert={}", path.display()),
                }
            }
            PostgresHost::Socket(dir) => {
                write!(f, "postgres://{user}@/{db}?host={}", dir.display())?;
                if self.port != DEFAULT_POSTGRES_PORT {
                    write!(f, "&port={}", self.port)?;
                }
                Ok(())
            }
        }
    }
}

impl Serialize for PostgresUrl {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

const FORM: &str =
    "\"postgres://USER@HOST:5432/DATABASE\" or \"postgres://USER@/DATABASE?host=/run/postgresql\"";

fn problem(problem: String, hint: &str) -> Problem {
    Problem {
        problem,
        hint: hint.to_string(),
    }
}

/// Percent-decode one URL part; `None` when an escape is broken or the result is not UTF-8.
fn decode(part: &str) -> Option<String> {
    let bytes = part.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = part.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Percent-encode what would change the meaning of a URL part.
fn encode(part: &str) -> String {
    let mut out = String::with_capacity(part.len());
    for c in part.chars() {
        if c.is_ascii_alphanumeric() || "-._~".contains(c) || !c.is_ascii() {
            out.push(c);
        } else {
            let mut buf = [0u8; 4];
            for b in c.encode_utf8(&mut buf).bytes() {
                out.push_str(&format!("%{b:02X}"));
            }
        }
    }
    out
}

fn decoded(part: &str, what: &str) -> Result<String, Problem> {
    decode(part).ok_or_else(|| {
        problem(
            format!("the {what} in the PostgreSQL URL has a broken %-escape"),
            "write a reserved character as %XX (e.g. @ as %40)",
        )
    })
}

/// Split `HOST[:PORT]` (IPv6 in brackets).
fn host_port(text: &str) -> Result<(String, Option<&str>), Problem> {
    if let Some(rest) = text.strip_prefix('[') {
        let Some((ip, after)) = rest.split_once(']') else {
            return Err(problem(
                format!("{text:?} opens an IPv6 address without closing it"),
                "write an IPv6 host in brackets: postgres://USER@[::1]:5432/DATABASE",
            ));
        };
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':').ok_or_else(|| {
                problem(
                    format!("{text:?} is not HOST:PORT"),
                    "write an IPv6 host in brackets: postgres://USER@[::1]:5432/DATABASE",
                )
            })?),
        };
        return Ok((ip.to_string(), port));
    }
    match text.split_once(':') {
        Some((h, p)) => Ok((decoded(h, "host")?, Some(p))),
        None => Ok((decoded(text, "host")?, None)),
    }
}

fn port(text: &str) -> Result<u16, Problem> {
    text.parse::<u16>().ok().filter(|p| *p > 0).ok_or_else(|| {
        problem(
            format!("{text:?} is not a port number"),
            "use a number from 1 to 65535 (PostgreSQL's is 5432)",
        )
    })
}

/// `[storage] url` when it names PostgreSQL.
pub(crate) fn parse(text: &str) -> Result<PostgresUrl, Problem> {
    let Some(rest) = text
        .strip_prefix("postgres://")
        .or_else(|| text.strip_prefix("postgresql://"))
    else {
        return Err(problem(
            format!("{text:?} is not a PostgreSQL URL"),
            &format!("use {FORM}"),
        ));
    };
    if rest.contains('#') {
        return Err(problem(
            "a PostgreSQL URL has no #fragment".into(),
            &format!("use {FORM}"),
        ));
    }
    let (main, query) = rest.split_once('?').unwrap_or((rest, ""));
    let Some((authority, db)) = main.split_once('/') else {
        return Err(problem(
            format!("{text:?} names no database"),
            &format!("name it after the host: {FORM}"),
        ));
    };
    let database = decoded(db, "database name")?;
    if database.is_empty() || database.contains('/') {
        return Err(problem(
            format!("{db:?} is not a database name"),
            &format!("name one database after the host: {FORM}"),
        ));
    }
    let (userinfo, hostport) = match authority.rsplit_once('@') {
        Some((u, h)) => (u, h),
        None => ("", authority),
    };
    let (user, password) = match userinfo.split_once(':') {
        Some((u, p)) => (decoded(u, "user")?, Some(decoded(p, "password")?)),
        None => (decoded(userinfo, "user")?, None),
    };
    let (mut host, mut port_text) = host_port(hostport)?;
    let mut sslmode = None;
    let mut root_cert = None;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let value = decoded(value, key)?;
        match key {
            "host" if !host.is_empty() => {
                return Err(problem(
                    format!("the PostgreSQL URL names two hosts ({host:?} and {value:?})"),
                    "name it once: postgres://USER@/DATABASE?host=/run/postgresql, or postgres://USER@HOST:5432/DATABASE",
                ));
            }
            "host" => host = value,
            "port" => port_text = Some(pair.split_once('=').map_or("", |p| p.1)),
            "sslmode" => sslmode = Some(value),
            "sslrootcert" if value.starts_with('/') => root_cert = Some(PathBuf::from(value)),
            "sslrootcert" => {
                return Err(problem(
                    format!("sslrootcert={value:?} is not an absolute path"),
                    "name the PEM file of the CA that signed the server's certificate: sslrootcert=/ABSOLUTE/PATH/root.crt",
                ));
            }
            other => {
                return Err(problem(
                    format!("the PostgreSQL URL parameter {other:?} is not supported"),
                    "kaged reads host, port, sslmode and sslrootcert; drop the others",
                ));
            }
        }
    }
    if user.is_empty() {
        return Err(problem(
            format!("{text:?} names no database user"),
            &format!("name the role kaged connects as: {FORM}"),
        ));
    }
    let port = port_text
        .map(port)
        .transpose()?
        .unwrap_or(DEFAULT_POSTGRES_PORT);
    let host = if host.starts_with('/') {
        PostgresHost::Socket(PathBuf::from(host))
    } else if host.is_empty() {
        return Err(problem(
            format!("{text:?} names no server"),
            &format!("name a host, or a Unix socket's directory: {FORM}"),
        ));
    } else if host
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "-.:".contains(c))
    {
        PostgresHost::Tcp(host)
    } else {
        return Err(problem(
            format!("{host:?} is not a host name, an IP address or an absolute socket directory"),
            &format!("use {FORM}"),
        ));
    };
    let socket = matches!(host, PostgresHost::Socket(_));
    let local = match &host {
        PostgresHost::Socket(_) => true,
        PostgresHost::Tcp(h) => is_loopback(h),
    };
    let verify = PostgresTls::Verify {
        root_cert: root_cert.clone(),
    };
    let tls = match sslmode.as_deref() {
        None if local => PostgresTls::Disable,
        None => verify,
        Some("disable") => PostgresTls::Disable,
        Some("require" | "verify-ca" | "verify-full") if socket => {
            return Err(problem(
                "PostgreSQL offers no TLS over a Unix socket".into(),
                "drop sslmode for a socket (it stays on this host), or connect to HOST:PORT for TLS",
            ));
        }
        Some("require" | "verify-ca" | "verify-full") => verify,
        Some(mode @ ("allow" | "prefer")) => {
            return Err(problem(
                format!("sslmode={mode} would fall back to an unencrypted connection"),
                "use sslmode=verify-full (TLS, the server's certificate checked; sslrootcert=PATH for a private CA) or sslmode=disable",
            ));
        }
        Some(other) => {
            return Err(problem(
                format!("sslmode={other:?} is not a PostgreSQL TLS mode"),
                "use sslmode=verify-full or sslmode=disable",
            ));
        }
    };
    if root_cert.is_some() && tls == PostgresTls::Disable {
        return Err(problem(
            "sslrootcert is given but the connection is not encrypted".into(),
            "add sslmode=verify-full to use it, or drop sslrootcert",
        ));
    }
    Ok(PostgresUrl {
        user,
        password: password.filter(|p| !p.is_empty()).map(ConfigSecret::new),
        host,
        port,
        database,
        tls,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(text: &str) -> PostgresUrl {
        match parse(text) {
            Ok(u) => u,
            Err(p) => panic!("{text}: {} ({})", p.problem, p.hint),
        }
    }

    fn refused(text: &str) -> String {
        match parse(text) {
            Ok(u) => panic!("{text} parsed as {u:?}"),
            Err(p) => format!("{}; {}", p.problem, p.hint),
        }
    }

    #[test]
    fn tcp_urls_read_user_password_host_port_and_database() {
        let u = ok("postgres://kaged:s%40cret@127.0.0.1:6543/kaged_db");
        assert_eq!(u.user, "kaged");
        assert_eq!(u.password.as_ref().map(|p| p.expose()), Some("s@cret"));
        assert_eq!(u.host, PostgresHost::Tcp("127.0.0.1".into()));
        assert_eq!((u.port, u.database.as_str()), (6543, "kaged_db"));
        let u = ok("postgresql://kaged@localhost/kaged");
        assert_eq!((u.port, u.password.is_none()), (5432, true));
        let u = ok("postgres://kaged@[::1]:5433/k");
        assert_eq!(
            (u.host.clone(), u.port),
            (PostgresHost::Tcp("::1".into()), 5433)
        );
        assert_eq!(u.to_string(), "postgres://kaged@[::1]:5433/k");
    }

    #[test]
    fn unix_socket_forms_name_the_directory() {
        let u = ok("postgres://kaged@/kaged?host=/run/postgresql");
        assert_eq!(u.host, PostgresHost::Socket("/run/postgresql".into()));
        assert_eq!(
            u.to_string(),
            "postgres://kaged@/kaged?host=/run/postgresql"
        );
        let u = ok("postgresql://kaged@%2Ftmp%2Fpg:5499/kaged");
        assert_eq!(u.host, PostgresHost::Socket("/tmp/pg".into()));
        assert_eq!(
            u.to_string(),
            "postgres://kaged@/kaged?host=/tmp/pg&port=5499"
        );
        assert_eq!(ok(&u.to_string()), u, "what is shown reads back");
        let u = ok("postgres://kaged@/kaged?host=/tmp/pg&port=5499&sslmode=disable");
        assert_eq!(u.port, 5499);
    }

    #[test]
    fn the_password_is_never_shown() {
        let u = ok("postgres://kaged:hunter2@db.internal:5432/kaged?sslmode=disable");
        assert_eq!(u.tls, PostgresTls::Disable);
        let shown = format!(
            "{u} {u:?} {}",
            serde_json::to_string(&u).unwrap_or_default()
        );
        assert!(!shown.contains("hunter2"), "{shown}");
        assert_eq!(
            u.to_string(),
            "postgres://kaged@db.internal:5432/kaged?sslmode=disable"
        );
        assert_eq!(ok(&u.to_string()).password, None);
    }

    #[test]
    fn tls_is_verified_never_optional_and_on_by_default_for_remote_hosts() {
        let remote = ok("postgres://k@db.example.com/k");
        assert_eq!(remote.tls, PostgresTls::Verify { root_cert: None });
        assert_eq!(
            remote.to_string(),
            "postgres://k@db.example.com:5432/k?sslmode=verify-full"
        );
        assert_eq!(ok("postgres://k@127.0.0.1/k").tls, PostgresTls::Disable);
        for mode in ["require", "verify-ca", "verify-full"] {
            let u = ok(&format!(
                "postgres://k@127.0.0.1/k?sslmode={mode}&sslrootcert=/etc/pg/ca.crt"
            ));
            assert_eq!(
                u.tls,
                PostgresTls::Verify {
                    root_cert: Some("/etc/pg/ca.crt".into())
                }
            );
            assert_eq!(ok(&u.to_string()), u, "what is shown reads back");
        }
        let plain = ok("postgres://k@db.example.com/k?sslmode=disable");
        assert_eq!(plain.tls, PostgresTls::Disable);
        assert_eq!(
            plain.to_string(),
            "postgres://k@db.example.com:5432/k?sslmode=disable"
        );
        for (text, needle) in [
            ("postgres://k@db/k?sslmode=prefer", "fall back"),
            ("postgres://k@db/k?sslmode=allow", "fall back"),
            (
                "postgres://k@db/k?sslmode=bogus",
                "not a PostgreSQL TLS mode",
            ),
            (
                "postgres://k@/k?host=/run/postgresql&sslmode=require",
                "no TLS over a Unix socket",
            ),
            (
                "postgres://k@db/k?sslrootcert=ca.crt",
                "not an absolute path",
            ),
            (
                "postgres://k@db/k?sslmode=disable&sslrootcert=/ca.crt",
                "not encrypted",
            ),
        ] {
            let why = refused(text);
            assert!(why.contains(needle), "{text}: {why}");
        }
    }

    #[test]
    fn incomplete_or_strange_urls_say_what_is_missing() {
        for (text, needle) in [
            ("postgres://127.0.0.1/k", "no database user"),
            ("postgres://k@127.0.0.1", "names no database"),
            ("postgres://k@127.0.0.1/", "not a database name"),
            ("postgres://k@/k", "names no server"),
            ("postgres://k@127.0.0.1:0/k", "not a port number"),
            ("postgres://k@127.0.0.1:x/k", "not a port number"),
            (
                "postgres://k@127.0.0.1/k?connect_timeout=3",
                "not supported",
            ),
            ("postgres://k@h/k?host=/run/postgresql", "two hosts"),
            ("postgres://k@[::1/k", "IPv6"),
            ("postgres://k%zz@127.0.0.1/k", "%-escape"),
            ("postgres://k@bad_host!/k", "not a host name"),
        ] {
            let why = refused(text);
            assert!(why.contains(needle), "{text}: {why}");
        }
    }

    proptest::proptest! {
        /// Any user, database and port: what is shown reads back as the same URL (and the
        /// password never shows).
        #[test]
        fn what_is_shown_reads_back(
            user in "[^\\x00]{1,12}",
            database in "[^\\x00/]{1,12}",
            password in "[a-z@:/%?#]{1,8}",
            port in 1u16..,
            socket in proptest::bool::ANY,
        ) {
            let url = PostgresUrl {
                user,
                password: Some(ConfigSecret::new(password.clone())),
                host: if socket {
                    PostgresHost::Socket("/run/postgresql".into())
                } else {
                    PostgresHost::Tcp("127.0.0.1".into())
                },
                port,
                database,
                tls: PostgresTls::Disable,
            };
            let shown = url.to_string();
            let back = ok(&shown);
            proptest::prop_assert_eq!(back, PostgresUrl { password: None, ..url.clone() });
            let with_password = shown.replacen('@', &format!(":{}@", encode(&password)), 1);
            proptest::prop_assert_eq!(ok(&with_password), url);
        }
    }
}
