//! The network path ladder of the real agent (`posmon-agent probe --once --json`) against
//! servers this test owns on loopback: each broken target must be reported on the right rung
//! with the right error kind, and the rungs after it must not be attempted. Link and gateway
//! come from a fake system root; DNS from a stub resolver on loopback.

// The servers and certificates below are test fixtures: a panic there is the test failing
// (clippy.toml allows unwrap in tests, but does not see helper functions as tests).
#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::{TcpListener, UdpSocket};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use posmon_e2e_tests::{dns_answer, healthy_system_root, ladder_of, probe_once, Pki};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// A DNS stub on loopback: `pay.test` is 127.0.0.1, `broken.test` fails (SERVFAIL), every other
/// name does not exist (NXDOMAIN). Or, `silent`, a resolver that never answers.
fn dns_stub(silent: bool) -> std::net::SocketAddr {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let address = socket.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut buffer = [0u8; 512];
        while let Ok((length, peer)) = socket.recv_from(&mut buffer) {
            if silent {
                continue;
            }
            if let Some(answer) = answer(&buffer[..length]) {
                let _ = socket.send_to(&answer, peer);
            }
        }
    });
    address
}

/// The stub's answer to one query.
fn answer(query: &[u8]) -> Option<Vec<u8>> {
    dns_answer(query, |name, record_type| match (name, record_type) {
        ("pay.test", 1) => (0, vec![[127, 0, 0, 1]]),
        ("pay.test", _) => (0, vec![]),
        ("broken.test", _) => (2, vec![]),
        _ => (3, vec![]),
    })
}

/// Answers every request on a connection with `status`.
fn respond(stream: &mut (impl Read + Write), status: &str) {
    let mut request = Vec::new();
    let mut buffer = [0u8; 1024];
    while !request.windows(4).any(|window| window == b"\r\n\r\n") {
        match stream.read(&mut buffer) {
            Ok(0) | Err(_) => return,
            Ok(read) => request.extend_from_slice(&buffer[..read]),
        }
    }
    let _ = stream.write_all(
        format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").as_bytes(),
    );
    let _ = stream.flush();
}

/// A plain HTTP server answering `status`; returns its port.
fn http_server(status: &'static str) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for mut stream in listener.incoming().map_while(Result::ok) {
            let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
            respond(&mut stream, status);
        }
    });
    port
}

/// An HTTPS server presenting `certificate` and answering 200; returns its port.
fn https_server(certificate: (CertificateDer<'static>, PrivateKeyDer<'static>)) -> u16 {
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![certificate.0], certificate.1)
    .unwrap();
    let config = Arc::new(config);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming().map_while(Result::ok) {
            let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
            let Ok(connection) = rustls::ServerConnection::new(Arc::clone(&config)) else {
                continue;
            };
            let mut tls = rustls::StreamOwned::new(connection, stream);
            respond(&mut tls, "200 OK");
        }
    });
    port
}

/// A port on which nothing listens.
fn closed_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

fn config(root: &Path, dns_servers: &str, targets: &str) -> String {
    format!(
        "terminal_id = \"T-LADDER\"\ncollector_url = \"http://127.0.0.1:9\"\ntoken = \"k1.x\"\n\
         probe_timeout_seconds = 2\nattempts = 2\nsystem_root = {:?}\ndns_servers = {dns_servers}\n{targets}",
        root.display().to_string()
    )
}

fn target(name: &str, address: &str, extra: &str) -> String {
    format!("[[targets]]\nname = \"{name}\"\naddress = \"{address}\"\n{extra}\n")
}

/// (stage, status, error) triples, written short.
fn rungs(expected: &[(&str, &str, &str)]) -> Vec<(String, String, String)> {
    let mut rungs = vec![
        ("link".to_string(), "ok".to_string(), String::new()),
        ("gateway".to_string(), "ok".to_string(), String::new()),
    ];
    rungs.extend(
        expected.iter().map(|(stage, status, error)| {
            (stage.to_string(), status.to_string(), error.to_string())
        }),
    );
    rungs
}

fn stage<'a>(report: &'a serde_json::Value, target: &str, stage: &str) -> &'a serde_json::Value {
    report["probes"]
        .as_array()
        .and_then(|probes| probes.iter().find(|probe| probe["target"] == target))
        .and_then(|probe| probe["stages"].as_array())
        .and_then(|stages| stages.iter().find(|entry| entry["stage"] == stage))
        .unwrap_or_else(|| panic!("no {stage} rung for {target} in {report:#}"))
}

