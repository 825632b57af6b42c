//! Shared causes: when terminals fail alike and [`crate::localize`] puts the failures in one
//! scope (a host, the host in one region, a carrier in a region, a model, a firmware, an app
//! version, a merchant, one shop's gateway, a resolver), the cause is one fleet-level finding
//! whose kind — and so whose party — follows the scope's dimensions. A pure function of the
//! localized causes; it never looks at single terminals.

use std::collections::BTreeMap;

use crate::localize::{Cause, Dimension};
use crate::{Category, Evidence, FindingKind, Hysteresis, Party, Severity, Signal, Text};

/// Open at the first evaluation that localizes it (the terminals' own findings have their
/// hysteresis already); close after a few without it, so a flapping incident does not open a
/// new outage every second.
const HYSTERESIS: Hysteresis = Hysteresis::new(1, 3);

pub static HOST_OUTAGE: FindingKind = FindingKind {
    code: "upstream.host_outage",
    category: Category::Upstream,
    party: Party::Acquirer,
    title: Text {
        en: "Host down for many terminals",
        zh_cn: "主机故障（大量终端受影响）",
    },
    remediation: Text {
        en: "Many terminals fail the same host at once (everywhere, or in the region named): the host or its network is down, not the shops. The acquirer or the host's operator must act; the terminals' own findings for this host are suppressed meanwhile.",
        zh_cn: "大量终端同时无法连接同一主机（全部地区或所列地区）：故障在主机或其网络，而非门店。需由收单机构或主机运营方处理；期间各终端针对该主机的告警已被抑制。",
    },
    hysteresis: HYSTERESIS,
};

pub static CARRIER_OUTAGE: FindingKind = FindingKind {
    code: "upstream.carrier_outage",
    category: Category::Upstream,
    party: Party::NetworkProvider,
    title: Text {
        en: "Carrier outage",
        zh_cn: "运营商故障",
    },
    remediation: Text {
        en: "Many terminals of one carrier (in the region named) lost the network or went silent at once: the carrier's network is down. The carrier must act; the terminals' own findings it explains are suppressed meanwhile.",
        zh_cn: "同一运营商（所列地区）的大量终端同时断网或失联：运营商网络故障。需由该运营商处理；期间由此导致的各终端告警已被抑制。",
    },
    hysteresis: HYSTERESIS,
};

pub static REGIONAL_OUTAGE: FindingKind = FindingKind {
    code: "upstream.regional_outage",
    category: Category::Upstream,
    party: Party::Operations,
    title: Text {
        en: "Regional outage across carriers",
        zh_cn: "区域性故障（跨运营商）",
    },
    remediation: Text {
        en: "Many terminals of one region fail alike whatever their carrier: a regional power or backbone outage. Operations must find out what the region shares and inform the merchants; the terminals' own findings it explains are suppressed meanwhile.",
        zh_cn: "同一地区的终端不分运营商同时出现相同故障：可能是区域性停电或骨干网故障。需由运维团队查明原因并通知商户；期间由此导致的各终端告警已被抑制。",
    },
    hysteresis: HYSTERESIS,
};

pub static RESOLVER_OUTAGE: FindingKind = FindingKind {
    code: "upstream.resolver_outage",
    category: Category::Upstream,
    party: Party::NetworkProvider,
    title: Text {
        en: "DNS resolver failing for many terminals",
        zh_cn: "DNS 解析服务器故障（大量终端受影响）",
    },
    remediation: Text {
        en: "The terminals using one resolver fail alike: the resolver is down or answers wrongly. Whoever runs it must act — the carrier for its DNS servers; the terminals' own findings it explains are suppressed meanwhile.",
        zh_cn: "使用同一 DNS 解析服务器的终端出现相同故障：该服务器宕机或应答错误。需由其运营方处理（运营商 DNS 由运营商负责）；期间由此导致的各终端告警已被抑制。",
    },
    hysteresis: HYSTERESIS,
};

pub static MODEL_FAULT: FindingKind = FindingKind {
    code: "upstream.model_fault",
    category: Category::Upstream,
    party: Party::PosVendor,
    title: Text {
        en: "Fault of one terminal model",
        zh_cn: "某一终端型号的故障",
    },
    remediation: Text {
        en: "Terminals of one model fail alike while other models do not: a fault of the model. The POS vendor must act; the terminals' own findings it explains are suppressed meanwhile.",
        zh_cn: "同一型号的终端出现相同故障，其他型号正常：属该型号的缺陷。需由 POS 厂商处理；期间由此导致的各终端告警已被抑制。",
    },
    hysteresis: HYSTERESIS,
};

