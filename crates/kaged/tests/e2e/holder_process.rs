//! `kaged run-holder` as its own process, started the way the daemon will start it
//! (`kaged_holder::launch`: spec in a memfd, readiness pipe, stdio on /dev/null), holding a
//! real run on a real PTY; and what an idle holder costs.

use std::path::Path;
use std::time::Duration;

use kaged_holder::{Client, client};
use kaged_session::holder::{HolderSpec, SignalName, ToClient};
use kaged_session::retention::Cap;

use crate::common::kaged_bin;

fn spec(dir: &Path, script: &str) -> HolderSpec {
    use std::os::unix::fs::DirBuilderExt;
    let holders = dir.join("holders");
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&holders)
        .unwrap();
    HolderSpec {
        v: 1,
        id: "e2e".into(),
        run_name: "00000000000000e2".into(),
        kind: "pty".into(),
        stderr_path: None,
        socket: holders.join("00000000000000e2.sock").display().to_string(),
        transcript_head: dir.join("e2e.out").display().to_string(),
        cap: Cap::of(64 << 20),
        status_path: dir.join("e2e.status").display().to_string(),
        argv: vec!["sh".into(), "-c".into(), script.into()],
        prefix: vec![],
        rlimits: vec![],
        cgroup_procs: vec![],
        cgroup_dirs: vec![],
        cwd: Some(dir.display().to_string()),
        env: vec![("PATH".into(), "/usr/bin:/bin".into())],
        run_as: None,
        cage_fd_count: 0,
        rows: 24,
        cols: 80,
        deadline_ms: None,
        wall_time_secs: None,
        watchdog_pids: None,
        kill_grace_ms: 1000,
        egress_dir: None,
        egress_allow: vec![],
        daemon_version: "e2e".into(),
    }
}

/// Field `n` (1-based) of /proc/PID/stat, after the command name.
fn stat_field(pid: u32, n: usize) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    after
        .split_whitespace()
        .nth(n - 3)
        .unwrap()
        .parse()
        .unwrap()
}

#[test]
fn a_holder_process_serves_its_run_from_offset_zero_and_records_the_exit() {
    let dir = tempfile::tempdir().unwrap();
    let spec = spec(
        dir.path(),
        "for i in $(seq 1 30); do echo line $i; sleep 0.1; done; exit 7",
    );
    let mut launched = kaged_holder::launch(&kaged_bin(), &spec, None, &[]).unwrap();
    let holder_pid = launched.holder_pid;
    assert_eq!(launched.child.id(), holder_pid);
    // Out of the daemon's session: its own session leader.
    assert_eq!(
        stat_field(holder_pid, 6),
        u64::from(holder_pid),
        "not setsid"
    );
    // The run is the holder's child, not ours.
    assert_eq!(stat_field(launched.pid, 4), u64::from(holder_pid));
    let mut c = Client::connect(Path::new(&spec.socket), Some(Duration::from_secs(20))).unwrap();
    assert_eq!(c.info().unwrap().pid, launched.pid);
    c.sender().attach(0).unwrap();
    let mut text = Vec::new();
    let status = loop {
        match c.read_frame().unwrap() {
            ToClient::Output { offset, bytes } => {
                assert_eq!(offset, text.len() as u64, "gap or duplicate");
                text.extend(bytes);
            }
            ToClient::Exit(status) => break status,
            _ => {}
        }
    };
    let on_disk = kaged_holder::status::read(Path::new(&spec.status_path))
        .unwrap()
        .expect("the status file is written before Exit");
    assert_eq!(on_disk, status);
    c.sender().ack_exit().unwrap();
    let lines: Vec<String> = String::from_utf8_lossy(&text)
        .lines()
        .map(|l| l.trim().to_string())
        .collect();
    let want: Vec<String> = (1..=30).map(|i| format!("line {i}")).collect();
    assert_eq!(lines, want);
    assert_eq!(text, std::fs::read(&spec.transcript_head).unwrap());
    assert_eq!(status.exit.unwrap().code, 7);
    assert_eq!(status.output_bytes, text.len() as u64);
    // The holder leaves once the end was taken: exit 0, socket gone.
    assert!(launched.child.wait().unwrap().success());
    assert!(!Path::new(&spec.socket).exists());
}

