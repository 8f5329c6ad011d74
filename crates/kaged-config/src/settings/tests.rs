//! Tests of `config.toml` resolution: values, precedence, problems and the default file.

use super::render::toml_string;
use super::*;
use crate::mode::{Facts, decide_mode};

fn decision() -> ModeDecision {
    let facts = Facts {
        uid: 1000,
        user_name: Some("ann".into()),
        env: [("HOME".to_string(), "/home/ann".to_string())].into(),
        existing_dirs: Default::default(),
    };
    decide_mode(&facts, None).unwrap()
}

fn cfg() -> PathBuf {
    PathBuf::from("/home/ann/.config/kaged/config.toml")
}

fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn resolve_text(text: &str) -> Result<Settings, ConfigErrors> {
    resolve(
        &decision(),
        &cfg(),
        Some(text),
        &BTreeMap::new(),
        &FlagOverrides::default(),
    )
}

fn only_error(text: &str) -> ConfigError {
    let errs = resolve_text(text).unwrap_err().0;
    assert_eq!(errs.len(), 1, "{errs:?}");
    errs.into_iter().next().unwrap()
}

#[test]
fn rendered_strings_are_toml_strings() {
    // Found by the config_toml fuzz target: `{:?}` wrote `"/\u{1}"`, which TOML refuses.
    for text in [
        "/\u{1}",
        "a\"b\\c",
        "tab\tnew\nline\r",
        "\u{1b}[31m\u{7f}\u{85}",
        "é 🙂 'q'",
    ] {
        let parsed: toml::Table = toml::from_str(&format!("k = {}", toml_string(text))).unwrap();
        assert_eq!(parsed["k"].as_str(), Some(text), "{text:?}");
    }
}

#[test]
fn defaults_follow_the_mode_paths() {
    let s = resolve(
        &decision(),
        &cfg(),
        None,
        &BTreeMap::new(),
        &FlagOverrides::default(),
    )
    .unwrap();
    assert_eq!(s.bind.to_string(), "127.0.0.1:7777");
    assert_eq!(s.home, PathBuf::from("/home/ann/.local/share/kaged"));
    assert_eq!(
        s.storage_url.to_string(),
        "sqlite:///home/ann/.local/share/kaged/kaged.db"
    );
    assert_eq!(
        s.log_audit,
        AuditSink::File("/home/ann/.local/share/kaged/audit.log".into())
    );
    assert_eq!(s.sources["daemon.bind"], Source::Default);
}

#[test]
fn the_seed_per_user_example_parses() {
    let text = r#"
[daemon]
bind = "127.0.0.1:7777"
home = "/home/operator/.local/share/kaged"
[auth]
mode = "secure" # cookie-nonce auth
[storage]
url = "sqlite:///home/operator/.local/share/kaged/kaged.db"
[sandbox]
mode = "enabled"
default_seccomp = "default"
[logging]
operational = "stderr"
audit = "file:/home/operator/.local/share/kaged/audit.log"
level = "info"
[plugins]
dir = "/home/operator/.local/share/kaged/plugins"
enabled = []
[ui]
serve = true
"#;
    let s = resolve_text(text).unwrap();
    assert_eq!(s.home, PathBuf::from("/home/operator/.local/share/kaged"));
    assert_eq!(s.sources["daemon.bind"], Source::File { line: 3 });
}

#[test]
fn home_moves_the_derived_defaults() {
    let s = resolve_text("[daemon]\nhome = \"/srv/k\"\n").unwrap();
    assert_eq!(s.storage_url, StorageUrl::Sqlite("/srv/k/kaged.db".into()));
    assert_eq!(s.plugins_dir, PathBuf::from("/srv/k/plugins"));
}

#[test]
fn precedence_is_flag_then_env_then_file_then_default() {
    let text = "[daemon]\nbind = \"127.0.0.1:1001\"\n[logging]\nlevel = \"warn\"\n";
    let e = env(&[
        ("KAGED_BIND", "127.0.0.1:1002"),
        ("KAGED_LOG_LEVEL", "debug"),
    ]);
    let flags = FlagOverrides {
        bind: Some("127.0.0.1:1003".into()),
        ..Default::default()
    };
    let s = resolve(&decision(), &cfg(), Some(text), &e, &flags).unwrap();
    assert_eq!(s.bind.port(), 1003);
    assert_eq!(
        s.sources["daemon.bind"],
        Source::Flag {
            flag: "--bind".into()
        }
    );
    assert_eq!(s.log_level, LogLevel::Debug);
    assert_eq!(
        s.sources["logging.level"],
        Source::Env {
            var: "KAGED_LOG_LEVEL".into()
        }
    );

    let s = resolve(
        &decision(),
        &cfg(),
        Some(text),
        &e,
        &FlagOverrides::default(),
    )
    .unwrap();
    assert_eq!(s.bind.port(), 1002);
    let s = resolve(
        &decision(),
        &cfg(),
        Some(text),
        &BTreeMap::new(),
        &FlagOverrides::default(),
    )
    .unwrap();
    assert_eq!(s.bind.port(), 1001);
    assert_eq!(s.log_level, LogLevel::Warn);
    assert_eq!(s.sources["logging.level"], Source::File { line: 4 });
}

