//! The web console's approvals, in headless Chromium through chromedriver (the `ui` module's
//! harness), and the Markdown it draws the model's text with.
//!
//! - `markdown.js` on the signed-in page: what it makes of Markdown and of hostile text (raw
//!   HTML stays text, only http(s) links become <a>, with rel and target set; no image loaded).
//! - A recorded log with approvals drawn by `conversation.js`: the card where the call paused,
//!   its arguments (a command whole, a long value folded), a subagent's card shown inside its
//!   parent's block, the line a decision leaves.
//! - A real daemon with a model agent on the provider test server whose `shell.bash` asks
//!   (`approval: ask`), on a 360×740 phone and a second (desktop) browser: the approval on the
//!   Approvals screen within 2 s, thumb-sized stacked buttons, the badge and title counting it
//!   on both, Approve tapped (the command runs in the cage), the other browser seeing it
//!   resolved, a 409 said as "Already decided by …", the conversation view's inline card
//!   (Deny with a message the model receives), the model's Markdown reply drawn safely, the
//!   other browser's notification shown through the console's service worker.
//! - The service worker (`/sw.js`, served as JavaScript, `no-cache`): registered from the served
//!   page when notifications are turned on, at the console's scope; an approval's notification
//!   shown through `registration.showNotification` (the permission granted over CDP, the browser
//!   listing it after), never with the arguments; its click handler (run against stand-ins for
//!   `clients`) leading a console window to the approval; `new Notification` without workers.

use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::common::provider::*;
use crate::ui::{ONE_BROWSER, Ui, Viewport};

/// Render Markdown cases with the console's `markdown.js`; what each became.
const MARKDOWN: &str = r#"
const cases = arguments[0];
return import(new URL('assets/markdown.js', document.baseURI).href).then((m) => {
  const host = document.createElement('div');
  host.id = 'markdown-check';
  document.querySelector('main').append(host);
  return cases.map((source) => {
    const d = document.createElement('div');
    host.append(d);
    m.renderMarkdown(d, source);
    return {
      text: d.textContent,
      tags: Array.from(d.querySelectorAll('*')).map((e) => e.tagName.toLowerCase()),
      links: Array.from(d.querySelectorAll('a')).map((a) => [
        a.getAttribute('href'), a.getAttribute('rel'), a.getAttribute('target'), a.textContent]),
      strong: Array.from(d.querySelectorAll('strong')).map((e) => e.textContent),
      em: Array.from(d.querySelectorAll('em')).map((e) => e.textContent),
      code: Array.from(d.querySelectorAll('code')).map((e) => e.textContent),
    };
  });
}).then((out) => ({ out, xss: window.__kagedXss === undefined ? null : window.__kagedXss,
  images: document.querySelectorAll('#markdown-check img, #markdown-check script').length }));
"#;

#[tokio::test]
async fn markdown_is_drawn_as_elements_never_from_html_and_links_only_for_http() {
    let _one = ONE_BROWSER.lock().await;
    let tmp = tempfile::tempdir().unwrap();
    let d = crate::common::Daemon::start(&tmp.path().join("home"));
    let Some(ui) = Ui::start(Viewport::Desktop, "markdown").await else {
        return;
    };
    ui.goto(&d.launch_url).await;
    ui.ready().await;
    let hostile = "<img src=x onerror=\"window.__kagedXss = 1\"> [x](javascript:alert(1)) **bold**";
    let cases = [
        hostile,
        "# Title\n\nSome *em* and `code <b>` and __strong__.\n\n- one\n- two\n  - nested\n\n1. first\n2. second",
        "```sh\necho '<script>alert(1)</script>'\n```\n\n> quoted **text**",
        "[docs](https://example.com/docs?a=1) <https://example.org/x> see https://example.net/y.",
        "![pic](https://example.com/p.png) [d](data:text/html,hi) <javascript:alert(2)> [r](/etc/passwd)",
        "<script>window.__kagedXss = 2</script><b>not bold</b> snake_case_name 2*3*4",
    ];
    let v = ui.js(MARKDOWN, vec![json!(cases)]).await;
    let out = v["out"].as_array().unwrap();
    assert_eq!(v["xss"], Value::Null, "{v:#}");
    assert_eq!(v["images"], 0, "an image or a script was made: {v:#}");

    // The hostile reply: bold is bold, the HTML is text, no javascript: link.
    let h = &out[0];
    assert_eq!(h["strong"], json!(["bold"]), "{h:#}");
    let text = h["text"].as_str().unwrap();
    assert!(
        text.contains("<img src=x onerror=\"window.__kagedXss = 1\">"),
        "{text}"
    );
    assert!(
        text.contains("javascript:alert(1)"),
        "the URL is shown: {text}"
    );
    assert_eq!(h["links"], json!([]), "{h:#}");
    assert!(!h["tags"].as_array().unwrap().contains(&json!("img")));

    let blocks = &out[1];
    let tags: Vec<&str> = blocks["tags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    for tag in ["h3", "p", "em", "code", "strong", "ul", "ol", "li"] {
        assert!(tags.contains(&tag), "no {tag}: {tags:?}");
    }
    assert_eq!(
        tags.iter().filter(|t| **t == "ul").count(),
        2,
        "a nested list: {tags:?}"
    );
    assert!(
        !tags.contains(&"b"),
        "HTML in a code span became an element"
    );
    assert_eq!(blocks["code"], json!(["code <b>"]));
    assert_eq!(blocks["strong"], json!(["strong"]));

    let fenced = &out[2];
    assert_eq!(
        fenced["code"],
        json!(["echo '<script>alert(1)</script>'"]),
        "{fenced:#}"
    );
    assert!(
        fenced["tags"]
            .as_array()
            .unwrap()
            .contains(&json!("blockquote"))
    );
    assert!(
        !fenced["tags"]
            .as_array()
            .unwrap()
            .contains(&json!("script"))
    );

    // http(s) links: real <a>, never followed by themselves, the URL visible.
    let rel = "noopener noreferrer nofollow";
    assert_eq!(
        out[3]["links"],
        json!([
            [
                "https://example.com/docs?a=1",
                rel,
                "_blank",
                "https://example.com/docs?a=1"
            ],
            [
                "https://example.org/x",
                rel,
                "_blank",
                "https://example.org/x"
            ],
            [
                "https://example.net/y",
                rel,
                "_blank",
                "https://example.net/y"
            ],
        ]),
        "{:#}",
        out[3]
    );
    assert!(
        out[3]["text"]
            .as_str()
            .unwrap()
            .starts_with("docs (https://example.com/docs?a=1)")
    );
    // An image is text (its URL a link the operator may open); data:, javascript: and paths
    // are not links at all.
    let others = &out[4];
    assert_eq!(
        others["links"],
        json!([[
            "https://example.com/p.png",
            rel,
            "_blank",
            "https://example.com/p.png"
        ]]),
        "{others:#}"
    );
    let t = others["text"].as_str().unwrap();
    for shown in [
        "image: pic",
        "data:text/html,hi",
        "javascript:alert(2)",
        "/etc/passwd",
    ] {
        assert!(t.contains(shown), "{shown:?} not shown: {t}");
    }
    let raw = &out[5];
    assert_eq!(
        raw["text"],
        "<script>window.__kagedXss = 2</script><b>not bold</b> snake_case_name 2*3*4"
            .replace("2*3*4", "234"),
        "{raw:#}"
    );
    assert_eq!(raw["em"], json!(["3"]));
    ui.assert_no_csp_violations("markdown").await;
    ui.close().await;
}

