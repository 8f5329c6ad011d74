//! The real OpenCode (`opencode acp`, npm `opencode-ai`, pinned; `common/npm.rs`) as a kaged
//! ACP agent, offline: in a real cage whose network allowlist names only the loopback
//! OpenAI-compatible provider test server, configured by an `opencode.json` in the project.
//! `opencode acp` drives its own HTTP server (`--hostname`, on the cage's loopback) over HTTP,
//! which must not go through kaged's egress proxy: the command names it `localhost` and exempts
//! that (`NO_PROXY=localhost`, set after kaged clears `NO_PROXY`); the provider, at
//! `127.0.0.1:PORT`, is still reached through the proxy.
//! The provider answers with a `write` of a file in the project; OpenCode asks permission (the
//! project's OpenCode config says `edit: ask`), kaged makes it a pending approval; approved,
//! OpenCode has kaged's in-cage shim write the file (`fs/write_text_file`, audited), the text
//! and the tool call are recorded, the turn ends, and the model calls went through kaged's
//! egress proxy.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common::Daemon;
use crate::common::npm::{opencode, scratch};
use crate::common::provider::*;

const SLUG: &str = "opencode-acp";
/// The binary's start in a cage and its first model calls, on a busy machine.
const PATIENCE: Duration = Duration::from_secs(120);
/// The file OpenCode is told to write, as it sees it (its cwd is the project in the cage).
const FILE: &str = "/workspace/hello.txt";
/// The variable the provider's key is granted under (OpenCode reads it: `{env:…}`).
const KEY_VAR: &str = "KAGED_TEST_OPENCODE_KEY";
const OC_KEY: &str = "sk-kaged-opencode-test";

/// OpenCode's project configuration: the loopback provider as an OpenAI-compatible one (its
/// SDK package is built into OpenCode: nothing is fetched), its only model, no title calls,
/// and edits asked for.
fn opencode_json(base_url: &str) -> Value {
    json!({
        "$schema": "https://opencode.ai/config.json",
        "provider": {"local": {
            "npm": "@ai-sdk/openai-compatible",
            "name": "Loopback",
            "options": {"baseURL": format!("{base_url}/v1"), "apiKey": format!("{{env:{KEY_VAR}}}")},
            "models": {"test-model": {"name": "Test model"}}
        }},
        "model": "local/test-model",
        "small_model": "local/test-model",
        "agent": {"title": {"disable": true}},
        "permission": {"edit": "ask"},
        "autoupdate": false,
        "share": "disabled"
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn opencodes_approved_write_is_served_by_kaged_in_the_cage() {
    let Some(oc) = opencode() else {
        return;
    };
    let dir = scratch("acp-opencode");
    let provider = Provider::start();
    let content = "written by OpenCode through kaged\n";
    provider.push(tool_reply(
        COMPLETIONS,
        &[Call::new(
            "call_1",
            "write",
            &json!({"filePath": FILE, "content": content}),
        )],
    ));
    let reply = format!("kaged-opencode-reply-{}", std::process::id());
    provider.push(text_reply(COMPLETIONS, &[&reply]));

    let root = dir.path().join("project");
    std::fs::create_dir_all(root.join(".kaged")).unwrap();
    std::fs::write(
        root.join(".kaged/project.yaml"),
        format!(
            "version: 1\nproject: {SLUG}\nprimary:\n  command: [env, NO_PROXY=localhost, opencode, acp, --hostname, localhost]\n  protocol: acp\n  cage:\n    network:\n      allow: [\"127.0.0.1:{}\"]\n",
            provider.port()
        ),
    )
    .unwrap();
    std::fs::write(
        root.join("opencode.json"),
        serde_json::to_string_pretty(&opencode_json(&provider.base_url())).unwrap(),
    )
    .unwrap();
    crate::common::cage_writable(&root);
    let config = dir.path().join("config");
    std::fs::create_dir_all(&config).unwrap();
    std::fs::write(
        config.join("local.toml"),
        format!(
            "[projects.{SLUG}]\nenv = [\"{KEY_VAR}\", \"OPENCODE_DISABLE_MODELS_FETCH\", \"OPENCODE_DISABLE_AUTOUPDATE\", \"OPENCODE_DISABLE_LSP_DOWNLOAD\"]\npaths = [\n  {{ host = \"{}\" }},\n  {{ host = \"{}\", on_path = true }},\n]\n",
            oc.modules().display(),
            oc.bin_dir().display(),
        ),
    )
    .unwrap();
    let daemon = Daemon::start_with(
        &dir.path().join("kaged"),
        &["--bind", "127.0.0.1:0"],
        &[
            ("KAGED_CONFIG_DIR", config.to_str().unwrap()),
            (KEY_VAR, OC_KEY),
            ("OPENCODE_DISABLE_MODELS_FETCH", "1"),
            ("OPENCODE_DISABLE_AUTOUPDATE", "1"),
            ("OPENCODE_DISABLE_LSP_DOWNLOAD", "1"),
        ],
    );
    load_project_at(&daemon, &root).await;

    let id = create_agent(&daemon, SLUG, "primary", Some("Write hello.txt, please.")).await;
    let pending = wait_pending_within(&daemon, &id, 1, PATIENCE).await;
    let approval = &pending[0];
    assert_eq!(approval["tool"], "acp.edit", "{approval}");
    assert!(
        !root.join("hello.txt").exists(),
        "nothing is written before the decision"
    );
    let (status, body) = daemon
        .call(
            reqwest::Method::POST,
            &format!("/api/v1/approvals/{}", approval["id"].as_str().unwrap()),
            Some(json!({"decision": "approve"})),
        )
        .await;
    assert!(status.is_success(), "{status} {body}");

    let start = Instant::now();
    let records = loop {
        let (records, _) = conversation(&daemon, &id, 0).await;
        if records.iter().any(is_turn_ended) {
            break records;
        }
        assert!(
            start.elapsed() < PATIENCE,
            "the turn never ended:\n{}\n{}",
            summarize(&records),
            daemon.stderr_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let all = summarize(&records);
    assert_eq!(turn_end_reasons(&records), ["end_turn"], "{all}");
    assert!(streamed_text(&records).contains(&reply), "{all}");
    for k in [
        "tool_call",
        "approval_requested",
        "approval_decided",
        "tool_result",
    ] {
        assert!(records.iter().any(|r| kind(r) == k), "no {k}: {all}");
    }
    assert_eq!(
        std::fs::read_to_string(root.join("hello.txt")).unwrap_or_default(),
        content,
        "{all}"
    );
    // OpenCode had kaged write it: the shim's audited `fs/write_text_file`.
    assert!(
        crate::common::shim_served_write(&daemon, &id, FILE).await,
        "no served write in the audit"
    );
    // The model calls: through the egress proxy, with the granted key.
    let requests = provider.requests();
    assert_eq!(requests.len(), 2, "{requests:#?}");
    assert!(
        requests.iter().all(|r| r.path == "/v1/chat/completions"
            && r.header("authorization") == Some(&format!("Bearer {OC_KEY}"))),
        "{requests:#?}"
    );
    let egress = egress_decisions(&daemon, &id).await;
    assert!(
        egress.iter().any(|e| e["decision"] == "allowed"
            && e["method"] == "POST"
            && e["host"] == "127.0.0.1"
            && e["port"] == provider.port()),
        "{egress:#?}"
    );
}
