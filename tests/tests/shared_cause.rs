//! The demo's headline incident against a real collector: the simulator plays the demo's
//! regional payment-host outage (the incident as `demo/src/incidents.toml` scripts it, started
//! at once), and the collector must show one fleet-level finding — the host in that region,
//! for the acquirer — that suppresses every terminal finding it explains, and nothing else
//! fleet-wide.

use std::time::Duration;

use posmon_e2e_tests::{wait_for, Collector};
use serde_json::Value;

/// The demo's host-outage incident, started at the beginning of the run.
fn demo_host_outage() -> (String, String) {
    let script = include_str!("../../demo/src/incidents.toml");
    let block = script
        .split("[[incidents]]")
        .find(|block| block.contains("fault = \"host_outage\""))
        .unwrap_or_else(|| panic!("the demo scripts a host outage"));
    let region = block
        .lines()
        .find_map(|line| line.trim().strip_prefix("region = "))
        .map(|value| value.trim_matches('"').to_string())
        .unwrap_or_else(|| panic!("the demo's host outage is regional"));
    let incident: String = block
        .lines()
        .map(|line| {
            if line.trim_start().starts_with("start_seconds") {
                "start_seconds = 0".to_string()
            } else if line.trim_start().starts_with("duration_seconds") {
                "duration_seconds = 600".to_string()
            } else {
                line.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    (format!("[[incidents]]{incident}\n"), region)
}

fn evidence<'a>(finding: &'a Value, name: &str) -> Option<&'a str> {
    finding["evidence"]
        .as_array()?
        .iter()
        .find(|evidence| evidence["name"] == name)?["value"]
        .as_str()
}

#[test]
fn the_demos_regional_host_outage_is_one_cause_for_the_acquirer() {
    let dir = tempfile::tempdir().unwrap();
    let collector = Collector::start(dir.path(), "");
    let (incident, region) = demo_host_outage();
    let scenario = dir.path().join("scenario.toml");
    std::fs::write(&scenario, &incident).unwrap();
    // The demo's fleet: 300 terminals; each reports about twice a second here, so the path
    // findings (open after two failed reports) open within the run.
    let output = collector
        .simulator(dir.path())
        .args(["--terminals", "300", "--rate", "600"])
        .args(["--duration-seconds", "4", "--json"])
        .arg("--scenario")
        .arg(&scenario)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );

    let subject = format!("region={region},target=payment-host");
    let fleet_level = |collector: &Collector| -> Vec<Value> {
        collector.get_json("/api/v1/findings?category=upstream&suppressed=include")["findings"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    };
    // The evaluation runs every second: wait until the cause explains what it suppresses.
    let causes = wait_for(Duration::from_secs(10), || {
        let causes = fleet_level(&collector);
        causes
            .first()
            .is_some_and(|cause| cause["explains"].as_u64() > Some(0))
            .then_some(causes)
    })
    .unwrap_or_else(|| panic!("no shared cause; log:\n{}", collector.process.log()));
    assert_eq!(
        causes.len(),
        1,
        "exactly one fleet-level finding: {causes:#?}"
    );
    let cause = &causes[0];
    assert_eq!(cause["subject"], subject.as_str(), "{cause:#}");
    assert_eq!(cause["code"], "upstream.host_outage");
    assert_eq!(cause["party"], "acquirer");
    assert!(cause.get("terminal_id").is_none(), "{cause:#}");
    assert_eq!(
        evidence(cause, "symptom"),
        Some("env.network.host_unreachable")
    );

    // Every host finding of the region is suppressed by it; none elsewhere (the incident hits
    // only that region).
    let host_findings = collector
        .get_json("/api/v1/findings?code=env.network.host_unreachable&suppressed=include")
        ["findings"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(host_findings.len() >= 20, "{host_findings:#?}");
    for finding in &host_findings {
        assert_eq!(finding["suppressed_by"], cause["id"], "{finding:#}");
        let terminal = collector.get_json(&format!(
            "/api/v1/terminals/{}",
            finding["terminal_id"].as_str().unwrap_or_default()
        ));
        assert_eq!(terminal["labels"]["region"], region.as_str());
    }
    // The cause's counts are the terminals it explains, and the region's.
    let cause = &fleet_level(&collector)[0];
    let failing_inside: u64 = evidence(cause, "failing_inside")
        .and_then(|value| value.parse().ok())
        .unwrap_or_default();
    assert_eq!(failing_inside, host_findings.len() as u64, "{cause:#}");
    assert_eq!(cause["explains"], failing_inside);
    assert_eq!(evidence(cause, "failing_outside"), Some("0"));
    let in_region = collector.get_json("/api/v1/fleet")["region"][region.as_str()].as_u64();
    assert_eq!(
        evidence(cause, "total_inside").and_then(|value| value.parse().ok()),
        in_region,
        "{cause:#}"
    );
    // Not listed among the open findings, but kept.
    assert_eq!(
        collector.get_json("/api/v1/findings?code=env.network.host_unreachable")["findings"]
            .as_array()
            .map(Vec::len),
        Some(0)
    );
}
