//! Fuzz target for project files ([`check_project`]: the positioned YAML tree, the overlay
//! merge and validation). Starts from the seed corpus in `fuzz/corpus/project_yaml/` (the
//! shipped examples and known mistakes; a seed may hold an overlay after a `%%local%%` line)
//! and mutates it (see `kaged-fuzz`); proptest builds valid projects. Bounded by default; see
//! ARCHITECTURE.md (Testing) for longer runs.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

use std::path::PathBuf;

use kaged_dsl::{BASE, Diagnostic, LOCAL, MAX_DIAGNOSTICS, diagnostics_json, load_project};
use kaged_fuzz::{Target, fuzz, prop, try_fuzz};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;

const SPLIT: &str = "\n%%local%%\n";

const YAML_TOKENS: &[&str] = &[
    ":",
    ": ",
    "- ",
    "\n",
    "\n  ",
    "\n    ",
    "  ",
    "[",
    "]",
    "{",
    "}",
    ",",
    "#",
    "&a ",
    "*a",
    "!!str ",
    "!",
    "|",
    ">-",
    "'",
    "\"",
    "---\n",
    "...\n",
    "%YAML 1.2\n",
    "? ",
    "~",
    "null",
    "true",
    "yes",
    "0x1F",
    "1e3",
    ".inf",
    "-.nan",
    "\t",
    "\r\n",
    "\u{feff}",
    "version: 1\n",
    "project: demo\n",
    "primary:\n",
    "command: [claude]",
    "cage:",
    "network:",
    "allow:",
    "none",
    "host",
    "filesystem:",
    "path: project:/",
    "mode: rw",
    "limits:",
    "memory_mb: ",
    "tasks:\n",
    "terminals:\n",
    "subagents:\n",
    "model: ",
    "system_prompt: ",
    "config:/",
    "env:",
    "cwd: ",
    "timeout_secs: ",
    "9223372036854775808",
    "-1",
    "é",
    "\\u0000",
    SPLIT,
];

fn corpus() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/fuzz/corpus/project_yaml"
    ))
}

/// A 1-based line and column (in characters) that point into `text` or just past its end.
fn within(text: &str, line: usize, column: usize) -> Result<(), String> {
    let lines: Vec<&str> = text.split('\n').collect();
    let Some(at) = line.checked_sub(1).and_then(|i| lines.get(i)) else {
        return Err(format!("line {line} of a {}-line text", lines.len()));
    };
    let width = at.chars().count();
    if column == 0 || column > width + 1 {
        return Err(format!(
            "column {column} of line {line} ({width} characters)"
        ));
    }
    Ok(())
}

fn check_diagnostics(
    base: &str,
    local: Option<&str>,
    diagnostics: &[Diagnostic],
) -> Result<(), String> {
    if diagnostics.len() > MAX_DIAGNOSTICS + 1 {
        return Err(format!("{} diagnostics", diagnostics.len()));
    }
    let mut previous = (0, 0, 0);
    for d in diagnostics {
        let text = match (d.pos.source, local) {
            (BASE, _) => base,
            (LOCAL, Some(local)) => local,
            (source, _) => return Err(format!("{d}: source {source}")),
        };
        within(text, d.pos.line, d.pos.column).map_err(|e| format!("{d}: {e}"))?;
        let at = (d.pos.source, d.pos.line, d.pos.column);
        if at < previous {
            return Err(format!("{d} comes after {previous:?}"));
        }
        previous = at;
        if d.problem.is_empty() {
            return Err(format!("{d}: no problem stated"));
        }
    }
    let json = diagnostics_json(diagnostics, &["project.yaml", "project.local.yaml"]);
    if json.as_array().map(Vec::len) != Some(diagnostics.len()) {
        return Err(format!("diagnostics JSON {json}"));
    }
    Ok(())
}

