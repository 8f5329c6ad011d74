//! A turn's tool calls: recorded, checked against the agent's approvals, carried out in the
//! cage (built-in tools at once, subagents in turn, a call waiting for a decision after it),
//! each result recorded.

use kaged_dsl::Approval;
use kaged_session::agent::AgentEvent;

use super::{Conversation, Failed, MAX_DEPTH, Scope, storage, tool_names};
use crate::sessions::conversation::{Setup, subagent};
use kaged_llm::Client;

/// The result of a call that ran when its run ended: it is not run a second time.
const INTERRUPTED: &str =
    "cut short: the run ended (kaged stopped) while this call ran; it was not run again";

/// A tool call of a turn on its way to its result.
pub(super) struct Call {
    pub(super) id: String,
    pub(super) name: String,
    pub(super) arguments: serde_json::Value,
    /// The approval it waits for (or was given).
    pub(super) approval: Option<String>,
    /// It was under way when an earlier run ended: it is not run again.
    pub(super) interrupted: bool,
    /// A subagent call whose own turn an earlier run left paused on approvals: the subagent
    /// goes on from these calls of its.
    pub(super) subagent: Option<Vec<Call>>,
}

/// How a call is carried out.
enum Handler {
    /// A built-in tool, in the agent's cage.
    Tool(String),
    /// A subagent, in a cage of its own.
    Subagent(Setup),
    /// One of the agent's plugins' tools (`PLUGIN.TOOL`), in the plugin's own cage.
    Plugin(String),
    /// Nothing: the model is told why.
    Unknown(String),
}

fn approval_failed(e: crate::sessions::approval::ApprovalError) -> Failed {
    Failed {
        code: "approval",
        message: e.to_string(),
    }
}

impl Conversation {
    /// Record the calls, ask for the approvals they need, and carry them out
    /// ([`Self::finish_calls`]); `false` when the turn is to end (see there).
    pub(super) async fn run_tools(
        &self,
        scope: Scope<'_>,
        client: &Client,
        calls: Vec<kaged_llm::ToolCall>,
    ) -> Result<bool, Failed> {
        let mut planned = Vec::new();
        let mut events = Vec::new();
        for call in calls {
            let arguments = serde_json::from_str(&call.arguments)
                .unwrap_or(serde_json::Value::String(call.arguments.clone()));
            let name = self.known_name(scope, call.name);
            events.push(AgentEvent::ToolCall {
                call_id: call.id.clone(),
                name: name.clone(),
                arguments: arguments.clone(),
            });
            planned.push(Call {
                id: call.id,
                name,
                arguments,
                approval: None,
                interrupted: false,
                subagent: None,
            });
        }
        self.record_in(scope.parent, events)
            .await
            .map_err(storage)?;
        for call in &mut planned {
            if matches!(self.handler(scope, &call.name), Handler::Unknown(_))
                || !self.needs_approval(scope, &call.name).await?
            {
                continue;
            }
            let record = self
                .sessions
                .approvals()
                .request(crate::sessions::approval::Request {
                    session: &self.id,
                    project: &self.base.slug,
                    owner: &self.owner,
                    agent: &scope.setup.agent,
                    tool: &call.name,
                    call_id: &call.id,
                    parent_call_id: scope.parent,
                    arguments: &call.arguments,
                })
                .await
                .map_err(approval_failed)?;
            call.approval = Some(record.id);
        }
        self.finish_calls(scope, client, planned).await
    }

