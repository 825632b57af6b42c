//! The party table (README, "Who must act"), row by row, against real agents in a shop built of
//! network namespaces: the terminal's namespace behind a router namespace that also stands for
//! the carrier's resolver and the payment host. Each test breaks one thing with the means the
//! fault has in the field (nothing listening, an nftables rule, a dead router, a bad
//! certificate, a resolver failing, the terminal's clock off under libfaketime), runs the real
//! agent (`posmon-agent run`) inside the terminal's namespace against the real collector on the
//! host's loopback (reached through a forwarder, see `posmon_e2e_tests::netns`), and checks the
//! one network finding the collector opens and the party it names. Needs root, `ip` and `nft`
//! (the clock row also `faketime`): without them the tests are ignored with the reason, and
//! fail under CI.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use posmon_e2e_tests::netns::{
    self, Serve, Shop, CARRIER_RESOLVER, PAYMENT_HOST, PAYMENT_NAME, ROUTER, SHOP_SUBNET,
};
use posmon_e2e_tests::trials::{self, Need};
use posmon_e2e_tests::{binary, trial, wait_for, Collector, Pki, Process};

fn main() -> ExitCode {
    if netns::serve_if_asked() {
        return ExitCode::FAILURE;
    }
    let root = Need::Root;
    let (ip, nft) = (Need::Program("ip"), Need::Program("nft"));
    trials::run(vec![
        trial!(
            a_host_refusing_the_connection_is_the_acquirers,
            root,
            ip,
            nft
        ),
        trial!(
            a_host_resetting_the_connection_is_the_acquirers,
            root,
            ip,
            nft
        ),
        trial!(
            an_expired_certificate_served_by_the_host_is_the_acquirers,
            root,
            ip,
            nft
        ),
        trial!(a_tls_alert_from_the_host_is_the_acquirers, root, ip, nft),
        trial!(
            a_time_out_with_the_gateway_fine_is_the_network_providers,
            root,
            ip,
            nft
        ),
        trial!(
            a_time_out_behind_a_router_filtering_echoes_is_still_the_network_providers,
            root,
            ip,
            nft
        ),
        trial!(a_link_down_is_the_merchants, root, ip, nft),
        trial!(a_router_that_never_answered_is_the_merchants, root, ip, nft),
        trial!(
            the_carriers_resolver_failing_is_the_network_providers,
            root,
            ip,
            nft
        ),
        trial!(
            the_carriers_resolver_silent_is_the_network_providers,
            root,
            ip,
            nft
        ),
        trial!(the_routers_resolver_failing_is_the_merchants, root, ip, nft),
        trial!(the_routers_resolver_silent_is_the_merchants, root, ip, nft),
        trial!(
            the_terminals_clock_breaking_tls_is_operations,
            root,
            ip,
            nft,
            Need::Program("faketime")
        ),
        trial!(
            a_router_that_dies_is_one_gateway_finding_at_once,
            root,
            ip,
            nft
        ),
    ])
}

/// How long a finding may take to open: two cycles of one second, delivery and evaluation.
const OPEN_WITHIN: Duration = Duration::from_secs(20);

/// One shop with a collector, stand-in servers and an agent; everything is stopped (agents
/// first) and the namespaces deleted when it is dropped.
struct Scene {
    agent: Option<Process>,
    servers: Vec<Process>,
    /// Held to keep the agent's way to the collector open; ends with the scene.
    _forwarder: Process,
    collector: Collector,
    shop: Shop,
    dir: tempfile::TempDir,
    ca: PathBuf,
    pki: Pki,
}

