//! Configuration profiles (pure): what a profile is, which terminals it selects, its rank among
//! the layers, its rollout, and its validation on write — every error naming the key as the API's
//! `field` (`settings.targets[0].address`, `selector.region`, `rollout.percent`).
//!
//! What this module must never do: IO, or accept settings that make an agent run a command (the
//! protocol's [`Settings`] has no such key; an unknown key does not even decode).

use std::collections::BTreeMap;

use posmon_protocol::control::{Settings, LAYERED_SETTINGS_MAX_BYTES};
use posmon_protocol::limits::LABEL_VALUE_MAX_CHARS;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

/// The most profiles a collector holds.
pub const PROFILES_MAX: usize = 256;
/// The most characters of a profile's comment.
pub const COMMENT_MAX_CHARS: usize = 256;
/// The most characters of a profile's name.
pub const NAME_MAX_CHARS: usize = 64;
/// The most extra labels one selector may name.
pub const SELECTOR_LABELS_MAX: usize = 16;

/// Which terminals a profile applies to: every dimension given must match the terminal's
/// reported labels (or its id); none given selects every terminal.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Selector {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub carrier: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merchant: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub terminal: Option<String>,
    /// Extra labels (`labels.extra` of the reports): key → value.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

/// The labels a selector or a rollout reads: a terminal's, from its newest report.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MatchLabels {
    pub region: Option<Box<str>>,
    pub carrier: Option<Box<str>>,
    pub model: Option<Box<str>>,
    pub merchant: Option<Box<str>>,
    pub extra: BTreeMap<Box<str>, Box<str>>,
}

impl MatchLabels {
    /// The labels of a report that selectors read (not the measured network ones).
    pub fn of(labels: &posmon_protocol::Labels) -> Self {
        let text = |value: &Option<String>| value.as_deref().map(Box::from);
        MatchLabels {
            region: text(&labels.region),
            carrier: text(&labels.carrier),
            model: text(&labels.model),
            merchant: text(&labels.merchant),
            extra: labels
                .extra
                .iter()
                .map(|(key, value)| (Box::from(key.as_str()), Box::from(value.as_str())))
                .collect(),
        }
    }

    /// Whether these are the labels of `labels`, without building them.
    pub fn same_as(&self, labels: &posmon_protocol::Labels) -> bool {
        let same =
            |mine: &Option<Box<str>>, theirs: &Option<String>| mine.as_deref() == theirs.as_deref();
        same(&self.region, &labels.region)
            && same(&self.carrier, &labels.carrier)
            && same(&self.model, &labels.model)
            && same(&self.merchant, &labels.merchant)
            && self.extra.len() == labels.extra.len()
            && self
                .extra
                .iter()
                .zip(&labels.extra)
                .all(|((k1, v1), (k2, v2))| **k1 == **k2 && **v1 == **v2)
    }
}

/// The most specific dimension a selector names: the order of the layers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Rank {
    Fleet = 0,
    Region = 1,
    Carrier = 2,
    Model = 3,
    Merchant = 4,
    Labels = 5,
    Terminal = 6,
}

impl Rank {
    pub fn number(self) -> u8 {
        self as u8
    }
}

impl Selector {
    /// The most specific dimension named: none 0 < region 1 < carrier 2 < model 3 < merchant 4
    /// < labels 5 < terminal 6.
    pub fn rank(&self) -> Rank {
        if self.terminal.is_some() {
            Rank::Terminal
        } else if !self.labels.is_empty() {
            Rank::Labels
        } else if self.merchant.is_some() {
            Rank::Merchant
        } else if self.model.is_some() {
            Rank::Model
        } else if self.carrier.is_some() {
            Rank::Carrier
        } else if self.region.is_some() {
            Rank::Region
        } else {
            Rank::Fleet
        }
    }

    /// Whether the terminal `terminal_id` with `labels` is selected.
    pub fn matches(&self, terminal_id: &str, labels: &MatchLabels) -> bool {
        let one = |wanted: &Option<String>, has: &Option<Box<str>>| match wanted {
            None => true,
            Some(wanted) => has.as_deref() == Some(wanted.as_str()),
        };
        self.terminal
            .as_deref()
            .is_none_or(|wanted| wanted == terminal_id)
            && one(&self.region, &labels.region)
            && one(&self.carrier, &labels.carrier)
            && one(&self.model, &labels.model)
            && one(&self.merchant, &labels.merchant)
            && self
                .labels
                .iter()
                .all(|(key, value)| labels.extra.get(key.as_str()).map(|v| &**v) == Some(value))
    }

