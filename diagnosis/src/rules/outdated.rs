//! Outdated system: a software component older than the version policy for the terminal's
//! model allows — critical below the minimum, a warning when behind the latest release for
//! longer than the policy's grace period.

use posmon_protocol::Report;

use crate::version::compare_versions;
use crate::version_policy::VersionRule;
use crate::{Category, Evidence, FindingKind, Hysteresis, Party, Policy, Signal, Text};

pub static POS_APP: FindingKind = FindingKind {
    code: "outdated.pos_app",
    category: Category::Outdated,
    party: Party::SoftwareVendor,
    title: Text {
        en: "POS application outdated",
        zh_cn: "POS 应用版本过旧",
    },
    remediation: Text {
        en: "The POS application is older than the required minimum. Push the current release from the terminal management system or ask the software vendor to update it.",
        zh_cn: "POS 应用版本低于最低要求。请通过终端管理系统推送最新版本，或联系软件供应商升级。",
    },
    // A version is not noisy: one report says it all, in both directions.
    hysteresis: Hysteresis::new(1, 1),
};

pub static OS: FindingKind = FindingKind {
    code: "outdated.os",
    category: Category::Outdated,
    party: Party::SoftwareVendor,
    title: Text {
        en: "Operating system outdated",
        zh_cn: "操作系统版本过旧",
    },
    remediation: Text {
        en: "The terminal's operating system or kernel is older than the required minimum. Schedule an OS update with the software vendor.",
        zh_cn: "终端操作系统或内核版本低于最低要求。请与软件供应商安排系统升级。",
    },
    // A version is not noisy: one report says it all, in both directions.
    hysteresis: Hysteresis::new(1, 1),
};

pub static FIRMWARE: FindingKind = FindingKind {
    code: "outdated.firmware",
    category: Category::Outdated,
    party: Party::PosVendor,
    title: Text {
        en: "Firmware outdated",
        zh_cn: "固件版本过旧",
    },
    remediation: Text {
        en: "The terminal firmware or EMV kernel is older than the required minimum. Ask the POS vendor for the firmware update.",
        zh_cn: "终端固件或 EMV 内核版本低于最低要求。请联系 POS 厂商获取固件升级。",
    },
    // A version is not noisy: one report says it all, in both directions.
    hysteresis: Hysteresis::new(1, 1),
};

/// Components a version policy may name.
pub const KNOWN_COMPONENTS: &[&str] = &["pos_app", "os", "kernel", "firmware", "emv_kernel"];

fn kind_of(component: &str) -> Option<&'static FindingKind> {
    match component {
        "pos_app" => Some(&POS_APP),
        "os" | "kernel" => Some(&OS),
        "firmware" | "emv_kernel" => Some(&FIRMWARE),
        _ => None,
    }
}

pub fn evaluate(report: &Report, policy: &Policy<'_>, signals: &mut Vec<Signal>) {
    let version_of = |component: &str| {
        report
            .software
            .get(component)
            .and_then(|component| component.version.as_deref())
    };
    judge_versions(
        report.labels.model.as_deref(),
        version_of,
        report.observed_at.date(),
        policy,
        signals,
    );
}

/// The signals of a terminal of `model` whose components have the versions `version_of`
/// gives, on `today`: what [`evaluate`] finds in a report, for a terminal known by its model and
/// versions — so that a new policy re-judges every terminal without waiting for its reports.
pub fn judge_versions<'v>(
    model: Option<&str>,
    version_of: impl Fn(&str) -> Option<&'v str>,
    today: time::Date,
    policy: &Policy<'_>,
    signals: &mut Vec<Signal>,
) {
    for rule in policy.versions {
        if rule.model.is_some() && rule.model.as_deref() != model {
            continue;
        }
        let Some(kind) = kind_of(&rule.component) else {
            continue;
        };
        // An unknown version is not evidence of an old one.
        let Some(version) = version_of(&rule.component) else {
            continue;
        };
        if let Some((below, threshold)) = judge(version, rule, today) {
            signals.push(Signal {
                kind,
                // Old software threatens payments; it does not stop them.
                severity: crate::readiness::severity_of(kind, &rule.component, policy.roles),
                subject: rule.component.clone(),
                evidence: vec![
                    Evidence::new(rule.component.as_str(), version).with_threshold(threshold),
                    Evidence::new("below", below.as_str()),
                ],
            });
        }
    }
}

