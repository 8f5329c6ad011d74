//! kaged's fuzz harness for stable Rust, used by the crates' tests (never by the daemon).
//!
//! cargo-fuzz needs a nightly toolchain and a separate runner; this harness runs inside
//! `cargo test` instead, so every target fuzzes for a bounded time on each run of the suite.
//! A target is a seed corpus in the repository (`crates/<crate>/fuzz/corpus/<target>/`), a
//! dictionary of tokens its format is made of, and a check: a function of the input bytes
//! that fails (returns `Err` or panics) when a property of the parser does not hold.
//!
//! Each run first checks every seed, then mutates the pool (byte flips, interesting bytes,
//! dictionary tokens, insertions, deletions, duplications, splices between inputs,
//! truncation, long repeats). There is no coverage feedback; instead the check returns a
//! short *behaviour label* (e.g. the kind of error) and an input that shows a label not seen
//! before joins the pool, so mutations build on inputs that reached somewhere new.
//!
//! A failure is shrunk (chunks deleted while it still fails), written to a file under the
//! system temporary directory, and reported with the command to keep it as a regression seed.
//!
//! Budget, from the environment:
//! - `KAGED_FUZZ_SCALE=N`: N times each target's default number of executions (default 1).
//! - `KAGED_FUZZ_SECS=S`: run each mutation target for S seconds instead of a count.
//! - `KAGED_FUZZ_SEED=N`: another random sequence (default: fixed per target, so a CI failure
//!   reproduces).

use std::cell::Cell;
use std::collections::HashSet;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::Once;
use std::time::{Duration, Instant};

/// The largest number of inputs kept in the pool (seeds plus discoveries).
const MAX_POOL: usize = 1024;
/// The most checks spent shrinking a failing input.
const MAX_SHRINK_CHECKS: usize = 4000;

/// A fuzz target: where its seeds are and what its format is made of.
pub struct Target<'a> {
    /// Short name, used in reports and crash file names.
    pub name: &'a str,
    /// Directory of seed files (every regular file, in name order).
    pub corpus: PathBuf,
    /// Tokens of the input format, inserted and overwritten by mutations.
    pub dictionary: &'a [&'a str],
    /// Executions in one default run (scaled by `KAGED_FUZZ_SCALE`).
    pub iterations: u64,
    /// Mutated inputs are cut to this length.
    pub max_len: usize,
}

/// What one run did, for the closing note.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub executions: u64,
    pub seeds: usize,
    pub pool: usize,
    pub behaviours: usize,
}

/// How long a run may go on.
#[derive(Debug, Clone, Copy)]
enum Budget {
    Executions(u64),
    Time(Duration),
}

/// `KAGED_FUZZ_SCALE`, at least 1.
pub fn scale() -> u64 {
    std::env::var("KAGED_FUZZ_SCALE")
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or(1)
        .max(1)
}

/// Cases for a proptest target whose default is `default`, scaled like the mutation targets.
pub fn cases(default: u32) -> u32 {
    u32::try_from(u64::from(default).saturating_mul(scale())).unwrap_or(u32::MAX)
}

fn budget(default: u64) -> Budget {
    let secs = std::env::var("KAGED_FUZZ_SECS")
        .ok()
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s > 0.0);
    match secs {
        Some(secs) => Budget::Time(Duration::from_secs_f64(secs)),
        None => Budget::Executions(default.saturating_mul(scale())),
    }
}

fn seed_for(name: &str) -> u64 {
    let base = std::env::var("KAGED_FUZZ_SEED")
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or(0x6b61_6765_6466_757a);
    // FNV-1a of the name, so targets do not share one sequence.
    name.bytes().fold(base ^ 0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// A small, fast, seedable generator (SplitMix64); the quality needed here is modest.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform-enough in `0..n`; 0 when `n` is 0.
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            return 0;
        }
        (self.next_u64() % n as u64) as usize
    }

    pub fn chance(&mut self, one_in: usize) -> bool {
        self.below(one_in) == 0
    }
}

/// Reads the seed files of `dir`, in name order. A missing or empty corpus is an error: a
/// target without seeds would only ever see noise.
pub fn load_corpus(dir: &Path) -> Result<Vec<(String, Vec<u8>)>, String> {
    let entries = std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut seeds = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| format!("{}: {e}", dir.display()))?;
        let path = entry.path();
        if path.is_file() {
            let bytes = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            seeds.push((entry.file_name().to_string_lossy().into_owned(), bytes));
        }
    }
    seeds.sort();
    if seeds.is_empty() {
        return Err(format!("{}: the corpus has no seed files", dir.display()));
    }
    Ok(seeds)
}

