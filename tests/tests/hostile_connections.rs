//! Hostile networks against the real collector: thousands of connections that never finish a
//! request (half-open, headers a byte a second, bodies a byte a second with no token or a wrong
//! one), slow bodies filling every slot they can, and one token flooding requests. Real agents
//! must still get their reports acknowledged, `/healthz` must answer throughout, and the flood
//! must be rate-limited without touching other terminals.

#![allow(
    clippy::unwrap_used,
    reason = "test helpers: a failed unwrap fails the test, as it should"
)]

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use posmon_e2e_tests::trials::{self, Need};
use posmon_e2e_tests::{
    highest_spooled, quick_agent_config, start_agent, trial, wait_for, Collector, Process,
    TargetServer,
};

fn main() -> ExitCode {
    trials::run(vec![
        trial!(
            real_agents_are_served_while_2000_hostile_connections_are_held,
            open_files_for(ATTACK_CONNECTIONS as u64 * 2)
        ),
        trial!(
            slow_unauthenticated_bodies_never_take_an_identified_agents_slot,
            open_files_for(1024)
        ),
        trial!(a_flooding_token_is_rate_limited_and_other_terminals_are_not),
        trial!(connections_beyond_the_cap_are_closed_at_once_and_the_cap_fits_the_open_file_limit),
        trial!(over_tls_a_silent_handshake_is_cut_off_and_http2_idles_out),
    ])
}

/// What one hostile connection does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Connects and never sends a byte.
    HalfOpen,
    /// Sends request headers one byte a second, never finishing them.
    SlowHeaders,
    /// Complete headers of a report request with a made-up token but no terminal header (so
    /// the token can only be checked once the body names the terminal), then the body one byte
    /// a second.
    SlowBodyAnonymous,
    /// The same with a terminal header and a wrong token.
    SlowBodyWrongToken,
}

impl Kind {
    /// What is sent at once on connecting.
    fn opening(self) -> Vec<u8> {
        let report = "POST /api/v1/reports HTTP/1.1\r\nhost: collector\r\ncontent-type: application/json\r\ncontent-length: 100000\r\n";
        match self {
            Kind::HalfOpen | Kind::SlowHeaders => Vec::new(),
            Kind::SlowBodyAnonymous => format!(
                "{report}authorization: Bearer k1.BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB\r\n\r\n"
            )
            .into_bytes(),
            Kind::SlowBodyWrongToken => format!(
                "{report}x-posmon-terminal: T-ATTACK\r\nauthorization: Bearer k1.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\r\n\r\n"
            )
            .into_bytes(),
        }
    }

    /// The byte sent at tick `index`, if any.
    fn trickle(self, index: usize) -> Option<u8> {
        const HEADERS: &[u8] = b"POST /api/v1/reports HTTP/1.1\r\nhost: collector\r\nx-padding: ";
        match self {
            Kind::HalfOpen => None,
            Kind::SlowHeaders => Some(*HEADERS.get(index).unwrap_or(&b'a')),
            Kind::SlowBodyAnonymous | Kind::SlowBodyWrongToken => {
                Some(if index == 0 { b'{' } else { b' ' })
            }
        }
    }
}

struct Hostile {
    kind: Kind,
    stream: Option<TcpStream>,
    ticks: usize,
}

/// Connections held open against `address` by a few threads, re-opened whenever the collector
/// closes or answers them, until dropped.
struct Attack {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    opened: Arc<AtomicU64>,
}

