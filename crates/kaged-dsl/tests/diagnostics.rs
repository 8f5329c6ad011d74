//! Every diagnostic, with exact line and column, and the shipped examples.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

use kaged_dsl::{LOCAL, check_project, json_schema};

/// `line:col path: problem` for each diagnostic, for compact exact comparisons.
fn brief(base: &str, local: Option<&str>) -> Vec<String> {
    check_project(base, local)
        .iter()
        .map(|d| {
            format!(
                "{}:{}:{} {}: {}",
                d.pos.source, d.pos.line, d.pos.column, d.path, d.problem
            )
        })
        .collect()
}

const VALID: &str = "version: 1\nproject: demo\nprimary:\n  command: [claude]\n";

#[test]
fn a_minimal_project_is_valid() {
    assert!(brief(VALID, None).is_empty(), "{:?}", brief(VALID, None));
}

#[test]
fn the_shipped_examples_are_valid() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/projects");
    let mut seen = 0;
    for entry in std::fs::read_dir(root).unwrap() {
        let dir = entry.unwrap().path();
        let text = std::fs::read_to_string(dir.join(".kaged/project.yaml")).unwrap();
        let diags = check_project(&text, None);
        assert!(diags.is_empty(), "{}: {diags:?}", dir.display());
        seen += 1;
    }
    assert!(seen >= 2);
}

#[test]
fn structure_errors_have_exact_positions() {
    let text = "\
version: 2
project: Demo Project
descripton: typo
primary:
  model: claude:sonnet-4
  command: [claude]
  cage:
    network: everywhere
    seccomp: relaxd
    limits: { memory_mb: 1 }
tasks:
  Bad Name:
    command: cargo test
";
    assert_eq!(
        brief(text, None),
        vec![
            "0:1:10 version: 2 is out of range",
            "0:2:10 project: \"Demo Project\" is not a project slug",
            "0:3:1 descripton: unknown key `descripton`",
            "0:5:3 primary: `model` or `command` exclude each other",
            "0:5:3 primary: `model` needs `system_prompt`",
            "0:5:10 primary.model: \"claude:sonnet-4\" is a concrete provider model ID, which is operator-local",
            "0:8:14 primary.cage.network: \"everywhere\" is not allowed here",
            "0:9:14 primary.cage.seccomp: \"relaxd\" is not allowed here",
            "0:10:26 primary.cage.limits.memory_mb: 1 is out of range",
            "0:12:3 tasks.Bad Name: `Bad Name` is not a valid name",
            "0:13:14 tasks.Bad Name.command: commands are argv lists, never shell strings",
        ]
    );
    let d = check_project(text, None);
    assert!(
        d[2].hint.contains("did you mean `description`"),
        "{}",
        d[2].hint
    );
    assert!(
        d[7].hint.contains("did you mean \"relaxed\""),
        "{}",
        d[7].hint
    );
    assert!(
        d[10].hint.contains("[\"cargo\", \"test\"]"),
        "{}",
        d[10].hint
    );
}

#[test]
fn portability_rules_say_where_the_value_belongs() {
    let text = "\
version: 1
project: demo
primary:
  model: sonnet
  system_prompt: /home/ann/prompts/p.md
  api_key: abc
  subagents:
    helper:
      command: [/usr/local/bin/agent, --token, ghp_0123456789abcdef0123]
      cage:
        filesystem:
          - path: project:/../secrets
tasks:
  t:
    command: [make]
    cwd: notes
";
    let diags = check_project(text, None);
    let lines: Vec<String> = diags
        .iter()
        .map(|d| format!("{} {} | {}", d.path, d.problem, d.hint))
        .collect();
    let expect = [
        ("primary.system_prompt", "absolute host path", "local.toml"),
        (
            "primary.api_key",
            "unknown key",
            "secrets belong in the operator's local.toml",
        ),
        (
            "primary.subagents.helper.command[0]",
            "absolute host path",
            "cage's PATH",
        ),
        (
            "primary.subagents.helper.command[2]",
            "looks like a credential",
            "environment",
        ),
        (
            "primary.subagents.helper.cage.filesystem[0].path",
            "escapes the project",
            "local.toml",
        ),
        (
            "tasks.t.cwd",
            "no project:/ or config:/ prefix",
            "project:/path",
        ),
    ];
    assert_eq!(diags.len(), expect.len(), "{lines:#?}");
    for (path, problem, hint) in expect {
        assert!(
            diags
                .iter()
                .any(|d| d.path == path && d.problem.contains(problem) && d.hint.contains(hint)),
            "missing {path}: {problem} ({hint}) in {lines:#?}"
        );
    }
    assert!(
        lines.iter().all(|l| !l.contains("ghp_0123")),
        "the secret is never echoed"
    );
}

