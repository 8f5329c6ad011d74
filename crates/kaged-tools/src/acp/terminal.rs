//! `terminal/*`, served inside the cage: each terminal is a process in a process group of
//! its own (as `shell.bash` runs commands), stdin empty, stdout and stderr combined into one
//! output of which the last `outputByteLimit` bytes are kept (default [`DEFAULT_OUTPUT`],
//! at most [`MAX_OUTPUT`]). When the command exits, what it left running in its group is
//! killed and the output read a little longer ([`DRAIN`]); then its exit status is known.
//! `terminal/kill` kills the group; `terminal/release` kills it and forgets the terminal;
//! dropping [`Terminals`] (the shim ending) kills every group.
//!
//! A `command` with no `args` is a command line, run by `bash -c` (`sh -c` without bash), as
//! agents send what their shell tool was given; with `args` it is the program itself.

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::process::Stdio;
use std::sync::{Arc, Mutex};

use serde::Deserialize;
use serde_json::{Value, json};
use tokio::io::AsyncReadExt;
use tokio::sync::watch;

use super::jsonrpc::{Audit, Failure, io_text};
use crate::cap::HeadTail;
use crate::shell::{DRAIN, Group, shell};

pub const DEFAULT_OUTPUT: u64 = 1 << 20;
pub const MAX_OUTPUT: u64 = 4 << 20;
/// Terminals an agent may hold at once (released ones do not count).
pub const MAX_TERMINALS: usize = 64;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct CreateParams {
    command: String,
    #[serde(default)]
    args: Vec<String>,
    #[serde(default)]
    env: Vec<EnvVar>,
    #[serde(default)]
    cwd: Option<String>,
    #[serde(default)]
    output_byte_limit: Option<u64>,
}

#[derive(Debug, Deserialize)]
struct EnvVar {
    name: String,
    value: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct TerminalParams {
    terminal_id: String,
}

/// How a terminal's command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Exit {
    code: Option<i32>,
    signal: Option<i32>,
}

impl Exit {
    fn of(status: std::process::ExitStatus) -> Exit {
        use std::os::unix::process::ExitStatusExt;
        Exit {
            code: status.code(),
            signal: status.signal(),
        }
    }

    /// ACP's `{"exitCode", "signal"}`, the signal by name ("SIGKILL").
    fn json(self) -> Value {
        let signal = self.signal.map(|s| {
            nix::sys::signal::Signal::try_from(s)
                .map_or_else(|_| s.to_string(), |sig| sig.as_str().to_string())
        });
        json!({"exitCode": self.code, "signal": signal})
    }
}

/// What a terminal's watcher and its requests share.
struct Shared {
    output: Mutex<HeadTail>,
    group: Mutex<Group>,
}

impl Shared {
    fn kill(&self) {
        if let Ok(mut group) = self.group.lock() {
            group.kill();
        }
    }
}

struct Terminal {
    shared: Arc<Shared>,
    exit: watch::Receiver<Option<Exit>>,
    watcher: tokio::task::AbortHandle,
}

impl Drop for Terminal {
    fn drop(&mut self) {
        self.shared.kill();
        // Its child is killed on drop, too.
        self.watcher.abort();
    }
}

/// The agent's terminals, by id.
#[derive(Default)]
pub struct Terminals {
    live: Mutex<HashMap<String, Arc<Terminal>>>,
    next: Mutex<u64>,
}

fn params<T: serde::de::DeserializeOwned>(method: &str, params: &Value) -> Result<T, Failure> {
    serde_json::from_value(params.clone())
        .map_err(|e| Failure::invalid(format!("{method}: invalid params: {e}")))
}

/// What the audit line says of a terminal request: its command and args, or its terminal.
pub fn audit_of(params: &Value) -> Audit {
    let mut audit = Audit::default();
    for key in ["command", "args", "terminalId"] {
        if let Some(v) = params.get(key) {
            audit = audit.with(key, v.clone());
        }
    }
    audit
}