fn check_project_text(base: &str, local: Option<&str>) -> Result<String, String> {
    let checked = load_project(base, local);
    check_diagnostics(base, local, &checked.diagnostics)?;
    let Some(resolved) = checked.resolved() else {
        let first = checked.diagnostics.first().map_or(String::new(), |d| {
            d.problem
                .split_whitespace()
                .take_while(|w| w.chars().all(|c| c.is_ascii_alphabetic()))
                .take(4)
                .collect::<Vec<_>>()
                .join(" ")
        });
        let count = checked.diagnostics.len().min(4);
        return Ok(format!("invalid {} {count} {first}", local.is_some()));
    };
    // A valid project's resolved form (JSON is YAML) is itself a valid project that resolves
    // the same: what `kaged dsl` shows can be saved and used.
    let text = serde_json::to_string_pretty(&resolved).unwrap();
    let again = load_project(&text, None);
    if again.resolved().as_ref() != Some(&resolved) {
        return Err(format!(
            "resolved {text} reads back as {:?} with {:?}",
            again.resolved(),
            again.diagnostics
        ));
    }
    if checked.slug().is_none() {
        return Err("a valid project without a slug".into());
    }
    // Every valid project has a typed model, which carries all of it.
    match checked.project() {
        Some(Ok(project)) if serde_json::to_value(&project).ok().as_ref() == Some(&resolved) => {}
        other => return Err(format!("resolved {text} has the model {other:?}")),
    }
    Ok(format!("valid {}", local.is_some()))
}

fn check(input: &[u8]) -> Result<String, String> {
    let text = String::from_utf8_lossy(input);
    match text.split_once(SPLIT) {
        Some((base, local)) => check_project_text(base, Some(local)),
        None => check_project_text(&text, None),
    }
}

#[test]
fn fuzz_project_yaml() {
    let report = fuzz(
        &Target {
            name: "project_yaml",
            corpus: corpus(),
            dictionary: YAML_TOKENS,
            iterations: 8_000,
            max_len: 8192,
        },
        check,
    );
    assert!(report.behaviours >= 10, "{report:?}");
}

/// The check can fail: a position past the end of its line, or out of order, is caught.
#[test]
fn the_fuzz_check_catches_broken_positions() {
    let base = "version: 1\nproject: demo\nprimary:\n  command: [claude]\n  bogus: 1\n";
    let mut diagnostics = load_project(base, None).diagnostics;
    assert_eq!(diagnostics.len(), 1, "{diagnostics:?}");
    assert!(check_diagnostics(base, None, &diagnostics).is_ok());
    diagnostics[0].pos.column = 99;
    assert!(check_diagnostics(base, None, &diagnostics).is_err());
    diagnostics[0].pos.column = 3;
    diagnostics[0].pos.source = LOCAL;
    assert!(check_diagnostics(base, None, &diagnostics).is_err());
    // And the harness finds a planted off-by-one in the lines from the seeds.
    let target = Target {
        name: "project_yaml",
        corpus: corpus(),
        dictionary: YAML_TOKENS,
        iterations: 8_000,
        max_len: 8192,
    };
    let found = try_fuzz(&target, |input| {
        let text = String::from_utf8_lossy(input);
        let mut diagnostics = load_project(&text, None).diagnostics;
        for d in &mut diagnostics {
            d.pos.line += 1;
        }
        check_diagnostics(&text, None, &diagnostics).map(|()| String::new())
    });
    assert!(found.is_err(), "an off-by-one line went unnoticed");
}

fn word() -> impl Strategy<Value = String> {
    "[a-z][a-z0-9-]{0,10}[a-z0-9]"
}

/// A valid project built from parts, written as block YAML with quoted strings.
fn project() -> impl Strategy<Value = String> {
    (
        word(),
        any::<String>(),
        prop::collection::vec("[a-z-][a-z0-9._=-]{0,10}", 1..4),
        prop::collection::btree_map(
            word(),
            prop::collection::vec("[a-z-][a-z0-9._=-]{0,10}", 1..3),
            0..3,
        ),
        prop_oneof![Just("none"), Just("host")],
        16u64..=1_048_576,
    )
        .prop_map(|(slug, description, command, tasks, network, memory)| {
            let q = |s: &str| serde_json::to_string(s).unwrap();
            let list = |items: &[String]| {
                let items: Vec<String> = items.iter().map(|s| q(s)).collect();
                format!("[{}]", items.join(", "))
            };
            let mut text = format!(
                "version: 1\nproject: {slug}\ndescription: {}\nprimary:\n  command: {}\n  cage:\n    network: {network}\n    limits:\n      memory_mb: {memory}\n",
                q(&description),
                list(&command)
            );
            if !tasks.is_empty() {
                text.push_str("tasks:\n");
                for (name, command) in &tasks {
                    text.push_str(&format!("  {name}:\n    command: {}\n", list(command)));
                }
            }
            text
        })
}

#[test]
fn proptest_valid_projects_stay_valid_through_their_resolved_form() {
    prop("project_yaml_structured", 192, &project(), |text| {
        let checked = load_project(&text, None);
        prop_assert!(checked.is_valid(), "{text}\n{:?}", checked.diagnostics);
        check_project_text(&text, None).map_err(TestCaseError::fail)?;
        Ok(())
    });
}
