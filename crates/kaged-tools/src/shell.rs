//! `shell.bash`: one command through `bash -c` (`sh -c` where there is no bash), stdin
//! empty, stdout and stderr combined and capped ([`HeadTail`]), in a process group of its
//! own that is killed as a whole on timeout, on cancel, and once the command exits (nothing
//! it started lingers).

use std::os::fd::OwnedFd;
use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use serde::Deserialize;
use tokio::io::AsyncReadExt;

use crate::Done;
use crate::cap::{HeadTail, KEEP_EACH_END};

pub const DEFAULT_TIMEOUT_SECS: u64 = 120;
pub const MAX_TIMEOUT_SECS: u64 = 600;
/// How long output is still read once the command exited (and its group was killed).
pub(crate) const DRAIN: Duration = Duration::from_secs(2);

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BashArgs {
    pub command: String,
    #[serde(default)]
    pub timeout_secs: Option<u64>,
}

/// The timeout asked for, checked.
pub fn timeout_of(args: &BashArgs) -> Result<Duration, String> {
    match args.timeout_secs {
        None => Ok(Duration::from_secs(DEFAULT_TIMEOUT_SECS)),
        Some(0) => Err("timeout_secs must be at least 1".into()),
        Some(s) if s > MAX_TIMEOUT_SECS => Err(format!(
            "timeout_secs may be at most {MAX_TIMEOUT_SECS}; run longer work in steps"
        )),
        Some(s) => Ok(Duration::from_secs(s)),
    }
}

