//! `kaged cage run` and `kaged doctor`: the edge of `kaged-cage`.

use std::path::Path;

use kaged_cage::{Launch, Policy, policy_for, unenforced};

use crate::Failure;
use crate::cli::CageCommand;

pub fn doctor(mode: Option<kaged_config::DeploymentMode>) -> Result<(), Failure> {
    let checks = kaged_spawn::preflight();
    for check in &checks {
        match &check.outcome {
            Ok(detail) => println!("ok    {}: {detail}", check.name),
            Err(problem) => {
                let level = if check.required { "FAIL" } else { "warn" };
                println!("{level}  {}: {problem}", check.name);
                if let Some(fix) = &check.fix {
                    println!("      fix: {fix}");
                }
            }
        }
    }
    holders(mode);
    match kaged_spawn::sandbox_problem(&checks) {
        Some(_) => Err(Failure::Exit(1)),
        None => Ok(()),
    }
}

/// The run holders of each place a daemon may run: followed by the daemon running there, or
/// holding runs until the next start takes them up (never killed by kaged on its own).
fn holders(mode: Option<kaged_config::DeploymentMode>) {
    let Ok(places) = crate::client::holders_everywhere(mode) else {
        return;
    };
    for (dir, running, found) in places {
        let holders = kaged_server::holder_dir(&dir);
        match (found.len(), running) {
            (0, _) => println!("ok    run holders: none in {}", holders.display()),
            (n, true) => println!(
                "ok    run holders: {n} in {} (the daemon running there follows its own; `kaged status` lists any it does not know)",
                holders.display()
            ),
            (n, false) => {
                println!(
                    "warn  run holders: {n} in {} keep runs going with no daemon running",
                    holders.display()
                );
                for f in &found {
                    match &f.hello {
                        kaged_session::holder::HolderHello::Accepted(info) => println!(
                            "      session {} (pid {}, holder pid {}, {})",
                            info.id, info.pid, info.holder_pid, info.holder
                        ),
                        kaged_session::holder::HolderHello::Refused { versions, .. } => println!(
                            "      {} (speaks protocol versions {versions:?})",
                            f.socket.display()
                        ),
                    }
                }
                println!("      fix: `kaged start` takes them up; `kill HOLDER_PID` ends one");
            }
        }
    }
}

/// Who the cage over `root` runs as, said on stderr when it is not this user. The configuration
/// (`[sandbox] cage_user`) matters only to root.
fn run_as(
    root: &Path,
    settings: &kaged_config::Settings,
) -> Result<Option<kaged_cage::Identity>, Failure> {
    if kaged_spawn::effective_uid() != 0 {
        return Ok(None);
    }
    let Some(chosen) = kaged_spawn::run_as(root, &settings.cage_user).map_err(Failure::Config)?
    else {
        return Ok(None);
    };
    let who = kaged_spawn::describe_identity(chosen.identity);
    match chosen.because {
        kaged_cage::Because::ProjectOwner => {
            eprintln!(
                "kaged: the cage runs as {who}, the owner of {}",
                root.display()
            )
        }
        kaged_cage::Because::CageUser => eprintln!(
            "kaged: the cage runs as {who} ([sandbox] cage_user): {} is owned by root, and cages never run as root",
            root.display()
        ),
    }
    if !chosen.workspace_writable {
        eprintln!(
            "kaged: warning: {who} cannot write the workspace ({}); chown the project to the user who should own its files",
            root.display()
        );
    }
    Ok(Some(chosen.identity))
}

