//! Projects through the real daemon: load, list, get, reload, unload, the file watcher, and
//! persistence across a restart.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

use std::path::Path;
use std::time::{Duration, Instant};

use crate::common::*;
use reqwest::StatusCode;

const VALID: &str = "version: 1\nproject: demo\nprimary:\n  command: [claude]\ntasks:\n  test: { command: [cargo, test] }\n";

fn write_project(root: &Path, text: &str) {
    std::fs::create_dir_all(root.join(".kaged")).unwrap();
    std::fs::write(root.join(".kaged/project.yaml"), text).unwrap();
}

/// Poll the daemon until `ready` holds for the project (the watcher checks every 2 s).
async fn wait_for(
    d: &Daemon,
    slug: &str,
    ready: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let start = Instant::now();
    loop {
        let v = d.api_get(&format!("/api/v1/projects/{slug}")).await;
        if ready(&v["project"]) {
            return v["project"].clone();
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "condition never held: {v}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn load_list_get_watch_reload_unload_and_restore() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("home");
    let project = tmp.path().join("demo");
    write_project(&project, VALID);
    let d = Daemon::start(&home);

    let out = d.cli(&["project", "load", project.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("loaded project demo from "));
    let list = String::from_utf8(d.cli(&["project", "list"]).stdout).unwrap();
    assert!(list.lines().nth(1).unwrap().starts_with("demo"), "{list}");
    assert!(list.contains("valid"));
    let p = d.api_get("/api/v1/projects/demo").await["project"].clone();
    assert_eq!(p["valid"], true);
    assert_eq!(
        p["config"]["tasks"]["test"]["command"],
        serde_json::json!(["cargo", "test"])
    );

    // An invalid edit is noticed, reported, and does not replace the running configuration.
    write_project(
        &project,
        "version: 1\nproject: demo\nprimary:\n  command: claude --fast\n",
    );
    let p = wait_for(&d, "demo", |p| p["valid"] == false).await;
    assert_eq!(p["diagnostics"][0]["line"], 4);
    assert_eq!(p["diagnostics"][0]["path"], "primary.command");
    assert_eq!(
        p["config"]["primary"]["command"],
        serde_json::json!(["claude"]),
        "last valid config kept"
    );
    // An explicit reload says the same, as dsl_invalid with the diagnostics.
    let r = plain_client()
        .post(format!("{}/api/v1/projects/demo/reload", d.base))
        .header("x-kaged-auth-nonce", d.nonce())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "dsl_invalid");
    assert_eq!(body["error"]["details"]["diagnostics"][0]["column"], 12);

    // A valid edit takes over.
    write_project(&project, &VALID.replace("[claude]", "[claude, --fast]"));
    let p = wait_for(&d, "demo", |p| p["valid"] == true).await;
    assert_eq!(
        p["config"]["primary"]["command"],
        serde_json::json!(["claude", "--fast"])
    );

    // Restored after a daemon restart.
    drop(d.stop());
    let d = Daemon::start(&home);
    let p = wait_for(&d, "demo", |p| p["valid"] == true).await;
    assert_eq!(
        p["config"]["primary"]["command"],
        serde_json::json!(["claude", "--fast"])
    );

    // Unload.
    let r = plain_client()
        .delete(format!("{}/api/v1/projects/demo", d.base))
        .header("x-kaged-auth-nonce", d.nonce())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let r = plain_client()
        .get(format!("{}/api/v1/projects/demo", d.base))
        .header("x-kaged-auth-nonce", d.nonce())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let audit = d.api_get("/api/v1/audit").await;
    let kinds: Vec<&str> = audit["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert!(kinds.contains(&"project.unloaded"), "{kinds:?}");
}

#[tokio::test]
async fn invalid_projects_and_slug_clashes_are_refused_with_reasons() {
    let tmp = tempfile::tempdir().unwrap();
    let d = Daemon::start(&tmp.path().join("home"));
    let bad = tmp.path().join("bad");
    write_project(
        &bad,
        "version: 1\nproject: bad\nprimary:\n  model: openai:gpt-5\n  system_prompt: project:/p.md\n",
    );
    let out = d.cli(&["project", "load", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("422") && err.contains("dsl_invalid"), "{err}");
    assert!(err.contains("project.yaml:4:10: primary.model:"), "{err}");

    let one = tmp.path().join("one");
    let two = tmp.path().join("two");
    write_project(&one, VALID);
    write_project(&two, VALID);
    assert!(
        d.cli(&["project", "load", one.to_str().unwrap()])
            .status
            .success()
    );
    let out = d.cli(&["project", "load", two.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("409"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let r = plain_client()
        .post(format!("{}/api/v1/projects/load", d.base))
        .header("x-kaged-auth-nonce", d.nonce())
        .json(&serde_json::json!({"path": "relative/dir"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    // Without credentials, nothing.
    let r = plain_client()
        .get(format!("{}/api/v1/projects", d.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn local_toml_is_loaded_checked_and_its_secrets_never_shown() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    let inline = "sk-inline-local-secret-0123456789";
    let project = tmp.path().join("listed");
    write_project(&project, VALID);
    std::fs::write(
        home.join("local.toml"),
        format!(
            "operator_name = \"ann\"\n[aliases]\nsonnet = \"claude:sonnet-4\"\n\
             [providers.claude]\napi_key_env = \"ANTHROPIC_API_KEY\"\n\
             [providers.local]\napi_key = \"{inline}\"\n\
             [projects.demo]\npath = \"{}\"\nenv = [\"GITHUB_TOKEN\"]\n",
            project.display()
        ),
    )
    .unwrap();
    let d = Daemon::start(&home);
    // The project listed in local.toml is loaded without `kaged project load`.
    let p = wait_for(&d, "demo", |p| p["valid"] == true).await;
    assert_eq!(p["config"]["project"], "demo");
    let v = d.api_get("/api/v1/local").await;
    assert_eq!(v["local"]["aliases"]["sonnet"], "claude:sonnet-4");
    assert_eq!(
        v["local"]["providers"]["claude"]["api_key_env"],
        "ANTHROPIC_API_KEY"
    );
    assert_eq!(v["local"]["providers"]["local"]["has_inline_key"], true);
    assert!(!v.to_string().contains(inline));
    assert!(
        d.stderr_text()
            .contains("providers.local.api_key: an inline key"),
        "{}",
        d.stderr_text()
    );
    let (status, log) = d.stop();
    assert!(status.success());
    assert!(!log.contains(inline));
    let db = std::fs::read(home.join("kaged.db")).unwrap();
    assert!(!String::from_utf8_lossy(&db).contains(inline));

    // A broken local.toml stops the start with file, line and key.
    std::fs::write(home.join("local.toml"), "[aliases]\nsonnet = \"nocolon\"\n").unwrap();
    let out = kaged_cmd(&[("KAGED_HOME", home.to_str().unwrap())])
        .args(["start", "--bind", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("local.toml:2:10: aliases.sonnet:"), "{err}");
}

#[tokio::test]
async fn symlinked_files_are_refused_and_a_deleted_file_is_never_reported_valid() {
    let tmp = tempfile::tempdir().unwrap();
    let d = Daemon::start(&tmp.path().join("home"));
    // A project file that is a symlink (it could point anywhere the daemon can read).
    let linked = tmp.path().join("linked");
    std::fs::create_dir_all(linked.join(".kaged")).unwrap();
    let real = tmp.path().join("real.yaml");
    std::fs::write(&real, VALID).unwrap();
    std::os::unix::fs::symlink(&real, linked.join(".kaged/project.yaml")).unwrap();
    let out = d.cli(&["project", "load", linked.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not a regular file"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = kaged_cmd(&[])
        .args(["dsl", "validate", linked.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));

    // Deleted while loaded: the state says so, and the last valid configuration stays.
    let project = tmp.path().join("demo");
    write_project(&project, VALID);
    assert!(
        d.cli(&["project", "load", project.to_str().unwrap()])
            .status
            .success()
    );
    std::fs::remove_file(project.join(".kaged/project.yaml")).unwrap();
    let p = wait_for(&d, "demo", |p| p["valid"] == false).await;
    assert!(
        p["diagnostics"][0]["problem"]
            .as_str()
            .unwrap()
            .contains("does not exist"),
        "{p}"
    );
    assert_eq!(p["config"]["project"], "demo");
}

// ---------------------------------------------------------------------------------------------
// Nested projects, weakening reloads, planted .git (issue 11)

fn audit_kinds(audit: &serde_json::Value) -> Vec<String> {
    audit["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap().to_string())
        .collect()
}

/// Run the project's `probe` task to its end; its transcript.
async fn run_probe(d: &Daemon, slug: &str) -> String {
    let (status, body) = d
        .call(
            reqwest::Method::POST,
            &format!("/api/v1/projects/{slug}/sessions"),
            Some(serde_json::json!({"kind": "task", "name": "probe"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let id = body["session"]["id"].as_str().unwrap().to_string();
    let start = Instant::now();
    loop {
        let (_, s) = d
            .call(
                reqwest::Method::GET,
                &format!("/api/v1/sessions/{id}"),
                None,
            )
            .await;
        if s["session"]["ended_at_ms"].is_i64() {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "never ended: {s}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let r = plain_client()
        .get(format!("{}/api/v1/sessions/{id}/transcript", d.base))
        .header("x-kaged-auth-nonce", d.nonce())
        .send()
        .await
        .unwrap();
    String::from_utf8_lossy(&r.bytes().await.unwrap()).into_owned()
}

/// A project whose `probe` task prints the hostname the run sees (the cage's is `kaged-cage`)
/// and its network interfaces (a cage without `network: host` has only `lo`).
fn probe_project(slug: &str, cage: &str) -> String {
    format!(
        "version: 1\nproject: {slug}\nprimary:\n  command: [sh]\n{cage}tasks:\n  probe: {{ command: [sh, -c, \"echo host=$(cat /proc/sys/kernel/hostname) net=$(sed -n '3,$p' /proc/net/dev | cut -d: -f1 | tr -d ' ' | tr '\\\\n' ,)\"] }}\n"
    )
}

#[tokio::test]
async fn nested_project_roots_are_refused_either_way_and_reported_at_start() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("home");
    let outer = tmp.path().join("mono");
    let inner = outer.join("packages/pkg");
    write_project(&outer, &VALID.replace("project: demo", "project: mono"));
    write_project(&inner, &VALID.replace("project: demo", "project: pkg"));
    let d = Daemon::start(&home);

    // A project inside a loaded one.
    assert!(
        d.cli(&["project", "load", outer.to_str().unwrap()])
            .status
            .success()
    );
    let out = d.cli(&["project", "load", inner.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("409") && err.contains("conflict"), "{err}");
    assert!(
        err.contains("`pkg`") && err.contains("`mono`") && err.contains("inside"),
        "{err}"
    );
    assert!(err.contains("unload"), "{err}");

    // A project around a loaded one.
    let (status, _) = d
        .call(reqwest::Method::DELETE, "/api/v1/projects/mono", None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert!(
        d.cli(&["project", "load", inner.to_str().unwrap()])
            .status
            .success()
    );
    let (status, body) = d
        .call(
            reqwest::Method::POST,
            "/api/v1/projects/load",
            Some(serde_json::json!({"path": outer})),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("`mono`") && message.contains("`pkg`") && message.contains("unload"),
        "{message}"
    );

    // A registry that already holds overlapping roots (local.toml lists the outer one): both
    // stay listed, each says which it overlaps, and neither starts runs until one is unloaded.
    drop(d.stop());
    std::fs::write(
        home.join("local.toml"),
        format!("[projects.mono]\npath = \"{}\"\n", outer.display()),
    )
    .unwrap();
    let d = Daemon::start(&home);
    let p = wait_for(&d, "mono", |p| p["valid"] == true).await;
    assert_eq!(p["overlaps"][0]["slug"], "pkg", "{p}");
    let p = wait_for(&d, "pkg", |p| p["valid"] == true).await;
    assert_eq!(p["overlaps"][0]["slug"], "mono", "{p}");
    assert!(d.stderr_text().contains("overlap"), "{}", d.stderr_text());
    let (status, body) = d
        .call(
            reqwest::Method::POST,
            "/api/v1/projects/pkg/sessions",
            Some(serde_json::json!({"kind": "task", "name": "test"})),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("unload"),
        "{body}"
    );
    assert!(audit_kinds(&d.api_get("/api/v1/audit").await).contains(&"project.overlap".into()));
}

#[tokio::test]
async fn a_weakening_edit_waits_for_the_operator_and_the_old_cage_stays_in_force() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("home");
    let project = tmp.path().join("weak");
    write_project(&project, &probe_project("weak", ""));
    std::fs::create_dir_all(project.join("out")).unwrap();
    let d = Daemon::start(&home);
    assert!(
        d.cli(&["project", "load", project.to_str().unwrap()])
            .status
            .success()
    );
    let caged = run_probe(&d, "weak").await;
    assert!(caged.contains("host=kaged-cage net=lo,"), "{caged}");

    // Host network and a writable grant: held, listed, audited; the old cage stays.
    write_project(
        &project,
        &probe_project(
            "weak",
            "  cage:\n    network: host\n    filesystem: [{ path: \"project:/out\", mode: rw }]\n",
        ),
    );
    let p = wait_for(&d, "weak", |p| p["pending_weakening"].is_object()).await;
    let listed = p["pending_weakening"]["weakenings"].to_string();
    assert!(listed.contains("network host (was none)"), "{listed}");
    assert!(
        listed.contains("filesystem grant added: project:/out (rw)"),
        "{listed}"
    );
    assert!(p["config"]["primary"].get("cage").is_none(), "{p}");
    let still = run_probe(&d, "weak").await;
    assert!(still.contains("host=kaged-cage net=lo,"), "{still}");

    // Then `cage: disabled`: still held; a session start still runs caged.
    write_project(&project, &probe_project("weak", "  cage: disabled\n"));
    let p = wait_for(&d, "weak", |p| {
        p["pending_weakening"]["weakenings"]
            .to_string()
            .contains("cage disabled")
    })
    .await;
    assert!(p["config"]["primary"].get("cage").is_none(), "{p}");
    let still = run_probe(&d, "weak").await;
    assert!(still.contains("host=kaged-cage net=lo,"), "{still}");
    let list = String::from_utf8(d.cli(&["project", "list"]).stdout).unwrap();
    assert!(list.contains("weakening pending"), "{list}");

    // Loading the same directory again does not apply it either.
    let out = d.cli(&["project", "load", project.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("weakening_pending") && err.contains("--accept"),
        "{err}"
    );
    // Nor does a reload without --accept.
    let out = d.cli(&["project", "reload", "weak"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cage disabled") && err.contains("--accept"),
        "{err}"
    );
    let still = run_probe(&d, "weak").await;
    assert!(still.contains("host=kaged-cage"), "{still}");

    // A restart does not apply it either: the files are judged against what was in force.
    drop(d.stop());
    let d = Daemon::start(&home);
    let p = wait_for(&d, "weak", |p| p["pending_weakening"].is_object()).await;
    assert!(p["config"]["primary"].get("cage").is_none(), "{p}");
    let still = run_probe(&d, "weak").await;
    assert!(still.contains("host=kaged-cage"), "{still}");

    // The operator accepts (by path): the new policy is in force, and who accepted is audited.
    let out = d.cli(&["project", "reload", project.to_str().unwrap(), "--accept"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("cage disabled"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let p = d.api_get("/api/v1/projects/weak").await["project"].clone();
    assert!(p["pending_weakening"].is_null(), "{p}");
    assert_eq!(p["config"]["primary"]["cage"], "disabled");
    let uncaged = run_probe(&d, "weak").await;
    assert!(!uncaged.contains("host=kaged-cage"), "{uncaged}");

    let audit = d.api_get("/api/v1/audit?limit=1000").await;
    let events = audit["events"].as_array().unwrap();
    let pending: Vec<_> = events
        .iter()
        .filter(|e| e["kind"] == "project.weakening_pending")
        .collect();
    assert!(pending.len() >= 2, "{audit}");
    let accepted = events
        .iter()
        .find(|e| e["kind"] == "project.weakening_accepted")
        .unwrap_or_else(|| panic!("{audit}"));
    assert!(
        accepted["identity"]
            .as_str()
            .is_some_and(|who| !who.is_empty()),
        "who accepted: {accepted}"
    );
    assert!(
        accepted["detail"]["weakenings"]
            .to_string()
            .contains("cage disabled"),
        "{accepted}"
    );

    // Tightening again applies at once.
    write_project(&project, &probe_project("weak", ""));
    let p = wait_for(&d, "weak", |p| p["config"]["primary"].get("cage").is_none()).await;
    assert!(p["pending_weakening"].is_null(), "{p}");
}

#[tokio::test]
async fn a_planted_git_refuses_the_next_run_until_accepted() {
    let tmp = tempfile::tempdir().unwrap();
    let project = tmp.path().join("nogit");
    write_project(&project, &probe_project("nogit", ""));
    let d = Daemon::start(&tmp.path().join("home"));
    assert!(
        d.cli(&["project", "load", project.to_str().unwrap()])
            .status
            .success()
    );
    // An empty .git (what the cage's mask leaves on the host) is not a planted one.
    std::fs::create_dir(project.join(".git")).unwrap();
    assert!(run_probe(&d, "nogit").await.contains("host="));

    std::fs::write(
        project.join(".git/config"),
        "[core]\n\tfsmonitor = \"touch /tmp/owned\"\n",
    )
    .unwrap();
    let (status, body) = d
        .call(
            reqwest::Method::POST,
            "/api/v1/projects/nogit/sessions",
            Some(serde_json::json!({"kind": "task", "name": "probe"})),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["error"]["code"], "git_planted", "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains(&project.join(".git").display().to_string())
            && message.contains("kaged project reload nogit --accept")
            && message.contains("fsmonitor"),
        "{message}"
    );
    let audit = d.api_get("/api/v1/audit").await;
    assert!(
        audit_kinds(&audit).contains(&"project.git_planted".into()),
        "{audit}"
    );

    // Nor does a restart forget that the project had no .git.
    drop(d.stop());
    let d = Daemon::start(&tmp.path().join("home"));
    let (status, body) = d
        .call(
            reqwest::Method::POST,
            "/api/v1/projects/nogit/sessions",
            Some(serde_json::json!({"kind": "task", "name": "probe"})),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");

    let out = d.cli(&["project", "reload", "nogit", "--accept"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(run_probe(&d, "nogit").await.contains("host="));
}
