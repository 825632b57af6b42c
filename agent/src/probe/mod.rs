//! The network path ladder: per target, link → gateway → DNS → TCP → TLS → HTTP, in order, so
//! that the first failing rung names the cause; ICMP echo beside it. Link and gateway are
//! measured once per cycle and head every target's ladder; when either fails, no target goes
//! further. The gateway is also sent an echo beside the climbs (`gateway::verify`): when every
//! target failed behind a gateway that answered echoes before and now does not, the gateway
//! is the failed rung and the climbs' rungs are dropped. A failed rung is a measurement (`status: failed` with an error kind), never an
//! `Err`, and every network step is bounded by the configured timeout.
//!
//! One attempt walks down the rungs until one fails; a target gets `attempts` attempts per
//! cycle, and each rung reports how often it was tried, how often it succeeded, and the latency
//! statistics of its successes.
//!
//! Each cycle the caller plans every target's climb ([`Mode`]): the *full* ladder above, a
//! *cheap* one (DNS from the cache while its TTL holds, one TCP connect closed at once with a
//! reset; the full ladder at once when it fails), or none. A target not climbed, and the rungs a
//! cheap climb skips, are reported as last measured. The gateway's echo is sent only beside a
//! full climb or when a target fails. Every packet's IP bytes are counted ([`traffic`]).

pub mod dns;
pub mod gateway;
pub mod http;
pub mod icmp;
pub mod link;
pub mod routes;
pub mod tcp;
pub mod tls;
pub mod traffic;

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use posmon_protocol::{
    limits, ErrorKind, LatencyStats, ProbeResult, Stage, StageResult, StageStatus,
};
use rustls::pki_types::ServerName;
use tokio::task::JoinSet;

use crate::config::{AgentConfig, Endpoint, Host};
use crate::software::bounded;
use crate::system::SystemRoot;
use dns::Resolver;
use tls::{Trust, TrustError};
use traffic::{Counted, Traffic};

/// How a target is probed in a cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// DNS from the cache while its TTL holds, one TCP connect closed with a reset; the full
    /// ladder when it fails.
    Cheap,
    /// DNS, TCP, TLS, HTTP over the target's attempts, ICMP.
    Full,
}

/// The longest a DNS answer is kept, whatever its TTL.
const DNS_CACHE_MAX: Duration = Duration::from_secs(3600);

/// The targets' resolved addresses and until when each answer may be used; one entry per
/// target name at most, so it is bounded by the number of targets.
type DnsCache = Arc<Mutex<BTreeMap<String, (Vec<IpAddr>, Instant)>>>;

/// A rung's step that succeeded (what it produced, how long it took, a detail) or failed
/// (why, and a detail).
pub type Try<T> = Result<(T, Duration, String), (ErrorKind, String)>;

/// One cycle's ladders, and the network they ran on.
pub struct Measured {
    pub probes: Vec<ProbeResult>,
    pub network: Network,
}

/// The network the terminal is on, as the `gateway` and `resolver` labels carry it: which
/// terminals share a router, and whose resolver a DNS failure is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Network {
    /// The default gateway's subnet, `192.168.1.0/24`.
    pub gateway: Option<String>,
    /// The first nameserver asked, `10.0.0.53`.
    pub resolver: Option<String>,
}

