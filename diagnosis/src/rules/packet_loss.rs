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

/// The loss share a stage shows for sure: the lower end of its Wilson interval at one standard
/// error (z = 1). One lost try in three is 33 % measured but only 14 % for sure, so a healthy
/// path with 1 % random loss — where some terminal of a large fleet loses one try in three,
/// three cycles in a row, every minute — opens nothing, while 2 of 3 (39 % for sure) or 6 of
/// 10 (44 %) still cross a 20 % threshold.
fn loss_for_sure(lost: u32, attempts: u32) -> f64 {
    if attempts == 0 {
        return 0.0;
    }
    let n = f64::from(attempts);
    let share = f64::from(lost.min(attempts)) / n;
    let center = share + 1.0 / (2.0 * n);
    let margin = (share * (1.0 - share) / n + 1.0 / (4.0 * n * n)).sqrt();
    ((center - margin) / (1.0 + 1.0 / n)).max(0.0)
}

pub fn evaluate(report: &Report, policy: &Policy<'_>, signals: &mut Vec<Signal>) {
    let limit = policy.thresholds.packet_loss_percent;
    for probe in &report.probes {
        let worst = probe
            .stages
            .iter()
            .filter(|stage| stage.status == StageStatus::Ok && stage.attempts >= MIN_ATTEMPTS)
            .map(|stage| {
                let lost = stage.attempts.saturating_sub(stage.successes);
                (stage, loss_for_sure(lost, stage.attempts) * 100.0)
            })
            .max_by(|a, b| a.1.total_cmp(&b.1));
        if let Some((stage, sure)) = worst.filter(|(_, sure)| *sure >= limit) {
            let percent = stage.loss_ratio() * 100.0;
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
                    Evidence::new("loss_percent", format!("{percent:.0}")),
                    Evidence::new("loss_percent_for_sure", format!("{sure:.0}"))
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
                    // One lost try in three, cycle after cycle: 33 % measured, 14 % for sure
                    // (a healthy fleet under 1 % random loss shows it somewhere every minute).
                    vec![gateway(2, 3); 5],
                ],
                closes: vec![clean(), clean(), clean()],
            },
            &[],
        );
        // Two lost tries in three is loss for sure.
        check_code(
            CodeCase {
                code: "env.network.packet_loss",
                opens: vec![gateway(1, 3), gateway(1, 3), gateway(1, 3)],
                must_not_open: Vec::new(),
                closes: vec![gateway(3, 3), gateway(3, 3), gateway(3, 3)],
            },
            &[],
        );
    }

    #[test]
    fn loss_for_sure_is_the_lower_wilson_bound() {
        use super::loss_for_sure;
        for (lost, attempts, low, high) in [
            (0, 3, 0.0, 0.001),
            (1, 3, 0.13, 0.14),
            (2, 3, 0.38, 0.39),
            (6, 10, 0.44, 0.45),
            (3, 3, 0.74, 0.76),
            (5, 3, 0.74, 0.76),
            (0, 0, 0.0, 0.0),
        ] {
            let sure = loss_for_sure(lost, attempts);
            assert!((low..=high).contains(&sure), "{lost}/{attempts}: {sure}");
        }
    }
}
