//! Reading a project's files: only regular files (never through a symlink) of at most 1 MiB,
//! checked by `kaged_dsl`, with the modification stamps the watcher compares.

use std::path::{Path, PathBuf};

use kaged_dsl::{Checked, Diagnostic, diagnostics_json, load_project};
use serde_json::json;

use crate::error::{ApiError, ErrorCode};

use super::*;

/// `(project.yaml, project.local.yaml)` of a project directory, or of its project.yaml given
/// directly.
pub fn project_files(path: &Path) -> (PathBuf, PathBuf) {
    let base = if path.is_dir() {
        path.join(".kaged/project.yaml")
    } else {
        path.to_path_buf()
    };
    let local = base.with_file_name("project.local.yaml");
    (base, local)
}

/// Why a project's files could not be read.
#[derive(Debug)]
pub struct UnreadableProject {
    /// `project.yaml` does not exist (as opposed to being unreadable).
    pub missing: bool,
    pub message: String,
}

/// Read `project.yaml` and, when present, `project.local.yaml` (regular files only, capped).
/// The one reader behind the daemon, `kaged dsl validate` and `kaged cage run`.
pub fn read_project_texts(
    base: &Path,
    local: &Path,
) -> Result<(String, Option<String>), UnreadableProject> {
    let unreadable = |path: &Path, e: std::io::Error| UnreadableProject {
        missing: false,
        message: format!("cannot read {}: {e}", path.display()),
    };
    let base_text = read_project_file(base)
        .map_err(|e| unreadable(base, e))?
        .ok_or_else(|| UnreadableProject {
            missing: true,
            message: format!(
                "{} does not exist; a project keeps its file at PROJECT/.kaged/project.yaml",
                base.display()
            ),
        })?;
    let local_text = read_project_file(local).map_err(|e| unreadable(local, e))?;
    Ok((base_text, local_text))
}

pub(super) fn file_names(root: &Path) -> [String; 2] {
    let (base, local) = project_files(root);
    [base.display().to_string(), local.display().to_string()]
}

pub(super) fn stamp(root: &Path) -> Stamp {
    let (base, local) = project_files(root);
    let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    (modified(&base), modified(&local))
}

/// Largest project file kaged reads (they are a few KiB).
pub const MAX_PROJECT_FILE_BYTES: u64 = 1024 * 1024;

/// Read a project file: a regular file (not a symlink, FIFO or device), at most
/// `MAX_PROJECT_FILE_BYTES`. `Ok(None)` when it does not exist.
pub fn read_project_file(path: &Path) -> std::io::Result<Option<String>> {
    use std::io::Read;
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    if !meta.file_type().is_file() {
        return Err(std::io::Error::other(
            "not a regular file (symlinks, FIFOs and devices are refused)",
        ));
    }
    if meta.len() > MAX_PROJECT_FILE_BYTES {
        return Err(std::io::Error::other(format!(
            "larger than {} KiB",
            MAX_PROJECT_FILE_BYTES / 1024
        )));
    }
    let mut text = String::new();
    std::fs::File::open(path)?
        .take(MAX_PROJECT_FILE_BYTES + 1)
        .read_to_string(&mut text)?;
    Ok(Some(text))
}

/// Read and check a project's files (blocking; the files are small).
pub(super) fn read(root: &Path) -> Result<(Checked, Stamp), ApiError> {
    let (base, local) = project_files(root);
    let stamp = stamp(root);
    let (base_text, local_text) = read_project_texts(&base, &local).map_err(|e| {
        ApiError::new(
            if e.missing {
                ErrorCode::NotFound
            } else {
                ErrorCode::BadRequest
            },
            e.message,
        )
    })?;
    Ok((load_project(&base_text, local_text.as_deref()), stamp))
}

/// A read failure or rename as the project's one diagnostic, so its state never claims to be
/// valid.
pub(super) fn state_problem(message: &str) -> Diagnostic {
    Diagnostic {
        pos: kaged_dsl::Pos {
            source: kaged_dsl::BASE,
            line: 1,
            column: 1,
        },
        path: String::new(),
        problem: message.to_string(),
        hint: "restore the file, or unload the project".into(),
    }
}

pub(super) async fn read_async(root: PathBuf) -> Result<(Checked, Stamp), ApiError> {
    tokio::task::spawn_blocking(move || read(&root))
        .await
        .map_err(|e| ApiError::internal(format!("project check failed: {e}")))?
}

pub(super) fn invalid(root: &Path, diagnostics: &[Diagnostic]) -> ApiError {
    let names = file_names(root);
    let files = [names[0].as_str(), names[1].as_str()];
    let n = diagnostics.len();
    ApiError {
        code: ErrorCode::DslInvalid,
        message: format!(
            "the project file has {n} problem{}; run `kaged dsl validate {}` for details",
            if n == 1 { "" } else { "s" },
            root.display()
        ),
        details: Some(json!({ "diagnostics": diagnostics_json(diagnostics, &files) })),
    }
}
