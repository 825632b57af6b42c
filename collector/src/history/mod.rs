//! History that lasts: per terminal its latency, loss and readiness, and the fleet trend, kept
//! in the state database for `history.retention_days`, downsampled (`slots.rs`), surviving
//! restarts; and what is read from it: chart series with gaps where no report came, and
//! availability per group (`availability.rs`).
//!
//! Data flows one way: ingest (after a batch is applied) and the trend sampler put messages on
//! a bounded queue ([`History::record`], which never waits: when the queue is full the message
//! is dropped and counted); one writer thread takes them and writes them in one transaction
//! about every second, and prunes what is past its retention every hour. Queries read through
//! a connection of their own. The history never changes the fleet and the ingest path never
//! waits for it.
//!
//! Readiness is kept as changes (terminal, time, readiness), so an interval's time in each
//! readiness is exact. A restart marks every terminal `unknown` from when the writer last
//! wrote: the time the collector was down is nobody's availability.

pub mod availability;
pub mod disk;
pub mod remote_write;
pub mod slots;
pub mod store;

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use prometheus::{Histogram, IntCounter, IntCounterVec};
use rusqlite::Connection;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use posmon_diagnosis::readiness::Readiness;
use posmon_protocol::report::{Report, StageStatus};

use self::availability::Seconds;
use self::slots::{Slot, Tier, COARSE, DAY_SECONDS, FINE, FINE_RETENTION_DAYS};
use self::store::Known;
use crate::store::StoreError;
use crate::web::trend::TrendPoint;

/// `[history]`: how long the history is kept and how much may wait for its writer.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HistoryConfig {
    /// Days the coarse series, readiness changes and fleet trend are kept (1 to 3650).
    pub retention_days: u32,
    /// Messages (one per report request, trend point or readiness sweep) waiting for the
    /// writer; beyond, new ones are dropped and counted.
    pub queue_max_messages: usize,
    /// Optional: the same series to a Prometheus-compatible TSDB (`remote_write.rs`).
    pub remote_write: remote_write::RemoteWriteConfig,
}

impl Default for HistoryConfig {
    fn default() -> Self {
        HistoryConfig {
            retention_days: 90,
            queue_max_messages: 65_536,
            remote_write: remote_write::RemoteWriteConfig::default(),
        }
    }
}

impl HistoryConfig {
    /// The key (under `history.`) and the problem of a value out of bounds.
    pub fn validate(&self) -> Result<(), (String, &'static str)> {
        self.validate_own()
            .map_err(|(key, problem)| (key.to_string(), problem))?;
        self.remote_write
            .validate()
            .map_err(|(key, problem)| (format!("remote_write.{key}"), problem))
    }

    fn validate_own(&self) -> Result<(), (&'static str, &'static str)> {
        if !(1..=3650).contains(&self.retention_days) {
            return Err(("retention_days", "must be between 1 and 3650"));
        }
        if !(1..=10_000_000).contains(&self.queue_max_messages) {
            return Err(("queue_max_messages", "must be between 1 and 10000000"));
        }
        Ok(())
    }
}

/// The history's metrics, registered in the collector's registry (`metrics.rs`).
#[derive(Clone)]
pub struct HistoryMetrics {
    /// Messages dropped because the queue was full.
    pub dropped: IntCounter,
    /// Report points by result: written, refused (a time outside the retention or ahead of the
    /// collector's clock).
    pub points: IntCounterVec,
    pub write_failures: IntCounter,
    pub write_duration: Histogram,
    pub pruned_rows: IntCounter,
    /// Stored rows of the wrong shape, read as far as they went.
    pub damaged_rows: IntCounter,
    pub remote_write: remote_write::RemoteWriteMetrics,
}

/// One report's point: its time (terminal time, Unix seconds), its slowest target's connect
/// latency and the highest loss of a working rung's repeated tries, when it measured them (a
/// heartbeat measures nothing).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ReportPoint {
    pub at: i64,
    pub latency_ms: Option<f64>,
    pub loss_ratio: Option<f64>,
}

