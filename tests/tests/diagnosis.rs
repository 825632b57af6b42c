//! Diagnosis across the fleet and over time, against the real collector binary: a host outage
//! seen by many terminals at once, and a restart after SIGKILL.

use std::path::Path;
use std::time::Duration;

use posmon_e2e_tests::{wait_for, Collector};
use posmon_protocol::{terminal_token, FleetKey};
use serde_json::{json, Value};

const SECRET: &str = "an end-to-end test fleet secret";
const PAYMENT_HOST: &str = "pay.acquirer.test:443";

/// Starts a collector whose fleet secret the test knows, so that it can sign for hundreds of
/// simulated terminals.
fn start(dir: &Path, extra: &str) -> Collector {
    let secret_file = dir.join("fleet-secret");
    std::fs::write(&secret_file, SECRET).unwrap_or_else(|error| panic!("{error}"));
    Collector::start(
        dir,
        &format!(
            "[auth]\nsecret_file = {:?}\n\n[diagnosis]\nevaluation_interval_seconds = 1\n{extra}",
            secret_file.display().to_string()
        ),
    )
}

fn token(terminal_id: &str) -> String {
    let key =
        FleetKey::new("k1", SECRET.as_bytes().to_vec()).unwrap_or_else(|error| panic!("{error}"));
    terminal_token(&key, terminal_id)
}

#[derive(Clone, Copy)]
enum Ladder {
    Healthy,
    HostRefuses,
    GatewayDown,
}

fn report(terminal_id: &str, sequence: u64, region: &str, path: Ladder) -> Value {
    let stages = match path {
        Ladder::Healthy => json!([
            { "stage": "gateway", "status": "ok", "attempts": 3, "successes": 3 },
            { "stage": "tcp", "status": "ok", "latency_ms": { "min": 30.0, "avg": 35.0, "max": 41.0 } },
        ]),
        Ladder::HostRefuses => json!([
            { "stage": "gateway", "status": "ok", "attempts": 3, "successes": 3 },
            { "stage": "tcp", "status": "failed", "error": "timeout" },
        ]),
        Ladder::GatewayDown => json!([
            { "stage": "gateway", "status": "failed", "error": "timeout", "attempts": 3 },
        ]),
    };
    json!({
        "schema_version": 1,
        "terminal_id": terminal_id,
        "sequence": sequence,
        "observed_at": format!("{}T02:{:02}:00Z", posmon_e2e_tests::recent_day(), sequence % 60),
        "agent_version": "0.1.0",
        "labels": { "model": "PAX-A920", "region": region, "carrier": "china-mobile" },
        "software": { "pos_app": { "version": "2.9.1" } },
        "probes": [ { "target": "payment-host", "address": PAYMENT_HOST, "stages": stages } ]
    })
}

fn post(client: &reqwest::blocking::Client, collector: &Collector, reports: Vec<Value>) -> Value {
    let terminal_id = reports[0]["terminal_id"]
        .as_str()
        .unwrap_or_else(|| panic!("missing"))
        .to_string();
    let response = client
        .post(format!("{}/api/v1/reports", collector.url))
        .bearer_auth(token(&terminal_id))
        .json(&json!({ "reports": reports }))
        .send()
        .unwrap_or_else(|error| panic!("{error}"));
    assert!(
        response.status().is_success(),
        "{}",
        response.text().unwrap_or_else(|error| panic!("{error}"))
    );
    response.json().unwrap_or_else(|error| panic!("{error}"))
}

