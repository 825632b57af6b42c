//! Ingest plus diagnosis through the real router, with persistence: reports per second and
//! memory per terminal for N simulated terminals.
//!
//! `cargo bench -p posmon-collector --bench ingest -- 100000 1000000`
//!
//! For each N: a fresh collector state in a temporary data directory, its state written to
//! SQLite every second on a thread as the server's writer does; N terminals send one healthy
//! report each (registration), then one more each, a tenth of them with the payment host
//! failing (diagnosis opens pending findings); then one fleet evaluation. Requests are built,
//! signed and sent through `app()` by 64 concurrent tasks on a 2-worker runtime, so the
//! figures include the client's JSON encoding. Memory is the process's resident set before
//! and after, divided by N.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use posmon_collector::config::Config;
use posmon_collector::http::{app, AppState};
use posmon_protocol::{terminal_token, FleetKey, Keyring};
use serde_json::json;
use tower::ServiceExt;

const TASKS: usize = 64;
const MODELS: [&str; 3] = ["PAX-A920", "Verifone-V200c", "Ingenico-Move5000"];
const CARRIERS: [&str; 3] = ["china-mobile", "china-unicom", "china-telecom"];

fn key() -> FleetKey {
    FleetKey::new("k1", b"a benchmark fleet secret".to_vec()).unwrap_or_else(|e| panic!("{e}"))
}

fn resident_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| {
            rest.trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<u64>()
                .ok()
        })
        .map_or(0, |kib| kib * 1024)
}

fn body(index: usize, sequence: u64, host_down: bool) -> String {
    let tcp = if host_down {
        json!({ "stage": "tcp", "status": "failed", "error": "timeout" })
    } else {
        json!({ "stage": "tcp", "status": "ok", "latency_ms": { "min": 30.0, "avg": 35.0 + (index % 50) as f64, "max": 90.0 } })
    };
    json!({ "reports": [ {
        "schema_version": 1,
        "terminal_id": format!("T-{index:07}"),
        "sequence": sequence,
        "observed_at": format!("2026-11-26T02:{:02}:00Z", sequence),
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
async fn round(router: &axum::Router, terminals: usize, sequence: u64) -> f64 {
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

fn run(terminals: usize) {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let config = Config {
        data_dir: dir.path().to_path_buf(),
        ..Config::default()
    };
    let before = resident_bytes();
    let state = Arc::new(
        AppState::open(config, Keyring::new(key(), vec![]), None).unwrap_or_else(|e| panic!("{e}")),
    );
    // The server's writer: the changed state to SQLite once a second.
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (state, stop) = (Arc::clone(&state), Arc::clone(&stop));
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_secs(1));
                state.write_state();
            }
        })
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    let router = app(Arc::clone(&state));
    let register = runtime.block_on(round(&router, terminals, 1));
    let diagnose = runtime.block_on(round(&router, terminals, 2));
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap_or_else(|_| panic!("writer panicked"));
    let started = Instant::now();
    state.write_state();
    let last_write = started.elapsed();
    let started = Instant::now();
    state.evaluate(time::OffsetDateTime::now_utc());
    let evaluation = started.elapsed();
    let after = resident_bytes();
    let database = std::fs::metadata(dir.path().join("state.sqlite3")).map_or(0, |m| m.len());
    println!(
        "terminals {terminals}: first report {register:.0} reports/s, second report (diagnosis, 10 % failing) {diagnose:.0} reports/s; \
         resident {:.0} MiB = {:.0} bytes/terminal; last write {last_write:?}; one fleet evaluation {evaluation:?}; database {:.0} MiB",
        (after.saturating_sub(before)) as f64 / 1048576.0,
        (after.saturating_sub(before)) as f64 / terminals as f64,
        database as f64 / 1048576.0,
    );
}

fn main() {
    let sizes: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|arg| arg.parse().ok())
        .collect();
    let sizes = if sizes.is_empty() {
        vec![100_000]
    } else {
        sizes
    };
    for terminals in sizes {
        run(terminals);
    }
}
