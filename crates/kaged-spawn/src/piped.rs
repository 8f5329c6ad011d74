//! Starting a prepared command on pipes instead of a PTY (`spawn_piped`): for a program that
//! speaks a protocol on its stdin and stdout, such as the tool executor (`kaged tool-exec`)
//! in a model agent's cage. The start is the same as a PTY run's (one command line, the
//! same descriptors, cgroups, `cage-check` first, [`Killer`] and [`Waiter`]); only the
//! standard descriptors differ.

use std::process::{ChildStderr, ChildStdin, ChildStdout, Stdio};

use crate::process::{SPAWN_LOCK, hold};
use crate::*;

/// A run started on pipes: the caller's ends of its stdin, stdout and stderr (blocking; an
/// async caller turns each into an `OwnedFd`, e.g. for `tokio::net::unix::pipe`). Read
/// stderr too (a cage's refusal by `cage-check` is said there): a full pipe stops the run.
pub struct PipedRun {
    pub stdin: ChildStdin,
    pub stdout: ChildStdout,
    pub stderr: ChildStderr,
    pub killer: Killer,
    pub waiter: Waiter,
}

/// Start `spec` with piped stdin, stdout and stderr, in a process group of its own (so an
/// uncaged run is killed as a whole, like a PTY run). Call it from a thread that lives as
/// long as the run (see `setpriv --pdeathsig` in the crate documentation).
pub fn spawn_piped(spec: &Spec) -> Result<PipedRun, SpawnError> {
    use std::os::unix::process::CommandExt;
    let Prepared {
        mut command,
        program,
        caged,
        fds,
    } = prepare(spec)?;
    // std makes its pipes close-on-exec: no other run started meanwhile gets them.
    command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    fds::place(&mut command, fds);
    let spawned = {
        let _spawning = SPAWN_LOCK.lock().unwrap_or_else(|p| p.into_inner());
        command.spawn()
    };
    let mut child = spawned.map_err(|source| SpawnError::Start {
        program: program.clone(),
        source,
    })?;
    let (Some(stdin), Some(stdout), Some(stderr)) =
        (child.stdin.take(), child.stdout.take(), child.stderr.take())
    else {
        let _ = child.kill();
        let _ = child.wait();
        return Err(SpawnError::Start {
            program,
            source: std::io::Error::other("its pipes were not made"),
        });
    };
    let (killer, waiter) = hold(child, caged)?;
    Ok(PipedRun {
        stdin,
        stdout,
        stderr,
        killer,
        waiter,
    })
}

#[cfg(test)]
mod tests {
    use std::io::{BufRead, Read, Write};

    use super::*;

    fn uncaged(script: &str) -> Spec {
        let mut spec = Spec::uncaged(
            vec!["sh".into(), "-c".into(), script.into()],
            std::env::temp_dir(),
            &[("GRANTED".into(), "yes".into())],
        );
        spec.env.retain(|(k, _)| k != "HOME");
        spec
    }

    #[test]
    fn stdin_stdout_and_stderr_are_the_callers_pipes() {
        let mut run = spawn_piped(&uncaged(
            "read line; echo got:$line; echo oops >&2; env | sort; test -t 0 || echo no-tty",
        ))
        .unwrap();
        run.stdin.write_all(b"hello\n").unwrap();
        drop(run.stdin);
        let mut out = String::new();
        run.stdout.read_to_string(&mut out).unwrap();
        let mut err = String::new();
        run.stderr.read_to_string(&mut err).unwrap();
        assert_eq!(run.waiter.wait(), Exit::Code(0));
        assert!(out.starts_with("got:hello\n"), "{out}");
        assert!(
            out.contains("GRANTED=yes") && out.contains("no-tty"),
            "{out}"
        );
        assert!(
            !out.contains("CARGO"),
            "the caller's environment leaked: {out}"
        );
        assert_eq!(err, "oops\n");
    }

    #[test]
    fn kill_ends_the_run_and_what_it_started() {
        let run = spawn_piped(&uncaged("sleep 300 & echo $!; wait")).unwrap();
        let mut first = String::new();
        std::io::BufReader::new(run.stdout)
            .read_line(&mut first)
            .unwrap();
        let sleeper = first.trim().to_string();
        assert!(std::path::Path::new(&format!("/proc/{sleeper}")).exists());
        assert!(run.killer.kill() >= 1);
        assert_eq!(run.waiter.wait(), Exit::Signal(9));
        std::thread::sleep(std::time::Duration::from_millis(100));
        let gone = std::fs::read_to_string(format!("/proc/{sleeper}/stat"))
            .map_or(true, |s| s.contains(") Z "));
        assert!(gone, "the child {sleeper} survived the kill");
    }
}
