//! Finding the local daemon: every candidate runtime directory probed (`daemon.json` and the
//! lock on `daemon.lock`), the one running daemon chosen, or why none (or two) could be.

use std::path::Path;

use anyhow::anyhow;
use kaged_auth::Secret;
use kaged_config::{DeploymentMode, ModeDecision, client_candidates};

use crate::runtime::{self, DISCOVERY_FILE, Discovery};
use crate::{Failure, host};

/// Where the client looks (`kaged_config::client_candidates`), each place probed.
fn locate(mode_flag: Option<DeploymentMode>) -> Result<Vec<(ModeDecision, Probe)>, Failure> {
    let candidates = client_candidates(&host::gather(), mode_flag)
        .map_err(|e| Failure::Config(e.to_string()))?;
    Ok(candidates
        .into_iter()
        .map(|c| {
            let probe = probe(&c.paths.runtime_dir);
            (c, probe)
        })
        .collect())
}

/// The run holders in every place a client looks (`kaged doctor`): each runtime directory,
/// whether a daemon runs there, and the holders that answer in its `holders/`.
pub(crate) fn holders_everywhere(
    mode_flag: Option<DeploymentMode>,
) -> Result<Vec<(std::path::PathBuf, bool, Vec<kaged_holder::Found>)>, Failure> {
    Ok(locate(mode_flag)?
        .into_iter()
        .map(|(c, probe)| {
            let dir = c.paths.runtime_dir;
            let found = kaged_holder::discover(&kaged_server::holder_dir(&dir));
            (dir, matches!(probe, Probe::Running(_)), found)
        })
        .collect())
}

/// What one runtime directory says about a daemon.
#[derive(Debug)]
enum Probe {
    /// `daemon.json` names it and it holds `daemon.lock`.
    Running(Discovery),
    /// No (readable) discovery file.
    Absent,
    /// A discovery file whose daemon no longer holds the lock.
    Stale(Discovery),
    /// The directory or its files cannot be read (another user's daemon).
    Unreadable(std::io::Error),
}

fn probe(dir: &Path) -> Probe {
    match runtime::read_discovery(dir) {
        Err(e) => Probe::Unreadable(e),
        Ok(None) => Probe::Absent,
        Ok(Some(discovery)) => match runtime::daemon_alive(dir) {
            Err(e) => Probe::Unreadable(e),
            Ok(true) => Probe::Running(discovery),
            Ok(false) => Probe::Stale(discovery),
        },
    }
}

/// The one running daemon among the probed places. None running: exit 3, naming every place
/// and why it was looked at. Two running (one per mode) and no `--mode`: exit 2, naming both
/// and the flag that chooses. A place that cannot be read counts only when it is the mode the
/// client chose itself (the other may well be another user's daemon).
fn choose(probed: Vec<(ModeDecision, Probe)>) -> Result<(ModeDecision, Discovery), Failure> {
    let running: Vec<String> = probed
        .iter()
        .filter_map(|(c, p)| match p {
            Probe::Running(d) => Some(format!(
                "  --mode {}: the {} daemon (pid {}, {}), runtime directory {}",
                c.mode,
                c.mode.describe(),
                d.pid,
                d.url,
                c.paths.runtime_dir.display()
            )),
            _ => None,
        })
        .collect();
    if running.len() > 1 {
        return Err(Failure::Config(format!(
            "{} kaged daemons are running here, one per mode; choose one with --mode:\n{}\n  e.g. `kaged --mode user status`",
            running.len(),
            running.join("\n")
        )));
    }
    if running.is_empty() {
        if let Some((c, Probe::Unreadable(e))) = probed.first() {
            return Err(permission_hint(c, e));
        }
        return Err(not_running(&probed));
    }
    probed
        .into_iter()
        .find_map(|(c, p)| match p {
            Probe::Running(d) => Some((c, d)),
            _ => None,
        })
        .ok_or_else(|| Failure::NotRunning("no kaged daemon is running".into()))
}

fn not_running(probed: &[(ModeDecision, Probe)]) -> Failure {
    let lines: Vec<String> = probed
        .iter()
        .map(|(c, p)| {
            let dir = &c.paths.runtime_dir;
            let state = match p {
                Probe::Running(d) => format!("{} names pid {}", dir.display(), d.pid),
                Probe::Absent => format!("{} does not exist", dir.join(DISCOVERY_FILE).display()),
                Probe::Stale(d) => format!(
                    "{} names pid {}, which no longer holds {} (the file is stale and is replaced at the next `kaged start`)",
                    dir.join(DISCOVERY_FILE).display(),
                    d.pid,
                    dir.join(runtime::LOCK_FILE).display()
                ),
                Probe::Unreadable(e) => format!(
                    "cannot read {}: {e}{}",
                    dir.display(),
                    mode_hint(c.mode)
                ),
            };
            format!(
                "  {state}\n    (looked in the {} runtime directory because {})",
                c.mode.describe(),
                c.reason
            )
        })
        .collect();
    Failure::NotRunning(format!(
        "no kaged daemon is running:\n{}\n  start one with `kaged start`",
        lines.join("\n")
    ))
}

