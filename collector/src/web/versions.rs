//! Version compliance: per model and component, how many terminals run it and how many are
//! outdated (below the policy's minimum) or behind (below its latest after the grace period),
//! and how many no rule applies to; and one terminal's versions against the rules that apply to
//! it (`no_rule` when none does).
//!

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::response::IntoResponse;
use axum::Json;
use serde::Serialize;
use serde_json::json;

use crate::compliance::{rules_for, Compliance};
use crate::config::VersionRule;
use crate::http::error::ApiError;
use crate::http::queries::{check_parameters, terminal_or_not_found};
use crate::http::AppState;
use posmon_diagnosis::rules::outdated::KNOWN_COMPONENTS;

/// The most models the compliance table lists; the rest are summed under `other`.
const MODELS_MAX: usize = 1000;

#[derive(Debug, Default, Clone, Copy, Serialize)]
struct Tally {
    terminals: u64,
    /// Terminals no rule applies to (no verdict).
    no_rule: u64,
    behind: u64,
    outdated: u64,
}

pub async fn compliance(
    State(state): State<Arc<AppState>>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<impl IntoResponse, ApiError> {
    check_parameters(&query, &[])?;
    let state = Arc::clone(&state);
    // A pass over every terminal: off the async workers.
    tokio::task::spawn_blocking(move || {
        let policy = state.version_policy();
        let mut tallies: BTreeMap<(String, &'static str), Tally> = BTreeMap::new();
        let mut models: HashSet<String> = HashSet::new();
        state.fleet.for_each_terminal(|terminal| {
            let mut model = terminal.labels.model.as_deref().unwrap_or("unknown");
            if !models.contains(model) {
                if models.len() < MODELS_MAX {
                    models.insert(model.to_string());
                } else {
                    model = "other";
                }
            }
            for (component, _) in &terminal.versions {
                let Some(component) = KNOWN_COMPONENTS.iter().find(|c| **c == &**component) else {
                    continue;
                };
                let tally = tallies.entry((model.to_string(), component)).or_default();
                tally.terminals += 1;
                match Compliance::against(terminal, component, &policy) {
                    Compliance::NoRule => tally.no_rule += 1,
                    Compliance::Current => {}
                    Compliance::Behind => tally.behind += 1,
                    Compliance::Outdated => tally.outdated += 1,
                }
            }
        });
        let rows: Vec<serde_json::Value> = tallies
            .into_iter()
            .map(|((model, component), tally)| {
                json!({
                    "model": model,
                    "component": component,
                    "terminals": tally.terminals,
                    "no_rule": tally.no_rule,
                    "behind": tally.behind,
                    "outdated": tally.outdated,
                })
            })
            .collect();
        Json(json!({
            "rows": rows,
            "policy": *policy,
        }))
    })
    .await
    .map_err(|error| ApiError::internal("counting versions", error))
}

pub async fn terminal_versions(
    State(state): State<Arc<AppState>>,
    Path(terminal_id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    let terminal = terminal_or_not_found(&state, &terminal_id)?;
    let policy = state.version_policy();
    let model = terminal.labels.model.as_deref();
    let components: Vec<serde_json::Value> = terminal
        .versions
        .iter()
        .map(|(component, version)| {
            let rules: Vec<&VersionRule> = rules_for(&policy, model, component).collect();
            json!({
                "component": &**component,
                "version": &**version,
                "compliance": Compliance::against(&terminal, component, &policy),
                "rules": rules,
            })
        })
        .collect();
    Ok(Json(json!({
        "terminal_id": &*terminal.id,
        "components": components,
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(component: &str, model: Option<&str>) -> VersionRule {
        VersionRule {
            component: component.into(),
            model: model.map(str::to_string),
            minimum: "1".into(),
            latest: None,
            latest_released_on: None,
            update_within_days: 0,
        }
    }

    fn check(model: Option<&str>, component: &str, expected: &[usize]) {
        let policy = [
            rule("pos_app", None),
            rule("pos_app", Some("PAX-A920")),
            rule("firmware", Some("Sunmi-P2")),
        ];
        let found: Vec<usize> = rules_for(&policy, model, component)
            .filter_map(|found| policy.iter().position(|rule| std::ptr::eq(rule, found)))
            .collect();
        assert_eq!(found, expected, "{model:?} {component}");
    }

    #[test]
    fn rules_apply_to_their_model_or_to_all() {
        check(Some("PAX-A920"), "pos_app", &[0, 1]);
        check(Some("Sunmi-P2"), "pos_app", &[0]);
        check(None, "pos_app", &[0]);
        check(Some("Sunmi-P2"), "firmware", &[2]);
        check(Some("PAX-A920"), "firmware", &[]);
    }
}
