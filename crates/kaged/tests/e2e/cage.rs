//! Escape attempts from inside a real bubblewrap cage (`kaged cage run`), each of which must
//! fail, and the things a cage must still allow.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

use std::path::{Path, PathBuf};
use std::process::Output;

use crate::common::*;

const PROJECT: &str = "\
version: 1
project: cagetest
primary:
  command: [sh]
  subagents:
    online:
      command: [sh]
      cage: { network: host }
    limited:
      command: [sh]
      cage: { limits: { pids: 32, memory_mb: 128, wall_time_secs: 3 } }
    loose:
      command: [sh]
      cage: { seccomp: relaxed }
";

fn project(root: &Path) -> PathBuf {
    let p = root.join("project");
    std::fs::create_dir_all(p.join(".kaged")).unwrap();
    std::fs::create_dir_all(p.join(".git")).unwrap();
    std::fs::write(p.join(".git/HEAD"), "ref: refs/heads/main\n").unwrap();
    std::fs::write(p.join(".kaged/project.yaml"), PROJECT).unwrap();
    cage_writable(&p);
    p
}

fn caged(project: &Path, agent: &str, script: &str) -> Output {
    kaged_cmd(&[])
        .args([
            "cage",
            "run",
            project.to_str().unwrap(),
            "--agent",
            agent,
            "--",
            "bash",
            "-c",
            script,
        ])
        .output()
        .unwrap()
}

/// `kaged cage run` of `script` in `agent`'s cage as `uid` (0: as this user), bounded.
fn caged_as(uid: u32, project: &Path, agent: &str, script: &str) -> Output {
    let mut c = if uid == 0 {
        std::process::Command::new("timeout")
    } else {
        let mut c = std::process::Command::new("setpriv");
        c.args([
            &format!("--reuid={uid}"),
            &format!("--regid={uid}"),
            "--clear-groups",
            "--",
            "timeout",
        ]);
        c
    };
    c.args(["30", kaged_bin().to_str().unwrap()])
        .args(["cage", "run", project.to_str().unwrap(), "--agent", agent])
        .args(["--", "python3", "-c", script])
        .env("HOME", "/tmp")
        .current_dir("/")
        .output()
        .unwrap()
}

/// A bounded fork storm: 300 children that sleep; prints how many forks succeeded once they
/// have lived a while (a watchdog without a cgroup needs that while to see them).
const FORK_STORM: &str = "
import os, time
ok = 0
for i in range(300):
    try:
        pid = os.fork()
    except OSError:
        break
    if pid == 0:
        time.sleep(5)
        os._exit(0)
    ok += 1
# A bomb keeps going: stay alive a while (1 s, well inside the 3 s wall time, so a kill
# here is the pids limit's) while the children live.
time.sleep(1)
print('forks', ok, flush=True)
";

const MEMORY_HOG: &str = "
b = bytearray(400 << 20)
for i in range(0, len(b), 4096):
    b[i] = 1
print('hog survived', flush=True)
";

fn check_limits(uid: u32, project: &Path) {
    let who = if uid == 0 { "root" } else { "nobody" };
    let out = caged_as(uid, project, "limited", FORK_STORM);
    let text = String::from_utf8_lossy(&out.stdout);
    let forks: Option<u32> = text.split_whitespace().nth(1).and_then(|n| n.parse().ok());
    // Either forks were refused at the limit (cgroup), or the run was killed (watchdog).
    assert!(
        forks.is_some_and(|n| n <= 32) || out.status.code() == Some(137),
        "{who}: the fork storm was not contained: {text} {:?} {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let out = caged_as(uid, project, "limited", MEMORY_HOG);
    assert!(
        !out.status.success() && !String::from_utf8_lossy(&out.stdout).contains("survived"),
        "{who}: the memory hog was not contained: {:?}",
        out
    );
    let out = caged_as(
        uid,
        project,
        "limited",
        "import time; time.sleep(25); print('slept')",
    );
    assert_eq!(
        out.status.code(),
        Some(137),
        "{who}: the wall-time limit did not end the run: {out:?}"
    );
}

#[test]
fn limits_contain_a_fork_storm_a_memory_hog_and_a_sleeper() {
    let tmp = tempfile::tempdir().unwrap();
    let p = project(tmp.path());
    check_limits(0, &p);
    // As an ordinary user (no cgroup to write: rlimits and the watchdog), when we can drop.
    if nix_is_root() {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        check_limits(65534, &p);
        // What could not be enforced as asked is said.
        let out = caged_as(65534, &p, "limited", "print('hi')");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("not enforced: pids 32"), "{err}");
    }
}

