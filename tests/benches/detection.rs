//! Detection latency: how long after a fault a person hears of it, and after the repair that it
//! is over. One target the benchmark owns (a TCP listener on loopback: closing it is the fault,
//! listening again on the same port the repair) is watched at once by
//! - posmon with its default settings (release collector and agent, a generic webhook
//!   receiver on a sink the benchmark owns), and by posmon with tuned intervals beside it;
//! - posmon with its default settings on a shop of its own (issue 17): the agent, a payment host
//!   (a TCP listener) and a POS application stand-in in a network namespace the benchmark
//!   creates, the agent watching the namespace's kernel socket table and TCP counters (the
//!   system root links them to `/proc/self/net`); the POS
//!   app pays (connect, request, reply, the connection held 1.5 s, close) every
//!   [`PAYMENT_SECONDS`] s, or is idle. Its fault is the host refusing connections (an nftables
//!   reset in the namespace, at the same instant the loopback listener closes); the paying
//!   shop also tells the alert's delay after the first payment the fault made fail (the aim:
//!   at most 20 s);
//! - the standard stack: Debian's `prometheus-blackbox-exporter` (tcp_connect), `prometheus`
//!   (scrape and evaluation every 15 s, `probe_success == 0` with `for: 1m`) and
//!   `prometheus-alertmanager` (default group_wait 30 s, group_interval 5 m) sending to a
//!   webhook sink the benchmark owns.
//!
//! Each round injects the fault at a known instant (at a varying phase of the probe and scrape
//! cycles) and polls every 100 ms: the problem in each system's API (posmon's open finding,
//! Prometheus' firing alert) and each sink's notifications; then it repairs and waits for the
//! finding to close and the resolved notice. Every wait is capped; what is not reached is
//! printed as "> N s". Prints one table of seconds per round and min–max.
//!
//! Run: `cargo build --release -p posmon-agent -p posmon-collector && cargo bench -p
//! posmon-e2e-tests --bench detection [-- ROUNDS] [--systems KEY,…] [--cap SECONDS]` (3 rounds
//! by default; installs the three Debian packages with apt-get when missing). The systems'
//! keys: `defaults`, `report15`, `fast`, `paying`, `idle` (the two shops), `standard`; all by
//! default. A round lasts until the slowest system's resolved notice, capped at `--cap` per
//! phase (720 s by default: an idle shop may wait for its agent's rare probe). The shops need
//! root, `ip` and `nft`. Loopback and the namespaces it creates only. Every process it starts is
//! killed when the benchmark ends, on a panic too (their handles kill on drop), and the
//! namespaces are deleted.
#![allow(
    clippy::unwrap_used,
    reason = "a benchmark harness: a failed unwrap stops the run with the location"
)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

use posmon_e2e_tests::netns::{payments, Namespace, Serve};
use posmon_e2e_tests::{
    binary, find_program, free_port, healthy_system_root, start_agent, wait_for, Collector,
    HttpSink, Process, TargetServer,
};
use serde_json::Value;

const TERMINAL: &str = "T-0001";
/// The finding a refused TCP connection opens.
const CODE: &str = "env.network.host_refused";
const POLL: Duration = Duration::from_millis(100);
/// The longest wait for one phase (the fault's notices, or the repair's), unless `--cap` says.
const WAIT_CAP: Duration = Duration::from_secs(720);
/// A paying shop's POS app pays this often.
const PAYMENT_SECONDS: u64 = 5;
/// The port of a shop's payment host, on the shop namespace's loopback.
const SHOP_PORT: u16 = 8583;
/// Quiet time between a round's last resolved notice and the next fault.
const SETTLE: Duration = Duration::from_secs(20);
/// The fault comes at a phase in [0, this) of the 15 s probe and scrape cycles.
const PHASE_SPREAD_MILLISECONDS: u32 = 15_000;

/// One posmon setup: what its agent and collector configs add to the defaults, and where its
/// agent runs.
struct Variant {
    key: &'static str,
    name: &'static str,
    agent: &'static str,
    diagnosis: &'static str,
    alerts: &'static str,
    shop: Shop,
}

/// Where a posmon variant's agent and target are.
#[derive(Clone, Copy, PartialEq)]
enum Shop {
    /// On the host, watching the shared loopback target.
    Loopback,
    /// In a network namespace of its own with its payment host and a POS app paying every so
    /// many seconds (`None`: idle).
    Namespace(Option<u64>),
}

