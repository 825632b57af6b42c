//! The diagnosis-quality harness (`posmon-simulator eval`, `bench/eval.sh`) end to end, on a
//! handful of small cases against real collectors: a right expectation scores 1, a deliberately
//! wrong party or cause scores below 1, the healthy fleet is scored, and the shipped incident
//! list is one the harness accepts. It checks the harness, not the diagnosis: the expectations
//! here hold whatever the rules become.

use std::process::Command;

use posmon_e2e_tests::binary;
use serde_json::Value;

const CASES: &str = r#"
[defaults]
terminals = 200
report_interval_seconds = 2
onset_seconds = 6
run_seconds = 30

[[case]]
name = "right: outdated app"
incidents = [{ fault = "outdated_app", share = 0.05, party = "software_vendor" }]

[[case]]
name = "wrong party: outdated app"
incidents = [{ fault = "outdated_app", share = 0.05, party = "acquirer" }]

[[case]]
name = "wrong cause: host-wide outage"
incidents = [{ fault = "host_outage", party = "acquirer" }]
causes = [{ scope = "region=nowhere,target=payment-host", party = "acquirer" }]

[[case]]
name = "healthy"
healthy = true
"#;

fn eval(cases: &std::path::Path) -> Value {
    let output = Command::new(binary("posmon-simulator"))
        .arg("eval")
        .arg("--collector-binary")
        .arg(binary("posmon-collector"))
        .arg("--cases")
        .arg(cases)
        .args(["--parallel", "4", "--json"])
        .output()
        .unwrap_or_else(|error| panic!("posmon-simulator eval: {error}"));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_str(&stdout).unwrap_or_else(|error| panic!("{error}: {stdout}"))
}

fn f1(counts: &Value) -> f64 {
    let (tp, fp, fn_) = (
        counts["true_positives"].as_f64().unwrap_or(-1.0),
        counts["false_positives"].as_f64().unwrap_or(-1.0),
        counts["false_negatives"].as_f64().unwrap_or(-1.0),
    );
    if tp + fp + fn_ == 0.0 {
        1.0
    } else {
        2.0 * tp / (2.0 * tp + fp + fn_)
    }
}

#[test]
fn the_harness_scores_right_and_wrong_expectations_and_the_healthy_fleet() {
    let dir = tempfile::tempdir().unwrap_or_else(|error| panic!("{error}"));
    let cases = dir.path().join("cases.toml");
    std::fs::write(&cases, CASES).unwrap_or_else(|error| panic!("{error}"));
    let result = eval(&cases);
    let case = |name: &str| -> &Value {
        result["cases"]
            .as_array()
            .and_then(|cases| cases.iter().find(|case| case["name"] == name))
            .unwrap_or_else(|| panic!("no case {name}: {result}"))
    };
    let totals = &result["totals"];
    assert_eq!(totals["cases"], 4, "{totals}");
    assert_eq!(totals["failed_cases"], 0, "{totals}");
    assert_eq!(totals["reports_refused"], 0, "{totals}");
    assert!(totals["reports_sent"].as_u64() > Some(2000), "{totals}");

    let right = case("right: outdated app");
    let hit = right["hit_terminals"].as_u64().unwrap_or_default();
    assert!((3..30).contains(&hit), "{right}");
    assert_eq!(f1(&right["terminals"]), 1.0, "{right}");
    assert!(
        right["detect_seconds"].as_f64().is_some_and(|s| s <= 30.0),
        "{right}"
    );

    let wrong = case("wrong party: outdated app");
    assert_eq!(wrong["hit_terminals"], right["hit_terminals"]);
    assert_eq!(f1(&wrong["terminals"]), 0.0, "{wrong}");
    assert!(wrong["detect_seconds"].is_null(), "{wrong}");
    assert!(wrong["terminal_mistakes"][0]
        .as_str()
        .is_some_and(|m| m.contains("software_vendor not expected")));

    let wrong_cause = case("wrong cause: host-wide outage");
    assert_eq!(wrong_cause["hit_terminals"], 200, "{wrong_cause}");
    assert_eq!(f1(&wrong_cause["causes"]), 0.0, "{wrong_cause}");
    assert_eq!(
        wrong_cause["missed_causes"][0],
        "region=nowhere,target=payment-host → acquirer"
    );

    // The healthy fleet is scored: every report played, every finding counted.
    let healthy = case("healthy");
    assert_eq!(healthy["healthy"], true);
    assert_eq!(healthy["findings_seen"], 0, "{healthy}");
    assert_eq!(totals["findings_on_healthy_fleet"], 0, "{totals}");
    assert!(totals["cause_f1"].as_f64() < Some(1.0), "{totals}");
    assert!(totals["terminal_f1"].as_f64() < Some(1.0), "{totals}");
}

#[test]
fn the_shipped_incident_list_is_accepted() {
    let cases = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../simulator/eval/incidents.toml"
    );
    // A collector binary that is not one fails every case, but only after the list was read:
    // an invalid list fails first, with its own message.
    let output = Command::new(binary("posmon-simulator"))
        .args([
            "eval",
            "--collector-binary",
            "/nonexistent/posmon-collector",
        ])
        .args(["--cases", cases, "--only", "healthy", "--json"])
        .output()
        .unwrap_or_else(|error| panic!("{error}"));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(!output.status.success(), "{stdout}");
    let result: Value =
        serde_json::from_str(&stdout).unwrap_or_else(|error| panic!("{error}: {stdout}"));
    assert_eq!(result["totals"]["failed_cases"], 1, "{result}");
    assert!(result["cases"][0]["error"]
        .as_str()
        .is_some_and(|error| error.contains("/nonexistent/posmon-collector")));
}
