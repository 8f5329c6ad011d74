//! Capabilities on data: every form, every refusal, and the cage they compile to.

use super::*;

fn error(text: &str) -> CapabilityError {
    parse(text).unwrap_err()
}

fn grant(path: &str, writable: bool) -> HostPath {
    HostPath {
        host: path.into(),
        at: path.into(),
        writable,
        on_path: false,
    }
}

#[test]
fn every_known_form_parses_and_prints_back() {
    for text in [
        "read:fs:/srv/data",
        "write:fs:/var/lib/notes",
        "exec:/usr/bin/git",
        "net:[]",
        "net:*",
        "net:api.example.org:443",
        "net:db.example.org:*",
        "net:10.0.0.5:5432",
        "net:[2001:db8::1]:8443",
        "net:[::1]:*",
        "kaged:storage:read",
        "kaged:storage:write",
    ] {
        assert_eq!(parse(text).unwrap().to_string(), text);
    }
    assert_eq!(
        parse("net:API.Example.org:443").unwrap(),
        Capability::Net("api.example.org:443".into()),
        "hosts are normalised as the egress proxy compares them"
    );
}

#[test]
fn unknown_capabilities_are_named_with_the_known_forms() {
    for text in [
        "fs:read:/x",
        "read:/x",
        "kaged:storage:admin",
        "net",
        "",
        "exec",
    ] {
        let e = error(text);
        assert_eq!(e.capability, text);
        assert_eq!(e.problem, "is not a capability kaged knows", "{text}");
        assert!(e.hint.contains("read:fs:/ABSOLUTE/PATH"), "{e:?}");
        assert!(e.hint.contains("kaged:storage:write"), "{e:?}");
    }
    assert_eq!(
        error("sudo").to_string(),
        "capability \"sudo\": is not a capability kaged knows"
    );
}

#[test]
fn paths_must_be_absolute_normal_and_outside_the_cage_s_own() {
    let problem = |text: &str| error(text).problem;
    assert_eq!(
        problem("read:fs:data"),
        "`data` is relative; capabilities name absolute paths"
    );
    assert_eq!(
        problem("write:fs:./out"),
        "`./out` is relative; capabilities name absolute paths"
    );
    assert_eq!(
        problem("exec:bin/tool"),
        "`bin/tool` is relative; capabilities name absolute paths"
    );
    assert_eq!(problem("read:fs:"), "names no path");
    assert_eq!(
        problem("read:fs:/srv/../etc"),
        "`/srv/../etc` climbs with `..`"
    );
    assert_eq!(problem("read:fs:/"), "grants the whole filesystem");
    assert_eq!(problem("write:fs://"), "grants the whole filesystem");
    let e = error("read:fs:/srv//data/");
    assert_eq!(e.problem, "`/srv//data/` is not in normal form");
    assert_eq!(e.hint, "write read:fs:/srv/data");
    assert_eq!(error("write:fs:/srv/./x").hint, "write write:fs:/srv/x");
    assert_eq!(problem("exec:/usr/bin/"), "names a directory, not a binary");
    for reserved in [
        "read:fs:/proc",
        "read:fs:/proc/1/environ",
        "write:fs:/dev/sda",
        "read:fs:/sys",
        "read:fs:/workspace",
        "write:fs:/workspace/x",
        "read:fs:/home/kaged/.ssh",
        "exec:/run/kaged/kaged",
    ] {
        assert!(
            error(reserved)
                .problem
                .contains("which the cage makes itself"),
            "{reserved}"
        );
    }
    // Only whole components are reserved.
    assert!(parse("read:fs:/procfiles").is_ok());
    assert!(parse("read:fs:/home/kagedx").is_ok());
}