const VARIANTS: [Variant; 5] = [
    Variant {
        key: "defaults",
        name: "posmon, defaults",
        agent: "",
        diagnosis: "",
        alerts: "",
        shop: Shop::Loopback,
    },
    Variant {
        key: "report15",
        name: "posmon, report every 15 s probe, group_interval 10 s",
        agent: "report_interval_seconds = 15\n",
        diagnosis: "report_interval_seconds = 15\n",
        alerts: "group_interval_seconds = 10\n",
        shop: Shop::Loopback,
    },
    Variant {
        key: "fast",
        name: "posmon, 5 s probe and report, group_wait 5 s, group_interval 10 s",
        agent: "probe_interval_seconds = 5\nreport_interval_seconds = 5\n",
        diagnosis: "report_interval_seconds = 5\n",
        alerts: "group_wait_seconds = 5\ngroup_interval_seconds = 10\n",
        shop: Shop::Loopback,
    },
    Variant {
        key: "paying",
        name: "posmon, defaults, POS app paying every 5 s",
        agent: "",
        diagnosis: "",
        alerts: "",
        shop: Shop::Namespace(Some(PAYMENT_SECONDS)),
    },
    Variant {
        key: "idle",
        name: "posmon, defaults, POS app idle",
        agent: "",
        diagnosis: "",
        alerts: "",
        shop: Shop::Namespace(None),
    },
];

/// The standard stack's key for `--systems`.
const STANDARD: &str = "standard";

/// Where a system shows the problem while it lasts.
enum Api {
    /// A posmon collector: the open finding of the terminal.
    Posmon(Collector),
    /// Prometheus: the rule's alert in state `firing`.
    Prometheus(String),
}

impl Api {
    /// Whether the problem is shown now; `None` when the API did not answer.
    fn shows_problem(&self, client: &reqwest::blocking::Client) -> Option<bool> {
        let (url, list, matches): (String, &[&str], fn(&Value) -> bool) = match self {
            Api::Posmon(collector) => (
                format!("{}/api/v1/findings?terminal={TERMINAL}", collector.url),
                &["findings"],
                |finding| finding["code"] == CODE,
            ),
            Api::Prometheus(url) => (
                format!("{url}/api/v1/alerts"),
                &["data", "alerts"],
                |alert| alert["state"] == "firing",
            ),
        };
        let body: Value = client.get(url).send().ok()?.json().ok()?;
        let items = list.iter().fold(&body, |value, key| &value[*key]);
        Some(items.as_array()?.iter().any(matches))
    }
}

/// What one notification tells: (a new firing alert, a resolution).
fn notice(body: &Value) -> (bool, bool) {
    if body.get("alerts").is_some() {
        // Alertmanager's webhook.
        (body["status"] == "firing", body["status"] == "resolved")
    } else {
        let any = |key: &str| body[key].as_array().is_some_and(|list| !list.is_empty());
        (any("firing") && body["repeat"] != true, any("resolved"))
    }
}

/// One watched system.
struct System {
    name: String,
    /// The four measures' names: problem shown, notified, problem gone, resolved notice; a
    /// paying shop adds the alert's delay after the first failed payment.
    measures: Vec<&'static str>,
    api: Api,
    sink: HttpSink,
    /// Kept alive for the run; killed on drop (before the shop's namespace goes).
    _processes: Vec<Process>,
    shop: Option<ShopNamespace>,
}

/// A shop's namespace, and the log of its POS app when it pays.
struct ShopNamespace {
    namespace: Namespace,
    pos_log: Option<PathBuf>,
}

impl ShopNamespace {
    fn create(dir: &Path, pays: Option<u64>) -> (ShopNamespace, Process) {
        let namespace = Namespace::create();
        // The fault: the payment host refuses connections (a reset, as a closed port does).
        namespace.nft(
            "add table inet fault; add chain inet fault output { type filter hook output priority 0; }",
        );
        let mut serves = vec![Serve::Switch("127.0.0.1", SHOP_PORT)];
        if let Some(every) = pays {
            serves.push(Serve::Pos(
                format!("127.0.0.1:{SHOP_PORT}").parse().unwrap(),
                every,
            ));
        }
        let process = namespace.serve(dir, "shop", &serves);
        let pos_log = pays.map(|_| dir.join("shop.log"));
        (ShopNamespace { namespace, pos_log }, process)
    }

