//! Can this host build cages? The checks behind `kaged doctor` and `kaged start`.

use std::process::Command;

/// One check's outcome, with the exact fix when it failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    pub name: &'static str,
    /// `Ok(detail)` or `Err(problem)`.
    pub outcome: Result<String, String>,
    /// Whether a failure stops cages (bwrap, namespaces) or only weakens them (limits).
    pub required: bool,
    pub fix: Option<String>,
}

/// Can this user start a minimal cage right now? As root, the test cage runs as `nobody`
/// (65534), as cages do: root itself may create user namespaces where others may not.
fn userns_works() -> Result<(), String> {
    let mut c = if crate::effective_uid() == 0 {
        let mut c = Command::new("setpriv");
        c.args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--",
            "bwrap",
        ]);
        c
    } else {
        Command::new("bwrap")
    };
    let out = c
        .args([
            // The namespaces of the default cage: some hosts allow user namespaces but refuse
            // a network namespace inside them.
            "--unshare-user",
            "--unshare-pid",
            "--unshare-ipc",
            "--unshare-uts",
            "--unshare-net",
            "--disable-userns",
            "--ro-bind",
            "/",
            "/",
            "--proc",
            "/proc",
            "true",
        ])
        .current_dir("/")
        .output()
        .map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
    }
}

/// Every check, in order; later ones are skipped when bwrap is missing.
pub fn preflight() -> Vec<Check> {
    let mut checks = Vec::new();
    let Some(version) = crate::bwrap_version() else {
        checks.push(Check {
            name: "bubblewrap",
            outcome: Err("bubblewrap (bwrap) is not installed".into()),
            required: true,
            fix: Some(
                "sudo apt-get install bubblewrap   (Fedora: sudo dnf install bubblewrap)".into(),
            ),
        });
        return checks;
    };
    if !crate::bwrap_is_recent(&version) {
        checks.push(Check {
            name: "bubblewrap",
            outcome: Err(format!(
                "{version} is too old: kaged's cages need --bind-fd and --disable-userns (0.8.0 or newer)"
            )),
            required: true,
            fix: Some("install bubblewrap 0.8.0 or newer (Debian 12, Ubuntu 24.04 and Fedora 38 have it)".into()),
        });
        return checks;
    }
    checks.push(Check {
        name: "bubblewrap",
        outcome: Ok(version),
        required: true,
        fix: None,
    });
    let userns = userns_works();
    let apparmor =
        std::fs::read_to_string("/proc/sys/kernel/apparmor_restrict_unprivileged_userns")
            .is_ok_and(|v| v.trim() == "1");
    checks.push(Check {
        name: "user namespaces",
        outcome: userns
            .map(|()| "unprivileged user namespaces work (a test cage started)".to_string())
            .map_err(|why| format!("a test cage could not start: {why}")),
        required: true,
        fix: Some(if apparmor {
            "Ubuntu's AppArmor blocks unprivileged user namespaces: sudo sysctl kernel.apparmor_restrict_unprivileged_userns=0 (or install an AppArmor profile for bwrap)".into()
        } else {
            "enable them: sudo sysctl kernel.unprivileged_userns_clone=1 and user.max_user_namespaces=10000".into()
        }),
    });
    let facts = crate::limit_facts();
    let limits = if facts.systemd_user {
        Ok("systemd user session: limits through systemd-run --user --scope".to_string())
    } else if facts.cgroup_pids && facts.cgroup_memory {
        Ok(format!(
            "writable cgroups (pids, memory{}): limits through kaged's own cgroups",
            if facts.cgroup_cpu { ", cpu" } else { "" }
        ))
    } else {
        Err("no systemd user session and no writable cgroup: memory limits fall back to per-process rlimits, PID limits to a watchdog, CPU limits are not enforced".into())
    };
    checks.push(Check {
        name: "limits",
        outcome: limits,
        required: false,
        fix: Some("run kaged under `systemctl --user` (and `loginctl enable-linger \"$USER\"`) so it gets a delegated cgroup".into()),
    });
    checks
}

/// Whether caged work can run: the first failed required check, if any.
pub fn sandbox_problem(checks: &[Check]) -> Option<String> {
    checks.iter().find(|c| c.required).and_then(|_| {
        checks
            .iter()
            .filter(|c| c.required)
            .find_map(|c| c.outcome.clone().err())
    })
}
