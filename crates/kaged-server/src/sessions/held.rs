//! Terminal runs (terminals, command agents, tasks) in run holders: `kaged run-holder`
//! (crates/kaged-holder, docs/holder-protocol.md) owns the run's PTY, transcript, cgroups and
//! limits, so the run outlives the daemon. The daemon starts the holder and follows it: its
//! output into `Live` (viewers, screen), input and resizes to it, kills through it, and the
//! end it reports recorded. A daemon that stops and keeps its runs lets go of them
//! ([`HeldControl::detach`]); the next one takes them up again ([`Sessions::reattach`]) from
//! the end of their transcript, or records how they ended while it was away.
//!
//! ```text
//! thread kaged-run-ID (follow)
//!  |-- thread kaged-in-ID ...... input queue --> Input / Resize frames --> holder
//!  |-- thread kaged-scr-ID ..... screen follower (as for any run)
//!  `-- pump: Output frames --> Live::append (the holder wrote the transcript first)
//!            Limit --> Kill recorded; Exit --> extent, the end recorded, AckExit
//! ```

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kaged_holder::Client;
use kaged_session::holder::{HolderHello, HolderSpec, SignalName, StatusFile, ToClient};
use kaged_session::state::{Event, State};
use serde_json::{Value, json};

use super::egress::EgressRun;
use super::live::{LOG_CAPACITY, Live, RunControl, RunInfo};
use super::runner::{Prepared, Runner};
use super::{Input, Sessions, lock, run_name};
use crate::audit::{AuditRecord, now_ms};

/// How long a control connection (signal, kill) waits for its holder.
const CONTROL_TIMEOUT: Duration = Duration::from_secs(5);
/// How often the end of a run this daemon cannot follow is looked for.
pub(super) const UNFOLLOWED_POLL: Duration = Duration::from_secs(1);
/// How old a look into the holders' directory a status report may use.
const HOLDERS_FRESH: Duration = Duration::from_secs(90);
/// How long a daemon taking runs up again waits for each holder's Hello.
const REATTACH_TIMEOUT: Duration = Duration::from_secs(2);

/// Why a run taken up again is ended when its network went through the earlier daemon's
/// egress proxy and this daemon cannot serve that proxy again (its directory is gone or not
/// as it was, or its holder, of an older kaged, does not say which allowlist it had).
pub(super) const PROXY_LOST: &str =
    "kaged: the run's network allowlist proxy could not be served again after kaged restarted";

/// Where terminal runs are held: the `kaged` executable holders run, the directory of their
/// sockets.
#[derive(Debug, Clone)]
pub struct HolderSettings {
    pub exe: PathBuf,
    pub dir: PathBuf,
}

/// The holders' socket directory in the runtime directory.
pub fn holder_dir(runtime_dir: &Path) -> PathBuf {
    runtime_dir.join("holders")
}

/// A held run's socket.
pub(super) fn socket_of(dir: &Path, id: &str) -> PathBuf {
    dir.join(format!("{}.sock", run_name(id)))
}

/// Where a piped run's holder keeps the start of its stderr.
pub(super) fn stderr_path(sessions: &Sessions, id: &str) -> PathBuf {
    sessions
        .deps()
        .settings
        .transcripts
        .join(format!("{id}.stderr"))
}

/// Where a holder leaves how its run ended.
pub(super) fn status_path(sessions: &Sessions, id: &str) -> PathBuf {
    sessions
        .deps()
        .settings
        .transcripts
        .join(format!("{id}.status"))
}

/// What reaches a held run: its holder's socket (a connection of its own per signal or
/// kill, so never behind input), and the daemon's stream, once attached.
pub(crate) struct HeldControl {
    socket: PathBuf,
    pub(crate) pid: u32,
    /// The run's network goes through the daemon's egress proxy (stopped while no daemon
    /// runs, served again by the next one in the same directory).
    pub(crate) proxied: bool,
    /// That proxy, while this daemon serves it: stopped when the run ends (its directory
    /// removed), or let go of with the run (its directory kept for the next daemon).
    pub(super) egress: Mutex<Option<EgressRun>>,
    detached: AtomicBool,
    pub(super) stream: Mutex<Option<kaged_holder::Sender>>,
    /// The screen follower's "no more output" flag: set when the daemon lets go, so the
    /// follower ends before the daemon's runtime does.
    pump_done: Arc<AtomicBool>,
}

