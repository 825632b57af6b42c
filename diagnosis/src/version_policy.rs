//! The version policy: which versions of a component are current, behind or outdated.

use serde::{Deserialize, Serialize};

/// The version policy of one software component, for one terminal model or all: below
/// `minimum` is critical; below `latest` once `update_within_days` have passed since
/// `latest_released_on` is a warning.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VersionRule {
    /// Component name as the agent reports it: `pos_app`, `os`, `firmware`, …
    pub component: String,
    /// Terminal model this rule applies to; every model when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Versions below this are outdated (critical).
    pub minimum: String,
    /// The newest release; older versions are a warning once the grace period has passed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latest: Option<String>,
    /// When `latest` came out (`YYYY-MM-DD`); without it the warning is immediate.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "calendar_date"
    )]
    pub latest_released_on: Option<time::Date>,
    /// Days a terminal may stay behind `latest` after its release.
    #[serde(default)]
    pub update_within_days: u32,
}

/// `YYYY-MM-DD` dates, as TOML and JSON strings.
mod calendar_date {
    use serde::{Deserialize, Deserializer, Serializer};
    use time::macros::format_description;

    const FORMAT: &[time::format_description::BorrowedFormatItem<'static>] =
        format_description!("[year]-[month]-[day]");

    pub fn serialize<S: Serializer>(
        date: &Option<time::Date>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match date.map(|date| date.format(FORMAT)) {
            Some(Ok(text)) => serializer.serialize_str(&text),
            Some(Err(error)) => Err(serde::ser::Error::custom(error)),
            None => serializer.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<time::Date>, D::Error> {
        let text = String::deserialize(deserializer)?;
        time::Date::parse(&text, FORMAT)
            .map(Some)
            .map_err(|error| serde::de::Error::custom(format!("expected YYYY-MM-DD: {error}")))
    }
}

/// Checks a version policy (from the config or the policy API); the error names the entry as
/// `[index].key` and the problem.
pub fn validate_version_policy(rules: &[VersionRule]) -> Result<(), (String, String)> {
    let known = crate::rules::outdated::KNOWN_COMPONENTS;
    for (index, rule) in rules.iter().enumerate() {
        let problem = |key: &str, problem: String| Err((format!("[{index}].{key}"), problem));
        if !known.contains(&rule.component.as_str()) {
            return problem(
                "component",
                format!(
                    "unknown component {:?} (expected one of {})",
                    rule.component,
                    known.join(", ")
                ),
            );
        }
        if rule.minimum.trim().is_empty() {
            return problem("minimum", "must not be empty".into());
        }
        if rule
            .latest
            .as_deref()
            .is_some_and(|latest| latest.trim().is_empty())
        {
            return problem("latest", "must not be empty".into());
        }
        for (key, text) in [
            ("minimum", Some(&rule.minimum)),
            ("latest", rule.latest.as_ref()),
        ] {
            if text.is_some_and(|text| {
                text.chars().count() > posmon_protocol::limits::VERSION_MAX_CHARS
            }) {
                return problem(key, "too long (at most 64 characters)".into());
            }
        }
    }
    Ok(())
}