    /// The label keys this reads, in settings spelling (`labels.region`, `labels.extra.shop`).
    pub fn label_keys(&self) -> Vec<(String, String)> {
        let mut keys = Vec::new();
        for (name, value) in [
            ("region", &self.region),
            ("carrier", &self.carrier),
            ("model", &self.model),
            ("merchant", &self.merchant),
        ] {
            if value.is_some() {
                keys.push((format!("labels.{name}"), format!("selector.{name}")));
            }
        }
        for key in self.labels.keys() {
            keys.push((
                format!("labels.extra.{key}"),
                format!("selector.labels.{key}"),
            ));
        }
        keys
    }
}

/// A label that puts a terminal into a rollout at once: an extra label `key` = `value`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RolloutLabel {
    pub key: String,
    pub value: String,
}

/// Which selected terminals run a profile's current settings; the others run its `previous`.
/// Without `percent`: all of them, or only those carrying the label when one is given.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, from = "RolloutWire")]
pub struct Rollout {
    pub percent: u8,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<RolloutLabel>,
}

/// A rollout as written: its percent is optional.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RolloutWire {
    #[serde(default)]
    percent: Option<u8>,
    #[serde(default)]
    label: Option<RolloutLabel>,
}

impl From<RolloutWire> for Rollout {
    fn from(wire: RolloutWire) -> Self {
        let percent = wire
            .percent
            .unwrap_or(if wire.label.is_some() { 0 } else { 100 });
        Rollout {
            percent,
            label: wire.label,
        }
    }
}

impl Default for Rollout {
    fn default() -> Self {
        Rollout {
            percent: 100,
            label: None,
        }
    }
}

impl Rollout {
    pub fn is_full(&self) -> bool {
        self.percent >= 100
    }
}

/// A stable bucket 0..100 of (profile, revision, terminal): the same on every collector and
/// after a restart, and a new revision draws anew.
pub fn rollout_bucket(profile: &str, revision: u64, terminal_id: &str) -> u8 {
    let mut hasher = Sha256::new();
    hasher.update(profile.as_bytes());
    hasher.update([0]);
    hasher.update(revision.to_be_bytes());
    hasher.update(terminal_id.as_bytes());
    let digest = hasher.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    // The remainder of a division by 100 fits a u8.
    u8::try_from(u64::from_be_bytes(first) % 100).unwrap_or(0)
}

/// A profile as stored and served.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Profile {
    pub name: String,
    pub selector: Selector,
    pub settings: Settings,
    pub rollout: Rollout,
    pub revision: u64,
    /// The profile's last fully rolled-out settings: what the terminals outside a partial
    /// rollout run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub previous: Option<Settings>,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
    pub updated_by: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
}

/// What a terminal runs of one matching profile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applies<'a> {
    /// Its current settings (in the rollout).
    Current(&'a Settings),
    /// Its previous settings (outside a partial rollout).
    Previous(&'a Settings),
    /// Nothing: outside a partial rollout of a profile with no previous settings.
    Not,
}

impl Profile {
    /// What `terminal_id` with `labels`, selected by this profile, runs of it.
    pub fn applies(&self, terminal_id: &str, labels: &MatchLabels) -> Applies<'_> {
        let in_rollout = self.rollout.is_full()
            || rollout_bucket(&self.name, self.revision, terminal_id) < self.rollout.percent
            || self.rollout.label.as_ref().is_some_and(|label| {
                labels.extra.get(label.key.as_str()).map(|v| &**v) == Some(label.value.as_str())
            });
        if in_rollout {
            Applies::Current(&self.settings)
        } else if let Some(previous) = &self.previous {
            Applies::Previous(previous)
        } else {
            Applies::Not
        }
    }

    /// The label keys this profile reads (selector and rollout label), with the field naming
    /// each.
    pub fn reads(&self) -> Vec<(String, String)> {
        let mut keys = self.selector.label_keys();
        if let Some(label) = &self.rollout.label {
            keys.push((
                format!("labels.extra.{}", label.key),
                "rollout.label.key".to_string(),
            ));
        }
        keys
    }

    /// The label keys this profile's settings (current or previous) set.
    pub fn writes(&self) -> Vec<String> {
        let mut keys = self.settings.labels.keys();
        if let Some(previous) = &self.previous {
            keys.extend(previous.labels.keys());
        }
        keys
    }

    /// The next revision of this profile (`None`: a new one) after a PUT: the revision counts
    /// up; the settings it replaces become `previous` when they were fully rolled out, else
    /// `previous` stays (a revision that never passed its canary is nobody's default).
    pub fn next(
        old: Option<&Profile>,
        request: ProfileRequest,
        name: &str,
        by: &str,
        at: OffsetDateTime,
    ) -> Profile {
        let (revision, previous) = match old {
            None => (1, None),
            Some(old) => {
                let previous = if old.rollout.is_full() {
                    Some(old.settings.clone())
                } else {
                    old.previous.clone()
                };
                (old.revision.saturating_add(1), previous)
            }
        };
        Profile {
            name: name.to_string(),
            selector: request.selector,
            settings: request.settings,
            rollout: request.rollout.unwrap_or_default(),
            revision,
            previous,
            updated_at: at,
            updated_by: by.to_string(),
            comment: request.comment.filter(|comment| !comment.is_empty()),
        }
    }
}

