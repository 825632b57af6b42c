//! Availability (pure): from each terminal's readiness changes, the time in a period it was
//! able to take payments, per group of terminals; and its CSV.
//!
//! **Able to take payments** is readiness `can_pay` or `at_risk` (an at-risk terminal still
//! pays: something threatens it, nothing stops it). `cannot_pay` is not able. `unknown` — the
//! terminal silent, the collector not running, or the time before its first record — is
//! counted apart and left out of the share: share = able / (able + not able).

use std::collections::BTreeMap;

use posmon_diagnosis::readiness::Readiness;
use serde::Serialize;

/// Seconds of a period by readiness.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Seconds {
    pub can_pay: i64,
    pub at_risk: i64,
    pub cannot_pay: i64,
    pub unknown: i64,
}

impl Seconds {
    fn add(&mut self, readiness: Readiness, seconds: i64) {
        let slot = match readiness {
            Readiness::CanPay => &mut self.can_pay,
            Readiness::AtRisk => &mut self.at_risk,
            Readiness::CannotPay => &mut self.cannot_pay,
            Readiness::Unknown => &mut self.unknown,
        };
        *slot = slot.saturating_add(seconds);
    }

    fn merge(&mut self, other: &Seconds) {
        self.can_pay = self.can_pay.saturating_add(other.can_pay);
        self.at_risk = self.at_risk.saturating_add(other.at_risk);
        self.cannot_pay = self.cannot_pay.saturating_add(other.cannot_pay);
        self.unknown = self.unknown.saturating_add(other.unknown);
    }

    /// Seconds able to take payments.
    pub fn able(&self) -> i64 {
        self.can_pay.saturating_add(self.at_risk)
    }

    /// Seconds whose readiness is known.
    pub fn known(&self) -> i64 {
        self.able().saturating_add(self.cannot_pay)
    }

    /// The share of known time able to take payments, 0 to 1; `None` when nothing is known.
    pub fn share(&self) -> Option<f64> {
        let known = self.known();
        (known > 0).then(|| self.able() as f64 / known as f64)
    }
}

/// One terminal's time in `[from, to)` by readiness, from its changes (time, readiness) in
/// time order: the last change at or before `from` gives the state at `from`; before the
/// first change the readiness is unknown. Changes out of order are taken at the later time.
pub fn terminal_seconds(changes: &[(i64, Readiness)], from: i64, to: i64) -> Seconds {
    let mut seconds = Seconds::default();
    if to <= from {
        return seconds;
    }
    let mut state = Readiness::Unknown;
    let mut since = from;
    for &(at, readiness) in changes {
        let at = at.clamp(since, to);
        if at > since {
            seconds.add(state, at.saturating_sub(since));
            since = at;
        }
        state = readiness;
    }
    seconds.add(state, to.saturating_sub(since));
    seconds
}

/// One group's line of the report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GroupAvailability {
    pub group: String,
    pub terminals: u64,
    /// Able / known, 0 to 1; `None` when no time of the group is known.
    pub available_share: Option<f64>,
    pub seconds: Seconds,
}

/// Sums terminals' seconds by group (the empty group for terminals without the label), groups
/// sorted by name.
pub fn by_group(terminals: impl IntoIterator<Item = (String, Seconds)>) -> Vec<GroupAvailability> {
    let mut groups: BTreeMap<String, (u64, Seconds)> = BTreeMap::new();
    for (group, seconds) in terminals {
        let entry = groups.entry(group).or_default();
        entry.0 = entry.0.saturating_add(1);
        entry.1.merge(&seconds);
    }
    groups
        .into_iter()
        .map(|(group, (terminals, seconds))| GroupAvailability {
            group,
            terminals,
            available_share: seconds.share(),
            seconds,
        })
        .collect()
}

/// A CSV cell: always quoted, quotes doubled; a cell a spreadsheet would run as a formula
/// (starting with `=`, `+`, `-`, `@`, a tab or a carriage return) gets a leading `'`.
pub fn csv_cell(text: &str) -> String {
    let guarded = if text.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{text}")
    } else {
        text.to_string()
    };
    format!("\"{}\"", guarded.replace('"', "\"\""))
}

