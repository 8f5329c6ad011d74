//! `kaged dsl validate` and `kaged dsl schema`.

use std::path::Path;

use kaged_dsl::{check_project, diagnostics_json, json_schema};

use crate::Failure;
use crate::cli::{DslCommand, Format};

pub fn run(command: DslCommand) -> Result<(), Failure> {
    match command {
        DslCommand::Schema => {
            println!(
                "{}",
                serde_json::to_string_pretty(&json_schema()).unwrap_or_default()
            );
            Ok(())
        }
        DslCommand::Validate { path, format } => validate(&path, format),
    }
}

fn validate(path: &Path, format: Format) -> Result<(), Failure> {
    let (base_path, local_path) = kaged_server::project_files(path);
    let (base, local) = kaged_server::read_project_texts(&base_path, &local_path)
        .map_err(|e| Failure::Config(e.message))?;
    let diagnostics = check_project(&base, local.as_deref());
    let base_name = base_path.display().to_string();
    let local_name = local_path.display().to_string();
    let files = [base_name.as_str(), local_name.as_str()];
    match format {
        Format::Json => {
            let doc = serde_json::json!({
                "valid": diagnostics.is_empty(),
                "files": if local.is_some() { files.to_vec() } else { vec![files[0]] },
                "diagnostics": diagnostics_json(&diagnostics, &files),
            });
            println!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default());
        }
        Format::Text => {
            for d in &diagnostics {
                let file = files.get(d.pos.source).copied().unwrap_or("?");
                let key = if d.path.is_empty() {
                    String::new()
                } else {
                    format!("{}: ", d.path)
                };
                println!("{file}:{}:{}: {key}{}", d.pos.line, d.pos.column, d.problem);
                if !d.hint.is_empty() {
                    println!("  fix: {}", d.hint);
                }
            }
            if diagnostics.is_empty() {
                let overlay = if local.is_some() {
                    " (with project.local.yaml)"
                } else {
                    ""
                };
                eprintln!("kaged: {base_name}{overlay} is valid");
            } else {
                let n = diagnostics.len();
                eprintln!("kaged: {n} problem{} found", if n == 1 { "" } else { "s" });
            }
        }
    }
    if diagnostics.is_empty() {
        Ok(())
    } else {
        // The problems are printed; exit 1 says "invalid".
        Err(Failure::Exit(1))
    }
}
