//! `file.read`, `file.write` and `edit.text`. Paths are as the process sees them: inside a
//! cage, relative ones start at the workspace, and nothing outside the cage's view exists.

use std::io::BufRead;
use std::path::Path;

use serde::Deserialize;

use crate::Done;
use crate::cap::cap_line;

/// Lines `file.read` gives when no `limit` is asked.
pub const DEFAULT_READ_LINES: usize = 2000;
/// A longer line is cut (minified files would otherwise fill the budget with one line).
const MAX_LINE_CHARS: usize = 2000;
/// At most this much text per read; the rest is a later read (with `offset`).
const MAX_READ_BYTES: usize = 256 * 1024;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReadArgs {
    pub path: String,
    #[serde(default)]
    pub offset: Option<usize>,
    #[serde(default)]
    pub limit: Option<usize>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WriteArgs {
    pub path: String,
    pub content: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EditArgs {
    pub path: String,
    pub old_text: String,
    pub new_text: String,
}

/// An I/O error as a sentence about `path`, with what to do where there is something to do.
fn io_problem(what: &str, path: &str, e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => format!("{path} does not exist"),
        std::io::ErrorKind::PermissionDenied => {
            format!("cannot {what} {path}: permission denied")
        }
        _ => format!("cannot {what} {path}: {e}"),
    }
}

fn not_a_directory(path: &str) -> Result<(), String> {
    if Path::new(path).is_dir() {
        return Err(format!(
            "{path} is a directory, not a file; list it with search.glob (pattern \"*\", path {path:?})"
        ));
    }
    Ok(())
}

pub fn read(args: ReadArgs) -> Result<Done, String> {
    if args.path.is_empty() {
        return Err("path is empty".into());
    }
    let offset = match args.offset {
        None => 1,
        Some(0) => return Err("offset counts lines from 1 (the first line is 1)".into()),
        Some(n) => n,
    };
    let limit = match args.limit {
        None => DEFAULT_READ_LINES,
        Some(0) => return Err("limit must be 1 or more lines".into()),
        Some(n) => n,
    };
    not_a_directory(&args.path)?;
    let file = std::fs::File::open(&args.path).map_err(|e| io_problem("read", &args.path, &e))?;
    let mut reader = std::io::BufReader::new(file);
    let mut out = String::new();
    let mut line = Vec::new();
    let mut number = 0usize;
    let mut shown = 0usize;
    loop {
        line.clear();
        let n = reader
            .read_until(b'\n', &mut line)
            .map_err(|e| io_problem("read", &args.path, &e))?;
        if n == 0 {
            break;
        }
        number += 1;
        if number < offset {
            continue;
        }
        if shown == limit || out.len() >= MAX_READ_BYTES {
            out.push_str(&format!(
                "[... the file goes on: read on with offset {number} ...]\n"
            ));
            return Ok(Done::cut(out));
        }
        let text = String::from_utf8_lossy(&line);
        let text = text.trim_end_matches(['\n', '\r']);
        out.push_str(&format!(
            "{number:>6}\t{}\n",
            cap_line(text, MAX_LINE_CHARS)
        ));
        shown += 1;
    }
    if number == 0 {
        return Ok(Done::whole(format!("[{} is empty]", args.path)));
    }
    if shown == 0 {
        return Err(format!(
            "{} has {number} lines; offset {offset} is past its end",
            args.path
        ));
    }
    Ok(Done::whole(out))
}

pub fn write(args: WriteArgs) -> Result<Done, String> {
    if args.path.is_empty() {
        return Err("path is empty".into());
    }
    not_a_directory(&args.path)?;
    let path = Path::new(&args.path);
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .map_err(|e| io_problem("create the directory", &parent.display().to_string(), &e))?;
    }
    std::fs::write(path, &args.content).map_err(|e| io_problem("write", &args.path, &e))?;
    Ok(Done::whole(format!(
        "wrote {} bytes to {}",
        args.content.len(),
        args.path
    )))
}

/// `text` with `old` replaced by `new`, where `old` occurs exactly once; otherwise what is
/// wrong and how to fix it.
pub fn replace_once(text: &str, old: &str, new: &str, path: &str) -> Result<String, String> {
    if old.is_empty() {
        return Err("old_text is empty; give the exact text to replace (to write a whole file, use file.write)".into());
    }
    if old == new {
        return Err("old_text and new_text are the same: nothing would change".into());
    }
    match text.matches(old).count() {
        0 => Err(format!(
            "old_text was not found in {path}; read the file again (file.read) and copy the text exactly, with its whitespace and indentation, without the line numbers"
        )),
        1 => Ok(text.replacen(old, new, 1)),
        n => Err(format!(
            "old_text occurs {n} times in {path}; include more of the surrounding lines in old_text so that it matches exactly one place"
        )),
    }
}