/// The report as CSV (RFC 4180, CRLF line ends): one header line, one line per group.
pub fn to_csv(by: &str, from: &str, to: &str, groups: &[GroupAvailability]) -> String {
    let mut out = String::new();
    let header = [
        by,
        "terminals",
        "available_percent",
        "can_pay_seconds",
        "at_risk_seconds",
        "cannot_pay_seconds",
        "unknown_seconds",
        "from",
        "to",
    ];
    out.push_str(
        &header
            .iter()
            .map(|cell| csv_cell(cell))
            .collect::<Vec<_>>()
            .join(","),
    );
    out.push_str("\r\n");
    for group in groups {
        let share = group
            .available_share
            .map(|share| format!("{:.3}", share * 100.0))
            .unwrap_or_default();
        let cells = [
            group.group.clone(),
            group.terminals.to_string(),
            share,
            group.seconds.can_pay.to_string(),
            group.seconds.at_risk.to_string(),
            group.seconds.cannot_pay.to_string(),
            group.seconds.unknown.to_string(),
            from.to_string(),
            to.to_string(),
        ];
        out.push_str(
            &cells
                .iter()
                .map(|cell| csv_cell(cell))
                .collect::<Vec<_>>()
                .join(","),
        );
        out.push_str("\r\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use Readiness::*;

    fn check(changes: &[(i64, Readiness)], from: i64, to: i64, expected: [i64; 4]) {
        let seconds = terminal_seconds(changes, from, to);
        assert_eq!(
            [
                seconds.can_pay,
                seconds.at_risk,
                seconds.cannot_pay,
                seconds.unknown
            ],
            expected,
            "{changes:?} over [{from}, {to})"
        );
    }

    #[test]
    fn time_by_readiness_over_a_period() {
        check(&[], 0, 100, [0, 0, 0, 100]);
        check(&[(0, CanPay)], 0, 100, [100, 0, 0, 0]);
        // The state at the start comes from the change before it.
        check(&[(-50, CannotPay), (40, CanPay)], 0, 100, [60, 0, 40, 0]);
        // Unknown before the first record.
        check(&[(30, AtRisk)], 0, 100, [0, 70, 0, 30]);
        // A silent terminal, the collector down: unknown.
        check(
            &[(0, CanPay), (50, Unknown), (80, CanPay)],
            0,
            100,
            [70, 0, 0, 30],
        );
        // Changes after the end, out of order, an empty period.
        check(&[(0, CanPay), (200, CannotPay)], 0, 100, [100, 0, 0, 0]);
        check(&[(50, CanPay), (20, CannotPay)], 0, 100, [0, 0, 50, 50]);
        check(&[(0, CanPay)], 100, 100, [0, 0, 0, 0]);
        check(
            &[(i64::MIN, CanPay), (i64::MAX, CannotPay)],
            i64::MIN,
            i64::MAX,
            [i64::MAX, 0, 0, 0],
        );
    }

    #[test]
    fn groups_sum_and_share() {
        let seconds = |can_pay, at_risk, cannot_pay, unknown| Seconds {
            can_pay,
            at_risk,
            cannot_pay,
            unknown,
        };
        let groups = by_group([
            ("north".to_string(), seconds(60, 20, 20, 0)),
            ("north".to_string(), seconds(0, 0, 0, 100)),
            (String::new(), seconds(0, 0, 0, 10)),
        ]);
        assert_eq!(groups.len(), 2);
        assert_eq!(groups[0].group, "");
        assert_eq!(groups[0].available_share, None);
        assert_eq!(groups[1].terminals, 2);
        assert_eq!(groups[1].available_share, Some(0.8));
        assert_eq!(groups[1].seconds.unknown, 100);
    }

    #[test]
    fn csv_cells_are_quoted_and_formulas_guarded() {
        assert_eq!(csv_cell("north"), "\"north\"");
        assert_eq!(csv_cell("a \"b\", c"), "\"a \"\"b\"\", c\"");
        assert_eq!(csv_cell("=HYPERLINK(1)"), "\"'=HYPERLINK(1)\"");
        assert_eq!(csv_cell("+1"), "\"'+1\"");
        assert_eq!(csv_cell("-1"), "\"'-1\"");
        assert_eq!(csv_cell("@x"), "\"'@x\"");
        assert_eq!(csv_cell("line\nbreak"), "\"line\nbreak\"");
        let csv = to_csv(
            "region",
            "2026-11-01T00:00:00Z",
            "2026-12-01T00:00:00Z",
            &by_group([(
                "=cmd".to_string(),
                Seconds {
                    can_pay: 75,
                    cannot_pay: 25,
                    ..Seconds::default()
                },
            )]),
        );
        let lines: Vec<&str> = csv.split("\r\n").collect();
        assert_eq!(lines[0], "\"region\",\"terminals\",\"available_percent\",\"can_pay_seconds\",\"at_risk_seconds\",\"cannot_pay_seconds\",\"unknown_seconds\",\"from\",\"to\"");
        assert_eq!(lines[1], "\"'=cmd\",\"1\",\"75.000\",\"75\",\"0\",\"25\",\"0\",\"2026-11-01T00:00:00Z\",\"2026-12-01T00:00:00Z\"");
        assert_eq!(lines[2], "");
    }
}
