//! Notifications: an ntfy-compatible POST to `[notify] webhook` when a tool call waits for
//! approval, an agent waits for a message, or a run fails.
//!
//! The request: body = the message text (`text/plain; charset=utf-8`), headers `Title`
//! (RFC 2047 encoded words when it is not plain ASCII, which ntfy decodes), `Click` (the
//! console's address + the notification's path), `Tags`, `Priority` and `X-Kaged-Event`.
//! The texts are built here ([`Notification::approval_requested`] and the others) and never
//! carry a tool call's arguments, a credential or a token.
//!
//! [`Notifier::send`] never blocks and never fails: it puts the notification on a bounded queue
//! (a full queue drops the newest, with a warning) that one background task delivers in order,
//! each with up to 3 attempts (1 s, then 4 s apart), a 10 s timeout per request and redirects
//! not followed. Failures are logged with the event and the webhook's scheme and host only:
//! the rest of the URL (path, query, user, password) may be a token.

use std::fmt;
use std::time::Duration;

use kaged_config::{Settings, redacted_url};
use reqwest::StatusCode;
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use tokio::sync::mpsc;

/// Notifications waiting for delivery; past it the newest is dropped.
pub const QUEUE: usize = 64;

/// What happened, as the `X-Kaged-Event` header names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotifyEvent {
    ApprovalRequested,
    SessionWaiting,
    RunFailed,
}

impl NotifyEvent {
    pub fn as_str(self) -> &'static str {
        match self {
            NotifyEvent::ApprovalRequested => "approval.requested",
            NotifyEvent::SessionWaiting => "session.waiting",
            NotifyEvent::RunFailed => "run.failed",
        }
    }

    /// ntfy tags (emoji short codes shown before the title).
    fn tags(self) -> &'static str {
        match self {
            NotifyEvent::ApprovalRequested => "raised_hand",
            NotifyEvent::SessionWaiting => "hourglass",
            NotifyEvent::RunFailed => "x",
        }
    }

    /// ntfy priority, 1 (min) to 5 (max): a decision someone waits for and a failure are high.
    fn priority(self) -> &'static str {
        match self {
            NotifyEvent::ApprovalRequested | NotifyEvent::RunFailed => "4",
            NotifyEvent::SessionWaiting => "3",
        }
    }
}

/// One notification. `click` is the path after the console's address, e.g.
/// `/#/approvals/apr_x`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    pub event: NotifyEvent,
    pub title: String,
    pub body: String,
    pub click: String,
}

/// Longest name (project, agent, tool, id) put in a notification.
const MAX_NAME: usize = 80;
/// Longest failure reason put in a notification.
const MAX_REASON: usize = 300;

impl Notification {
    /// A tool call waits for a decision. Never the call's arguments: they may hold secrets.
    pub fn approval_requested(
        project: &str,
        agent: &str,
        tool: &str,
        session_id: &str,
        approval_id: &str,
    ) -> Notification {
        let (project, agent, tool) = (name(project), name(agent), name(tool));
        let (session_id, approval_id) = (name(session_id), name(approval_id));
        Notification {
            event: NotifyEvent::ApprovalRequested,
            title: format!("Approval needed: {tool} in {project}"),
            body: format!(
                "Agent {agent} wants to use {tool} (session {session_id}).\n\
                 kaged approvals approve {approval_id}\n\
                 kaged approvals deny {approval_id}"
            ),
            click: format!("/#/approvals/{approval_id}"),
        }
    }

    /// An agent ended its turn and waits for the operator's next message.
    pub fn session_waiting(project: &str, agent: &str, session_id: &str) -> Notification {
        let (project, agent, session_id) = (name(project), name(agent), name(session_id));
        Notification {
            event: NotifyEvent::SessionWaiting,
            title: format!("Agent waiting: {agent} in {project}"),
            body: format!(
                "Agent {agent} finished its turn and waits for a message (session {session_id})."
            ),
            click: format!("/#/sessions/{session_id}"),
        }
    }