fn nix_is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
}

fn ok(out: &Output) -> bool {
    out.status.success()
}

#[test]
fn escape_attempts_fail_and_the_workspace_works() {
    if std::process::Command::new("bwrap")
        .arg("--version")
        .output()
        .is_err()
    {
        panic!(
            "bubblewrap is not installed: run ./scripts/test (installs it as root) or `sudo apt-get install bubblewrap`"
        );
    }
    let tmp = tempfile::tempdir().unwrap();
    let p = project(tmp.path());
    // Something secret outside the project, where a careless sandbox would expose it.
    let secret = tmp.path().join("outside-secret.txt");
    std::fs::write(&secret, "top secret").unwrap();

    // The workspace is writable and is the project.
    let out = caged(&p, "primary", "echo made > /workspace/made.txt && pwd");
    assert!(ok(&out), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "/workspace");
    assert_eq!(
        std::fs::read_to_string(p.join("made.txt")).unwrap().trim(),
        "made"
    );

    // The exit status is the command's.
    assert_eq!(caged(&p, "primary", "exit 7").status.code(), Some(7));

    let attempts: [(&str, String); 9] = [
        (
            "read a file outside the project",
            format!("cat {}", secret.display()),
        ),
        (
            "read the host's home",
            "ls /root/ || ls /home/*/.ssh".into(),
        ),
        ("write .git", "echo evil > /workspace/.git/HEAD".into()),
        (
            "write .kaged",
            "echo evil > /workspace/.kaged/project.yaml".into(),
        ),
        ("write a system directory", "touch /usr/kaged-escape".into()),
        ("write /etc", "echo x >> /etc/passwd".into()),
        (
            "see the host's processes",
            "test $(ls -d /proc/[0-9]* | wc -l) -gt 10".into(),
        ),
        (
            "signal a process outside",
            format!("kill -0 {}", std::process::id()),
        ),
        (
            "reach a loopback server on the host",
            "exec 3<>/dev/tcp/127.0.0.1/__PORT__".into(),
        ),
    ];
    let server = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = server.local_addr().unwrap().port().to_string();
    for (what, script) in attempts {
        let script = script.replace("__PORT__", &port);
        let out = caged(&p, "primary", &script);
        assert!(
            !ok(&out),
            "escape succeeded: {what} ({script}): {}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
    assert_eq!(
        std::fs::read_to_string(p.join(".git/HEAD")).unwrap(),
        "ref: refs/heads/main\n"
    );
    // The environment is cleared to an allowlist.
    let out = caged(&p, "primary", "env");
    let env = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        env.contains("HOME=/home/kaged") && env.contains("KAGED_CAGE=1"),
        "{env}"
    );
    assert!(
        !env.contains("CARGO") && !env.contains("RUST"),
        "host variables leaked: {env}"
    );

    // With network: host, by explicit intent, the same server is reachable.
    let out = caged(&p, "online", &format!("exec 3<>/dev/tcp/127.0.0.1/{port}"));
    assert!(ok(&out), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn the_cage_dies_with_its_parent() {
    let tmp = tempfile::tempdir().unwrap();
    let p = project(tmp.path());

    // Kill `kaged cage run` hard: the caged process must not survive it.
    let marker = format!("kaged-cage-marker-{}", std::process::id());
    let mut child = kaged_cmd(&[])
        .args([
            "cage",
            "run",
            p.to_str().unwrap(),
            "--",
            "bash",
            "-c",
            &format!("sleep 1000; echo {marker}"),
        ])
        .spawn()
        .unwrap();
    let alive = |m: &str| {
        std::fs::read_dir("/proc")
            .unwrap()
            .filter_map(Result::ok)
            .any(|e| {
                std::fs::read(e.path().join("cmdline"))
                    .is_ok_and(|c| String::from_utf8_lossy(&c).contains(m))
            })
    };
    let start = std::time::Instant::now();
    while !alive(&marker) {
        assert!(
            start.elapsed().as_secs() < 10,
            "the caged process never started"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    // Who still carries the marker, for the failure message (seen once, in a loaded suite).
    let survivors = |m: &str| -> Vec<String> {
        std::fs::read_dir("/proc")
            .unwrap()
            .filter_map(Result::ok)
            .filter(|e| {
                std::fs::read(e.path().join("cmdline"))
                    .is_ok_and(|c| String::from_utf8_lossy(&c).contains(m))
            })
            .map(|e| {
                let status = std::fs::read_to_string(e.path().join("status")).unwrap_or_default();
                let field = |k: &str| {
                    status
                        .lines()
                        .find(|l| l.starts_with(k))
                        .unwrap_or_default()
                        .to_string()
                };
                format!(
                    "pid {:?} {} {} {} cmdline {:?}",
                    e.file_name(),
                    field("State:"),
                    field("PPid:"),
                    field("NSpid:"),
                    String::from_utf8_lossy(
                        &std::fs::read(e.path().join("cmdline")).unwrap_or_default()
                    )
                )
            })
            .collect()
    };
    let start = std::time::Instant::now();
    while alive(&marker) {
        // Generous: the bound is for a process that never dies, not a measure of speed.
        assert!(
            start.elapsed().as_secs() < 30,
            "the caged process outlived its parent: {:?}",
            survivors(&marker)
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }

    // An unknown agent is a clear error.
    let out = caged(&p, "ghost", "true");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no agent named `ghost`"));
}

#[test]
fn doctor_reports_each_check() {
    let out = kaged_cmd(&[]).arg("doctor").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{text}");
    assert!(text.contains("ok    bubblewrap: bubblewrap "), "{text}");
    assert!(text.contains("ok    user namespaces: "), "{text}");
    // Limits are a check of their own, a warning at worst.
    assert!(
        text.contains("ok    limits: ") || text.contains("warn  limits: "),
        "{text}"
    );
    // Without bwrap on PATH: the failure and its fix, and a failing status.
    let out = kaged_cmd(&[("PATH", "/nonexistent")])
        .arg("doctor")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("FAIL  bubblewrap: bubblewrap (bwrap) is not installed")
            && text.contains("fix: sudo apt-get install bubblewrap"),
        "{text}"
    );
}

/// Errno names of dangerous syscalls, tried from inside a cage with Python's ctypes.
const SYSCALL_PROBE: &str = r#"
import ctypes, errno, platform
libc = ctypes.CDLL(None, use_errno=True)
x86 = platform.machine() == "x86_64"
calls = {"keyctl": (250 if x86 else 219, (0, 0, 0, 0)),
         "bpf": (321 if x86 else 280, (0, 0, 0)),
         "perf_event_open": (298 if x86 else 241, (0, 0, -1, -1, 0)),
         "unshare": (272 if x86 else 97, (0,)),
         "ptrace": (101 if x86 else 117, (0, 0, 0, 0))}
for name, (nr, args) in calls.items():
    ctypes.set_errno(0)
    r = libc.syscall(nr, *args)
    print(name, errno.errorcode.get(ctypes.get_errno(), "OK") if r == -1 else "OK")
"#;

#[test]
fn the_default_seccomp_profile_blocks_dangerous_syscalls() {
    let tmp = tempfile::tempdir().unwrap();
    let p = project(tmp.path());
    let probe = |agent: &str| {
        let out = kaged_cmd(&[])
            .args([
                "cage",
                "run",
                p.to_str().unwrap(),
                "--agent",
                agent,
                "--",
                "python3",
                "-c",
                SYSCALL_PROBE,
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let strict = probe("primary");
    for name in ["keyctl", "bpf", "perf_event_open", "unshare", "ptrace"] {
        assert!(
            strict.contains(&format!("{name} EPERM")),
            "{name} not blocked:\n{strict}"
        );
    }
    // The relaxed profile (explicit intent) leaves keyctl to the kernel, which answers otherwise:
    // so it is the default filter that blocks it above.
    let relaxed = probe("loose");
    assert!(!relaxed.contains("keyctl EPERM"), "{relaxed}");
}

/// A loopback HTTP server answering every request with `body` (one thread, bounded).
fn http_server(body: &'static str) -> (u16, std::thread::JoinHandle<()>) {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let handle = std::thread::spawn(move || {
        listener.set_nonblocking(false).unwrap();
        for stream in listener.incoming().take(8) {
            let Ok(mut s) = stream else { continue };
            let mut buf = [0u8; 4096];
            let _ = s.set_read_timeout(Some(std::time::Duration::from_secs(5)));
            let _ = s.read(&mut buf);
            let _ = write!(
                s,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    (port, handle)
}

/// Inside the cage: through the proxy (plain HTTP and a CONNECT tunnel), to a port that is not
/// allowed, and straight past the proxy.
const EGRESS_PROBE: &str = r#"
import os, sys, socket, urllib.request, urllib.error, http.client
allowed, refused = sys.argv[1], sys.argv[2]
try:
    print("plain", urllib.request.urlopen(f"http://127.0.0.1:{allowed}/x", timeout=10).read().decode())
except Exception as e:
    print("plain failed", e)
try:
    urllib.request.urlopen(f"http://127.0.0.1:{refused}/x", timeout=10)
    print("refused-port reachable")
except urllib.error.HTTPError as e:
    print("refused-port", e.code)
c = http.client.HTTPConnection("127.0.0.1", 3128, timeout=10)
c.set_tunnel("127.0.0.1", int(allowed))
c.request("GET", "/t")
print("tunnel", c.getresponse().read().decode())
s = socket.socket()
s.settimeout(5)
try:
    s.connect(("127.0.0.1", int(allowed)))
    print("direct reachable")
except OSError as e:
    print("direct blocked")
"#;

#[test]
fn network_allowlist_goes_through_the_egress_proxy_and_nothing_else() {
    let tmp = tempfile::tempdir().unwrap();
    let (allowed, server) = http_server("hello-from-allowed");
    let (refused, _other) = http_server("should-not-see");
    let p = tmp.path().join("net");
    std::fs::create_dir_all(p.join(".kaged")).unwrap();
    std::fs::write(
        p.join(".kaged/project.yaml"),
        format!(
            "version: 1\nproject: nettest\nprimary:\n  command: [sh]\n  cage:\n    network:\n      allow: [\"127.0.0.1:{allowed}\"]\n"
        ),
    )
    .unwrap();
    let out = kaged_cmd(&[])
        .args([
            "cage",
            "run",
            p.to_str().unwrap(),
            "--",
            "python3",
            "-c",
            EGRESS_PROBE,
        ])
        .args([allowed.to_string(), refused.to_string()])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("plain hello-from-allowed"),
        "{stdout}\n{stderr}"
    );
    assert!(stdout.contains("refused-port 403"), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("tunnel hello-from-allowed"),
        "{stdout}\n{stderr}"
    );
    assert!(stdout.contains("direct blocked"), "{stdout}\n{stderr}");
    // Every decision is reported.
    assert!(
        stderr.contains(&format!("egress allowed: GET 127.0.0.1:{allowed}"))
            && stderr.contains(&format!("egress REFUSED: GET 127.0.0.1:{refused}"))
            && stderr.contains(&format!("egress allowed: CONNECT 127.0.0.1:{allowed}")),
        "{stderr}"
    );
    assert!(
        !stderr.contains("not enforced: network allowlist"),
        "{stderr}"
    );
    drop(server);
}

#[test]
fn tiocsti_cannot_push_input_into_the_callers_terminal() {
    let tmp = tempfile::tempdir().unwrap();
    let p = project(tmp.path());
    // `script` gives `kaged cage run` a real terminal, as an operator's shell would.
    let probe = "import fcntl, termios, sys\n\
        try:\n    fcntl.ioctl(0, termios.TIOCSTI, b'x')\n    print('TIOCSTI-WORKED')\n\
        except OSError as e:\n    print('TIOCSTI-REFUSED', e.errno)\n";
    let inner = format!(
        "{} cage run {} -- python3 -c \"{}\"",
        kaged_bin().display(),
        p.display(),
        probe.replace('"', "\\\"")
    );
    let out = std::process::Command::new("timeout")
        .args(["20", "script", "-qec", &inner, "/dev/null"])
        .env("TERM", "xterm")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    // EPERM is the seccomp filter's answer (a kernel with legacy_tiocsti=0 would say EIO).
    assert!(text.contains("TIOCSTI-REFUSED 1"), "{text}");
    assert!(!text.contains("TIOCSTI-WORKED"), "{text}");
}
