//! Fleet control over HTTP (`crate::control` holds the logic):
//!
//! - the agents' endpoints, authenticated like reports (the terminal header and its token, then
//!   the terminal's share of control requests, counted apart from its reports):
//!   `GET /api/v1/agent/config` (its settings) and `GET /api/v1/agent/control` (the long-poll,
//!   routed outside the request timeout);
//! - the admin endpoints: `PUT`/`DELETE /api/v1/config/profiles/{name}`; the operator ones:
//!   `POST /api/v1/terminals/{id}/probe`, `POST /api/v1/probe` (each recorded with the actor's
//!   name);
//! - the read endpoints (viewer credentials): `GET /api/v1/config/profiles[/{name}]`,
//!   `/api/v1/config/history`, `/api/v1/config/versions`, `/api/v1/config/terminals/{id}`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use posmon_diagnosis::readiness::Readiness;
use posmon_protocol::control::{
    check_version, AgentSettings, Settings, AGENT_CONFIG_PATH, SETTINGS_MAX_BYTES,
};
use serde::{Deserialize, Serialize};
use serde_json::json;
use time::OffsetDateTime;

use super::admission::{Claim, InFlight};
use super::auth::{Actor, Role};
use super::error::{ApiError, Reason};
use super::queries::{check_parameters, number, terminal_or_not_found};
use super::reports::{
    bearer_token, check_content_type, enter_in, read_body, terminal_claim, verify, Refusal,
};
use super::AppState;
use crate::control::layers::Effective;
use crate::control::profile::{Invalid, Profile, ProfileRequest};
use crate::control::{ProbeRequest, WriteError};

/// History rows one answer lists at most (each may hold 64 KiB of settings), and by default.
const HISTORY_PAGE_MAX: usize = 200;
const HISTORY_PAGE_DEFAULT: usize = 100;

pub fn router() -> Router<Arc<AppState>> {
    Router::new()
        .route(AGENT_CONFIG_PATH, get(agent_config))
        .route("/api/v1/config/profiles", get(list_profiles))
        .route(
            "/api/v1/config/profiles/{name}",
            put(put_profile).get(get_profile).delete(delete_profile),
        )
        .route("/api/v1/config/history", get(history))
        .route("/api/v1/config/versions", get(versions))
        .route(
            "/api/v1/config/terminals/{terminal_id}",
            get(terminal_config),
        )
        .route(
            "/api/v1/terminals/{terminal_id}/probe",
            post(probe_terminal),
        )
        .route("/api/v1/probe", post(probe_many))
}

/// An agent's control request let in: its terminal (token checked) and its place in the
/// terminal's share.
struct Agent {
    terminal_id: String,
    _in_flight: InFlight,
}

/// Authenticates an agent's control request exactly like a report: the terminal header and
/// the bearer token of that terminal; then the terminal's share of control requests.
fn admit_agent(state: &Arc<AppState>, headers: &HeaderMap) -> Result<Agent, Refusal> {
    let Claim::Terminal(terminal_id) = terminal_claim(headers)? else {
        return Err(ApiError::field(
            Reason::InvalidField,
            posmon_protocol::TERMINAL_HEADER,
            "the agent's control endpoints need the terminal header",
        )
        .into());
    };
    let token = bearer_token(headers)?;
    verify(state, token, &terminal_id)?;
    let in_flight = enter_in(&state.control_fairness, state, &terminal_id)?;
    Ok(Agent {
        terminal_id,
        _in_flight: in_flight,
    })
}

/// The labels of `terminal_id`'s newest report, from the fleet.
fn fleet_labels(state: &AppState, terminal_id: &str) -> Option<posmon_protocol::Labels> {
    state.fleet.identity(terminal_id).map(|(labels, _)| labels)
}

