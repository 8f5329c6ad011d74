//! ACP agents: a command agent with `protocol: acp` speaks the Agent Client Protocol
//! (JSON-RPC 2.0, one message a line) on stdio instead of drawing a terminal. Its run is on
//! pipes: the cage's command is the in-cage shim in front of the agent
//! (`kaged acp-shim -- ARGV…`), which carries out the agent's `fs/*` and `terminal/*` requests
//! inside the cage (so the cage's view decides, never the daemon's own file access) and tells
//! kaged about each. kaged is the agent's ACP client (`client.rs`); its session is a
//! conversation like a model agent's: operator messages become prompts, `session/update`s
//! become the same event log records (`translate.rs`), and permission requests become kaged
//! approvals.

mod client;
mod note;
mod permission;
mod translate;

use std::path::PathBuf;
use std::sync::Arc;

use kaged_dsl::Project;

use super::Sessions;
use super::conversation::Control;
use super::conversation::runner::PipedLoop;
use super::runner::Runner;

/// The in-cage shim's subcommand of the kaged binary.
pub(crate) const SHIM: &str = "acp-shim";

/// What an ACP agent's run is started with.
#[derive(Debug, Clone)]
pub(crate) struct AcpSetup {
    pub agent: String,
}

impl AcpSetup {
    /// The setup of agent `name` of `project` when it is a command agent speaking ACP.
    pub(crate) fn of(project: &Project, name: &str) -> Option<AcpSetup> {
        project
            .agent(name)
            .filter(|a| a.speaks_acp())
            .map(|_| AcpSetup {
                agent: name.to_string(),
            })
    }

    /// The cage's command: the shim (`program` is kaged's path where the command runs) in
    /// front of the agent's own.
    pub(crate) fn command(program: &str, agent: &[String]) -> Vec<String> {
        let mut command = vec![program.to_string(), SHIM.to_string(), "--".to_string()];
        command.extend(agent.iter().cloned());
        command
    }
}

impl Runner {
    /// The whole life of an ACP agent's run: in a run holder when kaged has them (the agent
    /// then outlives the daemon), else on the daemon's own pipes.
    pub(crate) fn run_acp(self, setup: AcpSetup, control: Arc<Control>) {
        let make = move |runner: &Runner| -> PipedLoop {
            let d = &runner.decided;
            // Where the agent works, as it sees it: the project in its cage.
            let cwd = match d.uncaged_because {
                Some(_) => d.root.join(&d.plan.cwd),
                None => PathBuf::from(kaged_cage::WORKSPACE).join(&d.plan.cwd),
            };
            let agent = d.model.agent(&setup.agent);
            let client = client::AcpClient {
                sessions: runner.sessions.clone(),
                id: runner.live.id().to_string(),
                slug: d.project.clone(),
                owner: runner.live.info().created_by.clone(),
                tools: agent.and_then(|a| a.tools.clone()).unwrap_or_default(),
                mode: agent.and_then(|a| a.mode.clone()),
                name: setup.agent,
                control,
                cwd,
            };
            Box::new(move |from, to, ended, link| Box::pin(client.run(from, to, ended, link, None)))
        };
        match self.sessions.deps().settings.holders.clone() {
            Some(holders) => self.run_held_piped(&holders, "ACP agent", make),
            None => self.run_piped("ACP agent", make),
        }
    }
}

/// An ACP agent's run taken up again: its conversation's controls, the loop that goes on
/// from the earlier daemon's note, and the output offset it reads from.
pub(crate) struct Resumed {
    pub control: Arc<Control>,
    pub talk: PipedLoop,
    pub from: u64,
}

/// Go on with the ACP agent of session `row` from the `note` an earlier daemon left in its
/// holder; why not, when it cannot.
pub(crate) fn resume(
    sessions: &Sessions,
    row: &kaged_store::SessionRecord,
    note: Option<&str>,
) -> Result<Resumed, String> {
    let note = note.ok_or("its holder has no note from the earlier kaged")?;
    let note: note::AcpNote =
        serde_json::from_str(note).map_err(|e| format!("its note does not read: {e}"))?;
    if note.session.is_none() {
        return Err("the agent had not started its ACP session yet".into());
    }
    let control = Arc::new(Control::default());
    let from = note.handled;
    let client = client::AcpClient::from_note(sessions.clone(), row, control.clone(), &note);
    Ok(Resumed {
        control,
        talk: Box::new(move |from, to, ended, link| {
            Box::pin(client.run(from, to, ended, link, Some(note)))
        }),
        from,
    })
}
