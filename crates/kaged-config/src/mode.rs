//! Deployment mode detection (ADR-0010) and the filesystem layout of each mode.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::error::{ConfigError, Location};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DeploymentMode {
    User,
    System,
}

impl DeploymentMode {
    pub fn as_str(self) -> &'static str {
        match self {
            DeploymentMode::User => "user",
            DeploymentMode::System => "system",
        }
    }

    pub fn describe(self) -> &'static str {
        match self {
            DeploymentMode::User => "per-user",
            DeploymentMode::System => "system-wide",
        }
    }
}

impl fmt::Display for DeploymentMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the edge observed about the host; the only input to mode detection.
#[derive(Debug, Clone, Default)]
pub struct Facts {
    pub uid: u32,
    pub user_name: Option<String>,
    /// The process environment (only `HOME`, `KAGED_*` and `XDG_*` are read).
    pub env: BTreeMap<String, String>,
    /// Which of [`Facts::user_data_candidates`] exist as directories.
    pub existing_dirs: BTreeSet<PathBuf>,
}

impl Facts {
    fn var(&self, name: &str) -> Option<&str> {
        self.env
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    /// An XDG base directory variable, ignored when relative as the XDG spec requires.
    fn xdg(&self, name: &str) -> Option<PathBuf> {
        self.var(name)
            .map(PathBuf::from)
            .filter(|p| p.is_absolute())
    }

    fn home(&self) -> Option<PathBuf> {
        self.var("HOME")
            .map(PathBuf::from)
            .filter(|p| p.is_absolute())
    }

    /// `$XDG_DATA_HOME/kaged` and `~/.local/share/kaged`: the per-user indicators of rule 4.
    pub fn user_data_candidates(&self) -> Vec<PathBuf> {
        let mut out = Vec::new();
        if let Some(xdg) = self.xdg("XDG_DATA_HOME") {
            out.push(xdg.join("kaged"));
        }
        if let Some(home) = self.home() {
            let p = home.join(".local/share/kaged");
            if !out.contains(&p) {
                out.push(p);
            }
        }
        out
    }
}

/// Which detection rule decided the mode, in the order they are tried.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ModeRule {
    Flag,
    KagedHome,
    SystemUser,
    ExistingUserData,
    Fallback,
}

/// Where kaged keeps things in the chosen mode.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Paths {
    pub config_file: PathBuf,
    /// Default state directory (`[daemon] home` may move it).
    pub data_dir: PathBuf,
    /// Holds the auth cookie and the daemon's discovery file; removed at shutdown.
    pub runtime_dir: PathBuf,
    /// True when `XDG_RUNTIME_DIR` was unset and a private directory under /tmp stands in.
    pub runtime_dir_is_fallback: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ModeDecision {
    pub mode: DeploymentMode,
    pub rule: ModeRule,
    /// One sentence an operator can read in the startup log and in `kaged status`.
    pub reason: String,
    pub paths: Paths,
}

