//! `GET /api/v1/sessions/{id}/pty`: the PTY channel (protocol in `kaged_session::frame` and
//! docs/pty-protocol.md). Each viewer pulls output at its own pace from a cursor; the run
//! never waits for it.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Extension, Path as UrlPath, State};
use axum::response::Response;
use futures_util::{SinkExt, StreamExt};
use kaged_auth::Principal;
use kaged_session::frame::{
    ClientControl, ServerText, encode_output, encode_snapshot, parse_client_text,
};
use kaged_session::state::StateKind;
use kaged_store::SessionRecord;

use super::http::find;
use super::live::MAX_VIEWERS;
use super::{Input, Live, Sessions};
use crate::error::{ApiError, ErrorCode};

/// Largest client message (a paste); input is chunked by the client beyond that.
const MAX_CLIENT_MESSAGE: usize = 256 * 1024;
/// Output bytes per frame.
const FRAME_BYTES: usize = 64 * 1024;
/// A viewer that cannot take a frame for this long is dropped; it resumes from its offset.
const SLOW_VIEWER: Duration = Duration::from_secs(20);
/// How long the server waits for the client's `resume` before sending a snapshot anyway.
const RESUME_WAIT: Duration = Duration::from_secs(5);
/// An ended run evicted from memory replays at most this much when no offset is given.
const REPLAY_TAIL: u64 = 1024 * 1024;

const CLOSE_NORMAL: u16 = 1000;
const CLOSE_GOING_AWAY: u16 = 1001;
const CLOSE_POLICY: u16 = 1008;
/// Private-use close code: the viewer fell behind; reconnect with `resume` from its offset.
const CLOSE_TOO_SLOW: u16 = 4000;

pub async fn attach(
    ws: WebSocketUpgrade,
    State(sessions): State<Sessions>,
    Extension(principal): Extension<Principal>,
    UrlPath(id): UrlPath<String>,
) -> Result<Response, ApiError> {
    let record = find(&sessions, &id).await?;
    let live = sessions.get(&id);
    let seat = match &live {
        Some(live) => Some(live.take_seat().ok_or_else(|| {
            ApiError::new(
                ErrorCode::RateLimited,
                format!("session {id} already has {MAX_VIEWERS} viewers; close one first"),
            )
        })?),
        None => None,
    };
    let may_write = sessions
        .deps()
        .policy
        .check_change(&principal, "POST", "/api/v1/sessions")
        .is_ok()
        && super::may_control(&principal, &record.created_by);
    Ok(ws
        .max_message_size(MAX_CLIENT_MESSAGE)
        .max_frame_size(MAX_CLIENT_MESSAGE)
        .on_upgrade(move |socket| async move {
            serve(socket, sessions, record, principal, may_write).await;
            drop(seat);
        }))
}

type Sink = futures_util::stream::SplitSink<WebSocket, Message>;

async fn send_text(sink: &mut Sink, text: &ServerText) -> bool {
    sink.send(Message::Text(text.to_json().into()))
        .await
        .is_ok()
}

async fn close(sink: &mut Sink, code: u16, reason: &str) {
    let _ = sink
        .send(Message::Close(Some(CloseFrame {
            code,
            reason: reason.to_string().into(),
        })))
        .await;
}

fn error_text(code: &str, message: impl Into<String>) -> ServerText {
    ServerText::Error {
        code: code.into(),
        message: message.into(),
    }
}

/// The state of a run no longer in memory, from its row.
fn stored_state(record: &SessionRecord) -> ServerText {
    let kind = kind_of(&record.state);
    ServerText::State {
        state: kind,
        code: record.exit_code,
        by: (kind == StateKind::Killed)
            .then(|| record.reason.clone())
            .flatten(),
        reason: (kind == StateKind::Failed)
            .then(|| record.reason.clone())
            .flatten(),
    }
}

/// Where the output ends now, and whether it can still grow.
fn output_end(
    live: Option<&Arc<Live>>,
    record: &SessionRecord,
    transcript: &std::path::Path,
) -> (u64, bool) {
    match live {
        Some(l) => (l.end(), l.producing()),
        None => (
            record.output_bytes.unwrap_or_else(|| {
                super::transcript::pieces(transcript).map_or(0, |(p, _)| p.end())
            }),
            !kind_of(&record.state).is_terminal(),
        ),
    }
}

/// A stored state name (unknown names, from a newer kaged, read as failed).
fn kind_of(name: &str) -> StateKind {
    name.parse().unwrap_or(StateKind::Failed)
}

