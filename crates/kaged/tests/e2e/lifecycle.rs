//! Startup, shutdown, storage and configuration behaviour of the real binary.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use crate::common::*;

fn stderr_of(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn sigterm_lets_in_flight_requests_finish_then_cleans_up() {
    let tmp = tempfile::tempdir().unwrap();
    let d = Daemon::start(tmp.path());
    let host = format!("127.0.0.1:{}", d.port());

    // A request whose headers are still arriving when the signal lands.
    let mut slow = TcpStream::connect(&host).unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(slow, "GET /healthz HTTP/1.1\r\nHost: {host}\r\n").unwrap();
    slow.flush().unwrap();
    std::thread::sleep(Duration::from_millis(200));
    d.signal("TERM");
    std::thread::sleep(Duration::from_millis(300));
    write!(slow, "Connection: close\r\n\r\n").unwrap();
    let mut response = String::new();
    slow.read_to_string(&mut response).unwrap();
    assert!(
        response.starts_with("HTTP/1.1 200"),
        "in-flight request was cut: {response:?}"
    );
    assert!(response.ends_with(r#"{"status":"ok"}"#), "{response:?}");

    let (status, log) = d.stop_after_signal();
    assert!(status.success(), "exit {status:?}\n{log}");
    assert!(
        log.contains("stopping: finishing in-flight requests"),
        "{log}"
    );
    assert!(!tmp.path().join("run/auth-cookie").exists());
    assert!(!tmp.path().join("run/daemon.json").exists());
    // New connections are refused once it is gone.
    assert!(TcpStream::connect(&host).is_err());

    let db = rusqlite::Connection::open(tmp.path().join("kaged.db")).unwrap();
    let stopped: Option<i64> = db
        .query_row(
            "SELECT stopped_at_ms FROM daemon_runs ORDER BY id DESC LIMIT 1",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(stopped.is_some(), "clean stop recorded");
    let kinds: Vec<String> = db
        .prepare("SELECT kind FROM audit_events ORDER BY id")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(kinds.first().map(String::as_str), Some("daemon.start"));
    assert_eq!(kinds.last().map(String::as_str), Some("daemon.stop"));
    // WAL checkpointed on close.
    let wal = tmp.path().join("kaged.db-wal");
    assert!(!wal.exists() || std::fs::metadata(&wal).unwrap().len() == 0);
}

#[test]
fn sigint_also_stops_cleanly() {
    let tmp = tempfile::tempdir().unwrap();
    let d = Daemon::start(tmp.path());
    d.signal("INT");
    let (status, log) = d.stop_after_signal();
    assert!(status.success(), "{log}");
    assert!(log.contains("signal=\"SIGINT\""), "{log}");
}

#[test]
fn crash_is_noticed_at_next_start() {
    let tmp = tempfile::tempdir().unwrap();
    let d = Daemon::start(tmp.path());
    d.signal("KILL");
    let (_, _) = d.stop_after_signal();
    // SIGKILL leaves the runtime files behind; the next start must cope.
    assert!(tmp.path().join("run/daemon.json").exists());
    let d2 = Daemon::start(tmp.path());
    assert!(
        d2.stderr_text().contains("did not shut down cleanly"),
        "{}",
        d2.stderr_text()
    );
}

#[test]
fn address_in_use_is_one_clear_line() {
    let tmp = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let home = tmp.path().to_str().unwrap();
    let out = kaged_cmd(&[("KAGED_HOME", home)])
        .args(["start", "--bind", &addr])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = stderr_of(&out);
    let last = err.lines().last().unwrap();
    assert!(
        last.starts_with(&format!(
            "kaged: cannot listen on {addr}: address already in use"
        )),
        "{err}"
    );
    assert!(last.contains("kaged start --bind 127.0.0.1:"), "{last}");
    assert!(
        !tmp.path().join("run/auth-cookie").exists(),
        "nothing left behind"
    );
}

#[test]
fn second_daemon_on_the_same_home_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let d = Daemon::start(tmp.path());
    let home = tmp.path().to_str().unwrap();
    let out = kaged_cmd(&[("KAGED_HOME", home)])
        .args(["start", "--bind", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr_of(&out).contains(&format!("kaged is already running (pid {})", d.child.id())),
        "{}",
        stderr_of(&out)
    );
    // The first daemon is untouched.
    assert!(d.cli(&["status"]).status.success());
}

#[test]
fn sd_notify_ready_and_stopping_are_sent_under_systemd() {
    let tmp = tempfile::tempdir().unwrap();
    let sock_path = tmp.path().join("notify.sock");
    let sock = std::os::unix::net::UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let home = tmp.path().join("home");
    let d = Daemon::start_with(
        &home,
        &["--bind", "127.0.0.1:0"],
        &[("NOTIFY_SOCKET", sock_path.to_str().unwrap())],
    );
    let mut buf = [0u8; 256];
    let n = sock.recv(&mut buf).unwrap();
    assert_eq!(std::str::from_utf8(&buf[..n]).unwrap().trim(), "READY=1");
    let (status, log) = d.stop();
    assert!(status.success(), "{status:?}\n{log}");
    let n = sock.recv(&mut buf).unwrap();
    assert_eq!(std::str::from_utf8(&buf[..n]).unwrap().trim(), "STOPPING=1");
}

#[test]
fn status_without_a_daemon_says_where_it_looked_and_fails() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().to_str().unwrap();
    let out = kaged_cmd(&[("KAGED_HOME", home)])
        .arg("status")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    let err = stderr_of(&out);
    assert!(err.contains("no kaged daemon is running"), "{err}");
    assert!(err.contains(&format!("{home}/run/daemon.json")), "{err}");
    for args in [&["auth", "nonce"][..], &["auth", "open", "--no-browser"]] {
        let out = kaged_cmd(&[("KAGED_HOME", home)])
            .args(args)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(3), "{args:?}: {}", stderr_of(&out));
    }
}

#[test]
fn mode_rules_flag_kaged_home_and_root_are_reported() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().to_str().unwrap();
    // Rule 1: --mode wins over KAGED_HOME.
    let out = kaged_cmd(&[("KAGED_HOME", home)])
        .args(["--mode", "system", "status"])
        .output()
        .unwrap();
    let err = stderr_of(&out);
    assert!(
        err.contains("system-wide runtime directory because --mode=system was given"),
        "{err}"
    );
    // Rule 2: KAGED_HOME.
    let out = kaged_cmd(&[("KAGED_HOME", home), ("HOME", "/nonexistent")])
        .arg("status")
        .output()
        .unwrap();
    assert!(
        stderr_of(&out).contains("per-user runtime directory because KAGED_HOME="),
        "{}",
        stderr_of(&out)
    );
    // Rule 3: root means system-wide (only observable when the suite runs as root).
    if kaged_uid() == 0 {
        let out = kaged_cmd(&[("HOME", home)]).arg("status").output().unwrap();
        let err = stderr_of(&out);
        assert!(err.contains("/run/kaged/daemon.json"), "{err}");
        assert!(err.contains("because running as UID 0 (root)"), "{err}");
    }
    // A relative KAGED_HOME is a configuration error naming the variable.
    let out = kaged_cmd(&[("KAGED_HOME", "relative")])
        .arg("status")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr_of(&out).contains("environment variable KAGED_HOME"),
        "{}",
        stderr_of(&out)
    );
}

