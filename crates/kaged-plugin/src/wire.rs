//! The plugin wire protocol: JSON-RPC 2.0, one message per line on the plugin's stdin and
//! stdout, in both directions. kaged calls the plugin (`initialize`, `shutdown`, `health`,
//! `tools/call`) and notifies it (`initialized`, hooks); the plugin calls kaged for its storage
//! (`storage/*`). Parsing is strict (a line that is not one JSON-RPC 2.0 message is an error
//! the supervisor counts); the edge bounds line length with [`MAX_LINE_BYTES`].

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value as Json, json};

use crate::capability::Storage;

/// The `jsonrpc` member of every message.
pub const JSONRPC: &str = "2.0";

/// The longest line kaged reads from a plugin; a longer one is a protocol error (a flood of
/// output is bounded, never buffered).
pub const MAX_LINE_BYTES: usize = 1024 * 1024;

/// Method and notification names.
pub mod method {
    /// kaged → plugin request: the first message, with the API version and the settings.
    pub const INITIALIZE: &str = "initialize";
    /// kaged → plugin notification, after the plugin answered `initialize`.
    pub const INITIALIZED: &str = "initialized";
    /// kaged → plugin request: finish and exit (killed after `shutdown_timeout_sec`).
    pub const SHUTDOWN: &str = "shutdown";
    /// kaged → plugin request, every `health_interval_sec`.
    pub const HEALTH: &str = "health";
    /// kaged → plugin request: run one of the plugin's tools for a model agent.
    pub const TOOLS_CALL: &str = "tools/call";
    /// kaged → plugin notification: a session started.
    pub const HOOK_ON_SESSION_START: &str = "hooks/on_session_start";
    /// kaged → plugin notification: a session's agent is idle.
    pub const HOOK_ON_SESSION_IDLE: &str = "hooks/on_session_idle";
    /// plugin → kaged request: one key's value (`kaged:storage:read`).
    pub const STORAGE_GET: &str = "storage/get";
    /// plugin → kaged request: set one key (`kaged:storage:write`).
    pub const STORAGE_SET: &str = "storage/set";
    /// plugin → kaged request: delete one key (`kaged:storage:write`).
    pub const STORAGE_DELETE: &str = "storage/delete";
    /// plugin → kaged request: the keys, optionally under a prefix (`kaged:storage:read`).
    pub const STORAGE_LIST: &str = "storage/list";
}

/// Error codes: JSON-RPC's own, then kaged's (in the server-error range).
pub mod code {
    /// The line is not JSON.
    pub const PARSE_ERROR: i64 = -32700;
    /// The JSON is not a JSON-RPC 2.0 message.
    pub const INVALID_REQUEST: i64 = -32600;
    /// No such method.
    pub const METHOD_NOT_FOUND: i64 = -32601;
    /// The parameters do not fit the method.
    pub const INVALID_PARAMS: i64 = -32602;
    /// The callee failed.
    pub const INTERNAL_ERROR: i64 = -32603;
    /// The plugin did not declare the capability the request needs.
    pub const CAPABILITY_DENIED: i64 = -32001;
    /// A call before `initialize` was answered.
    pub const NOT_INITIALIZED: i64 = -32002;
    /// The plugin cannot speak the kaged API version it was offered.
    pub const UNSUPPORTED_API: i64 = -32003;
    /// A storage key or value is over its limit.
    pub const STORAGE_LIMIT: i64 = -32004;
    /// `tools/call` named a tool the plugin does not offer.
    pub const UNKNOWN_TOOL: i64 = -32005;
}

/// Longest storage key, in bytes.
pub const MAX_STORAGE_KEY_BYTES: usize = 256;
/// Largest storage value, as compact JSON, in bytes.
pub const MAX_STORAGE_VALUE_BYTES: usize = 64 * 1024;

/// A request id: a number or a string (JSON-RPC allows both; kaged sends numbers).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Id {
    /// A whole number.
    Number(i64),
    /// A string.
    String(String),
}

