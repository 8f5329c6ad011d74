//! The router's middleware, driven in-process: a real `ServerState` on a temporary directory,
//! requests sent with `oneshot`, no socket and no background task. Each test fails if the check
//! it names is removed.

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use kaged_auth::{Secret, mint_launch_token};
use serde_json::Value;
use tower::ServiceExt;

use crate::audit::now_ms;
use crate::test_state::{nonce, test_state};

const HOST: &str = "127.0.0.1:7777";
const ORIGIN: &str = "http://127.0.0.1:7777";

struct Daemon {
    router: Router,
    nonce: Secret,
    _test: tempfile::TempDir,
}

/// A launch-URL daemon as `kaged start` builds one, minus listeners and background tasks.
fn daemon() -> Daemon {
    let test = test_state(HOST.parse().unwrap());
    Daemon {
        router: crate::router(test.state),
        nonce: nonce(),
        _test: test._home,
    }
}

impl Daemon {
    async fn send(&self, request: Request<Body>) -> (StatusCode, axum::http::HeaderMap, Vec<u8>) {
        let response = self.router.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let body = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        (status, headers, body.to_vec())
    }

    /// A JSON request's status and `error.code` (or the whole body when it is not an error).
    async fn json(&self, request: Request<Body>) -> (StatusCode, Value) {
        let (status, _, body) = self.send(request).await;
        let value: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        (status, value)
    }
}

fn get(path: &str) -> axum::http::request::Builder {
    Request::get(path).header(header::HOST, HOST)
}

fn error_code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or("")
}

#[tokio::test]
async fn foreign_missing_or_repeated_host_is_refused_on_public_routes_too() {
    let d = daemon();
    let (status, _) = d
        .json(get("/api/v1/dsl/schema").body(Body::empty()).unwrap())
        .await;
    assert_eq!(status, StatusCode::OK);
    for host in ["evil.example:7777", "127.0.0.1:7778", "localhost"] {
        let request = Request::get("/api/v1/dsl/schema")
            .header(header::HOST, host)
            .body(Body::empty())
            .unwrap();
        let (status, body) = d.json(request).await;
        assert_eq!(
            (status, error_code(&body)),
            (StatusCode::FORBIDDEN, "forbidden"),
            "{host}"
        );
    }
    let (status, body) = d
        .json(
            Request::get("/api/v1/dsl/schema")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::BAD_REQUEST, "bad_request")
    );
    let repeated = Request::get("/api/v1/dsl/schema")
        .header(header::HOST, HOST)
        .header(header::HOST, "evil.example")
        .body(Body::empty())
        .unwrap();
    assert_eq!(d.json(repeated).await.0, StatusCode::FORBIDDEN);
    // Even a foreign Host with a valid credential never reaches a handler.
    let with_nonce = Request::get("/api/v1/whoami")
        .header(header::HOST, "evil.example:7777")
        .header(kaged_auth::NONCE_HEADER, d.nonce.expose())
        .body(Body::empty())
        .unwrap();
    assert_eq!(d.json(with_nonce).await.0, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn foreign_origin_and_cross_site_fetches_are_refused() {
    let d = daemon();
    let foreign = get("/api/v1/whoami")
        .header(header::ORIGIN, "http://evil.example")
        .header(kaged_auth::NONCE_HEADER, d.nonce.expose())
        .body(Body::empty())
        .unwrap();
    let (status, body) = d.json(foreign).await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::FORBIDDEN, "forbidden")
    );
    let cross_site = get("/healthz")
        .header("sec-fetch-site", "cross-site")
        .body(Body::empty())
        .unwrap();
    assert_eq!(d.send(cross_site).await.0, StatusCode::FORBIDDEN);
    let ours = get("/api/v1/whoami")
        .header(header::ORIGIN, ORIGIN)
        .header("sec-fetch-site", "same-origin")
        .header(kaged_auth::NONCE_HEADER, d.nonce.expose())
        .body(Body::empty())
        .unwrap();
    assert_eq!(d.json(ours).await.0, StatusCode::OK);
}