#[test]
fn auth_mechanism_follows_mode_setting_and_insecure_flag() {
    let user = decision();
    let mut system = decision();
    system.mode = DeploymentMode::System;
    let none = BTreeMap::new();
    let r = |d: &ModeDecision, text: &str, insecure: bool| {
        let flags = FlagOverrides {
            insecure,
            ..Default::default()
        };
        resolve(d, &cfg(), Some(text), &none, &flags).unwrap().auth
    };
    assert_eq!(r(&user, "", false), AuthMechanism::LaunchUrl);
    assert_eq!(r(&system, "", false), AuthMechanism::Sidecar);
    assert_eq!(
        r(&system, "[auth]\nmode = \"secure\"", false),
        AuthMechanism::Sidecar
    );
    assert_eq!(
        r(&user, "[auth]\nmode = \"sidecar\"", false),
        AuthMechanism::Sidecar
    );
    assert_eq!(
        r(&user, "[auth]\nmode = \"sidecar\"", true),
        AuthMechanism::Insecure
    );
}

#[test]
fn no_sandbox_flag_disables_the_sandbox_and_says_so() {
    let flags = FlagOverrides {
        no_sandbox: true,
        ..Default::default()
    };
    let s = resolve(
        &decision(),
        &cfg(),
        Some("[sandbox]\nmode = \"enabled\""),
        &BTreeMap::new(),
        &flags,
    )
    .unwrap();
    assert_eq!(s.sandbox_mode, SandboxMode::Disabled);
    assert_eq!(
        s.sources["sandbox.mode"],
        Source::Flag {
            flag: "--no-sandbox".into()
        }
    );
}

#[test]
fn allowed_hosts_accept_names_and_ports_only() {
    let s = resolve_text(
        "[daemon]\nallowed_hosts = [\"Kaged.Example.com\", \"10.0.0.2:8443\", \"[::1]:7\"]",
    )
    .unwrap();
    assert_eq!(
        s.allowed_hosts,
        vec!["kaged.example.com", "10.0.0.2:8443", "[::1]:7"]
    );
    for bad in [
        "https://kaged.example.com",
        "*.example.com",
        "a/b",
        "host:0",
        "host:x",
        "",
    ] {
        let e = only_error(&format!("[daemon]\nallowed_hosts = [{bad:?}]"));
        assert_eq!(e.key, "daemon.allowed_hosts", "{bad}");
    }
    let e = env(&[("KAGED_ALLOWED_HOSTS", "a.example, b.example:444")]);
    let s = resolve(&decision(), &cfg(), None, &e, &FlagOverrides::default()).unwrap();
    assert_eq!(s.allowed_hosts, vec!["a.example", "b.example:444"]);
}

#[test]
fn bearer_settings_parse_and_identity_mode_needs_a_token() {
    let token = "0123456789abcdef".repeat(3);
    let s = resolve_text(&format!(
        "[auth]\ntoken = \"{token}\"\ntrust_private_network = true\nrequire_token_identity = true\n"
    ))
    .unwrap();
    assert_eq!(
        s.auth_token.as_ref().map(ConfigSecret::expose),
        Some(token.as_str())
    );
    assert!(s.trust_private_network && s.require_token_identity);
    assert!(
        !format!("{s:?}").contains(&token),
        "Debug redacts the token"
    );
    assert!(
        !serde_json::to_string(&s).unwrap().contains(&token),
        "never serialized"
    );

    let e = only_error("[auth]\ntoken = \"change-me\"\n");
    assert!(
        e.problem.contains("too weak") && !e.to_string().contains("change-me"),
        "{e}"
    );
    let e = only_error("[auth]\nrequire_token_identity = true\n");
    assert_eq!(e.key, "auth.require_token_identity");
    assert!(matches!(e.location, Location::File { line: 2, .. }));

    let env_vars = env(&[
        ("KAGED_TRUST_PRIVATE_NETWORK", "1"),
        ("KAGED_AUTH_TOKEN", &token),
    ]);
    let s = resolve(
        &decision(),
        &cfg(),
        None,
        &env_vars,
        &FlagOverrides::default(),
    )
    .unwrap();
    assert!(s.trust_private_network);
    assert!(s.auth_token.is_some());
}

#[test]
fn listeners_and_trusted_proxy_rules() {
    let s = resolve_text(
        "[daemon]\nlisten = [\"127.0.0.1:7001\", \"unix:///run/k/proxy.sock\"]\n\
         [auth.proxy]\ntrusted_actor_header = \"X-Kaged-Actor\"\n\
         trusted_proxy_listeners = [\"unix:///run/k/proxy.sock\"]\n",
    )
    .unwrap();
    assert_eq!(s.listeners.len(), 2);
    assert_eq!(s.listeners[1].to_string(), "unix:///run/k/proxy.sock");
    assert_eq!(s.trusted_actor_header.as_deref(), Some("x-kaged-actor"));
    assert_eq!(
        s.sources["auth.proxy.trusted_actor_header"],
        Source::File { line: 4 }
    );

    // --bind is the one-listener shortcut and wins.
    let flags = FlagOverrides {
        bind: Some("127.0.0.1:9".into()),
        ..Default::default()
    };
    let s = resolve(
        &decision(),
        &cfg(),
        Some("[daemon]\nlisten = [\"127.0.0.1:7001\"]"),
        &BTreeMap::new(),
        &flags,
    )
    .unwrap();
    assert_eq!(
        s.listeners,
        vec![Listener::Tcp("127.0.0.1:9".parse().unwrap())]
    );

    let cases = [
        (
            "[daemon]\nlisten = [\"nowhere\"]",
            "daemon.listen",
            "not a listener",
        ),
        ("[daemon]\nlisten = []", "daemon.listen", "empty"),
        (
            "[daemon]\nlisten = [\"unix://relative.sock\"]",
            "daemon.listen",
            "not a listener",
        ),
        (
            "[daemon]\nbind = \"127.0.0.1:1\"\nlisten = [\"127.0.0.1:2\"]",
            "daemon.listen",
            "both",
        ),
        (
            "[auth.proxy]\ntrusted_actor_header = \"X-A\"",
            "auth.proxy.trusted_actor_header",
            "honoured nowhere",
        ),
        (
            "[auth.proxy]\ntrusted_proxy_listeners = [\"127.0.0.1:7777\"]",
            "auth.proxy.trusted_proxy_listeners",
            "trusted_actor_header is not",
        ),
        (
            "[auth.proxy]\ntrusted_actor_header = \"X-A\"\ntrusted_proxy_listeners = [\"0.0.0.0:7777\"]",
            "auth.proxy.trusted_proxy_listeners",
            "wildcard",
        ),
        (
            "[auth.proxy]\ntrusted_actor_header = \"X-A\"\ntrusted_proxy_listeners = [\"127.0.0.1:1\"]",
            "auth.proxy.trusted_proxy_listeners",
            "not one of the daemon's listeners",
        ),
        (
            "[auth.proxy]\ntrusted_actor_header = \"Authorization\"\ntrusted_proxy_listeners = [\"127.0.0.1:7777\"]",
            "auth.proxy.trusted_actor_header",
            "not usable",
        ),
        (
            "[auth.proxy]\nactor = \"x\"",
            "auth.proxy.actor",
            "unknown key",
        ),
    ];
    for (text, key, needle) in cases {
        let errs = resolve_text(text).unwrap_err().0;
        assert!(
            errs.iter()
                .any(|e| e.key == key && e.to_string().contains(needle)),
            "{text}: {errs:?}"
        );
    }
    let flags = FlagOverrides {
        insecure: true,
        insecure_readonly: true,
        ..Default::default()
    };
    assert!(resolve(&decision(), &cfg(), None, &BTreeMap::new(), &flags).is_err());
    let flags = FlagOverrides {
        insecure_readonly: true,
        ..Default::default()
    };
    let s = resolve(&decision(), &cfg(), None, &BTreeMap::new(), &flags).unwrap();
    assert_eq!(s.auth, AuthMechanism::InsecureReadonly);
}