/// A JSON-RPC error object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, thiserror::Error)]
#[error("{message} (code {code})")]
pub struct RpcError {
    /// One of [`code`]'s constants (or the plugin's own).
    pub code: i64,
    /// One sentence saying what went wrong.
    pub message: String,
    /// Anything more, for machines.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<Json>,
}

impl RpcError {
    /// An error without data.
    pub fn new(code: i64, message: impl Into<String>) -> RpcError {
        RpcError {
            code,
            message: message.into(),
            data: None,
        }
    }
}

/// One line of the protocol.
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    /// A call that wants an answer with the same id.
    Request {
        id: Id,
        method: String,
        params: Option<Json>,
    },
    /// A call that wants no answer.
    Notification {
        method: String,
        params: Option<Json>,
    },
    /// The answer to a request. `id` is `None` only when the request could not be read.
    Response {
        id: Option<Id>,
        outcome: Result<Json, RpcError>,
    },
}

/// Why a line is not a JSON-RPC 2.0 message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// Over [`MAX_LINE_BYTES`].
    #[error("the line is longer than {MAX_LINE_BYTES} bytes")]
    TooLong,
    /// Not JSON at all.
    #[error("the line is not JSON: {0}")]
    NotJson(String),
    /// JSON, but not one JSON-RPC 2.0 message (or an answer to another request).
    #[error("the message is not JSON-RPC 2.0: {0}")]
    Invalid(String),
}

impl WireError {
    /// The JSON-RPC error code to answer with.
    pub fn code(&self) -> i64 {
        match self {
            WireError::TooLong | WireError::Invalid(_) => code::INVALID_REQUEST,
            WireError::NotJson(_) => code::PARSE_ERROR,
        }
    }
}

fn invalid(problem: impl Into<String>) -> WireError {
    WireError::Invalid(problem.into())
}

fn id_of(value: &Json) -> Result<Id, WireError> {
    match value {
        Json::Number(n) => n
            .as_i64()
            .map(Id::Number)
            .ok_or_else(|| invalid("a numeric id must be a whole number")),
        Json::String(s) => Ok(Id::String(s.clone())),
        _ => Err(invalid("the id must be a number or a string")),
    }
}

impl Message {
    /// Reads one line (without its newline).
    pub fn parse(line: &[u8]) -> Result<Message, WireError> {
        if line.len() > MAX_LINE_BYTES {
            return Err(WireError::TooLong);
        }
        let value: Json =
            serde_json::from_slice(line).map_err(|e| WireError::NotJson(e.to_string()))?;
        let Json::Object(mut object) = value else {
            return Err(invalid("a message is a JSON object (batches are not used)"));
        };
        if object.remove("jsonrpc") != Some(Json::String(JSONRPC.into())) {
            return Err(invalid("\"jsonrpc\": \"2.0\" is missing"));
        }
        let id = object.remove("id");
        let params = object.remove("params");
        if let Some(p) = &params
            && !(p.is_object() || p.is_array())
        {
            return Err(invalid("params must be an object or an array"));
        }
        let message = match (object.remove("method"), id) {
            (Some(Json::String(method)), Some(id)) => Message::Request {
                id: id_of(&id)?,
                method,
                params,
            },
            (Some(Json::String(method)), None) => Message::Notification { method, params },
            (Some(_), _) => return Err(invalid("the method must be a string")),
            (None, id) => {
                if params.is_some() {
                    return Err(invalid("a response has no params"));
                }
                let id = match id {
                    None => return Err(invalid("a response needs its request's id")),
                    Some(Json::Null) => None,
                    Some(id) => Some(id_of(&id)?),
                };
                let outcome = match (object.remove("result"), object.remove("error")) {
                    (Some(result), None) => Ok(result),
                    (None, Some(error)) => Err(serde_json::from_value::<RpcError>(error)
                        .map_err(|e| invalid(format!("the error object is malformed: {e}")))?),
                    (Some(_), Some(_)) => {
                        return Err(invalid("a response has a result or an error, not both"));
                    }
                    (None, None) => {
                        return Err(invalid("a message needs a method, a result or an error"));
                    }
                };
                Message::Response { id, outcome }
            }
        };
        if let Some(extra) = object.keys().next() {
            return Err(invalid(format!("unexpected member `{extra}`")));
        }
        Ok(message)
    }

