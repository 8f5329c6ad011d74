//! `Live`: one run the daemon holds in memory (running, or ended a short while ago): its
//! output log, its terminal model, its state and what controls it. Every field is private;
//! the run's threads, the viewers and the session manager go through the methods below.
//!
//! Lock order (a holder of one may take only those after it, never one before):
//!
//! ```text
//! changing (async; held by `Sessions::transition` from the decision to its publication)
//!   → screen (Mutex<ScreenAt>: the terminal model; `catch_up` holds it while it parses)
//!     → run (Mutex<RunSlot>: state, size, input queue, killer, end time; short sections)
//!       → output (Mutex<OutputLog>; the pump appends and publishes `end` under it)
//!         → the `end` watch's own lock (`send_replace`)
//! ```
//!
//! A `borrow()` of the `end` watch is never held while taking `screen` or `output`: copy the
//! value out first (a borrow held across `catch_up` once deadlocked the pump).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::SyncSender;
use std::sync::{Arc, Mutex};

use kaged_cage::RunKind;
use kaged_session::log::{OutputLog, Read};
use kaged_session::screen::Screen;
use kaged_session::state::{State, StateKind};
use tokio::sync::watch;

use super::{Input, lock};

/// Output kept in memory per run; older output is read from the transcript file.
pub(crate) const LOG_CAPACITY: usize = 256 * 1024;
/// Viewers one live run may have at once.
pub(crate) const MAX_VIEWERS: usize = 64;
/// Largest batch the screen model takes at once.
pub(crate) const SCREEN_BATCH: usize = 256 * 1024;
/// Behind by more than this, the model starts afresh from the last [`SCREEN_TAIL`] bytes
/// rather than parse a whole flood nobody saw (what was on screen before is long gone).
const SCREEN_MAX_LAG: u64 = 8 * 1024 * 1024;
const SCREEN_TAIL: u64 = 1024 * 1024;

/// What reaches a spawned run's processes: the daemon's own child (a run on pipes, or a
/// terminal without a holder), or the run holder that owns it (`held.rs`).
#[derive(Clone)]
pub(crate) enum RunControl {
    Local(kaged_spawn::Killer),
    Held(Arc<super::held::HeldControl>),
}

impl RunControl {
    /// Send `signal` to every process of the run; how many it reached.
    pub(crate) fn signal_all(&self, signal: kaged_spawn::Signal) -> usize {
        match self {
            RunControl::Local(k) => k.signal_all(signal),
            RunControl::Held(h) => h.signal_all(signal),
        }
    }

    /// SIGKILL every process of the run (`by`: who, for a holder's status file).
    pub(crate) fn kill(&self, by: &str) -> usize {
        match self {
            RunControl::Local(k) => k.kill(),
            RunControl::Held(h) => h.kill(by),
        }
    }
}

/// What identifies a run and never changes.
#[derive(Debug, Clone)]
pub struct RunInfo {
    pub id: String,
    pub project: String,
    pub kind: RunKind,
    pub name: String,
    pub created_by: String,
    /// Where its transcript starts (the head file, see `transcript.rs`).
    pub transcript: PathBuf,
}

/// The screen model and the offset it has processed up to (a consistent snapshot point).
struct ScreenAt {
    screen: Screen,
    offset: u64,
    /// An ended run's final screen, as snapshot bytes: the terminal model (about 100 KiB for
    /// 24x80) is dropped then, since nothing changes it any more.
    frozen: Option<Vec<u8>>,
}

/// What the run's control shares, under one short lock.
struct RunSlot {
    state: State,
    size: (u16, u16),
    /// The writer thread's queue; `None` once the run ended.
    input: Option<SyncSender<Input>>,
    /// Present from the spawn until the run was reaped.
    control: Option<RunControl>,
    ended_at_ms: Option<i64>,
}

/// A run held in memory. See the module's documentation for its lock order.
pub struct Live {
    info: RunInfo,
    changing: tokio::sync::Mutex<()>,
    screen: Mutex<ScreenAt>,
    run: Mutex<RunSlot>,
    output: Mutex<OutputLog>,
    /// The end offset of the output, bumped after every chunk: viewers wait on it.
    end: watch::Sender<u64>,
    /// The state's name, for viewers to notice changes.
    state_kind: watch::Sender<StateKind>,
    /// Viewers attached now (at most [`MAX_VIEWERS`]).
    viewers: AtomicUsize,
}

impl Live {
    /// A queued run of `rows`×`cols`, taking input on `input`.
    pub(crate) fn new(info: RunInfo, rows: u16, cols: u16, input: SyncSender<Input>) -> Live {
        Live::with_state(info, State::Queued, (rows, cols), Some(input), LOG_CAPACITY)
    }

