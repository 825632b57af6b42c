//! The history's remote write, end to end: the real collector sends the series a report gives
//! (latency, loss, can pay) and the fleet trend to a real VictoriaMetrics (Debian's
//! `victoria-metrics`, on loopback with a temporary data directory), and they come back through
//! its Prometheus query API. Against a receiver that refuses: the request is remote-write 1.0
//! (snappy protobuf, its headers, the bearer token from its file) and the refused samples are
//! counted as failed, not retried.

use std::process::ExitCode;
use std::time::Duration;

use posmon_e2e_tests::trials::{self, Need};
use posmon_e2e_tests::{free_port, program, trial, wait_for, Collector, HttpSink, Process};
use serde_json::{json, Value};

fn main() -> ExitCode {
    trials::run(vec![
        trial!(
            the_series_come_back_from_a_real_victoria_metrics,
            Need::Program("victoria-metrics")
        ),
        trial!(a_refused_batch_is_counted_as_failed_and_not_retried),
    ])
}

fn rfc3339(at: time::OffsetDateTime) -> String {
    at.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|error| panic!("{error}"))
}

fn send_report(collector: &Collector, terminal_id: &str, latency_ms: f64) {
    let token = collector.token(terminal_id);
    let report = json!({
        "schema_version": 1,
        "terminal_id": terminal_id,
        "sequence": 1,
        "observed_at": rfc3339(time::OffsetDateTime::now_utc()),
        "agent_version": "0.3.0",
        "labels": { "region": "north" },
        "probes": [ { "target": "payment-host", "address": "pay.test:443", "stages": [
            { "stage": "link", "status": "ok" },
            { "stage": "tcp", "status": "ok", "attempts": 4, "successes": 3,
              "latency_ms": { "min": latency_ms, "avg": latency_ms, "max": latency_ms } }
        ] } ],
    });
    let response = reqwest::blocking::Client::new()
        .post(format!("{}/api/v1/reports", collector.url))
        .bearer_auth(token)
        .json(&json!({ "reports": [report] }))
        .send()
        .unwrap_or_else(|error| panic!("POST: {error}"));
    assert_eq!(response.status().as_u16(), 200);
}

/// The value of an instant query's first result, if any.
fn query(base: &str, promql: &str) -> Option<f64> {
    let answer: Value = reqwest::blocking::Client::new()
        .get(format!("{base}/api/v1/query"))
        .query(&[("query", promql)])
        .send()
        .ok()?
        .json()
        .ok()?;
    answer["data"]["result"][0]["value"][1]
        .as_str()
        .and_then(|value| value.parse().ok())
}

fn the_series_come_back_from_a_real_victoria_metrics() {
    let dir = tempfile::tempdir().unwrap_or_else(|error| panic!("{error}"));
    let port = free_port();
    let _victoria = Process::spawn_program(
        &program("victoria-metrics"),
        &[
            &format!("-httpListenAddr=127.0.0.1:{port}"),
            &format!("-storageDataPath={}", dir.path().join("vm").display()),
            // Recent samples are searchable at once (the default hides the last 30 s).
            "-search.latencyOffset=0s",
            "-search.disableCache",
        ],
        &dir.path().join("victoria-metrics.log"),
    );
    let victoria = format!("http://127.0.0.1:{port}");
    let ready = wait_for(Duration::from_secs(30), || {
        reqwest::blocking::get(format!("{victoria}/health"))
            .ok()
            .filter(|response| response.status().is_success())
    });
    assert!(ready.is_some(), "victoria-metrics did not start");
    let collector = Collector::start(
        dir.path(),
        &format!(
            "[web]\ntrend_interval_seconds = 1\n[history.remote_write]\nurl = \"{victoria}/api/v1/write\"\n"
        ),
    );
    send_report(&collector, "T-VM", 42.5);
    let latency = wait_for(Duration::from_secs(60), || {
        query(
            &victoria,
            "posmon_history_terminal_latency_milliseconds{terminal_id=\"T-VM\"}",
        )
    })
    .unwrap_or_else(|| {
        panic!(
            "no latency in victoria-metrics; collector:\n{}",
            collector.metrics()
        )
    });
    assert_eq!(latency, 42.5);
    let loss = query(
        &victoria,
        "posmon_history_terminal_loss_ratio{terminal_id=\"T-VM\"}",
    );
    assert_eq!(loss, Some(0.25));
    let can_pay = wait_for(Duration::from_secs(30), || {
        query(
            &victoria,
            "posmon_history_terminal_can_pay{terminal_id=\"T-VM\"}",
        )
    });
    assert_eq!(can_pay, Some(1.0));
    let fleet = wait_for(Duration::from_secs(30), || {
        query(
            &victoria,
            "posmon_history_fleet_terminals{readiness=\"can_pay\"}",
        )
        .filter(|count| *count >= 1.0)
    });
    assert_eq!(fleet, Some(1.0));
    assert!(collector.metric("posmon_history_remote_write_samples_total{result=\"sent\"}") >= 4.0);
    assert_eq!(
        collector.metric("posmon_history_remote_write_samples_total{result=\"failed\"}"),
        0.0
    );
}

fn a_refused_batch_is_counted_as_failed_and_not_retried() {
    let dir = tempfile::tempdir().unwrap_or_else(|error| panic!("{error}"));
    let sink = HttpSink::start();
    sink.set_reply(400, "bad");
    std::fs::create_dir_all(dir.path().join("collector-data"))
        .unwrap_or_else(|error| panic!("{error}"));
    std::fs::write(
        dir.path().join("collector-data/remote-token"),
        "secret-remote-token\n",
    )
    .unwrap_or_else(|error| panic!("{error}"));
    let collector = Collector::start(
        dir.path(),
        &format!(
            "[history.remote_write]\nurl = \"{}/api/v1/write\"\nbearer_token_file = \"remote-token\"\n",
            sink.url()
        ),
    );
    send_report(&collector, "T-REFUSED", 10.0);
    let failed = wait_for(Duration::from_secs(20), || {
        let failed =
            collector.metric("posmon_history_remote_write_samples_total{result=\"failed\"}");
        (failed > 0.0).then_some(failed)
    })
    .unwrap_or_else(|| panic!("nothing failed:\n{}", collector.metrics()));
    assert!(failed >= 2.0, "{failed}");
    let requests = sink.requests();
    assert_eq!(requests.len(), 1, "a 400 is not retried");
    let request = &requests[0];
    assert_eq!(request.method, "POST");
    assert_eq!(request.target, "/api/v1/write");
    assert_eq!(request.header("content-encoding"), Some("snappy"));
    assert_eq!(
        request.header("content-type"),
        Some("application/x-protobuf")
    );
    assert_eq!(
        request.header("x-prometheus-remote-write-version"),
        Some("0.1.0")
    );
    assert_eq!(
        request.header("authorization"),
        Some("Bearer secret-remote-token")
    );
    // The body is snappy (block format) around the protobuf: its first byte is the varint of
    // the uncompressed length, well above the compressed one's few bytes of header.
    assert!(request.body.len() > 10);
}
