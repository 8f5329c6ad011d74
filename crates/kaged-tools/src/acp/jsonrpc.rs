//! The JSON-RPC pieces of the shim: which agent lines it serves ([`served_request`]), the
//! response it writes back to the agent ([`response`]) and the `_kaged/served` line it sends
//! the daemon ([`served_notice`]).

use serde_json::{Map, Value, json};

/// The client methods the shim carries out itself, inside the cage.
pub const SERVED_METHODS: [&str; 7] = [
    "fs/read_text_file",
    "fs/write_text_file",
    "terminal/create",
    "terminal/output",
    "terminal/wait_for_exit",
    "terminal/kill",
    "terminal/release",
];

/// The method of the notification that tells the daemon about each served request.
pub const SERVED_NOTICE: &str = "_kaged/served";
/// The shim's notice to the daemon that the agent could not be started (`{"reason"}`).
pub const CANNOT_START_NOTICE: &str = "_kaged/cannot_start";

pub const INVALID_PARAMS: i64 = -32602;
pub const INTERNAL_ERROR: i64 = -32603;

/// A request from the agent that the shim serves.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    /// Echoed back exactly as received (string or number).
    pub id: Value,
    pub method: String,
    pub params: Value,
}

/// The request on this line when it is one the shim serves; `None`: the line goes to the
/// daemon unchanged (other methods, notifications, responses, lines that are not JSON).
pub fn served_request(line: &[u8]) -> Option<Request> {
    let value: Value = serde_json::from_slice(line).ok()?;
    let object = value.as_object()?;
    let method = object.get("method")?.as_str()?;
    if !SERVED_METHODS.contains(&method) {
        return None;
    }
    let id = object
        .get("id")
        .filter(|id| id.is_string() || id.is_number())?;
    Some(Request {
        id: id.clone(),
        method: method.to_string(),
        params: object.get("params").cloned().unwrap_or(Value::Null),
    })
}

/// Why a served request failed, as its JSON-RPC error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub code: i64,
    pub message: String,
}

impl Failure {
    pub fn invalid(message: impl Into<String>) -> Failure {
        Failure {
            code: INVALID_PARAMS,
            message: message.into(),
        }
    }

    pub fn internal(message: impl Into<String>) -> Failure {
        Failure {
            code: INTERNAL_ERROR,
            message: message.into(),
        }
    }
}

/// An I/O error's text without Rust's " (os error N)" suffix: "Read-only file system".
pub fn io_text(e: &std::io::Error) -> String {
    let text = e.to_string();
    match text.rfind(" (os error ") {
        Some(at) if text.ends_with(')') => text[..at].to_string(),
        _ => text,
    }
}

/// What the daemon is told about a served request: never file contents or output.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Audit {
    /// `path` (fs), `command` and `args` (terminal/create), `terminalId` (other terminal
    /// methods); whatever of these the request had.
    pub subject: Map<String, Value>,
    /// Bytes read, written, or of output returned.
    pub bytes: Option<u64>,
}

impl Audit {
    pub fn with(mut self, key: &str, value: impl Into<Value>) -> Audit {
        self.subject.insert(key.to_string(), value.into());
        self
    }
}

/// The response line (without its newline) to the agent.
pub fn response(id: &Value, result: &Result<Value, Failure>) -> Vec<u8> {
    let line = match result {
        Ok(result) => json!({"jsonrpc": "2.0", "id": id, "result": result}),
        Err(f) => json!({
            "jsonrpc": "2.0",
            "id": id,
            "error": {"code": f.code, "message": f.message},
        }),
    };
    line.to_string().into_bytes()
}

/// The `_kaged/served` notification line (without its newline) to the daemon.
pub fn served_notice(method: &str, audit: &Audit, result: &Result<Value, Failure>) -> Vec<u8> {
    let mut params = Map::new();
    params.insert("method".into(), method.into());
    for (key, value) in &audit.subject {
        params.insert(key.clone(), value.clone());
    }
    params.insert("ok".into(), result.is_ok().into());
    params.insert(
        "error".into(),
        result
            .as_ref()
            .err()
            .map_or(Value::Null, |f| f.message.clone().into()),
    );
    params.insert("bytes".into(), audit.bytes.map_or(Value::Null, Value::from));
    json!({"jsonrpc": "2.0", "method": SERVED_NOTICE, "params": params})
        .to_string()
        .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_requests_for_served_methods_are_taken() {
        let req = served_request(
            br#"{"jsonrpc":"2.0","id":"a-1","method":"fs/read_text_file","params":{"path":"/x"}}"#,
        )
        .unwrap();
        assert_eq!(req.id, json!("a-1"));
        assert_eq!(req.method, "fs/read_text_file");
        assert_eq!(req.params, json!({"path": "/x"}));
        let numbered =
            served_request(br#"{"jsonrpc":"2.0","id":7,"method":"terminal/kill"}"#).unwrap();
        assert_eq!(numbered.id, json!(7));
        assert_eq!(numbered.params, Value::Null);
        for relayed in [
            br#"{"jsonrpc":"2.0","id":1,"method":"session/request_permission","params":{}}"#
                .as_slice(),
            br#"{"jsonrpc":"2.0","method":"fs/write_text_file","params":{}}"#,
            br#"{"jsonrpc":"2.0","id":null,"method":"fs/write_text_file","params":{}}"#,
            br#"{"jsonrpc":"2.0","id":1,"result":{}}"#,
            b"not json",
            b"[1,2]",
        ] {
            assert_eq!(
                served_request(relayed),
                None,
                "{}",
                String::from_utf8_lossy(relayed)
            );
        }
    }

    #[test]
    fn responses_echo_the_id_and_carry_result_or_error() {
        let ok = response(&json!("x"), &Ok(json!({})));
        let ok: Value = serde_json::from_slice(&ok).unwrap();
        assert_eq!(ok, json!({"jsonrpc":"2.0","id":"x","result":{}}));
        let err = response(&json!(3), &Err(Failure::internal("cannot write /x: nope")));
        let err: Value = serde_json::from_slice(&err).unwrap();
        assert_eq!(
            err,
            json!({"jsonrpc":"2.0","id":3,"error":{"code":-32603,"message":"cannot write /x: nope"}})
        );
    }

    #[test]
    fn the_notice_names_the_request_and_never_its_data() {
        let audit = Audit::default().with("path", "/p/a.txt");
        let audit = Audit {
            bytes: Some(3),
            ..audit
        };
        let line = served_notice("fs/write_text_file", &audit, &Ok(json!({})));
        let line: Value = serde_json::from_slice(&line).unwrap();
        assert_eq!(
            line,
            json!({"jsonrpc":"2.0","method":"_kaged/served","params":{
                "method":"fs/write_text_file","path":"/p/a.txt","ok":true,"error":null,"bytes":3}})
        );
        let failed = served_notice(
            "terminal/output",
            &Audit::default().with("terminalId", "term-9"),
            &Err(Failure::invalid("no terminal term-9")),
        );
        let failed: Value = serde_json::from_slice(&failed).unwrap();
        assert_eq!(failed["params"]["ok"], json!(false));
        assert_eq!(failed["params"]["error"], json!("no terminal term-9"));
        assert_eq!(failed["params"]["bytes"], Value::Null);
    }

    #[test]
    fn os_error_numbers_are_left_out() {
        let e = std::io::Error::from_raw_os_error(30);
        assert_eq!(io_text(&e), "Read-only file system");
    }
}