#[test]
fn an_empty_variable_never_turns_a_file_setting_off() {
    let text = "[daemon]\nlisten = [\"127.0.0.1:7777\"]\n[auth.proxy]\ntrusted_actor_header = \"X-A\"\ntrusted_proxy_listeners = [\"127.0.0.1:7777\"]\n";
    let e = env(&[
        ("KAGED_TRUSTED_ACTOR_HEADER", ""),
        ("KAGED_TRUSTED_PROXY_LISTENERS", ""),
    ]);
    let s = resolve(
        &decision(),
        &cfg(),
        Some(text),
        &e,
        &FlagOverrides::default(),
    )
    .unwrap();
    assert_eq!(s.trusted_actor_header.as_deref(), Some("x-a"));
    assert_eq!(s.trusted_proxy_listeners.len(), 1);
}

#[test]
fn syntax_error_names_file_line_and_column() {
    let e = only_error("[daemon]\nbind = 127.0.0.1:7777\n");
    let Location::File { path, line, .. } = &e.location else {
        panic!("{e:?}")
    };
    assert_eq!(path, &cfg());
    assert_eq!(*line, 2);
    assert!(e.problem.starts_with("TOML syntax error"), "{e}");
}

#[test]
fn unknown_section_and_key_suggest_the_right_name() {
    let errs = resolve_text("[deamon]\nbind = \"127.0.0.1:1\"\n[daemon]\nbnd = \"x\"\n")
        .unwrap_err()
        .0;
    assert_eq!(errs.len(), 2);
    assert_eq!(errs[0].key, "deamon");
    assert!(
        errs[0].hint.contains("did you mean [daemon]"),
        "{}",
        errs[0]
    );
    assert_eq!(errs[1].key, "daemon.bnd");
    assert!(errs[1].hint.contains("did you mean `bind`"), "{}", errs[1]);
    assert!(matches!(
        errs[1].location,
        Location::File {
            line: 4,
            column: 1,
            ..
        }
    ));
    let shown = errs[1].to_string();
    assert!(
        shown.starts_with("/home/ann/.config/kaged/config.toml:4:1: daemon.bnd: unknown key"),
        "{shown}"
    );
}

#[test]
fn top_level_key_outside_a_section_is_rejected() {
    let e = only_error("bind = \"127.0.0.1:7777\"\n");
    assert!(e.problem.contains("must be a [section]"), "{e}");
}

