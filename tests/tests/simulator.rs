//! The fleet simulator against a real collector: every report accepted, scripted silent and
//! backfill faults played, and the fleet visible in the collector's API.

use posmon_e2e_tests::Collector;

#[test]
fn a_simulated_fleet_with_scripted_faults_reaches_the_collector() {
    let dir = tempfile::tempdir().unwrap();
    let collector = Collector::start(dir.path(), "");
    let scenario = dir.path().join("scenario.toml");
    std::fs::write(
        &scenario,
        r#"
[[incidents]]
fault = "silent"
start_seconds = 0
duration_seconds = 60
share = 0.1

[[incidents]]
fault = "backfill"
start_seconds = 0.5
duration_seconds = 2
share = 0.2

[[incidents]]
fault = "outdated_app"
start_seconds = 0
duration_seconds = 60
share = 0.5
"#,
    )
    .unwrap();
    let output = collector
        .simulator(dir.path())
        .args(["--terminals", "100", "--rate", "200"])
        .args(["--duration-seconds", "4", "--json", "--id-prefix", "E2E-"])
        .arg("--scenario")
        .arg(&scenario)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let summary: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(summary["transport_errors"], 0, "{summary}");
    assert_eq!(
        summary["sample_errors"].as_array().map(Vec::len),
        Some(0),
        "{summary}"
    );
    assert_eq!(
        summary["reports_accepted"], summary["reports_sent"],
        "{summary}"
    );
    assert!(summary["silent_slots"].as_u64() > Some(0), "{summary}");
    assert!(summary["held_for_backfill"].as_u64() > Some(0), "{summary}");
    assert!(
        summary["backfilled_reports"].as_u64() > Some(0),
        "{summary}"
    );
    let rate = summary["achieved_reports_per_second"]
        .as_f64()
        .unwrap_or_default();
    assert!(rate > 120.0, "asked for 200/s, achieved {rate}/s");

    // Silent terminals never reported; every other one did.
    let terminals = collector.get_json("/api/v1/terminals?limit=1000");
    let total = terminals["total"].as_u64().unwrap_or_default();
    assert!((80..100).contains(&total), "{total} terminals");
    let first = &terminals["terminals"][0];
    assert!(first["terminal_id"]
        .as_str()
        .is_some_and(|id| id.starts_with("E2E-")));
    assert!(first["labels"]["region"]
        .as_str()
        .is_some_and(|region| region.starts_with("cn-")));
}
