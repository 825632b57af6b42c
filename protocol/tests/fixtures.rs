//! Golden fixtures: every file under `fixtures/v1` must keep parsing and validating for as long
//! as v1 is accepted. Add a fixture when a field is added; never edit an old one.

use posmon_protocol::*;

fn parse(name: &str) -> ReportBatch {
    let path = format!("{}/fixtures/v1/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|error| panic!("{path}: {error}"));
    let batch: ReportBatch =
        serde_json::from_str(&text).unwrap_or_else(|error| panic!("{path}: {error}"));
    validate_batch(&batch, limits::REPORTS_PER_BATCH_MAX)
        .unwrap_or_else(|error| panic!("{path}: {error}"));
    batch
}

#[test]
fn every_fixture_parses_and_validates() {
    let directory = format!("{}/fixtures/v1", env!("CARGO_MANIFEST_DIR"));
    let mut count = 0;
    for entry in std::fs::read_dir(&directory).unwrap_or_else(|error| panic!("{error}")) {
        let name = entry.unwrap_or_else(|error| panic!("{error}")).file_name();
        parse(&name.to_string_lossy());
        count += 1;
    }
    assert!(count >= 2, "expected the golden fixtures in {directory}");
}

#[test]
fn the_full_fixture_means_what_it_says() {
    let batch = parse("full.json");
    let report = &batch.reports[0];
    assert_eq!(report.terminal_id, "SH-0042");
    assert_eq!(report.sequence, 1207);
    assert_eq!(report.observed_at.offset().whole_hours(), 8);
    assert_eq!(report.labels.region.as_deref(), Some("cn-east-sh"));
    assert_eq!(
        report.labels.extra.get("lane").map(String::as_str),
        Some("3")
    );
    let failure = report.probes[0]
        .first_failure()
        .map(|stage| (stage.stage, stage.error));
    assert_eq!(failure, Some((Stage::Tcp, Some(ErrorKind::Timeout))));
    assert!((report.probes[0].stages[3].loss_ratio() - 2.0 / 3.0).abs() < 1e-9);
    assert_eq!(
        report.probes[1].stages[0].attempts, 1,
        "attempts defaults to 1"
    );
    assert_eq!(
        report.software["firmware"],
        ComponentVersion::unknown("file /etc/firmware-version not found")
    );
    assert_eq!(report.dropped_reports, 3);
    // Values from a newer agent degrade to `Other` instead of refusing the report.
    let future = &batch.reports[1].probes[0].stages[0];
    assert_eq!(
        (future.stage, future.error),
        (Stage::Other, Some(ErrorKind::Other))
    );
}

#[test]
fn a_delta_report_names_what_it_left_out() {
    let batch = parse("delta.json");
    let report = &batch.reports[0];
    assert_eq!(report.unchanged, [Section::Labels, Section::Software]);
    assert!(report.software.is_empty() && report.labels == Labels::default());
}

#[test]
fn a_report_survives_a_round_trip() {
    let batch = parse("full.json");
    let text = serde_json::to_string(&batch).unwrap_or_else(|error| panic!("{error}"));
    let again: ReportBatch = serde_json::from_str(&text).unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(batch, again);
}

#[test]
fn an_agent_instance_rides_beside_the_sequence() {
    let batch = parse("instance.json");
    assert_eq!(
        batch.reports[0].agent_instance.as_deref(),
        Some("6f1c2a9e-4b7d-4e21-9a3f-0c5d8e7b1a42")
    );
    assert_eq!(batch.reports[1].sequence, limits::SEQUENCE_MAX);
    // Older fixtures carry none: the agents before it keep today's behaviour.
    assert_eq!(parse("minimal.json").reports[0].agent_instance, None);
}

#[test]
fn the_agents_schedule_rides_when_it_changed() {
    let batch = parse("intervals.json");
    assert_eq!(
        batch.reports[0].intervals,
        Some(posmon_protocol::Intervals {
            probe_seconds: 10,
            report_seconds: 300,
            retry_max_seconds: 300,
        })
    );
    // Absent: as before (and from older agents: the collector's defaults).
    assert_eq!(batch.reports[1].intervals, None);
    assert_eq!(parse("minimal.json").reports[0].intervals, None);
}

#[test]
fn a_heartbeat_leaves_out_its_measurements() {
    let batch = parse("heartbeat.json");
    let report = &batch.reports[0];
    assert_eq!(
        report.unchanged,
        [Section::Labels, Section::Software, Section::Measurements]
    );
    assert!(report.probes.is_empty() && report.device.is_none() && report.clock.is_none());
    assert_eq!(report.data_usage, None);
}

#[test]
fn data_usage_counts_the_month_by_kind() {
    let batch = parse("data_usage.json");
    let usage = batch.reports[0]
        .data_usage
        .unwrap_or_else(|| panic!("no data_usage"));
    assert_eq!(usage.month, 2026 * 12 + 11);
    assert_eq!(usage.total_bytes(), 412_300 + 96_120 + 1_520);
    assert_eq!(usage.budget_bytes, Some(10 << 20));
    assert_eq!(usage.stretch_percent, 150);
    // Without a budget, other bytes or a stretch: none, 0 and 100 (not stretched).
    let usage = batch.reports[1]
        .data_usage
        .unwrap_or_else(|| panic!("no data_usage"));
    assert_eq!(
        (usage.budget_bytes, usage.other_bytes, usage.stretch_percent),
        (None, 0, 100)
    );
}