    fn break_host(&self) {
        self.namespace.nft(&format!(
            "add rule inet fault output tcp dport {SHOP_PORT} reject with tcp reset"
        ));
    }

    fn repair_host(&self) {
        self.namespace.nft("flush chain inet fault output");
    }

    /// Seconds from `fault` to the first payment after it that failed.
    fn first_failed_payment(&self, fault: SystemTime) -> Option<f64> {
        let log = std::fs::read_to_string(self.pos_log.as_ref()?).ok()?;
        let fault_millis = fault
            .duration_since(SystemTime::UNIX_EPOCH)
            .ok()?
            .as_millis();
        let (millis, _) = payments(&log)
            .into_iter()
            .find(|&(millis, ok)| millis >= fault_millis && !ok)?;
        Some((millis - fault_millis) as f64 / 1000.0)
    }
}

/// Seconds from the fault (or the repair) to each measure, `None` when the cap passed.
type Times = [Option<f64>; 2];

/// Polls every system until each has both events of the phase or the cap passes: the
/// problem shown (`want_open`) or gone, and a firing (or resolved) notification.
fn watch(
    systems: &[System],
    client: &reqwest::blocking::Client,
    want_open: bool,
    cap: Duration,
) -> Vec<Times> {
    let baselines: Vec<usize> = systems.iter().map(|s| s.sink.requests().len()).collect();
    let start = Instant::now();
    let mut times: Vec<Times> = vec![[None, None]; systems.len()];
    while start.elapsed() < cap && times.iter().any(|t| t.iter().any(Option::is_none)) {
        for ((system, baseline), time) in systems.iter().zip(&baselines).zip(&mut times) {
            let now = start.elapsed().as_secs_f64();
            if time[0].is_none() && system.api.shows_problem(client) == Some(want_open) {
                time[0] = Some(now);
            }
            if time[1].is_none() {
                let told = system
                    .sink
                    .requests()
                    .iter()
                    .skip(*baseline)
                    .any(|request| {
                        let (firing, resolved) = notice(&request.json());
                        if want_open {
                            firing
                        } else {
                            resolved
                        }
                    });
                if told {
                    time[1] = Some(now);
                }
            }
        }
        std::thread::sleep(POLL);
    }
    times
}

fn posmon(dir: &Path, variant: &Variant, target: &TargetServer) -> System {
    std::fs::create_dir_all(dir).unwrap();
    let mut processes = Vec::new();
    let sink = HttpSink::start();
    let secret = dir.join("webhook-secret");
    std::fs::write(&secret, "detection benchmark webhook secret").unwrap();
    let collector = Collector::start(
        dir,
        &format!(
            "[diagnosis]\n{}\n[alerts]\ndefault_receiver = \"bench\"\n{}\n[[alerts.receivers]]\nname = \"bench\"\nkind = \"webhook\"\nurl = \"{}/posmon\"\nsecret = {{ file = {:?} }}\n",
            variant.diagnosis,
            variant.alerts,
            sink.url(),
            secret.display().to_string()
        ),
    );
    let (shop, address, collector_url) = match variant.shop {
        Shop::Loopback => (None, target.address.to_string(), collector.url.clone()),
        Shop::Namespace(pays) => {
            let (shop, host) = ShopNamespace::create(dir, pays);
            processes.push(host);
            let collector_address = collector.url.trim_start_matches("http://").parse().unwrap();
            let (port, forwarder) = shop.namespace.forward_to(dir, collector_address);
            processes.push(forwarder);
            // The agent's report datagrams go to the same port number.
            processes.push(shop.namespace.forward_udp_to(dir, port, collector_address));
            (
                Some(shop),
                format!("127.0.0.1:{SHOP_PORT}"),
                format!("http://127.0.0.1:{port}"),
            )
        }
    };
    let config = format!(
        "terminal_id = \"{TERMINAL}\"\ncollector_url = \"{collector_url}\"\ntoken = \"{}\"\nstate_dir = {:?}\nsystem_root = {:?}\n{}\n[labels]\nregion = \"cn-east-sh\"\n\n[[targets]]\nname = \"payment-host\"\naddress = \"{address}\"\n",
        collector.token(TERMINAL),
        dir.join("agent-state").display().to_string(),
        healthy_system_root(dir).display().to_string(),
        variant.agent,
    );
    let agent = match &shop {
        None => start_agent(dir, "agent", &config),
        Some(shop) => {
            let path = dir.join("agent.toml");
            std::fs::write(&path, config).unwrap();
            shop.namespace.spawn(
                &binary("posmon-agent"),
                &["run", "--config", &path.display().to_string()],
                &[("POSMON_LOG", "debug")],
                &dir.join("agent.log"),
            )
        }
    };
    processes.push(agent);
    let mut measures = vec![
        "finding in the API",
        "alert at the webhook",
        "finding closed",
        "resolved notice",
    ];
    if variant.shop == Shop::Namespace(Some(PAYMENT_SECONDS)) {
        measures.push("alert at the webhook after the first failed payment");
    }
    System {
        name: variant.name.to_string(),
        measures,
        api: Api::Posmon(collector),
        sink,
        _processes: processes,
        shop,
    }
}

