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

use kaged_session::state::{Event, StateKind};
use serde_json::json;

use super::Control;
use super::turn::Conversation;
use crate::sessions::runner::Runner;

/// Lines of an executor's stderr copied to kaged's log, at most.
const STDERR_LINES: usize = 200;

impl Runner {
    /// The whole life of a conversation's run.
    pub(crate) fn run_conversation(self, control: Arc<Control>) {
        let Some(setup) = self.decided.conversation.clone() else {
            return self.fail("kaged: a conversation without its agent's setup (a bug)".into());
        };
        if self.transition(Event::Start, "kaged").is_none() {
            return;
        }
        let egress = match self.start_egress() {
            Ok(e) => e,
            Err(reason) => return self.fail(reason),
        };
        let prepared = match self.spec(egress.as_ref().map(|e| e.proxy.socket())) {
            Ok(s) => s,
            Err(reason) => return self.fail(reason),
        };
        if let Some(plan) = &prepared.limits
            && !(plan.enforced.is_empty() && plan.unenforced.is_empty())
        {
            self.audit(
                "cage.limits",
                plan.unenforced.is_empty(),
                json!({"session": self.live.id(), "enforced": plan.enforced, "unenforced": plan.unenforced}),
            );
        }
        if self.live.state().kind() != StateKind::Starting {
            return;
        }
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
        self.live.set_killer(Some(killer.clone()));
        if self
            .transition(Event::Spawned { pid: killer.pid() }, "kaged")
            .is_none()
        {
            killer.kill();
        }
        self.start_wall_clock(prepared.limits.as_ref().and_then(|l| l.wall_time_secs));
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
        let conversation = Conversation {
            sessions: self.sessions.clone(),
            id: id.clone(),
            root: self.decided.root.clone(),
            setup,
            control,
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
        if let Some(egress) = egress {
            egress.stop(&self.handle);
        }
        drop(prepared.cgroups);
        self.live.set_killer(None);
        let event = match exit.signal() {
            Some(sig) => Event::exit_signal(sig),
            None => Event::exit_code(exit.code()),
        };
        self.transition(event, "kaged");
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
