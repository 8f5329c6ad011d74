//! A project as files: `project.yaml`, optionally overlaid by `project.local.yaml`.

use crate::model::{ModelError, Project};
use crate::tree::{Diagnostic, Kind, Node, Value, merge, parse};
use crate::validate::validate;

/// Source index of `.kaged/project.yaml` in diagnostics.
pub const BASE: usize = 0;
/// Source index of `.kaged/project.local.yaml`.
pub const LOCAL: usize = 1;
/// At most this many diagnostics are kept; the rest are counted in a last one.
pub const MAX_DIAGNOSTICS: usize = 200;

/// Keys an overlay may not change: they identify the project.
pub const LOCKED_KEYS: &[&str] = &["version", "project"];

/// A project after parsing, overlay and validation.
#[derive(Debug, Clone)]
pub struct Checked {
    /// The merged tree, when both files parsed.
    pub tree: Option<Node>,
    /// Every problem, in file order; empty when valid.
    pub diagnostics: Vec<Diagnostic>,
}

impl Checked {
    pub fn is_valid(&self) -> bool {
        self.diagnostics.is_empty() && self.tree.is_some()
    }

    /// The resolved configuration as JSON (only meaningful when valid).
    pub fn resolved(&self) -> Option<serde_json::Value> {
        self.tree
            .as_ref()
            .filter(|_| self.diagnostics.is_empty())
            .map(to_json)
    }

    /// The typed model of the resolved configuration (only when valid). An error would mean the
    /// model and the schema disagree: a bug, which the tests look for.
    pub fn project(&self) -> Option<Result<Project, ModelError>> {
        self.resolved()
            .map(|config| Project::from_resolved(&config))
    }

    /// The project slug, when the tree has one.
    pub fn slug(&self) -> Option<String> {
        match self.tree.as_ref()?.get("project")?.kind {
            Kind::Scalar(Value::Str(ref s)) => Some(s.clone()),
            _ => None,
        }
    }
}

/// Project files (and plugin manifests) are UTF-8 without a byte-order mark, with LF line
/// endings: each breach is added to `out`, at source `source`.
pub fn encoding_rules(source: usize, text: &str, out: &mut Vec<Diagnostic>) {
    let at = |line| crate::tree::Pos {
        source,
        line,
        column: 1,
    };
    if text.starts_with('\u{feff}') {
        out.push(Diagnostic {
            pos: at(1),
            path: String::new(),
            problem: "the file starts with a byte-order mark".into(),
            hint: "save it as UTF-8 without BOM".into(),
        });
    }
    if let Some(i) = text.find("\r\n") {
        out.push(Diagnostic {
            pos: at(text[..i].matches('\n').count() + 1),
            path: String::new(),
            problem: "the file uses CRLF line endings".into(),
            hint: "save it with LF line endings".into(),
        });
    }
}

/// A tree as plain JSON (positions dropped).
pub fn to_json(node: &Node) -> serde_json::Value {
    use serde_json::Value as J;
    match &node.kind {
        Kind::Map(entries) => J::Object(
            entries
                .iter()
                .map(|e| (e.key.clone(), to_json(&e.value)))
                .collect(),
        ),
        Kind::Seq(items) => J::Array(items.iter().map(to_json).collect()),
        Kind::Scalar(Value::Null) => J::Null,
        Kind::Scalar(Value::Bool(b)) => J::Bool(*b),
        Kind::Scalar(Value::Int(i)) => J::from(*i),
        Kind::Scalar(Value::Float(f)) => {
            serde_json::Number::from_f64(*f).map_or(J::Null, J::Number)
        }
        Kind::Scalar(Value::Str(s)) => J::String(s.clone()),
    }
}

/// Parse, overlay and validate. Every problem in both files, in file order; empty when valid.
pub fn check_project(base: &str, local: Option<&str>) -> Vec<Diagnostic> {
    load_project(base, local).diagnostics
}

/// Parse, overlay and validate, keeping the merged tree.
pub fn load_project(base: &str, local: Option<&str>) -> Checked {
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
    let tree = base_tree.map(|mut tree| {
        if let Some(over) = local_tree {
            let base = tree.clone();
            out.extend(merge(&mut tree, over.clone(), LOCKED_KEYS));
            out.extend(crate::tighten::loosened(&base, &over, &tree));
        }
        out.extend(validate(&tree));
        tree
    });
    for (source, text) in [(BASE, Some(base)), (LOCAL, local)] {
        if let Some(text) = text {
            encoding_rules(source, text, &mut out);
        }
    }
    Checked {
        tree,
        diagnostics: finish_diagnostics(out),
    }
}

/// Diagnostics as shown: in file order, duplicates dropped, at most [`MAX_DIAGNOSTICS`] (the
/// rest counted in a last one).
pub fn finish_diagnostics(mut out: Vec<Diagnostic>) -> Vec<Diagnostic> {
    out.sort_by_key(|d| (d.pos.source, d.pos.line, d.pos.column));
    out.dedup();
    if out.len() > MAX_DIAGNOSTICS {
        let more = out.len() - MAX_DIAGNOSTICS;
        out.truncate(MAX_DIAGNOSTICS);
        let pos = out[MAX_DIAGNOSTICS - 1].pos;
        out.push(Diagnostic {
            pos,
            path: String::new(),
            problem: format!("{more} more problems not shown"),
            hint: "fix the ones above first".into(),
        });
    }
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
