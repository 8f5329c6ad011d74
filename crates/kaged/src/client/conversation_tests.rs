//! Tests of the conversation rendering, on records written as the wire's JSON.

use serde_json::{Value, json};

use super::*;

/// Records numbered from 1, from `(parent_call_id, event)` pairs.
fn records(events: &[(Option<&str>, Value)]) -> Vec<Sequenced> {
    events
        .iter()
        .enumerate()
        .map(|(i, (parent, event))| {
            let mut v =
                json!({"seq": i + 1, "at_ms": 1_767_225_600_000_i64 + i as i64, "event": event});
            if let Some(p) = parent {
                v["parent_call_id"] = json!(p);
            }
            serde_json::from_value(v).expect("a record")
        })
        .collect()
}

fn top(events: Vec<Value>) -> Vec<Sequenced> {
    let pairs: Vec<(Option<&str>, Value)> = events.into_iter().map(|e| (None, e)).collect();
    records(&pairs)
}

fn live(records: &[Sequenced], width: usize) -> String {
    let mut r = Live::new(width, false);
    let mut out: String = records.iter().map(|rec| r.push(rec)).collect();
    out.push_str(&r.finish());
    out
}

fn transcript(records: &[Sequenced]) -> String {
    let mut r = Transcript::new();
    let mut out: String = records.iter().map(|rec| r.push(rec)).collect();
    out.push_str(&r.finish());
    out
}

/// A turn with streamed text, a tool call, its result, usage and a second message.
fn one_turn() -> Vec<Sequenced> {
    top(vec![
        json!({"type": "user_message", "text": "What is in README.md?"}),
        json!({"type": "turn_started", "turn": 1}),
        json!({"type": "message_started", "role": "assistant"}),
        json!({"type": "text_delta", "text": "Let me "}),
        json!({"type": "text_delta", "text": "look."}),
        json!({"type": "message_completed", "text": "Let me look."}),
        json!({"type": "tool_call", "call_id": "c1", "name": "file.read", "arguments": {"path": "README.md"}}),
        json!({"type": "tool_output", "call_id": "c1", "chunk": "ignored live"}),
        json!({"type": "tool_result", "call_id": "c1", "ok": true, "content": "# demo\nline two\nline three\n", "truncated": false}),
        json!({"type": "usage", "input_tokens": 120, "output_tokens": 9, "cached_tokens": 0}),
        json!({"type": "message_started", "role": "assistant"}),
        json!({"type": "text_delta", "text": "It is a\n"}),
        json!({"type": "text_delta", "text": "demo."}),
        json!({"type": "message_completed", "text": "It is a\ndemo."}),
        json!({"type": "usage", "input_tokens": 150, "output_tokens": 5, "cached_tokens": 100, "cost": 0.00123}),
        json!({"type": "turn_ended", "reason": "end_turn"}),
    ])
}

#[test]
fn live_streams_text_and_puts_each_tool_call_and_result_on_one_line() {
    assert_eq!(
        live(&one_turn(), 160),
        "> What is in README.md?\n\
         Let me look.\n\
         ⚙ file.read {\"path\":\"README.md\"}\n  \
         ✓ 3 lines\n  \
         · 120 in, 9 out tokens\n\
         It is a\n\
         demo.\n  \
         · 150 in, 5 out, 100 cached tokens, $0.0012\n"
    );
}

#[test]
fn live_text_is_written_as_it_arrives_without_a_newline_until_the_message_completes() {
    let recs = one_turn();
    let mut r = Live::new(160, false);
    let out: Vec<String> = recs[..5].iter().map(|rec| r.push(rec)).collect();
    assert_eq!(out[3], "Let me ");
    assert_eq!(out[4], "look.");
    assert_eq!(r.push(&recs[5]), "\n");
    // A record that is not text ends a line the text left open.
    let mut r = Live::new(160, false);
    for rec in &recs[..4] {
        r.push(rec);
    }
    assert_eq!(r.finish(), "\n");
    assert_eq!(r.finish(), "");
}

#[test]
fn live_shows_a_completed_message_whose_deltas_it_did_not_see() {
    let recs = top(vec![
        json!({"type": "message_completed", "text": "All done.\nBye."}),
        json!({"type": "turn_ended", "reason": "end_turn"}),
    ]);
    assert_eq!(live(&recs, 160), "All done.\nBye.\n");
}

