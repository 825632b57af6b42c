//! `GET` and `PUT /api/v1/policy/versions`: the version policy, behind the admin token. A new
//! policy is validated, stored in the database, and applies from each terminal's next report.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::Json;
use serde::{Deserialize, Serialize};

use super::error::{ApiError, Reason};
use super::reports::{bearer_token, check_content_type, read_body};
use super::AppState;
use crate::config::{validate_version_policy, VersionRule};

/// Most rules one policy may hold.
const RULES_MAX: usize = 1000;

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VersionPolicy {
    rules: Vec<VersionRule>,
}

/// Refuses a request without the admin token (compared in constant time).
pub(super) fn authorize(state: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(expected) = &state.admin_token else {
        return Err(ApiError::new(
            Reason::AdminDisabled,
            "no admin token is configured (auth.admin_token_file or POSMON_ADMIN_TOKEN)",
        ));
    };
    let given = bearer_token(headers)?;
    let same_length = given.len() == expected.len();
    let difference = given
        .bytes()
        .zip(expected.bytes())
        .fold(0u8, |acc, (a, b)| acc | (a ^ b));
    if same_length && difference == 0 {
        Ok(())
    } else {
        Err(ApiError::new(Reason::InvalidToken, "not the admin token"))
    }
}

pub async fn get_versions(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
) -> Result<Json<VersionPolicy>, ApiError> {
    authorize(&state, &headers)?;
    Ok(Json(VersionPolicy {
        rules: state.version_policy().as_ref().clone(),
    }))
}

pub async fn put_versions(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<VersionPolicy>, ApiError> {
    authorize(&state, &headers)?;
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
    validate_version_policy(&policy.rules).map_err(|(key, problem)| {
        ApiError::field(Reason::InvalidField, format!("rules{key}"), problem)
    })?;
    let stored = Arc::clone(&state);
    let rules = policy.rules.clone();
    tokio::task::spawn_blocking(move || stored.set_version_policy(rules))
        .await
        .map_err(|error| ApiError::internal("storing the version policy", error))?
        .map_err(|error| ApiError::internal("storing the version policy", error))?;
    tracing::info!(
        rules = policy.rules.len(),
        "The version policy was replaced."
    );
    Ok(Json(policy))
}
