//! The read endpoints: terminals, one terminal, findings, fleet counts, metrics, health.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::IntoResponse;
use axum::Json;
use serde_json::json;
use time::OffsetDateTime;

use super::error::{ApiError, Reason};
use super::views::{FindingView, TerminalDetail, TerminalSummary};
use super::AppState;
use crate::data_usage::{FleetUsage, MonthAt, Standing};
use crate::fleet::{Terminal, TerminalQuery};
use posmon_diagnosis::findings::Finding;
use posmon_diagnosis::readiness::Readiness;

/// The most terminals or findings one page lists.
const PAGE_MAX: usize = 10_000;
/// The most closed findings a terminal's detail lists.
const HISTORY_MAX: usize = 1000;
/// The most distinct values one count of `/api/v1/fleet` lists; the rest are summed as
/// `other`.
const COUNT_KEYS_MAX: usize = 1000;

/// Refuses parameters the endpoint does not know, so a typo is not silently ignored.
pub(crate) fn check_parameters(
    query: &HashMap<String, String>,
    known: &[&str],
) -> Result<(), ApiError> {
    match query.keys().find(|key| !known.contains(&key.as_str())) {
        Some(unknown) => Err(ApiError::field(
            Reason::BadQuery,
            unknown.clone(),
            format!("unknown query parameter (known: {})", known.join(", ")),
        )),
        None => Ok(()),
    }
}

