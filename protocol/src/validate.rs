//! Checks a decoded report against the limits of [`crate::limits`] and the rules of v1.
//!
//! Every error names the offending field as a path (`reports[2].labels.extra`) and says what is
//! wrong with it in a lowercase fragment, so that the collector can hand it back to the sender.

use crate::limits::*;
use crate::report::*;
use crate::SCHEMA_VERSION;

/// A report that breaks a rule of the protocol.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {problem}")]
pub struct ValidationError {
    /// Where, as a path from the batch root.
    pub field: String,
    /// What is wrong, as a lowercase fragment.
    pub problem: String,
    /// True when the only problem is the schema version.
    pub unsupported_schema: bool,
}

impl ValidationError {
    pub(crate) fn new(field: impl Into<String>, problem: impl Into<String>) -> Self {
        ValidationError {
            field: field.into(),
            problem: problem.into(),
            unsupported_schema: false,
        }
    }
}

type Checked = Result<(), ValidationError>;

/// Validates a whole batch: not empty, at most `max_reports` reports, each valid.
pub fn validate_batch(batch: &ReportBatch, max_reports: usize) -> Checked {
    if batch.reports.is_empty() {
        return Err(ValidationError::new(
            "reports",
            "must hold at least one report",
        ));
    }
    let max_reports = max_reports.min(REPORTS_PER_BATCH_MAX);
    if batch.reports.len() > max_reports {
        return Err(ValidationError::new(
            "reports",
            format!("too many reports ({} > {max_reports})", batch.reports.len()),
        ));
    }
    for (index, report) in batch.reports.iter().enumerate() {
        validate_report(report, &format!("reports[{index}]"))?;
    }
    Ok(())
}

/// Validates one report; `path` prefixes every field name in the error.
pub fn validate_report(report: &Report, path: &str) -> Checked {
    if report.schema_version != SCHEMA_VERSION {
        return Err(ValidationError {
            field: format!("{path}.schema_version"),
            problem: format!(
                "unsupported schema version {} (this collector speaks {SCHEMA_VERSION})",
                report.schema_version
            ),
            unsupported_schema: true,
        });
    }
    check_terminal_id(&report.terminal_id, &format!("{path}.terminal_id"))?;
    if report.sequence == 0 {
        return Err(ValidationError::new(
            format!("{path}.sequence"),
            "must be 1 or more",
        ));
    }
    if report.sequence > SEQUENCE_MAX {
        return Err(ValidationError::new(
            format!("{path}.sequence"),
            format!("must be at most {SEQUENCE_MAX} (2^53 - 1)"),
        ));
    }
    // No more reports can have been dropped than sequence numbers exist: a larger count is not
    // a measurement (and would wrap the fleet's counter).
    if report.dropped_reports > SEQUENCE_MAX {
        return Err(ValidationError::new(
            format!("{path}.dropped_reports"),
            format!("must be at most {SEQUENCE_MAX} (2^53 - 1)"),
        ));
    }
    if let Some(instance) = &report.agent_instance {
        check_agent_instance(instance, &format!("{path}.agent_instance"))?;
    }
    check_text(
        &report.agent_version,
        VERSION_MAX_CHARS,
        &format!("{path}.agent_version"),
    )?;
    validate_labels(&report.labels, &format!("{path}.labels"))?;
    check_probes(&report.probes, &format!("{path}.probes"))?;
    check_software(report, &format!("{path}.software"))?;
    if let Some(device) = &report.device {
        check_device(device, &format!("{path}.device"))?;
    }
    if report.unchanged.len() > 8 {
        return Err(ValidationError::new(
            format!("{path}.unchanged"),
            format!("too many entries ({} > 8)", report.unchanged.len()),
        ));
    }
    if let Some(intervals) = &report.intervals {
        check_intervals(intervals, &format!("{path}.intervals"))?;
    }
    if report.unchanged.contains(&Section::Measurements) {
        check_heartbeat(report, path)?;
    }
    if let Some(usage) = &report.data_usage {
        check_data_usage(usage, &format!("{path}.data_usage"))?;
    }
    if let Some(config) = &report.config {
        config.validate(&format!("{path}.config"))?;
    }
    if report
        .probe_request
        .is_some_and(|id| id == 0 || id > crate::control::PROBE_REQUEST_MAX)
    {
        return Err(ValidationError::new(
            format!("{path}.probe_request"),
            "must be between 1 and 2^53 - 1",
        ));
    }
    if let Some(clock) = &report.clock {
        check_non_negative(
            clock.uncertainty_ms,
            &format!("{path}.clock.uncertainty_ms"),
        )?;
        for (name, value) in [
            ("offset_ms", clock.offset_ms),
            ("uncertainty_ms", clock.uncertainty_ms),
        ] {
            check_bounded(value, CLOCK_OFFSET_MAX_MS, &format!("{path}.clock.{name}"))?;
        }
    }
    Ok(())
}

