//! The per-user launch flow and every way around it, through the real binary and real HTTP.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

use crate::common::*;
use reqwest::StatusCode;
use reqwest::header::{HOST, ORIGIN, SET_COOKIE};

async fn sign_in(d: &Daemon) -> reqwest::Client {
    let client = browser_like_client();
    let r = client.get(&d.launch_url).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    client
}

fn cookie_value(r: &reqwest::Response) -> String {
    let set = r.headers().get(SET_COOKIE).unwrap().to_str().unwrap();
    set.split(';')
        .next()
        .unwrap()
        .trim_start_matches("kaged_session=")
        .to_string()
}

#[tokio::test]
async fn launch_url_signs_in_with_a_strict_httponly_persistent_cookie() {
    let tmp = tempfile::tempdir().unwrap();
    let d = Daemon::start(tmp.path());
    let client = browser_like_client();

    // Before: API is 401 JSON, the UI is a page telling the operator what to run.
    let r = client
        .get(format!("{}/api/v1/status", d.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "unauthenticated");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("kaged auth open")
    );
    let r = client.get(format!("{}/", d.base)).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    assert!(r.text().await.unwrap().contains("kaged auth open"));

    let r = client.get(&d.launch_url).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(r.headers()["location"], "/");
    assert_eq!(r.headers()["referrer-policy"], "no-referrer");
    let set = r.headers()[SET_COOKIE].to_str().unwrap().to_string();
    assert!(set.starts_with("kaged_session="), "{set}");
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/", "Max-Age="] {
        assert!(set.contains(attr), "missing {attr} in {set}");
    }

    // After: the UI and the API answer.
    let r = client.get(format!("{}/", d.base)).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let csp = r.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        csp.contains("frame-ancestors 'none'") && csp.contains("script-src 'self'"),
        "{csp}"
    );
    assert_eq!(r.headers()["x-content-type-options"], "nosniff");
    assert!(r.text().await.unwrap().contains("id=\"kaged-console\""));
    let s: serde_json::Value = json_of(client.get(format!("{}/api/v1/status", d.base))).await;
    assert_eq!(s["mode"], "user");
    assert_eq!(s["mode_rule"], "kaged_home");
    assert_eq!(s["auth_mode"], "secure");
    assert_eq!(s["sandbox_mode"], "enabled");
    assert_eq!(s["url"], d.base.as_str());
    assert_eq!(s["pid"], d.child.id());
    assert_eq!(s["paths"]["data_dir"], tmp.path().to_str().unwrap());
    assert!(s["uptime_secs"].is_u64());
    assert_eq!(s["storage"]["schema_version"], kaged_store::LATEST_SCHEMA);
    let who: serde_json::Value = json_of(client.get(format!("{}/api/v1/whoami", d.base))).await;
    assert_eq!(who["method"], "session");
    assert!(who["id"].as_str().unwrap().starts_with("user:"));
}

