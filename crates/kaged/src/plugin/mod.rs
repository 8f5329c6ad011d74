//! `kaged plugin`: `schema` and `validate` need no daemon; `install` copies a plugin into the
//! configured `[plugins] dir` (`install.rs`, the copy itself in `copy.rs`); `list`, `enable`
//! and `disable` ask the daemon (`client/plugins.rs`).

mod copy;
mod install;

use std::path::{Path, PathBuf};

use kaged_config::DeploymentMode;
use kaged_dsl::diagnostics_json;
use kaged_plugin::{MANIFEST_FILE, Manifest, ManifestError, json_schema, load_manifest};

use crate::Failure;
use crate::cli::{Format, PluginCommand};

pub async fn run(command: PluginCommand, mode: Option<DeploymentMode>) -> Result<(), Failure> {
    match command {
        PluginCommand::Schema => {
            println!(
                "{}",
                serde_json::to_string_pretty(&json_schema()).unwrap_or_default()
            );
            Ok(())
        }
        PluginCommand::Validate { path, format } => validate(&path, format),
        PluginCommand::Install { path, yes } => install::install(&path, yes, mode),
        PluginCommand::List { output } => crate::client::plugins_list(mode, output.json).await,
        PluginCommand::Enable { name } => crate::client::plugin_switch(mode, &name, true).await,
        PluginCommand::Disable { name } => crate::client::plugin_switch(mode, &name, false).await,
    }
}

/// A plugin as named on the command line: its directory and its manifest's path.
struct Located {
    dir: PathBuf,
    manifest: PathBuf,
}

/// PATH is a plugin's directory or its `kaged-plugin.yaml`.
fn locate(path: &Path) -> Result<Located, Failure> {
    let meta = std::fs::metadata(path)
        .map_err(|e| Failure::Config(format!("cannot read {}: {e}", path.display())))?;
    if meta.is_dir() {
        return Ok(Located {
            dir: path.to_path_buf(),
            manifest: path.join(MANIFEST_FILE),
        });
    }
    if path.file_name() != Some(MANIFEST_FILE.as_ref()) {
        return Err(Failure::Config(format!(
            "{} is not a plugin: name the plugin's directory or its {MANIFEST_FILE}",
            path.display()
        )));
    }
    let dir = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
        _ => PathBuf::from("."),
    };
    Ok(Located {
        dir,
        manifest: path.to_path_buf(),
    })
}

/// The manifest's text: a regular file of bounded size (as project files are read).
fn read_manifest(path: &Path) -> Result<String, Failure> {
    match kaged_server::read_project_file(path) {
        Ok(Some(text)) => Ok(text),
        Ok(None) => Err(Failure::Config(format!(
            "{} does not exist: a plugin's directory holds its manifest, {MANIFEST_FILE}",
            path.display()
        ))),
        Err(e) => Err(Failure::Config(format!(
            "cannot read {}: {e}",
            path.display()
        ))),
    }
}

/// Every diagnostic as `FILE:LINE:COL: KEY: problem` with its fix on the next line, as
/// `kaged dsl validate` prints them.
fn diagnostics_text(file: &str, error: &ManifestError) -> String {
    let mut out = String::new();
    for d in &error.diagnostics {
        let key = if d.path.is_empty() {
            String::new()
        } else {
            format!("{}: ", d.path)
        };
        out.push_str(&format!(
            "{file}:{}:{}: {key}{}\n",
            d.pos.line, d.pos.column, d.problem
        ));
        if !d.hint.is_empty() {
            out.push_str(&format!("  fix: {}\n", d.hint));
        }
    }
    out
}

/// `N problems found`.
fn problems(n: usize) -> String {
    format!("{n} problem{} found", if n == 1 { "" } else { "s" })
}

/// The one-line summary of a valid manifest.
fn summary(manifest: &Manifest) -> String {
    let tools = manifest.tools.len();
    let capabilities = manifest.capabilities.list().len();
    format!(
        "plugin {} {}: {tools} tool{}, {capabilities} {} declared",
        manifest.name,
        manifest.version,
        if tools == 1 { "" } else { "s" },
        if capabilities == 1 {
            "capability"
        } else {
            "capabilities"
        },
    )
}

/// Validates PATH's manifest: the typed manifest, or the problems printed and exit 1.
fn checked(located: &Located) -> Result<Manifest, Failure> {
    let text = read_manifest(&located.manifest)?;
    load_manifest(&text).map_err(|error| {
        print!(
            "{}",
            diagnostics_text(&located.manifest.display().to_string(), &error)
        );
        eprintln!("kaged: {}", problems(error.diagnostics.len()));
        Failure::Exit(1)
    })
}

fn validate(path: &Path, format: Format) -> Result<(), Failure> {
    let located = locate(path)?;
    let file = located.manifest.display().to_string();
    match format {
        Format::Text => {
            let manifest = checked(&located)?;
            eprintln!("kaged: {file} is valid: {}", summary(&manifest));
            Ok(())
        }
        Format::Json => {
            let text = read_manifest(&located.manifest)?;
            let outcome = load_manifest(&text);
            let diagnostics = match &outcome {
                Ok(_) => Vec::new(),
                Err(e) => e.diagnostics.clone(),
            };
            let doc = serde_json::json!({
                "valid": outcome.is_ok(),
                "files": [file],
                "diagnostics": diagnostics_json(&diagnostics, &[file.as_str()]),
            });
            println!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default());
            match outcome {
                Ok(_) => Ok(()),
                // The problems are printed; exit 1 says "invalid".
                Err(_) => Err(Failure::Exit(1)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problems_are_printed_with_line_column_key_and_fix() {
        let error = load_manifest(
            "name: Bad\nversion: 1\nkaged_api: 1\ndescription: d\ncommand: [x]\ncapabilities: []\n",
        )
        .unwrap_err();
        let text = diagnostics_text("p/kaged-plugin.yaml", &error);
        assert!(
            text.starts_with("p/kaged-plugin.yaml:1:7: name: "),
            "{text}"
        );
        assert!(text.contains("\n  fix: "), "{text}");
        assert!(
            text.contains("p/kaged-plugin.yaml:2:10: version: "),
            "{text}"
        );
        assert!(text.ends_with('\n'));
        assert_eq!(problems(1), "1 problem found");
        assert_eq!(problems(3), "3 problems found");
    }

    #[test]
    fn a_valid_manifest_is_summed_up_in_one_line() {
        let one = load_manifest(
            "name: hello\nversion: 0.1.0\nkaged_api: 1\ndescription: d\ncommand: [x]\ncapabilities: []\ntools: [{name: greet, description: g, input_schema: {type: object}}]\n",
        )
        .unwrap();
        assert_eq!(
            summary(&one),
            "plugin hello 0.1.0: 1 tool, 0 capabilities declared"
        );
        let two = load_manifest(
            "name: notes\nversion: 1.0.0\nkaged_api: 1\ndescription: d\ncommand: [x]\ncapabilities: [\"kaged:storage:read\"]\n",
        )
        .unwrap();
        assert_eq!(
            summary(&two),
            "plugin notes 1.0.0: 0 tools, 1 capability declared"
        );
    }
}
