//! The users API (admin role): `GET /api/v1/users` (users and their live API tokens),
//! `POST /api/v1/users {name, role, password}`, `PATCH /api/v1/users/{name} {role?, disabled?,
//! password?}` and `DELETE /api/v1/users/{name}/tokens/{id}`. Disabling a user or resetting their
//! password ends their sessions at once; a changed role applies from their next request.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, patch};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;
use time::OffsetDateTime;

use super::auth::{Actor, Role};
use super::error::{ApiError, Reason};
use super::login::{json_body, user_error};
use super::AppState;
use crate::users::{Password, UserError};

pub fn router() -> Router<Arc<AppState>> {
    Router::new()
        .route("/api/v1/users", get(list_users).post(add_user))
        .route("/api/v1/users/{name}", patch(change_user))
        .route("/api/v1/users/{name}/tokens/{id}", delete(revoke_token))
}

async fn list_users(
    State(state): State<Arc<AppState>>,
    actor: Actor,
) -> Result<Json<serde_json::Value>, ApiError> {
    actor.require(Role::Admin)?;
    let users = &state.accounts.users;
    let list = users
        .list()
        .map_err(|error| user_error("listing users", error))?;
    let tokens = users
        .tokens(None)
        .map_err(|error| user_error("listing API tokens", error))?;
    Ok(Json(json!({ "users": list, "tokens": tokens })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewUser {
    name: String,
    role: Role,
    password: String,
}

/// Hashes on the blocking pool, one of the bounded number of hashes at once.
async fn with_hashing<T: Send + 'static>(
    state: &Arc<AppState>,
    work: impl FnOnce(&AppState) -> Result<T, UserError> + Send + 'static,
) -> Result<T, ApiError> {
    let permit = Arc::clone(&state.accounts.hashing)
        .acquire_owned()
        .await
        .map_err(|error| ApiError::internal("waiting to hash a password", error))?;
    let state = Arc::clone(state);
    tokio::task::spawn_blocking(move || {
        let _permit = permit;
        work(&state)
    })
    .await
    .map_err(|error| ApiError::internal("hashing a password", error))?
    .map_err(|error| user_error("storing a user", error))
}

async fn add_user(
    State(state): State<Arc<AppState>>,
    actor: Actor,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    actor.require(Role::Admin)?;
    let request: NewUser = json_body(&headers, body, 4096).await?;
    let password =
        Password::new(request.password).map_err(|error| user_error("adding a user", error))?;
    let (name, role) = (request.name, request.role);
    let user = with_hashing(&state, move |state| {
        state
            .accounts
            .users
            .add(&name, role, &password, OffsetDateTime::now_utc())
    })
    .await?;
    tracing::info!(user = %user.name, role = user.role.as_str(), by = %actor.name, "A user was added.");
    Ok((StatusCode::CREATED, Json(user)).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UserChange {
    #[serde(default)]
    role: Option<Role>,
    #[serde(default)]
    disabled: Option<bool>,
    #[serde(default)]
    password: Option<String>,
}

async fn change_user(
    State(state): State<Arc<AppState>>,
    actor: Actor,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    actor.require(Role::Admin)?;
    let change: UserChange = json_body(&headers, body, 4096).await?;
    let users = &state.accounts.users;
    if users
        .get(&name)
        .map_err(|error| user_error("looking up a user", error))?
        .is_none()
    {
        return Err(ApiError::field(
            Reason::NotFound,
            "name",
            format!("no user named {name}"),
        ));
    }
    let password = change
        .password
        .map(Password::new)
        .transpose()
        .map_err(|error| user_error("changing a user", error))?;
    if let Some(role) = change.role {
        users
            .set_role(&name, role)
            .map_err(|error| user_error("changing a role", error))?;
        tracing::info!(user = %name, role = role.as_str(), by = %actor.name, "A user's role was changed.");
    }
    if let Some(disabled) = change.disabled {
        users
            .set_disabled(&name, disabled)
            .map_err(|error| user_error("disabling a user", error))?;
        if disabled {
            state.accounts.sessions.remove_user(&name);
        }
        tracing::info!(user = %name, disabled, by = %actor.name, "A user was disabled or enabled.");
    }
    if let Some(password) = password {
        let resetting = name.clone();
        with_hashing(&state, move |state| {
            state.accounts.users.reset_password(&resetting, &password)
        })
        .await?;
        state.accounts.sessions.remove_user(&name);
        tracing::info!(user = %name, by = %actor.name, "A user's password was reset.");
    }
    let user = users
        .get(&name)
        .map_err(|error| user_error("looking up a user", error))?;
    Ok(Json(user).into_response())
}

async fn revoke_token(
    State(state): State<Arc<AppState>>,
    actor: Actor,
    Path((name, id)): Path<(String, i64)>,
) -> Result<Response, ApiError> {
    actor.require(Role::Admin)?;
    let revoked = state
        .accounts
        .users
        .revoke_token(id, Some(&name))
        .map_err(|error| user_error("revoking an API token", error))?;
    if !revoked {
        return Err(ApiError::field(
            Reason::NotFound,
            "id",
            "no such live token of this user",
        ));
    }
    tracing::info!(user = %name, id, by = %actor.name, "An API token was revoked.");
    Ok(StatusCode::NO_CONTENT.into_response())
}