impl Attack {
    fn start(address: SocketAddr, kinds: &[(Kind, usize)], threads: usize) -> Attack {
        let stop = Arc::new(AtomicBool::new(false));
        let opened = Arc::new(AtomicU64::new(0));
        let mut all: Vec<Kind> = kinds
            .iter()
            .flat_map(|(kind, count)| std::iter::repeat_n(*kind, *count))
            .collect();
        let per_thread = all.len().div_ceil(threads);
        let mut handles = Vec::new();
        while !all.is_empty() {
            let mine: Vec<Kind> = all.drain(..per_thread.min(all.len())).collect();
            let stop = Arc::clone(&stop);
            let opened = Arc::clone(&opened);
            handles.push(std::thread::spawn(move || {
                let mut hostiles: Vec<Hostile> = mine
                    .into_iter()
                    .map(|kind| Hostile {
                        kind,
                        stream: None,
                        ticks: 0,
                    })
                    .collect();
                while !stop.load(Ordering::Relaxed) {
                    let tick = Instant::now();
                    for hostile in &mut hostiles {
                        if stop.load(Ordering::Relaxed) {
                            break;
                        }
                        tend(hostile, address, &opened);
                    }
                    let elapsed = tick.elapsed();
                    if elapsed < Duration::from_secs(1) {
                        std::thread::sleep(Duration::from_secs(1) - elapsed);
                    }
                }
            }));
        }
        Attack {
            stop,
            threads: handles,
            opened,
        }
    }

    /// Connections opened so far (re-opened ones included).
    fn opened(&self) -> u64 {
        self.opened.load(Ordering::Relaxed)
    }
}

impl Drop for Attack {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

/// One tick of one hostile connection: re-open it if the collector closed or answered it,
/// else send its next byte.
fn tend(hostile: &mut Hostile, address: SocketAddr, opened: &AtomicU64) {
    if let Some(stream) = &mut hostile.stream {
        let mut buffer = [0u8; 512];
        let alive = match stream.read(&mut buffer) {
            // Closed, or answered (401, 408, 503): either way this one is done.
            Ok(_) => false,
            Err(error) => error.kind() == ErrorKind::WouldBlock,
        };
        let alive = alive
            && match hostile.kind.trickle(hostile.ticks) {
                Some(byte) => stream.write_all(&[byte]).is_ok(),
                None => true,
            };
        hostile.ticks += 1;
        if alive {
            return;
        }
        hostile.stream = None;
    }
    let Ok(mut stream) = TcpStream::connect_timeout(&address, Duration::from_secs(1)) else {
        return;
    };
    opened.fetch_add(1, Ordering::Relaxed);
    if stream.write_all(&hostile.kind.opening()).is_err() || stream.set_nonblocking(true).is_err() {
        return;
    }
    hostile.ticks = 0;
    hostile.stream = Some(stream);
}

fn address_of(collector: &Collector) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], collector.port()))
}

fn agent_config(
    collector: &Collector,
    dir: &Path,
    terminal_id: &str,
    target: &TargetServer,
    report_interval_seconds: u64,
) -> String {
    let token = collector.token(terminal_id);
    quick_agent_config(
        &collector.url,
        &token,
        dir,
        terminal_id,
        target,
        report_interval_seconds,
        "",
    )
}

/// The highest sequence an agent has spooled: the newest record in its spool segments, or the
/// acknowledged one when the spool is empty (acknowledged segments are removed).
fn spooled(state_dir: &Path) -> u64 {
    let spool = state_dir.join("spool");
    let acknowledged = std::fs::read_to_string(spool.join("state"))
        .ok()
        .and_then(|text| {
            text.lines()
                .find_map(|line| line.strip_prefix("acknowledged="))
                .and_then(|value| value.trim().parse().ok())
        })
        .unwrap_or(0);
    acknowledged.max(highest_spooled(&spool))
}

/// The highest sequence the collector holds for a terminal.
fn held(client: &reqwest::blocking::Client, collector: &Collector, terminal_id: &str) -> u64 {
    client
        .get(format!("{}/api/v1/terminals/{terminal_id}", collector.url))
        .send()
        .and_then(|response| response.json::<serde_json::Value>())
        .ok()
        .and_then(|detail| detail["sequence"].as_u64())
        .unwrap_or(0)
}

/// Polls `/healthz` every half second on a fresh connection until stopped; returns
/// (answered, failures with their errors).
fn watch_health(url: String, stop: Arc<AtomicBool>) -> JoinHandle<(u64, Vec<String>)> {
    std::thread::spawn(move || {
        let client = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(3))
            .pool_max_idle_per_host(0)
            .build()
            .unwrap();
        let (mut answered, mut failures) = (0, Vec::new());
        while !stop.load(Ordering::Relaxed) {
            match client.get(format!("{url}/healthz")).send() {
                Ok(response) if response.status().is_success() => answered += 1,
                Ok(response) => failures.push(format!("status {}", response.status())),
                Err(error) => failures.push(error.to_string()),
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        (answered, failures)
    })
}

fn client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap()
}