/// Probe and report intervals from 1 s, a retry wait from 0 s, each at most a day.
fn check_intervals(intervals: &Intervals, path: &str) -> Checked {
    for (name, value, least) in [
        ("probe_seconds", intervals.probe_seconds, 1),
        ("report_seconds", intervals.report_seconds, 1),
        ("retry_max_seconds", intervals.retry_max_seconds, 0),
    ] {
        if !(least..=INTERVAL_SECONDS_MAX).contains(&value) {
            return Err(ValidationError::new(
                format!("{path}.{name}"),
                format!("must be between {least} and {INTERVAL_SECONDS_MAX}"),
            ));
        }
    }
    Ok(())
}

/// A heartbeat (`unchanged` holds `measurements`) says its probes, device and clock are those of
/// the report before: carrying any of them would contradict it, and the collector would have to
/// choose which to believe.
fn check_heartbeat(report: &Report, path: &str) -> Checked {
    for (name, present) in [
        ("probes", !report.probes.is_empty()),
        ("device", report.device.is_some()),
        ("clock", report.clock.is_some()),
    ] {
        if present {
            return Err(ValidationError::new(
                format!("{path}.{name}"),
                "must be absent when unchanged holds \"measurements\" (a heartbeat)",
            ));
        }
    }
    Ok(())
}

/// A month from 2000-01 to 2999-12, byte counts and the budget within [`DATA_BYTES_MAX`] (the
/// budget at least 1: absent means none), a stretch from 100 to [`STRETCH_PERCENT_MAX`] percent.
fn check_data_usage(usage: &DataUsage, path: &str) -> Checked {
    if !(DATA_MONTH_MIN..=DATA_MONTH_MAX).contains(&usage.month) {
        return Err(ValidationError::new(
            format!("{path}.month"),
            format!(
                "must be between {DATA_MONTH_MIN} and {DATA_MONTH_MAX} (year * 12 + month - 1, 2000-01 to 2999-12)"
            ),
        ));
    }
    for (name, value, least) in [
        ("report_bytes", Some(usage.report_bytes), 0),
        ("probe_bytes", Some(usage.probe_bytes), 0),
        ("other_bytes", Some(usage.other_bytes), 0),
        ("budget_bytes", usage.budget_bytes, 1),
    ] {
        if value.is_some_and(|value| !(least..=DATA_BYTES_MAX).contains(&value)) {
            return Err(ValidationError::new(
                format!("{path}.{name}"),
                format!("must be between {least} and {DATA_BYTES_MAX}"),
            ));
        }
    }
    if !(STRETCH_PERCENT_MIN..=STRETCH_PERCENT_MAX).contains(&usage.stretch_percent) {
        return Err(ValidationError::new(
            format!("{path}.stretch_percent"),
            format!("must be between {STRETCH_PERCENT_MIN} and {STRETCH_PERCENT_MAX}"),
        ));
    }
    Ok(())
}

