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
//!
//! Every cage has limits: the daemon's defaults (`[sandbox] pids`, `memory_mb`,
//! `wall_time_secs`) fill each key its project leaves unset. One difference: a default memory
//! limit is never turned into an address-space rlimit (that would stop node or the JVM from
//! starting in every cage of a host without cgroups); it is then reported as not enforced.

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

/// Plan `asked` (the project's limits) with `defaults` filling the keys it leaves unset.
pub fn plan_limits(asked: &Limits, defaults: &Limits, facts: &LimitFacts) -> LimitPlan {
    let limits = &Limits {
        memory_mb: asked.memory_mb.or(defaults.memory_mb),
        cpu_percent: asked.cpu_percent.or(defaults.cpu_percent),
        pids: asked.pids.or(defaults.pids),
        wall_time_secs: asked.wall_time_secs.or(defaults.wall_time_secs),
    };
    // How a limit is named in reports: a default says where it came from.
    let named = |what: &str, own: Option<u64>, key: &str| match own {
        Some(_) => what.to_string(),
        None => format!("{what} (the [sandbox] {key} default)"),
    };
    let mut plan = LimitPlan {
        wall_time_secs: limits.wall_time_secs,
        ..Default::default()
    };
    if let Some(secs) = limits.wall_time_secs {
        plan.enforced.push(format!(
            "{}: kaged kills the run",
            named(
                &format!("wall time {secs}s"),
                asked.wall_time_secs,
                "wall_time_secs"
            )
        ));
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
            plan.enforced.push(format!(
                "{}: systemd scope",
                named(&format!("memory {mb} MiB"), asked.memory_mb, "memory_mb")
            ));
        }
        if let Some(pids) = limits.pids {
            prefix.push(format!("--property=TasksMax={pids}"));
            plan.enforced.push(format!(
                "{}: systemd scope",
                named(&format!("pids {pids}"), asked.pids, "pids")
            ));
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
        let what = named(&format!("pids {pids}"), asked.pids, "pids");
        if facts.cgroup_pids {
            plan.cgroup.pids_max = Some(pids);
            plan.enforced.push(format!("{what}: cgroup pids.max"));
        } else {
            plan.watchdog_pids = Some(pids);
            plan.unenforced.push(format!(
                "{what}: no cgroup to hold it; a watchdog counts the cage's processes every few milliseconds and kills the whole run past the limit (a fast fork flood can overshoot in between)"
            ));
        }
    }
    if let Some(mb) = limits.memory_mb {
        let bytes = mb.saturating_mul(1024 * 1024);
        let what = named(&format!("memory {mb} MiB"), asked.memory_mb, "memory_mb");
        if facts.cgroup_memory {
            plan.cgroup.memory_bytes = Some(bytes);
            plan.enforced
                .push(format!("{what}: cgroup memory limit (swap included)"));
        } else if asked.memory_mb.is_none() {
            plan.unenforced.push(format!(
                "{what}: no cgroup to hold it; not enforced (an address-space rlimit would stop node or the JVM from starting; set limits.memory_mb in the project to have one)"
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
            &Limits::default(),
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
            &Limits::default(),
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
        let plan = plan_limits(&all(), &Limits::default(), &LimitFacts::default());
        assert_eq!(plan.rlimits, [format!("--as={}", 256u64 << 20)]);
        assert_eq!(plan.watchdog_pids, Some(64));
        assert!(plan.cgroup.is_empty());
        assert_eq!(plan.unenforced.len(), 3, "{:?}", plan.unenforced);
        assert!(plan.unenforced.iter().any(|u| u.starts_with("cpu 50%")));
        assert!(!plan.rlimits.iter().any(|r| r.starts_with("--nproc")));
        let none = plan_limits(
            &Limits::default(),
            &Limits::default(),
            &LimitFacts::default(),
        );
        assert_eq!(none, LimitPlan::default());
    }

    fn defaults() -> Limits {
        Limits {
            memory_mb: Some(4096),
            pids: Some(1024),
            ..Default::default()
        }
    }

    #[test]
    fn defaults_fill_what_the_project_leaves_unset() {
        let asked = Limits {
            pids: Some(64),
            wall_time_secs: Some(60),
            ..Default::default()
        };
        let plan = plan_limits(
            &asked,
            &defaults(),
            &LimitFacts {
                cgroup_pids: true,
                cgroup_memory: true,
                ..Default::default()
            },
        );
        assert_eq!(plan.cgroup.pids_max, Some(64));
        assert_eq!(plan.cgroup.memory_bytes, Some(4096 << 20));
        assert_eq!(plan.wall_time_secs, Some(60));
        assert!(
            plan.enforced
                .iter()
                .any(|e| e.contains("memory 4096 MiB (the [sandbox] memory_mb default)")),
            "{:?}",
            plan.enforced
        );
        // No limits: block at all still gets the defaults.
        let plan = plan_limits(&Limits::default(), &defaults(), &LimitFacts::default());
        assert_eq!(plan.watchdog_pids, Some(1024));
        assert_eq!(plan.wall_time_secs, None);
        let plan = plan_limits(
            &Limits::default(),
            &defaults(),
            &LimitFacts {
                systemd_user: true,
                ..Default::default()
            },
        );
        assert!(
            plan.prefix
                .contains(&"--property=TasksMax=1024".to_string())
        );
        assert!(
            plan.prefix
                .contains(&"--property=MemoryMax=4096M".to_string())
        );
    }

    #[test]
    fn a_default_memory_limit_never_becomes_an_address_space_rlimit() {
        let plan = plan_limits(&Limits::default(), &defaults(), &LimitFacts::default());
        assert!(plan.rlimits.is_empty(), "{:?}", plan.rlimits);
        assert!(
            plan.unenforced
                .iter()
                .any(|u| u.starts_with("memory 4096 MiB (the [sandbox] memory_mb default)")),
            "{:?}",
            plan.unenforced
        );
        // A project's own memory limit still does, as before.
        let asked = Limits {
            memory_mb: Some(256),
            ..Default::default()
        };
        let plan = plan_limits(&asked, &defaults(), &LimitFacts::default());
        assert_eq!(plan.rlimits, [format!("--as={}", 256u64 << 20)]);
    }
}
