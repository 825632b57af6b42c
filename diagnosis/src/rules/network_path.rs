//! The network path ladder: the first failing rung of a probe names the cause, so one broken
//! router yields one gateway finding, not one finding per rung or per target.

use std::net::IpAddr;

use posmon_protocol::{ErrorKind, Report, Stage, StageResult};

use crate::rules::clock_skew;
use crate::{Category, Evidence, FindingKind, Hysteresis, Party, Policy, Signal, Text};

/// One failed cycle can be a blip: two in a row open a finding, two good ones close it.
const PATH_HYSTERESIS: Hysteresis = Hysteresis::new(2, 2);

pub static LINK_DOWN: FindingKind = FindingKind {
    code: "env.network.link_down",
    category: Category::Environment,
    party: Party::Merchant,
    title: Text {
        en: "Network link down",
        zh_cn: "网络链路中断",
    },
    remediation: Text {
        en: "The terminal has no network link at the shop. The merchant checks the cable, the Wi-Fi or the SIM card and the signal where the terminal stands.",
        zh_cn: "终端在门店没有网络连接。请商户检查终端所在位置的网线、Wi-Fi 或 SIM 卡及信号。",
    },
    hysteresis: PATH_HYSTERESIS,
};

pub static GATEWAY_UNREACHABLE: FindingKind = FindingKind {
    code: "env.network.gateway_unreachable",
    category: Category::Environment,
    party: Party::Merchant,
    title: Text {
        en: "Default gateway unreachable",
        zh_cn: "默认网关不可达",
    },
    remediation: Text {
        en: "The shop's router does not answer the terminal. The merchant checks that the router or modem is powered and restarts it.",
        zh_cn: "门店的路由器没有响应终端。请商户检查路由器或调制解调器的电源并重启。",
    },
    hysteresis: PATH_HYSTERESIS,
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
        en: "The network provider's resolver does not resolve the host name (it fails, does not answer, or says the name does not exist). Contact the network provider.",
        zh_cn: "网络运营商的 DNS 服务器无法解析主机名（解析失败、无响应或名称不存在）。请联系网络运营商。",
    },
    hysteresis: PATH_HYSTERESIS,
};

pub static DNS_ROUTER_FAILURE: FindingKind = FindingKind {
    code: "env.network.dns_router_failure",
    category: Category::Environment,
    party: Party::Merchant,
    title: Text {
        en: "The shop router's DNS fails",
        zh_cn: "门店路由器的 DNS 故障",
    },
    remediation: Text {
        en: "The terminal asks the shop's router to resolve names, and the router fails or does not answer. The merchant restarts the router; if it persists, set the router's DNS servers to the network provider's.",
        zh_cn: "终端通过门店路由器解析域名，而路由器解析失败或无响应。请商户重启路由器；如仍未恢复，请将路由器的 DNS 服务器设为网络运营商提供的地址。",
    },
    hysteresis: PATH_HYSTERESIS,
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
        en: "The shop's router answers, but the host does not: packets are lost beyond the shop (a time-out or no route). Contact the network provider; if many terminals of several networks fail the same host, the host is down and the fleet-wide finding names its operator.",
        zh_cn: "门店路由器正常，但主机没有响应：数据包在门店之外丢失（超时或无路由）。请联系网络运营商；如多个网络的大量终端无法连接同一主机，则为主机故障，全网级告警会指明其运营方。",
    },
    hysteresis: PATH_HYSTERESIS,
};

pub static HOST_REFUSED: FindingKind = FindingKind {
    code: "env.network.host_refused",
    category: Category::Environment,
    party: Party::Acquirer,
    title: Text {
        en: "Payment host refuses the connection",
        zh_cn: "支付主机拒绝连接",
    },
    remediation: Text {
        en: "The host itself answers with a refusal, a reset or a server error: the path is fine and its service is not. The host's operator (the acquirer) must fix the service.",
        zh_cn: "主机本身以拒绝连接、重置连接或服务器错误作答：网络通畅，但其服务异常。需由主机运营方（收单机构）修复服务。",
    },
    hysteresis: PATH_HYSTERESIS,
};