#[test]
fn references_and_agent_names_are_checked_across_the_tree() {
    let text = "\
version: 1
project: demo
primary:
  command: [a]
  subagents:
    writer: { command: [w] }
    other:
      command: [o]
      subagents:
        writer: { command: [x] }
tasks:
  t: { command: [make], agent: nobody }
terminals:
  agent: writer
";
    assert_eq!(
        brief(text, None),
        vec![
            "0:10:9 primary.subagents.other.subagents.writer: the agent name `writer` is already used (line 6)",
            "0:12:32 tasks.t.agent: no agent named `nobody`",
        ]
    );
}

#[test]
fn missing_keys_and_wrong_types() {
    let text = "project: demo\nprimary:\n  model: sonnet\n  system_prompt: config:/p.md\n  tools:\n    file.read: yes\n";
    assert_eq!(
        brief(text, None),
        vec![
            "0:1:1 : missing required key `version`",
            "0:6:16 primary.tools.file.read: expected a mapping (tool), found string",
        ]
    );
    assert_eq!(
        brief("- just\n- a list\n", None),
        vec!["0:1:1 : expected a mapping (project), found list"]
    );
}

#[test]
fn the_local_overlay_is_checked_and_cannot_change_identity() {
    let local = "project: renamed\nprimary:\n  command: [claude, --fast]\n  cage:\n    network: host\n  descripton: x\n";
    let out = brief(VALID, Some(local));
    assert_eq!(
        out,
        vec![
            "1:1:1 project: `project` cannot be changed by an overlay",
            "1:6:3 primary.descripton: unknown key `descripton`",
        ]
    );
    let diags = check_project(VALID, Some(local));
    assert!(diags.iter().all(|d| d.pos.source == LOCAL));
    // A null removes a key from the base.
    let base = "version: 1\nproject: demo\ndescription: x\nprimary:\n  command: [a]\n";
    assert!(brief(base, Some("description: ~\n")).is_empty());
}

