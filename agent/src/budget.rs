//! The agent's monthly data budget: what its own traffic has cost this calendar month (UTC), by
//! kind, and how far it must stretch its cheap probes and heartbeats so that the month stays
//! within the configured budget.
//!
//! The loop feeds it the bytes the deliverer and the measurer counted (`take_traffic()`), and
//! asks it for the stretch factor and the [`DataUsage`] a report carries. The account is kept in
//! one small file in `state_dir`, replaced atomically; a missing, unreadable or corrupt file
//! starts the month from zero (with a warning), never stops the agent.
//!
//! The stretch only ever applies to what can wait — cheap probes and heartbeats. A change report
//! is never dropped or delayed by it, and it is capped (`data_budget_max_stretch_percent`) so
//! that a fault is still found within a known bound when the budget is spent.
//!
//! How the stretch is found: the budget keeps a smoothed rate of the traffic the agent *would*
//! cause at its configured intervals (the bytes it counts, times the stretch in force when they
//! were spent), an exponentially weighted average over [`RATE_TIME_CONSTANT_SECONDS`]. The
//! stretch is that rate times the month's remaining time over what is left of the budget (less a
//! reserve for change reports), at least 100 %. It grows at once, and shrinks slowly and only
//! past a dead band, so it does not oscillate.
//!
//! This module does no networking; its only IO is its state file.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use posmon_protocol::{limits, DataUsage};

use crate::config::AgentConfig;

/// The state file's name in `state_dir`.
pub const STATE_FILE: &str = "data-usage";
const TEMPORARY_FILE: &str = "data-usage.tmp";
/// The state file's format version (its first line).
const FORMAT: &str = "posmon-data-usage 1";

/// The time constant of the traffic rate's moving average: long enough that one burst (a fault's
/// full ladder, a batch after an outage) does not swing the stretch, short enough to follow a
/// terminal whose conditions changed within a day.
pub const RATE_TIME_CONSTANT_SECONDS: f64 = 3.0 * 3600.0;
/// The share of the budget the plan aims at: the rest is kept for change reports and full
/// ladders, which are never stretched.
const PLAN_PERCENT: u64 = 90;
/// The stretch shrinks only when it is this many percentage points above what is needed…
const SHRINK_DEAD_BAND_PERCENT: u32 = 10;
/// …and then by at most this share of itself per hour.
const SHRINK_PERCENT_PER_HOUR: f64 = 10.0;
/// The longest gap between two records the rate takes as one interval: an agent that was off for
/// a week did not spend its next cycle's bytes over that week.
const RATE_GAP_MAX_SECONDS: i64 = 86_400;
/// The longest month, for a month whose end cannot be computed.
const MONTH_MAX_SECONDS: i64 = 31 * 86_400;

/// The budget's configuration, from the agent's config.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BudgetSettings {
    /// The monthly budget in IP bytes, or `None` for none (usage is still counted and reported).
    pub bytes_per_month: Option<u64>,
    /// The most the intervals are ever stretched, in percent (100 to
    /// [`limits::STRETCH_PERCENT_MAX`]).
    pub max_stretch_percent: u32,
}

impl BudgetSettings {
    pub fn from_config(config: &AgentConfig) -> Self {
        BudgetSettings {
            bytes_per_month: (config.data_budget_bytes_per_month > 0)
                .then_some(config.data_budget_bytes_per_month),
            max_stretch_percent: config
                .data_budget_max_stretch_percent
                .clamp(limits::STRETCH_PERCENT_MIN, limits::STRETCH_PERCENT_MAX),
        }
    }
}