async fn serve(
    socket: WebSocket,
    sessions: Sessions,
    record: SessionRecord,
    principal: Principal,
    may_write: bool,
) {
    let (mut sink, mut stream) = socket.split();
    let (control_tx, mut control) = tokio::sync::mpsc::channel::<Message>(256);
    let reader = tokio::spawn(async move {
        while let Some(Ok(message)) = stream.next().await {
            let close = matches!(message, Message::Close(_));
            if control_tx.send(message).await.is_err() || close {
                break;
            }
        }
    });
    let live = sessions.get(&record.id);
    let transcript = sessions.transcript_path(&record.id);
    let (end, _) = output_end(live.as_ref(), &record, &transcript);
    let (rows, cols) = live.as_ref().map_or((24, 80), |l| l.size());
    let hello = ServerText::Hello {
        session: record.id.clone(),
        state: live
            .as_ref()
            .map_or(kind_of(&record.state), |l| l.state().kind()),
        rows,
        cols,
        start: 0,
        end,
    };
    if !send_text(&mut sink, &hello).await {
        reader.abort();
        return;
    }
    // The client says where to resume (or asks for a snapshot); other early frames wait.
    let mut early = Vec::new();
    let mut resume: Option<u64> = None;
    let deadline = tokio::time::sleep(RESUME_WAIT);
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            _ = &mut deadline => break,
            m = control.recv() => match m {
                None => { reader.abort(); return; }
                Some(Message::Text(t)) => match parse_client_text(&t) {
                    Ok(ClientControl::Resume { offset }) => { resume = offset; break; }
                    Ok(other) => early.push(other),
                    Err(e) => { let _ = send_text(&mut sink, &ServerText::error(&e)).await; }
                },
                // Input typed before `resume` is dropped: the viewer has not seen the screen.
                Some(_) => {}
            }
        }
    }
    let mut cursor = match (resume, &live) {
        (Some(offset), _) if offset > end => {
            let _ = send_text(
                &mut sink,
                &error_text(
                    "resume_ahead",
                    format!("offset {offset} is past the end of the output ({end})"),
                ),
            )
            .await;
            close(&mut sink, CLOSE_POLICY, "resume offset ahead of the output").await;
            reader.abort();
            return;
        }
        (Some(offset), _) => offset,
        (None, Some(live)) => {
            let snap_live = live.clone();
            let snapshot = tokio::task::spawn_blocking(move || snap_live.snapshot()).await;
            let Ok((bytes, offset)) = snapshot else {
                reader.abort();
                return;
            };
            if sink
                .send(Message::Binary(encode_snapshot(offset, &bytes).into()))
                .await
                .is_err()
            {
                reader.abort();
                return;
            }
            offset
        }
        (None, None) => end.saturating_sub(REPLAY_TAIL),
    };
    for c in early {
        handle_control(&mut sink, live.as_deref(), c, may_write).await;
    }
    let mut end_rx = live.as_ref().map(|l| l.subscribe_end());
    let mut state_rx = live.as_ref().map(|l| l.subscribe_state());
    let mut shutdown = sessions.deps().shutdown.clone();
    let mut revoked = sessions.deps().revoked_tokens.subscribe();
    let mut last_state: Option<StateKind> = None;
    loop {
        // Send what the viewer has not seen yet, a frame at a time.
        let (end, growing) = output_end(live.as_ref(), &record, &transcript);
        if cursor < end {
            // The transcript cap may have dropped the bytes at `cursor`: the frame then
            // starts at the first kept offset after them (its offset says so).
            let (at, data) = match read_output(live.as_deref(), &transcript, cursor, end).await {
                Ok(d) => d,
                Err(e) => {
                    let _ = send_text(
                        &mut sink,
                        &error_text("internal", format!("cannot read the output: {e}")),
                    )
                    .await;
                    break;
                }
            };
            if data.is_empty() {
                break;
            }
            let frame = Message::Binary(encode_output(at, &data).into());
            match tokio::time::timeout(SLOW_VIEWER, sink.send(frame)).await {
                Ok(Ok(())) => cursor = at + data.len() as u64,
                Ok(Err(_)) => break,
                Err(_) => {
                    close(
                        &mut sink,
                        CLOSE_TOO_SLOW,
                        &format!("too slow; resume from offset {cursor}"),
                    )
                    .await;
                    break;
                }
            }
            // Keep control frames (input above all) flowing during a flood.
            while let Ok(m) = control.try_recv() {
                if !handle_message(&mut sink, live.as_deref(), m, may_write).await {
                    reader.abort();
                    return;
                }
            }
            continue;
        }
        // Caught up: report the state when it changed, finish when the run has ended.
        let now = live.as_ref().map(|l| l.state());
        let kind = now.as_ref().map_or(kind_of(&record.state), |s| s.kind());
        if last_state != Some(kind) {
            let text = match &now {
                Some(s) => ServerText::state(s),
                None => stored_state(&record),
            };
            if !send_text(&mut sink, &text).await {
                break;
            }
            last_state = Some(kind);
        }
        if !growing {
            let code = match &now {
                Some(kaged_session::state::State::Exited { code, .. }) => Some(*code),
                Some(_) => None,
                None => record.exit_code,
            };
            if let Some(code) = code {
                let _ = send_text(&mut sink, &ServerText::Exit { code }).await;
            }
            close(&mut sink, CLOSE_NORMAL, "the run has ended").await;
            break;
        }
        tokio::select! {
            changed = async {
                match end_rx.as_mut() {
                    Some(rx) => rx.changed().await.is_ok(),
                    None => std::future::pending().await,
                }
            } => { if !changed { end_rx = None; } }
            changed = async {
                match state_rx.as_mut() {
                    Some(rx) => rx.changed().await.is_ok(),
                    None => std::future::pending().await,
                }
            } => { if !changed { state_rx = None; } }
            m = control.recv() => match m {
                None => break,
                Some(m) => if !handle_message(&mut sink, live.as_deref(), m, may_write).await { break },
            },
            _ = shutdown.changed() => {
                close(&mut sink, CLOSE_GOING_AWAY, "kaged is stopping").await;
                break;
            }
            id = revoked.recv() => {
                if principal.token_id.is_some() && id.is_ok_and(|id| Some(id) == principal.token_id) {
                    close(&mut sink, CLOSE_POLICY, "token revoked").await;
                    break;
                }
            }
            // The reader may drain output after the state turned final: look again soon.
            _ = tokio::time::sleep(Duration::from_millis(200)), if live.as_ref().is_some_and(|l| l.state().is_terminal()) => {}
        }
    }
    reader.abort();
}

