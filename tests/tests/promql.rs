//! Every PromQL expression of the Grafana dashboards and the Prometheus rules, against a real
//! Prometheus scraping a real collector fed by simulated terminals with scripted faults: each
//! must parse and return data.
//!
//! The expressions are read from `dashboards/grafana/*.json` (every `expr`, and every template
//! variable's `label_values(metric, label)`) and `dashboards/prometheus/*.yml` (every `expr:`).
//! Grafana's variables are replaced by match-all values. The collector-down alert can only
//! return data once the collector is down, so the test stops the collector at the end and
//! queries what is still empty again.
#![allow(
    clippy::unwrap_used,
    reason = "tests (under the trials harness): a failed unwrap fails the test"
)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use posmon_e2e_tests::trials::{self, Need};
use posmon_e2e_tests::{program, trial, wait_for, Collector};
use serde_json::Value;

fn main() -> ExitCode {
    trials::run(vec![
        trial!(the_expression_extractors_find_what_the_files_hold),
        trial!(
            every_dashboard_and_rule_expression_returns_data_from_a_real_prometheus,
            Need::Program("prometheus")
        ),
    ])
}

fn dashboards() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../dashboards")
}

fn files(dir: &Path, extension: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|error| panic!("{error}"))
        .map(|entry| entry.unwrap_or_else(|error| panic!("{error}")).path())
        .filter(|path| {
            path.extension().and_then(|e| e.to_str()) == Some(extension)
                && !path.to_string_lossy().ends_with("_test.yml")
        })
        .collect();
    files.sort();
    files
}

/// Every `expr` string in a Grafana dashboard, and a query for each `label_values(m, l)`.
fn grafana_queries(value: &Value, found: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (key, value) in map {
                match (key.as_str(), value) {
                    ("expr", Value::String(expr)) => found.push(expr.clone()),
                    ("definition", Value::String(definition)) => {
                        if let Some(inner) = definition
                            .strip_prefix("label_values(")
                            .and_then(|rest| rest.strip_suffix(')'))
                        {
                            let (metric, label) = inner
                                .split_once(',')
                                .unwrap_or_else(|| panic!("bad label_values: {definition}"));
                            found.push(format!("count by ({}) ({metric})", label.trim()));
                        }
                    }
                    _ => grafana_queries(value, found),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|item| grafana_queries(item, found)),
        _ => {}
    }
}

/// Every `expr:` of a rules file (single-line, as the file writes them).
fn rule_expressions(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|line| line.trim_start().strip_prefix("expr:"))
        .map(|expr| expr.trim().to_string())
        .collect()
}

/// Grafana's variables as match-all values.
fn substitute(expr: &str) -> String {
    expr.replace("$__rate_interval", "1m")
        .replace("$__interval", "15s")
        .replace("$region", ".*")
        .replace("$model", ".*")
        .replace("$carrier", ".*")
}

fn all_expressions() -> Vec<(String, String)> {
    let mut expressions = Vec::new();
    for file in files(&dashboards().join("grafana"), "json") {
        let dashboard: Value = serde_json::from_str(
            &std::fs::read_to_string(&file).unwrap_or_else(|error| panic!("{error}")),
        )
        .unwrap_or_else(|error| panic!("{}: {error}", file.display()));
        let mut found = Vec::new();
        grafana_queries(&dashboard, &mut found);
        assert!(!found.is_empty(), "{} has no queries", file.display());
        let name = file.display().to_string();
        expressions.extend(
            found
                .into_iter()
                .map(|expr| (name.clone(), substitute(&expr))),
        );
    }
    for file in files(&dashboards().join("prometheus"), "yml") {
        let found = rule_expressions(
            &std::fs::read_to_string(&file).unwrap_or_else(|error| panic!("{error}")),
        );
        assert!(!found.is_empty(), "{} has no expressions", file.display());
        let name = file.display().to_string();
        expressions.extend(found.into_iter().map(|expr| (name.clone(), expr)));
    }
    expressions
}

fn the_expression_extractors_find_what_the_files_hold() {
    let rules = "  - record: a\n    expr: sum(x)\n  - alert: B\n    expr: up == 0\n";
    assert_eq!(rule_expressions(rules), ["sum(x)", "up == 0"]);
    let dashboard: Value = serde_json::json!({
        "panels": [{ "targets": [{ "expr": "sum(a{region=~\"$region\"})" }] }],
        "templating": { "list": [{ "definition": "label_values(m, carrier)" }] }
    });
    let mut found = Vec::new();
    grafana_queries(&dashboard, &mut found);
    assert_eq!(
        found,
        ["sum(a{region=~\"$region\"})", "count by (carrier) (m)"]
    );
    assert_eq!(substitute(&found[0]), "sum(a{region=~\".*\"})");
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .unwrap_or_else(|error| panic!("{error}"))
}

/// Kills the child when dropped.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `Ok(number of series)` or `Err(message)`.
fn query(prometheus: &str, expr: &str) -> Result<usize, String> {
    let response = reqwest::blocking::Client::new()
        .get(format!("{prometheus}/api/v1/query"))
        .query(&[("query", expr)])
        .send()
        .map_err(|error| error.to_string())?;
    let body: Value = response.json().map_err(|error| error.to_string())?;
    if body["status"] != "success" {
        return Err(format!("{}: {}", body["errorType"], body["error"]));
    }
    Ok(body["data"]["result"].as_array().map_or(0, Vec::len))
}

const SCENARIO: &str = r#"
[[incidents]]
fault = "host_outage"
start_seconds = 0
duration_seconds = 600
share = 0.5

