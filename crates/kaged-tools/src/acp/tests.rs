//! The relay on data and with real agent processes (small shell and python3 scripts): the
//! daemon's side is an in-memory pipe.

use super::*;
use serde_json::json;
use tokio::io::{AsyncReadExt, DuplexStream};

#[tokio::test]
async fn lines_are_read_whole_or_as_the_start_of_a_long_one() {
    let mut input: &[u8] = b"ab\n\nabcdefgh\nxyz";
    assert_eq!(
        next_piece(&mut input, 4).await.unwrap(),
        Piece::Line(b"ab".to_vec())
    );
    assert_eq!(
        next_piece(&mut input, 4).await.unwrap(),
        Piece::Line(vec![])
    );
    assert_eq!(
        next_piece(&mut input, 4).await.unwrap(),
        Piece::Start(b"abcd".to_vec())
    );
    let mut rest = Vec::new();
    copy_rest_of_line(&mut input, &mut rest).await.unwrap();
    assert_eq!(rest, b"efgh\n");
    assert_eq!(
        next_piece(&mut input, 4).await.unwrap(),
        Piece::Line(b"xyz".to_vec())
    );
    assert_eq!(next_piece(&mut input, 4).await.unwrap(), Piece::End);
    // Exactly the limit is still a line.
    let mut input: &[u8] = b"abcd\n";
    assert_eq!(
        next_piece(&mut input, 4).await.unwrap(),
        Piece::Line(b"abcd".to_vec())
    );
}

struct Shim {
    /// The daemon's writing end (the shim's stdin).
    to_shim: DuplexStream,
    /// The daemon's reading end (the shim's stdout).
    from_shim: BufReader<DuplexStream>,
    run: tokio::task::JoinHandle<std::io::Result<i32>>,
}

fn start(argv: &[&str]) -> Shim {
    let (to_shim, shim_in) = tokio::io::duplex(1 << 16);
    let (shim_out, from_shim) = tokio::io::duplex(1 << 16);
    let argv: Vec<String> = argv.iter().map(|s| s.to_string()).collect();
    let run = tokio::spawn(async move { run_shim(&argv, shim_in, shim_out).await });
    Shim {
        to_shim,
        from_shim: BufReader::new(from_shim),
        run,
    }
}

impl Shim {
    async fn line(&mut self) -> String {
        let mut line = String::new();
        tokio::time::timeout(Duration::from_secs(20), self.from_shim.read_line(&mut line))
            .await
            .expect("a line from the shim in time")
            .unwrap();
        line
    }

    async fn exit_code(self) -> i32 {
        tokio::time::timeout(Duration::from_secs(20), self.run)
            .await
            .expect("the shim ends in time")
            .unwrap()
            .unwrap()
    }
}

#[tokio::test]
async fn lines_longer_than_the_limit_pass_unchanged_both_ways() {
    // `cat` sends back what it is sent.
    let mut shim = start(&["cat"]);
    let long = format!(
        "{{\"jsonrpc\":\"2.0\",\"method\":\"x\",\"params\":\"{}\"}}\n",
        "y".repeat(MAX_LINE + 100)
    );
    let not_json = "this is not JSON\n";
    let request_like =
        "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"session/prompt\",\"params\":{}}\n";
    let mut sent = Vec::new();
    for line in [long.as_str(), not_json, request_like] {
        sent.extend_from_slice(line.as_bytes());
    }
    let writer = tokio::spawn(async move {
        shim.to_shim.write_all(&sent).await.unwrap();
        // The end of the daemon's input closes the agent's: cat ends, and so the shim.
        drop(shim.to_shim);
    });
    let mut got = Vec::new();
    tokio::time::timeout(
        Duration::from_secs(60),
        shim.from_shim.read_to_end(&mut got),
    )
    .await
    .unwrap()
    .unwrap();
    writer.await.unwrap();
    assert_eq!(got.len(), long.len() + not_json.len() + request_like.len());
    assert!(got.starts_with(&long.as_bytes()[..100]));
    assert_eq!(
        &got[long.len()..],
        format!("{not_json}{request_like}").as_bytes()
    );
    assert_eq!(got[..long.len()], *long.as_bytes());
    let code = tokio::time::timeout(Duration::from_secs(20), shim.run)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(code, 0);
}

