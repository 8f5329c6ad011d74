//! The web console's Plugins screen (`#/plugins`) in headless Chromium through chromedriver (the
//! `ui` module's harness), on real plugins in real cages (the `plugins` module's helpers).
//!
//! - On a 360×740 phone: a well-behaved plugin (running), one whose manifest does not validate
//!   (invalid, the manifest's problem shown) and one crashing at start (disabled by kaged, the
//!   exit shown), each with its state in words and the button that applies; Disable (the
//!   button held while the request runs) → stopped, "disabled by the operator", and the API
//!   agrees; Enable → running again; an error of the API (the choice cannot be recorded) shown
//!   with its message; the Status screen's counts by state, linking here.
//! - On a desktop: no plugins installed → the empty state naming the directory and the command
//!   that installs one.

use serde_json::{Value, json};

use crate::plugins::{install, install_invalid, plugin, start_with_plugins, wait_plugin};
use crate::ui::{ONE_BROWSER, Ui, Viewport};

/// Every plugin card as the page shows it: name, state, reason, visible buttons, all its text.
const CARDS: &str = r#"
return Array.from(document.querySelectorAll('#plugin-list > li.plugin')).map((c) => ({
  name: c.dataset.plugin,
  state: c.dataset.state,
  badge: c.querySelector('.plugin-state')?.textContent || '',
  reason: c.querySelector('.plugin-reason')?.textContent || '',
  buttons: Array.from(c.querySelectorAll('.actions button')).filter((b) => !b.hidden)
    .map((b) => b.dataset.action),
  text: c.innerText,
}));
"#;

/// Wait until the cards show `states` (name → state); the cards.
async fn cards_in(ui: &Ui, what: &str, states: &[(&str, &str)]) -> Vec<Value> {
    let script = format!(
        "const want = arguments[0]; const cards = (() => {{ {CARDS} }})();
         const ok = Object.entries(want).every(([n, s]) => cards.some((c) => c.name === n && c.state === s));
         return ok ? cards : null;"
    );
    let want: serde_json::Map<String, Value> = states
        .iter()
        .map(|(n, s)| (n.to_string(), json!(s)))
        .collect();
    let v = ui
        .until_args(what, &script, vec![Value::Object(want)])
        .await;
    v.as_array().unwrap().clone()
}

fn card<'a>(cards: &'a [Value], name: &str) -> &'a Value {
    cards
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no card for {name}: {cards:?}"))
}

