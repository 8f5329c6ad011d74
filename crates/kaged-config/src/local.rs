//! `local.toml`: the operator-local half of a project's world (ADR-0011). Model aliases, provider
//! credentials (by environment variable), the projects registry, and what each project's agents
//! are granted from the host (environment variables, host paths). Nothing here is ever written
//! into a project file, the database, a log or an API response in plaintext.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;
use toml::de::{DeTable, DeValue};

use crate::error::{ConfigError, ConfigErrors, Location, line_column};
use crate::providers::{AliasTarget, Driver, Prices, check_base_url};
use crate::settings::ConfigSecret;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Provider {
    /// Name of the environment variable holding the key (preferred).
    pub api_key_env: Option<String>,
    /// An inline key: accepted, warned about, never shown.
    #[serde(skip)]
    pub api_key: Option<ConfigSecret>,
    pub has_inline_key: bool,
    pub base_url: Option<String>,
    /// The wire driver as written; `None` means [`Driver::default_for`] the provider's name.
    pub driver: Option<Driver>,
    /// What the provider charges, when the operator says.
    pub prices: Option<Prices>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PathGrant {
    pub host: PathBuf,
    /// Where it appears in the project's cages: `project:/...` (below the workspace),
    /// `home:/...` (below the cage's home) or the host path itself (absolute, the default).
    pub at: String,
    pub mode: String,
    /// Whether the destination goes on the front of the cage's `PATH` (a bin directory).
    pub on_path: bool,
}

/// Cage directories a host grant may not land on or below: kaged makes them itself.
const RESERVED: &[&str] = &["/proc", "/dev", "/tmp", "/run", "/workspace", "/home/kaged"];
/// System directories every cage already sees read-only; a grant may not replace them.
const SYSTEM: &[&str] = &[
    "/usr",
    "/bin",
    "/sbin",
    "/lib",
    "/lib32",
    "/lib64",
    "/etc",
    "/opt/kaged",
];

/// Why `at` (given the grant's `host`) is not a destination, with the fix; `None` when it is.
fn bad_destination(at: &str, host: Option<&str>, mode: &str) -> Option<(String, String)> {
    let plain =
        |rest: &str| !rest.is_empty() && !rest.split('/').any(|seg| seg == ".." || seg == ".");
    if let Some(rest) = at.strip_prefix("project:/") {
        if rest.split('/').any(|seg| seg == "..") {
            return Some((
                format!("{at:?} leaves the project"),
                "write where it appears, e.g. project:/data".into(),
            ));
        }
        return None;
    }
    let read_only = || {
        (mode != "ro").then(|| {
            (
                format!("{at:?} is outside the project, and host directories are granted read-only there"),
                "use mode = \"ro\" (only project:/ grants may be rw)".to_string(),
            )
        })
    };
    if let Some(rest) = at.strip_prefix("home:/") {
        if !plain(rest.trim_end_matches('/')) {
            return Some((
                format!("{at:?} is not a directory below the cage's home"),
                "write home:/NAME, e.g. home:/.cargo".into(),
            ));
        }
        return read_only();
    }
    if at.starts_with('/') {
        let trimmed = at.trim_end_matches('/');
        if !plain(trimmed.trim_start_matches('/')) {
            return Some((
                format!("{at:?} is not a plain absolute path"),
                "write the host path itself, without . or ..".into(),
            ));
        }
        if host.is_some_and(|h| h.trim_end_matches('/') != trimmed) {
            return Some((
                format!("{at:?} is not the host path"),
                "a host directory appears at its own path (leave `at` out) or below the cage's home (home:/...)".into(),
            ));
        }
        let under = |dir: &str| trimmed == dir || trimmed.starts_with(&format!("{dir}/"));
        if let Some(dir) = RESERVED.iter().find(|d| under(d)) {
            return Some((
                format!("{at:?} is inside {dir}, which kaged makes for every cage"),
                "grant it at home:/... instead".into(),
            ));
        }
        if let Some(dir) = SYSTEM.iter().find(|d| under(d)) {
            return Some((
                format!("{at:?} is inside {dir}, which every cage already sees read-only"),
                "remove the grant: the cage sees it already".into(),
            ));
        }
        return read_only();
    }
    Some((
        format!("{at:?} is not a project:/ or home:/ path, nor the host path"),
        "write where it appears: project:/data, home:/.cargo, or leave `at` out for the host path itself".into(),
    ))
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProjectGrants {
    pub path: Option<PathBuf>,
    pub env: Vec<String>,
    pub paths: Vec<PathGrant>,
}

/// One plugin's operator-local settings. Only the keys serialize: the values go to the plugin
/// alone (in `initialize`), never to an API answer or a log.
#[derive(Clone, PartialEq)]
pub struct PluginSettings {
    /// The table as JSON.
    pub values: serde_json::Value,
    /// The line of its `[plugins."NAME"]` header (or key), for messages.
    pub line: usize,
}

impl std::fmt::Debug for PluginSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginSettings")
            .field("keys", &self.keys())
            .field("line", &self.line)
            .finish()
    }
}

