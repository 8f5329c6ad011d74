//! The host facts the cage compiler needs, gathered so that a cage cannot plant them.
//!
//! The project is writable inside its cage, so a run could leave a symlink where the next run
//! expects `.git`, `.kaged` or a granted path; bwrap follows symlinks in bind sources, and the
//! next cage would get whatever the link points at. Every bind source below the project root
//! is therefore checked component by component, and a symlink refuses the run.

use std::path::{Component, Path};

use kaged_cage::{Host, Policy, SYSTEM_DIRS};

/// Whether `relative` (below `root`) exists, refusing any symlink on the way.
fn present_without_symlinks(root: &Path, relative: &Path) -> Result<bool, String> {
    let mut at = root.to_path_buf();
    for c in relative.components() {
        let Component::Normal(name) = c else {
            return Err(format!(
                "{} is not a plain relative path",
                relative.display()
            ));
        };
        at.push(name);
        match std::fs::symlink_metadata(&at) {
            Ok(m) if m.file_type().is_symlink() => {
                return Err(format!(
                    "{} is a symbolic link; kaged never binds through links inside a project (a cage could have planted it): replace it with a real directory or file",
                    at.display()
                ));
            }
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(format!("{}: {e}", at.display())),
        }
    }
    Ok(true)
}

/// Facts for compiling `policy`'s cage over the project at `root` (canonical).
pub fn host_facts(root: &Path, policy: &Policy) -> Result<Host, String> {
    if let Policy::Caged { mounts, .. } = policy {
        for m in mounts {
            present_without_symlinks(root, &m.relative)?;
        }
    }
    Ok(Host {
        system_dirs: SYSTEM_DIRS
            .iter()
            .filter(|d| Path::new(d).exists())
            .map(|d| d.to_string())
            .collect(),
        // A `.git` file (a worktree's pointer) is kept read-only too.
        has_git: present_without_symlinks(root, Path::new(".git"))?,
        has_kaged: present_without_symlinks(root, Path::new(".kaged"))?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn planted_links_refuse_the_run() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        std::fs::create_dir(root.join(".kaged")).unwrap();
        std::fs::write(root.join(".git"), "gitdir: /elsewhere\n").unwrap();
        let host = host_facts(root, &Policy::default_cage()).unwrap();
        assert!(host.has_git && host.has_kaged);
        std::fs::remove_file(root.join(".git")).unwrap();
        std::os::unix::fs::symlink("/etc", root.join(".git")).unwrap();
        let err = host_facts(root, &Policy::default_cage()).unwrap_err();
        assert!(err.contains("symbolic link"), "{err}");
        std::fs::remove_file(root.join(".git")).unwrap();
        std::fs::create_dir(root.join("real")).unwrap();
        std::os::unix::fs::symlink("/etc", root.join("real/data")).unwrap();
        let granted = Policy::Caged {
            network: kaged_cage::Network::None,
            mounts: vec![kaged_cage::Mount {
                relative: "real/data/x".into(),
                writable: true,
            }],
            seccomp: "default".into(),
            limits: Default::default(),
        };
        assert!(
            host_facts(root, &granted)
                .unwrap_err()
                .contains("real/data")
        );
    }
}
