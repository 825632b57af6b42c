//! The JSON shapes of the read API, converted from the domain types at the edge.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;
use time::OffsetDateTime;

use crate::data_usage::UsageView;
use crate::device::DeviceSummary;
use crate::fleet::{TargetState, Terminal, TerminalLabels, LADDER};
use crate::workflow::ProblemState;
use posmon_diagnosis::findings::Finding;
use posmon_diagnosis::readiness::{PaymentRoles, Readiness};
use posmon_diagnosis::{Category, Evidence, Party, Severity, Text};

#[derive(Serialize)]
pub struct FindingView<'a> {
    id: u64,
    #[serde(skip_serializing_if = "str::is_empty")]
    terminal_id: &'a str,
    code: &'static str,
    category: Category,
    severity: Severity,
    party: Party,
    subject: &'a str,
    title: Text,
    remediation: Text,
    evidence: &'a [Evidence],
    #[serde(with = "time::serde::rfc3339")]
    since: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    last_seen: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    closed_at: Option<OffsetDateTime>,
    #[serde(skip_serializing_if = "Option::is_none")]
    suppressed_by: Option<u64>,
    /// Fleet-wide findings: the terminal findings it explains.
    #[serde(skip_serializing_if = "Option::is_none")]
    explains: Option<u32>,
    /// What the operations team did about it (the problem workflow), while open.
    #[serde(skip_serializing_if = "Option::is_none")]
    workflow: Option<ProblemState>,
}

impl FindingView<'_> {
    /// With the workflow state `states` hold for it, if it is open.
    pub fn with_workflow(mut self, states: &HashMap<u64, ProblemState>) -> Self {
        if self.closed_at.is_none() {
            self.workflow = states.get(&self.id).cloned();
        }
        self
    }
}

impl<'a> From<&'a Finding> for FindingView<'a> {
    fn from(finding: &'a Finding) -> Self {
        FindingView {
            id: finding.id,
            terminal_id: &finding.terminal_id,
            code: finding.kind.code,
            category: finding.kind.category,
            severity: finding.severity,
            party: finding.kind.party,
            subject: &finding.subject,
            title: finding.kind.title,
            remediation: finding.kind.remediation,
            evidence: &finding.evidence,
            since: finding.since,
            last_seen: finding.last_seen,
            closed_at: finding.closed_at,
            suppressed_by: finding.suppressed_by,
            explains: (finding.kind.category == Category::Upstream).then_some(finding.explains),
            workflow: None,
        }
    }
}

/// Labels as the protocol writes them: the well-known ones (with the network the agent measured,
/// which picks the party of a DNS failure) and `extra` as an object.
#[derive(Serialize)]
pub struct LabelsView<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    merchant: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    model: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    region: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    carrier: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    gateway: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    resolver: Option<&'a str>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    extra: BTreeMap<&'a str, &'a str>,
}

impl<'a> From<&'a TerminalLabels> for LabelsView<'a> {
    fn from(labels: &'a TerminalLabels) -> Self {
        LabelsView {
            merchant: labels.merchant.as_deref(),
            model: labels.model.as_deref(),
            region: labels.region.as_deref(),
            carrier: labels.carrier.as_deref(),
            gateway: labels.gateway.as_deref(),
            resolver: labels.resolver.as_deref(),
            extra: labels.extra.iter().map(|(k, v)| (&**k, &**v)).collect(),
        }
    }
}

#[derive(Serialize)]
pub struct TerminalSummary<'a> {
    terminal_id: &'a str,
    /// Whether it can take payments: the headline.
    readiness: Readiness,
    labels: LabelsView<'a>,
    agent_version: &'a str,
    sequence: u64,
    /// Open findings not explained by a fleet-wide one.
    open_findings: usize,
    /// Reports the agent dropped before delivery (its spool was full, or they were refused).
    dropped_reports: u64,
    #[serde(with = "time::serde::rfc3339")]
    observed_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    first_seen: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    last_seen: OffsetDateTime,
    /// The agent instance the sequences come from (absent for agents that send none).
    #[serde(skip_serializing_if = "Option::is_none")]
    agent_instance: Option<&'a str>,
    /// How often a new agent instance started the sequences anew (a wiped or re-installed
    /// agent), and when last (collector time).
    #[serde(skip_serializing_if = "is_zero")]
    sequence_resets: u64,
    #[serde(
        skip_serializing_if = "Option::is_none",
        with = "time::serde::rfc3339::option"
    )]
    last_sequence_reset_at: Option<OffsetDateTime>,
    /// The agent's data use this month against its budget (absent for agents that send none).
    #[serde(skip_serializing_if = "Option::is_none")]
    data_usage: Option<UsageView>,
    /// The schedule the agent announced (stretched by its data budget, if it is): what its
    /// silence is judged by. Absent for agents that announce none.
    #[serde(skip_serializing_if = "Option::is_none")]
    intervals: Option<posmon_protocol::Intervals>,
}