[[incidents]]
fault = "gateway_down"
start_seconds = 0
duration_seconds = 600
share = 0.15

[[incidents]]
fault = "silent"
start_seconds = 5
duration_seconds = 600
share = 0.1

[[incidents]]
fault = "outdated_app"
start_seconds = 0
duration_seconds = 600
share = 0.3

[[incidents]]
fault = "high_latency"
start_seconds = 0
duration_seconds = 600
share = 0.1
"#;

fn every_dashboard_and_rule_expression_returns_data_from_a_real_prometheus() {
    let prometheus_binary = program("prometheus");
    let expressions = all_expressions();
    let dir = tempfile::tempdir().unwrap();
    let mut collector = Collector::start(
        dir.path(),
        r#"
[diagnosis]
report_interval_seconds = 1
silent_after_intervals = 3

[[version_policy]]
component = "pos_app"
minimum = "3.0.0"
latest = "3.2.1"
"#,
    );
    let scenario = dir.path().join("scenario.toml");
    std::fs::write(&scenario, SCENARIO).unwrap();
    let simulator_log = std::fs::File::create(dir.path().join("simulator.log")).unwrap();
    let _simulator = Killed(
        collector
            .simulator(dir.path())
            .args([
                "--terminals",
                "300",
                "--rate",
                "300",
                "--duration-seconds",
                "300",
            ])
            .arg("--scenario")
            .arg(&scenario)
            .stdout(Stdio::null())
            .stderr(simulator_log)
            .spawn()
            .unwrap(),
    );

    let port = free_port();
    let target = collector.url.trim_start_matches("http://");
    let rules = dashboards().join("prometheus/posmon-rules.yml");
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - {:?}\nscrape_configs:\n  - job_name: posmon\n    static_configs:\n      - targets: [{target:?}]\n",
            rules.display().to_string()
        ),
    )
    .unwrap();
    let prometheus_log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
    let _prometheus = Killed(
        Command::new(prometheus_binary)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("tsdb").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(prometheus_log)
            .spawn()
            .unwrap(),
    );
    let prometheus = format!("http://127.0.0.1:{port}");
    let ready = wait_for(Duration::from_secs(30), || {
        reqwest::blocking::get(format!("{prometheus}/-/ready"))
            .ok()
            .filter(|response| response.status().is_success())
    });
    assert!(
        ready.is_some(),
        "prometheus did not start:\n{}",
        std::fs::read_to_string(dir.path().join("prometheus.log")).unwrap_or_default()
    );

    // Requests the collector refuses, for the rejection panels and alert: after the first
    // scrape, so that Prometheus sees the counter grow.
    let scraped = wait_for(Duration::from_secs(30), || {
        query(&prometheus, "posmon_ingest_rejected_requests_total")
            .ok()
            .filter(|series| *series > 0)
    });
    assert!(scraped.is_some(), "prometheus never scraped the collector");
    let client = reqwest::blocking::Client::new();
    for _ in 0..30 {
        let status = client
            .post(format!("{}/api/v1/reports", collector.url))
            .header("authorization", "Bearer k1.not-a-valid-token")
            .header("content-type", "application/json")
            .body("{\"reports\": []}")
            .send()
            .unwrap()
            .status();
        assert!(status.is_client_error(), "{status}");
    }

    // A terminal refusing the settings its (empty) profiles give it, for the refusal alert.
    let refusing = "PROMQL-REFUSES";
    let now = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let version = posmon_protocol::control::Settings::default().version();
    let status = client
        .post(format!("{}/api/v1/reports", collector.url))
        .bearer_auth(collector.token(refusing))
        .json(&serde_json::json!({ "reports": [ {
            "schema_version": 1, "terminal_id": refusing, "sequence": 1, "observed_at": now,
            "agent_version": "0.1.0",
            "config": { "rejected": { "version": version, "reason": "targets[0].ca_file: not found" } }
        } ] }))
        .send()
        .unwrap()
        .status();
    assert!(status.is_success(), "{status}");

    let pending = |list: &[(String, String)]| -> Vec<(String, String, String)> {
        list.iter()
            .filter_map(|(file, expr)| match query(&prometheus, expr) {
                Ok(series) if series > 0 => None,
                Ok(_) => Some((file.clone(), expr.clone(), "no data".to_string())),
                Err(error) => Some((file.clone(), expr.clone(), error)),
            })
            .collect()
    };
    // Only the collector-down alert may stay empty while the collector runs.
    let needs_the_collector_down = |expr: &str| expr.starts_with("up{");
    let started = Instant::now();
    let mut empty = pending(&expressions);
    while started.elapsed() < Duration::from_secs(90)
        && empty
            .iter()
            .any(|(_, expr, _)| !needs_the_collector_down(expr))
    {
        std::thread::sleep(Duration::from_secs(2));
        empty = pending(&expressions);
    }
    let remaining: Vec<(String, String)> = empty
        .iter()
        .map(|(file, expr, _)| (file.clone(), expr.clone()))
        .collect();
    collector.process.kill();
    let started = Instant::now();
    let mut still_empty = pending(&remaining);
    while !still_empty.is_empty() && started.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_secs(1));
        still_empty = pending(&remaining);
    }
    assert!(
        still_empty.is_empty(),
        "{} of {} expressions failed or returned no data:\n{}",
        still_empty.len(),
        expressions.len(),
        still_empty
            .iter()
            .map(|(file, expr, problem)| format!("  {file}: {expr}\n    -> {problem}"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    eprintln!(
        "{} expressions returned data from a real Prometheus.",
        expressions.len()
    );
}
