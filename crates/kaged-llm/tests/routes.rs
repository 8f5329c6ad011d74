//! From `local.toml` to endpoints: an alias's routes become endpoints with the key read from
//! the daemon's environment; a missing variable is an error that names it, never a value.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

use std::collections::BTreeMap;
use std::path::Path;

use kaged_llm::{Driver, Endpoint, MissingKey, Prices, Usage, cost};

#[test]
fn alias_routes_become_endpoints_with_keys_from_the_environment() {
    let path = Path::new("/etc/kaged/local.toml");
    let local = kaged_config::parse_local(
        path,
        "[aliases]\nfast = [\"anthropic:claude-haiku-4-5\", \"ollama:llama3.2:1b\"]\n\
         [providers.anthropic]\napi_key_env = \"ANTHROPIC_API_KEY\"\n\
         price_input_per_mtok = 1.0\nprice_output_per_mtok = 5.0\n\
         [providers.ollama]\nbase_url = \"http://127.0.0.1:11434\"\n",
    )
    .unwrap();
    let routes = kaged_config::resolve_alias(&local, path, "fast").unwrap();
    let env: BTreeMap<String, String> = [(
        "ANTHROPIC_API_KEY".to_string(),
        "sk-ant-from-env-000".to_string(),
    )]
    .into();
    let first = Endpoint::from_route(&routes[0], &env).unwrap();
    assert_eq!(first.driver, Driver::AnthropicMessages);
    assert_eq!(first.base_url, "https://api.anthropic.com");
    assert_eq!(first.model, "claude-haiku-4-5");
    assert_eq!(
        first.api_key.as_ref().map(|k| k.expose()),
        Some("sk-ant-from-env-000")
    );
    assert!(!format!("{first:?}").contains("sk-ant-from-env"));
    let second = Endpoint::from_route(&routes[1], &env).unwrap();
    assert_eq!(second.driver, Driver::OpenaiCompletions);
    assert_eq!(second.api_key, None);
    let prices: Prices = routes[0].provider.prices.unwrap();
    let usage = Usage {
        input_tokens: 2_000_000,
        output_tokens: 1_000_000,
        cached_tokens: 0,
    };
    assert!((cost(&usage, &prices) - 7.0).abs() < 1e-9);

    let err = Endpoint::from_route(&routes[0], &BTreeMap::new()).unwrap_err();
    assert_eq!(
        err,
        MissingKey {
            provider: "anthropic".into(),
            var: "ANTHROPIC_API_KEY".into()
        }
    );
    assert!(err.to_string().contains("ANTHROPIC_API_KEY"));
}
