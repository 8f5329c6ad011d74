//! A real holder (`serve` on a thread) holding real processes on a real PTY, driven through
//! the real socket by the blocking client.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

use std::path::{Path, PathBuf};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use kaged_holder::{Client, ServeError, client};
use kaged_session::holder::{
    HeldState, HolderHello, HolderSpec, PROTOCOL, StatusFile, ToClient, ToHolder,
};
use kaged_session::retention::Cap;

const T: Option<Duration> = Some(Duration::from_secs(20));

struct Held {
    _dir: tempfile::TempDir,
    spec: HolderSpec,
    thread: Option<JoinHandle<Result<StatusFile, ServeError>>>,
}

impl Held {
    fn socket(&self) -> &Path {
        Path::new(&self.spec.socket)
    }

    fn head(&self) -> PathBuf {
        PathBuf::from(&self.spec.transcript_head)
    }

    fn connect(&self) -> Client {
        Client::connect(self.socket(), T).unwrap()
    }

    fn join(&mut self) -> StatusFile {
        self.thread.take().unwrap().join().unwrap().unwrap()
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        if self.thread.is_some() {
            let _ = client::kill(self.socket(), "test cleanup", Duration::from_secs(5));
        }
    }
}

fn start(script: &str, tweak: impl FnOnce(&mut HolderSpec)) -> Held {
    use std::os::unix::fs::DirBuilderExt;
    let dir = tempfile::tempdir().unwrap();
    let holders = dir.path().join("holders");
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&holders)
        .unwrap();
    let mut spec = HolderSpec {
        v: 1,
        id: "s1".into(),
        run_name: "0011223344556677".into(),
        kind: "pty".into(),
        stderr_path: None,
        socket: holders.join("0011223344556677.sock").display().to_string(),
        transcript_head: dir.path().join("s1.out").display().to_string(),
        cap: Cap::of(64 << 20),
        status_path: dir.path().join("s1.status").display().to_string(),
        argv: vec!["sh".into(), "-c".into(), script.into()],
        prefix: vec![],
        rlimits: vec![],
        cgroup_procs: vec![],
        cgroup_dirs: vec![],
        cwd: Some(dir.path().display().to_string()),
        env: vec![("PATH".into(), "/usr/bin:/bin".into())],
        run_as: None,
        cage_fd_count: 0,
        rows: 24,
        cols: 80,
        deadline_ms: None,
        wall_time_secs: None,
        watchdog_pids: None,
        kill_grace_ms: 500,
        egress_dir: None,
        egress_allow: vec![],
        daemon_version: "test".into(),
    };
    tweak(&mut spec);
    let kaged_holder::Started::Thread { thread, pid } =
        kaged_holder::Launcher::InThread.start(&spec, None).unwrap()
    else {
        panic!("not in a thread");
    };
    assert!(pid > 0);
    Held {
        _dir: dir,
        spec,
        thread: Some(thread),
    }
}

/// Output frames until Eof: (offset, bytes) each; then the Exit's status.
fn collect(c: &mut Client) -> (Vec<(u64, Vec<u8>)>, u64, StatusFile) {
    let mut frames = Vec::new();
    let mut written = None;
    loop {
        match c.read_frame().unwrap() {
            ToClient::Output { offset, bytes } => frames.push((offset, bytes)),
            ToClient::Eof { written: w, .. } => written = Some(w),
            ToClient::Exit(status) => return (frames, written.expect("Eof before Exit"), status),
            ToClient::Limit { .. } | ToClient::Done { .. } => {}
            other => panic!("unexpected {other:?}"),
        }
    }
}

/// The frames are contiguous from `from`; their bytes.
fn contiguous(frames: &[(u64, Vec<u8>)], from: u64) -> Vec<u8> {
    let mut at = from;
    let mut out = Vec::new();
    for (offset, bytes) in frames {
        assert_eq!(*offset, at, "gap or overlap at {at}");
        at += bytes.len() as u64;
        out.extend_from_slice(bytes);
    }
    out
}

fn lines(text: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(text)
        .lines()
        .map(|l| l.trim().to_string())
        .filter(|l| l.starts_with("line "))
        .collect()
}

fn numbered(n: usize) -> Vec<String> {
    (1..=n).map(|i| format!("line {i}")).collect()
}

