//! Users, roles, sessions and tokens through the router, in process: who may read while no
//! account exists, the legacy admin and viewer tokens as actors, signing in and the session's
//! CSRF token, the users API's validation, and per-user API tokens capped by their user's role.
#![allow(
    clippy::unwrap_used,
    reason = "test helpers: a failed unwrap fails the test, as it should"
)]

use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use axum::Router;
use http_body_util::BodyExt;
use posmon_collector::config::Config;
use posmon_collector::http::auth::{Role, ViewerAuth};
use posmon_collector::http::{app, AppState};
use posmon_collector::users::{Password, Users};
use posmon_protocol::{FleetKey, Keyring};
use serde_json::{json, Value};
use tower::ServiceExt;

const ADMIN_TOKEN: &str = "the admin token of the accounts api test";
const VIEWER_TOKEN: &str = "the-viewer-token-of-the-accounts-test";

fn keyring() -> Keyring {
    let key = FleetKey::new("k1", b"a test fleet secret".to_vec()).unwrap();
    Keyring::new(key, vec![])
}

/// A router on a fresh data directory holding `users` (name, role, password).
fn router(users: &[(&str, Role, &str)], viewer: bool) -> (Router, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let accounts = Users::open(dir.path()).unwrap();
    for (name, role, password) in users {
        accounts
            .add(
                name,
                *role,
                &Password::new(password.to_string()).unwrap(),
                time::OffsetDateTime::now_utc(),
            )
            .unwrap();
    }
    let config = Config {
        data_dir: dir.path().to_path_buf(),
        ..Config::default()
    };
    let state = AppState::open(config, keyring(), Some(ADMIN_TOKEN.to_string()))
        .unwrap()
        .with_viewer_auth(
            viewer
                .then(|| ViewerAuth::new(Some(VIEWER_TOKEN.into()), None))
                .flatten(),
        );
    (app(Arc::new(state)), dir)
}

struct Answer {
    status: StatusCode,
    body: Value,
    session: Option<String>,
}

async fn send(router: &Router, request: Request<Body>) -> Answer {
    let response = router.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let session = response
        .headers()
        .get(header::SET_COOKIE)
        .and_then(|value| value.to_str().ok())
        .and_then(|cookie| cookie.strip_prefix("posmon_session="))
        .map(|rest| rest.split(';').next().unwrap_or_default().to_string())
        .filter(|id| !id.is_empty());
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    Answer {
        status,
        body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        session,
    }
}

/// A request with optional bearer token, session cookie, CSRF token and JSON body.
fn request(
    method: &str,
    path: &str,
    bearer: Option<&str>,
    session: Option<(&str, Option<&str>)>,
    body: Option<Value>,
) -> Request<Body> {
    let mut builder = Request::builder()
        .method(method)
        .uri(path)
        .header(header::HOST, "collector.test");
    if let Some(token) = bearer {
        builder = builder.header(header::AUTHORIZATION, format!("Bearer {token}"));
    }
    if let Some((id, csrf)) = session {
        builder = builder.header(header::COOKIE, format!("posmon_session={id}"));
        if let Some(csrf) = csrf {
            builder = builder.header("x-csrf-token", csrf);
        }
    }
    match body {
        Some(body) => builder
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body.to_string()))
            .unwrap(),
        None => builder.body(Body::empty()).unwrap(),
    }
}

async fn sign_in(router: &Router, name: &str, password: &str) -> (String, String) {
    let form = format!("name={name}&password={password}");
    let answer = send(
        router,
        Request::post("/login")
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Body::from(form))
            .unwrap(),
    )
    .await;
    assert_eq!(answer.status, StatusCode::SEE_OTHER);
    let id = answer.session.unwrap();
    let me = send(
        router,
        request("GET", "/api/v1/me", None, Some((&id, None)), None),
    )
    .await;
    assert_eq!(me.body["name"], name);
    (id, me.body["csrf_token"].as_str().unwrap().to_string())
}

