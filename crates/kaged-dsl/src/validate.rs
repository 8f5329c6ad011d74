//! Validation of a (merged) project tree against [`crate::schema`]: every problem at once, each
//! with its position, key path, what was expected and how to fix it. Portability rules (ADR-0011)
//! live here too: nothing operator-local may appear in a project file.

use crate::schema::{AGENT, Object, PROJECT, Text, Ty};
use crate::tree::{Diagnostic, Kind, Node, Pos, Value, child};

struct Validator {
    out: Vec<Diagnostic>,
    /// Agent names defined (`primary` and every subagent), with where.
    agents: Vec<(String, Pos)>,
    /// References to agents: (name, where, key path).
    references: Vec<(String, Pos, String)>,
}

fn kind_name(node: &Node) -> &'static str {
    match &node.kind {
        Kind::Map(_) => "mapping",
        Kind::Seq(_) => "list",
        Kind::Scalar(v) => v.type_name(),
    }
}

/// Key names that only ever hold secrets: they belong in the operator's local.toml.
const SECRET_KEYS: &[&str] = &[
    "api_key",
    "apikey",
    "token",
    "password",
    "secret",
    "client_secret",
];

/// Whether a value carries a well-known credential format (looked for in every word of it), which
/// never belongs in a file that is committed or shared.
pub fn looks_like_secret(s: &str) -> bool {
    s.split(|c: char| c.is_whitespace() || matches!(c, ':' | '=' | ',' | ';' | '"' | '\''))
        .any(|t| {
            [
                "sk-",
                "ghp_",
                "gho_",
                "ghs_",
                "github_pat_",
                "xoxb-",
                "xoxp-",
                "glpat-",
            ]
            .iter()
            .any(|p| t.starts_with(p) && t.len() >= 12)
                || (t.len() == 20
                    && t.starts_with("AKIA")
                    && t.chars()
                        .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit()))
        })
        || s.contains("-----BEGIN")
}

/// Host locations that only mean something on one operator's machine.
fn operator_local_path(s: &str) -> bool {
    let value = s.rsplit_once('=').map_or(s, |(_, v)| v);
    value.starts_with('~')
        || [
            "/home/", "/Users/", "/root/", "/srv/", "/mnt/", "/media/", "/opt/",
        ]
        .iter()
        .any(|p| value.starts_with(p))
}

/// A dated or versioned provider model name (`claude-3-5-sonnet-20241022`), not an alias.
fn dated_model_id(s: &str) -> bool {
    s.rsplit('-')
        .next()
        .is_some_and(|last| last.len() == 8 && last.chars().all(|c| c.is_ascii_digit()))
}

fn is_name(s: &str) -> bool {
    let mut chars = s.chars();
    s.len() <= 64
        && chars
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
}

fn is_tool_name(s: &str) -> bool {
    let mut chars = s.chars();
    s.len() <= 64
        && chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '-' | '_'))
}

fn is_slug(s: &str) -> bool {
    let b = s.as_bytes();
    (2..=64).contains(&b.len())
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

fn is_host_pattern(s: &str) -> bool {
    let (host, port) = match s.rsplit_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (s, None),
    };
    let port_ok = port.is_none_or(|p| p.parse::<u16>().is_ok_and(|p| p > 0));
    let host = host.strip_prefix("*.").unwrap_or(host);
    let labels_ok = !host.is_empty()
        && host.split('.').all(|l| {
            !l.is_empty()
                && l.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        });
    port_ok && labels_ok
}

impl Validator {
    fn report(
        &mut self,
        pos: Pos,
        path: &str,
        problem: impl Into<String>,
        hint: impl Into<String>,
    ) {
        self.out.push(Diagnostic {
            pos,
            path: path.to_string(),
            problem: problem.into(),
            hint: hint.into(),
        });
    }

    fn wrong_type(&mut self, node: &Node, path: &str, expected: &str) {
        let found = kind_name(node);
        self.report(
            node.pos,
            path,
            format!("expected {expected}, found {found}"),
            format!("write {expected} here"),
        );
    }

