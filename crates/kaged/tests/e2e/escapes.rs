//! The escape suite of issue 11: attacks found on a landed kaged, each of which worked then and
//! must fail now. Run against the real binary and real bubblewrap cages.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::common::*;

fn run_in_cage(project: &Path, agent: &str, argv: &[&str]) -> Output {
    kaged_cmd(&[])
        .args([
            "cage",
            "run",
            project.to_str().unwrap(),
            "--agent",
            agent,
            "--",
        ])
        .args(argv)
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn write_project(root: &Path, yaml: &str) {
    std::fs::create_dir_all(root.join(".kaged")).unwrap();
    std::fs::write(root.join(".kaged/project.yaml"), yaml).unwrap();
}

/// Swaps `/workspace/out` with a symbolic link to `target` (relative: bwrap resolves sources
/// under its old root, where a relative link leads where it does on the host) in a tight
/// loop with `renameat2(RENAME_EXCHANGE)`, for `secs` seconds; prints how many swaps it made.
const SWAPPER: &str = r#"
import ctypes, os, sys, time
libc = ctypes.CDLL(None, use_errno=True)
target, secs = sys.argv[1], float(sys.argv[2])
os.chdir("/workspace")
os.symlink(target, "outlink")
print("swapping", flush=True)
n, end = 0, time.time() + secs
while time.time() < end:
    for _ in range(1000):
        if libc.renameat2(-100, b"out", -100, b"outlink", 2) == 0:
            n += 1
# Leave the directory where it was found.
if os.path.islink("out"):
    libc.renameat2(-100, b"out", -100, b"outlink", 2)
os.unlink("outlink")
print("swaps", n, flush=True)
"#;

/// Finding 1 (critical): bind sources raced between check and mount. One cage swaps a granted
/// directory with a link to the operator's home while another agent's runs start with that
/// directory granted read-write. Not one run may write into the "home".
#[test]
fn a_swapped_bind_source_never_reaches_outside_the_project() {
    let tmp = tempfile::tempdir().unwrap();
    // The operator's home, beside the project: `../home` leads there from the project on the
    // host, and to the cage's own /home from /workspace, so a bind through the link succeeds
    // on both sides (as in the attack that found this).
    let home = tmp.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    let p = tmp.path().join("race");
    std::fs::create_dir_all(p.join("out")).unwrap();
    std::fs::create_dir_all(p.join(".git")).unwrap();
    std::fs::write(p.join(".git/HEAD"), "ref: refs/heads/main\n").unwrap();
    write_project(
        &p,
        "version: 1\nproject: race\nprimary:\n  command: [sh]\n  subagents:\n    writer:\n      command: [sh]\n      cage:\n        filesystem:\n          - { path: \"project:/out\", mode: rw }\n",
    );
    // As root, cages run as another user: the project and the "home" are that user's, as an
    // operator's own would be (so a leaked bind could be written to).
    cage_writable(&p);
    cage_writable(&home);
    const RUNS: usize = 40;
    let mut swapper = kaged_cmd(&[])
        .args([
            "cage",
            "run",
            p.to_str().unwrap(),
            "--",
            "python3",
            "-c",
            SWAPPER,
        ])
        .arg("../home")
        .arg("60")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until it swaps.
    let start = Instant::now();
    while !p.join("outlink").exists() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the swapper never started"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let (mut wrote, mut refused) = (0, 0);
    let mut other = Vec::new();
    for i in 0..RUNS {
        let out = run_in_cage(
            &p,
            "writer",
            &["sh", "-c", &format!("echo pwned > /workspace/out/hit-{i}")],
        );
        let err = text(&out.stderr);
        if out.status.success() {
            wrote += 1;
        } else if [
            // kaged refused to open the source (it was the link at that moment),
            "symbolic link",
            // kaged's check in the cage saw a destination that is not what it opened,
            "cage refused",
            // bwrap's own checks failed (the source path moved under its descriptor),
            "bwrap: ",
            // or the cage started and the swapper moved its directory away (the mount
            // follows the directory; the link left in its place leads nowhere in the cage).
            "Directory nonexistent",
        ]
        .iter()
        .any(|why| err.contains(why))
        {
            refused += 1;
        } else {
            other.push(format!("{:?}: {err}", out.status));
        }
    }
    let _ = swapper.kill();
    let swapped = swapper.wait_with_output().unwrap();
    let hits: Vec<_> = std::fs::read_dir(&home)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(
        hits.is_empty(),
        "{} of {RUNS} runs wrote into the operator's home: {hits:?}",
        hits.len()
    );
    assert!(
        text(&swapped.stdout).contains("swapping"),
        "the swapper did not run: {}",
        text(&swapped.stderr)
    );
    assert!(other.is_empty(), "runs failed otherwise: {other:?}");
    // Every run either wrote into the project's own directory, or into the cage's private /home
    // (the swapper moved `out` away after the cage was built: the link left in its place leads
    // there), or was refused, saying why.
    let in_project = ["out", "outlink"]
        .iter()
        .filter_map(|d| std::fs::read_dir(p.join(d)).ok())
        .flatten()
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.file_name().to_string_lossy().starts_with("hit-"))
        })
        .count();
    assert!(in_project <= wrote, "wrote {wrote}, refused {refused}");
    eprintln!("race: {wrote} runs wrote into the project, {refused} refused, 0 escaped");
}