/// The body of `PUT /api/v1/config/profiles/{name}`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProfileRequest {
    #[serde(default)]
    pub selector: Selector,
    pub settings: Settings,
    #[serde(default)]
    pub rollout: Option<Rollout>,
    #[serde(default)]
    pub comment: Option<String>,
}

/// A refused profile: the key (as the API's `field`) and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    pub field: String,
    pub problem: String,
}

impl Invalid {
    pub fn new(field: impl Into<String>, problem: impl Into<String>) -> Self {
        Invalid {
            field: field.into(),
            problem: problem.into(),
        }
    }
}

/// A profile name: `[a-z0-9_-]{1,64}`.
pub fn check_name(name: &str) -> Result<(), Invalid> {
    let ok = !name.is_empty()
        && name.len() <= NAME_MAX_CHARS
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(Invalid::new(
            "name",
            format!("must be 1 to {NAME_MAX_CHARS} characters from a-z 0-9 _ -"),
        ))
    }
}

/// Non-empty, at most `max` characters, no control characters.
fn check_text(value: &str, max: usize, field: &str) -> Result<(), Invalid> {
    if value.is_empty() {
        return Err(Invalid::new(field, "must not be empty"));
    }
    if value.chars().count() > max {
        return Err(Invalid::new(field, format!("at most {max} characters")));
    }
    if value.chars().any(char::is_control) {
        return Err(Invalid::new(field, "must not contain control characters"));
    }
    Ok(())
}

/// An extra label's key, as reports carry it: `[a-z][a-z0-9_]*`, at most 64 characters.
fn check_label_key(key: &str, field: &str) -> Result<(), Invalid> {
    let ok = key.len() <= NAME_MAX_CHARS
        && key.chars().next().is_some_and(|c| c.is_ascii_lowercase())
        && key
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(Invalid::new(
            field,
            "must match [a-z][a-z0-9_]* (at most 64 characters)",
        ))
    }
}

impl ProfileRequest {
    /// Checks the request on its own (the set of profiles is checked by [`check_set`]).
    pub fn validate(&self) -> Result<(), Invalid> {
        let selector = &self.selector;
        for (name, value) in [
            ("region", &selector.region),
            ("carrier", &selector.carrier),
            ("model", &selector.model),
            ("merchant", &selector.merchant),
        ] {
            if let Some(value) = value {
                check_text(value, LABEL_VALUE_MAX_CHARS, &format!("selector.{name}"))?;
            }
        }
        if let Some(terminal) = &selector.terminal {
            posmon_protocol::validate::check_terminal_id(terminal, "selector.terminal")
                .map_err(|error| Invalid::new(error.field, error.problem))?;
        }
        if selector.labels.len() > SELECTOR_LABELS_MAX {
            return Err(Invalid::new(
                "selector.labels",
                format!("at most {SELECTOR_LABELS_MAX} labels"),
            ));
        }
        for (key, value) in &selector.labels {
            let field = format!("selector.labels.{key}");
            check_label_key(key, &field)?;
            check_text(value, LABEL_VALUE_MAX_CHARS, &field)?;
        }
        self.settings
            .validate("settings")
            .map_err(|error| Invalid::new(error.field, error.problem))?;
        if let Some(rollout) = &self.rollout {
            if rollout.percent > 100 {
                return Err(Invalid::new("rollout.percent", "must be between 0 and 100"));
            }
            if rollout.percent == 0 && rollout.label.is_none() {
                return Err(Invalid::new(
                    "rollout.percent",
                    "0 % without a label reaches no terminal: give a label, or 1 to 100",
                ));
            }
            if let Some(label) = &rollout.label {
                check_label_key(&label.key, "rollout.label.key")?;
                check_text(&label.value, LABEL_VALUE_MAX_CHARS, "rollout.label.value")?;
            }
        }
        if let Some(comment) = &self.comment {
            if comment.chars().count() > COMMENT_MAX_CHARS {
                return Err(Invalid::new(
                    "comment",
                    format!("at most {COMMENT_MAX_CHARS} characters"),
                ));
            }
            if comment.chars().any(char::is_control) {
                return Err(Invalid::new(
                    "comment",
                    "must not contain control characters",
                ));
            }
        }
        Ok(())
    }
}

