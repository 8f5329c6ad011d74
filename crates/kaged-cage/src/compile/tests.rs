//! The compiler on data: policies and host facts in, bwrap options out.

use super::*;
use crate::policy::tests::project;
use crate::policy_for;

/// Every source of `policy` opened, `.git` and `.kaged` included, ids 100, 101, ...
fn host_for(policy: &Policy, git: bool) -> Host {
    Host {
        system_dirs: vec!["/usr".into(), "/etc".into(), "/bin".into()],
        system_submounts: Vec::new(),
        binds: Vec::new(),
        opened: sources(policy, true)
            .into_iter()
            .filter(|(s, _)| git || *s != Source::Project(".git".into()))
            .enumerate()
            .map(|(i, (source, _))| Opened {
                source,
                id: FileId {
                    dev: 7,
                    ino: 100 + i as u64,
                },
            })
            .collect(),
    }
}

fn argv(policy: &Policy) -> Vec<String> {
    let cmd = vec!["make".to_string(), "test".to_string()];
    let env = vec![("TERM".to_string(), "xterm".to_string())];
    compile(
        policy,
        &host_for(policy, true),
        &Launch {
            cwd: Path::new("sub"),
            command: &cmd,
            env: &env,
            own_terminal: false,
            egress: None,
        },
    )
    .unwrap()
    .joined()
}

fn has(a: &[String], seq: &[&str]) -> bool {
    a.windows(seq.len())
        .any(|w| w.iter().zip(seq).all(|(x, y)| x == y))
}

#[test]
fn default_cage_is_closed() {
    let p = policy_for(&project(), "primary").unwrap();
    assert_eq!(p, Policy::default_cage());
    let a = argv(&p);
    for flag in [
        "--die-with-parent",
        "--new-session",
        "--unshare-user",
        "--disable-userns",
        "--unshare-pid",
        "--unshare-net",
        "--clearenv",
    ] {
        assert!(a.contains(&flag.to_string()), "{flag}");
    }
    assert!(has(&a, &["--ro-bind", "/usr", "/usr"]));
    assert!(has(&a, &["--ro-bind", "/etc", "/etc"]));
    assert!(
        !a.contains(&"/lib64".to_string()),
        "absent dirs are not bound"
    );
    // Everything of the project comes from a descriptor (root 6, helper 7, .git 8, ...),
    // never from a path a cage could swap.
    assert!(has(&a, &["--bind-fd", "6", "/workspace"]));
    assert!(has(&a, &["--ro-bind-fd", "8", "/workspace/.git"]));
    assert!(has(&a, &["--ro-bind-fd", "9", "/workspace/.kaged"]));
    assert!(has(&a, &["--ro-bind-fd", "7", HELPER]));
    assert!(
        !a.iter()
            .any(|x| x == "--bind" || x.starts_with("/home/ann"))
    );
    assert!(has(&a, &["--add-seccomp-fd", "3", "--add-seccomp-fd", "4"]));
    assert!(has(&a, &["--tmpfs", "/home", "--dir", "/home/kaged"]));
    assert!(has(&a, &["--chdir", "/workspace/sub"]));
    assert!(has(&a, &["--setenv", "TERM", "xterm"]));
    // The check comes first and knows every destination; then the command.
    assert!(has(
        &a,
        &[
            "--",
            HELPER,
            "cage-check",
            "--expect",
            "bind:rw:7:100:/workspace",
            "--expect",
            "bind:ro:7:102:/workspace/.git",
            "--expect",
            "bind:ro:7:103:/workspace/.kaged",
            "--mount",
            "/proc",
        ]
    ));
    let mounts: Vec<&str> = a
        .windows(2)
        .filter(|w| w[0] == "--mount")
        .map(|w| w[1].as_str())
        .collect();
    assert_eq!(
        mounts,
        [
            "/proc",
            "/dev",
            "/tmp",
            "/home",
            "/run",
            "/workspace",
            "/usr",
            "/bin",
            "/etc",
            "/workspace/.git",
            "/workspace/.kaged",
            HELPER
        ]
    );
    assert!(a.ends_with(&["--".into(), "make".into(), "test".into()]));
    let ws = a.iter().position(|x| x == "/workspace").unwrap();
    let git = a.iter().position(|x| x == "/workspace/.git").unwrap();
    assert!(git > ws);
}

