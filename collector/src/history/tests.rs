use super::*;

fn metrics() -> HistoryMetrics {
    crate::metrics::Metrics::new(false, 100).unwrap().history
}

fn now() -> i64 {
    OffsetDateTime::now_utc().unix_timestamp()
}

fn open(dir: &Path) -> History {
    History::open(dir, &HistoryConfig::default(), metrics()).unwrap()
}

fn reports(terminal: &str, readiness: Readiness, points: &[(i64, Option<f64>)]) -> Message {
    Message::Reports {
        terminal: Arc::from(terminal),
        received_at: now() - 100,
        readiness: Some(readiness),
        points: points
            .iter()
            .map(|&(at, latency_ms)| ReportPoint {
                at,
                latency_ms,
                loss_ratio: latency_ms.map(|_| 0.0),
            })
            .collect(),
    }
}

/// The chart's points that heard a report: (at, latency).
fn heard(series: &TerminalSeries) -> Vec<(i64, Option<f64>)> {
    series
        .points
        .iter()
        .filter(|point| point.reports > 0)
        .map(|point| (point.at, point.latency_ms))
        .collect()
}

#[test]
fn history_survives_a_restart_and_the_downtime_is_unknown() {
    let dir = tempfile::tempdir().unwrap();
    let now = now();
    let hour = now - now.rem_euclid(3600) - 3 * 3600;
    let history = open(dir.path());
    history.record(reports(
        "T-1",
        Readiness::CanPay,
        &[(hour, Some(20.0)), (hour + 60, Some(40.0))],
    ));
    let point = TrendPoint {
        at: now - 30,
        can_pay: 1,
        ..TrendPoint::default()
    };
    history.record(Message::Trend(point));
    history.stop();
    let before = history.terminal_series("T-1", Range::Week, now).unwrap();
    drop(history);

    let history = open(dir.path());
    let after = history.terminal_series("T-1", Range::Week, now).unwrap();
    // Read a little later than the restart, so that its unknown shows.
    let later = history
        .terminal_series("T-1", Range::Week, now + 10)
        .unwrap()
        .unwrap();
    assert_eq!(
        before.as_ref().map(|series| &series.points),
        after.as_ref().map(|series| &series.points)
    );
    let after = after.unwrap();
    assert_eq!(heard(&after), vec![(hour, Some(30.0))]);
    // Can pay until the restart, unknown from then on.
    let states: Vec<Readiness> = later
        .readiness
        .iter()
        .map(|interval| interval.readiness)
        .collect();
    assert_eq!(states, vec![Readiness::CanPay, Readiness::Unknown]);
    assert_eq!(history.recent_trend(10).unwrap(), vec![point]);
    let day = history
        .terminal_series("T-1", Range::Day, now)
        .unwrap()
        .unwrap();
    assert_eq!(heard(&day), vec![(hour, Some(30.0))]);
}

#[test]
fn series_have_gaps_where_no_report_came_and_heartbeats_hold_the_value() {
    let dir = tempfile::tempdir().unwrap();
    let now = now();
    let start = now - now.rem_euclid(600) - 6 * 600;
    let history = open(dir.path());
    history.record(reports(
        "T-2",
        Readiness::AtRisk,
        &[
            (start, Some(10.0)),
            // A heartbeat in the next point: the value holds.
            (start + 600, None),
            // Nothing in the two after: a gap.
            (start + 3 * 600 + 10, Some(50.0)),
        ],
    ));
    history.stop();
    let series = history
        .terminal_series("T-2", Range::Day, now)
        .unwrap()
        .unwrap();
    assert_eq!(series.step_seconds, 600);
    assert_eq!(series.points.len(), 144);
    let around: Vec<(i64, Option<f64>)> = series
        .points
        .iter()
        .filter(|point| point.at >= start && point.at < start + 5 * 600)
        .map(|point| (point.at - start, point.latency_ms))
        .collect();
    assert_eq!(
        around,
        vec![
            (0, Some(10.0)),
            (600, Some(10.0)),
            (1200, None),
            (1800, Some(50.0)),
            (2400, None)
        ]
    );
    assert!(history
        .terminal_series("T-none", Range::Day, now)
        .unwrap()
        .is_none());
}

#[test]
fn extreme_times_are_refused_and_counted_and_values_clamped() {
    let dir = tempfile::tempdir().unwrap();
    let now = now();
    let metrics = metrics();
    let history = History::open(dir.path(), &HistoryConfig::default(), metrics.clone()).unwrap();
    history.record(reports(
        "T-3",
        Readiness::CanPay,
        &[
            (i64::MIN, Some(1.0)),
            (i64::MAX, Some(1.0)),
            (now - 91 * DAY_SECONDS, Some(1.0)),
            (now + 3600, Some(1.0)),
            (now, Some(f64::MAX)),
        ],
    ));
    history.stop();
    assert_eq!(metrics.points.with_label_values(&["refused"]).get(), 4);
    assert_eq!(metrics.points.with_label_values(&["written"]).get(), 1);
    let series = history
        .terminal_series("T-3", Range::Day, now)
        .unwrap()
        .unwrap();
    let latencies: Vec<Option<f64>> = series
        .points
        .iter()
        .filter(|p| p.reports > 0)
        .map(|p| p.latency_ms)
        .collect();
    assert_eq!(latencies, vec![Some(6553.5)]);
    // After the writer stopped, a message is dropped and counted, never waited on.
    history.record(reports("T-3", Readiness::CanPay, &[(now, Some(1.0))]));
    assert_eq!(metrics.dropped.get(), 1);
}