pub static TLS_FAILURE: FindingKind = FindingKind {
    code: "env.network.tls_failure",
    category: Category::Environment,
    party: Party::Acquirer,
    title: Text {
        en: "TLS handshake failed",
        zh_cn: "TLS 握手失败",
    },
    remediation: Text {
        en: "The host's TLS fails while the terminal's clock is right: its certificate is expired, not trusted or for another name, or it ends the handshake with an alert. The host's operator (the acquirer) must fix its certificate or TLS setup.",
        zh_cn: "终端时钟正常，但主机的 TLS 失败：证书过期、不受信任或与域名不符，或主机以告警中止握手。需由主机运营方（收单机构）修复证书或 TLS 配置。",
    },
    hysteresis: PATH_HYSTERESIS,
};

/// The kinds this rule opens, one per failed rung of the path ladder (the clock's among them:
/// the ladder opens it for a TLS rung its wrong clock broke). Their evidence names the failed
/// rung (`stage`, `error`, `detail`).
pub static PATH_KINDS: [&FindingKind; 8] = [
    &LINK_DOWN,
    &GATEWAY_UNREACHABLE,
    &DNS_FAILURE,
    &DNS_ROUTER_FAILURE,
    &HOST_UNREACHABLE,
    &HOST_REFUSED,
    &TLS_FAILURE,
    &clock_skew::CLOCK_BREAKS_TLS,
];

/// Whether `kind` is one this rule opens for a failed rung.
pub fn is_path_kind(kind: &FindingKind) -> bool {
    PATH_KINDS.iter().any(|path| path.code == kind.code)
}

/// The finding kind for a probe's first failed rung, and whether it concerns the whole terminal
/// (link and gateway) rather than one target. The party follows the evidence: who answered
/// (the host refusing, the router's resolver), and whether the terminal's own clock explains a
/// certificate it rejects. ICMP is a side measurement, not a rung: it opens nothing.
fn kind_of(
    report: &Report,
    failed: &StageResult,
    policy: &Policy<'_>,
) -> Option<(&'static FindingKind, bool)> {
    let error = failed.error.unwrap_or(ErrorKind::Other);
    match failed.stage {
        Stage::Link => Some((&LINK_DOWN, true)),
        Stage::Gateway => Some((&GATEWAY_UNREACHABLE, true)),
        Stage::Dns if resolver_is_the_router(report) && resolver_broken(error) => {
            Some((&DNS_ROUTER_FAILURE, false))
        }
        Stage::Dns => Some((&DNS_FAILURE, false)),
        Stage::Tcp if matches!(error, ErrorKind::Refused | ErrorKind::Reset) => {
            Some((&HOST_REFUSED, false))
        }
        Stage::Tcp | Stage::Other => Some((&HOST_UNREACHABLE, false)),
        // The host accepted the connection and the handshake: what fails now is its service.
        Stage::Http => Some((&HOST_REFUSED, false)),
        Stage::Tls if clock_skew::breaks_tls(report, failed, policy) => {
            Some((&clock_skew::CLOCK_BREAKS_TLS, false))
        }
        Stage::Tls => Some((&TLS_FAILURE, false)),
        Stage::Icmp => None,
    }
}

/// Errors of the resolver itself (rather than an answer about the name).
fn resolver_broken(error: ErrorKind) -> bool {
    !matches!(
        error,
        ErrorKind::Nxdomain | ErrorKind::NoData | ErrorKind::NoResolver
    )
}

/// Whether the resolver the terminal asks is the shop's router: the gateway itself or an
/// address in the gateway's subnet (both labels as the agent measured them).
fn resolver_is_the_router(report: &Report) -> bool {
    let (Some(resolver), Some(gateway)) = (&report.labels.resolver, &report.labels.gateway) else {
        return false;
    };
    let Ok(resolver) = resolver.parse::<IpAddr>() else {
        return false;
    };
    let Some((network, prefix)) = gateway.split_once('/') else {
        return false;
    };
    let (Ok(network), Ok(prefix)) = (network.parse::<IpAddr>(), prefix.parse::<u32>()) else {
        return false;
    };
    match (resolver, network) {
        (IpAddr::V4(resolver), IpAddr::V4(network)) if prefix <= 32 => {
            let mask = u32::MAX.checked_shl(32 - prefix).unwrap_or(0);
            u32::from(resolver) & mask == u32::from(network) & mask
        }
        (IpAddr::V6(resolver), IpAddr::V6(network)) if prefix <= 128 => {
            let mask = u128::MAX.checked_shl(128 - prefix).unwrap_or(0);
            u128::from(resolver) & mask == u128::from(network) & mask
        }
        _ => false,
    }
}

