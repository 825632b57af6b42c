//! `GET` and `PUT /api/v1/policy/versions`: the version policy, for the admin role. A new
//! policy is validated, stored in the database, and applies at once: every terminal's last
//! reported versions are judged again under it (`Fleet::rejudge_versions`), so its outdated
//! findings open and close without waiting for its next report.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::Json;
use serde::{Deserialize, Serialize};

use super::auth::{Actor, Role};
use super::error::{ApiError, Reason};
use super::reports::{check_content_type, read_body};
use super::AppState;
use crate::config::{validate_version_policy, VersionRule};

/// Most rules one policy may hold.
const RULES_MAX: usize = 1000;
/// The longest grace period a rule may give: ten years.
const UPDATE_WITHIN_DAYS_MAX: u32 = 3660;
/// How far from today a release date may lie, in days: ten years either way.
const RELEASED_WITHIN_DAYS: i64 = 3660;

/// Refuses rules whose model is no model label, or whose dates or grace periods are out of
/// range around `today`: the field (`[2].latest_released_on`) and the problem.
fn check_rule_times(rules: &[VersionRule], today: time::Date) -> Result<(), (String, String)> {
    let window = time::Duration::days(RELEASED_WITHIN_DAYS);
    let earliest = today.checked_sub(window).unwrap_or(time::Date::MIN);
    let latest = today.checked_add(window).unwrap_or(time::Date::MAX);
    for (index, rule) in rules.iter().enumerate() {
        let max_chars = posmon_protocol::limits::LABEL_VALUE_MAX_CHARS;
        if rule
            .model
            .as_deref()
            .is_some_and(|model| model.is_empty() || model.chars().count() > max_chars)
        {
            return Err((
                format!("[{index}].model"),
                format!("must be 1 to {max_chars} characters (a terminal's model label)"),
            ));
        }
        if rule.update_within_days > UPDATE_WITHIN_DAYS_MAX {
            return Err((
                format!("[{index}].update_within_days"),
                format!("must be at most {UPDATE_WITHIN_DAYS_MAX} (ten years)"),
            ));
        }
        if let Some(released) = rule.latest_released_on {
            if !(earliest..=latest).contains(&released) {
                return Err((
                    format!("[{index}].latest_released_on"),
                    format!("must be between {earliest} and {latest} (ten years from today)"),
                ));
            }
        }
    }
    Ok(())
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VersionPolicy {
    rules: Vec<VersionRule>,
}

pub async fn get_versions(
    State(state): State<Arc<AppState>>,
    actor: Actor,
) -> Result<Json<VersionPolicy>, ApiError> {
    actor.require(Role::Admin)?;
    Ok(Json(VersionPolicy {
        rules: state.version_policy().as_ref().clone(),
    }))
}

pub async fn put_versions(
    State(state): State<Arc<AppState>>,
    actor: Actor,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<VersionPolicy>, ApiError> {
    actor.require(Role::Admin)?;
    check_content_type(&headers)?;
    let bytes = read_body(&headers, body, state.config.limits.max_body_bytes).await?;
    let mut deserializer = serde_json::Deserializer::from_slice(&bytes);
    let policy: VersionPolicy =
        serde_path_to_error::deserialize(&mut deserializer).map_err(|error| {
            let path = error.path().to_string();
            ApiError::field(Reason::InvalidField, path, error.into_inner().to_string())
        })?;
    if policy.rules.len() > RULES_MAX {
        return Err(ApiError::field(
            Reason::InvalidField,
            "rules",
            format!("too many rules ({} > {RULES_MAX})", policy.rules.len()),
        ));
    }
    validate_version_policy(&policy.rules)
        .and_then(|()| check_rule_times(&policy.rules, time::OffsetDateTime::now_utc().date()))
        .map_err(|(key, problem)| {
            ApiError::field(Reason::InvalidField, format!("rules{key}"), problem)
        })?;
    let stored = Arc::clone(&state);
    let rules = policy.rules.clone();
    // A pass over every terminal: off the async workers.
    let changed = tokio::task::spawn_blocking(move || stored.set_version_policy(rules))
        .await
        .map_err(|error| ApiError::internal("storing the version policy", error))?
        .map_err(|error| ApiError::internal("storing the version policy", error))?;
    tracing::info!(
        rules = policy.rules.len(),
        findings_changed = changed,
        "The version policy was replaced; every terminal's versions were judged again under it."
    );
    Ok(Json(policy))
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::date;

    #[test]
    fn rule_dates_and_grace_periods_are_bounded_around_today() {
        let today = date!(2026 - 12 - 02);
        let rule = |released: Option<time::Date>, days: u32| VersionRule {
            component: "pos_app".into(),
            model: None,
            minimum: "2.0".into(),
            latest: Some("2.5".into()),
            latest_released_on: released,
            update_within_days: days,
        };
        let cases = [
            (rule(None, 0), None),
            (rule(Some(date!(2026 - 11 - 01)), 30), None),
            (rule(Some(date!(2036 - 12 - 01)), 3660), None),
            (rule(None, 3661), Some("[1].update_within_days")),
            (rule(None, u32::MAX), Some("[1].update_within_days")),
            (
                rule(Some(time::Date::MAX), 0),
                Some("[1].latest_released_on"),
            ),
            (
                rule(Some(time::Date::MIN), 0),
                Some("[1].latest_released_on"),
            ),
            (
                rule(Some(date!(9999 - 12 - 31)), 1),
                Some("[1].latest_released_on"),
            ),
            (
                rule(Some(date!(2015 - 01 - 01)), 1),
                Some("[1].latest_released_on"),
            ),
            (
                VersionRule {
                    model: Some("m".repeat(129)),
                    ..rule(None, 0)
                },
                Some("[1].model"),
            ),
            (
                VersionRule {
                    model: Some(String::new()),
                    ..rule(None, 0)
                },
                Some("[1].model"),
            ),
        ];
        for (bad, field) in cases {
            let rules = [rule(None, 0), bad];
            let got = check_rule_times(&rules, today)
                .err()
                .map(|(field, _)| field);
            assert_eq!(got.as_deref(), field);
        }
        // Today at the ends of the calendar does not panic either.
        for today in [time::Date::MIN, time::Date::MAX] {
            let _ = check_rule_times(&[rule(Some(today), u32::MAX)], today);
        }
    }
}
