//! The built-in dashboard: its page and assets (embedded in the binary: no CDN, no file on
//! disk, so it works on an offline network), the read endpoints it needs beyond the general
//! API (overview, problem list, trend, version compliance, the kinds of finding by code) and the
//! fleet trend it draws. Who may see them is decided in `http/auth.rs`.
//!
//! Like `http/`, this is the HTTP edge: it reads the fleet state and never changes it.

mod assets;
pub mod headers;
mod kinds;
mod overview;
mod problems;
pub mod trend;
mod versions;

use std::sync::Arc;

use axum::routing::get;
use axum::Router;

use crate::http::AppState;

/// The dashboard's routes; [`crate::http::app`] merges them into the API.
pub fn router() -> Router<Arc<AppState>> {
    Router::new()
        .route("/", get(assets::index))
        .route("/assets/{file}", get(assets::asset))
        .route("/api/v1/overview", get(overview::overview))
        .route("/api/v1/kinds", get(kinds::kinds))
        .route("/api/v1/trend", get(overview::trend))
        .route("/api/v1/problems", get(problems::problems))
        .route("/api/v1/versions", get(versions::compliance))
        .route(
            "/api/v1/terminals/{terminal_id}/versions",
            get(versions::terminal_versions),
        )
}
