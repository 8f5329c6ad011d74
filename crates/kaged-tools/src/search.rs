//! `search.grep` (a regular expression over files' lines) and `search.glob` (paths by
//! pattern). Both walk without following links, skip `.git`, sort by name and cap their
//! answers, saying so.

use std::io::Read;
use std::path::Path;

use serde::Deserialize;

use crate::Done;
use crate::cap::cap_line;

/// Matching lines `search.grep` shows.
pub const MAX_MATCHES: usize = 200;
/// Paths `search.glob` shows.
pub const MAX_PATHS: usize = 1000;
/// A matching line longer than this is cut.
const MAX_MATCH_CHARS: usize = 500;
/// Larger files are not searched (generated data, not source).
const MAX_GREP_FILE: u64 = 8 << 20;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrepArgs {
    pub pattern: String,
    #[serde(default)]
    pub path: Option<String>,
    #[serde(default)]
    pub glob: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GlobArgs {
    pub pattern: String,
    #[serde(default)]
    pub path: Option<String>,
}

fn matcher(pattern: &str) -> Result<globset::GlobMatcher, String> {
    globset::GlobBuilder::new(pattern)
        .literal_separator(true)
        .build()
        .map(|g| g.compile_matcher())
        .map_err(|e| format!("{pattern:?} is not a valid glob pattern: {e}"))
}

/// Where a search starts: `path`, or the working directory.
fn start(path: Option<String>) -> Result<String, String> {
    let root = path.filter(|p| !p.is_empty()).unwrap_or_else(|| ".".into());
    match std::fs::metadata(&root) {
        Ok(_) => Ok(root),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(format!("{root} does not exist")),
        Err(e) => Err(format!("cannot search {root}: {e}")),
    }
}

/// Every entry under `root`, sorted, links not followed, `.git` skipped, unreadable ones
/// left out.
fn walk(root: &str, max_depth: Option<usize>) -> impl Iterator<Item = walkdir::DirEntry> {
    let mut w = walkdir::WalkDir::new(root)
        .follow_links(false)
        .sort_by_file_name();
    if let Some(depth) = max_depth {
        w = w.max_depth(depth);
    }
    w.into_iter()
        .filter_entry(|e| e.depth() == 0 || e.file_name() != ".git")
        .filter_map(Result::ok)
}

/// A path as shown: without a leading `./`.
fn shown(path: &Path) -> String {
    let text = path.display().to_string();
    match text.strip_prefix("./") {
        Some(rest) => rest.to_string(),
        None => text,
    }
}

/// A file's text, or `None` for a binary or oversized one.
fn text_of(path: &Path) -> Option<String> {
    let file = std::fs::File::open(path).ok()?;
    if file.metadata().ok()?.len() > MAX_GREP_FILE {
        return None;
    }
    let mut bytes = Vec::new();
    file.take(MAX_GREP_FILE).read_to_end(&mut bytes).ok()?;
    if bytes[..bytes.len().min(8192)].contains(&0) {
        return None;
    }
    Some(String::from_utf8_lossy(&bytes).into_owned())
}

pub fn grep(args: GrepArgs) -> Result<Done, String> {
    let re = regex::Regex::new(&args.pattern)
        .map_err(|e| format!("pattern is not a valid regular expression: {e}"))?;
    let root = start(args.path)?;
    let filter = args.glob.as_deref().map(matcher).transpose()?;
    let by_name = args.glob.as_deref().is_some_and(|g| !g.contains('/'));
    let mut lines = Vec::new();
    'files: for entry in walk(&root, None) {
        if !entry.file_type().is_file() {
            continue;
        }
        if let Some(filter) = &filter {
            let relative = entry.path().strip_prefix(&root).unwrap_or(entry.path());
            let candidate = if by_name {
                Path::new(entry.file_name())
            } else {
                relative
            };
            if !filter.is_match(candidate) {
                continue;
            }
        }
        let Some(text) = text_of(entry.path()) else {
            continue;
        };
        let name = shown(entry.path());
        for (i, line) in text.lines().enumerate() {
            if re.is_match(line) {
                if lines.len() == MAX_MATCHES {
                    lines.push(format!(
                        "[... more matches not shown: only the first {MAX_MATCHES} are; narrow the pattern, path or glob ...]"
                    ));
                    break 'files;
                }
                lines.push(format!(
                    "{name}:{}:{}",
                    i + 1,
                    cap_line(line, MAX_MATCH_CHARS)
                ));
            }
        }
    }
    if lines.is_empty() {
        return Ok(Done::whole(format!("no matches for {:?}", args.pattern)));
    }
    let truncated = lines.len() > MAX_MATCHES;
    Ok(Done {
        output: lines.join("\n"),
        truncated,
    })
}

