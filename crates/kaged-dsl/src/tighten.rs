//! `project.local.yaml` may tighten a tool's `approval`, never loosen it: the committed file's
//! `ask` or `deny` stays at least that strict whatever the overlay says (a changed value, a
//! removed entry, `enabled: true` over `enabled: false`).

use std::collections::BTreeMap;

use crate::model::Approval;
use crate::tree::{Diagnostic, Kind, Node, Pos, Value};

/// Key path (agent path, then `tools`, then the tool) of every tool setting in `tree`.
type Levels = BTreeMap<Vec<String>, Approval>;

/// A diagnostic for every tool whose approval the overlay made more permissive than the base
/// file's, while its agent still exists.
pub(crate) fn loosened(base: &Node, overlay: &Node, merged: &Node) -> Vec<Diagnostic> {
    let before = levels(base);
    let after = levels(merged);
    let mut out = Vec::new();
    for (path, was) in before {
        let agent = &path[..path.len() - 2];
        if was == Approval::Allow || lookup(merged, agent).is_none() {
            continue;
        }
        let now = after.get(&path).copied().unwrap_or(Approval::Allow);
        if now >= was {
            continue;
        }
        let tool = &path[path.len() - 1];
        out.push(Diagnostic {
            pos: deepest(overlay, &path),
            path: path.join("."),
            problem: format!(
                "project.local.yaml makes `{tool}` {} but project.yaml says `approval: {}`",
                describe(now),
                was.as_str()
            ),
            hint: format!(
                "a local file may only tighten approvals (allow < ask < deny); keep `approval: {}` or stricter, or change project.yaml",
                was.as_str()
            ),
        });
    }
    out
}

fn describe(level: Approval) -> &'static str {
    match level {
        Approval::Allow => "run without asking",
        Approval::Ask => "ask",
        Approval::Deny => "denied",
    }
}

fn levels(tree: &Node) -> Levels {
    let mut out = Levels::new();
    if let Some(primary) = tree.get(crate::model::PRIMARY) {
        walk(primary, vec![crate::model::PRIMARY.to_string()], &mut out);
    }
    out
}

fn walk(agent: &Node, path: Vec<String>, out: &mut Levels) {
    if let Some(Kind::Map(tools)) = agent.get("tools").map(|n| &n.kind) {
        for tool in tools {
            let mut at = path.clone();
            at.push("tools".into());
            at.push(tool.key.clone());
            out.insert(at, level(&tool.value));
        }
    }
    if let Some(Kind::Map(subs)) = agent.get("subagents").map(|n| &n.kind) {
        for sub in subs {
            let mut at = path.clone();
            at.push("subagents".into());
            at.push(sub.key.clone());
            walk(&sub.value, at, out);
        }
    }
}

/// A tool setting's effective level: `enabled: false` is as strict as `deny`.
fn level(tool: &Node) -> Approval {
    if matches!(
        tool.get("enabled").map(|n| &n.kind),
        Some(Kind::Scalar(Value::Bool(false)))
    ) {
        return Approval::Deny;
    }
    match tool.get("approval").map(|n| &n.kind) {
        Some(Kind::Scalar(Value::Str(s))) if s == "ask" => Approval::Ask,
        Some(Kind::Scalar(Value::Str(s))) if s == "deny" => Approval::Deny,
        _ => Approval::Allow,
    }
}

fn lookup<'a>(tree: &'a Node, path: &[String]) -> Option<&'a Node> {
    path.iter().try_fold(tree, |node, key| node.get(key))
}

/// Where in the overlay the change to `path` was made: its deepest entry on the way (the
/// `approval`/`enabled` value, the tool's entry, or a whole map it replaced or removed).
fn deepest(overlay: &Node, path: &[String]) -> Pos {
    let mut node = overlay;
    let mut pos = overlay.pos;
    for key in path {
        let Kind::Map(entries) = &node.kind else {
            return pos;
        };
        let Some(entry) = entries.iter().find(|e| e.key == *key) else {
            return pos;
        };
        pos = entry.key_pos;
        node = &entry.value;
    }
    if let Kind::Map(entries) = &node.kind
        && let Some(entry) = entries
            .iter()
            .find(|e| e.key == "approval" || e.key == "enabled")
    {
        pos = entry.key_pos;
    }
    pos
}