impl Scene {
    fn new() -> Scene {
        let dir = tempfile::tempdir().unwrap_or_else(|error| panic!("{error}"));
        let collector = Collector::start(
            dir.path(),
            // A terminal two days ahead (the clock row) is still heard, and its clock judged.
            "[diagnosis]\nevaluation_interval_seconds = 1\n\n[limits]\nmax_clock_ahead_seconds = 259200\n",
        );
        let shop = Shop::new();
        let collector_address = ([127, 0, 0, 1], collector.port()).into();
        let (forward_port, forwarder) = shop.terminal.forward_to(dir.path(), collector_address);
        let pki = Pki::new("posmon party test CA");
        let ca = dir.path().join("ca.pem");
        pki.write_ca(&ca);
        let scene = Scene {
            agent: None,
            servers: Vec::new(),
            _forwarder: forwarder,
            collector,
            shop,
            dir,
            ca,
            pki,
        };
        std::fs::write(
            scene.dir.path().join("forward-port"),
            forward_port.to_string(),
        )
        .unwrap_or_else(|error| panic!("{error}"));
        scene
    }

    fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// A certificate for the payment host valid between the two dates, as DER files.
    fn certificate(&self, from: (i32, u8, u8), until: (i32, u8, u8)) -> (PathBuf, PathBuf) {
        use rustls::pki_types::PrivateKeyDer;
        let (certificate, key) = self.pki.leaf(&[PAYMENT_NAME], from, until);
        let PrivateKeyDer::Pkcs8(key) = key else {
            panic!("not a PKCS#8 key");
        };
        let paths = (self.dir().join("host.der"), self.dir().join("host-key.der"));
        std::fs::write(&paths.0, certificate.as_ref()).unwrap_or_else(|error| panic!("{error}"));
        std::fs::write(&paths.1, key.secret_pkcs8_der()).unwrap_or_else(|error| panic!("{error}"));
        paths
    }

    /// A payment host with a good certificate, and the carrier's resolver.
    fn healthy_servers(&self) -> Vec<Serve> {
        let (certificate, key) = self.certificate((2024, 1, 1), (2099, 1, 1));
        vec![
            Serve::Dns(CARRIER_RESOLVER),
            Serve::Tls(PAYMENT_HOST, certificate, key),
        ]
    }

    /// Starts stand-in servers in the router's namespace.
    fn serve(&mut self, serves: &[Serve]) {
        let name = format!("servers-{}", self.servers.len());
        let process = self.shop.router.serve(self.dir.path(), &name, serves);
        self.servers.push(process);
    }

    /// Starts the agent in the terminal's namespace, asking `resolver`, optionally under
    /// libfaketime with `clock_offset` (e.g. `+2d`).
    fn start_agent(&mut self, terminal_id: &str, resolver: &str, clock_offset: Option<&str>) {
        let port = std::fs::read_to_string(self.dir().join("forward-port"))
            .unwrap_or_else(|error| panic!("{error}"));
        let config = format!(
            "terminal_id = \"{terminal_id}\"\ncollector_url = \"http://127.0.0.1:{port}\"\n\
             token = \"{token}\"\nstate_dir = {state:?}\nprobe_interval_seconds = 1\n\
             report_interval_seconds = 1\nprobe_timeout_seconds = 1\nrequest_timeout_seconds = 2\n\
             retry_max_seconds = 1\nattempts = 1\nicmp = false\ndns_servers = [\"{resolver}\"]\n\n\
             [[targets]]\nname = \"payment-host\"\naddress = \"{PAYMENT_NAME}:443\"\ntls = true\n\
             ca_file = {ca:?}\n",
            token = self.collector.token(terminal_id),
            state = self
                .dir()
                .join(format!("{terminal_id}-state"))
                .display()
                .to_string(),
            ca = self.ca.display().to_string(),
        );
        let config_path = self.dir().join(format!("{terminal_id}.toml"));
        std::fs::write(&config_path, config).unwrap_or_else(|error| panic!("{error}"));
        let config_arg = config_path.display().to_string();
        let mut environment = vec![("POSMON_LOG", "debug".to_string())];
        if let Some(offset) = clock_offset {
            environment.push(("LD_PRELOAD", libfaketime().display().to_string()));
            environment.push(("FAKETIME", offset.to_string()));
            // Timers keep the real monotonic clock.
            environment.push(("FAKETIME_DONT_FAKE_MONOTONIC", "1".to_string()));
        }
        let environment: Vec<(&str, &str)> = environment
            .iter()
            .map(|(key, value)| (*key, value.as_str()))
            .collect();
        self.agent = Some(self.shop.terminal.spawn(
            &binary("posmon-agent"),
            &["run", "--config", &config_arg],
            &environment,
            &self.dir().join(format!("{terminal_id}.log")),
        ));
    }