impl ReportPoint {
    pub fn of(report: &Report) -> ReportPoint {
        let at = report.observed_at.unix_timestamp();
        if crate::fleet::is_heartbeat(report) {
            return ReportPoint {
                at,
                latency_ms: None,
                loss_ratio: None,
            };
        }
        let latency_ms = report
            .probes
            .iter()
            .filter_map(crate::fleet::connect_latency)
            .filter(|latency| latency.is_finite())
            .reduce(f64::max);
        // Loss as the packet-loss rule measures it: over a working rung's repeated tries (a
        // single try measures no loss; a failed rung is an outage, which readiness shows).
        let loss_ratio = report
            .probes
            .iter()
            .flat_map(|probe| &probe.stages)
            .filter(|stage| stage.status == StageStatus::Ok && stage.attempts >= 2)
            .map(|stage| stage.loss_ratio())
            .reduce(f64::max);
        ReportPoint {
            at,
            latency_ms,
            loss_ratio,
        }
    }
}

/// What the writer takes.
#[derive(Debug)]
pub enum Message {
    /// A report request applied: its reports' points and the terminal's readiness after it,
    /// at collector time `received_at`.
    Reports {
        terminal: Arc<str>,
        received_at: i64,
        readiness: Option<Readiness>,
        points: Vec<ReportPoint>,
    },
    /// Every terminal's readiness at `at` (the trend sampler's pass): catches what changes
    /// without a report (silence).
    Readiness {
        at: i64,
        terminals: Vec<(Arc<str>, Readiness)>,
    },
    Trend(TrendPoint),
}

/// How often the writer writes what is queued.
const WRITE_INTERVAL: Duration = Duration::from_secs(1);
/// How often the writer prunes.
const PRUNE_INTERVAL: Duration = Duration::from_secs(3600);
/// The most messages one transaction takes.
const BATCH_MAX: usize = 20_000;
/// How far ahead of the collector's clock a report point may be.
const AHEAD_MAX_SECONDS: i64 = 300;

/// The history: the queue to its writer thread and a connection for queries.
pub struct History {
    sender: SyncSender<Message>,
    reader: Mutex<Connection>,
    metrics: HistoryMetrics,
    stop: Arc<AtomicBool>,
    thread: Mutex<Option<JoinHandle<()>>>,
    /// The remote writer's sending half, until the server starts it.
    remote_sender: Mutex<Option<remote_write::Sender>>,
}

/// A chart's range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Range {
    #[serde(rename = "24h")]
    Day,
    #[serde(rename = "7d")]
    Week,
    #[serde(rename = "30d")]
    Month,
    #[serde(rename = "90d")]
    Quarter,
}

impl Range {
    pub fn parse(text: &str) -> Option<Range> {
        match text {
            "24h" => Some(Range::Day),
            "7d" => Some(Range::Week),
            "30d" => Some(Range::Month),
            "90d" => Some(Range::Quarter),
            _ => None,
        }
    }

    pub fn seconds(self) -> i64 {
        DAY_SECONDS
            * match self {
                Range::Day => 1,
                Range::Week => 7,
                Range::Month => 30,
                Range::Quarter => 90,
            }
    }

    /// The tier a terminal's chart reads and how many of its slots make one point: 10-minute
    /// points for a day (two 5-minute slots: an agent reporting every 5 minutes lands in
    /// every one, whatever its phase), hours for a week and a month, 3 hours for 90 days.
    fn tier(self) -> (Tier, i64) {
        match self {
            Range::Day => (FINE, 2),
            Range::Week | Range::Month => (COARSE, 1),
            Range::Quarter => (COARSE, 3),
        }
    }
}

/// One point of a terminal's chart; `None` where no report came (a gap) or nothing was
/// measured.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct SeriesPoint {
    pub at: i64,
    pub reports: u32,
    pub latency_ms: Option<f64>,
    pub loss_percent: Option<f64>,
}

/// A readiness interval `[from, to)` of a terminal.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ReadinessInterval {
    pub from: i64,
    pub to: i64,
    pub readiness: Readiness,
}

/// A terminal's chart.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TerminalSeries {
    pub from: i64,
    pub to: i64,
    pub step_seconds: i64,
    pub points: Vec<SeriesPoint>,
    pub readiness: Vec<ReadinessInterval>,
}

/// One point of the fleet's chart: mean terminals by readiness over the step; `None` where
/// the collector took no point.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct FleetPoint {
    pub at: i64,
    pub cannot_pay: Option<f64>,
    pub at_risk: Option<f64>,
    pub can_pay: Option<f64>,
    pub unknown: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FleetSeries {
    pub from: i64,
    pub to: i64,
    pub step_seconds: i64,
    pub points: Vec<FleetPoint>,
}

/// Points the fleet chart has at most.
const FLEET_POINTS: i64 = 720;

