//! The project file schema (v1), written once as data. The validator walks it over the
//! positioned tree, and [`json_schema`] turns the same tables into the published JSON Schema,
//! so the two can never disagree.

use serde_json::{Map, Value as Json, json};

use crate::tree::{Diagnostic, Node};

/// Rules for strings, each with a portability or format check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Text {
    /// Free text up to this many characters.
    Any(usize),
    /// Project slug: `^[a-z0-9][a-z0-9-]{0,62}[a-z0-9]$`.
    Slug,
    /// A name used as a map key or reference (agents, tasks).
    Name,
    /// A path through `project:/` or `config:/`, never escaping with `..`.
    Uri,
    /// A model alias, resolved to `provider:model` in the operator's local.toml.
    ModelAlias,
    /// A hostname glob with an optional port: `*.github.com`, `api.example.com:443`.
    HostPattern,
    /// A tool name such as `file.read`.
    ToolName,
}

#[derive(Debug)]
pub enum Ty {
    Str(Text),
    Int {
        min: i64,
        max: i64,
    },
    Bool,
    Enum(&'static [&'static str]),
    /// A command as an argv list (never a shell string): at least the program.
    Argv,
    List {
        item: &'static Ty,
        min: usize,
    },
    /// A map from names (checked by `key`) to values.
    Record {
        key: Text,
        value: &'static Ty,
        max: usize,
    },
    Object(&'static Object),
    /// One of these literal strings, or the type.
    LiteralOr(&'static [&'static str], &'static Ty),
    /// The recursive agent shape.
    Agent,
    /// A rule defined by another kind of file (a plugin manifest): its own check and schema.
    Custom(&'static Custom),
}

/// A rule written outside this crate's tables, so other strict YAML files (plugin manifests)
/// get the same walk, diagnostics and published schema as project files.
pub struct Custom {
    /// Every problem with the value at the key path, at the positions it names.
    pub check: fn(&Node, &str) -> Vec<Diagnostic>,
    /// The value's JSON Schema.
    pub schema: fn() -> Json,
}

impl std::fmt::Debug for Custom {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Custom")
    }
}

#[derive(Debug)]
pub struct Field {
    pub name: &'static str,
    pub ty: &'static Ty,
    pub required: bool,
    pub doc: &'static str,
}

#[derive(Debug)]
pub struct Object {
    pub name: &'static str,
    pub doc: &'static str,
    pub fields: &'static [Field],
    /// Exactly one of these fields must be present.
    pub exactly_one: &'static [&'static str],
    /// `(a, b)`: when `a` is present, `b` is required.
    pub requires: &'static [(&'static str, &'static str)],
}

impl Object {
    pub fn field(&self, name: &str) -> Option<&'static Field> {
        self.fields.iter().find(|f| f.name == name)
    }
}

const fn f(name: &'static str, ty: &'static Ty, required: bool, doc: &'static str) -> Field {
    Field {
        name,
        ty,
        required,
        doc,
    }
}

static DESCRIPTION: Ty = Ty::Str(Text::Any(280));
static NAME: Ty = Ty::Str(Text::Name);
static URI: Ty = Ty::Str(Text::Uri);
static HOST: Ty = Ty::Str(Text::HostPattern);
static ARGV: Ty = Ty::Argv;
static BOOL: Ty = Ty::Bool;
static AGENT_TY: Ty = Ty::Agent;
static PLUGIN_NAME: Ty = Ty::Str(Text::Name);
static PLUGIN_NAMES: Ty = Ty::List {
    item: &PLUGIN_NAME,
    min: 0,
};

/// A plugin's committed settings: any mapping (its manifest's `config_schema` says more), with
/// no value that looks like a credential (those are the operator's, in local.toml).
static PLUGIN_SETTINGS: Ty = Ty::Custom(&Custom {
    check: check_plugin_settings,
    schema: || json!({"type": "object"}),
});
static PLUGIN_CONFIG: Ty = Ty::Record {
    key: Text::Name,
    value: &PLUGIN_SETTINGS,
    max: 64,
};

