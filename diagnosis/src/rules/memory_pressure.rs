//! Memory pressure: less available memory than the configured share, report after report.

use posmon_protocol::Report;

use crate::{Category, Evidence, FindingKind, Hysteresis, Party, Policy, Severity, Signal, Text};

pub static MEMORY_PRESSURE: FindingKind = FindingKind {
    code: "env.hardware.memory_pressure",
    category: Category::Environment,
    party: Party::Operations,
    title: Text {
        en: "Memory almost exhausted",
        zh_cn: "内存不足",
    },
    remediation: Text {
        en: "The terminal is running out of memory and may kill the POS application. Restart the terminal; if it comes back, ask the software vendor about a memory leak.",
        zh_cn: "终端内存即将耗尽，POS 应用可能被系统终止。请重启终端；如问题反复出现，请联系软件供应商排查内存泄漏。",
    },
    hysteresis: Hysteresis::new(3, 3),
};

pub fn evaluate(report: &Report, policy: &Policy<'_>, signals: &mut Vec<Signal>) {
    let Some(device) = &report.device else {
        return;
    };
    let (Some(total), Some(available)) = (device.memory_total_bytes, device.memory_available_bytes)
    else {
        return;
    };
    if total == 0 {
        return;
    }
    let limit = policy.thresholds.memory_available_percent;
    let available_percent = available as f64 * 100.0 / total as f64;
    if available_percent < limit {
        signals.push(Signal {
            kind: &MEMORY_PRESSURE,
            severity: Severity::Warning,
            subject: String::new(),
            evidence: vec![
                Evidence::new("memory_available_bytes", available.to_string()),
                Evidence::new(
                    "memory_available_percent",
                    format!("{available_percent:.1}"),
                )
                .with_threshold(format!(">= {limit}")),
            ],
        });
    }
}

#[cfg(test)]
mod tests {
    use crate::test_support::{check_code, with, CodeCase};
    use posmon_protocol::{DeviceStatus, Report};

    fn available(bytes: u64) -> Report {
        with(move |report| {
            report.device = Some(DeviceStatus {
                memory_total_bytes: Some(1000),
                memory_available_bytes: Some(bytes),
                ..DeviceStatus::default()
            })
        })
    }

    #[test]
    fn memory_pressure_table() {
        let (tight, fine) = (|| available(20), || available(500));
        check_code(
            CodeCase {
                code: "env.hardware.memory_pressure",
                opens: vec![fine(), tight(), tight(), tight()],
                must_not_open: vec![
                    vec![tight(), tight(), fine(), tight(), tight()],
                    vec![available(60); 4],
                ],
                closes: vec![fine(), fine(), fine()],
            },
            &[],
        );
    }
}
