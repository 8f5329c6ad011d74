//! The typed project model: what a validated project file says, as Rust types, for the crates
//! that act on it (`kaged-cage` plans runs and cages from it).
//!
//! It is read from the resolved configuration ([`crate::Checked::resolved`], or the one a
//! daemon stored as in force), which only ever holds a tree [`crate::validate`] accepted. The
//! types follow [`crate::schema`] field for field (unknown keys are refused, so a field added to
//! the schema and not here fails the tests). Absent and empty stay apart where a reader tells
//! them apart (`tasks`). Paths keep their `project:/` or `config:/` root unresolved: what a path
//! means inside a cage is `kaged-cage`'s decision.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Why a resolved configuration is not a project.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ModelError {
    /// No configuration at all (`null`): a project whose files never validated.
    #[error(
        "this project has no valid configuration in force; `kaged dsl validate` on its directory lists the problems"
    )]
    Absent,
    /// Never for one that validated: the model and the schema disagree (a bug).
    #[error("the resolved project does not fit the project model (a bug: report it): {0}")]
    Mismatch(String),
}

/// A project file (`.kaged/project.yaml` with its overlay), version 1.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Project {
    pub version: u64,
    /// The project slug (`project:`).
    #[serde(rename = "project")]
    pub slug: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The root agent; every other agent is one of its (nested) subagents.
    pub primary: Agent,
    /// Named commands. `None` when the file has no `tasks:` at all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tasks: Option<BTreeMap<String, Task>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub terminals: Option<Terminals>,
}

/// The name of the root agent.
pub const PRIMARY: &str = "primary";

impl Project {
    /// The model of a resolved configuration (JSON, as [`crate::to_json`] writes it).
    pub fn from_resolved(config: &serde_json::Value) -> Result<Project, ModelError> {
        if config.is_null() {
            return Err(ModelError::Absent);
        }
        Project::deserialize(config).map_err(|e| ModelError::Mismatch(e.to_string()))
    }

    /// The agent called `name`: `primary`, or the first subagent of that name, depth first
    /// (validation keeps agent names unique).
    pub fn agent(&self, name: &str) -> Option<&Agent> {
        fn walk<'a>(agent: &'a Agent, wanted: &str) -> Option<&'a Agent> {
            for (name, sub) in &agent.subagents {
                if name == wanted {
                    return Some(sub);
                }
                if let Some(found) = walk(sub, wanted) {
                    return Some(found);
                }
            }
            None
        }
        if name == PRIMARY {
            Some(&self.primary)
        } else {
            walk(&self.primary, name)
        }
    }

    /// Every agent's name: `primary`, then the subagents depth first, by name at each level.
    pub fn agent_names(&self) -> Vec<String> {
        fn walk(agent: &Agent, out: &mut Vec<String>) {
            for (name, sub) in &agent.subagents {
                out.push(name.clone());
                walk(sub, out);
            }
        }
        let mut out = vec![PRIMARY.to_string()];
        walk(&self.primary, &mut out);
        out
    }

    /// The task called `name`.
    pub fn task(&self, name: &str) -> Option<&Task> {
        self.tasks.as_ref()?.get(name)
    }

    /// Every task's name, in order.
    pub fn task_names(&self) -> Vec<String> {
        self.tasks
            .iter()
            .flat_map(|tasks| tasks.keys().cloned())
            .collect()
    }
}

/// A model agent (`model` + `system_prompt`) or a command agent (`command`), with its cage,
/// tools and subagents. Validation allows exactly one of `model` and `command`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Agent {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// A model alias (mapped to `provider:model` in the operator's local.toml).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system_prompt: Option<ProjectPath>,
    /// A model agent's most model calls in one turn.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_steps: Option<u64>,
    /// A model agent's most output tokens in one response.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_output_tokens: Option<u64>,
    /// The argv of an external agent CLI.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    /// How kaged talks to a command agent (`None`: a PTY).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<Protocol>,
    /// An ACP agent's session mode, set after its session starts (`None`: the agent's mode
    /// `default` when it offers one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    /// `None`: the default cage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cage: Option<AgentCage>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tools: Option<BTreeMap<String, Tool>>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub subagents: BTreeMap<String, Agent>,
    /// Model agent: the plugins whose tools it may call (`PLUGIN.TOOL`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub plugins: Vec<String>,
    /// Model agent: committed settings for its plugins, by plugin name (each plugin's
    /// `config_schema`), sent with every call.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub plugin_config: BTreeMap<String, serde_json::Value>,
}

