//! The web console's view of a model agent's session (a conversation), in headless Chromium
//! through chromedriver (the `ui` module's harness).
//!
//! - A recorded event log drawn with the console's own `conversation.js` on the signed-in page:
//!   the DOM it makes (streamed text, the model's text never parsed as HTML, tool calls collapsed
//!   with their arguments and results, a subagent nested in its parent's call, usage, turns,
//!   errors, no record drawn twice).
//! - A real daemon with a model agent on the provider test server (`common::provider`), driven
//!   from the page: started with a first message, text streaming in, a tool call (run in the
//!   cage) shown collapsed, hostile text staying text, messages sent from the box, Abort, the
//!   events socket resuming after a drop, End and a resume, the Sessions screen.

use serde_json::{Value, json};

use crate::common::Daemon;
use crate::common::provider::*;
use crate::ui::{ENTER, ONE_BROWSER, Ui, Viewport};

/// WebDriver's Shift, and the key that releases the modifiers held.
const SHIFT: &str = "\u{e008}";
const RELEASE: &str = "\u{e000}";

/// What a model could send to get an element made: it must stay text.
const HOSTILE: &str = "<img src=x onerror=\"window.__kagedXss = 1\">";

/// A recorded log: two turns, a tool call with output and a cut result, a subagent (records
/// with `parent_call_id`) inside its call, a failed call, usage with a cost, an error.
fn recorded_log() -> Vec<Value> {
    let events = vec![
        (
            None,
            json!({"type": "user_message", "text": "Read the README, then ask the helper."}),
        ),
        (None, json!({"type": "turn_started", "turn": 1})),
        (
            None,
            json!({"type": "message_started", "role": "assistant"}),
        ),
        (None, json!({"type": "text_delta", "text": "Hel"})),
        (None, json!({"type": "text_delta", "text": "lo "})),
        (None, json!({"type": "text_delta", "text": HOSTILE})),
        (
            None,
            json!({"type": "message_completed", "text": format!("Hello {HOSTILE}")}),
        ),
        (
            None,
            json!({"type": "tool_call", "call_id": "call_1", "name": "file.read",
                   "arguments": {"path": "README.md", "offset": 1}}),
        ),
        (
            None,
            json!({"type": "tool_output", "call_id": "call_1", "chunk": "<b>not bold</b>"}),
        ),
        (
            None,
            json!({"type": "tool_result", "call_id": "call_1", "ok": true,
                   "content": "# README\n<script>alert(1)</script>", "truncated": true}),
        ),
        (
            None,
            json!({"type": "tool_call", "call_id": "call_2", "name": "agent.helper",
                   "arguments": {"task": "Summarize the README"}}),
        ),
        (
            Some("call_2"),
            json!({"type": "user_message", "text": "Summarize the README"}),
        ),
        (Some("call_2"), json!({"type": "turn_started", "turn": 1})),
        (
            Some("call_2"),
            json!({"type": "message_started", "role": "assistant"}),
        ),
        (
            Some("call_2"),
            json!({"type": "text_delta", "text": "A short summary."}),
        ),
        (
            Some("call_2"),
            json!({"type": "message_completed", "text": "A short summary."}),
        ),
        (
            Some("call_2"),
            json!({"type": "usage", "input_tokens": 20, "output_tokens": 4, "cached_tokens": 0}),
        ),
        (
            Some("call_2"),
            json!({"type": "turn_ended", "reason": "end_turn"}),
        ),
        (
            None,
            json!({"type": "tool_result", "call_id": "call_2", "ok": true,
                   "content": "A short summary.", "truncated": false}),
        ),
        (
            None,
            json!({"type": "tool_call", "call_id": "call_3", "name": "shell.bash",
                   "arguments": "{not json"}),
        ),
        (
            None,
            json!({"type": "tool_result", "call_id": "call_3", "ok": false,
                   "content": "arguments are not JSON", "truncated": false}),
        ),
        (
            None,
            json!({"type": "usage", "input_tokens": 1204, "output_tokens": 38,
                   "cached_tokens": 1024, "cost": 0.0013}),
        ),
        (None, json!({"type": "turn_ended", "reason": "end_turn"})),
        (None, json!({"type": "user_message", "text": "And now?"})),
        (None, json!({"type": "turn_started", "turn": 2})),
        (
            None,
            json!({"type": "tool_call", "call_id": "call_4", "name": "shell.bash",
                   "arguments": {"command": "sleep 100"}}),
        ),
        (
            None,
            json!({"type": "error", "code": "provider", "message": "the provider failed"}),
        ),
        (None, json!({"type": "turn_ended", "reason": "error"})),
        (None, json!({"type": "some_future_event", "x": 1})),
        (None, json!({"type": "turn_started", "turn": 3})),
    ];
    events
        .into_iter()
        .enumerate()
        .map(|(i, (parent, event))| {
            let mut r =
                json!({"seq": i + 1, "at_ms": 1_767_225_600_000u64 + i as u64, "event": event});
            if let Some(p) = parent {
                r["parent_call_id"] = json!(p);
            }
            r
        })
        .collect()
}

