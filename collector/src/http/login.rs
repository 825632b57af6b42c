//! Signing in and out, and what a signed-in user does for themselves:
//!
//! - `GET /login` (`?lang=en|zh-CN`): the sign-in form (also what `/` shows, with 401, to a
//!   browser without credentials);
//! - `POST /login` (form: `name`, `password`, `lang`): checks the password (argon2id, at most
//!   [`HASHING_IN_FLIGHT_MAX`] at once) under the rate limit (`sessions.rs`), ends the session
//!   the browser presented, if any, and starts a new one (never promoting an id that existed
//!   before the sign-in), then sends the browser to the dashboard;
//! - `POST /api/v1/logout`: ends the session;
//! - `GET /api/v1/me`: the actor, its role and the session's CSRF token, for the dashboard;
//! - `GET`/`POST /api/v1/me/tokens`, `DELETE /api/v1/me/tokens/{id}`: a signed-in user's API
//!   tokens (a new token is shown once).
//!
//! Never logs a password, a session id or a token; a failed sign-in is logged with the client
//! address only (a password typed into the name field must not reach the log either).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::{ConnectInfo, Path, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;
use time::OffsetDateTime;

use super::auth::{check_same_origin, session_cookie, Authenticated, Role, Via, SESSION_COOKIE};
use super::error::{ApiError, Reason};
use super::reports::{check_content_type, read_body};
use super::sessions::Locked;
use super::AppState;
use crate::users::UserError;

/// Password hashes computed at once (sign-ins, new users, resets): each takes some 19 MiB and
/// tens of milliseconds of a core.
pub const HASHING_IN_FLIGHT_MAX: usize = 2;
/// The largest sign-in form accepted.
const FORM_MAX_BYTES: usize = 4096;
/// How long a sign-in waits for its turn to hash before it is answered 503.
const HASHING_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

pub fn router() -> Router<Arc<AppState>> {
    Router::new()
        .route("/login", get(login_page).post(login))
        .route("/api/v1/logout", post(logout))
        .route("/api/v1/me", get(me))
        .route("/api/v1/me/tokens", get(my_tokens).post(issue_my_token))
        .route("/api/v1/me/tokens/{id}", delete(revoke_my_token))
}

/// The sign-in page's language.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Language {
    English,
    Chinese,
}

impl Language {
    pub(super) fn parse(text: &str) -> Option<Language> {
        match text {
            "en" => Some(Language::English),
            "zh-CN" | "zh" => Some(Language::Chinese),
            _ => None,
        }
    }

    pub(super) fn code(self) -> &'static str {
        match self {
            Language::English => "en",
            Language::Chinese => "zh-CN",
        }
    }
}

/// `?lang=` if given, else the browser's first language, else English.
pub fn language(uri: &Uri, headers: &HeaderMap) -> Language {
    let asked = uri.query().and_then(|query| {
        serde_urlencoded::from_str::<Vec<(String, String)>>(query)
            .ok()?
            .into_iter()
            .find(|(key, _)| key == "lang")
            .and_then(|(_, value)| Language::parse(&value))
    });
    asked.unwrap_or_else(|| {
        let accepted = headers
            .get(header::ACCEPT_LANGUAGE)
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default();
        if accepted.trim_start().starts_with("zh") {
            Language::Chinese
        } else {
            Language::English
        }
    })
}

