//! `kaged approvals`: the tool calls waiting for the operator (`approval: ask`), listed as a
//! table or as the API's JSON, approved (once or for the session) or denied with a message.
//! The rendering is pure and tested on data; a refusal of the daemon (already decided, not
//! yours, unknown id) is one line and exit status 1.

use anyhow::anyhow;
use kaged_config::DeploymentMode;
use reqwest::StatusCode;
use serde_json::{Value, json};

use super::conversation::one_line;
use super::transport::{call, call_answer, target};
use crate::Failure;
use crate::cli::{ApprovalsCommand, JsonOutput};

/// Width of the arguments column (a longer summary is cut with `…`).
const SUMMARY_WIDTH: usize = 60;

pub async fn approvals(
    mode_flag: Option<DeploymentMode>,
    command: ApprovalsCommand,
) -> Result<(), Failure> {
    // A malformed id is a usage error, before any daemon is looked for.
    if let ApprovalsCommand::Approve { id, .. } | ApprovalsCommand::Deny { id, .. } = &command {
        check_id(id)?;
    }
    let target = target(mode_flag)?;
    match command {
        ApprovalsCommand::List {
            all,
            project,
            output: JsonOutput { json },
        } => {
            let v = call(
                &target,
                reqwest::Method::GET,
                &list_path(all, project.as_deref())?,
                None,
            )
            .await?;
            let list = v["approvals"].as_array().cloned().unwrap_or_default();
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&v["approvals"]).unwrap_or_default()
                );
            } else if list.is_empty() {
                println!(
                    "{}",
                    if all {
                        "no approvals"
                    } else {
                        "no pending approvals"
                    }
                );
            } else {
                print!("{}", table(&list, kaged_server::now_ms()));
            }
        }
        ApprovalsCommand::Approve { id, session } => {
            let decision = if session {
                "approve_session"
            } else {
                "approve"
            };
            decide(&target, &id, json!({ "decision": decision })).await?;
        }
        ApprovalsCommand::Deny { id, message } => {
            let mut body = json!({"decision": "deny"});
            if let Some(m) = message.filter(|m| !m.trim().is_empty()) {
                body["message"] = json!(m);
            }
            decide(&target, &id, body).await?;
        }
    }
    Ok(())
}

/// `POST /api/v1/approvals/{id}`: the one line saying what was decided, or the refusal.
async fn decide(target: &super::Target, id: &str, body: Value) -> Result<(), Failure> {
    let id = check_id(id)?;
    let (status, v) = call_answer(
        target,
        reqwest::Method::POST,
        &format!("/api/v1/approvals/{id}"),
        Some(body),
    )
    .await?;
    if !status.is_success() {
        return Err(Failure::Runtime(anyhow!(refusal(id, status, &v))));
    }
    // The decided approval, as served (or wrapped in `approval`).
    let approval = if v["approval"].is_object() {
        &v["approval"]
    } else {
        &v
    };
    println!("{}", decided_line(id, approval));
    // Decided, but the stopped conversation it pauses could not go on.
    if let Some(why) = v["resume_error"].as_str() {
        eprintln!(
            "kaged: session {} could not be resumed: {why}",
            approval["session_id"].as_str().unwrap_or("?")
        );
    }
    Ok(())
}

/// An approval id as typed: `apr_` and letters, digits, `_` or `-` (it goes into a path).
fn check_id(id: &str) -> Result<&str, Failure> {
    let ok = id.starts_with("apr_")
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok {
        Ok(id)
    } else {
        Err(Failure::Config(format!(
            "{id:?} is not an approval id (apr_…; `kaged approvals list` shows them)"
        )))
    }
}

/// The list's path: pending only unless `all`, of one project if given.
fn list_path(all: bool, project: Option<&str>) -> Result<String, Failure> {
    let mut query = Vec::new();
    if !all {
        query.push("state=pending".to_string());
    }
    if let Some(slug) = project {
        if slug.is_empty()
            || !slug
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
        {
            return Err(Failure::Config(format!(
                "{slug:?} is not a project slug (see `kaged project list`)"
            )));
        }
        query.push(format!("project={slug}"));
    }
    let mut path = "/api/v1/approvals".to_string();
    if !query.is_empty() {
        path.push('?');
        path.push_str(&query.join("&"));
    }
    Ok(path)
}

/// What a refusal of a decision prints: for `409 conflict`, that the approval was already
/// decided (the daemon says by whom and how); otherwise the daemon's message.
fn refusal(id: &str, status: StatusCode, body: &Value) -> String {
    let message = body["error"]["message"]
        .as_str()
        .map(String::from)
        .unwrap_or_else(|| format!("{status}"));
    if status == StatusCode::CONFLICT {
        // The daemon's message may say it was already decided itself: said once.
        const SAID: &str = "already decided: ";
        let how = message
            .find(SAID)
            .map_or(message.as_str(), |at| &message[at + SAID.len()..]);
        format!("{id} was already decided: {how}")
    } else {
        message
    }
}