impl History {
    /// Opens the history in the state database in `data_dir`, marks every terminal unknown
    /// from when the previous run last wrote, and starts the writer.
    pub fn open(
        data_dir: &Path,
        config: &HistoryConfig,
        metrics: HistoryMetrics,
    ) -> Result<History, StoreError> {
        let (remote, remote_sender) = match remote_write::RemoteWrite::new(
            &config.remote_write,
            data_dir,
            metrics.remote_write.clone(),
        )
        .map_err(|error| StoreError::Thread(error.to_string()))?
        {
            Some((remote, sender)) => (Some(remote), Some(sender)),
            None => (None, None),
        };
        let mut connection = store::open(data_dir)?;
        let now = OffsetDateTime::now_utc().unix_timestamp();
        let mut writer = WriterState {
            known: store::load_known(&connection)?,
            retention_days: i64::from(config.retention_days),
            metrics: metrics.clone(),
            remote,
        };
        writer.mark_restart(&mut connection, now)?;
        let reader = store::open(data_dir)?;
        let (sender, receiver) = sync_channel(config.queue_max_messages);
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("posmon-history-writer".into())
            .spawn(move || writer.run(connection, receiver, &stopping))
            .map_err(|error| StoreError::Thread(error.to_string()))?;
        Ok(History {
            sender,
            reader: Mutex::new(reader),
            metrics,
            stop,
            thread: Mutex::new(Some(thread)),
            remote_sender: Mutex::new(remote_sender),
        })
    }

    /// The remote writer's sending task, once (the server runs it); `None` when remote write
    /// is off or it was taken.
    pub fn take_remote_sender(&self) -> Option<remote_write::Sender> {
        self.remote_sender
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }

    /// Queues a message for the writer; never waits. A full queue drops it, counted.
    pub fn record(&self, message: Message) {
        match self.sender.try_send(message) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.metrics.dropped.inc();
            }
        }
    }

    /// Queues a message, waiting while the queue is full: for bulk loads (the disk budget's
    /// measurement, `disk.rs`), never for ingest, which uses [`History::record`].
    pub fn record_blocking(&self, message: Message) {
        if self.sender.send(message).is_err() {
            self.metrics.dropped.inc();
        }
    }

    /// Writes what is queued and stops the writer.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
        let thread = self
            .thread
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(thread) = thread {
            if thread.join().is_err() {
                tracing::error!("The history writer thread panicked.");
            }
        }
    }

    fn reader(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.reader.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The newest `limit` fleet trend points, oldest first: what the in-memory trend starts
    /// from after a restart.
    pub fn recent_trend(&self, limit: usize) -> Result<Vec<TrendPoint>, StoreError> {
        store::recent_trend(&self.reader(), limit)
    }

    /// The fleet's chart over `range` up to `now`, one point per step (at least twice the
    /// trend interval, so that every step holds a point while the collector runs).
    pub fn fleet_series(
        &self,
        range: Range,
        now: i64,
        trend_interval_seconds: u64,
    ) -> Result<FleetSeries, StoreError> {
        let interval = i64::try_from(trend_interval_seconds).unwrap_or(DAY_SECONDS);
        let step = (range.seconds() / FLEET_POINTS).max(interval.saturating_mul(2));
        let to = now.div_euclid(step).saturating_add(1).saturating_mul(step);
        let from = to.saturating_sub(range.seconds());
        let buckets: HashMap<i64, [f64; 4]> = store::trend_buckets(&self.reader(), from, to, step)?
            .into_iter()
            .collect();
        let mut points = Vec::new();
        let mut at = from;
        while at < to {
            let bucket = buckets.get(&at);
            let value = |index: usize| bucket.map(|values| values[index]);
            points.push(FleetPoint {
                at,
                cannot_pay: value(0),
                at_risk: value(1),
                can_pay: value(2),
                unknown: value(3),
            });
            at = at.saturating_add(step);
        }
        Ok(FleetSeries {
            from,
            to,
            step_seconds: step,
            points,
        })
    }

    /// A terminal's chart over `range` up to `now`; `None` when the history holds nothing
    /// of it.
    pub fn terminal_series(
        &self,
        terminal_id: &str,
        range: Range,
        now: i64,
    ) -> Result<Option<TerminalSeries>, StoreError> {
        let connection = self.reader();
        let Some(key) = store::terminal_key(&connection, terminal_id)? else {
            return Ok(None);
        };
        let (tier, merge) = range.tier();
        let step = tier.slot_seconds.saturating_mul(merge);
        let to = now.div_euclid(step).saturating_add(1).saturating_mul(step);
        let from = to.saturating_sub(range.seconds());
        let slots = store::slots_between(&connection, tier, key, from, to)?;
        let mut points: Vec<SeriesPoint> = Vec::new();
        let mut merged: Option<(i64, Slot)> = None;
        let flush = |merged: (i64, Slot), points: &mut Vec<SeriesPoint>| {
            let (at, slot) = merged;
            let previous = points.last().filter(|point| point.reports > 0).copied();
            // A slot that only heard heartbeats holds the values measured before it: a
            // heartbeat says they still hold.
            let carried = |own: Option<f64>, before: fn(&SeriesPoint) -> Option<f64>| {
                own.or_else(|| {
                    (slot.reports > 0)
                        .then(|| previous.as_ref().and_then(before))
                        .flatten()
                })
            };
            points.push(SeriesPoint {
                at,
                reports: u32::from(slot.reports),
                latency_ms: carried(slot.latency_ms(), |point| point.latency_ms),
                loss_percent: carried(slot.loss_percent(), |point| point.loss_percent),
            });
        };
        for (start, slot) in slots {
            let at = start.div_euclid(step).saturating_mul(step);
            match &mut merged {
                Some((point_at, sum)) if *point_at == at => sum.merge(&slot),
                _ => {
                    if let Some(done) = merged.take() {
                        flush(done, &mut points);
                    }
                    merged = Some((at, slot));
                }
            }
        }
        if let Some(done) = merged.take() {
            flush(done, &mut points);
        }
        let changes = store::readiness_changes(&connection, Some(key), from, to)?
            .remove(&key)
            .unwrap_or_default();
        let readiness = intervals(&changes, from, to.min(now));
        Ok(Some(TerminalSeries {
            from,
            to,
            step_seconds: step,
            points,
            readiness,
        }))
    }

    /// Every terminal's time in `[from, to)` by readiness (time after `now` not counted), by
    /// terminal id: terminals the history has no change of in the period are unknown for it.
    pub fn availability(
        &self,
        from: i64,
        to: i64,
        now: i64,
    ) -> Result<Vec<(String, Seconds)>, StoreError> {
        let connection = self.reader();
        let ids = store::terminal_ids(&connection)?;
        let mut changes = store::readiness_changes(&connection, None, from, to)?;
        let end = to.min(now).max(from);
        Ok(ids
            .into_iter()
            .map(|(key, id)| {
                let terminal = changes.remove(&key).unwrap_or_default();
                (id, availability::terminal_seconds(&terminal, from, end))
            })
            .collect())
    }
}

