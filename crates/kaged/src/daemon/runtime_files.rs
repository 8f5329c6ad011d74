//! The files the daemon writes for others: the default `config.toml` on a first per-user
//! launch (step 3), and in the runtime directory the auth cookie (step 8) and `daemon.json`
//! (step 8, once the run is recorded), removed again at stop.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use kaged_auth::Secret;
use kaged_config::Settings;

use crate::runtime::{self, AUTH_COOKIE_FILE, DISCOVERY_FILE, Discovery};

/// The runtime files this daemon wrote: removed when it stops, however `serve` returns.
pub(super) struct RuntimeFiles(Vec<PathBuf>);

impl RuntimeFiles {
    /// Write the nonce to `RUNTIME/auth-cookie` (0600, atomic rename): the CLI's credential.
    /// A launch page `kaged auth open` may leave there goes at stop too.
    pub(super) fn write_auth_cookie(runtime_dir: &Path, nonce: &Secret) -> Result<RuntimeFiles> {
        let cookie_path =
            runtime::write_private_file(runtime_dir, AUTH_COOKIE_FILE, nonce.expose())?;
        Ok(RuntimeFiles(vec![
            cookie_path,
            runtime_dir.join(runtime::LAUNCH_PAGE_FILE),
        ]))
    }

    /// Write `RUNTIME/daemon.json`, by which the CLI finds this daemon.
    pub(super) fn write_discovery(
        &mut self,
        runtime_dir: &Path,
        discovery: &Discovery,
    ) -> Result<()> {
        self.0.push(runtime::write_private_file(
            runtime_dir,
            DISCOVERY_FILE,
            &serde_json::to_string(discovery)?,
        )?);
        Ok(())
    }
}

impl Drop for RuntimeFiles {
    fn drop(&mut self) {
        for p in &self.0 {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// First per-user launch: the default configuration, every key documented.
pub(super) fn write_first_config(settings: &Settings, text: &str) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    let path = &settings.config_file;
    if let Some(dir) = path.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
    }
    // create_new: never overwrite a file the operator wrote in the meantime.
    let mut file = match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("cannot write {}", path.display())),
    };
    file.write_all(text.as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))?;
    tracing::info!(path = %path.display(), "first launch: wrote the default configuration");
    Ok(())
}
