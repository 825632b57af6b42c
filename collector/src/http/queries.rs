//! Read-only endpoints: terminals, findings, metrics, health.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::IntoResponse;
use axum::Json;
use posmon_protocol::{Labels, Report};
use serde::Serialize;
use time::OffsetDateTime;

use super::error::{ApiError, Reason};
use super::AppState;
use crate::findings::Finding;
use crate::fleet::{Fleet, Status, Terminal};

/// The most terminals one page lists.
const PAGE_MAX: usize = 10_000;

#[derive(Serialize)]
pub struct TerminalSummary<'a> {
    terminal_id: &'a str,
    status: Status,
    labels: &'a Labels,
    agent_version: &'a str,
    sequence: u64,
    open_findings: usize,
    #[serde(with = "time::serde::rfc3339")]
    observed_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    first_seen: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    last_seen: OffsetDateTime,
}

impl<'a> From<&'a Terminal> for TerminalSummary<'a> {
    fn from(terminal: &'a Terminal) -> Self {
        TerminalSummary {
            terminal_id: &terminal.id,
            status: terminal.status(),
            labels: terminal.labels(),
            agent_version: &terminal.last_report.agent_version,
            sequence: terminal.highest_sequence,
            open_findings: terminal.open_findings.len(),
            observed_at: terminal.last_report.observed_at,
            first_seen: terminal.first_seen,
            last_seen: terminal.last_seen,
        }
    }
}

fn lock(state: &AppState) -> Result<std::sync::MutexGuard<'_, Fleet>, ApiError> {
    state
        .fleet
        .lock()
        .map_err(|error| ApiError::internal("locking the fleet state", error))
}

/// Refuses parameters the endpoint does not know, so a typo is not silently ignored.
fn check_parameters(query: &HashMap<String, String>, known: &[&str]) -> Result<(), ApiError> {
    match query.keys().find(|key| !known.contains(&key.as_str())) {
        Some(unknown) => Err(ApiError::field(
            Reason::BadQuery,
            unknown.clone(),
            format!("unknown query parameter (known: {})", known.join(", ")),
        )),
        None => Ok(()),
    }
}

fn number(
    query: &HashMap<String, String>,
    name: &str,
    default: usize,
    max: usize,
) -> Result<usize, ApiError> {
    match query.get(name) {
        None => Ok(default),
        Some(text) => match text.parse::<usize>() {
            Ok(value) if value <= max => Ok(value),
            _ => Err(ApiError::field(
                Reason::BadQuery,
                name,
                format!("must be a whole number from 0 to {max}"),
            )),
        },
    }
}

pub async fn list_terminals(
    State(state): State<Arc<AppState>>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<impl IntoResponse, ApiError> {
    check_parameters(&query, &["limit", "offset"])?;
    let limit = number(&query, "limit", 1000, PAGE_MAX)?;
    let offset = number(&query, "offset", 0, usize::MAX)?;
    let fleet = lock(&state)?;
    let terminals: Vec<TerminalSummary<'_>> = fleet
        .terminals()
        .skip(offset)
        .take(limit)
        .map(TerminalSummary::from)
        .collect();
    let body = serde_json::json!({
        "total": fleet.len(),
        "offset": offset,
        "terminals": terminals,
    });
    Ok(Json(body))
}

#[derive(Serialize)]
struct TerminalDetail<'a> {
    #[serde(flatten)]
    summary: TerminalSummary<'a>,
    open_findings: &'a [Finding],
    findings_history: Vec<&'a Finding>,
    last_report: &'a Report,
}

pub async fn get_terminal(
    State(state): State<Arc<AppState>>,
    Path(terminal_id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    let fleet = lock(&state)?;
    let terminal = fleet.terminal(&terminal_id).ok_or_else(|| {
        ApiError::field(
            Reason::NotFound,
            "terminal_id",
            format!("no terminal {terminal_id:?} has reported"),
        )
    })?;
    let detail = TerminalDetail {
        summary: TerminalSummary::from(terminal),
        open_findings: &terminal.open_findings,
        findings_history: fleet.history_of(&terminal.id).take(1000).collect(),
        last_report: &terminal.last_report,
    };
    // Serialize under the lock: the detail borrows the fleet state.
    let body = serde_json::to_value(&detail)
        .map_err(|error| ApiError::internal("encoding a terminal", error))?;
    Ok(Json(body))
}

const FINDING_FILTERS: &[&str] = &[
    "code", "category", "severity", "party", "terminal", "region", "model", "carrier",
];

pub async fn list_findings(
    State(state): State<Arc<AppState>>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<impl IntoResponse, ApiError> {
    check_parameters(&query, FINDING_FILTERS)?;
    let wanted = |name: &str, value: &str| query.get(name).is_none_or(|wanted| wanted == value);
    let fleet = lock(&state)?;
    let mut findings = Vec::new();
    for terminal in fleet.terminals() {
        let labels = terminal.labels();
        let label = |value: &Option<String>| value.clone().unwrap_or_default();
        if !(wanted("terminal", &terminal.id)
            && wanted("region", &label(&labels.region))
            && wanted("model", &label(&labels.model))
            && wanted("carrier", &label(&labels.carrier)))
        {
            continue;
        }
        findings.extend(terminal.open_findings.iter().filter(|finding| {
            wanted("code", finding.code)
                && wanted("category", finding.category.as_str())
                && wanted("severity", finding.severity.as_str())
                && wanted("party", finding.party.as_str())
        }));
    }
    let body = serde_json::json!({ "findings": findings });
    Ok(Json(body))
}

pub async fn metrics(State(state): State<Arc<AppState>>) -> Result<impl IntoResponse, ApiError> {
    let fleet = lock(&state)?;
    let text = state
        .metrics
        .render(&fleet)
        .map_err(|error| ApiError::internal("encoding metrics", error))?;
    Ok((
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    ))
}

pub async fn healthz() -> impl IntoResponse {
    Json(serde_json::json!({ "status": "ok" }))
}

pub async fn not_found() -> ApiError {
    ApiError::new(Reason::NotFound, "no such endpoint")
}
