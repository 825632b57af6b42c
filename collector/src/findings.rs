//! Findings: signals that persist become open findings; a finding closes when a report no
//! longer shows its signal. One open finding per (terminal, code, subject).

use serde::Serialize;
use time::OffsetDateTime;

use crate::diagnose::{Category, Evidence, Party, Severity, Signal, Text};

/// A problem of one terminal, open or closed, with what to do about it and who must act.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Finding {
    pub id: u64,
    pub terminal_id: String,
    pub code: &'static str,
    pub category: Category,
    pub severity: Severity,
    pub party: Party,
    /// What within the terminal the finding is about (a target, a component); empty for the
    /// whole terminal.
    pub subject: String,
    pub title: Text,
    pub remediation: Text,
    pub evidence: Vec<Evidence>,
    /// The terminal's time of the first report that showed the problem.
    #[serde(with = "time::serde::rfc3339")]
    pub since: OffsetDateTime,
    /// The terminal's time of the latest report that showed it.
    #[serde(with = "time::serde::rfc3339")]
    pub last_seen: OffsetDateTime,
    /// The terminal's time of the first report that no longer showed it.
    #[serde(with = "time::serde::rfc3339::option")]
    pub closed_at: Option<OffsetDateTime>,
}

impl Finding {
    fn matches(&self, signal: &Signal) -> bool {
        self.code == signal.kind.code && self.subject == signal.subject
    }
}

/// The findings that opened and closed when a terminal's signals were reconciled.
#[derive(Debug, Default)]
pub struct Changes {
    pub opened: Vec<Finding>,
    pub closed: Vec<Finding>,
}

/// Brings a terminal's open findings in line with the signals of its newest report observed at
/// `observed_at`: new signals open findings (ids from `next_id`), persisting ones refresh their
/// evidence, and findings without a signal close.
pub fn reconcile(
    terminal_id: &str,
    open: &mut Vec<Finding>,
    signals: Vec<Signal>,
    observed_at: OffsetDateTime,
    next_id: &mut u64,
) -> Changes {
    let mut changes = Changes::default();
    let mut still_open = Vec::with_capacity(signals.len());
    let mut previous = std::mem::take(open);
    for signal in signals {
        if let Some(position) = previous.iter().position(|finding| finding.matches(&signal)) {
            let mut finding = previous.swap_remove(position);
            finding.severity = signal.severity;
            finding.evidence = signal.evidence;
            finding.last_seen = observed_at;
            still_open.push(finding);
        } else if !still_open
            .iter()
            .any(|finding: &Finding| finding.matches(&signal))
        {
            *next_id += 1;
            let finding = Finding {
                id: *next_id,
                terminal_id: terminal_id.to_string(),
                code: signal.kind.code,
                category: signal.kind.category,
                severity: signal.severity,
                party: signal.kind.party,
                subject: signal.subject,
                title: signal.kind.title,
                remediation: signal.kind.remediation,
                evidence: signal.evidence,
                since: observed_at,
                last_seen: observed_at,
                closed_at: None,
            };
            changes.opened.push(finding.clone());
            still_open.push(finding);
        }
    }
    for mut finding in previous {
        finding.closed_at = Some(observed_at);
        changes.closed.push(finding);
    }
    *open = still_open;
    changes
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diagnose::rules::network_path::HOST_UNREACHABLE;
    use crate::diagnose::rules::outdated::POS_APP;
    use crate::diagnose::FindingKind;
    use time::macros::datetime;

    fn signal(kind: &'static FindingKind, subject: &str) -> Signal {
        Signal {
            kind,
            severity: Severity::Critical,
            subject: subject.into(),
            evidence: vec![],
        }
    }

    #[test]
    fn findings_open_persist_and_close() {
        let mut open = Vec::new();
        let mut next_id = 0;
        let t0 = datetime!(2026-11-26 02:00 UTC);
        let t1 = datetime!(2026-11-26 02:01 UTC);
        let t2 = datetime!(2026-11-26 02:02 UTC);

        let changes = reconcile(
            "T-1",
            &mut open,
            vec![
                signal(&HOST_UNREACHABLE, "pay"),
                signal(&POS_APP, "pos_app"),
            ],
            t0,
            &mut next_id,
        );
        assert_eq!((changes.opened.len(), changes.closed.len()), (2, 0));

        let changes = reconcile(
            "T-1",
            &mut open,
            vec![signal(&POS_APP, "pos_app")],
            t1,
            &mut next_id,
        );
        assert_eq!((changes.opened.len(), changes.closed.len()), (0, 1));
        assert_eq!(changes.closed[0].code, "env.network.host_unreachable");
        assert_eq!(changes.closed[0].closed_at, Some(t1));
        assert_eq!(open.len(), 1);
        assert_eq!((open[0].since, open[0].last_seen), (t0, t1));

        let changes = reconcile(
            "T-1",
            &mut open,
            vec![signal(&HOST_UNREACHABLE, "pay")],
            t2,
            &mut next_id,
        );
        assert_eq!((changes.opened.len(), changes.closed.len()), (1, 1));
        assert_eq!(
            changes.opened[0].id, 3,
            "a reopened problem is a new finding"
        );
    }

    #[test]
    fn the_same_signal_twice_opens_one_finding() {
        let mut open = Vec::new();
        let mut next_id = 0;
        let t0 = datetime!(2026-11-26 02:00 UTC);
        let twice = vec![
            signal(&HOST_UNREACHABLE, "pay"),
            signal(&HOST_UNREACHABLE, "pay"),
        ];
        let changes = reconcile("T-1", &mut open, twice, t0, &mut next_id);
        assert_eq!(changes.opened.len(), 1);
        assert_eq!(open.len(), 1);
    }
}
