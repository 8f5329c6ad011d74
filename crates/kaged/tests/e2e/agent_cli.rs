//! `kaged session` for model agents (issue 14): the real binary against a daemon whose model
//! agent talks to the provider test server (`common::provider`). `start --message --detach`,
//! `send` (argument and stdin), `transcript` (text and `--json`), `attach` (history, stdin lines
//! sent as messages, detach at end of input, reconnect across a daemon restart), `list`/`show`,
//! and the errors an operator meets.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common::provider::*;
use crate::common::{Daemon, cage_writable, kaged_cmd, wait_timeout};

/// How long a CLI command may take before the test reports it hung.
const CLI_PATIENCE: Duration = Duration::from_secs(30);

fn env_of(d: &Daemon) -> Vec<(&str, &str)> {
    d.env
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect()
}

/// Run `kaged ARGS` against `d` with `stdin` as its input (then closed); fails the test if it
/// runs longer than [`CLI_PATIENCE`].
fn cli_in(d: &Daemon, args: &[&str], stdin: &str) -> Output {
    let mut child = kaged_cmd(&env_of(d))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = collect(&mut child);
    let status = wait_timeout(&mut child, CLI_PATIENCE);
    let (stdout, stderr) = out.finish();
    Output {
        status,
        stdout: stdout.into_bytes(),
        stderr: stderr.into_bytes(),
    }
}

fn cli(d: &Daemon, args: &[&str]) -> Output {
    cli_in(d, args, "")
}

/// Stdout of a command that must succeed.
fn ok(out: &Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what}: {:?}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

/// Stderr of a command that must fail with exit `code`.
fn fails(out: &Output, code: i32, what: &str) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(code), "{what}: {stderr}");
    stderr
}

/// A child's stdout and stderr, collected by threads as they come.
struct Collected {
    stdout: Arc<Mutex<String>>,
    stderr: Arc<Mutex<String>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Collected {
    fn stdout(&self) -> String {
        self.stdout.lock().unwrap().clone()
    }

    /// Wait until stdout contains every one of `needles`; stdout.
    fn wait_for(&self, needles: &[&str]) -> String {
        let start = Instant::now();
        loop {
            let text = self.stdout();
            if needles.iter().all(|n| text.contains(n)) {
                return text;
            }
            assert!(
                start.elapsed() < AGENT_PATIENCE,
                "attach never showed {needles:?}; stdout:\n{text}\nstderr:\n{}",
                self.stderr.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(30));
        }
    }

    /// Both, once the child's pipes closed.
    fn finish(self) -> (String, String) {
        for t in self.threads {
            t.join().unwrap();
        }
        let stdout = self.stdout.lock().unwrap().clone();
        let stderr = self.stderr.lock().unwrap().clone();
        (stdout, stderr)
    }
}

type Pipe = Box<dyn Read + Send>;

fn collect(child: &mut Child) -> Collected {
    let stdout = Arc::new(Mutex::new(String::new()));
    let stderr = Arc::new(Mutex::new(String::new()));
    let mut threads = Vec::new();
    let pipes: [(Pipe, Arc<Mutex<String>>); 2] = [
        (Box::new(child.stdout.take().unwrap()), stdout.clone()),
        (Box::new(child.stderr.take().unwrap()), stderr.clone()),
    ];
    for (mut pipe, sink) in pipes {
        threads.push(std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = pipe.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        }));
    }
    Collected {
        stdout,
        stderr,
        threads,
    }
}

/// `kaged session attach ID` running, its stdin open.
fn spawn_attach(d: &Daemon, id: &str) -> (Child, ChildStdin, Collected) {
    let mut child = kaged_cmd(&env_of(d))
        .args(["session", "attach", id])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdin = child.stdin.take().unwrap();
    let out = collect(&mut child);
    (child, stdin, out)
}

fn count(haystack: &str, needle: &str) -> usize {
    haystack.matches(needle).count()
}

