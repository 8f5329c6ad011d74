//! What a held run speaks on: its terminal (a PTY run), or its stdin and stdout (a run on
//! pipes, e.g. an ACP agent), whose stderr is kept in a file of its own, bounded.

use std::io::{Read, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::process::{ChildStderr, ChildStdin, ChildStdout};

use kaged_session::holder::HolderSpec;
use kaged_spawn::{CageFds, Killer, Terminal, Waiter};
use std::path::Path;

/// The run's output and input ends, non-blocking.
pub(crate) enum Io {
    Pty(Terminal),
    Pipes(Pipes),
}

pub(crate) struct Pipes {
    stdin: ChildStdin,
    stdout: ChildStdout,
    /// Read until it ends; the first `kaged_session::holder::STDERR_KEPT` bytes kept.
    stderr: Option<ChildStderr>,
    stderr_file: Option<std::fs::File>,
    stderr_kept: u64,
}

fn nonblocking(fd: BorrowedFd<'_>) -> std::io::Result<()> {
    let flags = rustix::fs::fcntl_getfl(fd)?;
    rustix::fs::fcntl_setfl(fd, flags | rustix::fs::OFlags::NONBLOCK)?;
    Ok(())
}

impl Pipes {
    pub(crate) fn new(
        stdin: ChildStdin,
        stdout: ChildStdout,
        stderr: ChildStderr,
        stderr_file: Option<std::fs::File>,
    ) -> std::io::Result<Pipes> {
        nonblocking(stdin.as_fd())?;
        nonblocking(stdout.as_fd())?;
        nonblocking(stderr.as_fd())?;
        Ok(Pipes {
            stdin,
            stdout,
            stderr: Some(stderr),
            stderr_file,
            stderr_kept: 0,
        })
    }
}

impl Io {
    /// Where output is read.
    pub(crate) fn output_fd(&self) -> BorrowedFd<'_> {
        match self {
            Io::Pty(t) => t.as_fd(),
            Io::Pipes(p) => p.stdout.as_fd(),
        }
    }

    /// Where input is written.
    pub(crate) fn input_fd(&self) -> BorrowedFd<'_> {
        match self {
            Io::Pty(t) => t.as_fd(),
            Io::Pipes(p) => p.stdin.as_fd(),
        }
    }

    /// A piped run's stderr, while it is open.
    pub(crate) fn stderr_fd(&self) -> Option<BorrowedFd<'_>> {
        match self {
            Io::Pty(_) => None,
            Io::Pipes(p) => p.stderr.as_ref().map(AsFd::as_fd),
        }
    }

    pub(crate) fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Io::Pty(t) => t.read(buf),
            Io::Pipes(p) => p.stdout.read(buf),
        }
    }

    pub(crate) fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        match self {
            Io::Pty(t) => t.write(data),
            Io::Pipes(p) => p.stdin.write(data),
        }
    }

    pub(crate) fn resize(&self, rows: u16, cols: u16) -> std::io::Result<()> {
        match self {
            Io::Pty(t) => t.resize(rows, cols),
            Io::Pipes(_) => Err(std::io::Error::other(
                "a run on pipes has no terminal to resize",
            )),
        }
    }

    /// Read what stderr has (kept while under the bound); closed at its end.
    pub(crate) fn drain_stderr(&mut self, buf: &mut [u8]) {
        let Io::Pipes(p) = self else { return };
        let Some(stderr) = p.stderr.as_mut() else {
            return;
        };
        loop {
            match stderr.read(buf) {
                Ok(0) => {
                    p.stderr = None;
                    return;
                }
                Ok(n) => {
                    let room = kaged_session::holder::STDERR_KEPT.saturating_sub(p.stderr_kept);
                    let keep = n.min(usize::try_from(room).unwrap_or(usize::MAX));
                    if keep > 0
                        && let Some(file) = p.stderr_file.as_mut()
                        && file.write_all(&buf[..keep]).is_ok()
                    {
                        p.stderr_kept += keep as u64;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                Err(_) => {
                    p.stderr = None;
                    return;
                }
            }
        }
    }
}

/// Start the run on its terminal or its pipes (non-blocking).
pub(crate) fn start_run(
    spec: &HolderSpec,
    cage: Option<CageFds>,
) -> Result<(Io, Killer, Waiter), crate::serve::ServeError> {
    let run_spec = crate::run_spec(spec, cage);
    if spec.kind == "pipes" {
        let stderr_file = match &spec.stderr_path {
            Some(path) => Some(
                crate::transcript::create_private(Path::new(path))
                    .map_err(|e| crate::serve::setup(&format!("cannot create {path}"), e))?,
            ),
            None => None,
        };
        let run = kaged_spawn::spawn_piped(&run_spec)?;
        let pipes = Pipes::new(run.stdin, run.stdout, run.stderr, stderr_file)
            .map_err(|e| crate::serve::setup("cannot make the run's pipes non-blocking", e))?;
        return Ok((Io::Pipes(pipes), run.killer, run.waiter));
    }
    let run = kaged_spawn::spawn_pty(&run_spec, spec.rows, spec.cols)?;
    run.terminal
        .set_nonblocking()
        .map_err(|e| crate::serve::setup("cannot make the terminal non-blocking", e))?;
    Ok((Io::Pty(run.terminal), run.killer, run.waiter))
}
