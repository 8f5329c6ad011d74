//! The executor's loop (`kaged tool-exec`): read calls, run each as its own task (a long
//! `shell.bash` does not hold up a `file.read`), write each reply as it finishes. A cancel
//! aborts its call's task (dropping a running shell kills its process group). EOF on the
//! input cancels every running call the same way (each still answered), then ends.

use std::collections::{BTreeSet, HashMap};

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::task::JoinSet;

use crate::protocol::{Incoming, Line, MAX_LINE, Reply, parse_incoming, read_line};

/// Serve calls read from `input` until it ends, replies on `output`. `enabled`: the tools
/// this executor runs (`None`: every one); another is refused like an unknown tool.
pub async fn serve<R, W>(
    input: R,
    mut output: W,
    enabled: Option<BTreeSet<String>>,
) -> std::io::Result<()>
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin,
{
    // Lines are read by a task of their own: reading is then never cut off half-way by a
    // finishing call.
    let (lines_tx, mut lines) = tokio::sync::mpsc::channel::<std::io::Result<Line>>(16);
    let reader = tokio::spawn(async move {
        let mut input = tokio::io::BufReader::new(input);
        loop {
            match read_line(&mut input, MAX_LINE).await {
                Ok(Some(line)) => {
                    if lines_tx.send(Ok(line)).await.is_err() {
                        return;
                    }
                }
                Ok(None) => return,
                Err(e) => {
                    let _ = lines_tx.send(Err(e)).await;
                    return;
                }
            }
        }
    });
    let mut tasks: JoinSet<Reply> = JoinSet::new();
    let mut call_of: HashMap<tokio::task::Id, u64> = HashMap::new();
    let mut running: HashMap<u64, tokio::task::AbortHandle> = HashMap::new();
    let result = loop {
        let reply = tokio::select! {
            line = lines.recv() => match line {
                None => break Ok(()),
                Some(Err(e)) => break Err(e),
                Some(Ok(Line::TooLong)) => Some(Reply::error(
                    None,
                    format!("the line is longer than {MAX_LINE} bytes and was dropped"),
                )),
                Some(Ok(Line::Text(text))) => match parse_incoming(&text) {
                    Err(reply) => Some(reply),
                    Ok(Incoming::Cancel(id)) => {
                        // Its reply comes when the aborted task is collected below.
                        if let Some(task) = running.get(&id) {
                            task.abort();
                        }
                        None
                    }
                    Ok(Incoming::Call(call)) => {
                        if running.contains_key(&call.id) {
                            Some(Reply::error(
                                Some(call.id),
                                format!("call {} is still running; give every call its own id", call.id),
                            ))
                        } else if enabled.as_ref().is_some_and(|e| !e.contains(&call.tool))
                            && crate::TOOLS.contains(&call.tool.as_str())
                        {
                            Some(Reply::error(
                                Some(call.id),
                                format!("the tool {} is not enabled for this agent", call.tool),
                            ))
                        } else {
                            let id = call.id;
                            let task = tasks.spawn(async move {
                                Reply::new(Some(id), crate::run(&call.tool, &call.arguments).await)
                            });
                            call_of.insert(task.id(), id);
                            running.insert(id, task);
                            None
                        }
                    }
                },
            },
            Some(done) = tasks.join_next_with_id(), if !tasks.is_empty() => {
                Some(collected(done, &mut call_of, &mut running))
            },
        };
        if let Some(reply) = reply {
            output.write_all(reply.line().as_bytes()).await?;
            output.flush().await?;
        }
    };
    // Every call still running ends now (dropping a shell kills its process group); each is
    // still answered, for whoever reads on.
    tasks.abort_all();
    while let Some(done) = tasks.join_next_with_id().await {
        let reply = collected(done, &mut call_of, &mut running);
        if output.write_all(reply.line().as_bytes()).await.is_err() {
            break;
        }
    }
    tasks.shutdown().await;
    reader.abort();
    let _ = output.flush().await;
    result
}