impl PluginSettings {
    /// The settings' names, without their values.
    pub fn keys(&self) -> Vec<&str> {
        self.values
            .as_object()
            .map(|o| o.keys().map(String::as_str).collect())
            .unwrap_or_default()
    }
}

impl Serialize for PluginSettings {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut out = s.serialize_struct("PluginSettings", 2)?;
        out.serialize_field("keys", &self.keys())?;
        out.serialize_field("line", &self.line)?;
        out.end()
    }
}

/// A TOML value as JSON (dates and times as their text).
fn toml_to_json(value: toml::Value) -> serde_json::Value {
    use serde_json::Value as J;
    match value {
        toml::Value::String(s) => J::String(s),
        toml::Value::Integer(i) => J::from(i),
        toml::Value::Float(f) => serde_json::Number::from_f64(f).map_or(J::Null, J::Number),
        toml::Value::Boolean(b) => J::Bool(b),
        toml::Value::Datetime(d) => J::String(d.to_string()),
        toml::Value::Array(items) => J::Array(items.into_iter().map(toml_to_json).collect()),
        toml::Value::Table(t) => {
            J::Object(t.into_iter().map(|(k, v)| (k, toml_to_json(v))).collect())
        }
    }
}

/// Whether `name` can name a plugin (`^[a-z][a-z0-9-]*$`, at most 64).
fn is_plugin_name(name: &str) -> bool {
    name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct LocalConfig {
    pub operator_name: Option<String>,
    /// alias -> `provider:model`, or a fallback list of them (first choice first). Serialized
    /// as written: a string, or a list of strings.
    #[serde(serialize_with = "crate::providers::serialize_aliases")]
    pub aliases: BTreeMap<String, Vec<AliasTarget>>,
    pub providers: BTreeMap<String, Provider>,
    pub projects: BTreeMap<String, ProjectGrants>,
    /// `[plugins."NAME"]`: each plugin's operator-local settings (often secrets), checked
    /// against its manifest's `system_config_schema` when the plugin starts.
    pub plugins: BTreeMap<String, PluginSettings>,
    /// Non-fatal advice (an inline key) for the log.
    #[serde(skip)]
    pub warnings: Vec<String>,
}

/// `$KAGED_CONFIG_DIR/local.toml`, else next to `config.toml` in per-user mode.
pub fn local_config_path(env: &BTreeMap<String, String>, config_file: &Path) -> PathBuf {
    match env.get("KAGED_CONFIG_DIR").filter(|d| !d.is_empty()) {
        Some(dir) => PathBuf::from(dir).join("local.toml"),
        None => config_file.with_file_name("local.toml"),
    }
}

fn is_env_name(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .next()
            .is_some_and(|c| c.is_ascii_uppercase() || c == '_')
        && s.chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
}

pub(crate) fn is_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_' | '.'))
}

