//! Old and new agents against one new collector (issue 17): agents from before the data plan
//! (played by the simulator, which sends what they sent: gzip JSON batches over HTTP, every
//! section in every report, no heartbeat, no data usage) beside a new agent (report datagrams,
//! heartbeats, its data usage). Both kinds are taken, their findings open and close as before.

use std::time::Duration;

use posmon_e2e_tests::{quick_agent_config, start_agent, wait_for, Collector, TargetServer};
use serde_json::Value;

const NEW: &str = "T-NEW-1";
const OLD_TERMINALS: u64 = 20;
const REFUSED: &str = "env.network.host_refused";

fn terminal(collector: &Collector, terminal_id: &str) -> Value {
    collector.get_json(&format!("/api/v1/terminals/{terminal_id}"))
}

#[test]
fn old_and_new_agents_report_to_one_collector() {
    let dir = tempfile::tempdir().unwrap_or_else(|error| panic!("{error}"));
    let collector = Collector::start(dir.path(), "");
    let mut target = TargetServer::start();
    // Heartbeats every 2 s once nothing changes; the cheap probe every second.
    let config = quick_agent_config(
        &collector.url,
        &collector.token(NEW),
        dir.path(),
        NEW,
        &target,
        2,
        "",
    );
    let agent = start_agent(dir.path(), "agent-new", &config);

    // The old agents: 20 terminals, each reporting about once a second for 6 s.
    let old = collector
        .simulator(dir.path())
        .args(["--terminals", &OLD_TERMINALS.to_string(), "--rate", "20"])
        .args(["--duration-seconds", "6", "--json", "--id-prefix", "OLD-"])
        .output()
        .unwrap_or_else(|error| panic!("cannot run the simulator: {error}"));
    assert!(
        old.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&old.stdout),
        String::from_utf8_lossy(&old.stderr)
    );
    let summary: Value = serde_json::from_slice(&old.stdout)
        .unwrap_or_else(|error| panic!("simulator output: {error}"));
    assert_eq!(
        summary["reports_accepted"], summary["reports_sent"],
        "every old report was taken: {summary}"
    );
    assert_eq!(summary["transport_errors"], 0, "{summary}");
    let list = collector.get_json("/api/v1/terminals?limit=100");
    let old_terminals: Vec<&Value> = list["terminals"]
        .as_array()
        .map(|terminals| {
            terminals
                .iter()
                .filter(|terminal| {
                    terminal["terminal_id"]
                        .as_str()
                        .is_some_and(|id| id.starts_with("OLD-"))
                })
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(old_terminals.len() as u64, OLD_TERMINALS, "{list}");
    for old_terminal in &old_terminals {
        assert!(
            old_terminal.get("data_usage").is_none(),
            "an old agent reports no usage: {old_terminal}"
        );
    }

    // The new agent: its reports came by datagram, heartbeats among them, with its usage.
    let heard = wait_for(Duration::from_secs(30), || {
        let view = terminal(&collector, NEW);
        (view["sequence"].as_u64() >= Some(6)
            && view["data_usage"]["total_bytes"].as_u64() > Some(0))
        .then_some(view)
    });
    let view = heard.unwrap_or_else(|| {
        panic!(
            "the new agent was not heard: {}\n{}",
            terminal(&collector, NEW),
            agent.log()
        )
    });
    assert_eq!(view["readiness"], "can_pay", "{view}");
    assert!(
        collector.metric("posmon_ingest_datagrams_acknowledged_total") > 0.0,
        "the new agent's reports came by datagram"
    );
    assert!(
        agent.log().contains("heartbeat=true"),
        "the new agent sent heartbeats:\n{}",
        agent.log()
    );

    // Its findings open and close through heartbeats as before.
    target.close();
    let opened = wait_for(Duration::from_secs(20), || {
        collector
            .finding_codes(NEW)
            .iter()
            .any(|code| code == REFUSED)
            .then_some(())
    });
    assert!(opened.is_some(), "no {REFUSED}:\n{}", agent.log());
    target.reopen();
    let closed = wait_for(Duration::from_secs(30), || {
        collector.finding_codes(NEW).is_empty().then_some(())
    });
    assert!(
        closed.is_some(),
        "still open: {:?}\n{}",
        collector.finding_codes(NEW),
        agent.log()
    );
}