fn is_zero(value: &u64) -> bool {
    *value == 0
}

impl<'a> TerminalSummary<'a> {
    /// The summary at `now` (collector time: the data usage's month and projection).
    pub fn new(terminal: &'a Terminal, roles: &PaymentRoles, now: OffsetDateTime) -> Self {
        TerminalSummary {
            terminal_id: &terminal.id,
            readiness: terminal.readiness(roles),
            labels: LabelsView::from(&terminal.labels),
            agent_version: &terminal.agent_version,
            sequence: terminal.highest_sequence,
            open_findings: terminal.visible_findings().count(),
            dropped_reports: terminal.dropped_reports,
            observed_at: terminal.observed_at,
            first_seen: terminal.first_seen,
            last_seen: terminal.last_seen,
            agent_instance: terminal.agent_instance.as_deref(),
            sequence_resets: terminal.sequence_resets,
            last_sequence_reset_at: terminal.last_sequence_reset_at,
            data_usage: terminal
                .data_usage
                .as_ref()
                .map(|usage| UsageView::new(usage, now)),
            intervals: terminal.intervals,
        }
    }
}

/// The path to one target: its latest state and the latency series for charts.
#[derive(Serialize)]
pub struct TargetView<'a> {
    target: &'a str,
    address: &'a str,
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    failed_stage: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'static str>,
    /// The rungs probed, from the terminal outwards: `ok`, `failed` or `not_reached`.
    rungs: Vec<RungView>,
    /// `[unix_seconds, milliseconds]` pairs, oldest first (terminal time).
    latency_ms: Vec<(i64, f32)>,
}

#[derive(Serialize)]
pub struct RungView {
    stage: &'static str,
    status: &'static str,
}

/// The probed rungs in ladder order: those before the failing one worked, those after it
/// were not reached.
fn rungs(target: &TargetState) -> Vec<RungView> {
    let failed = target
        .failed_stage
        .and_then(|stage| LADDER.iter().position(|rung| *rung == stage));
    LADDER
        .iter()
        .enumerate()
        .filter(|(position, _)| target.rungs & (1 << position) != 0 || Some(*position) == failed)
        .map(|(position, stage)| RungView {
            stage: stage.as_str(),
            status: match failed {
                Some(at) if position == at => "failed",
                Some(at) if position > at => "not_reached",
                _ => "ok",
            },
        })
        .collect()
}

impl<'a> From<&'a TargetState> for TargetView<'a> {
    fn from(target: &'a TargetState) -> Self {
        TargetView {
            target: &target.name,
            address: &target.address,
            status: if target.failed_stage.is_some() {
                "failed"
            } else {
                "ok"
            },
            failed_stage: target.failed_stage.map(|stage| stage.as_str()),
            error: target.error.map(|error| error.as_str()),
            rungs: rungs(target),
            latency_ms: target
                .latency
                .iter()
                .map(|point| (point.0, point.1))
                .collect(),
        }
    }
}

#[derive(Serialize)]
pub struct TerminalDetail<'a> {
    #[serde(flatten)]
    pub summary: TerminalSummary<'a>,
    /// Every open finding, suppressed ones included (with `suppressed_by`).
    pub open_findings: Vec<FindingView<'a>>,
    pub findings_history: Vec<FindingView<'a>>,
    pub versions: BTreeMap<&'a str, &'a str>,
    pub targets: Vec<TargetView<'a>>,
    /// Device health from the newest report that carried it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device: Option<&'a DeviceSummary>,
}

impl<'a> TerminalDetail<'a> {
    pub fn new(
        terminal: &'a Terminal,
        history: &'a [Finding],
        roles: &PaymentRoles,
        problems: &HashMap<u64, ProblemState>,
        now: OffsetDateTime,
    ) -> Self {
        TerminalDetail {
            summary: TerminalSummary::new(terminal, roles, now),
            open_findings: terminal
                .findings
                .findings()
                .map(|finding| FindingView::from(finding).with_workflow(problems))
                .collect(),
            findings_history: history.iter().map(FindingView::from).collect(),
            versions: terminal
                .versions
                .iter()
                .map(|(component, version)| (&**component, &**version))
                .collect(),
            targets: terminal.targets.iter().map(TargetView::from).collect(),
            device: terminal.device.as_deref(),
        }
    }
}