/// Which bound of the policy a version is below.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Below {
    /// The policy's `minimum`: the version must be replaced.
    Minimum,
    /// The policy's `latest`, after the grace period.
    Latest,
}

impl Below {
    pub fn as_str(self) -> &'static str {
        match self {
            Below::Minimum => "minimum",
            Below::Latest => "latest",
        }
    }
}

/// How far behind the policy `version` is on `today`, and the threshold it crossed.
fn judge(version: &str, rule: &VersionRule, today: time::Date) -> Option<(Below, String)> {
    if compare_versions(version, &rule.minimum).is_lt() {
        return Some((Below::Minimum, format!(">= {}", rule.minimum)));
    }
    let latest = rule.latest.as_deref()?;
    if !compare_versions(version, latest).is_lt() {
        return None;
    }
    match rule.latest_released_on {
        None => Some((Below::Latest, format!(">= {latest}"))),
        Some(released) => {
            // A deadline beyond the calendar never passes.
            let deadline =
                released.checked_add(time::Duration::days(i64::from(rule.update_within_days)))?;
            (today > deadline).then(|| {
                (
                    Below::Latest,
                    format!(">= {latest} since {deadline} (released {released})"),
                )
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{check_code, healthy_report, with, CodeCase};
    use crate::Severity;
    use posmon_protocol::ComponentVersion;
    use time::macros::date;

    fn rule(component: &str, model: Option<&str>, minimum: &str) -> VersionRule {
        VersionRule {
            component: component.into(),
            model: model.map(str::to_string),
            minimum: minimum.into(),
            latest: None,
            latest_released_on: None,
            update_within_days: 0,
        }
    }

    fn check(model: Option<&str>, version: Option<&str>, rules: &[VersionRule], expected: &[&str]) {
        let mut report = healthy_report();
        report.labels.model = model.map(str::to_string);
        report.software.insert(
            "pos_app".into(),
            match version {
                Some(version) => ComponentVersion::known(version),
                None => ComponentVersion::unknown("file not found"),
            },
        );
        let mut signals = Vec::new();
        let thresholds = crate::thresholds::Thresholds::default();
        let policy = Policy {
            versions: rules,
            thresholds: &thresholds,
            roles: &crate::readiness::PaymentRoles::default(),
        };
        evaluate(&report, &policy, &mut signals);
        let codes: Vec<&str> = signals.iter().map(|signal| signal.kind.code).collect();
        assert_eq!(codes, expected, "{model:?} {version:?}");
    }

    #[test]
    fn below_the_minimum_is_outdated() {
        let policy = [rule("pos_app", None, "2.10.0")];
        check(None, Some("2.9.9"), &policy, &["outdated.pos_app"]);
        check(None, Some("2.10.0"), &policy, &[]);
        check(None, Some("V2.10.0_20240501"), &policy, &[]);
        check(None, Some("2.10.0-rc1"), &policy, &["outdated.pos_app"]);
        check(None, None, &policy, &[]);
        check(None, Some("1.0"), &[], &[]);
    }

    #[test]
    fn a_model_rule_applies_to_that_model_only() {
        let policy = [rule("pos_app", Some("PAX-A920"), "3.0")];
        check(
            Some("PAX-A920"),
            Some("2.9"),
            &policy,
            &["outdated.pos_app"],
        );
        check(Some("Verifone-V200c"), Some("2.9"), &policy, &[]);
        check(None, Some("2.9"), &policy, &[]);
    }

    /// Old software threatens payments, it does not stop them: even below the minimum it is
    /// a warning, and the evidence says which bound it is below.
    #[test]
    fn old_software_is_a_warning_naming_the_bound() {
        let mut policy = rule("pos_app", None, "2.0");
        policy.latest = Some("2.5".into());
        let thresholds = crate::thresholds::Thresholds::default();
        let roles = crate::readiness::PaymentRoles::default();
        for (version, below) in [("1.9", "minimum"), ("2.1", "latest")] {
            let mut report = healthy_report();
            report
                .software
                .insert("pos_app".into(), ComponentVersion::known(version));
            let mut signals = Vec::new();
            let rules = [policy.clone()];
            let context = Policy {
                versions: &rules,
                thresholds: &thresholds,
                roles: &roles,
            };
            evaluate(&report, &context, &mut signals);
            assert_eq!(signals.len(), 1, "{version}");
            assert_eq!(signals[0].severity, Severity::Warning, "{version}");
            assert!(
                signals[0]
                    .evidence
                    .iter()
                    .any(|evidence| evidence.name == "below" && evidence.value == below),
                "{version}: {:?}",
                signals[0].evidence
            );
        }
    }

    #[test]
    fn behind_the_latest_after_the_grace_period_is_a_warning() {
        let mut policy = rule("firmware", None, "1.0");
        policy.latest = Some("1.4".into());
        policy.latest_released_on = Some(date!(2026 - 11 - 01));
        policy.update_within_days = 14;
        let check =
            |policy: &VersionRule, version: &str, today: time::Date, expected: Option<Below>| {
                let got = judge(version, policy, today).map(|(below, _)| below);
                assert_eq!(got, expected, "{version} on {today}");
            };
        check(&policy, "1.3", date!(2026 - 11 - 10), None);
        check(&policy, "1.3", date!(2026 - 11 - 16), Some(Below::Latest));
        check(&policy, "1.4", date!(2026 - 11 - 26), None);
        check(&policy, "0.9", date!(2026 - 11 - 02), Some(Below::Minimum));
        policy.latest_released_on = None;
        check(&policy, "1.3", date!(2026 - 11 - 02), Some(Below::Latest));
    }

    #[test]
    fn a_policy_or_a_report_at_the_ends_of_the_calendar_does_not_panic() {
        let mut policy = rule("firmware", None, "1.0");
        policy.latest = Some("1.4".into());
        // (released on, grace days, today (the report's date), behind is a warning)
        let cases = [
            (time::Date::MAX, u32::MAX, date!(2026 - 11 - 26), None),
            (time::Date::MAX, 0, time::Date::MAX, None),
            (time::Date::MIN, u32::MAX, date!(2026 - 11 - 26), None),
            (time::Date::MIN, 0, time::Date::MAX, Some(Below::Latest)),
            (date!(2026 - 11 - 01), 14, time::Date::MIN, None),
        ];
        for (released, days, today, expected) in cases {
            policy.latest_released_on = Some(released);
            policy.update_within_days = days;
            let got = judge("1.3", &policy, today).map(|(below, _)| below);
            assert_eq!(
                got, expected,
                "released {released}, {days} days, on {today}"
            );
        }
    }

    #[test]
    fn each_outdated_code_has_its_table() {
        for (code, component) in [
            ("outdated.pos_app", "pos_app"),
            ("outdated.os", "os"),
            ("outdated.os", "kernel"),
            ("outdated.firmware", "firmware"),
            ("outdated.firmware", "emv_kernel"),
        ] {
            let running = |version: &'static str| {
                with(move |report| {
                    report
                        .software
                        .insert(component.into(), ComponentVersion::known(version));
                })
            };
            let mut policy = rule(component, None, "2.0");
            policy.latest = Some("2.5".into());
            check_code(
                CodeCase {
                    code,
                    opens: vec![running("2.5"), running("1.9")],
                    must_not_open: vec![
                        vec![running("2.5"), running("V2.6_20261101")],
                        vec![with(|report| {
                            report
                                .software
                                .insert(component.into(), ComponentVersion::unknown("no file"));
                        })],
                    ],
                    // A warning (behind the latest) is still open; the latest closes it.
                    closes: vec![running("2.1"), running("2.5")],
                },
                &[policy],
            );
        }
    }
}