impl Drop for History {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Readiness intervals from changes, clipped to `[from, to)`.
fn intervals(changes: &[(i64, Readiness)], from: i64, to: i64) -> Vec<ReadinessInterval> {
    let mut intervals: Vec<ReadinessInterval> = Vec::new();
    for (index, &(at, readiness)) in changes.iter().enumerate() {
        let start = at.max(from);
        let end = changes.get(index + 1).map_or(to, |next| next.0).min(to);
        if end > start {
            intervals.push(ReadinessInterval {
                from: start,
                to: end,
                readiness,
            });
        }
    }
    intervals
}

/// The writer's memory: each terminal's key and last readiness change.
struct WriterState {
    known: HashMap<Arc<str>, Known>,
    retention_days: i64,
    metrics: HistoryMetrics,
    /// Where the written samples also go, when remote write is on.
    remote: Option<remote_write::RemoteWrite>,
}

impl WriterState {
    /// Terminals known with a readiness other than unknown become unknown from when the
    /// previous run last wrote.
    fn mark_restart(&mut self, connection: &mut Connection, now: i64) -> Result<(), StoreError> {
        let Some(alive_until) = store::alive_until(connection) else {
            return Ok(());
        };
        let at = alive_until.min(now);
        let transaction = connection.transaction()?;
        for known in self.known.values_mut() {
            match known.last {
                Some((last_at, readiness)) if readiness != Readiness::Unknown => {
                    let at = at.max(last_at);
                    store::insert_readiness(&transaction, known.key, at, Readiness::Unknown)?;
                    known.last = Some((at, Readiness::Unknown));
                }
                _ => {}
            }
        }
        store::set_alive_until(&transaction, now)?;
        transaction.commit()?;
        Ok(())
    }