/// `GET /api/v1/agent/config`: the terminal's layered settings and their version.
pub async fn agent_config(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    let agent = match admit_agent(&state, &headers) {
        Ok(agent) => agent,
        Err(refusal) => return refusal.respond(&state),
    };
    let terminal_id = agent.terminal_id.clone();
    let effective = state
        .control
        .effective(&terminal_id, || fleet_labels(&state, &terminal_id));
    Json(AgentSettings {
        version: effective.version.clone(),
        settings: effective.settings.clone(),
    })
    .into_response()
}

/// `GET /api/v1/agent/control?applied=&rejected=&wait=`: the long-poll.
pub async fn agent_poll(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let agent = match admit_agent(&state, &headers) {
        Ok(agent) => agent,
        Err(refusal) => return refusal.respond(&state),
    };
    let parsed = (|| -> Result<_, ApiError> {
        let version = |name: &str| -> Result<Option<String>, ApiError> {
            match query.get(name).filter(|value| !value.is_empty()) {
                None => Ok(None),
                Some(value) => check_version(value, name)
                    .map(|()| Some(value.clone()))
                    .map_err(|error| ApiError::field(Reason::BadQuery, error.field, error.problem)),
            }
        };
        let max = state.control.config().max_hold_seconds;
        let wait = match query.get("wait") {
            None => max,
            Some(text) => text.parse::<u64>().map_err(|_| {
                ApiError::field(
                    Reason::BadQuery,
                    "wait",
                    "must be a whole number of seconds",
                )
            })?,
        };
        Ok((version("applied")?, version("rejected")?, wait))
    })();
    let (applied, rejected, wait) = match parsed {
        Ok(parsed) => parsed,
        Err(error) => return error.into_response(),
    };
    // The held poll leaves the terminal's share of requests in flight to its fetches (one
    // poll per terminal is held at most, and polls count against the terminal's rate).
    let Agent { terminal_id, .. } = agent;
    state
        .control
        .prime(&terminal_id, || fleet_labels(&state, &terminal_id));
    let answer = state
        .control
        .poll(&terminal_id, applied, rejected, Duration::from_secs(wait))
        .await;
    Json(answer).into_response()
}

/// A profile as the API lists it: with its rank (the order of the layers).
#[derive(Serialize)]
struct ProfileView<'a> {
    #[serde(flatten)]
    profile: &'a Profile,
    rank: u8,
    dimension: crate::control::profile::Rank,
}

impl<'a> From<&'a Profile> for ProfileView<'a> {
    fn from(profile: &'a Profile) -> Self {
        ProfileView {
            profile,
            rank: profile.selector.rank().number(),
            dimension: profile.selector.rank(),
        }
    }
}

/// A refused profile as a 400 naming its key.
fn invalid(error: Invalid) -> ApiError {
    ApiError::field(Reason::InvalidField, error.field, error.problem)
}

fn check_profile_name(name: &str) -> Result<(), ApiError> {
    crate::control::profile::check_name(name).map_err(invalid)
}

/// A serde error, naming the key: an unknown key (a component's `command`, say) is named
/// itself, not only the object holding it.
fn decode_error(error: serde_path_to_error::Error<serde_json::Error>) -> ApiError {
    let path = error.path().to_string();
    let inner = error.into_inner();
    let message = inner.to_string();
    if inner.classify() != serde_json::error::Category::Data {
        return ApiError::new(Reason::MalformedJson, format!("malformed JSON: {message}"));
    }
    let unknown = message
        .strip_prefix("unknown field `")
        .and_then(|rest| rest.split('`').next());
    let field = match unknown {
        Some(key) if !path.ends_with(key) => {
            if path == "." || path.is_empty() {
                key.to_string()
            } else {
                format!("{path}.{key}")
            }
        }
        _ => path,
    };
    let message = match message.rfind(" at line ") {
        Some(position) => message[..position].to_string(),
        None => message,
    };
    ApiError::field(Reason::InvalidField, field, message)
}