    /// The open findings of a terminal as (code, party), network and clock ones only (the
    /// agent reads the real machine's disks and sensors, which are not this test's business).
    fn findings(&self, terminal_id: &str) -> Vec<(String, String)> {
        let body = self
            .collector
            .get_json(&format!("/api/v1/findings?terminal={terminal_id}"));
        let mut findings: Vec<(String, String)> = body["findings"]
            .as_array()
            .map(|findings| {
                findings
                    .iter()
                    .map(|finding| {
                        let text = |key: &str| finding[key].as_str().unwrap_or("").to_string();
                        (text("code"), text("party"))
                    })
                    .filter(|(code, _)| {
                        code.starts_with("env.network.") || code.starts_with("env.clock")
                    })
                    .collect()
            })
            .unwrap_or_default();
        findings.sort();
        findings
    }

    /// Waits until `code` is open for the terminal, then checks it is the only network finding
    /// (besides `also`), with `party`; returns how long it took.
    fn expect(
        &self,
        terminal_id: &str,
        code: &str,
        party: &str,
        also: &[(&str, &str)],
    ) -> Duration {
        let started = Instant::now();
        let opened = wait_for(OPEN_WITHIN, || {
            self.findings(terminal_id)
                .iter()
                .any(|(open, _)| open == code)
                .then_some(())
        });
        let findings = self.findings(terminal_id);
        assert!(
            opened.is_some(),
            "{code} did not open within {OPEN_WITHIN:?}; open: {findings:?}\nagent log:\n{}",
            self.agent_log()
        );
        let mut expected: Vec<(String, String)> = std::iter::once((code, party))
            .chain(also.iter().copied())
            .map(|(code, party)| (code.to_string(), party.to_string()))
            .collect();
        expected.sort();
        assert_eq!(findings, expected, "agent log:\n{}", self.agent_log());
        started.elapsed()
    }

    /// The error the agent measured behind the open finding `code` (its `error` evidence).
    fn error_behind(&self, terminal_id: &str, code: &str) -> String {
        let body = self.collector.get_json(&format!(
            "/api/v1/findings?terminal={terminal_id}&code={code}"
        ));
        body["findings"][0]["evidence"]
            .as_array()
            .and_then(|evidence| evidence.iter().find(|entry| entry["name"] == "error"))
            .and_then(|entry| entry["value"].as_str())
            .unwrap_or_else(|| panic!("no error evidence for {code}: {body:#}"))
            .to_string()
    }

    /// [`Scene::expect`], and the error the agent measured.
    fn expect_error(&self, terminal_id: &str, code: &str, party: &str, error: &str) {
        self.expect(terminal_id, code, party, &[]);
        assert_eq!(self.error_behind(terminal_id, code), error, "{code}");
    }

    fn agent_log(&self) -> String {
        let log = self.agent.as_ref().map(Process::log).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(40).collect();
        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
    }
}

impl Drop for Scene {
    fn drop(&mut self) {
        // The agent and the servers end before their namespaces are deleted.
        self.agent.take();
        self.servers.clear();
    }
}

