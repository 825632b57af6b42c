//! The enrollment endpoints exercised in-process: hostile redemptions (oversized, slow,
//! malformed, unknown fields, bad terminal ids, wrong codes) get their status and a field, each
//! spends the failures' budget until everyone waits; redemptions in flight together reach a
//! code no more often than the budget allows; a handful in flight at most; one code redeemed by
//! several requests at once gives exactly one token; the admin endpoints refused without the
//! admin token or with none configured; a revoked terminal gets the token of its current
//! generation.

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
use posmon_collector::http::{app, AppState};
use posmon_protocol::{terminal_token, FleetKey, Keyring};
use serde_json::{json, Value};
use tower::ServiceExt;

const ADMIN: &str = "the admin token of the enrollment api test";

fn keyring() -> Keyring {
    let key = FleetKey::new("k1", b"a test fleet secret".to_vec())
        .unwrap_or_else(|error| panic!("{error}"));
    Keyring::new(key, vec![])
}

fn new_router(admin: Option<&str>) -> (Router, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config {
        data_dir: dir.path().to_path_buf(),
        ..Config::default()
    };
    config.limits.body_read_timeout_seconds = 1;
    let state = AppState::open(config, keyring(), admin.map(str::to_string)).unwrap();
    (app(Arc::new(state)), dir)
}

async fn send(router: &Router, request: Request<Body>) -> (StatusCode, Value, Option<String>) {
    let response = router.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let retry_after = response
        .headers()
        .get(header::RETRY_AFTER)
        .and_then(|value| value.to_str().ok())
        .map(str::to_string);
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        retry_after,
    )
}

fn request(method: &str, path: &str, body: impl Into<Body>, admin: Option<&str>) -> Request<Body> {
    let mut builder = Request::builder()
        .method(method)
        .uri(path)
        .header(header::CONTENT_TYPE, "application/json");
    if let Some(token) = admin {
        builder = builder.header(header::AUTHORIZATION, format!("Bearer {token}"));
    }
    builder.body(body.into()).unwrap()
}

fn redeem(body: impl Into<Body>) -> Request<Body> {
    request("POST", "/api/v1/enroll", body, None)
}

#[tokio::test]
async fn hostile_redemptions_are_refused_and_spend_the_failure_budget() {
    let (router, _dir) = new_router(Some(ADMIN));
    let created = request(
        "POST",
        "/api/v1/enrollments",
        json!({ "terminal_id": "T-1" }).to_string(),
        Some(ADMIN),
    );
    let (status, created, _) = send(&router, created).await;
    assert_eq!(status, StatusCode::OK, "{created}");
    let code = created["code"].as_str().unwrap().to_string();

    let cases: Vec<(Body, StatusCode, &str, Option<&str>)> = vec![
        (
            Body::from(vec![b' '; 2048]),
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            None,
        ),
        (
            Body::from("{"),
            StatusCode::BAD_REQUEST,
            "malformed_json",
            None,
        ),
        (
            Body::from(json!({ "terminal_id": "T-1", "code": code, "extra": 1 }).to_string()),
            StatusCode::BAD_REQUEST,
            "invalid_field",
            Some("extra"),
        ),
        (
            Body::from(json!({ "terminal_id": "T 1", "code": code }).to_string()),
            StatusCode::BAD_REQUEST,
            "invalid_field",
            Some("terminal_id"),
        ),
        (
            Body::from(json!({ "terminal_id": "T-1", "code": "x".repeat(10_000) }).to_string()),
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            None,
        ),
        (
            Body::from(json!({ "terminal_id": "T-1", "code": "not a code" }).to_string()),
            StatusCode::FORBIDDEN,
            "invalid_code",
            Some("code"),
        ),
        (
            Body::from(json!({ "terminal_id": "T-2", "code": code }).to_string()),
            StatusCode::FORBIDDEN,
            "invalid_code",
            Some("code"),
        ),
    ];
    for (body, status, reason, field) in cases {
        let (got, answer, _) = send(&router, redeem(body)).await;
        assert_eq!(got, status, "{answer}");
        assert_eq!(answer["error"]["reason"], reason, "{answer}");
        if let Some(field) = field {
            assert_eq!(answer["error"]["field"], field, "{answer}");
        }
    }
    // Seven failures spent of ten; three more, then everyone waits, the right code too.
    for _ in 0..3 {
        let (got, _, _) = send(&router, redeem("{")).await;
        assert_eq!(got, StatusCode::BAD_REQUEST);
    }
    let right = json!({ "terminal_id": "T-1", "code": code }).to_string();
    let (got, answer, retry_after) = send(&router, redeem(right.clone())).await;
    assert_eq!(got, StatusCode::TOO_MANY_REQUESTS, "{answer}");
    assert_eq!(answer["error"]["reason"], "rate_limited", "{answer}");
    let seconds: u64 = retry_after.unwrap().parse().unwrap();
    assert!((1..=2).contains(&seconds), "{seconds}");
    // The refusal spent nothing: once a token is back, the code works.
    tokio::time::sleep(std::time::Duration::from_secs(seconds)).await;
    let (got, answer, _) = send(&router, redeem(right)).await;
    assert_eq!(got, StatusCode::OK, "{answer}");
    assert_eq!(
        answer["token"].as_str(),
        Some(terminal_token(keyring().current(), "T-1").as_str())
    );
    assert_eq!(
        (answer["key_id"].as_str(), answer["generation"].as_u64()),
        (Some("k1"), Some(0))
    );
}

