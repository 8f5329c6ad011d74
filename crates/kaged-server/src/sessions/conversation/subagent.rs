//! Subagents: each model subagent of an agent is offered to it as the tool `agent.NAME`
//! (`{"task": "…"}`). A call runs the subagent's own loop (`turn.rs`, its records under the
//! parent's call id) with its own model, in a cage of its own compiled from its own `cage:`,
//! whose tool executor lives for the call: it is killed when the call ends or is aborted.

use std::path::PathBuf;

use kaged_cage::{Launch, Policy};
use kaged_dsl::Project;
use kaged_llm::ToolSpec;
use kaged_tools::ToolExecutor;
use serde_json::json;

use super::Setup;
use crate::sessions::Sessions;

/// The tool name prefix of subagents.
pub(crate) const PREFIX: &str = "agent.";

/// What a session's subagent cages share with its own.
#[derive(Clone)]
pub(crate) struct CageBase {
    pub project: Project,
    pub slug: String,
    pub root: PathBuf,
    pub run_as: Option<kaged_cage::Identity>,
    pub granted_env: Vec<(String, String)>,
    pub granted_paths: Vec<kaged_cage::HostPath>,
    /// The session's id (names the subagents' cgroups, with a counter).
    pub session: String,
}

/// Where a run numbers its subagents' cages from: random, so a run after a restart never
/// takes the cgroup name of a cage the earlier run left behind (the start-up sweep removes
/// those, but a run may start before a dying cage's cgroup is gone).
pub(crate) fn first_number() -> u64 {
    let mut bytes = [0u8; 4];
    match getrandom::fill(&mut bytes) {
        Ok(()) => u64::from(u32::from_le_bytes(bytes)) << 16,
        Err(_) => crate::audit::now_ms().unsigned_abs() << 16,
    }
}

/// The tools for the model subagents of `setup`'s agent.
pub(crate) fn specs(project: &Project, setup: &Setup) -> Vec<ToolSpec> {
    let Some(agent) = project.agent(&setup.agent) else {
        return Vec::new();
    };
    agent
        .subagents
        .iter()
        .filter(|(name, a)| {
            a.model.is_some()
                && agent.approval_of(&format!("{PREFIX}{name}")) != kaged_dsl::Approval::Deny
        })
        .map(|(name, a)| ToolSpec {
            name: format!("{PREFIX}{name}"),
            description: format!(
                "Hand a task to the subagent `{name}`{}. It works on its own, with its own tools, and answers with its final message.",
                a.description
                    .as_deref()
                    .map(|d| format!(" ({d})"))
                    .unwrap_or_default()
            ),
            parameters: json!({
                "type": "object",
                "properties": {"task": {"type": "string", "description": "what the subagent is to do, with everything it needs to know"}},
                "required": ["task"],
                "additionalProperties": false
            }),
        })
        .collect()
}

/// A subagent's executor in its cage; the cage is killed when this is dropped.
pub(crate) struct SubCage {
    pub executor: ToolExecutor,
    killer: Option<kaged_spawn::Killer>,
}

impl Drop for SubCage {
    fn drop(&mut self) {
        self.executor.close();
        if let Some(k) = &self.killer {
            k.kill();
        }
    }
}

/// Start the tool executor of subagent `setup` in its own cage (`n` numbers the session's
/// subagent cages). The process lives on a thread of its own, which reaps it.
pub(crate) async fn start(
    sessions: &Sessions,
    base: &CageBase,
    setup: &Setup,
    n: u64,
) -> Result<SubCage, String> {
    let settings = &sessions.deps().settings;
    let policy = kaged_cage::policy_for(&base.project, &setup.agent).map_err(|e| e.to_string())?;
    let caged = !settings.sandbox_disabled && !matches!(policy, Policy::Disabled);
    if let Policy::Caged {
        network: kaged_cage::Network::Allow(_),
        ..
    } = &policy
        && caged
    {
        return Err(format!(
            "subagent `{}` has a network allowlist; kaged does not run a subagent's own egress proxy yet: give it `network: none` or `host`, or make it a session of its own",
            setup.agent
        ));
    }
    let spec = if caged {
        let command = setup.command(kaged_cage::HELPER);
        let env = vec![("TERM".to_string(), "dumb".to_string())]
            .into_iter()
            .chain(base.granted_env.iter().cloned())
            .collect::<Vec<_>>();
        let helper = settings
            .helper
            .clone()
            .unwrap_or_else(|| PathBuf::from("/proc/self/exe"));
        let name = format!("{}-s{n:x}", crate::sessions::run_name(&base.session));
        let run = kaged_spawn::caged(&kaged_spawn::CageRequest {
            root: &base.root,
            helper: &helper,
            policy: &policy,
            default_limits: &settings.default_limits,
            launch: Launch {
                cwd: std::path::Path::new(""),
                command: &command,
                env: &env,
                own_terminal: false,
                egress: None,
            },
            name: &name,
            run_as: base.run_as,
            project: &base.slug,
            grants: &base.granted_paths,
        })
        .map_err(|e| e.to_string())?;
        (run.spec, run.cgroups)
    } else {
        let exe = settings
            .helper
            .clone()
            .or_else(|| std::env::current_exe().ok())
            .unwrap_or_else(|| PathBuf::from("/proc/self/exe"));
        let command = setup.command(&exe.to_string_lossy());
        (
            kaged_spawn::Spec::uncaged(command, base.root.clone(), &base.granted_env),
            Default::default(),
        )
    };
    let (tx, rx) = tokio::sync::oneshot::channel();
    let id = format!("{}-s{n}", base.session);
    crate::sessions::panics::spawn(
        "sub",
        &id,
        move || {
            let (spec, cgroups) = spec;
            match kaged_spawn::spawn_piped(&spec) {
                Ok(run) => {
                    let kaged_spawn::PipedRun {
                        stdin,
                        stdout,
                        stderr,
                        killer,
                        waiter,
                    } = run;
                    let _ = tx.send(Ok((stdin, stdout, killer)));
                    // Drained so a chatty executor never blocks; the parent's log has enough.
                    let _ = std::io::copy(&mut { stderr }, &mut std::io::sink());
                    waiter.wait();
                }
                Err(e) => {
                    let _ = tx.send(Err(e.to_string()));
                }
            }
            drop(cgroups);
        },
        |_| {},
    )
    .map_err(|e| format!("cannot start the subagent's thread: {e}"))?;
    let (stdin, stdout, killer) = rx
        .await
        .map_err(|_| "the subagent's cage did not start".to_string())??;
    let to = tokio::net::unix::pipe::Sender::from_owned_fd(stdin.into());
    let from = tokio::net::unix::pipe::Receiver::from_owned_fd(stdout.into());
    match (from, to) {
        (Ok(from), Ok(to)) => Ok(SubCage {
            executor: ToolExecutor::new(from, to),
            killer: Some(killer),
        }),
        (Err(e), _) | (_, Err(e)) => {
            killer.kill();
            Err(format!("cannot speak to the subagent's executor: {e}"))
        }
    }
}
