//! Starting a holder (the daemon's side: [`Launcher`], [`launch`]) and being one
//! ([`run_holder`], what `kaged run-holder --spec-fd 3 --ready-fd 4` runs).

use std::io::Read;
use std::os::fd::RawFd;
use std::path::Path;
use std::process::Child;

use kaged_session::holder::HolderSpec;
use kaged_spawn::{CageFds, HOLDER_READY_TIMEOUT, HolderLaunch, SpawnError};

/// A holder that bound its socket and started its run.
pub struct Launched {
    /// The holder process (the caller's child: reap it).
    pub child: Child,
    pub holder_pid: u32,
    /// The run's started process.
    pub pid: u32,
}

/// How holders are started.
#[derive(Debug, Clone)]
pub enum Launcher {
    /// `exe run-holder` as a process of its own (production), with `prefix` in front
    /// (`systemd-run --user --scope ... --`, or empty).
    Exec {
        exe: std::path::PathBuf,
        prefix: Vec<String>,
    },
    /// [`crate::serve()`] on a thread of this process, on the same socket and protocol: for
    /// tests of the daemon that have no kaged binary. The run dies with this process.
    InThread,
}

/// A started holder, as a [`Launcher`] started it.
pub enum Started {
    Process(Launched),
    Thread {
        thread:
            std::thread::JoinHandle<Result<kaged_session::holder::StatusFile, crate::ServeError>>,
        /// The run's started process.
        pid: u32,
    },
}

impl Started {
    /// The run's started process.
    pub fn pid(&self) -> u32 {
        match self {
            Started::Process(l) => l.pid,
            Started::Thread { pid, .. } => *pid,
        }
    }
}

impl Launcher {
    /// Start a holder for `spec` and wait until it is ready.
    pub fn start(&self, spec: &HolderSpec, cage: Option<&CageFds>) -> Result<Started, SpawnError> {
        match self {
            Launcher::Exec { exe, prefix } => launch(exe, spec, cage, prefix).map(Started::Process),
            Launcher::InThread => {
                let (read, write) = std::io::pipe().map_err(SpawnError::Descriptors)?;
                let spec = spec.clone();
                let cage = cage.cloned();
                let thread = std::thread::Builder::new()
                    .name(format!("kaged-holder-{}", spec.run_name))
                    .spawn(move || crate::serve(&spec, cage, write.into()))
                    .map_err(SpawnError::Descriptors)?;
                let mut line = String::new();
                let _ = std::io::BufRead::read_line(&mut std::io::BufReader::new(read), &mut line);
                match serde_json::from_str::<ReadyLine>(&line) {
                    Ok(ReadyLine { ok: true, pid, .. }) => Ok(Started::Thread { thread, pid }),
                    other => {
                        let _ = thread.join();
                        Err(SpawnError::Start {
                            program: "kaged run-holder (in a thread)".into(),
                            source: std::io::Error::other(
                                other
                                    .ok()
                                    .and_then(|r| r.error)
                                    .unwrap_or_else(|| format!("not ready: {line}")),
                            ),
                        })
                    }
                }
            }
        }
    }
}

#[derive(serde::Deserialize)]
struct ReadyLine {
    #[serde(default)]
    ok: bool,
    #[serde(default)]
    holder_pid: u32,
    #[serde(default)]
    pid: u32,
    #[serde(default)]
    error: Option<String>,
}

/// Start `exe run-holder` for `spec` (with `prefix` in front, e.g. a systemd scope) and wait
/// until it is ready. A holder that reports an error has ended; its error is returned.
pub fn launch(
    exe: &Path,
    spec: &HolderSpec,
    cage: Option<&CageFds>,
    prefix: &[String],
) -> Result<Launched, SpawnError> {
    let json = serde_json::to_vec(spec).map_err(|e| SpawnError::Cage(e.to_string()))?;
    let mut started = kaged_spawn::spawn_holder(&HolderLaunch {
        exe,
        spec_json: &json,
        cage,
        prefix,
        timeout: HOLDER_READY_TIMEOUT,
    })?;
    let failed = |message: String| SpawnError::Start {
        program: "kaged run-holder".into(),
        source: std::io::Error::other(message),
    };
    match serde_json::from_str::<ReadyLine>(&started.ready) {
        Ok(ReadyLine {
            ok: true,
            holder_pid,
            pid,
            ..
        }) => Ok(Launched {
            child: started.child,
            holder_pid,
            pid,
        }),
        Ok(ReadyLine { error: Some(e), .. }) => {
            let _ = started.child.wait();
            Err(failed(e))
        }
        _ => {
            let _ = started.child.kill();
            let _ = started.child.wait();
            Err(failed(format!(
                "the holder's readiness line is not understood: {}",
                started.ready
            )))
        }
    }
}

/// Be a holder: read the spec from `spec_fd`, take the cage's descriptors right after
/// `ready_fd`, leave the daemon's session and serve. Returns the process exit code.
/// Call it first thing in `main` (it takes inherited descriptors by number).
pub fn run_holder(spec_fd: RawFd, ready_fd: RawFd) -> i32 {
    let ready = match kaged_spawn::inherited(ready_fd) {
        Ok(fd) => fd,
        Err(e) => {
            eprintln!("kaged run-holder: no readiness descriptor {ready_fd}: {e}");
            return 2;
        }
    };
    let fail = |ready, message: String| {
        use std::io::Write;
        let mut f = std::fs::File::from(ready);
        let _ = writeln!(f, "{}", serde_json::json!({ "error": message }));
        1
    };
    let spec: HolderSpec = match kaged_spawn::inherited(spec_fd).and_then(|fd| {
        let mut text = String::new();
        std::fs::File::from(fd).read_to_string(&mut text)?;
        serde_json::from_str(&text).map_err(std::io::Error::other)
    }) {
        Ok(spec) => spec,
        Err(e) => return fail(ready, format!("cannot read the holder spec: {e}")),
    };
    let first = spec_fd.max(ready_fd) + 1;
    let cage = match spec.cage_fd_count {
        0 => None,
        n => match CageFds::from_inherited(first, n) {
            Ok(c) => Some(c),
            Err(e) => return fail(ready, format!("cannot take the cage's descriptors: {e}")),
        },
    };
    // Out of the daemon's session and process group: a terminal hangup or a signal to the
    // daemon's group does not reach the holder. (Fails only for a group leader: harmless.)
    let _ = nix::unistd::setsid();
    match crate::serve(&spec, cage, ready) {
        Ok(_) => 0,
        Err(_) => 1,
    }
}
