//! The threads of a run (runner and pump, input writer, screen follower) are detached: a panic
//! in one would end it quietly, and the run could stay `running` forever with nobody noticing.
//! Each is started through [`spawn`], which catches the panic, logs it as an error with the
//! session id and the panic's message, and hands it to the thread's own clean-up (the runner's
//! kills the run's processes and marks the run failed when it has no end yet).

use std::any::Any;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::thread::JoinHandle;

/// Start `body` on a thread named `kaged-ROLE-SESSION8`. A panic in it is logged (`error`,
/// with `session`, `thread` and `panic`), then `on_panic` gets its message.
pub(crate) fn spawn<F, P>(
    role: &'static str,
    session: &str,
    body: F,
    on_panic: P,
) -> std::io::Result<JoinHandle<()>>
where
    F: FnOnce() + Send + 'static,
    P: FnOnce(&str) + Send + 'static,
{
    let session = session.to_string();
    std::thread::Builder::new()
        .name(format!("kaged-{role}-{}", session.get(..8).unwrap_or(&session)))
        .spawn(move || {
            if let Err(payload) = catch_unwind(AssertUnwindSafe(body)) {
                let text = message(payload.as_ref());
                tracing::error!(%session, thread = role, panic = %text, "a thread of the run panicked");
                // The clean-up must not take the thread down with a second panic unseen.
                if let Err(again) = catch_unwind(AssertUnwindSafe(|| on_panic(&text))) {
                    tracing::error!(%session, thread = role, panic = %message(again.as_ref()), "cleaning up after a panic panicked");
                }
            }
        })
}

/// The text a panic was raised with (`panic!("…")` gives a `&str` or a `String`).
pub(crate) fn message(payload: &(dyn Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".into())
}

/// Test builds only: `KAGED_TEST_PANIC=ROLE` makes the thread of that role panic at its
/// injection point (runner: in the pump, after the first output; writer: at the first input;
/// screen: when it starts), so the end-to-end tests can prove where a panic goes. Release
/// builds never read the variable.
pub(crate) fn inject(role: &str) {
    #[cfg(debug_assertions)]
    if std::env::var("KAGED_TEST_PANIC").is_ok_and(|r| r == role) {
        panic!("injected by KAGED_TEST_PANIC={role}");
    }
    #[cfg(not(debug_assertions))]
    let _ = role;
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::sync::mpsc;

    use super::*;

    #[test]
    fn a_panic_reaches_the_clean_up_with_its_message_and_the_thread_ends_normally() {
        let (tx, rx) = mpsc::channel();
        let thread = spawn(
            "test",
            "0123456789abcdef",
            || panic!("boom {}", 42),
            move |message| tx.send(message.to_string()).unwrap(),
        )
        .unwrap();
        assert_eq!(thread.thread().name(), Some("kaged-test-01234567"));
        assert!(thread.join().is_ok(), "the panic escaped the wrapper");
        assert_eq!(rx.recv().unwrap(), "boom 42");
    }

    #[test]
    fn no_panic_no_clean_up() {
        let (tx, rx) = mpsc::channel::<String>();
        spawn(
            "test",
            "0123456789abcdef",
            || {},
            move |m| tx.send(m.into()).unwrap(),
        )
        .unwrap()
        .join()
        .unwrap();
        assert!(rx.recv().is_err(), "clean-up ran without a panic");
    }

    #[test]
    fn a_static_message_is_kept() {
        let payload = catch_unwind(|| panic!("static")).unwrap_err();
        assert_eq!(message(payload.as_ref()), "static");
    }
}
