//! Every credential check of the HTTP edge, in one place: who a request comes from (an
//! [`Actor`] with a [`Role`]) and whether it may go on.
//!
//! Credentials, in the order they are tried:
//! - `Authorization: Bearer`: the admin token (an actor named `admin-token`, role admin), the
//!   viewer token (`viewer-token`, viewer) or a per-user API token (`pmu_…`: its user, with the
//!   lower of the token's and the user's role);
//! - `Authorization: Basic`: the configured viewer user (viewer);
//! - the session cookie of a signed-in user (`login.rs`, or `oidc_login.rs` for a user of the
//!   OpenID Connect provider, whose role the session holds), whose CSRF token every request but
//!   `GET`/`HEAD`/`OPTIONS` must carry in `X-CSRF-Token`, with a matching `Origin`/`Referer`
//!   when the browser sends one;
//! - the viewer token's cookie (after `/?token=`; viewer, reads only);
//! - nothing: while no user account, no viewer credential and no OpenID Connect provider exists (the first start, the demo)
//!   reads are open to an `anonymous` viewer and every write is refused with 401.
//!
//! [`require_reader`] guards the dashboard and the read API; handlers that change anything take
//! an [`Actor`] (its extractor checks the CSRF token) and call [`Actor::require`]. Report ingest
//! and the agents' endpoints keep the terminal tokens, `/healthz` and the sign-in page stay open,
//! and `/metrics` is open unless `web.protect_metrics` is set.
//!
//! Credentials are never logged.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{FromRequestParts, Query, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use base64::Engine;
use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::http::error::{ApiError, Reason};
use crate::http::AppState;

/// The session cookie of a signed-in user.
pub const SESSION_COOKIE: &str = "posmon_session";
/// The header a cookie-authenticated request that changes something carries its CSRF token in.
pub const CSRF_HEADER: &str = "x-csrf-token";
/// The actor of the legacy admin token.
pub const ADMIN_TOKEN_ACTOR: &str = "admin-token";
/// The actor of the legacy viewer token (bearer or cookie).
pub const VIEWER_TOKEN_ACTOR: &str = "viewer-token";
/// The actor of a request without credentials while reads are open.
pub const ANONYMOUS_ACTOR: &str = "anonymous";
/// Names no user account may take: the actors above.
pub const RESERVED_NAMES: [&str; 3] = [ADMIN_TOKEN_ACTOR, VIEWER_TOKEN_ACTOR, ANONYMOUS_ACTOR];

/// What an actor may do: each role may do everything the ones below it may.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Reads the dashboard and the read API.
    Viewer,
    /// Also acknowledges, comments, silences and asks for probes.
    Operator,
    /// Also changes the policy, receivers, profiles, enrollments, credentials and users.
    Admin,
}

impl Role {
    pub const ALL: [Role; 3] = [Role::Viewer, Role::Operator, Role::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }

    pub fn parse(text: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|role| role.as_str() == text)
    }
}

/// Who a request comes from.
#[derive(Clone, Debug)]
pub struct Actor {
    pub name: String,
    pub role: Role,
}

impl Actor {
    /// Refuses an actor below `role`: 403 naming the role needed (401 for the anonymous reader,
    /// who should sign in).
    pub fn require(&self, role: Role) -> Result<(), ApiError> {
        if self.role >= role {
            return Ok(());
        }
        if self.name == ANONYMOUS_ACTOR {
            return Err(ApiError::new(
                Reason::MissingToken,
                format!(
                    "sign in (or send a bearer token): the {} role is needed",
                    role.as_str()
                ),
            ));
        }
        Err(ApiError::new(
            Reason::Forbidden,
            format!(
                "the {} role is needed; {} has the {} role",
                role.as_str(),
                self.name,
                self.role.as_str()
            ),
        ))
    }
}

/// How a request proved who it comes from.
#[derive(Clone, Debug)]
pub enum Via {
    /// A bearer token or basic auth: a script's credential, sent on purpose (no CSRF check).
    Header,
    /// A signed-in user's session cookie, with the session's id and CSRF token.
    Session { id: String, csrf: String },
    /// The viewer token's cookie.
    ViewerCookie,
    /// Nothing, while reads are open.
    Anonymous,
}

/// An authenticated request: the actor and how.
#[derive(Clone, Debug)]
pub struct Authenticated {
    pub actor: Actor,
    pub via: Via,
}

