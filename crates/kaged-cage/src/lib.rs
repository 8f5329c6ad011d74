//! Cages, decided without I/O: a project's resolved cage policy (from `kaged-dsl`), the project
//! root and the operator's grants become a bubblewrap command line. The edge runs it.
//!
//! Defaults ("sandbox by default, escalate by intent"): system directories read-only, the
//! project read-write at `/workspace` with `.git` and `.kaged` read-only, a private home and
//! `/tmp`, fresh `/proc` and `/dev`, new user/PID/IPC/UTS namespaces, no network unless asked,
//! `--die-with-parent`, `--new-session` (no TIOCSTI into the caller's terminal), and an
//! environment cleared down to an allowlist.

mod limits;
mod run;
mod seccomp;
mod weaken;

use std::path::{Path, PathBuf};

pub use limits::{CPU_PERIOD_US, CgroupValues, LimitFacts, LimitPlan, plan_limits};
pub use run::{PlanError, RunKind, RunPlan, plan_run};
pub use seccomp::{SeccompError, profile_bpf};
pub use weaken::{HostGrants, HostPath, Weakening, policy_weakenings, weakenings};

use serde_json::Value;

/// Where the project appears inside every cage.
pub const WORKSPACE: &str = "/workspace";
/// The file descriptor on which bwrap reads the seccomp program (the edge opens it there).
pub const SECCOMP_FD: &str = "3";

