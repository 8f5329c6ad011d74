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

use std::io::BufRead;
use std::sync::Arc;

use super::subagent::CageBase;
use super::turn::Conversation;
use super::{Control, Setup};
use crate::sessions::runner::Runner;

/// Lines of an executor's stderr copied to kaged's log, at most.
const STDERR_LINES: usize = 200;

impl Runner {
    /// The whole life of a conversation's run.
    pub(crate) fn run_conversation(self, setup: Setup, control: Arc<Control>) {
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
                move || log_stderr(&id, stderr)
            },
            |_| {},
        );
        let (ended_tx, ended_rx) = tokio::sync::watch::channel(false);
        let d = &self.decided;
        let conversation = Conversation {
            sessions: self.sessions.clone(),
            id: id.clone(),
            root: d.root.clone(),
            setup,
            control,
            owner: self.live.info().created_by.clone(),
            base: CageBase {
                project: d.model.clone(),
                slug: d.project.clone(),
                root: d.root.clone(),
                run_as: d.run_as.map(|r| r.identity),
                granted_env: d.granted_env.clone(),
                granted_paths: d.granted_paths.clone(),
                session: id.clone(),
            },
            subagents: Default::default(),
            log: Default::default(),
        };
        let stdin: std::os::fd::OwnedFd = stdin.into();
        let stdout: std::os::fd::OwnedFd = stdout.into();
        let task = self.handle.spawn(async move {
            let to = tokio::net::unix::pipe::Sender::from_owned_fd(stdin);
            let from = tokio::net::unix::pipe::Receiver::from_owned_fd(stdout);
            match (from, to) {
                (Ok(from), Ok(to)) => {
                    let executor = kaged_tools::ToolExecutor::new(from, to);
                    conversation.run(executor, ended_rx).await;
                }
                (Err(e), _) | (_, Err(e)) => {
                    tracing::error!(session = %conversation.id, error = %e, "cannot speak to the tool executor");
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

/// Copy the executor's stderr (a cage's refusal is said there) to kaged's log, a bounded
/// number of lines; read to the end so a full pipe never stops it.
fn log_stderr(id: &str, stderr: std::process::ChildStderr) {
    let mut lines = std::io::BufReader::new(stderr).split(b'\n');
    let mut logged = 0;
    while let Some(Ok(line)) = lines.next() {
        if logged < STDERR_LINES {
            logged += 1;
            let text = String::from_utf8_lossy(&line);
            tracing::warn!(session = %id, line = %text.chars().take(1000).collect::<String>(), "tool executor");
        }
    }
}
