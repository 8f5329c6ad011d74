//! Process trees from `/proc` (this kernel may lack `/proc/PID/task/TID/children`, so the
//! parent links are read from every `/proc/PID/stat`).

use std::collections::HashMap;

/// `(parent, session)` of a process from the text of its `/proc/PID/stat`. The command name
/// sits in parentheses and may itself hold spaces and parentheses, so the fields after the
/// last `)` are the ones to count: state, ppid, pgrp, session.
fn parent_and_session(stat: &str) -> Option<(u32, u32)> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let _state = fields.next()?;
    let parent = fields.next()?.parse().ok()?;
    let _pgrp = fields.next()?;
    Some((parent, fields.next()?.parse().ok()?))
}

/// Every process now: `(pid, parent, session)`.
fn processes() -> Vec<(u32, u32, u32)> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| {
            let pid = entry.file_name().to_str()?.parse::<u32>().ok()?;
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            let (parent, session) = parent_and_session(&stat)?;
            Some((pid, parent, session))
        })
        .collect()
}

fn descendants_in(all: &[(u32, u32, u32)], root: u32) -> Vec<u32> {
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    for &(pid, parent, _) in all {
        children.entry(parent).or_default().push(pid);
    }
    let mut out = Vec::new();
    let mut queue = vec![root];
    while let Some(pid) = queue.pop() {
        for &child in children.get(&pid).into_iter().flatten() {
            out.push(child);
            queue.push(child);
        }
    }
    out
}

/// Every live descendant of `root` (not `root` itself), parents before children.
pub fn descendants(root: u32) -> Vec<u32> {
    descendants_in(&processes(), root)
}

/// Every live process of `root`'s run: its descendants, and every process still in the
/// session `root` leads (a run's processes keep it even when orphaned, e.g. a cage whose
/// bwrap died before `--die-with-parent` took hold).
pub fn members(root: u32) -> Vec<u32> {
    let all = processes();
    let mut out = descendants_in(&all, root);
    for &(pid, _, session) in &all {
        if session == root && pid != root && !out.contains(&pid) {
            out.push(pid);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parent_is_read_after_the_last_parenthesis() {
        assert_eq!(parent_and_session("42 (sh) S 7 42 40 0"), Some((7, 40)));
        assert_eq!(parent_and_session("42 (a) b) (c) R 9 1 41"), Some((9, 41)));
        assert_eq!(parent_and_session("42 (truncated"), None);
    }

    #[test]
    fn finds_grandchildren() {
        let mut child = std::process::Command::new("sh")
            .args(["-c", "sh -c 'sleep 30' & wait"])
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(200));
        let found = descendants(child.id());
        let _ = child.kill();
        for pid in &found {
            let _ = std::process::Command::new("kill")
                .arg(pid.to_string())
                .status();
        }
        let _ = child.wait();
        assert!(found.len() >= 2, "{found:?}");
    }
}
