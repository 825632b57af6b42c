//! What an operator does to the fleet's findings by hand: look one up by id, and close one
//! (the problem workflow's "close", `workflow/`). Closing by hand is a decision, not an
//! observation: the finding leaves the open findings at once and enters the history; a
//! problem that persists opens a new finding through the usual bad streak.
//!
//! No IO and no clock: callers pass the time.

use std::sync::Arc;

use posmon_diagnosis::findings::{Finding, FindingEvent};
use posmon_diagnosis::rules::silent::SILENT;
use time::OffsetDateTime;

use super::{lock, Fleet, Suppressions};

impl Fleet {
    /// The open finding `id`, a terminal's (on `terminal_id` when given: one shard looked at)
    /// or a fleet-wide one.
    pub fn open_finding(&self, id: u64, terminal_id: Option<&str>) -> Option<Finding> {
        if let Some(finding) = lock(&self.fleet_wide)
            .tracker
            .findings()
            .find(|finding| finding.id == id)
        {
            return Some(finding.clone());
        }
        let in_shard = |shard: &super::Shard| {
            let found = |terminal: &super::Terminal| {
                terminal
                    .findings
                    .findings()
                    .find(|finding| finding.id == id)
                    .cloned()
            };
            match terminal_id {
                Some(terminal_id) => shard.terminals.get(terminal_id).and_then(found),
                None => shard.terminals.values().find_map(found),
            }
        };
        match terminal_id {
            Some(terminal_id) => in_shard(&lock(self.shard_of(terminal_id))),
            None => self.shards.iter().find_map(|shard| in_shard(&lock(shard))),
        }
    }

    /// Whether the finding `id` of `terminal_id` (empty: a fleet-wide one) is still open.
    pub fn is_open(&self, terminal_id: &str, id: u64) -> bool {
        if terminal_id.is_empty() {
            return lock(&self.fleet_wide)
                .tracker
                .findings()
                .any(|finding| finding.id == id);
        }
        lock(self.shard_of(terminal_id))
            .terminals
            .get(terminal_id)
            .is_some_and(|terminal| terminal.findings.findings().any(|finding| finding.id == id))
    }

    /// Closes the open finding `id` of `terminal_id` (empty: a fleet-wide one) at `now`, and
    /// returns the events to publish: its closing, and for a fleet-wide finding the terminal
    /// findings it no longer explains. `None` when no such finding is open.
    pub fn close_by_hand(
        &self,
        terminal_id: &str,
        id: u64,
        now: OffsetDateTime,
    ) -> Option<Vec<FindingEvent>> {
        let mut events = Vec::new();
        if terminal_id.is_empty() {
            let _suppressing = lock(&self.suppressing);
            let suppressions = {
                let mut fleet_wide = lock(&self.fleet_wide);
                events.push(fleet_wide.tracker.close_by_hand(id, now)?);
                fleet_wide.changed = true;
                Suppressions::from_open(fleet_wide.tracker.findings())
            };
            self.enforce_suppressions(suppressions, &mut events);
        } else {
            let mut shard = lock(self.shard_of(terminal_id));
            let shard = &mut *shard;
            let terminal = shard.terminals.get_mut(terminal_id)?;
            let event = terminal.findings.close_by_hand(id, now)?;
            let silence_closed = std::ptr::eq(event.finding.kind, &SILENT);
            events.push(event);
            shard.failing.follow(&terminal.id, &events);
            shard.dirty.insert(Arc::clone(&terminal.id));
            // A silence closed by hand is looked at again from now: a terminal still silent
            // is found so once its allowed silence has passed again.
            if silence_closed {
                shard.silence.watch(terminal, now.unix_timestamp());
            }
        }
        self.record_closed(&events, None);
        Some(events)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::tests::{apply, report};
    use posmon_diagnosis::findings::Change;

    #[test]
    fn a_terminal_finding_closed_by_hand_goes_to_the_history() {
        let fleet = Fleet::new(100, 10);
        apply(
            &fleet,
            (1..=3)
                .map(|sequence| report(sequence, sequence as i64, true))
                .collect(),
            3,
        );
        let open = fleet.terminal("T-1").unwrap();
        let finding = open.findings.findings().next().unwrap().clone();
        assert_eq!(fleet.open_finding(finding.id, None), Some(finding.clone()));
        assert_eq!(
            fleet.open_finding(finding.id, Some("T-1")),
            Some(finding.clone())
        );
        assert_eq!(fleet.open_finding(finding.id, Some("T-2")), None);
        assert!(fleet.is_open("T-1", finding.id));
        let now = finding.since + time::Duration::minutes(10);
        assert!(fleet.close_by_hand("T-2", finding.id, now).is_none());
        assert!(fleet.close_by_hand("", finding.id, now).is_none());
        fleet.take_changes();
        let events = fleet.close_by_hand("T-1", finding.id, now).unwrap();
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].change, Change::Closed);
        assert_eq!(events[0].finding.closed_at, Some(now));
        assert!(!fleet.is_open("T-1", finding.id));
        assert_eq!(fleet.open_finding(finding.id, None), None);
        let history = fleet.history_of("T-1", 10);
        assert_eq!(history.len(), 1);
        assert_eq!(history[0].id, finding.id);
        // Written with the terminal's next changes.
        let changes = fleet.take_changes();
        assert!(changes.terminals.iter().any(|t| &*t.id == "T-1"));
        assert!(changes.closed.iter().any(|f| f.id == finding.id));
        assert!(fleet.close_by_hand("T-1", finding.id, now).is_none());
        // Still failing: the next reports open a new finding.
        apply(
            &fleet,
            (4..=6)
                .map(|sequence| report(sequence, sequence as i64, true))
                .collect(),
            6,
        );
        let reopened = fleet.terminal("T-1").unwrap();
        let new = reopened.findings.findings().next().unwrap();
        assert_ne!(new.id, finding.id);
    }
}