fn findings(collector: &Collector, query: &str) -> Vec<Value> {
    collector.get_json(&format!("/api/v1/findings?{query}"))["findings"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

#[test]
fn a_host_outage_opens_one_fleet_finding_and_suppresses_the_terminal_ones() {
    let dir = tempfile::tempdir().unwrap();
    let collector = start(dir.path(), "");
    let client = reqwest::blocking::Client::new();
    let terminals: Vec<(String, &str)> = (0..200)
        .map(|index| {
            let region = ["cn-east", "cn-north", "cn-south", "cn-west"][index % 4];
            (format!("T-{index:03}"), region)
        })
        .collect();
    // 40 % lose the payment host together; ten others have their own router down.
    let path_of = |index: usize| match index {
        0..80 => Ladder::HostRefuses,
        190..200 => Ladder::GatewayDown,
        _ => Ladder::Healthy,
    };
    for (id, region) in &terminals {
        post(
            &client,
            &collector,
            vec![report(id, 1, region, Ladder::Healthy)],
        );
    }
    for (index, (id, region)) in terminals.iter().enumerate() {
        // Two cycles each: one failed cycle opens nothing.
        let path = path_of(index);
        post(&client, &collector, vec![report(id, 2, region, path)]);
        post(&client, &collector, vec![report(id, 3, region, path)]);
    }

    let outage = wait_for(Duration::from_secs(10), || {
        let open = findings(&collector, "code=upstream.host_outage");
        (open.first().is_some_and(|f| f["explains"] == 80)).then_some(open)
    })
    .unwrap_or_else(|| {
        panic!(
            "no outage explaining 80 findings; log:\n{}",
            collector.process.log()
        )
    });
    assert_eq!(outage.len(), 1, "exactly one host outage: {outage:?}");
    let outage = &outage[0];
    // 40 % of every region: the host itself, not a region.
    assert_eq!(outage["subject"], "target=payment-host");
    assert_eq!(outage["party"], "acquirer");
    assert_eq!(outage["category"], "upstream");
    assert!(outage.get("terminal_id").is_none());
    assert!(
        outage["evidence"].to_string().contains("\"80\""),
        "{outage}"
    );

    // The per-terminal host findings are suppressed: not listed, but kept and pointing at it.
    assert_eq!(
        findings(&collector, "code=env.network.host_unreachable").len(),
        0
    );
    let suppressed = findings(
        &collector,
        "code=env.network.host_unreachable&suppressed=only",
    );
    assert_eq!(suppressed.len(), 80);
    assert!(suppressed
        .iter()
        .all(|f| f["suppressed_by"] == outage["id"]));
    let detail = collector.get_json("/api/v1/terminals/T-000");
    assert_eq!(
        detail["readiness"], "cannot_pay",
        "explained by the host's outage, it still cannot take payments"
    );
    assert_eq!(detail["open_findings"][0]["suppressed_by"], outage["id"]);

    // Genuine local faults keep their own findings.
    let gateway = findings(&collector, "code=env.network.gateway_unreachable");
    assert_eq!(gateway.len(), 10);
    assert!(gateway.iter().all(|f| f.get("suppressed_by").is_none()));
    assert_eq!(
        findings(&collector, "code=upstream.carrier_outage").len(),
        0
    );
    let fleet = collector.get_json("/api/v1/fleet");
    assert_eq!(fleet["findings"]["code"]["upstream.host_outage"], 1);
    assert_eq!(
        fleet["findings"]["code"]["env.network.gateway_unreachable"],
        10
    );
    assert!(fleet["findings"]["code"]
        .get("env.network.host_unreachable")
        .is_none());
    let metrics = collector.metrics();
    assert!(
        metrics.contains("posmon_findings_open{category=\"upstream\",code=\"upstream.host_outage\",party=\"acquirer\",severity=\"critical\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("posmon_findings_suppressed 80"),
        "{metrics}"
    );

    // The host comes back: the terminal findings close, then the outage.
    for (id, region) in terminals.iter().take(80) {
        post(
            &client,
            &collector,
            vec![report(id, 4, region, Ladder::Healthy)],
        );
        post(
            &client,
            &collector,
            vec![report(id, 5, region, Ladder::Healthy)],
        );
    }
    assert_eq!(
        findings(
            &collector,
            "code=env.network.host_unreachable&suppressed=include"
        )
        .len(),
        0
    );
    let closed = wait_for(Duration::from_secs(10), || {
        findings(&collector, "code=upstream.host_outage")
            .is_empty()
            .then_some(())
    });
    assert!(closed.is_some(), "the outage did not close");
}

#[test]
fn findings_and_history_are_the_same_after_sigkill_and_restart() {
    let dir = tempfile::tempdir().unwrap();
    let policy = "\n[[version_policy]]\ncomponent = \"pos_app\"\nminimum = \"3.0\"\n";
    let collector = start(dir.path(), policy);
    let client = reqwest::blocking::Client::new();
    // T-A: host down now. T-B: an outage that opened and closed (history). Both outdated.
    post(
        &client,
        &collector,
        vec![
            report("T-A", 1, "cn-east", Ladder::HostRefuses),
            report("T-A", 2, "cn-east", Ladder::HostRefuses),
        ],
    );
    for (sequence, path) in [
        (1, Ladder::GatewayDown),
        (2, Ladder::GatewayDown),
        (3, Ladder::Healthy),
        (4, Ladder::Healthy),
    ] {
        post(
            &client,
            &collector,
            vec![report("T-B", sequence, "cn-north", path)],
        );
    }
    let snapshot = |collector: &Collector| {
        [
            "/api/v1/findings?suppressed=include",
            "/api/v1/terminals/T-A",
            "/api/v1/terminals/T-B",
            "/api/v1/terminals",
            "/api/v1/fleet",
        ]
        .map(|path| collector.get_json(path))
    };
    let before = snapshot(&collector);
    assert_eq!(
        before[2]["findings_history"][0]["code"],
        "env.network.gateway_unreachable"
    );
    assert_eq!(before[0]["findings"].as_array().map(Vec::len), Some(3));
    // The writer writes every second: wait for it, then kill without a chance to flush.
    std::thread::sleep(Duration::from_millis(2500));
    let mut collector = collector;
    collector.process.kill();
    drop(collector);

    let collector = start(dir.path(), policy);
    let after = snapshot(&collector);
    for (before, after) in before.iter().zip(&after) {
        assert_eq!(before, after);
    }
    // Sequences survived: a repeat is a duplicate; ids keep growing.
    let ack = post(
        &client,
        &collector,
        vec![report("T-A", 2, "cn-east", Ladder::Healthy)],
    );
    assert_eq!(ack["acknowledged_sequence"], 2);
    post(
        &client,
        &collector,
        vec![report("T-C", 1, "cn-east", Ladder::GatewayDown)],
    );
    post(
        &client,
        &collector,
        vec![report("T-C", 2, "cn-east", Ladder::GatewayDown)],
    );
    let highest_before = before[0]["findings"]
        .as_array()
        .into_iter()
        .flatten()
        .chain(
            before[2]["findings_history"]
                .as_array()
                .into_iter()
                .flatten(),
        )
        .filter_map(|f| f["id"].as_u64())
        .max()
        .unwrap();
    let new = findings(
        &collector,
        "terminal=T-C&code=env.network.gateway_unreachable",
    );
    assert!(new[0]["id"].as_u64().unwrap() > highest_before, "{new:?}");
}
