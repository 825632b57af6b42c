//! The data plan per terminal, as the carrier bills it: the real agent (default settings: the
//! required keys and two targets) in a terminal network namespace behind a router namespace,
//! the payment hosts, the carrier's resolver and the real collector (HTTPS, run with `ip netns
//! exec` so it can listen for UDP too) beyond the router in a carrier namespace. nftables
//! counters in the terminal's namespace on its only interface count the IP bytes both ways by
//! kind: reports (to and from the collector, TCP and UDP), probes (to and from the payment
//! hosts: TCP, TLS, HTTP, ICMP; DNS to the resolver; the gateway's echo), the rest, and, apart,
//! the payments of a POS application stand-in (from its reserved source ports: not the agent's).
//!
//! The two targets are an HTTPS payment host presenting a realistic chain (RSA-2048 root →
//! intermediate → leaf, made with `openssl` at each run; leaf, intermediate and root sent, about
//! 4 KB, like a real payment host's) and a plain TCP payment switch. Conditions, run in parallel, each
//! in its own namespaces:
//! - `quiet`: a quiet healthy terminal;
//! - `nat`: the router is a NAT whose conntrack forgets idle TCP and UDP flows after 30 s and
//!   drops their later packets, so connections must be opened again;
//! - `flap`: the HTTPS payment host drops everything for 60 s, then works for 60 s, and so on;
//! - `payments`: the quiet terminal with a POS application paying through the switch (connect,
//!   a 320-byte request, a 240-byte reply, the connection held 1.5 s, close) every
//!   `--payment-interval` seconds (60 by default);
//! - `flap-payments`: the switch flapping like `flap`'s host while the POS app pays through
//!   it (its failed payments are what a passive watch sees);
//! - `control`: the quiet terminal with the control long-poll held 60 s and TCP keepalives
//!   every 20 s instead of the defaults' 1 800 s and 300 s: a window holds enough polls and
//!   keepalives to price each (the collector's TCP bytes are counted apart from its UDP ones:
//!   with datagram delivery, after the start, TCP to the collector is the long-poll);
//! - `no-control`: the quiet terminal without the long-poll (`control_hold_seconds = 0`).
//!
//! After a warm-up (the collector has the terminal's first report, then 20 s; its bytes are
//! printed apart: what the agent's start costs) the counters are reset and the window runs
//! `--minutes`; bytes per 30-day month are extrapolated from it. Events rarer than the window
//! are missing from it (or, caught once, over-weighted): the window should be as long as the
//! agent's longest regular period, or such events added from their measured cost. The
//! agent's own count (its budget's account file in `state_dir`, written with each report,
//! read at the window's start and end, extrapolated over the span between the two writes: a
//! window needs two reports in it, ten minutes at today's 300 s report interval) is printed beside nft's, and the
//! month so far as the collector shows it (`data_usage` in `/api/v1/terminals/<id>`: it rides
//! with full reports, so it lags); old agents keep neither: the columns show a dash.
//!
//! Run: `bench/dataplan.sh [--minutes N] [--agent PATH] [--collector PATH]` (builds what it
//! needs; 10 minutes per condition by default, the conditions at once). Needs root, `ip`, `nft`,
//! `ethtool`, `openssl` and `curl`. Traffic stays inside the namespaces it creates; every
//! process and namespace is removed when it ends, on a panic too (the script also cleans up
//! after an interrupt).
#![allow(
    clippy::unwrap_used,
    reason = "a benchmark harness: a failed unwrap stops the run with the location"
)]

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use posmon_e2e_tests::netns::{
    Serve, Uplink, CARRIER_RESOLVER, COLLECTOR_HOST, PAYMENT_HOST, PAYMENT_NAME, PAYMENT_PORTS,
    ROUTER, SWITCH_HOST,
};
use posmon_e2e_tests::{wait_for, Process};
use serde_json::Value;

