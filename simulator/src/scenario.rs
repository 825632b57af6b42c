//! Scripted incidents: which fault hits which terminals, from when and for how long.
//!
//! A scenario is a TOML file (see `examples/incidents.toml`). Incident times are seconds from the
//! start of the run; with `cycle_seconds` the script repeats.

use std::path::Path;

use serde::Deserialize;

use crate::fleet::SimTerminal;
use crate::random::unit;

/// A fault a simulated terminal can show. Each row of the party table has one: who must act
/// follows from where on the path (or in the device) the fault sits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Fault {
    /// The terminal has no network link (cable, Wi-Fi, SIM): the link rung fails.
    LinkDown,
    /// The shop's router is down: the gateway rung fails for every target.
    GatewayDown,
    /// The terminal's resolver answers SERVFAIL for every target.
    DnsFailure,
    /// The terminal's resolver does not answer.
    DnsTimeout,
    /// The target (default `payment-host`) does not answer: the TCP rung times out.
    HostOutage,
    /// The target refuses the connection (nothing listens on its port).
    HostRefuses,
    /// The target accepts, then resets the connection.
    HostResets,
    /// The target ends the TLS handshake with an alert.
    TlsAlert,
    /// The target serves an expired certificate.
    CertificateExpired,
    /// The terminal's clock runs a year ahead, so every certificate looks expired to it.
    ClockAhead,
    /// The target answers slowly (1.5–3 s).
    HighLatency,
    /// Tries to the target are lost (`loss_percent`, 60 % by default).
    PacketLoss,
    /// The POS application reports an old version.
    OutdatedApp,
    /// The POS application is not running.
    AppNotRunning,
    /// The CPU runs at 85–95 °C.
    Overheat,
    /// The data disk is 99 % full.
    DiskFull,
    /// The card reader is not present.
    CardReaderMissing,
    /// The PIN pad is not present.
    PinPadMissing,
    /// The terminal sends nothing (powered off).
    Silent,
    /// The terminal cannot reach the collector; when the incident ends it delivers the reports
    /// it kept, late, in one batch.
    Backfill,
}

/// The target a fault hits when the incident names none.
pub const DEFAULT_TARGET: &str = "payment-host";
/// The `target` of an incident that hits every target (a carrier's network, say).
pub const EVERY_TARGET: &str = "*";
/// The share of tries a `packet_loss` fault loses when the incident names none.
pub const DEFAULT_LOSS_PERCENT: f64 = 60.0;

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Incident {
    pub fault: Fault,
    /// Seconds from the start of the run (or of each cycle).
    pub start_seconds: f64,
    pub duration_seconds: f64,
    /// Share of the matching terminals hit, 0 to 1.
    #[serde(default = "one")]
    pub share: f64,
    /// When set, the share grows linearly from 0 at the start to `share` after this many
    /// seconds: a slowly spreading incident (a terminal once hit stays hit).
    #[serde(default)]
    pub ramp_seconds: Option<f64>,
    /// Only terminals in this region / of this carrier / model / firmware / POS app version /
    /// merchant / gateway subnet / resolver.
    #[serde(default)]
    pub region: Option<String>,
    #[serde(default)]
    pub carrier: Option<String>,
    #[serde(default)]
    pub model: Option<String>,
    #[serde(default)]
    pub firmware: Option<String>,
    #[serde(default)]
    pub pos_app: Option<String>,
    #[serde(default)]
    pub merchant: Option<String>,
    #[serde(default)]
    pub gateway: Option<String>,
    #[serde(default)]
    pub resolver: Option<String>,
    /// Only terminals whose resolver is their merchant's router (`true`) or their carrier's
    /// (`false`).
    #[serde(default)]
    pub router_resolver: Option<bool>,
    /// The target a fault on a host's path hits (default `payment-host`; `*`: every target).
    #[serde(default)]
    pub target: Option<String>,
    /// The share of tries a `packet_loss` fault loses, in percent.
    #[serde(default)]
    pub loss_percent: Option<f64>,
}