/// The state file could not be written.
#[derive(Debug, thiserror::Error)]
#[error("cannot write the data usage file {path}: {source}")]
pub struct BudgetError {
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

/// The month's account. See the module documentation.
#[derive(Debug, Clone, PartialEq)]
pub struct Budget {
    dir: PathBuf,
    settings: BudgetSettings,
    /// `year * 12 + month - 1` of the month counted.
    month: u32,
    report_bytes: u64,
    probe_bytes: u64,
    other_bytes: u64,
    /// The smoothed traffic rate at the configured (unstretched) intervals, bytes per second;
    /// always finite and within `0..=DATA_BYTES_MAX`.
    rate: f64,
    /// The stretch in force, percent, within `100..=max_stretch_percent`.
    stretch_percent: u32,
    /// Unix seconds of the last record (or of the opening).
    updated_at: i64,
}

impl Budget {
    /// Opens the account kept in `state_dir`, or starts one: a missing file starts the month
    /// from zero, an unreadable or corrupt one too, with a warning. `now` is unix seconds.
    pub fn open(state_dir: &Path, settings: BudgetSettings, now: i64) -> Budget {
        let path = state_dir.join(STATE_FILE);
        let fresh = Budget {
            dir: state_dir.to_path_buf(),
            settings,
            month: month_of(now),
            report_bytes: 0,
            probe_bytes: 0,
            other_bytes: 0,
            rate: 0.0,
            stretch_percent: limits::STRETCH_PERCENT_MIN,
            updated_at: now,
        };
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return fresh,
            Err(error) => {
                tracing::warn!(path = %path.display(), %error, "Cannot read the data usage file; counting this month from zero.");
                return fresh;
            }
        };
        let Some(stored) = parse_state(&text) else {
            tracing::warn!(path = %path.display(), "The data usage file is corrupt; counting this month from zero.");
            return fresh;
        };
        // A month later than the next one is a file from a clock gone wrong, not an account.
        if stored.month > fresh.month.saturating_add(1) {
            tracing::warn!(path = %path.display(), stored_month = stored.month, "The data usage file is for a month ahead of the clock; counting this month from zero.");
            return fresh;
        }
        let mut budget = Budget {
            dir: fresh.dir,
            settings,
            month: stored.month,
            report_bytes: stored.report_bytes,
            probe_bytes: stored.probe_bytes,
            other_bytes: stored.other_bytes,
            rate: stored.rate_bytes_per_day as f64 / 86_400.0,
            stretch_percent: stored
                .stretch_percent
                .clamp(limits::STRETCH_PERCENT_MIN, settings.max_stretch_percent),
            updated_at: stored.updated_at.min(now),
        };
        budget.roll_over(now);
        budget
    }

    /// Counts the bytes spent since the last record, by kind, at `now` (unix seconds), and
    /// updates the rate and the stretch. Every count saturates at [`limits::DATA_BYTES_MAX`].
    pub fn record(&mut self, report_bytes: u64, probe_bytes: u64, other_bytes: u64, now: i64) {
        self.roll_over(now);
        let add = |total: u64, bytes: u64| total.saturating_add(bytes).min(limits::DATA_BYTES_MAX);
        self.report_bytes = add(self.report_bytes, report_bytes);
        self.probe_bytes = add(self.probe_bytes, probe_bytes);
        self.other_bytes = add(self.other_bytes, other_bytes);

        // What these bytes would have been at the configured intervals.
        let spent = report_bytes
            .saturating_add(probe_bytes)
            .saturating_add(other_bytes)
            .min(limits::DATA_BYTES_MAX) as f64;
        let unstretched = spent * f64::from(self.stretch_percent) / 100.0;
        let gap = now
            .saturating_sub(self.updated_at)
            .clamp(0, RATE_GAP_MAX_SECONDS) as f64;
        let weight = 1.0 - (-gap / RATE_TIME_CONSTANT_SECONDS).exp();
        // Over a gap of zero the average takes the bytes as spread over one time constant: the
        // limit of `weight * bytes / gap`.
        let contribution = if gap > 0.0 {
            weight * unstretched / gap
        } else {
            unstretched / RATE_TIME_CONSTANT_SECONDS
        };
        let rate = self.rate * (1.0 - weight) + contribution;
        self.rate = if rate.is_finite() {
            rate.clamp(0.0, limits::DATA_BYTES_MAX as f64)
        } else {
            0.0
        };

        let target = self.target_percent(now);
        let current = self.stretch_percent;
        self.stretch_percent = if target >= current {
            target
        } else if current - target < SHRINK_DEAD_BAND_PERCENT {
            current
        } else {
            let hours = gap / 3600.0;
            let step = (f64::from(current) * SHRINK_PERCENT_PER_HOUR / 100.0 * hours).ceil();
            let lowered = (f64::from(current) - step).max(f64::from(target));
            // Within 100..=current, so the conversion cannot wrap.
            lowered.clamp(f64::from(target), f64::from(current)) as u32
        };
        self.updated_at = self.updated_at.max(now);
    }