#[test]
fn attach_from_zero_gets_every_byte_once_and_the_status_is_written_before_exit() {
    let mut held = start(
        "for i in $(seq 1 30); do echo line $i; sleep 0.02; done; exit 7",
        |_| {},
    );
    let mut c = held.connect();
    let info = c.info().unwrap().clone();
    assert_eq!(info.version, PROTOCOL);
    assert_eq!(info.state, HeldState::Running);
    assert_eq!((info.rows, info.cols), (24, 80));
    c.sender().attach(0).unwrap();
    let (frames, written, status) = collect(&mut c);
    // The status file is there, and says the same, when Exit arrives.
    let on_disk = kaged_holder::status::read(Path::new(&held.spec.status_path))
        .unwrap()
        .expect("status file before Exit");
    assert_eq!(on_disk, status);
    c.sender().ack_exit().unwrap();
    let text = contiguous(&frames, 0);
    assert_eq!(text.len() as u64, written);
    assert_eq!(text, std::fs::read(held.head()).unwrap());
    assert_eq!(lines(&text), numbered(30));
    assert_eq!(status.exit.unwrap().code, 7);
    assert_eq!(status.killed_by, None);
    assert_eq!(status.output_bytes, written);
    assert_eq!(held.join(), status);
    assert!(!held.socket().exists(), "the socket outlived the holder");
}

/// The egress directory and allowlist of the spec come back in Hello: a daemon taking the
/// run up serves the same allowlist again in the same directory.
#[test]
fn hello_reports_the_egress_directory_and_allowlist_of_the_spec() {
    let mut held = start("sleep 5", |spec| {
        spec.egress_dir = Some("/tmp/kaged-egress-0011223344556677".into());
        spec.egress_allow = vec!["127.0.0.1:8080".into(), "*.example.com:443".into()];
    });
    let c = held.connect();
    let info = c.info().unwrap().clone();
    assert_eq!(
        info.egress_dir.as_deref(),
        Some("/tmp/kaged-egress-0011223344556677")
    );
    assert_eq!(info.egress_allow, ["127.0.0.1:8080", "*.example.com:443"]);
    client::kill(held.socket(), "test", Duration::from_secs(5)).unwrap();
    held.join();
}

/// A client that reads only once the run ended still gets every byte, then Eof and Exit,
/// promptly: a run that ended makes no more events, so the holder must not wait for one
/// before sending what it still owes (it once stalled until its 60 s exit wait ran out).
#[test]
fn a_client_that_reads_after_the_end_still_gets_everything_and_the_exit() {
    let mut held = start("head -c 2000000 /dev/zero | tr '\\0' x; exit 3", |_| {});
    let mut c = held.connect();
    c.sender().attach(0).unwrap();
    let status_path = PathBuf::from(&held.spec.status_path);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !status_path.exists() {
        assert!(Instant::now() < deadline, "the run did not end");
        std::thread::sleep(Duration::from_millis(50));
    }
    // Long enough for the holder to have flushed what its socket takes and gone to sleep.
    std::thread::sleep(Duration::from_millis(500));
    let (frames, written, status) = collect(&mut c);
    c.sender().ack_exit().unwrap();
    assert_eq!(written, 2_000_000, "{status:?}");
    assert_eq!(contiguous(&frames, 0).len() as u64, written);
    assert_eq!(status.exit.unwrap().code, 3);
    assert_eq!(held.join(), status);
}

#[test]
fn detached_runs_go_on_and_a_reattach_from_the_last_offset_has_no_gap_and_no_duplicate() {
    let mut held = start(
        "for i in $(seq 1 40); do echo line $i; sleep 0.05; done",
        |_| {},
    );
    let mut first = held.connect();
    first.sender().attach(0).unwrap();
    let mut frames = Vec::new();
    while contiguous(&frames, 0).len() < 40 {
        if let ToClient::Output { offset, bytes } = first.read_frame().unwrap() {
            frames.push((offset, bytes));
        }
    }
    first.sender().detach().unwrap();
    drop(first);
    let seen = contiguous(&frames, 0);
    // Nobody attached: the run goes on and the transcript grows.
    let size = || std::fs::metadata(held.head()).unwrap().len();
    let before = size();
    std::thread::sleep(Duration::from_millis(400));
    assert!(
        size() > before,
        "the transcript did not grow while detached"
    );
    let mut second = held.connect();
    assert!(second.info().unwrap().written > seen.len() as u64);
    second.sender().attach(seen.len() as u64).unwrap();
    let (rest, written, status) = collect(&mut second);
    second.sender().ack_exit().unwrap();
    let mut all = seen.clone();
    all.extend(contiguous(&rest, seen.len() as u64));
    assert_eq!(all.len() as u64, written);
    assert_eq!(lines(&all), numbered(40));
    assert_eq!(status.exit.unwrap().code, 0);
    held.join();
}

