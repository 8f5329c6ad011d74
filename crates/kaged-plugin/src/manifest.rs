//! The plugin manifest, `kaged-plugin.yaml`: parsed and validated as strictly as project files
//! (kaged-dsl's positioned tree and schema walk), every problem at once with its line:column,
//! key path and fix. The schema is written once as data ([`MANIFEST`]); the validator and the
//! published JSON Schema ([`json_schema`]) both come from it.

use kaged_dsl::schema::{Custom, Field, Object, Text, Ty, object_schema};
use kaged_dsl::{Diagnostic, Node};
use serde::Deserialize;
use serde_json::{Value as Json, json};

use crate::capability::{self, Capabilities, KNOWN_FORMS};

mod rules;

pub use rules::is_plugin_name;
use rules::{
    check_api, check_capabilities, check_command, check_env, check_homepage, check_license,
    check_method_name, check_object_schema, check_plugin_name, check_tool_name, check_version,
    duplicates,
};

/// The manifest's file name, in the plugin's directory.
pub const MANIFEST_FILE: &str = "kaged-plugin.yaml";

/// The plugin API version this kaged speaks.
pub const SUPPORTED_API: i64 = 1;

/// Longest plugin and tool names.
const MAX_NAME: usize = 64;

/// At most this many environment variables.
const MAX_ENV: usize = 64;

/// A hook kaged can call on a plugin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Hook {
    /// A session started.
    OnSessionStart,
    /// A session's agent finished its turn and waits.
    OnSessionIdle,
}

/// Every hook's name, as the manifest writes it.
pub const HOOKS: &[&str] = &["on_session_start", "on_session_idle"];

impl Hook {
    /// The hook's name, as the manifest writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Hook::OnSessionStart => "on_session_start",
            Hook::OnSessionIdle => "on_session_idle",
        }
    }

    /// The JSON-RPC notification that delivers it.
    pub fn method(self) -> &'static str {
        match self {
            Hook::OnSessionStart => crate::wire::method::HOOK_ON_SESSION_START,
            Hook::OnSessionIdle => crate::wire::method::HOOK_ON_SESSION_IDLE,
        }
    }
}

/// A tool a plugin offers to model agents.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ToolSpec {
    /// The name within the plugin; agents see `PLUGIN.NAME` ([`Manifest::agent_tool_name`]).
    pub name: String,
    /// What the tool does, for the model.
    pub description: String,
    /// The JSON Schema of the tool's arguments (an object).
    pub input_schema: Json,
}

/// A valid manifest, typed.
#[derive(Debug, Clone, PartialEq)]
pub struct Manifest {
    /// The plugin's name (`^[a-z][a-z0-9-]*$`, at most 64): its tools' prefix and storage's.
    pub name: String,
    /// The plugin's own version.
    pub version: semver::Version,
    /// Always [`SUPPORTED_API`]: another is refused.
    pub kaged_api: i64,
    /// What the plugin does.
    pub description: String,
    /// Who wrote it.
    pub author: Option<String>,
    /// An SPDX license expression.
    pub license: Option<String>,
    /// An http or https URL.
    pub homepage: Option<String>,
    /// The argv, run in the plugin's directory.
    pub command: Vec<String>,
    /// Environment variables the plugin is started with, sorted by name.
    pub env: Vec<(String, String)>,
    /// What it may reach; its cage is compiled from these ([`Capabilities::cage`]).
    pub capabilities: Capabilities,
    /// JSON-RPC methods the plugin serves beyond the protocol's own.
    pub methods: Vec<String>,
    /// Notifications the plugin accepts beyond the protocol's own.
    pub notifications: Vec<String>,
    /// The hooks it receives.
    pub hooks: Vec<Hook>,
    /// The tools it offers to model agents.
    pub tools: Vec<ToolSpec>,
    /// The JSON Schema of the plugin's committed settings.
    pub config_schema: Option<Json>,
    /// The JSON Schema of its operator-local settings (`local.toml [plugins."NAME"]`).
    pub system_config_schema: Option<Json>,
    /// How long `shutdown` may take before the plugin is killed (1–30, default 5).
    pub shutdown_timeout_sec: u64,
    /// How often kaged calls `health` (5–300, default 30).
    pub health_interval_sec: u64,
}