const TERMINAL_ID: &str = "T-0001";
const COLLECTOR_NAME: &str = "collector.test";
const COLLECTOR_PORT: u16 = 8443;
const SWITCH_NAME: &str = "switch.pay.test";
const SWITCH_PORT: u16 = 8583;
/// How long the `nat` condition's router remembers an idle flow.
const NAT_IDLE_SECONDS: u32 = 30;
/// The `flap` condition's payment host is down this long, then up as long.
const FLAP_PERIOD: Duration = Duration::from_secs(60);
/// After the collector has the first report: the agent's start is not its steady state.
const WARM_UP: Duration = Duration::from_secs(20);
const MONTH_SECONDS: f64 = 30.0 * 86_400.0;
const MIB: f64 = 1_048_576.0;

/// The kinds of traffic, each an nft counter of both directions, in the order they are matched.
/// `payments` is the POS stand-in's, not the agent's.
const KINDS: [(&str, &str); 7] = [
    ("payments", "payments (the POS app's, not counted)"),
    ("reports", "reports (collector, UDP datagrams)"),
    (
        "collector_tcp",
        "collector over TCP (the control long-poll; reports by HTTPS)",
    ),
    ("targets", "probes: payment hosts (TCP, TLS, HTTP, ICMP)"),
    ("dns", "probes: DNS (the resolver)"),
    ("gateway", "probes: gateway echo"),
    ("rest", "the rest"),
];

#[derive(Debug, Clone, Copy, PartialEq)]
enum Condition {
    Quiet,
    Nat,
    Flap,
    Payments,
    FlapPayments,
    Control,
    NoControl,
}

const ALL_CONDITIONS: [Condition; 7] = [
    Condition::Quiet,
    Condition::Nat,
    Condition::Flap,
    Condition::Payments,
    Condition::FlapPayments,
    Condition::Control,
    Condition::NoControl,
];

/// The `control` condition's long-poll hold and keepalive, seconds.
const CONTROL_HOLD: u64 = 60;
const CONTROL_KEEPALIVE: u64 = 20;

impl Condition {
    fn name(self) -> &'static str {
        match self {
            Condition::Quiet => "quiet",
            Condition::Nat => "nat",
            Condition::Flap => "flap",
            Condition::Payments => "payments",
            Condition::FlapPayments => "flap-payments",
            Condition::Control => "control",
            Condition::NoControl => "no-control",
        }
    }

    fn parse(name: &str) -> Condition {
        ALL_CONDITIONS
            .into_iter()
            .find(|condition| condition.name() == name)
            .unwrap_or_else(|| {
                panic!(
                    "unknown condition {name:?}: quiet, nat, flap, payments, flap-payments, control or no-control"
                )
            })
    }

    fn describe(self, options: &Options) -> String {
        match self {
            Condition::Quiet => "a quiet healthy terminal".to_string(),
            Condition::Nat => {
                format!("a NAT forgetting idle TCP and UDP flows after {NAT_IDLE_SECONDS} s")
            }
            Condition::Flap => format!(
                "the HTTPS payment host down {0} s / up {0} s (packets dropped)",
                FLAP_PERIOD.as_secs()
            ),
            Condition::Payments => format!(
                "quiet, a POS app paying through the switch every {} s",
                options.payment_seconds
            ),
            Condition::FlapPayments => format!(
                "the switch down {0} s / up {0} s (packets dropped), a POS app paying through it every {1} s",
                FLAP_PERIOD.as_secs(),
                options.payment_seconds
            ),
            Condition::Control => format!(
                "quiet, the control long-poll held {CONTROL_HOLD} s, TCP keepalives every {CONTROL_KEEPALIVE} s"
            ),
            Condition::NoControl => "quiet, without the control long-poll".to_string(),
        }
    }

    /// Keys this condition adds to the agent's config.
    fn agent_keys(self) -> String {
        match self {
            Condition::Control => format!(
                "control_hold_seconds = {CONTROL_HOLD}\ncontrol_keepalive_seconds = {CONTROL_KEEPALIVE}\n"
            ),
            Condition::NoControl => "control_hold_seconds = 0\n".to_string(),
            _ => String::new(),
        }
    }

    /// The host this condition makes flap, if it does.
    fn flapping(self) -> Option<&'static str> {
        match self {
            Condition::Flap => Some(PAYMENT_HOST),
            Condition::FlapPayments => Some(SWITCH_HOST),
            Condition::Quiet
            | Condition::Nat
            | Condition::Payments
            | Condition::Control
            | Condition::NoControl => None,
        }
    }

    fn pays(self) -> bool {
        matches!(self, Condition::Payments | Condition::FlapPayments)
    }
}