impl HeldControl {
    pub(super) fn new(socket: PathBuf, pid: u32, proxied: bool) -> HeldControl {
        HeldControl {
            socket,
            pid,
            proxied,
            egress: Mutex::new(None),
            detached: AtomicBool::new(false),
            stream: Mutex::new(None),
            pump_done: Arc::new(AtomicBool::new(false)),
        }
    }

    pub(crate) fn signal_all(&self, signal: kaged_spawn::Signal) -> usize {
        use kaged_spawn::Signal as S;
        let sig = match signal {
            S::SIGHUP => SignalName::HUP,
            S::SIGTERM => SignalName::TERM,
            S::SIGINT => SignalName::INT,
            S::SIGCONT => SignalName::CONT,
            other => {
                tracing::warn!(signal = %other, "a run holder forwards HUP, TERM, INT and CONT only");
                return 0;
            }
        };
        kaged_holder::client::signal(&self.socket, sig, CONTROL_TIMEOUT)
            .map_or_else(|e| self.unreached("signal", &e), |n| n as usize)
    }

    pub(crate) fn kill(&self, by: &str) -> usize {
        kaged_holder::client::kill(&self.socket, by, CONTROL_TIMEOUT)
            .map_or_else(|e| self.unreached("kill", &e), |n| n as usize)
    }

    fn unreached(&self, what: &str, e: &std::io::Error) -> usize {
        tracing::warn!(socket = %self.socket.display(), error = %e, "cannot {what} a held run");
        0
    }

    /// The daemon lets go of the run (it stops, keeping it): the holder stops streaming to
    /// it, the screen follower ends, and the run's end is for the next daemon to record.
    pub(crate) fn detach(&self, live: &Live) {
        self.detached.store(true, Ordering::SeqCst);
        if let Some(stream) = lock(&self.stream).as_ref() {
            let _ = stream.detach();
        }
        self.pump_done.store(true, Ordering::SeqCst);
        live.wake_end();
    }

    pub(super) fn detached(&self) -> bool {
        self.detached.load(Ordering::SeqCst)
    }

    /// After [`HeldControl::detach`]: stop the run's egress proxy, if this daemon serves one,
    /// and wait for its summary, keeping its directory (the cage's bind mount) for the next
    /// daemon.
    pub(crate) async fn let_go_egress(&self) {
        let egress = lock(&self.egress).take();
        if let Some(egress) = egress {
            egress.let_go().await;
        }
    }
}

/// How following a holder ended.
pub(super) enum Followed {
    Exit(StatusFile),
    Detached,
    Lost(String),
}

/// A run its holder started: how to reach it, the stream to follow it by, its egress proxy.
pub(super) struct HolderStart {
    pub control: Arc<HeldControl>,
    pub client: Result<Client, String>,
    pub egress: Option<EgressRun>,
}

impl Runner {
    /// The whole life of a terminal run in a holder, on its own thread: the cage prepared as
    /// for any run, then handed to `kaged run-holder`, which starts it.
    pub(crate) fn run_held(
        self,
        holders: &HolderSettings,
        input: std::sync::mpsc::Receiver<Input>,
        rows: u16,
        cols: u16,
    ) {
        let Some(HolderStart {
            control,
            client,
            egress,
        }) = self.launch_held(holders, "pty", rows, cols)
        else {
            return;
        };
        follow(
            &self.sessions,
            &self.live,
            &self.handle,
            client,
            &control,
            input,
            egress,
        );
    }

