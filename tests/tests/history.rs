//! History that lasts, end to end with the real collector: reports go in over HTTP (one of them
//! a late backfill, so the chart has a gap), the collector stops and starts again on the same
//! data, and the same history is served: the terminal's chart, the fleet trend, the readiness
//! intervals and availability (with the downtime counted as unknown, apart). The availability
//! report as CSV, with a label that would be a spreadsheet formula, and its bounds.

use std::time::Duration;

use posmon_e2e_tests::{wait_for, Collector};
use serde_json::{json, Value};

fn now() -> time::OffsetDateTime {
    time::OffsetDateTime::now_utc()
}

fn rfc3339(at: time::OffsetDateTime) -> String {
    at.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|error| panic!("{error}"))
}

/// A report: the payment host answering TCP in `latency_ms`, or failing.
fn report(
    terminal_id: &str,
    region: &str,
    sequence: u64,
    observed_at: time::OffsetDateTime,
    latency_ms: Option<f64>,
) -> Value {
    let tcp = match latency_ms {
        Some(latency) => {
            json!({ "stage": "tcp", "status": "ok", "latency_ms": { "min": latency, "avg": latency, "max": latency } })
        }
        None => json!({ "stage": "tcp", "status": "failed", "error": "refused" }),
    };
    json!({
        "schema_version": 1,
        "terminal_id": terminal_id,
        "sequence": sequence,
        "observed_at": rfc3339(observed_at),
        "agent_version": "0.3.0",
        "labels": { "model": "PAX-A920", "region": region, "carrier": "china-mobile", "merchant": "m-1" },
        "probes": [ { "target": "payment-host", "address": "pay.test:443", "stages": [
            { "stage": "link", "status": "ok" },
            { "stage": "dns", "status": "ok", "latency_ms": { "min": 3.0, "avg": 3.0, "max": 3.0 } },
            tcp
        ] } ],
    })
}

fn send(collector: &Collector, token: &str, reports: Vec<Value>) {
    let response = reqwest::blocking::Client::new()
        .post(format!("{}/api/v1/reports", collector.url))
        .bearer_auth(token)
        .json(&json!({ "reports": reports }))
        .send()
        .unwrap_or_else(|error| panic!("POST: {error}"));
    let status = response.status().as_u16();
    let body = response.text().unwrap_or_default();
    assert_eq!(status, 200, "{body}");
}

fn get(collector: &Collector, path: &str) -> (u16, String, String) {
    let response = reqwest::blocking::get(format!("{}{path}", collector.url))
        .unwrap_or_else(|error| panic!("GET {path}: {error}"));
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|value| value.to_str().ok())
        .unwrap_or("")
        .to_string();
    (status, content_type, response.text().unwrap_or_default())
}

/// The chart's points that heard a report.
fn heard(series: &Value) -> Vec<Value> {
    series["series"]["points"]
        .as_array()
        .unwrap_or_else(|| panic!("no points: {series}"))
        .iter()
        .filter(|point| point["reports"].as_u64().unwrap_or(0) > 0)
        .cloned()
        .collect()
}

fn group<'a>(availability: &'a Value, name: &str) -> &'a Value {
    availability["groups"]
        .as_array()
        .and_then(|groups| groups.iter().find(|group| group["group"] == name))
        .unwrap_or_else(|| panic!("no group {name}: {availability}"))
}