struct Options {
    window: Duration,
    agent: PathBuf,
    collector: PathBuf,
    conditions: Vec<Condition>,
    payment_seconds: u64,
}

fn options() -> Options {
    let mut options = Options {
        window: Duration::from_secs(600),
        agent: PathBuf::from("target/release/posmon-agent"),
        collector: PathBuf::from("target/release/posmon-collector"),
        conditions: ALL_CONDITIONS.to_vec(),
        payment_seconds: 60,
    };
    // `cargo bench` adds `--bench`.
    let mut arguments = std::env::args().skip(1).filter(|a| a != "--bench");
    while let Some(flag) = arguments.next() {
        let mut value = || {
            arguments
                .next()
                .unwrap_or_else(|| panic!("{flag} needs a value"))
        };
        match flag.as_str() {
            "--minutes" => {
                let minutes: f64 = value().parse().unwrap();
                options.window = Duration::from_secs_f64(minutes * 60.0);
            }
            "--agent" => options.agent = PathBuf::from(value()),
            "--collector" => options.collector = PathBuf::from(value()),
            "--conditions" => {
                options.conditions = value().split(',').map(Condition::parse).collect();
            }
            "--payment-interval" => options.payment_seconds = value().parse().unwrap(),
            other => panic!(
                "unknown argument {other}: --minutes N --agent PATH --collector PATH \
                 --conditions quiet,nat,flap,payments,flap-payments,control,no-control --payment-interval SECONDS"
            ),
        }
    }
    for binary in [&mut options.agent, &mut options.collector] {
        *binary = std::fs::canonicalize(&*binary)
            .unwrap_or_else(|error| panic!("{}: {error}", binary.display()));
    }
    options
}

/// Certificates made with `openssl`: one RSA-2048 root, an intermediate, and a leaf for each
/// server (with the extensions of a public one: AIA, CRL, policies, six names and three
/// certificate timestamps' worth of bytes); each server's chain file holds its leaf, the
/// intermediate and the root, as many real servers send.
struct Pki {
    root: PathBuf,
    payment_chain: PathBuf,
    payment_key: PathBuf,
    collector_chain: PathBuf,
    collector_key: PathBuf,
}

const OPENSSL_EXTENSIONS: &str = "\
[intermediate]
basicConstraints = critical,CA:TRUE,pathlen:0
keyUsage = critical,digitalSignature,keyCertSign,cRLSign
extendedKeyUsage = serverAuth,clientAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
authorityInfoAccess = OCSP;URI:http://ocsp.bench-trust.test,caIssuers;URI:http://cacerts.bench-trust.test/BenchTrustRootCA-R1.crt
crlDistributionPoints = URI:http://crl.bench-trust.test/BenchTrustRootCA-R1.crl
certificatePolicies = 2.23.140.1.2.2,2.23.140.1.2.1,1.3.6.1.4.1.55555.1.1.1
[leaf]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature,keyEncipherment
extendedKeyUsage = serverAuth,clientAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
authorityInfoAccess = OCSP;URI:http://ocsp.bench-trust.test,caIssuers;URI:http://cacerts.bench-trust.test/BenchTrustTLSRSAIssuingCA2026.crt
crlDistributionPoints = URI:http://crl.bench-trust.test/BenchTrustTLSRSAIssuingCA2026.crl
certificatePolicies = 2.23.140.1.2.2,1.3.6.1.4.1.55555.1.2.1
# Stands for the signed certificate timestamps of three CT logs a public leaf carries.
1.3.6.1.4.1.11129.2.4.2 = ASN1:FORMAT:HEX,OCTETSTRING:SCT_LIST
";

/// The size of three signed certificate timestamps in a public leaf.
const SCT_LIST_BYTES: usize = 362;

fn openssl(dir: &Path, arguments: &[&str]) {
    let output = Command::new("openssl")
        .args(arguments)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|error| panic!("openssl: {error}"));
    assert!(
        output.status.success(),
        "openssl {arguments:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A 16-byte random serial number in hex, as public CAs use.
fn serial() -> String {
    use std::io::Read;
    let mut buffer = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut file| file.read_exact(&mut buffer))
        .unwrap();
    buffer[0] &= 0x7f;
    buffer.iter().fold("0x".to_string(), |mut text, byte| {
        let _ = write!(text, "{byte:02x}");
        text
    })
}

