//! The dashboard's page, script and style sheet, embedded at build time.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::header;
use axum::response::{Html, IntoResponse, Response};

use crate::http::error::{ApiError, Reason};
use crate::http::AppState;

const INDEX: &str = include_str!("assets/index.html");

/// Every asset under `/assets/`: name, content type, bytes.
const ASSETS: &[(&str, &str, &[u8])] = &[
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_bytes!("assets/app.js"),
    ),
    (
        "operations.js",
        "text/javascript; charset=utf-8",
        include_bytes!("assets/operations.js"),
    ),
    (
        "session.js",
        "text/javascript; charset=utf-8",
        include_bytes!("assets/session.js"),
    ),
    (
        "history.js",
        "text/javascript; charset=utf-8",
        include_bytes!("assets/history.js"),
    ),
    (
        "app.css",
        "text/css; charset=utf-8",
        include_bytes!("assets/app.css"),
    ),
    (
        "favicon.svg",
        "image/svg+xml",
        include_bytes!("assets/favicon.svg"),
    ),
];

/// The page, with the refresh interval filled in.
pub async fn index(State(state): State<Arc<AppState>>) -> Response {
    let page = INDEX.replace(
        "{{refresh_interval_seconds}}",
        &state.config.web.refresh_interval_seconds.to_string(),
    );
    ([(header::CACHE_CONTROL, "no-cache")], Html(page)).into_response()
}

pub async fn asset(Path(file): Path<String>) -> Result<Response, ApiError> {
    let (_, content_type, bytes) = ASSETS
        .iter()
        .find(|(name, _, _)| *name == file)
        .ok_or_else(|| ApiError::field(Reason::NotFound, "file", "no such asset"))?;
    Ok((
        [
            (header::CONTENT_TYPE, *content_type),
            // The assets change only with the binary; revalidating is cheap on a LAN.
            (header::CACHE_CONTROL, "no-cache"),
        ],
        *bytes,
    )
        .into_response())
}