struct Reader<'a> {
    path: &'a Path,
    text: &'a str,
    errors: Vec<ConfigError>,
}

impl Reader<'_> {
    fn fail(
        &mut self,
        offset: usize,
        key: &str,
        problem: impl Into<String>,
        hint: impl Into<String>,
    ) {
        let (line, column) = line_column(self.text, offset);
        self.errors.push(ConfigError {
            location: Location::File {
                path: self.path.to_path_buf(),
                line,
                column,
            },
            key: key.to_string(),
            problem: problem.into(),
            hint: hint.into(),
        });
    }

    fn string(&mut self, v: &toml::Spanned<DeValue<'_>>, key: &str) -> Option<String> {
        match v.get_ref() {
            DeValue::String(s) => Some(s.to_string()),
            _ => {
                self.fail(v.span().start, key, "expected a string", "quote the value");
                None
            }
        }
    }

    fn table<'t, 'i>(
        &mut self,
        v: &'t toml::Spanned<DeValue<'i>>,
        key: &str,
    ) -> Option<&'t DeTable<'i>> {
        match v.get_ref() {
            DeValue::Table(t) => Some(t),
            _ => {
                self.fail(
                    v.span().start,
                    key,
                    "expected a table",
                    format!("write [{key}]"),
                );
                None
            }
        }
    }

    fn unknown(&mut self, offset: usize, key: &str, known: &[&str]) {
        let leaf = key.rsplit('.').next().unwrap_or(key);
        let hint = match crate::suggest::closest(leaf, known) {
            Some(c) => format!("did you mean `{c}`? known here: {}", known.join(", ")),
            None => format!("remove it; known here: {}", known.join(", ")),
        };
        self.fail(offset, key, format!("unknown key `{leaf}`"), hint);
    }
}