pub static FIRMWARE_FAULT: FindingKind = FindingKind {
    code: "upstream.firmware_fault",
    category: Category::Upstream,
    party: Party::PosVendor,
    title: Text {
        en: "Fault of one firmware version",
        zh_cn: "某一固件版本的故障",
    },
    remediation: Text {
        en: "Terminals on one firmware version fail alike while others do not: a fault of that firmware. The POS vendor must act (a fix or a rollback); the terminals' own findings it explains are suppressed meanwhile.",
        zh_cn: "运行同一固件版本的终端出现相同故障，其他版本正常：属该固件的缺陷。需由 POS 厂商处理（修复或回退）；期间由此导致的各终端告警已被抑制。",
    },
    hysteresis: HYSTERESIS,
};

pub static APP_FAULT: FindingKind = FindingKind {
    code: "upstream.app_fault",
    category: Category::Upstream,
    party: Party::SoftwareVendor,
    title: Text {
        en: "Fault of one POS app version",
        zh_cn: "某一收银应用版本的故障",
    },
    remediation: Text {
        en: "Terminals on one POS app version fail alike while others do not: a fault of that version. The software vendor must act (a fix or a rollback); the terminals' own findings it explains are suppressed meanwhile.",
        zh_cn: "运行同一收银应用版本的终端出现相同故障，其他版本正常：属该版本的缺陷。需由软件供应商处理（修复或回退）；期间由此导致的各终端告警已被抑制。",
    },
    hysteresis: HYSTERESIS,
};

pub static MERCHANT_OUTAGE: FindingKind = FindingKind {
    code: "upstream.merchant_outage",
    category: Category::Upstream,
    party: Party::Merchant,
    title: Text {
        en: "Outage at one merchant",
        zh_cn: "某一商户的故障",
    },
    remediation: Text {
        en: "The terminals of one merchant fail alike while others do not: the merchant's network or setup. The merchant must act; the terminals' own findings it explains are suppressed meanwhile.",
        zh_cn: "同一商户的终端出现相同故障，其他商户正常：问题在该商户的网络或设置。需由商户处理；期间由此导致的各终端告警已被抑制。",
    },
    hysteresis: HYSTERESIS,
};

pub static GATEWAY_OUTAGE: FindingKind = FindingKind {
    code: "upstream.gateway_outage",
    category: Category::Upstream,
    party: Party::Merchant,
    title: Text {
        en: "Shop network down",
        zh_cn: "门店网络故障",
    },
    remediation: Text {
        en: "The terminals behind one gateway of a merchant fail alike: the shop's router or line. The merchant must act on its premises (restart the router, call its line provider); the terminals' own findings it explains are suppressed meanwhile.",
        zh_cn: "某商户同一网关下的终端出现相同故障：门店的路由器或线路有问题。需由商户在门店处理（重启路由器或联系线路提供商）；期间由此导致的各终端告警已被抑制。",
    },
    hysteresis: HYSTERESIS,
};

/// The kind of a cause, from its scope's dimensions: the most specific party wins (an app
/// version over a firmware over a model, the shop over a carrier, a carrier over a region).
pub fn kind_of(cause: &Cause) -> &'static FindingKind {
    let scope = &cause.scope;
    let ordered: [(Dimension, &'static FindingKind); 7] = [
        (Dimension::PosApp, &APP_FAULT),
        (Dimension::Firmware, &FIRMWARE_FAULT),
        (Dimension::Model, &MODEL_FAULT),
        (Dimension::Gateway, &GATEWAY_OUTAGE),
        (Dimension::Merchant, &MERCHANT_OUTAGE),
        (Dimension::Resolver, &RESOLVER_OUTAGE),
        (Dimension::Carrier, &CARRIER_OUTAGE),
    ];
    for (dimension, kind) in ordered {
        if scope.has(dimension) {
            return kind;
        }
    }
    if cause.host_target().is_some() {
        &HOST_OUTAGE
    } else {
        &REGIONAL_OUTAGE
    }
}

