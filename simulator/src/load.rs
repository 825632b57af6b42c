//! The load loop: `concurrency` workers share one schedule of slots. Slot `s` is due at
//! `s / rate` seconds after the start and belongs to terminal `s mod N`, round `s div N`, so
//! every terminal reports once per `N / rate` seconds and the run needs no per-terminal state.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use posmon_protocol::{terminal_token, FleetKey, ReportBatch};
use serde::Serialize;
use time::OffsetDateTime;

use crate::exposition::samples;
use crate::fleet::SimTerminal;
use crate::report::Moment;
use crate::scenario::{Active, Fault, Scenario, DEFAULT_TARGET};

/// Reports per request at most (a backfill delivers its oldest reports first, in one batch).
pub const MAX_BATCH: usize = 100;

/// Where the load goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Sink {
    /// A posmon collector: JSON reports, one terminal's batch per request.
    Posmon,
    /// Prometheus Pushgateway: each report as samples, PUT to the terminal's group.
    Pushgateway,
    /// VictoriaMetrics: each report as samples, POSTed to /api/v1/import/prometheus.
    Victoriametrics,
}

#[derive(Debug, Clone)]
pub struct LoadConfig {
    /// Base URL of the collector (or of the store the sink names).
    pub collector_url: String,
    pub sink: Sink,
    /// The fleet key the collector holds, to derive each terminal's token.
    pub key: FleetKey,
    pub terminals: u64,
    /// Reports per second over the whole fleet; 0 sends as fast as the collector answers
    /// (silent and backfill faults then follow wall time, without a schedule).
    pub rate_per_second: f64,
    /// `None` runs until stopped.
    pub duration: Option<Duration>,
    pub concurrency: usize,
    pub seed: u64,
    pub id_prefix: String,
    pub scenario: Scenario,
    pub request_timeout: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("invalid collector URL: {0}")]
    Url(String),
    #[error("cannot build the HTTP client: {0}")]
    Client(reqwest::Error),
    #[error("{0} must be above 0")]
    Zero(&'static str),
}

/// What a run achieved.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Summary {
    pub elapsed_seconds: f64,
    pub requests: u64,
    pub reports_sent: u64,
    pub reports_accepted: u64,
    /// Reports per second the schedule asked for (0: unlimited).
    pub target_reports_per_second: f64,
    pub achieved_reports_per_second: f64,
    /// Responses by HTTP status.
    pub statuses: BTreeMap<u16, u64>,
    /// Requests that got no HTTP answer (refused, reset, timed out).
    pub transport_errors: u64,
    /// A few error messages, for the operator to read.
    pub sample_errors: Vec<String>,
    /// Reports not sent because the terminal was silent, or held for a later backfill.
    pub silent_slots: u64,
    pub held_for_backfill: u64,
    /// Reports delivered late in backfill batches.
    pub backfilled_reports: u64,
    pub latency_p50_ms: f64,
    pub latency_p90_ms: f64,
    pub latency_p99_ms: f64,
    pub latency_max_ms: f64,
}

impl Summary {
    /// One paragraph for a person.
    pub fn render(&self) -> String {
        let statuses: Vec<String> = self
            .statuses
            .iter()
            .map(|(status, count)| format!("{status}: {count}"))
            .collect();
        let mut text = format!(
            "sent {} reports in {} requests over {:.1} s: {:.0} reports/s (asked for {}), {} accepted\n\
             latency p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms\n\
             responses: {}; transport errors: {}\n\
             silent slots: {}, held for backfill: {}, delivered late: {}",
            self.reports_sent,
            self.requests,
            self.elapsed_seconds,
            self.achieved_reports_per_second,
            if self.target_reports_per_second > 0.0 {
                format!("{:.0}/s", self.target_reports_per_second)
            } else {
                "as fast as possible".to_string()
            },
            self.reports_accepted,
            self.latency_p50_ms,
            self.latency_p90_ms,
            self.latency_p99_ms,
            self.latency_max_ms,
            if statuses.is_empty() { "none".to_string() } else { statuses.join(", ") },
            self.transport_errors,
            self.silent_slots,
            self.held_for_backfill,
            self.backfilled_reports,
        );
        for error in &self.sample_errors {
            text.push_str(&format!("\nerror: {error}"));
        }
        text
    }
}

struct Shared {
    config: LoadConfig,
    client: reqwest::Client,
    url: reqwest::Url,
    next_slot: AtomicU64,
    stop: AtomicBool,
    started: Instant,
    started_wall: OffsetDateTime,
    /// Sequence numbers start above the previous run's: milliseconds since the epoch at start.
    sequence_base: u64,
}

/// Per-worker tallies, merged at the end.
struct Tally {
    summary: Summary,
    latency: Histogram<u64>,
}

const SAMPLE_ERRORS_MAX: usize = 5;