impl Agent {
    /// Whether this is a command agent speaking the Agent Client Protocol.
    pub fn speaks_acp(&self) -> bool {
        self.command.is_some() && self.protocol == Some(Protocol::Acp)
    }

    /// What a call of `tool` needs (`allow` for a tool the agent does not mention).
    pub fn approval_of(&self, tool: &str) -> Approval {
        self.tools
            .as_ref()
            .and_then(|tools| tools.get(tool))
            .map_or(Approval::Allow, Tool::level)
    }
}

/// An agent's `cage:`: `disabled`, or the cage's settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "AgentCageText", into = "AgentCageText")]
pub enum AgentCage {
    /// `cage: disabled`: the agent runs as the daemon's user.
    Disabled,
    Caged(Cage),
}

/// [`AgentCage`] as the file writes it.
#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum AgentCageText {
    Literal(String),
    Caged(Cage),
}

impl TryFrom<AgentCageText> for AgentCage {
    type Error = String;
    fn try_from(text: AgentCageText) -> Result<Self, String> {
        match text {
            AgentCageText::Literal(s) if s == "disabled" => Ok(AgentCage::Disabled),
            AgentCageText::Literal(s) => Err(format!("cage {s:?} is neither disabled nor a cage")),
            AgentCageText::Caged(cage) => Ok(AgentCage::Caged(cage)),
        }
    }
}

impl From<AgentCage> for AgentCageText {
    fn from(cage: AgentCage) -> Self {
        match cage {
            AgentCage::Disabled => AgentCageText::Literal("disabled".into()),
            AgentCage::Caged(cage) => AgentCageText::Caged(cage),
        }
    }
}

/// The sandbox an agent runs in. Every key may be left out (the default cage).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cage {
    /// Extra project paths, in file order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filesystem: Option<Vec<Mount>>,
    /// `None`: no network.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<Network>,
    /// `None`: the default profile.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seccomp: Option<Seccomp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<Limits>,
}

/// A project path made visible in the cage.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mount {
    pub path: ProjectPath,
    /// `None`: read-only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<MountMode>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MountMode {
    Ro,
    Rw,
}

/// What network a cage has.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "NetworkText", into = "NetworkText")]
pub enum Network {
    /// Own network namespace with only loopback.
    None,
    /// The host's network, by explicit intent.
    Host,
    /// Only these destinations (host globs with optional ports), through kaged's proxy.
    Allow(Vec<String>),
}

/// [`Network`] as the file writes it.
#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum NetworkText {
    Literal(String),
    Allowlist(Allowlist),
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Allowlist {
    allow: Vec<String>,
}

impl TryFrom<NetworkText> for Network {
    type Error = String;
    fn try_from(text: NetworkText) -> Result<Self, String> {
        match text {
            NetworkText::Literal(s) if s == "none" => Ok(Network::None),
            NetworkText::Literal(s) if s == "host" => Ok(Network::Host),
            NetworkText::Literal(s) => Err(format!("network {s:?} is not none, host or allow")),
            NetworkText::Allowlist(list) => Ok(Network::Allow(list.allow)),
        }
    }
}

impl From<Network> for NetworkText {
    fn from(network: Network) -> Self {
        match network {
            Network::None => NetworkText::Literal("none".into()),
            Network::Host => NetworkText::Literal("host".into()),
            Network::Allow(allow) => NetworkText::Allowlist(Allowlist { allow }),
        }
    }
}

/// A seccomp profile.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Seccomp {
    Default,
    Relaxed,
}

impl Seccomp {
    /// The profile's name, as the file writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Seccomp::Default => "default",
            Seccomp::Relaxed => "relaxed",
        }
    }
}

/// A cage's resource limits; `None` leaves one unset (the daemon's default may fill it).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_mb: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_percent: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pids: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wall_time_secs: Option<u64>,
}

/// A per-agent tool setting.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tool {
    /// `None`: enabled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// `None`: `allow`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval: Option<Approval>,
}

impl Tool {
    /// What a call needs: `enabled: false` is as strict as `deny`.
    pub fn level(&self) -> Approval {
        if self.enabled == Some(false) {
            Approval::Deny
        } else {
            self.approval.unwrap_or_default()
        }
    }

    /// Whether the tool is offered to the model at all.
    pub fn offered(&self) -> bool {
        self.level() != Approval::Deny
    }
}

/// How kaged talks to a command agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Protocol {
    /// A terminal: kaged sees bytes.
    Pty,
    /// The Agent Client Protocol (JSON-RPC on stdio): kaged sees messages, tool calls and
    /// permission requests.
    Acp,
}

