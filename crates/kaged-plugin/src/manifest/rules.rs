//! The manifest's own rules, beyond what kaged-dsl's schema walk checks: names, versions, the
//! API version, SPDX expressions, URLs, argv, environment, capabilities, JSON Schema objects,
//! and duplicates across entries. Each reports at the node's line:column with a fix.

use kaged_dsl::{Diagnostic, Kind, Node, Value};

use super::{MAX_ENV, MAX_NAME, SUPPORTED_API};
use crate::capability;

fn diagnostic(
    node: &Node,
    path: &str,
    problem: impl Into<String>,
    hint: impl Into<String>,
) -> Diagnostic {
    Diagnostic {
        pos: node.pos,
        path: path.to_string(),
        problem: problem.into(),
        hint: hint.into(),
    }
}

fn kind_name(node: &Node) -> &'static str {
    match &node.kind {
        Kind::Map(_) => "mapping",
        Kind::Seq(_) => "list",
        Kind::Scalar(v) => v.type_name(),
    }
}

fn wrong_type(node: &Node, path: &str, expected: &str) -> Diagnostic {
    diagnostic(
        node,
        path,
        format!("expected {expected}, found {}", kind_name(node)),
        format!("write {expected} here"),
    )
}

/// A string node's text, or the diagnostic saying it is not one.
fn text<'a>(node: &'a Node, path: &str) -> Result<&'a str, Diagnostic> {
    match &node.kind {
        Kind::Scalar(Value::Str(s)) => Ok(s),
        _ => Err(wrong_type(node, path, "a string")),
    }
}

/// `^[a-z]` then `rest` characters, at most [`MAX_NAME`] long.
fn is_name(s: &str, rest: impl Fn(char) -> bool) -> bool {
    let mut chars = s.chars();
    s.len() <= MAX_NAME && chars.next().is_some_and(|c| c.is_ascii_lowercase()) && chars.all(rest)
}

/// Whether `s` can name a plugin: `^[a-z][a-z0-9-]*$`, at most 64 characters (it is also
/// the plugin's directory, so it never holds a path separator or `..`).
pub fn is_plugin_name(s: &str) -> bool {
    is_name(s, |c| {
        c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'
    })
}

fn is_tool_name(s: &str) -> bool {
    is_name(s, |c| {
        c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '.' | '-')
    })
}

fn is_env_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_uppercase() || c == '_')
        && chars.all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
}

fn is_method_name(s: &str) -> bool {
    let mut chars = s.chars();
    s.len() <= 128
        && chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '/' | '-'))
}

/// One string rule: `check` says what is wrong and how to fix it.
fn string_rule(
    node: &Node,
    path: &str,
    check: impl Fn(&str) -> Option<(String, String)>,
) -> Vec<Diagnostic> {
    match text(node, path) {
        Ok(s) => check(s)
            .map(|(problem, hint)| diagnostic(node, path, problem, hint))
            .into_iter()
            .collect(),
        Err(d) => vec![d],
    }
}

/// A credential in a manifest, which is shared with the plugin: the operator's secrets go in
/// the plugin's system settings instead.
fn secret(node: &Node, path: &str) -> Diagnostic {
    diagnostic(
        node,
        path,
        "this looks like a credential; secrets never go in a plugin manifest",
        "declare it in system_config_schema; the operator sets it in local.toml [plugins.\"NAME\"]",
    )
}

pub(super) fn check_plugin_name(node: &Node, path: &str) -> Vec<Diagnostic> {
    string_rule(node, path, |s| {
        (!is_plugin_name(s)).then(|| {
            (
                format!("{s:?} is not a plugin name"),
                format!("use lowercase letters, digits and '-', starting with a letter, at most {MAX_NAME} characters"),
            )
        })
    })
}

pub(super) fn check_tool_name(node: &Node, path: &str) -> Vec<Diagnostic> {
    string_rule(node, path, |s| {
        (!is_tool_name(s)).then(|| {
            (
                format!("{s:?} is not a tool name"),
                format!("use lowercase letters, digits, '_', '.' and '-', starting with a letter, at most {MAX_NAME} characters"),
            )
        })
    })
}

pub(super) fn check_method_name(node: &Node, path: &str) -> Vec<Diagnostic> {
    string_rule(node, path, |s| {
        (!is_method_name(s)).then(|| {
            (
                format!("{s:?} is not a method name"),
                "use letters, digits, '_', '.', '/' and '-', starting with a letter, e.g. memory/search".into(),
            )
        })
    })
}

pub(super) fn check_version(node: &Node, path: &str) -> Vec<Diagnostic> {
    if let Kind::Scalar(Value::Int(_) | Value::Float(_)) = node.kind {
        return vec![diagnostic(
            node,
            path,
            "a version is a string such as \"1.2.0\"",
            "quote it and give all three numbers: \"MAJOR.MINOR.PATCH\"",
        )];
    }
    string_rule(node, path, |s| {
        semver::Version::parse(s).err().map(|e| {
            (
                format!("{s:?} is not a semantic version: {e}"),
                "write MAJOR.MINOR.PATCH, e.g. \"1.2.0\" or \"0.3.0-beta.1\"".into(),
            )
        })
    })
}

