//! The holder loop: one thread, one `poll` over the PTY master, the listening socket, at most
//! [`MAX_CLIENTS`] clients, the run's pidfd (once the terminal closed) and a signalfd. It has
//! no timeout but the wall-time deadline, a kill's grace and the pids watchdog (hosts without
//! cgroups only), so an idle holder never wakes.
//!
//! Output goes to the transcript first, then to attached clients at their own pace (from the
//! newest bytes in memory, else read back from the files): nobody attached means the file just
//! grows, and memory stays bounded. Input waits in a bounded buffer; while it is full the
//! client's socket is not read, so backpressure reaches the sender.

use std::io::Write;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixListener;
use std::path::Path;
use std::time::{Duration, Instant};

use kaged_session::holder::{
    ExitStatus, HeldState, HolderHello, HolderInfo, HolderSpec, StatusFile, ToClient, ToHolder,
    error_code,
};
use kaged_spawn::{CageFds, Cgroups, Killer, Waiter};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use rustix::event::{PollFd, PollFlags};

use crate::conn::{Conn, Got};
use crate::io::{Io, start_run};
use crate::transcript::Writer;

/// Clients served at once (the daemon's stream, a control connection, discovery, spare).
pub const MAX_CLIENTS: usize = 4;
/// Output read from the terminal at once, and the most one Output frame carries.
const CHUNK: usize = 64 * 1024;
/// Input waiting for the terminal at most (beyond one frame) before clients are not read.
const INPUT_PENDING: usize = 64 * 1024;
/// How many times one turn of the loop feeds clients whose sockets took everything.
const FEEDS_PER_TURN: usize = 16;
/// How long a holder whose run ended waits for its attached clients to take the Exit.
const EXIT_WAIT: Duration = Duration::from_secs(60);

/// Why a holder could not start its run.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("{0}")]
    Setup(String),
    #[error(transparent)]
    Spawn(#[from] kaged_spawn::SpawnError),
}

pub(crate) fn setup(what: &str, e: impl std::fmt::Display) -> ServeError {
    ServeError::Setup(format!("{what}: {e}"))
}

pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// What this holder calls itself (`kaged X.Y.Z`; debug builds obey
/// `KAGED_TEST_HOLDER_VERSION`).
pub fn holder_version() -> String {
    #[cfg(debug_assertions)]
    if let Ok(v) = std::env::var("KAGED_TEST_HOLDER_VERSION") {
        return v;
    }
    format!("kaged {}", env!("CARGO_PKG_VERSION"))
}

/// The protocol versions this holder speaks (debug builds obey `KAGED_TEST_HOLDER_PROTOCOL`).
pub fn supported_versions() -> Vec<u32> {
    #[cfg(debug_assertions)]
    if let Some(v) = std::env::var("KAGED_TEST_HOLDER_PROTOCOL")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        return vec![v];
    }
    kaged_session::holder::SUPPORTED.to_vec()
}

/// Hold the run `spec` describes: bind its socket, start it, say so on `ready` (one JSON
/// line, then closed), serve it until it ended and its clients took the end. Returns the
/// status written. `cage` are the cage's descriptors (`spec.cage_fd_count` of them).
pub fn serve(
    spec: &HolderSpec,
    cage: Option<CageFds>,
    ready: OwnedFd,
) -> Result<StatusFile, ServeError> {
    let mut ready = std::fs::File::from(ready);
    match Holder::start(spec, cage) {
        Ok(mut holder) => {
            let line = serde_json::json!({
                "ok": true,
                "holder_pid": std::process::id(),
                "pid": holder.killer.pid(),
            });
            let _ = writeln!(ready, "{line}");
            drop(ready);
            kaged_spawn::release_free_memory();
            Ok(holder.run())
        }
        Err(e) => {
            crate::log::append(Path::new(&spec.socket), &format!("cannot start: {e}"));
            let _ = writeln!(ready, "{}", serde_json::json!({ "error": e.to_string() }));
            Err(e)
        }
    }
}

/// The newest output, kept in memory so an attached client rarely reads the files.
struct Recent {
    start: u64,
    bytes: Vec<u8>,
}

impl Recent {
    fn push(&mut self, data: &[u8]) {
        self.bytes.extend_from_slice(data);
        if self.bytes.len() > 2 * CHUNK {
            let cut = self.bytes.len() - CHUNK;
            self.bytes.drain(..cut);
            self.start += cut as u64;
        }
    }
}