/// What a tool call needs before it runs. Ordered from the most to the least permissive, so
/// "tighter" is "greater".
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Approval {
    /// It runs.
    #[default]
    Allow,
    /// Each call waits for the operator's decision.
    Ask,
    /// It is not offered to the model.
    Deny,
}

impl Approval {
    pub fn as_str(self) -> &'static str {
        match self {
            Approval::Allow => "allow",
            Approval::Ask => "ask",
            Approval::Deny => "deny",
        }
    }
}

/// A named project command the operator launches.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Task {
    pub command: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Whose cage it runs in; `None`: primary's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    /// `None`: the project root.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<ProjectPath>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_secs: Option<u64>,
}

/// The project's terminal settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Terminals {
    /// `None`: `bash -l`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shell: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<ProjectPath>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
}

/// A path of the project file: below the project root (`project:/…`) or below `.kaged/`
/// (`config:/…`). Each holds the text after its prefix, unresolved and unchecked beyond what
/// validation did (no `..`, no second leading slash).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum ProjectPath {
    Project(String),
    Config(String),
}

impl TryFrom<String> for ProjectPath {
    type Error = String;
    fn try_from(text: String) -> Result<Self, String> {
        if let Some(rest) = text.strip_prefix("project:/") {
            Ok(ProjectPath::Project(rest.into()))
        } else if let Some(rest) = text.strip_prefix("config:/") {
            Ok(ProjectPath::Config(rest.into()))
        } else {
            Err(format!("{text:?} has no project:/ or config:/ prefix"))
        }
    }
}

impl From<ProjectPath> for String {
    fn from(path: ProjectPath) -> Self {
        path.to_string()
    }
}

