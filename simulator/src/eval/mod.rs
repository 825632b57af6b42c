//! The diagnosis-quality evaluation: incident types played by the simulator against real
//! collectors, scored on the causes they localize and the parties they call
//! (`posmon-simulator eval`, `bench/eval.sh`).
//!
//! `cases` reads the incident types and their right answers, `runner` plays each against a
//! fresh collector and polls its public API, `score` compares (pure), and this module renders
//! the table and the totals.

pub mod cases;
pub mod runner;
pub mod score;

use serde::Serialize;

use runner::CaseRun;
use score::Counts;

/// A cause (or a local fault) counts as found in time within this many seconds of the onset.
pub const DETECT_AIM_SECONDS: f64 = 30.0;

/// The evaluation's totals over all cases.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Totals {
    pub cases: u64,
    /// Cases that could not run (their error is printed).
    pub failed_cases: u64,
    pub causes: Counts,
    pub terminals: Counts,
    pub cause_precision: f64,
    pub cause_recall: f64,
    pub cause_f1: f64,
    pub terminal_precision: f64,
    pub terminal_recall: f64,
    pub terminal_f1: f64,
    /// Cases with something to find, and those where it was found within the aim.
    pub cases_to_find: u64,
    pub found_in_time: u64,
    /// The slowest time to the right finding among the cases where it was found.
    pub slowest_detect_seconds: Option<f64>,
    /// Readiness right / checked over all cases (when the API shows readiness).
    pub readiness_right: Option<(u64, u64)>,
    /// Findings seen at any time on the healthy fleet.
    pub findings_on_healthy_fleet: u64,
    pub reports_sent: u64,
    pub reports_refused: u64,
    /// Cases whose fleet fell behind its schedule (their times are not valid).
    pub cases_behind: u64,
}

pub fn totals(runs: &[Result<CaseRun, runner::RunError>]) -> Totals {
    let mut totals = Totals {
        cases: runs.len() as u64,
        ..Totals::default()
    };
    for run in runs {
        let Ok(run) = run else {
            totals.failed_cases += 1;
            continue;
        };
        let score = &run.score;
        totals.causes.add(score.causes);
        totals.terminals.add(score.terminals);
        if score.expects_finding {
            totals.cases_to_find += 1;
            if score
                .detect_seconds
                .is_some_and(|seconds| seconds <= DETECT_AIM_SECONDS)
            {
                totals.found_in_time += 1;
            }
        }
        if score.healthy {
            totals.findings_on_healthy_fleet += score.findings_seen;
        }
        if let Some(seconds) = score.detect_seconds {
            totals.slowest_detect_seconds =
                Some(totals.slowest_detect_seconds.unwrap_or(0.0).max(seconds));
        }
        if let Some((right, checked)) = score.readiness_right {
            let (r, c) = totals.readiness_right.unwrap_or((0, 0));
            totals.readiness_right = Some((r + right, c + checked));
        }
        totals.cases_behind += u64::from(run.fell_behind);
        totals.reports_sent += run.reports_sent;
        totals.reports_refused += run.reports_sent.saturating_sub(run.reports_accepted);
    }
    totals.cause_precision = totals.causes.precision();
    totals.cause_recall = totals.causes.recall();
    totals.cause_f1 = totals.causes.f1();
    totals.terminal_precision = totals.terminals.precision();
    totals.terminal_recall = totals.terminals.recall();
    totals.terminal_f1 = totals.terminals.f1();
    totals
}

fn prf(counts: &Counts) -> String {
    format!(
        "{:.2} {:.2} {:.2}",
        counts.precision(),
        counts.recall(),
        counts.f1()
    )
}

/// The table a person reads: one line per case, its mistakes below it, then the totals.
pub fn render(
    names: &[String],
    runs: &[Result<CaseRun, runner::RunError>],
    totals: &Totals,
    wall_seconds: f64,
) -> String {
    let mut text = format!(
        "{:<44} {:>5} {:>14} {:>14} {:>7} {:>9} {:>8}\n",
        "case", "hit", "causes P R F1", "parties P R F1", "found", "readiness", "findings"
    );
    for (name, run) in names.iter().zip(runs) {
        let run = match run {
            Ok(run) => run,
            Err(error) => {
                text.push_str(&format!("{name:<44} could not run: {error}\n"));
                continue;
            }
        };
        let score = &run.score;
        let found = match (score.expects_finding, score.detect_seconds) {
            (false, _) => "-".to_string(),
            (true, Some(seconds)) => format!("{seconds:.0} s"),
            (true, None) => "never".to_string(),
        };
        let readiness = match score.readiness_right {
            Some((right, checked)) if checked > 0 => format!("{right}/{checked}"),
            Some(_) => "-".to_string(),
            None => "n/a".to_string(),
        };
        text.push_str(&format!(
            "{:<44} {:>5} {:>14} {:>14} {:>7} {:>9} {:>8}\n",
            name,
            score.hit_terminals,
            prf(&score.causes),
            prf(&score.terminals),
            found,
            readiness,
            score.findings_seen,
        ));
        for missed in &score.missed_causes {
            text.push_str(&format!("    missed cause: {missed}\n"));
        }
        for wrong in &score.wrong_causes_ever {
            text.push_str(&format!("    wrong cause: {wrong}\n"));
        }
        for mistake in &score.terminal_mistakes {
            text.push_str(&format!("    party: {mistake}\n"));
        }
        if run.fell_behind {
            text.push_str(&format!(
                "    the fleet fell behind its schedule (its run took {:.0} s): times not valid\n",
                run.wall_seconds
            ));
        }
        if run.reports_accepted < run.reports_sent {
            text.push_str(&format!(
                "    the collector refused {} of {} reports\n",
                run.reports_sent - run.reports_accepted,
                run.reports_sent
            ));
        }
        for error in &run.fleet_errors {
            text.push_str(&format!("    fleet error: {error}\n"));
        }
    }
    let readiness = match totals.readiness_right {
        Some((right, checked)) => format!("{right} of {checked} right"),
        None => "not shown by the API".to_string(),
    };
    let slowest = totals
        .slowest_detect_seconds
        .map_or("-".to_string(), |seconds| format!("{seconds:.0} s"));
    text.push_str(&format!(
        "\ntotals over {} cases ({} could not run), {:.0} s:\n\
         localized causes:    precision {:.3}  recall {:.3}  F1 {:.3}  ({} right, {} wrong, {} missed)\n\
         per-terminal party:  precision {:.3}  recall {:.3}  F1 {:.3}  ({} right, {} wrong, {} missed)\n\
         found within {:.0} s: {} of {} cases with something to find (slowest {})\n\
         readiness of hit terminals: {}\n\
         findings on the healthy fleet: {}\n\
         reports sent {}, refused {}; cases whose fleet fell behind its schedule: {}\n",
        totals.cases,
        totals.failed_cases,
        wall_seconds,
        totals.cause_precision,
        totals.cause_recall,
        totals.cause_f1,
        totals.causes.true_positives,
        totals.causes.false_positives,
        totals.causes.false_negatives,
        totals.terminal_precision,
        totals.terminal_recall,
        totals.terminal_f1,
        totals.terminals.true_positives,
        totals.terminals.false_positives,
        totals.terminals.false_negatives,
        DETECT_AIM_SECONDS,
        totals.found_in_time,
        totals.cases_to_find,
        slowest,
        readiness,
        totals.findings_on_healthy_fleet,
        totals.reports_sent,
        totals.reports_refused,
        totals.cases_behind,
    ));
    text
}
