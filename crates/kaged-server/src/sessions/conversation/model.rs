//! One model call of a turn: the alias's routes in order (a fallback list), each tried up to
//! `[models] max_attempts` times with backoff and jitter (honouring `retry-after`) while
//! nothing of its answer was recorded; the streamed answer recorded as events as it arrives.

use std::collections::BTreeMap;

use kaged_llm::{Client, Endpoint, Event, LlmError, Request, RetryPolicy, StopReason, ToolCall};
use kaged_session::agent::{AgentEvent, Role};

use super::turn::Turn;

/// What a model call gave.
pub(crate) struct Answer {
    pub tool_calls: Vec<ToolCall>,
    pub stop: StopReason,
}

/// Why a model call gave no answer: the `error` event's code and message.
pub(crate) struct Failed {
    pub code: &'static str,
    pub message: String,
}

/// One route of an alias: where the call goes and what it costs.
pub(crate) struct Target {
    endpoint: Endpoint,
    prices: Option<kaged_llm::Prices>,
}

/// The routes of `alias` from `local.toml`, first choice first.
pub(crate) fn endpoints(
    settings: &crate::sessions::RunSettings,
    alias: &str,
) -> Result<Vec<Target>, Failed> {
    let routes = kaged_config::resolve_alias(&settings.local, &settings.local_path, alias)
        .map_err(|e| Failed {
            code: "alias",
            message: e.to_string(),
        })?;
    let mut endpoints = Vec::new();
    let mut missing = Vec::new();
    for route in &routes {
        // Only the variable this route names is read from the daemon's environment.
        let env: BTreeMap<String, String> = route
            .provider
            .api_key_env
            .iter()
            .filter_map(|var| std::env::var(var).ok().map(|v| (var.clone(), v)))
            .collect();
        match Endpoint::from_route(route, &env) {
            Ok(endpoint) => endpoints.push(Target {
                endpoint,
                prices: route.provider.prices,
            }),
            Err(e) => missing.push(e.to_string()),
        }
    }
    if endpoints.is_empty() {
        return Err(Failed {
            code: "key",
            message: missing.join("; "),
        });
    }
    Ok(endpoints)
}

/// Call the model with `request`, recording its answer in the turn's log.
pub(crate) async fn call(
    turn: &Turn<'_>,
    client: &Client,
    endpoints: &[Target],
    request: &Request,
) -> Result<Answer, Failed> {
    let policy = RetryPolicy {
        max_attempts: u32::try_from(turn.settings().models.max_attempts)
            .unwrap_or(1)
            .max(1),
        ..RetryPolicy::default()
    };
    let mut last: Option<LlmError> = None;
    for target in endpoints {
        let endpoint = &target.endpoint;
        let mut attempt = 1;
        loop {
            match stream_once(turn, client, target, request).await {
                Ok(answer) => return Ok(answer),
                Err(Attempt::Recorded(e)) => return Err(provider_failed(&e)),
                Err(Attempt::Storage(message)) => {
                    return Err(Failed {
                        code: "storage",
                        message,
                    });
                }
                Err(Attempt::Nothing(e)) => {
                    let retry = e.is_retryable() && policy.may_retry(attempt);
                    tracing::warn!(session = %turn.session(), model = %endpoint.model, attempt, error = %e, retry, "model call failed");
                    if !retry {
                        last = Some(e);
                        break;
                    }
                    let delay = policy.delay(attempt, e.retry_after(), jitter());
                    tokio::time::sleep(delay).await;
                    attempt += 1;
                }
            }
        }
    }
    Err(match last {
        Some(e) => provider_failed(&e),
        None => Failed {
            code: "provider",
            message: "no provider was tried".into(),
        },
    })
}

fn provider_failed(e: &LlmError) -> Failed {
    Failed {
        code: "provider",
        message: e.to_string(),
    }
}

enum Attempt {
    /// Nothing of the answer was recorded: trying again (or the next route) is clean.
    Nothing(LlmError),
    /// Part of the answer is in the log already.
    Recorded(LlmError),
    Storage(String),
}

fn jitter() -> f64 {
    let mut byte = [0u8; 1];
    match getrandom::fill(&mut byte) {
        Ok(()) => f64::from(byte[0]) / 255.0,
        Err(_) => 1.0,
    }
}

async fn stream_once(
    turn: &Turn<'_>,
    client: &Client,
    target: &Target,
    request: &Request,
) -> Result<Answer, Attempt> {
    let mut stream = client
        .stream(&target.endpoint, request)
        .await
        .map_err(Attempt::Nothing)?;
    let mut text: Option<String> = None;
    let mut calls: Vec<ToolCall> = Vec::new();
    let mut usage = None;
    let mut stop = StopReason::EndTurn;
    let record = |events: Vec<AgentEvent>| async move {
        turn.record(events).await.map_err(Attempt::Storage)
    };
    while let Some(event) = stream.next().await {
        let event = match event {
            Ok(e) => e,
            Err(e) => {
                let recorded = text.is_some();
                if let Some(text) = text.take() {
                    record(vec![AgentEvent::MessageCompleted { text }]).await?;
                }
                return Err(if recorded {
                    Attempt::Recorded(e)
                } else {
                    Attempt::Nothing(e)
                });
            }
        };
        match event {
            Event::Text(delta) => {
                let mut events = Vec::new();
                let acc = text.get_or_insert_with(|| {
                    events.push(AgentEvent::MessageStarted {
                        role: Role::Assistant,
                    });
                    String::new()
                });
                acc.push_str(&delta);
                events.push(AgentEvent::TextDelta { text: delta });
                record(events).await?;
            }
            Event::ToolCallStarted { index, id, name } => {
                if calls.len() <= index {
                    calls.resize_with(index + 1, || ToolCall {
                        id: String::new(),
                        name: String::new(),
                        arguments: String::new(),
                    });
                }
                calls[index].id = id;
                calls[index].name = name;
            }
            Event::ToolCallArguments { index, fragment } => {
                if let Some(call) = calls.get_mut(index) {
                    call.arguments.push_str(&fragment);
                }
            }
            Event::Usage(u) => usage = Some(u),
            Event::Finished(reason) => {
                stop = reason;
                break;
            }
        }
    }
    let mut events = Vec::new();
    if let Some(text) = text {
        events.push(AgentEvent::MessageCompleted { text });
    }
    if let Some(u) = usage {
        let cost = target.prices.map(|p| kaged_llm::cost(&u, &p));
        events.push(AgentEvent::Usage {
            input_tokens: u.input_tokens,
            output_tokens: u.output_tokens,
            cached_tokens: u.cached_tokens,
            cost,
        });
    }
    record(events).await?;
    calls.retain(|c| !c.name.is_empty());
    Ok(Answer {
        tool_calls: calls,
        stop,
    })
}