    pub(crate) fn with_state(
        info: RunInfo,
        state: State,
        (rows, cols): (u16, u16),
        input: Option<SyncSender<Input>>,
        log_capacity: usize,
    ) -> Live {
        let kind = state.kind();
        Live {
            info,
            changing: tokio::sync::Mutex::new(()),
            screen: Mutex::new(ScreenAt {
                screen: Screen::new(rows, cols),
                offset: 0,
                frozen: None,
            }),
            run: Mutex::new(RunSlot {
                state,
                size: (rows, cols),
                input,
                control: None,
                ended_at_ms: None,
            }),
            output: Mutex::new(OutputLog::new(log_capacity)),
            end: watch::channel(0).0,
            state_kind: watch::channel(kind).0,
            viewers: AtomicUsize::new(0),
        }
    }

    pub fn info(&self) -> &RunInfo {
        &self.info
    }

    pub fn id(&self) -> &str {
        &self.info.id
    }

    pub fn transcript(&self) -> &Path {
        &self.info.transcript
    }

    pub fn state(&self) -> State {
        lock(&self.run).state.clone()
    }

    pub fn size(&self) -> (u16, u16) {
        lock(&self.run).size
    }

    /// When the run ended, if it did.
    pub(crate) fn ended_at_ms(&self) -> Option<i64> {
        lock(&self.run).ended_at_ms
    }

    // --- output -------------------------------------------------------------------------

    /// Append a chunk the transcript already holds (the pump) and wake the viewers; returns
    /// the new end. `end` is published under the log's lock: a viewer never reads bytes from
    /// the log that lie past the end it may resume from.
    pub(crate) fn append(&self, chunk: &[u8]) -> u64 {
        let mut log = lock(&self.output);
        let end = log.append(chunk);
        // Marked even after a transcript failure (logged by the pump): memory must stay
        // bounded, so such bytes are lost to late readers rather than held forever.
        let _ = log.mark_persisted(end);
        self.end.send_replace(end);
        end
    }

    /// Output goes on from `offset`: what lies before it is not in memory (a run taken up
    /// again after a restart: it is in the transcript; a range the cap dropped: it is gone).
    pub(crate) fn skip_to(&self, offset: u64) {
        let mut log = lock(&self.output);
        if offset > log.end() && log.skip_to(offset) {
            self.end.send_replace(offset);
        }
    }

    /// Where the output ends now.
    pub fn end(&self) -> u64 {
        *self.end.borrow()
    }

    /// Wait on the output's end (viewers, the screen follower).
    pub(crate) fn subscribe_end(&self) -> watch::Receiver<u64> {
        self.end.subscribe()
    }

    /// Wake whoever waits on the end without new output (the pump is done).
    pub(crate) fn wake_end(&self) {
        self.end.send_modify(|_| {});
    }

    /// Wait on the state's name.
    pub(crate) fn subscribe_state(&self) -> watch::Receiver<StateKind> {
        self.state_kind.subscribe()
    }

    /// Output `[at, min(end, at + max))` from memory, or `None` when memory no longer holds
    /// `at` (the transcript file always does: it is written first).
    pub(crate) fn read_memory(&self, at: u64, end: u64, max: usize) -> Option<Vec<u8>> {
        let max = max.min(usize::try_from(end.saturating_sub(at)).unwrap_or(max));
        match lock(&self.output).read_from(at, max) {
            Read::Bytes { data, .. } => Some(data),
            _ => None,
        }
    }

    // --- screen -------------------------------------------------------------------------

    /// Bring the screen model up to `upto` (skipping a flood larger than `SCREEN_MAX_LAG`).
    pub(crate) fn catch_up(&self, upto: u64) {
        let mut screen = lock(&self.screen);
        if screen.frozen.is_some() {
            return; // The run ended: its final screen is kept as it was.
        }
        if upto.saturating_sub(screen.offset) > SCREEN_MAX_LAG {
            let (rows, cols) = self.size();
            screen.screen = Screen::new(rows, cols);
            screen.offset = upto - SCREEN_TAIL;
        }
        while screen.offset < upto {
            let at = screen.offset;
            let batch = match self.read_memory(at, upto, SCREEN_BATCH) {
                Some(b) => b,
                // Fell out of memory: the transcript has it (from the first kept offset on,
                // when the cap dropped what is at `at`).
                None => {
                    match super::transcript::read(&self.info.transcript, at, upto, SCREEN_BATCH) {
                        Ok((from, b)) => {
                            screen.offset = from;
                            b
                        }
                        Err(_) => return,
                    }
                }
            };
            if batch.is_empty() {
                return;
            }
            let at = screen.offset;
            screen.screen.process(&batch);
            screen.offset = at + batch.len() as u64;
        }
    }

