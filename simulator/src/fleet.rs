//! The simulated fleet: who each terminal is. Every attribute is a pure function of the seed and
//! the terminal's index, so a million terminals cost no memory.

use posmon_protocol::Labels;

use crate::random::{pick, unit};

pub const REGIONS: &[&str] = &[
    "cn-east-sh",
    "cn-east-hz",
    "cn-north-bj",
    "cn-south-gz",
    "cn-south-sz",
    "cn-west-cd",
];
pub const CARRIERS: &[&str] = &["china-mobile", "china-unicom", "china-telecom"];
/// Terminal models and the firmware each runs: most of a model's terminals on the first, the
/// rest (`OLDER_FIRMWARE_SHARE`) still on the second.
pub const MODELS: &[(&str, [&str; 2])] = &[
    ("PAX-A920", ["V1.0.9_20240612", "V1.0.7_20231120"]),
    ("Verifone-V200c", ["4.3.2", "4.2.9"]),
    ("Newland-N910", ["N910-2.1.7", "N910-2.0.3"]),
    ("Sunmi-P2", ["P2_7.1.0", "P2_6.8.2"]),
];
/// Share of each model's terminals on its older firmware.
pub const OLDER_FIRMWARE_SHARE: f64 = 0.3;
/// Terminals per merchant: each merchant's terminals sit behind one router (one gateway subnet).
pub const TERMINALS_PER_MERCHANT: u64 = 3;
/// Share of merchants whose router is the terminals' resolver (the rest ask their carrier's).
pub const ROUTER_RESOLVER_SHARE: f64 = 0.2;
/// POS application versions and the share of the fleet on each (the rest is on the first).
pub const POS_APP_VERSIONS: &[(&str, f64)] = &[("3.2.1", 0.0), ("3.1.4", 0.15), ("2.9.0", 0.03)];
/// The version an `outdated_app` fault reports.
pub const OUTDATED_POS_APP: &str = "2.1.0";

/// One simulated terminal.
#[derive(Debug, Clone, PartialEq)]
pub struct SimTerminal {
    pub index: u64,
    pub id: String,
    pub region: &'static str,
    pub carrier: &'static str,
    pub model: &'static str,
    pub firmware: &'static str,
    pub pos_app: &'static str,
    pub merchant: String,
    /// The default gateway's subnet, shared by the merchant's terminals.
    pub gateway: String,
    /// The resolver the terminal asks: its carrier's in its region, or the merchant's router.
    pub resolver: String,
}

impl SimTerminal {
    pub fn new(seed: u64, id_prefix: &str, index: u64) -> Self {
        let (model, firmwares) = MODELS[pick(&[seed, index, 3], MODELS.len())];
        let firmware = firmwares[usize::from(unit(&[seed, index, 5]) < OLDER_FIRMWARE_SHARE)];
        let roll = unit(&[seed, index, 4]);
        let mut pos_app = POS_APP_VERSIONS[0].0;
        let mut threshold = 0.0;
        for (version, share) in &POS_APP_VERSIONS[1..] {
            threshold += share;
            if roll < threshold {
                pos_app = version;
                break;
            }
        }
        let merchant = index / TERMINALS_PER_MERCHANT;
        // A merchant's terminals share its region and carrier (they sit in one shop).
        let region_index = pick(&[seed, merchant, 1], REGIONS.len());
        let carrier_index = pick(&[seed, merchant, 2], CARRIERS.len());
        // One private /24 per merchant (unique up to 65 536 merchants).
        let (high, low) = ((merchant >> 8) & 0xff, merchant & 0xff);
        let resolver = if unit(&[seed, merchant, 6]) < ROUTER_RESOLVER_SHARE {
            format!("10.{high}.{low}.1")
        } else {
            carrier_resolver(carrier_index, region_index)
        };
        SimTerminal {
            index,
            id: format!("{id_prefix}{index:07}"),
            region: REGIONS[region_index],
            carrier: CARRIERS[carrier_index],
            model,
            firmware,
            pos_app,
            merchant: format!("M-{merchant:06}"),
            gateway: format!("10.{high}.{low}.0/24"),
            resolver,
        }
    }

    pub fn labels(&self) -> Labels {
        Labels {
            merchant: Some(self.merchant.clone()),
            model: Some(self.model.to_string()),
            region: Some(self.region.to_string()),
            carrier: Some(self.carrier.to_string()),
            gateway: Some(self.gateway.clone()),
            resolver: Some(self.resolver.clone()),
            extra: Default::default(),
        }
    }

    /// Whether the terminal asks its merchant's router rather than its carrier's resolver.
    pub fn resolver_is_router(&self) -> bool {
        self.resolver.starts_with("10.")
    }
}

/// The resolver of one carrier in one region (`100.64.<carrier>.<region>`, carrier-grade NAT
/// space).
pub fn carrier_resolver(carrier_index: usize, region_index: usize) -> String {
    format!("100.64.{carrier_index}.{}", 53 + region_index)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terminals_are_reproducible_and_varied() {
        assert_eq!(
            SimTerminal::new(1, "SIM-", 42),
            SimTerminal::new(1, "SIM-", 42)
        );
        assert_eq!(SimTerminal::new(1, "SIM-", 42).id, "SIM-0000042");
        let fleet: Vec<SimTerminal> = (0..3000).map(|i| SimTerminal::new(1, "SIM-", i)).collect();
        for region in REGIONS {
            assert!(fleet.iter().any(|t| t.region == *region), "{region}");
        }
        let old = fleet.iter().filter(|t| t.pos_app == "2.9.0").count();
        assert!((40..150).contains(&old), "about 3 % on 2.9.0, got {old}");
        let older = fleet
            .iter()
            .filter(|t| t.firmware == MODELS[0].1[1])
            .count();
        assert!(
            (150..300).contains(&older),
            "30 % of a quarter, got {older}"
        );
        // One shop: the same merchant, gateway, region, carrier and resolver.
        let shop = &fleet[3..6];
        assert!(shop.iter().all(|t| t.merchant == "M-000001"
            && t.gateway == "10.0.1.0/24"
            && t.region == shop[0].region
            && t.carrier == shop[0].carrier
            && t.resolver == shop[0].resolver));
        assert_ne!(fleet[6].gateway, shop[0].gateway);
        let routers = fleet.iter().filter(|t| t.resolver_is_router()).count();
        assert!(
            (450..750).contains(&routers),
            "about 20 % on routers, got {routers}"
        );
        assert!(fleet
            .iter()
            .all(|t| t.resolver_is_router() || t.resolver.starts_with("100.64.")));
    }
}