fn kaged_uid() -> u32 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").unwrap().uid()
}

#[test]
fn newer_database_is_refused_untouched() {
    let tmp = tempfile::tempdir().unwrap();
    let db_path = tmp.path().join("kaged.db");
    {
        let c = rusqlite::Connection::open(&db_path).unwrap();
        c.pragma_update(None, "user_version", 999).unwrap();
    }
    let out = kaged_cmd(&[("KAGED_HOME", tmp.path().to_str().unwrap())])
        .args(["start", "--bind", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = stderr_of(&out);
    assert!(
        err.contains("schema version 999, written by a newer kaged"),
        "{err}"
    );
    assert!(err.contains(db_path.to_str().unwrap()), "{err}");
    let c = rusqlite::Connection::open(&db_path).unwrap();
    let v: u32 = c
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap();
    assert_eq!(v, 999);
}

#[test]
fn existing_older_database_is_migrated_keeping_its_rows() {
    let tmp = tempfile::tempdir().unwrap();
    let db_path = tmp.path().join("kaged.db");
    {
        use kaged_store::Backend;
        let old = kaged_store::SqliteBackend::open_at_version(&db_path, 1).unwrap();
        old.append_audit(&kaged_store::AuditEvent {
            ts_ms: 1,
            kind: "legacy.event".into(),
            outcome: "success".into(),
            identity: None,
            source: None,
            detail: serde_json::json!({}),
        })
        .unwrap();
    }
    let d = Daemon::start(tmp.path());
    let out = d.cli(&["status", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["storage"]["schema_version"], kaged_store::LATEST_SCHEMA);
    let (status, _) = d.stop();
    assert!(status.success());
    let c = rusqlite::Connection::open(&db_path).unwrap();
    let n: i64 = c
        .query_row(
            "SELECT count(*) FROM audit_events WHERE kind = 'legacy.event'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(n, 1);
    let runs: i64 = c
        .query_row("SELECT count(*) FROM daemon_runs", [], |r| r.get(0))
        .unwrap();
    assert_eq!(runs, 1);
}

#[test]
fn config_errors_name_file_key_line_and_fix_and_exit_2() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().to_str().unwrap();
    let cfg = tmp.path().join("config.toml");
    std::fs::write(
        &cfg,
        "[daemon]\nbind = \"127.0.0.1:0\"\nbnd = \"x\"\n[logging]\nlevel = \"loud\"\n",
    )
    .unwrap();
    let out = kaged_cmd(&[("KAGED_HOME", home)])
        .arg("start")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = stderr_of(&out);
    assert!(
        err.starts_with("kaged: invalid configuration (2 problems):"),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "{}:3:1: daemon.bnd: unknown key `bnd` in [daemon]",
            cfg.display()
        )),
        "{err}"
    );
    assert!(err.contains("did you mean `bind`"), "{err}");
    assert!(
        err.contains(&format!("{}:5:1: logging.level:", cfg.display())),
        "{err}"
    );
    assert!(err.contains("fix: use one of"), "{err}");
    // The file is left exactly as the operator wrote it.
    assert!(
        std::fs::read_to_string(&cfg)
            .unwrap()
            .contains("bnd = \"x\"")
    );

    // Environment and flag errors name their source.
    std::fs::write(&cfg, "").unwrap();
    let out = kaged_cmd(&[("KAGED_HOME", home), ("KAGED_UI_SERVE", "maybe")])
        .arg("start")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr_of(&out).contains("environment variable KAGED_UI_SERVE: ui.serve:"),
        "{}",
        stderr_of(&out)
    );
    let out = kaged_cmd(&[("KAGED_HOME", home)])
        .args(["start", "--bind", "localhost"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr_of(&out).contains("command-line flag --bind: daemon.bind:"),
        "{}",
        stderr_of(&out)
    );
    // A named config file that does not exist.
    let out = kaged_cmd(&[("KAGED_HOME", home)])
        .args(["start", "--config", "/nonexistent/kaged.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr_of(&out).contains("cannot read config file /nonexistent/kaged.toml"),
        "{}",
        stderr_of(&out)
    );
}

#[test]
fn flags_beat_environment_beat_file_beat_defaults() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    let (p_file, p_env, p_flag) = (free_port(), free_port(), free_port());
    std::fs::write(
        home.join("config.toml"),
        format!("[daemon]\nbind = \"127.0.0.1:{p_file}\"\n"),
    )
    .unwrap();
    let env_bind = format!("127.0.0.1:{p_env}");
    let flag_bind = format!("127.0.0.1:{p_flag}");

    let d = Daemon::start_with(&home, &["--bind", &flag_bind], &[("KAGED_BIND", &env_bind)]);
    assert_eq!(d.port(), p_flag);
    let v: serde_json::Value =
        serde_json::from_slice(&d.cli(&["status", "--json"]).stdout).unwrap();
    assert_eq!(v["sources"]["daemon.bind"]["from"], "flag");
    assert_eq!(v["sources"]["logging.level"]["from"], "default");
    drop(d.stop());

    let d = Daemon::start_with(&home, &[], &[("KAGED_BIND", &env_bind)]);
    assert_eq!(d.port(), p_env);
    let v: serde_json::Value =
        serde_json::from_slice(&d.cli(&["status", "--json"]).stdout).unwrap();
    assert_eq!(
        v["sources"]["daemon.bind"],
        serde_json::json!({"from": "env", "var": "KAGED_BIND"})
    );
    drop(d.stop());

    let d = Daemon::start_with(&home, &[], &[]);
    assert_eq!(d.port(), p_file);
    let v: serde_json::Value =
        serde_json::from_slice(&d.cli(&["status", "--json"]).stdout).unwrap();
    assert_eq!(
        v["sources"]["daemon.bind"],
        serde_json::json!({"from": "file", "line": 2})
    );
}

#[test]
fn first_per_user_launch_writes_a_documented_config() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("home");
    let d = Daemon::start(&home);
    let text = std::fs::read_to_string(home.join("config.toml")).unwrap();
    // Defaults of the mode, not this run's --bind 127.0.0.1:0.
    assert!(text.contains("bind = \"127.0.0.1:7777\""), "{text}");
    assert!(
        text.contains(&format!("url = \"sqlite://{}/kaged.db\"", home.display())),
        "{text}"
    );
    assert!(text.contains("(env KAGED_LOG_LEVEL)"), "{text}");
    drop(d.stop());
    // A second start reads it back without complaint, and leaves it alone.
    let d = Daemon::start(&home);
    drop(d.stop());
    assert_eq!(
        std::fs::read_to_string(home.join("config.toml")).unwrap(),
        text
    );
}

