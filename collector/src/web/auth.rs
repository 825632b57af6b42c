//! Viewer authentication: when a viewer token or a basic-auth user is configured, the
//! dashboard, its assets and the read API (every `GET /api/v1/...` but the policy and the
//! enrollment codes, which keep the admin token) require one of them. Report ingest keeps the terminal tokens, `/healthz`
//! stays open, and `/metrics` is open unless `web.protect_metrics` is set.
//!
//! A browser either answers the basic-auth prompt or opens `/?token=<token>` once: the token
//! then lives in an HttpOnly cookie and the address bar loses it. Credentials are never logged.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use axum::extract::{Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Redirect, Response};
use base64::Engine;

use crate::config::Config;
use crate::http::error::{ApiError, Reason};
use crate::http::AppState;

/// The environment variable that, when set, holds the viewer token.
pub const VIEWER_TOKEN_ENV: &str = "POSMON_VIEWER_TOKEN";
/// The cookie the token is kept in after `/?token=`.
const COOKIE: &str = "posmon_viewer";
const TOKEN_MIN_CHARS: usize = 16;
const PASSWORD_MIN_CHARS: usize = 8;
/// Longer secrets are refused: they come from files a person writes.
const SECRET_MAX_CHARS: usize = 256;

#[derive(Debug, thiserror::Error)]
pub enum ViewerAuthError {
    #[error("cannot read {what} file {path}: {source}")]
    Read {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{what}: {problem}")]
    Invalid { what: &'static str, problem: String },
}

/// The configured viewer credentials.
#[derive(Clone, PartialEq, Eq)]
pub struct ViewerAuth {
    token: Option<String>,
    /// `user:password`, as basic auth sends it before encoding.
    basic: Option<String>,
}

impl std::fmt::Debug for ViewerAuth {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the secrets themselves.
        formatter
            .debug_struct("ViewerAuth")
            .field("token", &self.token.is_some())
            .field("basic", &self.basic.is_some())
            .finish()
    }
}

fn read_secret(
    what: &'static str,
    config: &Config,
    file: &std::path::Path,
) -> Result<String, ViewerAuthError> {
    let path = config.in_data_dir(file);
    std::fs::read_to_string(&path)
        .map(|text| text.trim().to_string())
        .map_err(|source| ViewerAuthError::Read { what, path, source })
}

fn check_secret(what: &'static str, secret: &str, min: usize) -> Result<(), ViewerAuthError> {
    let count = secret.chars().count();
    // Cookie and header values: visible ASCII without the cookie separators.
    let bad = |c: char| !c.is_ascii_graphic() || matches!(c, ';' | ',' | '"' | '\\');
    if count < min || count > SECRET_MAX_CHARS || secret.chars().any(bad) {
        return Err(ViewerAuthError::Invalid {
            what,
            problem: format!(
                "must be {min} to {SECRET_MAX_CHARS} visible ASCII characters without ; , \" or \\"
            ),
        });
    }
    Ok(())
}

impl ViewerAuth {
    /// The credentials `[web]` configures, the token from `POSMON_VIEWER_TOKEN` (its value
    /// `env_token`) first; `None` when nothing is configured (the dashboard is open).
    pub fn load(
        config: &Config,
        env_token: Option<String>,
    ) -> Result<Option<ViewerAuth>, ViewerAuthError> {
        let web = &config.web;
        let token = match env_token.filter(|value| !value.trim().is_empty()) {
            Some(value) => Some(value.trim().to_string()),
            None => match &web.viewer_token_file {
                Some(file) => Some(read_secret("viewer token", config, file)?),
                None => None,
            },
        };
        if let Some(token) = &token {
            check_secret("viewer token", token, TOKEN_MIN_CHARS)?;
        }
        let basic = match (&web.viewer_user, &web.viewer_password_file) {
            (Some(user), Some(file)) => {
                let password = read_secret("viewer password", config, file)?;
                check_secret("viewer password", &password, PASSWORD_MIN_CHARS)?;
                Some(format!("{user}:{password}"))
            }
            _ => None,
        };
        Ok(ViewerAuth::new(token, basic))
    }

    /// `None` when neither credential is given.
    pub fn new(token: Option<String>, basic: Option<String>) -> Option<ViewerAuth> {
        (token.is_some() || basic.is_some()).then_some(ViewerAuth { token, basic })
    }

