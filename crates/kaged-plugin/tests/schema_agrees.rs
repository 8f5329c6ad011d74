//! The published manifest schema and the validator agree: every manifest the validator
//! accepts, the schema accepts (the validator is stricter: SPDX grammar, URLs, capabilities and
//! duplicates go beyond JSON Schema). The schema side is checked by Python's `jsonschema`, an
//! independent implementation, as kaged-dsl's project schema is.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

use std::process::Command;

use kaged_plugin::{json_schema, load_manifest};

const MINIMAL: &str = "name: hello\nversion: 0.1.0\nkaged_api: 1\ndescription: Says hello\ncommand: [./hello]\ncapabilities: []\n";

const FULL: &str = r#"name: notes
version: "1.2.0-beta.1+build.5"
kaged_api: 1
description: Keeps notes for agents
author: Ada
license: Apache-2.0 OR MIT
homepage: https://example.org/notes
command: [python3, plugin.py]
env: {NOTES_MODE: fast}
capabilities: ["read:fs:/srv/notes", "write:fs:/srv/out", "exec:/usr/bin/rg", "net:api.example.org:443", "net:[::1]:*", "kaged:storage:read", "kaged:storage:write"]
methods: [notes/search]
notifications: [notes/flush]
hooks: [on_session_start, on_session_idle]
tools:
  - {name: search, description: Search, input_schema: {type: object, properties: {q: {type: string}}}}
config_schema: {type: object}
system_config_schema: {type: object}
shutdown_timeout_sec: 30
health_interval_sec: 300
"#;

/// `MINIMAL` with one line added or replaced.
fn variants() -> Vec<String> {
    let add = |line: &str| format!("{MINIMAL}{line}\n");
    let swap = |from: &str, to: &str| MINIMAL.replacen(from, to, 1);
    vec![
        MINIMAL.into(),
        FULL.into(),
        add("capabilities_extra: 1"),
        add("shutdown_timeout_sec: 31"),
        add("health_interval_sec: 4"),
        add("hooks: [on_session_end]"),
        add("env: {lower: x}"),
        add("env: {A: 1}"),
        add("tools: [{name: Bad, description: d, input_schema: {}}]"),
        add("tools: [{name: ok, input_schema: {}}]"),
        add("config_schema: []"),
        add("methods: [\"has space\"]"),
        swap("kaged_api: 1", "kaged_api: 2"),
        swap("name: hello", "name: Hello"),
        swap("[./hello]", "[]"),
        swap("capabilities: []", "capabilities: [sudo]"),
        swap("capabilities: []", "capabilities: [3]"),
        swap("name: hello\n", ""),
    ]
}

#[test]
fn schema_and_validator_agree() {
    let texts = variants();
    let instances: Vec<serde_json::Value> = texts
        .iter()
        .map(|t| kaged_dsl::to_json(&kaged_dsl::parse(0, t).unwrap().0))
        .collect();
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("schema.json"), json_schema().to_string()).unwrap();
    std::fs::write(
        tmp.path().join("instances.json"),
        serde_json::Value::Array(instances).to_string(),
    )
    .unwrap();
    let script = "import json,sys\n\
        from jsonschema import Draft202012Validator as V\n\
        s=json.load(open(sys.argv[1])); V.check_schema(s); v=V(s)\n\
        print(json.dumps([v.is_valid(i) for i in json.load(open(sys.argv[2]))]))\n";
    let python = std::env::var("KAGED_TEST_PYTHON").unwrap_or_else(|_| "python3".into());
    let out = Command::new(python)
        .arg("-c")
        .arg(script)
        .arg(tmp.path().join("schema.json"))
        .arg(tmp.path().join("instances.json"))
        .output()
        .expect("python3 is needed: run ./scripts/test");
    assert!(
        out.status.success(),
        "the Python jsonschema check failed (./scripts/test installs it): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let schema_says: Vec<bool> = serde_json::from_slice(&out.stdout).unwrap();
    let mut accepted = 0;
    let mut both_refuse = 0;
    for (text, schema_ok) in texts.iter().zip(schema_says) {
        let ours = load_manifest(text).is_ok();
        assert!(
            !ours || schema_ok,
            "validator accepts but schema rejects:\n{text}"
        );
        accepted += usize::from(ours);
        both_refuse += usize::from(!ours && !schema_ok);
    }
    assert_eq!(accepted, 2, "the minimal and the full manifest");
    assert!(
        both_refuse >= 14,
        "the schema refuses the invalid ones too: {both_refuse}"
    );
}