/// libfaketime's preload library, where distributions put it.
fn libfaketime() -> PathBuf {
    [
        "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1",
        "/usr/lib/aarch64-linux-gnu/faketime/libfaketime.so.1",
        "/usr/lib/faketime/libfaketime.so.1",
        "/usr/lib64/faketime/libfaketime.so.1",
        "/usr/local/lib/faketime/libfaketime.so.1",
    ]
    .iter()
    .map(PathBuf::from)
    .find(|path| path.exists())
    .unwrap_or_else(|| panic!("faketime is installed but libfaketime.so.1 is not where expected"))
}

fn a_host_refusing_the_connection_is_the_acquirers() {
    let mut scene = Scene::new();
    // The resolver answers, and nothing listens on the host's port: its kernel refuses.
    scene.serve(&[Serve::Dns(CARRIER_RESOLVER)]);
    scene.start_agent("T-REFUSED", CARRIER_RESOLVER, None);
    scene.expect_error(
        "T-REFUSED",
        "env.network.host_refused",
        "acquirer",
        "refused",
    );
}

fn a_host_resetting_the_connection_is_the_acquirers() {
    let mut scene = Scene::new();
    let servers = scene.healthy_servers();
    scene.serve(&servers);
    // The host's own firewall answers the payment port with a reset.
    scene.shop.router.nft(&format!(
        "add table inet host; \
         add chain inet host input {{ type filter hook input priority 0; }}; \
         add rule inet host input ip daddr {PAYMENT_HOST} tcp dport 443 reject with tcp reset"
    ));
    scene.start_agent("T-RESET", CARRIER_RESOLVER, None);
    scene.expect_error("T-RESET", "env.network.host_refused", "acquirer", "refused");
}

fn an_expired_certificate_served_by_the_host_is_the_acquirers() {
    let mut scene = Scene::new();
    let (certificate, key) = scene.certificate((2020, 1, 1), (2021, 1, 1));
    scene.serve(&[
        Serve::Dns(CARRIER_RESOLVER),
        Serve::Tls(PAYMENT_HOST, certificate, key),
    ]);
    scene.start_agent("T-EXPIRED", CARRIER_RESOLVER, None);
    scene.expect_error(
        "T-EXPIRED",
        "env.network.tls_failure",
        "acquirer",
        "certificate_expired",
    );
}

fn a_tls_alert_from_the_host_is_the_acquirers() {
    let mut scene = Scene::new();
    scene.serve(&[Serve::Dns(CARRIER_RESOLVER), Serve::TlsAlert(PAYMENT_HOST)]);
    scene.start_agent("T-ALERT", CARRIER_RESOLVER, None);
    scene.expect_error(
        "T-ALERT",
        "env.network.tls_failure",
        "acquirer",
        "handshake_failed",
    );
}

fn a_time_out_with_the_gateway_fine_is_the_network_providers() {
    let mut scene = Scene::new();
    let servers = scene.healthy_servers();
    scene.serve(&servers);
    // Lost beyond the router: the router answers (ARP, echo), the host's port never does.
    scene.shop.router.nft(&format!(
        "add table inet path; \
         add chain inet path input {{ type filter hook input priority 0; }}; \
         add rule inet path input ip daddr {PAYMENT_HOST} tcp dport 443 drop"
    ));
    scene.start_agent("T-TIMEOUT", CARRIER_RESOLVER, None);
    scene.expect_error(
        "T-TIMEOUT",
        "env.network.host_unreachable",
        "network_provider",
        "timeout",
    );
}

fn a_time_out_behind_a_router_filtering_echoes_is_still_the_network_providers() {
    let mut scene = Scene::new();
    let servers = scene.healthy_servers();
    scene.serve(&servers);
    // The router never answers an echo (many do not), and the host's port is lost beyond it:
    // the silent echo alone must not call the router dead.
    scene.shop.router.nft(&format!(
        "add table inet path; \
         add chain inet path input {{ type filter hook input priority 0; }}; \
         add rule inet path input icmp type echo-request drop; \
         add rule inet path input ip daddr {PAYMENT_HOST} tcp dport 443 drop"
    ));
    scene.start_agent("T-NOECHO", CARRIER_RESOLVER, None);
    scene.expect_error(
        "T-NOECHO",
        "env.network.host_unreachable",
        "network_provider",
        "timeout",
    );
}