fn make_pki(dir: &Path) -> Pki {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("extensions.cnf"), OPENSSL_EXTENSIONS).unwrap();
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-sha256",
            "-days",
            "7300",
            "-keyout",
            "root.key",
            "-out",
            "root.pem",
            "-subj",
            "/C=US/O=Bench Trust Services LLC/OU=www.bench-trust.test/CN=Bench Trust Root CA R1",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,digitalSignature,keyCertSign,cRLSign",
        ],
    );
    let sign = |name: &str, subject: &str, issuer: &str, extensions: &str, names: Option<&str>| {
        let key = format!("{name}.key");
        let request = format!("{name}.csr");
        let certificate = format!("{name}.pem");
        openssl(
            dir,
            &[
                "req", "-new", "-newkey", "rsa:2048", "-nodes", "-keyout", &key, "-out", &request,
                "-subj", subject,
            ],
        );
        let mut extension_file =
            OPENSSL_EXTENSIONS.replace("SCT_LIST", &"5a".repeat(SCT_LIST_BYTES));
        if let Some(names) = names {
            let _ = writeln!(extension_file, "subjectAltName = {names}");
        }
        let extension_path = format!("{name}.cnf");
        std::fs::write(dir.join(&extension_path), extension_file).unwrap();
        let (issuer_certificate, issuer_key) = (format!("{issuer}.pem"), format!("{issuer}.key"));
        let serial = serial();
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-sha256",
                "-in",
                &request,
                "-CA",
                &issuer_certificate,
                "-CAkey",
                &issuer_key,
                "-set_serial",
                &serial,
                "-days",
                "397",
                "-extfile",
                &extension_path,
                "-extensions",
                extensions,
                "-out",
                &certificate,
            ],
        );
        (dir.join(certificate), dir.join(key))
    };
    let (intermediate, _) = sign(
        "intermediate",
        "/C=US/O=Bench Trust Services LLC/CN=Bench Trust TLS RSA Issuing CA 2026",
        "root",
        "intermediate",
        None,
    );
    // Many payment hosts send the root too (or a cross-signed one): leaf, intermediate, root.
    let intermediate_pem = std::fs::read_to_string(&intermediate).unwrap()
        + &std::fs::read_to_string(dir.join("root.pem")).unwrap();
    let server = |name: &str, host: &str| {
        let (leaf, key) = sign(
            name,
            &format!("/C=CN/ST=Shanghai/L=Shanghai/O=Bench Acquiring Services Co., Ltd./CN={host}"),
            "intermediate",
            "leaf",
            Some(&format!(
                "DNS:{host},DNS:*.{host},DNS:www.{host},DNS:api.{host},DNS:pos.{host},DNS:terminals.{host}"
            )),
        );
        let chain = dir.join(format!("{name}-chain.pem"));
        let leaf_pem = std::fs::read_to_string(&leaf).unwrap();
        std::fs::write(&chain, format!("{leaf_pem}{intermediate_pem}")).unwrap();
        (chain, key)
    };
    let (payment_chain, payment_key) = server("payment", PAYMENT_NAME);
    let (collector_chain, collector_key) = server("collector", COLLECTOR_NAME);
    Pki {
        root: dir.join("root.pem"),
        payment_chain,
        payment_key,
        collector_chain,
        collector_key,
    }
}

/// The DER bytes of the certificates of a PEM chain (what a TLS handshake carries).
fn chain_der_bytes(chain: &Path) -> usize {
    let text = std::fs::read_to_string(chain).unwrap();
    text.split("-----BEGIN CERTIFICATE-----")
        .skip(1)
        .map(|block| {
            let base64: String = block
                .split("-----END CERTIFICATE-----")
                .next()
                .unwrap_or("")
                .chars()
                .filter(|c| !c.is_whitespace())
                .collect();
            let padding = base64.chars().rev().take_while(|&c| c == '=').count();
            base64.len() / 4 * 3 - padding
        })
        .sum()
}

