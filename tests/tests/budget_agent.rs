//! A real agent on a data budget far too small for its schedule (64 KiB a month against probes and reports every 2 s) (issue 17): it stretches its
//! cheap probes and heartbeats up to its cap and announces the stretched schedule, and a fault
//! is still reported within the bound the cap sets; its usage reaches the collector.

use std::time::{Duration, Instant};

use posmon_e2e_tests::{healthy_system_root, start_agent, wait_for, Collector, TargetServer};

const TERMINAL: &str = "T-BUDGET-1";
/// The configured cheap-probe and report interval, seconds.
const INTERVAL_SECONDS: u64 = 2;
/// The stretch cap, percent: the probes and heartbeats come at most every 4 × 2 = 8 s.
const MAX_STRETCH_PERCENT: u64 = 400;
/// The finding a refused connection opens.
const REFUSED: &str = "env.network.host_refused";

#[test]
fn a_tiny_budget_stretches_the_schedule_and_a_fault_is_still_reported_within_the_bound() {
    let dir = tempfile::tempdir().unwrap_or_else(|error| panic!("{error}"));
    let collector = Collector::start(dir.path(), "");
    let mut target = TargetServer::start();
    let root = healthy_system_root(dir.path());
    // The passive watch is off: the fault must be found by the stretched cheap probes alone,
    // the slowest path the budget governs.
    let config = format!(
        r#"
terminal_id = "{TERMINAL}"
collector_url = "{url}"
token = "{token}"
state_dir = "{state}"
system_root = "{root}"
report_interval_seconds = {INTERVAL_SECONDS}
probe_interval_seconds = {INTERVAL_SECONDS}
failing_probe_interval_seconds = {INTERVAL_SECONDS}
check_interval_seconds = 1
watch_interval_seconds = 0
probe_timeout_seconds = 1
data_budget_bytes_per_month = 65536
data_budget_max_stretch_percent = {MAX_STRETCH_PERCENT}

[[targets]]
name = "payment-host"
address = "{target}"
"#,
        url = collector.url,
        token = collector.token(TERMINAL),
        state = dir.path().join("state").display(),
        root = root.display(),
        target = target.address,
    );
    let agent = start_agent(dir.path(), "agent", &config);

    // The budget is spent by the first reports: the agent stretches to its cap and says so,
    // with the schedule the collector now judges its silence by.
    let stretched = wait_for(Duration::from_secs(60), || {
        let terminal = collector.get_json(&format!("/api/v1/terminals/{TERMINAL}"));
        let stretch = terminal["data_usage"]["stretch_percent"].as_u64()?;
        let report_seconds = terminal["intervals"]["report_seconds"].as_u64()?;
        (stretch == MAX_STRETCH_PERCENT).then_some((terminal.clone(), report_seconds))
    });
    let (terminal, report_seconds) = stretched.unwrap_or_else(|| {
        panic!(
            "the agent never stretched to its cap; terminal: {}\nagent log:\n{}",
            collector.get_json(&format!("/api/v1/terminals/{TERMINAL}")),
            agent.log()
        )
    });
    assert_eq!(
        report_seconds,
        INTERVAL_SECONDS * MAX_STRETCH_PERCENT / 100,
        "the stretched schedule is announced: {terminal}"
    );
    assert_eq!(terminal["data_usage"]["budget_bytes"], 65536);
    assert_eq!(terminal["data_usage"]["near_budget"], true);
    assert!(
        terminal["data_usage"]["total_bytes"].as_u64() > Some(0),
        "the usage reaches the collector: {terminal}"
    );
    assert!(collector.finding_codes(TERMINAL).is_empty());

    // A fault on the payment path is still found by the stretched probe, confirmed and open
    // within the bound: one stretched probe interval, the confirming cycle, slack for the test.
    target.close();
    let broke = Instant::now();
    let bound = Duration::from_secs(INTERVAL_SECONDS * MAX_STRETCH_PERCENT / 100 + 3 + 6);
    let opened = wait_for(bound, || {
        collector
            .finding_codes(TERMINAL)
            .iter()
            .any(|code| code == REFUSED)
            .then(|| broke.elapsed())
    });
    let took = opened.unwrap_or_else(|| {
        panic!(
            "{REFUSED} not open within {bound:?} of the fault; findings {:?}; agent log:\n{}",
            collector.finding_codes(TERMINAL),
            agent.log()
        )
    });
    eprintln!("the fault was reported {took:?} after it began, the schedule stretched 4×");
}
