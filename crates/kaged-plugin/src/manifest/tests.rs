//! The manifest on data: a full valid one, defaults, bounds, and every error with its place.

use super::*;
use crate::capability::Capability;
use kaged_cage::Network;

const FULL: &str = r#"name: notes
version: "1.2.0-beta.1+build.5"
kaged_api: 1
description: Keeps notes for agents
author: Ada <ada@example.org>
license: Apache-2.0 OR MIT
homepage: https://example.org/notes
command: [python3, plugin.py, --quiet]
env:
  NOTES_MODE: fast
  _DEBUG: "0"
capabilities:
  - read:fs:/srv/notes
  - write:fs:/srv/notes/out
  - exec:/usr/bin/rg
  - net:api.example.org:443
  - kaged:storage:read
  - kaged:storage:write
methods: [notes/search]
notifications: [notes/flush]
hooks: [on_session_start, on_session_idle]
tools:
  - name: search
    description: Search the notes
    input_schema:
      type: object
      properties:
        query: {type: string}
      required: [query]
  - name: add.note
    description: Add a note
    input_schema: {}
config_schema:
  type: object
  properties:
    folder: {type: string}
system_config_schema:
  type: object
shutdown_timeout_sec: 30
health_interval_sec: 5
"#;

const MINIMAL: &str = "name: hello\nversion: 0.1.0\nkaged_api: 1\ndescription: Says hello\ncommand: [./hello]\ncapabilities: []\n";

/// The diagnostics of a refused manifest as `(line, column, path, problem)`.
fn refused(text: &str) -> Vec<(usize, usize, String, String)> {
    load_manifest(text)
        .unwrap_err()
        .diagnostics
        .into_iter()
        .map(|d| (d.pos.line, d.pos.column, d.path, d.problem))
        .collect()
}

/// `MINIMAL` with `line` appended.
fn with(line: &str) -> String {
    format!("{MINIMAL}{line}\n")
}

/// The single diagnostic of `MINIMAL` plus `line` (line 7).
fn one(line: &str) -> (usize, usize, String, String) {
    let mut all = refused(&with(line));
    assert_eq!(all.len(), 1, "{all:?}");
    all.remove(0)
}

#[test]
fn a_full_manifest_is_typed_in_full() {
    let m = load_manifest(FULL).unwrap();
    assert_eq!(m.name, "notes");
    assert_eq!(
        m.version,
        semver::Version::parse("1.2.0-beta.1+build.5").unwrap()
    );
    assert_eq!(m.kaged_api, 1);
    assert_eq!(m.description, "Keeps notes for agents");
    assert_eq!(m.author.as_deref(), Some("Ada <ada@example.org>"));
    assert_eq!(m.license.as_deref(), Some("Apache-2.0 OR MIT"));
    assert_eq!(m.homepage.as_deref(), Some("https://example.org/notes"));
    assert_eq!(m.command, vec!["python3", "plugin.py", "--quiet"]);
    assert_eq!(
        m.env,
        vec![
            ("NOTES_MODE".to_string(), "fast".to_string()),
            ("_DEBUG".to_string(), "0".to_string())
        ]
    );
    assert_eq!(
        m.capabilities.list(),
        &[
            Capability::ReadFs("/srv/notes".into()),
            Capability::WriteFs("/srv/notes/out".into()),
            Capability::Exec("/usr/bin/rg".into()),
            Capability::Net("api.example.org:443".into()),
            Capability::StorageRead,
            Capability::StorageWrite,
        ]
    );
    assert_eq!(
        m.capabilities.network(),
        Network::Allow(vec!["api.example.org:443".into()])
    );
    assert_eq!(m.methods, vec!["notes/search"]);
    assert_eq!(m.notifications, vec!["notes/flush"]);
    assert_eq!(m.hooks, vec![Hook::OnSessionStart, Hook::OnSessionIdle]);
    assert_eq!(m.tools.len(), 2);
    assert_eq!(m.tools[0].name, "search");
    assert_eq!(m.tools[0].input_schema["required"], json!(["query"]));
    assert_eq!(m.agent_tool_name(&m.tools[1]), "notes.add.note");
    assert_eq!(m.tools[1].input_schema, json!({}));
    assert_eq!(
        m.config_schema,
        Some(json!({"type": "object", "properties": {"folder": {"type": "string"}}}))
    );
    assert_eq!(m.system_config_schema, Some(json!({"type": "object"})));
    assert_eq!((m.shutdown_timeout_sec, m.health_interval_sec), (30, 5));
    assert_eq!(Hook::OnSessionIdle.method(), "hooks/on_session_idle");
}

