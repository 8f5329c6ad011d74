//! `kaged plugin list`, `enable` and `disable`: the daemon's plugins (`GET /api/v1/plugins`)
//! as a table or its JSON, and one line with the new state after a switch (the daemon
//! answers once the switch took effect). The rendering is pure and tested on data.

use kaged_config::DeploymentMode;
use serde_json::Value;

use super::conversation::one_line;
use super::transport::{call, target};
use crate::Failure;

/// Width of the last column (a longer reason is cut with `…`).
const REASON_WIDTH: usize = 100;

pub async fn plugins_list(mode_flag: Option<DeploymentMode>, json: bool) -> Result<(), Failure> {
    let target = target(mode_flag)?;
    let v = call(&target, reqwest::Method::GET, "/api/v1/plugins", None).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
        return Ok(());
    }
    print!("{}", listing(&v));
    Ok(())
}

/// `POST /api/v1/plugins/{name}/enable` (or `disable`), and the one line saying where the
/// plugin is now.
pub async fn plugin_switch(
    mode_flag: Option<DeploymentMode>,
    name: &str,
    enable: bool,
) -> Result<(), Failure> {
    // A malformed name is a usage error, before any daemon is looked for.
    let name = check_name(name)?;
    let target = target(mode_flag)?;
    let verb = if enable { "enable" } else { "disable" };
    let v = call(
        &target,
        reqwest::Method::POST,
        &format!("/api/v1/plugins/{name}/{verb}"),
        None,
    )
    .await?;
    println!("{}", state_line(&v["plugin"]));
    Ok(())
}

/// A plugin's name as typed (it goes into a path): the manifest's `^[a-z][a-z0-9-]*$`, at
/// most 64 characters.
fn check_name(name: &str) -> Result<&str, Failure> {
    if kaged_plugin::is_plugin_name(name) {
        Ok(name)
    } else {
        Err(Failure::Config(format!(
            "{name:?} is not a plugin name (lowercase letters, digits and '-'; `kaged plugin list` shows them)"
        )))
    }
}

fn text<'a>(plugin: &'a Value, key: &str) -> Option<&'a str> {
    plugin[key].as_str().filter(|s| !s.is_empty())
}

/// Why a plugin is where it is: its reason, and its last error when that says more.
fn why(plugin: &Value) -> Option<String> {
    match (text(plugin, "reason"), text(plugin, "last_error")) {
        (Some(reason), Some(error)) if !reason.contains(error) => {
            Some(format!("{reason}; last error: {error}"))
        }
        (Some(reason), _) => Some(reason.to_string()),
        (None, Some(error)) => Some(format!("last error: {error}")),
        (None, None) => None,
    }
}

/// `notes: running`, or `notes: disabled (disabled by the operator)`.
fn state_line(plugin: &Value) -> String {
    let name = one_line(text(plugin, "name").unwrap_or("?"), 64);
    let state = one_line(text(plugin, "state").unwrap_or("?"), 32);
    match why(plugin) {
        Some(why) => format!("{name}: {state} ({})", one_line(&why, REASON_WIDTH)),
        None => format!("{name}: {state}"),
    }
}

/// The table of `list` (NAME VERSION STATE RESTARTS REASON / LAST ERROR), or the line saying
/// there is none; ends with a newline.
fn listing(v: &Value) -> String {
    let plugins = v["plugins"].as_array().cloned().unwrap_or_default();
    if plugins.is_empty() {
        return format!(
            "no plugins in {} (add one with `kaged plugin install PATH`)\n",
            v["dir"].as_str().unwrap_or("the plugins directory")
        );
    }
    let mut rows: Vec<[String; 5]> = vec![
        [
            "NAME",
            "VERSION",
            "STATE",
            "RESTARTS",
            "REASON / LAST ERROR",
        ]
        .map(String::from),
    ];
    for p in &plugins {
        let cell = |key: &str| one_line(text(p, key).unwrap_or("-"), 40);
        rows.push([
            cell("name"),
            cell("version"),
            cell("state"),
            p["restarts"]
                .as_u64()
                .map_or_else(|| "-".into(), |n| n.to_string()),
            why(p).map_or_else(|| "-".into(), |w| one_line(&w, REASON_WIDTH)),
        ]);
    }
    super::aligned(&rows)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn plugin(name: &str, state: &str, reason: Value, restarts: u64, last_error: Value) -> Value {
        json!({
            "name": name, "version": "0.1.0", "description": "d", "enabled": true,
            "state": state, "reason": reason, "restarts": restarts, "last_error": last_error,
            "pid": null, "capabilities": [], "tools": []
        })
    }

    #[test]
    fn the_table_says_why_a_plugin_is_not_running() {
        let v = json!({"dir": "/p", "plugins": [
            plugin("notes", "running", Value::Null, 0, Value::Null),
            plugin("hello-world", "backing_off", json!("exited: status 1; restarting in 2000 ms"), 3, json!("exited: status 1")),
            plugin("bad", "invalid", json!("kaged-plugin.yaml:1:7: name: not a name"), 0, Value::Null),
            plugin("flaky", "unhealthy", json!("db down\u{1b}[2J"), 1, json!("timed out")),
        ]});
        let out = listing(&v);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(
            lines,
            [
                "NAME         VERSION  STATE        RESTARTS  REASON / LAST ERROR",
                "notes        0.1.0    running      0         -",
                "hello-world  0.1.0    backing_off  3         exited: status 1; restarting in 2000 ms",
                "bad          0.1.0    invalid      0         kaged-plugin.yaml:1:7: name: not a name",
                "flaky        0.1.0    unhealthy    1         db down^[[2J; last error: timed out",
            ],
            "{out}"
        );
    }

    #[test]
    fn no_plugins_says_where_they_would_be() {
        assert_eq!(
            listing(&json!({"dir": "/srv/plugins", "plugins": []})),
            "no plugins in /srv/plugins (add one with `kaged plugin install PATH`)\n"
        );
    }

    #[test]
    fn a_switch_prints_the_new_state_in_one_line() {
        let running = plugin("notes", "starting", Value::Null, 0, Value::Null);
        assert_eq!(state_line(&running), "notes: starting");
        let off = plugin(
            "notes",
            "disabled",
            json!("disabled by the operator"),
            0,
            Value::Null,
        );
        assert_eq!(
            state_line(&off),
            "notes: disabled (disabled by the operator)"
        );
        let stopped = plugin(
            "notes",
            "stopped",
            json!("disabled by the operator"),
            2,
            json!("exited: signal 9"),
        );
        assert_eq!(
            state_line(&stopped),
            "notes: stopped (disabled by the operator; last error: exited: signal 9)"
        );
    }

    #[test]
    fn names_are_checked_before_they_go_into_a_path() {
        for good in ["notes", "a", "my-plugin-2"] {
            assert!(check_name(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "Notes",
            "2notes",
            "../x",
            "a/b",
            "a b",
            "notes?x=1",
            &"a".repeat(65),
        ] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }
}
