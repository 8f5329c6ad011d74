//! The real Claude Code as a kaged ACP agent, offline: its ACP adapter
//! (`@agentclientprotocol/claude-agent-acp`, pinned) starting the pinned Claude Code CLI, both
//! from npm (`common/npm.rs`), in a real cage whose network allowlist names only a loopback
//! Anthropic-compatible stream (`common/anthropic.rs`). The stream answers with a `Write` of a
//! file in the project; kaged turns Claude's permission request into a pending approval; once
//! approved the file is on the host with its content (denied: it is not), the text and the tool
//! call are recorded, the turn ends, and every model call went through kaged's egress proxy.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

use std::path::PathBuf;
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{Value, json};

use crate::common::Daemon;
use crate::common::anthropic::AnthropicStream;
use crate::common::npm::{claude_agent_acp, claude_code, scratch};
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

/// A daemon whose project `claude-acp` has Claude Code's ACP adapter as its primary agent
/// (`extra`: more lines of `primary`), and the stream it may reach; `None` when the packages
/// cannot be installed (registry unreachable, said loudly).
async fn claude_env(tag: &str, extra: &str) -> Option<ClaudeEnv> {
    let cli = claude_code()?;
    let adapter = claude_agent_acp()?;
    let dir = scratch(&format!("acp-claude-{tag}"));
    let reply = format!("kaged-acp-reply-{tag}-{}", std::process::id());
    let content = format!("written by Claude Code in its cage ({tag})\n");
    let write = json!({"name": "Write", "input": {"file_path": FILE, "content": content}});
    let stream = AnthropicStream::start(dir.path(), &reply, Some(&write));
    let root = dir.path().join("project");
    std::fs::create_dir_all(root.join(".kaged")).unwrap();
    std::fs::write(
        root.join(".kaged/project.yaml"),
        format!(
            "version: 1\nproject: {SLUG}\nprimary:\n  command: [claude-agent-acp]\n  protocol: acp\n  cage:\n    network:\n      allow: [\"{}\"]\n{extra}",
            stream.allow_entry()
        ),
    )
    .unwrap();
    crate::common::cage_writable(&root);
    let config = dir.path().join("config");
    std::fs::create_dir_all(&config).unwrap();
    let executable = cli
        .modules()
        .join("@anthropic-ai/claude-code/bin/claude.exe");
    std::fs::write(
        config.join("local.toml"),
        format!(
            r#"[projects.{SLUG}]
env = ["ANTHROPIC_BASE_URL", "ANTHROPIC_API_KEY", "CLAUDE_CODE_EXECUTABLE", "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "DISABLE_AUTOUPDATER"]
paths = [
  {{ host = "{modules}" }},
  {{ host = "{bin}", on_path = true }},
  {{ host = "{cli}" }},
]
"#,
            modules = adapter.modules().display(),
            bin = adapter.bin_dir().display(),
            cli = executable.parent().unwrap().display(),
        ),
    )
    .unwrap();
    let base_url = stream.base_url();
    let daemon = Daemon::start_with(
        &dir.path().join("kaged"),
        &["--bind", "127.0.0.1:0"],
        &[
            ("KAGED_CONFIG_DIR", config.to_str().unwrap()),
            ("ANTHROPIC_BASE_URL", &base_url),
            ("ANTHROPIC_API_KEY", "sk-ant-kaged-acp-test"),
            ("CLAUDE_CODE_EXECUTABLE", executable.to_str().unwrap()),
            ("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1"),
            ("DISABLE_AUTOUPDATER", "1"),
        ],
    );
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
            egress.iter().any(|e| e["decision"] == "allowed"
                && e["method"] == "POST"
                && e["host"] == "127.0.0.1"
                && e["port"] == port),
            "no allowed egress to the stream in the audit: {egress:#?}"
        );
        requests
    }
}

/// Approved: the file Claude's `Write` names is in the project on the host, with the content.
/// No `mode:` in the project file: kaged selects the agent's `default` mode by itself.
#[tokio::test(flavor = "multi_thread")]
async fn claude_codes_approved_write_lands_in_the_project() {
    let Some(mut env) = claude_env("approve", "").await else {
        return;
    };
    let id = create_agent(
        &env.daemon,
        SLUG,
        "primary",
        Some("Write hello.txt, please."),
    )
    .await;
    let approval = env.pending_write(&id).await;
    env.decide(&approval, "approve").await;
    let records = env.turn_ended(&id).await;
    let all = summarize(&records);
    assert_eq!(turn_end_reasons(&records), ["end_turn"], "{all}");
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
    let Some(mut env) = claude_env("deny", "  mode: default\n").await else {
        return;
    };
    let id = create_agent(
        &env.daemon,
        SLUG,
        "primary",
        Some("Write hello.txt, please."),
    )
    .await;
    let approval = env.pending_write(&id).await;
    env.decide(&approval, "deny").await;
    let records = env.turn_ended(&id).await;
    let all = summarize(&records);
    assert_eq!(turn_end_reasons(&records), ["end_turn"], "{all}");
    env.through_the_proxy(&id, true).await;
    assert!(!env.root.join("hello.txt").exists(), "{all}");
}
