//! The web console end to end: the real daemon, Debian's headless Chromium driven through
//! chromedriver (WebDriver, with `fantoccini`), at a desktop viewport and on a 360×740 phone.
//! Sign-in goes through the printed launch URL; the project is a temporary directory; runs are
//! real PTYs in real cages.
//!
//! Screenshots of the main screens are saved as `ui-*.png` under $KAGED_TEST_ARTIFACTS (default:
//! target/test-artifacts). Every wait polls a condition and, when it times out, fails with what
//! the page showed; there are no fixed sleeps.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

mod common;

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

/// The longest one thing (a page, a command's output, a state change) may take.
pub(crate) const PATIENCE: Duration = Duration::from_secs(30);
pub(crate) const ENTER: &str = "\u{e007}";

/// One browser at a time: the machines running this have few cores, and Chromium is heavy.
pub(crate) static ONE_BROWSER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn artifacts() -> PathBuf {
    let dir = std::env::var_os("KAGED_TEST_ARTIFACTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/test-artifacts")
        });
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

const PROJECT_YAML: &str = r#"version: 1
project: demo
description: A demo project for the web console tests.
primary:
  command: [sh]
tasks:
  hello:
    description: Say hello.
    command: [sh, -c, "echo hello from kaged"]
  sleepy:
    description: Sleep for ten minutes (to be aborted).
    command: [sleep, "600"]
terminals:
  shell: [bash, --norc, --noprofile]
"#;

fn make_project(dir: &Path) -> PathBuf {
    let project = dir.join("demo");
    std::fs::create_dir_all(project.join(".kaged")).unwrap();
    std::fs::write(project.join(".kaged/project.yaml"), PROJECT_YAML).unwrap();
    project
}

#[derive(Clone, Copy, PartialEq)]
pub(crate) enum Viewport {
    Desktop,
    /// 360×740 CSS pixels, touch, mobile (Chromium's device emulation).
    Phone,
}

/// chromedriver (in its own process group, with the Chromium it starts) and a session on it.
pub(crate) struct Ui {
    pub(crate) client: Client,
    driver: Child,
    /// chromedriver's port (for its Chrome-only endpoints, which fantoccini does not wrap).
    port: u16,
    name: &'static str,
    started: Instant,
    _profile: tempfile::TempDir,
}

impl Drop for Ui {
    fn drop(&mut self) {
        // The whole group: chromedriver and the browser it launched (a failed test never
        // got to close the session).
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.driver.id())])
            .status();
        let _ = self.driver.wait();
    }
}