#[test]
fn an_absent_git_is_masked_and_checked() {
    let p = Policy::default_cage();
    let cmd = vec!["sh".to_string()];
    let a = compile(
        &p,
        &host_for(&p, false),
        &Launch {
            cwd: Path::new(""),
            command: &cmd,
            env: &[],
            own_terminal: false,
            egress: None,
        },
    )
    .unwrap()
    .joined();
    assert!(has(
        &a,
        &[
            "--tmpfs",
            "/workspace/.git",
            "--remount-ro",
            "/workspace/.git"
        ]
    ));
    assert!(has(&a, &["--expect", "mask:/workspace/.git"]));
    // A source the edge did not open is a bug, never a path fallback.
    let mut missing = host_for(&p, true);
    missing.opened.retain(|o| o.source != Source::Helper);
    assert!(matches!(
        compile(
            &p,
            &missing,
            &Launch {
                cwd: Path::new(""),
                command: &cmd,
                env: &[],
                own_terminal: false,
                egress: None,
            },
        ),
        Err(CageError::MissingSource(_))
    ));
}

#[test]
fn host_network_grants_and_disabled() {
    let p = policy_for(&project(), "net").unwrap();
    let a = argv(&p);
    assert!(!a.contains(&"--unshare-net".to_string()));
    assert!(has(&a, &["--bind-fd", "8", "/workspace/data"]));
    assert!(has(&a, &["--expect", "bind:rw:7:102:/workspace/data"]));
    assert_eq!(policy_for(&project(), "free").unwrap(), Policy::Disabled);
    assert_eq!(argv(&Policy::Disabled), vec!["make", "test"]);
    let allow = policy_for(&project(), "allow").unwrap();
    assert!(
        argv(&allow).contains(&"--unshare-net".to_string()),
        "without the proxy: no network"
    );
    let missing = unenforced(&allow, false);
    assert!(missing.iter().any(|m| m.contains("allowlist")));
}

#[test]
fn allowlist_goes_through_the_bridge_and_a_kaged_pty_keeps_job_control() {
    let allow = policy_for(&project(), "allow").unwrap();
    let cmd = vec!["curl".to_string(), "https://api.github.com".to_string()];
    let launch = |egress| Launch {
        cwd: Path::new(""),
        command: &cmd,
        env: &[],
        own_terminal: true,
        egress,
    };
    let host = host_for(&allow, true);
    let with = compile(
        &allow,
        &host,
        &launch(Some(Path::new("/run/user/1/kaged/egress-1.sock"))),
    )
    .unwrap()
    .joined();
    assert!(with.contains(&"--unshare-net".to_string()));
    // Its directory by descriptor (after root, helper, .git and .kaged), read-only, never
    // by the host path, which a cage switched to another user could not reach.
    assert!(has(&with, &["--ro-bind-fd", "10", EGRESS_DIR]));
    assert!(!with.iter().any(|a| a.contains("/run/user/1")));
    assert_eq!(host.opened.get(4).map(|o| &o.source), Some(&Source::Egress));
    // Without the socket opened, no path fallback.
    let mut unopened = host.clone();
    unopened.opened.retain(|o| o.source != Source::Egress);
    assert!(matches!(
        compile(
            &allow,
            &unopened,
            &launch(Some(Path::new("/run/user/1/kaged/egress-1.sock")))
        ),
        Err(CageError::MissingSource(_))
    ));
    assert!(has(
        &with,
        &[
            "--",
            HELPER,
            "cage-tty",
            "--",
            HELPER,
            "cage-bridge",
            "--listen",
            EGRESS_LISTEN,
            "--socket",
            "/run/kaged/egress/egress-1.sock",
            "--",
            "curl"
        ]
    ));
    assert!(!with.contains(&"--new-session".to_string()));
    assert!(
        unenforced(&allow, true)
            .iter()
            .all(|m| !m.contains("allowlist"))
    );
    // Without a proxy there is no bridge, and a closed cage never gets one.
    let without = compile(&allow, &host, &launch(None)).unwrap().joined();
    assert!(!without.iter().any(|a| a == "cage-bridge"));
    let closed = compile(
        &Policy::default_cage(),
        &host_for(&Policy::default_cage(), true),
        &launch(Some(Path::new("/s"))),
    )
    .unwrap()
    .joined();
    assert!(!closed.iter().any(|a| a == "cage-bridge" || a == "/s"));
}

