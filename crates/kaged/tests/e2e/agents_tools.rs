//! Model agents' tools through the real daemon: tool calls whose arguments arrive split and
//! parallel calls, run by the tool executor in the agent's real cage (the operator's SSH key,
//! the network without an allowlist and the provider key are out of its reach), bad calls
//! (unknown tool, arguments that are not JSON, a 50 MB result), and a subagent offered to its
//! parent as tool `agent.NAME`. What kaged sends back to the provider is asserted from the
//! provider test server's recorded requests.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

use serde_json::{Value, json};

use crate::common::provider::*;

const PRIVATE: &str = "-----BEGIN OPENSSH PRIVATE KEY-----";

/// The `tool_result` of `call_id` among `records`.
fn result_of<'a>(records: &'a [Value], call_id: &str) -> &'a Value {
    records
        .iter()
        .find(|r| kind(r) == "tool_result" && r["event"]["call_id"] == call_id)
        .map(|r| &r["event"])
        .unwrap_or_else(|| panic!("no tool_result for {call_id}:\n{}", summarize(records)))
}

fn content(result: &Value) -> &str {
    result["content"].as_str().unwrap_or("")
}

/// One turn: a call to `file.read` whose arguments arrive in three pieces, then four calls in
/// one reply (a `cat` and a `file.read` of the operator's planted SSH key, `env`, a connection
/// to a loopback listener of the host), then text. Each result is what the cage allows, and the
/// next request carries them all.
#[tokio::test]
async fn split_and_parallel_tool_calls_run_in_the_cage_and_go_back_to_the_model() {
    let tmp = tempfile::tempdir().unwrap();
    let op_home = tmp.path().join("operator");
    let key = op_home.join(".ssh/id_ed25519");
    std::fs::create_dir_all(key.parent().unwrap()).unwrap();
    std::fs::write(&key, format!("{PRIVATE}\nAAAA\n")).unwrap();
    let key = key.to_str().unwrap().to_string();
    // The host listener the cage must not reach (the provider itself is one too).
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();

    let env = ModelEnv::start_full(
        COMPLETIONS,
        "",
        "",
        &[],
        &[("HOME", op_home.to_str().unwrap())],
    )
    .await;
    std::fs::write(env.project.join("notes.txt"), "alpha\nbeta\n").unwrap();
    crate::common::cage_writable(&env.project);
    let d = &env.daemon;
    let p = &env.provider;

    p.push(tool_reply(
        COMPLETIONS,
        &[Call::split(
            "call_read",
            "file.read",
            &["{\"pa", "th\": \"notes", ".txt\"}"],
        )],
    ));
    p.push(tool_reply(
        COMPLETIONS,
        &[
            Call::new("call_cat", "shell.bash", &json!({ "command": format!("cat {key}; cat ~/.ssh/id_ed25519") })),
            Call::new("call_keyread", "file.read", &json!({ "path": key })),
            Call::new("call_env", "shell.bash", &json!({"command": "env"})),
            Call::new(
                "call_net",
                "shell.bash",
                &json!({ "command": format!("exec 3<>/dev/tcp/127.0.0.1/{port} && echo connected; exec 3<>/dev/tcp/127.0.0.1/{} && echo connected", p.port()) }),
            ),
            Call::new("call_ok", "shell.bash", &json!({"command": "cat notes.txt; id -u"})),
        ],
    ));
    p.push(text_reply(COMPLETIONS, &["All ", "done."]));

    let id = env.create("Look around.").await;
    let mut ws = EventsWs::open(d, &id, 0).await;
    let turn = ws.until_turn_ended().await;
    let all = summarize(&turn);
    assert_eq!(turn_end_reasons(&turn), ["end_turn"], "{all}");

    // The split arguments, joined and parsed.
    let calls = of_kind(&turn, "tool_call");
    assert_eq!(calls.len(), 6, "{all}");
    assert_eq!(calls[0]["event"]["call_id"], "call_read", "{all}");
    assert_eq!(calls[0]["event"]["name"], "file.read", "{all}");
    assert_eq!(
        calls[0]["event"]["arguments"],
        json!({"path": "notes.txt"}),
        "{all}"
    );
    let read = result_of(&turn, "call_read");
    assert_eq!(read["ok"], true, "{read}");
    assert!(
        content(read).contains("alpha") && content(read).contains("beta"),
        "{read}"
    );
    // Each call's result comes after its call.
    let pos = |k: &str, call: &str| {
        turn.iter()
            .position(|r| kind(r) == k && r["event"]["call_id"] == call)
            .unwrap()
    };
    for c in [
        "call_read",
        "call_cat",
        "call_keyread",
        "call_env",
        "call_net",
        "call_ok",
    ] {
        assert!(pos("tool_call", c) < pos("tool_result", c), "{c}:\n{all}");
    }

    // The cage: no key, no network, no provider key; the project is there.
    let cat = result_of(&turn, "call_cat");
    assert!(
        !content(cat).contains(PRIVATE),
        "the cage let cat read the key: {cat}"
    );
    let keyread = result_of(&turn, "call_keyread");
    assert_eq!(keyread["ok"], false, "{keyread}");
    assert!(!content(keyread).contains(PRIVATE), "{keyread}");
    let envr = result_of(&turn, "call_env");
    assert_eq!(envr["ok"], true, "{envr}");
    assert!(
        content(envr).contains("KAGED_CAGE=1"),
        "not the cage's env? {envr}"
    );
    assert!(
        !content(envr).contains(KEY) && !content(envr).contains(KEY_ENV),
        "the provider key reached the cage: {envr}"
    );
    let net = result_of(&turn, "call_net");
    assert!(
        !content(net).contains("connected"),
        "the cage reached the host: {net}"
    );
    let ok = result_of(&turn, "call_ok");
    assert!(content(ok).contains("alpha"), "{ok}");
    assert!(
        std::fs::read_to_string(&key).unwrap().contains(PRIVATE),
        "the key is planted"
    );

    // What went back to the model: the first result in request 2, all five in request 3.
    let requests = p.wait_requests(3).await;
    let second = &requests[1].body;
    let tool_msgs: Vec<&Value> = second["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["role"] == "tool")
        .collect();
    assert_eq!(tool_msgs.len(), 1, "{second}");
    assert_eq!(tool_msgs[0]["tool_call_id"], "call_read");
    assert!(tool_msgs[0]["content"].as_str().unwrap().contains("alpha"));
    let assistant = second["messages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["role"] == "assistant")
        .unwrap();
    assert_eq!(
        assistant["tool_calls"][0]["function"]["name"], "file__read",
        "{second}"
    );
    let third = &requests[2].body;
    let results: Vec<&str> = third["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["role"] == "tool")
        .map(|m| m["tool_call_id"].as_str().unwrap())
        .collect();
    assert_eq!(
        results,
        [
            "call_read",
            "call_cat",
            "call_keyread",
            "call_env",
            "call_net",
            "call_ok"
        ],
        "{third}"
    );
    // The tools offered are the wire names of the enabled ones.
    let offered: Vec<&str> = requests[0].body["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["function"]["name"].as_str().unwrap())
        .collect();
    for t in ["file__read", "shell__bash", "file__write", "edit__text"] {
        assert!(offered.contains(&t), "{t} not offered: {offered:?}");
    }
    drop(listener);
}

/// Bad calls are tool results the model sees, not the end of the turn: a tool that does not
/// exist, arguments that are not JSON, and a `shell.bash` printing 50 MB (cut and marked).
/// The daemon stays up and the session takes the next message.
#[tokio::test]
async fn bad_tool_calls_become_failed_results_and_a_huge_result_is_cut() {
    let env = ModelEnv::start(
        ANTHROPIC,
        "  tools: { search.glob: { enabled: false } }\n",
        &[],
    )
    .await;
    let d = &env.daemon;
    let p = &env.provider;
    p.push(tool_reply(
        ANTHROPIC,
        &[
            Call::new("toolu_nosuch", "file.delete", &json!({"path": "x"})),
            Call::split("toolu_badjson", "file.read", &["{\"path\": ", "notes"]),
            Call::new("toolu_off", "search.glob", &json!({"pattern": "*"})),
        ],
    ));
    p.push(tool_reply(
        ANTHROPIC,
        &[Call::new(
            "toolu_huge",
            "shell.bash",
            &json!({"command": "head -c 52428800 /dev/zero | tr '\\0' a; echo; echo END-MARK"}),
        )],
    ));
    p.push(text_reply(ANTHROPIC, &["Noted."]));
    let id = env.create("Try things.").await;
    let mut ws = EventsWs::open(d, &id, 0).await;
    let turn = ws.until_turn_ended().await;
    let all = summarize(&turn);
    assert_eq!(turn_end_reasons(&turn), ["end_turn"], "{all}");

    let nosuch = result_of(&turn, "toolu_nosuch");
    assert_eq!(nosuch["ok"], false, "{nosuch}");
    assert!(content(nosuch).contains("file.delete"), "{nosuch}");
    let badjson = result_of(&turn, "toolu_badjson");
    assert_eq!(badjson["ok"], false, "{badjson}");
    assert!(content(badjson).contains("JSON"), "{badjson}");
    let call = turn
        .iter()
        .find(|r| kind(r) == "tool_call" && r["event"]["call_id"] == "toolu_badjson")
        .unwrap();
    assert_eq!(
        call["event"]["arguments"],
        json!("{\"path\": notes"),
        "arguments that are not JSON are kept as a string"
    );
    let off = result_of(&turn, "toolu_off");
    assert_eq!(off["ok"], false, "a tool switched off ran: {off}");

    let huge = result_of(&turn, "toolu_huge");
    assert_eq!(
        huge["truncated"],
        true,
        "{}",
        &content(huge)[..200.min(content(huge).len())]
    );
    let len = content(huge).len();
    assert!(len <= 256 * 1024 && len > 1000, "{len} bytes");
    // Nothing recorded is bigger than the documented bounds.
    for r in &ws.seen {
        assert!(
            r.to_string().len() < 300 * 1024,
            "a record of {} bytes",
            r.to_string().len()
        );
    }
    // The provider got the failures and the cut result, not 50 MB.
    let requests = p.wait_requests(3).await;
    let second = &requests[1].body_text;
    assert!(
        second.contains("toolu_nosuch") && second.contains("toolu_badjson"),
        "{second}"
    );
    let third = &requests[2];
    assert!(third.body_text.contains("toolu_huge"));
    assert!(
        third.body_text.len() < 1024 * 1024,
        "{} bytes sent",
        third.body_text.len()
    );

    // Still up, everything kept, and the next message works.
    p.push(text_reply(ANTHROPIC, &["Still ", "here."]));
    send_message(d, &id, "Are you there?").await;
    let next = ws.until_turn_ended().await;
    assert_eq!(
        turn_end_reasons(&next),
        ["end_turn"],
        "{}",
        summarize(&next)
    );
    let (stored, _) = conversation(d, &id, 0).await;
    assert_eq!(stored, ws.seen);
}

/// A subagent (a model agent) is offered to its parent as `agent.helper` (`agent__helper` on
/// the wire); the parent's call runs the subagent's own model call with its own prompt, its
/// records carry the parent's call id, and its final text is the parent's tool result.
#[tokio::test]
async fn a_subagent_runs_its_own_model_call_under_the_parents_tool_call() {
    let rest =
        "subagents:\n  helper:\n    model: fast\n    system_prompt: project:/prompts/helper.md\n";
    let env = ModelEnv::start_full(RESPONSES, "", rest, &[], &[]).await;
    std::fs::write(
        env.project.join("prompts/helper.md"),
        "You are the helper.\n",
    )
    .unwrap();
    // Prompts are read at each turn, so it may come after the load.
    crate::common::cage_writable(&env.project);
    let d = &env.daemon;
    let p = &env.provider;
    p.push(tool_reply(
        RESPONSES,
        &[Call::split(
            "call_sub",
            "agent.helper",
            &["{\"task\": \"Count the", " shells.\"}"],
        )],
    ));
    p.push(text_reply(RESPONSES, &["Forty-two ", "shells."]));
    p.push(text_reply(RESPONSES, &["The helper counted ", "42."]));
    let id = env.create("Ask the helper.").await;
    let mut ws = EventsWs::open(d, &id, 0).await;
    // The parent's turn ends after the subagent's; read through the parent's turn_ended.
    let turn = ws
        .until(|r| is_turn_ended(r) && r.get("parent_call_id").is_none())
        .await;
    let all = summarize(&turn);
    let requests = p.wait_requests(3).await;
    let offered: Vec<&str> = requests[0].body["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert!(offered.contains(&"agent__helper"), "{offered:?}");
    let call = of_kind(&turn, "tool_call")
        .into_iter()
        .find(|r| r["event"]["call_id"] == "call_sub")
        .unwrap_or_else(|| panic!("{all}"));
    assert_eq!(call["event"]["name"], "agent.helper", "{all}");
    assert_eq!(call["event"]["arguments"]["task"], "Count the shells.");

    // The subagent's own request: its prompt and the task.
    let sub = &requests[1].body;
    assert_eq!(
        sub["instructions"].as_str().map(str::trim),
        Some("You are the helper."),
        "{sub}"
    );
    assert!(requests[1].body_text.contains("Count the shells."), "{sub}");
    assert!(
        !requests[1].body_text.contains("Ask the helper."),
        "the parent's talk leaked: {sub}"
    );

    // Its records nest under the call.
    let nested: Vec<&Value> = turn
        .iter()
        .filter(|r| r["parent_call_id"] == "call_sub")
        .collect();
    assert!(!nested.is_empty(), "{all}");
    assert_eq!(
        streamed_text(&nested.iter().map(|v| (*v).clone()).collect::<Vec<_>>()),
        "Forty-two shells.",
        "{all}"
    );
    assert!(nested.iter().any(|r| kind(r) == "text_delta"), "{all}");
    // The parent's own deltas are not the subagent's.
    let parent: Vec<Value> = turn
        .iter()
        .filter(|r| r.get("parent_call_id").is_none())
        .cloned()
        .collect();
    assert_eq!(streamed_text(&parent), "The helper counted 42.", "{all}");
    let result = result_of(&parent, "call_sub");
    assert_eq!(result["ok"], true, "{result}");
    assert!(content(result).contains("Forty-two shells."), "{result}");
    assert!(requests[2].body_text.contains("Forty-two shells."));
    assert_eq!(turn_end_reasons(&parent), ["end_turn"], "{all}");
}