#[test]
fn a_minimal_manifest_gets_the_defaults() {
    let m = load_manifest(MINIMAL).unwrap();
    assert_eq!(
        (m.shutdown_timeout_sec, m.health_interval_sec),
        (DEFAULT_SHUTDOWN_TIMEOUT_SEC, DEFAULT_HEALTH_INTERVAL_SEC)
    );
    assert_eq!((m.shutdown_timeout_sec, m.health_interval_sec), (5, 30));
    assert!(m.env.is_empty() && m.tools.is_empty() && m.hooks.is_empty());
    assert!(m.methods.is_empty() && m.notifications.is_empty());
    assert_eq!((m.author, m.license, m.homepage), (None, None, None));
    assert_eq!((m.config_schema, m.system_config_schema), (None, None));
    assert_eq!(m.capabilities.network(), Network::None);
}

#[test]
fn bounds_of_the_timeouts() {
    for ok in [
        "shutdown_timeout_sec: 1",
        "shutdown_timeout_sec: 30",
        "health_interval_sec: 5",
        "health_interval_sec: 300",
    ] {
        assert!(load_manifest(&with(ok)).is_ok(), "{ok}");
    }
    assert_eq!(
        one("shutdown_timeout_sec: 31"),
        (
            7,
            23,
            "shutdown_timeout_sec".into(),
            "31 is out of range".into()
        )
    );
    assert_eq!(
        one("shutdown_timeout_sec: 0"),
        (
            7,
            23,
            "shutdown_timeout_sec".into(),
            "0 is out of range".into()
        )
    );
    assert_eq!(
        one("health_interval_sec: 4"),
        (
            7,
            22,
            "health_interval_sec".into(),
            "4 is out of range".into()
        )
    );
    assert_eq!(
        one("health_interval_sec: 301"),
        (
            7,
            22,
            "health_interval_sec".into(),
            "301 is out of range".into()
        )
    );
    assert_eq!(
        one("health_interval_sec: soon"),
        (
            7,
            22,
            "health_interval_sec".into(),
            "expected a whole number, found string".into()
        )
    );
}

#[test]
fn names_versions_and_the_api_version() {
    let at_line_1 = |name_line: &str| {
        let text = MINIMAL.replacen("name: hello", name_line, 1);
        let all = refused(&text);
        assert_eq!(all.len(), 1, "{all:?}");
        all.into_iter().next().unwrap()
    };
    for bad in ["Hello", "1hello", "hel_lo", "-x", "hello.world"] {
        assert_eq!(
            at_line_1(&format!("name: {bad}")),
            (1, 7, "name".into(), format!("{bad:?} is not a plugin name"))
        );
    }
    let long = "a".repeat(65);
    assert_eq!(
        at_line_1(&format!("name: {long}")).3,
        format!("{long:?} is not a plugin name")
    );
    assert!(load_manifest(&MINIMAL.replacen("hello", &"a".repeat(64), 1)).is_ok());
    assert!(load_manifest(&MINIMAL.replacen("hello", "my-plugin-2", 1)).is_ok());

    let version = |v: &str| {
        let all = refused(&MINIMAL.replacen("version: 0.1.0", &format!("version: {v}"), 1));
        assert_eq!(all.len(), 1, "{all:?}");
        let (line, column, path, problem) = all.into_iter().next().unwrap();
        assert_eq!((line, column, path.as_str()), (2, 10, "version"));
        problem
    };
    assert!(version("\"1.2\"").starts_with("\"1.2\" is not a semantic version"));
    assert!(version("v1.0.0").starts_with("\"v1.0.0\" is not a semantic version"));
    assert_eq!(version("1.2"), "a version is a string such as \"1.2.0\"");

    let api = |v: &str| {
        let all = refused(&MINIMAL.replacen("kaged_api: 1", &format!("kaged_api: {v}"), 1));
        assert_eq!(all.len(), 1, "{all:?}");
        let (line, column, path, problem) = all.into_iter().next().unwrap();
        assert_eq!((line, column, path.as_str()), (3, 12, "kaged_api"));
        problem
    };
    assert_eq!(
        api("2"),
        "the plugin targets kaged API 2; this kaged supports API 1"
    );
    assert_eq!(
        api("0"),
        "the plugin targets kaged API 0; this kaged supports API 1"
    );
    assert_eq!(api("\"1\""), "expected a whole number, found string");
}

