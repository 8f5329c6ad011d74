//! Tests of the notifier: the texts, the headers, and delivery to a real HTTP receiver on a
//! loopback port (one POST per notification, retries, giving up, never blocking).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap as AxumHeaders, StatusCode as AxumStatus, Uri};
use axum::response::{IntoResponse, Response};
use kaged_config::{DeploymentMode, Facts, FlagOverrides, decide_mode, resolve};

use super::*;

// ---- texts and headers ------------------------------------------------------------------

#[test]
fn the_three_texts_are_short_exact_and_carry_no_arguments() {
    let n = Notification::approval_requested(
        "webshop",
        "primary",
        "shell.bash",
        "ses_1a2b",
        "apr_00ff00ff00ff00ff",
    );
    assert_eq!(n.event, NotifyEvent::ApprovalRequested);
    assert_eq!(n.title, "Approval needed: shell.bash in webshop");
    assert_eq!(
        n.body,
        "Agent primary wants to use shell.bash (session ses_1a2b).\n\
         kaged approvals approve apr_00ff00ff00ff00ff\n\
         kaged approvals deny apr_00ff00ff00ff00ff"
    );
    assert_eq!(n.click, "/#/approvals/apr_00ff00ff00ff00ff");

    let n = Notification::session_waiting("webshop", "primary", "ses_1a2b");
    assert_eq!(n.event, NotifyEvent::SessionWaiting);
    assert_eq!(n.title, "Agent waiting: primary in webshop");
    assert_eq!(
        n.body,
        "Agent primary finished its turn and waits for a message (session ses_1a2b)."
    );
    assert_eq!(n.click, "/#/sessions/ses_1a2b");

    let n = Notification::run_failed("webshop", "ses_1a2b", "exit code 2\n\tat line 3");
    assert_eq!(n.event, NotifyEvent::RunFailed);
    assert_eq!(n.title, "Run failed in webshop");
    assert_eq!(n.body, "Session ses_1a2b failed: exit code 2 at line 3");
    assert_eq!(n.click, "/#/sessions/ses_1a2b");
}

#[test]
fn names_and_reasons_are_one_short_line() {
    let long = "x".repeat(1000);
    let n = Notification::run_failed("p\r\nInjected: yes", "s", &long);
    assert_eq!(n.title, "Run failed in p Injected: yes");
    let reason = n.body.trim_start_matches("Session s failed: ");
    assert_eq!(reason.chars().count(), MAX_REASON);
    assert!(reason.ends_with('…'));
    let n = Notification::approval_requested(&long, "a", "t", "s", "apr_1");
    assert!(n.title.chars().count() < MAX_NAME + 40, "{}", n.title);
    assert!(!n.title.contains('\n') && !n.body.contains('\r'));
}

/// Decode RFC 2047 `Q` encoded words the way ntfy does (whitespace between words dropped).
fn decode_header(value: &str) -> String {
    if !value.starts_with("=?") {
        return value.to_string();
    }
    let mut out = String::new();
    for word in value.split(' ') {
        let inner = word
            .strip_prefix("=?UTF-8?Q?")
            .and_then(|w| w.strip_suffix("?="))
            .unwrap_or_else(|| panic!("not an encoded word: {word:?}"));
        let mut bytes = Vec::new();
        let mut it = inner.bytes();
        while let Some(b) = it.next() {
            match b {
                b'_' => bytes.push(b' '),
                b'=' => {
                    let hex = [it.next().unwrap(), it.next().unwrap()];
                    let hex = std::str::from_utf8(&hex).unwrap();
                    bytes.push(u8::from_str_radix(hex, 16).unwrap());
                }
                b => bytes.push(b),
            }
        }
        // Each word holds whole characters.
        out.push_str(&String::from_utf8(bytes).unwrap());
    }
    out
}

