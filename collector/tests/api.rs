//! The collector's router exercised in-process: every kind of bad input gets the right status
//! and an error naming the field and the reason, and the collector keeps serving and counts it.

#![allow(
    clippy::unwrap_used,
    reason = "test helpers: a failed unwrap fails the test, as it should"
)]

use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use axum::Router;
use http_body_util::BodyExt;
use posmon_collector::config::{Config, VersionRule};
use posmon_collector::http::{app, AppState};
use posmon_protocol::{terminal_token, FleetKey, Keyring};
use serde_json::{json, Value};
use tower::ServiceExt;

fn keyring() -> Keyring {
    let key = FleetKey::new("k1", b"a test fleet secret".to_vec())
        .unwrap_or_else(|error| panic!("{error}"));
    Keyring::new(key, vec![])
}

fn token(terminal_id: &str) -> String {
    terminal_token(keyring().current(), terminal_id)
}

/// The in-process router over a fresh data directory (kept alive by the returned guard).
fn router() -> (Router, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap_or_else(|error| panic!("{error}"));
    let mut config = Config {
        data_dir: dir.path().to_path_buf(),
        ..Config::default()
    };
    config.limits.max_body_bytes = 4096;
    config.limits.max_reports_per_request = 3;
    config.version_policy.push(VersionRule {
        component: "pos_app".into(),
        model: None,
        minimum: "2.10".into(),
        latest: None,
        latest_released_on: None,
        update_within_days: 0,
    });
    let state = AppState::open(config, keyring(), None).unwrap_or_else(|error| panic!("{error}"));
    (app(Arc::new(state)), dir)
}

fn report(terminal_id: &str, sequence: u64) -> Value {
    json!({
        "schema_version": 1,
        "terminal_id": terminal_id,
        "sequence": sequence,
        "observed_at": yesterday(),
        "agent_version": "0.1.0",
        "labels": { "region": "cn-east", "model": "A920" },
        "software": { "pos_app": { "version": "2.9.1" } },
        "probes": [ { "target": "payment-host", "address": "127.0.0.1:9",
            "stages": [ { "stage": "tcp", "status": "failed", "error": "timeout" } ] } ]
    })
}

/// Yesterday at 02:00 UTC: inside the collector's window of terminal times whenever the test
/// runs.
fn yesterday() -> String {
    let today = time::OffsetDateTime::now_utc().date();
    format!("{}T02:00:00Z", today.previous_day().unwrap_or(today))
}

fn batch(reports: Vec<Value>) -> String {
    json!({ "reports": reports }).to_string()
}

async fn send(router: &Router, request: Request<Body>) -> (StatusCode, Value, String) {
    let response = router
        .clone()
        .oneshot(request)
        .await
        .unwrap_or_else(|error| panic!("{error}"));
    let status = response.status();
    let bytes = response
        .into_body()
        .collect()
        .await
        .unwrap_or_else(|error| panic!("{error}"))
        .to_bytes();
    let text = String::from_utf8_lossy(&bytes).to_string();
    let value = serde_json::from_str(&text).unwrap_or(Value::Null);
    (status, value, text)
}

fn post(body: impl Into<Body>, token: Option<&str>) -> Request<Body> {
    let mut builder =
        Request::post("/api/v1/reports").header(header::CONTENT_TYPE, "application/json");
    if let Some(token) = token {
        builder = builder.header(header::AUTHORIZATION, format!("Bearer {token}"));
    }
    builder
        .body(body.into())
        .unwrap_or_else(|error| panic!("{error}"))
}

fn get(path: &str) -> Request<Body> {
    Request::get(path)
        .body(Body::empty())
        .unwrap_or_else(|error| panic!("{error}"))
}

/// Sends `body` with T-1's token and checks status, reason, field and a fragment of the message.
async fn check(
    router: &Router,
    request: Request<Body>,
    status: StatusCode,
    reason: &str,
    field: Option<&str>,
    fragment: &str,
) {
    let (got_status, body, text) = send(router, request).await;
    assert_eq!(got_status, status, "{text}");
    assert_eq!(body["error"]["reason"], reason, "{text}");
    assert_eq!(body["error"]["field"].as_str(), field, "{text}");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(fragment),
        "{message:?} should contain {fragment:?}"
    );
}