#[test]
fn each_broken_target_fails_on_its_own_rung_with_its_own_error() {
    let dir = tempfile::tempdir().unwrap();
    let root = healthy_system_root(dir.path());
    let resolver = dns_stub(false);
    let pki = Pki::new("posmon test CA");
    let ca_file = dir.path().join("ca.pem");
    pki.write_ca(&ca_file);
    let ca = format!("ca_file = {:?}", ca_file.display().to_string());
    let good = https_server(pki.leaf(&["localhost"], (2024, 1, 1), (2099, 1, 1)));
    let expired = https_server(pki.leaf(&["localhost"], (2020, 1, 1), (2021, 1, 1)));
    let wrong_name = https_server(pki.leaf(&["other.test"], (2024, 1, 1), (2099, 1, 1)));
    let stranger = Pki::new("somebody else's CA");
    let unknown_ca = https_server(stranger.leaf(&["localhost"], (2024, 1, 1), (2099, 1, 1)));
    let unavailable = http_server("503 Service Unavailable");
    let targets = [
        target("good", &format!("https://localhost:{good}/health"), &ca),
        target("closed", &format!("127.0.0.1:{}", closed_port()), ""),
        target("nxdomain", "nx.test:443", ""),
        target("servfail", "broken.test:443", ""),
        target("expired", &format!("https://localhost:{expired}/"), &ca),
        target(
            "unknown-ca",
            &format!("https://localhost:{unknown_ca}/"),
            &ca,
        ),
        target(
            "wrong-name",
            &format!("https://localhost:{wrong_name}/"),
            &ca,
        ),
        target(
            "http-503",
            &format!("http://pay.test:{unavailable}/health"),
            "",
        ),
        target(
            "tls-on-port",
            &format!("localhost:{good}"),
            &format!("tls = true\n{ca}"),
        ),
    ]
    .concat();
    let report = probe_once(
        dir.path(),
        "ladder",
        &config(&root, &format!("[\"{resolver}\"]"), &targets),
        &[],
    );

    let without_icmp = |target: &str| {
        let mut ladder = ladder_of(&report, target);
        ladder.retain(|(stage, _, _)| stage != "icmp");
        ladder
    };
    assert_eq!(
        without_icmp("good"),
        rungs(&[
            ("dns", "ok", ""),
            ("tcp", "ok", ""),
            ("tls", "ok", ""),
            ("http", "ok", "")
        ])
    );
    assert_eq!(
        without_icmp("closed"),
        rungs(&[("tcp", "failed", "refused")])
    );
    assert_eq!(
        without_icmp("nxdomain"),
        rungs(&[("dns", "failed", "nxdomain")])
    );
    assert_eq!(
        without_icmp("servfail"),
        rungs(&[("dns", "failed", "servfail")])
    );
    assert_eq!(
        without_icmp("expired"),
        rungs(&[
            ("dns", "ok", ""),
            ("tcp", "ok", ""),
            ("tls", "failed", "certificate_expired")
        ])
    );
    assert_eq!(
        without_icmp("unknown-ca"),
        rungs(&[
            ("dns", "ok", ""),
            ("tcp", "ok", ""),
            ("tls", "failed", "unknown_ca")
        ])
    );
    assert_eq!(
        without_icmp("wrong-name"),
        rungs(&[
            ("dns", "ok", ""),
            ("tcp", "ok", ""),
            ("tls", "failed", "name_mismatch")
        ])
    );
    assert_eq!(
        without_icmp("http-503"),
        rungs(&[
            ("dns", "ok", ""),
            ("tcp", "ok", ""),
            ("http", "failed", "http_status")
        ])
    );
    assert_eq!(
        without_icmp("tls-on-port"),
        rungs(&[("dns", "ok", ""), ("tcp", "ok", ""), ("tls", "ok", "")])
    );

    // The measurements behind the verdicts.
    let tls = stage(&report, "good", "tls");
    assert!(
        tls["tls_version"]
            .as_str()
            .is_some_and(|version| version.starts_with("TLSv1.")),
        "{tls}"
    );
    assert!(
        tls["certificate_days_left"]
            .as_i64()
            .is_some_and(|days| days > 365),
        "{tls}"
    );
    let http = stage(&report, "good", "http");
    assert_eq!(http["http_status"], 200);
    assert_eq!(
        (http["attempts"].as_u64(), http["successes"].as_u64()),
        (Some(2), Some(2))
    );
    let latency = &http["latency_ms"];
    assert!(
        latency["min"].as_f64() <= latency["avg"].as_f64()
            && latency["avg"].as_f64() <= latency["max"].as_f64(),
        "{http}"
    );
    let expired_days = stage(&report, "expired", "tls")["certificate_days_left"].as_i64();
    assert!(expired_days.is_some_and(|days| days < -365), "{report:#}");
    assert_eq!(stage(&report, "http-503", "http")["http_status"], 503);
    assert_eq!(stage(&report, "closed", "tcp")["successes"], 0);
    assert_eq!(stage(&report, "closed", "tcp")["attempts"], 2);
    assert!(stage(&report, "nxdomain", "dns")["detail"]
        .as_str()
        .is_some_and(|detail| detail.contains("NXDOMAIN")));
    // ICMP to loopback answers where the agent may open an ICMP socket; elsewhere it is
    // unavailable, never failed.
    let icmp = stage(&report, "good", "icmp");
    assert!(
        icmp["status"] == "ok" || icmp["status"] == "unavailable",
        "{icmp}"
    );
}