/// A configured target, ready to probe.
struct Target {
    name: String,
    address: String,
    endpoint: Endpoint,
    attempts: u32,
    /// Set when the endpoint speaks TLS.
    tls: Option<(Trust, ServerName<'static>)>,
}

/// Everything the ladder needs, prepared once from the configuration.
pub struct Ladder {
    root: SystemRoot,
    dns_servers: Vec<SocketAddr>,
    targets: Vec<Arc<Target>>,
    timeout: Duration,
    icmp: bool,
    /// The gateway last seen answering echoes (see `gateway::verify`).
    echoing_gateway: Mutex<Option<std::net::Ipv4Addr>>,
    /// Each target's rungs past the gateway as last reported.
    last: Vec<Option<Vec<StageResult>>>,
    /// Each target's latest measurement of every rung past the gateway, even one the ladder
    /// did not reach since: what a climb that stops short of it carries once the target works
    /// again (the TLS rung after a cheap probe sees a failed connect recover).
    memory: Vec<Vec<StageResult>>,
    /// When each target's TLS or HTTP rung was last climbed (a full ladder that reached it).
    above_tcp_at: Vec<Option<Instant>>,
    dns_cache: DnsCache,
    traffic: Traffic,
}

impl Ladder {
    /// Prepares every target: its endpoint, and its trust anchors when it speaks TLS.
    pub fn new(config: &AgentConfig) -> Result<Self, TrustError> {
        let mut web: Option<Trust> = None;
        let mut targets = Vec::with_capacity(config.targets.len());
        for target in &config.targets {
            // Config validation has checked the address; an unparsable one is skipped.
            let Ok(endpoint) = target.endpoint() else {
                continue;
            };
            let tls = if endpoint.tls {
                let trust = match &target.ca_file {
                    Some(path) => Trust::from_ca_file(path)?,
                    None => web.get_or_insert_with(Trust::web).clone(),
                };
                endpoint.server_name().map(|name| (trust, name))
            } else {
                None
            };
            targets.push(Arc::new(Target {
                name: target.name.clone(),
                address: target.address.clone(),
                endpoint,
                attempts: target.attempts.unwrap_or(config.attempts),
                tls,
            }));
        }
        Ok(Ladder {
            root: SystemRoot::new(&config.system_root),
            dns_servers: config.dns_server_addresses(),
            timeout: config.probe_timeout(),
            icmp: config.icmp,
            echoing_gateway: Mutex::new(None),
            last: vec![None; targets.len()],
            memory: vec![Vec::new(); targets.len()],
            above_tcp_at: vec![None; targets.len()],
            targets,
            dns_cache: Arc::new(Mutex::new(BTreeMap::new())),
            traffic: Traffic::default(),
        })
    }

    /// The IP bytes the probes sent and received since the last call.
    pub fn take_traffic(&self) -> u64 {
        self.traffic.take()
    }

    /// The targets' names, in the configured order.
    pub fn target_names(&self) -> impl Iterator<Item = &str> {
        self.targets.iter().map(|target| target.name.as_str())
    }

    /// Where each target was last found (its addresses and port), in the configured order:
    /// the addresses the POS application connects to.
    pub fn addresses(&self) -> Vec<Vec<SocketAddr>> {
        let cache = self
            .dns_cache
            .lock()
            .map(|cache| cache.clone())
            .unwrap_or_default();
        self.targets
            .iter()
            .map(|target| {
                let addresses = match &target.endpoint.host {
                    Host::Address(address) => vec![*address],
                    Host::Name(name) => cache
                        .get(name)
                        .map(|(addresses, _)| addresses.clone())
                        .unwrap_or_default(),
                };
                addresses
                    .into_iter()
                    .map(|address| SocketAddr::new(address, target.endpoint.port))
                    .collect()
            })
            .collect()
    }

    /// How long ago each target's TLS or HTTP rung was last climbed, in the configured order
    /// (`None`: never, it has none): a climb that stops below them carries them from memory.
    pub fn above_tcp_ages(&self) -> Vec<Option<Duration>> {
        self.above_tcp_at
            .iter()
            .map(|at| at.map(|at| at.elapsed()))
            .collect()
    }

    /// Every target's full ladder, in the configured order, and the network they ran on.
    pub async fn probe_all(&mut self) -> Measured {
        let plans = vec![Some(Mode::Full); self.targets.len()];
        self.probe(&plans).await
    }

