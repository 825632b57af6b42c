//! posmon-diagnosis: from one terminal's report (or a view of the whole fleet) to the signals
//! of what is wrong, and from signals to findings that open and close with hysteresis.
//!
//! Shared by the collector and the agent. This crate does no IO (it depends on no runtime, no
//! network and no file system, which Cargo enforces) and keeps no state: every rule is a pure function of its input, the
//! policy and the time it is given, so rules are tested with plain data. Turning signals into
//! findings that open and close over time (hysteresis) is `findings.rs`'s job. A new per-report
//! rule is one file in `rules/` plus one line in `RULES` and one in `all_kinds`.

pub mod explain;
pub mod findings;
pub mod localize;
pub mod readiness;
pub mod rules;
pub mod thresholds;
pub mod version;
pub mod version_policy;

use posmon_protocol::Report;
use serde::{Deserialize, Serialize};

use crate::readiness::PaymentRoles;
use crate::thresholds::Thresholds;
use crate::version_policy::VersionRule;

/// Which kind of cause a finding belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Category {
    /// The terminal's environment: network path, hardware, device.
    Environment,
    /// Software older than the version policy allows.
    Outdated,
    /// The terminal itself stopped reporting.
    Availability,
    /// A fault outside every single terminal, seen across the fleet and localized to a scope: a
    /// host, a carrier, a model, a version, a merchant, a resolver.
    Upstream,
}

impl Category {
    pub const ALL: [Category; 4] = [
        Category::Environment,
        Category::Outdated,
        Category::Availability,
        Category::Upstream,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Category::Environment => "environment",
            Category::Outdated => "outdated",
            Category::Availability => "availability",
            Category::Upstream => "upstream",
        }
    }

    /// Whether findings of this category come from single reports (rather than from the
    /// periodic evaluation of the fleet and the clock).
    pub fn per_report(self) -> bool {
        matches!(self, Category::Environment | Category::Outdated)
    }
}

/// Who must act on a finding. A kind's party is fixed, so where the evidence names another
/// party (the host refusing rather than the path losing packets, the router's resolver rather
/// than the carrier's, the terminal's clock rather than the certificate) the rules pick another
/// kind: the party table in README ("Who must act").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Party {
    /// The shop: its link, its router (and the router's resolver).
    Merchant,
    /// The terminal's maker: hardware and firmware.
    PosVendor,
    /// The carrier or ISP: the path beyond the shop and its resolvers.
    NetworkProvider,
    /// The POS application's maker.
    SoftwareVendor,
    /// The payment host's operator.
    Acquirer,
    /// The team that runs the terminals: their clock, disk, memory and configuration.
    Operations,
}

impl Party {
    pub const ALL: [Party; 6] = [
        Party::Merchant,
        Party::PosVendor,
        Party::NetworkProvider,
        Party::SoftwareVendor,
        Party::Acquirer,
        Party::Operations,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Party::Merchant => "merchant",
            Party::PosVendor => "pos_vendor",
            Party::NetworkProvider => "network_provider",
            Party::SoftwareVendor => "software_vendor",
            Party::Acquirer => "acquirer",
            Party::Operations => "operations",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Warning,
    Critical,
}

impl Severity {
    pub const ALL: [Severity; 2] = [Severity::Warning, Severity::Critical];

    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }
}

/// User-facing text in English and Simplified Chinese.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Text {
    pub en: &'static str,
    #[serde(rename = "zh-CN")]
    pub zh_cn: &'static str,
}

/// When a finding opens and closes: after `open_after_observations` bad observations in a row
/// (or a bad streak lasting `open_after_seconds`), and after `close_after_observations` good
/// ones in a row. For fleet-wide codes an observation is one evaluation of the fleet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hysteresis {
    pub open_after_observations: u32,
    /// 0: no duration rule, only the count.
    #[serde(default)]
    pub open_after_seconds: u64,
    pub close_after_observations: u32,
}

impl Hysteresis {
    pub const fn new(open_after_observations: u32, close_after_observations: u32) -> Self {
        Hysteresis {
            open_after_observations,
            open_after_seconds: 0,
            close_after_observations,
        }
    }
}

/// A kind of finding: its stable code, what to tell people about it and its default
/// hysteresis.
#[derive(Debug, PartialEq, Eq)]
pub struct FindingKind {
    pub code: &'static str,
    pub category: Category,
    pub party: Party,
    pub title: Text,
    pub remediation: Text,
    pub hysteresis: Hysteresis,
}

/// One measured value behind a signal, and the threshold it crossed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Evidence {
    pub name: String,
    pub value: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<String>,
}

impl Evidence {
    pub fn new(name: impl Into<String>, value: impl Into<String>) -> Self {
        Evidence {
            name: name.into(),
            value: value.into(),
            threshold: None,
        }
    }