/// A redemption whose body is held back: the first bytes are sent, the rest when `release`
/// is called with them.
struct HeldRedemption {
    sender: tokio::sync::mpsc::Sender<Result<Vec<u8>, std::io::Error>>,
    answer: tokio::task::JoinHandle<(StatusCode, Value, Option<String>)>,
}

impl HeldRedemption {
    fn start(router: &Router, first: &str) -> Self {
        let (sender, receiver) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(1);
        sender.try_send(Ok(first.as_bytes().to_vec())).unwrap();
        let body = Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(receiver));
        let router = router.clone();
        let answer = tokio::spawn(async move { send(&router, redeem(body)).await });
        HeldRedemption { sender, answer }
    }

    /// Sends the rest of the body (unless the answer came already) and waits for the answer.
    async fn release(self, rest: &str) -> (StatusCode, Value, Option<String>) {
        let _ = self.sender.send(Ok(rest.as_bytes().to_vec())).await;
        drop(self.sender);
        self.answer.await.unwrap()
    }
}

/// A new code for `terminal_id`.
async fn create_code(router: &Router, terminal_id: &str) -> String {
    let created = request(
        "POST",
        "/api/v1/enrollments",
        json!({ "terminal_id": terminal_id }).to_string(),
        Some(ADMIN),
    );
    let (status, created, _) = send(router, created).await;
    assert_eq!(status, StatusCode::OK, "{created}");
    created["code"].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redemptions_in_flight_together_reach_a_code_no_more_often_than_the_budget_allows() {
    let (router, _dir) = new_router(Some(ADMIN));
    let code = create_code(&router, "T-1").await;
    // Eight failures of ten: two tokens left (and a fraction, refilled meanwhile).
    for _ in 0..8 {
        assert_eq!(send(&router, redeem("{")).await.0, StatusCode::BAD_REQUEST);
    }
    // Four slow wrong redemptions at once, none failed yet when the others start: only two
    // may go on to a code; the others wait at once, before their bodies are read.
    let held: Vec<HeldRedemption> = (0..4)
        .map(|_| HeldRedemption::start(&router, "{\"terminal_id\": \"T-1\", "))
        .collect();
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let mut answers = Vec::new();
    for (index, redemption) in held.into_iter().enumerate() {
        let rest = format!("\"code\": \"0000-0000-0000-{index:04}\"}}");
        answers.push(redemption.release(&rest).await);
    }
    let checked = answers
        .iter()
        .filter(|(status, answer, _)| {
            *status == StatusCode::FORBIDDEN && answer["error"]["reason"] == "invalid_code"
        })
        .count();
    let waited = answers
        .iter()
        .filter(|(status, _, retry_after)| {
            *status == StatusCode::TOO_MANY_REQUESTS && retry_after.is_some()
        })
        .count();
    assert_eq!((checked, waited), (2, 2), "{answers:?}");
    // The right code waits too, until a token is back; then it works and costs nothing.
    let right = json!({ "terminal_id": "T-1", "code": code }).to_string();
    let (got, _, retry_after) = send(&router, redeem(right.clone())).await;
    assert_eq!(got, StatusCode::TOO_MANY_REQUESTS);
    let seconds: u64 = retry_after.unwrap().parse().unwrap();
    tokio::time::sleep(std::time::Duration::from_secs(seconds)).await;
    let (got, answer, _) = send(&router, redeem(right)).await;
    assert_eq!(got, StatusCode::OK, "{answer}");
    let (got, answer, _) = send(&router, redeem("{")).await;
    assert_eq!(
        got,
        StatusCode::BAD_REQUEST,
        "the success gave its token back: {answer}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_code_redeemed_by_several_requests_at_once_gives_exactly_one_token() {
    let (router, _dir) = new_router(Some(ADMIN));
    let code = create_code(&router, "T-1").await;
    // REDEMPTIONS_IN_FLIGHT_MAX: as many as are let in at once.
    let in_flight = 4;
    // All of them admitted and waiting for the rest of their bodies, then released together.
    let held: Vec<HeldRedemption> = (0..in_flight)
        .map(|_| HeldRedemption::start(&router, "{\"terminal_id\": \"T-1\", "))
        .collect();
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let rest = format!("\"code\": \"{code}\"}}");
    let answers = join_all(held.into_iter().map(|redemption| {
        let rest = rest.clone();
        tokio::spawn(async move { redemption.release(&rest).await })
    }))
    .await;
    let tokens: Vec<&str> = answers
        .iter()
        .filter(|(status, _, _)| *status == StatusCode::OK)
        .filter_map(|(_, answer, _)| answer["token"].as_str())
        .collect();
    assert_eq!(
        tokens,
        vec![terminal_token(keyring().current(), "T-1").as_str()],
        "{answers:?}"
    );
    let refused = answers
        .iter()
        .filter(|(status, answer, _)| {
            *status == StatusCode::FORBIDDEN && answer["error"]["reason"] == "invalid_code"
        })
        .count();
    assert_eq!(refused, in_flight - 1, "{answers:?}");
}

/// Waits for every task, in order.
async fn join_all<T: Send + 'static>(
    tasks: impl Iterator<Item = tokio::task::JoinHandle<T>>,
) -> Vec<T> {
    let tasks: Vec<_> = tasks.collect();
    let mut results = Vec::new();
    for task in tasks {
        results.push(task.await.unwrap());
    }
    results
}

#[tokio::test]
async fn only_a_few_redemptions_are_in_flight_and_a_slow_body_is_cut_off() {
    let (router, _dir) = new_router(Some(ADMIN));
    let mut senders = Vec::new();
    let mut waiting = Vec::new();
    for _ in 0..4 {
        let (sender, receiver) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(1);
        sender.try_send(Ok(b"{\"terminal_id\":".to_vec())).unwrap();
        senders.push(sender);
        let body = Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(receiver));
        let router = router.clone();
        waiting.push(tokio::spawn(
            async move { send(&router, redeem(body)).await },
        ));
    }
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let (got, answer, retry_after) = send(&router, redeem("{}")).await;
    assert_eq!(got, StatusCode::SERVICE_UNAVAILABLE, "{answer}");
    assert_eq!(retry_after.as_deref(), Some("1"));
    for stalled in waiting {
        let (got, answer, _) = stalled.await.unwrap();
        assert_eq!(got, StatusCode::REQUEST_TIMEOUT, "{answer}");
    }
    drop(senders);
}