#[test]
fn every_key_rejects_a_bad_value_with_its_expected_form() {
    let cases = [
        (
            "[daemon]\nbind = \"localhost\"",
            "daemon.bind",
            "not an IP address with a port",
        ),
        ("[daemon]\nbind = 7777", "daemon.bind", "the number 7777"),
        (
            "[daemon]\nhome = \"relative/dir\"",
            "daemon.home",
            "absolute",
        ),
        ("[auth]\nmode = \"open\"", "auth.mode", "\"secure\""),
        (
            "[storage]\nurl = \"sqlite://kaged.db\"",
            "storage.url",
            "three slashes",
        ),
        (
            "[storage]\nurl = \"postgres://db/kaged\"",
            "storage.url",
            "no database user",
        ),
        (
            "[storage]\nurl = \"mysql://db\"",
            "storage.url",
            "not a supported database URL",
        ),
        (
            "[sandbox]\nmode = \"off\"",
            "sandbox.mode",
            "\"enabled\" or \"disabled\"",
        ),
        (
            "[sandbox]\ndefault_seccomp = \"none\"",
            "sandbox.default_seccomp",
            "\"default\"",
        ),
        (
            "[sandbox]\ncage_user = \"root\"",
            "sandbox.cage_user",
            "useradd",
        ),
        (
            "[sandbox]\ncage_user = \"0\"",
            "sandbox.cage_user",
            "never root",
        ),
        (
            "[sandbox]\ncage_user = \"a b\"",
            "sandbox.cage_user",
            "\"nobody\"",
        ),
        (
            "[sandbox]\ncage_user = 65534",
            "sandbox.cage_user",
            "the number 65534 is not valid here",
        ),
        (
            "[logging]\noperational = \"syslog\"",
            "logging.operational",
            "file:/ABSOLUTE/PATH",
        ),
        (
            "[logging]\naudit = \"stderr\"",
            "logging.audit",
            "file:/ABSOLUTE/PATH",
        ),
        (
            "[logging]\naudit = \"file:audit.log\"",
            "logging.audit",
            "file:/ABSOLUTE/PATH",
        ),
        ("[logging]\nlevel = \"loud\"", "logging.level", "\"trace\""),
        ("[plugins]\ndir = \"plugins\"", "plugins.dir", "absolute"),
        (
            "[plugins]\nenabled = \"git\"",
            "plugins.enabled",
            "list of plugin names",
        ),
        (
            "[plugins]\nenabled = [\"a b\"]",
            "plugins.enabled",
            "letters, digits",
        ),
        (
            "[plugins]\nenabled = [1]",
            "plugins.enabled",
            "list of plugin names",
        ),
        ("[ui]\nserve = \"yes\"", "ui.serve", "true or false"),
        (
            "[daemon]\nheader_timeout = 0",
            "daemon.header_timeout",
            "0 is out of range",
        ),
        (
            "[daemon]\nidle_timeout = \"60s\"",
            "daemon.idle_timeout",
            "whole number of seconds",
        ),
        (
            "[daemon]\nmax_waiting_connections = 1.5",
            "daemon.max_waiting_connections",
            "whole number",
        ),
    ];
    for (text, key, needle) in cases {
        let e = only_error(text);
        assert_eq!(e.key, key, "{text}");
        assert!(
            matches!(e.location, Location::File { line: 2, .. }),
            "{text}: {e:?}"
        );
        let shown = e.to_string();
        assert!(shown.contains(needle), "{text}: {shown}");
        assert!(shown.contains("fix:"), "{text}: {shown}");
    }
}

#[test]
fn cage_limits_default_to_pids_and_memory_and_can_be_changed_or_turned_off() {
    let s = resolve_text("").unwrap();
    assert_eq!(
        s.cage_limits,
        CageLimits {
            pids: Some(1024),
            memory_mb: Some(4096),
            wall_time_secs: None,
        }
    );
    assert_eq!(s.sources["sandbox.pids"], Source::Default);
    let s = resolve(
        &decision(),
        &cfg(),
        Some("[sandbox]\npids = 0\nmemory_mb = 512\nwall_time_secs = 3600\n"),
        &env(&[("KAGED_SANDBOX_PIDS", "64")]),
        &FlagOverrides::default(),
    )
    .unwrap();
    assert_eq!(
        s.cage_limits,
        CageLimits {
            pids: Some(64),
            memory_mb: Some(512),
            wall_time_secs: Some(3600),
        }
    );
    let s = resolve_text("[sandbox]\npids = 0\nmemory_mb = 0\n").unwrap();
    assert_eq!((s.cage_limits.pids, s.cage_limits.memory_mb), (None, None));
    let e = only_error("[sandbox]\npids = 100001");
    assert_eq!(e.key, "sandbox.pids");
    assert!(
        matches!(e.location, Location::File { line: 2, .. }),
        "{e:?}"
    );
    assert!(e.to_string().contains("out of range"), "{e}");
    let e = only_error("[sandbox]\nmemory_mb = \"4G\"");
    assert_eq!(e.key, "sandbox.memory_mb");
    assert!(e.to_string().contains("whole number of MiB"), "{e}");
    let errs = resolve(
        &decision(),
        &cfg(),
        None,
        &env(&[("KAGED_SANDBOX_WALL_TIME_SECS", "-1")]),
        &FlagOverrides::default(),
    )
    .unwrap_err();
    assert!(
        matches!(&errs.0[0].location, Location::Env { var } if var == "KAGED_SANDBOX_WALL_TIME_SECS"),
        "{errs:?}"
    );
    let text = render_default_config(&resolve_text("").unwrap());
    assert!(
        text.contains("pids = 1024\n")
            && text.contains("memory_mb = 4096\n")
            && text.contains("wall_time_secs = 0\n")
            && text.contains("KAGED_SANDBOX_PIDS"),
        "{text}"
    );
}

#[test]
fn connection_limits_come_from_the_file_or_the_environment() {
    let s = resolve_text("").unwrap();
    assert_eq!(
        (
            s.header_timeout_secs,
            s.idle_timeout_secs,
            s.max_waiting_connections
        ),
        (10, 60, 512)
    );
    let s = resolve(
        &decision(),
        &cfg(),
        Some(
            "[daemon]\nheader_timeout = 5\nidle_timeout = 0x1e\nmax_waiting_connections = 1_000\n",
        ),
        &env(&[("KAGED_HEADER_TIMEOUT", " 2 ")]),
        &FlagOverrides::default(),
    )
    .unwrap();
    assert_eq!(
        (
            s.header_timeout_secs,
            s.idle_timeout_secs,
            s.max_waiting_connections
        ),
        (2, 30, 1000)
    );
    let errs = resolve(
        &decision(),
        &cfg(),
        None,
        &env(&[("KAGED_MAX_WAITING_CONNECTIONS", "lots")]),
        &FlagOverrides::default(),
    )
    .unwrap_err();
    assert!(
        errs.to_string().contains("KAGED_MAX_WAITING_CONNECTIONS"),
        "{errs}"
    );
}

