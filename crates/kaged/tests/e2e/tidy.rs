//! Layout rules of the repository, checked on its files (in the style of rust-analyzer's tidy
//! tests): every Rust module outside tests and benches opens with a `//!` line saying what it is
//! for, and no source file outside them is longer than `MAX_LINES`.

use std::path::{Path, PathBuf};

/// Longer files are split by concern (see ARCHITECTURE.md). Unit-test modules in their own
/// files are exempt.
const MAX_LINES: usize = 800;

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Source files (`.rs`, `.js`) below `crates/`, as paths relative to the workspace root, except
/// under `tests/`, `benches/`, fuzz corpora and build output.
fn source_files() -> Vec<String> {
    let root = workspace_root();
    let mut found = Vec::new();
    let mut pending = vec![root.join("crates")];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let entry = entry.unwrap();
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            if entry.file_type().unwrap().is_dir() {
                let skipped = ["tests", "benches", "corpus", "target", "node_modules"];
                if !skipped.contains(&name.as_str()) && !name.starts_with('.') {
                    pending.push(path);
                }
            } else if name.ends_with(".rs") || name.ends_with(".js") {
                let relative = path.strip_prefix(&root).unwrap();
                found.push(relative.to_string_lossy().into_owned());
            }
        }
    }
    found.sort();
    found
}

#[test]
fn every_module_opens_with_a_doc_line() {
    let root = workspace_root();
    let undocumented: Vec<(String, String)> = source_files()
        .into_iter()
        .filter(|f| f.ends_with(".rs"))
        .filter(|f| {
            !std::fs::read_to_string(root.join(f))
                .unwrap()
                .starts_with("//!")
        })
        .map(|f| {
            (
                f,
                "does not open with a `//!` line saying what it is for".to_string(),
            )
        })
        .collect();
    let problems: Vec<String> = undocumented
        .iter()
        .map(|(f, what)| format!("{f}: {what}"))
        .collect();
    assert!(problems.is_empty(), "\n{}\n", problems.join("\n"));
}

#[test]
fn no_source_file_is_longer_than_the_limit() {
    let root = workspace_root();
    let too_long: Vec<(String, String)> = source_files()
        .into_iter()
        // A unit-test module in its own file (`tests.rs`, `*_tests.rs`) is test code.
        .filter(|f| !f.ends_with("/tests.rs") && !f.ends_with("_tests.rs"))
        .filter_map(|f| {
            let lines = std::fs::read_to_string(root.join(&f))
                .unwrap()
                .lines()
                .count();
            let what = format!("{lines} lines, over {MAX_LINES}: split it by concern");
            (lines > MAX_LINES).then_some((f, what))
        })
        .collect();
    let problems: Vec<String> = too_long
        .iter()
        .map(|(f, what)| format!("{f}: {what}"))
        .collect();
    assert!(problems.is_empty(), "\n{}\n", problems.join("\n"));
}
