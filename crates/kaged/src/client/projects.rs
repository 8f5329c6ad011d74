//! `kaged project`: projects loaded into, listed by, reloaded in and unloaded from the daemon.

use kaged_config::DeploymentMode;

use super::transport::{Target, call, target};
use crate::Failure;
use crate::cli::{JsonOutput, ProjectCommand, ProjectRef};

pub async fn project(
    mode_flag: Option<DeploymentMode>,
    command: ProjectCommand,
) -> Result<(), Failure> {
    let target = target(mode_flag)?;
    match command {
        ProjectCommand::Load { path } => {
            let absolute = std::path::absolute(&path)
                .map_err(|e| Failure::Config(format!("{}: {e}", path.display())))?;
            let body = serde_json::json!({"path": absolute});
            let v = call(
                &target,
                reqwest::Method::POST,
                "/api/v1/projects/load",
                Some(body),
            )
            .await?;
            println!(
                "loaded project {} from {}",
                v["project"]["slug"].as_str().unwrap_or("?"),
                v["project"]["root"].as_str().unwrap_or("?")
            );
        }
        ProjectCommand::List {
            output: JsonOutput { json },
        } => {
            let v = call(&target, reqwest::Method::GET, "/api/v1/projects", None).await?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&v["projects"]).unwrap_or_default()
                );
                return Ok(());
            }
            println!("{:<24} {:<18} ROOT", "PROJECT", "STATE");
            let mut notes = Vec::new();
            for p in v["projects"].as_array().into_iter().flatten() {
                let slug = p["slug"].as_str().unwrap_or("?");
                let mut state = if p["valid"] == true {
                    "valid".to_string()
                } else {
                    match p["problems"].as_u64() {
                        Some(1) => "1 problem".to_string(),
                        Some(n) => format!("{n} problems"),
                        None => "invalid".to_string(),
                    }
                };
                if let Some(w) = p["pending_weakening"]["weakenings"].as_array() {
                    state = "weakening pending".into();
                    let list: Vec<&str> = w.iter().filter_map(|w| w["text"].as_str()).collect();
                    notes.push(format!(
                        "{slug}: an edit loosens its cages ({}); the previous configuration stays in force until `kaged project reload {slug} --accept`",
                        list.join("; ")
                    ));
                }
                for o in p["overlaps"].as_array().into_iter().flatten() {
                    state = "overlaps".into();
                    notes.push(format!(
                        "{slug}: overlaps the loaded project {} ({}); its runs are refused until one of them is unloaded",
                        o["slug"].as_str().unwrap_or("?"),
                        o["root"].as_str().unwrap_or("?")
                    ));
                }
                println!(
                    "{:<24} {:<18} {}",
                    slug,
                    state,
                    p["root"].as_str().unwrap_or("?")
                );
            }
            for note in notes {
                eprintln!("kaged: {note}");
            }
        }
        ProjectCommand::Unload {
            project: ProjectRef { project },
        } => {
            let slug = project_slug(&target, &project).await?;
            call(
                &target,
                reqwest::Method::DELETE,
                &format!("/api/v1/projects/{slug}"),
                None,
            )
            .await?;
            println!("unloaded project {slug} (its directory and past sessions are kept)");
        }
        ProjectCommand::Reload {
            project: ProjectRef { project },
            accept,
        } => {
            let slug = project_slug(&target, &project).await?;
            let v = call(
                &target,
                reqwest::Method::POST,
                &format!("/api/v1/projects/{slug}/reload"),
                Some(serde_json::json!({"accept": accept})),
            )
            .await?;
            println!("reloaded project {slug}");
            if accept {
                for w in v["accepted"].as_array().into_iter().flatten() {
                    println!("accepted: {}", w["text"].as_str().unwrap_or("?"));
                }
                if v["project"]["git_recorded"] == true {
                    println!("recorded: the project has a .git");
                }
            }
        }
    }
    Ok(())
}

/// A project named by slug, or by its directory (anything with a `/`, or an existing
/// directory): the slug of the loaded project at that root.
async fn project_slug(target: &Target, project: &str) -> Result<String, Failure> {
    let path = std::path::Path::new(project);
    if !project.contains('/') && !path.is_dir() {
        return Ok(project.to_string());
    }
    let root = std::fs::canonicalize(path)
        .map_err(|e| Failure::Config(format!("{}: {e}", path.display())))?;
    let v = call(target, reqwest::Method::GET, "/api/v1/projects", None).await?;
    v["projects"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["root"].as_str() == Some(&root.display().to_string()))
        .and_then(|p| p["slug"].as_str())
        .map(String::from)
        .ok_or_else(|| {
            Failure::Config(format!(
                "no loaded project has its root at {}; see `kaged project list`",
                root.display()
            ))
        })
}
