//! Signing in with the OpenID Connect provider (`[web.oidc]`, `oidc.rs`):
//!
//! - `GET /login/oidc?lang=`: starts a sign-in and sends the browser to the provider, with a
//!   short-lived cookie binding the sign-in to this browser;
//! - `GET /login/oidc/callback?code=&state=`: finishes it. A verified user gets a new session
//!   exactly as a local sign-in does (a fresh id, the same cookie, its own CSRF token), with the
//!   actor `oidc:<user name>` and the role the provider's claims map to; the answer is a small
//!   page that moves on to the dashboard (a redirect would still count as the provider's
//!   cross-site navigation, and the browser would not send the `SameSite=Strict` session cookie).
//!
//! Every failure ends on the sign-in page with a plain message; the log gets the reason, never a
//! code, token, state or nonce.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde::Deserialize;

use super::auth::session_cookie;
use super::error::ApiError;
use super::login::{escape, language, session_cookie_header, sign_in_page, text, Language};
use super::AppState;
use crate::oidc::{OidcError, PENDING_MAX_AGE};

/// The cookie binding a started sign-in to the browser that started it.
const BINDING_COOKIE: &str = "posmon_oidc";

pub fn router() -> Router<Arc<AppState>> {
    Router::new()
        .route("/login/oidc", get(start))
        .route("/login/oidc/callback", get(callback))
}

fn failure(state: &AppState, language: Language, key: &str, status: StatusCode) -> Response {
    sign_in_page(
        state,
        language,
        Some(text(key, language).to_string()),
        status,
    )
}

/// The binding cookie: `SameSite=Lax`, so that the provider's redirect back (a top-level GET)
/// carries it; only for the callback's path.
fn binding_cookie(
    state: &AppState,
    headers: &HeaderMap,
    value: &str,
    max_age: u64,
) -> Option<HeaderValue> {
    super::auth::set_cookie(
        state,
        headers,
        BINDING_COOKIE,
        value,
        &format!("Path=/login/oidc; Max-Age={max_age}; SameSite=Lax"),
    )
}

/// `GET /login/oidc`.
async fn start(State(state): State<Arc<AppState>>, request: Request) -> Response {
    let language = language(request.uri(), request.headers());
    let Some(oidc) = &state.oidc else {
        return StatusCode::NOT_FOUND.into_response();
    };
    match oidc.start(language.code(), Instant::now()).await {
        Ok(started) => {
            let mut response = (
                StatusCode::SEE_OTHER,
                [
                    (header::LOCATION, started.authorization_url),
                    (header::CACHE_CONTROL, "no-store".to_string()),
                ],
            )
                .into_response();
            if let Some(cookie) = binding_cookie(
                &state,
                request.headers(),
                &started.binding,
                PENDING_MAX_AGE.as_secs(),
            ) {
                response.headers_mut().insert(header::SET_COOKIE, cookie);
            }
            response
        }
        Err(error) => {
            tracing::warn!(%error, "An OpenID Connect sign-in could not start.");
            failure(
                &state,
                language,
                "oidc_unavailable",
                StatusCode::BAD_GATEWAY,
            )
        }
    }
}

#[derive(Deserialize)]
struct Callback {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
}

/// The longest `code` or `state` taken from the query.
const PARAMETER_MAX_CHARS: usize = 4096;

