//! One command line for every start (`prepare`: setpriv → [systemd scope] → [prlimit] →
//! launcher shell joining cgroups → `bwrap --args 5 -- COMMAND`), and what a caged start needs
//! before it (`caged`: sources opened, bwrap's arguments compiled, seccomp and argument
//! memfds, limits planned, cgroups made → a [`Spec`]).

use std::io::{Seek, Write};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use crate::*;

/// A command ready to start, and the descriptors its child gets.
pub struct Prepared {
    pub command: Command,
    pub(crate) program: String,
    pub(crate) caged: bool,
    pub(crate) fds: Vec<OwnedFd>,
}

/// Build the one command line described in the module documentation.
pub fn prepare(spec: &Spec) -> Result<Prepared, SpawnError> {
    let mut c = Command::new("setpriv");
    c.args(["--pdeathsig", "KILL", "--"]);
    c.args(&spec.prefix);
    if !spec.rlimits.is_empty() {
        c.arg("prlimit").args(&spec.rlimits).arg("--");
    }
    let fds = match &spec.cage {
        Some(cage) => {
            usable_bwrap()?;
            // Joining the cgroups happens here, before bwrap: everything the cage forks is
            // born inside them. A path with whitespace would split, so none is accepted.
            let procs: Vec<String> = spec
                .cgroup_procs
                .iter()
                .map(|p| p.display().to_string())
                .collect();
            if procs.iter().any(|p| p.contains(char::is_whitespace)) {
                return Err(SpawnError::Cgroup(format!(
                    "a cgroup path holds whitespace: {}",
                    procs.join(" ")
                )));
            }
            let become_user = match spec.run_as {
                Some(id) => format!(
                    "setpriv --reuid={} --regid={} --clear-groups --no-new-privs --pdeathsig KILL -- ",
                    id.uid, id.gid
                ),
                None => String::new(),
            };
            c.args(["/bin/sh", "-c"])
                .arg(format!(
                    "for p in $KAGED_CGROUP_PROCS; do echo $$ > \"$p\" || exit 125; done; exec {become_user}{BWRAP} --args {} -- \"$@\"",
                    kaged_cage::ARGS_FD
                ))
                .arg("kaged-cage")
                .args(&spec.argv);
            // bwrap starts from --clearenv; only the launcher reads these.
            c.env_clear()
                .env("PATH", "/usr/local/bin:/usr/bin:/bin")
                .env("KAGED_CGROUP_PROCS", procs.join(" "));
            if !spec.prefix.is_empty() {
                // `systemd-run --user` finds the user's service manager through these.
                for k in ["XDG_RUNTIME_DIR", "DBUS_SESSION_BUS_ADDRESS"] {
                    if let Some(v) = std::env::var_os(k) {
                        c.env(k, v);
                    }
                }
            }
            cage.duplicates()?
        }
        None => {
            c.args(&spec.argv);
            c.env_clear().envs(spec.env.iter().map(|(k, v)| (k, v)));
            if let Some(cwd) = &spec.cwd {
                c.current_dir(cwd);
            }
            Vec::new()
        }
    };
    Ok(Prepared {
        command: c,
        // What an operator would look for when the start fails (the first program is
        // always setpriv; a caged argv starts with bwrap's options, not a program).
        program: format!(
            "setpriv (util-linux) running {}",
            if spec.is_caged() {
                "bwrap"
            } else {
                spec.argv.first().map_or("", String::as_str)
            }
        ),
        caged: spec.is_caged(),
        fds,
    })
}

/// A caged run ready to start: what to start, its cgroups (kept until it ended) and how its
/// limits are enforced on this host.
pub struct CagedRun {
    pub spec: Spec,
    pub cgroups: Cgroups,
    pub limits: kaged_cage::LimitPlan,
}

/// Everything a caged start needs from its caller.
pub struct CageRequest<'a> {
    /// The project root (canonical).
    pub root: &'a Path,
    /// The kaged executable bound in for the helpers: a daemon's [`HelperCopy`] (which survives
    /// an upgrade on disk), or `/proc/self/exe` for a short-lived command.
    pub helper: &'a Path,
    /// A `Policy::Caged`.
    pub policy: &'a kaged_cage::Policy,
    /// The daemon's default limits (`[sandbox]`), for every key the policy leaves unset.
    pub default_limits: &'a kaged_cage::Limits,
    pub launch: kaged_cage::Launch<'a>,
    /// Names the run's cgroups.
    pub name: &'a str,
    /// Who the cage runs as ([`run_as`]); `None` only when this process is not root.
    pub run_as: Option<kaged_cage::Identity>,
    /// The project's name (for the `local.toml` lines a refusal suggests).
    pub project: &'a str,
    /// What `local.toml` grants the project from the host (paths; see `resolve_grants`).
    pub grants: &'a [kaged_cage::HostPath],
}