fn cookies<'a>(headers: &'a HeaderMap, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(move |pair| pair.trim().strip_prefix(name)?.strip_prefix('='))
}

/// The session id a request's cookie names, if any.
pub fn session_cookie(headers: &HeaderMap) -> Option<&str> {
    cookies(headers, SESSION_COOKIE).next()
}

fn missing(message: &str) -> ApiError {
    ApiError::new(Reason::MissingToken, message)
}

/// Who the request's credentials name. Refuses wrong credentials (401) rather than falling back
/// to anonymous.
pub fn authenticate(state: &AppState, headers: &HeaderMap) -> Result<Authenticated, ApiError> {
    let header_actor = |name: &str, role| {
        Ok(Authenticated {
            actor: Actor {
                name: name.to_string(),
                role,
            },
            via: Via::Header,
        })
    };
    if let Some(value) = headers.get(header::AUTHORIZATION) {
        let value = value.to_str().unwrap_or_default();
        if let Some(token) = value.strip_prefix("Bearer ") {
            let token = token.trim();
            if state
                .admin_token
                .as_deref()
                .is_some_and(|admin| same(admin.as_bytes(), token.as_bytes()))
            {
                return header_actor(ADMIN_TOKEN_ACTOR, Role::Admin);
            }
            if state
                .viewer
                .as_ref()
                .is_some_and(|viewer| viewer.token_matches(token))
            {
                return header_actor(VIEWER_TOKEN_ACTOR, Role::Viewer);
            }
            if token.starts_with(crate::users::TOKEN_PREFIX) {
                let found = state
                    .accounts
                    .users
                    .token_actor(token)
                    .map_err(|error| ApiError::internal("looking up an API token", error))?;
                if let Some((name, role)) = found {
                    return header_actor(&name, role);
                }
            }
            return Err(ApiError::new(
                Reason::InvalidToken,
                "not a valid token: neither the admin token, the viewer token nor a live API token",
            ));
        }
        if let Some(encoded) = value.strip_prefix("Basic ") {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(encoded.trim())
                .unwrap_or_default();
            if let Some(user) = state
                .viewer
                .as_ref()
                .and_then(|viewer| viewer.basic_user(&decoded))
            {
                return header_actor(&user, Role::Viewer);
            }
            return Err(ApiError::new(
                Reason::InvalidToken,
                "not the viewer user's name and password",
            ));
        }
        return Err(missing(
            "the Authorization header must be Bearer <token> or Basic",
        ));
    }
    if let Some(id) = session_cookie(headers) {
        if let Some(session) = state.accounts.sessions.lookup(id, Instant::now()) {
            if let Some(role) = session.external_role {
                // Signed in with OpenID Connect: no local account; the role given at sign-in.
                return Ok(Authenticated {
                    actor: Actor {
                        name: session.user,
                        role,
                    },
                    via: Via::Session {
                        id: id.to_string(),
                        csrf: session.csrf,
                    },
                });
            }
            let user = state
                .accounts
                .users
                .get(&session.user)
                .map_err(|error| ApiError::internal("looking up a session's user", error))?;
            match user {
                Some(user) if !user.disabled && user.generation == session.generation => {
                    return Ok(Authenticated {
                        actor: Actor {
                            name: user.name,
                            role: user.role,
                        },
                        via: Via::Session {
                            id: id.to_string(),
                            csrf: session.csrf,
                        },
                    });
                }
                // Disabled, removed or its password reset since: the session is over.
                _ => {
                    state.accounts.sessions.remove(id);
                }
            }
        }
    }
    if let Some(viewer) = &state.viewer {
        if cookies(headers, VIEWER_COOKIE).any(|token| viewer.token_matches(token)) {
            return Ok(Authenticated {
                actor: Actor {
                    name: VIEWER_TOKEN_ACTOR.to_string(),
                    role: Role::Viewer,
                },
                via: Via::ViewerCookie,
            });
        }
    }
    if reads_open(state)? {
        return Ok(Authenticated {
            actor: Actor {
                name: ANONYMOUS_ACTOR.to_string(),
                role: Role::Viewer,
            },
            via: Via::Anonymous,
        });
    }
    Err(missing(
        "sign in, or send a bearer token (an API token, the viewer or the admin token)",
    ))
}

