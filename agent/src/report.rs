//! Assembles one report from one cycle's measurements.

use posmon_protocol::{ClockStatus, DeviceStatus, ProbeResult, Report, SCHEMA_VERSION};
use time::OffsetDateTime;

use crate::config::AgentConfig;

/// What one probe cycle measured.
pub struct Cycle {
    pub observed_at: OffsetDateTime,
    pub probes: Vec<ProbeResult>,
    pub software: std::collections::BTreeMap<String, posmon_protocol::ComponentVersion>,
    pub device: DeviceStatus,
    pub clock: Option<ClockStatus>,
}

pub fn build(config: &AgentConfig, sequence: u64, cycle: Cycle) -> Report {
    Report {
        schema_version: SCHEMA_VERSION,
        terminal_id: config.terminal_id.clone(),
        sequence,
        observed_at: cycle.observed_at,
        agent_version: env!("CARGO_PKG_VERSION").to_string(),
        labels: config.labels.to_labels(),
        probes: cycle.probes,
        software: cycle.software,
        device: Some(cycle.device),
        clock: cycle.clock,
        dropped_reports: 0,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub fn minimal_report() -> Report {
        build(
            &AgentConfig::example(),
            1,
            Cycle {
                observed_at: OffsetDateTime::now_utc(),
                probes: vec![],
                software: Default::default(),
                device: DeviceStatus::default(),
                clock: None,
            },
        )
    }

    #[test]
    fn a_built_report_is_valid() {
        posmon_protocol::validate_report(&minimal_report(), "report")
            .unwrap_or_else(|error| panic!("{error}"));
    }
}
