//! The screen follower: a thread per run that keeps the terminal model (`Live::catch_up`)
//! near the output, lazily, at the lowest CPU priority.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use super::live::Live;

/// Output quiet for this long lets the screen model catch up.
pub(crate) const SCREEN_QUIET: Duration = Duration::from_millis(30);

/// The screen model follows the output lazily: when it goes quiet, and at the end. The
/// terminal parser is slower than a PTY, so during a flood it waits (a new viewer's snapshot
/// catches it up first, see `pty.rs`), and it never takes CPU from the run.
pub(crate) fn follow_screen(live: &Live, handle: &tokio::runtime::Handle, pump_done: &AtomicBool) {
    super::panics::inject("screen");
    let _ = rustix::process::setpriority_process(Some(rustix::thread::gettid()), 19);
    let mut ends = live.subscribe_end();
    loop {
        if pump_done.load(Ordering::SeqCst) {
            // Read first: a `borrow()` kept across `catch_up` holds the watch's read lock while
            // it waits for the log's lock, and the pump, holding the log's lock, waits for the
            // watch's write lock (a deadlock that froze runs mid-output).
            let upto = *ends.borrow();
            live.catch_up(upto);
            return;
        }
        // The timer is made inside the runtime: this thread is not one of its workers, and
        // outside it tokio has no clock to give (it panics).
        let quiet =
            handle.block_on(async { tokio::time::timeout(SCREEN_QUIET, ends.changed()).await });
        match quiet {
            Ok(Ok(())) => continue,
            Ok(Err(_)) => return,
            Err(_) => {
                // Quiet: catch up, then sleep until there is more.
                let upto = *ends.borrow_and_update();
                live.catch_up(upto);
                // The pump's last wake-up may have been marked seen just above: then its
                // `pump_done` is already set, and waiting would hang the run's end (it joins us).
                if pump_done.load(Ordering::SeqCst) {
                    continue;
                }
                if handle.block_on(ends.changed()).is_err() {
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::sync::Arc;
    use std::time::Instant;

    use kaged_session::state::State;

    use super::*;
    use crate::sessions::live::{LOG_CAPACITY, SCREEN_BATCH};

    fn live(log_capacity: usize) -> Live {
        let info = crate::sessions::live::RunInfo {
            id: "0".repeat(32),
            project: "p".into(),
            kind: kaged_cage::RunKind::Terminal,
            name: "shell".into(),
            created_by: "tester".into(),
            // Never read: the output stays in memory.
            transcript: std::path::PathBuf::from("/nonexistent/kaged-test.out"),
        };
        Live::with_state(
            info,
            State::Running { pid: 1 },
            (24, 80),
            None,
            log_capacity,
        )
    }

    /// What `pump` does with a chunk.
    fn publish(live: &Live, chunk: &[u8]) {
        live.append(chunk);
    }

    /// Output in bursts, each starting while the follower catches up with the one before: the
    /// pump (log lock, then the `end` watch) and the follower (the `end` watch, then the log)
    /// once deadlocked here, the run frozen mid-output with its program blocked on the PTY.
    #[test]
    fn the_screen_follower_never_blocks_the_pump() {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        // Room for a whole burst: the follower then takes several batches from memory.
        let live = Arc::new(live(4 * SCREEN_BATCH));
        let done = Arc::new(AtomicBool::new(false));
        let follower = {
            let (live, handle, done) = (live.clone(), runtime.handle().clone(), done.clone());
            std::thread::spawn(move || follow_screen(&live, &handle, &done))
        };
        let pump = {
            let live = live.clone();
            std::thread::spawn(move || {
                let line = b"0123456789 the quick brown fox jumps over the lazy dog\r\n";
                for _ in 0..10 {
                    for _ in 0..12_000 {
                        publish(&live, line);
                    }
                    std::thread::sleep(SCREEN_QUIET + Duration::from_millis(2));
                }
            })
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !pump.is_finished() {
            assert!(
                Instant::now() < deadline,
                "the pump is stuck (deadlocked with the screen follower)"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        done.store(true, Ordering::SeqCst);
        live.wake_end();
        assert!(follower.join().is_ok(), "the screen follower panicked");
    }

    /// The follower runs on a thread outside the runtime: output that pauses longer than
    /// SCREEN_QUIET must bring the model up to date on its own, and the thread must live on.
    #[test]
    fn the_screen_model_follows_output_that_pauses() {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let live = Arc::new(live(LOG_CAPACITY));
        let done = Arc::new(AtomicBool::new(false));
        let follower = {
            let (live, handle, done) = (live.clone(), runtime.handle().clone(), done.clone());
            std::thread::spawn(move || follow_screen(&live, &handle, &done))
        };
        publish(&live, b"hello");
        let deadline = Instant::now() + Duration::from_secs(5);
        while live.screen_offset() < 5 {
            assert!(
                !follower.is_finished(),
                "the screen follower stopped while the run was going"
            );
            assert!(
                Instant::now() < deadline,
                "the screen model never caught up"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        publish(&live, b" world");
        done.store(true, Ordering::SeqCst);
        live.wake_end();
        assert!(follower.join().is_ok(), "the screen follower panicked");
        assert_eq!(live.screen_offset(), 11);
        assert!(live.screen_text().contains("hello world"));
    }
}
