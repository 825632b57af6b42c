//! Payment readiness: the headline answer to "can this terminal take payments?".
//!
//! A terminal's readiness is a pure function of its open findings (suppressed ones included:
//! a terminal under a host outage still cannot pay) and of what a payment needs — its payment
//! roles: the targets, peripherals and processes without which no card is taken. Severity
//! follows readiness: a signal is critical exactly when it makes its terminal `cannot_pay`
//! ([`severity_of`]), so "critical" means "stops payments" everywhere.

use serde::{Deserialize, Serialize};

use crate::findings::Finding;
use crate::{Category, FindingKind, Severity, Signal, Text};

/// Whether a terminal can take payments.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Readiness {
    /// A payment-critical path, peripheral or process is down, or the clock is so far off
    /// that TLS fails.
    CannotPay,
    /// Payments work, but something threatens them: outdated software, a nearly full disk,
    /// heat, memory, battery, loss or latency, a failing target that payments do not need.
    AtRisk,
    /// Nothing open.
    CanPay,
    /// The terminal is silent: what it can do is not known.
    Unknown,
}

impl Readiness {
    /// Every value, most urgent first: the order of lists and counts.
    pub const ALL: [Readiness; 4] = [
        Readiness::CannotPay,
        Readiness::AtRisk,
        Readiness::Unknown,
        Readiness::CanPay,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Readiness::CannotPay => "cannot_pay",
            Readiness::AtRisk => "at_risk",
            Readiness::CanPay => "can_pay",
            Readiness::Unknown => "unknown",
        }
    }

    pub fn parse(text: &str) -> Option<Readiness> {
        Readiness::ALL
            .into_iter()
            .find(|readiness| readiness.as_str() == text)
    }

    /// 0 for the most urgent ([`Readiness::ALL`]'s order): lists sort by it.
    pub fn urgency(self) -> u8 {
        match self {
            Readiness::CannotPay => 0,
            Readiness::AtRisk => 1,
            Readiness::Unknown => 2,
            Readiness::CanPay => 3,
        }
    }

    pub fn label(self) -> Text {
        match self {
            Readiness::CannotPay => Text {
                en: "Cannot take payments",
                zh_cn: "无法收款",
            },
            Readiness::AtRisk => Text {
                en: "At risk",
                zh_cn: "存在风险",
            },
            Readiness::CanPay => Text {
                en: "Can pay",
                zh_cn: "可以收款",
            },
            Readiness::Unknown => Text {
                en: "Unknown",
                zh_cn: "未知",
            },
        }
    }
}

/// The most names one role list holds, and the longest name.
pub const ROLE_NAMES_MAX: usize = 64;
pub const ROLE_NAME_MAX_BYTES: usize = 128;

/// What a payment needs: the targets (probe names), peripherals and processes that must work
/// for a terminal to take a card. The collector's `[readiness]` section.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PaymentRoles {
    pub targets: Vec<String>,
    pub peripherals: Vec<String>,
    pub processes: Vec<String>,
}

impl Default for PaymentRoles {
    /// The usual setup: the acquirer's host probed as `payment-host`, a card reader and a PIN
    /// pad, and the POS application (`pos_app`, or `posapp` as the kernel's 15-character
    /// process names often spell it).
    fn default() -> Self {
        PaymentRoles {
            targets: vec!["payment-host".into()],
            peripherals: vec!["card_reader".into(), "pin_pad".into()],
            processes: vec!["pos_app".into(), "posapp".into()],
        }
    }
}

/// A role list out of bounds: its key (relative to `[readiness]`) and the problem.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {problem}")]
pub struct RolesError {
    pub key: &'static str,
    pub problem: String,
}

impl PaymentRoles {
    pub fn validate(&self) -> Result<(), RolesError> {
        for (key, names) in [
            ("targets", &self.targets),
            ("peripherals", &self.peripherals),
            ("processes", &self.processes),
        ] {
            if names.len() > ROLE_NAMES_MAX {
                return Err(RolesError {
                    key,
                    problem: format!("at most {ROLE_NAMES_MAX} names"),
                });
            }
            if let Some(name) = names
                .iter()
                .find(|name| name.is_empty() || name.len() > ROLE_NAME_MAX_BYTES)
            {
                return Err(RolesError {
                    key,
                    problem: format!("{name:?}: a name is 1 to {ROLE_NAME_MAX_BYTES} bytes"),
                });
            }
        }
        Ok(())
    }