struct Holder<'a> {
    spec: &'a HolderSpec,
    listener: UnixListener,
    signals: SignalFd,
    own: crate::peer::Own,
    io: Io,
    killer: Killer,
    waiter: Waiter,
    cgroups: Option<Cgroups>,
    writer: Writer,
    recent: Recent,
    input: Vec<u8>,
    clients: Vec<Conn>,
    rows: u16,
    cols: u16,
    started_at_ms: u64,
    eof: bool,
    exit: Option<kaged_spawn::Exit>,
    killed_by: Option<String>,
    deadline: Option<Instant>,
    kill_at: Option<Instant>,
    status: Option<StatusFile>,
    ended_at: Option<Instant>,
    error: Option<String>,
    version: String,
    supported: Vec<u32>,
    /// The last client's note, for the next one.
    note: Option<String>,
    /// The run's egress directory, held while the holder lives: a daemon's startup sweep
    /// leaves it (the cage has it bound; the daemon serves the run's proxy there again).
    _egress_dir: Option<OwnedFd>,
}

fn bind(path: &Path) -> Result<UnixListener, ServeError> {
    use std::os::unix::fs::PermissionsExt;
    if path.as_os_str().len() > 107 {
        return Err(ServeError::Setup(format!(
            "the holder socket path {} is longer than a Unix socket allows (107 bytes); use a shorter KAGED_HOME or runtime directory",
            path.display()
        )));
    }
    if std::os::unix::net::UnixStream::connect(path).is_ok() {
        return Err(ServeError::Setup(format!(
            "another holder already serves {}",
            path.display()
        )));
    }
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(setup("cannot remove a stale holder socket", e));
        }
        _ => {}
    }
    let listener = UnixListener::bind(path)
        .map_err(|e| setup(&format!("cannot bind {}", path.display()), e))?;
    // The directory is 0700 already, so nobody could connect before this.
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| setup("cannot make the holder socket 0600", e))?;
    listener
        .set_nonblocking(true)
        .map_err(|e| setup("cannot make the holder socket non-blocking", e))?;
    Ok(listener)
}

