//! The tools a model agent calls, run inside the agent's cage by a small executor (`kaged
//! tool-exec`) that speaks JSON lines on its stdin and stdout ([`protocol`]).
//!
//! - The tools, with the spec's names: `file.read`, `file.write`, `edit.text`,
//!   `search.grep`, `search.glob`, `shell.bash` ([`TOOLS`], [`specs`]: each with a
//!   description and a JSON Schema of its arguments, to offer the model).
//! - [`run`]: one call. Arguments that are not JSON or do not fit the schema give a clear
//!   error outcome, never a panic.
//! - [`serve`]: the executor's loop (calls run concurrently; EOF ends it).
//! - [`ToolExecutor`]: the daemon's side of that protocol over any reader and writer (the
//!   pipes of a caged `kaged tool-exec`).
//!
//! - [`acp`]: `kaged acp-shim`, the relay between the daemon and an ACP agent in its cage,
//!   serving the agent's file and terminal requests inside the cage.
//!
//! The tools check no paths themselves: inside the cage, what is outside the cage's view does
//! not exist for them, which is the guarantee (a check here could only be weaker).

pub mod acp;
mod cap;
mod client;
mod files;
pub mod protocol;
mod search;
mod server;
mod shell;

use serde::de::DeserializeOwned;
use serde_json::{Value, json};

pub use client::{ExecutorError, PendingCall, ToolExecutor};
pub use protocol::ToolOutcome;
pub use server::serve;

/// Every built-in tool's name.
pub const TOOLS: [&str; 6] = [
    "file.read",
    "file.write",
    "edit.text",
    "search.grep",
    "search.glob",
    "shell.bash",
];

/// What the model is told about a tool.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolSpec {
    pub name: &'static str,
    pub description: &'static str,
    /// JSON Schema of the arguments object.
    pub parameters: Value,
}

/// The spec of the tool `name`, if there is one.
pub fn spec(name: &str) -> Option<ToolSpec> {
    let (description, parameters) = match name {
        "file.read" => (
            "Read a text file. Lines are numbered from 1 (number, tab, text); by default the first 2000 lines. Use offset and limit to read a window of a long file.",
            json!({
                "type": "object",
                "properties": {
                    "path": {"type": "string", "description": "the file (relative to the workspace, or absolute)"},
                    "offset": {"type": "integer", "minimum": 1, "description": "the first line to read (1-indexed)"},
                    "limit": {"type": "integer", "minimum": 1, "description": "how many lines (default 2000)"}
                },
                "required": ["path"],
                "additionalProperties": false
            }),
        ),
        "file.write" => (
            "Write a file with the given content, replacing it if it exists; missing parent directories are created.",
            json!({
                "type": "object",
                "properties": {
                    "path": {"type": "string", "description": "the file (relative to the workspace, or absolute)"},
                    "content": {"type": "string", "description": "the whole new content"}
                },
                "required": ["path", "content"],
                "additionalProperties": false
            }),
        ),
        "edit.text" => (
            "Replace one exact piece of text in a file. old_text must occur exactly once, with its whitespace; include surrounding lines to make it unique. Do not include file.read's line numbers.",
            json!({
                "type": "object",
                "properties": {
                    "path": {"type": "string", "description": "the file"},
                    "old_text": {"type": "string", "description": "the exact text to replace (occurring once)"},
                    "new_text": {"type": "string", "description": "what replaces it"}
                },
                "required": ["path", "old_text", "new_text"],
                "additionalProperties": false
            }),
        ),
        "search.grep" => (
            "Search file contents with a regular expression (Rust regex syntax). Prints path:line:text for each matching line, sorted by path, at most 200. Skips .git, binary and very large files.",
            json!({
                "type": "object",
                "properties": {
                    "pattern": {"type": "string", "description": "regular expression"},
                    "path": {"type": "string", "description": "file or directory to search (default: the workspace)"},
                    "glob": {"type": "string", "description": "only files matching this glob: by name (\"*.rs\") or, with a '/', by path below `path` (\"src/**/*.rs\")"}
                },
                "required": ["pattern"],
                "additionalProperties": false
            }),
        ),
        "search.glob" => (
            "List paths matching a glob pattern below a directory, sorted, at most 1000. `*` stays within one directory; `**` crosses directories (\"**/*.rs\").",
            json!({
                "type": "object",
                "properties": {
                    "pattern": {"type": "string", "description": "glob pattern, relative to path"},
                    "path": {"type": "string", "description": "directory to search (default: the workspace)"}
                },
                "required": ["pattern"],
                "additionalProperties": false
            }),
        ),
        "shell.bash" => (
            "Run a command with bash -c in the workspace (stdin is empty). Returns stdout and stderr combined, then the exit code. Output over 64 KiB keeps its first and last 32 KiB, marked. On timeout the command and everything it started are killed; processes left running when it exits are killed too.",
            json!({
                "type": "object",
                "properties": {
                    "command": {"type": "string", "description": "the shell command"},
                    "timeout_secs": {"type": "integer", "minimum": 1, "maximum": shell::MAX_TIMEOUT_SECS, "description": "seconds before it is killed (default 120)"}
                },
                "required": ["command"],
                "additionalProperties": false
            }),
        ),
        _ => return None,
    };
    let name = TOOLS.iter().find(|t| **t == name)?;
    Some(ToolSpec {
        name,
        description,
        parameters,
    })
}