#[test]
fn ready_line_is_printed_exactly_once_and_config_flag_is_honoured() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("elsewhere.toml");
    let port = free_port();
    std::fs::write(&cfg, format!("[daemon]\nbind = \"127.0.0.1:{port}\"\n")).unwrap();
    let home = tmp.path().join("home");
    let d = Daemon::start_with(&home, &["--config", cfg.to_str().unwrap()], &[]);
    assert_eq!(d.port(), port);
    let (status, log) = d.stop();
    assert!(status.success());
    assert_eq!(
        log.lines().filter(|l| l.starts_with(READY_PREFIX)).count(),
        1,
        "{log}"
    );
    assert_eq!(
        log.matches("launch?token=").count(),
        1,
        "the token appears once: {log}"
    );
    // With --config the mode's default file is not written.
    assert!(!home.join("config.toml").exists());
}

#[test]
fn syntax_errors_and_unknown_sections_are_reported_through_the_binary() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().to_str().unwrap();
    let cfg = tmp.path().join("config.toml");
    let line2 = format!("{}:2:", cfg.display());
    let cases: [(&str, &[&str]); 3] = [
        (
            "[daemon]\nbind = 127.0.0.1:7777\n",
            &[&line2, "TOML syntax error"],
        ),
        (
            "[demon]\nbind = \"127.0.0.1:0\"\n",
            &["unknown section [demon]", "did you mean [daemon]"],
        ),
        (
            "[storage]\nurl = \"postgres://db/kaged\"\n",
            &[
                &line2,
                "names no database user",
                "postgres://USER@HOST:5432/DATABASE",
            ],
        ),
    ];
    for (text, needles) in cases {
        std::fs::write(&cfg, text).unwrap();
        let out = kaged_cmd(&[("KAGED_HOME", home)])
            .arg("start")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{text}");
        let err = stderr_of(&out);
        for needle in needles {
            assert!(err.contains(needle), "{text}: missing {needle:?} in {err}");
        }
    }
}

