//! Detection latency: how long after a fault a person hears of it, and after the repair that it
//! is over. One target the benchmark owns (a TCP listener on loopback: closing it is the fault,
//! listening again on the same port the repair) is watched at once by
//! - posmon with its default settings (release collector and agent, a generic webhook
//!   receiver on a sink the benchmark owns), and by posmon with tuned intervals beside it;
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
//! posmon-e2e-tests --bench detection [-- ROUNDS]` (3 rounds by default, about 30 minutes;
//! installs the three Debian packages with apt-get when missing). Loopback only. Every process
//! it starts is killed when the benchmark ends, on a panic too (their handles kill on drop).
#![allow(
    clippy::unwrap_used,
    reason = "a benchmark harness: a failed unwrap stops the run with the location"
)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

use posmon_e2e_tests::{
    find_program, free_port, healthy_system_root, start_agent, wait_for, Collector, HttpSink,
    Process, TargetServer,
};
use serde_json::Value;

const TERMINAL: &str = "T-0001";
/// The finding a refused TCP connection opens.
const CODE: &str = "env.network.host_refused";
const POLL: Duration = Duration::from_millis(100);
/// The longest wait for one phase (the fault's notices, or the repair's).
const WAIT_CAP: Duration = Duration::from_secs(360);
/// Quiet time between a round's last resolved notice and the next fault.
const SETTLE: Duration = Duration::from_secs(20);
/// The fault comes at a phase in [0, this) of the 15 s probe and scrape cycles.
const PHASE_SPREAD_MILLISECONDS: u32 = 15_000;

/// One posmon setup: what its agent and collector configs add to the defaults.
struct Variant {
    name: &'static str,
    agent: &'static str,
    diagnosis: &'static str,
    alerts: &'static str,
}

const VARIANTS: [Variant; 3] = [
    Variant {
        name: "posmon, defaults",
        agent: "",
        diagnosis: "",
        alerts: "",
    },
    Variant {
        name: "posmon, report every 15 s probe, group_interval 10 s",
        agent: "report_interval_seconds = 15\n",
        diagnosis: "report_interval_seconds = 15\n",
        alerts: "group_interval_seconds = 10\n",
    },
    Variant {
        name: "posmon, 5 s probe and report, group_wait 5 s, group_interval 10 s",
        agent: "probe_interval_seconds = 5\nreport_interval_seconds = 5\n",
        diagnosis: "report_interval_seconds = 5\n",
        alerts: "group_wait_seconds = 5\ngroup_interval_seconds = 10\n",
    },
];

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
    /// The four measures' names: problem shown, notified, problem gone, resolved notice.
    measures: [&'static str; 4],
    api: Api,
    sink: HttpSink,
    /// Kept alive for the run; killed on drop.
    _processes: Vec<Process>,
}

/// Seconds from the fault (or the repair) to each measure, `None` when the cap passed.
type Times = [Option<f64>; 2];

/// Polls every system until each has both events of the phase or the cap passes: the
/// problem shown (`want_open`) or gone, and a firing (or resolved) notification.
fn watch(systems: &[System], client: &reqwest::blocking::Client, want_open: bool) -> Vec<Times> {
    let baselines: Vec<usize> = systems.iter().map(|s| s.sink.requests().len()).collect();
    let start = Instant::now();
    let mut times: Vec<Times> = vec![[None, None]; systems.len()];
    while start.elapsed() < WAIT_CAP && times.iter().any(|t| t.iter().any(Option::is_none)) {
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
    let agent = start_agent(
        dir,
        "agent",
        &format!(
            "terminal_id = \"{TERMINAL}\"\ncollector_url = \"{}\"\ntoken = \"{}\"\nstate_dir = {:?}\nsystem_root = {:?}\n{}\n[labels]\nregion = \"cn-east-sh\"\n\n[[targets]]\nname = \"payment-host\"\naddress = \"{}\"\n",
            collector.url,
            collector.token(TERMINAL),
            dir.join("agent-state").display().to_string(),
            healthy_system_root(dir).display().to_string(),
            variant.agent,
            target.address
        ),
    );
    System {
        name: variant.name.to_string(),
        measures: [
            "finding in the API",
            "alert at the webhook",
            "finding closed",
            "resolved notice",
        ],
        api: Api::Posmon(collector),
        sink,
        _processes: vec![agent],
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
        measures: [
            "alert firing in Prometheus",
            "Alertmanager webhook firing",
            "alert gone from Prometheus",
            "Alertmanager webhook resolved",
        ],
        api: Api::Prometheus(format!("http://127.0.0.1:{prometheus_port}")),
        sink,
        _processes: vec![blackbox, alertmanager, prometheus],
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

fn seconds(time: Option<f64>) -> String {
    time.map_or(format!("> {} s", WAIT_CAP.as_secs()), |s| format!("{s:.1}"))
}

fn main() {
    // `cargo bench` adds `--bench` to the arguments.
    let rounds: usize = std::env::args()
        .skip(1)
        .find(|argument| argument != "--bench")
        .map_or(3, |argument| {
            argument
                .parse()
                .unwrap_or_else(|_| panic!("the argument is the number of rounds, not {argument}"))
        });
    let dir = tempfile::tempdir().unwrap();
    let mut target = TargetServer::start();
    let mut systems: Vec<System> = VARIANTS
        .iter()
        .enumerate()
        .map(|(index, variant)| {
            posmon(
                &dir.path().join(format!("posmon-{index}")),
                variant,
                &target,
            )
        })
        .collect();
    systems.push(standard_stack(&dir.path().join("standard"), &target));
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    wait_until_watching(&systems, &client);
    eprintln!("Every system watches {}.", target.address);
    // [round][system] → the four measures.
    let mut results: Vec<Vec<[Option<f64>; 4]>> = Vec::new();
    for round in 1..=rounds {
        // Faults at varying phases of the probe and scrape cycles.
        let phase_milliseconds = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |since| since.subsec_micros() % PHASE_SPREAD_MILLISECONDS);
        std::thread::sleep(Duration::from_millis(u64::from(phase_milliseconds)));
        eprintln!("Round {round}: the target goes down.");
        target.close();
        let fault = watch(&systems, &client, true);
        eprintln!("Round {round}: the target is repaired.");
        target.reopen();
        let repair = watch(&systems, &client, false);
        let round_results: Vec<[Option<f64>; 4]> = fault
            .iter()
            .zip(&repair)
            .map(|(down, up)| [down[0], down[1], up[0], up[1]])
            .collect();
        for (system, measured) in systems.iter().zip(&round_results) {
            let cells: Vec<String> = measured.iter().copied().map(seconds).collect();
            eprintln!("Round {round}, {}: {}", system.name, cells.join(", "));
        }
        results.push(round_results);
        std::thread::sleep(SETTLE);
    }
    print_table(&systems, &results);
}

fn print_table(systems: &[System], results: &[Vec<[Option<f64>; 4]>]) {
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
                .map(|round| round[index][measure_index])
                .collect();
            let reached: Vec<f64> = values.iter().flatten().copied().collect();
            let min = reached.iter().copied().fold(f64::INFINITY, f64::min);
            let max = reached.iter().copied().fold(0.0, f64::max);
            let range = match (reached.len(), values.len() - reached.len()) {
                (0, _) => seconds(None),
                (_, 0) => format!("{min:.1}–{max:.1}"),
                _ => format!("{min:.1}–({})", seconds(None)),
            };
            let cells: Vec<String> = values.into_iter().map(seconds).collect();
            println!(
                "| {} | {measure} | {} | {range} |",
                system.name,
                cells.join(" | ")
            );
        }
    }
}