/// The nft table counting the terminal's traffic on `t0`, both ways, by kind.
fn counters_script() -> String {
    let (first, last) = PAYMENT_PORTS;
    let mut script = String::from("add table inet dataplan; ");
    for (kind, _) in KINDS {
        let _ = write!(script, "add counter inet dataplan {kind}; ");
    }
    for (chain, hook, interface, local, remote) in [
        ("up", "output", "oifname", "sport", "daddr"),
        ("down", "input", "iifname", "dport", "saddr"),
    ] {
        let _ = write!(
            script,
            "add chain inet dataplan {chain} {{ type filter hook {hook} priority -300; }}; \
             add rule inet dataplan {chain} {interface} != \"t0\" return; \
             add rule inet dataplan {chain} tcp {local} {first}-{last} counter name \"payments\" return; \
             add rule inet dataplan {chain} ip {remote} {COLLECTOR_HOST} meta l4proto tcp counter name \"collector_tcp\" return; \
             add rule inet dataplan {chain} ip {remote} {COLLECTOR_HOST} counter name \"reports\" return; \
             add rule inet dataplan {chain} ip {remote} {{ {PAYMENT_HOST}, {SWITCH_HOST} }} counter name \"targets\" return; \
             add rule inet dataplan {chain} ip {remote} {CARRIER_RESOLVER} counter name \"dns\" return; \
             add rule inet dataplan {chain} ip {remote} {ROUTER} counter name \"gateway\" return; \
             add rule inet dataplan {chain} counter name \"rest\"; "
        );
    }
    script
}

/// (packets, bytes) per kind.
type Counters = BTreeMap<String, (u64, u64)>;

fn read_counters(uplink: &Uplink) -> Counters {
    let text = uplink
        .terminal
        .output(
            "nft",
            &["-j", "list", "counters", "table", "inet", "dataplan"],
        )
        .unwrap_or_else(|| panic!("nft cannot list the counters"));
    let body: Value = serde_json::from_str(&text).unwrap();
    body["nftables"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|item| {
            let counter = item.get("counter")?;
            Some((
                counter["name"].as_str()?.to_string(),
                (counter["packets"].as_u64()?, counter["bytes"].as_u64()?),
            ))
        })
        .collect()
}

/// GET a collector API path from inside the carrier's namespace.
fn api(uplink: &Uplink, pki: &Pki, path: &str) -> Option<Value> {
    let root = pki.root.display().to_string();
    let resolve = format!("{COLLECTOR_NAME}:{COLLECTOR_PORT}:{COLLECTOR_HOST}");
    let url = format!("https://{COLLECTOR_NAME}:{COLLECTOR_PORT}{path}");
    let text = uplink.carrier.output(
        "curl",
        &[
            "-sf",
            "--max-time",
            "5",
            "--cacert",
            &root,
            "--resolve",
            &resolve,
            &url,
        ],
    )?;
    serde_json::from_str(&text).ok()
}

/// The first `data_usage` object anywhere in `value` (the terminal's API answer).
fn find_data_usage(value: &Value) -> Option<&Value> {
    match value {
        Value::Object(map) => map
            .get("data_usage")
            .filter(|usage| usage.get("report_bytes").is_some())
            .or_else(|| map.values().find_map(find_data_usage)),
        Value::Array(items) => items.iter().find_map(find_data_usage),
        _ => None,
    }
}

/// The month so far as the collector last heard it from the agent (`data_usage.total_bytes`,
/// or the sum of its kinds): reports carry it with their full sections (hourly) and when the
/// agent's schedule moves, so it lags.
fn collector_usage(terminal: &Value) -> Option<u64> {
    let usage = find_data_usage(terminal)?;
    usage["total_bytes"].as_u64().or_else(|| {
        ["report_bytes", "probe_bytes", "other_bytes"]
            .iter()
            .map(|key| usage[key].as_u64())
            .sum()
    })
}

