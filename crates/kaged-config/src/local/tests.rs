//! `local.toml` on data: every section parsed, every problem with its line, secrets never shown.

use super::*;

fn parse(text: &str) -> Result<LocalConfig, ConfigErrors> {
    parse_local(Path::new("/home/ann/.config/kaged/local.toml"), text)
}

#[test]
fn a_full_local_config_parses_and_never_shows_inline_keys() {
    let c = parse(
        "operator_name = \"ann\"\n\
         [aliases]\nsonnet = \"claude:sonnet-4\"\n\
         [providers.claude]\napi_key_env = \"ANTHROPIC_API_KEY\"\n\
         [providers.local]\napi_key = \"sk-inline-secret-0123\"\nbase_url = \"http://127.0.0.1:11434\"\n\
         [projects.demo]\npath = \"/home/ann/src/demo\"\nenv = [\"GITHUB_TOKEN\"]\n\
         paths = [{ host = \"/srv/data\", at = \"project:/data\", mode = \"ro\" }]\n",
    )
    .unwrap();
    assert_eq!(c.aliases["sonnet"][0].to_string(), "claude:sonnet-4");
    assert_eq!(
        c.providers["claude"].api_key_env.as_deref(),
        Some("ANTHROPIC_API_KEY")
    );
    assert!(c.providers["local"].has_inline_key);
    assert_eq!(c.warnings.len(), 1);
    assert_eq!(c.projects["demo"].paths[0].host, PathBuf::from("/srv/data"));
    let shown = format!("{c:?} {}", serde_json::to_string(&c).unwrap());
    assert!(!shown.contains("sk-inline-secret"), "{shown}");
}

#[test]
fn plugin_settings_are_kept_for_the_plugin_and_shown_only_by_their_keys() {
    let c = parse(
        "[plugins.notes]\ntoken = \"s3cret-token\"\nport = 8080\nwhen = 2026-12-01T10:00:00Z\n\n[plugins.\"issue-bot\"]\nrepos = [\"a\", \"b\"]\nlimits = { per_hour = 5 }\n",
    )
    .unwrap();
    let notes = &c.plugins["notes"];
    assert_eq!(notes.line, 1);
    assert_eq!(
        notes.values,
        serde_json::json!({"token": "s3cret-token", "port": 8080, "when": "2026-12-01T10:00:00Z"})
    );
    assert_eq!(
        c.plugins["issue-bot"].values,
        serde_json::json!({"repos": ["a", "b"], "limits": {"per_hour": 5}})
    );
    assert_eq!(c.plugins["issue-bot"].line, 6);
    let shown = serde_json::to_string(&c).unwrap() + &format!("{c:?}");
    assert!(!shown.contains("s3cret"), "{shown}");
    assert!(shown.contains("\"token\""), "{shown}");
}

#[test]
fn plugin_settings_must_be_tables_under_a_plugin_name() {
    let e = parse("[plugins]\nnotes = \"x\"\n\n[plugins.\"Bad Name\"]\na = 1\n")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("local.toml:2:9: plugins.notes: expected a table"),
        "{e}"
    );
    assert!(
        e.contains("local.toml:4:10: plugins.Bad Name: \"Bad Name\" is not a plugin name"),
        "{e}"
    );
}

#[test]
fn every_problem_is_reported_with_its_line() {
    let errs = parse(
        "operator = \"ann\"\n\
         [aliases]\nsonnet = \"sonnet-4\"\nhaiku = \"nobody:haiku\"\n\
         [providers.claude]\napi_key_env = \"lower\"\nkey = \"x\"\n\
         [projects.demo]\npath = \"src/demo\"\nenv = [\"bad name\"]\n\
         paths = [{ host = \"data\", at = \"abs\" }, { host = \"/h/.cargo\", at = \"/elsewhere\" },\n\
         { host = \"/h/.cargo\", at = \"home:/.cargo\", mode = \"rw\" }, { host = \"/proc/1\" }, { host = \"/usr/bin\" }]\n",
    )
    .unwrap_err()
    .0;
    let shown: Vec<String> = errs.iter().map(ToString::to_string).collect();
    for needle in [
        "local.toml:1:1: operator: unknown key `operator`",
        "local.toml:3:10: aliases.sonnet: \"sonnet-4\" is not provider:model",
        "aliases.haiku: the provider `nobody` is not configured",
        "local.toml:6:15: providers.claude.api_key_env:",
        "providers.claude.key: unknown key `key`",
        "local.toml:9:8: projects.demo.path:",
        "local.toml:10:8: projects.demo.env[0]:",
        "projects.demo.paths.host:",
        "projects.demo.paths.at: \"abs\" is not a project:/ or home:/ path",
        "projects.demo.paths.at: \"/elsewhere\" is not the host path",
        "projects.demo.paths.at: \"home:/.cargo\" is outside the project, and host directories are granted read-only",
        "projects.demo.paths.at: \"/proc/1\" is inside /proc",
        "projects.demo.paths.at: \"/usr/bin\" is inside /usr, which every cage already sees",
    ] {
        assert!(
            shown.iter().any(|s| s.contains(needle)),
            "missing {needle} in {shown:#?}"
        );
    }
}

#[test]
fn host_directories_appear_at_their_own_path_or_below_the_cage_home() {
    let c = parse(
        "[projects.demo]\n\
         paths = [{ host = \"/home/ann/.cargo/bin\", on_path = true },\n\
         { host = \"/home/ann/.rustup\", at = \"home:/.rustup\" },\n\
         { host = \"/home/ann/.nvm\", at = \"/home/ann/.nvm/\" }]\n",
    )
    .unwrap();
    let paths = &c.projects["demo"].paths;
    assert_eq!(paths[0].at, "/home/ann/.cargo/bin");
    assert!(paths[0].on_path);
    assert_eq!(paths[0].mode, "ro");
    assert_eq!(paths[1].at, "home:/.rustup");
    assert!(!paths[1].on_path);
    assert_eq!(paths[2].at, "/home/ann/.nvm/");
    for bad in [
        "{ at = \"home:/x\" }",
        "{ host = \"/h\", at = \"home:/\" }",
        "{ host = \"/h\", at = \"home:/../etc\" }",
        "{ host = \"/h\", on_path = \"yes\" }",
        "{ host = \"/workspace/x\" }",
        "{ host = \"/home/kaged/x\" }",
        "{ host = \"/\" }",
    ] {
        let text = format!("[projects.demo]\npaths = [{bad}]\n");
        assert!(parse(&text).is_err(), "{bad} was accepted");
    }
}

#[test]
fn the_file_lives_in_kaged_config_dir_or_next_to_config_toml() {
    let cfg = Path::new("/home/ann/.config/kaged/config.toml");
    let env: BTreeMap<String, String> =
        [("KAGED_CONFIG_DIR".to_string(), "/etc/kaged-ops".to_string())].into();
    assert_eq!(
        local_config_path(&env, cfg),
        PathBuf::from("/etc/kaged-ops/local.toml")
    );
    assert_eq!(
        local_config_path(&BTreeMap::new(), cfg),
        PathBuf::from("/home/ann/.config/kaged/local.toml")
    );
}
