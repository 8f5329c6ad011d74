//! Which edits of a project loosen what its cages enforce. A run can write project files (a
//! nested project's, for instance), so a reload that weakens a cage is never applied without the
//! operator's word: the edge holds it as pending and shows this list.

use std::collections::BTreeSet;
use std::path::PathBuf;

use kaged_dsl::Project;
use kaged_dsl::model::PRIMARY;

use crate::{Limits, Network, Policy, policy_for};

/// One way a new configuration is weaker than the one in force.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Weakening {
    /// What it concerns: `agent primary`, `task build`, `terminals`, `host grants`.
    pub subject: String,
    /// The change, in words (`cage disabled (was caged)`).
    pub change: String,
}

impl std::fmt::Display for Weakening {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.subject, self.change)
    }
}

/// A host path the operator grants a project in `local.toml`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPath {
    pub host: PathBuf,
    /// Where it appears (`project:/...`, `home:/...`, or the host path itself).
    pub at: String,
    pub writable: bool,
    /// Whether its destination goes on the front of the cage's `PATH`.
    pub on_path: bool,
}

/// What `local.toml` grants a project from the host.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HostGrants {
    pub env: Vec<String>,
    pub paths: Vec<HostPath>,
}

fn network_rank(n: &Network) -> u8 {
    match n {
        Network::None => 0,
        Network::Allow(_) => 1,
        Network::Host => 2,
    }
}

fn network_name(n: &Network) -> String {
    match n {
        Network::None => "none".into(),
        Network::Host => "host".into(),
        Network::Allow(hosts) => format!("allow [{}]", hosts.join(", ")),
    }
}

/// How loose a seccomp profile is; an unknown name counts as the loosest (it cannot be judged).
fn seccomp_rank(profile: &str) -> u8 {
    match profile {
        "default" => 0,
        "relaxed" => 1,
        _ => 2,
    }
}