/// The agent's own account (reports, probes, other bytes this month) and when it wrote it
/// (unix seconds), from its budget's state file in `state_dir` (`data-usage`, key=value lines);
/// `None` for agents without one.
fn agent_account(state_dir: &Path) -> Option<([u64; 3], u64)> {
    let text = std::fs::read_to_string(state_dir.join("data-usage")).ok()?;
    let value = |key: &str| {
        text.lines()
            .find_map(|line| line.strip_prefix(key)?.strip_prefix('='))
            .and_then(|value| value.trim().parse::<u64>().ok())
    };
    Some((
        [
            value("report_bytes")?,
            value("probe_bytes")?,
            value("other_bytes")?,
        ],
        value("updated_at")?,
    ))
}

struct Measured {
    condition: Condition,
    window: Duration,
    counters: Counters,
    /// The agent's own count (its account file) from the window's start to its end, and how
    /// long apart the two writes were, when it keeps one.
    agent: Option<([u64; 3], Duration)>,
    /// The month so far as the collector shows it from the agent's `data_usage`, at the end.
    collector_usage: Option<u64>,
    /// Reports the collector acknowledged in the window (the terminal's sequence numbers).
    reports: Option<u64>,
    /// The agent's bytes from its start to the window (its first full probes and reports,
    /// not extrapolated: what a restart costs), and how long that was.
    warm_up: (u64, Duration),
}

/// The agent's bytes among `counters` (every kind but the payments).
fn agent_bytes(counters: &Counters) -> u64 {
    KINDS
        .iter()
        .filter(|(kind, _)| *kind != "payments")
        .filter_map(|(kind, _)| counters.get(*kind))
        .map(|(_, bytes)| bytes)
        .sum()
}

fn sequence(terminal: Option<&Value>) -> Option<u64> {
    terminal?["sequence"].as_u64()
}

