//! Store-and-forward delivery end to end, with the real binaries: reports survive SIGKILL at
//! any instant and collector outages, arrive exactly once and in order, a full spool drops the
//! oldest and says how many, and HTTPS works with a private CA (and fails clearly without it).

#![allow(
    clippy::unwrap_used,
    reason = "test helpers: a failed unwrap fails the test, as it should"
)]

use std::path::Path;
use std::time::Duration;

use posmon_e2e_tests::{
    highest_spooled, quick_agent_config, start_agent, wait_for, Collector, Pki, Process,
    TargetServer,
};

fn agent_config(
    collector_url: &str,
    token: &str,
    dir: &Path,
    terminal_id: &str,
    target: &TargetServer,
    extra: &str,
) -> String {
    quick_agent_config(collector_url, token, dir, terminal_id, target, 1, extra)
}

/// The collector's view of a terminal: (highest sequence, dropped reports).
fn terminal(collector: &Collector, terminal_id: &str) -> Option<(u64, u64)> {
    let detail = collector.get_json(&format!("/api/v1/terminals/{terminal_id}"));
    Some((
        detail["sequence"].as_u64()?,
        detail["dropped_reports"].as_u64()?,
    ))
}

fn applied_reports(collector: &Collector) -> u64 {
    collector
        .metrics()
        .lines()
        .find_map(|line| line.strip_prefix("posmon_ingest_reports_total{result=\"applied\"} "))
        .and_then(|value| value.parse().ok())
        .unwrap_or(0)
}

#[test]
fn every_spooled_report_arrives_exactly_once_across_100_sigkills() {
    let dir = tempfile::tempdir().unwrap();
    let target = TargetServer::start();
    let mut collector = Collector::start(dir.path(), "");
    let listen = format!("127.0.0.1:{}", collector.port());
    let url = collector.url.clone();
    let config = agent_config(
        &url,
        &collector.token("T-KILL"),
        dir.path(),
        "T-KILL",
        &target,
        "",
    );
    // The collector is down while the agent is killed again and again: reports pile up.
    collector.process.kill();

    let mut state = 0x2545_f491_4f6c_dd1du64;
    for round in 0..100 {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let mut agent = start_agent(dir.path(), "agent-kill", &config);
        std::thread::sleep(Duration::from_millis(state % 400));
        // Still running: it opened its spool (whatever the previous kill left) and went on.
        let exited = agent.exited();
        assert!(
            exited.is_none(),
            "round {round}: the agent stopped ({exited:?}):\n{}",
            agent.log()
        );
        agent.kill();
    }
    let spooled = highest_spooled(&dir.path().join("T-KILL-state/spool"));
    assert!(
        spooled >= 50,
        "heavy spooling: only {spooled} reports in 100 runs"
    );

    // The spool opens again, and everything in it reaches the collector once, in order.
    let collector = Collector::start_at(dir.path(), "", &listen);
    let mut agent = start_agent(dir.path(), "agent-final", &config);
    let delivered = wait_for(Duration::from_secs(60), || {
        terminal(&collector, "T-KILL").filter(|(sequence, _)| *sequence >= spooled)
    });
    assert!(
        delivered.is_some(),
        "not all {spooled} reports arrived; agent log:\n{}",
        agent.log()
    );
    agent.kill();
    std::thread::sleep(Duration::from_millis(300));
    let (highest, dropped) = terminal(&collector, "T-KILL").unwrap();
    assert_eq!(dropped, 0);
    // Only a sequence above the highest held is applied, so applied == highest means every
    // number from 1 arrived, and none was applied twice.
    assert_eq!(
        applied_reports(&collector),
        highest,
        "reports lost or applied twice"
    );
}

#[test]
fn an_outage_delays_reports_but_loses_none_and_a_full_spool_drops_the_oldest() {
    let dir = tempfile::tempdir().unwrap();
    let target = TargetServer::start();
    let mut collector = Collector::start(dir.path(), "");
    let listen = format!("127.0.0.1:{}", collector.port());
    let url = collector.url.clone();
    let roomy = agent_config(
        &url,
        &collector.token("T-ROOMY"),
        dir.path(),
        "T-ROOMY",
        &target,
        "",
    );
    let small = agent_config(
        &url,
        &collector.token("T-SMALL"),
        dir.path(),
        "T-SMALL",
        &target,
        "spool_max_bytes = 4096",
    );
    let agents = [
        start_agent(dir.path(), "agent-roomy", &roomy),
        start_agent(dir.path(), "agent-small", &small),
    ];
    let running = wait_for(Duration::from_secs(20), || {
        terminal(&collector, "T-ROOMY").filter(|(sequence, _)| *sequence >= 2)?;
        terminal(&collector, "T-SMALL").filter(|(sequence, _)| *sequence >= 2)
    });
    assert!(running.is_some(), "no reports; log:\n{}", agents[0].log());

    // Pause the agents to read the collector's count at a quiet moment, then stop it.
    let pause = |name: &str| {
        for agent in &agents {
            agent.signal(name);
        }
        std::thread::sleep(Duration::from_millis(300));
    };
    pause("STOP");
    let applied_first_run = applied_reports(&collector);
    let (roomy_before, _) = terminal(&collector, "T-ROOMY").unwrap();
    assert!(collector.process.terminate().success());
    pause("CONT");
    std::thread::sleep(Duration::from_secs(15));
    let collector = Collector::start_at(dir.path(), "", &listen);

    // Every report of the outage arrives, in order.
    let caught_up = wait_for(Duration::from_secs(30), || {
        terminal(&collector, "T-ROOMY").filter(|(sequence, _)| *sequence >= roomy_before + 12)
    });
    assert!(
        caught_up.is_some(),
        "the outage's reports did not arrive; log:\n{}",
        agents[0].log()
    );
    // The small spool kept only the newest: the others are counted as dropped, and the count
    // reached the collector.
    let dropped = wait_for(Duration::from_secs(30), || {
        terminal(&collector, "T-SMALL").filter(|(_, dropped)| *dropped >= 3)
    });
    assert!(
        dropped.is_some(),
        "no drop count arrived; log:\n{}",
        agents[1].log()
    );

    pause("STOP");
    let (roomy_highest, roomy_dropped) = terminal(&collector, "T-ROOMY").unwrap();
    let (small_highest, small_dropped) = terminal(&collector, "T-SMALL").unwrap();
    assert_eq!(roomy_dropped, 0);
    // Each number from 1 was applied exactly once, or dropped and counted: an applied report
    // must be above the highest held, so a lost or repeated one would break the sum.
    assert_eq!(
        applied_first_run + applied_reports(&collector),
        roomy_highest + small_highest - small_dropped,
        "reports lost, or applied twice"
    );
}

