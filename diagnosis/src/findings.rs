//! Findings: signals that persist become open findings, with hysteresis. A finding opens after
//! N bad observations in a row (or a bad streak lasting a duration) and closes after M good
//! ones; one finding per (terminal, code, subject). Every open and close is returned as a
//! [`FindingEvent`] for whoever must hear of it (history, metrics, a notifier).
//!
//! Plain data: no IO, no clock (callers pass the time), no locking.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::thresholds::Thresholds;
use crate::{kind_by_code, Evidence, FindingKind, Severity, Signal};

/// A problem of one terminal (or, with an empty `terminal_id`, of the fleet), open or closed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Finding {
    pub id: u64,
    /// Empty for a fleet-wide finding.
    #[serde(default)]
    pub terminal_id: Arc<str>,
    #[serde(rename = "code", with = "by_code")]
    pub kind: &'static FindingKind,
    pub severity: Severity,
    /// What the finding is about (a target, a component; the scope of a fleet-wide finding);
    /// empty for the whole terminal.
    pub subject: String,
    pub evidence: Vec<Evidence>,
    /// When the problem was first seen: the terminal's time of the first bad report, or the
    /// collector's time for silence and fleet-wide findings.
    #[serde(with = "time::serde::rfc3339")]
    pub since: OffsetDateTime,
    /// The latest observation that showed it.
    #[serde(with = "time::serde::rfc3339")]
    pub last_seen: OffsetDateTime,
    /// The first observation of the good streak that closed it.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub closed_at: Option<OffsetDateTime>,
    /// The fleet-wide finding that explains this one, which is then not reported on its own.
    #[serde(default)]
    pub suppressed_by: Option<u64>,
    /// For a fleet-wide finding: how many terminal findings it explains (and suppresses).
    #[serde(default)]
    pub explains: u32,
}

/// Findings are stored by code; the kind (category, party, texts) comes back from the code.
mod by_code {
    use serde::{Deserialize, Deserializer, Serializer};

    use crate::FindingKind;

    pub fn serialize<S: Serializer>(
        kind: &&'static FindingKind,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(kind.code)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<&'static FindingKind, D::Error> {
        let code = String::deserialize(deserializer)?;
        super::kind_by_code(&code)
            .ok_or_else(|| serde::de::Error::custom(format!("unknown finding code {code:?}")))
    }
}

/// What happened to a finding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Change {
    Opened,
    Closed,
    /// A fleet-wide finding now explains it.
    Suppressed,
    /// The fleet-wide finding that explained it closed while it stays open.
    Unsuppressed,
}

impl Change {
    pub const ALL: [Change; 4] = [
        Change::Opened,
        Change::Closed,
        Change::Suppressed,
        Change::Unsuppressed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Change::Opened => "opened",
            Change::Closed => "closed",
            Change::Suppressed => "suppressed",
            Change::Unsuppressed => "unsuppressed",
        }
    }
}

/// One change of one finding, for subscribers (alerting) and the history.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FindingEvent {
    pub change: Change,
    pub finding: Finding,
    /// The change happened in the past, in reports delivered late (from an agent's spool):
    /// history to record, not news to alert on.
    pub replayed: bool,
}

/// An open finding and the good streak that may close it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OpenFinding {
    pub finding: Finding,
    #[serde(default)]
    good_streak: u32,
    #[serde(default, with = "time::serde::rfc3339::option")]
    first_good: Option<OffsetDateTime>,
}

/// A bad streak that has not (yet) opened a finding.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Pending {
    #[serde(with = "by_code")]
    kind: &'static FindingKind,
    subject: String,
    bad_streak: u32,
    #[serde(with = "time::serde::rfc3339")]
    first_bad: OffsetDateTime,
}

/// The findings of one terminal (or of the fleet): open ones and bad streaks on their way.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Tracker {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub open: Vec<OpenFinding>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pending: Vec<Pending>,
}

impl Tracker {
    pub fn is_empty(&self) -> bool {
        self.open.is_empty() && self.pending.is_empty()
    }

    pub fn findings(&self) -> impl Iterator<Item = &Finding> {
        self.open.iter().map(|open| &open.finding)
    }

    pub fn findings_mut(&mut self) -> impl Iterator<Item = &mut Finding> {
        self.open.iter_mut().map(|open| &mut open.finding)
    }

    /// Closes the open finding `id` by hand at `at` (an operator's decision, not an
    /// observation): it leaves the open findings at once; if the problem persists, the next
    /// observations open a new finding through the usual bad streak. `None` when no open
    /// finding has that id.
    pub fn close_by_hand(&mut self, id: u64, at: OffsetDateTime) -> Option<FindingEvent> {
        let position = self.open.iter().position(|open| open.finding.id == id)?;
        let mut finding = self.open.remove(position).finding;
        finding.closed_at = Some(at.max(finding.since));
        Some(FindingEvent {
            change: Change::Closed,
            finding,
            replayed: false,
        })
    }

