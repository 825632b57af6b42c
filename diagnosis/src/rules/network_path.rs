//! The network path ladder: the first failing rung of a probe names the cause, so one broken
//! router yields one gateway finding, not one finding per rung or per target.

use posmon_protocol::{Report, Stage, StageResult};

use crate::{Category, Evidence, FindingKind, Hysteresis, Party, Policy, Signal, Text};

/// One failed cycle can be a blip: two in a row open a finding, two good ones close it.
const PATH_HYSTERESIS: Hysteresis = Hysteresis::new(2, 2);

pub static LINK_DOWN: FindingKind = FindingKind {
    code: "env.network.link_down",
    category: Category::Environment,
    party: Party::NetworkProvider,
    title: Text {
        en: "Network link down",
        zh_cn: "网络链路中断",
    },
    remediation: Text {
        en: "The terminal has no network link. Check the cable, Wi-Fi or SIM card and the mobile signal; if they are fine, contact the network provider.",
        zh_cn: "终端没有网络连接。请检查网线、Wi-Fi 或 SIM 卡及信号；如均正常，请联系网络运营商。",
    },
    hysteresis: PATH_HYSTERESIS,
};

pub static GATEWAY_UNREACHABLE: FindingKind = FindingKind {
    code: "env.network.gateway_unreachable",
    category: Category::Environment,
    party: Party::NetworkProvider,
    title: Text {
        en: "Default gateway unreachable",
        zh_cn: "默认网关不可达",
    },
    remediation: Text {
        en: "The terminal cannot reach its router. Restart the router or modem at the shop; if it persists, contact the network provider.",
        zh_cn: "终端无法连接到路由器。请重启门店的路由器或调制解调器；如仍未恢复，请联系网络运营商。",
    },    hysteresis: PATH_HYSTERESIS,
};

pub static DNS_FAILURE: FindingKind = FindingKind {
    code: "env.network.dns_failure",
    category: Category::Environment,
    party: Party::NetworkProvider,
    title: Text {
        en: "DNS resolution failed",
        zh_cn: "域名解析失败",
    },
    remediation: Text {
        en: "The terminal cannot resolve the host name. Check the DNS servers configured on the terminal or router; contact the network provider if their resolver fails.",
        zh_cn: "终端无法解析主机名。请检查终端或路由器上配置的 DNS 服务器；如运营商的解析服务故障，请联系网络运营商。",
    },    hysteresis: PATH_HYSTERESIS,
};

pub static HOST_UNREACHABLE: FindingKind = FindingKind {
    code: "env.network.host_unreachable",
    category: Category::Environment,
    party: Party::NetworkProvider,
    title: Text {
        en: "Payment host unreachable",
        zh_cn: "支付主机不可达",
    },
    remediation: Text {
        en: "The terminal reaches the network but not this host. Check firewall rules and the route to the host; if many terminals fail the same host, the host itself is down: contact the acquirer.",
        zh_cn: "终端网络正常，但无法连接该主机。请检查防火墙规则和到该主机的路由；如多台终端同时无法连接同一主机，则为主机故障，请联系收单机构。",
    },    hysteresis: PATH_HYSTERESIS,
};

pub static TLS_FAILURE: FindingKind = FindingKind {
    code: "env.network.tls_failure",
    category: Category::Environment,
    party: Party::NetworkProvider,
    title: Text {
        en: "TLS handshake failed",
        zh_cn: "TLS 握手失败",
    },
    remediation: Text {
        en: "The secure connection to the host fails. Check the terminal's clock and CA certificates; an expired or wrong server certificate must be fixed by the host's operator.",
        zh_cn: "与主机的安全连接失败。请检查终端时钟和 CA 证书；如服务器证书过期或不匹配，需由主机运营方修复。",
    },    hysteresis: PATH_HYSTERESIS,
};