/// An agent instance id: 8 to 64 characters from `A-Z a-z 0-9 -`.
pub fn check_agent_instance(instance: &str, field: &str) -> Checked {
    let length = instance.len();
    if !(AGENT_INSTANCE_MIN_CHARS..=AGENT_INSTANCE_MAX_CHARS).contains(&length)
        || !instance
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-')
    {
        return Err(ValidationError::new(
            field,
            format!(
                "must be {AGENT_INSTANCE_MIN_CHARS} to {AGENT_INSTANCE_MAX_CHARS} characters from A-Z a-z 0-9 -"
            ),
        ));
    }
    Ok(())
}

/// A finite number within `-max..=max`.
fn check_bounded(value: f64, max: f64, field: &str) -> Checked {
    if !value.is_finite() || value.abs() > max {
        return Err(ValidationError::new(
            field,
            format!("must be a finite number within ±{max}, got {value}"),
        ));
    }
    Ok(())
}

/// A terminal id: 1 to 64 characters from `A-Z a-z 0-9 . _ : -`.
pub fn check_terminal_id(terminal_id: &str, field: &str) -> Checked {
    if terminal_id.is_empty() {
        return Err(ValidationError::new(field, "must not be empty"));
    }
    check_length(terminal_id, TERMINAL_ID_MAX_CHARS, field)?;
    if let Some(bad) = terminal_id
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '-')))
    {
        return Err(ValidationError::new(
            field,
            format!("character {bad:?} not allowed (use A-Z a-z 0-9 . _ : -)"),
        ));
    }
    Ok(())
}

fn check_length(value: &str, max_chars: usize, field: &str) -> Checked {
    // Byte length bounds the character count from above, so most strings skip the count.
    if value.len() > max_chars && value.chars().count() > max_chars {
        return Err(ValidationError::new(
            field,
            format!(
                "too long ({} characters > {max_chars})",
                value.chars().count()
            ),
        ));
    }
    Ok(())
}

/// Non-empty, bounded, and free of control characters.
pub(crate) fn check_text(value: &str, max_chars: usize, field: &str) -> Checked {
    if value.is_empty() {
        return Err(ValidationError::new(field, "must not be empty"));
    }
    check_optional_text(value, max_chars, field)
}

/// Bounded and free of control characters; may be empty.
pub(crate) fn check_optional_text(value: &str, max_chars: usize, field: &str) -> Checked {
    check_length(value, max_chars, field)?;
    if value.chars().any(char::is_control) {
        return Err(ValidationError::new(
            field,
            "must not contain control characters",
        ));
    }
    Ok(())
}

pub(crate) fn check_name(value: &str, field: &str) -> Checked {
    check_text(value, NAME_MAX_CHARS, field)
}

pub(crate) fn check_label_key(key: &str, field: &str) -> Checked {
    check_name(key, field)?;
    let mut chars = key.chars();
    let starts_well = chars.next().is_some_and(|c| c.is_ascii_lowercase());
    if !starts_well
        || !key
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
    {
        return Err(ValidationError::new(
            field,
            "must match [a-z][a-z0-9_]* (it becomes a metric label name)",
        ));
    }
    Ok(())
}

fn check_count<T>(items: &[T], max: usize, field: &str) -> Checked {
    if items.len() > max {
        return Err(ValidationError::new(
            field,
            format!("too many entries ({} > {max})", items.len()),
        ));
    }
    Ok(())
}

fn check_non_negative(value: f64, field: &str) -> Checked {
    if !value.is_finite() || value < 0.0 {
        return Err(ValidationError::new(
            field,
            format!("must be a finite number 0 or more, got {value}"),
        ));
    }
    Ok(())
}

/// Validates a label set; `path` prefixes every field name in the error.
pub fn validate_labels(labels: &Labels, path: &str) -> Checked {
    let well_known = [
        ("merchant", &labels.merchant),
        ("model", &labels.model),
        ("region", &labels.region),
        ("carrier", &labels.carrier),
        ("gateway", &labels.gateway),
        ("resolver", &labels.resolver),
    ];
    for (name, value) in well_known {
        if let Some(value) = value {
            check_text(value, LABEL_VALUE_MAX_CHARS, &format!("{path}.{name}"))?;
        }
    }
    if labels.extra.len() > EXTRA_LABELS_MAX {
        return Err(ValidationError::new(
            format!("{path}.extra"),
            format!(
                "too many labels ({} > {EXTRA_LABELS_MAX})",
                labels.extra.len()
            ),
        ));
    }
    for (key, value) in &labels.extra {
        let field = format!("{path}.extra.{key}");
        check_label_key(key, &field)?;
        check_optional_text(value, LABEL_VALUE_MAX_CHARS, &field)?;
    }
    Ok(())
}