#[test]
fn host_grants_are_bound_read_only_checked_and_put_on_path() {
    let p = Policy::default_cage();
    let mut host = host_for(&p, true);
    host.binds = vec![
        HostBind {
            host: "/home/ann/.cargo/bin".into(),
            dest: "/home/ann/.cargo/bin".into(),
            writable: false,
            on_path: true,
            id: FileId { dev: 9, ino: 1 },
        },
        HostBind {
            host: "/home/ann/.rustup".into(),
            dest: grant_destination("home:/.rustup/").unwrap(),
            writable: false,
            on_path: false,
            id: FileId { dev: 9, ino: 2 },
        },
    ];
    let cmd = vec!["cargo".to_string()];
    let a = compile(
        &p,
        &host,
        &Launch {
            cwd: Path::new(""),
            command: &cmd,
            env: &[],
            own_terminal: false,
            egress: None,
        },
    )
    .unwrap()
    .joined();
    assert!(has(
        &a,
        &["--ro-bind", "/home/ann/.cargo/bin", "/home/ann/.cargo/bin"]
    ));
    assert!(has(
        &a,
        &["--ro-bind", "/home/ann/.rustup", "/home/kaged/.rustup"]
    ));
    // After the home's tmpfs, and checked from inside like every bind.
    let home = a.iter().position(|x| x == "/home").unwrap();
    let cargo = a.iter().position(|x| x == "/home/ann/.cargo/bin").unwrap();
    assert!(cargo > home);
    assert!(has(&a, &["--expect", "bind:ro:9:1:/home/ann/.cargo/bin"]));
    assert!(has(&a, &["--expect", "bind:ro:9:2:/home/kaged/.rustup"]));
    assert!(has(&a, &["--mount", "/home/kaged/.rustup"]));
    assert!(has(
        &a,
        &[
            "--setenv",
            "PATH",
            "/home/ann/.cargo/bin:/usr/local/bin:/usr/bin:/bin:/usr/local/sbin:/usr/sbin:/sbin"
        ]
    ));
    assert_eq!(
        grant_destination("project:/data").as_deref(),
        Some("/workspace/data")
    );
    assert_eq!(grant_destination("/opt//x/").as_deref(), Some("/opt/x"));
    for bad in ["home:/", "home:/../etc", "/", "relative", "project:/a/../b"] {
        assert_eq!(grant_destination(bad), None, "{bad}");
    }
}

#[test]
fn a_kaged_terminal_gets_its_foreground_group_set_inside_the_cage() {
    let cmd = vec!["sh".to_string()];
    let launch = |own_terminal| Launch {
        cwd: Path::new(""),
        command: &cmd,
        env: &[],
        own_terminal,
        egress: None,
    };
    let p = Policy::default_cage();
    let a = compile(&p, &host_for(&p, true), &launch(true))
        .unwrap()
        .joined();
    assert!(has(&a, &["--", HELPER, "cage-tty", "--", "sh"]));
    let shared = compile(&p, &host_for(&p, true), &launch(false))
        .unwrap()
        .joined();
    assert!(!shared.iter().any(|x| x == "cage-tty"));
}

#[test]
fn a_read_only_workspace_is_bound_and_checked_read_only_without_masks() {
    let p = Policy::Caged {
        network: Network::None,
        mounts: Vec::new(),
        seccomp: "default".into(),
        limits: Default::default(),
        workspace: Workspace::ReadOnly,
    };
    assert_eq!(
        sources(&p, false),
        vec![(Source::Root, true), (Source::Helper, true)],
        "no .git or .kaged below a read-only workspace"
    );
    let a = argv(&p);
    assert!(has(&a, &["--ro-bind-fd", "6", "/workspace"]), "{a:?}");
    assert!(!has(&a, &["--bind-fd", "6", "/workspace"]));
    assert!(has(&a, &["--expect", "bind:ro:7:100:/workspace"]), "{a:?}");
    assert!(!a.iter().any(|x| x.starts_with("/workspace/.")), "{a:?}");
    assert!(a.contains(&"--unshare-net".to_string()));
    // The project's own workspace stays read-write.
    let project = argv(&Policy::default_cage());
    assert!(has(&project, &["--bind-fd", "6", "/workspace"]));
    assert!(has(&project, &["--expect", "bind:rw:7:100:/workspace"]));
}
