//! The data plan, end to end on loopback: a real collector takes reports carrying the agents'
//! data usage and heartbeats (`unchanged` holding `measurements`) over HTTP. A heartbeat keeps
//! the terminal's open finding open and moves its liveness; the API, the overview and /metrics
//! show the usage, the terminals near their budget and the fleet's month; a restart keeps it.

use std::time::Duration;

use posmon_e2e_tests::{wait_for, Collector};
use serde_json::{json, Value};

const MIB: u64 = 1 << 20;

fn now() -> time::OffsetDateTime {
    time::OffsetDateTime::now_utc()
}

fn rfc3339(at: time::OffsetDateTime) -> String {
    at.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|error| panic!("{error}"))
}

/// This month as the protocol counts it.
fn month() -> u64 {
    let at = now();
    u64::try_from(at.year()).unwrap_or(0) * 12 + u64::from(u8::from(at.month())) - 1
}

fn usage(report_bytes: u64, probe_bytes: u64, stretch_percent: u32) -> Value {
    json!({
        "month": month(),
        "report_bytes": report_bytes,
        "probe_bytes": probe_bytes,
        "other_bytes": 100,
        "budget_bytes": 10 * MIB,
        "stretch_percent": stretch_percent,
    })
}

/// A full report: the payment host refuses TCP when `failing`.
fn full(terminal_id: &str, sequence: u64, failing: bool, data_usage: Option<Value>) -> Value {
    let tcp = if failing {
        json!({ "stage": "tcp", "status": "failed", "error": "timeout" })
    } else {
        json!({ "stage": "tcp", "status": "ok", "latency_ms": { "min": 5.0, "avg": 5.0, "max": 5.0 } })
    };
    let mut report = json!({
        "schema_version": 1,
        "terminal_id": terminal_id,
        "sequence": sequence,
        "observed_at": rfc3339(now()),
        "agent_version": "0.3.0",
        "labels": { "model": "PAX-A920", "region": "cn-test", "carrier": "china-mobile" },
        "software": { "pos_app": { "version": "3.2.1" } },
        "probes": [ { "target": "payment-host", "address": "pay.test:443", "stages": [
            { "stage": "link", "status": "ok" },
            { "stage": "dns", "status": "ok", "latency_ms": { "min": 3.0, "avg": 3.0, "max": 3.0 } },
            tcp
        ] } ],
        "device": { "cpu_percent": 12.5 },
    });
    if let Some(data_usage) = data_usage {
        report["data_usage"] = data_usage;
    }
    report
}

/// A heartbeat: labels, software and measurements as before.
fn heartbeat(terminal_id: &str, sequence: u64, data_usage: Value) -> Value {
    json!({
        "schema_version": 1,
        "terminal_id": terminal_id,
        "sequence": sequence,
        "observed_at": rfc3339(now()),
        "agent_version": "0.3.0",
        "unchanged": ["labels", "software", "measurements"],
        "data_usage": data_usage,
    })
}

fn post(collector: &Collector, token: &str, report: Value) -> (u16, Value) {
    let response = reqwest::blocking::Client::new()
        .post(format!("{}/api/v1/reports", collector.url))
        .bearer_auth(token)
        .json(&json!({ "reports": [report] }))
        .send()
        .unwrap_or_else(|error| panic!("POST: {error}"));
    let status = response.status().as_u16();
    (status, response.json().unwrap_or(Value::Null))
}

fn send(collector: &Collector, token: &str, report: Value) {
    let (status, body) = post(collector, token, report);
    assert_eq!(status, 200, "{body}");
    // Every acknowledgement says the collector takes heartbeats: the agent sends none before.
    assert_eq!(body["heartbeats"], true, "{body}");
}