    fn is_payment_target(&self, name: &str) -> bool {
        self.targets.iter().any(|target| target == name)
    }
}

/// What one open finding does to its terminal's readiness: `cannot_pay`, `at_risk`, or (for
/// silence) `unknown`. `severity` is the rule's own judgement, read only where the rule alone
/// can tell whether payments stop: the clock (off so far that TLS fails) and fleet-wide
/// causes.
pub fn effect(
    kind: &FindingKind,
    subject: &str,
    severity: Severity,
    roles: &PaymentRoles,
) -> Readiness {
    let stops_if = |stops: bool| {
        if stops {
            Readiness::CannotPay
        } else {
            Readiness::AtRisk
        }
    };
    match kind.code {
        "env.network.high_latency" | "env.network.packet_loss" => Readiness::AtRisk,
        // The path ladder: the terminal's own rungs (link, gateway) break every target…
        "env.network.link_down" | "env.network.gateway_unreachable" => Readiness::CannotPay,
        // …a target's rung (DNS, TCP, TLS, HTTP) breaks payments if payments need the target
        // (or, without a target, the whole terminal's path). A clock that breaks TLS does so
        // per target too: it fails only the certificates whose validity it crosses, so another
        // target's rejected certificate says nothing of the payment host's.
        code if code.starts_with("env.network.") || code == "env.clock_breaks_tls" => {
            stops_if(subject.is_empty() || roles.is_payment_target(subject))
        }
        "env.hardware.peripheral_missing" => {
            stops_if(roles.peripherals.iter().any(|name| name == subject))
        }
        "env.software.app_not_running" => {
            stops_if(roles.processes.iter().any(|name| name == subject))
        }
        "env.clock_skew" => stops_if(severity == Severity::Critical),
        _ => match kind.category {
            Category::Availability => Readiness::Unknown,
            Category::Upstream => stops_if(severity == Severity::Critical),
            Category::Environment | Category::Outdated => Readiness::AtRisk,
        },
    }
}

/// The severity of a signal of `kind` about `subject`: critical exactly when it stops
/// payments.
pub fn severity_of(kind: &FindingKind, subject: &str, roles: &PaymentRoles) -> Severity {
    match effect(kind, subject, Severity::Warning, roles) {
        Readiness::CannotPay => Severity::Critical,
        Readiness::AtRisk | Readiness::CanPay | Readiness::Unknown => Severity::Warning,
    }
}

/// A terminal's readiness from its open findings, suppressed ones included: `unknown` when it
/// is silent (what it last said may no longer hold), else the worst effect of a finding, else
/// `can_pay`. A terminal that never reported is `unknown` too: the collector lists none.
pub fn readiness<'a>(
    open: impl IntoIterator<Item = &'a Finding>,
    roles: &PaymentRoles,
) -> Readiness {
    let mut worst = Readiness::CanPay;
    for finding in open {
        match effect(finding.kind, &finding.subject, finding.severity, roles) {
            Readiness::Unknown => return Readiness::Unknown,
            Readiness::CannotPay => worst = Readiness::CannotPay,
            Readiness::AtRisk if worst == Readiness::CanPay => worst = Readiness::AtRisk,
            Readiness::AtRisk | Readiness::CanPay => {}
        }
    }
    worst
}