    /// The stretch to apply to the cheap-probe and heartbeat intervals at `now`, in percent of the
    /// configured ones: 100 when there is no budget or it is not at risk, at most the configured
    /// cap.
    pub fn stretch(&self, now: i64) -> u32 {
        if month_of(now) > self.month {
            // A new month whose first record has not come yet: its whole budget is left.
            let mut next = self.clone();
            next.roll_over(now);
            return next.target_percent(now);
        }
        self.stretch_percent
    }

    /// `interval` stretched by [`Budget::stretch`] at `now` (saturating).
    pub fn stretch_interval(&self, interval: Duration, now: i64) -> Duration {
        let millis = interval
            .as_millis()
            .saturating_mul(u128::from(self.stretch(now)))
            / 100;
        Duration::from_millis(u64::try_from(millis).unwrap_or(u64::MAX))
    }

    /// The usage a report carries at `now`: this month's counts (zeros in a month not yet
    /// recorded), the budget and the stretch.
    pub fn usage(&self, now: i64) -> DataUsage {
        let month = month_of(now);
        let current = month <= self.month;
        let count = |bytes: u64| if current { bytes } else { 0 };
        DataUsage {
            month: if current { self.month } else { month },
            report_bytes: count(self.report_bytes),
            probe_bytes: count(self.probe_bytes),
            other_bytes: count(self.other_bytes),
            budget_bytes: self.settings.bytes_per_month,
            stretch_percent: self.stretch(now),
        }
    }

    /// Writes the account to its file: a temporary file, fsync, rename, fsync the directory, so
    /// that a power cut leaves the old file or the new one.
    pub fn save(&self) -> Result<(), BudgetError> {
        let path = self.dir.join(STATE_FILE);
        let temporary = self.dir.join(TEMPORARY_FILE);
        let text = format!(
            "{FORMAT}\nmonth={}\nreport_bytes={}\nprobe_bytes={}\nother_bytes={}\nrate_bytes_per_day={}\nstretch_percent={}\nupdated_at={}\n",
            self.month,
            self.report_bytes,
            self.probe_bytes,
            self.other_bytes,
            // Within 0..=DATA_BYTES_MAX × 86 400, so it fits a u64.
            (self.rate * 86_400.0).round() as u64,
            self.stretch_percent,
            self.updated_at,
        );
        let error = |path: &Path| {
            let path = path.to_path_buf();
            move |source| BudgetError { path, source }
        };
        std::fs::create_dir_all(&self.dir).map_err(error(&self.dir))?;
        let mut file = File::create(&temporary).map_err(error(&temporary))?;
        file.write_all(text.as_bytes()).map_err(error(&temporary))?;
        file.sync_all().map_err(error(&temporary))?;
        std::fs::rename(&temporary, &path).map_err(error(&path))?;
        File::open(&self.dir)
            .and_then(|handle| handle.sync_all())
            .map_err(error(&self.dir))
    }