/// The evidence of a cause: the symptoms it explains (comma-separated codes, the one whose
/// counts follow first) and the failing / total terminals inside and outside its scope.
fn evidence(cause: &Cause, symptoms: &str, share_threshold: f64) -> Vec<Evidence> {
    let percent = |failing: u64, total: u64| {
        if total == 0 {
            0.0
        } else {
            failing as f64 * 100.0 / total as f64
        }
    };
    vec![
        Evidence::new("symptom", symptoms),
        Evidence::new("failing_inside", cause.failing_inside.to_string()),
        Evidence::new("total_inside", cause.total_inside.to_string()),
        Evidence::new("failing_outside", cause.failing_outside.to_string()),
        Evidence::new("total_outside", cause.total_outside.to_string()),
        Evidence::new(
            "share_inside_percent",
            format!("{:.0}", percent(cause.failing_inside, cause.total_inside)),
        )
        .with_threshold(format!(">= {share_threshold}")),
        Evidence::new(
            "share_outside_percent",
            format!("{:.1}", percent(cause.failing_outside, cause.total_outside)),
        ),
    ]
}

/// The signals of the localized causes: one per (kind, subject); a cause seen on several
/// symptoms (a carrier outage makes terminals both fail the host and go silent) is one signal
/// listing them, with the counts of the symptom it explains the most terminals of.
pub fn evaluate(causes: &[Cause], share_threshold: f64) -> Vec<Signal> {
    let mut grouped: BTreeMap<(&'static str, String), Vec<&Cause>> = BTreeMap::new();
    for cause in causes {
        grouped
            .entry((kind_of(cause).code, cause.subject()))
            .or_default()
            .push(cause);
    }
    grouped
        .into_iter()
        .filter_map(|((_, subject), mut causes)| {
            causes.sort_by(|a, b| {
                b.failing_inside
                    .cmp(&a.failing_inside)
                    .then(a.symptom.cmp(&b.symptom))
            });
            let first = *causes.first()?;
            let mut codes: Vec<&str> = Vec::new();
            for cause in &causes {
                if !codes.contains(&cause.symptom.code) {
                    codes.push(cause.symptom.code);
                }
            }
            let severity = causes
                .iter()
                .map(|cause| cause.severity)
                .max()
                .unwrap_or(Severity::Warning);
            Some(Signal {
                kind: kind_of(first),
                severity,
                subject,
                evidence: evidence(first, &codes.join(","), share_threshold),
            })
        })
        .collect()
}

/// The symptom codes a cause's finding explains, from its evidence.
pub fn symptoms_of(evidence: &[Evidence]) -> impl Iterator<Item = &str> {
    evidence
        .iter()
        .filter(|evidence| evidence.name == "symptom")
        .flat_map(|evidence| evidence.value.split(','))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::findings::Tracker;
    use crate::localize::{Scope, Symptom};
    use crate::thresholds::Thresholds;

    fn cause(
        code: &'static str,
        subject: &str,
        scope: &[(Dimension, &str)],
        failing: u64,
    ) -> Cause {
        Cause {
            symptom: Symptom {
                code,
                subject: Arc::from(subject),
            },
            severity: Severity::Critical,
            scope: Scope(
                scope
                    .iter()
                    .map(|(dimension, value)| (*dimension, Arc::from(*value)))
                    .collect(),
            ),
            failing_inside: failing,
            total_inside: 45,
            failing_outside: 1,
            total_outside: 255,
        }
    }

    const UNREACHABLE: &str = "env.network.host_unreachable";

    #[test]
    fn the_party_follows_the_dimensions() {
        use Dimension::*;
        type Row<'a> = (&'a str, &'a [(Dimension, &'a str)], &'a str, &'a str, Party);
        let table: &[Row<'_>] = &[
            (
                UNREACHABLE,
                &[],
                "target=payment-host",
                "upstream.host_outage",
                Party::Acquirer,
            ),
            (
                UNREACHABLE,
                &[(Region, "cn-south")],
                "region=cn-south,target=payment-host",
                "upstream.host_outage",
                Party::Acquirer,
            ),
            (
                UNREACHABLE,
                &[(Carrier, "cm"), (Region, "cn-south")],
                "carrier=cm,region=cn-south",
                "upstream.carrier_outage",
                Party::NetworkProvider,
            ),
            (
                "terminal.silent",
                &[(Carrier, "cm")],
                "carrier=cm",
                "upstream.carrier_outage",
                Party::NetworkProvider,
            ),
            (
                "terminal.silent",
                &[(Region, "cn-south")],
                "region=cn-south",
                "upstream.regional_outage",
                Party::Operations,
            ),
            (
                "env.network.dns_failure",
                &[(Resolver, "10.0.0.53")],
                "resolver=10.0.0.53",
                "upstream.resolver_outage",
                Party::NetworkProvider,
            ),
            (
                "env.hardware.peripheral_missing",
                &[(Model, "P2")],
                "model=P2",
                "upstream.model_fault",
                Party::PosVendor,
            ),
            (
                UNREACHABLE,
                &[(Firmware, "7.1"), (Model, "P2")],
                "firmware=7.1,model=P2",
                "upstream.firmware_fault",
                Party::PosVendor,
            ),
            (
                "env.network.tls_failure",
                &[(PosApp, "3.1.4"), (Region, "cn-east")],
                "pos_app=3.1.4,region=cn-east",
                "upstream.app_fault",
                Party::SoftwareVendor,
            ),
            (
                "env.network.gateway_unreachable",
                &[(Merchant, "M-1")],
                "merchant=M-1",
                "upstream.merchant_outage",
                Party::Merchant,
            ),
            (
                "env.network.gateway_unreachable",
                &[(Gateway, "192.168.1.0/24"), (Merchant, "M-1")],
                "gateway=192.168.1.0/24,merchant=M-1",
                "upstream.gateway_outage",
                Party::Merchant,
            ),
        ];
        for (code, scope, subject, kind, party) in table {
            let subject_of_symptom =
                if code.starts_with("env.network.") && !code.ends_with("gateway_unreachable") {
                    "payment-host"
                } else {
                    ""
                };
            let cause = cause(code, subject_of_symptom, scope, 43);
            let signals = evaluate(&[cause], 30.0);
            assert_eq!(signals.len(), 1);
            assert_eq!(signals[0].subject, *subject, "{code} {scope:?}");
            assert_eq!(signals[0].kind.code, *kind, "{code} {scope:?}");
            assert_eq!(signals[0].kind.party, *party, "{code} {scope:?}");
        }
    }

    #[test]
    fn one_cause_on_several_symptoms_is_one_signal() {
        let carrier = [(Dimension::Carrier, "cm"), (Dimension::Region, "cn-south")];
        let signals = evaluate(
            &[
                cause("terminal.silent", "", &carrier, 20),
                cause(UNREACHABLE, "payment-host", &carrier, 30),
                cause(UNREACHABLE, "tms", &carrier, 28),
            ],
            30.0,
        );
        assert_eq!(signals.len(), 1, "{signals:#?}");
        let symptoms: Vec<&str> = symptoms_of(&signals[0].evidence).collect();
        assert_eq!(symptoms, [UNREACHABLE, "terminal.silent"]);
        let failing = signals[0]
            .evidence
            .iter()
            .find(|evidence| evidence.name == "failing_inside")
            .map(|evidence| evidence.value.as_str());
        assert_eq!(failing, Some("30"));
    }

    #[test]
    fn a_cause_opens_at_once_and_closes_after_three_evaluations_without_it() {
        let thresholds = Thresholds::default();
        let mut tracker = Tracker::default();
        let mut next_id = 0;
        let start = time::macros::datetime!(2026-11-26 02:00 UTC);
        let region = [(Dimension::Region, "cn-south")];
        let open: Vec<bool> = [true, true, false, false, false, true]
            .into_iter()
            .enumerate()
            .map(|(index, present)| {
                let causes = if present {
                    vec![cause(
                        UNREACHABLE,
                        "payment-host",
                        &region,
                        40 + index as u64,
                    )]
                } else {
                    Vec::new()
                };
                let signals = evaluate(&causes, thresholds.upstream_min_share_percent);
                let now = start + time::Duration::seconds(index as i64);
                let mut ids = || {
                    next_id += 1;
                    next_id
                };
                tracker.observe_scope("", signals, now, &thresholds, &mut ids, |kind| {
                    kind.category == Category::Upstream
                });
                tracker.open.iter().any(|open| {
                    open.finding.kind.code == "upstream.host_outage"
                        && open.finding.subject == "region=cn-south,target=payment-host"
                })
            })
            .collect();
        assert_eq!(open, [true, true, true, true, false, true]);
    }
}