    fn check(&mut self, node: &Node, ty: &Ty, path: &str) {
        if let Kind::Scalar(Value::Str(s)) = &node.kind
            && looks_like_secret(s)
        {
            self.report(
                node.pos,
                path,
                "this looks like a credential; secrets never go in a project file",
                "put it in the operator's local.toml (providers.NAME.api_key_env names an environment variable)",
            );
            return;
        }
        match ty {
            Ty::Str(text) => match &node.kind {
                Kind::Scalar(Value::Str(s)) => self.check_text(*text, s, node.pos, path),
                _ => self.wrong_type(node, path, "a string"),
            },
            Ty::Int { min, max } => match &node.kind {
                Kind::Scalar(Value::Int(i)) if (*min..=*max).contains(i) => {}
                Kind::Scalar(Value::Int(i)) => self.report(
                    node.pos,
                    path,
                    format!("{i} is out of range"),
                    if min == max {
                        format!("use {min}")
                    } else {
                        format!("use a whole number from {min} to {max}")
                    },
                ),
                _ => self.wrong_type(node, path, "a whole number"),
            },
            Ty::Bool => {
                if !matches!(node.kind, Kind::Scalar(Value::Bool(_))) {
                    self.wrong_type(node, path, "true or false");
                }
            }
            Ty::Enum(values) => match &node.kind {
                Kind::Scalar(Value::Str(s)) if values.contains(&s.as_str()) => {}
                Kind::Scalar(Value::Str(s)) => {
                    let suggestion = kaged_config::closest(s, values)
                        .map(|c| format!("did you mean \"{c}\"? "))
                        .unwrap_or_default();
                    self.report(
                        node.pos,
                        path,
                        format!("{s:?} is not allowed here"),
                        format!("{suggestion}use one of: {}", values.join(", ")),
                    );
                }
                _ => self.wrong_type(node, path, &format!("one of: {}", values.join(", "))),
            },
            Ty::Argv => self.check_argv(node, path),
            Ty::List { item, min } => match &node.kind {
                Kind::Seq(items) => {
                    if items.len() < *min {
                        self.report(
                            node.pos,
                            path,
                            format!("needs at least {min} item(s)"),
                            "add an entry",
                        );
                    }
                    for (i, it) in items.iter().enumerate() {
                        self.check(it, item, &format!("{path}[{i}]"));
                    }
                }
                _ => self.wrong_type(node, path, "a list"),
            },
            Ty::Record { key, value, max } => match &node.kind {
                Kind::Map(entries) => {
                    if entries.len() > *max {
                        self.report(
                            node.pos,
                            path,
                            format!("more than {max} entries"),
                            "split or remove some",
                        );
                    }
                    for e in entries {
                        let entry_path = child(path, &e.key);
                        let key_ok = match key {
                            Text::ToolName => is_tool_name(&e.key),
                            _ => is_name(&e.key),
                        };
                        if !key_ok {
                            self.report(e.key_pos, &entry_path, format!("`{}` is not a valid name", e.key), "use lowercase letters, digits, '-' and '_' (tools may also use '.'), starting with a letter or digit");
                        }
                        if matches!(value, Ty::Agent) {
                            self.define_agent(&e.key, e.key_pos, &entry_path);
                        }
                        self.check(&e.value, value, &entry_path);
                    }
                }
                _ => self.wrong_type(node, path, "a mapping of names"),
            },
            Ty::Object(o) => self.check_object(node, o, path),
            Ty::Agent => self.check_object(node, &AGENT, path),
            Ty::Custom(custom) => self.out.extend((custom.check)(node, path)),
            Ty::LiteralOr(literals, inner) => match &node.kind {
                Kind::Scalar(Value::Str(s)) if literals.contains(&s.as_str()) => {}
                Kind::Scalar(Value::Str(s)) => self.report(
                    node.pos,
                    path,
                    format!("{s:?} is not allowed here"),
                    format!(
                        "use {} or a mapping",
                        literals
                            .iter()
                            .map(|l| format!("\"{l}\""))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                ),
                _ => self.check(node, inner, path),
            },
        }
    }

    fn define_agent(&mut self, name: &str, pos: Pos, path: &str) {
        if let Some((_, first)) = self.agents.iter().find(|(n, _)| n == name) {
            let line = first.line;
            self.report(
                pos,
                path,
                format!("the agent name `{name}` is already used (line {line})"),
                "agent names are unique across the project",
            );
        } else {
            self.agents.push((name.to_string(), pos));
        }
    }

    fn check_argv(&mut self, node: &Node, path: &str) {
        let Kind::Seq(items) = &node.kind else {
            if let Kind::Scalar(Value::Str(s)) = &node.kind {
                let split: Vec<String> = s.split_whitespace().map(|w| format!("{w:?}")).collect();
                self.report(
                    node.pos,
                    path,
                    "commands are argv lists, never shell strings",
                    format!("write [{}]", split.join(", ")),
                );
            } else {
                self.wrong_type(node, path, "an argv list such as [\"cargo\", \"test\"]");
            }
            return;
        };
        if items.is_empty() {
            self.report(
                node.pos,
                path,
                "the command is empty",
                "name at least the program, e.g. [\"cargo\", \"test\"]",
            );
        }
        for (i, it) in items.iter().enumerate() {
            let p = format!("{path}[{i}]");
            match &it.kind {
                Kind::Scalar(Value::Str(s)) => {
                    if looks_like_secret(s) {
                        self.report(
                            it.pos,
                            &p,
                            "this looks like a credential; secrets never go in a project file",
                            "pass it through the environment granted in local.toml",
                        );
                    } else if operator_local_path(s) {
                        self.report(it.pos, &p, format!("{s:?} is a path on the operator's machine"), "refer to project files with a relative path, and grant host paths in local.toml");
                    } else if i == 0 && s.starts_with('/') {
                        self.report(it.pos, &p, format!("{s:?} is an absolute host path"), "name the program (found on the cage's PATH), or grant the host path in local.toml");
                    } else if i == 0 && s.contains(' ') && items.len() == 1 {
                        self.report(
                            it.pos,
                            &p,
                            "this looks like a shell string",
                            "split it into the program and its arguments",
                        );
                    }
                }
                _ => self.wrong_type(it, &p, "a string"),
            }
        }
    }

    fn check_text(&mut self, text: Text, s: &str, pos: Pos, path: &str) {
        let fail = |v: &mut Self, problem: String, hint: &str| v.report(pos, path, problem, hint);
        match text {
            Text::Any(max) => {
                if s.chars().count() > max {
                    fail(self, format!("longer than {max} characters"), "shorten it");
                }
            }
            Text::Slug => {
                if !is_slug(s) {
                    fail(
                        self,
                        format!("{s:?} is not a project slug"),
                        "use 2-64 lowercase letters, digits and '-', not starting or ending with '-'",
                    );
                }
            }
            Text::Name => {
                if !is_name(s) {
                    fail(
                        self,
                        format!("{s:?} is not a valid name"),
                        "use lowercase letters, digits, '-' and '_'",
                    );
                } else if path.ends_with(".agent") || path == "agent" {
                    self.references.push((s.to_string(), pos, path.to_string()));
                }
            }
            Text::Uri => {
                let rest = s
                    .strip_prefix("project:/")
                    .or_else(|| s.strip_prefix("config:/"));
                match rest {
                    Some(rest)
                        if rest.starts_with('/')
                            || rest.starts_with('\\')
                            || rest.contains('\0') =>
                    {
                        fail(
                            self,
                            format!("{s:?} is not a path inside the project"),
                            "write project:/relative/path with a single slash after the colon",
                        )
                    }
                    Some(rest) if rest.split('/').any(|seg| seg == "..") => fail(
                        self,
                        format!("{s:?} escapes the project with `..`"),
                        "paths stay inside the project; grant outside paths in local.toml",
                    ),
                    Some(_) => {}
                    None if s.starts_with('/') || s.starts_with('~') => fail(
                        self,
                        format!("{s:?} is an absolute host path, which is operator-local"),
                        "use project:/relative/path, or grant the host path in the operator's local.toml",
                    ),
                    None => fail(
                        self,
                        format!("{s:?} has no project:/ or config:/ prefix"),
                        "write project:/path (from the project root) or config:/path (from .kaged/)",
                    ),
                }
            }
            Text::ModelAlias => {
                if s.contains(':') || s.contains('/') || dated_model_id(s) {
                    fail(
                        self,
                        format!("{s:?} is a concrete provider model ID, which is operator-local"),
                        "name an alias such as \"sonnet\" and map it in local.toml [aliases]",
                    );
                } else if !is_name(&s.replace('.', "-")) {
                    fail(
                        self,
                        format!("{s:?} is not a model alias"),
                        "use lowercase letters, digits, '.', '-' and '_'",
                    );
                }
            }
            Text::HostPattern => {
                if !is_host_pattern(s) {
                    fail(
                        self,
                        format!("{s:?} is not a host pattern"),
                        "use a hostname, optionally starting with *. and ending with :PORT, e.g. \"*.github.com:443\"",
                    );
                }
            }
            Text::ToolName => {
                if !is_tool_name(s) {
                    fail(
                        self,
                        format!("{s:?} is not a tool name"),
                        "use names such as file.read",
                    );
                }
            }
        }
    }

    fn check_object(&mut self, node: &Node, o: &Object, path: &str) {
        let Kind::Map(entries) = &node.kind else {
            self.wrong_type(node, path, &format!("a mapping ({})", o.name));
            return;
        };
        for e in entries {
            let entry_path = child(path, &e.key);
            match o.field(&e.key) {
                Some(field) => self.check(&e.value, field.ty, &entry_path),
                None => {
                    let known: Vec<&str> = o.fields.iter().map(|f| f.name).collect();
                    let hint = if SECRET_KEYS.contains(&e.key.to_ascii_lowercase().as_str()) {
                        "secrets belong in the operator's local.toml, never in a project file"
                            .to_string()
                    } else {
                        match kaged_config::closest(&e.key, &known) {
                            Some(c) => {
                                format!("did you mean `{c}`? keys here: {}", known.join(", "))
                            }
                            None => format!("remove it; keys here: {}", known.join(", ")),
                        }
                    };
                    self.report(
                        e.key_pos,
                        &entry_path,
                        format!("unknown key `{}`", e.key),
                        hint,
                    );
                }
            }
        }
        let present = |k: &str| entries.iter().any(|e| e.key == k);
        for field in o.fields.iter().filter(|f| f.required && !present(f.name)) {
            self.report(
                node.pos,
                path,
                format!("missing required key `{}`", field.name),
                format!("add `{}:` ({})", field.name, field.doc),
            );
        }
        if !o.exactly_one.is_empty() {
            let count = o.exactly_one.iter().filter(|k| present(k)).count();
            let names = o
                .exactly_one
                .iter()
                .map(|k| format!("`{k}`"))
                .collect::<Vec<_>>()
                .join(" or ");
            if count == 0 {
                self.report(
                    node.pos,
                    path,
                    format!("needs {names}"),
                    "a model agent has model + system_prompt; a command agent has command",
                );
            } else if count > 1 {
                self.report(
                    node.pos,
                    path,
                    format!("{names} exclude each other"),
                    "keep one",
                );
            }
        }
        for (a, b) in o.requires {
            if present(a) && !present(b) {
                self.report(
                    node.pos,
                    path,
                    format!("`{a}` needs `{b}`"),
                    format!("add `{b}:`"),
                );
            }
        }
        self.check_plugin_config(node, path);
    }

    /// An agent's `plugin_config` names only plugins in its `plugins`.
    fn check_plugin_config(&mut self, node: &Node, path: &str) {
        let (Some(config), Some(plugins)) = (node.get("plugin_config"), node.get("plugins")) else {
            return;
        };
        let (Kind::Map(configured), Kind::Seq(listed)) = (&config.kind, &plugins.kind) else {
            return;
        };
        let listed: Vec<&str> = listed
            .iter()
            .filter_map(|n| match &n.kind {
                Kind::Scalar(Value::Str(s)) => Some(s.as_str()),
                _ => None,
            })
            .collect();
        for e in configured
            .iter()
            .filter(|e| !listed.contains(&e.key.as_str()))
        {
            self.report(
                e.key_pos,
                &child(&child(path, "plugin_config"), &e.key),
                format!("`{}` is not one of this agent's plugins", e.key),
                format!(
                    "add it to `plugins:` ({}), or remove its settings",
                    listed.join(", ")
                ),
            );
        }
    }
}

/// Validate a tree against any object's table (a plugin manifest's, say), in file order. An
/// empty result means valid. Project files use [`validate`], which adds the agent references.
pub fn validate_object(root: &Node, object: &Object) -> Vec<Diagnostic> {
    let mut v = Validator {
        out: Vec::new(),
        agents: Vec::new(),
        references: Vec::new(),
    };
    v.check_object(root, object, "");
    v.out
        .sort_by_key(|d| (d.pos.source, d.pos.line, d.pos.column));
    v.out
}

/// Validate a merged project tree. An empty result means valid.
pub fn validate(root: &Node) -> Vec<Diagnostic> {
    let mut v = Validator {
        out: Vec::new(),
        agents: Vec::new(),
        references: Vec::new(),
    };
    if let Some(primary) = root.get("primary") {
        v.agents.push(("primary".into(), primary.pos));
    }
    v.check_object(root, &PROJECT, "");
    let references = std::mem::take(&mut v.references);
    for (name, pos, path) in references {
        if !v.agents.iter().any(|(n, _)| *n == name) {
            let known: Vec<&str> = v.agents.iter().map(|(n, _)| n.as_str()).collect();
            let hint = format!("agents in this project: {}", known.join(", "));
            v.report(pos, &path, format!("no agent named `{name}`"), hint);
        }
    }
    v.out
        .sort_by_key(|d| (d.pos.source, d.pos.line, d.pos.column));
    v.out
}
