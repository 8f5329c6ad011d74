//! Runs on pipes in run holders: an ACP agent's run is held by `kaged run-holder` like a
//! terminal run (`held.rs`), with the agent's stdin and stdout in place of a terminal, so the
//! agent (and what it remembers) outlives the daemon. The holder writes the agent's stdout to
//! the run's transcript before the daemon reads it; the daemon's loop leaves a note in the
//! holder (`Note` frames) of how far it handled the agent's protocol, which the next daemon
//! reads in the holder's Hello to take the run up where it was left.
//!
//! ```text
//! thread kaged-run-ID (follow_piped)
//!  |-- thread kaged-in-ID ..... the loop's writes (a pipe) --> Input frames --> holder
//!  |-- thread kaged-note-ID ... the loop's latest note --> Note frames --> holder
//!  |-- task: the loop (ACP client) <-- a pipe <-- pump: Output frames (from `from`)
//!  `-- Exit --> `ended` --> the loop closes its turn --> the end recorded (settle)
//! ```

use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::sync::Arc;

use kaged_holder::Client;
use kaged_session::holder::{HolderInfo, ToClient};
use kaged_session::state::{Event, State};
use serde_json::json;
use tokio::sync::watch;

use super::conversation::runner::PipedLoop;
use super::egress::EgressRun;
use super::held::{Followed, HeldControl, HolderSettings, HolderStart, settle, stderr_path};
use super::live::{Live, RunControl};
use super::runner::Runner;
use super::{Sessions, lock};
use crate::audit::AuditRecord;

/// How long the loop may take to close its turn once the run ended.
const LOOP_END_GRACE: std::time::Duration = std::time::Duration::from_secs(5);
/// Input read from the loop at once.
const INPUT_CHUNK: usize = 64 * 1024;

/// A piped run in a holder, as its loop sees it.
pub(crate) struct HeldLink {
    /// The output offset of the first byte the loop reads.
    pub from: u64,
    notes: watch::Sender<String>,
    control: Arc<HeldControl>,
}

impl HeldLink {
    /// Leave `text` for the next daemon (the newest note replaces older ones not yet sent).
    pub(crate) fn note(&self, text: String) {
        self.notes.send_replace(text);
    }

    /// Whether this daemon is letting go of the run (it stops and keeps it): the loop then
    /// ends without recording anything, for the next daemon to go on.
    pub(crate) fn letting_go(&self) -> bool {
        self.control.detached()
    }
}

impl Runner {
    /// The whole life of a run on pipes in a holder: the cage prepared as for any run and
    /// handed to `kaged run-holder` (`kind: pipes`), then followed by `make`'s loop.
    pub(crate) fn run_held_piped(
        self,
        holders: &HolderSettings,
        what: &'static str,
        make: impl FnOnce(&Runner) -> PipedLoop,
    ) {
        let Some(HolderStart {
            control,
            client,
            egress,
        }) = self.launch_held(holders, "pipes", 24, 80)
        else {
            return;
        };
        let talk = make(&self);
        follow_piped(
            &self.sessions,
            &self.live,
            &self.handle,
            Piped {
                client,
                control,
                egress,
                talk,
                from: 0,
                what,
            },
        );
    }
}

/// What following a piped run takes.
struct Piped {
    client: Result<Client, String>,
    control: Arc<HeldControl>,
    egress: Option<EgressRun>,
    talk: PipedLoop,
    from: u64,
    what: &'static str,
}

