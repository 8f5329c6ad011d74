//! A positioned YAML tree built from the parser's events.
//!
//! Built by hand rather than with a loader so that every problem (duplicate keys, anchors,
//! aliases, tags, several documents) becomes a diagnostic next to the others instead of ending
//! the parse, and so that each node remembers which file it came from through an overlay.

use std::fmt;

use saphyr::Scalar;
use saphyr_parser::{Event, Parser, Span, StrInput};

/// Where a key or value starts: which source (index into the caller's file list), 1-based line
/// and column (columns count characters).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pos {
    pub source: usize,
    pub line: usize,
    pub column: usize,
}

/// A scalar as YAML 1.2's core schema reads it (`yes` and `no` stay strings).
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
}

impl Value {
    /// The YAML type name, for "expected X, found Y" messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Bool(_) => "boolean",
            Value::Int(_) => "integer",
            Value::Float(_) => "number",
            Value::Str(_) => "string",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub key: String,
    pub key_pos: Pos,
    pub value: Node,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Kind {
    /// Entries in file order.
    Map(Vec<Entry>),
    Seq(Vec<Node>),
    Scalar(Value),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub pos: Pos,
    pub kind: Kind,
}

impl Node {
    pub fn get(&self, key: &str) -> Option<&Node> {
        match &self.kind {
            Kind::Map(entries) => entries.iter().find(|e| e.key == key).map(|e| &e.value),
            _ => None,
        }
    }
}

/// One problem: where, which key path, what, and how to fix it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub pos: Pos,
    /// Dotted key path such as `primary.cage.network[2]`; empty for the whole file.
    pub path: String,
    pub problem: String,
    pub hint: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: ", self.pos.line, self.pos.column)?;
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        write!(f, "{}", self.problem)?;
        if !self.hint.is_empty() {
            write!(f, " (fix: {})", self.hint)?;
        }
        Ok(())
    }
}

/// `path.key`, or `key` at the root: the dotted key paths of diagnostics.
pub(crate) fn child(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// Deeper nesting than this is refused: a project file never needs it, and the tree builder
/// recurses once per level.
pub const MAX_DEPTH: usize = 64;

struct Builder<'a> {
    source: usize,
    events: Parser<'a, StrInput<'a>>,
    /// Characters on each line of the text, to keep positions inside it.
    widths: Vec<usize>,
    diagnostics: Vec<Diagnostic>,
}

impl<'a> Builder<'a> {
    fn pos(&self, span: Span) -> Pos {
        self.at(span.start.line(), span.start.col() + 1)
    }

    /// A position inside the text: the parser's markers can point one line past the end
    /// (e.g. a syntax error found at the end of input), which an editor cannot jump to.
    fn at(&self, line: usize, column: usize) -> Pos {
        let last = self.widths.len().max(1);
        let (line, column) = if line > last {
            (last, usize::MAX)
        } else {
            (line.max(1), column.max(1))
        };
        let width = self.widths.get(line - 1).copied().unwrap_or(0);
        Pos {
            source: self.source,
            line,
            column: column.min(width + 1),
        }
    }

    fn next(&mut self) -> Result<(Event<'a>, Span), Diagnostic> {
        match self.events.next() {
            Some(Ok(event)) => Ok(event),
            Some(Err(e)) => Err(Diagnostic {
                pos: self.at(e.marker().line(), e.marker().col() + 1),
                path: String::new(),
                problem: format!("YAML syntax error: {}", e.info()),
                hint: "fix the syntax at this position".into(),
            }),
            None => Err(Diagnostic {
                pos: Pos {
                    source: self.source,
                    line: 1,
                    column: 1,
                },
                path: String::new(),
                problem: "the YAML document ended unexpectedly".into(),
                hint: "check for an unterminated list or mapping".into(),
            }),
        }
    }

    fn refuse(&mut self, pos: Pos, path: &str, problem: &str, hint: &str) {
        self.diagnostics.push(Diagnostic {
            pos,
            path: path.to_string(),
            problem: problem.into(),
            hint: hint.into(),
        });
    }