    /// Prepare the run's cage and hand it to a new holder (`kind` `pty` or `pipes`); `None`
    /// when the run ended before (its end is recorded).
    pub(super) fn launch_held(
        &self,
        holders: &HolderSettings,
        kind: &str,
        rows: u16,
        cols: u16,
    ) -> Option<HolderStart> {
        let (egress, prepared) = self.prepare()?;
        let id = self.live.id().to_string();
        let socket = socket_of(&holders.dir, &id);
        let Prepared {
            spec: run,
            cgroups,
            limits,
        } = prepared;
        let settings = &self.sessions.deps().settings;
        let wall_time_secs = self.wall_time(limits.as_ref());
        let mut spec = HolderSpec {
            v: 1,
            id: id.clone(),
            run_name: run_name(&id).to_string(),
            kind: kind.into(),
            stderr_path: (kind == "pipes")
                .then(|| stderr_path(&self.sessions, &id).display().to_string()),
            socket: socket.display().to_string(),
            transcript_head: self.live.transcript().display().to_string(),
            cap: super::retention::cap(settings),
            status_path: status_path(&self.sessions, &id).display().to_string(),
            argv: Vec::new(),
            prefix: Vec::new(),
            rlimits: Vec::new(),
            cgroup_procs: Vec::new(),
            cgroup_dirs: Vec::new(),
            cwd: None,
            env: Vec::new(),
            run_as: None,
            cage_fd_count: 0,
            rows,
            cols,
            deadline_ms: wall_time_secs.map(|s| now_ms().max(0) as u64 + s * 1000),
            wall_time_secs,
            watchdog_pids: limits.as_ref().and_then(|l| l.watchdog_pids),
            kill_grace_ms: super::stop::KILL_GRACE.as_millis() as u64,
            egress_dir: egress
                .as_ref()
                .and_then(|e| e.proxy.socket().parent())
                .map(|d| d.display().to_string()),
            egress_allow: match egress {
                Some(_) => self.decided.allow.clone(),
                None => Vec::new(),
            },
            daemon_version: env!("CARGO_PKG_VERSION").into(),
        };
        kaged_holder::fill_from(&mut spec, &run);
        if kind == "pipes" {
            // A piped run's transcript is its protocol's output, kept for its own loop only:
            // a later run of the same session (an ACP agent resumed) starts a new one.
            if let Err(e) = kaged_holder::transcript::remove(self.live.transcript()) {
                tracing::warn!(session = %id, error = %e, "cannot remove the earlier run's transcript");
            }
        }
        // The holder removes the groups after the reap, as the runner would.
        let groups = cgroups.release();
        spec.cgroup_dirs = groups.iter().map(|d| d.display().to_string()).collect();
        let launched = ensure_dir(&holders.dir)
            .map_err(|e| {
                format!(
                    "cannot create the run holders' directory {}: {e}",
                    holders.dir.display()
                )
            })
            // A conversation's run has no transcript made before it (its holder makes one).
            .and_then(|()| {
                ensure_dir(&settings.transcripts).map_err(|e| {
                    format!(
                        "cannot create the transcripts' directory {}: {e}",
                        settings.transcripts.display()
                    )
                })
            });
        // Under a systemd user manager, each holder in a scope of its own (kaged-runs.slice):
        // restarting kaged's unit leaves it alone. systemd-run needs the executable's path.
        let (exe, prefix) = if kaged_spawn::limit_facts().systemd_user {
            let exe = std::env::current_exe().unwrap_or_else(|_| holders.exe.clone());
            (exe, kaged_spawn::holder_scope_prefix(run_name(&id)))
        } else {
            (holders.exe.clone(), Vec::new())
        };
        let launched = launched.and_then(|()| {
            kaged_holder::launch(&exe, &spec, run.cage.as_ref(), &prefix).map_err(|e| e.to_string())
        });
        let launched = match launched {
            Ok(l) => l,
            Err(reason) => {
                drop(kaged_spawn::Cgroups::adopt(groups));
                if let Some(egress) = egress {
                    egress.stop(&self.handle);
                }
                self.fail(reason);
                return None;
            }
        };
        reap(launched.child, &id);
        let control = Arc::new(HeldControl::new(
            socket.clone(),
            launched.pid,
            egress.is_some(),
        ));
        self.live
            .set_control(Some(RunControl::Held(control.clone())));
        if self
            .transition(Event::Spawned { pid: launched.pid }, "kaged")
            .is_none()
        {
            control.kill("kaged: killed while starting");
        }
        let client = Client::connect(&socket, None).map_err(|e| e.to_string());
        Some(HolderStart {
            control,
            client,
            egress,
        })
    }

