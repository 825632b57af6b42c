//! The overview: terminals by readiness, open findings by category, code, party and severity,
//! the open upstream outages, the fleet's data usage this month (terminals near their budget), the values to filter the problem list by, and the trend.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::response::IntoResponse;
use axum::Json;
use serde_json::json;
use time::OffsetDateTime;

use crate::data_usage::FleetUsage;
use crate::http::error::ApiError;
use crate::http::queries::{check_parameters, number, Counts};
use crate::http::views::FindingView;
use crate::http::AppState;
use posmon_diagnosis::findings::Finding;
use posmon_diagnosis::Category;

/// The longest trend one request returns: a week.
const TREND_HOURS_MAX: usize = 24 * 7;

pub async fn overview(
    State(state): State<Arc<AppState>>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<impl IntoResponse, ApiError> {
    check_parameters(&query, &[])?;
    let state = Arc::clone(&state);
    // A pass over every terminal: off the async workers.
    tokio::task::spawn_blocking(move || Json(overview_of(&state)))
        .await
        .map_err(|error| ApiError::internal("counting the fleet", error))
}

fn overview_of(state: &AppState) -> serde_json::Value {
    let fleet = &state.fleet;
    let mut readiness = Counts::default();
    let (mut category, mut code, mut party, mut severity) = (
        Counts::default(),
        Counts::default(),
        Counts::default(),
        Counts::default(),
    );
    let (mut region, mut model, mut carrier) =
        (Counts::default(), Counts::default(), Counts::default());
    let now = OffsetDateTime::now_utc();
    let mut data_usage = FleetUsage::new(now);
    let mut count_finding = |finding: &Finding| {
        category.add(finding.kind.category.as_str());
        code.add(finding.kind.code);
        party.add(finding.kind.party.as_str());
        severity.add(finding.severity.as_str());
    };
    fleet.for_each_terminal(|terminal| {
        readiness.add(terminal.readiness(&state.config.readiness).as_str());
        let labels = &terminal.labels;
        region.add(labels.region.as_deref().unwrap_or("unknown"));
        model.add(labels.model.as_deref().unwrap_or("unknown"));
        carrier.add(labels.carrier.as_deref().unwrap_or("unknown"));
        data_usage.add(terminal.data_usage.as_ref());
        terminal.visible_findings().for_each(&mut count_finding);
    });
    let fleet_wide = fleet.fleet_wide_findings();
    fleet_wide.iter().for_each(&mut count_finding);
    let mut outages: Vec<&Finding> = fleet_wide
        .iter()
        .filter(|finding| finding.kind.category == Category::Upstream)
        .collect();
    outages.sort_by_key(|finding| std::cmp::Reverse(finding.explains));
    let problems = state.workflow.states();
    let outages: Vec<FindingView<'_>> = outages
        .into_iter()
        .map(|finding| FindingView::from(finding).with_workflow(&problems))
        .collect();
    json!({
        "generated_at": now.unix_timestamp(),
        "terminals": fleet.len(),
        "readiness": readiness.into_map(),
        "findings": {
            "category": category.into_map(),
            "code": code.into_map(),
            "party": party.into_map(),
            "severity": severity.into_map(),
        },
        "outages": outages,
        "data_usage": data_usage,
        "facets": {
            "region": region.into_map(),
            "model": model.into_map(),
            "carrier": carrier.into_map(),
        },
    })
}

/// The fleet trend over the last `hours` (default 24).
pub async fn trend(
    State(state): State<Arc<AppState>>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<impl IntoResponse, ApiError> {
    check_parameters(&query, &["hours"])?;
    let hours = number(&query, "hours", 24, TREND_HOURS_MAX)?;
    let span = i64::try_from(hours)
        .unwrap_or(i64::MAX)
        .saturating_mul(3600);
    let since = OffsetDateTime::now_utc()
        .unix_timestamp()
        .saturating_sub(span);
    Ok(Json(json!({
        "interval_seconds": state.config.web.trend_interval_seconds,
        "points": state.trend.since(since),
    })))
}
