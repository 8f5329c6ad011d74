//! The real Claude Code as a kaged ACP agent, offline: its ACP adapter
//! (`@agentclientprotocol/claude-agent-acp`, pinned) starting the pinned Claude Code CLI, both
//! from npm (`common/npm.rs`), in a real cage whose network allowlist names only a loopback
//! Anthropic-compatible stream (`common/anthropic.rs`). The stream answers with a `Write` of a
//! file in the project; kaged turns Claude's permission request into a pending approval; once
//! approved the file is on the host with its content (denied: it is not), the text and the tool
//! call are recorded, the turn ends, and every model call went through kaged's egress proxy.
//! The older adapter (`@zed-industries/claude-code-acp`, pinned) has the client write the
//! file: kaged's in-cage shim does, audited.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

use std::path::PathBuf;
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{Value, json};

use crate::common::Daemon;
use crate::common::anthropic::AnthropicStream;
use crate::common::npm::{claude_agent_acp, claude_code, claude_code_acp_zed, scratch};
use crate::common::provider::*;

const SLUG: &str = "claude-acp";
/// Node's start, the CLI's start in a cage and its first model calls, on a busy machine.
const PATIENCE: Duration = Duration::from_secs(120);

struct ClaudeEnv {
    daemon: Daemon,
    stream: AnthropicStream,
    root: PathBuf,
    reply: String,
    content: String,
    _dir: tempfile::TempDir,
}

/// The file Claude is told to write, as the agent sees it (its cwd is the project in the cage).
const FILE: &str = "/workspace/hello.txt";

/// Which of Claude Code's ACP adapters runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Adapter {
    /// `claude-agent-acp`: starts the pinned Claude Code CLI (`CLAUDE_CODE_EXECUTABLE`), whose
    /// own `Write` tool writes the file.
    Current,
    /// `claude-code-acp` (the older `@zed-industries` one, with its own copy of the CLI): it
    /// replaces the file tools with its own (`mcp__acp__Write`), which have the client write
    /// (`fs/write_text_file`, kaged's in-cage shim).
    Zed,
}

impl Adapter {
    fn program(self) -> &'static str {
        match self {
            Adapter::Current => "claude-agent-acp",
            Adapter::Zed => "claude-code-acp",
        }
    }

    /// The name of the write tool the model is offered.
    fn write_tool(self) -> &'static str {
        match self {
            Adapter::Current => "Write",
            Adapter::Zed => "mcp__acp__Write",
        }
    }
}

