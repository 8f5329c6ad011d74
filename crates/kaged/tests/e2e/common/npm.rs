//! Agent CLIs from the npm registry that the suite runs for real (Claude Code, its ACP
//! adapter, OpenCode): each installed at a pinned version, once, into a cache below [`base`]
//! that later runs reuse. When the registry cannot be reached the test that needs it is skipped
//! saying so loudly, unless `KAGED_NPM_REQUIRED=1` (scripts/test sets it): then it fails.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::Instant;

/// Claude Code (a wrapper package around a native binary, `bin/claude.exe`).
pub const CLAUDE_CODE: &str = "@anthropic-ai/claude-code@2.1.332";
/// Claude Code's ACP adapter (`claude-agent-acp`, a node script that starts the CLI).
pub const CLAUDE_AGENT_ACP: &str = "@agentclientprotocol/claude-agent-acp@0.101.0";

/// The older Claude Code ACP adapter (`claude-code-acp`, node, with its own copy of the CLI as
/// JavaScript); it has the client read and write files (`fs/*`).
pub const CLAUDE_CODE_ACP_ZED: &str = "@zed-industries/claude-code-acp@0.16.2";
/// OpenCode (a wrapper package around a native binary; `opencode acp` speaks ACP).
pub const OPENCODE: &str = "opencode-ai@1.18.33";

/// Where the operator's "home" of these tests lives: not below /tmp (the cage's own: a grant
/// there goes below the cage's home) and, wherever the checkout is (a 0700 home, /tmp), a place
/// the cage's user can traverse: /var/tmp, else the target directory.
pub fn base() -> PathBuf {
    let var_tmp = Path::new("/var/tmp");
    if var_tmp.is_dir() {
        var_tmp.to_path_buf()
    } else {
        PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
    }
}

/// A scratch directory `kaged-TAG-…` below [`base`], which the cage's user can traverse.
pub fn scratch(tag: &str) -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix(&format!("kaged-{tag}-"))
        .tempdir_in(base())
        .unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

/// An npm prefix with packages installed in it.
#[derive(Debug, Clone)]
pub struct NpmInstall {
    pub prefix: PathBuf,
}

impl NpmInstall {
    /// `PREFIX/node_modules`.
    pub fn modules(&self) -> PathBuf {
        self.prefix.join("node_modules")
    }

    /// `PREFIX/node_modules/.bin`, where the packages' programs are linked.
    pub fn bin_dir(&self) -> PathBuf {
        self.modules().join(".bin")
    }

    /// The program `name` in [`bin_dir`](Self::bin_dir).
    pub fn bin(&self, name: &str) -> PathBuf {
        self.bin_dir().join(name)
    }
}

/// Claude Code, pinned ([`CLAUDE_CODE`]); its native binary is `node_modules/.bin/claude`.
pub fn claude_code() -> Option<NpmInstall> {
    npm_install("claude-code", &[CLAUDE_CODE], false)
}

/// Claude Code's ACP adapter, pinned ([`CLAUDE_AGENT_ACP`]), without its optional packages
/// (the SDK's own 337 MB copy of the CLI: the tests point it at [`claude_code`]'s with
/// `CLAUDE_CODE_EXECUTABLE`).
pub fn claude_agent_acp() -> Option<NpmInstall> {
    npm_install("claude-agent-acp", &[CLAUDE_AGENT_ACP], true)
}

/// The older adapter, pinned ([`CLAUDE_CODE_ACP_ZED`]), without its optional packages (image
/// libraries).
pub fn claude_code_acp_zed() -> Option<NpmInstall> {
    npm_install("claude-code-acp-zed", &[CLAUDE_CODE_ACP_ZED], true)
}

/// OpenCode, pinned ([`OPENCODE`]); its native binary is `node_modules/.bin/opencode`.
pub fn opencode() -> Option<NpmInstall> {
    npm_install("opencode", &[OPENCODE], false)
}

/// `packages` (each `name@version`) installed in `base()/kaged-npm/NAME`, unless the last
/// install there was of exactly these. `None` (after a loud notice) only when the registry is
/// unreachable and `KAGED_NPM_REQUIRED` is not `1`; any other failure panics.
pub fn npm_install(name: &str, packages: &[&str], omit_optional: bool) -> Option<NpmInstall> {
    // One install at a time: tests sharing a package run as threads of one process.
    static INSTALLING: Mutex<()> = Mutex::new(());
    let _one = INSTALLING.lock().unwrap_or_else(|e| e.into_inner());
    let cache = base().join("kaged-npm");
    let prefix = cache.join(name);
    let done = prefix.join(".kaged-installed");
    let want = format!("{}\nomit-optional={omit_optional}\n", packages.join("\n"));
    let installed = NpmInstall {
        prefix: prefix.clone(),
    };
    if std::fs::read_to_string(&done).ok().as_deref() == Some(want.as_str()) {
        return Some(installed);
    }
    for tool in ["node", "npm"] {
        let found = Command::new(tool).arg("--version").output();
        assert!(
            found.as_ref().is_ok_and(|o| o.status.success()),
            "{tool} is missing: install Debian's nodejs and npm (scripts/test does): {found:?}"
        );
    }
    let ping = Command::new("timeout")
        .args(["60", "npm", "ping"])
        .output()
        .unwrap();
    if !ping.status.success() {
        let why = format!(
            "the npm registry is unreachable (`npm ping`: {}{}), so {} cannot be installed",
            text(&ping.stdout).trim(),
            text(&ping.stderr).trim(),
            packages.join(" ")
        );
        assert!(
            std::env::var("KAGED_NPM_REQUIRED").as_deref() != Ok("1"),
            "KAGED_NPM_REQUIRED=1 but {why}"
        );
        eprintln!("\n\n*** SKIPPED: {why}; this test did NOT run ***\n\n");
        return None;
    }
    if prefix.exists() {
        std::fs::remove_dir_all(&prefix).unwrap();
    }
    std::fs::create_dir_all(&prefix).unwrap();
    let started = Instant::now();
    let mut npm = Command::new("timeout");
    npm.args(["600", "npm", "install", "--no-audit", "--no-fund"]);
    if omit_optional {
        npm.arg("--omit=optional");
    }
    let install = npm
        .arg("--prefix")
        .arg(&prefix)
        .args(packages)
        .output()
        .unwrap();
    assert!(
        install.status.success(),
        "npm install {} failed with the registry reachable: {}{}",
        packages.join(" "),
        text(&install.stdout),
        text(&install.stderr)
    );
    eprintln!(
        "npm: installed {} into {} in {:.1} s",
        packages.join(" "),
        prefix.display(),
        started.elapsed().as_secs_f64()
    );
    // The cage's user (nobody, under a root suite) reads it.
    let chmod = Command::new("chmod")
        .args(["-R", "a+rX"])
        .arg(&cache)
        .status()
        .unwrap();
    assert!(chmod.success(), "chmod -R a+rX {}", cache.display());
    std::fs::write(&done, want).unwrap();
    Some(installed)
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}