/// `PUT /api/v1/config/profiles/{name}` `{selector, settings, rollout?, comment?}` → the profile.
pub async fn put_profile(
    State(state): State<Arc<AppState>>,
    actor: Actor,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    actor.require(Role::Admin)?;
    check_content_type(&headers)?;
    check_profile_name(&name)?;
    let bytes = read_body(&headers, body, SETTINGS_MAX_BYTES).await?;
    let mut deserializer = serde_json::Deserializer::from_slice(&bytes);
    let request: ProfileRequest =
        serde_path_to_error::deserialize(&mut deserializer).map_err(decode_error)?;
    deserializer.end().map_err(|error| {
        ApiError::new(Reason::MalformedJson, format!("malformed JSON: {error}"))
    })?;
    let writing = Arc::clone(&state);
    let profile = tokio::task::spawn_blocking(move || {
        writing
            .control
            .put_profile(&name, request, &actor.name, OffsetDateTime::now_utc())
    })
    .await
    .map_err(|error| ApiError::internal("storing a configuration profile", error))?
    .map_err(|error| match error {
        WriteError::Invalid(error) => invalid(error),
        WriteError::Store(error) => ApiError::internal("storing a configuration profile", error),
    })?;
    Ok(Json(ProfileView::from(profile.as_ref())).into_response())
}

/// `DELETE /api/v1/config/profiles/{name}` → the profile deleted, or 404.
pub async fn delete_profile(
    State(state): State<Arc<AppState>>,
    actor: Actor,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    actor.require(Role::Admin)?;
    check_profile_name(&name)?;
    let writing = Arc::clone(&state);
    let deleting = name.clone();
    let deleted = tokio::task::spawn_blocking(move || {
        writing
            .control
            .delete_profile(&deleting, &actor.name, OffsetDateTime::now_utc())
    })
    .await
    .map_err(|error| ApiError::internal("deleting a configuration profile", error))?
    .map_err(|error| ApiError::internal("deleting a configuration profile", error))?;
    match deleted {
        Some(profile) => Ok(Json(ProfileView::from(profile.as_ref())).into_response()),
        None => Err(no_profile(&name)),
    }
}

fn no_profile(name: &str) -> ApiError {
    ApiError::field(
        Reason::NotFound,
        "name",
        format!("no configuration profile {name:?}"),
    )
}

/// `GET /api/v1/config/profiles` → `{profiles: [...]}` in layer order.
pub async fn list_profiles(State(state): State<Arc<AppState>>) -> Response {
    let set = state.control.profiles();
    let profiles: Vec<ProfileView<'_>> = set
        .profiles
        .iter()
        .map(|profile| ProfileView::from(profile.as_ref()))
        .collect();
    Json(json!({ "generation": set.generation, "profiles": profiles })).into_response()
}

/// `GET /api/v1/config/profiles/{name}` → the profile, or 404.
pub async fn get_profile(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let set = state.control.profiles();
    let profile = set.get(&name).ok_or_else(|| no_profile(&name))?;
    Ok(Json(ProfileView::from(profile.as_ref())).into_response())
}

/// `GET /api/v1/config/history?profile=&limit=` → `{history: [...]}`, newest first.
pub async fn history(
    State(state): State<Arc<AppState>>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    check_parameters(&query, &["profile", "limit"])?;
    let limit = number(&query, "limit", HISTORY_PAGE_DEFAULT, HISTORY_PAGE_MAX)?;
    let profile = query
        .get("profile")
        .filter(|name| !name.is_empty())
        .cloned();
    if let Some(name) = &profile {
        crate::control::profile::check_name(name)
            .map_err(|error| ApiError::field(Reason::BadQuery, "profile", error.problem))?;
    }
    let reading = Arc::clone(&state);
    let entries =
        tokio::task::spawn_blocking(move || reading.control.history(profile.as_deref(), limit))
            .await
            .map_err(|error| ApiError::internal("reading the configuration history", error))?
            .map_err(|error| ApiError::internal("reading the configuration history", error))?;
    Ok(Json(json!({ "history": entries })).into_response())
}

