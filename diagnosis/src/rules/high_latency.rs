//! High latency: a path that works but is slow. The slowest working rung of a probe (ICMP
//! aside) above the configured round trip, cycle after cycle.

use posmon_protocol::{Report, Stage, StageStatus};

use crate::{Category, Evidence, FindingKind, Hysteresis, Party, Policy, Severity, Signal, Text};

pub static HIGH_LATENCY: FindingKind = FindingKind {
    code: "env.network.high_latency",
    category: Category::Environment,
    party: Party::NetworkProvider,
    title: Text {
        en: "High network latency",
        zh_cn: "网络延迟过高",
    },
    remediation: Text {
        en: "Payments to this host will be slow or time out. Check the signal strength or the shop's line for congestion; if it persists, contact the network provider.",
        zh_cn: "到该主机的交易可能缓慢或超时。请检查信号强度或门店线路是否拥塞；如持续存在，请联系网络运营商。",
    },
    hysteresis: Hysteresis::new(3, 3),
};

pub fn evaluate(report: &Report, policy: &Policy<'_>, signals: &mut Vec<Signal>) {
    let limit = policy.thresholds.high_latency_ms;
    for probe in &report.probes {
        // A broken path is the path ladder's finding, not a slow one.
        if probe.first_failure().is_some() {
            continue;
        }
        let slowest = probe
            .stages
            .iter()
            .filter(|stage| stage.status == StageStatus::Ok && stage.stage != Stage::Icmp)
            .filter_map(|stage| stage.latency_ms.map(|latency| (stage.stage, latency.avg)))
            .max_by(|a, b| a.1.total_cmp(&b.1));
        if let Some((stage, average)) = slowest.filter(|(_, average)| *average > limit) {
            signals.push(Signal {
                kind: &HIGH_LATENCY,
                severity: Severity::Warning,
                subject: probe.target.clone(),
                evidence: vec![
                    Evidence::new("target", probe.target.as_str()),
                    Evidence::new("stage", stage.as_str()),
                    Evidence::new("latency_ms", format!("{average:.1}"))
                        .with_threshold(format!("<= {limit}")),
                ],
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::test_support::{check_code, stage, with, CodeCase};
    use posmon_protocol::{LatencyStats, Report, Stage, StageStatus};

    fn tcp_taking(milliseconds: f64) -> Report {
        with(move |report| {
            let mut tcp = stage(Stage::Tcp, StageStatus::Ok, None);
            tcp.latency_ms = Some(LatencyStats {
                min: milliseconds,
                avg: milliseconds,
                max: milliseconds,
                jitter: 0.0,
            });
            report.probes[0].stages = vec![tcp];
        })
    }

    #[test]
    fn high_latency_table() {
        let (slow, fast) = (|| tcp_taking(2500.0), || tcp_taking(80.0));
        check_code(
            CodeCase {
                code: "env.network.high_latency",
                opens: vec![fast(), slow(), slow(), slow()],
                must_not_open: vec![
                    vec![slow(), slow(), fast(), slow(), slow()],
                    vec![tcp_taking(1000.0); 4],
                ],
                closes: vec![fast(), fast(), fast()],
            },
            &[],
        );
    }
}
