//! Terminal credentials, for the admin role:
//!
//! - `POST /api/v1/terminals/{id}/revoke` revokes every token the terminal holds: its lowest
//!   accepted generation goes up by one (stored before it applies) and the answer names the new
//!   generation; `posmon-collector token <id>` prints the token of it. Other terminals are
//!   unaffected; a terminal that never reported can be revoked too.
//! - `GET /api/v1/policy/credentials`: the fleet keys (the current one first) with how many
//!   report requests each signed since start and when the last one came — during a rotation of
//!   the fleet secret, the old key can go once it is unused — and how many terminals have a
//!   revoked token. (Under `/api/v1/policy/` as the other admin reads, so a viewer token is
//!   not also needed.)

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Serialize;
use time::OffsetDateTime;

use super::auth::{Actor, Role};
use super::error::{ApiError, Reason};
use super::AppState;
use crate::alert::message::rfc3339;
use crate::revocation::RevocationError;

/// The routes; [`super::app`] merges them.
pub fn router() -> Router<Arc<AppState>> {
    Router::new()
        .route("/api/v1/terminals/{terminal_id}/revoke", post(revoke))
        .route("/api/v1/policy/credentials", get(credentials))
}

#[derive(Debug, Serialize)]
pub struct Revoked {
    terminal_id: String,
    /// The token generation accepted from now on (older ones are refused).
    generation: u32,
    /// The key the new token is signed with.
    key_id: String,
}

pub async fn revoke(
    State(state): State<Arc<AppState>>,
    actor: Actor,
    Path(terminal_id): Path<String>,
) -> Result<Json<Revoked>, ApiError> {
    actor.require(Role::Admin)?;
    posmon_protocol::validate::check_terminal_id(&terminal_id, "terminal_id")
        .map_err(|error| ApiError::field(Reason::InvalidField, error.field, error.problem))?;
    let stored = Arc::clone(&state);
    let id = terminal_id.clone();
    let generation = tokio::task::spawn_blocking(move || {
        stored
            .keyring
            .revocations()
            .revoke(&id, OffsetDateTime::now_utc())
    })
    .await
    .map_err(|error| ApiError::internal("revoking a token", error))?
    .map_err(|error| match error {
        RevocationError::Exhausted(_) | RevocationError::Full => {
            ApiError::field(Reason::InvalidField, "terminal_id", error.to_string())
        }
        other => ApiError::internal("revoking a token", other),
    })?;
    tracing::info!(
        %terminal_id,
        generation,
        "Revoked the older tokens of a terminal: only its tokens of this generation or later are accepted."
    );
    Ok(Json(Revoked {
        terminal_id,
        generation,
        key_id: state.keyring.current().id().to_string(),
    }))
}

#[derive(Debug, Serialize)]
pub struct KeyView {
    id: String,
    current: bool,
    accepted_requests: u64,
    last_accepted_at: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct CredentialsView {
    current_key: String,
    keys: Vec<KeyView>,
    revoked_terminals: usize,
}

pub async fn credentials(
    State(state): State<Arc<AppState>>,
    actor: Actor,
) -> Result<Json<CredentialsView>, ApiError> {
    actor.require(Role::Admin)?;
    let keys = state
        .keyring
        .key_usage()
        .into_iter()
        .map(|usage| KeyView {
            id: usage.id,
            current: usage.current,
            accepted_requests: usage.accepted_requests,
            last_accepted_at: usage.last_accepted_at.map(rfc3339),
        })
        .collect();
    Ok(Json(CredentialsView {
        current_key: state.keyring.current().id().to_string(),
        keys,
        revoked_terminals: state.keyring.revocations().count(),
    }))
}
