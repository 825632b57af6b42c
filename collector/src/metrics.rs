//! Every metric the collector exports, in one explicit registry.
//!
//! Naming: `posmon_<subsystem>_<name>_<unit>`, counters end in `_total`. Label values are
//! bounded: rejection reasons, statuses, codes, categories, severities and parties are closed
//! sets. Per-terminal series exist only when `metrics.per_terminal_series` is on.

use prometheus::{
    Encoder, GaugeVec, Histogram, HistogramOpts, IntCounterVec, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

use crate::diagnose::all_kinds;
use crate::fleet::{Fleet, Status};
use crate::http::error::Reason;

pub struct Metrics {
    registry: Registry,
    pub reports: IntCounterVec,
    pub rejected_requests: IntCounterVec,
    pub request_duration: Histogram,
    terminals: IntGaugeVec,
    findings_open: IntGaugeVec,
    per_terminal: Option<PerTerminal>,
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

impl Metrics {
    pub fn new(per_terminal_series: bool) -> prometheus::Result<Self> {
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
        let request_duration = register(
            &registry,
            Histogram::with_opts(
                HistogramOpts::new(
                    "posmon_ingest_request_duration_seconds",
                    "Time to decode, validate, diagnose and apply one report request.",
                )
                .buckets(prometheus::exponential_buckets(0.0001, 4.0, 8)?),
            ),
        )?;
        let terminals = register(
            &registry,
            IntGaugeVec::new(
                Opts::new("posmon_fleet_terminals", "Known terminals by status."),
                &["status"],
            ),
        )?;
        let findings_open = register(
            &registry,
            IntGaugeVec::new(
                Opts::new(
                    "posmon_findings_open",
                    "Open findings by code, category, severity and responsible party.",
                ),
                &["code", "category", "severity", "party"],
            ),
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
        Ok(Metrics {
            registry,
            reports,
            rejected_requests,
            request_duration,
            terminals,
            findings_open,
            per_terminal,
        })
    }

    /// Refreshes the fleet gauges from the fleet state and encodes every metric in the
    /// Prometheus text format.
    pub fn render(&self, fleet: &Fleet) -> Result<String, prometheus::Error> {
        self.refresh_fleet(fleet);
        let mut buffer = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut buffer)?;
        String::from_utf8(buffer).map_err(|error| prometheus::Error::Msg(error.to_string()))
    }

    fn refresh_fleet(&self, fleet: &Fleet) {
        let mut by_status = [0i64; 3];
        let mut findings = std::collections::HashMap::<(&str, &str, &str, &str), i64>::new();
        if let Some(per_terminal) = &self.per_terminal {
            per_terminal.last_report.reset();
            per_terminal.open_findings.reset();
        }
        for terminal in fleet.terminals() {
            let status = terminal.status();
            by_status[Status::ALL.iter().position(|s| *s == status).unwrap_or(0)] += 1;
            for finding in &terminal.open_findings {
                *findings
                    .entry((
                        finding.code,
                        finding.category.as_str(),
                        finding.severity.as_str(),
                        finding.party.as_str(),
                    ))
                    .or_default() += 1;
            }
            if let Some(per_terminal) = &self.per_terminal {
                per_terminal
                    .last_report
                    .with_label_values(&[terminal.id.as_str()])
                    .set(terminal.last_seen.unix_timestamp() as f64);
                per_terminal
                    .open_findings
                    .with_label_values(&[terminal.id.as_str()])
                    .set(terminal.open_findings.len() as i64);
            }
        }
        for (status, count) in Status::ALL.iter().zip(by_status) {
            self.terminals
                .with_label_values(&[status.as_str()])
                .set(count);
        }
        self.findings_open.reset();
        // Every known code is exported, at 0 when nothing is open, so that alert rules and
        // dashboards see the series before the first problem.
        for kind in all_kinds() {
            for severity in ["warning", "critical"] {
                self.findings_open
                    .with_label_values(&[
                        kind.code,
                        kind.category.as_str(),
                        severity,
                        kind.party.as_str(),
                    ])
                    .set(0);
            }
        }
        for ((code, category, severity, party), count) in findings {
            self.findings_open
                .with_label_values(&[code, category, severity, party])
                .set(count);
        }
    }
}
