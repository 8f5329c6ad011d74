//! Model providers in `local.toml`: the wire driver of each provider, its base URL rule (https, or
//! plain http only to loopback or a literal private IP), prices, alias targets, and resolving a
//! DSL model alias to its fallback list of routes.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::Serialize;

use crate::local::{LocalConfig, Provider};

/// The wire shape a provider speaks (named as in kaged's LLM spec).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Driver {
    /// `POST {base}/v1/messages` (Anthropic Messages, SSE).
    AnthropicMessages,
    /// `POST {base}/v1/responses` (OpenAI Responses, SSE).
    OpenaiResponses,
    /// `POST {base}/v1/chat/completions` (OpenAI Chat Completions and the servers that copy it:
    /// OpenRouter, Ollama, vLLM, llama.cpp's server).
    OpenaiCompletions,
}

impl Driver {
    /// Every driver, in the order the spec lists them.
    pub const ALL: [Driver; 3] = [
        Driver::AnthropicMessages,
        Driver::OpenaiResponses,
        Driver::OpenaiCompletions,
    ];

    /// The driver a provider gets when `local.toml` names none: `anthropic` → anthropic-messages,
    /// `openai` → openai-responses, anything else → openai-completions.
    pub fn default_for(provider_name: &str) -> Driver {
        match provider_name {
            "anthropic" => Driver::AnthropicMessages,
            "openai" => Driver::OpenaiResponses,
            _ => Driver::OpenaiCompletions,
        }
    }

    /// The wire name (`anthropic-messages`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            Driver::AnthropicMessages => "anthropic-messages",
            Driver::OpenaiResponses => "openai-responses",
            Driver::OpenaiCompletions => "openai-completions",
        }
    }

    /// The base URL used when a provider gives none.
    pub fn default_base_url(self) -> &'static str {
        match self {
            Driver::AnthropicMessages => "https://api.anthropic.com",
            Driver::OpenaiResponses | Driver::OpenaiCompletions => "https://api.openai.com",
        }
    }
}

impl fmt::Display for Driver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A driver name that is not one of [`Driver::ALL`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown driver {0:?}: use anthropic-messages, openai-responses or openai-completions")]
pub struct UnknownDriver(pub String);

impl FromStr for Driver {
    type Err = UnknownDriver;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Driver::ALL
            .into_iter()
            .find(|d| d.as_str() == s)
            .ok_or_else(|| UnknownDriver(s.to_string()))
    }
}

/// What a provider charges, in currency units per million tokens. Cached input tokens are
/// charged at `cached_per_mtok` (the input price when the operator gives none).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Prices {
    pub input_per_mtok: f64,
    pub output_per_mtok: f64,
    pub cached_per_mtok: f64,
}

/// One `provider:model` of an alias (serialized as that string).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AliasTarget {
    pub provider: String,
    pub model: String,
}

impl fmt::Display for AliasTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.provider, self.model)
    }
}

impl Serialize for AliasTarget {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// `[aliases]` as the file writes it: one target as a string, a fallback list as a list.
pub(crate) fn serialize_aliases<S: serde::Serializer>(
    aliases: &BTreeMap<String, Vec<AliasTarget>>,
    s: S,
) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeMap;
    let mut map = s.serialize_map(Some(aliases.len()))?;
    for (alias, targets) in aliases {
        match targets.as_slice() {
            [one] => map.serialize_entry(alias, one)?,
            many => map.serialize_entry(alias, many)?,
        }
    }
    map.end()
}

impl AliasTarget {
    /// `provider:model` (split at the first `:`, so `ollama:llama3.2:1b` keeps its tag).
    pub fn parse(text: &str) -> Option<AliasTarget> {
        let (provider, model) = text.split_once(':')?;
        (crate::local::is_name(provider) && !model.trim().is_empty()).then(|| AliasTarget {
            provider: provider.to_string(),
            model: model.to_string(),
        })
    }
}

