//! `fs/read_text_file` and `fs/write_text_file`, served with plain file calls inside the
//! cage: what the cage does not show does not exist, what it binds read-only cannot be
//! written. Paths must be absolute (ACP). A read returns at most [`MAX_READ`] bytes and
//! only from regular files (a FIFO or a device could block or never end).

use std::io::{BufRead, BufReader, Read};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use serde::Deserialize;
use serde_json::{Value, json};

use super::jsonrpc::{Audit, Failure, io_text};

/// The most a read returns; a larger file is read in windows (`line` and `limit`).
pub const MAX_READ: usize = 1 << 20;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ReadParams {
    path: String,
    /// The first line, from 1.
    #[serde(default)]
    line: Option<u64>,
    /// How many lines.
    #[serde(default)]
    limit: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct WriteParams {
    path: String,
    content: String,
}

fn params<T: serde::de::DeserializeOwned>(method: &str, params: &Value) -> Result<T, Failure> {
    serde_json::from_value(params.clone())
        .map_err(|e| Failure::invalid(format!("{method}: invalid params: {e}")))
}

fn absolute(path: &str) -> Result<&Path, Failure> {
    let p = Path::new(path);
    if p.is_absolute() {
        Ok(p)
    } else {
        Err(Failure::invalid(format!(
            "the path must be absolute: {path}"
        )))
    }
}

/// The path a request names, for the audit line, when it has one.
pub fn audit_of(params: &Value) -> Audit {
    match params.get("path").and_then(Value::as_str) {
        Some(path) => Audit::default().with("path", path),
        None => Audit::default(),
    }
}

/// `fs/read_text_file`: `{"content": …}`. Blocking: run it off the relay's thread.
pub fn read(raw: &Value, audit: &mut Audit) -> Result<Value, Failure> {
    let p: ReadParams = params("fs/read_text_file", raw)?;
    let path = absolute(&p.path)?;
    let first = p.line.unwrap_or(1);
    if first == 0 {
        return Err(Failure::invalid("line counts from 1"));
    }
    let cannot =
        |e: std::io::Error| Failure::internal(format!("cannot read {}: {}", p.path, io_text(&e)));
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::fcntl::OFlag::O_NONBLOCK.bits())
        .open(path)
        .map_err(cannot)?;
    if !file.metadata().map_err(cannot)?.is_file() {
        return Err(Failure::internal(format!(
            "cannot read {}: not a regular file",
            p.path
        )));
    }
    let mut reader = BufReader::new(file);
    skip_lines(&mut reader, first - 1).map_err(cannot)?;
    let content = take_lines(&mut reader, p.limit).map_err(cannot)?;
    let Some(content) = content else {
        let what = match (p.line, p.limit) {
            (None, None) => "the file".to_string(),
            _ => format!(
                "{} lines from line {first}",
                p.limit.map_or("all".into(), |l| l.to_string())
            ),
        };
        return Err(Failure::invalid(format!(
            "cannot read {}: {what} is more than the {} MiB a read may return; read fewer lines with line and limit",
            p.path,
            MAX_READ >> 20
        )));
    };
    let content = String::from_utf8(content)
        .map_err(|_| Failure::internal(format!("cannot read {}: not UTF-8 text", p.path)))?;
    audit.bytes = Some(content.len() as u64);
    Ok(json!({ "content": content }))
}

/// Reads past `n` lines (a line's length does not matter: nothing is kept).
fn skip_lines<R: BufRead>(reader: &mut R, mut n: u64) -> std::io::Result<()> {
    while n > 0 {
        let buf = reader.fill_buf()?;
        if buf.is_empty() {
            return Ok(());
        }
        match buf.iter().position(|b| *b == b'\n') {
            Some(at) => {
                reader.consume(at + 1);
                n -= 1;
            }
            None => {
                let len = buf.len();
                reader.consume(len);
            }
        }
    }
    Ok(())
}

/// Up to `limit` lines (all when `None`) with their newlines; `None` when they are more
/// than [`MAX_READ`] bytes.
fn take_lines<R: BufRead>(reader: &mut R, limit: Option<u64>) -> std::io::Result<Option<Vec<u8>>> {
    let mut out = Vec::new();
    let mut left = limit.unwrap_or(u64::MAX);
    while left > 0 {
        // One byte over the cap is enough to know it is over.
        let room = (MAX_READ + 1 - out.len()) as u64;
        let before = out.len();
        let n = reader.by_ref().take(room).read_until(b'\n', &mut out)?;
        if n == 0 {
            break;
        }
        if out.len() > MAX_READ {
            return Ok(None);
        }
        if out[before..].ends_with(b"\n") {
            left -= 1;
        }
    }
    Ok(Some(out))
}