fn check_plugin_settings(node: &Node, path: &str) -> Vec<Diagnostic> {
    use crate::tree::{Kind, Value};
    fn walk(node: &Node, path: &str, out: &mut Vec<Diagnostic>) {
        match &node.kind {
            Kind::Map(entries) => {
                for e in entries {
                    walk(&e.value, &format!("{path}.{}", e.key), out);
                }
            }
            Kind::Seq(items) => {
                for (i, item) in items.iter().enumerate() {
                    walk(item, &format!("{path}[{i}]"), out);
                }
            }
            Kind::Scalar(Value::Str(s)) if crate::validate::looks_like_secret(s) => {
                out.push(Diagnostic {
                    pos: node.pos,
                    path: path.to_string(),
                    problem: "this looks like a credential; secrets never go in a project file".into(),
                    hint: "the operator sets it in local.toml [plugins.\"NAME\"] (the plugin's system_config_schema)".into(),
                });
            }
            Kind::Scalar(_) => {}
        }
    }
    if !matches!(node.kind, crate::tree::Kind::Map(_)) {
        return vec![Diagnostic {
            pos: node.pos,
            path: path.to_string(),
            problem: "expected the plugin's settings as a mapping".into(),
            hint:
                "write the settings its manifest's config_schema describes, e.g. {max_notes: 100}"
                    .into(),
        }];
    }
    let mut out = Vec::new();
    walk(node, path, &mut out);
    out
}

static MOUNT: Object = Object {
    name: "mount",
    doc: "A project path made visible in the cage.",
    fields: &[
        f("path", &URI, true, "project:/ or config:/ path"),
        f(
            "mode",
            &Ty::Enum(&["ro", "rw"]),
            false,
            "ro (default) or rw",
        ),
    ],
    exactly_one: &[],
    requires: &[],
};
static MOUNT_TY: Ty = Ty::Object(&MOUNT);

static NETWORK_ALLOW: Object = Object {
    name: "network_allowlist",
    doc: "Only these destinations, through kaged's proxy.",
    fields: &[f(
        "allow",
        &Ty::List {
            item: &HOST,
            min: 1,
        },
        true,
        "host globs with optional ports",
    )],
    exactly_one: &[],
    requires: &[],
};
static NETWORK_ALLOW_TY: Ty = Ty::Object(&NETWORK_ALLOW);

static LIMITS: Object = Object {
    name: "limits",
    doc: "Resource limits of the cage.",
    fields: &[
        f(
            "memory_mb",
            &Ty::Int {
                min: 16,
                max: 1_048_576,
            },
            false,
            "memory in MiB",
        ),
        f(
            "cpu_percent",
            &Ty::Int {
                min: 1,
                max: 10_000,
            },
            false,
            "CPU share, 100 = one core",
        ),
        f(
            "pids",
            &Ty::Int {
                min: 1,
                max: 100_000,
            },
            false,
            "maximum processes",
        ),
        f(
            "wall_time_secs",
            &Ty::Int {
                min: 1,
                max: 604_800,
            },
            false,
            "wall-clock limit",
        ),
    ],
    exactly_one: &[],
    requires: &[],
};
static LIMITS_TY: Ty = Ty::Object(&LIMITS);

static CAGE: Object = Object {
    name: "cage",
    doc: "The sandbox an agent runs in.",
    fields: &[
        f(
            "filesystem",
            &Ty::List {
                item: &MOUNT_TY,
                min: 0,
            },
            false,
            "extra project paths",
        ),
        f(
            "network",
            &Ty::LiteralOr(&["none", "host"], &NETWORK_ALLOW_TY),
            false,
            "none (default), host, or an allowlist",
        ),
        f(
            "seccomp",
            &Ty::Enum(&["default", "relaxed"]),
            false,
            "seccomp profile",
        ),
        f("limits", &LIMITS_TY, false, "resource limits"),
    ],
    exactly_one: &[],
    requires: &[],
};
static CAGE_TY: Ty = Ty::Object(&CAGE);

static TOOL: Object = Object {
    name: "tool",
    doc: "Per-agent tool setting.",
    fields: &[
        f(
            "enabled",
            &BOOL,
            false,
            "whether the agent may use the tool (default true)",
        ),
        f(
            "approval",
            &Ty::Enum(&["allow", "ask", "deny"]),
            false,
            "allow: it runs; ask: each call waits for the operator's decision; deny: it is not offered (default allow)",
        ),
    ],
    exactly_one: &[],
    requires: &[],
};
static TOOL_TY: Ty = Ty::Object(&TOOL);