fn terminal_ids(list: &Value) -> Vec<String> {
    list["terminals"]
        .as_array()
        .map(|terminals| {
            terminals
                .iter()
                .filter_map(|terminal| terminal["terminal_id"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn heartbeats_and_data_usage_over_http() {
    let dir = tempfile::tempdir().unwrap_or_else(|error| panic!("{error}"));
    let collector = Collector::start(dir.path(), "");
    let (busy, quiet) = ("T-DATA-BUSY", "T-DATA-QUIET");
    let busy_token = collector.token(busy);
    let quiet_token = collector.token(quiet);

    // The busy terminal's payment host fails twice: the finding opens.
    send(&collector, &busy_token, full(busy, 1, true, None));
    send(&collector, &busy_token, full(busy, 2, true, None));
    assert_eq!(
        collector.finding_codes(busy),
        ["env.network.host_unreachable"]
    );
    let before = collector.get_json(&format!("/api/v1/terminals/{busy}"));

    // Heartbeats: liveness and usage move, the finding stays open, the path stays as it was.
    for sequence in 3..=6 {
        send(
            &collector,
            &busy_token,
            heartbeat(busy, sequence, usage(3 * MIB, sequence * MIB, 250)),
        );
    }
    let detail = collector.get_json(&format!("/api/v1/terminals/{busy}"));
    assert_eq!(detail["sequence"], 6);
    assert_eq!(detail["readiness"], "cannot_pay");
    assert_eq!(
        collector.finding_codes(busy),
        ["env.network.host_unreachable"]
    );
    assert_eq!(detail["targets"], before["targets"]);
    assert_eq!(detail["device"], before["device"]);
    assert_eq!(detail["labels"], before["labels"]);
    let data = &detail["data_usage"];
    assert_eq!(data["total_bytes"], 9 * MIB + 100, "{detail}");
    assert_eq!(data["budget_bytes"], 10 * MIB);
    assert_eq!(data["budget_percent"], 90);
    assert_eq!(data["stretch_percent"], 250);
    assert_eq!(data["near_budget"], true);
    assert_eq!(data["current"], true);

    // The quiet terminal: healthy, well within its budget.
    send(
        &collector,
        &quiet_token,
        full(quiet, 1, false, Some(usage(1000, 2000, 100))),
    );
    let detail = collector.get_json(&format!("/api/v1/terminals/{quiet}"));
    assert_eq!(detail["data_usage"]["near_budget"], false, "{detail}");

    // Filter and sort by the budget.
    let near = collector.get_json("/api/v1/terminals?budget=near");
    assert_eq!(terminal_ids(&near), [busy]);
    let sorted = collector.get_json("/api/v1/terminals?sort=data_usage");
    assert_eq!(terminal_ids(&sorted), [busy, quiet]);
    let refused = collector.get_json("/api/v1/terminals?budget=far");
    assert_eq!(refused["error"]["field"], "budget", "{refused}");

    // The fleet's month in the overview and in /metrics (no per-terminal series).
    let overview = collector.get_json("/api/v1/overview");
    let fleet = &overview["data_usage"];
    assert_eq!(fleet["total_bytes"], 9 * MIB + 100 + 3100, "{overview}");
    assert_eq!(fleet["terminals_reporting"], 2);
    assert_eq!(fleet["near_budget"], 1);
    assert_eq!(fleet["stretched"], 1);
    let metrics = collector.metrics();
    for line in [
        format!(
            "posmon_fleet_data_usage_bytes{{kind=\"report\"}} {}",
            3 * MIB + 1000
        ),
        format!(
            "posmon_fleet_data_usage_bytes{{kind=\"probe\"}} {}",
            6 * MIB + 2000
        ),
        "posmon_fleet_data_usage_terminals{state=\"near_budget\"} 1".to_string(),
        "posmon_fleet_data_usage_terminals{state=\"reporting\"} 2".to_string(),
    ] {
        assert!(metrics.contains(&line), "{line} missing:\n{metrics}");
    }
    assert!(!metrics.contains(busy), "a per-terminal series");

    // A heartbeat that carries measurements contradicts itself: refused, naming the field.
    let mut contradictory = heartbeat(busy, 7, usage(1, 1, 100));
    contradictory["probes"] = full(busy, 7, false, None)["probes"].clone();
    let (status, body) = post(&collector, &busy_token, contradictory);
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["field"], "reports[0].probes", "{body}");
    // So is a usage out of bounds.
    let mut stretched = usage(1, 1, 100);
    stretched["stretch_percent"] = json!(99);
    let (status, body) = post(&collector, &busy_token, heartbeat(busy, 7, stretched));
    assert_eq!(status, 400, "{body}");
    assert_eq!(
        body["error"]["field"], "reports[0].data_usage.stretch_percent",
        "{body}"
    );

    // Measurements again: the finding closes as before.
    for sequence in 7..=9 {
        send(&collector, &busy_token, full(busy, sequence, false, None));
    }
    let closed = wait_for(Duration::from_secs(5), || {
        collector.finding_codes(busy).is_empty().then_some(())
    });
    assert!(closed.is_some(), "the finding did not close");

    // The usage survives a restart.
    let collector = collector.restart_healthy(dir.path());
    let detail = collector.get_json(&format!("/api/v1/terminals/{busy}"));
    assert_eq!(
        detail["data_usage"]["total_bytes"],
        9 * MIB + 100,
        "{detail}"
    );
}
