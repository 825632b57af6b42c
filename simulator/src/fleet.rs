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
/// Terminal models and the firmware each runs.
pub const MODELS: &[(&str, &str)] = &[
    ("PAX-A920", "V1.0.9_20240612"),
    ("Verifone-V200c", "4.3.2"),
    ("Newland-N910", "N910-2.1.7"),
    ("Sunmi-P2", "P2_7.1.0"),
];
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
}

impl SimTerminal {
    pub fn new(seed: u64, id_prefix: &str, index: u64) -> Self {
        let (model, firmware) = MODELS[pick(&[seed, index, 3], MODELS.len())];
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
        SimTerminal {
            index,
            id: format!("{id_prefix}{index:07}"),
            region: REGIONS[pick(&[seed, index, 1], REGIONS.len())],
            carrier: CARRIERS[pick(&[seed, index, 2], CARRIERS.len())],
            model,
            firmware,
            pos_app,
            // About 3 terminals per merchant.
            merchant: format!("M-{:06}", index / 3),
        }
    }

    pub fn labels(&self) -> Labels {
        Labels {
            merchant: Some(self.merchant.clone()),
            model: Some(self.model.to_string()),
            region: Some(self.region.to_string()),
            carrier: Some(self.carrier.to_string()),
            gateway: None,
            resolver: None,
            extra: Default::default(),
        }
    }
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
    }
}
