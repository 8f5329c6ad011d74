//! Start-up step 5: the runtime directory made private and locked, the data directory made and
//! locked. Both locks are held for the daemon's life; nothing of storage is touched before.

use std::fs::File;
use std::path::Path;

use anyhow::{Context, Result, anyhow};
use kaged_config::ModeDecision;

use crate::runtime;

/// The daemon's two locks. `RUNTIME/daemon.lock` is the liveness test the CLI uses (PID reuse
/// cannot fool it) and keeps a second daemon out of this runtime directory; `HOME/kaged.lock`
/// keeps one out of the data directory (two modes' runtime directories can share it).
/// Released in field order: the data directory's first.
pub(super) struct Locks {
    _home: File,
    _runtime: File,
}

impl Locks {
    pub(super) fn take(decision: &ModeDecision, home: &Path, uid: u32) -> Result<Locks> {
        let runtime_dir = &decision.paths.runtime_dir;
        if decision.paths.runtime_dir_is_fallback {
            tracing::warn!(
                runtime = %runtime_dir.display(),
                "XDG_RUNTIME_DIR is not set; using a private fallback directory"
            );
        }
        runtime::ensure_private_dir(runtime_dir, uid)?;
        let Some(runtime_lock) = runtime::lock_runtime(runtime_dir)? else {
            let at = runtime::read_discovery(runtime_dir)
                .ok()
                .flatten()
                .map(|d| format!(" (pid {}) at {}", d.pid, d.url))
                .unwrap_or_default();
            return Err(anyhow!(
                "kaged is already running{at}; see `kaged status`, or stop it first"
            ));
        };
        runtime::ensure_data_dir(home)?;
        let home_lock = lock_home(home)?;
        Ok(Locks {
            _home: home_lock,
            _runtime: runtime_lock,
        })
    }
}

fn lock_home(home: &Path) -> Result<File> {
    let lock_path = home.join("kaged.lock");
    let home_lock = File::create(&lock_path)
        .with_context(|| format!("cannot create {}", lock_path.display()))?;
    match home_lock.try_lock() {
        Ok(()) => Ok(home_lock),
        Err(std::fs::TryLockError::WouldBlock) => Err(anyhow!(
            "another kaged is already using {} (lock {} is held); stop it or set another [daemon] home",
            home.display(),
            lock_path.display()
        )),
        Err(std::fs::TryLockError::Error(e)) => {
            Err(e).with_context(|| format!("cannot lock {}", lock_path.display()))
        }
    }
}
