//! The life of one run: a pure state machine the edge drives with events.
//!
//! ```text
//! queued ──start──▶ starting ──spawned──▶ running ──exit──▶ exited
//!   │                  │  └─spawn failed──▶ failed           │
//!   │                  │                                   kill
//!   └──kill──▶ killed ◀┴──kill                               ▼
//!                 ▲                                       stopping
//!                 └──────────────────exit────────────────────┘
//! starting, running, stopping ──daemon lost──▶ failed (queued too: it never runs after a restart)
//! ```
//!
//! A kill asked of a live process is remembered (`stopping`), so the exit that follows is
//! recorded as `killed` with who asked, not as an ordinary exit. A kill of a run that has no
//! process yet ends it at once; if the spawn was already under way, the runner kills what it
//! spawned when `spawned` is refused.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Why a run is `failed` when the daemon restarts under it.
pub const DAEMON_LOST_REASON: &str = "kaged stopped while the run was live; its transcript is kept";
/// Why a run is `failed` when its holder is gone and left no status file (it was killed
/// outright, or the host rebooted).
pub const HOLDER_LOST_REASON: &str =
    "the run's holder ended without recording how the run ended; its transcript is kept";
/// Why a queued run is `failed` when the daemon restarts: a restart never starts old work.
pub const DAEMON_LOST_QUEUED_REASON: &str = "kaged stopped before the run started";

/// Where a run is. Serializes as `{"state":"exited","code":0,"signal":null}` and so on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "lowercase")]
pub enum State {
    Queued,
    /// The cage is being set up and the process spawned.
    Starting,
    Running {
        pid: u32,
    },
    /// An operator asked for the process to stop; it has not exited yet.
    Stopping {
        pid: u32,
        by: String,
    },
    /// The process ended on its own. `code` is its exit status, or 128 + `signal` when a
    /// signal killed it (the shell's convention).
    Exited {
        code: i32,
        signal: Option<i32>,
    },
    Failed {
        reason: String,
    },
    /// Ended by the operator `by`.
    Killed {
        by: String,
    },
}

/// What happened to a run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// The runner took the run off the queue.
    Start,
    Spawned {
        pid: u32,
    },
    SpawnFailed {
        reason: String,
    },
    /// The process ended; build it with [`Event::exit_code`] or [`Event::exit_signal`].
    Exit {
        code: i32,
        signal: Option<i32>,
    },
    /// An operator asked to abort the run.
    Kill {
        actor: String,
    },
    /// The daemon found the run unfinished after a restart.
    DaemonLost,
    /// A thread of the daemon that carried the run panicked; the run is over.
    Crashed {
        reason: String,
    },
    /// An ended conversation (a model agent's session) was sent a message: it runs again, with
    /// its whole history. Only the session manager decides which sessions may resume.
    Resume,
}

impl Event {
    /// The process exited with `code`.
    pub fn exit_code(code: i32) -> Self {
        Self::Exit { code, signal: None }
    }

    /// The process was killed by `signal`: the code is 128 + signal.
    pub fn exit_signal(signal: i32) -> Self {
        Self::Exit {
            code: signal.saturating_add(128),
            signal: Some(signal),
        }
    }

    /// A stable name for messages and logs.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Start => "start",
            Self::Spawned { .. } => "spawned",
            Self::SpawnFailed { .. } => "spawn failed",
            Self::Exit { .. } => "exit",
            Self::Kill { .. } => "kill",
            Self::DaemonLost => "daemon lost",
            Self::Crashed { .. } => "crashed",
            Self::Resume => "resume",
        }
    }
}

/// The name of a state without its details: what storage keeps in a column.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StateKind {
    Queued,
    Starting,
    Running,
    Stopping,
    Exited,
    Failed,
    Killed,
}

impl StateKind {
    pub const ALL: [StateKind; 7] = [
        Self::Queued,
        Self::Starting,
        Self::Running,
        Self::Stopping,
        Self::Exited,
        Self::Failed,
        Self::Killed,
    ];

    /// The stable lowercase name (storage, API, logs).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Starting => "starting",
            Self::Running => "running",
            Self::Stopping => "stopping",
            Self::Exited => "exited",
            Self::Failed => "failed",
            Self::Killed => "killed",
        }
    }

    /// Whether a run in this state is over: it accepts no event.
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Exited | Self::Failed | Self::Killed)
    }
}

impl fmt::Display for StateKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A stored state name that is not one of [`StateKind::ALL`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown run state `{0}` (expected queued, starting, running, stopping, exited, failed or killed)"
)]
pub struct UnknownState(pub String);

impl FromStr for StateKind {
    type Err = UnknownState;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|kind| kind.as_str() == s)
            .ok_or_else(|| UnknownState(s.to_owned()))
    }
}

/// An event that does not apply to the state the run is in.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("cannot apply `{event}` to a run that is {from}")]
pub struct InvalidTransition {
    pub from: StateKind,
    pub event: &'static str,
}

