//! Fleet state: every terminal the collector has heard from, its latest report, its open
//! findings, and the history of closed findings. Pure data: no IO, no locking (the HTTP layer
//! holds the lock), no clock (callers pass the time).

use std::collections::{BTreeMap, VecDeque};

use posmon_protocol::{Labels, Report};
use serde::Serialize;
use time::OffsetDateTime;

use crate::diagnose::{Severity, Signal};
use crate::findings::{reconcile, Finding};

/// A terminal's overall state, from its worst open finding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Ok,
    Warning,
    Critical,
}

impl Status {
    pub const ALL: [Status; 3] = [Status::Ok, Status::Warning, Status::Critical];

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Warning => "warning",
            Status::Critical => "critical",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Terminal {
    pub id: String,
    pub highest_sequence: u64,
    /// Collector time of the first and of the latest accepted report.
    pub first_seen: OffsetDateTime,
    pub last_seen: OffsetDateTime,
    pub last_report: Report,
    pub open_findings: Vec<Finding>,
}

impl Terminal {
    pub fn labels(&self) -> &Labels {
        &self.last_report.labels
    }

    pub fn status(&self) -> Status {
        match self
            .open_findings
            .iter()
            .map(|finding| finding.severity)
            .max()
        {
            None => Status::Ok,
            Some(Severity::Warning) => Status::Warning,
            Some(Severity::Critical) => Status::Critical,
        }
    }
}

/// What applying a report did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// The sequence number was not above the highest held: acknowledged, not applied again.
    Duplicate,
    Applied {
        opened: usize,
        closed: usize,
    },
}

#[derive(Debug)]
pub struct Fleet {
    terminals: BTreeMap<String, Terminal>,
    /// Closed findings, oldest first, at most `history_limit`.
    history: VecDeque<Finding>,
    history_limit: usize,
    next_finding_id: u64,
}

impl Fleet {
    pub fn new(history_limit: usize) -> Self {
        Fleet {
            terminals: BTreeMap::new(),
            history: VecDeque::new(),
            history_limit,
            next_finding_id: 0,
        }
    }

    /// The highest sequence number held for a terminal; 0 for an unknown one.
    pub fn highest_sequence(&self, terminal_id: &str) -> u64 {
        self.terminals
            .get(terminal_id)
            .map_or(0, |terminal| terminal.highest_sequence)
    }

    /// Applies a validated report and the signals diagnosis found in it, received at
    /// `received_at` (collector time).
    pub fn apply(
        &mut self,
        report: Report,
        signals: Vec<Signal>,
        received_at: OffsetDateTime,
    ) -> Applied {
        if report.sequence <= self.highest_sequence(&report.terminal_id) {
            return Applied::Duplicate;
        }
        let observed_at = report.observed_at;
        let terminal = self
            .terminals
            .entry(report.terminal_id.clone())
            .or_insert_with(|| Terminal {
                id: report.terminal_id.clone(),
                highest_sequence: 0,
                first_seen: received_at,
                last_seen: received_at,
                last_report: report.clone(),
                open_findings: Vec::new(),
            });
        terminal.highest_sequence = report.sequence;
        terminal.last_seen = received_at;
        terminal.last_report = report;
        let changes = reconcile(
            &terminal.id,
            &mut terminal.open_findings,
            signals,
            observed_at,
            &mut self.next_finding_id,
        );
        let outcome = Applied::Applied {
            opened: changes.opened.len(),
            closed: changes.closed.len(),
        };
        for finding in changes.closed {
            if self.history.len() >= self.history_limit {
                self.history.pop_front();
            }
            self.history.push_back(finding);
        }
        outcome
    }

    pub fn terminal(&self, terminal_id: &str) -> Option<&Terminal> {
        self.terminals.get(terminal_id)
    }

    /// Every terminal, ordered by id.
    pub fn terminals(&self) -> impl Iterator<Item = &Terminal> {
        self.terminals.values()
    }

    pub fn len(&self) -> usize {
        self.terminals.len()
    }

    pub fn is_empty(&self) -> bool {
        self.terminals.is_empty()
    }

    /// Closed findings of one terminal, newest first.
    pub fn history_of<'a>(
        &'a self,
        terminal_id: &'a str,
    ) -> impl Iterator<Item = &'a Finding> + 'a {
        self.history
            .iter()
            .rev()
            .filter(move |finding| finding.terminal_id == terminal_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diagnose::rules::network_path::HOST_UNREACHABLE;
    use crate::diagnose::test_support::healthy_report;
    use time::macros::datetime;

    fn report(sequence: u64) -> Report {
        let mut report = healthy_report();
        report.sequence = sequence;
        report
    }

    fn down() -> Vec<Signal> {
        vec![Signal {
            kind: &HOST_UNREACHABLE,
            severity: Severity::Critical,
            subject: "pay".into(),
            evidence: vec![],
        }]
    }

    #[test]
    fn a_repeated_sequence_is_not_applied_twice() {
        let now = datetime!(2026-11-26 02:00 UTC);
        let mut fleet = Fleet::new(10);
        assert_eq!(
            fleet.apply(report(5), down(), now),
            Applied::Applied {
                opened: 1,
                closed: 0
            }
        );
        assert_eq!(fleet.apply(report(5), vec![], now), Applied::Duplicate);
        assert_eq!(fleet.apply(report(4), vec![], now), Applied::Duplicate);
        assert_eq!(fleet.highest_sequence("T-1"), 5);
        assert_eq!(
            fleet.terminal("T-1").map(Terminal::status),
            Some(Status::Critical)
        );
        assert_eq!(
            fleet.apply(report(6), vec![], now),
            Applied::Applied {
                opened: 0,
                closed: 1
            }
        );
        assert_eq!(
            fleet.terminal("T-1").map(Terminal::status),
            Some(Status::Ok)
        );
        assert_eq!(fleet.history_of("T-1").count(), 1);
    }

    #[test]
    fn history_is_bounded() {
        let now = datetime!(2026-11-26 02:00 UTC);
        let mut fleet = Fleet::new(2);
        for sequence in 1..=10 {
            let signals = if sequence % 2 == 1 { down() } else { vec![] };
            fleet.apply(report(sequence), signals, now);
        }
        assert_eq!(fleet.history_of("T-1").count(), 2);
    }
}
