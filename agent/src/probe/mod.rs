//! Probes: measurements of the path from the terminal to the hosts it needs. A failed probe is a
//! measurement (`status: failed` with an error kind), never an `Err`. Every probe is bounded by
//! the configured timeout.

pub mod tcp;

use std::time::Duration;

use posmon_protocol::{ErrorKind, LatencyStats, Stage, StageResult, StageStatus};

use crate::software::bounded;

fn stage(stage: Stage, status: StageStatus) -> StageResult {
    StageResult {
        stage,
        status,
        error: None,
        detail: None,
        attempts: 1,
        successes: u32::from(status == StageStatus::Ok),
        latency_ms: None,
        http_status: None,
        tls_version: None,
        certificate_days_left: None,
    }
}

/// A rung that succeeded after `elapsed`.
pub fn succeeded(kind: Stage, elapsed: Duration, detail: Option<String>) -> StageResult {
    let milliseconds = elapsed.as_secs_f64() * 1000.0;
    StageResult {
        latency_ms: Some(LatencyStats {
            min: milliseconds,
            avg: milliseconds,
            max: milliseconds,
            jitter: 0.0,
        }),
        detail: detail.map(|text| bounded(&text, posmon_protocol::limits::DETAIL_MAX_CHARS)),
        ..stage(kind, StageStatus::Ok)
    }
}

/// A rung that failed, and why.
pub fn failed(kind: Stage, error: ErrorKind, detail: &str) -> StageResult {
    StageResult {
        error: Some(error),
        detail: Some(bounded(detail, posmon_protocol::limits::DETAIL_MAX_CHARS)),
        ..stage(kind, StageStatus::Failed)
    }
}