/// The three Debian programs, installed with apt-get when one is missing.
fn standard_programs() -> [PathBuf; 3] {
    let names = [
        "prometheus",
        "prometheus-blackbox-exporter",
        "prometheus-alertmanager",
    ];
    if names.iter().any(|name| find_program(name).is_none()) {
        eprintln!("Installing {} with apt-get.", names.join(", "));
        let update = Command::new("apt-get").arg("update").status().unwrap();
        assert!(update.success(), "apt-get update failed");
        let install = Command::new("apt-get")
            .args(["install", "-y"])
            .args(names)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .unwrap();
        assert!(install.success(), "apt-get install failed");
    }
    names.map(|name| find_program(name).unwrap_or_else(|| panic!("{name} is not installed")))
}

/// Starts a program listening on `port` and waits until `ready_path` answers 2xx.
fn serve(dir: &Path, program: &Path, args: &[&str], port: u16, ready_path: &str) -> Process {
    let name = program.file_name().unwrap().to_string_lossy().to_string();
    let process = Process::spawn_program(program, args, &dir.join(format!("{name}.log")));
    let ready = wait_for(Duration::from_secs(30), || {
        reqwest::blocking::get(format!("http://127.0.0.1:{port}{ready_path}"))
            .ok()
            .filter(|response| response.status().is_success())
    });
    assert!(ready.is_some(), "{name} did not start:\n{}", process.log());
    process
}

fn write(path: &Path, text: &str) -> String {
    std::fs::write(path, text).unwrap();
    path.display().to_string()
}