    /// Every target's ladder as planned (`plans[i]` for the i-th target; `None`: as last
    /// measured), in the configured order, and the network they ran on.
    pub async fn probe(&mut self, plans: &[Option<Mode>]) -> Measured {
        let routes = routes::routes(&self.root);
        let link = link::measure(&self.root, &routes);
        let gateway = if link.status == StageStatus::Failed {
            None
        } else {
            Some(gateway::measure(&self.root, &routes))
        };
        let blocked = gateway
            .as_ref()
            .is_none_or(|gateway| gateway.status == StageStatus::Failed);
        // Read every cycle: DHCP or the modem may have changed the nameservers.
        let resolver = Arc::new(Resolver::new(&self.root, &self.dns_servers));
        let network = Network {
            gateway: routes::gateway_subnet(&routes),
            resolver: resolver.primary().map(|address| address.to_string()),
        };
        let mut tasks = JoinSet::new();
        if !blocked {
            for (index, target) in self.targets.iter().enumerate() {
                let Some(mode) = plans.get(index).copied().flatten() else {
                    continue;
                };
                let climber = Climber {
                    target: Arc::clone(target),
                    resolver: Arc::clone(&resolver),
                    timeout: self.timeout,
                    icmp: self.icmp,
                    dns_cache: Arc::clone(&self.dns_cache),
                    traffic: self.traffic.clone(),
                };
                tasks.spawn(async move { (index, climber.climb(mode).await) });
            }
        }
        // The gateway's echo: two tries within the probe timeout, beside a full climb or when
        // a target failed last time (else after the climbs, only if one fails). Only to a
        // gateway of the host's real routing table, never to one a stand-in tree names.
        let echo_gateway = gateway::address(&routes).filter(|_| !blocked && self.root.is_host());
        let echo = || async {
            match echo_gateway {
                Some(address) => {
                    Some(icmp::echo(IpAddr::V4(address), 2, self.timeout / 2, &self.traffic).await)
                }
                None => None,
            }
        };
        let climbs = async {
            let mut climbed: Vec<Option<Vec<StageResult>>> = vec![None; self.targets.len()];
            while let Some(joined) = tasks.join_next().await {
                match joined {
                    Ok((index, stages)) => climbed[index] = Some(stages),
                    Err(error) => tracing::error!(%error, "A probe task failed."),
                }
            }
            climbed
        };
        let failing = |stages: &Option<Vec<StageResult>>| {
            stages.as_ref().is_some_and(|stages| {
                stages
                    .iter()
                    .any(|stage| stage.status == StageStatus::Failed)
            })
        };
        let echo_beside = plans.contains(&Some(Mode::Full)) || self.last.iter().any(failing);
        let (echo, mut climbed) = if echo_beside {
            tokio::join!(echo(), climbs)
        } else {
            let climbed = climbs.await;
            let echo = if climbed.iter().any(failing) {
                echo().await
            } else {
                None
            };
            (echo, climbed)
        };
        let gateway = match (gateway, echo_gateway, echo) {
            (Some(passive), Some(address), Some(echo)) => {
                // A dead router breaks every target behind it, and nothing behind it answers;
                // one target failing alone, or a host that answers with a refusal, is no reason
                // to doubt the router.
                let every_target_failed =
                    gateway::nothing_answered_behind(climbed.iter().flatten().map(Vec::as_slice));
                let mut answered_before = self
                    .echoing_gateway
                    .lock()
                    .map(|guard| *guard)
                    .unwrap_or(None);
                let verdict = gateway::verify(
                    passive,
                    address,
                    &echo,
                    every_target_failed,
                    &mut answered_before,
                );
                if let Ok(mut guard) = self.echoing_gateway.lock() {
                    *guard = answered_before;
                }
                Some(verdict)
            }
            (gateway, _, _) => gateway,
        };
        // A dead router: the rungs behind it measured nothing of their own.
        let blocked = blocked
            || gateway
                .as_ref()
                .is_some_and(|gateway| gateway.status == StageStatus::Failed);
        // What was climbed replaces what was last measured; the rest is carried.
        for (index, fresh) in climbed.iter_mut().enumerate() {
            if blocked {
                *fresh = None;
                continue;
            }
            if let Some(stages) = fresh.take() {
                if stages
                    .iter()
                    .any(|rung| matches!(rung.stage, Stage::Tls | Stage::Http))
                {
                    self.above_tcp_at[index] = Some(Instant::now());
                }
                let shown = carry(&self.memory[index], &stages);
                self.memory[index] = remember(&self.memory[index], stages);
                self.last[index] = Some(shown);
            }
            fresh.clone_from(&self.last[index]);
        }
        let shared: Vec<StageResult> = std::iter::once(link).chain(gateway).collect();
        let probes = self
            .targets
            .iter()
            .zip(climbed)
            .map(|(target, stages)| {
                let mut ladder = shared.clone();
                ladder.extend(stages.unwrap_or_default());
                ladder.truncate(limits::STAGES_MAX);
                ProbeResult {
                    target: target.name.clone(),
                    address: target.address.clone(),
                    stages: ladder,
                }
            })
            .collect();
        Measured { probes, network }
    }
}

/// The rungs past the gateway, in ladder order.
const RUNGS: [Stage; 5] = [Stage::Dns, Stage::Tcp, Stage::Tls, Stage::Http, Stage::Icmp];

/// `fresh` rungs (a climb) over `previous` ones (as last measured): a rung climbed replaces
/// its earlier measurement; one not climbed is carried, unless it lies past a rung that failed
/// now (the ladder stops there).
fn carry(previous: &[StageResult], fresh: &[StageResult]) -> Vec<StageResult> {
    let order = RUNGS;
    let rank = |kind: Stage| order.iter().position(|stage| *stage == kind);
    let first_failure = fresh
        .iter()
        .filter(|stage| stage.status == StageStatus::Failed && stage.stage != Stage::Icmp)
        .filter_map(|stage| rank(stage.stage))
        .min();
    let mut merged = Vec::with_capacity(order.len());
    for kind in order {
        if let Some(climbed) = fresh.iter().find(|stage| stage.stage == kind) {
            merged.push(climbed.clone());
        } else if first_failure.is_none_or(|failed| rank(kind) < Some(failed)) {
            merged.extend(previous.iter().find(|stage| stage.stage == kind).cloned());
        }
    }
    merged
}

/// Every rung's latest measurement: `fresh` ones replace those of `previous`, the others stay.
fn remember(previous: &[StageResult], fresh: Vec<StageResult>) -> Vec<StageResult> {
    RUNGS
        .iter()
        .filter_map(|kind| {
            fresh
                .iter()
                .chain(previous)
                .find(|stage| stage.stage == *kind)
                .cloned()
        })
        .collect()
}

/// What one target's climb needs, owned so that it runs as its own task.
struct Climber {
    target: Arc<Target>,
    resolver: Arc<Resolver>,
    timeout: Duration,
    icmp: bool,
    dns_cache: DnsCache,
    traffic: Traffic,
}

impl Climber {
    /// The rungs past the gateway as `mode` says; a cheap climb that fails with an answer (a
    /// refusal, a reset, a resolver's error) climbs the full ladder at once, to name the cause
    /// over the target's attempts. One that timed out does not: the full ladder would not try
    /// a rung that only timed out again, and the confirming cycle climbs it anyway.
    async fn climb(&self, mode: Mode) -> Vec<StageResult> {
        if mode == Mode::Cheap {
            let stages = self.cheap().await;
            let failure = stages
                .iter()
                .find(|stage| stage.status == StageStatus::Failed);
            match failure {
                None => return stages,
                Some(failed) if failed.error == Some(ErrorKind::Timeout) => return stages,
                Some(_) => {}
            }
        }
        self.full().await
    }

