//! The agent's loop: the local checks every check interval, the passive watch every watch
//! interval, the targets' probes when their schedule says (`cycle::plan`); spool a report when
//! the outcome changed or the report interval has passed (a heartbeat when nothing did);
//! deliver what the spool holds, retrying with backoff; count what it all cost in the month's
//! data budget, whose stretch lengthens the cheap probes and heartbeats. Between cycles it
//! sleeps.

use std::time::Duration;

use std::collections::{BTreeMap, BTreeSet};

use anyhow::Context;
use posmon_diagnosis::thresholds::Thresholds;
use posmon_diagnosis::{diagnose, Policy, Signal};
use posmon_protocol::limits::INTERVAL_SECONDS_MAX;
use posmon_protocol::{
    ClockStatus, ComponentVersion, DeviceStatus, Intervals, Labels, ProbeResult, Report, Section,
    StageStatus,
};
use time::OffsetDateTime;
use tokio::time::Instant;

use crate::budget::{Budget, BudgetSettings};
use crate::config::AgentConfig;
use crate::control::{self, Central};
use crate::cycle::{Measurer, Schedule};
use crate::deliver::{Deliverer, DeliveryConfig, Outcome};
use crate::report::{build, compact};
use crate::spool::{Spool, SpoolLimits};
use crate::status::{serve_status, verdict, CollectorStatus, Status};

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

    /// The targets whose outcome differs in `now`.
    fn changed_targets(&self, now: &Outcomes) -> Vec<String> {
        now.0
            .iter()
            .filter(|entry| !self.0.contains(entry))
            .filter_map(|(key, _)| key.strip_prefix("target:").map(str::to_string))
            .collect()
    }
}

