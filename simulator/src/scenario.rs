//! Scripted incidents: which fault hits which terminals, from when and for how long.
//!
//! A scenario is a TOML file (see `examples/incidents.toml`). Incident times are seconds from the
//! start of the run; with `cycle_seconds` the script repeats.

use std::path::Path;

use serde::Deserialize;

use crate::fleet::SimTerminal;
use crate::random::unit;

/// A fault a simulated terminal can show.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Fault {
    /// The shop's router is down: the gateway rung fails for every target.
    GatewayDown,
    /// The resolver answers SERVFAIL for every target.
    DnsFailure,
    /// The target (default `payment-host`) does not answer: the TCP rung times out.
    HostOutage,
    /// The target answers slowly (1.5–3 s).
    HighLatency,
    /// 60 % of tries to the target are lost.
    PacketLoss,
    /// The POS application reports an old version.
    OutdatedApp,
    /// The CPU runs at 85–95 °C.
    Overheat,
    /// The data disk is 99 % full.
    DiskFull,
    /// The card reader is not present.
    CardReaderMissing,
    /// The terminal sends nothing (powered off).
    Silent,
    /// The terminal cannot reach the collector; when the incident ends it delivers the reports
    /// it kept, late, in one batch.
    Backfill,
}

/// The target a fault hits when the incident names none.
pub const DEFAULT_TARGET: &str = "payment-host";

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
    /// Only terminals in this region / of this carrier / of this model.
    #[serde(default)]
    pub region: Option<String>,
    #[serde(default)]
    pub carrier: Option<String>,
    #[serde(default)]
    pub model: Option<String>,
    /// The target a network fault hits (host outage, latency, loss).
    #[serde(default)]
    pub target: Option<String>,
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
}

impl Active<'_> {
    pub fn has(&self, fault: Fault) -> bool {
        self.faults.iter().any(|(active, _)| *active == fault)
    }

    /// Whether `fault` hits `target`.
    pub fn hits(&self, fault: Fault, target: &str) -> bool {
        self.faults
            .iter()
            .any(|(active, hit)| *active == fault && *hit == target)
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
        let faults = self
            .incidents
            .iter()
            .enumerate()
            .filter(|(index, incident)| incident.covers(seed, *index, terminal, at))
            .map(|(_, incident)| {
                (
                    incident.fault,
                    incident.target.as_deref().unwrap_or(DEFAULT_TARGET),
                )
            })
            .collect();
        Active { faults }
    }
}

impl Incident {
    fn covers(&self, seed: u64, index: usize, terminal: &SimTerminal, at: f64) -> bool {
        let in_window = at >= self.start_seconds && at < self.start_seconds + self.duration_seconds;
        let matches = |filter: &Option<String>, value: &str| {
            filter.as_deref().is_none_or(|wanted| wanted == value)
        };
        in_window
            && matches(&self.region, terminal.region)
            && matches(&self.carrier, terminal.carrier)
            && matches(&self.model, terminal.model)
            && unit(&[seed, terminal.index, 1000 + index as u64]) < self.share
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