    fn node(
        &mut self,
        event: Event<'a>,
        span: Span,
        path: &str,
        depth: usize,
    ) -> Result<Node, Diagnostic> {
        let pos = self.pos(span);
        if depth > MAX_DEPTH {
            return Err(Diagnostic {
                pos,
                path: path.to_string(),
                problem: format!("nested more than {MAX_DEPTH} levels deep"),
                hint: "a project file is a few levels deep; flatten this structure".into(),
            });
        }
        let kind = match event {
            Event::Scalar(text, style, anchor, tag) => {
                if anchor != 0 || tag.is_some() {
                    self.refuse(
                        pos,
                        path,
                        "anchors and tags are not allowed in project files",
                        "write the value out in full",
                    );
                }
                let value = match Scalar::parse_from_cow_and_metadata(text, style, tag.as_ref()) {
                    Some(Scalar::Null) | None => Value::Null,
                    Some(Scalar::Boolean(b)) => Value::Bool(b),
                    Some(Scalar::Integer(i)) => Value::Int(i),
                    Some(Scalar::FloatingPoint(f)) => Value::Float(f.into_inner()),
                    Some(Scalar::String(s)) => Value::Str(s.into_owned()),
                };
                Kind::Scalar(value)
            }
            Event::SequenceStart(anchor, _) => {
                if anchor != 0 {
                    self.refuse(
                        pos,
                        path,
                        "anchors are not allowed in project files",
                        "write the list out in full",
                    );
                }
                let mut items = Vec::new();
                loop {
                    match self.next()? {
                        (Event::SequenceEnd, _) => break,
                        (e, s) => {
                            let item_path = format!("{path}[{}]", items.len());
                            items.push(self.node(e, s, &item_path, depth + 1)?);
                        }
                    }
                }
                Kind::Seq(items)
            }
            Event::MappingStart(anchor, _) => {
                if anchor != 0 {
                    self.refuse(
                        pos,
                        path,
                        "anchors are not allowed in project files",
                        "write the mapping out in full",
                    );
                }
                let mut entries: Vec<Entry> = Vec::new();
                // Duplicate detection by set: a mapping with many keys stays linear.
                let mut seen = std::collections::HashSet::new();
                loop {
                    let (key_event, key_span) = match self.next()? {
                        (Event::MappingEnd, _) => break,
                        other => other,
                    };
                    let key_pos = self.pos(key_span);
                    let key = match &key_event {
                        Event::Scalar(text, _, anchor, tag) => {
                            if *anchor != 0 || tag.is_some() {
                                self.refuse(
                                    key_pos,
                                    path,
                                    "anchors and tags are not allowed in project files",
                                    "write the key plainly",
                                );
                            }
                            text.to_string()
                        }
                        _ => {
                            self.refuse(
                                key_pos,
                                path,
                                "keys must be plain strings",
                                "use a simple `name:` key",
                            );
                            // Consume the complex key so the stream stays in step.
                            self.node(key_event, key_span, path, depth + 1)?;
                            String::new()
                        }
                    };
                    let (value_event, value_span) = self.next()?;
                    let value_path = child(path, &key);
                    let value = self.node(value_event, value_span, &value_path, depth + 1)?;
                    if !seen.insert(key.clone())
                        && let Some(first) = entries.iter().find(|e| e.key == key)
                    {
                        let first_line = first.key_pos.line;
                        self.refuse(
                            key_pos,
                            &value_path,
                            &format!("duplicate key `{key}` (first at line {first_line})"),
                            "keep one of them",
                        );
                        continue;
                    }
                    entries.push(Entry {
                        key,
                        key_pos,
                        value,
                    });
                }
                Kind::Map(entries)
            }
            Event::Alias(_) => {
                self.refuse(
                    pos,
                    path,
                    "aliases are not allowed in project files",
                    "write the value out in full",
                );
                Kind::Scalar(Value::Null)
            }
            _ => {
                return Err(Diagnostic {
                    pos,
                    path: path.to_string(),
                    problem: "unexpected YAML structure".into(),
                    hint: "a project file is one YAML document".into(),
                });
            }
        };
        Ok(Node { pos, kind })
    }
}

/// Parse one YAML document of source `source`. A syntax error ends the parse (`Err`); every
/// other problem is returned next to the tree.
pub fn parse(source: usize, text: &str) -> Result<(Node, Vec<Diagnostic>), Diagnostic> {
    let mut b = Builder {
        source,
        events: Parser::new_from_str(text),
        widths: text.split('\n').map(|line| line.chars().count()).collect(),
        diagnostics: Vec::new(),
    };
    let empty = |pos| Node {
        pos,
        kind: Kind::Scalar(Value::Null),
    };
    loop {
        match b.next()? {
            (Event::StreamStart | Event::DocumentStart(_), _) => {}
            (Event::StreamEnd, span) => return Ok((empty(b.pos(span)), b.diagnostics)),
            (event, span) => {
                let root = b.node(event, span, "", 0)?;
                // DocumentEnd, then either StreamEnd or another document.
                loop {
                    match b.next()? {
                        (Event::DocumentEnd, _) => {}
                        (Event::StreamEnd, _) => return Ok((root, b.diagnostics)),
                        (_, span) => {
                            let pos = b.pos(span);
                            b.refuse(
                                pos,
                                "",
                                "a project file holds one YAML document",
                                "remove the second `---` document",
                            );
                            return Ok((root, b.diagnostics));
                        }
                    }
                }
            }
        }
    }
}