#[test]
fn ascii_titles_stay_as_they_are_and_others_are_encoded_words() {
    assert_eq!(encode_header("Approval needed: x"), "Approval needed: x");
    for title in [
        "Approval needed: shell.bash in café",
        "Agent waiting: 助手 in プロジェクト",
        &"🙂 é=?_ ".repeat(20),
    ] {
        let encoded = encode_header(title);
        assert!(encoded.is_ascii(), "{encoded}");
        assert!(HeaderValue::from_str(&encoded).is_ok(), "{encoded}");
        for word in encoded.split(' ') {
            assert!(word.len() <= 75, "{word}");
        }
        assert_eq!(decode_header(&encoded), clean(title, usize::MAX), "{title}");
    }
    // Control characters never reach a header.
    assert_eq!(encode_header("a\r\nb"), "a b");
}

#[test]
fn headers_carry_title_link_tags_priority_and_event() {
    let n = Notification::approval_requested("p", "a", "shell.bash", "s1", "apr_1");
    let h = headers(&n, "https://kaged.example/");
    let get = |k: &str| h.get(k).and_then(|v| v.to_str().ok()).unwrap_or_default();
    assert_eq!(get("title"), "Approval needed: shell.bash in p");
    assert_eq!(get("click"), "https://kaged.example/#/approvals/apr_1");
    assert_eq!(get("tags"), "raised_hand");
    assert_eq!(get("priority"), "4");
    assert_eq!(get("x-kaged-event"), "approval.requested");
    assert_eq!(get("content-type"), "text/plain; charset=utf-8");
    let n = Notification::session_waiting("p", "a", "s1");
    let h = headers(&n, "http://127.0.0.1:7777");
    assert_eq!(
        h.get("click").unwrap().to_str().unwrap(),
        "http://127.0.0.1:7777/#/sessions/s1"
    );
    assert_eq!(h.get("x-kaged-event").unwrap(), "session.waiting");
    assert_eq!(h.get("priority").unwrap(), "3");
    let n = Notification::run_failed("p", "s1", "boom");
    assert_eq!(headers(&n, "x").get("x-kaged-event").unwrap(), "run.failed");
}

#[test]
fn the_default_policy_is_three_attempts_one_then_four_seconds_apart() {
    let p = Policy::default();
    assert_eq!(
        p.delays,
        vec![Duration::from_secs(1), Duration::from_secs(4)]
    );
    assert_eq!(p.timeout, Duration::from_secs(10));
}

// ---- settings ---------------------------------------------------------------------------

fn settings(config: &str) -> Settings {
    let facts = Facts {
        uid: 1000,
        user_name: Some("ann".into()),
        env: [("HOME".to_string(), "/home/ann".to_string())].into(),
        existing_dirs: Default::default(),
    };
    let decision = decide_mode(&facts, Some(DeploymentMode::User)).unwrap();
    resolve(
        &decision,
        std::path::Path::new("/home/ann/.config/kaged/config.toml"),
        Some(config),
        &Default::default(),
        &FlagOverrides::default(),
    )
    .unwrap()
}

#[test]
fn without_a_webhook_or_a_runtime_nothing_is_sent() {
    assert!(!Notifier::new(&settings(""), "http://127.0.0.1:7777").is_enabled());
    // Outside the runtime: no task can run, so it is off (and says so in the log).
    let s = settings("[notify]\nwebhook = \"http://127.0.0.1:9/t\"\n");
    let n = Notifier::new(&s, "http://127.0.0.1:7777");
    assert!(!n.is_enabled());
    n.send(Notification::session_waiting("p", "a", "s"));
    assert!(!format!("{n:?}").contains("/t"), "{n:?}");
}

// ---- a real receiver --------------------------------------------------------------------

#[derive(Debug, Clone)]
struct Received {
    uri: String,
    headers: AxumHeaders,
    body: String,
    at: Instant,
}

#[derive(Default)]
struct Script {
    /// Statuses to answer, in order; then 200 (or `always`).
    statuses: VecDeque<u16>,
    always: Option<u16>,
    /// Never answer (the client's timeout ends the request).
    hang: bool,
    received: Vec<Received>,
}

#[derive(Clone)]
struct Receiver {
    addr: SocketAddr,
    script: Arc<Mutex<Script>>,
}

