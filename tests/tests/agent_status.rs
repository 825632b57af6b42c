//! The local verdict of the real agent, offline: `posmon-agent probe --once` against loopback
//! targets that fail on different rungs (no carrier from a fake system root, a name a stub
//! resolver says does not exist, a refused port, a plain-text port spoken to as TLS) must name
//! the right party, its configured contact, the remediation and the plain error, and exit 0 / 1
//! / 2 / 3; and the running agent's status file and `GET /status` endpoint, read while the agent
//! rewrites them, always parse and follow the target breaking.

// The servers below are test fixtures: a panic there is the test failing (clippy.toml allows
// unwrap in tests, but does not see helper functions as tests).
#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::{TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use posmon_e2e_tests::{
    binary, dns_answer, free_port, healthy_system_root, quick_agent_config, start_agent, wait_for,
    Collector, TargetServer,
};

const CONTACTS: &str = r#"
[contacts.network_provider]
name = "China Mobile"
name_zh_cn = "中国移动"
phone = "400-100-8611"

[contacts.acquirer]
name = "Acme Pay"
name_zh_cn = "艾克米支付"
phone = "95516"

[contacts.merchant]
name = "Shop owner"
name_zh_cn = "店主"
phone = "138-0000-0000"
"#;

/// A stub resolver on loopback: `pay.test` is 127.0.0.1, `fail.test` fails (SERVFAIL),
/// `nodata.test` has no address record (NODATA), `slow.test` is never answered, every other
/// name does not exist.
fn dns_stub() -> std::net::SocketAddr {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let address = socket.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut buffer = [0u8; 512];
        while let Ok((length, peer)) = socket.recv_from(&mut buffer) {
            let query = &buffer[..length];
            if query
                .windows(11)
                .any(|window| window == b"\x04slow\x04test\x00")
            {
                continue;
            }
            let answer = dns_answer(query, |name, record_type| match (name, record_type) {
                ("pay.test", 1) => (0, vec![[127, 0, 0, 1]]),
                ("pay.test" | "nodata.test", _) => (0, vec![]),
                ("fail.test", _) => (2, vec![]),
                _ => (3, vec![]),
            });
            if let Some(answer) = answer {
                let _ = socket.send_to(&answer, peer);
            }
        }
    });
    address
}

/// A plain-text server (HTTP, not HTTPS): whatever arrives is answered with a 400, as web
/// servers answer a TLS ClientHello. Returns its port.
fn plain_http_server() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for mut stream in listener.incoming().map_while(Result::ok) {
            let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
            let mut buffer = [0u8; 1024];
            let _ = stream.read(&mut buffer);
            let _ = stream.write_all(
                b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            );
        }
    });
    port
}

/// An HTTP server whose service is failing: every request is answered 503. Returns its port.
fn failing_http_server() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for mut stream in listener.incoming().map_while(Result::ok) {
            let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
            let mut buffer = [0u8; 1024];
            let _ = stream.read(&mut buffer);
            let _ = stream.write_all(
                b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            );
        }
    });
    port
}

/// A port on which nothing listens.
fn closed_port() -> u16 {
    free_port()
}

/// A probe config: no token (probe needs none), the contacts, the given resolver, system root
/// and targets.
fn config(root: &Path, resolver: std::net::SocketAddr, targets: &[(&str, String, &str)]) -> String {
    let mut text = format!(
        "terminal_id = \"T-LOCAL\"\ncollector_url = \"http://127.0.0.1:9\"\n\
         probe_timeout_seconds = 2\nattempts = 1\nicmp = false\nsystem_root = {:?}\n\
         dns_servers = [\"{resolver}\"]\n",
        root.display().to_string()
    );
    for (name, address, extra) in targets {
        text.push_str(&format!(
            "[[targets]]\nname = \"{name}\"\naddress = \"{address}\"\n{extra}\n"
        ));
    }
    text.push_str(CONTACTS);
    text
}

