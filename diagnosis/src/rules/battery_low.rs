//! Battery low: a battery-powered terminal below the configured charge and not charging.

use posmon_protocol::Report;

use crate::{Category, Evidence, FindingKind, Hysteresis, Party, Policy, Severity, Signal, Text};

pub static BATTERY_LOW: FindingKind = FindingKind {
    code: "env.hardware.battery_low",
    category: Category::Environment,
    party: Party::Merchant,
    title: Text {
        en: "Battery low",
        zh_cn: "电池电量低",
    },
    remediation: Text {
        en: "The terminal's battery is low and it is not charging. Put it on its charger or base; if it does not charge, ask the POS vendor to replace the battery.",
        zh_cn: "终端电量低且未在充电。请将其放回充电座或接上充电器；如无法充电，请联系 POS 厂商更换电池。",
    },
    hysteresis: Hysteresis::new(2, 2),
};

pub fn evaluate(report: &Report, policy: &Policy<'_>, signals: &mut Vec<Signal>) {
    let Some(battery) = report.device.as_ref().and_then(|d| d.battery.as_ref()) else {
        return;
    };
    let limit = policy.thresholds.battery_low_percent;
    // A charging battery is on its way up, whatever its level.
    if battery.percent < limit && battery.charging != Some(true) {
        signals.push(Signal {
            kind: &BATTERY_LOW,
            severity: Severity::Warning,
            subject: String::new(),
            evidence: vec![
                Evidence::new("battery_percent", format!("{:.0}", battery.percent))
                    .with_threshold(format!(">= {limit}")),
                Evidence::new(
                    "charging",
                    battery
                        .charging
                        .map_or("unknown".to_string(), |c| c.to_string()),
                ),
            ],
        });
    }
}

#[cfg(test)]
mod tests {
    use crate::test_support::{check_code, with, CodeCase};
    use posmon_protocol::{BatteryStatus, DeviceStatus, Report};

    fn battery(percent: f64, charging: Option<bool>) -> Report {
        with(move |report| {
            report.device = Some(DeviceStatus {
                battery: Some(BatteryStatus { percent, charging }),
                ..DeviceStatus::default()
            })
        })
    }

    #[test]
    fn battery_low_table() {
        let low = || battery(8.0, Some(false));
        check_code(
            CodeCase {
                code: "env.hardware.battery_low",
                opens: vec![battery(60.0, Some(false)), low(), low()],
                must_not_open: vec![
                    vec![battery(8.0, Some(true)); 3],
                    vec![low(), battery(60.0, None), low()],
                ],
                closes: vec![battery(9.0, Some(true)), battery(40.0, Some(true))],
            },
            &[],
        );
    }
}
