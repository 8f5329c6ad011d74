//! What a run of a project starts: the command, where, in whose cage, and for how long. Pure:
//! a resolved project configuration and the operator's choice in, a [`RunPlan`] out.

use std::path::PathBuf;

use serde_json::Value;

use crate::{agent_names, find_agent};

/// The three kinds of run kaged starts for a project.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunKind {
    /// A command agent of the project file (`primary` or a subagent with `command`).
    Agent,
    /// A shell in the project (`terminals`).
    Terminal,
    /// A named project command (`tasks`).
    Task,
}

impl RunKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RunKind::Agent => "agent",
            RunKind::Terminal => "terminal",
            RunKind::Task => "task",
        }
    }

    pub fn parse(s: &str) -> Option<RunKind> {
        match s {
            "agent" => Some(RunKind::Agent),
            "terminal" => Some(RunKind::Terminal),
            "task" => Some(RunKind::Task),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunPlan {
    /// `agent`/`task` name, or `terminal`.
    pub name: String,
    pub command: Vec<String>,
    /// Working directory relative to the project root.
    pub cwd: PathBuf,
    /// The agent whose cage the run gets.
    pub cage_agent: String,
    /// A task's `timeout_secs` (the cage's own wall-time limit applies as well).
    pub timeout_secs: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error("no agent named `{0}` in this project (agents: {1})")]
    UnknownAgent(String, String),
    #[error(
        "agent `{0}` is a model agent; kaged runs command agents (with `command:`) on terminals"
    )]
    NotACommandAgent(String),
    #[error("no task named `{0}` in this project (tasks: {1})")]
    UnknownTask(String, String),
    #[error("`{field}` is malformed in the resolved project")]
    Malformed { field: String },
}

fn argv(v: Option<&Value>, field: &str) -> Result<Option<Vec<String>>, PlanError> {
    let Some(v) = v else { return Ok(None) };
    let malformed = || PlanError::Malformed {
        field: field.into(),
    };
    let items = v.as_array().ok_or_else(malformed)?;
    let out: Vec<String> = items
        .iter()
        .map(|i| i.as_str().map(String::from).ok_or_else(malformed))
        .collect::<Result<_, _>>()?;
    if out.is_empty() {
        return Err(malformed());
    }
    Ok(Some(out))
}

/// `project:/sub/dir` → `sub/dir` (validated files only hold such paths).
fn cwd(v: Option<&Value>, field: &str) -> Result<PathBuf, PlanError> {
    let Some(v) = v else {
        return Ok(PathBuf::new());
    };
    let rest = v
        .as_str()
        .and_then(|s| s.strip_prefix("project:/"))
        .ok_or_else(|| PlanError::Malformed {
            field: field.into(),
        })?;
    let path = PathBuf::from(rest);
    if path
        .components()
        .all(|c| matches!(c, std::path::Component::Normal(_)))
    {
        Ok(path)
    } else {
        Err(PlanError::Malformed {
            field: field.into(),
        })
    }
}