pub fn edit(args: EditArgs) -> Result<Done, String> {
    not_a_directory(&args.path)?;
    let bytes = std::fs::read(&args.path).map_err(|e| io_problem("read", &args.path, &e))?;
    let text = String::from_utf8(bytes).map_err(|_| {
        format!(
            "{} is not UTF-8 text; edit.text cannot change it",
            args.path
        )
    })?;
    let changed = replace_once(&text, &args.old_text, &args.new_text, &args.path)?;
    std::fs::write(&args.path, changed).map_err(|e| io_problem("write", &args.path, &e))?;
    Ok(Done::whole(format!("edited {}", args.path)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replacement_is_exact_and_unique() {
        assert_eq!(
            replace_once("a b c", "b", "B", "f").unwrap(),
            "a B c".to_string()
        );
        let none = replace_once("a b c", "x", "y", "f").unwrap_err();
        assert!(
            none.contains("not found in f") && none.contains("file.read"),
            "{none}"
        );
        let many = replace_once("b b b", "b", "c", "f").unwrap_err();
        assert!(
            many.contains("occurs 3 times") && many.contains("surrounding"),
            "{many}"
        );
        assert!(
            replace_once("a", "", "b", "f")
                .unwrap_err()
                .contains("empty")
        );
        assert!(
            replace_once("a", "a", "a", "f")
                .unwrap_err()
                .contains("same")
        );
        // Whitespace counts.
        assert!(replace_once("fn x() {\n    y\n}", "fn x() {\n  y", "z", "f").is_err());
        // Overlapping matches are not double counted by the replacement.
        assert_eq!(replace_once("aXa", "aXa", "b", "f").unwrap(), "b");
    }

    fn dir_with(name: &str, text: &str) -> (tempfile::TempDir, String) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        (dir, path.display().to_string())
    }

    fn read_args(path: &str, offset: Option<usize>, limit: Option<usize>) -> ReadArgs {
        ReadArgs {
            path: path.into(),
            offset,
            limit,
        }
    }

    #[test]
    fn reads_are_numbered_from_one_and_windowed() {
        let text: String = (1..=5).map(|i| format!("line {i}\n")).collect();
        let (_dir, path) = dir_with("f.txt", &text);
        let all = read(read_args(&path, None, None)).unwrap();
        assert!(!all.truncated);
        assert!(all.output.starts_with("     1\tline 1\n"), "{}", all.output);
        assert!(all.output.ends_with("     5\tline 5\n"), "{}", all.output);
        let window = read(read_args(&path, Some(2), Some(2))).unwrap();
        assert!(window.truncated);
        assert_eq!(
            window.output,
            "     2\tline 2\n     3\tline 3\n[... the file goes on: read on with offset 4 ...]\n"
        );
        let past = read(read_args(&path, Some(9), None)).unwrap_err();
        assert!(past.contains("has 5 lines"), "{past}");
        assert!(read(read_args(&path, Some(0), None)).is_err());
    }

    #[test]
    fn missing_files_and_directories_are_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope").display().to_string();
        let e = read(read_args(&missing, None, None)).unwrap_err();
        assert!(e.ends_with("does not exist"), "{e}");
        let d = dir.path().display().to_string();
        let e = read(read_args(&d, None, None)).unwrap_err();
        assert!(
            e.contains("is a directory") && e.contains("search.glob"),
            "{e}"
        );
    }

    #[test]
    fn the_default_limit_is_two_thousand_lines() {
        let text = "x\n".repeat(2500);
        let (_dir, path) = dir_with("big.txt", &text);
        let done = read(read_args(&path, None, None)).unwrap();
        assert!(done.truncated);
        assert_eq!(done.output.lines().count(), 2001);
        assert!(done.output.contains("offset 2001"));
    }

    #[test]
    fn writes_create_parents_and_edits_change_one_place() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a/b/c.txt").display().to_string();
        write(WriteArgs {
            path: path.clone(),
            content: "one two three".into(),
        })
        .unwrap();
        edit(EditArgs {
            path: path.clone(),
            old_text: "two".into(),
            new_text: "2".into(),
        })
        .unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "one 2 three");
        let e = edit(EditArgs {
            path: path.clone(),
            old_text: "two".into(),
            new_text: "2".into(),
        })
        .unwrap_err();
        assert!(e.contains("not found"), "{e}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "one 2 three");
    }
}