/// The findings the shared rules (`posmon-diagnosis`, default thresholds, the configured
/// payment roles) see in a report, by code and subject: when they change, the report is no
/// heartbeat.
type Signals = BTreeSet<(&'static str, String)>;

fn signals_of(signals: &[Signal]) -> Signals {
    signals
        .iter()
        .map(|signal| (signal.kind.code, signal.subject.clone()))
        .collect()
}

/// The latest spooled report's outcomes and signals, and when it was spooled.
struct Reported {
    outcomes: Outcomes,
    signals: Signals,
    at: Instant,
}

/// The measurements of the latest report that carried them, and when: a heartbeat says they
/// are still so, within the dead bands.
struct Baseline {
    probes: Vec<ProbeResult>,
    device: Option<DeviceStatus>,
    clock: Option<ClockStatus>,
    at: Instant,
}

/// Everything the loop keeps between cycles.
pub struct Agent {
    config: AgentConfig,
    measurer: Measurer,
    spool: Spool,
    deliverer: Deliverer,
    budget: Budget,
    last_reported: Option<Reported>,
    /// While the collector cannot take reports: when to try again.
    retry_at: Option<Instant>,
    /// The labels and software of the latest report that carried them, and when.
    identity: Option<(Identity, Instant)>,
    baseline: Option<Baseline>,
    /// After a changed outcome: when to probe again and report, to confirm it, and which
    /// targets changed (they climb the full ladder then).
    confirm_at: Option<(Instant, Vec<String>)>,
    /// The schedule and the stretch the collector was last told.
    announced: Option<(Intervals, u32)>,
    /// The rules' thresholds, built once (the payment roles are the config's).
    thresholds: Thresholds,
    /// The latest local verdict, as in the status file, and when the collector last
    /// acknowledged a report.
    status: Option<Status>,
    last_acknowledged: Option<OffsetDateTime>,
    /// The status bytes the endpoint serves, and its listener until `run` starts serving.
    status_bytes: tokio::sync::watch::Sender<std::sync::Arc<[u8]>>,
    status_listener: Option<tokio::net::TcpListener>,
    /// The local file and the collector's settings laid over it (`control.rs`).
    central: Central,
    /// The control task: the long-poll and the fetches of settings.
    control: Option<control::Link>,
    /// The next report says what runs (`Report::config`): it changed, or the collector asked
    /// for a version it runs or refused already.
    send_config_state: bool,
    /// The probe request the next report answers, and the last one answered.
    probe_request: Option<u64>,
    answered_probe: Option<u64>,
    /// When the latest requested probe ran (or is to run): requests closer than
    /// `PROBE_NOW_GAP` wait, so that a flood of them cannot spend the data plan.
    probe_now_at: Option<Instant>,
    /// When the pending probe request's cycle runs.
    probe_at: Option<Instant>,
    /// The cycle running is the probe request's.
    probing: bool,
    /// The settings changed: the loop's check timer follows them.
    reschedule: bool,
    /// Writes the status file, logging only when writing starts or stops failing.
    status_writer: crate::status::StatusWriter,
}

type Identity = (Labels, BTreeMap<String, ComponentVersion>);

/// A report carries its labels, software and measurements at least this often even when they
/// do not change, so that a collector that lost its state learns them again.
const FULL_REPORT_AFTER: Duration = Duration::from_secs(3600);

/// The least time between two requested probes (each climbs every full ladder: about 18 KB a
/// TLS target).
const PROBE_NOW_GAP: Duration = Duration::from_secs(10);

/// How long after a changed outcome the confirming cycle runs.
const CONFIRM_AFTER: Duration = Duration::from_secs(3);

fn unix_now() -> i64 {
    OffsetDateTime::now_utc().unix_timestamp()
}

impl Agent {
    /// The agent of the local file `config`, running the collector's settings kept from
    /// before over it. Starts the control task: call it within the runtime.
    pub fn new(config: AgentConfig, token: &str) -> anyhow::Result<Self> {
        let (central, config) = Central::open(config);
        let measurer = Measurer::new(&config)?;
        let limits = SpoolLimits {
            max_bytes: config.spool_max_bytes,
            max_age_seconds: i64::try_from(config.spool_max_age_seconds).unwrap_or(i64::MAX),
        };
        // Before the spool creates it: 0755, for the POS application to read the status file.
        crate::status::create_state_dir(&config.state_dir).with_context(|| {
            format!(
                "cannot create the state directory {}",
                config.state_dir.display()
            )
        })?;
        let (spool, recovery) = Spool::open(&config.state_dir.join("spool"), limits, unix_now())?;
        if recovery.pending > 0 || recovery.truncated_bytes > 0 {
            tracing::info!(
                pending = recovery.pending,
                truncated_bytes = recovery.truncated_bytes,
                "Reopened the spool: reports from before the restart will be delivered first."
            );
        }
        let deliverer = Deliverer::new(delivery_config(&config, token))?;
        let budget = Budget::open(
            &config.state_dir,
            BudgetSettings::from_config(&config),
            unix_now(),
        );
        let status_listener = match config.status_listen {
            Some(address) => Some(
                std::net::TcpListener::bind(address)
                    .and_then(|listener| {
                        listener.set_nonblocking(true)?;
                        tokio::net::TcpListener::from_std(listener)
                    })
                    .with_context(|| {
                        format!("config key status_listen: cannot listen on {address}")
                    })?,
            ),
            None => None,
        };
        let (status_bytes, _) =
            tokio::sync::watch::channel(std::sync::Arc::<[u8]>::from(Vec::new()));
        let last_acknowledged = crate::status::previous_acknowledgement(&config.state_dir);
        let control = Some(control::start(&config, token, central.state())?);
        Ok(Agent {
            config,
            measurer,
            spool,
            deliverer,
            budget,
            last_reported: None,
            retry_at: None,
            identity: None,
            baseline: None,
            confirm_at: None,
            announced: None,
            thresholds: Thresholds::default(),
            status: None,
            last_acknowledged,
            status_bytes,
            status_listener,
            central,
            control,
            send_config_state: false,
            probe_request: None,
            answered_probe: None,
            probe_now_at: None,
            probe_at: None,
            probing: false,
            reschedule: false,
            status_writer: crate::status::StatusWriter::default(),
        })
    }

    /// The configuration that runs: the local file with the collector's settings laid over it.
    pub fn config(&self) -> &AgentConfig {
        &self.config
    }

    /// Runs until `shutdown` completes.
    pub async fn run(mut self, shutdown: impl std::future::Future<Output = ()>) {
        let _serving = self.status_listener.take().map(|listener| {
            tracing::info!(address = ?listener.local_addr().ok(), "Serving GET /status.");
            AbortOnDrop(tokio::spawn(serve_status(
                listener,
                self.status_bytes.subscribe(),
            )))
        });
        let mut checks = tokio::time::interval(self.config.check_interval());
        checks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let watching = self.config.watch_interval();
        let mut watch = tokio::time::interval(watching.unwrap_or(Duration::from_secs(1)));
        watch.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tokio::pin!(shutdown);
        loop {
            if std::mem::take(&mut self.reschedule) {
                checks = tokio::time::interval(self.config.check_interval());
                checks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            }
            let retry_at = self.retry_at;
            let probe_at = self.probe_at;
            let confirm_at = self.confirm_at.as_ref().map(|(at, _)| *at);
            // A deadline that passed during a long cycle goes first: a timer polled for the
            // first time after its deadline is not ready before the next turn of the timer,
            // and a check tick that is would win every time.
            let now = Instant::now();
            if probe_at.is_some_and(|at| at <= now) {
                self.probe_now().await;
                continue;
            }
            if confirm_at.is_some_and(|at| at <= now) {
                self.cycle(true).await;
                self.deliver_unless_waiting().await;
                continue;
            }
            if retry_at.is_some_and(|at| at <= now) {
                self.retry_at = None;
                self.deliver().await;
                continue;
            }
            tokio::select! {
                () = &mut shutdown => return,
                _ = checks.tick() => {
                    self.cycle(false).await;
                    self.deliver_unless_waiting().await;
                }
                _ = watch.tick(), if watching.is_some() => {
                    let schedule = self.schedule(unix_now());
                    if self.measurer.watch(&schedule, Instant::now()) {
                        self.cycle(false).await;
                        self.deliver_unless_waiting().await;
                    }
                }
                () = sleep_until(confirm_at), if confirm_at.is_some() => {
                    self.cycle(true).await;
                    self.deliver_unless_waiting().await;
                }
                () = sleep_until(retry_at), if retry_at.is_some() => {
                    self.retry_at = None;
                    self.deliver().await;
                }
                () = sleep_until(probe_at), if probe_at.is_some() => self.probe_now().await,
                event = next_event(self.control.as_mut()), if self.control.is_some() => {
                    match event {
                        Some(event) => self.on_control(event).await,
                        None => self.control = None,
                    }
                }
            }
        }
    }

    /// Settings from the collector, or a probe request.
    async fn on_control(&mut self, event: control::Event) {
        match event {
            control::Event::Settings(offered) => {
                if self.central.state().knows(&offered.version) {
                    return;
                }
                let version = offered.version.clone();
                match self.central.offer(*offered) {
                    Ok((config, measurer)) => {
                        tracing::info!(%version, targets = config.targets.len(), "Running the collector's settings.");
                        self.config = config;
                        self.measurer = measurer;
                        // As at a start: everything measured and reported in full, confirmed.
                        self.last_reported = None;
                        self.identity = None;
                        self.baseline = None;
                        self.confirm_at = None;
                        self.reschedule = true;
                    }
                    Err(reason) => {
                        tracing::warn!(%version, %reason, "Refused the collector's settings; the configuration that ran runs on.");
                    }
                }
                self.config_state_changed();
                self.cycle(false).await;
                self.deliver_unless_waiting().await;
            }
            control::Event::Probe(id) => self.request_probe(id),
            control::Event::Unreadable { version, reason } => {
                self.central.refuse(version, reason);
                self.config_state_changed();
            }
        }
    }

    /// What runs changed (settings taken, refused, or a refusal forgotten): the next report
    /// says it, and the long-poll tells the collector at once.
    fn config_state_changed(&mut self) {
        self.send_config_state = true;
        if let Some(link) = &self.control {
            link.state.send_replace(self.central.state());
        }
    }

    /// Probes every target's full ladder at once and reports, naming the request.
    fn request_probe(&mut self, id: u64) {
        if self.answered_probe == Some(id) || self.probe_request == Some(id) {
            return;
        }
        tracing::info!(request = id, "The collector asks for a probe now.");
        self.probe_request = Some(id);
        let now = Instant::now();
        let at = self
            .probe_now_at
            .map_or(now, |last| now.max(last + PROBE_NOW_GAP));
        self.probe_now_at = Some(at);
        self.probe_at = Some(at);
    }

    /// The probe request's cycle: every target's full ladder, reported at once, naming it.
    async fn probe_now(&mut self) {
        self.probe_at = None;
        self.probing = true;
        self.cycle(false).await;
        self.probing = false;
        self.deliver_unless_waiting().await;
    }

    /// What the acknowledgements asked: a settings version (fetched unless it runs or was
    /// refused — then the collector lost what runs, and the next report says it again) or a
    /// probe request.
    fn take_asked(&mut self) {
        let asked = self.deliverer.take_asked();
        if let Some(version) = asked.config {
            if self.central.state().knows(&version) {
                self.send_config_state = true;
            } else if let Some(link) = &self.control {
                let _ = link.fetch.try_send(version);
            }
        }
        if let Some(id) = asked.probe_request {
            self.request_probe(id);
        }
    }

    /// The probing schedule now: the cheap probes (and, through their cap, a failing target's
    /// re-probes) stretched by the budget. The watch's triggers are not: they are the faults.
    fn schedule(&self, unix: i64) -> Schedule {
        Schedule {
            probe: within_protocol(
                self.budget
                    .stretch_interval(self.config.probe_interval(), unix),
            ),
            full: self.config.full_probe_interval(),
            failing: self.config.failing_probe_interval(),
        }
    }

    /// The report interval now, stretched by the budget.
    fn report_interval(&self, unix: i64) -> Duration {
        within_protocol(
            self.budget
                .stretch_interval(self.config.report_interval(), unix),
        )
    }

    /// Feeds the budget what the measurer and the deliverer spent since they were last asked.
    fn record_traffic(&mut self) {
        let (probe_bytes, other_bytes) = self.measurer.take_traffic();
        let other_bytes = other_bytes
            .saturating_add(self.control.as_ref().map_or(0, control::Link::take_traffic));
        let report_bytes = self.deliverer.take_traffic();
        if probe_bytes > 0 || other_bytes > 0 || report_bytes > 0 {
            self.budget
                .record(report_bytes, probe_bytes, other_bytes, unix_now());
        }
    }

    /// One cycle: the local checks, and the targets' probes that are due (see
    /// [`crate::cycle::plan`]). Spools a report if one is due, the outcome changed, or
    /// `confirming` a change. After a change, one more cycle runs `CONFIRM_AFTER` later and is
    /// reported too: the collector opens (and closes) findings after two observations in a
    /// row, and should not wait a whole report interval for the second.
    ///
    /// A report whose outcomes and the shared rules' signals did not change, and whose
    /// measurements are within the dead bands of the last ones sent, is a heartbeat: it leaves
    /// them out (`unchanged: measurements`). Labels, software and measurements are sent in full
    /// at least every `FULL_REPORT_AFTER`.
    pub async fn cycle(&mut self, confirming: bool) {
        if self.central.forget_stale_refusal(std::time::Instant::now()) {
            self.config_state_changed();
        }
        let unix = unix_now();
        let schedule = self.schedule(unix);
        let confirm = if confirming {
            self.confirm_at.take().map(|(_, targets)| targets)
        } else {
            None
        };
        let mut confirm = confirm.unwrap_or_default();
        let answering = self.probe_request.filter(|_| self.probing);
        if answering.is_some() {
            confirm = self
                .config
                .targets
                .iter()
                .map(|target| target.name.clone())
                .collect();
        }
        // Planned half a check interval ahead: a target due a little after this tick is probed
        // now rather than a whole check interval late.
        let planned_at = Instant::now() + self.config.check_interval() / 2;
        let plans = self.measurer.plans(&schedule, planned_at, &confirm);
        tracing::debug!(?plans, confirming, "A cycle.");
        let cycle = self
            .measurer
            .measure_planned(self.deliverer.clock(), &plans)
            .await;
        self.record_traffic();
        let dropped = self.spool.dropped();
        let mut report = build(&self.config, self.spool.next_sequence(), cycle);
        report.dropped_reports = dropped;
        report.agent_instance = Some(self.spool.instance().to_string());
        compact(&mut report);
        let outcomes = Outcomes::of(&report);
        let policy = Policy {
            versions: &[],
            thresholds: &self.thresholds,
            roles: &self.config.readiness,
        };
        let diagnosed = diagnose(&report, &policy);
        let signals = signals_of(&diagnosed);
        self.status = Some(Status {
            schema_version: crate::status::STATUS_SCHEMA_VERSION,
            terminal_id: self.config.terminal_id.clone(),
            observed_at: report.observed_at,
            verdict: verdict(
                &report,
                &diagnosed,
                &self.config.readiness,
                &self.config.contacts,
                &self.config.targets,
            ),
            collector: self.collector_status(),
        });
        self.publish_status();
        let now = Instant::now();
        // Half a check interval of slack: a tick that comes a little early still reports on
        // time.
        let slack = self.config.check_interval() / 2;
        // The first report of a run is confirmed like a change: a terminal that starts up
        // broken is shown within one confirming cycle, not a report interval later.
        let changed = self
            .last_reported
            .as_ref()
            .is_none_or(|previous| previous.outcomes != outcomes || previous.signals != signals);
        // A confirming cycle on its way reports within seconds: no periodic report before it.
        let due = confirming
            || changed
            || self.send_config_state
            || answering.is_some()
            || (self.confirm_at.is_none()
                && self.last_reported.as_ref().is_none_or(|previous| {
                    now.duration_since(previous.at) + slack
                        >= report_due_after(self.report_interval(unix), self.announced.as_ref())
                }));
        if !due {
            return;
        }
        let changed_targets = self
            .last_reported
            .as_ref()
            .map(|previous| previous.outcomes.changed_targets(&outcomes))
            .unwrap_or_default();
        let identity = (report.labels.clone(), report.software.clone());
        let stale = |at: Instant| now.duration_since(at) + slack >= FULL_REPORT_AFTER;
        // After a drop, the collector may have missed the last full report: send a full one.
        let full = self
            .identity
            .as_ref()
            .is_none_or(|(sent, at)| *sent != identity || stale(*at))
            || dropped > 0;
        // Only to a collector that said it takes them: one from before heartbeats would read
        // one as a report without probes.
        let heartbeat = !full
            && !confirming
            && answering.is_none()
            && !changed
            && self.deliverer.takes_heartbeats()
            && self.baseline.as_ref().is_some_and(|baseline| {
                !stale(baseline.at)
                    && probes_within_bands(&baseline.probes, &report.probes)
                    && device_within_bands(baseline.device.as_ref(), report.device.as_ref())
                    && clock_within_bands(baseline.clock.as_ref(), report.clock.as_ref())
            });
        let announce = (
            intervals(&self.config, schedule.probe, self.report_interval(unix)),
            self.budget.stretch(unix),
        );
        // The schedule rides with the full sections, and with any report when it moved: the
        // collector judges silence by it. So does the data usage.
        if full
            || self
                .announced
                .is_none_or(|announced| schedule_moved(announced, announce))
        {
            report.intervals = Some(announce.0);
            report.data_usage = Some(self.budget.usage(unix));
        }
        if full || self.send_config_state {
            report.config = Some(self.central.state());
        }
        report.probe_request = answering;
        let baseline = Baseline {
            probes: report.probes.clone(),
            device: report.device.clone(),
            clock: report.clock.clone(),
            at: now,
        };
        if heartbeat {
            report.probes.clear();
            report.device = None;
            report.clock = None;
        }
        if !full {
            report.labels = Labels::default();
            report.software.clear();
            report.unchanged = vec![Section::Labels, Section::Software];
        }
        if heartbeat {
            report.unchanged.push(Section::Measurements);
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
                tracing::debug!(sequence, full, changed, heartbeat, "Spooled a report.");
                self.last_reported = Some(Reported {
                    outcomes,
                    signals,
                    at: now,
                });
                // A change is confirmed, even one a confirming cycle found.
                if changed {
                    self.confirm_at = Some((now + CONFIRM_AFTER, changed_targets));
                }
                if full {
                    self.identity = Some((identity, now));
                }
                if !heartbeat {
                    self.baseline = Some(baseline);
                }
                if report.intervals.is_some() {
                    self.announced = Some(announce);
                }
                if report.config.is_some() {
                    self.send_config_state = false;
                }
                if report.probe_request.is_some() {
                    self.answered_probe = self.probe_request.take();
                }
                if let Err(error) = self.spool.forget_dropped(dropped) {
                    tracing::warn!(%error, "Cannot record that the dropped count was reported.");
                }
                if let Err(error) = self.budget.save() {
                    tracing::warn!(%error, "Cannot save the data usage.");
                }
            }
            Err(error) => tracing::error!(%error, "Cannot spool a report; it is lost."),
        }
    }

    async fn deliver_unless_waiting(&mut self) {
        if self.retry_at.is_none() {
            self.deliver().await;
        }
    }

    /// What the status says of the collector now.
    fn collector_status(&self) -> CollectorStatus {
        CollectorStatus {
            last_acknowledged_at: self.last_acknowledged,
            pending_reports: self.spool.pending_count(),
        }
    }

    /// Writes the latest status to the status file and hands it to the endpoint.
    fn publish_status(&mut self) {
        let Some(status) = &self.status else {
            return;
        };
        let bytes = match serde_json::to_vec_pretty(status) {
            Ok(bytes) => bytes,
            Err(error) => {
                tracing::error!(%error, "Cannot encode the status.");
                return;
            }
        };
        self.status_writer.write(&self.config.state_dir, &bytes);
        self.status_bytes.send_replace(std::sync::Arc::from(bytes));
    }

    /// Delivers the spool; on failure, schedules the retry.
    async fn deliver(&mut self) {
        let acknowledged = self.spool.acknowledged();
        let delivered = self.deliverer.deliver(&mut self.spool).await;
        if self.spool.acknowledged() > acknowledged {
            self.last_acknowledged = Some(OffsetDateTime::now_utc());
        }
        let collector = self.collector_status();
        if let Some(status) = self
            .status
            .as_mut()
            .filter(|status| status.collector != collector)
        {
            status.collector = collector;
            self.publish_status();
        }
        self.record_traffic();
        self.measurer.rebaseline_watch();
        self.take_asked();
        match delivered {
            Ok(Outcome::Drained) => {}
            Ok(Outcome::RetryAfter(delay)) => self.retry_at = Some(Instant::now() + delay),
            Err(error) => {
                tracing::error!(%error, "The spool failed; retrying later.");
                self.retry_at = Some(Instant::now() + self.config.report_interval());
            }
        }
    }
}