    /// Resolves the target's name (an address needs none): from the cache when `cached` and
    /// its TTL holds, else asked and tallied in `dns` (and cached).
    async fn addresses(&self, dns: &mut Tally, cached: bool) -> Option<Vec<IpAddr>> {
        let name = match &self.target.endpoint.host {
            Host::Address(address) => return Some(vec![*address]),
            Host::Name(name) => name,
        };
        if cached {
            let hit = self.dns_cache.lock().ok().and_then(|cache| {
                cache
                    .get(name)
                    .filter(|(_, until)| Instant::now() < *until)
                    .map(|(addresses, _)| addresses.clone())
            });
            if hit.is_some() {
                return hit;
            }
        }
        let started = Instant::now();
        match self
            .resolver
            .resolve(name, self.timeout, &self.traffic)
            .await
        {
            Ok((addresses, ttl, detail)) => {
                let listed: Vec<String> = addresses.iter().map(ToString::to_string).collect();
                dns.success(
                    started.elapsed(),
                    format!("{} ({detail})", listed.join(" ")),
                );
                // A name from /etc/hosts (no TTL) is kept as long as any: the watch knows a
                // target only by the addresses cached for it.
                if let Ok(mut cache) = self.dns_cache.lock() {
                    let until = Instant::now() + ttl.unwrap_or(DNS_CACHE_MAX).min(DNS_CACHE_MAX);
                    cache.insert(name.clone(), (addresses.clone(), until));
                }
                Some(addresses)
            }
            Err((kind, detail)) => {
                dns.failure(kind, detail);
                None
            }
        }
    }