/// The readiness one report shows on its own, from the rules' signals over it (no hysteresis:
/// what the terminal sees now, as `posmon-agent probe` and the status file tell it): the worst
/// effect of a signal, else `can_pay`.
pub fn readiness_of_signals<'a>(
    signals: impl IntoIterator<Item = &'a Signal>,
    roles: &PaymentRoles,
) -> Readiness {
    let mut worst = Readiness::CanPay;
    for signal in signals {
        let effect = effect(signal.kind, &signal.subject, signal.severity, roles);
        if effect.urgency() < worst.urgency() {
            worst = effect;
        }
    }
    worst
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use time::macros::datetime;

    use super::*;
    use crate::{all_kinds, kind_by_code};

    /// The subject of each role case: a payment one, another one, none (the whole terminal).
    const PAYMENT: &str = "payment";
    const OTHER: &str = "other";
    const NONE: &str = "none";

    fn roles() -> PaymentRoles {
        PaymentRoles {
            targets: vec!["payment-host".into()],
            peripherals: vec!["card_reader".into()],
            processes: vec!["pos_app".into()],
        }
    }

    /// A subject of the given role for a code.
    fn subject(code: &str, role: &str) -> &'static str {
        let payment = match code {
            "env.hardware.peripheral_missing" => "card_reader",
            "env.software.app_not_running" => "pos_app",
            _ => "payment-host",
        };
        match role {
            PAYMENT => payment,
            OTHER => "tms",
            _ => "",
        }
    }

    fn finding(code: &str, subject: &str, severity: Severity) -> Finding {
        Finding {
            id: 1,
            terminal_id: Arc::from("T-1"),
            kind: kind_by_code(code).expect("a known code"),
            severity,
            subject: subject.to_string(),
            evidence: Vec::new(),
            since: datetime!(2026-12-01 00:00 UTC),
            last_seen: datetime!(2026-12-01 00:00 UTC),
            closed_at: None,
            suppressed_by: None,
            explains: 0,
        }
    }

    /// Every code × role (payment subject, another subject, no subject) × the rule's severity:
    /// the readiness of a terminal with only that finding open.
    #[test]
    fn every_code_and_role() {
        use Readiness::{AtRisk as R, CannotPay as X, Unknown as U};
        // code, then (payment, other, none) under a warning and under a critical signal.
        let table: &[(&str, [Readiness; 3], [Readiness; 3])] = &[
            ("env.network.link_down", [X, X, X], [X, X, X]),
            ("env.network.gateway_unreachable", [X, X, X], [X, X, X]),
            ("env.network.dns_failure", [X, R, X], [X, R, X]),
            ("env.network.host_unreachable", [X, R, X], [X, R, X]),
            ("env.network.tls_failure", [X, R, X], [X, R, X]),
            ("env.network.high_latency", [R, R, R], [R, R, R]),
            ("env.network.packet_loss", [R, R, R], [R, R, R]),
            ("env.clock_skew", [R, R, R], [X, X, X]),
            // Per target: the payment host's certificate, another's, none named.
            ("env.clock_breaks_tls", [X, R, X], [X, R, X]),
            ("env.hardware.peripheral_missing", [X, R, R], [X, R, R]),
            ("env.hardware.disk_full", [R, R, R], [R, R, R]),
            ("env.hardware.memory_pressure", [R, R, R], [R, R, R]),
            ("env.hardware.overheat", [R, R, R], [R, R, R]),
            ("env.hardware.battery_low", [R, R, R], [R, R, R]),
            ("env.software.app_not_running", [X, R, R], [X, R, R]),
            ("outdated.pos_app", [R, R, R], [R, R, R]),
            ("outdated.os", [R, R, R], [R, R, R]),
            ("outdated.firmware", [R, R, R], [R, R, R]),
            ("terminal.silent", [U, U, U], [U, U, U]),
            ("upstream.host_outage", [R, R, R], [X, X, X]),
            ("upstream.carrier_outage", [R, R, R], [X, X, X]),
        ];
        let listed: Vec<&str> = table.iter().map(|row| row.0).collect();
        for kind in all_kinds() {
            // A new code (from another rule file) is judged by its family; those of the
            // list above must each have their row.
            if !listed.contains(&kind.code) {
                assert!(
                    kind.code.starts_with("env.network.") || kind.code.starts_with("upstream."),
                    "{} has no row in the readiness table",
                    kind.code
                );
            }
        }
        let roles = roles();
        for (code, warning, critical) in table {
            let Some(kind) = kind_by_code(code) else {
                // Renamed by another rule's change: its family still decides.
                continue;
            };
            for (severity, expected) in
                [(Severity::Warning, warning), (Severity::Critical, critical)]
            {
                for (role, expected) in [PAYMENT, OTHER, NONE].into_iter().zip(expected) {
                    let subject = subject(code, role);
                    assert_eq!(
                        effect(kind, subject, severity, &roles),
                        *expected,
                        "{code} about {subject:?} ({role}) under {severity:?}"
                    );
                    let one = finding(code, subject, severity);
                    assert_eq!(readiness([&one], &roles), *expected, "{code} {role}");
                }
            }
        }
    }

    /// A rule's signal is critical exactly when it stops payments.
    #[test]
    fn severity_follows_readiness() {
        let roles = roles();
        for kind in all_kinds() {
            for role in [PAYMENT, OTHER, NONE] {
                let subject = subject(kind.code, role);
                let expected =
                    if effect(kind, subject, Severity::Warning, &roles) == Readiness::CannotPay {
                        Severity::Critical
                    } else {
                        Severity::Warning
                    };
                assert_eq!(
                    severity_of(kind, subject, &roles),
                    expected,
                    "{}",
                    kind.code
                );
            }
        }
        let host = kind_by_code("env.network.host_unreachable").unwrap();
        assert_eq!(
            severity_of(host, "payment-host", &roles),
            Severity::Critical
        );
        assert_eq!(severity_of(host, "tms", &roles), Severity::Warning);
    }

    /// The rules themselves: each signal's severity, over reports, with the default roles.
    #[test]
    fn the_rules_are_critical_only_when_payments_stop() {
        use crate::test_support::{stage, with};
        use crate::thresholds::Thresholds;
        use crate::version_policy::VersionRule;
        use crate::{diagnose, Policy};
        use posmon_protocol::{
            DeviceStatus, DiskStatus, ErrorKind, PeripheralStatus, ProcessStatus, Stage,
            StageStatus,
        };

        let target_down = |name: &'static str, failed: Stage| {
            with(move |report| {
                report.probes[0].target = name.into();
                report.probes[0].stages =
                    vec![stage(failed, StageStatus::Failed, Some(ErrorKind::Timeout))];
            })
        };
        let device =
            |device: DeviceStatus| with(move |report| report.device = Some(device.clone()));
        let peripheral = |name: &str| DeviceStatus {
            peripherals: vec![PeripheralStatus {
                name: name.into(),
                present: false,
                detail: None,
            }],
            ..DeviceStatus::default()
        };
        let process = |name: &str| DeviceStatus {
            processes: vec![ProcessStatus {
                name: name.into(),
                running: false,
            }],
            ..DeviceStatus::default()
        };
        let cases = [
            (
                "payment host TCP",
                target_down("payment-host", Stage::Tcp),
                "env.network.host_unreachable",
                Severity::Critical,
            ),
            (
                "payment host DNS",
                target_down("payment-host", Stage::Dns),
                "env.network.dns_failure",
                Severity::Critical,
            ),
            (
                "payment host TLS",
                target_down("payment-host", Stage::Tls),
                "env.network.tls_failure",
                Severity::Critical,
            ),
            (
                "payment host HTTP",
                target_down("payment-host", Stage::Http),
                "env.network.host_refused",
                Severity::Critical,
            ),
            (
                "other host TCP",
                target_down("tms", Stage::Tcp),
                "env.network.host_unreachable",
                Severity::Warning,
            ),
            (
                "other host DNS",
                target_down("tms", Stage::Dns),
                "env.network.dns_failure",
                Severity::Warning,
            ),
            (
                "link via any target",
                target_down("tms", Stage::Link),
                "env.network.link_down",
                Severity::Critical,
            ),
            (
                "gateway via any target",
                target_down("tms", Stage::Gateway),
                "env.network.gateway_unreachable",
                Severity::Critical,
            ),
            (
                "card reader",
                device(peripheral("card_reader")),
                "env.hardware.peripheral_missing",
                Severity::Critical,
            ),
            (
                "PIN pad",
                device(peripheral("pin_pad")),
                "env.hardware.peripheral_missing",
                Severity::Critical,
            ),
            (
                "printer",
                device(peripheral("printer")),
                "env.hardware.peripheral_missing",
                Severity::Warning,
            ),
            (
                "POS app",
                device(process("posapp")),
                "env.software.app_not_running",
                Severity::Critical,
            ),
            (
                "another process",
                device(process("backup")),
                "env.software.app_not_running",
                Severity::Warning,
            ),
            (
                "disk with no byte left",
                device(DeviceStatus {
                    disks: vec![DiskStatus {
                        mount: "/".into(),
                        total_bytes: 1000,
                        available_bytes: 0,
                    }],
                    ..DeviceStatus::default()
                }),
                "env.hardware.disk_full",
                Severity::Warning,
            ),
            (
                "POS app below the minimum",
                with(|report| {
                    report.software.insert(
                        "pos_app".into(),
                        posmon_protocol::ComponentVersion::known("1.0"),
                    );
                }),
                "outdated.pos_app",
                Severity::Warning,
            ),
        ];
        let thresholds = Thresholds::default();
        let roles = PaymentRoles::default();
        let versions = [VersionRule {
            component: "pos_app".into(),
            model: None,
            minimum: "2.0".into(),
            latest: None,
            latest_released_on: None,
            update_within_days: 0,
        }];
        let policy = Policy {
            versions: &versions,
            thresholds: &thresholds,
            roles: &roles,
        };
        for (name, report, code, severity) in cases {
            let signals = diagnose(&report, &policy);
            let signal = signals
                .iter()
                .find(|signal| signal.kind.code == code)
                .unwrap_or_else(|| panic!("{name}: no {code} in {signals:?}"));
            assert_eq!(signal.severity, severity, "{name}");
            // And the terminal's readiness agrees with the severity.
            let expected = if severity == Severity::Critical {
                Readiness::CannotPay
            } else {
                Readiness::AtRisk
            };
            assert_eq!(
                effect(signal.kind, &signal.subject, signal.severity, &roles),
                expected,
                "{name}"
            );
        }
    }

    #[test]
    fn the_worst_finding_decides_and_silence_hides_everything() {
        let roles = roles();
        let outdated = finding("outdated.pos_app", "pos_app", Severity::Warning);
        let mut down = finding(
            "env.network.host_unreachable",
            "payment-host",
            Severity::Critical,
        );
        let silent = finding("terminal.silent", "", Severity::Warning);
        assert_eq!(readiness([], &roles), Readiness::CanPay);
        assert_eq!(readiness([&outdated], &roles), Readiness::AtRisk);
        assert_eq!(readiness([&outdated, &down], &roles), Readiness::CannotPay);
        assert_eq!(readiness([&down, &outdated], &roles), Readiness::CannotPay);
        // A fleet-wide outage explains it: the terminal still cannot pay.
        down.suppressed_by = Some(7);
        assert_eq!(readiness([&down], &roles), Readiness::CannotPay);
        assert_eq!(readiness([&down, &silent], &roles), Readiness::Unknown);
        assert_eq!(readiness([&silent, &outdated], &roles), Readiness::Unknown);
    }

    #[test]
    fn one_report_is_as_ready_as_its_worst_signal() {
        let roles = roles();
        let signal = |code: &str, subject: &str| Signal {
            kind: kind_by_code(code).unwrap(),
            severity: Severity::Warning,
            subject: subject.into(),
            evidence: Vec::new(),
        };
        let outdated = signal("outdated.pos_app", "pos_app");
        let down = signal("env.network.host_unreachable", "payment-host");
        let other = signal("env.network.host_unreachable", "tms");
        assert_eq!(readiness_of_signals([], &roles), Readiness::CanPay);
        assert_eq!(readiness_of_signals([&outdated], &roles), Readiness::AtRisk);
        assert_eq!(readiness_of_signals([&other], &roles), Readiness::AtRisk);
        assert_eq!(
            readiness_of_signals([&outdated, &down, &other], &roles),
            Readiness::CannotPay
        );
    }

    #[test]
    fn roles_are_declared_not_guessed() {
        let host = kind_by_code("env.network.host_unreachable").unwrap();
        let mut roles = PaymentRoles::default();
        assert_eq!(
            effect(host, "payment-host", Severity::Warning, &roles),
            Readiness::CannotPay
        );
        assert_eq!(
            effect(host, "acquirer-b", Severity::Warning, &roles),
            Readiness::AtRisk
        );
        roles.targets.push("acquirer-b".into());
        assert_eq!(
            effect(host, "acquirer-b", Severity::Warning, &roles),
            Readiness::CannotPay
        );
    }

    #[test]
    fn wire_names_and_labels() {
        for readiness in Readiness::ALL {
            assert_eq!(Readiness::parse(readiness.as_str()), Some(readiness));
            assert!(!readiness.label().en.is_empty() && !readiness.label().zh_cn.is_empty());
        }
        assert_eq!(Readiness::CannotPay.label().zh_cn, "无法收款");
        assert_eq!(Readiness::parse("critical"), None);
        let urgencies: Vec<u8> = Readiness::ALL.iter().map(|r| r.urgency()).collect();
        assert_eq!(urgencies, [0, 1, 2, 3]);
    }
}
