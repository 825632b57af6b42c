//! Where a terminal's software stands against the version policy. A terminal's compliance is
//! its open `outdated.*` findings, so the dashboard and the metrics say exactly what the
//! diagnosis says. Plain data, no IO.

use serde::Serialize;

use crate::fleet::Terminal;
use posmon_diagnosis::{Category, Severity};

/// Where a terminal's component stands against the policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Compliance {
    /// At or above every rule that applies (or no rule applies).
    Current,
    /// Below `latest` after the grace period: an open warning.
    Behind,
    /// Below `minimum`: an open finding whose evidence says `below = minimum`.
    Outdated,
}

impl Compliance {
    pub fn as_str(self) -> &'static str {
        match self {
            Compliance::Current => "current",
            Compliance::Behind => "behind",
            Compliance::Outdated => "outdated",
        }
    }

    /// A terminal's standing on `component`, from its open findings.
    pub fn of(terminal: &Terminal, component: &str) -> Compliance {
        terminal
            .findings
            .findings()
            .filter(|finding| {
                finding.kind.category == Category::Outdated && finding.subject == component
            })
            .map(|finding| {
                // Findings stored before old software became a warning were critical below
                // the minimum.
                let below_minimum = finding.severity == Severity::Critical
                    || finding
                        .evidence
                        .iter()
                        .any(|evidence| evidence.name == "below" && evidence.value == "minimum");
                if below_minimum {
                    Compliance::Outdated
                } else {
                    Compliance::Behind
                }
            })
            .max_by_key(|compliance| *compliance as u8)
            .unwrap_or(Compliance::Current)
    }
}
