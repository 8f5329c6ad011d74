//! Starting a run holder (`kaged run-holder --spec-fd 3 --ready-fd 4`): its spec in a memfd
//! at 3, the write end of a readiness pipe at 4, the cage's descriptors from 5 on, stdio on
//! `/dev/null` (a holder never keeps the daemon's stderr), nothing secret on the command line.
//! The holder makes itself a session leader and starts the run itself, so the cage is tied
//! to the holder, not to the daemon.

use std::io::Read;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::process::SPAWN_LOCK;
use crate::*;

/// How long a holder may take to bind its socket and start its run.
pub const HOLDER_READY_TIMEOUT: Duration = Duration::from_secs(30);

/// What [`spawn_holder`] starts.
pub struct HolderLaunch<'a> {
    /// The kaged executable (the daemon's helper copy, or `/proc/self/exe` without a prefix).
    pub exe: &'a Path,
    /// The holder's spec (`kaged_session::holder::HolderSpec` as JSON).
    pub spec_json: &'a [u8],
    /// The cage's descriptors (duplicated to 5, 6, ...).
    pub cage: Option<&'a CageFds>,
    /// In front of the holder (`systemd-run --user --scope ... --`); empty for none.
    pub prefix: &'a [String],
    /// How long to wait for the readiness line.
    pub timeout: Duration,
}

