//! The history's disk budget: days of history for N synthetic terminals written through the
//! real writer (`posmon_collector::history::disk::fill`: a heartbeat every 5 minutes, a full
//! report an hour, a tenth of the fleet down half an hour a day), pruned as the running writer
//! prunes, the database's pages in use counted; and the fleet trend (a point a minute) alone.
//! Prints bytes per terminal per day and the total extrapolated to 100 000 terminals.
//!
//! `cargo bench -p posmon-collector --bench history -- 2000 10000` (terminals; 90 days each)

use std::time::Instant;

use posmon_collector::history::disk::{fill, BYTES_PER_TERMINAL_DAY_BUDGET};
use posmon_collector::metrics::Metrics;

const DAYS: u32 = 90;
const FLEET: f64 = 100_000.0;

fn metrics() -> posmon_collector::history::HistoryMetrics {
    Metrics::new(false, 100)
        .unwrap_or_else(|error| panic!("{error}"))
        .history
}

fn main() {
    let sizes: Vec<u32> = std::env::args()
        .skip(1)
        .filter_map(|argument| argument.parse().ok())
        .collect();
    let sizes = if sizes.is_empty() { vec![2000] } else { sizes };
    let dir = tempfile::tempdir().unwrap_or_else(|error| panic!("{error}"));
    let trend = fill(&dir.path().join("trend"), 0, DAYS, true, metrics())
        .unwrap_or_else(|error| panic!("{error}"));
    println!(
        "fleet trend, {DAYS} days of a point a minute: {} bytes in use",
        trend.used_bytes
    );
    for terminals in sizes {
        let metrics = metrics();
        let started = Instant::now();
        let footprint = fill(
            &dir.path().join(format!("fleet-{terminals}")),
            terminals,
            DAYS,
            false,
            metrics.clone(),
        )
        .unwrap_or_else(|error| panic!("{error}"));
        let seconds = started.elapsed().as_secs_f64();
        let points = metrics.points.with_label_values(&["written"]).get();
        let per_day = footprint.used_per_terminal_day();
        let total = per_day * FLEET * f64::from(DAYS) + trend.used_bytes as f64;
        println!(
            "{terminals} terminals x {DAYS} days: {} bytes in use ({} file), {per_day:.1} bytes per terminal per day (budget {BYTES_PER_TERMINAL_DAY_BUDGET}); {points} report points written in {seconds:.1} s ({:.0} points/s), dropped {}; 100 000 terminals x {DAYS} days: {:.2} GiB",
            footprint.used_bytes,
            footprint.file_bytes,
            points as f64 / seconds,
            metrics.dropped.get(),
            total / f64::from(1u32 << 30),
        );
    }
}
