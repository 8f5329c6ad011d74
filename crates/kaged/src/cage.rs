//! `kaged cage run` and `kaged doctor`: the edge of `kaged-cage`.

use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::Command;

use anyhow::anyhow;
use kaged_cage::{Host, Launch, Policy, SYSTEM_DIRS, compile, policy_for, unenforced};

use crate::Failure;
use crate::cli::CageCommand;

const BWRAP: &str = "bwrap";

fn bwrap_version() -> Option<String> {
    let out = Command::new(BWRAP).arg("--version").output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

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
    match bwrap_version() {
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

/// Write a seccomp program to a private file (0600 in a fresh 0700 directory).
fn write_seccomp(bpf: &[u8]) -> anyhow::Result<std::path::PathBuf> {
    use std::io::Write;
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    let mut random = [0u8; 8];
    getrandom::fill(&mut random).map_err(|e| anyhow!("no randomness: {e}"))?;
    let dir = std::env::temp_dir().join(format!("kaged-seccomp-{}", hex::encode(random)));
    std::fs::DirBuilder::new().mode(0o700).create(&dir)?;
    let path = dir.join("filter.bpf");
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)?
        .write_all(bpf)?;
    Ok(path)
}

/// `bwrap ARGV` with the seccomp program open on the fd the argv names (a shell opens it:
/// std cannot hand a child an extra descriptor without unsafe code).
fn bwrap_with_seccomp(argv: &[String], bpf: &Path) -> Command {
    let mut c = Command::new("/bin/sh");
    c.arg("-c")
        .arg(format!(
            "exec {BWRAP} \"$@\" {}< \"$0\"",
            kaged_cage::SECCOMP_FD
        ))
        .arg(bpf)
        .args(argv);
    c
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
    };
    let argv = compile(&policy, &host, &launch).map_err(|e| Failure::Config(e.to_string()))?;
    // The seccomp program's private file, removed once the cage has run.
    let mut seccomp_file: Option<std::path::PathBuf> = None;
    let mut cmd = match &policy {
        Policy::Disabled => {
            eprintln!(
                "kaged: warning: the cage of `{agent}` is disabled; running uncaged as this user"
            );
            let mut c = Command::new(&argv[0]);
            c.args(&argv[1..]).current_dir(&root);
            c
        }
        Policy::Caged { seccomp, .. } => {
            if bwrap_version().is_none() {
                return Err(Failure::Runtime(anyhow!(
                    "bubblewrap (bwrap) is not installed, so no cage can be built and nothing runs uncaged; install it (sudo apt-get install bubblewrap), then see `kaged doctor`"
                )));
            }
            for missing in unenforced(&policy) {
                eprintln!("kaged: warning: not enforced: {missing}");
            }
            let bpf =
                kaged_cage::profile_bpf(seccomp).map_err(|e| Failure::Config(e.to_string()))?;
            let file = write_seccomp(&bpf).map_err(Failure::Runtime)?;
            let cmd = bwrap_with_seccomp(&argv, &file);
            seccomp_file = Some(file);
            cmd
        }
    };
    let status = cmd.status();
    if let Some(dir) = seccomp_file.as_deref().and_then(Path::parent) {
        let _ = std::fs::remove_dir_all(dir);
    }
    let status = status.map_err(|e| Failure::Runtime(anyhow!("cannot start the cage: {e}")))?;
    match (status.code(), status.signal()) {
        (Some(0), _) => Ok(()),
        (Some(code), _) => Err(Failure::Exit(u8::try_from(code).unwrap_or(1))),
        (None, Some(sig)) => Err(Failure::Exit(u8::try_from(128 + sig).unwrap_or(1))),
        (None, None) => Err(Failure::Exit(1)),
    }
}