pub async fn run(
    command: CageCommand,
    mode: Option<kaged_config::DeploymentMode>,
) -> Result<(), Failure> {
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
    let Some(project) = checked.project() else {
        return Err(Failure::Config(format!(
            "{} has {} problem(s); run `kaged dsl validate {}`",
            base.display(),
            checked.diagnostics.len(),
            root.display()
        )));
    };
    let project = project.map_err(|e| Failure::Config(e.to_string()))?;
    let policy = policy_for(&project, &agent).map_err(|e| Failure::Config(e.to_string()))?;
    // The same configuration and local.toml grants as the daemon's sessions; the
    // configuration also gives a root daemon's cage user and every cage's default limits.
    let facts = crate::host::gather();
    let (_, settings, _) =
        crate::config_for_start(&facts, mode, None, kaged_config::FlagOverrides::default())?;
    let slug = project.slug.clone();
    let grants = kaged_server::grants_of(&crate::read_local(&facts, &settings)?, &slug);
    let settings = match &policy {
        Policy::Caged { .. } => Some(settings),
        Policy::Disabled => None,
    };
    let identity = match &settings {
        Some(settings) => run_as(&root, settings)?,
        None => None,
    };
    let default_limits = settings
        .as_ref()
        .map(kaged_server::default_limits)
        .unwrap_or_default();
    let mut env: Vec<(String, String)> = ["TERM", "COLORTERM"]
        .iter()
        .filter_map(|k| std::env::var(k).ok().map(|v| (k.to_string(), v)))
        .collect();
    env.sort();
    // local.toml's environment grants, values from this environment (on bwrap's argument
    // descriptor, never on a command line).
    for name in &grants.env {
        match std::env::var(name) {
            Ok(value) => env.push((name.clone(), value)),
            Err(_) => eprintln!(
                "kaged: warning: local.toml grants {name} to `{slug}`, but it is not set here; the command runs without it"
            ),
        }
    }
    // An allowlist gets its proxy for the life of the command; its decisions are printed.
    let egress_dir = kaged_spawn::private_dir("kaged-egress")
        .map_err(|e| Failure::Runtime(anyhow::anyhow!("cannot make a private directory: {e}")))?;
    let mut printer = None;
    let proxy = match &policy {
        Policy::Caged {
            network: kaged_cage::Network::Allow(hosts),
            ..
        } => {
            let (proxy, decisions) =
                kaged_egress::RunningProxy::start(&egress_dir.join("egress.sock"), hosts)
                    .map_err(|e| Failure::Config(e.to_string()))?;
            // The first distinct destinations in full, then summaries of the counts: a
            // command hammering its proxy does not bury the terminal.
            printer = Some(tokio::spawn(kaged_egress::aggregate(
                decisions,
                |report| async move {
                    match report {
                        kaged_egress::Report::Decision(d) => {
                            let verdict = if d.allowed { "allowed" } else { "REFUSED" };
                            eprintln!(
                                "kaged: egress {verdict}: {} {}:{} ({})",
                                d.method, d.host, d.port, d.reason
                            );
                        }
                        kaged_egress::Report::Summary(s) => eprintln!("kaged: egress {s}"),
                    }
                },
            )));
            Some(proxy)
        }
        _ => None,
    };
    // The cage's cgroups (if any) live until the command has ended.
    let mut _cgroups = None;
    let mut wall_time = None;
    let mut max_processes = None;
    let spec = match &policy {
        Policy::Disabled => {
            eprintln!(
                "kaged: warning: the cage of `{agent}` is disabled; running uncaged as this user"
            );
            kaged_spawn::Spec::uncaged(command.clone(), root.clone(), &env)
        }
        Policy::Caged { .. } => {
            let run = kaged_spawn::caged(&kaged_spawn::CageRequest {
                root: &root,
                helper: Path::new("/proc/self/exe"),
                policy: &policy,
                default_limits: &default_limits,
                launch: Launch {
                    cwd: Path::new(""),
                    command: &command,
                    env: &env,
                    own_terminal: false,
                    egress: proxy.as_ref().map(|p| p.socket()),
                },
                name: &format!("run-{}", std::process::id()),
                run_as: identity,
                project: &slug,
                grants: &grants.paths,
            })
            .map_err(|e| match e {
                kaged_spawn::SpawnError::Cage(problem) => Failure::Config(problem),
                other => Failure::Runtime(other.into()),
            })?;
            for missing in unenforced(&policy, proxy.is_some())
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
    let exit = tokio::task::spawn_blocking(move || {
        kaged_spawn::run_foreground(&spec, wall_time, max_processes)
    })
    .await
    .map_err(|e| Failure::Runtime(e.into()))?
    .map_err(|e| Failure::Runtime(e.into()))?;
    drop(proxy);
    if let Some(printer) = printer {
        // The final summary, once the stopped proxy's queue has drained.
        let _ = tokio::time::timeout(std::time::Duration::from_secs(10), printer).await;
    }
    let _ = std::fs::remove_dir_all(&egress_dir);
    match exit.code() {
        0 => Ok(()),
        code => Err(Failure::Exit(u8::try_from(code).unwrap_or(1))),
    }
}

/// `kaged cage-tty -- CMD`, the first process inside a cage on a kaged PTY: put itself in a
/// process group of its own, make that the terminal's foreground group, then become CMD.
/// The PTY's session leader is outside the cage's PID namespace, so without this a shell sees
/// no foreground group (0) and fails to restore it when it exits (dash exits 2).
pub fn tty_then_exec(command: &[String]) -> std::io::Error {
    use nix::sys::signal::{SigSet, SigmaskHow, Signal, sigprocmask};
    // A background group asking for the terminal gets SIGTTOU unless it is blocked.
    let mut ttou = SigSet::empty();
    ttou.add(Signal::SIGTTOU);
    let _ = sigprocmask(SigmaskHow::SIG_BLOCK, Some(&ttou), None);
    let me = nix::unistd::Pid::from_raw(0);
    if nix::unistd::setpgid(me, me).is_ok() {
        let _ = nix::unistd::tcsetpgrp(std::io::stdin(), nix::unistd::getpgrp());
    }
    let _ = sigprocmask(SigmaskHow::SIG_UNBLOCK, Some(&ttou), None);
    exec(command)
}

/// Become `command` (returns only on failure).
pub fn exec(command: &[String]) -> std::io::Error {
    use std::os::unix::process::CommandExt;
    let Some((program, args)) = command.split_first() else {
        return std::io::Error::other("no command");
    };
    std::process::Command::new(program).args(args).exec()
}
