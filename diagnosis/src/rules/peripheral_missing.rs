//! A peripheral the POS application needs (card reader, printer, PIN pad) is not present.

use posmon_protocol::Report;

use crate::{Category, Evidence, FindingKind, Hysteresis, Party, Policy, Signal, Text};

pub static PERIPHERAL_MISSING: FindingKind = FindingKind {
    code: "env.hardware.peripheral_missing",
    category: Category::Environment,
    party: Party::PosVendor,
    title: Text {
        en: "Peripheral missing",
        zh_cn: "外设未连接",
    },
    remediation: Text {
        en: "A card reader, printer or PIN pad is not detected. Check its cable and power at the shop; if it is connected and still missing, ask the POS vendor to replace it.",
        zh_cn: "未检测到读卡器、打印机或密码键盘。请在门店检查其连接线和电源；如已连接仍无法识别，请联系 POS 厂商更换。",
    },
    hysteresis: Hysteresis::new(2, 1),
};

pub fn evaluate(report: &Report, policy: &Policy<'_>, signals: &mut Vec<Signal>) {
    let Some(device) = &report.device else {
        return;
    };
    for peripheral in device.peripherals.iter().filter(|p| !p.present) {
        let mut evidence = vec![
            Evidence::new("peripheral", peripheral.name.as_str()),
            Evidence::new("present", "false").with_threshold("true"),
        ];
        if let Some(detail) = &peripheral.detail {
            evidence.push(Evidence::new("detail", detail.as_str()));
        }
        signals.push(Signal {
            kind: &PERIPHERAL_MISSING,
            severity: crate::readiness::severity_of(
                &PERIPHERAL_MISSING,
                &peripheral.name,
                policy.roles,
            ),
            subject: peripheral.name.clone(),
            evidence,
        });
    }
}

#[cfg(test)]
mod tests {
    use crate::test_support::{check_code, with, CodeCase};
    use posmon_protocol::{DeviceStatus, PeripheralStatus, Report};

    fn printer(present: bool) -> Report {
        with(move |report| {
            report.device = Some(DeviceStatus {
                peripherals: vec![PeripheralStatus {
                    name: "printer".into(),
                    present,
                    detail: None,
                }],
                ..DeviceStatus::default()
            })
        })
    }

    #[test]
    fn peripheral_missing_table() {
        check_code(
            CodeCase {
                code: "env.hardware.peripheral_missing",
                opens: vec![printer(true), printer(false), printer(false)],
                must_not_open: vec![
                    vec![printer(false), printer(true), printer(false)],
                    vec![printer(true); 3],
                ],
                closes: vec![printer(true)],
            },
            &[],
        );
    }
}