#[test]
fn retention_limits_have_laptop_defaults_and_are_checked() {
    let s = resolve_text("").unwrap();
    assert_eq!(
        (
            s.sessions_max_total_mb,
            s.sessions_max_age_days,
            s.transcript_max_mb
        ),
        (2048, 30, 64)
    );
    let s = resolve(
        &decision(),
        &cfg(),
        Some("[sessions]\nmax_total_mb = 100\nmax_age_days = 7\ntranscript_max_mb = 8\n"),
        &env(&[("KAGED_SESSIONS_MAX_AGE_DAYS", "3")]),
        &FlagOverrides::default(),
    )
    .unwrap();
    assert_eq!(
        (
            s.sessions_max_total_mb,
            s.sessions_max_age_days,
            s.transcript_max_mb
        ),
        (100, 3, 8)
    );
    let e = only_error("[sessions]\nmax_total_mb = 0\n");
    assert_eq!(e.key, "sessions.max_total_mb");
    assert!(e.to_string().contains("out of range"), "{e}");
    assert!(e.to_string().contains(":2"), "{e}");
    let e = only_error("[sessions]\ntranscript_max_mb = \"64M\"\n");
    assert_eq!(e.key, "sessions.transcript_max_mb");
    let e = only_error("[sessions]\nmax_age_day = 3\n");
    assert!(e.to_string().contains("max_age_days"), "{e}");
}

#[test]
fn the_cage_user_defaults_to_nobody_and_is_never_root() {
    assert_eq!(resolve_text("").unwrap().cage_user, "nobody");
    let s = resolve_text("[sandbox]\ncage_user = \"kaged-cage\"").unwrap();
    assert_eq!(s.cage_user, "kaged-cage");
    assert_eq!(
        resolve_text("[sandbox]\ncage_user = \"1001\"")
            .unwrap()
            .cage_user,
        "1001"
    );
    let flags = FlagOverrides::default();
    for root in ["0", "root", "000"] {
        let errs = resolve(
            &decision(),
            &cfg(),
            None,
            &env(&[("KAGED_SANDBOX_CAGE_USER", root)]),
            &flags,
        )
        .unwrap_err()
        .0;
        assert_eq!(errs.len(), 1, "{root}: {errs:?}");
        assert!(
            matches!(&errs[0].location, Location::Env { var } if var == "KAGED_SANDBOX_CAGE_USER"),
            "{errs:?}"
        );
        assert!(errs[0].problem.contains("never run as UID 0"), "{errs:?}");
    }
}

#[test]
fn all_problems_are_reported_at_once() {
    let errs = resolve_text("[daemon]\nbind = \"x\"\nhome = \"y\"\n[ui]\nserve = 3\n").unwrap_err();
    assert_eq!(errs.0.len(), 3);
    assert!(
        errs.to_string()
            .starts_with("invalid configuration (3 problems):")
    );
}

#[test]
fn bad_environment_and_flag_values_name_their_source() {
    let e = env(&[("KAGED_UI_SERVE", "maybe"), ("KAGED_BIND", "nowhere")]);
    let flags = FlagOverrides {
        bind: Some("also-nowhere".into()),
        ..Default::default()
    };
    let errs = resolve(&decision(), &cfg(), None, &e, &flags)
        .unwrap_err()
        .0;
    assert_eq!(
        errs[0].location,
        Location::Flag {
            flag: "--bind".into()
        }
    );
    assert_eq!(
        errs[1].location,
        Location::Env {
            var: "KAGED_UI_SERVE".into()
        }
    );
    assert!(
        errs[1]
            .to_string()
            .starts_with("environment variable KAGED_UI_SERVE: ui.serve:")
    );
    // KAGED_BIND is shadowed by the flag, so it is neither used nor reported.
    assert_eq!(errs.len(), 2);
}

#[test]
fn env_lists_and_booleans_parse() {
    let e = env(&[
        ("KAGED_PLUGINS_ENABLED", "git, issues"),
        ("KAGED_UI_SERVE", "false"),
    ]);
    let s = resolve(&decision(), &cfg(), None, &e, &FlagOverrides::default()).unwrap();
    assert_eq!(s.plugins_enabled, vec!["git", "issues"]);
    assert!(!s.ui_serve);
}

#[test]
fn rendered_default_config_round_trips() {
    let s = resolve(
        &decision(),
        &cfg(),
        None,
        &BTreeMap::new(),
        &FlagOverrides::default(),
    )
    .unwrap();
    let text = render_default_config(&s);
    assert!(text.contains("bind = \"127.0.0.1:7777\""), "{text}");
    let again = resolve_text(&text).unwrap();
    assert_eq!(again.bind, s.bind);
    assert_eq!(again.storage_url, s.storage_url);
    assert_eq!(again.log_audit, s.log_audit);
    assert_eq!(again.plugins_dir, s.plugins_dir);
    // Every key is written out, except the secret token, which stays commented.
    for (key, src) in &again.sources {
        if [
            "auth.token",
            "daemon.listen",
            "auth.proxy.trusted_actor_header",
            "auth.proxy.trusted_proxy_listeners",
            "notify.webhook",
            "notify.public_url",
        ]
        .contains(&key.as_str())
        {
            assert_eq!(src, &Source::Default);
        } else {
            assert!(matches!(src, Source::File { .. }), "{key}: {src:?}");
        }
    }
}

#[test]
fn every_key_has_a_distinct_kaged_variable() {
    let mut vars: Vec<_> = KEYS.iter().map(|k| k.env).collect();
    assert!(vars.iter().all(|v| v.starts_with("KAGED_")));
    vars.sort();
    vars.dedup();
    assert_eq!(vars.len(), KEYS.len());
}

