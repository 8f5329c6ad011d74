//! Whether a run's program is there as its cage will see it, decided without I/O (the edge
//! answers questions about host paths through [`HostFs`]).
//!
//! A cage sees the system directories, the project and what `local.toml` grants; toolchains
//! that live in the operator's home (`~/.cargo/bin`, `~/.local/bin`, `~/.nvm`) are not there.
//! Rather than let the command die with 127 inside the cage, a start looks the program up in
//! the cage's own view first; when it is only on the operator's `PATH`, the refusal names where
//! it is and the exact `local.toml` lines that make it visible.

use std::path::{Component, Path, PathBuf};

use crate::{CAGE_HOME, Host, WORKSPACE};

/// What is at a host path, a final link not followed (links on the way are).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    Missing,
    /// A regular file with an execute bit.
    Executable,
    /// Something else: a directory, a file without an execute bit.
    NotExecutable,
    /// A symbolic link, with its target as written.
    Link(PathBuf),
}

/// The host's answers, from the edge.
pub trait HostFs {
    fn lookup(&self, path: &Path) -> Lookup;
    /// `path` with every link followed, when it exists.
    fn canonical(&self, path: &Path) -> Option<PathBuf>;
}

/// A cage's filesystem as far as programs go: which cage path shows which host path.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct View {
    /// (in the cage, on the host), in mount order.
    mounts: Vec<(PathBuf, PathBuf)>,
}

impl View {
    /// The view of a cage over the project at `root` with `host`'s facts: the system
    /// directories at their own paths, the project at [`WORKSPACE`], every granted host path
    /// at its destination. Everything else is an empty tmpfs.
    pub fn of(host: &Host, root: &Path) -> View {
        let mut mounts: Vec<(PathBuf, PathBuf)> = host
            .system_dirs
            .iter()
            .map(|d| (PathBuf::from(d), PathBuf::from(d)))
            .collect();
        mounts.push((PathBuf::from(WORKSPACE), root.to_path_buf()));
        mounts.extend(
            host.binds
                .iter()
                .map(|b| (PathBuf::from(&b.dest), b.host.clone())),
        );
        View { mounts }
    }

    /// The view with `host` also shown at `cage`.
    pub fn with(&self, cage: &Path, host: &Path) -> View {
        let mut mounts = self.mounts.clone();
        mounts.push((cage.to_path_buf(), host.to_path_buf()));
        View { mounts }
    }

    /// The host path shown at `cage`, if any mount covers it (the last, deepest one wins).
    pub fn host_of(&self, cage: &Path) -> Option<PathBuf> {
        let mut best: Option<(usize, PathBuf)> = None;
        for (at, host) in &self.mounts {
            if let Ok(rest) = cage.strip_prefix(at) {
                let depth = at.components().count();
                if best.as_ref().is_none_or(|(d, _)| depth >= *d) {
                    best = Some((
                        depth,
                        if rest.as_os_str().is_empty() {
                            host.clone()
                        } else {
                            host.join(rest)
                        },
                    ));
                }
            }
        }
        best.map(|(_, h)| h)
    }

    /// Whether `cage` is an executable in this view, following links as the cage would.
    fn executable(&self, fs: &dyn HostFs, cage: &Path) -> bool {
        let mut current = normalize(cage);
        for _ in 0..40 {
            let Some(host) = self.host_of(&current) else {
                return false;
            };
            match fs.lookup(&host) {
                Lookup::Executable => return true,
                Lookup::Missing | Lookup::NotExecutable => return false,
                Lookup::Link(target) => {
                    current = if target.is_absolute() {
                        normalize(&target)
                    } else {
                        normalize(&current.parent().unwrap_or(Path::new("/")).join(target))
                    };
                }
            }
        }
        false
    }
}

/// `path` with `.` and `..` resolved lexically (what a link's target means from its directory).
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::from("/");
    for c in path.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::ParentDir => {
                out.pop();
            }
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    out
}

/// Why a run's program cannot start in its cage.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProgramError {
    /// On the operator's `PATH` only: where, and the `local.toml` lines that grant it.
    #[error(
        "cannot run {program:?}: the cage does not see it (the cage's PATH is {cage_path}), but it is at {} on kaged's PATH; to let this project's cages see it (read-only), add to local.toml:\n\n{grant}",
        found.display()
    )]
    OnHostOnly {
        program: String,
        found: PathBuf,
        cage_path: String,
        /// The `local.toml` lines, ready to paste.
        grant: String,
    },
    #[error(
        "cannot run {program:?}: it is neither in the cage (the cage's PATH is {cage_path}) nor on kaged's PATH; install it, or grant the directory it lives in through local.toml (see docs/cages.md)"
    )]
    NotFound { program: String, cage_path: String },
}