/// Overlay `over` onto `base`: mappings merge key by key, anything else replaces, and a `null`
/// removes the key. Top-level keys in `locked` may not change; each attempt is a diagnostic and
/// the base value stays.
pub fn merge(base: &mut Node, over: Node, locked: &[&str]) -> Vec<Diagnostic> {
    let mut diagnostics = Vec::new();
    merge_at(base, over, locked, "", &mut diagnostics);
    diagnostics
}

fn merge_at(base: &mut Node, over: Node, locked: &[&str], path: &str, out: &mut Vec<Diagnostic>) {
    let Kind::Map(overlay) = over.kind else {
        *base = over;
        return;
    };
    let Kind::Map(entries) = &mut base.kind else {
        *base = Node {
            pos: over.pos,
            kind: Kind::Map(overlay),
        };
        return;
    };
    for entry in overlay {
        let entry_path = child(path, &entry.key);
        if path.is_empty() && locked.contains(&entry.key.as_str()) {
            let same = entries
                .iter()
                .find(|e| e.key == entry.key)
                .is_some_and(|e| e.value.kind == entry.value.kind);
            if !same {
                out.push(Diagnostic {
                    pos: entry.key_pos,
                    path: entry_path,
                    problem: format!("`{}` cannot be changed by an overlay", entry.key),
                    hint: "remove it from the local file; it identifies the project".into(),
                });
            }
            continue;
        }
        let at = entries.iter().position(|e| e.key == entry.key);
        match (at, &entry.value.kind) {
            (Some(i), Kind::Scalar(Value::Null)) => {
                entries.remove(i);
            }
            (None, Kind::Scalar(Value::Null)) => {}
            (Some(i), _) => merge_at(&mut entries[i].value, entry.value, locked, &entry_path, out),
            (None, _) => {
                let mut entry = entry;
                strip_nulls(&mut entry.value);
                entries.push(entry);
            }
        }
    }
}

