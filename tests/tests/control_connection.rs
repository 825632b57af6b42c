//! The control long-poll keeps its one HTTPS connection from hold to hold (issue 14's data
//! plan): a real agent polling a real collector over TLS (HTTP/2 by ALPN) through a proxy that
//! counts connections, the collector ending each hold after 2 s. A new connection per hold is
//! a TCP and TLS handshake each time — about 2 KB a hold that a SIM card pays.
#![allow(
    clippy::unwrap_used,
    reason = "test helpers as well as tests: a failed unwrap is the test failing"
)]

use std::sync::atomic::Ordering;
use std::time::Duration;

use posmon_e2e_tests::{
    counting_proxy, quick_agent_config, start_agent, Collector, Pki, TargetServer,
};

#[test]
fn the_long_poll_keeps_its_connection_from_hold_to_hold() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new("control connection CA");
    let (certificate, key) = pki.leaf_pem(&["127.0.0.1", "localhost"]);
    std::fs::write(dir.path().join("server.crt"), certificate).unwrap();
    std::fs::write(dir.path().join("server.key"), key).unwrap();
    pki.write_ca(&dir.path().join("ca.crt"));
    let collector = Collector::start(
        dir.path(),
        &format!(
            "[tls]\ncert_file = {:?}\nkey_file = {:?}\n\n[control]\nmax_hold_seconds = 2\n",
            dir.path().join("server.crt").display().to_string(),
            dir.path().join("server.key").display().to_string(),
        ),
    );
    let upstream = collector.url.trim_start_matches("https://").to_string();
    let (proxy, _, _, connections) = counting_proxy(upstream);
    let target = TargetServer::start();
    let config = quick_agent_config(
        &format!("https://localhost:{}", proxy.rsplit(':').next().unwrap()),
        &collector.token("T-HOLD"),
        dir.path(),
        "T-HOLD",
        &target,
        60,
        &format!(
            "collector_ca_file = {:?}\ncontrol_hold_seconds = 1800\n",
            dir.path().join("ca.crt").display().to_string()
        ),
    );
    let agent = start_agent(dir.path(), "agent", &config);
    // Five holds and more.
    std::thread::sleep(Duration::from_secs(13));
    // One connection for the reports, one for the long-poll.
    assert_eq!(
        connections.load(Ordering::Relaxed),
        2,
        "connections for the reports and the long-poll; agent log:\n{}",
        agent.log()
    );
}