fn check_probes(probes: &[ProbeResult], path: &str) -> Checked {
    check_count(probes, PROBES_MAX, path)?;
    for (index, probe) in probes.iter().enumerate() {
        let path = format!("{path}[{index}]");
        check_name(&probe.target, &format!("{path}.target"))?;
        check_text(&probe.address, DETAIL_MAX_CHARS, &format!("{path}.address"))?;
        check_count(&probe.stages, STAGES_MAX, &format!("{path}.stages"))?;
        for (stage_index, stage) in probe.stages.iter().enumerate() {
            check_stage(stage, &format!("{path}.stages[{stage_index}]"))?;
        }
    }
    Ok(())
}

fn check_stage(stage: &StageResult, path: &str) -> Checked {
    if stage.attempts > ATTEMPTS_MAX {
        return Err(ValidationError::new(
            format!("{path}.attempts"),
            format!("too many attempts ({} > {ATTEMPTS_MAX})", stage.attempts),
        ));
    }
    if stage.successes > stage.attempts {
        return Err(ValidationError::new(
            format!("{path}.successes"),
            format!(
                "more successes than attempts ({} > {})",
                stage.successes, stage.attempts
            ),
        ));
    }
    if stage.status == StageStatus::Failed && stage.error.is_none() {
        return Err(ValidationError::new(
            format!("{path}.error"),
            "a failed stage must say why",
        ));
    }
    if let Some(detail) = &stage.detail {
        check_optional_text(detail, DETAIL_MAX_CHARS, &format!("{path}.detail"))?;
    }
    if let Some(version) = &stage.tls_version {
        check_text(version, VERSION_MAX_CHARS, &format!("{path}.tls_version"))?;
    }
    if let Some(days) = stage.certificate_days_left {
        if days.unsigned_abs() > CERTIFICATE_DAYS_MAX.unsigned_abs() {
            return Err(ValidationError::new(
                format!("{path}.certificate_days_left"),
                format!("must be within ±{CERTIFICATE_DAYS_MAX} days, got {days}"),
            ));
        }
    }
    if let Some(latency) = &stage.latency_ms {
        for (name, value) in [
            ("min", latency.min),
            ("avg", latency.avg),
            ("max", latency.max),
            ("jitter", latency.jitter),
        ] {
            let field = format!("{path}.latency_ms.{name}");
            check_non_negative(value, &field)?;
            check_bounded(value, LATENCY_MAX_MS, &field)?;
        }
    }
    Ok(())
}

fn check_software(report: &Report, path: &str) -> Checked {
    if report.software.len() > COMPONENTS_MAX {
        return Err(ValidationError::new(
            path,
            format!(
                "too many components ({} > {COMPONENTS_MAX})",
                report.software.len()
            ),
        ));
    }
    for (name, component) in &report.software {
        let field = format!("{path}.{name}");
        check_label_key(name, &field)?;
        match (&component.version, &component.unknown_reason) {
            (Some(version), None) => {
                check_text(version, VERSION_MAX_CHARS, &format!("{field}.version"))?
            }
            (None, Some(reason)) => {
                check_text(reason, DETAIL_MAX_CHARS, &format!("{field}.unknown_reason"))?
            }
            _ => {
                return Err(ValidationError::new(
                    field,
                    "exactly one of version and unknown_reason must be set",
                ))
            }
        }
    }
    Ok(())
}