/// Bytes that often sit on a parser's boundaries.
const INTERESTING: &[u8] = &[
    0, 1, 0x7f, 0x80, 0xff, 0xc3, 0xe2, 0xf0, b'\n', b'\r', b'\t', b' ', b'"', b'\'', b'\\', b'0',
    b'9', b'-', b':', b'[', b']', b'{', b'}', b'#', b'=', b',',
];

/// One or a few stacked mutations of `input`, possibly borrowing from `other`.
pub fn mutate(
    rng: &mut Rng,
    input: &[u8],
    other: &[u8],
    dictionary: &[&str],
    max_len: usize,
) -> Vec<u8> {
    let mut data = input.to_vec();
    let rounds = 1 + rng.below(4);
    for _ in 0..rounds {
        let len = data.len();
        let at = rng.below(len + 1);
        match rng.below(12) {
            0 if len > 0 => {
                let i = rng.below(len);
                data[i] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                let i = rng.below(len);
                data[i] = INTERESTING[rng.below(INTERESTING.len())];
            }
            2 => data.insert(at, rng.next_u64() as u8),
            3 | 4 if !dictionary.is_empty() => {
                let token = dictionary[rng.below(dictionary.len())].as_bytes();
                if rng.chance(3) && len > 0 {
                    // Overwrite rather than insert, keeping the length.
                    let end = (at + token.len()).min(len);
                    let take = end.saturating_sub(at);
                    data[at.min(len)..end].copy_from_slice(&token[..take]);
                } else {
                    data.splice(at..at, token.iter().copied());
                }
            }
            5 if len > 0 => {
                let start = rng.below(len);
                let end = (start + 1 + rng.below(16.min(len - start))).min(len);
                data.drain(start..end);
            }
            6 if len > 0 => {
                let start = rng.below(len);
                let end = (start + 1 + rng.below(64.min(len - start))).min(len);
                let chunk = data[start..end].to_vec();
                data.splice(at..at, chunk);
            }
            7 if !other.is_empty() => {
                // Splice: this input's head, the other's tail.
                let from = rng.below(other.len());
                data.truncate(at);
                data.extend_from_slice(&other[from..]);
            }
            8 if !other.is_empty() => {
                let start = rng.below(other.len());
                let end = (start + 1 + rng.below(64.min(other.len() - start))).min(other.len());
                data.splice(at..at, other[start..end].iter().copied());
            }
            9 if len > 0 => data.truncate(rng.below(len)),
            10 if len > 0 => {
                // A long repeat, to reach size limits.
                let start = rng.below(len);
                let end = (start + 1 + rng.below(8.min(len - start))).min(len);
                let chunk = data[start..end].to_vec();
                let times = 1 + rng.below(max_len / chunk.len().max(1) + 1);
                let repeated: Vec<u8> = chunk
                    .iter()
                    .copied()
                    .cycle()
                    .take(chunk.len() * times)
                    .collect();
                data.splice(at..at, repeated);
            }
            11 if len > 1 => {
                let (i, j) = (rng.below(len), rng.below(len));
                data.swap(i, j);
            }
            _ => data.insert(at, INTERESTING[rng.below(INTERESTING.len())]),
        }
        data.truncate(max_len);
    }
    data
}

thread_local! {
    /// Set while this thread runs checks whose panics are caught and reported by the harness.
    static QUIET: Cell<bool> = const { Cell::new(false) };
}

/// Keeps the default panic message for every thread except one shrinking a failure (which
/// would otherwise print thousands of them).
fn install_quiet_hook() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !QUIET.with(Cell::get) {
                previous(info);
            }
        }));
    });
}

/// Runs `check` on `input`, turning a panic into an error.
fn run_check<F>(check: &mut F, input: &[u8], quiet: bool) -> Result<String, String>
where
    F: FnMut(&[u8]) -> Result<String, String>,
{
    QUIET.with(|q| q.set(quiet));
    let result = catch_unwind(AssertUnwindSafe(|| check(input)));
    QUIET.with(|q| q.set(false));
    match result {
        Ok(outcome) => outcome,
        Err(payload) => {
            let message = payload
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_else(|| "a panic without a message".to_owned());
            Err(format!("panicked: {message}"))
        }
    }
}