/// Where one attempt of an alias goes: the provider's configuration, its resolved driver and
/// base URL, and the model.
#[derive(Debug, Clone, PartialEq)]
pub struct Route {
    pub provider_name: String,
    pub provider: Provider,
    pub driver: Driver,
    /// The configured base URL, or the driver's default.
    pub base_url: String,
    pub model: String,
}

/// A model alias the project uses but `local.toml` does not define.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "model alias `{alias}` is not defined in {path}\n  fix: add this line under [aliases] in {path}:\n    {line}",
    path = .path.display()
)]
pub struct MissingAlias {
    pub alias: String,
    pub path: PathBuf,
    /// The exact line to add (with a configured provider when there is one).
    pub line: String,
}

/// The routes of `alias`, first choice first (a fallback list gives several). `local_path` is
/// where `local.toml` lives (or would), for the error.
pub fn resolve_alias(
    local: &LocalConfig,
    local_path: &Path,
    alias: &str,
) -> Result<Vec<Route>, MissingAlias> {
    let missing = || {
        let provider = local
            .providers
            .keys()
            .next()
            .map_or("PROVIDER", String::as_str);
        MissingAlias {
            alias: alias.to_string(),
            path: local_path.to_path_buf(),
            line: format!("{} = \"{provider}:MODEL\"", toml_key(alias)),
        }
    };
    let targets = local.aliases.get(alias).ok_or_else(missing)?;
    // parse_local refuses aliases to unknown providers, so every target resolves; a config
    // built by hand that breaks this is reported like a missing alias.
    targets
        .iter()
        .map(|t| {
            let p = local.providers.get(&t.provider).ok_or_else(missing)?;
            let driver = p.driver.unwrap_or_else(|| Driver::default_for(&t.provider));
            Ok(Route {
                provider_name: t.provider.clone(),
                provider: p.clone(),
                driver,
                base_url: p
                    .base_url
                    .clone()
                    .unwrap_or_else(|| driver.default_base_url().to_string()),
                model: t.model.clone(),
            })
        })
        .collect()
}

/// A TOML key as written: bare when it can be, quoted otherwise.
fn toml_key(key: &str) -> String {
    if !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        key.to_string()
    } else {
        format!("{key:?}")
    }
}

