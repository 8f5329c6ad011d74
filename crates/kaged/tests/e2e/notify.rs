//! Notifications and `[notify]`: a webhook kaged must not use is refused at start naming the
//! file, key and line; a webhook's token never shows in status, the written config or the log.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

use crate::common::*;

#[test]
fn a_plain_http_webhook_to_a_public_name_stops_the_start_naming_file_key_and_line() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().to_str().unwrap();
    let cfg = tmp.path().join("config.toml");
    std::fs::write(
        &cfg,
        "[daemon]\nbind = \"127.0.0.1:0\"\n\n[notify]\nwebhook = \"http://example.com/x?auth=tk-s3cr3t\"\n",
    )
    .unwrap();
    let out = kaged_cmd(&[("KAGED_HOME", home)])
        .arg("start")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "{}:5:1: notify.webhook: \"http://example.com/…\" is plain http to the host name \"example.com\"",
            cfg.display()
        )),
        "{err}"
    );
    assert!(
        err.contains(
            "fix: use \"https://example.com/…\", or http:// with the receiver's private IP"
        ),
        "{err}"
    );
    assert!(!err.contains("s3cr3t"), "{err}");

    // The same from the variable, named as such.
    std::fs::write(&cfg, "[daemon]\nbind = \"127.0.0.1:0\"\n").unwrap();
    let out = kaged_cmd(&[
        ("KAGED_HOME", home),
        ("KAGED_NOTIFY_WEBHOOK", "ftp://127.0.0.1/s3cr3t"),
        ("KAGED_NOTIFY_PUBLIC_URL", "https://kaged.example/console"),
    ])
    .arg("start")
    .output()
    .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("environment variable KAGED_NOTIFY_WEBHOOK: notify.webhook: \"ftp://127.0.0.1/…\": the scheme \"ftp\" is not https or http"),
        "{err}"
    );
    assert!(
        err.contains("environment variable KAGED_NOTIFY_PUBLIC_URL: notify.public_url: \"https://kaged.example/console\" has a path, query or fragment"),
        "{err}"
    );
    assert!(!err.contains("s3cr3t"), "{err}");
}

#[tokio::test]
async fn a_webhook_token_shows_nowhere() {
    let tmp = tempfile::tempdir().unwrap();
    // No config file: the first launch writes one, from the defaults.
    let d = Daemon::start_with(
        tmp.path(),
        &["--bind", "127.0.0.1:0"],
        &[
            (
                "KAGED_NOTIFY_WEBHOOK",
                "https://ann:pw-s3cr3t@ntfy.example/kaged-topic?auth=tk-s3cr3t",
            ),
            ("KAGED_SESSIONS_APPROVAL_TIMEOUT_SECS", "600"),
        ],
    );
    let status = d.api_get("/api/v1/status").await;
    let text = status.to_string();
    assert_eq!(
        status["sources"]["notify.webhook"],
        serde_json::json!({"from": "env", "var": "KAGED_NOTIFY_WEBHOOK"})
    );
    assert_eq!(
        status["sources"]["sessions.approval_timeout_secs"]["var"],
        "KAGED_SESSIONS_APPROVAL_TIMEOUT_SECS"
    );
    let out = d.cli(&["status"]);
    assert!(out.status.success());
    let shown = String::from_utf8_lossy(&out.stdout).into_owned();
    let json = d.cli(&["status", "--json"]);
    let shown_json = String::from_utf8_lossy(&json.stdout).into_owned();
    assert!(shown_json.contains("notify.webhook"), "{shown_json}");
    let written = std::fs::read_to_string(tmp.path().join("config.toml")).unwrap();
    assert!(
        written.contains("# webhook = \"https://ntfy.sh/YOUR-TOPIC\""),
        "{written}"
    );
    let (_, log) = d.stop();
    for (what, s) in [
        ("GET /api/v1/status", &text),
        ("kaged status", &shown),
        ("kaged status --json", &shown_json),
        ("config.toml", &written),
        ("the log", &log),
    ] {
        assert!(!s.contains("s3cr3t"), "{what}: {s}");
        assert!(!s.contains("kaged-topic"), "{what}: {s}");
    }
}