fn measure(condition: Condition, options: &Options, pki: &Pki, dir: &Path) -> Measured {
    std::fs::create_dir_all(dir).unwrap();
    let uplink = Uplink::new();
    if condition == Condition::Nat {
        uplink.nat(NAT_IDLE_SECONDS);
    }
    let names = [
        (PAYMENT_NAME, PAYMENT_HOST),
        (SWITCH_NAME, SWITCH_HOST),
        (COLLECTOR_NAME, COLLECTOR_HOST),
    ]
    .map(|(name, address)| (name.to_string(), address.to_string()))
    .to_vec();
    let hosts = uplink.carrier.serve(
        dir,
        "hosts",
        &[
            Serve::Names(CARRIER_RESOLVER, names),
            Serve::Https(
                PAYMENT_HOST,
                pki.payment_chain.clone(),
                pki.payment_key.clone(),
            ),
            Serve::Switch(SWITCH_HOST, SWITCH_PORT),
        ],
    );
    let collector_config = dir.join("collector.toml");
    std::fs::write(
        &collector_config,
        format!(
            "listen = \"{COLLECTOR_HOST}:{COLLECTOR_PORT}\"\ndata_dir = {:?}\n[tls]\ncert_file = {:?}\nkey_file = {:?}\n",
            dir.join("collector-data").display().to_string(),
            pki.collector_chain.display().to_string(),
            pki.collector_key.display().to_string(),
        ),
    )
    .unwrap();
    let collector_config_text = collector_config.display().to_string();
    let collector_stdout = dir.join("collector.out");
    let collector = uplink.carrier.spawn_output(
        &options.collector,
        &["serve", "--config", &collector_config_text],
        &[],
        Some(&collector_stdout),
        &dir.join("collector.log"),
    );
    let listening = wait_for(Duration::from_secs(30), || {
        std::fs::read_to_string(&collector_stdout)
            .ok()
            .filter(|text| text.contains("listening on"))
    });
    assert!(
        listening.is_some(),
        "{}: the collector did not start:\n{}",
        condition.name(),
        collector.log()
    );
    let token = Command::new(&options.collector)
        .args(["token", "--config", &collector_config_text, TERMINAL_ID])
        .output()
        .unwrap();
    assert!(
        token.status.success(),
        "{}",
        String::from_utf8_lossy(&token.stderr)
    );
    let token = String::from_utf8_lossy(&token.stdout).trim().to_string();

    uplink.terminal.set_resolver(CARRIER_RESOLVER);
    uplink.terminal.nft(&counters_script());
    // The defaults: the required keys (a private PKI's CA for the collector and the HTTPS
    // target) and the two targets.
    let agent_config = dir.join("agent.toml");
    std::fs::write(
        &agent_config,
        format!(
            "terminal_id = \"{TERMINAL_ID}\"\ncollector_url = \"https://{COLLECTOR_NAME}:{COLLECTOR_PORT}\"\ntoken = \"{token}\"\nstate_dir = {:?}\ncollector_ca_file = {:?}\n{}\n[[targets]]\nname = \"payment-host\"\naddress = \"https://{PAYMENT_NAME}/health\"\nca_file = {:?}\n\n[[targets]]\nname = \"payment-switch\"\naddress = \"{SWITCH_NAME}:{SWITCH_PORT}\"\n",
            dir.join("agent-state").display().to_string(),
            pki.root.display().to_string(),
            condition.agent_keys(),
            pki.root.display().to_string(),
        ),
    )
    .unwrap();
    let started = Instant::now();
    let mut agent = uplink.terminal.spawn(
        &options.agent,
        &["run", "--config", &agent_config.display().to_string()],
        &[],
        &dir.join("agent.log"),
    );
    let pos: Option<Process> = condition.pays().then(|| {
        uplink.terminal.serve(
            dir,
            "pos",
            &[Serve::Pos(
                format!("{SWITCH_HOST}:{SWITCH_PORT}").parse().unwrap(),
                options.payment_seconds,
            )],
        )
    });
    let path = format!("/api/v1/terminals/{TERMINAL_ID}");
    let first = wait_for(Duration::from_secs(120), || {
        sequence(api(&uplink, pki, &path).as_ref())
    });
    assert!(
        first.is_some(),
        "{}: the collector never had a report; agent log:\n{}",
        condition.name(),
        agent.log()
    );
    std::thread::sleep(WARM_UP);

    let before = api(&uplink, pki, &path);
    let state_dir = dir.join("agent-state");
    let account_before = agent_account(&state_dir);
    let warm_up = (agent_bytes(&read_counters(&uplink)), started.elapsed());
    uplink.terminal.run(
        "nft",
        &["reset", "counters", "table", "inet", "dataplan"],
        true,
    );
    let start = Instant::now();
    let flapping = condition.flapping();
    if flapping.is_some() {
        uplink.carrier.nft(
            "add table inet flap; add chain inet flap input { type filter hook input priority 0; }",
        );
    }
    let mut down = false;
    let mut next_flip = FLAP_PERIOD;
    while start.elapsed() < options.window {
        std::thread::sleep(Duration::from_millis(200));
        if let Some(host) = flapping.filter(|_| start.elapsed() >= next_flip) {
            down = !down;
            next_flip += FLAP_PERIOD;
            uplink.carrier.nft(&if down {
                format!("add rule inet flap input ip daddr {host} drop")
            } else {
                "flush chain inet flap input".to_string()
            });
        }
        assert!(
            agent.exited().is_none(),
            "{}: the agent stopped:\n{}",
            condition.name(),
            agent.log()
        );
    }
    let counters = read_counters(&uplink);
    let window = start.elapsed();
    let after = api(&uplink, pki, &path);
    let agent_count = match (account_before, agent_account(&state_dir)) {
        (Some((before, first)), Some((after, last))) if last > first => Some((
            [0, 1, 2].map(|i| after[i].saturating_sub(before[i])),
            Duration::from_secs(last - first),
        )),
        _ => None,
    };
    let collector_usage = after.as_ref().and_then(collector_usage);
    let reports = sequence(after.as_ref())
        .zip(sequence(before.as_ref()))
        .map(|(after, before)| after.saturating_sub(before));
    drop(pos);
    drop(agent);
    drop(collector);
    drop(hosts);
    drop(uplink);
    Measured {
        condition,
        window,
        counters,
        agent: agent_count,
        collector_usage,
        reports,
        warm_up,
    }
}

fn per_month(bytes: u64, window: Duration) -> f64 {
    bytes as f64 * MONTH_SECONDS / window.as_secs_f64() / MIB
}

