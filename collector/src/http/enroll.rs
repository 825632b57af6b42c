//! Enrollment over HTTP (`crate::enroll` keeps the codes):
//!
//! - `POST /api/v1/enrollments` `{terminal_id, expires_in_seconds?}` (admin role) creates a
//!   one-time code for a terminal: `{id, code, terminal_id, expires_at}` — the only time the
//!   code is shown. `GET /api/v1/enrollments` lists the outstanding ones (never the code);
//!   `DELETE /api/v1/enrollments/{terminal_id}` cancels a terminal's.
//! - `POST /api/v1/enroll` `{terminal_id, code}` (no credentials: the code is one) answers the
//!   token of the terminal's current accepted generation, once per code. Hostile input: a
//!   few redemptions in flight at once, the failures of all senders rate-limited before a code
//!   is looked at (`enroll::FailedRedemptions`), a body of at most [`REDEEM_BODY_MAX_BYTES`]
//!   read within `limits.body_read_timeout_seconds`. None of it touches the ingest pools.
//!
//! Never logged or stored: a code (but once in its creation's answer) or a token.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, post};
use axum::{Json, Router};
use posmon_protocol::enroll::{EnrollRequest, Enrolled, ENROLL_PATH};
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use time::OffsetDateTime;

use super::auth::{Actor, Role};
use super::error::{ApiError, Reason};
use super::reports::{check_content_type, read_body};
use super::AppState;
use crate::alert::message::rfc3339;
use crate::enroll::{EnrollError, DEFAULT_EXPIRY_SECONDS, MAX_EXPIRY_SECONDS};

/// The largest redemption body: a terminal id and a code fit in a few hundred bytes.
pub const REDEEM_BODY_MAX_BYTES: usize = 1024;
/// The largest creation body.
const CREATE_BODY_MAX_BYTES: usize = 1024;
/// Redemptions in flight at once, over all senders; more are answered 503 at once.
pub const REDEMPTIONS_IN_FLIGHT_MAX: usize = 4;

/// The routes; [`super::app`] merges them.
pub fn router() -> Router<Arc<AppState>> {
    Router::new()
        .route(ENROLL_PATH, post(redeem))
        .route("/api/v1/enrollments", post(create).get(list))
        .route("/api/v1/enrollments/{terminal_id}", delete(cancel))
}

/// Decodes a JSON body; a type error names the field by its path.
fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(&mut deserializer).map_err(|error| {
        let path = error.path().to_string();
        let inner = error.into_inner();
        match inner.classify() {
            serde_json::error::Category::Data => {
                // serde_json's " at line L column C" is noise beside the field's path.
                let message = inner.to_string();
                let message = message
                    .rfind(" at line ")
                    .map_or(message.as_str(), |position| &message[..position]);
                ApiError::field(Reason::InvalidField, path, message)
            }
            _ => ApiError::new(Reason::MalformedJson, format!("malformed JSON: {inner}")),
        }
    })
}

fn check_terminal_id(terminal_id: &str) -> Result<(), ApiError> {
    posmon_protocol::validate::check_terminal_id(terminal_id, "terminal_id")
        .map_err(|error| ApiError::field(Reason::InvalidField, error.field, error.problem))
}

async fn read_bounded(
    state: &AppState,
    headers: &HeaderMap,
    body: Body,
    limit: usize,
) -> Result<axum::body::Bytes, ApiError> {
    check_content_type(headers)?;
    let deadline = Duration::from_secs(state.config.limits.body_read_timeout_seconds);
    tokio::time::timeout(deadline, read_body(headers, body, limit))
        .await
        .map_err(|_| {
            ApiError::new(
                Reason::BodyTimeout,
                format!(
                    "the request body did not arrive within {} s",
                    deadline.as_secs()
                ),
            )
        })?
}

