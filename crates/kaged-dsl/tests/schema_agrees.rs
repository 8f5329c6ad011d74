//! The published JSON Schema and the validator agree: every document the validator accepts,
//! the schema accepts, and every document the schema rejects, the validator rejects. (The
//! validator is stricter: portability rules such as `..` escapes go beyond JSON Schema.) The
//! schema side is checked by Python's `jsonschema`, an independent implementation.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

use std::process::Command;

use kaged_dsl::{json_schema, load_project, to_json};

const DOCS: &[&str] = &[
    "version: 1\nproject: demo\nprimary:\n  command: [claude]\n",
    "version: 1\nproject: demo\nprimary:\n  model: sonnet\n  system_prompt: project:/p.md\n",
    "version: 2\nproject: demo\nprimary:\n  command: [claude]\n",
    "version: 1\nproject: Demo\nprimary:\n  command: [claude]\n",
    "version: 1\nproject: demo\nextra: 1\nprimary:\n  command: [claude]\n",
    "version: 1\nproject: demo\n",
    "version: 1\nproject: demo\nprimary:\n  model: sonnet\n",
    "version: 1\nproject: demo\nprimary:\n  model: sonnet\n  system_prompt: project:/p.md\n  command: [x]\n",
    "version: 1\nproject: demo\nprimary:\n  command: []\n",
    "version: 1\nproject: demo\nprimary:\n  command: [a]\n  cage: { seccomp: none }\n",
    "version: 1\nproject: demo\nprimary:\n  command: [a]\n  cage: { network: { allow: [] } }\n",
    "version: 1\nproject: demo\nprimary:\n  command: [a]\n  cage: { network: host, limits: { pids: 0 } }\n",
    "version: 1\nproject: demo\nprimary:\n  command: [a]\n  cage: disabled\n  subagents:\n    b: { model: x, system_prompt: 'config:/b.md' }\n",
    "version: 1\nproject: demo\nprimary:\n  command: [a]\n  subagents:\n    b: { model: x }\n",
    "version: 1\nproject: demo\nprimary:\n  command: [a]\ntasks:\n  t: { command: [make], timeout_secs: 0 }\n",
    "version: 1\nproject: demo\nprimary:\n  model: 'openai:gpt'\n  system_prompt: project:/p.md\n",
];

#[test]
fn schema_and_validator_agree() {
    let examples = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/projects");
    let mut texts: Vec<String> = DOCS.iter().map(|d| d.to_string()).collect();
    for entry in std::fs::read_dir(examples).unwrap() {
        texts.push(
            std::fs::read_to_string(entry.unwrap().path().join(".kaged/project.yaml")).unwrap(),
        );
    }
    let checked: Vec<_> = texts.iter().map(|t| load_project(t, None)).collect();
    let instances: Vec<serde_json::Value> = checked
        .iter()
        .map(|c| to_json(c.tree.as_ref().unwrap()))
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
    for ((text, c), schema_ok) in texts.iter().zip(&checked).zip(schema_says) {
        let ours = c.is_valid();
        assert!(
            !ours || schema_ok,
            "validator accepts but schema rejects:\n{text}"
        );
        assert!(
            schema_ok || !ours,
            "schema rejects but validator accepts:\n{text}"
        );
        accepted += usize::from(ours);
    }
    assert!(accepted >= 4, "valid documents were exercised");
    assert!(
        texts.len() - accepted >= 10,
        "invalid documents were exercised"
    );
}