fn one() -> f64 {
    1.0
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// When set, the incidents repeat every this many seconds.
    #[serde(default)]
    pub cycle_seconds: Option<f64>,
    #[serde(default)]
    pub incidents: Vec<Incident>,
}

#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    #[error("cannot read scenario {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("scenario {path}: {message}")]
    Parse { path: String, message: String },
    #[error("scenario key {key}: {problem}")]
    Invalid { key: String, problem: String },
}

/// The faults of one terminal at one instant.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Active<'a> {
    /// Each active fault with the target it hits.
    pub faults: Vec<(Fault, &'a str)>,
    /// The share of tries lost on each target hit by `packet_loss`, 0 to 1 (the highest when
    /// several incidents overlap).
    pub loss: Vec<(&'a str, f64)>,
}

impl Active<'_> {
    pub fn has(&self, fault: Fault) -> bool {
        self.faults.iter().any(|(active, _)| *active == fault)
    }

    /// Whether `fault` hits `target`.
    pub fn hits(&self, fault: Fault, target: &str) -> bool {
        self.faults
            .iter()
            .any(|(active, hit)| *active == fault && (*hit == target || *hit == EVERY_TARGET))
    }

    /// The share of tries lost on the way to `target`, 0 to 1.
    pub fn loss(&self, target: &str) -> f64 {
        self.loss
            .iter()
            .filter(|(hit, _)| *hit == target || *hit == EVERY_TARGET)
            .map(|(_, share)| *share)
            .fold(0.0, f64::max)
    }
}

impl Scenario {
    pub fn from_file(path: &Path) -> Result<Self, ScenarioError> {
        let name = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ScenarioError::Read {
            path: name.clone(),
            source,
        })?;
        let scenario: Scenario = toml::from_str(&text).map_err(|error| ScenarioError::Parse {
            path: name,
            message: error.to_string(),
        })?;
        scenario.validate()?;
        Ok(scenario)
    }

    pub fn validate(&self) -> Result<(), ScenarioError> {
        let invalid = |key: String, problem: &str| {
            Err(ScenarioError::Invalid {
                key,
                problem: problem.to_string(),
            })
        };
        if let Some(cycle) = self.cycle_seconds {
            if !(cycle.is_finite() && cycle > 0.0) {
                return invalid("cycle_seconds".into(), "must be above 0");
            }
        }
        for (index, incident) in self.incidents.iter().enumerate() {
            let key = |name: &str| format!("incidents[{index}].{name}");
            if !(incident.start_seconds.is_finite() && incident.start_seconds >= 0.0) {
                return invalid(key("start_seconds"), "must be 0 or more");
            }
            if !(incident.duration_seconds.is_finite() && incident.duration_seconds > 0.0) {
                return invalid(key("duration_seconds"), "must be above 0");
            }
            if !(0.0..=1.0).contains(&incident.share) {
                return invalid(key("share"), "must be between 0 and 1");
            }
            if incident
                .ramp_seconds
                .is_some_and(|ramp| !(ramp.is_finite() && ramp > 0.0))
            {
                return invalid(key("ramp_seconds"), "must be above 0");
            }
            if incident
                .loss_percent
                .is_some_and(|loss| !(0.0..=100.0).contains(&loss))
            {
                return invalid(key("loss_percent"), "must be between 0 and 100");
            }
        }
        Ok(())
    }

    /// The incidents' time axis: seconds since the start, folded into the cycle.
    fn position(&self, elapsed_seconds: f64) -> f64 {
        match self.cycle_seconds {
            Some(cycle) => elapsed_seconds.rem_euclid(cycle),
            None => elapsed_seconds,
        }
    }

    /// The incident (index) of kind `fault` hitting `terminal` at `elapsed_seconds`, if any.
    pub fn incident_at(
        &self,
        seed: u64,
        terminal: &SimTerminal,
        elapsed_seconds: f64,
        fault: Fault,
    ) -> Option<usize> {
        let at = self.position(elapsed_seconds);
        self.incidents
            .iter()
            .enumerate()
            .find_map(|(index, incident)| {
                (incident.fault == fault && incident.covers(seed, index, terminal, at))
                    .then_some(index)
            })
    }

    /// Every fault hitting `terminal` at `elapsed_seconds` after the start.
    pub fn active(&self, seed: u64, terminal: &SimTerminal, elapsed_seconds: f64) -> Active<'_> {
        let at = self.position(elapsed_seconds);
        let mut active = Active::default();
        for (index, incident) in self.incidents.iter().enumerate() {
            if !incident.covers(seed, index, terminal, at) {
                continue;
            }
            let target = incident.target.as_deref().unwrap_or(DEFAULT_TARGET);
            active.faults.push((incident.fault, target));
            if incident.fault == Fault::PacketLoss {
                let percent = incident.loss_percent.unwrap_or(DEFAULT_LOSS_PERCENT);
                active.loss.push((target, percent / 100.0));
            }
        }
        active
    }
}