#[test]
fn network_destinations_need_a_host_and_a_port_in_range() {
    let problem = |text: &str| error(text).problem;
    assert_eq!(problem("net:example.org"), "names no port");
    assert_eq!(problem("net:[::1]"), "names no port");
    assert_eq!(
        problem("net:[::1:443"),
        "the IPv6 address has no closing `]`"
    );
    assert_eq!(
        problem("net:::1:443"),
        "an IPv6 address must be written in brackets"
    );
    for port in ["0", "65536", "-1", "http", ""] {
        assert_eq!(
            problem(&format!("net:example.org:{port}")),
            format!("port `{port}` is not a number from 1 to 65535")
        );
    }
    assert!(parse("net:example.org:1").is_ok());
    assert!(parse("net:example.org:65535").is_ok());
    assert_eq!(problem("net::443"), "names no host");
    assert_eq!(problem("net:*:443"), "names no host");
    assert!(problem("net:exa mple.org:443").contains("not a valid host name"));
    assert!(problem("net:[zz::1]:443").contains("not a valid bracketed IPv6 address"));
    assert_eq!(
        problem("net:https://example.org:443"),
        "names a URL, not a host and port"
    );
}

#[test]
fn hosts_are_judged_and_normalised_as_the_egress_proxy_does() {
    let hosts = [
        "example.org",
        "API.Example.ORG.",
        "a_b.example.org",
        "localhost",
        "*.github.com",
        "*.com",
        "*.",
        "a.*.com",
        "exa mple.org",
        "-bad.example.org",
        "bad-.example.org",
        &format!("{}.org", "a".repeat(64)),
        &format!("{}.org", "a".repeat(63)),
        &format!("{}.org", ["a"; 126].join(".")),
        &format!("{}.org", ["a"; 125].join(".")),
        "127.1",
        "2130706433",
        "10.0.0.5",
        "0.0.0.0",
        "224.0.0.1",
        "255.255.255.255",
        "[::1]",
        "[::]",
        "[ff02::1]",
        "[::ffff:10.0.0.1]",
        "[2001:DB8::1]",
        "[zz::1]",
        "ümlaut.example",
        "xn--mlaut-jva.example",
    ];
    for host in hosts {
        for port in ["443", "*", "0443"] {
            let ours = parse(&format!("net:{host}:{port}"));
            let theirs = kaged_egress::Allowlist::parse(&[format!("{host}:{port}")]);
            match (&ours, &theirs) {
                (Ok(Capability::Net(entry)), Ok(list)) => {
                    assert_eq!(*entry, list.describe(), "{host}:{port}")
                }
                (Err(_), Err(_)) => {}
                _ => panic!("{host}:{port}: ours {ours:?}, the proxy's {theirs:?}"),
            }
        }
    }
}

#[test]
fn duplicates_and_no_network_beside_a_destination_conflict() {
    let errors = parse_all(&["net:[]", "net:example.org:443", "net:*", "net:[]"]).unwrap_err();
    let found: Vec<(usize, &str)> = errors
        .iter()
        .map(|(i, e)| (*i, e.problem.as_str()))
        .collect();
    assert_eq!(
        found,
        vec![
            (1, "conflicts with `net:[]`: net:[] means no network at all"),
            (2, "conflicts with `net:[]`: net:[] means no network at all"),
            (3, "is declared twice"),
        ]
    );
    let errors = parse_all(&["net:example.org:443", "net:[]"]).unwrap_err();
    assert_eq!(
        errors[0],
        (
            1,
            refuse(
                "net:[]",
                "conflicts with `net:example.org:443`: net:[] means no network at all",
                "keep either net:[] or the net: destinations"
            )
        )
    );
    // Every bad item is reported, not only the first.
    let errors = parse_all(&["read:fs:x", "kaged:storage:read", "bogus"]).unwrap_err();
    assert_eq!(
        errors.iter().map(|(i, _)| *i).collect::<Vec<_>>(),
        vec![0, 2]
    );
}

#[test]
fn nothing_declared_is_a_closed_cage_around_the_plugin_directory_alone() {
    let cage = parse_all(&[]).unwrap().cage();
    assert_eq!(
        cage,
        PluginCage {
            policy: Policy::Caged {
                network: Network::None,
                mounts: Vec::new(),
                seccomp: "default".into(),
                limits: Limits::default(),
                workspace: Workspace::ReadOnly,
            },
            grants: Vec::new(),
            storage: Storage::default(),
        }
    );
    assert_eq!(parse_all(&["net:[]"]).unwrap().cage(), cage);
}