impl Manifest {
    /// The name model agents see for one of the plugin's tools: `PLUGIN.TOOL`.
    pub fn agent_tool_name(&self, tool: &ToolSpec) -> String {
        format!("{}.{}", self.name, tool.name)
    }
}

/// Why a manifest was refused: every problem, in file order.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", render(.diagnostics))]
pub struct ManifestError {
    /// Every problem, each with its line:column, key path and fix (source 0 is the manifest).
    pub diagnostics: Vec<Diagnostic>,
}

fn render(diagnostics: &[Diagnostic]) -> String {
    diagnostics
        .iter()
        .map(|d| format!("{MANIFEST_FILE}:{d}"))
        .collect::<Vec<_>>()
        .join("\n")
}

impl ManifestError {
    /// The diagnostics as JSON, in the shape of `kaged dsl validate --format json`.
    pub fn to_json(&self) -> Json {
        kaged_dsl::diagnostics_json(&self.diagnostics, &[MANIFEST_FILE])
    }
}

static PLUGIN_NAME: Ty = Ty::Custom(&Custom {
    check: check_plugin_name,
    schema: || json!({"type": "string", "pattern": "^[a-z][a-z0-9-]*$", "maxLength": MAX_NAME}),
});
static VERSION: Ty = Ty::Custom(&Custom {
    check: check_version,
    schema: || json!({"type": "string", "pattern": "^(0|[1-9][0-9]*)\\.(0|[1-9][0-9]*)\\.(0|[1-9][0-9]*)(-[0-9A-Za-z.-]+)?(\\+[0-9A-Za-z.-]+)?$"}),
});
static API: Ty = Ty::Custom(&Custom {
    check: check_api,
    schema: || json!({"type": "integer", "const": SUPPORTED_API}),
});
static LICENSE: Ty = Ty::Custom(&Custom {
    check: check_license,
    schema: || json!({"type": "string", "minLength": 1}),
});
static HOMEPAGE: Ty = Ty::Custom(&Custom {
    check: check_homepage,
    schema: || json!({"type": "string", "format": "uri", "pattern": "^https?://"}),
});
static COMMAND: Ty = Ty::Custom(&Custom {
    check: check_command,
    schema: || json!({"type": "array", "items": {"type": "string"}, "minItems": 1}),
});
static ENV: Ty = Ty::Custom(&Custom {
    check: check_env,
    schema: || {
        json!({
            "type": "object",
            "propertyNames": {"pattern": "^[A-Z_][A-Z0-9_]*$"},
            "additionalProperties": {"type": "string"},
            "maxProperties": MAX_ENV,
        })
    },
});
static CAPABILITIES: Ty = Ty::Custom(&Custom {
    check: check_capabilities,
    schema: || {
        json!({
            "type": "array",
            "uniqueItems": true,
            "items": {
                "type": "string",
                "description": format!("one of: {}", KNOWN_FORMS.join(", ")),
                "pattern": "^(read:fs:/|write:fs:/|exec:/|net:|kaged:storage:(read|write)$)",
            },
        })
    },
});
static OBJECT_SCHEMA: Ty = Ty::Custom(&Custom {
    check: check_object_schema,
    schema: || json!({"type": "object"}),
});
static TOOL_NAME: Ty = Ty::Custom(&Custom {
    check: check_tool_name,
    schema: || json!({"type": "string", "pattern": "^[a-z][a-z0-9_.-]*$", "maxLength": MAX_NAME}),
});
static METHOD_NAME: Ty = Ty::Custom(&Custom {
    check: check_method_name,
    schema: || json!({"type": "string", "pattern": "^[A-Za-z][A-Za-z0-9_./-]*$", "maxLength": 128}),
});
static METHODS: Ty = Ty::List {
    item: &METHOD_NAME,
    min: 0,
};
static HOOK: Ty = Ty::Enum(HOOKS);

