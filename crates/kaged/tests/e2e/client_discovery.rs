//! Finding the daemon (issue 12, item 4). As root, the README's `kaged start --mode user` makes a
//! per-user daemon, while a client without `--mode` would detect system-wide mode and look only in
//! `/run/kaged`. A client without `--mode` now looks where a daemon of either mode would be and
//! uses the one that runs; when both run it says so and how to choose (exit 2).
//!
//! The system-wide runtime directory is the fixed `/run/kaged`, so every process of these tests
//! runs in a private mount namespace whose `/run` is an empty tmpfs: the host's `/run` (and any
//! real kaged there) is neither seen nor touched. Needs root (as CI runs the suite); otherwise the
//! tests are skipped with a loud message.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use crate::common::*;

const SIDECAR_NONCE: &str = "5f1c0d9e8b7a69584736251403f2e1d0c9b8a7968574635241302f1e0d9c8b7a";

/// A mount namespace with a private, empty `/run`, alive while its holder process lives.
struct MountNs {
    holder: Child,
}

impl MountNs {
    fn create() -> Option<MountNs> {
        if !running_as_root() {
            eprintln!(
                "\n*** SKIPPED client_discovery: needs root for a private /run (scripts/test runs as root in CI) ***\n"
            );
            return None;
        }
        let mut holder = Command::new("unshare")
            .args(["--mount", "--propagation", "private", "--", "sh", "-c"])
            .arg("mount -t tmpfs -o mode=0755 kaged-test-run /run && echo ready && exec sleep 600")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .expect("run unshare");
        let mut line = String::new();
        BufReader::new(holder.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "ready", "could not make a private /run");
        Some(MountNs { holder })
    }

    /// `kaged ARGS` inside the namespace with a clean environment plus `env`.
    fn kaged(&self, env: &[(&str, &str)]) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.env_clear();
        for var in ["PATH", "LANG", "TZ"] {
            if let Some(v) = std::env::var_os(var) {
                cmd.env(var, v);
            }
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.arg(format!("--mount=/proc/{}/ns/mnt", self.holder.id()))
            .arg("--")
            .arg(kaged_bin());
        cmd
    }

    fn run(&self, env: &[(&str, &str)], args: &[&str]) -> Output {
        self.kaged(env).args(args).output().expect("run kaged")
    }

    fn start(&self, env: &[(&str, &str)], args: &[&str], home: &Path, runtime: &Path) -> Daemon {
        let mut cmd = self.kaged(env);
        cmd.arg("start").args(args);
        let env = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Daemon::spawn(cmd, home, runtime, env)
    }
}

impl Drop for MountNs {
    fn drop(&mut self) {
        let _ = self.holder.kill();
        let _ = self.holder.wait();
    }
}

/// An operator's per-user environment under `base`: HOME and the XDG directories.
struct UserEnv {
    vars: Vec<(String, String)>,
    runtime: PathBuf,
    data: PathBuf,
}

impl UserEnv {
    fn new(base: &Path) -> UserEnv {
        let dir = |name: &str| {
            let p = base.join(name);
            std::fs::create_dir_all(&p).unwrap();
            p
        };
        let (home, config, data, run) = (dir("home"), dir("config"), dir("data"), dir("xdg-run"));
        let vars = [
            ("HOME", &home),
            ("XDG_CONFIG_HOME", &config),
            ("XDG_DATA_HOME", &data),
            ("XDG_RUNTIME_DIR", &run),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap().to_string()))
        .collect();
        UserEnv {
            vars,
            runtime: run.join("kaged"),
            data: data.join("kaged"),
        }
    }

    fn pairs(&self) -> Vec<(&str, &str)> {
        self.vars
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect()
    }
}