#[test]
fn every_key_has_a_default_in_its_field() {
    // Spelled out field by field, so a field that no row of KEYS fills shows up here.
    let home = PathBuf::from("/home/ann/.local/share/kaged");
    let s = resolve_text("").unwrap();
    let expected = Settings {
        mode: DeploymentMode::User,
        config_file: cfg(),
        bind: "127.0.0.1:7777".parse().unwrap(),
        listeners: vec![Listener::Tcp("127.0.0.1:7777".parse().unwrap())],
        allowed_hosts: Vec::new(),
        header_timeout_secs: 10,
        idle_timeout_secs: 60,
        max_waiting_connections: 512,
        trusted_actor_header: None,
        trusted_proxy_listeners: Vec::new(),
        auth_mode: AuthMode::Secure,
        auth: AuthMechanism::LaunchUrl,
        auth_token: None,
        trust_private_network: false,
        require_token_identity: false,
        storage_url: StorageUrl::Sqlite(home.join("kaged.db")),
        sandbox_mode: SandboxMode::Enabled,
        default_seccomp: "default".into(),
        cage_user: "nobody".into(),
        cage_limits: CageLimits {
            pids: Some(1024),
            memory_mb: Some(4096),
            wall_time_secs: None,
        },
        log_operational: OperationalSink::Stderr,
        log_audit: AuditSink::File(home.join("audit.log")),
        log_level: LogLevel::Info,
        models: ModelSettings {
            request_timeout_secs: 120,
            stall_timeout_secs: 60,
            max_attempts: 4,
        },
        plugins_dir: home.join("plugins"),
        plugins_enabled: Vec::new(),
        ui_serve: true,
        sessions_max_total_mb: 2048,
        sessions_max_age_days: 30,
        transcript_max_mb: 64,
        approval_timeout_secs: 0,
        on_daemon_stop: OnDaemonStop::Keep,
        notify: NotifySettings {
            webhook: None,
            public_url: None,
        },
        home,
        sources: KEYS.iter().map(|k| (k.path(), Source::Default)).collect(),
    };
    assert_eq!(s, expected);
}

#[test]
fn defaults_derived_from_home_come_after_it() {
    let position = |path: &str| KEYS.iter().position(|k| k.path() == path).unwrap();
    for derived in ["storage.url", "logging.audit", "plugins.dir"] {
        assert!(position("daemon.home") < position(derived), "{derived}");
    }
}

/// A value of every TOML kind but the key's own, with the start of the problem it gets.
fn wrong_kinds(spec: &KeySpec) -> Vec<(&'static str, &'static str)> {
    let kind = spec.value.kind();
    let mut out = vec![
        ("1.5", "a float is not valid here"),
        ("1979-05-27", "a datetime is not valid here"),
        ("{ a = 1 }", "a table is not valid here"),
        ("[1, 2]", "array of non-strings is not valid here"),
    ];
    if kind != field::Kind::Text {
        out.push(("\"abc\"", "\"abc\" is not valid here"));
    }
    if kind != field::Kind::Number {
        out.push(("3", "the number 3 is not valid here"));
    }
    if kind != field::Kind::Bool {
        out.push(("true", "the boolean true is not valid here"));
    }
    if kind != field::Kind::List {
        out.push(("[\"x\"]", "an array is not valid here"));
    }
    out
}

#[test]
fn a_value_of_the_wrong_kind_is_an_error_naming_file_key_and_line_never_the_default() {
    for spec in KEYS {
        for (value, problem) in wrong_kinds(spec) {
            // A comment line first, so the key sits on line 3.
            let text = format!("# kaged\n[{}]\n{} = {value}\n", spec.section, spec.key);
            let e = only_error(&text);
            assert_eq!(e.key, spec.path(), "{text}");
            assert_eq!(
                e.location,
                Location::File {
                    path: cfg(),
                    line: 3,
                    column: 1
                },
                "{text}"
            );
            let shown = e.to_string();
            let head = format!("{}:3:1: {}: ", cfg().display(), spec.path());
            assert!(
                shown.starts_with(&head) && e.problem.ends_with(problem),
                "{text}: {shown}"
            );
            assert!(
                shown.contains(&format!("fix: use {}", spec.expected)),
                "{text}: {shown}"
            );
        }
    }
}

#[test]
fn wrong_kinds_named_in_the_issue_are_errors() {
    for (text, key, problem) in [
        (
            "[daemon]\nheader_timeout = \"abc\"\n",
            "daemon.header_timeout",
            "\"abc\" is not valid here",
        ),
        (
            "[plugins]\nenabled = 3\n",
            "plugins.enabled",
            "the number 3 is not valid here",
        ),
        (
            "[ui]\nserve = \"no\"\n",
            "ui.serve",
            "\"no\" is not valid here",
        ),
        (
            "[auth]\ntrust_private_network = 1\n",
            "auth.trust_private_network",
            "the number 1 is not valid here",
        ),
        (
            "[sandbox]\npids = true\n",
            "sandbox.pids",
            "the boolean true is not valid here",
        ),
    ] {
        let e = only_error(text);
        assert_eq!(
            (e.key.as_str(), e.problem.as_str()),
            (key, problem),
            "{text}"
        );
        assert!(e.to_string().contains("config.toml:2:1:"), "{e}");
    }
}

#[test]
fn a_variable_of_the_wrong_kind_is_an_error_naming_it() {
    for (var, value) in [
        ("KAGED_UI_SERVE", "3"),
        ("KAGED_HEADER_TIMEOUT", "abc"),
        ("KAGED_SANDBOX_PIDS", "1.5"),
        ("KAGED_TRUST_PRIVATE_NETWORK", "maybe"),
    ] {
        let errs = resolve(
            &decision(),
            &cfg(),
            None,
            &env(&[(var, value)]),
            &FlagOverrides::default(),
        )
        .unwrap_err()
        .0;
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert_eq!(errs[0].location, Location::Env { var: var.into() });
        assert_eq!(
            errs[0].problem,
            format!("{value:?} is not valid here"),
            "{var}"
        );
    }
}