/// The terminals per settings version, as `/api/v1/config/versions` answers.
#[derive(Serialize)]
struct VersionsView {
    versions: Vec<VersionView>,
    /// Terminals that report a state but neither run nor refused their effective version.
    pending: u64,
    /// Terminals that never reported a state (agents that do not read settings, or not since
    /// the collector started).
    unknown: u64,
    /// Terminals that run their effective version (or, with no profile, their local file).
    running: u64,
    /// Terminals that refused their effective version.
    rejected: u64,
}

#[derive(Serialize)]
struct VersionView {
    version: String,
    /// Terminals that run it.
    running: u64,
    /// Terminals that refused it.
    rejected: u64,
    /// Terminals whose effective version it is.
    assigned: u64,
}

/// `GET /api/v1/config/versions`.
pub async fn versions(State(state): State<Arc<AppState>>) -> Result<Response, ApiError> {
    let counting = Arc::clone(&state);
    // A pass over every terminal's control state: off the async workers.
    let tally = tokio::task::spawn_blocking(move || counting.control.tally(counting.fleet.len()))
        .await
        .map_err(|error| ApiError::internal("counting settings versions", error))?;
    let mut versions: Vec<VersionView> = tally
        .versions
        .into_iter()
        .map(|(version, count)| VersionView {
            version,
            running: count.running,
            rejected: count.rejected,
            assigned: count.assigned,
        })
        .collect();
    versions.sort_by(|a, b| {
        (b.running + b.assigned)
            .cmp(&(a.running + a.assigned))
            .then_with(|| a.version.cmp(&b.version))
    });
    Ok(Json(VersionsView {
        versions,
        pending: tally.pending,
        unknown: tally.unknown,
        running: tally.running,
        rejected: tally.rejected,
    })
    .into_response())
}

/// One layer of a terminal's settings.
#[derive(Serialize)]
struct LayerView<'a> {
    profile: &'a str,
    revision: u64,
    rank: u8,
    dimension: crate::control::profile::Rank,
    /// `current` (in the rollout) or `previous` (outside a partial rollout).
    applies: &'static str,
}

#[derive(Serialize)]
struct EffectiveView<'a> {
    version: &'a str,
    settings: &'a Settings,
}

impl<'a> From<&'a Effective> for EffectiveView<'a> {
    fn from(effective: &'a Effective) -> Self {
        EffectiveView {
            version: &effective.version,
            settings: &effective.settings,
        }
    }
}

/// `GET /api/v1/config/terminals/{id}`: effective settings, the reported state, the layers and
/// the probe request.
pub async fn terminal_config(
    State(state): State<Arc<AppState>>,
    Path(terminal_id): Path<String>,
) -> Result<Response, ApiError> {
    terminal_or_not_found(&state, &terminal_id)?;
    let control = state
        .control
        .terminal(&terminal_id, || fleet_labels(&state, &terminal_id));
    let layers: Vec<LayerView<'_>> = control
        .effective
        .layers
        .iter()
        .map(|layer| LayerView {
            profile: &layer.profile,
            revision: layer.revision,
            rank: layer.rank.number(),
            dimension: layer.rank,
            applies: if layer.in_rollout {
                "current"
            } else {
                "previous"
            },
        })
        .collect();
    Ok(Json(json!({
        "terminal_id": terminal_id,
        "effective": EffectiveView::from(control.effective.as_ref()),
        "reported": control.reported,
        "layers": layers,
        "probe": control.probe.as_ref().map(ProbeView::from),
    }))
    .into_response())
}

/// The terminal view's `config`: what it runs, what it refused, what it should run.
#[derive(Serialize)]
pub(crate) struct ConfigView<'a> {
    applied: Option<&'a str>,
    rejected: Option<&'a posmon_protocol::control::Rejection>,
    effective: &'a str,
}

/// A probe request as the terminal view shows it.
#[derive(Serialize)]
pub(crate) struct ProbeView<'a> {
    id: u64,
    requested_by: &'a str,
    #[serde(with = "time::serde::rfc3339")]
    requested_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    answered_at: Option<OffsetDateTime>,
    #[serde(skip_serializing_if = "Option::is_none")]
    answered_sequence: Option<u64>,
}

