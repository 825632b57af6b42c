//! Every metric the collector exports, in one explicit registry.
//!
//! Naming: `posmon_<subsystem>_<name>_<unit>`, counters end in `_total`. Label values are
//! bounded: rejection reasons, statuses, codes, categories, severities, parties and changes are
//! closed sets; regions, models and targets come from terminals, so each keeps at most
//! `metrics.max_label_values` distinct values and exports the rest as `other`, and one terminal
//! brings in at most `metrics.max_label_values_per_terminal` of them (so one terminal cannot
//! take every slot). Series per terminal exist only when `metrics.per_terminal_series` is on
//! (a cardinality risk).

use std::collections::{HashMap, HashSet};
use std::sync::{PoisonError, RwLock};

use prometheus::{
    Encoder, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::compliance::Compliance;
use crate::config::MetricsConfig;
use crate::data_usage::{FleetUsage, PROJECTED_BUCKETS};
use crate::fleet::Fleet;
use crate::http::error::Reason;
use posmon_diagnosis::findings::Change;
use posmon_diagnosis::readiness::{PaymentRoles, Readiness};
use posmon_diagnosis::rules::outdated::KNOWN_COMPONENTS;
use posmon_diagnosis::{all_kinds, Severity};

/// The value exported for labels beyond the limit.
const OTHER: &str = "other";
/// The value exported for a terminal without the label.
const UNKNOWN: &str = "unknown";

/// Keeps the first `limit` distinct values of a label, of which one terminal may bring in at
/// most `per_terminal`; later ones become `other`.
///
/// A value is admitted by the first terminal that shows it while there is room, and is then
/// free for every terminal: a fleet of thousands sharing a few targets, regions and models
/// never meets the per-terminal bound, while a terminal inventing names spends its own few
/// slots and no more.
struct BoundedValues {
    limit: usize,
    per_terminal: usize,
    admitted: RwLock<Admitted>,
}

#[derive(Default)]
struct Admitted {
    values: HashSet<String>,
    /// Values each terminal brought in; only terminals that brought one are here, so it holds
    /// at most `limit` entries.
    claims: HashMap<String, usize>,
}

impl BoundedValues {
    fn new(limit: usize, per_terminal: usize) -> Self {
        BoundedValues {
            limit,
            per_terminal,
            admitted: RwLock::new(Admitted::default()),
        }
    }

    /// The exported value of `terminal_id`'s label `value`.
    fn value(&self, terminal_id: &str, value: Option<&str>) -> String {
        let Some(value) = value else {
            return UNKNOWN.to_string();
        };
        // Almost always a value already admitted: a shared lock on the ingest path.
        if self
            .admitted
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .values
            .contains(value)
        {
            return value.to_string();
        }
        let mut admitted = self
            .admitted
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        let admitted = &mut *admitted;
        if admitted.values.contains(value) {
            return value.to_string();
        }
        if admitted.values.len() >= self.limit {
            return OTHER.to_string();
        }
        let claimed = admitted.claims.get(terminal_id).copied().unwrap_or(0);
        if claimed >= self.per_terminal {
            return OTHER.to_string();
        }
        admitted
            .claims
            .insert(terminal_id.to_string(), claimed.saturating_add(1));
        admitted.values.insert(value.to_string());
        value.to_string()
    }
}

/// Replaces every series of `gauge` with `counts`: combinations that vanished go away.
fn set_all<const N: usize>(gauge: &IntGaugeVec, counts: HashMap<[String; N], i64>) {
    gauge.reset();
    for (labels, count) in counts {
        let labels: Vec<&str> = labels.iter().map(String::as_str).collect();
        gauge.with_label_values(&labels).set(count);
    }
}

pub struct Metrics {
    registry: Registry,
    pub reports: IntCounterVec,
    pub agent_dropped_reports: IntCounter,
    pub rejected_requests: IntCounterVec,
    pub request_duration: Histogram,
    pub diagnosis_duration: Histogram,
    pub evaluation_duration: Histogram,
    pub finding_events: IntCounterVec,
    probe_latency: HistogramVec,
    pub persist_duration: Histogram,
    pub persisted_terminals: IntCounter,
    pub persist_failures: IntCounter,
    /// Terminals whose sequences a new agent instance started anew.
    pub sequence_resets: IntCounter,
    /// Stored rows skipped at start (or on reload) because they cannot be used, by table.
    pub unreadable_rows: IntCounterVec,
    /// Enrollment code redemptions by result (`enroll.rs`: a closed set).
    pub enroll_redemptions: IntCounterVec,
    /// Delivery attempts of alert notifications, by receiver (from the config, so bounded)
    /// and result (delivered, retried, failed, expired).
    pub alert_notifications: IntCounterVec,
    pub alert_outbox_pending: IntGauge,
    pub alert_delivery_latency: HistogramVec,
    history_findings: IntGauge,
    /// Connections open now, refused beyond `limits.max_connections`, and closed by the
    /// collector by reason (header or idle timeout, TLS handshake timeout or failure).
    pub connections_open: IntGauge,
    pub connections_refused: IntCounter,
    pub connections_closed: IntCounterVec,
    history_quota_dropped: IntCounter,
    capped_signals: IntCounter,
    interned_strings: IntGauge,
    terminals: IntGaugeVec,
    terminals_by_region: IntGaugeVec,
    terminals_by_model: IntGaugeVec,
    findings_open: IntGaugeVec,
    findings_open_by_region: IntGaugeVec,
    findings_open_by_model: IntGaugeVec,
    findings_suppressed: IntGauge,
    terminals_by_segment: IntGaugeVec,
    findings_open_by_segment: IntGaugeVec,
    versions: IntGaugeVec,
    data_usage_bytes: IntGaugeVec,
    data_usage_terminals: IntGaugeVec,
    data_budget_terminals: IntGaugeVec,
    regions: BoundedValues,
    carriers: BoundedValues,
    models: BoundedValues,
    targets: BoundedValues,
    per_terminal: Option<PerTerminal>,
    /// Report datagrams (`datagram.rs`).
    pub datagrams: crate::datagram::DatagramMetrics,
    /// Fleet control (`control/`): polls held, probe requests made.
    pub control: crate::control::ControlMetrics,
    /// History (`history/`): its queue, writes and pruning.
    pub history: crate::history::HistoryMetrics,
    /// Terminals by their settings state (running, rejected, pending), set at each scrape.
    config_terminals: IntGaugeVec,
}

struct PerTerminal {
    last_report: GaugeVec,
    open_findings: IntGaugeVec,
}

fn register<T: prometheus::core::Collector + Clone + 'static>(
    registry: &Registry,
    metric: prometheus::Result<T>,
) -> prometheus::Result<T> {
    let metric = metric?;
    registry.register(Box::new(metric.clone()))?;
    Ok(metric)
}

