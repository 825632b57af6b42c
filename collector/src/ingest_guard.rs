//! What ingest checks and records beyond the protocol's validation, given the collector's
//! clock: a terminal's time must fall in a window around it (older than any spool keeps, or
//! far ahead, is refused naming the field), a report observed ahead of the collector's clock
//! is proof of a skewed clock, and sequence resets are logged and counted.
//!
//! Pure but for the log and the metric: the caller passes `now`.

use posmon_protocol::{ClockStatus, Report};
use time::{Duration, OffsetDateTime};

use crate::config::LimitsConfig;
use crate::fleet::SequenceReset;
use crate::metrics::Metrics;

/// A report time outside the window: the field (`reports[3].observed_at`) and the problem.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {problem}")]
pub struct TimeError {
    pub field: String,
    pub problem: String,
}

fn seconds(value: u64) -> Duration {
    Duration::seconds(i64::try_from(value).unwrap_or(i64::MAX))
}

/// Refuses a batch with a report observed more than `limits.max_report_age_seconds` before
/// `now` or more than `limits.max_clock_ahead_seconds` after it. A report observed ahead of
/// `now` by more than its clock status says gets that lower bound as its clock offset: a
/// right clock cannot observe the future (network delay only makes a report look older).
pub fn admit_times(
    reports: &mut [Report],
    now: OffsetDateTime,
    limits: &LimitsConfig,
) -> Result<(), TimeError> {
    // Beyond the calendar there is no bound to pass.
    let oldest = now.checked_sub(seconds(limits.max_report_age_seconds));
    let latest = now.checked_add(seconds(limits.max_clock_ahead_seconds));
    for (index, report) in reports.iter_mut().enumerate() {
        let refuse = |problem: String| TimeError {
            field: format!("reports[{index}].observed_at"),
            problem,
        };
        let at = report.observed_at;
        if oldest.is_some_and(|oldest| at < oldest) {
            return Err(refuse(format!(
                "{at} is more than {} s before the collector's clock ({now}): older than any agent keeps a report",
                limits.max_report_age_seconds
            )));
        }
        if latest.is_some_and(|latest| at > latest) {
            return Err(refuse(format!(
                "{at} is more than {} s ahead of the collector's clock ({now}): fix the terminal's clock",
                limits.max_clock_ahead_seconds
            )));
        }
        let ahead_ms = (at - now).as_seconds_f64() * 1000.0;
        if ahead_ms > 0.0 {
            let clock = report.clock.get_or_insert(ClockStatus {
                offset_ms: 0.0,
                uncertainty_ms: 0.0,
                ntp_synchronized: None,
            });
            if clock.offset_ms < ahead_ms {
                clock.offset_ms = ahead_ms;
                clock.uncertainty_ms = 0.0;
            }
        }
    }
    Ok(())
}

/// A terminal whose sequences start anew more often than this is logged at debug level only
/// (still counted): two agents sharing one terminal's identity would otherwise flood the log.
const RESET_WARN_INTERVAL: Duration = Duration::minutes(1);

