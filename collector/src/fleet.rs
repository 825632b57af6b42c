//! Fleet state: every terminal the collector has heard from as a compact summary (interned
//! labels, versions, per-target state with a bounded latency series, findings), the fleet-wide
//! findings, and a bounded history of closed findings.
//!
//! The state is split into shards, each behind its own lock, so that reports of different
//! terminals are applied in parallel and no lock is held across IO: the store's writer takes
//! snapshots of what changed ([`Fleet::take_changes`]) and writes them outside every lock.
//! No IO and no clock here: callers pass the time.

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};

use posmon_protocol::limits::{COMPONENTS_MAX, EXTRA_LABELS_MAX, PROBES_MAX};
use posmon_protocol::{
    ComponentVersion, DataUsage, ErrorKind, Intervals, Labels, ProbeResult, Report, Section, Stage,
    StageStatus,
};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::config::{Config, LimitsConfig, Thresholds};
use crate::device::DeviceSummary;
use crate::silence::{self, Reported, SilenceQueue};
use posmon_diagnosis::findings::{Change, Finding, FindingEvent, Tracker};
use posmon_diagnosis::readiness::{self, PaymentRoles, Readiness};
use posmon_diagnosis::rules::outdated::judge_versions;
use posmon_diagnosis::rules::silent::SILENT;
use posmon_diagnosis::{Category, FindingKind, Policy, Signal};

mod by_hand;
mod search;
mod shared_cause;
pub use search::{Page, TerminalQuery};
use shared_cause::{Failing, Membership, Suppressions, Tallies};

/// Shards of the terminal map: enough that two cores rarely wait on each other.
const SHARDS: usize = 64;

/// The well-known labels and the extra ones, interned: thousands of terminals share one
/// region or model string.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TerminalLabels {
    pub merchant: Option<Arc<str>>,
    pub model: Option<Arc<str>>,
    pub region: Option<Arc<str>>,
    pub carrier: Option<Arc<str>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<Arc<str>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolver: Option<Arc<str>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extra: Vec<(Arc<str>, Arc<str>)>,
}

/// The rungs of the path ladder, from the terminal outwards (ICMP aside: it is a side
/// measurement, not a rung).
pub const LADDER: [Stage; 6] = [
    Stage::Link,
    Stage::Gateway,
    Stage::Dns,
    Stage::Tcp,
    Stage::Tls,
    Stage::Http,
];

/// One latency measurement for charts: terminal time (Unix seconds) and milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LatencyPoint(pub i64, pub f32);

/// The latest state of the path to one target.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TargetState {
    pub name: Arc<str>,
    pub address: Arc<str>,
    /// The first failing rung of the latest report, if any.
    pub failed_stage: Option<Stage>,
    pub error: Option<ErrorKind>,
    /// The rungs the latest report probed, one bit per [`LADDER`] position.
    #[serde(default)]
    pub rungs: u8,
    /// The connect latency of the latest reports, oldest first, bounded.
    pub latency: VecDeque<LatencyPoint>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Terminal {
    pub id: Arc<str>,
    pub highest_sequence: u64,
    /// Collector time of the first and of the latest accepted report.
    #[serde(with = "time::serde::rfc3339")]
    pub first_seen: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub last_seen: OffsetDateTime,
    /// Terminal time of the newest report: the one the current state is from, or a heartbeat
    /// saying that state still holds.
    #[serde(with = "time::serde::rfc3339")]
    pub observed_at: OffsetDateTime,
    pub agent_version: Arc<str>,
    pub labels: TerminalLabels,
    /// Known software versions by component.
    pub versions: Vec<(Arc<str>, Arc<str>)>,
    pub targets: Vec<TargetState>,
    /// Device health from the newest report that carried it, for the dashboard.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<Box<DeviceSummary>>,
    pub findings: Tracker,
    /// Reports the agent dropped (spool full or too old, or refused as bad), as its reports
    /// told, since the terminal first reported.
    #[serde(default)]
    pub dropped_reports: u64,
    /// The agent instance (its spool) the sequences are from; `None` for agents that send
    /// none. Not interned: one per terminal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_instance: Option<Arc<str>>,
    /// How often a new agent instance started the sequences anew, and when last (collector
    /// time).
    #[serde(default)]
    pub sequence_resets: u64,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub last_sequence_reset_at: Option<OffsetDateTime>,
    /// The agent's schedule, as its reports last announced it; `None` for agents that send
    /// none (the collector's defaults apply).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub intervals: Option<Intervals>,
    /// The agent's data use this month and its budget, as its reports last told (validated:
    /// every number bounded); `None` for agents that send none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_usage: Option<DataUsage>,
    /// When the silence watch looks at it next: its one live queue entry.
    #[serde(skip)]
    pub(crate) silence_due: silence::Due,
    /// The signals of the newest report with measurements (after the open-findings cap): what
    /// a heartbeat repeats. `None` until one is applied since the collector started (not
    /// stored: the next report with measurements sets it); an empty set allocates nothing.
    #[serde(skip)]
    pub(crate) last_signals: LastSignals,
}

/// The signals a heartbeat repeats ([`Terminal::last_signals`]): a memory of the collector's
/// run, not stored, so two terminals are equal whatever theirs (as a restored one is to the one
/// written).
#[derive(Debug, Clone, Default)]
pub(crate) struct LastSignals(Option<Box<[Signal]>>);

impl PartialEq for LastSignals {
    fn eq(&self, _: &LastSignals) -> bool {
        true
    }
}

impl Terminal {
    pub(crate) fn new(id: Arc<str>, received_at: OffsetDateTime) -> Self {
        Terminal {
            id,
            highest_sequence: 0,
            first_seen: received_at,
            last_seen: received_at,
            observed_at: OffsetDateTime::UNIX_EPOCH,
            agent_version: Arc::from(""),
            labels: TerminalLabels::default(),
            versions: Vec::new(),
            targets: Vec::new(),
            device: None,
            findings: Tracker::default(),
            dropped_reports: 0,
            agent_instance: None,
            sequence_resets: 0,
            last_sequence_reset_at: None,
            intervals: None,
            data_usage: None,
            silence_due: silence::Due::default(),
            last_signals: LastSignals::default(),
        }
    }

    /// Whether the terminal can take payments: from every open finding, those a fleet-wide
    /// cause explains included (a terminal under a host outage still cannot pay).
    pub fn readiness(&self, roles: &PaymentRoles) -> Readiness {
        readiness::readiness(self.findings.findings(), roles)
    }

    /// Open findings not explained by a fleet-wide one.
    pub fn visible_findings(&self) -> impl Iterator<Item = &Finding> {
        self.findings
            .findings()
            .filter(|finding| finding.suppressed_by.is_none())
    }

    pub(crate) fn is_silent(&self) -> bool {
        self.findings
            .findings()
            .any(|finding| std::ptr::eq(finding.kind, &SILENT))
    }

    /// Takes what any report that is the terminal's newest tells, a heartbeat's included: its
    /// time, schedule, data usage, agent version, labels and software. Every list is cut at the
    /// protocol's limit even though validation already refused longer ones: the fleet's
    /// per-terminal bound must not depend on every caller validating.
    fn take_identity(&mut self, report: &Report, interner: &mut Interner) {
        self.observed_at = report.observed_at;
        // Absent: as before.
        if report.intervals.is_some() {
            self.intervals = report.intervals;
        }
        if report.data_usage.is_some() {
            self.data_usage = report.data_usage;
        }
        self.agent_version = interner.intern(&report.agent_version);
        self.labels = interner.labels(&report.labels);
        self.versions = report
            .software
            .iter()
            .take(COMPONENTS_MAX)
            .filter_map(|(component, version)| {
                let version = version.version.as_deref()?;
                Some((interner.intern(component), interner.intern(version)))
            })
            .collect();
    }

    /// Takes the measurements of a report that is the terminal's newest and no heartbeat: the
    /// path to each target (its latency series bounded) and the device.
    fn take_measurements(
        &mut self,
        report: &Report,
        interner: &mut Interner,
        latency_points: usize,
    ) {
        let at = report.observed_at.unix_timestamp();
        let mut targets = Vec::with_capacity(report.probes.len().min(PROBES_MAX));
        for probe in report.probes.iter().take(PROBES_MAX) {
            let previous = self
                .targets
                .iter()
                .position(|target| *target.name == *probe.target)
                .map(|position| self.targets.swap_remove(position));
            let mut latency = previous.map(|target| target.latency).unwrap_or_default();
            // A clock that jumped back dated the points before wrongly: the series starts
            // anew, so that it stays in time order.
            if latency.back().is_some_and(|last| last.0 > at) {
                latency.clear();
            }
            if let Some(milliseconds) = connect_latency(probe) {
                // `while`: a series restored under a larger setting shrinks to this one.
                while latency.len() >= latency_points.max(1) {
                    latency.pop_front();
                }
                if latency_points > 0 {
                    latency.push_back(LatencyPoint(at, milliseconds as f32));
                }
            }
            let failed = probe
                .stages
                .iter()
                .find(|stage| stage.status == StageStatus::Failed && stage.stage != Stage::Icmp);
            let rungs = probe
                .stages
                .iter()
                .filter_map(|stage| LADDER.iter().position(|rung| *rung == stage.stage))
                .fold(0u8, |mask, position| mask | (1 << position));
            targets.push(TargetState {
                name: interner.intern(&probe.target),
                address: interner.intern(&probe.address),
                failed_stage: failed.map(|stage| stage.stage),
                error: failed.and_then(|stage| stage.error),
                rungs,
                latency,
            });
        }
        self.targets = targets;
        self.device =
            DeviceSummary::from_report(report.device.as_ref(), report.clock.as_ref(), |text| {
                interner.intern(text)
            });
    }