/// Draw `records` with the console's `conversation.js` into a new element on the page; what
/// the script reports about the DOM it made.
const DRAW: &str = r#"
const records = arguments[0];
return import(new URL('assets/conversation.js', document.baseURI).href).then((m) => {
  const host = document.createElement('div');
  host.id = 'render-check';
  document.querySelector('main').append(host);
  const c = new m.Conversation(host);
  const drawn = records.map((r) => c.apply(r));
  // The same records again (a reconnect's overlap): nothing is drawn twice.
  const again = records.map((r) => c.apply(r));
  const q = (s) => host.querySelector(s);
  const text = (s) => (q(s) ? q(s).textContent : null);
  const tools = Array.from(host.querySelectorAll('details.tool'));
  return {
    drawn: drawn.filter(Boolean).length,
    again: again.filter(Boolean).length,
    elements: Array.from(host.querySelectorAll('img, script, b')).length,
    xss: window.__kagedXss === undefined ? null : window.__kagedXss,
    messages: Array.from(host.querySelectorAll(':scope > .msg')).map(
      (e) => [e.dataset.role, e.querySelector('.text').textContent, 'streaming' in e.dataset]),
    tools: tools.map((d) => ({
      id: d.dataset.callId, open: d.open, status: d.dataset.status,
      summary: d.querySelector('summary').textContent,
      nested: d.classList.contains('nested'),
    })),
    args1: text('[data-call-id="call_1"] .tool-arguments'),
    output1: text('[data-call-id="call_1"] .tool-output'),
    result1: text('[data-call-id="call_1"] .tool-result'),
    truncated1: !q('[data-call-id="call_1"] .tool-truncated').hidden,
    truncated2: !q('[data-call-id="call_2"] .tool-truncated').hidden,
    args3: text('[data-call-id="call_3"] .tool-arguments'),
    sub: Array.from(host.querySelectorAll('[data-call-id="call_2"] .subagent > *')).map(
      (e) => e.className + ':' + e.textContent),
    turns: Array.from(host.querySelectorAll(':scope > .turn-mark, :scope > .turn-end')).map(
      (e) => e.textContent),
    usage: Array.from(host.querySelectorAll(':scope > .usage')).map((e) => e.textContent),
    errors: Array.from(host.querySelectorAll('.agent-error')).map((e) => e.textContent),
    running: c.running,
    turn: c.turn,
    lastSeq: c.lastSeq,
    totals: c.totals,
  };
});
"#;