    /// kaged's name of a tool the model called by its wire name (`shell__bash`): the provider's
    /// answer maps back only the tools offered, so a call of one that was not (denied, or
    /// another agent's) arrives as the wire spelling. Names kaged knows of none stay as sent.
    fn known_name(&self, scope: Scope<'_>, name: String) -> String {
        let agent = self.base.project.agent(&scope.setup.agent);
        let configured = agent
            .and_then(|a| a.tools.as_ref())
            .into_iter()
            .flat_map(|tools| tools.keys().cloned());
        let subagents = agent.into_iter().flat_map(|a| {
            a.subagents
                .keys()
                .map(|s| format!("{}{s}", subagent::PREFIX))
        });
        let plugin_tools = self
            .sessions
            .deps()
            .plugins
            .as_ref()
            .map(|p| p.tools_of(&self.agent_plugins(scope)))
            .unwrap_or_default()
            .into_iter()
            .map(|(name, _, _)| name);
        kaged_tools::TOOLS
            .iter()
            .map(|t| t.to_string())
            .chain(configured)
            .chain(subagents)
            .chain(plugin_tools)
            .find(|known| *known == name || kaged_llm::build::wire_tool_name(known) == name)
            .unwrap_or(name)
    }

    /// How `scope`'s agent carries out a call of `name`.
    fn handler(&self, scope: Scope<'_>, name: &str) -> Handler {
        let agent = self.base.project.agent(&scope.setup.agent);
        let sub = name
            .strip_prefix(subagent::PREFIX)
            .filter(|_| scope.depth < MAX_DEPTH)
            .filter(|sub| {
                agent.is_some_and(|a| {
                    a.subagents.contains_key(*sub) && a.approval_of(name) != Approval::Deny
                })
            })
            .and_then(|sub| Setup::of(&self.base.project, sub));
        match sub {
            Some(setup) => Handler::Subagent(setup),
            None if scope.setup.tools.contains(name) => Handler::Tool(name.to_string()),
            None if self.is_plugin_tool(scope, name)
                && agent.is_some_and(|a| a.approval_of(name) != Approval::Deny) =>
            {
                Handler::Plugin(name.to_string())
            }
            None if agent.is_some_and(|a| a.approval_of(name) == Approval::Deny) => {
                Handler::Unknown(format!(
                    "`{name}` is not allowed for this agent (the project file says `approval: deny` or `enabled: false`); the tools are: {}",
                    tool_names(&self.base.project, scope)
                ))
            }
            None => Handler::Unknown(format!(
                "unknown tool `{name}`; the tools are: {}",
                tool_names(&self.base.project, scope)
            )),
        }
    }

    /// Whether a call of `name` by `scope`'s agent waits for the operator: `approval: ask`,
    /// unless it was approved for the rest of this session.
    async fn needs_approval(&self, scope: Scope<'_>, name: &str) -> Result<bool, Failed> {
        let agent = self.base.project.agent(&scope.setup.agent);
        let plugin_tool = self.is_plugin_tool(scope, name);
        // A plugin's tool is another's code acting for the agent: it asks unless `tools:` says.
        let level = match agent
            .and_then(|a| a.tools.as_ref())
            .and_then(|t| t.get(name))
        {
            Some(tool) => tool.level(),
            None if plugin_tool => Approval::Ask,
            None => agent.map_or(Approval::Allow, |a| a.approval_of(name)),
        };
        if level != Approval::Ask {
            return Ok(false);
        }
        let granted = self
            .sessions
            .approvals()
            .granted(&self.id, &scope.setup.agent, name)
            .await
            .map_err(approval_failed)?;
        Ok(!granted)
    }

