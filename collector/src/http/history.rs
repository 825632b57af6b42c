//! The history's read endpoints (`history/`): the fleet's and a terminal's charts over a
//! range, and availability per group over a period, as JSON or CSV. Reads, guarded like every
//! read endpoint by the viewer check in front of the router.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use super::error::{ApiError, Reason};
use super::queries::check_parameters;
use super::AppState;
use crate::history::availability::{self, GroupAvailability};
use crate::history::Range;

/// The most groups an availability report lists (sorted by name); the rest are counted in
/// `truncated_groups`.
const GROUPS_MAX: usize = 10_000;
/// The period an availability report covers when none is given: the last 30 days.
const DEFAULT_PERIOD_SECONDS: i64 = 30 * 86_400;

pub fn router() -> Router<Arc<AppState>> {
    Router::new()
        .route("/api/v1/history/fleet", get(fleet))
        .route("/api/v1/history/terminals/{terminal_id}", get(terminal))
        .route("/api/v1/availability", get(availability_report))
}

fn range(query: &HashMap<String, String>) -> Result<Range, ApiError> {
    match query.get("range") {
        None => Ok(Range::Day),
        Some(text) => Range::parse(text).ok_or_else(|| {
            ApiError::field(Reason::BadQuery, "range", "must be 24h, 7d, 30d or 90d")
        }),
    }
}

fn now() -> i64 {
    OffsetDateTime::now_utc().unix_timestamp()
}

/// `GET /api/v1/history/fleet?range=24h|7d|30d|90d`: terminals by readiness, mean per step,
/// `null` where the collector took no point.
async fn fleet(
    State(state): State<Arc<AppState>>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    check_parameters(&query, &["range"])?;
    let range = range(&query)?;
    let interval = state.config.web.trend_interval_seconds;
    let history = Arc::clone(&state.history);
    let series = tokio::task::spawn_blocking(move || history.fleet_series(range, now(), interval))
        .await
        .map_err(|error| ApiError::internal("reading the fleet history", error))?
        .map_err(|error| ApiError::internal("reading the fleet history", error))?;
    Ok(Json(json!({ "range": range, "series": series })).into_response())
}

/// `GET /api/v1/history/terminals/{id}?range=...`: latency and loss per step (`null` where no
/// report came) and the readiness intervals. 404 for a terminal neither the fleet nor the
/// history knows.
async fn terminal(
    State(state): State<Arc<AppState>>,
    Path(terminal_id): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    check_parameters(&query, &["range"])?;
    let range = range(&query)?;
    let history = Arc::clone(&state.history);
    let id = terminal_id.clone();
    let series = tokio::task::spawn_blocking(move || history.terminal_series(&id, range, now()))
        .await
        .map_err(|error| ApiError::internal("reading a terminal's history", error))?
        .map_err(|error| ApiError::internal("reading a terminal's history", error))?;
    if series.is_none()
        && state
            .fleet
            .readiness_of(&terminal_id, &state.config.readiness)
            .is_none()
    {
        return Err(ApiError::field(
            Reason::NotFound,
            "terminal_id",
            "no such terminal",
        ));
    }
    Ok(Json(json!({
        "terminal_id": terminal_id,
        "range": range,
        "series": series,
    }))
    .into_response())
}

/// The label a report groups by.
#[derive(Debug, Clone, Copy)]
enum By {
    Region,
    Carrier,
    Model,
    Merchant,
}

impl By {
    fn parse(text: &str) -> Option<By> {
        match text {
            "region" => Some(By::Region),
            "carrier" => Some(By::Carrier),
            "model" => Some(By::Model),
            "merchant" => Some(By::Merchant),
            _ => None,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            By::Region => "region",
            By::Carrier => "carrier",
            By::Model => "model",
            By::Merchant => "merchant",
        }
    }
}

fn time_parameter(query: &HashMap<String, String>, name: &str) -> Result<Option<i64>, ApiError> {
    query
        .get(name)
        .map(|text| {
            OffsetDateTime::parse(text, &Rfc3339)
                .map(OffsetDateTime::unix_timestamp)
                .map_err(|_| {
                    ApiError::field(
                        Reason::BadQuery,
                        name,
                        "must be an RFC 3339 time, e.g. 2026-11-01T00:00:00Z",
                    )
                })
        })
        .transpose()
}

