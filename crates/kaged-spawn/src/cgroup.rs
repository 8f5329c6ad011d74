//! What this host offers to enforce limits (found once), and a cage's own cgroup v1 groups.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use kaged_cage::{CPU_PERIOD_US, CgroupValues, LimitFacts};

/// The cgroup v1 directory this process lives in for `controller`, when it is writable.
fn own_v1_dir(controller: &str) -> Option<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let path = text.lines().find_map(|line| {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        controllers
            .split(',')
            .any(|c| c == controller)
            .then(|| path.to_string())
    })?;
    let dir = Path::new("/sys/fs/cgroup")
        .join(controller)
        .join(path.trim_start_matches('/'));
    // Writable means a child group can be made here: try one.
    let probe = dir.join(format!("kaged-probe-{}", std::process::id()));
    std::fs::create_dir(&probe).ok()?;
    let _ = std::fs::remove_dir(&probe);
    Some(dir)
}

struct HostLimits {
    facts: LimitFacts,
    pids: Option<PathBuf>,
    memory: Option<PathBuf>,
    cpu: Option<PathBuf>,
}

fn host() -> &'static HostLimits {
    static HOST: OnceLock<HostLimits> = OnceLock::new();
    HOST.get_or_init(|| {
        let systemd_user = std::process::Command::new("systemd-run")
            .args(["--user", "--scope", "--quiet", "--collect", "true"])
            // Not our service manager's business: a failure would be reported as ours.
            .env_remove("NOTIFY_SOCKET")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        let (pids, memory, cpu) = (own_v1_dir("pids"), own_v1_dir("memory"), own_v1_dir("cpu"));
        HostLimits {
            facts: LimitFacts {
                systemd_user,
                cgroup_pids: pids.is_some(),
                cgroup_memory: memory.is_some(),
                cgroup_cpu: cpu.is_some(),
            },
            pids,
            memory,
            cpu,
        }
    })
}

/// The cgroup directories in which this process makes run groups.
pub(crate) fn roots() -> Vec<PathBuf> {
    let host = host();
    [&host.pids, &host.memory, &host.cpu]
        .into_iter()
        .flatten()
        .cloned()
        .collect()
}

/// How this host can enforce limits (probed once per process).
pub fn limit_facts() -> LimitFacts {
    host().facts
}

/// A cage's own cgroups: made before it starts, emptied and removed after it ends.
#[derive(Debug, Default)]
pub struct Cgroups {
    dirs: Vec<PathBuf>,
}

impl Cgroups {
    /// Make the groups `values` needs, named after the run.
    pub fn create(name: &str, values: &CgroupValues) -> std::io::Result<Cgroups> {
        let host = host();
        let mut groups = Cgroups::default();
        // Dropping `groups` on an error removes what was made so far.
        let make = |groups: &mut Cgroups,
                    parent: &Option<PathBuf>,
                    files: &[(&str, String)]|
         -> std::io::Result<PathBuf> {
            let parent = parent
                .as_ref()
                .ok_or_else(|| std::io::Error::other("the cgroup is not writable"))?;
            let dir = parent.join(format!("kaged-{name}"));
            std::fs::create_dir(&dir)?;
            groups.dirs.push(dir.clone());
            for (file, value) in files {
                std::fs::write(dir.join(file), value)?;
            }
            Ok(dir)
        };
        if let Some(max) = values.pids_max {
            make(&mut groups, &host.pids, &[("pids.max", max.to_string())])?;
        }
        if let Some(bytes) = values.memory_bytes {
            // memsw exists only with swap accounting; the plain limit is set either way.
            let dir = make(
                &mut groups,
                &host.memory,
                &[("memory.limit_in_bytes", bytes.to_string())],
            )?;
            let _ = std::fs::write(dir.join("memory.memsw.limit_in_bytes"), bytes.to_string());
        }
        if let Some(quota) = values.cpu_quota_us {
            make(
                &mut groups,
                &host.cpu,
                &[
                    ("cpu.cfs_period_us", CPU_PERIOD_US.to_string()),
                    ("cpu.cfs_quota_us", quota.to_string()),
                ],
            )?;
        }
        Ok(groups)
    }

    /// The `cgroup.procs` files the launcher joins before it becomes the cage.
    pub fn procs_files(&self) -> Vec<PathBuf> {
        self.dirs.iter().map(|d| d.join("cgroup.procs")).collect()
    }

    /// Give the groups up without removing them (a run holder adopts them): the caller now
    /// owns their removal.
    pub fn release(mut self) -> Vec<PathBuf> {
        std::mem::take(&mut self.dirs)
    }

    /// Take over groups another process made (see [`Cgroups::release`]): dropping them kills
    /// what is left in them and removes them. Only `kaged-*` directories under
    /// `/sys/fs/cgroup` are taken; others are ignored.
    pub fn adopt(dirs: Vec<PathBuf>) -> Cgroups {
        let dirs = dirs
            .into_iter()
            .filter(|d| {
                d.starts_with("/sys/fs/cgroup")
                    && d.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with("kaged-"))
                    && !d.components().any(|c| c == std::path::Component::ParentDir)
            })
            .collect();
        Cgroups { dirs }
    }

    /// The groups' directories.
    pub fn dirs(&self) -> &[PathBuf] {
        &self.dirs
    }

    /// Whether the cage's pids group hit its limit (a fork was refused).
    pub fn pids_limit_hit(&self) -> bool {
        self.dirs.iter().any(|d| {
            std::fs::read_to_string(d.join("pids.events"))
                .is_ok_and(|t| t.split_whitespace().nth(1).is_some_and(|n| n != "0"))
        })
    }
}

impl Drop for Cgroups {
    fn drop(&mut self) {
        for dir in &self.dirs {
            // Anything left (it should not be) is killed so the group can go.
            for _ in 0..20 {
                crate::pidfd::kill_cgroup(dir);
                if std::fs::remove_dir(dir).is_ok() {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn released_groups_are_kept_and_only_kaged_groups_are_adopted() {
        let dir = tempfile::tempdir().unwrap();
        let kept = dir.path().join("kaged-x");
        std::fs::create_dir(&kept).unwrap();
        let released = Cgroups {
            dirs: vec![kept.clone()],
        }
        .release();
        assert_eq!(released, vec![kept.clone()]);
        assert!(kept.exists(), "release removed the group");
        let adopted = Cgroups::adopt(vec![
            kept,
            "/sys/fs/cgroup/pids/kaged-0011".into(),
            "/sys/fs/cgroup/pids/other".into(),
            "/sys/fs/cgroup/pids/../kaged-0011".into(),
        ]);
        assert_eq!(
            adopted.release(),
            vec![PathBuf::from("/sys/fs/cgroup/pids/kaged-0011")]
        );
    }
}