/// Every tool's spec, in [`TOOLS`] order.
pub fn specs() -> Vec<ToolSpec> {
    TOOLS.iter().filter_map(|t| spec(t)).collect()
}

/// The built-in tools an agent gets: every one, but those its `tools:` settings switch off
/// (`(name, enabled)` pairs; names that are no built-in tool are left to whoever offers them,
/// e.g. subagents).
pub fn enabled_tools<'a>(
    settings: impl IntoIterator<Item = (&'a str, bool)>,
) -> std::collections::BTreeSet<String> {
    let off: std::collections::BTreeSet<&str> = settings
        .into_iter()
        .filter(|(_, enabled)| !enabled)
        .map(|(name, _)| name)
        .collect();
    TOOLS
        .iter()
        .filter(|t| !off.contains(*t))
        .map(|t| t.to_string())
        .collect()
}

/// The arguments that start the executor for `enabled` tools (none: none), after the kaged
/// binary as the cage sees it (`kaged_cage::HELPER`): `tool-exec --tools a,b`.
pub fn executor_args(enabled: &std::collections::BTreeSet<String>) -> Vec<String> {
    let list: Vec<&str> = enabled.iter().map(String::as_str).collect();
    vec!["tool-exec".into(), "--tools".into(), list.join(",")]
}

/// A tool's result before it becomes an outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Done {
    pub output: String,
    pub truncated: bool,
}

impl Done {
    pub fn whole(output: String) -> Done {
        Done {
            output,
            truncated: false,
        }
    }

    pub fn cut(output: String) -> Done {
        Done {
            output,
            truncated: true,
        }
    }
}

/// The arguments object of a call: an object, or a string holding one (model APIs deliver
/// arguments as text).
pub fn arguments_of(value: &Value) -> Result<Value, String> {
    let value = match value {
        Value::String(text) => serde_json::from_str(text)
            .map_err(|e| format!("the arguments are not JSON ({e}); send a JSON object"))?,
        Value::Null => Value::Object(Default::default()),
        other => other.clone(),
    };
    if !value.is_object() {
        return Err(format!("the arguments must be a JSON object, not {value}"));
    }
    Ok(value)
}

/// A tool's arguments, or what is wrong with them (and the schema they must fit).
fn parse<T: DeserializeOwned>(tool: &str, value: &Value) -> Result<T, String> {
    let value = arguments_of(value)?;
    serde_json::from_value(value).map_err(|e| {
        let schema = spec(tool)
            .map(|s| s.parameters.to_string())
            .unwrap_or_default();
        format!("invalid arguments for {tool}: {e}; they must fit {schema}")
    })
}

/// Run blocking work off the async threads.
async fn blocking(
    work: impl FnOnce() -> Result<Done, String> + Send + 'static,
) -> Result<Done, String> {
    tokio::task::spawn_blocking(work)
        .await
        .unwrap_or_else(|e| Err(format!("the tool failed unexpectedly: {e}")))
}