/// Draw records of a recorded log with approvals (the same conversation on every call); what
/// the cards became.
const DRAW_APPROVALS: &str = r#"
const [records] = arguments;
return import(new URL('assets/conversation.js', document.baseURI).href).then((m) => {
  let host = document.getElementById('approvals-check');
  if (!host) {
    host = document.createElement('div');
    host.id = 'approvals-check';
    host.className = 'conversation';
    document.querySelector('main').replaceChildren(host);
    // An API client that is never called here: the cards get their buttons.
    const api = { call: () => Promise.reject(new Error('no API in this test')) };
    window.__recorded = new m.Conversation(host, { api });
  }
  const c = window.__recorded;
  records.forEach((r) => c.apply(r));
  return {
    waiting: c.waiting,
    cards: Array.from(host.querySelectorAll('.approval')).map((e) => ({
      id: e.dataset.approval, state: e.dataset.state, tool: e.dataset.tool,
      command: e.querySelector('pre.approval-command')?.textContent ?? null,
      folded: Array.from(e.querySelectorAll('details.folded')).map((d) => d.dataset.arg),
      fields: Array.from(e.querySelectorAll('.approval-field:not(.folded)')).map((d) => d.textContent),
      buttons: Array.from(e.querySelectorAll('button')).filter((b) => b.getClientRects().length).length,
      outcome: e.querySelector('.approval-outcome')?.textContent ?? null,
      inSubagent: Boolean(e.closest('.subagent')),
      visible: e.getClientRects().length > 0,
    })),
    status: Object.fromEntries(Array.from(host.querySelectorAll('details.tool')).map(
      (d) => [d.dataset.callId, d.dataset.status])),
  };
});
"#;

fn record(seq: u64, parent: Option<&str>, event: Value) -> Value {
    let mut r = json!({"seq": seq, "at_ms": 1_767_225_600_000u64 + seq, "event": event});
    if let Some(p) = parent {
        r["parent_call_id"] = json!(p);
    }
    r
}

