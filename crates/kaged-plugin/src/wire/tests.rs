//! The wire protocol on data: lines in, messages out, and back.

use super::*;

fn parse(line: &str) -> Result<Message, WireError> {
    Message::parse(line.as_bytes())
}

fn invalid_because(line: &str) -> String {
    match parse(line) {
        Err(WireError::Invalid(why)) => why,
        other => panic!("{line}: {other:?}"),
    }
}

#[test]
fn every_kind_of_message_round_trips_on_one_line() {
    let messages = [
        Message::request(
            1,
            method::INITIALIZE,
            InitializeParams {
                kaged_api: 1,
                config: json!({"folder": "notes"}),
                system_config: json!({"token": "x\ny"}),
            },
        ),
        Message::notification(method::INITIALIZED, json!({})),
        Message::Request {
            id: Id::String("a-1".into()),
            method: method::HEALTH.into(),
            params: None,
        },
        Message::Response {
            id: Some(Id::Number(7)),
            outcome: Ok(json!({"content": "found 3", "is_error": false})),
        },
        Message::Response {
            id: Some(Id::Number(8)),
            outcome: Err(RpcError::new(code::UNKNOWN_TOOL, "no tool `x`")),
        },
        Message::Response {
            id: None,
            outcome: Err(RpcError {
                code: code::PARSE_ERROR,
                message: "bad".into(),
                data: Some(json!({"line": 1})),
            }),
        },
        Message::notification(
            method::HOOK_ON_SESSION_START,
            SessionStartParams {
                session_id: "s1".into(),
                project: "demo".into(),
                agent: "primary".into(),
            },
        ),
    ];
    for message in messages {
        let line = message.to_line();
        assert!(!line.contains('\n'), "{line}");
        assert_eq!(parse(&line).unwrap(), message, "{line}");
    }
    assert_eq!(
        Message::request(
            3,
            method::TOOLS_CALL,
            ToolCallParams {
                name: "search".into(),
                arguments: json!({"query": "q"}),
                context: CallContext {
                    project: "demo".into(),
                    session_id: "s1".into(),
                    agent: "primary".into(),
                    config: json!({"max": 3}),
                },
            }
        )
        .to_line(),
        r#"{"id":3,"jsonrpc":"2.0","method":"tools/call","params":{"arguments":{"query":"q"},"context":{"agent":"primary","config":{"max":3},"project":"demo","session_id":"s1"},"name":"search"}}"#
    );
    // A call without a context (an older kaged) reads with an empty one.
    let params: ToolCallParams =
        serde_json::from_value(json!({"name": "search", "arguments": {}})).unwrap();
    assert_eq!(params.context.config, json!({}));
}

#[test]
fn initialize_params_never_show_the_operator_s_secrets() {
    let params = InitializeParams {
        kaged_api: 1,
        config: json!({"folder": "notes"}),
        system_config: json!({"token": "s3cret-value"}),
    };
    let shown = format!("{params:?}");
    assert!(!shown.contains("s3cret-value"), "{shown}");
    assert!(
        shown.contains("notes") && shown.contains("(redacted)"),
        "{shown}"
    );
}