fn probe(dir: &Path, name: &str, config_text: &str, extra_args: &[&str]) -> Output {
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, config_text).unwrap();
    Command::new(binary("posmon-agent"))
        .args(["probe", "--once", "--config"])
        .arg(&path)
        .args(extra_args)
        .env_remove("POSMON_AGENT_TOKEN")
        .env_remove("POSMON_AGENT_CONFIG")
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).to_string()
}

/// A system root whose only interface has lost its carrier.
fn unplugged_system_root(dir: &Path) -> PathBuf {
    let unplugged = dir.join("unplugged");
    std::fs::create_dir_all(&unplugged).unwrap();
    let root = healthy_system_root(&unplugged);
    std::fs::write(root.join("sys/class/net/eth0/carrier"), "0\n").unwrap();
    std::fs::write(root.join("sys/class/net/eth0/operstate"), "down\n").unwrap();
    root
}

/// A system root whose router does not answer (its neighbour entry is incomplete).
fn silent_router_system_root(dir: &Path) -> PathBuf {
    let silent = dir.join("silent-router");
    std::fs::create_dir_all(&silent).unwrap();
    let root = healthy_system_root(&silent);
    std::fs::write(
        root.join("proc/net/arp"),
        "IP address       HW type     Flags       HW address            Mask     Device\n\
         192.168.1.1      0x1         0x0         00:00:00:00:00:00     *        eth0\n",
    )
    .unwrap();
    root
}