#[test]
fn input_reaches_the_program_and_a_kill_is_recorded_with_who() {
    let mut held = start("exec cat", |_| {});
    let mut c = held.connect();
    let s = c.sender();
    s.attach(0).unwrap();
    s.input(b"hello holder\n").unwrap();
    let mut text = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    // The terminal's echo, then cat's copy.
    while String::from_utf8_lossy(&text)
        .matches("hello holder")
        .count()
        < 2
    {
        assert!(
            Instant::now() < deadline,
            "{:?}",
            String::from_utf8_lossy(&text)
        );
        if let ToClient::Output { bytes, .. } = c.read_frame().unwrap() {
            text.extend(bytes);
        }
    }
    s.resize(40, 100).unwrap();
    // Kill on a connection of its own: never behind input.
    let n = client::kill(held.socket(), "alice", Duration::from_secs(5)).unwrap();
    assert!(n >= 1, "{n}");
    let (_, _, status) = collect(&mut c);
    s.ack_exit().unwrap();
    assert_eq!(status.killed_by.as_deref(), Some("alice"));
    assert_eq!(status.exit.unwrap().signal, Some(9));
    assert_eq!(held.join(), status);
}

#[test]
fn a_client_offering_only_an_unknown_version_is_refused_with_ours_but_can_still_kill() {
    let mut held = start("sleep 300", |_| {});
    let mut c = Client::connect_offering(held.socket(), &[99], T).unwrap();
    match c.hello() {
        HolderHello::Refused { versions, refused } => {
            assert_eq!(versions, &vec![PROTOCOL]);
            assert!(refused.contains("99"), "{refused}");
        }
        other => panic!("accepted: {other:?}"),
    }
    c.sender().attach(0).unwrap();
    assert!(matches!(c.read_frame().unwrap(), ToClient::Error { .. }));
    // Kill is frozen: it works with any version.
    c.sender().kill("by an old daemon").unwrap();
    assert!(matches!(c.read_frame().unwrap(), ToClient::Done { n } if n >= 1));
    let status = held.join();
    assert_eq!(status.killed_by.as_deref(), Some("by an old daemon"));
}

#[test]
fn the_wall_time_deadline_stops_the_run_and_says_so() {
    // No shell in between: a shell may clear an inherited signal mask and hide one.
    let mut held = start("", |spec| {
        spec.argv = vec!["sleep".into(), "300".into()];
        spec.deadline_ms = Some(kaged_holder_now_ms() + 300);
        spec.wall_time_secs = Some(1);
    });
    let mut c = held.connect();
    c.sender().attach(0).unwrap();
    let mut limit = None;
    let status = loop {
        match c.read_frame().unwrap() {
            ToClient::Limit { by } => limit = Some(by),
            ToClient::Exit(s) => break s,
            _ => {}
        }
    };
    c.sender().ack_exit().unwrap();
    assert_eq!(limit.as_deref(), Some("kaged: wall-time limit of 1s"));
    assert_eq!(status.killed_by, limit);
    // HUP or TERM was enough for sleep: no KILL was needed.
    assert!(
        matches!(status.exit.unwrap().signal, Some(1 | 15)),
        "{status:?}"
    );
    held.join();
}

fn kaged_holder_now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

#[test]
fn an_attach_inside_the_capped_range_starts_at_the_first_kept_byte() {
    let mut held = start(
        "i=0; while [ $i -lt 300 ]; do echo line $i; i=$((i+1)); done; sleep 300",
        |spec| spec.cap = Cap::of(1000),
    );
    let mut c = held.connect();
    let deadline = Instant::now() + Duration::from_secs(10);
    while Client::connect(held.socket(), T)
        .unwrap()
        .info()
        .unwrap()
        .written
        < 2000
    {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(20));
    }
    let info = Client::connect(held.socket(), T)
        .unwrap()
        .info()
        .unwrap()
        .clone();
    let (head, kept) = info.dropped.expect("a dropped range");
    assert_eq!(head, 250);
    c.sender().attach(300).unwrap();
    let ToClient::Output { offset, bytes } = c.read_frame().unwrap() else {
        panic!("no output");
    };
    assert_eq!(offset, kept);
    let on_disk =
        kaged_holder::transcript::read(&held.head(), kept, kept + bytes.len() as u64, 1 << 20)
            .unwrap();
    assert_eq!(on_disk, (kept, bytes));
    c.sender().kill("done").unwrap();
    drop(c);
    held.join();
}

