//! Report datagrams end to end, with the real binaries on loopback: an agent's reports arrive
//! by datagram and their acknowledgements come back, so its spool drains; against a collector
//! with datagrams turned off, the agent falls back to HTTPS and loses nothing; and hostile
//! datagrams (garbage, truncated, under a wrong key, oversized, replayed, a flood) get no
//! answer, hurt neither the collector nor the terminals that report beside them.

#![allow(
    clippy::unwrap_used,
    reason = "test helpers: a failed unwrap fails the test, as it should"
)]

use std::net::UdpSocket;
use std::path::Path;
use std::time::{Duration, Instant};

use posmon_e2e_tests::{
    highest_spooled, quick_agent_config, start_agent, wait_for, Collector, Process, TargetServer,
};
use posmon_protocol::datagram::{
    open_answer, parse_report, seal_report, Answer, DatagramKey, ReportHeader, NONCE_BYTES,
};

/// A metric's value (the sum over its label sets when `labels` is empty).
fn metric(collector: &Collector, name: &str, labels: &str) -> u64 {
    let prefix = format!("{name}{labels} ");
    collector
        .metrics()
        .lines()
        .filter(|line| {
            line.starts_with(&prefix)
                || (labels.is_empty() && line.starts_with(&format!("{name}{{")))
        })
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .map(|value| value as u64)
        .sum()
}

fn sequence(collector: &Collector, terminal_id: &str) -> u64 {
    collector.get_json(&format!("/api/v1/terminals/{terminal_id}"))["sequence"]
        .as_u64()
        .unwrap_or(0)
}

fn agent(dir: &Path, collector: &Collector, terminal_id: &str, target: &TargetServer) -> Process {
    let config = quick_agent_config(
        &collector.url,
        &collector.token(terminal_id),
        dir,
        terminal_id,
        target,
        1,
        "",
    );
    start_agent(dir, terminal_id, &config)
}

/// Waits until the collector holds `at_least` reports of the terminal and its agent's spool
/// holds nothing it has not acknowledged.
fn drained(collector: &Collector, dir: &Path, terminal_id: &str, at_least: u64) -> bool {
    wait_for(Duration::from_secs(30), || {
        let held = sequence(collector, terminal_id);
        let spooled = highest_spooled(&dir.join(format!("{terminal_id}-state/spool")));
        (held >= at_least && held >= spooled).then_some(())
    })
    .is_some()
}

#[test]
fn reports_arrive_by_datagram_and_acknowledgements_drain_the_spool() {
    let dir = tempfile::tempdir().unwrap();
    let target = TargetServer::start();
    let collector = Collector::start(dir.path(), "");
    let mut agent = agent(dir.path(), &collector, "T-DGRAM", &target);
    let acknowledged = wait_for(Duration::from_secs(30), || {
        let count = metric(&collector, "posmon_ingest_datagrams_acknowledged_total", "");
        (count >= 5).then_some(count)
    });
    assert!(
        acknowledged.is_some(),
        "no datagrams acknowledged; agent log:\n{}\ncollector log:\n{}",
        agent.log(),
        collector.process.log()
    );
    assert!(
        drained(&collector, dir.path(), "T-DGRAM", 6),
        "{}",
        agent.log()
    );
    // The first report (a new agent instance) came by HTTPS; the rest by datagram.
    let https = metric(
        &collector,
        "posmon_ingest_request_duration_seconds_count",
        "",
    );
    let held = sequence(&collector, "T-DGRAM");
    assert!(https <= 2, "{https} HTTPS requests for {held} reports");
    assert_eq!(
        metric(
            &collector,
            "posmon_ingest_reports_total",
            "{result=\"applied\"}"
        ),
        held,
        "every report applied once"
    );
    agent.kill();
    assert!(!collector.process.log().contains("panicked"));
}

#[test]
fn without_datagrams_the_agent_falls_back_to_https_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let target = TargetServer::start();
    let collector = Collector::start(dir.path(), "[datagram]\nenabled = false\n");
    let mut agent = agent(dir.path(), &collector, "T-HTTPS", &target);
    assert!(
        drained(&collector, dir.path(), "T-HTTPS", 5),
        "{}",
        agent.log()
    );
    agent.kill();
    let held = sequence(&collector, "T-HTTPS");
    assert_eq!(
        metric(&collector, "posmon_ingest_datagrams_received_total", ""),
        0
    );
    assert_eq!(
        metric(
            &collector,
            "posmon_ingest_reports_total",
            "{result=\"applied\"}"
        ),
        held,
        "reports lost or applied twice"
    );
}

const INSTANCE: &str = "1a2b3c4d-5e6f-4a1b-8c2d-3e4f5a6b7c8d";

/// Sends each datagram from a fresh socket and says whether anything came back.
fn answered(collector: &Collector, datagram: &[u8]) -> Option<Vec<u8>> {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    socket
        .send_to(datagram, ("127.0.0.1", collector.port()))
        .unwrap();
    let mut buffer = vec![0; 2048];
    let length = socket.recv(&mut buffer).ok()?;
    buffer.truncate(length);
    Some(buffer)
}

