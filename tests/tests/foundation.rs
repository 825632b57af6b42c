//! The first agent → collector path, end to end, with the real binaries on loopback.

use std::time::{Duration, Instant};

use posmon_e2e_tests::{start_agent, wait_for, Collector, TargetServer};

const INTERVAL_SECONDS: u64 = 2;

fn agent_config(
    collector: &Collector,
    dir: &std::path::Path,
    terminal_id: &str,
    target: &TargetServer,
    pos_app_version: &str,
) -> String {
    let version_file = dir.join(format!("{terminal_id}.version"));
    std::fs::write(
        &version_file,
        format!("name=pos\nversion={pos_app_version}\n"),
    )
    .unwrap_or_else(|error| panic!("{error}"));
    format!(
        r#"
terminal_id = "{terminal_id}"
collector_url = "{url}"
token = "{token}"
state_dir = "{state}"
report_interval_seconds = {INTERVAL_SECONDS}
probe_interval_seconds = {INTERVAL_SECONDS}
probe_timeout_seconds = 1

[labels]
merchant = "M-1"
model = "PAX-A920"
region = "cn-east"
carrier = "china-mobile"

[[targets]]
name = "payment-host"
address = "{target}"

[[components]]
name = "pos_app"
file = "{version_file}"
regex = 'version=(\S+)'
"#,
        url = collector.url,
        token = collector.token(terminal_id),
        state = dir.join(format!("{terminal_id}-state")).display(),
        target = target.address,
        version_file = version_file.display(),
    )
}