impl<'a> From<&'a ProbeRequest> for ProbeView<'a> {
    fn from(request: &'a ProbeRequest) -> Self {
        ProbeView {
            id: request.id,
            requested_by: &request.requested_by,
            requested_at: request.requested_at,
            answered_at: request.answered_at,
            answered_sequence: request.answered_sequence,
        }
    }
}

/// The `config` and `probe` members of `GET /api/v1/terminals/{id}`, when known.
pub(crate) fn terminal_members(
    state: &AppState,
    terminal_id: &str,
) -> (Option<serde_json::Value>, Option<serde_json::Value>) {
    let control = state
        .control
        .terminal(terminal_id, || fleet_labels(state, terminal_id));
    let config = (control.reported.is_some() || !control.effective.layers.is_empty()).then(|| {
        let reported = control.reported.as_ref();
        serde_json::to_value(ConfigView {
            applied: reported.and_then(|state| state.applied.as_deref()),
            rejected: reported.and_then(|state| state.rejected.as_ref()),
            effective: &control.effective.version,
        })
        .unwrap_or_default()
    });
    let probe = control
        .probe
        .as_ref()
        .map(|probe| serde_json::to_value(ProbeView::from(probe)).unwrap_or_default());
    (config, probe)
}

/// The answer to a probe request.
#[derive(Serialize)]
struct Requested<'a> {
    id: u64,
    terminal_id: &'a str,
    requested_by: &'a str,
    #[serde(with = "time::serde::rfc3339")]
    requested_at: OffsetDateTime,
}

impl<'a> From<&'a ProbeRequest> for Requested<'a> {
    fn from(request: &'a ProbeRequest) -> Self {
        Requested {
            id: request.id,
            terminal_id: &request.terminal_id,
            requested_by: &request.requested_by,
            requested_at: request.requested_at,
        }
    }
}

fn request_probe(
    state: &AppState,
    terminal_id: &str,
    by: &Actor,
) -> Result<ProbeRequest, ApiError> {
    state
        .control
        .request_probe(terminal_id, &by.name, OffsetDateTime::now_utc(), || {
            fleet_labels(state, terminal_id)
        })
        .map_err(|error| ApiError::internal("making a probe request", error))
}

/// `POST /api/v1/terminals/{id}/probe` → 202 `{id, terminal_id, requested_by, requested_at}`.
pub async fn probe_terminal(
    State(state): State<Arc<AppState>>,
    actor: Actor,
    Path(terminal_id): Path<String>,
) -> Result<Response, ApiError> {
    actor.require(Role::Operator)?;
    terminal_or_not_found(&state, &terminal_id)?;
    let request = request_probe(&state, &terminal_id, &actor)?;
    tracing::info!(terminal_id, id = request.id, "A probe request was made.");
    Ok((StatusCode::ACCEPTED, Json(Requested::from(&request))).into_response())
}

/// The body of `POST /api/v1/probe`: every filter given must match.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ProbeFilter {
    #[serde(default)]
    region: Option<String>,
    #[serde(default)]
    carrier: Option<String>,
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    merchant: Option<String>,
    #[serde(default)]
    readiness: Option<String>,
    #[serde(default)]
    terminals: Option<Vec<String>>,
}