/// `fs/write_text_file`: `{}`. The file is created or replaced, its missing parent
/// directories created. Blocking.
pub fn write(raw: &Value, audit: &mut Audit) -> Result<Value, Failure> {
    let p: WriteParams = params("fs/write_text_file", raw)?;
    let path = absolute(&p.path)?;
    let cannot =
        |e: std::io::Error| Failure::internal(format!("cannot write {}: {}", p.path, io_text(&e)));
    if let Some(parent) = path.parent()
        && !parent.as_os_str().is_empty()
        && !parent.is_dir()
    {
        std::fs::create_dir_all(parent).map_err(cannot)?;
    }
    std::fs::write(path, p.content.as_bytes()).map_err(cannot)?;
    audit.bytes = Some(p.content.len() as u64);
    Ok(json!({}))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_of(params: Value) -> Result<Value, Failure> {
        read(&params, &mut Audit::default())
    }

    #[test]
    fn a_file_is_written_and_read_back_with_the_bytes_audited() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/dir/a.txt");
        let path = path.to_str().unwrap();
        let mut audit = audit_of(&json!({"path": path, "content": "x"}));
        let done = write(
            &json!({"sessionId": "s", "path": path, "content": "héllo\n"}),
            &mut audit,
        );
        assert_eq!(done, Ok(json!({})));
        assert_eq!(audit.bytes, Some(7));
        assert_eq!(audit.subject["path"], json!(path));
        assert_eq!(std::fs::read_to_string(path).unwrap(), "héllo\n");
        let mut audit = Audit::default();
        let got = read(&json!({"sessionId": "s", "path": path}), &mut audit);
        assert_eq!(got, Ok(json!({"content": "héllo\n"})));
        assert_eq!(audit.bytes, Some(7));
    }

    #[test]
    fn line_and_limit_pick_a_window() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lines.txt");
        std::fs::write(&path, "one\ntwo\nthree\nfour").unwrap();
        let path = path.to_str().unwrap();
        let content = |line: Option<u64>, limit: Option<u64>| {
            read_of(json!({"path": path, "line": line, "limit": limit})).unwrap()["content"]
                .as_str()
                .unwrap()
                .to_string()
        };
        assert_eq!(content(Some(2), Some(2)), "two\nthree\n");
        assert_eq!(content(Some(3), None), "three\nfour");
        assert_eq!(content(None, Some(1)), "one\n");
        assert_eq!(content(Some(9), Some(1)), "");
        assert_eq!(content(Some(1), Some(0)), "");
        let zero = read_of(json!({"path": path, "line": 0})).unwrap_err();
        assert_eq!(zero.code, -32602);
    }

    #[test]
    fn reads_are_capped_and_a_window_of_a_big_file_still_works() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big.txt");
        let mut text = "x".repeat(2 * MAX_READ);
        text.push_str("\nlast line\n");
        std::fs::write(&path, &text).unwrap();
        let path = path.to_str().unwrap();
        let whole = read_of(json!({"path": path})).unwrap_err();
        assert_eq!(whole.code, -32602);
        assert!(
            whole.message.contains("more than the 1 MiB"),
            "{}",
            whole.message
        );
        assert!(
            whole.message.contains("line and limit"),
            "{}",
            whole.message
        );
        let tail = read_of(json!({"path": path, "line": 2})).unwrap();
        assert_eq!(tail, json!({"content": "last line\n"}));
    }

    #[test]
    fn errors_are_clear() {
        let relative = read_of(json!({"path": "a.txt"})).unwrap_err();
        assert_eq!(relative.code, -32602);
        assert_eq!(relative.message, "the path must be absolute: a.txt");
        let missing = read_of(json!({"path": "/no/such/file"})).unwrap_err();
        assert_eq!(missing.code, -32603);
        assert_eq!(
            missing.message,
            "cannot read /no/such/file: No such file or directory"
        );
        let device = read_of(json!({"path": "/dev/zero"})).unwrap_err();
        assert_eq!(device.message, "cannot read /dev/zero: not a regular file");
        let no_path = read_of(json!({"line": 1})).unwrap_err();
        assert_eq!(no_path.code, -32602);
        assert!(no_path.message.contains("path"), "{}", no_path.message);
        // Even root cannot write here.
        let refused = write(
            &json!({"path": "/proc/version", "content": "x"}),
            &mut Audit::default(),
        )
        .unwrap_err();
        assert_eq!(refused.code, -32603);
        assert!(
            refused.message.starts_with("cannot write /proc/version: "),
            "{}",
            refused.message
        );
        assert!(!refused.message.contains("os error"), "{}", refused.message);
        let binary = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(binary.path(), [0xff, 0xfe]).unwrap();
        let binary = read_of(json!({"path": binary.path()})).unwrap_err();
        assert!(
            binary.message.ends_with("not UTF-8 text"),
            "{}",
            binary.message
        );
    }
}
