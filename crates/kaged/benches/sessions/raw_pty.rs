//! The raw-PTY baselines: the same command on a bare PTY, with or without `kaged cage run`.

use super::*;

pub(crate) struct RawPty {
    pub(crate) pty: pty_process::blocking::Pty,
    pub(crate) child: Child,
}

pub(crate) fn spawn_on_pty(argv: &[String], cwd: &Path) -> RawPty {
    let (pty, pts) = pty_process::blocking::open().expect("open a PTY");
    pty.resize(pty_process::Size::new(24, 80)).unwrap();
    let child = pty_process::blocking::Command::new(&argv[0])
        .args(&argv[1..])
        .current_dir(cwd)
        .env("TERM", "xterm-256color")
        .spawn(pts)
        .expect("spawn on the PTY");
    RawPty { pty, child }
}

/// Read a command's whole output from a PTY as fast as the kernel gives it.
pub(crate) fn flood_raw(argv: &[String], cwd: &Path) -> Flood {
    let mut run = spawn_on_pty(argv, cwd);
    let mut buf = vec![0u8; 64 * 1024];
    let (mut first, mut last, mut bytes) = (None, Instant::now(), 0u64);
    loop {
        let n = match run.pty.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if first.is_none() && buf[..n].windows(4).any(|w| w == b"xxxx") {
            first = Some(Instant::now());
        }
        if first.is_some() {
            bytes += n as u64;
            last = Instant::now();
        }
    }
    let _ = run.child.wait();
    Flood {
        bytes,
        secs: last
            .duration_since(first.unwrap_or(last))
            .as_secs_f64()
            .max(1e-9),
        wire: None,
    }
}

pub(crate) fn echo_raw(argv: &[String], cwd: &Path) -> Vec<Duration> {
    let mut run = spawn_on_pty(argv, cwd);
    let mut buf = vec![0u8; 4096];
    let mut seen = Vec::new();
    while !seen.windows(5).any(|w| w == b"READY") {
        let n = run.pty.read(&mut buf).expect("read the PTY");
        assert!(n > 0, "echo program ended early");
        seen.extend_from_slice(&buf[..n]);
    }
    let mut samples = Vec::with_capacity(ECHO_SAMPLES);
    for i in 0..ECHO_WARMUP + ECHO_SAMPLES {
        let b = b'a' + (i % 26) as u8;
        let t = Instant::now();
        run.pty.write_all(&[b]).unwrap();
        loop {
            let n = run.pty.read(&mut buf).expect("read the PTY");
            if buf[..n].contains(&b) {
                break;
            }
        }
        if i >= ECHO_WARMUP {
            samples.push(t.elapsed());
        }
    }
    let _ = run.child.kill();
    let _ = run.child.wait();
    samples
}
