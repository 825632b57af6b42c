//! Overheat: a temperature sensor at or above the configured limit.

use posmon_protocol::Report;

use crate::{Category, Evidence, FindingKind, Hysteresis, Party, Policy, Severity, Signal, Text};

pub static OVERHEAT: FindingKind = FindingKind {
    code: "env.hardware.overheat",
    category: Category::Environment,
    party: Party::Merchant,
    title: Text {
        en: "Terminal overheating",
        zh_cn: "终端过热",
    },
    remediation: Text {
        en: "The terminal is too hot. Move it out of direct sunlight and away from heat sources, keep its vents free; if it stays hot, ask the POS vendor to check the hardware.",
        zh_cn: "终端温度过高。请将其移离阳光直射和热源，保持通风口畅通；如仍过热，请联系 POS 厂商检查硬件。",
    },
    hysteresis: Hysteresis::new(2, 2),
};

pub fn evaluate(report: &Report, policy: &Policy<'_>, signals: &mut Vec<Signal>) {
    let Some(device) = &report.device else {
        return;
    };
    let limit = policy.thresholds.overheat_celsius;
    for sensor in device.temperatures.iter().filter(|t| t.celsius >= limit) {
        signals.push(Signal {
            kind: &OVERHEAT,
            severity: Severity::Warning,
            subject: sensor.sensor.clone(),
            evidence: vec![
                Evidence::new("sensor", sensor.sensor.as_str()),
                Evidence::new("celsius", format!("{:.1}", sensor.celsius))
                    .with_threshold(format!("< {limit}")),
            ],
        });
    }
}

#[cfg(test)]
mod tests {
    use crate::test_support::{check_code, with, CodeCase};
    use posmon_protocol::{DeviceStatus, Report, Temperature};

    fn cpu_at(celsius: f64) -> Report {
        with(move |report| {
            report.device = Some(DeviceStatus {
                temperatures: vec![Temperature {
                    sensor: "cpu_thermal".into(),
                    celsius,
                }],
                ..DeviceStatus::default()
            })
        })
    }

    #[test]
    fn overheat_table() {
        let (hot, cool) = (|| cpu_at(92.0), || cpu_at(55.0));
        check_code(
            CodeCase {
                code: "env.hardware.overheat",
                opens: vec![cool(), hot(), hot()],
                must_not_open: vec![vec![hot(), cool(), hot()], vec![cpu_at(79.9); 3]],
                closes: vec![cool(), cool()],
            },
            &[],
        );
    }
}