/// Records until `n` turns have ended.
async fn wait_turns(d: &Daemon, id: &str, n: usize) -> Vec<Value> {
    let start = Instant::now();
    loop {
        let (records, _) = conversation(d, id, 0).await;
        if turn_end_reasons(&records).len() >= n {
            return records;
        }
        assert!(
            start.elapsed() < AGENT_PATIENCE,
            "{id} never ended {n} turns:\n{}",
            summarize(&records)
        );
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
}

/// A second project, `plain`, whose primary agent is a command (`sh`).
async fn load_command_project(d: &Daemon, root: &Path) {
    std::fs::create_dir_all(root.join(".kaged")).unwrap();
    std::fs::write(
        root.join(".kaged/project.yaml"),
        "version: 1\nproject: plain\nprimary:\n  command: [sh]\n",
    )
    .unwrap();
    cage_writable(root);
    load_project_at(d, root).await;
}

/// The whole round: a first message with a tool call, a second message, the transcript in
/// both forms, attach (whole and `--after`), list and show, then what operators get wrong.
#[tokio::test(flavor = "multi_thread")]
async fn start_send_transcript_and_attach_through_the_cli() {
    let env = ModelEnv::start(COMPLETIONS, "", &[]).await;
    let d = &env.daemon;
    std::fs::write(
        env.project.join("README.md"),
        "hello from the readme\nsecond line\n",
    )
    .unwrap();
    env.provider.push(tool_reply(
        COMPLETIONS,
        &[Call::new(
            "call_1",
            "file.read",
            &json!({"path": "README.md"}),
        )],
    ));
    env.provider
        .push(text_reply(COMPLETIONS, &["The README ", "says hello."]));

    let out = cli(
        d,
        &[
            "session",
            "start",
            &env.slug,
            "--agent",
            "primary",
            "--message",
            "Read README.md",
            "--detach",
        ],
    );
    let id = ok(&out, "start --message --detach").trim().to_string();
    assert!(
        id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()),
        "start printed {id:?}, not an id alone"
    );
    let first = wait_turns(d, &id, 1).await;
    assert_eq!(
        turn_end_reasons(&first),
        ["end_turn"],
        "{}",
        summarize(&first)
    );

    env.provider
        .push(text_reply(COMPLETIONS, &["Second ", "answer."]));
    let out = cli(d, &["session", "send", &id, "And now?"]);
    assert_eq!(ok(&out, "send"), "", "send prints nothing");
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "",
        "send prints nothing"
    );
    let records = wait_turns(d, &id, 2).await;

    // The transcript: who said what, the call with its arguments, its whole result.
    let text = ok(&cli(d, &["session", "transcript", &id]), "transcript");
    for line in [
        "operator: Read README.md\n",
        "tool call: file.read {\"path\":\"README.md\"}\n",
        "agent: The README says hello.\n",
        "operator: And now?\n",
        "agent: Second answer.\n",
    ] {
        assert_eq!(count(&text, line), 1, "{line:?} once in:\n{text}");
    }
    let result = text
        .split("tool result: file.read (ok)")
        .nth(1)
        .unwrap_or_else(|| panic!("no result of file.read in:\n{text}"));
    assert!(
        result.contains("hello from the readme") && result.contains("second line"),
        "{text}"
    );
    assert!(
        text.find("operator: Read README.md") < text.find("tool call: file.read")
            && text.find("tool call: file.read") < text.find("agent: The README")
            && text.find("agent: The README") < text.find("operator: And now?"),
        "out of order:\n{text}"
    );
    assert!(text.contains("usage: 10 in, "), "{text}");

    // --json: the stored records, one a line, exactly as the conversation route has them.
    let json_lines = ok(
        &cli(d, &["session", "transcript", &id, "--json"]),
        "transcript --json",
    );
    let parsed: Vec<Value> = json_lines
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let (stored, last_seq) = conversation(d, &id, 0).await;
    assert_eq!(parsed, stored);
    assert_eq!(parsed.len() as u64, last_seq);
    assert!(records.len() as u64 <= last_seq);

    // Attach with no input: the whole conversation once, then it detaches by itself.
    let out = cli(d, &["session", "attach", &id]);
    let shown = ok(&out, "attach < /dev/null");
    for line in [
        "> Read README.md\n",
        "⚙ file.read {\"path\":\"README.md\"}\n",
        "The README says hello.\n",
        "> And now?\n",
        "Second answer.\n",
    ] {
        assert_eq!(count(&shown, line), 1, "{line:?} once in:\n{shown}");
    }
    let after_call = shown
        .split("⚙ file.read {\"path\":\"README.md\"}\n")
        .nth(1)
        .unwrap();
    assert!(after_call.starts_with("  ✓ "), "{shown}");
    assert!(shown.contains("  · 10 in, "), "{shown}");
    assert!(!shown.contains('\u{1b}'), "no color when stdout is a pipe");

    // --after: only what follows.
    let second_message = stored
        .iter()
        .find(|r| r["event"]["type"] == "user_message" && r["event"]["text"] == "And now?")
        .unwrap()["seq"]
        .as_u64()
        .unwrap();
    let after = (second_message - 1).to_string();
    let shown = ok(
        &cli(d, &["session", "attach", &id, "--after", &after]),
        "attach --after",
    );
    assert!(
        shown.starts_with("> And now?\n") && !shown.contains("README"),
        "{shown}"
    );

    // list and show say it is a conversation.
    let list = ok(&cli(d, &["session", "list"]), "list");
    let row = list.lines().find(|l| l.starts_with(&id)).unwrap();
    assert!(row.contains(" model ") && row.contains("primary"), "{row}");
    let show = ok(&cli(d, &["session", "show", &id]), "show");
    assert!(show.contains("conversation"), "{show}");
    assert!(show.contains(&format!("id:         {id}")), "{show}");

    // What operators get wrong, each said clearly.
    let stderr = fails(&cli(d, &["session", "send", &id, "  "]), 2, "empty send");
    assert!(stderr.contains("nothing to send"), "{stderr}");
    let stderr = fails(
        &cli(d, &["session", "send", &"0".repeat(32), "hi"]),
        1,
        "unknown id",
    );
    assert!(
        stderr.contains("404") && stderr.contains("not_found"),
        "{stderr}"
    );
    let stderr = fails(
        &cli(
            d,
            &[
                "session",
                "start",
                &env.slug,
                "--terminal",
                "--message",
                "hi",
            ],
        ),
        2,
        "--message without --agent",
    );
    assert!(stderr.contains("--agent"), "{stderr}");

    let plain = env.tmp.path().join("plain");
    load_command_project(d, &plain).await;
    let stderr = fails(
        &cli(
            d,
            &[
                "session",
                "start",
                "plain",
                "--agent",
                "primary",
                "--message",
                "hi",
                "--detach",
            ],
        ),
        1,
        "--message to a command agent",
    );
    assert!(
        stderr.contains("400") && stderr.contains("bad_request"),
        "{stderr}"
    );
    let out = cli(d, &["session", "start", "plain", "--terminal", "--detach"]);
    let terminal = ok(&out, "start a terminal").trim().to_string();
    let stderr = fails(
        &cli(d, &["session", "send", &terminal, "hi"]),
        1,
        "send to a terminal",
    );
    assert!(
        stderr.contains("409") && stderr.contains("terminal"),
        "{stderr}"
    );
    let stderr = fails(
        &cli(d, &["session", "transcript", &terminal, "--json"]),
        2,
        "--json of a terminal",
    );
    assert!(stderr.contains("not a conversation"), "{stderr}");
    ok(
        &cli(d, &["session", "kill", &terminal]),
        "kill the terminal",
    );
}

