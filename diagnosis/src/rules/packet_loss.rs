//! Packet loss: a rung that works but loses a share of its tries (ICMP included), cycle after
//! cycle. One lost packet opens nothing: it takes the share and the repetition.

use posmon_protocol::{Report, StageStatus};

use crate::{Category, Evidence, FindingKind, Hysteresis, Party, Policy, Severity, Signal, Text};

pub static PACKET_LOSS: FindingKind = FindingKind {
    code: "env.network.packet_loss",
    category: Category::Environment,
    party: Party::NetworkProvider,
    title: Text {
        en: "Packet loss",
        zh_cn: "网络丢包",
    },
    remediation: Text {
        en: "Part of the traffic to this host is lost, so payments may fail or be retried. Check the cabling, Wi-Fi interference or mobile signal; if it persists, contact the network provider.",
        zh_cn: "到该主机的部分流量丢失，交易可能失败或重试。请检查网线、Wi-Fi 干扰或移动信号；如持续存在，请联系网络运营商。",
    },
    hysteresis: Hysteresis::new(3, 3),
};

/// Fewer tries than this say nothing about a share.
const MIN_ATTEMPTS: u32 = 2;

pub fn evaluate(report: &Report, policy: &Policy<'_>, signals: &mut Vec<Signal>) {
    let limit = policy.thresholds.packet_loss_percent;
    for probe in &report.probes {
        let worst = probe
            .stages
            .iter()
            .filter(|stage| stage.status == StageStatus::Ok && stage.attempts >= MIN_ATTEMPTS)
            .map(|stage| (stage, stage.loss_ratio() * 100.0))
            .max_by(|a, b| a.1.total_cmp(&b.1));
        if let Some((stage, percent)) = worst.filter(|(_, percent)| *percent >= limit) {
            signals.push(Signal {
                kind: &PACKET_LOSS,
                severity: Severity::Warning,
                subject: probe.target.clone(),
                evidence: vec![
                    Evidence::new("target", probe.target.as_str()),
                    Evidence::new("stage", stage.stage.as_str()),
                    Evidence::new(
                        "successes",
                        format!("{}/{}", stage.successes, stage.attempts),
                    ),
                    Evidence::new("loss_percent", format!("{percent:.0}"))
                        .with_threshold(format!("< {limit}")),
                ],
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::test_support::{check_code, stage, with, CodeCase};
    use posmon_protocol::{Report, Stage, StageStatus};

    fn gateway(successes: u32, attempts: u32) -> Report {
        with(move |report| {
            let mut gateway = stage(Stage::Gateway, StageStatus::Ok, None);
            gateway.attempts = attempts;
            gateway.successes = successes;
            report.probes[0].stages.insert(0, gateway);
        })
    }

    #[test]
    fn packet_loss_table() {
        let (lossy, clean) = (|| gateway(6, 10), || gateway(10, 10));
        check_code(
            CodeCase {
                code: "env.network.packet_loss",
                opens: vec![clean(), lossy(), lossy(), lossy()],
                must_not_open: vec![
                    // One lost packet, once, and then a clean path.
                    vec![gateway(9, 10), clean(), clean()],
                    // One lost packet in every cycle stays under the share.
                    vec![gateway(9, 10); 5],
                    vec![lossy(), lossy(), clean(), lossy(), lossy()],
                    // A single try says nothing about a share.
                    vec![gateway(0, 1); 4],
                ],
                closes: vec![clean(), clean(), clean()],
            },
            &[],
        );
    }
}
