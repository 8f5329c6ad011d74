//! The `kaged` binary: command-line glue over the workspace crates.

mod cage;
mod cli;
mod client;
mod daemon;
mod dsl;
mod host;
mod logging;
mod plugin;
mod runtime;
mod session;
mod storage;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::ExitCode;

use clap::Parser;
use kaged_config::{
    DeploymentMode, Facts, FlagOverrides, ModeDecision, Settings, decide_mode,
    render_default_config, resolve,
};

use crate::cli::{AuthCommand, Cli, Command, JsonOutput};

/// How a command failed, which decides the exit code.
pub enum Failure {
    /// Bad usage or configuration (exit 2).
    Config(String),
    /// No daemon to talk to (exit 3).
    NotRunning(String),
    /// Anything else (exit 1).
    Runtime(anyhow::Error),
    /// Exit with this status (a caged command's own).
    Exit(u8),
}

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Self {
        Failure::Runtime(e)
    }
}

/// Mode, settings, and (on a first per-user launch) the config file text to write.
/// `local.toml` (next to the configuration, or in `$KAGED_CONFIG_DIR`), empty when absent.
pub fn read_local(
    facts: &Facts,
    settings: &kaged_config::Settings,
) -> Result<kaged_config::LocalConfig, Failure> {
    let path = kaged_config::local_config_path(&facts.env, &settings.config_file);
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            kaged_config::parse_local(&path, &text).map_err(|e| Failure::Config(e.to_string()))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Ok(kaged_config::LocalConfig::default())
        }
        Err(e) => Err(Failure::Config(format!(
            "cannot read {}: {e}",
            path.display()
        ))),
    }
}

pub fn config_for_start(
    facts: &Facts,
    mode_flag: Option<DeploymentMode>,
    config_override: Option<&Path>,
    flags: FlagOverrides,
) -> Result<(ModeDecision, Settings, Option<String>), Failure> {
    let decision = decide_mode(facts, mode_flag).map_err(|e| Failure::Config(e.to_string()))?;
    let path = config_override
        .map(Path::to_path_buf)
        .unwrap_or_else(|| decision.paths.config_file.clone());
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => Some(t),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && config_override.is_none() => None,
        Err(e) => {
            return Err(Failure::Config(format!(
                "cannot read config file {}: {e}",
                path.display()
            )));
        }
    };
    let env: BTreeMap<String, String> = std::env::vars()
        .filter(|(k, _)| k.starts_with("KAGED_"))
        .collect();
    let settings = resolve(&decision, &path, text.as_deref(), &env, &flags)
        .map_err(|e| Failure::Config(e.to_string()))?;
    let first_launch = (text.is_none() && decision.mode == DeploymentMode::User)
        .then(|| {
            // The file gets the mode's defaults, not this run's flags and variables.
            resolve(
                &decision,
                &path,
                None,
                &BTreeMap::new(),
                &FlagOverrides::default(),
            )
            .ok()
            .map(|defaults| render_default_config(&defaults))
        })
        .flatten();
    Ok((decision, settings, first_launch))
}

/// `kaged tool-exec`, inside a model agent's cage: its own small runtime, none of the
/// daemon's machinery. Ends when stdin does (every running call with it).
fn tool_exec(only: Option<&str>) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("kaged: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let enabled = only.map(|list| {
        list.split(',')
            .filter(|t| !t.is_empty())
            .map(String::from)
            .collect()
    });
    let served = runtime.block_on(kaged_tools::serve(
        tokio::io::stdin(),
        tokio::io::stdout(),
        enabled,
    ));
    // Nothing is waited for: a read of stdin may still be blocked in its thread.
    runtime.shutdown_background();
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kaged: tool-exec: {e}");
            ExitCode::from(1)
        }
    }
}

/// `kaged acp-shim -- AGENT…`, inside an ACP agent's cage: its own small runtime, none of
/// the daemon's machinery. Exits with the agent's exit code (127: it could not be started).
fn acp_shim(command: &[String]) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("kaged: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let ran = runtime.block_on(kaged_tools::acp::run_shim(
        command,
        tokio::io::stdin(),
        tokio::io::stdout(),
    ));
    // Nothing is waited for: a read of stdin may still be blocked in its thread.
    runtime.shutdown_background();
    match ran {
        Ok(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        Err(e) => {
            eprintln!("kaged: acp-shim: {e}");
            ExitCode::from(127)
        }
    }
}