pub fn glob(args: GlobArgs) -> Result<Done, String> {
    let m = matcher(&args.pattern)?;
    let root = start(args.path)?;
    // Without `**`, a match is never deeper than the pattern's own components.
    let depth = (!args.pattern.contains("**")).then(|| args.pattern.split('/').count());
    let mut paths: Vec<String> = walk(&root, depth)
        .filter(|e| e.depth() > 0)
        .filter(|e| m.is_match(e.path().strip_prefix(&root).unwrap_or(e.path())))
        .map(|e| shown(e.path()))
        .collect();
    if paths.is_empty() {
        return Ok(Done::whole(format!(
            "no paths match {:?} under {root}",
            args.pattern
        )));
    }
    paths.sort();
    let (output, truncated) =
        crate::cap::cap_lines(paths, MAX_PATHS, "use a narrower pattern or path");
    Ok(Done { output, truncated })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path();
        std::fs::create_dir_all(p.join("src/deep")).unwrap();
        std::fs::create_dir_all(p.join(".git")).unwrap();
        std::fs::write(p.join("src/a.rs"), "fn main() {}\nlet needle = 1;\n").unwrap();
        std::fs::write(p.join("src/deep/b.rs"), "needle again\n").unwrap();
        std::fs::write(p.join("notes.txt"), "a needle in text\n").unwrap();
        std::fs::write(p.join(".git/config"), "needle in git\n").unwrap();
        std::fs::write(p.join("blob.bin"), b"needle\0binary").unwrap();
        dir
    }

    fn grep_in(dir: &Path, pattern: &str, glob: Option<&str>) -> Result<Done, String> {
        grep(GrepArgs {
            pattern: pattern.into(),
            path: Some(dir.display().to_string()),
            glob: glob.map(String::from),
        })
    }

    #[test]
    fn grep_gives_path_line_text_sorted_and_skips_git_and_binaries() {
        let dir = tree();
        let root = dir.path().display();
        let done = grep_in(dir.path(), "need+le", None).unwrap();
        assert_eq!(
            done.output,
            format!(
                "{root}/notes.txt:1:a needle in text\n{root}/src/a.rs:2:let needle = 1;\n{root}/src/deep/b.rs:1:needle again"
            )
        );
        let rs = grep_in(dir.path(), "needle", Some("*.rs")).unwrap();
        assert_eq!(rs.output.lines().count(), 2, "{}", rs.output);
        let deep = grep_in(dir.path(), "needle", Some("src/deep/*")).unwrap();
        assert_eq!(deep.output.lines().count(), 1, "{}", deep.output);
        assert!(
            grep_in(dir.path(), "nothing", None)
                .unwrap()
                .output
                .starts_with("no matches")
        );
        let bad = grep_in(dir.path(), "(", None).unwrap_err();
        assert!(bad.contains("not a valid regular expression"), "{bad}");
    }

    #[test]
    fn grep_is_capped() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("many"), "x\n".repeat(MAX_MATCHES + 50)).unwrap();
        let done = grep_in(dir.path(), "x", None).unwrap();
        assert!(done.truncated);
        assert_eq!(done.output.lines().count(), MAX_MATCHES + 1);
        assert!(
            done.output
                .ends_with("narrow the pattern, path or glob ...]")
        );
    }

    #[test]
    fn glob_lists_sorted_relative_matches() {
        let dir = tree();
        let root = dir.path().display();
        let glob_in = |pattern: &str| {
            glob(GlobArgs {
                pattern: pattern.into(),
                path: Some(dir.path().display().to_string()),
            })
        };
        assert_eq!(
            glob_in("**/*.rs").unwrap().output,
            format!("{root}/src/a.rs\n{root}/src/deep/b.rs")
        );
        assert_eq!(
            glob_in("*.rs").unwrap().output,
            format!("no paths match \"*.rs\" under {root}")
        );
        assert_eq!(
            glob_in("src/*").unwrap().output,
            format!("{root}/src/a.rs\n{root}/src/deep")
        );
        assert!(glob_in("[").unwrap_err().contains("not a valid glob"));
        let missing = glob(GlobArgs {
            pattern: "*".into(),
            path: Some(dir.path().join("nope").display().to_string()),
        });
        assert!(missing.unwrap_err().ends_with("does not exist"));
    }
}