/// The settings of every profile, current and previous, laid together must stay within what an
/// agent reads ([`LAYERED_SETTINGS_MAX_BYTES`]): bounded by the sum, over the keys, of each
/// key's largest value in any of them.
fn check_layered_size<'a>(
    candidate: &'a Profile,
    others: impl Iterator<Item = &'a Profile>,
) -> Result<(), Invalid> {
    let mut largest: std::collections::BTreeMap<String, usize> = Default::default();
    let all = std::iter::once(candidate).chain(others);
    for settings in
        all.flat_map(|profile| std::iter::once(&profile.settings).chain(&profile.previous))
    {
        for (key, bytes) in settings.key_bytes() {
            let entry = largest.entry(key).or_default();
            *entry = (*entry).max(bytes);
        }
    }
    let total: usize = largest.values().sum();
    if total > LAYERED_SETTINGS_MAX_BYTES {
        return Err(Invalid::new(
            "settings",
            format!(
                "the profiles' settings laid together could take {total} bytes, more than an agent reads ({LAYERED_SETTINGS_MAX_BYTES}): shorten the lists"
            ),
        ));
    }
    Ok(())
}

/// Checks `candidate` against the other profiles (`others`, without the one it replaces): the
/// count, and that no profile's settings set a label that a profile's selector or rollout reads
/// (it would flip which profiles match the terminals it runs on).
pub fn check_set<'a>(
    candidate: &'a Profile,
    others: impl Iterator<Item = &'a Profile> + Clone,
) -> Result<(), Invalid> {
    if others.clone().count() >= PROFILES_MAX {
        return Err(Invalid::new(
            "name",
            format!("at most {PROFILES_MAX} profiles: delete one first"),
        ));
    }
    check_layered_size(candidate, others.clone())?;
    let writes = candidate.writes();
    for (key, field) in candidate.reads() {
        if writes.contains(&key) {
            return Err(Invalid::new(
                field,
                format!("reads {key}, which this profile's settings set"),
            ));
        }
    }
    for other in others {
        let other_writes = other.writes();
        for (key, field) in candidate.reads() {
            if other_writes.contains(&key) {
                return Err(Invalid::new(
                    field,
                    format!("reads {key}, which profile {:?} sets", other.name),
                ));
            }
        }
        for (key, _) in other.reads() {
            if writes.contains(&key) {
                return Err(Invalid::new(
                    format!("settings.{key}"),
                    format!("profile {:?} selects by {key}", other.name),
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(json: &str) -> ProfileRequest {
        serde_json::from_str(json).unwrap_or_else(|error| panic!("{json}: {error}"))
    }

    fn profile(name: &str, json: &str) -> Profile {
        Profile::next(
            None,
            request(json),
            name,
            "admin",
            OffsetDateTime::UNIX_EPOCH,
        )
    }

    #[test]
    fn every_refusal_names_its_key() {
        let cases = [
            (r#"{"settings":{"attempts":0}}"#, "settings.attempts"),
            (
                r#"{"settings":{"targets":[{"name":"a","address":"nohost"}]}}"#,
                "settings.targets[0].address",
            ),
            (
                r#"{"selector":{"region":""},"settings":{}}"#,
                "selector.region",
            ),
            (
                r#"{"selector":{"terminal":"T 1"},"settings":{}}"#,
                "selector.terminal",
            ),
            (
                r#"{"selector":{"labels":{"Shop":"a"}},"settings":{}}"#,
                "selector.labels.Shop",
            ),
            (
                r#"{"settings":{},"rollout":{"percent":0}}"#,
                "rollout.percent",
            ),
            (
                r#"{"settings":{},"rollout":{"percent":101}}"#,
                "rollout.percent",
            ),
            (
                r#"{"settings":{},"rollout":{"label":{"key":"canary","value":""}}}"#,
                "rollout.label.value",
            ),
        ];
        for (json, field) in cases {
            let error = request(json).validate().err().map(|error| error.field);
            assert_eq!(error.as_deref(), Some(field), "{json}");
        }
        let long = format!(r#"{{"settings":{{}},"comment":"{}"}}"#, "x".repeat(257));
        assert_eq!(
            request(&long).validate().err().map(|e| e.field).as_deref(),
            Some("comment")
        );
        assert!(request(r#"{"selector":{"region":"east"},"settings":{"attempts":3},"rollout":{"percent":10},"comment":"why"}"#).validate().is_ok());
        for name in ["", "A", "a b", &"a".repeat(65)] {
            assert!(check_name(name).is_err(), "{name}");
        }
        assert!(check_name("east-2_x").is_ok());
    }

    #[test]
    fn ranks_follow_the_most_specific_dimension() {
        let cases = [
            (r#"{}"#, Rank::Fleet),
            (r#"{"region":"e"}"#, Rank::Region),
            (r#"{"region":"e","carrier":"c"}"#, Rank::Carrier),
            (r#"{"model":"m","carrier":"c"}"#, Rank::Model),
            (r#"{"merchant":"m","model":"x"}"#, Rank::Merchant),
            (r#"{"labels":{"shop":"a"},"merchant":"m"}"#, Rank::Labels),
            (
                r#"{"terminal":"T-1","labels":{"shop":"a"}}"#,
                Rank::Terminal,
            ),
        ];
        for (json, rank) in cases {
            let selector: Selector = serde_json::from_str(json).unwrap_or_default();
            assert_eq!(selector.rank(), rank, "{json}");
        }
    }

    #[test]
    fn a_selector_needs_every_dimension_it_names() {
        let labels = MatchLabels {
            region: Some("east".into()),
            model: Some("A920".into()),
            extra: BTreeMap::from([("shop".into(), "7".into())]),
            ..MatchLabels::default()
        };
        let cases = [
            (r#"{}"#, true),
            (r#"{"region":"east"}"#, true),
            (r#"{"region":"east","model":"A920"}"#, true),
            (r#"{"region":"east","model":"A80"}"#, false),
            (r#"{"carrier":"cm"}"#, false),
            (r#"{"labels":{"shop":"7"}}"#, true),
            (r#"{"labels":{"shop":"8"}}"#, false),
            (r#"{"terminal":"T-1"}"#, true),
            (r#"{"terminal":"T-2"}"#, false),
        ];
        for (json, expected) in cases {
            let selector: Selector = serde_json::from_str(json).unwrap_or_default();
            assert_eq!(selector.matches("T-1", &labels), expected, "{json}");
        }
    }

    #[test]
    fn a_rollout_is_stable_and_takes_about_its_share() {
        let mut canary = profile("canary", r#"{"settings":{"attempts":2}}"#);
        canary.rollout.percent = 20;
        let labels = MatchLabels::default();
        let ids: Vec<String> = (0..5000).map(|i| format!("T-{i}")).collect();
        let inside = |profile: &Profile| {
            ids.iter()
                .filter(|id| matches!(profile.applies(id, &labels), Applies::Current(_)))
                .count()
        };
        let first = inside(&canary);
        assert!((850..=1150).contains(&first), "{first} of 5000 at 20 %");
        // Stable: the same terminals every time.
        assert_eq!(inside(&canary), first);
        assert_eq!(
            rollout_bucket("canary", 1, "T-9"),
            rollout_bucket("canary", 1, "T-9")
        );
        // Without previous settings the others run nothing of it.
        assert_eq!(canary.applies("T-1", &labels).eq(&Applies::Not), {
            rollout_bucket("canary", 1, "T-1") >= 20
        });
        // The rollout label puts a terminal in at once.
        canary.rollout.label = Some(RolloutLabel {
            key: "canary".into(),
            value: "yes".into(),
        });
        let labelled = MatchLabels {
            extra: BTreeMap::from([("canary".into(), "yes".into())]),
            ..MatchLabels::default()
        };
        assert!(ids
            .iter()
            .all(|id| matches!(canary.applies(id, &labelled), Applies::Current(_))));
        canary.rollout.percent = 100;
        assert_eq!(inside(&canary), ids.len());
    }

    #[test]
    fn previous_is_the_last_fully_rolled_out_settings() {
        let at = OffsetDateTime::UNIX_EPOCH;
        let full = profile("p", r#"{"settings":{"attempts":1}}"#);
        assert_eq!(full.revision, 1);
        assert_eq!(full.previous, None);
        let partial = Profile::next(
            Some(&full),
            request(r#"{"settings":{"attempts":2},"rollout":{"percent":10}}"#),
            "p",
            "admin",
            at,
        );
        assert_eq!(partial.revision, 2);
        assert_eq!(partial.previous.as_ref().and_then(|s| s.attempts), Some(1));
        // Another partial change keeps the fully rolled-out one as previous.
        let again = Profile::next(
            Some(&partial),
            request(r#"{"settings":{"attempts":3},"rollout":{"percent":50}}"#),
            "p",
            "admin",
            at,
        );
        assert_eq!(again.previous.as_ref().and_then(|s| s.attempts), Some(1));
        let done = Profile::next(
            Some(&again),
            request(r#"{"settings":{"attempts":3}}"#),
            "p",
            "admin",
            at,
        );
        assert_eq!(done.previous.as_ref().and_then(|s| s.attempts), Some(1));
        let after = Profile::next(
            Some(&done),
            request(r#"{"settings":{"attempts":4}}"#),
            "p",
            "admin",
            at,
        );
        assert_eq!(after.previous.as_ref().and_then(|s| s.attempts), Some(3));
        // A partial first revision never becomes the default of the terminals outside the
        // next canary: they run nothing of the profile until one is fully rolled out.
        let mut first = profile("q", r#"{"settings":{"attempts":5}}"#);
        first.rollout.percent = 5;
        let second = Profile::next(
            Some(&first),
            request(r#"{"settings":{"attempts":6},"rollout":{"percent":5}}"#),
            "q",
            "admin",
            at,
        );
        assert_eq!(second.previous, None);
    }

    #[test]
    fn settings_may_not_set_a_label_a_selector_reads() {
        let east = profile(
            "east",
            r#"{"selector":{"region":"east"},"settings":{"attempts":2}}"#,
        );
        let shop = profile(
            "shop",
            r#"{"selector":{"labels":{"shop":"7"}},"settings":{}}"#,
        );
        let mover = profile("mover", r#"{"settings":{"labels":{"region":"west"}}}"#);
        let error = check_set(&mover, [&east, &shop].into_iter()).err();
        assert_eq!(
            error.map(|e| e.field).as_deref(),
            Some("settings.labels.region")
        );
        // And the other way round: a selector reading what a profile sets.
        let setter = profile(
            "setter",
            r#"{"settings":{"labels":{"extra":{"lane":"3"}}}}"#,
        );
        let reader = profile(
            "reader",
            r#"{"selector":{"labels":{"lane":"3"}},"settings":{}}"#,
        );
        let error = check_set(&reader, [&setter].into_iter()).err();
        assert_eq!(
            error.map(|e| e.field).as_deref(),
            Some("selector.labels.lane")
        );
        // One profile reading what it sets itself.
        let selfish = profile(
            "selfish",
            r#"{"selector":{"region":"east"},"settings":{"labels":{"region":"west"}}}"#,
        );
        assert_eq!(
            check_set(&selfish, std::iter::empty())
                .err()
                .map(|e| e.field)
                .as_deref(),
            Some("selector.region")
        );
        // A rollout label is read too.
        let mut canary = profile("canary", r#"{"settings":{}}"#);
        canary.rollout.label = Some(RolloutLabel {
            key: "lane".into(),
            value: "3".into(),
        });
        assert_eq!(
            check_set(&canary, [&setter].into_iter())
                .err()
                .map(|e| e.field)
                .as_deref(),
            Some("rollout.label.key")
        );
        // Unrelated labels are fine.
        let fine = profile("fine", r#"{"settings":{"labels":{"carrier":"cm"}}}"#);
        assert!(check_set(&fine, [&east, &shop].into_iter()).is_ok());
    }

    #[test]
    fn at_most_profiles_max() {
        let many: Vec<Profile> = (0..PROFILES_MAX)
            .map(|i| profile(&format!("p{i}"), r#"{"settings":{}}"#))
            .collect();
        let one_more = profile("extra", r#"{"settings":{}}"#);
        assert_eq!(
            check_set(&one_more, many.iter())
                .err()
                .map(|e| e.field)
                .as_deref(),
            Some("name")
        );
        assert!(check_set(&one_more, many.iter().skip(1)).is_ok());
    }
}
