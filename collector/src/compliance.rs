//! Where a terminal's software stands against the version policy. A terminal's compliance is
//! its open `outdated.*` findings, so the dashboard and the metrics say exactly what the
//! diagnosis says; a component no rule of the policy applies to has no verdict (`no_rule`).
//! Plain data, no IO.

use serde::Serialize;

use crate::config::VersionRule;
use crate::fleet::Terminal;
use posmon_diagnosis::{Category, Severity};

/// Where a terminal's component stands against the policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Compliance {
    /// No rule of the policy applies to the component on the terminal's model: no verdict.
    NoRule,
    /// At or above every rule that applies.
    Current,
    /// Below `latest` after the grace period: an open warning.
    Behind,
    /// Below `minimum`: an open finding whose evidence says `below = minimum`.
    Outdated,
}

impl Compliance {
    pub fn as_str(self) -> &'static str {
        match self {
            Compliance::NoRule => "no_rule",
            Compliance::Current => "current",
            Compliance::Behind => "behind",
            Compliance::Outdated => "outdated",
        }
    }

    /// A terminal's standing on `component` under `policy`: `NoRule` when no rule applies to
    /// it, else from its open findings.
    pub fn against(terminal: &Terminal, component: &str, policy: &[VersionRule]) -> Compliance {
        let model = terminal.labels.model.as_deref();
        if rules_for(policy, model, component).next().is_none() {
            return Compliance::NoRule;
        }
        Compliance::of(terminal, component)
    }

    /// A terminal's standing on `component`, from its open findings (`Current` without any,
    /// whether a rule applies or not).
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

/// The rules of the policy that apply to a terminal of `model` for `component`.
pub fn rules_for<'a>(
    policy: &'a [VersionRule],
    model: Option<&'a str>,
    component: &'a str,
) -> impl Iterator<Item = &'a VersionRule> {
    policy.iter().filter(move |rule| {
        rule.component == component && (rule.model.is_none() || rule.model.as_deref() == model)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use time::OffsetDateTime;

    fn rule(component: &str, model: Option<&str>) -> VersionRule {
        VersionRule {
            component: component.into(),
            model: model.map(str::to_string),
            minimum: "1".into(),
            latest: None,
            latest_released_on: None,
            update_within_days: 0,
        }
    }

    #[test]
    fn a_component_without_a_rule_has_no_verdict() {
        let mut terminal = Terminal::new(Arc::from("T-1"), OffsetDateTime::UNIX_EPOCH);
        terminal.labels.model = Some(Arc::from("PAX-A920"));
        let policy = [rule("pos_app", None), rule("firmware", Some("Sunmi-P2"))];
        assert_eq!(
            Compliance::against(&terminal, "pos_app", &policy),
            Compliance::Current
        );
        assert_eq!(
            Compliance::against(&terminal, "firmware", &policy),
            Compliance::NoRule
        );
        assert_eq!(
            Compliance::against(&terminal, "os", &policy),
            Compliance::NoRule
        );
        assert_eq!(
            Compliance::against(&terminal, "pos_app", &[]),
            Compliance::NoRule
        );
        assert_eq!(Compliance::NoRule.as_str(), "no_rule");
        assert_eq!(
            serde_json::to_value(Compliance::NoRule).ok(),
            Some(serde_json::json!("no_rule"))
        );
    }
}
