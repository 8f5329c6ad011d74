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

/// The start time of a process (clock ticks after boot, field 22) from the text of its
/// `/proc/PID/stat`: with the PID, it names one process (a PID alone may be reused).
pub(crate) fn start_time(stat: &str) -> Option<u64> {
    // Fields after the last `)` start at the third (state); the start time is the 22nd.
    stat[stat.rfind(')')? + 1..]
        .split_whitespace()
        .nth(22 - 3)?
        .parse()
        .ok()
}

/// A process seen by a scan.
#[derive(Debug, Clone, Copy)]
struct Seen {
    pid: u32,
    parent: u32,
    session: u32,
    start: u64,
}

/// Every process now.
fn processes() -> Vec<Seen> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| {
            let pid = entry.file_name().to_str()?.parse::<u32>().ok()?;
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            let (parent, session) = parent_and_session(&stat)?;
            Some(Seen {
                pid,
                parent,
                session,
                start: start_time(&stat)?,
            })
        })
        .collect()
}

fn descendants_in(all: &[Seen], root: u32) -> Vec<Seen> {
    let mut children: HashMap<u32, Vec<Seen>> = HashMap::new();
    for seen in all {
        children.entry(seen.parent).or_default().push(*seen);
    }
    let mut out = Vec::new();
    let mut queue = vec![root];
    while let Some(pid) = queue.pop() {
        for &child in children.get(&pid).into_iter().flatten() {
            out.push(child);
            queue.push(child.pid);
        }
    }
    out
}

/// Every live descendant of `root` (not `root` itself), parents before children.
pub fn descendants(root: u32) -> Vec<u32> {
    descendants_in(&processes(), root)
        .into_iter()
        .map(|s| s.pid)
        .collect()
}

/// Every live process of `root`'s run: its descendants, and every process still in the
/// session `root` leads (a run's processes keep it even when orphaned, e.g. a cage whose
/// bwrap died before `--die-with-parent` took hold).
pub fn members(root: u32) -> Vec<u32> {
    members_seen(root).into_iter().map(|(pid, _)| pid).collect()
}

/// [`members`] with the start time each had when seen: `(pid, start)`.
pub(crate) fn members_seen(root: u32) -> Vec<(u32, u64)> {
    let all = processes();
    let mut out = descendants_in(&all, root);
    for seen in &all {
        if seen.session == root && seen.pid != root && !out.iter().any(|s| s.pid == seen.pid) {
            out.push(*seen);
        }
    }
    out.into_iter().map(|s| (s.pid, s.start)).collect()
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
    fn start_time_is_the_22nd_field() {
        let stat = "42 (a) b) S 1 42 42 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 50";
        assert_eq!(start_time(stat), Some(987654));
        assert_eq!(start_time("42 (sh) S 1 42 42"), None);
        let own = std::fs::read_to_string("/proc/self/stat").unwrap();
        assert!(start_time(&own).is_some_and(|t| t > 0), "{own}");
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