/// A daemon whose project `claude-acp` has Claude Code's ACP `adapter` as its primary agent
/// (`extra`: more lines of `primary`), and the stream it may reach; `None` when the packages
/// cannot be installed (registry unreachable, said loudly).
async fn claude_env(adapter: Adapter, tag: &str, extra: &str) -> Option<ClaudeEnv> {
    // The CLI the current adapter starts, granted at its own path and named by the environment.
    let (installed, cli) = match adapter {
        Adapter::Current => {
            let cli = claude_code()?
                .modules()
                .join("@anthropic-ai/claude-code/bin/claude.exe");
            (claude_agent_acp()?, Some(cli))
        }
        Adapter::Zed => (claude_code_acp_zed()?, None),
    };
    let dir = scratch(&format!("acp-claude-{tag}"));
    let reply = format!("kaged-acp-reply-{tag}-{}", std::process::id());
    let content = format!("written by Claude Code in its cage ({tag})\n");
    let write =
        json!({"name": adapter.write_tool(), "input": {"file_path": FILE, "content": content}});
    let stream = AnthropicStream::start(dir.path(), &reply, Some(&write));
    let root = dir.path().join("project");
    std::fs::create_dir_all(root.join(".kaged")).unwrap();
    std::fs::write(
        root.join(".kaged/project.yaml"),
        format!(
            "version: 1\nproject: {SLUG}\nprimary:\n  command: [{}]\n  protocol: acp\n  cage:\n    network:\n      allow: [\"{}\"]\n{extra}",
            adapter.program(),
            stream.allow_entry()
        ),
    )
    .unwrap();
    crate::common::cage_writable(&root);
    let config = dir.path().join("config");
    std::fs::create_dir_all(&config).unwrap();
    let mut env = vec![
        "ANTHROPIC_BASE_URL",
        "ANTHROPIC_API_KEY",
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC",
        "DISABLE_AUTOUPDATER",
    ];
    let mut paths = format!(
        "  {{ host = \"{}\" }},\n  {{ host = \"{}\", on_path = true }},\n",
        installed.modules().display(),
        installed.bin_dir().display()
    );
    if let Some(cli) = &cli {
        env.push("CLAUDE_CODE_EXECUTABLE");
        paths.push_str(&format!(
            "  {{ host = \"{}\" }},\n",
            cli.parent().unwrap().display()
        ));
    }
    std::fs::write(
        config.join("local.toml"),
        format!("[projects.{SLUG}]\nenv = {env:?}\npaths = [\n{paths}]\n"),
    )
    .unwrap();
    let base_url = stream.base_url();
    let config_dir = config.to_str().unwrap().to_string();
    let mut vars = vec![
        ("KAGED_CONFIG_DIR", config_dir.as_str()),
        ("ANTHROPIC_BASE_URL", &base_url),
        ("ANTHROPIC_API_KEY", "sk-ant-kaged-acp-test"),
        ("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1"),
        ("DISABLE_AUTOUPDATER", "1"),
    ];
    if let Some(cli) = &cli {
        vars.push(("CLAUDE_CODE_EXECUTABLE", cli.to_str().unwrap()));
    }
    let daemon = Daemon::start_with(&dir.path().join("kaged"), &["--bind", "127.0.0.1:0"], &vars);
    load_project_at(&daemon, &root).await;
    Some(ClaudeEnv {
        daemon,
        stream,
        root,
        reply,
        content,
        _dir: dir,
    })
}