/// Parse `local.toml` (`text`) read from `path`; every problem at once.
pub fn parse_local(path: &Path, text: &str) -> Result<LocalConfig, ConfigErrors> {
    let mut r = Reader {
        path,
        text,
        errors: Vec::new(),
    };
    let mut out = LocalConfig::default();
    // Where each alias's value sits, for the cross-check after parsing.
    let mut alias_at: BTreeMap<String, usize> = BTreeMap::new();
    let root = match DeTable::parse(text) {
        Ok(t) => t,
        Err(e) => {
            r.fail(
                e.span().map(|s| s.start).unwrap_or(0),
                "",
                format!("TOML syntax error: {}", e.message().trim()),
                "fix the syntax at this position",
            );
            return Err(ConfigErrors(r.errors));
        }
    };
    const TOP: &[&str] = &[
        "operator_name",
        "aliases",
        "providers",
        "projects",
        "plugins",
    ];
    for (k, v) in root.get_ref().iter() {
        let key = k.get_ref().as_ref();
        match key {
            "operator_name" => out.operator_name = r.string(v, key),
            "aliases" => {
                let Some(t) = r.table(v, key) else { continue };
                for (ak, av) in t.iter() {
                    let alias = ak.get_ref().to_string();
                    let path = format!("aliases.{alias}");
                    alias_at.insert(alias.clone(), av.span().start);
                    let items: Vec<&toml::Spanned<DeValue<'_>>> = match av.get_ref() {
                        DeValue::Array(items) if !items.is_empty() => items.iter().collect(),
                        DeValue::Array(_) => {
                            r.fail(
                                av.span().start,
                                &path,
                                "an empty fallback list",
                                "write \"provider:model\" or [\"a:m1\", \"b:m2\"]",
                            );
                            continue;
                        }
                        _ => vec![av],
                    };
                    let mut targets = Vec::new();
                    for item in items {
                        let Some(text) = r.string(item, &path) else {
                            continue;
                        };
                        match AliasTarget::parse(&text) {
                            Some(t) => targets.push(t),
                            None => r.fail(
                                item.span().start,
                                &path,
                                format!("{text:?} is not provider:model"),
                                "write \"provider:model\", e.g. \"anthropic:claude-sonnet-4-5\", or a fallback list [\"a:m1\", \"b:m2\"]",
                            ),
                        }
                    }
                    if !targets.is_empty() {
                        out.aliases.insert(alias, targets);
                    }
                }
            }
            "providers" => {
                let Some(t) = r.table(v, key) else { continue };
                for (pk, pv) in t.iter() {
                    let name = pk.get_ref().to_string();
                    let path = format!("providers.{name}");
                    let Some(pt) = r.table(pv, &path) else {
                        continue;
                    };
                    let p = provider(&mut r, pt, &path, &mut out.warnings);
                    out.providers.insert(name, p);
                }
            }
            "projects" => {
                let Some(t) = r.table(v, key) else { continue };
                for (pk, pv) in t.iter() {
                    let slug = pk.get_ref().to_string();
                    let path = format!("projects.{slug}");
                    let Some(pt) = r.table(pv, &path) else {
                        continue;
                    };
                    let mut g = ProjectGrants {
                        path: None,
                        env: Vec::new(),
                        paths: Vec::new(),
                    };
                    for (fk, fv) in pt.iter() {
                        let field = fk.get_ref().as_ref();
                        let fpath = format!("{path}.{field}");
                        match field {
                            "path" => {
                                if let Some(s) = r.string(fv, &fpath) {
                                    if Path::new(&s).is_absolute() {
                                        g.path = Some(PathBuf::from(s));
                                    } else {
                                        r.fail(fv.span().start, &fpath, format!("{s:?} is not absolute"), "use the project directory's absolute path");
                                    }
                                }
                            }
                            "env" => match fv.get_ref() {
                                DeValue::Array(items) => {
                                    for (i, item) in items.iter().enumerate() {
                                        let ipath = format!("{fpath}[{i}]");
                                        let Some(name) = r.string(item, &ipath) else { continue };
                                        if is_env_name(&name) {
                                            g.env.push(name);
                                        } else {
                                            r.fail(item.span().start, &ipath, format!("{name:?} is not an environment variable name"), "list variable names such as GITHUB_TOKEN (their values stay in the environment)");
                                        }
                                    }
                                }
                                _ => r.fail(fv.span().start, &fpath, "expected a list of strings", "write [\"A\", \"B\"]"),
                            },
                            "paths" => match fv.get_ref() {
                                DeValue::Array(items) => {
                                    for item in items {
                                        if let Some(grant) = path_grant(&mut r, item, &fpath) {
                                            g.paths.push(grant);
                                        }
                                    }
                                }
                                _ => r.fail(fv.span().start, &fpath, "expected a list of tables", "write paths = [{ host = \"/srv/data\", at = \"project:/data\", mode = \"ro\" }]"),
                            },
                            _ => r.unknown(fk.span().start, &fpath, &["path", "env", "paths"]),
                        }
                    }
                    out.projects.insert(slug, g);
                }
            }
            "plugins" => {
                let Some(t) = r.table(v, key) else { continue };
                // The values, read again as plain TOML (the positioned tree gives the lines).
                let mut values = toml::from_str::<toml::Table>(text)
                    .ok()
                    .and_then(|mut all| all.remove("plugins"))
                    .and_then(|p| match p {
                        toml::Value::Table(t) => Some(t),
                        _ => None,
                    })
                    .unwrap_or_default();
                for (pk, pv) in t.iter() {
                    let name = pk.get_ref().to_string();
                    let path = format!("plugins.{name}");
                    if !is_plugin_name(&name) {
                        r.fail(
                            pk.span().start,
                            &path,
                            format!("{name:?} is not a plugin name"),
                            "write the plugin's name as its manifest does: lowercase letters, digits and '-', starting with a letter",
                        );
                        continue;
                    }
                    if r.table(pv, &path).is_none() {
                        continue;
                    }
                    let settings = values
                        .remove(&name)
                        .map(toml_to_json)
                        .unwrap_or_else(|| serde_json::json!({}));
                    let line = line_column(text, pk.span().start).0;
                    out.plugins.insert(
                        name,
                        PluginSettings {
                            values: settings,
                            line,
                        },
                    );
                }
            }
            _ => r.unknown(k.span().start, key, TOP),
        }
    }
    // Aliases must point at a configured provider.
    let missing: Vec<(String, String)> = out
        .aliases
        .iter()
        .flat_map(|(alias, targets)| targets.iter().map(move |t| (alias, t)))
        .filter(|(_, t)| !out.providers.contains_key(&t.provider))
        .map(|(alias, t)| (alias.clone(), t.provider.clone()))
        .collect();
    for (alias, provider) in missing {
        let offset = alias_at.get(&alias).copied().unwrap_or(0);
        r.fail(
            offset,
            &format!("aliases.{alias}"),
            format!("the provider `{provider}` is not configured"),
            format!("add [providers.{provider}] with api_key_env (and base_url unless it is anthropic or openai)"),
        );
    }
    if r.errors.is_empty() {
        Ok(out)
    } else {
        r.errors.sort_by_key(|e| match &e.location {
            Location::File { line, column, .. } => (*line, *column),
            _ => (0, 0),
        });
        Err(ConfigErrors(r.errors))
    }
}

