//! The Jupyter Server baseline (terminado terminals), installed into `target/bench-venv`.

use super::*;

pub(crate) struct Jupyter {
    pub(crate) child: Child,
    pub(crate) base: String,
    pub(crate) token: String,
    pub(crate) http: reqwest::Client,
}

impl Drop for Jupyter {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(5) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `target/bench-venv` with jupyter_server and terminado, installed when missing.
pub(crate) fn jupyter_venv() -> Result<PathBuf, String> {
    let venv = target_dir().join("bench-venv");
    let server = venv.join("bin/jupyter-server");
    let ready = || {
        Command::new(venv.join("bin/python"))
            .args(["-c", "import jupyter_server, terminado"])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if server.exists() && ready() {
        return Ok(server);
    }
    eprintln!(
        "installing jupyter_server and terminado into {} ...",
        venv.display()
    );
    let run = |cmd: &mut Command| -> Result<(), String> {
        let out = cmd.output().map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(())
        } else {
            let err = String::from_utf8_lossy(&out.stderr);
            Err(err.lines().rev().take(3).collect::<Vec<_>>().join(" | "))
        }
    };
    run(Command::new("python3").args(["-m", "venv"]).arg(&venv))
        .map_err(|e| format!("python3 -m venv failed: {e}"))?;
    run(Command::new(venv.join("bin/pip")).args([
        "install",
        "-q",
        "--disable-pip-version-check",
        "jupyter_server",
        "terminado",
    ]))
    .map_err(|e| format!("pip install failed: {e}"))?;
    if ready() {
        Ok(server)
    } else {
        Err("jupyter_server or terminado does not import after installation".into())
    }
}

impl Jupyter {
    pub(crate) async fn start(server: &Path, dir: &Path, root: &Path) -> Result<Jupyter, String> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| e.to_string())?
            .port();
        let mut token = [0u8; 16];
        getrandom::fill(&mut token).map_err(|e| e.to_string())?;
        let token = hex::encode(token);
        let config = dir.join("jupyter_server_config.json");
        std::fs::write(
            &config,
            json!({"ServerApp": {"terminado_settings": {"shell_command": ["/bin/sh"]}}})
                .to_string(),
        )
        .map_err(|e| e.to_string())?;
        let log = std::fs::File::create(dir.join("jupyter.log")).map_err(|e| e.to_string())?;
        let child = Command::new(server)
            .arg(format!("--config={}", config.display()))
            .args(["--no-browser", "--ip=127.0.0.1", "--allow-root"])
            .arg(format!("--port={port}"))
            .arg(format!("--ServerApp.token={token}"))
            .arg(format!("--ServerApp.root_dir={}", root.display()))
            .env("JUPYTER_CONFIG_DIR", dir.join("config"))
            .env("JUPYTER_DATA_DIR", dir.join("data"))
            .env("JUPYTER_RUNTIME_DIR", dir.join("runtime"))
            .env("SHELL", "/bin/sh")
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log)
            .spawn()
            .map_err(|e| format!("cannot start jupyter server: {e}"))?;
        let j = Jupyter {
            child,
            base: format!("127.0.0.1:{port}"),
            token,
            http: reqwest::Client::new(),
        };
        let start = Instant::now();
        loop {
            let ok = j
                .http
                .get(format!("http://{}/api/status", j.base))
                .header("authorization", format!("token {}", j.token))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if ok {
                return Ok(j);
            }
            if start.elapsed() > Duration::from_secs(40) {
                let log = std::fs::read_to_string(dir.join("jupyter.log")).unwrap_or_default();
                return Err(format!(
                    "jupyter server not ready after 40 s: {}",
                    log.lines().rev().take(3).collect::<Vec<_>>().join(" | ")
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub(crate) async fn terminal(&self) -> Result<Ws, String> {
        let r = self
            .http
            .post(format!("http://{}/api/terminals", self.base))
            .header("authorization", format!("token {}", self.token))
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let v: Value = r.json().await.map_err(|e| e.to_string())?;
        let name = v["name"]
            .as_str()
            .ok_or_else(|| format!("POST /api/terminals answered {v}"))?;
        Ok(ws_connect(
            &format!("ws://{}/terminals/websocket/{name}", self.base),
            &[("authorization", format!("token {}", self.token))],
        )
        .await)
    }

    pub(crate) async fn send(ws: &mut Ws, text: &str) {
        ws.send(Message::Text(json!(["stdin", text]).to_string().into()))
            .await
            .unwrap();
    }

    pub(crate) async fn flood(&self, root: &Path) -> Result<Flood, String> {
        let mut ws = self.terminal().await?;
        let cmd = format!(
            "exec sh {} {JUPYTER_FLOOD_BYTES}\r",
            root.join("flood.sh").display()
        );
        Self::send(&mut ws, &cmd).await;
        let (mut first, mut last, mut bytes, mut wire) = (None, Instant::now(), 0u64, 0u64);
        while let Some(Ok(m)) = ws.next().await {
            let Message::Text(t) = &m else {
                if matches!(m, Message::Close(_)) {
                    last = Instant::now();
                    break;
                }
                continue;
            };
            let v: Value = serde_json::from_str(t).unwrap_or(Value::Null);
            match v[0].as_str() {
                Some("stdout") => {
                    let data = v[1].as_str().unwrap_or_default();
                    if first.is_none() && data.contains("xxxx") {
                        first = Some(Instant::now());
                    }
                    if first.is_some() {
                        bytes += data.len() as u64;
                        wire += wire_len(&m);
                    }
                }
                Some("disconnect") => {
                    last = Instant::now();
                    break;
                }
                _ => {}
            }
        }
        if bytes == 0 {
            return Err("the jupyter terminal printed no flood".into());
        }
        Ok(Flood {
            bytes,
            secs: last
                .duration_since(first.unwrap_or(last))
                .as_secs_f64()
                .max(1e-9),
            wire: Some((wire, bytes)),
        })
    }

    pub(crate) async fn echo(&self, root: &Path) -> Result<Vec<Duration>, String> {
        let mut ws = self.terminal().await?;
        Self::send(
            &mut ws,
            &format!("exec sh {}\r", root.join("echo.sh").display()),
        )
        .await;
        let stdout = |m: &Message| -> Option<String> {
            let Message::Text(t) = m else { return None };
            let v: Value = serde_json::from_str(t).ok()?;
            (v[0] == "stdout").then(|| v[1].as_str().unwrap_or_default().to_string())
        };
        let mut seen = String::new();
        while !seen.contains("READY") {
            let m = ws
                .next()
                .await
                .ok_or("terminal closed")?
                .map_err(|e| e.to_string())?;
            if let Some(d) = stdout(&m) {
                seen.push_str(&d);
            }
        }
        let mut samples = Vec::with_capacity(ECHO_SAMPLES);
        for i in 0..ECHO_WARMUP + ECHO_SAMPLES {
            let c = char::from(b'a' + (i % 26) as u8);
            let t = Instant::now();
            Self::send(&mut ws, &c.to_string()).await;
            loop {
                let m = ws
                    .next()
                    .await
                    .ok_or("terminal closed")?
                    .map_err(|e| e.to_string())?;
                if stdout(&m).is_some_and(|d| d.contains(c)) {
                    break;
                }
            }
            if i >= ECHO_WARMUP {
                samples.push(t.elapsed());
            }
        }
        Ok(samples)
    }
}

pub(crate) async fn jupyter_part(tmp: &Path, root: &Path, r: &mut Results) -> Result<(), String> {
    if std::env::var_os("KAGED_BENCH_NO_JUPYTER").is_some() {
        return Err("KAGED_BENCH_NO_JUPYTER is set".into());
    }
    let server = tokio::task::spawn_blocking(jupyter_venv)
        .await
        .map_err(|e| e.to_string())??;
    let dir = tmp.join("jupyter");
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let j = Jupyter::start(&server, &dir, root).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    r.jupyter_rss_idle_mib = rss_mib(j.child.id());
    r.jupyter_flood = Some(j.flood(root).await?);
    r.jupyter_echo = Some(echo_of(j.echo(root).await?));
    Ok(())
}

/// `target/` (the bench runs as target/release/deps/sessions-HASH).
pub(crate) fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("own path");
    exe.ancestors()
        .nth(3)
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("target"))
}
