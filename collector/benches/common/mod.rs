//! What the benchmarks share: the fleet key, a realistic report of terminal N, and a round of
//! one report per terminal through the real router.

use std::time::Instant;

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use posmon_protocol::{terminal_token, FleetKey};
use serde_json::json;
use tower::ServiceExt;

pub const TASKS: usize = 64;
pub const MODELS: [&str; 3] = ["PAX-A920", "Verifone-V200c", "Ingenico-Move5000"];
pub const CARRIERS: [&str; 3] = ["china-mobile", "china-unicom", "china-telecom"];

pub fn key() -> FleetKey {
    FleetKey::new("k1", b"a benchmark fleet secret".to_vec()).unwrap_or_else(|e| panic!("{e}"))
}

pub fn body(index: usize, sequence: u64, host_down: bool) -> String {
    let tcp = if host_down {
        json!({ "stage": "tcp", "status": "failed", "error": "timeout" })
    } else {
        json!({ "stage": "tcp", "status": "ok", "latency_ms": { "min": 30.0, "avg": 35.0 + (index % 50) as f64, "max": 90.0 } })
    };
    json!({ "reports": [ {
        "schema_version": 1,
        "terminal_id": format!("T-{index:07}"),
        "sequence": sequence,
        // Yesterday: inside the collector's window of terminal times whenever the bench runs.
        "observed_at": format!("{}T02:{:02}:00Z", yesterday(), sequence % 60),
        "agent_version": "0.1.0",
        "labels": {
            "merchant": format!("M-{:06}", index / 3),
            "model": MODELS[index % 3],
            "region": format!("cn-region-{}", index % 31),
            "carrier": CARRIERS[index % 3],
        },
        "software": { "pos_app": { "version": "2.9.1" }, "os": { "version": "Debian GNU/Linux 12" } },
        "probes": [
            { "target": "payment-host", "address": "pay.acquirer.test:443",
              "stages": [ { "stage": "gateway", "status": "ok", "attempts": 3, "successes": 3 }, tcp ] },
            { "target": "tms", "address": "tms.vendor.test:8443",
              "stages": [ { "stage": "tcp", "status": "ok", "latency_ms": { "min": 50.0, "avg": 61.0, "max": 70.0 } } ] }
        ],
        "device": { "memory_total_bytes": 2147483648u64, "memory_available_bytes": 812646400u64,
                    "disks": [ { "mount": "/", "total_bytes": 15032385536u64, "available_bytes": 9663676416u64 } ] }
    } ] })
    .to_string()
}

/// Sends one report per terminal for `sequence`; returns reports per second.
pub async fn round(router: &axum::Router, terminals: usize, sequence: u64) -> f64 {
    let started = Instant::now();
    let mut tasks = Vec::new();
    for task in 0..TASKS {
        let router = router.clone();
        tasks.push(tokio::spawn(async move {
            let key = key();
            for index in (task..terminals).step_by(TASKS) {
                let host_down = sequence > 1 && index % 10 == 0;
                let token = terminal_token(&key, &format!("T-{index:07}"));
                let request = Request::post("/api/v1/reports")
                    .header(header::CONTENT_TYPE, "application/json")
                    .header(header::AUTHORIZATION, format!("Bearer {token}"))
                    .body(Body::from(body(index, sequence, host_down)))
                    .unwrap_or_else(|e| panic!("{e}"));
                let response = router
                    .clone()
                    .oneshot(request)
                    .await
                    .unwrap_or_else(|e| panic!("{e}"));
                assert_eq!(response.status(), StatusCode::OK);
            }
        }));
    }
    for task in tasks {
        task.await.unwrap_or_else(|e| panic!("{e}"));
    }
    terminals as f64 / started.elapsed().as_secs_f64()
}

/// The fleet sizes named on the command line (`-- 100000 1000000`); 100 000 by default.
pub fn sizes() -> Vec<usize> {
    let sizes: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|arg| arg.parse().ok())
        .collect();
    if sizes.is_empty() {
        vec![100_000]
    } else {
        sizes
    }
}

/// Yesterday's date (UTC) as `YYYY-MM-DD`.
fn yesterday() -> String {
    let today = time::OffsetDateTime::now_utc().date();
    today.previous_day().unwrap_or(today).to_string()
}