fn standard_stack(dir: &Path, target: &TargetServer) -> System {
    let [prometheus, blackbox, alertmanager] = standard_programs();
    std::fs::create_dir_all(dir).unwrap();
    let sink = HttpSink::start();
    let (blackbox_port, alertmanager_port, prometheus_port) =
        (free_port(), free_port(), free_port());
    let blackbox_config = write(
        &dir.join("blackbox.yml"),
        "modules:\n  tcp_connect:\n    prober: tcp\n    timeout: 5s\n",
    );
    let blackbox = serve(
        dir,
        &blackbox,
        &[
            &format!("--config.file={blackbox_config}"),
            &format!("--web.listen-address=127.0.0.1:{blackbox_port}"),
        ],
        blackbox_port,
        "/",
    );
    // Alertmanager's defaults: group_wait 30s, group_interval 5m, repeat_interval 4h.
    let alertmanager_config = write(
        &dir.join("alertmanager.yml"),
        &format!(
            "route:\n  receiver: bench\n  group_by: [alertname]\nreceivers:\n  - name: bench\n    webhook_configs:\n      - url: {}/alertmanager\n        send_resolved: true\n",
            sink.url()
        ),
    );
    let alertmanager = serve(
        dir,
        &alertmanager,
        &[
            &format!("--config.file={alertmanager_config}"),
            &format!("--storage.path={}", dir.join("alertmanager-data").display()),
            &format!("--web.listen-address=127.0.0.1:{alertmanager_port}"),
            "--cluster.listen-address=",
        ],
        alertmanager_port,
        "/-/ready",
    );
    let rules = write(
        &dir.join("rules.yml"),
        "groups:\n  - name: bench\n    rules:\n      - alert: TargetDown\n        expr: probe_success == 0\n        for: 1m\n",
    );
    let prometheus_config = write(
        &dir.join("prometheus.yml"),
        &format!(
            "global:\n  scrape_interval: 15s\n  evaluation_interval: 15s\nrule_files: [{rules:?}]\nalerting:\n  alertmanagers:\n    - static_configs:\n        - targets: [\"127.0.0.1:{alertmanager_port}\"]\nscrape_configs:\n  - job_name: blackbox\n    metrics_path: /probe\n    params:\n      module: [tcp_connect]\n      target: [\"{}\"]\n    static_configs:\n      - targets: [\"127.0.0.1:{blackbox_port}\"]\n",
            target.address
        ),
    );
    let prometheus = serve(
        dir,
        &prometheus,
        &[
            &format!("--config.file={prometheus_config}"),
            &format!(
                "--storage.tsdb.path={}",
                dir.join("prometheus-data").display()
            ),
            &format!("--web.listen-address=127.0.0.1:{prometheus_port}"),
        ],
        prometheus_port,
        "/-/ready",
    );
    System {
        name: "blackbox_exporter + Prometheus + Alertmanager".to_string(),
        measures: vec![
            "alert firing in Prometheus",
            "Alertmanager webhook firing",
            "alert gone from Prometheus",
            "Alertmanager webhook resolved",
        ],
        api: Api::Prometheus(format!("http://127.0.0.1:{prometheus_port}")),
        sink,
        _processes: vec![blackbox, alertmanager, prometheus],
        shop: None,
    }
}

/// Waits until every system has seen the healthy target: posmon has the terminal's report,
/// Prometheus a `probe_success` of 1.
fn wait_until_watching(systems: &[System], client: &reqwest::blocking::Client) {
    for system in systems {
        let seen = wait_for(Duration::from_secs(120), || {
            let (url, path): (String, &[&str]) = match &system.api {
                Api::Posmon(collector) => (
                    format!("{}/api/v1/terminals/{TERMINAL}", collector.url),
                    &["sequence"],
                ),
                Api::Prometheus(url) => (
                    format!("{url}/api/v1/query?query=probe_success"),
                    &["data", "result"],
                ),
            };
            let body: Value = client.get(url).send().ok()?.json().ok()?;
            let value = path.iter().fold(&body, |value, key| &value[*key]);
            let healthy = match &system.api {
                Api::Posmon(_) => value.as_u64().is_some(),
                Api::Prometheus(_) => value[0]["value"][1] == "1",
            };
            healthy.then_some(())
        });
        assert!(seen.is_some(), "{} never saw the target", system.name);
    }
}

fn seconds(time: Option<f64>, cap: Duration) -> String {
    time.map_or(format!("> {} s", cap.as_secs()), |s| format!("{s:.1}"))
}

/// The command line: rounds (3 by default), the systems' keys, the cap of each phase.
struct Options {
    rounds: usize,
    systems: Vec<String>,
    cap: Duration,
}

fn options() -> Options {
    let mut options = Options {
        rounds: 3,
        systems: VARIANTS
            .iter()
            .map(|variant| variant.key.to_string())
            .chain([STANDARD.to_string()])
            .collect(),
        cap: WAIT_CAP,
    };
    // `cargo bench` adds `--bench` to the arguments.
    let mut arguments = std::env::args().skip(1).filter(|a| a != "--bench");
    while let Some(argument) = arguments.next() {
        let mut value = || {
            arguments
                .next()
                .unwrap_or_else(|| panic!("{argument} needs a value"))
        };
        match argument.as_str() {
            "--systems" => {
                options.systems = value().split(',').map(str::to_string).collect();
                let known = |key: &String| {
                    key == STANDARD || VARIANTS.iter().any(|variant| variant.key == key)
                };
                if let Some(unknown) = options.systems.iter().find(|key| !known(key)) {
                    panic!("unknown system {unknown:?}: defaults, report15, fast, paying, idle, standard");
                }
            }
            "--cap" => {
                let seconds = value()
                    .parse()
                    .unwrap_or_else(|_| panic!("--cap takes seconds"));
                options.cap = Duration::from_secs(seconds);
            }
            rounds => {
                options.rounds = rounds.parse().unwrap_or_else(|_| {
                    panic!("the argument is the number of rounds, not {rounds}")
                });
            }
        }
    }
    options
}