fn a_link_down_is_the_merchants() {
    let mut scene = Scene::new();
    let servers = scene.healthy_servers();
    scene.serve(&servers);
    // The cable is pulled at the router's end: the terminal's interface loses its carrier.
    scene.shop.router.ip(&["link", "set", "r0", "down"]);
    scene.start_agent("T-LINK", CARRIER_RESOLVER, None);
    scene.expect_error("T-LINK", "env.network.link_down", "merchant", "no_carrier");
}

fn a_router_that_never_answered_is_the_merchants() {
    let mut scene = Scene::new();
    let servers = scene.healthy_servers();
    scene.serve(&servers);
    // Dead from the start: no echo was ever answered, the neighbour table decides.
    scene.shop.kill_router();
    scene.start_agent("T-NOGATEWAY", CARRIER_RESOLVER, None);
    scene.expect_error(
        "T-NOGATEWAY",
        "env.network.gateway_unreachable",
        "merchant",
        "unreachable",
    );
}

fn the_carriers_resolver_failing_is_the_network_providers() {
    let mut scene = Scene::new();
    scene.serve(&[Serve::DnsServfail(CARRIER_RESOLVER)]);
    scene.start_agent("T-CARRIER-SERVFAIL", CARRIER_RESOLVER, None);
    scene.expect_error(
        "T-CARRIER-SERVFAIL",
        "env.network.dns_failure",
        "network_provider",
        "servfail",
    );
    assert_labels(&scene, "T-CARRIER-SERVFAIL", CARRIER_RESOLVER);
}

fn the_carriers_resolver_silent_is_the_network_providers() {
    let mut scene = Scene::new();
    let servers = scene.healthy_servers();
    scene.serve(&servers);
    scene.shop.router.nft(&format!(
        "add table inet dns; \
         add chain inet dns input {{ type filter hook input priority 0; }}; \
         add rule inet dns input ip daddr {CARRIER_RESOLVER} udp dport 53 drop"
    ));
    scene.start_agent("T-CARRIER-SILENT", CARRIER_RESOLVER, None);
    scene.expect_error(
        "T-CARRIER-SILENT",
        "env.network.dns_failure",
        "network_provider",
        "timeout",
    );
}

fn the_routers_resolver_failing_is_the_merchants() {
    let mut scene = Scene::new();
    let servers = scene.healthy_servers();
    scene.serve(&servers);
    scene.serve(&[Serve::DnsServfail(ROUTER)]);
    scene.start_agent("T-ROUTER-SERVFAIL", ROUTER, None);
    scene.expect_error(
        "T-ROUTER-SERVFAIL",
        "env.network.dns_router_failure",
        "merchant",
        "servfail",
    );
    assert_labels(&scene, "T-ROUTER-SERVFAIL", ROUTER);
}

fn the_routers_resolver_silent_is_the_merchants() {
    let mut scene = Scene::new();
    let servers = scene.healthy_servers();
    scene.serve(&servers);
    // The router routes (and answers echoes) but its DNS forwarder hangs.
    scene.shop.router.nft(&format!(
        "add table inet dns; \
         add chain inet dns input {{ type filter hook input priority 0; }}; \
         add rule inet dns input ip daddr {ROUTER} udp dport 53 drop"
    ));
    scene.start_agent("T-ROUTER-SILENT", ROUTER, None);
    scene.expect_error(
        "T-ROUTER-SILENT",
        "env.network.dns_router_failure",
        "merchant",
        "timeout",
    );
}