    /// Follows the agent instance a report names: a first one is adopted (an agent upgraded to
    /// send one keeps its counter, if it did not go back), a new one resets the sequence mark so that the new
    /// instance's reports, counted from 1 again, are applied rather than taken for repeats.
    fn follow_instance(
        &mut self,
        report: &Report,
        received_at: OffsetDateTime,
    ) -> Option<SequenceReset> {
        let instance = report.agent_instance.as_deref()?;
        let old_instance = match &self.agent_instance {
            Some(current) if **current == *instance => return None,
            Some(current) => Arc::clone(current),
            // An agent upgraded to send an instance keeps its counter (and may resend its last
            // report) — unless the counter went back (its state was wiped during the upgrade):
            // that is a reset like any other.
            None if report.sequence >= self.highest_sequence => {
                self.agent_instance = Some(Arc::from(instance));
                return None;
            }
            None => Arc::from(""),
        };
        let new_instance: Arc<str> = Arc::from(instance);
        self.agent_instance = Some(Arc::clone(&new_instance));
        // A heartbeat of the new instance repeats its own reports, not the old one's.
        self.last_signals = LastSignals::default();
        let old_highest = std::mem::take(&mut self.highest_sequence);
        self.sequence_resets = self.sequence_resets.saturating_add(1);
        let previous_reset_at = self.last_sequence_reset_at.replace(received_at);
        Some(SequenceReset {
            old_instance,
            new_instance,
            old_highest,
            new_sequence: report.sequence,
            previous_reset_at,
        })
    }

    /// Re-interns the strings of a terminal restored from the database.
    fn intern_with(&mut self, interner: &mut Interner) {
        self.id = interner.intern(&self.id);
        self.agent_version = interner.intern(&self.agent_version);
        let labels = &mut self.labels;
        for label in [
            &mut labels.merchant,
            &mut labels.model,
            &mut labels.region,
            &mut labels.carrier,
            &mut labels.gateway,
            &mut labels.resolver,
        ]
        .into_iter()
        .flatten()
        {
            *label = interner.intern(label);
        }
        for (key, value) in labels.extra.iter_mut().chain(self.versions.iter_mut()) {
            *key = interner.intern(key);
            *value = interner.intern(value);
        }
        for target in &mut self.targets {
            target.name = interner.intern(&target.name);
            target.address = interner.intern(&target.address);
        }
        if let Some(device) = &mut self.device {
            for item in device.peripherals.iter_mut().chain(&mut device.processes) {
                item.name = interner.intern(&item.name);
            }
        }
    }
}

/// Whether `report` is a heartbeat: its probes, device and clock are those of the report before
/// (`unchanged` holds `measurements`). It counts for liveness only: the fleet runs no rule on it
/// and keeps the terminal's findings, targets and device as they are, so its diagnosis can be
/// skipped.
pub fn is_heartbeat(report: &Report) -> bool {
    report.unchanged.contains(&Section::Measurements)
}

/// The latency of the deepest working rung that measured one (ICMP aside): the round trip to
/// the host itself where the TCP rung measured it.
pub fn connect_latency(probe: &ProbeResult) -> Option<f64> {
    probe
        .stages
        .iter()
        .filter(|stage| stage.status == StageStatus::Ok && stage.stage != Stage::Icmp)
        .filter_map(|stage| stage.latency_ms.map(|latency| latency.avg))
        .next_back()
}

/// The interner sweeps no earlier than at this many strings: a small shard never pays for it.
const SWEEP_FLOOR: usize = 1024;

/// One copy of each distinct string a shard holds, while some terminal holds it.
///
/// A string only the interner holds (`Arc::strong_count` 1) is garbage: the terminal that used
/// it moved on to other labels, versions or target names. Such strings are swept when the set
/// has doubled since the last sweep, so a terminal sending fresh strings in every report keeps
/// the set under about twice what the shard's terminals hold, and each sweep is paid for by
/// the insertions since the previous one (amortised O(1) per new string; no per-report scan).
/// Sweeping needs no care about concurrency: the set is only touched under its shard's lock,
/// and a count of 1 means no other holder exists that could clone the string.
#[derive(Debug)]
struct Interner {
    strings: HashSet<Arc<str>>,
    /// The size at which the next sweep runs.
    sweep_at: usize,
}

impl Default for Interner {
    fn default() -> Self {
        Interner {
            strings: HashSet::new(),
            sweep_at: SWEEP_FLOOR,
        }
    }
}

impl Interner {
    fn intern(&mut self, text: &str) -> Arc<str> {
        if let Some(existing) = self.strings.get(text) {
            return Arc::clone(existing);
        }
        if self.strings.len() >= self.sweep_at {
            self.sweep();
        }
        let new: Arc<str> = Arc::from(text);
        self.strings.insert(Arc::clone(&new));
        new
    }

    /// Frees the strings no terminal holds any more, and the table's room a burst left behind.
    fn sweep(&mut self) {
        self.strings.retain(|text| Arc::strong_count(text) > 1);
        let live = self.strings.len();
        let floor = live.saturating_mul(2).max(SWEEP_FLOOR);
        if self.strings.capacity() > floor.saturating_mul(2) {
            self.strings.shrink_to(floor);
        }
        self.sweep_at = floor;
    }

    fn len(&self) -> usize {
        self.strings.len()
    }

    fn labels(&mut self, labels: &Labels) -> TerminalLabels {
        let mut intern = |value: &Option<String>| value.as_deref().map(|text| self.intern(text));
        TerminalLabels {
            merchant: intern(&labels.merchant),
            model: intern(&labels.model),
            region: intern(&labels.region),
            carrier: intern(&labels.carrier),
            gateway: intern(&labels.gateway),
            resolver: intern(&labels.resolver),
            extra: labels
                .extra
                .iter()
                .take(EXTRA_LABELS_MAX)
                .map(|(key, value)| (self.intern(key), self.intern(value)))
                .collect(),
        }
    }
}

#[derive(Debug, Default)]
struct Shard {
    terminals: HashMap<Arc<str>, Terminal>,
    /// Terminals changed since the store's writer last took them.
    dirty: HashSet<Arc<str>>,
    interner: Interner,
    /// When its terminals may become silent.
    silence: SilenceQueue,
    /// The shard's terminals showing each symptom, for the shared causes.
    failing: Failing,
}

/// Closed findings, bounded twice: at most a quota per terminal, so that a terminal whose
/// findings flap drops only its own oldest (the fleet-wide findings, under the empty terminal
/// id, have a quota of their own the same way); and at most a total, which drops the oldest of
/// the whole fleet. Indexed by terminal for the terminal page.
///
/// The store writes what is held and was not written yet (insertion numbers from
/// `written_upto`): a finding the bounds dropped before the writer came is not written only to
/// be deleted, so a flapping terminal cannot make the writer's batch grow with its rate.
#[derive(Debug, Default)]
struct History {
    /// Each terminal's closed findings with their insertion numbers, oldest first.
    by_terminal: HashMap<Arc<str>, VecDeque<(u64, Finding)>>,
    /// The terminal of every held finding by insertion number: the fleet's oldest first.
    order: BTreeMap<u64, Arc<str>>,
    next_number: u64,
    /// Findings dropped from memory for their terminal's quota.
    dropped_for_quota: u64,
    /// The first insertion number the store has not taken yet.
    written_upto: u64,
}

impl History {
    /// Holds a closed finding, dropping its terminal's oldest beyond `per_terminal` and the
    /// fleet's oldest beyond `total`.
    fn hold(&mut self, finding: Finding, total: usize, per_terminal: usize) {
        if total == 0 || per_terminal == 0 {
            return;
        }
        let number = self.next_number;
        self.next_number = self.next_number.saturating_add(1);
        let terminal = Arc::clone(&finding.terminal_id);
        let held = self.by_terminal.entry(Arc::clone(&terminal)).or_default();
        while held.len() >= per_terminal {
            let Some((oldest, _)) = held.pop_front() else {
                break;
            };
            self.order.remove(&oldest);
            self.dropped_for_quota = self.dropped_for_quota.saturating_add(1);
        }
        held.push_back((number, finding));
        self.order.insert(number, terminal);
        while self.order.len() > total {
            let Some((oldest, terminal)) = self.order.pop_first() else {
                break;
            };
            if let Some(held) = self.by_terminal.get_mut(&terminal) {
                // The fleet's oldest is its terminal's oldest: both are in insertion order.
                if held.front().is_some_and(|(number, _)| *number == oldest) {
                    held.pop_front();
                }
                if held.is_empty() {
                    self.by_terminal.remove(&terminal);
                }
            }
        }
    }

    /// The held findings the store has not taken yet, oldest first.
    fn take_unwritten(&mut self) -> Vec<Finding> {
        let from = self.written_upto;
        self.written_upto = self.next_number;
        self.order
            .range(from..)
            .filter_map(|(number, terminal)| {
                let held = self.by_terminal.get(terminal)?;
                let index = held.binary_search_by_key(number, |(n, _)| *n).ok()?;
                held.get(index).map(|(_, finding)| finding.clone())
            })
            .collect()
    }

    fn len(&self) -> usize {
        self.order.len()
    }
}

/// What the fleet keeps at most (see `[limits]` and `[state]` in the config).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FleetLimits {
    /// Closed findings held in all (`limits.max_history_findings`).
    pub history_findings: usize,
    /// Closed findings held per terminal, and for the fleet-wide findings
    /// (`limits.max_history_findings_per_terminal`).
    pub history_findings_per_terminal: usize,
    /// Open findings per terminal (`limits.max_open_findings_per_terminal`).
    pub open_findings_per_terminal: usize,
    /// Points of each target's latency series (`state.latency_points_per_target`).
    pub latency_points: usize,
}

impl FleetLimits {
    /// The given bounds, the per-terminal ones at their defaults.
    pub fn new(history_findings: usize, latency_points: usize) -> Self {
        let defaults = LimitsConfig::default();
        FleetLimits {
            history_findings,
            history_findings_per_terminal: defaults.max_history_findings_per_terminal,
            open_findings_per_terminal: defaults.max_open_findings_per_terminal,
            latency_points,
        }
    }

    pub fn from_config(config: &Config) -> Self {
        FleetLimits {
            history_findings: config.limits.max_history_findings,
            history_findings_per_terminal: config.limits.max_history_findings_per_terminal,
            open_findings_per_terminal: config.limits.max_open_findings_per_terminal,
            latency_points: config.state.latency_points_per_target,
        }
    }
}

#[derive(Debug, Default)]
struct FleetWide {
    tracker: Tracker,
    changed: bool,
}

/// What applying one batch did.
#[derive(Debug, Default)]
pub struct BatchOutcome {
    pub applied: u64,
    /// Reports with a sequence at or below the highest held: acknowledged, not applied again.
    pub duplicates: u64,
    /// Reports the agent says it dropped, summed over the applied reports.
    pub dropped_reports: u64,
    pub highest_sequence: u64,
    pub events: Vec<FindingEvent>,
    /// A new agent instance started the terminal's sequences anew.
    pub sequence_resets: Vec<SequenceReset>,
}

