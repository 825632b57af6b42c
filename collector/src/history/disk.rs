//! The history's disk budget and its measurement: a synthetic fleet's days of history written
//! through the real writer ([`History::record_blocking`]), pruned as the writer prunes, and the
//! database's pages in use counted. Run small by a test (the budget holds) and large by the
//! bench (`cargo bench -p posmon-collector --bench history`, BENCHMARKS.md "History on disk").
//!
//! The synthetic terminal reports as an agent does at its defaults: a heartbeat every 5
//! minutes (a phase of its own), a full report with measurements every hour (latency 20 to
//! 80 ms, now and then some loss); one terminal in ten a day goes `cannot_pay` for half an
//! hour (two readiness changes).

use std::path::Path;
use std::sync::Arc;

use posmon_diagnosis::readiness::Readiness;
use time::OffsetDateTime;

use super::slots::DAY_SECONDS;
use super::{History, HistoryConfig, HistoryMetrics, Message, ReportPoint};
use crate::store::StoreError;
use crate::web::trend::TrendPoint;

/// The budget: bytes on disk per terminal per day of retention, per-terminal series and
/// readiness changes, at the steady state (the fine tier's two days included).
pub const BYTES_PER_TERMINAL_DAY_BUDGET: f64 = 250.0;

/// What a filled database takes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Footprint {
    pub terminals: u32,
    pub days: u32,
    /// Pages in use (the file less its free pages) times the page size, less those of the
    /// empty database.
    pub used_bytes: u64,
    /// The file's size (free pages, which the next days reuse, included).
    pub file_bytes: u64,
}

impl Footprint {
    pub fn used_per_terminal_day(&self) -> f64 {
        let units = f64::from(self.terminals.max(1)) * f64::from(self.days.max(1));
        self.used_bytes as f64 / units
    }
}

/// A small deterministic generator (SplitMix64): the same fleet every run.
struct Generator(u64);

impl Generator {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, bound: u64) -> u64 {
        self.next() % bound.max(1)
    }
}

/// Writes `days` days (ending now) of `terminals` terminals' history, and with `trend` the
/// fleet trend's point a minute, into the state database in `data_dir`; then reopens it (the
/// writer prunes at a start) and measures it.
pub fn fill(
    data_dir: &Path,
    terminals: u32,
    days: u32,
    trend: bool,
    metrics: HistoryMetrics,
) -> Result<Footprint, StoreError> {
    let config = HistoryConfig {
        retention_days: days,
        queue_max_messages: 1024,
        ..HistoryConfig::default()
    };
    let history = History::open(data_dir, &config, metrics.clone())?;
    let empty = used_bytes(data_dir)?;
    let now = OffsetDateTime::now_utc().unix_timestamp();
    // The oldest whole day within the retention, to today.
    let first_day = now.div_euclid(DAY_SECONDS) - i64::from(days) + 1;
    let ids: Vec<Arc<str>> = (0..terminals)
        .map(|index| Arc::from(format!("T-{index:07}")))
        .collect();
    let mut random = Generator(15);
    for day in 0..i64::from(days) {
        let day_start = (first_day + day) * DAY_SECONDS;
        // Terminals in a different order each day, as their reports arrive.
        let offset = random.below(u64::from(terminals.max(1)));
        for turn in 0..u64::from(terminals) {
            let index = ((turn * 7919 + offset) % u64::from(terminals.max(1))) as usize;
            let Some(id) = ids.get(index) else { continue };
            let phase = (index as i64 * 37) % 300;
            let mut points = Vec::with_capacity(288);
            let mut at = day_start + phase;
            while at < day_start + DAY_SECONDS && at <= now {
                let full = (at - day_start) % 3600 < 300;
                points.push(ReportPoint {
                    at,
                    latency_ms: full.then(|| 20.0 + random.below(600) as f64 / 10.0),
                    loss_ratio: full.then(|| if random.below(20) == 0 { 0.1 } else { 0.0 }),
                });
                at += 300;
            }
            if points.is_empty() {
                continue;
            }
            history.record_blocking(Message::Reports {
                terminal: Arc::clone(id),
                received_at: day_start,
                readiness: Some(Readiness::CanPay),
                points,
            });
            if (index as i64 + day) % 10 == 0 {
                let down = day_start + 3600 * (1 + (index as i64 % 20));
                for (at, readiness) in [
                    (down, Readiness::CannotPay),
                    (down + 1800, Readiness::CanPay),
                ] {
                    if at <= now {
                        history.record_blocking(Message::Readiness {
                            at,
                            terminals: vec![(Arc::clone(id), readiness)],
                        });
                    }
                }
            }
        }
        if trend {
            let mut at = day_start;
            while at < day_start + DAY_SECONDS && at <= now {
                history.record_blocking(Message::Trend(TrendPoint {
                    at,
                    can_pay: terminals,
                    ..TrendPoint::default()
                }));
                at += 60;
            }
        }
    }
    history.stop();
    drop(history);
    // A start prunes what is past the retention, as every hour of a running collector.
    History::open(data_dir, &config, metrics)?.stop();
    let used = used_bytes(data_dir)?;
    let file_bytes = std::fs::metadata(data_dir.join(crate::store::DATABASE_FILE))
        .map(|metadata| metadata.len())
        .unwrap_or(0);
    Ok(Footprint {
        terminals,
        days,
        used_bytes: used.saturating_sub(empty),
        file_bytes,
    })
}

/// The database's pages in use times the page size, its log checkpointed into it first.
fn used_bytes(data_dir: &Path) -> Result<u64, StoreError> {
    let connection = super::store::open(data_dir)?;
    connection.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
    let pragma = |name: &str| -> Result<u64, StoreError> {
        let value: i64 = connection.query_row(&format!("PRAGMA {name}"), [], |row| row.get(0))?;
        Ok(u64::try_from(value).unwrap_or(0))
    };
    let pages = pragma("page_count")?.saturating_sub(pragma("freelist_count")?);
    Ok(pages * pragma("page_size")?)
}