pub(crate) fn number(
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

/// The longest free text a terminal search takes.
const SEARCH_MAX_CHARS: usize = 64;

/// The terminal search's filters from the query string: `q` (free text over the id and every
/// label value), `region`, `carrier`, `model`, `merchant`, `label=<key>:<value>` (an extra
/// label, such as `serial:SN-1234`) and `readiness`.
fn terminal_query(query: &HashMap<String, String>) -> Result<TerminalQuery, ApiError> {
    let too_long = |name: &str| {
        ApiError::field(
            Reason::BadQuery,
            name,
            format!("too long (at most {SEARCH_MAX_CHARS} characters)"),
        )
    };
    let mut search = TerminalQuery::default();
    for (name, slot) in [
        ("region", &mut search.region),
        ("carrier", &mut search.carrier),
        ("model", &mut search.model),
        ("merchant", &mut search.merchant),
    ] {
        if let Some(value) = query.get(name).filter(|value| !value.is_empty()) {
            if value.chars().count() > SEARCH_MAX_CHARS {
                return Err(too_long(name));
            }
            *slot = Some(value.clone());
        }
    }
    if let Some(label) = query.get("label").filter(|value| !value.is_empty()) {
        if label.chars().count() > 2 * SEARCH_MAX_CHARS {
            return Err(too_long("label"));
        }
        let Some((key, value)) = label.split_once(':') else {
            return Err(ApiError::field(
                Reason::BadQuery,
                "label",
                "must be <key>:<value>",
            ));
        };
        search.label = Some((key.to_string(), value.to_string()));
    }
    search.readiness = readiness_filter(query)?;
    match query.get("q") {
        Some(text) if text.chars().count() > SEARCH_MAX_CHARS => Err(too_long("q")),
        Some(text) => Ok(search.with_text(text)),
        None => Ok(search),
    }
}

/// Terminals, the whole fleet (not only those with problems): ordered by id, found by
/// [`terminal_query`]'s filters, paged by `offset` or by `after` (the last id of the previous
/// page; the answer's `next`). With `sort=data_usage`, by their projected month in percent of
/// their data budget (highest first; those without a budget or usage last); `budget=near`
/// keeps the terminals near their data budget ([`crate::data_usage::NEAR_BUDGET_PERCENT`], or
/// stretching their intervals).
pub async fn list_terminals(
    State(state): State<Arc<AppState>>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<impl IntoResponse, ApiError> {
    check_parameters(
        &query,
        &[
            "limit",
            "offset",
            "after",
            "readiness",
            "budget",
            "sort",
            "q",
            "region",
            "carrier",
            "model",
            "merchant",
            "label",
        ],
    )?;
    let limit = number(&query, "limit", 1000, PAGE_MAX)?;
    let offset = number(&query, "offset", 0, usize::MAX)?;
    let search = terminal_query(&query)?;
    let after = query
        .get("after")
        .filter(|after| !after.is_empty())
        .cloned();
    let near_only = match query.get("budget").map(String::as_str) {
        None | Some("") => false,
        Some("near") => true,
        Some(_) => {
            return Err(ApiError::field(Reason::BadQuery, "budget", "must be near"));
        }
    };
    let by_usage = match query.get("sort").map(String::as_str) {
        None | Some("") | Some("terminal_id") => false,
        Some("data_usage") => true,
        Some(_) => {
            return Err(ApiError::field(
                Reason::BadQuery,
                "sort",
                "must be terminal_id or data_usage",
            ));
        }
    };
    // A pass over the fleet when filtered: off the async workers.
    tokio::task::spawn_blocking(move || {
        let now = OffsetDateTime::now_utc();
        let roles = &state.config.readiness;
        let (total, ids) = if near_only || by_usage {
            by_data_usage(&state, &search, near_only, by_usage, now)
        } else {
            let page = state
                .fleet
                .search(&search, roles, after.as_deref(), offset, limit);
            (page.total, page.ids)
        };
        let skip = if near_only || by_usage { offset } else { 0 };
        let page: Vec<Terminal> = ids
            .iter()
            .skip(skip)
            .take(limit)
            .filter_map(|id| state.fleet.terminal(id))
            .collect();
        let problems = state.workflow.states();
        let terminals: Vec<serde_json::Value> = page
            .iter()
            .map(|terminal| {
                let mut view = serde_json::to_value(TerminalSummary::new(terminal, roles, now))
                    .unwrap_or_default();
                view["versions"] = json!(terminal
                    .versions
                    .iter()
                    .map(|(component, version)| (&**component, &**version))
                    .collect::<BTreeMap<_, _>>());
                view["acknowledged_findings"] = json!(terminal
                    .visible_findings()
                    .filter(|finding| problems
                        .get(&finding.id)
                        .is_some_and(|problem| problem.acknowledged_by.is_some()))
                    .count());
                view
            })
            .collect();
        let next = (page.len() == limit && !(near_only || by_usage))
            .then(|| page.last().map(|terminal| terminal.id.to_string()))
            .flatten();
        Json(json!({
            "total": total,
            "offset": offset,
            "terminals": terminals,
            "next": next,
        }))
    })
    .await
    .map_err(|error| ApiError::internal("listing terminals", error))
}

/// The terminals `search` keeps (near their budget only, when asked), by id or (`by_usage`)
/// by their projected month in percent of their data budget, highest first.
fn by_data_usage(
    state: &AppState,
    search: &TerminalQuery,
    near_only: bool,
    by_usage: bool,
    now: OffsetDateTime,
) -> (usize, Vec<Arc<str>>) {
    let month = MonthAt::new(now);
    let roles = &state.config.readiness;
    // (projected percent of the budget, id): the sort key.
    let mut ids: Vec<(Option<u64>, Arc<str>)> = Vec::with_capacity(state.fleet.len());
    state.fleet.for_each_terminal(|terminal| {
        let standing = terminal
            .data_usage
            .as_ref()
            .map(|usage| Standing::at(usage, &month));
        if !search.matches(terminal, roles)
            || (near_only && !standing.is_some_and(|standing| standing.near_budget))
        {
            return;
        }
        let share = standing
            .filter(|standing| standing.current)
            .and_then(|standing| standing.projected_percent);
        ids.push((share, Arc::clone(&terminal.id)));
    });
    if by_usage {
        ids.sort_unstable_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
    } else {
        ids.sort_unstable_by(|a, b| a.1.cmp(&b.1));
    }
    (ids.len(), ids.into_iter().map(|(_, id)| id).collect())
}

/// The `readiness` parameter: one of `cannot_pay`, `at_risk`, `can_pay`, `unknown`.
pub(crate) fn readiness_filter(
    query: &HashMap<String, String>,
) -> Result<Option<Readiness>, ApiError> {
    match query.get("readiness").map(String::as_str) {
        None | Some("") => Ok(None),
        Some(text) => Readiness::parse(text).map(Some).ok_or_else(|| {
            ApiError::field(
                Reason::BadQuery,
                "readiness",
                "must be cannot_pay, at_risk, can_pay or unknown",
            )
        }),
    }
}

/// A copy of one terminal's state, or the 404 that names it.
pub(crate) fn terminal_or_not_found(
    state: &AppState,
    terminal_id: &str,
) -> Result<Terminal, ApiError> {
    state.fleet.terminal(terminal_id).ok_or_else(|| {
        ApiError::field(
            Reason::NotFound,
            "terminal_id",
            format!("no terminal {terminal_id:?} has reported"),
        )
    })
}

pub async fn get_terminal(
    State(state): State<Arc<AppState>>,
    Path(terminal_id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    let terminal = terminal_or_not_found(&state, &terminal_id)?;
    let history = state.fleet.history_of(&terminal.id, HISTORY_MAX);
    let mut body = serde_json::to_value(TerminalDetail::new(
        &terminal,
        &history,
        &state.config.readiness,
        &state.workflow.states(),
        OffsetDateTime::now_utc(),
    ))
    .map_err(|error| ApiError::internal("encoding a terminal", error))?;
    // Fleet control, when known: the settings it runs, refused and should run; the probe request.
    let (config, probe) = super::control::terminal_members(&state, &terminal.id);
    if let Some(object) = body.as_object_mut() {
        if let Some(config) = config {
            object.insert("config".into(), config);
        }
        if let Some(probe) = probe {
            object.insert("probe".into(), probe);
        }
    }
    Ok(Json(body))
}

const FINDING_PARAMETERS: &[&str] = &[
    "code",
    "category",
    "severity",
    "party",
    "terminal",
    "region",
    "model",
    "carrier",
    "suppressed",
    "limit",
    "offset",
];

/// Open findings, fleet-wide ones included, ordered by id. Findings explained by a fleet-wide
/// one are left out unless `suppressed=include` (or `only`).
pub async fn list_findings(
    State(state): State<Arc<AppState>>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<impl IntoResponse, ApiError> {
    check_parameters(&query, FINDING_PARAMETERS)?;
    let limit = number(&query, "limit", 1000, PAGE_MAX)?;
    let offset = number(&query, "offset", 0, usize::MAX)?;
    let suppressed = query.get("suppressed").map_or("exclude", String::as_str);
    if !["exclude", "include", "only"].contains(&suppressed) {
        return Err(ApiError::field(
            Reason::BadQuery,
            "suppressed",
            "must be exclude, include or only",
        ));
    }
    let wanted = |name: &str, value: Option<&str>| {
        query
            .get(name)
            .is_none_or(|wanted| Some(wanted.as_str()) == value)
    };
    let finding_wanted = |finding: &Finding| {
        wanted("code", Some(finding.kind.code))
            && wanted("category", Some(finding.kind.category.as_str()))
            && wanted("severity", Some(finding.severity.as_str()))
            && wanted("party", Some(finding.kind.party.as_str()))
            && match suppressed {
                "exclude" => finding.suppressed_by.is_none(),
                "only" => finding.suppressed_by.is_some(),
                _ => true,
            }
    };
    let mut findings: Vec<Finding> = Vec::new();
    state.fleet.for_each_terminal(|terminal| {
        let labels = &terminal.labels;
        if wanted("terminal", Some(&terminal.id))
            && wanted("region", labels.region.as_deref())
            && wanted("model", labels.model.as_deref())
            && wanted("carrier", labels.carrier.as_deref())
        {
            findings.extend(
                terminal
                    .findings
                    .findings()
                    .filter(|f| finding_wanted(f))
                    .cloned(),
            );
        }
    });
    // Fleet-wide findings belong to no terminal, region or model.
    let terminal_filters = ["terminal", "region", "model", "carrier"];
    if terminal_filters
        .iter()
        .all(|name| !query.contains_key(*name))
    {
        findings.extend(
            state
                .fleet
                .fleet_wide_findings()
                .into_iter()
                .filter(|finding| finding_wanted(finding)),
        );
    }
    findings.sort_unstable_by_key(|finding| finding.id);
    let problems = state.workflow.states();
    let page: Vec<FindingView<'_>> = findings
        .iter()
        .skip(offset)
        .take(limit)
        .map(|finding| FindingView::from(finding).with_workflow(&problems))
        .collect();
    Ok(Json(json!({
        "total": findings.len(),
        "offset": offset,
        "findings": page,
    })))
}

/// Counts by key, at most [`COUNT_KEYS_MAX`] keys; beyond that they add up under `other`.
#[derive(Default)]
pub(crate) struct Counts(BTreeMap<String, u64>);

impl Counts {
    pub(crate) fn into_map(self) -> BTreeMap<String, u64> {
        self.0
    }

    pub(crate) fn add(&mut self, key: &str) {
        if let Some(count) = self.0.get_mut(key) {
            *count += 1;
        } else if self.0.len() < COUNT_KEYS_MAX {
            self.0.insert(key.to_string(), 1);
        } else {
            *self.0.entry("other".to_string()).or_default() += 1;
        }
    }
}

/// Counts over the fleet: terminals by readiness, region, model and software version; open
/// (not suppressed) findings by category, code and party; the data usage this month.
pub async fn fleet(State(state): State<Arc<AppState>>) -> Result<impl IntoResponse, ApiError> {
    let (mut readiness, mut region, mut model) =
        (Counts::default(), Counts::default(), Counts::default());
    let (mut category, mut code, mut party) =
        (Counts::default(), Counts::default(), Counts::default());
    let mut versions: BTreeMap<String, Counts> = BTreeMap::new();
    let now = OffsetDateTime::now_utc();
    let mut data_usage = FleetUsage::new(now);
    let mut count_finding = |finding: &Finding| {
        category.add(finding.kind.category.as_str());
        code.add(finding.kind.code);
        party.add(finding.kind.party.as_str());
    };
    state.fleet.for_each_terminal(|terminal| {
        readiness.add(terminal.readiness(&state.config.readiness).as_str());
        region.add(terminal.labels.region.as_deref().unwrap_or("unknown"));
        model.add(terminal.labels.model.as_deref().unwrap_or("unknown"));
        data_usage.add(terminal.data_usage.as_ref());
        for (component, version) in &terminal.versions {
            if versions.len() < COUNT_KEYS_MAX || versions.contains_key(&**component) {
                versions
                    .entry(component.to_string())
                    .or_default()
                    .add(version);
            }
        }
        terminal.visible_findings().for_each(&mut count_finding);
    });
    let fleet_wide = state.fleet.fleet_wide_findings();
    fleet_wide.iter().for_each(&mut count_finding);
    Ok(Json(json!({
        "terminals": state.fleet.len(),
        "readiness": readiness.0,
        "region": region.0,
        "model": model.0,
        "versions": versions.into_iter().map(|(component, counts)| (component, counts.0)).collect::<BTreeMap<_, _>>(),
        "findings": {
            "category": category.0,
            "code": code.0,
            "party": party.0,
        },
        "data_usage": data_usage,
    })))
}

pub async fn metrics(State(state): State<Arc<AppState>>) -> Result<impl IntoResponse, ApiError> {
    let rendered = {
        let state = Arc::clone(&state);
        // A pass over every terminal: off the async workers.
        tokio::task::spawn_blocking(move || {
            state
                .metrics
                .set_config_terminals(&state.control.tally(state.fleet.len()));
            state.metrics.render(&state.fleet, &state.config.readiness)
        })
        .await
        .map_err(|error| ApiError::internal("encoding metrics", error))?
    };
    let text = rendered.map_err(|error| ApiError::internal("encoding metrics", error))?;
    Ok((
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    ))
}

pub async fn healthz() -> impl IntoResponse {
    Json(json!({ "status": "ok" }))
}

pub async fn not_found() -> ApiError {
    ApiError::new(Reason::NotFound, "no such endpoint")
}