#[test]
fn a_terminal_reports_and_its_findings_open_and_close() {
    let dir = tempfile::tempdir().unwrap_or_else(|error| panic!("{error}"));
    let collector = Collector::start(
        dir.path(),
        "[metrics]\nper_terminal_series = true\n\n[[version_policy]]\ncomponent = \"pos_app\"\nminimum = \"2.10\"\n",
    );
    let mut target = TargetServer::start();
    let config = agent_config(
        &collector,
        dir.path(),
        "T-E2E-1",
        &target,
        "V2.10.3_20240501",
    );
    let agent = start_agent(dir.path(), "agent-1", &config);

    // The terminal appears in the API and in /metrics, healthy.
    let appeared = wait_for(Duration::from_secs(15), || {
        let list = collector.get_json("/api/v1/terminals");
        (list["terminals"][0]["terminal_id"] == "T-E2E-1").then_some(list)
    });
    let list =
        appeared.unwrap_or_else(|| panic!("terminal never appeared; agent log:\n{}", agent.log()));
    assert_eq!(list["terminals"][0]["labels"]["region"], "cn-east");
    assert_eq!(list["terminals"][0]["readiness"], "can_pay");
    let metrics = collector.metrics();
    assert!(
        metrics.contains("posmon_terminal_last_report_timestamp_seconds{terminal_id=\"T-E2E-1\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains("posmon_fleet_terminals{readiness=\"can_pay\"} 1"),
        "{metrics}"
    );
    assert_eq!(
        collector.finding_codes("T-E2E-1"),
        Vec::<String>::new(),
        "a newer vendor version is not outdated"
    );
    // The detail is the compact summary the collector keeps, not the raw report.
    let detail = collector.get_json("/api/v1/terminals/T-E2E-1");
    assert_eq!(detail["versions"]["pos_app"], "V2.10.3_20240501");
    assert_eq!(detail["targets"][0]["target"], "payment-host");
    assert_eq!(detail["targets"][0]["status"], "ok");
    assert!(detail["targets"][0]["latency_ms"].is_array());

    // The payment host goes away: an environment finding after two failed cycles (one failed
    // cycle is a blip), so within three report intervals.
    target.close();
    let closed_at = Instant::now();
    let opened = wait_for(Duration::from_secs(4 * INTERVAL_SECONDS), || {
        collector
            .finding_codes("T-E2E-1")
            .contains(&"env.network.host_refused".to_string())
            .then(Instant::now)
    });
    let opened = opened.unwrap_or_else(|| panic!("no finding; agent log:\n{}", agent.log()));
    let took = opened - closed_at;
    assert!(
        took <= Duration::from_secs(3 * INTERVAL_SECONDS) + Duration::from_millis(500),
        "the finding took {took:?}, more than three report intervals"
    );
    let findings = collector.get_json("/api/v1/findings?code=env.network.host_refused");
    let finding = &findings["findings"][0];
    assert_eq!(finding["category"], "environment");
    assert_eq!(finding["party"], "acquirer");
    assert_eq!(finding["subject"], "payment-host");
    assert!(finding["remediation"]["zh-CN"]
        .as_str()
        .is_some_and(|text| !text.is_empty()));
    let evidence = finding["evidence"].to_string();
    assert!(evidence.contains("refused"), "{evidence}");
    let metrics = collector.metrics();
    assert!(
        metrics.contains("posmon_findings_open{category=\"environment\",code=\"env.network.host_refused\",party=\"acquirer\",severity=\"critical\"} 1"),
        "{metrics}"
    );

    // The host comes back: after two good cycles the finding clears and moves to the history.
    target.reopen();
    let cleared = wait_for(Duration::from_secs(4 * INTERVAL_SECONDS), || {
        collector.finding_codes("T-E2E-1").is_empty().then_some(())
    });
    assert!(
        cleared.is_some(),
        "finding did not clear; agent log:\n{}",
        agent.log()
    );
    let detail = collector.get_json("/api/v1/terminals/T-E2E-1");
    assert_eq!(
        detail["findings_history"][0]["code"],
        "env.network.host_refused"
    );
    assert!(detail["findings_history"][0]["closed_at"].is_string());
    assert_eq!(detail["readiness"], "can_pay");
}

#[test]
fn an_old_pos_app_gets_an_outdated_finding() {
    let dir = tempfile::tempdir().unwrap_or_else(|error| panic!("{error}"));
    let collector = Collector::start(
        dir.path(),
        "[[version_policy]]\ncomponent = \"pos_app\"\nminimum = \"2.10\"\n",
    );
    let target = TargetServer::start();
    let config = agent_config(&collector, dir.path(), "T-E2E-OLD", &target, "2.9.7");
    let agent = start_agent(dir.path(), "agent-old", &config);
    let found = wait_for(Duration::from_secs(15), || {
        let codes = collector.finding_codes("T-E2E-OLD");
        (!codes.is_empty()).then_some(codes)
    });
    let codes = found.unwrap_or_else(|| panic!("no finding; agent log:\n{}", agent.log()));
    assert_eq!(codes, ["outdated.pos_app"]);
    let findings = collector.get_json("/api/v1/findings?category=outdated");
    assert_eq!(findings["findings"][0]["party"], "software_vendor");
    assert_eq!(findings["findings"][0]["evidence"][0]["value"], "2.9.7");
    assert_eq!(
        findings["findings"][0]["evidence"][0]["threshold"],
        ">= 2.10"
    );
    let metrics = collector.metrics();
    assert!(
        !metrics.contains("terminal_id="),
        "per-terminal series are off by default"
    );
}

#[test]
fn the_sequence_survives_an_agent_restart() {
    let dir = tempfile::tempdir().unwrap_or_else(|error| panic!("{error}"));
    let collector = Collector::start(dir.path(), "");
    let target = TargetServer::start();
    let config = agent_config(&collector, dir.path(), "T-E2E-SEQ", &target, "3.0");
    let sequence = || collector.get_json("/api/v1/terminals/T-E2E-SEQ")["sequence"].as_u64();
    let mut agent = start_agent(dir.path(), "agent-seq", &config);
    let first = wait_for(Duration::from_secs(15), || sequence().filter(|s| *s >= 2));
    let first = first.unwrap_or_else(|| panic!("no reports; log:\n{}", agent.log()));
    agent.kill();
    let agent = start_agent(dir.path(), "agent-seq-2", &config);
    let later = wait_for(Duration::from_secs(15), || {
        sequence().filter(|s| *s > first)
    });
    assert!(
        later.is_some(),
        "reports after the restart were not applied; log:\n{}",
        agent.log()
    );
}
