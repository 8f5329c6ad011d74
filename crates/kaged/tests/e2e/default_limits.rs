//! Every cage has limits, even one whose project has no `limits:` block: `[sandbox] pids`
//! (1024 by default). As an ordinary user without delegated cgroups (the suite as root drops
//! to `nobody` through setpriv), only the watchdog can hold it: it must end a run of 3,000
//! sleepers and a fast fork flood, and leave no process of either behind.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use crate::common::*;

/// No `limits:` anywhere.
const PROJECT: &str = "\
version: 1
project: defaultlimits
primary:
  command: [sh]
";

struct Setup {
    _tmp: tempfile::TempDir,
    project: PathBuf,
    home: PathBuf,
}

fn setup() -> Setup {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let project = tmp.path().join("project");
    std::fs::create_dir_all(project.join(".kaged")).unwrap();
    std::fs::write(project.join(".kaged/project.yaml"), PROJECT).unwrap();
    // The operator's own home (no config.toml: the defaults apply).
    let home = tmp.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    if running_as_root() {
        let status = Command::new("chown")
            .args(["-R", &format!("{CAGE_UID}:{CAGE_UID}"), "--"])
            .arg(tmp.path())
            .status()
            .unwrap();
        assert!(status.success());
    }
    Setup {
        _tmp: tmp,
        project,
        home,
    }
}

/// `kaged cage run PROJECT -- bash -c SCRIPT` as an ordinary user (`nobody` when the suite is
/// root), bounded by `timeout`.
fn caged_bash(s: &Setup, script: &str) -> (Output, Duration) {
    let mut c = if running_as_root() {
        let mut c = Command::new("setpriv");
        c.args([
            &format!("--reuid={CAGE_UID}"),
            &format!("--regid={CAGE_UID}"),
            "--clear-groups",
            "--",
            "timeout",
        ]);
        c
    } else {
        Command::new("timeout")
    };
    c.args(["40", kaged_bin().to_str().unwrap()])
        .args(["cage", "run", s.project.to_str().unwrap(), "--"])
        .args(["bash", "-c", script])
        .env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .env("HOME", &s.home)
        .current_dir("/");
    let started = Instant::now();
    let out = c.output().unwrap();
    (out, started.elapsed())
}

/// A marker no other process on the host carries.
fn marker(what: &str) -> String {
    format!("kaged-{what}-{}-{}", std::process::id(), kaged_now_nanos())
}

fn kaged_now_nanos() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

/// Live processes whose command line holds `marker`.
fn survivors(marker: &str) -> Vec<u32> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let zombie = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map_or(true, |s| s.contains(") Z ") || s.contains(") X "));
        if !zombie && String::from_utf8_lossy(&cmdline).contains(marker) {
            out.push(pid);
        }
    }
    out
}

/// No process carrying `marker` is left: the PID namespace dies with the run. A moment is
/// allowed for the kernel to finish tearing down the namespace.
fn assert_no_survivor(marker: &str, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let left = survivors(marker);
        if left.is_empty() {
            return;
        }
        if Instant::now() > deadline {
            for pid in &left {
                let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
            }
            panic!(
                "{what}: {} processes survived the run: {left:?}",
                left.len()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The last progress number a run printed (`started N` lines).
fn last_count(stdout: &str) -> Option<u32> {
    stdout
        .lines()
        .rev()
        .filter_map(|l| l.strip_prefix("started "))
        .find_map(|n| n.trim().parse().ok())
}

#[test]
fn a_cage_without_limits_gets_the_default_pids_limit() {
    let s = setup();
    let mark = marker("sleeper");
    // 3,000 sleepers, one process each (`exec -a` names them after the marker), the count
    // printed every 50; a run that was not stopped says `all`.
    let script = format!(
        "for i in $(seq 3000); do (exec -a {mark} sleep 60) & \
         if [ $((i % 50)) = 0 ]; then echo started $i; fi; done; echo all $i"
    );
    let (out, took) = caged_bash(&s, &script);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let count = last_count(&stdout);
    eprintln!(
        "3,000 sleepers: {:?} started before the run ended ({:?}, {took:?})",
        count, out.status
    );
    assert!(
        !stdout.contains("all "),
        "all 3,000 sleepers ran in a cage with no limits: block: {:?} stderr {stderr}",
        out.status
    );
    assert_eq!(
        out.status.code(),
        Some(137),
        "the run was not killed by the pids watchdog: stdout {stdout} stderr {stderr}"
    );
    assert!(
        count.is_some_and(|n| (1000..3000).contains(&n)),
        "the sleepers should have been stopped near the default of 1024: {count:?}"
    );
    // On a host without cgroups for this user, the default and its weaker means are said.
    if running_as_root() {
        assert!(
            stderr.contains("pids 1024 (the [sandbox] pids default)"),
            "{stderr}"
        );
    }
    assert_no_survivor(&mark, "3,000 sleepers");
}

#[test]
fn a_fast_fork_flood_is_killed_with_no_survivor() {
    let s = setup();
    let mark = marker("flood");
    // A bounded fork bomb: every process forks two copies of itself, as fast as bash can,
    // down to depth 10 (2,047 processes), the leaves sleeping under the marker's name. Some
    // leave the tree on purpose (setsid + an orphaned grandchild), as a bomb would to hide.
    let script = format!(
        "f() {{ if [ $1 -gt 0 ]; then f $(($1 - 1)) & f $(($1 - 1)) & wait; \
         else (exec -a {mark} sleep 60 &) ; exec -a {mark} sleep 60; fi; }}; \
         f 10; echo flood ended"
    );
    let (out, took) = caged_bash(&s, &script);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("fork flood: {:?} after {took:?}", out.status);
    assert_eq!(
        out.status.code(),
        Some(137),
        "the fork flood was not killed: stdout {stdout} stderr {stderr}"
    );
    assert!(
        took < Duration::from_secs(30),
        "the watchdog took {took:?} to stop the flood"
    );
    assert_no_survivor(&mark, "the fork flood");
}