/// Whether a provider's `base_url` is acceptable: https, or plain http only to loopback
/// (`localhost` included) or a literal private IP. The problem and its fix otherwise.
pub fn check_base_url(url: &str) -> Result<(), (String, String)> {
    let fix_scheme = "use https://HOST, or http:// only to 127.0.0.1, localhost or a private IP (a local model server)";
    let Some((scheme, rest)) = url.split_once("://") else {
        return Err((format!("{url:?} is not a URL"), fix_scheme.into()));
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if authority.is_empty() {
        return Err((format!("{url:?} has no host"), fix_scheme.into()));
    }
    if authority.contains('@') {
        return Err((
            format!("{url:?} has user information before the host"),
            "write scheme://host[:port][/path]; keys go in api_key_env".into(),
        ));
    }
    match scheme {
        "https" => return Ok(()),
        "http" => {}
        _ => {
            return Err((
                format!("{url:?}: the scheme must be https or http"),
                fix_scheme.into(),
            ));
        }
    }
    let host = match authority.rsplit_once(':') {
        Some((h, p)) if !p.ends_with(']') => h,
        _ => authority,
    };
    let literal = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<IpAddr>()
        .ok();
    match literal {
        _ if host.eq_ignore_ascii_case("localhost") => Ok(()),
        Some(ip) if kaged_auth::is_non_public(ip) && !ip.is_unspecified() => Ok(()),
        Some(ip) => Err((
            format!(
                "{url:?} is plain http to the public address {ip}: the key and the conversation would cross the internet unencrypted"
            ),
            format!(
                "use https:// (e.g. {:?})",
                url.replacen("http://", "https://", 1)
            ),
        )),
        None => Err((
            format!(
                "{url:?} is plain http to the host name {host:?}: only loopback and literal private IPs may use http"
            ),
            format!(
                "use https://{}, or http:// with the server's private IP",
                rest
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drivers_have_their_spec_names_and_defaults() {
        for d in Driver::ALL {
            assert_eq!(d.to_string().parse::<Driver>(), Ok(d));
        }
        assert_eq!(Driver::default_for("anthropic"), Driver::AnthropicMessages);
        assert_eq!(Driver::default_for("openai"), Driver::OpenaiResponses);
        assert_eq!(Driver::default_for("ollama"), Driver::OpenaiCompletions);
        assert!("anthropic".parse::<Driver>().is_err());
    }

    #[test]
    fn base_urls_are_https_or_plain_http_to_private_addresses() {
        for ok in [
            "https://api.anthropic.com",
            "https://openrouter.ai/api",
            "http://127.0.0.1:11434",
            "http://localhost:8080/",
            "http://[::1]:8000",
            "http://10.0.0.5:8000",
            "http://192.168.1.20",
            "http://100.64.0.2:11434",
        ] {
            assert_eq!(check_base_url(ok), Ok(()), "{ok}");
        }
        for bad in [
            "http://api.openai.com",
            "http://8.8.8.8:80",
            "http://0.0.0.0:80",
            "http://127.0.0.1@evil.example",
            "ftp://127.0.0.1",
            "127.0.0.1:8080",
            "http:///v1",
            "http://localhost.evil.example",
        ] {
            assert!(check_base_url(bad).is_err(), "{bad}");
        }
    }

    fn parse(text: &str) -> Result<LocalConfig, crate::ConfigErrors> {
        crate::parse_local(Path::new("/home/ann/.config/kaged/local.toml"), text)
    }

    const LOCAL: &str = "[aliases]\n\
        fast = [\"anthropic:claude-haiku-4-5\", \"router:meta/llama-3.1-8b\"]\n\
        smart = \"openai:gpt-5\"\n\
        local = \"ollama:llama3.2:1b\"\n\
        [providers.anthropic]\napi_key_env = \"ANTHROPIC_API_KEY\"\n\
        price_input_per_mtok = 1\nprice_output_per_mtok = 5.0\nprice_cached_per_mtok = 0.1\n\
        [providers.openai]\napi_key_env = \"OPENAI_API_KEY\"\nprice_input_per_mtok = 1.25\nprice_output_per_mtok = 10\n\
        [providers.router]\ndriver = \"openai-completions\"\nbase_url = \"https://openrouter.ai/api\"\napi_key_env = \"OPENROUTER_API_KEY\"\n\
        [providers.ollama]\nbase_url = \"http://127.0.0.1:11434\"\n";

    #[test]
    fn aliases_resolve_to_their_routes_first_choice_first() {
        let c = parse(LOCAL).unwrap();
        let path = Path::new("/home/ann/.config/kaged/local.toml");
        let fast = resolve_alias(&c, path, "fast").unwrap();
        assert_eq!(fast.len(), 2);
        assert_eq!(fast[0].provider_name, "anthropic");
        assert_eq!(fast[0].driver, Driver::AnthropicMessages);
        assert_eq!(fast[0].base_url, "https://api.anthropic.com");
        assert_eq!(fast[0].model, "claude-haiku-4-5");
        assert_eq!(
            fast[0].provider.prices,
            Some(Prices {
                input_per_mtok: 1.0,
                output_per_mtok: 5.0,
                cached_per_mtok: 0.1
            })
        );
        assert_eq!(fast[1].driver, Driver::OpenaiCompletions);
        assert_eq!(fast[1].base_url, "https://openrouter.ai/api");
        assert_eq!(fast[1].model, "meta/llama-3.1-8b");
        let smart = resolve_alias(&c, path, "smart").unwrap();
        assert_eq!(smart[0].driver, Driver::OpenaiResponses);
        assert_eq!(smart[0].base_url, "https://api.openai.com");
        // The cached price defaults to the input price.
        assert_eq!(
            smart[0].provider.prices.map(|p| p.cached_per_mtok),
            Some(1.25)
        );
        let local = resolve_alias(&c, path, "local").unwrap();
        assert_eq!(
            (local[0].driver, local[0].model.as_str()),
            (Driver::OpenaiCompletions, "llama3.2:1b")
        );
        assert_eq!(local[0].provider.prices, None);
    }

    #[test]
    fn aliases_serialize_as_written() {
        let c = parse(LOCAL).unwrap();
        let v = serde_json::to_value(&c).unwrap();
        assert_eq!(v["aliases"]["smart"], "openai:gpt-5");
        assert_eq!(
            v["aliases"]["fast"],
            serde_json::json!(["anthropic:claude-haiku-4-5", "router:meta/llama-3.1-8b"])
        );
        assert_eq!(v["providers"]["router"]["driver"], "openai-completions");
        assert_eq!(v["providers"]["openai"]["prices"]["output_per_mtok"], 10.0);
    }

    #[test]
    fn a_missing_alias_names_the_line_to_add() {
        let c = parse(LOCAL).unwrap();
        let path = Path::new("/home/ann/.config/kaged/local.toml");
        let e = resolve_alias(&c, path, "reviewer").unwrap_err();
        assert_eq!(e.line, "reviewer = \"anthropic:MODEL\"");
        let shown = e.to_string();
        assert!(
            shown.contains(
                "model alias `reviewer` is not defined in /home/ann/.config/kaged/local.toml"
            ),
            "{shown}"
        );
        assert!(
            shown.contains("under [aliases]")
                && shown.contains("    reviewer = \"anthropic:MODEL\""),
            "{shown}"
        );
        let e = resolve_alias(&LocalConfig::default(), path, "odd name").unwrap_err();
        assert_eq!(e.line, "\"odd name\" = \"PROVIDER:MODEL\"");
    }

    #[test]
    fn provider_mistakes_are_reported_with_line_key_and_fix() {
        let errs = parse(
            "[aliases]\nfast = []\nslow = [\"a:m\", 3]\n\
             [providers.a]\ndriver = \"anthropic\"\n\
             base_url = \"http://api.example.com\"\n\
             price_input_per_mtok = -1\n\
             [providers.b]\nprice_output_per_mtok = 2\nbase_url = \"http://8.8.8.8\"\n",
        )
        .unwrap_err()
        .0;
        let shown: Vec<String> = errs.iter().map(ToString::to_string).collect();
        for needle in [
            "local.toml:2:8: aliases.fast: an empty fallback list",
            "local.toml:3:16: aliases.slow: expected a string",
            "local.toml:5:10: providers.a.driver: unknown driver \"anthropic\"",
            "local.toml:6:12: providers.a.base_url: \"http://api.example.com\" is plain http to the host name",
            "fix: use https://api.example.com",
            "local.toml:7:24: providers.a.price_input_per_mtok: expected a price",
            "providers.b: prices need both price_input_per_mtok and price_output_per_mtok",
            "providers.b.base_url: \"http://8.8.8.8\" is plain http to the public address 8.8.8.8",
        ] {
            assert!(
                shown.iter().any(|s| s.contains(needle)),
                "missing {needle} in {shown:#?}"
            );
        }
    }

    #[test]
    fn alias_targets_split_at_the_first_colon() {
        let t = AliasTarget::parse("ollama:llama3.2:1b").unwrap();
        assert_eq!(
            (t.provider.as_str(), t.model.as_str()),
            ("ollama", "llama3.2:1b")
        );
        assert_eq!(t.to_string(), "ollama:llama3.2:1b");
        assert!(AliasTarget::parse("nomodel").is_none());
        assert!(AliasTarget::parse("x:").is_none());
        assert!(AliasTarget::parse("Bad Name:m").is_none());
    }
}