/// Follow a held run on pipes with its loop until it ends (recorded), the daemon lets go of
/// it, or its holder is lost.
fn follow_piped(sessions: &Sessions, live: &Arc<Live>, handle: &tokio::runtime::Handle, p: Piped) {
    let Piped {
        client,
        control,
        egress,
        talk,
        from,
        what,
    } = p;
    let id = live.id().to_string();
    *lock(&control.egress) = egress;
    let followed = match client {
        Ok(mut client) => {
            let sender = client.sender();
            *lock(&control.stream) = Some(sender.clone());
            match (sender.attach(from), std::io::pipe(), std::io::pipe()) {
                (Ok(()), Ok((from_holder, to_loop)), Ok((from_loop, to_holder))) => {
                    let (notes, noted) = watch::channel(String::new());
                    forward_notes(&id, sender.clone(), noted, handle.clone());
                    forward_input(&id, sender.clone(), from_loop, control.clone());
                    let link = HeldLink {
                        from,
                        notes,
                        control: control.clone(),
                    };
                    let (ended_tx, ended_rx) = watch::channel(false);
                    let task = handle.spawn({
                        let id = id.clone();
                        async move {
                            let to = tokio::net::unix::pipe::Sender::from_owned_fd(OwnedFd::from(
                                to_holder,
                            ));
                            let from = tokio::net::unix::pipe::Receiver::from_owned_fd(
                                OwnedFd::from(from_holder),
                            );
                            match (from, to) {
                                (Ok(from), Ok(to)) => talk(from, to, ended_rx, Some(link)).await,
                                (Err(e), _) | (_, Err(e)) => {
                                    tracing::error!(session = %id, error = %e, "cannot speak to the {what}");
                                }
                            }
                        }
                    });
                    let followed =
                        pump(sessions, live, handle, &mut client, &control, to_loop, from);
                    if !matches!(followed, Followed::Detached) {
                        // The loop records the end of its turn before the run's end is.
                        let _ = ended_tx.send(true);
                        let _ = handle
                            .block_on(async { tokio::time::timeout(LOOP_END_GRACE, task).await });
                    }
                    if matches!(followed, Followed::Exit(_)) {
                        let _ = sender.ack_exit();
                    }
                    followed
                }
                (Err(e), _, _) => Followed::Lost(format!("cannot attach to the holder: {e}")),
                (_, Err(e), _) | (_, _, Err(e)) => {
                    Followed::Lost(format!("cannot make the loop's pipes: {e}"))
                }
            }
        }
        Err(e) => Followed::Lost(format!("cannot reach the holder: {e}")),
    };
    let detached = matches!(followed, Followed::Detached);
    settle(sessions, live, handle, followed, &control);
    if !detached {
        log_stderr_file(sessions, &id, what);
    }
}

/// The holder's Output frames from `from` on into the loop's pipe, in order, each byte once;
/// until the run's end (or the connection's).
fn pump(
    sessions: &Sessions,
    live: &Arc<Live>,
    handle: &tokio::runtime::Handle,
    client: &mut Client,
    control: &HeldControl,
    to_loop: std::io::PipeWriter,
    from: u64,
) -> Followed {
    let mut to_loop = Some(to_loop);
    let mut at = from;
    loop {
        let frame = match client.read_frame() {
            Ok(f) => f,
            Err(_) if control.detached() => return Followed::Detached,
            Err(e) => return Followed::Lost(e.to_string()),
        };
        match frame {
            ToClient::Output { offset, bytes } => {
                if offset > at {
                    // The transcript's cap dropped output before the loop read it.
                    tracing::warn!(session = %live.id(), from = at, to = offset, "output of a run on pipes was dropped by the transcript's cap before it was read");
                    at = offset;
                }
                let seen = usize::try_from(at - offset).unwrap_or(usize::MAX);
                if seen < bytes.len() {
                    if let Some(w) = to_loop.as_mut()
                        && w.write_all(&bytes[seen..]).is_err()
                    {
                        // The loop stopped reading (it ended): the rest is only recorded.
                        to_loop = None;
                    }
                    at = offset + bytes.len() as u64;
                }
            }
            // The run's stdout closed: the loop reads to the end.
            ToClient::Eof { .. } => to_loop = None,
            ToClient::Limit { by } => {
                handle.block_on(sessions.transition(live, Event::Kill { actor: by.clone() }, &by));
            }
            ToClient::Exit(status) => return Followed::Exit(status),
            ToClient::Error { code, message } => {
                tracing::warn!(session = %live.id(), %code, %message, "the run's holder refused a frame");
            }
            ToClient::Done { .. } | ToClient::Hello(_) => {}
        }
    }
}

/// The loop's writes, read from its pipe, to the holder as Input frames.
fn forward_input(
    id: &str,
    sender: kaged_holder::Sender,
    mut from_loop: std::io::PipeReader,
    control: Arc<HeldControl>,
) {
    let _ = super::panics::spawn(
        "in",
        id,
        move || {
            let mut buf = vec![0u8; INPUT_CHUNK];
            loop {
                let n = match from_loop.read(&mut buf) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                };
                if control.detached() || sender.input(&buf[..n]).is_err() {
                    return;
                }
            }
        },
        |_| {},
    );
}