#[test]
fn a_shadowed_file_value_is_still_checked() {
    // The variable wins, but the file's bad value is reported all the same.
    let errs = resolve(
        &decision(),
        &cfg(),
        Some("[ui]\nserve = 3\n"),
        &env(&[("KAGED_UI_SERVE", "false")]),
        &FlagOverrides::default(),
    )
    .unwrap_err()
    .0;
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert_eq!(errs[0].key, "ui.serve");
}

#[test]
fn approval_timeout_defaults_to_never_and_is_bounded() {
    assert_eq!(resolve_text("").unwrap().approval_timeout_secs, 0);
    let s = resolve_text("[sessions]\napproval_timeout_secs = 600\n").unwrap();
    assert_eq!(s.approval_timeout_secs, 600);
    assert_eq!(
        s.sources["sessions.approval_timeout_secs"],
        Source::File { line: 2 }
    );
    let s = resolve(
        &decision(),
        &cfg(),
        None,
        &env(&[("KAGED_SESSIONS_APPROVAL_TIMEOUT_SECS", "30")]),
        &FlagOverrides::default(),
    )
    .unwrap();
    assert_eq!(s.approval_timeout_secs, 30);
    for bad in ["604801", "-1"] {
        let e = only_error(&format!("[sessions]\napproval_timeout_secs = {bad}\n"));
        assert_eq!(e.key, "sessions.approval_timeout_secs");
        assert!(e.to_string().contains("out of range"), "{e}");
        assert!(e.to_string().contains("from 0 to 604800"), "{e}");
    }
    assert_eq!(
        resolve_text("[sessions]\napproval_timeout_secs = 604800\n")
            .unwrap()
            .approval_timeout_secs,
        604_800
    );
}

#[test]
fn webhooks_are_https_or_plain_http_to_this_host_or_a_private_ip() {
    for ok in [
        "https://ntfy.sh/kaged-ann",
        "https://ntfy.example/topic?auth=SECRET",
        "https://ann:SECRET@ntfy.example:8443/topic",
        "http://127.0.0.1:8080/topic",
        "http://localhost/topic",
        "http://LOCALHOST:9/t",
        "http://[::1]:80/t",
        "http://10.1.2.3/t",
        "http://172.16.0.9/t",
        "http://192.168.1.10/t",
        "http://100.64.0.2:2586/t",
        "http://[fd00::1]/t",
    ] {
        let s = resolve_text(&format!("[notify]\nwebhook = \"{ok}\"\n")).unwrap();
        assert_eq!(s.notify.webhook.as_deref(), Some(ok), "{ok}");
    }
    for (bad, needle) in [
        (
            "http://example.com/x",
            "plain http to the host name \"example.com\"",
        ),
        (
            "http://ntfy.example/t?auth=SECRET",
            "plain http to the host name",
        ),
        ("http://8.8.8.8/t", "plain http to a public address"),
        ("http://0.0.0.0/t", "plain http to a public address"),
        ("http://172.32.0.1/t", "plain http to a public address"),
        // The host is evil.example, whatever stands before the @.
        (
            "http://127.0.0.1@evil.example/t",
            "host name \"evil.example\"",
        ),
        (
            "http://evil.example\\\\@127.0.0.1/t",
            "host name \"evil.example\"",
        ),
        ("http://localhost.evil.example/t", "host name"),
        ("ftp://127.0.0.1/t", "scheme \"ftp\""),
        ("ntfy.sh/topic", "not an absolute URL"),
        ("https://", "not an absolute URL"),
    ] {
        let e = only_error(&format!("# notify\n[notify]\nwebhook = \"{bad}\"\n"));
        assert_eq!(e.key, "notify.webhook", "{bad}");
        assert!(
            matches!(e.location, Location::File { line: 3, .. }),
            "{bad}: {e:?}"
        );
        let shown = e.to_string();
        assert!(shown.contains(needle), "{bad}: {shown}");
        assert!(shown.contains("fix: use"), "{bad}: {shown}");
        // The value may be a secret: errors show scheme and host at most.
        assert!(
            !shown.contains("SECRET") && !shown.contains("/t\""),
            "{bad}: {shown}"
        );
    }
    let errs = resolve(
        &decision(),
        &cfg(),
        None,
        &env(&[("KAGED_NOTIFY_WEBHOOK", "http://example.com/SECRET")]),
        &FlagOverrides::default(),
    )
    .unwrap_err()
    .0;
    assert_eq!(
        errs[0].location,
        Location::Env {
            var: "KAGED_NOTIFY_WEBHOOK".into()
        }
    );
    assert!(!errs[0].to_string().contains("SECRET"), "{}", errs[0]);
}

