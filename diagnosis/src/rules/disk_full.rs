//! A disk with less free space than the configured share: logs, updates and the transaction
//! store start to fail.

use posmon_protocol::Report;

use crate::{Category, Evidence, FindingKind, Hysteresis, Party, Policy, Signal, Text};

pub static DISK_FULL: FindingKind = FindingKind {
    code: "env.hardware.disk_full",
    category: Category::Environment,
    party: Party::Operations,
    title: Text {
        en: "Disk almost full",
        zh_cn: "磁盘空间不足",
    },
    remediation: Text {
        en: "The terminal's storage is nearly full. Remove old logs and update packages from the terminal management system; a full disk stops updates and may stop the POS application.",
        zh_cn: "终端存储空间即将用尽。请通过终端管理系统清理旧日志和升级包；磁盘写满将导致无法升级，并可能使 POS 应用停止工作。",
    },
    hysteresis: Hysteresis::new(2, 2),
};

pub fn evaluate(report: &Report, policy: &Policy<'_>, signals: &mut Vec<Signal>) {
    let Some(device) = &report.device else {
        return;
    };
    let limit = policy.thresholds.disk_free_percent;
    for disk in device.disks.iter().filter(|disk| disk.total_bytes > 0) {
        let free_percent = disk.available_bytes as f64 * 100.0 / disk.total_bytes as f64;
        if free_percent >= limit {
            continue;
        }
        // A full disk threatens payments (logs, updates, the spool); it does not stop them.
        let severity = crate::readiness::severity_of(&DISK_FULL, &disk.mount, policy.roles);
        signals.push(Signal {
            kind: &DISK_FULL,
            severity,
            subject: disk.mount.clone(),
            evidence: vec![
                Evidence::new("mount", disk.mount.as_str()),
                Evidence::new("available_bytes", disk.available_bytes.to_string()),
                Evidence::new("free_percent", format!("{free_percent:.1}"))
                    .with_threshold(format!(">= {limit}")),
            ],
        });
    }
}

#[cfg(test)]
mod tests {
    use crate::test_support::{check_code, with, CodeCase};
    use posmon_protocol::{DeviceStatus, DiskStatus, Report};

    fn root_with_free(available_bytes: u64) -> Report {
        with(move |report| {
            report.device = Some(DeviceStatus {
                disks: vec![DiskStatus {
                    mount: "/".into(),
                    total_bytes: 1000,
                    available_bytes,
                }],
                ..DeviceStatus::default()
            })
        })
    }

    #[test]
    fn disk_full_table() {
        let (full, roomy) = (|| root_with_free(10), || root_with_free(400));
        check_code(
            CodeCase {
                code: "env.hardware.disk_full",
                opens: vec![roomy(), full(), full()],
                must_not_open: vec![vec![full(), roomy(), full()], vec![root_with_free(50); 3]],
                closes: vec![roomy(), roomy()],
            },
            &[],
        );
    }
}