#[tokio::test]
async fn a_recorded_log_draws_as_text_with_collapsed_tool_calls_and_a_nested_subagent() {
    let _one = ONE_BROWSER.lock().await;
    let tmp = tempfile::tempdir().unwrap();
    let d = Daemon::start(&tmp.path().join("home"));
    let Some(ui) = Ui::start(Viewport::Desktop, "conversation-render").await else {
        return;
    };
    ui.goto(&d.launch_url).await;
    ui.ready().await;
    let log = recorded_log();
    let n = log.len() as u64;
    let v = ui.js(DRAW, vec![json!(log)]).await;

    assert_eq!(v["drawn"], json!(n), "{v:#}");
    assert_eq!(v["again"], 0, "records drawn twice: {v:#}");
    assert_eq!(v["lastSeq"], json!(n));
    // The model's text and the tools' output are text: no element made from them.
    assert_eq!(v["elements"], 0, "HTML from the log became elements: {v:#}");
    assert_eq!(v["xss"], Value::Null);
    assert_eq!(
        v["messages"],
        json!([
            ["user", "Read the README, then ask the helper.", false],
            ["assistant", format!("Hello {HOSTILE}"), false],
            ["user", "And now?", false],
        ])
    );

    // Tool calls: collapsed, name and a short summary of the arguments, their status.
    let tools = v["tools"].as_array().unwrap();
    let ids: Vec<&str> = tools.iter().map(|t| t["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["call_1", "call_2", "call_3", "call_4"], "{v:#}");
    assert!(tools.iter().all(|t| t["open"] == false), "{v:#}");
    assert_eq!(tools[0]["status"], "ok");
    let summary = tools[0]["summary"].as_str().unwrap();
    assert!(
        summary.contains("file.read")
            && summary.contains("path: README.md")
            && summary.contains("offset: 1"),
        "{summary}"
    );
    assert_eq!(tools[1]["status"], "ok");
    assert!(
        tools[1]["summary"]
            .as_str()
            .unwrap()
            .contains("task: Summarize the README")
    );
    assert_eq!(tools[2]["status"], "error");
    // The turn ended (an error) with call_4 unanswered.
    assert_eq!(tools[3]["status"], "cancelled");
    assert!(tools.iter().all(|t| t["nested"] == false));
    // Pretty-printed: one key a line.
    let args1 = v["args1"].as_str().unwrap();
    assert_eq!(args1.lines().count(), 4, "{args1}");
    assert_eq!(
        serde_json::from_str::<Value>(args1).unwrap(),
        json!({"path": "README.md", "offset": 1})
    );
    assert_eq!(
        v["args3"], "{not json",
        "arguments that were not JSON, as sent"
    );
    assert_eq!(v["output1"], "<b>not bold</b>");
    assert_eq!(v["result1"], "# README\n<script>alert(1)</script>");
    assert_eq!(v["truncated1"], true);
    assert_eq!(v["truncated2"], false);

    // The subagent's records are inside its call's block, in order.
    let sub: Vec<&str> = v["sub"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    assert_eq!(sub.len(), 5, "{sub:?}");
    assert!(sub[0].starts_with("msg user:Task") && sub[0].ends_with("Summarize the README"));
    assert_eq!(sub[1], "turn-mark:Subagent turn 1");
    assert!(sub[2].starts_with("msg assistant:Subagent") && sub[2].ends_with("A short summary."));
    assert_eq!(sub[3], "usage:20 in · 4 out tokens");
    assert_eq!(
        sub[4],
        "turn-end reason-end_turn:Turn 1 ended: the model finished"
    );

    assert_eq!(
        v["turns"],
        json!([
            "Turn 1",
            "Turn 1 ended: the model finished",
            "Turn 2",
            "Turn 2 ended: an error",
            "Turn 3"
        ])
    );
    assert_eq!(
        v["usage"],
        json!(["1,204 in · 38 out · 1,024 cached tokens · $0.0013"])
    );
    assert_eq!(v["errors"], json!(["provider: the provider failed"]));
    // Turn 3 started and has not ended: a turn runs.
    assert_eq!(v["running"], true);
    assert_eq!(v["turn"], 3);
    assert_eq!(v["totals"]["input_tokens"], 1224);
    assert_eq!(v["totals"]["calls"], 2);
    ui.assert_no_csp_violations("conversation render").await;
    ui.close().await;
}

/// Wait until the page's conversation state (`body[data-conversation]`) is `state`.
async fn conversation_state(ui: &Ui, state: &str) {
    ui.until_args(
        &format!("the conversation to be {state}"),
        "return document.body.dataset.conversation === arguments[0];",
        vec![json!(state)],
    )
    .await;
}

/// The text of the model's last message in the conversation (not a subagent's).
const LAST_MODEL_TEXT: &str =
    "const m = Array.from(document.querySelectorAll('#conversation-log > .msg.assistant')).pop();
     return m ? m.querySelector('.text').textContent : '';";

#[tokio::test]
async fn a_conversation_streams_shows_a_tool_call_collapsed_takes_messages_aborts_and_resumes() {
    let _one = ONE_BROWSER.lock().await;
    let env = ModelEnv::start(COMPLETIONS, "", &[]).await;
    let d = &env.daemon;
    let p = &env.provider;
    let Some(ui) = Ui::start(Viewport::Desktop, "conversation").await else {
        return;
    };
    // Turn 1: the model reads a file (a tool call, in the cage), then streams its answer slowly
    // (eight deltas 250 ms apart), the hostile part among them.
    p.push(tool_reply(
        COMPLETIONS,
        &[Call::new(
            "call_read",
            "file.read",
            &json!({"path": "prompts/primary.md"}),
        )],
    ));
    let deltas = ["Hel", "lo", " op", "era", "tor ", HOSTILE, " bye", "."];
    p.push(reply(COMPLETIONS, &deltas, &[], Stop::EndTurn, 8, 250));
    let answer: String = deltas.concat();

    ui.goto(&d.launch_url).await;
    ui.ready().await;
    ui.route(&format!("#/projects/{}", env.slug)).await;
    ui.ready().await;
    let badge = ui
        .until(
            "the model agent's starter",
            "return document.querySelector('#start-agent-primary .conversation-badge')?.textContent;",
        )
        .await;
    assert_eq!(badge, "conversation");
    ui.fill("#first-message-primary", "Read your prompt, then greet me.")
        .await;
    ui.assert_labelled("project with a model agent").await;
    ui.click("#start-agent-primary").await;
    let id = ui.session_id().await;
    ui.until(
        "the events socket",
        "const c = document.getElementById('conn'); return c && c.dataset.kind === 'live';",
    )
    .await;
    ui.until(
        "the operator's first message",
        "return document.querySelector('#conversation-log > .msg.user .text')?.textContent === 'Read your prompt, then greet me.';",
    )
    .await;

    // The tool call: a block, collapsed, its name and what it reads; the result once done.
    let tool = ui
        .until(
            "the file.read block, done",
            "const d = document.querySelector('#conversation-log details.tool[data-tool=\"file.read\"]');
             return d && d.dataset.status !== 'running' &&
               [d.open, d.dataset.status, d.querySelector('summary').textContent,
                d.querySelector('.tool-result').textContent];",
        )
        .await;
    assert_eq!(tool[0], false, "collapsed by default: {tool}");
    assert_eq!(tool[1], "ok", "{tool}");
    assert!(
        tool[2]
            .as_str()
            .unwrap()
            .contains("path: prompts/primary.md"),
        "{tool}"
    );
    assert!(
        tool[3].as_str().unwrap().contains(SYSTEM_PROMPT),
        "the tool read the file in the cage: {tool}"
    );

    // The answer streams in: seen part-way (still streaming), then whole.
    let partial = ui
        .until(
            "part of the answer, still streaming",
            "const m = document.querySelector('#conversation-log > .msg.assistant[data-streaming]');
             const t = m ? m.querySelector('.text').textContent : '';
             return t.length > 0 && t;",
        )
        .await;
    let partial = partial.as_str().unwrap().to_string();
    assert!(
        answer.starts_with(&partial) && partial.len() < answer.len(),
        "{partial:?}"
    );
    assert_eq!(
        ui.js("return document.body.dataset.conversation;", vec![])
            .await,
        "running"
    );
    let abort_enabled = ui
        .js(
            "return !document.getElementById('abort-turn').disabled;",
            vec![],
        )
        .await;
    assert_eq!(abort_enabled, true, "Abort is enabled while a turn runs");
    conversation_state(&ui, "idle").await;
    assert_eq!(ui.js(LAST_MODEL_TEXT, vec![]).await, json!(answer));
    // The model's text stayed text: no element was made of it, nothing ran.
    let made = ui
        .js(
            "return [document.querySelectorAll('#conversation img').length, window.__kagedXss === undefined];",
            vec![],
        )
        .await;
    assert_eq!(made, json!([0, true]));
    assert_eq!(
        ui.js(
            "return document.getElementById('abort-turn').disabled;",
            vec![]
        )
        .await,
        true,
        "no Abort between turns"
    );
    let usage = ui
        .until(
            "the usage line",
            "return document.getElementById('conversation-usage').textContent;",
        )
        .await;
    assert!(
        usage.as_str().unwrap().starts_with("2 model calls: 20 in"),
        "{usage}"
    );
    // The page's events client, dropped after its third record, comes back from the last seq
    // it has: every record exactly once.
    let (_, last) = conversation(d, &id, 0).await;
    let v = ui.js(RECONNECT, vec![json!(id), json!(last)]).await;
    assert_eq!(v["dropped"], true, "{v}");
    let want: Vec<u64> = (1..=last).collect();
    assert_eq!(v["seqs"], json!(want), "{v}");
    ui.assert_no_csp_violations("conversation").await;
    ui.assert_labelled("conversation").await;
    ui.shot("ui-conversation.png").await;

    // A message typed in the box: Shift+Enter is a new line, Enter sends.
    p.push(text_reply(COMPLETIONS, &["Two ", "lines, got it."]));
    ui.click("#message").await;
    let el = ui
        .client
        .find(fantoccini::Locator::Css("#message"))
        .await
        .unwrap();
    el.send_keys(&format!(
        "first line{SHIFT}{ENTER}{RELEASE}second line{ENTER}"
    ))
    .await
    .unwrap();
    ui.until(
        "the message in the conversation",
        "const m = Array.from(document.querySelectorAll('#conversation-log > .msg.user')).pop();
         return m && m.querySelector('.text').textContent === 'first line\\nsecond line';",
    )
    .await;
    ui.until_args(
        "the second answer",
        &format!("return (() => {{ {LAST_MODEL_TEXT} }})() === arguments[0];"),
        vec![json!("Two lines, got it.")],
    )
    .await;
    conversation_state(&ui, "idle").await;
    assert_eq!(
        ui.js("return document.getElementById('message').value;", vec![])
            .await,
        "",
        "the box is emptied once sent"
    );

    // Abort: a slow answer (100 deltas, 200 ms apart), aborted from the page.
    let words: Vec<String> = (0..100).map(|i| format!("w{i} ")).collect();
    let words: Vec<&str> = words.iter().map(String::as_str).collect();
    p.push(reply(COMPLETIONS, &words, &[], Stop::EndTurn, 100, 200));
    ui.fill("#message", "Talk slowly.").await;
    ui.click("#send").await;
    ui.until(
        "the slow answer streaming",
        "const m = document.querySelector('#conversation-log > .msg.assistant[data-streaming]');
         return m && m.querySelector('.text').textContent.startsWith('w0 w1');",
    )
    .await;
    ui.click("#abort-turn").await;
    ui.until(
        "the turn ended, aborted",
        "return document.querySelector('#conversation-log > .turn-end[data-reason=\"aborted\"]');",
    )
    .await;
    conversation_state(&ui, "idle").await;
    let cut = ui.js(LAST_MODEL_TEXT, vec![]).await;
    assert!(
        !cut.as_str().unwrap().contains("w99"),
        "aborted before the end: {cut}"
    );
    assert_eq!(session_json(d, &id).await["state"], "running");

    // Every record drawn once: the page's seq follows the log.
    let (records, last) = conversation(d, &id, 0).await;
    assert_eq!(records.len() as u64, last);
    let drawn = ui
        .js(
            "return document.querySelectorAll('#conversation-log > .turn-end').length;",
            vec![],
        )
        .await;
    assert_eq!(drawn, json!(of_kind(&records, "turn_ended").len()));

    // End the session, then a message resumes it.
    ui.click("#end-session").await;
    conversation_state(&ui, "ended").await;
    ui.until(
        "the note that a message resumes it",
        "return document.getElementById('ended-note')?.textContent.includes('a message resumes it');",
    )
    .await;
    p.push(text_reply(COMPLETIONS, &["Back ", "again."]));
    ui.fill("#message", "Are you there?").await;
    ui.click("#send").await;
    ui.until(
        "the resumed answer",
        "const m = Array.from(document.querySelectorAll('#conversation-log > .msg.assistant')).pop();
         return m && m.querySelector('.text').textContent === 'Back again.';",
    )
    .await;
    conversation_state(&ui, "idle").await;
    assert_eq!(session_json(d, &id).await["state"], "running");
    // Every message sent was taken: none is left shown as waiting.
    let waiting = ui
        .js(
            "return document.getElementById('pending-messages').children.length;",
            vec![],
        )
        .await;
    assert_eq!(waiting, 0, "messages still shown as not taken");
    ui.assert_no_csp_violations("conversation after resume")
        .await;
    ui.shot("ui-conversation-resumed.png").await;

    // The Sessions screen: the conversation is marked, and a model agent starts from there too.
    ui.route("#/sessions").await;
    ui.ready().await;
    ui.until_args(
        "the conversation marked in the list",
        "return document.querySelector(`#session-list [data-session='${arguments[0]}'] .conversation-badge`);",
        vec![json!(id)],
    )
    .await;
    let option = ui
        .until(
            "the model agents offered",
            "return document.querySelector('#new-agent option')?.textContent;",
        )
        .await;
    assert_eq!(option, "agents: primary");
    p.push(text_reply(COMPLETIONS, &["New ", "one."]));
    ui.fill("#new-agent-message", "Hello again.").await;
    ui.click("#new-agent-start").await;
    ui.until_args(
        "a second conversation",
        "const m = location.hash.match(/^#\\/sessions\\/([0-9a-f]{32})$/);
         return m && m[1] !== arguments[0] && (() => { LAST })() === 'New one.';"
            .replace("LAST", LAST_MODEL_TEXT)
            .as_str(),
        vec![json!(id)],
    )
    .await;
    ui.assert_no_csp_violations("second conversation").await;
    ui.close().await;
}

/// The page's events client resumes after a drop from the last seq it drew: every record once.
const RECONNECT: &str = r#"
const [id, last] = arguments;
return import(new URL('assets/agent-events.js', document.baseURI).href).then((m) =>
  new Promise((resolve) => {
    const seqs = [];
    let dropped = false;
    const events = new m.AgentEvents(id, { recheck() {} }, {
      lastSeq: () => (seqs.length ? seqs[seqs.length - 1] : 0),
      onRecord: (r) => {
        seqs.push(r.seq);
        if (seqs.length === 3 && !dropped) {
          dropped = true;
          events.ws.close();
        }
        if (r.seq >= last) {
          events.dispose();
          resolve({ seqs, dropped });
        }
      },
      onReset: () => {},
      onStatus: () => {},
    });
    events.connect();
    setTimeout(() => { events.dispose(); resolve({ seqs, dropped, timeout: true }); }, 20000);
  }));
"#;