#[tokio::test]
async fn a_recorded_log_shows_approval_cards_where_the_turn_paused_and_their_outcome() {
    let _one = ONE_BROWSER.lock().await;
    let tmp = tempfile::tempdir().unwrap();
    let d = crate::common::Daemon::start(&tmp.path().join("home"));
    let Some(ui) = Ui::start(Viewport::Phone, "approvals-render").await else {
        return;
    };
    ui.goto(&d.launch_url).await;
    ui.ready().await;
    let command = "cd build && rm -rf out/ && make -j4 <target> 'x' \"$HOME\"";
    let long = "y".repeat(500);
    let events: Vec<(Option<&str>, Value)> = vec![
        (None, json!({"type": "turn_started", "turn": 1})),
        (
            None,
            json!({"type": "tool_call", "call_id": "c1", "name": "shell.bash",
                   "arguments": {"command": command, "timeout_secs": 30}}),
        ),
        (
            None,
            json!({"type": "approval_requested", "approval_id": "apr_00000000000000a1",
                   "call_id": "c1", "tool": "shell.bash",
                   "arguments": {"command": command, "timeout_secs": 30}}),
        ),
        (
            None,
            json!({"type": "tool_call", "call_id": "c2", "name": "agent.helper",
                   "arguments": {"task": "write it"}}),
        ),
        (Some("c2"), json!({"type": "turn_started", "turn": 1})),
        (
            Some("c2"),
            json!({"type": "tool_call", "call_id": "s1", "name": "file.write",
                   "arguments": {"path": "notes.txt", "content": long}}),
        ),
        (
            Some("c2"),
            json!({"type": "approval_requested", "approval_id": "apr_00000000000000a2",
                   "call_id": "s1", "tool": "file.write",
                   "arguments": {"path": "notes.txt", "content": long}}),
        ),
        // Decided: the first denied with a message, the subagent's approved for the session.
        (
            None,
            json!({"type": "approval_decided", "approval_id": "apr_00000000000000a1",
                   "call_id": "c1", "state": "denied", "decision": "deny",
                   "message": "not <b>now</b>", "decided_by": "user:ann"}),
        ),
        (
            None,
            json!({"type": "tool_result", "call_id": "c1", "ok": false,
                   "content": "denied by the operator: not <b>now</b>", "truncated": false}),
        ),
        (
            Some("c2"),
            json!({"type": "approval_decided", "approval_id": "apr_00000000000000a2",
                   "call_id": "s1", "state": "approved", "decision": "approve_session",
                   "decided_by": "user:root"}),
        ),
    ];
    let records: Vec<Value> = events
        .into_iter()
        .enumerate()
        .map(|(i, (p, e))| record(i as u64 + 1, p, e))
        .collect();
    let before = ui.js(DRAW_APPROVALS, vec![json!(records[..7])]).await;
    let v = &before;
    assert_eq!(before["waiting"], 2, "{v:#}");
    let cards = before["cards"].as_array().unwrap();
    assert_eq!(cards.len(), 2, "{v:#}");
    assert_eq!(cards[0]["id"], "apr_00000000000000a1");
    assert_eq!(cards[0]["state"], "pending");
    assert_eq!(cards[0]["command"], command, "the command whole");
    assert_eq!(cards[0]["fields"], json!(["timeout_secs: 30"]));
    // Approve, Approve for session, Deny… (the deny form's own buttons are hidden).
    assert_eq!(cards[0]["buttons"], 3);
    assert_eq!(before["status"]["c1"], "approval");
    // The subagent's card: in its parent's block, opened so it is seen; the long value folded.
    assert_eq!(cards[1]["inSubagent"], true);
    assert_eq!(cards[1]["visible"], true, "{v:#}");
    assert_eq!(cards[1]["folded"], json!(["content"]));
    assert_eq!(cards[1]["fields"], json!(["path: notes.txt"]));
    ui.assert_no_sideways_scroll("recorded approvals").await;
    ui.shot("ui-approvals-recorded-pending.png").await;

    let after = ui.js(DRAW_APPROVALS, vec![json!(records[7..])]).await;
    let v = &after;
    assert_eq!(after["waiting"], 0, "{v:#}");
    let cards = after["cards"].as_array().unwrap();
    assert_eq!(cards[0]["state"], "denied");
    assert_eq!(
        cards[0]["outcome"],
        "Denied by user:ann, with the message: not <b>now</b>"
    );
    assert_eq!(
        cards[0]["command"],
        Value::Null,
        "a decided card is one line"
    );
    assert_eq!(after["status"]["c1"], "error");
    assert_eq!(cards[1]["state"], "approved");
    assert_eq!(
        cards[1]["outcome"],
        "Approved for the rest of this session by user:root"
    );
    assert_eq!(after["status"]["s1"], "running");
    ui.shot("ui-approvals-recorded-decided.png").await;
    let made = ui
        .js(
            "return document.querySelectorAll('#approvals-check b, #approvals-check img').length;",
            vec![],
        )
        .await;
    assert_eq!(made, 0, "a message became HTML");
    ui.assert_no_csp_violations("approvals render").await;
    ui.close().await;
}

/// `GET /api/v1/approvals/{id}`.
async fn approval(d: &crate::common::Daemon, id: &str) -> Value {
    let (status, v) = d
        .call(Method::GET, &format!("/api/v1/approvals/{id}"), None)
        .await;
    assert_eq!(status, StatusCode::OK, "approval {id}: {v}");
    v
}