fn sealed(terminal_id: &str, token: &str, nonce: u8, json: &[u8]) -> Vec<u8> {
    let (key_id, generation) = posmon_protocol::datagram::token_parts(token).unwrap();
    let header = ReportHeader {
        terminal_id: terminal_id.into(),
        key_id,
        generation,
        nonce: [nonce; NONCE_BYTES],
    };
    seal_report(
        &DatagramKey::from_token(token),
        &header,
        Some(INSTANCE),
        json,
    )
    .unwrap()
}

#[test]
fn hostile_datagrams_get_no_answer_and_hurt_no_one() {
    let dir = tempfile::tempdir().unwrap();
    let target = TargetServer::start();
    let collector = Collector::start(dir.path(), "");
    let mut honest = agent(dir.path(), &collector, "T-HONEST", &target);
    assert!(
        drained(&collector, dir.path(), "T-HONEST", 3),
        "{}",
        honest.log()
    );

    let token = collector.token("T-HOSTILE");
    let report = |sequence: u64| {
        serde_json::json!({
            "schema_version": 1,
            "terminal_id": "T-HOSTILE",
            "sequence": sequence,
            "observed_at": time::OffsetDateTime::now_utc().format(&time::format_description::well_known::Rfc3339).unwrap(),
            "agent_version": "0.1.0",
            "agent_instance": INSTANCE,
        })
        .to_string()
    };
    let good = sealed("T-HOSTILE", &token, 1, report(1).as_bytes());
    let mut tampered = good.clone();
    *tampered.last_mut().unwrap() ^= 1;
    let mut forged_terminal = sealed("T-HONEST", &token, 2, report(1).as_bytes());
    forged_terminal[5] = b'X';
    let hostile: Vec<(&str, Vec<u8>)> = vec![
        ("empty", vec![]),
        ("garbage", b"\x00\x01garbage".to_vec()),
        ("http", b"POST /api/v1/reports HTTP/1.1\r\n\r\n".to_vec()),
        ("truncated", good[..good.len() - 20].to_vec()),
        ("header only", good[..30].to_vec()),
        ("tampered", tampered),
        (
            "under another terminal's id",
            sealed("T-HONEST", &token, 3, report(1).as_bytes()),
        ),
        ("forged terminal id", forged_terminal),
        (
            "under a wrong key",
            sealed("T-HOSTILE", "k1.wrong-token", 4, report(1).as_bytes()),
        ),
        ("oversized", vec![b'p'; 1201]),
        ("huge", vec![b'p'; 60_000]),
    ];
    for (name, datagram) in &hostile {
        assert_eq!(answered(&collector, datagram), None, "{name} was answered");
    }
    // An authentic report of an instance the collector does not hold is sent to HTTPS; its
    // resend is refused again; any later copy is a replay, unanswered; none moves anything.
    for _ in 0..2 {
        let answer = answered(&collector, &good).unwrap();
        assert!(answer.len() <= good.len(), "amplification");
        let parsed = parse_report(&good).unwrap();
        let opened = open_answer(
            &DatagramKey::from_token(&token),
            parsed.header_bytes,
            &answer,
        );
        assert!(matches!(opened, Ok(Answer::Refusal(_))), "{opened:?}");
    }
    assert_eq!(answered(&collector, &good), None, "a replay was answered");
    assert_eq!(
        metric(
            &collector,
            "posmon_ingest_datagrams_dropped_total",
            "{reason=\"replayed\"}"
        ),
        1
    );
    assert_eq!(sequence(&collector, "T-HOSTILE"), 0);

    // A flood from many sockets: whatever gets through is dropped or refused; the honest
    // terminal keeps reporting (by datagram, or by HTTPS when the flood crowds it out).
    let before = sequence(&collector, "T-HONEST");
    let started = Instant::now();
    let sockets: Vec<UdpSocket> = (0..8)
        .map(|_| UdpSocket::bind("127.0.0.1:0").unwrap())
        .collect();
    let mut sent = 0_u64;
    while started.elapsed() < Duration::from_secs(3) {
        for (index, socket) in sockets.iter().enumerate() {
            let (_, datagram) = &hostile[index % hostile.len()];
            let _ = socket.send_to(datagram, ("127.0.0.1", collector.port()));
            let _ = socket.send_to(&good, ("127.0.0.1", collector.port()));
            sent += 2;
        }
    }
    assert!(sent > 1000, "only {sent} datagrams sent");
    assert!(
        wait_for(Duration::from_secs(20), || (sequence(
            &collector, "T-HONEST"
        ) >= before + 3)
            .then_some(()))
        .is_some(),
        "the honest terminal stopped reporting; its log:\n{}",
        honest.log()
    );
    assert!(drained(&collector, dir.path(), "T-HONEST", before + 3));
    let received = metric(&collector, "posmon_ingest_datagrams_received_total", "");
    let dropped = metric(&collector, "posmon_ingest_datagrams_dropped_total", "");
    assert!(
        received >= 1000 && dropped > 0,
        "received {received}, dropped {dropped}"
    );
    assert_eq!(sequence(&collector, "T-HOSTILE"), 0);
    honest.kill();
    let collector = collector.restart_healthy(dir.path());
    drop(collector);
}
