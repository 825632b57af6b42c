//! The fleet trend: one point every `web.trend_interval_seconds` (terminals by readiness, open
//! findings by category), the newest `web.trend_points` kept in a ring in memory.
//!
//! Each point also goes to the history (`history/`), with every terminal's readiness (what
//! changes without a report, silence, is recorded from there); at a start the ring is filled
//! from the stored points. Sampling reads the fleet; it never changes it.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use serde::Serialize;
use time::OffsetDateTime;

use crate::fleet::Fleet;
use crate::history::Message;
use crate::http::AppState;
use posmon_diagnosis::readiness::{PaymentRoles, Readiness};
use posmon_diagnosis::{Category, Severity};

/// One point of the trend.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct TrendPoint {
    /// Unix seconds (collector time).
    pub at: i64,
    /// Terminals by readiness.
    pub cannot_pay: u32,
    pub at_risk: u32,
    pub can_pay: u32,
    pub unknown: u32,
    /// Open findings not explained by a fleet-wide one, by category.
    pub environment: u32,
    pub outdated: u32,
    pub availability: u32,
    pub upstream: u32,
    /// Open critical findings.
    pub critical_findings: u32,
}

impl TrendPoint {
    /// Counts the fleet at `at`.
    pub fn sample(fleet: &Fleet, roles: &PaymentRoles, at: OffsetDateTime) -> TrendPoint {
        let mut point = TrendPoint {
            at: at.unix_timestamp(),
            ..TrendPoint::default()
        };
        let mut count = |category: Category, severity: Severity| {
            let slot = match category {
                Category::Environment => &mut point.environment,
                Category::Outdated => &mut point.outdated,
                Category::Availability => &mut point.availability,
                Category::Upstream => &mut point.upstream,
            };
            *slot += 1;
            if severity == Severity::Critical {
                point.critical_findings += 1;
            }
        };
        let mut readiness = [0u32; 4];
        fleet.for_each_terminal(|terminal| {
            let index = match terminal.readiness(roles) {
                Readiness::CannotPay => 0,
                Readiness::AtRisk => 1,
                Readiness::CanPay => 2,
                Readiness::Unknown => 3,
            };
            readiness[index] += 1;
            for finding in terminal.visible_findings() {
                count(finding.kind.category, finding.severity);
            }
        });
        for finding in fleet.fleet_wide_findings() {
            count(finding.kind.category, finding.severity);
        }
        [
            point.cannot_pay,
            point.at_risk,
            point.can_pay,
            point.unknown,
        ] = readiness;
        point
    }
}

/// The newest points, oldest first, bounded.
#[derive(Debug)]
pub struct Trend {
    points: Mutex<VecDeque<TrendPoint>>,
    capacity: usize,
}

impl Trend {
    pub fn new(capacity: usize) -> Self {
        Trend {
            points: Mutex::new(VecDeque::with_capacity(capacity.min(4096))),
            capacity,
        }
    }

    /// Adds a point, dropping the oldest when full.
    pub fn push(&self, point: TrendPoint) {
        let mut points = self.points.lock().unwrap_or_else(PoisonError::into_inner);
        while points.len() >= self.capacity.max(1) {
            points.pop_front();
        }
        points.push_back(point);
    }

    /// The points taken at or after `since` (Unix seconds), oldest first.
    pub fn since(&self, since: i64) -> Vec<TrendPoint> {
        let points = self.points.lock().unwrap_or_else(PoisonError::into_inner);
        points
            .iter()
            .filter(|point| point.at >= since)
            .copied()
            .collect()
    }
}

/// Takes a point now and then every `web.trend_interval_seconds`, until aborted.
pub async fn sample_periodically(state: Arc<AppState>) {
    let period = Duration::from_secs(state.config.web.trend_interval_seconds);
    // The first point one period after the start: at the start no terminal has reported yet,
    // and an all-zero point would draw a ramp up from nothing.
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let state = Arc::clone(&state);
        // A pass over every terminal: off the async workers.
        let sampled = tokio::task::spawn_blocking(move || {
            let point = TrendPoint::sample(
                &state.fleet,
                &state.config.readiness,
                OffsetDateTime::now_utc(),
            );
            state.trend.push(point);
            state.history.record(Message::Trend(point));
            state.history.record(Message::Readiness {
                at: point.at,
                terminals: state.fleet.readiness_all(&state.config.readiness),
            });
        })
        .await;
        if let Err(error) = sampled {
            tracing::error!(%error, "Taking a point of the fleet trend failed.");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(capacity: usize, pushed: &[i64], since: i64, expected: &[i64]) {
        let trend = Trend::new(capacity);
        for at in pushed {
            trend.push(TrendPoint {
                at: *at,
                ..TrendPoint::default()
            });
        }
        let kept: Vec<i64> = trend.since(since).iter().map(|point| point.at).collect();
        assert_eq!(kept, expected, "capacity {capacity}, pushed {pushed:?}");
    }

    #[test]
    fn keeps_the_newest_points() {
        check(3, &[], 0, &[]);
        check(3, &[1, 2], 0, &[1, 2]);
        check(3, &[1, 2, 3, 4, 5], 0, &[3, 4, 5]);
        check(3, &[1, 2, 3, 4, 5], 4, &[4, 5]);
        check(1, &[1, 2], 0, &[2]);
    }

    #[test]
    fn an_empty_fleet_samples_to_zero() {
        let fleet = Fleet::new(10, 10);
        let at = OffsetDateTime::UNIX_EPOCH + time::Duration::seconds(60);
        assert_eq!(
            TrendPoint::sample(&fleet, &PaymentRoles::default(), at),
            TrendPoint {
                at: 60,
                ..TrendPoint::default()
            }
        );
    }
}
