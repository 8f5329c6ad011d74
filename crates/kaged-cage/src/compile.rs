//! The cage compiler: a policy, the host's facts (opened sources with their identities, host
//! grants, which system directories exist) and a launch become bwrap's options and command.
//! Also what the edge must open for a cage ([`sources`]) and what a run cannot enforce.

use std::path::{Path, PathBuf};

use crate::{
    CAGE_HOME, CageError, DEFAULT_PATH, Expect, Network, Policy, SYSTEM_DIRS, WORKSPACE, Workspace,
};

/// A file the edge opens for a cage (never by a path the cage could change) and hands bwrap
/// as a descriptor: `--bind-fd` binds exactly the object that was opened and checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// The project root (bound read-write at [`WORKSPACE`]), or the directory of a
    /// [`Workspace::ReadOnly`] cage (bound read-only there).
    Root,
    /// A path below the project root, opened component by component without following links.
    Project(PathBuf),
    /// The kaged executable, which runs the in-cage helpers (check, tty, egress bridge).
    Helper,
    /// The directory of the run's egress proxy socket ([`Launch::egress`]), which holds
    /// nothing else. By descriptor, because it lives in the daemon's private runtime
    /// directory, which a cage switched to another user could not reach by path; the
    /// directory and not the socket, because bwrap cannot bind a non-directory by descriptor
    /// when its path is out of the user's reach.
    Egress,
}

/// What the edge must open for `policy`'s cage, `egress` telling whether the run has an egress
/// proxy: `(source, required)`. An optional source that is absent is left out of
/// [`Host::opened`]; `.git` absent is then masked (empty, read-only). A read-only workspace
/// needs neither `.git` nor `.kaged`.
pub fn sources(policy: &Policy, egress: bool) -> Vec<(Source, bool)> {
    let mut out = vec![(Source::Root, true), (Source::Helper, true)];
    if let Policy::Caged { mounts, .. } = policy {
        out.extend(
            mounts
                .iter()
                .map(|m| (Source::Project(m.relative.clone()), true)),
        );
    }
    if !matches!(
        policy,
        Policy::Caged {
            workspace: Workspace::ReadOnly,
            ..
        }
    ) {
        out.push((Source::Project(".git".into()), false));
        out.push((Source::Project(".kaged".into()), false));
    }
    if let Policy::Caged {
        network: Network::Allow(_),
        ..
    } = policy
        && egress
    {
        out.push((Source::Egress, true));
    }
    out
}

/// Identity of an opened file (`st_dev`, `st_ino`): the in-cage check compares what it sees
/// at a destination with what the edge opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileId {
    pub dev: u64,
    pub ino: u64,
}

/// A source the edge opened, in the order of [`Host::opened`] (which fixes its descriptor).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opened {
    pub source: Source,
    pub id: FileId,
}

/// A host path `local.toml` grants a project, as the edge resolved it: links followed on the
/// host (the destination shows the object itself), outside the project (which a cage can
/// write), bound by path and checked at its destination from inside the cage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostBind {
    /// The canonical host path.
    pub host: PathBuf,
    /// Where it appears inside the cage (absolute; see [`grant_destination`]).
    pub dest: String,
    pub writable: bool,
    /// Whether `dest` goes on the front of the cage's `PATH`.
    pub on_path: bool,
    /// What the edge resolved, which the in-cage check expects at `dest`.
    pub id: FileId,
}

/// Where a grant's `at` appears inside a cage: `project:/x` below [`WORKSPACE`], `home:/x`
/// below [`CAGE_HOME`], an absolute path as itself. `None` for anything else, or a path with
/// `.`/`..` in it, or the workspace or the home itself.
pub fn grant_destination(at: &str) -> Option<String> {
    let (base, rest) = if let Some(rest) = at.strip_prefix("project:/") {
        (WORKSPACE, rest)
    } else if let Some(rest) = at.strip_prefix("home:/") {
        (CAGE_HOME, rest)
    } else if let Some(rest) = at.strip_prefix('/') {
        ("", rest)
    } else {
        return None;
    };
    let parts: Vec<&str> = rest.split('/').filter(|p| !p.is_empty()).collect();
    if parts.is_empty() || parts.iter().any(|p| *p == "." || *p == "..") {
        return None;
    }
    Some(format!("{base}/{}", parts.join("/")))
}

/// The cage's `PATH`: the destinations granted `on_path` (in their order), then
/// [`DEFAULT_PATH`].
pub fn cage_path(host: &Host) -> Vec<String> {
    host.binds
        .iter()
        .filter(|b| b.on_path)
        .map(|b| b.dest.clone())
        .chain(DEFAULT_PATH.iter().map(|d| d.to_string()))
        .collect()
}

