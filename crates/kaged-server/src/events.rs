//! `GET /api/v1/events`: the operator's event WebSocket. Today it greets the caller with who
//! they are and keeps the connection alive until the daemon stops; run and session events join
//! it with the session manager.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Extension, State};
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

pub async fn events(
    ws: WebSocketUpgrade,
    State(state): State<Arc<ServerState>>,
    Extension(principal): Extension<Principal>,
) -> Response {
    ws.max_message_size(MAX_CLIENT_MESSAGE_BYTES)
        .max_frame_size(MAX_CLIENT_MESSAGE_BYTES)
        .on_upgrade(move |socket| serve_events(socket, state, principal))
}

async fn serve_events(mut socket: WebSocket, state: Arc<ServerState>, principal: Principal) {
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
