//! Ending a run: the kill (`stopping` → SIGHUP+SIGTERM → SIGKILL after [`KILL_GRACE`]), and
//! the two watchdogs that use it: the wall-time timer (a task) and, without a cgroup, the
//! pids watchdog (a thread).

use std::sync::Arc;
use std::time::Duration;

use kaged_session::state::Event;

use super::Sessions;
use super::live::Live;

/// After SIGTERM/SIGHUP, how long a run has before SIGKILL.
pub(crate) const KILL_GRACE: Duration = Duration::from_secs(3);

/// Signal a run, then kill it after the grace period. `by` is recorded as who ended it.
pub(crate) async fn abort(sessions: &Sessions, live: &Arc<Live>, by: &str) {
    let _ = sessions
        .transition(live, Event::Kill { actor: by.into() }, by)
        .await;
    // Not spawned yet: the kill lands on the queued or starting state, and the runner kills
    // whatever it spawns once it finds the state moved on.
    let Some(control) = live.control() else {
        return;
    };
    control.signal_all(kaged_spawn::Signal::SIGHUP);
    control.signal_all(kaged_spawn::Signal::SIGTERM);
    if !wait_ended(live, KILL_GRACE).await {
        control.kill(by);
    }
}

/// Wait at most `limit` for the run to reach a final state; whether it did.
pub(crate) async fn wait_ended(live: &Live, limit: Duration) -> bool {
    let mut changes = live.subscribe_state();
    tokio::time::timeout(limit, async {
        while !changes.borrow_and_update().is_terminal() {
            if changes.changed().await.is_err() {
                break;
            }
        }
    })
    .await
    .is_ok()
}

/// End the run after `secs` (a task on `handle`). It ends with the run, so an ended run is
/// not held in memory for the rest of its limit.
pub(crate) fn start_wall_clock(
    sessions: &Sessions,
    live: &Arc<Live>,
    secs: u64,
    handle: &tokio::runtime::Handle,
) {
    let (sessions, live) = (sessions.clone(), live.clone());
    handle.spawn(async move {
        if !wait_ended(&live, Duration::from_secs(secs)).await {
            let by = format!("kaged: wall-time limit of {secs}s");
            abort(&sessions, &live, &by).await;
        }
    });
}

/// Without a cgroup, count the cage's processes and end the run past the limit: on a thread
/// of its own (a scan of `/proc` blocks), every [`kaged_spawn::WATCHDOG_POLL`], and with
/// SIGKILL at once (no grace: a fork flood would go on growing through it). Killing bwrap ends
/// the cage's PID namespace, so processes that left the tree die too.
pub(crate) fn start_pids_watchdog(
    sessions: &Sessions,
    live: &Arc<Live>,
    killer: &kaged_spawn::Killer,
    pids: u64,
    handle: &tokio::runtime::Handle,
) {
    let (sessions, watched, counted) = (sessions.clone(), live.clone(), killer.clone());
    let handle = handle.clone();
    let spawned = std::thread::Builder::new()
        .name(format!("kaged-pid-{}", live.id().get(..8).unwrap_or_default()))
        .spawn(move || {
            let (live, killer) = (watched, counted);
            while !live.state().is_terminal() {
                let count = killer.process_count() as u64;
                if count > pids {
                    killer.kill();
                    let by = format!("kaged: pids limit of {pids} exceeded ({count} processes)");
                    tracing::warn!(session = %live.id(), count, limit = pids, "pids limit exceeded: the run is killed");
                    handle.block_on(async {
                        let _ = sessions
                            .transition(&live, Event::Kill { actor: by.clone() }, &by)
                            .await;
                    });
                    // Whatever a scan may have missed dies with the cage's namespace; kill
                    // again in case bwrap was between forks.
                    killer.kill();
                    return;
                }
                std::thread::sleep(kaged_spawn::WATCHDOG_POLL);
            }
        });
    if let Err(e) = spawned {
        tracing::error!(session = %live.id(), error = %e, "cannot start the pids watchdog; the run is killed");
        killer.kill();
    }
}
