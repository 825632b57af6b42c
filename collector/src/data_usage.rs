//! Terminals' data usage against their monthly budgets: what a terminal's latest `data_usage`
//! means at a given time (this month's or an older one's, the month projected at its pace, near
//! its budget or not), and the fleet's sums for the overview and the metrics.
//!
//! Pure: callers pass the time. Every number comes from a terminal (validated, each bounded by
//! `limits::DATA_BYTES_MAX`); the arithmetic is checked or widened so that no terminal's numbers
//! can wrap a sum. A terminal misstating its usage only misstates its own row and its share of
//! the fleet's sums.

use posmon_protocol::DataUsage;
use serde::Serialize;
use time::{Date, Month, OffsetDateTime};

/// A terminal is near its budget when its month, projected at its pace so far, reaches this
/// share of the budget (or its agent already stretches its intervals to stay within it).
pub const NEAR_BUDGET_PERCENT: u64 = 80;
/// The least part of the month a projection extrapolates from: a day. Earlier, the first hours'
/// traffic (a start's full reports and handshakes) would project a month far beyond the real.
const PROJECTION_MIN_SECONDS: i64 = 86_400;

/// The month index (`year * 12 + month - 1`) of `at`.
pub fn month_of(at: OffsetDateTime) -> u32 {
    let index = i64::from(at.year()) * 12 + i64::from(u8::from(at.month())) - 1;
    u32::try_from(index).unwrap_or(0)
}

/// `2026-12` for the month index 24 323.
pub fn month_label(month: u32) -> String {
    format!("{:04}-{:02}", month / 12, month % 12 + 1)
}

/// Unix seconds of the start of `month` (`None` beyond the calendar).
fn month_start(month: u32) -> Option<i64> {
    let year = i32::try_from(month / 12).ok()?;
    let number = Month::try_from(u8::try_from(month % 12 + 1).ok()?).ok()?;
    let date = Date::from_calendar_date(year, number, 1).ok()?;
    Some(date.midnight().assume_utc().unix_timestamp())
}

/// The month of a moment and its bounds, computed once for a pass over the fleet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MonthAt {
    index: u32,
    /// Unix seconds: the moment, and the month's start and length.
    now: i64,
    start: Option<i64>,
    length: i64,
}

impl MonthAt {
    pub fn new(now: OffsetDateTime) -> Self {
        let index = month_of(now);
        let start = month_start(index);
        let end = month_start(index.saturating_add(1));
        let length = match (start, end) {
            (Some(start), Some(end)) => end.saturating_sub(start).max(1),
            _ => 31 * 86_400,
        };
        MonthAt {
            index,
            now: now.unix_timestamp(),
            start,
            length,
        }
    }
}

/// Where a terminal stands against its budget at a given time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Standing {
    /// Whether the usage is for the month of that time (else an older or a later one).
    pub current: bool,
    pub total_bytes: u64,
    /// The month's total at the pace so far; the total itself for a month that is not current.
    pub projected_bytes: u64,
    /// The total and the projection in percent of the budget, when there is one.
    pub budget_percent: Option<u64>,
    pub projected_percent: Option<u64>,
    /// The agent stretches its intervals to stay within the budget.
    pub stretched: bool,
    /// This month's projection reaches [`NEAR_BUDGET_PERCENT`] of the budget, or the agent
    /// stretches: worth a look before the SIM card's plan runs out.
    pub near_budget: bool,
}

impl Standing {
    pub fn of(usage: &DataUsage, now: OffsetDateTime) -> Standing {
        Standing::at(usage, &MonthAt::new(now))
    }

    /// [`Standing::of`] with the month computed once.
    pub fn at(usage: &DataUsage, month: &MonthAt) -> Standing {
        let current = usage.month == month.index;
        let total_bytes = usage.total_bytes();
        let projected_bytes = match (current, month.start) {
            (true, Some(start)) => {
                let length = month.length;
                let elapsed = month
                    .now
                    .saturating_sub(start)
                    .clamp(PROJECTION_MIN_SECONDS.min(length), length);
                let projected = u128::from(total_bytes) * u128::from(length.unsigned_abs())
                    / u128::from(elapsed.unsigned_abs().max(1));
                u64::try_from(projected).unwrap_or(u64::MAX)
            }
            _ => total_bytes,
        };
        let percent = |bytes: u64| {
            usage.budget_bytes.map(|budget| {
                let percent = u128::from(bytes) * 100 / u128::from(budget.max(1));
                u64::try_from(percent).unwrap_or(u64::MAX)
            })
        };
        let budget_percent = percent(total_bytes);
        let projected_percent = percent(projected_bytes);
        let stretched = current && usage.stretch_percent > 100;
        let near_budget = current
            && usage.budget_bytes.is_some()
            && (stretched || projected_percent.is_some_and(|p| p >= NEAR_BUDGET_PERCENT));
        Standing {
            current,
            total_bytes,
            projected_bytes,
            budget_percent,
            projected_percent,
            stretched,
            near_budget,
        }
    }
}

