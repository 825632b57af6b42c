//! The agent's loop: probe every probe interval; spool a report when the outcome changed or the
//! report interval has passed; deliver what the spool holds, retrying with backoff. Between
//! cycles it sleeps.

use std::time::Duration;

use std::collections::BTreeMap;

use posmon_protocol::{ComponentVersion, Intervals, Labels, Report, Section, StageStatus};
use time::OffsetDateTime;
use tokio::time::Instant;

use crate::config::AgentConfig;
use crate::cycle::Measurer;
use crate::deliver::{Deliverer, DeliveryConfig, Outcome};
use crate::report::{build, compact};
use crate::spool::{Spool, SpoolLimits};

/// What must be reported at once when it changes: each target's first failing rung, and which
/// peripherals and processes are present.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcomes(Vec<(String, Option<String>)>);

impl Outcomes {
    pub fn of(report: &Report) -> Self {
        let mut outcomes = Vec::new();
        for probe in &report.probes {
            let failure = probe
                .stages
                .iter()
                .find(|stage| stage.status == StageStatus::Failed)
                .map(|stage| {
                    format!(
                        "{}:{}",
                        stage.stage.as_str(),
                        stage.error.map_or("", |error| error.as_str())
                    )
                });
            outcomes.push((format!("target:{}", probe.target), failure));
        }
        if let Some(device) = &report.device {
            for peripheral in &device.peripherals {
                outcomes.push((
                    format!("peripheral:{}", peripheral.name),
                    peripheral.present.then(String::new),
                ));
            }
            for process in &device.processes {
                outcomes.push((
                    format!("process:{}", process.name),
                    process.running.then(String::new),
                ));
            }
        }
        Outcomes(outcomes)
    }
}

/// Everything the loop keeps between cycles.
pub struct Agent {
    config: AgentConfig,
    measurer: Measurer,
    spool: Spool,
    deliverer: Deliverer,
    /// The outcomes of the latest spooled report and when it was spooled.
    last_reported: Option<(Outcomes, Instant)>,
    /// While the collector cannot take reports: when to try again.
    retry_at: Option<Instant>,
    /// The labels and software of the latest report that carried them, and how many reports
    /// have said "unchanged" since.
    identity: Option<Identity>,
    reports_since_full: u32,
    /// After a changed outcome: when to probe again and report, to confirm it.
    confirm_at: Option<Instant>,
}

type Identity = (Labels, BTreeMap<String, ComponentVersion>);

/// A report carries its labels and software at least this often even when they do not change,
/// so that a collector that lost its state learns them again (hourly at the 60 s default).
const FULL_REPORT_EVERY: u32 = 60;

/// How long after a changed outcome the confirming cycle runs.
const CONFIRM_AFTER: Duration = Duration::from_secs(3);

fn unix_now() -> i64 {
    OffsetDateTime::now_utc().unix_timestamp()
}

impl Agent {
    pub fn new(config: AgentConfig, token: &str) -> anyhow::Result<Self> {
        let measurer = Measurer::new(&config)?;
        let limits = SpoolLimits {
            max_bytes: config.spool_max_bytes,
            max_age_seconds: i64::try_from(config.spool_max_age_seconds).unwrap_or(i64::MAX),
        };
        let (spool, recovery) = Spool::open(&config.state_dir.join("spool"), limits, unix_now())?;
        if recovery.pending > 0 || recovery.truncated_bytes > 0 {
            tracing::info!(
                pending = recovery.pending,
                truncated_bytes = recovery.truncated_bytes,
                "Reopened the spool: reports from before the restart will be delivered first."
            );
        }
        let deliverer = Deliverer::new(delivery_config(&config, token))?;
        Ok(Agent {
            config,
            measurer,
            spool,
            deliverer,
            last_reported: None,
            retry_at: None,
            identity: None,
            reports_since_full: 0,
            confirm_at: None,
        })
    }