/// Exit status of a cage whose check failed (nothing of the command ran).
const CAGE_REFUSED: u8 = 126;

fn main() -> ExitCode {
    // Nothing this process inherited reaches what it starts (cages above all).
    kaged_spawn::mark_inherited_cloexec();
    let cli = Cli::parse();
    if let Command::CageCheck {
        expect,
        mount,
        host_mount,
        command,
    } = &cli.command
    {
        if let Err(problem) = kaged_spawn::cage_check(expect, mount, host_mount) {
            eprintln!("kaged: cage refused: {problem}");
            return ExitCode::from(CAGE_REFUSED);
        }
        let e = cage::exec(command);
        eprintln!(
            "kaged: cannot run {}: {e}",
            command.first().map_or("", String::as_str)
        );
        return ExitCode::from(127);
    }
    if let Command::CageTty { command } = &cli.command {
        let e = cage::tty_then_exec(command);
        eprintln!(
            "kaged: cannot run {}: {e}",
            command.first().map_or("", String::as_str)
        );
        return ExitCode::from(127);
    }
    // Runs inside a cage: its own small runtime, none of the daemon's machinery.
    if let Command::CageBridge {
        listen,
        socket,
        command,
    } = &cli.command
    {
        return match kaged_egress::run_bridge_then(*listen, socket.clone(), command) {
            Ok(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
            Err(e) => {
                eprintln!("kaged: cage bridge: {e}");
                // The shell's convention for a command that cannot run.
                match e {
                    kaged_egress::BridgeError::Spawn { .. } => ExitCode::from(127),
                    _ => ExitCode::from(1),
                }
            }
        };
    }
    // A run holder: one thread and one poll loop, no async runtime.
    if let Command::RunHolder { spec_fd, ready_fd } = &cli.command {
        let code = kaged_holder::run_holder(*spec_fd, *ready_fd);
        return ExitCode::from(u8::try_from(code).unwrap_or(1));
    }
    if let Command::ToolExec { tools } = &cli.command {
        return tool_exec(tools.as_deref());
    }
    if let Command::AcpShim { command } = &cli.command {
        return acp_shim(command);
    }
    let mode = cli.mode.map(DeploymentMode::from);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("kaged: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Start(args) => daemon::run(args, mode).await,
            Command::Status {
                output: JsonOutput { json },
            } => client::status(mode, json).await,
            Command::Stop { kill_runs, timeout } => client::stop(mode, kill_runs, timeout).await,
            Command::Auth(AuthCommand::Nonce) => client::nonce(mode),
            Command::Auth(AuthCommand::Open { no_browser, ttl }) => {
                client::open(mode, no_browser, ttl).await
            }
            Command::Tokens(command) => client::tokens(mode, command).await,
            Command::Approvals(command) => client::approvals(mode, command).await,
            Command::Acp { project, agent } => client::acp(mode, project, agent).await,
            Command::Dsl(command) => dsl::run(command),
            Command::Plugin(command) => plugin::run(command, mode).await,
            Command::Project(command) => client::project(mode, command).await,
            Command::Session(command) => session::run(mode, command).await,
            Command::Cage(command) => cage::run(command, mode).await,
            Command::CageBridge { .. }
            | Command::CageTty { .. }
            | Command::CageCheck { .. }
            | Command::ToolExec { .. }
            | Command::RunHolder { .. }
            | Command::AcpShim { .. } => Ok(()),
            Command::Doctor => cage::doctor(mode),
            Command::Storage(command) => storage::run(command, mode).await,
            Command::Version => {
                println!(
                    "kaged {} (database schema {})",
                    env!("CARGO_PKG_VERSION"),
                    kaged_store::LATEST_SCHEMA
                );
                Ok(())
            }
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Config(msg)) => {
            eprintln!("kaged: {msg}");
            ExitCode::from(2)
        }
        Err(Failure::NotRunning(msg)) => {
            eprintln!("kaged: {msg}");
            ExitCode::from(3)
        }
        Err(Failure::Exit(code)) => ExitCode::from(code),
        Err(Failure::Runtime(e)) => {
            eprintln!("kaged: {e:#}");
            ExitCode::from(1)
        }
    }
}