fn check_device(device: &DeviceStatus, path: &str) -> Checked {
    if device
        .uptime_seconds
        .is_some_and(|uptime| uptime > UPTIME_SECONDS_MAX)
    {
        return Err(ValidationError::new(
            format!("{path}.uptime_seconds"),
            format!("must be at most {UPTIME_SECONDS_MAX} (a century)"),
        ));
    }
    for (name, value) in [
        ("cpu_percent", device.cpu_percent),
        ("load_average_1m", device.load_average_1m),
    ] {
        if let Some(value) = value {
            check_non_negative(value, &format!("{path}.{name}"))?;
        }
    }
    check_count(&device.disks, DEVICE_LIST_MAX, &format!("{path}.disks"))?;
    for (index, disk) in device.disks.iter().enumerate() {
        check_text(
            &disk.mount,
            DETAIL_MAX_CHARS,
            &format!("{path}.disks[{index}].mount"),
        )?;
        if disk.available_bytes > disk.total_bytes {
            return Err(ValidationError::new(
                format!("{path}.disks[{index}].available_bytes"),
                "more than total_bytes",
            ));
        }
    }
    check_count(
        &device.temperatures,
        DEVICE_LIST_MAX,
        &format!("{path}.temperatures"),
    )?;
    for (index, sensor) in device.temperatures.iter().enumerate() {
        check_name(
            &sensor.sensor,
            &format!("{path}.temperatures[{index}].sensor"),
        )?;
        if !sensor.celsius.is_finite() {
            return Err(ValidationError::new(
                format!("{path}.temperatures[{index}].celsius"),
                "must be a finite number",
            ));
        }
    }
    if let Some(battery) = &device.battery {
        if !(0.0..=100.0).contains(&battery.percent) {
            return Err(ValidationError::new(
                format!("{path}.battery.percent"),
                format!("must be between 0 and 100, got {}", battery.percent),
            ));
        }
    }
    check_count(
        &device.interfaces,
        DEVICE_LIST_MAX,
        &format!("{path}.interfaces"),
    )?;
    for (index, interface) in device.interfaces.iter().enumerate() {
        check_name(&interface.name, &format!("{path}.interfaces[{index}].name"))?;
    }
    check_count(
        &device.processes,
        DEVICE_LIST_MAX,
        &format!("{path}.processes"),
    )?;
    for (index, process) in device.processes.iter().enumerate() {
        check_name(&process.name, &format!("{path}.processes[{index}].name"))?;
    }
    check_count(
        &device.peripherals,
        DEVICE_LIST_MAX,
        &format!("{path}.peripherals"),
    )?;
    for (index, peripheral) in device.peripherals.iter().enumerate() {
        let path = format!("{path}.peripherals[{index}]");
        check_name(&peripheral.name, &format!("{path}.name"))?;
        if let Some(detail) = &peripheral.detail {
            check_optional_text(detail, DETAIL_MAX_CHARS, &format!("{path}.detail"))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Report {
        serde_json::from_str(include_str!("../fixtures/v1/full.json"))
            .map(|batch: ReportBatch| batch.reports[0].clone())
            .unwrap_or_else(|error| panic!("fixture must parse: {error}"))
    }

    /// Applies `change` to a valid report and checks the outcome: `None` for valid, or the
    /// expected field and a fragment of the problem.
    fn check(change: impl FnOnce(&mut Report), expected: Option<(&str, &str)>) {
        let mut report = sample();
        change(&mut report);
        let outcome = validate_report(&report, "reports[0]");
        match (outcome, expected) {
            (Ok(()), None) => {}
            (Err(error), Some((field, fragment))) => {
                assert_eq!(error.field, field, "{error}");
                assert!(error.problem.contains(fragment), "{error}");
            }
            (outcome, expected) => panic!("got {outcome:?}, expected {expected:?}"),
        }
    }

    #[test]
    fn the_fixture_is_valid() {
        check(|_| {}, None);
    }

    #[test]
    fn each_rule_names_its_field() {
        check(
            |r| r.schema_version = 2,
            Some(("reports[0].schema_version", "unsupported schema version 2")),
        );
        check(
            |r| r.terminal_id = String::new(),
            Some(("reports[0].terminal_id", "must not be empty")),
        );
        check(
            |r| r.terminal_id = "T 1".into(),
            Some(("reports[0].terminal_id", "character ' ' not allowed")),
        );
        check(
            |r| r.terminal_id = "T".repeat(65),
            Some(("reports[0].terminal_id", "too long (65 characters > 64)")),
        );
        check(
            |r| r.sequence = 0,
            Some(("reports[0].sequence", "1 or more")),
        );
        check(|r| r.sequence = SEQUENCE_MAX, None);
        check(|r| r.dropped_reports = SEQUENCE_MAX, None);
        check(
            |r| r.dropped_reports = u64::MAX,
            Some(("reports[0].dropped_reports", "at most")),
        );
        check(
            |r| r.sequence = SEQUENCE_MAX + 1,
            Some(("reports[0].sequence", "at most 9007199254740991")),
        );
        check(
            |r| r.sequence = u64::MAX,
            Some(("reports[0].sequence", "at most")),
        );
        check(
            |r| r.agent_instance = Some("0f3a9c2e-77b1-4d5e".into()),
            None,
        );
        let schedule = |probe_seconds, report_seconds, retry_max_seconds| {
            Some(Intervals {
                probe_seconds,
                report_seconds,
                retry_max_seconds,
            })
        };
        check(|r| r.intervals = schedule(10, 300, 0), None);
        let usage = |month, bytes, budget_bytes, stretch_percent| {
            Some(DataUsage {
                month,
                report_bytes: 1,
                probe_bytes: bytes,
                other_bytes: 0,
                budget_bytes,
                stretch_percent,
            })
        };
        check(
            |r| r.data_usage = usage(24_323, 5, Some(10 << 20), 100),
            None,
        );
        check(
            |r| r.data_usage = usage(DATA_MONTH_MAX, DATA_BYTES_MAX, None, 10_000),
            None,
        );
        for (data_usage, field) in [
            (usage(0, 5, None, 100), "month"),
            (usage(DATA_MONTH_MAX + 1, 5, None, 100), "month"),
            (usage(24_323, DATA_BYTES_MAX + 1, None, 100), "probe_bytes"),
            (usage(24_323, u64::MAX, None, 100), "probe_bytes"),
            (usage(24_323, 5, Some(0), 100), "budget_bytes"),
            (usage(24_323, 5, Some(u64::MAX), 100), "budget_bytes"),
            (usage(24_323, 5, None, 99), "stretch_percent"),
            (usage(24_323, 5, None, 0), "stretch_percent"),
            (usage(24_323, 5, None, u32::MAX), "stretch_percent"),
        ] {
            check(
                |r| r.data_usage = data_usage,
                Some((&format!("reports[0].data_usage.{field}"), "between")),
            );
        }
        // A heartbeat carries no measurements.
        let heartbeat = |r: &mut Report| r.unchanged = vec![Section::Measurements];
        check(
            heartbeat,
            Some(("reports[0].probes", "absent when unchanged holds")),
        );
        check(
            |r| {
                heartbeat(r);
                r.probes.clear();
            },
            Some(("reports[0].device", "absent")),
        );
        check(
            |r| {
                heartbeat(r);
                r.probes.clear();
                r.device = None;
            },
            Some(("reports[0].clock", "absent")),
        );
        check(
            |r| {
                heartbeat(r);
                r.probes.clear();
                r.device = None;
                r.clock = None;
            },
            None,
        );
        check(|r| r.intervals = schedule(86_400, 86_400, 86_400), None);
        for (intervals, field) in [
            (schedule(0, 60, 300), "probe_seconds"),
            (schedule(10, 0, 300), "report_seconds"),
            (schedule(86_401, 60, 300), "probe_seconds"),
            (schedule(10, u32::MAX, 300), "report_seconds"),
            (schedule(10, 60, 86_401), "retry_max_seconds"),
        ] {
            check(
                |r| r.intervals = intervals,
                Some((&format!("reports[0].intervals.{field}"), "between")),
            );
        }
        for bad in [
            "short",
            "has space in it",
            "ünïcödé-instance",
            &"x".repeat(65),
        ] {
            check(
                |r| r.agent_instance = Some(bad.to_string()),
                Some(("reports[0].agent_instance", "8 to 64 characters")),
            );
        }
        for (offset, uncertainty, field) in [
            (f64::NAN, 1.0, "offset_ms"),
            (f64::INFINITY, 1.0, "offset_ms"),
            (1e308, 1.0, "offset_ms"),
            (-1e308, 1.0, "offset_ms"),
            (1.0, 1e308, "uncertainty_ms"),
        ] {
            check(
                |r| {
                    r.clock = Some(ClockStatus {
                        offset_ms: offset,
                        uncertainty_ms: uncertainty,
                        ntp_synchronized: None,
                    })
                },
                Some((&format!("reports[0].clock.{field}"), "finite number")),
            );
        }
        check(
            |r| {
                r.clock = Some(ClockStatus {
                    offset_ms: -600_000.0,
                    uncertainty_ms: 5.0,
                    ntp_synchronized: None,
                })
            },
            None,
        );
        for days in [i64::MAX, i64::MIN, CERTIFICATE_DAYS_MAX + 1] {
            check(
                |r| r.probes[0].stages[0].certificate_days_left = Some(days),
                Some((
                    "reports[0].probes[0].stages[0].certificate_days_left",
                    "within",
                )),
            );
        }
        check(
            |r| r.probes[0].stages[0].certificate_days_left = Some(-CERTIFICATE_DAYS_MAX),
            None,
        );
        check(
            |r| {
                if let Some(device) = r.device.as_mut() {
                    device.uptime_seconds = Some(u64::MAX);
                }
            },
            Some(("reports[0].device.uptime_seconds", "at most")),
        );
        check(
            |r| {
                r.probes[0].stages[0].latency_ms = Some(LatencyStats {
                    min: 1.0,
                    avg: 1e308,
                    max: 1.0,
                    jitter: 0.0,
                })
            },
            Some(("reports[0].probes[0].stages[0].latency_ms.avg", "within")),
        );
        check(
            |r| r.labels.region = Some("x".repeat(129)),
            Some(("reports[0].labels.region", "too long")),
        );
        check(
            |r| {
                for index in 0..15 {
                    r.labels.extra.insert(format!("k{index}"), "v".into());
                }
            },
            Some(("reports[0].labels.extra", "too many labels (17 > 16)")),
        );
        check(
            |r| {
                r.labels.extra.insert("Bad-Key".into(), "v".into());
            },
            Some(("reports[0].labels.extra.Bad-Key", "must match")),
        );
        check(
            |r| r.probes = vec![r.probes[0].clone(); 33],
            Some(("reports[0].probes", "too many entries (33 > 32)")),
        );
        check(
            |r| r.probes[0].stages[3].error = None,
            Some(("reports[0].probes[0].stages[3].error", "must say why")),
        );
        check(
            |r| r.probes[0].stages[0].successes = 9,
            Some(("reports[0].probes[0].stages[0].successes", "more successes")),
        );
        check(
            |r| r.agent_version = "1\n2".into(),
            Some(("reports[0].agent_version", "control characters")),
        );
        check(
            |r| {
                r.software.insert(
                    "pos_app".into(),
                    ComponentVersion {
                        version: None,
                        unknown_reason: None,
                    },
                );
            },
            Some(("reports[0].software.pos_app", "exactly one")),
        );
        check(
            |r| {
                if let Some(device) = r.device.as_mut() {
                    device.battery = Some(BatteryStatus {
                        percent: 140.0,
                        charging: None,
                    });
                }
            },
            Some(("reports[0].device.battery.percent", "between 0 and 100")),
        );
    }

    #[test]
    fn a_batch_is_bounded_and_not_empty() {
        let empty = ReportBatch { reports: vec![] };
        assert_eq!(
            validate_batch(&empty, 100).map_err(|e| e.field),
            Err("reports".to_string())
        );
        let big = ReportBatch {
            reports: vec![sample(); 3],
        };
        let error = validate_batch(&big, 2).err().map(|e| e.problem);
        assert_eq!(error.as_deref(), Some("too many reports (3 > 2)"));
        assert_eq!(validate_batch(&big, 3), Ok(()));
    }
}