const fn field(name: &'static str, ty: &'static Ty, required: bool, doc: &'static str) -> Field {
    Field {
        name,
        ty,
        required,
        doc,
    }
}

static TOOL: Object = Object {
    name: "tool",
    doc: "A tool the plugin offers to model agents, which see it as PLUGIN.NAME.",
    fields: &[
        field(
            "name",
            &TOOL_NAME,
            true,
            "the tool's name within the plugin",
        ),
        field(
            "description",
            &Ty::Str(Text::Any(1024)),
            true,
            "what the tool does, for the model",
        ),
        field(
            "input_schema",
            &OBJECT_SCHEMA,
            true,
            "the JSON Schema of its arguments (an object)",
        ),
    ],
    exactly_one: &[],
    requires: &[],
};
static TOOL_TY: Ty = Ty::Object(&TOOL);

/// The manifest's schema, as data.
pub static MANIFEST: Object = Object {
    name: "plugin manifest",
    doc: "A kaged plugin manifest (kaged-plugin.yaml), plugin API 1.",
    fields: &[
        field(
            "name",
            &PLUGIN_NAME,
            true,
            "the plugin's name: lowercase letters, digits and '-'",
        ),
        field(
            "version",
            &VERSION,
            true,
            "the plugin's semantic version, e.g. \"1.2.0\"",
        ),
        field(
            "kaged_api",
            &API,
            true,
            "the kaged plugin API it targets: 1",
        ),
        field(
            "description",
            &Ty::Str(Text::Any(280)),
            true,
            "what the plugin does",
        ),
        field("author", &Ty::Str(Text::Any(200)), false, "who wrote it"),
        field(
            "license",
            &LICENSE,
            false,
            "an SPDX license expression, e.g. \"MIT OR Apache-2.0\"",
        ),
        field("homepage", &HOMEPAGE, false, "an http or https URL"),
        field(
            "command",
            &COMMAND,
            true,
            "argv, run with the plugin's directory as its working directory",
        ),
        field("env", &ENV, false, "environment variables: NAME: value"),
        field(
            "capabilities",
            &CAPABILITIES,
            true,
            "what the plugin may reach; [] for nothing beyond its directory",
        ),
        field(
            "methods",
            &METHODS,
            false,
            "JSON-RPC methods the plugin serves beyond the protocol's own",
        ),
        field(
            "notifications",
            &METHODS,
            false,
            "notifications the plugin accepts beyond the protocol's own",
        ),
        field(
            "hooks",
            &Ty::List {
                item: &HOOK,
                min: 0,
            },
            false,
            "hooks it receives: on_session_start, on_session_idle",
        ),
        field(
            "tools",
            &Ty::List {
                item: &TOOL_TY,
                min: 0,
            },
            false,
            "tools it offers to model agents",
        ),
        field(
            "config_schema",
            &OBJECT_SCHEMA,
            false,
            "the JSON Schema of its committed settings",
        ),
        field(
            "system_config_schema",
            &OBJECT_SCHEMA,
            false,
            "the JSON Schema of its operator-local settings (local.toml [plugins.\"NAME\"])",
        ),
        field(
            "shutdown_timeout_sec",
            &Ty::Int { min: 1, max: 30 },
            false,
            "seconds `shutdown` may take before the plugin is killed (default 5)",
        ),
        field(
            "health_interval_sec",
            &Ty::Int { min: 5, max: 300 },
            false,
            "seconds between `health` calls (default 30)",
        ),
    ],
    exactly_one: &[],
    requires: &[],
};

/// Default of `shutdown_timeout_sec`.
pub const DEFAULT_SHUTDOWN_TIMEOUT_SEC: u64 = 5;
/// Default of `health_interval_sec`.
pub const DEFAULT_HEALTH_INTERVAL_SEC: u64 = 30;