/// `approved apr_… (shell.bash in PROJECT)`, `approved apr_… for this session (…)` or
/// `denied apr_… (…)`.
fn decided_line(id: &str, approval: &Value) -> String {
    let text = |k: &str| approval[k].as_str().unwrap_or("?").to_string();
    let (what, scope) = match approval["decision"].as_str() {
        Some("approve_session") => ("approved".to_string(), " for this session"),
        Some("approve") => ("approved".to_string(), ""),
        Some("deny") => ("denied".to_string(), ""),
        _ => (text("state"), ""),
    };
    format!(
        "{what} {id}{scope} ({} in {})",
        text("tool"),
        text("project")
    )
}

/// How long ago `then_ms` was at `now_ms`: `12s`, `5m`, `3h`, `2d`.
fn age(now_ms: i64, then_ms: i64) -> String {
    let secs = (now_ms - then_ms).max(0) / 1000;
    match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m", s / 60),
        s if s < 86_400 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

/// A tool call's arguments on one line, at most `width` characters: the command of a
/// `shell.bash`, the task of a subagent, the path of a file tool, otherwise the JSON.
pub(crate) fn arguments_summary(tool: &str, arguments: &Value, width: usize) -> String {
    let field = |k: &str| arguments[k].as_str();
    let text = if tool == "shell.bash" {
        field("command").map(String::from)
    } else if tool.starts_with("agent.") {
        field("task").map(String::from)
    } else {
        None
    };
    let text = text
        .or_else(|| match (field("path"), arguments.as_object()) {
            (Some(path), Some(o)) if o.len() == 1 => Some(path.to_string()),
            _ => None,
        })
        .unwrap_or_else(|| arguments.to_string());
    one_line(&text, width)
}

/// The table of `list`, newest first (by `requested_at_ms`), each column as wide as its
/// widest cell; ends with a newline.
fn table(approvals: &[Value], now_ms: i64) -> String {
    let mut sorted: Vec<&Value> = approvals.iter().collect();
    sorted.sort_by_key(|a| std::cmp::Reverse(a["requested_at_ms"].as_i64().unwrap_or(0)));
    let cell = |a: &Value, k: &str| one_line(a[k].as_str().unwrap_or("-"), 40);
    let mut rows: Vec<[String; 7]> = vec![
        [
            "ID",
            "AGE",
            "PROJECT",
            "AGENT",
            "TOOL",
            "ARGUMENTS",
            "STATE",
        ]
        .map(String::from),
    ];
    for a in sorted {
        let tool = a["tool"].as_str().unwrap_or("?");
        rows.push([
            cell(a, "id"),
            a["requested_at_ms"]
                .as_i64()
                .map_or_else(|| "-".into(), |t| age(now_ms, t)),
            cell(a, "project"),
            cell(a, "agent"),
            one_line(tool, 40),
            arguments_summary(tool, &a["arguments"], SUMMARY_WIDTH),
            cell(a, "state"),
        ]);
    }
    super::aligned(&rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_767_225_600_000;

    fn approval(id: &str, ago_secs: i64, tool: &str, arguments: Value, state: &str) -> Value {
        json!({
            "id": id, "session_id": "0123", "project": "demo", "agent": "primary",
            "tool": tool, "call_id": "call_1", "parent_call_id": null, "arguments": arguments,
            "state": state, "decision": null, "message": null, "decided_by": null,
            "reason": null, "requested_at_ms": NOW - ago_secs * 1000, "decided_at_ms": null,
            "owner": "user:root"
        })
    }

    #[test]
    fn the_table_is_newest_first_with_the_command_folded() {
        let long = format!("echo {} > out.txt", "x".repeat(100));
        let list = [
            approval(
                "apr_00000000000000aa",
                7200,
                "file.write",
                json!({"path": "a.txt", "content": "hi"}),
                "denied",
            ),
            approval(
                "apr_00000000000000bb",
                5,
                "shell.bash",
                json!({"command": "touch\nmade.txt"}),
                "pending",
            ),
            approval(
                "apr_00000000000000cc",
                90,
                "shell.bash",
                json!({ "command": long }),
                "pending",
            ),
        ];
        let out = table(&list, NOW);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 4, "{out}");
        assert_eq!(
            lines[0],
            format!(
                "ID                    AGE  PROJECT  AGENT    TOOL        ARGUMENTS{}  STATE",
                " ".repeat(SUMMARY_WIDTH - 9)
            )
        );
        assert!(
            lines[1].starts_with(
                "apr_00000000000000bb  5s   demo     primary  shell.bash  touch made.txt  "
            ),
            "{out}"
        );
        assert!(lines[1].ends_with("  pending"), "{out}");
        assert!(lines[2].starts_with("apr_00000000000000cc  1m "), "{out}");
        let folded = format!("echo {}…", "x".repeat(SUMMARY_WIDTH - 6));
        assert!(lines[2].contains(&format!("  {folded}  pending")), "{out}");
        assert!(lines[3].starts_with("apr_00000000000000aa  2h "), "{out}");
        assert!(
            lines[3].contains(r#"{"content":"hi","path":"a.txt"}"#),
            "{out}"
        );
        assert!(lines[3].ends_with("  denied"), "{out}");
        // The state column lines up.
        let at: Vec<usize> = lines
            .iter()
            .map(|l| l[..l.rfind("  ").unwrap()].chars().count())
            .collect();
        assert!(at.windows(2).all(|w| w[0] == w[1]), "{out}");
    }

    #[test]
    fn the_arguments_summary_shows_what_the_tool_will_do() {
        let s = |tool: &str, args: Value| arguments_summary(tool, &args, SUMMARY_WIDTH);
        assert_eq!(
            s("shell.bash", json!({"command": "rm -rf build\tdist"})),
            "rm -rf build dist"
        );
        assert_eq!(
            s("agent.helper", json!({"task": "Count the shells."})),
            "Count the shells."
        );
        assert_eq!(s("file.read", json!({"path": "README.md"})), "README.md");
        assert_eq!(
            s("search.grep", json!({"pattern": "TODO"})),
            r#"{"pattern":"TODO"}"#
        );
        // A model's control characters never reach the terminal.
        assert_eq!(
            s("shell.bash", json!({"command": "printf '\u{1b}[2J'"})),
            "printf '^[[2J'"
        );
        // Arguments that were not JSON are kept as a string.
        assert_eq!(
            s("shell.bash", json!("{\"command\": ls")),
            "\"{\\\"command\\\": ls\""
        );
        assert_eq!(
            s("shell.bash", json!({"command": "é".repeat(80)}))
                .chars()
                .count(),
            60
        );
    }

    #[test]
    fn ages_are_short() {
        assert_eq!(age(NOW, NOW), "0s");
        assert_eq!(age(NOW, NOW + 5000), "0s");
        assert_eq!(age(NOW, NOW - 59_999), "59s");
        assert_eq!(age(NOW, NOW - 3_599_000), "59m");
        assert_eq!(age(NOW, NOW - 3_600_000), "1h");
        assert_eq!(age(NOW, NOW - 3 * 86_400_000), "3d");
    }

    #[test]
    fn a_decision_is_one_line_naming_the_tool_and_project() {
        let mut a = approval(
            "apr_1",
            1,
            "shell.bash",
            json!({"command": "ls"}),
            "approved",
        );
        a["decision"] = json!("approve");
        assert_eq!(
            decided_line("apr_1", &a),
            "approved apr_1 (shell.bash in demo)"
        );
        a["decision"] = json!("approve_session");
        assert_eq!(
            decided_line("apr_1", &a),
            "approved apr_1 for this session (shell.bash in demo)"
        );
        a["decision"] = json!("deny");
        a["state"] = json!("denied");
        assert_eq!(
            decided_line("apr_1", &a),
            "denied apr_1 (shell.bash in demo)"
        );
    }

    #[test]
    fn refusals_say_why_in_one_line() {
        let body = |code: &str, message: &str| json!({"error": {"code": code, "message": message}});
        assert_eq!(
            refusal(
                "apr_1",
                StatusCode::CONFLICT,
                &body("conflict", "approved by user:alice")
            ),
            "apr_1 was already decided: approved by user:alice"
        );
        assert_eq!(
            refusal(
                "apr_1",
                StatusCode::CONFLICT,
                &body(
                    "conflict",
                    "approval apr_1 was already decided: denied by bob (too late)"
                )
            ),
            "apr_1 was already decided: denied by bob (too late)"
        );
        assert_eq!(
            refusal(
                "apr_1",
                StatusCode::FORBIDDEN,
                &body("forbidden", "only alice may decide it")
            ),
            "only alice may decide it"
        );
        assert_eq!(
            refusal("apr_1", StatusCode::NOT_FOUND, &json!("gateway text")),
            "404 Not Found"
        );
    }

    #[test]
    fn ids_and_slugs_are_checked_before_they_go_into_a_path() {
        assert!(check_id("apr_0123456789abcdef").is_ok());
        for bad in ["0123", "apr_../../sessions", "apr_a?b", "apr_a b", ""] {
            assert!(check_id(bad).is_err(), "{bad}");
        }
        assert_eq!(
            list_path(false, None).ok().unwrap(),
            "/api/v1/approvals?state=pending"
        );
        assert_eq!(list_path(true, None).ok().unwrap(), "/api/v1/approvals");
        assert_eq!(
            list_path(false, Some("demo")).ok().unwrap(),
            "/api/v1/approvals?state=pending&project=demo"
        );
        assert_eq!(
            list_path(true, Some("my-proj")).ok().unwrap(),
            "/api/v1/approvals?project=my-proj"
        );
        assert!(list_path(true, Some("a&state=x")).is_err());
    }
}