    /// Starts a new month when `now` is in a later one than the account's. A clock that went
    /// back keeps counting in the account's month: spending is never forgotten.
    fn roll_over(&mut self, now: i64) {
        let month = month_of(now);
        if month > self.month {
            self.month = month;
            self.report_bytes = 0;
            self.probe_bytes = 0;
            self.other_bytes = 0;
            // The rate is a property of the terminal, not of the month: it carries over.
            self.stretch_percent = self.target_percent(now);
        }
    }

    /// The stretch that keeps the month within the budget, unsmoothed.
    fn target_percent(&self, now: i64) -> u32 {
        let minimum = limits::STRETCH_PERCENT_MIN;
        let maximum = self.settings.max_stretch_percent;
        let Some(budget) = self.settings.bytes_per_month else {
            return minimum;
        };
        let end = month_end(self.month);
        let remaining = end.saturating_sub(now).clamp(0, MONTH_MAX_SECONDS) as f64;
        let projected = self.rate * remaining;
        if projected <= 0.0 {
            return minimum;
        }
        let spent = self
            .report_bytes
            .saturating_add(self.probe_bytes)
            .saturating_add(self.other_bytes);
        let plan = u128::from(budget) * u128::from(PLAN_PERCENT) / 100;
        let left = plan.saturating_sub(u128::from(spent));
        if left == 0 {
            return maximum;
        }
        let percent = (projected * 100.0 / left as f64).ceil();
        // Finite and positive here; `as` saturates, the clamp bounds it.
        (percent.min(f64::from(maximum)) as u32).clamp(minimum, maximum)
    }
}

/// The month of `now` (unix seconds) as `year * 12 + month - 1`, within the protocol's range.
pub fn month_of(now: i64) -> u32 {
    let Ok(moment) = time::OffsetDateTime::from_unix_timestamp(now) else {
        return if now < 0 {
            limits::DATA_MONTH_MIN
        } else {
            limits::DATA_MONTH_MAX
        };
    };
    let index = i64::from(moment.year()) * 12 + i64::from(u8::from(moment.month())) - 1;
    let index = index.clamp(
        i64::from(limits::DATA_MONTH_MIN),
        i64::from(limits::DATA_MONTH_MAX),
    );
    u32::try_from(index).unwrap_or(limits::DATA_MONTH_MIN)
}

/// Unix seconds of the first moment after `month`.
fn month_end(month: u32) -> i64 {
    let next = month.saturating_add(1);
    let year = i32::try_from(next / 12).unwrap_or(i32::MAX);
    let start = u8::try_from(next % 12 + 1)
        .ok()
        .and_then(|number| time::Month::try_from(number).ok())
        .and_then(|number| time::Date::from_calendar_date(year, number, 1).ok());
    match start {
        Some(date) => date.midnight().assume_utc().unix_timestamp(),
        None => i64::MAX,
    }
}

/// The fields of a state file.
struct Stored {
    month: u32,
    report_bytes: u64,
    probe_bytes: u64,
    other_bytes: u64,
    rate_bytes_per_day: u64,
    stretch_percent: u32,
    updated_at: i64,
}