/// Logs and counts each terminal whose sequences a new agent instance started anew.
pub fn note_sequence_resets(
    metrics: &Metrics,
    terminal_id: &str,
    resets: &[SequenceReset],
    now: OffsetDateTime,
) {
    for reset in resets {
        metrics.sequence_resets.inc();
        let recent = reset
            .previous_reset_at
            .and_then(|previous| previous.checked_add(RESET_WARN_INTERVAL))
            .is_some_and(|quiet_until| now < quiet_until);
        let message = format!(
            "Terminal {terminal_id} started its sequences anew under a new agent instance (high mark {} before, {} now): its agent's state was wiped or re-installed.",
            reset.old_highest, reset.new_sequence
        );
        if recent {
            tracing::debug!(terminal_id, old_instance = %reset.old_instance, new_instance = %reset.new_instance, "{message}");
        } else {
            tracing::warn!(terminal_id, old_instance = %reset.old_instance, new_instance = %reset.new_instance, "{message}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use posmon_diagnosis::test_support::healthy_report;
    use time::macros::datetime;

    const NOW: OffsetDateTime = datetime!(2026-12-02 04:00 UTC);

    fn at(observed_at: OffsetDateTime, clock: Option<f64>) -> Report {
        let mut report = healthy_report();
        report.observed_at = observed_at;
        report.clock = clock.map(|offset_ms| ClockStatus {
            offset_ms,
            uncertainty_ms: 20.0,
            ntp_synchronized: Some(true),
        });
        report
    }

    #[test]
    fn the_window_around_the_collector_clock() {
        let limits = LimitsConfig::default();
        let minutes = |m: i64| NOW + Duration::minutes(m);
        let far_past = datetime!(-9999-01-01 00:00 UTC);
        let far_future = datetime!(9999-12-31 23:59:59.999 UTC);
        // (observed at, its clock offset, refused with, offset after)
        type Case = (
            OffsetDateTime,
            Option<f64>,
            Option<&'static str>,
            Option<f64>,
        );
        let cases: Vec<Case> = vec![
            (NOW, None, None, None),
            (minutes(-5), Some(-300_000.0), None, Some(-300_000.0)),
            // Ten minutes ahead: accepted, and the clock is known to be at least that far off.
            (minutes(10), None, None, Some(600_000.0)),
            (minutes(10), Some(10.0), None, Some(600_000.0)),
            (minutes(10), Some(900_000.0), None, Some(900_000.0)),
            (NOW - Duration::days(7), None, None, None),
            (
                NOW - Duration::days(9),
                None,
                Some("before the collector's clock"),
                None,
            ),
            (
                NOW + Duration::hours(25),
                None,
                Some("ahead of the collector's clock"),
                None,
            ),
            (far_past, None, Some("before"), None),
            (far_future, None, Some("ahead"), None),
        ];
        for (index, (observed_at, clock, refused, offset)) in cases.into_iter().enumerate() {
            let mut reports = vec![healthy_report(), at(observed_at, clock)];
            reports[0].observed_at = NOW;
            let outcome = admit_times(&mut reports, NOW, &limits);
            match (outcome, refused) {
                (Ok(()), None) => {}
                (Err(error), Some(fragment)) => {
                    assert_eq!(error.field, "reports[1].observed_at", "case {index}");
                    assert!(error.problem.contains(fragment), "case {index}: {error}");
                }
                (outcome, _) => panic!("case {index}: {outcome:?}"),
            }
            if refused.is_none() {
                assert_eq!(
                    reports[1].clock.as_ref().map(|clock| clock.offset_ms),
                    offset,
                    "case {index}"
                );
            }
        }
    }

    #[test]
    fn a_collector_clock_at_the_ends_of_the_calendar_does_not_panic() {
        let limits = LimitsConfig {
            max_report_age_seconds: 315_360_000,
            max_clock_ahead_seconds: 315_360_000,
            ..LimitsConfig::default()
        };
        let ends = [
            datetime!(-9999-01-01 00:00 UTC),
            datetime!(9999-12-31 23:59:59.999 UTC),
        ];
        for now in ends {
            for observed_at in ends {
                let mut reports = vec![at(observed_at, None)];
                let _ = admit_times(&mut reports, now, &limits);
            }
        }
    }

    #[test]
    fn every_reset_is_counted_even_when_too_frequent_to_log_loudly() {
        let metrics = Metrics::new(false, 10).unwrap();
        let reset = |previous: Option<OffsetDateTime>| SequenceReset {
            old_instance: "aaaaaaaa".into(),
            new_instance: "bbbbbbbb".into(),
            old_highest: 9,
            new_sequence: 1,
            previous_reset_at: previous,
        };
        let resets = [
            reset(None),
            reset(Some(NOW - Duration::seconds(5))),
            reset(Some(time::PrimitiveDateTime::MAX.assume_utc())),
        ];
        note_sequence_resets(&metrics, "T-1", &resets, NOW);
        assert_eq!(metrics.sequence_resets.get(), 3);
    }
}