/// The open-file limits a test holding `connections` sockets (and the collector its side)
/// needs: those and room for everything else the test and the collector have open.
const fn open_files_for(connections: u64) -> Need {
    Need::OpenFiles(connections + 512)
}

const ATTACK_CONNECTIONS: usize = 2000;

/// The tests of this file run one at a time: each loads the machine on purpose.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn exclusive() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
const AGENTS: usize = 20;

fn real_agents_are_served_while_2000_hostile_connections_are_held() {
    let _exclusive = exclusive();
    let dir = tempfile::tempdir().unwrap();
    let target = TargetServer::start();
    // A service manager's default: the collector must raise it itself.
    let collector = Collector::start_in_shell(dir.path(), "", "ulimit -Sn 1024");
    let raised = collector.process.log();
    assert!(
        raised.contains("Open-file limits in force") && !raised.contains("soft=1024 "),
        "the soft open-file limit was not raised:\n{raised}"
    );

    let agents: Vec<(String, Process)> = (0..AGENTS)
        .map(|index| {
            let terminal_id = format!("T-{index:04}");
            let interval = 1 + (index as u64 % 2);
            let config = agent_config(&collector, dir.path(), &terminal_id, &target, interval);
            let agent = start_agent(dir.path(), &format!("agent-{index}"), &config);
            (terminal_id, agent)
        })
        .collect();
    let client = client();
    let started = wait_for(Duration::from_secs(30), || {
        agents
            .iter()
            .all(|(terminal_id, _)| held(&client, &collector, terminal_id) >= 1)
            .then_some(())
    });
    assert!(
        started.is_some(),
        "not every agent reported before the attack; first agent's log:\n{}",
        agents[0].1.log()
    );

    let quarter = ATTACK_CONNECTIONS / 4;
    let attack = Attack::start(
        address_of(&collector),
        &[
            (Kind::HalfOpen, quarter),
            (Kind::SlowHeaders, quarter),
            (Kind::SlowBodyAnonymous, quarter),
            (Kind::SlowBodyWrongToken, quarter),
        ],
        4,
    );
    let stop_health = Arc::new(AtomicBool::new(false));
    let health = watch_health(collector.url.clone(), Arc::clone(&stop_health));
    let attack_started = Instant::now();
    let before: Vec<u64> = agents
        .iter()
        .map(|(terminal_id, _)| held(&client, &collector, terminal_id))
        .collect();
    let mut peak_open = 0.0f64;
    while attack_started.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_secs(2));
        peak_open = peak_open.max(collector.metric("posmon_http_connections_open"));
    }
    // Reports spooled up to now must be acknowledged within a few seconds, attack still on.
    let spooled_now: Vec<u64> = agents
        .iter()
        .map(|(terminal_id, _)| spooled(&dir.path().join(format!("{terminal_id}-state"))))
        .collect();
    std::thread::sleep(Duration::from_secs(3));
    let held_now: Vec<u64> = agents
        .iter()
        .map(|(terminal_id, _)| held(&client, &collector, terminal_id))
        .collect();
    stop_health.store(true, Ordering::Relaxed);
    let opened = attack.opened();
    drop(attack);
    let (answered, failures) = health.join().unwrap();

    let mut sent = 0;
    let mut acknowledged = 0;
    for index in 0..AGENTS {
        sent += spooled_now[index].saturating_sub(before[index]);
        acknowledged += held_now[index]
            .min(spooled_now[index])
            .saturating_sub(before[index]);
    }
    let ratio = acknowledged as f64 / sent.max(1) as f64;
    println!(
        "hostile connections: {opened} opened, at most {peak_open} open at once at the collector; \
         {AGENTS} agents: {acknowledged} of {sent} reports acknowledged during the attack \
         (ack ratio {ratio:.3}); /healthz answered {answered} times, failed {}",
        failures.len()
    );
    // Half-open and slow-header connections stay until their header timeout; slow bodies are
    // answered (401 at once for a wrong token, 503 once their pool is full) and re-opened.
    assert!(
        peak_open >= ATTACK_CONNECTIONS as f64 / 2.0,
        "the attack did not hold its connections open: peak {peak_open}"
    );
    assert!(
        sent >= AGENTS as u64 * 10,
        "the agents reported too little to judge: {sent}"
    );
    assert!(
        ratio >= 0.95,
        "only {acknowledged} of {sent} reports acknowledged; collector log tail:\n{}",
        tail(&collector.process.log(), 40)
    );
    assert!(
        failures.is_empty() && answered >= 40,
        "/healthz failed {failures:?} (answered {answered})"
    );
    let closed =
        collector.metric("posmon_http_connections_closed_total{reason=\"header_timeout\"}");
    assert!(
        closed > 0.0,
        "no connection was closed for its header timeout"
    );
    collector.restart_healthy(dir.path());
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