#[test]
fn live_cuts_long_lines_to_the_width_and_shows_the_first_line_of_a_failure() {
    let long = "x".repeat(300);
    let recs = top(vec![
        json!({"type": "tool_call", "call_id": "c1", "name": "shell.bash", "arguments": {"command": long}}),
        json!({"type": "tool_result", "call_id": "c1", "ok": false, "content": "\nexit status 2: no such file or directory, and more words here\nsecond", "truncated": false}),
    ]);
    let out = live(&recs, 40);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert_eq!(lines[0].chars().count(), 40, "{out}");
    assert!(
        lines[0].starts_with("⚙ shell.bash {\"command\":\"xxx") && lines[0].ends_with('…'),
        "{out}"
    );
    assert_eq!(lines[1].chars().count(), 40, "{out}");
    assert_eq!(lines[1], "  ✗ exit status 2: no such file or dire…");
}

#[test]
fn live_names_the_tool_of_a_result_that_does_not_follow_its_call() {
    let recs = top(vec![
        json!({"type": "tool_call", "call_id": "a", "name": "file.read", "arguments": {"path": "a"}}),
        json!({"type": "tool_call", "call_id": "b", "name": "search.glob", "arguments": {"pattern": "*"}}),
        json!({"type": "tool_result", "call_id": "a", "ok": true, "content": "one line", "truncated": true}),
        json!({"type": "tool_result", "call_id": "b", "ok": true, "content": "", "truncated": false}),
    ]);
    assert_eq!(
        live(&recs, 160),
        "⚙ file.read {\"path\":\"a\"}\n\
         ⚙ search.glob {\"pattern\":\"*\"}\n  \
         ✓ file.read: one line (truncated)\n  \
         ✓ search.glob: (empty)\n"
    );
}

#[test]
fn live_indents_a_subagent_under_its_call_and_breaks_an_open_line_for_it() {
    let recs = records(&[
        (
            None,
            json!({"type": "message_started", "role": "assistant"}),
        ),
        (
            None,
            json!({"type": "text_delta", "text": "Asking the researcher"}),
        ),
        (
            None,
            json!({"type": "tool_call", "call_id": "p1", "name": "agent.researcher", "arguments": {"task": "find it"}}),
        ),
        (
            Some("p1"),
            json!({"type": "user_message", "text": "find it"}),
        ),
        (
            Some("p1"),
            json!({"type": "message_started", "role": "assistant"}),
        ),
        (Some("p1"), json!({"type": "text_delta", "text": "Found"})),
        (
            Some("p1"),
            json!({"type": "text_delta", "text": " it\nhere."}),
        ),
        (
            Some("p1"),
            json!({"type": "message_completed", "text": "Found it\nhere."}),
        ),
        (
            Some("p1"),
            json!({"type": "tool_call", "call_id": "s1", "name": "file.read", "arguments": {"path": "x"}}),
        ),
        (
            Some("s1"),
            json!({"type": "error", "code": "provider", "message": "nested deeper"}),
        ),
        (
            Some("p1"),
            json!({"type": "turn_ended", "reason": "max_steps"}),
        ),
        (
            None,
            json!({"type": "tool_result", "call_id": "p1", "ok": true, "content": "Found it here.", "truncated": false}),
        ),
    ]);
    assert_eq!(
        live(&recs, 160),
        "Asking the researcher\n\
         ⚙ agent.researcher {\"task\":\"find it\"}\n    \
         > find it\n    \
         Found it\n    \
         here.\n    \
         ⚙ file.read {\"path\":\"x\"}\n        \
         error: provider: nested deeper\n    \
         [turn ended: max_steps (the agent's max_steps model calls were used)]\n  \
         ✓ agent.researcher: Found it here.\n"
    );
}