#[test]
fn license_homepage_and_command() {
    assert!(load_manifest(&with("license: MIT")).is_ok());
    for ok in [
        "GPL-2.0-or-later WITH Classpath-exception-2.0",
        "(MIT OR Apache-2.0) AND BSD-3-Clause",
        "LicenseRef-my-own",
        "GPL-2.0+",
    ] {
        assert!(
            load_manifest(&with(&format!("license: \"{ok}\""))).is_ok(),
            "{ok}"
        );
    }
    for (bad, why) in [
        (
            "MIT or Apache-2.0",
            "the operator `or` is written in upper case",
        ),
        (
            "MIT Apache-2.0",
            "`Apache-2.0` follows a license without AND, OR or WITH between them",
        ),
        ("MIT OR", "the expression ends with an operator"),
        ("(MIT", "a `(` is not closed"),
        ("MIT)", "a `)` has no matching `(`"),
        (
            "Mozilla Public License",
            "`Public` follows a license without AND, OR or WITH between them",
        ),
        ("MIT/X11", "`MIT/X11` is not a license identifier"),
        ("\"\"", "the license is empty"),
    ] {
        let value = if bad.starts_with('"') {
            bad.to_string()
        } else {
            format!("\"{bad}\"")
        };
        let (line, column, path, problem) = one(&format!("license: {value}"));
        assert_eq!((line, column, path.as_str()), (7, 10, "license"), "{bad}");
        assert!(problem.ends_with(why), "{bad}: {problem}");
        assert!(
            problem.contains("is not an SPDX license expression"),
            "{problem}"
        );
    }

    assert!(load_manifest(&with("homepage: http://example.org")).is_ok());
    for (bad, why) in [
        (
            "ftp://example.org/x",
            "\"ftp://example.org/x\" is a ftp URL, not http or https",
        ),
        (
            "example.org",
            "\"example.org\" is not a URL: relative URL without a base",
        ),
        (
            "file:///etc/passwd",
            "\"file:///etc/passwd\" is a file URL, not http or https",
        ),
        ("https://", "\"https://\" is not a URL: empty host"),
    ] {
        assert_eq!(
            one(&format!("homepage: {bad}")),
            (7, 11, "homepage".into(), why.into())
        );
    }

    let command = |value: &str| {
        let all = refused(&MINIMAL.replacen("command: [./hello]", &format!("command: {value}"), 1));
        assert_eq!(all.len(), 1, "{all:?}");
        all.into_iter().next().unwrap()
    };
    assert_eq!(
        command("python3 plugin.py"),
        (
            5,
            10,
            "command".into(),
            "commands are argv lists, never shell strings".into()
        )
    );
    assert_eq!(
        command("[]"),
        (5, 10, "command".into(), "the command is empty".into())
    );
    assert_eq!(
        command("[\"\"]"),
        (5, 11, "command[0]".into(), "the program is empty".into())
    );
    assert_eq!(
        command("[python3, 3]"),
        (
            5,
            20,
            "command[1]".into(),
            "expected a string, found integer".into()
        )
    );
    assert_eq!(
        command("{a: b}"),
        (
            5,
            10,
            "command".into(),
            "expected an argv list such as [\"python3\", \"plugin.py\"], found mapping".into()
        )
    );
}

#[test]
fn env_names_and_values() {
    let text = with("env:\n  GOOD_1: x\n  lower: x\n  1ST: x\n  NUM: 3\n  LIST: [a]");
    assert_eq!(
        refused(&text),
        vec![
            (
                9,
                3,
                "env.lower".into(),
                "`lower` is not an environment variable name".into()
            ),
            (
                10,
                3,
                "env.1ST".into(),
                "`1ST` is not an environment variable name".into()
            ),
            (
                11,
                8,
                "env.NUM".into(),
                "expected a string, found integer".into()
            ),
            (
                12,
                9,
                "env.LIST".into(),
                "expected a string, found list".into()
            ),
        ]
    );
    let many: String = (0..65).map(|i| format!("\n  V{i}: x")).collect();
    assert_eq!(
        one(&format!("env:{many}")),
        (8, 3, "env".into(), "more than 64 variables".into())
    );
    let just: String = (0..64).map(|i| format!("\n  V{i}: x")).collect();
    assert!(load_manifest(&with(&format!("env:{just}"))).is_ok());
    let secret = "this looks like a credential; secrets never go in a plugin manifest";
    assert_eq!(
        one("env:\n  TOKEN: ghp_abcdefghijklmnop"),
        (8, 10, "env.TOKEN".into(), secret.into())
    );
    let text = MINIMAL.replace("[./hello]", "[./hello, --key, sk-abcdefghijklmnop]");
    assert_eq!(
        refused(&text),
        vec![(5, 27, "command[2]".into(), secret.into())]
    );
    assert_eq!(
        one("env: [A]"),
        (
            7,
            6,
            "env".into(),
            "expected a mapping of NAME: value, found list".into()
        )
    );
}

