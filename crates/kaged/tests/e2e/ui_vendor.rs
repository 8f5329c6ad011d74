//! The binary serves the web console itself: its own files (every `.js` module and `.css` file of
//! `crates/kaged-server/ui/`) and its third-party code (xterm.js and its fit addon), fetched and
//! integrity-checked by `crates/kaged-server/build.rs` from the npm registry.
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

#[tokio::test]
async fn every_file_of_the_console_folder_is_served_with_its_type_and_nothing_else() {
    let folder = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../kaged-server/ui");
    let tmp = tempfile::tempdir().unwrap();
    let d = Daemon::start(&tmp.path().join("home"));
    let client = plain_client();

    let mut modules = 0;
    for entry in std::fs::read_dir(&folder).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_string();
        let content_type = match path.extension().and_then(|e| e.to_str()) {
            // The service worker: at `/sw.js` (ui_approvals.rs), not under `/assets/`.
            _ if name == "sw.js" => continue,
            Some("js") => "text/javascript",
            Some("css") => "text/css",
            _ => continue,
        };
        modules += usize::from(content_type == "text/javascript");
        // No sign-in needed: the signed-out page uses the same stylesheet.
        let response = client
            .get(format!("{}/assets/{name}", d.base))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{name}");
        let header = |key: &str| {
            response
                .headers()
                .get(key)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string()
        };
        assert!(
            header("content-type").starts_with(content_type),
            "{name}: {}",
            header("content-type")
        );
        assert_eq!(header("cache-control"), "no-cache", "{name}");
        assert_eq!(header("x-content-type-options"), "nosniff", "{name}");
        let body = response.bytes().await.unwrap();
        assert_eq!(
            body,
            std::fs::read(&path).unwrap(),
            "{name} is served as it is"
        );
    }
    // The entry module and the ones it is split into (API, router, PTY, terminal, screens).
    assert!(
        modules >= 10,
        "only {modules} modules in {}",
        folder.display()
    );

    // What is in the folder but is not web code, and what is nowhere: 404, never a fallback page.
    for path in [
        "assets/nope.js",
        "assets/package.json",
        "assets/package-lock.json",
        "assets/README.md",
        "assets/index.html",
        "assets/sw.js",
        "assets/vendor/nope.js",
    ] {
        let response = client
            .get(format!("{}/{path}", d.base))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 404, "{path}");
    }
}