    /// The run's wall-time limit: its cage's (as planned), or its task's timeout, the lower.
    pub(super) fn wall_time(&self, limits: Option<&kaged_cage::LimitPlan>) -> Option<u64> {
        match (
            limits.and_then(|l| l.wall_time_secs),
            self.decided.plan.timeout_secs,
        ) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

/// The holders' directory, 0700.
fn ensure_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
}

/// The daemon's child, the holder, is reaped when it exits (a holder of an earlier daemon
/// is reaped by init or the service manager).
pub(super) fn reap(mut child: std::process::Child, id: &str) {
    let spawned = std::thread::Builder::new()
        .name(format!("kaged-hold-{}", id.get(..8).unwrap_or_default()))
        .spawn(move || {
            let _ = child.wait();
        });
    if let Err(e) = spawned {
        tracing::warn!(session = %id, error = %e, "cannot watch the run's holder; it is reaped when kaged exits");
    }
}

/// Follow a held run until it ends (recorded), the daemon lets go of it, or its holder is
/// lost (its status file says how the run ended, else it failed).
fn follow(
    sessions: &Sessions,
    live: &Arc<Live>,
    handle: &tokio::runtime::Handle,
    client: Result<Client, String>,
    control: &Arc<HeldControl>,
    input: std::sync::mpsc::Receiver<Input>,
    egress: Option<EgressRun>,
) {
    *lock(&control.egress) = egress;
    let followed = match client {
        Ok(mut client) => {
            let sender = client.sender();
            *lock(&control.stream) = Some(sender.clone());
            match sender.attach(live.end()) {
                Ok(()) => {
                    forward_input(live, sender.clone(), control.clone(), input);
                    let pump_done = control.pump_done.clone();
                    let screen = super::runner::start_screen(live, handle, pump_done.clone());
                    let followed = pump(sessions, live, handle, &mut client, control);
                    pump_done.store(true, Ordering::SeqCst);
                    live.wake_end();
                    if let Some(screen) = screen {
                        let _ = screen.join();
                    }
                    if matches!(followed, Followed::Exit(_)) {
                        // After the end is stored (below) would be better, but the holder
                        // waits for this only to exit; the status file stays until then.
                        let _ = sender.ack_exit();
                    }
                    followed
                }
                Err(e) => Followed::Lost(format!("cannot attach to the holder: {e}")),
            }
        }
        Err(e) => Followed::Lost(format!("cannot reach the holder: {e}")),
    };
    settle(sessions, live, handle, followed, control);
}

/// After following a held run: its egress proxy stopped (kept with the run when the daemon
/// let go of it), and its end recorded (from the holder's Exit, else from its status file,
/// else as a lost holder); nothing more when the daemon let go of it.
pub(super) fn settle(
    sessions: &Sessions,
    live: &Arc<Live>,
    handle: &tokio::runtime::Handle,
    followed: Followed,
    control: &HeldControl,
) {
    // `let_go_egress` took it already when the daemon let go, or it is taken now.
    let egress = lock(&control.egress).take();
    match (egress, &followed) {
        (Some(egress), Followed::Detached) => handle.block_on(egress.let_go()),
        (Some(egress), _) => egress.stop(handle),
        (None, _) => {}
    }
    let status_file = status_path(sessions, live.id());
    match followed {
        Followed::Detached => {}
        Followed::Exit(status) => {
            end_recorded(sessions, live, handle, &status);
            let _ = std::fs::remove_file(&status_file);
        }
        Followed::Lost(why) => match kaged_holder::status::read(&status_file) {
            Ok(Some(status)) => {
                end_recorded(sessions, live, handle, &status);
                let _ = std::fs::remove_file(&status_file);
            }
            _ => {
                tracing::warn!(session = %live.id(), reason = %why, "lost the run's holder");
                live.set_control(None);
                handle.block_on(sessions.transition(
                    live,
                    Event::Crashed {
                        reason: kaged_session::state::HOLDER_LOST_REASON.into(),
                    },
                    "kaged",
                ));
            }
        },
    }
}

/// Input and resizes from the queue to the holder, until the run ends or the daemon lets go.
fn forward_input(
    live: &Arc<Live>,
    sender: kaged_holder::Sender,
    control: Arc<HeldControl>,
    input: std::sync::mpsc::Receiver<Input>,
) {
    let (id, live) = (live.id().to_string(), live.clone());
    let _ = super::panics::spawn(
        "in",
        &id,
        move || {
            for message in input {
                super::panics::inject("writer");
                if control.detached() {
                    break;
                }
                let sent = match message {
                    Input::Bytes(bytes) => sender.input(&bytes),
                    Input::Resize(rows, cols) => {
                        live.resized(rows, cols);
                        sender.resize(rows, cols)
                    }
                };
                if sent.is_err() {
                    break;
                }
            }
        },
        |_| {},
    );
}

/// Read the holder's frames until the run's end (or the connection's).
fn pump(
    sessions: &Sessions,
    live: &Arc<Live>,
    handle: &tokio::runtime::Handle,
    client: &mut Client,
    control: &HeldControl,
) -> Followed {
    loop {
        let frame = match client.read_frame() {
            Ok(f) => f,
            Err(_) if control.detached() => return Followed::Detached,
            Err(e) => return Followed::Lost(e.to_string()),
        };
        match frame {
            ToClient::Output { offset, bytes } => {
                let end = live.end();
                // A range the transcript's cap dropped before the bytes reached us.
                live.skip_to(offset);
                let seen = usize::try_from(end.saturating_sub(offset)).unwrap_or(usize::MAX);
                if seen < bytes.len() {
                    live.append(&bytes[seen..]);
                }
                super::panics::inject("runner");
            }
            ToClient::Limit { by } => {
                handle.block_on(sessions.transition(live, Event::Kill { actor: by.clone() }, &by));
            }
            ToClient::Exit(status) => return Followed::Exit(status),
            ToClient::Error { code, message } => {
                tracing::warn!(session = %live.id(), %code, %message, "the run's holder refused a frame");
            }
            ToClient::Eof { .. } | ToClient::Done { .. } | ToClient::Hello(_) => {}
        }
    }
}

/// The event a holder's status file ends its run with.
fn end_event(status: &StatusFile) -> Event {
    match &status.exit {
        Some(exit) => match exit.signal {
            Some(sig) => Event::exit_signal(sig),
            None => Event::exit_code(exit.code),
        },
        None => Event::Crashed {
            reason: status
                .error
                .clone()
                .unwrap_or_else(|| kaged_session::state::HOLDER_LOST_REASON.into()),
        },
    }
}

/// Record the end a holder reported: the transcript's extent, then the end (a kill the
/// holder made, a limit or a kill while the daemon was away, first, so it is `killed`).
fn end_recorded(
    sessions: &Sessions,
    live: &Arc<Live>,
    handle: &tokio::runtime::Handle,
    status: &StatusFile,
) {
    if let Err(e) = handle.block_on(sessions.deps().store.set_transcript_extent(
        live.id().to_string(),
        status.output_bytes,
        status.dropped,
    )) {
        tracing::error!(session = %live.id(), error = %e, "cannot record the transcript's extent");
    }
    live.set_control(None);
    if let Some(by) = &status.killed_by
        && matches!(live.state(), State::Running { .. })
    {
        handle.block_on(sessions.transition(live, Event::Kill { actor: by.clone() }, by));
    }
    handle.block_on(sessions.transition(live, end_event(status), "kaged"));
}

impl Sessions {
    /// Take up the terminal runs an earlier daemon left to their holders (before "ready"):
    /// each answering holder's run is held in memory again and followed from the end of its
    /// transcript (viewers resume from their offset: no gap, no duplicate); a run that ended
    /// meanwhile is recorded from its status file, with its real exit and end time. Runs with
    /// neither are left to [`Sessions::recover`]. Returns how many were taken up.
    pub async fn reattach(&self, holders: &HolderSettings) -> usize {
        let rows = match self.deps().store.live_sessions().await {
            Ok(rows) => rows,
            Err(e) => {
                tracing::error!(error = %e, "cannot list unfinished sessions to take them up again");
                return 0;
            }
        };
        let mut taken = 0;
        for row in rows
            .into_iter()
            .filter(|r| r.created_at_ms < self.started_at_ms())
        {
            let socket = socket_of(&holders.dir, &row.id);
            let answered = if socket.exists() {
                let at = socket.clone();
                tokio::task::spawn_blocking(move || Client::connect(&at, Some(REATTACH_TIMEOUT)))
                    .await
                    .map_err(|e| std::io::Error::other(e.to_string()))
                    .and_then(|r| r)
            } else {
                Err(std::io::ErrorKind::NotFound.into())
            };
            match answered {
                Ok(client) => match client.hello().clone() {
                    HolderHello::Accepted(info) if info.id == row.id => {
                        let _ = client.set_read_timeout(None);
                        self.take_up(row, client, socket, *info).await;
                        taken += 1;
                    }
                    HolderHello::Accepted(info) => tracing::error!(
                        session = %row.id, holder_says = %info.id,
                        "the holder at this session's socket holds another run; left alone"
                    ),
                    HolderHello::Refused { refused, versions } => {
                        tracing::error!(
                            session = %row.id, %refused, ?versions,
                            "this session's holder speaks another protocol version; the run goes on, but this kaged cannot follow it (`kaged session kill` still ends it)"
                        );
                        self.keep_unfollowed(row, socket, versions).await;
                    }
                },
                Err(_) => self.ended_while_away(&row).await,
            }
        }
        taken
    }