#[test]
fn the_public_url_is_an_origin_without_a_trailing_slash() {
    for (given, stored) in [
        ("https://kaged.example.com/", "https://kaged.example.com"),
        ("https://kaged.example.com", "https://kaged.example.com"),
        ("http://100.64.0.2:7777", "http://100.64.0.2:7777"),
        (
            "HTTPS://Kaged.Example.com:443/",
            "https://kaged.example.com",
        ),
        ("http://[::1]:7777/", "http://[::1]:7777"),
    ] {
        let s = resolve_text(&format!("[notify]\npublic_url = \"{given}\"\n")).unwrap();
        assert_eq!(s.notify.public_url.as_deref(), Some(stored), "{given}");
    }
    let s = resolve(
        &decision(),
        &cfg(),
        None,
        &env(&[("KAGED_NOTIFY_PUBLIC_URL", "https://k.example/")]),
        &FlagOverrides::default(),
    )
    .unwrap();
    assert_eq!(s.notify.public_url.as_deref(), Some("https://k.example"));
    for (bad, needle) in [
        (
            "https://kaged.example.com/console",
            "path, query or fragment",
        ),
        ("https://kaged.example.com/?a=1", "path, query or fragment"),
        ("https://kaged.example.com/#/x", "path, query or fragment"),
        ("ftp://kaged.example.com", "not https or http"),
        ("kaged.example.com", "not an absolute URL"),
        ("https://ann:SECRET@kaged.example.com", "user or password"),
    ] {
        let e = only_error(&format!("[notify]\npublic_url = \"{bad}\"\n"));
        assert_eq!(e.key, "notify.public_url", "{bad}");
        let shown = e.to_string();
        assert!(shown.contains(needle), "{bad}: {shown}");
        assert!(
            shown.contains("fix: use an http(s) address"),
            "{bad}: {shown}"
        );
        assert!(!shown.contains("SECRET"), "{bad}: {shown}");
    }
}

#[test]
fn settings_never_show_the_webhook_whole() {
    let s = resolve_text(
        "[notify]\nwebhook = \"https://ann:PW-s3cr3t@ntfy.example/topic?auth=tk-s3cr3t\"\npublic_url = \"https://k.example\"\n",
    )
    .unwrap();
    let rendered = render_default_config(&s);
    for shown in [
        format!("{s:?}"),
        serde_json::to_string(&s).unwrap(),
        rendered.clone(),
    ] {
        assert!(!shown.contains("s3cr3t"), "{shown}");
        assert!(!shown.contains("/topic"), "{shown}");
    }
    assert!(
        rendered.contains("# webhook = \"https://ntfy.sh/YOUR-TOPIC\""),
        "{rendered}"
    );
    assert!(
        rendered.contains("public_url = \"https://k.example\""),
        "{rendered}"
    );
    // The default file has the section commented out, with the variables named.
    let defaults = render_default_config(&resolve_text("").unwrap());
    assert!(defaults.contains("\n# [notify]\n"), "{defaults}");
    assert!(
        defaults.contains("(env KAGED_NOTIFY_WEBHOOK)"),
        "{defaults}"
    );
    assert!(
        defaults
            .contains("(env KAGED_SESSIONS_APPROVAL_TIMEOUT_SECS)\napproval_timeout_secs = 0\n"),
        "{defaults}"
    );
}

#[test]
fn on_daemon_stop_is_keep_or_kill() {
    assert_eq!(resolve_text("").unwrap().on_daemon_stop, OnDaemonStop::Keep);
    let s = resolve_text("[sessions]\non_daemon_stop = \"kill\"\n").unwrap();
    assert_eq!(s.on_daemon_stop, OnDaemonStop::Kill);
    let e = only_error("[sessions]\non_daemon_stop = \"pause\"\n");
    assert_eq!(e.key, "sessions.on_daemon_stop");
    assert!(e.to_string().contains("\"keep\", \"kill\""), "{e}");
}

#[test]
fn a_postgres_url_is_read_and_the_password_from_the_environment_wins() {
    let text = "[storage]\nurl = \"postgres://kaged:from-file@/kaged?host=/run/postgresql\"\n";
    let s = resolve_text(text).unwrap();
    let StorageUrl::Postgres(url) = &s.storage_url else {
        panic!("{:?}", s.storage_url)
    };
    assert_eq!(url.password.as_ref().map(|p| p.expose()), Some("from-file"));
    assert_eq!(url.host, PostgresHost::Socket("/run/postgresql".into()));
    let e = env(&[
        (
            "KAGED_STORAGE_URL",
            "postgresql://kaged@127.0.0.1:5433/team",
        ),
        ("KAGED_STORAGE_PASSWORD", "from-env"),
    ]);
    let s = resolve(
        &decision(),
        &cfg(),
        Some(text),
        &e,
        &FlagOverrides::default(),
    )
    .unwrap();
    let StorageUrl::Postgres(url) = &s.storage_url else {
        panic!("{:?}", s.storage_url)
    };
    assert_eq!(url.password.as_ref().map(|p| p.expose()), Some("from-env"));
    assert_eq!((url.port, url.database.as_str()), (5433, "team"));
    // Never shown: not by Display (kaged status, logs), Debug, or the serialized settings.
    let shown = format!(
        "{} {:?} {}",
        s.storage_url,
        s,
        serde_json::to_string(&s).unwrap()
    );
    assert!(!shown.contains("from-env"), "{shown}");
    assert_eq!(
        s.storage_url.to_string(),
        "postgres://kaged@127.0.0.1:5433/team"
    );
    // The password alone, with a SQLite URL, changes nothing.
    let e = env(&[("KAGED_STORAGE_PASSWORD", "x")]);
    let s = resolve(&decision(), &cfg(), None, &e, &FlagOverrides::default()).unwrap();
    assert!(matches!(s.storage_url, StorageUrl::Sqlite(_)));
}

#[test]
fn a_postgres_url_that_could_fall_back_to_plain_text_is_refused_at_its_line_with_the_fix() {
    let err = only_error("[storage]\nurl = \"postgres://k@db.example/k?sslmode=prefer\"\n");
    assert_eq!(err.key, "storage.url");
    assert!(
        matches!(err.location, Location::File { line: 2, .. }),
        "{err:?}"
    );
    assert!(
        err.problem
            .contains("fall back to an unencrypted connection"),
        "{err:?}"
    );
    assert!(err.hint.contains("sslmode=verify-full"), "{err:?}");
}