/// Whether requests without credentials may read: while no viewer credential and no OpenID
/// Connect provider is configured and no user account exists.
pub fn reads_open(state: &AppState) -> Result<bool, ApiError> {
    if state.viewer.is_some() || state.oidc.is_some() {
        return Ok(false);
    }
    let any = state
        .accounts
        .users
        .any()
        .map_err(|error| ApiError::internal("looking up the user accounts", error))?;
    Ok(!any)
}

fn is_safe(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// The `host[:port]` of an `Origin` or `Referer` value.
fn authority(url: &str) -> Option<&str> {
    let rest = url.split_once("://")?.1;
    Some(rest.split(['/', '?', '#']).next().unwrap_or(rest))
}

/// Refuses a request whose `Origin` or `Referer` (when sent) names another host than `Host`.
pub fn check_same_origin(headers: &HeaderMap) -> Result<(), ApiError> {
    let host = headers
        .get(header::HOST)
        .and_then(|value| value.to_str().ok());
    for name in [header::ORIGIN, header::REFERER] {
        let Some(value) = headers.get(&name) else {
            continue;
        };
        let sent = value.to_str().ok().and_then(authority);
        let same_host = sent
            .zip(host)
            .is_some_and(|(sent, host)| sent.eq_ignore_ascii_case(host));
        if !same_host {
            return Err(ApiError::new(
                Reason::Csrf,
                format!("the {name} header names another site than this collector"),
            ));
        }
    }
    Ok(())
}

/// The CSRF defence of a cookie-authenticated request that changes something: the session's
/// token in `X-CSRF-Token` and no foreign `Origin`/`Referer`.
fn check_csrf(headers: &HeaderMap, expected: &str) -> Result<(), ApiError> {
    let sent = headers
        .get(CSRF_HEADER)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default();
    if !same(expected.as_bytes(), sent.as_bytes()) {
        return Err(ApiError::new(
            Reason::Csrf,
            "a signed-in request that changes something needs the session's X-CSRF-Token header (GET /api/v1/me)",
        ));
    }
    check_same_origin(headers)
}

/// Authenticates a request that changes something (or reads), with the CSRF check for cookies.
fn authenticate_parts(state: &AppState, parts: &Parts) -> Result<Authenticated, ApiError> {
    let authenticated = match parts.extensions.get::<Authenticated>() {
        Some(authenticated) => authenticated.clone(),
        None => authenticate(state, &parts.headers)?,
    };
    if !is_safe(&parts.method) {
        match &authenticated.via {
            Via::Header => {}
            Via::Session { csrf, .. } => check_csrf(&parts.headers, csrf)?,
            Via::ViewerCookie => {
                return Err(ApiError::new(
                    Reason::Forbidden,
                    "the viewer token reads only",
                ))
            }
            Via::Anonymous => {
                return Err(missing(
                    "sign in (or send a bearer token) to change anything",
                ))
            }
        }
    }
    Ok(authenticated)
}

impl FromRequestParts<Arc<AppState>> for Authenticated {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        authenticate_parts(state, parts)
    }
}

impl FromRequestParts<Arc<AppState>> for Actor {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        authenticate_parts(state, parts).map(|authenticated| authenticated.actor)
    }
}

/// Whether a request must be authenticated before its handler runs: every `GET`/`HEAD` but the
/// open ones. Requests that change something are authenticated by their handler's [`Actor`] (or
/// by a terminal's token).
pub fn needs_reader(method: &Method, path: &str, protect_metrics: bool) -> bool {
    if matches!(
        path,
        "/healthz"
            | "/login"
            | "/login/oidc"
            | "/login/oidc/callback"
            | "/assets/app.css"
            | "/assets/favicon.svg"
    ) || path == posmon_protocol::REPORTS_PATH
    {
        return false;
    }
    if path.starts_with("/api/v1/agent/") {
        // The agents' control endpoints: the terminal tokens guard them.
        return false;
    }
    if path == "/metrics" {
        return protect_metrics;
    }
    method == Method::GET || method == Method::HEAD
}