/// The sequences of a terminal started anew: its agent's state was wiped (a re-install, a new
/// SD card), so it counts from 1 again under a new instance id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SequenceReset {
    pub old_instance: Arc<str>,
    pub new_instance: Arc<str>,
    /// The highest sequence held under the old instance.
    pub old_highest: u64,
    /// The sequence of the first report of the new instance.
    pub new_sequence: u64,
    /// When the terminal's sequences last started anew before this (collector time).
    pub previous_reset_at: Option<OffsetDateTime>,
}

/// What the store must write: every terminal changed since the last time, the findings closed
/// since, the fleet-wide findings if they changed, and the next finding id.
#[derive(Debug, Default)]
pub struct Changes {
    pub terminals: Vec<Terminal>,
    pub closed: Vec<Finding>,
    pub fleet_wide: Option<Tracker>,
    pub next_finding_id: u64,
    /// The history quota per terminal, which the store keeps too.
    pub history_per_terminal: usize,
    /// Since when this collector listens, and until when it is known to have (the write's
    /// time): the store's record of its own up-time. `None` before it listens.
    pub listening: Option<(OffsetDateTime, OffsetDateTime)>,
}

/// Everything restored from the database at start.
#[derive(Debug, Default)]
pub struct Restored {
    pub terminals: Vec<Terminal>,
    /// Oldest first.
    pub history: Vec<Finding>,
    pub fleet_wide: Tracker,
    pub next_finding_id: u64,
    /// Stored rows that could not be used and were skipped: (table, key).
    pub unreadable: Vec<(&'static str, String)>,
}

#[derive(Debug)]
pub struct Fleet {
    shards: Box<[Mutex<Shard>]>,
    terminal_count: AtomicUsize,
    /// Every terminal id, sorted: the terminal search's pages without a filter
    /// (`fleet/search.rs`).
    ids: RwLock<std::collections::BTreeSet<Arc<str>>>,
    next_finding_id: AtomicU64,
    history: Mutex<History>,
    history_limit: usize,
    fleet_wide: Mutex<FleetWide>,
    suppressions: RwLock<Arc<Suppressions>>,
    /// Held from computing the suppressions of the open fleet-wide findings to enforcing them,
    /// so that an evaluation and a close by hand never enforce each other's stale set.
    suppressing: Mutex<()>,
    /// Terminals per population and combination of attribute values, for the shared causes.
    tallies: Tallies,
    latency_points: usize,
    limits: FleetLimits,
    /// Signals of new problems not tracked because their terminal held its most open findings.
    capped_signals: AtomicU64,
    /// Since when this collector listens (Unix seconds): silence is judged only from then on.
    listening_since: AtomicI64,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding a lock cannot leave the plain data here half-changed in a way
    // that matters more than losing the collector: carry on with it.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Fleet {
    /// An empty fleet; the per-terminal bounds at their defaults.
    pub fn new(history_limit: usize, latency_points: usize) -> Self {
        Fleet::with_limits(FleetLimits::new(history_limit, latency_points))
    }

    pub fn with_limits(limits: FleetLimits) -> Self {
        Fleet {
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
            terminal_count: AtomicUsize::new(0),
            ids: RwLock::new(std::collections::BTreeSet::new()),
            next_finding_id: AtomicU64::new(0),
            history: Mutex::new(History::default()),
            history_limit: limits.history_findings,
            fleet_wide: Mutex::new(FleetWide::default()),
            suppressions: RwLock::new(Arc::new(Suppressions::default())),
            suppressing: Mutex::new(()),
            tallies: Tallies::default(),
            latency_points: limits.latency_points,
            limits,
            capped_signals: AtomicU64::new(0),
            listening_since: AtomicI64::new(0),
        }
    }

    /// A fleet holding what the database held; the per-terminal bounds at their defaults.
    pub fn restore(restored: Restored, history_limit: usize, latency_points: usize) -> Self {
        Fleet::restore_with_limits(restored, FleetLimits::new(history_limit, latency_points))
    }

    /// A fleet holding what the database held, within `limits`.
    pub fn restore_with_limits(restored: Restored, limits: FleetLimits) -> Self {
        let fleet = Fleet::with_limits(limits);
        fleet
            .next_finding_id
            .store(restored.next_finding_id, Ordering::Relaxed);
        fleet
            .terminal_count
            .store(restored.terminals.len(), Ordering::Relaxed);
        for mut terminal in restored.terminals {
            let mut shard = lock(fleet.shard_of(&terminal.id));
            terminal.intern_with(&mut shard.interner);
            fleet
                .ids
                .write()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(Arc::clone(&terminal.id));
            // Looked at in the first evaluation.
            shard.silence.watch(&mut terminal, i64::MIN);
            fleet.tallies.update(None, Some(&Membership::of(&terminal)));
            shard.failing.restore(&terminal);
            shard.terminals.insert(Arc::clone(&terminal.id), terminal);
        }
        {
            let mut history = lock(&fleet.history);
            for finding in restored.history {
                history.hold(
                    finding,
                    limits.history_findings,
                    limits.history_findings_per_terminal,
                );
            }
            // What the database held is written.
            history.written_upto = history.next_number;
        }
        fleet.set_suppressions(Suppressions::from_open(restored.fleet_wide.findings()));
        lock(&fleet.fleet_wide).tracker = restored.fleet_wide;
        fleet
    }

    fn shard_of(&self, terminal_id: &str) -> &Mutex<Shard> {
        let mut hasher = DefaultHasher::new();
        terminal_id.hash(&mut hasher);
        &self.shards[(hasher.finish() as usize) % self.shards.len()]
    }

    fn next_id(&self) -> u64 {
        // Saturating: restored ids are bounded far below the end (`store::FINDING_ID_MAX`).
        self.next_finding_id
            .fetch_add(1, Ordering::Relaxed)
            .saturating_add(1)
    }

    /// Applies the validated, diagnosed reports of one terminal (oldest first), received at
    /// `received_at` (collector time). Only reports with a sequence above the highest held are
    /// applied, and each of them is the terminal's newest: the order is the agent's sequence,
    /// never the terminal's clock, which may be wrong or jump. The changes of all but the
    /// batch's last report are marked as replayed (history, not news). A report from a new
    /// agent instance starts the sequences anew (an agent whose state was wiped counts from 1
    /// again); a report without an instance keeps the one held.
    pub fn apply_batch(
        &self,
        terminal_id: &str,
        reports: Vec<(Report, Vec<Signal>)>,
        received_at: OffsetDateTime,
        thresholds: &Thresholds,
    ) -> BatchOutcome {
        let suppressions = self.suppressions();
        let mut outcome = BatchOutcome::default();
        let mut next_id = || self.next_id();
        let count = reports.len();
        let mut shard = lock(self.shard_of(terminal_id));
        let shard = &mut *shard;
        let (terminal, membership) = match shard.terminals.get_mut(terminal_id) {
            Some(terminal) => {
                let membership = Membership::of(terminal);
                (terminal, Some(membership))
            }
            None => {
                let id = shard.interner.intern(terminal_id);
                self.terminal_count.fetch_add(1, Ordering::Relaxed);
                self.ids
                    .write()
                    .unwrap_or_else(PoisonError::into_inner)
                    .insert(Arc::clone(&id));
                let terminal = shard
                    .terminals
                    .entry(Arc::clone(&id))
                    .or_insert_with(|| Terminal::new(id, received_at));
                shard.silence.watch(terminal, received_at.unix_timestamp());
                (terminal, None)
            }
        };
        let mut changed = false;
        // What a batch that ends a silence must show to disprove it.
        let was_silent = terminal.is_silent();
        let held = (terminal.highest_sequence, terminal.observed_at);
        let intervals = terminal.intervals;
        let mut backfill: Vec<Reported> = Vec::new();
        for (index, (report, signals)) in reports.into_iter().enumerate() {
            if let Some(reset) = terminal.follow_instance(&report, received_at) {
                changed = true;
                outcome.sequence_resets.push(reset);
            }
            if report.sequence <= terminal.highest_sequence {
                outcome.duplicates += 1;
                continue;
            }
            outcome.applied += 1;
            outcome.dropped_reports = outcome
                .dropped_reports
                .saturating_add(report.dropped_reports);
            terminal.dropped_reports = terminal
                .dropped_reports
                .saturating_add(report.dropped_reports);
            terminal.highest_sequence = report.sequence;
            if was_silent {
                backfill.push(Reported {
                    sequence: report.sequence,
                    observed_at: report.observed_at,
                    clock_offset_ms: report.clock.as_ref().map(|clock| clock.offset_ms),
                });
            }
            terminal.take_identity(&report, &mut shard.interner);
            // A heartbeat says "as before": it repeats the last report's observation, the
            // signals of the newest report with measurements, at its own time, so that the
            // hysteresis counts it; the targets and the device stay as they are. Before any
            // such report since the collector started, it runs no rule (nothing to repeat).
            let signals = if is_heartbeat(&report) {
                terminal.last_signals.0.as_deref().map(<[Signal]>::to_vec)
            } else {
                terminal.take_measurements(&report, &mut shard.interner, self.latency_points);
                let signals = self.cap_new_findings(&terminal.findings, signals);
                terminal.last_signals = LastSignals(Some(signals.clone().into_boxed_slice()));
                Some(signals)
            };
            let mut events = match signals {
                Some(signals) => terminal.findings.observe(
                    terminal_id,
                    signals,
                    report.observed_at,
                    thresholds,
                    &mut next_id,
                ),
                None => Vec::new(),
            };
            // A report is the end of a silence.
            events.extend(terminal.findings.observe_scope(
                terminal_id,
                Vec::new(),
                received_at,
                thresholds,
                &mut next_id,
                |kind| std::ptr::eq(kind, &SILENT),
            ));
            let replayed = index + 1 < count;
            let attributes = (!suppressions.is_empty()
                && events.iter().any(|event| event.change == Change::Opened))
            .then(|| shared_cause::attributes(terminal));
            for event in &mut events {
                event.replayed = replayed;
                if event.change != Change::Opened {
                    continue;
                }
                let Some(attributes) = &attributes else {
                    continue;
                };
                let explained = suppressions.explaining(attributes, &event.finding);
                if let Some(outage) = explained {
                    event.finding.suppressed_by = Some(outage);
                    if let Some(open) = terminal
                        .findings
                        .findings_mut()
                        .find(|f| f.id == event.finding.id)
                    {
                        open.suppressed_by = Some(outage);
                    }
                }
            }
            shard.failing.follow(&terminal.id, &events);
            outcome.events.extend(events);
        }
        if outcome.applied > 0 {
            self.tallies
                .update(membership.as_ref(), Some(&Membership::of(terminal)));
        }
        outcome.highest_sequence = terminal.highest_sequence;
        if outcome.applied > 0 {
            terminal.last_seen = received_at;
        }
        if outcome.applied > 0 || changed {
            shard.dirty.insert(Arc::clone(&terminal.id));
        }
        // Back from a silence, or on a shorter schedule: look again at the new deadline.
        if (was_silent && outcome.applied > 0) || terminal.intervals != intervals {
            shard.silence.watch(terminal, received_at.unix_timestamp());
        }
        let mut disproved = None;
        if was_silent && !terminal.is_silent() {
            let allowed = silence::cadence(terminal, thresholds).allowed_silence(thresholds);
            if silence::disproved(held.0, held.1, &backfill, received_at, allowed) {
                disproved = disprove_silence(&mut outcome.events, &backfill);
            }
        }
        self.record_closed(&outcome.events, disproved);
        outcome
    }

