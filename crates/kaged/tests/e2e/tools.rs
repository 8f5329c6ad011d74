//! The tools a model agent calls, run by `kaged tool-exec` inside the agent's real cage:
//! through `kaged cage run` (stdin and stdout pass through), as root and as an ordinary
//! user, and the daemon's way (`kaged_spawn::spawn_piped` + `kaged_tools::ToolExecutor`).
//! Each attack is also run without the cage, where it must succeed: the cage is what stops it.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

use serde_json::{Value, json};

use crate::common::*;

const PROJECT: &str = "\
version: 1
project: toolstest
primary:
  model: fast
  system_prompt: project:/prompt.md
  tools:
    shell.bash: { enabled: true }
    file.read: { enabled: true }
  subagents:
    free:
      command: [sh]
      cage: disabled
";

/// The provider key in the environment of the CLI (as it would be in the daemon's).
const KEY: &str = "sk-test-secret";
const PRIVATE: &str = "-----BEGIN OPENSSH PRIVATE KEY-----";

/// An operator (`uid`; 0: this process's user) with a home holding an SSH key and a project.
struct Setup {
    _tmp: tempfile::TempDir,
    uid: u32,
    bin: PathBuf,
    home: PathBuf,
    project: PathBuf,
    key: PathBuf,
    bashrc: PathBuf,
}

fn setup(uid: u32) -> Setup {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().to_path_buf();
    let home = root.join("home");
    let key = home.join(".ssh/id_ed25519");
    std::fs::create_dir_all(key.parent().unwrap()).unwrap();
    std::fs::write(&key, format!("{PRIVATE}\nAAAA\n")).unwrap();
    let bashrc = home.join(".bashrc");
    std::fs::write(&bashrc, "original\n").unwrap();
    let project = root.join("project");
    std::fs::create_dir_all(project.join(".kaged")).unwrap();
    std::fs::create_dir_all(project.join(".git")).unwrap();
    std::fs::write(project.join(".git/HEAD"), "ref: refs/heads/main\n").unwrap();
    std::fs::write(project.join(".kaged/project.yaml"), PROJECT).unwrap();
    std::fs::write(project.join("prompt.md"), "You help.\n").unwrap();
    // The test binary may sit below a directory another user cannot pass.
    let bin = root.join("bin/kaged");
    std::fs::create_dir_all(bin.parent().unwrap()).unwrap();
    std::fs::copy(kaged_bin(), &bin).unwrap();
    let chmod = Command::new("chmod")
        .args(["0755", root.to_str().unwrap(), bin.to_str().unwrap()])
        .status()
        .unwrap();
    assert!(chmod.success());
    if running_as_root() {
        // The operator owns their home and project (the cage then runs as them).
        let owner = if uid == 0 { CAGE_UID } else { uid };
        let chown = Command::new("chown")
            .args(["-R", &format!("{owner}:{owner}"), root.to_str().unwrap()])
            .status()
            .unwrap();
        assert!(chown.success());
    }
    Setup {
        _tmp: tmp,
        uid,
        bin,
        home,
        project,
        key,
        bashrc,
    }
}

/// A running executor, spoken to line by line.
struct Exec {
    child: Child,
    stdin: ChildStdin,
    out: BufReader<ChildStdout>,
    next: u64,
}

impl Exec {
    fn start(mut cmd: Command) -> Exec {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        Exec {
            stdin: child.stdin.take().unwrap(),
            out: BufReader::new(child.stdout.take().unwrap()),
            child,
            next: 1,
        }
    }

    /// One call; its reply (`ok`, `output` or `error`).
    fn call(&mut self, tool: &str, arguments: Value) -> Value {
        let id = self.next;
        self.next += 1;
        let line = json!({"id": id, "tool": tool, "arguments": arguments}).to_string() + "\n";
        self.stdin.write_all(line.as_bytes()).unwrap();
        self.stdin.flush().unwrap();
        let mut reply = String::new();
        if self.out.read_line(&mut reply).unwrap() == 0 {
            let mut err = String::new();
            let _ = self.child.kill();
            self.child
                .stderr
                .take()
                .unwrap()
                .read_to_string(&mut err)
                .unwrap();
            panic!("the executor ended without answering {tool}: {err}");
        }
        let reply: Value = serde_json::from_str(&reply).unwrap();
        assert_eq!(reply["id"], id, "{reply}");
        reply
    }