    /// The run holders in the holders' directory (`kaged status`, from the last look, at most
    /// [`HOLDERS_FRESH`] old): how many runs this daemon follows in one; holders of runs it
    /// does not know (a wiped database, another daemon's data directory), which are reported
    /// and never killed or taken up; and holders that speak no protocol version this daemon
    /// does.
    pub async fn holders_report(&self) -> Value {
        let Some(holders) = self.deps().settings.holders.clone() else {
            return Value::Null;
        };
        let followed = self
            .running()
            .iter()
            .filter(|l| matches!(l.control(), Some(RunControl::Held(_))))
            .count();
        let seen = lock(self.shared_holders_seen()).clone();
        let found = match seen {
            Some((at, found)) if at.elapsed() < HOLDERS_FRESH => found,
            _ => self.look_for_holders().await,
        };
        let mut unknown = Vec::new();
        let mut incompatible = Vec::new();
        // A holder removes its socket when it ends: one gone since the look is not reported.
        for f in found.into_iter().filter(|f| f.socket.exists()) {
            match f.hello {
                HolderHello::Accepted(info) => {
                    // In memory (followed, or ended and not yet forgotten): this daemon's.
                    if self.get(&info.id).is_none() {
                        unknown.push(json!({"session": info.id, "pid": info.pid,
                            "holder_pid": info.holder_pid, "holder": info.holder,
                            "started_at_ms": info.started_at_ms, "socket": f.socket}));
                    }
                }
                HolderHello::Refused { refused, versions } => incompatible
                    .push(json!({"socket": f.socket, "refused": refused, "versions": versions})),
            }
        }
        json!({"dir": holders.dir, "followed": followed, "unknown": unknown, "incompatible": incompatible})
    }

