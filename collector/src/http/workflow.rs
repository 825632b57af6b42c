//! The problem workflow's endpoints (`workflow/`): acknowledge, unacknowledge, assign, comment
//! on and close by hand an open finding (`POST /api/v1/findings/{id}/{action}`, operators), a
//! finding's activity (`GET /api/v1/findings/{id}/activity`) and the audit log
//! (`GET /api/v1/audit`), read like the rest of the read API.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use time::OffsetDateTime;

use super::auth::{Actor, Role};
use super::error::{ApiError, Reason};
use super::queries::{check_parameters, number};
use super::reports::{check_content_type, read_body};
use super::AppState;
use crate::workflow::{self, Action, AuditFilter, WorkflowError};

/// An action's body is small: a comment and an assignee.
const ACTION_BODY_MAX_BYTES: usize = 16 * 1024;
/// The most audit entries one page lists.
const AUDIT_PAGE_MAX: usize = 500;

/// The routes; [`super::app`] merges them.
pub fn router() -> Router<Arc<AppState>> {
    Router::new()
        .route("/api/v1/findings/{id}/activity", get(activity))
        .route("/api/v1/findings/{id}/{action}", post(act))
        .route("/api/v1/audit", get(audit))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ActionBody {
    #[serde(default)]
    comment: Option<String>,
    /// `assign`: a person's name…
    #[serde(default)]
    person: Option<String>,
    /// … or a party (`network_provider`…); neither unassigns.
    #[serde(default)]
    party: Option<String>,
}

fn finding_id(text: &str) -> Result<u64, ApiError> {
    text.parse()
        .map_err(|_| ApiError::field(Reason::BadQuery, "id", "must be a finding id"))
}

fn refused(error: WorkflowError) -> ApiError {
    match error {
        WorkflowError::Invalid { field, problem } => {
            ApiError::field(Reason::InvalidField, field, problem)
        }
        WorkflowError::Conflict(problem) => ApiError::new(Reason::Conflict, problem),
        WorkflowError::Full => ApiError::new(Reason::Conflict, error.to_string()),
        WorkflowError::NotOpen => ApiError::field(Reason::NotFound, "id", error.to_string()),
        WorkflowError::Store(error) => ApiError::internal("recording a workflow action", error),
    }
}

/// `POST /api/v1/findings/{id}/{acknowledge|unacknowledge|assign|comment|close}` with an
/// optional JSON body `{"comment"?, "person"?, "party"?}`.
async fn act(
    State(state): State<Arc<AppState>>,
    actor: Actor,
    headers: HeaderMap,
    Path((id, action)): Path<(String, String)>,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    actor.require(Role::Operator)?;
    let actor = actor.name;
    let id = finding_id(&id)?;
    check_content_type(&headers)?;
    let bytes = read_body(&headers, body, ACTION_BODY_MAX_BYTES).await?;
    let request: ActionBody = if bytes.iter().all(u8::is_ascii_whitespace) {
        ActionBody::default()
    } else {
        let mut deserializer = serde_json::Deserializer::from_slice(&bytes);
        let request = serde_path_to_error::deserialize(&mut deserializer).map_err(|error| {
            let path = error.path().to_string();
            ApiError::field(Reason::InvalidField, path, error.into_inner().to_string())
        })?;
        deserializer
            .end()
            .map_err(|error| ApiError::new(Reason::MalformedJson, error.to_string()))?;
        request
    };
    let comment = workflow::comment(request.comment.as_deref()).map_err(refused)?;
    let action = match action.as_str() {
        "acknowledge" => Action::Acknowledge,
        "unacknowledge" => Action::Unacknowledge,
        "assign" => Action::Assign(
            workflow::assignee(request.person.as_deref(), request.party.as_deref())
                .map_err(refused)?,
        ),
        "comment" => Action::Comment,
        "close" => Action::Close,
        _ => {
            return Err(ApiError::field(
                Reason::NotFound,
                "action",
                "must be acknowledge, unacknowledge, assign, comment or close",
            ))
        }
    };
    if action == Action::Comment && comment.is_none() {
        return Err(ApiError::field(
            Reason::InvalidField,
            "comment",
            "a comment needs its text",
        ));
    }
    if !matches!(action, Action::Assign(_)) && (request.person.is_some() || request.party.is_some())
    {
        return Err(ApiError::field(
            Reason::InvalidField,
            "person",
            "only an assignment names a person or a party",
        ));
    }
    let state_for_work = Arc::clone(&state);
    let done = tokio::task::spawn_blocking(move || {
        let state = state_for_work;
        let now = OffsetDateTime::now_utc();
        let Some(finding) = state.fleet.open_finding(id, None) else {
            return Err(ApiError::field(
                Reason::NotFound,
                "id",
                format!("no open finding {id}"),
            ));
        };
        let fleet = &state.fleet;
        let (problem, entry) = state
            .workflow
            .act(&finding, &action, &actor, comment.as_deref(), now, || {
                if action != Action::Close {
                    return fleet.is_open(&finding.terminal_id, id);
                }
                match fleet.close_by_hand(&finding.terminal_id, id, now) {
                    Some(events) => {
                        state.publish(events);
                        true
                    }
                    None => false,
                }
            })
            .map_err(refused)?;
        tracing::info!(finding = id, terminal = %finding.terminal_id, action = action.as_str(), actor = %actor, "A problem workflow action was recorded.");
        Ok(json!({
            "finding_id": id,
            "open": action != Action::Close,
            "state": problem,
            "entry": entry,
        }))
    })
    .await
    .map_err(|error| ApiError::internal("recording a workflow action", error))??;
    Ok(Json(done))
}

/// `GET /api/v1/findings/{id}/activity`: the finding's state (while open) and its audit
/// entries, newest first.
async fn activity(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id = finding_id(&id)?;
    let problem = state.workflow.states().get(&id).cloned();
    let workflow = Arc::clone(&state.workflow);
    let entries = tokio::task::spawn_blocking(move || {
        workflow.audit(
            &AuditFilter {
                finding_id: Some(id),
                ..AuditFilter::default()
            },
            AUDIT_PAGE_MAX,
        )
    })
    .await
    .map_err(|error| ApiError::internal("reading the audit log", error))?
    .map_err(|error| ApiError::internal("reading the audit log", error))?;
    Ok(Json(json!({
        "finding_id": id,
        "state": problem,
        "entries": entries,
    })))
}

/// `GET /api/v1/audit?terminal=&finding=&before=&limit=`: the audit log, newest first;
/// `before` (an entry id) pages back.
async fn audit(
    State(state): State<Arc<AppState>>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    check_parameters(&query, &["terminal", "finding", "before", "limit"])?;
    let limit = number(&query, "limit", 100, AUDIT_PAGE_MAX)?;
    let finding_id = query
        .get("finding")
        .map(|text| finding_id(text))
        .transpose()?;
    let before = query
        .get("before")
        .map(|text| {
            text.parse::<i64>().map_err(|_| {
                ApiError::field(Reason::BadQuery, "before", "must be an audit entry id")
            })
        })
        .transpose()?;
    let filter = AuditFilter {
        finding_id,
        terminal_id: query.get("terminal").filter(|id| !id.is_empty()).cloned(),
        before,
    };
    let workflow = Arc::clone(&state.workflow);
    let entries = tokio::task::spawn_blocking(move || workflow.audit(&filter, limit))
        .await
        .map_err(|error| ApiError::internal("reading the audit log", error))?
        .map_err(|error| ApiError::internal("reading the audit log", error))?;
    Ok(Json(json!({ "entries": entries })))
}