    /// `shell.bash`'s output.
    fn bash(&mut self, command: &str) -> String {
        let reply = self.call("shell.bash", json!({ "command": command }));
        assert_eq!(reply["ok"], true, "{reply}");
        reply["output"].as_str().unwrap().to_string()
    }

    /// Close its input: it must end, cleanly.
    fn finish(mut self) {
        drop(self.stdin);
        let status = wait_timeout(&mut self.child, std::time::Duration::from_secs(30));
        assert!(status.success(), "the executor ended with {status}");
    }
}

/// The operator's command line: as `s.uid` (through setpriv when that is another user), with
/// the operator's HOME and a provider key in the environment, bounded in time.
fn operator(s: &Setup) -> Command {
    let mut c = Command::new("timeout");
    c.arg("120");
    if s.uid != 0 {
        c.args([
            "setpriv",
            &format!("--reuid={}", s.uid),
            &format!("--regid={}", s.uid),
            "--clear-groups",
            "--",
        ]);
    }
    c.arg(&s.bin)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", &s.home)
        .env("ANTHROPIC_API_KEY", KEY)
        .current_dir("/");
    c
}

/// `kaged cage run` of the executor in `agent`'s cage (`free`: its cage is disabled, so the
/// executor is this binary on the host).
fn executor(s: &Setup, agent: &str) -> Exec {
    let helper = if agent == "free" {
        s.bin.display().to_string()
    } else {
        "/run/kaged/kaged".to_string()
    };
    let mut c = operator(s);
    c.args(["cage", "run", s.project.to_str().unwrap(), "--agent", agent])
        .args(["--", &helper, "tool-exec"]);
    Exec::start(c)
}

fn output(reply: &Value) -> &str {
    reply["output"].as_str().unwrap_or("")
}