/// Deletes chunks of `input` (halves down to single bytes) while the check still fails.
fn shrink<F>(check: &mut F, input: &[u8]) -> Vec<u8>
where
    F: FnMut(&[u8]) -> Result<String, String>,
{
    let mut best = input.to_vec();
    let mut checks = 0;
    let mut chunk = best.len().div_ceil(2).max(1);
    while checks < MAX_SHRINK_CHECKS {
        let mut changed = false;
        let mut start = 0;
        while start < best.len() && checks < MAX_SHRINK_CHECKS {
            let end = (start + chunk).min(best.len());
            let mut candidate = best.clone();
            candidate.drain(start..end);
            checks += 1;
            if run_check(check, &candidate, true).is_err() {
                best = candidate;
                changed = true;
            } else {
                start += chunk;
            }
        }
        if chunk == 1 && !changed {
            break;
        }
        if !changed {
            chunk = (chunk / 2).max(1);
        }
    }
    best
}

fn write_crash(name: &str, input: &[u8]) -> PathBuf {
    let hash = input.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    });
    let dir = std::env::temp_dir().join("kaged-fuzz");
    let path = dir.join(format!("{name}-{hash:016x}"));
    // Best effort: the report below also carries the input itself.
    let _ = std::fs::create_dir_all(&dir).and_then(|()| std::fs::write(&path, input));
    path
}

fn preview(input: &[u8]) -> String {
    let shown: String = input
        .iter()
        .take(400)
        .flat_map(|b| std::ascii::escape_default(*b))
        .map(char::from)
        .collect();
    if input.len() > 400 {
        format!("b\"{shown}\"… ({} bytes)", input.len())
    } else {
        format!("b\"{shown}\"")
    }
}

