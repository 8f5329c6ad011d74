//! The supervisor's policy for one plugin, on data: events and the time they happened in,
//! actions and a state with its reason out. The edge owns the process, the pipes and the
//! clock; it feeds every event here and carries out what comes back.
//!
//! A failed run (a crash, a protocol error, no answer in time, repeated failed health checks)
//! is restarted after an exponential backoff (1 s doubling up to 60 s by default; reset after a
//! run that stayed up long enough), and the plugin is disabled once too many failures fall
//! within a window (5 within 10 minutes by default) until the operator enables it again.

use std::collections::VecDeque;
use std::fmt;
use std::time::Duration;

/// How a plugin is restarted and when it is given up on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestartPolicy {
    /// The wait before the first restart.
    pub first_backoff: Duration,
    /// The longest wait; each failure without a stable run in between doubles it up to this.
    pub max_backoff: Duration,
    /// This many failures within [`RestartPolicy::window`] disable the plugin.
    pub max_failures: usize,
    /// How far back failures count towards [`RestartPolicy::max_failures`].
    pub window: Duration,
    /// A run that stayed up this long resets the backoff.
    pub stable_after: Duration,
    /// Consecutive failed health checks that count as one failure (the run is killed).
    pub health_failures: u32,
}

impl Default for RestartPolicy {
    fn default() -> Self {
        RestartPolicy {
            first_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(60),
            max_failures: 5,
            window: Duration::from_secs(600),
            stable_after: Duration::from_secs(60),
            health_failures: 2,
        }
    }
}

/// Where a plugin is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Spawned, `initialize` not answered yet.
    Starting,
    /// Initialized and answering.
    Running,
    /// Running, but its last health check failed.
    Unhealthy,
    /// Its run failed; it is restarted at [`Status::retry_at`].
    BackingOff,
    /// Too many failures: not restarted until the operator enables it again.
    Disabled,
    /// Not running, by intent (never started, disabled by the operator, or kaged stopping).
    Stopped,
}

impl State {
    /// The state's name, as `kaged plugin list` and the API show it.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Starting => "starting",
            State::Running => "running",
            State::Unhealthy => "unhealthy",
            State::BackingOff => "backing_off",
            State::Disabled => "disabled",
            State::Stopped => "stopped",
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What happened, as the edge saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Run the plugin (at daemon start, or the operator enabling it; a disabled plugin starts
    /// afresh).
    Start,
    /// The plugin answered `initialize`.
    Initialized,
    /// A `health` call was answered `ok`.
    HealthOk,
    /// A `health` call failed (an error, `unhealthy`, or no answer in time), and why.
    HealthFailed(String),
    /// The process ended on its own (a crash or an exit), and how.
    Exited(String),
    /// The run is broken while the process lives (no answer to `initialize` in time, invalid
    /// JSON, a wrong id, a line over the limit), and why: it is killed.
    Broken(String),
    /// Stop the plugin on purpose (operator or daemon), and why.
    Stop(String),
    /// Time passed (the edge calls this at [`Action::WakeAt`]).
    Tick,
}

/// What the edge must do, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Spawn the plugin and send `initialize`.
    Spawn,
    /// Kill the plugin's process now.
    Kill,
    /// Send `shutdown`, wait up to `shutdown_timeout_sec`, then kill.
    Shutdown,
    /// Deliver [`Event::Tick`] at this time.
    WakeAt(Duration),
}

/// A plugin's supervision state, for `kaged plugin list`, the console and the audit log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    /// Where the plugin is.
    pub state: State,
    /// Why it is in this state (for every state but `starting` and `running`).
    pub reason: Option<String>,
    /// Restarts after failures so far.
    pub restarts: u32,
    /// The most recent failure.
    pub last_error: Option<String>,
    /// When a backing-off plugin is restarted.
    pub retry_at: Option<Duration>,
}

/// The supervisor of one plugin.
#[derive(Debug, Clone)]
pub struct Supervisor {
    policy: RestartPolicy,
    status: Status,
    /// When the recent failures happened, oldest first (only those within the window).
    failures: VecDeque<Duration>,
    /// Failures since the last stable run: the backoff's exponent.
    consecutive: u32,
    /// When the current run reached `running`.
    running_since: Option<Duration>,
    /// Consecutive failed health checks of the current run.
    health_failures: u32,
}

