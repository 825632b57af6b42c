//! Bytes on the wire per report: a real agent delivering to a real collector through a TCP
//! proxy that counts every byte both ways (HTTP headers and bodies; with TLS, the handshake and
//! record overhead too). Prints bytes per report and MiB per terminal per month at a 60 s
//! report interval.
//!
//! Run: `cargo build --release --workspace && cargo bench -p posmon-e2e-tests --bench wire`
//! (loopback only; about a minute).

use std::sync::atomic::Ordering;
use std::time::Duration;

use posmon_e2e_tests::{
    counting_proxy, healthy_system_root, start_agent, wait_for, Collector, Pki, TargetServer,
};

struct Measured {
    reports: u64,
    up: u64,
    down: u64,
    connections: u64,
}

fn measure(tls: bool, reports_wanted: u64) -> Measured {
    let dir = tempfile::tempdir().unwrap_or_else(|error| panic!("{error}"));
    let pki = Pki::new("bench CA");
    let mut collector_config = String::new();
    let mut agent_tls = String::new();
    if tls {
        let (cert, key) = pki.leaf_pem(&["127.0.0.1", "localhost"]);
        std::fs::write(dir.path().join("server.crt"), cert)
            .unwrap_or_else(|error| panic!("{error}"));
        std::fs::write(dir.path().join("server.key"), key)
            .unwrap_or_else(|error| panic!("{error}"));
        pki.write_ca(&dir.path().join("ca.crt"));
        collector_config = format!(
            "[tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\n",
            dir.path().join("server.crt").display(),
            dir.path().join("server.key").display()
        );
        agent_tls = format!(
            "collector_ca_file = \"{}\"\n",
            dir.path().join("ca.crt").display()
        );
    }
    let collector = Collector::start(dir.path(), &collector_config);
    let upstream = collector
        .url
        .split("://")
        .nth(1)
        .unwrap_or_default()
        .to_string();
    let (proxy, up, down, connections) = counting_proxy(upstream);
    let scheme = if tls { "https" } else { "http" };
    let target = TargetServer::start();
    let config = format!(
        r#"
terminal_id = "T-0001"
collector_url = "{scheme}://{proxy}"
token = "{token}"
state_dir = "{state}"
system_root = "{root}"
probe_interval_seconds = 1
report_interval_seconds = 1
{agent_tls}
[labels]
merchant = "M-88001"
model = "PAX-A920"
region = "cn-east-sh"
carrier = "china-mobile"

[[targets]]
name = "payment-host"
address = "{target}"

[[targets]]
name = "tms"
address = "http://127.0.0.1:{port}/healthz"
"#,
        token = collector.token("T-0001"),
        state = dir.path().join("state").display(),
        root = healthy_system_root(dir.path()).display(),
        target = target.address,
        port = collector.url.rsplit(':').next().unwrap_or_default(),
    );
    let agent = start_agent(dir.path(), "agent", &config);
    let sequence = || collector_sequence(&collector);
    let done = wait_for(Duration::from_secs(reports_wanted * 3 + 20), || {
        sequence().filter(|s| *s >= reports_wanted)
    });
    let reports =
        done.unwrap_or_else(|| panic!("the agent did not deliver; log:\n{}", agent.log()));
    Measured {
        reports,
        up: up.load(Ordering::Relaxed),
        down: down.load(Ordering::Relaxed),
        connections: connections.load(Ordering::Relaxed),
    }
}

fn collector_sequence(collector: &Collector) -> Option<u64> {
    let client = reqwest::blocking::Client::builder()
        .danger_accept_invalid_certs(true)
        .build()
        .ok()?;
    let detail: serde_json::Value = client
        .get(format!("{}/api/v1/terminals/T-0001", collector.url))
        .send()
        .ok()?
        .json()
        .ok()?;
    detail["sequence"].as_u64()
}

fn main() {
    const REPORTS: u64 = 30;
    const REPORTS_PER_MONTH: f64 = 30.0 * 24.0 * 60.0; // one a minute
    println!("| transport | reports | connections | up bytes/report | down bytes/report | total bytes/report | MiB/terminal/month at 60 s |");
    println!("| --- | --- | --- | --- | --- | --- | --- |");
    for tls in [false, true] {
        let measured = measure(tls, REPORTS);
        let per = |bytes: u64| bytes as f64 / measured.reports as f64;
        let total = per(measured.up + measured.down);
        println!(
            "| {} | {} | {} | {:.0} | {:.0} | {:.0} | {:.2} |",
            if tls { "HTTPS (TLS 1.3)" } else { "HTTP" },
            measured.reports,
            measured.connections,
            per(measured.up),
            per(measured.down),
            total,
            total * REPORTS_PER_MONTH / (1024.0 * 1024.0)
        );
    }
}