    /// A run (task, terminal or agent) failed; `reason` is cut to one short line.
    pub fn run_failed(project: &str, session_id: &str, reason: &str) -> Notification {
        let (project, session_id) = (name(project), name(session_id));
        let reason = clean(reason, MAX_REASON);
        Notification {
            event: NotifyEvent::RunFailed,
            title: format!("Run failed in {project}"),
            body: format!("Session {session_id} failed: {reason}"),
            click: format!("/#/sessions/{session_id}"),
        }
    }
}

fn name(text: &str) -> String {
    clean(text, MAX_NAME)
}

/// `text` on one line (control characters become spaces, runs of spaces one), at most `max`
/// characters (an ellipsis marks a cut).
fn clean(text: &str, max: usize) -> String {
    let mut out = String::new();
    for word in text
        .split(|c: char| c.is_whitespace() || c.is_control())
        .filter(|w| !w.is_empty())
    {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(word);
    }
    if out.chars().count() > max {
        out = out.chars().take(max.saturating_sub(1)).collect();
        out.push('…');
    }
    out
}

/// `text` as a header value ntfy reads back: itself when it is printable ASCII, else RFC 2047
/// encoded words (`=?UTF-8?Q?…?=`, at most 75 characters each, split between characters).
pub fn encode_header(text: &str) -> String {
    let text = clean(text, usize::MAX);
    if text.chars().all(|c| c.is_ascii() && !c.is_ascii_control()) {
        return text;
    }
    const HEAD: &str = "=?UTF-8?Q?";
    const TAIL: &str = "?=";
    let room = 75 - HEAD.len() - TAIL.len();
    let mut words = Vec::new();
    let mut word = String::new();
    for c in text.chars() {
        let mut encoded = String::new();
        let mut buf = [0u8; 4];
        for b in c.encode_utf8(&mut buf).bytes() {
            match b {
                b' ' => encoded.push('_'),
                b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'!' | b'*' | b'+' | b'-' | b'/' => {
                    encoded.push(char::from(b))
                }
                _ => encoded.push_str(&format!("={b:02X}")),
            }
        }
        if word.len() + encoded.len() > room {
            words.push(format!("{HEAD}{word}{TAIL}"));
            word.clear();
        }
        word.push_str(&encoded);
    }
    if !word.is_empty() {
        words.push(format!("{HEAD}{word}{TAIL}"));
    }
    words.join(" ")
}

/// The request headers of `n`, its link made from `base` (`scheme://host[:port]`).
pub fn headers(n: &Notification, base: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    let mut put = |name: &'static str, value: String| {
        if let Ok(v) = HeaderValue::from_str(&value) {
            h.insert(HeaderName::from_static(name), v);
        }
    };
    put("title", encode_header(&n.title));
    put(
        "click",
        format!("{}{}", base.trim_end_matches('/'), n.click),
    );
    put("tags", n.event.tags().into());
    put("priority", n.event.priority().into());
    put("x-kaged-event", n.event.as_str().into());
    h.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    h
}

/// Attempts and timing of one delivery.
#[derive(Debug, Clone)]
pub(crate) struct Policy {
    /// Waits before the second, third… attempt: `delays.len() + 1` attempts in all.
    pub delays: Vec<Duration>,
    pub timeout: Duration,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            delays: vec![Duration::from_secs(1), Duration::from_secs(4)],
            timeout: Duration::from_secs(10),
        }
    }
}

/// Sends notifications to the webhook, if one is configured. Cheap to clone.
#[derive(Clone)]
pub struct Notifier {
    queue: Option<mpsc::Sender<Notification>>,
    /// The webhook as logs show it (`scheme://host[:port]/…`).
    shown: String,
}

impl fmt::Debug for Notifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Notifier")
            .field("enabled", &self.queue.is_some())
            .field("webhook", &self.shown)
            .finish()
    }
}

impl Notifier {
    /// A notifier that sends nothing.
    pub fn disabled() -> Notifier {
        Notifier {
            queue: None,
            shown: String::new(),
        }
    }

