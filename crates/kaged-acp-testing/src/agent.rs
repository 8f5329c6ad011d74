//! The scripted agent: the agent side of `agent-client-protocol` on stdio, answering
//! `initialize`, `session/new` and `session/prompt` as the script says and honouring
//! `session/cancel`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use agent_client_protocol::schema::ProtocolVersion;
use agent_client_protocol::v1::ConnectionTo;
use agent_client_protocol::v1::schema::{
    AgentCapabilities, CancelNotification, ContentBlock, Implementation, InitializeRequest,
    InitializeResponse, LoadSessionRequest, LoadSessionResponse, NewSessionRequest,
    NewSessionResponse, PromptRequest, PromptResponse, SessionId, StopReason,
};
use agent_client_protocol::{Agent, Client};
use tokio::sync::watch;

use crate::script::Script;
use crate::turn::{Flow, Turn, note};
use crate::wire;

/// What the handlers share.
struct State {
    script: Script,
    prompts: AtomicUsize,
    sessions: AtomicUsize,
    /// Sessions taken up by `session/load`.
    loaded: Mutex<std::collections::HashSet<String>>,
    /// The cancel switch of each session's running prompt.
    cancels: Mutex<HashMap<String, watch::Sender<bool>>>,
}

impl State {
    /// A fresh cancel switch for the next prompt of `session`.
    fn cancel_switch(&self, session: &SessionId) -> watch::Receiver<bool> {
        let (tx, rx) = watch::channel(false);
        if let Ok(mut map) = self.cancels.lock() {
            map.insert(session.0.to_string(), tx);
        }
        rx
    }

    fn cancel(&self, session: &SessionId) {
        if let Ok(map) = self.cancels.lock()
            && let Some(tx) = map.get(session.0.as_ref())
        {
            tx.send_replace(true);
        }
    }
}

/// Steps run before a session exists (no updates, no cancel).
fn wire_turn(cx: ConnectionTo<Client>) -> Turn {
    let (_tx, cancel) = watch::channel(false);
    Turn::new(cx, None, cancel, String::new())
}

/// The error a `fail` step answers with.
fn scripted_error(message: String) -> agent_client_protocol::Error {
    agent_client_protocol::Error::new(-32603, message)
}

/// Keeps a request unanswered for good (a dropped responder would answer with an error).
async fn hold<T>(responder: T) -> Result<(), agent_client_protocol::Error> {
    let _held = responder;
    std::future::pending::<()>().await;
    Ok(())
}

