//! [`ToolExecutor`]: the daemon's side of the executor protocol, over any reader and writer
//! (the pipes of a caged `kaged tool-exec`). Calls carry their own ids and may overlap;
//! replies are matched by id, and a reply for an id nobody waits for is ignored (the
//! executor's output is the cage's: see [`crate::protocol`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::Value;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};

use crate::protocol::{Call, Cancel, Line, MAX_LINE, Reply, ToolOutcome, read_line};

#[derive(Debug, thiserror::Error)]
pub enum ExecutorError {
    #[error("the tool executor has ended (its cage stopped or its pipes closed)")]
    Gone,
}

/// Calls waiting for their reply; `None` once the executor's output ended.
type Waiting = Arc<Mutex<Option<HashMap<u64, oneshot::Sender<ToolOutcome>>>>>;

enum Outgoing {
    Line(String),
    Close,
}

/// A running executor, seen from the daemon. Dropping it closes the executor's input, which
/// ends the executor and every call still running.
pub struct ToolExecutor {
    to_executor: mpsc::UnboundedSender<Outgoing>,
    waiting: Waiting,
    next_id: AtomicU64,
}

/// A call on its way: its outcome with [`PendingCall::outcome`]; dropped before that, it is
/// cancelled (its shell killed).
pub struct PendingCall {
    id: u64,
    reply: Option<oneshot::Receiver<ToolOutcome>>,
    to_executor: mpsc::UnboundedSender<Outgoing>,
    waiting: Waiting,
}

impl ToolExecutor {
    /// Speak to an executor whose output is `from` and input `to`. Call inside a Tokio
    /// runtime (two tasks carry the lines).
    pub fn new<R, W>(from: R, to: W) -> ToolExecutor
    where
        R: AsyncRead + Unpin + Send + 'static,
        W: AsyncWrite + Unpin + Send + 'static,
    {
        let waiting: Waiting = Arc::new(Mutex::new(Some(HashMap::new())));
        let (to_executor, mut outgoing) = mpsc::unbounded_channel::<Outgoing>();
        tokio::spawn(async move {
            let mut to = to;
            while let Some(Outgoing::Line(line)) = outgoing.recv().await {
                if to.write_all(line.as_bytes()).await.is_err() || to.flush().await.is_err() {
                    break;
                }
            }
            let _ = to.shutdown().await;
        });
        let replies = waiting.clone();
        tokio::spawn(async move {
            let mut from = tokio::io::BufReader::new(from);
            while let Ok(Some(line)) = read_line(&mut from, MAX_LINE).await {
                let Line::Text(text) = line else { continue };
                let Ok(reply) = serde_json::from_slice::<Reply>(&text) else {
                    continue;
                };
                let Some(id) = reply.id else { continue };
                let sender = lock(&replies).as_mut().and_then(|w| w.remove(&id));
                if let Some(sender) = sender {
                    let _ = sender.send(reply.outcome());
                }
            }
            // Every call still waiting learns that no reply will come.
            lock(&replies).take();
        });
        ToolExecutor {
            to_executor,
            waiting,
            next_id: AtomicU64::new(1),
        }
    }

    /// Send a call; its outcome comes through the returned [`PendingCall`].
    pub fn start(&self, tool: &str, arguments: Value) -> Result<PendingCall, ExecutorError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        lock(&self.waiting)
            .as_mut()
            .ok_or(ExecutorError::Gone)?
            .insert(id, tx);
        let call = Call {
            id,
            tool: tool.to_string(),
            arguments,
        };
        let line = serde_json::to_string(&call).map_err(|_| ExecutorError::Gone)? + "\n";
        let pending = PendingCall {
            id,
            reply: Some(rx),
            to_executor: self.to_executor.clone(),
            waiting: self.waiting.clone(),
        };
        self.to_executor
            .send(Outgoing::Line(line))
            .map_err(|_| ExecutorError::Gone)?;
        Ok(pending)
    }

    /// One call, start to outcome. Dropping the future cancels the call.
    pub async fn call(&self, tool: &str, arguments: Value) -> Result<ToolOutcome, ExecutorError> {
        self.start(tool, arguments)?.outcome().await
    }

    /// Close the executor's input: it ends, and every call still running with it (their
    /// shells killed); their callers get [`ExecutorError::Gone`] once its output ends. The
    /// cage's own killer (`kaged_spawn::Killer`) is the stop that needs no cooperation.
    pub fn close(&self) {
        let _ = self.to_executor.send(Outgoing::Close);
    }
}

impl Drop for ToolExecutor {
    fn drop(&mut self) {
        self.close();
    }
}

impl PendingCall {
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Wait for the outcome.
    pub async fn outcome(mut self) -> Result<ToolOutcome, ExecutorError> {
        let Some(reply) = self.reply.as_mut() else {
            return Err(ExecutorError::Gone);
        };
        let outcome = reply.await.map_err(|_| ExecutorError::Gone);
        self.reply = None;
        outcome
    }

    /// Cancel the call now (its outcome then says it was cancelled).
    pub fn cancel(&self) {
        let line = serde_json::to_string(&Cancel { cancel: self.id }).unwrap_or_default() + "\n";
        let _ = self.to_executor.send(Outgoing::Line(line));
    }
}

impl Drop for PendingCall {
    fn drop(&mut self) {
        if self.reply.is_some() {
            self.cancel();
            if let Some(w) = lock(&self.waiting).as_mut() {
                w.remove(&self.id);
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn connected() -> (ToolExecutor, tokio::task::JoinHandle<std::io::Result<()>>) {
        let (to_w, to_r) = tokio::io::duplex(1 << 16);
        let (from_w, from_r) = tokio::io::duplex(1 << 16);
        let served = tokio::spawn(crate::serve(to_r, from_w, None));
        (ToolExecutor::new(from_r, to_w), served)
    }

    #[tokio::test]
    async fn calls_overlap_and_are_matched_by_id() {
        let (exec, served) = connected();
        let slow = exec
            .start("shell.bash", json!({"command": "sleep 2; echo slow"}))
            .unwrap();
        let fast = exec
            .call("shell.bash", json!({"command": "echo fast"}))
            .await
            .unwrap();
        assert_eq!(
            fast,
            ToolOutcome::Ok {
                output: "fast\n[exit code 0]".into(),
                truncated: false
            }
        );
        let slow = slow.outcome().await.unwrap();
        assert_eq!(slow.text(), "slow\n[exit code 0]");
        let bad = exec.call("file.read", json!("{nope")).await.unwrap();
        assert!(!bad.is_ok() && bad.text().contains("not JSON"), "{bad:?}");
        drop(exec);
        served.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn cancel_and_close_end_calls() {
        let (exec, served) = connected();
        let started = std::time::Instant::now();
        let long = exec
            .start("shell.bash", json!({"command": "sleep 300"}))
            .unwrap();
        long.cancel();
        let outcome = long.outcome().await.unwrap();
        assert!(outcome.text().contains("cancelled"), "{outcome:?}");
        let other = exec
            .start("shell.bash", json!({"command": "sleep 300"}))
            .unwrap();
        exec.close();
        // The executor answers what it cancelled as it ends; later calls find it gone.
        let ended = other.outcome().await.unwrap();
        assert!(ended.text().contains("cancelled"), "{ended:?}");
        assert!(matches!(
            exec.call("file.read", json!({"path": "x"})).await,
            Err(ExecutorError::Gone)
        ));
        served.await.unwrap().unwrap();
        assert!(started.elapsed() < std::time::Duration::from_secs(20));
    }
}
