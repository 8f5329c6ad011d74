//! kaged's calls in flight to one plugin, on data: each request gets a fresh id and a deadline;
//! an answer must carry the id of a call still waiting (anything else is a protocol error the
//! supervisor counts), and a call past its deadline is given up (a plugin never blocks a
//! request path). Times are the edge's monotonic clock, passed in.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{Value as Json, json};

use crate::wire::{Id, Message, RpcError, WireError};

/// How long kaged waits for each kind of call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timeouts {
    /// For the answer to `initialize`.
    pub initialize: Duration,
    /// For the answer to `health`.
    pub health: Duration,
    /// For the answer to `tools/call`.
    pub tool_call: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            initialize: Duration::from_secs(10),
            health: Duration::from_secs(5),
            tool_call: Duration::from_secs(60),
        }
    }
}

/// A call waiting for its answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Waiting {
    /// The method called.
    pub method: String,
    /// When it is given up.
    pub deadline: Duration,
}

/// The calls in flight to one plugin run (a new run starts a new `Calls`).
#[derive(Debug, Clone, Default)]
pub struct Calls {
    next: i64,
    waiting: BTreeMap<i64, Waiting>,
}

impl Calls {
    /// No calls yet; the first id is 1.
    pub fn new() -> Calls {
        Calls::default()
    }

    /// Starts a call: the request to write, with a fresh id, given up at `now + timeout`.
    pub fn call(
        &mut self,
        method: &str,
        params: Json,
        now: Duration,
        timeout: Duration,
    ) -> Message {
        self.next = self.next.saturating_add(1);
        self.waiting.insert(
            self.next,
            Waiting {
                method: method.into(),
                deadline: now.saturating_add(timeout),
            },
        );
        Message::Request {
            id: Id::Number(self.next),
            method: method.into(),
            params: Some(params),
        }
    }

    /// Takes an answer: the call it answers and its outcome, or why it answers nothing kaged
    /// waits for (a wrong, unreadable, late or repeated id).
    pub fn answer(
        &mut self,
        id: Option<&Id>,
        outcome: Result<Json, RpcError>,
    ) -> Result<(Waiting, Result<Json, RpcError>), WireError> {
        let number = match id {
            Some(Id::Number(n)) => *n,
            other => {
                let shown = other.map_or_else(|| "null".to_string(), |id| json!(id).to_string());
                return Err(self.unawaited(&shown));
            }
        };
        match self.waiting.remove(&number) {
            Some(waiting) => Ok((waiting, outcome)),
            None => Err(self.unawaited(&number.to_string())),
        }
    }

    /// The protocol error of an answer with id `shown`, naming the ids kaged waits for.
    fn unawaited(&self, shown: &str) -> WireError {
        let ids: Vec<String> = self.waiting.keys().map(i64::to_string).collect();
        let ids = if ids.is_empty() {
            "none".to_string()
        } else {
            ids.join(", ")
        };
        WireError::Invalid(format!(
            "the answer has id {shown}, but kaged waits for: {ids}"
        ))
    }

    /// Gives up every call whose deadline has come, oldest first.
    pub fn expire(&mut self, now: Duration) -> Vec<(Id, Waiting)> {
        let due: Vec<i64> = self
            .waiting
            .iter()
            .filter(|(_, w)| w.deadline <= now)
            .map(|(id, _)| *id)
            .collect();
        due.into_iter()
            .filter_map(|id| self.waiting.remove(&id).map(|w| (Id::Number(id), w)))
            .collect()
    }

    /// The earliest deadline, for the edge's next wake-up.
    pub fn next_deadline(&self) -> Option<Duration> {
        self.waiting.values().map(|w| w.deadline).min()
    }

    /// How many calls wait.
    pub fn len(&self) -> usize {
        self.waiting.len()
    }

    /// Whether no call waits.
    pub fn is_empty(&self) -> bool {
        self.waiting.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::method;

    fn s(secs: u64) -> Duration {
        Duration::from_secs(secs)
    }

    #[test]
    fn answers_are_matched_to_the_calls_that_wait() {
        let mut calls = Calls::new();
        let first = calls.call(method::HEALTH, json!({}), s(0), s(5));
        let second = calls.call(method::TOOLS_CALL, json!({"name": "x"}), s(1), s(60));
        assert_eq!(
            first.to_line(),
            r#"{"id":1,"jsonrpc":"2.0","method":"health","params":{}}"#
        );
        assert!(matches!(
            second,
            Message::Request {
                id: Id::Number(2),
                ..
            }
        ));
        assert_eq!((calls.len(), calls.next_deadline()), (2, Some(s(5))));
        // Out of order is fine.
        let (waiting, outcome) = calls
            .answer(Some(&Id::Number(2)), Ok(json!({"content": "ok"})))
            .unwrap();
        assert_eq!(
            waiting,
            Waiting {
                method: "tools/call".into(),
                deadline: s(61)
            }
        );
        assert_eq!(outcome, Ok(json!({"content": "ok"})));
        let error = RpcError::new(-32603, "boom");
        let (waiting, outcome) = calls
            .answer(Some(&Id::Number(1)), Err(error.clone()))
            .unwrap();
        assert_eq!((waiting.method.as_str(), outcome), ("health", Err(error)));
        assert!(calls.is_empty());
        assert_eq!(calls.next_deadline(), None);
    }

    #[test]
    fn wrong_repeated_and_foreign_ids_are_protocol_errors() {
        let mut calls = Calls::new();
        calls.call(method::HEALTH, json!({}), s(0), s(5));
        let refused =
            |calls: &mut Calls, id: Option<Id>| match calls.answer(id.as_ref(), Ok(json!(1))) {
                Err(WireError::Invalid(why)) => why,
                other => panic!("{other:?}"),
            };
        assert_eq!(
            refused(&mut calls, Some(Id::Number(7))),
            "the answer has id 7, but kaged waits for: 1"
        );
        assert_eq!(
            refused(&mut calls, Some(Id::String("1".into()))),
            "the answer has id \"1\", but kaged waits for: 1"
        );
        assert_eq!(
            refused(&mut calls, None),
            "the answer has id null, but kaged waits for: 1"
        );
        assert!(calls.answer(Some(&Id::Number(1)), Ok(json!(1))).is_ok());
        assert_eq!(
            refused(&mut calls, Some(Id::Number(1))),
            "the answer has id 1, but kaged waits for: none"
        );
    }

    #[test]
    fn calls_past_their_deadline_are_given_up_and_late_answers_refused() {
        let mut calls = Calls::new();
        let t = Timeouts::default();
        calls.call(method::INITIALIZE, json!({}), s(0), t.initialize);
        calls.call(method::HEALTH, json!({}), s(1), t.health);
        calls.call(method::TOOLS_CALL, json!({}), s(2), t.tool_call);
        assert_eq!(calls.expire(s(5)), vec![]);
        let gone = calls.expire(s(10));
        let gone: Vec<(Id, &str)> = gone
            .iter()
            .map(|(id, w)| (id.clone(), w.method.as_str()))
            .collect();
        assert_eq!(
            gone,
            vec![(Id::Number(1), "initialize"), (Id::Number(2), "health")]
        );
        assert_eq!(calls.next_deadline(), Some(s(62)));
        assert!(
            calls.answer(Some(&Id::Number(1)), Ok(json!({}))).is_err(),
            "too late"
        );
        assert_eq!(calls.expire(s(62)).len(), 1);
        assert!(calls.is_empty());
    }
}