impl Supervisor {
    /// A supervisor of a plugin not yet started.
    pub fn new(policy: RestartPolicy) -> Supervisor {
        Supervisor {
            policy,
            status: Status {
                state: State::Stopped,
                reason: Some("not started".into()),
                restarts: 0,
                last_error: None,
                retry_at: None,
            },
            failures: VecDeque::new(),
            consecutive: 0,
            running_since: None,
            health_failures: 0,
        }
    }

    /// The current status.
    pub fn status(&self) -> &Status {
        &self.status
    }

    /// The current state.
    pub fn state(&self) -> State {
        self.status.state
    }

    fn set(&mut self, state: State, reason: Option<String>) {
        self.status.state = state;
        self.status.reason = reason;
        if state != State::BackingOff {
            self.status.retry_at = None;
        }
    }

    fn spawn(&mut self) -> Vec<Action> {
        self.set(State::Starting, None);
        self.running_since = None;
        self.health_failures = 0;
        vec![Action::Spawn]
    }

    /// The backoff before the next restart: the first one doubled per earlier consecutive
    /// failure, at most the maximum.
    fn backoff(&self) -> Duration {
        let doublings = self.consecutive.saturating_sub(1).min(31);
        self.policy
            .first_backoff
            .saturating_mul(1u32 << doublings)
            .min(self.policy.max_backoff)
    }

    fn fail(&mut self, now: Duration, reason: String, kill: bool) -> Vec<Action> {
        if self
            .running_since
            .is_some_and(|since| now.saturating_sub(since) >= self.policy.stable_after)
        {
            self.consecutive = 0;
        }
        self.consecutive = self.consecutive.saturating_add(1);
        self.running_since = None;
        self.failures.push_back(now);
        while self
            .failures
            .front()
            .is_some_and(|t| now.saturating_sub(*t) >= self.policy.window)
        {
            self.failures.pop_front();
        }
        self.status.last_error = Some(reason.clone());
        let mut actions = if kill { vec![Action::Kill] } else { Vec::new() };
        if self.failures.len() >= self.policy.max_failures {
            let reason = format!(
                "disabled after {} failures within {} s; the last: {reason}",
                self.failures.len(),
                self.policy.window.as_secs()
            );
            self.set(State::Disabled, Some(reason));
            return actions;
        }
        let delay = self.backoff();
        let at = now.saturating_add(delay);
        self.set(
            State::BackingOff,
            Some(format!("{reason}; restarting in {} ms", delay.as_millis())),
        );
        self.status.retry_at = Some(at);
        actions.push(Action::WakeAt(at));
        actions
    }