#[test]
fn json_schema_comes_from_the_same_tables() {
    let s = json_schema();
    assert_eq!(s["$id"], "https://kaged.dev/schema/v1.json");
    assert_eq!(s["additionalProperties"], false);
    let required: Vec<&str> = s["required"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(required, ["version", "project", "primary"]);
    let agent = &s["$defs"]["agent"];
    assert_eq!(agent["dependentRequired"]["model"][0], "system_prompt");
    assert_eq!(
        agent["properties"]["subagents"]["additionalProperties"]["$ref"],
        "#/$defs/agent"
    );
    assert_eq!(
        s["properties"]["project"]["pattern"],
        "^[a-z0-9][a-z0-9-]{0,62}[a-z0-9]$"
    );
    // Every key the validator knows is in the schema, and nothing else.
    let props: Vec<&String> = s["properties"].as_object().unwrap().keys().collect();
    assert_eq!(props.len(), kaged_dsl::schema::PROJECT.fields.len());
}

#[test]
fn review_cases_are_refused() {
    let text = "\
version: 1
project: demo
description: 'our key is sk-ant-0123456789abcdef'
primary:
  model: claude-3-5-sonnet-20241022
  system_prompt: project://etc/shadow
  subagents:
    a:
      command: [python, /home/alice/x.py, --cfg=~/y.toml, /dev/null]
";
    let diags = check_project(text, None);
    let lines: Vec<String> = diags
        .iter()
        .map(|d| format!("{} {}", d.path, d.problem))
        .collect();
    for (path, problem) in [
        ("description", "looks like a credential"),
        ("primary.model", "concrete provider model ID"),
        ("primary.system_prompt", "not a path inside the project"),
        (
            "primary.subagents.a.command[1]",
            "path on the operator's machine",
        ),
        (
            "primary.subagents.a.command[2]",
            "path on the operator's machine",
        ),
    ] {
        assert!(
            diags
                .iter()
                .any(|d| d.path == path && d.problem.contains(problem)),
            "missing {path}: {problem} in {lines:#?}"
        );
    }
    assert_eq!(diags.len(), 5, "/dev/null is a portable path: {lines:#?}");
    assert!(
        lines.iter().all(|l| !l.contains("sk-ant-0123")),
        "the secret is never echoed"
    );
}

#[test]
fn encoding_and_volume_limits() {
    let bom = format!("\u{feff}{VALID}");
    assert!(
        brief(&bom, None)
            .iter()
            .any(|l| l.contains("byte-order mark"))
    );
    let crlf = VALID.replace('\n', "\r\n");
    assert!(
        brief(&crlf, None)
            .iter()
            .any(|l| l.starts_with("0:1:1 : the file uses CRLF"))
    );
    // Many problems: capped, with a count of the rest.
    let mut many = String::from("version: 1\nproject: demo\nprimary:\n  command: [a]\n");
    for i in 0..500 {
        many.push_str(&format!("extra{i}: 1\n"));
    }
    let diags = check_project(&many, None);
    assert_eq!(diags.len(), kaged_dsl::MAX_DIAGNOSTICS + 1);
    assert_eq!(diags.last().unwrap().problem, "300 more problems not shown");
    // A mapping with many keys (and duplicates) is handled in one pass.
    let mut wide = String::from("version: 1\nproject: demo\nprimary:\n  command: [a]\ntasks:\n");
    for i in 0..20_000 {
        wide.push_str(&format!("  t{}: {{ command: [x] }}\n", i % 10_000));
    }
    let diags = check_project(&wide, None);
    assert!(
        diags
            .iter()
            .any(|d| d.problem.starts_with("duplicate key `t0`"))
    );
}

#[test]
fn overlay_nulls_inside_new_maps_mean_absent_and_key_anchors_are_refused() {
    let local = "tasks:\n  t:\n    command: [make]\n    cwd: ~\n";
    assert!(
        brief(VALID, Some(local)).is_empty(),
        "{:?}",
        brief(VALID, Some(local))
    );
    let anchored = "version: 1\nproject: demo\n&a primary:\n  command: [a]\n";
    assert!(
        brief(anchored, None)
            .iter()
            .any(|l| l.contains("anchors and tags"))
    );
}

/// A model agent's turn bounds and its built-in tools, switched on and off.
#[test]
fn model_agent_bounds_and_tool_settings() {
    let base = "version: 1\nproject: demo\nprimary:\n  model: fast\n  system_prompt: project:/p.md\n  max_steps: 20\n  max_output_tokens: 4096\n  tools:\n    file.read: { enabled: true }\n    file.write: { enabled: false }\n    edit.text: { enabled: true }\n    search.grep: { enabled: true }\n    search.glob: { enabled: true }\n    shell.bash: { enabled: false }\n";
    assert!(brief(base, None).is_empty(), "{:?}", brief(base, None));
    let project = kaged_dsl::load_project(base, None)
        .project()
        .unwrap()
        .unwrap();
    assert_eq!(project.primary.max_steps, Some(20));
    assert_eq!(project.primary.max_output_tokens, Some(4096));
    let tools = project.primary.tools.as_ref().unwrap();
    assert!(!tools["shell.bash"].offered() && tools["file.read"].offered());

    let zero = base.replace("max_steps: 20", "max_steps: 0");
    assert_eq!(brief(&zero, None).len(), 1, "{:?}", brief(&zero, None));
    let text = base.replace("max_output_tokens: 4096", "max_output_tokens: many");
    assert_eq!(brief(&text, None).len(), 1, "{:?}", brief(&text, None));
    let unknown = base.replace("enabled: false }\n", "enabled: false, approve: ask }\n");
    assert!(!brief(&unknown, None).is_empty());
    let bad_level = base.replace(
        "shell.bash: { enabled: false }",
        "shell.bash: { approval: maybe }",
    );
    let problems = brief(&bad_level, None);
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(
        problems[0].contains("primary.tools.shell.bash.approval"),
        "{problems:?}"
    );
    let bad_name = base.replace("shell.bash:", "Shell Bash:");
    assert!(!brief(&bad_name, None).is_empty());
    // The bounds are a model agent's: a command agent with them is told.
    let command = "version: 1\nproject: demo\nprimary:\n  command: [claude]\n  max_steps: 3\n";
    let problems = brief(command, None);
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(
        problems[0].contains("`max_steps` needs `model`"),
        "{problems:?}"
    );
}

/// `approval:` per tool: the default, the levels, and what a denied tool means.
#[test]
fn tool_approval_levels() {
    use kaged_dsl::Approval;
    let base = "version: 1\nproject: demo\nprimary:\n  model: fast\n  system_prompt: project:/p.md\n  tools:\n    shell.bash: { approval: ask }\n    file.write: { approval: deny }\n    file.read: {}\n    edit.text: { enabled: false, approval: ask }\n";
    assert!(brief(base, None).is_empty(), "{:?}", brief(base, None));
    let project = kaged_dsl::load_project(base, None)
        .project()
        .unwrap()
        .unwrap();
    let primary = &project.primary;
    assert_eq!(primary.approval_of("shell.bash"), Approval::Ask);
    assert_eq!(primary.approval_of("file.write"), Approval::Deny);
    assert_eq!(primary.approval_of("file.read"), Approval::Allow);
    assert_eq!(
        primary.approval_of("search.grep"),
        Approval::Allow,
        "unmentioned"
    );
    assert_eq!(primary.approval_of("edit.text"), Approval::Deny, "disabled");
    let tools = primary.tools.as_ref().unwrap();
    assert!(tools["shell.bash"].offered() && !tools["file.write"].offered());
    let schema = json_schema().to_string();
    assert!(
        schema.contains(r#""enum":["allow","ask","deny"]"#),
        "{schema}"
    );
}

/// The local file may tighten an approval and never loosen one, however it tries.
#[test]
fn the_local_overlay_may_only_tighten_approvals() {
    let base = "version: 1\nproject: demo\nprimary:\n  model: fast\n  system_prompt: project:/p.md\n  tools:\n    shell.bash: { approval: ask }\n    file.read: {}\n  subagents:\n    helper:\n      model: fast\n      system_prompt: project:/h.md\n      tools:\n        file.write: { approval: deny }\n";
    assert!(brief(base, None).is_empty(), "{:?}", brief(base, None));
    let tighter = "primary:\n  tools:\n    shell.bash: { approval: deny }\n    file.read: { approval: ask }\n";
    assert!(
        brief(base, Some(tighter)).is_empty(),
        "{:?}",
        brief(base, Some(tighter))
    );
    let checked = kaged_dsl::load_project(base, Some(tighter));
    let project = checked.project().unwrap().unwrap();
    assert_eq!(
        project.primary.approval_of("file.read"),
        kaged_dsl::Approval::Ask
    );

    let looser = "primary:\n  tools:\n    shell.bash: { approval: allow }\n";
    assert_eq!(
        brief(base, Some(looser)),
        vec![
            "1:3:19 primary.tools.shell.bash: project.local.yaml makes `shell.bash` run without asking but project.yaml says `approval: ask`"
        ]
    );
    let removed = "primary:\n  tools:\n    shell.bash: null\n";
    let problems = brief(base, Some(removed));
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(
        problems[0].starts_with("1:3:5 primary.tools.shell.bash:"),
        "{problems:?}"
    );
    let all_removed = "primary:\n  tools: null\n";
    let problems = brief(base, Some(all_removed));
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(problems[0].starts_with("1:2:3 "), "{problems:?}");
    let nested = "primary:\n  subagents:\n    helper:\n      tools:\n        file.write: { approval: ask }\n";
    let problems = brief(base, Some(nested));
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(
        problems[0].contains("primary.subagents.helper.tools.file.write: project.local.yaml makes `file.write` ask but project.yaml says `approval: deny`"),
        "{problems:?}"
    );
    // Removing the subagent altogether leaves nothing to loosen.
    let gone = "primary:\n  subagents:\n    helper: null\n";
    assert!(
        brief(base, Some(gone)).is_empty(),
        "{:?}",
        brief(base, Some(gone))
    );
}

/// `protocol: acp` is a command agent's; a model agent with it, or another value, is refused.
#[test]
fn a_command_agent_may_speak_acp() {
    let acp = "version: 1\nproject: demo\nprimary:\n  command: [gemini, --experimental-acp]\n  protocol: acp\n";
    assert!(brief(acp, None).is_empty(), "{:?}", brief(acp, None));
    let project = kaged_dsl::load_project(acp, None)
        .project()
        .unwrap()
        .unwrap();
    assert!(project.primary.speaks_acp());
    let pty = acp.replace("protocol: acp", "protocol: pty");
    let project = kaged_dsl::load_project(&pty, None)
        .project()
        .unwrap()
        .unwrap();
    assert!(!project.primary.speaks_acp());
    let bad = acp.replace("protocol: acp", "protocol: grpc");
    let problems = brief(&bad, None);
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(problems[0].contains("primary.protocol"), "{problems:?}");
    let model = "version: 1\nproject: demo\nprimary:\n  model: fast\n  system_prompt: project:/p.md\n  protocol: acp\n";
    let problems = brief(model, None);
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(
        problems[0].contains("`protocol` needs `command`"),
        "{problems:?}"
    );
}

/// `mode:` names an ACP agent's session mode; it needs `protocol:`.
#[test]
fn an_acp_agent_may_name_its_session_mode() {
    let acp = "version: 1\nproject: demo\nprimary:\n  command: [claude-agent-acp]\n  protocol: acp\n  mode: default\n";
    assert!(brief(acp, None).is_empty(), "{:?}", brief(acp, None));
    let project = kaged_dsl::load_project(acp, None)
        .project()
        .unwrap()
        .unwrap();
    assert_eq!(project.primary.mode.as_deref(), Some("default"));
    let without = acp.replace("  protocol: acp\n", "");
    let problems = brief(&without, None);
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(
        problems[0].contains("`mode` needs `protocol`"),
        "{problems:?}"
    );
}

/// `plugin_config:` on a model agent: committed settings for the plugins it lists, never a
/// credential, never for a plugin it does not list.
#[test]
fn plugin_settings_are_committed_only_for_listed_plugins_and_never_secret() {
    let base = "version: 1\nproject: demo\nprimary:\n  model: fast\n  system_prompt: project:/p.md\n  plugins: [notes]\n  plugin_config:\n    notes: { max_notes: 10, tags: [a, b] }\n";
    assert!(brief(base, None).is_empty(), "{:?}", brief(base, None));
    let project = kaged_dsl::load_project(base, None)
        .project()
        .unwrap()
        .unwrap();
    assert_eq!(
        project.primary.plugin_config["notes"],
        serde_json::json!({"max_notes": 10, "tags": ["a", "b"]})
    );
    let unlisted = base.replace("    notes: {", "    memo: {");
    assert_eq!(
        brief(&unlisted, None),
        vec!["0:8:5 primary.plugin_config.memo: `memo` is not one of this agent's plugins"]
    );
    let secret = base.replace(
        "tags: [a, b]",
        "token: ghp_0123456789abcdefghij0123456789abcdef",
    );
    let problems = brief(&secret, None);
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(
        problems[0]
            .starts_with("0:8:36 primary.plugin_config.notes.token: this looks like a credential"),
        "{problems:?}"
    );
    let scalar = base.replace("    notes: { max_notes: 10, tags: [a, b] }", "    notes: 3");
    assert_eq!(
        brief(&scalar, None),
        vec!["0:8:12 primary.plugin_config.notes: expected the plugin's settings as a mapping"]
    );
    let alone = base.replace("  plugins: [notes]\n", "");
    assert!(
        brief(&alone, None)
            .iter()
            .any(|p| p.contains("`plugin_config` needs `plugins`")),
        "{:?}",
        brief(&alone, None)
    );
}
