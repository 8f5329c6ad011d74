//! `kaged acp-shim -- AGENT…`, the built binary with a fake ACP agent (python3): lines
//! relayed unchanged both ways, the agent's file and terminal requests served and answered
//! with their ids, the daemon's side told of each by a `_kaged/served` line without
//! contents, the agent's exit code the shim's.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

use crate::common::kaged_bin;

/// The fake agent: echoes the first line it is sent, then sends each request of the JSON
/// list in argv[1] and writes each answer it gets to the file argv[2]; exits with 5.
const AGENT: &str = r#"
import json, sys
first = sys.stdin.readline()
sys.stdout.write(first)
sys.stdout.flush()
requests = json.loads(sys.argv[1])
with open(sys.argv[2], "w") as answers:
    for request in requests:
        sys.stdout.write(json.dumps(request) + "\n")
        sys.stdout.flush()
        answers.write(sys.stdin.readline())
        answers.flush()
sys.exit(5)
"#;

#[test]
fn the_shim_relays_serves_and_notices_and_exits_with_the_agents_code() {
    let dir = tempfile::tempdir().unwrap();
    let agent = dir.path().join("agent.py");
    std::fs::write(&agent, AGENT).unwrap();
    let answers_file = dir.path().join("answers.jsonl");
    let written = dir.path().join("out/hello.txt");
    let lines = dir.path().join("lines.txt");
    std::fs::write(&lines, "CONTENT-1\nCONTENT-2\nCONTENT-3\nCONTENT-4\n").unwrap();
    let (written_s, lines_s) = (written.to_str().unwrap(), lines.to_str().unwrap());
    let s = |id: Value, method: &str, params: Value| {
        let mut params = params;
        params["sessionId"] = json!("sess-0");
        json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params})
    };
    let requests = json!([
        s(
            json!("f-1"),
            "fs/write_text_file",
            json!({"path": written_s, "content": "CONTENT-W\n"})
        ),
        s(
            json!(2),
            "fs/write_text_file",
            json!({"path": "/proc/version", "content": "x"})
        ),
        s(
            json!(3),
            "fs/read_text_file",
            json!({"path": lines_s, "line": 2, "limit": 2})
        ),
        s(
            json!("t-1"),
            "terminal/create",
            json!({
            "command": "sh", "args": ["-c", "echo CONT''ENT-T; exit 4"],
            "env": [{"name": "X", "value": "1"}], "cwd": dir.path(), "outputByteLimit": 1000})
        ),
        s(
            json!("t-2"),
            "terminal/wait_for_exit",
            json!({"terminalId": "term-1"})
        ),
        s(
            json!("t-3"),
            "terminal/output",
            json!({"terminalId": "term-1"})
        ),
        s(
            json!("t-4"),
            "terminal/release",
            json!({"terminalId": "term-1"})
        ),
    ]);
    let mut shim = Command::new(kaged_bin())
        .args(["acp-shim", "--", "python3"])
        .arg(&agent)
        .arg(requests.to_string())
        .arg(&answers_file)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    // Odd spacing and a non-ASCII character: the line must arrive byte for byte.
    let first = "{\"jsonrpc\": \"2.0\",  \"id\": 17, \"method\":\"session/prompt\",\"params\":{\"t\":\"é\"}}\n";
    let mut stdin = shim.stdin.take().unwrap();
    stdin.write_all(first.as_bytes()).unwrap();
    stdin.flush().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = shim.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            if tx.send(line.unwrap()).is_err() {
                return;
            }
        }
    });
    let mut upstream = Vec::new();
    while let Ok(line) = rx.recv_timeout(Duration::from_secs(30)) {
        upstream.push(line);
    }
    drop(stdin);
    let started = std::time::Instant::now();
    let status = loop {
        if let Some(status) = shim.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > Duration::from_secs(20) {
            let _ = shim.kill();
            panic!("the shim did not exit with its agent: {upstream:#?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(status.code(), Some(5), "{upstream:#?}");
    assert_eq!(
        upstream.first().map(|l| format!("{l}\n")).as_deref(),
        Some(first)
    );

    // The daemon's side: one notice per request, in order, no contents.
    let notices: Vec<Value> = upstream[1..]
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(notices.len(), 7, "{upstream:#?}");
    for (n, line) in notices.iter().zip(&upstream[1..]) {
        assert_eq!(n["method"], json!("_kaged/served"));
        assert!(!line.contains("CONTENT"), "{line}");
    }
    let methods: Vec<&str> = notices
        .iter()
        .map(|n| n["params"]["method"].as_str().unwrap())
        .collect();
    assert_eq!(
        methods,
        [
            "fs/write_text_file",
            "fs/write_text_file",
            "fs/read_text_file",
            "terminal/create",
            "terminal/wait_for_exit",
            "terminal/output",
            "terminal/release"
        ]
    );
    assert_eq!(
        notices[0]["params"],
        json!({"method": "fs/write_text_file", "path": written_s, "ok": true, "error": null, "bytes": 10})
    );
    assert_eq!(notices[1]["params"]["ok"], json!(false));
    assert_eq!(notices[1]["params"]["path"], json!("/proc/version"));
    assert_eq!(notices[2]["params"]["bytes"], json!(20));
    assert_eq!(notices[3]["params"]["command"], json!("sh"));
    assert_eq!(notices[3]["params"]["terminalId"], json!("term-1"));
    assert_eq!(notices[5]["params"]["bytes"], json!(10));

    // The agent's side: each answer with its request's id.
    let answers: Vec<Value> = std::fs::read_to_string(&answers_file)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let ok = |id: Value, result: Value| json!({"jsonrpc": "2.0", "id": id, "result": result});
    assert_eq!(answers[0], ok(json!("f-1"), json!({})));
    assert_eq!(std::fs::read_to_string(&written).unwrap(), "CONTENT-W\n");
    assert_eq!(answers[1]["id"], json!(2));
    assert_eq!(answers[1]["error"]["code"], json!(-32603));
    let refused = answers[1]["error"]["message"].as_str().unwrap();
    assert!(
        refused.starts_with("cannot write /proc/version: "),
        "{refused}"
    );
    assert_eq!(notices[1]["params"]["error"], json!(refused));
    assert_eq!(
        answers[2],
        ok(json!(3), json!({"content": "CONTENT-2\nCONTENT-3\n"}))
    );
    assert_eq!(
        answers[3],
        ok(json!("t-1"), json!({"terminalId": "term-1"}))
    );
    let exit = json!({"exitCode": 4, "signal": null});
    assert_eq!(answers[4], ok(json!("t-2"), exit.clone()));
    assert_eq!(
        answers[5],
        ok(
            json!("t-3"),
            json!({"output": "CONTENT-T\n", "truncated": false, "exitStatus": exit})
        )
    );
    assert_eq!(answers[6], ok(json!("t-4"), json!({})));
}

/// In a real cage (`kaged cage run`, the shim as the cage's helper `/run/kaged/kaged`): the
/// cage's view decides, not the shim: a write into the project lands, a write to a read-only
/// bind and a read of a host file outside the view fail, and so does a terminal's write.
#[test]
fn in_a_cage_requests_see_only_the_cages_view() {
    let dir = tempfile::tempdir().unwrap();
    let host_secret = dir.path().join("host-secret.txt");
    std::fs::write(&host_secret, "HOST SECRET\n").unwrap();
    let project = dir.path().join("project");
    std::fs::create_dir_all(project.join(".kaged")).unwrap();
    std::fs::create_dir_all(project.join(".git")).unwrap();
    std::fs::write(project.join(".git/HEAD"), "ref: refs/heads/main\n").unwrap();
    std::fs::write(
        project.join(".kaged/project.yaml"),
        "version: 1\nproject: shimcage\nprimary:\n  command: [sh]\n",
    )
    .unwrap();
    std::fs::write(project.join("agent.py"), AGENT).unwrap();
    crate::common::cage_writable(&project);
    let host_secret = host_secret.to_str().unwrap();
    let req = |id: u64, method: &str, params: Value| json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
    let requests = json!([
        req(
            1,
            "fs/write_text_file",
            json!({"path": "/workspace/made/in-cage.txt", "content": "made\n"})
        ),
        req(
            2,
            "fs/write_text_file",
            json!({"path": "/etc/kaged-acp-shim-test", "content": "x"})
        ),
        req(3, "fs/read_text_file", json!({"path": host_secret})),
        req(
            4,
            "terminal/create",
            json!({"command": "touch /usr/kaged-acp-shim-test; pwd"})
        ),
        req(5, "terminal/wait_for_exit", json!({"terminalId": "term-1"})),
        req(6, "terminal/output", json!({"terminalId": "term-1"})),
    ]);
    let mut shim = crate::common::kaged_cmd(&[])
        .args(["cage", "run", project.to_str().unwrap(), "--"])
        .args([
            "/run/kaged/kaged",
            "acp-shim",
            "--",
            "python3",
            "/workspace/agent.py",
        ])
        .arg(requests.to_string())
        .arg("/workspace/answers.jsonl")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = shim.stdin.take().unwrap();
    stdin
        .write_all(b"{\"jsonrpc\":\"2.0\",\"method\":\"hello\"}\n")
        .unwrap();
    stdin.flush().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = shim.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            if tx.send(line.unwrap()).is_err() {
                return;
            }
        }
    });
    let mut upstream = Vec::new();
    while let Ok(line) = rx.recv_timeout(Duration::from_secs(60)) {
        upstream.push(line);
    }
    drop(stdin);
    let status = shim.wait().unwrap();
    assert_eq!(status.code(), Some(5), "{upstream:#?}");
    assert_eq!(upstream.len(), 7, "{upstream:#?}");
    assert!(upstream.iter().all(|l| !l.contains("HOST SECRET")));
    let answers: Vec<Value> = std::fs::read_to_string(project.join("answers.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(answers[0]["result"], json!({}), "{answers:#?}");
    assert_eq!(
        std::fs::read_to_string(project.join("made/in-cage.txt")).unwrap(),
        "made\n"
    );
    assert_eq!(
        answers[1]["error"],
        json!({"code": -32603, "message": "cannot write /etc/kaged-acp-shim-test: Read-only file system"})
    );
    assert!(!Path::new("/etc/kaged-acp-shim-test").exists());
    assert_eq!(
        answers[2]["error"]["message"],
        json!(format!(
            "cannot read {host_secret}: No such file or directory"
        ))
    );
    assert_eq!(answers[4]["result"]["exitCode"], json!(0), "{answers:#?}");
    let output = answers[5]["result"]["output"].as_str().unwrap();
    assert!(output.contains("Read-only file system"), "{output}");
    assert!(output.ends_with("/workspace\n"), "{output}");
    assert!(!Path::new("/usr/kaged-acp-shim-test").exists());
}