/// `POST /api/v1/probe {region?, carrier?, model?, merchant?, readiness?, terminals?}` →
/// 202 `{requested, ids, requests}`; more than `control.max_probe_batch` matching → 400.
pub async fn probe_many(
    State(state): State<Arc<AppState>>,
    actor: Actor,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    actor.require(Role::Operator)?;
    check_content_type(&headers)?;
    let bytes = read_body(&headers, body, state.config.limits.max_body_bytes).await?;
    let mut deserializer = serde_json::Deserializer::from_slice(&bytes);
    let filter: ProbeFilter =
        serde_path_to_error::deserialize(&mut deserializer).map_err(decode_error)?;
    deserializer.end().map_err(|error| {
        ApiError::new(Reason::MalformedJson, format!("malformed JSON: {error}"))
    })?;
    let max = state.config.control.max_probe_batch;
    let readiness = match filter.readiness.as_deref() {
        None => None,
        Some(text) => Some(Readiness::parse(text).ok_or_else(|| {
            ApiError::field(
                Reason::InvalidField,
                "readiness",
                "must be cannot_pay, at_risk, can_pay or unknown",
            )
        })?),
    };
    if let Some(terminals) = &filter.terminals {
        if terminals.len() > max {
            return Err(ApiError::field(
                Reason::InvalidField,
                "terminals",
                format!("at most {max} terminals at once (control.max_probe_batch)"),
            ));
        }
    }
    let walking = Arc::clone(&state);
    // A pass over the fleet: off the async workers. Only `max + 1` ids are kept.
    let (matched, ids) = tokio::task::spawn_blocking(move || {
        let state = walking;
        let wanted: Option<std::collections::HashSet<&str>> = filter
            .terminals
            .as_ref()
            .map(|ids| ids.iter().map(String::as_str).collect());
        let roles = &state.config.readiness;
        let mut matched: usize = 0;
        let mut ids = Vec::new();
        let same = |wanted: &Option<String>, has: &Option<Arc<str>>| {
            wanted
                .as_deref()
                .is_none_or(|wanted| has.as_deref() == Some(wanted))
        };
        state.fleet.for_each_terminal(|terminal| {
            let labels = &terminal.labels;
            let selected = wanted
                .as_ref()
                .is_none_or(|wanted| wanted.contains(&*terminal.id))
                && same(&filter.region, &labels.region)
                && same(&filter.carrier, &labels.carrier)
                && same(&filter.model, &labels.model)
                && same(&filter.merchant, &labels.merchant)
                && readiness.is_none_or(|wanted| terminal.readiness(roles) == wanted);
            if selected {
                matched = matched.saturating_add(1);
                if ids.len() <= max {
                    ids.push(terminal.id.to_string());
                }
            }
        });
        (matched, ids)
    })
    .await
    .map_err(|error| ApiError::internal("selecting terminals to probe", error))?;
    if matched > max {
        return Err(ApiError::new(
            Reason::InvalidField,
            format!(
                "{matched} terminals match; at most {max} are probed at once (control.max_probe_batch): narrow the filter"
            ),
        ));
    }
    let started = Instant::now();
    let mut requests = Vec::with_capacity(ids.len());
    for terminal_id in &ids {
        requests.push(request_probe(&state, terminal_id, &actor)?);
    }
    tracing::info!(
        terminals = requests.len(),
        milliseconds = started.elapsed().as_millis() as u64,
        "Probe requests were made."
    );
    let views: Vec<Requested<'_>> = requests.iter().map(Requested::from).collect();
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({ "requested": requests.len(), "ids": ids, "requests": views })),
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(json: &str) -> Option<String> {
        let mut deserializer = serde_json::Deserializer::from_str(json);
        serde_path_to_error::deserialize::<_, ProfileRequest>(&mut deserializer)
            .err()
            .map(decode_error)
            .and_then(|error| error.field)
    }

    #[test]
    fn an_unknown_key_is_named_itself() {
        let cases = [
            (
                r#"{"settings":{"components":[{"name":"x","command":["id"]}]}}"#,
                "settings.components[0].command",
            ),
            (
                r#"{"settings":{"collector_url":"http://x"}}"#,
                "settings.collector_url",
            ),
            (r#"{"settings":{},"owner":"x"}"#, "owner"),
            (r#"{"settings":{"attempts":"3"}}"#, "settings.attempts"),
            (
                r#"{"selector":{"shop":"3"},"settings":{}}"#,
                "selector.shop",
            ),
        ];
        for (json, field) in cases {
            assert_eq!(decode(json).as_deref(), Some(field), "{json}");
        }
    }
}