pub static AGENT: Object = Object {
    name: "agent",
    doc: "A model agent (model + system_prompt) or a command agent (command), with its cage and subagents.",
    fields: &[
        f("description", &DESCRIPTION, false, "what the agent is for"),
        f(
            "model",
            &Ty::Str(Text::ModelAlias),
            false,
            "model alias (mapped to provider:model in local.toml)",
        ),
        f("system_prompt", &URI, false, "project:/ path of the prompt"),
        f(
            "max_steps",
            &Ty::Int {
                min: 1,
                max: 10_000,
            },
            false,
            "model agent: the most model calls in one turn (each answer to tool results is one)",
        ),
        f(
            "max_output_tokens",
            &Ty::Int {
                min: 1,
                max: 1_000_000,
            },
            false,
            "model agent: the most tokens the model may write in one response",
        ),
        f(
            "command",
            &ARGV,
            false,
            "argv of an external agent CLI, run on a PTY in the cage",
        ),
        f(
            "protocol",
            &Ty::Enum(&["pty", "acp"]),
            false,
            "command agent: pty (a terminal, the default) or acp (the Agent Client Protocol on stdio)",
        ),
        f(
            "mode",
            &Ty::Str(Text::Any(64)),
            false,
            "ACP agent: the session mode kaged selects (default: the agent's `default` mode when it offers one)",
        ),
        f(
            "cage",
            &Ty::LiteralOr(&["disabled"], &CAGE_TY),
            false,
            "the cage, or \"disabled\"",
        ),
        f(
            "tools",
            &Ty::Record {
                key: Text::ToolName,
                value: &TOOL_TY,
                max: 256,
            },
            false,
            "tool settings by name",
        ),
        f(
            "subagents",
            &Ty::Record {
                key: Text::Name,
                value: &AGENT_TY,
                max: 64,
            },
            false,
            "nested agents by name",
        ),
        f(
            "plugins",
            &PLUGIN_NAMES,
            false,
            "model agent: the plugins whose tools it may call, as PLUGIN.TOOL (each call asks the operator unless `tools:` says otherwise)",
        ),
        f(
            "plugin_config",
            &PLUGIN_CONFIG,
            false,
            "model agent: committed settings for its plugins, by plugin name, matching each plugin's config_schema (sent with every call); secrets belong in local.toml",
        ),
    ],
    exactly_one: &["model", "command"],
    requires: &[
        ("model", "system_prompt"),
        ("plugins", "model"),
        ("plugin_config", "plugins"),
        ("max_steps", "model"),
        ("max_output_tokens", "model"),
        ("protocol", "command"),
        ("mode", "protocol"),
    ],
};

static TASK: Object = Object {
    name: "task",
    doc: "A named project command the operator launches.",
    fields: &[
        f("command", &ARGV, true, "argv, never a shell string"),
        f("description", &DESCRIPTION, false, "what it does"),
        f(
            "agent",
            &NAME,
            false,
            "whose cage it runs in (default: primary)",
        ),
        f("cwd", &URI, false, "working directory (default project:/)"),
        f(
            "timeout_secs",
            &Ty::Int {
                min: 1,
                max: 604_800,
            },
            false,
            "wall-clock limit",
        ),
    ],
    exactly_one: &[],
    requires: &[],
};
static TASK_TY: Ty = Ty::Object(&TASK);

static TERMINALS: Object = Object {
    name: "terminals",
    doc: "Project terminal settings.",
    fields: &[
        f("shell", &ARGV, false, "the shell argv (default: bash -l)"),
        f("cwd", &URI, false, "starting directory (default project:/)"),
        f(
            "agent",
            &NAME,
            false,
            "whose cage terminals run in (default: primary)",
        ),
    ],
    exactly_one: &[],
    requires: &[],
};
static TERMINALS_TY: Ty = Ty::Object(&TERMINALS);

pub static PROJECT: Object = Object {
    name: "project",
    doc: "A kaged project file (.kaged/project.yaml), version 1.",
    fields: &[
        f("version", &Ty::Int { min: 1, max: 1 }, true, "must be 1"),
        f("project", &Ty::Str(Text::Slug), true, "project slug"),
        f("description", &DESCRIPTION, false, "what the project is"),
        f("primary", &AGENT_TY, true, "the root agent"),
        f(
            "tasks",
            &Ty::Record {
                key: Text::Name,
                value: &TASK_TY,
                max: 64,
            },
            false,
            "named commands",
        ),
        f("terminals", &TERMINALS_TY, false, "terminal settings"),
    ],
    exactly_one: &[],
    requires: &[],
};