#[test]
fn the_compiled_cage_holds_exactly_the_declared_binds_network_and_storage() {
    let caps = parse_all(&[
        "write:fs:/srv/notes/out",
        "read:fs:/srv/notes",
        "exec:/opt/tools/rg",
        "read:fs:/etc/ssl/certs",
        "net:api.example.org:443",
        "net:[::1]:*",
        "kaged:storage:read",
    ])
    .unwrap();
    let cage = caps.cage();
    assert_eq!(
        cage.policy,
        Policy::Caged {
            network: Network::Allow(vec!["api.example.org:443".into(), "[::1]:*".into()]),
            mounts: Vec::new(),
            seccomp: "default".into(),
            limits: Limits::default(),
            workspace: Workspace::ReadOnly,
        }
    );
    assert_eq!(
        cage.grants,
        vec![
            grant("/srv/notes", false),
            grant("/etc/ssl/certs", false),
            grant("/opt/tools/rg", false),
            grant("/srv/notes/out", true),
        ],
        "parents before children; nothing undeclared"
    );
    assert_eq!(
        cage.storage,
        Storage {
            read: true,
            write: false
        }
    );
    for g in &cage.grants {
        assert_eq!(
            kaged_cage::grant_destination(&g.at).as_deref(),
            Some(g.at.as_str())
        );
    }
    // The allowlist entries are ones the egress proxy accepts, and only those hosts pass.
    let Network::Allow(entries) = caps.network() else {
        panic!("allowlist")
    };
    let list = kaged_egress::Allowlist::parse(&entries).unwrap();
    let host = |h: &str| kaged_egress::Host::parse(h).unwrap();
    assert!(list.allows(&host("api.example.org"), 443).is_allowed());
    assert!(!list.allows(&host("api.example.org"), 80).is_allowed());
    assert!(list.allows(&host("[::1]"), 6379).is_allowed());
    assert!(!list.allows(&host("example.org"), 443).is_allowed());
}

/// bwrap's options for a plugin cage, with every source and grant "opened" (fake ids).
fn bwrap_options(cage: &PluginCage, egress: bool) -> Vec<String> {
    use kaged_cage::{FileId, Host, HostBind, Launch, Opened, compile, sources};
    let id = FileId { dev: 1, ino: 2 };
    let host = Host {
        system_dirs: vec!["/usr".into(), "/etc".into()],
        opened: sources(&cage.policy, egress)
            .into_iter()
            .map(|(source, _)| Opened { source, id })
            .collect(),
        system_submounts: Vec::new(),
        binds: cage
            .grants
            .iter()
            .map(|g| HostBind {
                host: g.host.clone(),
                dest: g.at.clone(),
                writable: g.writable,
                on_path: g.on_path,
                id,
            })
            .collect(),
    };
    let command = vec!["python3".to_string(), "plugin.py".to_string()];
    let socket = std::path::Path::new("/run/kaged-test/egress.sock");
    compile(
        &cage.policy,
        &host,
        &Launch {
            cwd: std::path::Path::new(""),
            command: &command,
            env: &[],
            own_terminal: false,
            egress: egress.then_some(socket),
        },
    )
    .unwrap()
    .options
}

/// Every mount option with its destination: `(option, destination)`.
fn mounts(options: &[String]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < options.len() {
        let takes_two = matches!(
            options[i].as_str(),
            "--bind" | "--ro-bind" | "--bind-fd" | "--ro-bind-fd"
        );
        let takes_one = matches!(
            options[i].as_str(),
            "--tmpfs" | "--dir" | "--proc" | "--dev"
        );
        if takes_two {
            out.push((options[i].clone(), options[i + 2].clone()));
            i += 3;
        } else if takes_one {
            out.push((options[i].clone(), options[i + 1].clone()));
            i += 2;
        } else {
            i += 1;
        }
    }
    out
}