/// Aborts the task when dropped: the status endpoint stops with the loop.
pub(crate) struct AbortOnDrop(pub(crate) tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A stretch that moved by less than this many points is not announced again before the next
/// full report: a few percent on a report interval is nothing to the collector's silence
/// judgement (several intervals), and the budget moves it a little at every record.
const STRETCH_ANNOUNCE_POINTS: u32 = 10;

/// Whether the schedule and stretch `now` differ enough from those `announced` to be sent: a
/// configured interval's change, a stretch that moved by `STRETCH_ANNOUNCE_POINTS` or more,
/// or one that began or ended.
fn schedule_moved(announced: (Intervals, u32), now: (Intervals, u32)) -> bool {
    let ((_, before), (_, after)) = (announced, now);
    let configured = |(intervals, stretch): (Intervals, u32)| {
        let unstretched = |seconds: u32| u64::from(seconds) * 100 / u64::from(stretch.max(1));
        (
            unstretched(intervals.probe_seconds),
            unstretched(intervals.report_seconds),
            intervals.retry_max_seconds,
        )
    };
    configured(announced).0.abs_diff(configured(now).0) > 1
        || configured(announced).1.abs_diff(configured(now).1) > 1
        || configured(announced).2 != configured(now).2
        || before.abs_diff(after) >= STRETCH_ANNOUNCE_POINTS
        || (before == 100) != (after == 100)
}

/// Latency within this many milliseconds, or this share of the previous value, whichever is
/// larger, is "the same" for a heartbeat; the rules' thresholds decide what is too slow.
const LATENCY_BAND_MS: f64 = 50.0;
const LATENCY_BAND_SHARE: f64 = 0.3;
/// Dead bands of the device's measurements: disk and memory use in points of percent,
/// temperature in °C, battery in points.
const DISK_BAND_PERCENT: f64 = 2.0;
const MEMORY_BAND_PERCENT: f64 = 5.0;
const TEMPERATURE_BAND_CELSIUS: f64 = 3.0;
const BATTERY_BAND_PERCENT: f64 = 5.0;
/// The clock's offset from the collector's, in milliseconds (a round trip's asymmetry on a
/// cellular link moves it by tens of milliseconds).
const CLOCK_BAND_MS: f64 = 250.0;

/// Whether every rung is as before: the same status, error, loss or none, HTTP status, TLS
/// version and certificate days, and latency within the band.
fn probes_within_bands(before: &[ProbeResult], now: &[ProbeResult]) -> bool {
    before.len() == now.len()
        && before.iter().zip(now).all(|(before, now)| {
            before.target == now.target
                && before.stages.len() == now.stages.len()
                && before.stages.iter().zip(&now.stages).all(|(before, now)| {
                    let latency = match (before.latency_ms, now.latency_ms) {
                        (Some(before), Some(now)) => {
                            let band = LATENCY_BAND_MS.max(before.avg * LATENCY_BAND_SHARE);
                            (now.avg - before.avg).abs() <= band
                        }
                        (before, now) => before.is_none() == now.is_none(),
                    };
                    before.stage == now.stage
                        && before.status == now.status
                        && before.error == now.error
                        && (before.successes == before.attempts) == (now.successes == now.attempts)
                        && before.http_status == now.http_status
                        && before.tls_version == now.tls_version
                        && before.certificate_days_left == now.certificate_days_left
                        && latency
                })
        })
}

fn within(before: f64, now: f64, band: f64) -> bool {
    (now - before).abs() <= band
}

fn percent(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 * 100.0 / whole as f64
    }
}