/// The private home inside every cage.
pub const CAGE_HOME: &str = "/home/kaged";
/// System directories bound read-only when they exist on the host.
pub const SYSTEM_DIRS: &[&str] = &[
    "/usr",
    "/bin",
    "/sbin",
    "/lib",
    "/lib32",
    "/lib64",
    "/etc",
    "/opt/kaged",
];

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Network {
    /// Own network namespace with only loopback.
    None,
    /// The host's network, by explicit intent.
    Host,
    /// Only these destinations, through kaged's proxy.
    Allow(Vec<String>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// Relative to the project root.
    pub relative: PathBuf,
    pub writable: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Limits {
    pub memory_mb: Option<u64>,
    pub cpu_percent: Option<u64>,
    pub pids: Option<u64>,
    pub wall_time_secs: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Policy {
    /// `cage: disabled`: runs as the daemon user, audited as such.
    Disabled,
    Caged {
        network: Network,
        mounts: Vec<Mount>,
        seccomp: String,
        limits: Limits,
    },
}

impl Policy {
    /// The default cage: no network, nothing but the workspace.
    pub fn default_cage() -> Policy {
        Policy::Caged {
            network: Network::None,
            mounts: Vec::new(),
            seccomp: "default".into(),
            limits: Limits::default(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CageError {
    #[error("no agent named `{0}` in this project (agents: {1})")]
    UnknownAgent(String, String),
    #[error("the cage policy of `{agent}` is malformed at {field}")]
    Malformed { agent: String, field: String },
    #[error("the command is empty")]
    EmptyCommand,
}

/// Find an agent's object in a resolved project (`primary` or any nested subagent).
fn find_agent<'a>(config: &'a Value, name: &str) -> Option<&'a Value> {
    fn walk<'a>(agent: &'a Value, wanted: &str) -> Option<&'a Value> {
        let subs = agent.get("subagents")?.as_object()?;
        for (name, sub) in subs {
            if name == wanted {
                return Some(sub);
            }
            if let Some(found) = walk(sub, wanted) {
                return Some(found);
            }
        }
        None
    }
    let primary = config.get("primary")?;
    if name == "primary" {
        Some(primary)
    } else {
        walk(primary, name)
    }
}

fn agent_names(config: &Value) -> Vec<String> {
    fn walk(agent: &Value, out: &mut Vec<String>) {
        if let Some(subs) = agent.get("subagents").and_then(Value::as_object) {
            for (name, sub) in subs {
                out.push(name.clone());
                walk(sub, out);
            }
        }
    }
    let mut out = vec!["primary".to_string()];
    if let Some(p) = config.get("primary") {
        walk(p, &mut out);
    }
    out
}

/// The cage policy of `agent` in a resolved (validated) project configuration.
pub fn policy_for(config: &Value, agent: &str) -> Result<Policy, CageError> {
    let a = find_agent(config, agent)
        .ok_or_else(|| CageError::UnknownAgent(agent.into(), agent_names(config).join(", ")))?;
    let malformed = |field: &str| CageError::Malformed {
        agent: agent.into(),
        field: field.into(),
    };
    let cage = match a.get("cage") {
        None => return Ok(Policy::default_cage()),
        Some(Value::String(s)) if s == "disabled" => return Ok(Policy::Disabled),
        Some(Value::Object(o)) => o,
        Some(_) => return Err(malformed("cage")),
    };
    let network = match cage.get("network") {
        None => Network::None,
        Some(Value::String(s)) if s == "none" => Network::None,
        Some(Value::String(s)) if s == "host" => Network::Host,
        Some(Value::Object(o)) => Network::Allow(
            o.get("allow")
                .and_then(Value::as_array)
                .ok_or_else(|| malformed("cage.network.allow"))?
                .iter()
                .map(|v| {
                    v.as_str()
                        .map(String::from)
                        .ok_or_else(|| malformed("cage.network.allow"))
                })
                .collect::<Result<_, _>>()?,
        ),
        Some(_) => return Err(malformed("cage.network")),
    };
    let mut mounts = Vec::new();
    for m in cage
        .get("filesystem")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let path = m
            .get("path")
            .and_then(Value::as_str)
            .ok_or_else(|| malformed("cage.filesystem.path"))?;
        // Validated project files only hold project:/ paths here; config:/ is .kaged/.
        let relative = if let Some(rest) = path.strip_prefix("project:/") {
            PathBuf::from(rest)
        } else if let Some(rest) = path.strip_prefix("config:/") {
            Path::new(".kaged").join(rest)
        } else {
            return Err(malformed("cage.filesystem.path"));
        };
        if relative
            .components()
            .any(|c| !matches!(c, std::path::Component::Normal(_)))
            && !relative.as_os_str().is_empty()
        {
            return Err(malformed("cage.filesystem.path"));
        }
        mounts.push(Mount {
            relative,
            writable: m.get("mode").and_then(Value::as_str) == Some("rw"),
        });
    }
    let limit = |k: &str| {
        cage.get("limits")
            .and_then(|l| l.get(k))
            .and_then(Value::as_u64)
    };
    Ok(Policy::Caged {
        network,
        mounts,
        seccomp: cage
            .get("seccomp")
            .and_then(Value::as_str)
            .unwrap_or("default")
            .into(),
        limits: Limits {
            memory_mb: limit("memory_mb"),
            cpu_percent: limit("cpu_percent"),
            pids: limit("pids"),
            wall_time_secs: limit("wall_time_secs"),
        },
    })
}

/// Facts about the host the compiler needs (gathered by the edge).
#[derive(Debug, Clone, Default)]
pub struct Host {
    /// Which of [`SYSTEM_DIRS`] exist.
    pub system_dirs: Vec<String>,
    /// Whether the project has `.git` and `.kaged` directories (re-mounted read-only).
    pub has_git: bool,
    pub has_kaged: bool,
}

/// What to run and where.
#[derive(Debug, Clone)]
pub struct Launch<'a> {
    pub project_root: &'a Path,
    /// Working directory relative to the project root.
    pub cwd: &'a Path,
    pub command: &'a [String],
    /// Environment passed in (already filtered to what the operator granted, plus TERM etc).
    pub env: &'a [(String, String)],
    /// Whether the cage gets a terminal of its own (a kaged PTY). Only a cage that shares the
    /// caller's terminal needs `--new-session` (TIOCSTI), which also costs it job control.
    pub own_terminal: bool,
    /// For a network allowlist: the kaged egress proxy to reach the outside through.
    pub egress: Option<Egress<'a>>,
    /// With `own_terminal`: the kaged executable, run first inside the cage as `cage-tty` to
    /// make the command's process group the terminal's foreground one (the PTY's session
    /// leader lives outside the cage's PID namespace, so shells would find no group to restore).
    pub tty_helper: Option<&'a Path>,
}

/// How a cage with an allowlist reaches kaged's egress proxy: the proxy's Unix socket and the
/// kaged binary (which runs the in-cage bridge) are bound in, and the command runs under the
/// bridge with the proxy variables set.
#[derive(Debug, Clone)]
pub struct Egress<'a> {
    /// The proxy's Unix socket on the host.
    pub socket: &'a Path,
    /// The kaged executable on the host.
    pub helper: &'a Path,
}