    /// Runs until `shutdown` completes.
    pub async fn run(mut self, shutdown: impl std::future::Future<Output = ()>) {
        let mut ticker = tokio::time::interval(self.config.probe_interval());
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tokio::pin!(shutdown);
        loop {
            let retry_at = self.retry_at;
            let confirm_at = self.confirm_at;
            tokio::select! {
                () = &mut shutdown => return,
                _ = ticker.tick() => {
                    self.cycle(false).await;
                    if self.retry_at.is_none() {
                        self.deliver().await;
                    }
                }
                () = sleep_until(confirm_at), if confirm_at.is_some() => {
                    self.confirm_at = None;
                    self.cycle(true).await;
                    if self.retry_at.is_none() {
                        self.deliver().await;
                    }
                }
                () = sleep_until(retry_at), if retry_at.is_some() => {
                    self.retry_at = None;
                    self.deliver().await;
                }
            }
        }
    }

    /// One probe cycle: spools a report if it is due, the outcome changed, or `confirming` a
    /// change. After a change, one more cycle runs `CONFIRM_AFTER` later and is reported too:
    /// the collector opens (and closes) findings after two observations in a row, and should not
    /// wait a whole report interval for the second.
    pub async fn cycle(&mut self, confirming: bool) {
        let cycle = self.measurer.measure(self.deliverer.clock()).await;
        let dropped = self.spool.dropped();
        let mut report = build(&self.config, self.spool.next_sequence(), cycle);
        report.dropped_reports = dropped;
        report.agent_instance = Some(self.spool.instance().to_string());
        let outcomes = Outcomes::of(&report);
        let now = Instant::now();
        // Half a probe interval of slack: a tick that comes a little early still reports on time.
        let slack = self.config.probe_interval() / 2;
        // The first report of a run is confirmed like a change: a terminal that starts up
        // broken is shown within one confirming cycle, not a report interval later.
        let changed = self
            .last_reported
            .as_ref()
            .is_none_or(|(previous, _)| *previous != outcomes);
        let due = match &self.last_reported {
            None => true,
            Some((_, at)) => {
                confirming
                    || changed
                    || now.duration_since(*at) + slack >= self.config.report_interval()
            }
        };
        if !due {
            return;
        }
        let identity = (report.labels.clone(), report.software.clone());
        // After a drop, the collector may have missed the last full report: send a full one.
        let full = self.identity.as_ref() != Some(&identity)
            || self.reports_since_full + 1 >= FULL_REPORT_EVERY
            || dropped > 0;
        compact(&mut report);
        if full {
            // The schedule rides with the full sections: it can change only with a restart.
            report.intervals = Some(intervals(&self.config));
        } else {
            report.labels = Labels::default();
            report.software.clear();
            report.unchanged = vec![Section::Labels, Section::Software];
        }
        let payload = match serde_json::to_vec(&report) {
            Ok(payload) => payload,
            Err(error) => {
                tracing::error!(%error, "Cannot encode a report.");
                return;
            }
        };
        match self.spool.append(
            report.observed_at.unix_timestamp(),
            &payload,
            dropped,
            unix_now(),
        ) {
            Ok(sequence) => {
                tracing::debug!(sequence, full, changed, "Spooled a report.");
                self.last_reported = Some((outcomes, now));
                if changed && !confirming {
                    self.confirm_at = Some(now + CONFIRM_AFTER);
                }
                if full {
                    self.identity = Some(identity);
                    self.reports_since_full = 0;
                } else {
                    self.reports_since_full += 1;
                }
                if let Err(error) = self.spool.forget_dropped(dropped) {
                    tracing::warn!(%error, "Cannot record that the dropped count was reported.");
                }
            }
            Err(error) => tracing::error!(%error, "Cannot spool a report; it is lost."),
        }
    }

    /// Delivers the spool; on failure, schedules the retry.
    async fn deliver(&mut self) {
        match self.deliverer.deliver(&mut self.spool).await {
            Ok(Outcome::Drained) => {}
            Ok(Outcome::RetryAfter(delay)) => self.retry_at = Some(Instant::now() + delay),
            Err(error) => {
                tracing::error!(%error, "The spool failed; retrying later.");
                self.retry_at = Some(Instant::now() + self.config.report_interval());
            }
        }
    }
}

