//! A real browser (Debian's headless Chromium) signs in through the printed launch URL.
//! Screenshots are saved under $KAGED_TEST_ARTIFACTS (default: target/test-artifacts).
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

fn artifacts() -> PathBuf {
    let dir = std::env::var_os("KAGED_TEST_ARTIFACTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/test-artifacts")
        });
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

struct Chromium {
    profile: PathBuf,
}

impl Chromium {
    /// `None` only when the operator explicitly opted out of browser tests.
    fn new(profile: PathBuf) -> Option<Chromium> {
        let found = Command::new("chromium")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success());
        if !found {
            if std::env::var_os("KAGED_TEST_SKIP_BROWSER").is_some() {
                eprintln!("browser test skipped: KAGED_TEST_SKIP_BROWSER is set");
                return None;
            }
            panic!(
                "chromium is not installed: run ./scripts/test (installs it as root) or `sudo apt-get install chromium`"
            );
        }
        Some(Chromium { profile })
    }

    fn run(&self, extra: &[&str], url: &str) -> String {
        let out = Command::new("chromium")
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--virtual-time-budget=5000",
            ])
            .arg(format!("--user-data-dir={}", self.profile.display()))
            .args(extra)
            .arg(url)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "chromium failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    fn dom(&self, url: &str) -> String {
        self.run(&["--dump-dom"], url)
    }

    fn screenshot(&self, url: &str, name: &str, size: &str) -> PathBuf {
        let path = artifacts().join(name);
        let _ = std::fs::remove_file(&path);
        self.run(
            &[
                &format!("--screenshot={}", path.display()),
                &format!("--window-size={size}"),
            ],
            url,
        );
        let bytes = std::fs::read(&path).unwrap();
        assert!(
            bytes.starts_with(b"\x89PNG") && bytes.len() > 2000,
            "{name} is not a real screenshot"
        );
        path
    }
}

#[test]
fn launch_url_signs_a_real_browser_in_and_the_cookie_survives_a_browser_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let d = Daemon::start(&tmp.path().join("home"));
    let Some(browser) = Chromium::new(tmp.path().join("profile")) else {
        return;
    };
    let home = format!("{}/", d.base);

    // Not signed in yet: the page says exactly what to run.
    let dom = browser.dom(&home);
    assert!(
        dom.contains("kaged auth open") && dom.contains("kaged-problem"),
        "{dom}"
    );
    assert!(!dom.contains("kaged-console"));
    browser.screenshot(&home, "signed-out.png", "1280,800");

    // The printed URL signs in and lands on the console, whose script fills in the status.
    let dom = browser.dom(&d.launch_url);
    assert!(dom.contains("id=\"kaged-console\""), "{dom}");
    assert!(
        dom.contains("per-user (KAGED_HOME="),
        "status rendered by the page script: {dom}"
    );
    assert!(dom.contains(&d.base), "{dom}");

    // A new browser process with the same profile is still signed in (persistent cookie).
    let dom = browser.dom(&home);
    assert!(dom.contains("id=\"kaged-console\""), "{dom}");
    browser.screenshot(&home, "console-desktop.png", "1280,800");
    browser.screenshot(&home, "console-phone.png", "360,740");

    // The used launch URL does not sign in a second browser.
    let other = Chromium::new(tmp.path().join("profile2")).unwrap();
    let dom = other.dom(&d.launch_url);
    assert!(dom.contains("already used"), "{dom}");
    assert!(!other.dom(&home).contains("kaged-console"));
}