/// Finding 3: in a project without `.git`, a cage plants one (with `core.fsmonitor`) for the
/// operator's next `git status`. An absent `.git` is masked: empty and read-only.
#[test]
fn a_cage_cannot_plant_a_git_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("nogit");
    write_project(
        &p,
        "version: 1\nproject: nogit\nprimary:\n  command: [sh]\n",
    );
    cage_writable(&p);
    let plant = "mkdir -p /workspace/.git/hooks && printf '[core]\\n\\tfsmonitor = touch /tmp/owned\\n' > /workspace/.git/config";
    let out = run_in_cage(&p, "primary", &["sh", "-c", plant]);
    assert!(
        !out.status.success(),
        "planted a .git: {}",
        text(&out.stderr)
    );
    let out = run_in_cage(
        &p,
        "primary",
        &[
            "sh",
            "-c",
            "ls -A /workspace/.git | wc -l; echo x > /workspace/.gitx && echo workspace-writable",
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "0\nworkspace-writable\n");
    // On the host, at most the empty directory the mask needs.
    let planted: Vec<_> = std::fs::read_dir(p.join(".git"))
        .map(|d| d.map(|e| e.unwrap().file_name()).collect())
        .unwrap_or_default();
    assert!(planted.is_empty(), "{planted:?}");
}

/// Errno of dangerous syscalls tried from inside a cage (x86_64 and aarch64 numbers).
const SYSCALL_PROBE: &str = r#"
import ctypes, errno, os, platform, threading, subprocess
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
x86 = platform.machine() == "x86_64"
SIGCHLD = 17
def call(nr, *args):
    ctypes.set_errno(0)
    r = libc.syscall(ctypes.c_long(nr), *[ctypes.c_long(a) for a in args])
    if r == 0 and nr == (56 if x86 else 220):
        os._exit(0)  # a clone child that should never have been born
    if r > 0 and nr == (56 if x86 else 220):
        os.waitpid(r, 0)
    return "OK" if r != -1 else errno.errorcode.get(ctypes.get_errno(), str(ctypes.get_errno()))
CLONE = 56 if x86 else 220
params = ctypes.create_string_buffer(120)
probes = {
    "clone_newuser": (CLONE, 0x10000000 | SIGCHLD, 0, 0, 0, 0),
    "clone_newns": (CLONE, 0x00020000 | SIGCHLD, 0, 0, 0, 0),
    "clone_newnet": (CLONE, 0x40000000 | SIGCHLD, 0, 0, 0, 0),
    "clone3": (435, 0, 0),
    "fsopen": (430, ctypes.addressof(ctypes.create_string_buffer(b"tmpfs")), 0),
    "fsmount": (432, -1, 0, 0),
    "move_mount": (429, -1, 0, -1, 0, 0),
    "open_tree": (428, -100, ctypes.addressof(ctypes.create_string_buffer(b"/tmp")), 1),
    "mount_setattr": (442, -1, 0, 0, 0, 0),
    "io_uring_setup": (425, 1, ctypes.addressof(params)),
    "personality": (135 if x86 else 92, 0x0040000),
}
for name, (nr, *args) in probes.items():
    print(name, call(nr, *args))
# What must keep working: fork, threads, posix_spawn (glibc falls back from clone3 to clone).
t = threading.Thread(target=lambda: None); t.start(); t.join()
print("thread OK")
print("spawn", subprocess.run(["true"]).returncode)
pid = os.fork()
if pid == 0:
    os._exit(3)
print("fork", os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))
"#;