/// Whether the device's disks, memory, temperatures, battery, interfaces, processes and
/// peripherals are as before, within the dead bands (CPU and load are not compared: the rules
/// do not judge them).
fn device_within_bands(before: Option<&DeviceStatus>, now: Option<&DeviceStatus>) -> bool {
    let (Some(before), Some(now)) = (before, now) else {
        return before.is_none() && now.is_none();
    };
    let used = |disk: &posmon_protocol::DiskStatus| {
        percent(
            disk.total_bytes.saturating_sub(disk.available_bytes),
            disk.total_bytes,
        )
    };
    let memory =
        |device: &DeviceStatus| match (device.memory_total_bytes, device.memory_available_bytes) {
            (Some(total), Some(available)) => Some(percent(available, total)),
            _ => None,
        };
    let memory_same = match (memory(before), memory(now)) {
        (Some(before), Some(now)) => within(before, now, MEMORY_BAND_PERCENT),
        (before, now) => before.is_none() == now.is_none(),
    };
    let disks_same = before.disks.len() == now.disks.len()
        && before.disks.iter().zip(&now.disks).all(|(before, now)| {
            before.mount == now.mount && within(used(before), used(now), DISK_BAND_PERCENT)
        });
    let temperatures_same = before.temperatures.len() == now.temperatures.len()
        && before
            .temperatures
            .iter()
            .zip(&now.temperatures)
            .all(|(before, now)| {
                before.sensor == now.sensor
                    && within(before.celsius, now.celsius, TEMPERATURE_BAND_CELSIUS)
            });
    let battery_same = match (&before.battery, &now.battery) {
        (Some(before), Some(now)) => {
            before.charging == now.charging
                && within(before.percent, now.percent, BATTERY_BAND_PERCENT)
        }
        (before, now) => before.is_none() == now.is_none(),
    };
    let interfaces_same = before.interfaces.len() == now.interfaces.len()
        && before
            .interfaces
            .iter()
            .zip(&now.interfaces)
            .all(|(before, now)| before.name == now.name && before.up == now.up);
    memory_same
        && disks_same
        && temperatures_same
        && battery_same
        && interfaces_same
        && before.processes == now.processes
        && before.peripherals == now.peripherals
}

