//! A terminal's effective settings (pure): the profiles that select it, ordered by rank (lower
//! first, ties by name), each laid over the ones before it (`Settings::overlay`), with the
//! profile's current settings for a terminal in its rollout, its previous ones otherwise (or
//! nothing when it has none).

use std::sync::Arc;

use posmon_protocol::control::Settings;

use super::profile::{Applies, MatchLabels, Profile, Rank};

/// The profiles in force, in layer order, and the generation that names this set.
#[derive(Debug, Default)]
pub struct ProfileSet {
    /// Sorted by (rank, name): the order the layers are laid in.
    pub profiles: Vec<Arc<Profile>>,
    /// Bumped by every change of the set: a terminal's cached effective settings are valid for
    /// one generation.
    pub generation: u64,
}

impl ProfileSet {
    /// The set of `profiles` at `generation`, put in layer order.
    pub fn new(mut profiles: Vec<Arc<Profile>>, generation: u64) -> Self {
        profiles.sort_by(|a, b| {
            a.selector
                .rank()
                .cmp(&b.selector.rank())
                .then_with(|| a.name.cmp(&b.name))
        });
        ProfileSet {
            profiles,
            generation,
        }
    }

    pub fn get(&self, name: &str) -> Option<&Arc<Profile>> {
        self.profiles.iter().find(|profile| profile.name == name)
    }

    /// The effective settings of `terminal_id` with `labels`.
    pub fn effective(&self, terminal_id: &str, labels: &MatchLabels) -> Effective {
        let mut settings = Settings::default();
        let mut layers = Vec::new();
        for profile in &self.profiles {
            if !profile.selector.matches(terminal_id, labels) {
                continue;
            }
            let (layer, in_rollout) = match profile.applies(terminal_id, labels) {
                Applies::Current(layer) => (layer, true),
                Applies::Previous(layer) => (layer, false),
                Applies::Not => continue,
            };
            settings.overlay(layer);
            layers.push(Layer {
                profile: profile.name.clone(),
                revision: profile.revision,
                rank: profile.selector.rank(),
                in_rollout,
            });
        }
        Effective {
            version: settings.version(),
            settings,
            layers,
        }
    }
}

/// One profile's part in a terminal's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layer {
    pub profile: String,
    pub revision: u64,
    pub rank: Rank,
    /// Its current settings (in the rollout), else its previous ones.
    pub in_rollout: bool,
}

/// A terminal's layered settings and their version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Effective {
    pub version: String,
    pub settings: Settings,
    pub layers: Vec<Layer>,
}