/// The sign-in page's texts: (key, English, Chinese).
const TEXTS: &[(&str, &str, &str)] = &[
    ("title", "posmon — sign in", "posmon — 登录"),
    ("name_label", "User name", "用户名"),
    ("password_label", "Password", "密码"),
    ("submit", "Sign in", "登录"),
    ("other_lang_name", "中文", "English"),
    (
        "token_hint",
        "A wall screen can open /?token=<viewer token> once instead.",
        "大屏可改为用 /?token=<查看者令牌> 打开一次。",
    ),
    (
        "wrong",
        "Wrong user name or password.",
        "用户名或密码错误。",
    ),
    (
        "locked",
        "Too many failed sign-ins. Try again in {minutes} minutes.",
        "登录失败次数过多，请 {minutes} 分钟后再试。",
    ),
    (
        "busy",
        "The collector is busy. Try again in a moment.",
        "采集器繁忙，请稍后再试。",
    ),
    (
        "foreign",
        "This form was sent from another site.",
        "此表单来自其他站点。",
    ),
    (
        "oidc_button",
        "Sign in with {provider}",
        "使用 {provider} 登录",
    ),
    ("oidc_or", "or with a local account:", "或使用本地账号："),
    (
        "oidc_failed",
        "Signing in with the identity provider failed. Try again, or ask an administrator.",
        "通过身份提供方登录失败。请重试，或联系管理员。",
    ),
    (
        "oidc_expired",
        "This sign-in has expired or was used already. Start again.",
        "本次登录已过期或已使用，请重新开始。",
    ),
    (
        "oidc_no_role",
        "Your account has no role in posmon. Ask an administrator for one.",
        "您的账号在 posmon 中没有角色，请联系管理员分配。",
    ),
    (
        "oidc_unavailable",
        "The identity provider cannot be reached. Try again later.",
        "无法连接身份提供方，请稍后再试。",
    ),
    (
        "oidc_refused",
        "The identity provider refused the sign-in.",
        "身份提供方拒绝了本次登录。",
    ),
    (
        "oidc_signed_in",
        "Signed in. Continue to the dashboard.",
        "已登录。继续前往仪表板。",
    ),
];

pub(super) fn text(key: &str, language: Language) -> &'static str {
    TEXTS
        .iter()
        .find(|(name, _, _)| *name == key)
        .map(|(_, english, chinese)| match language {
            Language::English => *english,
            Language::Chinese => *chinese,
        })
        .unwrap_or("")
}

pub(super) fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

/// The sign-in page in `language`, with an error message if any.
pub fn sign_in_page(
    state: &AppState,
    language: Language,
    error: Option<String>,
    status: StatusCode,
) -> Response {
    let other = match language {
        Language::English => Language::Chinese,
        Language::Chinese => Language::English,
    };
    let mut page = include_str!("../web/assets/login.html")
        .replace("{{lang}}", language.code())
        .replace("{{other_lang}}", other.code())
        .replace(
            "{{oidc}}",
            &state
                .oidc
                .as_ref()
                .map(|oidc| {
                    format!(
                        "<p><a id=\"login-oidc\" class=\"button\" href=\"/login/oidc?lang={}\">{}</a></p>\n<p class=\"muted\">{}</p>",
                        language.code(),
                        escape(&text("oidc_button", language).replace("{provider}", oidc.display_name())),
                        escape(text("oidc_or", language)),
                    )
                })
                .unwrap_or_default(),
        )
        .replace(
            "{{error}}",
            &error
                .map(|error| {
                    format!(
                        "<p id=\"login-error\" class=\"error\">{}</p>",
                        escape(&error)
                    )
                })
                .unwrap_or_default(),
        );
    for key in [
        "title",
        "name_label",
        "password_label",
        "submit",
        "other_lang_name",
        "token_hint",
    ] {
        page = page.replace(&format!("{{{{{key}}}}}"), &escape(text(key, language)));
    }
    (status, [(header::CACHE_CONTROL, "no-store")], Html(page)).into_response()
}

async fn login_page(State(state): State<Arc<AppState>>, uri: Uri, headers: HeaderMap) -> Response {
    sign_in_page(&state, language(&uri, &headers), None, StatusCode::OK)
}

#[derive(Deserialize)]
struct LoginForm {
    #[serde(default)]
    name: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    lang: String,
}

pub(super) fn session_cookie_header(
    state: &AppState,
    headers: &HeaderMap,
    value: &str,
    max_age: u64,
) -> Option<HeaderValue> {
    super::auth::set_cookie(
        state,
        headers,
        SESSION_COOKIE,
        value,
        &format!("Path=/; Max-Age={max_age}; SameSite=Strict"),
    )
}