/// Facts about the host the compiler needs (gathered by the edge).
#[derive(Debug, Clone, Default)]
pub struct Host {
    /// Which of [`SYSTEM_DIRS`] exist.
    pub system_dirs: Vec<String>,
    /// The sources opened for this cage; the i-th is at descriptor [`FIRST_SOURCE_FD`] + i.
    pub opened: Vec<Opened>,
    /// The host's own mount points below the system directories and the granted host paths,
    /// as a cage sees them (bwrap binds those recursively).
    pub system_submounts: Vec<String>,
    /// The host paths `local.toml` grants, in order (parents before what lies below them).
    pub binds: Vec<HostBind>,
}

impl Host {
    fn find(&self, source: &Source) -> Option<(i32, FileId)> {
        let i = self.opened.iter().position(|o| &o.source == source)?;
        Some((FIRST_SOURCE_FD + i32::try_from(i).ok()?, self.opened[i].id))
    }
}

/// Descriptors as the launched bwrap sees them (the edge places them there): the seccomp
/// programs, the argument list (so nothing of it, the environment included, shows in
/// `/proc/PID/cmdline`), then every opened source.
pub const SECCOMP_FD: i32 = 3;
pub const SECCOMP_ENOSYS_FD: i32 = 4;
pub const ARGS_FD: i32 = 5;
pub const FIRST_SOURCE_FD: i32 = 6;

/// What to run and where.
#[derive(Debug, Clone)]
pub struct Launch<'a> {
    /// Working directory relative to the project root.
    pub cwd: &'a Path,
    pub command: &'a [String],
    /// Environment passed in (already filtered to what the operator granted, plus TERM etc).
    pub env: &'a [(String, String)],
    /// Whether the cage gets a terminal of its own (a kaged PTY). Only a cage that shares the
    /// caller's terminal needs `--new-session` (TIOCSTI), which also costs it job control.
    /// On its own terminal the helper runs `cage-tty` first, to make the command's process
    /// group the terminal's foreground one (the PTY's session leader lives outside the cage's
    /// PID namespace, so shells would find no group to restore).
    pub own_terminal: bool,
    /// For a network allowlist: the kaged egress proxy's Unix socket on the host, alone in a
    /// directory of the run's own (the edge opens that as [`Source::Egress`]); the command
    /// then runs under the in-cage bridge with the proxy variables set.
    pub egress: Option<&'a Path>,
}

/// Where the directory of the egress proxy socket appears inside a cage (read-only).
pub const EGRESS_DIR: &str = "/run/kaged/egress";
/// Where the kaged executable appears inside a cage (runs the helpers).
pub const HELPER: &str = "/run/kaged/kaged";
/// The bridge's address inside the cage's own loopback.
pub const EGRESS_LISTEN: &str = "127.0.0.1:3128";

/// bwrap's command line for a caged launch, in two parts: the options, which the edge hands
/// bwrap on [`ARGS_FD`] (bwrap wants the command itself on its command line), and the command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CageArgs {
    pub options: Vec<String>,
    pub command: Vec<String>,
}

impl CageArgs {
    /// Everything in order, as `bwrap OPTIONS -- COMMAND` would take it.
    pub fn joined(&self) -> Vec<String> {
        let mut all = self.options.clone();
        if !all.is_empty() {
            all.push("--".into());
        }
        all.extend(self.command.iter().cloned());
        all
    }
}