/// Finding 4: namespaces through clone, the new mount API, io_uring and personality.
#[test]
fn the_default_profile_refuses_namespaces_mounts_io_uring_and_personality() {
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("probe");
    write_project(
        &p,
        "version: 1\nproject: probe\nprimary:\n  command: [sh]\n",
    );
    let out = run_in_cage(&p, "primary", &["python3", "-c", SYSCALL_PROBE]);
    let got = text(&out.stdout);
    assert!(out.status.success(), "{got}\n{}", text(&out.stderr));
    for (name, errno) in [
        ("clone_newuser", "EPERM"),
        ("clone_newns", "EPERM"),
        ("clone_newnet", "EPERM"),
        // ENOSYS, so the C library falls back to clone (whose flags are checked).
        ("clone3", "ENOSYS"),
        ("fsopen", "EPERM"),
        ("fsmount", "EPERM"),
        ("move_mount", "EPERM"),
        ("open_tree", "EPERM"),
        ("mount_setattr", "EPERM"),
        ("io_uring_setup", "EPERM"),
        ("personality", "EPERM"),
    ] {
        assert!(
            got.contains(&format!("{name} {errno}\n")),
            "{name}: expected {errno}:\n{got}"
        );
    }
    for works in ["thread OK", "spawn 0", "fork 3"] {
        assert!(got.contains(works), "{works}:\n{got}");
    }
}

/// Finding 7: a descriptor the daemon (or `kaged cage run`) inherited appeared in every cage.
#[test]
fn inherited_descriptors_never_reach_a_cage() {
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("fds");
    write_project(&p, "version: 1\nproject: fds\nprimary:\n  command: [sh]\n");
    let secret = tmp.path().join("inherited-secret");
    std::fs::write(&secret, "inherited secret").unwrap();
    // A parent that leaves a descriptor open (not close-on-exec) across the exec of kaged.
    let wrapper = format!(
        "import os, sys\nfd = os.open({:?}, os.O_RDONLY)\nos.set_inheritable(fd, True)\nos.dup2(fd, 9)\nos.set_inheritable(9, True)\nos.execv(sys.argv[1], sys.argv[1:])\n",
        secret.to_str().unwrap()
    );
    let out = Command::new("python3")
        .args(["-c", &wrapper])
        .arg(kaged_bin())
        .args(["cage", "run", p.to_str().unwrap(), "--", "sh", "-c"])
        .arg("for f in /proc/self/fd/*; do readlink $f; done; cat <&9 && echo READ-INHERITED")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap())
        .output()
        .unwrap();
    let got = text(&out.stdout);
    assert!(!got.contains("READ-INHERITED"), "{got}");
    assert!(!got.contains("inherited-secret"), "{got}");
}

/// Finding 8: secrets on command lines. An environment grant from `local.toml` reaches the
/// cage, and no process on the host shows its value in `/proc/PID/cmdline`.
#[tokio::test(flavor = "multi_thread")]
async fn granted_secrets_reach_the_cage_and_no_command_line() {
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("secrets");
    write_project(
        &p,
        "version: 1\nproject: secrets\nprimary:\n  command: [sh]\ntasks:\n  show: { command: [sh, -c, \"echo have:$KAGED_TEST_TOKEN; sleep 4; echo done\"] }\n",
    );
    let home = tmp.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    let config_dir = tmp.path().join("config");
    std::fs::create_dir_all(&config_dir).unwrap();
    std::fs::write(
        config_dir.join("local.toml"),
        format!(
            "[projects.secrets]\npath = {:?}\nenv = [\"KAGED_TEST_TOKEN\"]\n",
            p.to_str().unwrap()
        ),
    )
    .unwrap();
    let value = format!("tok-{}-never-in-argv", std::process::id());
    let d = Daemon::start_with(
        &home,
        &["--bind", "127.0.0.1:0"],
        &[
            ("KAGED_CONFIG_DIR", config_dir.to_str().unwrap()),
            ("KAGED_TEST_TOKEN", &value),
        ],
    );
    let out = d.cli(&["project", "load", p.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = d.cli(&["session", "start", "secrets", "--task", "show", "--detach"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let id = text(&out.stdout).trim().to_string();
    // While the run lives, scan every process's command line.
    let mut scanned = 0;
    let until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < until {
        for entry in std::fs::read_dir("/proc").unwrap().flatten() {
            if let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) {
                scanned += 1;
                assert!(
                    !text(&cmdline).contains(&value),
                    "the secret is on a command line: {:?}",
                    text(&cmdline).replace('\0', " ")
                );
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(scanned > 0);
    let mut transcript = String::new();
    let until = Instant::now() + Duration::from_secs(15);
    while !transcript.contains("done") && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(200));
        transcript = text(&d.cli(&["session", "transcript", &id]).stdout);
    }
    assert!(
        transcript.contains(&format!("have:{value}")),
        "{transcript}"
    );
    d.stop();
}