    /// Holds the closed findings of `events` in the history, except a silence the reports
    /// disproved (its id).
    fn record_closed(&self, events: &[FindingEvent], disproved: Option<u64>) {
        let closed = |event: &&FindingEvent| {
            event.change == Change::Closed && Some(event.finding.id) != disproved
        };
        if !events.iter().any(|event| closed(&event)) {
            return;
        }
        let mut history = lock(&self.history);
        for event in events.iter().filter(closed) {
            history.hold(
                event.finding.clone(),
                self.history_limit,
                self.limits.history_findings_per_terminal,
            );
        }
    }

    /// `limits.max_open_findings_per_terminal`, policy "refuse new": a terminal keeps
    /// refreshing the findings it has open, but signals of new problems beyond the room left
    /// are dropped (and counted) until some close. Open findings plus bad streaks stay within
    /// the bound, so a terminal inventing new subjects cannot grow its tracker.
    fn cap_new_findings(&self, findings: &Tracker, mut signals: Vec<Signal>) -> Vec<Signal> {
        let open = findings.open.len();
        let mut room = self.limits.open_findings_per_terminal.saturating_sub(open);
        if room >= signals.len() {
            return signals;
        }
        let before = signals.len();
        signals.retain(|signal| {
            let known = findings.findings().any(|finding| {
                std::ptr::eq(finding.kind, signal.kind) && finding.subject == signal.subject
            });
            if known {
                return true;
            }
            if room == 0 {
                return false;
            }
            room -= 1;
            true
        });
        let dropped = before.saturating_sub(signals.len());
        self.capped_signals.fetch_add(
            u64::try_from(dropped).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
        signals
    }

    fn set_suppressions(&self, suppressions: Suppressions) {
        *self
            .suppressions
            .write()
            .unwrap_or_else(PoisonError::into_inner) = Arc::new(suppressions);
    }

    fn suppressions(&self) -> Arc<Suppressions> {
        Arc::clone(
            &self
                .suppressions
                .read()
                .unwrap_or_else(PoisonError::into_inner),
        )
    }

    /// The periodic evaluation at `now` (collector time): opens silent findings, then
    /// localizes the shared causes, opens, updates and closes their fleet-level findings, and
    /// suppresses the terminal findings they explain (`shared_cause.rs`).
    pub fn evaluate(&self, now: OffsetDateTime, thresholds: &Thresholds) -> Vec<FindingEvent> {
        let mut events = self.watch_silence(now, thresholds);
        self.evaluate_shared_causes(now, thresholds, &mut events);
        self.record_closed(&events, None);
        events
    }

    /// The collector listens from `at` on: no terminal is silent before it had its comeback
    /// window after that (its report interval plus its agent's longest retry wait).
    pub fn listen_from(&self, at: OffsetDateTime) {
        self.listening_since
            .store(at.unix_timestamp(), Ordering::Relaxed);
    }

    /// Since when the collector listens (the Unix epoch until [`Fleet::listen_from`]).
    pub fn listening_since(&self) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(self.listening_since.load(Ordering::Relaxed))
            .unwrap_or(OffsetDateTime::UNIX_EPOCH)
    }

    /// Opens the silences due at `now`: only the terminals whose deadline came are looked at
    /// (`silence.rs`).
    fn watch_silence(&self, now: OffsetDateTime, thresholds: &Thresholds) -> Vec<FindingEvent> {
        let listening_since = self.listening_since();
        let mut next_id = || self.next_id();
        let mut events = Vec::new();
        let due = now.unix_timestamp();
        for shard in self.shards.iter() {
            let mut shard = lock(shard);
            let shard = &mut *shard;
            while let Some((at, id)) = shard.silence.next_due(due) {
                let Some(terminal) = shard.terminals.get_mut(&id) else {
                    continue;
                };
                // An entry superseded by a later one.
                if terminal.silence_due.at() != at {
                    continue;
                }
                match silence::check(terminal, now, listening_since, thresholds, &mut next_id) {
                    Ok(opened) => {
                        if !opened.is_empty() {
                            shard.dirty.insert(Arc::clone(&terminal.id));
                        }
                        events.extend(opened);
                    }
                    Err(at) if at < i64::MAX => shard.silence.watch(terminal, at),
                    Err(_) => {}
                }
            }
        }
        events
    }
    /// Judges every terminal's versions (those it last reported) against a new version
    /// `policy` at `now` (collector time): its `outdated.*` findings open and close at once,
    /// without waiting for its next report. A heartbeat repeats the new judgement from then
    /// on. Returns what opened and closed.
    pub fn rejudge_versions(
        &self,
        policy: &Policy<'_>,
        now: OffsetDateTime,
        thresholds: &Thresholds,
    ) -> Vec<FindingEvent> {
        let suppressions = self.suppressions();
        let mut all = Vec::new();
        for shard in self.shards.iter() {
            let mut shard = lock(shard);
            let shard = &mut *shard;
            for terminal in shard.terminals.values_mut() {
                let events =
                    self.rejudge_terminal(terminal, &suppressions, policy, now, thresholds);
                if !events.is_empty() {
                    shard.failing.follow(&terminal.id, &events);
                    shard.dirty.insert(Arc::clone(&terminal.id));
                    all.extend(events);
                }
            }
        }
        self.record_closed(&all, None);
        all
    }

    /// [`Fleet::rejudge_versions`] for one terminal: for a batch diagnosed under a policy that
    /// was replaced before it was applied (the replacement's pass may have judged the terminal
    /// before the batch's old judgement landed).
    pub fn rejudge_versions_of(
        &self,
        terminal_id: &str,
        policy: &Policy<'_>,
        now: OffsetDateTime,
        thresholds: &Thresholds,
    ) -> Vec<FindingEvent> {
        let suppressions = self.suppressions();
        let events = {
            let mut shard = lock(self.shard_of(terminal_id));
            let shard = &mut *shard;
            let Some(terminal) = shard.terminals.get_mut(terminal_id) else {
                return Vec::new();
            };
            let events = self.rejudge_terminal(terminal, &suppressions, policy, now, thresholds);
            if !events.is_empty() {
                shard.failing.follow(&terminal.id, &events);
                shard.dirty.insert(Arc::clone(&terminal.id));
            }
            events
        };
        self.record_closed(&events, None);
        events
    }

    /// Observes one terminal's `outdated` category under `policy`, from the versions it last
    /// reported, and puts the new judgement in what its heartbeats repeat.
    fn rejudge_terminal(
        &self,
        terminal: &mut Terminal,
        suppressions: &Suppressions,
        policy: &Policy<'_>,
        now: OffsetDateTime,
        thresholds: &Thresholds,
    ) -> Vec<FindingEvent> {
        let in_scope = |kind: &FindingKind| kind.category == Category::Outdated;
        let mut signals = Vec::new();
        let version_of = |component: &str| {
            terminal
                .versions
                .iter()
                .find(|(name, _)| **name == *component)
                .map(|(_, version)| &**version)
        };
        judge_versions(
            terminal.labels.model.as_deref(),
            version_of,
            terminal.observed_at.date(),
            policy,
            &mut signals,
        );
        let signals = self.cap_new_findings(&terminal.findings, signals);
        if let Some(last) = &terminal.last_signals.0 {
            let kept = last.iter().filter(|signal| !in_scope(signal.kind)).cloned();
            let repeated: Vec<Signal> = kept.chain(signals.iter().cloned()).collect();
            terminal.last_signals = LastSignals(Some(repeated.into_boxed_slice()));
        }
        let mut next_id = || self.next_id();
        let mut events = terminal.findings.observe_scope(
            &terminal.id,
            signals,
            now,
            thresholds,
            &mut next_id,
            in_scope,
        );
        if events.is_empty() || suppressions.is_empty() {
            return events;
        }
        let attributes = shared_cause::attributes(terminal);
        for event in events
            .iter_mut()
            .filter(|event| event.change == Change::Opened)
        {
            if let Some(outage) = suppressions.explaining(&attributes, &event.finding) {
                event.finding.suppressed_by = Some(outage);
                if let Some(open) = terminal
                    .findings
                    .findings_mut()
                    .find(|finding| finding.id == event.finding.id)
                {
                    open.suppressed_by = Some(outage);
                }
            }
        }
        events
    }

    /// One terminal's readiness now, if the fleet knows it.
    pub fn readiness_of(&self, terminal_id: &str, roles: &PaymentRoles) -> Option<Readiness> {
        lock(self.shard_of(terminal_id))
            .terminals
            .get(terminal_id)
            .map(|terminal| terminal.readiness(roles))
    }

    /// Every terminal's readiness now, one shard locked at a time.
    pub fn readiness_all(&self, roles: &PaymentRoles) -> Vec<(Arc<str>, Readiness)> {
        let mut all = Vec::with_capacity(self.len());
        self.for_each_terminal(|terminal| {
            all.push((Arc::clone(&terminal.id), terminal.readiness(roles)));
        });
        all
    }

