//! Fleet control over the real listener on loopback (`serve` on 127.0.0.1:0): profiles refused
//! naming the key, versions named in the acknowledgements of agents that report a settings
//! state (and only theirs), the agents' settings fetch, the versions count and the history, a
//! probe request waking a held long-poll at once and answered by a report, `max_waiting`, a
//! shutdown that does not wait for held polls, and a restart that keeps profiles and history.

#![allow(
    clippy::unwrap_used,
    reason = "test helpers: a failed unwrap fails the test, as it should"
)]

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use posmon_collector::config::Config;
use posmon_collector::http::{serve, AppState};
use posmon_protocol::{terminal_token, FleetKey, Keyring};
use reqwest::StatusCode;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const ADMIN: &str = "the admin token of the control api test";

fn keyring() -> Keyring {
    let key = FleetKey::new("k1", b"a test fleet secret".to_vec()).unwrap();
    Keyring::new(key, vec![])
}

fn token(terminal_id: &str) -> String {
    terminal_token(keyring().current(), terminal_id)
}

/// A collector serving on a loopback ephemeral port until stopped.
struct Collector {
    base: String,
    address: std::net::SocketAddr,
    client: reqwest::Client,
    stop: std::sync::Mutex<Option<tokio::sync::oneshot::Sender<()>>>,
    served: tokio::sync::Mutex<Option<tokio::task::JoinHandle<std::io::Result<()>>>>,
}

async fn start(dir: &Path, adjust: impl FnOnce(&mut Config)) -> Collector {
    let mut config = Config {
        data_dir: dir.to_path_buf(),
        ..Config::default()
    };
    adjust(&mut config);
    let state = Arc::new(AppState::open(config, keyring(), Some(ADMIN.into())).unwrap());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let served = tokio::spawn(serve(listener, state, None, async move {
        let _ = stopped.await;
    }));
    Collector {
        base: format!("http://{address}"),
        address,
        client: reqwest::Client::new(),
        stop: std::sync::Mutex::new(Some(stop)),
        served: tokio::sync::Mutex::new(Some(served)),
    }
}

impl Collector {
    /// Stops it; returns how long the shutdown took.
    async fn stop(&self) -> Duration {
        let started = Instant::now();
        if let Some(stop) = self.stop.lock().unwrap().take() {
            let _ = stop.send(());
        }
        let served = self.served.lock().await.take().unwrap();
        tokio::time::timeout(Duration::from_secs(30), served)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        started.elapsed()
    }

