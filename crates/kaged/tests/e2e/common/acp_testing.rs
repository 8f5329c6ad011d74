//! The standalone `crates/kaged-acp-testing` workspace (the scripted ACP agent and the recording
//! ACP client, built with the official `agent-client-protocol` crate), built once per test
//! process. It is not a member of kaged's workspace: the official crate turns on serde_json's
//! `preserve_order`, which must not reach kaged's own builds through feature unification.

use std::io::Write;
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

/// The paths of the built binaries.
#[derive(Debug, Clone)]
pub struct AcpTesting {
    /// `kaged-acp-scripted SCRIPT.json`: an ACP agent doing what a JSON script says (the
    /// script format is in the crate's lib docs).
    pub scripted: PathBuf,
    /// `kaged-acp-client --permission OPTION_ID|cancel -- COMMAND ARGS…`: an ACP client that
    /// prompts once per stdin line and prints a JSON report.
    pub client: PathBuf,
}

/// Builds the crate (once per process; a no-op when up to date) into
/// `<kaged's target dir>/acp-testing` and returns the binaries' paths. Panics with cargo's
/// output when the build fails.
pub fn acp_testing() -> AcpTesting {
    static BUILT: OnceLock<Result<AcpTesting, String>> = OnceLock::new();
    match BUILT.get_or_init(build) {
        Ok(built) => built.clone(),
        Err(e) => panic!("{e}"),
    }
}

fn build() -> Result<AcpTesting, String> {
    let manifest = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../kaged-acp-testing/Cargo.toml"
    );
    // CARGO_BIN_EXE_kaged is `<target dir>/<profile>/kaged`.
    let kaged = super::kaged_bin();
    let target = kaged
        .parent()
        .and_then(|p| p.parent())
        .ok_or_else(|| format!("no target directory above {}", kaged.display()))?
        .join("acp-testing");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    progress(&format!(
        "building crates/kaged-acp-testing into {} (the first time takes a minute)",
        target.display()
    ));
    let status = Command::new(cargo)
        .args(["build", "--manifest-path", manifest, "--locked", "--bins"])
        .arg("--target-dir")
        .arg(&target)
        .env_remove("CARGO_TARGET_DIR")
        .status()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    if !status.success() {
        return Err(format!(
            "cargo build --manifest-path {manifest} failed ({status}); its output is above"
        ));
    }
    progress("built");
    let bin = target.join("debug");
    Ok(AcpTesting {
        scripted: bin.join("kaged-acp-scripted"),
        client: bin.join("kaged-acp-client"),
    })
}

/// A progress line on the real stderr (not the test harness's captured `eprintln!`), so a long
/// first build is visible while it runs.
fn progress(line: &str) {
    let _ = writeln!(std::io::stderr(), "acp_testing: {line}");
}