#[tokio::test]
async fn the_admin_endpoints_need_the_admin_token() {
    let create = |admin: Option<&str>| {
        request(
            "POST",
            "/api/v1/enrollments",
            json!({ "terminal_id": "T-1" }).to_string(),
            admin,
        )
    };
    let (router, _dir) = new_router(None);
    let (got, answer, _) = send(&router, create(Some(ADMIN))).await;
    assert_eq!(got, StatusCode::UNAUTHORIZED, "{answer}");
    assert_eq!(answer["error"]["reason"], "invalid_token", "{answer}");

    let (router, _dir) = new_router(Some(ADMIN));
    for (method, path) in [
        ("POST", "/api/v1/enrollments"),
        ("GET", "/api/v1/enrollments"),
        ("DELETE", "/api/v1/enrollments/T-1"),
    ] {
        let body = json!({ "terminal_id": "T-1" }).to_string();
        let (got, _, _) = send(&router, request(method, path, body.clone(), None)).await;
        assert_eq!(got, StatusCode::UNAUTHORIZED, "{method} {path}");
        let wrong = request(method, path, body, Some("not the admin token at all"));
        assert_eq!(send(&router, wrong).await.0, StatusCode::UNAUTHORIZED);
    }
    let (got, answer, _) = send(
        &router,
        request(
            "POST",
            "/api/v1/enrollments",
            json!({ "terminal_id": "T-1", "expires_in_seconds": 30 * 86400 + 1 }).to_string(),
            Some(ADMIN),
        ),
    )
    .await;
    assert_eq!(
        (got, answer["error"]["field"].as_str()),
        (StatusCode::BAD_REQUEST, Some("expires_in_seconds")),
        "{answer}"
    );
    let (got, answer, _) = send(
        &router,
        request(
            "DELETE",
            "/api/v1/enrollments/T%201",
            Body::empty(),
            Some(ADMIN),
        ),
    )
    .await;
    assert_eq!(
        (got, answer["error"]["field"].as_str()),
        (StatusCode::BAD_REQUEST, Some("terminal_id")),
        "{answer}"
    );
}

#[tokio::test]
async fn a_revoked_terminal_enrolls_with_its_current_generation() {
    let (router, _dir) = new_router(Some(ADMIN));
    let revoke = request(
        "POST",
        "/api/v1/terminals/T-1/revoke",
        Body::empty(),
        Some(ADMIN),
    );
    let (status, revoked, _) = send(&router, revoke).await;
    assert_eq!(
        (status, revoked["generation"].as_u64()),
        (StatusCode::OK, Some(1))
    );
    let create = request(
        "POST",
        "/api/v1/enrollments",
        json!({ "terminal_id": "T-1" }).to_string(),
        Some(ADMIN),
    );
    let (_, created, _) = send(&router, create).await;
    let code = created["code"].as_str().unwrap();
    let (status, enrolled, _) = send(
        &router,
        redeem(json!({ "terminal_id": "T-1", "code": code }).to_string()),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{enrolled}");
    assert_eq!(enrolled["generation"], 1, "{enrolled}");
    let current = posmon_protocol::terminal_token_at(keyring().current(), "T-1", 1);
    assert_eq!(enrolled["token"].as_str(), Some(current.as_str()));
}
