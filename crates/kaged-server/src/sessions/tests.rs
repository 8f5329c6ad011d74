//! In-process tests of the session manager: a real SQLite store and audit log in a temporary
//! directory, real (uncaged) processes on PTYs, and a fake project lookup.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::error::ErrorCode;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kaged_cage::RunKind;
use kaged_session::state::{Event, State, StateKind};
use kaged_store::{SessionRecord, StateChange, Store};
use serde_json::json;

use super::start::{StartRequest, start};
use super::*;
use crate::audit::AuditLog;

/// The projects a test has "loaded".
struct FakeProjects(HashMap<String, LoadedProject>);

impl Projects for FakeProjects {
    fn for_run(&self, slug: &str) -> Result<LoadedProject, ApiError> {
        self.0
            .get(slug)
            .cloned()
            .ok_or_else(|| ApiError::new(ErrorCode::NotFound, format!("no project `{slug}`")))
    }

    fn root(&self, slug: &str) -> Option<PathBuf> {
        self.0.get(slug).map(|p| p.root.clone())
    }
}

fn settings(dir: &Path) -> RunSettings {
    RunSettings {
        home: dir.to_path_buf(),
        transcripts: dir.join("transcripts"),
        sandbox_disabled: false,
        sandbox_problem: None,
        helper: None,
        cage_user: "nobody".into(),
        default_limits: kaged_cage::Limits::default(),
        local: Default::default(),
        local_path: dir.join("local.toml"),
        models: kaged_config::ModelSettings {
            request_timeout_secs: 5,
            stall_timeout_secs: 5,
            max_attempts: 1,
        },
        transcript_max_mb: 64,
        sessions_max_total_mb: 1024,
        sessions_max_age_days: 30,
        approval_timeout_secs: 0,
        holders: None,
        on_daemon_stop: kaged_config::OnDaemonStop::Keep,
    }
}

/// `config` (JSON is YAML) through the DSL, as the daemon keeps it once it validated.
fn resolved(config: serde_json::Value) -> serde_json::Value {
    let checked = kaged_dsl::load_project(&config.to_string(), None);
    checked
        .resolved()
        .unwrap_or_else(|| panic!("{config} is not a valid project: {:?}", checked.diagnostics))
}

/// An uncaged project (`cage: disabled`, so no bubblewrap is needed) whose tasks are `tasks`.
fn project(root: &Path, tasks: serde_json::Value) -> LoadedProject {
    LoadedProject {
        root: root.to_path_buf(),
        config: resolved(json!({
            "version": 1,
            "project": "demo",
            "primary": {"command": ["sh"], "cage": "disabled"},
            "tasks": tasks,
        })),
        had_git: false,
    }
}

/// A session manager over a fresh store in `dir` with the project `demo` rooted there
/// (inside a runtime: the audit log and the store need one).
fn manager(dir: &Path, settings: RunSettings) -> (Sessions, Store) {
    let store = Store::open(&kaged_config::StorageUrl::Sqlite(dir.join("k.db"))).unwrap();
    let audit = AuditLog::open(&dir.join("audit.log"), store.clone()).unwrap();
    let projects = FakeProjects(HashMap::from([(
        "demo".to_string(),
        project(
            dir,
            json!({
                "hello": {"command": ["sh", "-c", "printf 'hello from the run'; exit 3"]},
                "sleep": {"command": ["sleep", "60"]},
            }),
        ),
    )]));
    let policy = kaged_auth::Policy {
        allowed: kaged_auth::AllowedHosts::for_listeners(&["127.0.0.1:7777".parse().unwrap()], &[]),
        nonce: kaged_auth::Secret::new("n".repeat(64)),
        mechanism: kaged_auth::Mechanism::LaunchUrl,
        operator: "user:tester".into(),
        bootstrap_token: None,
        require_token_identity: false,
    };
    let sessions = Sessions::new(Deps {
        store: store.clone(),
        audit,
        settings,
        projects: Arc::new(projects),
        policy: Arc::new(policy),
        shutdown: tokio::sync::watch::channel(false).1,
        revoked_tokens: tokio::sync::broadcast::channel(4).0,
        notifier: crate::notify::Notifier::disabled(),
        hooks: Default::default(),
        plugins: None,
    });
    (sessions, store)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn task(name: &str) -> StartRequest {
    StartRequest {
        project: "demo".into(),
        kind: RunKind::Task,
        name: Some(name.into()),
        rows: 24,
        cols: 80,
        actor: "tester".into(),
        source: None,
        message: None,
        resume: None,
    }
}

/// The states published for session `id` until its run ended (at most 20 s).
async fn states_until_end(
    events: &mut tokio::sync::broadcast::Receiver<RunEvent>,
    id: &str,
) -> Vec<String> {
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        let Ok(Ok(e)) = tokio::time::timeout(Duration::from_secs(1), events.recv()).await else {
            continue;
        };
        if e.transition.session_id != id {
            continue;
        }
        seen.push(e.transition.state.clone());
        if matches!(e.transition.state.as_str(), "exited" | "killed" | "failed") {
            break;
        }
    }
    seen
}

