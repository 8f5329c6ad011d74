//! Finding the `kaged-acp-scripted` binary from another crate's tests: `KAGED_ACP_SCRIPTED`
//! if set, else `cargo build --bin kaged-acp-scripted` in this crate's own workspace (a no-op
//! when it is up to date; honours `CARGO_TARGET_DIR`) and the path cargo reports.

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

/// The path of a built, up-to-date `kaged-acp-scripted`. It needs only the C library, like
/// kaged's own helper, so tests may copy it into a project or a cage's helper directory.
pub fn scripted_agent_binary() -> Result<PathBuf, String> {
    static FOUND: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    FOUND.get_or_init(locate).clone()
}

fn locate() -> Result<PathBuf, String> {
    if let Some(path) = std::env::var_os("KAGED_ACP_SCRIPTED") {
        return Ok(PathBuf::from(path));
    }
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let output = Command::new(cargo)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args([
            "build",
            "--bin",
            "kaged-acp-scripted",
            "--message-format=json-render-diagnostics",
        ])
        .output()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "cargo build of kaged-acp-scripted failed: {}",
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|v| v["reason"] == "compiler-artifact")
        .find_map(|v| v["executable"].as_str().map(PathBuf::from))
        .ok_or_else(|| "cargo reported no kaged-acp-scripted executable".to_string())
}