fn clock_within_bands(before: Option<&ClockStatus>, now: Option<&ClockStatus>) -> bool {
    match (before, now) {
        (Some(before), Some(now)) => {
            before.ntp_synchronized == now.ntp_synchronized
                && within(before.offset_ms, now.offset_ms, CLOCK_BAND_MS)
        }
        // The offset comes with the first exchange with the collector.
        (before, now) => before.is_none() == now.is_none(),
    }
}

/// The schedule the collector judges this terminal's silence by: the cheap probes' and the
/// reports' intervals as stretched now, within what the protocol carries (a value beyond would
/// have the report refused and set aside).
fn intervals(config: &AgentConfig, probe: Duration, report: Duration) -> Intervals {
    let seconds = |seconds: u64, least: u32| {
        u32::try_from(seconds)
            .unwrap_or(u32::MAX)
            .clamp(least, INTERVAL_SECONDS_MAX)
    };
    Intervals {
        probe_seconds: seconds(probe.as_secs(), 1),
        report_seconds: seconds(report.as_secs(), 1),
        retry_max_seconds: seconds(config.retry_max_seconds, 0),
    }
}

/// `interval`, at most the longest interval the protocol carries: a stretch never makes the
/// agent quieter than it can announce.
fn within_protocol(interval: Duration) -> Duration {
    interval.min(Duration::from_secs(u64::from(INTERVAL_SECONDS_MAX)))
}