impl Tally {
    fn new() -> Self {
        Tally {
            summary: Summary::default(),
            // 1 µs to 10 min, 3 significant digits; the bounds are constants, so this cannot fail.
            latency: Histogram::new_with_bounds(1, 600_000_000, 3)
                .unwrap_or_else(|_| unreachable!("constant histogram bounds are valid")),
        }
    }

    fn error(&mut self, message: String) {
        if self.summary.sample_errors.len() < SAMPLE_ERRORS_MAX {
            self.summary.sample_errors.push(message);
        }
    }
}

/// Runs the load until the duration passes or `stop` completes.
pub async fn run(
    config: LoadConfig,
    stop: impl std::future::Future<Output = ()>,
) -> Result<Summary, LoadError> {
    if config.terminals == 0 {
        return Err(LoadError::Zero("terminals"));
    }
    if config.concurrency == 0 {
        return Err(LoadError::Zero("concurrency"));
    }
    let path = match config.sink {
        Sink::Posmon => posmon_protocol::REPORTS_PATH,
        Sink::Pushgateway => "/metrics/job/posmon/instance/",
        Sink::Victoriametrics => "/api/v1/import/prometheus",
    };
    let url = reqwest::Url::parse(&config.collector_url)
        .and_then(|base| base.join(path))
        .map_err(|error| LoadError::Url(error.to_string()))?;
    let client = reqwest::Client::builder()
        .timeout(config.request_timeout)
        .pool_max_idle_per_host(config.concurrency)
        .tcp_nodelay(true)
        .user_agent(concat!("posmon-simulator/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(LoadError::Client)?;
    let started_wall = OffsetDateTime::now_utc();
    let sequence_base = u64::try_from(started_wall.unix_timestamp_nanos() / 1_000_000).unwrap_or(1);
    let shared = Arc::new(Shared {
        client,
        url,
        next_slot: AtomicU64::new(0),
        stop: AtomicBool::new(false),
        started: Instant::now(),
        started_wall,
        sequence_base,
        config,
    });
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..shared.config.concurrency {
        let shared = Arc::clone(&shared);
        workers.spawn(async move { worker(&shared).await });
    }
    let mut total = Tally::new();
    let stopper = async {
        stop.await;
        shared.stop.store(true, Ordering::Relaxed);
    };
    tokio::pin!(stopper);
    let mut stopping = false;
    loop {
        tokio::select! {
            joined = workers.join_next() => match joined {
                None => break,
                Some(Ok(tally)) => merge(&mut total, tally),
                Some(Err(error)) => total.error(format!("a worker failed: {error}")),
            },
            () = &mut stopper, if !stopping => stopping = true,
        }
    }
    let mut summary = total.summary;
    summary.elapsed_seconds = shared.started.elapsed().as_secs_f64();
    summary.target_reports_per_second = shared.config.rate_per_second;
    summary.achieved_reports_per_second =
        summary.reports_sent as f64 / summary.elapsed_seconds.max(1e-9);
    let milliseconds = |micros: u64| micros as f64 / 1000.0;
    summary.latency_p50_ms = milliseconds(total.latency.value_at_quantile(0.50));
    summary.latency_p90_ms = milliseconds(total.latency.value_at_quantile(0.90));
    summary.latency_p99_ms = milliseconds(total.latency.value_at_quantile(0.99));
    summary.latency_max_ms = milliseconds(total.latency.max());
    Ok(summary)
}

fn merge(total: &mut Tally, tally: Tally) {
    let (into, from) = (&mut total.summary, tally.summary);
    into.requests += from.requests;
    into.reports_sent += from.reports_sent;
    into.reports_accepted += from.reports_accepted;
    into.transport_errors += from.transport_errors;
    into.silent_slots += from.silent_slots;
    into.held_for_backfill += from.held_for_backfill;
    into.backfilled_reports += from.backfilled_reports;
    for (status, count) in from.statuses {
        *into.statuses.entry(status).or_default() += count;
    }
    for error in from.sample_errors {
        total.error(error);
    }
    // Both histograms share bounds, so adding cannot fail.
    let _ = total.latency.add(&tally.latency);
}

impl Shared {
    /// Seconds after the start at which `slot` is due.
    fn due(&self, slot: u64) -> f64 {
        slot as f64 / self.config.rate_per_second
    }

    fn scheduled(&self) -> bool {
        self.config.rate_per_second > 0.0
    }
}

async fn worker(shared: &Shared) -> Tally {
    let mut tally = Tally::new();
    let config = &shared.config;
    while !shared.stop.load(Ordering::Relaxed) {
        let slot = shared.next_slot.fetch_add(1, Ordering::Relaxed);
        let at = if shared.scheduled() {
            shared.due(slot)
        } else {
            shared.started.elapsed().as_secs_f64()
        };
        if config
            .duration
            .is_some_and(|duration| at >= duration.as_secs_f64())
        {
            break;
        }
        if shared.scheduled() {
            tokio::time::sleep_until((shared.started + Duration::from_secs_f64(at)).into()).await;
        }
        let index = slot % config.terminals;
        let round = slot / config.terminals;
        let terminal = SimTerminal::new(config.seed, &config.id_prefix, index);
        let scenario = &config.scenario;
        if scenario
            .incident_at(config.seed, &terminal, at, Fault::Silent)
            .is_some()
        {
            tally.summary.silent_slots += 1;
            continue;
        }
        if shared.scheduled()
            && scenario
                .incident_at(config.seed, &terminal, at, Fault::Backfill)
                .is_some()
        {
            tally.summary.held_for_backfill += 1;
            continue;
        }
        let batch = batch(shared, &terminal, round, at, &mut tally);
        send(shared, &terminal, &batch, &mut tally).await;
    }
    tally
}

/// The terminal's current report, preceded by the reports it held during a backfill incident
/// that has just ended (oldest first; the oldest beyond the batch size are dropped and counted).
fn batch(
    shared: &Shared,
    terminal: &SimTerminal,
    round: u64,
    at: f64,
    tally: &mut Tally,
) -> ReportBatch {
    let config = &shared.config;
    let mut held = Vec::new();
    if shared.scheduled() {
        let mut previous = round;
        while previous > 0 {
            previous -= 1;
            let when = shared.due(previous * config.terminals + terminal.index);
            if config
                .scenario
                .incident_at(config.seed, terminal, when, Fault::Backfill)
                .is_none()
            {
                break;
            }
            held.push((previous, when));
        }
        held.reverse();
    }
    let dropped = held.len().saturating_sub(MAX_BATCH - 1);
    let held = &held[dropped..];
    tally.summary.backfilled_reports += held.len() as u64;
    let mut reports = Vec::with_capacity(held.len() + 1);
    for (position, (held_round, when)) in held.iter().enumerate() {
        let mut active = config.scenario.active(config.seed, terminal, *when);
        // The terminal kept these because its network was down: its reports show it.
        active.faults.push((Fault::GatewayDown, DEFAULT_TARGET));
        let dropped_reports = if position == 0 { dropped as u64 } else { 0 };
        reports.push(
            moment(
                shared,
                terminal,
                *held_round,
                *when,
                &active,
                dropped_reports,
            )
            .report(),
        );
    }
    let active = config.scenario.active(config.seed, terminal, at);
    let dropped_reports = if held.is_empty() { dropped as u64 } else { 0 };
    reports.push(moment(shared, terminal, round, at, &active, dropped_reports).report());
    ReportBatch { reports }
}

fn moment<'a>(
    shared: &'a Shared,
    terminal: &'a SimTerminal,
    round: u64,
    at: f64,
    faults: &'a Active<'a>,
    dropped_reports: u64,
) -> Moment<'a> {
    Moment {
        seed: shared.config.seed,
        terminal,
        sequence: shared.sequence_base + round + 1,
        observed_at: shared.started_wall + Duration::from_secs_f64(at),
        draw: round,
        faults,
        dropped_reports,
    }
}

