//! A conversation's run, on a thread of its own like a PTY run's (`kaged-run-ID`; the
//! executor dies with it): the egress proxy, the cage, the tool executor on pipes, then the
//! agent loop as a task, and the end.
//!
//! ```text
//! thread kaged-run-ID (Runner::run_conversation)
//!  |-- egress proxy, cage, spawn_piped([kaged, tool-exec, --tools …]) --> Killer in Live
//!  |-- thread kaged-err-ID: the executor's stderr --> kaged's log (a bounded amount)
//!  |-- task: Conversation::run (turn.rs) <-- Control (messages, abort) <-- routes
//!  |      model calls (kaged-llm, from the daemon) / tool calls --> executor's stdin/stdout
//!  `-- wait (reap) --> `ended` --> the loop closes its turn --> Exit transition
//! ```

use std::sync::Arc;

use super::subagent::{self, CageBase};
use super::turn::Conversation;
use super::{Control, Setup};
use crate::sessions::runner::Runner;

/// Lines of an executor's stderr copied to kaged's log, at most.
const STDERR_LINES: usize = 200;

/// The loop that speaks to a piped run: it reads the run's stdout, writes its stdin, and ends
/// its work when the watch flips (the run ended). A run in a holder comes with its link
/// (where the output read starts, notes for the next daemon, whether this one lets go).
pub(crate) type PipedLoop = Box<
    dyn FnOnce(
            tokio::net::unix::pipe::Receiver,
            tokio::net::unix::pipe::Sender,
            tokio::sync::watch::Receiver<bool>,
            Option<crate::sessions::HeldLink>,
        ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>
        + Send,
>;

impl Runner {
    /// The whole life of a conversation's run.
    pub(crate) fn run_conversation(self, setup: Setup, control: Arc<Control>) {
        self.run_piped("tool executor", move |runner| {
            let d = &runner.decided;
            let id = runner.live.id().to_string();
            let conversation = Conversation {
                sessions: runner.sessions.clone(),
                id: id.clone(),
                root: d.root.clone(),
                setup,
                control,
                owner: runner.live.info().created_by.clone(),
                base: CageBase {
                    project: d.model.clone(),
                    slug: d.project.clone(),
                    root: d.root.clone(),
                    run_as: d.run_as.map(|r| r.identity),
                    granted_env: d.granted_env.clone(),
                    granted_paths: d.granted_paths.clone(),
                    session: id,
                },
                subagents: std::sync::atomic::AtomicU64::new(subagent::first_number()),
                log: Default::default(),
            };
            // The agent loop lives in kaged: its executor is not held (it ends with kaged).
            Box::new(move |from, to, ended, _| {
                Box::pin(async move {
                    let executor = kaged_tools::ToolExecutor::new(from, to);
                    conversation.run(executor, ended).await;
                })
            })
        });
    }

    /// A run on pipes (no PTY): the cage's command spawned with its stdin and stdout given to
    /// the loop `make` builds (a task), its stderr copied to kaged's log (`what` names it
    /// there), and the end once the process is reaped and the loop has closed its turn.
    pub(crate) fn run_piped(self, what: &'static str, make: impl FnOnce(&Runner) -> PipedLoop) {
        let Some((egress, prepared)) = self.prepare() else {
            return;
        };
        let run = match kaged_spawn::spawn_piped(&prepared.spec) {
            Ok(r) => r,
            Err(e) => return self.fail(e.to_string()),
        };
        let kaged_spawn::PipedRun {
            stdin,
            stdout,
            stderr,
            killer,
            waiter,
        } = run;
        self.spawned(&killer, prepared.limits.as_ref());
        let id = self.live.id().to_string();
        let _ = crate::sessions::panics::spawn(
            "err",
            &id,
            {
                let id = id.clone();
                move || log_stderr(&id, what, stderr)
            },
            |_| {},
        );
        let (ended_tx, ended_rx) = tokio::sync::watch::channel(false);
        let talk = make(&self);
        let stdin: std::os::fd::OwnedFd = stdin.into();
        let stdout: std::os::fd::OwnedFd = stdout.into();
        let task = self.handle.spawn(async move {
            let to = tokio::net::unix::pipe::Sender::from_owned_fd(stdin);
            let from = tokio::net::unix::pipe::Receiver::from_owned_fd(stdout);
            match (from, to) {
                (Ok(from), Ok(to)) => talk(from, to, ended_rx, None).await,
                (Err(e), _) | (_, Err(e)) => {
                    tracing::error!(session = %id, error = %e, "cannot speak to the {what}");
                }
            }
        });
        let exit = waiter.wait();
        let _ = ended_tx.send(true);
        // The loop records the end of its turn before the run's end is published.
        let _ = self.handle.block_on(async {
            tokio::time::timeout(std::time::Duration::from_secs(5), task).await
        });
        self.finish(exit, egress, prepared);
    }
}

/// Copy a piped run's stderr (a cage's refusal is said there) to kaged's log, a bounded
/// number of lines; read to the end so a full pipe never stops it.
fn log_stderr(id: &str, what: &str, stderr: std::process::ChildStderr) {
    crate::lines::log_lines(stderr, STDERR_LINES, |line| {
        tracing::warn!(session = %id, from = what, line = %line.chars().take(1000).collect::<String>(), "stderr");
    });
}