/// The prefix that puts a holder in a systemd scope of its own under `kaged-runs.slice`
/// (when `limit_facts().systemd_user` holds), so restarting the daemon's unit with
/// `KillMode=mixed` leaves it alone. `--scope` execs in place: the holder stays the caller's
/// child.
pub fn holder_scope_prefix(run_name: &str) -> Vec<String> {
    [
        "systemd-run",
        "--user",
        "--scope",
        "--quiet",
        "--collect",
        "--slice=kaged-runs.slice",
        &format!("--unit=kaged-run-{run_name}"),
        "--",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// A started holder: the daemon's child (reap it) and the readiness line it wrote.
pub struct HolderStarted {
    pub child: Child,
    /// One JSON line: `{"ok":true,"holder_pid":N,"pid":N}` or `{"error":"..."}`.
    pub ready: String,
}

fn failed(source: std::io::Error) -> SpawnError {
    SpawnError::Start {
        program: "kaged run-holder".into(),
        source,
    }
}

/// Start a holder and wait for its readiness line (a holder that writes none within
/// `timeout` is killed).
pub fn spawn_holder(launch: &HolderLaunch<'_>) -> Result<HolderStarted, SpawnError> {
    if !launch.prefix.is_empty() && launch.exe.starts_with("/proc") {
        // systemd-run would resolve /proc/self/exe to itself.
        return Err(failed(std::io::Error::other(format!(
            "a holder in a scope needs the kaged binary by a real path, not {}",
            launch.exe.display()
        ))));
    }
    let spec = launch::memory_file("kaged-holder-spec", launch.spec_json)?;
    let (mut ready_read, ready_write) = std::io::pipe().map_err(SpawnError::Descriptors)?;
    let mut fds = vec![spec, ready_write.into()];
    if let Some(cage) = launch.cage {
        fds.extend(cage.duplicates()?);
    }
    let mut c = match launch.prefix.split_first() {
        Some((first, rest)) => {
            let mut c = Command::new(first);
            c.args(rest).arg(launch.exe);
            c
        }
        None => Command::new(launch.exe),
    };
    c.args(["run-holder", "--spec-fd", "3", "--ready-fd", "4"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    fds::place(&mut c, fds);
    let mut child = {
        let _spawning = SPAWN_LOCK.lock().unwrap_or_else(|p| p.into_inner());
        c.spawn().map_err(failed)?
    };
    // Our copy of the write end went with `c`'s closure: only the holder holds it now, so
    // the read below ends when the holder writes its line or dies.
    drop(c);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("kaged-holder-ready".into())
        .spawn(move || {
            let mut line = String::new();
            let got = (&mut ready_read)
                .take(64 * 1024)
                .read_to_string(&mut line)
                .map(|_| line);
            let _ = tx.send(got);
        })
        .map_err(failed)?;
    let outcome = match rx.recv_timeout(launch.timeout) {
        Ok(Ok(line)) if !line.trim().is_empty() => Ok(line.trim().to_string()),
        Ok(Ok(_)) => Err(std::io::Error::other(
            "the holder ended without saying it was ready",
        )),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(std::io::Error::other(format!(
            "the holder was not ready within {}s",
            launch.timeout.as_secs()
        ))),
    };
    match outcome {
        Ok(ready) => Ok(HolderStarted { child, ready }),
        Err(e) => {
            let _ = child.kill();
            let _ = child.wait();
            Err(failed(e))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn launch<'a>(exe: &'a Path, spec: &'a [u8], cage: Option<&'a CageFds>) -> HolderLaunch<'a> {
        HolderLaunch {
            exe,
            spec_json: spec,
            cage,
            prefix: &[],
            timeout: Duration::from_secs(5),
        }
    }

    /// A stand-in holder: a script that reports what it was given on its readiness fd.
    fn script(dir: &Path, body: &str) -> std::path::PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let path = dir.join("holder.sh");
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o700)).unwrap();
        path
    }

    #[test]
    fn a_holder_gets_its_spec_ready_pipe_and_cage_fds_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let exe = script(
            dir.path(),
            r#"ls /proc/$$/fd > "$0.fds"; spec=$(cat <&3); cage=$(cat <&5)
echo "$*|$spec|$cage" >&4"#,
        );
        let cage_file = launch::memory_file("t", b"cage-bytes").unwrap();
        let cage = CageFds(Arc::new(vec![cage_file]));
        let started = spawn_holder(&launch(&exe, b"{\"v\":1}", Some(&cage))).unwrap();
        let mut child = started.child;
        child.wait().unwrap();
        let parts: Vec<&str> = started.ready.split('|').collect();
        assert_eq!(
            parts[..3],
            [
                "run-holder --spec-fd 3 --ready-fd 4",
                "{\"v\":1}",
                "cage-bytes"
            ]
        );
        // stdio, the three placed, and nothing else (the shell's own script fd may be 10).
        let listed = std::fs::read_to_string(exe.with_extension("sh.fds")).unwrap();
        let mut fds: Vec<i32> = listed
            .split_whitespace()
            .filter_map(|f| f.parse().ok())
            .filter(|f| *f < 10)
            .collect();
        fds.sort();
        assert_eq!(fds, vec![0, 1, 2, 3, 4, 5], "{listed}");
    }

    #[test]
    fn a_scoped_holder_runs_the_real_binary_path_under_systemd_run() {
        let prefix = holder_scope_prefix("0011223344556677");
        assert_eq!(prefix.first().map(String::as_str), Some("systemd-run"));
        assert!(prefix.contains(&"--unit=kaged-run-0011223344556677".to_string()));
        assert_eq!(prefix.last().map(String::as_str), Some("--"));
        let mut l = launch(Path::new("/proc/self/exe"), b"{}", None);
        l.prefix = &prefix;
        let e = spawn_holder(&l).err().unwrap();
        assert!(e.to_string().contains("real path"), "{e}");
        if !limit_facts().systemd_user {
            eprintln!("SKIPPED the scoped start: no systemd user manager on this host");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let exe = script(dir.path(), r#"echo "$(cat /proc/self/cgroup)" >&4"#);
        l.exe = &exe;
        let started = spawn_holder(&l).unwrap();
        let mut child = started.child;
        child.wait().unwrap();
        assert!(
            started.ready.contains("kaged-run-0011223344556677.scope"),
            "{}",
            started.ready
        );
    }

    #[test]
    fn a_holder_that_never_gets_ready_is_an_error_and_is_killed() {
        let dir = tempfile::tempdir().unwrap();
        let exe = script(dir.path(), "exit 3");
        let e = spawn_holder(&launch(&exe, b"{}", None)).err().unwrap();
        assert!(e.to_string().contains("without saying"), "{e}");
        let exe = script(dir.path(), "exec sleep 300");
        let mut l = launch(&exe, b"{}", None);
        l.timeout = Duration::from_millis(300);
        let e = spawn_holder(&l).err().unwrap();
        assert!(e.to_string().contains("not ready within"), "{e}");
    }
}
