//! Test harness: runs the real `kaged` binary against temporary directories.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

/// Model agents: the provider test server, configuration, the agent routes (`provider.rs`).
pub mod provider;

/// The standalone scripted ACP agent and ACP client, built once per process (`acp_testing.rs`).
pub mod acp_testing;

/// The loopback Anthropic-compatible stream real Claude Code runs against (`anthropic.rs`).
pub mod anthropic;

/// Agent CLIs from the npm registry, pinned and cached (`npm.rs`).
pub mod npm;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const READY_PREFIX: &str = "kaged: ready — launch URL: ";
/// The ready line when sign-in goes through a sidecar (no launch URL).
pub const READY_SIDECAR_PREFIX: &str = "kaged: ready — listening on ";

pub fn kaged_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_kaged"))
}

/// A `kaged` command with a clean environment: no inherited KAGED_* or XDG_* variables.
pub fn kaged_cmd(env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(kaged_bin());
    cmd.env_clear();
    for var in ["PATH", "LANG", "TZ"] {
        if let Some(v) = std::env::var_os(var) {
            cmd.env(var, v);
        }
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

pub struct Daemon {
    pub child: Child,
    /// `KAGED_HOME` of this daemon, or the data directory of a per-user daemon.
    pub home: PathBuf,
    pub runtime: PathBuf,
    pub env: Vec<(String, String)>,
    pub base: String,
    pub launch_url: String,
    pub stderr: Arc<Mutex<Vec<String>>>,
    /// Fail the test when the daemon's log shows a panic (checked when the daemon is dropped,
    /// stopped or not); see [`Daemon::failing_on_panics`].
    pub fail_on_panic: bool,
    /// Whether dropping this daemon ends its held runs too (see [`Daemon::keeping_runs`]).
    pub ends_runs_on_drop: bool,
}

impl Daemon {
    /// Start in per-user mode with all state under `home`, on a random loopback port.
    pub fn start(home: &Path) -> Daemon {
        Self::start_with(home, &["--bind", "127.0.0.1:0"], &[])
    }

    pub fn start_with(home: &Path, args: &[&str], extra_env: &[(&str, &str)]) -> Daemon {
        let home_str = home.to_str().unwrap().to_string();
        let mut env: Vec<(String, String)> = vec![("KAGED_HOME".into(), home_str)];
        // Most tests want their runs ended with the daemon (as before run holders); the tests
        // of runs that outlive it say `keep` themselves.
        if !extra_env
            .iter()
            .any(|(k, _)| *k == "KAGED_SESSIONS_ON_DAEMON_STOP")
        {
            env.push(("KAGED_SESSIONS_ON_DAEMON_STOP".into(), "kill".into()));
        }
        if !extra_env.iter().any(|(k, _)| *k == "KAGED_STORAGE_URL")
            && let Some(url) = postgres_storage_for(home)
        {
            env.push(("KAGED_STORAGE_URL".into(), url));
        }
        env.extend(
            extra_env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string())),
        );
        let pairs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let mut cmd = kaged_cmd(&pairs);
        cmd.arg("start").args(args);
        Self::spawn(cmd, home, &home.join("run"), env)
    }

    /// Spawn a prepared `kaged start` command and wait for its ready line.
    pub fn spawn(
        mut cmd: Command,
        home: &Path,
        runtime: &Path,
        env: Vec<(String, String)>,
    ) -> Daemon {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn kaged");
        let (stderr, ready) = read_stderr(&mut child);
        let launch_url = match ready.recv_timeout(Duration::from_secs(30)) {
            Ok(url) => url,
            Err(_) => {
                let _ = child.kill();
                panic!(
                    "kaged did not become ready; stderr:\n{}",
                    stderr.lock().unwrap().join("\n")
                );
            }
        };
        let base = launch_url.split("/launch").next().unwrap().to_string();
        Daemon {
            child,
            home: home.to_path_buf(),
            runtime: runtime.to_path_buf(),
            env,
            base,
            launch_url,
            stderr,
            fail_on_panic: false,
            ends_runs_on_drop: true,
        }
    }

    /// Make any panic of a kaged thread (a run's runner, writer or screen follower, a
    /// handler...) fail the test at its end, even one kaged survived: Rust prints `panicked`
    /// for each to stderr, and kaged logs it as an error with the session id.
    pub fn failing_on_panics(mut self) -> Daemon {
        self.fail_on_panic = true;
        self
    }

    /// Leave the runs it holds running when this daemon is stopped or dropped (a test of runs
    /// that outlive their daemon; the next daemon on the same home ends them when dropped).
    pub fn keeping_runs(mut self) -> Daemon {
        self.ends_runs_on_drop = false;
        self
    }

    pub fn runtime_dir(&self) -> PathBuf {
        self.runtime.clone()
    }

    pub fn port(&self) -> u16 {
        self.base.rsplit(':').next().unwrap().parse().unwrap()
    }

    /// Run a `kaged` CLI command against this daemon.
    pub fn cli(&self, args: &[&str]) -> Output {
        let pairs: Vec<(&str, &str)> = self
            .env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        kaged_cmd(&pairs).args(args).output().expect("run kaged")
    }

    pub fn nonce(&self) -> String {
        std::fs::read_to_string(self.runtime_dir().join("auth-cookie")).unwrap()
    }

    /// GET a JSON document, authenticated with this daemon's nonce as a script would be.
    pub async fn api_get(&self, path: &str) -> serde_json::Value {
        plain_client()
            .get(format!("{}{path}", self.base))
            .header("x-kaged-auth-nonce", self.nonce())
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// A request authenticated with the nonce (as a local script would be): the status and the
    /// body as JSON (`null` when empty; the text itself when it is not JSON, so a failure shows it).
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> (reqwest::StatusCode, serde_json::Value) {
        let mut request = plain_client()
            .request(method, format!("{}{path}", self.base))
            .header("x-kaged-auth-nonce", self.nonce());
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let text = response.text().await.unwrap();
        let value = if text.is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text))
        };
        (status, value)
    }

    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{sig}"), &self.child.id().to_string()])
            .status()
            .expect("run kill")
            .success();
        assert!(ok, "kill -{sig} failed");
    }

    /// SIGTERM and wait for exit (at most 20 s).
    pub fn stop(self) -> (ExitStatus, String) {
        self.signal("TERM");
        self.stop_after_signal()
    }

    /// Wait for exit after a signal the test sent itself.
    pub fn stop_after_signal(mut self) -> (ExitStatus, String) {
        let status = wait_timeout(&mut self.child, Duration::from_secs(20));
        // Let the reader thread drain the pipe.
        std::thread::sleep(Duration::from_millis(100));
        let log = self.stderr.lock().unwrap().join("\n");
        (status, log)
    }

    pub fn stderr_text(&self) -> String {
        self.stderr.lock().unwrap().join("\n")
    }
}

