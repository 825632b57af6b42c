//! The dashboard's read endpoints at fleet scale: the overview, the first page of problems
//! (default sort and filtered), the trend, the terminal search (a page of the whole fleet, a
//! page after a cursor, free text, filters), version compliance and the page itself, served
//! through the real router (viewer auth layer included) over N terminals.
//!
//! `cargo bench -p posmon-collector --bench dashboard -- 100000`
//!
//! The fleet is filled through the real ingest path (three reports per terminal; a tenth fail
//! the payment host, so they open findings; a policy makes a third of them outdated), then each
//! endpoint is asked 100 times in a row; p50, p99 and max are printed.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use common::{key, round};
use http_body_util::BodyExt;
use posmon_collector::config::{Config, VersionRule};
use posmon_collector::http::{app, AppState};
use posmon_protocol::Keyring;
use tower::ServiceExt;

const REQUESTS: usize = 100;

const ENDPOINTS: &[&str] = &[
    "/api/v1/overview",
    "/api/v1/problems?limit=50",
    "/api/v1/problems?region=cn-region-3&party=network_provider&sort=since&limit=50",
    "/api/v1/problems?limit=50&offset=5000&sort=terminal",
    "/api/v1/trend?hours=24",
    "/api/v1/terminals?limit=50",
    "/api/v1/terminals?limit=50&after=T-0050000",
    "/api/v1/terminals?limit=50&q=m-01234",
    "/api/v1/terminals?limit=50&q=t-00999",
    "/api/v1/terminals?limit=50&region=cn-region-3&readiness=cannot_pay",
    "/api/v1/versions",
    "/",
];

fn percentile(sorted: &[Duration], share: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * share).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

async fn time_endpoint(router: &axum::Router, path: &str) -> (Vec<Duration>, usize) {
    let mut times = Vec::with_capacity(REQUESTS);
    let mut bytes = 0;
    for _ in 0..REQUESTS {
        let started = Instant::now();
        let response = router
            .clone()
            .oneshot(
                Request::get(path)
                    .body(Body::empty())
                    .unwrap_or_else(|e| panic!("{e}")),
            )
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        let body = response
            .into_body()
            .collect()
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .to_bytes();
        times.push(started.elapsed());
        bytes = body.len();
    }
    times.sort_unstable();
    (times, bytes)
}

fn run(terminals: usize) {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let config = Config {
        data_dir: dir.path().to_path_buf(),
        version_policy: vec![VersionRule {
            component: "pos_app".into(),
            model: Some("PAX-A920".into()),
            minimum: "3.0.0".into(),
            latest: None,
            latest_released_on: None,
            update_within_days: 0,
        }],
        ..Config::default()
    };
    let state = Arc::new(
        AppState::open(config, Keyring::new(key(), vec![]), None).unwrap_or_else(|e| panic!("{e}")),
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    let router = app(Arc::clone(&state));
    let started = Instant::now();
    for sequence in 1..=3 {
        runtime.block_on(round(&router, terminals, sequence));
    }
    state.evaluate(time::OffsetDateTime::now_utc());
    // A day of trend points, as a collector that has run for 24 h holds.
    let now = time::OffsetDateTime::now_utc();
    let point = posmon_collector::web::trend::TrendPoint::sample(
        &state.fleet,
        &state.config.readiness,
        now,
    );
    for minute in (0..1440).rev() {
        state.trend.push(posmon_collector::web::trend::TrendPoint {
            at: point.at - minute * 60,
            ..point
        });
    }
    println!(
        "terminals {terminals}: filled in {:.1?}; {REQUESTS} requests per endpoint, one at a time, 2 runtime workers",
        started.elapsed()
    );
    println!("| endpoint | p50 | p99 | max | response bytes |");
    println!("| --- | --- | --- | --- | --- |");
    for path in ENDPOINTS {
        let (times, bytes) = runtime.block_on(time_endpoint(&router, path));
        println!(
            "| `{path}` | {:.1?} | {:.1?} | {:.1?} | {bytes} |",
            percentile(&times, 0.5),
            percentile(&times, 0.99),
            times[times.len() - 1],
        );
    }
}

fn main() {
    for terminals in common::sizes() {
        run(terminals);
    }
}
