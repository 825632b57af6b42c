//! The evaluation's incident types: what the simulator plays and what a right diagnosis says
//! about it (see `simulator/eval/incidents.toml`).
//!
//! Each case plays its incidents against a fresh collector and names the right answer: the
//! fleet-level causes (scope `dim=value,…` and party) and, for every terminal an incident hits,
//! the party who must act (`none`: no finding at all) and its payment readiness.

use std::path::Path;

use serde::Deserialize;

use crate::scenario::{Incident, Scenario, ScenarioError};

/// What every case inherits unless it says otherwise.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Defaults {
    /// Terminals in the fleet.
    pub terminals: u64,
    /// Every terminal reports once per this many seconds.
    pub report_interval_seconds: f64,
    /// When the incidents start (seconds from the start of the run): the fleet is healthy and
    /// known to the collector before.
    pub onset_seconds: f64,
    /// How long the fleet plays; the final state is read at the end.
    pub run_seconds: f64,
}

impl Default for Defaults {
    fn default() -> Self {
        Defaults {
            terminals: 1000,
            report_interval_seconds: 5.0,
            onset_seconds: 20.0,
            run_seconds: 75.0,
        }
    }
}

/// A fleet-level cause a right diagnosis opens.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpectedCause {
    /// The scope in canonical form (`region=cn-south-gz,target=payment-host`); a list when
    /// several scopes name the same terminals (one merchant's shop and its gateway subnet).
    pub scope: Scopes,
    pub party: String,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum Scopes {
    One(String),
    AnyOf(Vec<String>),
}

impl ExpectedCause {
    pub fn matches(&self, subject: &str, party: &str) -> bool {
        let scope_matches = match &self.scope {
            Scopes::One(scope) => scope == subject,
            Scopes::AnyOf(scopes) => scopes.iter().any(|scope| scope == subject),
        };
        scope_matches && self.party == party
    }

    pub fn describe(&self) -> String {
        let scope = match &self.scope {
            Scopes::One(scope) => scope.clone(),
            Scopes::AnyOf(scopes) => scopes.join(" | "),
        };
        format!("{scope} → {}", self.party)
    }
}

/// One played incident and what the terminals it hits must show.
#[derive(Debug, Clone, PartialEq)]
pub struct CaseIncident {
    pub incident: Incident,
    /// The party of every open finding of a hit terminal (after the fleet-level cause that
    /// explains it, if any); `None`: the terminal must have no finding.
    pub party: Option<String>,
    /// The readiness of a hit terminal, when the case checks it.
    pub readiness: Option<String>,
}

/// One incident type.
#[derive(Debug, Clone, PartialEq)]
pub struct Case {
    pub name: String,
    pub terminals: u64,
    pub report_interval_seconds: f64,
    pub run_seconds: f64,
    pub incidents: Vec<CaseIncident>,
    pub causes: Vec<ExpectedCause>,
    /// A healthy fleet: any finding at any time is wrong.
    pub healthy: bool,
}

impl Case {
    /// The scenario the simulator plays.
    pub fn scenario(&self) -> Scenario {
        Scenario {
            cycle_seconds: None,
            incidents: self.incidents.iter().map(|i| i.incident.clone()).collect(),
        }
    }