fn stdout_of(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr_of(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn project(base: &Path) -> PathBuf {
    let root = base.join("demo");
    std::fs::create_dir_all(root.join(".kaged")).unwrap();
    std::fs::write(
        root.join(".kaged/project.yaml"),
        "version: 1\nproject: demo\nprimary:\n  command: [sh, -c, \"echo hi\"]\n",
    )
    .unwrap();
    root
}

#[test]
fn root_after_start_mode_user_every_client_command_finds_the_daemon() {
    let Some(ns) = MountNs::create() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let user = UserEnv::new(tmp.path());
    let env = user.pairs();
    // The README's command, then every client command without --mode.
    let d = ns.start(
        &env,
        &["--mode", "user", "--bind", "127.0.0.1:0"],
        &user.data,
        &user.runtime,
    );
    let out = ns.run(&env, &["status"]);
    assert!(out.status.success(), "{}", stderr_of(&out));
    let text = stdout_of(&out);
    assert!(text.contains("per-user (--mode=user was given)"), "{text}");
    assert!(text.contains(&user.runtime.display().to_string()), "{text}");
    let out = ns.run(&env, &["auth", "open", "--no-browser"]);
    assert!(out.status.success(), "{}", stderr_of(&out));
    assert!(
        stdout_of(&out).starts_with(&format!("{}/launch?token=", d.base)),
        "{}",
        stdout_of(&out)
    );
    let out = ns.run(&env, &["auth", "nonce"]);
    assert!(out.status.success(), "{}", stderr_of(&out));
    assert_eq!(stdout_of(&out).trim(), d.nonce().trim());
    let root = project(tmp.path());
    let out = ns.run(&env, &["project", "load", root.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr_of(&out));
    assert!(stdout_of(&out).contains("loaded project demo"));
    // --mode system still means the system-wide daemon, which does not run.
    let out = ns.run(&env, &["--mode", "system", "status"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr_of(&out));
    assert!(stderr_of(&out).contains("/run/kaged/daemon.json"));
    let (status, _) = d.stop();
    assert!(status.success());
    // Once it stopped: exit 3, naming both places a daemon could be and why.
    let out = ns.run(&env, &["status"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr_of(&out));
    let err = stderr_of(&out);
    assert!(
        err.contains("/run/kaged/daemon.json does not exist"),
        "{err}"
    );
    assert!(err.contains("because running as UID 0 (root)"), "{err}");
    let user_file = user.runtime.join("daemon.json");
    assert!(
        err.contains(&format!("{} does not exist", user_file.display())),
        "{err}"
    );
    assert!(err.contains("no --mode was given"), "{err}");
}

#[test]
fn with_a_daemon_of_each_mode_a_client_without_mode_asks_which() {
    let Some(ns) = MountNs::create() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let user = UserEnv::new(tmp.path());
    let env = user.pairs();

    // A system-wide daemon: /run/kaged (the namespace's), its data under the temp directory.
    let sys_data = tmp.path().join("var-lib-kaged");
    let sys_config = tmp.path().join("etc-kaged.toml");
    std::fs::write(
        &sys_config,
        format!("[daemon]\nhome = \"{}\"\n", sys_data.display()),
    )
    .unwrap();
    let mut sys_env = env.clone();
    sys_env.push(("KAGED_AUTH_SIDECAR_NONCE", SIDECAR_NONCE));
    let system = ns.start(
        &sys_env,
        &[
            "--mode",
            "system",
            "--config",
            sys_config.to_str().unwrap(),
            "--bind",
            "127.0.0.1:0",
        ],
        &sys_data,
        Path::new("/run/kaged"),
    );
    // Alone, it is found without --mode (root detects system-wide anyway).
    let out = ns.run(&env, &["status"]);
    assert!(out.status.success(), "{}", stderr_of(&out));
    assert!(
        stdout_of(&out).contains("system-wide"),
        "{}",
        stdout_of(&out)
    );

    let user_d = ns.start(
        &env,
        &["--mode", "user", "--bind", "127.0.0.1:0"],
        &user.data,
        &user.runtime,
    );
    // Both run: no guess. Exit 2, naming both daemons and the flag that chooses.
    for args in [
        &["status"][..],
        &["auth", "open", "--no-browser"],
        &["project", "list"],
    ] {
        let out = ns.run(&env, args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr_of(&out));
        let err = stderr_of(&out);
        assert!(err.contains("2 kaged daemons are running"), "{err}");
        assert!(
            err.contains(&format!(
                "--mode system: the system-wide daemon (pid {}",
                system.child.id()
            )),
            "{err}"
        );
        assert!(
            err.contains(&format!(
                "--mode user: the per-user daemon (pid {}",
                user_d.child.id()
            )),
            "{err}"
        );
        assert!(
            err.contains(&system.base) && err.contains(&user_d.base),
            "{err}"
        );
        assert!(out.stdout.is_empty(), "{args:?}");
    }
    // --mode picks one, before or after the command.
    let out = ns.run(&env, &["--mode", "user", "status"]);
    assert!(out.status.success(), "{}", stderr_of(&out));
    assert!(stdout_of(&out).contains(&format!("pid {}", user_d.child.id())));
    assert!(stdout_of(&out).contains("per-user"));
    let out = ns.run(&env, &["status", "--mode", "system"]);
    assert!(out.status.success(), "{}", stderr_of(&out));
    assert!(stdout_of(&out).contains(&format!("pid {}", system.child.id())));
    assert!(stdout_of(&out).contains("system-wide"));
    let out = ns.run(&env, &["--mode", "user", "auth", "open", "--no-browser"]);
    assert!(out.status.success(), "{}", stderr_of(&out));
    assert!(stdout_of(&out).starts_with(&format!("{}/launch?token=", user_d.base)));

    // Once the system-wide one stops, the per-user one is found alone again.
    let (status, _) = system.stop();
    assert!(status.success());
    let out = ns.run(&env, &["status"]);
    assert!(out.status.success(), "{}", stderr_of(&out));
    assert!(stdout_of(&out).contains(&format!("pid {}", user_d.child.id())));
    let (status, _) = user_d.stop();
    assert!(status.success());
}