fn path_display(p: &Path) -> String {
    p.display().to_string()
}

const PROVIDER_KEYS: &[&str] = &[
    "driver",
    "base_url",
    "api_key_env",
    "api_key",
    "price_input_per_mtok",
    "price_output_per_mtok",
    "price_cached_per_mtok",
];

/// One `[providers.NAME]` table.
fn provider(
    r: &mut Reader<'_>,
    pt: &DeTable<'_>,
    path: &str,
    warnings: &mut Vec<String>,
) -> Provider {
    let mut p = Provider {
        api_key_env: None,
        api_key: None,
        has_inline_key: false,
        base_url: None,
        driver: None,
        prices: None,
    };
    // input, output, cached; with where the first price sits.
    let mut prices: [Option<f64>; 3] = [None; 3];
    let mut price_at = None;
    for (fk, fv) in pt.iter() {
        let field = fk.get_ref().as_ref();
        let fpath = format!("{path}.{field}");
        match field {
            "driver" => {
                if let Some(s) = r.string(fv, &fpath) {
                    match s.parse::<Driver>() {
                        Ok(d) => p.driver = Some(d),
                        Err(e) => r.fail(
                            fv.span().start,
                            &fpath,
                            e.to_string(),
                            "leave driver out for the default by name (anthropic → anthropic-messages, openai → openai-responses, else openai-completions)",
                        ),
                    }
                }
            }
            "api_key_env" => {
                if let Some(s) = r.string(fv, &fpath) {
                    if is_env_name(&s) {
                        p.api_key_env = Some(s);
                    } else {
                        r.fail(
                            fv.span().start,
                            &fpath,
                            format!("{s:?} is not an environment variable name"),
                            "use UPPER_CASE letters, digits and _, e.g. ANTHROPIC_API_KEY",
                        );
                    }
                }
            }
            "api_key" => {
                // Never echo the key itself.
                if let DeValue::String(s) = fv.get_ref() {
                    p.api_key = Some(ConfigSecret::new(s.to_string()));
                    p.has_inline_key = true;
                    warnings.push(format!(
                        "{fpath}: an inline key in {}; prefer api_key_env",
                        path_display(r.path)
                    ));
                } else {
                    r.fail(
                        fv.span().start,
                        &fpath,
                        "expected a string",
                        "quote the value, or better use api_key_env",
                    );
                }
            }
            "base_url" => {
                if let Some(s) = r.string(fv, &fpath) {
                    match check_base_url(&s) {
                        Ok(()) => p.base_url = Some(s),
                        Err((problem, hint)) => r.fail(fv.span().start, &fpath, problem, hint),
                    }
                }
            }
            "price_input_per_mtok" | "price_output_per_mtok" | "price_cached_per_mtok" => {
                price_at.get_or_insert(fk.span().start);
                let value = match fv.get_ref() {
                    DeValue::Integer(i) => i64::from_str_radix(i.as_str(), i.radix())
                        .ok()
                        .map(|v| v as f64),
                    DeValue::Float(f) => f.as_str().parse::<f64>().ok(),
                    _ => None,
                };
                match value.filter(|v| v.is_finite() && *v >= 0.0) {
                    Some(v) => {
                        let slot = match field {
                            "price_input_per_mtok" => 0,
                            "price_output_per_mtok" => 1,
                            _ => 2,
                        };
                        prices[slot] = Some(v);
                    }
                    None => r.fail(
                        fv.span().start,
                        &fpath,
                        "expected a price: a number of at least 0",
                        "write the price per million tokens, e.g. 3.0",
                    ),
                }
            }
            _ => r.unknown(fk.span().start, &fpath, PROVIDER_KEYS),
        }
    }
    match prices {
        [Some(input), Some(output), cached] => {
            p.prices = Some(Prices {
                input_per_mtok: input,
                output_per_mtok: output,
                cached_per_mtok: cached.unwrap_or(input),
            });
        }
        [None, None, None] => {}
        _ => {
            if let Some(at) = price_at {
                r.fail(
                    at,
                    path,
                    "prices need both price_input_per_mtok and price_output_per_mtok",
                    "give both (price_cached_per_mtok is optional and defaults to the input price)",
                );
            }
        }
    }
    p
}