fn slow_unauthenticated_bodies_never_take_an_identified_agents_slot() {
    let _exclusive = exclusive();
    let dir = tempfile::tempdir().unwrap();
    let target = TargetServer::start();
    let collector = Collector::start(dir.path(), "");
    let config = agent_config(&collector, dir.path(), "T-REAL", &target, 1);
    let agent = start_agent(dir.path(), "agent-real", &config);
    let client = client();
    assert!(
        wait_for(Duration::from_secs(20), || (held(
            &client, &collector, "T-REAL"
        ) >= 1)
            .then_some(()))
        .is_some(),
        "the agent did not report; log:\n{}",
        agent.log()
    );
    // As many slow bodies as the collector has ingest slots in all.
    let attack = Attack::start(address_of(&collector), &[(Kind::SlowBodyAnonymous, 512)], 2);
    std::thread::sleep(Duration::from_secs(2));
    let before = held(&client, &collector, "T-REAL");
    std::thread::sleep(Duration::from_secs(12));
    let after = held(&client, &collector, "T-REAL");
    drop(attack);
    let overloaded =
        collector.metric("posmon_ingest_rejected_requests_total{reason=\"overloaded\"}");
    let unidentified = collector
        .metric("posmon_ingest_rejected_requests_total{reason=\"overloaded_unidentified\"}");
    let timed_out =
        collector.metric("posmon_ingest_rejected_requests_total{reason=\"body_timeout\"}");
    println!(
        "slow bodies: the agent's sequence went {before} → {after}; refused: {overloaded} overloaded, \
         {unidentified} unidentified pool full, {timed_out} body timeouts"
    );
    assert!(
        unidentified >= 100.0,
        "the slow bodies did not fill their pool: {unidentified}"
    );
    assert!(timed_out > 0.0, "no slow body was cut off at its deadline");
    assert_eq!(overloaded, 0.0, "an identified agent was answered 503");
    assert!(
        after >= before + 8,
        "the agent's reports stalled: {before} → {after}; log:\n{}",
        agent.log()
    );
    assert!(
        !agent.log().contains("asked to slow down"),
        "the agent was told to slow down:\n{}",
        agent.log()
    );
    collector.restart_healthy(dir.path());
}

fn report_body(terminal_id: &str, sequence: u64) -> String {
    let now = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    format!(
        r#"{{"reports":[{{"schema_version":1,"terminal_id":"{terminal_id}","sequence":{sequence},"observed_at":"{now}","agent_version":"0.1.0"}}]}}"#
    )
}

/// A status and its `Retry-After`, if any.
type Answer = (u16, Option<String>);

fn post(
    client: &reqwest::blocking::Client,
    collector: &Collector,
    terminal_id: &str,
    token: &str,
    sequence: u64,
) -> Answer {
    let response = client
        .post(format!("{}/api/v1/reports", collector.url))
        .header("authorization", format!("Bearer {token}"))
        .header("x-posmon-terminal", terminal_id)
        .header("content-type", "application/json")
        .body(report_body(terminal_id, sequence))
        .send()
        .unwrap();
    let retry_after = response
        .headers()
        .get("retry-after")
        .and_then(|value| value.to_str().ok())
        .map(str::to_string);
    (response.status().as_u16(), retry_after)
}

