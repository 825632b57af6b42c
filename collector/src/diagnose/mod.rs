//! Diagnosis: from one terminal's latest report to the signals of what is wrong with it.
//!
//! This module does no IO and keeps no state: every rule is a pure function of a report and the
//! policy, so rules are tested with plain data. Turning signals into findings that open and close
//! over time is `findings.rs`'s job. A new rule is one file in `rules/` plus one line in
//! `RULES`.

pub mod rules;

use posmon_protocol::Report;
use serde::Serialize;

use crate::config::VersionRule;

/// Which kind of cause a finding belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Category {
    /// The terminal's environment: network path, hardware, device.
    Environment,
    /// Software older than the version policy allows.
    Outdated,
}

impl Category {
    pub fn as_str(self) -> &'static str {
        match self {
            Category::Environment => "environment",
            Category::Outdated => "outdated",
        }
    }
}

/// Who must act on a finding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Party {
    Merchant,
    PosVendor,
    NetworkProvider,
    SoftwareVendor,
    Acquirer,
    Operations,
}

impl Party {
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

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Warning,
    Critical,
}

impl Severity {
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

/// A kind of finding: its stable code and what to tell people about it.
#[derive(Debug, PartialEq, Eq)]
pub struct FindingKind {
    pub code: &'static str,
    pub category: Category,
    pub party: Party,
    pub title: Text,
    pub remediation: Text,
}

/// One measured value behind a signal, and the threshold it crossed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Evidence {
    pub name: String,
    pub value: String,
    #[serde(skip_serializing_if = "Option::is_none")]
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

/// "This report shows this problem": the input from which findings open and close.
#[derive(Debug, Clone, PartialEq)]
pub struct Signal {
    pub kind: &'static FindingKind,
    pub severity: Severity,
    /// What the finding is about within the terminal (a target or a component); empty when it
    /// concerns the whole terminal. One finding per (terminal, code, subject).
    pub subject: String,
    pub evidence: Vec<Evidence>,
}

/// What the rules measure against.
#[derive(Debug, Clone, Copy)]
pub struct Policy<'a> {
    pub versions: &'a [VersionRule],
}

type Rule = fn(&Report, &Policy<'_>, &mut Vec<Signal>);

/// Every rule, in the order their signals are listed.
const RULES: &[Rule] = &[rules::network_path::evaluate, rules::outdated::evaluate];

/// Runs every rule over one report.
pub fn diagnose(report: &Report, policy: &Policy<'_>) -> Vec<Signal> {
    let mut signals = Vec::new();
    for rule in RULES {
        rule(report, policy, &mut signals);
    }
    signals
}

/// Every kind of finding, for documentation and for metrics that list all codes.
pub fn all_kinds() -> impl Iterator<Item = &'static FindingKind> {
    rules::network_path::KINDS
        .iter()
        .chain(rules::outdated::KINDS.iter())
        .copied()
}

#[cfg(test)]
pub(crate) mod test_support {
    use posmon_protocol::*;
    use time::macros::datetime;

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
            };
            assert!(kind.code.starts_with(prefix), "{}", kind.code);
            assert!(!kind.title.zh_cn.is_empty() && !kind.remediation.zh_cn.is_empty());
        }
    }
}