fn histogram(
    registry: &Registry,
    name: &str,
    help: &str,
    buckets: Vec<f64>,
) -> prometheus::Result<Histogram> {
    register(
        registry,
        Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets)),
    )
}

fn gauges(
    registry: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> prometheus::Result<IntGaugeVec> {
    register(registry, IntGaugeVec::new(Opts::new(name, help), labels))
}

impl Metrics {
    /// The metrics, with `metrics.max_label_values_per_terminal` at its default.
    pub fn new(per_terminal_series: bool, max_label_values: usize) -> prometheus::Result<Self> {
        Metrics::with_label_bounds(
            per_terminal_series,
            max_label_values,
            MetricsConfig::default().max_label_values_per_terminal,
        )
    }

    /// The metrics, with `max_label_values` values per bounded label, of which one terminal
    /// brings in at most `max_label_values_per_terminal`.
    pub fn with_label_bounds(
        per_terminal_series: bool,
        max_label_values: usize,
        max_label_values_per_terminal: usize,
    ) -> prometheus::Result<Self> {
        let registry = Registry::new();
        let reports = register(
            &registry,
            IntCounterVec::new(
                Opts::new(
                    "posmon_ingest_reports_total",
                    "Reports received in accepted requests, by result (applied, duplicate).",
                ),
                &["result"],
            ),
        )?;
        let agent_dropped_reports = register(
            &registry,
            IntCounter::new(
                "posmon_ingest_agent_dropped_reports_total",
                "Reports agents say they dropped before delivery (spool full or too old, or refused as bad).",
            ),
        )?;
        let rejected_requests = register(
            &registry,
            IntCounterVec::new(
                Opts::new(
                    "posmon_ingest_rejected_requests_total",
                    "Report requests refused, by reason.",
                ),
                &["reason"],
            ),
        )?;
        let fast = prometheus::exponential_buckets(0.0001, 4.0, 8)?;
        let request_duration = histogram(
            &registry,
            "posmon_ingest_request_duration_seconds",
            "Time to decode, validate, diagnose and apply one report request.",
            fast.clone(),
        )?;
        let diagnosis_duration = histogram(
            &registry,
            "posmon_diagnosis_duration_seconds",
            "Time to diagnose and apply the reports of one request.",
            fast.clone(),
        )?;
        let evaluation_duration = histogram(
            &registry,
            "posmon_diagnosis_fleet_evaluation_duration_seconds",
            "Time of one periodic evaluation of the fleet (silence, upstream outages).",
            prometheus::exponential_buckets(0.001, 4.0, 8)?,
        )?;
        let finding_events = register(
            &registry,
            IntCounterVec::new(
                Opts::new(
                    "posmon_findings_events_total",
                    "Changes of findings, by change (opened, closed, suppressed, unsuppressed).",
                ),
                &["change"],
            ),
        )?;
        let probe_latency = register(
            &registry,
            HistogramVec::new(
                HistogramOpts::new(
                    "posmon_probe_latency_seconds",
                    "Connect latency terminals report, by target.",
                )
                .buckets(prometheus::exponential_buckets(0.005, 2.0, 12)?),
                &["target"],
            ),
        )?;
        let persist_duration = histogram(
            &registry,
            "posmon_state_write_duration_seconds",
            "Time of one write of the changed state to the database.",
            prometheus::exponential_buckets(0.001, 4.0, 8)?,
        )?;
        let persisted_terminals = register(
            &registry,
            IntCounter::new(
                "posmon_state_written_terminals_total",
                "Terminal states written to the database.",
            ),
        )?;
        let persist_failures = register(
            &registry,
            IntCounter::new(
                "posmon_state_write_failures_total",
                "Writes of the state to the database that failed (retried with the next).",
            ),
        )?;
        let sequence_resets = register(
            &registry,
            IntCounter::new(
                "posmon_ingest_sequence_resets_total",
                "Reports naming a new agent instance, which started their terminal's sequences anew (a wiped or re-installed agent).",
            ),
        )?;
        let unreadable_rows = register(
            &registry,
            IntCounterVec::new(
                Opts::new(
                    "posmon_state_unreadable_rows_total",
                    "Stored rows the collector skipped because it cannot use them, by table.",
                ),
                &["table"],
            ),
        )?;
        let enroll_redemptions = register(
            &registry,
            IntCounterVec::new(
                Opts::new(
                    "posmon_enroll_redemptions_total",
                    "Enrollment code redemptions by result: enrolled, refused (an invalid, used or expired code, or a malformed request), rate_limited (the failures of all senders over their rate), busy (too many at once), failed (the collector's fault).",
                ),
                &["result"],
            ),
        )?;
        let history_findings = register(
            &registry,
            IntGauge::new(
                "posmon_state_history_findings",
                "Closed findings held in memory.",
            ),
        )?;
        let history_quota_dropped = register(
            &registry,
            IntCounter::new(
                "posmon_state_history_quota_dropped_findings_total",
                "Closed findings dropped from the history because their terminal held limits.max_history_findings_per_terminal.",
            ),
        )?;
        let capped_signals = register(
            &registry,
            IntCounter::new(
                "posmon_findings_capped_signals_total",
                "Signals of new problems not tracked because their terminal held limits.max_open_findings_per_terminal open findings.",
            ),
        )?;
        let interned_strings = register(
            &registry,
            IntGauge::new(
                "posmon_state_interned_strings",
                "Distinct strings (labels, versions, names) the fleet state holds.",
            ),
        )?;
        let terminals = gauges(
            &registry,
            "posmon_fleet_terminals",
            "Known terminals by payment readiness (cannot_pay, at_risk, can_pay, unknown).",
            &["readiness"],
        )?;
        let terminals_by_region = gauges(
            &registry,
            "posmon_fleet_region_terminals",
            "Known terminals by region and payment readiness.",
            &["region", "readiness"],
        )?;
        let terminals_by_model = gauges(
            &registry,
            "posmon_fleet_model_terminals",
            "Known terminals by model and payment readiness.",
            &["model", "readiness"],
        )?;
        let findings_open = gauges(
            &registry,
            "posmon_findings_open",
            "Open findings (not suppressed) by code, category, severity and responsible party.",
            &["code", "category", "severity", "party"],
        )?;
        let findings_open_by_region = gauges(
            &registry,
            "posmon_findings_region_open",
            "Open findings (not suppressed) by region and category.",
            &["region", "category"],
        )?;
        let findings_open_by_model = gauges(
            &registry,
            "posmon_findings_model_open",
            "Open findings (not suppressed) by model and category.",
            &["model", "category"],
        )?;
        let findings_suppressed = register(
            &registry,
            IntGauge::new(
                "posmon_findings_suppressed",
                "Open terminal findings explained (suppressed) by a fleet-wide finding.",
            ),
        )?;
        // Region × model × carrier: only the combinations terminals have are exported, each
        // label bounded by `max_label_values`; for dashboards filtering by all three at once.
        let terminals_by_segment = gauges(
            &registry,
            "posmon_fleet_segment_terminals",
            "Known terminals by region, model, carrier and payment readiness.",
            &["region", "model", "carrier", "readiness"],
        )?;
        let findings_open_by_segment = gauges(
            &registry,
            "posmon_findings_segment_open",
            "Open findings of terminals (not suppressed) by region, model, carrier, code, category and responsible party.",
            &["region", "model", "carrier", "code", "category", "party"],
        )?;
        let versions = gauges(
            &registry,
            "posmon_versions_terminals",
            "Terminals reporting a software component, by model, component and compliance with the version policy (current, behind, outdated).",
            &["model", "component", "compliance"],
        )?;
        let data_usage_bytes = gauges(
            &registry,
            "posmon_fleet_data_usage_bytes",
            "The agents' own traffic this calendar month (UTC) as their latest reports tell, summed over the fleet, by kind (report, probe, other).",
            &["kind"],
        )?;
        let data_usage_terminals = gauges(
            &registry,
            "posmon_fleet_data_usage_terminals",
            "Terminals whose latest report tells this month's data usage, by state: reporting (all of them), near_budget (projected month at 80 % of the budget or more, or stretching), stretched (stretching their intervals to stay within the budget).",
            &["state"],
        )?;
        let data_budget_terminals = gauges(
            &registry,
            "posmon_fleet_data_budget_terminals",
            "Terminals reporting this month's data usage, by their month projected at its pace so far in percent of their budget (under_50, 50_to_80, 80_to_100, over_100, no_budget).",
            &["projected"],
        )?;
        let per_terminal = if per_terminal_series {
            Some(PerTerminal {
                last_report: register(
                    &registry,
                    GaugeVec::new(
                        Opts::new(
                            "posmon_terminal_last_report_timestamp_seconds",
                            "Collector time of the terminal's latest report (per-terminal series: a cardinality risk).",
                        ),
                        &["terminal_id"],
                    ),
                )?,
                open_findings: register(
                    &registry,
                    IntGaugeVec::new(
                        Opts::new(
                            "posmon_terminal_open_findings",
                            "Open findings of the terminal (per-terminal series: a cardinality risk).",
                        ),
                        &["terminal_id"],
                    ),
                )?,
            })
        } else {
            None
        };
        for reason in Reason::ALL {
            rejected_requests.with_label_values(&[reason.as_str()]);
        }
        for result in ["applied", "duplicate"] {
            reports.with_label_values(&[result]);
        }
        for change in Change::ALL {
            finding_events.with_label_values(&[change.as_str()]);
        }
        let alert_notifications = register(
            &registry,
            IntCounterVec::new(
                Opts::new(
                    "posmon_alert_notifications_total",
                    "Alert notification delivery outcomes, by receiver and result (delivered, retried, failed, expired).",
                ),
                &["receiver", "result"],
            ),
        )?;
        let alert_outbox_pending = register(
            &registry,
            IntGauge::new(
                "posmon_alert_outbox_pending",
                "Alert notifications queued and not yet delivered, failed or expired.",
            ),
        )?;
        let alert_delivery_latency = register(
            &registry,
            HistogramVec::new(
                HistogramOpts::new(
                    "posmon_alert_delivery_latency_seconds",
                    "Time from queueing an alert notification to its delivery, by receiver.",
                )
                .buckets(prometheus::exponential_buckets(0.01, 4.0, 10)?),
                &["receiver"],
            ),
        )?;
        let connections_open = register(
            &registry,
            IntGauge::new(
                "posmon_http_connections_open",
                "Client connections open now.",
            ),
        )?;
        let connections_refused = register(
            &registry,
            IntCounter::new(
                "posmon_http_connections_refused_total",
                "Connections accepted and closed at once because limits.max_connections were open.",
            ),
        )?;
        let connections_closed = register(
            &registry,
            IntCounterVec::new(
                Opts::new(
                    "posmon_http_connections_closed_total",
                    "Connections the collector closed itself, by reason (header_timeout, idle_timeout, tls_handshake_timeout, tls_handshake_failed).",
                ),
                &["reason"],
            ),
        )?;
        for reason in crate::http::listener::Closed::ALL {
            connections_closed.with_label_values(&[reason.as_str()]);
        }
        let datagrams = crate::datagram::DatagramMetrics::register(&registry)?;
        let control = crate::control::ControlMetrics {
            waiting: register(
                &registry,
                IntGauge::new(
                    "posmon_control_waiting",
                    "Control long-polls of agents held now.",
                ),
            )?,
            probe_requests: register(
                &registry,
                IntCounter::new(
                    "posmon_probe_requests_total",
                    "Probe requests made (one per terminal asked).",
                ),
            )?,
        };
        let history_points = register(
            &registry,
            IntCounterVec::new(
                Opts::new(
                    "posmon_history_points_total",
                    "Report points the history writer took, by result: written, refused (a time outside the retention or more than 5 minutes ahead of the collector's clock).",
                ),
                &["result"],
            ),
        )?;
        for result in ["written", "refused"] {
            history_points.with_label_values(&[result]);
        }
        let history = crate::history::HistoryMetrics {
            dropped: register(
                &registry,
                IntCounter::new(
                    "posmon_history_dropped_messages_total",
                    "Messages for the history writer (a report request's points, a trend point, a readiness pass) dropped because its queue was full.",
                ),
            )?,
            points: history_points,
            write_failures: register(
                &registry,
                IntCounter::new(
                    "posmon_history_write_failures_total",
                    "History batches that could not be written (and are lost).",
                ),
            )?,
            write_duration: histogram(
                &registry,
                "posmon_history_write_duration_seconds",
                "Time to write one batch of history.",
                prometheus::exponential_buckets(0.0005, 4.0, 8)?,
            )?,
            pruned_rows: register(
                &registry,
                IntCounter::new(
                    "posmon_history_pruned_rows_total",
                    "History rows deleted as past their retention.",
                ),
            )?,
            damaged_rows: register(
                &registry,
                IntCounter::new(
                    "posmon_history_damaged_rows_total",
                    "Stored history rows of the wrong shape, read as far as they went.",
                ),
            )?,
            remote_write: crate::history::remote_write::RemoteWriteMetrics {
                samples: register(
                    &registry,
                    IntCounterVec::new(
                        Opts::new(
                            "posmon_history_remote_write_samples_total",
                            "Samples for remote write by result: sent, failed (refused by the receiver or out of retries), dropped (queue full).",
                        ),
                        &["result"],
                    ),
                )?,
            },
        };
        let config_terminals = gauges(
            &registry,
            "posmon_config_terminals",
            "Terminals that report their settings state, by state: running (their effective settings version), rejected (refused it), pending (neither yet).",
            &["state"],
        )?;
        Ok(Metrics {
            control,
            history,
            config_terminals,
            datagrams,
            connections_open,
            connections_refused,
            connections_closed,
            registry,
            alert_notifications,
            alert_outbox_pending,
            alert_delivery_latency,
            reports,
            agent_dropped_reports,
            rejected_requests,
            request_duration,
            diagnosis_duration,
            evaluation_duration,
            finding_events,
            probe_latency,
            persist_duration,
            persisted_terminals,
            persist_failures,
            sequence_resets,
            unreadable_rows,
            enroll_redemptions,
            history_findings,
            history_quota_dropped,
            capped_signals,
            interned_strings,
            terminals,
            terminals_by_region,
            terminals_by_model,
            findings_open,
            findings_open_by_region,
            findings_open_by_model,
            findings_suppressed,
            terminals_by_segment,
            findings_open_by_segment,
            versions,
            data_usage_bytes,
            data_usage_terminals,
            data_budget_terminals,
            regions: BoundedValues::new(max_label_values, max_label_values_per_terminal),
            carriers: BoundedValues::new(max_label_values, max_label_values_per_terminal),
            models: BoundedValues::new(max_label_values, max_label_values_per_terminal),
            targets: BoundedValues::new(max_label_values, max_label_values_per_terminal),
            per_terminal,
        })
    }

    /// Records one connect latency a terminal reported towards a target.
    pub fn observe_latency(&self, terminal_id: &str, target: &str, milliseconds: f64) {
        self.probe_latency
            .with_label_values(&[&self.targets.value(terminal_id, Some(target))])
            .observe(milliseconds / 1000.0);
    }

    /// Refreshes the fleet gauges from the fleet state and encodes every metric in the
    /// Prometheus text format.
    pub fn render(&self, fleet: &Fleet, roles: &PaymentRoles) -> Result<String, prometheus::Error> {
        self.refresh_fleet(fleet, roles);
        let mut buffer = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut buffer)?;
        String::from_utf8(buffer).map_err(|error| prometheus::Error::Msg(error.to_string()))
    }

    /// Sets `posmon_config_terminals{state}` from a tally of the fleet's settings states.
    pub fn set_config_terminals(&self, tally: &crate::control::Tally) {
        let gauge = |value: u64| i64::try_from(value).unwrap_or(i64::MAX);
        for (state, count) in [
            ("running", tally.running),
            ("rejected", tally.rejected),
            ("pending", tally.pending),
        ] {
            self.config_terminals
                .with_label_values(&[state])
                .set(gauge(count));
        }
    }

    /// Every series of the data usage gauges, at 0 when nothing is counted.
    fn set_data_usage(&self, usage: &FleetUsage) {
        let gauge = |value: u64| i64::try_from(value).unwrap_or(i64::MAX);
        for (kind, bytes) in [
            ("report", usage.report_bytes),
            ("probe", usage.probe_bytes),
            ("other", usage.other_bytes),
        ] {
            self.data_usage_bytes
                .with_label_values(&[kind])
                .set(gauge(bytes));
        }
        for (state, count) in [
            ("reporting", usage.terminals_reporting),
            ("near_budget", usage.near_budget),
            ("stretched", usage.stretched),
        ] {
            self.data_usage_terminals
                .with_label_values(&[state])
                .set(gauge(count));
        }
        for bucket in PROJECTED_BUCKETS {
            let count = usage.projected.get(bucket).copied().unwrap_or(0);
            self.data_budget_terminals
                .with_label_values(&[bucket])
                .set(gauge(count));
        }
    }

    fn refresh_fleet(&self, fleet: &Fleet, roles: &PaymentRoles) {
        let mut by_status: HashMap<&'static str, i64> = HashMap::new();
        let mut by_region: HashMap<(String, &'static str), i64> = HashMap::new();
        let mut by_model: HashMap<(String, &'static str), i64> = HashMap::new();
        let mut findings: HashMap<(&'static str, Severity), i64> = HashMap::new();
        let mut findings_by_region: HashMap<(String, &'static str), i64> = HashMap::new();
        let mut findings_by_model: HashMap<(String, &'static str), i64> = HashMap::new();
        let mut suppressed = 0;
        let mut by_segment: HashMap<[String; 4], i64> = HashMap::new();
        let mut findings_by_segment: HashMap<[String; 6], i64> = HashMap::new();
        let mut versions: HashMap<[String; 3], i64> = HashMap::new();
        let now = time::OffsetDateTime::now_utc();
        let mut data_usage = FleetUsage::new(now);
        if let Some(per_terminal) = &self.per_terminal {
            per_terminal.last_report.reset();
            per_terminal.open_findings.reset();
        }
        fleet.for_each_terminal(|terminal| {
            let status = terminal.readiness(roles).as_str();
            let region = self
                .regions
                .value(&terminal.id, terminal.labels.region.as_deref());
            let model = self
                .models
                .value(&terminal.id, terminal.labels.model.as_deref());
            *by_status.entry(status).or_default() += 1;
            data_usage.add(terminal.data_usage.as_ref());
            *by_region.entry((region.clone(), status)).or_default() += 1;
            *by_model.entry((model.clone(), status)).or_default() += 1;
            let carrier = self
                .carriers
                .value(&terminal.id, terminal.labels.carrier.as_deref());
            let segment = [region.clone(), model.clone(), carrier.clone()];
            *by_segment
                .entry([
                    region.clone(),
                    model.clone(),
                    carrier.clone(),
                    status.to_string(),
                ])
                .or_default() += 1;
            for (component, _) in &terminal.versions {
                if let Some(component) = KNOWN_COMPONENTS.iter().find(|c| **c == &**component) {
                    let compliance = Compliance::of(terminal, component).as_str();
                    *versions
                        .entry([model.clone(), component.to_string(), compliance.to_string()])
                        .or_default() += 1;
                }
            }
            for finding in terminal.findings.findings() {
                if finding.suppressed_by.is_some() {
                    suppressed += 1;
                    continue;
                }
                let kind = finding.kind;
                let [segment_region, segment_model, segment_carrier] = segment.clone();
                *findings_by_segment
                    .entry([
                        segment_region,
                        segment_model,
                        segment_carrier,
                        kind.code.to_string(),
                        kind.category.as_str().to_string(),
                        kind.party.as_str().to_string(),
                    ])
                    .or_default() += 1;
                let category = finding.kind.category.as_str();
                *findings
                    .entry((finding.kind.code, finding.severity))
                    .or_default() += 1;
                *findings_by_region
                    .entry((region.clone(), category))
                    .or_default() += 1;
                *findings_by_model
                    .entry((model.clone(), category))
                    .or_default() += 1;
            }
            if let Some(per_terminal) = &self.per_terminal {
                per_terminal
                    .last_report
                    .with_label_values(&[&*terminal.id])
                    .set(terminal.last_seen.unix_timestamp() as f64);
                per_terminal
                    .open_findings
                    .with_label_values(&[&*terminal.id])
                    .set(terminal.visible_findings().count() as i64);
            }
        });
        for finding in fleet.fleet_wide_findings() {
            *findings
                .entry((finding.kind.code, finding.severity))
                .or_default() += 1;
        }
        for status in Readiness::ALL {
            self.terminals
                .with_label_values(&[status.as_str()])
                .set(by_status.get(status.as_str()).copied().unwrap_or(0));
        }
        for (gauge, counts) in [
            (&self.terminals_by_region, by_region),
            (&self.terminals_by_model, by_model),
            (&self.findings_open_by_region, findings_by_region),
            (&self.findings_open_by_model, findings_by_model),
        ] {
            gauge.reset();
            for ((value, second), count) in counts {
                gauge
                    .with_label_values(&[value.as_str(), second])
                    .set(count);
            }
        }
        // Every known code is exported, at 0 when nothing is open, so that alert rules and
        // dashboards see the series before the first problem.
        for kind in all_kinds() {
            for severity in Severity::ALL {
                self.findings_open
                    .with_label_values(&[
                        kind.code,
                        kind.category.as_str(),
                        severity.as_str(),
                        kind.party.as_str(),
                    ])
                    .set(findings.get(&(kind.code, severity)).copied().unwrap_or(0));
            }
        }
        set_all(&self.terminals_by_segment, by_segment);
        set_all(&self.findings_open_by_segment, findings_by_segment);
        set_all(&self.versions, versions);
        self.findings_suppressed.set(suppressed);
        self.set_data_usage(&data_usage);
        self.history_findings.set(fleet.history_len() as i64);
        // The fleet counts; these counters follow it.
        for (counter, total) in [
            (
                &self.history_quota_dropped,
                fleet.history_dropped_for_quota(),
            ),
            (&self.capped_signals, fleet.capped_signals()),
        ] {
            counter.inc_by(total.saturating_sub(counter.get()));
        }
        self.interned_strings
            .set(i64::try_from(fleet.interned_strings()).unwrap_or(i64::MAX));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_terminal_brings_in_a_few_label_values_and_no_more() {
        // (label values in all, per terminal, (terminal, value, exported) in order)
        type Case = (
            usize,
            usize,
            &'static [(&'static str, Option<&'static str>, &'static str)],
        );
        let cases: &[Case] = &[
            // The fleet shares values: a value once admitted is free for everyone.
            (
                10,
                2,
                &[
                    ("T-1", Some("pay"), "pay"),
                    ("T-2", Some("pay"), "pay"),
                    ("T-3", Some("tms"), "tms"),
                    ("T-1", Some("tms"), "tms"),
                    ("T-1", Some("dns"), "dns"),
                    ("T-1", Some("pay"), "pay"),
                    ("T-4", None, "unknown"),
                ],
            ),
            // A terminal inventing names spends its own slots, then gets "other"; the others
            // still bring in theirs.
            (
                10,
                2,
                &[
                    ("evil", Some("x1"), "x1"),
                    ("evil", Some("x2"), "x2"),
                    ("evil", Some("x3"), "other"),
                    ("evil", Some("x4"), "other"),
                    ("T-1", Some("pay"), "pay"),
                    ("T-2", Some("tms"), "tms"),
                    ("evil", Some("pay"), "pay"),
                    ("evil", Some("x1"), "x1"),
                ],
            ),
            // The total still bounds all.
            (
                2,
                5,
                &[
                    ("T-1", Some("a"), "a"),
                    ("T-2", Some("b"), "b"),
                    ("T-3", Some("c"), "other"),
                    ("T-1", Some("b"), "b"),
                ],
            ),
        ];
        for (limit, per_terminal, steps) in cases {
            let values = BoundedValues::new(*limit, *per_terminal);
            for (terminal, value, exported) in *steps {
                assert_eq!(
                    values.value(terminal, *value),
                    *exported,
                    "{terminal} {value:?} in {steps:?}"
                );
            }
            let admitted = values.admitted.read().unwrap();
            assert!(admitted.values.len() <= *limit);
            assert!(admitted.claims.len() <= *limit);
        }
    }

    #[test]
    fn a_terminal_with_200_target_names_leaves_the_fleets_targets_alone() {
        let metrics = Metrics::with_label_bounds(false, 20, 8).unwrap();
        for index in 0..200 {
            metrics.observe_latency("evil", &format!("target-{index}"), 10.0);
        }
        for terminal in 0..1000 {
            for target in ["payment-host", "tms", "dns-check"] {
                metrics.observe_latency(&format!("T-{terminal}"), target, 20.0);
            }
        }
        let text = metrics
            .render(&Fleet::new(10, 10), &PaymentRoles::default())
            .unwrap();
        for target in ["payment-host", "tms", "dns-check", "target-7", "other"] {
            assert!(
                text.contains(&format!(
                    "posmon_probe_latency_seconds_count{{target=\"{target}\"}}"
                )),
                "{target} missing:\n{text}"
            );
        }
        assert!(!text.contains("target=\"target-8\""));
    }

    #[test]
    fn the_fleets_data_usage_is_exported_without_per_terminal_series() {
        let now = time::OffsetDateTime::now_utc();
        let month = crate::data_usage::month_of(now);
        let fleet = Fleet::new(10, 10);
        for (terminal, bytes, stretch_percent) in [("T-1", 1000, 100), ("T-2", 3000, 250)] {
            let mut report = posmon_diagnosis::test_support::healthy_report();
            report.terminal_id = terminal.into();
            report.data_usage = Some(posmon_protocol::DataUsage {
                month,
                report_bytes: bytes,
                probe_bytes: 10,
                other_bytes: 1,
                budget_bytes: Some(10 << 20),
                stretch_percent,
            });
            fleet.apply_batch(
                terminal,
                vec![(report, Vec::new())],
                now,
                &Default::default(),
            );
        }
        let metrics = Metrics::new(false, 10).unwrap();
        let text = metrics.render(&fleet, &PaymentRoles::default()).unwrap();
        for line in [
            "posmon_fleet_data_usage_bytes{kind=\"report\"} 4000",
            "posmon_fleet_data_usage_bytes{kind=\"probe\"} 20",
            "posmon_fleet_data_usage_bytes{kind=\"other\"} 2",
            "posmon_fleet_data_usage_terminals{state=\"reporting\"} 2",
            "posmon_fleet_data_usage_terminals{state=\"near_budget\"} 1",
            "posmon_fleet_data_usage_terminals{state=\"stretched\"} 1",
            "posmon_fleet_data_budget_terminals{projected=\"under_50\"} 2",
            "posmon_fleet_data_budget_terminals{projected=\"over_100\"} 0",
        ] {
            assert!(text.contains(line), "{line} missing:\n{text}");
        }
        assert!(!text.contains("T-1"), "no per-terminal series");
    }
}