/// The published JSON Schema (draft 2020-12) of plugin manifests, from the validator's tables.
pub fn json_schema() -> Json {
    let mut schema = object_schema(&MANIFEST);
    if let Some(obj) = schema.as_object_mut() {
        obj.insert(
            "$schema".into(),
            json!("https://json-schema.org/draft/2020-12/schema"),
        );
        obj.insert(
            "$id".into(),
            json!("https://kaged.dev/schema/plugin-v1.json"),
        );
        obj.insert("title".into(), json!("kaged plugin manifest, API 1"));
    }
    schema
}

/// The manifest as serde reads it once validation has passed.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    name: String,
    version: String,
    kaged_api: i64,
    description: String,
    author: Option<String>,
    license: Option<String>,
    homepage: Option<String>,
    command: Vec<String>,
    #[serde(default)]
    env: std::collections::BTreeMap<String, String>,
    capabilities: Vec<String>,
    #[serde(default)]
    methods: Vec<String>,
    #[serde(default)]
    notifications: Vec<String>,
    #[serde(default)]
    hooks: Vec<Hook>,
    #[serde(default)]
    tools: Vec<ToolSpec>,
    config_schema: Option<Json>,
    system_config_schema: Option<Json>,
    shutdown_timeout_sec: Option<u64>,
    health_interval_sec: Option<u64>,
}

/// Parses and validates a manifest's text. Every problem at once, in file order.
pub fn load_manifest(text: &str) -> Result<Manifest, ManifestError> {
    let mut out = Vec::new();
    kaged_dsl::encoding_rules(0, text, &mut out);
    let tree = match kaged_dsl::parse(0, text) {
        Ok((tree, diagnostics)) => {
            out.extend(diagnostics);
            out.extend(kaged_dsl::validate_object(&tree, &MANIFEST));
            out.extend(duplicates(&tree));
            Some(tree)
        }
        Err(d) => {
            out.push(d);
            None
        }
    };
    let out = kaged_dsl::finish_diagnostics(out);
    match tree {
        Some(tree) if out.is_empty() => typed(&tree),
        _ => Err(ManifestError { diagnostics: out }),
    }
}

/// The typed manifest of a valid tree. A failure here means the schema and the model disagree:
/// a bug, reported as such rather than hidden.
fn typed(tree: &Node) -> Result<Manifest, ManifestError> {
    let bug = |problem: String| ManifestError {
        diagnostics: vec![Diagnostic {
            pos: tree.pos,
            path: String::new(),
            problem: format!("{problem} (a bug in kaged: report it)"),
            hint: String::new(),
        }],
    };
    let raw: Raw = serde_json::from_value(kaged_dsl::to_json(tree))
        .map_err(|e| bug(format!("the valid manifest does not fit the model: {e}")))?;
    let version = semver::Version::parse(&raw.version).map_err(|e| bug(e.to_string()))?;
    let texts: Vec<&str> = raw.capabilities.iter().map(String::as_str).collect();
    let capabilities = capability::parse_all(&texts)
        .map_err(|errors| bug(format!("capabilities refused after validation: {errors:?}")))?;
    Ok(Manifest {
        name: raw.name,
        version,
        kaged_api: raw.kaged_api,
        description: raw.description,
        author: raw.author,
        license: raw.license,
        homepage: raw.homepage,
        command: raw.command,
        env: raw.env.into_iter().collect(),
        capabilities,
        methods: raw.methods,
        notifications: raw.notifications,
        hooks: raw.hooks,
        tools: raw.tools,
        config_schema: raw.config_schema,
        system_config_schema: raw.system_config_schema,
        shutdown_timeout_sec: raw
            .shutdown_timeout_sec
            .unwrap_or(DEFAULT_SHUTDOWN_TIMEOUT_SEC),
        health_interval_sec: raw
            .health_interval_sec
            .unwrap_or(DEFAULT_HEALTH_INTERVAL_SEC),
    })
}

#[cfg(test)]
mod tests;