impl Terminals {
    fn get(&self, raw: &Value, method: &str) -> Result<Arc<Terminal>, Failure> {
        let p: TerminalParams = params(method, raw)?;
        self.live
            .lock()
            .ok()
            .and_then(|live| live.get(&p.terminal_id).cloned())
            .ok_or_else(|| Failure::invalid(format!("no terminal {}", p.terminal_id)))
    }

    /// Kills every terminal's group (the shim is ending).
    pub fn kill_all(&self) {
        if let Ok(mut live) = self.live.lock() {
            live.clear();
        }
    }

    /// `terminal/create`: `{"terminalId"}` once the command started.
    pub fn create(&self, raw: &Value) -> Result<Value, Failure> {
        let p: CreateParams = params("terminal/create", raw)?;
        if self.live.lock().map_or(0, |l| l.len()) >= MAX_TERMINALS {
            return Err(Failure::invalid(format!(
                "{MAX_TERMINALS} terminals are open; release one first"
            )));
        }
        let limit = p
            .output_byte_limit
            .unwrap_or(DEFAULT_OUTPUT)
            .min(MAX_OUTPUT);
        let limit = usize::try_from(limit).unwrap_or(usize::MAX);
        let cannot = |e: std::io::Error| {
            Failure::internal(format!("cannot run {}: {}", p.command, io_text(&e)))
        };
        let (reader, writer) = std::io::pipe().map_err(cannot)?;
        let mut cmd = if p.args.is_empty() {
            let mut cmd = tokio::process::Command::new(shell());
            cmd.arg("-c").arg(&p.command);
            cmd
        } else {
            let mut cmd = tokio::process::Command::new(&p.command);
            cmd.args(&p.args);
            cmd
        };
        cmd.envs(p.env.iter().map(|v| (&v.name, &v.value)))
            .stdin(Stdio::null())
            .stdout(writer.try_clone().map_err(cannot)?)
            .stderr(writer)
            .process_group(0)
            .kill_on_drop(true);
        if let Some(cwd) = &p.cwd {
            if !std::path::Path::new(cwd).is_absolute() {
                return Err(Failure::invalid(format!("cwd must be absolute: {cwd}")));
            }
            cmd.current_dir(cwd);
        }
        let child = cmd.spawn().map_err(cannot)?;
        // The command (holding the pipe's writing end) is dropped: the end of output is seen.
        drop(cmd);
        let shared = Arc::new(Shared {
            output: Mutex::new(HeadTail::new(0, limit)),
            group: Mutex::new(Group(child.id().and_then(|id| i32::try_from(id).ok()))),
        });
        let output = tokio::net::unix::pipe::Receiver::from_owned_fd(OwnedFd::from(reader))
            .map_err(cannot)?;
        let (tx, exit) = watch::channel(None);
        let watcher = tokio::spawn(watch_command(child, output, shared.clone(), tx));
        let mut next = self
            .next
            .lock()
            .map_err(|_| Failure::internal("terminals lost"))?;
        *next += 1;
        let id = format!("term-{next}");
        let terminal = Arc::new(Terminal {
            shared,
            exit,
            watcher: watcher.abort_handle(),
        });
        if let Ok(mut live) = self.live.lock() {
            live.insert(id.clone(), terminal);
        }
        Ok(json!({ "terminalId": id }))
    }

    /// `terminal/output`: `{"output", "truncated", "exitStatus"}` (null while it runs).
    pub fn output(&self, raw: &Value, audit: &mut Audit) -> Result<Value, Failure> {
        let terminal = self.get(raw, "terminal/output")?;
        // The exit is read first: output taken after it is complete.
        let exit = *terminal.exit.borrow();
        let (output, truncated) = terminal
            .shared
            .output
            .lock()
            .map_err(|_| Failure::internal("the output was lost"))?
            .tail_text();
        audit.bytes = Some(output.len() as u64);
        Ok(json!({
            "output": output,
            "truncated": truncated,
            "exitStatus": exit.map(Exit::json),
        }))
    }

