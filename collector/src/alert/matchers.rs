//! Matchers: which findings a route or a silence applies to, by the finding's party, code,
//! category and severity and its terminal's labels. Each field holds patterns (`*` matches any
//! run of characters, so `outdated.*`); an empty field matches everything, a field with
//! patterns matches when one of them does, and every field must match.
//!
//! Pure: no IO, no clock.

use serde::{Deserialize, Serialize};

use posmon_diagnosis::{all_kinds, Category, Party, Severity};

/// Most patterns one field may hold, and the longest pattern: matchers come from the config
/// and from the silences API.
pub const PATTERNS_MAX: usize = 100;
pub const PATTERN_MAX_CHARS: usize = 200;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Matchers {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub party: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub code: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub category: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub severity: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub terminal: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub region: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub carrier: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub model: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub merchant: Vec<String>,
}

/// What matchers look at: one finding and its terminal's labels (for a fleet-wide finding,
/// the labels of its scope, such as the carrier and region of a carrier outage).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Facts<'a> {
    pub party: &'a str,
    pub code: &'a str,
    pub category: &'a str,
    pub severity: &'a str,
    pub terminal: &'a str,
    pub region: Option<&'a str>,
    pub carrier: Option<&'a str>,
    pub model: Option<&'a str>,
    pub merchant: Option<&'a str>,
}

impl Matchers {
    fn fields(&self) -> [(&'static str, &Vec<String>); 9] {
        [
            ("party", &self.party),
            ("code", &self.code),
            ("category", &self.category),
            ("severity", &self.severity),
            ("terminal", &self.terminal),
            ("region", &self.region),
            ("carrier", &self.carrier),
            ("model", &self.model),
            ("merchant", &self.merchant),
        ]
    }

    pub fn is_empty(&self) -> bool {
        self.fields()
            .iter()
            .all(|(_, patterns)| patterns.is_empty())
    }

    pub fn matches(&self, facts: &Facts<'_>) -> bool {
        let values = [
            Some(facts.party),
            Some(facts.code),
            Some(facts.category),
            Some(facts.severity),
            Some(facts.terminal),
            facts.region,
            facts.carrier,
            facts.model,
            facts.merchant,
        ];
        self.fields()
            .iter()
            .zip(values)
            .all(|((_, patterns), value)| {
                patterns.is_empty()
                    || value.is_some_and(|value| {
                        patterns.iter().any(|pattern| glob_matches(pattern, value))
                    })
            })
    }

    /// Checks sizes and the closed sets (party, category, severity; a code pattern must match
    /// a known code, so a typo is caught). The error names the field and the problem.
    pub fn validate(&self) -> Result<(), (String, String)> {
        for (field, patterns) in self.fields() {
            if patterns.len() > PATTERNS_MAX {
                return Err((field.into(), format!("at most {PATTERNS_MAX} patterns")));
            }
            for (index, pattern) in patterns.iter().enumerate() {
                let key = format!("{field}[{index}]");
                if pattern.is_empty() || pattern.chars().count() > PATTERN_MAX_CHARS {
                    return Err((key, format!("must be 1 to {PATTERN_MAX_CHARS} characters")));
                }
                let known: Vec<&str> = match field {
                    "party" => PARTIES.iter().map(|party| party.as_str()).collect(),
                    "category" => Category::ALL.iter().map(|c| c.as_str()).collect(),
                    "severity" => Severity::ALL.iter().map(|s| s.as_str()).collect(),
                    "code" => all_kinds().map(|kind| kind.code).collect(),
                    _ => continue,
                };
                if !known.iter().any(|value| glob_matches(pattern, value)) {
                    return Err((
                        key,
                        format!("{pattern:?} matches none of {}", known.join(", ")),
                    ));
                }
            }
        }
        Ok(())
    }
}

const PARTIES: [Party; 6] = [
    Party::Merchant,
    Party::PosVendor,
    Party::NetworkProvider,
    Party::SoftwareVendor,
    Party::Acquirer,
    Party::Operations,
];

/// `*` matches any run of characters (also none); everything else matches itself.
pub fn glob_matches(pattern: &str, value: &str) -> bool {
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or_default();
    let Some(mut rest) = value.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    let Some((last, middle)) = parts.split_last() else {
        return rest.is_empty();
    };
    for part in middle {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(pattern: &str, value: &str, expected: bool) {
        assert_eq!(
            glob_matches(pattern, value),
            expected,
            "{pattern} ~ {value}"
        );
    }

    #[test]
    fn globs() {
        check("outdated.*", "outdated.pos_app", true);
        check("outdated.*", "outdated.", true);
        check("outdated.*", "env.outdated.x", false);
        check(
            "env.network.host_unreachable",
            "env.network.host_unreachable",
            true,
        );
        check("env.network.host", "env.network.host_unreachable", false);
        check("*", "", true);
        check("*.network.*", "env.network.dns_failure", true);
        check("a*b*c", "abc", true);
        check("a*b*c", "aXbYc", true);
        check("a*b*c", "acb", false);
        check("ab*ba", "aba", false);
        check("", "", true);
        check("", "x", false);
    }

    #[test]
    fn every_field_must_match_and_an_empty_field_matches_all() {
        let matchers = Matchers {
            category: vec!["environment".into()],
            code: vec!["env.network.*".into()],
            carrier: vec!["carrier-x".into()],
            region: vec!["cn-east".into(), "cn-north".into()],
            ..Matchers::default()
        };
        let facts = Facts {
            party: "network_provider",
            code: "env.network.host_unreachable",
            category: "environment",
            severity: "critical",
            terminal: "T-1",
            region: Some("cn-north"),
            carrier: Some("carrier-x"),
            model: None,
            merchant: None,
        };
        assert!(matchers.matches(&facts));
        assert!(!matchers.matches(&Facts {
            region: Some("cn-west"),
            ..facts
        }));
        assert!(!matchers.matches(&Facts {
            carrier: None,
            ..facts
        }));
        assert!(Matchers::default().matches(&facts));
    }

    #[test]
    fn validation_names_the_field() {
        let bad = |matchers: Matchers| matchers.validate().err();
        assert_eq!(
            bad(Matchers {
                code: vec!["outdate.*".into()],
                ..Matchers::default()
            })
            .map(|(key, _)| key),
            Some("code[0]".into())
        );
        assert_eq!(
            bad(Matchers {
                party: vec!["pos_vendor".into(), "carrier".into()],
                ..Matchers::default()
            })
            .map(|(key, _)| key),
            Some("party[1]".into())
        );
        assert_eq!(
            bad(Matchers {
                region: vec![String::new()],
                ..Matchers::default()
            })
            .map(|(key, _)| key),
            Some("region[0]".into())
        );
        assert_eq!(
            Matchers {
                code: vec!["outdated.*".into()],
                severity: vec!["critical".into()],
                region: vec!["anything".into()],
                ..Matchers::default()
            }
            .validate(),
            Ok(())
        );
    }
}