#[tokio::test]
async fn protected_routes_need_a_credential_and_say_how_to_get_one() {
    let d = daemon();
    for path in ["/api/v1/status", "/api/v1/whoami", "/api/v1/no-such-route"] {
        let (status, headers, body) = d.send(get(path).body(Body::empty()).unwrap()).await;
        let body: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            (status, error_code(&body)),
            (StatusCode::UNAUTHORIZED, "unauthenticated"),
            "{path}"
        );
        // Refusals carry the security headers too.
        assert!(headers.contains_key("content-security-policy"), "{path}");
    }
    // Outside /api/ a signed-out browser gets a page naming `kaged auth open`.
    let (status, _, page) = d.send(get("/").body(Body::empty()).unwrap()).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(String::from_utf8_lossy(&page).contains("kaged auth open"));
    // A wrong nonce is no credential; the right one is the operator.
    let wrong = get("/api/v1/whoami")
        .header(kaged_auth::NONCE_HEADER, "x".repeat(64))
        .body(Body::empty())
        .unwrap();
    assert_eq!(d.json(wrong).await.0, StatusCode::UNAUTHORIZED);
    let right = get("/api/v1/whoami")
        .header(kaged_auth::NONCE_HEADER, d.nonce.expose())
        .body(Body::empty())
        .unwrap();
    let (status, who) = d.json(right).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        (who["id"].as_str(), who["method"].as_str()),
        (Some("user:ann"), Some("nonce"))
    );
    // Public routes stay public.
    assert_eq!(
        d.send(get("/healthz").body(Body::empty()).unwrap()).await.0,
        StatusCode::OK
    );
}

#[tokio::test]
async fn a_launch_token_signs_in_with_a_cookie_that_needs_origin_and_csrf_to_change_anything() {
    let d = daemon();
    let now = (now_ms() / 1000) as u64;
    let token = mint_launch_token(&d.nonce, [7; 16], now + 60);
    let (status, headers, _) = d
        .send(
            get(&format!("/launch?token={}", token.expose()))
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let set_cookie = headers[header::SET_COOKIE].to_str().unwrap().to_string();
    assert!(
        set_cookie.contains("HttpOnly; SameSite=Strict"),
        "{set_cookie}"
    );
    let cookie = set_cookie
        .split(';')
        .next()
        .and_then(|pair| pair.strip_prefix("kaged_session="))
        .unwrap()
        .to_string();
    let cookie_header = format!("kaged_session={cookie}");
    // The same launch token works once.
    let (status, _, _) = d
        .send(
            get(&format!("/launch?token={}", token.expose()))
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    let (status, who) = d
        .json(
            get("/api/v1/whoami")
                .header(header::COOKIE, &cookie_header)
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(who["method"], "session", "the wire name of a login cookie");
    let csrf = who["csrf_token"].as_str().unwrap().to_string();

    let logout = |origin: Option<&str>, csrf: Option<&str>| {
        let mut request = Request::post("/api/v1/auth/logout")
            .header(header::HOST, HOST)
            .header(header::COOKIE, &cookie_header);
        if let Some(origin) = origin {
            request = request.header(header::ORIGIN, origin);
        }
        if let Some(csrf) = csrf {
            request = request.header(kaged_auth::CSRF_HEADER, csrf);
        }
        request.body(Body::empty()).unwrap()
    };
    assert_eq!(
        d.json(logout(None, Some(&csrf))).await.0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        d.json(logout(Some(ORIGIN), None)).await.0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        d.json(logout(Some(ORIGIN), Some("wrong"))).await.0,
        StatusCode::FORBIDDEN
    );
    let (status, headers, _) = d.send(logout(Some(ORIGIN), Some(&csrf))).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert!(
        headers[header::SET_COOKIE]
            .to_str()
            .unwrap()
            .starts_with("kaged_session=; ")
    );
    // Signed out: the cookie no longer authenticates.
    let (status, body) = d
        .json(
            get("/api/v1/whoami")
                .header(header::COOKIE, &cookie_header)
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::UNAUTHORIZED, "unauthenticated")
    );
}

#[tokio::test]
async fn the_plugin_manifest_schema_is_public_like_the_project_file_s() {
    let d = daemon();
    let (status, schema) = d
        .json(get("/api/v1/plugins/schema").body(Body::empty()).unwrap())
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(schema, kaged_plugin::json_schema());
    // Only the schema: the plugins themselves still need signing in.
    let (status, body) = d
        .json(get("/api/v1/plugins").body(Body::empty()).unwrap())
        .await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::UNAUTHORIZED, "unauthenticated")
    );
}