impl Incident {
    /// Whether the terminal matches every filter of the incident (at any time).
    pub fn matches(&self, terminal: &SimTerminal) -> bool {
        let matches = |filter: &Option<String>, value: &str| {
            filter.as_deref().is_none_or(|wanted| wanted == value)
        };
        matches(&self.region, terminal.region)
            && matches(&self.carrier, terminal.carrier)
            && matches(&self.model, terminal.model)
            && matches(&self.firmware, terminal.firmware)
            && matches(&self.pos_app, terminal.pos_app)
            && matches(&self.merchant, &terminal.merchant)
            && matches(&self.gateway, &terminal.gateway)
            && matches(&self.resolver, &terminal.resolver)
            && self
                .router_resolver
                .is_none_or(|router| router == terminal.resolver_is_router())
    }

    /// The share of the matching terminals hit `elapsed` seconds after the start.
    fn share_at(&self, elapsed: f64) -> f64 {
        match self.ramp_seconds {
            Some(ramp) => self.share * (elapsed / ramp).clamp(0.0, 1.0),
            None => self.share,
        }
    }

    /// Whether the incident hits `terminal` at `at` (seconds on the incidents' time axis).
    pub fn covers(&self, seed: u64, index: usize, terminal: &SimTerminal, at: f64) -> bool {
        let in_window = at >= self.start_seconds && at < self.start_seconds + self.duration_seconds;
        in_window
            && self.matches(terminal)
            && unit(&[seed, terminal.index, 1000 + index as u64])
                < self.share_at(at - self.start_seconds)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scenario(text: &str) -> Result<Scenario, String> {
        let scenario: Scenario = toml::from_str(text).map_err(|error| error.to_string())?;
        scenario.validate().map_err(|error| error.to_string())?;
        Ok(scenario)
    }

    #[test]
    fn the_example_scenario_is_valid() {
        let example = include_str!("../examples/incidents.toml");
        assert!(scenario(example).is_ok_and(|s| s.incidents.len() >= 10));
    }

    #[test]
    fn incidents_hit_the_matching_share_in_their_window() {
        let scenario = scenario(
            "[[incidents]]\nfault = \"host_outage\"\nstart_seconds = 10\nduration_seconds = 5\nshare = 0.4\nregion = \"cn-east-sh\"\n",
        )
        .unwrap_or_default();
        let fleet: Vec<SimTerminal> = (0..5000).map(|i| SimTerminal::new(9, "S-", i)).collect();
        let in_region = fleet.iter().filter(|t| t.region == "cn-east-sh").count() as f64;
        let hit = fleet
            .iter()
            .filter(|t| {
                scenario
                    .active(9, t, 12.0)
                    .hits(Fault::HostOutage, DEFAULT_TARGET)
            })
            .count() as f64;
        assert!((hit / in_region - 0.4).abs() < 0.05, "{hit} of {in_region}");
        assert!(fleet
            .iter()
            .all(|t| t.region == "cn-east-sh" || scenario.active(9, t, 12.0).faults.is_empty()));
        assert!(
            fleet
                .iter()
                .all(|t| scenario.active(9, t, 15.0).faults.is_empty()),
            "the window is half-open"
        );
        assert!(fleet
            .iter()
            .all(|t| scenario.active(9, t, 9.9).faults.is_empty()));
    }

    #[test]
    fn a_spreading_incident_grows_and_keeps_whom_it_hit() {
        let scenario = scenario(
            "[[incidents]]\nfault = \"host_refuses\"\nstart_seconds = 10\nduration_seconds = 100\nramp_seconds = 40\nfirmware = \"4.2.9\"\n",
        )
        .unwrap_or_default();
        let fleet: Vec<SimTerminal> = (0..5000).map(|i| SimTerminal::new(3, "S-", i)).collect();
        let hit_at = |at: f64| -> Vec<u64> {
            fleet
                .iter()
                .filter(|t| scenario.active(3, t, at).has(Fault::HostRefuses))
                .map(|t| t.index)
                .collect()
        };
        let matching = fleet.iter().filter(|t| t.firmware == "4.2.9").count();
        let (quarter, half, all) = (hit_at(20.0), hit_at(30.0), hit_at(60.0));
        assert!(
            !quarter.is_empty() && quarter.len() < half.len(),
            "{quarter:?}"
        );
        assert!(quarter.iter().all(|index| half.contains(index)));
        assert_eq!(all.len(), matching);
        assert!(fleet
            .iter()
            .all(|t| t.firmware == "4.2.9" || !all.contains(&t.index)));
    }

    #[test]
    fn filters_pick_a_shop_a_resolver_or_every_target() {
        let scenario = scenario(
            "[[incidents]]\nfault = \"host_outage\"\nstart_seconds = 0\nduration_seconds = 9\nmerchant = \"M-000002\"\ntarget = \"*\"\n\n[[incidents]]\nfault = \"packet_loss\"\nstart_seconds = 0\nduration_seconds = 9\nloss_percent = 1\nrouter_resolver = true\n",
        )
        .unwrap_or_default();
        let fleet: Vec<SimTerminal> = (0..3000).map(|i| SimTerminal::new(3, "S-", i)).collect();
        let shop: Vec<u64> = fleet
            .iter()
            .filter(|t| scenario.active(3, t, 1.0).has(Fault::HostOutage))
            .map(|t| t.index)
            .collect();
        assert_eq!(shop, vec![6, 7, 8]);
        let active = scenario.active(3, &fleet[6], 1.0);
        assert!(
            active.hits(Fault::HostOutage, "tms") && active.hits(Fault::HostOutage, DEFAULT_TARGET)
        );
        for terminal in &fleet {
            let loss = scenario.active(3, terminal, 1.0).loss(DEFAULT_TARGET);
            let expected = if terminal.resolver_is_router() {
                0.01
            } else {
                0.0
            };
            assert!((loss - expected).abs() < 1e-12, "{loss}");
        }
    }

    #[test]
    fn a_cycle_repeats_the_script() {
        let scenario = scenario(
            "cycle_seconds = 60\n[[incidents]]\nfault = \"silent\"\nstart_seconds = 10\nduration_seconds = 5\n",
        )
        .unwrap_or_default();
        let terminal = SimTerminal::new(1, "S-", 1);
        assert!(scenario.active(1, &terminal, 71.0).has(Fault::Silent));
        assert!(!scenario.active(1, &terminal, 76.0).has(Fault::Silent));
    }

    #[test]
    fn bad_scenarios_name_the_key() {
        let error = scenario(
            "[[incidents]]\nfault = \"host_outage\"\nstart_seconds = 1\nduration_seconds = 0\n",
        )
        .err();
        assert_eq!(
            error.as_deref(),
            Some("scenario key incidents[0].duration_seconds: must be above 0")
        );
        let error = scenario(
            "[[incidents]]\nfault = \"meteor\"\nstart_seconds = 1\nduration_seconds = 1\n",
        )
        .err();
        assert!(error.is_some_and(|e| e.contains("unknown variant `meteor`")));
    }
}
