//! Assembles one report from one cycle's measurements.

use posmon_protocol::{ClockStatus, DeviceStatus, Labels, ProbeResult, Report, SCHEMA_VERSION};
use time::OffsetDateTime;

use crate::config::AgentConfig;

/// What one probe cycle measured.
pub struct Cycle {
    pub observed_at: OffsetDateTime,
    pub probes: Vec<ProbeResult>,
    /// The `gateway` and `resolver` labels, measured.
    pub network: crate::probe::Network,
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
        labels: Labels {
            gateway: cycle.network.gateway,
            resolver: cycle.network.resolver,
            ..config.labels.to_labels()
        },
        probes: cycle.probes,
        software: cycle.software,
        device: Some(cycle.device),
        clock: cycle.clock,
        dropped_reports: 0,
        unchanged: Vec::new(),
        agent_instance: None,
        intervals: None,
        data_usage: None,
        config: None,
        probe_request: None,
    }
}

/// Shrinks a report for the wire without losing what diagnosis needs: rungs that succeeded carry
/// no free-text detail, and measurements are rounded to the precision anyone acts on.
pub fn compact(report: &mut Report) {
    fn round(value: f64, steps_per_unit: f64) -> f64 {
        (value * steps_per_unit).round() / steps_per_unit
    }
    // Milliseconds are plenty for when a cycle ran.
    let sub_millisecond = report.observed_at.nanosecond() % 1_000_000;
    report.observed_at -= time::Duration::nanoseconds(i64::from(sub_millisecond));
    for stage in report
        .probes
        .iter_mut()
        .flat_map(|probe| probe.stages.iter_mut())
    {
        if stage.status == posmon_protocol::StageStatus::Ok {
            stage.detail = None;
        }
        if let Some(latency) = stage.latency_ms.as_mut() {
            for value in [
                &mut latency.min,
                &mut latency.avg,
                &mut latency.max,
                &mut latency.jitter,
            ] {
                *value = round(*value, 100.0);
            }
        }
    }
    if let Some(device) = report.device.as_mut() {
        device.cpu_percent = device.cpu_percent.map(|value| round(value, 10.0));
        device.load_average_1m = device.load_average_1m.map(|value| round(value, 100.0));
        for sensor in &mut device.temperatures {
            sensor.celsius = round(sensor.celsius, 10.0);
        }
        if let Some(battery) = device.battery.as_mut() {
            battery.percent = round(battery.percent, 10.0);
        }
    }
    if let Some(clock) = report.clock.as_mut() {
        clock.offset_ms = round(clock.offset_ms, 10.0);
        clock.uncertainty_ms = round(clock.uncertainty_ms, 10.0);
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
                network: Default::default(),
                software: Default::default(),
                device: DeviceStatus::default(),
                clock: None,
            },
        )
    }

    #[test]
    fn compacting_keeps_failures_and_rounds_measurements() {
        use posmon_protocol::{
            ErrorKind, LatencyStats, ProbeResult, Stage, StageResult, StageStatus,
        };
        let stage = |status: StageStatus, detail: &str| StageResult {
            stage: Stage::Tcp,
            status,
            error: (status == StageStatus::Failed).then_some(ErrorKind::Refused),
            detail: Some(detail.into()),
            attempts: 1,
            successes: u32::from(status == StageStatus::Ok),
            latency_ms: Some(LatencyStats {
                min: 1.23456,
                avg: 2.34567,
                max: 3.45678,
                jitter: 0.0049,
            }),
            http_status: None,
            tls_version: None,
            certificate_days_left: None,
        };
        let mut report = minimal_report();
        report.probes = vec![ProbeResult {
            target: "pay".into(),
            address: "127.0.0.1:1".into(),
            stages: vec![
                stage(StageStatus::Ok, "connected"),
                stage(StageStatus::Failed, "connection refused"),
            ],
        }];
        report.device = Some(DeviceStatus {
            cpu_percent: Some(12.3456),
            ..DeviceStatus::default()
        });
        compact(&mut report);
        let stages = &report.probes[0].stages;
        assert_eq!(stages[0].detail, None);
        assert_eq!(stages[1].detail.as_deref(), Some("connection refused"));
        let latency = stages[0]
            .latency_ms
            .unwrap_or_else(|| panic!("latency kept"));
        assert_eq!(
            (latency.min, latency.avg, latency.max, latency.jitter),
            (1.23, 2.35, 3.46, 0.0)
        );
        assert_eq!(
            report.device.and_then(|device| device.cpu_percent),
            Some(12.3)
        );
    }

    #[test]
    fn a_built_report_is_valid() {
        posmon_protocol::validate_report(&minimal_report(), "report")
            .unwrap_or_else(|error| panic!("{error}"));
    }
}