    pub fn with_threshold(mut self, threshold: impl Into<String>) -> Self {
        self.threshold = Some(threshold.into());
        self
    }
}

/// "This observation shows this problem": the input from which findings open and close.
#[derive(Debug, Clone, PartialEq)]
pub struct Signal {
    pub kind: &'static FindingKind,
    pub severity: Severity,
    /// What the finding is about (a target, a component, a sensor; for a fleet-wide finding its
    /// scope); empty when it concerns the whole terminal. One finding per (terminal, code,
    /// subject).
    pub subject: String,
    pub evidence: Vec<Evidence>,
}

/// What the rules measure against.
#[derive(Debug, Clone, Copy)]
pub struct Policy<'a> {
    pub versions: &'a [VersionRule],
    pub thresholds: &'a Thresholds,
    /// What a payment needs: whether a signal stops payments (and is critical).
    pub roles: &'a PaymentRoles,
}

type Rule = fn(&Report, &Policy<'_>, &mut Vec<Signal>);

/// Every per-report rule, in the order their signals are listed.
const RULES: &[Rule] = &[
    rules::network_path::evaluate,
    rules::high_latency::evaluate,
    rules::packet_loss::evaluate,
    rules::clock_skew::evaluate,
    rules::peripheral_missing::evaluate,
    rules::disk_full::evaluate,
    rules::memory_pressure::evaluate,
    rules::overheat::evaluate,
    rules::battery_low::evaluate,
    rules::app_not_running::evaluate,
    rules::outdated::evaluate,
];

/// Runs every per-report rule over one report.
pub fn diagnose(report: &Report, policy: &Policy<'_>) -> Vec<Signal> {
    let mut signals = Vec::new();
    for rule in RULES {
        rule(report, policy, &mut signals);
    }
    signals
}

/// Every kind of finding, in the order of the list.
static ALL_KINDS: &[&FindingKind] = &[
    &rules::network_path::LINK_DOWN,
    &rules::network_path::GATEWAY_UNREACHABLE,
    &rules::network_path::DNS_FAILURE,
    &rules::network_path::DNS_ROUTER_FAILURE,
    &rules::network_path::HOST_UNREACHABLE,
    &rules::network_path::HOST_REFUSED,
    &rules::network_path::TLS_FAILURE,
    &rules::high_latency::HIGH_LATENCY,
    &rules::packet_loss::PACKET_LOSS,
    &rules::clock_skew::CLOCK_SKEW,
    &rules::clock_skew::CLOCK_BREAKS_TLS,
    &rules::peripheral_missing::PERIPHERAL_MISSING,
    &rules::disk_full::DISK_FULL,
    &rules::memory_pressure::MEMORY_PRESSURE,
    &rules::overheat::OVERHEAT,
    &rules::battery_low::BATTERY_LOW,
    &rules::app_not_running::APP_NOT_RUNNING,
    &rules::outdated::POS_APP,
    &rules::outdated::OS,
    &rules::outdated::FIRMWARE,
    &rules::silent::SILENT,
    &rules::upstream::HOST_OUTAGE,
    &rules::upstream::CARRIER_OUTAGE,
    &rules::upstream::REGIONAL_OUTAGE,
    &rules::upstream::RESOLVER_OUTAGE,
    &rules::upstream::MODEL_FAULT,
    &rules::upstream::FIRMWARE_FAULT,
    &rules::upstream::APP_FAULT,
    &rules::upstream::MERCHANT_OUTAGE,
    &rules::upstream::GATEWAY_OUTAGE,
];

/// Every kind of finding, for documentation, metrics that list all codes, and restoring
/// findings from the database by code.
pub fn all_kinds() -> impl Iterator<Item = &'static FindingKind> {
    ALL_KINDS.iter().copied()
}

/// The kind with this code.
pub fn kind_by_code(code: &str) -> Option<&'static FindingKind> {
    all_kinds().find(|kind| kind.code == code)
}

/// Reports and tables for tests of the rules, here and in the collector (feature
/// `test-support`).
#[cfg(any(test, feature = "test-support"))]
pub mod test_support {
    use posmon_protocol::*;
    use time::macros::datetime;

    use crate::findings::Tracker;
    use crate::thresholds::Thresholds;
    use crate::version_policy::VersionRule;
    use crate::{diagnose, Policy};

