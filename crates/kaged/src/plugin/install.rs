//! `kaged plugin install PATH [--yes]`: validate, show what the plugin may do (and what an
//! upgrade gains), confirm, copy into `[plugins] dir` as `DIR/NAME`.

use std::io::{BufRead, IsTerminal, Write};
use std::path::Path;

use anyhow::anyhow;
use kaged_config::{DeploymentMode, FlagOverrides};
use kaged_plugin::{MANIFEST_FILE, Manifest, load_manifest};

use super::{checked, copy, locate};
use crate::Failure;

/// What is installed under the plugin's name already.
enum Installed {
    /// Nothing.
    Nothing,
    /// A valid plugin.
    Valid(Box<Manifest>),
    /// Something whose manifest cannot be read or does not validate, and why.
    Unreadable(String),
}

fn installed(target: &Path) -> Installed {
    if std::fs::symlink_metadata(target).is_err() {
        return Installed::Nothing;
    }
    let path = target.join(MANIFEST_FILE);
    match kaged_server::read_project_file(&path) {
        Ok(Some(text)) => match load_manifest(&text) {
            Ok(manifest) => Installed::Valid(Box::new(manifest)),
            Err(e) => Installed::Unreadable(format!(
                "its manifest does not validate ({} problems)",
                e.diagnostics.len()
            )),
        },
        Ok(None) => Installed::Unreadable(format!("it has no {MANIFEST_FILE}")),
        Err(e) => Installed::Unreadable(format!("cannot read {}: {e}", path.display())),
    }
}

/// What the operator reads before confirming: the plugin, how it runs, what it may do, and
/// what it may do that the installed version could not. Ends with a newline.
fn confirmation(manifest: &Manifest, installed: &Installed, target: &Path) -> String {
    let mut out = format!(
        "plugin {} {}: {}\n",
        manifest.name, manifest.version, manifest.description
    );
    out.push_str(&format!(
        "runs: {} (in its own cage, its directory read-only)\n",
        manifest.command.join(" ")
    ));
    let list = manifest.capabilities.list();
    if list.is_empty() {
        out.push_str("it may: nothing beyond reading its own files (no network, no storage)\n");
    } else {
        out.push_str("it may:\n");
        for capability in list {
            out.push_str(&format!("  - {}\n", capability.describe()));
        }
    }
    if !manifest.tools.is_empty() {
        let tools: Vec<String> = manifest
            .tools
            .iter()
            .map(|t| manifest.agent_tool_name(t))
            .collect();
        out.push_str(&format!("tools for model agents: {}\n", tools.join(", ")));
    }
    match installed {
        Installed::Nothing => {}
        Installed::Valid(old) => {
            out.push_str(&format!(
                "replaces the installed {} {} ({})\n",
                old.name,
                old.version,
                target.display()
            ));
            let gained = manifest.capabilities.gained(&old.capabilities);
            if gained.is_empty() {
                out.push_str(&format!(
                    "it may do nothing that {} could not\n",
                    old.version
                ));
            } else {
                out.push_str(&format!("new since {}, it may also:\n", old.version));
                for capability in gained {
                    out.push_str(&format!("  - {}\n", capability.describe()));
                }
            }
        }
        Installed::Unreadable(why) => {
            out.push_str(&format!(
                "replaces what is installed at {} ({why}): everything above is new\n",
                target.display()
            ));
        }
    }
    out
}

/// A command naming a program inside the plugin (`./rust-hello`, `bin/run`) must be there,
/// a regular executable file: installing a plugin that cannot start helps no one. A bare name
/// (`python3`) or an absolute path is found in the cage, not here.
fn missing_program(dir: &Path, manifest: &Manifest) -> Option<String> {
    use std::os::unix::fs::PermissionsExt;
    let program = manifest.command.first()?;
    if program.starts_with('/') || !program.contains('/') {
        return None;
    }
    let path = dir.join(program);
    let problem = match std::fs::symlink_metadata(&path) {
        Ok(meta) if meta.is_file() && meta.permissions().mode() & 0o111 != 0 => return None,
        Ok(meta) if meta.is_file() => "is not executable (chmod +x it)",
        Ok(_) => "is not a regular file",
        Err(_) => "does not exist (build it first?)",
    };
    Some(format!(
        "the plugin's command runs {program}, but {} {problem}",
        path.display()
    ))
}

/// `Install? [y/N]` on a terminal; without one, a refusal naming `--yes`.
fn confirm(name: &str) -> Result<(), Failure> {
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        return Err(Failure::Config(format!(
            "not installing {name}: there is no terminal to confirm on; run again with --yes to install it with the capabilities above"
        )));
    }
    eprint!("Install? [y/N] ");
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    stdin
        .lock()
        .read_line(&mut answer)
        .map_err(|e| anyhow!("cannot read the answer: {e}"))?;
    if matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes") {
        Ok(())
    } else {
        Err(Failure::Runtime(anyhow!("{name} not installed")))
    }
}