#[test]
fn what_a_plugin_writes_is_read_strictly() {
    assert!(matches!(parse("not json"), Err(WireError::NotJson(_))));
    assert_eq!(parse("{").unwrap_err().code(), code::PARSE_ERROR);
    assert_eq!(
        invalid_because("[1]"),
        "a message is a JSON object (batches are not used)"
    );
    assert_eq!(
        invalid_because(r#"{"id":1,"result":{}}"#),
        "\"jsonrpc\": \"2.0\" is missing"
    );
    assert_eq!(
        invalid_because(r#"{"jsonrpc":"1.0","id":1,"result":{}}"#),
        "\"jsonrpc\": \"2.0\" is missing"
    );
    assert_eq!(
        invalid_because(r#"{"jsonrpc":"2.0","id":1}"#),
        "a message needs a method, a result or an error"
    );
    assert_eq!(
        invalid_because(r#"{"jsonrpc":"2.0","result":1}"#),
        "a response needs its request's id"
    );
    assert_eq!(
        invalid_because(r#"{"jsonrpc":"2.0","id":1,"result":1,"error":{"code":1,"message":"m"}}"#),
        "a response has a result or an error, not both"
    );
    assert!(
        invalid_because(r#"{"jsonrpc":"2.0","id":1,"error":{"code":"x"}}"#)
            .starts_with("the error object is malformed")
    );
    assert_eq!(
        invalid_because(r#"{"jsonrpc":"2.0","id":1.5,"result":1}"#),
        "a numeric id must be a whole number"
    );
    assert_eq!(
        invalid_because(r#"{"jsonrpc":"2.0","id":[1],"method":"m"}"#),
        "the id must be a number or a string"
    );
    assert_eq!(
        invalid_because(r#"{"jsonrpc":"2.0","method":7}"#),
        "the method must be a string"
    );
    assert_eq!(
        invalid_because(r#"{"jsonrpc":"2.0","method":"m","params":3}"#),
        "params must be an object or an array"
    );
    assert_eq!(
        invalid_because(r#"{"jsonrpc":"2.0","method":"m","extra":3}"#),
        "unexpected member `extra`"
    );
    assert_eq!(
        invalid_because(r#"{"jsonrpc":"2.0","id":1,"result":1,"params":{}}"#),
        "a response has no params"
    );
    // A flood is refused by length, before any parsing.
    let long = format!(
        r#"{{"jsonrpc":"2.0","method":"m","params":{{"x":"{}"}}}}"#,
        "a".repeat(MAX_LINE_BYTES)
    );
    assert_eq!(parse(&long), Err(WireError::TooLong));
    assert_eq!(WireError::TooLong.code(), code::INVALID_REQUEST);
}

#[test]
fn typed_results_read_what_plugins_send() {
    let health: HealthResult = serde_json::from_value(json!({"status": "ok"})).unwrap();
    assert_eq!(
        health,
        HealthResult {
            status: HealthStatus::Ok,
            message: None
        }
    );
    let sick: HealthResult =
        serde_json::from_value(json!({"status": "unhealthy", "message": "db down"})).unwrap();
    assert_eq!(sick.status, HealthStatus::Unhealthy);
    assert!(serde_json::from_value::<HealthResult>(json!({"status": "fine"})).is_err());
    let tool: ToolCallResult = serde_json::from_value(json!({"content": "3 notes"})).unwrap();
    assert_eq!(
        tool,
        ToolCallResult {
            content: "3 notes".into(),
            is_error: false
        }
    );
}

const ALL: Storage = Storage {
    read: true,
    write: true,
};

#[test]
fn storage_requests_need_their_capability() {
    let get = json!({"key": "k"});
    let set = json!({"key": "k", "value": {"n": 1}});
    let read_only = Storage {
        read: true,
        write: false,
    };
    let write_only = Storage {
        read: false,
        write: true,
    };
    assert_eq!(
        storage_request(method::STORAGE_GET, Some(&get), read_only),
        Ok(StorageOp::Get { key: "k".into() })
    );
    assert_eq!(
        storage_request(method::STORAGE_LIST, None, read_only),
        Ok(StorageOp::List {
            prefix: String::new()
        })
    );
    assert_eq!(
        storage_request(method::STORAGE_SET, Some(&set), write_only),
        Ok(StorageOp::Set {
            key: "k".into(),
            value: json!({"n": 1})
        })
    );
    assert_eq!(
        storage_request(method::STORAGE_DELETE, Some(&get), write_only),
        Ok(StorageOp::Delete { key: "k".into() })
    );
    for (method, params, granted, capability) in [
        (method::STORAGE_GET, &get, write_only, "kaged:storage:read"),
        (
            method::STORAGE_LIST,
            &json!({}),
            write_only,
            "kaged:storage:read",
        ),
        (method::STORAGE_SET, &set, read_only, "kaged:storage:write"),
        (
            method::STORAGE_DELETE,
            &get,
            read_only,
            "kaged:storage:write",
        ),
        (
            method::STORAGE_GET,
            &get,
            Storage::default(),
            "kaged:storage:read",
        ),
    ] {
        let e = storage_request(method, Some(params), granted).unwrap_err();
        assert_eq!(e.code, code::CAPABILITY_DENIED, "{method}");
        assert_eq!(
            e.message,
            format!("{method} needs the capability {capability}, which the plugin did not declare")
        );
    }
}

#[test]
fn storage_requests_are_bounded_and_well_formed() {
    let e = storage_request("storage/drop", None, ALL).unwrap_err();
    assert_eq!(e.code, code::METHOD_NOT_FOUND);
    assert!(
        e.message
            .starts_with("kaged serves no method `storage/drop`")
    );
    for bad in [
        json!({}),
        json!({"key": 1}),
        json!({"key": "k", "other": 1}),
        json!("k"),
    ] {
        let e = storage_request(method::STORAGE_GET, Some(&bad), ALL).unwrap_err();
        assert_eq!(e.code, code::INVALID_PARAMS, "{bad}");
        assert!(e.message.starts_with("storage/get: "), "{}", e.message);
    }
    assert_eq!(
        storage_request(method::STORAGE_SET, Some(&json!({"key": "k"})), ALL)
            .unwrap_err()
            .code,
        code::INVALID_PARAMS
    );
    for key in [
        String::new(),
        "k".repeat(MAX_STORAGE_KEY_BYTES + 1),
        "a\nb".into(),
    ] {
        let e = storage_request(method::STORAGE_GET, Some(&json!({"key": key})), ALL).unwrap_err();
        assert_eq!(e.code, code::STORAGE_LIMIT, "{key:?}");
    }
    assert!(
        storage_request(
            method::STORAGE_GET,
            Some(&json!({"key": "k".repeat(MAX_STORAGE_KEY_BYTES)})),
            ALL
        )
        .is_ok()
    );
    let just_fits = "v".repeat(MAX_STORAGE_VALUE_BYTES - 2);
    assert!(
        storage_request(
            method::STORAGE_SET,
            Some(&json!({"key": "k", "value": just_fits})),
            ALL
        )
        .is_ok()
    );
    let too_big = "v".repeat(MAX_STORAGE_VALUE_BYTES - 1);
    let e = storage_request(
        method::STORAGE_SET,
        Some(&json!({"key": "k", "value": too_big})),
        ALL,
    )
    .unwrap_err();
    assert_eq!(e.code, code::STORAGE_LIMIT);
    assert_eq!(
        e.message,
        format!(
            "the value is {} bytes as JSON; at most {MAX_STORAGE_VALUE_BYTES} are kept",
            MAX_STORAGE_VALUE_BYTES + 1
        )
    );
    let e = storage_request(
        method::STORAGE_LIST,
        Some(&json!({"prefix": "p".repeat(MAX_STORAGE_KEY_BYTES + 1)})),
        ALL,
    )
    .unwrap_err();
    assert_eq!(e.code, code::STORAGE_LIMIT);
}