/// `bash` when it is on PATH, else `sh`.
pub(crate) fn shell() -> &'static str {
    let has_bash = std::env::var_os("PATH").is_some_and(|path| {
        std::env::split_paths(&path).any(|d| {
            use std::os::unix::fs::PermissionsExt;
            std::fs::metadata(d.join("bash"))
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
    });
    if has_bash { "bash" } else { "sh" }
}

/// The command's process group, killed when this is dropped (cancel included). Until the
/// leader (the child) is reaped, the number is the group's. After that it stays the group's
/// for as long as any member lives (the kernel does not hand out a number a group still
/// uses), which is when killing matters; with no member left the kill finds nobody, short of
/// the number being reused within the moment between reap and kill.
pub(crate) struct Group(pub(crate) Option<i32>);

impl Group {
    pub(crate) fn kill(&mut self) {
        if let Some(pgid) = self.0 {
            let _ = killpg(Pid::from_raw(pgid), Signal::SIGKILL);
        }
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        self.kill();
    }
}

/// How the run ended, as the last line of the output.
fn ending(status: Option<std::process::ExitStatus>, timeout: Duration, timed_out: bool) -> String {
    use std::os::unix::process::ExitStatusExt;
    if timed_out {
        return format!(
            "[timed out after {} s: the command and its processes were killed]",
            timeout.as_secs()
        );
    }
    match status {
        Some(s) => match (s.code(), s.signal()) {
            (Some(code), _) => format!("[exit code {code}]"),
            (None, Some(sig)) => format!("[killed by signal {sig}]"),
            _ => "[ended]".into(),
        },
        None => "[ended, its status unknown]".into(),
    }
}

pub async fn bash(args: BashArgs) -> Result<Done, String> {
    let timeout = timeout_of(&args)?;
    let failed = |e: std::io::Error| format!("cannot run the command: {e}");
    let (reader, writer) = std::io::pipe().map_err(failed)?;
    let program = shell();
    let mut child = {
        let mut cmd = tokio::process::Command::new(program);
        cmd.arg("-c")
            .arg(&args.command)
            .stdin(Stdio::null())
            .stdout(writer.try_clone().map_err(failed)?)
            .stderr(writer)
            .process_group(0)
            .kill_on_drop(true);
        // The command (holding the pipe's writing end) is dropped here: only the child
        // writes, so the end of its output is seen.
        cmd.spawn()
            .map_err(|e| format!("cannot run {program}: {e}"))?
    };
    let mut group = Group(child.id().and_then(|id| i32::try_from(id).ok()));
    let mut output =
        tokio::net::unix::pipe::Receiver::from_owned_fd(OwnedFd::from(reader)).map_err(failed)?;
    let mut kept = HeadTail::new(KEEP_EACH_END, KEEP_EACH_END);
    let mut buf = vec![0u8; 16 * 1024];
    let deadline = tokio::time::sleep(timeout);
    tokio::pin!(deadline);
    let (mut status, mut eof, mut timed_out) = (None, false, false);
    while !(eof && status.is_some()) {
        tokio::select! {
            read = output.read(&mut buf), if !eof => match read {
                Ok(0) | Err(_) => eof = true,
                Ok(n) => kept.push(&buf[..n]),
            },
            exited = child.wait(), if status.is_none() => {
                status = Some(exited.map_err(failed)?);
                // What it left running goes too; its output is read a little longer.
                group.kill();
                let drain_until = tokio::time::Instant::now() + DRAIN;
                if drain_until < deadline.deadline() {
                    deadline.as_mut().reset(drain_until);
                }
            },
            () = &mut deadline => {
                timed_out = status.is_none();
                group.kill();
                break;
            },
        }
    }
    if timed_out {
        let _ = child.wait().await;
    }
    group.0 = None;
    let (mut text, truncated) = kept.finish();
    if !text.is_empty() && !text.ends_with('\n') {
        text.push('\n');
    }
    if text.is_empty() {
        text.push_str("[no output]\n");
    }
    text.push_str(&ending(status, timeout, timed_out));
    Ok(Done {
        output: text,
        truncated,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(command: &str, timeout_secs: Option<u64>) -> BashArgs {
        BashArgs {
            command: command.into(),
            timeout_secs,
        }
    }

    #[test]
    fn timeouts_are_checked() {
        assert_eq!(
            timeout_of(&args("x", None)).unwrap(),
            Duration::from_secs(120)
        );
        assert_eq!(
            timeout_of(&args("x", Some(600))).unwrap(),
            Duration::from_secs(600)
        );
        assert!(
            timeout_of(&args("x", Some(601)))
                .unwrap_err()
                .contains("at most 600")
        );
        assert!(timeout_of(&args("x", Some(0))).is_err());
    }

    #[tokio::test]
    async fn output_is_combined_with_the_exit_code() {
        let done = bash(args("echo out; echo err >&2; exit 3", None))
            .await
            .unwrap();
        assert_eq!(done.output, "out\nerr\n[exit code 3]");
        assert!(!done.truncated);
        let quiet = bash(args("true", None)).await.unwrap();
        assert_eq!(quiet.output, "[no output]\n[exit code 0]");
    }

    #[tokio::test]
    async fn big_output_is_cut_and_marked() {
        let done = bash(args(
            "head -c 1000000 /dev/zero | tr '\\0' x; echo; echo last",
            None,
        ))
        .await
        .unwrap();
        assert!(done.truncated);
        assert!(done.output.len() < 70 * 1024, "{}", done.output.len());
        assert!(done.output.contains("bytes of output cut here"));
        assert!(
            done.output.ends_with("last\n[exit code 0]"),
            "{}",
            &done.output[done.output.len() - 50..]
        );
    }

    fn alive(pid: &str) -> bool {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .is_ok_and(|s| !s.contains(") Z ") && !s.contains(") X "))
    }

    #[tokio::test]
    async fn a_timeout_kills_the_whole_group() {
        let started = std::time::Instant::now();
        let done = bash(args("sleep 300 & echo $! ; sleep 300", Some(1)))
            .await
            .unwrap();
        assert!(started.elapsed() < Duration::from_secs(10));
        assert!(
            done.output
                .ends_with("[timed out after 1 s: the command and its processes were killed]"),
            "{}",
            done.output
        );
        let pid = done.output.lines().next().unwrap().to_string();
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(!alive(&pid), "the background sleep {pid} survived");
    }

    #[tokio::test]
    async fn what_a_command_leaves_behind_is_killed_and_does_not_hold_the_answer() {
        let started = std::time::Instant::now();
        let done = bash(args("sleep 300 & echo $!", None)).await.unwrap();
        assert!(started.elapsed() < Duration::from_secs(10));
        assert!(done.output.ends_with("[exit code 0]"), "{}", done.output);
        let pid = done.output.lines().next().unwrap().to_string();
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(!alive(&pid), "the background sleep {pid} survived");
    }

    #[tokio::test]
    async fn a_cancelled_call_kills_its_group() {
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("pid");
        let script = format!("echo $$ > {}; sleep 300", pidfile.display());
        let call = tokio::spawn(bash(args(&script, None)));
        let mut pid = String::new();
        for _ in 0..100 {
            tokio::time::sleep(Duration::from_millis(50)).await;
            pid = std::fs::read_to_string(&pidfile)
                .unwrap_or_default()
                .trim()
                .to_string();
            if !pid.is_empty() {
                break;
            }
        }
        assert!(alive(&pid));
        call.abort();
        let _ = call.await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(!alive(&pid), "the shell {pid} survived its cancel");
    }
}