/// `POST /login`.
async fn login(State(state): State<Arc<AppState>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let address = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(address)| address.ip().to_string())
        .unwrap_or_else(|| "unknown".to_string());
    let mut language = language(&parts.uri, &parts.headers);
    let page = |language, key: &str, status| {
        sign_in_page(
            &state,
            language,
            Some(text(key, language).to_string()),
            status,
        )
    };
    if check_same_origin(&parts.headers).is_err() {
        return page(language, "foreign", StatusCode::FORBIDDEN);
    }
    let bytes = match read_body(&parts.headers, Body::new(body), FORM_MAX_BYTES).await {
        Ok(bytes) => bytes,
        Err(error) => return error.into_response(),
    };
    let Ok(form) = serde_urlencoded::from_bytes::<LoginForm>(&bytes) else {
        return page(language, "wrong", StatusCode::BAD_REQUEST);
    };
    if let Some(asked) = Language::parse(&form.lang) {
        language = asked;
    }
    let now = Instant::now();
    if let Err(locked) = state.accounts.limiter.check(&form.name, &address, now) {
        let left = match locked {
            Locked::Account(left) | Locked::Address(left) => left,
        };
        tracing::warn!(%address, "A sign-in was refused: too many failures for the account or the address.");
        let minutes = left.as_secs().div_ceil(60).max(1);
        let message = text("locked", language).replace("{minutes}", &minutes.to_string());
        return sign_in_page(
            &state,
            language,
            Some(message),
            StatusCode::TOO_MANY_REQUESTS,
        );
    }
    let Ok(permit) = tokio::time::timeout(
        HASHING_WAIT,
        Arc::clone(&state.accounts.hashing).acquire_owned(),
    )
    .await
    else {
        return page(language, "busy", StatusCode::SERVICE_UNAVAILABLE);
    };
    let checking = Arc::clone(&state);
    let name = form.name.clone();
    let checked = tokio::task::spawn_blocking(move || {
        let _permit = permit;
        checking
            .accounts
            .users
            .check_password(&name, &form.password)
    })
    .await;
    let user = match checked {
        Ok(Ok(user)) => user,
        Ok(Err(error)) => return ApiError::internal("checking a password", error).into_response(),
        Err(error) => return ApiError::internal("checking a password", error).into_response(),
    };
    let Some(user) = user else {
        state.accounts.limiter.failed(&form.name, &address, now);
        tracing::warn!(%address, "A sign-in failed: wrong user name or password.");
        return page(language, "wrong", StatusCode::UNAUTHORIZED);
    };
    state.accounts.limiter.succeeded(&user.name);
    // No fixation: whatever session the browser came with ends here; the new id is fresh.
    if let Some(old) = session_cookie(&parts.headers) {
        state.accounts.sessions.remove(old);
    }
    let (id, _) = match state
        .accounts
        .sessions
        .create(&user.name, user.generation, now)
    {
        Ok(created) => created,
        Err(error) => return ApiError::internal("starting a session", error).into_response(),
    };
    tracing::info!(user = %user.name, role = user.role.as_str(), %address, "A user signed in.");
    let mut response = (
        StatusCode::SEE_OTHER,
        [(header::LOCATION, format!("/?lang={}", language.code()))],
    )
        .into_response();
    if let Some(cookie) = session_cookie_header(
        &state,
        &parts.headers,
        &id,
        state.config.web.session_max_age_seconds,
    ) {
        response.headers_mut().insert(header::SET_COOKIE, cookie);
    }
    response
}

/// `POST /api/v1/logout`: ends the session and clears its cookie.
async fn logout(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    authenticated: Authenticated,
) -> Response {
    if let Via::Session { id, .. } = &authenticated.via {
        state.accounts.sessions.remove(id);
        tracing::info!(user = %authenticated.actor.name, "A user signed out.");
    }
    let mut response = StatusCode::NO_CONTENT.into_response();
    if let Some(cookie) = session_cookie_header(&state, &headers, "", 0) {
        response.headers_mut().insert(header::SET_COOKIE, cookie);
    }
    response
}

/// `GET /api/v1/me`.
async fn me(authenticated: Authenticated) -> Json<serde_json::Value> {
    let (signed_in, csrf) = match &authenticated.via {
        Via::Session { csrf, .. } => (true, Some(csrf.clone())),
        _ => (false, None),
    };
    Json(json!({
        "name": authenticated.actor.name,
        "role": authenticated.actor.role,
        "signed_in": signed_in,
        "csrf_token": csrf,
    }))
}

