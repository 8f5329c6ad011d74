//! A model agent against the real small model (SmolLM2-135M in llama.cpp's `llama-server`,
//! which serves both `/v1/chat/completions` and `/v1/messages`), through the real daemon, via
//! `openai-completions` and `anthropic-messages`. Structure only, never the words: several
//! `text_delta`s, usage recorded, the turn ended, the session fine.
//!
//! `scripts/test` starts the server (`scripts/real-llm serve`) and sets `KAGED_REAL_LLM_URL`
//! with `KAGED_REAL_LLM_REQUIRED=1`; without the URL the test prints why it skipped and passes,
//! unless it is required.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

use std::io::Write;

use crate::common::provider::*;

/// Every tool off: the request carries none (the model server is not asked to template tools).
const NO_TOOLS: &str = "  max_output_tokens: 24\n  tools:\n    file.read: { enabled: false }\n    file.write: { enabled: false }\n    edit.text: { enabled: false }\n    search.grep: { enabled: false }\n    search.glob: { enabled: false }\n    shell.bash: { enabled: false }\n";

fn real_model_url() -> Option<String> {
    match std::env::var("KAGED_REAL_LLM_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ if std::env::var("KAGED_REAL_LLM_REQUIRED").as_deref() == Ok("1") => panic!(
            "KAGED_REAL_LLM_REQUIRED=1 but KAGED_REAL_LLM_URL is not set: start the model server \
             with scripts/real-llm serve (scripts/test does)"
        ),
        _ => {
            let _ = writeln!(
                std::io::stderr(),
                "agents_real: skipped: no real model (KAGED_REAL_LLM_URL unset); ./scripts/test runs it"
            );
            None
        }
    }
}

#[tokio::test]
async fn a_model_agent_talks_to_the_real_model_through_both_drivers() {
    let Some(url) = real_model_url() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("home");
    LocalToml::new()
        .alias("chat", &["llamac:smollm2"])
        .alias("msgs", &["llamam:smollm2"])
        .provider("llamac", COMPLETIONS, &url)
        .provider("llamam", ANTHROPIC, &url)
        .write(&home);
    write_models_config(
        &home,
        &[("request_timeout_secs", 60), ("stall_timeout_secs", 30)],
    );
    let d = start_daemon(&home, &[]).failing_on_panics();
    for (slug, alias) in [("realc", "chat"), ("realm", "msgs")] {
        let root = tmp.path().join(slug);
        write_model_project_on(&root, slug, alias, NO_TOOLS, "");
        load_project_at(&d, &root).await;
        let id = create_agent(
            &d,
            slug,
            "primary",
            Some("Tell me a short story about a lighthouse keeper and a storm."),
        )
        .await;
        let mut ws = EventsWs::open(&d, &id, 0).await;
        let turn = ws.until_turn_ended().await;
        let all = summarize(&turn);
        assert!(
            matches!(
                turn_end_reasons(&turn).as_slice(),
                [r] if r == "end_turn" || r == "max_output_tokens"
            ),
            "{slug}:\n{all}"
        );
        assert!(of_kind(&turn, "text_delta").len() >= 3, "{slug}:\n{all}");
        assert!(of_kind(&turn, "error").is_empty(), "{slug}:\n{all}");
        let usage = of_kind(&turn, "usage");
        assert_eq!(usage.len(), 1, "{slug}:\n{all}");
        assert!(
            usage[0]["event"]["output_tokens"].as_u64().unwrap() > 0,
            "{all}"
        );
        let completed = of_kind(&turn, "message_completed");
        assert_eq!(completed.len(), 1, "{all}");
        assert_eq!(
            completed[0]["event"]["text"].as_str().unwrap(),
            streamed_text(&turn)
        );
        let (stored, _) = conversation(&d, &id, 0).await;
        assert_eq!(stored, ws.seen, "{slug}");
        let s = session_json(&d, &id).await;
        assert_eq!(s["state"], "running", "{slug}: {s}");
    }
    let (status, log) = d.stop();
    assert!(status.success(), "{status}: {log}");
}