/// Serves the script on stdin/stdout until the client closes stdin.
pub async fn serve(script: Script) -> Result<(), agent_client_protocol::Error> {
    let state = Arc::new(State {
        script,
        prompts: AtomicUsize::new(0),
        sessions: AtomicUsize::new(0),
        cancels: Mutex::new(HashMap::new()),
        loaded: Mutex::new(std::collections::HashSet::new()),
    });
    let on_init = state.clone();
    let on_new = state.clone();
    let on_prompt = state.clone();
    let on_load = state.clone();
    let on_cancel = state;
    Agent
        .v1()
        .name("kaged-acp-scripted")
        .on_receive_request(
            async move |req: InitializeRequest, responder, cx: ConnectionTo<Client>| {
                let caps = &req.client_capabilities;
                note(&format!(
                    "initialize: protocol {:?}, fs read {} write {}, terminal {}",
                    req.protocol_version,
                    caps.fs.read_text_file,
                    caps.fs.write_text_file,
                    caps.terminal
                ));
                let state = on_init.clone();
                cx.clone().spawn(async move {
                    if state.script.never_initialize {
                        note("never answering initialize (scripted)");
                        return hold(responder).await;
                    }
                    match wire_turn(cx).run(&state.script.initialize).await? {
                        Flow::Fail(message) => {
                            return responder.respond_with_error(scripted_error(message));
                        }
                        Flow::Exited => return hold(responder).await,
                        Flow::Done | Flow::Stop(_) => {}
                    }
                    responder.respond(
                        InitializeResponse::new(ProtocolVersion::V1)
                            .agent_capabilities(
                                AgentCapabilities::new()
                                    .load_session(state.script.load_session.is_some()),
                            )
                            .agent_info(Implementation::new(
                                "kaged-acp-scripted",
                                env!("CARGO_PKG_VERSION"),
                            )),
                    )
                })
            },
            agent_client_protocol::on_receive_request!(),
        )
        .on_receive_request(
            async move |req: NewSessionRequest, responder, cx: ConnectionTo<Client>| {
                let state = on_new.clone();
                cx.clone().spawn(async move {
                    match wire_turn(cx).run(&state.script.new_session).await? {
                        Flow::Fail(message) => {
                            return responder.respond_with_error(scripted_error(message));
                        }
                        Flow::Exited => return hold(responder).await,
                        Flow::Done | Flow::Stop(_) => {}
                    }
                    let n = state.sessions.fetch_add(1, Ordering::SeqCst) + 1;
                    let id = format!("scripted-{n}");
                    note(&format!("session/new: {id} in {}", req.cwd.display()));
                    responder.respond(NewSessionResponse::new(id))
                })
            },
            agent_client_protocol::on_receive_request!(),
        )
        .on_receive_request(
            async move |req: PromptRequest, responder, cx: ConnectionTo<Client>| {
                let state = on_prompt.clone();
                let cancel = state.cancel_switch(&req.session_id);
                cx.clone().spawn(async move {
                    let n = state.prompts.fetch_add(1, Ordering::SeqCst);
                    let prompt_text: String = req
                        .prompt
                        .iter()
                        .filter_map(|b| match b {
                            ContentBlock::Text(t) => Some(t.text.as_str()),
                            _ => None,
                        })
                        .collect();
                    note(&format!("session/prompt {}: {prompt_text:?}", n + 1));
                    let loaded = state
                        .loaded
                        .lock()
                        .is_ok_and(|l| l.contains(req.session_id.0.as_ref()));
                    let turn = Turn::new(cx, Some(req.session_id.clone()), cancel, prompt_text)
                        .loaded(loaded);
                    let steps = state.script.prompts.get(n).map(Vec::as_slice);
                    let flow = turn.run(steps.unwrap_or_default()).await?;
                    let reason = match flow {
                        Flow::Done => StopReason::EndTurn,
                        Flow::Stop(reason) => reason,
                        Flow::Fail(message) => {
                            note(&format!("prompt {} fails: {message}", n + 1));
                            return responder.respond_with_error(scripted_error(message));
                        }
                        Flow::Exited => return hold(responder).await,
                    };
                    note(&format!("prompt {} ends: {reason:?}", n + 1));
                    responder.respond(PromptResponse::new(reason).usage(turn.usage()))
                })
            },
            agent_client_protocol::on_receive_request!(),
        )
        .on_receive_request(
            async move |req: LoadSessionRequest, responder, cx: ConnectionTo<Client>| {
                let state = on_load.clone();
                cx.clone().spawn(async move {
                    let Some(steps) = &state.script.load_session else {
                        let refusal = agent_client_protocol::Error::method_not_found();
                        return responder.respond_with_error(refusal);
                    };
                    note(&format!("session/load: {}", req.session_id.0));
                    if let Ok(mut loaded) = state.loaded.lock() {
                        loaded.insert(req.session_id.0.to_string());
                    }
                    let (_tx, cancel) = watch::channel(false);
                    let turn = Turn::new(cx, Some(req.session_id.clone()), cancel, String::new())
                        .loaded(true);
                    match turn.run(steps).await? {
                        Flow::Fail(message) => {
                            responder.respond_with_error(scripted_error(message))
                        }
                        Flow::Exited => hold(responder).await,
                        Flow::Done | Flow::Stop(_) => responder.respond(LoadSessionResponse::new()),
                    }
                })
            },
            agent_client_protocol::on_receive_request!(),
        )
        .on_receive_notification(
            async move |n: CancelNotification, _cx| {
                note(&format!("session/cancel {}", n.session_id.0));
                on_cancel.cancel(&n.session_id);
                Ok(())
            },
            agent_client_protocol::on_receive_notification!(),
        )
        .connect_to(wire::stdio())
        .await
}
