//! The silence watch: which terminals have gone quiet, without a pass over the fleet.
//!
//! Each shard keeps a queue of deadlines (collector time, whole seconds) at which one of its
//! terminals may have become silent. An ordinary report pushes nothing: it only moves the
//! terminal's `last_seen`, and when its deadline comes the watch computes the real one from the
//! terminal's current state (its last report, its own report interval and retry cap, and when
//! the collector began listening) and either opens the silence or waits again. A terminal is in
//! the queue about once (plus an entry when it is new, back from a silence, or its schedule
//! changed), so an evaluation costs the terminals due, not the fleet.
//!
//! Silence is judged only over time the collector was listening ([`silent::silent_after`]), and
//! a backfill that proves the agent kept reporting through a silence disproves it
//! ([`disproved`]): the silence then closes without entering the history.
//!
//! No IO and no clock: callers pass the time.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::Arc;

use posmon_diagnosis::findings::FindingEvent;
use posmon_diagnosis::rules::silent::{self, Cadence, SILENT};
use posmon_diagnosis::thresholds::Thresholds;
use time::OffsetDateTime;

use crate::fleet::Terminal;

/// When the watch looks at a terminal next (Unix seconds): bookkeeping, not the terminal's
/// state, so two terminals are equal whatever theirs.
#[derive(Debug, Clone, Copy, Default)]
pub struct Due(i64);

impl Due {
    pub fn at(self) -> i64 {
        self.0
    }
}

impl PartialEq for Due {
    fn eq(&self, _: &Due) -> bool {
        true
    }
}

/// The deadlines of one shard's terminals, earliest first. Entries are checked lazily: a
/// terminal that reported since its entry was pushed is put back at its new deadline. A
/// terminal has one live entry, the one at its `silence_due`; others are stale and skipped.
#[derive(Debug, Default)]
pub struct SilenceQueue {
    due: BinaryHeap<Reverse<(i64, Arc<str>)>>,
}

impl SilenceQueue {
    /// Looks at `terminal` again at `at` (Unix seconds, collector time), instead of when it
    /// was due before.
    pub fn watch(&mut self, terminal: &mut Terminal, at: i64) {
        terminal.silence_due = Due(at);
        self.due.push(Reverse((at, Arc::clone(&terminal.id))));
    }

    /// The next entry due at or before `now` (Unix seconds), taken off the queue: when it was
    /// due, and its terminal.
    pub fn next_due(&mut self, now: i64) -> Option<(i64, Arc<str>)> {
        if self.due.peek().is_some_and(|Reverse((at, _))| *at <= now) {
            return self.due.pop().map(|Reverse(entry)| entry);
        }
        None
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.due.len()
    }

    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.due.is_empty()
    }
}

/// The terminal's schedule: what it announced, else the collector's defaults.
pub fn cadence(terminal: &Terminal, thresholds: &Thresholds) -> Cadence {
    Cadence::of(terminal.intervals.as_ref(), thresholds)
}

/// What the watch does with a terminal that is due at `now`: opens its silence (returning the
/// events), or tells when to look again (`Err(at)`, Unix seconds; `i64::MAX`: never). A terminal
/// already silent is not watched again until it reports.
pub fn check(
    terminal: &mut Terminal,
    now: OffsetDateTime,
    listening_since: OffsetDateTime,
    thresholds: &Thresholds,
    next_id: &mut dyn FnMut() -> u64,
) -> Result<Vec<FindingEvent>, i64> {
    if terminal.is_silent() {
        return Ok(Vec::new());
    }
    let cadence = cadence(terminal, thresholds);
    let Some(signal) = silent::evaluate(
        terminal.last_seen,
        listening_since,
        now,
        cadence,
        thresholds,
    ) else {
        let deadline =
            silent::silent_after(terminal.last_seen, listening_since, cadence, thresholds);
        // One second after the deadline: silent means "longer than allowed".
        return Err(deadline.map_or(i64::MAX, |at| at.unix_timestamp().saturating_add(1)));
    };
    let mut opened = terminal.findings.observe_scope(
        &terminal.id,
        vec![signal],
        now,
        thresholds,
        next_id,
        |kind| std::ptr::eq(kind, &SILENT),
    );
    // A configured hysteresis may want more observations: look again at the next evaluation.
    if !terminal.is_silent() {
        return Err(now.unix_timestamp().saturating_add(1));
    }
    // Silent since the last report, not since it was noticed.
    let since = terminal.last_seen;
    for finding in terminal
        .findings
        .findings_mut()
        .filter(|finding| std::ptr::eq(finding.kind, &SILENT))
    {
        finding.since = since;
    }
    for event in &mut opened {
        event.finding.since = since;
    }
    Ok(opened)
}