    /// The message as one line of compact JSON, without the newline (compact JSON never
    /// contains one).
    pub fn to_line(&self) -> String {
        let mut object = Map::new();
        object.insert("jsonrpc".into(), json!(JSONRPC));
        match self {
            Message::Request { id, method, params } => {
                object.insert("id".into(), json!(id));
                object.insert("method".into(), json!(method));
                if let Some(params) = params {
                    object.insert("params".into(), params.clone());
                }
            }
            Message::Notification { method, params } => {
                object.insert("method".into(), json!(method));
                if let Some(params) = params {
                    object.insert("params".into(), params.clone());
                }
            }
            Message::Response { id, outcome } => {
                object.insert("id".into(), json!(id));
                match outcome {
                    Ok(result) => object.insert("result".into(), result.clone()),
                    Err(error) => object.insert("error".into(), json!(error)),
                };
            }
        }
        Json::Object(object).to_string()
    }

    /// A request with typed params.
    pub fn request(id: i64, method: &str, params: impl Serialize) -> Message {
        Message::Request {
            id: Id::Number(id),
            method: method.into(),
            params: Some(json!(params)),
        }
    }

    /// A notification with typed params.
    pub fn notification(method: &str, params: impl Serialize) -> Message {
        Message::Notification {
            method: method.into(),
            params: Some(json!(params)),
        }
    }
}

/// `initialize` params: the API version and both kinds of settings. Its `Debug` leaves out the
/// operator-local settings, which hold secrets; the line itself is never logged either.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct InitializeParams {
    /// The API version kaged speaks ([`crate::SUPPORTED_API`]).
    pub kaged_api: i64,
    /// Always `{}` from this kaged: one plugin process serves every project, so the
    /// committed settings (the agent's `plugin_config`, matching `config_schema`) come with
    /// each call, in [`CallContext::config`]. Kept for API stability.
    pub config: Json,
    /// The operator-local settings (`system_config_schema`); `{}` when none.
    pub system_config: Json,
}

impl std::fmt::Debug for InitializeParams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InitializeParams")
            .field("kaged_api", &self.kaged_api)
            .field("config", &self.config)
            .field("system_config", &"(redacted)")
            .finish()
    }
}

/// `health`'s answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthResult {
    /// `ok` or `unhealthy`.
    pub status: HealthStatus,
    /// Why, when not `ok`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// A plugin's own view of its health.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HealthStatus {
    /// Working.
    Ok,
    /// Alive but not working (the supervisor counts it as a failed check).
    Unhealthy,
}

/// `tools/call` params: the tool's name within the plugin (without the `PLUGIN.` prefix).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolCallParams {
    /// The tool's name as the manifest lists it.
    pub name: String,
    /// The model's arguments, matching the tool's `input_schema`.
    pub arguments: Json,
    /// Who calls: the session, its project and agent, and that agent's settings for this
    /// plugin.
    #[serde(default)]
    pub context: CallContext,
}

/// Where a call comes from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CallContext {
    /// The project's slug.
    pub project: String,
    /// The calling session.
    pub session_id: String,
    /// The calling agent's name in the project file.
    pub agent: String,
    /// The agent's `plugin_config.PLUGIN` from the project file (committed settings, checked
    /// against the manifest's `config_schema` before the call); `{}` when none.
    #[serde(default = "empty_object")]
    pub config: Json,
}

impl Default for CallContext {
    fn default() -> CallContext {
        CallContext {
            project: String::new(),
            session_id: String::new(),
            agent: String::new(),
            config: empty_object(),
        }
    }
}

fn empty_object() -> Json {
    Json::Object(Default::default())
}

/// `tools/call`'s answer: text for the model, and whether it reports a failure.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToolCallResult {
    /// What the model reads.
    pub content: String,
    /// Whether the call failed (the model still reads `content`).
    #[serde(default)]
    pub is_error: bool,
}

/// `hooks/on_session_start` params.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionStartParams {
    /// The new session.
    pub session_id: String,
    /// Its project's slug.
    pub project: String,
    /// The agent it runs.
    pub agent: String,
}

