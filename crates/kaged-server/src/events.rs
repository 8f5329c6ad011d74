//! `GET /api/v1/events[?since=CURSOR]`: the operator's event WebSocket. It greets the caller
//! with who they are, replays the session state changes after `since` (from storage, so a
//! client that was away, even across a daemon restart, misses nothing), then streams new ones
//! as they happen (`session.created`, `run.started`, `session.state`, `run.ended`, each with
//! its `cursor`). Approvals (`approval.requested`, `approval.decided`, each with the whole
//! `approval`) are streamed live only: they are durable records a client lists
//! (`GET /api/v1/approvals?state=pending`) when it (re)connects. So are plugins' changes
//! (`plugin.state`; `GET /api/v1/plugins` lists them).

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Extension, Query, State};
use axum::response::Response;
use kaged_auth::Principal;
use serde_json::json;

use crate::state::ServerState;

/// Control messages are small; nothing larger is accepted from a client.
const MAX_CLIENT_MESSAGE_BYTES: usize = 64 * 1024;
const PING_EVERY: Duration = Duration::from_secs(25);
/// RFC 6455 "going away".
const CLOSE_GOING_AWAY: u16 = 1001;
/// RFC 6455 "policy violation": the credential behind the socket was revoked.
const CLOSE_POLICY: u16 = 1008;
/// Private-use close code: the client fell behind the stream; it reconnects with `since`.
const CLOSE_TOO_SLOW: u16 = 4000;

/// Events replayed at most per connection; a client further behind lists sessions instead.
const MAX_REPLAY: usize = 10_000;

#[derive(serde::Deserialize)]
pub struct EventsQuery {
    #[serde(default)]
    since: Option<i64>,
}

pub async fn events(
    ws: WebSocketUpgrade,
    State(state): State<Arc<ServerState>>,
    Extension(principal): Extension<Principal>,
    query: Result<Query<EventsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, crate::error::ApiError> {
    let Query(q) = query.map_err(|e| {
        crate::error::ApiError::new(crate::error::ErrorCode::BadRequest, e.body_text())
    })?;
    Ok(ws
        .max_message_size(MAX_CLIENT_MESSAGE_BYTES)
        .max_frame_size(MAX_CLIENT_MESSAGE_BYTES)
        .on_upgrade(move |socket| serve_events(socket, state, principal, q.since)))
}

async fn serve_events(
    mut socket: WebSocket,
    state: Arc<ServerState>,
    principal: Principal,
    since: Option<i64>,
) {
    let hello = json!({
        "type": "hello",
        "identity": principal.id,
        "email": principal.email,
        "method": principal.method,
        "version": state.info.version,
    });
    if socket
        .send(Message::Text(hello.to_string().into()))
        .await
        .is_err()
    {
        return;
    }
    // Subscribe before reading storage, so nothing falls between the replay and the stream.
    let mut runs = state.runs.subscribe();
    let mut approvals = state.runs.approvals().subscribe();
    let mut plugins = state.plugins.subscribe();
    let mut cursor = since.unwrap_or(i64::MAX);
    if let Some(since) = since {
        let replay = state
            .store
            .transitions_after(since, None, MAX_REPLAY)
            .await
            .unwrap_or_default();
        let more = replay.len() == MAX_REPLAY;
        for t in replay {
            cursor = t.id;
            let event = crate::sessions::RunEvent { transition: t };
            if socket
                .send(Message::Text(event.to_json().to_string().into()))
                .await
                .is_err()
            {
                return;
            }
        }
        if cursor == i64::MAX {
            cursor = since;
        }
        if more {
            // Paged: the client comes back for the rest from where this page ended.
            let _ = socket
                .send(Message::Close(Some(CloseFrame {
                    code: CLOSE_TOO_SLOW,
                    reason: format!("more events; reconnect with ?since={cursor}").into(),
                })))
                .await;
            return;
        }
    } else {
        cursor = i64::MIN;
    }
    let mut shutdown = state.shutdown.clone();
    let mut revoked = state.revoked_tokens.subscribe();
    let mut ping = tokio::time::interval(PING_EVERY);
    ping.tick().await;
    loop {
        tokio::select! {
            _ = shutdown.changed() => {
                let _ = socket
                    .send(Message::Close(Some(CloseFrame {
                        code: CLOSE_GOING_AWAY,
                        reason: "kaged is stopping".into(),
                    })))
                    .await;
                break;
            }
            id = revoked.recv() => {
                // A lagged receiver may have missed the id: close to be safe.
                if principal.token_id.is_some() && id.map_or(true, |id| Some(id) == principal.token_id) {
                    let _ = socket
                        .send(Message::Close(Some(CloseFrame {
                            code: CLOSE_POLICY,
                            reason: "token revoked".into(),
                        })))
                        .await;
                    break;
                }
            }
            event = runs.recv() => match event {
                Ok(event) if event.transition.id > cursor => {
                    cursor = event.transition.id;
                    if socket.send(Message::Text(event.to_json().to_string().into())).await.is_err() {
                        break;
                    }
                }
                Ok(_) => {}
                Err(tokio::sync::broadcast::error::RecvError::Lagged(missed)) => {
                    // Too slow to follow: say so, and let the client resume from its cursor.
                    let _ = socket
                        .send(Message::Close(Some(CloseFrame {
                            code: CLOSE_TOO_SLOW,
                            reason: format!("missed {missed} events; reconnect with ?since={cursor}").into(),
                        })))
                        .await;
                    break;
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
            },
            event = plugins.recv() => match event {
                Ok(event) => {
                    if socket.send(Message::Text(event.to_string().into())).await.is_err() {
                        break;
                    }
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(missed)) => {
                    let _ = socket
                        .send(Message::Close(Some(CloseFrame {
                            code: CLOSE_TOO_SLOW,
                            reason: format!("missed {missed} plugin events; reconnect with ?since={cursor} and list the plugins").into(),
                        })))
                        .await;
                    break;
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
            },
            event = approvals.recv() => match event {
                Ok(event) => {
                    if socket.send(Message::Text(event.to_json().to_string().into())).await.is_err() {
                        break;
                    }
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(missed)) => {
                    let _ = socket
                        .send(Message::Close(Some(CloseFrame {
                            code: CLOSE_TOO_SLOW,
                            reason: format!("missed {missed} approval events; reconnect with ?since={cursor} and list the approvals").into(),
                        })))
                        .await;
                    break;
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
            },
            _ = ping.tick() => {
                if socket.send(Message::Ping(Default::default())).await.is_err() {
                    break;
                }
            }
            message = socket.recv() => match message {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => break,
                Some(Ok(_)) => {}
            },
        }
    }
}