fn a_flooding_token_is_rate_limited_and_other_terminals_are_not() {
    let _exclusive = exclusive();
    let dir = tempfile::tempdir().unwrap();
    let collector = Arc::new(Collector::start(dir.path(), ""));
    let flood_token = collector.token("T-FLOOD");
    let calm_token = collector.token("T-CALM");
    let stop = Arc::new(AtomicBool::new(false));
    let flooders: Vec<JoinHandle<Vec<Answer>>> = (0..4)
        .map(|worker| {
            let collector = Arc::clone(&collector);
            let token = flood_token.clone();
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                let client = client();
                let mut answers = Vec::new();
                let mut sequence = worker * 1_000_000;
                while !stop.load(Ordering::Relaxed) {
                    sequence += 1;
                    answers.push(post(&client, &collector, "T-FLOOD", &token, sequence));
                }
                answers
            })
        })
        .collect();
    let client = client();
    let mut calm = Vec::new();
    for sequence in 1..=10 {
        std::thread::sleep(Duration::from_millis(400));
        calm.push(post(&client, &collector, "T-CALM", &calm_token, sequence));
    }
    stop.store(true, Ordering::Relaxed);
    let flood: Vec<Answer> = flooders
        .into_iter()
        .flat_map(|flooder| flooder.join().unwrap())
        .collect();
    let accepted = flood.iter().filter(|(status, _)| *status == 200).count();
    let limited: Vec<&Answer> = flood.iter().filter(|(status, _)| *status == 429).collect();
    println!(
        "flood: {} requests, {accepted} accepted, {} answered 429; calm terminal: {:?}",
        flood.len(),
        limited.len(),
        calm.iter().map(|(status, _)| status).collect::<Vec<_>>()
    );
    assert!(
        calm.iter().all(|(status, _)| *status == 200),
        "the calm terminal was refused: {calm:?}"
    );
    assert!(
        !limited.is_empty() && limited.iter().all(|(_, retry)| retry.is_some()),
        "the flood was not answered 429 with Retry-After"
    );
    // The burst (60) and about one a second after it; a little slack for timing.
    assert!(
        accepted <= 60 + 10,
        "the flood got {accepted} requests through in about 4 s"
    );
    assert!(
        collector.metric("posmon_ingest_rejected_requests_total{reason=\"rate_limited\"}") > 0.0,
        "no refusal counted as rate_limited"
    );
    // Every answer is one of these: accepted, or told to slow down.
    assert!(
        flood
            .iter()
            .all(|(status, _)| *status == 200 || *status == 429),
        "unexpected answers to the flood"
    );
    let collector = Arc::try_unwrap(collector)
        .unwrap_or_else(|_| panic!("a flooding thread still holds the collector"));
    collector.restart_healthy(dir.path());
}