pub(super) fn check_api(node: &Node, path: &str) -> Vec<Diagnostic> {
    match node.kind {
        Kind::Scalar(Value::Int(SUPPORTED_API)) => Vec::new(),
        Kind::Scalar(Value::Int(other)) => vec![diagnostic(
            node,
            path,
            format!(
                "the plugin targets kaged API {other}; this kaged supports API {SUPPORTED_API}"
            ),
            format!(
                "use a build of the plugin for kaged API {SUPPORTED_API}, or a kaged that supports API {other}"
            ),
        )],
        _ => vec![wrong_type(node, path, "a whole number")],
    }
}

/// A light SPDX expression check: license identifiers (`MIT`, `Apache-2.0`, `GPL-2.0+`,
/// `LicenseRef-x`) joined by `AND`, `OR` and `WITH`, with parentheses.
fn spdx_problem(s: &str) -> Option<String> {
    let spaced = s.replace('(', " ( ").replace(')', " ) ");
    let tokens: Vec<&str> = spaced.split_whitespace().collect();
    if tokens.is_empty() {
        return Some("the license is empty".into());
    }
    let is_id = |t: &str| {
        t.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '+' | ':'))
            && !matches!(t, "AND" | "OR" | "WITH")
            && !t.eq_ignore_ascii_case("and")
            && !t.eq_ignore_ascii_case("or")
            && !t.eq_ignore_ascii_case("with")
    };
    let mut depth = 0usize;
    // Whether the next token must be an operand (an identifier or `(`).
    let mut want_operand = true;
    let mut after_with = false;
    for t in tokens {
        if want_operand {
            match t {
                "(" if !after_with => depth += 1,
                t if is_id(t) => {
                    want_operand = false;
                    after_with = false;
                }
                t if ["and", "or", "with"].contains(&t.to_ascii_lowercase().as_str())
                    && !matches!(t, "AND" | "OR" | "WITH") =>
                {
                    return Some(format!("the operator `{t}` is written in upper case"));
                }
                t => return Some(format!("`{t}` is not a license identifier")),
            }
        } else {
            match t {
                ")" if depth > 0 => depth -= 1,
                "AND" | "OR" => want_operand = true,
                "WITH" => {
                    want_operand = true;
                    after_with = true;
                }
                ")" => return Some("a `)` has no matching `(`".into()),
                t if ["and", "or", "with"].contains(&t.to_ascii_lowercase().as_str()) => {
                    return Some(format!("the operator `{t}` is written in upper case"));
                }
                t => {
                    return Some(format!(
                        "`{t}` follows a license without AND, OR or WITH between them"
                    ));
                }
            }
        }
    }
    if want_operand {
        Some("the expression ends with an operator".into())
    } else if depth > 0 {
        Some("a `(` is not closed".into())
    } else {
        None
    }
}

pub(super) fn check_license(node: &Node, path: &str) -> Vec<Diagnostic> {
    string_rule(node, path, |s| {
        spdx_problem(s).map(|problem| {
            (
                format!("{s:?} is not an SPDX license expression: {problem}"),
                "write an SPDX expression such as \"MIT\" or \"Apache-2.0 OR MIT\"".into(),
            )
        })
    })
}

pub(super) fn check_homepage(node: &Node, path: &str) -> Vec<Diagnostic> {
    string_rule(node, path, |s| {
        let hint = "write an http or https URL such as \"https://example.org/plugin\"".to_string();
        match url::Url::parse(s) {
            Ok(u) if !matches!(u.scheme(), "http" | "https") => Some((
                format!("{s:?} is a {} URL, not http or https", u.scheme()),
                hint,
            )),
            Ok(_) => None,
            Err(e) => Some((format!("{s:?} is not a URL: {e}"), hint)),
        }
    })
}

pub(super) fn check_command(node: &Node, path: &str) -> Vec<Diagnostic> {
    let items = match &node.kind {
        Kind::Seq(items) => items,
        Kind::Scalar(Value::Str(s)) => {
            let split: Vec<String> = s.split_whitespace().map(|w| format!("{w:?}")).collect();
            return vec![diagnostic(
                node,
                path,
                "commands are argv lists, never shell strings",
                format!("write [{}]", split.join(", ")),
            )];
        }
        _ => {
            return vec![wrong_type(
                node,
                path,
                "an argv list such as [\"python3\", \"plugin.py\"]",
            )];
        }
    };
    if items.is_empty() {
        return vec![diagnostic(
            node,
            path,
            "the command is empty",
            "name at least the program, e.g. [\"python3\", \"plugin.py\"]",
        )];
    }
    let mut out = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let item_path = format!("{path}[{i}]");
        match text(item, &item_path) {
            Ok(arg) if kaged_dsl::looks_like_secret(arg) => out.push(secret(item, &item_path)),
            Ok("") if i == 0 => out.push(diagnostic(
                item,
                &item_path,
                "the program is empty",
                "name the program, e.g. \"python3\" or \"./plugin\"",
            )),
            Ok(_) => {}
            Err(d) => out.push(d),
        }
    }
    out
}