/// Every attack, in the cage (must fail) and without it (must succeed, proving the check).
fn attacks_fail_in_the_cage_and_work_without_it(uid: u32) {
    let s = setup(uid);
    let server = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = server.local_addr().unwrap().port();
    let connect = format!("exec 3<>/dev/tcp/127.0.0.1/{port} && echo connected");
    let key = s.key.to_str().unwrap();
    let bashrc = s.bashrc.to_str().unwrap();

    let mut caged = executor(&s, "primary");
    let mut free = executor(&s, "free");

    // file.read of the operator's SSH key.
    let r = caged.call("file.read", json!({ "path": key }));
    assert_eq!(r["ok"], false, "the cage let file.read see the key: {r}");
    assert!(
        r["error"].as_str().unwrap().ends_with("does not exist"),
        "{r}"
    );
    let r = free.call("file.read", json!({ "path": key }));
    assert!(
        output(&r).contains(PRIVATE),
        "uncaged, the key must be readable: {r}"
    );

    // shell.bash cat of it.
    let out = caged.bash(&format!("cat {key}"));
    assert!(
        !out.contains(PRIVATE) && !out.ends_with("[exit code 0]"),
        "{out}"
    );
    assert!(free.bash(&format!("cat {key}")).contains(PRIVATE));

    // The network, without an allowlist entry: a loopback listener of the host.
    let out = caged.bash(&connect);
    assert!(
        !out.contains("connected"),
        "the cage reached the host's network: {out}"
    );
    let out = free.bash(&connect);
    assert!(
        out.contains("connected"),
        "uncaged, the listener is reachable: {out}"
    );

    // The provider key is not in the tools' environment (nor anything of the host's).
    let env = caged.bash("env");
    assert!(!env.contains(KEY) && !env.contains("ANTHROPIC"), "{env}");
    assert!(env.contains("KAGED_CAGE=1"), "{env}");
    let env = free.bash("env");
    assert!(
        !env.contains(KEY),
        "kaged passed the key to an uncaged run: {env}"
    );

    // file.write outside the project never reaches the host.
    let r = caged.call(
        "file.write",
        json!({ "path": bashrc, "content": "pwned\n" }),
    );
    assert_eq!(
        std::fs::read_to_string(&s.bashrc).unwrap(),
        "original\n",
        "{r}"
    );
    let r = free.call(
        "file.write",
        json!({ "path": bashrc, "content": "pwned\n" }),
    );
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(std::fs::read_to_string(&s.bashrc).unwrap(), "pwned\n");

    // Inside the project, the tools work (relative paths start at the workspace).
    let r = caged.call(
        "file.write",
        json!({"path": "notes/out.txt", "content": "alpha\nbeta\n"}),
    );
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(
        std::fs::read_to_string(s.project.join("notes/out.txt")).unwrap(),
        "alpha\nbeta\n"
    );
    let r = caged.call(
        "edit.text",
        json!({"path": "notes/out.txt", "old_text": "beta", "new_text": "gamma"}),
    );
    assert_eq!(r["ok"], true, "{r}");
    let r = caged.call(
        "file.read",
        json!({"path": "/workspace/notes/out.txt", "offset": 2}),
    );
    assert_eq!(output(&r), "     2\tgamma\n", "{r}");
    let r = caged.call("search.grep", json!({"pattern": "gam+a"}));
    assert_eq!(output(&r), "notes/out.txt:2:gamma", "{r}");
    let r = caged.call("search.glob", json!({"pattern": "**/*.txt"}));
    assert_eq!(output(&r), "notes/out.txt", "{r}");
    // .git stays read-only to the tools too.
    let r = caged.call(
        "file.write",
        json!({"path": ".git/HEAD", "content": "evil"}),
    );
    assert_eq!(r["ok"], false, "{r}");
    assert_eq!(
        std::fs::read_to_string(s.project.join(".git/HEAD")).unwrap(),
        "ref: refs/heads/main\n"
    );
    // Arguments that are not JSON and unknown tools are clear errors; the executor goes on.
    let r = caged.call("file.read", json!("{not json"));
    assert!(r["error"].as_str().unwrap().contains("not JSON"), "{r}");
    let r = caged.call("file.delete", json!({}));
    assert!(r["error"].as_str().unwrap().contains("no tool"), "{r}");
    assert!(caged.bash("id -u").starts_with(&format!(
        "{}\n",
        if running_as_root() {
            CAGE_UID
        } else {
            uid_of_self()
        }
    )));
    caged.finish();
    free.finish();
    drop(server);
}

fn uid_of_self() -> u32 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").unwrap().uid()
}

#[test]
fn tool_attacks_fail_in_the_cage_for_this_user() {
    attacks_fail_in_the_cage_and_work_without_it(0);
}

#[test]
fn tool_attacks_fail_in_the_cage_for_an_ordinary_user() {
    if !running_as_root() {
        // This process is the ordinary user already (the test above).
        return;
    }
    attacks_fail_in_the_cage_and_work_without_it(CAGE_UID);
}

/// Without kaged around it, the executor shows its environment as is: the `env` check above
/// would see a leaked key.
#[test]
fn the_env_check_sees_a_key_where_there_is_one() {
    let s = setup(0);
    let mut c = operator(&s);
    c.arg("tool-exec");
    let mut bare = Exec::start(c);
    assert!(bare.bash("env").contains(KEY));
    bare.finish();
}

/// `--tools` limits what the executor runs; empty, it runs nothing.
#[test]
fn the_executor_runs_only_the_tools_it_was_given() {
    let s = setup(0);
    let mut c = operator(&s);
    c.args(["tool-exec", "--tools", ""]);
    let mut none = Exec::start(c);
    let r = none.call("shell.bash", json!({"command": "true"}));
    assert!(r["error"].as_str().unwrap().contains("not enabled"), "{r}");
    none.finish();
    let mut c = operator(&s);
    c.args(["tool-exec", "--tools", "shell.bash"]);
    let mut bash = Exec::start(c);
    assert_eq!(bash.bash("echo hi"), "hi\n[exit code 0]");
    let r = bash.call("file.read", json!({"path": "/etc/hostname"}));
    assert!(r["error"].as_str().unwrap().contains("not enabled"), "{r}");
    bash.finish();
}