    fn socket_addresses(&self, addresses: &[IpAddr]) -> Vec<SocketAddr> {
        addresses
            .iter()
            .map(|address| SocketAddr::new(*address, self.target.endpoint.port))
            .collect()
    }

    /// DNS (cached while its TTL holds) and one TCP connect, closed at once with a reset.
    async fn cheap(&self) -> Vec<StageResult> {
        let mut dns = Tally::new(Stage::Dns);
        let mut tcp = Tally::new(Stage::Tcp);
        if let Some(addresses) = self.addresses(&mut dns, true).await {
            let addresses = self.socket_addresses(&addresses);
            match tcp::connect(&addresses, self.timeout, &self.traffic).await {
                Ok(((stream, peer), elapsed, detail)) => {
                    tcp::abort(stream, &peer, &self.traffic);
                    tcp.success(elapsed, detail);
                }
                Err((kind, detail)) => tcp.failure(kind, detail),
            }
        }
        [dns, tcp]
            .into_iter()
            .filter(Tally::attempted)
            .map(Tally::finish)
            .collect()
    }

    /// The full ladder over the target's attempts; ICMP last.
    async fn full(&self) -> Vec<StageResult> {
        let (target, timeout) = (&*self.target, self.timeout);
        let endpoint = &target.endpoint;
        let mut dns = Tally::new(Stage::Dns);
        let mut tcp = Tally::new(Stage::Tcp);
        let mut tls = Tally::new(Stage::Tls);
        let mut http = Tally::new(Stage::Http);
        let mut echo_address: Option<IpAddr> = None;
        for _ in 0..target.attempts {
            // A rung that has only timed out so far would time out again: one timeout names
            // the cause, and a fault is reported a timeout after it is found rather than
            // `attempts` timeouts after. A path that worked once keeps its tries (loss).
            if [&dns, &tcp, &tls, &http]
                .iter()
                .any(|tally| tally.only_timed_out())
            {
                break;
            }
            let Some(addresses) = self.addresses(&mut dns, false).await else {
                continue;
            };
            echo_address = echo_address.or(addresses.first().copied());
            let socket_addresses = self.socket_addresses(&addresses);
            let (stream, peer) = match tcp::connect(&socket_addresses, timeout, &self.traffic).await
            {
                Ok((connected, elapsed, detail)) => {
                    tcp.success(elapsed, detail);
                    connected
                }
                Err((kind, detail)) => {
                    tcp.failure(kind, detail);
                    continue;
                }
            };
            let stream = Counted::new(stream, &peer, self.traffic.clone());
            let (exchange, stream) = match &target.tls {
                Some((trust, server_name)) => {
                    match tls::handshake(stream, server_name.clone(), trust, timeout).await {
                        Ok(mut handshake) => {
                            tls.certificate_days_left = handshake.days_left;
                            tls.tls_version = handshake.version.clone();
                            tls.success(handshake.elapsed, "certificate verified".to_string());
                            let exchange = match &endpoint.http_path {
                                Some(path) => Some(
                                    http::get(
                                        &mut handshake.stream,
                                        &endpoint.host_header(),
                                        path,
                                        timeout,
                                    )
                                    .await,
                                ),
                                None => None,
                            };
                            (exchange, Some(handshake.stream.into_inner().0))
                        }
                        Err(failure) => {
                            tls.certificate_days_left = failure.days_left;
                            tls.failure(failure.error, failure.detail);
                            // The handshake consumed the connection; the kernel closes it.
                            self.traffic.add(traffic::tcp_closed(&peer));
                            continue;
                        }
                    }
                }
                None => match &endpoint.http_path {
                    Some(path) => {
                        let mut stream = stream;
                        let exchange =
                            http::get(&mut stream, &endpoint.host_header(), path, timeout).await;
                        (Some(exchange), Some(stream))
                    }
                    None => (None, Some(stream)),
                },
            };
            if let Some(stream) = stream {
                tcp::abort(stream.into_inner(), &peer, &self.traffic);
            }
            match exchange {
                Some(Ok((status, first_byte))) => {
                    http.http_status = Some(status);
                    if status >= 500 {
                        http.failure(
                            ErrorKind::HttpStatus,
                            format!("the server answered {status}"),
                        );
                    } else {
                        http.success(first_byte, format!("status {status}"));
                    }
                }
                Some(Err((kind, detail))) => http.failure(kind, detail),
                None => {}
            }
        }
        let mut stages: Vec<StageResult> = [dns, tcp, tls, http]
            .into_iter()
            .filter(Tally::attempted)
            .map(Tally::finish)
            .collect();
        if let (true, Some(address)) = (self.icmp, echo_address) {
            stages.push(icmp::echo(address, target.attempts, timeout, &self.traffic).await);
        }
        stages
    }
}

/// The tries of one rung in one cycle, folded into its [`StageResult`].
pub struct Tally {
    stage: Stage,
    attempts: u32,
    latencies_ms: Vec<f64>,
    success_detail: Option<String>,
    last_failure: Option<(ErrorKind, String)>,
    http_status: Option<u16>,
    tls_version: Option<String>,
    certificate_days_left: Option<i64>,
}

impl Tally {
    pub fn new(stage: Stage) -> Self {
        Tally {
            stage,
            attempts: 0,
            latencies_ms: Vec::new(),
            success_detail: None,
            last_failure: None,
            http_status: None,
            tls_version: None,
            certificate_days_left: None,
        }
    }