/// Runs `target` with `check`, and panics with a reproducible report on the first failure.
/// `check` returns a behaviour label on success and a description of the broken property
/// on failure; a panic inside it is a failure too.
pub fn fuzz<F>(target: &Target<'_>, check: F) -> Report
where
    F: FnMut(&[u8]) -> Result<String, String>,
{
    match try_fuzz(target, check) {
        Ok(report) => report,
        Err(failure) => panic!("{failure}"),
    }
}

/// [`fuzz`], returning the failure report instead of panicking with it.
pub fn try_fuzz<F>(target: &Target<'_>, mut check: F) -> Result<Report, String>
where
    F: FnMut(&[u8]) -> Result<String, String>,
{
    install_quiet_hook();
    let started = Instant::now();
    let seeds =
        load_corpus(&target.corpus).map_err(|why| format!("fuzz {}: {why}", target.name))?;
    let seed = seed_for(target.name);
    let mut rng = Rng::new(seed);
    let mut pool: Vec<Vec<u8>> = Vec::new();
    let mut labels: HashSet<String> = HashSet::new();
    let mut executions: u64 = 0;

    let fail = |check: &mut F, input: &[u8], why: String, origin: &str| -> String {
        let small = shrink(check, input);
        let small_why = run_check(check, &small, true)
            .err()
            .unwrap_or_else(|| why.clone());
        let path = write_crash(target.name, &small);
        let full = write_crash(target.name, input);
        format!(
            "fuzz {}: {origin} breaks a property:\n  {why}\n\
             shrunk to {} bytes ({small_why}):\n  {}\n\
             saved as {} (unshrunk: {});\n\
             keep it as a regression seed: cp {} {}/\n\
             (seed {seed:#x}; rerun with KAGED_FUZZ_SEED to vary)",
            target.name,
            small.len(),
            preview(&small),
            path.display(),
            full.display(),
            path.display(),
            target.corpus.display(),
        )
    };

    for (file, bytes) in &seeds {
        executions += 1;
        match run_check(&mut check, bytes, false) {
            Ok(label) => {
                labels.insert(label);
                pool.push(bytes.clone());
            }
            Err(why) => return Err(fail(&mut check, bytes, why, &format!("seed file {file}"))),
        }
    }

    let budget = budget(target.iterations);
    loop {
        let done = match budget {
            Budget::Executions(n) => executions >= n,
            Budget::Time(limit) => started.elapsed() >= limit,
        };
        if done {
            break;
        }
        let base = &pool[rng.below(pool.len())];
        let other = &pool[rng.below(pool.len())];
        let input = mutate(&mut rng, base, other, target.dictionary, target.max_len);
        executions += 1;
        match run_check(&mut check, &input, false) {
            Ok(label) => {
                if labels.insert(label) && pool.len() < MAX_POOL {
                    pool.push(input);
                }
            }
            Err(why) => return Err(fail(&mut check, &input, why, "a mutated input")),
        }
    }

    let report = Report {
        executions,
        seeds: seeds.len(),
        pool: pool.len(),
        behaviours: labels.len(),
    };
    eprintln!(
        "fuzz {}: {} executions ({} seeds, {} behaviours, pool {}) in {:.2} s, seed {seed:#x}",
        target.name,
        report.executions,
        report.seeds,
        report.behaviours,
        report.pool,
        started.elapsed().as_secs_f64()
    );
    Ok(report)
}

/// Runs a proptest strategy for `cases(default_cases)` cases with a deterministic generator
/// (varied by `KAGED_FUZZ_SEED`), panics with the shrunk counterexample on failure, and prints
/// how many cases ran.
pub fn prop<S, F>(name: &str, default_cases: u32, strategy: &S, test: F)
where
    S: proptest::strategy::Strategy,
    S::Value: std::fmt::Debug,
    F: Fn(S::Value) -> Result<(), proptest::test_runner::TestCaseError>,
{
    use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};

    let started = Instant::now();
    let config = Config {
        cases: cases(default_cases),
        failure_persistence: None,
        ..Config::default()
    };
    let mut seed = [0u8; 32];
    let mut rng = Rng::new(seed_for(name));
    for chunk in seed.chunks_mut(8) {
        chunk.copy_from_slice(&rng.next_u64().to_le_bytes());
    }
    let mut runner =
        TestRunner::new_with_rng(config, TestRng::from_seed(RngAlgorithm::ChaCha, &seed));
    let ran = std::cell::Cell::new(0u64);
    let result = runner.run(strategy, |value| {
        ran.set(ran.get() + 1);
        test(value)
    });
    eprintln!(
        "fuzz {name}: {} proptest executions in {:.2} s",
        ran.get(),
        started.elapsed().as_secs_f64()
    );
    if let Err(failure) = result {
        panic!("fuzz {name}: {failure}");
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn corpus() -> PathBuf {
        let dir = std::env::temp_dir().join(format!("kaged-fuzz-self-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("a"), b"hello world").unwrap();
        std::fs::write(dir.join("b"), b"key = value").unwrap();
        dir
    }

    #[test]
    fn mutations_stay_within_the_length_and_vary() {
        let mut rng = Rng::new(1);
        let mut distinct = HashSet::new();
        for _ in 0..2000 {
            let out = mutate(&mut rng, b"hello world", b"key = value", &["TOKEN"], 64);
            assert!(out.len() <= 64);
            distinct.insert(out);
        }
        assert!(distinct.len() > 1000, "{}", distinct.len());
        assert!(distinct.iter().any(|d| d.windows(5).any(|w| w == b"TOKEN")));
        assert!(
            distinct.iter().any(|d| d.len() == 64),
            "long repeats reach the cap"
        );
    }

    #[test]
    fn a_run_counts_its_executions_and_finds_a_planted_bug_and_shrinks_it() {
        let dir = corpus();
        let target = Target {
            name: "self-test",
            corpus: dir.clone(),
            dictionary: &["!"],
            iterations: 500,
            max_len: 256,
        };
        let report = fuzz(&target, |input| Ok(format!("{}", input.len() % 7)));
        if std::env::var_os("KAGED_FUZZ_SECS").is_none() {
            assert_eq!(report.executions, 500 * scale());
        }
        assert_eq!(report.seeds, 2);
        assert!(report.behaviours > 1);

        // A "parser" that panics on two bangs: found from seeds without any, and shrunk to them.
        let message = try_fuzz(&target, |input| {
            if input.windows(2).any(|w| w == b"!!") {
                panic!("two bangs");
            }
            Ok(String::new())
        })
        .unwrap_err();
        assert!(message.contains("shrunk to 2 bytes"), "{message}");
        assert!(message.contains("b\"!!\""), "{message}");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