#[tokio::test]
async fn the_plugins_screen_shows_states_and_reasons_and_the_operator_disables_and_enables() {
    let _one = ONE_BROWSER.lock().await;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("plugins");
    install(&dir, "good", &["good"], &["kaged:storage:read"]);
    install(&dir, "crashes", &["crash_at_start"], &[]);
    install_invalid(&dir, "badmanifest");
    let d = start_with_plugins(
        &tmp.path().join("home"),
        &dir,
        "good,crashes,badmanifest",
        &[("KAGED_TEST_PLUGIN_BACKOFF_MS", "100")],
    );
    wait_plugin(&d, "good", "running", |p| p["state"] == "running").await;
    wait_plugin(&d, "crashes", "disabled", |p| p["state"] == "disabled").await;
    let Some(ui) = Ui::start(Viewport::Phone, "plugins").await else {
        return;
    };
    ui.goto(&d.launch_url).await;
    ui.ready().await;
    ui.click("a[data-nav='plugins']").await;
    let cards = cards_in(
        &ui,
        "the three plugins in their states",
        &[
            ("good", "running"),
            ("crashes", "disabled"),
            ("badmanifest", "invalid"),
        ],
    )
    .await;
    assert_eq!(cards.len(), 3, "{cards:#?}");
    let good = card(&cards, "good");
    assert!(
        good["badge"].as_str().unwrap().contains("running"),
        "{good}"
    );
    assert_eq!(good["buttons"], json!(["disable"]), "{good}");
    let text = good["text"].as_str().unwrap();
    for shown in [
        "v0.1.0",
        "a test plugin",
        "read its own kaged storage",
        "Restarts",
    ] {
        assert!(text.contains(shown), "{shown:?} in {text}");
    }
    let crashes = card(&cards, "crashes");
    let reason = crashes["reason"].as_str().unwrap();
    assert!(
        reason.starts_with("disabled after 5 failures") && reason.contains("exit code 3"),
        "{crashes}"
    );
    assert!(
        crashes["badge"]
            .as_str()
            .unwrap()
            .contains("disabled by kaged"),
        "{crashes}"
    );
    assert_eq!(
        crashes["buttons"],
        json!(["enable", "disable"]),
        "kaged gave up on it: start it afresh, or keep it off: {crashes}"
    );
    let bad = card(&cards, "badmanifest");
    assert!(
        bad["reason"]
            .as_str()
            .unwrap()
            .contains("kaged-plugin.yaml:"),
        "{bad}"
    );
    assert!(bad["badge"].as_str().unwrap().contains("invalid"), "{bad}");
    assert_eq!(
        bad["buttons"],
        json!(["enable"]),
        "it cannot run; Enable reads it again once mended: {bad}"
    );
    assert!(
        bad["text"]
            .as_str()
            .unwrap()
            .contains("kaged plugin validate"),
        "{bad}"
    );
    let width = ui.js("return window.innerWidth;", vec![]).await;
    assert_eq!(width, json!(360), "the phone viewport");
    ui.assert_no_sideways_scroll("plugins").await;
    ui.assert_labelled("plugins").await;
    ui.shot("ui-phone-plugins.png").await;

    // Disable the running one. The page's requests to the plugin routes are held for a moment,
    // so the button is seen held while the request runs.
    ui.js(
        "const real = window.fetch;
         window.fetch = (url, init) => String(url).includes('api/v1/plugins/')
           ? new Promise((r) => setTimeout(r, 1000)).then(() => real(url, init))
           : real(url, init);
         return true;",
        vec![],
    )
    .await;
    ui.click("#plugin-good-disable").await;
    let held = ui
        .js(
            "const c = document.getElementById('plugin-good');
             return [document.getElementById('plugin-good-disable').disabled,
                     c.getAttribute('aria-busy'), c.querySelector('.plugin-result').textContent];",
            vec![],
        )
        .await;
    assert_eq!(held, json!([true, "true", "Disabling…"]), "while it runs");
    let cards = cards_in(&ui, "good stopped", &[("good", "stopped")]).await;
    let good = card(&cards, "good");
    assert_eq!(good["reason"], "disabled by the operator", "{good}");
    assert_eq!(good["buttons"], json!(["enable"]), "{good}");
    assert!(
        good["text"].as_str().unwrap().contains("Disabled good."),
        "{good}"
    );
    let p = plugin(&d.api_get("/api/v1/plugins").await, "good").clone();
    assert_eq!(
        (p["state"].as_str(), p["enabled"].as_bool()),
        (Some("stopped"), Some(false)),
        "the API agrees: {p}"
    );
    ui.shot("ui-phone-plugins-disabled.png").await;

    ui.click("#plugin-good-enable").await;
    let cards = cards_in(&ui, "good running again", &[("good", "running")]).await;
    let good = card(&cards, "good");
    assert_eq!(good["buttons"], json!(["disable"]), "{good}");
    assert!(
        good["text"].as_str().unwrap().contains("Enabled good."),
        "{good}"
    );
    let p = plugin(&d.api_get("/api/v1/plugins").await, "good").clone();
    assert_eq!(
        (p["state"].as_str(), p["enabled"].as_bool()),
        (Some("running"), Some(true)),
        "the API agrees: {p}"
    );

    // The choice cannot be recorded (its file is a directory now): the API's error, said.
    let choices = dir.join(".state.json");
    std::fs::remove_file(&choices).unwrap();
    std::fs::create_dir(&choices).unwrap();
    ui.click("#plugin-crashes-disable").await;
    let error = ui
        .until(
            "the error of the refused choice",
            "return document.querySelector('#plugin-crashes .plugin-result [role=alert]')?.textContent;",
        )
        .await;
    let error = error.as_str().unwrap();
    assert!(
        error.contains("cannot record the choice in") && error.contains(".state.json"),
        "{error}"
    );
    ui.assert_no_csp_violations("plugins").await;

    // The Status screen counts them by state and leads here.
    ui.route("#/status").await;
    let counts = ui
        .until(
            "the plugins' counts on the Status screen",
            "const l = document.getElementById('status-plugin-states'); return l && l.innerText;",
        )
        .await;
    let counts = counts.as_str().unwrap();
    for line in ["1 running", "1 invalid", "1 disabled by kaged"] {
        assert!(counts.contains(line), "{line:?} in {counts}");
    }
    ui.click("#status-plugins-link").await;
    cards_in(&ui, "the Plugins screen again", &[("good", "running")]).await;
    ui.assert_no_csp_violations("status").await;
    ui.close().await;
}

#[tokio::test]
async fn with_no_plugin_installed_the_screen_says_how_to_install_one() {
    let _one = ONE_BROWSER.lock().await;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("no-plugins");
    let d = start_with_plugins(&tmp.path().join("home"), &dir, "", &[]);
    let Some(ui) = Ui::start(Viewport::Desktop, "plugins-empty").await else {
        return;
    };
    ui.goto(&d.launch_url).await;
    ui.ready().await;
    ui.route("#/plugins").await;
    let empty = ui
        .until(
            "the empty state",
            "const e = document.getElementById('plugins-empty'); return e && !e.hidden && e.innerText;",
        )
        .await;
    let empty = empty.as_str().unwrap();
    assert!(
        empty.contains(&format!("No plugins installed in {}.", dir.display())),
        "{empty}"
    );
    let command = ui
        .js(
            "return document.querySelector('#plugins-empty pre code').textContent;",
            vec![],
        )
        .await;
    assert_eq!(command, "kaged plugin install PATH");
    let current = ui
        .js(
            "return document.querySelector('a[aria-current=page]')?.textContent;",
            vec![],
        )
        .await;
    assert_eq!(current, "Plugins", "the nav says where we are");
    ui.shot("ui-plugins-empty.png").await;
    ui.route("#/status").await;
    ui.until(
        "no plugins on the Status screen",
        "return document.getElementById('status-plugins')?.innerText.includes('None installed.');",
    )
    .await;
    ui.assert_no_csp_violations("plugins").await;
    ui.close().await;
}