/// The reply of a finished task (a cancelled or failed one's says so), forgetting the call.
fn collected(
    done: Result<(tokio::task::Id, Reply), tokio::task::JoinError>,
    call_of: &mut HashMap<tokio::task::Id, u64>,
    running: &mut HashMap<u64, tokio::task::AbortHandle>,
) -> Reply {
    let (task, reply) = match done {
        Ok((task, reply)) => (task, reply),
        Err(e) => {
            let id = call_of.get(&e.id()).copied();
            let why = if e.is_cancelled() {
                "the call was cancelled (a running command was killed)"
            } else {
                "the tool failed unexpectedly"
            };
            (e.id(), Reply::error(id, why.to_string()))
        }
    };
    if let Some(id) = call_of.remove(&task) {
        running.remove(&id);
    }
    reply
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::Reply;
    use tokio::io::{AsyncBufReadExt, BufReader};

    /// An executor on in-memory pipes: the writer of its input, the lines of its output.
    fn executor(
        enabled: Option<BTreeSet<String>>,
    ) -> (
        tokio::io::DuplexStream,
        tokio::io::Lines<BufReader<tokio::io::DuplexStream>>,
        tokio::task::JoinHandle<std::io::Result<()>>,
    ) {
        let (input_w, input_r) = tokio::io::duplex(1 << 16);
        let (output_w, output_r) = tokio::io::duplex(1 << 16);
        let served = tokio::spawn(serve(input_r, output_w, enabled));
        (input_w, BufReader::new(output_r).lines(), served)
    }

    async fn next(lines: &mut tokio::io::Lines<BufReader<tokio::io::DuplexStream>>) -> Reply {
        let line = tokio::time::timeout(std::time::Duration::from_secs(20), lines.next_line())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        serde_json::from_str(&line).unwrap()
    }

    #[tokio::test]
    async fn a_slow_shell_does_not_hold_up_a_read_and_bad_lines_get_errors() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        std::fs::write(&file, "hello\n").unwrap();
        let (mut input, mut lines, served) = executor(None);
        let read = serde_json::json!({"id": 2, "tool": "file.read", "arguments": {"path": file}});
        input
            .write_all(format!("{{\"id\":1,\"tool\":\"shell.bash\",\"arguments\":{{\"command\":\"sleep 3; echo slow\"}}}}\n{read}\nnot json\n{{\"id\":5,\"tool\":\"file.rm\",\"arguments\":{{}}}}\n").as_bytes())
            .await
            .unwrap();
        // Replies come as calls finish: the three quick ones, whatever their order, first.
        let mut quick = Vec::new();
        for _ in 0..3 {
            quick.push(next(&mut lines).await);
        }
        quick.sort_by_key(|r| r.id);
        let [bad, first, unknown] = <[Reply; 3]>::try_from(quick).unwrap();
        assert_eq!(first.id, Some(2));
        assert_eq!(first.output.as_deref(), Some("     1\thello\n"));
        assert_eq!((bad.id, bad.ok), (None, false));
        assert_eq!((unknown.id, unknown.ok), (Some(5), false));
        assert!(unknown.error.unwrap().contains("no tool \"file.rm\""));
        let slow = next(&mut lines).await;
        assert_eq!(slow.id, Some(1));
        assert_eq!(slow.output.as_deref(), Some("slow\n[exit code 0]"));
        drop(input);
        served.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn cancel_ends_one_call_and_eof_ends_the_rest() {
        let (mut input, mut lines, served) =
            executor(Some(["shell.bash".to_string()].into_iter().collect()));
        let started = std::time::Instant::now();
        input
            .write_all(b"{\"id\":1,\"tool\":\"shell.bash\",\"arguments\":{\"command\":\"sleep 300\"}}\n{\"id\":2,\"tool\":\"shell.bash\",\"arguments\":{\"command\":\"sleep 300\"}}\n{\"id\":3,\"tool\":\"file.read\",\"arguments\":{\"path\":\"x\"}}\n")
            .await
            .unwrap();
        let disabled = next(&mut lines).await;
        assert_eq!(disabled.id, Some(3));
        assert!(disabled.error.unwrap().contains("not enabled"));
        input.write_all(b"{\"cancel\":1}\n").await.unwrap();
        let cancelled = next(&mut lines).await;
        assert_eq!((cancelled.id, cancelled.ok), (Some(1), false));
        assert!(cancelled.error.unwrap().contains("cancelled"));
        drop(input);
        let ended = next(&mut lines).await;
        assert_eq!((ended.id, ended.ok), (Some(2), false));
        served.await.unwrap().unwrap();
        assert!(started.elapsed() < std::time::Duration::from_secs(20));
    }
}