/// The finding kind for a failed rung, and whether it concerns the whole terminal (link and
/// gateway) rather than one target. ICMP is a side measurement, not a rung: it opens nothing.
fn kind_of(stage: Stage) -> Option<(&'static FindingKind, bool)> {
    match stage {
        Stage::Link => Some((&LINK_DOWN, true)),
        Stage::Gateway => Some((&GATEWAY_UNREACHABLE, true)),
        Stage::Dns => Some((&DNS_FAILURE, false)),
        Stage::Tcp | Stage::Http | Stage::Other => Some((&HOST_UNREACHABLE, false)),
        Stage::Tls => Some((&TLS_FAILURE, false)),
        Stage::Icmp => None,
    }
}

fn evidence(target: &str, address: &str, failed: &StageResult) -> Vec<Evidence> {
    let mut evidence = vec![
        Evidence::new("target", target),
        Evidence::new("address", address),
        Evidence::new("stage", failed.stage.as_str()),
    ];
    if let Some(error) = failed.error {
        evidence.push(Evidence::new("error", error.as_str()));
    }
    if let Some(detail) = &failed.detail {
        evidence.push(Evidence::new("detail", detail.as_str()));
    }
    evidence.push(
        Evidence::new(
            "successes",
            format!("{}/{}", failed.successes, failed.attempts),
        )
        .with_threshold("at least 1"),
    );
    if let Some(status) = failed.http_status {
        evidence.push(Evidence::new("http_status", status.to_string()).with_threshold("< 500"));
    }
    evidence
}