#[test]
fn capabilities_are_checked_one_by_one_at_their_place() {
    let text = with("").replace(
        "capabilities: []",
        "capabilities:\n  - read:fs:relative\n  - sudo\n  - net:[]\n  - net:example.org:443\n  - 42\n  - kaged:storage:read\n  - kaged:storage:read",
    );
    let all = refused(&text);
    let places: Vec<(usize, usize, &str)> = all
        .iter()
        .map(|(l, c, p, _)| (*l, *c, p.as_str()))
        .collect();
    assert_eq!(
        places,
        vec![
            (7, 5, "capabilities[0]"),
            (8, 5, "capabilities[1]"),
            (10, 5, "capabilities[3]"),
            (11, 5, "capabilities[4]"),
            (13, 5, "capabilities[6]"),
        ],
        "{all:?}"
    );
    assert_eq!(
        all[0].3,
        "capability \"read:fs:relative\": `relative` is relative; capabilities name absolute paths"
    );
    assert_eq!(
        all[1].3,
        "capability \"sudo\": is not a capability kaged knows"
    );
    assert_eq!(
        all[2].3,
        "capability \"net:example.org:443\": conflicts with `net:[]`: net:[] means no network at all"
    );
    assert_eq!(all[3].3, "expected a string, found integer");
    assert_eq!(
        all[4].3,
        "capability \"kaged:storage:read\": is declared twice"
    );
    let unknown = load_manifest(&text).unwrap_err().diagnostics;
    assert!(unknown[1].hint.contains("net:HOST:*"), "{:?}", unknown[1]);
}

#[test]
fn hooks_tools_and_schemas() {
    let (line, column, path, problem) = one("hooks: [on_session_start, on_session_end]");
    assert_eq!((line, column, path.as_str()), (7, 27, "hooks[1]"));
    assert_eq!(problem, "\"on_session_end\" is not allowed here");
    let hint = &load_manifest(&with("hooks: [on_session_end]"))
        .unwrap_err()
        .diagnostics[0]
        .hint;
    assert!(
        hint.ends_with("use one of: on_session_start, on_session_idle"),
        "{hint}"
    );
    assert_eq!(
        one("hooks: [on_session_idle, on_session_idle]"),
        (7, 26, "hooks[1]".into(), "this hook is listed twice".into())
    );

    let tools = "tools:\n  - name: Search\n    description: d\n    input_schema: {type: string}\n  - name: ok\n    input_schema: []\n  - name: ok\n    description: d\n    input_schema: {}\n    extra: 1";
    assert_eq!(
        refused(&with(tools)),
        vec![
            (
                8,
                11,
                "tools[0].name".into(),
                "\"Search\" is not a tool name".into()
            ),
            (
                10,
                26,
                "tools[0].input_schema.type".into(),
                "this schema must describe a JSON object".into()
            ),
            (
                11,
                5,
                "tools[1]".into(),
                "missing required key `description`".into()
            ),
            (
                12,
                19,
                "tools[1].input_schema".into(),
                "expected a JSON Schema (a mapping such as {type: object}), found list".into()
            ),
            (
                13,
                11,
                "tools[2].name".into(),
                "the tool `ok` is already defined (line 11)".into()
            ),
            (16, 5, "tools[2].extra".into(), "unknown key `extra`".into()),
        ]
    );
    assert_eq!(
        one("config_schema: {type: array}"),
        (
            7,
            23,
            "config_schema.type".into(),
            "this schema must describe a JSON object".into()
        )
    );
    let (line, column, path, problem) =
        one("system_config_schema: {type: object, properties: {token: {type: text}}}");
    assert_eq!(
        (line, column, path.as_str()),
        (7, 23, "system_config_schema"),
        "{problem}"
    );
    assert!(
        problem.starts_with("this is not a JSON Schema kaged can use: "),
        "{problem}"
    );
    let (_, _, path, problem) = one(
        "config_schema: {type: object, properties: {a: {$ref: \"https://example.org/s.json\"}}}",
    );
    assert_eq!(
        path, "config_schema",
        "a remote reference is refused: {problem}"
    );
    assert_eq!(
        one("system_config_schema: secret"),
        (
            7,
            23,
            "system_config_schema".into(),
            "expected a JSON Schema (a mapping such as {type: object}), found string".into()
        )
    );
    assert_eq!(
        one("methods: [\"bad name\"]"),
        (
            7,
            11,
            "methods[0]".into(),
            "\"bad name\" is not a method name".into()
        )
    );
}