    /// The notifier of `settings`: disabled without `[notify] webhook`. Links start with
    /// `[notify] public_url`, else `fallback_base` (the daemon's own URL, e.g.
    /// `http://127.0.0.1:7777`). Starts the delivery task at once, so it must be called inside
    /// the Tokio runtime; outside one (or if no HTTP client can be made) it logs an error and
    /// sends nothing.
    pub fn new(settings: &Settings, fallback_base: &str) -> Notifier {
        let Some(webhook) = &settings.notify.webhook else {
            return Notifier::disabled();
        };
        let base = settings
            .notify
            .public_url
            .clone()
            .unwrap_or_else(|| fallback_base.trim_end_matches('/').to_string());
        Notifier::start(webhook, base, Policy::default())
    }

    pub(crate) fn start(webhook: &str, base: String, policy: Policy) -> Notifier {
        let shown = redacted_url(webhook);
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::error!(webhook = %shown, "notifications are off: the notifier was made outside the runtime");
            return Notifier::disabled();
        };
        let client = match reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(policy.timeout)
            .user_agent(concat!("kaged/", env!("CARGO_PKG_VERSION")))
            .build()
        {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(webhook = %shown, error = %chain(&e.without_url()), "notifications are off: no HTTP client");
                return Notifier::disabled();
            }
        };
        let (tx, rx) = mpsc::channel(QUEUE);
        let worker = Worker {
            client,
            webhook: webhook.to_string(),
            shown: shown.clone(),
            base,
            policy,
        };
        runtime.spawn(worker.run(rx));
        Notifier {
            queue: Some(tx),
            shown,
        }
    }

    pub fn is_enabled(&self) -> bool {
        self.queue.is_some()
    }

    /// Queue `n` for delivery. Never blocks, never fails: a full queue drops `n` (logged).
    /// Callable from any thread (a run's own threads too): it needs no runtime. Notifications
    /// still queued when the daemon's runtime stops are not sent.
    pub fn send(&self, n: Notification) {
        let Some(queue) = &self.queue else {
            return;
        };
        let event = n.event.as_str();
        match queue.try_send(n) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                tracing::warn!(event, webhook = %self.shown, queued = QUEUE, "notification dropped: too many are waiting for delivery");
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                tracing::warn!(event, webhook = %self.shown, "notification dropped: delivery has stopped");
            }
        }
    }
}

struct Worker {
    client: reqwest::Client,
    /// Secret as a whole: used for the request only, never logged.
    webhook: String,
    shown: String,
    base: String,
    policy: Policy,
}

/// Why one attempt failed, and whether another could succeed.
struct Failure {
    error: String,
    retry: bool,
}

impl Worker {
    async fn run(self, mut rx: mpsc::Receiver<Notification>) {
        while let Some(n) = rx.recv().await {
            self.deliver(&n).await;
        }
    }

    async fn deliver(&self, n: &Notification) {
        let event = n.event.as_str();
        let attempts = self.policy.delays.len() + 1;
        for attempt in 1..=attempts {
            match self.attempt(n).await {
                Ok(()) => {
                    tracing::debug!(event, webhook = %self.shown, attempt, "notification sent");
                    return;
                }
                Err(f) if f.retry && attempt < attempts => {
                    tracing::warn!(event, webhook = %self.shown, attempt, error = %f.error, "notification not delivered; trying again");
                    tokio::time::sleep(self.policy.delays[attempt - 1]).await;
                }
                Err(f) => {
                    tracing::warn!(event, webhook = %self.shown, attempt, error = %f.error, "notification not delivered; given up");
                    return;
                }
            }
        }
    }

    async fn attempt(&self, n: &Notification) -> Result<(), Failure> {
        let response = self
            .client
            .post(&self.webhook)
            .headers(headers(n, &self.base))
            .body(n.body.clone())
            .send()
            .await
            .map_err(|e| Failure {
                // Without the URL: it may hold a token.
                error: chain(&e.without_url()),
                retry: true,
            })?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        Err(Failure {
            error: if status.is_redirection() {
                format!(
                    "the webhook answered {status} (a redirect, not followed): configure the final URL"
                )
            } else {
                format!("the webhook answered {status}")
            },
            // A refusal (bad token, unknown topic) stays one; a busy or failing server may not.
            retry: status.is_server_error()
                || status == StatusCode::TOO_MANY_REQUESTS
                || status == StatusCode::REQUEST_TIMEOUT,
        })
    }
}

/// An error and its causes on one line.
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

#[cfg(test)]
#[path = "notify_tests.rs"]
mod tests;
