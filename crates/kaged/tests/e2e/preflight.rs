//! `kaged start` runs `kaged doctor`'s checks: on a host where no cage can be built it says so,
//! shows it in status, and refuses caged work instead of running it uncaged.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

use crate::common::*;

#[tokio::test]
async fn without_bubblewrap_caged_work_is_refused_never_run_uncaged() {
    let tmp = tempfile::tempdir().unwrap();
    // A PATH with the tools kaged needs but no bwrap.
    let bin = tmp.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    for tool in ["sh", "setpriv", "prlimit", "env", "true", "echo"] {
        for dir in ["/usr/bin", "/bin"] {
            let p = std::path::Path::new(dir).join(tool);
            if p.exists() {
                let _ = std::os::unix::fs::symlink(&p, bin.join(tool));
                break;
            }
        }
    }
    let project = tmp.path().join("p");
    std::fs::create_dir_all(project.join(".kaged")).unwrap();
    std::fs::write(
        project.join(".kaged/project.yaml"),
        "version: 1\nproject: nobwrap\nprimary:\n  command: [sh, -c, 'echo ran-uncaged']\n",
    )
    .unwrap();
    let daemon = Daemon::start_with(
        &tmp.path().join("home"),
        &["--bind", "127.0.0.1:0"],
        &[("PATH", bin.to_str().unwrap())],
    );
    assert!(
        daemon
            .stderr_text()
            .contains("no cage can be built on this host"),
        "{}",
        daemon.stderr_text()
    );
    let status = daemon.api_get("/api/v1/status").await;
    assert_eq!(status["sandbox"]["available"], false, "{status}");
    assert!(
        status["sandbox"]["problem"]
            .as_str()
            .unwrap()
            .contains("bubblewrap"),
        "{status}"
    );
    let client = plain_client();
    let nonce = daemon.nonce();
    let load = client
        .post(format!("{}/api/v1/projects/load", daemon.base))
        .header("x-kaged-auth-nonce", &nonce)
        .json(&serde_json::json!({"path": project}))
        .send()
        .await
        .unwrap();
    assert!(load.status().is_success(), "{:?}", load.text().await);
    let start = client
        .post(format!("{}/api/v1/projects/nobwrap/sessions", daemon.base))
        .header("x-kaged-auth-nonce", &nonce)
        .json(&serde_json::json!({"kind": "agent"}))
        .send()
        .await
        .unwrap();
    assert_eq!(start.status(), 503);
    let body: serde_json::Value = start.json().await.unwrap();
    assert_eq!(body["error"]["code"], "unavailable", "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("kaged doctor"),
        "{body}"
    );
    // Nothing was started, so nothing ran uncaged.
    let sessions = daemon.api_get("/api/v1/sessions").await;
    assert_eq!(sessions["sessions"].as_array().unwrap().len(), 0);
}