async fn send(shared: &Shared, terminal: &SimTerminal, batch: &ReportBatch, tally: &mut Tally) {
    let count = batch.reports.len() as u64;
    let request = match shared.config.sink {
        Sink::Posmon => {
            let body = match serde_json::to_vec(batch) {
                Ok(body) => body,
                Err(error) => {
                    tally.error(format!("cannot encode a report: {error}"));
                    return;
                }
            };
            let token = terminal_token(&shared.config.key, &terminal.id);
            shared
                .client
                .post(shared.url.clone())
                .bearer_auth(token)
                // As a current agent does: the token is checked before the body is read, and
                // the request takes a slot of the identified pool.
                .header(posmon_protocol::TERMINAL_HEADER, &terminal.id)
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body)
        }
        Sink::Pushgateway => {
            let body: String = batch
                .reports
                .iter()
                .map(|report| samples(report, false))
                .collect();
            let mut url = shared.url.clone();
            url.set_path(&format!("{}{}", shared.url.path(), terminal.id));
            shared.client.put(url).body(body)
        }
        Sink::Victoriametrics => {
            let body: String = batch
                .reports
                .iter()
                .map(|report| samples(report, true))
                .collect();
            shared.client.post(shared.url.clone()).body(body)
        }
    };
    let started = Instant::now();
    let response = request.send().await;
    tally.summary.requests += 1;
    tally.summary.reports_sent += count;
    match response {
        Ok(response) => {
            let status = response.status();
            let text = response.text().await.unwrap_or_default();
            let micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
            let _ = tally.latency.record(micros.clamp(1, 600_000_000));
            *tally.summary.statuses.entry(status.as_u16()).or_default() += 1;
            if status.is_success() {
                tally.summary.reports_accepted += count;
            } else {
                tally.error(format!(
                    "{status} for {}: {}",
                    terminal.id,
                    text.chars().take(300).collect::<String>()
                ));
            }
        }
        Err(error) => {
            tally.summary.transport_errors += 1;
            tally.error(format!("{}: {error}", terminal.id));
        }
    }
}