/// Resolve the deployment mode in ADR-0010's order: `--mode`; `KAGED_HOME`; UID 0 or the `kaged`
/// user; an existing per-user data directory; otherwise per-user.
pub fn decide_mode(
    facts: &Facts,
    flag: Option<DeploymentMode>,
) -> Result<ModeDecision, ConfigError> {
    let kaged_home = match facts.var("KAGED_HOME") {
        Some(h) if !Path::new(h).is_absolute() => {
            return Err(ConfigError {
                location: Location::Env {
                    var: "KAGED_HOME".into(),
                },
                key: String::new(),
                problem: format!("{h:?} is not an absolute path"),
                hint: "set KAGED_HOME to an absolute directory such as /srv/kaged, or unset it"
                    .into(),
            });
        }
        Some(h) => Some(PathBuf::from(h)),
        None => None,
    };
    let system_user = facts.uid == 0 || facts.user_name.as_deref() == Some("kaged");

    let (mode, rule, reason) = if let Some(mode) = flag {
        (mode, ModeRule::Flag, format!("--mode={mode} was given"))
    } else if let Some(home) = &kaged_home {
        (
            DeploymentMode::User,
            ModeRule::KagedHome,
            format!(
                "KAGED_HOME={} is set: the operator's own daemon with all state under it",
                home.display()
            ),
        )
    } else if system_user {
        let who = if facts.uid == 0 {
            "UID 0 (root)".to_string()
        } else {
            "the `kaged` system user".to_string()
        };
        (
            DeploymentMode::System,
            ModeRule::SystemUser,
            format!("running as {who}"),
        )
    } else if let Some(dir) = facts
        .user_data_candidates()
        .into_iter()
        .find(|d| facts.existing_dirs.contains(d))
    {
        (
            DeploymentMode::User,
            ModeRule::ExistingUserData,
            format!("per-user data directory {} exists", dir.display()),
        )
    } else {
        (
            DeploymentMode::User,
            ModeRule::Fallback,
            format!(
                "no system-wide indicator (UID {}), so the default per-user mode",
                facts.uid
            ),
        )
    };

    let paths = match (&kaged_home, mode) {
        (Some(home), _) => Paths {
            config_file: home.join("config.toml"),
            data_dir: home.clone(),
            runtime_dir: home.join("run"),
            runtime_dir_is_fallback: false,
        },
        (None, DeploymentMode::System) => Paths {
            config_file: PathBuf::from("/etc/kaged/config.toml"),
            data_dir: PathBuf::from("/var/lib/kaged"),
            runtime_dir: PathBuf::from("/run/kaged"),
            runtime_dir_is_fallback: false,
        },
        (None, DeploymentMode::User) => user_paths(facts)?,
    };
    Ok(ModeDecision {
        mode,
        rule,
        reason,
        paths,
    })
}

/// Where a client looks for a running daemon, first the mode it would choose itself. With
/// `--mode`, or when both modes share one runtime directory (`KAGED_HOME`), that one place;
/// otherwise also the other mode's runtime directory, so that a client finds a daemon of either
/// mode (root after `kaged start --mode user`, an operator next to a system-wide daemon) and can
/// tell when both run. A mode whose paths cannot be computed here (per-user without `HOME`) is
/// left out, unless it is the one detection chose.
pub fn client_candidates(
    facts: &Facts,
    flag: Option<DeploymentMode>,
) -> Result<Vec<ModeDecision>, ConfigError> {
    let detected = decide_mode(facts, flag)?;
    if flag.is_some() {
        return Ok(vec![detected]);
    }
    let other_mode = match detected.mode {
        DeploymentMode::User => DeploymentMode::System,
        DeploymentMode::System => DeploymentMode::User,
    };
    let other = decide_mode(facts, Some(other_mode))
        .ok()
        .filter(|o| o.paths.runtime_dir != detected.paths.runtime_dir)
        .map(|o| ModeDecision {
            reason: format!(
                "no --mode was given, and a {} daemon would be there",
                other_mode.describe()
            ),
            ..o
        });
    Ok(std::iter::once(detected).chain(other).collect())
}