/// Wait for the one pending approval of the daemon; it.
async fn one_pending(d: &crate::common::Daemon) -> Value {
    let start = Instant::now();
    loop {
        let (status, v) = d
            .call(Method::GET, "/api/v1/approvals?state=pending", None)
            .await;
        assert_eq!(status, StatusCode::OK, "{v}");
        let list = v["approvals"].as_array().unwrap();
        if let Some(a) = list.first() {
            assert_eq!(list.len(), 1, "{v:#}");
            return a.clone();
        }
        assert!(
            start.elapsed() < AGENT_PATIENCE,
            "no approval became pending"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The page's count of pending approvals: [badge text, badge shown, title].
const COUNT: &str = "const b = document.getElementById('approvals-count');
    return [b.textContent, !b.hidden, document.title];";

/// Installed before the approval exists: when (the page's clock) a card for it first showed.
const WATCH_CARDS: &str = "window.__cardSeen = {};
    new MutationObserver(() => {
      for (const e of document.querySelectorAll('#approval-list .approval[data-approval]')) {
        if (!(e.dataset.approval in window.__cardSeen)) window.__cardSeen[e.dataset.approval] = Date.now();
      }
    }).observe(document.body, { childList: true, subtree: true });
    return true;";

/// The browser's Notification, replaced by one that answers the permission prompt (headless
/// Chromium has none to click) and records what the page itself was asked to show.
const FAKE_NOTIFICATION: &str = "window.__notes = [];
    window.__shown = [];
    window.Notification = class {
      static permission = 'default';
      static requestPermission() {
        window.Notification.permission = 'granted';
        return Promise.resolve('granted');
      }
      constructor(title, options) {
        window.__notes.push([title, options.body]);
        window.__shown.push(this);
      }
      close() {}
    };
    return true;";

/// A model agent whose `shell.bash` asks first, on a provider with prices (usage has a cost).
async fn asking_env() -> ModelEnv {
    ModelEnv::start_spec(EnvSpec {
        primary_extra: "  tools: { shell.bash: { approval: ask } }\n",
        local: Some(|base_url| {
            let prices = "price_input_per_mtok = 1.0\nprice_output_per_mtok = 2.0\n";
            LocalToml::new()
                .alias("fast", &["local:e2e-model"])
                .provider_with("local", COMPLETIONS, base_url, prices)
        }),
        ..EnvSpec::default()
    })
    .await
}

/// A fresh sign-in URL (`kaged auth open`), for a second browser.
fn another_launch_url(d: &crate::common::Daemon) -> String {
    let out = d.cli(&["auth", "open", "--no-browser"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// What the model says once its command ran: Markdown with hostile parts.
const REPLY: [&str; 3] = [
    "Done: **bold** <img src=x onerror=\"window.__kagedXss = 1\"> ",
    "[x](javascript:alert(1)) and [docs](https://example.com/docs)",
    "\n\n- ran `echo`",
];

#[tokio::test]
async fn a_phone_approves_a_pending_call_and_another_browser_sees_it_resolved() {
    let _one = ONE_BROWSER.lock().await;
    let env = asking_env().await;
    let d = &env.daemon;
    let p = &env.provider;
    let Some(phone) = Ui::start(Viewport::Phone, "approvals-phone").await else {
        return;
    };
    let other = Ui::start(Viewport::Desktop, "approvals-other")
        .await
        .unwrap();

    phone.goto(&d.launch_url).await;
    phone.ready().await;
    phone.route("#/approvals").await;
    phone.ready().await;
    phone
        .until(
            "the empty list",
            "const e = document.getElementById('approvals-empty'); return e && !e.hidden;",
        )
        .await;
    assert_eq!(phone.js(COUNT, vec![]).await, json!(["", false, "kaged"]));
    phone.assert_labelled("approvals, empty").await;
    phone.js(WATCH_CARDS, vec![]).await;
    other.goto(&another_launch_url(d)).await;
    other.ready().await;
    other.route("#/approvals").await;
    other.ready().await;
    // Both pages' event streams are up before the approval exists (it is not replayed).
    for ui in [&phone, &other] {
        ui.until(
            "the events stream",
            "return document.body.dataset.events === 'live';",
        )
        .await;
    }

    // The model asks to run a command; the project says to ask first.
    let marker = "approved-and-ran";
    let command = format!("echo {marker} > ran.txt && cat ran.txt");
    p.push(tool_reply(
        COMPLETIONS,
        &[Call::new(
            "call_sh",
            "shell.bash",
            &json!({ "command": command }),
        )],
    ));
    p.push(text_reply(COMPLETIONS, &REPLY));
    let id = env.create("Run the build, please.").await;
    let pending = one_pending(d).await;
    let aid = pending["id"].as_str().unwrap().to_string();
    assert_eq!(pending["tool"], "shell.bash", "{pending:#}");
    assert_eq!(pending["session_id"], json!(id));

    // On the phone within 2 s of its creation (measured on the same clock).
    let seen = phone
        .until_args(
            "the approval's card",
            "return window.__cardSeen[arguments[0]] || null;",
            vec![json!(aid)],
        )
        .await;
    let requested = pending["requested_at_ms"].as_u64().unwrap();
    let lag = seen.as_u64().unwrap().saturating_sub(requested);
    assert!(lag <= 2000, "the card showed {lag} ms after the approval");

    let card = phone
        .js(
            "const c = document.querySelector(`.approval[data-approval='${arguments[0]}']`);
             const r = c.getBoundingClientRect();
             const buttons = Array.from(c.querySelector('.approval-actions').querySelectorAll('button'))
               .map((b) => { const x = b.getBoundingClientRect(); return [b.dataset.decision, x.height, x.width, x.top]; });
             return { tool: c.querySelector('.approval-tool').textContent,
                      command: c.querySelector('pre.approval-command').textContent,
                      meta: c.querySelector('.approval-meta').textContent,
                      session: c.querySelector('a.approval-session').getAttribute('href'),
                      width: r.width, buttons };",
            vec![json!(aid)],
        )
        .await;
    assert_eq!(card["tool"], "shell.bash", "{card:#}");
    assert_eq!(card["command"], json!(command), "the command whole");
    let meta = card["meta"].as_str().unwrap();
    assert!(
        meta.contains("agent primary") && meta.contains("project agents") && meta.contains("ago"),
        "{meta}"
    );
    assert_eq!(card["session"], json!(format!("#/sessions/{id}")));
    // Thumb-sized: at least 48 px tall, the card's width, one under the other.
    let buttons = card["buttons"].as_array().unwrap();
    let decisions: Vec<&str> = buttons.iter().map(|b| b[0].as_str().unwrap()).collect();
    assert_eq!(decisions, ["approve", "approve_session", "deny"]);
    let width = card["width"].as_f64().unwrap();
    let mut last_top = -1.0;
    for b in buttons {
        assert!(b[1].as_f64().unwrap() >= 48.0, "{b}");
        assert!(
            b[2].as_f64().unwrap() >= width - 40.0,
            "not full width: {b} in {width}"
        );
        assert!(
            b[3].as_f64().unwrap() > last_top,
            "not stacked: {buttons:?}"
        );
        last_top = b[3].as_f64().unwrap();
    }
    // The count: on the nav entry and in the title, on both pages.
    for ui in [&phone, &other] {
        ui.until(
            "the count 1",
            "return document.getElementById('approvals-count').textContent === '1';",
        )
        .await;
        assert_eq!(ui.js(COUNT, vec![]).await, json!(["1", true, "(1) kaged"]));
    }
    phone.assert_no_sideways_scroll("approvals").await;
    phone.assert_labelled("approvals").await;
    phone.assert_no_csp_violations("approvals").await;
    phone.shot("ui-approvals-phone-pending.png").await;

    // Tap Approve: decided, the command runs in the cage.
    phone
        .click(&format!(
            ".approval[data-approval='{aid}'] button[data-decision='approve']"
        ))
        .await;
    let records = wait_conversation(d, &id, |r| {
        kind(r) == "tool_result" && r["event"]["call_id"] == "call_sh"
    })
    .await;
    let result = &of_kind(&records, "tool_result")[0]["event"];
    assert_eq!(result["ok"], true, "{result}");
    assert!(
        result["content"].as_str().unwrap().contains(marker),
        "{result}"
    );
    let a = approval(d, &aid).await;
    assert_eq!(a["state"], "approved", "{a:#}");
    assert_eq!(a["decision"], "approve");
    assert!(
        a["decided_by"].as_str().is_some_and(|s| !s.is_empty()),
        "{a:#}"
    );

    // Resolved on both pages; the count is gone.
    for ui in [&phone, &other] {
        ui.until_args(
            "the card resolved or gone",
            "const c = document.querySelector(`#approval-list .approval[data-approval='${arguments[0]}']`);
             return !c || c.dataset.state === 'approved';",
            vec![json!(aid)],
        )
        .await;
        ui.until(
            "the count 0",
            "return document.getElementById('approvals-count').hidden && document.title === 'kaged';",
        )
        .await;
    }
    let outcome = other
        .js(
            "return document.querySelector(`.approval[data-approval='${arguments[0]}'] .approval-outcome`)?.textContent ?? 'gone';",
            vec![json!(aid)],
        )
        .await;
    assert!(
        outcome == "gone" || outcome.as_str().unwrap().starts_with("Approved by "),
        "{outcome}"
    );
    other.shot("ui-approvals-other-resolved.png").await;
    phone.shot("ui-approvals-phone-resolved.png").await;

    // A decision on a decided approval: 409, said as who decided first.
    let conflict = phone
        .js(
            "const [a] = arguments;
             return Promise.all([import(new URL('assets/api.js', document.baseURI).href),
                                 import(new URL('assets/approval-card.js', document.baseURI).href)])
               .then(async ([api, cards]) => {
                 const client = new api.ApiClient(() => {});
                 client.csrf = (await client.call('GET', 'api/v1/whoami')).csrf_token;
                 const card = new cards.ApprovalCard({ ...a, state: 'pending' }, { api: client });
                 document.querySelector('main').append(card.el);
                 await card.decide('deny');
                 return [card.el.dataset.state, card.el.querySelector('.approval-conflict')?.textContent];
               });",
            vec![a.clone()],
        )
        .await;
    assert_eq!(
        conflict,
        json!([
            "approved",
            format!("Already decided by {}.", a["decided_by"].as_str().unwrap())
        ])
    );

    // A notification's link (`#/approvals/ID`) shows that approval, decided or not.
    phone.route(&format!("#/approvals/{aid}")).await;
    phone.ready().await;
    let single = phone
        .until(
            "the linked approval",
            "return document.querySelector('#approval-single .approval[data-state=\"approved\"] .approval-outcome')?.textContent;",
        )
        .await;
    assert!(
        single.as_str().unwrap().starts_with("Approved by "),
        "{single}"
    );

    // The conversation: the inline card resolved, the model's Markdown drawn safely.
    phone.route(&format!("#/sessions/{id}")).await;
    phone.ready().await;
    let line = phone
        .until_args(
            "the inline approval, resolved",
            "const c = document.querySelector(`#conversation-log .approval[data-approval='${arguments[0]}']`);
             return c && c.dataset.state === 'approved' && c.querySelector('.approval-outcome').textContent;",
            vec![json!(aid)],
        )
        .await;
    assert!(line.as_str().unwrap().starts_with("Approved by "), "{line}");
    let md = phone
        .until(
            "the Markdown reply",
            "const m = Array.from(document.querySelectorAll('#conversation-log > .msg.assistant')).pop();
             return m && !m.dataset.streaming && m.querySelector('strong') && {
               strong: Array.from(m.querySelectorAll('strong')).map((e) => e.textContent),
               text: m.querySelector('.text').textContent,
               links: Array.from(m.querySelectorAll('a')).map((a) => [a.getAttribute('href'), a.rel, a.target]),
               list: m.querySelectorAll('li code').length,
             };",
        )
        .await;
    assert_eq!(md["strong"], json!(["bold"]), "{md:#}");
    assert!(
        md["text"]
            .as_str()
            .unwrap()
            .contains("<img src=x onerror=\"window.__kagedXss = 1\">"),
        "{md:#}"
    );
    assert_eq!(
        md["links"],
        json!([[
            "https://example.com/docs",
            "noopener noreferrer nofollow",
            "_blank"
        ]]),
        "no javascript: link: {md:#}"
    );
    assert_eq!(md["list"], 1);
    // The session's usage, summed over its model calls, with its cost.
    let usage = phone
        .until(
            "the session's usage",
            "const t = document.getElementById('conversation-usage').textContent;
             return t.startsWith('2 model calls: ') && t;",
        )
        .await;
    let usage = usage.as_str().unwrap();
    assert!(
        usage.starts_with("2 model calls: ") && usage.contains(" out ") && usage.contains('$'),
        "{usage}"
    );
    let made = phone
        .js(
            "return [document.querySelectorAll('#conversation img, #conversation a[href^=\"javascript\"]').length, window.__kagedXss === undefined];",
            vec![],
        )
        .await;
    assert_eq!(made, json!([0, true]));
    phone.shot("ui-approvals-markdown.png").await;

    // The other browser asks for notifications (the browser's permission prompt answered by a
    // stand-in for its Notification, the permission itself granted as the operator would), goes
    // to another screen and is hidden. The notification goes through the console's service
    // worker, which shows it for real.
    other
        .cdp(
            "Browser.grantPermissions",
            json!({"origin": d.base, "permissions": ["notifications"]}),
        )
        .await;
    other.js(FAKE_NOTIFICATION, vec![]).await;
    other.js(WATCH_WORKER, vec![]).await;
    other.click("#notify-me").await;
    other
        .until(
            "notifications on",
            "return document.querySelector('.notify')?.dataset.state === 'on';",
        )
        .await;
    assert_eq!(
        other
            .js(
                "return localStorage.getItem('kaged.notifyApprovals');",
                vec![]
            )
            .await,
        "on",
        "the choice is remembered"
    );
    other.route("#/projects").await;
    other.ready().await;
    other
        .js(
            "Object.defineProperty(document, 'visibilityState', { configurable: true, get: () => 'hidden' });
             return true;",
            vec![],
        )
        .await;

    // A second call, denied from the conversation's own card with a message for the model.
    p.push(tool_reply(
        COMPLETIONS,
        &[Call::new(
            "call_sh2",
            "shell.bash",
            &json!({"command": "rm -rf /work"}),
        )],
    ));
    p.push(text_reply(COMPLETIONS, &["Understood."]));
    phone.fill("#message", "Clean up.").await;
    phone.click("#send").await;
    let card = phone
        .until(
            "the inline card, pending",
            "const c = document.querySelector('#conversation-log .approval[data-state=\"pending\"]');
             return c && c.dataset.approval;",
        )
        .await;
    let aid2 = card.as_str().unwrap().to_string();
    phone
        .until(
            "the turn waiting for approval",
            "return document.getElementById('turn-state').dataset.waiting === 'approval';",
        )
        .await;
    other
        .until(
            "the count 1 on the other browser",
            "return document.title === '(1) kaged';",
        )
        .await;
    // One notification, through the worker: the tool, the project and agent, the approval's id
    // and link; never the arguments.
    let shown = other
        .until(
            "the notification shown",
            "const w = window.__viaWorker; return w.length && w[0].shown !== null && w;",
        )
        .await;
    let link = format!("{}/#/approvals/{aid2}", d.base);
    assert_eq!(
        shown,
        json!([{
            "title": "Approval needed: shell.bash",
            "options": {"body": "agents / primary", "tag": aid2, "data": {"url": link}},
            "scope": format!("{}/", d.base),
            "shown": true,
        }]),
        "{shown:#}"
    );
    assert!(!shown.to_string().contains("rm -rf"), "{shown}");
    assert_eq!(
        other.js("return window.__notes;", vec![]).await,
        json!([]),
        "not the page's own Notification"
    );
    // Clicking it: the worker tells the console's window where to go (its `kaged.open`
    // message), and the window shows that approval.
    other
        .js(
            "navigator.serviceWorker.dispatchEvent(new MessageEvent('message',
               { data: { kind: 'kaged.open', url: window.__viaWorker[0].options.data.url } }));
             return true;",
            vec![],
        )
        .await;
    other
        .until_args(
            "the approval from the notification",
            "return location.hash === `#/approvals/${arguments[0]}`;",
            vec![json!(aid2)],
        )
        .await;
    phone
        .assert_no_sideways_scroll("conversation with a card")
        .await;
    phone.shot("ui-approvals-inline-pending.png").await;
    let sel = format!("#conversation-log .approval[data-approval='{aid2}']");
    phone
        .click(&format!("{sel} button[data-decision='deny']"))
        .await;
    phone
        .fill(&format!("{sel} textarea"), "not that directory")
        .await;
    phone
        .click(&format!("{sel} button[data-decision='deny-confirm']"))
        .await;
    let records = wait_conversation(d, &id, |r| {
        kind(r) == "tool_result" && r["event"]["call_id"] == "call_sh2"
    })
    .await;
    let result = &of_kind(&records, "tool_result")[1]["event"];
    assert_eq!(result["ok"], false, "{result}");
    assert_eq!(
        result["content"], "denied by the operator: not that directory",
        "{result}"
    );
    let a2 = approval(d, &aid2).await;
    assert_eq!(
        (&a2["state"], &a2["decision"], &a2["message"]),
        (
            &json!("denied"),
            &json!("deny"),
            &json!("not that directory")
        ),
        "{a2:#}"
    );
    let line = phone
        .until_args(
            "the inline card, denied",
            "const c = document.querySelector(`#conversation-log .approval[data-approval='${arguments[0]}']`);
             return c && c.dataset.state === 'denied' && c.querySelector('.approval-outcome').textContent;",
            vec![json!(aid2)],
        )
        .await;
    assert!(
        line.as_str()
            .unwrap()
            .ends_with(", with the message: not that directory"),
        "{line}"
    );
    // The model got the message as the tool's result.
    let requests = p.wait_requests(4).await;
    assert!(
        requests[3].body_text.contains("not that directory"),
        "{}",
        requests[3].body_text
    );
    other
        .until(
            "the count 0 on the other browser",
            "return document.title === 'kaged';",
        )
        .await;
    phone.assert_no_csp_violations("conversation").await;
    phone.assert_labelled("conversation").await;
    phone.shot("ui-approvals-inline-denied.png").await;
    other.close().await;
    phone.close().await;
}

/// Record what the page asks of the service worker's `showNotification`: the title, the
/// options, the registration's scope and, once settled, whether the real one showed it.
const WATCH_WORKER: &str = "window.__viaWorker = [];
    const real = ServiceWorkerRegistration.prototype.showNotification;
    ServiceWorkerRegistration.prototype.showNotification = function (title, options) {
      const seen = { title, options, scope: this.scope, shown: null };
      window.__viaWorker.push(seen);
      return real.call(this, title, options).then(
        () => { seen.shown = true; },
        (e) => { seen.shown = String(e); throw e; });
    };
    return true;";

/// Record the page's own notifications (`new Notification`, still the browser's), and hide the
/// page (a notification is only for a hidden page).
const WATCH_PAGE: &str = "window.__viaPage = [];
    window.__pageShown = [];
    window.Notification = class extends window.Notification {
      constructor(title, options) {
        window.__viaPage.push([title, options]);
        super(title, options);
        window.__pageShown.push(this);
      }
    };
    Object.defineProperty(document, 'visibilityState', { configurable: true, get: () => 'hidden' });
    return true;";

/// `notifyApproval` of the console's notifications.js, for `arguments[0]`: whether it showed
/// one, and what went through the worker and the page.
const NOTIFY: &str = "return import(new URL('assets/notifications.js', document.baseURI).href)
    .then((m) => m.notifyApproval(arguments[0]))
    .then((shown) => ({ shown, worker: window.__viaWorker, page: window.__viaPage }));";

/// sw.js's click handler, run in the page against stand-ins for the worker's `registration`
/// and `clients`: for each case (the notification's data, the windows open), what it did.
const SW_CLICKS: &str = r#"
const [scope, cases] = arguments;
window.registration = { scope };
const out = [];
return import(new URL('sw.js', document.baseURI).href).then(async () => {
  for (const [data, urls] of cases) {
    const did = [];
    window.clients = {
      matchAll: async (o) => { did.push(['matchAll', o.type, o.includeUncontrolled]);
        return urls.map((url) => ({ url, focused: false, visibilityState: 'hidden',
          postMessage: (m) => did.push(['postMessage', url, m.kind, m.url]),
          focus: async () => { did.push(['focus', url]); } })); },
      openWindow: async (url) => { did.push(['openWindow', url]); },
    };
    let waited = null;
    const e = new Event('notificationclick');
    e.notification = { data, close: () => did.push(['close']) };
    e.waitUntil = (p) => { waited = p; };
    window.dispatchEvent(e);
    await waited;
    out.push(did);
  }
  return out;
});
"#;

/// Phones show notifications only through a service worker: the console registers its own from
/// the served page when notifications are turned on, at the console's scope, and shows an
/// approval's notification through it (never with the arguments); the worker's click handler
/// leads to the approval in a console window; `/sw.js` is served as JavaScript, revalidated.
#[tokio::test]
async fn notifications_go_through_the_consoles_service_worker() {
    let _one = ONE_BROWSER.lock().await;
    let tmp = tempfile::tempdir().unwrap();
    let d = crate::common::Daemon::start(&tmp.path().join("home"));
    let base = d.base.clone();

    // Served at the root, without sign-in like the assets, as JavaScript, revalidated each time.
    let client = crate::common::plain_client();
    let response = client.get(format!("{base}/sw.js")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    assert_eq!(header("content-type"), "text/javascript; charset=utf-8");
    assert_eq!(header("cache-control"), "no-cache");
    assert_eq!(header("x-content-type-options"), "nosniff");
    assert!(header("content-security-policy").contains("script-src 'self'"));
    let body = response.text().await.unwrap();
    let file = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../kaged-server/ui/sw.js");
    assert_eq!(body, std::fs::read_to_string(file).unwrap());
    let elsewhere = client
        .get(format!("{base}/assets/sw.js"))
        .send()
        .await
        .unwrap();
    assert_eq!(elsewhere.status(), 404, "one URL for the worker");

    let Some(ui) = Ui::start(Viewport::Phone, "approvals-worker").await else {
        return;
    };
    ui.goto(&d.launch_url).await;
    ui.ready().await;
    // Nothing is registered before the operator asks for notifications.
    let before = ui
        .js(
            "return navigator.serviceWorker.getRegistrations().then((r) => r.length);",
            vec![],
        )
        .await;
    assert_eq!(before, 0);
    // The operator allows notifications for the console's origin (headless Chromium has no
    // prompt to click).
    ui.cdp(
        "Browser.grantPermissions",
        json!({"origin": base, "permissions": ["notifications"]}),
    )
    .await;
    ui.route("#/approvals").await;
    ui.ready().await;
    ui.click("#notify-me").await;
    ui.until(
        "notifications on",
        "return document.querySelector('.notify')?.dataset.state === 'on';",
    )
    .await;
    let ready = ui
        .js(
            "return navigator.serviceWorker.ready.then((r) => [r.scope, r.active.scriptURL]);",
            vec![],
        )
        .await;
    assert_eq!(ready, json!([format!("{base}/"), format!("{base}/sw.js")]));

    // An approval while the page is hidden: shown through the worker's registration, its id the
    // tag, its link the data; the arguments nowhere.
    ui.js(WATCH_WORKER, vec![]).await;
    ui.js(WATCH_PAGE, vec![]).await;
    let approval = json!({
        "id": "apr_00000000000000b1", "tool": "shell.bash", "project": "agents",
        "agent": "primary", "arguments": {"command": "cat secret-token.txt"},
    });
    let shown = ui.js(NOTIFY, vec![approval]).await;
    let link = format!("{base}/#/approvals/apr_00000000000000b1");
    assert_eq!(
        shown,
        json!({
            "shown": true,
            "worker": [{
                "title": "Approval needed: shell.bash",
                "options": {"body": "agents / primary", "tag": "apr_00000000000000b1",
                            "data": {"url": link}},
                "scope": format!("{base}/"),
                "shown": true,
            }],
            "page": [],
        }),
        "{shown:#}"
    );
    assert!(!shown.to_string().contains("secret-token"), "{shown}");
    let listed = ui
        .js(
            "return navigator.serviceWorker.ready.then((r) => r.getNotifications())
               .then((ns) => ns.map((n) => [n.title, n.body, n.tag, n.data && n.data.url]));",
            vec![],
        )
        .await;
    assert_eq!(
        listed,
        json!([[
            "Approval needed: shell.bash",
            "agents / primary",
            "apr_00000000000000b1",
            link
        ]]),
        "the browser holds it"
    );

    // A click: a console window focused and told where to go (or one opened there); only this
    // console's approvals routes are followed.
    let scope = format!("{base}/");
    let page = format!("{base}/#/projects");
    let elsewhere = "http://203.0.113.9/#/approvals/apr_x";
    let clicks = ui
        .js(
            SW_CLICKS,
            vec![
                json!(scope),
                json!([
                    [{"url": link}, [page, "http://127.0.0.1:1/other/"]],
                    [{"url": link}, []],
                    [{"url": elsewhere}, []],
                    [null, [page]],
                ]),
            ],
        )
        .await;
    let list = format!("{base}/#/approvals");
    let matched = json!(["matchAll", "window", true]);
    assert_eq!(
        clicks,
        json!([
            [
                ["close"],
                matched,
                ["postMessage", page, "kaged.open", link],
                ["focus", page]
            ],
            [["close"], matched, ["openWindow", link]],
            [["close"], matched, ["openWindow", list]],
            [
                ["close"],
                matched,
                ["postMessage", page, "kaged.open", list],
                ["focus", page]
            ],
        ]),
        "{clicks:#}"
    );
    // The page told to go there goes; a foreign URL is ignored.
    let went = ui
        .js(
            "const go = (url) => navigator.serviceWorker.dispatchEvent(
               new MessageEvent('message', { data: { kind: 'kaged.open', url } }));
             go('http://203.0.113.9/#/approvals/apr_x');
             const after_foreign = location.hash;
             go(arguments[0]);
             return [after_foreign, location.hash];",
            vec![json!(link)],
        )
        .await;
    assert_eq!(
        went,
        json!(["#/approvals", "#/approvals/apr_00000000000000b1"])
    );

    // Without service workers (an older browser): the page's own notification, the same words;
    // a click on it leads to the Approvals screen.
    ui.route("#/projects").await;
    let fallback = ui
        .js(
            &format!("delete Navigator.prototype.serviceWorker; {NOTIFY}"),
            vec![json!({
                "id": "apr_00000000000000b2", "tool": "file.write", "project": "agents",
                "agent": "primary", "arguments": {"path": "secret-token.txt"},
            })],
        )
        .await;
    assert_eq!(fallback["shown"], true, "{fallback:#}");
    assert_eq!(
        fallback["worker"].as_array().unwrap().len(),
        1,
        "not through the worker: {fallback:#}"
    );
    assert_eq!(
        fallback["page"],
        json!([[
            "Approval needed: file.write",
            {"body": "agents / primary", "tag": "apr_00000000000000b2"}
        ]]),
        "{fallback:#}"
    );
    assert!(!fallback.to_string().contains("secret-token"), "{fallback}");
    ui.js(
        "window.__pageShown[0].onclick({ preventDefault() {} }); return true;",
        vec![],
    )
    .await;
    ui.until(
        "the Approvals screen from the page's notification",
        "return location.hash === '#/approvals';",
    )
    .await;
    ui.assert_no_csp_violations("service worker").await;
    ui.close().await;
}

/// An ACP agent's records: its thoughts stream into one folded block (as text, never markup),
/// and a new plan replaces the last.
#[tokio::test]
async fn an_acp_agents_thoughts_and_plan_are_drawn() {
    let _one = ONE_BROWSER.lock().await;
    let tmp = tempfile::tempdir().unwrap();
    let d = crate::common::Daemon::start(&tmp.path().join("home"));
    let Some(ui) = Ui::start(Viewport::Phone, "acp-render").await else {
        return;
    };
    ui.goto(&d.launch_url).await;
    ui.ready().await;
    let events = [
        json!({"type": "turn_started", "turn": 1}),
        json!({"type": "thought_delta", "text": "look at <b>src</b> "}),
        json!({"type": "thought_delta", "text": "first"}),
        json!({"type": "plan", "entries": [
            {"content": "read the code", "status": "in_progress", "priority": "high"},
            {"content": "write the fix", "status": "pending", "priority": "high"}]}),
        json!({"type": "thought_delta", "text": "then write"}),
        json!({"type": "plan", "entries": [
            {"content": "read the code", "status": "completed", "priority": "high"},
            {"content": "write the fix", "status": "in_progress", "priority": "high"}]}),
        json!({"type": "acp_session", "session_id": "s-1", "loaded": false}),
    ];
    let records: Vec<Value> = events
        .into_iter()
        .enumerate()
        .map(|(i, e)| record(i as u64 + 1, None, e))
        .collect();
    let drawn = ui
        .js(
            r#"
const [records] = arguments;
return import(new URL('assets/conversation.js', document.baseURI).href).then((m) => {
  const host = document.createElement('div');
  host.className = 'conversation';
  document.querySelector('main').replaceChildren(host);
  const c = new m.Conversation(host, {});
  records.forEach((r) => c.apply(r));
  return {
    thoughts: Array.from(host.querySelectorAll('details.thought')).map((d) => ({
      text: d.querySelector('.thought-text').textContent, open: d.open,
      markup: d.querySelectorAll('b').length })),
    plans: Array.from(host.querySelectorAll('.plan')).map((p) =>
      Array.from(p.querySelectorAll('li')).map((li) => [li.dataset.status, li.textContent])),
  };
});
"#,
            vec![json!(records)],
        )
        .await;
    let v = &drawn;
    assert_eq!(
        drawn["thoughts"],
        json!([
            {"text": "look at <b>src</b> first", "open": false, "markup": 0},
            {"text": "then write", "open": false, "markup": 0}
        ]),
        "{v:#}"
    );
    assert_eq!(
        drawn["plans"],
        json!([[
            ["completed", "read the code (completed)"],
            ["in_progress", "write the fix (in progress)"]
        ]]),
        "one plan, the last: {v:#}"
    );
    ui.assert_no_sideways_scroll("acp records").await;
    ui.assert_no_csp_violations("acp records").await;
    ui.shot("ui-acp-thoughts-and-plan.png").await;
    ui.close().await;
}