fn main() {
    if posmon_e2e_tests::netns::serve_if_asked() {
        std::process::exit(1);
    }
    let options = options();
    let chosen = |key: &str| options.systems.iter().any(|chosen| chosen == key);
    let dir = tempfile::tempdir().unwrap();
    let mut target = TargetServer::start();
    let mut systems: Vec<System> = VARIANTS
        .iter()
        .enumerate()
        .filter(|(_, variant)| chosen(variant.key))
        .map(|(index, variant)| {
            posmon(
                &dir.path().join(format!("posmon-{index}")),
                variant,
                &target,
            )
        })
        .collect();
    if chosen(STANDARD) {
        systems.push(standard_stack(&dir.path().join("standard"), &target));
    }
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    wait_until_watching(&systems, &client);
    eprintln!("Every system watches its target.");
    // [round][system] → its measures.
    let mut results: Vec<Vec<Vec<Option<f64>>>> = Vec::new();
    for round in 1..=options.rounds {
        // Faults at varying phases of the probe and scrape cycles.
        let phase_milliseconds = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |since| since.subsec_micros() % PHASE_SPREAD_MILLISECONDS);
        std::thread::sleep(Duration::from_millis(u64::from(phase_milliseconds)));
        eprintln!("Round {round}: the targets go down.");
        let fault_at = SystemTime::now();
        for shop in systems.iter().filter_map(|system| system.shop.as_ref()) {
            shop.break_host();
        }
        target.close();
        let fault = watch(&systems, &client, true, options.cap);
        eprintln!("Round {round}: the targets are repaired.");
        for shop in systems.iter().filter_map(|system| system.shop.as_ref()) {
            shop.repair_host();
        }
        target.reopen();
        let repair = watch(&systems, &client, false, options.cap);
        let round_results: Vec<Vec<Option<f64>>> = systems
            .iter()
            .zip(fault.iter().zip(&repair))
            .map(|(system, (down, up))| {
                let mut measured = vec![down[0], down[1], up[0], up[1]];
                if system.measures.len() > measured.len() {
                    let first_failure = system
                        .shop
                        .as_ref()
                        .and_then(|shop| shop.first_failed_payment(fault_at));
                    measured.push(
                        down[1]
                            .zip(first_failure)
                            .map(|(alert, failure)| alert - failure),
                    );
                }
                measured
            })
            .collect();
        for (system, measured) in systems.iter().zip(&round_results) {
            let cells: Vec<String> = measured
                .iter()
                .map(|time| seconds(*time, options.cap))
                .collect();
            eprintln!("Round {round}, {}: {}", system.name, cells.join(", "));
        }
        results.push(round_results);
        std::thread::sleep(SETTLE);
    }
    print_table(&systems, &results, options.cap);
}

fn print_table(systems: &[System], results: &[Vec<Vec<Option<f64>>>], cap: Duration) {
    let rounds: Vec<String> = (1..=results.len()).map(|r| format!("round {r}")).collect();
    println!(
        "| system | measure (s after the fault; after the repair for the last two) | {} | min–max |",
        rounds.join(" | ")
    );
    println!("| --- | --- |{}", " --- |".repeat(rounds.len() + 1));
    for (index, system) in systems.iter().enumerate() {
        for (measure_index, measure) in system.measures.iter().enumerate() {
            let values: Vec<Option<f64>> = results
                .iter()
                .map(|round| round[index].get(measure_index).copied().flatten())
                .collect();
            let reached: Vec<f64> = values.iter().flatten().copied().collect();
            let min = reached.iter().copied().fold(f64::INFINITY, f64::min);
            let max = reached.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let range = match (reached.len(), values.len() - reached.len()) {
                (0, _) => seconds(None, cap),
                (_, 0) => format!("{min:.1}–{max:.1}"),
                _ => format!("{min:.1}–({})", seconds(None, cap)),
            };
            let cells: Vec<String> = values.into_iter().map(|time| seconds(time, cap)).collect();
            println!(
                "| {} | {measure} | {} | {range} |",
                system.name,
                cells.join(" | ")
            );
        }
    }
}
