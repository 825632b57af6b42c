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

use common::{key, round};
use posmon_collector::config::Config;
use posmon_collector::http::{app, AppState};
use posmon_protocol::Keyring;

mod common;

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
    for terminals in common::sizes() {
        run(terminals);
    }
}
