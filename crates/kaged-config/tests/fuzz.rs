//! Fuzz targets for `config.toml` ([`resolve`]) and `local.toml` ([`parse_local`]). Each starts
//! from the seed corpus in `fuzz/corpus/<target>/` and mutates it (see `kaged-fuzz`); proptest
//! builds structured local configs. Bounded by default; see ARCHITECTURE.md (Testing) for
//! longer runs.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use kaged_config::{
    ConfigErrors, Facts, FlagOverrides, LocalConfig, Location, ModeDecision, PathGrant,
    ProjectGrants, Provider, Settings, decide_mode, parse_local, render_default_config, resolve,
};
use kaged_fuzz::{Target, fuzz, prop, try_fuzz};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;

const CONFIG: &str = "/home/ann/.config/kaged/config.toml";
const LOCAL: &str = "/home/ann/.config/kaged/local.toml";

fn corpus(name: &str) -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/fuzz/corpus")).join(name)
}

const TOML_TOKENS: &[&str] = &[
    "[",
    "]",
    "[[",
    "]]",
    "=",
    "\"",
    "'",
    "\"\"\"",
    "'''",
    "\n",
    "\r\n",
    "#",
    ",",
    ".",
    "{",
    "}",
    "true",
    "false",
    "1979-05-27T07:32:00Z",
    "inf",
    "nan",
    "0x1F",
    "1e3",
    "\\u00e9",
    "\\U0001F600",
    "\\",
    "[daemon]",
    "[auth]",
    "[auth.proxy]",
    "[storage]",
    "[sandbox]",
    "[logging]",
    "[plugins]",
    "[ui]",
    "bind",
    "listen",
    "home",
    "allowed_hosts",
    "mode",
    "token",
    "url",
    "level",
    "enabled",
    "serve",
    "unix://",
    "sqlite:///",
    "file:/",
    "127.0.0.1:7777",
    "[::1]:1",
    "/",
    "operator_name",
    "[aliases]",
    "[providers.x]",
    "[projects.x]",
    "api_key_env",
    "api_key",
    "base_url",
    "path",
    "env",
    "paths",
    "host",
    "at",
    "project:/",
    "ro",
    "rw",
    "é",
    "\u{0}",
];

fn decision() -> ModeDecision {
    let facts = Facts {
        uid: 1000,
        user_name: Some("ann".into()),
        env: [("HOME".to_string(), "/home/ann".to_string())].into(),
        existing_dirs: Default::default(),
    };
    decide_mode(&facts, None).unwrap()
}

fn resolve_text(decision: &ModeDecision, text: &str) -> Result<Settings, ConfigErrors> {
    resolve(
        decision,
        Path::new(CONFIG),
        Some(text),
        &BTreeMap::new(),
        &FlagOverrides::default(),
    )
}

/// A 1-based line and column that point into `text` (or just past its end).
fn within(text: &str, line: usize, column: usize) -> Result<(), String> {
    let lines: Vec<&str> = text.split('\n').collect();
    let Some(at) = line.checked_sub(1).and_then(|i| lines.get(i)) else {
        return Err(format!("line {line} of a {}-line text", lines.len()));
    };
    let width = at.chars().count();
    if column == 0 || column > width + 1 {
        return Err(format!(
            "column {column} of line {line} ({width} characters)"
        ));
    }
    Ok(())
}

/// Every file location is inside the text, and the report prints.
fn check_errors(text: &str, errors: &ConfigErrors) -> Result<String, String> {
    if errors.0.is_empty() {
        return Err("refused without a problem".into());
    }
    let _ = errors.to_string();
    let mut label = String::new();
    for error in &errors.0 {
        if let Location::File { line, column, .. } = error.location {
            within(text, line, column).map_err(|e| format!("{error}: {e}"))?;
        }
        if label.is_empty() {
            // The kind of the first problem: its leading words, without quoted input.
            label = error
                .problem
                .split_whitespace()
                .take_while(|w| w.chars().all(|c| c.is_ascii_alphabetic()))
                .take(4)
                .collect::<Vec<_>>()
                .join(" ");
        }
    }
    Ok(format!("err {} {label}", errors.0.len().min(3)))
}

/// The fields `render_default_config` writes out.
fn rendered_fields(s: &Settings) -> String {
    format!(
        "{:?}",
        (
            s.bind,
            &s.home,
            &s.storage_url,
            s.sandbox_mode,
            &s.default_seccomp,
            &s.cage_user,
            &s.log_operational,
            &s.log_audit,
            s.log_level,
            &s.plugins_dir,
            &s.plugins_enabled,
            s.ui_serve,
        )
    )
}