/// Attach as a conversation client: stdin lines are sent as messages and their replies stream
/// in; `send -` reads stdin; the end of input detaches and the run goes on.
#[tokio::test(flavor = "multi_thread")]
async fn attach_sends_each_stdin_line_and_detaches_at_the_end_of_input() {
    let env = ModelEnv::start(ANTHROPIC, "", &[]).await;
    let d = &env.daemon;
    env.provider
        .push(text_reply(ANTHROPIC, &["First ", "reply."]));
    let id = ok(
        &cli(
            d,
            &[
                "session",
                "start",
                &env.slug,
                "--agent",
                "primary",
                "--message",
                "first",
                "--detach",
            ],
        ),
        "start",
    )
    .trim()
    .to_string();
    wait_turns(d, &id, 1).await;

    let (mut child, mut stdin, out) = spawn_attach(d, &id);
    out.wait_for(&["> first\n", "First reply.\n"]);

    env.provider
        .push(text_reply(ANTHROPIC, &["Steered ", "reply."]));
    stdin.write_all(b"a line from stdin\n").unwrap();
    stdin.flush().unwrap();
    out.wait_for(&["> a line from stdin\n", "Steered reply.\n"]);

    env.provider.push(text_reply(ANTHROPIC, &["Piped."]));
    let sent = cli_in(d, &["session", "send", &id, "-"], "from a pipe\n");
    assert_eq!(ok(&sent, "send -"), "");
    out.wait_for(&["> from a pipe\n", "Piped.\n"]);

    drop(stdin);
    let status = wait_timeout(&mut child, CLI_PATIENCE);
    let (shown, stderr) = out.finish();
    assert!(status.success(), "{status:?}: {stderr}");
    for line in [
        "> first\n",
        "First reply.\n",
        "> a line from stdin\n",
        "Steered reply.\n",
        "> from a pipe\n",
        "Piped.\n",
    ] {
        assert_eq!(count(&shown, line), 1, "{line:?} once in:\n{shown}");
    }
    // The run goes on: the session still takes messages.
    let s = session_json(d, &id).await;
    assert_eq!(s["state"], "running", "{s}");
    let records = wait_turns(d, &id, 3).await;
    let texts: Vec<&str> = of_kind(&records, "user_message")
        .iter()
        .map(|r| r["event"]["text"].as_str().unwrap())
        .collect();
    assert_eq!(texts, ["first", "a line from stdin", "from a pipe"]);
}

