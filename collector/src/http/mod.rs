//! The HTTP edge: the only part of the collector that knows HTTP and JSON. [`app`] builds the
//! router from the state; [`serve`] runs it until shutdown.

pub mod error;
mod queries;
mod reports;

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::routing::{get, post};
use axum::Router;
use posmon_protocol::Keyring;
use tower_http::timeout::TimeoutLayer;

use crate::config::Config;
use crate::fleet::Fleet;
use crate::metrics::Metrics;

/// Everything a request handler can reach.
pub struct AppState {
    pub config: Config,
    pub keyring: Keyring,
    pub fleet: Mutex<Fleet>,
    pub metrics: Metrics,
}

impl AppState {
    pub fn new(config: Config, keyring: Keyring) -> Result<Self, prometheus::Error> {
        let metrics = Metrics::new(config.metrics.per_terminal_series)?;
        let fleet = Mutex::new(Fleet::new(config.limits.max_history_findings));
        Ok(AppState {
            config,
            keyring,
            fleet,
            metrics,
        })
    }
}

/// A request that takes longer than this is answered 408 and dropped.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

pub fn app(state: Arc<AppState>) -> Router {
    Router::new()
        .route(posmon_protocol::REPORTS_PATH, post(reports::post_reports))
        .route("/api/v1/terminals", get(queries::list_terminals))
        .route(
            "/api/v1/terminals/{terminal_id}",
            get(queries::get_terminal),
        )
        .route("/api/v1/findings", get(queries::list_findings))
        .route("/metrics", get(queries::metrics))
        .route("/healthz", get(queries::healthz))
        .fallback(queries::not_found)
        .layer(TimeoutLayer::with_status_code(
            axum::http::StatusCode::REQUEST_TIMEOUT,
            REQUEST_TIMEOUT,
        ))
        .with_state(state)
}

/// Serves the API on `listener` until `shutdown` completes, then finishes in-flight requests.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: Arc<AppState>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, app(state))
        .with_graceful_shutdown(shutdown)
        .await
}