async fn audit_kinds(store: &Store, session: &str) -> Vec<String> {
    let mut kinds: Vec<(i64, String)> = store
        .recent_audit(1000)
        .await
        .unwrap()
        .into_iter()
        .filter(|a| a.event.detail.get("session").and_then(|s| s.as_str()) == Some(session))
        .map(|a| (a.id, a.event.kind))
        .collect();
    kinds.sort();
    kinds.into_iter().map(|(_, k)| k).collect()
}

/// A task runs to its exit: every change is stored and published in order, the output reaches
/// the transcript and memory, the row gets the exit code and the output's length, and the
/// start and the end are audited once each.
#[test]
fn a_run_goes_from_queued_to_exited_in_order() {
    let runtime = runtime();
    let tmp = tempfile::tempdir().unwrap();
    runtime.block_on(async {
        let (sessions, store) = manager(tmp.path(), settings(tmp.path()));
        let mut events = sessions.subscribe();
        let record = start(&sessions, task("hello")).await.unwrap();
        assert_eq!(record.state, "queued");
        let states = states_until_end(&mut events, &record.id).await;
        assert_eq!(states, ["queued", "starting", "running", "exited"]);
        let live = sessions
            .get(&record.id)
            .expect("an ended run stays in memory");
        assert!(matches!(live.state(), State::Exited { code: 3, .. }));
        let output = b"hello from the run";
        assert_eq!(live.end(), output.len() as u64);
        let transcript = std::fs::read(sessions.transcript_path(&record.id)).unwrap();
        assert_eq!(transcript, output);
        let (screen, _) = live.snapshot();
        assert!(String::from_utf8_lossy(&screen).contains("hello from the run"));
        assert!(
            !live.send_input(Input::Bytes(b"x".to_vec())),
            "an ended run takes no input"
        );
        // The runner records the extent right after EOF; the row has it by the end.
        let row = store.get_session(record.id.clone()).await.unwrap().unwrap();
        assert_eq!(row.state, "exited");
        assert_eq!(row.exit_code, Some(3));
        assert_eq!(row.output_bytes, Some(output.len() as u64));
        let stored: Vec<String> = store
            .transitions_after(0, Some(record.id.clone()), 100)
            .await
            .unwrap()
            .into_iter()
            .map(|t| t.state)
            .collect();
        assert_eq!(stored, states, "what is published is what is stored");
        assert_eq!(
            audit_kinds(&store, &record.id).await,
            ["session.start", "session.end"]
        );
        assert!(sessions.running().is_empty());
    });
}

