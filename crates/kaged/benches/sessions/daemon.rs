//! The daemon under measurement, started by the shared test harness (`common::Daemon`), and
//! the workloads run through it: a flood, keystroke echo, 100 sessions with a viewer each.

use super::*;

pub(crate) async fn ws_connect(url: &str, headers: &[(&'static str, String)]) -> Ws {
    let mut request = url.into_client_request().unwrap();
    for (k, v) in headers {
        request.headers_mut().insert(*k, v.parse().unwrap());
    }
    let config = WebSocketConfig::default()
        .max_message_size(Some(256 << 20))
        .max_frame_size(Some(256 << 20));
    let (ws, _) = tokio_tungstenite::connect_async_with_config(request, Some(config), true)
        .await
        .unwrap_or_else(|e| panic!("connect {url}: {e}"));
    ws
}

/// Output data of a kaged binary frame (kind, offset, data), if it is output or a snapshot.
pub(crate) fn kaged_output(m: &Message) -> Option<&[u8]> {
    match m {
        Message::Binary(b) if b.len() >= 9 && matches!(b[0], 1 | 2) => Some(&b[9..]),
        _ => None,
    }
}

pub(crate) fn is_kaged_exit(m: &Message) -> bool {
    match m {
        Message::Text(t) => serde_json::from_str::<Value>(t).is_ok_and(|v| v["type"] == "exit"),
        Message::Close(_) => true,
        _ => false,
    }
}

/// The daemon of the test harness plus what the bench needs at hand: its nonce (read once),
/// one HTTP client and the WebSocket base URL. Dropping it stops the daemon gracefully.
pub(crate) struct Daemon {
    daemon: common::Daemon,
    pub(crate) base: String,
    pub(crate) ws_base: String,
    pub(crate) nonce: String,
    pub(crate) http: reqwest::Client,
    pub(crate) stderr: Arc<Mutex<Vec<String>>>,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // SIGTERM first, so the daemon stops its runs; the harness's own drop kills what is left.
        self.daemon.signal("TERM");
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(10) {
            if let Ok(Some(_)) = self.daemon.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Daemon {
    pub(crate) fn start(home: &Path) -> Daemon {
        Daemon::start_with(home, &[])
    }

    pub(crate) fn start_with(home: &Path, env: &[(&str, &str)]) -> Daemon {
        let daemon = common::Daemon::start_with(home, &["--bind", "127.0.0.1:0"], env);
        Daemon {
            ws_base: daemon.base.replacen("http://", "ws://", 1),
            base: daemon.base.clone(),
            nonce: daemon.nonce(),
            http: reqwest::Client::new(),
            stderr: Arc::clone(&daemon.stderr),
            daemon,
        }
    }

    pub(crate) fn pid(&self) -> u32 {
        self.daemon.child.id()
    }

    pub(crate) fn nonce_header(&self) -> (&'static str, String) {
        ("x-kaged-auth-nonce", self.nonce.clone())
    }

    pub(crate) async fn post(
        &self,
        path: &str,
        body: Value,
        auth: &(&'static str, String),
    ) -> Value {
        let r = self
            .http
            .post(format!("{}{path}", self.base))
            .header(auth.0, &auth.1)
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = r.status();
        let v: Value = r.json().await.unwrap_or(Value::Null);
        assert!(status.is_success(), "POST {path}: {status} {v}");
        v
    }

    pub(crate) async fn create(
        &self,
        project: &str,
        body: Value,
        auth: &(&'static str, String),
    ) -> String {
        let v = self
            .post(&format!("/api/v1/projects/{project}/sessions"), body, auth)
            .await;
        v["session"]["id"].as_str().unwrap().to_string()
    }

    pub(crate) async fn state(&self, id: &str) -> String {
        let v: Value = self
            .http
            .get(format!("{}/api/v1/sessions/{id}", self.base))
            .header("x-kaged-auth-nonce", &self.nonce)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        v["session"]["state"].as_str().unwrap_or("?").to_string()
    }

    pub(crate) async fn wait_ended(&self, id: &str) {
        let deadline = Instant::now() + Duration::from_secs(120);
        while !matches!(
            self.state(id).await.as_str(),
            "exited" | "failed" | "killed"
        ) {
            assert!(Instant::now() < deadline, "session {id} never ended");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub(crate) async fn kill(&self, id: &str) {
        let _ = self
            .http
            .post(format!("{}/api/v1/sessions/{id}/kill", self.base))
            .header("x-kaged-auth-nonce", &self.nonce)
            .send()
            .await;
    }

    /// A viewer from offset 0.
    pub(crate) async fn viewer(&self, id: &str) -> Ws {
        let mut ws = ws_connect(
            &format!("{}/api/v1/sessions/{id}/pty", self.ws_base),
            &[self.nonce_header()],
        )
        .await;
        ws.send(Message::Text(
            json!({"type": "resume", "offset": 0}).to_string().into(),
        ))
        .await
        .unwrap();
        ws
    }

    pub(crate) async fn flood(&self, project: &str) -> Flood {
        let id = self
            .create(
                project,
                json!({"kind": "task", "name": "flood"}),
                &self.nonce_header(),
            )
            .await;
        let mut ws = self.viewer(&id).await;
        let (mut first, mut last, mut bytes, mut all, mut wire) =
            (None, Instant::now(), 0u64, 0u64, 0u64);
        while let Some(Ok(m)) = ws.next().await {
            wire += wire_len(&m);
            if let Some(data) = kaged_output(&m) {
                all += data.len() as u64;
                if first.is_none() && data.windows(4).any(|w| w == b"xxxx") {
                    first = Some(Instant::now());
                }
                if first.is_some() {
                    bytes += data.len() as u64;
                }
            } else if is_kaged_exit(&m) {
                last = Instant::now();
                break;
            }
        }
        let secs = last
            .duration_since(first.unwrap_or(last))
            .as_secs_f64()
            .max(1e-9);
        // Every frame of the connection (hello, state, exit too) against all output bytes.
        Flood {
            bytes,
            secs,
            wire: Some((wire, all)),
        }
    }

    pub(crate) async fn echo(&self, project: &str) -> Vec<Duration> {
        let id = self
            .create(project, json!({"kind": "terminal"}), &self.nonce_header())
            .await;
        let mut ws = self.viewer(&id).await;
        let mut seen = Vec::new();
        while !seen.windows(5).any(|w| w == b"READY") {
            let m = ws.next().await.expect("viewer open").unwrap();
            assert!(!is_kaged_exit(&m), "the echo terminal ended early");
            if let Some(d) = kaged_output(&m) {
                seen.extend_from_slice(d);
            }
        }
        let mut samples = Vec::with_capacity(ECHO_SAMPLES);
        for i in 0..ECHO_WARMUP + ECHO_SAMPLES {
            let b = b'a' + (i % 26) as u8;
            let t = Instant::now();
            ws.send(Message::Binary(vec![b].into())).await.unwrap();
            loop {
                let m = ws.next().await.expect("viewer open").unwrap();
                if kaged_output(&m).is_some_and(|d| d.contains(&b)) {
                    break;
                }
                assert!(!is_kaged_exit(&m), "the echo terminal ended early");
            }
            if i >= ECHO_WARMUP {
                samples.push(t.elapsed());
            }
        }
        self.kill(&id).await;
        samples
    }

    /// 100 ticking sessions with one viewer each: daemon RSS and CPU.
    pub(crate) async fn many(&self, r: &mut Results) {
        let mut tokens = Vec::new();
        for i in 0..OPERATORS {
            let v = self
                .post(
                    "/api/v1/tokens",
                    json!({"actor": format!("bench-{i}"), "name": "sessions bench"}),
                    &self.nonce_header(),
                )
                .await;
            tokens.push((
                "authorization",
                format!("Bearer {}", v["plaintext"].as_str().unwrap()),
            ));
        }
        let mut ids = Vec::new();
        for s in 0..SESSIONS {
            let id = self
                .create(
                    &format!("bench{}", s % PROJECTS),
                    json!({"kind": "task", "name": "tick"}),
                    &tokens[s % OPERATORS],
                )
                .await;
            ids.push(id);
        }
        let received = Arc::new(AtomicU64::new(0));
        let attached = Arc::new(AtomicU64::new(0));
        let mut viewers = Vec::new();
        for id in &ids {
            let mut ws = self.viewer(id).await;
            let (received, attached) = (received.clone(), attached.clone());
            viewers.push(tokio::spawn(async move {
                attached.fetch_add(1, Ordering::Relaxed);
                while let Some(Ok(m)) = ws.next().await {
                    if let Some(d) = kaged_output(&m) {
                        received.fetch_add(d.len() as u64, Ordering::Relaxed);
                    } else if is_kaged_exit(&m) {
                        break;
                    }
                }
            }));
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        let threads = proc_status_kib(self.pid(), "Threads:").unwrap_or(0.0);
        r.rss_busy_mib = rss_mib(self.pid());
        let hz = clock_ticks_per_sec();
        let (t0, c0, b0) = (
            Instant::now(),
            cpu_ticks(self.pid()).unwrap_or(0),
            received.load(Ordering::Relaxed),
        );
        tokio::time::sleep(CPU_WINDOW).await;
        let (c1, b1) = (
            cpu_ticks(self.pid()).unwrap_or(0),
            received.load(Ordering::Relaxed),
        );
        let secs = t0.elapsed().as_secs_f64();
        r.cpu_busy_pct = Some((c1 - c0) as f64 / hz / secs * 100.0);
        // RSS again at the end of the window (the larger of the two is reported).
        if let (Some(a), Some(b)) = (r.rss_busy_mib, rss_mib(self.pid())) {
            r.rss_busy_mib = Some(a.max(b));
        }
        r.notes.push(format!(
            "100 sessions: {} viewers attached, {:.0} output bytes/s delivered to them, daemon threads {threads:.0}",
            attached.load(Ordering::Relaxed),
            (b1 - b0) as f64 / secs
        ));
        for id in &ids {
            self.kill(id).await;
        }
        let _ = tokio::time::timeout(Duration::from_secs(15), async {
            for v in viewers {
                let _ = v.await;
            }
        })
        .await;
    }
}