fn rfc3339(at: i64) -> String {
    OffsetDateTime::from_unix_timestamp(at)
        .ok()
        .and_then(|time| time.format(&Rfc3339).ok())
        .unwrap_or_default()
}

/// `GET /api/v1/availability?by=region|carrier|model|merchant&from=&to=&format=json|csv`:
/// per group the share of known time its terminals could take payments (`can_pay` or
/// `at_risk`), the terminals, and the seconds by readiness, `unknown` (silent, collector
/// down, not yet reporting) apart. The period is at most `history.retention_days` long;
/// groups are terminals' current labels.
async fn availability_report(
    State(state): State<Arc<AppState>>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    check_parameters(&query, &["by", "from", "to", "format"])?;
    let by = match query.get("by") {
        None => By::Region,
        Some(text) => By::parse(text).ok_or_else(|| {
            ApiError::field(
                Reason::BadQuery,
                "by",
                "must be region, carrier, model or merchant",
            )
        })?,
    };
    let csv = match query.get("format").map(String::as_str) {
        Some("csv") => true,
        Some("json") => false,
        Some(_) => {
            return Err(ApiError::field(
                Reason::BadQuery,
                "format",
                "must be json or csv",
            ))
        }
        None => headers
            .get(header::ACCEPT)
            .and_then(|value| value.to_str().ok())
            .is_some_and(|accept| accept.contains("text/csv")),
    };
    let now = now();
    let to = time_parameter(&query, "to")?.unwrap_or(now);
    let retention = i64::from(state.config.history.retention_days).saturating_mul(86_400);
    let from = time_parameter(&query, "from")?
        .unwrap_or_else(|| to.saturating_sub(DEFAULT_PERIOD_SECONDS.min(retention)));
    if to <= from {
        return Err(ApiError::field(
            Reason::BadQuery,
            "to",
            "must be after from",
        ));
    }
    if to.saturating_sub(from) > retention {
        return Err(ApiError::field(
            Reason::BadQuery,
            "from",
            format!(
                "the period must be at most history.retention_days ({} days) long",
                state.config.history.retention_days
            ),
        ));
    }
    // Each terminal's group: its current label.
    let mut groups: HashMap<String, String> = HashMap::with_capacity(state.fleet.len());
    state.fleet.for_each_terminal(|terminal| {
        let labels = &terminal.labels;
        let label = match by {
            By::Region => &labels.region,
            By::Carrier => &labels.carrier,
            By::Model => &labels.model,
            By::Merchant => &labels.merchant,
        };
        groups.insert(
            terminal.id.to_string(),
            label.as_deref().unwrap_or_default().to_string(),
        );
    });
    let history = Arc::clone(&state.history);
    let seconds = tokio::task::spawn_blocking(move || history.availability(from, to, now))
        .await
        .map_err(|error| ApiError::internal("computing availability", error))?
        .map_err(|error| ApiError::internal("computing availability", error))?;
    let mut lines: Vec<GroupAvailability> = availability::by_group(
        seconds
            .into_iter()
            .map(|(id, seconds)| (groups.remove(&id).unwrap_or_default(), seconds)),
    );
    let truncated = lines.len().saturating_sub(GROUPS_MAX);
    lines.truncate(GROUPS_MAX);
    let (from_text, to_text) = (rfc3339(from), rfc3339(to));
    if csv {
        let body = availability::to_csv(by.as_str(), &from_text, &to_text, &lines);
        let file = format!(
            "attachment; filename=\"availability-{}-{}-{}.csv\"",
            by.as_str(),
            &from_text.get(..10).unwrap_or(""),
            &to_text.get(..10).unwrap_or("")
        );
        let mut response = (
            [
                (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_string()),
                (header::CONTENT_DISPOSITION, file),
            ],
            body,
        )
            .into_response();
        if truncated > 0 {
            if let Ok(value) = truncated.to_string().parse() {
                response
                    .headers_mut()
                    .insert("x-posmon-truncated-groups", value);
            }
        }
        return Ok(response);
    }
    Ok(Json(json!({
        "by": by.as_str(),
        "from": from_text,
        "to": to_text,
        "able": ["can_pay", "at_risk"],
        "groups": lines,
        "truncated_groups": truncated,
    }))
    .into_response())
}
