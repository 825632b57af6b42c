//! A process the agent watches (the POS application, its payment service) is not running.

use posmon_protocol::Report;

use crate::{Category, Evidence, FindingKind, Hysteresis, Party, Policy, Signal, Text};

pub static APP_NOT_RUNNING: FindingKind = FindingKind {
    code: "env.software.app_not_running",
    category: Category::Environment,
    party: Party::Merchant,
    title: Text {
        en: "POS application not running",
        zh_cn: "POS 应用未运行",
    },
    remediation: Text {
        en: "The POS application is not running, so the terminal cannot take payments. Start it again or restart the terminal; if it keeps stopping, contact the software vendor.",
        zh_cn: "POS 应用未运行，终端无法收款。请重新启动应用或重启终端；如反复退出，请联系软件供应商。",
    },
    hysteresis: Hysteresis::new(2, 1),
};

pub fn evaluate(report: &Report, policy: &Policy<'_>, signals: &mut Vec<Signal>) {
    let Some(device) = &report.device else {
        return;
    };
    for process in device.processes.iter().filter(|p| !p.running) {
        signals.push(Signal {
            kind: &APP_NOT_RUNNING,
            severity: crate::readiness::severity_of(&APP_NOT_RUNNING, &process.name, policy.roles),
            subject: process.name.clone(),
            evidence: vec![
                Evidence::new("process", process.name.as_str()),
                Evidence::new("running", "false").with_threshold("true"),
            ],
        });
    }
}

#[cfg(test)]
mod tests {
    use crate::test_support::{check_code, with, CodeCase};
    use posmon_protocol::{DeviceStatus, ProcessStatus, Report};

    fn posapp(running: bool) -> Report {
        with(move |report| {
            report.device = Some(DeviceStatus {
                processes: vec![ProcessStatus {
                    name: "posapp".into(),
                    running,
                }],
                ..DeviceStatus::default()
            })
        })
    }

    #[test]
    fn app_not_running_table() {
        check_code(
            CodeCase {
                code: "env.software.app_not_running",
                opens: vec![posapp(true), posapp(false), posapp(false)],
                must_not_open: vec![
                    vec![posapp(false), posapp(true), posapp(false)],
                    vec![posapp(true); 3],
                ],
                closes: vec![posapp(true)],
            },
            &[],
        );
    }
}