#[tokio::test]
async fn a_valid_batch_is_applied_once_and_diagnosed() {
    let (router, _dir) = router();
    let token = token("T-1");
    let body = batch(vec![report("T-1", 1), report("T-1", 2)]);
    let (status, ack, text) = send(&router, post(body.clone(), Some(&token))).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    assert_eq!(ack["acknowledged_sequence"], 2);
    assert_eq!(ack["terminal_id"], "T-1");
    assert!(ack["collector_time"].is_string());

    // The same batch again is acknowledged but not applied twice.
    let (status, ack, _) = send(&router, post(body, Some(&token))).await;
    assert_eq!(
        (status, ack["acknowledged_sequence"].as_u64()),
        (StatusCode::OK, Some(2))
    );
    let (_, metrics, text) = send(&router, get("/metrics")).await;
    assert_eq!(metrics, Value::Null);
    assert!(
        text.contains("posmon_ingest_reports_total{result=\"applied\"} 2"),
        "{text}"
    );
    assert!(
        text.contains("posmon_ingest_reports_total{result=\"duplicate\"} 2"),
        "{text}"
    );
    assert!(
        text.contains("posmon_fleet_terminals{readiness=\"cannot_pay\"} 1"),
        "{text}"
    );
    assert!(
        !text.contains("terminal_id=\"T-1\""),
        "per-terminal series are off by default"
    );

    let (_, findings, _) = send(&router, get("/api/v1/findings?terminal=T-1")).await;
    let mut codes: Vec<&str> = findings["findings"]
        .as_array()
        .map(|list| list.iter().filter_map(|f| f["code"].as_str()).collect())
        .unwrap_or_default();
    codes.sort_unstable();
    assert_eq!(codes, ["env.network.host_unreachable", "outdated.pos_app"]);
    let (_, only_outdated, _) = send(
        &router,
        get("/api/v1/findings?category=outdated&region=cn-east"),
    )
    .await;
    assert_eq!(only_outdated["findings"].as_array().map(Vec::len), Some(1));
    assert_eq!(only_outdated["findings"][0]["party"], "software_vendor");
    assert_eq!(
        only_outdated["findings"][0]["evidence"][0]["threshold"],
        ">= 2.10"
    );

    let (status, terminal, _) = send(&router, get("/api/v1/terminals/T-1")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(terminal["readiness"], "cannot_pay");
    assert_eq!(terminal["open_findings"].as_array().map(Vec::len), Some(2));
    assert_eq!(terminal["sequence"], 2);
    assert_eq!(terminal["versions"]["pos_app"], "2.9.1");
    assert_eq!(terminal["targets"][0]["failed_stage"], "tcp");
    let (_, list, _) = send(&router, get("/api/v1/terminals")).await;
    assert_eq!(list["total"], 1);
    assert_eq!(list["terminals"][0]["terminal_id"], "T-1");
}

#[tokio::test]
async fn each_bad_input_gets_a_clear_error() {
    let (router, _dir) = router();
    let token = token("T-1");
    let ok = || batch(vec![report("T-1", 1)]);
    let with = |change: &dyn Fn(&mut Value)| {
        let mut value = report("T-1", 1);
        change(&mut value);
        batch(vec![value])
    };
    use StatusCode as S;

    check(
        &router,
        post("{\"reports\": [", Some(&token)),
        S::BAD_REQUEST,
        "malformed_json",
        None,
        "EOF while parsing",
    )
    .await;
    check(
        &router,
        post("not json", Some(&token)),
        S::BAD_REQUEST,
        "malformed_json",
        None,
        "expected",
    )
    .await;
    check(
        &router,
        post(format!("{} trailing", ok()), Some(&token)),
        S::BAD_REQUEST,
        "malformed_json",
        None,
        "trailing characters",
    )
    .await;
    check(
        &router,
        post(with(&|r| r["sequence"] = json!("seven")), Some(&token)),
        S::BAD_REQUEST,
        "invalid_field",
        Some("reports[0].sequence"),
        "invalid type: string \"seven\", expected u64",
    )
    .await;
    check(
        &router,
        post(
            with(&|r| r["observed_at"] = json!("yesterday")),
            Some(&token),
        ),
        S::BAD_REQUEST,
        "invalid_field",
        Some("reports[0].observed_at"),
        "",
    )
    .await;
    check(
        &router,
        post(
            with(&|r| {
                r.as_object_mut().map(|o| o.remove("terminal_id"));
            }),
            Some(&token),
        ),
        S::BAD_REQUEST,
        "invalid_field",
        Some("reports[0]"),
        "missing field `terminal_id`",
    )
    .await;
    check(
        &router,
        post(with(&|r| r["schema_version"] = json!(2)), Some(&token)),
        S::BAD_REQUEST,
        "unsupported_schema_version",
        Some("reports[0].schema_version"),
        "unsupported schema version 2",
    )
    .await;
    check(
        &router,
        post(
            with(&|r| {
                r["schema_version"] = json!(3);
                r["probes"] = json!("a v3 shape");
            }),
            Some(&token),
        ),
        S::BAD_REQUEST,
        "unsupported_schema_version",
        Some("reports[0].schema_version"),
        "unsupported schema version 3",
    )
    .await;
    check(
        &router,
        post(ok(), None),
        S::UNAUTHORIZED,
        "missing_token",
        None,
        "missing Authorization",
    )
    .await;
    check(
        &router,
        post(ok(), Some("k1.AAAA")),
        S::FORBIDDEN,
        "wrong_terminal",
        None,
        "not valid for terminal \"T-1\"",
    )
    .await;
    check(
        &router,
        post(ok(), Some("garbage")),
        S::UNAUTHORIZED,
        "invalid_token",
        None,
        "malformed",
    )
    .await;
    check(
        &router,
        post(ok(), Some("k9.AAAA")),
        S::UNAUTHORIZED,
        "invalid_token",
        None,
        "key \"k9\"",
    )
    .await;
    // A token of one terminal used for another.
    check(
        &router,
        post(ok(), Some(&self::token("T-2"))),
        S::FORBIDDEN,
        "wrong_terminal",
        None,
        "not valid for terminal \"T-1\"",
    )
    .await;
    check(
        &router,
        post(
            batch(vec![report("T-1", 1), report("T-2", 1)]),
            Some(&token),
        ),
        S::BAD_REQUEST,
        "invalid_field",
        Some("reports[1].terminal_id"),
        "one terminal",
    )
    .await;
    check(
        &router,
        post(
            format!("{{\"reports\": [], \"pad\": \"{}\"}}", "x".repeat(5000)),
            Some(&token),
        ),
        S::PAYLOAD_TOO_LARGE,
        "body_too_large",
        None,
        "limit of 4096 bytes",
    )
    .await;
    check(
        &router,
        post(
            batch(vec![
                report("T-1", 1),
                report("T-1", 2),
                report("T-1", 3),
                report("T-1", 4),
            ]),
            Some(&token),
        ),
        S::BAD_REQUEST,
        "invalid_field",
        Some("reports"),
        "too many reports (4 > 3)",
    )
    .await;
    check(
        &router,
        post(
            with(&|r| {
                r["labels"]["extra"] = json!((0..17)
                    .map(|i| (format!("k{i}"), json!("v")))
                    .collect::<serde_json::Map<_, _>>())
            }),
            Some(&token),
        ),
        S::BAD_REQUEST,
        "invalid_field",
        Some("reports[0].labels.extra"),
        "too many labels (17 > 16)",
    )
    .await;
    check(
        &router,
        post(
            with(&|r| r["probes"] = json!(vec![r["probes"][0].clone(); 33])),
            Some(&token),
        ),
        S::BAD_REQUEST,
        "invalid_field",
        Some("reports[0].probes"),
        "too many entries (33 > 32)",
    )
    .await;
    check(
        &router,
        post(
            with(&|r| r["labels"]["merchant"] = json!("m".repeat(129))),
            Some(&token),
        ),
        S::BAD_REQUEST,
        "invalid_field",
        Some("reports[0].labels.merchant"),
        "too long (129 characters > 128)",
    )
    .await;
    check(
        &router,
        post(
            with(&|r| r["terminal_id"] = json!("T-1/../../etc")),
            Some(&token),
        ),
        S::BAD_REQUEST,
        "invalid_field",
        Some("reports[0].terminal_id"),
        "not allowed",
    )
    .await;
    let text_plain = Request::post("/api/v1/reports")
        .header(header::CONTENT_TYPE, "text/plain")
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .body(Body::from(ok()))
        .unwrap_or_else(|error| panic!("{error}"));
    check(
        &router,
        text_plain,
        S::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
        None,
        "application/json",
    )
    .await;
    check(
        &router,
        get("/api/v1/findings?colour=red"),
        S::BAD_REQUEST,
        "bad_query",
        Some("colour"),
        "unknown query parameter",
    )
    .await;
    check(
        &router,
        get("/api/v1/terminals?limit=many"),
        S::BAD_REQUEST,
        "bad_query",
        Some("limit"),
        "whole number",
    )
    .await;
    check(
        &router,
        get("/api/v1/terminals/T-404"),
        S::NOT_FOUND,
        "not_found",
        Some("terminal_id"),
        "T-404",
    )
    .await;

    // Still serving, and every rejection counted by reason.
    let (status, _, _) = send(&router, post(ok(), Some(&token))).await;
    assert_eq!(status, StatusCode::OK);
    let (_, _, metrics) = send(&router, get("/metrics")).await;
    for (reason, count) in [
        ("malformed_json", 3),
        ("invalid_field", 9),
        ("unsupported_schema_version", 2),
        ("missing_token", 1),
        ("invalid_token", 2),
        ("wrong_terminal", 2),
        ("body_too_large", 1),
        ("unsupported_media_type", 1),
    ] {
        let line = format!("posmon_ingest_rejected_requests_total{{reason=\"{reason}\"}} {count}");
        assert!(metrics.contains(&line), "missing {line:?} in\n{metrics}");
    }
}

#[tokio::test]
async fn a_chunked_body_over_the_limit_is_refused() {
    let (router, _dir) = router();
    let chunks = futures_stream(vec![vec![b' '; 3000], vec![b' '; 3000]]);
    let request = Request::post("/api/v1/reports")
        .header(header::AUTHORIZATION, format!("Bearer {}", token("T-1")))
        .body(Body::from_stream(chunks))
        .unwrap_or_else(|error| panic!("{error}"));
    check(
        &router,
        request,
        StatusCode::PAYLOAD_TOO_LARGE,
        "body_too_large",
        None,
        "4096",
    )
    .await;
}

fn futures_stream(
    chunks: Vec<Vec<u8>>,
) -> impl futures_core::Stream<Item = Result<Vec<u8>, std::io::Error>> {
    tokio_stream::iter(chunks.into_iter().map(Ok))
}

#[tokio::test]
async fn health_and_unknown_paths() {
    let (router, _dir) = router();
    let (status, body, _) = send(&router, get("/healthz")).await;
    assert_eq!(
        (status, body["status"].as_str()),
        (StatusCode::OK, Some("ok"))
    );
    check(
        &router,
        get("/nope"),
        StatusCode::NOT_FOUND,
        "not_found",
        None,
        "no such endpoint",
    )
    .await;
}

#[tokio::test]
async fn every_kind_of_finding_is_named_by_its_code() {
    let (router, _dir) = router();
    let (status, body, text) = send(&router, get("/api/v1/kinds")).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    let kinds = body["kinds"].as_array().cloned().unwrap_or_default();
    assert_eq!(kinds.len(), posmon_diagnosis::all_kinds().count(), "{text}");
    let outdated = kinds
        .iter()
        .find(|kind| kind["code"] == "outdated.pos_app")
        .unwrap_or_else(|| panic!("{text}"));
    assert_eq!(outdated["title"]["en"], "POS application outdated");
    assert_eq!(outdated["title"]["zh-CN"], "POS 应用版本过旧");
    assert_eq!(outdated["party"], "software_vendor");
    assert_eq!(outdated["category"], "outdated");
    check(
        &router,
        get("/api/v1/kinds?lang=en"),
        StatusCode::BAD_REQUEST,
        "bad_query",
        Some("lang"),
        "unknown query parameter",
    )
    .await;
}

#[tokio::test]
async fn the_version_policy_is_read_and_replaced_with_the_admin_token_only() {
    let dir = tempfile::tempdir().unwrap();
    let config = Config {
        data_dir: dir.path().to_path_buf(),
        ..Config::default()
    };
    let admin = "an admin token for tests";
    let open = |token: Option<&str>| {
        let state = AppState::open(config.clone(), keyring(), token.map(str::to_string)).unwrap();
        app(Arc::new(state))
    };
    let request = |method: &str, token: Option<&str>, body: &str| {
        let mut builder = Request::builder()
            .method(method)
            .uri("/api/v1/policy/versions")
            .header(header::CONTENT_TYPE, "application/json");
        if let Some(token) = token {
            builder = builder.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        builder.body(Body::from(body.to_string())).unwrap()
    };
    // Without an admin token configured, a token is just not valid.
    let disabled = open(None);
    check(
        &disabled,
        request("GET", Some(admin), ""),
        StatusCode::UNAUTHORIZED,
        "invalid_token",
        None,
        "not a valid token",
    )
    .await;

    let router = open(Some(admin));
    check(
        &router,
        request("GET", None, ""),
        StatusCode::UNAUTHORIZED,
        "missing_token",
        None,
        "bearer token",
    )
    .await;
    check(
        &router,
        request("GET", Some("not the admin token!"), ""),
        StatusCode::UNAUTHORIZED,
        "invalid_token",
        None,
        "admin",
    )
    .await;
    check(
        &router,
        request(
            "PUT",
            Some(admin),
            r#"{"rules":[{"component":"printer","minimum":"1"}]}"#,
        ),
        StatusCode::BAD_REQUEST,
        "invalid_field",
        Some("rules[0].component"),
        "unknown component",
    )
    .await;
    check(
        &router,
        request(
            "PUT",
            Some(admin),
            r#"{"rules":[{"component":"pos_app","minimum":"1","latest_released_on":"May"}]}"#,
        ),
        StatusCode::BAD_REQUEST,
        "invalid_field",
        Some("rules[0].latest_released_on"),
        "YYYY-MM-DD",
    )
    .await;
    let policy = r#"{"rules":[{"component":"pos_app","minimum":"3.0","latest":"3.2","latest_released_on":"2026-11-01","update_within_days":7}]}"#;
    let (status, _, text) = send(&router, request("PUT", Some(admin), policy)).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    let (_, read, _) = send(&router, request("GET", Some(admin), "")).await;
    assert_eq!(read["rules"][0]["latest_released_on"], "2026-11-01");

    // The new policy applies to the next report; the 2.9.1 of `report` is now below 3.0.
    let (status, _, _) = send(
        &router,
        post(batch(vec![report("T-1", 1)]), Some(&token("T-1"))),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (_, outdated, _) = send(&router, get("/api/v1/findings?code=outdated.pos_app")).await;
    assert_eq!(
        outdated["findings"][0]["evidence"][0]["threshold"],
        ">= 3.0"
    );

    // It is stored: a collector opened on the same data directory has it.
    let reopened = open(Some(admin));
    let (_, read, _) = send(&reopened, request("GET", Some(admin), "")).await;
    assert_eq!(read["rules"][0]["minimum"], "3.0");
}

/// A new version policy re-judges every terminal at once: its outdated findings open and close
/// without a new report, and its versions' compliance follows (`no_rule` where no rule
/// applies).
#[tokio::test]
async fn a_new_version_policy_applies_to_every_terminal_without_a_report() {
    let (router, _dir) = router_with_admin();
    let mut first = report("T-1", 1);
    first["software"]["firmware"] = json!({ "version": "1.0" });
    let (status, _, text) = send(&router, post(batch(vec![first]), Some(&token("T-1")))).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    let compliance = |router: Router| async move {
        let (_, versions, text) = send(&router, get("/api/v1/terminals/T-1/versions")).await;
        let of = |component: &str| {
            versions["components"]
                .as_array()
                .and_then(|components| {
                    components
                        .iter()
                        .find(|c| c["component"] == component)
                        .map(|c| c["compliance"].as_str().unwrap_or_default().to_string())
                })
                .unwrap_or_else(|| panic!("no {component} in {text}"))
        };
        (of("pos_app"), of("firmware"))
    };
    let open_codes = |router: Router| async move {
        let (_, findings, _) = send(&router, get("/api/v1/findings?terminal=T-1")).await;
        let mut codes: Vec<String> = findings["findings"]
            .as_array()
            .map(|list| {
                list.iter()
                    .filter_map(|f| f["code"].as_str())
                    .filter(|code| code.starts_with("outdated."))
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default();
        codes.sort();
        codes
    };
    assert_eq!(open_codes(router.clone()).await, ["outdated.pos_app"]);
    assert_eq!(
        compliance(router.clone()).await,
        ("outdated".into(), "no_rule".into())
    );

    let put = |rules: Value| {
        Request::put("/api/v1/policy/versions")
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::AUTHORIZATION, format!("Bearer {ADMIN}"))
            .body(Body::from(json!({ "rules": rules }).to_string()))
            .unwrap_or_else(|error| panic!("{error}"))
    };
    // The minimum drops below the terminal's 2.9.1: the finding closes, no report needed.
    let (status, _, text) = send(
        &router,
        put(json!([{ "component": "pos_app", "minimum": "2.0" }])),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{text}");
    assert!(open_codes(router.clone()).await.is_empty());
    assert_eq!(
        compliance(router.clone()).await,
        ("current".into(), "no_rule".into())
    );
    let (_, detail, text) = send(&router, get("/api/v1/terminals/T-1")).await;
    assert!(
        detail["findings_history"]
            .as_array()
            .is_some_and(|history| history
                .iter()
                .any(|f| f["code"] == "outdated.pos_app" && f["closed_at"].is_string())),
        "{text}"
    );

    // A firmware rule above its 1.0: the firmware finding opens, and the pos_app rule is gone.
    let (status, _, text) = send(
        &router,
        put(json!([{ "component": "firmware", "minimum": "2.0" }])),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{text}");
    assert_eq!(open_codes(router.clone()).await, ["outdated.firmware"]);
    assert_eq!(
        compliance(router.clone()).await,
        ("no_rule".into(), "outdated".into())
    );

    // A heartbeat repeats the judgement under the new policy, not the old one.
    let mut heartbeat = report("T-1", 2);
    heartbeat["software"]["firmware"] = json!({ "version": "1.0" });
    heartbeat["unchanged"] = json!(["measurements"]);
    heartbeat["probes"] = json!([]);
    let (status, _, text) = send(&router, post(batch(vec![heartbeat]), Some(&token("T-1")))).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    assert_eq!(open_codes(router.clone()).await, ["outdated.firmware"]);
}

const ADMIN: &str = "an admin token for tests";

/// [`router`] with the admin token [`ADMIN`].
fn router_with_admin() -> (Router, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap_or_else(|error| panic!("{error}"));
    let mut config = Config {
        data_dir: dir.path().to_path_buf(),
        ..Config::default()
    };
    config.version_policy.push(VersionRule {
        component: "pos_app".into(),
        model: None,
        minimum: "2.10".into(),
        latest: None,
        latest_released_on: None,
        update_within_days: 0,
    });
    let state = AppState::open(config, keyring(), Some(ADMIN.to_string()))
        .unwrap_or_else(|error| panic!("{error}"));
    (app(Arc::new(state)), dir)
}

fn compressed_post(body: Vec<u8>, encoding: &str, terminal_id: &str) -> Request<Body> {
    Request::post("/api/v1/reports")
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::CONTENT_ENCODING, encoding)
        .header(
            header::AUTHORIZATION,
            format!("Bearer {}", token(terminal_id)),
        )
        .body(Body::from(body))
        .unwrap()
}

fn gzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(data).unwrap();
    encoder.finish().unwrap()
}

#[tokio::test]
async fn gzip_and_zstd_bodies_are_accepted_within_the_decompressed_cap() {
    let (router, _dir) = router();
    let body = batch(vec![report("T-1", 1)]);
    let (status, ack, text) = send(
        &router,
        compressed_post(gzip(body.as_bytes()), "gzip", "T-1"),
    )
    .await;
    assert_eq!(
        (status, ack["acknowledged_sequence"].as_u64()),
        (StatusCode::OK, Some(1)),
        "{text}"
    );
    let body = batch(vec![report("T-1", 2)]);
    let zstd = zstd::encode_all(body.as_bytes(), 3).unwrap();
    let (status, ack, text) = send(&router, compressed_post(zstd, "zstd", "T-1")).await;
    assert_eq!(
        (status, ack["acknowledged_sequence"].as_u64()),
        (StatusCode::OK, Some(2)),
        "{text}"
    );

    // 4 KiB is the limit: a small gzip body that inflates past it is refused.
    let mut padded = report("T-1", 3);
    padded["agent_version"] = json!("0.1.0");
    let bomb = format!(
        "{{\"reports\":[{padded}],\"pad\":\"{}\"}}",
        " ".repeat(100_000)
    );
    let compressed = gzip(bomb.as_bytes());
    assert!(compressed.len() < 4096);
    check(
        &router,
        compressed_post(compressed, "gzip", "T-1"),
        StatusCode::PAYLOAD_TOO_LARGE,
        "body_too_large",
        None,
        "limit of 4096 bytes",
    )
    .await;
    check(
        &router,
        compressed_post(b"not gzip".to_vec(), "gzip", "T-1"),
        StatusCode::BAD_REQUEST,
        "bad_encoding",
        None,
        "cannot decompress the gzip body",
    )
    .await;
    check(
        &router,
        compressed_post(body.into_bytes(), "br", "T-1"),
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
        None,
        "unsupported content-encoding \"br\"",
    )
    .await;
}

/// A report request naming its terminal in the terminal header.
fn post_as(body: impl Into<Body>, terminal_id: &str, token: &str) -> Request<Body> {
    Request::post("/api/v1/reports")
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .header(posmon_protocol::TERMINAL_HEADER, terminal_id)
        .body(body.into())
        .unwrap()
}

/// A request whose body never finishes (until the returned sender is dropped).
fn stalled(
    terminal_id: Option<&str>,
    token: &str,
) -> (
    Request<Body>,
    tokio::sync::mpsc::Sender<Result<Vec<u8>, std::io::Error>>,
) {
    let (sender, receiver) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(1);
    sender.try_send(Ok(b"{\"reports\":[".to_vec())).unwrap();
    let mut builder =
        Request::post("/api/v1/reports").header(header::AUTHORIZATION, format!("Bearer {token}"));
    if let Some(terminal_id) = terminal_id {
        builder = builder.header(posmon_protocol::TERMINAL_HEADER, terminal_id);
    }
    let request = builder
        .body(Body::from_stream(
            tokio_stream::wrappers::ReceiverStream::new(receiver),
        ))
        .unwrap();
    (request, sender)
}

fn retry_after(response: &axum::response::Response) -> Option<&str> {
    response
        .headers()
        .get(header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
}

async fn reason_of(response: axum::response::Response) -> Value {
    let body: Value =
        serde_json::from_slice(&response.into_body().collect().await.unwrap().to_bytes()).unwrap();
    body["error"].clone()
}

#[tokio::test]
async fn an_overloaded_collector_answers_503_with_retry_after() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config {
        data_dir: dir.path().to_path_buf(),
        ..Config::default()
    };
    config.limits.max_concurrent_ingest = 1;
    config.limits.overload_retry_after_seconds = 7;
    let router = app(Arc::new(AppState::open(config, keyring(), None).unwrap()));

    // A request whose body never finishes holds the only permit.
    let (request, sender) = stalled(Some("T-1"), &token("T-1"));
    let holder = tokio::spawn(router.clone().oneshot(request));
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;

    let response = router
        .clone()
        .oneshot(post_as(batch(vec![report("T-2", 1)]), "T-2", &token("T-2")))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(retry_after(&response), Some("7"));
    assert_eq!(reason_of(response).await["reason"], "overloaded");

    // Once the first request ends, the permit is back.
    drop(sender);
    let _ = holder.await.unwrap();
    let (status, _, text) = send(
        &router,
        post_as(batch(vec![report("T-2", 1)]), "T-2", &token("T-2")),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{text}");
    let (_, _, metrics) = send(&router, get("/metrics")).await;
    assert!(
        metrics.contains("posmon_ingest_rejected_requests_total{reason=\"overloaded\"} 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn requests_without_the_terminal_header_never_take_the_slots_of_identified_ones() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config {
        data_dir: dir.path().to_path_buf(),
        ..Config::default()
    };
    config.limits.max_concurrent_ingest = 2;
    config.limits.max_concurrent_unidentified_ingest = 1;
    config.limits.overload_retry_after_seconds = 5;
    let router = app(Arc::new(AppState::open(config, keyring(), None).unwrap()));

    // A made-up token without the header holds the one unidentified slot…
    let (request, sender) = stalled(None, "k1.made-up");
    let holder = tokio::spawn(router.clone().oneshot(request));
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    // …so another old agent is told to come back,
    let response = router
        .clone()
        .oneshot(post(batch(vec![report("T-OLD", 1)]), Some(&token("T-OLD"))))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(retry_after(&response), Some("5"));
    assert_eq!(
        reason_of(response).await["reason"],
        "overloaded_unidentified"
    );
    // but an identified agent is served.
    let (status, _, text) = send(
        &router,
        post_as(batch(vec![report("T-NEW", 1)]), "T-NEW", &token("T-NEW")),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{text}");
    drop(sender);
    let response = holder.await.unwrap().unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST, "a cut-off body");
    // With its slot back, the old agent is served too.
    let (status, _, text) = send(
        &router,
        post(batch(vec![report("T-OLD", 1)]), Some(&token("T-OLD"))),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{text}");
}

#[tokio::test]
async fn the_terminal_header_is_checked_before_the_body_is_read() {
    let (router, _dir) = router();
    // A wrong token is refused at once, though the body never finishes.
    for (terminal, token, status, reason) in [
        (
            "T-1",
            "k1.made-up".to_string(),
            StatusCode::UNAUTHORIZED,
            "invalid_token",
        ),
        ("T-1", token("T-2"), StatusCode::FORBIDDEN, "wrong_terminal"),
    ] {
        let (request, _sender) = stalled(Some(terminal), &token);
        let response = tokio::time::timeout(
            std::time::Duration::from_secs(2),
            router.clone().oneshot(request),
        )
        .await
        .unwrap_or_else(|_| panic!("{terminal}: not answered before the body ended"))
        .unwrap();
        assert_eq!(response.status(), status);
        assert_eq!(reason_of(response).await["reason"], reason);
    }
    // A header that is not a terminal id names the header.
    check(
        &router,
        post_as(batch(vec![report("T-1", 1)]), "T 1", &token("T-1")),
        StatusCode::BAD_REQUEST,
        "invalid_field",
        Some(posmon_protocol::TERMINAL_HEADER),
        "x-posmon-terminal header",
    )
    .await;
    // Every report must carry the header's terminal.
    check(
        &router,
        post_as(
            batch(vec![report("T-1", 1), report("T-2", 2)]),
            "T-1",
            &token("T-1"),
        ),
        StatusCode::BAD_REQUEST,
        "invalid_field",
        Some("reports[1].terminal_id"),
        "terminal id of the x-posmon-terminal header",
    )
    .await;
    check(
        &router,
        post_as(batch(vec![report("T-2", 1)]), "T-1", &token("T-1")),
        StatusCode::BAD_REQUEST,
        "invalid_field",
        Some("reports[0].terminal_id"),
        "terminal id of the x-posmon-terminal header",
    )
    .await;
}

#[tokio::test]
async fn a_slow_body_is_cut_off_and_a_busy_terminal_waits() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config {
        data_dir: dir.path().to_path_buf(),
        ..Config::default()
    };
    config.limits.body_read_timeout_seconds = 1;
    config.limits.max_concurrent_ingest_per_terminal = 1;
    config.limits.terminal_requests_per_minute = 1;
    config.limits.terminal_request_burst = 3;
    let router = app(Arc::new(AppState::open(config, keyring(), None).unwrap()));

    let (request, _sender) = stalled(Some("T-1"), &token("T-1"));
    let holder = tokio::spawn(router.clone().oneshot(request));
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    // One request of T-1 in flight: a second one waits, another terminal does not.
    let response = router
        .clone()
        .oneshot(post_as(batch(vec![report("T-1", 1)]), "T-1", &token("T-1")))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(retry_after(&response), Some("1"));
    assert_eq!(reason_of(response).await["reason"], "terminal_busy");
    let (status, _, text) = send(
        &router,
        post_as(batch(vec![report("T-2", 1)]), "T-2", &token("T-2")),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{text}");
    // The stalled body is answered 408 after a second, and its slot freed.
    let response = holder.await.unwrap().unwrap();
    assert_eq!(response.status(), StatusCode::REQUEST_TIMEOUT);
    assert_eq!(reason_of(response).await["reason"], "body_timeout");
    // T-1 has used one of its three tokens (a refusal takes none): two more, then one a
    // minute.
    for sequence in 1..=2 {
        let (status, _, text) = send(
            &router,
            post_as(batch(vec![report("T-1", sequence)]), "T-1", &token("T-1")),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{text}");
    }
    let response = router
        .clone()
        .oneshot(post_as(batch(vec![report("T-1", 3)]), "T-1", &token("T-1")))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    let seconds: u64 = retry_after(&response).unwrap().parse().unwrap();
    assert!((55..=60).contains(&seconds), "{seconds}");
    assert_eq!(reason_of(response).await["reason"], "rate_limited");
    let (_, _, metrics) = send(&router, get("/metrics")).await;
    for reason in ["terminal_busy", "rate_limited", "body_timeout"] {
        assert!(
            metrics.contains(&format!(
                "posmon_ingest_rejected_requests_total{{reason=\"{reason}\"}} 1"
            )),
            "{reason}: {metrics}"
        );
    }
}

#[tokio::test]
async fn dropped_reports_reach_the_terminal_and_the_metrics() {
    let (router, _dir) = router();
    let mut first = report("T-1", 1);
    first["dropped_reports"] = json!(40);
    let mut second = report("T-1", 2);
    second["dropped_reports"] = json!(2);
    let (status, _, text) = send(
        &router,
        post(batch(vec![first, second]), Some(&token("T-1"))),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{text}");
    let (_, terminal, _) = send(&router, get("/api/v1/terminals/T-1")).await;
    assert_eq!(terminal["dropped_reports"], 42);
    let (_, _, metrics) = send(&router, get("/metrics")).await;
    assert!(
        metrics.contains("posmon_ingest_agent_dropped_reports_total 42"),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_report_without_the_instance_cannot_pin_a_terminal_that_sends_one() {
    let (router, _dir) = router();
    let token = token("T-1");
    let with_instance = |sequence: u64| {
        let mut report = report("T-1", sequence);
        report["agent_instance"] = json!("aaaaaaaa-1111");
        report
    };
    let (status, _, text) = send(&router, post(batch(vec![with_instance(5)]), Some(&token))).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    // Somebody with the token, not knowing the instance, tries to move the mark to the end.
    check(
        &router,
        post(batch(vec![report("T-1", (1 << 53) - 1)]), Some(&token)),
        StatusCode::BAD_REQUEST,
        "invalid_field",
        Some("reports[0].agent_instance"),
        "a report without one is refused",
    )
    .await;
    let (status, ack, text) =
        send(&router, post(batch(vec![with_instance(6)]), Some(&token))).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    assert_eq!(
        ack["acknowledged_sequence"], 6,
        "the agent's reports still apply"
    );
}

#[tokio::test]
async fn unchanged_sections_are_taken_from_the_previous_report() {
    let (router, _dir) = router();
    let token = token("T-1");
    let mut full = report("T-1", 1);
    full["labels"]["gateway"] = json!("192.168.1.0/24");
    full["labels"]["resolver"] = json!("192.168.1.1");
    let mut delta = report("T-1", 2);
    if let Some(object) = delta.as_object_mut() {
        object.remove("labels");
        object.remove("software");
    }
    delta["unchanged"] = json!(["labels", "software"]);
    let mut later = delta.clone();
    later["sequence"] = json!(3);
    // In one batch, and again in a batch of its own (from the stored state).
    let (status, _, text) = send(&router, post(batch(vec![full, delta]), Some(&token))).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    let (status, _, text) = send(&router, post(batch(vec![later]), Some(&token))).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    let (_, terminal, _) = send(&router, get("/api/v1/terminals/T-1")).await;
    assert_eq!(terminal["sequence"], 3);
    assert_eq!(terminal["labels"]["region"], "cn-east", "{terminal}");
    // The network labels that pick the party of a DNS failure are shown with the others.
    assert_eq!(
        terminal["labels"]["gateway"], "192.168.1.0/24",
        "{terminal}"
    );
    assert_eq!(terminal["labels"]["resolver"], "192.168.1.1", "{terminal}");
    let (_, findings, _) = send(
        &router,
        get("/api/v1/findings?terminal=T-1&code=outdated.pos_app"),
    )
    .await;
    assert_eq!(
        findings["findings"].as_array().map(Vec::len),
        Some(1),
        "the version still counts: {findings}"
    );
}

/// Readiness leads: on every terminal, filterable, counted, exported, and the problem list
/// puts the terminals that cannot take payments first, however old the others' problems.
#[tokio::test]
async fn readiness_leads_every_view_and_the_problem_list() {
    let (router, _dir) = router();
    let earlier = yesterday().replace("T02:", "T01:");
    // (terminal, the failing target if any, the POS app version, observed at)
    let terminals = [
        ("T-PAY", Some("payment-host"), "2.10", yesterday()),
        ("T-OLD", None, "2.9.1", earlier.clone()),
        ("T-TMS", Some("tms"), "2.10", earlier),
        ("T-OK", None, "2.10", yesterday()),
    ];
    for (terminal, failing, version, at) in &terminals {
        let reports: Vec<Value> = (1..=2)
            .map(|sequence| {
                let mut value = report(terminal, sequence);
                value["observed_at"] = json!(at);
                value["software"]["pos_app"]["version"] = json!(version);
                value["probes"] = json!([
                    { "target": "payment-host", "address": "127.0.0.1:9",
                      "stages": [ { "stage": "tcp", "status": "ok" } ] },
                    { "target": "tms", "address": "127.0.0.1:10",
                      "stages": [ { "stage": "tcp", "status": "ok" } ] },
                ]);
                for probe in value["probes"].as_array_mut().unwrap() {
                    if Some(probe["target"].as_str().unwrap()) == *failing {
                        probe["stages"] =
                            json!([ { "stage": "tcp", "status": "failed", "error": "timeout" } ]);
                    }
                }
                value
            })
            .collect();
        let (status, _, text) =
            send(&router, post_as(batch(reports), terminal, &token(terminal))).await;
        assert_eq!(status, StatusCode::OK, "{text}");
    }
    let expected = [
        ("T-PAY", "cannot_pay"),
        ("T-OLD", "at_risk"),
        ("T-TMS", "at_risk"),
        ("T-OK", "can_pay"),
    ];
    for (terminal, readiness) in expected {
        let (_, detail, _) = send(&router, get(&format!("/api/v1/terminals/{terminal}"))).await;
        assert_eq!(detail["readiness"], readiness, "{detail}");
    }
    // Only a payment path is critical: the old app and the failing TMS are warnings.
    let (_, findings, _) = send(&router, get("/api/v1/findings?severity=critical")).await;
    let critical: Vec<(&str, &str)> = findings["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["terminal_id"].as_str().unwrap(),
                f["code"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(critical, [("T-PAY", "env.network.host_unreachable")]);

    let (_, list, _) = send(&router, get("/api/v1/terminals?readiness=at_risk")).await;
    let ids: Vec<&str> = list["terminals"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["terminal_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["T-OLD", "T-TMS"], "{list}");
    assert!(list["terminals"]
        .as_array()
        .unwrap()
        .iter()
        .all(|t| t["readiness"] == "at_risk"));
    let (status, body, _) = send(&router, get("/api/v1/terminals?readiness=critical")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"]["field"], "readiness");

    // Cannot pay first, although the others' problems are an hour older.
    let (_, problems, text) = send(&router, get("/api/v1/problems")).await;
    let rows: Vec<(&str, &str)> = problems["rows"]
        .as_array()
        .unwrap_or_else(|| panic!("{text}"))
        .iter()
        .map(|row| {
            (
                row["terminal_id"].as_str().unwrap(),
                row["readiness"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        rows,
        [
            ("T-PAY", "cannot_pay"),
            ("T-OLD", "at_risk"),
            ("T-TMS", "at_risk")
        ],
        "{text}"
    );
    let (_, only, _) = send(&router, get("/api/v1/problems?readiness=cannot_pay")).await;
    assert_eq!(only["total"], 1, "{only}");

    let (_, overview, _) = send(&router, get("/api/v1/overview")).await;
    assert_eq!(
        overview["readiness"],
        json!({ "cannot_pay": 1, "at_risk": 2, "can_pay": 1 }),
        "{overview}"
    );
    let (_, fleet, _) = send(&router, get("/api/v1/fleet")).await;
    assert_eq!(fleet["readiness"]["at_risk"], 2, "{fleet}");
    let (_, _, metrics) = send(&router, get("/metrics")).await;
    for (readiness, count) in [
        ("cannot_pay", 1),
        ("at_risk", 2),
        ("can_pay", 1),
        ("unknown", 0),
    ] {
        assert!(
            metrics.contains(&format!(
                "posmon_fleet_terminals{{readiness=\"{readiness}\"}} {count}"
            )),
            "{readiness}: {metrics}"
        );
    }
}

/// What a payment needs is declared: with `[readiness] targets = ["acquirer-b"]`, a refused
/// `acquirer-b` stops payments (critical) and a refused `payment-host` only threatens them.
#[tokio::test]
async fn the_declared_payment_targets_decide() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config {
        data_dir: dir.path().to_path_buf(),
        ..Config::default()
    };
    config.readiness.targets = vec!["acquirer-b".into()];
    let state = AppState::open(config, keyring(), None).unwrap();
    let router = app(Arc::new(state));
    for (terminal, target) in [("T-B", "acquirer-b"), ("T-HOST", "payment-host")] {
        let reports: Vec<Value> = (1..=2)
            .map(|sequence| {
                let mut value = report(terminal, sequence);
                value["software"]["pos_app"]["version"] = json!("2.10");
                value["probes"][0]["target"] = json!(target);
                value
            })
            .collect();
        let (status, _, text) =
            send(&router, post_as(batch(reports), terminal, &token(terminal))).await;
        assert_eq!(status, StatusCode::OK, "{text}");
    }
    for (terminal, readiness, severity) in [
        ("T-B", "cannot_pay", "critical"),
        ("T-HOST", "at_risk", "warning"),
    ] {
        let (_, detail, _) = send(&router, get(&format!("/api/v1/terminals/{terminal}"))).await;
        assert_eq!(detail["readiness"], readiness, "{detail}");
        assert_eq!(detail["open_findings"][0]["severity"], severity, "{detail}");
    }
}