fn text_schema(t: Text) -> Json {
    match t {
        Text::Any(max) => json!({"type": "string", "maxLength": max}),
        Text::Slug => json!({"type": "string", "pattern": "^[a-z0-9][a-z0-9-]{0,62}[a-z0-9]$"}),
        Text::Name => json!({"type": "string", "pattern": "^[a-z0-9][a-z0-9_-]{0,63}$"}),
        Text::Uri => json!({"type": "string", "pattern": "^(project|config):/"}),
        Text::ModelAlias => json!({"type": "string", "pattern": "^[a-z0-9][a-z0-9._-]{0,63}$"}),
        Text::HostPattern => {
            json!({"type": "string", "pattern": "^(\\*\\.)?[a-z0-9-]+(\\.[a-z0-9-]+)*(:([1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5]))?$"})
        }
        Text::ToolName => json!({"type": "string", "pattern": "^[a-z][a-z0-9_.-]{0,63}$"}),
    }
}

fn ty_schema(ty: &Ty) -> Json {
    match ty {
        Ty::Str(t) => text_schema(*t),
        Ty::Int { min, max } => json!({"type": "integer", "minimum": min, "maximum": max}),
        Ty::Bool => json!({"type": "boolean"}),
        Ty::Enum(values) => json!({"enum": values}),
        Ty::Argv => json!({"type": "array", "items": {"type": "string"}, "minItems": 1}),
        Ty::List { item, min } => {
            json!({"type": "array", "items": ty_schema(item), "minItems": min})
        }
        Ty::Record { key, value, max } => json!({
            "type": "object",
            "propertyNames": text_schema(*key),
            "additionalProperties": ty_schema(value),
            "maxProperties": max,
        }),
        Ty::Object(o) => object_schema(o),
        Ty::LiteralOr(literals, ty) => json!({"oneOf": [{"enum": literals}, ty_schema(ty)]}),
        Ty::Agent => json!({"$ref": "#/$defs/agent"}),
        Ty::Custom(custom) => (custom.schema)(),
    }
}

/// The JSON Schema of an object's table: its fields (each with its doc), which are required,
/// no other keys, and its `exactly_one` and `requires` rules.
pub fn object_schema(o: &Object) -> Json {
    let mut properties = Map::new();
    for field in o.fields {
        let mut s = ty_schema(field.ty);
        if let Some(obj) = s.as_object_mut() {
            obj.insert("description".into(), Json::String(field.doc.into()));
        }
        properties.insert(field.name.into(), s);
    }
    let required: Vec<&str> = o
        .fields
        .iter()
        .filter(|f| f.required)
        .map(|f| f.name)
        .collect();
    let mut schema = json!({
        "type": "object",
        "description": o.doc,
        "properties": properties,
        "required": required,
        "additionalProperties": false,
    });
    if let Some(obj) = schema.as_object_mut() {
        if !o.exactly_one.is_empty() {
            let one_of: Vec<Json> = o
                .exactly_one
                .iter()
                .map(|k| json!({"required": [k]}))
                .collect();
            obj.insert("oneOf".into(), Json::Array(one_of));
        }
        if !o.requires.is_empty() {
            let mut dep = Map::new();
            for (a, b) in o.requires {
                dep.insert((*a).into(), json!([b]));
            }
            obj.insert("dependentRequired".into(), Json::Object(dep));
        }
    }
    schema
}

/// The published JSON Schema (draft 2020-12) of project files, from the same tables the
/// validator uses.
pub fn json_schema() -> Json {
    let mut schema = object_schema(&PROJECT);
    if let Some(obj) = schema.as_object_mut() {
        obj.insert(
            "$schema".into(),
            json!("https://json-schema.org/draft/2020-12/schema"),
        );
        obj.insert("$id".into(), json!("https://kaged.dev/schema/v1.json"));
        obj.insert("title".into(), json!("kaged project file v1"));
        obj.insert("$defs".into(), json!({"agent": object_schema(&AGENT)}));
    }
    schema
}