/// `GET /login/oidc/callback`.
async fn callback(State(state): State<Arc<AppState>>, request: Request) -> Response {
    let (parts, _) = request.into_parts();
    let address = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(address)| address.ip().to_string())
        .unwrap_or_else(|| "unknown".to_string());
    let mut language = language(&parts.uri, &parts.headers);
    let Some(oidc) = &state.oidc else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let query: Callback = parts
        .uri
        .query()
        .and_then(|query| serde_urlencoded::from_str(query).ok())
        .unwrap_or(Callback {
            code: None,
            state: None,
            error: None,
        });
    let sign_in_state = query.state.unwrap_or_default();
    if let Some(asked) = oidc
        .pending_language(&sign_in_state)
        .as_deref()
        .and_then(Language::parse)
    {
        language = asked;
    }
    if let Some(error) = query.error {
        // The provider's own refusal (the user cancelled, no access): the state is used up.
        let error: String = error.chars().take(100).collect();
        oidc.forget(&sign_in_state);
        tracing::warn!(%address, provider_error = %error.escape_debug(), "The OpenID Connect provider refused a sign-in.");
        return failure(&state, language, "oidc_refused", StatusCode::FORBIDDEN);
    }
    let code = query.code.unwrap_or_default();
    if code.is_empty()
        || sign_in_state.is_empty()
        || code.len() > PARAMETER_MAX_CHARS
        || sign_in_state.len() > PARAMETER_MAX_CHARS
    {
        tracing::warn!(%address, "An OpenID Connect callback came without a code or state.");
        return failure(&state, language, "oidc_expired", StatusCode::BAD_REQUEST);
    }
    let binding = parts
        .headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .find_map(|pair| pair.trim().strip_prefix(BINDING_COOKIE)?.strip_prefix('='))
        .map(str::to_string);
    let now = Instant::now();
    let signed_in = match oidc
        .finish(&sign_in_state, &code, binding.as_deref(), now)
        .await
    {
        Ok(signed_in) => signed_in,
        Err(error) => {
            tracing::warn!(%address, %error, "An OpenID Connect sign-in failed.");
            let (key, status) = match error {
                OidcError::UnknownState | OidcError::OtherBrowser => {
                    ("oidc_expired", StatusCode::BAD_REQUEST)
                }
                OidcError::NoRole(_) => ("oidc_no_role", StatusCode::FORBIDDEN),
                OidcError::Provider(_) | OidcError::Client(_) => {
                    ("oidc_unavailable", StatusCode::BAD_GATEWAY)
                }
                OidcError::Refused(_) => ("oidc_refused", StatusCode::FORBIDDEN),
                _ => ("oidc_failed", StatusCode::UNAUTHORIZED),
            };
            return failure(&state, language, key, status);
        }
    };
    if let Some(asked) = Language::parse(&signed_in.language) {
        language = asked;
    }
    // No fixation: whatever session the browser came with ends here; the new id is fresh.
    if let Some(old) = session_cookie(&parts.headers) {
        state.accounts.sessions.remove(old);
    }
    let (id, _) =
        match state
            .accounts
            .sessions
            .create_external(&signed_in.actor, signed_in.role, now)
        {
            Ok(created) => created,
            Err(error) => return ApiError::internal("starting a session", error).into_response(),
        };
    tracing::info!(user = %signed_in.actor, role = signed_in.role.as_str(), %address, "A user signed in with OpenID Connect.");
    let target = format!("/?lang={}", language.code());
    let page = format!(
        "<!doctype html>\n<html lang=\"{lang}\"><head><meta charset=\"utf-8\">\
         <meta http-equiv=\"refresh\" content=\"0;url={target}\"><title>posmon</title></head>\
         <body><p><a id=\"oidc-continue\" href=\"{target}\">{text}</a></p></body></html>\n",
        lang = language.code(),
        text = escape(text("oidc_signed_in", language)),
    );
    let mut response = (
        StatusCode::OK,
        [(header::CACHE_CONTROL, "no-store")],
        Html(page),
    )
        .into_response();
    let headers = response.headers_mut();
    if let Some(cookie) = session_cookie_header(
        &state,
        &parts.headers,
        &id,
        state.config.web.session_max_age_seconds,
    ) {
        headers.append(header::SET_COOKIE, cookie);
    }
    if let Some(cookie) = binding_cookie(&state, &parts.headers, "", 0) {
        headers.append(header::SET_COOKIE, cookie);
    }
    response
}