#[tokio::test]
async fn the_agents_exit_code_or_signal_is_the_shims() {
    let shim = start(&["sh", "-c", "exit 7"]);
    assert_eq!(shim.exit_code().await, 7);
    let shim = start(&["sh", "-c", "kill -TERM $$"]);
    assert_eq!(shim.exit_code().await, 128 + 15);
    let missing = start(&["/no/such/agent"]).run.await.unwrap().unwrap_err();
    assert!(
        missing
            .to_string()
            .starts_with("cannot run /no/such/agent: "),
        "{missing}"
    );
    let none = start(&[]).run.await.unwrap().unwrap_err();
    assert!(
        none.to_string().contains("no agent command given"),
        "{none}"
    );
}

/// An agent that sends each request of `requests` (one JSON line each), waits for its
/// answer, writes what it was answered to `answers` (one line each), then exits with 9. An
/// element that is a list is a batch: all sent at once, then all their answers read.
fn scripted_agent(requests: &[Value], answers: &std::path::Path) -> Vec<String> {
    let script = r#"
import json, sys
requests = json.loads(sys.argv[1])
with open(sys.argv[2], "w") as answers:
    for item in requests:
        batch = item if isinstance(item, list) else [item]
        for request in batch:
            sys.stdout.write(json.dumps(request) + "\n")
        sys.stdout.flush()
        for _ in batch:
            answers.write(sys.stdin.readline())
            answers.flush()
sys.exit(9)
"#;
    vec![
        "python3".into(),
        "-c".into(),
        script.into(),
        serde_json::to_string(requests).unwrap(),
        answers.display().to_string(),
    ]
}

