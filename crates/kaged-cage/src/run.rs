//! What a run of a project starts: the command, where, in whose cage, and for how long. Pure:
//! the project model and the operator's choice in, a [`RunPlan`] out.

use std::path::PathBuf;

use kaged_dsl::Project;
use kaged_dsl::model::{PRIMARY, ProjectPath};

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

/// Why a run cannot be planned.
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

/// A command as the project gives it; validation keeps it non-empty.
fn argv(command: &[String], field: &str) -> Result<Vec<String>, PlanError> {
    if command.is_empty() {
        return Err(PlanError::Malformed {
            field: field.into(),
        });
    }
    Ok(command.to_vec())
}

/// `project:/sub/dir` → `sub/dir`; `None` (the root) → empty. A `config:/` path, or one with
/// anything but plain names in it, is no working directory.
fn cwd(path: Option<&ProjectPath>, field: &str) -> Result<PathBuf, PlanError> {
    let malformed = || PlanError::Malformed {
        field: field.into(),
    };
    let rest = match path {
        None => return Ok(PathBuf::new()),
        Some(ProjectPath::Project(rest)) => rest,
        Some(ProjectPath::Config(_)) => return Err(malformed()),
    };
    let path = PathBuf::from(rest);
    if path
        .components()
        .all(|c| matches!(c, std::path::Component::Normal(_)))
    {
        Ok(path)
    } else {
        Err(malformed())
    }
}

/// The plan of a run of `kind` (`name` is the agent or task; ignored for terminals; an agent
/// run defaults to `primary`).
pub fn plan_run(
    project: &Project,
    kind: RunKind,
    name: Option<&str>,
) -> Result<RunPlan, PlanError> {
    match kind {
        RunKind::Agent => {
            let name = name.unwrap_or(PRIMARY);
            let agent = project.agent(name).ok_or_else(|| {
                PlanError::UnknownAgent(name.into(), project.agent_names().join(", "))
            })?;
            let command = match &agent.command {
                Some(command) => argv(command, "command")?,
                None => return Err(PlanError::NotACommandAgent(name.into())),
            };
            Ok(RunPlan {
                name: name.into(),
                command,
                cwd: PathBuf::new(),
                cage_agent: name.into(),
                timeout_secs: None,
            })
        }
        RunKind::Terminal => {
            let terminals = project.terminals.as_ref();
            Ok(RunPlan {
                name: "terminal".into(),
                command: match terminals.and_then(|t| t.shell.as_ref()) {
                    Some(shell) => argv(shell, "terminals.shell")?,
                    None => vec!["bash".into(), "-l".into()],
                },
                cwd: cwd(terminals.and_then(|t| t.cwd.as_ref()), "terminals.cwd")?,
                cage_agent: terminals
                    .and_then(|t| t.agent.as_deref())
                    .unwrap_or(PRIMARY)
                    .into(),
                timeout_secs: None,
            })
        }
        RunKind::Task => {
            let known = || {
                Some(project.task_names().join(", "))
                    .filter(|s| !s.is_empty())
                    .unwrap_or_else(|| "none".into())
            };
            let name = name.ok_or_else(|| PlanError::UnknownTask(String::new(), known()))?;
            let task = project
                .task(name)
                .ok_or_else(|| PlanError::UnknownTask(name.into(), known()))?;
            let field = |k: &str| format!("tasks.{name}.{k}");
            Ok(RunPlan {
                name: name.into(),
                command: argv(&task.command, &field("command"))?,
                cwd: cwd(task.cwd.as_ref(), &field("cwd"))?,
                cage_agent: task.agent.as_deref().unwrap_or(PRIMARY).into(),
                timeout_secs: task.timeout_secs,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn config() -> Project {
        model(json!({
            "version": 1,
            "project": "demo",
            "primary": {
                "command": ["claude", "--x"],
                "subagents": {"thinker": {"model": "m", "system_prompt": "config:/p.md"}}
            },
            "tasks": {"test": {"command": ["cargo", "test"], "cwd": "project:/crates", "agent": "thinker", "timeout_secs": 60}},
            "terminals": {"shell": ["zsh"], "cwd": "project:/src"}
        }))
    }

    fn model(config: serde_json::Value) -> Project {
        Project::from_resolved(&config).unwrap()
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
        let bare = model(json!({"version": 1, "project": "demo", "primary": {"command": ["x"]}}));
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
        // Validation refuses `..`; a working directory never leaves the project or enters
        // `.kaged` either way.
        for odd in ["project:/../etc", "project:/./src", "config:/prompts"] {
            let escape = model(json!({"version": 1, "project": "demo",
                "primary": {"command": ["x"]}, "terminals": {"cwd": odd}}));
            assert_eq!(
                plan_run(&escape, RunKind::Terminal, None)
                    .unwrap_err()
                    .to_string(),
                "`terminals.cwd` is malformed in the resolved project",
                "{odd}"
            );
        }
        let none = model(json!({"version": 1, "project": "demo", "primary": {"command": ["x"]}}));
        assert_eq!(
            plan_run(&none, RunKind::Task, Some("lint"))
                .unwrap_err()
                .to_string(),
            "no task named `lint` in this project (tasks: none)"
        );
    }
}