    /// Ask every holder in the holders' directory who it is (on threads, a short timeout
    /// each), for [`Sessions::holders_report`]; housekeeping does it every minute.
    pub(crate) async fn look_for_holders(&self) -> Vec<kaged_holder::Found> {
        let Some(holders) = self.deps().settings.holders.clone() else {
            return Vec::new();
        };
        let found = tokio::task::spawn_blocking(move || kaged_holder::discover(&holders.dir))
            .await
            .unwrap_or_default();
        *lock(self.shared_holders_seen()) = Some((std::time::Instant::now(), found.clone()));
        found
    }

    /// Hold a run an earlier daemon started in memory again and follow it.
    async fn take_up(
        &self,
        row: kaged_store::SessionRecord,
        client: Client,
        socket: PathBuf,
        info: kaged_session::holder::HolderInfo,
    ) {
        if info.kind == "pipes" {
            return self.take_up_piped(row, client, socket, info).await;
        }
        let Some(kind) = kaged_cage::RunKind::parse(&row.kind) else {
            return;
        };
        let (input_tx, input_rx) = std::sync::mpsc::sync_channel(super::start::INPUT_QUEUE);
        let live = self.live_of(
            &row,
            kind,
            State::Running { pid: info.pid },
            (info.rows, info.cols),
            Some(input_tx),
        );
        live.skip_to(info.written);
        let control = Arc::new(HeldControl::new(
            socket,
            info.pid,
            info.egress_dir.is_some(),
        ));
        live.set_control(Some(RunControl::Held(control.clone())));
        self.insert(live.clone(), None);
        let handle = tokio::runtime::Handle::current();
        let (egress, egress_lost, egress_detail) = self.resume_egress(&live, &info, &handle);
        self.deps()
            .audit
            .record(AuditRecord {
                kind: "session.reattached",
                success: true,
                identity: Some(row.created_by.clone()),
                source: None,
                detail: json!({"session": row.id, "project": row.project, "pid": info.pid,
                    "holder_pid": info.holder_pid, "holder": info.holder, "offset": info.written,
                    "egress": egress_detail}),
            })
            .await;
        tracing::info!(session = %row.id, pid = info.pid, offset = info.written, "took up a run its holder kept while kaged was away");
        let sessions = self.clone();
        let followed = live.clone();
        let spawned = super::panics::spawn(
            "run",
            &row.id,
            move || {
                follow(
                    &sessions,
                    &followed,
                    &handle,
                    Ok(client),
                    &control,
                    input_rx,
                    egress,
                )
            },
            |_| {},
        );
        if let Err(e) = spawned {
            tracing::error!(session = %row.id, error = %e, "cannot follow a run taken up again");
        }
        // A kill that was under way when the daemon went is finished now; a run whose
        // egress proxy cannot be served again has no network it may use: it is ended.
        if row.state == "stopping" {
            super::stop::abort(self, &live, row.reason.as_deref().unwrap_or("kaged")).await;
        } else if let Some(why) = egress_lost {
            tracing::error!(session = %row.id, reason = %why, "cannot serve a run's egress proxy again; the run is ended");
            super::stop::abort(self, &live, PROXY_LOST).await;
        }
    }