#[test]
fn unknown_and_missing_keys_yaml_problems_and_encoding_all_at_once() {
    let text = "name: hello\r\nversoin: 0.1.0\nkaged_api: &a 1\ndescription: *a\ncommand: [x]\ncapabilities: []\nname: again\n";
    let all = refused(text);
    let summary: Vec<(usize, usize, &str)> = all
        .iter()
        .map(|(l, c, _, p)| (*l, *c, p.as_str()))
        .collect();
    assert_eq!(
        summary,
        vec![
            (1, 1, "the file uses CRLF line endings"),
            (1, 1, "missing required key `version`"),
            (2, 1, "unknown key `versoin`"),
            (3, 12, "anchors and tags are not allowed in project files"),
            (4, 14, "aliases are not allowed in project files"),
            (4, 14, "expected a string, found null"),
            (7, 1, "duplicate key `name` (first at line 1)"),
        ],
        "{all:?}"
    );
    let e = load_manifest(text).unwrap_err();
    assert!(
        e.diagnostics[2].hint.starts_with("did you mean `version`?"),
        "{:?}",
        e.diagnostics[2]
    );
    assert!(
        e.to_string().lines().any(|l| l.starts_with(
            "kaged-plugin.yaml:1:1: missing required key `version` (fix: add `version:`"
        )),
        "{e}"
    );
    assert!(
        e.to_string()
            .contains("\nkaged-plugin.yaml:2:1: versoin: unknown key `versoin`"),
        "{e}"
    );
    assert_eq!(e.to_json()[2]["file"], "kaged-plugin.yaml");
    assert_eq!(e.to_json()[2]["line"], 2);

    let syntax = load_manifest("name: [x\n").unwrap_err().diagnostics;
    assert_eq!(syntax.len(), 1);
    assert!(syntax[0].problem.starts_with("YAML syntax error"));
    let empty = refused("");
    assert_eq!(
        empty,
        vec![(
            1,
            1,
            String::new(),
            "expected a mapping (plugin manifest), found null".into()
        )]
    );
    let missing = refused("name: x\n");
    assert_eq!(missing.len(), 5, "{missing:?}");
    assert!(
        missing
            .iter()
            .all(|(l, c, _, p)| (*l, *c) == (1, 1) && p.starts_with("missing required key"))
    );
}

#[test]
fn the_json_schema_comes_from_the_same_tables() {
    let schema = json_schema();
    assert_eq!(
        schema["$schema"],
        "https://json-schema.org/draft/2020-12/schema"
    );
    assert_eq!(schema["additionalProperties"], false);
    let properties = schema["properties"].as_object().unwrap();
    let keys: Vec<&str> = properties.keys().map(String::as_str).collect();
    let mut fields: Vec<&str> = MANIFEST.fields.iter().map(|f| f.name).collect();
    fields.sort_unstable();
    assert_eq!(keys, fields);
    let mut required: Vec<&str> = schema["required"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    required.sort_unstable();
    assert_eq!(
        required,
        vec![
            "capabilities",
            "command",
            "description",
            "kaged_api",
            "name",
            "version"
        ]
    );
    assert_eq!(properties["kaged_api"]["const"], 1);
    assert_eq!(properties["shutdown_timeout_sec"]["minimum"], 1);
    assert_eq!(properties["shutdown_timeout_sec"]["maximum"], 30);
    assert_eq!(properties["health_interval_sec"]["minimum"], 5);
    assert_eq!(properties["health_interval_sec"]["maximum"], 300);
    assert_eq!(properties["hooks"]["items"]["enum"], json!(HOOKS));
    assert_eq!(properties["name"]["pattern"], "^[a-z][a-z0-9-]*$");
    assert_eq!(
        properties["tools"]["items"]["required"],
        json!(["name", "description", "input_schema"])
    );
    assert_eq!(
        properties["tools"]["items"]["properties"]["name"]["pattern"],
        "^[a-z][a-z0-9_.-]*$"
    );
    for field in MANIFEST.fields {
        assert_eq!(
            properties[field.name]["description"], field.doc,
            "{}",
            field.name
        );
    }
}