#[tokio::test]
async fn reads_are_open_only_while_no_account_exists() {
    let (open, _dir) = router(&[], false);
    let read = send(&open, request("GET", "/api/v1/fleet", None, None, None)).await;
    assert_eq!(read.status, StatusCode::OK);
    let me = send(&open, request("GET", "/api/v1/me", None, None, None)).await;
    assert_eq!(
        me.body,
        json!({"name": "anonymous", "role": "viewer", "signed_in": false, "csrf_token": null})
    );
    // Anonymous readers change nothing, and are told to sign in (401, not 403).
    let write = send(
        &open,
        request("POST", "/api/v1/probe", None, None, Some(json!({}))),
    )
    .await;
    assert_eq!(write.status, StatusCode::UNAUTHORIZED, "{}", write.body);
    let admin_read = send(
        &open,
        request("GET", "/api/v1/policy/versions", None, None, None),
    )
    .await;
    assert_eq!(
        admin_read.status,
        StatusCode::UNAUTHORIZED,
        "{}",
        admin_read.body
    );
    // The admin token acts as the admin "admin-token".
    let me = send(
        &open,
        request("GET", "/api/v1/me", Some(ADMIN_TOKEN), None, None),
    )
    .await;
    assert_eq!(me.body["name"], "admin-token");
    assert_eq!(me.body["role"], "admin");

    let (closed, _dir) = router(&[("boss", Role::Admin, "admin-password")], false);
    let read = send(&closed, request("GET", "/api/v1/fleet", None, None, None)).await;
    assert_eq!(read.status, StatusCode::UNAUTHORIZED);
    let read = send(
        &closed,
        request("GET", "/api/v1/fleet", Some(ADMIN_TOKEN), None, None),
    )
    .await;
    assert_eq!(read.status, StatusCode::OK);
}

