//! The printed table: each figure next to its baselines and targets.

use super::*;

pub(crate) fn fmt(v: Option<f64>, digits: usize) -> String {
    v.map_or("-".into(), |v| format!("{v:.digits$}"))
}

pub(crate) fn verdict(v: Option<f64>, pass: impl Fn(f64) -> bool) -> &'static str {
    match v {
        Some(v) if pass(v) => "pass",
        Some(_) => "FAIL",
        None => "-",
    }
}

pub(crate) fn print_table(r: &Results) {
    let mbps = |f: Option<Flood>| f.map(|f| f.mbps());
    let ratio = match (mbps(r.kaged_flood), mbps(r.raw_flood)) {
        (Some(k), Some(raw)) => Some(k / raw * 100.0),
        _ => None,
    };
    let overhead = r.kaged_flood.and_then(|f| f.overhead_pct());
    let p = |e: Option<Echo>, f: fn(&Echo) -> f64| e.as_ref().map(f);
    let echo_ratio = |f: fn(&Echo) -> f64| match (p(r.kaged_echo, f), p(r.raw_echo, f)) {
        (Some(k), Some(raw)) => Some(k / raw),
        _ => None,
    };
    let rows: Vec<[String; 8]> = vec![
        [
            "output throughput (MB/s)".into(),
            fmt(mbps(r.raw_flood), 0),
            fmt(mbps(r.cage_flood), 0),
            fmt(mbps(r.kaged_flood), 0),
            fmt(mbps(r.jupyter_flood), 0),
            ratio.map_or("-".into(), |v| format!("{v:.0}% of raw")),
            ">= 95% of raw".into(),
            verdict(ratio, |v| v >= 95.0).into(),
        ],
        [
            "wire overhead (%)".into(),
            "-".into(),
            "-".into(),
            fmt(overhead, 3),
            fmt(r.jupyter_flood.and_then(|f| f.overhead_pct()), 1),
            "-".into(),
            "<= 2%".into(),
            verdict(overhead, |v| v <= 2.0).into(),
        ],
        [
            "echo p50 (ms)".into(),
            fmt(p(r.raw_echo, |e| e.p50), 3),
            fmt(p(r.cage_echo, |e| e.p50), 3),
            fmt(p(r.kaged_echo, |e| e.p50), 3),
            fmt(p(r.jupyter_echo, |e| e.p50), 3),
            echo_ratio(|e| e.p50).map_or("-".into(), |v| format!("{v:.1}x raw")),
            "<= 0.5 ms".into(),
            verdict(p(r.kaged_echo, |e| e.p50), |v| v <= 0.5).into(),
        ],
        [
            "echo p99 (ms)".into(),
            fmt(p(r.raw_echo, |e| e.p99), 3),
            fmt(p(r.cage_echo, |e| e.p99), 3),
            fmt(p(r.kaged_echo, |e| e.p99), 3),
            fmt(p(r.jupyter_echo, |e| e.p99), 3),
            echo_ratio(|e| e.p99).map_or("-".into(), |v| format!("{v:.1}x raw")),
            "<= 1.5 ms".into(),
            verdict(p(r.kaged_echo, |e| e.p99), |v| v <= 1.5).into(),
        ],
        [
            "daemon RSS idle (MiB)".into(),
            "-".into(),
            "-".into(),
            fmt(r.rss_idle_mib, 1),
            fmt(r.jupyter_rss_idle_mib, 1),
            "-".into(),
            "< 20 MiB".into(),
            verdict(r.rss_idle_mib, |v| v < 20.0).into(),
        ],
        [
            format!("daemon RSS, {SESSIONS} sessions+viewers (MiB)"),
            "-".into(),
            "-".into(),
            fmt(r.rss_busy_mib, 1),
            "-".into(),
            "-".into(),
            "< 150 MiB".into(),
            verdict(r.rss_busy_mib, |v| v < 150.0).into(),
        ],
        [
            format!(
                "daemon CPU, {SESSIONS} sessions, {}s (% of a core)",
                CPU_WINDOW.as_secs()
            ),
            "-".into(),
            "-".into(),
            fmt(r.cpu_busy_pct, 1),
            "-".into(),
            "-".into(),
            "(report)".into(),
            "-".into(),
        ],
    ];
    let header = [
        "metric", "raw PTY", "raw+cage", "kaged", "jupyter", "ratio", "target", "result",
    ];
    let mut widths = header.map(str::len);
    for row in &rows {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let text: Vec<String> = cells
            .iter()
            .zip(widths)
            .enumerate()
            .map(|(i, (c, w))| {
                if i == 0 {
                    format!("{c:<w$}")
                } else {
                    format!("{c:>w$}")
                }
            })
            .collect();
        println!("{}", text.join("  "));
    };
    println!();
    line(header.to_vec());
    for row in &rows {
        line(row.iter().map(String::as_str).collect());
    }
    println!();
    if let (Some(k), Some(raw)) = (r.kaged_flood, r.raw_flood) {
        println!(
            "flood: {} bytes (best of {FLOOD_RUNS}); raw {:.2} s, kaged {:.2} s{}",
            k.bytes,
            raw.secs,
            k.secs,
            r.cage_flood
                .map_or(String::new(), |c| format!(", raw+cage {:.2} s", c.secs))
        );
    }
    if let Some(j) = r.jupyter_flood {
        println!("jupyter flood: {} bytes in {:.2} s", j.bytes, j.secs);
    }
    for n in &r.notes {
        println!("{n}");
    }
}