pub(super) fn check_env(node: &Node, path: &str) -> Vec<Diagnostic> {
    let Kind::Map(entries) = &node.kind else {
        return vec![wrong_type(node, path, "a mapping of NAME: value")];
    };
    let mut out = Vec::new();
    if entries.len() > MAX_ENV {
        out.push(diagnostic(
            node,
            path,
            format!("more than {MAX_ENV} variables"),
            "remove some",
        ));
    }
    for e in entries {
        let entry_path = format!("{path}.{}", e.key);
        if !is_env_name(&e.key) {
            out.push(Diagnostic {
                pos: e.key_pos,
                path: entry_path.clone(),
                problem: format!("`{}` is not an environment variable name", e.key),
                hint: "use upper-case letters, digits and '_', not starting with a digit".into(),
            });
        }
        match &e.value.kind {
            Kind::Scalar(Value::Str(value)) if kaged_dsl::looks_like_secret(value) => {
                out.push(secret(&e.value, &entry_path));
            }
            Kind::Scalar(Value::Str(_)) => {}
            Kind::Scalar(Value::Int(_) | Value::Float(_) | Value::Bool(_)) => out.push(diagnostic(
                &e.value,
                &entry_path,
                format!("expected a string, found {}", kind_name(&e.value)),
                "quote the value",
            )),
            _ => out.push(wrong_type(&e.value, &entry_path, "a string")),
        }
    }
    out
}

pub(super) fn check_capabilities(node: &Node, path: &str) -> Vec<Diagnostic> {
    let Kind::Seq(items) = &node.kind else {
        return vec![wrong_type(
            node,
            path,
            "a list of capabilities (net:[] for none)",
        )];
    };
    let mut out = Vec::new();
    let mut texts = Vec::new();
    let mut nodes = Vec::new();
    for (i, item) in items.iter().enumerate() {
        match text(item, &format!("{path}[{i}]")) {
            Ok(s) => {
                texts.push(s);
                nodes.push((i, item));
            }
            Err(d) => out.push(d),
        }
    }
    if let Err(errors) = capability::parse_all(&texts) {
        for (k, e) in errors {
            if let Some((i, item)) = nodes.get(k) {
                out.push(diagnostic(
                    item,
                    &format!("{path}[{i}]"),
                    e.to_string(),
                    e.hint,
                ));
            }
        }
    }
    out
}

/// A JSON Schema for an object (tool arguments, settings): a mapping whose `type`, if given,
/// is `object`.
pub(super) fn check_object_schema(node: &Node, path: &str) -> Vec<Diagnostic> {
    if !matches!(node.kind, Kind::Map(_)) {
        return vec![wrong_type(
            node,
            path,
            "a JSON Schema (a mapping such as {type: object})",
        )];
    }
    match node.get("type") {
        None => {}
        Some(t) if t.kind == Kind::Scalar(Value::Str("object".into())) => {}
        Some(t) => {
            return vec![diagnostic(
                t,
                &format!("{path}.type"),
                "this schema must describe a JSON object",
                "write `type: object` and describe the keys under `properties`",
            )];
        }
    }
    match crate::settings::schema_problem(&kaged_dsl::to_json(node)) {
        None => Vec::new(),
        Some(why) => vec![diagnostic(
            node,
            path,
            format!("this is not a JSON Schema kaged can use: {why}"),
            "write a self-contained JSON Schema (draft 2020-12; no references to other documents)",
        )],
    }
}

/// Problems across entries: a tool name or a hook given twice.
pub(super) fn duplicates(root: &Node) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    let mut seen: Vec<(&str, usize)> = Vec::new();
    if let Some(Kind::Seq(tools)) = root.get("tools").map(|t| &t.kind) {
        for (i, tool) in tools.iter().enumerate() {
            let Some(name_node) = tool.get("name") else {
                continue;
            };
            let Kind::Scalar(Value::Str(name)) = &name_node.kind else {
                continue;
            };
            match seen.iter().find(|(n, _)| n == name) {
                Some((_, line)) => out.push(diagnostic(
                    name_node,
                    &format!("tools[{i}].name"),
                    format!("the tool `{name}` is already defined (line {line})"),
                    "give each tool its own name",
                )),
                None => seen.push((name, name_node.pos.line)),
            }
        }
    }
    if let Some(Kind::Seq(hooks)) = root.get("hooks").map(|h| &h.kind) {
        for (i, hook) in hooks.iter().enumerate() {
            if hooks[..i].iter().any(|h| h.kind == hook.kind) {
                out.push(diagnostic(
                    hook,
                    &format!("hooks[{i}]"),
                    "this hook is listed twice",
                    "keep one",
                ));
            }
        }
    }
    out
}