/// In a subtree an overlay adds wholesale, `null` still means "absent".
fn strip_nulls(node: &mut Node) {
    match &mut node.kind {
        Kind::Map(entries) => {
            entries.retain(|e| e.value.kind != Kind::Scalar(Value::Null));
            for e in entries {
                strip_nulls(&mut e.value);
            }
        }
        Kind::Seq(items) => items.iter_mut().for_each(strip_nulls),
        Kind::Scalar(_) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scalar(n: &Node) -> &Value {
        match &n.kind {
            Kind::Scalar(v) => v,
            other => panic!("not a scalar: {other:?}"),
        }
    }

    #[test]
    fn every_key_and_value_keeps_its_position_and_yaml_12_types() {
        let (root, diags) = parse(
            0,
            "project: demo\nprimary:\n  flags: [yes, no, 0x1F, 1.5, ~]\n",
        )
        .unwrap();
        assert!(diags.is_empty(), "{diags:?}");
        let Kind::Map(entries) = &root.kind else {
            panic!()
        };
        assert_eq!(
            (
                entries[1].key.as_str(),
                entries[1].key_pos.line,
                entries[1].key_pos.column
            ),
            ("primary", 2, 1)
        );
        let flags = root.get("primary").unwrap().get("flags").unwrap();
        let Kind::Seq(items) = &flags.kind else {
            panic!()
        };
        assert_eq!(
            scalar(&items[0]),
            &Value::Str("yes".into()),
            "YAML 1.2: yes is a string"
        );
        assert_eq!(scalar(&items[2]), &Value::Int(31));
        assert_eq!(scalar(&items[3]), &Value::Float(1.5));
        assert_eq!(scalar(&items[4]), &Value::Null);
        assert_eq!((items[1].pos.line, items[1].pos.column), (3, 16));
    }

    #[test]
    fn duplicates_anchors_aliases_and_tags_are_all_reported_together() {
        let text = "a: 1\nb: &x 2\nc: *x\nd: !!str 4\na: 5\n";
        let (_, diags) = parse(0, text).unwrap();
        let problems: Vec<(usize, &str)> = diags
            .iter()
            .map(|d| (d.pos.line, d.problem.as_str()))
            .collect();
        assert_eq!(problems.len(), 4, "{problems:?}");
        assert!(diags.iter().any(
            |d| d.problem.starts_with("duplicate key `a` (first at line 1)") && d.pos.line == 5
        ));
        assert!(
            diags
                .iter()
                .any(|d| d.problem.starts_with("aliases") && d.path == "c")
        );
        assert!(
            diags
                .iter()
                .filter(|d| d.problem.starts_with("anchors"))
                .count()
                == 2
        );
    }

    #[test]
    fn syntax_errors_name_line_and_column() {
        let e = parse(0, "a: [1,\nb: 2\n").unwrap_err();
        assert!(e.problem.starts_with("YAML syntax error"), "{e}");
        assert!(e.pos.line >= 1);
        let (root, _) = parse(0, "").unwrap();
        assert_eq!(root.kind, Kind::Scalar(Value::Null));
        let (_, diags) = parse(0, "a: 1\n---\nb: 2\n").unwrap();
        assert!(diags[0].problem.contains("one YAML document"));
    }

    #[test]
    fn positions_stay_inside_the_text() {
        // Found by the project_yaml fuzz target: the parser reported "%e" at line 2 of 1.
        for text in ["%e", "a: [1,\n", "a: 'x", "a: \"x\n"] {
            let e = parse(0, text).unwrap_err();
            let lines: Vec<&str> = text.split('\n').collect();
            assert!(
                e.pos.line >= 1 && e.pos.line <= lines.len(),
                "{text:?}: {e}"
            );
            let width = lines[e.pos.line - 1].chars().count();
            assert!(
                e.pos.column >= 1 && e.pos.column <= width + 1,
                "{text:?}: {e}"
            );
        }
        let e = parse(0, "%e").unwrap_err();
        assert_eq!((e.pos.line, e.pos.column), (1, 3), "{e}");
    }

    #[test]
    fn deep_nesting_and_alias_bombs_are_refused_quickly() {
        // Far too deep: the parser's own recursion limit stops it at once.
        let deep = format!("{}1{}", "[".repeat(100_000), "]".repeat(100_000));
        let err = parse(0, &deep).unwrap_err();
        assert!(err.problem.contains("recursion limit"), "{err}");
        // Deeper than a project file needs: ours does.
        let deep = format!(
            "{}1{}",
            "[".repeat(MAX_DEPTH + 5),
            "]".repeat(MAX_DEPTH + 5)
        );
        let err = parse(0, &deep).unwrap_err();
        assert!(err.problem.contains("nested more than"), "{err}");
        // Billion laughs: aliases are never expanded, each is a diagnostic.
        let mut bomb = String::from("a: &a [x, x, x, x, x, x, x, x, x]\n");
        for (i, name) in ["b", "c", "d", "e", "f", "g", "h", "i"].iter().enumerate() {
            let prev = ["a", "b", "c", "d", "e", "f", "g", "h"][i];
            bomb.push_str(&format!("{name}: &{name} [*{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}]\n"));
        }
        let (_, diags) = parse(0, &bomb).unwrap();
        assert!(diags.iter().any(|d| d.problem.starts_with("aliases")));
        assert!(diags.len() < 200);
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        // A deterministic sweep of awkward inputs (a fuzzer target can take over later).
        let mut seed: u64 = 0x9e3779b97f4a7c15;
        let alphabet = b"ab:- \n\t[]{}&*!|>'\"#?,%@`~0\\";
        for len in 0..400 {
            let mut text = Vec::with_capacity(len);
            for _ in 0..len {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                text.push(alphabet[(seed % alphabet.len() as u64) as usize]);
            }
            let text = String::from_utf8_lossy(&text);
            let _ = parse(0, &text);
        }
    }

    #[test]
    fn overlay_merges_objects_replaces_arrays_removes_nulls_and_locks_identity() {
        let (mut base, _) = parse(0, "version: 1\nproject: demo\nprimary:\n  cage:\n    network: [a, b]\n    keep: 1\n    drop: 2\n").unwrap();
        let (over, _) = parse(1, "project: other\nversion: 1\nprimary:\n  cage:\n    network: [z]\n    drop: ~\n    added: x\n").unwrap();
        let diags = merge(&mut base, over, &["version", "project"]);
        assert_eq!(diags.len(), 1, "{diags:?}");
        assert_eq!(
            (
                diags[0].path.as_str(),
                diags[0].pos.source,
                diags[0].pos.line
            ),
            ("project", 1, 1)
        );
        assert_eq!(
            scalar(base.get("project").unwrap()),
            &Value::Str("demo".into())
        );
        let cage = base.get("primary").unwrap().get("cage").unwrap();
        let Kind::Seq(net) = &cage.get("network").unwrap().kind else {
            panic!()
        };
        assert_eq!(net.len(), 1);
        assert_eq!(
            net[0].pos.source, 1,
            "replaced arrays come from the overlay file"
        );
        assert!(cage.get("drop").is_none());
        assert_eq!(scalar(cage.get("keep").unwrap()), &Value::Int(1));
        let added = cage.get("added").unwrap();
        assert_eq!((added.pos.source, added.pos.line), (1, 7));
    }
}