    /// Takes in one observation at `at` of every code of the signals' scope: the codes of
    /// the categories the signals come from (per report, or fleet-wide). A signal extends its
    /// bad streak or refreshes its open finding; an open finding of that scope without a
    /// signal counts a good observation. Returns what opened and closed.
    pub fn observe(
        &mut self,
        terminal_id: &str,
        signals: Vec<Signal>,
        at: OffsetDateTime,
        thresholds: &Thresholds,
        next_id: &mut dyn FnMut() -> u64,
    ) -> Vec<FindingEvent> {
        self.observe_scope(terminal_id, signals, at, thresholds, next_id, |kind| {
            kind.category.per_report()
        })
    }

    /// [`Tracker::observe`] for the codes `in_scope` selects; findings of other codes are left
    /// alone.
    pub fn observe_scope(
        &mut self,
        terminal_id: &str,
        signals: Vec<Signal>,
        at: OffsetDateTime,
        thresholds: &Thresholds,
        next_id: &mut dyn FnMut() -> u64,
        in_scope: impl Fn(&FindingKind) -> bool,
    ) -> Vec<FindingEvent> {
        let mut events = Vec::new();
        let mut seen: Vec<(&'static str, String)> = Vec::with_capacity(signals.len());
        for signal in signals {
            let key = (signal.kind.code, signal.subject.clone());
            if seen.contains(&key) {
                continue;
            }
            seen.push(key);
            if let Some(open) = self.open.iter_mut().find(|open| {
                std::ptr::eq(open.finding.kind, signal.kind)
                    && open.finding.subject == signal.subject
            }) {
                open.finding.severity = signal.severity;
                open.finding.evidence = signal.evidence;
                open.finding.last_seen = at;
                open.good_streak = 0;
                open.first_good = None;
                continue;
            }
            let position = self
                .pending
                .iter()
                .position(|p| std::ptr::eq(p.kind, signal.kind) && p.subject == signal.subject);
            let pending = match position {
                Some(position) => &mut self.pending[position],
                None => {
                    self.pending.push(Pending {
                        kind: signal.kind,
                        subject: signal.subject.clone(),
                        bad_streak: 0,
                        first_bad: at,
                    });
                    let last = self.pending.len() - 1;
                    &mut self.pending[last]
                }
            };
            pending.bad_streak = pending.bad_streak.saturating_add(1);
            let hysteresis = thresholds.hysteresis_of(signal.kind);
            let lasted = lasted_seconds(pending.first_bad, at);
            let long_enough =
                hysteresis.open_after_seconds > 0 && lasted >= hysteresis.open_after_seconds;
            if pending.bad_streak >= hysteresis.open_after_observations || long_enough {
                let since = pending.first_bad;
                self.pending.retain(|p| {
                    !(std::ptr::eq(p.kind, signal.kind) && p.subject == signal.subject)
                });
                let finding = Finding {
                    id: next_id(),
                    terminal_id: Arc::from(terminal_id),
                    kind: signal.kind,
                    severity: signal.severity,
                    subject: signal.subject,
                    evidence: signal.evidence,
                    since,
                    last_seen: at,
                    closed_at: None,
                    suppressed_by: None,
                    explains: 0,
                };
                events.push(FindingEvent {
                    change: Change::Opened,
                    finding: finding.clone(),
                    replayed: false,
                });
                self.open.push(OpenFinding {
                    finding,
                    good_streak: 0,
                    first_good: None,
                });
            }
        }
        let signalled = |kind: &FindingKind, subject: &str| {
            seen.iter()
                .any(|(code, seen_subject)| *code == kind.code && seen_subject == subject)
        };
        // A bad streak without a signal this time is broken.
        self.pending
            .retain(|p| !in_scope(p.kind) || signalled(p.kind, &p.subject));
        let mut still_open = Vec::with_capacity(self.open.len());
        for mut open in std::mem::take(&mut self.open) {
            let kind = open.finding.kind;
            if !in_scope(kind) || signalled(kind, &open.finding.subject) {
                still_open.push(open);
                continue;
            }
            open.good_streak = open.good_streak.saturating_add(1);
            let first_good = *open.first_good.get_or_insert(at);
            if open.good_streak >= thresholds.hysteresis_of(kind).close_after_observations {
                let mut finding = open.finding;
                // A clock that jumped back may put the good streak before the finding began;
                // it never closes before it opened.
                finding.closed_at = Some(first_good.max(finding.since));
                events.push(FindingEvent {
                    change: Change::Closed,
                    finding,
                    replayed: false,
                });
            } else {
                still_open.push(open);
            }
        }
        self.open = still_open;
        events
    }
}

/// Whole seconds from `from` to `to` by the terminal's clock; a clock that jumped back makes
/// the span negative, which counts as zero.
pub fn lasted_seconds(from: OffsetDateTime, to: OffsetDateTime) -> u64 {
    u64::try_from((to - from).whole_seconds()).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::network_path::HOST_UNREACHABLE;
    use crate::rules::outdated::POS_APP;
    use crate::Hysteresis;
    use time::macros::datetime;

    fn signal(kind: &'static FindingKind, subject: &str) -> Signal {
        Signal {
            kind,
            severity: Severity::Critical,
            subject: subject.into(),
            evidence: vec![],
        }
    }

    /// Feeds observations (each a list of signals, one minute apart) and returns the changes
    /// as (minute, change, code) triples.
    fn check(
        thresholds: &Thresholds,
        observations: Vec<Vec<Signal>>,
        expected: &[(i64, Change, &str)],
    ) -> Tracker {
        let mut tracker = Tracker::default();
        let mut next_id = 0;
        let start = datetime!(2026-11-26 02:00 UTC);
        let mut got = Vec::new();
        for (minute, signals) in observations.into_iter().enumerate() {
            let at = start + time::Duration::minutes(minute as i64);
            let events = tracker.observe("T-1", signals, at, thresholds, &mut || {
                next_id += 1;
                next_id
            });
            got.extend(
                events
                    .into_iter()
                    .map(|event| (minute as i64, event.change, event.finding.kind.code)),
            );
        }
        assert_eq!(got, expected);
        tracker
    }

    #[test]
    fn hysteresis_opens_after_n_and_closes_after_m() {
        let defaults = Thresholds::default();
        let down = || vec![signal(&HOST_UNREACHABLE, "pay")];
        use Change::*;
        // Host unreachable: two bad in a row open, two good in a row close.
        let tracker = check(
            &defaults,
            vec![
                down(),
                vec![],
                down(),
                down(),
                down(),
                vec![],
                down(),
                vec![],
                vec![],
            ],
            &[
                (3, Opened, "env.network.host_unreachable"),
                (8, Closed, "env.network.host_unreachable"),
            ],
        );
        assert!(tracker.is_empty());
        // The same signal twice in one observation counts once.
        check(
            &defaults,
            vec![vec![
                signal(&HOST_UNREACHABLE, "pay"),
                signal(&HOST_UNREACHABLE, "pay"),
            ]],
            &[],
        );
        // Outdated opens and closes at once, independently of the path.
        check(
            &defaults,
            vec![vec![signal(&POS_APP, "pos_app")], down(), down(), vec![]],
            &[
                (0, Opened, "outdated.pos_app"),
                (1, Closed, "outdated.pos_app"),
                (2, Opened, "env.network.host_unreachable"),
            ],
        );
    }

    #[test]
    fn a_finding_closed_by_hand_leaves_at_once_and_a_persisting_problem_opens_a_new_one() {
        let mut tracker = Tracker::default();
        let mut next_id = 0;
        let thresholds = Thresholds::default();
        let minute = |m: i64| datetime!(2026-11-26 02:00 UTC) + time::Duration::minutes(m);
        let mut observe = |tracker: &mut Tracker, signals: Vec<Signal>, m: i64| {
            tracker.observe("T-1", signals, minute(m), &thresholds, &mut || {
                next_id += 1;
                next_id
            })
        };
        observe(&mut tracker, vec![signal(&HOST_UNREACHABLE, "pay")], 0);
        let opened = observe(&mut tracker, vec![signal(&HOST_UNREACHABLE, "pay")], 1);
        let id = opened[0].finding.id;
        assert_eq!(tracker.close_by_hand(id + 1, minute(2)), None);
        let closed = tracker.close_by_hand(id, minute(2)).unwrap();
        assert_eq!(closed.change, Change::Closed);
        assert_eq!(closed.finding.closed_at, Some(minute(2)));
        assert!(tracker.is_empty());
        assert_eq!(tracker.close_by_hand(id, minute(2)), None);
        // Still failing: a new finding, after the usual bad streak, with a new id.
        assert!(observe(&mut tracker, vec![signal(&HOST_UNREACHABLE, "pay")], 3).is_empty());
        let again = observe(&mut tracker, vec![signal(&HOST_UNREACHABLE, "pay")], 4);
        assert_eq!(again[0].change, Change::Opened);
        assert_ne!(again[0].finding.id, id);
        // A clock before the finding began never closes it before it opened.
        let early = tracker
            .close_by_hand(again[0].finding.id, minute(-60))
            .unwrap();
        assert_eq!(early.finding.closed_at, Some(minute(3)));
    }

    #[test]
    fn since_is_the_first_bad_observation_and_closed_at_the_first_good_one() {
        let mut tracker = Tracker::default();
        let mut next_id = 0;
        let thresholds = Thresholds::default();
        let minute = |m: i64| datetime!(2026-11-26 02:00 UTC) + time::Duration::minutes(m);
        let mut observe = |signals: Vec<Signal>, m: i64| {
            tracker.observe("T-1", signals, minute(m), &thresholds, &mut || {
                next_id += 1;
                next_id
            })
        };
        observe(vec![signal(&HOST_UNREACHABLE, "pay")], 0);
        let opened = observe(vec![signal(&HOST_UNREACHABLE, "pay")], 1);
        assert_eq!(opened[0].finding.since, minute(0));
        assert_eq!(opened[0].finding.id, 1);
        observe(vec![], 2);
        let closed = observe(vec![], 3);
        assert_eq!(closed[0].finding.closed_at, Some(minute(2)));
        assert_eq!(closed[0].finding.last_seen, minute(1));
    }

    #[test]
    fn a_configured_duration_opens_a_finding_before_the_count() {
        let mut thresholds = Thresholds::default();
        thresholds.hysteresis.insert(
            "env.network.host_unreachable".into(),
            Hysteresis {
                open_after_observations: 10,
                open_after_seconds: 120,
                close_after_observations: 1,
            },
        );
        let down = || vec![signal(&HOST_UNREACHABLE, "pay")];
        check(
            &thresholds,
            vec![down(), down(), down(), vec![]],
            &[
                (2, Change::Opened, "env.network.host_unreachable"),
                (3, Change::Closed, "env.network.host_unreachable"),
            ],
        );
    }

    fn at(year: i32, minute: i64) -> OffsetDateTime {
        time::Date::from_calendar_date(year, time::Month::June, 1)
            .map(|date| date.midnight().assume_utc())
            .unwrap()
            + time::Duration::minutes(minute)
    }

    #[test]
    fn terminal_times_that_jump_or_sit_at_the_ends_of_the_calendar_never_panic() {
        let mut thresholds = Thresholds::default();
        thresholds.hysteresis.insert(
            "env.network.host_unreachable".into(),
            Hysteresis {
                open_after_observations: 10,
                open_after_seconds: 120,
                close_after_observations: 2,
            },
        );
        let max = time::Date::MAX.with_hms(23, 59, 59).unwrap().assume_utc();
        let min = time::Date::MIN.midnight().assume_utc();
        // (times of the observations: bad, bad, good, good), what must have opened and closed.
        let cases: Vec<(&str, [OffsetDateTime; 4], usize)> = vec![
            // The clock jumps back an hour between two bad ones: the streak lasted nothing,
            // not a negative time, and the count alone decides (10: not reached).
            (
                "jump back",
                [at(2026, 60), at(2026, 0), at(2026, 1), at(2026, 2)],
                0,
            ),
            // Jumps forward 3 minutes: the duration opens it, two good ones close it.
            (
                "jump forward",
                [at(2026, 0), at(2026, 3), at(2026, 4), at(2026, 5)],
                2,
            ),
            ("the last instant", [max, max, max, max], 0),
            ("first to last", [min, max, min, max], 2),
            ("last to first", [max, min, max, min], 0),
        ];
        for (name, times, expected_events) in cases {
            let mut tracker = Tracker::default();
            let mut next_id = 0;
            let mut events = Vec::new();
            for (index, time) in times.into_iter().enumerate() {
                let signals = if index < 2 {
                    vec![signal(&HOST_UNREACHABLE, "pay")]
                } else {
                    vec![]
                };
                events.extend(tracker.observe("T-1", signals, time, &thresholds, &mut || {
                    next_id += 1;
                    next_id
                }));
            }
            assert_eq!(events.len(), expected_events, "{name}: {events:?}");
            for event in events.iter().filter(|e| e.change == Change::Closed) {
                assert!(
                    event.finding.closed_at >= Some(event.finding.since),
                    "{name}: never closes before it opened"
                );
            }
        }
    }

    #[test]
    fn a_good_streak_dated_before_the_finding_closes_it_at_its_start() {
        let thresholds = Thresholds::default();
        let mut tracker = Tracker::default();
        let mut next_id = 0;
        let mut observe = |signals: Vec<Signal>, time: OffsetDateTime| {
            tracker.observe("T-1", signals, time, &thresholds, &mut || {
                next_id += 1;
                next_id
            })
        };
        observe(vec![signal(&HOST_UNREACHABLE, "pay")], at(2026, 60));
        observe(vec![signal(&HOST_UNREACHABLE, "pay")], at(2026, 61));
        // NTP corrects the clock by an hour.
        observe(vec![], at(2026, 2));
        let closed = observe(vec![], at(2026, 3));
        assert_eq!(closed.len(), 1);
        assert_eq!(closed[0].finding.closed_at, Some(at(2026, 60)));
    }
}