#[test]
fn a_resolver_that_does_not_answer_times_out_and_none_is_no_resolver() {
    let dir = tempfile::tempdir().unwrap();
    let root = healthy_system_root(dir.path());
    let silent = dns_stub(true);
    let targets = [
        target("pay", "pay.test:443", "attempts = 1"),
        target("local", "localhost:9", "attempts = 1"),
    ]
    .concat();
    let report = probe_once(
        dir.path(),
        "silent",
        &config(&root, &format!("[\"{silent}\"]"), &targets),
        &[],
    );
    assert_eq!(
        ladder_of(&report, "pay"),
        rungs(&[("dns", "failed", "timeout")])
    );
    // /etc/hosts still answers without DNS.
    assert_eq!(
        ladder_of(&report, "local")[2],
        ("dns".to_string(), "ok".to_string(), String::new())
    );

    // resolv.conf of the fake root lists no nameserver, and none is configured.
    let report = probe_once(dir.path(), "none", &config(&root, "[]", &targets), &[]);
    assert_eq!(
        ladder_of(&report, "pay"),
        rungs(&[("dns", "failed", "no_resolver")])
    );
}

#[test]
fn a_broken_link_or_gateway_stops_every_ladder() {
    let dir = tempfile::tempdir().unwrap();
    let root = healthy_system_root(dir.path());
    let targets = [
        target("a", "localhost:9", ""),
        target("b", "127.0.0.1:9", ""),
    ]
    .concat();
    let triple = |stage: &str, status: &str, error: &str| {
        (stage.to_string(), status.to_string(), error.to_string())
    };

    std::fs::write(root.join("sys/class/net/eth0/carrier"), "0\n").unwrap();
    let report = probe_once(
        dir.path(),
        "no-carrier",
        &config(&root, "[]", &targets),
        &[],
    );
    for name in ["a", "b"] {
        assert_eq!(
            ladder_of(&report, name),
            vec![triple("link", "failed", "no_carrier")]
        );
    }

    std::fs::write(root.join("sys/class/net/eth0/carrier"), "1\n").unwrap();
    let arp = std::fs::read_to_string(root.join("proc/net/arp"))
        .unwrap()
        .replace("0x2 ", "0x0 ");
    std::fs::write(root.join("proc/net/arp"), arp).unwrap();
    let report = probe_once(
        dir.path(),
        "no-gateway",
        &config(&root, "[]", &targets),
        &[],
    );
    for name in ["a", "b"] {
        assert_eq!(
            ladder_of(&report, name),
            vec![
                triple("link", "ok", ""),
                triple("gateway", "failed", "unreachable")
            ]
        );
    }
}

#[test]
fn the_readable_report_marks_the_first_failing_rung() {
    let dir = tempfile::tempdir().unwrap();
    let root = healthy_system_root(dir.path());
    let config_path = dir.path().join("readable.toml");
    let text = config(
        &root,
        "[]",
        &target("payment-host", &format!("127.0.0.1:{}", closed_port()), ""),
    )
    // A field engineer's `probe` needs no token.
    .replace("token = \"k1.x\"\n", "");
    std::fs::write(&config_path, text).unwrap();
    let output = std::process::Command::new(posmon_e2e_tests::binary("posmon-agent"))
        .args(["probe", "--once", "--config"])
        .arg(&config_path)
        .env_remove("POSMON_AGENT_TOKEN")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    // The payment host refuses: cannot take payments.
    assert_eq!(
        output.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(text.contains("✓ link"), "{text}");
    assert!(
        text.contains("✗ tcp      refused 0/2 ok (100% loss)"),
        "{text}"
    );
    assert!(text.contains("<== first failure / 首个故障"), "{text}");
    assert!(text.contains("=> FAILED at tcp (refused)"), "{text}");
    assert!(text.contains("Software / 软件版本"), "{text}");
}
