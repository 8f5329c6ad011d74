//! The bundled page at `/` (the full console comes later) and the short pages shown to a
//! browser that is not signed in. No inline scripts or styles: the CSP stays strict.
//!
//! Third-party code (xterm.js and its fit addon) is served under `/assets/vendor/`: `build.rs`
//! fetches it from the npm registry as pinned (and integrity-checked) by
//! `ui/package-lock.json` into `OUT_DIR/vendor/`, and it is embedded from there.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};

use crate::error::{ApiError, ErrorCode};
use crate::state::ServerState;

const INDEX_HTML: &str = include_str!("../assets/index.html");
const ASSETS: &[(&str, &str, &str)] = &[
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_str!("../assets/app.js"),
    ),
    (
        "style.css",
        "text/css; charset=utf-8",
        include_str!("../assets/style.css"),
    ),
];

/// The vendored files, by name under `/assets/vendor/`.
const VENDOR: &[(&str, &str, &[u8])] = &[
    (
        "xterm.js",
        "text/javascript; charset=utf-8",
        include_bytes!(concat!(env!("OUT_DIR"), "/vendor/xterm.js")),
    ),
    (
        "xterm.css",
        "text/css; charset=utf-8",
        include_bytes!(concat!(env!("OUT_DIR"), "/vendor/xterm.css")),
    ),
    (
        "addon-fit.js",
        "text/javascript; charset=utf-8",
        include_bytes!(concat!(env!("OUT_DIR"), "/vendor/addon-fit.js")),
    ),
];

pub async fn index(State(state): State<Arc<ServerState>>) -> Response {
    if !state.info.settings.ui_serve {
        return ApiError::new(
            ErrorCode::NotFound,
            "the web UI is disabled ([ui] serve = false)",
        )
        .into_response();
    }
    Html(INDEX_HTML).into_response()
}

pub async fn asset(Path(file): Path<String>) -> Response {
    match ASSETS.iter().find(|(name, _, _)| *name == file) {
        Some((_, content_type, body)) => {
            ([(header::CONTENT_TYPE, *content_type)], *body).into_response()
        }
        None => ApiError::new(ErrorCode::NotFound, "no such asset").into_response(),
    }
}

/// `/assets/vendor/{file}`: headers (CSP, `cache-control: no-cache`, nosniff) come from
/// `middleware::security_headers` as for every other asset.
pub async fn vendor_asset(Path(file): Path<String>) -> Response {
    match VENDOR.iter().find(|(name, _, _)| *name == file) {
        Some((_, content_type, body)) => {
            ([(header::CONTENT_TYPE, *content_type)], *body).into_response()
        }
        None => ApiError::new(ErrorCode::NotFound, "no such asset").into_response(),
    }
}

fn escape(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            '&' => "&amp;".to_string(),
            '<' => "&lt;".to_string(),
            '>' => "&gt;".to_string(),
            '"' => "&quot;".to_string(),
            '\'' => "&#39;".to_string(),
            c => c.to_string(),
        })
        .collect()
}

/// A short page for a browser: what happened and, when signing in again fixes it, the one
/// command to run.
pub fn problem_page(status: StatusCode, message: &str, signing_in_helps: bool) -> Response {
    let title = if signing_in_helps {
        "Sign in to kaged"
    } else {
        "kaged refused this request"
    };
    let help = if signing_in_helps {
        "<p>In a terminal on the machine running kaged:</p><pre><code>kaged auth open</code></pre>\
         <p class=\"muted\">It prints a fresh one-time launch URL and tries to open it here.</p>"
    } else {
        ""
    };
    let body = format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{title}</title><link rel=\"stylesheet\" href=\"/assets/style.css\"></head>\
         <body><main class=\"problem\" id=\"kaged-problem\"><h1>{title}</h1><p>{}</p>{help}\
         </main></body></html>\n",
        escape(message)
    );
    (status, Html(body)).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problem_pages_escape_reflected_text() {
        assert_eq!(escape("<script>\"&'"), "&lt;script&gt;&quot;&amp;&#39;");
    }
}