/// The bubblewrap arguments (without the `bwrap` program itself) for a caged launch (for
/// `cage: disabled`, only the command). Every bind below the project comes from a descriptor,
/// and the first thing run inside is `kaged cage-check`, which refuses to go on unless each
/// of them is at its destination as intended (bwrap resolves destinations by path, through
/// the project a cage can write).
pub fn compile(policy: &Policy, host: &Host, launch: &Launch<'_>) -> Result<CageArgs, CageError> {
    if launch.command.is_empty() {
        return Err(CageError::EmptyCommand);
    }
    let Policy::Caged {
        network,
        mounts,
        workspace,
        ..
    } = policy
    else {
        return Ok(CageArgs {
            options: Vec::new(),
            command: launch.command.to_vec(),
        });
    };
    let required = |source: Source| {
        host.find(&source)
            .ok_or_else(|| CageError::MissingSource(format!("{source:?}")))
    };
    let mut a: Vec<String> = Vec::new();
    let mut checks: Vec<Expect> = Vec::new();
    // Every mount point the cage gets, for the check of its whole mount table.
    let mut made: Vec<String> = ["/proc", "/dev", "/tmp", "/home", "/run", WORKSPACE]
        .map(String::from)
        .to_vec();
    let mut push = |items: &[&str]| a.extend(items.iter().map(|s| s.to_string()));
    push(&["--die-with-parent"]);
    if !launch.own_terminal {
        push(&["--new-session"]);
    }
    push(&[
        "--unshare-user",
        "--disable-userns",
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
            made.push(dir.to_string());
        }
    }
    push(&[
        "--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp", "--tmpfs", "/home", "--dir",
        CAGE_HOME, "--tmpfs", "/run",
    ]);
    let (fd, id) = required(Source::Root)?;
    let workspace_writable = *workspace == Workspace::Project;
    push(&[
        if workspace_writable {
            "--bind-fd"
        } else {
            "--ro-bind-fd"
        },
        &fd.to_string(),
        WORKSPACE,
    ]);
    checks.push(Expect::Bind {
        path: WORKSPACE.into(),
        id,
        writable: workspace_writable,
    });
    let at = |relative: &Path| Path::new(WORKSPACE).join(relative).display().to_string();
    for m in mounts {
        let (fd, id) = required(Source::Project(m.relative.clone()))?;
        let dest = at(&m.relative);
        push(&[
            if m.writable {
                "--bind-fd"
            } else {
                "--ro-bind-fd"
            },
            &fd.to_string(),
            &dest,
        ]);
        made.push(dest.clone());
        checks.push(Expect::Bind {
            path: dest,
            id,
            writable: m.writable,
        });
    }
    // The operator's host grants (local.toml): outside the project, so bound by path; where
    // they land is checked from inside like every bind.
    for b in &host.binds {
        push(&[
            if b.writable { "--bind" } else { "--ro-bind" },
            &b.host.display().to_string(),
            &b.dest,
        ]);
        made.push(b.dest.clone());
        checks.push(Expect::Bind {
            path: b.dest.clone(),
            id: b.id,
            writable: b.writable,
        });
    }
    // After any grant: the project's history and its kaged contract stay read-only. An absent
    // `.git` is masked (an empty read-only directory), so no cage can plant one for the
    // operator's next `git status` on the host (core.fsmonitor, hooks).
    // A read-only workspace needs no mask (and could not take the mount point of one).
    if workspace_writable {
        let git = at(Path::new(".git"));
        made.push(git.clone());
        match host.find(&Source::Project(".git".into())) {
            Some((fd, id)) => {
                push(&["--ro-bind-fd", &fd.to_string(), &git]);
                checks.push(Expect::Bind {
                    path: git,
                    id,
                    writable: false,
                });
            }
            None => {
                push(&["--tmpfs", &git, "--remount-ro", &git]);
                checks.push(Expect::Mask { path: git });
            }
        }
    }
    if workspace_writable && let Some((fd, id)) = host.find(&Source::Project(".kaged".into())) {
        let kaged = at(Path::new(".kaged"));
        made.push(kaged.clone());
        push(&["--ro-bind-fd", &fd.to_string(), &kaged]);
        checks.push(Expect::Bind {
            path: kaged,
            id,
            writable: false,
        });
    }
    let (fd, _) = required(Source::Helper)?;
    push(&["--ro-bind-fd", &fd.to_string(), HELPER]);
    made.push(HELPER.into());
    // The socket as the cage sees it: its directory, read-only (a socket on a read-only mount
    // still accepts connections).
    let egress = match (network, launch.egress.and_then(Path::file_name)) {
        (Network::Allow(_), Some(name)) => {
            let (fd, _) = required(Source::Egress)?;
            push(&["--ro-bind-fd", &fd.to_string(), EGRESS_DIR]);
            made.push(EGRESS_DIR.into());
            Some(Path::new(EGRESS_DIR).join(name).display().to_string())
        }
        _ => None,
    };
    let cwd = if launch.cwd.as_os_str().is_empty() {
        WORKSPACE.to_string()
    } else {
        Path::new(WORKSPACE).join(launch.cwd).display().to_string()
    };
    push(&[
        "--chdir",
        &cwd,
        "--clearenv",
        "--add-seccomp-fd",
        &SECCOMP_FD.to_string(),
        "--add-seccomp-fd",
        &SECCOMP_ENOSYS_FD.to_string(),
    ]);
    let path = cage_path(host).join(":");
    for (k, v) in [
        ("PATH", path.as_str()),
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
    let mut command: Vec<String> = vec![HELPER.into(), "cage-check".into()];
    for check in &checks {
        command.extend(["--expect".into(), check.to_string()]);
    }
    for point in &made {
        command.extend(["--mount".into(), point.clone()]);
    }
    for point in &host.system_submounts {
        command.extend(["--host-mount".into(), point.clone()]);
    }
    command.push("--".into());
    if launch.own_terminal {
        command.extend([HELPER, "cage-tty", "--"].map(String::from));
    }
    if let Some(socket) = egress {
        command.extend(
            [
                HELPER,
                "cage-bridge",
                "--listen",
                EGRESS_LISTEN,
                "--socket",
                &socket,
                "--",
            ]
            .map(String::from),
        );
    }
    command.extend(launch.command.iter().cloned());
    Ok(CageArgs {
        options: a,
        command,
    })
}

/// Policy parts this run cannot enforce, to report (never to skip silently). Limits are
/// reported by [`plan_limits`](crate::plan_limits), which knows the host.
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
mod tests;