#[test]
fn a_peer_in_another_user_namespace_is_refused() {
    if std::process::Command::new("unshare")
        .args(["-U", "true"])
        .status()
        .map_or(true, |s| !s.success())
    {
        eprintln!("SKIPPED: `unshare -U` does not work here (no user namespaces)");
        return;
    }
    let held = start("sleep 300", |_| {});
    // A Hello, then whatever comes back, as hex.
    let probe = |unshare: bool| {
        let hello = ToHolder::Hello(kaged_session::holder::ClientHello {
            versions: vec![PROTOCOL],
            client: "probe".into(),
        })
        .encode();
        let script = format!(
            "import socket,sys\ns=socket.socket(socket.AF_UNIX)\ns.connect({:?})\ns.settimeout(5)\ntry:\n  s.sendall(bytes.fromhex({:?}))\n  d=s.recv(5)\nexcept Exception as e:\n  d=b''\nsys.stdout.write(d.hex())",
            held.spec.socket,
            hello.iter().map(|b| format!("{b:02x}")).collect::<String>()
        );
        let mut cmd = std::process::Command::new(if unshare { "unshare" } else { "python3" });
        if unshare {
            cmd.args(["-U", "python3"]);
        }
        let out = cmd.args(["-c", &script]).output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    // The same probe in this namespace is answered (a Hello frame starts with 00).
    assert!(
        probe(false).starts_with("00"),
        "not answered in our own namespace"
    );
    assert_eq!(
        probe(true),
        "",
        "a peer in another user namespace was answered"
    );
    drop(held);
}

#[test]
fn an_input_flood_is_held_back_and_never_delays_a_kill() {
    let mut held = start("exec sleep 300", |_| {});
    let flooder = held.connect();
    let sender = flooder.sender();
    let sent = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counter = sent.clone();
    // A program that never reads: the pending buffer fills, then the holder stops reading
    // this connection, so the sender blocks.
    let flood = std::thread::spawn(move || {
        let chunk = vec![b'x'; 256 * 1024];
        for _ in 0..256 {
            if sender.input(&chunk).is_err() {
                return;
            }
            counter.fetch_add(chunk.len() as u64, std::sync::atomic::Ordering::Relaxed);
        }
    });
    std::thread::sleep(Duration::from_millis(1500));
    let flooded = sent.load(std::sync::atomic::Ordering::Relaxed);
    assert!(
        flooded < 16 << 20,
        "{flooded} bytes of input taken by a program that reads none"
    );
    let asked = Instant::now();
    let n = client::kill(held.socket(), "flood test", Duration::from_secs(5)).unwrap();
    assert!(n >= 1);
    assert!(
        asked.elapsed() < Duration::from_secs(2),
        "{:?}",
        asked.elapsed()
    );
    let status = held.join();
    assert_eq!(status.killed_by.as_deref(), Some("flood test"));
    drop(flooder);
    flood.join().unwrap();
}

#[test]
fn the_pids_watchdog_kills_a_run_with_too_many_processes() {
    let mut held = start(
        // The pause lets the client attach first: Limit goes to attached clients (the
        // status file records it either way).
        "sleep 0.5; sleep 300 & sleep 300 & sleep 300 & sleep 300 & wait",
        |spec| spec.watchdog_pids = Some(3),
    );
    let mut c = held.connect();
    c.sender().attach(0).unwrap();
    let mut limit = None;
    let status = loop {
        match c.read_frame().unwrap() {
            ToClient::Limit { by } => limit = Some(by),
            ToClient::Exit(s) => break s,
            _ => {}
        }
    };
    c.sender().ack_exit().unwrap();
    let limit = limit.expect("a Limit frame");
    assert!(
        limit.starts_with("kaged: pids limit of 3 exceeded"),
        "{limit}"
    );
    assert_eq!(status.killed_by.as_deref(), Some(limit.as_str()));
    assert_eq!(status.exit.unwrap().signal, Some(9));
    held.join();
}

#[test]
fn discovery_reports_live_holders_and_removes_dead_sockets() {
    let held = start("sleep 300", |_| {});
    let dir = held.socket().parent().unwrap().to_path_buf();
    // A socket whose holder is gone: bound, then its listener closed.
    let dead = dir.join("ffffffffffffffff.sock");
    drop(std::os::unix::net::UnixListener::bind(&dead).unwrap());
    // Not a socket name: left alone.
    let other = dir.join("notes.txt");
    std::fs::write(&other, "x").unwrap();
    let found = kaged_holder::discover(&dir);
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].socket, held.socket());
    let HolderHello::Accepted(info) = &found[0].hello else {
        panic!("{:?}", found[0].hello);
    };
    assert_eq!(info.id, "s1");
    assert_eq!(info.holder_pid, std::process::id());
    assert!(!dead.exists(), "a dead socket was kept");
    assert!(other.exists());
    assert!(kaged_holder::discover(&dir.join("missing")).is_empty());
    drop(held);
}