/// One applied report of a batch that ends a silence, as the proof needs it.
#[derive(Debug, Clone, Copy)]
pub struct Reported {
    pub sequence: u64,
    /// By the terminal's clock.
    pub observed_at: OffsetDateTime,
    /// The terminal's clock minus the collector's, as the report measured it (milliseconds).
    pub clock_offset_ms: Option<f64>,
}

/// Whether the reports of a batch that ends a silence prove the agent kept reporting through
/// it — so the silence was only the collector not hearing it (its own absence, or the way to it
/// cut), and the backfilled reports now tell what the terminal saw meanwhile: the batch continues the sequence held before (`held_sequence`, observed at
/// `held_observed_at`) without a gap, no two consecutive reports are further apart than the
/// terminal's allowed silence (by its own clock: a clock that jumped back counts as no time,
/// one that jumped ahead as a gap), and its newest report was observed within the allowed
/// silence of `received_at` (its clock corrected by the offset it measured).
pub fn disproved(
    held_sequence: u64,
    held_observed_at: OffsetDateTime,
    applied: &[Reported],
    received_at: OffsetDateTime,
    allowed_seconds: i64,
) -> bool {
    let Some(newest) = applied.last() else {
        return false;
    };
    if held_sequence == 0 {
        return false;
    }
    let mut sequence = held_sequence;
    let mut observed_at = held_observed_at;
    for report in applied {
        if report.sequence != sequence.saturating_add(1) {
            return false;
        }
        if (report.observed_at - observed_at).whole_seconds() > allowed_seconds {
            return false;
        }
        sequence = report.sequence;
        observed_at = report.observed_at;
    }
    // Whole milliseconds of a validated offset (within ±10 years): no overflow.
    let offset = time::Duration::milliseconds(newest.clock_offset_ms.unwrap_or(0.0) as i64);
    let Some(collector_time) = newest.observed_at.checked_sub(offset) else {
        return false;
    };
    (received_at - collector_time).whole_seconds() <= allowed_seconds
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;
    use time::Duration;

    const T0: OffsetDateTime = datetime!(2026-11-26 02:00 UTC);

    fn reported(sequence: u64, minute: i64) -> Reported {
        Reported {
            sequence,
            observed_at: T0 + Duration::minutes(minute),
            clock_offset_ms: None,
        }
    }

    #[test]
    fn a_backfill_disproves_only_an_unbroken_silence() {
        let allowed = 180;
        let received = T0 + Duration::minutes(30) + Duration::seconds(5);
        let every_minute: Vec<Reported> = (1..=30).map(|m| reported(10 + m as u64, m)).collect();
        // (case, held sequence, reports, disproved)
        let cases: Vec<(&str, u64, Vec<Reported>, bool)> = vec![
            (
                "a report every minute through",
                10,
                every_minute.clone(),
                true,
            ),
            (
                "a sequence gap (reports dropped)",
                9,
                every_minute.clone(),
                false,
            ),
            (
                "off for ten minutes in the middle",
                10,
                (1..=30)
                    .filter(|m| !(10..20).contains(m))
                    .enumerate()
                    .map(|(i, m)| reported(11 + i as u64, m))
                    .collect(),
                false,
            ),
            (
                "the backfill stops long before now (more batches to come)",
                10,
                every_minute[..10].to_vec(),
                false,
            ),
            ("nothing held before", 0, every_minute.clone(), false),
            ("no report", 10, Vec::new(), false),
        ];
        for (case, held, reports, expected) in cases {
            assert_eq!(
                disproved(held, T0, &reports, received, allowed),
                expected,
                "{case}"
            );
        }
    }

    #[test]
    fn the_terminal_clock_is_corrected_by_its_offset_and_a_jump_back_is_no_gap() {
        let allowed = 180;
        let received = T0 + Duration::minutes(5);
        // Ten minutes ahead, and it says so: its newest report is recent.
        let ahead: Vec<Reported> = (1..=5)
            .map(|m| Reported {
                sequence: 10 + m as u64,
                observed_at: T0 + Duration::minutes(m + 10),
                clock_offset_ms: Some(600_000.0),
            })
            .collect();
        let mut held_ahead = T0 + Duration::minutes(10);
        assert!(disproved(10, held_ahead, &ahead, received, allowed));
        // Jumped back (an NTP correction) within the backfill: no gap.
        let mut corrected = ahead.clone();
        corrected.push(Reported {
            sequence: 16,
            observed_at: T0 + Duration::minutes(5),
            clock_offset_ms: Some(0.0),
        });
        assert!(disproved(10, held_ahead, &corrected, received, allowed));
        // Jumped ahead by an hour without saying so: a gap, the silence stands.
        held_ahead = T0;
        let jumped = vec![reported(11, 1), reported(12, 70)];
        assert!(!disproved(10, held_ahead, &jumped, received, allowed));
    }

    #[test]
    fn the_queue_hands_out_what_is_due_earliest_first_and_one_live_entry_per_terminal() {
        let mut queue = SilenceQueue::default();
        let mut a = Terminal::new(Arc::from("A"), T0);
        let mut b = Terminal::new(Arc::from("B"), T0);
        queue.watch(&mut a, 20);
        queue.watch(&mut b, 10);
        assert_eq!(queue.next_due(5), None);
        assert_eq!(queue.next_due(15), Some((10, Arc::clone(&b.id))));
        assert_eq!(queue.next_due(15), None);
        // Watched again earlier: the entry at 20 is stale (not its `silence_due`).
        queue.watch(&mut a, 12);
        assert_eq!(a.silence_due.at(), 12);
        assert_eq!(queue.len(), 2);
        assert_eq!(queue.next_due(i64::MAX), Some((12, Arc::clone(&a.id))));
        let (at, _) = queue
            .next_due(i64::MAX)
            .unwrap_or_else(|| panic!("the stale entry"));
        assert_ne!(at, a.silence_due.at(), "what the watch skips");
        assert!(queue.is_empty());
    }

    mod in_the_fleet {
        use super::*;
        use crate::fleet::{Fleet, Restored};
        use posmon_diagnosis::findings::Change;
        use posmon_diagnosis::test_support::healthy_report;
        use posmon_protocol::{Intervals, Report};

        fn report(sequence: u64, at: OffsetDateTime) -> Report {
            let mut report = healthy_report();
            report.sequence = sequence;
            report.observed_at = at;
            report
        }

        fn apply(fleet: &Fleet, reports: Vec<Report>, at: OffsetDateTime) -> Vec<FindingEvent> {
            let reports = reports.into_iter().map(|r| (r, Vec::new())).collect();
            fleet
                .apply_batch("T-1", reports, at, &Thresholds::default())
                .events
        }

        fn silences(events: &[FindingEvent], change: Change) -> usize {
            events
                .iter()
                .filter(|e| e.change == change && std::ptr::eq(e.finding.kind, &SILENT))
                .count()
        }

        #[test]
        fn a_terminal_on_a_five_minute_schedule_is_not_silent_between_its_reports() {
            let thresholds = Thresholds::default();
            let fleet = Fleet::new(100, 30);
            let mut first = report(1, T0);
            first.intervals = Some(Intervals {
                probe_seconds: 10,
                report_seconds: 300,
                retry_max_seconds: 300,
            });
            apply(&fleet, vec![first], T0);
            for minute in 1..=15 {
                let events = fleet.evaluate(T0 + Duration::minutes(minute), &thresholds);
                assert!(events.is_empty(), "minute {minute}: {events:?}");
            }
            // Its second report carries no intervals: as before.
            apply(
                &fleet,
                vec![report(2, T0 + Duration::minutes(15))],
                T0 + Duration::minutes(15),
            );
            assert!(fleet
                .evaluate(T0 + Duration::minutes(30), &thresholds)
                .is_empty());
            let events = fleet.evaluate(T0 + Duration::minutes(31), &thresholds);
            assert_eq!(
                silences(&events, Change::Opened),
                1,
                "three of its intervals"
            );
        }

        #[test]
        fn after_the_collector_was_down_nobody_is_silent_before_their_comeback_window() {
            let thresholds = Thresholds::default();
            let before = Fleet::new(100, 30);
            apply(&before, vec![report(1, T0)], T0);
            let restored = Restored {
                terminals: vec![before.terminal("T-1").unwrap_or_else(|| panic!("no T-1"))],
                ..Restored::default()
            };
            // Down for an hour; back at `back`.
            let back = T0 + Duration::hours(1);
            let fleet = Fleet::restore(restored, 100, 30);
            fleet.listen_from(back);
            for seconds in [0, 1, 60, 200, 360] {
                let events = fleet.evaluate(back + Duration::seconds(seconds), &thresholds);
                assert!(events.is_empty(), "{seconds} s after the start: {events:?}");
            }
            // The agent's backfill comes: never silent, nothing in its history.
            apply(
                &fleet,
                vec![report(2, T0 + Duration::minutes(1))],
                back + Duration::seconds(100),
            );
            assert!(fleet
                .evaluate(back + Duration::seconds(280), &thresholds)
                .is_empty());
            assert!(fleet.history_of("T-1", 10).is_empty());
            // A terminal that never comes back is silent once its window has passed: since its
            // last report.
            let fleet = Fleet::restore(
                Restored {
                    terminals: vec![before.terminal("T-1").unwrap_or_else(|| panic!("no T-1"))],
                    ..Restored::default()
                },
                100,
                30,
            );
            fleet.listen_from(back);
            let events = fleet.evaluate(back + Duration::seconds(361), &thresholds);
            assert_eq!(silences(&events, Change::Opened), 1);
            assert_eq!(events[0].finding.since, T0);
        }

        /// `[diagnosis.hysteresis."terminal.silent"]` may ask for more than one observation:
        /// the watch then looks again at each evaluation until the silence opens, rather than
        /// dropping the terminal after the first (it would never be silent).
        #[test]
        fn a_silence_that_needs_more_observations_is_looked_at_again() {
            let mut thresholds = Thresholds::default();
            thresholds.hysteresis.insert(
                SILENT.code.to_string(),
                posmon_diagnosis::Hysteresis::new(3, 1),
            );
            let fleet = Fleet::new(100, 30);
            apply(&fleet, vec![report(1, T0)], T0);
            let mut opened = Vec::new();
            for seconds in 181..=190 {
                let events = fleet.evaluate(T0 + Duration::seconds(seconds), &thresholds);
                if silences(&events, Change::Opened) > 0 {
                    opened.push(seconds);
                }
            }
            assert_eq!(opened, [183], "the third evaluation after the deadline");
        }

        #[test]
        fn a_backfill_that_shows_the_agent_reporting_throughout_erases_the_silence() {
            let thresholds = Thresholds::default();
            let fleet = Fleet::new(100, 30);
            apply(&fleet, vec![report(1, T0)], T0);
            let events = fleet.evaluate(T0 + Duration::minutes(4), &thresholds);
            assert_eq!(silences(&events, Change::Opened), 1);
            // The agent kept reporting every minute; the collector heard none until now.
            let now = T0 + Duration::minutes(10);
            let backfill = (2..=11).map(|s| report(s, T0 + Duration::minutes(s as i64 - 1)));
            let events = apply(&fleet, backfill.collect(), now);
            assert_eq!(silences(&events, Change::Closed), 1);
            assert!(
                fleet.history_of("T-1", 10).is_empty(),
                "a disproved silence is no history"
            );
            assert!(fleet.take_changes().closed.is_empty(), "nor in the store");
            // Silent again, and this time the agent was off for six minutes: it stays.
            let events = fleet.evaluate(now + Duration::minutes(4), &thresholds);
            assert_eq!(silences(&events, Change::Opened), 1);
            let back = now + Duration::minutes(8);
            let events = apply(
                &fleet,
                vec![
                    report(12, T0 + Duration::minutes(17)),
                    report(13, T0 + Duration::minutes(18)),
                ],
                back,
            );
            assert_eq!(silences(&events, Change::Closed), 1);
            let history = fleet.history_of("T-1", 10);
            assert_eq!(history.len(), 1);
            assert_eq!(history[0].kind.code, "terminal.silent");
        }
    }
}