/// One broken payment host: its name, system root, (address, extra target keys), then the
/// expected code, party, plain words, raw error, whom to call, headline and (part of) what to
/// do.
type Case = (
    &'static str,
    PathBuf,
    (String, &'static str),
    [&'static str; 7],
);

/// Each rung's failure of the payment host, offline, through the real binary: the finding's
/// party and contact, the plain error (and the raw one), the remediation, the headline and the
/// exit status; in English, in Chinese and as JSON.
#[test]
fn every_broken_rung_names_whom_to_call() {
    let dir = tempfile::tempdir().unwrap();
    let root = healthy_system_root(dir.path());
    let resolver = dns_stub();
    let plain = plain_http_server();
    let refused = closed_port();
    let failing = failing_http_server();
    let provider = "Call: China Mobile (the network provider), 400-100-8611";
    let provider_headline = "Network problem — call China Mobile: 400-100-8611";
    let acquirer = "Call: Acme Pay (the acquirer, who runs the payment host), 95516";
    let acquirer_headline = "Payment host problem — call Acme Pay: 95516";
    let cases: Vec<Case> = vec![
        (
            "no-carrier",
            unplugged_system_root(dir.path()),
            (format!("127.0.0.1:{refused}"), ""),
            [
                "env.network.link_down",
                "merchant",
                "link: no network connection: no cable plugged in",
                "",
                "Call: Shop owner (the shop (merchant)), 138-0000-0000",
                "Network problem — call Shop owner: 138-0000-0000",
                "The merchant checks the cable",
            ],
        ),
        (
            "gateway-unreachable",
            silent_router_system_root(dir.path()),
            (format!("pay.test:{refused}"), ""),
            [
                "env.network.gateway_unreachable",
                "merchant",
                "gateway: the shop's router does not answer",
                "192.168.1.1",
                "Call: Shop owner (the shop (merchant)), 138-0000-0000",
                "Network problem — call Shop owner: 138-0000-0000",
                "restarts it",
            ],
        ),
        (
            "nxdomain",
            root.clone(),
            ("nx.test:443".to_string(), ""),
            [
                "env.network.dns_failure",
                "network_provider",
                "dns: the host name does not exist",
                "nx.test",
                provider,
                provider_headline,
                "Contact the network provider",
            ],
        ),
        (
            "servfail",
            root.clone(),
            ("fail.test:443".to_string(), ""),
            [
                "env.network.dns_failure",
                "network_provider",
                "dns: the DNS server failed to look up the host name",
                "SERVFAIL",
                provider,
                provider_headline,
                "Contact the network provider",
            ],
        ),
        (
            "dns-timeout",
            root.clone(),
            ("slow.test:443".to_string(), ""),
            [
                "env.network.dns_failure",
                "network_provider",
                "dns: the DNS server did not answer in time",
                "did not answer within",
                provider,
                provider_headline,
                "Contact the network provider",
            ],
        ),
        (
            "nodata",
            root.clone(),
            ("nodata.test:443".to_string(), ""),
            [
                "env.network.dns_failure",
                "network_provider",
                "dns: the host name exists but has no address record",
                "no address records",
                provider,
                provider_headline,
                "check the host name in the terminal's configuration",
            ],
        ),
        (
            "refused",
            root.clone(),
            (format!("pay.test:{refused}"), ""),
            [
                "env.network.host_refused",
                "acquirer",
                "tcp: the host refused the connection",
                "refused",
                acquirer,
                acquirer_headline,
                "must fix the service",
            ],
        ),
        (
            "http-503",
            root.clone(),
            (format!("http://pay.test:{failing}/health"), ""),
            [
                "env.network.host_refused",
                "acquirer",
                "http: the host answered with an error status",
                "503",
                acquirer,
                acquirer_headline,
                "must fix the service",
            ],
        ),
        (
            "not-tls",
            root.clone(),
            (format!("pay.test:{plain}"), "tls = true"),
            [
                "env.network.tls_failure",
                "acquirer",
                "tls: the host does not speak TLS on this port",
                "InvalidContentType",
                acquirer,
                acquirer_headline,
                "check the host and port in the terminal's configuration",
            ],
        ),
    ];
    for (name, root, (address, extra), [code, party, plain_words, raw, call, headline, todo]) in
        cases
    {
        let config = config(&root, resolver, &[("payment-host", address, extra)]);
        let output = probe(dir.path(), name, &config, &["--lang", "en"]);
        let stdout = text(&output.stdout);
        assert_eq!(
            output.status.code(),
            Some(2),
            "{name}: cannot pay\n{stdout}\n{}",
            text(&output.stderr)
        );
        for expected in [plain_words, raw, call, code, "What to do: ", todo] {
            assert!(
                stdout.contains(expected),
                "{name}: {expected:?} in\n{stdout}"
            );
        }
        assert!(
            stdout.contains(&format!("Verdict: CANNOT TAKE PAYMENTS — {headline}")),
            "{name}: verdict line in\n{stdout}"
        );
        assert!(
            !stdout.contains("处理办法"),
            "{name}: English only\n{stdout}"
        );

        let chinese = text(&probe(dir.path(), name, &config, &["--lang", "zh-CN"]).stdout);
        let problem = if headline.starts_with("Payment host") {
            "支付主机故障"
        } else {
            "网络故障"
        };
        assert!(
            chinese.contains(&format!("结论: 无法收款 — {problem} — 请联系 ")),
            "{name}\n{chinese}"
        );
        assert!(chinese.contains("处理办法: "), "{name}\n{chinese}");
        assert!(!chinese.contains("What to do"), "{name}\n{chinese}");

        let json = probe(dir.path(), name, &config, &["--json"]);
        assert_eq!(json.status.code(), Some(2), "{name}");
        let report: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
        let verdict = &report["verdict"];
        assert_eq!(verdict["readiness"], "cannot_pay", "{name}: {verdict:#}");
        assert_eq!(verdict["headline"]["en"], headline, "{name}");
        let finding = verdict["findings"]
            .as_array()
            .and_then(|findings| findings.iter().find(|finding| finding["code"] == code))
            .unwrap_or_else(|| panic!("{name}: no {code} in {verdict:#}"));
        assert_eq!(finding["party"], party, "{name}");
        assert_eq!(finding["effect"], "cannot_pay", "{name}");
        assert!(finding["remediation"]["zh-CN"]
            .as_str()
            .is_some_and(|text| !text.is_empty()));
        // The report itself is still there for whoever reads it.
        assert_eq!(report["terminal_id"], "T-LOCAL");
        assert!(report["probes"].is_array());
    }

    // Both languages by default, as the rest of the output.
    let config = config(
        &root,
        resolver,
        &[("payment-host", "nx.test:443".to_string(), "")],
    );
    let both = text(&probe(dir.path(), "both", &config, &[]).stdout);
    assert!(
        both.contains(
            "Verdict: CANNOT TAKE PAYMENTS — Network problem — call China Mobile: 400-100-8611"
        ),
        "{both}"
    );
    assert!(
        both.contains("结论: 无法收款 — 网络故障 — 请联系 中国移动: 400-100-8611"),
        "{both}"
    );
}

/// 0 can pay, 1 at risk, 2 cannot pay, 3 the probe could not run; --help and --version 0.
#[test]
fn the_exit_status_is_the_verdict() {
    let dir = tempfile::tempdir().unwrap();
    let root = healthy_system_root(dir.path());
    let resolver = dns_stub();
    let healthy = TargetServer::start();
    let good = format!("127.0.0.1:{}", healthy.address.port());
    let refused = format!("127.0.0.1:{}", closed_port());

    let output = probe(
        dir.path(),
        "healthy",
        &config(&root, resolver, &[("payment-host", good.clone(), "")]),
        &["--json"],
    );
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let findings = report["verdict"]["findings"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    // The device rules read this machine (its disk, memory, temperature): whatever they find
    // is a risk, never a stop; the path is healthy.
    assert!(
        findings.iter().all(|finding| finding["effect"] == "at_risk"
            && !finding["code"]
                .as_str()
                .unwrap_or("")
                .starts_with("env.network.")),
        "{findings:?}"
    );
    let expected = if findings.is_empty() { 0 } else { 1 };
    assert_eq!(
        output.status.code(),
        Some(expected),
        "{}",
        report["verdict"]
    );
    if findings.is_empty() {
        assert_eq!(report["verdict"]["headline"]["en"], "Can take payments");
    }

    // A failing target payments do not need: at risk.
    let output = probe(
        dir.path(),
        "at-risk",
        &config(
            &root,
            resolver,
            &[
                ("payment-host", good.clone(), ""),
                (
                    "tms",
                    refused.clone(),
                    "contact = \"TMS helpdesk 400-800-1234\"",
                ),
            ],
        ),
        &["--lang", "en"],
    );
    let stdout = text(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains(
            "Verdict: AT RISK — Server problem (payments still work) — call TMS helpdesk 400-800-1234"
        ),
        "{stdout}"
    );
    assert!(
        stdout.contains("Call: TMS helpdesk 400-800-1234 (the server's operator)"),
        "{stdout}"
    );
    // Without its own contact: the server's operator, not the acquirer.
    let output = probe(
        dir.path(),
        "at-risk-no-contact",
        &config(
            &root,
            resolver,
            &[
                ("payment-host", good.clone(), ""),
                ("tms", refused.clone(), ""),
            ],
        ),
        &["--lang", "zh-CN"],
    );
    let stdout = text(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("结论: 存在风险 — 服务器故障（仍可收款） — 请联系 服务器运营方"),
        "{stdout}"
    );

    // No payment target configured (only the TMS, healthy): cannot tell, exit 1.
    let output = probe(
        dir.path(),
        "no-payment-target",
        &config(&root, resolver, &[("tms", good.clone(), "")]),
        &["--json"],
    );
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(output.status.code(), Some(1), "{}", report["verdict"]);
    assert_eq!(report["verdict"]["readiness"], "unknown");
    assert!(report["verdict"]["headline"]["en"]
        .as_str()
        .is_some_and(|headline| headline.contains("no payment target is configured")));
    // A payment target the config names but does not probe: refused.
    let mut unprobed = config(&root, resolver, &[("tms", good.clone(), "")]);
    unprobed.push_str("\n[readiness]\ntargets = [\"pay\"]\n");
    let output = probe(dir.path(), "unprobed", &unprobed, &[]);
    assert_eq!(output.status.code(), Some(3));
    assert!(
        text(&output.stderr)
            .contains("config key readiness.targets: \"pay\" names no [[targets]] entry"),
        "{}",
        text(&output.stderr)
    );

    // The same target declared payment-critical in [readiness]: cannot pay.
    let mut critical = config(
        &root,
        resolver,
        &[("payment-host", good, ""), ("tms", refused, "")],
    );
    critical.push_str("\n[readiness]\ntargets = [\"payment-host\", \"tms\"]\n");
    let output = probe(dir.path(), "critical", &critical, &[]);
    assert_eq!(output.status.code(), Some(2), "{}", text(&output.stdout));

    // Could not run: a bad config, a missing one, bad arguments.
    let bad = config(&root, resolver, &[]).replace("attempts = 1", "attempts = 0");
    let output = probe(dir.path(), "bad", &bad, &[]);
    assert_eq!(output.status.code(), Some(3));
    assert!(
        text(&output.stderr).contains("config key attempts"),
        "{}",
        text(&output.stderr)
    );
    let output = probe(
        dir.path(),
        "listen",
        &format!(
            "status_listen = \"0.0.0.0:8787\"\n{}",
            config(&root, resolver, &[])
        ),
        &[],
    );
    assert_eq!(output.status.code(), Some(3));
    assert!(
        text(&output.stderr).contains("config key status_listen"),
        "{}",
        text(&output.stderr)
    );
    let run = |args: &[&str]| {
        Command::new(binary("posmon-agent"))
            .args(args)
            .env_remove("POSMON_AGENT_CONFIG")
            .output()
            .unwrap()
    };
    let missing = dir.path().join("missing.toml").display().to_string();
    assert_eq!(
        run(&["probe", "--once", "--config", &missing])
            .status
            .code(),
        Some(3)
    );
    assert_eq!(run(&["probe", "--bogus"]).status.code(), Some(3));
    assert_eq!(
        run(&["probe", "--lang", "fr", "--config", &missing])
            .status
            .code(),
        Some(3)
    );
    assert_eq!(run(&["no-such-command"]).status.code(), Some(3));
    assert_eq!(run(&[]).status.code(), Some(3));
    let help = run(&["probe", "--help"]);
    assert_eq!(help.status.code(), Some(0));
    assert!(
        text(&help.stdout).contains("3 the probe could not run"),
        "{}",
        text(&help.stdout)
    );
    assert_eq!(run(&["--version"]).status.code(), Some(0));
}

/// The running agent's status: the file (0644, always whole while it is rewritten every second)
/// and the loopback endpoint serve the same verdict, which follows the payment host breaking,
/// and say when the collector last acknowledged a report, across a restart.
#[test]
fn the_running_agent_keeps_a_status_the_pos_app_can_read() {
    let dir = tempfile::tempdir().unwrap();
    let collector = Collector::start(dir.path(), "");
    let token = collector.token("T-STATUS");
    let mut target = TargetServer::start();
    let status_port = free_port();
    let extra = format!("status_listen = \"127.0.0.1:{status_port}\"\n");
    let config = format!(
        "{}{CONTACTS}",
        quick_agent_config(
            &collector.url,
            &token,
            dir.path(),
            "T-STATUS",
            &target,
            1,
            &extra
        )
    );
    let mut agent = start_agent(dir.path(), "agent", &config);
    let file = dir.path().join("T-STATUS-state/status.json");
    let read = |path: &Path| -> Option<serde_json::Value> {
        let bytes = std::fs::read(path).ok()?;
        Some(serde_json::from_slice(&bytes).unwrap_or_else(|error| {
            panic!(
                "a torn status file ({error}): {}",
                String::from_utf8_lossy(&bytes)
            )
        }))
    };
    let healthy = wait_for(Duration::from_secs(20), || {
        read(&file).filter(|status| {
            status["readiness"] != "cannot_pay"
                && status["collector"]["last_acknowledged_at"].is_string()
        })
    })
    .unwrap_or_else(|| panic!("no healthy, acknowledged status; log:\n{}", agent.log()));
    assert_eq!(healthy["schema_version"], 1);
    assert_eq!(healthy["terminal_id"], "T-STATUS");
    assert!(healthy["observed_at"].is_string());
    assert!(healthy["readiness_label"]["zh-CN"].is_string());
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o644);
    }

    // A reader in a loop while the agent rewrites the file every cycle, through the break.
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let done = std::sync::Arc::clone(&done);
        let file = file.clone();
        std::thread::spawn(move || {
            let mut reads = 0u64;
            let mut versions = std::collections::HashSet::new();
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                let bytes = std::fs::read(&file).unwrap();
                let status: serde_json::Value = serde_json::from_slice(&bytes)
                    .unwrap_or_else(|error| panic!("torn ({error}) after {reads} reads"));
                versions.insert(status["observed_at"].to_string());
                reads += 1;
            }
            (reads, versions.len())
        })
    };
    target.close();
    let broken = wait_for(Duration::from_secs(20), || {
        read(&file).filter(|status| status["readiness"] == "cannot_pay")
    })
    .unwrap_or_else(|| panic!("the status never said cannot_pay; log:\n{}", agent.log()));
    assert_eq!(
        broken["headline"]["en"],
        "Payment host problem — call Acme Pay: 95516"
    );
    assert_eq!(
        broken["headline"]["zh-CN"],
        "支付主机故障 — 请联系 艾克米支付: 95516"
    );
    let finding = &broken["findings"][0];
    assert_eq!(finding["code"], "env.network.host_refused", "{broken:#}");
    assert_eq!(finding["party"], "acquirer");
    assert_eq!(finding["contact"]["phone"], "95516");
    assert_eq!(finding["subject"], "payment-host");
    assert_eq!(finding["rung"]["stage"], "tcp");
    assert_eq!(finding["rung"]["error"], "refused");
    assert!(finding["rung"]["plain"]["en"]
        .as_str()
        .is_some_and(|text| text.contains("refused the connection")));
    assert!(finding["rung"]["detail"].is_string());
    // Let the reader see a few more rewrites.
    std::thread::sleep(Duration::from_secs(2));
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let (reads, versions) = reader.join().unwrap();
    assert!(versions >= 3, "{versions} versions in {reads} reads");

    // The endpoint serves the same JSON; nothing else.
    let url = format!("http://127.0.0.1:{status_port}");
    let served: serde_json::Value = reqwest::blocking::get(format!("{url}/status"))
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(served["terminal_id"], "T-STATUS");
    assert_eq!(served["readiness"], "cannot_pay");
    assert_eq!(served["findings"][0]["code"], "env.network.host_refused");
    for path in ["/", "/status.json", "/metrics"] {
        let status = reqwest::blocking::get(format!("{url}{path}"))
            .unwrap()
            .status();
        assert_eq!(status.as_u16(), 404, "{path}");
    }
    let posted = reqwest::blocking::Client::new()
        .post(format!("{url}/status"))
        .body("x".repeat(100_000))
        .send()
        .map(|response| response.status().as_u16());
    // Never read: answered 404 at once, or the connection closed before the body was sent.
    assert!(
        posted.is_err() || posted.as_ref().is_ok_and(|status| *status == 404),
        "{posted:?}"
    );

    // Repaired: the status says so again.
    target.reopen();
    wait_for(Duration::from_secs(20), || {
        read(&file).filter(|status| status["readiness"] != "cannot_pay")
    })
    .unwrap_or_else(|| panic!("the status never recovered; log:\n{}", agent.log()));
    agent.terminate();
    assert!(!agent.log().contains("panicked"), "{}", agent.log());

    // Restarted while the collector is gone: the status still says when it last acknowledged.
    let last = read(&file).unwrap();
    let acknowledged = last["collector"]["last_acknowledged_at"].clone();
    assert!(acknowledged.is_string(), "{last:#}");
    let mut collector = collector;
    collector.process.kill();
    let mut again = start_agent(dir.path(), "agent-again", &config);
    let restarted = wait_for(Duration::from_secs(20), || {
        read(&file).filter(|status| status["observed_at"] != last["observed_at"])
    })
    .unwrap_or_else(|| panic!("no status after the restart; log:\n{}", again.log()));
    assert_eq!(restarted["collector"]["last_acknowledged_at"], acknowledged);
    again.terminate();
}