#[test]
fn a_run_on_pipes_gets_input_on_stdin_its_stdout_is_the_output_and_a_note_waits_for_the_next_client()
 {
    let mut held = start(
        "echo started >&2; while read l; do echo \"got $l\"; done; echo 'no more input' >&2; exit 3",
        |spec| {
            spec.kind = "pipes".into();
            spec.stderr_path = Some(format!("{}.stderr", spec.transcript_head));
        },
    );
    let mut c = held.connect();
    let info = c.info().unwrap().clone();
    assert_eq!((info.kind.as_str(), info.note), ("pipes", None));
    let s = c.sender();
    s.attach(0).unwrap();
    s.input(b"one\ntwo\n").unwrap();
    let mut text = Vec::new();
    while !String::from_utf8_lossy(&text).contains("got two\n") {
        if let ToClient::Output { offset, bytes } = c.read_frame().unwrap() {
            assert_eq!(offset, text.len() as u64, "gap or overlap");
            text.extend(bytes);
        }
    }
    // No terminal: no echo, no carriage returns; stdout only.
    assert_eq!(String::from_utf8_lossy(&text), "got one\ngot two\n");
    let refused = {
        s.resize(40, 100).unwrap();
        loop {
            if let ToClient::Error { message, .. } = c.read_frame().unwrap() {
                break message;
            }
        }
    };
    assert!(refused.contains("no terminal"), "{refused}");
    s.note("{\"recorded\":16}".into()).unwrap();
    s.detach().unwrap();
    drop(c);
    // The next client finds the note, and how far the output went.
    let mut next = held.connect();
    let info = next.info().unwrap().clone();
    assert_eq!(info.note.as_deref(), Some("{\"recorded\":16}"));
    assert_eq!(info.written, 16);
    let s = next.sender();
    s.attach(info.written).unwrap();
    s.input(b"three\n").unwrap();
    // A kill on a connection of its own ends it; everything before is on stdout, once.
    let mut after = Vec::new();
    while !String::from_utf8_lossy(&after).contains("got three\n") {
        if let ToClient::Output { offset, bytes } = next.read_frame().unwrap() {
            assert_eq!(offset, 16 + after.len() as u64);
            after.extend(bytes);
        }
    }
    client::kill(held.socket(), "test", Duration::from_secs(5)).unwrap();
    let (_, _, status) = collect(&mut next);
    s.ack_exit().unwrap();
    assert_eq!(held.join(), status);
    assert_eq!(status.output_bytes, 16 + 10);
    let stderr = std::fs::read_to_string(format!("{}.stderr", held.spec.transcript_head)).unwrap();
    assert!(stderr.starts_with("started\n"), "{stderr:?}");
}

#[test]
fn a_piped_runs_stderr_is_kept_bounded_and_never_stops_the_run() {
    let mut held = start(
        // 1 MiB to stderr (more than is kept), then a line on stdout.
        "head -c 1048576 /dev/zero | tr '\\0' e >&2; echo done",
        |spec| {
            spec.kind = "pipes".into();
            spec.stderr_path = Some(format!("{}.stderr", spec.transcript_head));
        },
    );
    let mut c = held.connect();
    c.sender().attach(0).unwrap();
    let (frames, _, status) = collect(&mut c);
    c.sender().ack_exit().unwrap();
    assert_eq!(contiguous(&frames, 0), b"done\n");
    assert_eq!(status.exit.unwrap().code, 0);
    held.join();
    let kept = std::fs::metadata(format!("{}.stderr", held.spec.transcript_head)).unwrap();
    assert_eq!(kept.len(), kaged_session::holder::STDERR_KEPT);
}