/// The daemon's way: `kaged_spawn::caged` with the kaged binary as the helper, the executor
/// started on pipes (`spawn_piped`), spoken to through `kaged_tools::ToolExecutor`.
#[tokio::test]
async fn the_daemons_way_runs_the_executor_on_pipes_in_a_real_cage() {
    let s = setup(0);
    let root = std::fs::canonicalize(&s.project).unwrap();
    let project = kaged_dsl::load_project(PROJECT, None)
        .project()
        .unwrap()
        .unwrap();
    let policy = kaged_cage::policy_for(&project, "primary").unwrap();
    let run_as = kaged_spawn::run_as(&root, "nobody")
        .unwrap()
        .map(|r| r.identity);
    // As the project's `tools:` would switch one off.
    let enabled = kaged_tools::enabled_tools([("search.glob", false)]);
    let mut command = vec![kaged_cage::HELPER.to_string()];
    command.extend(kaged_tools::executor_args(&enabled));
    let run = kaged_spawn::caged(&kaged_spawn::CageRequest {
        root: &root,
        helper: &s.bin,
        policy: &policy,
        default_limits: &kaged_cage::Limits::default(),
        launch: kaged_cage::Launch {
            cwd: Path::new(""),
            command: &command,
            env: &[],
            own_terminal: false,
            egress: None,
        },
        name: &format!("tools-test-{}", std::process::id()),
        run_as,
        project: "toolstest",
        grants: &[],
    })
    .unwrap();
    let piped = kaged_spawn::spawn_piped(&run.spec).unwrap();
    let to = tokio::net::unix::pipe::Sender::from_owned_fd(piped.stdin.into()).unwrap();
    let from = tokio::net::unix::pipe::Receiver::from_owned_fd(piped.stdout.into()).unwrap();
    let exec = kaged_tools::ToolExecutor::new(from, to);
    let key = exec
        .call("file.read", json!({"path": s.key}))
        .await
        .unwrap();
    assert!(
        !key.is_ok() && key.text().ends_with("does not exist"),
        "{key:?}"
    );
    let wrote = exec
        .call(
            "file.write",
            json!({"path": "made.txt", "content": "by the daemon's way"}),
        )
        .await
        .unwrap();
    assert!(wrote.is_ok(), "{wrote:?}");
    assert_eq!(
        std::fs::read_to_string(root.join("made.txt")).unwrap(),
        "by the daemon's way"
    );
    let off = exec
        .call("search.glob", json!({"pattern": "*"}))
        .await
        .unwrap();
    assert!(off.text().contains("not enabled"), "{off:?}");
    // 50 MB of output comes back as its head and tail, marked as cut.
    let flood = exec
        .call(
            "shell.bash",
            json!({"command": "head -c 50000000 /dev/zero | tr '\\0' x; echo; echo end"}),
        )
        .await
        .unwrap();
    let kaged_tools::ToolOutcome::Ok { output, truncated } = &flood else {
        panic!("{flood:?}")
    };
    assert!(*truncated && output.len() < 70 * 1024, "{}", output.len());
    assert!(output.ends_with("end\n[exit code 0]"));
    // A long call is cancelled by dropping it; the executor answers the next one at once.
    let long = exec
        .start("shell.bash", json!({"command": "sleep 300"}))
        .unwrap();
    drop(long);
    let pwd = exec
        .call("shell.bash", json!({"command": "pwd"}))
        .await
        .unwrap();
    assert_eq!(pwd.text(), "/workspace\n[exit code 0]");
    // Closing its input ends the executor, and with it the cage.
    exec.close();
    let killer = piped.killer.clone();
    let exit = tokio::task::spawn_blocking(move || piped.waiter.wait())
        .await
        .unwrap();
    assert_eq!(exit, kaged_spawn::Exit::Code(0));
    assert_eq!(killer.process_count(), 0);
    drop(run.cgroups);
}