/// The loop's newest note to the holder, until the loop ends.
fn forward_notes(
    id: &str,
    sender: kaged_holder::Sender,
    mut noted: watch::Receiver<String>,
    handle: tokio::runtime::Handle,
) {
    let _ = super::panics::spawn(
        "note",
        id,
        move || {
            while handle.block_on(noted.changed()).is_ok() {
                let text = noted.borrow_and_update().clone();
                if sender.note(text).is_err() {
                    return;
                }
            }
        },
        |_| {},
    );
}

/// Lines of a piped run's stderr copied to kaged's log at its end, at most.
const STDERR_LINES: usize = 200;

/// The start of a held piped run's stderr (a cage's refusal is said there) into kaged's log;
/// the file is removed.
fn log_stderr_file(sessions: &Sessions, id: &str, what: &str) {
    let path = stderr_path(sessions, id);
    if let Ok(text) = std::fs::read(&path) {
        for line in String::from_utf8_lossy(&text).lines().take(STDERR_LINES) {
            tracing::warn!(session = %id, from = what, line = %line.chars().take(1000).collect::<String>(), "stderr");
        }
    }
    let _ = std::fs::remove_file(&path);
}

impl Sessions {
    /// Hold an ACP agent's run an earlier daemon left to its holder in memory again, and
    /// follow it with a loop that goes on from the earlier daemon's note; a run without a
    /// usable note is ended (it cannot be spoken to without its protocol state).
    pub(super) async fn take_up_piped(
        &self,
        row: kaged_store::SessionRecord,
        client: Client,
        socket: std::path::PathBuf,
        info: HolderInfo,
    ) {
        let Some(kind) = kaged_cage::RunKind::parse(&row.kind) else {
            return;
        };
        let live = self.live_of(&row, kind, State::Running { pid: info.pid }, (24, 80), None);
        let control = Arc::new(HeldControl::new(
            socket,
            info.pid,
            info.egress_dir.is_some(),
        ));
        live.set_control(Some(RunControl::Held(control.clone())));
        let handle = tokio::runtime::Handle::current();
        let (egress, egress_lost, egress_detail) = self.resume_egress(&live, &info, &handle);
        let (conversation, talk, from) = match super::acp::resume(self, &row, info.note.as_deref())
        {
            Ok(r) => (Some(r.control), Some(r.talk), r.from),
            Err(why) => {
                tracing::warn!(session = %row.id, reason = %why, "cannot take up the agent's conversation");
                (None, None, info.written)
            }
        };
        let unusable = talk.is_none();
        self.insert(live.clone(), conversation);
        self.deps()
            .audit
            .record(AuditRecord {
                kind: "session.reattached",
                success: !unusable,
                identity: Some(row.created_by.clone()),
                source: None,
                detail: json!({"session": row.id, "project": row.project, "pid": info.pid,
                    "holder_pid": info.holder_pid, "holder": info.holder, "offset": from,
                    "pipes": true, "egress": egress_detail}),
            })
            .await;
        tracing::info!(session = %row.id, pid = info.pid, offset = from, "took up an agent its holder kept while kaged was away");
        let sessions = self.clone();
        let followed = live.clone();
        let follower = control.clone();
        let spawned = super::panics::spawn(
            "run",
            &row.id,
            move || {
                let talk = talk.unwrap_or_else(|| Box::new(|_, _, _, _| Box::pin(async {})));
                follow_piped(
                    &sessions,
                    &followed,
                    &handle,
                    Piped {
                        client: Ok(client),
                        control: follower,
                        egress,
                        talk,
                        from,
                        what: "ACP agent",
                    },
                )
            },
            |_| {},
        );
        if let Err(e) = spawned {
            tracing::error!(session = %row.id, error = %e, "cannot follow a run taken up again");
        }
        if row.state == "stopping" {
            super::stop::abort(self, &live, row.reason.as_deref().unwrap_or("kaged")).await;
        } else if unusable {
            super::stop::abort(self, &live, NO_NOTE).await;
        } else if let Some(why) = egress_lost {
            tracing::error!(session = %row.id, reason = %why, "cannot serve a run's egress proxy again; the run is ended");
            super::stop::abort(self, &live, super::held::PROXY_LOST).await;
        }
    }
}

/// Why an agent's run taken up again is ended when the earlier daemon left no usable note.
const NO_NOTE: &str = "kaged: the agent's run could not be taken up: the earlier kaged left no record of where its conversation with the agent stood";