    /// A run an earlier daemon recorded (`row`), held in memory again in `state`.
    pub(super) fn live_of(
        &self,
        row: &kaged_store::SessionRecord,
        kind: kaged_cage::RunKind,
        state: State,
        size: (u16, u16),
        input: Option<std::sync::mpsc::SyncSender<Input>>,
    ) -> Arc<Live> {
        Arc::new(Live::with_state(
            RunInfo {
                id: row.id.clone(),
                project: row.project.clone(),
                kind,
                name: row.name.clone(),
                created_by: row.created_by.clone(),
                transcript: self.transcript_path(&row.id),
            },
            state,
            size,
            input,
            LOG_CAPACITY,
        ))
    }

    /// A taken-up run whose network went through the earlier daemon's egress proxy: the same
    /// allowlist served again in the directory its cage has bound. The proxy, or why it
    /// could not be served again (the run is then ended), and the audit's word for it.
    pub(super) fn resume_egress(
        &self,
        live: &Arc<Live>,
        info: &kaged_session::holder::HolderInfo,
        handle: &tokio::runtime::Handle,
    ) -> (Option<EgressRun>, Option<String>, Value) {
        let Some(dir) = info.egress_dir.as_deref() else {
            return (None, None, Value::Null);
        };
        match EgressRun::resume(
            self,
            live,
            Path::new(dir),
            &info.egress_allow,
            info.pid,
            handle,
        ) {
            Ok(egress) => (Some(egress), None, json!("resumed")),
            Err(why) => (None, Some(why.clone()), json!({"lost": why})),
        }
    }
}