#[test]
fn live_shows_operator_messages_errors_and_unusual_turn_ends() {
    let recs = top(vec![
        json!({"type": "user_message", "text": "first line\nsecond line"}),
        json!({"type": "error", "code": "alias", "message": "model alias `fast` is not in local.toml; add:\n[aliases]\nfast = \"local:smol\""}),
        json!({"type": "turn_ended", "reason": "error"}),
        json!({"type": "turn_ended", "reason": "aborted"}),
    ]);
    assert_eq!(
        live(&recs, 160),
        "> first line\n\
         > second line\n\
         error: alias: model alias `fast` is not in local.toml; add:\n  \
         [aliases]\n  \
         fast = \"local:smol\"\n\
         [turn ended: error]\n\
         [turn ended: aborted]\n"
    );
}

#[test]
fn live_never_writes_the_models_control_characters() {
    let recs = top(vec![
        json!({"type": "text_delta", "text": "red \u{1b}[31mtext\u{7}\r\u{9b}2J"}),
        json!({"type": "tool_call", "call_id": "c", "name": "x", "arguments": "\u{1b}]0;title"}),
    ]);
    let out = live(&recs, 160);
    assert!(!out.contains('\u{1b}') && !out.contains('\u{7}') && !out.contains('\r'));
    assert!(!out.contains('\u{9b}'), "{out:?}");
    assert!(
        out.starts_with("red ^[[31mtext^G\u{fffd}\u{fffd}2J\n"),
        "{out:?}"
    );
    // The JSON form of a string argument escapes ESC itself.
    assert!(out.contains("⚙ x \"\\u001b]0;title\""), "{out:?}");
}

#[test]
fn live_dims_usage_only_with_color() {
    let recs = top(vec![
        json!({"type": "usage", "input_tokens": 1, "output_tokens": 2, "cached_tokens": 0}),
    ]);
    let mut r = Live::new(160, true);
    assert_eq!(r.push(&recs[0]), "\x1b[2m  · 1 in, 2 out tokens\x1b[0m\n");
}

#[test]
fn transcript_says_who_said_what_with_each_call_and_its_whole_result() {
    assert_eq!(
        transcript(&one_turn()),
        "operator: What is in README.md?\n\
         agent: Let me look.\n\
         tool call: file.read {\"path\":\"README.md\"}\n\
         tool result: file.read (ok):\n  \
         # demo\n  \
         line two\n  \
         line three\n\
         usage: 120 in, 9 out tokens\n\
         agent: It is a\n  \
         demo.\n\
         usage: 150 in, 5 out, 100 cached tokens, $0.0012\n"
    );
}

#[test]
fn transcript_names_subagents_and_marks_what_was_cut_short() {
    let recs = records(&[
        (None, json!({"type": "user_message", "text": "go"})),
        (
            None,
            json!({"type": "tool_call", "call_id": "p1", "name": "agent.researcher", "arguments": {"task": "look"}}),
        ),
        (Some("p1"), json!({"type": "user_message", "text": "look"})),
        (
            Some("p1"),
            json!({"type": "message_started", "role": "assistant"}),
        ),
        (Some("p1"), json!({"type": "text_delta", "text": "Looked."})),
        (
            Some("p1"),
            json!({"type": "message_completed", "text": "Looked."}),
        ),
        (
            None,
            json!({"type": "tool_result", "call_id": "p1", "ok": false, "content": "subagent failed", "truncated": true}),
        ),
        (
            None,
            json!({"type": "message_started", "role": "assistant"}),
        ),
        (None, json!({"type": "text_delta", "text": "Half a sen"})),
        (None, json!({"type": "turn_ended", "reason": "aborted"})),
        (
            None,
            json!({"type": "message_started", "role": "assistant"}),
        ),
        (
            None,
            json!({"type": "text_delta", "text": "Never finished"}),
        ),
    ]);
    assert_eq!(
        transcript(&recs),
        "operator: go\n\
         tool call: agent.researcher {\"task\":\"look\"}\n    \
         task: look\n    \
         researcher: Looked.\n\
         tool result: agent.researcher (failed, truncated): subagent failed\n\
         agent: Half a sen [cut short]\n\
         [turn ended: aborted]\n\
         agent: Never finished [cut short]\n"
    );
}

#[test]
fn one_line_cuts_on_characters_not_bytes() {
    assert_eq!(one_line("ééééééééééé", 8), "ééééééé…");
    assert_eq!(one_line("a\nb\tc", 80), "a b c");
    assert_eq!(clean("\u{1b}x\u{7f}"), "^[x^?");
}

