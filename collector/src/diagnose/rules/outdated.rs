//! Outdated system: a software component older than the minimum the version policy sets for
//! the terminal's model.

use posmon_protocol::Report;

use crate::diagnose::{Category, Evidence, FindingKind, Party, Policy, Severity, Signal, Text};
use crate::version::compare_versions;

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
};

pub static KINDS: &[&FindingKind] = &[&POS_APP, &OS, &FIRMWARE];

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
    let model = report.labels.model.as_deref();
    for rule in policy.versions {
        if rule.model.is_some() && rule.model.as_deref() != model {
            continue;
        }
        let Some(kind) = kind_of(&rule.component) else {
            continue;
        };
        // An unknown version is not evidence of an old one.
        let Some(version) = report
            .software
            .get(&rule.component)
            .and_then(|component| component.version.as_deref())
        else {
            continue;
        };
        if compare_versions(version, &rule.minimum).is_lt() {
            signals.push(Signal {
                kind,
                severity: Severity::Critical,
                subject: rule.component.clone(),
                evidence: vec![Evidence::new(rule.component.as_str(), version)
                    .with_threshold(format!(">= {}", rule.minimum))],
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::VersionRule;
    use crate::diagnose::test_support::healthy_report;
    use posmon_protocol::ComponentVersion;

    fn rule(component: &str, model: Option<&str>, minimum: &str) -> VersionRule {
        VersionRule {
            component: component.into(),
            model: model.map(str::to_string),
            minimum: minimum.into(),
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
        evaluate(&report, &Policy { versions: rules }, &mut signals);
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
}