    /// Start at once, in the cage, the built-in calls that need no decision; then, in order,
    /// wait for each decision needed, run subagents, and record each result. `false` when
    /// the turn is to end: an approval it waited for was cancelled (a kill), so the model is
    /// not asked again.
    pub(super) async fn finish_calls(
        &self,
        scope: Scope<'_>,
        client: &Client,
        calls: Vec<Call>,
    ) -> Result<bool, Failed> {
        enum Ready {
            Tool(Result<kaged_tools::PendingCall, String>),
            /// A plugin's tool and the model's arguments.
            Plugin(String, serde_json::Value),
            /// The subagent, and the calls of its paused turn to go on from (none: a new one).
            Subagent(Setup, serde_json::Value, Vec<Call>),
            Done(String),
        }
        enum Started {
            Ready(Ready),
            Waiting(String, Handler, serde_json::Value),
        }
        let start = |name: &str, arguments| {
            scope
                .executor
                .start(name, arguments)
                .map_err(|e| e.to_string())
        };
        let mut started = Vec::new();
        for call in calls {
            let job = match (
                call.interrupted,
                self.handler(scope, &call.name),
                call.approval,
            ) {
                (true, _, _) => Started::Ready(Ready::Done(INTERRUPTED.to_string())),
                (false, Handler::Unknown(message), _) => Started::Ready(Ready::Done(message)),
                (false, handler, Some(id)) => Started::Waiting(id, handler, call.arguments),
                (false, Handler::Tool(name), None) => {
                    Started::Ready(Ready::Tool(start(&name, call.arguments)))
                }
                (false, Handler::Plugin(name), None) => {
                    Started::Ready(Ready::Plugin(name, call.arguments))
                }
                (false, Handler::Subagent(setup), None) => Started::Ready(Ready::Subagent(
                    setup,
                    call.arguments,
                    call.subagent.unwrap_or_default(),
                )),
            };
            started.push((call.id, job));
        }
        let mut gone = None;
        let mut go_on = true;
        for (call_id, job) in started {
            if !go_on {
                break;
            }
            let job = match job {
                Started::Waiting(id, handler, arguments) => {
                    let record = self
                        .sessions
                        .approvals()
                        .wait(&id)
                        .await
                        .map_err(approval_failed)?;
                    go_on = record.state != "cancelled";
                    match handler {
                        _ if record.state != "approved" => {
                            Ready::Done(crate::sessions::approval::refusal(&record))
                        }
                        Handler::Tool(name) => Ready::Tool(start(&name, arguments)),
                        Handler::Plugin(name) => Ready::Plugin(name, arguments),
                        Handler::Subagent(setup) => Ready::Subagent(setup, arguments, Vec::new()),
                        Handler::Unknown(message) => Ready::Done(message),
                    }
                }
                Started::Ready(ready) => ready,
            };
            let (ok, content, cut) = match job {
                Ready::Tool(Ok(p)) => match p.outcome().await {
                    Ok(kaged_tools::ToolOutcome::Ok { output, truncated }) => {
                        (true, output, truncated)
                    }
                    Ok(outcome) => (false, outcome.text().to_string(), false),
                    Err(e) => {
                        gone = Some(e.to_string());
                        (false, e.to_string(), false)
                    }
                },
                Ready::Tool(Err(message)) | Ready::Done(message) => (false, message, false),
                Ready::Plugin(name, arguments) => {
                    let answer = match &self.sessions.deps().plugins {
                        Some(plugins) => {
                            plugins
                                .call_tool(&self.plugin_caller(scope), &name, arguments)
                                .await
                        }
                        None => Err("this kaged runs no plugins".to_string()),
                    };
                    match answer {
                        Ok(result) => (!result.is_error, result.content, false),
                        Err(why) => (false, why, false),
                    }
                }
                Ready::Subagent(setup, arguments, paused) => {
                    let (reason, ok, content) = Box::pin(
                        self.run_subagent(scope, client, &call_id, setup, arguments, paused),
                    )
                    .await;
                    // Its turn aborted: an approval in it was cancelled (a kill).
                    go_on = reason != Some(kaged_session::agent::EndReason::Aborted);
                    (ok, content, false)
                }
            };
            // The tool's own cut (marked in its text) or the log's bound.
            let result = match AgentEvent::tool_result(call_id, ok, &content) {
                AgentEvent::ToolResult {
                    call_id,
                    ok,
                    content,
                    truncated,
                } => AgentEvent::ToolResult {
                    call_id,
                    ok,
                    content,
                    truncated: truncated || cut,
                },
                other => other,
            };
            self.record_in(scope.parent, vec![result])
                .await
                .map_err(storage)?;
        }
        match gone {
            Some(message) => Err(Failed {
                code: "executor",
                message,
            }),
            None => Ok(go_on),
        }
    }
}