    async fn admin(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut request = self
            .client
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(ADMIN);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    async fn get(&self, path: &str) -> Value {
        let response = self
            .client
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        response.json().await.unwrap()
    }

    async fn put_profile(&self, name: &str, body: Value) -> (StatusCode, Value) {
        self.admin(
            reqwest::Method::PUT,
            &format!("/api/v1/config/profiles/{name}"),
            Some(body),
        )
        .await
    }

    /// Sends one report of `terminal_id`; returns the acknowledgement.
    async fn report(&self, terminal_id: &str, sequence: u64, extra: Value) -> Value {
        let mut report = json!({
            "schema_version": 1,
            "terminal_id": terminal_id,
            "sequence": sequence,
            "observed_at": yesterday(),
            "agent_version": "0.1.0",
            "labels": { "region": "east", "model": "A920" },
            "software": { "pos_app": { "version": "2.9.1" } },
            "probes": []
        });
        if let (Some(report), Some(extra)) = (report.as_object_mut(), extra.as_object()) {
            for (key, value) in extra {
                report.insert(key.clone(), value.clone());
            }
        }
        let response = self
            .client
            .post(format!("{}/api/v1/reports", self.base))
            .bearer_auth(token(terminal_id))
            .header(posmon_protocol::TERMINAL_HEADER, terminal_id)
            .json(&json!({ "reports": [report] }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        response.json().await.unwrap()
    }

    /// The agent's long-poll over a raw HTTP/1.1 connection: the answer's JSON, the whole
    /// response's bytes, and the response head.
    async fn poll(&self, terminal_id: &str, query: &str) -> (Value, usize, String) {
        let mut stream = tokio::net::TcpStream::connect(self.address).await.unwrap();
        let request = format!(
            "GET /api/v1/agent/control?{query} HTTP/1.1\r\nhost: {}\r\nauthorization: Bearer {}\r\n{}: {terminal_id}\r\nconnection: close\r\n\r\n",
            self.address,
            token(terminal_id),
            posmon_protocol::TERMINAL_HEADER,
        );
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await.unwrap();
        let text = String::from_utf8_lossy(&response).to_string();
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        (
            serde_json::from_str(body).unwrap_or(Value::Null),
            response.len(),
            head.to_string(),
        )
    }
}

/// Yesterday at 02:00 UTC: inside the collector's window of terminal times.
fn yesterday() -> String {
    let today = time::OffsetDateTime::now_utc().date();
    format!("{}T02:00:00Z", today.previous_day().unwrap_or(today))
}

fn payment_profile(address: &str) -> Value {
    json!({
        "selector": { "region": "east" },
        "settings": { "targets": [ { "name": "payment-host", "address": address } ] },
        "comment": "move the payment host"
    })
}

#[tokio::test]
async fn profiles_reach_the_agents_that_read_them() {
    let dir = tempfile::tempdir().unwrap();
    let collector = start(dir.path(), |_| {}).await;
    // Refused, naming the key.
    for (body, field) in [
        (payment_profile("nohost"), "settings.targets[0].address"),
        (
            json!({ "settings": { "components": [ { "name": "x", "command": ["/bin/sh", "-c", "id"] } ] } }),
            "settings.components[0].command",
        ),
        (
            json!({ "selector": { "region": "" }, "settings": {} }),
            "selector.region",
        ),
        (
            json!({ "settings": {}, "rollout": { "percent": 0 } }),
            "rollout.percent",
        ),
        (
            json!({ "settings": { "labels": { "region": "west" } } }),
            "settings.labels.region",
        ),
    ] {
        // The last one sets a label the first valid profile's selector reads: put that first.
        if field == "settings.labels.region" {
            let (status, _) = collector
                .put_profile("payment", payment_profile("10.0.0.1:443"))
                .await;
            assert_eq!(status, StatusCode::OK);
        }
        let (status, answer) = collector.put_profile("bad", body.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {answer}");
        assert_eq!(answer["error"]["field"], field, "{answer}");
    }
    let (status, answer) = collector
        .put_profile("Bad Name", json!({ "settings": {} }))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    assert_eq!(answer["error"]["field"], "name");
    let anonymous = collector
        .client
        .put(format!("{}/api/v1/config/profiles/x", collector.base))
        .json(&json!({ "settings": {} }))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);

    let (status, profile) = collector
        .put_profile("payment", payment_profile("10.0.0.2:443"))
        .await;
    assert_eq!(status, StatusCode::OK, "{profile}");
    assert_eq!(profile["revision"], 2);
    assert_eq!(profile["rank"], 1);

    // An agent that reports a settings state hears of the version; one that does not, not.
    let ack = collector.report("T-NEW", 1, json!({ "config": {} })).await;
    let version = ack["config"].as_str().unwrap().to_string();
    let old = collector.report("T-OLD", 1, json!({})).await;
    assert!(old.get("config").is_none(), "{old}");
    // Its settings, fetched like a report is sent.
    let fetched: Value = collector
        .client
        .get(format!("{}/api/v1/agent/config", collector.base))
        .bearer_auth(token("T-NEW"))
        .header(posmon_protocol::TERMINAL_HEADER, "T-NEW")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(fetched["version"], version.as_str());
    assert_eq!(fetched["settings"]["targets"][0]["address"], "10.0.0.2:443");
    // Another terminal's token does not fetch it.
    let forged = collector
        .client
        .get(format!("{}/api/v1/agent/config", collector.base))
        .bearer_auth(token("T-OLD"))
        .header(posmon_protocol::TERMINAL_HEADER, "T-NEW")
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), StatusCode::FORBIDDEN);

    let versions = collector.get("/api/v1/config/versions").await;
    assert_eq!(versions["pending"], 1, "{versions}");
    assert_eq!(versions["unknown"], 1, "{versions}");
    // Once it runs it, its acknowledgements name nothing.
    let ack = collector
        .report("T-NEW", 2, json!({ "config": { "applied": version } }))
        .await;
    assert!(ack.get("config").is_none(), "{ack}");
    let versions = collector.get("/api/v1/config/versions").await;
    assert_eq!(versions["pending"], 0, "{versions}");
    assert_eq!(versions["versions"][0]["version"], version.as_str());
    assert_eq!(versions["versions"][0]["running"], 1);

    // A change names the new version; a refusal of it is counted as such.
    let (status, _) = collector
        .put_profile("payment", payment_profile("10.0.0.3:443"))
        .await;
    assert_eq!(status, StatusCode::OK);
    let ack = collector.report("T-NEW", 3, json!({})).await;
    let newer = ack["config"].as_str().unwrap().to_string();
    assert_ne!(newer, version);
    let ack = collector
        .report(
            "T-NEW",
            4,
            json!({ "config": { "applied": version, "rejected": { "version": newer, "reason": "targets[0].ca_file: not found" } } }),
        )
        .await;
    assert!(ack.get("config").is_none(), "{ack}");
    let versions = collector.get("/api/v1/config/versions").await;
    assert_eq!(versions["rejected"], 1, "{versions}");
    let view = collector.get("/api/v1/terminals/T-NEW").await;
    assert_eq!(view["config"]["applied"], version.as_str(), "{view}");
    assert_eq!(view["config"]["rejected"]["version"], newer.as_str());
    assert_eq!(view["config"]["effective"], newer.as_str());
    let detail = collector.get("/api/v1/config/terminals/T-NEW").await;
    assert_eq!(detail["layers"][0]["profile"], "payment", "{detail}");
    assert_eq!(detail["layers"][0]["revision"], 3);
    assert_eq!(detail["layers"][0]["applies"], "current");

    let history = collector
        .get("/api/v1/config/history?profile=payment")
        .await;
    let revisions: Vec<u64> = history["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|entry| entry["revision"].as_u64().unwrap())
        .collect();
    assert_eq!(revisions, [3, 2, 1]);
    assert_eq!(history["history"][0]["by"], "admin-token");
    assert_eq!(history["history"][0]["comment"], "move the payment host");
    collector.stop().await;
}

#[tokio::test]
async fn a_probe_request_wakes_the_held_poll_and_a_report_answers_it() {
    let dir = tempfile::tempdir().unwrap();
    let collector = Arc::new(start(dir.path(), |config| config.control.max_probe_batch = 2).await);
    for terminal in ["T-1", "T-2", "T-3"] {
        collector.report(terminal, 1, json!({ "config": {} })).await;
    }
    // Nothing for it: the poll is held.
    let polling = Arc::clone(&collector);
    let held = tokio::spawn(async move { polling.poll("T-1", "wait=60").await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!held.is_finished());
    let (status, request) = collector
        .admin(reqwest::Method::POST, "/api/v1/terminals/T-1/probe", None)
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{request}");
    assert_eq!(request["requested_by"], "admin-token");
    let id = request["id"].as_u64().unwrap();
    let asked = Instant::now();
    let (answer, bytes, head) = tokio::time::timeout(Duration::from_secs(1), held)
        .await
        .unwrap()
        .unwrap();
    assert!(asked.elapsed() < Duration::from_secs(1));
    assert_eq!(answer, json!({ "probe_request": id }));
    // Small, for a SIM card's plan: no browser security headers on it.
    assert!(
        !head
            .to_ascii_lowercase()
            .contains("content-security-policy"),
        "{head}"
    );
    assert!(bytes < 200, "{bytes} bytes: {head}");
    println!("control long-poll answer: {bytes} bytes");
    // The acknowledgements name it until a report answers it.
    let ack = collector.report("T-1", 2, json!({})).await;
    assert_eq!(ack["probe_request"], id);
    let ack = collector
        .report("T-1", 3, json!({ "probe_request": id }))
        .await;
    assert!(ack.get("probe_request").is_none(), "{ack}");
    let view = collector.get("/api/v1/terminals/T-1").await;
    assert_eq!(view["probe"]["id"], id, "{view}");
    assert_eq!(view["probe"]["requested_by"], "admin-token");
    assert!(view["probe"]["answered_at"].is_string(), "{view}");

    let (status, _) = collector
        .admin(
            reqwest::Method::POST,
            "/api/v1/terminals/T-NOPE/probe",
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // A filter matching more than max_probe_batch is refused, naming how many matched.
    let (status, refused) = collector
        .admin(
            reqwest::Method::POST,
            "/api/v1/probe",
            Some(json!({ "region": "east" })),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{refused}");
    assert!(
        refused["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("3 terminals match"),
        "{refused}"
    );
    let (status, requested) = collector
        .admin(
            reqwest::Method::POST,
            "/api/v1/probe",
            Some(json!({ "region": "east", "terminals": ["T-2", "T-3"] })),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{requested}");
    assert_eq!(requested["requested"], 2);
    assert_eq!(requested["ids"], json!(["T-2", "T-3"]));
    // An unknown terminal matches nothing; a longer list than a batch is refused.
    let (status, requested) = collector
        .admin(
            reqwest::Method::POST,
            "/api/v1/probe",
            Some(json!({ "terminals": ["T-NOPE"] })),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{requested}");
    assert_eq!(requested["requested"], 0);
    let (status, refused) = collector
        .admin(
            reqwest::Method::POST,
            "/api/v1/probe",
            Some(json!({ "terminals": ["T-1", "T-2", "T-3"] })),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{refused}");
    assert_eq!(refused["error"]["field"], "terminals");
    let ack = collector.report("T-2", 2, json!({})).await;
    assert!(ack["probe_request"].is_u64(), "{ack}");
    let metrics = collector
        .client
        .get(format!("{}/metrics", collector.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("posmon_probe_requests_total 3"),
        "{metrics}"
    );
    assert!(metrics.contains("posmon_config_terminals{state=\"pending\"} 0"));
    assert!(metrics.contains("posmon_control_waiting 0"));
    collector.stop().await;
}

#[tokio::test]
async fn max_waiting_is_honoured_and_a_shutdown_ends_held_polls() {
    let dir = tempfile::tempdir().unwrap();
    let collector = Arc::new(start(dir.path(), |config| config.control.max_waiting = 2).await);
    let mut held = Vec::new();
    for terminal in ["T-1", "T-2"] {
        collector.report(terminal, 1, json!({ "config": {} })).await;
        let polling = Arc::clone(&collector);
        held.push(tokio::spawn(async move {
            polling.poll(terminal, "wait=600").await
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (answer, _, _) = collector.poll("T-3", "wait=600").await;
    assert_eq!(answer, json!({ "retry_after_seconds": 300 }));
    // A bad query is refused naming the parameter.
    let (answer, _, _) = collector.poll("T-3", "applied=XYZ").await;
    assert_eq!(answer["error"]["field"], "applied", "{answer}");
    let took = collector.stop().await;
    assert!(took < Duration::from_secs(5), "the shutdown took {took:?}");
    for poll in held {
        let (answer, _, _) = poll.await.unwrap();
        assert_eq!(answer, json!({}));
    }
}

#[tokio::test]
async fn a_restart_keeps_profiles_and_history() {
    let dir = tempfile::tempdir().unwrap();
    let collector = start(dir.path(), |_| {}).await;
    let (status, _) = collector
        .put_profile("payment", payment_profile("10.0.0.2:443"))
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = collector
        .put_profile("gone", json!({ "settings": { "attempts": 2 } }))
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = collector
        .admin(
            reqwest::Method::DELETE,
            "/api/v1/config/profiles/gone",
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let before = collector.get("/api/v1/config/profiles/payment").await;
    collector.stop().await;

    let collector = start(dir.path(), |_| {}).await;
    let after = collector.get("/api/v1/config/profiles/payment").await;
    assert_eq!(after, before);
    let profiles = collector.get("/api/v1/config/profiles").await;
    assert_eq!(profiles["profiles"].as_array().map(Vec::len), Some(1));
    let history = collector.get("/api/v1/config/history").await;
    let actions: Vec<(String, String)> = history["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|entry| {
            (
                entry["profile"].as_str().unwrap().to_string(),
                entry["action"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        actions,
        [
            ("gone".to_string(), "delete".to_string()),
            ("gone".to_string(), "put".to_string()),
            ("payment".to_string(), "put".to_string())
        ]
    );
    // The agents tell it again what they run: the ack names the version as before.
    let ack = collector.report("T-1", 1, json!({ "config": {} })).await;
    assert!(ack["config"].is_string(), "{ack}");
    collector.stop().await;
}
