//! Payment readiness end to end: real agents probing real loopback targets, a real collector
//! with the default payment roles (nothing declared). A terminal whose payment host refuses
//! cannot take payments, and that finding is critical; one whose only fault is an old POS app,
//! or a failing target that payments do not need, is at risk and has no critical finding.

use std::path::Path;
use std::time::Duration;

use posmon_e2e_tests::{quick_agent_config, start_agent, wait_for, Collector, TargetServer};
use serde_json::Value;

/// An agent probing `payment` as `payment-host` and `tms` as `tms`, reporting its POS app
/// version.
fn config(
    collector: &Collector,
    dir: &Path,
    terminal_id: &str,
    payment: &TargetServer,
    tms: &TargetServer,
    pos_app_version: &str,
) -> String {
    let version_file = dir.join(format!("{terminal_id}.version"));
    std::fs::write(&version_file, format!("version={pos_app_version}\n"))
        .unwrap_or_else(|error| panic!("{error}"));
    let components = format!(
        "[[components]]\nname = \"pos_app\"\nfile = \"{}\"\nregex = 'version=(\\S+)'\n",
        version_file.display()
    );
    let mut config = quick_agent_config(
        &collector.url,
        &collector.token(terminal_id),
        dir,
        terminal_id,
        payment,
        2,
        &components,
    );
    config.push_str(&format!(
        "\n[[targets]]\nname = \"tms\"\naddress = \"{}\"\n",
        tms.address
    ));
    config
}

/// The terminal's detail once `check` holds for it, or a panic with the agent's log.
fn wait_until(
    collector: &Collector,
    terminal_id: &str,
    what: &str,
    log: impl Fn() -> String,
    check: impl Fn(&Value) -> bool,
) -> Value {
    wait_for(Duration::from_secs(30), || {
        let detail = collector.get_json(&format!("/api/v1/terminals/{terminal_id}"));
        check(&detail).then_some(detail)
    })
    .unwrap_or_else(|| {
        panic!(
            "{terminal_id}: {what}; now {}\nagent log:\n{}",
            collector.get_json(&format!("/api/v1/terminals/{terminal_id}")),
            log()
        )
    })
}

/// The (code, severity) of each open finding.
fn findings(detail: &Value) -> Vec<(String, String)> {
    let mut found: Vec<(String, String)> = detail["open_findings"]
        .as_array()
        .map(|list| {
            list.iter()
                .map(|f| {
                    (
                        f["code"].as_str().unwrap_or_default().to_string(),
                        f["severity"].as_str().unwrap_or_default().to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    found.sort();
    found
}

#[test]
fn readiness_follows_what_payments_need() {
    let dir = tempfile::tempdir().unwrap_or_else(|error| panic!("{error}"));
    // The agents measure this machine's own disks: a nearly full build disk must not add a
    // finding of its own to the faults under test.
    let collector = Collector::start(
        dir.path(),
        "[diagnosis]\nreport_interval_seconds = 2\ndisk_free_percent = 0.0001\n\n[[version_policy]]\ncomponent = \"pos_app\"\nminimum = \"2.10\"\n",
    );
    let mut payment_down = TargetServer::start();
    let payment_up = TargetServer::start();
    let mut tms_down = TargetServer::start();
    let tms_up = TargetServer::start();
    payment_down.close();
    tms_down.close();

    // The payment host refuses; everything else is fine.
    let down = start_agent(
        dir.path(),
        "down",
        &config(
            &collector,
            dir.path(),
            "T-DOWN",
            &payment_down,
            &tms_up,
            "2.10.1",
        ),
    );
    // Only the POS app is old (below the policy's minimum).
    let old = start_agent(
        dir.path(),
        "old",
        &config(
            &collector,
            dir.path(),
            "T-OLD",
            &payment_up,
            &tms_up,
            "2.9.1",
        ),
    );
    // Only a target that payments do not need fails.
    let tms = start_agent(
        dir.path(),
        "tms",
        &config(
            &collector,
            dir.path(),
            "T-TMS",
            &payment_up,
            &tms_down,
            "2.10.1",
        ),
    );
    // Nothing wrong.
    let fine = start_agent(
        dir.path(),
        "fine",
        &config(
            &collector,
            dir.path(),
            "T-FINE",
            &payment_up,
            &tms_up,
            "2.10.1",
        ),
    );

    let detail = wait_until(
        &collector,
        "T-DOWN",
        "cannot_pay",
        || down.log(),
        |d| d["readiness"] == "cannot_pay",
    );
    assert_eq!(
        findings(&detail),
        [("env.network.host_refused".into(), "critical".into())],
        "{detail}"
    );

    let detail = wait_until(
        &collector,
        "T-OLD",
        "at_risk with the outdated app",
        || old.log(),
        |d| d["readiness"] == "at_risk",
    );
    assert_eq!(
        findings(&detail),
        [("outdated.pos_app".into(), "warning".into())],
        "an old app threatens payments, it does not stop them: {detail}"
    );

    let detail = wait_until(
        &collector,
        "T-TMS",
        "at_risk with the failing TMS",
        || tms.log(),
        |d| d["readiness"] == "at_risk",
    );
    assert_eq!(
        findings(&detail),
        [("env.network.host_refused".into(), "warning".into())],
        "{detail}"
    );

    let detail = wait_until(
        &collector,
        "T-FINE",
        "can_pay",
        || fine.log(),
        |d| d["readiness"] == "can_pay" && d["sequence"].as_u64() > Some(1),
    );
    assert_eq!(findings(&detail), [], "{detail}");

    // The terminal that cannot pay leads the problem list, and is the only critical one.
    let problems = collector.get_json("/api/v1/problems");
    let rows: Vec<(&str, &str)> = problems["rows"]
        .as_array()
        .map(|rows| {
            rows.iter()
                .map(|row| {
                    (
                        row["terminal_id"].as_str().unwrap_or_default(),
                        row["readiness"].as_str().unwrap_or_default(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(rows.first(), Some(&("T-DOWN", "cannot_pay")), "{problems}");
    assert_eq!(rows.len(), 3, "{problems}");
    assert!(rows[1..]
        .iter()
        .all(|(_, readiness)| *readiness == "at_risk"));
    let critical = collector.get_json("/api/v1/findings?severity=critical");
    assert_eq!(
        critical["findings"].as_array().map(Vec::len),
        Some(1),
        "{critical}"
    );
    let metrics = collector.metrics();
    for (readiness, count) in [("cannot_pay", 1), ("at_risk", 2), ("can_pay", 1)] {
        assert!(
            metrics.contains(&format!(
                "posmon_fleet_terminals{{readiness=\"{readiness}\"}} {count}"
            )),
            "{readiness}: {metrics}"
        );
    }

    // The payment host comes back: the terminal can take payments again.
    payment_down.reopen();
    wait_until(
        &collector,
        "T-DOWN",
        "can_pay after the host came back",
        || down.log(),
        |d| d["readiness"] == "can_pay",
    );
}