    pub fn success(&mut self, elapsed: Duration, detail: String) {
        self.attempts += 1;
        self.latencies_ms.push(elapsed.as_secs_f64() * 1000.0);
        self.success_detail = Some(detail);
    }

    pub fn failure(&mut self, kind: ErrorKind, detail: String) {
        self.attempts += 1;
        self.last_failure = Some((kind, detail));
    }

    fn attempted(&self) -> bool {
        self.attempts > 0
    }

    /// Whether every try so far failed, the last by timing out.
    fn only_timed_out(&self) -> bool {
        self.latencies_ms.is_empty()
            && self
                .last_failure
                .as_ref()
                .is_some_and(|(kind, _)| *kind == ErrorKind::Timeout)
    }

    /// Ok when at least one try succeeded (the failures show as loss); failed with the last
    /// failure's kind when none did.
    pub fn finish(self) -> StageResult {
        let successes = u32::try_from(self.latencies_ms.len()).unwrap_or(u32::MAX);
        let (status, error, detail) = match (successes, self.last_failure) {
            (0, Some((kind, detail))) => (StageStatus::Failed, Some(kind), Some(detail)),
            (_, Some((_, failure))) => (
                StageStatus::Ok,
                None,
                Some(format!(
                    "{}; {} of {} tries failed, last: {failure}",
                    self.success_detail.unwrap_or_default(),
                    self.attempts - successes,
                    self.attempts
                )),
            ),
            (_, None) => (StageStatus::Ok, None, self.success_detail),
        };
        StageResult {
            error,
            detail: detail.map(|text| bounded(&text, limits::DETAIL_MAX_CHARS)),
            attempts: self.attempts.min(limits::ATTEMPTS_MAX),
            successes: successes.min(self.attempts.min(limits::ATTEMPTS_MAX)),
            latency_ms: latency_stats(&self.latencies_ms),
            http_status: self.http_status,
            tls_version: self.tls_version,
            certificate_days_left: self.certificate_days_left,
            ..stage(self.stage, status)
        }
    }
}

/// min / avg / max and jitter (mean absolute difference of consecutive tries).
fn latency_stats(latencies: &[f64]) -> Option<LatencyStats> {
    let count = latencies.len();
    if count == 0 {
        return None;
    }
    let min = latencies.iter().copied().fold(f64::INFINITY, f64::min);
    let max = latencies.iter().copied().fold(0.0, f64::max);
    let avg = latencies.iter().sum::<f64>() / count as f64;
    let jitter = if count < 2 {
        0.0
    } else {
        latencies
            .windows(2)
            .map(|pair| (pair[1] - pair[0]).abs())
            .sum::<f64>()
            / (count - 1) as f64
    };
    Some(LatencyStats {
        min,
        avg,
        max,
        jitter,
    })
}

/// A rung's result with nothing measured yet.
pub(crate) fn stage(stage: Stage, status: StageStatus) -> StageResult {
    StageResult {
        stage,
        status,
        error: None,
        detail: None,
        attempts: 1,
        successes: u32::from(status == StageStatus::Ok),
        latency_ms: None,
        http_status: None,
        tls_version: None,
        certificate_days_left: None,
    }
}

/// A rung measured from local state (link, gateway) that is fine.
fn succeeded(kind: Stage, detail: String) -> StageResult {
    StageResult {
        detail: Some(bounded(&detail, limits::DETAIL_MAX_CHARS)),
        ..stage(kind, StageStatus::Ok)
    }
}

/// A rung measured from local state that failed, and why.
fn failed(kind: Stage, error: ErrorKind, detail: &str) -> StageResult {
    StageResult {
        error: Some(error),
        detail: Some(bounded(detail, limits::DETAIL_MAX_CHARS)),
        ..stage(kind, StageStatus::Failed)
    }
}

/// Runs a rung measured from local state (link, gateway) on a fake tree holding `files`, and
/// returns its verdict as (status, error, detail).
#[cfg(test)]
pub(crate) fn rung_on_tree(
    files: &[(&str, &str)],
    measure: fn(&SystemRoot, &[routes::Route]) -> StageResult,
) -> (StageStatus, Option<ErrorKind>, String) {
    let tree = crate::system::tests::FakeTree::new(files);
    let root = tree.root();
    let result = measure(&root, &routes::routes(&root));
    (
        result.status,
        result.error,
        result.detail.unwrap_or_default(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A target named in /etc/hosts: the watch is given its address (it knows a target only by
    /// the addresses cached for it).
    #[tokio::test]
    async fn a_name_from_the_hosts_file_is_watched() {
        let listener =
            std::net::TcpListener::bind("127.0.0.1:0").unwrap_or_else(|error| panic!("{error}"));
        let port = listener
            .local_addr()
            .unwrap_or_else(|error| panic!("{error}"))
            .port();
        let mut files = crate::system::tests::HEALTHY_NETWORK.to_vec();
        files.push(("etc/hosts", "127.0.0.1 pay.example\n"));
        let tree = crate::system::tests::FakeTree::new(&files);
        let mut config = AgentConfig::example();
        config.system_root = tree.root().path("");
        config.icmp = false;
        config.attempts = 1;
        config.probe_timeout_seconds = 1;
        config.targets = vec![crate::config::TargetConfig {
            name: "pay".into(),
            address: format!("pay.example:{port}"),
            tls: false,
            attempts: None,
            ca_file: None,
            contact: None,
        }];
        let mut ladder = Ladder::new(&config).unwrap_or_else(|error| panic!("{error}"));
        assert_eq!(ladder.addresses(), vec![vec![]], "not resolved yet");
        let measured = ladder.probe_all().await;
        assert!(
            measured.probes[0]
                .stages
                .iter()
                .all(|stage| stage.status == StageStatus::Ok),
            "{:?}",
            measured.probes
        );
        assert_eq!(
            ladder.addresses(),
            vec![vec![SocketAddr::from(([127, 0, 0, 1], port))]]
        );
        assert_eq!(ladder.above_tcp_ages(), vec![None], "no TLS, no HTTP");
    }

    #[test]
    fn rungs_not_climbed_are_carried_unless_the_ladder_stops_short_of_them() {
        let rung = |kind: Stage, status: StageStatus| stage(kind, status);
        let kinds = |stages: &[StageResult]| -> Vec<(Stage, StageStatus)> {
            stages
                .iter()
                .map(|stage| (stage.stage, stage.status))
                .collect()
        };
        let full = vec![
            rung(Stage::Dns, StageStatus::Ok),
            rung(Stage::Tcp, StageStatus::Ok),
            rung(Stage::Tls, StageStatus::Ok),
            rung(Stage::Http, StageStatus::Ok),
            rung(Stage::Icmp, StageStatus::Failed),
        ];
        // A cheap probe with the name cached: only TCP is new.
        let cheap = vec![rung(Stage::Tcp, StageStatus::Ok)];
        assert_eq!(kinds(&carry(&full, &cheap)), kinds(&full));
        // Refused: the ladder stops at TCP; ICMP's failure does not stop it.
        let refused = vec![rung(Stage::Tcp, StageStatus::Failed)];
        assert_eq!(
            kinds(&carry(&full, &refused)),
            vec![
                (Stage::Dns, StageStatus::Ok),
                (Stage::Tcp, StageStatus::Failed)
            ]
        );
        // Remembered, TLS and HTTP come back with the connect that recovers.
        let memory = remember(&full, refused);
        assert_eq!(memory.len(), 5);
        assert_eq!(kinds(&carry(&memory, &cheap)), kinds(&full));
    }

    fn check(
        tries: &[Result<u64, ErrorKind>],
        expected: (StageStatus, u32, u32, Option<ErrorKind>, Option<[f64; 4]>),
    ) {
        let mut tally = Tally::new(Stage::Tcp);
        for attempt in tries {
            match attempt {
                Ok(milliseconds) => {
                    tally.success(Duration::from_millis(*milliseconds), "ok".into())
                }
                Err(kind) => tally.failure(*kind, "broken".into()),
            }
        }
        let result = tally.finish();
        let latency = result
            .latency_ms
            .map(|stats| [stats.min, stats.avg, stats.max, stats.jitter]);
        assert_eq!(
            (
                result.status,
                result.attempts,
                result.successes,
                result.error,
                latency
            ),
            expected,
            "{tries:?}"
        );
    }

    #[test]
    fn a_rung_that_only_timed_out_stops_the_tries() {
        let mut tally = Tally::new(Stage::Tcp);
        assert!(!tally.only_timed_out());
        tally.failure(ErrorKind::Refused, "refused".into());
        assert!(!tally.only_timed_out(), "a refusal is tried again");
        tally.failure(ErrorKind::Timeout, "silent".into());
        assert!(tally.only_timed_out());
        tally.success(Duration::from_millis(5), "ok".into());
        tally.failure(ErrorKind::Timeout, "silent".into());
        assert!(
            !tally.only_timed_out(),
            "a path that worked keeps its tries"
        );
    }

    #[test]
    fn tries_fold_into_loss_latency_and_jitter() {
        check(
            &[Ok(10), Ok(30), Ok(20)],
            (StageStatus::Ok, 3, 3, None, Some([10.0, 20.0, 30.0, 15.0])),
        );
        check(
            &[Ok(10), Err(ErrorKind::Timeout), Ok(10)],
            (StageStatus::Ok, 3, 2, None, Some([10.0, 10.0, 10.0, 0.0])),
        );
        check(
            &[Err(ErrorKind::Timeout), Err(ErrorKind::Refused)],
            (StageStatus::Failed, 2, 0, Some(ErrorKind::Refused), None),
        );
        check(
            &[Ok(5)],
            (StageStatus::Ok, 1, 1, None, Some([5.0, 5.0, 5.0, 0.0])),
        );
    }
}