/// A terminal's data usage in the API.
#[derive(Debug, Serialize)]
pub struct UsageView {
    /// `YYYY-MM`.
    month: String,
    /// Whether it is this month's (the collector's clock).
    current: bool,
    report_bytes: u64,
    probe_bytes: u64,
    other_bytes: u64,
    total_bytes: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    budget_bytes: Option<u64>,
    /// The total in percent of the budget.
    #[serde(skip_serializing_if = "Option::is_none")]
    budget_percent: Option<u64>,
    /// The month at the pace so far, in bytes and in percent of the budget.
    projected_bytes: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    projected_percent: Option<u64>,
    stretch_percent: u32,
    near_budget: bool,
}

impl UsageView {
    pub fn new(usage: &DataUsage, now: OffsetDateTime) -> Self {
        let standing = Standing::of(usage, now);
        UsageView {
            month: month_label(usage.month),
            current: standing.current,
            report_bytes: usage.report_bytes,
            probe_bytes: usage.probe_bytes,
            other_bytes: usage.other_bytes,
            total_bytes: standing.total_bytes,
            budget_bytes: usage.budget_bytes,
            budget_percent: standing.budget_percent,
            projected_bytes: standing.projected_bytes,
            projected_percent: standing.projected_percent,
            stretch_percent: usage.stretch_percent,
            near_budget: standing.near_budget,
        }
    }
}

/// The projected month in percent of the budget, in buckets: the bounded label of
/// `posmon_fleet_data_budget_terminals`.
pub const PROJECTED_BUCKETS: [&str; 5] =
    ["under_50", "50_to_80", "80_to_100", "over_100", "no_budget"];

fn bucket(standing: &Standing) -> &'static str {
    match standing.projected_percent {
        None => "no_budget",
        Some(percent) if percent < 50 => "under_50",
        Some(percent) if percent < NEAR_BUDGET_PERCENT => "50_to_80",
        Some(percent) if percent < 100 => "80_to_100",
        Some(_) => "over_100",
    }
}

/// The fleet's data usage this month: sums by kind over the terminals whose latest usage is this
/// month's, and counts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FleetUsage {
    #[serde(skip)]
    at: MonthAt,
    /// `YYYY-MM`.
    pub month: String,
    pub report_bytes: u64,
    pub probe_bytes: u64,
    pub other_bytes: u64,
    pub total_bytes: u64,
    /// Terminals whose latest usage is this month's.
    pub terminals_reporting: u64,
    pub near_budget: u64,
    pub stretched: u64,
    /// Terminals by their projected month in percent of their budget ([`PROJECTED_BUCKETS`]).
    pub projected: std::collections::BTreeMap<&'static str, u64>,
}

impl FleetUsage {
    pub fn new(now: OffsetDateTime) -> Self {
        let at = MonthAt::new(now);
        FleetUsage {
            at,
            month: month_label(at.index),
            report_bytes: 0,
            probe_bytes: 0,
            other_bytes: 0,
            total_bytes: 0,
            terminals_reporting: 0,
            near_budget: 0,
            stretched: 0,
            projected: PROJECTED_BUCKETS
                .iter()
                .map(|bucket| (*bucket, 0))
                .collect(),
        }
    }

