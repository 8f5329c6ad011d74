//! An agent's cage policy, from the typed project model: what kind of network, which project
//! paths, which seccomp profile and which limits. [`crate::compile`] turns it into bwrap's
//! command line.

use std::path::{Component, Path, PathBuf};

use kaged_dsl::Project;
use kaged_dsl::model::{AgentCage, MountMode, ProjectPath, Seccomp};

pub use kaged_dsl::model::{Limits, Network};

use crate::CageError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// Relative to the project root.
    pub relative: PathBuf,
    pub writable: bool,
}

/// What the directory bound at [`WORKSPACE`](crate::WORKSPACE) is to the cage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Workspace {
    /// A project: read-write, its `.git` and `.kaged` read-only (an absent `.git` masked).
    #[default]
    Project,
    /// A directory the cage only reads (a plugin's own): nothing can be planted in it, so
    /// nothing below it needs masking.
    ReadOnly,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Policy {
    /// `cage: disabled`: runs as the daemon user, audited as such.
    Disabled,
    Caged {
        network: Network,
        mounts: Vec<Mount>,
        seccomp: String,
        limits: Limits,
        workspace: Workspace,
    },
}

impl Policy {
    /// The default cage: no network, nothing but the workspace.
    pub fn default_cage() -> Policy {
        Policy::Caged {
            network: Network::None,
            mounts: Vec::new(),
            seccomp: Seccomp::Default.as_str().into(),
            limits: Limits::default(),
            workspace: Workspace::Project,
        }
    }
}

/// Where a cage's filesystem grant lies below the project root: `project:/x` is `x`,
/// `config:/x` is `.kaged/x`. `None` for anything but plain names (`.` or a leading `/`
/// included): validation refuses `..`, this refuses the rest.
fn mount_relative(path: &ProjectPath) -> Option<PathBuf> {
    let relative = match path {
        ProjectPath::Project(rest) => PathBuf::from(rest),
        ProjectPath::Config(rest) => Path::new(".kaged").join(rest),
    };
    let plain = relative
        .components()
        .all(|c| matches!(c, Component::Normal(_)));
    (plain || relative.as_os_str().is_empty()).then_some(relative)
}

/// The cage policy of `agent` in a project.
pub fn policy_for(project: &Project, agent: &str) -> Result<Policy, CageError> {
    let found = project
        .agent(agent)
        .ok_or_else(|| CageError::UnknownAgent(agent.into(), project.agent_names().join(", ")))?;
    let cage = match &found.cage {
        None => return Ok(Policy::default_cage()),
        Some(AgentCage::Disabled) => return Ok(Policy::Disabled),
        Some(AgentCage::Caged(cage)) => cage,
    };
    let mounts = cage
        .filesystem
        .iter()
        .flatten()
        .map(|m| {
            Ok(Mount {
                relative: mount_relative(&m.path).ok_or_else(|| CageError::Malformed {
                    agent: agent.into(),
                    field: "cage.filesystem.path".into(),
                })?,
                writable: m.mode == Some(MountMode::Rw),
            })
        })
        .collect::<Result<_, CageError>>()?;
    Ok(Policy::Caged {
        network: cage.network.clone().unwrap_or(Network::None),
        mounts,
        seccomp: cage.seccomp.unwrap_or(Seccomp::Default).as_str().into(),
        limits: cage.limits.clone().unwrap_or_default(),
        workspace: Workspace::Project,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use serde_json::json;

    /// A project of three agents besides primary: host network with a rw grant, uncaged, and an
    /// allowlist with a process limit.
    pub(crate) fn project() -> Project {
        Project::from_resolved(&json!({
            "version": 1,
            "project": "demo",
            "primary": {
                "command": ["claude"],
                "subagents": {
                    "net": {"command": ["x"], "cage": {"network": "host", "filesystem": [{"path": "project:/data", "mode": "rw"}]}},
                    "free": {"command": ["y"], "cage": "disabled"},
                    "allow": {"command": ["z"], "cage": {"network": {"allow": ["*.github.com:443"]}, "limits": {"pids": 64}}}
                }
            }
        }))
        .unwrap()
    }

    #[test]
    fn each_agent_gets_its_own_policy() {
        let p = project();
        assert_eq!(policy_for(&p, "primary").unwrap(), Policy::default_cage());
        assert_eq!(
            policy_for(&p, "net").unwrap(),
            Policy::Caged {
                network: Network::Host,
                mounts: vec![Mount {
                    relative: "data".into(),
                    writable: true
                }],
                seccomp: "default".into(),
                limits: Limits::default(),
                workspace: Workspace::Project,
            }
        );
        assert_eq!(policy_for(&p, "free").unwrap(), Policy::Disabled);
        assert_eq!(
            policy_for(&p, "allow").unwrap(),
            Policy::Caged {
                network: Network::Allow(vec!["*.github.com:443".into()]),
                mounts: Vec::new(),
                seccomp: "default".into(),
                limits: Limits {
                    pids: Some(64),
                    ..Limits::default()
                },
                workspace: Workspace::Project,
            }
        );
        assert_eq!(
            policy_for(&p, "ghost").unwrap_err().to_string(),
            "no agent named `ghost` in this project (agents: primary, allow, free, net)"
        );
    }

    #[test]
    fn grants_below_kaged_and_odd_paths() {
        let with = |path: &str| {
            Project::from_resolved(&json!({"version": 1, "project": "demo", "primary": {
                "command": ["x"], "cage": {"seccomp": "relaxed", "filesystem": [{"path": path}]}}}))
            .unwrap()
        };
        let Policy::Caged {
            mounts, seccomp, ..
        } = policy_for(&with("config:/cache"), "primary").unwrap()
        else {
            panic!("caged");
        };
        assert_eq!(
            (mounts, seccomp.as_str()),
            (
                vec![Mount {
                    relative: ".kaged/cache".into(),
                    writable: false
                }],
                "relaxed"
            )
        );
        assert!(policy_for(&with("project:/"), "primary").is_ok());
        for odd in ["project:/./x", "project://x", "project:/."] {
            assert_eq!(
                policy_for(&with(odd), "primary").unwrap_err().to_string(),
                "the cage policy of `primary` is malformed at cage.filesystem.path",
                "{odd}"
            );
        }
    }
}