#[test]
fn an_idle_holder_costs_little_memory_and_no_cpu() {
    let dir = tempfile::tempdir().unwrap();
    let spec = spec(dir.path(), "exec sleep 300");
    let mut launched = kaged_holder::launch(&kaged_bin(), &spec, None, &[]).unwrap();
    let pid = launched.holder_pid;
    std::thread::sleep(Duration::from_millis(500));
    let ticks = || stat_field(pid, 14) + stat_field(pid, 15);
    let before = ticks();
    std::thread::sleep(Duration::from_secs(2));
    let cpu = ticks() - before;
    let rollup = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap();
    let kib = |key: &str| -> u64 {
        rollup
            .lines()
            .find(|l| l.starts_with(&format!("{key}:")))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    let private = kib("Private_Clean") + kib("Private_Dirty");
    println!(
        "idle holder {pid}: Rss {} KiB, Pss {} KiB, Private {private} KiB, CPU {cpu} ticks over 2 s",
        kib("Rss"),
        kib("Pss")
    );
    assert!(kib("Rss") > 0, "{rollup}");
    let n = client::kill(Path::new(&spec.socket), "e2e", Duration::from_secs(5)).unwrap();
    assert!(n >= 1);
    // Nobody attached: it does not wait for anyone to take the end.
    assert!(launched.child.wait().unwrap().success());
    let status = kaged_holder::status::read(Path::new(&spec.status_path))
        .unwrap()
        .unwrap();
    assert_eq!(status.killed_by.as_deref(), Some("e2e"));
    assert!(cpu <= 1, "an idle holder used {cpu} ticks in 2 s");
}

#[test]
fn sigterm_to_a_holder_stops_its_run_and_records_why() {
    let dir = tempfile::tempdir().unwrap();
    // No shell in between: a shell may clear an inherited signal mask and hide one.
    let mut spec = spec(dir.path(), "");
    spec.argv = vec!["sleep".into(), "300".into()];
    let mut launched = kaged_holder::launch(&kaged_bin(), &spec, None, &[]).unwrap();
    let mut c = Client::connect(Path::new(&spec.socket), Some(Duration::from_secs(20))).unwrap();
    c.sender().attach(0).unwrap();
    // Frames are taken in order: once CONT is done, the holder knows this client is attached
    // (Limit goes to attached clients).
    c.sender().signal(SignalName::CONT).unwrap();
    while !matches!(c.read_frame().unwrap(), ToClient::Done { .. }) {}
    let term = std::process::Command::new("kill")
        .args(["-TERM", &launched.holder_pid.to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    let mut limit = None;
    let status = loop {
        match c.read_frame().unwrap() {
            ToClient::Limit { by } => limit = Some(by),
            ToClient::Exit(status) => break status,
            _ => {}
        }
    };
    c.sender().ack_exit().unwrap();
    let why = "kaged: run holder stopped (SIGTERM)";
    assert_eq!(limit.as_deref(), Some(why));
    assert_eq!(status.killed_by.as_deref(), Some(why));
    // HUP or TERM ended it, within the grace: no KILL was needed.
    assert!(
        matches!(status.exit.unwrap().signal, Some(1 | 15)),
        "{status:?}"
    );
    assert!(launched.child.wait().unwrap().success());
}

const CAGED_PROJECT: &str = "\
version: 1
project: holdertest
primary:
  command: [sh]
";

/// The daemon's way for a caged run: `kaged_spawn::caged` makes the cage, its descriptors and
/// cgroups go to a holder process (`launch`), and the holder starts the cage itself.
#[test]
fn a_caged_run_is_held_with_its_cage_descriptors_and_cgroups() {
    use crate::common::{CAGE_UID, running_as_root};
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("project");
    std::fs::create_dir_all(root.join(".kaged")).unwrap();
    std::fs::write(root.join(".kaged/project.yaml"), CAGED_PROJECT).unwrap();
    // The cage's user must reach the helper binary.
    let bin = tmp.path().join("bin/kaged");
    std::fs::create_dir_all(bin.parent().unwrap()).unwrap();
    std::fs::copy(kaged_bin(), &bin).unwrap();
    let chmod = std::process::Command::new("chmod")
        .args(["0755", tmp.path().to_str().unwrap(), bin.to_str().unwrap()])
        .status()
        .unwrap();
    assert!(chmod.success());
    if running_as_root() {
        let owner = format!("{CAGE_UID}:{CAGE_UID}");
        let chown = std::process::Command::new("chown")
            .args(["-R", &owner, root.to_str().unwrap()])
            .status()
            .unwrap();
        assert!(chown.success());
    }
    let root = std::fs::canonicalize(&root).unwrap();
    let project = kaged_dsl::load_project(CAGED_PROJECT, None)
        .project()
        .unwrap()
        .unwrap();
    let policy = kaged_cage::policy_for(&project, "primary").unwrap();
    let run_as = kaged_spawn::run_as(&root, "nobody")
        .unwrap()
        .map(|r| r.identity);
    let command: Vec<String> = ["sh", "-c", "echo in-cage uid $(id -u) pid $$; exit 3"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let run = kaged_spawn::caged(&kaged_spawn::CageRequest {
        root: &root,
        helper: &bin,
        policy: &policy,
        // A pids limit: a cgroup where this host allows one (the holder adopts and removes
        // it), else the pids watchdog (the holder runs it).
        default_limits: &kaged_cage::Limits {
            pids: Some(64),
            ..Default::default()
        },
        launch: kaged_cage::Launch {
            cwd: Path::new(""),
            command: &command,
            env: &[],
            own_terminal: true,
            egress: None,
        },
        name: &format!("holder-e2e-{}", std::process::id()),
        run_as,
        project: "holdertest",
        grants: &[],
    })
    .unwrap();
    let files = tempfile::tempdir().unwrap();
    let mut spec = spec(files.path(), "");
    kaged_holder::fill_from(&mut spec, &run.spec);
    let groups = run.cgroups.release();
    spec.cgroup_dirs = groups.iter().map(|d| d.display().to_string()).collect();
    spec.watchdog_pids = run.limits.watchdog_pids;
    assert!(
        !groups.is_empty() || spec.watchdog_pids == Some(64),
        "no pids limit: {groups:?}"
    );
    assert!(spec.cage_fd_count >= 3, "{}", spec.cage_fd_count);
    let mut launched = kaged_holder::launch(&bin, &spec, run.spec.cage.as_ref(), &[]).unwrap();
    // The cage's descriptors went to the holder; this process keeps its own copies only.
    drop(run.spec);
    let mut c = Client::connect(Path::new(&spec.socket), Some(Duration::from_secs(20))).unwrap();
    c.sender().attach(0).unwrap();
    let mut text = Vec::new();
    let status = loop {
        match c.read_frame().unwrap() {
            ToClient::Output { bytes, .. } => text.extend(bytes),
            ToClient::Exit(status) => break status,
            _ => {}
        }
    };
    c.sender().ack_exit().unwrap();
    let text = String::from_utf8_lossy(&text).to_string();
    println!(
        "caged run through a holder: {text:?}, cgroups {groups:?}, watchdog {:?}",
        spec.watchdog_pids
    );
    let want_uid = if running_as_root() {
        CAGE_UID
    } else {
        rustix_uid()
    };
    assert!(
        text.contains(&format!("in-cage uid {want_uid} pid ")),
        "{text}"
    );
    // In the cage's own PID namespace, the command is not the host's process.
    assert!(!text.contains(&format!("pid {}", launched.pid)), "{text}");
    assert_eq!(status.exit.unwrap().code, 3, "{text}");
    assert!(launched.child.wait().unwrap().success());
    // The holder removed the groups it adopted.
    for g in groups {
        assert!(!g.exists(), "{} survived", g.display());
    }
}

fn rustix_uid() -> u32 {
    let out = std::process::Command::new("id").arg("-u").output().unwrap();
    String::from_utf8(out.stdout)
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}