fn stored_error(context: &str, error: EnrollError) -> ApiError {
    match error {
        EnrollError::TerminalFull { .. } => {
            ApiError::field(Reason::Conflict, "terminal_id", error.to_string())
        }
        EnrollError::Full => ApiError::new(Reason::Conflict, error.to_string()),
        EnrollError::Invalid => ApiError::field(Reason::InvalidCode, "code", error.to_string()),
        EnrollError::Expiry => ApiError::field(
            Reason::InvalidField,
            "expires_in_seconds",
            error.to_string(),
        ),
        other => ApiError::internal(context, other),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateRequest {
    terminal_id: String,
    expires_in_seconds: Option<u64>,
}

#[derive(Debug, Serialize)]
pub struct CreatedView {
    id: i64,
    /// The code, shown this once: only its hash is kept.
    code: String,
    terminal_id: String,
    expires_at: String,
}

pub async fn create(
    State(state): State<Arc<AppState>>,
    actor: Actor,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<CreatedView>, ApiError> {
    actor.require(Role::Admin)?;
    let bytes = read_bounded(&state, &headers, body, CREATE_BODY_MAX_BYTES).await?;
    let request: CreateRequest = decode(&bytes)?;
    check_terminal_id(&request.terminal_id)?;
    let seconds = request.expires_in_seconds.unwrap_or(DEFAULT_EXPIRY_SECONDS);
    if !(1..=MAX_EXPIRY_SECONDS).contains(&seconds) {
        return Err(ApiError::field(
            Reason::InvalidField,
            "expires_in_seconds",
            format!("must be between 1 and {MAX_EXPIRY_SECONDS} (30 days)"),
        ));
    }
    // Within 30 days: no overflow.
    let expires_in = time::Duration::seconds(i64::try_from(seconds).unwrap_or(i64::MAX));
    let stored = Arc::clone(&state);
    let terminal_id = request.terminal_id.clone();
    let created = tokio::task::spawn_blocking(move || {
        stored
            .enrollments
            .create(&terminal_id, OffsetDateTime::now_utc(), expires_in)
    })
    .await
    .map_err(|error| ApiError::internal("creating an enrollment code", error))?
    .map_err(|error| stored_error("creating an enrollment code", error))?;
    tracing::info!(
        terminal_id = %request.terminal_id,
        id = created.id,
        expires_at = %rfc3339(created.expires_at),
        "Created an enrollment code for a terminal."
    );
    Ok(Json(CreatedView {
        id: created.id,
        code: created.code,
        terminal_id: request.terminal_id,
        expires_at: rfc3339(created.expires_at),
    }))
}

#[derive(Debug, Serialize)]
pub struct OutstandingView {
    id: i64,
    terminal_id: String,
    created_at: String,
    expires_at: String,
}

#[derive(Debug, Serialize)]
pub struct OutstandingList {
    enrollments: Vec<OutstandingView>,
}

pub async fn list(
    State(state): State<Arc<AppState>>,
    actor: Actor,
) -> Result<Json<OutstandingList>, ApiError> {
    actor.require(Role::Admin)?;
    let stored = Arc::clone(&state);
    let outstanding =
        tokio::task::spawn_blocking(move || stored.enrollments.list(OffsetDateTime::now_utc()))
            .await
            .map_err(|error| ApiError::internal("listing enrollment codes", error))?
            .map_err(|error| stored_error("listing enrollment codes", error))?;
    Ok(Json(OutstandingList {
        enrollments: outstanding
            .into_iter()
            .map(|code| OutstandingView {
                id: code.id,
                terminal_id: code.terminal_id,
                created_at: rfc3339(code.created_at),
                expires_at: rfc3339(code.expires_at),
            })
            .collect(),
    }))
}

#[derive(Debug, Serialize)]
pub struct Cancelled {
    terminal_id: String,
    cancelled: usize,
}

pub async fn cancel(
    State(state): State<Arc<AppState>>,
    actor: Actor,
    Path(terminal_id): Path<String>,
) -> Result<Json<Cancelled>, ApiError> {
    actor.require(Role::Admin)?;
    check_terminal_id(&terminal_id)?;
    let stored = Arc::clone(&state);
    let id = terminal_id.clone();
    let cancelled = tokio::task::spawn_blocking(move || stored.enrollments.cancel(&id))
        .await
        .map_err(|error| ApiError::internal("cancelling enrollment codes", error))?
        .map_err(|error| stored_error("cancelling enrollment codes", error))?;
    tracing::info!(%terminal_id, cancelled, "Cancelled the enrollment codes of a terminal.");
    Ok(Json(Cancelled {
        terminal_id,
        cancelled,
    }))
}

/// An error with a `Retry-After`.
fn refuse_for(error: ApiError, seconds: u64) -> Response {
    let mut response = error.into_response();
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, header::HeaderValue::from(seconds));
    response
}

/// Counts a redemption's result (`posmon_enroll_redemptions_total`).
fn count(state: &AppState, result: &str) {
    state
        .metrics
        .enroll_redemptions
        .with_label_values(&[result])
        .inc();
}

pub async fn redeem(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let Ok(_permit) = Arc::clone(&state.redemption_permits).try_acquire_owned() else {
        count(&state, "busy");
        return refuse_for(
            ApiError::new(
                Reason::Overloaded,
                "too many enrollments at once: try again shortly",
            ),
            1,
        );
    };
    // A token taken before anything is read: redemptions in flight together cannot all pass
    // a check made before any of them failed. Given back below if this one does not fail.
    if let Err(wait) = state.failed_redemptions.take(Instant::now()) {
        count(&state, "rate_limited");
        return refuse_for(
            ApiError::new(
                Reason::RateLimited,
                "too many failed enrollments: try again later",
            ),
            super::admission::retry_after_seconds(wait),
        );
    }
    match redeem_checked(&state, &headers, body).await {
        Ok(enrolled) => {
            count(&state, "enrolled");
            state.failed_redemptions.refund(Instant::now());
            Json(enrolled).into_response()
        }
        Err(error) => {
            // Every failure of the sender's keeps its token, a malformed request's too; the
            // collector's own fault is not the sender's.
            if error.reason == Reason::Internal {
                count(&state, "failed");
                state.failed_redemptions.refund(Instant::now());
            } else {
                count(&state, "refused");
            }
            error.into_response()
        }
    }
}

async fn redeem_checked(
    state: &Arc<AppState>,
    headers: &HeaderMap,
    body: Body,
) -> Result<Enrolled, ApiError> {
    let bytes = read_bounded(state, headers, body, REDEEM_BODY_MAX_BYTES).await?;
    let request: EnrollRequest = decode(&bytes)?;
    check_terminal_id(&request.terminal_id)?;
    let stored = Arc::clone(state);
    let terminal_id = request.terminal_id.clone();
    // The token is made once the code matched and before it is spent: a fault making it
    // leaves the code for another try.
    let (token, key_id, generation) = tokio::task::spawn_blocking(move || {
        let keyring = &stored.keyring;
        stored.enrollments.redeem(
            &terminal_id,
            &request.code,
            OffsetDateTime::now_utc(),
            || {
                let generation = keyring.revocations().minimum(&terminal_id);
                let key_id = keyring.current().id().to_string();
                let (token, _) = keyring.token_at(&key_id, &terminal_id, generation)?;
                Ok((token, key_id, generation))
            },
        )
    })
    .await
    .map_err(|error| ApiError::internal("redeeming an enrollment code", error))?
    .map_err(|error| stored_error("redeeming an enrollment code", error))?;
    let terminal_id = request.terminal_id;
    tracing::info!(
        %terminal_id,
        generation,
        %key_id,
        "A terminal enrolled: its token was handed out for a one-time code."
    );
    Ok(Enrolled {
        token,
        terminal_id,
        key_id,
        generation,
    })
}