fn user_paths(facts: &Facts) -> Result<Paths, ConfigError> {
    let home = facts.home();
    let base = |var: &str, fallback: &str| -> Result<PathBuf, ConfigError> {
        match (facts.xdg(var), &home) {
            (Some(p), _) => Ok(p),
            (None, Some(h)) => Ok(h.join(fallback)),
            (None, None) => Err(ConfigError {
                location: Location::Env { var: "HOME".into() },
                key: String::new(),
                problem: format!("neither {var} nor HOME is set to an absolute path"),
                hint: "set HOME (or KAGED_HOME to keep all state in one directory)".into(),
            }),
        }
    };
    let (runtime_dir, runtime_dir_is_fallback) = match facts.xdg("XDG_RUNTIME_DIR") {
        Some(p) => (p.join("kaged"), false),
        None => (PathBuf::from(format!("/tmp/kaged-{}", facts.uid)), true),
    };
    Ok(Paths {
        config_file: base("XDG_CONFIG_HOME", ".config")?.join("kaged/config.toml"),
        data_dir: base("XDG_DATA_HOME", ".local/share")?.join("kaged"),
        runtime_dir,
        runtime_dir_is_fallback,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(uid: u32, name: &str, env: &[(&str, &str)]) -> Facts {
        Facts {
            uid,
            user_name: Some(name.into()),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            existing_dirs: BTreeSet::new(),
        }
    }

    #[test]
    fn flag_wins_over_everything() {
        let f = facts(0, "root", &[("KAGED_HOME", "/srv/k"), ("HOME", "/root")]);
        let d = decide_mode(&f, Some(DeploymentMode::User)).unwrap();
        assert_eq!(d.mode, DeploymentMode::User);
        assert_eq!(d.rule, ModeRule::Flag);
        // KAGED_HOME still places the files.
        assert_eq!(d.paths.data_dir, PathBuf::from("/srv/k"));
        assert_eq!(d.paths.config_file, PathBuf::from("/srv/k/config.toml"));
        assert_eq!(d.paths.runtime_dir, PathBuf::from("/srv/k/run"));

        let d = decide_mode(
            &facts(1000, "ann", &[("HOME", "/home/ann")]),
            Some(DeploymentMode::System),
        )
        .unwrap();
        assert_eq!(d.mode, DeploymentMode::System);
        assert_eq!(d.paths.data_dir, PathBuf::from("/var/lib/kaged"));
    }

    #[test]
    fn kaged_home_beats_root() {
        let d = decide_mode(&facts(0, "root", &[("KAGED_HOME", "/srv/k")]), None).unwrap();
        assert_eq!(d.mode, DeploymentMode::User);
        assert_eq!(d.rule, ModeRule::KagedHome);
        assert!(d.reason.contains("/srv/k"), "{}", d.reason);
    }

    #[test]
    fn relative_kaged_home_is_an_error_naming_the_variable() {
        let e = decide_mode(&facts(1000, "ann", &[("KAGED_HOME", "state")]), None).unwrap_err();
        assert_eq!(
            e.location,
            Location::Env {
                var: "KAGED_HOME".into()
            }
        );
        assert!(e.to_string().contains("not an absolute path"));
    }

    #[test]
    fn root_and_kaged_user_are_system_wide() {
        let d = decide_mode(&facts(0, "root", &[("HOME", "/root")]), None).unwrap();
        assert_eq!(
            (d.mode, d.rule.clone()),
            (DeploymentMode::System, ModeRule::SystemUser)
        );
        assert_eq!(d.paths.config_file, PathBuf::from("/etc/kaged/config.toml"));
        assert_eq!(d.paths.runtime_dir, PathBuf::from("/run/kaged"));
        let d = decide_mode(&facts(998, "kaged", &[("HOME", "/var/lib/kaged")]), None).unwrap();
        assert_eq!(
            (d.mode, d.rule),
            (DeploymentMode::System, ModeRule::SystemUser)
        );
    }

    #[test]
    fn existing_xdg_data_dir_is_a_per_user_indicator() {
        let mut f = facts(
            1000,
            "ann",
            &[("HOME", "/home/ann"), ("XDG_DATA_HOME", "/data/ann")],
        );
        f.existing_dirs.insert(PathBuf::from("/data/ann/kaged"));
        let d = decide_mode(&f, None).unwrap();
        assert_eq!(d.rule, ModeRule::ExistingUserData);
        assert_eq!(d.paths.data_dir, PathBuf::from("/data/ann/kaged"));

        // ~/.local/share/kaged counts too, even when XDG_DATA_HOME points elsewhere.
        let mut f = facts(
            1000,
            "ann",
            &[("HOME", "/home/ann"), ("XDG_DATA_HOME", "/data/ann")],
        );
        f.existing_dirs
            .insert(PathBuf::from("/home/ann/.local/share/kaged"));
        assert_eq!(
            decide_mode(&f, None).unwrap().rule,
            ModeRule::ExistingUserData
        );
    }

    #[test]
    fn fallback_is_per_user_with_xdg_defaults() {
        let d = decide_mode(&facts(1000, "ann", &[("HOME", "/home/ann")]), None).unwrap();
        assert_eq!((d.mode, d.rule), (DeploymentMode::User, ModeRule::Fallback));
        assert_eq!(
            d.paths.config_file,
            PathBuf::from("/home/ann/.config/kaged/config.toml")
        );
        assert_eq!(
            d.paths.data_dir,
            PathBuf::from("/home/ann/.local/share/kaged")
        );
        assert_eq!(d.paths.runtime_dir, PathBuf::from("/tmp/kaged-1000"));
        assert!(d.paths.runtime_dir_is_fallback);
    }

    #[test]
    fn xdg_variables_are_honoured_and_relative_ones_ignored() {
        let d = decide_mode(
            &facts(
                1000,
                "ann",
                &[
                    ("HOME", "/home/ann"),
                    ("XDG_CONFIG_HOME", "/cfg"),
                    ("XDG_DATA_HOME", "relative/data"),
                    ("XDG_RUNTIME_DIR", "/run/user/1000"),
                ],
            ),
            None,
        )
        .unwrap();
        assert_eq!(d.paths.config_file, PathBuf::from("/cfg/kaged/config.toml"));
        assert_eq!(
            d.paths.data_dir,
            PathBuf::from("/home/ann/.local/share/kaged")
        );
        assert_eq!(d.paths.runtime_dir, PathBuf::from("/run/user/1000/kaged"));
        assert!(!d.paths.runtime_dir_is_fallback);
    }

    #[test]
    fn per_user_without_home_is_a_clear_error() {
        let e = decide_mode(&facts(1000, "ann", &[]), None).unwrap_err();
        assert!(e.to_string().contains("HOME"), "{e}");
    }

    #[test]
    fn a_client_without_mode_looks_where_either_mode_would_be() {
        // Root with a per-user runtime directory: /run/kaged first, then the per-user one.
        let f = facts(
            0,
            "root",
            &[("HOME", "/root"), ("XDG_RUNTIME_DIR", "/run/user/0")],
        );
        let c = client_candidates(&f, None).unwrap();
        let dirs: Vec<_> = c.iter().map(|d| d.paths.runtime_dir.clone()).collect();
        assert_eq!(
            dirs,
            [
                PathBuf::from("/run/kaged"),
                PathBuf::from("/run/user/0/kaged")
            ]
        );
        assert_eq!(c[0].rule, ModeRule::SystemUser);
        assert_eq!(c[1].mode, DeploymentMode::User);
        assert!(
            c[1].reason.contains("no --mode was given"),
            "{}",
            c[1].reason
        );
        // Root without XDG_RUNTIME_DIR: the per-user fallback under /tmp.
        let c = client_candidates(&facts(0, "root", &[("HOME", "/root")]), None).unwrap();
        assert_eq!(c[1].paths.runtime_dir, PathBuf::from("/tmp/kaged-0"));
        // An ordinary user: their own first, then the system-wide one.
        let c = client_candidates(&facts(1000, "ann", &[("HOME", "/home/ann")]), None).unwrap();
        assert_eq!(
            (c[0].mode, c[1].mode),
            (DeploymentMode::User, DeploymentMode::System)
        );
        assert_eq!(c[1].paths.runtime_dir, PathBuf::from("/run/kaged"));
    }

    #[test]
    fn a_client_with_mode_or_kaged_home_looks_in_one_place() {
        let f = facts(0, "root", &[("HOME", "/root")]);
        let c = client_candidates(&f, Some(DeploymentMode::User)).unwrap();
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].paths.runtime_dir, PathBuf::from("/tmp/kaged-0"));
        // KAGED_HOME puts both modes' runtime files in one directory.
        let c = client_candidates(&facts(0, "root", &[("KAGED_HOME", "/srv/k")]), None).unwrap();
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].paths.runtime_dir, PathBuf::from("/srv/k/run"));
        // Root without HOME: the per-user place cannot be computed, so only /run/kaged.
        let c = client_candidates(&facts(0, "root", &[]), None).unwrap();
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].mode, DeploymentMode::System);
        // A bad KAGED_HOME is still an error.
        assert!(client_candidates(&facts(0, "root", &[("KAGED_HOME", "rel")]), None).is_err());
    }
}