/// An attached client outlives the daemon: it finds the restarted daemon (new port, new
/// nonce), resumes after the last record it showed, and shows every later record once.
#[tokio::test(flavor = "multi_thread")]
async fn attach_reconnects_across_a_daemon_restart_without_gap_or_repeat() {
    let ModelEnv {
        daemon,
        provider,
        home,
        tmp: _tmp,
        slug,
        ..
    } = ModelEnv::start(COMPLETIONS, "", &[]).await;
    provider.push(text_reply(COMPLETIONS, &["Before ", "the restart."]));
    let id = ok(
        &cli(
            &daemon,
            &[
                "session",
                "start",
                &slug,
                "--agent",
                "primary",
                "--message",
                "hello",
                "--detach",
            ],
        ),
        "start",
    )
    .trim()
    .to_string();
    wait_turns(&daemon, &id, 1).await;
    let (mut child, stdin, out) = spawn_attach(&daemon, &id);
    out.wait_for(&["Before the restart.\n"]);

    let (status, log) = daemon.stop();
    assert!(status.success(), "{log}");
    let daemon = start_daemon(&home, &[]);
    provider.push(text_reply(COMPLETIONS, &["After ", "the restart."]));
    let sent = cli(&daemon, &["session", "send", &id, "again"]);
    ok(&sent, "send after the restart");
    assert!(
        String::from_utf8_lossy(&sent.stderr).contains("resumed"),
        "{}",
        String::from_utf8_lossy(&sent.stderr)
    );
    out.wait_for(&["> again\n", "After the restart.\n"]);

    drop(stdin);
    let status = wait_timeout(&mut child, CLI_PATIENCE);
    let (shown, stderr) = out.finish();
    assert!(status.success(), "{status:?}: {stderr}");
    for line in [
        "> hello\n",
        "Before the restart.\n",
        "> again\n",
        "After the restart.\n",
    ] {
        assert_eq!(count(&shown, line), 1, "{line:?} once in:\n{shown}");
    }
    // What attach showed is the whole log in order: the same text as a fresh attach.
    let fresh = ok(&cli(&daemon, &["session", "attach", &id]), "attach again");
    assert_eq!(shown, fresh);
}