pub fn install(path: &Path, yes: bool, mode: Option<DeploymentMode>) -> Result<(), Failure> {
    let located = locate(path)?;
    let manifest = checked(&located)?;
    // Links, special files and a missing program are refused before the operator is asked
    // anything.
    let entries = copy::scan(&located.dir)?;
    if let Some(problem) = missing_program(&located.dir, &manifest) {
        return Err(Failure::Config(problem));
    }
    let facts = crate::host::gather();
    let (_, settings, _) = crate::config_for_start(&facts, mode, None, FlagOverrides::default())?;
    let dir = settings.plugins_dir;
    let target = dir.join(&manifest.name);
    print!("{}", confirmation(&manifest, &installed(&target), &target));
    let _ = std::io::stdout().flush();
    if !yes {
        confirm(&manifest.name)?;
    }
    let replaced = copy::install_tree(&located.dir, &entries, &dir, &manifest.name)?;
    println!(
        "{} {} {} {} in {}",
        if replaced { "replaced" } else { "installed" },
        manifest.name,
        if replaced { "with" } else { "version" },
        manifest.version,
        target.display()
    );
    println!("next: kaged plugin enable {}", manifest.name);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(name: &str, version: &str, capabilities: &str) -> Manifest {
        load_manifest(&format!(
            "name: {name}\nversion: {version}\nkaged_api: 1\ndescription: Keeps notes\ncommand: [python3, plugin.py]\ncapabilities: {capabilities}\ntools: [{{name: add, description: a, input_schema: {{type: object}}}}]\n"
        ))
        .unwrap()
    }

    #[test]
    fn a_first_install_shows_the_capabilities_in_words() {
        let new = manifest(
            "notes",
            "0.2.0",
            r#"["kaged:storage:read", "net:api.example.org:443"]"#,
        );
        let text = confirmation(&new, &Installed::Nothing, Path::new("/p/notes"));
        assert_eq!(
            text,
            "plugin notes 0.2.0: Keeps notes\n\
             runs: python3 plugin.py (in its own cage, its directory read-only)\n\
             it may:\n  - read its own kaged storage\n  - connect to api.example.org:443\n\
             tools for model agents: notes.add\n"
        );
        let none = manifest("notes", "0.2.0", "[]");
        assert!(
            confirmation(&none, &Installed::Nothing, Path::new("/p/notes"))
                .contains("it may: nothing beyond reading its own files")
        );
    }

    #[test]
    fn a_program_inside_the_plugin_must_be_there_and_executable() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let with = |command: &str| {
            load_manifest(&format!(
                "name: x\nversion: 0.1.0\nkaged_api: 1\ndescription: d\ncommand: [{command}]\ncapabilities: []\n"
            ))
            .unwrap()
        };
        assert_eq!(missing_program(tmp.path(), &with("python3")), None);
        assert_eq!(missing_program(tmp.path(), &with("/usr/bin/python3")), None);
        let missing = missing_program(tmp.path(), &with("./hello")).unwrap();
        assert!(
            missing.ends_with("/./hello does not exist (build it first?)"),
            "{missing}"
        );
        let file = tmp.path().join("hello");
        std::fs::write(&file, "").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(
            missing_program(tmp.path(), &with("./hello"))
                .unwrap()
                .ends_with("is not executable (chmod +x it)")
        );
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(missing_program(tmp.path(), &with("./hello")), None);
    }

    #[test]
    fn an_upgrade_shows_what_it_gains() {
        let old = manifest("notes", "0.1.0", r#"["kaged:storage:read"]"#);
        let new = manifest(
            "notes",
            "0.2.0",
            r#"["kaged:storage:read", "kaged:storage:write"]"#,
        );
        let text = confirmation(
            &new,
            &Installed::Valid(Box::new(old.clone())),
            Path::new("/p/notes"),
        );
        assert!(
            text.ends_with(
                "replaces the installed notes 0.1.0 (/p/notes)\nnew since 0.1.0, it may also:\n  - change its own kaged storage\n"
            ),
            "{text}"
        );
        let same = confirmation(
            &old,
            &Installed::Valid(Box::new(old.clone())),
            Path::new("/p/notes"),
        );
        assert!(
            same.ends_with("it may do nothing that 0.1.0 could not\n"),
            "{same}"
        );
        let broken = confirmation(
            &new,
            &Installed::Unreadable("it has no kaged-plugin.yaml".into()),
            Path::new("/p/notes"),
        );
        assert!(
            broken.ends_with("(it has no kaged-plugin.yaml): everything above is new\n"),
            "{broken}"
        );
    }
}
