//! Silent terminal: no report for longer than `silent_after_intervals` of the terminal's own
//! report interval — judged only over time the collector itself was listening. A pure function
//! of the time of the last report, the time the collector began listening, the terminal's
//! schedule and now; the fleet's silence watch calls it, and the terminal's next report closes
//! the finding.

use posmon_protocol::Intervals;
use time::{Duration, OffsetDateTime};

use crate::thresholds::Thresholds;
use crate::{Category, Evidence, FindingKind, Hysteresis, Party, Severity, Signal, Text};

pub static SILENT: FindingKind = FindingKind {
    code: "terminal.silent",
    category: Category::Availability,
    party: Party::Merchant,
    title: Text {
        en: "Terminal stopped reporting",
        zh_cn: "终端停止上报",
    },
    remediation: Text {
        en: "Nothing has been heard from this terminal. Check that it is switched on and connected at the shop; if many terminals of one carrier or region are silent, see the upstream findings.",
        zh_cn: "已长时间未收到该终端的上报。请确认门店终端已开机并联网；如同一运营商或地区的大量终端同时失联，请查看上游故障告警。",
    },
    // The silence threshold is the hysteresis; the next report closes it.
    hysteresis: Hysteresis::new(1, 1),
};

/// How often a terminal reports, and how long its agent waits at most between delivery
/// retries: from its reports' `intervals`, else the collector's defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cadence {
    pub report_seconds: u64,
    pub retry_max_seconds: u64,
}

impl Cadence {
    /// The schedule a terminal announced, or the collector's defaults for agents that send none.
    pub fn of(intervals: Option<&Intervals>, thresholds: &Thresholds) -> Cadence {
        match intervals {
            Some(intervals) => Cadence {
                report_seconds: u64::from(intervals.report_seconds.max(1)),
                retry_max_seconds: u64::from(intervals.retry_max_seconds),
            },
            None => Cadence {
                report_seconds: thresholds.report_interval_seconds.max(1),
                retry_max_seconds: thresholds.agent_retry_max_seconds,
            },
        }
    }

    /// How long the terminal may stay quiet: `silent_after_intervals` report intervals.
    pub fn allowed_silence(&self, thresholds: &Thresholds) -> i64 {
        thresholds.silent_after_seconds(self.report_seconds)
    }

    /// What a terminal needs after the collector comes back before it can be silent: its
    /// allowed silence, and at least a report interval plus its longest retry wait (an agent
    /// backing off from the collector's absence tries again within that).
    fn comeback(&self, thresholds: &Thresholds) -> i64 {
        let window = self.report_seconds.saturating_add(self.retry_max_seconds);
        self.allowed_silence(thresholds)
            .max(i64::try_from(window).unwrap_or(i64::MAX))
    }
}

/// The moment (collector time) after which a terminal that last reported at `last_report_at`
/// is silent, the collector listening since `listening_since`: its allowed silence after the
/// last report, and — when it has not reported since the collector began listening — never
/// before its comeback window after that. `None`: never (beyond the calendar).
pub fn silent_after(
    last_report_at: OffsetDateTime,
    listening_since: OffsetDateTime,
    cadence: Cadence,
    thresholds: &Thresholds,
) -> Option<OffsetDateTime> {
    let after_report =
        last_report_at.checked_add(Duration::seconds(cadence.allowed_silence(thresholds)))?;
    if last_report_at >= listening_since {
        return Some(after_report);
    }
    let after_start =
        listening_since.checked_add(Duration::seconds(cadence.comeback(thresholds)))?;
    Some(after_report.max(after_start))
}