fn print_tables(results: &[Measured], options: &Options) {
    println!(
        "| condition | kind | packets | bytes in the window | MiB per 30-day month | the agent's own count (its account file), MiB/month |"
    );
    println!("| --- | --- | ---: | ---: | ---: | ---: |");
    for measured in results {
        let name = measured.condition.name();
        let window = measured.window;
        let count = |kind: &str| measured.counters.get(kind).copied().unwrap_or((0, 0));
        let own = |index: Option<usize>| match (measured.agent, index) {
            (Some((agent, span)), Some(index)) => format!("{:.2}", per_month(agent[index], span)),
            (Some((agent, span)), None) => format!("{:.2}", per_month(agent.iter().sum(), span)),
            (None, _) => "—".to_string(),
        };
        for (kind, label) in KINDS {
            let (packets, bytes) = count(kind);
            let index = match kind {
                "reports" => Some(Some(0)),
                "rest" => Some(Some(2)),
                _ => None,
            };
            println!(
                "| {name} | {label} | {packets} | {bytes} | {:.2} | {} |",
                per_month(bytes, window),
                index.map_or(String::new(), own)
            );
        }
        let probes: Vec<(u64, u64)> = ["targets", "dns", "gateway"].map(count).to_vec();
        let (probe_packets, probe_bytes) = probes
            .iter()
            .fold((0, 0), |(p, b), (packets, bytes)| (p + packets, b + bytes));
        println!(
            "| {name} | probes, all | {probe_packets} | {probe_bytes} | {:.2} | {} |",
            per_month(probe_bytes, window),
            own(Some(1))
        );
        let (total_packets, total_bytes) = KINDS
            .iter()
            .filter(|(kind, _)| *kind != "payments")
            .map(|(kind, _)| count(kind))
            .fold((0, 0), |(p, b), (packets, bytes)| (p + packets, b + bytes));
        println!(
            "| {name} | **the agent's total** | {total_packets} | {total_bytes} | **{:.2}** | {} |",
            per_month(total_bytes, window),
            own(None)
        );
    }
    println!();
    println!(
        "| condition | window | reports acknowledged | the agent's total, MiB per 30-day month | the agent's start: bytes before the window | the month so far at the collector (data_usage), bytes |"
    );
    println!("| --- | ---: | ---: | ---: | ---: | ---: |");
    for measured in results {
        let (warm_up_bytes, warm_up_time) = measured.warm_up;
        println!(
            "| {} ({}) | {:.0} s | {} | {:.2} | {warm_up_bytes} in {:.0} s | {} |",
            measured.condition.name(),
            measured.condition.describe(options),
            measured.window.as_secs_f64(),
            measured
                .reports
                .map_or("—".to_string(), |reports| reports.to_string()),
            per_month(agent_bytes(&measured.counters), measured.window),
            warm_up_time.as_secs_f64(),
            measured
                .collector_usage
                .map_or("—".to_string(), |bytes| bytes.to_string()),
        );
    }
}

fn main() -> std::process::ExitCode {
    if posmon_e2e_tests::netns::serve_if_asked() {
        return std::process::ExitCode::FAILURE;
    }
    let options = options();
    let dir = tempfile::tempdir().unwrap();
    let pki = make_pki(&dir.path().join("pki"));
    eprintln!(
        "The payment host's chain: {} bytes of DER (leaf, intermediate, root); a window of {:.0} s per condition; conditions {}.",
        chain_der_bytes(&pki.payment_chain),
        options.window.as_secs_f64(),
        options
            .conditions
            .iter()
            .map(|condition| condition.name())
            .collect::<Vec<_>>()
            .join(", ")
    );
    let mut measured = Vec::new();
    let mut failures = Vec::new();
    std::thread::scope(|scope| {
        let handles: Vec<_> = options
            .conditions
            .iter()
            .map(|&condition| {
                let (options, pki) = (&options, &pki);
                let dir = dir.path().join(condition.name());
                (
                    condition,
                    scope.spawn(move || measure(condition, options, pki, &dir)),
                )
            })
            .collect();
        for (condition, handle) in handles {
            match handle.join() {
                Ok(result) => measured.push(result),
                Err(_) => failures.push(condition.name()),
            }
        }
    });
    print_tables(&measured, &options);
    for failure in &failures {
        eprintln!("The condition {failure} failed (its panic is above).");
    }
    if failures.is_empty() {
        std::process::ExitCode::SUCCESS
    } else {
        std::process::ExitCode::FAILURE
    }
}
