//! Cage start overhead: the same command spawned bare and inside the default cage, measured in
//! the same run. Prints the mean of each and the difference (target: at most 15 ms more).
//! Run: cargo bench -p kaged-cage

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use kaged_cage::{Host, Launch, Policy, SYSTEM_DIRS, compile};

const RUNS: u32 = 40;

fn mean(mut run: impl FnMut()) -> Duration {
    run(); // warm the page cache
    let start = Instant::now();
    for _ in 0..RUNS {
        run();
    }
    start.elapsed() / RUNS
}

fn main() {
    let tmp = std::env::temp_dir().join(format!("kaged-bench-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&tmp);
    let command = vec!["/usr/bin/true".to_string()];
    let host = Host {
        system_dirs: SYSTEM_DIRS
            .iter()
            .filter(|d| Path::new(d).exists())
            .map(|d| d.to_string())
            .collect(),
        has_git: false,
        has_kaged: false,
    };
    let launch = Launch {
        project_root: &tmp,
        cwd: Path::new(""),
        command: &command,
        env: &[],
        own_terminal: false,
        egress: None,
        tty_helper: None,
    };
    let Ok(argv) = compile(&Policy::default_cage(), &host, &launch) else {
        eprintln!("cannot compile the default cage");
        return;
    };
    if Command::new("bwrap").arg("--version").output().is_err() {
        eprintln!("bubblewrap is not installed; nothing to measure");
        return;
    }
    let bare = mean(|| {
        let _ = Command::new("/usr/bin/true").status();
    });
    // The seccomp program goes on fd 3, as `kaged cage run` passes it.
    let Ok(bpf) = kaged_cage::profile_bpf("default") else {
        eprintln!("cannot build the seccomp profile");
        return;
    };
    let bpf_path = tmp.join("filter.bpf");
    if std::fs::write(&bpf_path, bpf).is_err() {
        eprintln!("cannot write the seccomp program");
        return;
    }
    let caged = mean(|| {
        let _ = Command::new("/bin/sh")
            .arg("-c")
            .arg("exec bwrap \"$@\" 3< \"$0\"")
            .arg(&bpf_path)
            .args(&argv)
            .status();
    });
    let through_sh = mean(|| {
        let _ = Command::new("/bin/sh")
            .arg("-c")
            .arg("exec /usr/bin/true")
            .status();
    });
    let minimal = mean(|| {
        let _ = Command::new("bwrap")
            .args(["--ro-bind", "/", "/", "/usr/bin/true"])
            .status();
    });
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!("bare spawn of true:          {:7.2} ms", ms(bare));
    println!("minimal bwrap (no unshare):  {:7.2} ms", ms(minimal));
    println!("sh -c exec true:             {:7.2} ms", ms(through_sh));
    println!(
        "default kaged cage (+seccomp, via sh): {:7.2} ms",
        ms(caged)
    );
    println!(
        "cage overhead: {:+.2} ms over bare ({:.1}x), {:+.2} ms over minimal bwrap; target <= +15 ms",
        ms(caged) - ms(bare),
        ms(caged) / ms(bare).max(0.001),
        ms(caged) - ms(minimal)
    );
    let _ = std::fs::remove_dir_all(&tmp);
}