fn check_config(decision: &ModeDecision, input: &[u8]) -> Result<String, String> {
    let text = String::from_utf8_lossy(input);
    match resolve_text(decision, &text) {
        Ok(settings) => {
            for (key, source) in &settings.sources {
                if let kaged_config::Source::File { line } = source {
                    within(&text, *line, 1).map_err(|e| format!("{key}: {e}"))?;
                }
            }
            // What the daemon would write back as config.toml reads back the same.
            let rendered = render_default_config(&settings);
            match resolve_text(decision, &rendered) {
                Ok(again) if rendered_fields(&again) == rendered_fields(&settings) => {}
                Ok(again) => {
                    return Err(format!(
                        "rendered {rendered:?} reads back as {} instead of {}",
                        rendered_fields(&again),
                        rendered_fields(&settings)
                    ));
                }
                Err(e) => return Err(format!("rendered {rendered:?} is refused: {e}")),
            }
            let set = settings
                .sources
                .values()
                .filter(|s| **s != kaged_config::Source::Default)
                .count();
            Ok(format!("ok {}", set.min(8)))
        }
        Err(errors) => check_errors(&text, &errors),
    }
}

/// `local.toml` text for `config`, written independently of the parser.
fn render_local(config: &LocalConfig) -> String {
    use toml::{Table, Value};
    let strings =
        |items: &[String]| Value::Array(items.iter().cloned().map(Value::String).collect());
    let mut root = Table::new();
    if let Some(name) = &config.operator_name {
        root.insert("operator_name".into(), Value::String(name.clone()));
    }
    let aliases: Table = config
        .aliases
        .iter()
        .map(|(k, targets)| {
            let value = match targets.as_slice() {
                [one] => Value::String(one.to_string()),
                many => Value::Array(many.iter().map(|t| Value::String(t.to_string())).collect()),
            };
            (k.clone(), value)
        })
        .collect();
    root.insert("aliases".into(), Value::Table(aliases));
    let mut providers = Table::new();
    for (name, p) in &config.providers {
        let mut t = Table::new();
        if let Some(env) = &p.api_key_env {
            t.insert("api_key_env".into(), Value::String(env.clone()));
        }
        if let Some(key) = &p.api_key {
            t.insert("api_key".into(), Value::String(key.expose().to_owned()));
        }
        if let Some(url) = &p.base_url {
            t.insert("base_url".into(), Value::String(url.clone()));
        }
        if let Some(driver) = p.driver {
            t.insert("driver".into(), Value::String(driver.to_string()));
        }
        if let Some(prices) = p.prices {
            t.insert(
                "price_input_per_mtok".into(),
                Value::Float(prices.input_per_mtok),
            );
            t.insert(
                "price_output_per_mtok".into(),
                Value::Float(prices.output_per_mtok),
            );
            t.insert(
                "price_cached_per_mtok".into(),
                Value::Float(prices.cached_per_mtok),
            );
        }
        providers.insert(name.clone(), Value::Table(t));
    }
    root.insert("providers".into(), Value::Table(providers));
    let mut projects = Table::new();
    for (slug, g) in &config.projects {
        let mut t = Table::new();
        if let Some(path) = &g.path {
            t.insert("path".into(), Value::String(path.display().to_string()));
        }
        t.insert("env".into(), strings(&g.env));
        let paths = g
            .paths
            .iter()
            .map(|p| {
                let mut grant = Table::new();
                grant.insert("host".into(), Value::String(p.host.display().to_string()));
                grant.insert("at".into(), Value::String(p.at.clone()));
                grant.insert("mode".into(), Value::String(p.mode.clone()));
                grant.insert("on_path".into(), Value::Boolean(p.on_path));
                Value::Table(grant)
            })
            .collect();
        t.insert("paths".into(), Value::Array(paths));
        projects.insert(slug.clone(), Value::Table(t));
    }
    root.insert("projects".into(), Value::Table(projects));
    toml::to_string(&root).unwrap()
}

fn without_warnings(mut config: LocalConfig) -> (LocalConfig, Vec<String>) {
    let mut warnings = std::mem::take(&mut config.warnings);
    warnings.sort();
    (config, warnings)
}

/// A valid local config renders to text that parses back to the same config.
fn local_round_trips(config: &LocalConfig) -> Result<(), String> {
    let text = render_local(config);
    match parse_local(Path::new(LOCAL), &text) {
        Ok(back) if without_warnings(back.clone()) == without_warnings(config.clone()) => Ok(()),
        Ok(back) => Err(format!(
            "{config:?} renders as {text:?}, which reads as {back:?}"
        )),
        Err(e) => Err(format!(
            "{config:?} renders as {text:?}, which is refused: {e}"
        )),
    }
}