/// The signed-in user's name: API tokens belong to user accounts, made from a session.
fn account(authenticated: &Authenticated) -> Result<&str, ApiError> {
    match authenticated.via {
        Via::Session { .. } if authenticated.actor.name.starts_with(crate::oidc::ACTOR_PREFIX) => {
            Err(ApiError::new(
                Reason::Forbidden,
                "API tokens belong to local user accounts; a user signed in with OpenID Connect has none",
            ))
        }
        Via::Session { .. } => Ok(&authenticated.actor.name),
        _ => Err(ApiError::new(
            Reason::Forbidden,
            "API tokens belong to user accounts: sign in to manage yours",
        )),
    }
}

pub(super) fn user_error(context: &str, error: UserError) -> ApiError {
    match error {
        UserError::Invalid { field, problem } => {
            ApiError::field(Reason::InvalidField, field, problem)
        }
        UserError::NoSuchUser(name) => {
            ApiError::field(Reason::NotFound, "name", format!("no user named {name}"))
        }
        UserError::Exists(name) => ApiError::field(
            Reason::Conflict,
            "name",
            format!("a user named {name} exists already"),
        ),
        UserError::Full(message) => ApiError::new(Reason::Conflict, message),
        other => ApiError::internal(context, other),
    }
}

async fn my_tokens(
    State(state): State<Arc<AppState>>,
    authenticated: Authenticated,
) -> Result<Json<serde_json::Value>, ApiError> {
    let name = account(&authenticated)?;
    let tokens = state
        .accounts
        .users
        .tokens(Some(name))
        .map_err(|error| user_error("listing API tokens", error))?;
    Ok(Json(json!({ "tokens": tokens })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenRequest {
    #[serde(default)]
    label: String,
    #[serde(default)]
    role: Option<Role>,
}

/// Decodes a JSON body of at most `limit` bytes, naming the field that is wrong.
pub(super) async fn json_body<T: serde::de::DeserializeOwned>(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
) -> Result<T, ApiError> {
    check_content_type(headers)?;
    let bytes = read_body(headers, body, limit).await?;
    let mut deserializer = serde_json::Deserializer::from_slice(&bytes);
    serde_path_to_error::deserialize(&mut deserializer).map_err(|error| {
        let path = error.path().to_string();
        ApiError::field(Reason::InvalidField, path, error.into_inner().to_string())
    })
}

/// `POST /api/v1/me/tokens {label, role?}` → 201 `{token, id, label, role, …}`: the token once.
async fn issue_my_token(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    authenticated: Authenticated,
    body: Body,
) -> Result<Response, ApiError> {
    let name = account(&authenticated)?.to_string();
    let request: TokenRequest = json_body(&headers, body, 4096).await?;
    let role = request.role.unwrap_or(authenticated.actor.role);
    let issued = state
        .accounts
        .users
        .issue_token(&name, role, &request.label, OffsetDateTime::now_utc())
        .map_err(|error| user_error("making an API token", error))?;
    tracing::info!(user = %name, id = issued.info.id, role = role.as_str(), "An API token was made.");
    let mut answer = serde_json::to_value(&issued.info)
        .map_err(|error| ApiError::internal("answering a new API token", error))?;
    answer["token"] = json!(issued.secret);
    Ok((StatusCode::CREATED, Json(answer)).into_response())
}

async fn revoke_my_token(
    State(state): State<Arc<AppState>>,
    authenticated: Authenticated,
    Path(id): Path<i64>,
) -> Result<Response, ApiError> {
    let name = account(&authenticated)?;
    let revoked = state
        .accounts
        .users
        .revoke_token(id, Some(name))
        .map_err(|error| user_error("revoking an API token", error))?;
    if !revoked {
        return Err(ApiError::field(
            Reason::NotFound,
            "id",
            "no such live token of yours",
        ));
    }
    tracing::info!(user = %name, id, "An API token was revoked.");
    Ok(StatusCode::NO_CONTENT.into_response())
}