/// The plan of a run of `kind` (`name` is the agent or task; ignored for terminals; an agent
/// run defaults to `primary`).
pub fn plan_run(config: &Value, kind: RunKind, name: Option<&str>) -> Result<RunPlan, PlanError> {
    match kind {
        RunKind::Agent => {
            let name = name.unwrap_or("primary");
            let agent = find_agent(config, name).ok_or_else(|| {
                PlanError::UnknownAgent(name.into(), agent_names(config).join(", "))
            })?;
            let command = argv(agent.get("command"), "command")?
                .ok_or_else(|| PlanError::NotACommandAgent(name.into()))?;
            Ok(RunPlan {
                name: name.into(),
                command,
                cwd: PathBuf::new(),
                cage_agent: name.into(),
                timeout_secs: None,
            })
        }
        RunKind::Terminal => {
            let t = config.get("terminals");
            let get = |k: &str| t.and_then(|t| t.get(k));
            Ok(RunPlan {
                name: "terminal".into(),
                command: argv(get("shell"), "terminals.shell")?
                    .unwrap_or_else(|| vec!["bash".into(), "-l".into()]),
                cwd: cwd(get("cwd"), "terminals.cwd")?,
                cage_agent: get("agent")
                    .and_then(Value::as_str)
                    .unwrap_or("primary")
                    .into(),
                timeout_secs: None,
            })
        }
        RunKind::Task => {
            let tasks = config.get("tasks").and_then(Value::as_object);
            let known = || {
                tasks
                    .map(|t| t.keys().cloned().collect::<Vec<_>>().join(", "))
                    .filter(|s| !s.is_empty())
                    .unwrap_or_else(|| "none".into())
            };
            let name = name.ok_or_else(|| PlanError::UnknownTask(String::new(), known()))?;
            let task = tasks
                .and_then(|t| t.get(name))
                .ok_or_else(|| PlanError::UnknownTask(name.into(), known()))?;
            let field = |k: &str| format!("tasks.{name}.{k}");
            Ok(RunPlan {
                name: name.into(),
                command: argv(task.get("command"), &field("command"))?.ok_or_else(|| {
                    PlanError::Malformed {
                        field: field("command"),
                    }
                })?,
                cwd: cwd(task.get("cwd"), &field("cwd"))?,
                cage_agent: task
                    .get("agent")
                    .and_then(Value::as_str)
                    .unwrap_or("primary")
                    .into(),
                timeout_secs: task.get("timeout_secs").and_then(Value::as_u64),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn config() -> Value {
        json!({
            "project": "demo",
            "primary": {
                "command": ["claude", "--x"],
                "subagents": {"thinker": {"model": "m", "system_prompt": "p"}}
            },
            "tasks": {"test": {"command": ["cargo", "test"], "cwd": "project:/crates", "agent": "thinker", "timeout_secs": 60}},
            "terminals": {"shell": ["zsh"], "cwd": "project:/src"}
        })
    }

    #[test]
    fn agents_terminals_and_tasks_are_planned() {
        let c = config();
        let a = plan_run(&c, RunKind::Agent, None).unwrap();
        assert_eq!(
            (a.name.as_str(), a.command.clone(), a.cage_agent.as_str()),
            (
                "primary",
                vec!["claude".to_string(), "--x".into()],
                "primary"
            )
        );
        let t = plan_run(&c, RunKind::Terminal, None).unwrap();
        assert_eq!(
            (t.command, t.cwd, t.cage_agent.as_str()),
            (vec!["zsh".to_string()], PathBuf::from("src"), "primary")
        );
        let k = plan_run(&c, RunKind::Task, Some("test")).unwrap();
        assert_eq!(
            (k.cwd, k.cage_agent.as_str(), k.timeout_secs),
            (PathBuf::from("crates"), "thinker", Some(60))
        );
        let bare = json!({"primary": {"command": ["x"]}});
        assert_eq!(
            plan_run(&bare, RunKind::Terminal, None).unwrap().command,
            ["bash", "-l"]
        );
    }

    #[test]
    fn wrong_names_say_what_exists() {
        let c = config();
        assert_eq!(
            plan_run(&c, RunKind::Agent, Some("thinker")).unwrap_err(),
            PlanError::NotACommandAgent("thinker".into())
        );
        let e = plan_run(&c, RunKind::Task, Some("lint")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "no task named `lint` in this project (tasks: test)"
        );
        let e = plan_run(&c, RunKind::Agent, Some("ghost")).unwrap_err();
        assert!(e.to_string().contains("agents: primary, thinker"), "{e}");
        let escape =
            json!({"primary": {"command": ["x"]}, "terminals": {"cwd": "project:/../etc"}});
        assert!(plan_run(&escape, RunKind::Terminal, None).is_err());
    }
}
