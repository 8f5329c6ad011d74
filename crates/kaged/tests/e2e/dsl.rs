//! `kaged dsl validate` / `kaged dsl schema` and the public schema route, through the binary.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

use std::path::Path;

use crate::common::*;

fn examples() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/projects")
}

fn dsl(args: &[&str]) -> std::process::Output {
    kaged_cmd(&[]).arg("dsl").args(args).output().unwrap()
}

#[test]
fn examples_validate_and_problems_are_reported_with_positions() {
    for name in ["coding-assistant", "research-team"] {
        let out = dsl(&["validate", examples().join(name).to_str().unwrap()]);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{name}: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        assert!(String::from_utf8_lossy(&out.stderr).contains("is valid"));
    }

    let tmp = tempfile::tempdir().unwrap();
    let kaged = tmp.path().join(".kaged");
    std::fs::create_dir_all(&kaged).unwrap();
    let file = kaged.join("project.yaml");
    std::fs::write(
        &file,
        "version: 1\nproject: demo\nprimary:\n  command: claude --fast\n",
    )
    .unwrap();
    std::fs::write(kaged.join("project.local.yaml"), "project: other\n").unwrap();
    let out = dsl(&["validate", tmp.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8(out.stdout).unwrap();
    let base = file.display().to_string();
    let local = kaged.join("project.local.yaml").display().to_string();
    assert!(
        text.contains(&format!(
            "{base}:4:12: primary.command: commands are argv lists, never shell strings"
        )),
        "{text}"
    );
    assert!(
        text.contains("  fix: write [\"claude\", \"--fast\"]"),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "{local}:1:1: project: `project` cannot be changed by an overlay"
        )),
        "{text}"
    );

    let out = dsl(&["validate", file.to_str().unwrap(), "--format", "json"]);
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["valid"], false);
    assert_eq!(v["diagnostics"].as_array().unwrap().len(), 2);
    assert_eq!(v["diagnostics"][0]["line"], 4);
    assert_eq!(v["diagnostics"][0]["path"], "primary.command");

    let out = dsl(&["validate", tmp.path().join("nowhere").to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("PROJECT/.kaged/project.yaml"));
}

#[tokio::test]
async fn the_schema_is_printed_and_served_without_credentials() {
    let out = dsl(&["schema"]);
    assert!(out.status.success());
    let printed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(printed["$id"], "https://kaged.dev/schema/v1.json");

    let tmp = tempfile::tempdir().unwrap();
    let d = Daemon::start(tmp.path());
    let served = json_of(plain_client().get(format!("{}/api/v1/dsl/schema", d.base))).await;
    assert_eq!(served, printed);
}