    /// The screen as a new viewer gets it, and the output offset it shows (caught up to the
    /// end first). Blocking: it may parse up to a flood's tail.
    pub(crate) fn snapshot(&self) -> (Vec<u8>, u64) {
        // Read first: the watch's read lock must not be held across `catch_up`.
        let upto = self.end();
        self.catch_up(upto);
        let s = lock(&self.screen);
        let bytes = match &s.frozen {
            Some(bytes) => bytes.clone(),
            None => s.screen.snapshot(),
        };
        (bytes, s.offset)
    }

    /// The offset the screen model has processed up to.
    #[cfg(test)]
    pub(crate) fn screen_offset(&self) -> u64 {
        lock(&self.screen).offset
    }

    /// The screen's text (tests).
    #[cfg(test)]
    pub(crate) fn screen_text(&self) -> String {
        lock(&self.screen).screen.contents()
    }

    // --- input --------------------------------------------------------------------------

    /// Queue input or a resize; `false` when the run takes no more (ended, or the queue is
    /// full because the program stopped reading).
    pub(crate) fn send_input(&self, input: Input) -> bool {
        lock(&self.run)
            .input
            .as_ref()
            .is_some_and(|tx| tx.try_send(input).is_ok())
    }

    /// A resize reached the terminal (the writer thread): the model and the size follow.
    pub(crate) fn resized(&self, rows: u16, cols: u16) {
        let mut screen = lock(&self.screen);
        lock(&self.run).size = (rows, cols);
        screen.screen.resize(rows, cols);
    }

    // --- viewers ------------------------------------------------------------------------

    /// One of the run's viewer places, or `None` when all [`MAX_VIEWERS`] are taken.
    pub(crate) fn take_seat(self: &Arc<Live>) -> Option<ViewerSeat> {
        let taken = self
            .viewers
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < MAX_VIEWERS).then_some(n + 1)
            })
            .is_ok();
        taken.then(|| ViewerSeat(self.clone()))
    }

    // --- processes ----------------------------------------------------------------------

    /// What signals and kills the spawned run, until it is reaped.
    pub(crate) fn set_control(&self, control: Option<RunControl>) {
        lock(&self.run).control = control;
    }

    pub(crate) fn control(&self) -> Option<RunControl> {
        lock(&self.run).control.clone()
    }

    pub(crate) fn take_control(&self) -> Option<RunControl> {
        lock(&self.run).control.take()
    }

    /// Whether the run may still produce output: not ended, or ended while its reader still
    /// drains the PTY (its processes not reaped yet). Retention never touches such a run.
    pub(crate) fn producing(&self) -> bool {
        let run = lock(&self.run);
        !run.state.is_terminal() || run.control.is_some()
    }

    // --- state --------------------------------------------------------------------------

    /// Held by every change of state from its decision to its publication, so changes of one
    /// run never interleave (`Sessions::transition`).
    pub(crate) async fn begin_change(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.changing.lock().await
    }

    /// Make `next` the run's state (the caller holds [`Live::begin_change`]). An end closes
    /// the input, freezes the final screen and gives the in-memory output back: an ended run
    /// stays in memory for late viewers, but its output is in the transcript (keeping up to
    /// LOG_CAPACITY and the buffer's slack per ended run held ~660 KiB each).
    pub(crate) fn set_state(&self, next: State, now_ms: i64) {
        let ended = next.is_terminal();
        let kind = next.kind();
        {
            let mut run = lock(&self.run);
            run.state = next;
            if ended {
                run.ended_at_ms = Some(now_ms);
                run.input = None;
            }
        }
        self.state_kind.send_replace(kind);
        if ended {
            self.catch_up(self.end());
            {
                let mut screen = lock(&self.screen);
                screen.frozen = Some(screen.screen.snapshot());
                screen.screen = Screen::new(1, 1);
            }
            lock(&self.output).release_persisted();
            kaged_spawn::release_free_memory();
        }
    }
}

/// One of a live run's viewer places, given back when dropped.
pub(crate) struct ViewerSeat(Arc<Live>);

