//! `kaged tokens`: bearer tokens minted, listed and revoked through the daemon.

use kaged_config::DeploymentMode;
use serde_json::Value;

use super::transport::{call, target};
use crate::Failure;
use crate::cli::{JsonOutput, TokensCommand};

fn millis_to_text(v: &Value) -> String {
    v.as_i64()
        .map(kaged_server::rfc3339_utc)
        .unwrap_or_else(|| "-".into())
}

pub async fn tokens(
    mode_flag: Option<DeploymentMode>,
    command: TokensCommand,
) -> Result<(), Failure> {
    let target = target(mode_flag)?;
    match command {
        TokensCommand::Create { actor, name } => {
            let body = serde_json::json!({"actor": actor, "name": name});
            let v = call(&target, reqwest::Method::POST, "/api/v1/tokens", Some(body)).await?;
            let t = &v["token"];
            let label = t["name"]
                .as_str()
                .map(|n| format!(" (name {n})"))
                .unwrap_or_default();
            eprintln!(
                "kaged: created token {} for actor {}{label}. Copy it now: kaged keeps only its hash and cannot show it again.",
                t["id"],
                t["actor"].as_str().unwrap_or("?")
            );
            println!("{}", v["plaintext"].as_str().unwrap_or_default());
        }
        TokensCommand::List {
            output: JsonOutput { json },
        } => {
            let v = call(&target, reqwest::Method::GET, "/api/v1/tokens", None).await?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&v["tokens"]).unwrap_or_default()
                );
                return Ok(());
            }
            println!(
                "{:<5} {:<20} {:<20} {:<24} {:<24} REVOKED",
                "ID", "ACTOR", "NAME", "CREATED", "LAST USED"
            );
            for t in v["tokens"].as_array().into_iter().flatten() {
                println!(
                    "{:<5} {:<20} {:<20} {:<24} {:<24} {}",
                    t["id"],
                    t["actor"].as_str().unwrap_or("?"),
                    t["name"].as_str().unwrap_or("-"),
                    millis_to_text(&t["created_at_ms"]),
                    millis_to_text(&t["last_used_at_ms"]),
                    millis_to_text(&t["revoked_at_ms"]),
                );
            }
        }
        TokensCommand::Revoke { id } => {
            let v = call(
                &target,
                reqwest::Method::POST,
                &format!("/api/v1/tokens/{id}/revoke"),
                None,
            )
            .await?;
            println!(
                "revoked token {id} (actor {})",
                v["token"]["actor"].as_str().unwrap_or("?")
            );
        }
    }
    Ok(())
}