    /// When the first incident starts (the run's end when there is none).
    pub fn onset_seconds(&self) -> f64 {
        self.incidents
            .iter()
            .map(|i| i.incident.start_seconds)
            .fold(self.run_seconds, f64::min)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    defaults: Defaults,
    #[serde(rename = "case")]
    cases: Vec<RawCase>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCase {
    name: String,
    terminals: Option<u64>,
    report_interval_seconds: Option<f64>,
    onset_seconds: Option<f64>,
    run_seconds: Option<f64>,
    #[serde(default)]
    incidents: Vec<toml::Table>,
    #[serde(default)]
    causes: Vec<ExpectedCause>,
    #[serde(default)]
    healthy: bool,
}

/// The parties and readiness values a case may expect.
pub const PARTIES: &[&str] = &[
    "merchant",
    "pos_vendor",
    "network_provider",
    "software_vendor",
    "acquirer",
    "operations",
    "none",
];
pub const READINESS: &[&str] = &["cannot_pay", "at_risk", "can_pay", "unknown"];

#[derive(Debug, thiserror::Error)]
pub enum CasesError {
    #[error("cannot read the cases {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("cases {path}: {message}")]
    Parse { path: String, message: String },
    #[error("case {case:?}: {problem}")]
    Invalid { case: String, problem: String },
    #[error("case {case:?}: {source}")]
    Scenario { case: String, source: ScenarioError },
}

pub fn from_file(path: &Path) -> Result<Vec<Case>, CasesError> {
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| CasesError::Read {
        path: name.clone(),
        source,
    })?;
    parse(&text).map_err(|error| match error {
        CasesError::Parse { message, .. } => CasesError::Parse {
            path: name,
            message,
        },
        other => other,
    })
}

pub fn parse(text: &str) -> Result<Vec<Case>, CasesError> {
    let file: File = toml::from_str(text).map_err(|error| CasesError::Parse {
        path: String::new(),
        message: error.to_string(),
    })?;
    let defaults = file.defaults;
    let mut names = std::collections::BTreeSet::new();
    file.cases
        .into_iter()
        .map(|raw| {
            let invalid = |problem: String| CasesError::Invalid {
                case: raw.name.clone(),
                problem,
            };
            if !names.insert(raw.name.clone()) {
                return Err(invalid("two cases have this name".into()));
            }
            let onset = raw.onset_seconds.unwrap_or(defaults.onset_seconds);
            let run_seconds = raw.run_seconds.unwrap_or(defaults.run_seconds);
            let incidents = raw
                .incidents
                .iter()
                .map(|table| incident(table, onset, run_seconds).map_err(invalid))
                .collect::<Result<Vec<_>, _>>()?;
            for cause in &raw.causes {
                check(&cause.party, PARTIES, "party").map_err(invalid)?;
            }
            let case = Case {
                name: raw.name.clone(),
                terminals: raw.terminals.unwrap_or(defaults.terminals),
                report_interval_seconds: raw
                    .report_interval_seconds
                    .unwrap_or(defaults.report_interval_seconds),
                run_seconds,
                incidents,
                causes: raw.causes,
                healthy: raw.healthy,
            };
            if case.healthy
                && (!case.causes.is_empty() || case.incidents.iter().any(|i| i.party.is_some()))
            {
                return Err(invalid(
                    "a healthy fleet expects no cause and no party".into(),
                ));
            }
            if case.terminals == 0 {
                return Err(invalid("terminals must be above 0".into()));
            }
            let positive = |value: f64| value.is_finite() && value > 0.0;
            if !(positive(case.report_interval_seconds) && positive(run_seconds)) {
                return Err(invalid(
                    "report_interval_seconds and run_seconds must be above 0".into(),
                ));
            }
            case.scenario()
                .validate()
                .map_err(|source| CasesError::Scenario {
                    case: raw.name.clone(),
                    source,
                })?;
            Ok(case)
        })
        .collect()
}

fn check(value: &str, known: &[&str], what: &str) -> Result<(), String> {
    if known.contains(&value) {
        Ok(())
    } else {
        Err(format!(
            "unknown {what} {value:?} (known: {})",
            known.join(", ")
        ))
    }
}

/// One incident table: the scenario incident (start defaults to the case's onset, duration to
/// the rest of the run) plus `party` and `readiness`.
fn incident(table: &toml::Table, onset: f64, run_seconds: f64) -> Result<CaseIncident, String> {
    let mut table = table.clone();
    let text = |table: &mut toml::Table, key: &str| -> Result<Option<String>, String> {
        match table.remove(key) {
            None => Ok(None),
            Some(toml::Value::String(value)) => Ok(Some(value)),
            Some(other) => Err(format!("{key} must be a string, not {other}")),
        }
    };
    let party = text(&mut table, "party")?
        .ok_or_else(|| "every incident names the party of the terminals it hits".to_string())?;
    check(&party, PARTIES, "party")?;
    let readiness = text(&mut table, "readiness")?;
    if let Some(readiness) = &readiness {
        check(readiness, READINESS, "readiness")?;
    }
    let start = match table.get("start_seconds") {
        Some(value) => value
            .as_float()
            .or_else(|| value.as_integer().map(|i| i as f64))
            .ok_or("start_seconds must be a number")?,
        None => {
            table.insert("start_seconds".into(), toml::Value::Float(onset));
            onset
        }
    };
    table
        .entry("duration_seconds")
        .or_insert(toml::Value::Float(run_seconds - start));
    let incident: Incident = toml::Value::Table(table)
        .try_into()
        .map_err(|error: toml::de::Error| error.to_string())?;
    Ok(CaseIncident {
        incident,
        party: (party != "none").then_some(party),
        readiness,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_cases_are_valid_and_many() {
        let cases = parse(include_str!("../../eval/incidents.toml"))
            .unwrap_or_else(|error| panic!("{error}"));
        assert!(cases.len() >= 30, "{} cases", cases.len());
        assert!(cases.iter().any(|case| case.incidents.len() >= 2));
        assert!(cases.iter().any(|case| case
            .incidents
            .iter()
            .any(|i| i.incident.ramp_seconds.is_some())));
        // Every incident hits some terminal of its fleet (a filter naming a merchant beyond
        // the fleet, or a resolver nobody uses, would score nothing).
        for case in &cases {
            for (position, expected) in case.incidents.iter().enumerate() {
                let incident = &expected.incident;
                let end = incident.start_seconds + incident.duration_seconds - 1e-3;
                let hits = (0..case.terminals)
                    .map(|index| crate::fleet::SimTerminal::new(1, "EV-", index))
                    .filter(|terminal| incident.covers(1, position, terminal, end))
                    .count();
                assert!(hits > 0, "{}: incident {position} hits nobody", case.name);
            }
        }
    }

    #[test]
    fn defaults_fill_the_window_and_mistakes_are_named() {
        let cases = parse(
            "[defaults]\nonset_seconds = 10\nrun_seconds = 50\n[[case]]\nname = \"a\"\nincidents = [{ fault = \"silent\", party = \"merchant\", readiness = \"unknown\", share = 0.01 }]\ncauses = [{ scope = [\"gateway=x\", \"merchant=y\"], party = \"merchant\" }]\n",
        )
        .unwrap_or_else(|error| panic!("{error}"));
        let incident = &cases[0].incidents[0];
        assert_eq!(incident.incident.start_seconds, 10.0);
        assert_eq!(incident.incident.duration_seconds, 40.0);
        assert_eq!(cases[0].onset_seconds(), 10.0);
        assert!(cases[0].causes[0].matches("merchant=y", "merchant"));
        assert!(!cases[0].causes[0].matches("merchant=y", "acquirer"));
        let error = |text: &str| parse(text).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(
            error("[[case]]\nname = \"b\"\nincidents = [{ fault = \"silent\" }]\n")
                .contains("names the party")
        );
        assert!(error(
            "[[case]]\nname = \"b\"\nincidents = [{ fault = \"silent\", party = \"santa\" }]\n"
        )
        .contains("unknown party \"santa\""));
        assert!(error("[[case]]\nname = \"b\"\nincidents = [{ fault = \"silent\", party = \"none\", colour = 1 }]\n")
            .contains("colour"));
    }
}