/// How long after the last report the next is due, given the report interval stretched now:
/// never later than the interval last `announced`, because the collector judges silence by it
/// and learns a longer one only from the next report (a stretch from 100 % to 400 % would
/// otherwise come a whole new interval later, past the collector's limit).
fn report_due_after(stretched: Duration, announced: Option<&(Intervals, u32)>) -> Duration {
    announced.map_or(stretched, |(intervals, _)| {
        stretched.min(Duration::from_secs(u64::from(intervals.report_seconds)))
    })
}

async fn next_event(link: Option<&mut control::Link>) -> Option<control::Event> {
    match link {
        Some(link) => link.events.recv().await,
        None => std::future::pending().await,
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

    #[test]
    fn measurements_within_the_dead_bands_are_the_same() {
        let before = with_tcp(StageStatus::Ok, None, 100.0);
        let same = |milliseconds: f64| {
            probes_within_bands(
                &before.probes,
                &with_tcp(StageStatus::Ok, None, milliseconds).probes,
            )
        };
        assert!(same(100.0) && same(140.0) && same(60.0));
        assert!(!same(131.0 + 20.0), "more than 50 ms and 30 % slower");
        assert!(!probes_within_bands(
            &before.probes,
            &with_tcp(StageStatus::Failed, Some(ErrorKind::Refused), 0.0).probes
        ));
        let device = |available: u64, celsius: f64| DeviceStatus {
            memory_total_bytes: Some(1000),
            memory_available_bytes: Some(available),
            temperatures: vec![posmon_protocol::Temperature {
                sensor: "cpu".into(),
                celsius,
            }],
            ..DeviceStatus::default()
        };
        let base = device(500, 50.0);
        assert!(device_within_bands(Some(&base), Some(&device(540, 52.0))));
        assert!(!device_within_bands(Some(&base), Some(&device(600, 50.0))));
        assert!(!device_within_bands(Some(&base), Some(&device(500, 54.0))));
        assert!(!device_within_bands(Some(&base), None));
        let clock = |offset_ms: f64| ClockStatus {
            offset_ms,
            uncertainty_ms: 5.0,
            ntp_synchronized: Some(true),
        };
        assert!(clock_within_bands(Some(&clock(10.0)), Some(&clock(200.0))));
        assert!(!clock_within_bands(Some(&clock(10.0)), Some(&clock(400.0))));
        assert!(!clock_within_bands(None, Some(&clock(10.0))));
    }

    /// The reports the loop spools: the first whole, its confirmation with measurements, then a
    /// heartbeat, and a change whole again (labels and software only hourly).
    #[tokio::test]
    async fn unchanged_cycles_are_heartbeats_and_a_change_is_not() {
        let dir = tempfile::tempdir().unwrap_or_else(|error| panic!("{error}"));
        let tree = crate::system::tests::FakeTree::new(&[("etc/hosts", ""), ("dev/.keep", "")]);
        let mut config = AgentConfig::example();
        config.state_dir = dir.path().join("state");
        config.system_root = tree.root().path("");
        config.report_interval_seconds = 1;
        config.check_interval_seconds = 1;
        config.peripherals = vec![crate::config::PeripheralConfig {
            name: "card_reader".into(),
            device: Some("/dev/ttyFAKE".into()),
            usb: None,
            command: None,
            timeout_seconds: 5,
        }];
        let mut agent = Agent::new(config, "k1.x").unwrap_or_else(|error| panic!("{error}"));
        agent.cycle(false).await;
        agent.cycle(true).await;
        tokio::time::sleep(Duration::from_millis(1100)).await;
        // No collector said it takes heartbeats yet: the measurements go in full.
        agent.cycle(false).await;
        tokio::time::sleep(Duration::from_millis(1100)).await;
        agent.deliverer.assume_heartbeats();
        agent.cycle(false).await;
        std::fs::write(tree.root().path("dev/ttyFAKE"), "")
            .unwrap_or_else(|error| panic!("{error}"));
        agent.cycle(false).await;
        let reports: Vec<Report> = agent
            .spool
            .pending(100, 1 << 20)
            .unwrap_or_else(|error| panic!("{error}"))
            .iter()
            .map(|pending| {
                serde_json::from_slice(&pending.payload).unwrap_or_else(|error| panic!("{error}"))
            })
            .collect();
        let shape = |report: &Report| {
            (
                report.unchanged.clone(),
                report.device.is_some(),
                report.intervals.is_some(),
            )
        };
        let labels = vec![Section::Labels, Section::Software];
        let mut heartbeat = labels.clone();
        heartbeat.push(Section::Measurements);
        assert_eq!(
            reports.iter().map(shape).collect::<Vec<_>>(),
            vec![
                (vec![], true, true),
                (labels.clone(), true, false),
                (labels.clone(), true, false),
                (heartbeat, false, false),
                (labels, true, false),
            ]
        );
        for report in &reports {
            posmon_protocol::validate_report(report, "report")
                .unwrap_or_else(|error| panic!("{error}"));
        }
        let usage = reports[0]
            .data_usage
            .unwrap_or_else(|| panic!("data usage"));
        assert_eq!((usage.stretch_percent, usage.probe_bytes), (100, 0));
    }

    /// A stretch from 100 % to 400 % reaches the collector at the cadence it knows: the next
    /// report is due after the interval announced (and announces the new one), not after the
    /// new one, which would pass the collector's silence limit (three announced intervals).
    #[test]
    fn a_longer_interval_is_announced_at_the_old_cadence() {
        let minutes = |count: u64| Duration::from_secs(count * 60);
        let announced = (
            Intervals {
                probe_seconds: 600,
                report_seconds: 300,
                retry_max_seconds: 300,
            },
            100,
        );
        assert_eq!(report_due_after(minutes(20), Some(&announced)), minutes(5));
        assert_eq!(report_due_after(minutes(2), Some(&announced)), minutes(2));
        assert_eq!(report_due_after(minutes(20), None), minutes(20));
        assert!(schedule_moved(
            announced,
            (
                Intervals {
                    probe_seconds: 2400,
                    report_seconds: 1200,
                    retry_max_seconds: 300,
                },
                400
            )
        ));
    }

    /// Stretched intervals beyond a day are announced as a day: the collector refuses more.
    #[test]
    fn announced_intervals_stay_within_the_protocol() {
        let mut config = AgentConfig::example();
        config.retry_max_seconds = u64::MAX;
        let day = Duration::from_secs(86_400);
        let announced = intervals(
            &config,
            within_protocol(day * 4),
            within_protocol(Duration::MAX),
        );
        assert_eq!(
            (
                announced.probe_seconds,
                announced.report_seconds,
                announced.retry_max_seconds
            ),
            (86_400, 86_400, 86_400)
        );
        let mut report = crate::report::tests::minimal_report();
        report.intervals = Some(announced);
        posmon_protocol::validate_report(&report, "report")
            .unwrap_or_else(|error| panic!("{error}"));
        assert_eq!(intervals(&config, Duration::ZERO, day).probe_seconds, 1);
    }

    #[test]
    fn a_stretch_is_announced_when_it_moved_enough() {
        let at = |probe: u32, report: u32, stretch: u32| {
            (
                Intervals {
                    probe_seconds: probe * stretch / 100,
                    report_seconds: report * stretch / 100,
                    retry_max_seconds: 300,
                },
                stretch,
            )
        };
        let base = at(600, 300, 100);
        assert!(!schedule_moved(base, at(600, 300, 100)));
        assert!(schedule_moved(base, at(600, 300, 103)), "a stretch begins");
        assert!(!schedule_moved(at(600, 300, 150), at(600, 300, 155)));
        assert!(schedule_moved(at(600, 300, 150), at(600, 300, 160)));
        assert!(
            schedule_moved(at(600, 300, 150), at(600, 300, 100)),
            "it ends"
        );
        assert!(
            schedule_moved(base, at(600, 60, 100)),
            "a configured change"
        );
    }
}