pub fn evaluate(report: &Report, policy: &Policy<'_>, signals: &mut Vec<Signal>) {
    for probe in &report.probes {
        let Some(failed) = probe.stages.iter().find(|stage| {
            stage.status == posmon_protocol::StageStatus::Failed && stage.stage != Stage::Icmp
        }) else {
            continue;
        };
        let Some((kind, terminal_wide)) = kind_of(failed.stage) else {
            continue;
        };
        let subject = if terminal_wide {
            String::new()
        } else {
            probe.target.clone()
        };
        // A terminal-wide cause is reported once, however many targets it broke.
        if terminal_wide
            && signals
                .iter()
                .any(|signal| std::ptr::eq(signal.kind, kind) && signal.subject.is_empty())
        {
            continue;
        }
        signals.push(Signal {
            kind,
            severity: crate::readiness::severity_of(kind, &subject, policy.roles),
            subject,
            evidence: evidence(&probe.target, &probe.address, failed),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::tests_support::{failed, ok};
    use super::*;
    use crate::test_support::healthy_report;
    use posmon_protocol::{ErrorKind, ProbeResult};

    /// Runs the rule over probes with the given ladders and returns (code, subject) pairs.
    fn check(ladders: Vec<(&str, Vec<StageResult>)>, expected: &[(&str, &str)]) {
        let mut report = healthy_report();
        report.probes = ladders
            .into_iter()
            .map(|(target, stages)| ProbeResult {
                target: target.into(),
                address: format!("{target}:443"),
                stages,
            })
            .collect();
        let mut signals = Vec::new();
        let thresholds = crate::thresholds::Thresholds::default();
        let policy = Policy {
            versions: &[],
            thresholds: &thresholds,
            roles: &crate::readiness::PaymentRoles::default(),
        };
        evaluate(&report, &policy, &mut signals);
        let got: Vec<(&str, &str)> = signals
            .iter()
            .map(|signal| (signal.kind.code, signal.subject.as_str()))
            .collect();
        assert_eq!(got, expected);
    }

    #[test]
    fn the_first_failing_rung_names_the_cause() {
        use ErrorKind::*;
        use Stage::*;
        check(
            vec![("pay", vec![ok(Dns), ok(Tcp), ok(Tls), ok(Http)])],
            &[],
        );
        check(
            vec![("pay", vec![ok(Dns), failed(Tcp, Refused)])],
            &[("env.network.host_unreachable", "pay")],
        );
        check(
            vec![("pay", vec![failed(Dns, Nxdomain), failed(Tcp, Timeout)])],
            &[("env.network.dns_failure", "pay")],
        );
        check(
            vec![(
                "pay",
                vec![ok(Dns), ok(Tcp), failed(Tls, CertificateExpired)],
            )],
            &[("env.network.tls_failure", "pay")],
        );
        check(
            vec![("pay", vec![ok(Tcp), ok(Tls), failed(Http, HttpStatus)])],
            &[("env.network.host_unreachable", "pay")],
        );
        // ICMP may be unavailable or fail without opening anything.
        check(vec![("pay", vec![ok(Tcp), failed(Icmp, Timeout)])], &[]);
    }

    #[test]
    fn one_broken_router_yields_one_gateway_finding() {
        use ErrorKind::*;
        use Stage::*;
        let broken = || vec![ok(Link), failed(Gateway, Timeout), failed(Dns, Timeout)];
        check(
            vec![
                ("pay", broken()),
                ("tms", broken()),
                ("collector", broken()),
            ],
            &[("env.network.gateway_unreachable", "")],
        );
        check(
            vec![
                ("pay", vec![failed(Link, NoCarrier)]),
                ("tms", vec![failed(Link, NoCarrier)]),
            ],
            &[("env.network.link_down", "")],
        );
    }
}

#[cfg(test)]
mod code_tables {
    use super::tests_support::*;
    use crate::test_support::{check_code, CodeCase};
    use posmon_protocol::{ErrorKind::*, Stage::*};

    #[test]
    fn each_path_code_opens_after_two_bad_cycles_and_closes_after_two_good_ones() {
        let healthy = || ladder(vec![ok(Link), ok(Gateway), ok(Dns), ok(Tcp), ok(Tls)]);
        for (code, broken) in [
            ("env.network.link_down", vec![failed(Link, NoCarrier)]),
            (
                "env.network.gateway_unreachable",
                vec![ok(Link), failed(Gateway, Timeout)],
            ),
            (
                "env.network.dns_failure",
                vec![ok(Link), ok(Gateway), failed(Dns, Nxdomain)],
            ),
            (
                "env.network.host_unreachable",
                vec![ok(Link), ok(Gateway), ok(Dns), failed(Tcp, Refused)],
            ),
            (
                "env.network.tls_failure",
                vec![
                    ok(Link),
                    ok(Gateway),
                    ok(Dns),
                    ok(Tcp),
                    failed(Tls, UnknownCa),
                ],
            ),
        ] {
            let bad = || ladder(broken.clone());
            check_code(
                CodeCase {
                    code,
                    opens: vec![healthy(), bad(), bad()],
                    must_not_open: vec![
                        // One failed cycle is a blip.
                        vec![bad(), healthy(), bad(), healthy()],
                        vec![healthy(), healthy()],
                        // A failed ICMP side measurement is not a broken path.
                        vec![
                            ladder(vec![ok(Tcp), failed(Icmp, Timeout)]),
                            ladder(vec![ok(Tcp), failed(Icmp, Timeout)]),
                        ],
                    ],
                    closes: vec![healthy(), healthy()],
                },
                &[],
            );
        }
    }
}

#[cfg(test)]
mod tests_support {
    use crate::test_support::{stage, with};
    use posmon_protocol::{ErrorKind, Report, Stage, StageResult, StageStatus};

    pub fn ok(kind: Stage) -> StageResult {
        stage(kind, StageStatus::Ok, None)
    }

    pub fn failed(kind: Stage, error: ErrorKind) -> StageResult {
        stage(kind, StageStatus::Failed, Some(error))
    }

    /// A report whose only probe has these stages.
    pub fn ladder(stages: Vec<StageResult>) -> Report {
        with(move |report| report.probes[0].stages = stages.clone())
    }
}