impl Receiver {
    async fn start(script: Script) -> Receiver {
        let script = Arc::new(Mutex::new(script));
        let app = Router::new().fallback(receive).with_state(script.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        Receiver { addr, script }
    }

    fn received(&self) -> Vec<Received> {
        self.script.lock().unwrap().received.clone()
    }

    /// Wait until `n` requests arrived (or 10 s passed).
    async fn wait_for(&self, n: usize) -> Vec<Received> {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.received().len() < n && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.received()
    }
}

async fn receive(
    State(script): State<Arc<Mutex<Script>>>,
    uri: Uri,
    headers: AxumHeaders,
    body: String,
) -> Response {
    let (status, hang) = {
        let mut s = script.lock().unwrap();
        s.received.push(Received {
            uri: uri.to_string(),
            headers,
            body,
            at: Instant::now(),
        });
        let status = s.statuses.pop_front().or(s.always).unwrap_or(200);
        (status, s.hang)
    };
    if hang {
        tokio::time::sleep(Duration::from_secs(3600)).await;
    }
    let status = AxumStatus::from_u16(status).unwrap();
    if status.is_redirection() {
        return (status, [("location", "/elsewhere")]).into_response();
    }
    status.into_response()
}

fn quick() -> Policy {
    Policy {
        delays: vec![Duration::from_millis(100), Duration::from_millis(200)],
        timeout: Duration::from_secs(10),
    }
}

/// The operational log of the current thread, captured.
#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Log {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Log {
    fn capture() -> (Log, tracing::subscriber::DefaultGuard) {
        let log = Log::default();
        let writer = log.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::DEBUG)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        (log, tracing::subscriber::set_default(subscriber))
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

#[tokio::test]
async fn one_post_per_send_with_the_headers_and_the_body() {
    let r = Receiver::start(Script::default()).await;
    let s = settings(&format!(
        "[notify]\nwebhook = \"http://{}/kaged-topic?auth=tk-SECRET\"\npublic_url = \"https://kaged.example/\"\n",
        r.addr
    ));
    let notifier = Notifier::new(&s, "http://127.0.0.1:7777");
    assert!(notifier.is_enabled());
    assert!(!format!("{notifier:?}").contains("SECRET"));
    let n = Notification::approval_requested("webshop", "primary", "shell.bash", "s1", "apr_9");
    notifier.send(n.clone());
    notifier.send(Notification::run_failed("webshop", "s1", "exit 1"));
    let got = r.wait_for(2).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let got_later = r.received();
    assert_eq!(got.len(), 2);
    assert_eq!(got_later.len(), 2, "one POST per notification");
    let first = &got[0];
    assert_eq!(first.uri, "/kaged-topic?auth=tk-SECRET");
    assert_eq!(first.body, n.body);
    let h = |k: &str| first.headers.get(k).unwrap().to_str().unwrap().to_string();
    assert_eq!(h("title"), n.title);
    assert_eq!(h("click"), "https://kaged.example/#/approvals/apr_9");
    assert_eq!(h("x-kaged-event"), "approval.requested");
    assert_eq!(h("tags"), "raised_hand");
    assert_eq!(h("priority"), "4");
    assert!(h("user-agent").starts_with("kaged/"));
    assert_eq!(h("x-kaged-event").as_str(), "approval.requested");
    assert_eq!(
        got[1].headers.get("x-kaged-event").unwrap(),
        "run.failed",
        "delivered in order"
    );
    // Without public_url, links use the daemon's own address.
    let s = settings(&format!("[notify]\nwebhook = \"http://{}/t\"\n", r.addr));
    Notifier::new(&s, "http://127.0.0.1:7777/").send(Notification::session_waiting("p", "a", "s2"));
    let got = r.wait_for(3).await;
    assert_eq!(
        got[2].headers.get("click").unwrap(),
        "http://127.0.0.1:7777/#/sessions/s2"
    );
}

#[tokio::test]
async fn a_receiver_failing_twice_gets_three_posts_then_the_next_notification() {
    let r = Receiver::start(Script {
        statuses: [500, 503].into(),
        ..Script::default()
    })
    .await;
    let notifier = Notifier::start(&format!("http://{}/t", r.addr), "http://k".into(), quick());
    notifier.send(Notification::session_waiting("p", "a", "s1"));
    let got = r.wait_for(3).await;
    assert_eq!(got.len(), 3);
    assert!(got.iter().all(|g| g.body == got[0].body));
    // 100 ms, then 200 ms apart.
    assert!(got[1].at - got[0].at >= Duration::from_millis(100));
    assert!(got[2].at - got[1].at >= Duration::from_millis(200));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(r.received().len(), 3, "delivered on the third attempt");
    // From a thread outside the runtime, as a run's threads send.
    let from_thread = notifier.clone();
    std::thread::spawn(move || from_thread.send(Notification::run_failed("p", "s1", "x")))
        .join()
        .unwrap();
    assert_eq!(r.wait_for(4).await.len(), 4);
}

#[tokio::test]
async fn an_always_failing_receiver_never_blocks_send_and_is_given_up_after_three() {
    let (log, _guard) = Log::capture();
    let r = Receiver::start(Script {
        always: Some(500),
        ..Script::default()
    })
    .await;
    let notifier = Notifier::start(
        &format!("http://ann:PW-SECRET@{}/t?auth=tk-SECRET", r.addr),
        "http://k".into(),
        quick(),
    );
    let started = Instant::now();
    notifier.send(Notification::session_waiting("p", "a", "s1"));
    assert!(started.elapsed() < Duration::from_millis(50));
    let got = r.wait_for(3).await;
    assert_eq!(got.len(), 3);
    // The user and password travel as basic authentication, not in the path.
    assert!(got[0].headers.contains_key("authorization"));
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(r.received().len(), 3, "given up after 3 attempts");
    let text = log.text();
    assert!(text.contains("given up"), "{text}");
    assert!(text.contains("session.waiting"), "{text}");
    assert!(text.contains(&format!("http://{}/…", r.addr)), "{text}");
    assert!(!text.contains("SECRET"), "{text}");
}

#[tokio::test]
async fn a_refusal_or_a_redirect_is_not_retried_and_not_followed() {
    for status in [403, 404, 302] {
        let r = Receiver::start(Script {
            always: Some(status),
            ..Script::default()
        })
        .await;
        let notifier = Notifier::start(&format!("http://{}/t", r.addr), "http://k".into(), quick());
        notifier.send(Notification::session_waiting("p", "a", "s1"));
        r.wait_for(1).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let got = r.received();
        assert_eq!(got.len(), 1, "{status}");
        assert_eq!(got[0].uri, "/t", "{status}");
    }
}

#[tokio::test]
async fn an_unreachable_webhook_fails_without_naming_its_token() {
    let (log, _guard) = Log::capture();
    // A port nothing listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = closed.local_addr().unwrap();
    drop(closed);
    let notifier = Notifier::start(
        &format!("http://{addr}/t?auth=tk-SECRET"),
        "http://k".into(),
        quick(),
    );
    notifier.send(Notification::run_failed("p", "s", "x"));
    let deadline = Instant::now() + Duration::from_secs(10);
    while !log.text().contains("given up") && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let text = log.text();
    assert!(text.contains("given up"), "{text}");
    assert_eq!(text.matches("trying again").count(), 2, "{text}");
    assert!(!text.contains("SECRET") && !text.contains("/t?"), "{text}");
}

#[tokio::test]
async fn a_full_queue_drops_the_newest_and_send_still_returns_at_once() {
    let (log, _guard) = Log::capture();
    let r = Receiver::start(Script {
        hang: true,
        ..Script::default()
    })
    .await;
    let notifier = Notifier::start(&format!("http://{}/t", r.addr), "http://k".into(), quick());
    let started = Instant::now();
    for i in 0..(QUEUE + 20) {
        notifier.send(Notification::session_waiting("p", "a", &format!("s{i}")));
    }
    assert!(started.elapsed() < Duration::from_millis(200));
    r.wait_for(1).await;
    let text = log.text();
    // The worker holds one, the queue 64; at least the rest is dropped.
    let dropped = text.matches("notification dropped").count();
    assert!(
        (QUEUE + 20 - 1 - QUEUE..=20).contains(&dropped),
        "{dropped}: {text}"
    );
}
