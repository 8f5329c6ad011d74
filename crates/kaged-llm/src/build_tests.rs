//! Request building tests: URL, headers, where the system prompt goes, the history with tool
//! calls and results, tools, the stream flag, for each driver.

use super::*;
use crate::types::{ToolCall, ToolSpec};

fn endpoint(driver: Driver, base: &str) -> Endpoint {
    Endpoint {
        driver,
        base_url: base.into(),
        api_key: Some(Secret::new("sk-build-test-key".into())),
        model: "m-1".into(),
    }
}

fn request() -> Request {
    Request {
        system: Some("You are terse.".into()),
        messages: vec![
            Message::User {
                text: "Read main.rs".into(),
            },
            Message::Assistant {
                text: "Reading.".into(),
                tool_calls: vec![
                    ToolCall {
                        id: "c1".into(),
                        name: "file.read".into(),
                        arguments: r#"{"path":"main.rs"}"#.into(),
                    },
                    ToolCall {
                        id: "c2".into(),
                        name: "search.grep".into(),
                        arguments: "not json".into(),
                    },
                ],
            },
            Message::ToolResult {
                call_id: "c1".into(),
                content: "fn main() {}".into(),
                is_error: false,
            },
            Message::ToolResult {
                call_id: "c2".into(),
                content: "bad arguments".into(),
                is_error: true,
            },
            Message::User {
                text: "Thanks".into(),
            },
            Message::Assistant {
                text: String::new(),
                tool_calls: vec![],
            },
        ],
        tools: vec![ToolSpec {
            name: "file.read".into(),
            description: "Read a file".into(),
            parameters: json!({"type": "object", "properties": {"path": {"type": "string"}}}),
        }],
        max_output_tokens: Some(512),
    }
}

#[test]
fn urls_append_v1_once() {
    assert_eq!(
        url("https://api.anthropic.com", "messages"),
        "https://api.anthropic.com/v1/messages"
    );
    assert_eq!(
        url("https://openrouter.ai/api/", "chat/completions"),
        "https://openrouter.ai/api/v1/chat/completions"
    );
    assert_eq!(
        url("http://127.0.0.1:8080/v1/", "responses"),
        "http://127.0.0.1:8080/v1/responses"
    );
}

#[test]
fn tool_names_become_wire_names() {
    assert_eq!(wire_tool_name("file.read"), "file__read");
    assert_eq!(wire_tool_name("my agent/x"), "my_agent_x");
    assert_eq!(wire_tool_name(&"a".repeat(80)).len(), 64);
}

#[test]
fn anthropic_messages_puts_the_system_prompt_on_top_and_merges_user_turns() {
    let w = build(
        &endpoint(Driver::AnthropicMessages, "https://api.anthropic.com"),
        &request(),
    );
    assert_eq!(w.url, "https://api.anthropic.com/v1/messages");
    assert!(
        w.headers
            .contains(&("anthropic-version", "2023-06-01".into()))
    );
    assert!(matches!(&w.auth, Some(Auth::XApiKey(k)) if k.expose() == "sk-build-test-key"));
    assert_eq!(
        w.body,
        json!({
            "model": "m-1",
            "max_tokens": 512,
            "system": "You are terse.",
            "messages": [
                {"role": "user", "content": [{"type": "text", "text": "Read main.rs"}]},
                {"role": "assistant", "content": [
                    {"type": "text", "text": "Reading."},
                    {"type": "tool_use", "id": "c1", "name": "file__read", "input": {"path": "main.rs"}},
                    {"type": "tool_use", "id": "c2", "name": "search__grep", "input": {}},
                ]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "c1", "content": "fn main() {}"},
                    {"type": "tool_result", "tool_use_id": "c2", "content": "bad arguments", "is_error": true},
                    {"type": "text", "text": "Thanks"},
                ]},
            ],
            "tools": [{"name": "file__read", "description": "Read a file",
                       "input_schema": {"type": "object", "properties": {"path": {"type": "string"}}}}],
            "stream": true,
        })
    );
    let plain = Request {
        messages: vec![Message::User { text: "hi".into() }],
        ..Request::default()
    };
    let w = build(&endpoint(Driver::AnthropicMessages, "https://x"), &plain);
    assert_eq!(w.body["max_tokens"], json!(DEFAULT_MAX_OUTPUT_TOKENS));
    assert!(w.body.get("system").is_none() && w.body.get("tools").is_none());
    assert!(!format!("{w:?}").contains("sk-build-test-key"));
}

#[test]
fn openai_responses_uses_instructions_and_function_call_items() {
    let w = build(
        &endpoint(Driver::OpenaiResponses, "https://api.openai.com"),
        &request(),
    );
    assert_eq!(w.url, "https://api.openai.com/v1/responses");
    assert!(matches!(&w.auth, Some(Auth::Bearer(_))));
    assert_eq!(
        w.body,
        json!({
            "model": "m-1",
            "instructions": "You are terse.",
            "input": [
                {"type": "message", "role": "user", "content": "Read main.rs"},
                {"type": "message", "role": "assistant", "content": "Reading."},
                {"type": "function_call", "call_id": "c1", "name": "file__read", "arguments": "{\"path\":\"main.rs\"}"},
                {"type": "function_call", "call_id": "c2", "name": "search__grep", "arguments": "not json"},
                {"type": "function_call_output", "call_id": "c1", "output": "fn main() {}"},
                {"type": "function_call_output", "call_id": "c2", "output": "bad arguments"},
                {"type": "message", "role": "user", "content": "Thanks"},
            ],
            "tools": [{"type": "function", "name": "file__read", "description": "Read a file",
                       "parameters": {"type": "object", "properties": {"path": {"type": "string"}}}}],
            "max_output_tokens": 512,
            "store": false,
            "stream": true,
        })
    );
}

#[test]
fn openai_completions_uses_a_system_message_tool_messages_and_usage_in_the_stream() {
    let mut e = endpoint(Driver::OpenaiCompletions, "http://127.0.0.1:11434");
    e.api_key = None;
    let w = build(&e, &request());
    assert_eq!(w.url, "http://127.0.0.1:11434/v1/chat/completions");
    assert_eq!(w.auth, None);
    assert_eq!(
        w.body,
        json!({
            "model": "m-1",
            "messages": [
                {"role": "system", "content": "You are terse."},
                {"role": "user", "content": "Read main.rs"},
                {"role": "assistant", "content": "Reading.", "tool_calls": [
                    {"id": "c1", "type": "function", "function": {"name": "file__read", "arguments": "{\"path\":\"main.rs\"}"}},
                    {"id": "c2", "type": "function", "function": {"name": "search__grep", "arguments": "not json"}},
                ]},
                {"role": "tool", "tool_call_id": "c1", "content": "fn main() {}"},
                {"role": "tool", "tool_call_id": "c2", "content": "bad arguments"},
                {"role": "user", "content": "Thanks"},
            ],
            "tools": [{"type": "function", "function": {"name": "file__read", "description": "Read a file",
                       "parameters": {"type": "object", "properties": {"path": {"type": "string"}}}}}],
            "max_tokens": 512,
            "stream": true,
            "stream_options": {"include_usage": true},
        })
    );
    let only_calls = Request {
        messages: vec![Message::Assistant {
            text: String::new(),
            tool_calls: vec![ToolCall {
                id: "c".into(),
                name: "n".into(),
                arguments: "{}".into(),
            }],
        }],
        ..Request::default()
    };
    assert_eq!(
        build(&e, &only_calls).body["messages"][0]["content"],
        Value::Null
    );
}