    /// A copy of one terminal's state.
    pub fn terminal(&self, terminal_id: &str) -> Option<Terminal> {
        lock(self.shard_of(terminal_id))
            .terminals
            .get(terminal_id)
            .cloned()
    }

    /// The labels and known software versions a terminal last reported, in the protocol's
    /// types: what a report's `unchanged` sections stand for.
    pub fn identity(
        &self,
        terminal_id: &str,
    ) -> Option<(Labels, BTreeMap<String, ComponentVersion>)> {
        let shard = lock(self.shard_of(terminal_id));
        let terminal = shard.terminals.get(terminal_id)?;
        let text = |value: &Option<Arc<str>>| value.as_deref().map(str::to_string);
        let labels = Labels {
            merchant: text(&terminal.labels.merchant),
            model: text(&terminal.labels.model),
            region: text(&terminal.labels.region),
            carrier: text(&terminal.labels.carrier),
            gateway: text(&terminal.labels.gateway),
            resolver: text(&terminal.labels.resolver),
            extra: terminal
                .labels
                .extra
                .iter()
                .map(|(key, value)| (key.to_string(), value.to_string()))
                .collect(),
        };
        let software = terminal
            .versions
            .iter()
            .map(|(component, version)| {
                (component.to_string(), ComponentVersion::known(&**version))
            })
            .collect();
        Some((labels, software))
    }

    /// The agent instance a terminal's reports carry, if it sends one.
    pub fn agent_instance(&self, terminal_id: &str) -> Option<Arc<str>> {
        lock(self.shard_of(terminal_id))
            .terminals
            .get(terminal_id)
            .and_then(|terminal| terminal.agent_instance.clone())
    }

    /// The highest sequence number held for a terminal; 0 for an unknown one.
    pub fn highest_sequence(&self, terminal_id: &str) -> u64 {
        lock(self.shard_of(terminal_id))
            .terminals
            .get(terminal_id)
            .map_or(0, |terminal| terminal.highest_sequence)
    }

    /// Calls `visit` for every terminal, one shard locked at a time, in no particular order.
    pub fn for_each_terminal(&self, mut visit: impl FnMut(&Terminal)) {
        for shard in self.shards.iter() {
            for terminal in lock(shard).terminals.values() {
                visit(terminal);
            }
        }
    }