/// Where the egress proxy socket appears inside a cage.
pub const EGRESS_SOCKET: &str = "/run/kaged/egress.sock";
/// Where the kaged executable appears inside a cage (runs the bridge).
pub const EGRESS_HELPER: &str = "/run/kaged/kaged";
/// The bridge's address inside the cage's own loopback.
pub const EGRESS_LISTEN: &str = "127.0.0.1:3128";

/// The bubblewrap argv (without the `bwrap` program itself) for a caged launch.
pub fn compile(
    policy: &Policy,
    host: &Host,
    launch: &Launch<'_>,
) -> Result<Vec<String>, CageError> {
    if launch.command.is_empty() {
        return Err(CageError::EmptyCommand);
    }
    let Policy::Caged {
        network, mounts, ..
    } = policy
    else {
        return Ok(launch.command.to_vec());
    };
    let mut a: Vec<String> = Vec::new();
    let mut push = |items: &[&str]| a.extend(items.iter().map(|s| s.to_string()));
    push(&["--die-with-parent"]);
    if !launch.own_terminal {
        push(&["--new-session"]);
    }
    push(&[
        "--unshare-user",
        "--unshare-pid",
        "--unshare-ipc",
        "--unshare-uts",
        "--unshare-cgroup-try",
    ]);
    if *network != Network::Host {
        push(&["--unshare-net"]);
    }
    push(&["--hostname", "kaged-cage"]);
    for dir in SYSTEM_DIRS {
        if host.system_dirs.iter().any(|d| d == dir) {
            push(&["--ro-bind", dir, dir]);
        }
    }
    push(&[
        "--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp", "--tmpfs", "/home", "--dir",
        CAGE_HOME, "--tmpfs", "/run",
    ]);
    let root = launch.project_root.display().to_string();
    push(&["--bind", &root, WORKSPACE]);
    for m in mounts {
        let host_path = launch.project_root.join(&m.relative).display().to_string();
        let at = Path::new(WORKSPACE).join(&m.relative).display().to_string();
        push(&[
            if m.writable { "--bind" } else { "--ro-bind" },
            &host_path,
            &at,
        ]);
    }
    // After any grant: the project's history and its kaged contract stay read-only.
    if host.has_git {
        push(&[
            "--ro-bind",
            &format!("{root}/.git"),
            &format!("{WORKSPACE}/.git"),
        ]);
    }
    if host.has_kaged {
        push(&[
            "--ro-bind",
            &format!("{root}/.kaged"),
            &format!("{WORKSPACE}/.kaged"),
        ]);
    }
    let egress = match (network, &launch.egress) {
        (Network::Allow(_), Some(egress)) => Some(egress),
        _ => None,
    };
    let tty_helper = launch.tty_helper.filter(|_| launch.own_terminal);
    if let Some(helper) = egress.map(|e| e.helper).or(tty_helper) {
        push(&["--ro-bind", &helper.display().to_string(), EGRESS_HELPER]);
    }
    if let Some(egress) = egress {
        push(&[
            "--bind",
            &egress.socket.display().to_string(),
            EGRESS_SOCKET,
        ]);
    }
    let cwd = if launch.cwd.as_os_str().is_empty() {
        WORKSPACE.to_string()
    } else {
        Path::new(WORKSPACE).join(launch.cwd).display().to_string()
    };
    push(&["--chdir", &cwd, "--clearenv", "--seccomp", SECCOMP_FD]);
    for (k, v) in [
        (
            "PATH",
            "/usr/local/bin:/usr/bin:/bin:/usr/local/sbin:/usr/sbin:/sbin",
        ),
        ("HOME", CAGE_HOME),
        ("USER", "kaged"),
        ("LANG", "C.UTF-8"),
        ("KAGED_CAGE", "1"),
    ] {
        push(&["--setenv", k, v]);
    }
    for (k, v) in launch.env {
        push(&["--setenv", k, v]);
    }
    push(&["--"]);
    if tty_helper.is_some() {
        push(&[EGRESS_HELPER, "cage-tty", "--"]);
    }
    if egress.is_some() {
        push(&[
            EGRESS_HELPER,
            "cage-bridge",
            "--listen",
            EGRESS_LISTEN,
            "--socket",
            EGRESS_SOCKET,
            "--",
        ]);
    }
    a.extend(launch.command.iter().cloned());
    Ok(a)
}