/// A state file's fields, or `None` when it is not one (any field missing, malformed or out of
/// range).
fn parse_state(text: &str) -> Option<Stored> {
    let mut lines = text.lines();
    if lines.next()? != FORMAT {
        return None;
    }
    let mut fields = std::collections::HashMap::new();
    for line in lines {
        let (key, value) = line.split_once('=')?;
        fields.insert(key, value);
    }
    let number = |key: &str| -> Option<u64> {
        fields
            .get(key)?
            .parse::<u64>()
            .ok()
            .filter(|value| *value <= limits::DATA_BYTES_MAX)
    };
    let month = u32::try_from(number("month")?).ok()?;
    let stretch_percent = u32::try_from(number("stretch_percent")?).ok()?;
    let valid = (limits::DATA_MONTH_MIN..=limits::DATA_MONTH_MAX).contains(&month)
        && (limits::STRETCH_PERCENT_MIN..=limits::STRETCH_PERCENT_MAX).contains(&stretch_percent);
    valid.then_some(())?;
    Some(Stored {
        month,
        report_bytes: number("report_bytes")?,
        probe_bytes: number("probe_bytes")?,
        other_bytes: number("other_bytes")?,
        rate_bytes_per_day: fields
            .get("rate_bytes_per_day")?
            .parse::<u64>()
            .ok()
            .filter(|value| *value <= limits::DATA_BYTES_MAX.saturating_mul(86_400))?,
        stretch_percent,
        updated_at: fields.get("updated_at")?.parse::<i64>().ok()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1024 * 1024;
    /// 2026-12-01T00:00:00Z.
    const DECEMBER: i64 = 1_796_083_200;
    const DAY: i64 = 86_400;

    fn settings(budget: Option<u64>, max: u32) -> BudgetSettings {
        BudgetSettings {
            bytes_per_month: budget,
            max_stretch_percent: max,
        }
    }

    /// Runs a terminal spending `bytes_per_minute` (at its configured intervals: the spend falls
    /// as the stretch grows) for `days` from `start`, one record a minute; returns the budget.
    fn run(budget: &mut Budget, bytes_per_minute: u64, start: i64, days: i64) {
        for minute in 0..days * 24 * 60 {
            let now = start + minute * 60;
            let spent = bytes_per_minute * 100 / u64::from(budget.stretch(now));
            budget.record(spent / 2, spent / 2, 0, now);
        }
    }

    #[test]
    fn the_month_index_is_year_times_twelve_plus_month() {
        assert_eq!(month_of(DECEMBER), 24_323);
        assert_eq!(month_of(DECEMBER - 1), 24_322);
        assert_eq!(month_end(24_323), DECEMBER + 31 * DAY);
        // Extremes clamp into the protocol's range instead of wrapping or panicking.
        assert_eq!(month_of(i64::MIN), limits::DATA_MONTH_MIN);
        assert_eq!(month_of(i64::MAX), limits::DATA_MONTH_MAX);
        assert_eq!(month_of(0), limits::DATA_MONTH_MIN);
        assert_eq!(month_end(u32::MAX), i64::MAX);
    }

    #[test]
    fn the_stretch_follows_the_budget() {
        // (budget, bytes a minute at the configured intervals, max stretch, expected range)
        let cases: [(Option<u64>, u64, u32, std::ops::RangeInclusive<u32>); 5] = [
            // 1 KiB a minute is 43 MiB a month: a 10 MiB budget stretches about 4.8×…
            (Some(10 * MIB), 1024, 1000, 420..=560),
            // …capped at the configured maximum.
            (Some(10 * MIB), 1024, 300, 300..=300),
            // 100 B a minute is 4.3 MiB a month: no stretch.
            (Some(10 * MIB), 100, 1000, 100..=100),
            // A generous budget never stretches.
            (Some(1 << 30), 1024, 1000, 100..=100),
            // No budget, no stretch.
            (None, 1024, 1000, 100..=100),
        ];
        for (budget_bytes, per_minute, max, expected) in cases {
            let dir = tempfile::tempdir().unwrap();
            let mut budget = Budget::open(dir.path(), settings(budget_bytes, max), DECEMBER);
            run(&mut budget, per_minute, DECEMBER, 3);
            let stretch = budget.stretch(DECEMBER + 3 * DAY);
            assert!(
                expected.contains(&stretch),
                "{budget_bytes:?} at {per_minute} B/min: {stretch}"
            );
        }
    }

    #[test]
    fn a_stretched_terminal_stays_within_its_budget_and_does_not_oscillate() {
        let dir = tempfile::tempdir().unwrap();
        let mut budget = Budget::open(dir.path(), settings(Some(10 * MIB), 1000), DECEMBER);
        // A day to learn the rate, then the rest of the month.
        run(&mut budget, 1024, DECEMBER, 1);
        let mut seen = Vec::new();
        for day in 1..31 {
            run(&mut budget, 1024, DECEMBER + day * DAY, 1);
            seen.push(budget.stretch(DECEMBER + (day + 1) * DAY - 1));
        }
        let usage = budget.usage(DECEMBER + 31 * DAY - 1);
        assert!(usage.total_bytes() <= 10 * MIB, "{usage:?}");
        assert!(
            usage.total_bytes() >= 8 * MIB,
            "stretched too far: {usage:?}"
        );
        // The last day may relax: the reserve kept for change reports is no longer needed.
        let settled = &seen[..seen.len() - 1];
        let (low, high) = (settled.iter().min().unwrap(), settled.iter().max().unwrap());
        assert!(high - low <= 30, "the stretch wandered: {seen:?}");
    }

    #[test]
    fn an_overspent_budget_stretches_to_the_cap() {
        let dir = tempfile::tempdir().unwrap();
        let mut budget = Budget::open(dir.path(), settings(Some(MIB), 800), DECEMBER);
        budget.record(2 * MIB, 0, 0, DECEMBER + 60);
        assert_eq!(budget.stretch(DECEMBER + 60), 800);
        let interval = budget.stretch_interval(Duration::from_secs(60), DECEMBER + 60);
        assert_eq!(interval, Duration::from_secs(480));
    }

    #[test]
    fn a_new_month_starts_from_zero() {
        let dir = tempfile::tempdir().unwrap();
        let mut budget = Budget::open(dir.path(), settings(Some(MIB), 800), DECEMBER - DAY);
        budget.record(2 * MIB, 5, 7, DECEMBER - 60);
        assert_eq!(budget.usage(DECEMBER - 1).total_bytes(), 2 * MIB + 12);
        assert_eq!(budget.stretch(DECEMBER - 1), 800);
        // Before the first record of December, the usage already says December and zero…
        let usage = budget.usage(DECEMBER + 1);
        assert_eq!((usage.month, usage.total_bytes()), (24_323, 0));
        // …and after it.
        budget.record(10, 20, 30, DECEMBER + 60);
        let usage = budget.usage(DECEMBER + 60);
        assert_eq!(
            (
                usage.month,
                usage.report_bytes,
                usage.probe_bytes,
                usage.other_bytes
            ),
            (24_323, 10, 20, 30)
        );
        // A clock that goes back keeps counting in December.
        budget.record(1, 0, 0, DECEMBER - 3600);
        assert_eq!(budget.usage(DECEMBER - 3600).month, 24_323);
        assert_eq!(budget.usage(DECEMBER + 120).report_bytes, 11);
    }

    #[test]
    fn the_account_survives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let limits = settings(Some(10 * MIB), 1000);
        let mut budget = Budget::open(dir.path(), limits, DECEMBER);
        run(&mut budget, 1024, DECEMBER, 2);
        budget.save().unwrap();
        let now = DECEMBER + 2 * DAY;
        let reopened = Budget::open(dir.path(), limits, now);
        assert_eq!(reopened.usage(now), budget.usage(now));
        assert!(reopened.stretch(now) > 100);
        // The rate survives (rounded to a byte a day).
        assert!((reopened.rate - budget.rate).abs() < 1.0 / 86_400.0);
        // Opened in the next month, the counts start over.
        let january = DECEMBER + 31 * DAY;
        let next = Budget::open(dir.path(), limits, january);
        assert_eq!(next.usage(january).total_bytes(), 0);
        assert_eq!(next.usage(january).month, 24_324);
        // A lower cap than the one saved applies at once.
        let capped = Budget::open(dir.path(), settings(Some(10 * MIB), 150), now);
        assert!(capped.stretch(now) <= 150);
    }

    #[test]
    fn the_state_directory_is_created_on_save() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("not-yet");
        let mut budget = Budget::open(&state, settings(None, 400), DECEMBER);
        budget.record(1, 2, 3, DECEMBER + 1);
        budget.save().unwrap();
        let reopened = Budget::open(&state, settings(None, 400), DECEMBER + 2);
        assert_eq!(reopened.usage(DECEMBER + 2).total_bytes(), 6);
        assert_eq!(reopened.usage(DECEMBER + 2).budget_bytes, None);
    }

    #[test]
    fn a_bad_file_starts_the_month_from_zero() {
        let good = "posmon-data-usage 1\nmonth=24323\nreport_bytes=1\nprobe_bytes=2\nother_bytes=3\nrate_bytes_per_day=4\nstretch_percent=100\nupdated_at=1796083200\n";
        for (text, total) in [
            (good.to_string(), 6),
            (String::new(), 0),
            ("garbage\n\0\u{fffd}".to_string(), 0),
            (
                good.replace("posmon-data-usage 1", "posmon-data-usage 9"),
                0,
            ),
            (good.replace("report_bytes=1", "report_bytes=-1"), 0),
            (
                good.replace("report_bytes=1", "report_bytes=99999999999999999999999"),
                0,
            ),
            (
                good.replace("report_bytes=1", "report_bytes=1099511627777"),
                0,
            ),
            (good.replace("stretch_percent=100", "stretch_percent=99"), 0),
            (
                good.replace("stretch_percent=100", "stretch_percent=4294967295"),
                0,
            ),
            (good.replace("month=24323", "month=0"), 0),
            // A month ahead of the clock.
            (good.replace("month=24323", "month=24400"), 0),
            (good.replace("other_bytes=3\n", ""), 0),
            (good.replace("updated_at=1796083200", "updated_at=x"), 0),
        ] {
            let dir = tempfile::tempdir().unwrap();
            std::fs::write(dir.path().join(STATE_FILE), text.as_bytes()).unwrap();
            let budget = Budget::open(dir.path(), settings(Some(MIB), 500), DECEMBER + 60);
            let usage = budget.usage(DECEMBER + 60);
            assert_eq!(
                (usage.month, usage.total_bytes()),
                (24_323, total),
                "{text:?}"
            );
            // And it can be replaced.
            budget.save().unwrap();
        }
        // An unreadable file (a directory in its place) also starts from zero, but cannot be
        // replaced: the error names the file.
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join(STATE_FILE)).unwrap();
        let budget = Budget::open(dir.path(), settings(Some(MIB), 500), DECEMBER);
        assert_eq!(budget.usage(DECEMBER).total_bytes(), 0);
        let error = budget.save().unwrap_err().to_string();
        assert!(error.contains(STATE_FILE), "{error}");
    }

    #[test]
    fn extreme_numbers_saturate() {
        let dir = tempfile::tempdir().unwrap();
        for (budget_bytes, max) in [(Some(1), 10_000), (Some(u64::MAX), 100), (None, 10_000)] {
            let mut budget = Budget::open(dir.path(), settings(budget_bytes, max), i64::MIN);
            for now in [i64::MIN, -1, 0, DECEMBER, i64::MAX - 1, i64::MAX] {
                budget.record(u64::MAX, u64::MAX, u64::MAX, now);
                budget.record(0, 0, 0, now);
                let usage = budget.usage(now);
                assert!(usage.report_bytes <= limits::DATA_BYTES_MAX);
                assert!((limits::DATA_MONTH_MIN..=limits::DATA_MONTH_MAX).contains(&usage.month));
                assert!((100..=max).contains(&usage.stretch_percent), "{usage:?}");
                assert!(budget.rate.is_finite());
                let _ = budget.stretch_interval(Duration::MAX, now);
            }
            budget.save().unwrap();
            let reopened = Budget::open(dir.path(), settings(budget_bytes, max), i64::MAX);
            assert_eq!(reopened.usage(i64::MAX).month, limits::DATA_MONTH_MAX);
        }
    }
}