#[test]
fn https_with_a_private_ca_and_client_certificates() {
    let dir = tempfile::tempdir().unwrap();
    let server_pki = Pki::new("posmon test server CA");
    let client_pki = Pki::new("posmon test terminal CA");
    let (server_cert, server_key) = server_pki.leaf_pem(&["127.0.0.1", "localhost"]);
    let (client_cert, client_key) = client_pki.leaf_pem(&["T-TLS"]);
    let write = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    };
    let server_cert = write("server.crt", &server_cert);
    let server_key = write("server.key", &server_key);
    let client_cert = write("client.crt", &client_cert);
    let client_key = write("client.key", &client_key);
    server_pki.write_ca(&dir.path().join("server-ca.crt"));
    client_pki.write_ca(&dir.path().join("client-ca.crt"));
    let wrong_pki = Pki::new("somebody else's CA");
    wrong_pki.write_ca(&dir.path().join("wrong-ca.crt"));
    let server_ca = dir.path().join("server-ca.crt").display().to_string();

    let collector = Collector::start(
        dir.path(),
        &format!(
            "[tls]\ncert_file = \"{server_cert}\"\nkey_file = \"{server_key}\"\nclient_ca_file = \"{}\"\n",
            dir.path().join("client-ca.crt").display()
        ),
    );
    assert!(collector.url.starts_with("https://"), "{}", collector.url);
    let target = TargetServer::start();
    let tls = format!("collector_ca_file = \"{server_ca}\"\nclient_cert_file = \"{client_cert}\"\nclient_key_file = \"{client_key}\"");
    let good = agent_config(
        &collector.url,
        &collector.token("T-TLS"),
        dir.path(),
        "T-TLS",
        &target,
        &tls,
    );
    let wrong_ca = agent_config(
        &collector.url,
        &collector.token("T-WRONG-CA"),
        dir.path(),
        "T-WRONG-CA",
        &target,
        &format!("collector_ca_file = \"{}\"\nclient_cert_file = \"{client_cert}\"\nclient_key_file = \"{client_key}\"", dir.path().join("wrong-ca.crt").display()),
    );
    let no_client_cert = agent_config(
        &collector.url,
        &collector.token("T-NO-CERT"),
        dir.path(),
        "T-NO-CERT",
        &target,
        &format!("collector_ca_file = \"{server_ca}\""),
    );
    let good_agent = start_agent(dir.path(), "agent-tls", &good);
    let wrong_agent = start_agent(dir.path(), "agent-wrong-ca", &wrong_ca);
    let anonymous_agent = start_agent(dir.path(), "agent-no-cert", &no_client_cert);

    let client = reqwest::blocking::Client::builder()
        .add_root_certificate(
            reqwest::Certificate::from_pem(&std::fs::read(&server_ca).unwrap()).unwrap(),
        )
        .identity(
            reqwest::Identity::from_pem(
                format!(
                    "{}\n{}",
                    std::fs::read_to_string(&client_cert).unwrap(),
                    std::fs::read_to_string(&client_key).unwrap()
                )
                .as_bytes(),
            )
            .unwrap(),
        )
        .build()
        .unwrap();
    let known = |terminal_id: &str| {
        client
            .get(format!("{}/api/v1/terminals/{terminal_id}", collector.url))
            .send()
            .ok()
            .filter(|response| response.status().is_success())
            .is_some()
    };
    let delivered = wait_for(Duration::from_secs(20), || known("T-TLS").then_some(()));
    assert!(
        delivered.is_some(),
        "no delivery over HTTPS; log:\n{}",
        good_agent.log()
    );

    // Without the right CA, or without a client certificate, nothing is delivered, and the
    // agent's log says why in words an operator can act on.
    let said = |agent: &Process, words: &[&str]| {
        wait_for(Duration::from_secs(10), || {
            let log = agent.log();
            words.iter().any(|word| log.contains(word)).then_some(())
        })
        .is_some()
    };
    assert!(
        said(&wrong_agent, &["UnknownIssuer", "unknown issuer"]),
        "{}",
        wrong_agent.log()
    );
    assert!(
        said(
            &anonymous_agent,
            &["CertificateRequired", "certificate required", "handshake"]
        ),
        "{}",
        anonymous_agent.log()
    );
    assert!(!known("T-WRONG-CA") && !known("T-NO-CERT"));
}