fn path_grant(
    r: &mut Reader<'_>,
    item: &toml::Spanned<DeValue<'_>>,
    key: &str,
) -> Option<PathGrant> {
    let t = r.table(item, key)?;
    let (mut host, mut at, mut mode, mut on_path) = (None, None, "ro".to_string(), false);
    let mut at_offset = item.span().start;
    for (fk, fv) in t.iter() {
        let field = fk.get_ref().as_ref();
        let fpath = format!("{key}.{field}");
        match field {
            "host" => {
                host = r.string(fv, &fpath).filter(|s| {
                    let ok = Path::new(s).is_absolute();
                    if !ok {
                        r.fail(
                            fv.span().start,
                            &fpath,
                            format!("{s:?} is not an absolute host path"),
                            "use an absolute path",
                        );
                    }
                    ok
                })
            }
            "at" => {
                at_offset = fv.span().start;
                at = r.string(fv, &fpath);
            }
            "mode" => {
                if let Some(m) = r.string(fv, &fpath) {
                    if m == "ro" || m == "rw" {
                        mode = m;
                    } else {
                        r.fail(
                            fv.span().start,
                            &fpath,
                            format!("{m:?} is not ro or rw"),
                            "use \"ro\" or \"rw\"",
                        );
                    }
                }
            }
            "on_path" => match fv.get_ref() {
                DeValue::Boolean(b) => on_path = *b,
                _ => r.fail(
                    fv.span().start,
                    &fpath,
                    "expected true or false",
                    "write on_path = true for a directory of programs",
                ),
            },
            _ => r.unknown(fk.span().start, &fpath, &["host", "at", "mode", "on_path"]),
        }
    }
    // Without `at`, a host directory appears at its own path.
    let Some(at) = at.or_else(|| host.clone()) else {
        r.fail(
            item.span().start,
            key,
            "a path grant needs host",
            "write { host = \"/home/ann/.cargo/bin\", on_path = true }",
        );
        return None;
    };
    if let Some((problem, hint)) = bad_destination(&at, host.as_deref(), &mode) {
        r.fail(at_offset, &format!("{key}.at"), problem, hint);
        return None;
    }
    let Some(host) = host else {
        r.fail(
            item.span().start,
            key,
            "a path grant needs host",
            "write { host = \"/srv/data\", at = \"project:/data\" }",
        );
        return None;
    };
    Some(PathGrant {
        host: PathBuf::from(host),
        at,
        mode,
        on_path,
    })
}

#[cfg(test)]
mod tests;