    /// Takes one event that happened at `now` (a monotonic time of the edge's choosing) and
    /// says what to do. An event that does not fit the state (a late answer from a run already
    /// given up) changes nothing.
    pub fn handle(&mut self, event: Event, now: Duration) -> Vec<Action> {
        use State::*;
        match (self.status.state, event) {
            (Stopped | Disabled, Event::Start) => {
                self.failures.clear();
                self.consecutive = 0;
                self.spawn()
            }
            (Starting, Event::Initialized) => {
                self.set(Running, None);
                self.running_since = Some(now);
                Vec::new()
            }
            (Running | Unhealthy, Event::HealthOk) => {
                self.health_failures = 0;
                self.set(Running, None);
                Vec::new()
            }
            (Running | Unhealthy, Event::HealthFailed(why)) => {
                self.health_failures = self.health_failures.saturating_add(1);
                if self.health_failures >= self.policy.health_failures {
                    let count = self.health_failures;
                    self.fail(
                        now,
                        format!("unhealthy ({count} health checks failed): {why}"),
                        true,
                    )
                } else {
                    self.set(Unhealthy, Some(why));
                    Vec::new()
                }
            }
            (Starting | Running | Unhealthy, Event::Exited(how)) => {
                self.fail(now, format!("exited: {how}"), false)
            }
            (Starting | Running | Unhealthy, Event::Broken(why)) => self.fail(now, why, true),
            (Starting | Running | Unhealthy, Event::Stop(why)) => {
                self.set(Stopped, Some(why));
                self.running_since = None;
                vec![Action::Shutdown]
            }
            (BackingOff | Disabled, Event::Stop(why)) => {
                self.set(Stopped, Some(why));
                Vec::new()
            }
            (BackingOff, Event::Tick) if self.status.retry_at.is_some_and(|at| now >= at) => {
                self.status.restarts = self.status.restarts.saturating_add(1);
                self.spawn()
            }
            _ => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(secs: u64) -> Duration {
        Duration::from_secs(secs)
    }

    fn started() -> Supervisor {
        let mut sup = Supervisor::new(RestartPolicy::default());
        assert_eq!(sup.handle(Event::Start, s(0)), vec![Action::Spawn]);
        sup
    }

    #[test]
    fn a_well_behaved_plugin_starts_runs_and_stops() {
        let mut sup = Supervisor::new(RestartPolicy::default());
        assert_eq!(sup.state(), State::Stopped);
        assert_eq!(sup.status().reason.as_deref(), Some("not started"));
        assert_eq!(sup.handle(Event::Start, s(0)), vec![Action::Spawn]);
        assert_eq!(sup.state(), State::Starting);
        assert_eq!(sup.handle(Event::Initialized, s(1)), vec![]);
        assert_eq!(sup.state(), State::Running);
        assert_eq!(sup.handle(Event::HealthOk, s(31)), vec![]);
        assert_eq!(
            sup.handle(Event::Stop("disabled by the operator".into()), s(40)),
            vec![Action::Shutdown]
        );
        assert_eq!(
            sup.status(),
            &Status {
                state: State::Stopped,
                reason: Some("disabled by the operator".into()),
                restarts: 0,
                last_error: None,
                retry_at: None,
            }
        );
        // Its exit after `shutdown` is expected, not a failure.
        assert_eq!(sup.handle(Event::Exited("status 0".into()), s(41)), vec![]);
        assert_eq!(sup.state(), State::Stopped);
        assert_eq!(State::BackingOff.to_string(), "backing_off");
    }

    #[test]
    fn crashes_back_off_exponentially_then_disable() {
        let mut sup = started();
        sup.handle(Event::Initialized, s(0));
        let mut now = s(1);
        let mut waits = Vec::new();
        for i in 0..4 {
            let actions = sup.handle(Event::Exited(format!("signal 11 (#{i})")), now);
            let Some(Action::WakeAt(at)) = actions.last().cloned() else {
                panic!("{actions:?}")
            };
            assert_eq!(
                actions,
                vec![Action::WakeAt(at)],
                "a crashed process needs no kill"
            );
            assert_eq!(sup.state(), State::BackingOff);
            assert_eq!(sup.status().retry_at, Some(at));
            waits.push((at - now).as_secs());
            // Too early: nothing; on time: a restart.
            assert_eq!(
                sup.handle(Event::Tick, at - Duration::from_millis(1)),
                vec![]
            );
            assert_eq!(sup.handle(Event::Tick, at), vec![Action::Spawn]);
            assert_eq!(sup.status().restarts, i + 1);
            sup.handle(Event::Initialized, at);
            now = at + s(1);
        }
        assert_eq!(waits, vec![1, 2, 4, 8]);
        // The fifth failure within the window disables it, with the reason and the last error.
        assert_eq!(
            sup.handle(Event::Exited("signal 11 (#4)".into()), now),
            vec![]
        );
        assert_eq!(sup.state(), State::Disabled);
        assert_eq!(
            sup.status().reason.as_deref(),
            Some("disabled after 5 failures within 600 s; the last: exited: signal 11 (#4)")
        );
        assert_eq!(
            sup.status().last_error.as_deref(),
            Some("exited: signal 11 (#4)")
        );
        assert_eq!(sup.status().retry_at, None);
        assert_eq!(
            sup.handle(Event::Tick, now + s(3600)),
            vec![],
            "stays disabled"
        );
        // The operator enables it: a fresh start, the failure count cleared.
        assert_eq!(sup.handle(Event::Start, now + s(3600)), vec![Action::Spawn]);
        assert_eq!(
            sup.handle(Event::Exited("again".into()), now + s(3601)),
            vec![Action::WakeAt(now + s(3602))]
        );
    }

    #[test]
    fn the_backoff_is_capped() {
        let mut sup = Supervisor::new(RestartPolicy {
            max_failures: 100,
            ..RestartPolicy::default()
        });
        sup.handle(Event::Start, s(0));
        let mut now = s(0);
        let mut waits = Vec::new();
        for _ in 0..9 {
            let actions = sup.handle(Event::Broken("never answered initialize".into()), now);
            assert_eq!(actions[0], Action::Kill, "a hung process is killed");
            let Some(Action::WakeAt(at)) = actions.last().cloned() else {
                panic!("{actions:?}")
            };
            waits.push((at - now).as_secs());
            sup.handle(Event::Tick, at);
            now = at;
        }
        assert_eq!(waits, vec![1, 2, 4, 8, 16, 32, 60, 60, 60]);
    }

    #[test]
    fn a_stable_run_resets_the_backoff_and_old_failures_leave_the_window() {
        let mut sup = started();
        sup.handle(Event::Initialized, s(0));
        assert_eq!(
            sup.handle(Event::Exited("1".into()), s(10)),
            vec![Action::WakeAt(s(11))]
        );
        sup.handle(Event::Tick, s(11));
        sup.handle(Event::Initialized, s(11));
        assert_eq!(
            sup.handle(Event::Exited("2".into()), s(12)),
            vec![Action::WakeAt(s(14))]
        );
        sup.handle(Event::Tick, s(14));
        sup.handle(Event::Initialized, s(14));
        // Up for 60 s: the next failure waits the first backoff again.
        assert_eq!(
            sup.handle(Event::Exited("3".into()), s(74)),
            vec![Action::WakeAt(s(75))]
        );
        // Failures spread wider than the window never disable it.
        let mut now = s(75);
        for i in 0..10 {
            sup.handle(Event::Tick, now);
            sup.handle(Event::Initialized, now);
            now += s(601);
            sup.handle(Event::Exited(format!("late {i}")), now);
            assert_eq!(sup.state(), State::BackingOff, "failure {i}");
            now += s(1);
        }
    }

    #[test]
    fn failed_health_checks_make_it_unhealthy_then_restart_it() {
        let mut sup = started();
        sup.handle(Event::Initialized, s(0));
        assert_eq!(
            sup.handle(Event::HealthFailed("no answer in 5 s".into()), s(30)),
            vec![]
        );
        assert_eq!(sup.state(), State::Unhealthy);
        assert_eq!(sup.status().reason.as_deref(), Some("no answer in 5 s"));
        // Recovering clears it.
        assert_eq!(sup.handle(Event::HealthOk, s(60)), vec![]);
        assert_eq!(
            (sup.state(), sup.status().reason.clone()),
            (State::Running, None)
        );
        // Two in a row: killed and restarted after the backoff.
        sup.handle(Event::HealthFailed("db down".into()), s(90));
        assert_eq!(
            sup.handle(Event::HealthFailed("db down".into()), s(120)),
            vec![Action::Kill, Action::WakeAt(s(121))]
        );
        assert_eq!(sup.state(), State::BackingOff);
        assert_eq!(
            sup.status().last_error.as_deref(),
            Some("unhealthy (2 health checks failed): db down")
        );
        assert_eq!(
            sup.status().reason.as_deref(),
            Some("unhealthy (2 health checks failed): db down; restarting in 1000 ms")
        );
        // A new run starts with a clean health record.
        sup.handle(Event::Tick, s(121));
        sup.handle(Event::Initialized, s(122));
        assert_eq!(
            sup.handle(Event::HealthFailed("slow".into()), s(152)),
            vec![]
        );
        assert_eq!(sup.state(), State::Unhealthy);
    }

    #[test]
    fn hostile_runs_at_start_are_failures_and_late_events_change_nothing() {
        let mut sup = started();
        // Never answers initialize: the edge's timeout reports it broken.
        assert_eq!(
            sup.handle(
                Event::Broken("no answer to initialize within 10 s".into()),
                s(10)
            ),
            vec![Action::Kill, Action::WakeAt(s(11))]
        );
        // Late answers from the killed run are ignored.
        for late in [
            Event::Initialized,
            Event::HealthOk,
            Event::HealthFailed("x".into()),
            Event::Exited("killed".into()),
        ] {
            assert_eq!(sup.handle(late, s(10)), vec![]);
            assert_eq!(sup.state(), State::BackingOff);
        }
        // Health results do not apply while starting; start only applies when stopped.
        sup.handle(Event::Tick, s(11));
        assert_eq!(sup.handle(Event::HealthOk, s(11)), vec![]);
        assert_eq!(sup.handle(Event::Start, s(11)), vec![]);
        assert_eq!(sup.state(), State::Starting);
        // Crashing at start counts like any crash.
        assert_eq!(
            sup.handle(Event::Exited("status 1".into()), s(12)),
            vec![Action::WakeAt(s(14))]
        );
        // Stopping while backing off cancels the restart.
        assert_eq!(
            sup.handle(Event::Stop("kaged is stopping".into()), s(13)),
            vec![]
        );
        assert_eq!(sup.handle(Event::Tick, s(14)), vec![]);
        assert_eq!(
            (
                sup.state(),
                sup.status().reason.as_deref(),
                sup.status().retry_at
            ),
            (State::Stopped, Some("kaged is stopping"), None)
        );
    }
}
