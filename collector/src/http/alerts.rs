//! The alerting endpoints: recent notifications with their delivery state, and silences
//! (listed by anyone who can read the API; created and expired by an operator).

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use serde_json::{json, Value};
use time::OffsetDateTime;

use super::auth::{Actor, Role};
use super::error::{ApiError, Reason};
use super::queries::{check_parameters, number};
use super::reports::{check_content_type, read_body};
use super::AppState;
use crate::alert::message::rfc3339;
use crate::alert::outbox::{Filter, Row, Status};
use crate::alert::silences::{NewSilence, Silence};
use crate::workflow::AuditEntry;

/// The most notifications one page lists.
const PAGE_MAX: usize = 1000;
/// A silence request is small.
const SILENCE_BODY_MAX_BYTES: usize = 64 * 1024;

fn notification_view(row: &Row) -> Value {
    let notification = &row.notification;
    let mut codes: Vec<&str> = notification
        .firing
        .iter()
        .chain(&notification.resolved)
        .map(|item| item.code.as_str())
        .collect();
    codes.sort_unstable();
    codes.dedup();
    json!({
        "id": row.id,
        "receiver": row.receiver,
        "group_key": row.group_key,
        "group_labels": notification.group_labels,
        "idempotency_key": row.idempotency_key,
        "status": row.status.as_str(),
        "alert_status": notification.status(),
        "repeat": notification.repeat,
        "firing": notification.firing_count(),
        "resolved": notification.resolved_count(),
        "terminals": notification
            .firing
            .iter()
            .chain(&notification.resolved)
            .filter(|item| !item.terminal_id.is_empty())
            .take(20)
            .map(|item| item.terminal_id.as_str())
            .collect::<Vec<_>>(),
        "codes": codes,
        "attempts": row.attempts,
        "last_error": row.last_error,
        "created_at": rfc3339(row.created_at),
        "updated_at": rfc3339(row.updated_at),
        "next_attempt_at": (row.status == Status::Pending).then(|| rfc3339(row.next_attempt_at)),
        "delivered_at": row.delivered_at.map(rfc3339),
    })
}