fn check_local(input: &[u8]) -> Result<String, String> {
    let text = String::from_utf8_lossy(input);
    match parse_local(Path::new(LOCAL), &text) {
        Ok(config) => {
            local_round_trips(&config)?;
            let shown = format!("{config:?} {}", serde_json::to_string(&config).unwrap());
            for provider in config.providers.values() {
                if let Some(key) = &provider.api_key
                    && key.expose().len() >= 8
                    && shown.contains(key.expose())
                {
                    return Err(format!("an inline key shows in {shown}"));
                }
            }
            Ok(format!(
                "ok {} {} {}",
                config.aliases.len().min(2),
                config.providers.len().min(2),
                config.projects.len().min(2)
            ))
        }
        Err(errors) => check_errors(&text, &errors),
    }
}

#[test]
fn fuzz_config_toml() {
    let decision = decision();
    let report = fuzz(
        &Target {
            name: "config_toml",
            corpus: corpus("config_toml"),
            dictionary: TOML_TOKENS,
            iterations: 15_000,
            max_len: 4096,
        },
        |input| check_config(&decision, input),
    );
    assert!(report.behaviours >= 10, "{report:?}");
}

#[test]
fn fuzz_local_toml() {
    let report = fuzz(
        &Target {
            name: "local_toml",
            corpus: corpus("local_toml"),
            dictionary: TOML_TOKENS,
            iterations: 20_000,
            max_len: 4096,
        },
        check_local,
    );
    assert!(report.behaviours >= 10, "{report:?}");
}

/// The checks can fail: out-of-range positions and lossy round trips are caught.
#[test]
fn the_fuzz_checks_catch_broken_properties() {
    assert!(within("a\nbc", 2, 3).is_ok());
    assert!(within("a\nbc", 2, 4).is_err());
    assert!(within("a\nbc", 3, 1).is_err());
    assert!(within("a\nbc", 0, 1).is_err());
    // A config whose inline key is lost on the way back is not a round trip.
    let mut config = parse_local(
        Path::new(LOCAL),
        "[providers.x]\napi_key = \"sk-0123456789\"\n",
    )
    .unwrap();
    assert!(local_round_trips(&config).is_ok());
    config.providers.get_mut("x").unwrap().has_inline_key = false;
    assert!(local_round_trips(&config).is_err());
    // The harness finds a planted position bug from these seeds.
    let target = Target {
        name: "config_toml",
        corpus: corpus("config_toml"),
        dictionary: TOML_TOKENS,
        iterations: 6_000,
        max_len: 4096,
    };
    let decision = decision();
    let off_by_one = try_fuzz(&target, |input| {
        let text = String::from_utf8_lossy(input);
        match resolve_text(&decision, &text) {
            Err(mut errors) => {
                for e in &mut errors.0 {
                    if let Location::File { column, .. } = &mut e.location {
                        *column += 1;
                    }
                }
                check_errors(&text, &errors)
            }
            Ok(_) => Ok("ok".into()),
        }
    });
    assert!(off_by_one.is_err(), "an off-by-one column went unnoticed");
}

fn name() -> impl Strategy<Value = String> {
    "[a-z0-9][a-z0-9._-]{0,12}"
}

fn env_name() -> impl Strategy<Value = String> {
    "[A-Z_][A-Z0-9_]{0,12}"
}

fn provider() -> impl Strategy<Value = Provider> {
    (
        proptest::option::of(env_name()),
        proptest::option::of("[ -~]{8,30}"),
        proptest::option::of(prop_oneof![
            "https://[a-z.]{1,12}(/[a-z0-9]{0,6})?",
            "http://(127\\.0\\.0\\.1|localhost|10\\.[1-9][0-9]?\\.0\\.1)(:[0-9]{1,5})?",
        ]),
        proptest::option::of(0usize..3),
        proptest::option::of((0u32..100_000, 0u32..100_000, 0u32..100_000)),
    )
        .prop_map(|(api_key_env, key, base_url, driver, prices)| Provider {
            api_key_env,
            has_inline_key: key.is_some(),
            api_key: key.map(kaged_config::ConfigSecret::new),
            base_url,
            driver: driver.map(|i| kaged_config::Driver::ALL[i]),
            prices: prices.map(|(i, o, c)| kaged_config::Prices {
                input_per_mtok: f64::from(i) / 100.0,
                output_per_mtok: f64::from(o) / 100.0,
                cached_per_mtok: f64::from(c) / 100.0,
            }),
        })
}

