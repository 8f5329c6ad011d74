//! How a cage's limits are enforced on this host. Pure: the limits and the host's facts in,
//! the mechanisms and what stays unenforced out.
//!
//! Preference, per limit:
//! - a systemd user session: one transient scope (`systemd-run --user --scope`) carries all;
//! - cgroup v1 hierarchies the daemon may write (root, or delegated): `pids.max`,
//!   `memory.limit_in_bytes` (+ `memsw`), `cpu.cfs_quota_us`;
//! - otherwise rlimits, which are per process (`RLIMIT_AS` for memory) and a watchdog that
//!   counts the cage's processes. `RLIMIT_NPROC` is never used: it counts every process of the
//!   user (the daemon's threads and other cages included), so it cannot be a per-cage limit.
//!
//! Wall time is always the daemon's own timer. Whatever is weaker than asked is reported.

use crate::Limits;

/// What the edge found on the host.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LimitFacts {
    /// `systemd-run --user --scope` works (a systemd user session with delegation).
    pub systemd_user: bool,
    /// Writable cgroup v1 hierarchies.
    pub cgroup_pids: bool,
    pub cgroup_memory: bool,
    pub cgroup_cpu: bool,
}

/// Values for cgroup v1 files of the cage's own group (`None`: not set).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CgroupValues {
    pub pids_max: Option<u64>,
    pub memory_bytes: Option<u64>,
    /// `cpu.cfs_quota_us` against a 100 ms period.
    pub cpu_quota_us: Option<u64>,
}

impl CgroupValues {
    pub fn is_empty(&self) -> bool {
        *self == CgroupValues::default()
    }
}

/// The CFS period kaged sets with a CPU quota.
pub const CPU_PERIOD_US: u64 = 100_000;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LimitPlan {
    /// Program and options to put in front of the cage (`systemd-run ... --`), if any.
    pub prefix: Vec<String>,
    /// `prlimit` options.
    pub rlimits: Vec<String>,
    pub cgroup: CgroupValues,
    /// A process count the watchdog enforces by killing the run.
    pub watchdog_pids: Option<u64>,
    pub wall_time_secs: Option<u64>,
    /// How each limit is enforced, for the audit log and the operator.
    pub enforced: Vec<String>,
    /// Limits enforced weaker than asked, or not at all.
    pub unenforced: Vec<String>,
}

pub fn plan_limits(limits: &Limits, facts: &LimitFacts) -> LimitPlan {
    let mut plan = LimitPlan {
        wall_time_secs: limits.wall_time_secs,
        ..Default::default()
    };
    if let Some(secs) = limits.wall_time_secs {
        plan.enforced
            .push(format!("wall time {secs}s: kaged kills the run"));
    }
    if limits.memory_mb.is_none() && limits.pids.is_none() && limits.cpu_percent.is_none() {
        return plan;
    }
    if facts.systemd_user {
        let mut prefix: Vec<String> = ["systemd-run", "--user", "--scope", "--quiet", "--collect"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        if let Some(mb) = limits.memory_mb {
            prefix.push(format!("--property=MemoryMax={mb}M"));
            prefix.push("--property=MemorySwapMax=0".into());
            plan.enforced
                .push(format!("memory {mb} MiB: systemd scope"));
        }
        if let Some(pids) = limits.pids {
            prefix.push(format!("--property=TasksMax={pids}"));
            plan.enforced.push(format!("pids {pids}: systemd scope"));
        }
        if let Some(pct) = limits.cpu_percent {
            prefix.push(format!("--property=CPUQuota={pct}%"));
            plan.enforced.push(format!("cpu {pct}%: systemd scope"));
        }
        prefix.push("--".into());
        plan.prefix = prefix;
        return plan;
    }
    if let Some(pids) = limits.pids {
        if facts.cgroup_pids {
            plan.cgroup.pids_max = Some(pids);
            plan.enforced.push(format!("pids {pids}: cgroup pids.max"));
        } else {
            plan.watchdog_pids = Some(pids);
            plan.unenforced.push(format!(
                "pids {pids}: no cgroup to hold it; a watchdog counts the cage's processes a few times a second and kills the run past the limit (a fast fork bomb can overshoot in between)"
            ));
        }
    }
    if let Some(mb) = limits.memory_mb {
        let bytes = mb.saturating_mul(1024 * 1024);
        if facts.cgroup_memory {
            plan.cgroup.memory_bytes = Some(bytes);
            plan.enforced.push(format!(
                "memory {mb} MiB: cgroup memory limit (swap included)"
            ));
        } else {
            plan.rlimits.push(format!("--as={bytes}"));
            plan.unenforced.push(format!(
                "memory {mb} MiB: no cgroup to hold it; applied per process as an address-space rlimit (several processes may use more in total; runtimes that reserve large address space, such as node or the JVM, may fail to start)"
            ));
        }
    }
    if let Some(pct) = limits.cpu_percent {
        if facts.cgroup_cpu {
            plan.cgroup.cpu_quota_us = Some(CPU_PERIOD_US.saturating_mul(pct) / 100);
            plan.enforced.push(format!("cpu {pct}%: cgroup CFS quota"));
        } else {
            plan.unenforced.push(format!(
                "cpu {pct}%: no cgroup to hold it; not enforced (rlimits cap CPU seconds per process, not a share)"
            ));
        }
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all() -> Limits {
        Limits {
            memory_mb: Some(256),
            cpu_percent: Some(50),
            pids: Some(64),
            wall_time_secs: Some(60),
        }
    }

    #[test]
    fn systemd_scope_carries_every_limit() {
        let plan = plan_limits(
            &all(),
            &LimitFacts {
                systemd_user: true,
                cgroup_pids: true,
                ..Default::default()
            },
        );
        assert_eq!(
            plan.prefix,
            [
                "systemd-run",
                "--user",
                "--scope",
                "--quiet",
                "--collect",
                "--property=MemoryMax=256M",
                "--property=MemorySwapMax=0",
                "--property=TasksMax=64",
                "--property=CPUQuota=50%",
                "--"
            ]
        );
        assert!(plan.rlimits.is_empty() && plan.cgroup.is_empty() && plan.unenforced.is_empty());
        assert_eq!(plan.wall_time_secs, Some(60));
    }

    #[test]
    fn cgroup_v1_when_writable() {
        let plan = plan_limits(
            &all(),
            &LimitFacts {
                cgroup_pids: true,
                cgroup_memory: true,
                cgroup_cpu: true,
                ..Default::default()
            },
        );
        assert_eq!(
            plan.cgroup,
            CgroupValues {
                pids_max: Some(64),
                memory_bytes: Some(256 << 20),
                cpu_quota_us: Some(50_000),
            }
        );
        assert!(plan.prefix.is_empty() && plan.rlimits.is_empty() && plan.unenforced.is_empty());
    }

    #[test]
    fn without_cgroups_the_weaker_means_are_reported() {
        let plan = plan_limits(&all(), &LimitFacts::default());
        assert_eq!(plan.rlimits, [format!("--as={}", 256u64 << 20)]);
        assert_eq!(plan.watchdog_pids, Some(64));
        assert!(plan.cgroup.is_empty());
        assert_eq!(plan.unenforced.len(), 3, "{:?}", plan.unenforced);
        assert!(plan.unenforced.iter().any(|u| u.starts_with("cpu 50%")));
        assert!(!plan.rlimits.iter().any(|r| r.starts_with("--nproc")));
        let none = plan_limits(&Limits::default(), &LimitFacts::default());
        assert_eq!(none, LimitPlan::default());
    }
}