/// The local daemon found, with the nonce it authenticates the CLI by.
pub(crate) struct Daemon {
    pub(super) discovery: Discovery,
    pub(super) nonce: Secret,
}

fn mode_hint(mode: DeploymentMode) -> &'static str {
    match mode {
        DeploymentMode::System => " (run it as the kaged user: `sudo -u kaged kaged status`)",
        DeploymentMode::User => " (run it as the user who started kaged)",
    }
}

fn permission_hint(decision: &ModeDecision, e: &std::io::Error) -> Failure {
    Failure::Runtime(anyhow!(
        "cannot read the runtime directory {}: {e}{}",
        decision.paths.runtime_dir.display(),
        mode_hint(decision.mode)
    ))
}

/// The running local daemon (see [`choose`]), with the runtime directory it was found in.
pub(super) fn find_daemon(
    mode_flag: Option<DeploymentMode>,
) -> Result<(ModeDecision, Daemon), Failure> {
    let (decision, discovery) = choose(locate(mode_flag)?)?;
    let nonce =
        Secret::new(runtime::read_nonce(&decision.paths.runtime_dir).map_err(Failure::Runtime)?);
    Ok((decision, Daemon { discovery, nonce }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use kaged_config::Facts;

    fn candidates() -> Vec<ModeDecision> {
        let facts = Facts {
            uid: 0,
            user_name: Some("root".into()),
            env: [("HOME", "/root"), ("XDG_RUNTIME_DIR", "/run/user/0")]
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            existing_dirs: Default::default(),
        };
        client_candidates(&facts, None).unwrap()
    }

    fn running(pid: u32) -> Probe {
        Probe::Running(Discovery {
            pid,
            url: format!("http://127.0.0.1:{pid}"),
            version: "0".into(),
            started_at_ms: 0,
        })
    }

    fn probed(probes: [Probe; 2]) -> Vec<(ModeDecision, Probe)> {
        candidates().into_iter().zip(probes).collect()
    }

    #[test]
    fn the_one_running_daemon_is_used_whichever_mode() {
        let (c, d) = choose(probed([Probe::Absent, running(7)])).ok().unwrap();
        assert_eq!((c.mode, d.pid), (DeploymentMode::User, 7));
        let (c, d) = choose(probed([running(8), Probe::Absent])).ok().unwrap();
        assert_eq!((c.mode, d.pid), (DeploymentMode::System, 8));
        // Another user's unreadable directory does not hide this one's daemon.
        let denied = || Probe::Unreadable(std::io::ErrorKind::PermissionDenied.into());
        let (c, _) = choose(probed([denied(), running(9)])).ok().unwrap();
        assert_eq!(c.mode, DeploymentMode::User);
    }

    #[test]
    fn two_running_daemons_are_a_usage_problem_naming_both() {
        match choose(probed([running(8), running(7)])) {
            Err(Failure::Config(m)) => {
                assert!(
                    m.contains("--mode system: the system-wide daemon (pid 8"),
                    "{m}"
                );
                assert!(m.contains("--mode user: the per-user daemon (pid 7"), "{m}");
                assert!(
                    m.contains("/run/kaged") && m.contains("/run/user/0/kaged"),
                    "{m}"
                );
            }
            _ => panic!("expected a usage error"),
        }
    }

    #[test]
    fn none_running_names_every_place_and_why() {
        match choose(probed([Probe::Absent, Probe::Absent])) {
            Err(Failure::NotRunning(m)) => {
                assert!(m.contains("/run/kaged/daemon.json does not exist"), "{m}");
                assert!(
                    m.contains("/run/user/0/kaged/daemon.json does not exist"),
                    "{m}"
                );
                assert!(m.contains("because running as UID 0 (root)"), "{m}");
            }
            _ => panic!("expected not running"),
        }
        // The chosen mode's directory unreadable: the permission problem, as before.
        let denied = Probe::Unreadable(std::io::ErrorKind::PermissionDenied.into());
        assert!(matches!(
            choose(probed([denied, Probe::Absent])),
            Err(Failure::Runtime(_))
        ));
    }
}
