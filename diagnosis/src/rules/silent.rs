//! Silent terminal: no report for longer than the configured number of report intervals. A
//! pure function of the time of the last report and now; the periodic fleet evaluation calls
//! it, and the terminal's next report closes the finding.

use time::OffsetDateTime;

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

/// The silent signal when the last report (collector time) is older than the allowed
/// silence at `now`.
pub fn evaluate(
    last_report_at: OffsetDateTime,
    now: OffsetDateTime,
    thresholds: &Thresholds,
) -> Option<Signal> {
    let allowed = thresholds.silent_after_seconds();
    let silent_for = (now - last_report_at).whole_seconds();
    (silent_for > allowed).then(|| Signal {
        kind: &SILENT,
        // Silence makes readiness unknown: not known to stop payments, so not critical.
        severity: Severity::Warning,
        subject: String::new(),
        evidence: vec![
            Evidence::new("last_report_at", last_report_at.to_string()),
            Evidence::new("silent_seconds", silent_for.to_string()).with_threshold(format!(
                "<= {allowed} ({} intervals of {} s)",
                thresholds.silent_after_intervals, thresholds.report_interval_seconds
            )),
        ],
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn silent_table() {
        // Defaults: a 60 s interval, silent after 3 intervals.
        let thresholds = Thresholds::default();
        let last = datetime!(2026-11-26 02:00 UTC);
        let check = |seconds_later: i64, expected: bool| {
            let now = last + time::Duration::seconds(seconds_later);
            assert_eq!(
                evaluate(last, now, &thresholds).is_some(),
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
    fn times_at_the_ends_of_the_calendar_do_not_panic() {
        let thresholds = Thresholds::default();
        let first = time::PrimitiveDateTime::MIN.assume_utc();
        let last = time::PrimitiveDateTime::MAX.assume_utc();
        // (last report, now, silent)
        for (report, now, expected) in [
            (first, last, true),
            (last, first, false),
            (last, last, false),
        ] {
            assert_eq!(
                evaluate(report, now, &thresholds).is_some(),
                expected,
                "{report} → {now}"
            );
        }
    }
}