fn answers(path: &std::path::Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[tokio::test]
async fn requests_are_served_answered_with_their_ids_and_noticed_without_contents() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("notes.txt");
    let file = file.to_str().unwrap();
    let log = dir.path().join("answers.jsonl");
    let requests = [
        json!({"jsonrpc":"2.0","id":"w-1","method":"fs/write_text_file",
               "params":{"sessionId":"s","path":file,"content":"SECRET one\nSECRET two\nthree\n"}}),
        json!({"jsonrpc":"2.0","id":2,"method":"fs/read_text_file",
               "params":{"sessionId":"s","path":file,"line":2,"limit":1}}),
        json!({"jsonrpc":"2.0","id":3,"method":"fs/write_text_file",
               "params":{"sessionId":"s","path":"/proc/version","content":"x"}}),
        json!({"jsonrpc":"2.0","id":4,"method":"terminal/create",
               "params":{"sessionId":"s","command":"printf","args":["hello"]}}),
    ];
    let argv = scripted_agent(&requests, &log);
    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    let mut shim = start(&argv);
    let mut notices = Vec::new();
    for _ in 0..requests.len() {
        let line = shim.line().await;
        assert!(!line.contains("SECRET"), "{line}");
        notices.push(serde_json::from_str::<Value>(&line).unwrap());
    }
    assert_eq!(shim.exit_code().await, 9);
    let got = answers(&log);
    assert_eq!(got[0], json!({"jsonrpc":"2.0","id":"w-1","result":{}}));
    assert_eq!(
        std::fs::read_to_string(file).unwrap(),
        "SECRET one\nSECRET two\nthree\n"
    );
    assert_eq!(
        got[1],
        json!({"jsonrpc":"2.0","id":2,"result":{"content":"SECRET two\n"}})
    );
    assert_eq!(got[2]["id"], json!(3));
    assert_eq!(got[2]["error"]["code"], json!(-32603));
    assert!(
        got[2]["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("cannot write /proc/version: ")
    );
    assert_eq!(got[3]["result"]["terminalId"], json!("term-1"));
    for notice in &notices {
        assert_eq!(notice["method"], json!("_kaged/served"));
    }
    assert_eq!(
        notices[0]["params"],
        json!({"method":"fs/write_text_file","path":file,"ok":true,"error":null,"bytes":28})
    );
    assert_eq!(notices[1]["params"]["bytes"], json!(11));
    assert_eq!(notices[2]["params"]["ok"], json!(false));
    assert_eq!(notices[2]["params"]["error"], got[2]["error"]["message"]);
    assert_eq!(
        notices[3]["params"],
        json!({"method":"terminal/create","command":"printf","args":["hello"],
               "terminalId":"term-1","ok":true,"error":null,"bytes":null})
    );
}

#[tokio::test]
async fn terminals_die_with_the_shim() {
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("pid");
    let log = dir.path().join("answers.jsonl");
    // The agent exits once the second terminal ended: the first has long written its pid.
    let requests = [
        json!({"jsonrpc":"2.0","id":1,"method":"terminal/create",
            "params":{"command": format!("echo $$ > {}; sleep 300", pidfile.display())}}),
        json!({"jsonrpc":"2.0","id":2,"method":"terminal/create","params":{"command":"sleep 1"}}),
        json!({"jsonrpc":"2.0","id":3,"method":"terminal/wait_for_exit","params":{"terminalId":"term-2"}}),
    ];
    let argv = scripted_agent(&requests, &log);
    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    let shim = start(&argv);
    let mut pid = String::new();
    for _ in 0..100 {
        pid = std::fs::read_to_string(&pidfile)
            .unwrap_or_default()
            .trim()
            .to_string();
        if !pid.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let alive = |pid: &str| {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .is_ok_and(|s| !s.contains(") Z ") && !s.contains(") X "))
    };
    assert!(!pid.is_empty());
    assert!(alive(&pid));
    assert_eq!(shim.exit_code().await, 9);
    assert_eq!(
        answers(&log)[2]["result"],
        json!({"exitCode":0,"signal":null})
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!alive(&pid), "the terminal's shell {pid} outlived the shim");
}

#[tokio::test]
async fn a_waiting_terminal_holds_up_no_other_request() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("answers.jsonl");
    let file = dir.path().join("f.txt");
    std::fs::write(&file, "text\n").unwrap();
    let requests = json!([
        {"jsonrpc":"2.0","id":1,"method":"terminal/create","params":{"command":"sleep 300"}},
        [
            {"jsonrpc":"2.0","id":2,"method":"terminal/wait_for_exit","params":{"terminalId":"term-1"}},
            {"jsonrpc":"2.0","id":3,"method":"fs/read_text_file","params":{"path":file}},
            {"jsonrpc":"2.0","id":4,"method":"terminal/kill","params":{"terminalId":"term-1"}},
        ],
    ]);
    let argv = scripted_agent(requests.as_array().unwrap(), &log);
    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    let started = std::time::Instant::now();
    let shim = start(&argv);
    assert_eq!(shim.exit_code().await, 9);
    assert!(started.elapsed() < Duration::from_secs(15));
    let got = answers(&log);
    let mut ids: Vec<u64> = got.iter().map(|a| a["id"].as_u64().unwrap()).collect();
    // The wait ends only once the kill (sent after it) was served; the read (sent after it
    // too) is not held up.
    assert_eq!(ids.pop(), Some(2), "{got:#?}");
    ids.sort();
    assert_eq!(ids, [1, 3, 4], "{got:#?}");
    let read = got.iter().find(|a| a["id"] == json!(3)).unwrap();
    assert_eq!(read["result"]["content"], json!("text\n"));
    assert_eq!(
        got[3]["result"],
        json!({"exitCode": null, "signal": "SIGKILL"})
    );
}