#[test]
fn availability_counts_able_time_and_unknown_apart() {
    let dir = tempfile::tempdir().unwrap();
    let history = open(dir.path());
    // Within the retention: older changes are pruned.
    let base = now() - 10_000;
    let sweep = |at, readiness| Message::Readiness {
        at: base + at,
        terminals: vec![(Arc::from("T-4"), readiness)],
    };
    history.record(sweep(1000, Readiness::CanPay));
    history.record(sweep(1600, Readiness::CannotPay));
    history.record(sweep(1900, Readiness::AtRisk));
    // A repeat is no change.
    history.record(sweep(1950, Readiness::AtRisk));
    history.stop();
    let all = history
        .availability(base + 700, base + 2200, base + 10_000)
        .unwrap();
    assert_eq!(
        all,
        vec![(
            "T-4".to_string(),
            Seconds {
                can_pay: 600,
                at_risk: 300,
                cannot_pay: 300,
                unknown: 300
            }
        )]
    );
    // Time after now is not counted.
    let until_now = history
        .availability(base + 700, base + 2200, base + 1700)
        .unwrap();
    assert_eq!(until_now[0].1.cannot_pay, 100);
    assert_eq!(until_now[0].1.at_risk, 0);
}

#[test]
fn pruning_keeps_the_retention_and_the_state_at_its_start() {
    let dir = tempfile::tempdir().unwrap();
    let now = now();
    let history = open(dir.path());
    let old = now - 80 * DAY_SECONDS;
    let sweep = |at, readiness| Message::Readiness {
        at,
        terminals: vec![(Arc::from("T-5"), readiness)],
    };
    history.record(sweep(old, Readiness::CanPay));
    history.record(sweep(old + 10, Readiness::CannotPay));
    history.record(reports(
        "T-5",
        Readiness::CanPay,
        &[(old, Some(5.0)), (now - 100, Some(6.0))],
    ));
    history.stop();
    let connection = store::open(dir.path()).unwrap();
    let count = |sql: &str| -> i64 { connection.query_row(sql, [], |row| row.get(0)).unwrap() };
    assert_eq!(
        count("SELECT COUNT(*) FROM history_slots WHERE tier = 1"),
        2
    );
    assert_eq!(
        count("SELECT COUNT(*) FROM history_slots WHERE tier = 0"),
        1
    );
    assert_eq!(count("SELECT COUNT(*) FROM history_readiness"), 3);
    // A 30-day retention: the coarse row of 80 days ago goes, and the first readiness change;
    // the last change before the cutoff stays: it is the state at the cutoff.
    let deleted = store::prune(&connection, now, FINE_RETENTION_DAYS, 30).unwrap();
    assert_eq!(deleted, 2);
    assert_eq!(
        count("SELECT COUNT(*) FROM history_slots WHERE tier = 1"),
        1
    );
    assert_eq!(count("SELECT MIN(at) FROM history_readiness"), old + 10);
    let seconds = history
        .availability(now - 30 * DAY_SECONDS, now, now)
        .unwrap();
    assert_eq!(seconds[0].1.unknown, 0);
    assert!(seconds[0].1.cannot_pay > 29 * DAY_SECONDS);
}

#[test]
fn the_fleet_chart_has_nulls_where_no_point_was_taken() {
    let dir = tempfile::tempdir().unwrap();
    let now = now();
    let history = open(dir.path());
    for minutes_ago in [1, 2, 3, 4, 60, 61] {
        history.record(Message::Trend(TrendPoint {
            at: now - minutes_ago * 60,
            can_pay: 10,
            cannot_pay: 2,
            ..TrendPoint::default()
        }));
    }
    history.stop();
    let series = history.fleet_series(Range::Day, now, 60).unwrap();
    assert_eq!(series.step_seconds, 120);
    assert_eq!(series.points.len(), 720);
    let filled = series
        .points
        .iter()
        .filter(|point| point.can_pay.is_some())
        .count();
    assert!((3..=5).contains(&filled), "{filled} points filled");
    let last = series
        .points
        .iter()
        .rev()
        .find(|point| point.can_pay.is_some())
        .unwrap();
    assert_eq!(last.can_pay, Some(10.0));
    assert_eq!(last.cannot_pay, Some(2.0));
    assert!(series.points[0].can_pay.is_none());
}

#[test]
fn ninety_days_of_history_fit_the_disk_budget() {
    let dir = tempfile::tempdir().unwrap();
    let metrics = metrics();
    let footprint = disk::fill(dir.path(), 40, 90, false, metrics.clone()).unwrap();
    assert_eq!(metrics.dropped.get(), 0);
    assert_eq!(metrics.points.with_label_values(&["refused"]).get(), 0);
    assert!(metrics.points.with_label_values(&["written"]).get() > 40 * 89 * 288);
    let per_day = footprint.used_per_terminal_day();
    assert!(
        per_day <= disk::BYTES_PER_TERMINAL_DAY_BUDGET,
        "{per_day:.0} bytes per terminal per day, over the budget of {}: {footprint:?}",
        disk::BYTES_PER_TERMINAL_DAY_BUDGET
    );
    // Not empty either: the measurement sees the rows.
    assert!(per_day > 100.0, "{footprint:?}");
    eprintln!("{per_day:.1} bytes per terminal per day: {footprint:?}");
    // The fine tier is pruned to its days, the coarse one kept for all 90.
    let connection = store::open(dir.path()).unwrap();
    let days = |tier: u8| -> i64 {
        connection
            .query_row(
                "SELECT COUNT(DISTINCT period) FROM history_slots WHERE tier = ?1",
                [tier],
                |row| row.get(0),
            )
            .unwrap()
    };
    // Periods: the fine tier's 6-hour rows of today and the 2 days before (today's so far).
    let fine_rows = days(FINE.id);
    assert!((9..=12).contains(&fine_rows), "{fine_rows} fine periods");
    assert_eq!(days(COARSE.id), 90);
}