    fn token_matches(&self, offered: &str) -> bool {
        self.token
            .as_deref()
            .is_some_and(|token| same(token.as_bytes(), offered.as_bytes()))
    }

    /// Whether the request's headers carry a valid credential: a bearer token, basic auth or
    /// the cookie.
    fn admits(&self, headers: &HeaderMap) -> bool {
        if let Some(value) = headers
            .get(header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
        {
            if let Some(token) = value.strip_prefix("Bearer ") {
                return self.token_matches(token.trim());
            }
            if let Some(encoded) = value.strip_prefix("Basic ") {
                let decoded = base64::engine::general_purpose::STANDARD
                    .decode(encoded.trim())
                    .unwrap_or_default();
                return self
                    .basic
                    .as_deref()
                    .is_some_and(|basic| same(basic.as_bytes(), &decoded));
            }
        }
        headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(';'))
            .filter_map(|pair| pair.trim().strip_prefix(COOKIE)?.strip_prefix('='))
            .any(|token| self.token_matches(token))
    }
}

/// Compares in time that depends on the length only, not on where the first difference is.
fn same(expected: &[u8], offered: &[u8]) -> bool {
    expected.len() == offered.len()
        && expected
            .iter()
            .zip(offered)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

/// Whether a request needs the viewer credentials (when they are configured).
pub fn needs_viewer(method: &Method, path: &str, protect_metrics: bool) -> bool {
    if path == "/healthz" || path == posmon_protocol::REPORTS_PATH {
        return false;
    }
    if path.starts_with("/api/v1/policy/") || path.starts_with("/api/v1/enrollments") {
        // The admin token guards it.
        return false;
    }
    if path.starts_with("/api/v1/agent/") {
        // The agents' control endpoints: the terminal tokens guard them.
        return false;
    }
    if path == "/metrics" {
        return protect_metrics;
    }
    method == Method::GET || method == Method::HEAD || path == "/" || path.starts_with("/assets/")
}

/// The middleware: lets a request through, or answers 401.
pub async fn require_viewer(
    State(state): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Response {
    let Some(viewer) = state.viewer_auth() else {
        return next.run(request).await;
    };
    let path = request.uri().path();
    if !needs_viewer(request.method(), path, state.config.web.protect_metrics) {
        return next.run(request).await;
    }
    if viewer.admits(request.headers()) {
        return next.run(request).await;
    }
    // `/?token=…`: keep the token in a cookie and drop it from the address bar.
    let query = Query::<HashMap<String, String>>::try_from_uri(request.uri())
        .map(|query| query.0)
        .unwrap_or_default();
    if let Some(token) = query.get("token") {
        if viewer.token_matches(token) {
            // Always to the page itself: the path is the client's and could name another host.
            // A wall screen's language and kiosk mode stay, when they are ones the page knows.
            let mut response = Redirect::to(&page_after_token(&query)).into_response();
            let secure = request
                .headers()
                .get("x-forwarded-proto")
                .is_some_and(|proto| proto == "https");
            let cookie = format!(
                "{COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict{}",
                if secure { "; Secure" } else { "" }
            );
            if let Ok(value) = HeaderValue::from_str(&cookie) {
                response.headers_mut().insert(header::SET_COOKIE, value);
            }
            return response;
        }
    }
    refuse(viewer, path)
}

/// Where `/?token=…` leads: the page, keeping its `lang` and `kiosk` parameters when they are
/// ones the page knows (nothing else from the client is written into the address).
fn page_after_token(query: &HashMap<String, String>) -> String {
    let mut kept = Vec::new();
    if let Some(lang @ ("en" | "zh-CN")) = query.get("lang").map(String::as_str) {
        kept.push(format!("lang={lang}"));
    }
    if let Some(kiosk @ ("0" | "1")) = query.get("kiosk").map(String::as_str) {
        kept.push(format!("kiosk={kiosk}"));
    }
    if kept.is_empty() {
        "/".to_string()
    } else {
        format!("/?{}", kept.join("&"))
    }
}

fn refuse(viewer: &ViewerAuth, path: &str) -> Response {
    let challenge = if viewer.basic.is_some() {
        "Basic realm=\"posmon\", charset=\"UTF-8\""
    } else {
        "Bearer"
    };
    let mut response = if path.starts_with("/api/") || path == "/metrics" {
        ApiError::new(
            Reason::MissingToken,
            "viewer credentials required: a bearer viewer token or basic auth",
        )
        .into_response()
    } else {
        (
            StatusCode::UNAUTHORIZED,
            Html(include_str!("assets/unauthorized.html")),
        )
            .into_response()
    };
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static(challenge),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_link_keeps_only_known_page_parameters() {
        let query = |pairs: &[(&str, &str)]| -> HashMap<String, String> {
            pairs
                .iter()
                .map(|(key, value)| (key.to_string(), value.to_string()))
                .collect()
        };
        assert_eq!(page_after_token(&query(&[("token", "t")])), "/");
        assert_eq!(
            page_after_token(&query(&[("token", "t"), ("lang", "zh-CN"), ("kiosk", "1")])),
            "/?lang=zh-CN&kiosk=1"
        );
        assert_eq!(
            page_after_token(&query(&[("lang", "//evil.example"), ("kiosk", "yes")])),
            "/"
        );
    }

    fn check(method: Method, path: &str, protect_metrics: bool, expected: bool) {
        assert_eq!(
            needs_viewer(&method, path, protect_metrics),
            expected,
            "{method} {path} protect_metrics={protect_metrics}"
        );
    }

    #[test]
    fn what_needs_the_viewer() {
        check(Method::GET, "/", false, true);
        check(Method::GET, "/assets/app.js", false, true);
        check(Method::GET, "/api/v1/findings", false, true);
        check(Method::GET, "/api/v1/alerts/notifications", false, true);
        check(Method::POST, "/api/v1/reports", false, false);
        check(Method::GET, "/api/v1/policy/versions", false, false);
        check(Method::PUT, "/api/v1/policy/versions", false, false);
        check(Method::GET, "/api/v1/enrollments", false, false);
        check(Method::POST, "/api/v1/enroll", false, false);
        check(Method::GET, "/healthz", false, false);
        check(Method::GET, "/api/v1/agent/control", false, false);
        check(Method::GET, "/api/v1/agent/config", false, false);
        check(Method::GET, "/api/v1/config/profiles", false, true);
        check(Method::GET, "/api/v1/config/versions", false, true);
        check(Method::PUT, "/api/v1/config/profiles/east", false, false);
        check(Method::POST, "/api/v1/probe", false, false);
        check(Method::GET, "/metrics", false, false);
        check(Method::GET, "/metrics", true, true);
    }

    fn admits(auth: &ViewerAuth, name: header::HeaderName, value: &str) -> bool {
        let mut headers = HeaderMap::new();
        headers.insert(name, HeaderValue::from_str(value).unwrap());
        auth.admits(&headers)
    }

    #[test]
    fn credentials() {
        let auth = ViewerAuth::new(
            Some("a-viewer-token-0123".into()),
            Some("ops:secret-pass".into()),
        )
        .unwrap();
        let basic = |text: &str| {
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(text)
            )
        };
        for (name, value, expected) in [
            (
                header::AUTHORIZATION,
                "Bearer a-viewer-token-0123".to_string(),
                true,
            ),
            (
                header::AUTHORIZATION,
                "Bearer a-viewer-token-0124".to_string(),
                false,
            ),
            (header::AUTHORIZATION, basic("ops:secret-pass"), true),
            (header::AUTHORIZATION, basic("ops:secret-pasS"), false),
            (header::AUTHORIZATION, "Basic !!!".to_string(), false),
            (
                header::COOKIE,
                "a=b; posmon_viewer=a-viewer-token-0123".to_string(),
                true,
            ),
            (header::COOKIE, "posmon_viewer=nope".to_string(), false),
            (
                header::COOKIE,
                "posmon_viewerx=a-viewer-token-0123".to_string(),
                false,
            ),
        ] {
            assert_eq!(admits(&auth, name, &value), expected, "{value}");
        }
        assert!(ViewerAuth::new(None, None).is_none());
        assert!(check_secret("viewer token", "short", TOKEN_MIN_CHARS).is_err());
        assert!(check_secret("viewer token", "has;a;semicolon;in;it", TOKEN_MIN_CHARS).is_err());
    }
}