impl State {
    pub fn kind(&self) -> StateKind {
        match self {
            Self::Queued => StateKind::Queued,
            Self::Starting => StateKind::Starting,
            Self::Running { .. } => StateKind::Running,
            Self::Stopping { .. } => StateKind::Stopping,
            Self::Exited { .. } => StateKind::Exited,
            Self::Failed { .. } => StateKind::Failed,
            Self::Killed { .. } => StateKind::Killed,
        }
    }

    /// The stable lowercase name of the state (see [`StateKind`]).
    pub fn as_str(&self) -> &'static str {
        self.kind().as_str()
    }

    pub fn is_terminal(&self) -> bool {
        self.kind().is_terminal()
    }

    /// The process to signal, when there is one.
    pub fn pid(&self) -> Option<u32> {
        match self {
            Self::Running { pid } | Self::Stopping { pid, .. } => Some(*pid),
            _ => None,
        }
    }
}

/// The state after `event`, or why `event` cannot happen now. Terminal states accept nothing.
pub fn apply(state: &State, event: Event) -> Result<State, InvalidTransition> {
    let invalid = |event: &Event| InvalidTransition {
        from: state.kind(),
        event: event.name(),
    };
    let next = match (state, event) {
        (State::Queued, Event::Start) => State::Starting,
        (State::Queued | State::Starting, Event::Kill { actor }) => State::Killed { by: actor },
        (State::Queued, Event::DaemonLost) => State::Failed {
            reason: DAEMON_LOST_QUEUED_REASON.to_owned(),
        },
        (State::Starting, Event::Spawned { pid }) => State::Running { pid },
        (State::Starting, Event::SpawnFailed { reason }) => State::Failed { reason },
        (State::Running { pid }, Event::Kill { actor }) => State::Stopping {
            pid: *pid,
            by: actor,
        },
        // A repeated abort is not an error (an impatient operator); the first actor stays.
        (State::Stopping { .. }, Event::Kill { .. }) => state.clone(),
        (State::Running { .. }, Event::Exit { code, signal }) => State::Exited { code, signal },
        (State::Stopping { by, .. }, Event::Exit { .. }) => State::Killed { by: by.clone() },
        (State::Starting | State::Running { .. } | State::Stopping { .. }, Event::DaemonLost) => {
            State::Failed {
                reason: DAEMON_LOST_REASON.to_owned(),
            }
        }
        (
            State::Queued | State::Starting | State::Running { .. } | State::Stopping { .. },
            Event::Crashed { reason },
        ) => State::Failed { reason },
        (State::Exited { .. } | State::Failed { .. } | State::Killed { .. }, Event::Resume) => {
            State::Queued
        }
        (_, event) => return Err(invalid(&event)),
    };
    Ok(next)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn running() -> State {
        State::Running { pid: 42 }
    }
    fn stopping() -> State {
        State::Stopping {
            pid: 42,
            by: "alice".into(),
        }
    }
    fn exited() -> State {
        State::Exited {
            code: 0,
            signal: None,
        }
    }
    fn failed() -> State {
        State::Failed {
            reason: "no bwrap".into(),
        }
    }
    fn killed(by: &str) -> State {
        State::Killed { by: by.into() }
    }

    fn all_states() -> Vec<State> {
        vec![
            State::Queued,
            State::Starting,
            running(),
            stopping(),
            exited(),
            failed(),
            killed("alice"),
        ]
    }

    fn all_events() -> Vec<Event> {
        vec![
            Event::Start,
            Event::Spawned { pid: 7 },
            Event::SpawnFailed {
                reason: "ENOENT".into(),
            },
            Event::exit_code(3),
            Event::Kill {
                actor: "bob".into(),
            },
            Event::DaemonLost,
            Event::Crashed {
                reason: "panicked".into(),
            },
            Event::Resume,
        ]
    }

    /// The expected outcome of every (state, event) pair; `None` means refused.
    fn expected(state: &State, event: &Event) -> Option<State> {
        let lost = State::Failed {
            reason: DAEMON_LOST_REASON.into(),
        };
        match (state.kind(), event.name()) {
            (StateKind::Queued, "start") => Some(State::Starting),
            (StateKind::Queued, "kill") => Some(killed("bob")),
            (StateKind::Queued, "daemon lost") => Some(State::Failed {
                reason: DAEMON_LOST_QUEUED_REASON.into(),
            }),
            (StateKind::Starting, "spawned") => Some(State::Running { pid: 7 }),
            (StateKind::Starting, "spawn failed") => Some(State::Failed {
                reason: "ENOENT".into(),
            }),
            (StateKind::Starting, "kill") => Some(killed("bob")),
            (StateKind::Starting, "daemon lost") => Some(lost),
            (StateKind::Running, "exit") => Some(State::Exited {
                code: 3,
                signal: None,
            }),
            (StateKind::Running, "kill") => Some(State::Stopping {
                pid: 42,
                by: "bob".into(),
            }),
            (StateKind::Running, "daemon lost") => Some(lost),
            (StateKind::Stopping, "exit") => Some(killed("alice")),
            (StateKind::Stopping, "kill") => Some(stopping()),
            (StateKind::Stopping, "daemon lost") => Some(lost),
            (
                StateKind::Queued | StateKind::Starting | StateKind::Running | StateKind::Stopping,
                "crashed",
            ) => Some(State::Failed {
                reason: "panicked".into(),
            }),
            (StateKind::Exited | StateKind::Failed | StateKind::Killed, "resume") => {
                Some(State::Queued)
            }
            _ => None,
        }
    }

    #[test]
    fn every_state_event_pair() {
        let mut accepted = 0;
        for state in all_states() {
            for event in all_events() {
                let name = event.name();
                let got = apply(&state, event.clone());
                match expected(&state, &event) {
                    Some(next) => {
                        accepted += 1;
                        assert_eq!(got, Ok(next), "{} + {name}", state.as_str());
                    }
                    None => assert_eq!(
                        got,
                        Err(InvalidTransition {
                            from: state.kind(),
                            event: name,
                        }),
                        "{} + {name}",
                        state.as_str()
                    ),
                }
            }
        }
        assert_eq!(accepted, 20, "7 states x 8 events, 20 allowed");
    }

    #[test]
    fn terminal_states_accept_nothing_but_a_resume() {
        for state in all_states().into_iter().filter(State::is_terminal) {
            for event in all_events() {
                let resume = event == Event::Resume;
                assert_eq!(apply(&state, event).is_ok(), resume, "{}", state.as_str());
            }
        }
        let terminal: Vec<_> = StateKind::ALL
            .into_iter()
            .filter(|k| k.is_terminal())
            .collect();
        assert_eq!(
            terminal,
            [StateKind::Exited, StateKind::Failed, StateKind::Killed]
        );
    }

    #[test]
    fn a_kill_is_remembered_until_the_exit() {
        let mut state = State::Queued;
        for event in [
            Event::Start,
            Event::Spawned { pid: 9 },
            Event::Kill {
                actor: "alice".into(),
            },
            Event::Kill {
                actor: "bob".into(),
            },
            Event::exit_signal(15),
        ] {
            state = apply(&state, event).unwrap();
        }
        assert_eq!(state, killed("alice"));
    }

    #[test]
    fn a_signal_exit_carries_128_plus_the_signal() {
        let state = apply(&running(), Event::exit_signal(9)).unwrap();
        assert_eq!(
            state,
            State::Exited {
                code: 137,
                signal: Some(9)
            }
        );
        assert_eq!(
            Event::exit_code(1),
            Event::Exit {
                code: 1,
                signal: None
            }
        );
    }

    #[test]
    fn errors_name_the_state_and_the_event() {
        let err = apply(&exited(), Event::Kill { actor: "a".into() }).unwrap_err();
        assert_eq!(
            err.to_string(),
            "cannot apply `kill` to a run that is exited"
        );
        let err = apply(&State::Queued, Event::SpawnFailed { reason: "x".into() }).unwrap_err();
        assert_eq!(
            err.to_string(),
            "cannot apply `spawn failed` to a run that is queued"
        );
    }

    #[test]
    fn names_are_stable_and_round_trip() {
        let names: Vec<_> = StateKind::ALL.iter().map(|k| k.as_str()).collect();
        assert_eq!(
            names,
            [
                "queued", "starting", "running", "stopping", "exited", "failed", "killed"
            ]
        );
        for kind in StateKind::ALL {
            assert_eq!(kind.as_str().parse::<StateKind>(), Ok(kind));
            assert_eq!(kind.to_string(), kind.as_str());
        }
        for state in all_states() {
            assert_eq!(state.as_str().parse::<StateKind>(), Ok(state.kind()));
        }
        assert_eq!(
            "Running".parse::<StateKind>(),
            Err(UnknownState("Running".into()))
        );
    }

    #[test]
    fn states_round_trip_through_json() {
        for state in all_states() {
            let json = serde_json::to_string(&state).unwrap();
            assert_eq!(
                serde_json::from_str::<State>(&json).unwrap(),
                state,
                "{json}"
            );
        }
        assert_eq!(
            serde_json::to_value(killed("alice")).unwrap(),
            serde_json::json!({"state": "killed", "by": "alice"})
        );
        assert_eq!(
            serde_json::to_value(StateKind::Stopping).unwrap(),
            serde_json::json!("stopping")
        );
    }

    #[test]
    fn only_live_states_have_a_pid() {
        assert_eq!(running().pid(), Some(42));
        assert_eq!(stopping().pid(), Some(42));
        assert_eq!(State::Starting.pid(), None);
        assert_eq!(exited().pid(), None);
    }
}