/// The silent signal when the terminal is silent at `now` (see [`silent_after`]).
pub fn evaluate(
    last_report_at: OffsetDateTime,
    listening_since: OffsetDateTime,
    now: OffsetDateTime,
    cadence: Cadence,
    thresholds: &Thresholds,
) -> Option<Signal> {
    let deadline = silent_after(last_report_at, listening_since, cadence, thresholds)?;
    if now <= deadline {
        return None;
    }
    let allowed = cadence.allowed_silence(thresholds);
    let silent_for = (now - last_report_at).whole_seconds();
    let mut evidence = vec![
        Evidence::new("last_report_at", last_report_at.to_string()),
        Evidence::new("silent_seconds", silent_for.to_string()).with_threshold(format!(
            "<= {allowed} ({} intervals of {} s)",
            thresholds.silent_after_intervals, cadence.report_seconds
        )),
    ];
    if listening_since > last_report_at {
        evidence.push(Evidence::new(
            "collector_listening_since",
            listening_since.to_string(),
        ));
    }
    Some(Signal {
        kind: &SILENT,
        // Silence makes readiness unknown: not known to stop payments, so not critical.
        severity: Severity::Warning,
        subject: String::new(),
        evidence,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    const LAST: OffsetDateTime = datetime!(2026-11-26 02:00 UTC);

    fn seconds(seconds: i64) -> Duration {
        Duration::seconds(seconds)
    }

    #[test]
    fn silent_table() {
        // Defaults: a 60 s interval, silent after 3 intervals; the collector long up.
        let thresholds = Thresholds::default();
        let cadence = Cadence::of(None, &thresholds);
        let listening = LAST - seconds(86_400);
        let check = |seconds_later: i64, expected: bool| {
            let now = LAST + seconds(seconds_later);
            assert_eq!(
                evaluate(LAST, listening, now, cadence, &thresholds).is_some(),
                expected,
                "{seconds_later} s after the last report"
            );
        };
        // Must not open: within the allowed silence, or a clock that went back.
        check(0, false);
        check(179, false);
        check(180, false);
        check(-30, false);
        // Opens: beyond it.
        check(181, true);
        check(86_400, true);
        // What closes it (the next report) is the fleet's job: see fleet.rs
        // `a_report_closes_the_silent_finding`.
    }

    #[test]
    fn a_terminal_is_judged_by_its_own_report_interval() {
        let thresholds = Thresholds::default();
        let every_five_minutes = Intervals {
            probe_seconds: 10,
            report_seconds: 300,
            retry_max_seconds: 300,
        };
        let cadence = Cadence::of(Some(&every_five_minutes), &thresholds);
        let listening = LAST - seconds(86_400);
        let silent = |after: i64| {
            evaluate(LAST, listening, LAST + seconds(after), cadence, &thresholds).is_some()
        };
        // Between two of its reports it is not silent, although the default 60 s would say so.
        assert!(!silent(301));
        assert!(!silent(900));
        assert!(silent(901));
    }

    #[test]
    fn the_collectors_own_absence_is_no_silence() {
        let thresholds = Thresholds::default();
        let cadence = Cadence::of(None, &thresholds);
        // The collector was down for an hour after the last report and just came back.
        let back = LAST + seconds(3600);
        let silent = |after_start: i64| {
            evaluate(
                LAST,
                back,
                back + seconds(after_start),
                cadence,
                &thresholds,
            )
            .is_some()
        };
        assert!(!silent(0), "not at once");
        // A report interval plus the agent's longest retry wait (60 + 300 s) to come back.
        assert!(!silent(360));
        assert!(silent(361));
        // An agent that says it retries within 5 s is given its allowed silence (180 s).
        let quick = Cadence::of(
            Some(&Intervals {
                probe_seconds: 1,
                report_seconds: 60,
                retry_max_seconds: 5,
            }),
            &thresholds,
        );
        let quick_silent = |after_start: i64| {
            evaluate(LAST, back, back + seconds(after_start), quick, &thresholds).is_some()
        };
        assert!(!quick_silent(180));
        assert!(quick_silent(181));
        // Heard from since the collector started: the last report alone counts.
        assert!(evaluate(
            LAST,
            LAST - seconds(10),
            LAST + seconds(181),
            cadence,
            &thresholds
        )
        .is_some());
    }

    #[test]
    fn times_at_the_ends_of_the_calendar_do_not_panic() {
        let thresholds = Thresholds::default();
        let cadence = Cadence::of(None, &thresholds);
        let first = time::PrimitiveDateTime::MIN.assume_utc();
        let last = time::PrimitiveDateTime::MAX.assume_utc();
        // (last report, listening since, now, silent)
        for (report, since, now, expected) in [
            (first, first, last, true),
            (last, first, first, false),
            (last, last, last, false),
            (first, last, last, false),
        ] {
            assert_eq!(
                evaluate(report, since, now, cadence, &thresholds).is_some(),
                expected,
                "{report} → {now}"
            );
        }
        let huge = Cadence {
            report_seconds: u64::MAX,
            retry_max_seconds: u64::MAX,
        };
        assert!(evaluate(first, first, last, huge, &thresholds).is_none());
    }
}