/// With `KAGED_E2E_POSTGRES_ADMIN_URL` set (scripts/test's second pass of the daemon's tests),
/// a daemon's storage is a database of the test cluster of its own instead of SQLite: one per
/// home (made when missing), so a daemon restarted on the same home finds its data.
fn postgres_storage_for(home: &Path) -> Option<String> {
    use std::hash::{Hash, Hasher};
    let admin = std::env::var("KAGED_E2E_POSTGRES_ADMIN_URL")
        .ok()
        .filter(|u| !u.is_empty())?;
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    home.hash(&mut hasher);
    let name = format!("kaged_e2e_{:016x}", hasher.finish());
    if psql(
        &admin,
        &format!("SELECT 1 FROM pg_database WHERE datname = '{name}'"),
    )
    .is_empty()
    {
        psql(&admin, &format!("CREATE DATABASE \"{name}\""));
    }
    let (base, _) = admin.rsplit_once('/')?;
    Some(format!("{base}/{name}"))
}

/// Run SQL with psql on the database at `url`; its unaligned, tuples-only output.
pub fn psql(url: &str, sql: &str) -> String {
    let out = Command::new("psql")
        .args([
            "-X",
            "-q",
            "-A",
            "-t",
            "-v",
            "ON_ERROR_STOP=1",
            "-d",
            url,
            "-c",
            sql,
        ])
        .output()
        .expect("run psql");
    assert!(
        out.status.success(),
        "psql {sql}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Whether the ACP shim served a `fs/write_text_file` of `path` for `session`, successfully
/// (its `acp.served` audit record).
pub async fn shim_served_write(d: &Daemon, session: &str, path: &str) -> bool {
    let audit = d.api_get("/api/v1/audit?limit=1000").await;
    audit["events"].as_array().into_iter().flatten().any(|e| {
        e["kind"] == "acp.served"
            && e["detail"]["session"] == session
            && e["detail"]["method"] == "fs/write_text_file"
            && e["detail"]["path"] == path
            && e["outcome"] == "success"
    })
}

/// End every run held in `runtime`'s holders (a test's leftovers: runs outlive a killed
/// daemon).
pub fn kill_holders(runtime: &Path) {
    let Ok(entries) = std::fs::read_dir(runtime.join("holders")) else {
        return;
    };
    for socket in entries.flatten().map(|e| e.path()) {
        if socket.extension().is_some_and(|x| x == "sock") {
            let _ = kaged_holder::client::kill(&socket, "the test ended", Duration::from_secs(2));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if self.ends_runs_on_drop {
            kill_holders(&self.runtime);
        }
        if self.fail_on_panic && !std::thread::panicking() {
            // Let the reader thread drain the pipe.
            std::thread::sleep(Duration::from_millis(100));
            let log = self.stderr.lock().unwrap().join("\n");
            assert!(
                !log.contains("panicked"),
                "a thread of kaged panicked during the test:\n{log}"
            );
        }
    }
}

pub fn wait_timeout(child: &mut Child, limit: Duration) -> ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            panic!("process did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Collect stderr lines in the background; the channel yields the launch URL once ready.
pub fn read_stderr(
    child: &mut Child,
) -> (Arc<Mutex<Vec<String>>>, std::sync::mpsc::Receiver<String>) {
    let pipe = child.stderr.take().expect("stderr piped");
    let lines = Arc::new(Mutex::new(Vec::new()));
    let (tx, rx) = std::sync::mpsc::channel();
    let sink = Arc::clone(&lines);
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines().map_while(Result::ok) {
            sink.lock().unwrap().push(line.clone());
            if let Some(url) = line.strip_prefix(READY_PREFIX) {
                let _ = tx.send(url.to_string());
            } else if let Some(rest) = line.strip_prefix(READY_SIDECAR_PREFIX) {
                // "http://HOST:PORT (sign-in ...)": hand back the base with an empty launch path.
                let base = rest.split(' ').next().unwrap_or_default();
                let _ = tx.send(format!("{base}/launch"));
            }
        }
    });
    (lines, rx)
}

/// An HTTP client that keeps cookies and does not follow redirects.
pub fn browser_like_client() -> reqwest::Client {
    reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

pub fn plain_client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Send a request and parse its JSON body (whatever the status).
pub async fn json_of(request: reqwest::RequestBuilder) -> serde_json::Value {
    request.send().await.unwrap().json().await.unwrap()
}

pub fn mode_of(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

pub fn token_of(launch_url: &str) -> String {
    launch_url.split("token=").nth(1).unwrap().to_string()
}

/// Whether this test process is root (as CI runs the suite).
pub fn running_as_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
}

/// The UID a root daemon's cage of a root-owned project runs as (`[sandbox] cage_user`'s
/// default, `nobody`).
pub const CAGE_UID: u32 = 65534;

/// Make the project tree at `root` belong to the cage's user when the suite runs as root:
/// cages never run as root, so a project root owns is not writable inside its cage (kaged
/// then runs the cage as this owner). As an ordinary user, nothing changes.
pub fn cage_writable(root: &Path) {
    if !running_as_root() {
        return;
    }
    let status = Command::new("chown")
        .args(["-R", &format!("{CAGE_UID}:{CAGE_UID}"), "--"])
        .arg(root)
        .status()
        .expect("run chown");
    assert!(status.success(), "chown -R {}", root.display());
}