/// A kill of a running run: `stopping` first, then `killed` once the process is gone (it
/// leaves on SIGTERM, well within the grace), recorded with who killed it; a second kill and
/// a late exit change nothing.
#[test]
fn a_kill_ends_a_running_run() {
    let runtime = runtime();
    let tmp = tempfile::tempdir().unwrap();
    runtime.block_on(async {
        let (sessions, store) = manager(tmp.path(), settings(tmp.path()));
        let mut events = sessions.subscribe();
        let record = start(&sessions, task("sleep")).await.unwrap();
        let live = sessions.get(&record.id).unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while live.state().kind() != StateKind::Running {
            assert!(Instant::now() < deadline, "the run never started");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(sessions.running().len(), 1);
        stop::abort(&sessions, &live, "tester").await;
        assert!(stop::wait_ended(&live, Duration::from_secs(10)).await);
        assert_eq!(
            live.state(),
            State::Killed {
                by: "tester".into()
            }
        );
        let states = states_until_end(&mut events, &record.id).await;
        assert_eq!(
            states,
            ["queued", "starting", "running", "stopping", "killed"]
        );
        assert_eq!(
            sessions
                .transition(
                    &live,
                    Event::Kill {
                        actor: "again".into()
                    },
                    "again"
                )
                .await,
            None,
            "a killed run cannot be killed again"
        );
        let row = store.get_session(record.id.clone()).await.unwrap().unwrap();
        assert_eq!(row.state, "killed");
        assert_eq!(row.reason.as_deref(), Some("tester"));
        assert!(sessions.running().is_empty());
    });
}

/// Refusals before anything is created: an unknown project (from the lookup), a root that is
/// gone, a `.git` that appeared since the load (audited), and a sandbox that cannot be built.
#[test]
fn starts_are_refused_before_anything_is_created() {
    let runtime = runtime();
    let tmp = tempfile::tempdir().unwrap();
    runtime.block_on(async {
        let (sessions, store) = manager(tmp.path(), settings(tmp.path()));
        let mut unknown = task("hello");
        unknown.project = "nope".into();
        assert_eq!(
            start(&sessions, unknown).await.unwrap_err().code,
            ErrorCode::NotFound
        );
        let mut unknown_task = task("missing");
        unknown_task.name = Some("missing".into());
        assert_eq!(
            start(&sessions, unknown_task).await.unwrap_err().code,
            ErrorCode::BadRequest
        );
        std::fs::create_dir_all(tmp.path().join(".git")).unwrap();
        std::fs::write(tmp.path().join(".git/config"), "[core]\n").unwrap();
        assert_eq!(
            start(&sessions, task("hello")).await.unwrap_err().code,
            ErrorCode::GitPlanted
        );
        let planted: Vec<_> = store
            .recent_audit(100)
            .await
            .unwrap()
            .into_iter()
            .filter(|a| a.event.kind == "project.git_planted")
            .collect();
        assert_eq!(planted.len(), 1);
        assert!(store.list_sessions(None, 10).await.unwrap().is_empty());
        assert!(sessions.running().is_empty());
    });
    // A caged project on a host where no cage can be built: refused, never run uncaged.
    let other = tempfile::tempdir().unwrap();
    runtime.block_on(async {
        let mut s = settings(other.path());
        s.sandbox_problem = Some("bubblewrap is missing".into());
        let (sessions, _store) = manager(other.path(), s);
        let mut caged = project(other.path(), json!({}));
        caged.config = resolved(json!({
            "version": 1,
            "project": "demo",
            "primary": {"command": ["sh"]},
        }));
        let sessions = Sessions::new(Deps {
            projects: Arc::new(FakeProjects(HashMap::from([("demo".to_string(), caged)]))),
            ..sessions_deps(&sessions)
        });
        let mut terminal = task("x");
        terminal.kind = RunKind::Terminal;
        terminal.name = None;
        let e = start(&sessions, terminal).await.unwrap_err();
        assert_eq!(e.code, ErrorCode::Unavailable);
        assert!(e.message.contains("bubblewrap is missing"), "{}", e.message);
    });
    // The root went away.
    let gone = tempfile::tempdir().unwrap();
    let root = gone.path().join("project");
    std::fs::create_dir(&root).unwrap();
    runtime.block_on(async {
        let (sessions, _store) = manager(gone.path(), settings(gone.path()));
        let sessions = Sessions::new(Deps {
            projects: Arc::new(FakeProjects(HashMap::from([(
                "demo".to_string(),
                project(&root, json!({"hello": {"command": ["true"]}})),
            )]))),
            ..sessions_deps(&sessions)
        });
        std::fs::remove_dir(&root).unwrap();
        assert_eq!(
            start(&sessions, task("hello")).await.unwrap_err().code,
            ErrorCode::ProjectMissing
        );
    });
}

/// The dependencies of `sessions` again (to build a variant with other projects).
fn sessions_deps(sessions: &Sessions) -> Deps {
    let d = sessions.deps();
    Deps {
        store: d.store.clone(),
        audit: d.audit.clone(),
        settings: d.settings.clone(),
        projects: d.projects.clone(),
        policy: d.policy.clone(),
        shutdown: d.shutdown.clone(),
        revoked_tokens: d.revoked_tokens.clone(),
        notifier: d.notifier.clone(),
        hooks: d.hooks.clone(),
        plugins: d.plugins.clone(),
    }
}

/// Retention: with the size limit at zero every ended run's transcript goes (row marked,
/// audited), a running run's stays; a dry run deletes nothing.
#[test]
fn retention_prunes_ended_transcripts_and_never_a_running_one() {
    let runtime = runtime();
    let tmp = tempfile::tempdir().unwrap();
    runtime.block_on(async {
        let mut s = settings(tmp.path());
        s.sessions_max_total_mb = 0;
        let (sessions, store) = manager(tmp.path(), s);
        let mut events = sessions.subscribe();
        let ended = start(&sessions, task("hello")).await.unwrap();
        states_until_end(&mut events, &ended.id).await;
        let running = start(&sessions, task("sleep")).await.unwrap();
        let live = sessions.get(&running.id).unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while live.state().kind() != StateKind::Running {
            assert!(Instant::now() < deadline, "the run never started");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // Something on disk for the running one too.
        std::fs::write(sessions.transcript_path(&running.id), b"partial").unwrap();
        let ended_path = sessions.transcript_path(&ended.id);
        let dry = retention::prune(&sessions, true, "tester", None)
            .await
            .unwrap();
        assert_eq!(dry["pruned"].as_array().unwrap().len(), 1);
        assert!(ended_path.exists(), "a dry run deletes nothing");
        let report = retention::prune(&sessions, false, "tester", None)
            .await
            .unwrap();
        let pruned = report["pruned"].as_array().unwrap();
        assert_eq!(pruned.len(), 1);
        assert_eq!(pruned[0]["session"], json!(ended.id));
        assert!(!ended_path.exists());
        assert!(sessions.transcript_path(&running.id).exists());
        let row = store.get_session(ended.id.clone()).await.unwrap().unwrap();
        assert!(row.transcript_pruned_at_ms.is_some());
        assert_eq!(row.output_bytes, Some(18));
        assert!(
            audit_kinds(&store, &ended.id)
                .await
                .contains(&"session.transcript.pruned".to_string())
        );
        sessions.stop_all(false).await;
        assert!(sessions.running().is_empty(), "stop_all ends every run");
    });
}

/// Ended runs stay in memory for a while, then are forgotten; running ones never are.
#[test]
fn sweep_forgets_long_ended_runs_only() {
    let runtime = runtime();
    let tmp = tempfile::tempdir().unwrap();
    runtime.block_on(async {
        let (sessions, _store) = manager(tmp.path(), settings(tmp.path()));
        let mut events = sessions.subscribe();
        let ended = start(&sessions, task("hello")).await.unwrap();
        states_until_end(&mut events, &ended.id).await;
        sessions.sweep(crate::audit::now_ms());
        assert!(sessions.get(&ended.id).is_some(), "just ended: kept");
        sessions.sweep(crate::audit::now_ms() + 11 * 60 * 1000);
        assert!(
            sessions.get(&ended.id).is_none(),
            "ended 11 minutes ago: forgotten"
        );
    });
}

fn record(id: &str) -> SessionRecord {
    SessionRecord {
        id: id.into(),
        project: "p".into(),
        kind: "task".into(),
        name: "t".into(),
        command: vec!["true".into()],
        caged: true,
        state: "queued".into(),
        exit_code: None,
        reason: None,
        created_by: "tester".into(),
        created_at_ms: 0,
        ended_at_ms: None,
        transcript_pruned_at_ms: None,
        output_bytes: None,
        dropped: None,
        conversation: false,
    }
}

fn change(id: &str, state: &str) -> StateChange {
    StateChange {
        session_id: id.into(),
        state: state.into(),
        at_ms: 0,
        actor: "tester".into(),
        detail: json!({}),
        exit_code: None,
        reason: None,
        ended: false,
    }
}

/// Many runs changing state at once (session creations and transitions, each from a task
/// of its own on a multi-threaded runtime, as run threads and handlers do): a subscriber
/// of the stream sees every stored id exactly once, in increasing order. The events
/// WebSocket relies on it: it skips ids at or below its cursor.
#[test]
fn concurrent_publishers_publish_in_id_order() {
    const PUBLISHERS: usize = 16;
    const CHANGES: usize = 40;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let (sessions, store) = runtime.block_on(async { manager(tmp.path(), settings(tmp.path())) });
    let mut events = sessions.subscribe();
    let stored: Vec<i64> = runtime.block_on(async {
        let mut tasks = Vec::new();
        for p in 0..PUBLISHERS {
            let (store, sessions) = (store.clone(), sessions.clone());
            tasks.push(tokio::spawn(async move {
                let id = format!("{p:032x}");
                let mut ids = Vec::new();
                let (s, r, first) = (store.clone(), record(&id), change(&id, "queued"));
                let t = sessions
                    .store_and_publish(async move { s.create_session(r, first).await })
                    .await
                    .unwrap();
                ids.push(t.id);
                for n in 0..CHANGES {
                    let (s, c) = (store.clone(), change(&id, &format!("step-{n}")));
                    let t = sessions
                        .store_and_publish(async move { s.change_state(c).await })
                        .await
                        .unwrap();
                    ids.push(t.id);
                }
                ids
            }));
        }
        let mut all = Vec::new();
        for t in tasks {
            all.extend(t.await.unwrap());
        }
        all.sort_unstable();
        all
    });
    assert_eq!(stored.len(), PUBLISHERS * (CHANGES + 1));
    let mut seen = Vec::new();
    while let Ok(e) = events.try_recv() {
        seen.push(e.transition.id);
    }
    let out_of_order: Vec<(i64, i64)> = seen
        .windows(2)
        .filter(|w| w[0] >= w[1])
        .map(|w| (w[0], w[1]))
        .collect();
    assert!(
        out_of_order.is_empty(),
        "{} events published after a higher id (a cursor-following client loses each): {:?}",
        out_of_order.len(),
        &out_of_order[..out_of_order.len().min(10)]
    );
    assert_eq!(seen, stored, "every stored id published exactly once");
}