#[tokio::test]
async fn launch_token_is_single_use_and_wrong_or_expired_tokens_fail() {
    let tmp = tempfile::tempdir().unwrap();
    let d = Daemon::start(tmp.path());
    sign_in(&d).await;

    // Reuse.
    let r = plain_client().get(&d.launch_url).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(r.headers().get(SET_COOKIE).is_none());
    assert!(r.text().await.unwrap().contains("already used"));

    // Wrong: right shape, flipped MAC.
    let token = token_of(&d.launch_url);
    let mut forged: Vec<char> = token.chars().collect();
    let last = forged.len() - 1;
    forged[last] = if forged[last] == '0' { '1' } else { '0' };
    let forged: String = forged.into_iter().collect();
    let r = plain_client()
        .get(format!("{}/launch?token={forged}", d.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(r.headers().get(SET_COOKIE).is_none());
    let r = plain_client()
        .get(format!("{}/launch?token=nonsense", d.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    for bad in ["/launch", "/launch?token=", "/launch?token=a&token=b"] {
        let r = plain_client()
            .get(format!("{}{bad}", d.base))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{bad}");
        assert!(r.text().await.unwrap().contains("not valid"), "{bad}");
    }

    // Expired: a one-second URL from `kaged auth open`, used after it lapsed.
    let out = d.cli(&["auth", "open", "--no-browser", "--ttl", "1"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let url = String::from_utf8(out.stdout).unwrap().trim().to_string();
    std::thread::sleep(std::time::Duration::from_millis(2100));
    let r = plain_client().get(&url).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(r.text().await.unwrap().contains("expired"));

    // A fresh `kaged auth open` URL works.
    let out = d.cli(&["auth", "open", "--no-browser"]);
    let url = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert!(
        url.starts_with(&format!("{}/launch?token=", d.base)),
        "{url}"
    );
    let r = plain_client().get(&url).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);

    // Every attempt is in the audit trail, with its reason and source.
    let audit = d.api_get("/api/v1/audit?limit=50").await;
    let events = audit["events"].as_array().unwrap();
    let logins: Vec<_> = events
        .iter()
        .filter(|e| e["kind"] == "auth.login")
        .collect();
    let reasons: Vec<&str> = logins
        .iter()
        .filter(|e| e["outcome"] == "failure")
        .map(|e| e["detail"]["reason"].as_str().unwrap())
        .collect();
    for want in ["reused", "bad_signature", "malformed", "expired"] {
        assert!(reasons.contains(&want), "no {want} in {reasons:?}");
    }
    assert_eq!(
        logins.iter().filter(|e| e["outcome"] == "success").count(),
        2
    );
    assert!(
        logins
            .iter()
            .all(|e| e["source"].as_str().unwrap().starts_with("127.0.0.1:"))
    );
    // The same events are in the JSON-lines file.
    let file = std::fs::read_to_string(tmp.path().join("audit.log")).unwrap();
    let file_logins = file
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|e| e["kind"] == "auth.login")
        .count();
    assert_eq!(file_logins, logins.len());
}

#[tokio::test]
async fn forged_missing_and_previous_start_cookies_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let d = Daemon::start(tmp.path());
    let status_url = format!("{}/api/v1/status", d.base);

    let r = plain_client()
        .get(&status_url)
        .header("cookie", "kaged_session=00ff")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);

    let r = plain_client().get(&d.launch_url).send().await.unwrap();
    let cookie = cookie_value(&r);
    let ok = plain_client()
        .get(&status_url)
        .header("cookie", format!("other=1; kaged_session={cookie}"))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), StatusCode::OK);

    // Restart on the same home: the old cookie is dead, the new daemon has a new nonce.
    let old_nonce = d.nonce();
    let (status, _) = d.stop();
    assert!(status.success());
    let d2 = Daemon::start(tmp.path());
    assert_ne!(d2.nonce(), old_nonce);
    let r = plain_client()
        .get(format!("{}/api/v1/status", d2.base))
        .header("cookie", format!("kaged_session={cookie}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "unauthenticated");
    // The old nonce cannot mint tokens for the new daemon either.
    let r = plain_client()
        .get(format!("{}/api/v1/status", d2.base))
        .header("x-kaged-auth-nonce", old_nonce)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn foreign_host_headers_are_refused_even_with_a_valid_session() {
    let tmp = tempfile::tempdir().unwrap();
    let d = Daemon::start(tmp.path());
    let r = plain_client().get(&d.launch_url).send().await.unwrap();
    let cookie = cookie_value(&r);
    for host in [
        "evil.example",
        &format!("evil.example:{}", d.port()),
        "localhost:1",
    ] {
        for path in ["/api/v1/status", "/", "/healthz", "/launch?token=x"] {
            let r = plain_client()
                .get(format!("{}{path}", d.base))
                .header(HOST, host)
                .header("cookie", format!("kaged_session={cookie}"))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), StatusCode::FORBIDDEN, "{host} {path}");
        }
    }
    let r = plain_client()
        .get(format!("{}/api/v1/status", d.base))
        .header(HOST, format!("localhost:{}", d.port()))
        .header("cookie", format!("kaged_session={cookie}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
}

#[tokio::test]
async fn cross_origin_state_changes_are_refused_and_csrf_is_required() {
    let tmp = tempfile::tempdir().unwrap();
    let d = Daemon::start(tmp.path());
    let client = sign_in(&d).await;
    let logout = format!("{}/api/v1/auth/logout", d.base);
    let who: serde_json::Value = json_of(client.get(format!("{}/api/v1/whoami", d.base))).await;
    let csrf = who["csrf_token"].as_str().unwrap().to_string();

    let status = format!("{}/api/v1/status", d.base);
    let zeros = "0".repeat(64);
    // (why, Origin, Sec-Fetch-Site, X-Kaged-CSRF): every one is refused with 403 `forbidden`.
    type Case<'a> = (&'a str, Option<&'a str>, Option<&'a str>, Option<&'a str>);
    let refused: [Case; 6] = [
        (
            "foreign origin, right token",
            Some("http://evil.example"),
            None,
            Some(&csrf),
        ),
        (
            "another local port",
            Some("http://127.0.0.1:1"),
            None,
            Some(&csrf),
        ),
        (
            "cross-site fetch metadata",
            Some(&d.base),
            Some("cross-site"),
            Some(&csrf),
        ),
        ("no Origin at all", None, None, Some(&csrf)),
        ("our origin, no token", Some(&d.base), None, None),
        ("our origin, wrong token", Some(&d.base), None, Some(&zeros)),
    ];
    for (why, origin, site, token) in refused {
        let mut req = client.post(&logout);
        for (name, value) in [
            ("origin", origin),
            ("sec-fetch-site", site),
            ("x-kaged-csrf", token),
        ] {
            if let Some(v) = value {
                req = req.header(name, v);
            }
        }
        let r = req.send().await.unwrap();
        assert_eq!(r.status(), StatusCode::FORBIDDEN, "{why}");
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(body["error"]["code"], "forbidden", "{why}");
    }
    // Still signed in after all of that.
    assert_eq!(
        client.get(&status).send().await.unwrap().status(),
        StatusCode::OK
    );

    // Same origin with the token: signs out, and the cookie stops working.
    let r = client
        .post(&logout)
        .header(ORIGIN, d.base.as_str())
        .header("x-kaged-csrf", &csrf)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        client.get(&status).send().await.unwrap().status(),
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn unknown_routes_and_methods_use_the_json_error_shape() {
    let tmp = tempfile::tempdir().unwrap();
    let d = Daemon::start(tmp.path());
    let nonce = d.nonce();
    let r = plain_client()
        .get(format!("{}/api/v1/nope", d.base))
        .header("x-kaged-auth-nonce", &nonce)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "not_found");
    // Unauthenticated callers learn nothing about which routes exist.
    let r = plain_client()
        .get(format!("{}/api/v1/nope", d.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = plain_client()
        .delete(format!("{}/healthz", d.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "method_not_allowed");
    // Health endpoints need no credentials and reveal nothing.
    let r = plain_client()
        .get(format!("{}/healthz", d.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.text().await.unwrap(), r#"{"status":"ok"}"#);
    let r = plain_client()
        .get(format!("{}/readyz", d.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    // A wrong nonce header is refused, never upgraded to a success.
    let r = plain_client()
        .get(format!("{}/api/v1/status", d.base))
        .header("x-kaged-auth-nonce", "0".repeat(64))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn nonce_file_is_private_and_matches_auth_nonce_and_secrets_stay_out_of_logs() {
    let tmp = tempfile::tempdir().unwrap();
    let log = tmp.path().join("ops.log");
    let d = Daemon::start_with(
        tmp.path(),
        &["--bind", "127.0.0.1:0"],
        &[
            ("KAGED_LOG_OPERATIONAL", &format!("file:{}", log.display())),
            ("KAGED_LOG_LEVEL", "trace"),
        ],
    );
    let cookie_file = d.runtime_dir().join("auth-cookie");
    assert_eq!(mode_of(&cookie_file), 0o600);
    assert_eq!(mode_of(&d.runtime_dir()), 0o700);
    let nonce = d.nonce();
    assert_eq!(nonce.len(), 64, "256-bit hex nonce");
    assert!(nonce.chars().all(|c| c.is_ascii_hexdigit()));
    let out = d.cli(&["auth", "nonce"]);
    assert!(out.status.success());
    assert_eq!(String::from_utf8(out.stdout).unwrap().trim(), nonce);

    // Exercise every secret: launch token, session cookie, nonce header, a failed token.
    let token = token_of(&d.launch_url);
    let r = plain_client().get(&d.launch_url).send().await.unwrap();
    let cookie = cookie_value(&r);
    plain_client()
        .get(format!("{}/api/v1/status", d.base))
        .header("cookie", format!("kaged_session={cookie}"))
        .send()
        .await
        .unwrap();
    plain_client()
        .get(format!("{}/api/v1/status", d.base))
        .header("x-kaged-auth-nonce", &nonce)
        .send()
        .await
        .unwrap();
    plain_client().get(&d.launch_url).send().await.unwrap();
    let out = d.cli(&["status"]);
    assert!(out.status.success());

    let (status, stderr) = d.stop();
    assert!(status.success());
    assert!(!cookie_file.exists(), "auth-cookie removed at shutdown");
    let ops = std::fs::read_to_string(&log).unwrap();
    assert!(
        ops.contains("operator signed in"),
        "the log is being written: {ops}"
    );
    assert!(ops.contains("/launch"), "requests are logged by path");
    let audit = std::fs::read_to_string(tmp.path().join("audit.log")).unwrap();
    assert_eq!(mode_of(&tmp.path().join("audit.log")), 0o600);
    // stderr carries the launch URL by design (the ready line), and nothing else secret.
    let stderr_without_ready: String = stderr
        .lines()
        .filter(|l| !l.starts_with(READY_PREFIX))
        .collect::<Vec<_>>()
        .join("\n");
    for (name, secret) in [("token", &token), ("cookie", &cookie), ("nonce", &nonce)] {
        assert!(
            !ops.contains(secret.as_str()),
            "{name} leaked into the operational log"
        );
        assert!(
            !audit.contains(secret.as_str()),
            "{name} leaked into the audit log"
        );
        assert!(
            !stderr_without_ready.contains(secret.as_str()),
            "{name} leaked to stderr"
        );
    }
    let db = rusqlite::Connection::open(tmp.path().join("kaged.db")).unwrap();
    let rows: Vec<String> = db
        .prepare("SELECT kind || outcome || coalesce(identity,'') || coalesce(source,'') || detail FROM audit_events")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert!(rows.len() >= 4);
    for secret in [&token, &cookie, &nonce] {
        assert!(rows.iter().all(|r| !r.contains(secret.as_str())));
    }
}

#[tokio::test]
async fn status_command_reports_the_running_daemon() {
    let tmp = tempfile::tempdir().unwrap();
    let d = Daemon::start(tmp.path());
    let out = d.cli(&["status"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.starts_with(&format!(
            "kaged {} is running (pid {}",
            env!("CARGO_PKG_VERSION"),
            d.child.id()
        )),
        "{text}"
    );
    for needle in [
        "per-user (KAGED_HOME=",
        &format!("url       {}", d.base),
        "auth      launch URL + session cookie",
        &format!("config    {}/config.toml", tmp.path().display()),
        &format!("data      {}", tmp.path().display()),
        &format!("runtime   {}/run", tmp.path().display()),
        &format!(
            "database  sqlite://{}/kaged.db (schema",
            tmp.path().display()
        ),
    ] {
        assert!(text.contains(needle), "missing {needle:?} in\n{text}");
    }
    let out = d.cli(&["status", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["pid"], d.child.id());
}

#[tokio::test]
async fn a_flood_of_bad_tokens_is_rate_limited_but_never_locks_out_a_valid_url() {
    let tmp = tempfile::tempdir().unwrap();
    let d = Daemon::start(tmp.path());
    let mut statuses = Vec::new();
    for _ in 0..25 {
        let r = plain_client()
            .get(format!("{}/launch?token=zz", d.base))
            .send()
            .await
            .unwrap();
        statuses.push(r.status());
    }
    assert_eq!(statuses[0], StatusCode::UNAUTHORIZED);
    assert_eq!(*statuses.last().unwrap(), StatusCode::TOO_MANY_REQUESTS);
    // The operator's real URL still signs in.
    let r = plain_client().get(&d.launch_url).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    // And the limited attempts are audited as such.
    let audit: serde_json::Value = plain_client()
        .get(format!("{}/api/v1/audit?limit=100", d.base))
        .header("x-kaged-auth-nonce", d.nonce())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let limited = audit["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["detail"]["rate_limited"] == true)
        .count();
    assert!(limited >= 4, "{limited}");
    // A bad query string is the JSON error shape, not a framework message.
    let r = plain_client()
        .get(format!("{}/api/v1/audit?limit=abc", d.base))
        .header("x-kaged-auth-nonce", d.nonce())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "bad_request");
}

#[tokio::test]
async fn wrong_credentials_are_audited_and_malformed_security_headers_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let d = Daemon::start(tmp.path());
    let nonce = d.nonce();
    let status = format!("{}/api/v1/status", d.base);
    plain_client()
        .get(&status)
        .header("x-kaged-auth-nonce", "0".repeat(64))
        .send()
        .await
        .unwrap();
    plain_client()
        .get(&status)
        .header("cookie", "kaged_session=forged")
        .send()
        .await
        .unwrap();
    // A repeated Host header, or an Origin that is not text, is refused outright.
    let r = plain_client()
        .get(&status)
        .header("x-kaged-auth-nonce", &nonce)
        .header(
            ORIGIN,
            reqwest::header::HeaderValue::from_bytes(b"http://\xff").unwrap(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let mut headers = reqwest::header::HeaderMap::new();
    headers.append(ORIGIN, d.base.parse().unwrap());
    headers.append(ORIGIN, "http://evil.example".parse().unwrap());
    let r = plain_client()
        .get(&status)
        .header("x-kaged-auth-nonce", &nonce)
        .headers(headers)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);

    let audit = d.api_get("/api/v1/audit").await;
    let failed: Vec<&str> = audit["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "auth.failed")
        .map(|e| e["detail"]["method"].as_str().unwrap())
        .collect();
    assert!(
        failed.contains(&"nonce") && failed.contains(&"session_cookie"),
        "{failed:?}"
    );
}