/// An anonymous in-memory file holding `bytes`, read from its start.
pub(crate) fn memory_file(name: &str, bytes: &[u8]) -> Result<OwnedFd, SpawnError> {
    let fd = nix::sys::memfd::memfd_create(name, nix::sys::memfd::MFdFlags::MFD_CLOEXEC)
        .map_err(|e| SpawnError::Descriptors(e.into()))?;
    let mut file = std::fs::File::from(fd);
    file.write_all(bytes).map_err(SpawnError::Descriptors)?;
    file.rewind().map_err(SpawnError::Descriptors)?;
    Ok(file.into())
}

/// The one way from a cage policy to a [`Spec`]: the sources opened without following
/// links, bwrap's arguments compiled and put in memory, the seccomp programs built, limits
/// planned against this host and their cgroups made (named after `request.name`).
pub fn caged(request: &CageRequest<'_>) -> Result<CagedRun, SpawnError> {
    let kaged_cage::Policy::Caged {
        seccomp, limits, ..
    } = request.policy
    else {
        return Err(SpawnError::Cage("the cage is disabled".into()));
    };
    usable_bwrap()?;
    if request.run_as.is_none() && effective_uid() == 0 {
        return Err(SpawnError::Cage(
            "cages never run as root, and no other user was chosen for this one (a bug: report it)"
                .into(),
        ));
    }
    if let (Some(id), Some(socket)) = (request.run_as, request.launch.egress) {
        // The cage connects to its proxy as its own user: the socket and its run's own
        // directory become that user's (both stay out of reach by path, below the daemon's
        // private directory; the cage gets the directory by descriptor, read-only).
        for path in [socket, socket.parent().unwrap_or(socket)] {
            std::os::unix::fs::chown(path, Some(id.uid), Some(id.gid)).map_err(|e| {
                SpawnError::Cage(format!(
                    "cannot hand {} to the cage's user: {e}",
                    path.display()
                ))
            })?;
        }
    }
    if request.run_as.is_some() {
        facts::make_git_mount_point(request.root).map_err(SpawnError::Cage)?;
    }
    let mut sources = open_sources(
        request.root,
        request.helper,
        request.policy,
        request.launch.egress,
    )
    .map_err(SpawnError::Cage)?;
    let binds = facts::resolve_grants(request.root, request.grants).map_err(SpawnError::Cage)?;
    sources.host.system_submounts.extend(facts::submounts(
        &binds
            .iter()
            .map(|b| (b.dest.clone(), b.host.clone()))
            .collect::<Vec<_>>(),
    ));
    sources.host.binds = binds;
    // The program as the cage will see it: one that is only on kaged's PATH is refused here,
    // with the grant that makes it visible, rather than dying with 127 inside. The helper
    // (`kaged tool-exec`) is bound into every cage, so it needs no resolving.
    if let Some(program) = request
        .launch
        .command
        .first()
        .filter(|p| p.as_str() != kaged_cage::HELPER)
    {
        let operator_path: Vec<PathBuf> = std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).collect())
            .unwrap_or_default();
        kaged_cage::resolve_program(
            program,
            &kaged_cage::cage_path(&sources.host),
            &kaged_cage::View::of(&sources.host, request.root),
            &facts::RealFs,
            &operator_path,
            request.project,
        )
        .map_err(|e| SpawnError::Cage(e.to_string()))?;
    }
    let args = kaged_cage::compile(request.policy, &sources.host, &request.launch)
        .map_err(|e| SpawnError::Cage(e.to_string()))?;
    let programs = kaged_cage::profile_bpf(seccomp).map_err(|e| SpawnError::Cage(e.to_string()))?;
    let mut nul_separated = Vec::new();
    for arg in &args.options {
        nul_separated.extend_from_slice(arg.as_bytes());
        nul_separated.push(0);
    }
    let mut fds = vec![
        memory_file("kaged-seccomp", &programs.eperm)?,
        memory_file("kaged-seccomp-enosys", &programs.enosys)?,
        memory_file("kaged-bwrap-args", &nul_separated)?,
    ];
    fds.extend(sources.fds);
    let plan = kaged_cage::plan_limits(limits, request.default_limits, &limit_facts());
    let cgroups = if plan.cgroup.is_empty() {
        Cgroups::default()
    } else {
        Cgroups::create(request.name, &plan.cgroup)
            .map_err(|e| SpawnError::Cgroup(e.to_string()))?
    };
    Ok(CagedRun {
        spec: Spec {
            argv: args.command,
            cage: Some(CageFds(Arc::new(fds))),
            prefix: plan.prefix.clone(),
            rlimits: plan.rlimits.clone(),
            cgroup_procs: cgroups.procs_files(),
            cwd: None,
            env: Vec::new(),
            run_as: request.run_as,
        },
        cgroups,
        limits: plan,
    })
}