fn limits(l: &Limits) -> [(&'static str, Option<u64>); 4] {
    [
        ("memory_mb", l.memory_mb),
        ("cpu_percent", l.cpu_percent),
        ("pids", l.pids),
        ("wall_time_secs", l.wall_time_secs),
    ]
}

/// How `new` is weaker than `old`, in words; empty when it is as strict or stricter.
pub fn policy_weakenings(old: &Policy, new: &Policy) -> Vec<String> {
    let (
        Policy::Caged {
            network: old_net,
            mounts: old_mounts,
            seccomp: old_seccomp,
            limits: old_limits,
            // Agents' cages always have a project workspace; a read-only one is stricter.
            ..
        },
        Policy::Caged {
            network: new_net,
            mounts: new_mounts,
            seccomp: new_seccomp,
            limits: new_limits,
            ..
        },
    ) = (old, new)
    else {
        return match (old, new) {
            (Policy::Caged { .. }, Policy::Disabled) => {
                vec!["cage disabled: runs uncaged as the operator (was caged)".into()]
            }
            // Nothing is weaker than no cage.
            _ => Vec::new(),
        };
    };
    let mut out = Vec::new();
    match (old_net, new_net) {
        (Network::Allow(old_hosts), Network::Allow(new_hosts)) => {
            let added: Vec<&str> = new_hosts
                .iter()
                .filter(|h| !old_hosts.contains(h))
                .map(String::as_str)
                .collect();
            if !added.is_empty() {
                out.push(format!("network allowlist gains {}", added.join(", ")));
            }
        }
        (o, n) if network_rank(n) > network_rank(o) => out.push(format!(
            "network {} (was {})",
            network_name(n),
            network_name(o)
        )),
        _ => {}
    }
    for m in new_mounts {
        let at = format!("project:/{}", m.relative.display());
        let mode = |w: bool| if w { "rw" } else { "ro" };
        match old_mounts.iter().find(|o| o.relative == m.relative) {
            None => out.push(format!(
                "filesystem grant added: {at} ({})",
                mode(m.writable)
            )),
            Some(o) if m.writable && !o.writable => {
                out.push(format!("filesystem grant {at} is now rw (was ro)"))
            }
            Some(_) => {}
        }
    }
    if seccomp_rank(new_seccomp) > seccomp_rank(old_seccomp)
        || (seccomp_rank(new_seccomp) == 2 && new_seccomp != old_seccomp)
    {
        out.push(format!("seccomp {new_seccomp} (was {old_seccomp})"));
    }
    for ((name, old_value), (_, new_value)) in
        limits(old_limits).into_iter().zip(limits(new_limits))
    {
        match (old_value, new_value) {
            (Some(o), None) => out.push(format!("limits.{name} removed (was {o})")),
            (Some(o), Some(n)) if n > o => {
                out.push(format!("limits.{name} raised to {n} (was {o})"))
            }
            _ => {}
        }
    }
    out
}

/// The policy an agent had. An agent that did not exist (or no configuration in force) is held
/// to the default cage, so a new agent is judged like an edit of the default.
fn policy_or_default(old: Option<&Project>, agent: &str) -> Policy {
    old.and_then(|project| policy_for(project, agent).ok())
        .unwrap_or_else(Policy::default_cage)
}

/// Every agent's name; without a configuration, `primary` only.
fn agent_names(project: Option<&Project>) -> Vec<String> {
    project.map_or_else(|| vec![PRIMARY.to_string()], Project::agent_names)
}

/// The agent whose cage terminals (`None`) or a task run in. `None` for a task when the
/// project has no `tasks:` at all (a task new to a project that had other tasks is held to
/// primary's cage).
fn run_agent(project: Option<&Project>, task: Option<&str>) -> Option<String> {
    let agent = match task {
        None => project
            .and_then(|p| p.terminals.as_ref())
            .and_then(|t| t.agent.as_deref()),
        Some(t) => project?
            .tasks
            .as_ref()?
            .get(t)
            .and_then(|task| task.agent.as_deref()),
    };
    Some(agent.unwrap_or(PRIMARY).to_string())
}

/// Every way the project `new` (with the operator's `new_grants`) is weaker than `old` (with
/// `old_grants`; `None`: no configuration was in force): per agent, per terminal or task that
/// moved to another agent's cage, and per host grant. Empty when the change only tightens or
/// is neutral.
pub fn weakenings(
    old: Option<&Project>,
    new: &Project,
    old_grants: &HostGrants,
    new_grants: &HostGrants,
) -> Vec<Weakening> {
    let mut out = Vec::new();
    let mut push = |subject: String, changes: Vec<String>| {
        out.extend(changes.into_iter().map(|change| Weakening {
            subject: subject.clone(),
            change,
        }));
    };
    for agent in new.agent_names() {
        let Ok(n) = policy_for(new, &agent) else {
            continue;
        };
        let mut changes = policy_weakenings(&policy_or_default(old, &agent), &n);
        if !agent_names(old).contains(&agent) && !changes.is_empty() {
            changes.insert(0, "new agent".into());
        }
        push(format!("agent {agent}"), changes);
    }
    // A terminal or task moved into another agent's (looser) cage.
    let mut runs: Vec<(String, Option<String>)> = vec![("terminals".into(), None)];
    runs.extend(
        new.task_names()
            .into_iter()
            .map(|t| (format!("task {t}"), Some(t))),
    );
    for (subject, task) in runs {
        let (Some(old_agent), Some(new_agent)) = (
            run_agent(old, task.as_deref()),
            run_agent(Some(new), task.as_deref()),
        ) else {
            continue;
        };
        if old_agent == new_agent {
            continue;
        }
        let Ok(n) = policy_for(new, &new_agent) else {
            continue;
        };
        let changes = policy_weakenings(&policy_or_default(old, &old_agent), &n)
            .into_iter()
            .map(|c| format!("runs in agent {new_agent}'s cage (was {old_agent}'s): {c}"))
            .collect();
        push(subject, changes);
    }
    let mut grants = Vec::new();
    let old_env: BTreeSet<&String> = old_grants.env.iter().collect();
    for var in &new_grants.env {
        if !old_env.contains(var) {
            grants.push(format!("environment variable {var} granted"));
        }
    }
    for p in &new_grants.paths {
        let what = format!("host path {} at {}", p.host.display(), p.at);
        match old_grants
            .paths
            .iter()
            .find(|o| o.host == p.host && o.at == p.at)
        {
            None => grants.push(format!(
                "{what} granted ({})",
                if p.writable { "rw" } else { "ro" }
            )),
            Some(o) if p.writable && !o.writable => {
                grants.push(format!("{what} is now rw (was ro)"))
            }
            Some(_) => {}
        }
    }
    push("host grants".into(), grants);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn project(primary_cage: Value) -> Value {
        let mut primary = json!({"command": ["sh"]});
        if !primary_cage.is_null() {
            primary["cage"] = primary_cage;
        }
        json!({"version": 1, "project": "demo", "primary": primary,
               "tasks": {"build": {"command": ["make"]}}})
    }

    fn model(config: &Value) -> Project {
        Project::from_resolved(config).unwrap()
    }

    /// `old` as a daemon holds it: `Null` when no configuration is in force.
    fn changes(old: &Value, new: &Value) -> Vec<String> {
        let old = (!old.is_null()).then(|| model(old));
        weakenings(
            old.as_ref(),
            &model(new),
            &HostGrants::default(),
            &HostGrants::default(),
        )
        .iter()
        .map(ToString::to_string)
        .collect()
    }

    #[test]
    fn each_kind_of_weakening_is_listed() {
        let caged = project(json!({"network": "none", "seccomp": "default",
            "limits": {"memory_mb": 512, "pids": 64},
            "filesystem": [{"path": "project:/out", "mode": "ro"}]}));
        let cases: &[(Value, &str)] = &[
            (
                project(json!("disabled")),
                "agent primary: cage disabled: runs uncaged as the operator (was caged)",
            ),
            (
                project(json!({"network": "host", "seccomp": "default",
                    "limits": {"memory_mb": 512, "pids": 64},
                    "filesystem": [{"path": "project:/out", "mode": "ro"}]})),
                "agent primary: network host (was none)",
            ),
            (
                project(
                    json!({"network": {"allow": ["pypi.org"]}, "seccomp": "default",
                    "limits": {"memory_mb": 512, "pids": 64},
                    "filesystem": [{"path": "project:/out", "mode": "ro"}]}),
                ),
                "agent primary: network allow [pypi.org] (was none)",
            ),
            (
                project(json!({"seccomp": "relaxed",
                    "limits": {"memory_mb": 512, "pids": 64},
                    "filesystem": [{"path": "project:/out", "mode": "ro"}]})),
                "agent primary: seccomp relaxed (was default)",
            ),
            (
                project(json!({"limits": {"memory_mb": 1024, "pids": 64},
                    "filesystem": [{"path": "project:/out", "mode": "ro"}]})),
                "agent primary: limits.memory_mb raised to 1024 (was 512)",
            ),
            (
                project(json!({"limits": {"memory_mb": 512},
                    "filesystem": [{"path": "project:/out", "mode": "ro"}]})),
                "agent primary: limits.pids removed (was 64)",
            ),
            (
                project(json!({"limits": {"memory_mb": 512, "pids": 64},
                    "filesystem": [{"path": "project:/out", "mode": "rw"}]})),
                "agent primary: filesystem grant project:/out is now rw (was ro)",
            ),
            (
                project(json!({"limits": {"memory_mb": 512, "pids": 64},
                    "filesystem": [{"path": "project:/out", "mode": "ro"},
                                   {"path": "config:/secrets", "mode": "rw"}]})),
                "agent primary: filesystem grant added: project:/.kaged/secrets (rw)",
            ),
        ];
        for (new, want) in cases {
            assert_eq!(changes(&caged, new), vec![want.to_string()], "{new}");
        }
    }

    #[test]
    fn tightening_and_neutral_edits_list_nothing() {
        let loose = project(json!({"network": "host", "seccomp": "relaxed",
            "limits": {"memory_mb": 1024},
            "filesystem": [{"path": "project:/out", "mode": "rw"}]}));
        let tight = project(json!({"network": "none",
            "limits": {"memory_mb": 512, "pids": 10},
            "filesystem": [{"path": "project:/out", "mode": "ro"}]}));
        assert!(changes(&loose, &tight).is_empty());
        assert!(changes(&project(json!("disabled")), &loose).is_empty());
        // Another command, same cage.
        let mut renamed = tight.clone();
        renamed["primary"]["command"] = json!(["bash"]);
        assert!(changes(&tight, &renamed).is_empty());
        // A shorter allowlist.
        let two = project(json!({"network": {"allow": ["a.org", "b.org"]}}));
        let one = project(json!({"network": {"allow": ["a.org"]}}));
        assert!(changes(&two, &one).is_empty());
        assert_eq!(
            changes(&one, &two),
            vec!["agent primary: network allowlist gains b.org"]
        );
        // Host to an allowlist is tighter; an allowlist to host is not.
        assert!(changes(&project(json!({"network": "host"})), &two).is_empty());
        assert_eq!(
            changes(&two, &project(json!({"network": "host"}))),
            vec!["agent primary: network host (was allow [a.org, b.org])"]
        );
    }

    #[test]
    fn new_agents_are_judged_against_the_default_cage_and_moved_runs_too() {
        let old = project(Value::Null);
        let mut new = old.clone();
        new["primary"]["subagents"] = json!({"helper": {"command": ["x"], "cage": "disabled"}});
        assert_eq!(
            changes(&old, &new),
            vec![
                "agent helper: new agent",
                "agent helper: cage disabled: runs uncaged as the operator (was caged)"
            ]
        );
        // A new agent in the default cage is neutral.
        new["primary"]["subagents"]["helper"] = json!({"command": ["x"]});
        assert!(changes(&old, &new).is_empty());
        // A task moved into an uncaged agent that was already there.
        let mut before = old.clone();
        before["primary"]["subagents"] = json!({"helper": {"command": ["x"], "cage": "disabled"}});
        let mut after = before.clone();
        after["tasks"]["build"]["agent"] = json!("helper");
        assert_eq!(
            changes(&before, &after),
            vec![
                "task build: runs in agent helper's cage (was primary's): cage disabled: runs uncaged as the operator (was caged)"
            ]
        );
        // An old configuration that never validated (Null) is held to the default cage.
        assert_eq!(changes(&Value::Null, &project(json!("disabled"))).len(), 1);
    }

    #[test]
    fn new_host_grants_are_listed() {
        let old = HostGrants {
            env: vec!["A".into()],
            paths: vec![HostPath {
                host: "/data".into(),
                at: "project:/data".into(),
                writable: false,
                on_path: false,
            }],
        };
        let mut new = old.clone();
        new.env.push("GITHUB_TOKEN".into());
        new.paths[0].writable = true;
        new.paths.push(HostPath {
            host: "/srv".into(),
            at: "project:/srv".into(),
            writable: false,
            on_path: false,
        });
        let config = model(&project(Value::Null));
        let got: Vec<String> = weakenings(Some(&config), &config, &old, &new)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            got,
            vec![
                "host grants: environment variable GITHUB_TOKEN granted",
                "host grants: host path /data at project:/data is now rw (was ro)",
                "host grants: host path /srv at project:/srv granted (ro)",
            ]
        );
        assert!(weakenings(Some(&config), &config, &new, &old).is_empty());
    }
}