impl<'a> Holder<'a> {
    fn start(spec: &'a HolderSpec, cage: Option<CageFds>) -> Result<Holder<'a>, ServeError> {
        if spec.kind != "pty" && spec.kind != "pipes" {
            return Err(ServeError::Setup(format!(
                "this holder runs PTY runs and runs on pipes, not `{}`",
                spec.kind
            )));
        }
        // Taken from a signalfd, never delivered: a TERM ends the run gracefully, HUP is
        // ignored. (A started process gets the default mask back.)
        let mut mask = SigSet::empty();
        for s in [Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP] {
            mask.add(s);
        }
        mask.thread_block()
            .map_err(|e| setup("cannot block signals", e))?;
        let signals = SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
            .map_err(|e| setup("cannot open a signalfd", e))?;
        let own = crate::peer::Own::read().map_err(|e| setup("cannot read own namespaces", e))?;
        let head = Path::new(&spec.transcript_head);
        let writer = if head.exists() {
            Writer::open_empty(head, spec.cap)
        } else {
            Writer::create(head, spec.cap)
        }
        .map_err(|e| setup(&format!("cannot open the transcript {}", head.display()), e))?;
        let cgroups = Cgroups::adopt(spec.cgroup_dirs.iter().map(Into::into).collect());
        let socket = Path::new(&spec.socket);
        let listener = bind(socket)?;
        // Not fatal: without the hold, the run goes on, but a sweep may take its egress
        // directory while no daemon runs, and the next daemon then ends the run.
        let egress_dir = spec.egress_dir.as_deref().and_then(|dir| {
            kaged_spawn::hold_egress_dir(Path::new(dir))
                .map_err(|e| {
                    crate::log::append(
                        socket,
                        &format!("cannot hold the egress directory {dir}: {e}"),
                    )
                })
                .ok()
        });
        let started_at_ms = now_ms();
        let (io, killer, waiter) = match start_run(spec, cage) {
            Ok(run) => run,
            Err(e) => {
                let _ = std::fs::remove_file(socket);
                return Err(e);
            }
        };
        let deadline = spec
            .deadline_ms
            .map(|d| Instant::now() + Duration::from_millis(d.saturating_sub(now_ms())));
        Ok(Holder {
            spec,
            listener,
            signals,
            own,
            io,
            killer,
            waiter,
            cgroups: Some(cgroups),
            writer,
            recent: Recent {
                start: 0,
                bytes: Vec::new(),
            },
            input: Vec::new(),
            clients: Vec::new(),
            rows: spec.rows,
            cols: spec.cols,
            started_at_ms,
            eof: false,
            exit: None,
            killed_by: None,
            deadline,
            kill_at: None,
            status: None,
            ended_at: None,
            error: None,
            version: holder_version(),
            supported: supported_versions(),
            note: None,
            _egress_dir: egress_dir,
        })
    }

    fn written(&self) -> u64 {
        self.writer.written()
    }

    /// Done once the run ended and every attached client took the Exit (or left).
    fn finished(&self) -> bool {
        let Some(ended) = self.ended_at else {
            return false;
        };
        let waiting = self
            .clients
            .iter()
            .any(|c| !c.closed && c.cursor.is_some() && !c.acked);
        !waiting || ended.elapsed() >= EXIT_WAIT
    }

    fn run(&mut self) -> StatusFile {
        let mut buf = vec![0u8; CHUNK];
        while !self.finished() {
            // A client whose socket took everything may be owed more (the next chunk, Eof,
            // Exit): feed it again rather than wait for an event that may never come (a run
            // that ended makes none). Bounded, so the terminal and other clients get a turn.
            for _ in 0..FEEDS_PER_TURN {
                self.feed_clients();
                for c in &mut self.clients {
                    c.flush();
                }
                if !self.owes_an_idle_client() {
                    break;
                }
            }
            self.clients.retain(|c| !c.closed);
            if self.finished() {
                break;
            }
            let busy = self.owes_an_idle_client();
            self.wait_and_handle(&mut buf, busy);
            self.timers();
        }
        let _ = std::fs::remove_file(&self.spec.socket);
        self.status.clone().unwrap_or_else(|| self.status_now())
    }

    /// Whether a client with nothing queued is still due output, Eof or Exit.
    fn owes_an_idle_client(&self) -> bool {
        let written = self.written();
        self.clients.iter().any(|c| {
            !c.closed
                && c.idle()
                && c.cursor.is_some_and(|cursor| {
                    cursor < written
                        || (self.eof && !c.eof_sent)
                        || (self.status.is_some() && c.eof_sent && !c.exit_sent)
                })
        })
    }

    /// Poll and handle what is ready; `busy`: a client is owed more, so do not sleep.
    fn wait_and_handle(&mut self, buf: &mut [u8], busy: bool) {
        let reaped = self.exit.is_some();
        let read_clients = self.input.len() < INPUT_PENDING;
        let mut fds = vec![
            PollFd::new(&self.signals, PollFlags::IN),
            PollFd::new(
                &self.listener,
                if self.clients.len() < MAX_CLIENTS {
                    PollFlags::IN
                } else {
                    PollFlags::empty()
                },
            ),
        ];
        // A closed terminal and a reaped pidfd would report HUP for ever: they leave the set.
        let output_at = (!self.eof).then(|| {
            fds.push(PollFd::from_borrowed_fd(self.io.output_fd(), PollFlags::IN));
            fds.len() - 1
        });
        // (For a terminal the same descriptor again: poll allows it.)
        let input_at = (!self.eof && !self.input.is_empty()).then(|| {
            fds.push(PollFd::from_borrowed_fd(self.io.input_fd(), PollFlags::OUT));
            fds.len() - 1
        });
        let stderr_at = self.io.stderr_fd().map(|fd| {
            fds.push(PollFd::from_borrowed_fd(fd, PollFlags::IN));
            fds.len() - 1
        });
        let pidfd_at = (self.eof && !reaped).then(|| {
            fds.push(PollFd::from_borrowed_fd(self.waiter.pidfd(), PollFlags::IN));
            fds.len() - 1
        });
        let clients_at = fds.len();
        for c in &self.clients {
            let mut f = PollFlags::empty();
            if read_clients {
                f |= PollFlags::IN;
            }
            if c.wants_write() {
                f |= PollFlags::OUT;
            }
            fds.push(PollFd::from_borrowed_fd(c.fd(), f));
        }
        let timeout = if busy {
            Some(rustix::event::Timespec {
                tv_sec: 0,
                tv_nsec: 0,
            })
        } else {
            self.next_timer().map(|at| {
                let d = at.saturating_duration_since(Instant::now());
                rustix::event::Timespec {
                    tv_sec: d.as_secs() as i64,
                    tv_nsec: i64::from(d.subsec_nanos()),
                }
            })
        };
        if rustix::event::poll(&mut fds, timeout.as_ref()).is_err() {
            // EINTR: go round again.
            return;
        }
        let ready: Vec<PollFlags> = fds.iter().map(PollFd::revents).collect();
        drop(fds);
        let any = |f: PollFlags| !f.is_empty();
        if any(ready[0]) {
            self.take_signals();
        }
        if any(ready[1]) {
            self.accept();
        }
        if output_at.is_some_and(|o| any(ready[o])) {
            self.read_output(buf);
        }
        if input_at.is_some_and(|i| any(ready[i])) {
            self.write_input();
        }
        if stderr_at.is_some_and(|e| any(ready[e])) {
            self.io.drain_stderr(buf);
        }
        if pidfd_at.is_some_and(|p| any(ready[p])) {
            self.reap();
        }
        for (i, flags) in ready[clients_at..].iter().enumerate() {
            if flags.intersects(PollFlags::IN | PollFlags::HUP | PollFlags::ERR) {
                self.read_client(i);
            }
        }
    }

    fn next_timer(&self) -> Option<Instant> {
        let watchdog = (self.spec.watchdog_pids.is_some() && self.exit.is_none())
            .then(|| Instant::now() + kaged_spawn::WATCHDOG_POLL);
        let end_wait = self.ended_at.map(|e| e + EXIT_WAIT);
        [self.deadline, self.kill_at, watchdog, end_wait]
            .into_iter()
            .flatten()
            .min()
    }

    fn timers(&mut self) {
        let now = Instant::now();
        if self.deadline.is_some_and(|d| now >= d) {
            self.deadline = None;
            let by = match self.spec.wall_time_secs {
                Some(secs) => format!("kaged: wall-time limit of {secs}s"),
                None => "kaged: wall-time limit".to_string(),
            };
            self.limit(by);
            self.stop_gracefully();
        }
        if self.kill_at.is_some_and(|k| now >= k) {
            self.kill_at = None;
            self.killer.kill();
        }
        if let (Some(max), None) = (self.spec.watchdog_pids, self.exit) {
            let count = self.killer.process_count();
            if count as u64 > max {
                self.limit(format!(
                    "kaged: pids limit of {max} exceeded ({count} processes)"
                ));
                self.killer.kill();
            }
        }
    }

    /// A limit kill starts: recorded as who killed the run, told to attached clients.
    fn limit(&mut self, by: String) {
        for c in self.clients.iter_mut().filter(|c| c.cursor.is_some()) {
            c.send(&ToClient::Limit { by: by.clone() });
        }
        self.killed_by.get_or_insert(by);
    }

    /// HUP and TERM to every process of the run, KILL after the grace.
    fn stop_gracefully(&mut self) {
        self.killer.signal_all(Signal::SIGHUP);
        self.killer.signal_all(Signal::SIGTERM);
        let grace = Instant::now() + Duration::from_millis(self.spec.kill_grace_ms);
        self.kill_at = Some(self.kill_at.map_or(grace, |k| k.min(grace)));
    }

    fn take_signals(&mut self) {
        while let Ok(Some(info)) = self.signals.read_signal() {
            let name = match info.ssi_signo as i32 {
                libc_sig if libc_sig == Signal::SIGTERM as i32 => "SIGTERM",
                libc_sig if libc_sig == Signal::SIGINT as i32 => "SIGINT",
                _ => continue,
            };
            if self.exit.is_none() {
                self.limit(format!("kaged: run holder stopped ({name})"));
                self.stop_gracefully();
            }
        }
    }

    fn accept(&mut self) {
        while self.clients.len() < MAX_CLIENTS {
            let Ok((stream, _)) = self.listener.accept() else {
                return;
            };
            // Refused peers get nothing, not even why; the log says.
            if let Err(why) = crate::peer::check(&stream, &self.own) {
                crate::log::append(Path::new(&self.spec.socket), &format!("refused: {why}"));
                continue;
            }
            if let Ok(conn) = Conn::new(stream) {
                self.clients.push(conn);
            }
        }
    }

    fn read_output(&mut self, buf: &mut [u8]) {
        match self.io.read(buf) {
            Ok(0) => self.eof = true,
            Ok(n) => {
                if let Err(e) = self.writer.write_all(&buf[..n]) {
                    // Output that cannot be stored is not run on blind.
                    let by = format!("kaged: cannot write the transcript: {e}");
                    crate::log::append(Path::new(&self.spec.socket), &by);
                    self.error.get_or_insert(by.clone());
                    self.limit(by);
                    self.killer.kill();
                    return;
                }
                self.recent.push(&buf[..n]);
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted
                ) => {}
            // EIO: every process of the run closed the terminal.
            Err(_) => self.eof = true,
        }
        if self.eof {
            self.input.clear();
        }
    }

    fn write_input(&mut self) {
        match self.io.write(&self.input) {
            Ok(n) => {
                self.input.drain(..n);
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted
                ) => {}
            Err(_) => self.input.clear(),
        }
    }

    fn reap(&mut self) {
        if self.exit.is_some() {
            return;
        }
        if let Ok(Some(exit)) = self.waiter.try_wait() {
            self.exit = Some(exit);
            self.kill_at = None;
            // Anything left in the run's groups is killed, the groups removed.
            self.cgroups = None;
            let status = self.status_now();
            if let Err(e) = crate::status::write(Path::new(&self.spec.status_path), &status) {
                crate::log::append(
                    Path::new(&self.spec.socket),
                    &format!(
                        "cannot write the status file {}: {e}",
                        self.spec.status_path
                    ),
                );
            }
            self.status = Some(status);
            self.ended_at = Some(Instant::now());
        }
    }

    fn status_now(&self) -> StatusFile {
        StatusFile {
            v: 1,
            id: self.spec.id.clone(),
            exit: self.exit.map(|e| ExitStatus {
                code: e.code(),
                signal: e.signal(),
            }),
            killed_by: self.killed_by.clone(),
            started_at_ms: self.started_at_ms,
            ended_at_ms: now_ms(),
            output_bytes: self.written(),
            dropped: self.writer.dropped(),
            holder_version: self.version.clone(),
            error: self.error.clone(),
        }
    }

    fn info(&self, version: u32) -> HolderInfo {
        let state = if self.status.is_some() {
            HeldState::Ended
        } else if self.killed_by.is_some() || self.kill_at.is_some() {
            HeldState::Stopping
        } else {
            HeldState::Running
        };
        HolderInfo {
            version,
            holder: self.version.clone(),
            id: self.spec.id.clone(),
            run_name: self.spec.run_name.clone(),
            holder_pid: std::process::id(),
            pid: self.killer.pid(),
            started_at_ms: self.started_at_ms,
            written: self.written(),
            dropped: self.writer.dropped(),
            rows: self.rows,
            cols: self.cols,
            state,
            egress_dir: self.spec.egress_dir.clone(),
            egress_allow: self.spec.egress_allow.clone(),
            exit: self.status.as_ref().and_then(|s| s.exit),
            kind: self.spec.kind.clone(),
            note: self.note.clone(),
        }
    }

    /// Queue what each attached client is due: output from its cursor, then Eof, then Exit.
    fn feed_clients(&mut self) {
        let written = self.written();
        let head = Path::new(&self.spec.transcript_head);
        for c in &mut self.clients {
            let Some(mut cursor) = c.cursor else { continue };
            if !c.idle() || c.closed {
                continue;
            }
            // What the cap dropped is gone for everyone: the stream jumps to the first kept
            // byte, as a read of the files would.
            if let Some((from, to)) = self.writer.dropped()
                && (from..to).contains(&cursor)
            {
                cursor = to;
            }
            if cursor < written {
                let (at, bytes) = if cursor >= self.recent.start {
                    let from = (cursor - self.recent.start) as usize;
                    let to = (from + CHUNK).min(self.recent.bytes.len());
                    (cursor, self.recent.bytes[from..to].to_vec())
                } else {
                    crate::transcript::read(head, cursor, written, CHUNK)
                        .unwrap_or((cursor, Vec::new()))
                };
                if bytes.is_empty() {
                    c.send(&ToClient::Error {
                        code: error_code::FAILED.into(),
                        message: format!("cannot read the transcript from offset {cursor}"),
                    });
                    c.cursor = None;
                    continue;
                }
                c.cursor = Some(at + bytes.len() as u64);
                c.send(&ToClient::Output { offset: at, bytes });
            } else if self.eof && !c.eof_sent {
                c.eof_sent = true;
                c.send(&ToClient::Eof {
                    written,
                    dropped: self.writer.dropped(),
                });
            } else if let (Some(status), true, false) = (&self.status, c.eof_sent, c.exit_sent) {
                c.exit_sent = true;
                c.send(&ToClient::Exit(status.clone()));
            }
        }
    }

    fn read_client(&mut self, i: usize) {
        let got = self.clients[i].read();
        for g in got {
            match g {
                Got::Frame(f) => self.handle(i, f),
                Got::Bad {
                    code,
                    message,
                    fatal,
                } => {
                    let c = &mut self.clients[i];
                    c.send(&ToClient::Error { code, message });
                    if fatal {
                        c.flush();
                        c.closed = true;
                    }
                }
            }
        }
    }

    fn handle(&mut self, i: usize, frame: ToHolder) {
        let refuse = |code: &str, message: String| ToClient::Error {
            code: code.into(),
            message,
        };
        let (greeted, version) = (self.clients[i].greeted, self.clients[i].version);
        let frozen = matches!(
            frame,
            ToHolder::Signal { .. } | ToHolder::Kill { .. } | ToHolder::Detach
        );
        let answer = match frame {
            ToHolder::Hello(_) if greeted => Some(refuse(
                error_code::OUT_OF_ORDER,
                "Hello was already sent".into(),
            )),
            ToHolder::Hello(hello) => {
                self.clients[i].greeted = true;
                match kaged_session::holder::negotiate(&hello.versions, &self.supported) {
                    Ok(v) => {
                        self.clients[i].version = Some(v);
                        Some(ToClient::Hello(HolderHello::Accepted(Box::new(
                            self.info(v),
                        ))))
                    }
                    Err(refused) => Some(ToClient::Hello(refused)),
                }
            }
            _ if !greeted => Some(refuse(
                error_code::OUT_OF_ORDER,
                "the first frame must be Hello".into(),
            )),
            _ if version.is_none() && !frozen => Some(refuse(
                error_code::OUT_OF_ORDER,
                "no protocol version was agreed: only Signal, Kill and Detach".into(),
            )),
            ToHolder::Signal { sig } => {
                let signal = match sig {
                    kaged_session::holder::SignalName::HUP => Signal::SIGHUP,
                    kaged_session::holder::SignalName::TERM => Signal::SIGTERM,
                    kaged_session::holder::SignalName::INT => Signal::SIGINT,
                    kaged_session::holder::SignalName::CONT => Signal::SIGCONT,
                };
                Some(ToClient::Done {
                    n: self.killer.signal_all(signal) as u64,
                })
            }
            ToHolder::Kill { by } => {
                if self.exit.is_none() {
                    self.killed_by.get_or_insert(by);
                }
                Some(ToClient::Done {
                    n: self.killer.kill() as u64,
                })
            }
            ToHolder::Detach => {
                let c = &mut self.clients[i];
                c.cursor = None;
                c.eof_sent = false;
                c.exit_sent = false;
                None
            }
            ToHolder::Attach { from } if from > self.written() => Some(refuse(
                error_code::BAD_FRAME,
                format!("offset {from} is past the output's end {}", self.written()),
            )),
            ToHolder::Attach { from } => {
                let c = &mut self.clients[i];
                c.cursor = Some(from);
                c.eof_sent = false;
                c.exit_sent = false;
                None
            }
            ToHolder::Input(_) if self.eof => Some(refuse(
                error_code::INPUT_REFUSED,
                "the terminal is closed".into(),
            )),
            ToHolder::Input(bytes) => {
                self.input.extend_from_slice(&bytes);
                None
            }
            ToHolder::Resize { rows, cols } => match self.io.resize(rows, cols) {
                Ok(()) => {
                    (self.rows, self.cols) = (rows, cols);
                    None
                }
                Err(e) => Some(refuse(error_code::FAILED, format!("cannot resize: {e}"))),
            },
            ToHolder::AckExit => {
                self.clients[i].acked = true;
                None
            }
            ToHolder::Note(text) => {
                self.note = Some(text);
                None
            }
        };
        if let Some(a) = answer {
            self.clients[i].send(&a);
        }
    }
}
