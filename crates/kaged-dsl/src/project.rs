//! A project as files: `project.yaml`, optionally overlaid by `project.local.yaml`.

use crate::tree::{Diagnostic, merge, parse};
use crate::validate::validate;

/// Source index of `.kaged/project.yaml` in diagnostics.
pub const BASE: usize = 0;
/// Source index of `.kaged/project.local.yaml`.
pub const LOCAL: usize = 1;
/// Keys an overlay may not change: they identify the project.
pub const LOCKED_KEYS: &[&str] = &["version", "project"];

/// Parse, overlay and validate. Every problem in both files, in file order; empty when valid.
pub fn check_project(base: &str, local: Option<&str>) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    let base_tree = match parse(BASE, base) {
        Ok((tree, diags)) => {
            out.extend(diags);
            Some(tree)
        }
        Err(d) => {
            out.push(d);
            None
        }
    };
    let local_tree = match local.map(|text| parse(LOCAL, text)) {
        Some(Ok((tree, diags))) => {
            out.extend(diags);
            Some(tree)
        }
        Some(Err(d)) => {
            out.push(d);
            None
        }
        None => None,
    };
    if let Some(mut tree) = base_tree {
        if let Some(over) = local_tree {
            out.extend(merge(&mut tree, over, LOCKED_KEYS));
        }
        out.extend(validate(&tree));
    }
    out.sort_by_key(|d| (d.pos.source, d.pos.line, d.pos.column));
    out.dedup();
    out
}

/// Diagnostics as JSON, one object each, with the file they point into: the shape shared by
/// `kaged dsl validate --format json` and the API's `dsl_invalid` details.
pub fn diagnostics_json(diagnostics: &[Diagnostic], files: &[&str]) -> serde_json::Value {
    serde_json::Value::Array(
        diagnostics
            .iter()
            .map(|d| {
                serde_json::json!({
                    "file": files.get(d.pos.source).copied().unwrap_or("?"),
                    "line": d.pos.line,
                    "column": d.pos.column,
                    "path": d.path,
                    "problem": d.problem,
                    "hint": d.hint,
                })
            })
            .collect(),
    )
}
