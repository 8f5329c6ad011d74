//! The runner: the whole life of one run after its start was decided, on a thread of its own
//! (`kaged-run-ID`, which lives as long as the run: `setpriv --pdeathsig` ties the spawned
//! process to it). It starts the egress proxy, builds the cage, spawns on a PTY, starts the
//! helpers below, pumps the output, reaps the process and records the end.
//!
//! ```text
//! thread kaged-run-ID (Runner::run)
//!  |-- [allowlist only] egress proxy tasks (egress.rs, kaged_egress on a Unix socket)
//!  |      --> decisions (bounded queue) --> task audit_egress --> audit trail
//!  |-- kaged_spawn::caged --> spawn_pty --> Killer put in Live (kills reach the run by it)
//!  |-- task wall-clock (stop.rs) ........... limit reached --> stop::abort --> Kill
//!  |-- thread kaged-pid-ID (stop.rs) ....... [no cgroup only] count > limit --> SIGKILL, Kill
//!  |-- thread kaged-in-ID (write_input) <-- input queue (sync_channel, 64) <-- Live::send_input
//!  |      bytes and resizes to the PTY                                        (pty.rs viewers)
//!  |-- thread kaged-scr-ID (screen.rs) <-- `end` watch: Live::catch_up once output is quiet
//!  `-- pump, on this thread:
//!         PTY read --> transcript::Writer (disk, first)
//!                  --> Live::append (OutputLog) --> `end` watch --> viewers (pty.rs)
//!                                                               --> screen follower
//!      at EOF: extent stored in the row; pump_done set and `end` woken; wait (reap); the
//!      screen follower joined; egress stopped (final summary); cgroups removed; killer
//!      cleared; Exit.
//!
//! Every change of state (Start, Spawned, Exit, SpawnFailed here; Kill from outside) goes
//! through Sessions::transition --> store, then the events broadcast (store_and_publish).
//! ```
//!
//! A kill from outside (`stop::abort`, the HTTP kill, shutdown) goes through the run's
//! `Killer`, which the runner puts in `Live` right after the spawn.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use kaged_cage::Launch;
use kaged_session::state::{Event, State, StateKind};
use serde_json::{Value, json};

use super::egress::EgressRun;
use super::live::Live;
use super::start::Decided;
use super::{Input, Sessions};
use crate::audit::AuditRecord;

/// Bytes read from the PTY at once.
const READ_CHUNK: usize = 64 * 1024;

/// A run ready to spawn, and what must live as long as it.
pub(super) struct Prepared {
    pub(super) spec: kaged_spawn::Spec,
    pub(super) cgroups: kaged_spawn::Cgroups,
    pub(super) limits: Option<kaged_cage::LimitPlan>,
}

pub(crate) struct Runner {
    pub(super) sessions: Sessions,
    pub(super) live: Arc<Live>,
    pub(super) decided: Decided,
    pub(super) handle: tokio::runtime::Handle,
}

impl Runner {
    pub(crate) fn new(
        sessions: Sessions,
        live: Arc<Live>,
        decided: Decided,
        handle: tokio::runtime::Handle,
    ) -> Runner {
        Runner {
            sessions,
            live,
            decided,
            handle,
        }
    }

    pub(super) fn transition(&self, event: Event, actor: &str) -> Option<State> {
        self.handle
            .block_on(self.sessions.transition(&self.live, event, actor))
    }

    fn audit(&self, kind: &'static str, success: bool, detail: Value) {
        self.handle
            .block_on(self.sessions.deps().audit.record(AuditRecord {
                kind,
                success,
                identity: Some(self.live.info().created_by.clone()),
                source: None,
                detail,
            }));
    }