/// The middleware: authenticates a read (keeping the result for the handler), or answers 401 —
/// for the page, with the sign-in form.
pub async fn require_reader(
    State(state): State<Arc<AppState>>,
    mut request: Request,
    next: Next,
) -> Response {
    let path = request.uri().path();
    if !needs_reader(request.method(), path, state.config.web.protect_metrics) {
        return next.run(request).await;
    }
    let refusal = match authenticate(&state, request.headers()) {
        Ok(authenticated) => {
            request.extensions_mut().insert(authenticated);
            return next.run(request).await;
        }
        Err(refusal) => refusal,
    };
    if refusal.reason == Reason::Internal {
        return refusal.into_response();
    }
    // `/?token=…`: keep the viewer token in a cookie and drop it from the address bar.
    if let Some(viewer) = &state.viewer {
        let query = Query::<HashMap<String, String>>::try_from_uri(request.uri())
            .map(|query| query.0)
            .unwrap_or_default();
        if let Some(token) = query.get("token") {
            if viewer.token_matches(token) {
                // Always to the page itself: the path is the client's and could name another host.
                // A wall screen's language and kiosk mode stay, when they are ones the page knows.
                let mut response = Redirect::to(&page_after_token(&query)).into_response();
                let cookie = set_cookie(
                    &state,
                    request.headers(),
                    VIEWER_COOKIE,
                    token,
                    "Path=/; SameSite=Strict",
                );
                if let Some(value) = cookie {
                    response.headers_mut().insert(header::SET_COOKIE, value);
                }
                return response;
            }
        }
    }
    let path = request.uri().path();
    let mut response = if path.starts_with("/api/") || path == "/metrics" {
        refusal.into_response()
    } else {
        crate::http::login::sign_in_page(
            &state,
            crate::http::login::language(request.uri(), request.headers()),
            None,
            axum::http::StatusCode::UNAUTHORIZED,
        )
    };
    let basic = state
        .viewer
        .as_ref()
        .is_some_and(|viewer| viewer.basic.is_some());
    if basic {
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"posmon\", charset=\"UTF-8\""),
        );
    }
    response
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

/// Whether cookies set on this request's answer must be `Secure`: the collector serves TLS, or
/// a proxy in front says the client used HTTPS.
/// A `Set-Cookie` value: `<name>=<value>; <attributes>; HttpOnly`, and `Secure` when the
/// request came over TLS.
pub(crate) fn set_cookie(
    state: &AppState,
    headers: &HeaderMap,
    name: &str,
    value: &str,
    attributes: &str,
) -> Option<HeaderValue> {
    let secure = if secure_request(state, headers) {
        "; Secure"
    } else {
        ""
    };
    HeaderValue::from_str(&format!("{name}={value}; {attributes}; HttpOnly{secure}")).ok()
}

pub fn secure_request(state: &AppState, headers: &HeaderMap) -> bool {
    state.config.tls.files().is_some()
        || headers
            .get("x-forwarded-proto")
            .is_some_and(|proto| proto == "https")
}