/// `GET /api/v1/alerts/notifications?status=&receiver=&limit=&offset=`, newest first.
pub async fn list_notifications(
    State(state): State<Arc<AppState>>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<impl IntoResponse, ApiError> {
    check_parameters(&query, &["status", "receiver", "limit", "offset"])?;
    let status = match query.get("status").map(String::as_str) {
        None => None,
        Some("pending") => Some(Status::Pending),
        Some("delivered") => Some(Status::Delivered),
        Some("failed") => Some(Status::Failed),
        Some("expired") => Some(Status::Expired),
        Some(_) => {
            return Err(ApiError::field(
                Reason::BadQuery,
                "status",
                "must be pending, delivered, failed or expired",
            ))
        }
    };
    let filter = Filter {
        status,
        receiver: query.get("receiver").cloned(),
        limit: number(&query, "limit", 100, PAGE_MAX)?,
        offset: number(&query, "offset", 0, usize::MAX)?,
    };
    let alerts = Arc::clone(&state.alerts);
    let rows = tokio::task::spawn_blocking(move || alerts.notifications(&filter))
        .await
        .map_err(|error| ApiError::internal("listing notifications", error))?
        .map_err(|error| ApiError::internal("listing notifications", error))?;
    let list: Vec<Value> = rows.iter().map(notification_view).collect();
    Ok(Json(json!({
        "receivers": state.alerts.receiver_names(),
        "notifications": list,
    })))
}

/// The open findings a silence's view lists at most (the count is of all).
const MATCHED_LIST_MAX: usize = 100;

fn silence_view(silence: &Silence, now: OffsetDateTime) -> Value {
    let mut view = json!({
        "id": silence.id,
        "state": silence.state(now),
        "matchers": silence.matchers,
        "starts_at": rfc3339(silence.starts_at),
        "ends_at": rfc3339(silence.ends_at),
        "created_by": silence.created_by,
        "comment": silence.comment,
        "created_at": rfc3339(silence.created_at),
    });
    if let Some(object) = view.as_object_mut() {
        if let Some(recurrence) = &silence.recurrence {
            object.insert("recurrence".into(), json!(recurrence));
        }
        if let Some((_, end)) = silence.current_window(now) {
            object.insert("window_ends_at".into(), json!(rfc3339(end)));
        }
        if let Some(next) = silence.next_start(now) {
            object.insert("next_start".into(), json!(rfc3339(next)));
        }
    }
    view
}

/// `GET /api/v1/alerts/silences`: every silence (maintenance window), newest first, with its
/// state and, for those not over, how many open findings it matches (`matching`: what it
/// hides while it holds).
pub async fn list_silences(
    State(state): State<Arc<AppState>>,
) -> Result<impl IntoResponse, ApiError> {
    let now = OffsetDateTime::now_utc();
    let worker = Arc::clone(&state);
    // A pass over the open findings: off the async workers.
    let matched = tokio::task::spawn_blocking(move || {
        worker.alerts.matched_by_silences(&worker.fleet, now, 0)
    })
    .await
    .map_err(|error| ApiError::internal("matching silences", error))?;
    let silences: Vec<Value> = state
        .alerts
        .silences()
        .iter()
        .rev()
        .map(|silence| {
            let mut view = silence_view(silence, now);
            if silence.state(now) != "expired" {
                view["matching"] = json!(matched.get(&silence.id).map_or(0, |(count, _)| *count));
            }
            view
        })
        .collect();
    Ok(Json(json!({ "silences": silences })))
}

/// `GET /api/v1/alerts/silences/{id}`: one silence with the open findings it matches (at
/// most [`MATCHED_LIST_MAX`], and their count).
pub async fn get_silence(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    let id = silence_id(&id)?;
    let now = OffsetDateTime::now_utc();
    let Some(silence) = state.alerts.silences().iter().find(|s| s.id == id).cloned() else {
        return Err(ApiError::field(Reason::NotFound, "id", "no such silence"));
    };
    let worker = Arc::clone(&state);
    let mut matched = tokio::task::spawn_blocking(move || {
        worker
            .alerts
            .matched_by_silences(&worker.fleet, now, MATCHED_LIST_MAX)
    })
    .await
    .map_err(|error| ApiError::internal("matching silences", error))?;
    let (count, items) = matched.remove(&id).unwrap_or_default();
    let mut view = silence_view(&silence, now);
    view["matching"] = json!(count);
    view["matched"] = json!(items
        .iter()
        .map(|item| json!({
            "finding_id": item.finding_id,
            "terminal_id": item.terminal_id,
            "code": item.code,
            "subject": item.subject,
            "severity": item.severity,
            "party": item.party,
            "region": item.region,
            "since": crate::alert::message::rfc3339_checked(item.since),
        }))
        .collect::<Vec<_>>());
    Ok(Json(view))
}

fn silence_id(text: &str) -> Result<u64, ApiError> {
    text.parse()
        .map_err(|_| ApiError::field(Reason::BadQuery, "id", "must be a silence id"))
}

/// The audit entry of a maintenance window's creation or end.
fn audit_entry(action: &str, actor: &str, silence: &Silence, now: OffsetDateTime) -> AuditEntry {
    AuditEntry {
        id: 0,
        at: now,
        actor: actor.to_string(),
        action: action.to_string(),
        finding_id: None,
        terminal_id: None,
        code: None,
        subject: None,
        detail: Some(json!({ "silence": silence.id, "matchers": silence.matchers })),
        comment: (!silence.comment.is_empty()).then(|| silence.comment.clone()),
    }
}

/// `POST /api/v1/alerts/silences` (operator role): `{"matchers": {...}, "duration_seconds":
/// 3600 | "ends_at": "…", "starts_at"?: "…", "created_by": "…", "comment"?: "…"}`.
pub async fn create_silence(
    State(state): State<Arc<AppState>>,
    actor: Actor,
    headers: HeaderMap,
    body: Body,
) -> Result<impl IntoResponse, ApiError> {
    actor.require(Role::Operator)?;
    check_content_type(&headers)?;
    let bytes = read_body(&headers, body, SILENCE_BODY_MAX_BYTES).await?;
    let mut deserializer = serde_json::Deserializer::from_slice(&bytes);
    let mut new: NewSilence =
        serde_path_to_error::deserialize(&mut deserializer).map_err(|error| {
            let path = error.path().to_string();
            ApiError::field(Reason::InvalidField, path, error.into_inner().to_string())
        })?;
    new.created_by = actor.name.clone();
    let now = OffsetDateTime::now_utc();
    let alerts = Arc::clone(&state.alerts);
    let silence = tokio::task::spawn_blocking(move || alerts.add_silence(new, now))
        .await
        .map_err(|error| ApiError::internal("storing a silence", error))?
        .map_err(|error| ApiError::internal("storing a silence", error))?
        .map_err(|(field, problem)| ApiError::field(Reason::InvalidField, field, problem))?;
    tracing::info!(id = silence.id, created_by = %silence.created_by, "A silence was created.");
    record(
        &state,
        audit_entry("maintenance.create", &actor.name, &silence, now),
    )
    .await;
    Ok((StatusCode::CREATED, Json(silence_view(&silence, now))))
}

/// `DELETE /api/v1/alerts/silences/{id}` (operator role): ends the silence now.
pub async fn expire_silence(
    State(state): State<Arc<AppState>>,
    actor: Actor,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    actor.require(Role::Operator)?;
    let id = silence_id(&id)?;
    let now = OffsetDateTime::now_utc();
    let over = state
        .alerts
        .silences()
        .iter()
        .any(|silence| silence.id == id && silence.state(now) == "expired");
    if over {
        return Err(ApiError::new(
            Reason::Conflict,
            "the silence is already over",
        ));
    }
    let alerts = Arc::clone(&state.alerts);
    let expired = tokio::task::spawn_blocking(move || alerts.expire_silence(id, now))
        .await
        .map_err(|error| ApiError::internal("expiring a silence", error))?
        .map_err(|error| ApiError::internal("expiring a silence", error))?;
    match expired {
        Some(silence) => {
            tracing::info!(id, "A silence was expired.");
            record(
                &state,
                audit_entry("maintenance.end", &actor.name, &silence, now),
            )
            .await;
            Ok(Json(silence_view(&silence, now)))
        }
        None => Err(ApiError::field(Reason::NotFound, "id", "no such silence")),
    }
}

/// Records an audit entry; a failure to is logged, not the request's (the action is done).
async fn record(state: &Arc<AppState>, entry: AuditEntry) {
    let workflow = Arc::clone(&state.workflow);
    match tokio::task::spawn_blocking(move || workflow.record(entry)).await {
        Ok(Ok(_)) => {}
        Ok(Err(error)) => tracing::error!(%error, "Cannot record an audit entry."),
        Err(error) => tracing::error!(%error, "Recording an audit entry failed."),
    }
}