impl ClaudeEnv {
    /// The session's records once its first turn ended.
    async fn turn_ended(&self, id: &str) -> Vec<Value> {
        let start = Instant::now();
        loop {
            let (records, _) = conversation(&self.daemon, id, 0).await;
            if records.iter().any(is_turn_ended) {
                return records;
            }
            assert!(
                start.elapsed() < PATIENCE,
                "the turn never ended:\n{}\n{}",
                summarize(&records),
                self.daemon.stderr_text()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Claude's pending permission request for the `Write`, with what kaged recorded by then.
    async fn pending_write(&self, id: &str) -> Value {
        let pending = wait_pending_within(&self.daemon, id, 1, PATIENCE).await;
        assert_eq!(pending.len(), 1, "{pending:#?}");
        let approval = pending[0].clone();
        assert_eq!(approval["tool"], "acp.edit", "{approval}");
        assert_eq!(
            approval["arguments"]["input"]["file_path"], FILE,
            "{approval}"
        );
        assert!(
            !self.root.join("hello.txt").exists(),
            "nothing is written before the decision"
        );
        let (records, _) = conversation(&self.daemon, id, 0).await;
        let all = summarize(&records);
        // Claude's adapter starts in `auto`, which never asks: kaged selected `default`.
        let session = records
            .iter()
            .find(|r| kind(r) == "acp_session")
            .unwrap_or_else(|| panic!("no ACP session: {all}"));
        assert_eq!(session["event"]["mode"], "default", "{all}");
        assert!(
            records.iter().any(|r| kind(r) == "approval_requested"),
            "{all}"
        );
        let call = records
            .iter()
            .find(|r| kind(r) == "tool_call")
            .unwrap_or_else(|| panic!("no tool call: {all}"));
        assert_eq!(call["event"]["name"], "acp.edit", "{all}");
        approval
    }

    async fn decide(&self, approval: &Value, decision: &str) {
        let (status, body) = self
            .daemon
            .call(
                Method::POST,
                &format!("/api/v1/approvals/{}", approval["id"].as_str().unwrap()),
                Some(json!({ "decision": decision })),
            )
            .await;
        assert!(status.is_success(), "{decision}: {status} {body}");
    }

    /// Every model call came through kaged's egress proxy (the audit's allowed decision for the
    /// stream) with the granted key, and one carried the tool's result back (`is_error` as
    /// given); the request lines.
    async fn through_the_proxy(&mut self, id: &str, is_error: bool) -> Vec<String> {
        let result = format!(
            "tool_result=True is_error={}",
            if is_error { "True" } else { "False" }
        );
        let requests = self
            .stream
            .wait_for(Duration::from_secs(10), |l| l.contains(&result));
        assert!(
            requests
                .iter()
                .filter(|l| l.starts_with("server: POST"))
                .all(|l| l.contains("POST /v1/messages") && l.contains("key=sk-ant-kaged-acp-test")),
            "{requests:#?}"
        );
        let port = self.stream.port;
        let egress = egress_decisions(&self.daemon, id).await;
        assert!(
            // The native CLI sends a plain POST to the proxy; node's CLI tunnels (CONNECT).
            egress.iter().any(|e| e["decision"] == "allowed"
                && (e["method"] == "POST" || e["method"] == "CONNECT")
                && e["host"] == "127.0.0.1"
                && e["port"] == port),
            "no allowed egress to the stream in the audit: {egress:#?}"
        );
        requests
    }
}

impl ClaudeEnv {
    /// Ask for the file, decide its write (`approve` or `deny`) once it waits, and wait for
    /// the turn, which must end normally: the session, its records and their summary.
    async fn decided_write(&mut self, decision: &str) -> (String, Vec<Value>, String) {
        let id = create_agent(
            &self.daemon,
            SLUG,
            "primary",
            Some("Write hello.txt, please."),
        )
        .await;
        let approval = self.pending_write(&id).await;
        self.decide(&approval, decision).await;
        let records = self.turn_ended(&id).await;
        let all = summarize(&records);
        assert_eq!(turn_end_reasons(&records), ["end_turn"], "{all}");
        (id, records, all)
    }
}

/// Approved: the file Claude's `Write` names is in the project on the host, with the content.
/// No `mode:` in the project file: kaged selects the agent's `default` mode by itself.
#[tokio::test(flavor = "multi_thread")]
async fn claude_codes_approved_write_lands_in_the_project() {
    let Some(mut env) = claude_env(Adapter::Current, "approve", "").await else {
        return;
    };
    let (id, records, all) = env.decided_write("approve").await;
    assert!(streamed_text(&records).contains(&env.reply), "{all}");
    assert!(
        records.iter().any(|r| kind(r) == "approval_decided"),
        "{all}"
    );
    assert!(records.iter().any(|r| kind(r) == "tool_result"), "{all}");
    let written = env.root.join("hello.txt");
    assert_eq!(
        std::fs::read_to_string(&written).unwrap_or_default(),
        env.content,
        "{all}"
    );
    env.through_the_proxy(&id, false).await;
}

/// Denied: Claude gets its reject option, the file is not written, and the model is told. The
/// mode named in the project file.
#[tokio::test(flavor = "multi_thread")]
async fn claude_codes_denied_write_is_not_written() {
    let Some(mut env) = claude_env(Adapter::Current, "deny", "  mode: default\n").await else {
        return;
    };
    let (id, _, all) = env.decided_write("deny").await;
    env.through_the_proxy(&id, true).await;
    assert!(!env.root.join("hello.txt").exists(), "{all}");
}

/// The older adapter has the client write: kaged's shim writes the file in the cage, audited.
#[tokio::test(flavor = "multi_thread")]
async fn the_older_adapters_approved_write_is_served_by_kaged_in_the_cage() {
    let Some(mut env) = claude_env(Adapter::Zed, "zed", "").await else {
        return;
    };
    let (id, records, all) = env.decided_write("approve").await;
    assert!(streamed_text(&records).contains(&env.reply), "{all}");
    assert_eq!(
        std::fs::read_to_string(env.root.join("hello.txt")).unwrap_or_default(),
        env.content,
        "{all}"
    );
    assert!(
        crate::common::shim_served_write(&env.daemon, &id, FILE).await,
        "no served write in the audit"
    );
    env.through_the_proxy(&id, false).await;
}