impl std::fmt::Display for ProjectPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ProjectPath::Project(rest) => write!(f, "project:/{rest}"),
            ProjectPath::Config(rest) => write!(f, "config:/{rest}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load_project;
    use serde_json::json;

    fn examples() -> Vec<(String, String)> {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/projects");
        let mut out: Vec<(String, String)> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|entry| {
                let path = entry.unwrap().path().join(".kaged/project.yaml");
                let text = std::fs::read_to_string(&path).unwrap();
                (path.display().to_string(), text)
            })
            .collect();
        out.sort();
        assert!(out.len() >= 2, "{out:?}");
        out
    }

    /// Every example converts, and the model carries all of it: written back, it is the
    /// resolved configuration again.
    #[test]
    fn every_example_project_converts_and_carries_everything() {
        for (path, text) in examples() {
            let checked = load_project(&text, None);
            let resolved = checked.resolved().expect(&path);
            let project = Project::from_resolved(&resolved).expect(&path);
            assert_eq!(serde_json::to_value(&project).unwrap(), resolved, "{path}");
            assert_eq!(checked.project().expect(&path).as_ref(), Ok(&project));
        }
    }

    /// A project with every field of the schema, choosing `pick` of each `exactly_one`.
    fn maximal(object: &crate::schema::Object, pick: usize, depth: usize) -> serde_json::Value {
        use crate::schema::{Text, Ty};
        fn text(t: Text) -> serde_json::Value {
            json!(match t {
                Text::Any(_) => "text",
                Text::Slug => "demo",
                Text::Name => "primary",
                Text::Uri => "project:/src",
                Text::ModelAlias => "sonnet",
                Text::HostPattern => "*.example.org:443",
                Text::ToolName => "file.read",
            })
        }
        fn value(ty: &Ty, pick: usize, depth: usize) -> Option<serde_json::Value> {
            Some(match ty {
                Ty::Str(t) => text(*t),
                Ty::Int { max, .. } => json!(max),
                Ty::Bool => json!(true),
                Ty::Enum(values) => json!(values.last()?),
                Ty::Argv => json!(["make", "test"]),
                Ty::List { item, .. } => json!([value(item, pick, depth)?]),
                Ty::Record { key, value: v, .. } => {
                    let name = match key {
                        Text::ToolName => "file.read",
                        _ => "sub",
                    };
                    json!({ name: value(v, pick, depth)? })
                }
                Ty::Object(o) => maximal(o, pick, depth),
                Ty::LiteralOr(_, inner) => value(inner, pick, depth)?,
                Ty::Agent if depth < 2 => maximal(&crate::schema::AGENT, pick, depth + 1),
                Ty::Agent | Ty::Custom(_) => return None,
            })
        }
        let is_excluded = |name: &str| {
            object
                .exactly_one
                .iter()
                .position(|k| *k == name)
                .is_some_and(|i| i != pick)
        };
        // Whether `name` is left out: it is an excluded one of `exactly_one`, or needs (through
        // a chain: `mode` needs `protocol` needs `command`) or is only needed by one.
        fn left_out(
            name: &str,
            object: &crate::schema::Object,
            is_excluded: &dyn Fn(&str) -> bool,
        ) -> bool {
            is_excluded(name)
                || object.requires.iter().any(|(a, b)| {
                    (*a == name && left_out(b, object, is_excluded))
                        || (*b == name && is_excluded(a))
                })
        }
        let mut out = serde_json::Map::new();
        for field in object.fields {
            if left_out(field.name, object, &is_excluded) {
                continue;
            }
            if let Some(v) = value(field.ty, pick, depth) {
                out.insert(field.name.into(), v);
            }
        }
        serde_json::Value::Object(out)
    }

    /// Every field the schema knows is in the model: a project using all of them validates,
    /// converts and is written back whole.
    #[test]
    fn the_model_has_every_field_of_the_schema() {
        for pick in 0..crate::schema::AGENT.exactly_one.len() {
            let mut config = maximal(&crate::schema::PROJECT, pick, 0);
            config["version"] = json!(1);
            let text = serde_json::to_string_pretty(&config).unwrap();
            let checked = load_project(&text, None);
            assert!(checked.is_valid(), "{text}\n{:?}", checked.diagnostics);
            let resolved = checked.resolved().unwrap();
            let project = Project::from_resolved(&resolved).expect(&text);
            assert_eq!(serde_json::to_value(&project).unwrap(), resolved, "{text}");
        }
    }

    #[test]
    fn a_cage_is_carried_exactly() {
        let text = "version: 1\nproject: demo\nprimary:\n  command: [claude]\n  cage:\n    filesystem:\n      - path: project:/out\n        mode: rw\n      - path: config:/cache\n    network:\n      allow: [\"*.github.com:443\", crates.io]\n    seccomp: relaxed\n    limits: {memory_mb: 512, cpu_percent: 150, pids: 64, wall_time_secs: 60}\n  subagents:\n    free:\n      command: [x]\n      cage: disabled\n    host:\n      command: [y]\n      cage: {network: host}\n";
        let project = load_project(text, None).project().unwrap().unwrap();
        assert_eq!(
            project.primary.cage,
            Some(AgentCage::Caged(Cage {
                filesystem: Some(vec![
                    Mount {
                        path: ProjectPath::Project("out".into()),
                        mode: Some(MountMode::Rw),
                    },
                    Mount {
                        path: ProjectPath::Config("cache".into()),
                        mode: None,
                    },
                ]),
                network: Some(Network::Allow(vec![
                    "*.github.com:443".into(),
                    "crates.io".into()
                ])),
                seccomp: Some(Seccomp::Relaxed),
                limits: Some(Limits {
                    memory_mb: Some(512),
                    cpu_percent: Some(150),
                    pids: Some(64),
                    wall_time_secs: Some(60),
                }),
            }))
        );
        assert_eq!(
            project.agent("free").unwrap().cage,
            Some(AgentCage::Disabled)
        );
        assert_eq!(
            project.agent("host").unwrap().cage,
            Some(AgentCage::Caged(Cage {
                network: Some(Network::Host),
                ..Cage::default()
            }))
        );
        assert_eq!(project.agent_names(), ["primary", "free", "host"]);
        assert!(project.agent("ghost").is_none());
    }

    #[test]
    fn absent_tasks_differ_from_no_tasks() {
        let bare = json!({"version": 1, "project": "demo", "primary": {"command": ["x"]}});
        let project = Project::from_resolved(&bare).unwrap();
        assert_eq!(project.tasks, None);
        assert!(project.task_names().is_empty());
        let mut empty = bare.clone();
        empty["tasks"] = json!({});
        assert_eq!(
            Project::from_resolved(&empty).unwrap().tasks,
            Some(BTreeMap::new())
        );
    }

    #[test]
    fn what_never_validates_does_not_convert() {
        assert_eq!(
            Project::from_resolved(&json!(null)),
            Err(ModelError::Absent)
        );
        for bad in [
            json!({"version": 1, "project": "demo"}),
            json!({"version": 1, "project": "demo", "primary": {"command": ["x"], "cage": "off"}}),
            json!({"version": 1, "project": "demo", "primary": {"command": ["x"], "cage": {"network": "lan"}}}),
            json!({"version": 1, "project": "demo", "primary": {"command": ["x"], "extra": 1}}),
            json!({"version": 1, "project": "demo", "primary": {"system_prompt": "/etc/passwd", "model": "m"}}),
        ] {
            assert!(Project::from_resolved(&bad).is_err(), "{bad}");
        }
    }
}
