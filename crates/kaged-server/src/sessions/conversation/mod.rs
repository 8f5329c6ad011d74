//! Conversations: the sessions of model agents. No PTY: a tool executor (`kaged tool-exec`)
//! runs in the agent's cage for as long as the session runs, and kaged's own agent loop
//! (`turn.rs`) calls the model from the daemon (the provider key never enters the cage),
//! runs the model's tool calls through the executor, and records everything in the session's
//! event log (`agent_log.rs`) before anyone sees it.
//!
//! - `runner.rs`: the run's thread (cage, executor on pipes, exit) and the loop's task.
//! - `turn.rs`: the loop: waits for messages, runs turns (model calls and tool calls) until
//!   the model stops, `max_steps`, `max_output_tokens`, an abort or the run's end.
//! - `model.rs`: one model call: the alias's routes in order, retries with backoff, the
//!   streamed answer recorded as events.
//! - `subagent.rs`: subagents, offered as the tools `agent.NAME`, each call in a cage of its
//!   own.
//! - `http.rs`: messages, abort and the conversation's records.
//!
//! An ended conversation resumes when it is sent a message (a new cage; the model gets the
//! whole history from the log), which is also how a conversation continues after kaged
//! restarted.

mod http;
mod model;
pub(crate) mod runner;
mod subagent;
mod turn;

use std::collections::{BTreeSet, VecDeque};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use kaged_dsl::{Agent, Project, ProjectPath};
use tokio::sync::{Notify, watch};

pub use http::{abort, conversation, messages};
pub(crate) use http::{check_message, resume};

use super::lock;

/// Operator messages queued per conversation before more are refused.
pub(crate) const MAX_QUEUED: usize = 64;
/// Largest system prompt file, in bytes.
const MAX_PROMPT_BYTES: u64 = 256 * 1024;

/// What a conversation runs with, from its agent in the project file.
#[derive(Debug, Clone)]
pub(crate) struct Setup {
    pub agent: String,
    pub model: String,
    pub system_prompt: Option<ProjectPath>,
    pub max_steps: Option<u64>,
    pub max_output_tokens: Option<u64>,
    /// The built-in tools it may call.
    pub tools: BTreeSet<String>,
}

impl Setup {
    /// The setup of agent `name` of `project` when it is a model agent.
    pub(crate) fn of(project: &Project, name: &str) -> Option<Setup> {
        let agent: &Agent = project.agent(name)?;
        let model = agent.model.clone()?;
        let settings = agent
            .tools
            .iter()
            .flatten()
            .map(|(tool, t)| (tool.as_str(), t.offered()));
        Some(Setup {
            agent: name.to_string(),
            model,
            system_prompt: agent.system_prompt.clone(),
            max_steps: agent.max_steps,
            max_output_tokens: agent.max_output_tokens,
            tools: kaged_tools::enabled_tools(settings),
        })
    }

    /// The executor's command in the cage (`program` is kaged's path there).
    pub(crate) fn command(&self, program: &str) -> Vec<String> {
        let mut command = vec![program.to_string()];
        command.extend(kaged_tools::executor_args(&self.tools));
        command
    }
}

/// The system prompt's text, read from the project at each turn (edits apply to the next
/// turn), without following links: the cage can write the project.
pub(crate) fn read_prompt(root: &std::path::Path, path: &ProjectPath) -> Result<String, String> {
    let relative = match path {
        ProjectPath::Project(rest) => std::path::PathBuf::from(rest),
        ProjectPath::Config(rest) => std::path::Path::new(".kaged").join(rest),
    };
    let bytes = kaged_spawn::read_beneath(root, &relative, MAX_PROMPT_BYTES)
        .map_err(|e| format!("the system prompt {path} cannot be read: {e}"))?;
    String::from_utf8(bytes).map_err(|_| format!("the system prompt {path} is not UTF-8 text"))
}

/// A live conversation's controls: the operator's queued messages, the abort of the turn in
/// flight. Shared by the routes and the loop.
#[derive(Default)]
pub(crate) struct Control {
    queue: Mutex<VecDeque<String>>,
    pub(crate) wake: Notify,
    pub(crate) abort: watch::Sender<u64>,
    pub(crate) in_turn: AtomicBool,
}

impl Control {
    /// Queue an operator message; the number now queued, or `None` when the queue is full.
    pub(crate) fn send(&self, text: String) -> Option<usize> {
        let mut queue = lock(&self.queue);
        if queue.len() >= MAX_QUEUED {
            return None;
        }
        queue.push_back(text);
        let n = queue.len();
        drop(queue);
        self.wake.notify_one();
        Some(n)
    }

    /// Every queued message, oldest first.
    pub(crate) fn take(&self) -> Vec<String> {
        lock(&self.queue).drain(..).collect()
    }

    pub(crate) fn has_queued(&self) -> bool {
        !lock(&self.queue).is_empty()
    }

    /// End the turn in flight; whether there was one.
    pub(crate) fn abort(&self) -> bool {
        let running = self.in_turn.load(Ordering::SeqCst);
        if running {
            self.abort.send_modify(|n| *n += 1);
        }
        running
    }
}
