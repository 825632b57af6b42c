//! Fleet-wide faults: when a configured share (and a minimum number) of the terminals probing
//! the same host fail it at the host level at the same time, the host is down
//! (`upstream.host_outage`); when that share of the terminals of one carrier in one region lose
//! the network or go silent together, the carrier is (`upstream.carrier_outage`). A pure
//! function of tallies the fleet evaluation counts; it never looks at single terminals.

use std::collections::BTreeMap;

use crate::thresholds::Thresholds;
use crate::{Category, Evidence, FindingKind, Hysteresis, Party, Severity, Signal, Text};

pub static HOST_OUTAGE: FindingKind = FindingKind {
    code: "upstream.host_outage",
    category: Category::Upstream,
    party: Party::Acquirer,
    title: Text {
        en: "Host down for many terminals",
        zh_cn: "主机故障（大量终端受影响）",
    },
    remediation: Text {
        en: "Many terminals fail the same host at once: the host or its network is down, not the shops. Contact the acquirer or the host's operator; the terminals' own findings for this host are suppressed meanwhile.",
        zh_cn: "大量终端同时无法连接同一主机：故障在主机或其网络，而非门店。请联系收单机构或主机运营方；期间各终端针对该主机的告警已被抑制。",
    },
    // Open at the first evaluation that sees it; close after a few clean ones so a host that
    // flaps does not open a new outage every second.
    hysteresis: Hysteresis::new(1, 3),
};

pub static CARRIER_OUTAGE: FindingKind = FindingKind {
    code: "upstream.carrier_outage",
    category: Category::Upstream,
    party: Party::NetworkProvider,
    title: Text {
        en: "Carrier outage in a region",
        zh_cn: "运营商区域性故障",
    },
    remediation: Text {
        en: "Many terminals of one carrier in one region lost the network or went silent at once: the carrier's network is down. Contact the carrier; the terminals' own network and silence findings are suppressed meanwhile.",
        zh_cn: "同一地区同一运营商的大量终端同时断网或失联：运营商网络故障。请联系该运营商；期间各终端的网络和失联告警已被抑制。",
    },
    hysteresis: Hysteresis::new(1, 3),
};

/// How many terminals take part in a group and how many of them fail.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    pub total: u32,
    pub failing: u32,
}

/// The counts one evaluation of the fleet feeds in: per host address, the terminals that
/// probed it in their latest report and those that failed it at the host (TCP, TLS, HTTP);
/// per (carrier, region), the terminals and those that lost the network or went silent.
#[derive(Debug, Clone, Default)]
pub struct FleetTallies {
    pub hosts: BTreeMap<String, Tally>,
    pub carriers: BTreeMap<(String, String), Tally>,
}

/// The subject of a carrier outage: `carrier/region`.
pub fn carrier_scope(carrier: &str, region: &str) -> String {
    format!("{carrier}/{region}")
}

pub fn evaluate(tallies: &FleetTallies, thresholds: &Thresholds) -> Vec<Signal> {
    let mut signals = Vec::new();
    for (address, tally) in &tallies.hosts {
        if let Some(evidence) = crossed(tally, thresholds, "terminals_failing_host") {
            let mut all = vec![Evidence::new("address", address.as_str())];
            all.extend(evidence);
            signals.push(Signal {
                kind: &HOST_OUTAGE,
                severity: Severity::Critical,
                subject: address.clone(),
                evidence: all,
            });
        }
    }
    for ((carrier, region), tally) in &tallies.carriers {
        if let Some(evidence) = crossed(tally, thresholds, "terminals_offline") {
            let mut all = vec![
                Evidence::new("carrier", carrier.as_str()),
                Evidence::new("region", region.as_str()),
            ];
            all.extend(evidence);
            signals.push(Signal {
                kind: &CARRIER_OUTAGE,
                severity: Severity::Critical,
                subject: carrier_scope(carrier, region),
                evidence: all,
            });
        }
    }
    signals
}

fn crossed(tally: &Tally, thresholds: &Thresholds, name: &str) -> Option<Vec<Evidence>> {
    if tally.total == 0 || tally.failing < thresholds.upstream_min_terminals {
        return None;
    }
    let share = f64::from(tally.failing) * 100.0 / f64::from(tally.total);
    (share >= thresholds.upstream_min_share_percent).then(|| {
        vec![
            Evidence::new(name, tally.failing.to_string())
                .with_threshold(format!(">= {}", thresholds.upstream_min_terminals)),
            Evidence::new("terminals_total", tally.total.to_string()),
            Evidence::new("share_percent", format!("{share:.0}"))
                .with_threshold(format!(">= {}", thresholds.upstream_min_share_percent)),
        ]
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::findings::Tracker;

    fn host(total: u32, failing: u32) -> FleetTallies {
        let mut tallies = FleetTallies::default();
        tallies
            .hosts
            .insert("pay.example:443".into(), Tally { total, failing });
        tallies
    }

    fn carrier(total: u32, failing: u32) -> FleetTallies {
        let mut tallies = FleetTallies::default();
        tallies.carriers.insert(
            ("china-mobile".into(), "cn-east".into()),
            Tally { total, failing },
        );
        tallies
    }

    /// Runs evaluations through the real hysteresis and returns whether `code` is open after
    /// each.
    fn open_after(code: &str, evaluations: &[FleetTallies]) -> Vec<bool> {
        let thresholds = Thresholds::default();
        let mut tracker = Tracker::default();
        let mut next_id = 0;
        let start = time::macros::datetime!(2026-11-26 02:00 UTC);
        evaluations
            .iter()
            .enumerate()
            .map(|(index, tallies)| {
                let signals = evaluate(tallies, &thresholds);
                let now = start + time::Duration::seconds(index as i64);
                let mut ids = || {
                    next_id += 1;
                    next_id
                };
                tracker.observe_scope("", signals, now, &thresholds, &mut ids, |kind| {
                    kind.category == crate::Category::Upstream
                });
                tracker
                    .open
                    .iter()
                    .any(|open| open.finding.kind.code == code)
            })
            .collect()
    }

    #[test]
    fn upstream_tables() {
        // Defaults: at least 30 % and at least 5 terminals.
        for (code, group) in [
            ("upstream.host_outage", host as fn(u32, u32) -> FleetTallies),
            ("upstream.carrier_outage", carrier),
        ] {
            // Opens at once; closes after three clean evaluations.
            assert_eq!(
                open_after(
                    code,
                    &[
                        group(200, 0),
                        group(200, 80),
                        group(200, 80),
                        group(200, 2),
                        group(200, 1),
                        group(200, 0)
                    ]
                ),
                [false, true, true, true, true, false],
                "{code}"
            );
            // Must not open: a small share, too few terminals, nobody there.
            for quiet in [group(200, 59), group(10, 4), group(0, 0), group(4, 4)] {
                assert_eq!(
                    open_after(code, &[quiet.clone(), quiet]),
                    [false, false],
                    "{code}"
                );
            }
            assert_eq!(
                open_after(code, &[group(200, 60)]),
                [true],
                "{code} at exactly 30 %"
            );
        }
    }
}