/// Run one call of `tool` with `arguments` (an object, or JSON text of one).
pub async fn run(tool: &str, arguments: &Value) -> ToolOutcome {
    let result = match tool {
        "file.read" => match parse(tool, arguments) {
            Ok(a) => blocking(move || files::read(a)).await,
            Err(e) => Err(e),
        },
        "file.write" => match parse(tool, arguments) {
            Ok(a) => blocking(move || files::write(a)).await,
            Err(e) => Err(e),
        },
        "edit.text" => match parse(tool, arguments) {
            Ok(a) => blocking(move || files::edit(a)).await,
            Err(e) => Err(e),
        },
        "search.grep" => match parse(tool, arguments) {
            Ok(a) => blocking(move || search::grep(a)).await,
            Err(e) => Err(e),
        },
        "search.glob" => match parse(tool, arguments) {
            Ok(a) => blocking(move || search::glob(a)).await,
            Err(e) => Err(e),
        },
        "shell.bash" => match parse(tool, arguments) {
            Ok(a) => shell::bash(a).await,
            Err(e) => Err(e),
        },
        other => Err(unknown_tool(other)),
    };
    match result {
        Ok(done) => ToolOutcome::Ok {
            output: done.output,
            truncated: done.truncated,
        },
        Err(error) => ToolOutcome::Err { error },
    }
}

pub(crate) fn unknown_tool(name: &str) -> String {
    format!(
        "there is no tool {name:?}; the tools are {}",
        TOOLS.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_tool_has_a_spec_whose_schema_is_an_object() {
        let all = specs();
        assert_eq!(all.len(), TOOLS.len());
        for s in all {
            assert_eq!(s.parameters["type"], "object", "{}", s.name);
            assert!(!s.description.is_empty());
            assert!(s.parameters["required"].is_array(), "{}", s.name);
        }
        assert!(spec("file.delete").is_none());
    }

    #[test]
    fn settings_switch_built_in_tools_off() {
        assert_eq!(enabled_tools([]).len(), TOOLS.len());
        let some = enabled_tools([
            ("shell.bash", false),
            ("file.read", true),
            ("helper", false),
        ]);
        assert!(!some.contains("shell.bash") && some.contains("file.read"));
        assert_eq!(some.len(), TOOLS.len() - 1);
        let only_read: std::collections::BTreeSet<String> = ["file.read".to_string()].into();
        assert_eq!(
            executor_args(&only_read),
            ["tool-exec", "--tools", "file.read"]
        );
        assert_eq!(
            executor_args(&Default::default()),
            ["tool-exec", "--tools", ""]
        );
    }

    #[test]
    fn arguments_may_be_text_but_must_be_an_object() {
        assert_eq!(arguments_of(&json!("{\"a\": 1}")).unwrap(), json!({"a": 1}));
        assert!(
            arguments_of(&json!("{not json"))
                .unwrap_err()
                .contains("not JSON")
        );
        assert!(
            arguments_of(&json!([1]))
                .unwrap_err()
                .contains("JSON object")
        );
        assert_eq!(arguments_of(&Value::Null).unwrap(), json!({}));
    }

    #[tokio::test]
    async fn bad_arguments_and_unknown_tools_are_errors_not_panics() {
        let cases = [
            ("file.read", json!({})),
            ("file.read", json!({"path": 3})),
            ("file.read", json!({"path": "x", "extra": 1})),
            ("file.read", json!({"path": "x", "offset": -1})),
            ("shell.bash", json!("{\"command\": ")),
            (
                "shell.bash",
                json!({"command": "true", "timeout_secs": 9999}),
            ),
            ("edit.text", json!({"path": "x"})),
            ("search.grep", json!(7)),
            ("nope", json!({})),
        ];
        for (tool, args) in cases {
            match run(tool, &args).await {
                ToolOutcome::Err { error } => assert!(!error.is_empty()),
                ok => panic!("{tool} {args} gave {ok:?}"),
            }
        }
        let ToolOutcome::Err { error } = run("file.read", &json!({})).await else {
            unreachable!()
        };
        assert!(
            error.contains("missing field `path`") && error.contains("\"required\""),
            "{error}"
        );
        let ToolOutcome::Err { error } = run("nope", &json!({})).await else {
            unreachable!()
        };
        assert!(error.contains("shell.bash"), "{error}");
    }
}
