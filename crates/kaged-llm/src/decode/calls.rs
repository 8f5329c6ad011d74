//! The tool calls of one answer, kept by the provider's own number for them (a content block, an
//! output item, a chunk's call index). kaged numbers calls 0, 1, … in the order they start, and a
//! call that got no argument fragments is given `{}` when it ends, so every call's arguments
//! parse as JSON.

use std::collections::BTreeMap;

use crate::types::Event;

#[derive(Debug)]
struct Call {
    index: usize,
    fragments: bool,
}

#[derive(Debug, Default)]
pub(super) struct ToolCalls {
    by_number: BTreeMap<u64, Call>,
    started: usize,
}

impl ToolCalls {
    /// How many calls this answer started.
    pub(super) fn started(&self) -> usize {
        self.started
    }

    pub(super) fn is_known(&self, number: u64) -> bool {
        self.by_number.contains_key(&number)
    }

    /// The highest provider number seen, if any.
    pub(super) fn highest_number(&self) -> Option<u64> {
        self.by_number.keys().next_back().copied()
    }

    /// Start call `number`: kaged's index for it and its `ToolCallStarted`, pushed to `out`.
    /// `id` is called with that index (a provider that sends no id gets one made from it).
    pub(super) fn start(
        &mut self,
        number: u64,
        id: impl FnOnce(usize) -> String,
        name: &str,
        out: &mut Vec<Event>,
    ) {
        let index = self.started;
        self.started += 1;
        out.push(Event::ToolCallStarted {
            index,
            id: id(index),
            name: name.to_string(),
        });
        self.by_number.insert(
            number,
            Call {
                index,
                fragments: false,
            },
        );
    }

    /// A fragment of call `number`'s arguments (an empty one adds nothing). False when no call
    /// has that number.
    pub(super) fn fragment(&mut self, number: u64, fragment: &str, out: &mut Vec<Event>) -> bool {
        let Some(call) = self.by_number.get_mut(&number) else {
            return false;
        };
        if !fragment.is_empty() {
            call.fragments = true;
            out.push(Event::ToolCallArguments {
                index: call.index,
                fragment: fragment.to_string(),
            });
        }
        true
    }

    /// Call `number` is complete: without fragments so far, its arguments are `whole` (what the
    /// provider's closing message carries) or else `{}`.
    pub(super) fn end(&mut self, number: u64, whole: Option<&str>, out: &mut Vec<Event>) {
        if let Some(call) = self.by_number.get_mut(&number)
            && !call.fragments
        {
            call.fragments = true;
            out.push(Event::ToolCallArguments {
                index: call.index,
                fragment: whole.filter(|w| !w.is_empty()).unwrap_or("{}").to_string(),
            });
        }
    }

    /// Every call is complete (the answer's choice finished).
    pub(super) fn end_all(&mut self, out: &mut Vec<Event>) {
        let numbers: Vec<u64> = self.by_number.keys().copied().collect();
        for number in numbers {
            self.end(number, None, out);
        }
    }

    /// Call `number` can take no more fragments.
    pub(super) fn forget(&mut self, number: u64) {
        self.by_number.remove(&number);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(index: usize, fragment: &str) -> Event {
        Event::ToolCallArguments {
            index,
            fragment: fragment.into(),
        }
    }

    #[test]
    fn calls_are_numbered_in_start_order_and_always_get_arguments() {
        let mut calls = ToolCalls::default();
        let mut out = Vec::new();
        assert!(!calls.fragment(7, "{", &mut out), "no call 7 yet");
        calls.start(7, |i| format!("call_{i}"), "a", &mut out);
        calls.start(3, |_| "given".into(), "b", &mut out);
        calls.start(5, |_| "c".into(), "c", &mut out);
        assert!(calls.fragment(7, "", &mut out), "empty: nothing relayed");
        assert!(calls.fragment(3, "{\"x\":1}", &mut out));
        calls.end(3, Some("{\"ignored\":1}"), &mut out);
        calls.end(5, Some("{\"whole\":1}"), &mut out);
        calls.end_all(&mut out);
        calls.forget(7);
        assert!(!calls.fragment(7, "{}", &mut out), "forgotten");
        assert_eq!((calls.started(), calls.highest_number()), (3, Some(5)));
        let started = |index: usize, id: &str, name: &str| Event::ToolCallStarted {
            index,
            id: id.into(),
            name: name.into(),
        };
        assert_eq!(
            out,
            vec![
                started(0, "call_0", "a"),
                started(1, "given", "b"),
                started(2, "c", "c"),
                args(1, "{\"x\":1}"),
                args(2, "{\"whole\":1}"),
                args(0, "{}"),
            ]
        );
    }
}