#[test]
fn the_bwrap_command_line_binds_exactly_what_was_declared() {
    let pair = |o: &str, d: &str| (o.to_string(), d.to_string());
    let cage_only = [
        pair("--ro-bind", "/usr"),
        pair("--ro-bind", "/etc"),
        pair("--proc", "/proc"),
        pair("--dev", "/dev"),
        pair("--tmpfs", "/tmp"),
        pair("--tmpfs", "/home"),
        pair("--dir", "/home/kaged"),
        pair("--tmpfs", "/run"),
        pair("--ro-bind-fd", "/workspace"),
    ];
    // Nothing declared: the cage's own mounts, the plugin's directory read-only, the
    // helper, no network.
    let closed = bwrap_options(&parse_all(&[]).unwrap().cage(), false);
    let mut expected = cage_only.to_vec();
    expected.push(pair("--ro-bind-fd", "/run/kaged/kaged"));
    assert_eq!(mounts(&closed), expected);
    assert!(closed.contains(&"--unshare-net".to_string()));
    assert!(
        !closed.iter().any(|o| o == "--bind" || o == "--bind-fd"),
        "nothing writable: {closed:?}"
    );

    let cage = parse_all(&[
        "read:fs:/srv/notes",
        "write:fs:/srv/notes/out",
        "exec:/opt/tools/rg",
        "net:api.example.org:443",
    ])
    .unwrap()
    .cage();
    let options = bwrap_options(&cage, true);
    let mut expected = cage_only.to_vec();
    expected.extend([
        pair("--ro-bind", "/srv/notes"),
        pair("--ro-bind", "/opt/tools/rg"),
        pair("--bind", "/srv/notes/out"),
        pair("--ro-bind-fd", "/run/kaged/kaged"),
        pair("--ro-bind-fd", "/run/kaged/egress"),
    ]);
    assert_eq!(mounts(&options), expected);
    assert!(
        options.contains(&"--unshare-net".to_string()),
        "the allowlist goes through the proxy"
    );

    let open = bwrap_options(&parse_all(&["net:*"]).unwrap().cage(), false);
    assert!(
        !open.contains(&"--unshare-net".to_string()),
        "net:* is the host's network"
    );
}

#[test]
fn a_path_read_and_written_is_bound_once_writable_and_net_star_is_the_open_network() {
    let cage = parse_all(&[
        "read:fs:/data",
        "write:fs:/data",
        "exec:/data",
        "net:*",
        "net:example.org:443",
        "kaged:storage:write",
    ])
    .unwrap()
    .cage();
    assert_eq!(cage.grants, vec![grant("/data", true)]);
    let Policy::Caged { network, .. } = &cage.policy else {
        panic!("caged")
    };
    assert_eq!(*network, Network::Host);
    assert_eq!(
        cage.storage,
        Storage {
            read: false,
            write: true
        }
    );
}

#[test]
fn capabilities_in_words_and_what_an_upgrade_gains() {
    let described: Vec<String> = parse_all(&[
        "read:fs:/srv/notes",
        "write:fs:/srv/out",
        "exec:/usr/bin/rg",
        "net:api.example.org:443",
        "net:db.example.org:*",
        "kaged:storage:read",
        "kaged:storage:write",
    ])
    .unwrap()
    .list()
    .iter()
    .map(Capability::describe)
    .collect();
    assert_eq!(
        described,
        vec![
            "read /srv/notes on this machine",
            "read and change /srv/out on this machine",
            "run /usr/bin/rg",
            "connect to api.example.org:443",
            "connect to db.example.org on any port",
            "read its own kaged storage",
            "change its own kaged storage",
        ]
    );
    assert_eq!(
        Capability::NetAny.describe(),
        "use this machine's network without restriction"
    );
    assert_eq!(Capability::NetNone.describe(), "no network");

    let old = parse_all(&["net:[]", "read:fs:/srv/notes", "kaged:storage:read"]).unwrap();
    let new = parse_all(&[
        "read:fs:/srv/notes",
        "write:fs:/srv/notes",
        "net:api.example.org:443",
        "kaged:storage:read",
    ])
    .unwrap();
    assert_eq!(
        new.gained(&old),
        vec![
            &Capability::WriteFs("/srv/notes".into()),
            &Capability::Net("api.example.org:443".into())
        ]
    );
    assert!(
        old.gained(&new).is_empty(),
        "net:[] is no gain: {:?}",
        old.gained(&new)
    );
    assert!(new.gained(&new).is_empty());
}