impl Drop for ViewerSeat {
    fn drop(&mut self) {
        self.0.viewers.fetch_sub(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    pub(crate) fn info() -> RunInfo {
        RunInfo {
            id: "0".repeat(32),
            project: "p".into(),
            kind: RunKind::Terminal,
            name: "shell".into(),
            created_by: "tester".into(),
            // Never read while the output stays in memory.
            transcript: PathBuf::from("/nonexistent/kaged-test.out"),
        }
    }

    fn running(capacity: usize) -> Live {
        Live::with_state(info(), State::Running { pid: 1 }, (24, 80), None, capacity)
    }

    #[test]
    fn appended_output_reads_back_in_order_and_wakes_subscribers() {
        let live = running(LOG_CAPACITY);
        let mut ends = live.subscribe_end();
        assert_eq!(live.append(b"hello "), 6);
        assert!(
            ends.has_changed().unwrap(),
            "a viewer waiting on the end is woken"
        );
        assert_eq!(*ends.borrow_and_update(), 6);
        assert_eq!(live.append(b"world"), 11);
        assert_eq!(live.end(), 11);
        assert_eq!(live.read_memory(0, 11, 1024).unwrap(), b"hello world");
        assert_eq!(live.read_memory(6, 11, 1024).unwrap(), b"world");
        // Never past the end a viewer was told about, nor past `max`.
        assert_eq!(live.read_memory(0, 6, 1024).unwrap(), b"hello ");
        assert_eq!(live.read_memory(2, 11, 3).unwrap(), b"llo");
    }

    #[test]
    fn output_that_left_memory_is_not_read_from_it() {
        let live = running(16);
        for _ in 0..64 {
            live.append(b"0123456789");
        }
        assert_eq!(live.end(), 640);
        assert!(
            live.read_memory(0, 640, 10).is_none(),
            "offset 0 is long gone"
        );
        assert_eq!(live.read_memory(630, 640, 10).unwrap(), b"0123456789");
    }

    #[test]
    fn a_snapshot_shows_the_output_up_to_its_offset() {
        let live = running(LOG_CAPACITY);
        live.append(b"first line\r\nsecond");
        let (bytes, offset) = live.snapshot();
        assert_eq!(offset, 18);
        let mut screen = Screen::new(24, 80);
        screen.process(&bytes);
        let text = screen.contents();
        assert!(
            text.contains("first line") && text.contains("second"),
            "{text}"
        );
    }

    #[test]
    fn the_end_freezes_the_final_screen_and_closes_the_input() {
        let (tx, rx) = std::sync::mpsc::sync_channel(4);
        let live = Live::with_state(info(), State::Running { pid: 1 }, (24, 80), Some(tx), 64);
        assert!(live.send_input(Input::Bytes(b"ls\n".to_vec())));
        live.append(b"$ done");
        let mut kinds = live.subscribe_state();
        live.set_state(
            State::Exited {
                code: 0,
                signal: None,
            },
            1234,
        );
        assert_eq!(*kinds.borrow_and_update(), StateKind::Exited);
        assert_eq!(live.ended_at_ms(), Some(1234));
        assert!(
            !live.send_input(Input::Bytes(b"more".to_vec())),
            "input after the end"
        );
        assert!(matches!(rx.try_recv(), Ok(Input::Bytes(b)) if b == b"ls\n"));
        // Output that comes later (a drain) does not change the final screen.
        live.append(b"\r\nlate");
        let (bytes, offset) = live.snapshot();
        assert_eq!(offset, 6);
        let mut screen = Screen::new(24, 80);
        screen.process(&bytes);
        assert!(screen.contents().contains("$ done"));
        assert!(!screen.contents().contains("late"));
        assert!(!live.producing(), "ended and reaped");
    }

    #[test]
    fn a_full_input_queue_refuses_input() {
        let (tx, _rx) = std::sync::mpsc::sync_channel(2);
        let live = Live::with_state(info(), State::Running { pid: 1 }, (24, 80), Some(tx), 64);
        assert!(live.send_input(Input::Bytes(vec![1])));
        assert!(live.send_input(Input::Resize(10, 10)));
        assert!(
            !live.send_input(Input::Bytes(vec![2])),
            "the program stopped reading"
        );
    }

    #[test]
    fn a_resize_reaches_the_size_and_the_model() {
        let live = running(LOG_CAPACITY);
        live.resized(10, 40);
        assert_eq!(live.size(), (10, 40));
        for n in 1..=15 {
            live.append(format!("L{n:02}\r\n").as_bytes());
        }
        let (bytes, _) = live.snapshot();
        let mut screen = Screen::new(24, 80);
        screen.process(&bytes);
        let text = screen.contents();
        // Ten rows hold the last nine lines and the cursor's: the first ones scrolled away.
        assert!(
            !text.contains("L06") && text.contains("L07") && text.contains("L15"),
            "{text:?}"
        );
    }

    #[test]
    fn viewer_seats_are_capped_and_given_back() {
        let live = Arc::new(running(64));
        let seats: Vec<_> = (0..MAX_VIEWERS)
            .map(|_| live.take_seat().unwrap())
            .collect();
        assert!(live.take_seat().is_none(), "one viewer past the cap");
        drop(seats);
        let again: Vec<_> = (0..MAX_VIEWERS).map(|_| live.take_seat()).collect();
        assert!(
            again.iter().all(Option::is_some),
            "seats come back when viewers go"
        );
    }
}
