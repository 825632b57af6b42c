//! The thresholds of the rules and when findings open and close: the `[diagnosis]` section of
//! the collector's configuration, kept beside the rules that read them.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::{kind_by_code, Hysteresis};

/// A threshold out of its range: the key (relative to `[diagnosis]`) and the problem.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {problem}")]
pub struct ThresholdError {
    pub key: String,
    pub problem: String,
}

/// Thresholds of the diagnosis rules and when findings open and close.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Thresholds {
    /// How often terminals are expected to report, for agents that do not say (a report's
    /// `intervals`).
    pub report_interval_seconds: u64,
    /// The longest wait between an agent's delivery retries (its backoff cap), for agents that
    /// do not say: after the collector starts, a terminal is given a report interval plus this
    /// before it can be silent.
    pub agent_retry_max_seconds: u64,
    /// A terminal is silent after this many report intervals without a report.
    pub silent_after_intervals: u32,
    /// How often the fleet is evaluated for silent terminals and upstream outages.
    pub evaluation_interval_seconds: u64,
    /// A working path slower than this (the slowest rung's average) is high latency.
    pub high_latency_ms: f64,
    /// A rung losing at least this share of its tries has packet loss.
    pub packet_loss_percent: f64,
    /// A clock off by more than this (beyond the measurement's uncertainty) is skewed.
    pub clock_skew_seconds: f64,
    /// A disk with less free space than this share is full.
    pub disk_free_percent: f64,
    /// Less available memory than this share is memory pressure.
    pub memory_available_percent: f64,
    /// A sensor at or above this temperature is overheating.
    pub overheat_celsius: f64,
    /// A battery below this charge, not charging, is low.
    pub battery_low_percent: f64,
    /// The share of the terminals inside a scope (a host, a region, a carrier in a region, a
    /// model…) that must show the same symptom for a shared cause (see `localize.rs`); an open
    /// cause stays down to half of it.
    pub upstream_min_share_percent: f64,
    /// And the least number of them.
    pub upstream_min_terminals: u32,
    /// How many times the failing share of the terminals outside every cause the share inside a
    /// cause must be at least.
    pub upstream_min_contrast: f64,
    /// Attribute values a cause's scope combines at most, besides the target: 1 or 2.
    pub upstream_max_dimensions: u32,
    /// Per-code overrides of the default hysteresis, keyed by finding code.
    pub hysteresis: BTreeMap<String, Hysteresis>,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            report_interval_seconds: 60,
            agent_retry_max_seconds: 300,
            silent_after_intervals: 3,
            evaluation_interval_seconds: 1,
            high_latency_ms: 1000.0,
            packet_loss_percent: 20.0,
            clock_skew_seconds: 60.0,
            disk_free_percent: 5.0,
            memory_available_percent: 5.0,
            overheat_celsius: 80.0,
            battery_low_percent: 15.0,
            upstream_min_share_percent: 30.0,
            upstream_min_terminals: 5,
            upstream_min_contrast: 10.0,
            upstream_max_dimensions: 2,
            hysteresis: BTreeMap::new(),
        }
    }
}

impl Thresholds {
    /// Checks every threshold; the error names the key (relative to `[diagnosis]`) and the
    /// problem.
    pub fn validate(&self) -> Result<(), ThresholdError> {
        let invalid = |key: &str, problem: &str| {
            Err(ThresholdError {
                key: key.to_string(),
                problem: problem.to_string(),
            })
        };
        let diagnosis = self;
        for (key, value) in [
            ("report_interval_seconds", diagnosis.report_interval_seconds),
            (
                "silent_after_intervals",
                u64::from(diagnosis.silent_after_intervals),
            ),
            (
                "evaluation_interval_seconds",
                diagnosis.evaluation_interval_seconds,
            ),
            (
                "upstream_min_terminals",
                u64::from(diagnosis.upstream_min_terminals),
            ),
        ] {
            if value == 0 {
                return invalid(key, "must be at least 1");
            }
        }
        if !(1..=2).contains(&diagnosis.upstream_max_dimensions) {
            return invalid("upstream_max_dimensions", "must be 1 or 2");
        }
        if !(diagnosis.upstream_min_contrast.is_finite() && diagnosis.upstream_min_contrast >= 1.0)
        {
            return invalid("upstream_min_contrast", "must be a number of at least 1");
        }
        for (key, value) in [
            ("high_latency_ms", diagnosis.high_latency_ms),
            ("clock_skew_seconds", diagnosis.clock_skew_seconds),
            ("overheat_celsius", diagnosis.overheat_celsius),
        ] {
            if !(value.is_finite() && value > 0.0) {
                return invalid(key, "must be a number above 0");
            }
        }
        for (key, value) in [
            ("packet_loss_percent", diagnosis.packet_loss_percent),
            ("disk_free_percent", diagnosis.disk_free_percent),
            (
                "memory_available_percent",
                diagnosis.memory_available_percent,
            ),
            ("battery_low_percent", diagnosis.battery_low_percent),
            (
                "upstream_min_share_percent",
                diagnosis.upstream_min_share_percent,
            ),
        ] {
            if !(value > 0.0 && value <= 100.0) {
                return invalid(key, "must be a percentage above 0 and at most 100");
            }
        }
        for (code, hysteresis) in &diagnosis.hysteresis {
            if kind_by_code(code).is_none() {
                return invalid(&format!("hysteresis.{code:?}"), "unknown finding code");
            }
            if hysteresis.open_after_observations == 0 || hysteresis.close_after_observations == 0 {
                return invalid(
                    &format!("hysteresis.{code:?}"),
                    "open_after_observations and close_after_observations must be at least 1",
                );
            }
        }
        Ok(())
    }

    /// The hysteresis of a code: the configured override or the kind's default.
    pub fn hysteresis_of(&self, kind: &crate::FindingKind) -> Hysteresis {
        self.hysteresis
            .get(kind.code)
            .copied()
            .unwrap_or(kind.hysteresis)
    }

    /// How long a terminal reporting every `report_interval_seconds` may stay quiet before
    /// it is silent.
    pub fn silent_after_seconds(&self, report_interval_seconds: u64) -> i64 {
        let seconds =
            report_interval_seconds.saturating_mul(u64::from(self.silent_after_intervals));
        i64::try_from(seconds).unwrap_or(i64::MAX)
    }
}
