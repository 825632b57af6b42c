//! The shared-cause part of the periodic evaluation at fleet scale: N terminals (30 regions,
//! 3 carriers, 8 models, 3 terminals per merchant, two targets each), of which 2 500 of the
//! 3 000 in one region fail the payment host and 500 more fail it scattered over the rest —
//! 3 000 failing terminals whatever N.
//!
//! `cargo bench -p posmon-collector --bench shared_cause -- 100000 1000000`
//!
//! The fleet is filled through `Fleet::apply_batch` (two reports per terminal, so the failing
//! ones open their findings); then the shared-cause evaluation alone and the whole periodic
//! evaluation (the silence check included, which visits every terminal) are timed 20 times
//! each; p50 and max are printed, with the cause found.

use std::time::{Duration, Instant};

use posmon_collector::config::Thresholds;
use posmon_collector::fleet::Fleet;
use posmon_diagnosis::test_support::{healthy_report, stage};
use posmon_diagnosis::{diagnose, Policy};
use posmon_protocol::{ErrorKind, Report, Stage, StageStatus};
use time::macros::datetime;
use time::OffsetDateTime;

const RUNS: usize = 20;
const HOT_REGION_TERMINALS: usize = 3_000;
const HOT_FAILING: usize = 2_500;
const SCATTERED_FAILING: usize = 500;
const T0: OffsetDateTime = datetime!(2026-11-26 02:00 UTC);

fn report(index: usize, terminals: usize, sequence: u64) -> Report {
    let mut report = healthy_report();
    report.terminal_id = format!("T-{index:07}");
    report.sequence = sequence;
    report.observed_at = T0 + time::Duration::seconds(sequence as i64);
    let region = if index < HOT_REGION_TERMINALS {
        "cn-hot".to_string()
    } else {
        format!("cn-region-{}", index % 29)
    };
    report.labels.region = Some(region);
    report.labels.carrier =
        Some(["china-mobile", "china-unicom", "china-telecom"][index % 3].into());
    report.labels.model = Some(format!("model-{}", (index / 7) % 8));
    report.labels.merchant = Some(format!("M-{}", index / 3));
    let mut tms = report.probes[0].clone();
    tms.target = "tms".into();
    report.probes.push(tms);
    let scattered_every = (terminals - HOT_REGION_TERMINALS) / SCATTERED_FAILING;
    let failing = index < HOT_FAILING
        || (index >= HOT_REGION_TERMINALS
            && (index - HOT_REGION_TERMINALS) % scattered_every == 0
            && (index - HOT_REGION_TERMINALS) / scattered_every < SCATTERED_FAILING);
    if failing {
        report.probes[0].stages = vec![stage(
            Stage::Tcp,
            StageStatus::Failed,
            Some(ErrorKind::Timeout),
        )];
    }
    report
}

fn p50_max(mut times: Vec<Duration>) -> (Duration, Duration) {
    times.sort_unstable();
    (times[times.len() / 2], times[times.len() - 1])
}

fn run(terminals: usize) {
    let thresholds = Thresholds::default();
    let policy = Policy {
        versions: &[],
        thresholds: &thresholds,
        roles: &posmon_diagnosis::readiness::PaymentRoles::default(),
    };
    let fleet = Fleet::new(100_000, 4);
    let filling = Instant::now();
    for sequence in 1..=2 {
        for index in 0..terminals {
            let report = report(index, terminals, sequence);
            let signals = diagnose(&report, &policy);
            let at = report.observed_at;
            fleet.apply_batch(
                &report.terminal_id.clone(),
                vec![(report, signals)],
                at,
                &thresholds,
            );
        }
    }
    let filled = filling.elapsed();
    let now = T0 + time::Duration::seconds(10);
    // The first evaluation opens the cause and suppresses what it explains.
    let started = Instant::now();
    let events = fleet.evaluate(now, &thresholds);
    let first = started.elapsed();
    let causes = fleet.fleet_wide_findings();
    let mut shared = Vec::with_capacity(RUNS);
    let mut whole = Vec::with_capacity(RUNS);
    for run in 0..RUNS {
        let at = now + time::Duration::seconds(run as i64 + 1);
        let started = Instant::now();
        let mut events = Vec::new();
        fleet.evaluate_shared_causes(at, &thresholds, &mut events);
        shared.push(started.elapsed());
        let started = Instant::now();
        fleet.evaluate(at, &thresholds);
        whole.push(started.elapsed());
    }
    let (shared_p50, shared_max) = p50_max(shared);
    let (whole_p50, whole_max) = p50_max(whole);
    println!(
        "{terminals} terminals ({} failing; filled in {:.1} s): first evaluation {:.1} ms ({} events); shared causes p50 {:.2} ms, max {:.2} ms; whole evaluation (silence check included) p50 {:.1} ms, max {:.1} ms",
        HOT_FAILING + SCATTERED_FAILING,
        filled.as_secs_f64(),
        first.as_secs_f64() * 1e3,
        events.len(),
        shared_p50.as_secs_f64() * 1e3,
        shared_max.as_secs_f64() * 1e3,
        whole_p50.as_secs_f64() * 1e3,
        whole_max.as_secs_f64() * 1e3,
    );
    for cause in causes {
        println!(
            "  {} {} explains {}",
            cause.kind.code, cause.subject, cause.explains
        );
    }
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
        run(terminals.max(HOT_REGION_TERMINALS + SCATTERED_FAILING * 2));
    }
}