fn connections_beyond_the_cap_are_closed_at_once_and_the_cap_fits_the_open_file_limit() {
    let _exclusive = exclusive();
    let dir = tempfile::tempdir().unwrap();
    // A hard limit of 1024 leaves fewer usable descriptors than the default 10 000
    // connections: the collector lowers its cap and says so.
    let collector =
        Collector::start_in_shell(dir.path(), "[limits]\nmax_connections = 20\n", "true");
    let address = address_of(&collector);
    let held: Vec<TcpStream> = (0..20)
        .map(|_| TcpStream::connect(address).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let mut extra = TcpStream::connect(address).unwrap();
    extra
        .set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    let started = Instant::now();
    let mut buffer = [0u8; 16];
    let read = extra.read(&mut buffer);
    assert!(
        matches!(read, Ok(0))
            || read
                .as_ref()
                .is_err_and(|error| error.kind() == ErrorKind::ConnectionReset),
        "the connection beyond the cap was not closed: {read:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(2));
    drop(held);
    let client = reqwest::blocking::Client::new();
    let healthy = wait_for(Duration::from_secs(5), || {
        client
            .get(format!("{}/healthz", collector.url))
            .send()
            .ok()
            .filter(|response| response.status().is_success())
    });
    assert!(healthy.is_some(), "the collector did not recover");
    assert!(collector.metric("posmon_http_connections_refused_total") >= 1.0);

    let dir = tempfile::tempdir().unwrap();
    let lowered = Collector::start_in_shell(dir.path(), "", "ulimit -n 1024");
    let log = lowered.process.log();
    assert!(
        log.contains("limits.max_connections is above what the open-file limit leaves usable"),
        "no warning about the lowered cap:\n{log}"
    );
}

fn over_tls_a_silent_handshake_is_cut_off_and_http2_idles_out() {
    let _exclusive = exclusive();
    let dir = tempfile::tempdir().unwrap();
    let pki = posmon_e2e_tests::Pki::new("posmon hostile test CA");
    let (cert, key) = pki.leaf_pem(&["127.0.0.1", "localhost"]);
    std::fs::write(dir.path().join("server.crt"), cert).unwrap();
    std::fs::write(dir.path().join("server.key"), key).unwrap();
    pki.write_ca(&dir.path().join("ca.crt"));
    let collector = Collector::start(
        dir.path(),
        &format!(
            "[limits]\ntls_handshake_timeout_seconds = 1\nidle_timeout_seconds = 2\n\n[tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\n",
            dir.path().join("server.crt").display(),
            dir.path().join("server.key").display()
        ),
    );
    assert!(collector.url.starts_with("https://"), "{}", collector.url);
    let address = address_of(&collector);

    // Never a ClientHello: closed after the handshake timeout.
    let mut silent = TcpStream::connect(address).unwrap();
    silent
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let started = Instant::now();
    let read = silent.read(&mut [0u8; 16]);
    let waited = started.elapsed();
    assert!(
        matches!(read, Ok(0)) || read.is_err() && waited < Duration::from_secs(4),
        "{read:?} after {waited:?}"
    );
    assert!(
        waited >= Duration::from_millis(800) && waited < Duration::from_secs(4),
        "closed after {waited:?}"
    );
    // Not TLS at all: the handshake fails.
    let mut garbage = TcpStream::connect(address).unwrap();
    garbage
        .write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
        .unwrap();
    garbage
        .set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    let _ = garbage.read(&mut [0u8; 256]);

    // HTTP/2 by ALPN, as agents use it; between requests the connection idles out.
    let client = reqwest::blocking::Client::builder()
        .add_root_certificate(
            reqwest::Certificate::from_pem(&std::fs::read(dir.path().join("ca.crt")).unwrap())
                .unwrap(),
        )
        .build()
        .unwrap();
    let response = client
        .get(format!("{}/healthz", collector.url))
        .send()
        .unwrap();
    assert_eq!(response.version(), reqwest::Version::HTTP_2);
    assert!(response.status().is_success());
    let idled = wait_for(Duration::from_secs(6), || {
        let plain = reqwest::blocking::Client::builder()
            .add_root_certificate(
                reqwest::Certificate::from_pem(&std::fs::read(dir.path().join("ca.crt")).unwrap())
                    .unwrap(),
            )
            .build()
            .unwrap();
        let metrics = plain
            .get(format!("{}/metrics", collector.url))
            .send()
            .and_then(|response| response.text())
            .unwrap_or_default();
        metrics
            .lines()
            .any(|line| {
                line.starts_with("posmon_http_connections_closed_total{reason=\"idle_timeout\"}")
                    && !line.ends_with(" 0")
            })
            .then_some(metrics)
    });
    let metrics = idled.unwrap_or_else(|| panic!("the HTTP/2 connection did not idle out"));
    for reason in ["tls_handshake_timeout", "tls_handshake_failed"] {
        assert!(
            metrics.lines().any(|line| line.starts_with(&format!(
                "posmon_http_connections_closed_total{{reason=\"{reason}\"}}"
            )) && !line.ends_with(" 0")),
            "{reason} not counted:\n{metrics}"
        );
    }
    // The client's connection was closed under it; a new request simply opens another.
    let again = client
        .get(format!("{}/healthz", collector.url))
        .send()
        .unwrap();
    assert!(again.status().is_success());
}
