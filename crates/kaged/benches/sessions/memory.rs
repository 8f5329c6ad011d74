//! The memory part: daemon RSS idle, after runs ended, per idle session, and under a flood
//! with a stalled viewer.

use super::*;

/// Daemon RSS idle, after runs ended, per idle session, and during and after a flood that a
/// stalled viewer does not read; printed as its own table (targets from issue 12).
pub(crate) async fn memory_part(home: &Path, roots: &[PathBuf]) {
    let d = Daemon::start_with(home, &[("RUST_BACKTRACE", "1")]);
    for root in roots {
        d.post(
            "/api/v1/projects/load",
            json!({"path": root.display().to_string()}),
            &d.nonce_header(),
        )
        .await;
    }
    let settle = || tokio::time::sleep(Duration::from_millis(1500));
    settle().await;
    let idle = rss_mib(d.pid());
    eprintln!("memory: {MEMORY_ENDED_RUNS} short runs ...");
    for batch in 0..MEMORY_ENDED_RUNS / PROJECTS {
        let mut ids = Vec::new();
        for p in 0..PROJECTS {
            let body = json!({"kind": "task", "name": "short"});
            ids.push(
                d.create(&format!("bench{p}"), body, &d.nonce_header())
                    .await,
            );
        }
        for id in &ids {
            d.wait_ended(id).await;
        }
        let _ = batch;
    }
    settle().await;
    let ended = rss_mib(d.pid());
    eprintln!("memory: {MEMORY_IDLE_SESSIONS} idle sessions ...");
    let mut idle_ids = Vec::new();
    for s in 0..MEMORY_IDLE_SESSIONS {
        let body = json!({"kind": "task", "name": "idle"});
        idle_ids.push(
            d.create(&format!("bench{}", s % PROJECTS), body, &d.nonce_header())
                .await,
        );
    }
    settle().await;
    let with_idle = rss_mib(d.pid());
    for id in &idle_ids {
        d.kill(id).await;
    }
    for id in &idle_ids {
        d.wait_ended(id).await;
    }
    eprintln!("memory: a {MEMORY_FLOOD_BYTES}-byte flood with a stalled viewer ...");
    let id = d
        .create(
            "bench0",
            json!({"kind": "task", "name": "flood150"}),
            &d.nonce_header(),
        )
        .await;
    // Attached and never read again: its socket's buffers fill, then it stalls.
    let stalled = d.viewer(&id).await;
    let mut peak = 0.0f64;
    let started = Instant::now();
    loop {
        peak = peak.max(rss_mib(d.pid()).unwrap_or(0.0));
        if matches!(d.state(&id).await.as_str(), "exited" | "failed" | "killed") {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "the flood never ended"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let flood_secs = started.elapsed().as_secs_f64();
    settle().await;
    let after_flood_stalled = rss_mib(d.pid());
    drop(stalled);
    settle().await;
    let after_flood = rss_mib(d.pid());
    let panics = d
        .stderr
        .lock()
        .unwrap()
        .iter()
        .filter(|l| l.contains("panicked"))
        .count();
    let per_idle = match (with_idle, ended) {
        (Some(w), Some(e)) => Some((w - e) / MEMORY_IDLE_SESSIONS as f64),
        _ => None,
    };
    println!();
    println!("memory (daemon with RUST_BACKTRACE=1)          RSS MiB  target");
    println!(
        "idle, projects loaded                          {:>7}  <= 20",
        fmt(idle, 1)
    );
    println!(
        "after {MEMORY_ENDED_RUNS} runs ended                            {:>7}  <= 20",
        fmt(ended, 1)
    );
    println!(
        "with {MEMORY_IDLE_SESSIONS} idle sessions                          {:>7}  ({} per session, <= 0.5)",
        fmt(with_idle, 1),
        fmt(per_idle, 3)
    );
    println!(
        "150 MB flood, stalled viewer: peak             {:>7}  (report; flood {flood_secs:.1} s)",
        fmt(Some(peak), 1)
    );
    println!(
        "  after the flood, viewer still attached       {:>7}",
        fmt(after_flood_stalled, 1)
    );
    println!(
        "  after the viewer left                        {:>7}  <= 20",
        fmt(after_flood, 1)
    );
    println!("panics in the daemon's log: {panics}");
}