/// The environment variable that, when set, holds the viewer token.
pub const VIEWER_TOKEN_ENV: &str = "POSMON_VIEWER_TOKEN";
/// The cookie the viewer token is kept in after `/?token=`.
const VIEWER_COOKIE: &str = "posmon_viewer";
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

    pub(crate) fn token_matches(&self, offered: &str) -> bool {
        self.token
            .as_deref()
            .is_some_and(|token| same(token.as_bytes(), offered.as_bytes()))
    }

    /// The viewer user's name when `decoded` is its `user:password`.
    fn basic_user(&self, decoded: &[u8]) -> Option<String> {
        let basic = self.basic.as_deref()?;
        same(basic.as_bytes(), decoded)
            .then(|| basic.split(':').next().unwrap_or_default().to_string())
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
            needs_reader(&method, path, protect_metrics),
            expected,
            "{method} {path} protect_metrics={protect_metrics}"
        );
    }

    #[test]
    fn what_needs_a_reader() {
        check(Method::GET, "/", false, true);
        check(Method::GET, "/assets/app.js", false, true);
        check(Method::GET, "/assets/app.css", false, false);
        check(Method::GET, "/login", false, false);
        check(Method::POST, "/login", false, false);
        check(Method::GET, "/api/v1/findings", false, true);
        check(Method::GET, "/api/v1/me", false, true);
        check(Method::POST, "/api/v1/reports", false, false);
        check(Method::GET, "/api/v1/policy/versions", false, true);
        check(Method::PUT, "/api/v1/policy/versions", false, false);
        check(Method::GET, "/healthz", false, false);
        check(Method::GET, "/api/v1/agent/control", false, false);
        check(Method::GET, "/api/v1/agent/config", false, false);
        check(Method::PUT, "/api/v1/config/profiles/east", false, false);
        check(Method::GET, "/metrics", false, false);
        check(Method::GET, "/metrics", true, true);
    }

    #[test]
    fn roles_are_ordered_and_required() {
        assert!(Role::Viewer < Role::Operator && Role::Operator < Role::Admin);
        for role in Role::ALL {
            assert_eq!(Role::parse(role.as_str()), Some(role));
            assert_eq!(
                serde_json::to_string(&role).unwrap(),
                format!("\"{}\"", role.as_str())
            );
        }
        assert_eq!(Role::parse("root"), None);
        let actor = |name: &str, role| Actor {
            name: name.to_string(),
            role,
        };
        assert!(actor("li", Role::Operator).require(Role::Viewer).is_ok());
        assert!(actor("li", Role::Operator).require(Role::Operator).is_ok());
        let refused = actor("li", Role::Operator)
            .require(Role::Admin)
            .unwrap_err();
        assert_eq!(refused.reason, Reason::Forbidden);
        assert!(
            refused.message.contains("the admin role is needed"),
            "{}",
            refused.message
        );
        let anonymous = actor(ANONYMOUS_ACTOR, Role::Viewer)
            .require(Role::Operator)
            .unwrap_err();
        assert_eq!(anonymous.reason, Reason::MissingToken);
    }

    #[test]
    fn foreign_origins_are_refused() {
        let headers = |pairs: &[(header::HeaderName, &str)]| {
            let mut headers = HeaderMap::new();
            for (name, value) in pairs {
                headers.insert(name.clone(), HeaderValue::from_str(value).unwrap());
            }
            headers
        };
        let host = (header::HOST, "127.0.0.1:8080");
        for (sent, ok) in [
            (vec![host.clone()], true),
            (
                vec![host.clone(), (header::ORIGIN, "http://127.0.0.1:8080")],
                true,
            ),
            (
                vec![host.clone(), (header::ORIGIN, "https://127.0.0.1:8080")],
                true,
            ),
            (
                vec![
                    host.clone(),
                    (header::REFERER, "http://127.0.0.1:8080/#/problems"),
                ],
                true,
            ),
            (
                vec![host.clone(), (header::ORIGIN, "http://evil.example")],
                false,
            ),
            (
                vec![
                    host.clone(),
                    (header::ORIGIN, "http://127.0.0.1:8080.evil.example"),
                ],
                false,
            ),
            (
                vec![
                    host.clone(),
                    (header::REFERER, "http://evil.example/127.0.0.1:8080"),
                ],
                false,
            ),
            (vec![host.clone(), (header::ORIGIN, "null")], false),
            (vec![(header::ORIGIN, "http://127.0.0.1:8080")], false),
        ] {
            assert_eq!(check_same_origin(&headers(&sent)).is_ok(), ok, "{sent:?}");
        }
        let sent = headers(std::slice::from_ref(&host));
        assert_eq!(
            check_csrf(&sent, "expected").unwrap_err().reason,
            Reason::Csrf
        );
        let mut sent = headers(&[host]);
        sent.insert(CSRF_HEADER, HeaderValue::from_static("expected"));
        assert!(check_csrf(&sent, "expected").is_ok());
    }

    #[test]
    fn viewer_credentials() {
        let auth = ViewerAuth::new(
            Some("a-viewer-token-0123".into()),
            Some("ops:secret-pass".into()),
        )
        .unwrap();
        assert!(auth.token_matches("a-viewer-token-0123"));
        assert!(!auth.token_matches("a-viewer-token-0124"));
        assert_eq!(auth.basic_user(b"ops:secret-pass").as_deref(), Some("ops"));
        assert_eq!(auth.basic_user(b"ops:secret-pasS"), None);
        let cookie = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::COOKIE, HeaderValue::from_str(value).unwrap());
            cookies(&headers, VIEWER_COOKIE)
                .map(str::to_string)
                .collect::<Vec<_>>()
        };
        assert_eq!(cookie("a=b; posmon_viewer=tok"), ["tok"]);
        assert!(cookie("posmon_viewerx=tok").is_empty());
        assert!(ViewerAuth::new(None, None).is_none());
        assert!(check_secret("viewer token", "short", TOKEN_MIN_CHARS).is_err());
        assert!(check_secret("viewer token", "has;a;semicolon;in;it", TOKEN_MIN_CHARS).is_err());
    }
}