impl Ui {
    /// `None` only when the operator explicitly opted out of browser tests.
    pub(crate) async fn start(viewport: Viewport, name: &'static str) -> Option<Ui> {
        let found = Command::new("chromedriver")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success());
        if !found {
            if std::env::var_os("KAGED_TEST_SKIP_BROWSER").is_some() {
                eprintln!("browser test skipped: KAGED_TEST_SKIP_BROWSER is set");
                return None;
            }
            panic!(
                "chromedriver is not installed: run ./scripts/test (installs it as root) or `sudo apt-get install chromium-driver`"
            );
        }
        let port = free_port();
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("spawn chromedriver");
        let deadline = Instant::now() + PATIENCE;
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "chromedriver did not listen on {port}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let profile = tempfile::tempdir().unwrap();
        let mut args = vec![
            "--headless=new".to_string(),
            "--no-sandbox".into(),
            "--disable-gpu".into(),
            "--disable-dev-shm-usage".into(),
            "--disable-quic".into(),
            "--no-first-run".into(),
            "--disable-background-networking".into(),
            "--disable-component-update".into(),
            "--disable-sync".into(),
            "--lang=en-US".into(),
            format!("--user-data-dir={}", profile.path().display()),
        ];
        let mut options = json!({});
        match viewport {
            Viewport::Desktop => args.push("--window-size=1280,800".into()),
            Viewport::Phone => {
                options["mobileEmulation"] = json!({
                    "deviceMetrics": {"width": 360, "height": 740, "pixelRatio": 2.0, "touch": true, "mobile": true}
                });
            }
        }
        options["args"] = json!(args);
        let mut caps = serde_json::Map::new();
        caps.insert("browserName".into(), json!("chrome"));
        caps.insert("goog:chromeOptions".into(), options);
        let mut driver = Some(driver);
        let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps)
            .connect(&format!("http://127.0.0.1:{port}"))
            .await;
        let client = match client {
            Ok(c) => c,
            Err(e) => {
                let mut d = driver.take().unwrap();
                let _ = Command::new("kill")
                    .args(["-KILL", "--", &format!("-{}", d.id())])
                    .status();
                let _ = d.wait();
                panic!("cannot start a Chromium session through chromedriver: {e}");
            }
        };
        Some(Ui {
            client,
            driver: driver.take().unwrap(),
            port,
            name,
            started: Instant::now(),
            _profile: profile,
        })
    }

    /// Run a Chrome DevTools Protocol command through chromedriver (`goog/cdp/execute`); its
    /// result.
    pub(crate) async fn cdp(&self, cmd: &str, params: Value) -> Value {
        let session = self.client.session_id().await.unwrap().unwrap();
        let url = format!(
            "http://127.0.0.1:{}/session/{session}/goog/cdp/execute",
            self.port
        );
        let response = plain_client()
            .post(url)
            .json(&json!({"cmd": cmd, "params": params}))
            .send()
            .await
            .unwrap();
        let status = response.status();
        let v: Value = response.json().await.unwrap();
        assert!(status.is_success(), "[{}] {cmd}: {status} {v}", self.name);
        v["value"].clone()
    }

    /// Log a step (shown with the failure report, or live with --nocapture).
    pub(crate) fn step(&self, what: &str) {
        eprintln!(
            "[{} +{:.1}s] {what}",
            self.name,
            self.started.elapsed().as_secs_f64()
        );
    }

    /// End the browser session (Chromium exits); `Drop` stops chromedriver.
    pub(crate) async fn close(self) {
        self.client.clone().close().await.unwrap();
    }

    pub(crate) async fn goto(&self, url: &str) {
        self.client.goto(url).await.unwrap();
    }

    /// Change the route of the single-page app without reloading it.
    pub(crate) async fn route(&self, hash: &str) {
        self.step(&format!("go to {hash}"));
        self.js(
            "location.hash = arguments[0]; return true;",
            vec![json!(hash)],
        )
        .await;
    }

    pub(crate) async fn js(&self, script: &str, args: Vec<Value>) -> Value {
        self.client
            .execute(script, args)
            .await
            .unwrap_or_else(|e| panic!("script failed: {e}\n{script}"))
    }

    /// Poll `script` (a function body) until it returns something truthy; return that.
    pub(crate) async fn until(&self, what: &str, script: &str) -> Value {
        self.until_args(what, script, vec![]).await
    }

    pub(crate) async fn until_args(&self, what: &str, script: &str, args: Vec<Value>) -> Value {
        self.step(&format!("wait for {what}"));
        let deadline = Instant::now() + PATIENCE;
        loop {
            let v = self
                .client
                .execute(script, args.clone())
                .await
                .unwrap_or(Value::Null);
            let truthy = match &v {
                Value::Null => false,
                Value::Bool(b) => *b,
                Value::String(s) => !s.is_empty(),
                Value::Number(n) => n.as_f64() != Some(0.0),
                _ => true,
            };
            if truthy {
                return v;
            }
            if Instant::now() > deadline {
                let page = self.page_text().await;
                let term = self.terminal_text().await;
                panic!(
                    "[{}] timed out waiting for {what}\n--- page ---\n{page}\n--- terminal ---\n{term}",
                    self.name
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub(crate) async fn page_text(&self) -> String {
        self.client
            .execute(
                "return location.hash + '\\n' + (document.body ? document.body.innerText : '')",
                vec![],
            )
            .await
            .ok()
            .and_then(|v| v.as_str().map(String::from))
            .unwrap_or_default()
    }

    pub(crate) async fn click(&self, css: &str) {
        self.step(&format!("click {css}"));
        let el = self
            .client
            .wait()
            .at_most(PATIENCE)
            .for_element(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("[{}] no {css}: {e}", self.name));
        el.click()
            .await
            .unwrap_or_else(|e| panic!("[{}] click {css}: {e}", self.name));
    }

    pub(crate) async fn fill(&self, css: &str, text: &str) {
        let el = self
            .client
            .wait()
            .at_most(PATIENCE)
            .for_element(Locator::Css(css))
            .await
            .unwrap();
        el.clear().await.unwrap();
        el.send_keys(text).await.unwrap();
    }

    /// The terminal's rows as text (xterm.js's DOM renderer), one line per row.
    async fn terminal_text(&self) -> String {
        self.client
            .execute(
                "const rows = document.querySelectorAll('#terminal .xterm-rows > div');
                 return Array.from(rows).map(r => r.textContent.replace(/\\u00a0/g, ' ').trimEnd()).join('\\n');",
                vec![],
            )
            .await
            .ok()
            .and_then(|v| v.as_str().map(String::from))
            .unwrap_or_default()
    }

    /// Wait until some row of the terminal is exactly `line`.
    async fn wait_line(&self, line: &str) {
        self.until_args(
            &format!("the terminal line {line:?}"),
            "const rows = document.querySelectorAll('#terminal .xterm-rows > div');
             return Array.from(rows).some(r => r.textContent.replace(/\\u00a0/g, ' ').trim() === arguments[0]);",
            vec![json!(line)],
        )
        .await;
    }

    async fn count_lines(&self, line: &str) -> usize {
        self.terminal_text()
            .await
            .lines()
            .filter(|l| l.trim() == line)
            .count()
    }

    /// Type into the terminal (xterm.js's hidden textarea), as a keyboard would.
    async fn type_keys(&self, text: &str) {
        self.step(&format!("type {text:?}"));
        let el = self
            .client
            .wait()
            .at_most(PATIENCE)
            .for_element(Locator::Css("#terminal .xterm-helper-textarea"))
            .await
            .unwrap();
        el.send_keys(text).await.unwrap();
    }

    /// Wait for the console to be ready after a (re)load.
    pub(crate) async fn ready(&self) {
        self.until(
            "the console to be ready",
            "return document.body.dataset.state === 'ready' && !document.querySelector('main[aria-busy]');",
        )
        .await;
    }

    /// Wait until a live terminal is attached (hello answered).
    async fn attached(&self) {
        self.until(
            "the terminal to attach",
            "const c = document.getElementById('conn'); return c && c.dataset.kind === 'live';",
        )
        .await;
    }

    /// What the page's CSP refused since it loaded (the console records it on <html>).
    pub(crate) async fn assert_no_csp_violations(&self, screen: &str) {
        let v = self
            .js(
                "return document.documentElement.dataset.cspViolations || '';",
                vec![],
            )
            .await;
        assert_eq!(
            v.as_str().unwrap(),
            "",
            "[{}] {screen}: the CSP refused something",
            self.name
        );
    }

    /// Every visible control has a name a screen reader can say.
    pub(crate) async fn assert_labelled(&self, screen: &str) {
        let unnamed = self
            .js(
                "return Array.from(document.querySelectorAll('button, input, select, a[href]'))
                   .filter(el => el.getClientRects().length > 0)
                   .filter(el => !(el.labels && el.labels.length) && !el.getAttribute('aria-label')
                                 && !el.textContent.trim())
                   .map(el => el.outerHTML.slice(0, 80));",
                vec![],
            )
            .await;
        assert_eq!(
            unnamed,
            json!([]),
            "[{}] {screen}: controls without a name",
            self.name
        );
    }

    /// The page is no wider than the viewport (nothing scrolls sideways at 360 px).
    pub(crate) async fn assert_no_sideways_scroll(&self, screen: &str) {
        let v = self
            .js(
                "return [document.documentElement.scrollWidth, window.innerWidth];",
                vec![],
            )
            .await;
        let (scroll, inner) = (v[0].as_f64().unwrap(), v[1].as_f64().unwrap());
        assert!(
            scroll <= inner + 1.0,
            "[{}] {screen}: the page is {scroll}px wide in a {inner}px viewport",
            self.name
        );
    }

    pub(crate) async fn shot(&self, file: &str) {
        self.step(&format!("screenshot {file}"));
        // Let pending paints land (fonts, the terminal's render frame) before the picture.
        self.js(
            "return new Promise(r => requestAnimationFrame(() => requestAnimationFrame(() => r(true))));",
            vec![],
        )
        .await;
        let png = self.client.screenshot().await.unwrap();
        assert!(
            png.starts_with(b"\x89PNG") && png.len() > 2000,
            "{file} is not a real screenshot"
        );
        std::fs::write(artifacts().join(file), png).unwrap();
    }

    async fn hash(&self) -> String {
        self.js("return location.hash;", vec![])
            .await
            .as_str()
            .unwrap()
            .to_string()
    }

    pub(crate) async fn session_id(&self) -> String {
        let v = self
            .until(
                "a session page",
                "const m = location.hash.match(/^#\\/sessions\\/([0-9a-f]{32})$/); return m && m[1];",
            )
            .await;
        v.as_str().unwrap().to_string()
    }
}

/// A request authenticated with the daemon's nonce (as a script would be).
async fn call(d: &Daemon, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
    let mut request = plain_client()
        .request(method, format!("{}{path}", d.base))
        .header("x-kaged-auth-nonce", d.nonce());
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    assert!(
        response.status().is_success(),
        "{path}: {}",
        response.status()
    );
    response.json().await.unwrap()
}

/// Sign in through the launch URL and load the project through the form.
async fn sign_in_and_load(ui: &Ui, d: &Daemon, project: &Path, prefix: &str) {
    ui.goto(&d.launch_url).await;
    ui.ready().await;
    ui.until(
        "the empty project list",
        "return document.querySelector('#project-list .empty');",
    )
    .await;
    let who = ui
        .js("return document.getElementById('who').textContent;", vec![])
        .await;
    assert!(
        !who.as_str().unwrap().is_empty(),
        "who is signed in is shown"
    );
    ui.shot(&format!("ui-{prefix}-projects-empty.png")).await;

    ui.fill("#load-path", project.to_str().unwrap()).await;
    ui.click("#load-button").await;
    ui.until(
        "the project page",
        "return location.hash === '#/projects/demo' && document.querySelector('h1')?.textContent === 'demo';",
    )
    .await;
    ui.until(
        "the project to be shown valid",
        "return document.querySelector('#validity .badge.ok')?.textContent === 'valid';",
    )
    .await;
    // Everything the project can start is offered.
    for id in [
        "#start-terminal",
        "#start-agent-primary",
        "#start-task-hello",
        "#start-task-sleepy",
    ] {
        ui.client.find(Locator::Css(id)).await.unwrap();
    }
}

/// Start the `sleepy` task from the project page and abort it from its session view.
async fn start_and_abort(ui: &Ui, d: &Daemon, prefix: &str) {
    ui.route("#/projects/demo").await;
    ui.ready().await;
    ui.click("#start-task-sleepy").await;
    let id = ui.session_id().await;
    ui.until(
        "the task to run",
        "return document.querySelector('#session-state .badge')?.dataset.state === 'running';",
    )
    .await;
    ui.click("#abort").await;
    // No confirmation: the first tap aborts.
    ui.until(
        "the run to be killed",
        "return document.querySelector('#session-state .badge')?.dataset.state === 'killed';",
    )
    .await;
    let ended = ui
        .until(
            "the reason it ended",
            "const e = document.getElementById('session-ended'); return !e.hidden && e.textContent;",
        )
        .await;
    assert!(ended.as_str().unwrap().starts_with("Killed by "), "{ended}");
    let abort_hidden = ui
        .js("return document.getElementById('abort').hidden;", vec![])
        .await;
    assert_eq!(abort_hidden, json!(true), "no Abort button on an ended run");
    let body = call(
        d,
        reqwest::Method::GET,
        &format!("/api/v1/sessions/{id}"),
        None,
    )
    .await;
    assert_eq!(body["session"]["state"], "killed", "{body}");
    ui.shot(&format!("ui-{prefix}-aborted.png")).await;
}

#[tokio::test]
async fn desktop_console_signs_in_loads_a_project_runs_a_terminal_survives_reload_and_aborts() {
    let _one = ONE_BROWSER.lock().await;
    let tmp = tempfile::tempdir().unwrap();
    let project = make_project(tmp.path());
    let d = Daemon::start(&tmp.path().join("home"));
    let Some(ui) = Ui::start(Viewport::Desktop, "desktop").await else {
        return;
    };

    sign_in_and_load(&ui, &d, &project, "desktop").await;

    // The project's session list follows the events stream: a run started elsewhere (the
    // API) appears and reaches its end state without a reload.
    let started = call(
        &d,
        reqwest::Method::POST,
        "/api/v1/projects/demo/sessions",
        Some(json!({"kind": "task", "name": "hello"})),
    )
    .await;
    let hello = started["session"]["id"].as_str().unwrap().to_string();
    ui.until_args(
        "the new run in the list, exited",
        "return document.querySelector(`#session-list [data-session='${arguments[0]}'][data-state='exited']`);",
        vec![json!(hello)],
    )
    .await;
    ui.assert_labelled("project").await;
    ui.shot("ui-desktop-project.png").await;

    // A terminal: type a command, see its output.
    ui.click("#start-terminal").await;
    let terminal = ui.session_id().await;
    ui.attached().await;
    ui.type_keys(&format!("echo kaged-ui-$((6*7)){ENTER}"))
        .await;
    ui.wait_line("kaged-ui-42").await;

    // 24-bit colour and the theme come through the CSSOM shim (the CSP blocks inline styles).
    ui.type_keys(&format!(
        "printf '\\033[38;2;255;0;0mTRUE-RED\\033[0m\\n'{ENTER}"
    ))
    .await;
    ui.wait_line("TRUE-RED").await;
    let colours = ui
        .js(
            "const span = Array.from(document.querySelectorAll('#terminal .xterm-rows span'))
                 .find(s => s.textContent === 'TRUE-RED');
             const rows = document.querySelector('#terminal .xterm-rows');
             return [getComputedStyle(span).color, getComputedStyle(rows).color];",
            vec![],
        )
        .await;
    assert_eq!(colours[0], "rgb(255, 0, 0)", "true colour applied");
    assert_eq!(colours[1], "rgb(227, 230, 235)", "theme foreground applied");
    ui.assert_no_csp_violations("terminal").await;
    ui.assert_labelled("terminal").await;

    // The PTY has the terminal's size, and follows the browser window.
    let stty = async |ui: &Ui, tag: &str| -> (u64, u64) {
        ui.type_keys(&format!("clear; echo {tag}-$(stty size){ENTER}"))
            .await;
        let v = ui
            .until_args(
                "stty's answer and the terminal's row count",
                "const rows = Array.from(document.querySelectorAll('#terminal .xterm-rows > div'))
                     .map(r => r.textContent.replace(/\\u00a0/g, ' ').trim());
                 const size = rows.find(l => l.startsWith(arguments[0] + '-') && /-\\d+ \\d+$/.test(l));
                 return size && [Number(size.split('-')[1].split(' ')[0]), rows.length];",
                vec![json!(tag)],
            )
            .await;
        (v[0].as_u64().unwrap(), v[1].as_u64().unwrap())
    };
    let (pty_rows, shown_rows) = stty(&ui, "before").await;
    assert_eq!(
        pty_rows, shown_rows,
        "the PTY has as many rows as the terminal shows"
    );
    ui.shot("ui-desktop-terminal.png").await;
    ui.client.set_window_size(900, 600).await.unwrap();
    ui.until_args(
        "the terminal to fit the smaller window",
        "return document.querySelectorAll('#terminal .xterm-rows > div').length < arguments[0];",
        vec![json!(shown_rows)],
    )
    .await;
    let (pty_rows, shown_rows_now) = stty(&ui, "after").await;
    assert_eq!(
        pty_rows, shown_rows_now,
        "the PTY was resized with the window"
    );
    assert!(shown_rows_now < shown_rows);
    ui.client.set_window_size(1280, 800).await.unwrap();

    // A dropped connection resumes from the last offset: nothing lost, nothing twice. The
    // page's WebSockets are recorded from here (a fresh terminal view is opened after this).
    ui.route("#/projects/demo").await;
    ui.ready().await;
    ui.js(
        "const Base = window.WebSocket;
         window.__sockets = [];
         window.WebSocket = function (url, protocols) {
           const ws = new Base(url, protocols);
           window.__sockets.push(ws);
           return ws;
         };
         window.WebSocket.prototype = Base.prototype;
         Object.assign(window.WebSocket, { CONNECTING: 0, OPEN: 1, CLOSING: 2, CLOSED: 3 });
         return true;",
        vec![],
    )
    .await;
    ui.route(&format!("#/sessions/{terminal}")).await;
    ui.attached().await;
    ui.type_keys(&format!(
        "clear; for i in 1 2 3 4 5 6 7 8 9 10; do echo tick-$i; sleep 0.2; done{ENTER}"
    ))
    .await;
    ui.wait_line("tick-2").await;
    ui.js(
        "for (const ws of window.__sockets) if (ws.url.endsWith('/pty') && ws.readyState === 1) ws.close(3001, 'test drop');
         return true;",
        vec![],
    )
    .await;
    ui.wait_line("tick-10").await;
    let sockets = ui
        .js(
            "return window.__sockets.filter(ws => ws.url.endsWith('/pty')).length;",
            vec![],
        )
        .await;
    assert!(
        sockets.as_u64().unwrap() >= 2,
        "the view reconnected: {sockets}"
    );
    for i in 1..=10 {
        assert_eq!(
            ui.count_lines(&format!("tick-{i}")).await,
            1,
            "tick-{i} exactly once:\n{}",
            ui.terminal_text().await
        );
    }

    // A reload shows the screen again (a snapshot: the new page's terminal starts empty).
    ui.type_keys(&format!("echo kaged-ui-$((6*7)){ENTER}"))
        .await;
    ui.wait_line("kaged-ui-42").await;
    ui.client.refresh().await.unwrap();
    ui.ready().await;
    ui.attached().await;
    ui.wait_line("kaged-ui-42").await;
    ui.wait_line("tick-10").await;
    assert_eq!(ui.hash().await, format!("#/sessions/{terminal}"));
    ui.assert_no_csp_violations("reloaded terminal").await;
    ui.shot("ui-desktop-reloaded.png").await;
    // Input still works after the reload.
    ui.type_keys(&format!("echo after-$((1+1))-reload{ENTER}"))
        .await;
    ui.wait_line("after-2-reload").await;

    start_and_abort(&ui, &d, "desktop").await;

    // An ended run: its transcript, replayed into a read-only terminal, and how it ended.
    ui.route(&format!("#/sessions/{hello}")).await;
    ui.until(
        "the transcript",
        "return document.querySelector('#terminal[data-loaded]');",
    )
    .await;
    ui.wait_line("hello from kaged").await;
    let ended = ui
        .js(
            "return document.getElementById('session-ended').textContent;",
            vec![],
        )
        .await;
    assert_eq!(ended, "Exited with code 0");
    ui.shot("ui-desktop-transcript.png").await;

    // Status: mode, paths, auth, sandbox.
    ui.route("#/status").await;
    ui.ready().await;
    let text = ui.page_text().await;
    for needle in [
        "per-user (KAGED_HOME=",
        d.base.as_str(),
        "Auth mode",
        "Sandbox",
        "No warnings.",
    ] {
        assert!(text.contains(needle), "status lacks {needle:?}:\n{text}");
    }
    assert!(
        ui.js("return document.getElementById('warnings').hidden;", vec![])
            .await
            .as_bool()
            .unwrap(),
        "no banner without warnings"
    );
    ui.shot("ui-desktop-status.png").await;

    // The audit log, filtered.
    ui.route("#/audit").await;
    ui.ready().await;
    ui.until(
        "audit rows",
        "return document.querySelectorAll('#audit-table tbody tr').length > 3;",
    )
    .await;
    ui.client
        .find(Locator::Css("#audit-kind"))
        .await
        .unwrap()
        .select_by_value("session.kill")
        .await
        .unwrap();
    let kinds = ui
        .until(
            "only session.kill rows",
            "const rows = Array.from(document.querySelectorAll('#audit-table tbody tr'));
             return rows.length > 0 && rows.every(r => r.dataset.kind === 'session.kill') && rows.length;",
        )
        .await;
    assert_eq!(kinds, json!(1), "one abort so far");
    ui.client
        .find(Locator::Css("#audit-kind"))
        .await
        .unwrap()
        .select_by_value("")
        .await
        .unwrap();
    ui.fill("#audit-text", "sleepy").await;
    ui.until(
        "rows mentioning sleepy only",
        "const rows = Array.from(document.querySelectorAll('#audit-table tbody tr'));
         return rows.length > 0 && rows.every(r => r.textContent.includes('sleepy'));",
    )
    .await;
    ui.fill("#audit-text", "").await;
    ui.until(
        "every row again",
        "const c = document.getElementById('audit-count').textContent.match(/^(\\d+) of (\\d+)/);
         return c && c[1] === c[2];",
    )
    .await;
    ui.assert_labelled("audit").await;
    ui.shot("ui-desktop-audit.png").await;

    // An invalid edit: Reload shows every problem with where it is; the last valid
    // configuration stays in force.
    let file = project.join(".kaged/project.yaml");
    std::fs::write(&file, format!("{PROJECT_YAML}surprise: true\n")).unwrap();
    ui.route("#/projects/demo").await;
    ui.ready().await;
    ui.click("#reload").await;
    let diagnostics = ui
        .until(
            "the diagnostics",
            "const d = document.querySelector('#validity .diagnostics');
             return d && document.querySelector('#validity .badge.bad') && d.textContent;",
        )
        .await;
    let diagnostics = diagnostics.as_str().unwrap();
    assert!(
        diagnostics.contains("project.yaml:") && diagnostics.contains("surprise"),
        "{diagnostics}"
    );
    ui.client
        .find(Locator::Css("#start-terminal"))
        .await
        .unwrap();
    ui.shot("ui-desktop-invalid.png").await;
    std::fs::write(&file, PROJECT_YAML).unwrap();
    ui.click("#reload").await;
    ui.until(
        "the project valid again",
        "return document.querySelector('#validity .badge.ok');",
    )
    .await;

    // An edit that loosens the cage waits for the operator: a banner lists it, Accept applies it.
    std::fs::write(
        &file,
        PROJECT_YAML.replace(
            "  command: [sh]\n",
            "  command: [sh]\n  cage: { network: host }\n",
        ),
    )
    .unwrap();
    ui.click("#reload").await;
    let banner = ui
        .until(
            "the weakening banner",
            "const b = document.getElementById('pending-weakening'); return b && b.textContent;",
        )
        .await;
    assert!(
        banner.as_str().unwrap().contains("network host (was none)"),
        "{banner}"
    );
    ui.assert_no_csp_violations("weakening banner").await;
    ui.shot("ui-desktop-weakening.png").await;
    ui.click("#accept-weakening").await;
    ui.until(
        "the banner gone after Accept",
        "return !document.getElementById('pending-weakening');",
    )
    .await;
    let p = call(&d, reqwest::Method::GET, "/api/v1/projects/demo", None).await;
    assert_eq!(p["project"]["config"]["primary"]["cage"]["network"], "host");
    std::fs::write(&file, PROJECT_YAML).unwrap();

    // Signed out (the cookie is gone, as after a daemon restart): the page says what to run.
    ui.client.delete_all_cookies().await.unwrap();
    ui.route("#/status").await;
    let signed_out = ui
        .until(
            "the signed-out state",
            "const s = document.getElementById('signed-out'); return s && s.textContent;",
        )
        .await;
    assert!(
        signed_out.as_str().unwrap().contains("kaged auth open"),
        "{signed_out}"
    );
    ui.shot("ui-desktop-signed-out.png").await;

    ui.close().await;
}

#[tokio::test]
async fn phone_console_runs_a_terminal_with_the_key_bar_survives_reload_and_aborts() {
    let _one = ONE_BROWSER.lock().await;
    let tmp = tempfile::tempdir().unwrap();
    let project = make_project(tmp.path());
    let d = Daemon::start(&tmp.path().join("home"));
    let Some(ui) = Ui::start(Viewport::Phone, "phone").await else {
        return;
    };
    sign_in_and_load(&ui, &d, &project, "phone").await;
    let width = ui.js("return window.innerWidth;", vec![]).await;
    assert_eq!(width, json!(360), "the phone viewport");
    ui.assert_no_sideways_scroll("project").await;
    ui.shot("ui-phone-project.png").await;

    ui.click("#start-terminal").await;
    ui.session_id().await;
    ui.attached().await;
    ui.assert_no_sideways_scroll("terminal").await;
    // The key bar is there on a touch screen, and the terminal fits the phone.
    let visible = ui
        .js(
            "const bar = document.getElementById('keybar'); return bar.getBoundingClientRect().height > 0;",
            vec![],
        )
        .await;
    assert_eq!(visible, json!(true), "the key bar shows on a phone");
    let fits = ui
        .js(
            "const t = document.querySelector('#terminal .xterm-screen').getBoundingClientRect();
             return t.right <= window.innerWidth && t.width > 300;",
            vec![],
        )
        .await;
    assert_eq!(fits, json!(true), "the terminal fits the screen");

    ui.type_keys(&format!("echo phone-$((2+3)){ENTER}")).await;
    ui.wait_line("phone-5").await;

    // Ctrl from the key bar is sticky for one key: Ctrl, then c interrupts `sleep`.
    ui.type_keys(&format!("sleep 300{ENTER}")).await;
    ui.click("#keybar [data-key='Ctrl']").await;
    let pressed = ui
        .js(
            "return document.querySelector(\"#keybar [data-key='Ctrl']\").getAttribute('aria-pressed');",
            vec![],
        )
        .await;
    assert_eq!(pressed, json!("true"));
    ui.type_keys("c").await;
    ui.until(
        "Ctrl to be released",
        "return document.querySelector(\"#keybar [data-key='Ctrl']\").getAttribute('aria-pressed') === 'false';",
    )
    .await;
    ui.type_keys(&format!("echo after-$((2*4)){ENTER}")).await;
    ui.wait_line("after-8").await;
    // ↑ recalls the last command (arrow keys from the bar).
    ui.click("#keybar [data-key='↑']").await;
    ui.type_keys(ENTER).await;
    ui.until(
        "the recalled command's output",
        "const rows = Array.from(document.querySelectorAll('#terminal .xterm-rows > div'))
             .map(r => r.textContent.replace(/\\u00a0/g, ' ').trim());
         return rows.filter(l => l === 'after-8').length === 2;",
    )
    .await;
    // Esc and Tab reach the shell too: `ech` + Tab completes to `echo `.
    ui.type_keys("ech").await;
    ui.click("#keybar [data-key='Tab']").await;
    ui.type_keys(&format!("tab-$((3*3)){ENTER}")).await;
    ui.wait_line("tab-9").await;
    ui.assert_labelled("terminal").await;
    ui.shot("ui-phone-terminal.png").await;

    // Reload: the screen comes back.
    ui.client.refresh().await.unwrap();
    ui.ready().await;
    ui.attached().await;
    ui.wait_line("phone-5").await;
    ui.wait_line("tab-9").await;
    ui.assert_no_csp_violations("reloaded terminal").await;
    ui.shot("ui-phone-reloaded.png").await;

    start_and_abort(&ui, &d, "phone").await;
    ui.assert_no_sideways_scroll("aborted run").await;

    for (route, file) in [
        ("#/sessions", "ui-phone-sessions.png"),
        ("#/status", "ui-phone-status.png"),
        ("#/audit", "ui-phone-audit.png"),
    ] {
        ui.route(route).await;
        ui.ready().await;
        ui.assert_no_sideways_scroll(route).await;
        ui.shot(file).await;
    }
    ui.close().await;
}

#[tokio::test]
async fn insecure_mode_shows_a_warning_banner_on_every_page() {
    let _one = ONE_BROWSER.lock().await;
    let tmp = tempfile::tempdir().unwrap();
    let project = make_project(tmp.path());
    let d = Daemon::start_with(
        &tmp.path().join("home"),
        &["--bind", "127.0.0.1:0", "--insecure"],
        &[],
    );
    call(
        &d,
        reqwest::Method::POST,
        "/api/v1/projects/load",
        Some(json!({"path": project})),
    )
    .await;
    let Some(ui) = Ui::start(Viewport::Desktop, "insecure").await else {
        return;
    };
    // No sign-in at all under --insecure.
    ui.goto(&format!("{}/", d.base)).await;
    ui.ready().await;
    let sign_out_hidden = ui
        .js("return document.getElementById('sign-out').hidden;", vec![])
        .await;
    assert_eq!(sign_out_hidden, json!(true), "nothing to sign out of");

    for route in [
        "#/projects",
        "#/projects/demo",
        "#/sessions",
        "#/status",
        "#/audit",
    ] {
        ui.route(route).await;
        ui.ready().await;
        let banner = ui
            .until(
                "the warning banner",
                "const b = document.getElementById('warnings');
                 return !b.hidden && b.getBoundingClientRect().height > 0 && b.textContent;",
            )
            .await;
        let banner = banner.as_str().unwrap();
        assert!(
            banner.contains("insecure: authentication is off (--insecure)"),
            "{route}: {banner}"
        );
        let red = ui
            .js(
                "return document.getElementById('warnings').classList.contains('danger');",
                vec![],
            )
            .await;
        assert_eq!(
            red,
            json!(true),
            "{route}: no authentication is shown in red"
        );
    }
    // A state change still works without a CSRF token (there is no session to bind it to).
    ui.route("#/projects/demo").await;
    ui.ready().await;
    ui.click("#start-terminal").await;
    ui.attached().await;
    ui.type_keys(&format!("echo insecure-$((4+4)){ENTER}"))
        .await;
    ui.wait_line("insecure-8").await;
    ui.assert_no_csp_violations("insecure terminal").await;
    let banner_visible = ui
        .js(
            "return !document.getElementById('warnings').hidden;",
            vec![],
        )
        .await;
    assert_eq!(banner_visible, json!(true));
    ui.shot("ui-desktop-insecure.png").await;
    ui.client.set_window_size(360, 740).await.unwrap();
    ui.route("#/projects/demo").await;
    ui.ready().await;
    ui.shot("ui-phone-insecure.png").await;
    ui.close().await;
}
