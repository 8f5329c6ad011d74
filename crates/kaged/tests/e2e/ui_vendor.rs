//! The web UI's third-party code (xterm.js and its fit addon), fetched and integrity-checked by
//! `crates/kaged-server/build.rs` from the npm registry, is served by the binary itself.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

mod common;

use common::*;

#[tokio::test]
async fn the_binary_serves_the_vendored_terminal_code_under_assets_vendor() {
    let tmp = tempfile::tempdir().unwrap();
    let d = Daemon::start(&tmp.path().join("home"));
    let client = plain_client();

    // (path, content type, smallest plausible size, a marker of the real file)
    let cases = [
        ("xterm.js", "text/javascript", 100_000, ".Terminal="),
        ("xterm.css", "text/css", 1_000, ".xterm-helper-textarea"),
        ("addon-fit.js", "text/javascript", 500, "FitAddon"),
    ];
    for (file, content_type, min_len, marker) in cases {
        // Like the other assets, no sign-in is needed.
        let response = client
            .get(format!("{}/assets/vendor/{file}", d.base))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{file}");
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string()
        };
        assert!(
            header("content-type").starts_with(content_type),
            "{file}: {}",
            header("content-type")
        );
        assert_eq!(header("cache-control"), "no-cache", "{file}");
        assert_eq!(header("x-content-type-options"), "nosniff", "{file}");
        assert!(
            header("content-security-policy").contains("script-src 'self'"),
            "{file}"
        );
        let body = response.text().await.unwrap();
        assert!(body.len() >= min_len, "{file}: only {} bytes", body.len());
        assert!(body.contains(marker), "{file} lacks {marker:?}");
    }

    let missing = client
        .get(format!("{}/assets/vendor/xterm.js.map", d.base))
        .send()
        .await
        .unwrap();
    assert_ne!(missing.status(), 200);
}
