//! How callers sign in: the mechanism chosen from the settings (step 1; sidecar sign-in
//! refuses to start without a strong shared nonce), launch URLs, and the request [`Policy`]
//! built from the per-startup nonce and the bound listeners (step 10).

use std::net::SocketAddr;

use anyhow::{Result, anyhow};
use kaged_auth::{AllowedHosts, Mechanism, Policy, Secret, mint_launch_token};
use kaged_config::{AuthMechanism, ModeDecision, Settings};
use kaged_server::now_ms;

use crate::Failure;

/// The environment variable holding the secret the sidecar sends as `X-Kaged-Auth-Nonce`.
pub const SIDECAR_NONCE_VAR: &str = "KAGED_AUTH_SIDECAR_NONCE";
const MIN_SIDECAR_NONCE_LEN: usize = 32;

pub fn random_bytes<const N: usize>() -> Result<[u8; N]> {
    let mut b = [0u8; N];
    getrandom::fill(&mut b).map_err(|e| anyhow!("the OS random number generator failed: {e}"))?;
    Ok(b)
}

/// A fresh one-time launch URL for the daemon at `base`, valid `ttl_secs`.
pub fn launch_url(base: &str, nonce: &Secret, ttl_secs: u64) -> Result<String> {
    let expires_at = (now_ms() / 1000) as u64 + ttl_secs;
    let token = mint_launch_token(nonce, random_bytes::<16>()?, expires_at);
    Ok(format!("{base}/launch?token={}", token.expose()))
}

/// The sign-in mechanism of `[auth]`; sidecar sign-in reads its nonce from the environment.
pub(super) fn mechanism(
    settings: &Settings,
    decision: &ModeDecision,
) -> Result<Mechanism, Failure> {
    Ok(match settings.auth {
        AuthMechanism::LaunchUrl => Mechanism::LaunchUrl,
        AuthMechanism::Insecure => Mechanism::Insecure,
        AuthMechanism::InsecureReadonly => Mechanism::InsecureReadonly,
        AuthMechanism::Sidecar => Mechanism::Sidecar {
            nonce: sidecar_nonce(std::env::var(SIDECAR_NONCE_VAR).ok()).map_err(|e| {
                // Most often: someone trying kaged as root, where system-wide is the default.
                let hint = if decision.rule == kaged_config::ModeRule::SystemUser {
                    format!(
                        "\n  ({}, so system-wide mode with sidecar sign-in was chosen; to run your own daemon with a launch URL instead: kaged start --mode user)",
                        decision.reason
                    )
                } else {
                    String::new()
                };
                Failure::Config(format!("{e}{hint}"))
            })?,
        },
    })
}

/// Sidecar mode refuses to start without a strong shared nonce.
fn sidecar_nonce(value: Option<String>) -> Result<Secret, String> {
    let how = format!(
        "generate one with `openssl rand -hex 32`, put `{SIDECAR_NONCE_VAR}=<value>` in the daemon's environment (e.g. /etc/kaged/env, mode 0600) and configure the sidecar to send the same value as X-Kaged-Auth-Nonce"
    );
    let value = value.map(|v| v.trim().to_string()).unwrap_or_default();
    if value.is_empty() {
        return Err(format!(
            "sidecar authentication is on ([auth] mode, or the system-wide default) but {SIDECAR_NONCE_VAR} is not set; {how}"
        ));
    }
    let distinct: std::collections::BTreeSet<char> = value.chars().collect();
    if value.len() < MIN_SIDECAR_NONCE_LEN || distinct.len() < 8 {
        return Err(format!(
            "{SIDECAR_NONCE_VAR} is too weak (at least {MIN_SIDECAR_NONCE_LEN} random characters are needed); {how}"
        ));
    }
    Ok(Secret::new(value))
}

/// Who may do what over the bound listeners (`tcp_addrs` make the Host allowlist).
pub(super) fn policy(
    settings: &Settings,
    mechanism: Mechanism,
    nonce: &Secret,
    tcp_addrs: &[SocketAddr],
    operator: String,
) -> Policy {
    if let Mechanism::Sidecar { .. } = mechanism {
        tracing::info!(
            allowed_hosts = ?settings.allowed_hosts,
            "sidecar authentication: requests must carry X-Kaged-Auth-Nonce and X-Kaged-User-Id from the sidecar"
        );
    }
    Policy {
        allowed: AllowedHosts::for_listeners(tcp_addrs, &settings.allowed_hosts),
        nonce: nonce.clone(),
        mechanism,
        operator,
        bootstrap_token: settings
            .auth_token
            .as_ref()
            .map(|t| Secret::new(t.expose().to_string())),
        require_token_identity: settings.require_token_identity,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sidecar_nonce_must_be_present_and_strong() {
        let e = sidecar_nonce(None).unwrap_err();
        assert!(
            e.contains("is not set") && e.contains("openssl rand -hex 32"),
            "{e}"
        );
        let e = sidecar_nonce(Some("short".into())).unwrap_err();
        assert!(e.contains("too weak"), "{e}");
        let e = sidecar_nonce(Some("a".repeat(64))).unwrap_err();
        assert!(e.contains("too weak"), "{e}");
        let ok = sidecar_nonce(Some(format!(" {} ", "0123456789abcdef".repeat(4)))).unwrap();
        assert_eq!(ok.expose().len(), 64);
    }
}