/// Cage paths a same-path grant may not use (kaged makes them for every cage).
const RESERVED: &[&str] = &["/proc", "/dev", "/tmp", "/run", WORKSPACE, CAGE_HOME];

/// Where a host directory can be granted: at its own path, or below the cage's home when its
/// own path is one kaged makes itself.
fn suggested_at(dir: &Path) -> (Option<String>, PathBuf) {
    let reserved = RESERVED.iter().any(|r| dir.starts_with(r));
    if !reserved {
        return (None, dir.to_path_buf());
    }
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "granted".into());
    (
        Some(format!("home:/{name}")),
        Path::new(CAGE_HOME).join(name),
    )
}

fn toml_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Look `program` (the command's first word) up as the cage over `view` will: a bare name in
/// `cage_path`, an absolute path as it is (a relative one with a slash is left to the run).
/// `Ok` with where it is in the cage; otherwise, when it is on `operator_path`, the error holds
/// the host location and the `local.toml` grant for `project` that makes it visible.
pub fn resolve_program(
    program: &str,
    cage_path: &[String],
    view: &View,
    fs: &dyn HostFs,
    operator_path: &[PathBuf],
    project: &str,
) -> Result<Option<String>, ProgramError> {
    let shown_path = cage_path.join(":");
    let on_host = |p: &Path| {
        fs.canonical(p)
            .filter(|c| fs.lookup(c) == Lookup::Executable)
            .map(|c| (p.to_path_buf(), c))
    };
    let (candidates, found) = if program.starts_with('/') {
        let p = PathBuf::from(program);
        let found = on_host(&p);
        (vec![p], found)
    } else if program.contains('/') || program.is_empty() {
        return Ok(None);
    } else {
        let candidates: Vec<PathBuf> = cage_path
            .iter()
            .map(|d| Path::new(d).join(program))
            .collect();
        let found = operator_path
            .iter()
            .filter(|d| d.is_absolute())
            .find_map(|d| on_host(&d.join(program)));
        (candidates, found)
    };
    if let Some(c) = candidates.iter().find(|c| view.executable(fs, c)) {
        return Ok(Some(c.display().to_string()));
    }
    let Some((found, canonical)) = found else {
        return Err(ProgramError::NotFound {
            program: program.into(),
            cage_path: shown_path,
        });
    };
    // The directory it was found in goes on the cage's PATH; where its links lead is granted
    // too, at the same path, so that they resolve inside the cage as on the host.
    let dir = found.parent().unwrap_or(Path::new("/"));
    let dir = fs.canonical(dir).unwrap_or_else(|| dir.to_path_buf());
    let (at, dest) = suggested_at(&dir);
    let mut lines = vec![match &at {
        Some(at) => format!(
            "  {{ host = {}, at = {}, on_path = true }},",
            toml_string(&dir.display().to_string()),
            toml_string(at)
        ),
        None => format!(
            "  {{ host = {}, on_path = true }},",
            toml_string(&dir.display().to_string())
        ),
    }];
    let mut granted = view.with(&dest, &dir);
    let name = Path::new(program).file_name().unwrap_or_default();
    if !granted.executable(fs, &dest.join(name)) {
        if let Some(target_dir) = canonical.parent() {
            let (at, target_dest) = suggested_at(target_dir);
            granted = granted.with(&target_dest, target_dir);
            lines.push(match at {
                Some(at) => format!(
                    "  {{ host = {}, at = {} }},",
                    toml_string(&target_dir.display().to_string()),
                    toml_string(&at)
                ),
                None => format!(
                    "  {{ host = {} }},",
                    toml_string(&target_dir.display().to_string())
                ),
            });
        }
        if !granted.executable(fs, &dest.join(name)) {
            lines.push(format!(
                "  # and the directories the links of {} lead through",
                found.display()
            ));
        }
    }
    let grant = format!(
        "[projects.{project}]\npaths = [\n{}\n]\n(add them to the `paths` list already there, if any; programs that need more, such as a rustup proxy needing ~/.rustup, are listed in docs/cages.md)",
        lines.join("\n")
    );
    Err(ProgramError::OnHostOnly {
        program: program.into(),
        found,
        cage_path: shown_path,
        grant,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{FileId, HostBind, cage_path};
    use std::collections::BTreeMap;

    /// A host made of a map: path → what is there (links as `Link`).
    struct Fake(BTreeMap<PathBuf, Lookup>);

    impl Fake {
        fn new(entries: &[(&str, Lookup)]) -> Fake {
            Fake(
                entries
                    .iter()
                    .map(|(p, l)| (PathBuf::from(p), l.clone()))
                    .collect(),
            )
        }
    }

    impl HostFs for Fake {
        fn lookup(&self, path: &Path) -> Lookup {
            self.0.get(path).cloned().unwrap_or(Lookup::Missing)
        }
        fn canonical(&self, path: &Path) -> Option<PathBuf> {
            let mut p = normalize(path);
            for _ in 0..40 {
                match self.0.get(&p) {
                    Some(Lookup::Link(t)) => {
                        p = normalize(&p.parent().unwrap_or(Path::new("/")).join(t));
                    }
                    Some(_) => return Some(p),
                    // Directories are implied by what lies below them.
                    None => return self.0.keys().any(|k| k.starts_with(&p)).then_some(p),
                }
            }
            None
        }
    }

    fn host(binds: Vec<HostBind>) -> Host {
        Host {
            system_dirs: vec!["/usr".into(), "/bin".into()],
            binds,
            ..Host::default()
        }
    }

    fn bind(host: &str, dest: &str, on_path: bool) -> HostBind {
        HostBind {
            host: host.into(),
            dest: dest.into(),
            writable: false,
            on_path,
            id: FileId { dev: 1, ino: 2 },
        }
    }

    const OPERATOR: &[&str] = &["/home/ann/.cargo/bin", "/home/ann/.local/bin", "/usr/bin"];

    fn resolve(program: &str, h: &Host, fs: &Fake) -> Result<Option<String>, ProgramError> {
        let operator: Vec<PathBuf> = OPERATOR.iter().map(PathBuf::from).collect();
        resolve_program(
            program,
            &cage_path(h),
            &View::of(h, Path::new("/home/ann/src/demo")),
            fs,
            &operator,
            "demo",
        )
    }

    fn toolchains() -> Fake {
        Fake::new(&[
            ("/usr/bin/sh", Lookup::Executable),
            ("/usr/bin/README", Lookup::NotExecutable),
            ("/home/ann/.cargo/bin/cargo", Lookup::Executable),
            (
                "/home/ann/.local/bin/claude",
                Lookup::Link("/home/ann/.local/share/claude/versions/2.1.0".into()),
            ),
            (
                "/home/ann/.local/share/claude/versions/2.1.0",
                Lookup::Executable,
            ),
            ("/home/ann/src/demo/scripts/lint", Lookup::Executable),
        ])
    }

    #[test]
    fn system_programs_are_found_where_the_cage_sees_them() {
        let fs = toolchains();
        assert_eq!(
            resolve("sh", &host(vec![]), &fs).unwrap().as_deref(),
            Some("/usr/bin/sh")
        );
        assert_eq!(
            resolve("/workspace/scripts/lint", &host(vec![]), &fs)
                .unwrap()
                .as_deref(),
            Some("/workspace/scripts/lint")
        );
        // Relative paths with a slash are the run's business.
        assert_eq!(resolve("./x", &host(vec![]), &fs).unwrap(), None);
        let missing = resolve("nothing-here", &host(vec![]), &fs).unwrap_err();
        assert!(
            matches!(missing, ProgramError::NotFound { .. }),
            "{missing}"
        );
        assert!(
            resolve("README", &host(vec![]), &fs).is_err(),
            "not executable"
        );
    }

    #[test]
    fn a_program_only_on_the_operators_path_names_its_place_and_the_grant() {
        let fs = toolchains();
        let err = resolve("cargo", &host(vec![]), &fs).unwrap_err();
        let shown = err.to_string();
        assert!(
            shown.contains("at /home/ann/.cargo/bin/cargo on kaged's PATH"),
            "{shown}"
        );
        assert!(
            shown.contains(
                "[projects.demo]\npaths = [\n  { host = \"/home/ann/.cargo/bin\", on_path = true },\n]"
            ),
            "{shown}"
        );
        // With that grant it is found, on the cage's PATH first.
        let granted = host(vec![bind(
            "/home/ann/.cargo/bin",
            "/home/ann/.cargo/bin",
            true,
        )]);
        assert_eq!(cage_path(&granted)[0], "/home/ann/.cargo/bin");
        assert_eq!(
            resolve("cargo", &granted, &fs).unwrap().as_deref(),
            Some("/home/ann/.cargo/bin/cargo")
        );
    }

    #[test]
    fn a_link_out_of_the_granted_directory_needs_its_target_granted_too() {
        let fs = toolchains();
        let err = resolve("claude", &host(vec![]), &fs).unwrap_err();
        let ProgramError::OnHostOnly { grant, .. } = &err else {
            panic!("{err}");
        };
        assert!(
            grant.contains("  { host = \"/home/ann/.local/bin\", on_path = true },\n  { host = \"/home/ann/.local/share/claude/versions\" },"),
            "{grant}"
        );
        // The bin directory alone: the link dangles in the cage.
        let bin_only = host(vec![bind(
            "/home/ann/.local/bin",
            "/home/ann/.local/bin",
            true,
        )]);
        assert!(resolve("claude", &bin_only, &fs).is_err());
        let both = host(vec![
            bind("/home/ann/.local/bin", "/home/ann/.local/bin", true),
            bind(
                "/home/ann/.local/share/claude/versions",
                "/home/ann/.local/share/claude/versions",
                false,
            ),
        ]);
        assert!(resolve("claude", &both, &fs).is_ok());
        // Granted below the cage's home instead, an absolute link still points at the host
        // path, which the cage does not have.
        let moved = host(vec![
            bind("/home/ann/.local/bin", "/home/kaged/.local/bin", true),
            bind(
                "/home/ann/.local/share/claude/versions",
                "/home/kaged/.local/share/claude/versions",
                false,
            ),
        ]);
        assert!(resolve("claude", &moved, &fs).is_err());
    }

    #[test]
    fn relative_links_resolve_inside_the_cage_and_reserved_places_go_below_home() {
        let fs = Fake::new(&[
            (
                "/tmp/t/home/node_modules/.bin/claude",
                Lookup::Link("../@anthropic-ai/claude-code/bin/claude.exe".into()),
            ),
            (
                "/tmp/t/home/node_modules/@anthropic-ai/claude-code/bin/claude.exe",
                Lookup::Executable,
            ),
        ]);
        let operator = vec![PathBuf::from("/tmp/t/home/node_modules/.bin")];
        let h = host(vec![]);
        let err = resolve_program(
            "claude",
            &cage_path(&h),
            &View::of(&h, Path::new("/p")),
            &fs,
            &operator,
            "demo",
        )
        .unwrap_err();
        let shown = err.to_string();
        assert!(
            shown.contains(
                "{ host = \"/tmp/t/home/node_modules/.bin\", at = \"home:/.bin\", on_path = true },"
            ),
            "{shown}"
        );
        // Below the home, the relative link leads to ../@anthropic-ai there: granted too.
        assert!(
            shown.contains("{ host = \"/tmp/t/home/node_modules/@anthropic-ai/claude-code/bin\", at = \"home:/bin\" },"),
            "{shown}"
        );
        assert!(shown.contains("# and the directories the links"), "{shown}");
        // Granting the whole tree at its own place works.
        let whole = host(vec![bind(
            "/srv/t/node_modules",
            "/srv/t/node_modules",
            false,
        )]);
        let fs = Fake::new(&[
            (
                "/srv/t/node_modules/.bin/claude",
                Lookup::Link("../@anthropic-ai/claude-code/bin/claude.exe".into()),
            ),
            (
                "/srv/t/node_modules/@anthropic-ai/claude-code/bin/claude.exe",
                Lookup::Executable,
            ),
        ]);
        assert!(
            View::of(&whole, Path::new("/p"))
                .executable(&fs, Path::new("/srv/t/node_modules/.bin/claude"))
        );
    }

    #[test]
    fn link_loops_end() {
        let fs = Fake::new(&[
            ("/usr/bin/a", Lookup::Link("b".into())),
            ("/usr/bin/b", Lookup::Link("a".into())),
        ]);
        assert!(!View::of(&host(vec![]), Path::new("/p")).executable(&fs, Path::new("/usr/bin/a")));
    }
}
