//! The loopback Anthropic-compatible Messages endpoint the real Claude Code runs against
//! (`anthropic_stream.py`, run with python3): a streamed text reply, or first a tool use; one
//! line per request it saw.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

/// The running endpoint: the child, its port, and its request log.
pub struct AnthropicStream {
    child: Child,
    pub port: u16,
    log: Receiver<String>,
    seen: Vec<String>,
}

impl Drop for AnthropicStream {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl AnthropicStream {
    /// Start it (the script is written into `dir`), answering `reply`; with `tool`
    /// (`{"name": ..., "input": ...}`), the first call that offers that tool gets the tool use.
    pub fn start(dir: &Path, reply: &str, tool: Option<&serde_json::Value>) -> AnthropicStream {
        let script = dir.join("anthropic_stream.py");
        std::fs::write(&script, include_str!("anthropic_stream.py")).unwrap();
        let mut command = Command::new("python3");
        command.arg(&script).arg("0").arg(reply);
        if let Some(tool) = tool {
            command.arg(tool.to_string());
        }
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("python3 runs the loopback stream");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line.trim().parse().expect("the stream prints its port");
        let (tx, log) = std::sync::mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        AnthropicStream {
            child,
            port,
            log,
            seen: Vec::new(),
        }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The `host:port` entry of a cage's network allowlist.
    pub fn allow_entry(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Every request line so far (`server: POST /v1/messages?beta=true stream=True key=…
    /// tools=N tool_result=BOOL is_error=BOOL`).
    pub fn requests(&mut self) -> Vec<String> {
        self.seen.extend(self.log.try_iter());
        self.seen.clone()
    }

    /// The request lines once one satisfies `done` (at most `limit`).
    pub fn wait_for(&mut self, limit: Duration, done: impl Fn(&str) -> bool) -> Vec<String> {
        let start = Instant::now();
        loop {
            let all = self.requests();
            if all.iter().any(|l| done(l)) {
                return all;
            }
            assert!(start.elapsed() < limit, "the stream never saw it: {all:#?}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}