fn grants() -> impl Strategy<Value = ProjectGrants> {
    (
        proptest::option::of("(/[a-zA-Z0-9 ._-]{1,8}){1,3}"),
        prop::collection::vec(env_name(), 0..3),
        prop::collection::vec(
            (
                "(/[a-zA-Z0-9 ._é-]{1,8}){1,3}",
                "project:/([a-z0-9_-]{1,8}(/[a-z0-9_-]{1,8}){0,2})?",
                prop_oneof![Just("ro"), Just("rw")],
                any::<bool>(),
            ),
            0..3,
        ),
    )
        .prop_map(|(path, env, paths)| ProjectGrants {
            path: path.map(PathBuf::from),
            env,
            paths: paths
                .into_iter()
                .map(|(host, at, mode, on_path)| PathGrant {
                    host: PathBuf::from(host),
                    at,
                    mode: mode.to_owned(),
                    on_path,
                })
                .collect(),
        })
}

fn local_config() -> impl Strategy<Value = LocalConfig> {
    (
        proptest::option::of(any::<String>()),
        prop::collection::btree_map(name(), provider(), 0..3),
        prop::collection::btree_map(
            any::<String>(),
            prop::collection::vec((0usize..3, "[!-~][ -~]{0,11}"), 1..3),
            0..3,
        ),
        prop::collection::btree_map(any::<String>(), grants(), 0..3),
    )
        .prop_map(|(operator_name, providers, aliases, projects)| {
            let names: Vec<&String> = providers.keys().collect();
            // Aliases point at configured providers, as the parser demands.
            let aliases = if names.is_empty() {
                BTreeMap::new()
            } else {
                aliases
                    .into_iter()
                    .map(|(alias, targets)| {
                        let targets = targets
                            .into_iter()
                            .map(|(i, model)| kaged_config::AliasTarget {
                                provider: names[i % names.len()].clone(),
                                model,
                            })
                            .collect();
                        (alias, targets)
                    })
                    .collect()
            };
            let warnings = providers
                .iter()
                .filter(|(_, p)| p.has_inline_key)
                .map(|(name, _)| {
                    format!(
                        "providers.{name}.api_key: an inline key in {LOCAL}; prefer api_key_env"
                    )
                })
                .collect();
            LocalConfig {
                operator_name,
                aliases,
                providers,
                projects,
                // Plugin settings are free-form: their parsing has its own tests.
                plugins: Default::default(),
                warnings,
            }
        })
}

#[test]
fn proptest_local_configs_round_trip() {
    prop("local_toml_structured", 256, &local_config(), |config| {
        let text = render_local(&config);
        let parsed = parse_local(Path::new(LOCAL), &text)
            .map_err(|e| TestCaseError::fail(format!("{text}\n{e}")))?;
        prop_assert_eq!(without_warnings(parsed), without_warnings(config.clone()));
        check_local(text.as_bytes()).map_err(TestCaseError::fail)?;
        Ok(())
    });
}

#[test]
fn proptest_config_values_round_trip_through_the_rendered_file() {
    let decision = decision();
    let path = "(/[^/\\x00]{1,10}){1,3}";
    let strategy = (
        proptest::option::of(path),
        proptest::option::of(path),
        proptest::option::of(path),
        proptest::option::of(prop::collection::vec("[A-Za-z0-9_-]{1,10}", 0..3)),
        proptest::option::of(prop_oneof![Just("error"), Just("warn"), Just("debug")]),
        proptest::option::of(any::<bool>()),
    );
    prop(
        "config_toml_structured",
        256,
        &strategy,
        |(home, plugins, audit, enabled, level, serve)| {
            use toml::{Table, Value};
            let mut sections: BTreeMap<&str, Table> = BTreeMap::new();
            let mut set = |section: &'static str, key: &str, value: Value| {
                sections
                    .entry(section)
                    .or_default()
                    .insert(key.into(), value);
            };
            if let Some(home) = &home {
                set("daemon", "home", Value::String(home.clone()));
            }
            if let Some(dir) = &plugins {
                set("plugins", "dir", Value::String(dir.clone()));
            }
            if let Some(audit) = &audit {
                set("logging", "audit", Value::String(format!("file:{audit}")));
            }
            if let Some(names) = &enabled {
                let names = names.iter().cloned().map(Value::String).collect();
                set("plugins", "enabled", Value::Array(names));
            }
            if let Some(level) = level {
                set("logging", "level", Value::String(level.into()));
            }
            if let Some(serve) = serve {
                set("ui", "serve", Value::Boolean(serve));
            }
            let root: Table = sections
                .into_iter()
                .map(|(k, v)| (k.to_owned(), Value::Table(v)))
                .collect();
            let text = toml::to_string(&root).unwrap();
            let settings = resolve_text(&decision, &text)
                .map_err(|e| TestCaseError::fail(format!("{text}\n{e}")))?;
            if let Some(home) = home {
                prop_assert_eq!(settings.home.clone(), PathBuf::from(home));
            }
            check_config(&decision, text.as_bytes()).map_err(TestCaseError::fail)?;
            Ok(())
        },
    );
}