fn evidence(
    report: &Report,
    kind: &FindingKind,
    target: &str,
    address: &str,
    failed: &StageResult,
) -> Vec<Evidence> {
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
    // What decided the party: whose resolver failed, how far off the clock is.
    if failed.stage == Stage::Dns {
        for (name, value) in [
            ("resolver", &report.labels.resolver),
            ("gateway_subnet", &report.labels.gateway),
        ] {
            if let Some(value) = value {
                evidence.push(Evidence::new(name, value.as_str()));
            }
        }
    }
    if std::ptr::eq(kind, &clock_skew::CLOCK_BREAKS_TLS) {
        match &report.clock {
            Some(clock) => evidence.push(Evidence::new(
                "clock_offset_seconds",
                format!("{:.1}", clock.offset_ms / 1000.0),
            )),
            // Not measured: the clock itself is before any date it could rightly show.
            None => evidence.push(
                Evidence::new(
                    "terminal_clock",
                    report
                        .observed_at
                        .format(&time::format_description::well_known::Rfc3339)
                        .unwrap_or_default(),
                )
                .with_threshold(
                    clock_skew::CLOCK_FLOOR
                        .format(&time::format_description::well_known::Rfc3339)
                        .map(|floor| format!(">= {floor}"))
                        .unwrap_or_default(),
                ),
            ),
        }
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
        let Some((kind, terminal_wide)) = kind_of(report, failed, policy) else {
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
            evidence: evidence(report, kind, &probe.target, &probe.address, failed),
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
            &[("env.network.host_refused", "pay")],
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
            &[("env.network.host_refused", "pay")],
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
mod party_table {
    use super::tests_support::{failed, ok};
    use super::*;
    use crate::test_support::healthy_report;
    use posmon_protocol::{ClockStatus, ErrorKind::*, ProbeResult, Stage::*};

    /// What a terminal reports around its ladder: the labels the agent measures and the clock.
    struct Context {
        gateway: Option<&'static str>,
        resolver: Option<&'static str>,
        clock_offset_seconds: Option<f64>,
    }

    const CARRIER_DNS: Context = Context {
        gateway: Some("192.168.1.0/24"),
        resolver: Some("10.0.0.53"),
        clock_offset_seconds: Some(0.4),
    };
    const ROUTER_DNS: Context = Context {
        resolver: Some("192.168.1.1"),
        ..CARRIER_DNS
    };
    const ROUTER_SUBNET_DNS: Context = Context {
        resolver: Some("192.168.1.53"),
        ..CARRIER_DNS
    };
    const NO_LABELS: Context = Context {
        gateway: None,
        resolver: None,
        clock_offset_seconds: None,
    };
    const CLOCK_AHEAD: Context = Context {
        clock_offset_seconds: Some(2.0 * 86_400.0),
        ..CARRIER_DNS
    };
    const CLOCK_BEHIND: Context = Context {
        clock_offset_seconds: Some(-3.0 * 86_400.0),
        ..CARRIER_DNS
    };
    const CLOCK_SLIGHTLY_OFF: Context = Context {
        clock_offset_seconds: Some(30.0),
        ..CARRIER_DNS
    };

    /// The (code, party) the rule names for one ladder in one context.
    fn verdict(context: &Context, stages: Vec<StageResult>) -> Vec<(&'static str, &'static str)> {
        let mut report = healthy_report();
        report.labels.gateway = context.gateway.map(str::to_string);
        report.labels.resolver = context.resolver.map(str::to_string);
        report.clock = context.clock_offset_seconds.map(|seconds| ClockStatus {
            offset_ms: seconds * 1000.0,
            uncertainty_ms: 50.0,
            ntp_synchronized: Some(false),
        });
        report.probes = vec![ProbeResult {
            target: "pay".into(),
            address: "pay.example:443".into(),
            stages,
        }];
        let thresholds = crate::thresholds::Thresholds::default();
        let policy = Policy {
            versions: &[],
            thresholds: &thresholds,
            roles: &crate::readiness::PaymentRoles::default(),
        };
        let mut signals = Vec::new();
        evaluate(&report, &policy, &mut signals);
        signals
            .iter()
            .map(|signal| (signal.kind.code, signal.kind.party.as_str()))
            .collect()
    }

    /// (what happened, the context, the ladder, the expected (code, party)).
    type Row = (
        &'static str,
        &'static Context,
        Vec<StageResult>,
        (&'static str, &'static str),
    );

    fn tls_failed(error: posmon_protocol::ErrorKind, days_left: Option<i64>) -> StageResult {
        StageResult {
            certificate_days_left: days_left,
            ..failed(Tls, error)
        }
    }

    /// Without a clock measurement (offline), a clock before the floor explains a rejection for
    /// validity dates; a plausible one does not (the certificate may have expired).
    #[test]
    fn an_unmeasured_clock_before_the_floor_breaks_tls() {
        let thresholds = crate::thresholds::Thresholds::default();
        let policy = Policy {
            versions: &[],
            thresholds: &thresholds,
            roles: &crate::readiness::PaymentRoles::default(),
        };
        let cases = [
            (
                time::macros::datetime!(1970-01-01 00:00:05 UTC),
                CertificateNotYetValid,
                "env.clock_breaks_tls",
            ),
            (
                time::macros::datetime!(2025-12-31 23:59:59 UTC),
                CertificateExpired,
                "env.clock_breaks_tls",
            ),
            (
                time::macros::datetime!(2026-01-01 00:00:00 UTC),
                CertificateExpired,
                "env.network.tls_failure",
            ),
            (
                time::macros::datetime!(2026-12-02 09:00:00 UTC),
                CertificateNotYetValid,
                "env.network.tls_failure",
            ),
            (
                time::macros::datetime!(1970-01-01 00:00:05 UTC),
                UnknownCa,
                "env.network.tls_failure",
            ),
        ];
        for (observed_at, error, code) in cases {
            let mut report = healthy_report();
            report.clock = None;
            report.observed_at = observed_at;
            report.probes = vec![ProbeResult {
                target: "pay".into(),
                address: "pay.example:443".into(),
                stages: vec![ok(Link), ok(Gateway), ok(Dns), ok(Tcp), failed(Tls, error)],
            }];
            let mut signals = Vec::new();
            evaluate(&report, &policy, &mut signals);
            assert_eq!(signals.len(), 1, "{observed_at} {error:?}");
            assert_eq!(signals[0].kind.code, code, "{observed_at} {error:?}");
            let clock = signals[0]
                .evidence
                .iter()
                .find(|evidence| evidence.name == "terminal_clock");
            assert_eq!(
                clock.is_some(),
                code == "env.clock_breaks_tls",
                "{:?}",
                signals[0].evidence
            );
        }
    }

    /// Every row of the party table in README ("Who must act"), and the evidence that moves a
    /// failure from one party to another.
    #[test]
    fn the_party_follows_the_evidence() {
        let up = || vec![ok(Link), ok(Gateway)];
        let rung = |stages: Vec<StageResult>| {
            let mut ladder = up();
            ladder.extend(stages);
            ladder
        };
        let rows: Vec<Row> = vec![
            (
                "the host refuses the connection",
                &CARRIER_DNS,
                rung(vec![ok(Dns), failed(Tcp, Refused)]),
                ("env.network.host_refused", "acquirer"),
            ),
            (
                "the host resets the connection",
                &CARRIER_DNS,
                rung(vec![ok(Dns), failed(Tcp, Reset)]),
                ("env.network.host_refused", "acquirer"),
            ),
            (
                "the host answers 503",
                &CARRIER_DNS,
                rung(vec![ok(Dns), ok(Tcp), ok(Tls), failed(Http, HttpStatus)]),
                ("env.network.host_refused", "acquirer"),
            ),
            (
                "the host serves an expired certificate, the clock is right",
                &CARRIER_DNS,
                rung(vec![
                    ok(Dns),
                    ok(Tcp),
                    tls_failed(CertificateExpired, Some(-400)),
                ]),
                ("env.network.tls_failure", "acquirer"),
            ),
            (
                "the host ends the handshake with an alert",
                &CARRIER_DNS,
                rung(vec![ok(Dns), ok(Tcp), failed(Tls, HandshakeFailed)]),
                ("env.network.tls_failure", "acquirer"),
            ),
            (
                "the host's certificate is from an unknown CA",
                &CLOCK_AHEAD,
                rung(vec![ok(Dns), ok(Tcp), failed(Tls, UnknownCa)]),
                ("env.network.tls_failure", "acquirer"),
            ),
            (
                "an expired certificate, and the clock is not measured",
                &NO_LABELS,
                rung(vec![
                    ok(Dns),
                    ok(Tcp),
                    tls_failed(CertificateExpired, Some(-1)),
                ]),
                ("env.network.tls_failure", "acquirer"),
            ),
            (
                "a certificate expired two years ago, the clock two days ahead",
                &CLOCK_AHEAD,
                rung(vec![
                    ok(Dns),
                    ok(Tcp),
                    tls_failed(CertificateExpired, Some(-730)),
                ]),
                ("env.network.tls_failure", "acquirer"),
            ),
            (
                "expired only by the terminal's clock, two days ahead",
                &CLOCK_AHEAD,
                rung(vec![
                    ok(Dns),
                    ok(Tcp),
                    tls_failed(CertificateExpired, Some(-1)),
                ]),
                ("env.clock_breaks_tls", "operations"),
            ),
            (
                "not yet valid by the terminal's clock, three days behind",
                &CLOCK_BEHIND,
                rung(vec![
                    ok(Dns),
                    ok(Tcp),
                    tls_failed(CertificateNotYetValid, Some(80)),
                ]),
                ("env.clock_breaks_tls", "operations"),
            ),
            (
                "not yet valid, but the clock is ahead: not the clock",
                &CLOCK_AHEAD,
                rung(vec![
                    ok(Dns),
                    ok(Tcp),
                    tls_failed(CertificateNotYetValid, Some(80)),
                ]),
                ("env.network.tls_failure", "acquirer"),
            ),
            (
                "expired, the clock within the allowed offset: not the clock",
                &CLOCK_SLIGHTLY_OFF,
                rung(vec![
                    ok(Dns),
                    ok(Tcp),
                    tls_failed(CertificateExpired, Some(-1)),
                ]),
                ("env.network.tls_failure", "acquirer"),
            ),
            (
                "a time-out towards the host, the gateway fine",
                &CARRIER_DNS,
                rung(vec![ok(Dns), failed(Tcp, Timeout)]),
                ("env.network.host_unreachable", "network_provider"),
            ),
            (
                "no route to the host, the gateway fine",
                &CARRIER_DNS,
                rung(vec![ok(Dns), failed(Tcp, Unreachable)]),
                ("env.network.host_unreachable", "network_provider"),
            ),
            (
                "the link is down",
                &CARRIER_DNS,
                vec![failed(Link, NoCarrier)],
                ("env.network.link_down", "merchant"),
            ),
            (
                "the gateway does not answer",
                &CARRIER_DNS,
                vec![ok(Link), failed(Gateway, Unreachable)],
                ("env.network.gateway_unreachable", "merchant"),
            ),
            (
                "the carrier's resolver fails",
                &CARRIER_DNS,
                rung(vec![failed(Dns, Servfail)]),
                ("env.network.dns_failure", "network_provider"),
            ),
            (
                "the router, as resolver, says the name has no address record",
                &ROUTER_DNS,
                rung(vec![failed(Dns, NoData)]),
                ("env.network.dns_failure", "network_provider"),
            ),
            (
                "the carrier's resolver does not answer",
                &CARRIER_DNS,
                rung(vec![failed(Dns, Timeout)]),
                ("env.network.dns_failure", "network_provider"),
            ),
            (
                "a resolver the agent did not name",
                &NO_LABELS,
                rung(vec![failed(Dns, Servfail)]),
                ("env.network.dns_failure", "network_provider"),
            ),
            (
                "the router, as resolver, fails",
                &ROUTER_DNS,
                rung(vec![failed(Dns, Servfail)]),
                ("env.network.dns_router_failure", "merchant"),
            ),
            (
                "the router, as resolver, does not answer",
                &ROUTER_DNS,
                rung(vec![failed(Dns, Timeout)]),
                ("env.network.dns_router_failure", "merchant"),
            ),
            (
                "a resolver in the shop's subnet does not answer",
                &ROUTER_SUBNET_DNS,
                rung(vec![failed(Dns, Timeout)]),
                ("env.network.dns_router_failure", "merchant"),
            ),
            (
                "the router's resolver says the name does not exist: an answer about the name",
                &ROUTER_DNS,
                rung(vec![failed(Dns, Nxdomain)]),
                ("env.network.dns_failure", "network_provider"),
            ),
        ];
        for (row, context, stages, expected) in rows {
            assert_eq!(verdict(context, stages), vec![expected], "{row}");
        }
    }

    /// The remediation tells the party of its kind to act, in both languages.
    #[test]
    fn each_remediation_names_its_party() {
        for kind in [
            &LINK_DOWN,
            &GATEWAY_UNREACHABLE,
            &DNS_FAILURE,
            &DNS_ROUTER_FAILURE,
            &HOST_UNREACHABLE,
            &HOST_REFUSED,
            &TLS_FAILURE,
            &clock_skew::CLOCK_BREAKS_TLS,
            &clock_skew::CLOCK_SKEW,
        ] {
            let (en, zh_cn) = match kind.party {
                Party::Merchant => ("merchant", "商户"),
                Party::NetworkProvider => ("network provider", "网络运营商"),
                Party::Acquirer => ("acquirer", "收单机构"),
                Party::Operations => ("operations team", "运维团队"),
                Party::PosVendor | Party::SoftwareVendor => panic!("{}", kind.code),
            };
            assert!(kind.remediation.en.contains(en), "{}", kind.code);
            assert!(kind.remediation.zh_cn.contains(zh_cn), "{}", kind.code);
        }
    }

    #[test]
    fn only_a_well_formed_subnet_holds_the_resolver() {
        for (gateway, resolver, router) in [
            ("192.168.1.0/24", "192.168.1.1", true),
            ("192.168.1.0/24", "192.168.2.1", false),
            ("10.0.0.0/8", "10.200.3.4", true),
            ("0.0.0.0/0", "8.8.8.8", true),
            ("192.168.1.1/32", "192.168.1.1", true),
            ("192.168.1.0/33", "192.168.1.1", false),
            ("192.168.1.0", "192.168.1.1", false),
            ("fd00:1::/64", "fd00:1::1", true),
            ("fd00:1::/64", "192.168.1.1", false),
            ("garbage/24", "192.168.1.1", false),
            ("192.168.1.0/24", "not an address", false),
        ] {
            let mut report = healthy_report();
            report.labels.gateway = Some(gateway.into());
            report.labels.resolver = Some(resolver.into());
            assert_eq!(
                resolver_is_the_router(&report),
                router,
                "{gateway} {resolver}"
            );
        }
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
                vec![ok(Link), ok(Gateway), ok(Dns), failed(Tcp, Timeout)],
            ),
            (
                "env.network.host_refused",
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
mod evidence_code_tables {
    use super::tests_support::{failed, ok};
    use crate::test_support::{check_code, with, CodeCase};
    use posmon_protocol::{ClockStatus, ErrorKind::*, Report, Stage::*, StageResult};

    /// A report whose only probe has `stages`, from a terminal that asks its router for names
    /// and whose clock is `offset_seconds` off.
    fn report(stages: Vec<StageResult>, offset_seconds: f64) -> Report {
        with(move |report| {
            report.labels.gateway = Some("192.168.1.0/24".into());
            report.labels.resolver = Some("192.168.1.1".into());
            report.clock = Some(ClockStatus {
                offset_ms: offset_seconds * 1000.0,
                uncertainty_ms: 20.0,
                ntp_synchronized: None,
            });
            report.probes[0].stages = stages.clone();
        })
    }

    #[test]
    fn the_codes_the_evidence_picks_open_and_close_like_the_others() {
        let healthy = || report(vec![ok(Link), ok(Gateway), ok(Dns), ok(Tcp), ok(Tls)], 0.0);
        let router_dns = || report(vec![ok(Link), ok(Gateway), failed(Dns, Servfail)], 0.0);
        let day = 86_400.0;
        let clock_tls = |offset| {
            report(
                vec![
                    ok(Link),
                    ok(Gateway),
                    ok(Dns),
                    ok(Tcp),
                    failed(Tls, CertificateExpired),
                ],
                offset,
            )
        };
        check_code(
            CodeCase {
                code: "env.network.dns_router_failure",
                opens: vec![healthy(), router_dns(), router_dns()],
                must_not_open: vec![vec![router_dns(), healthy(), router_dns(), healthy()]],
                closes: vec![healthy(), healthy()],
            },
            &[],
        );
        check_code(
            CodeCase {
                code: "env.clock_breaks_tls",
                opens: vec![healthy(), clock_tls(2.0 * day), clock_tls(2.0 * day)],
                must_not_open: vec![
                    vec![
                        clock_tls(2.0 * day),
                        healthy(),
                        clock_tls(2.0 * day),
                        healthy(),
                    ],
                    // The clock is right: the certificate is the host's problem.
                    vec![clock_tls(0.0), clock_tls(0.0), clock_tls(0.0)],
                ],
                closes: vec![healthy(), healthy()],
            },
            &[],
        );
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