#[test]
fn history_survives_a_restart_with_its_gaps_and_availability() {
    let dir = tempfile::tempdir().unwrap_or_else(|error| panic!("{error}"));
    let collector = Collector::start(dir.path(), "[web]\ntrend_interval_seconds = 1\n");
    let (north, south) = (collector.token("T-NORTH"), collector.token("T-SOUTH"));
    let start = now();
    // A backfill two hours old, then now: the hours between are a gap.
    send(
        &collector,
        &north,
        vec![
            report(
                "T-NORTH",
                "north",
                1,
                start - Duration::from_secs(7200),
                Some(20.0),
            ),
            report("T-NORTH", "north", 2, start, Some(40.0)),
        ],
    );
    for sequence in 1..=3 {
        send(
            &collector,
            &south,
            vec![report(
                "T-SOUTH",
                "=HYPERLINK(\"x\")",
                sequence,
                now(),
                None,
            )],
        );
    }
    // Trend points (one a second) and the writer's batch.
    let fleet = wait_for(Duration::from_secs(20), || {
        let fleet = collector.get_json("/api/v1/history/fleet?range=24h");
        let filled = fleet["series"]["points"].as_array().map_or(0, |points| {
            points
                .iter()
                .filter(|point| !point["can_pay"].is_null())
                .count()
        });
        (filled > 0).then_some(fleet)
    })
    .unwrap_or_else(|| panic!("no fleet history; log:\n{}", collector.process.log()));
    let terminal_path = "/api/v1/history/terminals/T-NORTH?range=24h";
    let day = wait_for(Duration::from_secs(10), || {
        let day = collector.get_json(terminal_path);
        (heard(&day).len() == 2).then_some(day)
    })
    .unwrap_or_else(|| panic!("no terminal history: {}", collector.get_json(terminal_path)));
    // A gap between the two reports: null latency where no report came.
    let points = day["series"]["points"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let first = points
        .iter()
        .position(|point| !point["latency_ms"].is_null());
    let last = points
        .iter()
        .rposition(|point| !point["latency_ms"].is_null());
    let (Some(first), Some(last)) = (first, last) else {
        panic!("no latency in {day}")
    };
    assert!(
        last - first >= 10,
        "two hours apart in 10-minute points: {day}"
    );
    assert!(points[first + 1..last]
        .iter()
        .all(|point| point["latency_ms"].is_null()));
    assert_eq!(points[first]["latency_ms"], 20.0);
    assert_eq!(points[last]["latency_ms"], 40.0);
    let week = collector.get_json("/api/v1/history/terminals/T-NORTH?range=7d");
    // Two hours apart: two hourly points.
    assert_eq!(heard(&week).len(), 2, "{week}");
    let trend_before = collector.get_json("/api/v1/trend?hours=24")["points"]
        .as_array()
        .map_or(0, Vec::len);
    assert!(trend_before > 0);

    // Stop, start on the same data: the same history is served.
    let collector = collector.restart_healthy(dir.path());
    assert_eq!(
        collector.get_json(terminal_path)["series"]["points"],
        day["series"]["points"]
    );
    assert_eq!(
        collector.get_json("/api/v1/history/terminals/T-NORTH?range=7d")["series"]["points"],
        week["series"]["points"]
    );
    let fleet_after = collector.get_json("/api/v1/history/fleet?range=24h");
    for (before, after) in fleet["series"]["points"]
        .as_array()
        .unwrap_or_else(|| panic!("no points: {fleet}"))
        .iter()
        .zip(
            fleet_after["series"]["points"]
                .as_array()
                .unwrap_or_else(|| panic!("no points: {fleet_after}")),
        )
    {
        if !before["can_pay"].is_null() && before["at"] == after["at"] {
            assert!(
                !after["can_pay"].is_null(),
                "a point lost: {before} / {after}"
            );
        }
    }
    let trend_after = collector.get_json("/api/v1/trend?hours=24")["points"]
        .as_array()
        .map_or(0, Vec::len);
    assert!(
        trend_after >= trend_before,
        "{trend_after} < {trend_before}"
    );
    // The readiness before the restart, and unknown while it was down.
    let readiness = wait_for(Duration::from_secs(10), || {
        let series = collector.get_json(terminal_path);
        let states: Vec<String> = series["series"]["readiness"]
            .as_array()
            .unwrap_or(&Vec::new())
            .iter()
            .filter_map(|interval| interval["readiness"].as_str().map(str::to_string))
            .collect();
        states.contains(&"unknown".to_string()).then_some(states)
    })
    .unwrap_or_else(|| panic!("no unknown interval after the restart"));
    assert_eq!(readiness[0], "can_pay", "{readiness:?}");

    // Availability: north could pay all the time it was known; the downtime is unknown, apart.
    let from = rfc3339(start - Duration::from_secs(3 * 3600));
    let to = rfc3339(now() + Duration::from_secs(60));
    let availability = collector.get_json(&format!(
        "/api/v1/availability?by=region&from={from}&to={to}"
    ));
    let north_group = group(&availability, "north");
    assert_eq!(north_group["terminals"], 1);
    assert_eq!(north_group["available_share"], 1.0, "{availability}");
    assert!(
        north_group["seconds"]["unknown"].as_i64().unwrap_or(0) > 0,
        "{availability}"
    );
    let south_group = group(&availability, "=HYPERLINK(\"x\")");
    assert!(
        south_group["seconds"]["cannot_pay"].as_i64().unwrap_or(0) > 0,
        "{availability}"
    );
    assert!(
        south_group["available_share"].as_f64().unwrap_or(1.0) < 1.0,
        "{availability}"
    );

    // As CSV: quoted cells, the formula guarded.
    let (status, content_type, csv) = get(
        &collector,
        &format!("/api/v1/availability?by=region&from={from}&to={to}&format=csv"),
    );
    assert_eq!(status, 200, "{csv}");
    assert!(content_type.starts_with("text/csv"), "{content_type}");
    let lines: Vec<&str> = csv.split("\r\n").collect();
    assert!(
        lines[0].starts_with("\"region\",\"terminals\",\"available_percent\""),
        "{csv}"
    );
    assert!(
        lines
            .iter()
            .any(|line| line.starts_with("\"'=HYPERLINK(\"\"x\"\")\",\"1\",")),
        "{csv}"
    );
    assert!(
        lines
            .iter()
            .any(|line| line.starts_with("\"north\",\"1\",\"100.000\"")),
        "{csv}"
    );

    // Bounds: a clear 400 naming the parameter.
    for (query, field) in [
        ("by=colour", "by"),
        (&format!("by=region&from={to}&to={from}") as &str, "to"),
        ("from=2020-01-01T00:00:00Z&to=2026-01-01T00:00:00Z", "from"),
        ("from=yesterday", "from"),
        ("format=xls", "format"),
    ] {
        let (status, _, body) = get(&collector, &format!("/api/v1/availability?{query}"));
        assert_eq!(status, 400, "{query}: {body}");
        let body: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
        assert_eq!(body["error"]["field"], field, "{query}: {body}");
    }
    let (status, _, _) = get(&collector, "/api/v1/history/terminals/T-NONE?range=24h");
    assert_eq!(status, 404);
    let (status, _, _) = get(&collector, "/api/v1/history/fleet?range=1y");
    assert_eq!(status, 400);
}
