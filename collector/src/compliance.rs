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
    /// Below `minimum`: an open critical finding.
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
        let worst = terminal
            .findings
            .findings()
            .filter(|finding| {
                finding.kind.category == Category::Outdated && finding.subject == component
            })
            .map(|finding| finding.severity)
            .max();
        match worst {
            None => Compliance::Current,
            Some(Severity::Warning) => Compliance::Behind,
            Some(Severity::Critical) => Compliance::Outdated,
        }
    }
}