    /// The whole life of the run, on its own thread (which lives as long as the run: the
    /// spawned process dies with it, see `kaged_spawn`).
    pub(crate) fn run(
        self,
        mut transcript: super::transcript::Writer,
        input: std::sync::mpsc::Receiver<Input>,
        rows: u16,
        cols: u16,
    ) {
        let Some((egress, prepared)) = self.prepare() else {
            return;
        };
        let run = match kaged_spawn::spawn_pty(&prepared.spec, rows, cols) {
            Ok(r) => r,
            Err(e) => return self.fail(e.to_string()),
        };
        let kaged_spawn::PtyRun {
            terminal,
            killer,
            waiter,
        } = run;
        self.spawned(&killer, prepared.limits.as_ref());
        let writer_terminal = terminal.clone();
        let live = self.live.clone();
        let _ = super::panics::spawn(
            "in",
            self.live.id(),
            move || write_input(&writer_terminal, &live, input),
            |_| {},
        );
        let pump_done = Arc::new(AtomicBool::new(false));
        let screen = start_screen(&self.live, &self.handle, pump_done.clone());
        self.pump(&terminal, &mut transcript);
        super::retention::record_extent(
            &self.sessions.deps().store,
            self.live.id(),
            &transcript,
            &self.handle,
        );
        pump_done.store(true, Ordering::SeqCst);
        self.live.wake_end();
        let exit = waiter.wait();
        if let Some(screen) = screen {
            let _ = screen.join();
        }
        self.finish(exit, egress, prepared);
    }

    /// Everything before the spawn, shared by PTY runs and conversations: `Start`, the egress
    /// proxy, the cage (its limits audited). `None` when the run failed (recorded) or was
    /// killed meanwhile: nothing of the command may start.
    pub(super) fn prepare(&self) -> Option<(Option<EgressRun>, Prepared)> {
        self.transition(Event::Start, "kaged")?; // None: killed while queued.
        let egress = match self.start_egress() {
            Ok(e) => e,
            Err(reason) => {
                self.fail(reason);
                return None;
            }
        };
        let prepared = match self.spec(egress.as_ref().map(|e| e.proxy.socket())) {
            Ok(s) => s,
            Err(reason) => {
                self.fail(reason);
                return None;
            }
        };
        if let Some(plan) = &prepared.limits
            && !(plan.enforced.is_empty() && plan.unenforced.is_empty())
        {
            self.audit(
                "cage.limits",
                plan.unenforced.is_empty(),
                json!({"session": self.live.id(), "enforced": plan.enforced, "unenforced": plan.unenforced}),
            );
        }
        (self.live.state().kind() == StateKind::Starting).then_some((egress, prepared))
    }

    /// Right after the spawn: the killer where kills find it, `Spawned` (a kill that raced
    /// the spawn kills it now), the wall clock and, without a cgroup, the pids watchdog.
    pub(super) fn spawned(
        &self,
        killer: &kaged_spawn::Killer,
        limits: Option<&kaged_cage::LimitPlan>,
    ) {
        self.live
            .set_control(Some(super::live::RunControl::Local(killer.clone())));
        if self
            .transition(Event::Spawned { pid: killer.pid() }, "kaged")
            .is_none()
        {
            killer.kill();
        }
        self.start_wall_clock(limits);
        if let Some(pids) = limits.and_then(|l| l.watchdog_pids) {
            super::stop::start_pids_watchdog(
                &self.sessions,
                &self.live,
                killer,
                pids,
                &self.handle,
            );
        }
    }

    /// After the reap: the egress proxy's final summary, the cgroups removed, the killer
    /// cleared, then the exit recorded (and audited by the transition, or by the kill that
    /// ended the run first).
    pub(super) fn finish(
        &self,
        exit: kaged_spawn::Exit,
        egress: Option<EgressRun>,
        prepared: Prepared,
    ) {
        if let Some(egress) = egress {
            egress.stop(&self.handle);
        }
        drop(prepared.cgroups);
        self.live.set_control(None);
        let event = match exit.signal() {
            Some(sig) => Event::exit_signal(sig),
            None => Event::exit_code(exit.code()),
        };
        self.transition(event, "kaged");
    }

    pub(super) fn fail(&self, reason: String) {
        tracing::warn!(session = %self.live.id(), %reason, "run could not start");
        // Audited by the transition (or by the kill that ended the run first).
        self.transition(Event::SpawnFailed { reason }, "kaged");
    }