impl Effective {
    /// The version to tell an agent in state `reported`: none when it runs or refused it, or
    /// when no profile applies and it runs its local file alone (what empty settings mean).
    pub fn to_tell(&self, reported: &posmon_protocol::control::ConfigState) -> Option<&str> {
        if reported.knows(&self.version) || (self.layers.is_empty() && reported.applied.is_none()) {
            None
        } else {
            Some(&self.version)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::profile::ProfileRequest;
    use posmon_protocol::control::ConfigState;
    use time::OffsetDateTime;

    fn profile(name: &str, json: &str) -> Arc<Profile> {
        let request: ProfileRequest =
            serde_json::from_str(json).unwrap_or_else(|error| panic!("{json}: {error}"));
        Arc::new(Profile::next(
            None,
            request,
            name,
            "admin",
            OffsetDateTime::UNIX_EPOCH,
        ))
    }

    fn labels(region: &str, model: &str) -> MatchLabels {
        MatchLabels {
            region: Some(region.into()),
            model: Some(model.into()),
            ..MatchLabels::default()
        }
    }

    #[test]
    fn layers_go_from_the_fleet_to_the_terminal() {
        // Names chosen against the rank order, so the order is by rank, not by name.
        let set = ProfileSet::new(
            vec![
                profile(
                    "a-terminal",
                    r#"{"selector":{"terminal":"T-1"},"settings":{"attempts":9}}"#,
                ),
                profile(
                    "b-model",
                    r#"{"selector":{"model":"A920"},"settings":{"attempts":5,"report_interval_seconds":120}}"#,
                ),
                profile(
                    "c-region",
                    r#"{"selector":{"region":"east"},"settings":{"attempts":4,"probe_timeout_seconds":7}}"#,
                ),
                profile(
                    "z-fleet",
                    r#"{"settings":{"attempts":1,"report_interval_seconds":300,"processes":["posapp"]}}"#,
                ),
                profile(
                    "y-other-region",
                    r#"{"selector":{"region":"west"},"settings":{"attempts":2}}"#,
                ),
            ],
            1,
        );
        let check = |terminal: &str, labels: &MatchLabels, attempts, interval, order: &[&str]| {
            let effective = set.effective(terminal, labels);
            assert_eq!(effective.settings.attempts, attempts, "{terminal}");
            assert_eq!(
                effective.settings.report_interval_seconds, interval,
                "{terminal}"
            );
            let names: Vec<&str> = effective
                .layers
                .iter()
                .map(|l| l.profile.as_str())
                .collect();
            assert_eq!(names, order, "{terminal}");
        };
        check(
            "T-1",
            &labels("east", "A920"),
            Some(9),
            Some(120),
            &["z-fleet", "c-region", "b-model", "a-terminal"],
        );
        check(
            "T-2",
            &labels("east", "A920"),
            Some(5),
            Some(120),
            &["z-fleet", "c-region", "b-model"],
        );
        check(
            "T-3",
            &labels("west", "A80"),
            Some(2),
            Some(300),
            &["z-fleet", "y-other-region"],
        );
        let effective = set.effective("T-2", &labels("east", "A920"));
        // Keys no upper layer sets come from below.
        assert_eq!(effective.settings.probe_timeout_seconds, Some(7));
        assert_eq!(effective.settings.processes, Some(vec!["posapp".into()]));
        assert_eq!(effective.version, effective.settings.version());
        // Ties by name.
        let tie = ProfileSet::new(
            vec![
                profile("b", r#"{"settings":{"attempts":2}}"#),
                profile("a", r#"{"settings":{"attempts":1}}"#),
            ],
            1,
        );
        assert_eq!(
            tie.effective("T", &MatchLabels::default())
                .settings
                .attempts,
            Some(2)
        );
    }

    #[test]
    fn outside_a_rollout_the_previous_settings_apply() {
        let first = profile("p", r#"{"settings":{"attempts":1}}"#);
        let request: ProfileRequest =
            serde_json::from_str(r#"{"settings":{"attempts":2},"rollout":{"percent":30}}"#)
                .unwrap_or_else(|error| panic!("{error}"));
        let second = Arc::new(Profile::next(
            Some(&first),
            request,
            "p",
            "admin",
            OffsetDateTime::UNIX_EPOCH,
        ));
        let set = ProfileSet::new(vec![second], 2);
        let (mut new, mut old) = (0, 0);
        for i in 0..1000 {
            let effective = set.effective(&format!("T-{i}"), &MatchLabels::default());
            match effective.settings.attempts {
                Some(2) => {
                    assert!(effective.layers[0].in_rollout);
                    new += 1;
                }
                Some(1) => {
                    assert!(!effective.layers[0].in_rollout);
                    old += 1;
                }
                other => panic!("{other:?}"),
            }
        }
        assert!((230..=370).contains(&new), "{new} of 1000 at 30 %");
        assert_eq!(new + old, 1000);
    }

    #[test]
    fn what_to_tell_an_agent() {
        let set = ProfileSet::new(vec![profile("p", r#"{"settings":{"attempts":1}}"#)], 1);
        let effective = set.effective("T", &MatchLabels::default());
        let version = effective.version.clone();
        let state = |applied: Option<&str>, rejected: Option<&str>| ConfigState {
            applied: applied.map(str::to_string),
            rejected: rejected.map(|version| posmon_protocol::control::Rejection {
                version: version.to_string(),
                reason: "x".into(),
            }),
        };
        assert_eq!(
            effective.to_tell(&state(None, None)),
            Some(version.as_str())
        );
        assert_eq!(effective.to_tell(&state(Some(&version), None)), None);
        assert_eq!(
            effective.to_tell(&state(Some("0000000000000000"), Some(&version))),
            None
        );
        // No profile: an agent on its local file alone hears nothing; one running settings
        // hears of the empty ones.
        let none = ProfileSet::default().effective("T", &MatchLabels::default());
        assert_eq!(none.to_tell(&state(None, None)), None);
        assert_eq!(
            none.to_tell(&state(Some(&version), None)),
            Some(none.version.as_str())
        );
    }
}