#[test]
fn wildcard_bind_is_refused_with_the_fix() {
    let tmp = tempfile::tempdir().unwrap();
    let out = kaged_cmd(&[("KAGED_HOME", tmp.path().to_str().unwrap())])
        .args(["start", "--bind", "0.0.0.0:0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = stderr_of(&out);
    assert!(
        err.contains("refusing to listen on 0.0.0.0:0 (all interfaces)"),
        "{err}"
    );
    assert!(err.contains("SSH tunnel"), "{err}");
}

#[test]
fn stale_discovery_from_a_reused_pid_does_not_block_a_start() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    std::fs::create_dir_all(&run).unwrap();
    // pid 1 is alive but is not kaged, and holds no lock.
    std::fs::write(
        run.join("daemon.json"),
        r#"{"pid":1,"url":"http://127.0.0.1:1","version":"0","started_at_ms":0}"#,
    )
    .unwrap();
    let out = kaged_cmd(&[("KAGED_HOME", tmp.path().to_str().unwrap())])
        .arg("status")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    assert!(
        stderr_of(&out).contains("names pid 1, which no longer holds"),
        "{}",
        stderr_of(&out)
    );
    let d = Daemon::start(tmp.path());
    assert!(d.cli(&["status"]).status.success());
}

#[test]
fn auth_open_hands_the_browser_a_private_redirect_page_not_the_token() {
    let tmp = tempfile::tempdir().unwrap();
    let d = Daemon::start(tmp.path());
    // No graphical session here: kaged says it cannot open a browser, and still prints the URL.
    let out = d.cli(&["auth", "open"]);
    assert!(out.status.success());
    let url = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(url.contains("/launch?token="), "{url}");
    assert!(
        stderr_of(&out).contains("could not open a browser (no graphical session"),
        "{}",
        stderr_of(&out)
    );
    let page = d.runtime_dir().join("launch.html");
    assert_eq!(mode_of(&page), 0o600);
    assert!(std::fs::read_to_string(&page).unwrap().contains(&url));
    let (status, _) = d.stop();
    assert!(status.success());
    assert!(!page.exists(), "removed at shutdown");
}

/// The pids cgroup v1 directory this test (and so a daemon it starts) lives in, if kaged can
/// make groups there (root on a cgroup v1 host).
fn own_pids_cgroup() -> Option<std::path::PathBuf> {
    let text = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let path = text.lines().find_map(|line| {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        controllers.split(',').any(|c| c == "pids").then_some(path)
    })?;
    let dir = std::path::Path::new("/sys/fs/cgroup/pids").join(path.trim_start_matches('/'));
    // Unique within the process too: tests run as threads of one binary.
    static PROBES: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let probe = dir.join(format!(
        "kaged-test-probe-{}-{}",
        std::process::id(),
        PROBES.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    std::fs::create_dir(&probe).ok()?;
    std::fs::remove_dir(&probe).ok()?;
    Some(dir)
}

#[test]
fn leftovers_of_a_killed_daemon_are_swept_at_the_next_start() {
    use std::os::unix::fs::DirBuilderExt;
    let tmp = tempfile::tempdir().unwrap();
    // A first start makes the database; then a session is left `running` in it, as a daemon
    // killed during a run leaves it.
    let (status, log) = Daemon::start(tmp.path()).stop();
    assert!(status.success(), "{log}");
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let id = format!("{:032x}", nanos ^ ((std::process::id() as u128) << 64));
    let run = &id[..16];
    let db = rusqlite::Connection::open(tmp.path().join("kaged.db")).unwrap();
    db.execute(
        "INSERT INTO sessions (id, project, kind, name, command, caged, state, created_by, created_at_ms)
         VALUES (?1, 'demo', 'agent', 'shell', '[\"sh\"]', 1, 'running', 'user:test', 1)",
        [&id],
    )
    .unwrap();
    drop(db);

    // Its cgroup, still holding a process; and a group of some other daemon's run.
    let cgroups = own_pids_cgroup();
    let mut orphan = None;
    let other = format!("kaged-{:016x}", !(nanos as u64));
    if let Some(root) = &cgroups {
        let ours = root.join(format!("kaged-{run}"));
        std::fs::create_dir(&ours).unwrap();
        let sleeper = std::process::Command::new("sleep")
            .arg("300")
            .spawn()
            .unwrap();
        std::fs::write(ours.join("cgroup.procs"), sleeper.id().to_string()).unwrap();
        orphan = Some(sleeper);
        std::fs::create_dir(root.join(&other)).unwrap();
    } else {
        eprintln!("no writable cgroup v1 pids hierarchy here: the cgroup part is not exercised");
    }
    // Its egress socket.
    let egress = tmp.path().join("run/egress");
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&egress)
        .unwrap();
    let socket = egress.join(format!("{run}.sock"));
    drop(std::os::unix::net::UnixListener::bind(&socket).unwrap());
    // An older kaged's seccomp directory, in a temporary directory of this test's own.
    let tmpdir = tmp.path().join("tmp");
    std::fs::create_dir(&tmpdir).unwrap();
    let seccomp = tmpdir.join("kaged-seccomp-00112233aabbccdd");
    std::fs::create_dir(&seccomp).unwrap();
    std::fs::write(seccomp.join("filter.bpf"), b"\0\0\0\0").unwrap();
    let unrelated = tmpdir.join("kaged-seccomp-notes.txt");
    std::fs::write(&unrelated, b"not a directory of ours").unwrap();
    // The copy of kaged a daemon that is gone kept (no PID that large runs), and one of a
    // live kaged (this test, as far as the sweep can tell), which stays.
    let stale_helper = tmpdir.join("kaged-helper-99999999-00112233aabbccdd");
    std::fs::create_dir(&stale_helper).unwrap();
    std::fs::write(stale_helper.join("kaged"), b"\x7fELF").unwrap();
    let live_helper = tmpdir.join(format!("kaged-helper-{}-0011", std::process::id()));
    std::fs::create_dir(&live_helper).unwrap();

    let d = Daemon::start_with(
        tmp.path(),
        &["--bind", "127.0.0.1:0"],
        &[("TMPDIR", tmpdir.to_str().unwrap())],
    );
    let log = d.stderr_text();
    let cgroup_part = if cgroups.is_some() {
        "1 cgroup (1 process killed)"
    } else {
        "0 cgroups (0 processes killed)"
    };
    assert!(
        log.contains(&format!(
            "swept what an earlier kaged left: {cgroup_part}, 1 egress socket, 1 seccomp directory, 1 helper copy"
        )),
        "{log}"
    );
    assert!(!stale_helper.exists() && live_helper.exists());
    assert!(!socket.exists());
    assert!(!seccomp.exists());
    assert!(unrelated.exists());
    if let (Some(root), Some(mut sleeper)) = (&cgroups, orphan) {
        assert!(!root.join(format!("kaged-{run}")).exists());
        let status = wait_timeout(&mut sleeper, Duration::from_secs(5));
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(9)
        );
        // Not provably left by a dead kaged: kept.
        let kept = root.join(&other).exists();
        let _ = std::fs::remove_dir(root.join(&other));
        assert!(kept, "another daemon's cgroup was swept");
    }
    // Nothing of this daemon's left, nothing said. Helper copies live in the shared temporary
    // directory, where another test's killed daemon may have just left one (this start rightly
    // sweeps it): only they may be named.
    let (status, log) = d.stop();
    assert!(status.success(), "{log}");
    let d = Daemon::start(tmp.path());
    let log = d.stderr_text();
    for line in log.lines().filter(|l| l.contains("swept")) {
        assert!(
            line.contains(
                "0 cgroups (0 processes killed), 0 egress sockets, 0 seccomp directories"
            ),
            "{log}"
        );
    }
}

#[test]
fn a_daemon_killed_during_a_caged_run_leaves_what_the_next_start_sweeps() {
    let Some(root) = own_pids_cgroup() else {
        eprintln!("no writable cgroup v1 pids hierarchy here: skipped");
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let project = tmp.path().join("demo");
    std::fs::create_dir_all(project.join(".kaged")).unwrap();
    std::fs::write(
        project.join(".kaged/project.yaml"),
        "version: 1\nproject: demo\nprimary:\n  command: [sleep, \"300\"]\n  cage:\n    network:\n      allow: [\"127.0.0.1:1\"]\n    limits: { pids: 32 }\n",
    )
    .unwrap();
    let home = tmp.path().join("home");
    // A temporary directory of its own, where the run's egress directory is made.
    let tmpdir = tmp.path().join("tmp");
    std::fs::create_dir_all(&tmpdir).unwrap();
    let tmpdir_text = tmpdir.to_str().unwrap();
    let with_tmp = |home: &std::path::Path| {
        Daemon::start_with(home, &["--bind", "127.0.0.1:0"], &[("TMPDIR", tmpdir_text)])
    };
    let d = with_tmp(&home);
    let out = d.cli(&["project", "load", project.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr_of(&out));
    let out = d.cli(&["session", "start", "demo", "--agent", "primary", "--detach"]);
    assert!(out.status.success(), "{}", stderr_of(&out));
    let id = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let group = root.join(format!("kaged-{}", &id[..16]));
    let socket = || {
        std::fs::read_dir(&tmpdir)
            .unwrap()
            .flatten()
            .map(|e| e.path().join("egress.sock"))
            .find(|s| s.exists())
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !(std::fs::read_to_string(group.join("cgroup.procs")).is_ok_and(|p| !p.is_empty())
        && socket().is_some())
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the run did not start\n{}",
            d.stderr_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // A crash of everything at once (an OOM kill of the daemon and the run's holder): the
    // cage dies with its holder, its group and the egress socket are left to the next start.
    // (Killing the daemon alone leaves the run to its holder: the next start takes it up, with
    // its group, and serves its allowlist proxy again in the same directory.)
    let held = home.join(format!("run/holders/{}.sock", &id[..16]));
    let holder = kaged_holder::Client::connect(&held, Some(Duration::from_secs(5)))
        .unwrap()
        .info()
        .unwrap()
        .holder_pid;
    assert!(
        std::process::Command::new("kill")
            .args(["-KILL", &d.child.id().to_string(), &holder.to_string()])
            .status()
            .unwrap()
            .success()
    );
    let _ = d.stop_after_signal();
    std::thread::sleep(Duration::from_millis(300));
    let socket = socket().unwrap();
    assert!(group.exists() && socket.exists());

    let d = with_tmp(&home);
    let log = d.stderr_text();
    assert!(
        // Its pids group, and its memory group where that hierarchy is writable (the
        // default memory limit).
        (log.contains("swept what an earlier kaged left: 1 cgroup (")
            || log.contains("swept what an earlier kaged left: 2 cgroups ("))
            && log.contains("), 1 egress socket,")
            // The killed daemon's copy of kaged, too.
            && log.contains(", 1 helper copy"),
        "{log}"
    );
    assert!(!group.exists());
    assert!(!socket.exists());
}

/// `kaged stop`: the local operator's CLI stops the daemon as SIGTERM does and waits for it;
/// a signed-in browser may not; a second `kaged stop` finds nothing to stop.
#[tokio::test]
async fn kaged_stop_stops_the_daemon_for_the_local_operator_only() {
    let tmp = tempfile::tempdir().unwrap();
    let d = Daemon::start(tmp.path());
    let browser = browser_like_client();
    assert_eq!(
        browser.get(&d.launch_url).send().await.unwrap().status(),
        reqwest::StatusCode::SEE_OTHER
    );
    let me: serde_json::Value = browser
        .get(format!("{}/api/v1/whoami", d.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let r = browser
        .post(format!("{}/api/v1/daemon/stop", d.base))
        .header(reqwest::header::ORIGIN, d.base.as_str())
        .header("x-kaged-csrf", me["csrf_token"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), reqwest::StatusCode::FORBIDDEN);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "forbidden", "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("kaged stop"),
        "{body}"
    );
    let (status, _) = d.call(reqwest::Method::GET, "/healthz", None).await;
    assert!(status.is_success(), "still up after the refusal");

    let out = d.cli(&["stop"]);
    assert!(out.status.success(), "{}", stderr_of(&out));
    let pid = d.child.id();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("kaged stopped (pid {pid})\n")
    );
    let again = d.cli(&["stop"]);
    assert!(again.status.success(), "{}", stderr_of(&again));
    assert!(stderr_of(&again).contains("not running; nothing to stop"));
    let (status, log) = d.stop_after_signal();
    assert!(status.success(), "{status}: {log}");
    assert!(log.contains("kaged stop"), "{log}");

    let db = rusqlite::Connection::open(tmp.path().join("kaged.db")).unwrap();
    let asked: Vec<(String, String)> = db
        .prepare(
            "SELECT kind, outcome FROM audit_events WHERE kind LIKE 'daemon.stop%' ORDER BY id",
        )
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(
        asked,
        [
            ("daemon.stop.requested".to_string(), "failure".to_string()),
            ("daemon.stop.requested".to_string(), "success".to_string()),
            ("daemon.stop".to_string(), "success".to_string())
        ]
    );
}
