//! What the bench measures: throughput and echo figures, wire overhead, and a process's
//! RSS and CPU time from `/proc`.

use super::*;

#[derive(Clone, Copy)]
pub(crate) struct Flood {
    /// Output bytes received.
    pub(crate) bytes: u64,
    /// From the first chunk of the flood to the end (EOF, exit frame, disconnect).
    pub(crate) secs: f64,
    /// WebSocket bytes on the wire (payloads + frame headers) and the terminal output bytes
    /// they carried, when there is a WebSocket.
    pub(crate) wire: Option<(u64, u64)>,
}

impl Flood {
    pub(crate) fn best(runs: impl IntoIterator<Item = Flood>) -> Option<Flood> {
        runs.into_iter()
            .max_by(|a, b| a.mbps().total_cmp(&b.mbps()))
    }
    pub(crate) fn mbps(&self) -> f64 {
        self.bytes as f64 / self.secs / 1e6
    }
    pub(crate) fn overhead_pct(&self) -> Option<f64> {
        self.wire
            .map(|(wire, out)| (wire as f64 - out as f64) / out as f64 * 100.0)
    }
}

#[derive(Clone, Copy)]
pub(crate) struct Echo {
    pub(crate) p50: f64,
    pub(crate) p99: f64,
}

pub(crate) fn echo_of(mut samples: Vec<Duration>) -> Echo {
    samples.sort();
    let at = |q: f64| {
        let i = ((samples.len() as f64 - 1.0) * q).round() as usize;
        samples[i].as_secs_f64() * 1000.0
    };
    Echo {
        p50: at(0.50),
        p99: at(0.99),
    }
}

#[derive(Default)]
pub(crate) struct Results {
    pub(crate) raw_flood: Option<Flood>,
    pub(crate) cage_flood: Option<Flood>,
    pub(crate) kaged_flood: Option<Flood>,
    pub(crate) jupyter_flood: Option<Flood>,
    pub(crate) raw_echo: Option<Echo>,
    pub(crate) cage_echo: Option<Echo>,
    pub(crate) kaged_echo: Option<Echo>,
    pub(crate) jupyter_echo: Option<Echo>,
    pub(crate) rss_idle_mib: Option<f64>,
    pub(crate) rss_busy_mib: Option<f64>,
    pub(crate) cpu_busy_pct: Option<f64>,
    pub(crate) jupyter_rss_idle_mib: Option<f64>,
    pub(crate) notes: Vec<String>,
}

/// RFC 6455 header of an unmasked (server → client) frame with `len` payload bytes.
pub(crate) fn ws_header(len: usize) -> u64 {
    match len {
        0..=125 => 2,
        126..=65535 => 4,
        _ => 10,
    }
}

pub(crate) fn wire_len(m: &Message) -> u64 {
    let len = match m {
        Message::Text(t) => t.len(),
        Message::Binary(b) | Message::Ping(b) | Message::Pong(b) => b.len(),
        Message::Close(c) => c.as_ref().map_or(0, |c| 2 + c.reason.len()),
        Message::Frame(f) => f.payload().len(),
    };
    len as u64 + ws_header(len)
}

pub(crate) fn proc_status_kib(pid: u32, key: &str) -> Option<f64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = text.lines().find(|l| l.starts_with(key))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

pub(crate) fn rss_mib(pid: u32) -> Option<f64> {
    proc_status_kib(pid, "VmRSS:").map(|k| k / 1024.0)
}

/// utime + stime of `pid` in clock ticks.
pub(crate) fn cpu_ticks(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = text.rsplit_once(')')?.1.split_whitespace().collect();
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

pub(crate) fn clock_ticks_per_sec() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}