/// The terminal's measured network, as the collector keeps its labels.
fn assert_labels(scene: &Scene, terminal_id: &str, resolver: &str) {
    let detail = scene
        .collector
        .get_json(&format!("/api/v1/terminals/{terminal_id}"));
    let text = detail.to_string();
    assert!(
        text.contains(SHOP_SUBNET) && text.contains(&format!("\"{resolver}\"")),
        "the gateway and resolver labels are not in {detail:#}"
    );
}

fn the_terminals_clock_breaking_tls_is_operations() {
    let mut scene = Scene::new();
    // Valid from yesterday to tomorrow by the real clock; expired two days ahead.
    let today = time::OffsetDateTime::now_utc().date();
    let day = |date: time::Date| (date.year(), u8::from(date.month()), date.day());
    let (yesterday, tomorrow) = (
        today.previous_day().unwrap_or(today),
        today.next_day().unwrap_or(today),
    );
    let (certificate, key) = scene.certificate(day(yesterday), day(tomorrow));
    scene.serve(&[
        Serve::Dns(CARRIER_RESOLVER),
        Serve::Tls(PAYMENT_HOST, certificate, key),
    ]);
    scene.start_agent("T-CLOCK", CARRIER_RESOLVER, Some("+2d"));
    scene.expect(
        "T-CLOCK",
        "env.clock_breaks_tls",
        "operations",
        &[("env.clock_skew", "operations")],
    );
    assert_eq!(
        scene.error_behind("T-CLOCK", "env.clock_breaks_tls"),
        "certificate_expired"
    );
}

fn a_router_that_dies_is_one_gateway_finding_at_once() {
    let mut scene = Scene::new();
    let servers = scene.healthy_servers();
    scene.serve(&servers);
    scene.start_agent("T-DIES", CARRIER_RESOLVER, None);
    // Healthy first: the terminal reports, and has seen its router answer.
    let healthy = wait_for(OPEN_WITHIN, || {
        let detail = scene.collector.get_json("/api/v1/terminals/T-DIES");
        (detail["sequence"].as_u64().unwrap_or(0) >= 3).then_some(())
    });
    assert!(healthy.is_some(), "agent log:\n{}", scene.agent_log());
    assert!(
        scene.findings("T-DIES").is_empty(),
        "{:?}",
        scene.findings("T-DIES")
    );
    // The router dies with its link up: its neighbour entry stays complete for a while.
    scene.shop.kill_router();
    let killed = Instant::now();
    let mut seen: Vec<(String, String)> = Vec::new();
    let opened = wait_for(OPEN_WITHIN, || {
        for finding in scene.findings("T-DIES") {
            if !seen.contains(&finding) {
                seen.push(finding);
            }
        }
        seen.iter()
            .any(|(code, _)| code == "env.network.gateway_unreachable")
            .then(|| killed.elapsed())
    });
    let Some(detected) = opened else {
        panic!(
            "no gateway finding; seen {seen:?}\nagent log:\n{}",
            scene.agent_log()
        );
    };
    // Let a few more cycles run: nothing else may open, no DNS finding ever.
    std::thread::sleep(Duration::from_secs(4));
    for finding in scene.findings("T-DIES") {
        if !seen.contains(&finding) {
            seen.push(finding);
        }
    }
    assert_eq!(
        seen,
        [(
            "env.network.gateway_unreachable".to_string(),
            "merchant".to_string()
        )],
        "agent log:\n{}",
        scene.agent_log()
    );
    let history = scene
        .collector
        .get_json("/api/v1/terminals/T-DIES")
        .to_string();
    assert!(
        !history.contains("dns_failure") && !history.contains("host_unreachable"),
        "{history}"
    );
    // Two observations (one probe interval apart, the second a confirming cycle), delivery
    // and evaluation: well within the 24–54 s of the kernel's neighbour timers.
    eprintln!("a dead router was named {detected:?} after it died");
    assert!(detected < Duration::from_secs(10), "{detected:?}");
}