    /// `terminal/wait_for_exit`: `{"exitCode", "signal"}` once the command ended.
    pub async fn wait_for_exit(&self, raw: &Value) -> Result<Value, Failure> {
        let mut exit = self.get(raw, "terminal/wait_for_exit")?.exit.clone();
        match exit.wait_for(Option::is_some).await {
            Ok(done) => Ok(done.map_or(Value::Null, Exit::json)),
            Err(_) => Err(Failure::internal(
                "the terminal was released before its command ended",
            )),
        }
    }

    /// `terminal/kill`: `{}`; the terminal stays for its output and exit status.
    pub fn kill(&self, raw: &Value) -> Result<Value, Failure> {
        self.get(raw, "terminal/kill")?.shared.kill();
        Ok(json!({}))
    }

    /// `terminal/release`: `{}`; the command is killed if it still runs, the id forgotten.
    pub fn release(&self, raw: &Value) -> Result<Value, Failure> {
        let p: TerminalParams = params("terminal/release", raw)?;
        let gone = self
            .live
            .lock()
            .ok()
            .and_then(|mut live| live.remove(&p.terminal_id));
        match gone {
            // Dropped (killed) here unless a wait still holds it; that wait then ends.
            Some(_) => Ok(json!({})),
            None => Err(Failure::invalid(format!("no terminal {}", p.terminal_id))),
        }
    }
}

impl Drop for Terminals {
    fn drop(&mut self) {
        self.kill_all();
    }
}

