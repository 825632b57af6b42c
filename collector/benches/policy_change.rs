//! A new version policy at fleet scale: `Fleet::rejudge_versions`, the pass `PUT
//! /api/v1/policy/versions` runs over every terminal so that outdated findings follow the
//! policy at once. N terminals, each reporting a POS app version; a quarter run 2.x, below the
//! first policy's minimum 3.0.
//!
//! `cargo bench -p posmon-collector --bench policy_change -- 100000 1000000`
//!
//! The fleet is filled through `Fleet::apply_batch` under the first policy (the quarter's
//! findings open); then three policies are applied in turn, 5 times each: the minimum down to
//! 2.0 (the quarter's findings close), back to 3.0 (they open again), and 3.0 again (nothing
//! changes: the cost of the pass itself). p50 and max are printed with the findings changed.

use std::time::{Duration, Instant};

use posmon_collector::config::{Thresholds, VersionRule};
use posmon_collector::fleet::Fleet;
use posmon_diagnosis::readiness::PaymentRoles;
use posmon_diagnosis::test_support::healthy_report;
use posmon_diagnosis::{diagnose, Policy};
use posmon_protocol::ComponentVersion;
use time::macros::datetime;
use time::OffsetDateTime;

const RUNS: usize = 5;
const T0: OffsetDateTime = datetime!(2026-11-26 02:00 UTC);

fn rules(minimum: &str) -> Vec<VersionRule> {
    vec![VersionRule {
        component: "pos_app".into(),
        model: None,
        minimum: minimum.into(),
        latest: None,
        latest_released_on: None,
        update_within_days: 0,
    }]
}

fn policy_of<'a>(
    versions: &'a [VersionRule],
    thresholds: &'a Thresholds,
    roles: &'a PaymentRoles,
) -> Policy<'a> {
    Policy {
        versions,
        thresholds,
        roles,
    }
}

fn p50_max(mut times: Vec<Duration>) -> (Duration, Duration) {
    times.sort_unstable();
    (times[times.len() / 2], times[times.len() - 1])
}

fn run(terminals: usize) {
    let thresholds = Thresholds::default();
    let roles = PaymentRoles::default();
    let first = rules("3.0");
    let fleet = Fleet::new(100_000, 4);
    let filling = Instant::now();
    for index in 0..terminals {
        let mut report = healthy_report();
        report.terminal_id = format!("T-{index:07}");
        report.sequence = 1;
        report.observed_at = T0;
        report.labels.model = Some(format!("model-{}", index % 8));
        let version = if index % 4 == 0 { "2.9.1" } else { "3.2.1" };
        report
            .software
            .insert("pos_app".into(), ComponentVersion::known(version));
        let signals = diagnose(&report, &policy_of(&first, &thresholds, &roles));
        fleet.apply_batch(
            &report.terminal_id.clone(),
            vec![(report, signals)],
            T0,
            &thresholds,
        );
    }
    let filled = filling.elapsed();
    let mut line = format!(
        "{terminals} terminals (filled in {:.1} s):",
        filled.as_secs_f64()
    );
    // (what, the policy before, untimed; the policy timed)
    for (name, before, minimum) in [
        ("minimum 3.0 → 2.0 (closes)", "3.0", "2.0"),
        ("minimum 2.0 → 3.0 (opens)", "2.0", "3.0"),
        ("minimum 3.0 again (no change)", "3.0", "3.0"),
    ] {
        let (before, timed) = (rules(before), rules(minimum));
        let mut times = Vec::with_capacity(RUNS);
        let mut changed = 0;
        for _ in 0..RUNS {
            fleet.rejudge_versions(&policy_of(&before, &thresholds, &roles), T0, &thresholds);
            let started = Instant::now();
            changed = fleet
                .rejudge_versions(&policy_of(&timed, &thresholds, &roles), T0, &thresholds)
                .len();
            times.push(started.elapsed());
        }
        let (p50, max) = p50_max(times);
        line.push_str(&format!(
            " {name}: {changed} findings changed, p50 {:.1} ms, max {:.1} ms;",
            p50.as_secs_f64() * 1e3,
            max.as_secs_f64() * 1e3
        ));
    }
    println!("{line}");
}

fn main() {
    let sizes: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|argument| argument.parse().ok())
        .collect();
    let sizes = if sizes.is_empty() {
        vec![100_000]
    } else {
        sizes
    };
    for terminals in sizes {
        run(terminals.max(8));
    }
}