    fn run(mut self, mut connection: Connection, receiver: Receiver<Message>, stop: &AtomicBool) {
        let mut batch = Vec::new();
        let mut last_write = Instant::now();
        let mut next_prune = Instant::now();
        loop {
            let stopping = stop.load(Ordering::Relaxed);
            match receiver.recv_timeout(Duration::from_millis(100)) {
                Ok(message) => batch.push(message),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            while batch.len() < BATCH_MAX {
                match receiver.try_recv() {
                    Ok(message) => batch.push(message),
                    Err(_) => break,
                }
            }
            if stopping || batch.len() >= BATCH_MAX || last_write.elapsed() >= WRITE_INTERVAL {
                self.write(&mut connection, std::mem::take(&mut batch));
                last_write = Instant::now();
            }
            if Instant::now() >= next_prune {
                next_prune = Instant::now() + PRUNE_INTERVAL;
                self.prune(&connection);
            }
            if stopping && batch.is_empty() {
                match receiver.try_recv() {
                    Ok(message) => batch.push(message),
                    Err(_) => break,
                }
            }
        }
        if !batch.is_empty() {
            self.write(&mut connection, batch);
        }
    }

    fn prune(&self, connection: &Connection) {
        let now = OffsetDateTime::now_utc().unix_timestamp();
        let fine_days = FINE_RETENTION_DAYS.min(self.retention_days);
        match store::prune(connection, now, fine_days, self.retention_days) {
            Ok(deleted) => self.metrics.pruned_rows.inc_by(deleted),
            Err(error) => tracing::error!(%error, "Cannot prune the history."),
        }
    }

    /// Writes one batch in one transaction; on failure the batch is lost (counted) and the
    /// writer's memory is read back from the database, which the rollback left as it was.
    fn write(&mut self, connection: &mut Connection, batch: Vec<Message>) {
        let started = Instant::now();
        let now = OffsetDateTime::now_utc().unix_timestamp();
        match self.write_batch(connection, batch, now) {
            Ok((written, refused)) => {
                self.metrics
                    .points
                    .with_label_values(&["written"])
                    .inc_by(written);
                self.metrics
                    .points
                    .with_label_values(&["refused"])
                    .inc_by(refused);
                self.metrics
                    .write_duration
                    .observe(started.elapsed().as_secs_f64());
            }
            Err(error) => {
                self.metrics.write_failures.inc();
                tracing::error!(%error, "Cannot write the history; this batch is lost.");
                match store::load_known(connection) {
                    Ok(known) => self.known = known,
                    Err(error) => {
                        tracing::error!(%error, "Cannot read the history's terminals back.")
                    }
                }
            }
        }
    }

    /// Returns the points written and refused.
    fn write_batch(
        &mut self,
        connection: &mut Connection,
        batch: Vec<Message>,
        now: i64,
    ) -> Result<(u64, u64), StoreError> {
        let oldest = now.saturating_sub(self.retention_days.saturating_mul(DAY_SECONDS));
        let oldest_fine = now.saturating_sub(
            FINE_RETENTION_DAYS
                .min(self.retention_days)
                .saturating_mul(DAY_SECONDS),
        );
        let newest = now.saturating_add(AHEAD_MAX_SECONDS);
        let (mut written, mut refused) = (0u64, 0u64);
        let mut remote = Vec::new();
        let remote_on = self.remote.is_some();
        type Adds = Vec<(usize, Option<f64>, Option<f64>)>;
        let mut rows: HashMap<(u8, i64, i64), Adds> = HashMap::new();
        let transaction = connection.transaction()?;
        for message in batch {
            match message {
                Message::Reports {
                    terminal,
                    received_at,
                    readiness,
                    points,
                } => {
                    let key = self.key_of(&transaction, &terminal)?;
                    for point in points {
                        if point.at < oldest || point.at > newest {
                            refused += 1;
                            continue;
                        }
                        written += 1;
                        if remote_on {
                            remote_points(&mut remote, &terminal, &point);
                        }
                        for tier in slots::TIERS {
                            if tier == FINE && point.at < oldest_fine {
                                continue;
                            }
                            let (period, slot) = tier.locate(point.at);
                            rows.entry((tier.id, period, key)).or_default().push((
                                slot,
                                point.latency_ms,
                                point.loss_ratio,
                            ));
                        }
                    }
                    if let Some(readiness) = readiness {
                        self.observe(&transaction, &terminal, received_at, readiness)?;
                        if remote_on {
                            remote_readiness(&mut remote, &terminal, received_at, readiness);
                        }
                    }
                }
                Message::Readiness { at, terminals } => {
                    for (terminal, readiness) in terminals {
                        self.observe(&transaction, &terminal, at, readiness)?;
                        if remote_on {
                            remote_readiness(&mut remote, &terminal, at, readiness);
                        }
                    }
                }
                Message::Trend(point) => {
                    store::insert_trend(&transaction, &point)?;
                    if remote_on {
                        remote_trend(&mut remote, &point);
                    }
                }
            }
        }
        for ((tier, period, key), adds) in rows {
            let tier = if tier == FINE.id { FINE } else { COARSE };
            if store::add_to_row(&transaction, tier, period, key, &adds)? {
                self.metrics.damaged_rows.inc();
            }
        }
        store::set_alive_until(&transaction, now)?;
        transaction.commit()?;
        if let Some(sink) = &self.remote {
            sink.offer(remote);
        }
        Ok((written, refused))
    }

    fn key_of(
        &mut self,
        transaction: &rusqlite::Transaction<'_>,
        terminal: &Arc<str>,
    ) -> Result<i64, StoreError> {
        if let Some(known) = self.known.get(terminal) {
            return Ok(known.key);
        }
        let key = store::insert_terminal(transaction, terminal)?;
        self.known
            .insert(Arc::clone(terminal), Known { key, last: None });
        Ok(key)
    }

    /// Records a readiness change, if it is one. Times never go back: a change is recorded no
    /// earlier than the one before.
    fn observe(
        &mut self,
        transaction: &rusqlite::Transaction<'_>,
        terminal: &Arc<str>,
        at: i64,
        readiness: Readiness,
    ) -> Result<(), StoreError> {
        let key = self.key_of(transaction, terminal)?;
        let Some(known) = self.known.get_mut(terminal) else {
            return Ok(());
        };
        if known.last.is_some_and(|(_, last)| last == readiness) {
            return Ok(());
        }
        let at = known.last.map_or(at, |(last_at, _)| at.max(last_at));
        store::insert_readiness(transaction, key, at, readiness)?;
        known.last = Some((at, readiness));
        Ok(())
    }
}

/// Milliseconds of Unix seconds, saturating.
fn milliseconds(at: i64) -> i64 {
    at.saturating_mul(1000)
}

fn remote_points(out: &mut Vec<remote_write::Point>, terminal: &Arc<str>, point: &ReportPoint) {
    let label = || Some(("terminal_id", Arc::clone(terminal)));
    if let Some(latency) = point.latency_ms.filter(|value| value.is_finite()) {
        out.push(remote_write::Point {
            name: "posmon_history_terminal_latency_milliseconds",
            label: label(),
            value: latency.max(0.0),
            timestamp_ms: milliseconds(point.at),
        });
    }
    if let Some(loss) = point.loss_ratio.filter(|value| value.is_finite()) {
        out.push(remote_write::Point {
            name: "posmon_history_terminal_loss_ratio",
            label: label(),
            value: loss.clamp(0.0, 1.0),
            timestamp_ms: milliseconds(point.at),
        });
    }
}

fn remote_readiness(
    out: &mut Vec<remote_write::Point>,
    terminal: &Arc<str>,
    at: i64,
    readiness: Readiness,
) {
    let value = match readiness {
        Readiness::CanPay | Readiness::AtRisk => 1.0,
        Readiness::CannotPay => 0.0,
        Readiness::Unknown => return,
    };
    out.push(remote_write::Point {
        name: "posmon_history_terminal_can_pay",
        label: Some(("terminal_id", Arc::clone(terminal))),
        value,
        timestamp_ms: milliseconds(at),
    });
}

fn remote_trend(out: &mut Vec<remote_write::Point>, point: &TrendPoint) {
    for (readiness, count) in [
        (Readiness::CannotPay, point.cannot_pay),
        (Readiness::AtRisk, point.at_risk),
        (Readiness::CanPay, point.can_pay),
        (Readiness::Unknown, point.unknown),
    ] {
        out.push(remote_write::Point {
            name: "posmon_history_fleet_terminals",
            label: Some(("readiness", Arc::from(readiness.as_str()))),
            value: f64::from(count),
            timestamp_ms: milliseconds(point.at),
        });
    }
}

#[cfg(test)]
mod tests;