    pub fn len(&self) -> usize {
        self.terminal_count.load(Ordering::Relaxed)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The open fleet-wide findings.
    pub fn fleet_wide_findings(&self) -> Vec<Finding> {
        lock(&self.fleet_wide).tracker.findings().cloned().collect()
    }

    /// Closed findings of one terminal (the empty id: fleet-wide ones), newest first.
    pub fn history_of(&self, terminal_id: &str, limit: usize) -> Vec<Finding> {
        lock(&self.history)
            .by_terminal
            .get(terminal_id)
            .map(|held| {
                held.iter()
                    .rev()
                    .take(limit)
                    .map(|(_, finding)| finding.clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Closed findings held in memory.
    pub fn history_len(&self) -> usize {
        lock(&self.history).len()
    }

    /// Closed findings dropped from memory because their terminal held its quota.
    pub fn history_dropped_for_quota(&self) -> u64 {
        lock(&self.history).dropped_for_quota
    }

    /// Signals of new problems not tracked because their terminal held its most open findings.
    pub fn capped_signals(&self) -> u64 {
        self.capped_signals.load(Ordering::Relaxed)
    }

    /// Distinct strings the shards' interners hold (labels, versions, names), one shard locked
    /// at a time.
    pub fn interned_strings(&self) -> usize {
        self.shards
            .iter()
            .map(|shard| lock(shard).interner.len())
            .sum()
    }

    /// Takes what changed since the last call, for the store to write.
    pub fn take_changes(&self) -> Changes {
        let mut changes = Changes::default();
        for shard in self.shards.iter() {
            let mut shard = lock(shard);
            let shard = &mut *shard;
            for id in shard.dirty.drain() {
                if let Some(terminal) = shard.terminals.get(&id) {
                    changes.terminals.push(terminal.clone());
                }
            }
        }
        changes.closed = lock(&self.history).take_unwritten();
        {
            let mut fleet_wide = lock(&self.fleet_wide);
            if fleet_wide.changed {
                fleet_wide.changed = false;
                changes.fleet_wide = Some(fleet_wide.tracker.clone());
            }
        }
        changes.next_finding_id = self.next_finding_id.load(Ordering::Relaxed);
        changes.history_per_terminal = self.limits.history_findings_per_terminal;
        changes
    }
}

/// Marks the closing of a silence the backfilled reports disproved (they show the agent kept
/// reporting through it): its evidence names them, and the caller keeps it out of the history.
/// Returns its id.
fn disprove_silence(events: &mut [FindingEvent], backfill: &[Reported]) -> Option<u64> {
    let event = events.iter_mut().find(|event| {
        event.change == Change::Closed && std::ptr::eq(event.finding.kind, &SILENT)
    })?;
    if let (Some(first), Some(last)) = (backfill.first(), backfill.last()) {
        event.finding.evidence.push(posmon_diagnosis::Evidence::new(
            "disproved_by",
            format!("reports {} to {}", first.sequence, last.sequence),
        ));
    }
    Some(event.finding.id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use posmon_diagnosis::test_support::{healthy_report, stage};
    use posmon_diagnosis::{diagnose, Policy, Severity};
    use time::macros::datetime;

    const T0: OffsetDateTime = datetime!(2026-11-26 02:00 UTC);

    pub(super) fn report(sequence: u64, minute: i64, host_down: bool) -> Report {
        let mut report = healthy_report();
        report.sequence = sequence;
        report.observed_at = T0 + time::Duration::minutes(minute);
        if host_down {
            report.probes[0].stages = vec![stage(
                Stage::Tcp,
                StageStatus::Failed,
                Some(ErrorKind::Timeout),
            )];
        }
        report
    }

    fn ready(terminal: &Terminal) -> Readiness {
        terminal.readiness(&PaymentRoles::default())
    }

    fn diagnosed(reports: Vec<Report>) -> Vec<(Report, Vec<Signal>)> {
        let thresholds = Thresholds::default();
        let roles = PaymentRoles::default();
        let policy = Policy {
            versions: &[],
            thresholds: &thresholds,
            roles: &roles,
        };
        reports
            .into_iter()
            .map(|report| {
                let signals = diagnose(&report, &policy);
                (report, signals)
            })
            .collect()
    }

    pub(super) fn apply(fleet: &Fleet, reports: Vec<Report>, minute: i64) -> BatchOutcome {
        fleet.apply_batch(
            "T-1",
            diagnosed(reports),
            T0 + time::Duration::minutes(minute),
            &Thresholds::default(),
        )
    }

    /// A batch diagnosed under an old policy that lands after the new policy's pass is judged
    /// again for its terminal alone; the new judgement is what heartbeats repeat.
    #[test]
    fn a_batch_judged_under_a_replaced_policy_is_judged_again() {
        let thresholds = Thresholds::default();
        let roles = PaymentRoles::default();
        let rule = |minimum: &str| posmon_diagnosis::version_policy::VersionRule {
            component: "pos_app".into(),
            model: None,
            minimum: minimum.into(),
            latest: None,
            latest_released_on: None,
            update_within_days: 0,
        };
        let (old, new) = ([rule("9.0")], [rule("0.1")]);
        let policy = |versions| Policy {
            versions,
            thresholds: &thresholds,
            roles: &roles,
        };
        let fleet = Fleet::new(100, 10);
        let mut first = report(1, 0, false);
        first.software.insert(
            "pos_app".into(),
            posmon_protocol::ComponentVersion::known("2.0"),
        );
        let open_outdated = |fleet: &Fleet| {
            fleet
                .terminal("T-1")
                .map(|terminal| {
                    terminal
                        .findings
                        .findings()
                        .filter(|finding| finding.kind.category == Category::Outdated)
                        .count()
                })
                .unwrap_or_default()
        };
        let signals = diagnose(&first, &policy(&old));
        fleet.apply_batch("T-1", vec![(first, signals)], T0, &thresholds);
        assert_eq!(open_outdated(&fleet), 1);
        // The new policy's pass found nothing else to judge; the old judgement stands until the
        // terminal is judged again.
        let events = fleet.rejudge_versions_of("T-1", &policy(&new), T0, &thresholds);
        assert_eq!(
            events.iter().map(|event| event.change).collect::<Vec<_>>(),
            [Change::Closed]
        );
        assert_eq!(open_outdated(&fleet), 0);
        assert!(fleet
            .history_of("T-1", 10)
            .iter()
            .any(|finding| finding.kind.category == Category::Outdated));
        // What a heartbeat repeats holds no outdated signal any more.
        let repeated = fleet
            .shards
            .iter()
            .find_map(|shard| {
                lock(shard)
                    .terminals
                    .get("T-1")
                    .map(|terminal| terminal.last_signals.0.clone())
            })
            .flatten()
            .unwrap_or_default();
        assert!(repeated
            .iter()
            .all(|signal| signal.kind.category != Category::Outdated));
        assert!(fleet
            .rejudge_versions_of("nobody", &policy(&new), T0, &thresholds)
            .is_empty());
    }

    fn changes(outcome: &BatchOutcome) -> Vec<(Change, bool)> {
        outcome
            .events
            .iter()
            .map(|event| (event.change, event.replayed))
            .collect()
    }

    #[test]
    fn a_repeated_sequence_is_not_applied_twice() {
        let fleet = Fleet::new(10, 30);
        let outcome = apply(&fleet, vec![report(5, 0, true), report(6, 1, true)], 1);
        assert_eq!((outcome.applied, outcome.duplicates), (2, 0));
        let outcome = apply(&fleet, vec![report(5, 2, false), report(6, 2, false)], 2);
        assert_eq!((outcome.applied, outcome.duplicates), (0, 2));
        assert_eq!(outcome.highest_sequence, 6);
        assert_eq!(fleet.highest_sequence("T-1"), 6);
        assert_eq!(
            fleet.terminal("T-1").map(|t| ready(&t)),
            Some(Readiness::CannotPay)
        );
    }

    #[test]
    fn a_late_batch_from_a_spool_writes_the_outage_into_history() {
        let fleet = Fleet::new(100, 30);
        apply(&fleet, vec![report(9, 0, false)], 0);
        // Reports 10..=50 arrive at once: the host was down from 20 to 29.
        let spooled: Vec<Report> = (10..=50)
            .map(|sequence| report(sequence, sequence as i64, (20..30).contains(&sequence)))
            .collect();
        let outcome = apply(&fleet, spooled, 51);
        assert_eq!(outcome.applied, 41);
        assert_eq!(
            changes(&outcome),
            [(Change::Opened, true), (Change::Closed, true)]
        );
        let history = fleet.history_of("T-1", 10);
        assert_eq!(history.len(), 1);
        assert_eq!(history[0].since, T0 + time::Duration::minutes(20));
        assert_eq!(history[0].closed_at, Some(T0 + time::Duration::minutes(30)));
        let terminal = fleet.terminal("T-1");
        assert_eq!(
            terminal
                .as_ref()
                .map(|t| (t.highest_sequence, t.observed_at, ready(t))),
            Some((50, T0 + time::Duration::minutes(50), Readiness::CanPay))
        );
    }

    #[test]
    fn the_sequence_orders_reports_never_the_terminal_clock() {
        let fleet = Fleet::new(100, 30);
        // A report dated far in the future (a broken clock, or a hostile terminal)...
        let mut future = report(1, 0, false);
        future.observed_at = datetime!(9999-12-31 23:59:59 UTC);
        apply(&fleet, vec![future], 0);
        // ...does not freeze the terminal: later reports, dated right, still move its state.
        apply(&fleet, vec![report(2, 1, true)], 1);
        let outcome = apply(&fleet, vec![report(3, 2, true)], 2);
        assert_eq!(changes(&outcome), [(Change::Opened, false)]);
        let terminal = fleet.terminal("T-1");
        assert_eq!(
            terminal
                .as_ref()
                .map(|t| (ready(t), t.observed_at, t.highest_sequence)),
            Some((Readiness::CannotPay, T0 + time::Duration::minutes(2), 3))
        );
        // A report dated at the first instant the calendar holds moves it too.
        let mut past = report(4, 0, false);
        past.observed_at = datetime!(-9999-01-01 00:00 UTC);
        apply(&fleet, vec![past, report(5, 3, false)], 3);
        assert_eq!(
            fleet.terminal("T-1").map(|t| ready(&t)),
            Some(Readiness::CanPay)
        );
        assert_eq!(fleet.history_of("T-1", 10).len(), 1);
    }

    fn skewed(sequence: u64, minute: i64, offset_minutes: i64, host_down: bool) -> Report {
        let mut report = report(sequence, minute + offset_minutes, host_down);
        report.clock = Some(posmon_protocol::ClockStatus {
            offset_ms: (offset_minutes * 60_000) as f64,
            uncertainty_ms: 5.0,
            ntp_synchronized: Some(offset_minutes == 0),
        });
        report
    }

    #[test]
    fn a_corrected_clock_closes_its_skew_and_the_terminal_keeps_moving() {
        let fleet = Fleet::new(100, 30);
        let codes = |fleet: &Fleet| -> Vec<&'static str> {
            fleet
                .terminal("T-1")
                .map(|t| t.findings.findings().map(|f| f.kind.code).collect())
                .unwrap_or_default()
        };
        // Ten minutes ahead: clock skew opens after two reports.
        apply(&fleet, vec![skewed(1, 0, 10, false)], 0);
        apply(&fleet, vec![skewed(2, 1, 10, false)], 1);
        assert_eq!(codes(&fleet), ["env.clock_skew"]);
        // NTP steps the clock back: each report is dated before the current state's.
        apply(&fleet, vec![skewed(3, 2, 0, false)], 2);
        let outcome = apply(&fleet, vec![skewed(4, 3, 0, false)], 3);
        assert_eq!(changes(&outcome), [(Change::Closed, false)]);
        assert!(codes(&fleet).is_empty());
        let closed = fleet.history_of("T-1", 1);
        assert!(closed[0].closed_at >= Some(closed[0].since));
        // And a fault after the jump is still seen.
        apply(&fleet, vec![skewed(5, 4, 0, true)], 4);
        apply(&fleet, vec![skewed(6, 5, 0, true)], 5);
        assert_eq!(codes(&fleet), ["env.network.host_unreachable"]);
    }

    fn from_instance(sequence: u64, minute: i64, instance: Option<&str>) -> Report {
        let mut report = report(sequence, minute, false);
        report.agent_instance = instance.map(str::to_string);
        report
    }

    #[test]
    fn an_agent_wiped_while_upgraded_to_instances_is_applied_again() {
        let fleet = Fleet::new(100, 30);
        apply(&fleet, vec![report(40, 0, false), report(41, 1, false)], 1);
        // Re-installed with the instance-sending version: its counter starts at 1 again.
        let mut first = report(1, 2, true);
        first.agent_instance = Some("cccccccc-0000".into());
        let outcome = apply(&fleet, vec![first], 2);
        assert_eq!((outcome.applied, outcome.duplicates), (1, 0));
        assert_eq!(outcome.sequence_resets.len(), 1);
        assert_eq!(fleet.highest_sequence("T-1"), 1);
    }

    #[test]
    fn a_new_agent_instance_starts_the_sequences_anew() {
        const A: &str = "aaaaaaaa-0000";
        const B: &str = "bbbbbbbb-0000";
        let fleet = Fleet::new(100, 30);
        let summary = |fleet: &Fleet| {
            fleet.terminal("T-1").map(|t| {
                (
                    t.highest_sequence,
                    t.agent_instance.as_deref().map(str::to_string),
                    t.sequence_resets,
                    t.last_sequence_reset_at,
                )
            })
        };
        // (reports as (sequence, instance), at minute, applied, duplicates, resets,
        //  then: highest sequence, instance, resets so far, last reset at minute)
        type Step = (Vec<(u64, Option<&'static str>)>, i64, u64, u64, usize);
        type After = (u64, Option<&'static str>, u64, Option<i64>);
        let steps: Vec<(Step, After)> = vec![
            // An agent from before instances: today's behaviour.
            (
                (vec![(40, None), (41, None)], 0, 2, 0, 0),
                (41, None, 0, None),
            ),
            ((vec![(41, None)], 1, 0, 1, 0), (41, None, 0, None)),
            // Upgraded, it names its instance: adopted, its counter goes on.
            (
                (vec![(41, Some(A)), (42, Some(A))], 2, 1, 1, 0),
                (42, Some(A), 0, None),
            ),
            // Its state dir is wiped: a new instance counts from 1 and is applied.
            (
                (vec![(1, Some(B)), (2, Some(B))], 3, 2, 0, 1),
                (2, Some(B), 1, Some(3)),
            ),
            (
                (vec![(2, Some(B)), (3, Some(B))], 4, 1, 1, 0),
                (3, Some(B), 1, Some(3)),
            ),
            // A report without an instance keeps the one held.
            (
                (vec![(3, None), (4, None)], 5, 1, 1, 0),
                (4, Some(B), 1, Some(3)),
            ),
        ];
        for (index, ((reports, minute, applied, duplicates, resets), expected)) in
            steps.into_iter().enumerate()
        {
            let reports = reports
                .into_iter()
                .map(|(sequence, instance)| from_instance(sequence, minute, instance))
                .collect();
            let outcome = apply(&fleet, reports, minute);
            assert_eq!(
                (
                    outcome.applied,
                    outcome.duplicates,
                    outcome.sequence_resets.len()
                ),
                (applied, duplicates, resets),
                "step {index}"
            );
            let (highest, instance, resets, reset_minute) = expected;
            assert_eq!(
                summary(&fleet),
                Some((
                    highest,
                    instance.map(str::to_string),
                    resets,
                    reset_minute.map(|m| T0 + time::Duration::minutes(m))
                )),
                "step {index}"
            );
        }
        let reset = apply(&fleet, vec![from_instance(1, 6, Some(A))], 6).sequence_resets;
        assert_eq!(
            reset,
            [SequenceReset {
                old_instance: Arc::from(B),
                new_instance: Arc::from(A),
                old_highest: 4,
                new_sequence: 1,
                previous_reset_at: Some(T0 + time::Duration::minutes(3)),
            }]
        );
        // The reset is written to the store with the terminal.
        let written = fleet.take_changes().terminals;
        assert_eq!(written[0].sequence_resets, 2);
    }

    #[test]
    fn a_report_closes_the_silent_finding() {
        let thresholds = Thresholds::default();
        let fleet = Fleet::new(100, 30);
        apply(&fleet, vec![report(1, 0, false)], 0);
        assert!(fleet
            .evaluate(T0 + time::Duration::minutes(3), &thresholds)
            .is_empty());
        let events = fleet.evaluate(T0 + time::Duration::minutes(4), &thresholds);
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].finding.kind.code, "terminal.silent");
        assert_eq!(events[0].finding.since, T0, "silent since the last report");
        assert!(fleet
            .evaluate(T0 + time::Duration::minutes(5), &thresholds)
            .is_empty());
        let outcome = apply(&fleet, vec![report(2, 6, false)], 6);
        assert_eq!(changes(&outcome), [(Change::Closed, false)]);
        assert_eq!(
            fleet.terminal("T-1").map(|t| ready(&t)),
            Some(Readiness::CanPay)
        );
    }

    /// A heartbeat: the report's probes, device and clock are those of the one before.
    fn heartbeat(sequence: u64, minute: i64) -> Report {
        let mut report = report(sequence, minute, false);
        report.probes.clear();
        report.device = None;
        report.clock = None;
        report.unchanged = vec![Section::Measurements];
        report
    }

    #[test]
    fn a_heartbeat_counts_for_liveness_and_repeats_the_last_observation() {
        let fleet = Fleet::new(100, 30);
        // A first failure: pending (the hysteresis wants two observations).
        let outcome = apply(&fleet, vec![report(1, 0, true)], 0);
        assert_eq!(changes(&outcome), []);
        let before = fleet.terminal("T-1").unwrap();
        // A heartbeat says "as before": the failure seen again, the second observation…
        let mut beat = heartbeat(2, 1);
        beat.data_usage = Some(DataUsage {
            month: 24_322,
            report_bytes: 1000,
            probe_bytes: 200,
            other_bytes: 0,
            budget_bytes: Some(10 << 20),
            stretch_percent: 150,
        });
        beat.intervals = Some(Intervals {
            probe_seconds: 300,
            report_seconds: 900,
            retry_max_seconds: 300,
        });
        let outcome = apply(&fleet, vec![beat], 1);
        assert_eq!(
            (outcome.applied, changes(&outcome)),
            (1, vec![(Change::Opened, false)])
        );
        assert_eq!(
            outcome.events[0].finding.since, T0,
            "open since the failure it repeats"
        );
        // …and it moves the liveness: sequence, times, schedule, data usage.
        let terminal = fleet.terminal("T-1").unwrap();
        assert_eq!(terminal.highest_sequence, 2);
        assert_eq!(terminal.last_seen, T0 + time::Duration::minutes(1));
        assert_eq!(terminal.observed_at, T0 + time::Duration::minutes(1));
        assert_eq!(terminal.intervals.map(|i| i.report_seconds), Some(900));
        assert_eq!(terminal.data_usage.map(|u| u.total_bytes()), Some(1200));
        // The path state, its latency series and the device are the failing report's.
        assert_eq!(terminal.targets, before.targets);
        assert_eq!(terminal.device, before.device);
        let latency_points = |fleet: &Fleet| {
            fleet.terminal("T-1").map(|t| {
                t.targets
                    .iter()
                    .map(|target| target.latency.len())
                    .sum::<usize>()
            })
        };
        let points = latency_points(&fleet);
        // Heartbeats keep it open, however many: each repeats the failure; a later report
        // without usage keeps the usage held.
        for sequence in 3..10 {
            let outcome = apply(
                &fleet,
                vec![heartbeat(sequence, sequence as i64)],
                sequence as i64,
            );
            assert_eq!(changes(&outcome), []);
        }
        let terminal = fleet.terminal("T-1").unwrap();
        assert_eq!(ready(&terminal), Readiness::CannotPay);
        assert_eq!(terminal.visible_findings().count(), 1);
        assert_eq!(
            terminal.visible_findings().next().map(|f| f.last_seen),
            Some(T0 + time::Duration::minutes(9)),
            "seen again at each heartbeat's time"
        );
        assert_eq!(terminal.data_usage.map(|u| u.stretch_percent), Some(150));
        assert_eq!(latency_points(&fleet), points);
        // A recovery and a heartbeat repeating it close it as two recoveries do.
        assert_eq!(changes(&apply(&fleet, vec![report(10, 10, false)], 10)), []);
        let outcome = apply(&fleet, vec![heartbeat(11, 11)], 11);
        assert_eq!(changes(&outcome), [(Change::Closed, false)]);
        assert_eq!(
            fleet.terminal("T-1").map(|t| ready(&t)),
            Some(Readiness::CanPay)
        );
    }

    /// A report whose payment host answers slowly (the high-latency rule's signal).
    fn slow(sequence: u64, minute: i64) -> Report {
        let mut report = report(sequence, minute, false);
        for stage in &mut report.probes[0].stages {
            stage.latency_ms = Some(posmon_protocol::LatencyStats {
                min: 5_000.0,
                avg: 5_000.0,
                max: 5_000.0,
                jitter: 0.0,
            });
        }
        report
    }

    #[test]
    fn heartbeats_count_toward_a_finding_that_needs_three_observations() {
        let codes = |fleet: &Fleet| -> Vec<&'static str> {
            fleet
                .terminal("T-1")
                .map(|t| t.findings.findings().map(|f| f.kind.code).collect())
                .unwrap_or_default()
        };
        let fleet = Fleet::new(100, 30);
        // The agent sends the change and its confirmation, then only heartbeats.
        apply(&fleet, vec![slow(1, 0)], 0);
        apply(&fleet, vec![slow(2, 1)], 1);
        assert!(codes(&fleet).is_empty(), "pending after two");
        let outcome = apply(&fleet, vec![heartbeat(3, 2)], 2);
        assert_eq!(changes(&outcome), [(Change::Opened, false)]);
        let opened = codes(&fleet);
        assert_eq!(opened.len(), 1, "{opened:?}");
        // The same for its end.
        apply(&fleet, vec![report(4, 3, false)], 3);
        apply(&fleet, vec![report(5, 4, false)], 4);
        assert_eq!(codes(&fleet), opened, "open until the third good one");
        let outcome = apply(&fleet, vec![heartbeat(6, 5)], 5);
        assert_eq!(changes(&outcome), [(Change::Closed, false)]);
        // Without a report with measurements since the collector started (nothing stored
        // repeats), a heartbeat runs no rule.
        let fleet = Fleet::new(100, 30);
        apply(&fleet, vec![slow(1, 0)], 0);
        apply(&fleet, vec![slow(2, 1)], 1);
        // As the store writes and reads them back.
        let stored = serde_json::to_string(&fleet.take_changes().terminals).unwrap_or_default();
        let restored = Fleet::restore(
            Restored {
                terminals: serde_json::from_str(&stored).unwrap_or_else(|error| panic!("{error}")),
                ..Restored::default()
            },
            100,
            30,
        );
        for sequence in 3..6 {
            let outcome = apply(
                &restored,
                vec![heartbeat(sequence, sequence as i64)],
                sequence as i64,
            );
            assert_eq!(changes(&outcome), []);
        }
        assert!(codes(&restored).is_empty());
        assert_eq!(
            changes(&apply(&restored, vec![slow(6, 6)], 6)),
            [(Change::Opened, false)]
        );
    }

    #[test]
    fn a_heartbeat_ends_a_silence() {
        let thresholds = Thresholds::default();
        let fleet = Fleet::new(100, 30);
        apply(&fleet, vec![report(1, 0, false)], 0);
        let events = fleet.evaluate(T0 + time::Duration::minutes(4), &thresholds);
        assert_eq!(events.len(), 1);
        let outcome = apply(&fleet, vec![heartbeat(2, 6)], 6);
        assert_eq!(changes(&outcome), [(Change::Closed, false)]);
        assert_eq!(
            fleet.terminal("T-1").map(|t| ready(&t)),
            Some(Readiness::CanPay)
        );
    }

    #[test]
    fn the_latency_series_is_bounded() {
        let fleet = Fleet::new(100, 3);
        for sequence in 1..=10u64 {
            let mut report = report(sequence, sequence as i64, false);
            report.probes[0].stages[0].latency_ms = Some(posmon_protocol::LatencyStats {
                min: 1.0,
                avg: sequence as f64,
                max: 1.0,
                jitter: 0.0,
            });
            apply(&fleet, vec![report], sequence as i64);
        }
        let terminal = fleet.terminal("T-1");
        let series: Vec<f32> = terminal
            .iter()
            .flat_map(|t| t.targets[0].latency.iter().map(|point| point.1))
            .collect();
        assert_eq!(series, [8.0, 9.0, 10.0]);
        // The clock jumps back: the series starts anew rather than going back in time.
        let mut report = report(11, 2, false);
        report.probes[0].stages[0].latency_ms = Some(posmon_protocol::LatencyStats {
            min: 1.0,
            avg: 11.0,
            max: 1.0,
            jitter: 0.0,
        });
        apply(&fleet, vec![report], 11);
        let terminal = fleet.terminal("T-1");
        let series: Vec<LatencyPoint> = terminal
            .iter()
            .flat_map(|t| t.targets[0].latency.iter().copied())
            .collect();
        assert_eq!(
            series,
            [LatencyPoint(
                (T0 + time::Duration::minutes(2)).unix_timestamp(),
                11.0
            )]
        );
    }

    #[test]
    fn history_is_bounded() {
        let fleet = Fleet::new(2, 30);
        for sequence in 1..=20u64 {
            // Two bad, two good: one finding opens and closes every four reports.
            let down = sequence % 4 == 1 || sequence % 4 == 2;
            apply(
                &fleet,
                vec![report(sequence, sequence as i64, down)],
                sequence as i64,
            );
        }
        assert_eq!(fleet.history_of("T-1", 100).len(), 2);
        // Only what the history holds is written: the database would drop the rest at once.
        assert_eq!(fleet.take_changes().closed.len(), 2);
        assert!(fleet.take_changes().closed.is_empty());
    }

    #[test]
    fn half_of_a_carrier_going_silent_is_one_carrier_outage() {
        let thresholds = Thresholds::default();
        let fleet = Fleet::new(100, 30);
        // T-0..T-9: china-mobile in cn-east; T-10..T-14 china-unicom there, T-15..T-19
        // china-mobile in cn-west: the rest of the fleet, which keeps reporting.
        let send = |index: u64, sequence: u64, minute: i64| {
            let mut report = report(sequence, minute, false);
            report.terminal_id = format!("T-{index}");
            let (carrier, region) = match index {
                0..10 => ("china-mobile", "cn-east"),
                10..15 => ("china-unicom", "cn-east"),
                _ => ("china-mobile", "cn-west"),
            };
            report.labels.carrier = Some(carrier.into());
            report.labels.region = Some(region.into());
            fleet.apply_batch(
                &report.terminal_id.clone(),
                diagnosed(vec![report]),
                T0 + time::Duration::minutes(minute),
                &thresholds,
            );
        };
        for index in 0..20 {
            send(index, 1, 0);
        }
        for index in (0..5).chain(10..20) {
            send(index, 2, 3);
        }
        let events = fleet.evaluate(T0 + time::Duration::minutes(4), &thresholds);
        let count = |change: Change, code: &str| {
            events
                .iter()
                .filter(|e| e.change == change && e.finding.kind.code == code)
                .count()
        };
        assert_eq!(count(Change::Opened, "terminal.silent"), 5);
        assert_eq!(count(Change::Opened, "upstream.carrier_outage"), 1);
        assert_eq!(count(Change::Suppressed, "terminal.silent"), 5);
        let outage = fleet.fleet_wide_findings();
        assert_eq!(
            outage
                .iter()
                .map(|f| (f.subject.as_str(), f.explains))
                .collect::<Vec<_>>(),
            [("carrier=china-mobile,region=cn-east", 5)]
        );
        let evidence = |name: &str| {
            outage[0]
                .evidence
                .iter()
                .find(|evidence| evidence.name == name)
                .map(|evidence| evidence.value.clone())
        };
        assert_eq!(evidence("symptom").as_deref(), Some("terminal.silent"));
        assert_eq!(evidence("failing_inside").as_deref(), Some("5"));
        assert_eq!(evidence("total_inside").as_deref(), Some("10"));
        assert_eq!(evidence("failing_outside").as_deref(), Some("0"));
        assert_eq!(evidence("total_outside").as_deref(), Some("10"));
        // Silent, explained by the outage: what it can do is not known.
        assert_eq!(
            fleet.terminal("T-7").map(|t| ready(&t)),
            Some(Readiness::Unknown)
        );
        // Three come back: 2 of 10 silent is under 30 %. The outage ends after three clean
        // evaluations and the remaining silence is reported on its own again.
        for index in (5..8).chain(10..20) {
            send(index, 2, 5);
        }
        for seconds in [0, 10, 20] {
            let now = T0 + time::Duration::minutes(5) + time::Duration::seconds(seconds);
            fleet.evaluate(now, &thresholds);
        }
        assert!(fleet.fleet_wide_findings().is_empty());
        assert_eq!(
            fleet.terminal("T-9").map(|t| ready(&t)),
            Some(Readiness::Unknown)
        );
        assert_eq!(fleet.history_of("", 10).len(), 1);
    }

    /// A report of `terminal_id` whose every string is new: labels, versions, target names
    /// and addresses, and (with `failing`) a failing target per name.
    fn fresh_strings_report(terminal_id: &str, sequence: u64, failing: bool) -> Report {
        let mut report = report(sequence, sequence as i64, false);
        report.terminal_id = terminal_id.into();
        report.agent_version = format!("agent-{sequence}");
        report.labels.region = Some(format!("region-{sequence}"));
        report.labels.extra = [(format!("key-{sequence}"), format!("value-{sequence}"))]
            .into_iter()
            .collect();
        report.software = [(
            format!("component-{sequence}"),
            ComponentVersion::known(format!("1.{sequence}")),
        )]
        .into_iter()
        .collect();
        let template = report.probes[0].clone();
        report.probes = (0..4)
            .map(|index| {
                let mut probe = template.clone();
                probe.target = format!("target-{sequence}-{index}");
                probe.address = format!("host-{sequence}-{index}:443");
                if failing {
                    probe.stages = vec![stage(
                        Stage::Tcp,
                        StageStatus::Failed,
                        Some(ErrorKind::Timeout),
                    )];
                }
                probe
            })
            .collect();
        report
    }

    #[test]
    fn the_interner_frees_what_no_terminal_holds() {
        let mut interner = Interner::default();
        let kept: Vec<Arc<str>> = (0..10)
            .map(|index| interner.intern(&format!("kept-{index}")))
            .collect();
        for index in 0..100_000 {
            interner.intern(&format!("garbage-{index}"));
            assert!(interner.len() <= SWEEP_FLOOR + 1, "at {index}");
        }
        interner.sweep();
        assert_eq!(interner.len(), kept.len());
        for (index, text) in kept.iter().enumerate() {
            // Still the one shared copy.
            assert!(Arc::ptr_eq(
                text,
                &interner.intern(&format!("kept-{index}"))
            ));
        }
        // Many live strings: the next sweep waits until the set has doubled.
        let live: Vec<Arc<str>> = (0..5000)
            .map(|index| interner.intern(&format!("live-{index}")))
            .collect();
        assert_eq!(interner.len(), live.len() + kept.len());
        for index in 0..20_000 {
            interner.intern(&format!("more-garbage-{index}"));
            assert!(interner.len() <= 2 * (live.len() + kept.len()) + 1);
        }
    }

    #[test]
    fn a_terminal_sending_fresh_strings_does_not_grow_the_fleet() {
        let fleet = Fleet::new(100, 3);
        for sequence in 1..=5000u64 {
            fleet.apply_batch(
                "T-1",
                diagnosed(vec![fresh_strings_report("T-1", sequence, false)]),
                T0,
                &Thresholds::default(),
            );
        }
        assert!(
            fleet.interned_strings() <= SWEEP_FLOOR + 20,
            "{} strings",
            fleet.interned_strings()
        );
        let terminal = fleet.terminal("T-1");
        assert_eq!(
            terminal
                .as_ref()
                .map(|t| (&*t.agent_version, t.targets.len())),
            Some(("agent-5000", 4))
        );
    }

    #[test]
    fn history_quotas_per_terminal_and_in_all() {
        let closed = |terminal: &str, id: u64| {
            let mut finding = report_finding(id);
            finding.terminal_id = Arc::from(terminal);
            finding
        };
        // (total, per terminal, terminals of the closed findings in order, held per terminal
        // newest first as ids, dropped for the quota)
        type Case = (
            usize,
            usize,
            &'static [&'static str],
            &'static [(&'static str, &'static [u64])],
            u64,
        );
        let cases: &[Case] = &[
            // A flapping terminal drops only its own oldest.
            (
                100,
                3,
                &["A", "B", "A", "A", "A", "A", ""],
                &[("A", &[6, 5, 4]), ("B", &[2]), ("", &[7])],
                2,
            ),
            // The total drops the fleet's oldest, whichever terminal it is.
            (
                3,
                3,
                &["A", "B", "C", "D"],
                &[("A", &[]), ("B", &[2]), ("C", &[3]), ("D", &[4])],
                0,
            ),
            // Both at once.
            (
                4,
                2,
                &["A", "A", "A", "B", "C", "C"],
                &[("A", &[3]), ("B", &[4]), ("C", &[6, 5])],
                1,
            ),
            // Nothing kept.
            (0, 5, &["A"], &[("A", &[])], 0),
        ];
        for (total, per_terminal, pushed, expected, dropped) in cases {
            let mut history = History::default();
            for (index, terminal) in pushed.iter().enumerate() {
                history.hold(closed(terminal, index as u64 + 1), *total, *per_terminal);
            }
            let mut held_in_all = 0;
            for (terminal, ids) in *expected {
                let held: Vec<u64> = history
                    .by_terminal
                    .get(*terminal)
                    .map(|held| held.iter().rev().map(|(_, f)| f.id).collect())
                    .unwrap_or_default();
                assert_eq!(
                    &held, ids,
                    "{pushed:?} total {total} per terminal {per_terminal}"
                );
                held_in_all += ids.len();
            }
            assert_eq!(history.len(), held_in_all, "{pushed:?}");
            assert_eq!(history.dropped_for_quota, *dropped, "{pushed:?}");
            assert!(
                history.by_terminal.values().all(|held| !held.is_empty()),
                "no empty entries linger"
            );
        }
    }

    fn report_finding(id: u64) -> Finding {
        Finding {
            id,
            terminal_id: Arc::from("T-1"),
            kind: &posmon_diagnosis::rules::network_path::HOST_UNREACHABLE,
            severity: Severity::Critical,
            subject: "payment-host".into(),
            evidence: Vec::new(),
            since: T0,
            last_seen: T0,
            closed_at: Some(T0),
            suppressed_by: None,
            explains: 0,
        }
    }

    #[test]
    fn a_flapping_terminal_cannot_flush_another_terminals_history() {
        let mut limits = FleetLimits::new(1000, 3);
        limits.history_findings_per_terminal = 5;
        let fleet = Fleet::with_limits(limits);
        let send = |terminal: &str, sequence: u64, down: bool| {
            let mut report = report(sequence, sequence as i64, down);
            report.terminal_id = terminal.into();
            fleet.apply_batch(
                terminal,
                diagnosed(vec![report]),
                T0 + time::Duration::minutes(sequence as i64),
                &Thresholds::default(),
            );
        };
        for sequence in 1..=4 {
            send("T-quiet", sequence, sequence <= 2);
        }
        assert_eq!(fleet.history_of("T-quiet", 100).len(), 1);
        for sequence in 1..=400u64 {
            send(
                "T-flapping",
                sequence,
                sequence % 4 == 1 || sequence % 4 == 2,
            );
        }
        assert_eq!(fleet.history_of("T-quiet", 100).len(), 1);
        assert_eq!(fleet.history_of("T-flapping", 100).len(), 5);
        assert_eq!(fleet.history_len(), 6);
        assert_eq!(fleet.history_dropped_for_quota(), 95);
        // The store is given what is held, not the 100 closings: the flapping terminal cannot
        // grow the writer's batch with its rate.
        let written: Vec<u64> = fleet.take_changes().closed.iter().map(|f| f.id).collect();
        assert_eq!(written.len(), 6);
        for sequence in 401..=408u64 {
            send(
                "T-flapping",
                sequence,
                sequence % 4 == 1 || sequence % 4 == 2,
            );
        }
        let newly: Vec<u64> = fleet.take_changes().closed.iter().map(|f| f.id).collect();
        assert_eq!(newly.len(), 2);
        assert!(newly.iter().all(|id| !written.contains(id)));
        // The newest first.
        let ids: Vec<u64> = fleet
            .history_of("T-flapping", 2)
            .iter()
            .map(|finding| finding.id)
            .collect();
        assert!(ids[0] > ids[1]);
    }

    #[test]
    fn open_findings_per_terminal_are_bounded() {
        let mut limits = FleetLimits::new(1000, 3);
        limits.open_findings_per_terminal = 6;
        let fleet = Fleet::with_limits(limits);
        // Every report fails four targets of fresh names twice in a row (two bad observations
        // open a finding): the tracker would hold every name it ever saw failing.
        for round in 1..=50u64 {
            let mut twice = fresh_strings_report("T-1", round * 2 - 1, true);
            twice.observed_at = T0 + time::Duration::minutes(round as i64 * 2 - 1);
            let mut again = twice.clone();
            again.sequence = round * 2;
            again.observed_at = T0 + time::Duration::minutes(round as i64 * 2);
            fleet.apply_batch(
                "T-1",
                diagnosed(vec![twice, again]),
                T0,
                &Thresholds::default(),
            );
            let open = fleet
                .terminal("T-1")
                .map_or(0, |terminal| terminal.findings.open.len());
            assert!(open <= 6, "round {round}: {open} open");
        }
        assert!(fleet.capped_signals() > 0);
        // Another terminal is not concerned.
        let mut other = fresh_strings_report("T-2", 1, true);
        other.observed_at = T0;
        let mut again = other.clone();
        again.sequence = 2;
        again.observed_at = T0 + time::Duration::minutes(1);
        fleet.apply_batch(
            "T-2",
            diagnosed(vec![other, again]),
            T0,
            &Thresholds::default(),
        );
        assert_eq!(
            fleet.terminal("T-2").map(|t| t.findings.open.len()),
            Some(4)
        );
    }
}