    /// Counts one terminal's latest usage (nothing when it has none or it is not this month's).
    pub fn add(&mut self, usage: Option<&DataUsage>) {
        let Some(usage) = usage else {
            return;
        };
        let standing = Standing::at(usage, &self.at);
        if !standing.current {
            return;
        }
        for (sum, bytes) in [
            (&mut self.report_bytes, usage.report_bytes),
            (&mut self.probe_bytes, usage.probe_bytes),
            (&mut self.other_bytes, usage.other_bytes),
            (&mut self.total_bytes, standing.total_bytes),
        ] {
            *sum = sum.saturating_add(bytes);
        }
        self.terminals_reporting = self.terminals_reporting.saturating_add(1);
        self.near_budget = self
            .near_budget
            .saturating_add(u64::from(standing.near_budget));
        self.stretched = self.stretched.saturating_add(u64::from(standing.stretched));
        if let Some(count) = self.projected.get_mut(bucket(&standing)) {
            *count = count.saturating_add(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    const MIB: u64 = 1 << 20;

    fn usage(month: u32, total: u64, budget: Option<u64>, stretch_percent: u32) -> DataUsage {
        DataUsage {
            month,
            report_bytes: total / 2,
            probe_bytes: total - total / 2,
            other_bytes: 0,
            budget_bytes: budget,
            stretch_percent,
        }
    }

    #[test]
    fn months_are_indexed_and_labelled() {
        assert_eq!(month_of(datetime!(2026-12-02 16:00 UTC)), 24_323);
        assert_eq!(month_label(24_323), "2026-12");
        assert_eq!(month_label(24_324), "2027-01");
        assert_eq!(month_start(24_323), Some(1_796_083_200));
        assert_eq!(month_start(u32::MAX), None);
    }

    #[test]
    fn standing_against_the_budget() {
        // (usage, now, expected (current, projected, projected %, near))
        let december = 24_323;
        let mid = datetime!(2026-12-16 12:00 UTC); // half of December gone
        let cases = [
            // Half the month, 4 MiB: 8 MiB projected, 80 % of 10 MiB: near.
            (
                usage(december, 4 * MIB, Some(10 * MIB), 100),
                mid,
                (true, 8 * MIB, Some(80), true),
            ),
            // 3 MiB: 6 MiB, 60 %: not near.
            (
                usage(december, 3 * MIB, Some(10 * MIB), 100),
                mid,
                (true, 6 * MIB, Some(60), false),
            ),
            // Stretched: near whatever the projection.
            (
                usage(december, MIB, Some(10 * MIB), 150),
                mid,
                (true, 2 * MIB, Some(20), true),
            ),
            // No budget: never near.
            (
                usage(december, 40 * MIB, None, 100),
                mid,
                (true, 80 * MIB, None, false),
            ),
            // An hour into the month: extrapolated from a day, not from the hour.
            (
                usage(december, MIB, Some(10 * MIB), 100),
                datetime!(2026-12-01 01:00 UTC),
                (true, 31 * MIB, Some(310), true),
            ),
            // Last month's usage: as it ended, not near (the month is over).
            (
                usage(december - 1, 12 * MIB, Some(10 * MIB), 300),
                mid,
                (false, 12 * MIB, Some(120), false),
            ),
            // Extremes saturate instead of wrapping.
            (
                usage(december, u64::MAX, Some(1), 10_000),
                datetime!(2026-12-01 00:00 UTC),
                (true, u64::MAX, Some(u64::MAX), true),
            ),
            (
                usage(u32::MAX, u64::MAX, Some(u64::MAX), 100),
                mid,
                (false, u64::MAX, Some(100), false),
            ),
        ];
        for (usage, now, expected) in cases {
            let standing = Standing::of(&usage, now);
            assert_eq!(
                (
                    standing.current,
                    standing.projected_bytes,
                    standing.projected_percent,
                    standing.near_budget
                ),
                expected,
                "{usage:?} at {now}"
            );
        }
    }

    #[test]
    fn the_fleet_sums_this_months_usage() {
        let now = datetime!(2026-12-16 12:00 UTC);
        let mut fleet = FleetUsage::new(now);
        for usage in [
            Some(usage(24_323, 4 * MIB, Some(10 * MIB), 100)),
            Some(usage(24_323, MIB, Some(10 * MIB), 100)),
            Some(usage(24_323, MIB, None, 100)),
            Some(usage(24_322, 9 * MIB, Some(10 * MIB), 100)),
            None,
        ] {
            fleet.add(usage.as_ref());
        }
        assert_eq!(fleet.month, "2026-12");
        assert_eq!(fleet.total_bytes, 6 * MIB);
        assert_eq!(fleet.report_bytes + fleet.probe_bytes, 6 * MIB);
        assert_eq!(
            (
                fleet.terminals_reporting,
                fleet.near_budget,
                fleet.stretched
            ),
            (3, 1, 0)
        );
        assert_eq!(fleet.projected["80_to_100"], 1);
        assert_eq!(fleet.projected["under_50"], 1);
        assert_eq!(fleet.projected["no_budget"], 1);
        assert_eq!(fleet.projected["over_100"], 0);
        // Sums saturate.
        let huge = usage(24_323, u64::MAX, None, 100);
        fleet.add(Some(&huge));
        fleet.add(Some(&huge));
        assert_eq!(fleet.total_bytes, u64::MAX);
    }
}
