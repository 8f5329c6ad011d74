//! `kaged cage run` and `kaged doctor`: the edge of `kaged-cage`.

use std::path::Path;
use std::process::Command;

use kaged_cage::{Host, Launch, Policy, SYSTEM_DIRS, compile, policy_for, unenforced};

use crate::Failure;
use crate::cli::CageCommand;

const BWRAP: &str = "bwrap";

/// Can this user build a minimal cage right now?
fn userns_works() -> Result<(), String> {
    let out = Command::new(BWRAP)
        .args([
            "--unshare-user",
            "--unshare-pid",
            "--ro-bind",
            "/",
            "/",
            "--proc",
            "/proc",
            "true",
        ])
        .output()
        .map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
    }
}

pub fn doctor() -> Result<(), Failure> {
    let mut failed = false;
    match kaged_spawn::bwrap_version() {
        Some(v) => println!("ok    {v}"),
        None => {
            failed = true;
            println!(
                "FAIL  bubblewrap (bwrap) is not installed\n      fix: sudo apt-get install bubblewrap   (Fedora: sudo dnf install bubblewrap)"
            );
        }
    }
    if !failed {
        match userns_works() {
            Ok(()) => println!("ok    unprivileged user namespaces (a test cage started)"),
            Err(why) => {
                failed = true;
                let apparmor = std::fs::read_to_string(
                    "/proc/sys/kernel/apparmor_restrict_unprivileged_userns",
                )
                .map(|v| v.trim() == "1")
                .unwrap_or(false);
                let fix = if apparmor {
                    "Ubuntu's AppArmor blocks unprivileged user namespaces: sudo sysctl kernel.apparmor_restrict_unprivileged_userns=0 (or install an AppArmor profile for bwrap)"
                } else {
                    "enable them: sudo sysctl kernel.unprivileged_userns_clone=1 and user.max_user_namespaces=10000"
                };
                println!("FAIL  a test cage could not start: {why}\n      fix: {fix}");
            }
        }
    }
    let delegated = std::fs::read_to_string("/sys/fs/cgroup/cgroup.controllers").is_ok()
        && Command::new("systemd-run")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
        && std::env::var_os("DBUS_SESSION_BUS_ADDRESS").is_some();
    if delegated {
        println!(
            "ok    cgroup v2 with a systemd user session (limits through systemd-run --user --scope)"
        );
    } else {
        println!(
            "warn  no systemd user session with cgroup delegation: limits would fall back to rlimits\n      fix: run kaged under `systemctl --user` (loginctl enable-linger \"$USER\")"
        );
    }
    if failed {
        Err(Failure::Exit(1))
    } else {
        Ok(())
    }
}

pub fn run(command: CageCommand) -> Result<(), Failure> {
    let CageCommand::Run {
        project,
        agent,
        command,
    } = command;
    let root = std::fs::canonicalize(&project)
        .map_err(|e| Failure::Config(format!("{}: {e}", project.display())))?;
    let (base, local_path) = kaged_server::project_files(&root);
    let (text, local) = kaged_server::read_project_texts(&base, &local_path)
        .map_err(|e| Failure::Config(e.message))?;
    let checked = kaged_dsl::load_project(&text, local.as_deref());
    let Some(config) = checked.resolved() else {
        return Err(Failure::Config(format!(
            "{} has {} problem(s); run `kaged dsl validate {}`",
            base.display(),
            checked.diagnostics.len(),
            root.display()
        )));
    };
    let policy = policy_for(&config, &agent).map_err(|e| Failure::Config(e.to_string()))?;
    let mut env: Vec<(String, String)> = ["TERM", "COLORTERM"]
        .iter()
        .filter_map(|k| std::env::var(k).ok().map(|v| (k.to_string(), v)))
        .collect();
    env.sort();
    let host = Host {
        system_dirs: SYSTEM_DIRS
            .iter()
            .filter(|d| Path::new(d).exists())
            .map(|d| d.to_string())
            .collect(),
        has_git: root.join(".git").is_dir(),
        has_kaged: root.join(".kaged").is_dir(),
    };
    let launch = Launch {
        project_root: &root,
        cwd: Path::new(""),
        command: &command,
        env: &env,
        own_terminal: false,
        egress: None,
    };
    let argv = compile(&policy, &host, &launch).map_err(|e| Failure::Config(e.to_string()))?;
    // The cage's cgroups (if any) live until the command has ended.
    let mut _cgroups = None;
    let mut wall_time = None;
    let mut max_processes = None;
    let spec = match &policy {
        Policy::Disabled => {
            eprintln!(
                "kaged: warning: the cage of `{agent}` is disabled; running uncaged as this user"
            );
            kaged_spawn::Spec {
                argv,
                seccomp_bpf: None,
                prefix: Vec::new(),
                rlimits: Vec::new(),
                cgroup_procs: Vec::new(),
                cwd: Some(root.clone()),
                env: uncaged_env(&env),
            }
        }
        Policy::Caged {
            seccomp, limits, ..
        } => {
            if kaged_spawn::bwrap_version().is_none() {
                return Err(Failure::Runtime(kaged_spawn::SpawnError::NoBwrap.into()));
            }
            let bpf =
                kaged_cage::profile_bpf(seccomp).map_err(|e| Failure::Config(e.to_string()))?;
            let name = format!("run-{}", std::process::id());
            let run = kaged_spawn::caged(argv, bpf, limits, &name)
                .map_err(|e| Failure::Runtime(e.into()))?;
            for missing in unenforced(&policy, false)
                .into_iter()
                .chain(run.limits.unenforced.iter().cloned())
            {
                eprintln!("kaged: warning: not enforced: {missing}");
            }
            wall_time = run
                .limits
                .wall_time_secs
                .map(std::time::Duration::from_secs);
            max_processes = run.limits.watchdog_pids;
            _cgroups = Some(run.cgroups);
            run.spec
        }
    };
    let exit = kaged_spawn::run_foreground(&spec, wall_time, max_processes)
        .map_err(|e| Failure::Runtime(e.into()))?;
    match exit.code() {
        0 => Ok(()),
        code => Err(Failure::Exit(u8::try_from(code).unwrap_or(1))),
    }
}

/// The environment of an uncaged run: what a caged one gets, with the daemon user's own
/// PATH, HOME and USER (nothing else of the daemon's environment).
pub fn uncaged_env(granted: &[(String, String)]) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = ["PATH", "HOME", "USER", "LANG"]
        .iter()
        .filter_map(|k| std::env::var(k).ok().map(|v| (k.to_string(), v)))
        .collect();
    env.extend(granted.iter().cloned());
    env
}
