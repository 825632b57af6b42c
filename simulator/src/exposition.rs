//! A report as Prometheus text-format samples: the equivalent load for a time-series store
//! (Pushgateway, VictoriaMetrics) in side-by-side ingest benchmarks.

use std::fmt::Write;

use posmon_protocol::{Report, StageStatus};

/// Escapes a label value for the text format.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// `name{labels} value`, or `name value` when there are no labels.
fn sample(out: &mut String, name: &str, labels: &str, value: impl std::fmt::Display) {
    let labels = labels.trim_end_matches(',');
    // Writing to a String cannot fail.
    let _ = if labels.is_empty() {
        writeln!(out, "{name} {value}")
    } else {
        writeln!(out, "{name}{{{labels}}} {value}")
    };
}

/// The samples one report amounts to. `terminal_label` adds `terminal_id` to every series (for
/// stores without grouping keys); without it, the terminal is the Pushgateway group.
pub fn samples(report: &Report, terminal_label: bool) -> String {
    let mut out = String::with_capacity(2048);
    let terminal = if terminal_label {
        format!("terminal_id=\"{}\",", escape(&report.terminal_id))
    } else {
        String::new()
    };
    let labels = &report.labels;
    let label = |value: &Option<String>| escape(value.as_deref().unwrap_or(""));
    // Writing to a String cannot fail.
    let _ = writeln!(
        out,
        "posmon_terminal_info{{{terminal}merchant=\"{}\",model=\"{}\",region=\"{}\",carrier=\"{}\"}} 1",
        label(&labels.merchant),
        label(&labels.model),
        label(&labels.region),
        label(&labels.carrier)
    );
    sample(
        &mut out,
        "posmon_terminal_sequence",
        &terminal,
        report.sequence,
    );
    for probe in &report.probes {
        let target = escape(&probe.target);
        for stage in &probe.stages {
            let series = format!(
                "{terminal}target=\"{target}\",stage=\"{}\"",
                stage.stage.as_str()
            );
            let up = u8::from(stage.status == StageStatus::Ok);
            let _ = writeln!(out, "posmon_probe_up{{{series}}} {up}");
            if let Some(latency) = &stage.latency_ms {
                let _ = writeln!(
                    out,
                    "posmon_probe_latency_seconds{{{series}}} {}",
                    latency.avg / 1000.0
                );
            }
            let _ = writeln!(
                out,
                "posmon_probe_loss_ratio{{{series}}} {}",
                stage.loss_ratio()
            );
        }
    }
    for (component, version) in &report.software {
        let version = escape(version.version.as_deref().unwrap_or("unknown"));
        let _ = writeln!(
            out,
            "posmon_software_info{{{terminal}component=\"{}\",version=\"{version}\"}} 1",
            escape(component)
        );
    }
    if let Some(device) = &report.device {
        for (name, value) in [
            ("posmon_device_cpu_percent", device.cpu_percent),
            ("posmon_device_load1", device.load_average_1m),
            (
                "posmon_device_memory_total_bytes",
                device.memory_total_bytes.map(|v| v as f64),
            ),
            (
                "posmon_device_memory_available_bytes",
                device.memory_available_bytes.map(|v| v as f64),
            ),
            (
                "posmon_device_uptime_seconds",
                device.uptime_seconds.map(|v| v as f64),
            ),
            (
                "posmon_device_battery_percent",
                device.battery.as_ref().map(|b| b.percent),
            ),
        ] {
            if let Some(value) = value {
                sample(&mut out, name, &terminal, value);
            }
        }
        for disk in &device.disks {
            let series = format!("{terminal}mount=\"{}\"", escape(&disk.mount));
            let _ = writeln!(
                out,
                "posmon_device_disk_total_bytes{{{series}}} {}",
                disk.total_bytes
            );
            let _ = writeln!(
                out,
                "posmon_device_disk_available_bytes{{{series}}} {}",
                disk.available_bytes
            );
        }
        for sensor in &device.temperatures {
            let _ = writeln!(
                out,
                "posmon_device_temperature_celsius{{{terminal}sensor=\"{}\"}} {}",
                escape(&sensor.sensor),
                sensor.celsius
            );
        }
        for peripheral in &device.peripherals {
            let _ = writeln!(
                out,
                "posmon_device_peripheral_present{{{terminal}name=\"{}\"}} {}",
                escape(&peripheral.name),
                u8::from(peripheral.present)
            );
        }
    }
    if let Some(clock) = &report.clock {
        sample(
            &mut out,
            "posmon_clock_offset_seconds",
            &terminal,
            clock.offset_ms / 1000.0,
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::SimTerminal;
    use crate::report::Moment;
    use crate::scenario::Active;

    #[test]
    fn a_report_becomes_well_formed_samples() {
        let terminal = SimTerminal::new(1, "SIM-", 3);
        let active = Active::default();
        let report = Moment {
            seed: 1,
            terminal: &terminal,
            sequence: 9,
            observed_at: time::OffsetDateTime::UNIX_EPOCH,
            draw: 0,
            faults: &active,
            dropped_reports: 0,
        }
        .report();
        let text = samples(&report, true);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines.len() > 30, "{} samples", lines.len());
        for line in &lines {
            let (series, value) = line.rsplit_once(' ').unwrap_or_default();
            assert!(value.parse::<f64>().is_ok(), "{line}");
            assert!(series.contains("terminal_id=\"SIM-0000003\""), "{line}");
            assert!(series.ends_with('}'), "{line}");
        }
        assert!(text.contains(
            "posmon_probe_up{terminal_id=\"SIM-0000003\",target=\"payment-host\",stage=\"tcp\"} 1"
        ));
        let grouped = samples(&report, false);
        assert!(!grouped.contains("terminal_id"));
        assert!(grouped.contains("\nposmon_terminal_sequence 9\n"));
    }
}