    /// A healthy report to change in tests.
    pub fn healthy_report() -> Report {
        Report {
            schema_version: SCHEMA_VERSION,
            terminal_id: "T-1".into(),
            sequence: 1,
            observed_at: datetime!(2026-11-26 02:00 UTC),
            agent_version: "0.1.0".into(),
            labels: Labels::default(),
            probes: vec![ProbeResult {
                target: "payment-host".into(),
                address: "127.0.0.1:443".into(),
                stages: vec![StageResult {
                    stage: Stage::Tcp,
                    status: StageStatus::Ok,
                    error: None,
                    detail: None,
                    attempts: 1,
                    successes: 1,
                    latency_ms: None,
                    http_status: None,
                    tls_version: None,
                    certificate_days_left: None,
                }],
            }],
            software: [("pos_app".to_string(), ComponentVersion::known("2.3.1"))]
                .into_iter()
                .collect(),
            device: None,
            clock: None,
            dropped_reports: 0,
            unchanged: Vec::new(),
            agent_instance: None,
            intervals: None,
            data_usage: None,
            config: None,
            probe_request: None,
        }
    }

    /// One stage result of a probe.
    pub fn stage(stage: Stage, status: StageStatus, error: Option<ErrorKind>) -> StageResult {
        StageResult {
            stage,
            status,
            error,
            detail: None,
            attempts: 1,
            successes: u32::from(status == StageStatus::Ok),
            latency_ms: None,
            http_status: None,
            tls_version: None,
            certificate_days_left: None,
        }
    }

    /// A healthy report changed by `change`.
    pub fn with(change: impl Fn(&mut Report)) -> Report {
        let mut report = healthy_report();
        change(&mut report);
        report
    }

    /// A table row for one code: the reports that open it (in order), reports that must not
    /// open it (each case in order, from a fresh terminal), and the reports that then close
    /// it.
    pub struct CodeCase {
        pub code: &'static str,
        pub opens: Vec<Report>,
        pub must_not_open: Vec<Vec<Report>>,
        pub closes: Vec<Report>,
    }

    /// Feeds reports, one minute apart, through the real diagnosis and hysteresis with the
    /// default thresholds and `versions`, and returns the codes open after each report.
    pub fn open_codes_after(reports: &[Report], versions: &[VersionRule]) -> Vec<Vec<String>> {
        let thresholds = Thresholds::default();
        let roles = crate::readiness::PaymentRoles::default();
        let policy = Policy {
            versions,
            thresholds: &thresholds,
            roles: &roles,
        };
        let mut tracker = Tracker::default();
        let mut next_id = 0;
        let start = datetime!(2026-11-26 02:00 UTC);
        reports
            .iter()
            .enumerate()
            .map(|(index, report)| {
                let mut report = report.clone();
                report.observed_at = start + time::Duration::minutes(index as i64);
                let signals = diagnose(&report, &policy);
                tracker.observe("T-1", signals, report.observed_at, &thresholds, &mut || {
                    next_id += 1;
                    next_id
                });
                let mut codes: Vec<String> = tracker
                    .open
                    .iter()
                    .map(|open| open.finding.kind.code.to_string())
                    .collect();
                codes.sort();
                codes.dedup();
                codes
            })
            .collect()
    }

    /// Checks one code's table: it opens after exactly the `opens` reports (not before), never
    /// opens in a `must_not_open` case, and closes after exactly the `closes` reports.
    pub fn check_code(case: CodeCase, versions: &[VersionRule]) {
        let code = case.code.to_string();
        let mut sequence = case.opens.clone();
        sequence.extend(case.closes.iter().cloned());
        let after = open_codes_after(&sequence, versions);
        let opened_at = case.opens.len() - 1;
        for (index, codes) in after.iter().enumerate() {
            let expected_open = index >= opened_at && index < opened_at + case.closes.len();
            assert_eq!(
                codes.contains(&code),
                expected_open,
                "{code}: after report {index} of opens+closes the open codes are {codes:?}"
            );
        }
        for (number, reports) in case.must_not_open.iter().enumerate() {
            let after = open_codes_after(reports, versions);
            assert!(
                after.iter().all(|codes| !codes.contains(&code)),
                "{code}: case {number} must not open it, got {after:?}"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn codes_are_unique_and_well_formed() {
        let mut seen = HashSet::new();
        for kind in all_kinds() {
            assert!(seen.insert(kind.code), "duplicate code {}", kind.code);
            let prefix = match kind.category {
                Category::Environment => "env.",
                Category::Outdated => "outdated.",
                Category::Availability => "terminal.",
                Category::Upstream => "upstream.",
            };
            assert!(kind.code.starts_with(prefix), "{}", kind.code);
            assert!(!kind.title.zh_cn.is_empty() && !kind.remediation.zh_cn.is_empty());
            assert!(
                kind.hysteresis.open_after_observations >= 1,
                "{}",
                kind.code
            );
            assert!(
                kind.hysteresis.close_after_observations >= 1,
                "{}",
                kind.code
            );
            assert_eq!(kind_by_code(kind.code), Some(kind));
        }
        assert_eq!(
            seen.len(),
            30,
            "the issue names twenty codes; the party table splits three (host refused, the router's DNS, the clock breaking TLS); shared causes add seven kinds by party"
        );
    }
}
