//! Cage start overhead: the same command run bare, in a minimal bwrap, and through
//! `kaged cage run` in the default cage (sources opened by descriptor, seccomp, the in-cage
//! check), measured in the same run. Prints the mean of each and the ratios.
//! Run: cargo bench -p kaged --bench cage_start

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const RUNS: u32 = 30;

fn mean(mut run: impl FnMut()) -> Duration {
    run(); // warm the page cache
    let start = Instant::now();
    for _ in 0..RUNS {
        run();
    }
    start.elapsed() / RUNS
}

fn quiet(c: &mut Command) {
    let _ = c.stdout(Stdio::null()).stderr(Stdio::null()).status();
}

fn main() {
    if Command::new("bwrap").arg("--version").output().is_err() {
        eprintln!("bubblewrap is not installed; nothing to measure");
        return;
    }
    let tmp = std::env::temp_dir().join(format!("kaged-bench-{}", std::process::id()));
    if std::fs::create_dir_all(tmp.join(".kaged")).is_err()
        || std::fs::write(
            tmp.join(".kaged/project.yaml"),
            "version: 1\nproject: bench\nprimary:\n  command: [sh]\n",
        )
        .is_err()
    {
        eprintln!("cannot write the bench project");
        return;
    }
    let kaged = env!("CARGO_BIN_EXE_kaged");
    let bare = mean(|| quiet(&mut Command::new("/usr/bin/true")));
    let minimal = mean(|| {
        quiet(Command::new("bwrap").args(["--ro-bind", "/", "/", "/usr/bin/true"]));
    });
    let caged = mean(|| {
        quiet(
            Command::new(kaged)
                .arg("cage")
                .arg("run")
                .arg(&tmp)
                .args(["--", "/usr/bin/true"]),
        );
    });
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!("bare spawn of true:          {:7.2} ms", ms(bare));
    println!("minimal bwrap (no unshare):  {:7.2} ms", ms(minimal));
    println!("kaged cage run (default):    {:7.2} ms", ms(caged));
    println!(
        "kaged cage run: {:.1}x a minimal bwrap, {:+.2} ms over it (whole CLI: config, project file, cage, check)",
        ms(caged) / ms(minimal).max(0.001),
        ms(caged) - ms(minimal)
    );
    let _ = std::fs::remove_dir_all(&tmp);
}