    fn spec(&self, egress_socket: Option<&Path>) -> Result<Prepared, String> {
        let d = &self.decided;
        // Runs on pipes (a conversation's executor, an ACP agent) have no terminal.
        let conversation = d.conversation.is_some() || d.acp.is_some();
        let mut env = if conversation {
            vec![("TERM".to_string(), "dumb".to_string())]
        } else {
            vec![
                ("TERM".to_string(), "xterm-256color".to_string()),
                ("COLORTERM".to_string(), "truecolor".to_string()),
            ]
        };
        env.push(("KAGED_SESSION".into(), self.live.id().to_string()));
        env.extend(d.granted_env.iter().cloned());
        if d.uncaged_because.is_some() {
            return Ok(Prepared {
                spec: kaged_spawn::Spec::uncaged(
                    d.plan.command.clone(),
                    d.root.join(&d.plan.cwd),
                    &env,
                ),
                cgroups: Default::default(),
                limits: None,
            });
        }
        let settings = &self.sessions.deps().settings;
        let run = kaged_spawn::caged(&kaged_spawn::CageRequest {
            root: &d.root,
            helper: settings
                .helper
                .as_deref()
                .unwrap_or(Path::new("/proc/self/exe")),
            policy: &d.policy,
            default_limits: &settings.default_limits,
            launch: Launch {
                cwd: &d.plan.cwd,
                command: &d.plan.command,
                env: &env,
                own_terminal: !conversation,
                egress: egress_socket,
            },
            name: super::run_name(self.live.id()),
            run_as: d.run_as.map(|r| r.identity),
            project: &d.project,
            grants: &d.granted_paths,
        })
        .map_err(|e| e.to_string())?;
        Ok(Prepared {
            spec: run.spec,
            cgroups: run.cgroups,
            limits: Some(run.limits),
        })
    }

    /// Read the PTY until the run closes it: transcript first, then memory, then viewers.
    fn pump(&self, terminal: &kaged_spawn::Terminal, transcript: &mut super::transcript::Writer) {
        let mut buf = vec![0u8; READ_CHUNK];
        let mut transcript_ok = true; // Reported once.
        loop {
            let n = match terminal.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            let chunk = &buf[..n];
            if transcript_ok && let Err(e) = transcript.write_all(chunk) {
                transcript_ok = false;
                tracing::error!(session = %self.live.id(), error = %e, "cannot write the transcript; output is kept in memory only from now on");
            }
            self.live.append(chunk);
            super::panics::inject("runner");
        }
    }

    fn start_wall_clock(&self, limits: Option<&kaged_cage::LimitPlan>) {
        if let Some(secs) = self.wall_time(limits) {
            super::stop::start_wall_clock(&self.sessions, &self.live, secs, &self.handle);
        }
    }

    fn start_egress(&self) -> Result<Option<EgressRun>, String> {
        if self.decided.allow.is_empty() {
            return Ok(None);
        }
        EgressRun::start(
            &self.sessions,
            &self.live,
            &self.decided.allow,
            &self.handle,
        )
        .map(Some)
    }
}

/// The screen model follows the output on a thread of its own, in large batches: the
/// terminal parser is slower than a PTY, and the run must never wait for it. It may lag
/// behind during a flood (then it reads the transcript); a snapshot is always of a
/// consistent point (its offset), and viewers stream from there.
pub(super) fn start_screen(
    live: &Arc<Live>,
    handle: &tokio::runtime::Handle,
    pump_done: Arc<AtomicBool>,
) -> Option<std::thread::JoinHandle<()>> {
    let (live, handle) = (live.clone(), handle.clone());
    let id = live.id().to_string();
    super::panics::spawn(
        "scr",
        &id,
        move || super::screen::follow_screen(&live, &handle, &pump_done),
        |_| {},
    )
    .ok()
}

/// The input writer: bytes and resizes from the queue to the PTY, until the run ends or the
/// terminal refuses them.
fn write_input(
    terminal: &kaged_spawn::Terminal,
    live: &Live,
    input: std::sync::mpsc::Receiver<Input>,
) {
    for message in input {
        super::panics::inject("writer");
        let result = match message {
            Input::Bytes(bytes) => terminal.write_all(&bytes),
            Input::Resize(rows, cols) => {
                live.resized(rows, cols);
                terminal.resize(rows, cols)
            }
        };
        if result.is_err() {
            break;
        }
    }
}
