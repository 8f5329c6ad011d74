//! `kaged stop`: ask the local daemon to stop (as SIGTERM would: runs end, requests drain) and
//! wait until its process let go of the runtime directory's lock.

use std::time::{Duration, Instant};

use anyhow::anyhow;
use kaged_config::DeploymentMode;

use super::discovery::find_daemon;
use super::transport::{Target, call};
use crate::{Failure, runtime};

pub async fn stop(mode_flag: Option<DeploymentMode>, timeout_secs: u64) -> Result<(), Failure> {
    // Always the local daemon: stopping is the local operator's (KAGED_SERVER is not used).
    let (decision, daemon) = match find_daemon(mode_flag) {
        Err(Failure::NotRunning(_)) => {
            eprintln!("kaged: not running; nothing to stop");
            return Ok(());
        }
        found => found?,
    };
    let pid = daemon.discovery.pid;
    call(
        &Target::Local(daemon),
        reqwest::Method::POST,
        "/api/v1/daemon/stop",
        None,
    )
    .await?;
    eprintln!("kaged: stopping (pid {pid})…");
    let runtime_dir = &decision.paths.runtime_dir;
    let start = Instant::now();
    loop {
        match runtime::daemon_alive(runtime_dir) {
            Ok(false) => break,
            Ok(true) => {}
            Err(e) => {
                return Err(Failure::Runtime(anyhow!(
                    "cannot tell whether kaged (pid {pid}) stopped: {e}"
                )));
            }
        }
        if start.elapsed() >= Duration::from_secs(timeout_secs) {
            return Err(Failure::Runtime(anyhow!(
                "kaged (pid {pid}) is still stopping after {timeout_secs} s; see its log, or end it with `kill -TERM {pid}`"
            )));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!("kaged stopped (pid {pid})");
    Ok(())
}