/// Policy parts this run cannot enforce, to report (never to skip silently). Limits are
/// reported by [`plan_limits`], which knows the host.
pub fn unenforced(policy: &Policy, egress: bool) -> Vec<String> {
    let Policy::Caged { network, .. } = policy else {
        return Vec::new();
    };
    let mut out = Vec::new();
    if let Network::Allow(hosts) = network
        && !egress
    {
        out.push(format!(
            "network allowlist ({}) needs the kaged egress proxy, which this run does not have: the cage has no network at all",
            hosts.join(", ")
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn config() -> Value {
        json!({
            "project": "demo",
            "primary": {
                "command": ["claude"],
                "subagents": {
                    "net": {"command": ["x"], "cage": {"network": "host", "filesystem": [{"path": "project:/data", "mode": "rw"}]}},
                    "free": {"command": ["y"], "cage": "disabled"},
                    "allow": {"command": ["z"], "cage": {"network": {"allow": ["*.github.com:443"]}, "limits": {"pids": 64}}}
                }
            }
        })
    }

    fn host() -> Host {
        Host {
            system_dirs: vec!["/usr".into(), "/etc".into(), "/bin".into()],
            has_git: true,
            has_kaged: true,
        }
    }

    fn argv(policy: &Policy) -> Vec<String> {
        let cmd = vec!["make".to_string(), "test".to_string()];
        let env = vec![("TERM".to_string(), "xterm".to_string())];
        compile(
            policy,
            &host(),
            &Launch {
                project_root: Path::new("/home/ann/src/demo"),
                cwd: Path::new("sub"),
                command: &cmd,
                env: &env,
                own_terminal: false,
                egress: None,
                tty_helper: None,
            },
        )
        .unwrap()
    }

    fn has(a: &[String], seq: &[&str]) -> bool {
        a.windows(seq.len())
            .any(|w| w.iter().zip(seq).all(|(x, y)| x == y))
    }

    #[test]
    fn default_cage_is_closed() {
        let p = policy_for(&config(), "primary").unwrap();
        assert_eq!(p, Policy::default_cage());
        let a = argv(&p);
        for flag in [
            "--die-with-parent",
            "--new-session",
            "--unshare-user",
            "--unshare-pid",
            "--unshare-net",
            "--clearenv",
        ] {
            assert!(a.contains(&flag.to_string()), "{flag}");
        }
        assert!(has(&a, &["--ro-bind", "/usr", "/usr"]));
        assert!(has(&a, &["--ro-bind", "/etc", "/etc"]));
        assert!(
            !a.contains(&"/lib64".to_string()),
            "absent dirs are not bound"
        );
        assert!(has(&a, &["--bind", "/home/ann/src/demo", "/workspace"]));
        assert!(has(
            &a,
            &["--ro-bind", "/home/ann/src/demo/.git", "/workspace/.git"]
        ));
        assert!(has(
            &a,
            &[
                "--ro-bind",
                "/home/ann/src/demo/.kaged",
                "/workspace/.kaged"
            ]
        ));
        assert!(has(&a, &["--tmpfs", "/home", "--dir", "/home/kaged"]));
        assert!(has(&a, &["--chdir", "/workspace/sub"]));
        assert!(has(&a, &["--setenv", "TERM", "xterm"]));
        assert!(has(&a, &["--", "make", "test"]));
        // The host home is never bound, and .git comes after the writable workspace.
        assert!(
            !a.iter().any(|x| x == "/root"
                || x.starts_with("/home/ann") && !x.starts_with("/home/ann/src/demo"))
        );
        let ws = a.iter().position(|x| x == "/workspace").unwrap();
        let git = a.iter().position(|x| x == "/workspace/.git").unwrap();
        assert!(git > ws);
    }

    #[test]
    fn host_network_grants_and_disabled() {
        let p = policy_for(&config(), "net").unwrap();
        let a = argv(&p);
        assert!(!a.contains(&"--unshare-net".to_string()));
        assert!(has(
            &a,
            &["--bind", "/home/ann/src/demo/data", "/workspace/data"]
        ));
        assert_eq!(policy_for(&config(), "free").unwrap(), Policy::Disabled);
        assert_eq!(argv(&Policy::Disabled), vec!["make", "test"]);
        let allow = policy_for(&config(), "allow").unwrap();
        assert!(
            argv(&allow).contains(&"--unshare-net".to_string()),
            "without the proxy: no network"
        );
        let missing = unenforced(&allow, false);
        assert!(missing.iter().any(|m| m.contains("allowlist")));
        let err = policy_for(&config(), "ghost").unwrap_err();
        assert!(
            err.to_string()
                .contains("agents: primary, net, free, allow")
                || err.to_string().contains("agents: primary"),
            "{err}"
        );
    }

    #[test]
    fn allowlist_goes_through_the_bridge_and_a_kaged_pty_keeps_job_control() {
        let allow = policy_for(&config(), "allow").unwrap();
        let cmd = vec!["curl".to_string(), "https://api.github.com".to_string()];
        let launch = |egress| Launch {
            project_root: Path::new("/p"),
            cwd: Path::new(""),
            command: &cmd,
            env: &[],
            own_terminal: true,
            egress,
            tty_helper: None,
        };
        let with = compile(
            &allow,
            &host(),
            &launch(Some(Egress {
                socket: Path::new("/run/user/1/kaged/egress-1.sock"),
                helper: Path::new("/usr/bin/kaged"),
            })),
        )
        .unwrap();
        assert!(with.contains(&"--unshare-net".to_string()));
        assert!(has(&with, &["--ro-bind", "/usr/bin/kaged", EGRESS_HELPER]));
        assert!(has(
            &with,
            &["--bind", "/run/user/1/kaged/egress-1.sock", EGRESS_SOCKET]
        ));
        assert!(has(
            &with,
            &[
                "--",
                EGRESS_HELPER,
                "cage-bridge",
                "--listen",
                EGRESS_LISTEN,
                "--socket",
                EGRESS_SOCKET,
                "--",
                "curl"
            ]
        ));
        assert!(!with.contains(&"--new-session".to_string()));
        assert!(
            unenforced(&allow, true)
                .iter()
                .all(|m| !m.contains("allowlist"))
        );
        // Without a proxy there is no bridge, and a closed cage never gets one.
        let without = compile(&allow, &host(), &launch(None)).unwrap();
        assert!(!without.iter().any(|a| a == EGRESS_HELPER));
        let closed = compile(
            &Policy::default_cage(),
            &host(),
            &launch(Some(Egress {
                socket: Path::new("/s"),
                helper: Path::new("/k"),
            })),
        )
        .unwrap();
        assert!(!closed.iter().any(|a| a == EGRESS_HELPER || a == "/s"));
    }

    #[test]
    fn a_kaged_terminal_gets_its_foreground_group_set_inside_the_cage() {
        let cmd = vec!["sh".to_string()];
        let launch = |own_terminal| Launch {
            project_root: Path::new("/p"),
            cwd: Path::new(""),
            command: &cmd,
            env: &[],
            own_terminal,
            egress: None,
            tty_helper: Some(Path::new("/usr/bin/kaged")),
        };
        let a = compile(&Policy::default_cage(), &host(), &launch(true)).unwrap();
        assert!(has(&a, &["--ro-bind", "/usr/bin/kaged", EGRESS_HELPER]));
        assert!(has(&a, &["--", EGRESS_HELPER, "cage-tty", "--", "sh"]));
        let shared = compile(&Policy::default_cage(), &host(), &launch(false)).unwrap();
        assert!(!shared.iter().any(|x| x == "cage-tty"));
    }
}