/// Reads the command's output until it exited and the output ended (or [`DRAIN`] passed
/// after its exit), then publishes the exit.
async fn watch_command(
    mut child: tokio::process::Child,
    mut output: tokio::net::unix::pipe::Receiver,
    shared: Arc<Shared>,
    exit: watch::Sender<Option<Exit>>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    let mut status = None;
    let mut eof = false;
    // Armed when the command exits.
    let drain = tokio::time::sleep(std::time::Duration::from_secs(365 * 24 * 3600));
    tokio::pin!(drain);
    while !(eof && status.is_some()) {
        tokio::select! {
            read = output.read(&mut buf), if !eof => match read {
                Ok(0) | Err(_) => eof = true,
                Ok(n) => {
                    if let Ok(mut kept) = shared.output.lock() {
                        kept.push(&buf[..n]);
                    }
                }
            },
            ended = child.wait(), if status.is_none() => {
                status = Some(ended.ok().map(Exit::of));
                shared.kill();
                drain.as_mut().reset(tokio::time::Instant::now() + DRAIN);
            },
            () = &mut drain => break,
        }
    }
    // The group is not killed again: its number may be reused once nobody is in it.
    if let Ok(mut group) = shared.group.lock() {
        group.0 = None;
    }
    let ended = status.flatten().unwrap_or(Exit {
        code: None,
        signal: None,
    });
    let _ = exit.send(Some(ended));
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn id_of(created: Result<Value, Failure>) -> Value {
        json!({"sessionId": "s", "terminalId": created.unwrap()["terminalId"].clone()})
    }

    #[tokio::test]
    async fn a_command_runs_and_its_output_and_exit_are_given() {
        let terminals = Terminals::default();
        let dir = tempfile::tempdir().unwrap();
        let t = id_of(terminals.create(&json!({
            "sessionId": "s",
            "command": "sh",
            "args": ["-c", "echo \"$GREETING from $(pwd)\"; echo err >&2; exit 3"],
            "env": [{"name": "GREETING", "value": "hi"}],
            "cwd": dir.path(),
        })));
        let exit = terminals.wait_for_exit(&t).await.unwrap();
        assert_eq!(exit, json!({"exitCode": 3, "signal": null}));
        let mut audit = Audit::default();
        let out = terminals.output(&t, &mut audit).unwrap();
        let expected = format!("hi from {}\nerr\n", dir.path().display());
        assert_eq!(
            out,
            json!({"output": expected, "truncated": false, "exitStatus": {"exitCode": 3, "signal": null}})
        );
        assert_eq!(audit.bytes, Some(expected.len() as u64));
        assert_eq!(terminals.release(&t), Ok(json!({})));
        let gone = terminals.output(&t, &mut Audit::default()).unwrap_err();
        assert_eq!(gone.code, -32602);
        assert!(
            gone.message.starts_with("no terminal term-"),
            "{}",
            gone.message
        );
    }

    #[tokio::test]
    async fn a_command_line_without_args_runs_in_the_shell_and_keeps_the_tail() {
        let terminals = Terminals::default();
        let t = id_of(terminals.create(&json!({
            "command": "seq 1 1000; echo done",
            "outputByteLimit": 10,
        })));
        terminals.wait_for_exit(&t).await.unwrap();
        let out = terminals.output(&t, &mut Audit::default()).unwrap();
        assert_eq!(out["output"], json!("999\n1000\ndone\n"[4..]));
        assert_eq!(out["truncated"], json!(true));
        assert_eq!(out["exitStatus"]["exitCode"], json!(0));
    }

    fn alive(pid: &str) -> bool {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .is_ok_and(|s| !s.contains(") Z ") && !s.contains(") X "))
    }

    async fn first_line(terminals: &Terminals, t: &Value) -> String {
        for _ in 0..100 {
            let out = terminals.output(t, &mut Audit::default()).unwrap();
            if let Some(line) = out["output"].as_str().and_then(|o| o.lines().next()) {
                return line.to_string();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("no output");
    }

    #[tokio::test]
    async fn kill_ends_the_group_and_says_by_which_signal() {
        let terminals = Terminals::default();
        let t = id_of(terminals.create(&json!({"command": "sleep 300 & echo $!; sleep 300"})));
        let background = first_line(&terminals, &t).await;
        assert!(alive(&background));
        let out = terminals.output(&t, &mut Audit::default()).unwrap();
        assert_eq!(out["exitStatus"], Value::Null);
        assert_eq!(terminals.kill(&t), Ok(json!({})));
        let exit = tokio::time::timeout(Duration::from_secs(10), terminals.wait_for_exit(&t))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(exit, json!({"exitCode": null, "signal": "SIGKILL"}));
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(!alive(&background), "{background} survived the kill");
    }

    #[tokio::test]
    async fn release_and_the_end_of_the_shim_kill_what_runs() {
        let terminals = Terminals::default();
        let a = id_of(terminals.create(&json!({"command": "echo $$; sleep 300"})));
        let b = id_of(terminals.create(&json!({"command": "echo $$; sleep 300"})));
        let (pid_a, pid_b) = (
            first_line(&terminals, &a).await,
            first_line(&terminals, &b).await,
        );
        assert!(alive(&pid_a) && alive(&pid_b));
        terminals.release(&a).unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(!alive(&pid_a), "{pid_a} survived its release");
        assert!(alive(&pid_b));
        drop(terminals);
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(!alive(&pid_b), "{pid_b} survived the end of the shim");
    }

    #[tokio::test]
    async fn bad_requests_are_refused() {
        let terminals = Terminals::default();
        let missing = terminals
            .create(&json!({"command": "/no/such/program", "args": ["x"]}))
            .unwrap_err();
        assert_eq!(missing.code, -32603);
        assert_eq!(
            missing.message,
            "cannot run /no/such/program: No such file or directory"
        );
        let relative = terminals
            .create(&json!({"command": "true", "cwd": "rel"}))
            .unwrap_err();
        assert_eq!(relative.message, "cwd must be absolute: rel");
        let no_command = terminals.create(&json!({"args": []})).unwrap_err();
        assert_eq!(no_command.code, -32602);
        let unknown = terminals
            .wait_for_exit(&json!({"terminalId": "term-77"}))
            .await
            .unwrap_err();
        assert_eq!(unknown.message, "no terminal term-77");
    }
}
