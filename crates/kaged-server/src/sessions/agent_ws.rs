//! `GET /api/v1/sessions/{id}/events?after=SEQ`: a model-agent session's event log over a
//! WebSocket (docs/agent-protocol.md). Each client follows its own [`Subscription`] at its own
//! pace (stored records first, then live ones); nothing is queued for it, and one that stops
//! reading is dropped after [`SLOW_CLIENT`] without ever slowing the run.

use std::time::Duration;

use axum::extract::rejection::QueryRejection;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Extension, Path as UrlPath, Query, State};
use axum::response::Response;
use futures_util::{SinkExt, StreamExt};
use kaged_auth::Principal;
use serde::Deserialize;

use super::Sessions;
use super::agent_log::{LogError, Subscription};
use super::http::find;
use crate::error::{ApiError, ErrorCode};

/// Clients send nothing that matters; anything larger is refused.
const MAX_CLIENT_MESSAGE: usize = 4 * 1024;
/// A client that cannot take a frame for this long is closed; it resumes with `?after=`.
pub(crate) const SLOW_CLIENT: Duration = Duration::from_secs(20);
const PING_EVERY: Duration = Duration::from_secs(25);

const CLOSE_GOING_AWAY: u16 = 1001;
const CLOSE_POLICY: u16 = 1008;
const CLOSE_INTERNAL: u16 = 1011;
/// Private-use close code: the client fell behind; reconnect with `?after=` its last `seq`.
const CLOSE_TOO_SLOW: u16 = 4000;

#[derive(Deserialize)]
pub struct EventsQuery {
    #[serde(default)]
    after: u64,
}

pub async fn events(
    ws: WebSocketUpgrade,
    State(sessions): State<Sessions>,
    Extension(principal): Extension<Principal>,
    UrlPath(id): UrlPath<String>,
    query: Result<Query<EventsQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::new(ErrorCode::BadRequest, e.body_text()))?;
    let record = find(&sessions, &id).await?;
    Ok(ws
        .max_message_size(MAX_CLIENT_MESSAGE)
        .max_frame_size(MAX_CLIENT_MESSAGE)
        .on_upgrade(move |socket| serve(socket, sessions, record.id, principal, q.after)))
}

type Sink = futures_util::stream::SplitSink<WebSocket, Message>;

/// Close with `code`; the reason is cut to what a close frame can carry (123 bytes).
async fn close(sink: &mut Sink, code: u16, reason: &str) {
    let mut end = reason.len().min(120);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let reason = &reason[..end];
    let _ = tokio::time::timeout(
        SLOW_CLIENT,
        sink.send(Message::Close(Some(CloseFrame {
            code,
            reason: reason.to_string().into(),
        }))),
    )
    .await;
}

async fn serve(
    socket: WebSocket,
    sessions: Sessions,
    id: String,
    principal: Principal,
    after: u64,
) {
    let (mut sink, mut stream) = socket.split();
    // Read what the client sends (pongs, close) so the connection's state moves on; the
    // library answers pings. Its end (close or error) ends the connection.
    let mut reader = tokio::spawn(async move {
        while let Some(Ok(message)) = stream.next().await {
            if matches!(message, Message::Close(_)) {
                break;
            }
        }
    });
    let mut sub = match sessions.agent_log().subscribe(&id, after).await {
        Ok(sub) => sub,
        Err(e) => {
            let code = match e {
                LogError::Ahead { .. } => CLOSE_POLICY,
                _ => CLOSE_INTERNAL,
            };
            close(&mut sink, code, &e.to_string()).await;
            reader.abort();
            return;
        }
    };
    let mut shutdown = sessions.deps().shutdown.clone();
    let mut revoked = sessions.deps().revoked_tokens.subscribe();
    let mut ping = tokio::time::interval(PING_EVERY);
    ping.tick().await;
    loop {
        tokio::select! {
            record = sub.next() => {
                if !send_record(&mut sink, &sub, record).await {
                    break;
                }
            }
            _ = ping.tick() => {
                match tokio::time::timeout(SLOW_CLIENT, sink.send(Message::Ping(Vec::new().into()))).await {
                    Ok(Ok(())) => {}
                    Ok(Err(_)) => break,
                    Err(_) => {
                        close(&mut sink, CLOSE_TOO_SLOW, &too_slow(&sub)).await;
                        break;
                    }
                }
            }
            _ = &mut reader => break,
            _ = shutdown.changed() => {
                close(&mut sink, CLOSE_GOING_AWAY, "kaged is stopping").await;
                break;
            }
            id = revoked.recv() => {
                // A lagged receiver may have missed the id: close to be safe.
                if principal.token_id.is_some() && id.map_or(true, |id| Some(id) == principal.token_id) {
                    close(&mut sink, CLOSE_POLICY, "token revoked").await;
                    break;
                }
            }
        }
    }
    reader.abort();
}

fn too_slow(sub: &Subscription) -> String {
    format!("too slow; reconnect with ?after={}", sub.cursor())
}

/// Send one record (or close on an error); `false` ends the connection.
async fn send_record(
    sink: &mut Sink,
    sub: &Subscription,
    record: Result<std::sync::Arc<kaged_session::agent::Sequenced>, LogError>,
) -> bool {
    let text = match record.map(|r| serde_json::to_string(&*r)) {
        Ok(Ok(text)) => text,
        Ok(Err(e)) => {
            close(sink, CLOSE_INTERNAL, &format!("cannot encode: {e}")).await;
            return false;
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot read an agent event log");
            close(sink, CLOSE_INTERNAL, &format!("cannot read the log: {e}")).await;
            return false;
        }
    };
    match tokio::time::timeout(SLOW_CLIENT, sink.send(Message::Text(text.into()))).await {
        Ok(Ok(())) => true,
        Ok(Err(_)) => false,
        Err(_) => {
            // `sub`'s cursor is this record's seq: the client has the ones before it at most.
            let resume = sub.cursor().saturating_sub(1);
            close(
                sink,
                CLOSE_TOO_SLOW,
                &format!("too slow; reconnect with ?after={resume}"),
            )
            .await;
            false
        }
    }
}
