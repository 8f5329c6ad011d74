//! The shipped deployment files parse: systemd units through `systemd-analyze verify`, the
//! oauth2-proxy example carries the whole header contract.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

use std::path::Path;
use std::process::Command;

fn repo() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
}

#[test]
fn systemd_units_verify_with_the_real_binary() {
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("skipped: systemd-analyze is not installed on this machine");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    for unit in ["systemd/kaged.service", "systemd-user/kaged.service"] {
        let text = std::fs::read_to_string(repo().join("examples/deployment").join(unit)).unwrap();
        assert!(text.contains("Type=notify"), "{unit}");
        // Point ExecStart at the binary under test so verify checks a real executable.
        let exec = crate::common::kaged_bin().display().to_string();
        let text = text
            .replace("%h/.local/bin/kaged", &exec)
            .replace("/usr/local/bin/kaged", &exec);
        let dir = tmp.path().join(unit.split('/').next().unwrap());
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("kaged.service");
        std::fs::write(&path, text).unwrap();
        let out = Command::new("systemd-analyze")
            .arg("verify")
            .arg(&path)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && err.trim().is_empty(),
            "{unit}: {err}"
        );
    }
}

#[test]
fn oauth2_proxy_example_injects_the_header_contract() {
    let dir = repo().join("examples/deployment/cloudflare-oauth2-proxy");
    let legacy = std::fs::read_to_string(dir.join("oauth2-proxy.cfg")).unwrap();
    // With --alpha-config, these legacy keys make oauth2-proxy refuse to start.
    for moved in [
        "upstreams",
        "inject_request_headers",
        "http_address",
        "provider ",
        "client_id",
    ] {
        assert!(
            !legacy.lines().any(|l| l.trim_start().starts_with(moved)),
            "{moved} belongs in alpha-config.yaml"
        );
    }
    let alpha = std::fs::read_to_string(dir.join("alpha-config.yaml")).unwrap();
    // Each contract header, followed by its source.
    for (header, source) in [
        ("X-Kaged-Auth-Nonce", "fromEnv: KAGED_AUTH_SIDECAR_NONCE"),
        ("X-Kaged-User-Id", "claim: user"),
        ("X-Kaged-User-Email", "claim: email"),
    ] {
        let at = alpha
            .find(&format!("name: {header}"))
            .unwrap_or_else(|| panic!("{header} missing"));
        let next = alpha[at..]
            .find(source)
            .unwrap_or_else(|| panic!("{header} has no {source}"));
        assert!(
            !alpha[at..at + next].contains("- name:"),
            "{source} belongs to another header"
        );
    }
    assert!(alpha.contains("uri: http://127.0.0.1:7777"));
    let compose = std::fs::read_to_string(dir.join("compose.yaml")).unwrap();
    assert!(compose.contains("--alpha-config=") && compose.contains("env_file: /etc/kaged/env"));
}
