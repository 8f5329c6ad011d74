//! The HTTP edge: send a built request with reqwest (rustls), wait for the headers within the
//! request timeout, then read the body chunk by chunk (each within the stall timeout) through
//! the SSE parser and the driver's decoder. Dropping an [`EventStream`] closes the connection,
//! which is how a caller aborts.

use std::collections::VecDeque;
use std::time::Duration;

use kaged_auth::Secret;
use reqwest::header::{HeaderMap, HeaderValue};
use serde_json::Value;

use crate::build::{Auth, build};
use crate::decode::Decoder;
use crate::error::{LlmError, shorten};
use crate::sse::SseParser;
use crate::types::{Endpoint, Event, Request, Timeouts};

/// The most of an error body kaged reads.
const MAX_ERROR_BODY: usize = 64 << 10;

/// A model-provider client: one connection pool, the timeouts.
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    timeouts: Timeouts,
}

impl Client {
    pub fn new(timeouts: Timeouts) -> Result<Client, LlmError> {
        let http = reqwest::Client::builder()
            .connect_timeout(timeouts.connect)
            .user_agent(concat!("kaged/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| LlmError::Request(chain(&e)))?;
        Ok(Client { http, timeouts })
    }

    pub fn timeouts(&self) -> Timeouts {
        self.timeouts
    }

    /// Send `request` to `endpoint` and return its answer as a stream of events, once the
    /// provider accepted it (2xx). A non-2xx answer is [`LlmError::Http`] with the provider's
    /// message and `retry-after`.
    pub async fn stream(
        &self,
        endpoint: &Endpoint,
        request: &Request,
    ) -> Result<EventStream, LlmError> {
        let wire = build(endpoint, request);
        let key = endpoint.api_key.clone();
        let mut builder = self.http.post(&wire.url);
        for (name, value) in &wire.headers {
            builder = builder.header(*name, value);
        }
        if let Some(auth) = &wire.auth {
            let (name, value) = match auth {
                Auth::XApiKey(k) => ("x-api-key", k.expose().to_string()),
                Auth::Bearer(k) => ("authorization", format!("Bearer {}", k.expose())),
            };
            let mut value = HeaderValue::from_str(&value).map_err(|_| {
                LlmError::Request(
                    "the provider key has characters a header cannot carry (a line break?)".into(),
                )
            })?;
            value.set_sensitive(true);
            builder = builder.header(name, value);
        }
        let body = serde_json::to_vec(&wire.body).map_err(|e| LlmError::Request(e.to_string()))?;
        let sent = tokio::time::timeout(self.timeouts.request, builder.body(body).send()).await;
        let mut response = match sent {
            Err(_) => return Err(LlmError::Timeout),
            Ok(Err(e)) if e.is_timeout() && !e.is_connect() => return Err(LlmError::Timeout),
            Ok(Err(e)) => return Err(LlmError::Connect(scrub(&chain(&e), key.as_ref()))),
            Ok(Ok(r)) => r,
        };
        let status = response.status();
        if !status.is_success() {
            let retry_after = retry_after(response.headers());
            let text = read_bounded(&mut response, self.timeouts.stall).await;
            return Err(LlmError::Http {
                status: status.as_u16(),
                message: scrub(&error_message(&text), key.as_ref()),
                retry_after,
            });
        }
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("text/event-stream")
            .to_ascii_lowercase();
        if !content_type.starts_with("text/event-stream") {
            let text = read_bounded(&mut response, self.timeouts.stall).await;
            return Err(LlmError::Protocol(format!(
                "expected text/event-stream, got {content_type}: {}",
                scrub(&shorten(&text, 300), key.as_ref())
            )));
        }
        Ok(EventStream {
            response,
            parser: SseParser::new(),
            decoder: Decoder::new(endpoint.driver, &request.tools),
            pending: VecDeque::new(),
            done: false,
            stall: self.timeouts.stall,
            key,
        })
    }
}

/// A streamed answer. `next` yields its events in order, `Finished` last and then `None`; a
/// stream that ends, breaks or stalls before `Finished` yields one error and then `None`.
#[derive(Debug)]
pub struct EventStream {
    response: reqwest::Response,
    parser: SseParser,
    decoder: Decoder,
    pending: VecDeque<Result<Event, LlmError>>,
    done: bool,
    stall: Duration,
    key: Option<Secret>,
}

impl EventStream {
    pub async fn next(&mut self) -> Option<Result<Event, LlmError>> {
        loop {
            if let Some(item) = self.pending.pop_front() {
                if matches!(item, Err(_) | Ok(Event::Finished(_))) {
                    self.done = true;
                    self.pending.clear();
                }
                return Some(item);
            }
            if self.done {
                return None;
            }
            match tokio::time::timeout(self.stall, self.response.chunk()).await {
                Err(_) => self.pending.push_back(Err(LlmError::Stalled)),
                Ok(Err(e)) => {
                    let why = scrub(&chain(&e), self.key.as_ref());
                    self.pending.push_back(Err(LlmError::Cut(why)));
                }
                Ok(Ok(Some(bytes))) => {
                    let parsed = self.parser.push(&bytes);
                    self.decode(parsed);
                }
                Ok(Ok(None)) => {
                    let parsed = self.parser.finish();
                    self.decode(parsed);
                    if !self.decoder.finished() {
                        self.pending.push_back(Err(LlmError::Cut(
                            "the stream ended before the answer's last event".into(),
                        )));
                    }
                }
            }
        }
    }

    fn decode(&mut self, parsed: Result<Vec<crate::sse::SseEvent>, LlmError>) {
        let events = match parsed {
            Ok(events) => events,
            Err(e) => {
                self.pending.push_back(Err(e));
                return;
            }
        };
        for sse in &events {
            match self.decoder.feed(sse) {
                Ok(out) => self.pending.extend(out.into_iter().map(Ok)),
                Err(e) => {
                    let e = match e {
                        LlmError::Provider { kind, message } => LlmError::Provider {
                            kind,
                            message: scrub(&message, self.key.as_ref()),
                        },
                        LlmError::Protocol(m) => LlmError::Protocol(scrub(&m, self.key.as_ref())),
                        other => other,
                    };
                    self.pending.push_back(Err(e));
                    return;
                }
            }
            if self.decoder.finished() {
                return;
            }
        }
    }
}

/// An error with its causes (reqwest's own text is terse).
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// Never let the key into an error, whatever the provider echoes.
fn scrub(text: &str, key: Option<&Secret>) -> String {
    match key.map(Secret::expose).filter(|k| k.len() >= 4) {
        Some(k) => text.replace(k, "<redacted>"),
        None => text.to_string(),
    }
}

/// `retry-after-ms` (OpenAI) or `retry-after` in seconds.
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let header = |name: &str| headers.get(name)?.to_str().ok()?.trim().parse::<f64>().ok();
    let valid = |v: f64| (0.0..86_400.0).contains(&v);
    if let Some(ms) = header("retry-after-ms").filter(|v| valid(v / 1000.0)) {
        return Some(Duration::from_secs_f64(ms / 1000.0));
    }
    header("retry-after")
        .filter(|v| valid(*v))
        .map(Duration::from_secs_f64)
}

/// The error body's message: `error.message` of a JSON body, else the text, shortened.
fn error_message(text: &str) -> String {
    let parsed = serde_json::from_str::<Value>(text).ok();
    let message = parsed.as_ref().and_then(|v| {
        v.pointer("/error/message")
            .or_else(|| v.get("message"))
            .or_else(|| v.get("error").filter(|e| e.is_string()))
            .and_then(Value::as_str)
    });
    shorten(message.unwrap_or(text.trim()), 1000)
}

/// Up to [`MAX_ERROR_BODY`] bytes of the body, as text.
async fn read_bounded(response: &mut reqwest::Response, wait: Duration) -> String {
    let mut body = Vec::new();
    while body.len() < MAX_ERROR_BODY {
        match tokio::time::timeout(wait, response.chunk()).await {
            Ok(Ok(Some(bytes))) => body.extend_from_slice(&bytes),
            _ => break,
        }
    }
    body.truncate(MAX_ERROR_BODY);
    String::from_utf8_lossy(&body).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_reads_seconds_and_milliseconds() {
        let mut h = HeaderMap::new();
        assert_eq!(retry_after(&h), None);
        h.insert("retry-after", HeaderValue::from_static("7"));
        assert_eq!(retry_after(&h), Some(Duration::from_secs(7)));
        h.insert("retry-after-ms", HeaderValue::from_static("1500"));
        assert_eq!(retry_after(&h), Some(Duration::from_millis(1500)));
        let mut h = HeaderMap::new();
        h.insert(
            "retry-after",
            HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"),
        );
        assert_eq!(retry_after(&h), None);
    }

    #[test]
    fn error_bodies_give_their_message_and_never_the_key() {
        assert_eq!(
            error_message(
                r#"{"type":"error","error":{"type":"rate_limit_error","message":"slow down"}}"#
            ),
            "slow down"
        );
        assert_eq!(error_message("  plain text "), "plain text");
        let key = Secret::new("sk-test-0123456789".into());
        assert_eq!(
            scrub(
                "Incorrect API key provided: sk-test-0123456789.",
                Some(&key)
            ),
            "Incorrect API key provided: <redacted>."
        );
    }
}