/// A call paused for an approval, approved, run; a second one denied with a message; a third
/// denied by kaged when no one answered; a subagent's cancelled one.
fn approvals() -> Vec<Sequenced> {
    records(&[
        (
            None,
            json!({"type": "tool_call", "call_id": "c1", "name": "shell.bash", "arguments": {"command": "touch made.txt"}}),
        ),
        (
            None,
            json!({"type": "approval_requested", "approval_id": "apr_00000000000000aa", "call_id": "c1", "tool": "shell.bash", "arguments": {"command": "touch made.txt"}}),
        ),
        (
            None,
            json!({"type": "approval_decided", "approval_id": "apr_00000000000000aa", "call_id": "c1", "state": "approved", "decision": "approve_session", "decided_by": "user:root"}),
        ),
        (
            None,
            json!({"type": "tool_result", "call_id": "c1", "ok": true, "content": "", "truncated": false}),
        ),
        (
            None,
            json!({"type": "approval_requested", "approval_id": "apr_00000000000000bb", "call_id": "c2", "tool": "file.write", "arguments": {"path": "x.txt", "content": "a\nb"}}),
        ),
        (
            None,
            json!({"type": "approval_decided", "approval_id": "apr_00000000000000bb", "call_id": "c2", "state": "denied", "decision": "deny", "message": "not there\nplease", "decided_by": "alice"}),
        ),
        (
            None,
            json!({"type": "approval_decided", "approval_id": "apr_00000000000000cc", "call_id": "c3", "state": "denied", "decision": "deny", "decided_by": "kaged", "reason": "no decision within 2 s (approval_timeout_secs)"}),
        ),
        (
            None,
            json!({"type": "tool_call", "call_id": "p1", "name": "agent.helper", "arguments": {"task": "t"}}),
        ),
        (
            Some("p1"),
            json!({"type": "approval_decided", "approval_id": "apr_00000000000000dd", "call_id": "s1", "state": "cancelled", "decided_by": "kaged", "reason": "the turn was aborted"}),
        ),
    ])
}

#[test]
fn live_shows_a_waiting_call_with_the_commands_that_decide_it_and_the_decision() {
    assert_eq!(
        live(&approvals(), 160),
        "⚙ shell.bash {\"command\":\"touch made.txt\"}\n\
         ⏸ waiting for approval apr_00000000000000aa: shell.bash touch made.txt\n  \
         kaged approvals approve apr_00000000000000aa  |  kaged approvals deny apr_00000000000000aa --message TEXT\n  \
         approved apr_00000000000000aa for this session by user:root\n  \
         ✓ shell.bash: (empty)\n\
         ⏸ waiting for approval apr_00000000000000bb: file.write {\"content\":\"a\\nb\",\"path\":\"x.txt\"}\n  \
         kaged approvals approve apr_00000000000000bb  |  kaged approvals deny apr_00000000000000bb --message TEXT\n  \
         denied apr_00000000000000bb by alice: not there please\n  \
         denied apr_00000000000000cc by kaged: no decision within 2 s (approval_timeout_secs)\n\
         ⚙ agent.helper {\"task\":\"t\"}\n      \
         cancelled apr_00000000000000dd by kaged: the turn was aborted\n"
    );
    // The waiting line is cut to the width; the commands never are.
    let out = live(&approvals()[..2], 40);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[1], "⏸ waiting for approval apr_000000000000…");
    assert!(lines[2].ends_with("--message TEXT"), "{out}");
}

#[test]
fn transcript_shows_the_whole_arguments_of_a_waiting_call_and_who_decided() {
    let recs = approvals();
    assert_eq!(
        transcript(&recs[1..7]),
        "waiting for approval apr_00000000000000aa: shell.bash {\"command\":\"touch made.txt\"}\n\
         approval: approved apr_00000000000000aa for this session by user:root\n\
         tool result: tool (ok): (empty)\n\
         waiting for approval apr_00000000000000bb: file.write {\"content\":\"a\\nb\",\"path\":\"x.txt\"}\n\
         approval: denied apr_00000000000000bb by alice: not there\n  \
         please\n\
         approval: denied apr_00000000000000cc by kaged: no decision within 2 s (approval_timeout_secs)\n"
    );
}
