//! `kaged auth nonce` and `kaged auth open`: the CLI's own credential, and launch URLs minted
//! from it (the daemon verifies them).

use anyhow::anyhow;
use kaged_config::DeploymentMode;

use super::discovery::find_daemon;
use super::status::duration;
use super::transport::{Target, call};
use crate::daemon::launch_url;
use crate::{Failure, runtime};

pub fn nonce(mode_flag: Option<DeploymentMode>) -> Result<(), Failure> {
    let (_, daemon) = find_daemon(mode_flag)?;
    println!("{}", daemon.nonce.expose());
    Ok(())
}

pub async fn open(
    mode_flag: Option<DeploymentMode>,
    no_browser: bool,
    ttl: u64,
) -> Result<(), Failure> {
    let (decision, daemon) = find_daemon(mode_flag)?;
    let url = launch_url(&daemon.discovery.url, &daemon.nonce, ttl).map_err(Failure::Runtime)?;
    // Prove the daemon answers, and signs browsers in with launch URLs, before handing out a
    // URL that would not work.
    let status = call(
        &Target::Local(daemon),
        reqwest::Method::GET,
        "/api/v1/status",
        None,
    )
    .await?;
    if status["auth"] != "launch_url" {
        return Err(Failure::Runtime(anyhow!(
            "this kaged does not use launch URLs (auth: {}); sign in through its sidecar's public URL instead",
            status["auth"].as_str().unwrap_or("?")
        )));
    }
    println!("{url}");
    if no_browser {
        return Ok(());
    }
    // The browser gets a 0600 file that redirects, never the token on its command line (which
    // every local user can read in /proc).
    let page = format!(
        "<!doctype html><meta charset=\"utf-8\"><meta http-equiv=\"refresh\" content=\"0;url={url}\">\
         <title>kaged</title><p><a href=\"{url}\">Open kaged</a></p>\n"
    );
    let page_path = runtime::write_private_file(
        &decision.paths.runtime_dir,
        runtime::LAUNCH_PAGE_FILE,
        &page,
    )
    .map_err(Failure::Runtime)?;
    match open_browser(&page_path.display().to_string()) {
        Ok(opener) => eprintln!(
            "kaged: opened the launch URL with {opener} (valid once, for {})",
            duration(ttl)
        ),
        Err(why) => {
            eprintln!("kaged: could not open a browser ({why}); open the URL above yourself")
        }
    }
    Ok(())
}

fn open_browser(target: &str) -> Result<&'static str, String> {
    let graphical = ["DISPLAY", "WAYLAND_DISPLAY"]
        .iter()
        .any(|v| std::env::var_os(v).is_some_and(|x| !x.is_empty()));
    if !graphical && cfg!(target_os = "linux") {
        return Err("no graphical session: DISPLAY and WAYLAND_DISPLAY are unset".into());
    }
    let opener = if cfg!(target_os = "macos") {
        "open"
    } else {
        "xdg-open"
    };
    std::process::Command::new(opener)
        .arg(target)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .map(|_| opener)
        .map_err(|e| format!("{opener}: {e}"))
}