#[tokio::test]
async fn the_viewer_token_reads_and_never_writes() {
    let (router, _dir) = router(&[], true);
    assert_eq!(
        send(&router, request("GET", "/api/v1/fleet", None, None, None))
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );
    let read = send(
        &router,
        request("GET", "/api/v1/fleet", Some(VIEWER_TOKEN), None, None),
    )
    .await;
    assert_eq!(read.status, StatusCode::OK);
    let write = send(
        &router,
        request(
            "POST",
            "/api/v1/probe",
            Some(VIEWER_TOKEN),
            None,
            Some(json!({})),
        ),
    )
    .await;
    assert_eq!(write.status, StatusCode::FORBIDDEN);
    assert!(write.body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("the operator role is needed"));
    let wrong = send(
        &router,
        request("GET", "/api/v1/fleet", Some("pmu_not-a-token"), None, None),
    )
    .await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn sessions_carry_a_csrf_token_and_the_users_api_validates() {
    let (router, _dir) = router(
        &[
            ("boss", Role::Admin, "admin-password"),
            ("li", Role::Operator, "operator-password"),
        ],
        false,
    );
    let (boss, csrf) = sign_in(&router, "boss", "admin-password").await;
    let as_boss =
        |method, path, body| request(method, path, None, Some((&boss, Some(&csrf))), body);
    // Without the token: refused before anything is read.
    let refused = send(
        &router,
        request(
            "POST",
            "/api/v1/users",
            None,
            Some((&boss, None)),
            Some(json!({})),
        ),
    )
    .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    assert_eq!(refused.body["error"]["reason"], "csrf");
    for (body, status, field) in [
        (
            json!({"name": "x y", "role": "viewer", "password": "long enough pass"}),
            StatusCode::BAD_REQUEST,
            "name",
        ),
        (
            json!({"name": "anonymous", "role": "viewer", "password": "long enough pass"}),
            StatusCode::BAD_REQUEST,
            "name",
        ),
        (
            json!({"name": "zhao", "role": "viewer", "password": "short"}),
            StatusCode::BAD_REQUEST,
            "password",
        ),
        (
            json!({"name": "zhao", "role": "root", "password": "long enough pass"}),
            StatusCode::BAD_REQUEST,
            "role",
        ),
        (
            json!({"name": "li", "role": "viewer", "password": "long enough pass"}),
            StatusCode::CONFLICT,
            "name",
        ),
    ] {
        let answer = send(
            &router,
            as_boss("POST", "/api/v1/users", Some(body.clone())),
        )
        .await;
        assert_eq!(answer.status, status, "{body}: {}", answer.body);
        assert_eq!(
            answer.body["error"]["field"], field,
            "{body}: {}",
            answer.body
        );
    }
    let added = send(
        &router,
        as_boss(
            "POST",
            "/api/v1/users",
            Some(json!({"name": "zhao", "role": "operator", "password": "zhao-password"})),
        ),
    )
    .await;
    assert_eq!(added.status, StatusCode::CREATED, "{}", added.body);
    assert_eq!(added.body["role"], "operator");
    let missing = send(
        &router,
        as_boss(
            "PATCH",
            "/api/v1/users/nobody",
            Some(json!({"disabled": true})),
        ),
    )
    .await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);

    // zhao's token is capped at zhao's role, and follows it down.
    let (zhao, zhao_csrf) = sign_in(&router, "zhao", "zhao-password").await;
    let as_zhao = |body| {
        request(
            "POST",
            "/api/v1/me/tokens",
            None,
            Some((&zhao, Some(&zhao_csrf))),
            body,
        )
    };
    let too_high = send(
        &router,
        as_zhao(Some(json!({"label": "x", "role": "admin"}))),
    )
    .await;
    assert_eq!(too_high.status, StatusCode::BAD_REQUEST);
    let token = send(&router, as_zhao(Some(json!({"label": "cron"})))).await;
    assert_eq!(token.status, StatusCode::CREATED, "{}", token.body);
    let token = token.body["token"].as_str().unwrap().to_string();
    let probe = || request("POST", "/api/v1/probe", Some(&token), None, Some(json!({})));
    assert_eq!(send(&router, probe()).await.status, StatusCode::ACCEPTED);
    // A token cannot make tokens: that takes a session.
    let by_token = send(
        &router,
        request(
            "POST",
            "/api/v1/me/tokens",
            Some(&token),
            None,
            Some(json!({"label": "y"})),
        ),
    )
    .await;
    assert_eq!(by_token.status, StatusCode::FORBIDDEN);
    let lowered = send(
        &router,
        as_boss(
            "PATCH",
            "/api/v1/users/zhao",
            Some(json!({"role": "viewer"})),
        ),
    )
    .await;
    assert_eq!(lowered.status, StatusCode::OK, "{}", lowered.body);
    assert_eq!(send(&router, probe()).await.status, StatusCode::FORBIDDEN);
    // Disabled: the session and the token stop at once.
    let disabled = send(
        &router,
        as_boss(
            "PATCH",
            "/api/v1/users/zhao",
            Some(json!({"disabled": true})),
        ),
    )
    .await;
    assert_eq!(disabled.status, StatusCode::OK);
    assert_eq!(
        send(&router, probe()).await.status,
        StatusCode::UNAUTHORIZED
    );
    let me = send(
        &router,
        request("GET", "/api/v1/me", None, Some((&zhao, None)), None),
    )
    .await;
    assert_eq!(me.status, StatusCode::UNAUTHORIZED);
    // Sign-out ends the admin's session.
    let out = send(&router, as_boss("POST", "/api/v1/logout", None)).await;
    assert_eq!(out.status, StatusCode::NO_CONTENT);
    let me = send(
        &router,
        request("GET", "/api/v1/me", None, Some((&boss, None)), None),
    )
    .await;
    assert_eq!(me.status, StatusCode::UNAUTHORIZED);
}