/// Output from `cursor` (or the first kept offset after it), with the offset it starts at:
/// from memory when it is there, else from the transcript.
async fn read_output(
    live: Option<&Live>,
    transcript: &std::path::Path,
    cursor: u64,
    end: u64,
) -> std::io::Result<(u64, Vec<u8>)> {
    // Never past the end this viewer was told about (it may resume from anything sent).
    if let Some(data) = live.and_then(|l| l.read_memory(cursor, end, FRAME_BYTES)) {
        return Ok((cursor, data));
    }
    let path = transcript.to_path_buf();
    tokio::task::spawn_blocking(move || super::transcript::read(&path, cursor, end, FRAME_BYTES))
        .await
        .map_err(std::io::Error::other)?
}

/// One message from the client; `false` ends the connection.
async fn handle_message(sink: &mut Sink, live: Option<&Live>, m: Message, may_write: bool) -> bool {
    match m {
        Message::Close(_) => false,
        Message::Binary(bytes) => {
            input(sink, live, Input::Bytes(bytes.to_vec()), may_write).await;
            true
        }
        Message::Text(t) => {
            match parse_client_text(&t) {
                Ok(c) => handle_control(sink, live, c, may_write).await,
                Err(e) => {
                    let _ = send_text(sink, &ServerText::error(&e)).await;
                }
            }
            true
        }
        _ => true,
    }
}

async fn handle_control(sink: &mut Sink, live: Option<&Live>, c: ClientControl, may_write: bool) {
    match c {
        ClientControl::Ping { id } => {
            let _ = send_text(sink, &ServerText::Pong { id }).await;
        }
        ClientControl::Resize { rows, cols } => {
            input(sink, live, Input::Resize(rows, cols), may_write).await;
        }
        ClientControl::Resume { .. } => {
            let _ = send_text(
                sink,
                &error_text(
                    "bad_control",
                    "resume is only accepted first; reconnect to resume elsewhere",
                ),
            )
            .await;
        }
    }
}

async fn input(sink: &mut Sink, live: Option<&Live>, input: Input, may_write: bool) {
    let refused = if !may_write {
        Some(("read_only", "this credential may watch but not type"))
    } else if !live.is_some_and(|l| l.send_input(input)) {
        Some((
            "input_refused",
            "the run has ended or is not reading its input",
        ))
    } else {
        None
    };
    if let Some((code, message)) = refused {
        let _ = send_text(sink, &error_text(code, message)).await;
    }
}