/// The schedule the collector judges this terminal's silence by.
fn intervals(config: &AgentConfig) -> Intervals {
    let seconds = |duration: Duration| u32::try_from(duration.as_secs()).unwrap_or(u32::MAX);
    Intervals {
        probe_seconds: seconds(config.probe_interval()),
        report_seconds: seconds(config.report_interval()),
        retry_max_seconds: u32::try_from(config.retry_max_seconds).unwrap_or(u32::MAX),
    }
}

async fn sleep_until(when: Option<Instant>) {
    match when {
        Some(when) => tokio::time::sleep_until(when).await,
        None => std::future::pending().await,
    }
}

fn delivery_config(config: &AgentConfig, token: &str) -> DeliveryConfig {
    DeliveryConfig {
        collector_url: config.collector_url.clone(),
        terminal_id: config.terminal_id.clone(),
        token: token.to_string(),
        request_timeout: config.request_timeout(),
        max_batch_reports: config.batch_max_reports,
        max_batch_bytes: 256 * 1024,
        ca_file: config.collector_ca_file.clone(),
        client_certificate: config
            .client_cert_file
            .clone()
            .zip(config.client_key_file.clone()),
        rejected_dir: config.state_dir.join("rejected"),
        backoff_base: Duration::from_secs(1),
        backoff_cap: Duration::from_secs(config.retry_max_seconds),
        transport: config.transport,
        datagram_port: config.datagram_port,
    }
}

/// Checks that the delivery settings can be used (reads the CA bundle and client certificate).
pub fn check_delivery(config: &AgentConfig) -> anyhow::Result<()> {
    Deliverer::new(delivery_config(config, "check"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use posmon_protocol::{
        ErrorKind, LatencyStats, PeripheralStatus, ProbeResult, Stage, StageResult,
    };

    fn with_tcp(status: StageStatus, error: Option<ErrorKind>, milliseconds: f64) -> Report {
        let mut report = crate::report::tests::minimal_report();
        report.probes = vec![ProbeResult {
            target: "pay".into(),
            address: "127.0.0.1:443".into(),
            stages: vec![StageResult {
                stage: Stage::Tcp,
                status,
                error,
                detail: None,
                attempts: 1,
                successes: u32::from(status == StageStatus::Ok),
                latency_ms: Some(LatencyStats {
                    min: milliseconds,
                    avg: milliseconds,
                    max: milliseconds,
                    jitter: 0.0,
                }),
                http_status: None,
                tls_version: None,
                certificate_days_left: None,
            }],
        }];
        report
    }

    #[test]
    fn a_changed_rung_or_peripheral_is_a_changed_outcome() {
        let healthy = Outcomes::of(&with_tcp(StageStatus::Ok, None, 10.0));
        assert_eq!(
            Outcomes::of(&with_tcp(StageStatus::Ok, None, 90.0)),
            healthy,
            "latency alone is no change"
        );
        let refused = Outcomes::of(&with_tcp(
            StageStatus::Failed,
            Some(ErrorKind::Refused),
            0.0,
        ));
        assert_ne!(refused, healthy);
        let timeout = Outcomes::of(&with_tcp(
            StageStatus::Failed,
            Some(ErrorKind::Timeout),
            0.0,
        ));
        assert_ne!(timeout, refused, "another cause is a change too");
        let mut unplugged = with_tcp(StageStatus::Ok, None, 10.0);
        if let Some(device) = unplugged.device.as_mut() {
            device.peripherals.push(PeripheralStatus {
                name: "card_reader".into(),
                present: false,
                detail: None,
            });
        }
        let mut plugged = unplugged.clone();
        if let Some(device) = plugged.device.as_mut() {
            device.peripherals[0].present = true;
        }
        assert_ne!(Outcomes::of(&unplugged), Outcomes::of(&plugged));
    }
}