/// `hooks/on_session_idle` params.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionIdleParams {
    /// The idle session.
    pub session_id: String,
}

/// A storage request from a plugin, checked against its capabilities and the limits.
#[derive(Debug, Clone, PartialEq)]
pub enum StorageOp {
    /// `storage/get`: the key's value, or null.
    Get { key: String },
    /// `storage/set`: store the value under the key.
    Set { key: String, value: Json },
    /// `storage/delete`: remove the key.
    Delete { key: String },
    /// `storage/list`: the keys starting with `prefix` (all when empty).
    List { prefix: String },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyParams {
    key: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SetParams {
    key: String,
    value: Json,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListParams {
    #[serde(default)]
    prefix: String,
}

fn check_key(key: &str) -> Result<(), RpcError> {
    if key.is_empty() || key.len() > MAX_STORAGE_KEY_BYTES || key.chars().any(char::is_control) {
        return Err(RpcError::new(
            code::STORAGE_LIMIT,
            format!(
                "a storage key is 1 to {MAX_STORAGE_KEY_BYTES} bytes without control characters"
            ),
        ));
    }
    Ok(())
}

fn params<T: serde::de::DeserializeOwned>(
    method: &str,
    params: Option<&Json>,
) -> Result<T, RpcError> {
    // Absent params read as `{}` (`storage/list` needs none).
    serde_json::from_value(params.cloned().unwrap_or_else(|| Json::Object(Map::new())))
        .map_err(|e| RpcError::new(code::INVALID_PARAMS, format!("{method}: {e}")))
}

/// A plugin's request to kaged, decided: the storage operation it asks for, or the error to
/// answer with (unknown method, bad params, a capability it did not declare, a limit).
pub fn storage_request(
    method: &str,
    raw: Option<&Json>,
    granted: Storage,
) -> Result<StorageOp, RpcError> {
    let (op, needs_write) = match method {
        method::STORAGE_GET => {
            let p: KeyParams = params(method, raw)?;
            (StorageOp::Get { key: p.key }, false)
        }
        method::STORAGE_LIST => {
            let p: ListParams = params(method, raw)?;
            (StorageOp::List { prefix: p.prefix }, false)
        }
        method::STORAGE_SET => {
            let p: SetParams = params(method, raw)?;
            (
                StorageOp::Set {
                    key: p.key,
                    value: p.value,
                },
                true,
            )
        }
        method::STORAGE_DELETE => {
            let p: KeyParams = params(method, raw)?;
            (StorageOp::Delete { key: p.key }, true)
        }
        other => {
            return Err(RpcError::new(
                code::METHOD_NOT_FOUND,
                format!(
                    "kaged serves no method `{other}` to plugins (it serves storage/get, storage/set, storage/delete, storage/list)"
                ),
            ));
        }
    };
    let (allowed, capability) = if needs_write {
        (granted.write, "kaged:storage:write")
    } else {
        (granted.read, "kaged:storage:read")
    };
    if !allowed {
        return Err(RpcError::new(
            code::CAPABILITY_DENIED,
            format!("{method} needs the capability {capability}, which the plugin did not declare"),
        ));
    }
    match &op {
        StorageOp::Get { key } | StorageOp::Delete { key } => check_key(key)?,
        StorageOp::Set { key, value } => {
            check_key(key)?;
            let size = value.to_string().len();
            if size > MAX_STORAGE_VALUE_BYTES {
                return Err(RpcError::new(
                    code::STORAGE_LIMIT,
                    format!(
                        "the value is {size} bytes as JSON; at most {MAX_STORAGE_VALUE_BYTES} are kept"
                    ),
                ));
            }
        }
        StorageOp::List { prefix } if prefix.len() > MAX_STORAGE_KEY_BYTES => {
            return Err(RpcError::new(
                code::STORAGE_LIMIT,
                format!("a prefix is at most {MAX_STORAGE_KEY_BYTES} bytes"),
            ));
        }
        StorageOp::List { .. } => {}
    }
    Ok(op)
}

#[cfg(test)]
mod tests;
